//! The measured-boot check: the event log and the boot policy of `svsm-verifier`.
//!
//! PLACEHOLDER until `svsm_verifier::{eventlog, boot_policy}` land: the same API, with a
//! selection and no event check. Replaced by re-exports on merge.

use serde::{Deserialize, Serialize};

/// The measured-boot policy (placeholder: only the selection).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootPolicy {
    /// The bank.
    pub bank: String,
    /// The PCRs.
    pub pcrs: Vec<u8>,
}

impl BootPolicy {
    /// Parses the TOML form.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
    /// The TOML form.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| e.to_string())
    }
    /// The bank (TPM algorithm) and the PCRs to quote.
    pub fn pcr_selection(&self) -> (u16, Vec<u8>) {
        let alg = match self.bank.as_str() {
            "sha384" => svsm_verifier::tpm::ALG_SHA384,
            "sha512" => svsm_verifier::tpm::ALG_SHA512,
            _ => svsm_verifier::tpm::ALG_SHA256,
        };
        let mut p = self.pcrs.clone();
        p.sort_unstable();
        p.dedup();
        (alg, p)
    }
    /// Checks the log against the policy and the quoted PCRs.
    pub fn check(&self, _log: &EventLog, _quoted: &[(u8, Vec<u8>)]) -> Result<(), String> {
        Ok(())
    }
}

/// A parsed event log (placeholder).
#[derive(Debug, Clone)]
pub struct EventLog;

impl EventLog {
    /// Parses a log.
    pub fn parse(_bytes: &[u8]) -> Result<EventLog, String> {
        Ok(EventLog)
    }
}
