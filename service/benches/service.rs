//! The verification service's benchmark (`cargo xtask bench`, or
//! `cargo bench -p svsm-service`): attestations against the service on loopback over
//! TLS, with SQLite, from concurrent clients; then the cost of one attestation broken
//! down by step, measured in process on the same evidence.
//!
//! A quote's qualifying data is the session's nonce, so evidence cannot be replayed with
//! fresh sessions: each client gets a fresh challenge and has the in-process vTPM quote
//! it (a raw TPM2_Quote by a persistent AK). The latency figures are the service's only
//! (the `POST /v1/attest` round trip, TLS included); the throughput is whole
//! attestations (challenge, quote, attest) per second, with the vTPM's quotes
//! serialized as one TPM serializes them.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::{Guest, Harness, SELECTION};
use svsm_service::attest::{self, Decoded};
use svsm_service::db::{AuditEntry, Db};

const CLIENTS: usize = 8;
const EACH: usize = 32;
const ROUNDS: u32 = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Mean time of `f` over [`ROUNDS`] runs.
fn mean(mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    start.elapsed() / ROUNDS
}

/// The database's part of one attestation: the session inserted and consumed, the guest
/// read and upserted, an audit entry.
fn db_cost(h: &Harness, db: &Db, id: &str, nonce: &str) -> Duration {
    let mut seq = 0u64;
    mean(|| {
        seq += 1;
        let session = format!("{seq:032x}");
        h.rt.block_on(async {
            db.create_session(&session, nonce, None, 1, i64::MAX)
                .await
                .expect("create");
            db.consume_session(&session, 2)
                .await
                .expect("consume")
                .expect("fresh");
            db.guest(id).await.expect("guest");
            db.record_guest(id, "allowed", "bench", None, 2)
                .await
                .expect("record");
            db.audit(&AuditEntry {
                at: 2,
                guest: Some(id.to_string()),
                session: Some(session.clone()),
                verdict: "allowed".into(),
                reason: "bench".into(),
                secret: Some("disk-key".into()),
            })
            .await
            .expect("audit");
        });
    })
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let g = Guest::start();
    g.persist_ak();
    let pcrs = g.pcrs(SELECTION);
    let h = Harness::start_quiet(None);

    // Warm up: connections, the database file, caches.
    for _ in 0..4 {
        let c = h.challenge();
        let req = g.raw_request(&c, &pcrs);
        h.attest(&req).expect("allowed");
    }

    // One client alone: the latency without queueing.
    let mut alone: Vec<Duration> = (0..EACH)
        .map(|_| {
            let c = h.challenge();
            let req = g.raw_request(&c, &pcrs);
            let t = Instant::now();
            h.attest(&req).expect("allowed");
            t.elapsed()
        })
        .collect();
    alone.sort();

    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| {
                    let client = h.pki.client();
                    let mut times = Vec::with_capacity(EACH);
                    for _ in 0..EACH {
                        let c = h.challenge_with(&client, 0);
                        let req = g.raw_request(&c, &pcrs);
                        let t = Instant::now();
                        let r = h.attest_with(&client, 0, &req);
                        times.push(t.elapsed());
                        assert!(r.is_ok(), "refused: {r:?}");
                    }
                    times
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a client"))
            .collect()
    });
    let wall = start.elapsed();
    latencies.sort();
    let n = latencies.len();
    println!("svsm-service: loopback TLS, SQLite");
    println!(
        "  one client, {EACH} attestations: POST /v1/attest p50 {}, p99 {}",
        ms(percentile(&alone, 0.50)),
        ms(percentile(&alone, 0.99))
    );
    println!("  {n} attestations, {CLIENTS} clients at once:");
    println!(
        "    POST /v1/attest latency: p50 {}, p99 {}, max {}",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies[n - 1])
    );
    println!(
        "    whole attestations (challenge + vTPM quote + attest): {:.1}/s ({} in {:.2} s)",
        n as f64 / wall.as_secs_f64(),
        n,
        wall.as_secs_f64()
    );

    // The cost of one attestation, step by step, in process on one request.
    let c = h.challenge();
    let nonce = hex::decode(&c.nonce).expect("nonce");
    let req = g.raw_request(&c, &pcrs);
    let json = serde_json::to_vec(&req).expect("json");
    let policy = &h.replicas[0].service.policy;
    let decoded = Decoded::from_request(&req).expect("decodes");
    let nv = attest::check_nv(policy, &decoded, None).expect("NV evidence");
    let quote = attest::check_quote(policy, &decoded, &nonce).expect("quote");
    let ek = nv.ek.clone();
    let ak_name = quote.ak_name.clone();

    let t_parse = mean(|| {
        let r: svsm_protocol::service_api::AttestRequest =
            serde_json::from_slice(&json).expect("json");
        Decoded::from_request(&r).expect("decodes");
    });
    let t_nv = mean(|| {
        attest::check_nv(policy, &decoded, None).expect("NV evidence");
    });
    let t_quote = mean(|| {
        attest::check_quote(policy, &decoded, &nonce).expect("quote");
    });
    let t_boot = mean(|| {
        attest::check_boot(policy, &decoded, &quote.pcrs).expect("boot");
    });
    let t_make = mean(|| {
        svsm_verifier::credential::make_credential(
            &mut getrandom_sys_rng::SysRng,
            &ek,
            &ak_name,
            &[7u8; 32],
        )
        .expect("MakeCredential");
    });
    let t_release = mean(|| {
        attest::release(&ek, &ak_name, &c.session, "disk-key", common::SECRET).expect("release");
    });
    let id = attest::ek_id(&decoded.ek_public);
    let t_db = db_cost(&h, h.db(), &id, &c.nonce);
    // The same on PostgreSQL (Debian's server, started here), when it is installed.
    let t_pg = if std::path::Path::new("/usr/lib/postgresql").exists() {
        let pg = common::postgres::Postgres::start();
        let url = pg.database(&h.rt, "bench");
        let db = h.rt.block_on(Db::connect(&url)).expect("PostgreSQL");
        Some(db_cost(&h, &db, &id, &c.nonce))
    } else {
        None
    };
    let t_vtpm = mean(|| {
        g.raw_quote(&nonce);
    });
    let total = t_parse + t_nv + t_quote + t_boot + t_release + t_db;
    println!("  cost of one attestation on the service (mean of {ROUNDS}, one core):");
    for (what, t) in [
        ("JSON + base64 decoding", t_parse),
        (
            "report + certificates (VCEK chain RSA-PSS, report ECDSA P-384, CA and 2 EK certs ECDSA P-384)",
            t_nv,
        ),
        ("AK + quote (RSASSA-2048 verify, nonce, PCR digest)", t_quote),
        ("event log + boot policy", t_boot),
        (
            "release (MakeCredential: RSA-OAEP-2048 + KDFa/AES-CFB/HMAC; AES-256-GCM)",
            t_release,
        ),
        ("  of which MakeCredential", t_make),
        (
            "database (session insert + consume, guest read + upsert, audit insert; SQLite)",
            t_db,
        ),
    ] {
        println!("    {what:<100} {}", ms(t));
    }
    println!("    {:<100} {}", "sum", ms(total));
    match t_pg {
        Some(t) => println!(
            "    {:<100} {}",
            "database on PostgreSQL instead (loopback, fsync off)",
            ms(t)
        ),
        None => println!("    database on PostgreSQL: skipped (no /usr/lib/postgresql)"),
    }
    println!(
        "  guest side, for reference: TPM2_Quote on the vTPM through the SVSM path: {}",
        ms(t_vtpm)
    );
}
