//! Host conformance and end-to-end suites.
//!
//! - [`driver`]: the guest-side SVSM driver the suites call the SVSM with (its own crate,
//!   `svsm-guest-driver`, since the vTPM daemon uses it too; re-exported here);
//! - [`invariants`]: the isolation invariants and state snapshots the suites check
//!   after every call.

pub use svsm_guest_driver as driver;
pub mod fixtures;
pub mod invariants;
