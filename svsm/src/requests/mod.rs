//! The request loop and the one dispatch point for SVSM calls.
//!
//! [`Svsm::handle_request`] is one step of the loop a vCPU runs at VMPL0: it services a
//! call only when the guest VMSA's exit code is VMGEXIT and `call_pending` in the
//! calling area current at that moment was 1; it clears `call_pending` there (so a
//! REMAP_CA in the call cannot leave the old area pending), clears the guest VMSA's
//! EFER.SVME while it works so the hypervisor cannot run that VMSA, dispatches, and
//! writes RAX/RCX/RDX/R8 back into the guest VMSA in `Svsm::write_back`, the single
//! place results reach the guest.
//!
//! # Extension point: protocols 1 (attestation) and 2 (vTPM)
//!
//! The core protocol (0) is handled in [`core`]. Protocols 1 and 2 are served by
//! optional [`ProtocolService`] objects held in [`Services`], passed to [`Svsm::new`]:
//!
//! ```text
//! let services = Services::new()
//!     .with_attestation(Box::new(my_attestation_service))
//!     .with_vtpm(Box::new(my_vtpm_service));
//! let svsm = Svsm::new(platform, config, services);
//! ```
//!
//! A service reports the versions it implements ([`ProtocolService::versions`]);
//! QUERY_PROTOCOL answers `(max << 32) | min` for a protocol only when its service is
//! present and the asked version is in range, and a call to an absent protocol is
//! `UNSUPPORTED_PROTOCOL`. A service handles every call id of its protocol (unknown ids:
//! [`SvsmError::UnsupportedCall`]) through a [`CallContext`], which gives it the call's
//! registers and checked, copying access to guest memory. `attest.rs` and `vtpm.rs`
//! hold the two services.
//!
//! Locking: the registry of vCPUs and VMSAs ([`GuestState`]) sits behind one
//! reader-writer spin lock. Handlers that only use it (PVALIDATE, guest memory access)
//! take it shared; CREATE_VCPU, DELETE_VCPU and REMAP_CA take it exclusively with
//! `try_write` and answer `BUSY` when another vCPU holds it, which guests retry with
//! identical registers.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
#![forbid(unsafe_code)]

pub mod attest;
pub mod core;
pub mod vtpm;

use alloc::boxed::Box;
use alloc::vec::Vec;

use spin::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use svsm_protocol::call::{CallCode, Protocol};
use svsm_protocol::calling_area::CALL_PENDING_OFFSET;
use svsm_protocol::SvsmResultCode;

use crate::address::{
    Access, AddressError, CheckedRange, GuestPhysAddr, GuestState, MemoryLayout, PhysAddr, VmsaPage,
};
use crate::error::SvsmError;
use crate::platform::{MemoryError, Platform, Vmpl};

/// Byte offsets of the VMSA fields the request path reads and writes one by one,
/// taken from the [`Vmsa`] layout (Linux
/// `struct sev_es_save_area`, APM vol. 2 "VMSA Layout").
pub mod vmsa {
    use core::mem::offset_of;
    use svsm_protocol::vmsa::Vmsa;

    pub use svsm_protocol::vmsa::{EFER_SVME, SVM_EXIT_VMGEXIT as VMGEXIT_EXIT_CODE};

    /// VMPL the VMSA runs at (u8).
    pub const VMPL: u64 = offset_of!(Vmsa, vmpl) as u64;
    /// EFER (u64).
    pub const EFER: u64 = offset_of!(Vmsa, efer) as u64;
    /// RAX (u64).
    pub const RAX: u64 = offset_of!(Vmsa, rax) as u64;
    /// RCX (u64).
    pub const RCX: u64 = offset_of!(Vmsa, rcx) as u64;
    /// RDX (u64).
    pub const RDX: u64 = offset_of!(Vmsa, rdx) as u64;
    /// R8 (u64).
    pub const R8: u64 = offset_of!(Vmsa, r8) as u64;
    /// R9 (u64).
    pub const R9: u64 = offset_of!(Vmsa, r9) as u64;
    /// SEV features (u64): SEV_STATUS >> 2.
    pub const SEV_FEATURES: u64 = offset_of!(Vmsa, sev_features) as u64;
    /// Guest exit code (u64).
    pub const GUEST_EXIT_CODE: u64 = offset_of!(Vmsa, guest_exit_code) as u64;

    /// What the request loop reads from the guest VMSA for a call, in one access:
    /// RAX, RCX, RDX, R8, R9, the exit code and EFER, in this order.
    pub const CALL_FIELDS: [u64; 7] = [RAX, RCX, RDX, R8, R9, GUEST_EXIT_CODE, EFER];
}

/// The registers of one call: inputs on entry, outputs (as a handler leaves them) on
/// return. RAX on return is the result code, set by the request loop.
pub use svsm_protocol::vmsa::CallRegisters;

/// The versions of a protocol a service implements, `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    /// Lowest version.
    pub min: u32,
    /// Highest version.
    pub max: u32,
}

impl VersionRange {
    /// Whether `version` is in the range.
    pub const fn contains(self, version: u32) -> bool {
        self.min <= version && version <= self.max
    }

    /// The QUERY_PROTOCOL answer for `version`: `(max << 32) | min`, or 0.
    pub const fn query(self, version: u32) -> u64 {
        if self.contains(version) {
            ((self.max as u64) << 32) | self.min as u64
        } else {
            0
        }
    }
}

/// A protocol other than core: attestation (1) or vTPM (2).
pub trait ProtocolService<P: Platform>: Send + Sync {
    /// The versions this service implements.
    fn versions(&self) -> VersionRange;

    /// Handles one call of the protocol. Outputs go into `call.regs_mut()`; the result
    /// code is `Ok` (SUCCESS) or the error's code.
    fn handle(&self, call: &mut CallContext<'_, P>) -> Result<(), SvsmError>;
}

/// The optional protocol services an SVSM offers besides core.
pub struct Services<P: Platform> {
    attestation: Option<Box<dyn ProtocolService<P>>>,
    vtpm: Option<Box<dyn ProtocolService<P>>>,
}

impl<P: Platform> Default for Services<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Platform> Services<P> {
    /// Core protocol only.
    pub fn new() -> Self {
        Self {
            attestation: None,
            vtpm: None,
        }
    }

    /// Serves the attestation protocol (1) with `service`.
    pub fn with_attestation(mut self, service: Box<dyn ProtocolService<P>>) -> Self {
        self.attestation = Some(service);
        self
    }

    /// Serves the vTPM protocol (2) with `service`.
    pub fn with_vtpm(mut self, service: Box<dyn ProtocolService<P>>) -> Self {
        self.vtpm = Some(service);
        self
    }

    /// The service for `protocol`, if present.
    fn get(&self, protocol: Protocol) -> Option<&dyn ProtocolService<P>> {
        match protocol {
            Protocol::Core => None,
            Protocol::Attestation => self.attestation.as_deref(),
            Protocol::Vtpm => self.vtpm.as_deref(),
        }
    }
}

impl<P: Platform> ::core::fmt::Debug for Services<P> {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("Services")
            .field(
                "attestation",
                &self.attestation.as_ref().map(|s| s.versions()),
            )
            .field("vtpm", &self.vtpm.as_ref().map(|s| s.versions()))
            .finish()
    }
}

/// How the launch set the SVSM up.
#[derive(Debug, Clone)]
pub struct SvsmConfig {
    /// The VMPL the guest OS runs at (2 by convention).
    pub guest_vmpl: Vmpl,
    /// Guest memory map and SVSM range.
    pub layout: MemoryLayout,
    /// APIC IDs of every vCPU of the machine.
    pub apic_ids: Vec<u32>,
}

/// Why [`Svsm::handle_request`] did not service a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotServiced {
    /// No vCPU has this APIC ID.
    UnknownVcpu,
    /// The vCPU has no guest VMSA.
    NoGuestVmsa,
    /// The guest VMSA could not be read.
    VmsaUnreadable,
    /// The guest exited for another reason than VMGEXIT.
    NotVmgexit,
    /// The vCPU has no calling area, or it is not usable.
    NoCallingArea,
    /// `call_pending` was not 1.
    NotPending,
}

/// The result of one step of the request loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The call was serviced; the code went to the guest's RAX.
    Serviced(SvsmResultCode),
    /// There was no call to service; the guest's registers are untouched.
    NotServiced(NotServiced),
}

/// The SVSM: a platform, the registry of guest vCPUs, and the protocol services.
pub struct Svsm<P: Platform> {
    platform: P,
    guest_vmpl: Vmpl,
    state: RwLock<GuestState>,
    services: Services<P>,
}

impl<P: Platform> ::core::fmt::Debug for Svsm<P> {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("Svsm")
            .field("guest_vmpl", &self.guest_vmpl)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

/// One call being handled on one vCPU: its registers and checked access to guest
/// memory. Handed to every handler, core and [`ProtocolService`] alike.
pub struct CallContext<'a, P: Platform> {
    svsm: &'a Svsm<P>,
    apic_id: u32,
    call_id: u32,
    regs: &'a mut CallRegisters,
}

impl<P: Platform> ::core::fmt::Debug for CallContext<'_, P> {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("CallContext")
            .field("apic_id", &self.apic_id)
            .field("call_id", &self.call_id)
            .field("regs", &self.regs)
            .finish()
    }
}

impl<'a, P: Platform> CallContext<'a, P> {
    /// The call id (RAX bits 31:0).
    pub fn call_id(&self) -> u32 {
        self.call_id
    }

    /// APIC ID of the calling vCPU.
    pub fn apic_id(&self) -> u32 {
        self.apic_id
    }

    /// The call's registers.
    pub fn regs(&self) -> &CallRegisters {
        self.regs
    }

    /// The registers the guest gets back (RCX, RDX, R8 are written to its VMSA).
    pub fn regs_mut(&mut self) -> &mut CallRegisters {
        self.regs
    }

    /// The platform, e.g. for PSP guest requests.
    pub fn platform(&self) -> &P {
        &self.svsm.platform
    }

    /// The guest's VMPL.
    pub fn guest_vmpl(&self) -> Vmpl {
        self.svsm.guest_vmpl
    }

    /// Copies `buf.len()` bytes of guest RAM at `gpa` into `buf`, after checking the
    /// range in [`crate::address`] (under the state lock, so no VMSA can appear there
    /// between check and copy). Parse the copy, never guest memory.
    pub fn read_guest(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), SvsmError> {
        self.checked(gpa, buf.len() as u64)?.read(0, buf)
    }

    /// Checks, under the same lock and without copying, that `len` bytes of guest RAM
    /// at `gpa` could be read by [`read_guest`](Self::read_guest). For a handler that
    /// needs a whole buffer usable before it acts but copies only part of it; each later
    /// copy is checked again.
    pub fn check_guest(&self, gpa: GuestPhysAddr, len: u64) -> Result<(), SvsmError> {
        self.guest_buffer(gpa, len).map(drop)
    }

    /// Copies `data` into guest RAM at `gpa`, after the same check.
    pub fn write_guest(&self, gpa: GuestPhysAddr, data: &[u8]) -> Result<(), SvsmError> {
        self.checked(gpa, data.len() as u64)?.write(0, data)
    }

    /// Checks `len` bytes of guest RAM at `gpa` once, as [`check_guest`](Self::check_guest)
    /// does, and keeps the state lock while the handler copies from and to them at
    /// offsets inside the range (each copy still goes through the platform's check).
    /// For a handler that reads a request in several pieces: no VMSA can appear in the
    /// buffer between the pieces. Drop it before long work.
    pub fn guest_buffer(
        &self,
        gpa: GuestPhysAddr,
        len: u64,
    ) -> Result<GuestBuffer<'a, P>, SvsmError> {
        let buffer = self.checked(gpa, len)?;
        self.svsm.platform.check_guest(&buffer.range)?;
        Ok(buffer)
    }

    /// The range `[gpa, gpa + len)` after [`GuestState::check`], with the state lock
    /// held: the one address check every guest access of a handler goes through.
    #[inline(never)]
    fn checked(&self, gpa: GuestPhysAddr, len: u64) -> Result<GuestBuffer<'a, P>, SvsmError> {
        let state = self.svsm.state.read();
        let range = state.check(gpa, len, Access::Data)?;
        Ok(GuestBuffer {
            platform: &self.svsm.platform,
            range,
            _state: state,
        })
    }

    pub(crate) fn svsm(&self) -> &'a Svsm<P> {
        self.svsm
    }
}

/// A checked range of guest RAM, held under the SVSM's state lock (see
/// [`CallContext::guest_buffer`]).
pub struct GuestBuffer<'a, P: Platform> {
    platform: &'a P,
    range: CheckedRange,
    _state: RwLockReadGuard<'a, GuestState>,
}

impl<P: Platform> ::core::fmt::Debug for GuestBuffer<'_, P> {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("GuestBuffer")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl<P: Platform> GuestBuffer<'_, P> {
    /// Copies the bytes at `offset` in the buffer into `buf`.
    #[inline]
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), SvsmError> {
        Ok(self.platform.read_guest(&self.range, offset, buf)?)
    }

    /// Copies `data` into the buffer at `offset`.
    #[inline]
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), SvsmError> {
        Ok(self.platform.write_guest(&self.range, offset, data)?)
    }
}

impl<P: Platform> Svsm<P> {
    /// An SVSM on `platform` with the launch `config` and protocol `services`.
    pub fn new(platform: P, config: SvsmConfig, services: Services<P>) -> Self {
        Self {
            platform,
            guest_vmpl: config.guest_vmpl,
            state: RwLock::new(GuestState::new(config.layout, &config.apic_ids)),
            services,
        }
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The guest's VMPL.
    pub fn guest_vmpl(&self) -> Vmpl {
        self.guest_vmpl
    }

    /// A copy of the registry (vCPUs, VMSAs, calling areas), for tests and diagnostics.
    pub fn state_snapshot(&self) -> GuestState {
        self.state.read().clone()
    }

    /// Registers the guest VMSA the SVSM built at launch for `apic_id` (a page of SVSM
    /// memory) and the vCPU's boot calling area.
    pub fn register_launch_vcpu(
        &self,
        apic_id: u32,
        vmsa: PhysAddr,
        calling_area: GuestPhysAddr,
    ) -> Result<(), SvsmError> {
        let mut state = self.state.write();
        let ca = state.check_calling_area(calling_area, apic_id)?;
        state.register_launch_vmsa(apic_id, vmsa, &ca)?;
        Ok(())
    }

    /// One turn of the loop on vCPU `apic_id`: run the guest VMPL, then service the
    /// call it made, if any.
    pub fn run_once(&self, apic_id: u32) -> Result<RequestOutcome, SvsmError> {
        self.platform.run_guest(apic_id)?;
        Ok(self.handle_request(apic_id))
    }

    /// Services the call the guest on vCPU `apic_id` made, if it made one.
    pub fn handle_request(&self, apic_id: u32) -> RequestOutcome {
        let (vmsa, efer, mut regs) = {
            let state = self.state.read();
            let Some(vcpu) = state.vcpu(apic_id) else {
                return RequestOutcome::NotServiced(NotServiced::UnknownVcpu);
            };
            let Some((vmsa, ca)) = state.vcpu_call_target(vcpu) else {
                return RequestOutcome::NotServiced(NotServiced::NoGuestVmsa);
            };
            // What a call reads from the guest VMSA, each field once, in one access.
            let mut fields = vmsa::CALL_FIELDS.map(|offset| (offset, 0u64));
            if self.platform.read_vmsa_u64s(&vmsa, &mut fields).is_err() {
                return RequestOutcome::NotServiced(NotServiced::VmsaUnreadable);
            }
            let [(_, rax), (_, rcx), (_, rdx), (_, r8), (_, r9), (_, exit_code), (_, efer)] =
                fields;
            if exit_code != vmsa::VMGEXIT_EXIT_CODE {
                return RequestOutcome::NotServiced(NotServiced::NotVmgexit);
            }
            // Take call_pending in the calling area that is current now, before the
            // call can change it.
            match self.take_call_pending(&ca) {
                Ok(true) => {}
                Ok(false) => return RequestOutcome::NotServiced(NotServiced::NotPending),
                Err(_) => return RequestOutcome::NotServiced(NotServiced::NoCallingArea),
            }
            let regs = CallRegisters {
                rax,
                rcx,
                rdx,
                r8,
                r9,
            };
            // While the SVSM works on the call the hypervisor must not run this VMSA.
            // Written under the state lock, so no DELETE_VCPU can turn the page back into
            // guest RAM between the check above and this write. If the write fails, so
            // will the write-back: the call then has no visible result.
            let _ = self.write_vmsa_u64(&vmsa, vmsa::EFER, efer & !vmsa::EFER_SVME);
            (vmsa, efer, regs)
        };

        let code = match self.dispatch(apic_id, &mut regs) {
            Ok(()) => SvsmResultCode::SUCCESS,
            Err(e) => call_failed(apic_id, regs.rax, e),
        };
        self.write_back(apic_id, &vmsa, code, &regs, efer);
        RequestOutcome::Serviced(code)
    }

    /// Reads `call_pending` and, if it is 1, clears it: whether there is a call.
    ///
    /// Read then write, not an atomic exchange: the vCPU that owns the calling area is
    /// stopped in VMPL0 while this runs, and the registry never lets two vCPUs share a
    /// calling area, so no one else writes the byte meanwhile.
    fn take_call_pending(&self, ca: &CheckedRange) -> Result<bool, SvsmError> {
        let mut pending = [0u8];
        self.platform
            .read_guest(ca, CALL_PENDING_OFFSET as u64, &mut pending)?;
        if pending != [1] {
            return Ok(false);
        }
        self.platform
            .write_guest(ca, CALL_PENDING_OFFSET as u64, &[0])?;
        Ok(true)
    }

    /// The one place results reach the guest: RAX = code, RCX/RDX/R8 as the handler
    /// left them, EFER restored (SVME set again). Skipped if the VMSA stopped being this
    /// vCPU's VMSA during the call, even if a new VMSA was registered on the same page
    /// meanwhile (the handles differ in generation).
    fn write_back(
        &self,
        apic_id: u32,
        vmsa: &VmsaPage,
        code: SvsmResultCode,
        regs: &CallRegisters,
        efer: u64,
    ) {
        let state = self.state.read();
        if state.current_vmsa(apic_id).as_ref() != Some(vmsa) {
            vmsa_gone(apic_id, code);
            return;
        }
        // One access; EFER (SVME set again) last.
        let fields = [
            (vmsa::RAX, code.raw()),
            (vmsa::RCX, regs.rcx),
            (vmsa::RDX, regs.rdx),
            (vmsa::R8, regs.r8),
            (vmsa::EFER, efer),
        ];
        if let Err(e) = self.platform.write_vmsa_u64s(vmsa, &fields) {
            vmsa_unwritable(apic_id, e);
        }
    }

    /// Routes a call by protocol: core here, 1 and 2 to their services.
    fn dispatch(&self, apic_id: u32, regs: &mut CallRegisters) -> Result<(), SvsmError> {
        let code = CallCode::from_rax(regs.rax);
        let mut call = CallContext {
            svsm: self,
            apic_id,
            call_id: code.call_id,
            regs,
        };
        match Protocol::from_id(code.protocol) {
            Some(Protocol::Core) => core::handle(&mut call),
            Some(protocol) => match self.services.get(protocol) {
                Some(service) => service.handle(&mut call),
                None => Err(SvsmError::UnsupportedProtocol),
            },
            None => Err(SvsmError::UnsupportedProtocol),
        }
    }

    /// The QUERY_PROTOCOL answer for `protocol` at `version`.
    pub(crate) fn query_protocol(&self, protocol: u32, version: u32) -> u64 {
        match Protocol::from_id(protocol) {
            Some(Protocol::Core) => core::VERSIONS.query(version),
            Some(p) => self
                .services
                .get(p)
                .map_or(0, |service| service.versions().query(version)),
            None => 0,
        }
    }

    pub(crate) fn state_read(&self) -> RwLockReadGuard<'_, GuestState> {
        self.state.read()
    }

    /// The state for exclusive use, or `BUSY` if another vCPU holds it.
    pub(crate) fn state_try_write(&self) -> Result<RwLockWriteGuard<'_, GuestState>, SvsmError> {
        self.state.try_write().ok_or(SvsmError::Busy)
    }

    pub(crate) fn read_vmsa_u64(&self, vmsa: &VmsaPage, offset: u64) -> Result<u64, SvsmError> {
        let mut bytes = [0u8; 8];
        self.platform
            .read_vmsa(vmsa, offset, &mut bytes)
            .map_err(|_| SvsmError::Address(AddressError::Inaccessible))?;
        Ok(u64::from_le_bytes(bytes))
    }

    pub(crate) fn write_vmsa_u64(
        &self,
        vmsa: &VmsaPage,
        offset: u64,
        value: u64,
    ) -> Result<(), SvsmError> {
        self.platform
            .write_vmsa(vmsa, offset, &value.to_le_bytes())
            .map_err(|_| SvsmError::Address(AddressError::Inaccessible))
    }
}

/// The guest-visible code of a failed call (out of line: the error path).
#[cold]
#[inline(never)]
fn call_failed(apic_id: u32, rax: u64, e: SvsmError) -> SvsmResultCode {
    log::debug!("vCPU {apic_id}: call {rax:#x} failed: {e}");
    e.into()
}

#[cold]
#[inline(never)]
fn vmsa_gone(apic_id: u32, code: SvsmResultCode) {
    log::warn!("vCPU {apic_id}: VMSA gone during the call; result {code} dropped");
}

#[cold]
#[inline(never)]
fn vmsa_unwritable(apic_id: u32, e: MemoryError) {
    log::warn!("vCPU {apic_id}: cannot write the VMSA: {e:?}");
}
