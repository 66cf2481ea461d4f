//! The core helper's xtask step: the PVALIDATE benchmark (coverage: `coverage.rs`).

use anyhow::{bail, Context, Result};

/// `cargo xtask bench`: the PVALIDATE benchmark, built in release mode.
pub fn bench() -> Result<()> {
    println!("xtask: == core: PVALIDATE benchmark ==");
    let status = super::cargo(&[
        "run",
        "--release",
        "--quiet",
        "-p",
        "svsm-tests",
        "--bin",
        "core-bench",
    ])
    .status()
    .context("cannot start the PVALIDATE benchmark")?;
    if !status.success() {
        bail!("the PVALIDATE benchmark failed ({status})");
    }
    Ok(())
}
