//! Test support: a guest (the SVSM's vTPM on the emulated SNP machine, in process, served
//! to tpm2-tools over the simulator interface, as the guest agent drives its TPM) and
//! the service on loopback with real TLS (a CA and a server certificate made here).
#![allow(dead_code)]

pub mod postgres;
pub mod scenarios;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine as _;
use svsm_protocol::service_api::{
    AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse, ErrorBody, NvEvidence,
    PcrValue, ATTEST_PATH, CHALLENGE_PATH,
};
use svsm_service::db::{AuditEntry, Db};
use svsm_service::policy::Policy;
use svsm_service::server::{self, Limits, Service};
use tokio_rustls::rustls;
use vtpm_daemon::mssim::{MssimServer, SharedBackend};
use vtpm_daemon::svsm_backend::SvsmBackend;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty directory.
    pub fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "svsm-service-{what}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
    /// A path inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// The SVSM's vTPM on the emulated SNP machine, reached by tpm2-tools.
pub struct Guest {
    pub dir: Scratch,
    pub port: u16,
    pub backend: SharedBackend,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    previous: Option<PreviousBoot>,
}

/// What a verifier could have recorded of another vTPM.
pub struct PreviousBoot {
    /// Its NV evidence.
    pub nv: NvEvidence,
    /// Its RSA EK (TPM2B_PUBLIC).
    pub ek_public: Vec<u8>,
}

/// The selection the tests' policy quotes (the forky fixture policy's).
pub const SELECTION: &str = "sha256:0,1,2,3,4,5,6,7,9";

/// A real TCG event log the Linux-guest level captured (OVMF from Debian forky, direct
/// kernel boot), and the measured-boot policy learned and computed for it.
pub const EVENT_LOG: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../igvm/verifier/tests/data/eventlog-ovmf-forky.bin"
));
/// The boot policy of [`EVENT_LOG`].
pub const BOOT_POLICY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../igvm/verifier/tests/data/eventlog-ovmf-forky.policy.toml"
));

impl Guest {
    /// Boots the emulated machine with the SVSM and its vTPM and serves it on loopback.
    pub fn start() -> Self {
        let mut guest =
            Self::serve(SvsmBackend::new().expect("boot the SVSM on the emulated machine"));
        // One engine per process: "another vTPM" is this machine's previous boot, whose
        // endorsement evidence is kept before a reboot makes a new vTPM (new seeds, new
        // EKs, a new endorsement CA).
        guest.collect();
        guest.previous = Some(PreviousBoot {
            nv: guest.nv(),
            ek_public: guest.read("ek.pub"),
        });
        guest.reboot();
        assert_ne!(
            guest.read("ek.pub"),
            guest.previous().ek_public,
            "a reboot makes a new vTPM"
        );
        guest
    }

    /// A vTPM whose state is sealed into the file at `path` (loaded at every power-on,
    /// stored at every commit), its EK, AK, NV evidence and PCRs ready.
    pub fn with_state(path: &Path) -> Self {
        let guest =
            Self::serve(SvsmBackend::with_state(path).expect("boot the SVSM with a state file"));
        guest.collect();
        guest.extend_log(EVENT_LOG);
        guest
    }

    /// Reboots the machine (a new SVSM and vTPM, from the state file if there is one)
    /// and makes the EK, an AK, the NV evidence and the PCRs ready again.
    pub fn reboot(&self) {
        {
            let mut b = vtpm_daemon::mssim::lock(&self.backend);
            b.power_off().expect("power off");
            b.power_on().expect("power on");
        }
        self.collect();
        self.extend_log(EVENT_LOG);
    }

    /// Serves `backend` to tpm2-tools on loopback.
    fn serve(backend: SvsmBackend) -> Self {
        let backend: SharedBackend = Arc::new(Mutex::new(Box::new(backend)));
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let server = loop {
            let probe = std::net::TcpListener::bind((lo, 0)).expect("a free port");
            let port = probe.local_addr().expect("address").port();
            drop(probe);
            if port == u16::MAX {
                continue;
            }
            if let Ok(s) = MssimServer::bind(lo, port, port + 1) {
                break s;
            }
        };
        let port = server.local_addrs().expect("addresses").0.port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (backend, stop) = (backend.clone(), stop.clone());
            std::thread::spawn(move || {
                let _ = server.serve(backend, stop);
            })
        };
        Guest {
            dir: Scratch::new("guest"),
            port,
            backend,
            stop,
            thread: Some(thread),
            previous: None,
        }
    }

    /// The evidence of the vTPM of the previous boot.
    pub fn previous(&self) -> &PreviousBoot {
        self.previous.as_ref().expect("a previous boot")
    }

    /// Extends every measured SHA-256 digest of `log` into its PCR, in order: this
    /// vTPM's PCRs then hold what the machine that wrote the log measured, so its quotes
    /// match the real log.
    pub fn extend_log(&self, log: &[u8]) {
        let log = svsm_verifier::eventlog::EventLog::parse(log).expect("the log parses");
        let args: Vec<String> = log
            .events
            .iter()
            .filter(|e| e.is_measured())
            .map(|e| {
                let d = e
                    .digest(svsm_verifier::tpm::ALG_SHA256)
                    .expect("a SHA-256 digest");
                format!("{}:sha256={}", e.pcr, hex::encode(d))
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.tool("tpm2_pcrextend", &args);
    }

    /// Creates the EK and an AK and reads the NV evidence into the scratch directory.
    fn collect(&self) {
        self.tool_flush(
            "tpm2_createek",
            &["-G", "rsa", "-c", "ek.ctx", "-u", "ek.pub"],
        );
        self.tool_flush(
            "tpm2_createak",
            &[
                "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u",
                "ak.pub", "-n", "ak.name",
            ],
        );
        for (index, file) in [
            ("0x01C00002", "rsa_ek.der"),
            ("0x01C0000A", "ecc_ek.der"),
            ("0x01C00100", "ca.der"),
            ("0x01C00101", "vcek.der"),
            ("0x01C00110", "report.bin"),
        ] {
            self.tool("tpm2_nvread", &[index, "-o", file]);
        }
        // The persistent state's evidence, when the vTPM keeps a state.
        let state = self.try_tool("tpm2_nvread", &["0x01C00111", "-o", "state.bin"]);
        if !state.status.success() {
            let _ = std::fs::remove_file(self.dir.path("state.bin"));
        }
    }

    pub fn tcti(&self) -> String {
        format!("mssim:host=127.0.0.1,port={}", self.port)
    }

    pub fn try_tool(&self, tool: &str, args: &[&str]) -> std::process::Output {
        Command::new(tool)
            .args(args)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .current_dir(&self.dir.0)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool} (install tpm2-tools): {e}"))
    }

    pub fn tool(&self, tool: &str, args: &[&str]) -> String {
        let out = self.try_tool(tool, args);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tool, then every transient object and session flushed (no resource manager).
    pub fn tool_flush(&self, tool: &str, args: &[&str]) -> String {
        let out = self.tool(tool, args);
        self.tool("tpm2_flushcontext", &["-t"]);
        self.tool("tpm2_flushcontext", &["-s"]);
        out
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    pub fn write(&self, name: &str, data: &[u8]) {
        std::fs::write(self.dir.path(name), data).expect("write scratch file");
    }

    /// The NV evidence as the agent sends it.
    pub fn nv(&self) -> NvEvidence {
        NvEvidence {
            rsa_ek_cert: b64(&self.read("rsa_ek.der")),
            ecc_ek_cert: b64(&self.read("ecc_ek.der")),
            ca_cert: b64(&self.read("ca.der")),
            report: b64(&self.read("report.bin")),
            vcek_cert: Some(b64(&self.read("vcek.der"))),
            state: std::fs::read(self.dir.path("state.bin"))
                .ok()
                .map(|s| b64(&s)),
        }
    }

    /// The PCR values of `selection` (`sha256:0,1,...`), as tpm2_pcrread prints them.
    pub fn pcrs(&self, selection: &str) -> Vec<PcrValue> {
        let text = self.tool("tpm2_pcrread", &[selection]);
        let mut bank = String::new();
        let mut out = Vec::new();
        for line in text.lines() {
            let t = line.trim();
            if let Some(b) = t.strip_suffix(':').filter(|b| !b.contains(' ')) {
                bank = b.to_string();
            } else if let Some((index, value)) = t.split_once(':') {
                let value = value.trim().trim_start_matches("0x").to_ascii_lowercase();
                out.push(PcrValue {
                    bank: bank.clone(),
                    index: index.trim().parse().expect("PCR index"),
                    value,
                });
            }
        }
        out
    }

    /// Quotes `selection` with the AK `ak` (a context file) and `nonce` (hex); returns
    /// (TPMS_ATTEST, TPMT_SIGNATURE).
    pub fn quote_with(&self, ak: &str, selection: &str, nonce: &str) -> (Vec<u8>, Vec<u8>) {
        self.tool_flush(
            "tpm2_quote",
            &[
                "-c",
                ak,
                "-l",
                selection,
                "-q",
                nonce,
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-g",
                "sha256",
            ],
        );
        (self.read("quote.msg"), self.read("quote.sig"))
    }

    /// The whole request for `challenge`, as the agent builds it.
    pub fn request(&self, challenge: &ChallengeResponse) -> AttestRequest {
        let (quote, sig) = self.quote_with("ak.ctx", &challenge.pcr_selection, &challenge.nonce);
        AttestRequest {
            session: challenge.session.clone(),
            nv: self.nv(),
            ek_public: b64(&self.read("ek.pub")),
            ak_public: b64(&self.read("ak.pub")),
            quote: b64(&quote),
            quote_signature: b64(&sig),
            pcrs: self.pcrs(&challenge.pcr_selection),
            event_log: b64(EVENT_LOG),
        }
    }

    /// TPM2_ActivateCredential on this vTPM with its EK and AK: the key the credential
    /// carries.
    pub fn activate(&self, credential: &[u8]) -> Result<Vec<u8>, String> {
        self.write("credential", credential);
        let _ = std::fs::remove_file(self.dir.path("activated"));
        self.tool(
            "tpm2_startauthsession",
            &["--policy-session", "-S", "session.ctx"],
        );
        self.tool("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"]);
        let out = self.try_tool(
            "tpm2_activatecredential",
            &[
                "-c",
                "ak.ctx",
                "-C",
                "ek.ctx",
                "-i",
                "credential",
                "-o",
                "activated",
                "-P",
                "session:session.ctx",
            ],
        );
        self.tool("tpm2_flushcontext", &["-t"]);
        self.tool("tpm2_flushcontext", &["-s"]);
        if out.status.success() {
            Ok(self.read("activated"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The test PKI: a CA and a server certificate for 127.0.0.1 and localhost.
pub struct Pki {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Scratch) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "svsm-service test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("server certificate");
        let (cert_path, key_path) = (dir.path("server.pem"), dir.path("server.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Pki {
            ca_pem: ca_cert.pem(),
            cert: cert_path,
            key: key_path,
        }
    }

    /// A TLS client configuration that trusts only the test CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.expect("CA PEM")).expect("add the CA");
        }
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A client that trusts only the test CA.
    pub fn client(&self) -> reqwest::blocking::Client {
        let config = rustls::ClientConfig::clone(&self.client_config());
        reqwest::blocking::Client::builder()
            .use_preconfigured_tls(config)
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .expect("client")
    }
}

use rustls_pki_types::pem::PemObject;

/// The policy the tests use for the emulated machine: the emulated PSP's test ARK and
/// ASK, the emulated launch's measurement `measurement`, the fixture's boot policy.
/// The emulated machine's TCB (svsm_emulated::psp::LaunchInfo's): boot loader 8,
/// microcode 3.
pub const EMULATED_TCB: &str = "bl=8,tee=0,snp=0,ucode=3";

pub fn policy_text(dir: &Scratch, measurement: &[u8; 48]) -> String {
    policy_text_with_tcb(dir, measurement, EMULATED_TCB)
}

/// [`policy_text`] with another minimum TCB.
pub fn policy_text_with_tcb(dir: &Scratch, measurement: &[u8; 48], min_tcb: &str) -> String {
    use svsm_emulated::psp::{test_chain, test_vcek};
    let chain = test_chain(&test_vcek().verifying_key().clone()).expect("the test chain");
    std::fs::write(dir.path("ark.pem"), &chain.ark_pem).expect("ark");
    std::fs::write(dir.path("ask.pem"), &chain.ask_pem).expect("ask");
    let boot: toml::Table = toml::from_str(BOOT_POLICY).expect("the fixture policy");
    let mut snp = toml::Table::new();
    snp.insert(
        "measurements".into(),
        toml::Value::Array(vec![hex::encode(measurement).into()]),
    );
    snp.insert("min_tcb".into(), min_tcb.into());
    snp.insert("ark".into(), "ark.pem".into());
    snp.insert("ask".into(), "ask.pem".into());
    let mut release = toml::Table::new();
    release.insert("secret".into(), "disk-key".into());
    let mut file = toml::Table::new();
    file.insert("snp".into(), snp.into());
    file.insert("boot".into(), boot.into());
    file.insert("release".into(), release.into());
    toml::to_string(&file).expect("the policy as TOML")
}

/// The emulated launch's measurement.
pub fn emulated_measurement() -> [u8; 48] {
    svsm_emulated::psp::LaunchInfo::default().measurement
}

/// The secret the tests release.
pub const SECRET: &[u8] = b"luks2 key for the test volume: 0123456789abcdef";

/// One service replica on loopback.
pub struct Replica {
    pub service: Arc<Service>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The service and its client.
pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub dir: Scratch,
    pub pki: Pki,
    pub client: reqwest::blocking::Client,
    pub db_url: String,
    pub policy: PathBuf,
    pub replicas: Vec<Replica>,
}

impl Harness {
    /// A service with the emulated machine's policy on `db_url` (None: a new SQLite file).
    pub fn start(db_url: Option<String>) -> Self {
        Self::with_policy(db_url, |dir| policy_text(dir, &emulated_measurement()))
    }

    /// [`Self::start`] with a first replica that does not log verdicts (the benchmark).
    pub fn start_quiet(db_url: Option<String>) -> Self {
        Self::build(
            db_url,
            |dir| policy_text(dir, &emulated_measurement()),
            Limits {
                log_verdicts: false,
                ..Limits::default()
            },
        )
    }

    pub fn with_policy(db_url: Option<String>, policy: impl FnOnce(&Scratch) -> String) -> Self {
        Self::build(db_url, policy, Limits::default())
    }

    fn build(
        db_url: Option<String>,
        policy: impl FnOnce(&Scratch) -> String,
        limits: Limits,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = Scratch::new("service");
        let pki = Pki::new(&dir);
        let client = pki.client();
        let policy_path = dir.path("policy.toml");
        std::fs::write(&policy_path, policy(&dir)).expect("policy");
        std::fs::create_dir_all(dir.path("secrets")).expect("secrets dir");
        std::fs::write(dir.path("secrets/disk-key"), SECRET).expect("secret");
        let db_url =
            db_url.unwrap_or_else(|| format!("sqlite:{}", dir.path("service.db").display()));
        let mut h = Harness {
            rt,
            dir,
            pki,
            client,
            db_url,
            policy: policy_path,
            replicas: Vec::new(),
        };
        h.add_replica(limits);
        h
    }

    /// Starts one more replica on the same database; returns its index.
    pub fn add_replica(&mut self, limits: Limits) -> usize {
        let policy = Policy::load(&self.policy).expect("the policy loads");
        let tls = server::tls_config(&self.pki.cert, &self.pki.key).expect("TLS config");
        let secrets = self.dir.path("secrets");
        let url = self.db_url.clone();
        let (service, running) = self.rt.block_on(async move {
            let db = Db::connect(&url).await.expect("database");
            let service = Arc::new(Service::new(db, policy, &secrets, limits).expect("service"));
            let running = server::start(
                service.clone(),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                tls,
            )
            .await
            .expect("listen");
            (service, running)
        });
        self.replicas.push(Replica {
            service,
            addr: running.addr,
            task: running.task,
        });
        self.replicas.len() - 1
    }

    pub fn url(&self, replica: usize, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}{path}",
            self.replicas[replica].addr.port()
        )
    }

    pub fn challenge_on(&self, replica: usize) -> ChallengeResponse {
        self.challenge_with(&self.client, replica)
    }

    /// A challenge through `client` (one per thread under load: its own connections).
    pub fn challenge_with(
        &self,
        client: &reqwest::blocking::Client,
        replica: usize,
    ) -> ChallengeResponse {
        let r = client
            .post(self.url(replica, CHALLENGE_PATH))
            .json(&ChallengeRequest {
                guest: Some("test guest".into()),
            })
            .send()
            .expect("challenge");
        assert_eq!(r.status(), 200, "challenge: {:?}", r.text());
        r.json().expect("challenge body")
    }

    pub fn challenge(&self) -> ChallengeResponse {
        self.challenge_on(0)
    }

    pub fn attest_on(
        &self,
        replica: usize,
        req: &AttestRequest,
    ) -> Result<AttestResponse, (u16, ErrorBody)> {
        self.attest_with(&self.client, replica, req)
    }

    /// An attestation through `client`.
    pub fn attest_with(
        &self,
        client: &reqwest::blocking::Client,
        replica: usize,
        req: &AttestRequest,
    ) -> Result<AttestResponse, (u16, ErrorBody)> {
        let r = client
            .post(self.url(replica, ATTEST_PATH))
            .json(req)
            .send()
            .expect("attest");
        let status = r.status().as_u16();
        if status == 200 {
            Ok(r.json().expect("attest body"))
        } else {
            Err((status, r.json().expect("error body")))
        }
    }

    pub fn attest(&self, req: &AttestRequest) -> Result<AttestResponse, (u16, ErrorBody)> {
        self.attest_on(0, req)
    }

    /// POSTs raw bytes; returns the status and the body.
    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
        self.try_post_raw(path, content_type, body).expect("post")
    }

    /// [`Self::post_raw`], with the transport's error when there is no answer.
    pub fn try_post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, String), reqwest::Error> {
        let r = self
            .client
            .post(self.url(0, path))
            .header("content-type", content_type)
            .body(body)
            .send()?;
        Ok((r.status().as_u16(), r.text().unwrap_or_default()))
    }

    pub fn db(&self) -> &Db {
        &self.replicas[0].service.db
    }

    pub fn audit(&self, session: &str) -> Vec<AuditEntry> {
        self.rt
            .block_on(self.db().audit_for_session(session))
            .expect("audit")
    }

    /// Asserts a refusal with `status`, a reason containing `needle`, and the same
    /// reason in the audit log; then that the service still answers.
    pub fn assert_refused(
        &self,
        session: &str,
        result: Result<AttestResponse, (u16, ErrorBody)>,
        status: u16,
        needle: &str,
    ) -> ErrorBody {
        let (got, body) = match result {
            Ok(_) => panic!("released a secret where {needle:?} was expected"),
            Err(e) => e,
        };
        assert_eq!(got, status, "status for {needle:?}: {body:?}");
        assert!(
            body.reason.contains(needle),
            "reason {:?} does not name {needle:?}",
            body.reason
        );
        let audit = self.audit(session);
        let last = audit.last().expect("an audit entry for the session");
        assert_eq!(
            last.reason, body.reason,
            "the audit log has the same reason"
        );
        assert_ne!(last.verdict, "allowed");
        assert_eq!(last.secret, None);
        // Still up.
        let _ = self.challenge();
        body
    }
}

/// The path of a file in the harness directory.
pub fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The persistent handle the load test and the benchmark give the AK, so that raw
/// TPM2_Quote commands can name it without tpm2-tools.
pub const AK_HANDLE: u32 = 0x8101_0002;

impl Guest {
    /// Makes the AK persistent at [`AK_HANDLE`].
    pub fn persist_ak(&self) {
        let _ = self.try_tool("tpm2_evictcontrol", &["-c", &format!("{AK_HANDLE:#x}")]);
        self.tool_flush(
            "tpm2_evictcontrol",
            &["-c", "ak.ctx", &format!("{AK_HANDLE:#x}")],
        );
    }

    /// TPM2_Quote by the persistent AK over PCRs 0-7 and 9 of SHA-256 with `nonce`, sent
    /// straight to the vTPM (the SVSM path, without a tool process): (TPMS_ATTEST,
    /// TPMT_SIGNATURE).
    pub fn raw_quote(&self, nonce: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut params = Vec::new();
        params.extend_from_slice(&(nonce.len() as u16).to_be_bytes());
        params.extend_from_slice(nonce);
        params.extend_from_slice(&0x0010u16.to_be_bytes()); // inScheme: TPM_ALG_NULL
        params.extend_from_slice(&1u32.to_be_bytes()); // one bank
        params.extend_from_slice(&0x000Bu16.to_be_bytes()); // SHA-256
        params.extend_from_slice(&[3, 0xFF, 0x02, 0]); // PCRs 0-7 and 9
        let mut cmd = Vec::new();
        cmd.extend_from_slice(&0x8002u16.to_be_bytes()); // TPM_ST_SESSIONS
        cmd.extend_from_slice(&0u32.to_be_bytes()); // size, below
        cmd.extend_from_slice(&0x0000_0158u32.to_be_bytes()); // TPM_CC_Quote
        cmd.extend_from_slice(&AK_HANDLE.to_be_bytes());
        cmd.extend_from_slice(&9u32.to_be_bytes()); // authorization area
        cmd.extend_from_slice(&0x4000_0009u32.to_be_bytes()); // TPM_RS_PW
        cmd.extend_from_slice(&[0, 0, 0, 0, 0]); // nonce, attributes, empty password
        cmd.extend_from_slice(&params);
        let size = cmd.len() as u32;
        cmd[2..6].copy_from_slice(&size.to_be_bytes());
        let rsp = vtpm_daemon::mssim::lock(&self.backend)
            .command(0, &cmd)
            .expect("the vTPM answers");
        let rc = u32::from_be_bytes(rsp[6..10].try_into().expect("rc"));
        assert_eq!(rc, 0, "TPM2_Quote: rc {rc:#x}");
        let param_size = u32::from_be_bytes(rsp[10..14].try_into().expect("size")) as usize;
        let params = &rsp[14..14 + param_size];
        let attest_len = usize::from(u16::from_be_bytes([params[0], params[1]]));
        (
            params[2..2 + attest_len].to_vec(),
            params[2 + attest_len..].to_vec(),
        )
    }

    /// The request for `challenge` with a raw quote and the PCR values read once.
    pub fn raw_request(&self, challenge: &ChallengeResponse, pcrs: &[PcrValue]) -> AttestRequest {
        let nonce = hex::decode(&challenge.nonce).expect("nonce hex");
        let (quote, sig) = self.raw_quote(&nonce);
        AttestRequest {
            session: challenge.session.clone(),
            nv: self.nv(),
            ek_public: b64(&self.read("ek.pub")),
            ak_public: b64(&self.read("ak.pub")),
            quote: b64(&quote),
            quote_signature: b64(&sig),
            pcrs: pcrs.to_vec(),
            event_log: b64(EVENT_LOG),
        }
    }
}
