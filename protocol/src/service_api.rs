//! The verification service's API, version 1: the JSON bodies the guest agent and the
//! service exchange over HTTPS. Shared by both so they cannot drift.
//!
//! Binary values travel as standard base64 (RFC 4648 §4, with padding); nonces and PCR
//! values as lowercase hex, the form tpm2-tools takes and prints.
//!
//! The exchange:
//! 1. `POST /v1/challenge` with a [`ChallengeRequest`] → 200 [`ChallengeResponse`]: a
//!    single-use nonce and its session, valid until `expires_at`.
//! 2. The agent quotes the PCRs the policy names with the nonce as qualifying data, reads
//!    the NV evidence, the EK and the event log, and creates an AK.
//! 3. `POST /v1/attest` with an [`AttestRequest`] → 200 [`AttestResponse`] with the
//!    secret wrapped to this vTPM (TPM2_MakeCredential to the EK for the AK's name; only
//!    TPM2_ActivateCredential on this vTPM, with this AK loaded, recovers the key that
//!    decrypts it), or an error status with an [`ErrorBody`] naming the reason.
//!
//! Errors: 400 malformed request, 403 evidence refused (the reason names the first broken
//! link), 404 unknown or already used session (or `not-found`: no such endpoint), 408
//! request not received in time, 410 expired session, 413 body too large, 415 a body that
//! is not `application/json` (`malformed`), 500 the service's own failure (its database).

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The path prefix of this version.
pub const API_PREFIX: &str = "/v1";
/// `POST` path of the challenge.
pub const CHALLENGE_PATH: &str = "/v1/challenge";
/// `POST` path of the evidence.
pub const ATTEST_PATH: &str = "/v1/attest";
/// The nonce's size in bytes.
pub const NONCE_SIZE: usize = 32;

/// Asks for a challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// A name the guest gives itself, for the service's log only (never trusted).
    #[serde(default)]
    pub guest: Option<String>,
}

/// A fresh challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeResponse {
    /// The session the evidence must name.
    pub session: String,
    /// The nonce, hex ([`NONCE_SIZE`] bytes): the quote's qualifying data.
    pub nonce: String,
    /// Unix time (seconds) after which the session is refused.
    pub expires_at: u64,
    /// The PCRs to quote, as tpm2-tools writes a selection (for example `sha256:0,1,2,3,4,5,6,7,9`).
    pub pcr_selection: String,
}

/// The vTPM's endorsement evidence as the guest reads it from NV (base64 each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvEvidence {
    /// 0x01C00002: the RSA EK certificate (DER).
    pub rsa_ek_cert: String,
    /// 0x01C0000A: the ECC EK certificate (DER).
    pub ecc_ek_cert: String,
    /// 0x01C00100: the per-boot endorsement CA certificate (DER).
    pub ca_cert: String,
    /// 0x01C00110: the SNP attestation report.
    pub report: String,
    /// 0x01C00101: the VCEK certificate (DER), when the host supplied one. A service that
    /// trusts AMD's ARK and ASK needs it (or its own copy from AMD's key distribution
    /// service) to check the report's signature.
    #[serde(default)]
    pub vcek_cert: Option<String>,
    /// 0x01C00111: the persistent state's evidence, when the vTPM keeps its state.
    #[serde(default)]
    pub state: Option<String>,
}

/// One PCR value as the quote covered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrValue {
    /// The bank: `sha1`, `sha256`, `sha384` or `sha512`.
    pub bank: String,
    /// The PCR index.
    pub index: u8,
    /// Its value, hex.
    pub value: String,
}

/// Everything the service checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The session of the challenge.
    pub session: String,
    /// The NV evidence.
    pub nv: NvEvidence,
    /// The EK the secret is wrapped to (TPM2B_PUBLIC or TPMT_PUBLIC, as `tpm2_createek -u`
    /// writes it; the RSA EK, template L-1), base64. It must be the certified one.
    pub ek_public: String,
    /// The AK (TPM2B_PUBLIC or TPMT_PUBLIC, as `tpm2_createak -u` writes it), base64.
    pub ak_public: String,
    /// The quote's TPMS_ATTEST (`tpm2_quote -m`), base64.
    pub quote: String,
    /// The quote's TPMT_SIGNATURE (`tpm2_quote -s`), base64.
    pub quote_signature: String,
    /// The quoted PCR values (their digest must be the quote's).
    pub pcrs: Vec<PcrValue>,
    /// The TCG event log (`/sys/kernel/security/tpm0/binary_bios_measurements`), base64.
    pub event_log: String,
}

/// The secret, wrapped so that only the attested vTPM recovers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedSecret {
    /// The secret's name in the operator's policy.
    pub name: String,
    /// `tpm2_activatecredential -i` input (tpm2-tools' credential file: magic, version,
    /// TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET), base64. It yields a 32-byte key.
    pub credential: String,
    /// AES-256-GCM IV (12 bytes), base64.
    pub iv: String,
    /// The secret encrypted under the activated key with AES-256-GCM (tag appended), the
    /// session's UTF-8 bytes as associated data; base64.
    pub ciphertext: String,
}

/// A verdict that allowed release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestResponse {
    /// Always `"allowed"` in a 200 answer.
    pub verdict: String,
    /// The wrapped secret.
    pub secret: WrappedSecret,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// A stable code: `malformed`, `denied`, `unknown-session`, `expired`, `too-large`,
    /// `timeout`, `not-found`, `internal`.
    pub error: String,
    /// What is wrong, for a human (never a secret).
    pub reason: String,
}
