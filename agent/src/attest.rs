//! The exchange with the verification service (API v1) and the secret's recovery.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use svsm_protocol::ek_evidence::{
    CA_CERT_INDEX, ECC_EK_CERT_INDEX, RSA_EK_CERT_INDEX, SNP_REPORT_INDEX, STATE_EVIDENCE_INDEX,
    VCEK_CERT_INDEX,
};
use svsm_protocol::service_api::{
    AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse, ErrorBody, NvEvidence,
    WrappedSecret, ATTEST_PATH, CHALLENGE_PATH, NONCE_SIZE,
};
use zeroize::Zeroizing;

use crate::tpm::Tpm;
use crate::{report, UnlockArgs};

/// The whole request, from connect to the last byte of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest answer the agent reads.
const MAX_ANSWER: u64 = 1 << 20;

/// Runs the exchange; the released secret, or `Err` once the failure or the service's
/// refusal has been reported.
pub fn run(args: &UnlockArgs) -> Result<Zeroizing<Vec<u8>>, ()> {
    let step = |check: &str, result: Result<String>| -> Result<(), ()> {
        match result {
            Ok(detail) => {
                report(check, true, &detail);
                Ok(())
            }
            Err(e) => {
                report(check, false, &format!("{e:#}"));
                Err(())
            }
        }
    };
    let client = match Client::new(args) {
        Ok(c) => c,
        Err(e) => {
            report("agent-tls", false, &format!("{e:#}"));
            return Err(());
        }
    };
    let tpm = match Tpm::new(&args.workdir) {
        Ok(t) => t,
        Err(e) => {
            report("agent-tpm", false, &format!("{e:#}"));
            return Err(());
        }
    };

    let mut challenge = None;
    step(
        "agent-challenge",
        client
            .post::<_, ChallengeResponse>(
                CHALLENGE_PATH,
                &ChallengeRequest {
                    guest: Some(args.guest.clone()),
                },
            )
            .and_then(|c| {
                check_challenge(&c)?;
                let detail = format!("session={} pcrs={}", c.session, c.pcr_selection);
                challenge = Some(c);
                Ok(detail)
            }),
    )?;
    let challenge = challenge.ok_or(())?;

    let mut request = None;
    step(
        "agent-evidence",
        evidence(&tpm, args, &challenge).map(|r| {
            let detail = format!(
                "quote over {} PCRs, event log {} bytes (base64)",
                r.pcrs.len(),
                r.event_log.len()
            );
            request = Some(r);
            detail
        }),
    )?;
    let request = request.ok_or(())?;

    let mut wrapped = None;
    step(
        "agent-attest",
        client
            .post::<_, AttestResponse>(ATTEST_PATH, &request)
            .and_then(|answer| {
                if answer.verdict != "allowed" {
                    bail!("the service answered 200 with verdict '{}'", answer.verdict);
                }
                let detail = format!("allowed, secret '{}'", answer.secret.name);
                wrapped = Some(answer.secret);
                Ok(detail)
            }),
    )?;
    let wrapped = wrapped.ok_or(())?;

    let mut secret = None;
    step(
        "agent-activate",
        unwrap_secret(&tpm, &wrapped, &challenge.session).map(|s| {
            let detail = format!("{} bytes recovered", s.len());
            secret = Some(s);
            detail
        }),
    )?;
    secret.ok_or(())
}

/// The challenge as the agent will use it: a nonce of the right size in hex and a PCR
/// selection tpm2-tools can take.
fn check_challenge(c: &ChallengeResponse) -> Result<()> {
    let nonce = hex::decode(&c.nonce).map_err(|e| anyhow!("the nonce is not hex: {e}"))?;
    if nonce.len() != NONCE_SIZE {
        bail!(
            "the nonce has {} bytes, the API says {NONCE_SIZE}",
            nonce.len()
        );
    }
    let ok = !c.pcr_selection.is_empty()
        && c.pcr_selection
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+:,".contains(&b));
    if !ok {
        bail!(
            "the PCR selection '{}' is not a tpm2-tools selection",
            c.pcr_selection
        );
    }
    if c.session.is_empty() {
        bail!("the challenge names no session");
    }
    Ok(())
}

/// Reads the NV evidence and the event log, creates the EK and the AK, quotes.
fn evidence(tpm: &Tpm, args: &UnlockArgs, c: &ChallengeResponse) -> Result<AttestRequest> {
    let nv = |index: u32| -> Result<String> {
        Ok(B64.encode(
            tpm.nv_read(index)
                .with_context(|| format!("NV index {index:#010x}"))?,
        ))
    };
    let optional = |index: u32| tpm.nv_read(index).ok().map(|b| B64.encode(b));
    let nv = NvEvidence {
        rsa_ek_cert: nv(RSA_EK_CERT_INDEX)?,
        ecc_ek_cert: nv(ECC_EK_CERT_INDEX)?,
        ca_cert: nv(CA_CERT_INDEX)?,
        report: nv(SNP_REPORT_INDEX)?,
        vcek_cert: optional(VCEK_CERT_INDEX),
        state: optional(STATE_EVIDENCE_INDEX),
    };
    let (ek, ak) = tpm.create_keys()?;
    let quote = tpm.quote(&c.pcr_selection, &c.nonce)?;
    let log = fs::read(&args.event_log)
        .with_context(|| format!("cannot read the event log {}", args.event_log.display()))?;
    Ok(AttestRequest {
        session: c.session.clone(),
        nv,
        ek_public: B64.encode(ek),
        ak_public: B64.encode(ak),
        quote: B64.encode(&quote.message),
        quote_signature: B64.encode(&quote.signature),
        pcrs: quote.pcrs,
        event_log: B64.encode(log),
    })
}

/// Activates the credential and decrypts the secret with the key it yields; the session
/// is the associated data, so a secret wrapped for another session does not open.
fn unwrap_secret(tpm: &Tpm, w: &WrappedSecret, session: &str) -> Result<Zeroizing<Vec<u8>>> {
    let credential = B64
        .decode(&w.credential)
        .map_err(|e| anyhow!("the credential is not base64: {e}"))?;
    let iv = B64
        .decode(&w.iv)
        .map_err(|e| anyhow!("the IV is not base64: {e}"))?;
    let ciphertext = B64
        .decode(&w.ciphertext)
        .map_err(|e| anyhow!("the ciphertext is not base64: {e}"))?;
    let key = tpm.activate(&credential)?;
    decrypt(&key, &iv, &ciphertext, session.as_bytes())
}

/// AES-256-GCM decryption of `ciphertext` (tag appended) with `aad`.
pub fn decrypt(key: &[u8], iv: &[u8], ciphertext: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| anyhow!("the key is not 32 bytes"))?;
    let iv: [u8; 12] = iv
        .try_into()
        .map_err(|_| anyhow!("the IV is {} bytes, expected 12", iv.len()))?;
    cipher
        .decrypt(
            &Nonce::from(iv),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| anyhow!("the secret does not decrypt (wrong key, session or tampered)"))
}

/// An HTTPS client that trusts only the service's CA.
struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn new(args: &UnlockArgs) -> Result<Self> {
        let pem = fs::read(&args.ca)
            .with_context(|| format!("cannot read the CA certificate {}", args.ca.display()))?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            bail!("{} holds no PEM certificate", args.ca.display());
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .build();
        Ok(Self {
            agent: config.into(),
            base: args.service.trim_end_matches('/').to_string(),
        })
    }

    /// POSTs `body` as JSON; the 200 answer decoded, or the service's error body as the
    /// error.
    fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R> {
        let url = format!("{}{path}", self.base);
        let mut answer = self
            .agent
            .post(&url)
            .send_json(body)
            .with_context(|| format!("POST {url}"))?;
        let status = answer.status();
        let text = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .with_context(|| format!("reading the answer to POST {url}"))?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .with_context(|| format!("the answer to POST {url} is not the API's"));
        }
        Err(service_error(status.as_u16(), &text))
    }
}

/// The service's refusal as one line: its status, code and reason.
fn service_error(status: u16, text: &str) -> anyhow::Error {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(e) => anyhow!(
            "refused by the service: HTTP {status} {}: {}",
            e.error,
            e.reason
        ),
        Err(_) => {
            let text: String = text.chars().take(200).collect();
            anyhow!("refused by the service: HTTP {status}: {}", text.trim())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::Aead;

    fn challenge() -> ChallengeResponse {
        ChallengeResponse {
            session: "s1".into(),
            nonce: "ab".repeat(NONCE_SIZE),
            expires_at: 0,
            pcr_selection: "sha256:0,1,2,3,4,5,6,7,9".into(),
        }
    }

    #[test]
    fn a_good_challenge_passes_and_bad_ones_are_refused() {
        check_challenge(&challenge()).unwrap();
        let mut c = challenge();
        c.nonce = "ab".repeat(NONCE_SIZE - 1);
        assert!(check_challenge(&c).is_err());
        let mut c = challenge();
        c.nonce = "zz".repeat(NONCE_SIZE);
        assert!(check_challenge(&c).is_err());
        let mut c = challenge();
        c.pcr_selection = "sha256:0;reboot".into();
        assert!(check_challenge(&c).is_err());
        let mut c = challenge();
        c.pcr_selection = String::new();
        assert!(check_challenge(&c).is_err());
        let mut c = challenge();
        c.session = String::new();
        assert!(check_challenge(&c).is_err());
    }

    #[test]
    fn the_secret_opens_only_with_its_key_and_session() {
        let key = [7u8; 32];
        let iv = [9u8; 12];
        let sealed = Aes256Gcm::new_from_slice(&key)
            .unwrap()
            .encrypt(
                &Nonce::from(iv),
                Payload {
                    msg: b"disk key",
                    aad: b"s1",
                },
            )
            .unwrap();
        assert_eq!(
            &decrypt(&key, &iv, &sealed, b"s1").unwrap()[..],
            b"disk key"
        );
        assert!(decrypt(&key, &iv, &sealed, b"s2").is_err());
        assert!(decrypt(&[8u8; 32], &iv, &sealed, b"s1").is_err());
        assert!(decrypt(&key[..16], &iv, &sealed, b"s1").is_err());
        assert!(decrypt(&key, &iv[..8], &sealed, b"s1").is_err());
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(decrypt(&key, &iv, &tampered, b"s1").is_err());
    }

    #[test]
    fn the_service_reason_is_named() {
        let e = service_error(
            403,
            r#"{"error":"denied","reason":"PCR 9: the event log's replay does not match"}"#,
        );
        let text = format!("{e}");
        assert!(text.contains("403 denied: PCR 9"), "{text}");
        let e = service_error(502, "<html>bad gateway</html>");
        assert!(format!("{e}").contains("HTTP 502: <html>bad gateway</html>"));
    }
}
