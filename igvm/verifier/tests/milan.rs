//! The verifier against a real AMD Milan report and its ARK → ASK → VCEK chain, so that
//! the emulated PSP and the verifier cannot share a mistake unnoticed.

use svsm_verifier::chain::{trusted_vcek_key, Chain};
use svsm_verifier::{verify_report, CertRole, Error, Report, VcekTrust};

const REPORT: &[u8] = include_bytes!("data/report.bin");
const VCEK: &[u8] = include_bytes!("data/vcek.der");
const ASK: &[u8] = include_bytes!("data/ask.pem");
const ARK: &[u8] = include_bytes!("data/ark.pem");

fn chain() -> VcekTrust {
    VcekTrust::Chain(Box::new(
        Chain::parse(VCEK, ASK, ARK).expect("the Milan chain parses"),
    ))
}

#[test]
fn real_milan_report_and_chain_verify() {
    let report = verify_report(&chain(), REPORT, None, None).expect("the Milan report verifies");
    assert_eq!(report.version(), 2);
    assert_eq!(report.vmpl(), 0);
    assert_eq!(
        hex::encode(report.measurement()),
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d\
         3e1a0dc39b2c60bd95b9c480cd81841f"
    );
}

#[test]
fn real_report_verifies_with_the_vcek_key_trusted_directly() {
    let key = trusted_vcek_key(VCEK).unwrap();
    verify_report(&VcekTrust::Key(key), REPORT, None, None).unwrap();
}

#[test]
fn expected_measurement_is_compared() {
    let mut m = *Report::parse(REPORT).unwrap().measurement();
    verify_report(&chain(), REPORT, None, Some(&m)).unwrap();
    m[47] ^= 1;
    assert_eq!(
        verify_report(&chain(), REPORT, None, Some(&m)).unwrap_err(),
        Error::Measurement
    );
}

#[test]
fn every_signed_byte_is_covered() {
    // A flip anywhere in the signed area breaks the signature (sampled across it).
    for offset in (0..0x2A0).step_by(0x1F) {
        let mut bad = REPORT.to_vec();
        bad[offset] ^= 0x01;
        let err = verify_report(&chain(), &bad, None, None).unwrap_err();
        assert!(
            matches!(err, Error::ReportSignature | Error::ReportFormat(_)),
            "offset {offset:#x}: {err}"
        );
    }
}

#[test]
fn signature_tampering_is_refused() {
    let mut bad = REPORT.to_vec();
    bad[0x2A0] ^= 1; // R
    assert_eq!(
        verify_report(&chain(), &bad, None, None).unwrap_err(),
        Error::ReportSignature
    );
    let mut bad = REPORT.to_vec();
    bad[0x2E8 + 60] = 1; // S beyond 48 bytes must be zero
    assert_eq!(
        verify_report(&chain(), &bad, None, None).unwrap_err(),
        Error::ReportSignature
    );
}

#[test]
fn truncated_report_is_refused() {
    assert!(matches!(
        verify_report(&chain(), &REPORT[..0x49F], None, None),
        Err(Error::ReportFormat(_))
    ));
}

#[test]
fn the_report_data_binding_is_checked() {
    assert_eq!(
        verify_report(&chain(), REPORT, Some((&[0x4E; 64], b"manifest")), None).unwrap_err(),
        Error::ReportData
    );
    // Only 64-byte nonces fix where the nonce ends and the manifest begins.
    for len in [0, 5, 63, 65, 128] {
        assert_eq!(
            verify_report(
                &chain(),
                REPORT,
                Some((&vec![0x4E; len], b"manifest")),
                None
            )
            .unwrap_err(),
            Error::NonceLength(len)
        );
    }
}

#[test]
fn broken_chain_links_are_named() {
    // The ASK cannot stand in for the VCEK (wrong key type, and not issued by itself).
    let swapped = Chain::parse(ASK, ASK, ARK).unwrap();
    assert_eq!(
        swapped.verify().unwrap_err(),
        Error::ChainIssuer(CertRole::Vcek)
    );
    // A VCEK certificate with a flipped bit inside its signed part.
    let mut vcek = VCEK.to_vec();
    let pos = vcek.len() / 2;
    vcek[pos] ^= 0x01;
    match Chain::parse(&vcek, ASK, ARK).map(|c| c.verify()) {
        Ok(Err(e)) => assert!(
            matches!(
                e,
                Error::ChainSignature(CertRole::Vcek) | Error::CertificateFormat(CertRole::Vcek, _)
            ),
            "{e}"
        ),
        Err(Error::CertificateFormat(CertRole::Vcek, _)) => {}
        other => panic!("tampered VCEK accepted or misreported: {other:?}"),
    }
    // The ARK is the anchor: an ASK presented as root fails its self-signature.
    let rootless = Chain::parse(VCEK, ASK, ASK).unwrap();
    assert_eq!(
        rootless.verify().unwrap_err(),
        Error::ChainIssuer(CertRole::Ark)
    );
}

#[test]
fn the_vcek_serial_number_is_zero_and_accepted() {
    let chain = Chain::parse(VCEK, ASK, ARK).unwrap();
    let serial = chain.vcek.certificate().tbs_certificate().serial_number();
    assert!(serial.as_bytes().iter().all(|&b| b == 0));
    chain.verify().unwrap();
}
