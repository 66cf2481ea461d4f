//! A TPM command sequence through the vTPM service, optionally under a fast timer
//! interrupt: Startup, GetRandom, PCR_Reset/PCR_Extend/PCR_Read, CreatePrimary (EK and a
//! signing key), Sign + VerifySignature, Quote + VerifySignature.
//!
//! Results that must not depend on interrupts (PCR values, key publics derived from the
//! hierarchy seeds, the quoted PCR digest, signature checks) are collected so two runs
//! can be compared; random outputs (GetRandom, ECDSA signatures) are checked for form.

use alloc::string::String;
use alloc::vec::Vec;

use sha2::{Digest, Sha256};
use vtpm::tpm::{self, CommandBuilder, Header, ST_NO_SESSIONS, ST_SESSIONS};
use vtpm::{EkTemplate, LibTpms, Service};

use super::ensure;
use crate::kernel::{apic, idt};
use svsm::arch::interrupts as svsm_interrupts;

/// APIC timer period for the interrupted run, in bus clocks (QEMU: nanoseconds): 20 kHz.
pub const TIMER_COUNT: u32 = 50_000;

const CC_GET_RANDOM: u32 = 0x17b;
const CC_PCR_RESET: u32 = 0x13d;
const CC_PCR_EXTEND: u32 = 0x182;
const CC_PCR_READ: u32 = 0x17e;
const CC_SIGN: u32 = 0x15d;
const CC_VERIFY_SIGNATURE: u32 = 0x177;
const CC_QUOTE: u32 = 0x158;
const RH_OWNER: u32 = 0x4000_0001;
const RH_NULL: u32 = 0x4000_0007;
const ALG_SHA256: u16 = 0x000b;
const ALG_NULL: u16 = 0x0010;
const ALG_ECC: u16 = 0x0023;
const ALG_ECDSA: u16 = 0x0018;
const ECC_NIST_P256: u16 = 0x0003;
const ST_HASHCHECK: u16 = 0x8024;
const ST_ATTEST_QUOTE: u16 = 0x8018;
const GENERATED_VALUE: u32 = 0xff54_4347;
/// The debug PCR, resettable from locality 0.
const PCR: u32 = 16;

/// What one run produced that must be identical across runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Results {
    pcr_value: Vec<u8>,
    ek_public: Vec<u8>,
    signing_key_public: Vec<u8>,
    quoted_pcr_digest: Vec<u8>,
    timer_ticks: u64,
}

impl Results {
    /// The parts that must not depend on interrupts.
    pub fn comparable(&self) -> (&[u8], &[u8], &[u8], &[u8]) {
        (
            &self.pcr_value,
            &self.ek_public,
            &self.signing_key_public,
            &self.quoted_pcr_digest,
        )
    }
}

/// A response body reader.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], at: usize) -> Self {
        Self { bytes, at }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let out = self.bytes.get(self.at..self.at + n).ok_or_else(|| {
            alloc::format!(
                "response ends at {} (wanted {n} more at {})",
                self.bytes.len(),
                self.at
            )
        })?;
        self.at += n;
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn sized(&mut self) -> Result<&'a [u8], String> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

/// TPM_RC_RETRY and TPM_RC_TESTING: the command did not run (the engine tested an
/// algorithm on its first use); send the same bytes again, as TSS stacks do.
const RC_RETRY: u32 = 0x922;
const RC_TESTING: u32 = 0x90a;
const RETRIES: usize = 8;

/// Sends `command`; returns the response after checking its header (size = length) and
/// that its code is `want`.
fn send(service: &mut Service<LibTpms>, command: Vec<u8>, want: u32) -> Result<Vec<u8>, String> {
    let code = Header::parse(&command).map_or(0, |h| h.code);
    let mut response = alloc::vec![0u8; 4096];
    let mut tries = 0;
    let header = loop {
        let mut bytes = command.clone();
        response.resize(4096, 0);
        let n = service
            .execute(0, &mut bytes, &mut response)
            .map_err(|e| alloc::format!("command {code:#x} refused: {e}"))?;
        response.truncate(n);
        let header = Header::parse(&response)
            .ok_or_else(|| alloc::format!("command {code:#x}: short response"))?;
        tries += 1;
        if (header.code == RC_RETRY || header.code == RC_TESTING) && tries < RETRIES {
            continue;
        }
        break header;
    };
    let n = response.len();
    ensure!(
        header.size as usize == n,
        "command {code:#x}: header size {} for {n} bytes",
        header.size
    );
    ensure!(
        header.code == want,
        "command {code:#x}: response code {:#x}, wanted {want:#x}",
        header.code
    );
    Ok(response)
}

/// TPML_PCR_SELECTION with one SHA-256 bank selecting `PCR`.
fn pcr_selection(b: CommandBuilder) -> CommandBuilder {
    let mut select = [0u8; 3];
    select[(PCR / 8) as usize] = 1 << (PCR % 8);
    b.u32(1).u16(ALG_SHA256).bytes(&[3]).bytes(&select)
}

/// An unrestricted ECC P-256 ECDSA-SHA256 signing key template (TPMT_PUBLIC).
fn signing_key_template() -> Vec<u8> {
    // fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | sign
    let attributes: u32 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 18);
    let mut t = Vec::new();
    for v in [ALG_ECC, ALG_SHA256] {
        t.extend_from_slice(&v.to_be_bytes());
    }
    t.extend_from_slice(&attributes.to_be_bytes());
    for v in [
        0u16,
        ALG_NULL,
        ALG_ECDSA,
        ALG_SHA256,
        ECC_NIST_P256,
        ALG_NULL,
        0,
        0,
    ] {
        t.extend_from_slice(&v.to_be_bytes());
    }
    t
}

/// Verifies `signature` (a TPMT_SIGNATURE) over `digest` with the loaded key.
fn verify(
    service: &mut Service<LibTpms>,
    key: u32,
    digest: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let command = CommandBuilder::new(ST_NO_SESSIONS, CC_VERIFY_SIGNATURE)
        .u32(key)
        .sized(digest)
        .bytes(signature)
        .build();
    send(service, command, tpm::RC_SUCCESS).map(|_| ())
}

/// Reads a TPMT_SIGNATURE (ECDSA) and returns its bytes.
fn ecdsa_signature<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], String> {
    let start = r.at;
    let alg = r.u16()?;
    let hash = r.u16()?;
    ensure!(
        alg == ALG_ECDSA && hash == ALG_SHA256,
        "signature scheme {alg:#x}/{hash:#x}"
    );
    let sig_r = r.sized()?;
    let sig_s = r.sized()?;
    ensure!(
        sig_r.len() == 32 && sig_s.len() == 32,
        "ECDSA P-256 r/s sizes {}/{}",
        sig_r.len(),
        sig_s.len()
    );
    Ok(&r.bytes[start..r.at])
}

/// Runs the sequence; with `timer` set, under an APIC timer firing every `timer` clocks.
pub fn run(service: &mut Service<LibTpms>, timer: Option<u32>) -> Result<Results, String> {
    let ticks_before = idt::timer_ticks();
    if let Some(count) = timer {
        apic::start_timer(count);
        svsm_interrupts::enable();
    }
    let result = sequence(service);
    if timer.is_some() {
        svsm_interrupts::disable();
        apic::stop_timer();
    }
    let ticks = idt::timer_ticks() - ticks_before;
    let mut results = result?;
    results.timer_ticks = ticks;
    log::info!("tpm sequence: {ticks} timer interrupts taken during the run");
    if timer.is_some() {
        ensure!(ticks > 0, "no timer interrupt fired during the run");
    } else {
        ensure!(ticks == 0, "{ticks} timer interrupts during the quiet run");
    }
    Ok(results)
}

fn sequence(service: &mut Service<LibTpms>) -> Result<Results, String> {
    // The service ran Startup(CLEAR) when it started: a second one is refused.
    send(service, tpm::startup_clear(), tpm::RC_INITIALIZE)?;

    let response = send(
        service,
        CommandBuilder::new(ST_NO_SESSIONS, CC_GET_RANDOM)
            .u16(32)
            .build(),
        tpm::RC_SUCCESS,
    )?;
    let random = Reader::new(&response, 10).sized()?.to_vec();
    ensure!(random.len() == 32, "GetRandom gave {} bytes", random.len());
    ensure!(random.iter().any(|&b| b != 0), "GetRandom gave zeros");

    send(
        service,
        CommandBuilder::new(ST_SESSIONS, CC_PCR_RESET)
            .u32(PCR)
            .password_auth()
            .build(),
        tpm::RC_SUCCESS,
    )?;
    let measurement: [u8; 32] = Sha256::digest(b"svsm kernel self-test measurement").into();
    send(
        service,
        CommandBuilder::new(ST_SESSIONS, CC_PCR_EXTEND)
            .u32(PCR)
            .password_auth()
            .u32(1)
            .u16(ALG_SHA256)
            .bytes(&measurement)
            .build(),
        tpm::RC_SUCCESS,
    )?;
    let response = send(
        service,
        pcr_selection(CommandBuilder::new(ST_NO_SESSIONS, CC_PCR_READ)).build(),
        tpm::RC_SUCCESS,
    )?;
    let mut r = Reader::new(&response, 10);
    let _update_counter = r.u32()?;
    ensure!(r.u32()? == 1, "PCR_Read returned other than one selection");
    r.take(2 + 1 + 3)?;
    ensure!(r.u32()? == 1, "PCR_Read returned other than one digest");
    let pcr_value = r.sized()?.to_vec();
    let mut expected = Sha256::new();
    expected.update([0u8; 32]);
    expected.update(measurement);
    ensure!(
        pcr_value[..] == expected.finalize()[..],
        "PCR {PCR} is not SHA-256(zeros || measurement)"
    );

    let ek = tpm::parse_create_primary(&send(
        service,
        tpm::create_primary(tpm::RH_ENDORSEMENT, &EkTemplate::RsaL1.public_template()),
        tpm::RC_SUCCESS,
    )?)
    .ok_or("CreatePrimary(EK) response malformed")?;
    send(service, tpm::flush_context(ek.handle), tpm::RC_SUCCESS)?;
    ensure!(
        ek.public == service.endorsement_key(EkTemplate::RsaL1),
        "the EK re-created from the endorsement seed differs from the one made at start-up"
    );

    let key = tpm::parse_create_primary(&send(
        service,
        tpm::create_primary(RH_OWNER, &signing_key_template()),
        tpm::RC_SUCCESS,
    )?)
    .ok_or("CreatePrimary(signing key) response malformed")?;
    let outcome = sign_and_quote(service, key.handle, &pcr_value);
    send(service, tpm::flush_context(key.handle), tpm::RC_SUCCESS)?;
    let quoted_pcr_digest = outcome?;

    Ok(Results {
        pcr_value,
        ek_public: ek.public,
        signing_key_public: key.public,
        quoted_pcr_digest,
        timer_ticks: 0,
    })
}

/// Signs a digest and quotes the PCR with the loaded key, verifying both signatures in
/// the TPM; returns the quoted PCR digest.
fn sign_and_quote(
    service: &mut Service<LibTpms>,
    key: u32,
    pcr_value: &[u8],
) -> Result<Vec<u8>, String> {
    let digest: [u8; 32] = Sha256::digest(b"message signed by the in-kernel vTPM").into();
    let response = send(
        service,
        CommandBuilder::new(ST_SESSIONS, CC_SIGN)
            .u32(key)
            .password_auth()
            .sized(&digest)
            .u16(ALG_NULL)
            .u16(ST_HASHCHECK)
            .u32(RH_NULL)
            .u16(0)
            .build(),
        tpm::RC_SUCCESS,
    )?;
    let mut r = Reader::new(&response, 10);
    let _parameter_size = r.u32()?;
    let signature = ecdsa_signature(&mut r)?.to_vec();
    verify(service, key, &digest, &signature)?;
    let mut tampered = digest;
    tampered[0] ^= 1;
    verify(service, key, &tampered, &signature)
        .err()
        .ok_or("VerifySignature accepted a signature over another digest")?;

    let nonce = [0x5a; 16];
    let response = send(
        service,
        pcr_selection(
            CommandBuilder::new(ST_SESSIONS, CC_QUOTE)
                .u32(key)
                .password_auth()
                .sized(&nonce)
                .u16(ALG_NULL),
        )
        .build(),
        tpm::RC_SUCCESS,
    )?;
    let mut r = Reader::new(&response, 10);
    let _parameter_size = r.u32()?;
    let attest = r.sized()?;
    let signature = ecdsa_signature(&mut r)?.to_vec();
    let mut a = Reader::new(attest, 0);
    ensure!(a.u32()? == GENERATED_VALUE, "quote magic");
    ensure!(a.u16()? == ST_ATTEST_QUOTE, "quote type");
    let _signer = a.sized()?;
    ensure!(a.sized()? == nonce, "quote extraData is not the nonce");
    a.take(8 + 4 + 4 + 1 + 8)?; // clockInfo, firmwareVersion
    ensure!(a.u32()? == 1, "quote selects other than one bank");
    a.take(2 + 1 + 3)?;
    let pcr_digest = a.sized()?.to_vec();
    ensure!(
        pcr_digest[..] == Sha256::digest(pcr_value)[..],
        "quoted PCR digest is not SHA-256 of the PCR value"
    );
    let attest_digest: [u8; 32] = Sha256::digest(attest).into();
    verify(service, key, &attest_digest, &signature)?;
    Ok(pcr_digest)
}
