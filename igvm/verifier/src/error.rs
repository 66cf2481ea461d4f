//! The verifier's error: one variant per link of the attestation chain.
//!
//! A verifier that only says "invalid" is useless to the person who has to find out why a
//! machine was refused, so every check has its own variant naming the link that broke.

use core::fmt;

/// Which certificate of the AMD chain a certificate error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// The chip's Versioned Chip Endorsement Key certificate (signs reports).
    Vcek,
    /// The AMD SEV signing key certificate (signs the VCEK).
    Ask,
    /// The AMD root key certificate (signs the ASK and itself).
    Ark,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertRole::Vcek => "VCEK",
            CertRole::Ask => "ASK",
            CertRole::Ark => "ARK",
        })
    }
}

/// A link of the chain that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The report is not a well-formed SNP attestation report (size, version, algorithm).
    ReportFormat(&'static str),
    /// The report's ECDSA P-384 signature does not verify with the VCEK key.
    ReportSignature,
    /// The report was not produced for VMPL0, so it does not speak for the SVSM.
    ReportVmpl(u32),
    /// The guest policy lets the host debug the VM (policy bit 19): its memory is not
    /// confidential, so nothing it attests can be trusted.
    ReportDebugPolicy(u64),
    /// A certificate could not be parsed or has an unexpected key or algorithm.
    CertificateFormat(CertRole, String),
    /// A certificate's issuer is not the subject of the next certificate up.
    ChainIssuer(CertRole),
    /// A certificate's RSA-PSS signature does not verify with its issuer's key.
    ChainSignature(CertRole),
    /// REPORT_DATA is not SHA-512(nonce || manifest).
    ReportData,
    /// The verifier's nonce is not 64 bytes. REPORT_DATA hashes nonce and manifest
    /// without a separator, so a guest that could name a longer nonce to the SVSM could
    /// move bytes between the two; with 64-byte nonces on both sides (the SVSM refuses
    /// longer ones) the split is fixed.
    NonceLength(usize),
    /// The manifest's vTPM entry is not shaped like a TCG default endorsement key
    /// (restricted decryption key, AES-CFB, RSA-2048 or NIST P-256/P-384).
    EkShape(&'static str),
    /// The services manifest is malformed.
    ManifestFormat(&'static str),
    /// The manifest has no vTPM entry (GUID c476f1eb-0123-45a5-9641-b4e7dde5bfe3).
    ManifestNoVtpm,
    /// A TPM structure (EK, AK, quote, signature) is malformed or unsupported.
    TpmFormat(&'static str),
    /// The credential challenge was made for another EK than the manifest's.
    EkMismatch,
    /// The credential challenge was made for another attestation key than the quote's.
    AkMismatch,
    /// The secret the vTPM returned from ActivateCredential is not the challenge's secret:
    /// the AK is not resident beside the manifest's EK.
    CredentialActivation,
    /// The attestation key is not a restricted, fixed signing key.
    AkAttributes,
    /// The quote's signature does not verify with the attestation key.
    QuoteSignature,
    /// The quote's qualifying data is not this verifier's nonce (a stale or replayed quote).
    QuoteNonce,
    /// The quote covers another set of PCRs than the expected one.
    QuotePcrSelection,
    /// The quote's PCR digest is not the digest of the expected PCR values.
    QuotePcrDigest,
    /// The launch measurement is not the expected one.
    Measurement,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ReportFormat(why) => write!(f, "report: malformed: {why}"),
            Error::ReportSignature => {
                f.write_str("report signature: does not verify with the VCEK key")
            }
            Error::ReportVmpl(vmpl) => {
                write!(f, "report VMPL: {vmpl}, expected 0 (the SVSM's VMPL)")
            }
            Error::ReportDebugPolicy(policy) => write!(
                f,
                "report policy: {policy:#x} allows debugging, so the VM is not confidential"
            ),
            Error::CertificateFormat(role, why) => write!(f, "{role} certificate: {why}"),
            Error::ChainIssuer(role) => {
                write!(f, "certificate chain: the {role}'s issuer is not the next certificate")
            }
            Error::ChainSignature(role) => {
                write!(f, "certificate chain: the {role}'s signature does not verify")
            }
            Error::ReportData => {
                f.write_str("REPORT_DATA: is not SHA-512(nonce || services manifest)")
            }
            Error::NonceLength(len) => write!(
                f,
                "nonce: {len} bytes; the binding is only unambiguous for 64-byte nonces"
            ),
            Error::EkShape(why) => write!(f, "endorsement key: {why}"),
            Error::ManifestFormat(why) => write!(f, "services manifest: malformed: {why}"),
            Error::ManifestNoVtpm => f.write_str("services manifest: no vTPM entry"),
            Error::TpmFormat(why) => write!(f, "TPM structure: {why}"),
            Error::EkMismatch => f.write_str(
                "endorsement key: the credential challenge was made for another EK than the manifest's",
            ),
            Error::AkMismatch => f.write_str(
                "attestation key: the credential challenge was made for another key than the quote's",
            ),
            Error::CredentialActivation => f.write_str(
                "credential activation: the returned secret is wrong (AK not resident with the EK)",
            ),
            Error::AkAttributes => {
                f.write_str("attestation key: not a restricted, fixedTPM signing key")
            }
            Error::QuoteSignature => {
                f.write_str("quote signature: does not verify with the attestation key")
            }
            Error::QuoteNonce => f.write_str("quote: qualifying data is not the nonce (stale quote)"),
            Error::QuotePcrSelection => {
                f.write_str("quote: covers another PCR selection than the expected one")
            }
            Error::QuotePcrDigest => {
                f.write_str("quote: PCR digest is not the digest of the expected PCR values")
            }
            Error::Measurement => {
                f.write_str("launch measurement: differs from the expected digest")
            }
        }
    }
}

impl std::error::Error for Error {}
