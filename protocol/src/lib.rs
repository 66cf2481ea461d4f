//! Wire formats the SVSM speaks or reads.
//!
//! Everything here is plain data: `zerocopy` layouts with compile-time size and offset
//! checks, and parsers that turn untrusted bytes into typed values or typed errors. No
//! `unsafe`, no allocation, no panics on guest input.
#![no_std]
#![forbid(unsafe_code)]
pub mod igvm_params;
