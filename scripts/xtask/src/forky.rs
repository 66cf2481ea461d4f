//! A minimal Debian forky root under `target/forky-root` that holds forky's swtpm: the
//! current swtpm (0.10.x on libtpms 0.10), the bench's column (d).
//!
//! Built once with debootstrap (bookworm's debootstrap has no forky script, so it is
//! given the sid script) and cached: a root counts as built only once the marker file
//! beside it names its swtpm, so an interrupted build is redone, and repeat runs are
//! offline. swtpm then runs with `chroot`. Both need root; elsewhere the column is
//! skipped with the reason.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{debian, setup};

/// The release the root is built from.
const RELEASE: &str = "forky";
/// debootstrap's script for the release (bookworm's debootstrap has no `forky`).
const SCRIPT: &str = "/usr/share/debootstrap/scripts/sid";

/// Where the bench finds swtpm for column (d).
#[derive(Debug)]
pub enum Peer {
    /// The root (absolute path); its swtpm's version is printed when it is made ready.
    Root(PathBuf),
    /// Why there is no column (d).
    Skipped(String),
}

fn root() -> PathBuf {
    PathBuf::from("target/forky-root")
}

/// Written once the root is complete: its swtpm's version.
fn marker() -> PathBuf {
    PathBuf::from("target/forky-root.ready")
}

/// The forky root with swtpm, built if missing; or why the column is skipped.
pub fn peer() -> Peer {
    if !setup::is_debian() {
        return Peer::Skipped(
            "not a Debian machine (the forky root is built with debootstrap)".into(),
        );
    }
    if !setup::is_root() {
        return Peer::Skipped("not root (debootstrap and chroot need root)".into());
    }
    match ensure() {
        Ok(dir) => Peer::Root(dir),
        Err(e) => Peer::Skipped(format!("cannot build the forky root: {e:#}")),
    }
}

fn ensure() -> Result<PathBuf> {
    let dir = root();
    if let Ok(version) = fs::read_to_string(marker()) {
        if dir.join("usr/bin/swtpm").exists() {
            let abs = fs::canonicalize(&dir)?;
            println!(
                "xtask: forky root {} (cached): {}",
                dir.display(),
                version.trim()
            );
            return Ok(abs);
        }
    }
    setup::ensure_packages(&["debootstrap"])?;
    if !Path::new(SCRIPT).exists() {
        bail!("debootstrap has no {SCRIPT}");
    }
    if dir.exists() {
        // A half-built root: debootstrap may have left /proc or /sys mounted in it.
        let abs = fs::canonicalize(&dir)?;
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        if let Some(m) = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .find(|m| Path::new(m).starts_with(&abs))
        {
            bail!(
                "{m} is mounted inside the unfinished root {}: unmount it, then retry",
                abs.display()
            );
        }
        fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the unfinished root {}", dir.display()))?;
    }
    fs::create_dir_all(&dir)?;
    let mirror = debian::debian_mirror()?;
    println!(
        "xtask: building a minimal {RELEASE} root with swtpm in {} (debootstrap, once)",
        dir.display()
    );
    let status = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=swtpm",
            "--components=main",
            RELEASE,
        ])
        .arg(&dir)
        .arg(&mirror)
        .arg(SCRIPT)
        .status()
        .context("cannot run debootstrap")?;
    if !status.success() {
        bail!(
            "debootstrap {RELEASE} failed ({status}); see {}/debootstrap/debootstrap.log",
            dir.display()
        );
    }
    // Forky's Release file can be past its Valid-Until date on a mirror: let apt in the
    // root accept it, should anyone install more there.
    fs::write(
        dir.join("etc/apt/apt.conf.d/99valid-until"),
        "Acquire::Check-Valid-Until \"false\";\n",
    )?;
    let abs = fs::canonicalize(&dir)?;
    let version = swtpm_version(&abs)?;
    if !version.contains(" 0.10.") {
        println!("xtask: warning: forky's swtpm is not 0.10.x: {version}");
    }
    fs::write(marker(), format!("{version}\n"))?;
    println!("xtask: forky root ready: {version}");
    Ok(abs)
}

/// `swtpm --version` inside the root.
fn swtpm_version(root: &Path) -> Result<String> {
    let out = Command::new("chroot")
        .arg(root)
        .args(["swtpm", "--version"])
        .output()
        .context("cannot run chroot")?;
    if !out.status.success() {
        bail!(
            "swtpm does not run in the forky root ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "TPM emulator version 0.10.2, Copyright (c) ...": the version.
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}
