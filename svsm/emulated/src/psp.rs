//! The emulated PSP: decrypts SNP guest messages with the VMPCKs, enforces each one's
//! message sequence, answers MSG_REPORT_REQ with a report signed by a P-384 test key that
//! stands in for the VCEK, and MSG_KEY_REQ with a key derived from a per-machine secret.
//!
//! It models what the firmware and the hypervisor do with a guest request (SEV-SNP ABI,
//! pub. 56860, "SNP_GUEST_REQUEST"; GHCB, pub. 56421, "SNP Guest Request" and "SNP
//! Extended Guest Request"):
//! - a request must carry the sequence number one past the last response; anything else
//!   (a replay, a skipped number) is refused and changes nothing;
//! - a request that fails authentication is refused and changes nothing;
//! - a valid request advances the sequence by two (request and response);
//! - BUSY can be injected: the hypervisor answers without forwarding the request;
//! - an extended request whose certificate buffer is too small is refused by the
//!   hypervisor before it reaches the PSP, with the size it needs.
//!
//! - MSG_KEY_REQ (56860, "MSG_KEY_REQ"): the key is HMAC-SHA-256 under the machine's
//!   secret (standing in for the chip's root key) of the VMPL, the field selection and
//!   each selected field. The VMPL must be at least the VMPL of the VMPCK that sealed the
//!   request (a guest at VMPL2 holds only VMPCK2 and VMPCK3, so it can never derive a
//!   VMPL0 key); the guest SVN may not exceed the launch's, no TCB component may exceed
//!   the current TCB's (an older TCB is accepted: that is how a state sealed before a
//!   firmware update is still opened); the VMRK, undefined selection bits and a VMPL
//!   above 3 are refused with INVALID_PARAM.
//!
//! The test key is not secret and must never sign anything but emulated reports. A test
//! chain ARK → ASK → VCEK (RSA-PSS, SHA-384, salt 48; the VCEK with serial number 0 like
//! AMD's) is built with the `x509-cert` builder so the verifier's chain check runs on
//! emulated reports too.

use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey;
use sha2::Sha256;
use sha2::Sha384;
use svsm::platform::{MessagePage, PspError};
use svsm::psp::msg::{self, MessageError, ReportRequest, REPORT_REQUEST_SIZE};
use svsm::psp::{ExtendedError, PspTransport};
use svsm_protocol::guest_msg::{
    AttestationReport, GuestFieldSelect, KeyRequest, KeyResponse, MessageType, ReportResponse,
    KEY_REQUEST_SIZE, KEY_SEL_VCEK, KEY_SEL_VLEK, SIGNATURE_ALGO_ECDSA_P384_SHA384,
};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::der::{Encode, EncodePem};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{EncodePublicKey, SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::time::Validity;
use x509_cert::TbsCertificate;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Firmware status the emulation returns for a message it refuses (bad sequence number,
/// failed authentication, wrong type): INVALID_PARAM. Which status real firmware uses
/// for each of these is not something the SVSM depends on: every firmware error makes
/// it wipe VMPCK0, as Linux does.
pub const FW_ERR_REFUSED: u32 = 0x16;
/// MSG_REPORT_RSP status for an invalid parameter (a VMPL above 3).
pub const STATUS_INVALID_PARAM: u32 = 0x16;

/// GUIDs of the host's certificate table entries (GHCB, "SNP Extended Guest Request").
pub mod cert_guid {
    /// ARK: c0b406a4-a803-4952-9743-3fb6014cd0ae.
    pub const ARK: [u8; 16] = guid(
        0xc0b4_06a4,
        0xa803,
        0x4952,
        [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae],
    );
    /// ASK: 4ab7b379-bbac-4fe4-a02f-05aef327c782.
    pub const ASK: [u8; 16] = guid(
        0x4ab7_b379,
        0xbbac,
        0x4fe4,
        [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82],
    );
    /// VCEK: 63da758d-e664-4564-adc5-f4b93be8accd.
    pub const VCEK: [u8; 16] = guid(
        0x63da_758d,
        0xe664,
        0x4564,
        [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd],
    );

    const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        [
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ]
    }
}

/// The emulation's VMPCK0 (a fixed test value: the emulated secrets page hands it to the
/// SVSM).
pub const TEST_VMPCK0: [u8; 32] = *b"emulated-psp-vmpck0-test-key-32b";
/// The emulation's VMPCK2 (a fixed test value: what the guest at VMPL2 holds).
pub const TEST_VMPCK2: [u8; 32] = *b"emulated-psp-vmpck2-test-key-32b";
/// The emulated machine's secret that derived keys come from (a fixed test value, so a
/// restarted emulated machine is the same machine; [`EmulatedPsp::set_machine_secret`]
/// makes another).
pub const TEST_MACHINE_SECRET: [u8; 32] = *b"emulated-psp-chip-root-secret-32";

/// The fixed scalar of the test VCEK (never a real key).
const TEST_VCEK_SCALAR: [u8; 48] = [
    0x3b, 0x7d, 0x21, 0x9c, 0x55, 0x0e, 0xa4, 0x18, 0x62, 0xf1, 0x0b, 0x93, 0x4e, 0xc7, 0x2a, 0x86,
    0x19, 0xd5, 0x70, 0x3e, 0xb2, 0x64, 0x0f, 0xa9, 0x5c, 0x81, 0x37, 0xe6, 0x2d, 0x98, 0x4b, 0x03,
    0xf7, 0x6a, 0x15, 0xc2, 0x88, 0x3f, 0xd1, 0x46, 0x0c, 0xbe, 0x72, 0x29, 0x9a, 0x57, 0xe0, 0x11,
];

const TEST_ARK_KEY: &str = include_str!("test_keys/ark.pem");
const TEST_ASK_KEY: &str = include_str!("test_keys/ask.pem");

/// What the machine was launched with: the fields of the report the guest cannot choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchInfo {
    /// The launch measurement (SNP_LAUNCH_UPDATE digest chain).
    pub measurement: [u8; 48],
    /// Guest policy.
    pub policy: u64,
    /// Host data given at launch.
    pub host_data: [u8; 32],
    /// Chip identifier.
    pub chip_id: [u8; 64],
    /// TCB version (committed, current, launch; reported too unless
    /// [`LaunchInfo::reported_tcb`] says otherwise). MSG_KEY_REQ refuses a newer one.
    pub tcb: u64,
    /// REPORTED_TCB when the host set it below the committed TCB (SNP_CONFIG lets the
    /// hypervisor report an older TCB, e.g. while a VCEK for the new one is not yet
    /// published).
    pub reported_tcb: Option<u64>,
    /// Guest security version number.
    pub guest_svn: u32,
    /// The ID block's image ID.
    pub image_id: [u8; 16],
    /// The ID block's family ID.
    pub family_id: [u8; 16],
}

impl Default for LaunchInfo {
    fn default() -> Self {
        LaunchInfo {
            measurement: [0; 48],
            // SMT allowed (bit 16), bit 17 reserved as one, ABI 0.0.
            policy: 0x3_0000,
            host_data: [0; 32],
            chip_id: [0xC1; 64],
            tcb: 0x0300_0000_0000_0008,
            reported_tcb: None,
            guest_svn: 0,
            image_id: [0; 16],
            family_id: [0; 16],
        }
    }
}

#[derive(Debug)]
struct State {
    /// VMPCK0..3; a zero key is not installed.
    vmpcks: [[u8; 32]; 4],
    /// Per VMPCK, the last sequence number used (the last response's).
    seqnos: [u64; 4],
    /// What derived keys come from.
    machine_secret: [u8; 32],
    keys_derived: u64,
    launch: LaunchInfo,
    vcek: SigningKey,
    busy: u32,
    cert_table: Vec<u8>,
    reports: u64,
}

/// The PSP of the emulated machine.
#[derive(Debug)]
pub struct EmulatedPsp {
    state: Mutex<State>,
}

impl Default for EmulatedPsp {
    fn default() -> Self {
        Self::new(TEST_VMPCK0, LaunchInfo::default())
    }
}

impl EmulatedPsp {
    /// A PSP with VMPCK0 `vmpck0`, for a machine launched as `launch`, signing with the
    /// test VCEK and offering the test chain as its host certificate table.
    pub fn new(vmpck0: [u8; 32], launch: LaunchInfo) -> Self {
        let vcek = test_vcek();
        EmulatedPsp {
            state: Mutex::new(State {
                vmpcks: [vmpck0, [0; 32], TEST_VMPCK2, [0; 32]],
                seqnos: [0; 4],
                machine_secret: TEST_MACHINE_SECRET,
                keys_derived: 0,
                launch,
                vcek,
                busy: 0,
                cert_table: Vec::new(),
                reports: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// VMPCK0 as the secrets page gives it to the SVSM.
    pub fn vmpck0(&self) -> [u8; 32] {
        self.lock().vmpcks[0]
    }

    /// VMPCK `n` (0..=3; all zero when not installed).
    pub fn vmpck(&self, n: usize) -> [u8; 32] {
        self.lock().vmpcks.get(n).copied().unwrap_or([0; 32])
    }

    /// Makes this another machine: derived keys come from `secret`.
    pub fn set_machine_secret(&self, secret: [u8; 32]) {
        self.lock().machine_secret = secret;
    }

    /// How many keys the PSP has derived.
    pub fn keys_derived(&self) -> u64 {
        self.lock().keys_derived
    }

    /// The public key of the key that signs reports.
    pub fn vcek_public_key(&self) -> VerifyingKey {
        *self.lock().vcek.verifying_key()
    }

    /// Replaces the signing key (to emulate a report signed by another chip).
    pub fn set_signing_key(&self, key: SigningKey) {
        self.lock().vcek = key;
    }

    /// Changes what the machine was launched with.
    pub fn set_launch(&self, launch: LaunchInfo) {
        self.lock().launch = launch;
    }

    /// Makes the next `n` requests answer BUSY without reaching the PSP.
    pub fn inject_busy(&self, n: u32) {
        self.lock().busy = n;
    }

    /// Sets the host's certificate table returned by extended requests.
    pub fn set_cert_table(&self, table: Vec<u8>) {
        self.lock().cert_table = table;
    }

    /// The last sequence number the PSP used with VMPCK0.
    pub fn seqno(&self) -> u64 {
        self.lock().seqnos[0]
    }

    /// How many reports the PSP has signed.
    pub fn reports_signed(&self) -> u64 {
        self.lock().reports
    }

    /// SNP_GUEST_REQUEST: one encrypted message page in, one out.
    pub fn guest_request(&self, request: &MessagePage) -> Result<MessagePage, PspError> {
        let mut state = self.lock();
        if state.busy > 0 {
            state.busy -= 1;
            return Err(PspError::Busy);
        }
        state.handle(request)
    }

    /// SNP_EXTENDED_GUEST_REQUEST: as [`Self::guest_request`], and the host's
    /// certificate table is copied into `certs`. A buffer too small for the table is
    /// refused before the PSP sees the request.
    pub fn extended_guest_request(
        &self,
        request: &MessagePage,
        certs: &mut [u8],
    ) -> Result<(MessagePage, usize), ExtendedError> {
        let mut state = self.lock();
        if state.busy > 0 {
            state.busy -= 1;
            return Err(ExtendedError::Psp(PspError::Busy));
        }
        let needed = state.cert_table.len();
        if certs.len() < needed {
            // The hypervisor reports whole pages.
            return Err(ExtendedError::CertBufferTooSmall(
                needed.div_ceil(4096) * 4096,
            ));
        }
        let page = state.handle(request).map_err(ExtendedError::Psp)?;
        certs[..needed].copy_from_slice(&state.cert_table);
        Ok((page, needed))
    }
}

impl PspTransport for EmulatedPsp {
    fn request(&self, page: &MessagePage) -> Result<MessagePage, PspError> {
        self.guest_request(page)
    }

    fn extended_request(
        &self,
        page: &MessagePage,
        certs: &mut [u8],
    ) -> Result<(MessagePage, usize), ExtendedError> {
        self.extended_guest_request(page, certs)
    }
}

impl State {
    fn handle(&mut self, request: &MessagePage) -> Result<MessagePage, PspError> {
        let refuse = PspError::Firmware(FW_ERR_REFUSED);
        let header = msg::read_header(request).map_err(|_| refuse)?;
        let vmpck = header.msg_vmpck;
        let slot = usize::from(vmpck);
        let key = *self.vmpcks.get(slot).ok_or(refuse)?;
        if key == [0; 32] {
            return Err(refuse);
        }
        let expected_seqno = self.seqnos[slot].checked_add(1).ok_or(refuse)?;
        let msg_type = MessageType::from_u8(header.msg_type).ok_or(refuse)?;
        let (want, reply_type) = match msg_type {
            MessageType::ReportRequest => (REPORT_REQUEST_SIZE, MessageType::ReportResponse),
            MessageType::KeyRequest => (KEY_REQUEST_SIZE, MessageType::KeyResponse),
            _ => return Err(refuse),
        };
        let mut payload = [0u8; REPORT_REQUEST_SIZE];
        match msg::open(&key, request, msg_type, expected_seqno, vmpck, &mut payload) {
            Ok(n) if n == want => {}
            Ok(_) | Err(MessageError::BadSize) => {
                return Err(PspError::Firmware(STATUS_INVALID_PARAM))
            }
            Err(_) => return Err(refuse),
        }
        let payload = &payload[..want];
        let reply = match msg_type {
            MessageType::KeyRequest => {
                let req = KeyRequest::read_from_bytes(payload).map_err(|_| refuse)?;
                self.derive_key(&req, u32::from(vmpck)).as_bytes().to_vec()
            }
            _ => {
                let req = ReportRequest::read_from_bytes(payload).map_err(|_| refuse)?;
                let vmpl = req.vmpl.get();
                let mut rsp = ReportResponse::new_zeroed();
                if vmpl > 3 || vmpl < u32::from(vmpck) {
                    rsp.status.set(STATUS_INVALID_PARAM);
                } else {
                    rsp.report = self.build_report(&req.user_data, vmpl);
                    rsp.report_size.set(msg::REPORT_SIZE as u32);
                    self.reports += 1;
                }
                rsp.as_bytes().to_vec()
            }
        };
        let rsp_seqno = expected_seqno + 1;
        let page = msg::seal(&key, rsp_seqno, reply_type, vmpck, &reply).map_err(|_| refuse)?;
        self.seqnos[slot] = rsp_seqno;
        Ok(page)
    }

    /// MSG_KEY_RSP for `req`, sealed with the VMPCK of `requester_vmpl`.
    fn derive_key(&mut self, req: &KeyRequest, requester_vmpl: u32) -> KeyResponse {
        let mut rsp = KeyResponse::new_zeroed();
        let l = &self.launch;
        let select = req.root_key_select.get();
        let fields = GuestFieldSelect::from_bits(req.guest_field_select.get());
        let vmpl = req.vmpl.get();
        let tcb = req.tcb_version.get();
        // No TCB component may be newer than the current TCB's (byte-wise: each byte of
        // the TCB version is one component's SVN).
        let tcb_newer = tcb
            .to_le_bytes()
            .iter()
            .zip(l.tcb.to_le_bytes())
            .any(|(asked, current)| *asked > current);
        let valid = select & !(KEY_SEL_VCEK | KEY_SEL_VLEK) == 0
            && select & (KEY_SEL_VCEK | KEY_SEL_VLEK) != (KEY_SEL_VCEK | KEY_SEL_VLEK)
            // The emulated host installs no VLEK.
            && select & KEY_SEL_VLEK == 0
            && req.reserved.get() == 0
            && (requester_vmpl..=3).contains(&vmpl)
            && req.guest_svn.get() <= l.guest_svn
            && !tcb_newer;
        let Some(fields) = fields.filter(|_| valid) else {
            rsp.status.set(STATUS_INVALID_PARAM);
            return rsp;
        };
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.machine_secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"emulated SNP derived key, VCEK root");
        mac.update(&vmpl.to_le_bytes());
        mac.update(&fields.bits().to_le_bytes());
        if fields.contains(GuestFieldSelect::GUEST_POLICY) {
            mac.update(&l.policy.to_le_bytes());
        }
        if fields.contains(GuestFieldSelect::IMAGE_ID) {
            mac.update(&l.image_id);
        }
        if fields.contains(GuestFieldSelect::FAMILY_ID) {
            mac.update(&l.family_id);
        }
        if fields.contains(GuestFieldSelect::MEASUREMENT) {
            mac.update(&l.measurement);
        }
        if fields.contains(GuestFieldSelect::GUEST_SVN) {
            mac.update(&req.guest_svn.get().to_le_bytes());
        }
        if fields.contains(GuestFieldSelect::TCB_VERSION) {
            mac.update(&tcb.to_le_bytes());
        }
        rsp.derived_key
            .copy_from_slice(&mac.finalize().into_bytes());
        self.keys_derived += 1;
        rsp
    }

    /// An ATTESTATION_REPORT, version 2, signed with ECDSA P-384/SHA-384 over bytes
    /// 0..0x2A0.
    fn build_report(&self, user_data: &[u8; 64], vmpl: u32) -> AttestationReport {
        let l = &self.launch;
        let mut r = AttestationReport::new_zeroed();
        r.version.set(2);
        r.guest_svn.set(l.guest_svn);
        r.policy.set(l.policy);
        r.vmpl.set(vmpl);
        r.signature_algo.set(SIGNATURE_ALGO_ECDSA_P384_SHA384);
        r.platform_version.set(l.tcb);
        r.platform_info.set(1); // SMT enabled
        r.flags.set(0); // signed by the VCEK, chip key not masked
        r.report_data = *user_data;
        r.measurement = l.measurement;
        r.host_data = l.host_data;
        r.report_id = [0x5E; 32];
        r.report_id_ma = [0xFF; 32]; // no migration agent
        r.reported_tcb.set(l.reported_tcb.unwrap_or(l.tcb));
        r.chip_id = l.chip_id;
        r.committed_tcb.set(l.tcb);
        r.launch_tcb.set(l.tcb);
        let signature: Signature = self.vcek.sign(r.signed_bytes());
        let (sig_r, sig_s) = signature.split_bytes();
        // R and S are stored as 72-byte little-endian integers.
        for (dst, src) in r.signature.r.iter_mut().zip(sig_r.iter().rev()) {
            *dst = *src;
        }
        for (dst, src) in r.signature.s.iter_mut().zip(sig_s.iter().rev()) {
            *dst = *src;
        }
        r
    }
}

/// The fixed test VCEK.
pub fn test_vcek() -> SigningKey {
    SigningKey::from_slice(&TEST_VCEK_SCALAR).unwrap_or_else(|_| unreachable!("a valid scalar"))
}

/// A certificate chain for the test VCEK: what AMD's key distribution service would
/// serve for a real chip.
#[derive(Debug, Clone)]
pub struct TestChain {
    /// The root, self-signed (PEM).
    pub ark_pem: String,
    /// The signing key certificate (PEM).
    pub ask_pem: String,
    /// The VCEK certificate (DER), serial number 0.
    pub vcek_der: Vec<u8>,
}

/// Issues every certificate with a fixed issuer and subject. ARK and ASK carry
/// basicConstraints CA and keyUsage keyCertSign, cRLSign (as AMD's do); the VCEK carries
/// AMD's hwID (the chip's CHIP_ID) and SPL extensions (its TCB), which a verifier checks
/// against the report.
struct AmdProfile {
    issuer: Name,
    subject: Name,
    /// For a VCEK: the chip's CHIP_ID and TCB version; `None` for ARK and ASK.
    vcek_of: Option<([u8; 64], u64)>,
}

/// An extension with `oid` whose extnValue holds `value`.
fn extension(oid: &str, critical: bool, value: Vec<u8>) -> x509_cert::builder::Result<Extension> {
    Ok(Extension {
        extn_id: x509_cert::der::asn1::ObjectIdentifier::new(oid)
            .map_err(|_| x509_cert::der::Error::from(x509_cert::der::ErrorKind::Failed))?,
        critical,
        extn_value: x509_cert::der::asn1::OctetString::new(value)?,
    })
}

impl BuilderProfile for AmdProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
        let Some((chip_id, tcb)) = self.vcek_of else {
            return Ok(vec![
                extension(
                    "2.5.29.19",
                    true,
                    BasicConstraints {
                        ca: true,
                        path_len_constraint: None,
                    }
                    .to_der()?,
                )?,
                extension(
                    "2.5.29.15",
                    true,
                    KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign).to_der()?,
                )?,
            ]);
        };
        let b = tcb.to_le_bytes();
        let mut out = Vec::new();
        for (oid, spl) in [
            ("1.3.6.1.4.1.3704.1.3.1", b[0]),
            ("1.3.6.1.4.1.3704.1.3.2", b[1]),
            ("1.3.6.1.4.1.3704.1.3.3", b[6]),
            ("1.3.6.1.4.1.3704.1.3.8", b[7]),
        ] {
            out.push(extension(oid, false, u32::from(spl).to_der()?)?);
        }
        out.push(extension("1.3.6.1.4.1.3704.1.4", false, chip_id.to_vec())?);
        Ok(out)
    }
}

/// Why the test chain could not be built (only a bug in this file can cause it).
#[derive(Debug)]
pub struct ChainError(pub String);

fn name(cn: &str) -> Result<Name, ChainError> {
    Name::from_str(&format!(
        "CN={cn},O=Emulated Micro Devices,ST=CA,L=Santa Clara,C=US,OU=Engineering"
    ))
    .map_err(|e| ChainError(format!("name {cn}: {e}")))
}

/// Builds the test ARK → ASK → VCEK chain for `vcek` with the `x509-cert` builder, the
/// VCEK issued for the default launch's chip and TCB ([`LaunchInfo::default`]).
pub fn test_chain(vcek: &VerifyingKey) -> Result<TestChain, ChainError> {
    let launch = LaunchInfo::default();
    test_chain_for(vcek, launch.chip_id, launch.tcb)
}

/// [`test_chain`] with the VCEK issued for `chip_id` at TCB version `tcb`.
pub fn test_chain_for(
    vcek: &VerifyingKey,
    chip_id: [u8; 64],
    tcb: u64,
) -> Result<TestChain, ChainError> {
    let err =
        |what: &'static str| move |e: &dyn core::fmt::Display| ChainError(format!("{what}: {e}"));
    let ark_key = rsa::PrivateKey::from_pkcs8_pem(TEST_ARK_KEY).map_err(|e| err("ARK key")(&e))?;
    let ask_key = rsa::PrivateKey::from_pkcs8_pem(TEST_ASK_KEY).map_err(|e| err("ASK key")(&e))?;
    let ark_signer = rsa::pss::SigningKey::<Sha384>::new_with_salt_len(ark_key.clone(), 48);
    let ask_signer = rsa::pss::SigningKey::<Sha384>::new_with_salt_len(ask_key.clone(), 48);
    let validity = Validity::from_now(Duration::from_secs(3600 * 24 * 365 * 10))
        .map_err(|e| err("validity")(&e))?;

    let issue = |issuer: &str,
                 subject: &str,
                 serial: u32,
                 spki_der: Vec<u8>,
                 signer: &rsa::pss::SigningKey<Sha384>|
     -> Result<x509_cert::Certificate, ChainError> {
        let spki = SubjectPublicKeyInfo::try_from(spki_der.as_slice())
            .map_err(|e| err("public key")(&e))?;
        let profile = AmdProfile {
            issuer: name(issuer)?,
            subject: name(subject)?,
            vcek_of: (serial == 0).then_some((chip_id, tcb)),
        };
        CertificateBuilder::new(profile, SerialNumber::from(serial), validity, spki)
            .map_err(|e| err("builder")(&e))?
            .build::<_, rsa::pss::Signature>(signer)
            .map_err(|e| err("signing")(&e))
    };
    let rsa_spki = |key: &rsa::PrivateKey| {
        rsa::PublicKey::from(key)
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| err("RSA public key")(&e))
    };
    let ark = issue(
        "ARK-Emulated",
        "ARK-Emulated",
        1,
        rsa_spki(&ark_key)?,
        &ark_signer,
    )?;
    let ask = issue(
        "ARK-Emulated",
        "SEV-Emulated",
        2,
        rsa_spki(&ask_key)?,
        &ark_signer,
    )?;
    let vcek_spki = vcek
        .to_public_key_der()
        .map_err(|e| err("VCEK public key")(&e))?
        .as_bytes()
        .to_vec();
    let vcek_cert = issue("SEV-Emulated", "SEV-VCEK", 0, vcek_spki, &ask_signer)?;
    let pem = |c: &x509_cert::Certificate| {
        c.to_pem(x509_cert::der::pem::LineEnding::LF)
            .map_err(|e| err("PEM")(&e))
    };
    Ok(TestChain {
        ark_pem: pem(&ark)?,
        ask_pem: pem(&ask)?,
        vcek_der: vcek_cert.to_der().map_err(|e| err("DER")(&e))?,
    })
}

/// The host certificate table for a chain: {GUID, offset, length} entries ending with a
/// zero entry, then the DER certificates.
pub fn cert_table(chain: &TestChain) -> Result<Vec<u8>, ChainError> {
    let der = |pem: &str| {
        x509_cert::der::pem::decode_vec(pem.as_bytes())
            .map(|(_, d)| d)
            .map_err(|e| ChainError(format!("PEM: {e}")))
    };
    let certs = [
        (cert_guid::VCEK, chain.vcek_der.clone()),
        (cert_guid::ASK, der(&chain.ask_pem)?),
        (cert_guid::ARK, der(&chain.ark_pem)?),
    ];
    let mut offset = (certs.len() + 1) * 24;
    let mut table = Vec::new();
    for (guid, data) in &certs {
        table.extend_from_slice(guid);
        table.extend_from_slice(&(offset as u32).to_le_bytes());
        table.extend_from_slice(&(data.len() as u32).to_le_bytes());
        offset += data.len();
    }
    table.extend_from_slice(&[0; 24]);
    for (_, data) in &certs {
        table.extend_from_slice(data);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use svsm::psp::{GuestMessageError, GuestMessenger};
    use svsm_protocol::guest_msg::{KEY_RESPONSE_SIZE, ROOT_KEY_VMRK};

    /// What the vTPM's sealing key asks for: the measurement and the policy, at VMPL0,
    /// with the current TCB.
    fn state_key_request(tcb: u64) -> KeyRequest {
        KeyRequest::new(
            GuestFieldSelect::MEASUREMENT
                | GuestFieldSelect::GUEST_POLICY
                | GuestFieldSelect::TCB_VERSION,
            0,
            0,
            tcb,
        )
    }

    fn launched(measurement: u8, policy: u64) -> EmulatedPsp {
        let psp = EmulatedPsp::default();
        psp.set_launch(LaunchInfo {
            measurement: [measurement; 48],
            policy,
            ..LaunchInfo::default()
        });
        psp
    }

    fn svsm_key(psp: &EmulatedPsp, request: &KeyRequest) -> Result<[u8; 32], GuestMessageError> {
        let mut m = GuestMessenger::new(psp.vmpck0(), psp.seqno());
        m.derive_key(psp, request).map(|k| *k)
    }

    #[test]
    fn derived_keys_depend_on_the_launch_the_vmpl_and_the_machine() {
        let tcb = LaunchInfo::default().tcb;
        let psp = launched(0xAB, 0x3_0000);
        let key = svsm_key(&psp, &state_key_request(tcb)).unwrap();
        assert_eq!(psp.keys_derived(), 1);
        // The same machine and launch (a reboot): the same key.
        assert_eq!(
            svsm_key(&launched(0xAB, 0x3_0000), &state_key_request(tcb)).unwrap(),
            key
        );
        // Another image, a debuggable launch of the same image, another machine, another
        // VMPL, fewer fields: other keys.
        assert_ne!(
            svsm_key(&launched(0xAC, 0x3_0000), &state_key_request(tcb)).unwrap(),
            key
        );
        assert_ne!(
            svsm_key(&launched(0xAB, 0xB_0000), &state_key_request(tcb)).unwrap(),
            key
        );
        let other = launched(0xAB, 0x3_0000);
        other.set_machine_secret([7; 32]);
        assert_ne!(svsm_key(&other, &state_key_request(tcb)).unwrap(), key);
        let mut vmpl1 = state_key_request(tcb);
        vmpl1.vmpl.set(1);
        assert_ne!(svsm_key(&psp, &vmpl1).unwrap(), key);
        let measurement_only = KeyRequest::new(
            GuestFieldSelect::MEASUREMENT | GuestFieldSelect::TCB_VERSION,
            0,
            0,
            tcb,
        );
        assert_ne!(svsm_key(&psp, &measurement_only).unwrap(), key);
    }

    #[test]
    fn an_older_tcb_is_accepted_a_newer_one_refused() {
        let tcb = LaunchInfo::default().tcb; // SNP SVN 3, microcode... as bytes
        let psp = launched(0xAB, 0x3_0000);
        let current = svsm_key(&psp, &state_key_request(tcb)).unwrap();
        // One component (the low byte) older: a different key, still derivable.
        let older = svsm_key(&psp, &state_key_request(tcb - 1)).unwrap();
        assert_ne!(older, current);
        // After a firmware update the old TCB still derives the old key.
        psp.set_launch(LaunchInfo {
            measurement: [0xAB; 48],
            tcb: tcb + 1,
            ..LaunchInfo::default()
        });
        assert_eq!(svsm_key(&psp, &state_key_request(tcb)).unwrap(), current);
        // Any component newer than the current TCB: INVALID_PARAM.
        assert_eq!(
            svsm_key(&psp, &state_key_request(tcb + 2)),
            Err(GuestMessageError::Firmware(STATUS_INVALID_PARAM))
        );
        assert_eq!(
            svsm_key(&psp, &state_key_request((tcb + 1) | 1 << 40)),
            Err(GuestMessageError::Firmware(STATUS_INVALID_PARAM))
        );
    }

    #[test]
    fn bad_key_requests_are_refused_and_the_channel_survives() {
        let tcb = LaunchInfo::default().tcb;
        let psp = launched(0xAB, 0x3_0000);
        let mut m = GuestMessenger::new(psp.vmpck0(), 0);
        let good = state_key_request(tcb);
        let mut bad = Vec::new();
        let mut r = good;
        r.root_key_select.set(ROOT_KEY_VMRK);
        bad.push(r);
        r = good;
        r.root_key_select.set(KEY_SEL_VLEK);
        bad.push(r);
        r = good;
        r.guest_field_select.set(1 << 6);
        bad.push(r);
        r = good;
        r.vmpl.set(4);
        bad.push(r);
        r = good;
        r.guest_svn.set(1);
        bad.push(r);
        r = good;
        r.reserved.set(1);
        bad.push(r);
        for request in &bad {
            assert_eq!(
                m.derive_key(&psp, request).map(|k| *k),
                Err(GuestMessageError::Firmware(STATUS_INVALID_PARAM)),
                "{request:?}"
            );
        }
        // Refusals are answers: the key and the sequence are intact.
        assert!(m.has_key());
        assert_eq!(m.seqno(), 2 * bad.len() as u64);
        let mut vcek = good;
        vcek.root_key_select.set(KEY_SEL_VCEK);
        assert_eq!(
            *m.derive_key(&psp, &vcek).unwrap(),
            *m.derive_key(&psp, &good).unwrap()
        );
        assert_eq!(psp.keys_derived(), 2);
    }

    /// The guest at VMPL2 holds VMPCK2 only (the SVSM zeroes VMPCK0 and VMPCK1 in its
    /// copy of the secrets page): it cannot ask for a VMPL0 key, and the keys it can ask
    /// for are other keys.
    #[test]
    fn the_guest_at_vmpl2_cannot_derive_the_svsm_key() {
        let tcb = LaunchInfo::default().tcb;
        let psp = launched(0xAB, 0x3_0000);
        let svsm = svsm_key(&psp, &state_key_request(tcb)).unwrap();
        let vmpck2 = psp.vmpck(2);
        let mut seqno = 0;
        let mut guest_asks = |vmpl: u32| -> KeyResponse {
            let mut request = state_key_request(tcb);
            request.vmpl.set(vmpl);
            let page = msg::seal(
                &vmpck2,
                seqno + 1,
                MessageType::KeyRequest,
                2,
                request.as_bytes(),
            )
            .unwrap();
            let reply = psp.guest_request(&page).unwrap();
            let mut out = [0u8; KEY_RESPONSE_SIZE];
            let n = msg::open(
                &vmpck2,
                &reply,
                MessageType::KeyResponse,
                seqno + 2,
                2,
                &mut out,
            )
            .unwrap();
            seqno += 2;
            KeyResponse::parse(&out[..n]).unwrap()
        };
        for vmpl in [0, 1] {
            let rsp = guest_asks(vmpl);
            assert_eq!(rsp.status.get(), STATUS_INVALID_PARAM);
            assert_eq!(rsp.derived_key, [0; 32]);
        }
        for vmpl in [2, 3] {
            let rsp = guest_asks(vmpl);
            assert_eq!(rsp.status.get(), 0);
            assert_ne!(rsp.derived_key, svsm);
        }
        // Nor can it seal with VMPCK0, which it does not hold: a message under any other
        // key fails authentication.
        let forged = msg::seal(
            &vmpck2,
            1,
            MessageType::KeyRequest,
            0,
            state_key_request(tcb).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            psp.guest_request(&forged),
            Err(PspError::Firmware(FW_ERR_REFUSED))
        );
    }

    #[test]
    fn answers_a_report_request_from_the_svsm_messenger() {
        let psp = EmulatedPsp::default();
        psp.set_launch(LaunchInfo {
            measurement: [0xAB; 48],
            ..LaunchInfo::default()
        });
        let mut m = GuestMessenger::new(psp.vmpck0(), 0);
        let report = m.get_report(&psp, &[0x11; 64], 0).unwrap();
        assert_eq!(&report[0x50..0x90], &[0x11; 64]);
        assert_eq!(&report[0x90..0xC0], &[0xAB; 48]);
        assert_eq!(report[0x30], 0);
        assert_eq!(psp.seqno(), 2);
        let report = m.get_report(&psp, &[0x22; 64], 2).unwrap();
        assert_eq!(report[0x30], 2);
        assert_eq!(psp.seqno(), 4);
        assert_eq!(psp.reports_signed(), 2);
    }

    #[test]
    fn a_replayed_request_is_refused_and_changes_nothing() {
        let psp = EmulatedPsp::default();
        let key = psp.vmpck0();
        let req = ReportRequest::new([0; 64], 0);
        let seal = |key: &[u8; 32], seqno| {
            msg::seal(key, seqno, MessageType::ReportRequest, 0, req.as_bytes()).unwrap()
        };
        let page = seal(&key, 1);
        psp.guest_request(&page).unwrap();
        let refused = Err(PspError::Firmware(FW_ERR_REFUSED));
        assert_eq!(psp.guest_request(&page), refused);
        assert_eq!(psp.seqno(), 2);
        assert_eq!(psp.reports_signed(), 1);
        // A skipped number too.
        assert_eq!(psp.guest_request(&seal(&key, 9)), refused);
        // A wrong key.
        assert_eq!(psp.guest_request(&seal(&[9; 32], 3)), refused);
        assert_eq!(psp.seqno(), 2);
        // The right next one works.
        psp.guest_request(&seal(&key, 3)).unwrap();
        assert_eq!(psp.seqno(), 4);
    }

    #[test]
    fn busy_then_success_with_the_same_ciphertext() {
        let psp = EmulatedPsp::default();
        psp.inject_busy(3);
        let mut m = GuestMessenger::new(psp.vmpck0(), 0);
        m.get_report(&psp, &[0; 64], 0).unwrap();
        assert_eq!((m.seqno(), psp.seqno()), (2, 2));
    }

    #[test]
    fn extended_request_too_small_then_right_size() {
        let psp = EmulatedPsp::default();
        let chain = test_chain(&psp.vcek_public_key()).unwrap();
        let table = cert_table(&chain).unwrap();
        psp.set_cert_table(table.clone());
        let mut m = GuestMessenger::new(psp.vmpck0(), 0);
        let mut small = [0u8; 16];
        let needed = table.len().div_ceil(4096) * 4096;
        assert_eq!(
            m.get_extended_report(&psp, &[0; 64], 0, &mut small),
            Err(GuestMessageError::CertBufferTooSmall(needed))
        );
        // The standard re-send reached the PSP: both sides moved on in step.
        assert_eq!((m.seqno(), psp.seqno()), (2, 2));
        let mut buf = vec![0u8; needed];
        let (_, n) = m.get_extended_report(&psp, &[0; 64], 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], &table[..]);
        assert_eq!(&buf[..16], &cert_guid::VCEK);
    }

    #[test]
    fn an_invalid_vmpl_gets_a_status_not_a_report() {
        let psp = EmulatedPsp::default();
        let mut m = GuestMessenger::new(psp.vmpck0(), 0);
        assert_eq!(
            m.get_report(&psp, &[0; 64], 4),
            Err(GuestMessageError::Firmware(STATUS_INVALID_PARAM))
        );
        assert!(
            m.has_key(),
            "a firmware status on a valid message keeps the key"
        );
        assert_eq!(psp.reports_signed(), 0);
    }

    #[test]
    fn the_test_chain_has_a_zero_serial_vcek() {
        let psp = EmulatedPsp::default();
        let chain = test_chain(&psp.vcek_public_key()).unwrap();
        let vcek =
            <x509_cert::Certificate as x509_cert::der::Decode>::from_der(&chain.vcek_der).unwrap();
        assert!(vcek
            .tbs_certificate()
            .serial_number()
            .as_bytes()
            .iter()
            .all(|&b| b == 0));
    }
}

#[cfg(test)]
mod state_key_tests {
    //! The vTPM state sealed under the PSP-derived key, end to end on the emulated PSP.

    use super::*;
    use svsm::psp::state_key::{PspKeySource, STATE_KEY_FIELDS};
    use svsm::psp::GuestMessenger;
    use vtpm::state::{BlobStore, KeySource, SealedStore, StateError, StateStore};

    #[derive(Default)]
    struct Memory(Option<Vec<u8>>);

    impl BlobStore for &mut Memory {
        fn load(&mut self) -> Result<Option<Vec<u8>>, StateError> {
            Ok(self.0.clone())
        }
        fn store(&mut self, blob: &[u8]) -> Result<(), StateError> {
            self.0 = Some(blob.to_vec());
            Ok(())
        }
    }

    fn keys(psp: &EmulatedPsp) -> PspKeySource<&EmulatedPsp> {
        let messenger = GuestMessenger::new(psp.vmpck0(), psp.seqno());
        PspKeySource::new(psp, messenger, Box::new(vtpm::OsEntropy)).unwrap()
    }

    fn launch(measurement: u8, policy: u64, tcb: u64) -> EmulatedPsp {
        let psp = EmulatedPsp::default();
        psp.set_launch(LaunchInfo {
            measurement: [measurement; 48],
            policy,
            tcb,
            ..LaunchInfo::default()
        });
        psp
    }

    #[test]
    fn the_state_opens_only_in_the_same_launch_and_survives_a_tcb_update() {
        let tcb = LaunchInfo::default().tcb;
        let mut host = Memory::default();
        let psp = launch(0xAB, 0x3_0000, tcb);
        let source = keys(&psp);
        let current = source.current();
        assert_eq!(current.fields, STATE_KEY_FIELDS.bits());
        assert_eq!((current.vmpl, current.tcb_version), (0, tcb));
        let mut store = SealedStore::new(&mut host, source);
        store.store(b"the TPM").unwrap();
        // The same launch after a reboot opens it.
        let psp = launch(0xAB, 0x3_0000, tcb);
        let mut again = SealedStore::new(&mut host, keys(&psp));
        assert_eq!(&again.load().unwrap().unwrap()[..], b"the TPM");
        // Another image, or the same image launched debuggable: refused.
        for other in [launch(0xAC, 0x3_0000, tcb), launch(0xAB, 0xB_0000, tcb)] {
            let mut store = SealedStore::new(&mut host, keys(&other));
            assert_eq!(store.load().err(), Some(StateError::Authentication));
        }
        // A firmware update: the old TCB's key still opens it; the next seal uses the
        // new TCB.
        let updated = launch(0xAB, 0x3_0000, tcb + 1);
        let mut store = SealedStore::new(&mut host, keys(&updated));
        assert_eq!(&store.load().unwrap().unwrap()[..], b"the TPM");
        store.store(b"the TPM, later").unwrap();
        let header = vtpm::state::read_header(host.0.as_deref().unwrap()).unwrap();
        assert_eq!(header.key_selection().tcb_version, tcb + 1);
        assert_eq!(header.generation.get(), 2);
        // Back on the older firmware, the state sealed under the newer TCB does not open.
        let downgraded = launch(0xAB, 0x3_0000, tcb);
        let mut store = SealedStore::new(&mut host, keys(&downgraded));
        assert_eq!(store.load().err(), Some(StateError::Key));
    }

    #[test]
    fn states_are_sealed_under_the_committed_tcb_not_a_lowered_reported_one() {
        use svsm::psp::state_key::committed_tcb;
        let tcb = LaunchInfo::default().tcb;
        let psp = EmulatedPsp::default();
        psp.set_launch(LaunchInfo {
            measurement: [0xAB; 48],
            reported_tcb: Some(tcb - 1),
            ..LaunchInfo::default()
        });
        let mut messenger = GuestMessenger::new(psp.vmpck0(), psp.seqno());
        let report = messenger.get_report(&psp, &[0; 64], 0).unwrap();
        let report = AttestationReport::parse(&report).unwrap();
        assert_eq!(report.reported_tcb.get(), tcb - 1);
        assert_eq!(committed_tcb(&psp, &mut messenger).unwrap(), tcb);
        let mut host = Memory::default();
        SealedStore::new(&mut host, keys(&psp))
            .store(b"the TPM")
            .unwrap();
        let header = vtpm::state::read_header(host.0.as_deref().unwrap()).unwrap();
        assert_eq!(header.key_selection().tcb_version, tcb);
    }

    #[test]
    fn keys_derived_up_front_open_an_older_tcbs_state_and_seal_under_the_current_one() {
        use svsm::psp::state_key::{committed_tcb, DerivedKeys};
        let tcb = LaunchInfo::default().tcb;
        let mut host = Memory::default();
        let psp = launch(0xAB, 0x3_0000, tcb);
        SealedStore::new(&mut host, keys(&psp))
            .store(b"the TPM")
            .unwrap();
        let kept = vtpm::state::read_header(host.0.as_deref().unwrap())
            .unwrap()
            .key_selection();
        // After a firmware update, as the kernel does it: the current TCB from a report,
        // both keys derived with the one messenger before the engine starts.
        let updated = launch(0xAB, 0x3_0000, tcb + 1);
        let mut messenger = GuestMessenger::new(updated.vmpck0(), updated.seqno());
        let current = committed_tcb(&updated, &mut messenger).unwrap();
        assert_eq!(current, tcb + 1);
        let derived = DerivedKeys::derive(
            &updated,
            &mut messenger,
            current,
            Some(kept),
            Box::new(vtpm::OsEntropy),
        )
        .unwrap();
        let mut store = SealedStore::new(&mut host, derived);
        assert_eq!(&store.load().unwrap().unwrap()[..], b"the TPM");
        store.store(b"the TPM, later").unwrap();
        let header = vtpm::state::read_header(host.0.as_deref().unwrap()).unwrap();
        assert_eq!(header.key_selection().tcb_version, tcb + 1);
        // The same messenger goes on to serve requests: its sequence numbers moved on.
        assert!(messenger.get_report(&updated, &[0; 64], 0).is_ok());
        // A selection this SVSM never seals with (no PSP fields: the QEMU test key's) is
        // not derived, and a header naming it does not open.
        let mut messenger = GuestMessenger::new(updated.vmpck0(), updated.seqno());
        let foreign = vtpm::state::KeySelection {
            fields: 0,
            vmpl: 0,
            guest_svn: 0,
            tcb_version: 0,
        };
        assert_eq!(
            DerivedKeys::derive(
                &updated,
                &mut messenger,
                current,
                Some(foreign),
                Box::new(vtpm::OsEntropy)
            )
            .err(),
            Some(StateError::Key)
        );
        let mut messenger = GuestMessenger::new(updated.vmpck0(), updated.seqno());
        let mut derived = DerivedKeys::derive(
            &updated,
            &mut messenger,
            current,
            None,
            Box::new(vtpm::OsEntropy),
        )
        .unwrap();
        assert_eq!(derived.key(&foreign).err(), Some(StateError::Key));
        assert_eq!(derived.key(&kept).err(), Some(StateError::Key));
    }
}
