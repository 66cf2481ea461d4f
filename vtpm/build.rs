//! Links the TPM 2.0 engine (libtpms) and the crypto library it uses (OpenSSL's
//! libcrypto), both as static archives.
//!
//! Only link directives are emitted, for the host and for `x86_64-unknown-none` alike:
//! the archives hold position-independent code, and the bare-metal kernel supplies the
//! C runtime they call into. `VTPM_LIB_DIR` overrides where the archives are looked up.

use std::path::Path;

const DEFAULT_LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";

fn main() {
    println!("cargo:rerun-if-env-changed=VTPM_LIB_DIR");
    let dir = std::env::var("VTPM_LIB_DIR").unwrap_or_else(|_| DEFAULT_LIB_DIR.to_string());
    for archive in ["libtpms.a", "libcrypto.a"] {
        let path = Path::new(&dir).join(archive);
        if !path.exists() {
            panic!(
                "{} not found: install the Debian packages libtpms-dev and libssl-dev \
                 (`cargo xtask setup`), or point VTPM_LIB_DIR at a directory holding \
                 libtpms.a and libcrypto.a",
                path.display()
            );
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-link-search=native={dir}");
    // Not bundled into the rlib: the final link (test binary, daemon, kernel) takes them
    // from the search path, libtpms first because it calls into libcrypto.
    println!("cargo:rustc-link-lib=static:-bundle=tpms");
    println!("cargo:rustc-link-lib=static:-bundle=crypto");
}
