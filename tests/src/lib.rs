//! Host conformance and end-to-end suites; a guest-side SVSM driver.
//!
//! - [`driver`]: a guest that calls the SVSM the way Linux and OVMF do (reusable: the
//!   vTPM daemon sends its commands through it);
//! - [`invariants`]: the isolation invariants and state snapshots the suites check
//!   after every call.

pub mod driver;
pub mod fixtures;
pub mod invariants;
