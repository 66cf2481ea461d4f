//! Attestation protocol (1), version 1: SVSM_ATTEST_SERVICES and
//! SVSM_ATTEST_SINGLE_SERVICE.
//!
//! The guest names a request block (RCX) that points at its report, nonce, manifest and
//! certificate buffers (58019, "Attestation Protocol"). The SVSM builds the services
//! manifest (the vTPM's EK under its GUID), asks the PSP for a report at VMPL0 with
//! REPORT_DATA = SHA-512(nonce || manifest), and copies report, manifest and (when the
//! platform supplied the host's certificate table and the guest passed a certificate
//! buffer) certificates out. RCX/RDX/R8 return the manifest, certificate
//! and report lengths, also with INVALID_PARAMETER when a buffer is too small, which is
//! how Linux learns the sizes before it enlarges its buffers and retries.
//!
//! Invariants:
//! - the request block and nonce are copied into SVSM memory once and parsed there; the
//!   nonce is 1 to 64 bytes (see [`MAX_NONCE_SIZE`]);
//! - every buffer the guest names is checked in full (guest RAM, outside SVSM memory and
//!   every VMSA) before the PSP is asked, so a refused request consumes no PSP sequence
//!   number and writes no guest memory;
//! - one attestation runs at a time: a second vCPU gets BUSY (guests retry unchanged).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use sha2::{Digest, Sha512};
use spin::mutex::SpinMutex as Mutex;
use svsm_protocol::attest::{
    AttestRequest, AttestResponse, GuestBuffer, ATTESTATION_REPORT_SIZE,
    ATTEST_SERVICES_REQUEST_SIZE, ATTEST_SINGLE_SERVICE_REQUEST_SIZE,
};
use svsm_protocol::manifest::{
    build_manifest, Guid, ServiceEntry, VTPM_SERVICE_GUID, VTPM_SERVICE_MANIFEST_VERSION,
};
use svsm_protocol::{Field, ParseError};

use super::{CallContext, ProtocolService, VersionRange};
use crate::address::{Access, GuestPhysAddr};
use crate::error::SvsmError;
use crate::platform::{Platform, PspError};
use crate::psp::{GuestMessenger, PlatformPsp};

/// The attestation protocol versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };

/// SVSM_ATTEST_SERVICES.
pub const ATTEST_SERVICES: u32 = 0;
/// SVSM_ATTEST_SINGLE_SERVICE.
pub const ATTEST_SINGLE_SERVICE: u32 = 1;

/// The largest nonce accepted: REPORT_DATA's size, the most Linux passes (its
/// configfs-tsm inblob). REPORT_DATA = SHA-512(nonce || manifest) has no separator, so a
/// longer nonce would let the guest carry the start of a forged manifest in it: a
/// verifier hashing its own 64-byte nonce and `forged || genuine manifest` would get the
/// same digest. With nonces of at most 64 bytes here and exactly 64 at the verifier, the
/// split is fixed.
pub const MAX_NONCE_SIZE: u32 = 64;

/// The VMPL the SVSM asks reports for: its own, so the report speaks for the SVSM.
const REPORT_VMPL: u32 = 0;

/// What one service contributes to the attestation.
pub trait ServiceEvidence: Send + Sync {
    /// The service's GUID.
    fn guid(&self) -> Guid;
    /// The version of its manifest data.
    fn manifest_version(&self) -> u32;
    /// Its manifest data, as it is now.
    fn manifest_data(&self) -> Vec<u8>;
}

/// Evidence fixed when the service starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEvidence {
    guid: Guid,
    version: u32,
    data: Vec<u8>,
}

impl StaticEvidence {
    /// A service with `guid` whose manifest data (version `version`) is `data`.
    pub fn new(guid: Guid, version: u32, data: Vec<u8>) -> Self {
        Self {
            guid,
            version,
            data,
        }
    }

    /// The vTPM's entry: the EK's TPMT_PUBLIC (template L-1), manifest version 0.
    pub fn vtpm(ek_public: &[u8]) -> Self {
        Self::new(
            VTPM_SERVICE_GUID,
            VTPM_SERVICE_MANIFEST_VERSION,
            ek_public.to_vec(),
        )
    }
}

impl ServiceEvidence for StaticEvidence {
    fn guid(&self) -> Guid {
        self.guid
    }
    fn manifest_version(&self) -> u32 {
        self.version
    }
    fn manifest_data(&self) -> Vec<u8> {
        self.data.clone()
    }
}

/// The attestation service: VMPCK0's messenger, the services it attests, and the
/// host's certificate table (VCEK, ASK, ARK as the GHCB extended guest request returns
/// it), if the platform supplied one.
pub struct AttestationService {
    messenger: Mutex<GuestMessenger>,
    services: Vec<Box<dyn ServiceEvidence>>,
    certificates: Vec<u8>,
}

impl ::core::fmt::Debug for AttestationService {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("AttestationService")
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

impl AttestationService {
    /// Attests `services` with reports requested through `messenger` (VMPCK0).
    pub fn new(messenger: GuestMessenger, services: Vec<Box<dyn ServiceEvidence>>) -> Self {
        Self {
            messenger: Mutex::new(messenger),
            services,
            certificates: Vec::new(),
        }
    }

    /// Also hands the guest `table`, the host's certificate table (GUID-indexed VCEK,
    /// ASK and ARK), when it passes a certificate buffer. The platform fetches it once
    /// (an extended guest request at start-up); it changes only with the host's TCB.
    pub fn with_certificates(mut self, table: Vec<u8>) -> Self {
        self.certificates = table;
        self
    }

    /// The sequence number VMPCK0 last used (for diagnostics and tests).
    pub fn seqno(&self) -> u64 {
        self.messenger.lock().seqno()
    }

    /// Whether VMPCK0 is still usable.
    pub fn has_key(&self) -> bool {
        self.messenger.lock().has_key()
    }

    /// The services manifest of every service.
    pub fn services_manifest(&self) -> Result<Vec<u8>, SvsmError> {
        let data: Vec<(Guid, Vec<u8>)> = self
            .services
            .iter()
            .map(|s| (s.guid(), s.manifest_data()))
            .collect();
        let entries: Vec<ServiceEntry<'_>> = data
            .iter()
            .map(|(guid, data)| ServiceEntry { guid: *guid, data })
            .collect();
        let total = MANIFEST_OVERHEAD
            + entries.len() * MANIFEST_ENTRY_OVERHEAD
            + data.iter().map(|(_, d)| d.len()).sum::<usize>();
        let mut out = vec![0u8; total];
        let len = build_manifest(&entries, &mut out)?;
        out.truncate(len);
        Ok(out)
    }
}

const MANIFEST_OVERHEAD: usize = svsm_protocol::manifest::MANIFEST_HEADER_SIZE;
const MANIFEST_ENTRY_OVERHEAD: usize = svsm_protocol::manifest::MANIFEST_ENTRY_SIZE;

/// The attestation service for [`Services::with_attestation`](super::Services::with_attestation).
pub fn service<P: Platform>(
    messenger: GuestMessenger,
    services: Vec<Box<dyn ServiceEvidence>>,
) -> Box<dyn ProtocolService<P>> {
    Box::new(AttestationService::new(messenger, services))
}

impl<P: Platform> ProtocolService<P> for AttestationService {
    fn versions(&self) -> VersionRange {
        VERSIONS
    }

    fn handle(&self, call: &mut CallContext<'_, P>) -> Result<(), SvsmError> {
        let single = match call.call_id() {
            ATTEST_SERVICES => false,
            ATTEST_SINGLE_SERVICE => true,
            _ => return Err(SvsmError::UnsupportedCall),
        };
        let request = read_request(call, single)?;
        let nonce = read_nonce(call, request.nonce)?;
        let manifest = self.manifest_for(&request)?;
        // The vTPM's provisioning report binds an input that starts with printable ASCII
        // for longer than any nonce; a manifest starting with printable ASCII could let a
        // nonce || manifest reproduce it. The SVSM's manifests never do (a GUID or a
        // TPMT_PUBLIC comes first), and this keeps it so.
        if svsm_protocol::ek_evidence::manifest_could_mimic_binding(&manifest) {
            log::error!("attestation: a manifest that could mimic the EK binding is refused");
            return Err(SvsmError::InvalidFormat);
        }

        // Sizes first (Linux probes them this way), then addresses, then the PSP.
        // Certificates go out only to a guest that passes a certificate buffer.
        let certificates: &[u8] = if request.certificates.size == 0 {
            &[]
        } else {
            &self.certificates
        };
        let outputs = AttestResponse {
            manifest_size: manifest.len() as u64,
            cert_size: certificates.len() as u64,
            report_size: ATTESTATION_REPORT_SIZE as u64,
        };
        let (rcx, rdx, r8) = outputs.to_regs();
        let short = [
            (request.report.size, ATTESTATION_REPORT_SIZE),
            (request.manifest.size, manifest.len()),
            (request.certificates.size, certificates.len()),
        ]
        .into_iter()
        .find(|&(got, need)| (got as usize) < need);
        if let Some((got, need)) = short {
            let regs = call.regs_mut();
            (regs.rcx, regs.rdx, regs.r8) = (rcx, rdx, r8);
            return Err(SvsmError::Parse(ParseError::OutputTooSmall {
                need,
                got: got as usize,
            }));
        }
        check_buffer(call, request.report)?;
        check_buffer(call, request.manifest)?;
        if request.certificates.size > 0 {
            check_buffer(call, request.certificates)?;
        }

        let mut report_data = [0u8; 64];
        let digest = Sha512::new()
            .chain_update(&nonce)
            .chain_update(&manifest)
            .finalize();
        report_data.copy_from_slice(&digest);
        let report = {
            let mut messenger = self.messenger.try_lock().ok_or(SvsmError::Busy)?;
            messenger
                .get_report(&PlatformPsp(call.platform()), &report_data, REPORT_VMPL)
                .map_err(|e| {
                    log::warn!("attestation: no report from the PSP: {e:?}");
                    SvsmError::Psp(PspError::from(e))
                })?
        };

        call.write_guest(GuestPhysAddr::new(request.report.gpa), &report)?;
        call.write_guest(GuestPhysAddr::new(request.manifest.gpa), &manifest)?;
        if !certificates.is_empty() {
            call.write_guest(GuestPhysAddr::new(request.certificates.gpa), certificates)?;
        }
        let regs = call.regs_mut();
        (regs.rcx, regs.rdx, regs.r8) = (rcx, rdx, r8);
        Ok(())
    }
}

impl AttestationService {
    /// The manifest the request asks for: every service's, or one service's data.
    fn manifest_for(&self, request: &AttestRequest) -> Result<Vec<u8>, SvsmError> {
        let Some(selector) = request.service else {
            return self.services_manifest();
        };
        let service = self
            .services
            .iter()
            .find(|s| s.guid() == selector.guid)
            .ok_or(SvsmError::Parse(ParseError::UnknownValue {
                field: Field::ManifestGuid,
                value: 0,
            }))?;
        if service.manifest_version() != selector.manifest_version {
            return Err(SvsmError::Parse(ParseError::UnknownValue {
                field: Field::ManifestEntry,
                value: selector.manifest_version.into(),
            }));
        }
        Ok(service.manifest_data())
    }
}

/// Copies the request block at RCX into SVSM memory and parses it. The block must be
/// 8-byte aligned and lie within one page (Linux puts it in the calling area).
fn read_request<P: Platform>(
    call: &CallContext<'_, P>,
    single: bool,
) -> Result<AttestRequest, SvsmError> {
    let gpa = call.regs().rcx;
    let size = if single {
        ATTEST_SINGLE_SERVICE_REQUEST_SIZE
    } else {
        ATTEST_SERVICES_REQUEST_SIZE
    };
    if gpa % 8 != 0 {
        return Err(SvsmError::Parse(ParseError::Misaligned {
            field: Field::Gpa,
            value: gpa,
            align: 8,
        }));
    }
    if (gpa & 0xFFF) + size as u64 > 0x1000 {
        return Err(SvsmError::Parse(ParseError::OutOfBounds {
            field: Field::Gpa,
            offset: (gpa & 0xFFF) as usize,
            len: size,
            limit: 0x1000,
        }));
    }
    let mut block = [0u8; ATTEST_SINGLE_SERVICE_REQUEST_SIZE];
    let block = block.get_mut(..size).ok_or(SvsmError::InvalidFormat)?;
    call.read_guest(GuestPhysAddr::new(gpa), block)?;
    let request = if single {
        AttestRequest::parse_single_service(block)?
    } else {
        AttestRequest::parse_services(block)?
    };
    Ok(request)
}

/// Copies the nonce into SVSM memory (1 to [`MAX_NONCE_SIZE`] bytes).
fn read_nonce<P: Platform>(
    call: &CallContext<'_, P>,
    nonce: GuestBuffer,
) -> Result<Vec<u8>, SvsmError> {
    if nonce.size == 0 || nonce.size > MAX_NONCE_SIZE {
        return Err(SvsmError::Parse(ParseError::SizeTooLarge {
            size: nonce.size as usize,
            max: MAX_NONCE_SIZE as usize,
        }));
    }
    let mut bytes = vec![0u8; nonce.size as usize];
    call.read_guest(GuestPhysAddr::new(nonce.gpa), &mut bytes)?;
    Ok(bytes)
}

/// Checks a whole output buffer the guest named (guest RAM, not SVSM memory, no VMSA).
fn check_buffer<P: Platform>(
    call: &CallContext<'_, P>,
    buffer: GuestBuffer,
) -> Result<(), SvsmError> {
    call.svsm()
        .state_read()
        .check(
            GuestPhysAddr::new(buffer.gpa),
            buffer.size.into(),
            Access::Data,
        )
        .map(|_| ())
        .map_err(SvsmError::Address)
}
