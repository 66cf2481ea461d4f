//! vTPM protocol (2): placeholder until the vTPM service lands.
//!
//! The vTPM service plugs into the request path as a
//! [`ProtocolService`](super::ProtocolService) given to
//! [`Services::with_vtpm`](super::Services::with_vtpm). Until then no service exists,
//! QUERY_PROTOCOL reports protocol 2 as unsupported and its calls get
//! `UNSUPPORTED_PROTOCOL`.

use alloc::boxed::Box;

use super::ProtocolService;
use crate::platform::Platform;

/// The vTPM service, if this build has one (not yet).
pub fn service<P: Platform>() -> Option<Box<dyn ProtocolService<P>>> {
    None
}
