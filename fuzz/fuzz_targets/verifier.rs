//! The attestation verifier on hostile evidence: SNP report, VCEK/ASK/ARK chain and the
//! host's certificate table, TPM structures (TPMT_PUBLIC, TPMT_SIGNATURE, TPMS_ATTEST),
//! the services manifest, the challenge file, and the whole chain of checks; the TCG event
//! log parser and its replay, and the measured-boot policy (TOML, and its check of a log
//! against quoted PCRs).
//!
//! Input: one mode byte, then parts, each a little-endian u16 length and its bytes (the
//! seed corpus is made from the real Milan report and chain and tpm2-tools output in this
//! form). Errors are expected; a panic, a hang or an acceptance of evidence that does not
//! verify is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use svsm_verifier::boot_policy::BootPolicy;
use svsm_verifier::chain::Chain;
use svsm_verifier::eventlog::{EventLog, ALG_SHA256};
use svsm_verifier::reference;
use svsm_verifier::{
    manifest, tpm, Challenge, Evidence, ExpectedPcrs, ManifestKind, Policy, Report, VcekTrust,
};

const MILAN_VCEK: &[u8] = include_bytes!("../../igvm/verifier/tests/data/vcek.der");
const MILAN_ASK: &[u8] = include_bytes!("../../igvm/verifier/tests/data/ask.pem");
const MILAN_ARK: &[u8] = include_bytes!("../../igvm/verifier/tests/data/ark.pem");

fn parts(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 8 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let len = len.min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

fn part<'a>(parts: &[&'a [u8]], i: usize) -> &'a [u8] {
    parts.get(i).copied().unwrap_or(&[])
}

fn milan_chain() -> Chain {
    Chain::parse(MILAN_VCEK, MILAN_ASK, MILAN_ARK).expect("the Milan chain parses")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let p = parts(rest);
    match mode % 12 {
        0 => {
            if let Ok(report) = Report::parse(part(&p, 0)) {
                let _ = (
                    report.version(),
                    report.policy(),
                    report.vmpl(),
                    report.measurement(),
                );
                let key = milan_chain().vcek.p384_key().expect("Milan VCEK key");
                let _ = report.verify_signature(&key);
            }
        }
        1 => {
            if let Ok(chain) = Chain::parse(part(&p, 0), part(&p, 1), part(&p, 2)) {
                let _ = chain.verify();
            }
        }
        2 => {
            if let Ok(chain) = Chain::from_cert_table(part(&p, 0), MILAN_ARK) {
                let _ = chain.verify();
            }
        }
        3 => {
            if let Ok(public) = tpm::Public::parse(part(&p, 0)) {
                let _ = public.name();
                let _ = public.check_endorsement_key();
                let _ = public.rsa_key();
            }
        }
        4 => {
            if let (Ok(sig), Ok(key)) = (
                tpm::Signature::parse(part(&p, 0)),
                tpm::Public::parse(part(&p, 1)),
            ) {
                let _ = sig.verify(&key, part(&p, 2));
            }
        }
        5 => {
            let _ = tpm::Quote::parse(part(&p, 0));
        }
        6 => {
            let m = part(&p, 0);
            let _ = manifest::vtpm_ek(m);
            let _ = manifest::find_service(m, manifest::VTPM_GUID);
        }
        7 => {
            if let Ok(text) = std::str::from_utf8(part(&p, 0)) {
                let _ = Challenge::from_text(text);
            }
        }
        8 => {
            let trust = VcekTrust::Chain(Box::new(milan_chain()));
            let nonce = part(&p, 1);
            let result =
                svsm_verifier::verify_report(&trust, part(&p, 0), Some((nonce, part(&p, 2))), None);
            // The real report binds no nonce of 64 bytes of ours: only the true report
            // with its own REPORT_DATA could pass, and then the nonce and manifest hash to it.
            if let Ok(report) = result {
                assert_eq!(
                    report.report_data(),
                    &svsm_verifier::report_data(nonce, part(&p, 2))
                );
            }
        }
        10 => {
            if let Ok(log) = EventLog::parse(part(&p, 0)) {
                for (alg, _) in &log.banks {
                    let _ = log.replay(*alg);
                }
                for event in &log.events {
                    let _ = event.startup_locality();
                }
            }
            // The second part as a kernel image (the PE Authenticode digest, and the image
            // as QEMU's direct boot patches it) and as an OVMF image (its volumes).
            let image = part(&p, 1);
            let _ = reference::pe_authenticode_digest(image, ALG_SHA256);
            let _ = reference::ovmf_firmware_volumes(image);
            let _ = reference::qemu_direct_boot_kernel(image, Some(image.len() as u64), 512 << 20);
        }
        11 => {
            let Ok(policy) = BootPolicy::from_toml(std::str::from_utf8(part(&p, 0)).unwrap_or(""))
            else {
                return;
            };
            // What the policy writes, it reads back as the same policy.
            let again = BootPolicy::from_toml(&policy.to_toml()).expect("to_toml reads back");
            assert_eq!(again, policy);
            let Ok(log) = EventLog::parse(part(&p, 1)) else {
                return;
            };
            // The quoted PCRs: (index, value) records of 1 + digest-size bytes.
            let (alg, _) = policy.pcr_selection();
            let size = log.digest_size(alg).unwrap_or(32);
            let quoted: Vec<(u8, Vec<u8>)> = part(&p, 2)
                .chunks_exact(1 + size)
                .map(|c| (c[0], c[1..].to_vec()))
                .collect();
            if policy.check(&log, &quoted).is_ok() {
                // A passing boot replays to the quote on every PCR of the policy.
                let replayed = log.replay(alg).expect("replay after a passing check");
                for pcr in policy.pcr_selection().1 {
                    let value = replayed
                        .get(&u32::from(pcr))
                        .cloned()
                        .or_else(|| log.initial_value(alg, u32::from(pcr)))
                        .expect("bank present");
                    assert!(quoted.iter().any(|(i, v)| *i == pcr && *v == value));
                }
            }
        }
        _ => {
            let text = std::str::from_utf8(part(&p, 0)).unwrap_or("");
            let Ok(challenge) = Challenge::from_text(text) else {
                return;
            };
            let policy = Policy {
                manifest_kind: if part(&p, 7).is_empty() {
                    ManifestKind::Services
                } else {
                    ManifestKind::Vtpm
                },
                vcek: VcekTrust::Chain(Box::new(milan_chain())),
                nonce: part(&p, 1).to_vec(),
                pcrs: ExpectedPcrs {
                    hash_alg: 0xB,
                    values: vec![(0, vec![0; 32])],
                },
                measurement: None,
            };
            let evidence = Evidence {
                report: part(&p, 2),
                manifest: part(&p, 3),
                ak_public: part(&p, 4),
                activated_secret: part(&p, 5),
                quote: part(&p, 6),
                quote_signature: part(&p, 7),
            };
            let _ = svsm_verifier::verify(&policy, &challenge, &evidence);
        }
    }
});
