//! `svsm-agent`: the guest agent of the Linux-guest level's initramfs.
//!
//! It attests the guest to the verification service (API v1 of
//! `svsm_protocol::service_api`) over HTTPS and, only if the service releases the disk key,
//! opens the LUKS2 volume with `cryptsetup`, mounts it and reads the known file. The TPM
//! work is done with tpm2-tools through the kernel's resource manager:
//!
//! 1. `POST /v1/challenge`: a session, a nonce and the PCRs to quote;
//! 2. the NV endorsement evidence (`tpm2_nvread`), the RSA EK (`tpm2_createek`), an AK
//!    under it (`tpm2_createak`), a quote with the nonce (`tpm2_quote`), the event log;
//! 3. `POST /v1/attest`: a refusal names its reason, which the agent prints, and the
//!    volume stays locked; a release carries a credential that only this vTPM activates
//!    (`tpm2_activatecredential` with the EK's policy session) into the AES-256-GCM key
//!    that decrypts the secret;
//! 4. `cryptsetup open` with the secret on standard input, `mount`, read.
//!
//! Each step prints one `SVSM-LINUX-GUEST <check> <ok|fail> [detail]` line on standard
//! output (the serial console), the form of the level's /init. The exit status is 0 only
//! when the file was read.

mod attest;
mod disk;
mod tpm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Prefix of every result line (the Linux-guest level's format).
const PREFIX: &str = "SVSM-LINUX-GUEST";

#[derive(Debug, Parser)]
#[command(
    name = "svsm-agent",
    about = "Attest to the verification service and unlock the disk"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attest, then open, mount and read the LUKS2 volume with the released key.
    Unlock(UnlockArgs),
}

/// Where the service is, what to open.
#[derive(Debug, clap::Args)]
struct UnlockArgs {
    /// The service's base URL, e.g. `https://10.0.2.2:8443`.
    #[arg(long)]
    service: String,
    /// The PEM CA certificate that issued the service's TLS certificate.
    #[arg(long)]
    ca: PathBuf,
    /// The name the guest gives itself in the service's log.
    #[arg(long, default_value = "linux-guest")]
    guest: String,
    /// The LUKS2 block device.
    #[arg(long)]
    device: PathBuf,
    /// The device-mapper name of the opened volume.
    #[arg(long, default_value = "data")]
    name: String,
    /// Where to mount the opened volume.
    #[arg(long)]
    mount: PathBuf,
    /// The file to read, relative to the mount point.
    #[arg(long)]
    file: PathBuf,
    /// A scratch directory (tmpfs) for tpm2-tools' files.
    #[arg(long, default_value = "/tmp/svsm-agent")]
    workdir: PathBuf,
    /// The TCG event log.
    #[arg(
        long,
        default_value = "/sys/kernel/security/tpm0/binary_bios_measurements"
    )]
    event_log: PathBuf,
}

/// Prints one result line.
pub(crate) fn report(check: &str, ok: bool, detail: &str) {
    let status = if ok { "ok" } else { "fail" };
    // One line per check: the host parses the serial console line by line.
    let detail = detail.replace(['\n', '\r'], " ");
    println!("{PREFIX} {check} {status} {detail}");
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Unlock(args) => unlock(&args),
    }
}

/// The whole exchange; every failure has been reported when this returns.
fn unlock(args: &UnlockArgs) -> ExitCode {
    let secret = match attest::run(args) {
        Ok(secret) => secret,
        Err(()) => {
            // Refused or failed: the key never arrived, the volume stays locked.
            let locked = !disk::is_open(&args.name);
            report(
                "luks-locked",
                locked,
                if locked {
                    "no key was released; the volume is still locked"
                } else {
                    "the volume is open although no key was released"
                },
            );
            return ExitCode::FAILURE;
        }
    };
    match disk::open_and_read(args, &secret) {
        Ok(()) => ExitCode::SUCCESS,
        Err(()) => ExitCode::FAILURE,
    }
}
