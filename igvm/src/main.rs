//! `svsm-igvm`: builds, measures and inspects the SVSM IGVM file.

use clap::Parser;

/// Builds, measures and inspects the SVSM IGVM file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
