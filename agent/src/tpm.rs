//! The TPM work, done with tpm2-tools (the guest's `/dev/tpmrm0` through
//! `TPM2TOOLS_TCTI`): EK, AK, quote, NV reads, credential activation.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use svsm_protocol::service_api::PcrValue;
use zeroize::Zeroizing;

/// A scratch directory for tpm2-tools' files.
#[derive(Debug)]
pub struct Tpm {
    dir: PathBuf,
}

/// What the quote produced.
#[derive(Debug)]
pub struct Quote {
    /// TPMS_ATTEST.
    pub message: Vec<u8>,
    /// TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The PCR values tpm2_quote read, in its output's order.
    pub pcrs: Vec<PcrValue>,
}

impl Tpm {
    /// Uses (and creates) `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Runs `tpm2_<tool>` with `args`; its standard output on success, its error lines
    /// otherwise.
    fn tool(&self, tool: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(format!("tpm2_{tool}"))
            .args(args)
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("cannot run tpm2_{tool}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first: Vec<&str> = err
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(3)
                .collect();
            bail!("tpm2_{tool} failed ({}): {}", out.status, first.join(" | "));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Reads an NV index whole.
    pub fn nv_read(&self, index: u32) -> Result<Vec<u8>> {
        let file = self.path(&format!("nv-{index:08x}.bin"));
        self.tool("nvread", &[&format!("{index:#010x}"), "-o", &file])?;
        fs::read(&file).with_context(|| format!("cannot read {file}"))
    }

    /// Creates the RSA EK (template L-1, the certified one) and an RSA AK under it; returns
    /// the EK's and the AK's TPM2B_PUBLIC. Their contexts stay in the directory for the
    /// quote and the activation.
    pub fn create_keys(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let (ek_ctx, ek_pub) = (self.path("ek.ctx"), self.path("ek.pub"));
        self.tool("createek", &["-G", "rsa", "-c", &ek_ctx, "-u", &ek_pub])?;
        let (ak_ctx, ak_pub, ak_name) = (
            self.path("ak.ctx"),
            self.path("ak.pub"),
            self.path("ak.name"),
        );
        self.tool(
            "createak",
            &[
                "-C", &ek_ctx, "-c", &ak_ctx, "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u",
                &ak_pub, "-n", &ak_name,
            ],
        )?;
        // The AK is loaded through a policy session; its context is saved, and the
        // resource manager keeps the EK's as a saved context too.
        let ek = fs::read(&ek_pub).with_context(|| format!("cannot read {ek_pub}"))?;
        let ak = fs::read(&ak_pub).with_context(|| format!("cannot read {ak_pub}"))?;
        Ok((ek, ak))
    }

    /// Quotes `selection` with `nonce` (hex) as qualifying data.
    pub fn quote(&self, selection: &str, nonce: &str) -> Result<Quote> {
        let (msg, sig, pcrs) = (
            self.path("quote.msg"),
            self.path("quote.sig"),
            self.path("quote.pcrs"),
        );
        let out = self.tool(
            "quote",
            &[
                "-c",
                &self.path("ak.ctx"),
                "-l",
                selection,
                "-q",
                nonce,
                "-g",
                "sha256",
                "-m",
                &msg,
                "-s",
                &sig,
                "-o",
                &pcrs,
            ],
        )?;
        Ok(Quote {
            message: fs::read(&msg).with_context(|| format!("cannot read {msg}"))?,
            signature: fs::read(&sig).with_context(|| format!("cannot read {sig}"))?,
            pcrs: parse_quote_pcrs(&out)?,
        })
    }

    /// TPM2_ActivateCredential of `credential` (tpm2-tools' credential file) with the AK,
    /// authorized by the EK's policy (PolicySecret with the endorsement hierarchy); the
    /// 32-byte key it yields. The key's file is removed at once.
    pub fn activate(&self, credential: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (cred, session, key) = (
            self.path("credential.bin"),
            self.path("session.ctx"),
            self.path("activated.bin"),
        );
        fs::write(&cred, credential).with_context(|| format!("cannot write {cred}"))?;
        self.tool("startauthsession", &["--policy-session", "-S", &session])?;
        let result = self
            .tool("policysecret", &["-S", &session, "-c", "e"])
            .and_then(|_| {
                self.tool(
                    "activatecredential",
                    &[
                        "-c",
                        &self.path("ak.ctx"),
                        "-C",
                        &self.path("ek.ctx"),
                        "-i",
                        &cred,
                        "-o",
                        &key,
                        "-P",
                        &format!("session:{session}"),
                    ],
                )
            });
        let _ = self.tool("flushcontext", &[&session]);
        result?;
        let read = fs::read(&key);
        let _ = fs::remove_file(&key);
        let bytes = Zeroizing::new(read.with_context(|| format!("cannot read {key}"))?);
        if bytes.len() != 32 {
            bail!(
                "the activated credential is {} bytes, expected a 32-byte key",
                bytes.len()
            );
        }
        Ok(bytes)
    }
}

/// The PCR values in tpm2_quote's YAML output:
///
/// ```text
/// pcrs:
///   sha256:
///     0 : 0x3D45...
/// ```
pub fn parse_quote_pcrs(out: &str) -> Result<Vec<PcrValue>> {
    let mut pcrs = Vec::new();
    let mut in_pcrs = false;
    let mut bank: Option<String> = None;
    for line in out.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if indent == 0 {
            in_pcrs = text == "pcrs:";
            bank = None;
            continue;
        }
        if !in_pcrs {
            continue;
        }
        if let Some(name) = text.strip_suffix(':') {
            bank = match name {
                "sha1" | "sha256" | "sha384" | "sha512" => Some(name.to_string()),
                _ => None,
            };
            continue;
        }
        let Some(bank) = &bank else { continue };
        let Some((index, value)) = text.split_once(':') else {
            continue;
        };
        let index: u8 = index
            .trim()
            .parse()
            .with_context(|| format!("tpm2_quote printed a PCR line '{text}'"))?;
        let value = value.trim();
        let value = value
            .strip_prefix("0x")
            .or_else(|| value.strip_prefix("0X"))
            .unwrap_or(value)
            .to_ascii_lowercase();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("tpm2_quote printed PCR {index} as '{value}'");
        }
        pcrs.push(PcrValue {
            bank: bank.clone(),
            index,
            value,
        });
    }
    if pcrs.is_empty() {
        bail!("tpm2_quote printed no PCR values");
    }
    Ok(pcrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "quoted: ff544347801800220\nsignature:\n  alg: rsassa\n  sig: 00ab\npcrs:\n  sha256:\n    0 : 0x3D458CFE55CC03EA1F443F1562BEEC8DF51C75E14A9FCF9A7234A13F198E7969\n    9 : 0x0000000000000000000000000000000000000000000000000000000000000000\ncalcDigest: 00\n";

    #[test]
    fn quote_output_gives_the_pcr_values() {
        let pcrs = parse_quote_pcrs(OUT).unwrap();
        assert_eq!(pcrs.len(), 2);
        assert_eq!(pcrs[0].bank, "sha256");
        assert_eq!(pcrs[0].index, 0);
        assert_eq!(
            pcrs[0].value,
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
        );
        assert_eq!(pcrs[1].index, 9);
    }

    #[test]
    fn output_without_pcrs_or_with_a_bad_value_is_refused() {
        assert!(parse_quote_pcrs("quoted: 00\n").is_err());
        assert!(parse_quote_pcrs("pcrs:\n  sha256:\n    x : 0x00\n").is_err());
        assert!(parse_quote_pcrs("pcrs:\n  sha256:\n    1 : 0xzz\n").is_err());
        assert!(parse_quote_pcrs("pcrs:\n  sha256:\n    300 : 0x00\n").is_err());
    }
}
