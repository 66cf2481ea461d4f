//! The emulated PSP (placeholder until the attestation work lands its model).
//!
//! The machine hands every SNP_GUEST_REQUEST to [`EmulatedPsp::guest_request`]; this
//! stand-in has no keys and answers [`PspError::Unavailable`].

use svsm::platform::{MessagePage, PspError};

/// The PSP of the emulated machine.
#[derive(Debug, Default)]
pub struct EmulatedPsp {}

impl EmulatedPsp {
    /// Handles one encrypted guest message page.
    pub fn guest_request(&self, _request: &MessagePage) -> Result<MessagePage, PspError> {
        Err(PspError::Unavailable)
    }
}
