//! The SVSM: request loop, protocol handlers and the platform seam they run on.
//!
//! - [`platform`]: the [`Platform`](platform::Platform) trait, what the SVSM needs from
//!   SEV-SNP hardware (PVALIDATE, RMPADJUST, guest memory, VMSAs, the hypervisor, the
//!   PSP), implemented by the bare-metal kernel and by the emulated machine;
//! - [`address`]: guest addresses as allegations and the one place that checks them;
//! - [`requests`]: the request loop, dispatch, the core protocol and the extension
//!   point for the attestation and vTPM protocols;
//! - [`error`]: the kernel error type and its mapping to guest-visible result codes.
//!
//! The library is `no_std` with `alloc` and builds for the host and for
//! `x86_64-unknown-none`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod address;
pub mod arch;
pub mod boot_params;
pub mod cfmt;
pub mod error;
pub mod nesting;
pub mod pagetable;
pub mod platform;
pub mod posix_regex;
pub mod psp;
pub mod requests;
pub mod smp;
pub mod snp;
pub mod state_store;
