//! Runs the daemon on free loopback ports and tpm2-tools against it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running daemon with its own scratch directory (also its working directory, so a
/// stray `NVChip` would show up there).
pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub ek_name: Option<String>,
    /// The backend the daemon says it serves.
    pub backend: String,
    stdout: Option<BufReader<ChildStdout>>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two consecutive free ports (the mssim TCTI puts the platform port at port + 1).
fn free_port_pair() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = a.local_addr().expect("local address").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

impl Daemon {
    /// Starts the daemon with `extra` arguments and waits until it listens.
    pub fn start(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vtpm-e2e-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        for _attempt in 0..5 {
            let port = free_port_pair();
            let mut child = Command::new(env!("CARGO_BIN_EXE_vtpm-daemon"))
                .args(["--port", &port.to_string()])
                .args(extra)
                .current_dir(&dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn vtpm-daemon");
            let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
            let mut ek_name = None;
            let mut backend = String::new();
            let mut line = String::new();
            let ready = loop {
                line.clear();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break false,
                    Ok(_) => {}
                }
                if let Some(name) = line
                    .trim()
                    .strip_prefix("vtpm-daemon: endorsement key (template L-1) name ")
                {
                    ek_name = Some(name.to_string());
                }
                if line.contains("TPM simulator interface on") {
                    backend = line.trim().rsplit(' ').next().unwrap_or("").to_string();
                    break true;
                }
            };
            if ready {
                return Self {
                    child: Some(child),
                    port,
                    dir,
                    ek_name,
                    backend,
                    stdout: Some(stdout),
                };
            }
            // Lost the race for the ports: try another pair.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("vtpm-daemon did not start");
    }

    /// The TCTI configuration for this daemon.
    pub fn tcti(&self) -> String {
        format!("mssim:host=127.0.0.1,port={}", self.port)
    }

    /// Runs a tpm2-tools command in the scratch directory.
    pub fn try_tool(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .args(args)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool} (install tpm2-tools): {e}"))
    }

    /// Runs a tpm2-tools command that must succeed; returns its stdout.
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

    /// Runs a tool that must succeed, then flushes every transient object: without a
    /// resource manager each tool leaves what it loaded in the TPM's few object slots.
    pub fn tool_flush(&self, tool: &str, args: &[&str]) -> String {
        let out = self.tool(tool, args);
        self.tool("tpm2_flushcontext", &["-t"]);
        self.tool("tpm2_flushcontext", &["-l"]);
        out
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a file into the scratch directory.
    pub fn write(&self, name: &str, data: &[u8]) {
        std::fs::write(self.path(name), data).expect("write scratch file");
    }

    /// Reads a file from the scratch directory.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    /// Sends SIGTERM and waits for the daemon to exit; returns its status and the rest
    /// of its standard output.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        self.signal(rustix::process::Signal::TERM)
    }

    /// Sends `signal` and waits for the daemon to exit; returns its status and the rest
    /// of its standard output.
    pub fn signal(
        &mut self,
        signal: rustix::process::Signal,
    ) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("daemon running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child pid");
        rustix::process::kill_process(pid, signal).expect("send the signal");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for the daemon") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the daemon did not stop on {signal:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        if let Some(mut out) = self.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        }
        (status, rest)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // No engine state ever reaches the disk.
        let nvchip = self.dir.join("NVChip").exists();
        let _ = std::fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            assert!(!nvchip, "an NVChip file appeared in the daemon's directory");
        }
    }
}

/// Hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `path` exists.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// The verifier's policy for the daemon's emulated machine: the VCEK certificate its NV
/// holds (`vcek_der`) under the emulated PSP's test chain, and its launch measurement.
pub fn emulated_policy(
    vcek_der: &[u8],
    min_state_generation: Option<u64>,
) -> svsm_verifier::ek_nv::EkPolicy {
    use svsm_emulated::psp::{test_chain, test_vcek, LaunchInfo};
    let chain = test_chain(&test_vcek().verifying_key().clone()).expect("the test chain");
    svsm_verifier::ek_nv::EkPolicy {
        vcek: svsm_verifier::VcekTrust::Chain(Box::new(
            svsm_verifier::chain::Chain::parse(
                vcek_der,
                chain.ask_pem.as_bytes(),
                chain.ark_pem.as_bytes(),
            )
            .expect("the VCEK chains to the test ASK and ARK"),
        )),
        measurement: svsm_verifier::ek_nv::MeasurementCheck::Expect(
            LaunchInfo::default().measurement,
        ),
        min_tcb: None,
        min_state_generation,
    }
}
