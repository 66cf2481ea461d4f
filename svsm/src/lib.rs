//! The SVSM: request loop, protocol handlers and the platform seam they run on.
#![cfg_attr(not(test), no_std)]

pub mod arch;
pub mod boot_params;
