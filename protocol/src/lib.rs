//! Wire formats the SVSM speaks or reads.
//!
//! Everything here is plain data: `zerocopy` layouts with compile-time size and offset
//! checks, and parsers that turn untrusted bytes into typed values or typed errors. No
//! `unsafe`, no allocation, no panics on guest input.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod attest;
pub mod call;
pub mod calling_area;
pub mod core;
pub mod ek_evidence;
pub mod error;
pub mod ghcb;
pub mod guest_msg;
pub mod hv_doorbell;
pub mod igvm_params;
pub mod manifest;
pub mod secrets;
#[cfg(feature = "service-api")]
pub mod service_api;
pub mod state_store;
pub mod vmsa;
pub mod vtpm;

pub use call::{Call, SvsmResultCode};
pub use error::{Field, ParseError};
pub use manifest::Guid;

#[cfg(test)]
mod proptests;
