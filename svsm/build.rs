//! Links the bare-metal kernel at its fixed address with the linker script.
//!
//! Only the `x86_64-unknown-none` build of the `svsm` binary is affected; the host
//! builds of the library and of the placeholder binary link as usual. The engine
//! archives (libtpms.a, libcrypto.a) come in through the `vtpm` crate's link directives.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=svsm.ld");
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-none") {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = Path::new(&dir).join("svsm.ld");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rustc-link-arg-bins=--gc-sections");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    println!("cargo:rustc-link-arg-bins=--no-pie");
}
