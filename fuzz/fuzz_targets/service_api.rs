//! The verification service's API bodies on hostile input: the JSON of `POST /v1/attest`
//! and `POST /v1/challenge` (svsm_protocol::service_api), the decoding of every field
//! (base64, hex, bank names), and each check of the pipeline on what decodes (the NV
//! evidence, the quote, the measured boot), each run on its own so that the fuzzer reaches
//! the later ones without first forging the earlier. The policy is fixed: the Milan
//! chain's ARK and ASK, the real report's measurement, the forky event log's learned boot
//! policy.
//!
//! Input: the HTTP body as the service receives it. Errors are expected; a panic or a
//! hang is a finding, and so is evidence that passes a check it cannot pass (no input can
//! hold a quote over the fixed nonce by a key whose NV evidence verifies).
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use svsm_protocol::service_api::{AttestRequest, ChallengeRequest};
use svsm_service::attest::{self, Decoded};
use svsm_service::policy::Policy;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../igvm/verifier/tests/data");

/// The nonce every fuzzed quote is checked against.
const NONCE: [u8; 32] = [0x4E; 32];

static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    let data = Path::new(DATA);
    let report = std::fs::read(data.join("report.bin")).expect("the Milan report");
    // The report's MEASUREMENT (offset 0x90, 48 bytes).
    let measurement: String = report[0x90..0xC0]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let boot = std::fs::read_to_string(data.join("eventlog-ovmf-forky.policy.toml"))
        .expect("the forky boot policy");
    let boot: toml::Value = toml::from_str(&boot).expect("a TOML boot policy");
    let mut file = toml::Table::new();
    let mut snp = toml::Table::new();
    snp.insert("measurements".into(), vec![measurement].into());
    snp.insert("min_tcb".into(), "bl=0".into());
    snp.insert("ark".into(), "ark.pem".into());
    snp.insert("ask".into(), "ask.pem".into());
    file.insert("snp".into(), snp.into());
    file.insert("boot".into(), boot);
    let mut release = toml::Table::new();
    release.insert("secret".into(), "disk-key".into());
    file.insert("release".into(), release.into());
    let text = toml::to_string(&file).expect("the policy serializes");
    Policy::parse(&text, data).expect("the fuzz target's policy loads")
});

fuzz_target!(|data: &[u8]| {
    let policy = &*POLICY;
    let _ = serde_json::from_slice::<ChallengeRequest>(data);
    let Ok(request) = serde_json::from_slice::<AttestRequest>(data) else {
        return;
    };
    let _ = attest::ek_id(request.ek_public.as_bytes());
    let Ok(decoded) = Decoded::from_request(&request) else {
        return;
    };
    let _ = attest::ek_id(&decoded.ek_public);
    assert!(
        attest::check_nv(policy, &decoded, None).is_err(),
        "fuzzed NV evidence verified under the Milan chain"
    );
    if let Ok(quote) = attest::check_quote(policy, &decoded, &NONCE) {
        let _ = attest::check_boot(policy, &decoded, &quote.pcrs);
    }
    let quoted: Vec<(u8, Vec<u8>)> = decoded
        .pcrs
        .iter()
        .map(|(_, index, value)| (*index, value.clone()))
        .collect();
    let _ = attest::check_boot(policy, &decoded, &quoted);
});
