//! `vtpm-daemon`: serves the guest view of the vTPM to host TPM clients.
//!
//! A backend (where the vTPM runs) is chosen with `--backend`; front ends (how clients
//! reach it) listen on loopback by default. New backends add a [`BackendKind`] variant
//! and a line in [`open_backend`]; new front ends start next to the simulator interface
//! in [`main`].

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use sha2::{Digest, Sha256};
use svsm_emulated::psp::LaunchInfo;
use vtpm_daemon::engine_backend::EngineBackend;
use vtpm_daemon::mssim::{self, MssimServer, SharedBackend};
use vtpm_daemon::svsm_backend::SvsmBackend;
use vtpm_daemon::TpmBackend;

/// Where the vTPM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// The SVSM on the emulated SEV-SNP machine: every command travels guest driver,
    /// calling area, SVSM_VTPM_CMD, vTPM service, engine.
    Svsm,
    /// The vTPM service and engine in this process, without the SVSM path.
    Engine,
    /// The vTPM inside the bare-metal SVSM kernel, through QEMU's COM2 socket (`--serial`).
    Serial,
}

/// Serves the guest view of the vTPM to host TPM clients.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Where the vTPM runs.
    #[arg(long, value_enum, default_value_t = BackendKind::Svsm)]
    backend: BackendKind,
    /// Address to listen on (loopback; any other address needs --allow-remote).
    #[arg(long, default_value = "127.0.0.1")]
    listen: IpAddr,
    /// Listen on an address other than loopback (or a swtpm TCP endpoint off loopback):
    /// anyone who reaches it can send TPM commands and power-cycle the vTPM.
    #[arg(long)]
    allow_remote: bool,
    /// Clients served at once on each simulator port; more are closed.
    #[arg(long, default_value_t = 16)]
    max_clients: usize,
    /// Seconds a simulator client may stay silent before it is closed.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// TCP port of the TPM simulator's command channel (0: any free port).
    #[arg(long, default_value_t = 2321)]
    port: u16,
    /// TCP port of the TPM simulator's platform channel [default: command port + 1,
    /// where the mssim TCTI looks for it].
    #[arg(long)]
    platform_port: Option<u16>,
    /// QEMU's Unix socket for the kernel's COM2 (with `--backend serial`).
    #[arg(long, default_value = "target/svsm-com2.sock")]
    serial: std::path::PathBuf,
    /// Serve swtpm's socket interface instead, with its control channel here
    /// (unix:PATH or tcp:HOST:PORT), e.g. for QEMU's `-tpmdev emulator`.
    #[arg(long, value_name = "ENDPOINT")]
    swtpm_ctrl: Option<vtpm_daemon::swtpm::Endpoint>,
    /// Also listen for swtpm data-channel clients here (QEMU brings its own).
    #[arg(long, value_name = "ENDPOINT", requires = "swtpm_ctrl")]
    swtpm_data: Option<vtpm_daemon::swtpm::Endpoint>,
    /// Keep the vTPM's state between runs, sealed, in this file (`--backend svsm`): the
    /// same TPM (EK, NV indices, persistent keys) after every restart. A file that does
    /// not open (another launch's, corrupted, truncated, foreign) stops the daemon.
    #[arg(long, value_name = "PATH")]
    state: Option<std::path::PathBuf>,
    /// With `--state`: when the file does not open, move it aside (PATH.rejected) and
    /// manufacture a new TPM, with a new identity, instead of stopping.
    #[arg(long, requires = "state")]
    remanufacture: bool,
    /// The launch measurement (96 hex digits) the emulated machine's PSP reports
    /// (`--backend svsm`): for example `svsm-igvm measure` of the IGVM file this vTPM
    /// stands in for, so that a verifier's policy is the one written for that file. The
    /// state key (`--state`) mixes it in, as on SNP. Default: zeros.
    #[arg(long, value_name = "HEX", value_parser = parse_measurement)]
    launch_measurement: Option<[u8; 48]>,
    /// Record every command, response and power cycle in this file (the `vtpm::trace`
    /// format; fuzz seeds, bug reports). It holds the traffic in clear, secrets included.
    #[arg(long, value_name = "PATH")]
    trace: Option<std::path::PathBuf>,
}

/// A launch measurement from the command line: 48 bytes of hex.
fn parse_measurement(text: &str) -> Result<[u8; 48], String> {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{text:?} is not hex"))
        })
        .collect::<Result<_, _>>()?;
    <[u8; 48]>::try_from(bytes).map_err(|b| {
        format!(
            "a launch measurement is 48 bytes (96 hex digits), not {}",
            b.len()
        )
    })
}

/// The emulated launch the PSP reports.
fn launch_info(measurement: Option<[u8; 48]>) -> LaunchInfo {
    LaunchInfo {
        measurement: measurement.unwrap_or([0; 48]),
        ..LaunchInfo::default()
    }
}

/// An opened backend and, when it knows it, the endorsement key (TPMT_PUBLIC of
/// template L-1).
type Opened = (Box<dyn TpmBackend>, Option<Vec<u8>>);

/// Opens the SVSM backend with its state in `path`; a state that does not open stops
/// the daemon, unless `remanufacture` says to set it aside and start a new TPM.
fn open_with_state(
    path: &std::path::Path,
    remanufacture: bool,
    launch: LaunchInfo,
) -> Result<Opened> {
    let backend = match SvsmBackend::with_state_launched(path, launch.clone()) {
        Ok(backend) => backend,
        Err(e) if remanufacture && path.exists() => {
            let mut aside = path.as_os_str().to_os_string();
            aside.push(".rejected");
            std::fs::rename(path, &aside)
                .with_context(|| format!("cannot move {} aside", path.display()))?;
            eprintln!(
                "vtpm-daemon: the state in {} did not open ({e}); moved to {} and manufacturing a new TPM (--remanufacture): its endorsement key is new",
                path.display(),
                std::path::Path::new(&aside).display()
            );
            SvsmBackend::with_state_launched(path, launch).context("cannot start a new vTPM")?
        }
        Err(e) => bail!(
            "the vTPM state in {} cannot be used: {e}. The vTPM does not start, so its \
             identity is never silently replaced; --remanufacture sets the file aside and \
             starts a new TPM",
            path.display()
        ),
    };
    let ek = backend.ek_public();
    Ok((Box::new(backend), ek))
}

/// Opens the backend of `kind`.
fn open_backend(kind: BackendKind, serial: &std::path::Path, launch: LaunchInfo) -> Result<Opened> {
    Ok(match kind {
        BackendKind::Serial => {
            let wait = std::time::Duration::from_secs(120);
            let backend = vtpm_daemon::serial::SerialBackend::connect(serial, wait)
                .context("cannot reach the vTPM in the SVSM kernel")?;
            (Box::new(backend), None)
        }
        BackendKind::Svsm => {
            let backend = SvsmBackend::launched(launch)
                .context("cannot start the SVSM on the emulated machine")?;
            let ek = backend.ek_public();
            (Box::new(backend), ek)
        }
        BackendKind::Engine => {
            let backend = EngineBackend::new().context("cannot start the vTPM engine")?;
            let ek = backend.ek_public();
            (Box::new(backend), ek)
        }
    })
}

/// Refuses an address off loopback unless `--allow-remote`, and warns loudly when it is
/// allowed.
fn check_exposure(addr: IpAddr, what: &str, allow_remote: bool) -> Result<()> {
    if addr.is_loopback() {
        return Ok(());
    }
    if !allow_remote {
        anyhow::bail!(
            "refusing to serve the {what} on {addr}, which is not loopback: anyone who reaches \
             it can send TPM commands and power-cycle the vTPM; pass --allow-remote if you \
             mean it"
        );
    }
    eprintln!(
        "vtpm-daemon: WARNING: serving the {what} on {addr} (--allow-remote): ANYONE WHO \
         REACHES THIS ADDRESS CAN SEND TPM COMMANDS AND POWER-CYCLE THE vTPM"
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(vtpm_daemon::swtpm::Endpoint::Tcp(addr)) = &cli.swtpm_ctrl {
        check_exposure(addr.ip(), "swtpm control channel", cli.allow_remote)?;
    }
    if let Some(vtpm_daemon::swtpm::Endpoint::Tcp(addr)) = &cli.swtpm_data {
        check_exposure(addr.ip(), "swtpm data channel", cli.allow_remote)?;
    }
    if cli.swtpm_ctrl.is_none() {
        check_exposure(cli.listen, "TPM simulator interface", cli.allow_remote)?;
    }
    let platform_port = match cli.platform_port {
        Some(p) => p,
        None if cli.port == 0 => 0,
        None => cli
            .port
            .checked_add(1)
            .context("--port 65535 leaves no room for the platform port; give --platform-port")?,
    };

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot install the signal handlers")?;
    }

    let (backend, ek) = match &cli.state {
        Some(_) if cli.backend != BackendKind::Svsm => {
            bail!("--state keeps the state of the SVSM backend only (--backend svsm)")
        }
        _ if cli.launch_measurement.is_some() && cli.backend != BackendKind::Svsm => {
            bail!("--launch-measurement is what the emulated machine's PSP reports: --backend svsm only")
        }
        Some(path) => {
            open_with_state(path, cli.remanufacture, launch_info(cli.launch_measurement))?
        }
        None => open_backend(
            cli.backend,
            &cli.serial,
            launch_info(cli.launch_measurement),
        )?,
    };
    let backend: Box<dyn TpmBackend> = match &cli.trace {
        Some(path) => Box::new(
            vtpm_daemon::trace::Traced::new(backend, path)
                .with_context(|| format!("cannot create the trace {}", path.display()))?,
        ),
        None => backend,
    };
    if let Some(ek) = ek {
        // The TPM name of the EK (nameAlg || SHA-256(TPMT_PUBLIC)), as tpm2_readpublic
        // prints it: this vTPM's identity for this boot.
        let digest: String = Sha256::digest(&ek)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        println!("vtpm-daemon: endorsement key (template L-1) name 000b{digest}");
    }
    if let Some(control) = cli.swtpm_ctrl {
        let config = vtpm_daemon::swtpm::Config {
            control,
            data: cli.swtpm_data,
        };
        let server = vtpm_daemon::swtpm::Server::bind(&config, backend)?;
        println!(
            "vtpm-daemon: swtpm interface, control {}, backend {:?}; the TPM starts (afresh, \
             with a new endorsement key) at each CMD_INIT",
            config.control, cli.backend
        );
        return server.run(stop);
    }
    let backend: SharedBackend = Arc::new(Mutex::new(backend));
    let server =
        MssimServer::bind(cli.listen, cli.port, platform_port)?.with_limits(mssim::Limits {
            max_clients: cli.max_clients.max(1),
            idle_timeout: std::time::Duration::from_secs(cli.idle_timeout.max(1)),
        });
    let (command, platform) = server.local_addrs()?;
    println!(
        "vtpm-daemon: TPM simulator interface on {command} (platform {platform}), backend {:?}",
        cli.backend
    );
    server.serve(backend.clone(), stop.clone())?;

    // Let a command in progress finish, then power the TPM off.
    let mut backend = mssim::lock(&backend);
    backend.power_off().ok();
    println!("vtpm-daemon: stopped");
    if stop.load(Ordering::SeqCst) {
        std::process::exit(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_measurement_is_48_bytes_of_hex() {
        let m = "ab".repeat(48);
        assert_eq!(parse_measurement(&m), Ok([0xAB; 48]));
        assert!(parse_measurement(&"ab".repeat(32))
            .unwrap_err()
            .contains("48 bytes (96 hex digits), not 32"));
        assert!(parse_measurement(&"zz".repeat(48))
            .unwrap_err()
            .contains("not hex"));
        assert!(parse_measurement("abc").unwrap_err().contains("not hex"));
        assert_eq!(launch_info(None).measurement, [0; 48]);
    }
}
