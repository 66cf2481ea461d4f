//! The operator's policy file (TOML): what a guest must show to get its secret.
//!
//! ```toml
//! [snp]
//! # The `svsm-igvm measure` digests of the IGVM files deployed (hex, 48 bytes each),
//! # for the vCPU count and CPU model used. Required: at least one.
//! measurements = ["5e1a...c3"]
//! # The lowest acceptable REPORTED_TCB (`bl=N,tee=N,snp=N,ucode=N`, any subset; an
//! # absent component is 0). Required: firmware below it is refused.
//! min_tcb = "bl=3,tee=0,snp=8,ucode=115"
//! # How the VCEK is trusted: AMD's ARK and ASK for the product (PEM or DER; the VCEK
//! # comes with the evidence, NV 0x01C00101) ...
//! ark = "ark.pem"
//! ask = "ask.pem"
//! # ... or one VCEK public key trusted directly (PEM SubjectPublicKeyInfo):
//! # vcek_key = "vcek.pub.pem"
//!
//! [boot]
//! # The measured-boot policy (svsm_verifier::boot_policy::BootPolicy): the PCRs to
//! # quote and the events' reference values.
//!
//! [release]
//! # The secret to release: a file of that name in the --secrets directory.
//! secret = "disk-key"
//! ```
//!
//! Relative paths are relative to the policy file's directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use svsm_verifier::chain::trusted_vcek_key;
use svsm_verifier::report::Tcb;

use crate::boot::BootPolicy;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    snp: SnpSection,
    boot: toml::Value,
    release: ReleaseSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnpSection {
    measurements: Vec<String>,
    #[serde(default)]
    min_tcb: Option<String>,
    #[serde(default)]
    ark: Option<PathBuf>,
    #[serde(default)]
    ask: Option<PathBuf>,
    #[serde(default)]
    vcek_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseSection {
    secret: String,
}

/// How the VCEK is trusted.
#[derive(Debug, Clone)]
pub enum VcekAnchor {
    /// AMD's ARK and ASK (as read from the files); the guest sends the VCEK.
    AmdChain {
        /// The ARK certificate (PEM or DER).
        ark: Vec<u8>,
        /// The ASK certificate (PEM or DER).
        ask: Vec<u8>,
    },
    /// One VCEK key trusted directly.
    Key(p384::ecdsa::VerifyingKey),
}

/// The policy, checked and loaded.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Acceptable launch measurements.
    pub measurements: Vec<[u8; 48]>,
    /// The lowest acceptable REPORTED_TCB.
    pub min_tcb: Tcb,
    /// The VCEK's trust anchor.
    pub vcek: VcekAnchor,
    /// The measured-boot policy.
    pub boot: BootPolicy,
    /// The name of the secret to release.
    pub secret: String,
}

/// Why the policy cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("policy {path}: {why}")]
pub struct PolicyError {
    path: String,
    why: String,
}

/// A secret's name: a plain file name (letters, digits, `.`, `_`, `-`), never a path.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Policy {
    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|why| PolicyError {
            path: path.display().to_string(),
            why,
        })
    }

    /// Parses policy `text`, reading the files it names relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.snp.measurements.is_empty() {
            return Err("[snp] measurements: give at least one launch measurement \
                        (svsm-igvm measure)"
                .into());
        }
        let measurements = file
            .snp
            .measurements
            .iter()
            .map(|m| {
                hex::decode(m.trim())
                    .ok()
                    .and_then(|v| <[u8; 48]>::try_from(v).ok())
                    .ok_or_else(|| format!("[snp] measurements: {m:?} is not 48 bytes of hex"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let min_tcb = file
            .snp
            .min_tcb
            .as_deref()
            .ok_or(
                "[snp] min_tcb: give the lowest acceptable TCB (bl=N,tee=N,snp=N,ucode=N): \
                    reports from firmware below it are refused",
            )?
            .parse::<Tcb>()
            .map_err(|e| format!("[snp] min_tcb: {e}"))?;
        let read = |p: &PathBuf, what: &str| {
            let p = base.join(p);
            std::fs::read(&p).map_err(|e| format!("[snp] {what} {}: {e}", p.display()))
        };
        let vcek = match (&file.snp.ark, &file.snp.ask, &file.snp.vcek_key) {
            (Some(ark), Some(ask), None) => VcekAnchor::AmdChain {
                ark: read(ark, "ark")?,
                ask: read(ask, "ask")?,
            },
            (None, None, Some(key)) => VcekAnchor::Key(
                trusted_vcek_key(&read(key, "vcek_key")?)
                    .map_err(|e| format!("[snp] vcek_key: {e}"))?,
            ),
            _ => return Err("[snp]: give either ark and ask, or vcek_key".into()),
        };
        let boot = BootPolicy::from_toml(
            &toml::to_string(&file.boot).map_err(|e| format!("[boot]: {e}"))?,
        )
        .map_err(|e| format!("[boot]: {e}"))?;
        if !valid_secret_name(&file.release.secret) {
            return Err(format!(
                "[release] secret: {:?} is not a plain file name",
                file.release.secret
            ));
        }
        Ok(Policy {
            measurements,
            min_tcb,
            vcek,
            boot,
            secret: file.release.secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "[boot]\nbank = \"sha256\"\npcrs = [0, 7]\nreplay_only = [0, 7]\n";

    fn dir_with_key() -> PathBuf {
        // One directory per call: the tests run in parallel and each writes its key file.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("svsm-service-policy-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).unwrap();
        use p384::pkcs8::EncodePublicKey;
        let pem = key
            .verifying_key()
            .to_public_key_pem(p384::pkcs8::LineEnding::LF)
            .unwrap();
        std::fs::write(dir.join("vcek.pem"), pem).unwrap();
        dir
    }

    fn text(snp: &str, release: &str) -> String {
        format!("[snp]\n{snp}\n{BOOT}\n[release]\n{release}\n")
    }

    #[test]
    fn a_complete_policy_loads() {
        let dir = dir_with_key();
        let m = "ab".repeat(48);
        let p = Policy::parse(
            &text(
                &format!("measurements = [\"{m}\"]\nmin_tcb = \"snp=8\"\nvcek_key = \"vcek.pem\""),
                "secret = \"disk-key\"",
            ),
            &dir,
        )
        .unwrap();
        assert_eq!(p.measurements, vec![[0xAB; 48]]);
        assert_eq!(p.min_tcb.snp, 8);
        assert!(matches!(p.vcek, VcekAnchor::Key(_)));
        assert_eq!(p.boot.pcr_selection(), (0x000B, vec![0, 7]));
        assert_eq!(p.secret, "disk-key");
    }

    #[test]
    fn each_mistake_is_named() {
        let dir = dir_with_key();
        let m = format!(
            "measurements = [\"{}\"]\nmin_tcb = \"snp=8\"",
            "ab".repeat(48)
        );
        let key = "vcek_key = \"vcek.pem\"";
        let ok_release = "secret = \"disk-key\"";
        for (snp, release, needle) in [
            (
                format!("measurements = []\n{key}"),
                ok_release,
                "at least one",
            ),
            (
                format!("measurements = [\"abcd\"]\n{key}"),
                ok_release,
                "48 bytes",
            ),
            (
                format!(
                    "measurements = [\"{}\"]\nmin_tcb = \"xyz=1\"\n{key}",
                    "ab".repeat(48)
                ),
                ok_release,
                "min_tcb",
            ),
            (
                format!("measurements = [\"{}\"]\n{key}", "ab".repeat(48)),
                ok_release,
                "min_tcb: give the lowest acceptable TCB",
            ),
            (m.clone(), ok_release, "either ark and ask, or vcek_key"),
            (format!("{m}\n{key}\nark = \"a\""), ok_release, "either ark"),
            (
                format!("{m}\nvcek_key = \"missing.pem\""),
                ok_release,
                "missing.pem",
            ),
            (
                format!("{m}\n{key}"),
                "secret = \"../etc/shadow\"",
                "plain file name",
            ),
            (
                format!("{m}\n{key}\nextra = 1"),
                ok_release,
                "unknown field",
            ),
        ] {
            let err = Policy::parse(&text(&snp, release), &dir).unwrap_err();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
        let no_boot = format!("[snp]\n{m}\n{key}\n[release]\n{ok_release}\n");
        assert!(Policy::parse(&no_boot, &dir).unwrap_err().contains("boot"));
        let bad_boot = format!(
            "[snp]\n{m}\n{key}\n[boot]\nbank = \"md5\"\npcrs = [0]\n[release]\n{ok_release}\n"
        );
        assert!(Policy::parse(&bad_boot, &dir)
            .unwrap_err()
            .contains("[boot]"));
    }

    #[test]
    fn secret_names_are_file_names() {
        for ok in ["disk-key", "a.b_c", "K1"] {
            assert!(valid_secret_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", "ü"] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
    }
}
