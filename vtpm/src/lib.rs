//! TPM 2.0 engine bindings and the vTPM service.
#![cfg_attr(not(test), no_std)]
extern crate alloc;
