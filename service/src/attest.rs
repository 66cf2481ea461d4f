//! The verification pipeline of `POST /v1/attest`, link by link; the first broken link is
//! the refusal's reason:
//!
//! 1. (the caller) the session is known, unused and unexpired; it is consumed;
//! 2. the NV evidence: the VCEK under the policy's anchor, the report signed by it at a
//!    TCB no lower than the policy's, at VMPL0 without debugging, one of the policy's
//!    launch measurements; the per-boot endorsement CA the report binds, the EK
//!    certificates it issued ([`svsm_verifier::ek_nv`]); the vTPM state generation no
//!    older than the last one this service saw for this guest;
//! 3. `ek_public` is the certified RSA EK;
//! 4. the AK is a fixedTPM, fixedParent, restricted signing key that cannot decrypt;
//! 5. the quote is signed by that AK, its qualifying data is the session's nonce, it
//!    covers the policy's PCR selection, and the PCR values sent are the ones it covers;
//! 6. the event log parses and replays to those PCR values, and its events satisfy the
//!    boot policy;
//! 7. release: a fresh 32-byte key K is made into a TPM2_MakeCredential blob for the EK
//!    and the AK's name, and the secret is sealed under K with AES-256-GCM, the session
//!    as associated data. Only the vTPM that holds this EK, with this AK loaded, recovers
//!    K (TPM2_ActivateCredential).

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::Nonce;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use svsm_protocol::service_api::{AttestRequest, WrappedSecret};
use svsm_verifier::chain::Chain;
use svsm_verifier::ek_nv::{self, EkPolicy, MeasurementCheck, NvEvidence, TpmEks};
use svsm_verifier::{credential, tpm, Error, VcekTrust};
use zeroize::Zeroizing;

use crate::boot::EventLog;
use crate::policy::{Policy, VcekAnchor};

/// TPM_ALG_SHA1 (a bank name the API accepts; the verifier hashes no SHA-1 quote).
const ALG_SHA1: u16 = 0x0004;

/// The request's binary fields, decoded.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// 0x01C00002.
    pub rsa_ek_cert: Vec<u8>,
    /// 0x01C0000A.
    pub ecc_ek_cert: Vec<u8>,
    /// 0x01C00100.
    pub ca_cert: Vec<u8>,
    /// 0x01C00110.
    pub report: Vec<u8>,
    /// 0x01C00101.
    pub vcek_cert: Option<Vec<u8>>,
    /// 0x01C00111.
    pub state: Option<Vec<u8>>,
    /// The EK's public area.
    pub ek_public: Vec<u8>,
    /// The AK's public area.
    pub ak_public: Vec<u8>,
    /// TPMS_ATTEST.
    pub quote: Vec<u8>,
    /// TPMT_SIGNATURE.
    pub quote_signature: Vec<u8>,
    /// (bank, index, value), in the order sent.
    pub pcrs: Vec<(u16, u8, Vec<u8>)>,
    /// The TCG event log.
    pub event_log: Vec<u8>,
}

/// A bank name of the API as a TPM algorithm.
pub fn bank_alg(name: &str) -> Option<u16> {
    match name {
        "sha1" => Some(ALG_SHA1),
        "sha256" => Some(tpm::ALG_SHA256),
        "sha384" => Some(tpm::ALG_SHA384),
        "sha512" => Some(tpm::ALG_SHA512),
        _ => None,
    }
}

/// A TPM algorithm as a bank name of the API.
pub fn bank_name(alg: u16) -> &'static str {
    match alg {
        ALG_SHA1 => "sha1",
        tpm::ALG_SHA256 => "sha256",
        tpm::ALG_SHA384 => "sha384",
        tpm::ALG_SHA512 => "sha512",
        _ => "unknown",
    }
}

/// The selection as tpm2-tools writes it, e.g. `sha256:0,1,2,3,4,5,6,7,9`.
pub fn selection_string(alg: u16, pcrs: &[u8]) -> String {
    let list: Vec<String> = pcrs.iter().map(u8::to_string).collect();
    format!("{}:{}", bank_name(alg), list.join(","))
}

impl Decoded {
    /// Decodes every base64 and hex field; the error names the field.
    pub fn from_request(req: &AttestRequest) -> Result<Self, String> {
        let b64 = |field: &str, v: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|e| format!("{field}: not base64: {e}"))
        };
        let pcrs = req
            .pcrs
            .iter()
            .map(|p| {
                let alg = bank_alg(&p.bank).ok_or_else(|| {
                    format!(
                        "pcrs: bank {:?} is not sha1, sha256, sha384 or sha512",
                        p.bank
                    )
                })?;
                let value = hex::decode(p.value.trim())
                    .map_err(|e| format!("pcrs: {}:{} value is not hex: {e}", p.bank, p.index))?;
                Ok((alg, p.index, value))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Decoded {
            rsa_ek_cert: b64("nv.rsa_ek_cert", &req.nv.rsa_ek_cert)?,
            ecc_ek_cert: b64("nv.ecc_ek_cert", &req.nv.ecc_ek_cert)?,
            ca_cert: b64("nv.ca_cert", &req.nv.ca_cert)?,
            report: b64("nv.report", &req.nv.report)?,
            vcek_cert: req
                .nv
                .vcek_cert
                .as_deref()
                .map(|v| b64("nv.vcek_cert", v))
                .transpose()?,
            state: req
                .nv
                .state
                .as_deref()
                .map(|v| b64("nv.state", v))
                .transpose()?,
            ek_public: b64("ek_public", &req.ek_public)?,
            ak_public: b64("ak_public", &req.ak_public)?,
            quote: b64("quote", &req.quote)?,
            quote_signature: b64("quote_signature", &req.quote_signature)?,
            pcrs,
            event_log: b64("event_log", &req.event_log)?,
        })
    }
}

/// The guest's id: hex SHA-256 of the EK's TPMT_PUBLIC (a TPM2B_PUBLIC's size prefix
/// dropped), the key the service files its record under.
pub fn ek_id(ek_public: &[u8]) -> String {
    let bare = match ek_public {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => rest,
        _ => ek_public,
    };
    hex::encode(Sha256::digest(bare))
}

/// What the NV evidence established.
#[derive(Debug, Clone)]
pub struct NvVerified {
    /// The certified RSA EK.
    pub ek: tpm::Public,
    /// The vTPM state generation this boot started from, if it keeps state.
    pub state_generation: Option<u64>,
    /// The launch measurement (hex).
    pub measurement: String,
}

/// Link 2 and 3: the NV evidence under the policy, and `ek_public` its RSA EK.
pub fn check_nv(
    policy: &Policy,
    d: &Decoded,
    min_state_generation: Option<u64>,
) -> Result<NvVerified, String> {
    let vcek = match &policy.vcek {
        VcekAnchor::Key(key) => VcekTrust::Key(*key),
        VcekAnchor::AmdChain { ark, ask } => {
            let vcek = d.vcek_cert.as_deref().ok_or(
                "NV evidence: no VCEK certificate (nv.vcek_cert, NV 0x01C00101), which the \
                 policy's AMD chain needs",
            )?;
            VcekTrust::Chain(Box::new(
                Chain::parse(vcek, ask, ark).map_err(|e| e.to_string())?,
            ))
        }
    };
    let ek_policy = EkPolicy {
        vcek,
        // Checked below against every measurement the policy allows.
        measurement: MeasurementCheck::Unchecked,
        min_tcb: Some(policy.min_tcb),
        min_state_generation,
    };
    let verified = ek_nv::verify_nv_evidence(
        &ek_policy,
        &NvEvidence {
            rsa_ek_cert: &d.rsa_ek_cert,
            ecc_ek_cert: &d.ecc_ek_cert,
            ca_cert: &d.ca_cert,
            report: &d.report,
            state: d.state.as_deref(),
        },
        TpmEks {
            rsa: Some(&d.ek_public),
            ecc: None,
        },
    )
    .map_err(|e| e.to_string())?;
    let measurement = verified.report.measurement();
    if !policy.measurements.iter().any(|m| m == measurement) {
        return Err(format!(
            "{} ({} is not in the policy)",
            Error::Measurement,
            hex::encode(measurement)
        ));
    }
    let ek = tpm::Public::parse(&verified.ek_rsa).map_err(|e| e.to_string())?;
    ek.check_endorsement_key().map_err(|e| e.to_string())?;
    Ok(NvVerified {
        ek,
        state_generation: verified.state.map(|s| s.generation),
        measurement: hex::encode(measurement),
    })
}

/// What the quote established.
#[derive(Debug, Clone)]
pub struct QuoteVerified {
    /// The AK's name (what the credential is bound to).
    pub ak_name: Vec<u8>,
    /// The quoted PCRs, ascending (the values sent, proven by the quote's digest).
    pub pcrs: Vec<(u8, Vec<u8>)>,
}

/// Links 4 and 5: the AK, the quote, its nonce, selection and PCR values.
pub fn check_quote(policy: &Policy, d: &Decoded, nonce: &[u8]) -> Result<QuoteVerified, String> {
    let ak = tpm::Public::parse(&d.ak_public).map_err(|e| format!("ak_public: {e}"))?;
    let required =
        tpm::attr::FIXED_TPM | tpm::attr::FIXED_PARENT | tpm::attr::RESTRICTED | tpm::attr::SIGN;
    if ak.attributes & required != required || ak.attributes & tpm::attr::DECRYPT != 0 {
        return Err(Error::AkAttributes.to_string());
    }
    let signature = tpm::Signature::parse(&d.quote_signature).map_err(|e| e.to_string())?;
    let quote = tpm::Quote::parse(&d.quote).map_err(|e| e.to_string())?;
    signature
        .verify(&ak, &quote.bytes)
        .map_err(|e| e.to_string())?;
    if quote.extra_data.len() != nonce.len()
        || quote
            .extra_data
            .iter()
            .zip(nonce)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return Err(Error::QuoteNonce.to_string());
    }
    let (alg, selected) = policy.boot.pcr_selection();
    let expected = [tpm::PcrSelection {
        hash_alg: alg,
        pcrs: selected.clone(),
    }];
    if quote.selection != expected {
        return Err(format!(
            "{} (the policy selects {})",
            Error::QuotePcrSelection,
            selection_string(alg, &selected)
        ));
    }
    let mut sent: Vec<&(u16, u8, Vec<u8>)> = d.pcrs.iter().collect();
    sent.sort_by_key(|p| p.1);
    let sent_indices: Vec<u8> = sent.iter().map(|p| p.1).collect();
    if sent.iter().any(|p| p.0 != alg) || sent_indices != selected {
        return Err(format!(
            "PCR values: the request sends another set than the quoted {}",
            selection_string(alg, &selected)
        ));
    }
    let size = tpm::digest_size(alg).map_err(|e| e.to_string())?;
    if let Some(p) = sent.iter().find(|p| p.2.len() != size) {
        return Err(format!(
            "PCR values: {}:{} is {} bytes, not the bank's {size}",
            bank_name(alg),
            p.1,
            p.2.len()
        ));
    }
    let values: Vec<&[u8]> = sent.iter().map(|p| p.2.as_slice()).collect();
    if tpm::hash(signature.hash_alg, &values).map_err(|e| e.to_string())? != quote.pcr_digest {
        return Err(format!(
            "{} (the PCR values sent are not the ones quoted)",
            Error::QuotePcrDigest
        ));
    }
    Ok(QuoteVerified {
        ak_name: ak.name().map_err(|e| e.to_string())?,
        pcrs: sent.iter().map(|p| (p.1, p.2.clone())).collect(),
    })
}

/// Link 6: the event log replays to the quoted PCRs and satisfies the boot policy.
pub fn check_boot(policy: &Policy, d: &Decoded, quoted: &[(u8, Vec<u8>)]) -> Result<(), String> {
    let log = EventLog::parse(&d.event_log).map_err(|e| e.to_string())?;
    policy
        .boot
        .check(&log, quoted)
        .map_err(|e| format!("measured boot: {e}"))
}

/// Link 7: wraps `secret` for the vTPM holding `ek` with the AK named `ak_name` loaded,
/// bound to `session`.
pub fn release(
    ek: &tpm::Public,
    ak_name: &[u8],
    session: &str,
    name: &str,
    secret: &[u8],
) -> Result<WrappedSecret, String> {
    let mut rng = getrandom_sys_rng::SysRng;
    let mut key = Zeroizing::new([0u8; 32]);
    let mut iv = [0u8; 12];
    getrandom_sys_rng::fill(key.as_mut_slice())
        .and_then(|()| getrandom_sys_rng::fill(&mut iv))
        .map_err(|e| format!("release: no randomness: {e}"))?;
    let blob = credential::make_credential(&mut rng, ek, ak_name, key.as_slice())
        .map_err(|e| format!("release: {e}"))?;
    let credential_file = credential_file(&blob);
    let mut body = Zeroizing::new(secret.to_vec());
    let tag = Aes256Gcm::new_from_slice(key.as_slice())
        .map_err(|_| "release: AES key".to_string())?
        .encrypt_inout_detached(
            &Nonce::<Aes256Gcm>::from(iv),
            session.as_bytes(),
            InOutBuf::from(body.as_mut_slice()),
        )
        .map_err(|_| "release: AES-GCM failed".to_string())?;
    let mut ciphertext = body.to_vec();
    ciphertext.extend_from_slice(&tag);
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(WrappedSecret {
        name: name.to_string(),
        credential: b64.encode(credential_file),
        iv: b64.encode(iv),
        ciphertext: b64.encode(ciphertext),
    })
}

/// tpm2-tools' credential file (`tpm2_makecredential -o`, `tpm2_activatecredential -i`):
/// magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
pub fn credential_file(blob: &credential::CredentialBlob) -> Vec<u8> {
    let mut out = vec![0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1];
    out.extend_from_slice(&blob.id_object);
    out.extend_from_slice(&blob.encrypted_secret);
    out
}

/// Decrypts a released secret with the key TPM2_ActivateCredential returned (what the
/// guest agent does; the tests use it to prove the round trip).
pub fn open_secret(key: &[u8], session: &str, wrapped: &WrappedSecret) -> Result<Vec<u8>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let iv: [u8; 12] = b64
        .decode(&wrapped.iv)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or("iv: not 12 bytes of base64")?;
    let mut body = b64
        .decode(&wrapped.ciphertext)
        .map_err(|e| format!("ciphertext: {e}"))?;
    if body.len() < 16 || key.len() != 32 {
        return Err("ciphertext shorter than its tag, or a key not 32 bytes".into());
    }
    let tag = body.split_off(body.len() - 16);
    let tag: [u8; 16] = tag.try_into().map_err(|_| "tag")?;
    Aes256Gcm::new_from_slice(key)
        .map_err(|_| "a key not 32 bytes")?
        .decrypt_inout_detached(
            &Nonce::<Aes256Gcm>::from(iv),
            session.as_bytes(),
            InOutBuf::from(body.as_mut_slice()),
            &tag.into(),
        )
        .map_err(|_| "the secret does not decrypt under this key and session")?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use svsm_protocol::service_api::{NvEvidence, PcrValue};

    fn request() -> AttestRequest {
        let b = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        AttestRequest {
            session: "00".repeat(16),
            nv: NvEvidence {
                rsa_ek_cert: b(b"rsa"),
                ecc_ek_cert: b(b"ecc"),
                ca_cert: b(b"ca"),
                report: b(b"report"),
                vcek_cert: None,
                state: Some(b(b"state")),
            },
            ek_public: b(b"ek"),
            ak_public: b(b"ak"),
            quote: b(b"quote"),
            quote_signature: b(b"sig"),
            pcrs: vec![PcrValue {
                bank: "sha256".into(),
                index: 7,
                value: "0a".repeat(32),
            }],
            event_log: b(b"log"),
        }
    }

    #[test]
    fn decoding_names_the_bad_field() {
        let d = Decoded::from_request(&request()).unwrap();
        assert_eq!(d.report, b"report");
        assert_eq!(d.state.as_deref(), Some(&b"state"[..]));
        assert_eq!(d.pcrs, vec![(tpm::ALG_SHA256, 7, vec![0x0A; 32])]);
        type Edit = fn(&mut AttestRequest);
        let cases: [(Edit, &str); 5] = [
            (|r| r.ek_public = "?".into(), "ek_public: not base64"),
            (|r| r.nv.state = Some("*".into()), "nv.state: not base64"),
            (|r| r.nv.vcek_cert = Some("*".into()), "nv.vcek_cert"),
            (
                |r| r.pcrs[0].value = "0g".into(),
                "sha256:7 value is not hex",
            ),
            (|r| r.pcrs[0].bank = "sm3".into(), "bank \"sm3\""),
        ];
        for (edit, needle) in cases {
            let mut r = request();
            edit(&mut r);
            let err = Decoded::from_request(&r).unwrap_err();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn selections_print_as_tpm2_tools_takes_them() {
        assert_eq!(
            selection_string(tpm::ALG_SHA256, &[0, 1, 7, 9]),
            "sha256:0,1,7,9"
        );
        for name in ["sha1", "sha256", "sha384", "sha512"] {
            assert_eq!(bank_name(bank_alg(name).unwrap()), name);
        }
        assert_eq!(bank_alg("md5"), None);
    }

    #[test]
    fn the_guest_id_ignores_the_size_prefix() {
        let bare = [1u8, 2, 3, 4];
        let sized = [0u8, 4, 1, 2, 3, 4];
        assert_eq!(ek_id(&bare), ek_id(&sized));
        assert_eq!(ek_id(&bare).len(), 64);
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_session() {
        let key = [9u8; 32];
        let mut body = b"secret".to_vec();
        let iv = [3u8; 12];
        let tag = Aes256Gcm::new_from_slice(&key)
            .unwrap()
            .encrypt_inout_detached(
                &Nonce::<Aes256Gcm>::from(iv),
                b"session",
                InOutBuf::from(body.as_mut_slice()),
            )
            .unwrap();
        body.extend_from_slice(&tag);
        let b64 = base64::engine::general_purpose::STANDARD;
        let w = WrappedSecret {
            name: "n".into(),
            credential: String::new(),
            iv: b64.encode(iv),
            ciphertext: b64.encode(&body),
        };
        assert_eq!(open_secret(&key, "session", &w).unwrap(), b"secret");
        assert!(open_secret(&key, "other", &w).is_err());
        assert!(open_secret(&[8u8; 32], "session", &w).is_err());
        assert!(open_secret(&key[..16], "session", &w).is_err());
    }

    #[test]
    fn the_credential_file_is_tpm2_tools_format() {
        let blob = credential::CredentialBlob {
            id_object: vec![0, 2, 0xAA, 0xBB],
            encrypted_secret: vec![0, 1, 0xCC],
        };
        assert_eq!(
            credential_file(&blob),
            [0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1, 0, 2, 0xAA, 0xBB, 0, 1, 0xCC]
        );
    }
}
