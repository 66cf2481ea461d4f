//! The verification service's level: its suites on SQLite and on PostgreSQL (Debian's
//! server, started by the tests themselves as the `postgres` user), the load test, and
//! its benchmark.

use anyhow::Result;

use crate::{cargo, setup, step};

/// Debian's PostgreSQL server, for the PostgreSQL suite.
const PACKAGES: &[&str] = &["postgresql"];

/// Runs the service's tests: the SQLite and PostgreSQL suites and the load test.
pub fn test() -> Result<()> {
    setup::ensure_packages(PACKAGES)?;
    step(
        "service (SQLite, PostgreSQL, two replicas, load)",
        cargo(&["test", "-p", "svsm-service"]),
    )
}

/// Prints the service's latency, throughput and cost per attestation (the database's
/// on SQLite and on PostgreSQL).
pub fn bench() -> Result<()> {
    setup::ensure_packages(PACKAGES)?;
    step(
        "service benchmark",
        cargo(&["bench", "-q", "-p", "svsm-service", "--bench", "service"]),
    )
}
