//! `cargo xtask run --snp`: launch the SVSM IGVM file with a Linux guest on an SEV-SNP
//! host, through `scripts/snp/launch.sh`.
//!
//! Before building anything it checks the host and names every missing piece: the SEV
//! device (`/dev/sev`), SNP enabled in KVM (`kvm_amd` parameter `sev_snp`), and a QEMU
//! of version 10.1 or later built with IGVM support. On a machine without them (such as
//! CI) it stops there with that list.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// What the host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    /// `/dev/sev` exists.
    pub dev_sev: bool,
    /// Contents of `/sys/module/kvm_amd/parameters/sev_snp`, if readable.
    pub kvm_sev_snp: Option<String>,
    /// The QEMU binary.
    pub qemu: String,
    /// QEMU's `--version` output, if it ran.
    pub qemu_version: Option<String>,
    /// Whether `-object igvm-cfg,help` succeeded.
    pub qemu_igvm: bool,
}

impl HostProbe {
    /// Probes this machine.
    pub fn probe() -> Self {
        let qemu = std::env::var("QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        let qemu_version = Command::new(&qemu)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let qemu_igvm = qemu_version.is_some()
            && Command::new(&qemu)
                .args(["-object", "igvm-cfg,help"])
                .output()
                .is_ok_and(|o| o.status.success());
        Self {
            dev_sev: Path::new("/dev/sev").exists(),
            kvm_sev_snp: std::fs::read_to_string("/sys/module/kvm_amd/parameters/sev_snp")
                .ok()
                .map(|s| s.trim().to_string()),
            qemu,
            qemu_version,
            qemu_igvm,
        }
    }
}

/// `(major, minor)` from QEMU's `--version` output.
pub fn qemu_version(output: &str) -> Option<(u32, u32)> {
    let rest = output.split("version ").nth(1)?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Every requirement the host misses, as a sentence saying what to do.
pub fn missing(host: &HostProbe) -> Vec<String> {
    let mut missing = Vec::new();
    if !host.dev_sev {
        missing.push(
            "/dev/sev is missing: this is not an SEV host, or the ccp/kvm_amd modules are not loaded"
                .to_string(),
        );
    }
    match host.kvm_sev_snp.as_deref() {
        Some("Y") | Some("1") => {}
        Some(other) => missing.push(format!(
            "kvm_amd reports sev_snp={other}: enable SEV-SNP in the firmware setup and load kvm_amd with sev_snp=1"
        )),
        None => missing.push(
            "kvm_amd is not loaded (no /sys/module/kvm_amd/parameters/sev_snp): an AMD EPYC host with KVM is needed"
                .to_string(),
        ),
    }
    match host.qemu_version.as_deref().map(qemu_version) {
        None => missing.push(format!(
            "{} does not run: install QEMU 10.1 or later built with --enable-igvm (or set QEMU=/path/to/qemu)",
            host.qemu
        )),
        Some(None) => missing.push(format!("cannot read the version of {}", host.qemu)),
        Some(Some((major, minor))) if (major, minor) < (10, 1) => missing.push(format!(
            "{} is QEMU {major}.{minor}: IGVM launch needs QEMU 10.1 or later",
            host.qemu
        )),
        Some(Some(_)) if !host.qemu_igvm => missing.push(format!(
            "{} has no igvm-cfg object: it was built without IGVM support (configure --enable-igvm; Debian's packages lack it)",
            host.qemu
        )),
        Some(Some(_)) => {}
    }
    missing
}

/// Checks the host, builds the IGVM file (`build`), then runs the launch script with
/// `launch_args`.
pub fn run(launch_args: &[String], build: impl FnOnce() -> Result<()>) -> Result<()> {
    let host = HostProbe::probe();
    let missing = missing(&host);
    if !missing.is_empty() {
        let list: String = missing.iter().map(|m| format!("\n  - {m}")).collect();
        bail!(
            "run --snp needs an SEV-SNP host; this machine lacks:{list}\n\
             (see README.md, \"Running on an SNP host\"; `scripts/snp/launch.sh --dry-run` \
             prints the QEMU command line anywhere)"
        );
    }
    build()?;
    let status = Command::new("bash")
        .arg("scripts/snp/launch.sh")
        .args(launch_args)
        .status()
        .context("cannot start scripts/snp/launch.sh")?;
    if !status.success() {
        bail!("scripts/snp/launch.sh failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snp_host() -> HostProbe {
        HostProbe {
            dev_sev: true,
            kvm_sev_snp: Some("Y".into()),
            qemu: "qemu-system-x86_64".into(),
            qemu_version: Some("QEMU emulator version 10.1.0\nCopyright".into()),
            qemu_igvm: true,
        }
    }

    #[test]
    fn a_complete_host_misses_nothing() {
        assert_eq!(missing(&snp_host()), Vec::<String>::new());
    }

    #[test]
    fn each_missing_piece_is_named() {
        let debian = HostProbe {
            dev_sev: false,
            kvm_sev_snp: None,
            qemu_version: Some("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u7)".into()),
            qemu_igvm: false,
            ..snp_host()
        };
        let m = missing(&debian);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("/dev/sev"));
        assert!(m[1].contains("kvm_amd is not loaded"));
        assert!(m[2].contains("QEMU 7.2"));
        let no_igvm = HostProbe {
            qemu_igvm: false,
            ..snp_host()
        };
        assert!(missing(&no_igvm)[0].contains("without IGVM support"));
        let snp_off = HostProbe {
            kvm_sev_snp: Some("N".into()),
            ..snp_host()
        };
        assert!(missing(&snp_off)[0].contains("sev_snp=N"));
        let no_qemu = HostProbe {
            qemu_version: None,
            ..snp_host()
        };
        assert!(missing(&no_qemu)[0].contains("does not run"));
    }

    #[test]
    fn qemu_versions_parse() {
        assert_eq!(qemu_version("QEMU emulator version 10.1.2"), Some((10, 1)));
        assert_eq!(
            qemu_version("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u7)"),
            Some((7, 2))
        );
        assert_eq!(qemu_version("something else"), None);
    }

    #[test]
    fn this_machine_gets_a_clear_answer() {
        // Whatever this machine is, the probe runs and `run` either lists what is
        // missing or would launch; on CI (no /dev/sev) it must refuse before building.
        let host = HostProbe::probe();
        if !host.dev_sev {
            let err = run(&[], || panic!("must not build without an SNP host")).unwrap_err();
            assert!(err.to_string().contains("/dev/sev is missing"), "{err}");
        }
    }
}
