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
    SNP_REPORT_INDEX, STATE_EVIDENCE_INDEX, VCEK_CERT_INDEX,
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
        let state = self.engine_mut().state_evidence().map(|e| e.to_bytes());
        let state = state.as_ref().map_or(&[][..], |s| &s[..]);
        let report_data = binding_report_data(&ca_spki, &ek_rsa, &ek_ecc, state);
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
        if !state.is_empty() {
            pieces.push((STATE_EVIDENCE_INDEX, state.to_vec()));
        }
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
            let mut bytes = self.random_bytes(48)?;
            let key = SigningKey::from_slice(&bytes);
            // The scalar lives on only inside the key (which zeroizes itself on drop).
            zeroize::Zeroize::zeroize(&mut bytes);
            if let Ok(key) = key {
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
pub fn binding_report_data(
    ca_public_key: &[u8],
    ek_rsa: &[u8],
    ek_ecc: &[u8],
    state: &[u8],
) -> [u8; 64] {
    let mut h = Sha512::new();
    Binding {
        ca_public_key,
        ek_rsa,
        ek_ecc,
        state,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;
    use crate::tpm;
    use alloc::string::ToString;
    use der::Decode;
    use svsm_protocol::ek_evidence::ALL_INDICES;

    /// An engine that answers the commands start-up and provisioning send, and records
    /// them (command code, first handle, payload of NV writes).
    struct Fake {
        response: Vec<u8>,
        calls: Vec<(u32, u32)>,
        written: Vec<(u32, Vec<u8>)>,
        primaries: u32,
        index_max: u32,
        hierarchy_rc: u32,
    }

    fn header(rc: u32, body: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&0x8001u16.to_be_bytes());
        r.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
        r.extend_from_slice(&rc.to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    impl Fake {
        fn new(index_max: u32) -> Self {
            Fake {
                response: Vec::new(),
                calls: Vec::new(),
                written: Vec::new(),
                primaries: 0,
                index_max,
                hierarchy_rc: 0,
            }
        }
    }

    impl Engine for Fake {
        fn execute(&mut self, _locality: u8, command: &mut [u8]) -> Result<(), EngineError> {
            let be32 = |at: usize| u32::from_be_bytes(command[at..at + 4].try_into().unwrap());
            let code = be32(6);
            let handle = if command.len() >= 14 { be32(10) } else { 0 };
            self.calls.push((code, handle));
            self.response = match code {
                tpm::CC_CREATE_PRIMARY => {
                    self.primaries += 1;
                    let template = if self.primaries == 1 {
                        EkTemplate::RsaL1
                    } else {
                        EkTemplate::EccL2
                    };
                    // The template with a non-zero unique field stands for the key.
                    let mut public = template.public_template();
                    let n = public.len();
                    for b in &mut public[n - 20..n - 2] {
                        *b = 0x5A;
                    }
                    if self.primaries == 1 {
                        public[n - 256] = 0xC3;
                    }
                    let mut body = Vec::new();
                    body.extend_from_slice(&0x8000_0000u32.to_be_bytes());
                    body.extend_from_slice(&0u32.to_be_bytes());
                    body.extend_from_slice(&(public.len() as u16).to_be_bytes());
                    body.extend_from_slice(&public);
                    header(0, &body)
                }
                nv::CC_NV_UNDEFINE_SPACE => header(0x28B, &[]),
                nv::CC_GET_CAPABILITY => {
                    let props = [
                        (pt::MANUFACTURER, 0x4942_4D00),
                        (pt::VENDOR_STRING_1, 0x5357_2020),
                        (pt::FIRMWARE_VERSION_1, 0x2019_1023),
                        (pt::NV_INDEX_MAX, self.index_max),
                    ];
                    let mut body = vec![0];
                    body.extend_from_slice(&nv::CAP_TPM_PROPERTIES.to_be_bytes());
                    body.extend_from_slice(&(props.len() as u32).to_be_bytes());
                    for (p, v) in props {
                        body.extend_from_slice(&p.to_be_bytes());
                        body.extend_from_slice(&v.to_be_bytes());
                    }
                    header(0, &body)
                }
                nv::CC_GET_RANDOM => {
                    let n = u16::from_be_bytes([command[10], command[11]]);
                    let mut body = n.to_be_bytes().to_vec();
                    body.extend((0..n).map(|i| 0x40 + i as u8));
                    header(0, &body)
                }
                nv::CC_NV_WRITE => {
                    // header, two handles, auth area (4 + 9), then the TPM2B data.
                    let len = usize::from(u16::from_be_bytes([command[31], command[32]]));
                    let index = be32(14);
                    let data = command[33..33 + len].to_vec();
                    match self.written.iter_mut().find(|(i, _)| *i == index) {
                        Some((_, d)) => d.extend_from_slice(&data),
                        None => self.written.push((index, data)),
                    }
                    header(0, &[])
                }
                nv::CC_HIERARCHY_CONTROL => header(self.hierarchy_rc, &[]),
                _ => header(0, &[]),
            };
            Ok(())
        }
        fn response(&self) -> &[u8] {
            &self.response
        }
        fn failed(&self) -> bool {
            false
        }
        fn buffer_size(&self) -> u32 {
            4087
        }
    }

    /// A PSP stand-in: a 0x4A0-byte report carrying the REPORT_DATA asked for (or
    /// another), and optionally a VCEK.
    struct Source {
        tamper: bool,
        vcek: Option<Vec<u8>>,
        fail: bool,
    }

    impl ReportSource for Source {
        fn report(&mut self, report_data: &[u8; 64]) -> Result<HardwareEvidence, String> {
            if self.fail {
                return Err("the PSP is gone".to_string());
            }
            let mut report = vec![0u8; ATTESTATION_REPORT_SIZE];
            report[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64].copy_from_slice(report_data);
            if self.tamper {
                report[REPORT_DATA_OFFSET] ^= 1;
            }
            Ok(HardwareEvidence {
                report,
                vcek: self.vcek.clone(),
            })
        }
    }

    fn started(index_max: u32) -> Service<Fake> {
        Service::start(Fake::new(index_max)).expect("the fake engine starts")
    }

    fn codes(s: &mut Service<Fake>) -> Vec<u32> {
        s.engine_mut().calls.iter().map(|c| c.0).collect()
    }

    #[test]
    fn without_a_report_nothing_is_certified_and_the_platform_hierarchy_is_withheld() {
        let mut s = started(2048);
        let done = s.provision(None).unwrap();
        assert!(done.indices.is_empty());
        assert!(done.uncertified.unwrap().contains("no SNP report"));
        let codes = codes(&mut s);
        assert!(!codes.contains(&nv::CC_NV_DEFINE_SPACE));
        assert_eq!(codes.last(), Some(&nv::CC_HIERARCHY_CONTROL));
        // Every index an earlier boot might have left is undefined first.
        let undefined: Vec<u32> = s
            .engine_mut()
            .calls
            .iter()
            .filter(|c| c.0 == nv::CC_NV_UNDEFINE_SPACE)
            .map(|c| c.1)
            .collect();
        // (the first handle of NV_UndefineSpace is the platform's authorization)
        assert_eq!(undefined, [nv::RH_PLATFORM; ALL_INDICES.len()]);
    }

    #[test]
    fn with_a_binding_report_every_index_is_written_and_locked_before_the_hierarchy_goes() {
        let mut s = started(2048);
        let mut source = Source {
            tamper: false,
            vcek: Some(vec![0x30; 900]),
            fail: false,
        };
        let done = s.provision(Some(&mut source)).unwrap();
        assert_eq!(done.uncertified, None);
        let indices: Vec<u32> = done.indices.iter().map(|i| i.0).collect();
        assert_eq!(
            indices,
            [
                RSA_EK_CERT_INDEX,
                ECC_EK_CERT_INDEX,
                CA_CERT_INDEX,
                SNP_REPORT_INDEX,
                VCEK_CERT_INDEX
            ]
        );
        let calls = &s.engine_mut().calls;
        let locks = calls.iter().filter(|c| c.0 == nv::CC_NV_WRITE_LOCK).count();
        assert_eq!(locks, 5);
        let last_lock = calls
            .iter()
            .rposition(|c| c.0 == nv::CC_NV_WRITE_LOCK)
            .unwrap();
        let hierarchy = calls
            .iter()
            .position(|c| c.0 == nv::CC_HIERARCHY_CONTROL)
            .unwrap();
        assert!(last_lock < hierarchy);
        // What was written is the certificates: the RSA EK's parses as X.509 and its
        // issuer is the CA's subject.
        let written = &s.engine_mut().written;
        let get = |i: u32| &written.iter().find(|w| w.0 == i).unwrap().1;
        let rsa = x509_cert::Certificate::from_der(get(RSA_EK_CERT_INDEX)).unwrap();
        let ca = x509_cert::Certificate::from_der(get(CA_CERT_INDEX)).unwrap();
        assert_eq!(
            rsa.tbs_certificate().issuer(),
            ca.tbs_certificate().subject()
        );
        assert_eq!(get(SNP_REPORT_INDEX).len(), ATTESTATION_REPORT_SIZE);
        assert_eq!(get(VCEK_CERT_INDEX), &vec![0x30; 900]);
    }

    #[test]
    fn content_beyond_the_engines_nv_index_limit_leaves_nothing_certified() {
        // The report (0x4A0 bytes) exceeds a 1024-byte limit.
        let mut s = started(1024);
        let mut source = Source {
            tamper: false,
            vcek: None,
            fail: false,
        };
        let done = s.provision(Some(&mut source)).unwrap();
        assert!(done.indices.is_empty());
        assert!(done.uncertified.unwrap().contains("NV index limit"));
        assert!(!codes(&mut s).contains(&nv::CC_NV_DEFINE_SPACE));
        // A VCEK alone too large is left out, the rest is stored.
        let mut s = started(2048);
        let mut source = Source {
            tamper: false,
            vcek: Some(vec![0x30; 4000]),
            fail: false,
        };
        let done = s.provision(Some(&mut source)).unwrap();
        assert_eq!(done.indices.len(), 4);
    }

    #[test]
    fn a_report_without_the_binding_or_no_report_certifies_nothing() {
        for (source, why) in [
            (
                Source {
                    tamper: true,
                    vcek: None,
                    fail: false,
                },
                "does not carry the binding",
            ),
            (
                Source {
                    tamper: false,
                    vcek: None,
                    fail: true,
                },
                "the PSP is gone",
            ),
        ] {
            let mut source = source;
            let mut s = started(2048);
            let done = s.provision(Some(&mut source)).unwrap();
            assert!(done.indices.is_empty());
            assert!(done.uncertified.unwrap().contains(why));
            assert_eq!(codes(&mut s).last(), Some(&nv::CC_HIERARCHY_CONTROL));
        }
    }

    #[test]
    fn a_platform_hierarchy_that_cannot_be_withheld_fails_start_up() {
        let mut s = started(2048);
        s.engine_mut().hierarchy_rc = 0x185;
        assert_eq!(
            s.provision(None),
            Err(StartupError::Command {
                command: nv::CC_HIERARCHY_CONTROL,
                rc: 0x185
            })
        );
    }
}
