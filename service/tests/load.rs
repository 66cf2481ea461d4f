//! N guests' attestations at once against one service on loopback (SQLite): every one
//! is allowed. Timings are the benchmark's (`cargo xtask bench`), not asserted here.

mod common;

use common::{Guest, Harness, SELECTION};

/// Clients at once, and attestations each.
const CLIENTS: usize = 16;
const EACH: usize = 16;

#[test]
fn concurrent_attestations_all_succeed() {
    let g = Guest::start();
    g.persist_ak();
    let pcrs = g.pcrs(SELECTION);
    let h = Harness::start(None);
    let allowed = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| {
                    let client = h.pki.client();
                    let mut ok = 0;
                    for _ in 0..EACH {
                        let c = h.challenge_with(&client, 0);
                        let req = g.raw_request(&c, &pcrs);
                        match h.attest_with(&client, 0, &req) {
                            Ok(r) => {
                                assert_eq!(r.verdict, "allowed");
                                ok += 1;
                            }
                            Err(e) => panic!("refused under load: {e:?}"),
                        }
                    }
                    ok
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a client"))
            .sum::<usize>()
    });
    assert_eq!(allowed, CLIENTS * EACH);
    let audit = h.rt.block_on(h.db().audit_tail(1000)).expect("audit");
    assert_eq!(
        audit.iter().filter(|a| a.verdict == "allowed").count(),
        CLIENTS * EACH
    );
}
