//! The service's state: sessions in flight, one record per guest, and the audit log, in
//! SQLite (the default, embedded) or PostgreSQL (shared by several replicas), through
//! sqlx. Each backend has its own migrations (`migrations/{sqlite,postgres}`); the
//! queries are the SQL both understand.
//!
//! A session is consumed by one `UPDATE ... WHERE used_at IS NULL RETURNING`: the
//! database decides which of two concurrent requests (in one process or in two replicas
//! sharing PostgreSQL) gets it, and the other finds it used.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Which database the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:PATH` (created if missing).
    Sqlite,
    /// `postgres://...` or `postgresql://...`.
    Postgres,
}

/// Why the database refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no database this service supports.
    #[error("database URL: expected sqlite:PATH or postgres://..., got {0:?}")]
    Url(String),
    /// The driver failed (connection, query).
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Migrating the schema failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Why a session cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// No such session (never issued, or purged long after expiry).
    Unknown,
    /// Already consumed by an earlier attestation (a replay).
    Used,
    /// Consumed now, but its expiry had passed.
    Expired,
}

/// A consumed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The nonce it was issued with (hex).
    pub nonce: String,
    /// Its expiry (Unix seconds).
    pub expires_at: i64,
}

/// What the service remembers of a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRecord {
    /// Hex SHA-256 of the certified RSA EK's TPMT_PUBLIC.
    pub ek_id: String,
    /// The last verdict (`allowed` or `denied`).
    pub last_verdict: String,
    /// Its reason.
    pub last_reason: String,
    /// The highest persistent-state generation an allowed attestation showed.
    pub state_generation: Option<i64>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: i64,
    /// The guest's EK id, when the request got far enough to name one.
    pub guest: Option<String>,
    /// The session, when the request named one.
    pub session: Option<String>,
    /// `allowed`, `denied` or `malformed`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// The name of the secret released (never its value).
    pub secret: Option<String>,
}

/// The database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Connects to `url` (`sqlite:PATH` or `postgres://...`) and migrates the schema.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let sep = if path.contains('?') { '&' } else { '?' };
            (Backend::Sqlite, format!("sqlite://{path}{sep}mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(DbError::Url(url.to_string()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&url)
            .await?;
        match backend {
            Backend::Sqlite => {
                // Readers do not block the writer; the setting stays with the file.
                sqlx::query("PRAGMA journal_mode=WAL")
                    .execute(&pool)
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            }
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        Ok(Db { pool, backend })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Records a new session; also purges sessions that expired more than an hour ago.
    pub async fn create_session(
        &self,
        id: &str,
        nonce: &str,
        guest_hint: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> Result<(), DbError> {
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now - 3600)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id, nonce, guest_hint, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(nonce)
        .bind(guest_hint)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes session `id` at `now`: exactly one caller ever gets it.
    pub async fn consume_session(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Result<Session, SessionError>, DbError> {
        let row: Option<AnyRow> = sqlx::query(
            "UPDATE sessions SET used_at = $1 WHERE id = $2 AND used_at IS NULL \
             RETURNING nonce, expires_at",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            let exists = sqlx::query("SELECT id FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            return Ok(Err(if exists.is_some() {
                SessionError::Used
            } else {
                SessionError::Unknown
            }));
        };
        let session = Session {
            nonce: row.try_get("nonce")?,
            expires_at: row.try_get("expires_at")?,
        };
        if now >= session.expires_at {
            return Ok(Err(SessionError::Expired));
        }
        Ok(Ok(session))
    }

    /// The record of the guest with EK id `ek_id`, if it attested before.
    pub async fn guest(&self, ek_id: &str) -> Result<Option<GuestRecord>, DbError> {
        let row = sqlx::query(
            "SELECT ek_id, last_verdict, last_reason, state_generation FROM guests \
             WHERE ek_id = $1",
        )
        .bind(ek_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(GuestRecord {
                ek_id: r.try_get("ek_id")?,
                last_verdict: r.try_get("last_verdict")?,
                last_reason: r.try_get("last_reason")?,
                state_generation: r.try_get("state_generation")?,
            })
        })
        .transpose()
    }

    /// Records a verdict for a guest. `generation` (an allowed verdict's state
    /// generation) only ever raises the stored one.
    pub async fn record_guest(
        &self,
        ek_id: &str,
        verdict: &str,
        reason: &str,
        generation: Option<i64>,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO guests (ek_id, first_seen, last_seen, last_verdict, last_reason, \
             state_generation) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (ek_id) DO UPDATE SET last_seen = excluded.last_seen, \
             last_verdict = excluded.last_verdict, last_reason = excluded.last_reason, \
             state_generation = CASE \
               WHEN excluded.state_generation IS NULL THEN guests.state_generation \
               WHEN guests.state_generation IS NULL THEN excluded.state_generation \
               WHEN excluded.state_generation > guests.state_generation \
                 THEN excluded.state_generation \
               ELSE guests.state_generation END",
        )
        .bind(ek_id)
        .bind(now)
        .bind(now)
        .bind(verdict)
        .bind(reason)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Appends to the audit log.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO audit (at, guest, session, verdict, reason, secret) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(entry.at)
        .bind(entry.guest.as_deref())
        .bind(entry.session.as_deref())
        .bind(&entry.verdict)
        .bind(&entry.reason)
        .bind(entry.secret.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The audit entries of a session, oldest first.
    pub async fn audit_for_session(&self, session: &str) -> Result<Vec<AuditEntry>, DbError> {
        let rows = sqlx::query(
            "SELECT at, guest, session, verdict, reason, secret FROM audit \
             WHERE session = $1 ORDER BY id",
        )
        .bind(session)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_entry).collect()
    }

    /// The last `n` audit entries, newest first.
    pub async fn audit_tail(&self, n: i64) -> Result<Vec<AuditEntry>, DbError> {
        let rows = sqlx::query(
            "SELECT at, guest, session, verdict, reason, secret FROM audit \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_entry).collect()
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn audit_entry(r: &AnyRow) -> Result<AuditEntry, DbError> {
    Ok(AuditEntry {
        at: r.try_get("at")?,
        guest: r.try_get("guest")?,
        session: r.try_get("session")?,
        verdict: r.try_get("verdict")?,
        reason: r.try_get("reason")?,
        secret: r.try_get("secret")?,
    })
}
