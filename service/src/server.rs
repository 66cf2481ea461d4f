//! The HTTPS front: rustls (ring) over tokio, hyper's HTTP/1.1 with a header timeout,
//! axum's router, bounded bodies and a whole-request deadline. Every answer is JSON;
//! every error an [`ErrorBody`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use svsm_protocol::service_api::{
    AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse, ErrorBody, ATTEST_PATH,
    CHALLENGE_PATH, NONCE_SIZE,
};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::attest::{self, selection_string, Decoded};
use crate::db::{AuditEntry, Db, SessionError};
use crate::policy::{valid_secret_name, Policy};

/// The largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (bytes).
    pub max_body: usize,
    /// How long a session stays valid.
    pub session_ttl: Duration,
    /// TLS handshake deadline.
    pub handshake_timeout: Duration,
    /// Deadline for a request's header.
    pub header_timeout: Duration,
    /// Deadline for a whole request (body and verification).
    pub request_timeout: Duration,
    /// Connections served at once (more wait in the kernel's backlog).
    pub max_connections: usize,
    /// Whether each verdict is also written to standard error (the audit table always
    /// has it); a benchmark turns this off.
    pub log_verdicts: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: MAX_BODY,
            session_ttl: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            log_verdicts: true,
        }
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct Service {
    /// The state.
    pub db: Db,
    /// The policy.
    pub policy: Policy,
    /// The secret the policy releases (its value; never logged).
    secret: Zeroizing<Vec<u8>>,
    /// The limits.
    pub limits: Limits,
}

impl Service {
    /// A service with `policy`, whose secret is read from `secrets_dir`.
    pub fn new(db: Db, policy: Policy, secrets_dir: &Path, limits: Limits) -> anyhow::Result<Self> {
        if !valid_secret_name(&policy.secret) {
            anyhow::bail!("secret name {:?} is not a plain file name", policy.secret);
        }
        let path = secrets_dir.join(&policy.secret);
        let secret = Zeroizing::new(std::fs::read(&path).map_err(|e| {
            anyhow::anyhow!("secret {:?} ({}): {e}", policy.secret, path.display())
        })?);
        if secret.is_empty() {
            anyhow::bail!("secret {:?} is empty", policy.secret);
        }
        Ok(Service {
            db,
            policy,
            secret,
            limits,
        })
    }
}

/// The TLS configuration from a PEM certificate chain and a PEM private key.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("--tls-cert {}: no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", key.display()))?;
    // ring, not aws-lc-rs (a C build with cmake); rustls deprecates ring's provider only
    // for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where the service's files are.
#[derive(Debug, Clone)]
pub struct Options {
    /// Listening address.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub tls_cert: PathBuf,
    /// PEM private key.
    pub tls_key: PathBuf,
}

/// A bound, serving service.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The accept loop (abort it to stop).
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds and serves `service` until the task is aborted.
pub async fn start(
    service: Arc<Service>,
    listen: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(tls);
    let router = router(service.clone());
    let slots = Arc::new(Semaphore::new(service.limits.max_connections));
    let limits = service.limits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    log(&format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return log(&format!("{peer}: TLS handshake: {e}")),
                    Err(_) => return log(&format!("{peer}: TLS handshake timed out")),
                };
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                    .await;
                if let Err(e) = served {
                    // An idle keep-alive connection that times out is no news.
                    if !e.is_incomplete_message() && !e.is_timeout() {
                        log(&format!("{peer}: connection: {e}"));
                    }
                }
            });
        }
    });
    Ok(Running { addr, task })
}

/// The routes.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route(CHALLENGE_PATH, post(challenge))
        .route(ATTEST_PATH, post(attest_handler))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such endpoint (POST /v1/challenge, POST /v1/attest)",
            )
        })
        .with_state(service)
}

/// One line on standard error (verdicts and reasons; never a secret).
pub fn log(line: &str) {
    eprintln!("svsm-service: {line}");
}

fn error(status: StatusCode, code: &str, reason: &str) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: code.into(),
            reason: reason.into(),
        }),
    )
        .into_response()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A request refused before or during verification.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    reason: String,
}

impl Refusal {
    fn malformed(reason: impl Into<String>) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "malformed",
            reason: reason.into(),
        }
    }
    fn internal(reason: impl std::fmt::Display) -> Self {
        Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            reason: format!("the service failed: {reason}"),
        }
    }
    fn into_response(self) -> Response {
        error(self.status, self.code, &self.reason)
    }
}

/// Reads the body (at most `limit` bytes) and parses it as JSON.
async fn json_body<T: DeserializeOwned>(req: Request<Body>, limit: usize) -> Result<T, Refusal> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/json"));
    if !is_json {
        return Err(Refusal {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "malformed",
            reason: "Content-Type must be application/json".into(),
        });
    }
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut too_large = false;
            while let Some(s) = source {
                too_large |= s.is::<http_body_util::LengthLimitError>();
                source = s.source();
            }
            if too_large {
                Refusal {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: "too-large",
                    reason: format!("the body exceeds {limit} bytes"),
                }
            } else {
                Refusal::malformed(format!("the body could not be read: {e}"))
            }
        })?;
    serde_json::from_slice(&bytes).map_err(|e| Refusal::malformed(format!("JSON: {e}")))
}

async fn with_deadline(
    limit: Duration,
    f: impl std::future::Future<Output = Response>,
) -> Response {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request was not completed in time",
        ),
    }
}

async fn challenge(State(svc): State<Arc<Service>>, req: Request<Body>) -> Response {
    let limit = svc.limits.request_timeout;
    with_deadline(limit, async move {
        match challenge_inner(&svc, req).await {
            Ok(r) => axum::Json(r).into_response(),
            Err(r) => r.into_response(),
        }
    })
    .await
}

async fn challenge_inner(svc: &Service, req: Request<Body>) -> Result<ChallengeResponse, Refusal> {
    let body: ChallengeRequest = json_body(req, svc.limits.max_body).await?;
    let hint = body.guest.map(|g| g.chars().take(64).collect::<String>());
    let mut id = [0u8; 16];
    let mut nonce = [0u8; NONCE_SIZE];
    getrandom_sys_rng::fill(&mut id)
        .and_then(|()| getrandom_sys_rng::fill(&mut nonce))
        .map_err(Refusal::internal)?;
    let (session, nonce) = (hex::encode(id), hex::encode(nonce));
    let now = now();
    let expires_at = now.saturating_add(svc.limits.session_ttl.as_secs() as i64);
    svc.db
        .create_session(&session, &nonce, hint.as_deref(), now, expires_at)
        .await
        .map_err(Refusal::internal)?;
    let (alg, pcrs) = svc.policy.boot.pcr_selection();
    Ok(ChallengeResponse {
        session,
        nonce,
        expires_at: expires_at.max(0) as u64,
        pcr_selection: selection_string(alg, &pcrs),
    })
}

async fn attest_handler(State(svc): State<Arc<Service>>, req: Request<Body>) -> Response {
    let limit = svc.limits.request_timeout;
    with_deadline(limit, async move {
        match attest_inner(&svc, req).await {
            Ok(r) => axum::Json(r).into_response(),
            Err(r) => r.into_response(),
        }
    })
    .await
}

/// Logs and audits a verdict; a failure to audit turns the answer into an internal error
/// (no secret leaves without its audit entry).
async fn record(
    svc: &Service,
    guest: Option<&str>,
    session: Option<&str>,
    verdict: &str,
    reason: &str,
    secret: Option<&str>,
) -> Result<(), Refusal> {
    if svc.limits.log_verdicts {
        log(&format!(
            "verdict {verdict}: session {} guest {}: {reason}",
            session.unwrap_or("-"),
            guest.unwrap_or("-")
        ));
    }
    svc.db
        .audit(&AuditEntry {
            at: now(),
            guest: guest.map(str::to_string),
            session: session.map(str::to_string),
            verdict: verdict.to_string(),
            reason: reason.to_string(),
            secret: secret.map(str::to_string),
        })
        .await
        .map_err(Refusal::internal)
}

async fn attest_inner(svc: &Arc<Service>, req: Request<Body>) -> Result<AttestResponse, Refusal> {
    let body: AttestRequest = match json_body(req, svc.limits.max_body).await {
        Ok(b) => b,
        Err(r) => {
            record(svc, None, None, "malformed", &r.reason, None).await?;
            return Err(r);
        }
    };
    let session = body.session.clone();
    if session.len() != 32 || !session.bytes().all(|b| b.is_ascii_hexdigit()) {
        let r = Refusal::malformed("session: not a session this service issued (32 hex digits)");
        record(svc, None, None, "malformed", &r.reason, None).await?;
        return Err(r);
    }
    let decoded = match Decoded::from_request(&body) {
        Ok(d) => d,
        Err(why) => {
            let r = Refusal::malformed(why);
            record(svc, None, Some(&session), "malformed", &r.reason, None).await?;
            return Err(r);
        }
    };
    let guest = attest::ek_id(&decoded.ek_public);
    let now = now();
    let consumed = svc
        .db
        .consume_session(&session, now)
        .await
        .map_err(Refusal::internal)?;
    let nonce = match consumed {
        Ok(s) => s.nonce,
        Err(e) => {
            let (status, code, reason) = match e {
                SessionError::Unknown => (
                    StatusCode::NOT_FOUND,
                    "unknown-session",
                    "session: unknown (never issued, or long expired)",
                ),
                SessionError::Used => (
                    StatusCode::NOT_FOUND,
                    "unknown-session",
                    "session: already used (a replay)",
                ),
                SessionError::Expired => (
                    StatusCode::GONE,
                    "expired",
                    "session: expired (a stale nonce)",
                ),
            };
            record(svc, Some(&guest), Some(&session), "denied", reason, None).await?;
            return Err(Refusal {
                status,
                code,
                reason: reason.into(),
            });
        }
    };
    let nonce = hex::decode(&nonce).map_err(Refusal::internal)?;
    let record_of = svc.db.guest(&guest).await.map_err(Refusal::internal)?;
    let min_generation = record_of
        .and_then(|r| r.state_generation)
        .and_then(|g| u64::try_from(g).ok());

    // The checks are CPU work (RSA, ECDSA): off the I/O threads.
    let worker = svc.clone();
    let sess = session.clone();
    let verdict = tokio::task::spawn_blocking(move || {
        let p = &worker.policy;
        let nv = attest::check_nv(p, &decoded, min_generation)?;
        let quote = attest::check_quote(p, &decoded, &nonce)?;
        attest::check_boot(p, &decoded, &quote.pcrs)?;
        let wrapped = attest::release(&nv.ek, &quote.ak_name, &sess, &p.secret, &worker.secret)?;
        Ok::<_, String>((nv, wrapped))
    })
    .await
    .map_err(Refusal::internal)?;
    match verdict {
        Ok((nv, wrapped)) => {
            let reason = format!(
                "every link holds (measurement {}, state generation {})",
                nv.measurement,
                nv.state_generation
                    .map_or("none".to_string(), |g| g.to_string())
            );
            let generation = nv.state_generation.and_then(|g| i64::try_from(g).ok());
            svc.db
                .record_guest(&guest, "allowed", &reason, generation, now)
                .await
                .map_err(Refusal::internal)?;
            record(
                svc,
                Some(&guest),
                Some(&session),
                "allowed",
                &reason,
                Some(&wrapped.name),
            )
            .await?;
            Ok(AttestResponse {
                verdict: "allowed".into(),
                secret: wrapped,
            })
        }
        Err(reason) => {
            svc.db
                .record_guest(&guest, "denied", &reason, None, now)
                .await
                .map_err(Refusal::internal)?;
            record(svc, Some(&guest), Some(&session), "denied", &reason, None).await?;
            Err(Refusal {
                status: StatusCode::FORBIDDEN,
                code: "denied",
                reason,
            })
        }
    }
}
