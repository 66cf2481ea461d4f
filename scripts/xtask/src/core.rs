//! The core helper's xtask steps: the PVALIDATE benchmark and handler coverage.
//!
//! `cargo xtask coverage` measures the request handlers with cargo-llvm-cov. Branch
//! coverage needs rustc's unstable `-Z coverage-options=branch`, so it runs on a nightly
//! toolchain when one is installed (with the stable toolchain's llvm-tools if nightly
//! has none; both are LLVM 22 here); otherwise it measures region and line coverage on
//! stable and says so. It fails if measured branch coverage of `requests/core.rs` or
//! `requests/mod.rs` is below 95%.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The handler files whose coverage is reported and gated.
const HANDLERS: [&str; 2] = ["src/requests/core.rs", "src/requests/mod.rs"];
/// The packages whose tests exercise the handlers.
const PACKAGES: [&str; 3] = ["svsm", "svsm-emulated", "svsm-tests"];
/// The coverage the handlers must reach.
const THRESHOLD: f64 = 95.0;

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

fn has_llvm_cov() -> bool {
    Command::new("cargo")
        .args(["llvm-cov", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The llvm-tools directory of a toolchain, if it has llvm-profdata.
fn llvm_tools(toolchain: &str) -> Option<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let host = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .output()
        .ok()?;
    let host = String::from_utf8(host.stdout).ok()?;
    let triple = host
        .lines()
        .find_map(|l| l.strip_prefix("host: "))?
        .to_string();
    let bin = sysroot.join("lib/rustlib").join(triple).join("bin");
    bin.join("llvm-profdata").exists().then_some(bin)
}

/// `cargo xtask coverage`.
pub fn coverage() -> Result<()> {
    if !has_llvm_cov() {
        println!("xtask: installing cargo-llvm-cov from crates.io");
        let status = Command::new("cargo")
            .args(["install", "cargo-llvm-cov", "--locked"])
            .status()
            .context("cannot run cargo install")?;
        if !status.success() {
            bail!("cannot install cargo-llvm-cov: run `cargo install cargo-llvm-cov --locked`");
        }
    }
    let branch = has_nightly();
    let mut cmd = Command::new("cargo");
    if branch {
        cmd.arg("+nightly");
        if llvm_tools("nightly").is_none() {
            let bin = llvm_tools("stable").context(
                "no llvm-tools for nightly or stable: run `rustup component add llvm-tools`",
            )?;
            cmd.env("LLVM_COV", bin.join("llvm-cov"));
            cmd.env("LLVM_PROFDATA", bin.join("llvm-profdata"));
        }
        cmd.args(["llvm-cov", "--branch"]);
    } else {
        cmd.arg("llvm-cov");
    }
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    cmd.arg("--summary-only");
    println!(
        "xtask: == core: handler coverage ({}) ==",
        if branch {
            "branch, region and line coverage; nightly rustc with -Z coverage-options=branch"
        } else {
            "region and line coverage on stable; branch coverage needs a nightly toolchain"
        }
    );
    let out = cmd.output().context("cannot run cargo llvm-cov")?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("cargo llvm-cov failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut header = None;
    let mut failed = Vec::new();
    for line in text.lines() {
        if line.starts_with("Filename") {
            header = Some(line.to_string());
        }
        if let Some(file) = HANDLERS.iter().find(|f| line.starts_with(**f)) {
            if let Some(h) = header.take() {
                println!("{h}");
            }
            println!("{line}");
            // Columns: regions, missed, cover%, functions, missed, executed%, lines,
            // missed, cover%, branches, missed, cover%.
            let cols: Vec<&str> = line.split_whitespace().collect();
            let pct = |i: usize| {
                cols.get(i)
                    .and_then(|c| c.trim_end_matches('%').parse::<f64>().ok())
            };
            let gated = if branch { pct(12) } else { pct(3) };
            if let Some(p) = gated {
                if p < THRESHOLD {
                    failed.push(format!("{file}: {p:.2}%"));
                }
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} coverage below {THRESHOLD}%: {}",
            if branch { "branch" } else { "region" },
            failed.join(", ")
        );
    }
    Ok(())
}
