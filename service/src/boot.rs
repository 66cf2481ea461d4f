//! The measured-boot check: the TCG event log parser and the measured-boot policy of
//! `svsm-verifier` (`svsm_verifier::{eventlog, boot_policy}`), re-exported for the
//! service's policy and pipeline.

pub use svsm_verifier::boot_policy::{BootPolicy, BootPolicyError};
pub use svsm_verifier::eventlog::EventLog;
