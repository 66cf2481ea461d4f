//! The whole attestation chain on the emulated machine, and the tampering cases.
//!
//! A guest asks the SVSM for an attestation (ATTEST_SERVICES through its calling area,
//! with a nonce), gets a report and the services manifest; it creates an attestation key
//! in its vTPM (through SVSM_VTPM_CMD), the verifier challenges that key under the
//! manifest's EK (MakeCredential), the vTPM answers (ActivateCredential), and the guest
//! quotes its PCRs with the nonce. The verifier checks everything against the emulated
//! PSP's test chain ARK → ASK → VCEK. Then each link is broken in turn and the verifier
//! must name exactly that link.

mod attest_common;

use std::sync::OnceLock;

use attest_common::{ak_template, World, MEASUREMENT};
use sha2::{Digest, Sha256};
use svsm::platform::PspError;
use svsm::psp::{GuestMessageError, GuestMessenger};
use svsm_emulated::psp::{test_chain, test_vcek, EmulatedPsp, FW_ERR_REFUSED, TEST_VMPCK0};
use svsm_protocol::manifest::VTPM_SERVICE_GUID;
use svsm_protocol::SvsmResultCode;
use svsm_verifier::chain::Chain;
use svsm_verifier::{
    manifest, tpm, verify, Challenge, Error, Evidence, ExpectedPcrs, ManifestKind, Policy,
    VcekTrust,
};

/// Everything one honest run produced, plus the extra material the tampering cases
/// need (made in the same run, against the same vTPM).
struct Bundle {
    /// An ECC P-256 AK, challenged and activated, and its quote.
    ecc: (Vec<u8>, Challenge, Vec<u8>, Vec<u8>, Vec<u8>),
    /// (report, manifest) from ATTEST_SINGLE_SERVICE for the vTPM, same nonce.
    single: (Vec<u8>, Vec<u8>),
    certificates: Vec<u8>,
    nonce: Vec<u8>,
    report: Vec<u8>,
    manifest: Vec<u8>,
    ak_public: Vec<u8>,
    challenge: Challenge,
    activated: Vec<u8>,
    quote: Vec<u8>,
    signature: Vec<u8>,
    pcrs: ExpectedPcrs,
    chain: Chain,
    /// A quote by the same AK over the same PCRs with an older nonce.
    stale_quote: (Vec<u8>, Vec<u8>),
    /// A second AK, never challenged, and its quote with the right nonce.
    other_ak: (Vec<u8>, Vec<u8>, Vec<u8>),
    /// An unrestricted signing key, challenged and activated, and its quote.
    unrestricted: (Vec<u8>, Challenge, Vec<u8>, Vec<u8>, Vec<u8>),
    /// A challenge made for an EK no TPM holds, and the TPM's answer to it.
    foreign_challenge: (Challenge, u32),
    /// A report for the same nonce and manifest, signed by another chip's key.
    report_other_key: Vec<u8>,
}

const PCR0_EVENT: [u8; 32] = [0xA0; 32];
const PCR7_EVENT: [u8; 32] = [0xA7; 32];

fn extended(event: &[u8; 32]) -> Vec<u8> {
    Sha256::new()
        .chain_update([0u8; 32])
        .chain_update(event)
        .finalize()
        .to_vec()
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom_sys_rng::fill(&mut v).expect("randomness");
    v
}

fn bundle() -> &'static Bundle {
    static BUNDLE: OnceLock<Bundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let world = World::new();
        let rng = &mut getrandom_sys_rng::SysRng;
        // Measured boot put two events into the vTPM.
        world.pcr_extend(0, &PCR0_EVENT);
        world.pcr_extend(7, &PCR7_EVENT);

        // 1. The attestation: report and manifest for the verifier's nonce.
        // The guest starts with a certificate buffer that is too small, learns the size
        // from RDX and retries, as Linux does.
        let nonce = random(64);
        let (report, manifest, certificates) = world.attest_with(&nonce, 0x10);
        assert_eq!(report.len(), 0x4A0);

        // 2. The guest's EK (made again from template L-1) is the manifest's.
        let ek = world.create_ek();
        assert_eq!(manifest::vtpm_ek(&manifest).unwrap(), &ek.public[..]);

        // 3. An AK, challenged under the manifest's EK and activated by the vTPM.
        let ak = world.create_primary(&ak_template(true, &[]));
        let challenge = Challenge::new(rng, &ek.public, &ak.public).unwrap();
        let activated = world
            .activate_credential(
                ak.handle,
                ek.handle,
                &challenge.blob.id_object,
                &challenge.blob.encrypted_secret,
            )
            .expect("the vTPM activates the credential");
        assert_eq!(activated, challenge.secret());

        // 4. The quote over PCRs 0 and 7 with the nonce.
        let (quote, signature) = world.quote(ak.handle, &nonce, &[0, 7]);
        let stale_quote = world.quote(ak.handle, &random(64), &[0, 7]);

        // Material for the tampering cases.
        let ak2 = world.create_primary(&ak_template(true, b"second AK"));
        assert_ne!(ak2.public, ak.public);
        let (q2, s2) = world.quote(ak2.handle, &nonce, &[0, 7]);
        let other_ak = (ak2.public.clone(), q2, s2);
        world.flush(ak2.handle);

        let loose = world.create_primary(&ak_template(false, &[]));
        let loose_challenge = Challenge::new(rng, &ek.public, &loose.public).unwrap();
        let loose_secret = world
            .activate_credential(
                loose.handle,
                ek.handle,
                &loose_challenge.blob.id_object,
                &loose_challenge.blob.encrypted_secret,
            )
            .expect("activation does not care about the key's attributes");
        let (q3, s3) = world.quote(loose.handle, &nonce, &[0, 7]);
        let unrestricted = (loose.public.clone(), loose_challenge, loose_secret, q3, s3);
        world.flush(loose.handle);

        // An ECC P-256 attestation key, through the same steps.
        let ecc_ak = world.create_primary(&attest_common::ecc_ak_template());
        let ecc_challenge = Challenge::new(rng, &ek.public, &ecc_ak.public).unwrap();
        let ecc_secret = world
            .activate_credential(
                ecc_ak.handle,
                ek.handle,
                &ecc_challenge.blob.id_object,
                &ecc_challenge.blob.encrypted_secret,
            )
            .expect("the vTPM activates the ECC AK's credential");
        let (q4, s4) = world.quote(ecc_ak.handle, &nonce, &[0, 7]);
        let ecc = (ecc_ak.public.clone(), ecc_challenge, ecc_secret, q4, s4);
        world.flush(ecc_ak.handle);

        // An EK that no TPM holds: same shape, another modulus.
        let mut foreign_ek = ek.public.clone();
        let at = foreign_ek.len() - 100;
        foreign_ek[at] ^= 0x55;
        let foreign = Challenge::new(rng, &foreign_ek, &ak.public).unwrap();
        let refused = world
            .activate_credential(
                ak.handle,
                ek.handle,
                &foreign.blob.id_object,
                &foreign.blob.encrypted_secret,
            )
            .expect_err("the vTPM cannot open a credential sealed to another EK");

        // The same nonce through ATTEST_SINGLE_SERVICE for the vTPM: the manifest is the
        // bare EK.
        let out = world.attest_single(&nonce, VTPM_SERVICE_GUID, 0);
        assert_eq!(SvsmResultCode::from_raw(out.rax), SvsmResultCode::SUCCESS);
        let single = (
            world.read(attest_common::REPORT_PAGE, out.r8 as usize),
            world.read(attest_common::MANIFEST_PAGE, out.rcx as usize),
        );

        // The same attestation from a machine whose PSP signs with another key.
        let psp = world.system.machine().psp();
        psp.set_signing_key(p384::ecdsa::SigningKey::from_slice(&[0x42; 48]).unwrap());
        let (report_other_key, _) = world.attest(&nonce);
        psp.set_signing_key(test_vcek());

        // VCEK and ASK come from the host's certificate table the SVSM returned; the ARK
        // is the verifier's own trust anchor.
        let ark = test_chain(&psp.vcek_public_key()).unwrap().ark_pem;
        let chain = Chain::from_cert_table(&certificates, ark.as_bytes()).unwrap();

        let bundle = Bundle {
            ecc,
            single,
            certificates,
            nonce,
            report,
            manifest,
            ak_public: ak.public,
            challenge,
            activated,
            quote,
            signature,
            pcrs: ExpectedPcrs {
                hash_alg: tpm::ALG_SHA256,
                values: vec![(0, extended(&PCR0_EVENT)), (7, extended(&PCR7_EVENT))],
            },
            chain,
            stale_quote,
            other_ak,
            unrestricted,
            foreign_challenge: (foreign, refused),
            report_other_key,
        };
        save_for_the_cli(&bundle);
        bundle
    })
}

/// Leaves the honest evidence where `cargo xtask test` runs `svsm-verify full` on it.
fn save_for_the_cli(b: &Bundle) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("attest-evidence");
    std::fs::create_dir_all(&dir).unwrap();
    let chain = test_chain(&EmulatedPsp::default().vcek_public_key()).unwrap();
    let nonce = hex_string(&b.nonce);
    let challenge = b.challenge.to_text();
    let files: [(&str, &[u8]); 13] = [
        ("certs.bin", &b.certificates),
        ("single-manifest.bin", &b.single.1),
        ("report.bin", &b.report),
        ("manifest.bin", &b.manifest),
        ("nonce.hex", nonce.as_bytes()),
        ("ak.pub", &b.ak_public),
        ("challenge", challenge.as_bytes()),
        ("activated.bin", &b.activated),
        ("quote.bin", &b.quote),
        ("quote.sig", &b.signature),
        ("vcek.der", &chain.vcek_der),
        ("ask.pem", chain.ask_pem.as_bytes()),
        ("ark.pem", chain.ark_pem.as_bytes()),
    ];
    for (name, data) in files {
        std::fs::write(dir.join(name), data).unwrap();
    }
    use p384::pkcs8::EncodePublicKey;
    let key_pem = EmulatedPsp::default()
        .vcek_public_key()
        .to_public_key_pem(p384::pkcs8::LineEnding::LF)
        .unwrap();
    std::fs::write(dir.join("vcek.pub.pem"), key_pem).unwrap();
    let pcrs: Vec<String> = b
        .pcrs
        .values
        .iter()
        .map(|(i, v)| format!("sha256:{i}={}", hex_string(v)))
        .collect();
    std::fs::write(dir.join("pcrs.txt"), pcrs.join("\n")).unwrap();
    std::fs::write(dir.join("measurement.hex"), hex_string(&MEASUREMENT)).unwrap();
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn policy(b: &Bundle) -> Policy {
    Policy {
        manifest_kind: ManifestKind::Services,
        vcek: VcekTrust::Chain(Box::new(b.chain.clone())),
        nonce: b.nonce.clone(),
        pcrs: b.pcrs.clone(),
        measurement: Some(MEASUREMENT),
    }
}

fn evidence(b: &Bundle) -> Evidence<'_> {
    Evidence {
        report: &b.report,
        manifest: &b.manifest,
        ak_public: &b.ak_public,
        activated_secret: &b.activated,
        quote: &b.quote,
        quote_signature: &b.signature,
    }
}

#[test]
fn the_whole_chain_verifies() {
    let b = bundle();
    let verified = verify(&policy(b), &b.challenge, &evidence(b)).expect("the chain verifies");
    assert_eq!(verified.report.measurement(), &MEASUREMENT);
    assert_eq!(verified.report.vmpl(), 0);
    assert_eq!(verified.quote.extra_data, b.nonce);
    // The same evidence with the VCEK key trusted directly.
    let mut p = policy(b);
    p.vcek = VcekTrust::Key(EmulatedPsp::default().vcek_public_key());
    verify(&p, &b.challenge, &evidence(b)).unwrap();
}

#[test]
fn an_ecc_attestation_key_verifies() {
    let b = bundle();
    let (public, challenge, secret, quote, signature) = &b.ecc;
    let e = Evidence {
        ak_public: public,
        activated_secret: secret,
        quote,
        quote_signature: signature,
        ..evidence(b)
    };
    verify(&policy(b), challenge, &e).expect("an ECDSA P-256 AK's quote verifies");
    // And its signature is really checked.
    let mut bad = quote.clone();
    let at = bad.len() - 1;
    bad[at] ^= 1;
    let e = Evidence { quote: &bad, ..e };
    assert_eq!(rejected(&policy(b), challenge, &e), Error::QuoteSignature);
}

/// The verifier's MakeCredential for an ECC endorsement key (template L-2, NIST P-256):
/// one-pass ECDH and KDFe, opened by the engine's ActivateCredential; a challenge sealed
/// to the ECC EK opens nowhere else, and a tampered ephemeral point or HMAC is refused.
#[test]
fn an_ecc_endorsement_key_activates_a_credential() {
    let world = World::new();
    let rng = &mut getrandom_sys_rng::SysRng;
    let ecc_ek = world.create_primary(&vtpm::EkTemplate::EccL2.public_template());
    let ek = tpm::Public::parse(&ecc_ek.public).unwrap();
    assert_eq!(
        (ek.kind, ek.ecc.as_ref().map(|e| e.0)),
        (tpm::ALG_ECC, Some(tpm::ECC_NIST_P256))
    );
    let ak = world.create_primary(&ak_template(true, &[]));

    let challenge = Challenge::new(rng, &ecc_ek.public, &ak.public).unwrap();
    // The encrypted secret is the ephemeral point: TPM2B { TPM2B x, TPM2B y }, 32 bytes each.
    assert_eq!(challenge.blob.encrypted_secret.len(), 2 + 2 + 32 + 2 + 32);
    let activated = world
        .activate_credential(
            ak.handle,
            ecc_ek.handle,
            &challenge.blob.id_object,
            &challenge.blob.encrypted_secret,
        )
        .expect("the vTPM activates a credential made for its ECC EK");
    assert_eq!(activated, challenge.secret());

    // Each challenge draws a fresh ephemeral key.
    let again = Challenge::new(rng, &ecc_ek.public, &ak.public).unwrap();
    assert_ne!(again.blob.encrypted_secret, challenge.blob.encrypted_secret);

    // The ephemeral point moved off the curve: the TPM refuses it.
    let mut off_curve = challenge.blob.encrypted_secret.clone();
    off_curve[5] ^= 0x01;
    assert!(world
        .activate_credential(
            ak.handle,
            ecc_ek.handle,
            &challenge.blob.id_object,
            &off_curve
        )
        .is_err());
    // The outer HMAC altered: the integrity check fails.
    let mut bad_hmac = challenge.blob.id_object.clone();
    bad_hmac[5] ^= 0x01;
    assert!(world
        .activate_credential(
            ak.handle,
            ecc_ek.handle,
            &bad_hmac,
            &challenge.blob.encrypted_secret
        )
        .is_err());
    world.flush(ecc_ek.handle);

    // The same blob against the RSA EK (another key type altogether) opens nothing.
    let rsa_ek = world.create_ek();
    assert!(world
        .activate_credential(
            ak.handle,
            rsa_ek.handle,
            &challenge.blob.id_object,
            &challenge.blob.encrypted_secret,
        )
        .is_err());
    world.flush(rsa_ek.handle);
    world.flush(ak.handle);
}

#[test]
fn single_service_evidence_verifies() {
    let b = bundle();
    let mut p = policy(b);
    p.manifest_kind = ManifestKind::Vtpm;
    let e = Evidence {
        report: &b.single.0,
        manifest: &b.single.1,
        ..evidence(b)
    };
    let verified = verify(&p, &b.challenge, &e).expect("single-service evidence verifies");
    assert_eq!(verified.ek_public, b.single.1);
    // Read as a services manifest it is malformed, and the report binds the bare EK.
    p.manifest_kind = ManifestKind::Services;
    assert!(matches!(
        rejected(&p, &b.challenge, &e),
        Error::ManifestFormat(_)
    ));
}

fn rejected(policy: &Policy, challenge: &Challenge, evidence: &Evidence<'_>) -> Error {
    verify(policy, challenge, evidence).expect_err("tampered evidence must be rejected")
}

#[test]
fn tamper_01_flipped_report_byte() {
    let b = bundle();
    let mut report = b.report.clone();
    report[0x90] ^= 1; // a measurement byte
    let e = Evidence {
        report: &report,
        ..evidence(b)
    };
    assert_eq!(
        rejected(&policy(b), &b.challenge, &e),
        Error::ReportSignature
    );
}

#[test]
fn tamper_02_another_nonce() {
    let b = bundle();
    let mut p = policy(b);
    p.nonce[0] ^= 1;
    assert_eq!(rejected(&p, &b.challenge, &evidence(b)), Error::ReportData);
}

#[test]
fn tamper_03_another_manifest() {
    let b = bundle();
    // A well-formed manifest naming another EK.
    let mut ek = manifest::vtpm_ek(&b.manifest).unwrap().to_vec();
    let at = ek.len() - 1;
    ek[at] ^= 1;
    let other = manifest::build(&[(manifest::VTPM_GUID, &ek)]);
    let e = Evidence {
        manifest: &other,
        ..evidence(b)
    };
    assert_eq!(rejected(&policy(b), &b.challenge, &e), Error::ReportData);
}

#[test]
fn tamper_04_another_ek() {
    let b = bundle();
    let (foreign, tpm_rc) = &b.foreign_challenge;
    // The vTPM refuses to open a credential sealed to an EK it does not hold ...
    assert_ne!(*tpm_rc, 0);
    // ... and a challenge made for another EK than the manifest's is refused.
    let e = Evidence {
        activated_secret: foreign.secret(),
        ..evidence(b)
    };
    assert_eq!(rejected(&policy(b), foreign, &e), Error::EkMismatch);
}

#[test]
fn tamper_05_stale_quote() {
    let b = bundle();
    let e = Evidence {
        quote: &b.stale_quote.0,
        quote_signature: &b.stale_quote.1,
        ..evidence(b)
    };
    assert_eq!(rejected(&policy(b), &b.challenge, &e), Error::QuoteNonce);
}

#[test]
fn tamper_06_wrong_pcr_value() {
    let b = bundle();
    let mut p = policy(b);
    p.pcrs.values[1].1[0] ^= 1;
    assert_eq!(
        rejected(&p, &b.challenge, &evidence(b)),
        Error::QuotePcrDigest
    );
}

#[test]
fn tamper_07_other_pcr_selection() {
    let b = bundle();
    let mut p = policy(b);
    p.pcrs.values.push((8, vec![0; 32]));
    assert_eq!(
        rejected(&p, &b.challenge, &evidence(b)),
        Error::QuotePcrSelection
    );
}

#[test]
fn tamper_08_report_signed_by_another_key() {
    let b = bundle();
    let e = Evidence {
        report: &b.report_other_key,
        ..evidence(b)
    };
    assert_eq!(
        rejected(&policy(b), &b.challenge, &e),
        Error::ReportSignature
    );
}

#[test]
fn tamper_09_wrong_measurement() {
    let b = bundle();
    let mut p = policy(b);
    p.measurement = Some([0x11; 48]);
    assert_eq!(rejected(&p, &b.challenge, &evidence(b)), Error::Measurement);
}

#[test]
fn tamper_10_wrong_credential_secret() {
    let b = bundle();
    let mut secret = b.activated.clone();
    secret[0] ^= 1;
    let e = Evidence {
        activated_secret: &secret,
        ..evidence(b)
    };
    assert_eq!(
        rejected(&policy(b), &b.challenge, &e),
        Error::CredentialActivation
    );
}

#[test]
fn tamper_11_ak_not_the_challenged_one() {
    let b = bundle();
    let (ak2, q2, s2) = &b.other_ak;
    let e = Evidence {
        ak_public: ak2,
        quote: q2,
        quote_signature: s2,
        ..evidence(b)
    };
    assert_eq!(rejected(&policy(b), &b.challenge, &e), Error::AkMismatch);
}

#[test]
fn tamper_12_truncated_report() {
    let b = bundle();
    let e = Evidence {
        report: &b.report[..0x49F],
        ..evidence(b)
    };
    assert!(matches!(
        rejected(&policy(b), &b.challenge, &e),
        Error::ReportFormat(_)
    ));
}

#[test]
fn tamper_13_quote_altered_after_signing() {
    let b = bundle();
    let mut quote = b.quote.clone();
    let at = quote.len() - 1; // last byte of the PCR digest
    quote[at] ^= 1;
    let e = Evidence {
        quote: &quote,
        ..evidence(b)
    };
    assert_eq!(
        rejected(&policy(b), &b.challenge, &e),
        Error::QuoteSignature
    );
}

#[test]
fn tamper_14_unrestricted_signing_key() {
    let b = bundle();
    let (public, challenge, secret, quote, signature) = &b.unrestricted;
    let e = Evidence {
        ak_public: public,
        activated_secret: secret,
        quote,
        quote_signature: signature,
        ..evidence(b)
    };
    assert_eq!(rejected(&policy(b), challenge, &e), Error::AkAttributes);
}

#[test]
fn tamper_15_report_for_another_vmpl() {
    // A report the PSP made for VMPL2 (what the guest OS could get itself) does not
    // speak for the SVSM, even with a perfect binding.
    let b = bundle();
    let psp = EmulatedPsp::default();
    let mut messenger = GuestMessenger::new(TEST_VMPCK0, 0);
    let data = svsm_verifier::report_data(&b.nonce, &b.manifest);
    let report = messenger.get_report(&psp, &data, 2).unwrap();
    let e = Evidence {
        report: &report,
        ..evidence(b)
    };
    assert_eq!(rejected(&policy(b), &b.challenge, &e), Error::ReportVmpl(2));
}

#[test]
fn tamper_16_replayed_sequence_number_at_the_psp() {
    let world = World::new();
    let (_, _) = world.attest(&random(64));
    let psp = world.system.machine().psp();
    assert_eq!(psp.seqno(), 2);
    // Someone replays a request with sequence number 1 under VMPCK0 (here: a second
    // messenger holding the key, starting from 0).
    let mut replayer = GuestMessenger::new(TEST_VMPCK0, 0);
    assert_eq!(
        replayer.get_report(psp, &[0; 64], 0),
        Err(GuestMessageError::Transport(PspError::Firmware(
            FW_ERR_REFUSED
        )))
    );
    assert!(!replayer.has_key(), "the replayer's key is wiped");
    assert_eq!(psp.seqno(), 2, "the PSP state did not move");
    assert_eq!(psp.reports_signed(), 1);
    // The SVSM's own sequence is intact: the next attestation works.
    let nonce = random(64);
    let (report, manifest) = world.attest(&nonce);
    let verified = svsm_verifier::verify_report(
        &VcekTrust::Key(psp.vcek_public_key()),
        &report,
        Some((&nonce, &manifest)),
        Some(&MEASUREMENT),
    )
    .unwrap();
    assert_eq!(
        verified.report_data(),
        &svsm_verifier::report_data(&nonce, &manifest)
    );
    assert_eq!(psp.seqno(), 4);
}

#[test]
fn tamper_17_debuggable_guest() {
    // A machine launched with a policy that lets the host debug it: its report is
    // genuine and binds the right data, but the VM is not confidential.
    let b = bundle();
    let psp = EmulatedPsp::default();
    psp.set_launch(svsm_emulated::psp::LaunchInfo {
        measurement: MEASUREMENT,
        policy: 0x3_0000 | (1 << 19),
        ..svsm_emulated::psp::LaunchInfo::default()
    });
    let mut messenger = GuestMessenger::new(TEST_VMPCK0, 0);
    let data = svsm_verifier::report_data(&b.nonce, &b.manifest);
    let report = messenger.get_report(&psp, &data, 0).unwrap();
    let e = Evidence {
        report: &report,
        ..evidence(b)
    };
    assert_eq!(
        rejected(&policy(b), &b.challenge, &e),
        Error::ReportDebugPolicy(0xB_0000)
    );
}

#[test]
fn tamper_18_nonce_extended_into_a_forged_manifest() {
    // REPORT_DATA = SHA-512(nonce || manifest) has no separator. A guest that may name any
    // nonce length could ask the SVSM to attest `verifier_nonce || P` with P the start of
    // a forged manifest whose vTPM entry is an EK of its choosing and whose length
    // covers the genuine manifest the SVSM appends: the verifier, hashing its own nonce
    // and `P || genuine`, would get the same REPORT_DATA and trust the forged EK. The
    // SVSM takes nonces of at most 64 bytes, so the guest cannot move bytes across.
    let world = World::new();
    let verifier_nonce = random(64);
    let (_, genuine) = world.attest(&random(64));
    let mut forged_ek = world.create_ek().public;
    let at = forged_ek.len() - 100;
    forged_ek[at] ^= 0x55; // a key some software TPM of the guest's would hold
    tpm::Public::parse(&forged_ek)
        .unwrap()
        .check_endorsement_key()
        .expect("shaped like a real EK: the verifier cannot tell");
    let mut prefix = manifest::build(&[(manifest::VTPM_GUID, &forged_ek)]);
    let total = (prefix.len() + genuine.len()) as u32;
    prefix[16..20].copy_from_slice(&total.to_le_bytes());
    let forged: Vec<u8> = prefix.iter().chain(&genuine).copied().collect();
    assert_eq!(manifest::vtpm_ek(&forged), Ok(&forged_ek[..]));

    let long_nonce: Vec<u8> = verifier_nonce.iter().chain(&prefix).copied().collect();
    assert_eq!(
        svsm_verifier::report_data(&long_nonce, &genuine),
        svsm_verifier::report_data(&verifier_nonce, &forged),
        "the same REPORT_DATA for both splits"
    );
    world.write(attest_common::NONCE_PAGE, &long_nonce);
    let seqno = world.system.machine().psp().seqno();
    let out = world.attest_call(
        &World::request(long_nonce.len() as u32, 0x1000, 0x1000),
        world.ca() + 8,
    );
    assert_eq!(
        SvsmResultCode::from_raw(out.rax),
        SvsmResultCode::INVALID_PARAMETER,
        "a nonce beyond REPORT_DATA's 64 bytes is refused"
    );
    assert_eq!(
        world.system.machine().psp().seqno(),
        seqno,
        "and never reaches the PSP"
    );
    // Every nonce up to 64 bytes still works (Linux passes its 1..=64-byte inblob).
    for len in [1, 32, 64] {
        world.attest(&random(len));
    }
}
