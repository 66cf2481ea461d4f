//! The TPM engine's archives: libtpms 0.10 from Debian forky, pinned by version and by
//! the SHA-256 of its .deb, and OpenSSL 3's libcrypto built from the `openssl-src`
//! crate's sources (pinned with its checksum by Cargo.lock).
//!
//! The engine is linked into the kernel, so it is part of the launch measurement: it must
//! never change silently. The pins below are the one place that says which engine is
//! built. Everything is cached under `target/engine/`, so repeat runs are offline. When
//! forky (Debian's testing release) drops a pinned version, the build stops and names the
//! versions on offer; `--allow-engine-drift` builds with the newest instead and prints
//! its digests, to be pinned here.
//!
//! OpenSSL is configured lean, for the kernel and the host alike ([`OPENSSL_CONFIGURE`]):
//! `linux-x86_64` with its assembly (the crate has no `x86_64-unknown-none`
//! configuration), static, without threads, sockets, DSO, engines, compression or async.
//!
//! `target/engine/lib/` then holds `libtpms.a`, `libcrypto.a` and `ENGINE`, a manifest
//! (one line per component: what, version, digest or configuration) that the vtpm
//! crate's build script embeds together with the digests of the archives it links.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::debian::{self, PrivateApt};
use crate::hex;

/// One pinned Debian package and the archive the engine takes from it.
#[derive(Debug)]
pub struct Pinned {
    pub package: &'static str,
    pub version: &'static str,
    /// SHA-256 of the .deb, as forky's Packages file lists it.
    pub sha256: &'static str,
    /// The static archive inside the package.
    pub archive: &'static str,
    /// Versions `--allow-engine-drift` may move to start with this.
    pub drift_prefix: &'static str,
}

/// The engine's Debian packages. Change a version here (and its digest) to change them.
pub const PINNED: &[Pinned] = &[Pinned {
    package: "libtpms-dev",
    version: "0.10.2-5",
    sha256: "de53d091e099403c207793cbcd52f9da58d8c8eff874649096013936d67835a0",
    archive: "usr/lib/x86_64-linux-gnu/libtpms.a",
    drift_prefix: "0.10.",
}];

/// OpenSSL's `Configure` arguments: its x86-64 Linux target with the assembly, static,
/// position-independent (host binaries are PIE; the kernel links it at a fixed address
/// all the same), each function in its own section (the kernel's `--gc-sections` drops
/// what the engine never calls), and nothing the engine does not use.
pub const OPENSSL_CONFIGURE: &[&str] = &[
    "linux-x86_64",
    "no-shared",
    "no-module",
    "no-dso",
    "no-engine",
    "no-threads",
    "no-sock",
    "no-async",
    "no-comp",
    "no-zlib",
    "no-ui-console",
    "no-legacy",
    "no-tests",
    "no-apps",
    "no-docs",
    "-fPIC",
    "-ffunction-sections",
    "-fdata-sections",
];

/// The Debian release the engine comes from.
const RELEASE: &str = "forky";

/// Set by `--allow-engine-drift`.
static ALLOW_DRIFT: AtomicBool = AtomicBool::new(false);

/// Lets the next [`ensure`] build with the newest versions forky offers.
pub fn allow_drift() {
    ALLOW_DRIFT.store(true, Ordering::SeqCst);
}

fn root() -> PathBuf {
    PathBuf::from("target/engine")
}

/// Where the vtpm crate's build script finds the archives (its default).
pub fn lib_dir() -> PathBuf {
    root().join("lib")
}

/// Makes sure `target/engine/lib` holds the pinned engine (or, with drift allowed, the
/// newest one) and prints what it is.
pub fn ensure() -> Result<()> {
    let drift = ALLOW_DRIFT.load(Ordering::SeqCst);
    let mut apt: Option<PrivateApt> = None;
    let mut manifest = String::new();
    let mut chosen = Vec::new();
    for pin in PINNED {
        let (version, deb) = if drift {
            let apt = open_apt(&mut apt)?;
            let version = newest(apt, pin)?;
            let deb = apt.download(&format!("{}={version}", pin.package))?;
            (version, deb)
        } else {
            (pin.version.to_string(), pinned_deb(&mut apt, pin)?)
        };
        let digest = sha256_file(&deb)?;
        if !drift && digest != pin.sha256 {
            bail!(
                "{} has SHA-256 {digest}, but scripts/xtask/src/engine.rs pins {} {} at {}: \
                 the archive changed under the same version; refusing to build with it",
                deb.display(),
                pin.package,
                pin.version,
                pin.sha256
            );
        }
        writeln!(manifest, "{} {version} sha256:{digest}", pin.package)?;
        chosen.push((pin, version, digest, deb));
    }
    let openssl = format!(
        "openssl-src {} configure: {}",
        openssl_src::version(),
        OPENSSL_CONFIGURE.join(" ")
    );
    writeln!(manifest, "{openssl}")?;
    let lib = lib_dir();
    let current = fs::read_to_string(lib.join("ENGINE")).unwrap_or_default();
    if current != manifest {
        let libcrypto = build_openssl(&openssl)?;
        fs::create_dir_all(&lib)?;
        fs::copy(&libcrypto, lib.join("libcrypto.a"))
            .with_context(|| format!("cannot copy {}", libcrypto.display()))?;
        let unpacked = root().join("unpacked");
        let _ = fs::remove_dir_all(&unpacked);
        for (pin, _, _, deb) in &chosen {
            debian::unpack(deb, &unpacked)?;
            let src = unpacked.join(pin.archive);
            let name = Path::new(pin.archive)
                .file_name()
                .context("archive path has no file name")?;
            fs::copy(&src, lib.join(name))
                .with_context(|| format!("{} has no {}", deb.display(), pin.archive))?;
        }
        fs::write(lib.join("ENGINE"), &manifest)?;
    }
    println!(
        "xtask: engine: OpenSSL {} from openssl-src {}, configured {}",
        openssl_version(),
        openssl_src::version(),
        OPENSSL_CONFIGURE.join(" ")
    );
    for (pin, version, digest, _) in &chosen {
        println!(
            "xtask: engine: {} {version} (Debian {RELEASE}), .deb sha256 {digest}",
            pin.package
        );
        if drift && (version != pin.version || digest != pin.sha256) {
            println!(
                "xtask: engine DRIFT: {} {version} is not the pinned {}; to pin it, set in \
                 scripts/xtask/src/engine.rs: version: \"{version}\", sha256: \"{digest}\"",
                pin.package, pin.version
            );
        }
    }
    Ok(())
}

/// OpenSSL's own version, from the crate's version string (`300.6.1+3.6.3`).
fn openssl_version() -> &'static str {
    openssl_src::version()
        .split_once('+')
        .map_or("3", |(_, v)| v)
}

/// Builds libcrypto.a from the `openssl-src` sources with [`OPENSSL_CONFIGURE`] in
/// `target/engine/openssl` and returns its path; a build whose stamp says `what` (the
/// crate's version and the configuration) is kept.
fn build_openssl(what: &str) -> Result<PathBuf> {
    let dir = root().join("openssl");
    let stamp = dir.join("BUILT");
    let libcrypto = dir.join("libcrypto.a");
    if libcrypto.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == what) {
        return Ok(libcrypto);
    }
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_file(root().join("openssl-build.log"));
    fs::create_dir_all(&dir)?;
    println!(
        "xtask: building OpenSSL {} for the engine (once; cached in target/engine)",
        openssl_version()
    );
    let status = Command::new("cp")
        .arg("-R")
        .arg(openssl_src::source_dir().join("."))
        .arg(&dir)
        .status()
        .context("cannot run cp")?;
    if !status.success() {
        bail!(
            "cannot copy OpenSSL's sources from {}",
            openssl_src::source_dir().display()
        );
    }
    // OpenSSL's build echoes every compiler line: keep it in a log, show its end on failure.
    let log = root().join("openssl-build.log");
    let run = |cmd: &mut Command, what: &str| -> Result<()> {
        let out = cmd
            .current_dir(&dir)
            .output()
            .with_context(|| format!("cannot start {what}"))?;
        let mut text = out.stdout;
        text.extend_from_slice(&out.stderr);
        let mut all = fs::read(&log).unwrap_or_default();
        all.extend_from_slice(&text);
        fs::write(&log, &all)?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&text);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            bail!(
                "{what} failed ({}); its last lines (all in {}):\n{tail}",
                out.status,
                log.display()
            );
        }
        Ok(())
    };
    run(
        Command::new("perl")
            .arg("./Configure")
            .args(OPENSSL_CONFIGURE),
        "OpenSSL's Configure (perl)",
    )?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    run(
        Command::new("make")
            .arg(format!("-j{jobs}"))
            .arg("build_libs"),
        "OpenSSL's make build_libs",
    )?;
    fs::write(&stamp, what)?;
    Ok(libcrypto)
}

fn open_apt(apt: &mut Option<PrivateApt>) -> Result<&mut PrivateApt> {
    if apt.is_none() {
        *apt = Some(PrivateApt::new(&root().join("apt"), RELEASE)?);
    }
    Ok(apt.as_mut().expect("just set"))
}

/// The cached .deb of a pin, downloaded when missing.
fn pinned_deb(apt: &mut Option<PrivateApt>, pin: &Pinned) -> Result<PathBuf> {
    let cached = root()
        .join("debs")
        .join(format!("{}_{}_amd64.deb", pin.package, pin.version));
    if cached.exists() && sha256_file(&cached)? == pin.sha256 {
        return Ok(cached);
    }
    let apt = open_apt(apt)?;
    let deb = match apt.download(&format!("{}={}", pin.package, pin.version)) {
        Ok(deb) => deb,
        Err(err) => {
            let offered = apt.versions(pin.package).unwrap_or_default();
            bail!("{}", pin_gone(pin, &format!("{err:#}"), &offered));
        }
    };
    fs::create_dir_all(cached.parent().context("no parent")?)?;
    fs::copy(&deb, &cached)
        .with_context(|| format!("cannot cache {} as {}", deb.display(), cached.display()))?;
    Ok(cached)
}

/// What the build says when a pinned package cannot be fetched: the versions on offer
/// and the one line to change.
fn pin_gone(pin: &Pinned, why: &str, offered: &[String]) -> String {
    format!(
        "the pinned engine package {} {} cannot be fetched from Debian {RELEASE} ({why}).\n\
         Versions on offer: {}.\n\
         The engine is part of the launch measurement, so it never changes silently: change \
         the one line `version: \"{}\"` (and its sha256) of {} in scripts/xtask/src/engine.rs, \
         or build once with `cargo xtask --allow-engine-drift ...` to fetch the newest {}x and \
         print its digest.",
        pin.package,
        pin.version,
        if offered.is_empty() {
            "none".to_string()
        } else {
            offered.join(", ")
        },
        pin.version,
        pin.package,
        pin.drift_prefix,
    )
}

/// The newest version forky offers within the pin's line.
fn newest(apt: &mut PrivateApt, pin: &Pinned) -> Result<String> {
    let offered = apt.versions(pin.package)?;
    offered
        .iter()
        .find(|v| v.starts_with(pin.drift_prefix))
        .cloned()
        .with_context(|| {
            format!(
                "Debian {RELEASE} offers no {} {}x (versions on offer: {})",
                pin.package,
                pin.drift_prefix,
                offered.join(", ")
            )
        })
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_pin_names_the_offer_and_the_line_to_change() {
        let pin = &PINNED[0];
        let text = pin_gone(
            pin,
            "E: Version '0.10.2-5' for 'libtpms-dev' was not found",
            &["0.10.3-1".to_string(), "0.10.2-6".to_string()],
        );
        assert!(text.contains("libtpms-dev 0.10.2-5 cannot be fetched from Debian forky"));
        assert!(text.contains("Versions on offer: 0.10.3-1, 0.10.2-6."));
        assert!(text.contains("change the one line `version: \"0.10.2-5\"`"));
        assert!(text.contains("scripts/xtask/src/engine.rs"));
        assert!(text.contains("--allow-engine-drift"));
        assert!(pin_gone(pin, "gone", &[]).contains("Versions on offer: none."));
    }

    #[test]
    fn every_pin_has_a_version_in_its_drift_line_and_a_sha256() {
        for pin in PINNED {
            assert!(pin.version.starts_with(pin.drift_prefix), "{pin:?}");
            assert_eq!(pin.sha256.len(), 64, "{pin:?}");
            assert!(pin.sha256.bytes().all(|b| b.is_ascii_hexdigit()), "{pin:?}");
        }
    }
}
