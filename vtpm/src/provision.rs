//! Start-up provisioning: the per-boot endorsement CA, the EK certificates and the SNP
//! evidence written to TPM NV, then the platform hierarchy withheld from the guest.
//!
//! Runs once per boot, after the EKs exist and before any guest code runs
//! ([`Service::provision`]). Invariants:
//! - a certificate exists only when a hardware report binds its CA key: with no report
//!   there is no certificate at all (never an unsigned one, never a self-vouching one),
//!   the indices stay absent and the reason is returned for the log;
//! - every evidence index is (re)defined by the platform with
//!   [`EVIDENCE_NV_ATTRIBUTES`], written whole and write-locked before the platform
//!   hierarchy is withheld; an index left over from an earlier boot (once state persists)
//!   is undefined first, so the evidence always belongs to this boot;
//! - the platform hierarchy is withheld by clearing phEnable (TPM2_HierarchyControl),
//!   whatever happened before; phEnableNV stays set, or the platform-created indices would
//!   vanish from the guest's view. If that fails, start-up fails: a guest must never hold
//!   the platform hierarchy.
//! - the CA key lives only in this function's memory: it signs the certificates and is
//!   dropped (nothing else will ever be signed by it).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use p384::ecdsa::SigningKey;
use sha2::{Digest, Sha512};
use svsm_protocol::attest::ATTESTATION_REPORT_SIZE;
use svsm_protocol::ek_evidence::{
    Binding, CA_CERT_INDEX, ECC_EK_CERT_INDEX, EVIDENCE_NV_ATTRIBUTES, RSA_EK_CERT_INDEX,
    SNP_REPORT_INDEX, VCEK_CERT_INDEX,
};

use crate::certs::{self, TpmIdentity};
use crate::ek::EkTemplate;
use crate::engine::Engine;
use crate::nv::{self, pt};
use crate::service::{expect_success, Service, StartupError};

/// The offset of REPORT_DATA in an SNP attestation report.
const REPORT_DATA_OFFSET: usize = 0x50;

/// What the hardware says about this boot: an SNP report and, when the host supplied its
/// certificate table, the VCEK certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareEvidence {
    /// The ATTESTATION_REPORT (0x4A0 bytes).
    pub report: Vec<u8>,
    /// The VCEK certificate (DER), if the host supplied it.
    pub vcek: Option<Vec<u8>>,
}

/// Where the SVSM gets a report at VMPL0 from (the PSP over VMPCK0); the `vtpm` crate
/// does not know how.
pub trait ReportSource {
    /// A report at VMPL0 whose REPORT_DATA is `report_data`, or why there is none.
    fn report(&mut self, report_data: &[u8; 64]) -> Result<HardwareEvidence, String>;
}

/// What provisioning left in NV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The indices written and locked, with their sizes in bytes.
    pub indices: Vec<(u32, usize)>,
    /// Why there are no certificates, when there are none.
    pub uncertified: Option<String>,
}

impl<E: Engine> Service<E> {
    /// Provisions the endorsement evidence with a report from `source` (none: no report
    /// can be had, e.g. in QEMU without SEV) and withholds the platform hierarchy.
    pub fn provision(
        &mut self,
        source: Option<&mut dyn ReportSource>,
    ) -> Result<Provisioned, StartupError> {
        let mut out = Provisioned {
            indices: Vec::new(),
            uncertified: None,
        };
        // Whatever an earlier boot left is this boot's no longer.
        for index in svsm_protocol::ek_evidence::ALL_INDICES {
            undefine_if_present(self.engine_mut(), index)?;
        }
        match source {
            None => out.uncertified = Some(String::from("no SNP report can be had here")),
            Some(source) => match self.certify(source) {
                Ok(pieces) => {
                    for (index, data) in pieces {
                        store(self.engine_mut(), index, &data)?;
                        out.indices.push((index, data.len()));
                    }
                }
                Err(reason) => out.uncertified = Some(reason),
            },
        }
        let mut cmd = nv::disable_platform_hierarchy();
        expect_success(self.engine_mut(), &mut cmd)?;
        Ok(out)
    }

    /// Makes the CA, gets the report binding it and issues the certificates: the
    /// (index, content) pairs to store, or why there are none.
    fn certify(&mut self, source: &mut dyn ReportSource) -> Result<Vec<(u32, Vec<u8>)>, String> {
        let props = properties(self.engine_mut()).map_err(|e| format!("{e}"))?;
        let prop = |p: u32| props.iter().find(|(k, _)| *k == p).map(|(_, v)| *v);
        let index_max = prop(pt::NV_INDEX_MAX).ok_or("the TPM reports no TPM_PT_NV_INDEX_MAX")?;
        let identity = TpmIdentity::from_properties(&props);
        let ca_key = self.random_ca_key()?;
        let ca_spki = certs::ca_public_key_der(&ca_key).map_err(|e| format!("CA key: {e}"))?;
        let ek_rsa = self.endorsement_key(EkTemplate::RsaL1).to_vec();
        let ek_ecc = self.endorsement_key(EkTemplate::EccL2).to_vec();
        let report_data = binding_report_data(&ca_spki, &ek_rsa, &ek_ecc);
        let evidence = source.report(&report_data)?;
        if evidence.report.len() != ATTESTATION_REPORT_SIZE
            || evidence
                .report
                .get(REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64)
                != Some(&report_data[..])
        {
            return Err(String::from(
                "the PSP's report does not carry the binding REPORT_DATA",
            ));
        }
        let serials = self.random_bytes(48)?;
        let serial = |i: usize| serials.get(16 * i..16 * i + 16).unwrap_or(&[1]).to_vec();
        let ca_cert = certs::ca_certificate(&ca_key, &serial(0), &evidence.report)
            .map_err(|e| format!("CA certificate: {e}"))?;
        let rsa_cert =
            certs::ek_certificate(&ca_key, &serial(1), &ek_rsa, &identity, &evidence.report)
                .map_err(|e| format!("RSA EK certificate: {e}"))?;
        let ecc_cert =
            certs::ek_certificate(&ca_key, &serial(2), &ek_ecc, &identity, &evidence.report)
                .map_err(|e| format!("ECC EK certificate: {e}"))?;
        let mut pieces = vec![
            (RSA_EK_CERT_INDEX, rsa_cert),
            (ECC_EK_CERT_INDEX, ecc_cert),
            (CA_CERT_INDEX, ca_cert),
            (SNP_REPORT_INDEX, evidence.report),
        ];
        if let Some(vcek) = evidence.vcek {
            if vcek.len() <= index_max as usize {
                pieces.push((VCEK_CERT_INDEX, vcek));
            } else {
                log::warn!(
                    "vTPM: the {}-byte VCEK certificate exceeds the {index_max}-byte NV index \
                     limit; it is not stored",
                    vcek.len()
                );
            }
        }
        if let Some((index, data)) = pieces.iter().find(|(_, d)| d.len() > index_max as usize) {
            return Err(format!(
                "the {}-byte content of index {index:#x} exceeds the engine's {index_max}-byte \
                 NV index limit",
                data.len()
            ));
        }
        Ok(pieces)
    }

    /// A P-384 key from the TPM's random number generator (seeded by the platform's
    /// entropy source).
    fn random_ca_key(&mut self) -> Result<SigningKey, String> {
        for _ in 0..8 {
            let bytes = self.random_bytes(48)?;
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return Ok(key);
            }
        }
        Err(String::from("no valid P-384 scalar from the TPM's RNG"))
    }

    /// `n` bytes from TPM2_GetRandom (in pieces of at most 32).
    fn random_bytes(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let want = (n - out.len()).min(32) as u16;
            let mut cmd = nv::get_random(want);
            let response =
                expect_success(self.engine_mut(), &mut cmd).map_err(|e| format!("{e}"))?;
            let bytes = nv::parse_random(response)
                .filter(|b| !b.is_empty())
                .ok_or("a malformed TPM2_GetRandom response")?;
            out.extend_from_slice(bytes);
        }
        out.truncate(n);
        Ok(out)
    }
}

/// The REPORT_DATA of the provisioning report: SHA-512 of the binding input
/// ([`svsm_protocol::ek_evidence::Binding`]).
pub fn binding_report_data(ca_public_key: &[u8], ek_rsa: &[u8], ek_ecc: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    Binding {
        ca_public_key,
        ek_rsa,
        ek_ecc,
    }
    .feed(|b| h.update(b));
    h.finalize().into()
}

/// The TPM's fixed properties (TPM_PT_FIXED and on).
fn properties<E: Engine>(engine: &mut E) -> Result<Vec<(u32, u32)>, StartupError> {
    let mut cmd = nv::get_properties(pt::FIXED, 64);
    let response = expect_success(engine, &mut cmd)?;
    nv::parse_properties(response).ok_or(StartupError::Command {
        command: nv::CC_GET_CAPABILITY,
        rc: 0,
    })
}

/// Undefines `index` with the platform's authorization; an absent index is fine.
fn undefine_if_present<E: Engine>(engine: &mut E, index: u32) -> Result<(), StartupError> {
    let mut cmd = nv::undefine(index);
    match expect_success(engine, &mut cmd) {
        Ok(_) => Ok(()),
        Err(StartupError::Command { rc, .. }) if nv::is_rc_handle(rc) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Defines `index`, writes `data` in chunks the engine takes, and write-locks it.
fn store<E: Engine>(engine: &mut E, index: u32, data: &[u8]) -> Result<(), StartupError> {
    let size = u16::try_from(data.len()).map_err(|_| StartupError::Command {
        command: nv::CC_NV_DEFINE_SPACE,
        rc: 0,
    })?;
    let mut cmd = nv::define(index, EVIDENCE_NV_ATTRIBUTES, size);
    expect_success(engine, &mut cmd)?;
    // TPM_PT_NV_BUFFER_MAX is at least 512 on every engine of this profile; 512-byte
    // chunks keep each command far below the 4087-byte transport.
    for (i, chunk) in data.chunks(512).enumerate() {
        let mut cmd = nv::write(index, chunk, (i * 512) as u16);
        expect_success(engine, &mut cmd)?;
    }
    let mut cmd = nv::write_lock(index);
    expect_success(engine, &mut cmd)?;
    Ok(())
}
