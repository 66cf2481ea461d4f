//! Attestation protocol (1): placeholder until the attestation service lands.
//!
//! The attestation service plugs into the request path as a
//! [`ProtocolService`](super::ProtocolService) given to
//! [`Services::with_attestation`](super::Services::with_attestation). Until then no
//! service exists, QUERY_PROTOCOL reports protocol 1 as unsupported and its calls get
//! `UNSUPPORTED_PROTOCOL`.

use alloc::boxed::Box;

use super::ProtocolService;
use crate::platform::Platform;

/// The attestation service, if this build has one (not yet).
pub fn service<P: Platform>() -> Option<Box<dyn ProtocolService<P>>> {
    None
}
