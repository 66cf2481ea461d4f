//! The bare-metal kernel: build it, boot it in QEMU, run its self-tests, serve its vTPM.
//!
//! The kernel is built for `x86_64-unknown-none` with the static relocation model (the C
//! archives it links carry absolute relocations, so it is linked at a fixed 64 MiB) and
//! booted with Debian's QEMU through the PVH entry (`-kernel`, TCG). It reports on COM1
//! and ends QEMU through isa-debug-exit: status 33 is success, 35 failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The kernel's target.
pub const TARGET: &str = "x86_64-unknown-none";
/// QEMU's exit status when the kernel reports success (isa-debug-exit, value 0x10).
const QEMU_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel reports failure (value 0x11).
const QEMU_FAILURE: i32 = 35;
/// How long one boot may take before it counts as hung.
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The kernel target's rust flags (static relocation model) live in
/// `.cargo/config.toml`, so every build for the target gets the same ones.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub(crate) fn run_checked(mut cmd: Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Lints the kernel as the bare-metal target builds it (the host build skips it).
pub fn clippy() -> Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "clippy",
        "--release",
        "-p",
        "svsm",
        "--bin",
        "svsm",
        "--target",
        TARGET,
        "--",
        "-D",
        "warnings",
    ]);
    run_checked(cmd, "kernel lint")
}

/// Builds the kernel (release) and returns the ELF's path.
pub fn build() -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "svsm",
        "--bin",
        "svsm",
        "--target",
        TARGET,
    ]);
    run_checked(cmd, "kernel build")?;
    Ok(PathBuf::from("target")
        .join(TARGET)
        .join("release")
        .join("svsm"))
}

/// The QEMU command line that boots `kernel` with `cmdline`, console on stdout.
pub fn qemu(kernel: &Path, cmdline: &str) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-cpu", "max", "-m", "256M", "-smp", "4"])
        .args(["-display", "none", "-no-reboot", "-serial", "stdio"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", cmdline]);
    cmd
}

/// Waits for `child` up to `timeout`, killing it when the time is up.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<Option<i32>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code());
        }
        if start.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            bail!("QEMU did not finish within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Boots `kernel` with `cmdline`; returns QEMU's exit status and the console output.
fn boot(kernel: &Path, cmdline: &str) -> Result<(Option<i32>, String)> {
    let mut child = qemu(kernel, cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let mut stdout = child.stdout.take().context("no QEMU stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let status = wait_with_timeout(&mut child, BOOT_TIMEOUT);
    let console = reader
        .join()
        .map_err(|_| anyhow::anyhow!("console reader panicked"))??;
    print!("{console}");
    Ok((status?, console))
}

/// Boots the kernel's self-tests, then checks that each fatal path ends it with its reason.
pub fn test() -> Result<()> {
    let kernel = build()?;
    let (status, console) = boot(&kernel, "test")?;
    let summary = console
        .lines()
        .find(|l| l.contains("selftest: "))
        .unwrap_or("no summary line");
    if status != Some(QEMU_SUCCESS) || !console.contains(" 0 failed") {
        bail!("kernel self-tests failed (QEMU status {status:?}): {summary}");
    }
    println!("xtask: kernel self-tests in QEMU: {summary}");

    for (flag, reason) in [
        ("crash=panic", "SVSM terminated: panic"),
        ("crash=stack-overflow", "SVSM terminated: stack overflow"),
        (
            "crash=longjmp",
            "SVSM terminated: longjmp to a frame that no longer exists",
        ),
        ("crash=abort", "SVSM terminated: abort() called"),
        ("crash=nest-depth", "more than 4 nested handlers"),
        (
            "crash=vc-without-error-code",
            "injected with a wrong error-code layout",
        ),
    ] {
        let (status, console) = boot(&kernel, flag)?;
        if status != Some(QEMU_FAILURE) || !console.contains(reason) {
            bail!("`{flag}` did not end the kernel with \"{reason}\" (QEMU status {status:?})");
        }
        println!("xtask: kernel `{flag}` ends the SVSM with its reason");
    }
    Ok(())
}

/// QEMU booting `kernel` to serve its vTPM: console on our stdout, COM2 on `socket`.
fn qemu_serving(kernel: &Path, socket: &Path) -> Command {
    qemu_serving_with(kernel, socket, None, "")
}

/// Like [`qemu_serving`], with COM3 connected to the state store helper listening on
/// `store` and the kernel command line `cmdline`.
pub(crate) fn qemu_serving_with(
    kernel: &Path,
    socket: &Path,
    store: Option<&Path>,
    cmdline: &str,
) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-cpu", "max", "-m", "256M", "-smp", "4"])
        .args([
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-serial",
        ])
        .arg(format!("unix:{},server=on,wait=off", socket.display()));
    if let Some(store) = store {
        cmd.arg("-serial").arg(format!("unix:{}", store.display()));
    }
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", cmdline])
        .stdin(Stdio::null());
    cmd
}

/// Builds the daemon (release for `run`; the test uses the debug build the host tests
/// already made) and returns its path.
pub(crate) fn build_daemon(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "vtpm-daemon"]);
    if release {
        cmd.arg("--release");
    }
    run_checked(cmd, "daemon build")?;
    let profile = if release { "release" } else { "debug" };
    Ok(PathBuf::from("target").join(profile).join("vtpm-daemon"))
}

/// Kills a child process this module started (by its handle) and reaps it.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// QEMU's socket for COM2, removed when dropped.
struct Socket(PathBuf);

impl Socket {
    fn new() -> Self {
        let path = PathBuf::from("target").join(format!("svsm-com2-{}.sock", std::process::id()));
        std::fs::remove_file(&path).ok();
        Self(path)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// `cargo xtask run`: boots the kernel in QEMU and serves its vTPM on 127.0.0.1:2321 (MS
/// simulator interface) until interrupted.
pub fn run() -> Result<()> {
    let kernel = build()?;
    let daemon = build_daemon(true)?;
    let socket = Socket::new();
    let _qemu = Reaped(
        qemu_serving(&kernel, &socket.0)
            .spawn()
            .context("cannot start qemu-system-x86_64 (Debian package qemu-system-x86)")?,
    );
    println!(
        "xtask: the SVSM boots in QEMU; its vTPM will be on 127.0.0.1:2321 \
         (TPM2TOOLS_TCTI=mssim:host=127.0.0.1,port=2321). Ctrl-C stops both."
    );
    let status = Command::new(&daemon)
        .args(["--backend", "serial", "--serial"])
        .arg(&socket.0)
        .status()
        .with_context(|| format!("cannot start {}", daemon.display()))?;
    if !status.success() {
        bail!("the vTPM daemon ended with {status}");
    }
    Ok(())
}

/// The PCR 16 value after a reset and one extend with SHA-256 digest 00..01:
/// SHA-256(32 zero bytes || 31 zero bytes || 01), computed independently.
const PCR16_AFTER_EXTEND: &str =
    "0x90F4B39548DF55AD6187A1D20D731ECEE78C545B94AFD16F42EF7592D99CD365";

/// A free loopback TCP port whose successor is free too (the mssim TCTI expects the
/// platform channel on command port + 1).
pub(crate) fn free_port_pair() -> Result<u16> {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no two adjacent free TCP ports on 127.0.0.1")
}

/// Runs a tpm2-tools command against `port`; returns its stdout.
pub(crate) fn tpm2(port: u16, dir: &Path, args: &[&str]) -> Result<String> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .env(
            "TPM2TOOLS_TCTI",
            format!("mssim:host=127.0.0.1,port={port}"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {} (Debian package tpm2-tools)", args[0]))?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let status = wait_with_timeout(&mut child, Duration::from_secs(120))?;
    let out = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    if status != Some(0) {
        bail!("`{}` failed (status {status:?}): {out}", args.join(" "));
    }
    Ok(out)
}

/// Starts the daemon (`daemon`) on the kernel's COM2 socket and waits until it serves
/// the MS simulator interface; returns it and its command port.
pub(crate) fn start_daemon(daemon: &Path, socket: &Path) -> Result<(Reaped, u16)> {
    let port = free_port_pair()?;
    let mut daemon = Command::new(daemon)
        .args(["--backend", "serial", "--port"])
        .arg(port.to_string())
        .arg("--platform-port")
        .arg((port + 1).to_string())
        .arg("--serial")
        .arg(socket)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", daemon.display()))?;
    let mut daemon_out = daemon.stdout.take().context("no daemon stdout")?;
    let daemon = Reaped(daemon);
    // The daemon says it serves once the kernel answered.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while daemon_out.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
            seen.push(byte[0]);
            if byte[0] == b'\n' {
                let line = String::from_utf8_lossy(&seen).into_owned();
                seen.clear();
                if tx.send(line).is_err() {
                    break;
                }
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(BOOT_TIMEOUT)
            .context("the daemon did not start serving (kernel not answering?)")?;
        if line.contains("TPM simulator interface on") {
            break;
        }
    }
    Ok((daemon, port))
}

/// Boots the kernel serving its vTPM, then drives it with tpm2-tools through the daemon:
/// random bytes, PCR reset/extend/read against a known answer, an ECC signing key, a
/// quote that tpm2_checkquote verifies on the host, and the EK.
pub fn test_tpm2_tools() -> Result<()> {
    let kernel = build()?;
    let daemon = build_daemon(false)?;
    let socket = Socket::new();
    // The kernel's console, to check what it says about the EK certificates.
    let console_path = socket.0.with_extension("console");
    let console = std::fs::File::create(&console_path)
        .with_context(|| format!("cannot create {}", console_path.display()))?;
    let qemu = qemu_serving(&kernel, &socket.0)
        .stdout(Stdio::from(console))
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let _qemu = Reaped(qemu);
    let (daemon, port) = start_daemon(&daemon, &socket.0)?;
    let dir = std::env::temp_dir().join(format!("svsm-tpm2-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // The in-kernel engine is libtpms 0.10 (revision 1.83) with the default-v1 profile,
    // which has TPM2_ECC_Encrypt (0x199) and TPM2_PolicyCapability (0x19B).
    let fixed = tpm2(port, &dir, &["tpm2_getcap", "properties-fixed"])?;
    if !fixed.contains("TPM2_PT_REVISION:\n  raw: 0xB7\n  value: 1.83") {
        bail!("the in-kernel vTPM does not report revision 1.83:\n{fixed}");
    }
    let commands = tpm2(port, &dir, &["tpm2_getcap", "commands"])?;
    for index in ["0x199", "0x19b"] {
        if !commands.contains(&format!("commandIndex: {index}")) {
            bail!("the in-kernel vTPM lacks command {index}: not the default-v1 profile");
        }
    }
    println!("xtask: in-kernel vTPM: revision 1.83, default-v1 profile commands present");
    let random = tpm2(port, &dir, &["tpm2_getrandom", "--hex", "16"])?;
    if random.trim().len() != 32 || !random.trim().chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("tpm2_getrandom printed {random:?}");
    }
    tpm2(port, &dir, &["tpm2_pcrreset", "16"])?;
    tpm2(
        port,
        &dir,
        &[
            "tpm2_pcrextend",
            "16:sha256=0000000000000000000000000000000000000000000000000000000000000001",
        ],
    )?;
    let pcrs = tpm2(port, &dir, &["tpm2_pcrread", "sha256:16"])?;
    if !pcrs.contains(PCR16_AFTER_EXTEND) {
        bail!("PCR 16 is not the expected value: {pcrs}");
    }
    tpm2(
        port,
        &dir,
        &[
            "tpm2_createprimary",
            "-Q",
            "-C",
            "o",
            "-G",
            "ecc256:ecdsa-sha256",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
            "-c",
            "key.ctx",
        ],
    )?;
    tpm2(
        port,
        &dir,
        &[
            "tpm2_readpublic",
            "-Q",
            "-c",
            "key.ctx",
            "-f",
            "pem",
            "-o",
            "key.pem",
        ],
    )?;
    tpm2(
        port,
        &dir,
        &[
            "tpm2_quote",
            "-Q",
            "-c",
            "key.ctx",
            "-l",
            "sha256:16",
            "-q",
            "5eed0f5eed",
            "-g",
            "sha256",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-o",
            "quote.pcrs",
        ],
    )?;
    let checked = tpm2(
        port,
        &dir,
        &[
            "tpm2_checkquote",
            "-u",
            "key.pem",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "quote.pcrs",
            "-g",
            "sha256",
            "-q",
            "5eed0f5eed",
        ],
    )?;
    if !checked.contains(PCR16_AFTER_EXTEND) {
        bail!("tpm2_checkquote did not show the extended PCR: {checked}");
    }
    tpm2(port, &dir, &["tpm2_flushcontext", "-t"])?;
    tpm2(
        port,
        &dir,
        &["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
    )?;
    tpm2(port, &dir, &["tpm2_flushcontext", "-t"])?;
    // Without SEV there is no PSP, so no report and no EK certificate: the indices are
    // absent, the platform hierarchy is withheld all the same, and the console says why.
    let indices = tpm2(port, &dir, &["tpm2_getcap", "handles-nv-index"])?;
    if indices.contains("0x1C0") {
        bail!("EK evidence indices without a report: {indices}");
    }
    for args in [
        &["tpm2_hierarchycontrol", "-C", "p", "shEnable", "clear"][..],
        &["tpm2_nvdefine", "-C", "p", "-s", "32", "0x01C00002"][..],
        &["tpm2_changeauth", "-c", "p", "x"][..],
        &["tpm2_clear", "-c", "p"][..],
    ] {
        if tpm2(port, &dir, args).is_ok() {
            bail!(
                "`{}` succeeded: the platform hierarchy is not withheld",
                args.join(" ")
            );
        }
    }
    let console = std::fs::read_to_string(&console_path).unwrap_or_default();
    if !console.contains("vTPM: no EK certificates (no SNP report can be had here)")
        || !console.contains("platform hierarchy disabled (phEnable clear)")
    {
        bail!("the console does not say why there are no EK certificates:\n{console}");
    }
    drop(daemon);
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_file(&console_path).ok();
    println!(
        "xtask: tpm2-tools against the vTPM in the kernel (QEMU): getrandom, pcrreset, \
         pcrextend, pcrread (known answer), createprimary, quote + checkquote, createek, \
         no EK evidence indices and a withheld platform hierarchy (console says why): ok"
    );
    Ok(())
}
