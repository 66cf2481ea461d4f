//! IGVM steps: fetch the test inputs the IGVM tests read (Debian's OVMF images, the
//! independent `sev-snp-measure` implementation), and package the kernel as
//! `target/svsm.igvm`.
//!
//! Downloads use the machine's own package clients: apt with a private state directory
//! (so the system's apt configuration is untouched) and pip. Everything is cached under
//! `target/`, so repeated runs are offline.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::debian::PrivateApt;
use crate::run_command as run;

/// The `sev-snp-measure` release the cross-check uses (PyPI).
const SEV_SNP_MEASURE: &str = "sev-snp-measure==0.0.13";

/// Where the test inputs go.
fn cache() -> PathBuf {
    PathBuf::from("target")
}

/// Fetches what `cargo test -p svsm-igvm` reads: Debian forky's, trixie's and bookworm's
/// OVMF and the `sev-snp-measure` package.
pub fn prepare_tests() -> Result<()> {
    println!("xtask: == igvm test inputs ==");
    for release in ["forky", "trixie", "bookworm"] {
        let fd = debian_ovmf(release)?;
        println!("xtask: {release} OVMF: {}", fd.display());
    }
    let ssm = sev_snp_measure()?;
    println!("xtask: sev-snp-measure: {}", ssm.display());
    Ok(())
}

/// `target/firmware/<release>/OVMF.fd` from Debian's OVMF package of that release: `ovmf`
/// up to trixie, `ovmf-generic` from forky on (`ovmf` became a package of packages there).
pub(crate) fn debian_ovmf(release: &str) -> Result<PathBuf> {
    let package = match release {
        "bookworm" | "trixie" => "ovmf",
        _ => "ovmf-generic",
    };
    let dir = cache().join("firmware").join(release);
    let fd = dir.join("OVMF.fd");
    if fd.exists() {
        return Ok(fd);
    }
    let mut apt = PrivateApt::new(&dir.join("apt"), release)?;
    let deb = apt.download(package)?;
    let unpacked = dir.join("apt").join("unpacked");
    crate::debian::unpack(&deb, &unpacked)?;
    let src = unpacked.join("usr/share/ovmf/OVMF.fd");
    fs::copy(&src, &fd)
        .with_context(|| format!("{} has no usr/share/ovmf/OVMF.fd", deb.display()))?;
    fs::write(
        dir.join("SOURCE"),
        format!(
            "{}\n",
            deb.file_name().unwrap_or_default().to_string_lossy()
        ),
    )?;
    Ok(fd)
}

/// `target/sev-snp-measure/` holding the unpacked `sevsnpmeasure` package.
fn sev_snp_measure() -> Result<PathBuf> {
    let dir = cache().join("sev-snp-measure");
    if dir.join("sevsnpmeasure/gctx.py").exists() {
        return Ok(dir);
    }
    fs::create_dir_all(&dir)?;
    let pip_ok = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !pip_ok {
        install_pip()?;
    }
    run(
        Command::new("python3")
            .args(["-m", "pip", "download", "-q", "--no-deps", "-d"])
            .arg(&dir)
            .arg(SEV_SNP_MEASURE),
        "pip download sev-snp-measure",
    )?;
    let wheel = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip download left no wheel")?;
    run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&dir),
        "unzip sev-snp-measure",
    )?;
    Ok(dir)
}

/// Installs python3 and pip on a Debian machine as root; elsewhere says what to install.
fn install_pip() -> Result<()> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root || !Path::new("/etc/debian_version").exists() {
        bail!(
            "python3's pip is missing: install it (Debian: apt-get install python3-pip) and retry"
        );
    }
    println!("xtask: installing python3-pip (the IGVM cross-check runs sev-snp-measure)");
    run(
        Command::new("apt-get")
            .args(["-q", "update"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get update",
    )?;
    run(
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "python3-pip",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install python3-pip",
    )
}

/// Builds the kernel ELF and packages it into `target/svsm.igvm`, and with Debian
/// forky's OVMF (edk2 2026.08: it reads its memory map from the IGVM parameter the SVSM
/// fills, so it never treats the SVSM's range as RAM) as the guest firmware into
/// `target/svsm-ovmf.igvm`, printing each file's size and launch digest.
pub fn package() -> Result<()> {
    println!("xtask: == igvm ==");
    let kernel = crate::kernel::build()?;
    let kernel = kernel.to_string_lossy().into_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let tool = |args: &[&str]| {
        let mut c = Command::new(&cargo);
        c.args(["run", "-q", "--release", "-p", "svsm-igvm", "--"])
            .args(args);
        c
    };
    run(
        &mut tool(&["build", "--kernel", &kernel, "--output", "target/svsm.igvm"]),
        "svsm-igvm build",
    )?;
    let ovmf = debian_ovmf("forky")?;
    let ovmf = ovmf.to_string_lossy().into_owned();
    run(
        &mut tool(&[
            "build",
            "--kernel",
            &kernel,
            "--firmware",
            &ovmf,
            "--output",
            "target/svsm-ovmf.igvm",
        ]),
        "svsm-igvm build with OVMF",
    )
}
