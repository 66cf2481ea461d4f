//! The service on PostgreSQL (Debian's server, started here): every scenario of
//! `common::scenarios`, including two replicas sharing the database.

mod common;

use common::postgres::Postgres;
use common::{scenarios, Guest, Harness};

#[test]
fn release_and_refusals_on_postgres() {
    let pg = Postgres::start();
    let g = Guest::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut h = Harness::start(Some(pg.database(&rt, "service")));
    scenarios::happy_path(&h, &g);
    scenarios::unknown_session(&h, &g);
    scenarios::stale_nonce(&mut h, &g);
    scenarios::quote_by_another_key(&h, &g);
    scenarios::quote_for_another_nonce(&h, &g);
    scenarios::pcrs_not_quoted(&h, &g);
    scenarios::ek_certificate_of_another_vtpm(&h, &g);
    scenarios::ek_public_not_certified(&h, &g);
    scenarios::report_at_another_vmpl(&h, &g);
    scenarios::report_tampered(&h, &g);
    scenarios::malformed(&h, &g);
    scenarios::replicas_share_sessions(&mut h, &g);
    scenarios::event_log_edited(&h, &g);
    scenarios::wrong_measurement(Some(pg.database(&rt, "measurement")), &g);
    // These two change the vTPM's PCR 4 and the guest's record for good: last.
    scenarios::another_kernel_booted(&h, &g);
    scenarios::state_rollback(&h, &g);
}
