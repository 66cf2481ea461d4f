//! Links the TPM 2.0 engine (libtpms 0.10) and the crypto library it uses (OpenSSL's
//! libcrypto), both as static archives, and records which ones.
//!
//! `cargo xtask setup` puts them in `target/engine/lib` (`scripts/xtask/src/engine.rs`):
//! Debian forky's libtpms.a, pinned, and libcrypto.a built from the `openssl-src` crate's
//! OpenSSL; `VTPM_LIB_DIR` overrides where
//! they are looked up. Only link directives are emitted, for the host and for
//! `x86_64-unknown-none` alike: the archives hold position-independent code, and the
//! bare-metal kernel supplies the C runtime they call into.
//!
//! The engine is part of the SVSM's launch measurement, so the crate embeds what it was
//! linked with (`VTPM_ENGINE`: the packages and .deb digests from the xtask's manifest,
//! and the SHA-256 of each archive as read here).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    println!("cargo:rerun-if-env-changed=VTPM_LIB_DIR");
    let dir = std::env::var_os("VTPM_LIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // vtpm/ sits in the workspace root; xtask unpacks into its target/.
            let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
            Path::new(&manifest).join("../target/engine/lib")
        });
    let mut engine = String::new();
    let manifest = dir.join("ENGINE");
    println!("cargo:rerun-if-changed={}", manifest.display());
    if let Ok(text) = std::fs::read_to_string(&manifest) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let _ = write!(engine, "{}; ", line.trim());
        }
    }
    for archive in ["libtpms.a", "libcrypto.a"] {
        let path = dir.join(archive);
        let Ok(bytes) = std::fs::read(&path) else {
            panic!(
                "{} not found: run `cargo xtask setup` (it fetches Debian forky's pinned \
                 libtpms-dev and builds OpenSSL into target/engine/lib), or point \
                 VTPM_LIB_DIR at a directory holding libtpms.a and libcrypto.a",
                path.display()
            );
        };
        println!("cargo:rerun-if-changed={}", path.display());
        let digest = Sha256::digest(&bytes);
        let _ = write!(engine, "{archive} sha256:");
        for b in digest {
            let _ = write!(engine, "{b:02x}");
        }
        engine.push_str("; ");
    }
    let engine = engine.trim_end_matches("; ");
    println!("cargo:rustc-env=VTPM_ENGINE={engine}");
    let dir = dir.canonicalize().unwrap_or(dir);
    println!("cargo:rustc-link-search=native={}", dir.display());
    // Not bundled into the rlib: the final link (test binary, daemon, kernel) takes them
    // from the search path, libtpms first because it calls into libcrypto.
    println!("cargo:rustc-link-lib=static:-bundle=tpms");
    println!("cargo:rustc-link-lib=static:-bundle=crypto");
}
