//! Installs what a fresh Debian machine lacks, or says exactly what to install.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages the build and the test levels need.
pub const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    // OpenSSL's build for the engine (scripts/xtask/src/engine.rs).
    "perl",
    "make",
    "tpm2-tools",
    "libtss2-tcti-mssim0",
    "swtpm",
    "swtpm-tools",
    "openssl",
    "ovmf",
    "busybox-static",
    "cpio",
    "libtss2-tcti-device0",
    // The Linux guest's LUKS2 volume: cryptsetup, mke2fs and debugfs in the initramfs,
    // depmod for the kernel package's modules.
    "cryptsetup-bin",
    "e2fsprogs",
    "kmod",
];

/// Makes sure every package in [`APT_PACKAGES`], the Rust target and the TPM engine's
/// archives (Debian forky's, pinned: [`crate::engine`]) are present.
pub fn ensure() -> Result<()> {
    ensure_packages(APT_PACKAGES)?;
    ensure_rust_target()?;
    crate::engine::ensure()
}

/// Installs those of `packages` that are missing (as root on Debian), or says what to
/// install.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    install_apt(&missing)
}

/// Whether this machine is Debian (or a derivative that keeps `/etc/debian_version`).
pub fn is_debian() -> bool {
    std::path::Path::new("/etc/debian_version").exists()
}

/// Whether xtask runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn install_apt(missing: &[&str]) -> Result<()> {
    let list = missing.join(" ");
    if !is_debian() {
        bail!("this machine is not Debian; install the equivalents of these Debian packages and retry: {list}");
    }
    if !is_root() {
        bail!("missing packages; run as root: apt-get update && apt-get install -y {list}");
    }
    println!("xtask: installing {list}");
    run_apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(missing);
    run_apt(&args)
}

fn run_apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// rust-toolchain.toml names the target; rustup installs it on first use, but an
/// older rustup may not, so ask for it explicitly when it is missing.
fn ensure_rust_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("x86_64-unknown-none") => Ok(()),
        Ok(_) => {
            let status = Command::new("rustup")
                .args(["target", "add", "x86_64-unknown-none"])
                .status()
                .context("cannot run rustup")?;
            if !status.success() {
                bail!("rustup target add x86_64-unknown-none failed ({status})");
            }
            Ok(())
        }
        Err(_) => bail!(
            "rustup not found: install rustup, then run `rustup target add x86_64-unknown-none`"
        ),
    }
}
