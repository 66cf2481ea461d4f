//! Verifies an SVSM attestation: the SNP report, the AMD chain, the services manifest, and
//! a vTPM quote whose attestation key was proven resident beside the manifest's EK.
//!
//! The chain of trust, link by link (each with its own [`Error`] variant):
//! 1. ARK → ASK → VCEK (RSA-PSS, SHA-384), or a VCEK key the caller trusts directly;
//! 2. the report's ECDSA P-384 signature by the VCEK, at VMPL0 (the SVSM's), for a
//!    guest whose policy does not allow debugging;
//! 3. optionally, the launch measurement equals the expected digest;
//! 4. REPORT_DATA = SHA-512(nonce || services manifest), with a 64-byte nonce;
//! 5. the manifest's vTPM entry is shaped like a TCG default EK and is the EK the
//!    credential challenge was made for;
//! 6. the attestation key (AK) is the one the challenge named, a restricted fixedTPM
//!    signing key, and the vTPM's ActivateCredential returned the challenge's secret;
//! 7. the quote is signed by the AK, carries the nonce, and covers the expected PCRs.
//!
//! [`ek_nv`] checks the other evidence a guest holds, the EK certificates the SVSM wrote
//! to TPM NV: the same AMD links, then the per-boot endorsement CA the report binds, the
//! EK certificates it issued, and the EKs.

pub mod boot_policy;
pub mod chain;
pub mod credential;
pub mod ek_nv;
mod error;
pub mod eventlog;
pub mod manifest;
pub mod reference;
pub mod report;
pub mod tpm;

use p384::ecdsa::VerifyingKey;
use rsa::rand_core::TryCryptoRng;
use sha2::{Digest, Sha512};

pub use error::{CertRole, Error};
pub use report::Report;

/// How the verifier knows the VCEK's key.
#[derive(Debug, Clone)]
pub enum VcekTrust {
    /// Through an ARK → ASK → VCEK chain (the ARK is the trust anchor).
    Chain(Box<chain::Chain>),
    /// A key the caller trusts directly (e.g. an emulated PSP's test key).
    Key(VerifyingKey),
}

impl VcekTrust {
    /// The VCEK key, after checking the chain if there is one.
    pub fn vcek_key(&self) -> Result<VerifyingKey, Error> {
        match self {
            VcekTrust::Chain(chain) => chain.verify(),
            VcekTrust::Key(key) => Ok(*key),
        }
    }
}

/// The nonce size a verifier must use: REPORT_DATA's (64 bytes). REPORT_DATA is
/// SHA-512(nonce || manifest) with no separator; the SVSM takes nonces of at most 64
/// bytes, so with a 64-byte nonce here the guest cannot shift bytes of a forged manifest
/// into its nonce.
pub const NONCE_SIZE: usize = 64;

/// SHA-512(nonce || manifest): what the SVSM puts into REPORT_DATA.
pub fn report_data(nonce: &[u8], manifest: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(nonce);
    h.update(manifest);
    h.finalize().into()
}

/// Checks links 1-4: chain, signature, VMPL, measurement, and (when given) that
/// REPORT_DATA binds `(nonce, manifest)`.
pub fn verify_report(
    trust: &VcekTrust,
    report: &[u8],
    binding: Option<(&[u8], &[u8])>,
    expected_measurement: Option<&[u8; 48]>,
) -> Result<Report, Error> {
    let report = verify_hardware_report(trust, report, None)?;
    check_report_fields(&report, expected_measurement)?;
    if let Some((nonce, manifest)) = binding {
        if nonce.len() != NONCE_SIZE {
            return Err(Error::NonceLength(nonce.len()));
        }
        if report.report_data() != &report_data(nonce, manifest) {
            return Err(Error::ReportData);
        }
    }
    Ok(report)
}

/// The report as the hardware vouches for it: the VCEK (chain checked, issued for this
/// report's chip and TCB) signed it, with the VCEK as its signing key, at a TCB no lower
/// than `min_tcb`.
pub fn verify_hardware_report(
    trust: &VcekTrust,
    report: &[u8],
    min_tcb: Option<&report::Tcb>,
) -> Result<Report, Error> {
    let vcek = trust.vcek_key()?;
    let report = Report::parse(report)?;
    report.verify_signature(&vcek)?;
    if report.signing_key() != 0 {
        return Err(Error::ReportSigningKey(report.signing_key()));
    }
    if let VcekTrust::Chain(chain) = trust {
        chain.check_vcek_for(&report)?;
    }
    if let Some(min) = min_tcb {
        let tcb = report.reported_tcb();
        if !tcb.at_least(min) {
            return Err(Error::TcbBelowMinimum(format!(
                "{tcb} is below the minimum {min}"
            )));
        }
    }
    Ok(report)
}

/// The report's own fields: VMPL 0, a policy without debugging, the launch measurement.
pub(crate) fn check_report_fields(
    report: &Report,
    expected_measurement: Option<&[u8; 48]>,
) -> Result<(), Error> {
    if report.vmpl() != 0 {
        return Err(Error::ReportVmpl(report.vmpl()));
    }
    if report.policy() & report::POLICY_DEBUG != 0 {
        return Err(Error::ReportDebugPolicy(report.policy()));
    }
    if let Some(expected) = expected_measurement {
        if report.measurement() != expected {
            return Err(Error::Measurement);
        }
    }
    Ok(())
}

/// The verifier's side of the credential challenge, kept until the vTPM answers.
#[derive(Debug, Clone)]
pub struct Challenge {
    ek_name: Vec<u8>,
    ak_name: Vec<u8>,
    secret: Vec<u8>,
    /// What the guest hands to TPM2_ActivateCredential.
    pub blob: credential::CredentialBlob,
}

impl Challenge {
    /// Makes a challenge for the AK `ak_public` (TPMT_PUBLIC) under the EK `ek_public`
    /// (the manifest's vTPM entry): a fresh 32-byte secret sealed by MakeCredential.
    pub fn new<R: TryCryptoRng + ?Sized>(
        rng: &mut R,
        ek_public: &[u8],
        ak_public: &[u8],
    ) -> Result<Self, Error> {
        let ek = tpm::Public::parse(ek_public)?;
        ek.check_endorsement_key()?;
        let ak = tpm::Public::parse(ak_public)?;
        let ak_name = ak.name()?;
        let mut secret = vec![0u8; 32];
        rng.try_fill_bytes(&mut secret)
            .map_err(|_| Error::TpmFormat("no randomness for the secret"))?;
        let blob = credential::make_credential(rng, &ek, &ak_name, &secret)?;
        Ok(Challenge {
            ek_name: ek.name()?,
            ak_name,
            secret,
            blob,
        })
    }

    /// Rebuilds a challenge from its parts (the CLI keeps them in a file).
    pub fn from_parts(
        ek_name: Vec<u8>,
        ak_name: Vec<u8>,
        secret: Vec<u8>,
        blob: credential::CredentialBlob,
    ) -> Self {
        Challenge {
            ek_name,
            ak_name,
            secret,
            blob,
        }
    }

    /// The challenge as text, one `key=hex` per line (what `svsm-verify challenge`
    /// keeps in its `challenge` file).
    pub fn to_text(&self) -> String {
        format!(
            "ek_name={}\nak_name={}\nsecret={}\nid_object={}\nencrypted_secret={}\n",
            hex::encode(&self.ek_name),
            hex::encode(&self.ak_name),
            hex::encode(&self.secret),
            hex::encode(&self.blob.id_object),
            hex::encode(&self.blob.encrypted_secret),
        )
    }

    /// Reads [`Self::to_text`]'s form back; names the line that is missing or bad.
    pub fn from_text(text: &str) -> Result<Self, ChallengeTextError> {
        let field = |key: &'static str| -> Result<Vec<u8>, ChallengeTextError> {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .ok_or(ChallengeTextError(key))?;
            hex::decode(line.trim()).map_err(|_| ChallengeTextError(key))
        };
        Ok(Challenge {
            ek_name: field("ek_name")?,
            ak_name: field("ak_name")?,
            secret: field("secret")?,
            blob: credential::CredentialBlob {
                id_object: field("id_object")?,
                encrypted_secret: field("encrypted_secret")?,
            },
        })
    }

    /// The EK name the challenge was made for.
    pub fn ek_name(&self) -> &[u8] {
        &self.ek_name
    }
    /// The AK name the challenge was made for.
    pub fn ak_name(&self) -> &[u8] {
        &self.ak_name
    }
    /// The secret only the right TPM can recover.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// A challenge file line that is missing or not hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeTextError(pub &'static str);

impl core::fmt::Display for ChallengeTextError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "challenge file: no valid {}= line", self.0)
    }
}

impl std::error::Error for ChallengeTextError {}

/// The PCR values a verifier expects, in one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPcrs {
    /// The bank (TPM hash algorithm).
    pub hash_alg: u16,
    /// (index, value) pairs in ascending index order.
    pub values: Vec<(u8, Vec<u8>)>,
}

/// What a guest returns for a full attestation.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The SNP report from ATTEST_SERVICES.
    pub report: &'a [u8],
    /// The services manifest from ATTEST_SERVICES.
    pub manifest: &'a [u8],
    /// The AK's TPMT_PUBLIC.
    pub ak_public: &'a [u8],
    /// The secret TPM2_ActivateCredential returned.
    pub activated_secret: &'a [u8],
    /// The quote's TPMS_ATTEST.
    pub quote: &'a [u8],
    /// The quote's TPMT_SIGNATURE.
    pub quote_signature: &'a [u8],
}

/// Which call produced the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestKind {
    /// ATTEST_SERVICES: a services manifest with a vTPM entry.
    #[default]
    Services,
    /// ATTEST_SINGLE_SERVICE for the vTPM: the EK's TPMT_PUBLIC itself.
    Vtpm,
}

/// What the verifier requires.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Which call produced the manifest.
    pub manifest_kind: ManifestKind,
    /// How the VCEK key is trusted.
    pub vcek: VcekTrust,
    /// The nonce the verifier handed out.
    pub nonce: Vec<u8>,
    /// The PCR values the quote must cover.
    pub pcrs: ExpectedPcrs,
    /// The launch measurement, when the verifier knows it.
    pub measurement: Option<[u8; 48]>,
}

/// What a successful verification established.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The verified report.
    pub report: Report,
    /// The vTPM's EK (TPMT_PUBLIC) from the manifest.
    pub ek_public: Vec<u8>,
    /// The quote.
    pub quote: tpm::Quote,
}

/// Checks the whole chain; the first broken link is the error.
pub fn verify(
    policy: &Policy,
    challenge: &Challenge,
    evidence: &Evidence<'_>,
) -> Result<Verified, Error> {
    let report = verify_report(
        &policy.vcek,
        evidence.report,
        Some((&policy.nonce, evidence.manifest)),
        policy.measurement.as_ref(),
    )?;

    let ek_public = match policy.manifest_kind {
        ManifestKind::Services => manifest::vtpm_ek(evidence.manifest)?,
        ManifestKind::Vtpm => evidence.manifest,
    };
    let ek = tpm::Public::parse(ek_public)?;
    ek.check_endorsement_key()?;
    if ek.name()? != challenge.ek_name {
        return Err(Error::EkMismatch);
    }

    let ak = tpm::Public::parse(evidence.ak_public)?;
    if ak.name()? != challenge.ak_name {
        return Err(Error::AkMismatch);
    }
    let required =
        tpm::attr::FIXED_TPM | tpm::attr::FIXED_PARENT | tpm::attr::RESTRICTED | tpm::attr::SIGN;
    if ak.attributes & required != required || ak.attributes & tpm::attr::DECRYPT != 0 {
        return Err(Error::AkAttributes);
    }
    if !constant_time_eq(evidence.activated_secret, &challenge.secret) {
        return Err(Error::CredentialActivation);
    }

    let signature = tpm::Signature::parse(evidence.quote_signature)?;
    let quote = tpm::Quote::parse(evidence.quote)?;
    signature.verify(&ak, &quote.bytes)?;
    if !constant_time_eq(&quote.extra_data, &policy.nonce) {
        return Err(Error::QuoteNonce);
    }
    let expected_selection = [tpm::PcrSelection {
        hash_alg: policy.pcrs.hash_alg,
        pcrs: policy.pcrs.values.iter().map(|(i, _)| *i).collect(),
    }];
    if quote.selection != expected_selection {
        return Err(Error::QuotePcrSelection);
    }
    let values: Vec<&[u8]> = policy
        .pcrs
        .values
        .iter()
        .map(|(_, v)| v.as_slice())
        .collect();
    if tpm::hash(signature.hash_alg, &values)? != quote.pcr_digest {
        return Err(Error::QuotePcrDigest);
    }
    Ok(Verified {
        report,
        ek_public: ek_public.to_vec(),
        quote,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
