//! The kernel's vTPM keeps its state across reboots (QEMU, no SEV, the insecure test
//! key): boots the kernel with COM3 connected to `vtpm-state-store`, drives it with
//! tpm2-tools through the daemon on COM2, stops QEMU (cleanly, then by SIGKILL) and
//! boots again on the same state file; checks that a store the host fails fails the
//! command and leaves the TPM failed and the file at the previous generation; then that
//! a corrupted state, a foreign file, another launch's state and a state sealed under a
//! PSP key stop the kernel with the reason, leaving the file as it was. Prints the restore and per-store times the kernel logs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::kernel::{
    build, build_daemon, qemu_serving_with, start_daemon, tpm2, wait_with_timeout, Reaped,
    BOOT_TIMEOUT,
};

/// The NV index the test defines (owner range).
const NV_INDEX: &str = "0x01500016";
/// The persistent handle the test makes.
const PERSISTENT: &str = "0x81000005";
/// The PCR 16 extend the sealed object's policy expects.
const PCR16_EXTEND: &str =
    "16:sha256=0000000000000000000000000000000000000000000000000000000000000001";
/// The label of the test key of "this launch", and of another one.
const LAUNCH: &str = "vtpm.insecure_test_key=launch-a";
const OTHER_LAUNCH: &str = "vtpm.insecure_test_key=launch-b";

/// One boot: the store helper on `state`, QEMU with COM2 and COM3, its console in a file.
struct Boot {
    qemu: Reaped,
    _store: Reaped,
    console: PathBuf,
    com2: PathBuf,
}

impl Boot {
    fn start(
        kernel: &Path,
        store_bin: &Path,
        dir: &Path,
        name: &str,
        state: &Path,
        cmdline: &str,
    ) -> Result<Self> {
        let com2 = dir.join(format!("{name}.com2"));
        let com3 = dir.join(format!("{name}.com3"));
        let console = dir.join(format!("{name}.console"));
        std::fs::remove_file(&com2).ok();
        let store = Reaped(
            Command::new(store_bin)
                .arg("--socket")
                .arg(&com3)
                .arg("--state")
                .arg(state)
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", store_bin.display()))?,
        );
        // QEMU connects COM3 at start-up: the helper must listen first.
        for _ in 0..200 {
            if com3.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !com3.exists() {
            bail!("vtpm-state-store did not listen on {}", com3.display());
        }
        let out = std::fs::File::create(&console)?;
        let qemu = Reaped(
            qemu_serving_with(kernel, &com2, Some(&com3), cmdline)
                .stdout(Stdio::from(out))
                .spawn()
                .context("cannot start qemu-system-x86_64")?,
        );
        Ok(Self {
            qemu,
            _store: store,
            console,
            com2,
        })
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Stops QEMU with SIGTERM (after the guest side sent TPM2_Shutdown).
    fn stop_cleanly(mut self) -> Result<String> {
        let pid = self.qemu.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        wait_with_timeout(&mut self.qemu.0, Duration::from_secs(30))?;
        Ok(self.console())
    }

    /// Kills QEMU (SIGKILL): no shutdown of any kind.
    fn kill(mut self) -> Result<String> {
        self.qemu.0.kill().ok();
        self.qemu.0.wait().ok();
        Ok(self.console())
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    std::fs::write(dir.join(name), data).with_context(|| format!("cannot write {name}"))
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    std::fs::read(dir.join(name)).with_context(|| format!("cannot read {name}"))
}

/// The lines of `console` with the kernel's state figures.
fn figures(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter(|l| l.contains("vTPM state: ") && l.contains(" ms"))
        .collect()
}

/// Checks what boot 2 onward sees: the same EK, NV data `nv`, the persistent key, and
/// the sealed secret only once PCR 16 is extended as at sealing.
fn check_survivors(port: u16, dir: &Path, ek: &[u8], nv: &[u8], secret: &[u8]) -> Result<()> {
    tpm2(
        port,
        dir,
        &["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
    )?;
    tpm2(port, dir, &["tpm2_flushcontext", "-t"])?;
    if read(dir, "ek.pub")? != ek {
        bail!("the EK changed across the reboot");
    }
    tpm2(
        port,
        dir,
        &[
            "tpm2_nvread",
            NV_INDEX,
            "-C",
            "o",
            "-s",
            "32",
            "-o",
            "nv.out",
        ],
    )?;
    if read(dir, "nv.out")? != nv {
        bail!("the NV index does not hold the data written before the reboot");
    }
    tpm2(port, dir, &["tpm2_readpublic", "-c", PERSISTENT])?;
    tpm2(
        port,
        dir,
        &[
            "tpm2_load",
            "-C",
            PERSISTENT,
            "-u",
            "seal.pub",
            "-r",
            "seal.priv",
            "-c",
            "seal.ctx",
        ],
    )?;
    // PCRs start fresh: the policy does not hold until PCR 16 is extended again.
    if tpm2(
        port,
        dir,
        &[
            "tpm2_unseal",
            "-c",
            "seal.ctx",
            "-p",
            "pcr:sha256:16",
            "-o",
            "x",
        ],
    )
    .is_ok()
    {
        bail!("unsealed with PCR 16 reset: PCRs survived the reboot or the policy is void");
    }
    tpm2(port, dir, &["tpm2_pcrextend", PCR16_EXTEND])?;
    tpm2(
        port,
        dir,
        &[
            "tpm2_unseal",
            "-c",
            "seal.ctx",
            "-p",
            "pcr:sha256:16",
            "-o",
            "unsealed.out",
        ],
    )?;
    if read(dir, "unsealed.out")? != secret {
        bail!("tpm2_unseal returned other data");
    }
    tpm2(port, dir, &["tpm2_flushcontext", "-t"])?;
    Ok(())
}

/// A boot on `state` that must stop the kernel with `reason`, leaving `state` as it was.
fn expect_refusal(
    kernel: &Path,
    store_bin: &Path,
    dir: &Path,
    name: &str,
    state: &Path,
    cmdline: &str,
    reason: &str,
) -> Result<()> {
    let before = std::fs::read(state)?;
    let mut boot = Boot::start(kernel, store_bin, dir, name, state, cmdline)?;
    let status = wait_with_timeout(&mut boot.qemu.0, BOOT_TIMEOUT)?;
    let console = boot.console();
    if status != Some(35) || !console.contains("vTPM state refused") || !console.contains(reason) {
        bail!(
            "{name}: the kernel did not refuse the state with \"{reason}\" (QEMU status \
             {status:?}):\n{console}"
        );
    }
    if console.contains("vTPM channel: serving") {
        bail!("{name}: the vTPM served after refusing its state");
    }
    if std::fs::read(state)? != before {
        bail!("{name}: the refused state file was changed");
    }
    let line = console
        .lines()
        .find(|l| l.contains("vTPM state refused"))
        .unwrap_or_default();
    println!("xtask: {name}: refused, file untouched: {}", line.trim());
    Ok(())
}

/// Lets `vtpm-daemon --state` (the SVSM on the emulated machine, its key from the
/// emulated PSP) manufacture a TPM and seal it into `path`.
fn seal_with_the_daemon(daemon: &Path, path: &Path) -> Result<()> {
    let mut child = Reaped(
        Command::new(daemon)
            .args(["--port", "0", "--state"])
            .arg(path)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", daemon.display()))?,
    );
    for _ in 0..1200 {
        if path.exists() {
            break;
        }
        if child.0.try_wait()?.is_some() {
            bail!("vtpm-daemon --state ended before it stored a state");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(child);
    if !path.exists() {
        bail!("vtpm-daemon --state stored no state in {}", path.display());
    }
    Ok(())
}

/// The level: see the module documentation.
pub fn test_persistence() -> Result<()> {
    let kernel = build()?;
    let daemon_bin = build_daemon(false)?;
    let store_bin = daemon_bin.with_file_name("vtpm-state-store");
    let dir = std::env::current_dir()?
        .join("target")
        .join(format!("kernel-state-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir)?;
    let state = dir.join("vtpm.state");
    let secret = b"the disk key, sealed to PCR 16".to_vec();
    let nv_first = [0x11u8; 32];
    let nv_second = [0x22u8; 32];
    write(&dir, "secret.bin", &secret)?;
    write(&dir, "nv1.bin", &nv_first)?;
    write(&dir, "nv2.bin", &nv_second)?;

    // Boot 1: a new TPM; the EK, an NV index, a persistent key, a PCR-sealed secret.
    let boot = Boot::start(&kernel, &store_bin, &dir, "boot1", &state, LAUNCH)?;
    let (daemon, port) = start_daemon(&daemon_bin, &boot.com2)?;
    tpm2(
        port,
        &dir,
        &[
            "tpm2_createek",
            "-c",
            "ek.ctx",
            "-G",
            "rsa",
            "-u",
            "ek1.pub",
        ],
    )?;
    tpm2(port, &dir, &["tpm2_flushcontext", "-t"])?;
    tpm2(
        port,
        &dir,
        &[
            "tpm2_nvdefine",
            NV_INDEX,
            "-C",
            "o",
            "-s",
            "32",
            "-a",
            "ownerread|ownerwrite",
        ],
    )?;
    tpm2(
        port,
        &dir,
        &["tpm2_nvwrite", NV_INDEX, "-C", "o", "-i", "nv1.bin"],
    )?;
    tpm2(
        port,
        &dir,
        &["tpm2_createprimary", "-Q", "-C", "o", "-c", "primary.ctx"],
    )?;
    tpm2(
        port,
        &dir,
        &[
            "tpm2_evictcontrol",
            "-C",
            "o",
            "-c",
            "primary.ctx",
            PERSISTENT,
        ],
    )?;
    tpm2(port, &dir, &["tpm2_flushcontext", "-t"])?;
    tpm2(port, &dir, &["tpm2_pcrextend", PCR16_EXTEND])?;
    tpm2(
        port,
        &dir,
        &[
            "tpm2_createpolicy",
            "--policy-pcr",
            "-l",
            "sha256:16",
            "-L",
            "pcr.policy",
        ],
    )?;
    tpm2(
        port,
        &dir,
        &[
            "tpm2_create",
            "-Q",
            "-C",
            PERSISTENT,
            "-L",
            "pcr.policy",
            "-a",
            "fixedtpm|fixedparent",
            "-i",
            "secret.bin",
            "-u",
            "seal.pub",
            "-r",
            "seal.priv",
        ],
    )?;
    tpm2(port, &dir, &["tpm2_flushcontext", "-t"])?;
    tpm2(port, &dir, &["tpm2_shutdown"])?;
    drop(daemon);
    let console = boot.stop_cleanly()?;
    let ek = read(&dir, "ek1.pub")?;
    let first_figures: Vec<String> = figures(&console).into_iter().map(String::from).collect();
    if !console.contains("INSECURE TEST KEY") || !console.contains("vTPM state: none kept") {
        bail!("boot 1 did not manufacture a TPM under the labelled test key:\n{console}");
    }
    println!("xtask: kernel state boot 1 (new TPM): EK, NV index, persistent key, sealed secret");

    // Boot 2, after a clean stop: everything is there; then an NV write and SIGKILL.
    let boot = Boot::start(&kernel, &store_bin, &dir, "boot2", &state, LAUNCH)?;
    let (daemon, port) = start_daemon(&daemon_bin, &boot.com2)?;
    check_survivors(port, &dir, &ek, &nv_first, &secret)?;
    tpm2(
        port,
        &dir,
        &["tpm2_nvwrite", NV_INDEX, "-C", "o", "-i", "nv2.bin"],
    )?;
    drop(daemon);
    let second = boot.kill()?;
    println!(
        "xtask: kernel state boot 2 (after a clean stop): same EK, NV data, persistent key, \
         unseal under the PCR policy (refused before the PCR is extended again)"
    );

    // Boot 3, after SIGKILL: the write that returned before the kill is there. Then the
    // host cannot store (a directory where the helper writes its temporary file): the
    // NV write fails, the TPM stays failed, the file keeps the previous generation.
    let boot = Boot::start(&kernel, &store_bin, &dir, "boot3", &state, LAUNCH)?;
    let (daemon, port) = start_daemon(&daemon_bin, &boot.com2)?;
    check_survivors(port, &dir, &ek, &nv_second, &secret)?;
    let kept = std::fs::read(&state)?;
    let temporary = dir.join("vtpm.state.new");
    std::fs::create_dir(&temporary)?;
    let write = tpm2(
        port,
        &dir,
        &["tpm2_nvwrite", NV_INDEX, "-C", "o", "-i", "nv1.bin"],
    );
    let after = tpm2(port, &dir, &["tpm2_getrandom", "--hex", "8"]);
    std::fs::remove_dir(&temporary)?;
    drop(daemon);
    let third = boot.kill()?;
    if write.is_ok() || after.is_ok() {
        bail!(
            "with the store failing, the NV write ({}) or a later command ({}) succeeded",
            if write.is_ok() { "ok" } else { "failed" },
            if after.is_ok() { "ok" } else { "failed" }
        );
    }
    if std::fs::read(&state)? != kept {
        bail!("a failed store changed the kept state");
    }
    if !third.contains("cannot store the sealed state") {
        bail!("the kernel did not log the failed store:\n{third}");
    }
    println!(
        "xtask: kernel state boot 3 (after SIGKILL): the same, with the last NV write; with \
         the host store failing, the next NV write and every later command fail and the \
         file keeps the previous generation"
    );

    // Boot 4: the state before the failed store.
    let boot = Boot::start(&kernel, &store_bin, &dir, "boot4", &state, LAUNCH)?;
    let (daemon, port) = start_daemon(&daemon_bin, &boot.com2)?;
    check_survivors(port, &dir, &ek, &nv_second, &secret)?;
    drop(daemon);
    boot.kill()?;
    println!("xtask: kernel state boot 4: the generation before the failed store");

    // Fail closed: a corrupted state, a foreign file, another launch's state.
    let mut corrupted = std::fs::read(&state)?;
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x01;
    let corrupted_path = dir.join("corrupted.state");
    std::fs::write(&corrupted_path, &corrupted)?;
    expect_refusal(
        &kernel,
        &store_bin,
        &dir,
        "corrupted state",
        &corrupted_path,
        LAUNCH,
        "does not open under this launch's key",
    )?;
    let foreign = dir.join("foreign.state");
    std::fs::write(&foreign, b"NVChip: a file of another TPM")?;
    expect_refusal(
        &kernel,
        &store_bin,
        &dir,
        "foreign file",
        &foreign,
        LAUNCH,
        "not a sealed vTPM state",
    )?;
    let other = dir.join("other-launch.state");
    std::fs::copy(&state, &other)?;
    expect_refusal(
        &kernel,
        &store_bin,
        &dir,
        "another launch's state",
        &other,
        OTHER_LAUNCH,
        "does not open under this launch's key",
    )?;

    // A state sealed by the SNP key path (the daemon's, under the emulated PSP's
    // MSG_KEY_REQ key): the test key never derives a PSP selection.
    let psp_sealed = dir.join("psp-sealed.state");
    seal_with_the_daemon(&daemon_bin, &psp_sealed)?;
    expect_refusal(
        &kernel,
        &store_bin,
        &dir,
        "a state sealed under a PSP key",
        &psp_sealed,
        LAUNCH,
        "the state sealing key could not be derived",
    )?;

    let size = std::fs::metadata(&state)?.len();
    println!("xtask: kernel state figures (QEMU TCG; sealed state {size} bytes):");
    for line in first_figures
        .iter()
        .map(String::as_str)
        .chain(figures(&second))
        .chain(figures(&third))
    {
        println!("    {}", line.trim());
    }
    std::fs::remove_dir_all(&dir).ok();
    println!("xtask: the kernel's vTPM survives clean stops and SIGKILL; bad states fail closed");
    Ok(())
}
