//! Links the bare-metal kernel: the linker script, and the engine archives it hosts.
//!
//! Only the `x86_64-unknown-none` build of the `svsm` binary is affected; the host
//! builds of the library and of the placeholder binary link as usual.

use std::env;
use std::path::Path;

/// Where Debian's `libtpms-dev` and `libssl-dev` put their static archives.
const ARCHIVE_DIR: &str = "/usr/lib/x86_64-linux-gnu";

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
    for archive in ["libtpms.a", "libcrypto.a"] {
        let path = Path::new(ARCHIVE_DIR).join(archive);
        if !path.exists() {
            panic!(
                "{} is missing: install the Debian packages libtpms-dev and libssl-dev \
                 (cargo xtask setup does)",
                path.display()
            );
        }
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-link-arg-bins={}", path.display());
    }
}
