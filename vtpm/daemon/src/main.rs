//! `vtpm-daemon`: serves the guest view of the vTPM to host TPM clients.

use clap::Parser;

/// Serves the guest view of the vTPM to host TPM clients.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
