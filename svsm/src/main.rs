//! The SVSM kernel: the bare-metal binary for `x86_64-unknown-none`.
//!
//! On the bare-metal target this is the kernel proper (see [`kernel`]): QEMU boots it
//! through the PVH entry, and the SNP launch enters it the same way. Built for the host
//! (so `cargo build --workspace` stays one command), it only says what it is.
#![cfg_attr(target_os = "none", no_std, no_main)]
// The C runtime implements `strlen` and friends in Rust: keep LLVM from turning those
// loops back into calls to themselves.
#![cfg_attr(target_os = "none", no_builtins)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod kernel;

#[cfg(not(target_os = "none"))]
fn main() {
    println!(
        "svsm: this is the bare-metal SVSM kernel; build it for x86_64-unknown-none \
         (`cargo xtask run` builds and boots it in QEMU)"
    );
}
