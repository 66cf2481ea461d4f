//! Verifies the vTPM's endorsement evidence as a guest reads it from TPM NV
//! (`tpm2_nvread`): ARK → ASK → VCEK → SNP report → per-boot endorsement CA key → EK
//! certificates → EKs.
//!
//! The links, each refused with its own [`Error`]:
//! 1. the AMD chain, the VCEK issued for the report's chip and TCB, the report signed by
//!    it at a TCB no lower than the minimum ([`crate::verify_hardware_report`]);
//! 2. the report at VMPL0, a policy without debugging, the expected launch measurement
//!    (required unless the caller explicitly opts out);
//! 3. the CA certificate: self-issued and self-signed (ECDSA P-384, SHA-384), a CA valid
//!    now, whose name points to this report (serialNumber = hex SHA-256 of the report);
//! 4. each EK certificate: issued and signed by the CA (ECDSA P-384, SHA-384), valid, not
//!    a CA, keyEncipherment (RSA) or keyAgreement (ECC), EKU tcg-kp-EKCertificate, the
//!    CA's key identifier as its authority key identifier;
//! 5. REPORT_DATA = SHA-512 of the binding input over the CA's SubjectPublicKeyInfo and
//!    both EKs' TPMT_PUBLIC, rebuilt from the certified keys with the TCG default
//!    templates L-1 and L-2 ([`svsm_protocol::ek_evidence::Binding`]);
//! 6. optionally, the EKs equal those the TPM presents (`tpm2_createek -u`).

use der::Encode;
use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{DerSignature, VerifyingKey};
use sha2::{Digest, Sha256, Sha512};
use spki::{DecodePublicKey, ObjectIdentifier};
use svsm_protocol::ek_evidence::Binding;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, ExtendedKeyUsage, SubjectKeyIdentifier};
use x509_cert::Certificate;

use crate::chain::{check_ca, check_not_ca, check_validity, key_usage, Cert};
use crate::report::Tcb;
use crate::{tpm, CertRole, Error, Report, VcekTrust};

/// ecdsa-with-SHA384.
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// tcg-kp-EKCertificate.
const TCG_KP_EK_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.1");
/// rsaEncryption.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ecPublicKey.
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1.
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// X.520 serialNumber.
const AT_SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");

/// What a guest reads from NV (protocol/src/ek_evidence.rs names the indices).
#[derive(Debug, Clone, Copy)]
pub struct NvEvidence<'a> {
    /// 0x01C00002.
    pub rsa_ek_cert: &'a [u8],
    /// 0x01C0000A.
    pub ecc_ek_cert: &'a [u8],
    /// 0x01C00100.
    pub ca_cert: &'a [u8],
    /// 0x01C00110.
    pub report: &'a [u8],
    /// 0x01C00111, when the vTPM keeps its state between boots.
    pub state: Option<&'a [u8]>,
}

/// Whether the launch measurement is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasurementCheck {
    /// The report's measurement must be this digest.
    Expect([u8; 48]),
    /// The caller opted out explicitly (any SVSM a host builds itself then passes).
    Unchecked,
}

/// What the verifier requires besides the evidence.
#[derive(Debug, Clone)]
pub struct EkPolicy {
    /// How the VCEK is trusted.
    pub vcek: VcekTrust,
    /// The launch measurement.
    pub measurement: MeasurementCheck,
    /// The lowest acceptable REPORTED_TCB, if any.
    pub min_tcb: Option<Tcb>,
    /// The lowest acceptable vTPM state generation (the last one this relying party
    /// saw), if any: a smaller one is a rollback.
    pub min_state_generation: Option<u64>,
}

/// What a successful verification established.
#[derive(Debug, Clone)]
pub struct EkVerified {
    /// The report.
    pub report: Report,
    /// The RSA EK's TPMT_PUBLIC (template L-1), as `tpm2_createek -G rsa` makes it.
    pub ek_rsa: Vec<u8>,
    /// The ECC EK's TPMT_PUBLIC (template L-2).
    pub ek_ecc: Vec<u8>,
    /// The persistent state this boot started from, when the vTPM keeps one.
    pub state: Option<svsm_protocol::ek_evidence::StateEvidence>,
}

/// The EKs the TPM presents (TPMT_PUBLIC or TPM2B_PUBLIC, as `tpm2_createek -u` writes
/// them); each one given must be the certified one.
#[derive(Debug, Clone, Copy, Default)]
pub struct TpmEks<'a> {
    /// The RSA EK (template L-1).
    pub rsa: Option<&'a [u8]>,
    /// The ECC EK (template L-2).
    pub ecc: Option<&'a [u8]>,
}

/// Checks the NV evidence link by link; each EK in `tpm_eks` must be the certified one.
pub fn verify_nv_evidence(
    policy: &EkPolicy,
    evidence: &NvEvidence<'_>,
    tpm_eks: TpmEks<'_>,
) -> Result<EkVerified, Error> {
    let report =
        crate::verify_hardware_report(&policy.vcek, evidence.report, policy.min_tcb.as_ref())?;
    let expected = match &policy.measurement {
        MeasurementCheck::Expect(m) => Some(m),
        MeasurementCheck::Unchecked => None,
    };
    crate::check_report_fields(&report, expected)?;

    let now = std::time::SystemTime::now();
    let ca = parse(CertRole::EndorsementCa, evidence.ca_cert)?;
    let ca_cert = ca.certificate();
    if ca_cert.tbs_certificate().issuer() != ca_cert.tbs_certificate().subject() {
        return Err(Error::ChainIssuer(CertRole::EndorsementCa));
    }
    let ca_spki = ca_cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| format_error(CertRole::EndorsementCa, e))?;
    let ca_key = VerifyingKey::from_public_key_der(&ca_spki).map_err(|e| {
        Error::CertificateFormat(CertRole::EndorsementCa, format!("not a P-384 key: {e}"))
    })?;
    check_ecdsa(&ca, &ca_key, CertRole::EndorsementCa)?;
    check_validity(ca_cert, CertRole::EndorsementCa, now)?;
    check_ca(ca_cert, CertRole::EndorsementCa)?;
    if !points_to(ca_cert, evidence.report) {
        return Err(Error::EvidencePointer);
    }
    let ca_key_id = ca_cert
        .tbs_certificate()
        .get_extension::<SubjectKeyIdentifier>()
        .ok()
        .flatten()
        .map(|(_, ski)| ski.0.as_bytes().to_vec())
        .ok_or(Error::CertificateConstraints(
            CertRole::EndorsementCa,
            "no subject key identifier",
        ))?;

    let mut eks = Vec::new();
    for (role, der) in [
        (CertRole::RsaEk, evidence.rsa_ek_cert),
        (CertRole::EccEk, evidence.ecc_ek_cert),
    ] {
        let cert = parse(role, der)?;
        let c = cert.certificate();
        if c.tbs_certificate().issuer() != ca_cert.tbs_certificate().subject() {
            return Err(Error::ChainIssuer(role));
        }
        check_ecdsa(&cert, &ca_key, role)?;
        check_validity(c, role, now)?;
        check_not_ca(c, role)?;
        let usage =
            key_usage(c, role)?.ok_or(Error::CertificateConstraints(role, "no keyUsage"))?;
        let usage_ok = match role {
            CertRole::RsaEk => usage.key_encipherment(),
            _ => usage.key_agreement(),
        };
        if !usage_ok {
            return Err(Error::CertificateConstraints(
                role,
                "keyUsage is not keyEncipherment (RSA) / keyAgreement (ECC)",
            ));
        }
        let eku = c
            .tbs_certificate()
            .get_extension::<ExtendedKeyUsage>()
            .ok()
            .flatten()
            .map(|(_, e)| e.0)
            .unwrap_or_default();
        if !eku.contains(&TCG_KP_EK_CERTIFICATE) {
            return Err(Error::CertificateConstraints(
                role,
                "no extended key usage tcg-kp-EKCertificate",
            ));
        }
        let aki = c
            .tbs_certificate()
            .get_extension::<AuthorityKeyIdentifier>()
            .ok()
            .flatten()
            .and_then(|(_, a)| a.key_identifier)
            .map(|k| k.as_bytes().to_vec());
        if aki.as_deref() != Some(&ca_key_id[..]) {
            return Err(Error::CertificateConstraints(
                role,
                "its authority key identifier is not the CA's",
            ));
        }
        eks.push(ek_public_from_certificate(c, role)?);
    }
    let ek_ecc = eks.pop().unwrap_or_default();
    let ek_rsa = eks.pop().unwrap_or_default();

    let state = match evidence.state {
        None => None,
        Some(bytes) => Some(
            svsm_protocol::ek_evidence::StateEvidence::parse(bytes)
                .ok_or(Error::StateEvidenceFormat)?,
        ),
    };
    let mut h = Sha512::new();
    Binding {
        ca_public_key: &ca_spki,
        ek_rsa: &ek_rsa,
        ek_ecc: &ek_ecc,
        state: evidence.state.unwrap_or_default(),
    }
    .feed(|b| h.update(b));
    let binding: [u8; 64] = h.finalize().into();
    if report.report_data() != &binding {
        return Err(Error::EkBinding);
    }

    for (role, given, certified) in [
        (CertRole::RsaEk, tpm_eks.rsa, &ek_rsa),
        (CertRole::EccEk, tpm_eks.ecc, &ek_ecc),
    ] {
        if given.is_some_and(|g| strip_tpm2b(g) != certified.as_slice()) {
            return Err(Error::EkPublicMismatch(role));
        }
    }
    if let Some(minimum) = policy.min_state_generation {
        let generation = state.map(|s| s.generation);
        if generation.is_none_or(|g| g < minimum) {
            return Err(Error::StateRollback {
                generation,
                minimum,
            });
        }
    }
    Ok(EkVerified {
        report,
        ek_rsa,
        ek_ecc,
        state,
    })
}

fn format_error(role: CertRole, e: impl core::fmt::Display) -> Error {
    Error::CertificateFormat(role, e.to_string())
}

fn parse(role: CertRole, der: &[u8]) -> Result<Cert, Error> {
    if der.is_empty() {
        return Err(Error::NvEvidence(format!(
            "the {role} certificate is empty"
        )));
    }
    Cert::parse(role, der)
}

/// The certificate is signed with ECDSA P-384/SHA-384 by `key`.
fn check_ecdsa(cert: &Cert, key: &VerifyingKey, role: CertRole) -> Result<(), Error> {
    let c = cert.certificate();
    if c.signature_algorithm().oid != ECDSA_WITH_SHA384
        || c.tbs_certificate().signature().oid != ECDSA_WITH_SHA384
    {
        return Err(Error::CertificateFormat(
            role,
            "signature algorithm is not ecdsa-with-SHA384".into(),
        ));
    }
    let sig = c
        .signature()
        .as_bytes()
        .and_then(|b| DerSignature::from_bytes(b).ok())
        .ok_or(Error::CertificateSignature(role))?;
    key.verify(cert.tbs_der(), &sig)
        .map_err(|_| Error::CertificateSignature(role))
}

/// The CA's name carries serialNumber = hex SHA-256 of `report`.
fn points_to(ca: &Certificate, report: &[u8]) -> bool {
    let want = hex::encode(Sha256::digest(report));
    ca.tbs_certificate().subject().iter().any(|atv| {
        atv.oid == AT_SERIAL_NUMBER
            && der::asn1::PrintableStringRef::try_from(&atv.value).is_ok_and(|s| s.as_str() == want)
    })
}

/// A TPM2B_PUBLIC's TPMT_PUBLIC (a bare TPMT_PUBLIC is returned as is).
fn strip_tpm2b(bytes: &[u8]) -> &[u8] {
    if bytes.len() >= 2 && usize::from(u16::from_be_bytes([bytes[0], bytes[1]])) == bytes.len() - 2
    {
        &bytes[2..]
    } else {
        bytes
    }
}

/// The EK's TPMT_PUBLIC: the TCG default template L-1 (RSA-2048) or L-2 (ECC P-256)
/// with the certified key as its unique field (EK Credential Profile 2.4, B.3.3).
fn ek_public_from_certificate(cert: &Certificate, role: CertRole) -> Result<Vec<u8>, Error> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Error::CertificateFormat(role, "public key has unused bits".into()))?;
    let mut t = Vec::with_capacity(320);
    let header = |t: &mut Vec<u8>, kind: u16| {
        t.extend_from_slice(&kind.to_be_bytes());
        t.extend_from_slice(&tpm::ALG_SHA256.to_be_bytes());
        t.extend_from_slice(&0x0003_00B2u32.to_be_bytes());
        t.extend_from_slice(&32u16.to_be_bytes());
        t.extend_from_slice(&POLICY_A);
        for v in [tpm::ALG_AES, 128, tpm::ALG_CFB, tpm::ALG_NULL] {
            t.extend_from_slice(&v.to_be_bytes());
        }
    };
    match (role, spki.algorithm.oid) {
        (CertRole::RsaEk, RSA_ENCRYPTION) => {
            let rsa = rsa::PublicKey::from_public_key_der(
                &spki.to_der().map_err(|e| format_error(role, e))?,
            )
            .map_err(|e| Error::CertificateFormat(role, format!("not an RSA key: {e}")))?;
            use rsa::traits::PublicKeyParts;
            let n = rsa.n().to_be_bytes_trimmed_vartime();
            let e = rsa.e().to_be_bytes_trimmed_vartime();
            if n.len() != 256 || e.as_ref() != [1, 0, 1] {
                return Err(Error::EkShape("not RSA-2048 with exponent 65537"));
            }
            header(&mut t, tpm::ALG_RSA);
            t.extend_from_slice(&2048u16.to_be_bytes());
            t.extend_from_slice(&0u32.to_be_bytes());
            t.extend_from_slice(&256u16.to_be_bytes());
            t.extend_from_slice(&n);
        }
        (CertRole::EccEk, ID_EC_PUBLIC_KEY) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            if curve != Some(SECP256R1) || key.len() != 65 || key[0] != 4 {
                return Err(Error::EkShape("not an uncompressed NIST P-256 point"));
            }
            header(&mut t, tpm::ALG_ECC);
            t.extend_from_slice(&tpm::ECC_NIST_P256.to_be_bytes());
            t.extend_from_slice(&tpm::ALG_NULL.to_be_bytes());
            for coordinate in [&key[1..33], &key[33..65]] {
                t.extend_from_slice(&32u16.to_be_bytes());
                t.extend_from_slice(coordinate);
            }
        }
        _ => return Err(Error::EkShape("the certified key has the wrong algorithm")),
    }
    Ok(t)
}

/// Policy A, SHA-256: TPM2_PolicySecret(TPM_RH_ENDORSEMENT) (EK Credential Profile, B.3.3).
const POLICY_A: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];
