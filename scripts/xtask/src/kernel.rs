//! The bare-metal kernel: build it, boot it in QEMU, run its self-tests, serve its vTPM.
//!
//! The kernel is built for `x86_64-unknown-none` with the static relocation model (the C
//! archives it links carry absolute relocations, so it is linked at a fixed 1 MiB) and
//! booted with Debian's QEMU through the PVH entry (`-kernel`, TCG). It reports on COM1
//! and ends QEMU through isa-debug-exit: status 33 is success, 35 failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The kernel's target.
pub const TARGET: &str = "x86_64-unknown-none";
/// Rust flags for the kernel's target only (host artifacts are unaffected).
const TARGET_RUSTFLAGS: (&str, &str) = (
    "CARGO_TARGET_X86_64_UNKNOWN_NONE_RUSTFLAGS",
    "-C relocation-model=static",
);
/// QEMU's exit status when the kernel reports success (isa-debug-exit, value 0x10).
const QEMU_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel reports failure (value 0x11).
const QEMU_FAILURE: i32 = 35;
/// How long one boot may take before it counts as hung.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.env(TARGET_RUSTFLAGS.0, TARGET_RUSTFLAGS.1);
    cmd
}

fn run_checked(mut cmd: Command, what: &str) -> Result<()> {
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
    cmd.args(["-machine", "q35", "-cpu", "max", "-m", "256M"])
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
        ("crash=abort", "SVSM terminated: abort() called"),
    ] {
        let (status, console) = boot(&kernel, flag)?;
        if status != Some(QEMU_FAILURE) || !console.contains(reason) {
            bail!("`{flag}` did not end the kernel with \"{reason}\" (QEMU status {status:?})");
        }
        println!("xtask: kernel `{flag}` ends the SVSM with its reason");
    }
    Ok(())
}
