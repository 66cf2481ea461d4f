//! The Linux-guest level: Debian's kernel boots in QEMU (TCG, q35, OVMF) with a `tpm-crb`
//! device whose backend is the daemon's swtpm interface over the SVSM path.
//!
//! The kernel comes from Debian's `linux-image-amd64` (the `.deb` is downloaded with
//! `apt-get download` into `target/linux-guest/` and only `vmlinuz` is taken out; nothing is
//! installed). The initramfs is built from the host's busybox-static and tpm2-tools with
//! the libraries they load, plus `tests/linux-guest/init`, which runs the checks and
//! reports one `SVSM-LINUX-GUEST <check> <ok|fail> [detail]` line per check on the serial
//! console. The host draws the values the guest works with (the digest to extend, the
//! quote's nonce), computes what PCR 16 must read, and fails on any missing or failed
//! line, a wrong digest or a timeout. Before the guest, the daemon's swtpm interface is
//! driven over TCP with tpm2-tools' swtpm TCTI.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::hex;

/// Prefix of every result line the guest prints.
const PREFIX: &str = "SVSM-LINUX-GUEST ";
/// The whole guest run, from QEMU's start to its exit.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the daemon may take to listen.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(60);
/// The guest's RAM (QEMU's -m, MiB); the kernel's PCR 4 digest depends on it (QEMU places
/// the initrd below the top of RAM and writes the address into the kernel's header).
pub(crate) const MEMORY_MIB: u64 = 512;
/// The guest firmware: OVMF, as under SEV-SNP. (SeaBIOS treats the TPM_RC_INITIALIZE
/// that the already started vTPM answers to its TPM2_Startup as a malfunction and
/// disables the owner and endorsement hierarchies; OVMF and Linux accept it.)
const FIRMWARE: &str = "/usr/share/qemu/OVMF.fd";
/// The tpm2-tools the guest's /init runs (all links to the one `tpm2` binary).
const TOOLS: &[&str] = &[
    "getrandom",
    "pcrread",
    "pcrextend",
    "createprimary",
    "create",
    "load",
    "readpublic",
    "quote",
    "checkquote",
    "flushcontext",
    "startup",
    "getcap",
    "nvdefine",
    "nvwrite",
    "nvread",
    "nvundefine",
    "sign",
    "verifysignature",
    "hash",
    "createek",
    "hierarchycontrol",
    "changeauth",
];
/// Libraries loaded with dlopen (the TCTI the tools use in the guest), so ldd misses them.
const DLOPENED: &[&str] = &["libtss2-tcti-device.so.0"];

/// Where the cached kernel and the built initramfs live.
pub(crate) fn work_dir() -> PathBuf {
    PathBuf::from("target/linux-guest")
}

/// Runs the Linux-guest test and prints the guest's results and boot time.
pub fn test() -> Result<()> {
    test_level(false)
}

/// The level, or (`luks_only`) only its secret-release flow.
pub fn test_level(luks_only: bool) -> Result<()> {
    let guest = Guest::prepare()?;
    if luks_only {
        return crate::luks::test(&guest);
    }
    swtpm_tcp(&guest.daemon)?;
    let mut extend = [0u8; 32];
    let mut nonce = [0u8; 16];
    for buf in [&mut extend[..], &mut nonce[..]] {
        getrandom::getrandom(buf)
            .map_err(|e| anyhow::anyhow!("no randomness for the test: {e}"))?;
    }
    let expected_pcr = {
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(extend);
        hex(&h.finalize())
    };
    let cmdline = format!(
        "console=ttyS0 quiet panic=-1 svsm.extend={} svsm.nonce={}",
        hex(&extend),
        hex(&nonce)
    );
    // OVMF as Debian bookworm ships it (2022.11) and as forky does (edk2 2026.08, the
    // build the IGVM file carries): each tries to take the platform hierarchy
    // (edk2's TpmPlatformHierarchyLib randomizes platformAuth, or disables the hierarchy),
    // which the SVSM already withheld; measured boot must go on.
    let forky = crate::igvm::debian_ovmf("forky")?;
    for (label, firmware) in [
        ("bookworm OVMF", PathBuf::from(FIRMWARE)),
        ("forky OVMF", forky),
    ] {
        ovmf_run(&guest, &cmdline, &expected_pcr, label, &firmware)?;
    }
    seabios(&guest, &cmdline)?;
    crate::luks::test(&guest)
}

/// One boot under `firmware` (an OVMF): every check of [`check`], then the NV endorsement
/// evidence verified on the host.
fn ovmf_run(
    guest: &Guest,
    cmdline: &str,
    expected_pcr: &str,
    label: &str,
    firmware: &Path,
) -> Result<()> {
    println!("linux-guest: {label} ({})", firmware.display());
    let firmware = firmware.display().to_string();
    let run = guest.run_to_completion(cmdline, Some(&firmware))?;
    let mut failures = check(&run.results, expected_pcr);
    if failures.is_empty() {
        if let Err(e) = verify_endorsement_evidence(&run.results) {
            failures.push(format!("endorsement evidence: {e:#}"));
        }
    }
    if failures.is_empty() {
        if let Err(e) = measured_boot(guest, &run.results, cmdline, label, &firmware) {
            failures.push(format!("measured boot: {e:#}"));
        }
    }
    if !run.daemon_clean {
        failures.push("the daemon did not shut down cleanly after QEMU's CMD_SHUTDOWN".into());
    }

    println!("linux-guest: results");
    for (name, (status, detail)) in &run.results {
        match name.as_str() {
            "klog" => {}
            // The whole event log in hex: saved under target/linux-guest/ instead.
            "eventlog-data" => println!("  {name:<24} {status} ({} hex digits)", detail.len()),
            _ => println!("  {name:<24} {status} {detail}"),
        }
    }
    for line in &run.klog {
        println!("  klog: {line}");
    }
    println!("  expected PCR 16          {expected_pcr}");
    println!(
        "linux-guest: QEMU start to /init {:.1} s, to all checks done {:.1} s, QEMU exit {:.1} s (guest uptime at /init {} s, at done {} s)",
        run.to_init.as_secs_f64(),
        run.to_done.as_secs_f64(),
        run.total.as_secs_f64(),
        run.uptime_init,
        run.uptime_done
    );
    if !failures.is_empty() {
        bail!(
            "linux-guest: {label}: {} check(s) failed (serial log: {}):\n  {}",
            failures.len(),
            run.serial_log.display(),
            failures.join("\n  ")
        );
    }
    println!("linux-guest: {label}: every check passed");
    Ok(())
}

/// The measured-boot checks on the guest's event log ([`crate::measured_boot`]).
fn measured_boot(
    guest: &Guest,
    results: &BTreeMap<String, (String, String)>,
    cmdline: &str,
    label: &str,
    firmware: &str,
) -> Result<()> {
    // Bookworm's OVMF logs another digest for its PEI volume than the volume in its image
    // holds (its DXE volume matches); forky's, the one in the IGVM file, logs both as
    // they are in the image.
    let forky = firmware.contains("forky");
    let boot = crate::measured_boot::Boot {
        firmware: forky.then_some(Path::new(firmware)),
        kernel: &guest.kernel,
        initrd: &guest.initrd,
        cmdline,
        memory_mib: MEMORY_MIB,
    };
    crate::measured_boot::check(results, &work_dir(), label, &boot)
}

/// SeaBIOS (QEMU's default firmware) takes the TPM_RC_INITIALIZE of its TPM2_Startup for
/// a failure and disables the owner and endorsement hierarchies with the platform
/// authorization. With the platform hierarchy withheld by the SVSM that attempt fails, so
/// the guest creates a primary key under the owner hierarchy.
fn seabios(guest: &Guest, cmdline: &str) -> Result<()> {
    println!("linux-guest: booting again with SeaBIOS (QEMU's default firmware)");
    let run = guest.run_to_completion(cmdline, None)?;
    let mut failures = Vec::new();
    for name in [
        "boot",
        "dev:tpm0",
        "createprimary",
        "nv:0x01C00002",
        "platform-hierarchy",
        "done",
    ] {
        match run.results.get(name) {
            None => failures.push(format!("{name}: no result line")),
            Some((status, detail)) if status != "ok" => {
                failures.push(format!("{name}: {status} {detail}"))
            }
            Some(_) => {}
        }
    }
    let startup = run
        .results
        .get("startup-clear")
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    println!("linux-guest: SeaBIOS: hierarchies after the firmware: {startup}");
    if !failures.is_empty() {
        bail!(
            "linux-guest: SeaBIOS: {} check(s) failed (serial log: {}):\n  {}",
            failures.len(),
            run.serial_log.display(),
            failures.join("\n  ")
        );
    }
    println!(
        "linux-guest: SeaBIOS: owner-hierarchy primary key created, EK certificate read, \
         platform hierarchy refused"
    );
    Ok(())
}

/// Decodes the guest's NV evidence lines and runs `svsm-verify ek` on them: the test
/// chain's ASK and ARK (left by the ek_evidence suite), the VCEK from NV, the emulated
/// launch's measurement (zeros), and the EKs tpm2_createek made in the guest.
fn verify_endorsement_evidence(results: &BTreeMap<String, (String, String)>) -> Result<()> {
    let dir = work_dir().join("ek-evidence");
    fs::create_dir_all(&dir)?;
    let mut args: Vec<String> = vec!["ek".into()];
    for (line, file, flag) in [
        ("nv:0x01C00002", "rsa.der", "--rsa-ek-cert"),
        ("nv:0x01C0000A", "ecc.der", "--ecc-ek-cert"),
        ("nv:0x01C00100", "ca.der", "--ca-cert"),
        ("nv:0x01C00110", "report.bin", "--report"),
        ("nv:0x01C00101", "vcek.der", "--vcek"),
        ("ek-rsa", "ek-rsa.pub", "--ek-rsa-public"),
        ("ek-ecc", "ek-ecc.pub", "--ek-ecc-public"),
    ] {
        let (_, detail) = results
            .get(line)
            .with_context(|| format!("no {line} line"))?;
        let bytes = unhex(detail.trim()).with_context(|| format!("{line}: not hex"))?;
        let path = dir.join(file);
        fs::write(&path, bytes)?;
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    let chain = PathBuf::from("target/tmp/ek-evidence");
    for (flag, file) in [("--ask", "ask.pem"), ("--ark", "ark.pem")] {
        let path = chain.join(file);
        ensure!(
            path.exists(),
            "{} is missing: the ek_evidence suite did not run before this level",
            path.display()
        );
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    args.push("--measurement".into());
    args.push("00".repeat(48));
    crate::attest::expect_pass("the Linux guest's NV endorsement evidence", &args)
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Shows the secret-release flow ([`crate::luks::demo`]), then boots the guest with the
/// vTPM attached and hands its console to the user.
pub fn run_interactive() -> Result<()> {
    let guest = Guest::prepare()?;
    // The secret-release flow first: provisioning, the service, one unlock.
    crate::luks::demo(&guest)?;
    println!(
        "linux-guest: the secret-release flow passed. Now booting Debian's kernel with the vTPM (SVSM path) as tpm-crb; the checks run, then a shell opens. Leave with 'poweroff -f' (or Ctrl-A X)."
    );
    let cmdline = "console=ttyS0 quiet panic=-1 svsm.interactive=1 svsm.extend=0000000000000000000000000000000000000000000000000000000000000000 svsm.nonce=00";
    let mut daemon = guest.start_daemon(None)?;
    let status = guest
        .qemu(cmdline, Some(FIRMWARE), &Boot::default())
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .context("cannot start qemu-system-x86_64")?;
    daemon.finish(Duration::from_secs(5));
    ensure!(status.success(), "QEMU exited with {status}");
    Ok(())
}

/// The daemon's swtpm interface on TCP (control and data channel) with tpm2-tools'
/// swtpm TCTI, which expects the control channel on the data port + 1.
fn swtpm_tcp(daemon: &Path) -> Result<()> {
    println!("linux-guest: swtpm interface over TCP with tpm2-tools (swtpm TCTI)");
    // A free port pair on loopback.
    let port = (0..20)
        .filter_map(|_| {
            let p = TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let next = p.checked_add(1)?;
            TcpListener::bind(("127.0.0.1", next)).ok().map(|_| p)
        })
        .next()
        .context("no free pair of loopback ports")?;
    let log = fs::File::create(work_dir().join("daemon-tcp.log"))?;
    let child = Command::new(daemon)
        .args(["--backend", "svsm", "--swtpm-ctrl"])
        .arg(format!("tcp:127.0.0.1:{}", port + 1))
        .arg("--swtpm-data")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", daemon.display()))?;
    let mut daemon = Daemon { child };
    let deadline = Instant::now() + DAEMON_TIMEOUT;
    // The control channel is driven with swtpm's own client, swtpm_ioctl: an
    // independent implementation of the protocol.
    let ctrl = format!("127.0.0.1:{}", port + 1);
    let ioctl = |args: &[&str]| -> Result<(bool, String)> {
        let out = Command::new("timeout")
            .args(["30", "swtpm_ioctl", "--tcp", &ctrl])
            .args(args)
            .output()
            .context("cannot run swtpm_ioctl (Debian package swtpm-tools)")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.success(), text.trim().to_string()))
    };
    while TcpStream::connect(("127.0.0.1", port + 1)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "the daemon's swtpm control port {} did not open",
            port + 1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, caps) = ioctl(&["-c"])?;
    let caps = caps
        .rsplit(' ')
        .next()
        .and_then(|c| u64::from_str_radix(c.trim_start_matches("0x"), 16).ok())
        .filter(|_| ok)
        .with_context(|| format!("swtpm_ioctl -c: {caps}"))?;
    // What QEMU requires of a TPM 2 (PTM_CAP_INIT, SHUTDOWN, GET_TPMESTABLISHED,
    // SET_LOCALITY, RESET_TPMESTABLISHED, STOP, SET_DATAFD, SET_BUFFERSIZE).
    let qemu_needs = 0x1 | 0x2 | 0x4 | 0x8 | 0x80 | 0x400 | 0x1000 | 0x2000;
    ensure!(
        caps & qemu_needs == qemu_needs,
        "capabilities {caps:#x} lack some of {qemu_needs:#x}"
    );
    let (ok, out) = ioctl(&["-i"])?;
    ensure!(ok, "swtpm_ioctl -i (CMD_INIT): {out}");
    let (ok, out) = ioctl(&["-e"])?;
    ensure!(
        ok && out.contains("tpmEstablished is 0"),
        "swtpm_ioctl -e: {out}"
    );
    let (ok, out) = ioctl(&["-b", "0"])?;
    ensure!(
        ok && out.contains("buffersize: 4087"),
        "swtpm_ioctl -b 0: {out}"
    );
    // Locality 3 is refused with TPM_BAD_LOCALITY, as on the SVSM path.
    let (ok, out) = ioctl(&["-l", "3"])?;
    ensure!(
        !ok && out.contains("0x3d"),
        "swtpm_ioctl -l 3 was not refused: {out}"
    );
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let tool = |args: &[&str]| -> Result<String> {
        output(
            Command::new("timeout")
                .arg("60")
                .arg(format!("tpm2_{}", args[0]))
                .args(&args[1..])
                .env("TPM2TOOLS_TCTI", &tcti),
        )
    };
    tool(&["startup", "-c"])?;
    let random = tool(&["getrandom", "--hex", "16"])?;
    ensure!(
        random.trim().len() == 32,
        "tpm2_getrandom gave '{}'",
        random.trim()
    );
    let digest = "5a".repeat(32);
    tool(&["pcrextend", &format!("23:sha256={digest}")])?;
    let expected = {
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update([0x5a; 32]);
        hex(&h.finalize())
    };
    let read = tool(&["pcrread", "sha256:23"])?.to_lowercase();
    ensure!(
        read.contains(&expected),
        "PCR 23 after the extend: expected {expected}, tpm2_pcrread says {read}"
    );
    let (ok, out) = ioctl(&["-s"])?;
    ensure!(ok, "swtpm_ioctl -s (CMD_SHUTDOWN): {out}");
    ensure!(
        daemon.finish(Duration::from_secs(10)),
        "the daemon did not exit cleanly after CMD_SHUTDOWN"
    );
    println!("linux-guest: swtpm over TCP: swtpm_ioctl (caps {caps:#x}, init, established flag, buffer size, locality 3 refused, shutdown) and tpm2-tools (startup, getrandom, PCR 23 extend/read {expected}): ok");
    Ok(())
}

/// What the host knows about a finished guest run.
#[derive(Debug)]
pub(crate) struct Run {
    /// check name -> (status, detail); `klog` lines are kept apart.
    pub(crate) results: BTreeMap<String, (String, String)>,
    klog: Vec<String>,
    pub(crate) to_init: Duration,
    pub(crate) to_done: Duration,
    pub(crate) total: Duration,
    uptime_init: String,
    uptime_done: String,
    pub(crate) serial_log: PathBuf,
    daemon_clean: bool,
}

/// The prepared pieces: kernel, initramfs, daemon binary, socket path.
#[derive(Debug)]
pub(crate) struct Guest {
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    daemon: PathBuf,
    socket: PathBuf,
}

/// What a boot adds to the level's QEMU command line.
#[derive(Debug, Default)]
pub(crate) struct Boot<'a> {
    /// Another initramfs than the level's.
    pub(crate) initrd: Option<&'a Path>,
    /// A raw image as the virtio disk /dev/vda.
    pub(crate) disk: Option<&'a Path>,
    /// A virtio NIC on QEMU's user-mode network (the host's loopback is 10.0.2.2).
    pub(crate) net: bool,
    /// fw_cfg files (`opt/...` name, host file).
    pub(crate) fw_cfg: Vec<(&'a str, &'a Path)>,
    /// The serial log's file name under target/linux-guest (the firmware's by default).
    pub(crate) serial_log: Option<&'a str>,
    /// The launch measurement (hex) the daemon's emulated PSP reports
    /// (`vtpm-daemon --launch-measurement`; zeros by default).
    pub(crate) launch_measurement: Option<&'a str>,
}

/// The daemon process; killed if it outlives its QEMU.
#[derive(Debug)]
pub(crate) struct Daemon {
    child: Child,
}

impl Daemon {
    /// Waits up to `grace` for the daemon to end on its own (QEMU sends CMD_SHUTDOWN when
    /// it exits); kills it otherwise. True if it ended on its own with success.
    pub(crate) fn finish(&mut self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Guest {
    pub(crate) fn prepare() -> Result<Self> {
        let dir = work_dir();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        ensure!(
            Path::new(FIRMWARE).exists(),
            "{FIRMWARE} is missing: install Debian's ovmf package"
        );
        let kernel = fetch_kernel(&dir)?;
        let initrd = build_initramfs(&dir)?;
        println!("linux-guest: building the daemon");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "-p", "vtpm-daemon", "--bin", "vtpm-daemon"])
            .status()
            .context("cannot run cargo build")?;
        ensure!(status.success(), "building vtpm-daemon failed ({status})");
        Ok(Self {
            kernel,
            initrd,
            daemon: PathBuf::from("target/debug/vtpm-daemon"),
            socket: dir.join("swtpm-ctrl.sock"),
        })
    }

    /// Starts the daemon (SVSM-path backend, swtpm interface) and waits for its socket.
    pub(crate) fn start_daemon(&self, launch_measurement: Option<&str>) -> Result<Daemon> {
        let _ = fs::remove_file(&self.socket);
        let log = fs::File::create(work_dir().join("daemon.log"))?;
        let child = Command::new(&self.daemon)
            .arg("--backend")
            .arg("svsm")
            .arg("--swtpm-ctrl")
            .arg(format!("unix:{}", self.socket.display()))
            .args(
                launch_measurement
                    .map(|m| ["--launch-measurement", m])
                    .into_iter()
                    .flatten(),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.daemon.display()))?;
        let mut daemon = Daemon { child };
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        while !self.socket.exists() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                bail!(
                    "the daemon exited ({status}) before listening; see {}",
                    work_dir().join("daemon.log").display()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "the daemon did not listen on {} within {DAEMON_TIMEOUT:?}",
                self.socket.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    /// The QEMU command line: q35 under TCG, the firmware (`None`: QEMU's default,
    /// SeaBIOS), serial console on stdio, the TPM.
    pub(crate) fn qemu(&self, cmdline: &str, firmware: Option<&str>, boot: &Boot) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35", "-accel", "tcg", "-smp", "1"])
            .args(["-m", &MEMORY_MIB.to_string()]);
        if let Some(firmware) = firmware {
            cmd.args(["-bios", firmware]);
        }
        cmd.args(["-nographic", "-no-reboot"]);
        if boot.net {
            cmd.args(["-nic", "user,model=virtio-net-pci"]);
        } else {
            cmd.args(["-nic", "none"]);
        }
        if let Some(disk) = boot.disk {
            cmd.arg("-drive")
                .arg(format!("file={},format=raw,if=virtio", disk.display()));
        }
        for (name, file) in &boot.fw_cfg {
            cmd.arg("-fw_cfg")
                .arg(format!("name={name},file={}", file.display()));
        }
        cmd.arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(boot.initrd.unwrap_or(&self.initrd))
            .args(["-append", cmdline])
            .arg("-chardev")
            .arg(format!("socket,id=chrtpm,path={}", self.socket.display()))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
            .args(["-device", "tpm-crb,tpmdev=tpm0"]);
        cmd
    }

    fn run_to_completion(&self, cmdline: &str, firmware: Option<&str>) -> Result<Run> {
        self.run_with(cmdline, firmware, &Boot::default())
    }

    /// One boot to its power-off, with `boot`'s additions; every result line the guest
    /// printed.
    pub(crate) fn run_with(
        &self,
        cmdline: &str,
        firmware: Option<&str>,
        boot: &Boot,
    ) -> Result<Run> {
        let mut daemon = self.start_daemon(boot.launch_measurement)?;
        let serial_log = work_dir().join(match (boot.serial_log, firmware) {
            (Some(name), _) => name,
            (None, None) => "serial-seabios.log",
            (None, Some(f)) if f.contains("forky") => "serial-forky.log",
            (None, Some(_)) => "serial.log",
        });
        let mut log = fs::File::create(&serial_log)?;
        println!("linux-guest: booting Debian's kernel in QEMU (TCG) with the vTPM as tpm-crb");
        let start = Instant::now();
        let mut qemu = self
            .qemu(cmdline, firmware, boot)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start qemu-system-x86_64")?;
        let (tx, rx) = mpsc::channel::<String>();
        let out = qemu.stdout.take().context("no QEMU stdout")?;
        let err = qemu.stderr.take().context("no QEMU stderr")?;
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                    let line = String::from_utf8_lossy(&line).trim_end().to_string();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);

        let mut results = BTreeMap::new();
        let mut klog = Vec::new();
        let (mut to_init, mut to_done) = (None, None);
        let deadline = start + GUEST_TIMEOUT;
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    writeln!(log, "{line}")?;
                    let Some(at) = line.find(PREFIX) else {
                        continue;
                    };
                    let mut words = line[at + PREFIX.len()..].splitn(3, ' ');
                    let name = words.next().unwrap_or_default().to_string();
                    let status = words.next().unwrap_or_default().to_string();
                    let detail = words.next().unwrap_or_default().to_string();
                    match name.as_str() {
                        "boot" => to_init = Some(start.elapsed()),
                        "done" => to_done = Some(start.elapsed()),
                        _ => {}
                    }
                    if name == "klog" {
                        klog.push(detail);
                    } else {
                        results.insert(name, (status, detail));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
            }
        }
        if timed_out {
            let _ = qemu.kill();
        }
        let status = qemu.wait()?;
        let total = start.elapsed();
        let daemon_clean = daemon.finish(Duration::from_secs(10));
        ensure!(
            !timed_out,
            "linux-guest: the guest did not finish within {GUEST_TIMEOUT:?} (serial log: {})",
            serial_log.display()
        );
        ensure!(
            status.success(),
            "linux-guest: QEMU exited with {status} (serial log: {})",
            serial_log.display()
        );
        let uptime = |name: &str| {
            results
                .get(name)
                .and_then(|(_, d): &(String, String)| d.strip_prefix("uptime="))
                .unwrap_or("?")
                .to_string()
        };
        Ok(Run {
            uptime_init: uptime("boot"),
            uptime_done: uptime("done"),
            to_init: to_init.unwrap_or(total),
            to_done: to_done.unwrap_or(total),
            total,
            results,
            klog,
            serial_log,
            daemon_clean,
        })
    }
}

/// What the guest must have reported; each missing line, failure or wrong value is one
/// message.
fn check(results: &BTreeMap<String, (String, String)>, expected_pcr: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let required = [
        "boot",
        "dev:tpm0",
        "dev:tpmrm0",
        "tpm-version",
        "driver",
        "eventlog",
        "getrandom",
        "pcr16-before",
        "pcrextend",
        "pcr16-after",
        "createprimary",
        "create-ak",
        "load-ak",
        "readpublic-ak",
        "quote",
        "checkquote",
        "checkquote-wrong-nonce",
        "flush",
        "nv:0x01C00002",
        "nv:0x01C0000A",
        "nv:0x01C00100",
        "nv:0x01C00101",
        "nv:0x01C00110",
        "ek-rsa",
        "ek-ecc",
        "platform-hierarchy",
        "klog-clean",
        "done",
    ];
    for name in required {
        match results.get(name) {
            None => failures.push(format!("{name}: no result line")),
            Some((status, detail)) if status != "ok" => {
                failures.push(format!("{name}: {status} {detail}"))
            }
            Some(_) => {}
        }
    }
    let detail = |name: &str| results.get(name).map(|(_, d)| d.trim().to_lowercase());
    if let Some(d) = detail("tpm-version") {
        if d != "major=2" {
            failures.push(format!(
                "tpm-version: expected a TPM 2.0, the guest sees {d}"
            ));
        }
    }
    if let Some(d) = detail("driver") {
        if d != "tpm_crb" {
            failures.push(format!("driver: expected tpm_crb to own tpm0, got '{d}'"));
        }
    }
    if let Some(d) = detail("getrandom") {
        if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
            failures.push(format!("getrandom: expected 32 bytes in hex, got '{d}'"));
        }
    }
    if let Some(d) = detail("pcr16-before") {
        if d != "0".repeat(64) {
            failures.push(format!(
                "pcr16-before: expected zeros after start-up, got {d}"
            ));
        }
    }
    if let Some(d) = detail("pcr16-after") {
        if d != expected_pcr {
            failures.push(format!(
                "pcr16-after: expected {expected_pcr} (SHA-256 of zeros || digest), got {d}"
            ));
        }
    }
    failures
}

/// Output of a command that must succeed.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The versioned kernel package `linux-image-amd64` depends on.
pub(crate) fn kernel_package() -> Result<String> {
    let depends = |()| -> Result<Option<String>> {
        let text = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
        Ok(text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .map(str::trim)
            .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
            .map(str::to_string))
    };
    if let Ok(Some(p)) = depends(()) {
        return Ok(p);
    }
    println!("linux-guest: apt lists lack linux-image-amd64; running apt-get update");
    output(Command::new("apt-get").args(["update", "-q"]))?;
    depends(())?.context("apt-cache knows no linux-image-amd64 dependency")
}

/// Downloads `package`'s `.deb` into `dir` (not installing it); its path.
pub(crate) fn download_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let find = || -> Result<Option<PathBuf>> {
        Ok(fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            }))
    };
    if let Some(deb) = find()? {
        return Ok(deb);
    }
    println!("linux-guest: downloading {package} (not installing it)");
    let download = |()| {
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir)
            .status()
    };
    let ok = download(()).map(|s| s.success()).unwrap_or(false);
    if !ok {
        // Stale lists name a version the mirror no longer has.
        output(Command::new("apt-get").args(["update", "-q"]))?;
        let status = download(()).context("cannot run apt-get download")?;
        ensure!(
            status.success(),
            "apt-get download {package} failed ({status})"
        );
    }
    let deb = find()?.with_context(|| {
        format!(
            "apt-get download left no {package}_*.deb in {}",
            dir.display()
        )
    })?;
    Ok(deb)
}

/// Downloads (once) Debian's kernel package and takes `vmlinuz` out of it.
fn fetch_kernel(dir: &Path) -> Result<PathBuf> {
    let package = kernel_package()?;
    let kernel = dir.join(format!(
        "vmlinuz-{}",
        package.trim_start_matches("linux-image-")
    ));
    if kernel.exists() {
        return Ok(kernel);
    }
    let deb = download_deb(dir, &package)?;
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(&deb))?;
    let member = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .find(|p| p.starts_with("./boot/vmlinuz-"))
        .with_context(|| format!("{} holds no ./boot/vmlinuz-*", deb.display()))?
        .to_string();
    let tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let stdout = tar.stdout.context("no dpkg-deb output")?;
    let out = Command::new("tar")
        .args(["-x", "-O", &member])
        .stdin(stdout)
        .output()
        .context("cannot run tar")?;
    ensure!(
        out.status.success() && !out.stdout.is_empty(),
        "cannot extract {member} from {}",
        deb.display()
    );
    let partial = kernel.with_extension("partial");
    fs::write(&partial, &out.stdout)?;
    fs::rename(&partial, &kernel)?;
    // The package stays until the LUKS flow's modules are taken out of it
    // (crate::luks::fetch_modules), which removes it.
    Ok(kernel)
}

/// Every shared library `binary` needs, as ldd resolves them on this host.
pub(crate) fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(binary))?;
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some((_, rest)) = line.split_once("=> ") {
            if let Some(path) = rest.split_whitespace().next() {
                if path.starts_with('/') {
                    libs.push(PathBuf::from(path));
                }
            }
        } else if let Some(path) = line.split_whitespace().next() {
            if path.starts_with('/') {
                libs.push(PathBuf::from(path)); // the dynamic loader
            }
        }
    }
    Ok(libs)
}

/// A dlopen'ed library by name, as the dynamic loader would find it.
fn find_library(name: &str) -> Result<PathBuf> {
    let cache = output(Command::new("ldconfig").arg("-p"))?;
    cache
        .lines()
        .filter(|l| l.trim_start().starts_with(name) && l.contains("x86-64"))
        .filter_map(|l| l.split("=> ").nth(1))
        .map(|p| PathBuf::from(p.trim()))
        .next()
        .with_context(|| format!("{name} not found (Debian package libtss2-tcti-device0)"))
}

/// Copies `src` (following links) to the same path under `root`.
pub(crate) fn copy_into(root: &Path, src: &Path) -> Result<()> {
    let dest = root.join(src.strip_prefix("/").unwrap_or(src));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(src, &dest)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    Ok(())
}

/// Builds the initramfs (newc cpio, uncompressed: the kernel takes it as it is, and TCG
/// would spend longer decompressing than QEMU spends loading it).
fn build_initramfs(dir: &Path) -> Result<PathBuf> {
    let root = dir.join("rootfs");
    build_rootfs(&root)?;
    let initrd = dir.join("initramfs.cpio");
    cpio(&root, &initrd)?;
    Ok(initrd)
}

/// The initramfs's tree under `root` (emptied first): busybox, tpm2-tools with their
/// libraries, the level's /init and /luks.
pub(crate) fn build_rootfs(root: &Path) -> Result<()> {
    let root = root.to_path_buf();
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    for d in ["bin", "usr/bin", "dev", "proc", "sys", "tmp"] {
        fs::create_dir_all(root.join(d))?;
    }
    let busybox = Path::new("/bin/busybox");
    ensure!(
        busybox.exists(),
        "/bin/busybox is missing: install Debian's busybox-static package"
    );
    fs::copy(busybox, root.join("bin/busybox"))?;
    symlink("busybox", root.join("bin/sh"))?;
    let tpm2 = Path::new("/usr/bin/tpm2");
    ensure!(
        tpm2.exists(),
        "/usr/bin/tpm2 is missing: install Debian's tpm2-tools package"
    );
    fs::copy(tpm2, root.join("usr/bin/tpm2"))?;
    for tool in TOOLS {
        symlink("tpm2", root.join(format!("usr/bin/tpm2_{tool}")))?;
    }
    let mut libs = libraries(tpm2)?;
    for name in DLOPENED {
        let lib = find_library(name)?;
        libs.extend(libraries(&lib)?);
        libs.push(lib);
    }
    libs.sort();
    libs.dedup();
    for lib in &libs {
        copy_into(&root, lib)?;
    }
    let init = Path::new("tests/linux-guest/init");
    fs::copy(init, root.join("init")).with_context(|| format!("cannot copy {}", init.display()))?;
    set_executable(&root.join("init"))?;
    let luks = Path::new("tests/linux-guest/luks");
    fs::copy(luks, root.join("luks")).with_context(|| format!("cannot copy {}", luks.display()))?;
    Ok(())
}

/// Packs `root` into the newc archive `initrd`.
pub(crate) fn cpio(root: &Path, initrd: &Path) -> Result<()> {
    let list = output(Command::new("find").arg(".").current_dir(root))?;
    let cpio_out = fs::File::create(initrd)?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(cpio_out)
        .spawn()
        .context("cannot run cpio (Debian package cpio)")?;
    cpio.stdin
        .take()
        .context("no cpio stdin")?
        .write_all(list.as_bytes())?;
    let status = cpio.wait()?;
    ensure!(status.success(), "cpio failed ({status})");
    Ok(())
}

pub(crate) fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = fs::metadata(path)?.permissions();
    perms.set_mode(0o755);
    fs::set_permissions(path, perms)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_ok(pcr: &str) -> BTreeMap<String, (String, String)> {
        let mut r = BTreeMap::new();
        for (name, detail) in [
            ("boot", "uptime=3.1"),
            ("dev:tpm0", ""),
            ("dev:tpmrm0", ""),
            ("tpm-version", "major=2"),
            ("driver", "tpm_crb"),
            ("eventlog", "bytes=1234"),
            ("getrandom", &"ab".repeat(32)),
            ("pcr16-before", &"0".repeat(64)),
            ("pcrextend", ""),
            ("pcr16-after", pcr),
            ("createprimary", ""),
            ("create-ak", ""),
            ("load-ak", ""),
            ("readpublic-ak", ""),
            ("quote", ""),
            ("checkquote", ""),
            ("checkquote-wrong-nonce", "refused"),
            ("flush", ""),
            ("nv:0x01C00002", "30"),
            ("nv:0x01C0000A", "30"),
            ("nv:0x01C00100", "30"),
            ("nv:0x01C00101", "30"),
            ("nv:0x01C00110", "02"),
            ("ek-rsa", "01"),
            ("ek-ecc", "01"),
            ("platform-hierarchy", "refused"),
            ("klog-clean", ""),
            ("done", "uptime=9.0"),
        ] {
            r.insert(name.to_string(), ("ok".to_string(), detail.to_string()));
        }
        r
    }

    #[test]
    fn hex_lines_decode() {
        assert_eq!(unhex("00ff10"), Some(vec![0, 0xFF, 0x10]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn a_complete_run_passes() {
        let pcr = "12".repeat(32);
        assert!(check(&all_ok(&pcr.to_uppercase()), &pcr).is_empty());
    }

    #[test]
    fn a_missing_line_a_failure_or_a_wrong_digest_fails() {
        let pcr = "12".repeat(32);
        let mut r = all_ok(&pcr);
        r.remove("checkquote");
        assert_eq!(
            check(&r, &pcr),
            vec!["checkquote: no result line".to_string()]
        );
        let mut r = all_ok(&pcr);
        r.insert("quote".into(), ("fail".into(), "ERROR".into()));
        assert_eq!(check(&r, &pcr), vec!["quote: fail ERROR".to_string()]);
        let r = all_ok(&"34".repeat(32));
        assert_eq!(check(&r, &pcr).len(), 1);
        let mut r = all_ok(&pcr);
        r.insert("getrandom".into(), ("ok".into(), "".into()));
        assert_eq!(check(&r, &pcr).len(), 1);
    }
}
