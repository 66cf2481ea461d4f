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
    /// The vTPM's per-boot endorsement CA certificate (TPM NV 0x01C00100).
    EndorsementCa,
    /// The RSA EK certificate (TPM NV 0x01C00002).
    RsaEk,
    /// The ECC EK certificate (TPM NV 0x01C0000A).
    EccEk,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertRole::Vcek => "VCEK",
            CertRole::Ask => "ASK",
            CertRole::Ark => "ARK",
            CertRole::EndorsementCa => "endorsement CA",
            CertRole::RsaEk => "RSA EK",
            CertRole::EccEk => "ECC EK",
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
    /// No expected launch measurement was given and the caller did not opt out: without
    /// it, any SVSM a host builds itself passes every other check.
    MeasurementRequired,
    /// The VCEK certificate's hwID extension is not the report's CHIP_ID: the VCEK
    /// belongs to another chip.
    VcekChipId,
    /// A VCEK certificate TCB extension differs from the report's REPORTED_TCB (which
    /// component): the VCEK was derived for another TCB.
    VcekTcb(&'static str),
    /// The report's SIGNING_KEY field is not the VCEK (0).
    ReportSigningKey(u32),
    /// The report's TCB is below the verifier's minimum.
    TcbBelowMinimum(String),
    /// A certificate is not valid now (not yet, or no longer).
    CertificateValidity(CertRole),
    /// A certificate's basicConstraints or keyUsage do not fit its place in the chain.
    CertificateConstraints(CertRole, &'static str),
    /// A certificate's ECDSA signature does not verify with its issuer's key.
    CertificateSignature(CertRole),
    /// REPORT_DATA does not bind this CA key and these EKs.
    EkBinding,
    /// The vTPM state evidence (NV 0x01C00111) is not 40 bytes.
    StateEvidenceFormat,
    /// The vTPM started from an older state than the relying party last saw: the host
    /// handed back an earlier generation (a rollback), or kept no state at all.
    StateRollback {
        /// The generation this boot loaded (None: it keeps no state).
        generation: Option<u64>,
        /// The lowest acceptable generation.
        minimum: u64,
    },
    /// The CA certificate's name does not point to this report.
    EvidencePointer,
    /// An EK certificate does not carry the key the TPM presents (tpm2_createek's).
    EkPublicMismatch(CertRole),
    /// The NV evidence is truncated or malformed.
    NvEvidence(String),
    /// The TCG event log is truncated or malformed, or cannot be replayed in a bank
    /// (the message names the event index and offset).
    EventLog(String),
    /// A measured-boot policy file is malformed.
    BootPolicy(String),
    /// A boot artifact is not the PE image a reference value needs (e.g. the kernel).
    PeImage(String),
    /// A firmware image is not the OVMF image a reference value needs.
    FirmwareImage(String),
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
            Error::MeasurementRequired => f.write_str(
                "launch measurement: none given; pass --measurement (svsm-igvm measure) or \
                 opt out explicitly with --no-measurement-check",
            ),
            Error::VcekChipId => f.write_str(
                "VCEK certificate: its hwID is not the report's CHIP_ID (a VCEK of another chip)",
            ),
            Error::VcekTcb(which) => write!(
                f,
                "VCEK certificate: its {which} SPL differs from the report's REPORTED_TCB \
                 (a VCEK for another TCB)"
            ),
            Error::ReportSigningKey(k) => write!(
                f,
                "report: SIGNING_KEY is {k}, expected 0 (the VCEK)"
            ),
            Error::TcbBelowMinimum(why) => write!(f, "report TCB: {why}"),
            Error::CertificateValidity(role) => {
                write!(f, "{role} certificate: not valid at the current time")
            }
            Error::CertificateConstraints(role, why) => write!(f, "{role} certificate: {why}"),
            Error::CertificateSignature(role) => write!(
                f,
                "{role} certificate: its signature does not verify with its issuer's key"
            ),
            Error::EkBinding => f.write_str(
                "REPORT_DATA: does not bind this endorsement CA key, these EKs and this vTPM state",
            ),
            Error::StateEvidenceFormat => f.write_str(
                "vTPM state evidence: not a 40-byte generation and digest (NV 0x01C00111)",
            ),
            Error::StateRollback {
                generation: Some(g),
                minimum,
            } => write!(
                f,
                "vTPM state: rollback: this boot started from generation {g}, older than \
                 generation {minimum} seen before"
            ),
            Error::StateRollback {
                generation: None,
                minimum,
            } => write!(
                f,
                "vTPM state: this boot keeps no state (no NV 0x01C00111), but generation \
                 {minimum} was seen before"
            ),
            Error::EvidencePointer => f.write_str(
                "endorsement CA certificate: its name does not point to this report",
            ),
            Error::EkPublicMismatch(role) => write!(
                f,
                "{role} certificate: certifies another key than the TPM's EK"
            ),
            Error::NvEvidence(why) => write!(f, "NV evidence: {why}"),
            Error::EventLog(why) => write!(f, "event log: {why}"),
            Error::BootPolicy(why) => write!(f, "measured-boot policy: {why}"),
            Error::PeImage(why) => write!(f, "PE image: {why}"),
            Error::FirmwareImage(why) => write!(f, "firmware image: {why}"),
        }
    }
}

impl std::error::Error for Error {}
