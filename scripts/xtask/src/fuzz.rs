//! Coverage-guided fuzzing (`fuzz/`, cargo-fuzz and libFuzzer) and the tools it and
//! `cargo xtask coverage` need.
//!
//! - `cargo xtask fuzz [TARGET] [--time SECONDS]` builds the targets with AddressSanitizer
//!   and runs each (or one) for the given time on a working corpus under
//!   `target/fuzz-corpus/`, seeded from `fuzz/corpus/`; a crash leaves its input under
//!   `target/fuzz-artifacts/` and fails the command.
//! - `cargo xtask test` calls [`ci`]: every target replays its committed corpus (which is
//!   deterministic) and then runs a short timed pass; any crash or timeout fails.
//! - [`ensure_fuzz_tools`] and [`ensure_coverage_tools`] install what they need on a fresh machine: the nightly pinned by
//!   date in `fuzz/rust-toolchain.toml` with its own llvm-tools-preview (coverage data
//!   from a nightly cannot be read with another toolchain's llvm-profdata: "raw profile
//!   version mismatch"), and cargo-fuzz and cargo-llvm-cov at pinned versions
//!   (`cargo install --locked`).
//!
//! LeakSanitizer reports only what `fuzz/lsan.supp` does not list: the engine's and
//! OpenSSL's global allocations (each line says which).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The nightly toolchain the fuzz targets and branch coverage use (also in
/// `fuzz/rust-toolchain.toml`).
pub const NIGHTLY: &str = "nightly-2026-05-19";
/// cargo-fuzz, installed with `cargo install --locked`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// cargo-llvm-cov, installed with `cargo install --locked`.
const CARGO_LLVM_COV_VERSION: &str = "0.9.1";

/// Every fuzz target, in the order `ci` runs them.
pub const TARGETS: [&str; 7] = [
    "request_loop",
    "vtpm_transport",
    "vtpm_engine",
    "verifier",
    "service_api",
    "protocol",
    "igvm_inputs",
];

/// Targets whose input is a structured sequence (`arbitrary`): libFuzzer's default of
/// growing the input length slowly keeps them to two or three steps for a long time, so
/// they start at full length.
const STRUCTURED: [&str; 3] = ["request_loop", "vtpm_transport", "vtpm_engine"];

/// Seconds of the timed pass per target in `cargo xtask test`.
const CI_SECONDS: u64 = 15;

/// A command with the toolchain environment of the cargo that runs xtask removed, so
/// rustup picks the toolchain `toolchain` names.
fn rustup(toolchain: &str, program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain, program]);
    for var in [
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(name: &str, cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{name}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

/// What fuzzing needs: the pinned nightly and cargo-fuzz.
pub fn ensure_fuzz_tools() -> Result<()> {
    ensure_nightly()?;
    ensure_cargo_tool("cargo-fuzz", CARGO_FUZZ_VERSION)
}

/// What coverage needs: the pinned nightly with its llvm-tools, and cargo-llvm-cov.
pub fn ensure_coverage_tools() -> Result<()> {
    ensure_nightly()?;
    ensure_cargo_tool("cargo-llvm-cov", CARGO_LLVM_COV_VERSION)
}

/// The pinned nightly with its own llvm-tools-preview.
fn ensure_nightly() -> Result<()> {
    let has_llvm_tools = llvm_tools_dir(NIGHTLY).is_some();
    if !has_llvm_tools {
        println!("xtask: installing the {NIGHTLY} toolchain with llvm-tools-preview");
        run(
            "rustup toolchain install",
            Command::new("rustup").args([
                "toolchain",
                "install",
                NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                "llvm-tools-preview",
            ]),
        )?;
    }
    Ok(())
}

/// `tool` (a cargo subcommand) at `version`, installed with `cargo install --locked`.
fn ensure_cargo_tool(tool: &str, version: &str) -> Result<()> {
    let subcommand = tool.trim_start_matches("cargo-");
    let installed = Command::new("cargo")
        .args([subcommand, "--version"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version));
    if !installed {
        println!("xtask: installing {tool} {version} from crates.io");
        run(
            "cargo install",
            Command::new("cargo").args(["install", "--locked", tool, "--version", version]),
        )?;
    }
    Ok(())
}

/// The llvm-tools directory (llvm-profdata, llvm-cov) of `toolchain`, if installed.
pub fn llvm_tools_dir(toolchain: &str) -> Option<PathBuf> {
    let sysroot = rustup(toolchain, "rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let sysroot = PathBuf::from(String::from_utf8(sysroot.stdout).ok()?.trim());
    let bin = sysroot
        .join("lib/rustlib")
        .join(host_triple(toolchain)?)
        .join("bin");
    bin.join("llvm-profdata").exists().then_some(bin)
}

fn host_triple(toolchain: &str) -> Option<String> {
    let out = rustup(toolchain, "rustc").arg("-vV").output().ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
}

/// Where the built target binaries are.
fn binary(target: &str) -> PathBuf {
    PathBuf::from("fuzz/target/x86_64-unknown-linux-gnu/release").join(target)
}

/// Builds every target (`sanitizer`: "address" or "none").
fn build(sanitizer: &str) -> Result<()> {
    println!("xtask: == fuzz: build ({sanitizer} sanitizer) ==");
    run(
        "fuzz build",
        rustup(NIGHTLY, "cargo").current_dir("fuzz").args([
            "fuzz",
            "build",
            "-O",
            "--debug-assertions",
            "-s",
            sanitizer,
        ]),
    )
}

/// Runs `target` over `corpora` with extra libFuzzer `args`; fails on a crash.
fn libfuzzer(target: &str, corpora: &[&Path], args: &[String]) -> Result<()> {
    let artifacts = PathBuf::from("target/fuzz-artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let suppressions = std::fs::canonicalize("fuzz/lsan.supp")?;
    let mut cmd = Command::new(binary(target));
    cmd.env(
        "LSAN_OPTIONS",
        format!(
            "suppressions={}:print_suppressions=0",
            suppressions.display()
        ),
    )
    .arg(format!("-artifact_prefix={}/", artifacts.display()))
    .args(["-timeout=60", "-rss_limit_mb=4096"])
    .arg(format!("-max_len={}", max_len(target)))
    .args(STRUCTURED.contains(&target).then_some("-len_control=0"))
    .args(args)
    .args(corpora);
    run(&format!("fuzz target {target}"), &mut cmd).with_context(|| {
        format!(
            "{target}: a crash, leak or timeout; its input is under {} (replay: {} INPUT)",
            artifacts.display(),
            binary(target).display()
        )
    })
}

/// The longest input libFuzzer gives `target`: 8 KiB, except the vTPM targets, whose seeds
/// include whole recorded sessions (`vtpm-daemon --trace`: a tpm2-tools session, a Linux
/// guest's boot), and the service's API, whose seed is a whole attestation request (event
/// log included), which a shorter limit would cut.
fn max_len(target: &str) -> usize {
    match target {
        "vtpm_engine" | "vtpm_transport" => 256 * 1024,
        "service_api" => 64 * 1024,
        _ => 8192,
    }
}

fn seeds(target: &str) -> PathBuf {
    PathBuf::from("fuzz/corpus").join(target)
}

/// `cargo xtask fuzz [TARGET] [--time SECONDS]`.
pub fn fuzz(target: Option<&str>, time: Duration) -> Result<()> {
    ensure_fuzz_tools()?;
    let targets: Vec<&str> = match target {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target {t}; the targets: {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    build("address")?;
    for t in targets {
        let work = PathBuf::from("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&work)?;
        let seeds = seeds(t);
        std::fs::create_dir_all(&seeds)?;
        println!("xtask: == fuzz: {t} for {} s ==", time.as_secs());
        libfuzzer(
            t,
            &[&work, &seeds],
            &[
                format!("-max_total_time={}", time.as_secs()),
                "-print_final_stats=1".into(),
            ],
        )?;
    }
    Ok(())
}

/// svsm-igvm's target on the real inputs this run already has, too large to commit as
/// seeds: Debian's OVMF images (fetched for the IGVM tests) and the IGVM files
/// `cargo xtask test` built (mode byte 1: firmware, 2: IGVM file, as
/// `fuzz/seeds/make_seeds.py` writes them). Each is run once, whole.
fn replay_real_artifacts() -> Result<()> {
    let dir = PathBuf::from("target/fuzz-real/igvm_inputs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut inputs = Vec::new();
    for (source, mode) in [
        ("target/firmware/forky/OVMF.fd", 1u8),
        ("target/firmware/trixie/OVMF.fd", 1),
        ("target/firmware/bookworm/OVMF.fd", 1),
        ("target/svsm.igvm", 2),
        ("target/svsm-ovmf.igvm", 2),
    ] {
        let Ok(bytes) = std::fs::read(source) else {
            continue;
        };
        let input = dir.join(source.replace('/', "_"));
        let mut data = vec![mode];
        data.extend_from_slice(&bytes);
        std::fs::write(&input, data)?;
        inputs.push(input);
    }
    if inputs.is_empty() {
        return Ok(());
    }
    println!(
        "xtask: == fuzz: igvm_inputs: {} real OVMF images and IGVM files, once each ==",
        inputs.len()
    );
    let mut cmd = Command::new(binary("igvm_inputs"));
    cmd.args(&inputs);
    run("fuzz target igvm_inputs on the real artifacts", &mut cmd)
}

/// `cargo xtask test`'s fuzz step: replay every committed corpus, then a short timed
/// pass of each target on a scratch corpus.
pub fn ci() -> Result<()> {
    ensure_fuzz_tools()?;
    build("none")?;
    replay_real_artifacts()?;
    for t in TARGETS {
        let seeds = seeds(t);
        std::fs::create_dir_all(&seeds)?;
        println!("xtask: == fuzz: {t}: replay fuzz/corpus/{t} ==");
        libfuzzer(t, &[&seeds], &["-runs=0".into()])?;
        let scratch = PathBuf::from("target/fuzz-ci").join(t);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        println!("xtask: == fuzz: {t}: {CI_SECONDS} s ==");
        libfuzzer(
            t,
            &[&scratch, &seeds],
            &[
                format!("-max_total_time={CI_SECONDS}"),
                "-print_final_stats=1".into(),
            ],
        )?;
    }
    Ok(())
}
