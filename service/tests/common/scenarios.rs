//! The scenarios every database backend runs: a release the vTPM unwraps, and each
//! refusal with its reason in the answer and in the audit log.

use std::time::Duration;

use svsm_protocol::service_api::{AttestRequest, CHALLENGE_PATH};
use svsm_service::attest::{ek_id, open_secret};
use svsm_service::server::{Limits, MAX_BODY};

use super::{b64, unb64, Guest, Harness, EVENT_LOG, SECRET, SELECTION};

/// Allowed: the secret comes back wrapped, ActivateCredential on the same vTPM recovers
/// the key, the key opens the secret; the audit log and the guest record say so.
pub fn happy_path(h: &Harness, g: &Guest) {
    let c = h.challenge();
    assert_eq!(c.pcr_selection, SELECTION);
    assert_eq!(c.nonce.len(), 64);
    let req = g.request(&c);
    let resp = h.attest(&req).expect("the evidence is accepted");
    assert_eq!(resp.verdict, "allowed");
    assert_eq!(resp.secret.name, "disk-key");
    let credential = unb64(&resp.secret.credential);
    assert_eq!(&credential[..8], &[0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1]);
    let key = g
        .activate(&credential)
        .expect("TPM2_ActivateCredential on this vTPM");
    assert_eq!(key.len(), 32);
    assert_eq!(
        open_secret(&key, &c.session, &resp.secret).expect("the key opens the secret"),
        SECRET
    );
    // Bound to the session: another session's AAD does not open it.
    assert!(open_secret(&key, &"0".repeat(32), &resp.secret).is_err());
    // Never in clear on the wire.
    let wire = serde_json::to_string(&resp).expect("json");
    assert!(!wire.contains(std::str::from_utf8(SECRET).expect("text")));

    let audit = h.audit(&c.session);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].verdict, "allowed");
    assert_eq!(audit[0].secret.as_deref(), Some("disk-key"));
    let id = ek_id(&unb64(&req.ek_public));
    assert_eq!(audit[0].guest.as_deref(), Some(id.as_str()));
    let record =
        h.rt.block_on(h.db().guest(&id))
            .expect("db")
            .expect("a guest record");
    assert_eq!(record.last_verdict, "allowed");

    // The same session again: a replay gets nothing.
    let again = h.attest(&req);
    h.assert_refused(&c.session, again, 404, "already used");
}

/// An unknown session.
pub fn unknown_session(h: &Harness, g: &Guest) {
    let mut c = h.challenge();
    c.session = "ab".repeat(16);
    let req = g.request(&c);
    h.assert_refused(&c.session, h.attest(&req), 404, "unknown");
}

/// A stale nonce: the session expired before the evidence came.
pub fn stale_nonce(h: &mut Harness, g: &Guest) {
    let expired = h.add_replica(Limits {
        session_ttl: Duration::ZERO,
        ..Limits::default()
    });
    let c = h.challenge_on(expired);
    let req = g.request(&c);
    h.assert_refused(&c.session, h.attest_on(expired, &req), 410, "expired");
}

/// A quote signed by another AK than the one sent (a key that was not challenged).
pub fn quote_by_another_key(h: &Harness, g: &Guest) {
    g.tool_flush(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak2.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u",
            "ak2.pub",
        ],
    );
    let c = h.challenge();
    let mut req = g.request(&c);
    let (quote, sig) = g.quote_with("ak2.ctx", &c.pcr_selection, &c.nonce);
    req.quote = b64(&quote);
    req.quote_signature = b64(&sig);
    h.assert_refused(
        &c.session,
        h.attest(&req),
        403,
        "quote signature: does not verify with the attestation key",
    );
}

/// A quote over another nonce (an earlier session's).
pub fn quote_for_another_nonce(h: &Harness, g: &Guest) {
    let old = h.challenge();
    let c = h.challenge();
    let mut req = g.request(&old);
    req.session = c.session.clone();
    h.assert_refused(
        &c.session,
        h.attest(&req),
        403,
        "qualifying data is not the nonce",
    );
}

/// PCR values that are not the quoted ones.
pub fn pcrs_not_quoted(h: &Harness, g: &Guest) {
    let c = h.challenge();
    let mut req = g.request(&c);
    req.pcrs[3].value = "11".repeat(32);
    h.assert_refused(&c.session, h.attest(&req), 403, "PCR digest");
    // A PCR missing from the values sent.
    let c = h.challenge();
    let mut req = g.request(&c);
    req.pcrs.pop();
    h.assert_refused(
        &c.session,
        h.attest(&req),
        403,
        "another set than the quoted",
    );
}

/// An EK certificate of another vTPM (another boot, another endorsement CA).
pub fn ek_certificate_of_another_vtpm(h: &Harness, g: &Guest) {
    let other = g.previous();
    let c = h.challenge();
    let mut req = g.request(&c);
    req.nv.rsa_ek_cert = other.nv.rsa_ek_cert.clone();
    h.assert_refused(&c.session, h.attest(&req), 403, "RSA EK");

    // The other vTPM's whole evidence with this vTPM's AK and quote passes the checks
    // (they are all genuine), but the secret is wrapped to the other vTPM's EK: this
    // vTPM cannot unwrap it (and the other never held this AK).
    let c = h.challenge();
    let mut req = g.request(&c);
    req.nv = other.nv.clone();
    req.ek_public = b64(&other.ek_public);
    let resp = h.attest(&req).expect("genuine evidence of two vTPMs");
    let credential = unb64(&resp.secret.credential);
    assert!(
        g.activate(&credential).is_err(),
        "this vTPM has not that EK"
    );
}

/// `ek_public` is not the certified EK.
pub fn ek_public_not_certified(h: &Harness, g: &Guest) {
    let c = h.challenge();
    let mut req = g.request(&c);
    req.ek_public = b64(&g.previous().ek_public);
    h.assert_refused(
        &c.session,
        h.attest(&req),
        403,
        "certifies another key than the TPM's EK",
    );
}

/// A report edited to another VMPL and re-signed with the emulated PSP's test VCEK key
/// (the only way to get one here: the emulated PSP signs VMPL0 reports for the SVSM).
pub fn report_at_another_vmpl(h: &Harness, g: &Guest) {
    use p384::ecdsa::signature::Signer;
    let c = h.challenge();
    let mut req = g.request(&c);
    let mut report = unb64(&req.nv.report);
    report[0x30..0x34].copy_from_slice(&2u32.to_le_bytes());
    let sig: p384::ecdsa::Signature = svsm_emulated::psp::test_vcek().sign(&report[..0x2A0]);
    let encoded = svsm_verifier::report::encode_signature(&sig);
    report[0x2A0..0x2A0 + encoded.len()].copy_from_slice(&encoded);
    req.nv.report = b64(&report);
    h.assert_refused(&c.session, h.attest(&req), 403, "report VMPL: 2");
}

/// A report whose signature no longer verifies (one byte changed).
pub fn report_tampered(h: &Harness, g: &Guest) {
    let c = h.challenge();
    let mut req = g.request(&c);
    let mut report = unb64(&req.nv.report);
    report[0x90] ^= 1;
    req.nv.report = b64(&report);
    h.assert_refused(&c.session, h.attest(&req), 403, "report signature");
}

/// A state-generation rollback: the service saw generation 3 for this guest, the vTPM
/// now shows none.
pub fn state_rollback(h: &Harness, g: &Guest) {
    let id = ek_id(&g.read("ek.pub"));
    h.rt.block_on(
        h.db()
            .record_guest(&id, "allowed", "an earlier boot", Some(3), 0),
    )
    .expect("seed the record");
    let c = h.challenge();
    let req = g.request(&c);
    h.assert_refused(
        &c.session,
        h.attest(&req),
        403,
        "generation 3 was seen before",
    );
    // The record keeps generation 3 (a refusal never lowers it).
    let record =
        h.rt.block_on(h.db().guest(&id))
            .expect("db")
            .expect("record");
    assert_eq!(record.state_generation, Some(3));
    assert_eq!(record.last_verdict, "denied");
}

/// Malformed requests: 400 (or 413, 415) with the reason, audited, service up.
pub fn malformed(h: &Harness, g: &Guest) {
    let (status, body) = h.post_raw(CHALLENGE_PATH, "application/json", b"{".to_vec());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("JSON"), "{body}");
    let (status, body) = h.post_raw(
        CHALLENGE_PATH,
        "application/json",
        br#"{"guest": "x", "extra": 1}"#.to_vec(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown field"), "{body}");
    let (status, body) = h.post_raw(CHALLENGE_PATH, "text/plain", b"{}".to_vec());
    assert_eq!(status, 415, "{body}");
    let (status, body) = h.post_raw("/v2/attest", "application/json", b"{}".to_vec());
    assert_eq!(status, 404, "{body}");

    let c = h.challenge();
    let good = g.request(&c);
    type Edit = fn(&mut AttestRequest);
    let cases: [(&str, Edit); 4] = [
        ("quote: not base64", |r| r.quote = "!!not base64!!".into()),
        ("nv.report: not base64", |r| r.nv.report = "%%%".into()),
        ("value is not hex", |r| r.pcrs[0].value = "xyz".into()),
        ("bank \"md5\"", |r| r.pcrs[0].bank = "md5".into()),
    ];
    for (needle, edit) in cases {
        let mut req = good.clone();
        edit(&mut req);
        h.assert_refused(&c.session, h.attest(&req), 400, needle);
    }
    // Malformed requests do not consume the session.
    h.attest(&good).expect("the session is still usable");

    // Oversized: 413 with an ErrorBody. The service answers once it has read the limit
    // and closes; a body just over the limit is all in the socket's buffers by then, so
    // the client always reads the answer.
    let oversized = |extra: usize| {
        let mut big = br#"{"session": ""#.to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_BODY + extra));
        big.extend(br#""}"#);
        big
    };
    let (status, body) = h.post_raw("/v1/attest", "application/json", oversized(1024));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("too-large"), "{body}");
    // A client that goes on writing megabytes after the answer may see the connection
    // closed instead (as with any HTTP server that refuses early); either way the
    // service stays up.
    match h.try_post_raw("/v1/attest", "application/json", oversized(8 << 20)) {
        Ok((status, body)) => assert_eq!(status, 413, "{body}"),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let _ = h.challenge();
}

/// Two replicas on one database: a session consumed by one is refused by the other.
pub fn replicas_share_sessions(h: &mut Harness, g: &Guest) {
    let second = h.add_replica(Limits::default());
    let c = h.challenge_on(0);
    let req = g.request(&c);
    h.attest_on(second, &req)
        .expect("the other replica knows the session");
    let again = h.attest_on(0, &req);
    h.assert_refused(&c.session, again, 404, "already used");
    // Both at once: exactly one wins.
    let c = h.challenge_on(second);
    let req = g.request(&c);
    let results = std::thread::scope(|s| {
        let a = s.spawn(|| h.attest_on(0, &req));
        let b = s.spawn(|| h.attest_on(second, &req));
        [a.join().expect("a"), b.join().expect("b")]
    });
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
}

/// A launch measurement the policy does not list.
pub fn wrong_measurement(db_url: Option<String>, g: &Guest) {
    let h = Harness::with_policy(db_url, |dir| super::policy_text(dir, &[0x11; 48]));
    let c = h.challenge();
    let req = g.request(&c);
    h.assert_refused(&c.session, h.attest(&req), 403, "launch measurement");
}

/// Firmware below the policy's minimum TCB (the emulated machine's microcode SVN is 3).
pub fn tcb_below_minimum(db_url: Option<String>, g: &Guest) {
    let h = Harness::with_policy(db_url, |dir| {
        super::policy_text_with_tcb(dir, &super::emulated_measurement(), "bl=8,ucode=4")
    });
    let c = h.challenge();
    let req = g.request(&c);
    h.assert_refused(&c.session, h.attest(&req), 403, "report TCB");
}

/// The fixture's first measured event of `pcr` that is of the type `event_type`: its
/// index and SHA-256 digest.
fn event_of(pcr: u32, event_type: u32) -> (usize, Vec<u8>) {
    let log = svsm_verifier::eventlog::EventLog::parse(EVENT_LOG).expect("the log parses");
    log.events
        .iter()
        .enumerate()
        .find(|(_, e)| e.pcr == pcr && e.event_type == event_type && e.is_measured())
        .map(|(i, e)| {
            (
                i,
                e.digest(svsm_verifier::tpm::ALG_SHA256)
                    .expect("SHA-256")
                    .to_vec(),
            )
        })
        .expect("the event is in the log")
}

/// EV_EFI_BOOT_SERVICES_APPLICATION.
const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;

/// The real log with one digest changed (the kernel's, PCR 4): the log no longer replays
/// to the quoted PCR 4, and the refusal names it.
pub fn event_log_edited(h: &Harness, g: &Guest) {
    let (_, kernel) = event_of(4, EV_EFI_BOOT_SERVICES_APPLICATION);
    let mut log = EVENT_LOG.to_vec();
    let at = log
        .windows(kernel.len())
        .position(|w| w == kernel.as_slice())
        .expect("the kernel's digest in the log");
    log[at] ^= 0x80;
    let c = h.challenge();
    let mut req = g.request(&c);
    req.event_log = b64(&log);
    h.assert_refused(
        &c.session,
        h.attest(&req),
        403,
        "measured boot: PCR 4 (sha256): replayed log gives",
    );
    // A log that does not parse.
    let c = h.challenge();
    let mut req = g.request(&c);
    req.event_log = b64(&EVENT_LOG[..EVENT_LOG.len() - 7]);
    h.assert_refused(&c.session, h.attest(&req), 403, "event log");
}

/// Another kernel boots (the vTPM measures another PE image into PCR 4) while the guest
/// sends the real log, which looks right: the replay mismatch names PCR 4. With the
/// other kernel's event added to the log, it replays, but the event is no reference
/// value. Changes this vTPM's PCR 4 for good: run last.
pub fn another_kernel_booted(h: &Harness, g: &Guest) {
    use sha2::Digest;
    let other: [u8; 32] = sha2::Sha256::digest(b"another kernel").into();
    g.tool(
        "tpm2_pcrextend",
        &[&format!("4:sha256={}", hex::encode(other))],
    );
    let c = h.challenge();
    let req = g.request(&c);
    h.assert_refused(
        &c.session,
        h.attest(&req),
        403,
        "measured boot: PCR 4 (sha256): replayed log gives",
    );

    let parsed = svsm_verifier::eventlog::EventLog::parse(EVENT_LOG).expect("the log parses");
    let mut log = EVENT_LOG.to_vec();
    // TCG_PCR_EVENT2: PCR, type, TPML_DIGEST_VALUES in every bank of the log, event data.
    log.extend_from_slice(&4u32.to_le_bytes());
    log.extend_from_slice(&EV_EFI_BOOT_SERVICES_APPLICATION.to_le_bytes());
    log.extend_from_slice(&(parsed.banks.len() as u32).to_le_bytes());
    for (alg, size) in &parsed.banks {
        log.extend_from_slice(&alg.to_le_bytes());
        if *alg == svsm_verifier::tpm::ALG_SHA256 {
            log.extend_from_slice(&other);
        } else {
            log.extend(std::iter::repeat_n(0u8, *size));
        }
    }
    log.extend_from_slice(&0u32.to_le_bytes());
    let c = h.challenge();
    let mut req = g.request(&c);
    req.event_log = b64(&log);
    h.assert_refused(
        &c.session,
        h.attest(&req),
        403,
        &format!(
            "PCR 4 event {} (EV_EFI_BOOT_SERVICES_APPLICATION): digest {} is not a reference value",
            parsed.events.len(),
            hex::encode(other)
        ),
    );
}

/// Slow clients: a body that does not arrive within the request deadline gets 408, a
/// header that does not arrive in time and a TLS handshake that never starts get the
/// connection closed; the service answers others meanwhile and after.
pub fn slow_clients(h: &mut Harness) {
    use std::io::{Read, Write};
    let slow = h.add_replica(Limits {
        // Short, but long enough for a handshake on a loaded machine.
        handshake_timeout: Duration::from_millis(1500),
        header_timeout: Duration::from_millis(1500),
        request_timeout: Duration::from_millis(1500),
        ..Limits::default()
    });
    let addr = h.replicas[slow].addr;
    let tls = |tcp: std::net::TcpStream| {
        let config = h.pki.client_config();
        let conn = tokio_rustls::rustls::ClientConnection::new(
            config,
            "localhost".try_into().expect("server name"),
        )
        .expect("client connection");
        tokio_rustls::rustls::StreamOwned::new(conn, tcp)
    };
    let read_all = |s: &mut dyn Read| {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };

    // The body never completes: 408 with an ErrorBody.
    let tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut s = tls(tcp);
    s.write_all(
        b"POST /v1/attest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nConnection: close\r\n\r\n{",
    )
    .expect("write");
    let answer = read_all(&mut s);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");

    // The header never completes: the connection is closed.
    let tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut s = tls(tcp);
    s.write_all(b"POST /v1/chall").expect("write");
    let started = std::time::Instant::now();
    let answer = read_all(&mut s);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed by the service"
    );
    assert!(!answer.contains("200 OK"), "{answer}");

    // No TLS handshake at all: closed.
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    let started = std::time::Instant::now();
    let n = tcp.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Still up.
    let _ = h.challenge_on(slow);
}

/// Evidence with one byte changed or cut short, in every binary field but the event log
/// (whose event data the TPM does not measure): each is refused with 403 and a reason,
/// never a panic or a dropped connection; the service stays up.
pub fn mutated_evidence(h: &Harness, g: &Guest) {
    g.persist_ak();
    let pcrs = g.pcrs(SELECTION);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    type Field = fn(&mut AttestRequest) -> &mut String;
    let fields: [(&str, Field); 9] = [
        ("report", |r| &mut r.nv.report),
        ("ca_cert", |r| &mut r.nv.ca_cert),
        ("rsa_ek_cert", |r| &mut r.nv.rsa_ek_cert),
        ("ecc_ek_cert", |r| &mut r.nv.ecc_ek_cert),
        ("vcek_cert", |r| r.nv.vcek_cert.as_mut().expect("a VCEK")),
        ("ek_public", |r| &mut r.ek_public),
        ("ak_public", |r| &mut r.ak_public),
        ("quote", |r| &mut r.quote),
        ("quote_signature", |r| &mut r.quote_signature),
    ];
    for round in 0..90 {
        let (name, field) = fields[round % fields.len()];
        let c = h.challenge();
        let mut req = g.raw_request(&c, &pcrs);
        let slot = field(&mut req);
        let mut bytes = unb64(slot);
        let at = (next() % bytes.len() as u64) as usize;
        if next() % 4 == 0 {
            bytes.truncate(at);
        } else {
            bytes[at] ^= 1 << (next() % 8);
        }
        *slot = b64(&bytes);
        match h.attest(&req) {
            Err((403, body)) => {
                assert_eq!(body.error, "denied");
                assert!(!body.reason.is_empty());
            }
            other => panic!("{name} changed at byte {at}: {other:?}"),
        }
    }
    let c = h.challenge();
    h.attest(&g.raw_request(&c, &pcrs))
        .expect("the unchanged evidence is still allowed");
}
