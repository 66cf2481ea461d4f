//! `vtpm-state-store`: keeps the sealed state of the SVSM kernel's vTPM in a host file.
//!
//! Listens on a Unix socket that QEMU connects the SVSM's COM3 to
//! (`-serial unix:PATH`), and answers the kernel's store channel from the file: the
//! kept state at boot, and every new state the vTPM commits, each made durable
//! (temporary file, fsync, rename, directory fsync) before the answer. It sees only
//! ciphertext. Connections are served one after another (one per boot).

use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use vtpm_daemon::state_file::StateFile;
use vtpm_daemon::store_helper::serve;

/// Keeps the SVSM kernel's sealed vTPM state in a file.
#[derive(Debug, Parser)]
struct Cli {
    /// The Unix socket to listen on (QEMU: `-serial unix:PATH`).
    #[arg(long)]
    socket: PathBuf,
    /// The file that holds the sealed state (created at the first commit).
    #[arg(long)]
    state: PathBuf,
    /// Move an existing state aside (PATH.rejected) before serving, so the kernel
    /// manufactures a new TPM, with a new identity: the operator's answer to a state
    /// the kernel refused.
    #[arg(long)]
    remanufacture: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.remanufacture && cli.state.exists() {
        let mut aside = cli.state.clone().into_os_string();
        aside.push(".rejected");
        std::fs::rename(&cli.state, &aside)
            .with_context(|| format!("cannot move {} aside", cli.state.display()))?;
        println!(
            "vtpm-state-store: {} moved to {} (--remanufacture): the next boot manufactures \
             a new TPM, with a new endorsement key",
            cli.state.display(),
            PathBuf::from(aside).display()
        );
    }
    std::fs::remove_file(&cli.socket).ok();
    let listener = UnixListener::bind(&cli.socket)
        .with_context(|| format!("cannot listen on {}", cli.socket.display()))?;
    println!(
        "vtpm-state-store: listening on {}, state in {}",
        cli.socket.display(),
        cli.state.display()
    );
    let mut store = StateFile::new(&cli.state);
    for stream in listener.incoming() {
        let stream = stream.context("accept failed")?;
        match serve(stream, &mut store) {
            Ok(served) => println!(
                "vtpm-state-store: connection ended: {} gets, {} puts, {} refused or failed",
                served.gets, served.puts, served.failures
            ),
            Err(e) => eprintln!("vtpm-state-store: connection failed: {e}"),
        }
    }
    Ok(())
}
