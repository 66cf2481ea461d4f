//! The SEV-SNP attestation report as a verifier reads it, and its ECDSA P-384 signature.
//!
//! Layout: SEV-SNP firmware ABI (AMD pub. 56860), table "ATTESTATION_REPORT". The
//! signature covers bytes 0..0x2A0; R and S are 72-byte little-endian integers at 0x2A0
//! and 0x2E8 whose upper 24 bytes must be zero for P-384.

use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};

use crate::Error;

/// Size of an attestation report.
pub const REPORT_SIZE: usize = 0x4A0;
/// Bytes covered by the signature.
pub const SIGNED_SIZE: usize = 0x2A0;
/// Guest policy bit 19: the host may debug the guest (SEV-SNP ABI, "Guest Policy").
pub const POLICY_DEBUG: u64 = 1 << 19;
/// Signature algorithm 1: ECDSA P-384 with SHA-384.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

const OFF_VERSION: usize = 0x00;
const OFF_GUEST_SVN: usize = 0x04;
const OFF_POLICY: usize = 0x08;
const OFF_VMPL: usize = 0x30;
const OFF_SIG_ALGO: usize = 0x34;
const OFF_REPORT_DATA: usize = 0x50;
const OFF_MEASUREMENT: usize = 0x90;
const OFF_HOST_DATA: usize = 0xC0;
const OFF_FLAGS: usize = 0x48;
const OFF_REPORTED_TCB: usize = 0x180;
const OFF_CHIP_ID: usize = 0x1A0;
const OFF_SIG_R: usize = 0x2A0;
const OFF_SIG_S: usize = 0x2E8;
const SIG_COMPONENT_SIZE: usize = 72;
const P384_SCALAR_SIZE: usize = 48;

/// A report of the right size, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    bytes: [u8; REPORT_SIZE],
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

impl Report {
    /// Takes a report's bytes. Only versions 2 and later with the P-384 algorithm exist.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: [u8; REPORT_SIZE] = bytes
            .try_into()
            .map_err(|_| Error::ReportFormat("not 0x4A0 bytes long"))?;
        let report = Report { bytes };
        if report.version() < 2 {
            return Err(Error::ReportFormat("version below 2"));
        }
        if report.signature_algorithm() != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(Error::ReportFormat(
                "signature algorithm is not ECDSA P-384",
            ));
        }
        Ok(report)
    }

    /// The raw report.
    pub fn as_bytes(&self) -> &[u8; REPORT_SIZE] {
        &self.bytes
    }
    /// Report format version.
    pub fn version(&self) -> u32 {
        u32_at(&self.bytes, OFF_VERSION)
    }
    /// The guest's security version number.
    pub fn guest_svn(&self) -> u32 {
        u32_at(&self.bytes, OFF_GUEST_SVN)
    }
    /// The guest policy the VM was launched with.
    pub fn policy(&self) -> u64 {
        u64_at(&self.bytes, OFF_POLICY)
    }
    /// The VMPL that asked for the report.
    pub fn vmpl(&self) -> u32 {
        u32_at(&self.bytes, OFF_VMPL)
    }
    /// The signature algorithm.
    pub fn signature_algorithm(&self) -> u32 {
        u32_at(&self.bytes, OFF_SIG_ALGO)
    }
    /// The 64 bytes the requester bound into the report.
    pub fn report_data(&self) -> &[u8; 64] {
        self.bytes[OFF_REPORT_DATA..OFF_REPORT_DATA + 64]
            .try_into()
            .unwrap_or(&[0; 64])
    }
    /// The launch measurement.
    pub fn measurement(&self) -> &[u8; 48] {
        self.bytes[OFF_MEASUREMENT..OFF_MEASUREMENT + 48]
            .try_into()
            .unwrap_or(&[0; 48])
    }
    /// Data the host supplied at launch.
    pub fn host_data(&self) -> &[u8] {
        &self.bytes[OFF_HOST_DATA..OFF_HOST_DATA + 32]
    }
    /// The chip identifier (zero if masked).
    pub fn chip_id(&self) -> &[u8] {
        &self.bytes[OFF_CHIP_ID..OFF_CHIP_ID + 64]
    }
    /// REPORTED_TCB: the TCB the VCEK that signs the report was derived for.
    pub fn reported_tcb(&self) -> Tcb {
        Tcb::from_u64(u64_at(&self.bytes, OFF_REPORTED_TCB))
    }
    /// The SIGNING_KEY field (flags bits 4:2): 0 VCEK, 1 VLEK, 7 none.
    pub fn signing_key(&self) -> u32 {
        (u32_at(&self.bytes, OFF_FLAGS) >> 2) & 0x7
    }

    /// The signature as the usual big-endian (r, s) pair.
    fn signature(&self) -> Result<Signature, Error> {
        let r = le72_to_be48(&self.bytes[OFF_SIG_R..OFF_SIG_R + SIG_COMPONENT_SIZE])?;
        let s = le72_to_be48(&self.bytes[OFF_SIG_S..OFF_SIG_S + SIG_COMPONENT_SIZE])?;
        Signature::from_scalars(r, s).map_err(|_| Error::ReportSignature)
    }

    /// Checks the signature over bytes 0..0x2A0 with the VCEK's public key.
    pub fn verify_signature(&self, vcek: &VerifyingKey) -> Result<(), Error> {
        let signature = self.signature()?;
        vcek.verify(&self.bytes[..SIGNED_SIZE], &signature)
            .map_err(|_| Error::ReportSignature)
    }
}

/// A TCB version (SEV-SNP ABI, "TCB_VERSION", Milan and Genoa layout): the security
/// patch levels of the boot loader (byte 0), the PSP OS (byte 1), the SNP firmware
/// (byte 6) and the microcode (byte 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcb {
    /// Boot loader SPL.
    pub boot_loader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl Tcb {
    /// From the little-endian u64 of a report.
    pub fn from_u64(v: u64) -> Self {
        let b = v.to_le_bytes();
        Tcb {
            boot_loader: b[0],
            tee: b[1],
            snp: b[6],
            microcode: b[7],
        }
    }
    /// Whether every component is at least `min`'s.
    pub fn at_least(&self, min: &Tcb) -> bool {
        self.boot_loader >= min.boot_loader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
    }
}

impl core::fmt::Display for Tcb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "bl={} tee={} snp={} ucode={}",
            self.boot_loader, self.tee, self.snp, self.microcode
        )
    }
}

impl core::str::FromStr for Tcb {
    type Err = String;
    /// `bl=N,tee=N,snp=N,ucode=N` (any subset; missing components are 0).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut t = Tcb {
            boot_loader: 0,
            tee: 0,
            snp: 0,
            microcode: 0,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected NAME=VALUE"))?;
            let v: u8 = v
                .parse()
                .map_err(|_| format!("{part:?}: not a number 0..255"))?;
            match k {
                "bl" => t.boot_loader = v,
                "tee" => t.tee = v,
                "snp" => t.snp = v,
                "ucode" => t.microcode = v,
                _ => return Err(format!("{k:?}: expected bl, tee, snp or ucode")),
            }
        }
        Ok(t)
    }
}

/// A 72-byte little-endian signature component as a 48-byte big-endian scalar.
fn le72_to_be48(le: &[u8]) -> Result<[u8; P384_SCALAR_SIZE], Error> {
    if le[P384_SCALAR_SIZE..].iter().any(|&b| b != 0) {
        return Err(Error::ReportSignature);
    }
    let mut be = [0u8; P384_SCALAR_SIZE];
    for (dst, src) in be.iter_mut().zip(le[..P384_SCALAR_SIZE].iter().rev()) {
        *dst = *src;
    }
    Ok(be)
}

/// Writes a big-endian P-384 (r, s) pair into the report's little-endian 72-byte fields
/// (what a PSP does; used by the emulated PSP's tests and the tampering tests).
pub fn encode_signature(signature: &Signature) -> [u8; 2 * SIG_COMPONENT_SIZE] {
    let (r, s) = signature.split_bytes();
    let mut out = [0u8; 2 * SIG_COMPONENT_SIZE];
    for (i, b) in r.iter().rev().enumerate() {
        out[i] = *b;
    }
    for (i, b) in s.iter().rev().enumerate() {
        out[SIG_COMPONENT_SIZE + i] = *b;
    }
    out
}
