//! The X.509 certificates of the per-boot endorsement CA: its own (self-signed, pointing
//! to the SNP report that vouches for it) and the two EK certificates it issues.
//!
//! The EK certificates follow the TCG EK Credential Profile for TPM Family 2.0 (version
//! 2.4, section 3.2) where it applies to a vTPM: empty subject with a critical subject
//! alternative name holding a directoryName of tcg-at-tpmManufacturer (2.23.133.2.1,
//! "id:" and the hex TPM_PT_MANUFACTURER), tcg-at-tpmModel (2.23.133.2.2, the vendor
//! strings) and tcg-at-tpmVersion (2.23.133.2.3, "id:" and the hex
//! TPM_PT_FIRMWARE_VERSION_1); extended key usage tcg-kp-EKCertificate (2.23.133.8.1);
//! key usage keyEncipherment (RSA) or keyAgreement (ECC), critical; basicConstraints
//! CA=false, critical; the authority key identifier of the CA; subject directory
//! attributes with tcg-at-tpmSpecification (2.23.133.2.16: family "2.0", level,
//! revision). Validity: from 2025-01-01 to 9999-12-31 23:59:59 (RFC 5280, 4.1.2.5: no
//! well-defined expiration); the SVSM has no trusted clock, and the certificates hold for
//! this boot only, which the CA's name says.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use der::oid::AssociatedOid;
use der::{Any, DateTime, Decode, Encode, Sequence};
use p384::ecdsa::{DerSignature, SigningKey};
use sha2::{Digest, Sha256};
use svsm_protocol::ek_evidence::{CA_COMMON_NAME, CA_SUBJECT_EVIDENCE_OU};
use x509_cert::attr::{Attribute, AttributeTypeAndValue};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::der::asn1::{
    BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString, PrintableStringRef, SetOfVec,
    UintRef, UtcTime, Utf8StringRef,
};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectDirectoryAttributes, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, EncodePublicKey, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef,
};
use x509_cert::time::{Time, Validity};
use x509_cert::TbsCertificate;

/// tcg-at-tpmManufacturer.
pub const TCG_AT_TPM_MANUFACTURER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.1");
/// tcg-at-tpmModel.
pub const TCG_AT_TPM_MODEL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.2");
/// tcg-at-tpmVersion.
pub const TCG_AT_TPM_VERSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.3");
/// tcg-at-tpmSpecification.
pub const TCG_AT_TPM_SPECIFICATION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.23.133.2.16");
/// tcg-kp-EKCertificate.
pub const TCG_KP_EK_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.1");

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const AT_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const AT_SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");
const AT_ORGANIZATIONAL_UNIT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");

/// Why a certificate could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError(pub String);

impl core::fmt::Display for CertError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(what: &str, e: impl core::fmt::Display) -> CertError {
    CertError(alloc::format!("{what}: {e}"))
}

/// What the TPM says it is (TPM_PT properties), for the EK certificates' names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TpmIdentity {
    /// TPM_PT_MANUFACTURER.
    pub manufacturer: u32,
    /// TPM_PT_VENDOR_STRING_1..4, NULs removed.
    pub model: String,
    /// TPM_PT_FIRMWARE_VERSION_1.
    pub firmware_version: u32,
    /// TPM_PT_LEVEL.
    pub level: u32,
    /// TPM_PT_REVISION.
    pub revision: u32,
}

impl TpmIdentity {
    /// From the (property, value) pairs of TPM2_GetCapability(TPM_PROPERTIES).
    pub fn from_properties(props: &[(u32, u32)]) -> Self {
        use crate::nv::pt;
        let get = |p: u32| props.iter().find(|(k, _)| *k == p).map_or(0, |(_, v)| *v);
        let mut model = String::new();
        for p in pt::VENDOR_STRING_1..pt::VENDOR_STRING_1 + 4 {
            for b in get(p).to_be_bytes() {
                if (0x20..0x7F).contains(&b) {
                    model.push(char::from(b));
                }
            }
        }
        Self {
            manufacturer: get(pt::MANUFACTURER),
            model,
            firmware_version: get(pt::FIRMWARE_VERSION_1),
            level: get(pt::LEVEL),
            revision: get(pt::REVISION),
        }
    }
}

/// TPMSpecification ::= SEQUENCE { family UTF8String, level INTEGER, revision INTEGER }
/// (EK Credential Profile, section 3.1.3).
#[derive(Sequence)]
struct TpmSpecification<'a> {
    family: Utf8StringRef<'a>,
    level: u32,
    revision: u32,
}

/// RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017).
#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// The CA key's SubjectPublicKeyInfo, DER.
pub fn ca_public_key_der(key: &SigningKey) -> Result<Vec<u8>, CertError> {
    key.verifying_key()
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| err("P-384 public key", e))
}

/// The SubjectPublicKeyInfo of an EK given as a TPMT_PUBLIC (RSA or ECC P-256).
pub fn ek_spki(public: &[u8]) -> Result<SubjectPublicKeyInfoOwned, CertError> {
    let key =
        crate::ek::EkPublic::parse(public).ok_or(CertError("a malformed EK public area".into()))?;
    match key {
        crate::ek::EkPublic::Rsa { modulus, exponent } => {
            let e = exponent.to_be_bytes();
            let der = RsaPublicKey {
                modulus: UintRef::new(modulus).map_err(|e| err("modulus", e))?,
                public_exponent: UintRef::new(&e).map_err(|e| err("exponent", e))?,
            }
            .to_der()
            .map_err(|e| err("RSA public key", e))?;
            Ok(SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: RSA_ENCRYPTION,
                    parameters: Some(Any::from(Null)),
                },
                subject_public_key: BitString::from_bytes(&der).map_err(|e| err("RSA key", e))?,
            })
        }
        crate::ek::EkPublic::EccP256 { x, y } => {
            let mut point = vec![0x04];
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            Ok(SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: ID_EC_PUBLIC_KEY,
                    parameters: Some(Any::from(&SECP256R1)),
                },
                subject_public_key: BitString::from_bytes(&point).map_err(|e| err("ECC key", e))?,
            })
        }
    }
}

/// One attribute, one RDN.
fn rdn(oid: ObjectIdentifier, value: Any) -> Result<RelativeDistinguishedName, CertError> {
    RelativeDistinguishedName::try_from(vec![AttributeTypeAndValue { oid, value }])
        .map_err(|e| err("RDN", e))
}

fn utf8(s: &str) -> Result<Any, CertError> {
    Any::encode_from(&Utf8StringRef::new(s).map_err(|e| err("UTF8String", e))?)
        .map_err(|e| err("UTF8String", e))
}

fn name(rdns: Vec<RelativeDistinguishedName>) -> Result<Name, CertError> {
    let mut seq = RdnSequence::default();
    for r in rdns {
        seq.push(r);
    }
    let der = seq.to_der().map_err(|e| err("name", e))?;
    Name::from_der(&der).map_err(|e| err("name", e))
}

/// The CA's name: its common name, and where the report that vouches for it lies
/// (organizational unit) with the report's SHA-256 (serialNumber).
pub fn ca_name(report: &[u8]) -> Result<Name, CertError> {
    let digest = Sha256::digest(report);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&alloc::format!("{b:02x}"));
    }
    let printable = |s: &str| -> Result<Any, CertError> {
        Any::encode_from(&PrintableStringRef::new(s).map_err(|e| err("PrintableString", e))?)
            .map_err(|e| err("PrintableString", e))
    };
    name(vec![
        rdn(AT_COMMON_NAME, utf8(CA_COMMON_NAME)?)?,
        rdn(AT_ORGANIZATIONAL_UNIT, utf8(CA_SUBJECT_EVIDENCE_OU)?)?,
        rdn(AT_SERIAL_NUMBER, printable(&hex)?)?,
    ])
}

/// The validity of every certificate: 2025-01-01 to 9999-12-31 23:59:59 UTC.
fn validity() -> Result<Validity, CertError> {
    let start = DateTime::new(2025, 1, 1, 0, 0, 0).map_err(|e| err("date", e))?;
    let end = DateTime::new(9999, 12, 31, 23, 59, 59).map_err(|e| err("date", e))?;
    Ok(Validity::new(
        Time::UtcTime(UtcTime::from_date_time(start).map_err(|e| err("date", e))?),
        Time::GeneralTime(GeneralizedTime::from_date_time(end)),
    ))
}

/// RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. The builder's SHA-1
/// is not needed: SHA-256 truncated to 20 bytes serves the same purpose (section
/// 4.2.1.2 allows other methods).
fn key_id(spki: &SubjectPublicKeyInfoRef<'_>) -> Vec<u8> {
    Sha256::digest(spki.subject_public_key.raw_bytes())[..20].to_vec()
}

/// An extension with the value's own OID, DER-encoded.
fn ext<T: AssociatedOid + Encode>(value: &T, critical: bool) -> der::Result<Extension> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// The CA certificate's profile.
struct CaProfile {
    name: Name,
}

impl BuilderProfile for CaProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.name.clone()
    }
    fn get_subject(&self) -> Name {
        self.name.clone()
    }
    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let _ = tbs;
        Ok(vec![
            ext(
                &BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                },
                true,
            )?,
            ext(&KeyUsage(KeyUsages::KeyCertSign.into()), true)?,
            ext(
                &SubjectKeyIdentifier(OctetString::new(key_id(&spk))?),
                false,
            )?,
        ])
    }
}

/// The EK certificates' profile.
struct EkProfile {
    issuer: Name,
    rsa: bool,
    identity: TpmIdentity,
}

impl BuilderProfile for EkProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        // Empty: the TPM is named by the subject alternative name.
        Name::default()
    }
    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let _ = tbs;
        let id = &self.identity;
        let to_builder = |e: CertError| x509_cert::builder::Error::from(der_error(e));
        let dir = name(vec![
            rdn(
                TCG_AT_TPM_MANUFACTURER,
                utf8(&alloc::format!("id:{:08X}", id.manufacturer)).map_err(to_builder)?,
            )
            .map_err(to_builder)?,
            rdn(TCG_AT_TPM_MODEL, utf8(&id.model).map_err(to_builder)?).map_err(to_builder)?,
            rdn(
                TCG_AT_TPM_VERSION,
                utf8(&alloc::format!("id:{:08X}", id.firmware_version)).map_err(to_builder)?,
            )
            .map_err(to_builder)?,
        ])
        .map_err(to_builder)?;
        // Critical: the subject is empty (RFC 5280, 4.2.1.6).
        let san = ext(&SubjectAltName(vec![GeneralName::DirectoryName(dir)]), true)?;
        let spec = TpmSpecification {
            family: Utf8StringRef::new("2.0")?,
            level: id.level,
            revision: id.revision,
        };
        let mut values = SetOfVec::new();
        values.insert(Any::encode_from(&spec)?)?;
        let sda = SubjectDirectoryAttributes(vec![Attribute {
            oid: TCG_AT_TPM_SPECIFICATION,
            values,
        }]);
        let usage = if self.rsa {
            KeyUsages::KeyEncipherment
        } else {
            KeyUsages::KeyAgreement
        };
        Ok(vec![
            san,
            ext(
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
                true,
            )?,
            ext(&KeyUsage(usage.into()), true)?,
            ext(&ExtendedKeyUsage(vec![TCG_KP_EK_CERTIFICATE]), false)?,
            ext(
                &AuthorityKeyIdentifier {
                    key_identifier: Some(OctetString::new(key_id(&issuer_spk))?),
                    authority_cert_issuer: None,
                    authority_cert_serial_number: None,
                },
                false,
            )?,
            ext(&sda, false)?,
        ])
    }
}

fn der_error(_e: CertError) -> x509_cert::der::Error {
    x509_cert::der::Error::from(x509_cert::der::ErrorKind::Failed)
}

fn serial_number(bytes: &[u8]) -> Result<SerialNumber, CertError> {
    // Positive and non-zero: the top bit cleared, the first byte at least 1.
    let mut b = bytes.to_vec();
    if let Some(first) = b.first_mut() {
        *first = (*first & 0x7F) | 0x01;
    }
    SerialNumber::new(&b).map_err(|e| err("serial number", e))
}

/// The CA's self-signed certificate (CA, path length 0, keyCertSign), its subject pointing
/// to `report`. The self-signature only makes it a well-formed root: what vouches for the
/// key is the report, whose REPORT_DATA binds it.
pub fn ca_certificate(
    key: &SigningKey,
    serial: &[u8],
    report: &[u8],
) -> Result<Vec<u8>, CertError> {
    let spki_der = ca_public_key_der(key)?;
    let spki = SubjectPublicKeyInfoOwned::from_der(&spki_der).map_err(|e| err("CA key", e))?;
    let profile = CaProfile {
        name: ca_name(report)?,
    };
    CertificateBuilder::new(profile, serial_number(serial)?, validity()?, spki)
        .map_err(|e| err("CA certificate", e))?
        .build::<_, DerSignature>(key)
        .map_err(|e| err("CA certificate signature", e))?
        .to_der()
        .map_err(|e| err("CA certificate", e))
}

/// The EK certificate for `ek_public` (a TPMT_PUBLIC), issued by the CA whose name is
/// the CA certificate's subject for `report`.
pub fn ek_certificate(
    key: &SigningKey,
    serial: &[u8],
    ek_public: &[u8],
    identity: &TpmIdentity,
    report: &[u8],
) -> Result<Vec<u8>, CertError> {
    let spki = ek_spki(ek_public)?;
    let rsa = spki.algorithm.oid == RSA_ENCRYPTION;
    let profile = EkProfile {
        issuer: ca_name(report)?,
        rsa,
        identity: identity.clone(),
    };
    CertificateBuilder::new(profile, serial_number(serial)?, validity()?, spki)
        .map_err(|e| err("EK certificate", e))?
        .build::<_, DerSignature>(key)
        .map_err(|e| err("EK certificate signature", e))?
        .to_der()
        .map_err(|e| err("EK certificate", e))
}
