//! The service on SQLite (its default database): every scenario of `common::scenarios`.

mod common;

use common::{scenarios, Guest, Harness};

#[test]
fn release_and_refusals_on_sqlite() {
    let g = Guest::start();
    let mut h = Harness::start(None);
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
    scenarios::slow_clients(&mut h);
    scenarios::mutated_evidence(&h, &g);
    scenarios::replicas_share_sessions(&mut h, &g);
    scenarios::event_log_edited(&h, &g);
    scenarios::wrong_measurement(None, &g);
    scenarios::tcb_below_minimum(None, &g);
    // These two change the vTPM's PCR 4 and the guest's record for good: last.
    scenarios::another_kernel_booted(&h, &g);
    scenarios::state_rollback(&h, &g);
}
