//! The vTPM's endorsement evidence end to end: the SVSM's start-up provisioning with the
//! emulated PSP (test key, test chain), the evidence read back from TPM NV as a guest
//! reads it, `svsm-verifier` accepting the chain from NV contents alone, and every
//! tampered piece refused with its reason. Also: no report the guest can get through the
//! attestation protocol carries the provisioning binding.

mod attest_common;

use attest_common::{World, ENGINE};
use p384::ecdsa::SigningKey;
use svsm::psp::evidence::{provision_vtpm, PspReports};
use svsm::psp::GuestMessenger;
use svsm_emulated::psp::{
    cert_table, test_chain, test_chain_for, test_vcek, EmulatedPsp, LaunchInfo, TestChain,
};
use svsm_protocol::ek_evidence::{
    BINDING_TAG, CA_CERT_INDEX, ECC_EK_CERT_INDEX, RSA_EK_CERT_INDEX, SNP_REPORT_INDEX,
    VCEK_CERT_INDEX,
};
use svsm_verifier::chain::Chain;
use svsm_verifier::ek_nv::{verify_nv_evidence, EkPolicy, MeasurementCheck, NvEvidence, TpmEks};
use svsm_verifier::report::Tcb;
use svsm_verifier::{CertRole, Error, VcekTrust};
use vtpm::certs::{self, TpmIdentity};
use vtpm::provision::binding_report_data;
use vtpm::tpm::{CommandBuilder, ST_SESSIONS};
use vtpm::{EkTemplate, LibTpms, OsEntropy, Service};

const MEASUREMENT: [u8; 48] = [0x4D; 48];

/// What a guest reads from NV, plus the pieces a verifier gets elsewhere.
#[derive(Clone)]
struct Evidence {
    rsa: Vec<u8>,
    ecc: Vec<u8>,
    ca: Vec<u8>,
    report: Vec<u8>,
    vcek: Vec<u8>,
    chain: TestChain,
    ek_rsa: Vec<u8>,
    ek_ecc: Vec<u8>,
}

fn psp() -> EmulatedPsp {
    let psp = EmulatedPsp::default();
    psp.set_launch(LaunchInfo {
        measurement: MEASUREMENT,
        ..LaunchInfo::default()
    });
    psp
}

/// The data size of an NV index (TPM2_NV_ReadPublic).
fn nv_size(service: &mut Service<LibTpms>, index: u32) -> usize {
    let mut cmd = CommandBuilder::new(vtpm::tpm::ST_NO_SESSIONS, 0x169)
        .u32(index)
        .build();
    let mut r = vec![0u8; 4096];
    service.execute(0, &mut cmd, &mut r).unwrap();
    assert_eq!(&r[6..10], &[0, 0, 0, 0], "NV_ReadPublic {index:#x}");
    // header, size, nvIndex, nameAlg, attributes, authPolicy (TPM2B), dataSize.
    let policy = u16::from_be_bytes([r[22], r[23]]) as usize;
    u16::from_be_bytes([r[24 + policy], r[25 + policy]]) as usize
}

/// TPM2_NV_Read of a whole index with its own (empty) authorization.
fn nv_read(service: &mut Service<LibTpms>, index: u32) -> Vec<u8> {
    let size = nv_size(service, index);
    let mut out = Vec::new();
    while out.len() < size {
        let chunk = (size - out.len()).min(512);
        let mut cmd = CommandBuilder::new(ST_SESSIONS, 0x14E)
            .u32(index)
            .u32(index)
            .password_auth()
            .u16(chunk as u16)
            .u16(out.len() as u16)
            .build();
        let mut response = vec![0u8; 4096];
        service.execute(0, &mut cmd, &mut response).unwrap();
        let rc = u32::from_be_bytes(response[6..10].try_into().unwrap());
        assert_eq!(rc, 0, "NV_Read {index:#x}");
        let len = u16::from_be_bytes([response[14], response[15]]) as usize;
        assert_eq!(len, chunk);
        out.extend_from_slice(&response[16..16 + len]);
    }
    out
}

/// One boot: the vTPM starts, the SVSM's provisioning runs with the emulated PSP (which
/// hands the test chain's VCEK in its certificate table), and the guest reads NV.
fn genuine() -> Evidence {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut service = vtpm::start(Box::new(OsEntropy)).expect("the vTPM starts");
    let psp = psp();
    let chain = test_chain(&psp.vcek_public_key()).unwrap();
    psp.set_cert_table(cert_table(&chain).unwrap());
    let mut messenger = GuestMessenger::new(psp.vmpck0(), 0);
    let mut reports = PspReports::new(&mut messenger, &psp).with_certificates();
    let done = provision_vtpm(&mut service, Some(&mut reports)).expect("provisioning");
    assert_eq!(done.uncertified, None);
    assert_eq!(done.indices.len(), 5);
    Evidence {
        rsa: nv_read(&mut service, RSA_EK_CERT_INDEX),
        ecc: nv_read(&mut service, ECC_EK_CERT_INDEX),
        ca: nv_read(&mut service, CA_CERT_INDEX),
        report: nv_read(&mut service, SNP_REPORT_INDEX),
        vcek: nv_read(&mut service, VCEK_CERT_INDEX),
        ek_rsa: service.endorsement_key(EkTemplate::RsaL1).to_vec(),
        ek_ecc: service.endorsement_key(EkTemplate::EccL2).to_vec(),
        chain,
    }
}

/// Evidence made the way provisioning makes it, with a CA key the test holds (so that
/// it can forge what an attacker without the SVSM's key could not).
fn with_ca_key(base: &Evidence, ca: &SigningKey, report_vmpl: u32, psp: &EmulatedPsp) -> Evidence {
    let spki = certs::ca_public_key_der(ca).unwrap();
    let report_data = binding_report_data(&spki, &base.ek_rsa, &base.ek_ecc, &[]);
    let mut m = GuestMessenger::new(psp.vmpck0(), psp.seqno());
    let report = m
        .get_report(psp, &report_data, report_vmpl)
        .unwrap()
        .to_vec();
    let identity = TpmIdentity::default();
    Evidence {
        ca: certs::ca_certificate(ca, &[1; 16], &report).unwrap(),
        rsa: certs::ek_certificate(ca, &[2; 16], &base.ek_rsa, &identity, &report).unwrap(),
        ecc: certs::ek_certificate(ca, &[3; 16], &base.ek_ecc, &identity, &report).unwrap(),
        report,
        ..base.clone()
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 48]).unwrap()
}

fn policy(e: &Evidence) -> EkPolicy {
    EkPolicy {
        vcek: VcekTrust::Chain(Box::new(
            Chain::parse(
                &e.vcek,
                e.chain.ask_pem.as_bytes(),
                e.chain.ark_pem.as_bytes(),
            )
            .unwrap(),
        )),
        measurement: MeasurementCheck::Expect(MEASUREMENT),
        min_tcb: Some(Tcb::from_u64(LaunchInfo::default().tcb)),
        min_state_generation: None,
    }
}

fn check(e: &Evidence, p: &EkPolicy) -> Result<(), Error> {
    verify_nv_evidence(
        p,
        &NvEvidence {
            rsa_ek_cert: &e.rsa,
            ecc_ek_cert: &e.ecc,
            ca_cert: &e.ca,
            report: &e.report,
            state: None,
        },
        TpmEks {
            rsa: Some(&e.ek_rsa),
            ecc: Some(&e.ek_ecc),
        },
    )
    .map(|_| ())
}

#[test]
fn the_chain_from_nv_contents_alone_is_accepted() {
    let e = genuine();
    assert_eq!(e.report.len(), 0x4A0);
    let verified = verify_nv_evidence(
        &policy(&e),
        &NvEvidence {
            rsa_ek_cert: &e.rsa,
            ecc_ek_cert: &e.ecc,
            ca_cert: &e.ca,
            report: &e.report,
            state: None,
        },
        TpmEks::default(),
    )
    .expect("the genuine evidence verifies");
    // The EKs the verifier rebuilt from the certificates are the TPM's own.
    assert_eq!(verified.ek_rsa, e.ek_rsa);
    assert_eq!(verified.ek_ecc, e.ek_ecc);
    assert_eq!(verified.report.vmpl(), 0);
    // The VCEK in NV is the test chain's.
    assert_eq!(e.vcek, e.chain.vcek_der);
    save_for_the_cli(&e);
}

/// Leaves the NV evidence where `cargo xtask test` runs `svsm-verify ek` on it.
fn save_for_the_cli(e: &Evidence) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ek-evidence");
    std::fs::create_dir_all(&dir).unwrap();
    let measurement: String = MEASUREMENT.iter().map(|b| format!("{b:02x}")).collect();
    let files: [(&str, &[u8]); 9] = [
        ("0x01C00002.der", &e.rsa),
        ("0x01C0000A.der", &e.ecc),
        ("0x01C00100.der", &e.ca),
        ("0x01C00101.der", &e.vcek),
        ("0x01C00110.bin", &e.report),
        ("ask.pem", e.chain.ask_pem.as_bytes()),
        ("ark.pem", e.chain.ark_pem.as_bytes()),
        ("ek-rsa.pub", &e.ek_rsa),
        ("measurement.hex", measurement.as_bytes()),
    ];
    for (name, data) in files {
        std::fs::write(dir.join(name), data).unwrap();
    }
    std::fs::write(dir.join("ek-ecc.pub"), &e.ek_ecc).unwrap();
}

#[test]
fn every_tampered_piece_is_refused_with_its_reason() {
    let e = genuine();
    let p = policy(&e);
    assert_eq!(check(&e, &p), Ok(()));
    let mut cases: Vec<(&str, Result<(), Error>, Error)> = Vec::new();

    // 1. Another launch measurement.
    let mut q = p.clone();
    q.measurement = MeasurementCheck::Expect([0x11; 48]);
    cases.push(("wrong measurement", check(&e, &q), Error::Measurement));

    // 2. A VCEK of another chip, 3. of another TCB (both properly signed by the ASK).
    let vcek = test_vcek();
    let launch = LaunchInfo::default();
    for (what, chip, tcb, want) in [
        (
            "VCEK of another chip",
            [0xC2; 64],
            launch.tcb,
            Error::VcekChipId,
        ),
        (
            "VCEK of another TCB",
            launch.chip_id,
            launch.tcb + (1 << 56),
            Error::VcekTcb("microcode"),
        ),
    ] {
        let other = test_chain_for(vcek.verifying_key(), chip, tcb).unwrap();
        let mut q = p.clone();
        q.vcek = VcekTrust::Chain(Box::new(
            Chain::parse(
                &other.vcek_der,
                other.ask_pem.as_bytes(),
                other.ark_pem.as_bytes(),
            )
            .unwrap(),
        ));
        cases.push((what, check(&e, &q), want));
    }

    // 4. A report signed by another chip's key.
    let psp_other = psp();
    psp_other.set_signing_key(key(7));
    let forged = with_ca_key(&e, &key(9), 0, &psp_other);
    cases.push((
        "report signed by another key",
        check(&forged, &p),
        Error::ReportSignature,
    ));

    // 5. An EK certificate signed by another key under the CA's name.
    let own = with_ca_key(&e, &key(9), 0, &psp());
    assert_eq!(check(&own, &p), Ok(()), "a test-held CA key verifies too");
    let mut resigned = own.clone();
    resigned.rsa = certs::ek_certificate(
        &key(10),
        &[2; 16],
        &e.ek_rsa,
        &TpmIdentity::default(),
        &own.report,
    )
    .unwrap();
    cases.push((
        "EK certificate signed by another key",
        check(&resigned, &p),
        Error::CertificateSignature(CertRole::RsaEk),
    ));

    // 6. A report that binds another CA: the certificates of CA 9, the report of CA 10.
    let mut other_ca = own.clone();
    other_ca.report = with_ca_key(&e, &key(10), 0, &psp()).report;
    // The CA's name points to its report, so swap the pointer too: the binding must
    // still fail.
    let key9 = key(9);
    other_ca.ca = certs::ca_certificate(&key9, &[1; 16], &other_ca.report).unwrap();
    let identity = TpmIdentity::default();
    other_ca.rsa =
        certs::ek_certificate(&key9, &[2; 16], &e.ek_rsa, &identity, &other_ca.report).unwrap();
    other_ca.ecc =
        certs::ek_certificate(&key9, &[3; 16], &e.ek_ecc, &identity, &other_ca.report).unwrap();
    cases.push((
        "report binding another CA",
        check(&other_ca, &p),
        Error::EkBinding,
    ));

    // 7. A report requested at VMPL1.
    let vmpl1 = with_ca_key(&e, &key(9), 1, &psp());
    cases.push(("report at VMPL1", check(&vmpl1, &p), Error::ReportVmpl(1)));

    // 8. An EK certificate for another key (the CA signs it, the report does not bind it).
    let mut other_ek = e.ek_rsa.clone();
    let at = other_ek.len() - 100;
    other_ek[at] ^= 0x5A;
    let mut swapped = own.clone();
    swapped.rsa =
        certs::ek_certificate(&key9, &[4; 16], &other_ek, &identity, &own.report).unwrap();
    cases.push((
        "EK certificate for another key",
        check(&swapped, &p),
        Error::EkBinding,
    ));
    // ... and a TPM whose EK is not the certified one.
    let mut tpm = own.clone();
    tpm.ek_rsa = other_ek;
    cases.push((
        "the TPM's EK differs from the certified one",
        check(&tpm, &p),
        Error::EkPublicMismatch(CertRole::RsaEk),
    ));

    // 9. Truncated NV content: the report, then the CA certificate.
    let mut short = e.clone();
    short.report.truncate(0x400);
    cases.push((
        "truncated report",
        check(&short, &p),
        Error::ReportFormat("not 0x4A0 bytes long"),
    ));
    let mut short = e.clone();
    short.ca.truncate(short.ca.len() / 2);
    let got = check(&short, &p);
    assert!(
        matches!(
            got,
            Err(Error::CertificateFormat(CertRole::EndorsementCa, _))
        ),
        "truncated CA certificate: {got:?}"
    );
    let mut empty = e.clone();
    empty.ecc.clear();
    assert!(matches!(check(&empty, &p), Err(Error::NvEvidence(_))));

    // 10. A report from another launch (another boot's evidence).
    let other_boot = genuine();
    let mut mixed = e.clone();
    mixed.report = other_boot.report.clone();
    cases.push((
        "report from another launch",
        check(&mixed, &p),
        Error::EvidencePointer,
    ));

    // 11. A TCB below the verifier's minimum.
    let mut q = p.clone();
    q.min_tcb = Some(Tcb {
        microcode: 200,
        ..Tcb::from_u64(launch.tcb)
    });
    let got = check(&e, &q);
    assert!(matches!(got, Err(Error::TcbBelowMinimum(_))), "{got:?}");

    // 12. A report whose SIGNING_KEY field says VLEK (re-signed with the test VCEK).
    let mut vlek = e.clone();
    vlek.report[0x48] |= 1 << 2;
    let signature: p384::ecdsa::Signature =
        p384::ecdsa::signature::Signer::sign(&test_vcek(), &vlek.report[..0x2A0]);
    vlek.report[0x2A0..0x2A0 + 144]
        .copy_from_slice(&svsm_verifier::report::encode_signature(&signature));
    cases.push((
        "report signed by a VLEK",
        check(&vlek, &p),
        Error::ReportSigningKey(1),
    ));

    // 13. A policy that allows debugging.
    let debug_psp = psp();
    debug_psp.set_launch(LaunchInfo {
        measurement: MEASUREMENT,
        policy: 0x3_0000 | (1 << 19),
        ..LaunchInfo::default()
    });
    let debug = with_ca_key(&e, &key(9), 0, &debug_psp);
    let got = check(&debug, &p);
    assert!(matches!(got, Err(Error::ReportDebugPolicy(_))), "{got:?}");

    // 14. A CA certificate whose self-signature is broken.
    let mut broken = own.clone();
    let last = broken.ca.len() - 1;
    broken.ca[last] ^= 0x01;
    cases.push((
        "CA certificate with a broken signature",
        check(&broken, &p),
        Error::CertificateSignature(CertRole::EndorsementCa),
    ));
    // 15. An EK certificate issued under another CA's name.
    let mut renamed = own.clone();
    renamed.rsa =
        certs::ek_certificate(&key9, &[5; 16], &e.ek_rsa, &identity, &other_boot.report).unwrap();
    cases.push((
        "EK certificate from another CA's name",
        check(&renamed, &p),
        Error::ChainIssuer(CertRole::RsaEk),
    ));

    for (what, got, want) in &cases {
        assert_eq!(got, &Err(want.clone()), "{what}");
        println!("refused: {what}: {want}");
    }
    assert!(cases.len() >= 10);
}

/// An EK certificate for `ek_public` issued under the CA of `report` and signed by `ca`,
/// with exactly `extensions` and `validity`: what a CA that broke the profile would issue.
fn ek_cert_with(
    ca: &SigningKey,
    ek_public: &[u8],
    report: &[u8],
    extensions: Vec<x509_cert::ext::Extension>,
    validity: x509_cert::time::Validity,
) -> Vec<u8> {
    use der::Encode;
    use x509_cert::builder::{profile::BuilderProfile, Builder, CertificateBuilder};
    struct Profile {
        issuer: x509_cert::name::Name,
        extensions: Vec<x509_cert::ext::Extension>,
    }
    impl BuilderProfile for Profile {
        fn get_issuer(&self, _: &x509_cert::name::Name) -> x509_cert::name::Name {
            self.issuer.clone()
        }
        fn get_subject(&self) -> x509_cert::name::Name {
            x509_cert::name::Name::default()
        }
        fn build_extensions(
            &self,
            _: x509_cert::spki::SubjectPublicKeyInfoRef<'_>,
            _: x509_cert::spki::SubjectPublicKeyInfoRef<'_>,
            _: &x509_cert::TbsCertificate,
        ) -> x509_cert::builder::Result<Vec<x509_cert::ext::Extension>> {
            Ok(self.extensions.clone())
        }
    }
    let profile = Profile {
        issuer: certs::ca_name(report).unwrap(),
        extensions,
    };
    CertificateBuilder::new(
        profile,
        x509_cert::serial_number::SerialNumber::from(7u32),
        validity,
        certs::ek_spki(ek_public).unwrap(),
    )
    .unwrap()
    .build::<_, p384::ecdsa::DerSignature>(ca)
    .unwrap()
    .to_der()
    .unwrap()
}

fn extension<T: der::oid::AssociatedOid + der::Encode>(
    value: &T,
    critical: bool,
) -> x509_cert::ext::Extension {
    x509_cert::ext::Extension {
        extn_id: T::OID,
        critical,
        extn_value: der::asn1::OctetString::new(value.to_der().unwrap()).unwrap(),
    }
}

#[test]
fn ek_certificates_that_break_the_profile_are_refused_with_their_reason() {
    use x509_cert::ext::pkix::{
        AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    };
    use x509_cert::time::{Time, Validity};
    let e = genuine();
    let p = policy(&e);
    let ca = key(9);
    let own = with_ca_key(&e, &ca, 0, &psp());
    assert_eq!(check(&own, &p), Ok(()));
    let ca_cert = <x509_cert::Certificate as der::Decode>::from_der(&own.ca).unwrap();
    let ski = ca_cert
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
        .unwrap()
        .unwrap()
        .1
         .0;
    let aki = |id: &[u8]| {
        extension(
            &AuthorityKeyIdentifier {
                key_identifier: Some(der::asn1::OctetString::new(id.to_vec()).unwrap()),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
            false,
        )
    };
    let bc = |ca: bool| {
        extension(
            &BasicConstraints {
                ca,
                path_len_constraint: None,
            },
            true,
        )
    };
    let ku = |u: KeyUsages| extension(&KeyUsage(u.into()), true);
    let eku = extension(
        &ExtendedKeyUsage(vec![der::asn1::ObjectIdentifier::new_unwrap(
            "2.23.133.8.1",
        )]),
        false,
    );
    let forever = || {
        Validity::new(
            Time::UtcTime(
                der::asn1::UtcTime::from_date_time(
                    der::DateTime::new(2025, 1, 1, 0, 0, 0).unwrap(),
                )
                .unwrap(),
            ),
            Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(
                der::DateTime::new(9999, 12, 31, 23, 59, 59).unwrap(),
            )),
        )
    };
    let expired = Validity::new(
        Time::UtcTime(
            der::asn1::UtcTime::from_date_time(der::DateTime::new(2020, 1, 1, 0, 0, 0).unwrap())
                .unwrap(),
        ),
        Time::UtcTime(
            der::asn1::UtcTime::from_date_time(der::DateTime::new(2021, 1, 1, 0, 0, 0).unwrap())
                .unwrap(),
        ),
    );
    let good = || {
        vec![
            bc(false),
            ku(KeyUsages::KeyEncipherment),
            eku.clone(),
            aki(ski.as_bytes()),
        ]
    };
    // The helper itself issues an acceptable certificate.
    let mut ok = own.clone();
    ok.rsa = ek_cert_with(&ca, &e.ek_rsa, &own.report, good(), forever());
    assert_eq!(check(&ok, &p), Ok(()));

    let cases: Vec<(&str, Vec<x509_cert::ext::Extension>, Validity, Error)> = vec![
        (
            "an expired EK certificate",
            good(),
            expired,
            Error::CertificateValidity(CertRole::RsaEk),
        ),
        (
            "an EK certificate marked as a CA",
            vec![
                bc(true),
                ku(KeyUsages::KeyEncipherment),
                eku.clone(),
                aki(ski.as_bytes()),
            ],
            forever(),
            Error::CertificateConstraints(
                CertRole::RsaEk,
                "an end-entity certificate marked as a CA",
            ),
        ),
        (
            "an RSA EK certificate for signing",
            vec![
                bc(false),
                ku(KeyUsages::DigitalSignature),
                eku.clone(),
                aki(ski.as_bytes()),
            ],
            forever(),
            Error::CertificateConstraints(
                CertRole::RsaEk,
                "keyUsage is not keyEncipherment (RSA) / keyAgreement (ECC)",
            ),
        ),
        (
            "an EK certificate without key usage",
            vec![bc(false), eku.clone(), aki(ski.as_bytes())],
            forever(),
            Error::CertificateConstraints(CertRole::RsaEk, "no keyUsage"),
        ),
        (
            "an EK certificate without tcg-kp-EKCertificate",
            vec![
                bc(false),
                ku(KeyUsages::KeyEncipherment),
                aki(ski.as_bytes()),
            ],
            forever(),
            Error::CertificateConstraints(
                CertRole::RsaEk,
                "no extended key usage tcg-kp-EKCertificate",
            ),
        ),
        (
            "an EK certificate naming another authority key",
            vec![
                bc(false),
                ku(KeyUsages::KeyEncipherment),
                eku.clone(),
                aki(&[0x11; 20]),
            ],
            forever(),
            Error::CertificateConstraints(
                CertRole::RsaEk,
                "its authority key identifier is not the CA's",
            ),
        ),
    ];
    for (what, extensions, validity, want) in cases {
        let mut bad = own.clone();
        bad.rsa = ek_cert_with(&ca, &e.ek_rsa, &own.report, extensions, validity);
        assert_eq!(check(&bad, &p), Err(want), "{what}");
    }
}

#[test]
fn no_attestation_protocol_report_carries_the_binding() {
    // The guest's best attempt: the longest nonce it may pass (64 bytes), holding the
    // first 64 bytes of the binding input, with both attestation calls.
    let world = World::new();
    let nonce = &BINDING_TAG[..64];
    let (report, manifest) = world.attest(nonce);
    let report_data = &report[0x50..0x90];
    // What the SVSM's binding for this vTPM would be, whatever CA key it picked: its
    // input starts with the tag, and the attestation input starts with the nonce and
    // then the manifest, whose first byte is not printable ASCII.
    assert!(!svsm_protocol::ek_evidence::manifest_could_mimic_binding(
        &manifest
    ));
    assert_ne!(manifest[0], BINDING_TAG[64]);
    let mut input = nonce.to_vec();
    input.extend_from_slice(&manifest);
    assert_ne!(&input[..BINDING_TAG.len()], &BINDING_TAG[..]);
    assert_eq!(
        report_data,
        &svsm_verifier::report_data(nonce, &manifest)[..]
    );
    // A 65-byte nonce (which could carry the tag's 65th byte) is refused outright.
    let mut long = BINDING_TAG[..65].to_vec();
    world.write(attest_common::NONCE_PAGE, &long);
    let req = World::request(65, 0x1000, 0x1000);
    let out = world.attest_call(&req, world.ca() + 8);
    assert_eq!(
        svsm_protocol::SvsmResultCode::from_raw(out.rax),
        svsm_protocol::SvsmResultCode::INVALID_PARAMETER
    );
    long.clear();
    // ATTEST_SINGLE_SERVICE for the vTPM: its manifest is the EK, which starts with 0x00.
    world.write(attest_common::NONCE_PAGE, nonce);
    let out = world.attest_single(
        nonce,
        svsm_protocol::manifest::VTPM_SERVICE_GUID,
        svsm_protocol::manifest::VTPM_SERVICE_MANIFEST_VERSION,
    );
    assert_eq!(out.rax, 0);
    let ek = world.read(attest_common::MANIFEST_PAGE, out.rcx as usize);
    assert_eq!(ek[0], 0x00);
    assert!(!svsm_protocol::ek_evidence::manifest_could_mimic_binding(
        &ek
    ));
}
