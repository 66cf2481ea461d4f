-- Challenges in flight: a session is consumed once (used_at set atomically).
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    guest_hint TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- One record per guest, keyed by its certified RSA EK (hex SHA-256 of its TPMT_PUBLIC).
CREATE TABLE guests (
    ek_id TEXT PRIMARY KEY,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    last_verdict TEXT NOT NULL,
    last_reason TEXT NOT NULL,
    state_generation BIGINT
);

-- Every verdict: who got which secret, when, and why (never the secret itself).
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    guest TEXT,
    session TEXT,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    secret TEXT
);
CREATE INDEX audit_session ON audit (session);
