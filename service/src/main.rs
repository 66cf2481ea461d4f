//! `svsm-service serve`: the verification service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use svsm_service::db::Db;
use svsm_service::policy::Policy;
use svsm_service::server::{self, Limits, Service};

/// Checks SVSM guests' vTPM evidence and measured boot; releases a secret only the
/// attested vTPM can unwrap.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the API (POST /v1/challenge, POST /v1/attest) over HTTPS.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// The server's certificate chain (PEM).
        #[arg(long)]
        tls_cert: PathBuf,
        /// The server's private key (PEM).
        #[arg(long)]
        tls_key: PathBuf,
        /// The policy file (TOML: [snp], [boot], [release]).
        #[arg(long)]
        policy: PathBuf,
        /// The directory of secrets, one file per secret name.
        #[arg(long)]
        secrets: PathBuf,
        /// The database: sqlite:PATH (created if missing) or postgres://USER@HOST:PORT/DB.
        #[arg(long, default_value = "sqlite:svsm-service.db")]
        db: String,
        /// How long a challenge stays valid, in seconds.
        #[arg(long, default_value_t = 120)]
        session_ttl: u64,
        /// Largest request body, in bytes.
        #[arg(long, default_value_t = server::MAX_BODY)]
        max_body: usize,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            tls_cert,
            tls_key,
            policy,
            secrets,
            db,
            session_ttl,
            max_body,
        } => {
            let policy = Policy::load(&policy)?;
            let tls = server::tls_config(&tls_cert, &tls_key)?;
            let db = Db::connect(&db).await?;
            let limits = Limits {
                session_ttl: Duration::from_secs(session_ttl),
                max_body,
                ..Limits::default()
            };
            let service = Arc::new(Service::new(db, policy, &secrets, limits)?);
            let running = server::start(service.clone(), listen, tls).await?;
            server::log(&format!("listening on https://{}", running.addr));
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            running.task.abort();
            service.db.close().await;
            server::log("stopped");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("svsm-service: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("svsm-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}
