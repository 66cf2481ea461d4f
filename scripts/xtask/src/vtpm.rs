//! The vTPM's steps: its kernel-target build check and its benchmark.
//!
//! The vTPM's tests (engine, service, daemon, tpm2-tools end to end) run with the
//! workspace's host tests; this module adds what those cannot show.

use anyhow::Result;

use crate::{cargo, step};

/// Test steps: the vTPM crate (engine bindings, service) builds for the kernel target.
pub fn test() -> Result<()> {
    step(
        "vtpm for x86_64-unknown-none",
        cargo(&["build", "-p", "vtpm", "--target", "x86_64-unknown-none"]),
    )
}

/// The per-command latency benchmark: engine, SVSM path, swtpm; and OpenSSL's raw sign.
pub fn bench() -> Result<()> {
    step(
        "vTPM latency (engine, SVSM path, swtpm)",
        cargo(&[
            "run",
            // Release with fat LTO and one codegen unit (the workspace's Cargo.toml).
            "--profile",
            "bench-release",
            "-q",
            "-p",
            "vtpm-daemon",
            "--bin",
            "vtpm-bench",
        ]),
    )
}
