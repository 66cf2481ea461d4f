//! The AMD certificate chain: ARK (root, self-signed) → ASK → VCEK, RSA-PSS with SHA-384.
//!
//! The caller decides which ARK it trusts (AMD publishes one per product line); this module
//! checks that the ARK signs itself and the ASK, that the ASK signs the VCEK, that the
//! names chain up, and hands back the VCEK's P-384 key. The VCEK certificate carries a
//! serial number of zero, which RFC 5280 forbids; it is accepted here on purpose.

use der::{Decode, Encode, Reader, SliceReader};
use p384::ecdsa::VerifyingKey;
use pkcs1::RsaPssParams;
use rsa::pss;
use rsa::signature::Verifier;
use sha2::Sha384;
use spki::{DecodePublicKey, ObjectIdentifier};
use x509_cert::Certificate;

use crate::error::CertRole;
use crate::Error;

/// id-RSASSA-PSS (RFC 4055).
const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// id-sha384.
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
/// id-mgf1.
const OID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
/// The salt length AMD uses (the SHA-384 output size).
const PSS_SALT_LEN: u8 = 48;

/// One parsed certificate together with the exact DER of its to-be-signed part.
#[derive(Debug, Clone)]
pub struct Cert {
    role: CertRole,
    cert: Certificate,
    tbs_der: Vec<u8>,
}

impl Cert {
    /// Parses a certificate in DER or PEM form.
    pub fn parse(role: CertRole, bytes: &[u8]) -> Result<Self, Error> {
        let der = if bytes.starts_with(b"-----BEGIN") {
            let (label, der) = der::pem::decode_vec(bytes)
                .map_err(|e| Error::CertificateFormat(role, format!("bad PEM: {e}")))?;
            if label != "CERTIFICATE" {
                return Err(Error::CertificateFormat(
                    role,
                    format!("PEM label is {label:?}, expected CERTIFICATE"),
                ));
            }
            der
        } else {
            bytes.to_vec()
        };
        let cert = Certificate::from_der(&der)
            .map_err(|e| Error::CertificateFormat(role, format!("bad DER: {e}")))?;
        let tbs_der =
            raw_tbs(&der).map_err(|e| Error::CertificateFormat(role, format!("bad DER: {e}")))?;
        Ok(Cert {
            role,
            cert,
            tbs_der,
        })
    }

    /// The certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The exact DER of its to-be-signed part.
    pub fn tbs_der(&self) -> &[u8] {
        &self.tbs_der
    }

    fn spki_der(&self) -> Result<Vec<u8>, Error> {
        self.cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| Error::CertificateFormat(self.role, format!("public key: {e}")))
    }

    /// The RSA key of an ARK or ASK.
    fn rsa_key(&self) -> Result<rsa::PublicKey, Error> {
        rsa::PublicKey::from_public_key_der(&self.spki_der()?)
            .map_err(|e| Error::CertificateFormat(self.role, format!("not an RSA public key: {e}")))
    }

    /// The P-384 key of a VCEK.
    pub fn p384_key(&self) -> Result<VerifyingKey, Error> {
        VerifyingKey::from_public_key_der(&self.spki_der()?).map_err(|e| {
            Error::CertificateFormat(self.role, format!("not a P-384 public key: {e}"))
        })
    }

    /// Checks that `issuer` issued this certificate: names and RSA-PSS signature.
    fn check_issued_by(&self, issuer: &Cert) -> Result<(), Error> {
        if self.cert.tbs_certificate().issuer() != issuer.cert.tbs_certificate().subject() {
            return Err(Error::ChainIssuer(self.role));
        }
        self.check_pss_params()?;
        let key = pss::VerifyingKey::<Sha384>::new_with_salt_len(
            issuer.rsa_key()?,
            usize::from(PSS_SALT_LEN),
        );
        let sig_bytes = self.cert.signature().as_bytes().ok_or_else(|| {
            Error::CertificateFormat(self.role, "signature has unused bits".into())
        })?;
        let signature =
            pss::Signature::try_from(sig_bytes).map_err(|_| Error::ChainSignature(self.role))?;
        key.verify(&self.tbs_der, &signature)
            .map_err(|_| Error::ChainSignature(self.role))
    }

    /// The signature algorithm must be RSA-PSS with SHA-384, MGF1-SHA-384, salt 48, and the
    /// outer algorithm must equal the one inside the signed part.
    fn check_pss_params(&self) -> Result<(), Error> {
        let bad = |why: &str| Error::CertificateFormat(self.role, why.into());
        let alg = self.cert.signature_algorithm();
        if alg != self.cert.tbs_certificate().signature() {
            return Err(bad("outer and signed signature algorithms differ"));
        }
        if alg.oid != OID_RSASSA_PSS {
            return Err(bad("signature algorithm is not RSASSA-PSS"));
        }
        let params = alg
            .parameters
            .as_ref()
            .ok_or_else(|| bad("RSASSA-PSS without parameters"))?;
        let params_der = params.to_der().map_err(|_| bad("RSASSA-PSS parameters"))?;
        let params = RsaPssParams::<der::Any>::from_der(&params_der)
            .map_err(|_| bad("RSASSA-PSS parameters"))?;
        if params.hash.oid != OID_SHA384
            || params.mask_gen.oid != OID_MGF1
            || params.mask_gen.parameters.as_ref().map(|p| p.oid) != Some(OID_SHA384)
            || params.salt_len != PSS_SALT_LEN
        {
            return Err(bad(
                "RSASSA-PSS parameters are not SHA-384, MGF1-SHA-384, salt 48",
            ));
        }
        Ok(())
    }
}

/// The exact DER bytes of the TBSCertificate, as they were signed.
fn raw_tbs(cert_der: &[u8]) -> der::Result<Vec<u8>> {
    let outer = der::asn1::AnyRef::from_der(cert_der)?;
    let mut reader = SliceReader::new(outer.value())?;
    let tbs: der::asn1::AnyRef<'_> = reader.decode()?;
    tbs.to_der()
}

/// An ARK → ASK → VCEK chain.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The root the caller trusts.
    pub ark: Cert,
    /// The signing key certificate.
    pub ask: Cert,
    /// The chip's endorsement key certificate.
    pub vcek: Cert,
}

impl Chain {
    /// Parses the three certificates (DER or PEM each).
    pub fn parse(vcek: &[u8], ask: &[u8], ark: &[u8]) -> Result<Self, Error> {
        Ok(Chain {
            vcek: Cert::parse(CertRole::Vcek, vcek)?,
            ask: Cert::parse(CertRole::Ask, ask)?,
            ark: Cert::parse(CertRole::Ark, ark)?,
        })
    }

    /// Checks every link and returns the VCEK's key: signatures and names, each
    /// certificate valid now, ARK and ASK CA certificates allowed to sign certificates,
    /// the VCEK not a CA.
    pub fn verify(&self) -> Result<VerifyingKey, Error> {
        self.ark.check_issued_by(&self.ark)?;
        self.ask.check_issued_by(&self.ark)?;
        self.vcek.check_issued_by(&self.ask)?;
        let now = std::time::SystemTime::now();
        for cert in [&self.ark, &self.ask, &self.vcek] {
            check_validity(&cert.cert, cert.role, now)?;
        }
        for cert in [&self.ark, &self.ask] {
            check_ca(&cert.cert, cert.role)?;
        }
        check_not_ca(&self.vcek.cert, CertRole::Vcek)?;
        self.vcek.p384_key()
    }

    /// Checks that the VCEK was issued for the chip and TCB `report` names: its hwID
    /// extension is the report's CHIP_ID and its SPL extensions are the report's
    /// REPORTED_TCB (AMD's VCEK certificate specification; a VCEK is derived per chip and
    /// per TCB).
    pub fn check_vcek_for(&self, report: &crate::Report) -> Result<(), Error> {
        check_vcek_for(&self.vcek, report)
    }
}

/// AMD's VCEK extensions (1.3.6.1.4.1.3704.1.x).
mod amd_oid {
    use spki::ObjectIdentifier;
    /// blSPL.
    pub const BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
    /// teeSPL.
    pub const TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
    /// snpSPL.
    pub const SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
    /// ucodeSPL.
    pub const UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
    /// hwID.
    pub const HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
}

/// The value of the extension `oid` (its extnValue's contents), if present.
fn extension_value(cert: &Certificate, oid: ObjectIdentifier) -> Option<&[u8]> {
    cert.tbs_certificate()
        .extensions()?
        .iter()
        .find(|e| e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes())
}

fn check_vcek_for(vcek: &Cert, report: &crate::Report) -> Result<(), Error> {
    let cert = &vcek.cert;
    let hw_id = extension_value(cert, amd_oid::HW_ID).ok_or(Error::VcekChipId)?;
    if hw_id != report.chip_id() || report.chip_id().iter().all(|&b| b == 0) {
        return Err(Error::VcekChipId);
    }
    let tcb = report.reported_tcb();
    for (oid, name, want) in [
        (amd_oid::BL_SPL, "boot loader", tcb.boot_loader),
        (amd_oid::TEE_SPL, "TEE", tcb.tee),
        (amd_oid::SNP_SPL, "SNP", tcb.snp),
        (amd_oid::UCODE_SPL, "microcode", tcb.microcode),
    ] {
        let value = extension_value(cert, oid).ok_or(Error::VcekTcb(name))?;
        let spl = der::asn1::Uint::from_der(value).map_err(|_| Error::VcekTcb(name))?;
        let bytes = spl.as_bytes();
        let got = match bytes {
            [b] => u16::from(*b),
            [0, b] => u16::from(*b),
            _ => u16::MAX,
        };
        if got != u16::from(want) {
            return Err(Error::VcekTcb(name));
        }
    }
    Ok(())
}

/// The certificate is valid at `now`.
pub fn check_validity(
    cert: &Certificate,
    role: CertRole,
    now: std::time::SystemTime,
) -> Result<(), Error> {
    let validity = cert.tbs_certificate().validity();
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::CertificateValidity(role))?;
    if now < validity.not_before.to_unix_duration() || now > validity.not_after.to_unix_duration() {
        return Err(Error::CertificateValidity(role));
    }
    Ok(())
}

/// basicConstraints and keyUsage of a certificate (absent: `None`).
fn constraints(
    cert: &Certificate,
    role: CertRole,
) -> Result<
    (
        Option<x509_cert::ext::pkix::BasicConstraints>,
        Option<x509_cert::ext::pkix::KeyUsage>,
    ),
    Error,
> {
    let tbs = cert.tbs_certificate();
    let bc = tbs
        .get_extension::<x509_cert::ext::pkix::BasicConstraints>()
        .map_err(|_| Error::CertificateConstraints(role, "malformed basicConstraints"))?
        .map(|(_, v)| v);
    let ku = tbs
        .get_extension::<x509_cert::ext::pkix::KeyUsage>()
        .map_err(|_| Error::CertificateConstraints(role, "malformed keyUsage"))?
        .map(|(_, v)| v);
    Ok((bc, ku))
}

/// A CA certificate: basicConstraints CA=true, and keyCertSign if it has a keyUsage.
pub fn check_ca(cert: &Certificate, role: CertRole) -> Result<(), Error> {
    let (bc, ku) = constraints(cert, role)?;
    if !bc.is_some_and(|bc| bc.ca) {
        return Err(Error::CertificateConstraints(
            role,
            "basicConstraints does not say CA, yet it issues certificates",
        ));
    }
    if ku.is_some_and(|ku| !ku.key_cert_sign()) {
        return Err(Error::CertificateConstraints(
            role,
            "keyUsage does not allow certificate signing",
        ));
    }
    Ok(())
}

/// An end-entity certificate: no basicConstraints CA=true.
pub fn check_not_ca(cert: &Certificate, role: CertRole) -> Result<(), Error> {
    let (bc, _) = constraints(cert, role)?;
    if bc.is_some_and(|bc| bc.ca) {
        return Err(Error::CertificateConstraints(
            role,
            "an end-entity certificate marked as a CA",
        ));
    }
    Ok(())
}

/// The keyUsage of a certificate, if it has one.
pub fn key_usage(
    cert: &Certificate,
    role: CertRole,
) -> Result<Option<x509_cert::ext::pkix::KeyUsage>, Error> {
    Ok(constraints(cert, role)?.1)
}

/// GUIDs of the host certificate table (GHCB, "SNP Extended Guest Request"), as stored.
mod table_guid {
    use crate::manifest::Guid;
    /// VCEK: 63da758d-e664-4564-adc5-f4b93be8accd.
    pub const VCEK: Guid = Guid {
        d1: 0x63da_758d,
        d2: 0xe664,
        d3: 0x4564,
        d4: [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd],
    };
    /// ASK: 4ab7b379-bbac-4fe4-a02f-05aef327c782.
    pub const ASK: Guid = Guid {
        d1: 0x4ab7_b379,
        d2: 0xbbac,
        d3: 0x4fe4,
        d4: [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82],
    };
}

/// Finds the certificate with `guid` in a host certificate table: entries of {GUID, u32
/// offset, u32 length} (offsets from the table's start) ending with an all-zero entry.
pub fn cert_from_table(
    table: &[u8],
    guid: crate::manifest::Guid,
    role: CertRole,
) -> Result<Vec<u8>, Error> {
    let bad = |why: &str| Error::CertificateFormat(role, format!("certificate table: {why}"));
    let want = guid.to_bytes();
    for entry in table.chunks(24) {
        if entry.len() < 24 {
            return Err(bad("no terminating entry"));
        }
        if entry.iter().all(|&b| b == 0) {
            break;
        }
        if entry[..16] != want {
            continue;
        }
        let field = |at: usize| {
            u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]) as usize
        };
        let (offset, len) = (field(16), field(20));
        return offset
            .checked_add(len)
            .and_then(|end| table.get(offset..end))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| bad("entry outside the table"));
    }
    Err(bad("no entry for this certificate"))
}

impl Chain {
    /// The chain from a host certificate table (the VCEK and ASK it carries) and the ARK
    /// the caller trusts (never the table's own ARK: the host supplies the table).
    pub fn from_cert_table(table: &[u8], ark: &[u8]) -> Result<Self, Error> {
        let vcek = cert_from_table(table, table_guid::VCEK, CertRole::Vcek)?;
        let ask = cert_from_table(table, table_guid::ASK, CertRole::Ask)?;
        Chain::parse(&vcek, &ask, ark)
    }
}

/// Reads a P-384 public key given directly (SPKI DER or PEM, or a certificate holding one):
/// the "trust this VCEK key" mode.
pub fn trusted_vcek_key(bytes: &[u8]) -> Result<VerifyingKey, Error> {
    let role = CertRole::Vcek;
    if bytes.starts_with(b"-----BEGIN PUBLIC KEY") {
        let text = core::str::from_utf8(bytes)
            .map_err(|_| Error::CertificateFormat(role, "PEM is not UTF-8".into()))?;
        return VerifyingKey::from_public_key_pem(text)
            .map_err(|e| Error::CertificateFormat(role, format!("not a P-384 public key: {e}")));
    }
    if let Ok(key) = VerifyingKey::from_public_key_der(bytes) {
        return Ok(key);
    }
    Cert::parse(role, bytes)?.p384_key()
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_cert::builder::{profile::BuilderProfile, Builder, CertificateBuilder};
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
    use x509_cert::ext::Extension;
    use x509_cert::name::Name;
    use x509_cert::time::{Time, Validity};

    struct Profile(Vec<Extension>);

    impl BuilderProfile for Profile {
        fn get_issuer(&self, subject: &Name) -> Name {
            subject.clone()
        }
        fn get_subject(&self) -> Name {
            "CN=test".parse().unwrap()
        }
        fn build_extensions(
            &self,
            _: spki::SubjectPublicKeyInfoRef<'_>,
            _: spki::SubjectPublicKeyInfoRef<'_>,
            _: &x509_cert::TbsCertificate,
        ) -> x509_cert::builder::Result<Vec<Extension>> {
            Ok(self.0.clone())
        }
    }

    fn ext<T: der::oid::AssociatedOid + Encode>(v: &T) -> Extension {
        Extension {
            extn_id: T::OID,
            critical: true,
            extn_value: der::asn1::OctetString::new(v.to_der().unwrap()).unwrap(),
        }
    }

    fn time(year: u16) -> Time {
        Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(
            der::DateTime::new(year, 1, 1, 0, 0, 0).unwrap(),
        ))
    }

    fn cert(extensions: Vec<Extension>, from: u16, to: u16) -> Certificate {
        let key = p384::ecdsa::SigningKey::from_slice(&[7; 48]).unwrap();
        let spki = spki::SubjectPublicKeyInfoOwned::from_key(key.verifying_key()).unwrap();
        CertificateBuilder::new(
            Profile(extensions),
            x509_cert::serial_number::SerialNumber::from(1u32),
            Validity::new(time(from), time(to)),
            spki,
        )
        .unwrap()
        .build::<_, p384::ecdsa::DerSignature>(&key)
        .unwrap()
    }

    fn bc(ca: bool) -> Extension {
        ext(&BasicConstraints {
            ca,
            path_len_constraint: None,
        })
    }

    #[test]
    fn validity_is_checked_against_now() {
        let now = std::time::SystemTime::now();
        assert_eq!(
            check_validity(&cert(vec![], 2020, 9999), CertRole::Vcek, now),
            Ok(())
        );
        assert_eq!(
            check_validity(&cert(vec![], 2020, 2021), CertRole::Vcek, now),
            Err(Error::CertificateValidity(CertRole::Vcek))
        );
        assert_eq!(
            check_validity(&cert(vec![], 9000, 9999), CertRole::Ask, now),
            Err(Error::CertificateValidity(CertRole::Ask))
        );
    }

    #[test]
    fn a_ca_must_say_so_and_may_sign_certificates() {
        let role = CertRole::Ask;
        let sign = ext(&KeyUsage(KeyUsages::KeyCertSign.into()));
        let digital = ext(&KeyUsage(KeyUsages::DigitalSignature.into()));
        assert_eq!(check_ca(&cert(vec![bc(true)], 2020, 9999), role), Ok(()));
        assert_eq!(
            check_ca(&cert(vec![bc(true), sign], 2020, 9999), role),
            Ok(())
        );
        for (what, exts) in [
            ("no basicConstraints", vec![]),
            ("CA=false", vec![bc(false)]),
            ("no keyCertSign", vec![bc(true), digital]),
        ] {
            assert!(
                matches!(
                    check_ca(&cert(exts, 2020, 9999), role),
                    Err(Error::CertificateConstraints(CertRole::Ask, _))
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn an_end_entity_must_not_be_a_ca() {
        assert_eq!(
            check_not_ca(&cert(vec![], 2020, 9999), CertRole::Vcek),
            Ok(())
        );
        assert_eq!(
            check_not_ca(&cert(vec![bc(false)], 2020, 9999), CertRole::Vcek),
            Ok(())
        );
        assert!(matches!(
            check_not_ca(&cert(vec![bc(true)], 2020, 9999), CertRole::Vcek),
            Err(Error::CertificateConstraints(CertRole::Vcek, _))
        ));
    }
}
