//! `cargo xtask coverage`: branch coverage of the request loop, the protocol handlers
//! and the vTPM service, measured with cargo-llvm-cov on the pinned nightly.
//!
//! Branch coverage needs rustc's unstable `-Z coverage-options=branch`, so it runs on
//! [`fuzz::NIGHTLY`](crate::fuzz::NIGHTLY) with that toolchain's own llvm-tools-preview
//! (profiles written by one LLVM cannot be merged by another's llvm-profdata); both, and
//! cargo-llvm-cov, are installed when missing. It prints each file's regions, lines and
//! branches, and fails if a file's branch coverage is below [`THRESHOLD`].

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::fuzz;

/// The files reported and gated: the request loop, the handlers, the vTPM service.
const FILES: [&str; 5] = [
    "svsm/src/requests/mod.rs",
    "svsm/src/requests/core.rs",
    "svsm/src/requests/attest.rs",
    "svsm/src/requests/vtpm.rs",
    "vtpm/src/service.rs",
];
/// The packages whose tests exercise them.
const PACKAGES: [&str; 4] = ["svsm", "svsm-emulated", "svsm-tests", "vtpm"];
/// The branch coverage each file must reach.
const THRESHOLD: f64 = 95.0;

/// `cargo xtask coverage`.
pub fn coverage() -> Result<()> {
    fuzz::ensure_coverage_tools()?;
    let bin = fuzz::llvm_tools_dir(fuzz::NIGHTLY)
        .with_context(|| format!("{} has no llvm-tools-preview", fuzz::NIGHTLY))?;
    let mut cmd = Command::new("rustup");
    cmd.args(["run", fuzz::NIGHTLY, "cargo", "llvm-cov", "--branch"]);
    for var in ["RUSTC", "RUSTDOC", "CARGO", "RUSTUP_TOOLCHAIN"] {
        cmd.env_remove(var);
    }
    cmd.env("LLVM_COV", bin.join("llvm-cov"))
        .env("LLVM_PROFDATA", bin.join("llvm-profdata"));
    for p in PACKAGES {
        cmd.args(["-p", p]);
    }
    cmd.arg("--summary-only");
    println!(
        "xtask: == coverage: branches, regions and lines ({}, -Z coverage-options=branch) ==",
        fuzz::NIGHTLY
    );
    let out = cmd.output().context("cannot run cargo llvm-cov")?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("cargo llvm-cov failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (table, failed) = report(&text);
    for line in table {
        println!("{line}");
    }
    if !failed.is_empty() {
        bail!("branch coverage below {THRESHOLD}%: {}", failed.join(", "));
    }
    Ok(())
}

/// The rows of `FILES` in cargo-llvm-cov's summary (header first) and the files below
/// the threshold.
fn report(summary: &str) -> (Vec<String>, Vec<String>) {
    let mut table = Vec::new();
    let mut failed = Vec::new();
    for line in summary.lines() {
        if line.starts_with("Filename") {
            table.push(line.to_string());
            continue;
        }
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(file) = FILES
            .iter()
            .find(|f| name.ends_with(*f) || f.ends_with(name))
        else {
            continue;
        };
        table.push(line.to_string());
        // Columns: name, regions, missed, cover%, functions, missed, executed%, lines,
        // missed, cover%, branches, missed, cover%.
        let cols: Vec<&str> = line.split_whitespace().collect();
        let branches = cols
            .get(12)
            .and_then(|c| c.trim_end_matches('%').parse::<f64>().ok());
        // "-": the file has no branches at all.
        match branches {
            Some(p) if p < THRESHOLD => failed.push(format!("{file}: {p:.2}%")),
            _ => {}
        }
    }
    for file in FILES {
        let listed = table.iter().any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|n| n.ends_with(file) || file.ends_with(n))
        });
        if !listed {
            failed.push(format!("{file}: not in the report"));
        }
    }
    (table, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_read_per_file_and_gated_on_branches() {
        let summary = "\
Filename                      Regions    Missed Regions     Cover   Functions  Missed Functions  Executed       Lines      Missed Lines     Cover    Branches   Missed Branches     Cover
svsm/src/requests/mod.rs          300                 3    99.00%          40                 0   100.00%         500                 2    99.60%         100                 2    98.00%
svsm/src/requests/core.rs         300                 3    99.00%          40                 0   100.00%         500                 2    99.60%         100                10    90.00%
svsm/src/requests/attest.rs       300                 3    99.00%          40                 0   100.00%         500                 2    99.60%         100                 5    95.00%
svsm/src/requests/vtpm.rs         300                 3    99.00%          40                 0   100.00%         500                 2    99.60%           0                 0         -
svsm/src/other.rs                 300                 3    99.00%          40                 0   100.00%         500                 2    99.60%         100                90    10.00%
";
        let (table, failed) = report(summary);
        assert_eq!(table.len(), 5);
        assert_eq!(
            failed,
            [
                "svsm/src/requests/core.rs: 90.00%",
                "vtpm/src/service.rs: not in the report",
            ]
        );
    }
}
