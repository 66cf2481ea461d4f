//! `cargo xtask`: the single entry point for building, testing and running the SVSM.
//!
//! Every subcommand first makes sure the machine has what it needs (`setup`): on a
//! Debian machine as root it installs missing packages itself; elsewhere it stops and
//! says exactly what to install.

mod attest;
mod core;
mod coverage;
mod debian;
mod engine;
mod forky;
mod fuzz;
mod igvm;
mod kernel;
mod kernel_state;
mod linux;
mod luks;
mod measured_boot;
mod service;
mod setup;
mod snp;
mod vtpm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// Build, test and run the SVSM.
#[derive(Debug, Parser)]
#[command(about)]
struct Cli {
    /// Build with the newest libtpms 0.10.x / OpenSSL 3.x that Debian forky offers
    /// instead of the pinned engine (scripts/xtask/src/engine.rs), and print the new
    /// digests. The engine is part of the launch measurement: never the default.
    #[arg(long, global = true)]
    allow_engine_drift: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build everything and run the SVSM, serving its vTPM to host TPM clients.
    Run {
        /// Instead, boot a Linux guest in QEMU whose TPM is this vTPM (SVSM path).
        #[arg(long)]
        linux_guest: bool,
        /// Launch the IGVM file with a Linux guest on an SEV-SNP host instead
        /// (scripts/snp/launch.sh; arguments after `--` go to the script).
        #[arg(long)]
        snp: bool,
        /// Arguments for scripts/snp/launch.sh.
        #[arg(last = true)]
        launch_args: Vec<String>,
    },
    /// Run every test level this machine supports.
    Test {
        /// Only one level: `kernel` (the kernel's lint, self-tests, fatal paths and
        /// tpm2-tools in QEMU), `kernel-state` (its vTPM keeps its state across
        /// reboots), `service` (the verification service on SQLite and PostgreSQL, its
        /// load test), `linux-guest` (the Linux guest, with its secret-release flow) or
        /// `luks` (only that flow: provisioning, the service, unlock, refusals,
        /// integrity).
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(ONLY_LEVELS))]
        only: Option<String>,
    },
    /// Run the benchmarks and print their figures (not a pass/fail gate).
    Bench,
    /// Only install what this machine lacks.
    Setup,
    /// Branch coverage of the request loop, the handlers and the vTPM service.
    Coverage,
    /// Run the fuzz targets (all, or one) for a while each.
    Fuzz {
        /// One target (request_loop, vtpm_transport, vtpm_engine, verifier, service_api,
        /// protocol, igvm_inputs); all of them if absent.
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Only what `cargo xtask test` runs: replay every corpus, 15 s per target.
        #[arg(long, conflicts_with = "target")]
        ci: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.allow_engine_drift {
        engine::allow_drift();
    }
    let root = workspace_root();
    std::env::set_current_dir(&root)
        .with_context(|| format!("cannot enter the workspace root {}", root.display()))?;
    match cli.command {
        Cmd::Setup => setup::ensure(),
        Cmd::Test { only: Some(level) } => setup::ensure().and_then(|()| match level.as_str() {
            "kernel" => kernel::clippy()
                .and_then(|()| kernel::test())
                .and_then(|()| kernel::test_tpm2_tools()),
            "kernel-state" => kernel_state::test_persistence(),
            "service" => service::test(),
            "linux-guest" => linux::test_level(false),
            "luks" => linux::test_level(true),
            other => bail!(
                "no test level {other:?}; --only takes one of: {}",
                ONLY_LEVELS.join(", ")
            ),
        }),
        Cmd::Test { only: None } => test(),
        Cmd::Run {
            snp: true,
            launch_args,
            ..
        } => snp::run(&launch_args, || {
            setup::ensure()?;
            step("build", cargo(&["build", "--workspace", "--release"]))?;
            igvm::package()
        }),
        Cmd::Run {
            linux_guest: true, ..
        } => setup::ensure().and_then(|()| linux::run_interactive()),
        Cmd::Run { .. } => run(),
        Cmd::Bench => bench(),
        Cmd::Coverage => coverage::coverage(),
        Cmd::Fuzz { ci: true, .. } => fuzz::ci(),
        Cmd::Fuzz { target, time, .. } => {
            fuzz::fuzz(target.as_deref(), std::time::Duration::from_secs(time))
        }
    }
}

/// The levels `cargo xtask test --only` runs alone.
const ONLY_LEVELS: [&str; 5] = ["kernel", "kernel-state", "service", "linux-guest", "luks"];

/// The workspace root: two levels above this crate's manifest.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn test() -> Result<()> {
    setup::ensure()?;
    step("format", cargo(&["fmt", "--all", "--check"]))?;
    step(
        "lint",
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    igvm::prepare_tests()?;
    // The service's suites need PostgreSQL: its own level.
    step(
        "host tests",
        cargo(&["test", "--workspace", "--exclude", "svsm-service"]),
    )?;
    service::test()?;
    vtpm::test()?;
    println!("xtask: == kernel (QEMU) ==");
    kernel::clippy()?;
    kernel::test()?;
    kernel::test_tpm2_tools()?;
    kernel_state::test_persistence()?;
    igvm::package()?;
    attest::cli_checks()?;
    // After the IGVM files exist: the fuzz step also replays them.
    fuzz::ci()?;
    println!("xtask: == linux guest ==");
    linux::test()?;
    println!("xtask: every test level passed");
    Ok(())
}

fn run() -> Result<()> {
    setup::ensure()?;
    step("build", cargo(&["build", "--workspace", "--release"]))?;
    igvm::package()?;
    kernel::run()
}

fn bench() -> Result<()> {
    setup::ensure()?;
    crate::core::bench()?;
    vtpm::bench()?;
    service::bench()?;
    Ok(())
}

/// A `cargo` command with the given arguments, using the cargo that runs xtask.
fn cargo(args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args);
    cmd
}

/// Runs one named step and fails with its name if it fails.
fn step(name: &str, mut cmd: Command) -> Result<()> {
    println!("xtask: == {name} ==");
    run_command(&mut cmd, name)
}

/// Runs `cmd` and fails, naming `what`, unless it succeeds.
fn run_command(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
