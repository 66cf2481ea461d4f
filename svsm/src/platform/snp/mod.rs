//! [`SnpPlatform`]: the [`Platform`] of the bare-metal kernel on SEV-SNP hardware.
//!
//! PVALIDATE and RMPADJUST are the instructions in [`crate::arch::snp`]; run VMPL, AP
//! creation and guest requests go through [`HvClient`] over the vCPU's GHCB
//! ([`ArchGhcb`]), the same client the emulated machine's tests drive. Guest memory and
//! VMSA pages are reached through the kernel's private (C-bit) mapping of physical
//! memory at `phys + map_offset`; the caller of [`SnpPlatform::new`] vouches for that
//! mapping. Every access to them goes through the guarded copies of
//! [`crate::arch::guest_copy`]: a page the guest or the host made invalid or shared
//! under the SVSM ends the access with a [`MemoryError`], not the SVSM. Each SVSM vCPU
//! uses its own GHCB (`runtime::vcpus`); an RMPADJUST that reduces a lower VMPL's
//! access is followed by a TLB shootdown on every vCPU.
//!
//! [`runtime`] holds the kernel's SEV-SNP state and the hooks its boot path calls.
#![allow(
    unsafe_code,
    reason = "guest memory through the kernel's private mapping"
)]

use spin::Mutex;

use crate::address::{CheckedRange, PhysAddr, VmsaPage};
use crate::arch::guest_copy;
use crate::arch::snp::ghcb::ArchGhcb;
use crate::arch::snp::{pvalidate, rmpadjust};
use crate::platform::{
    HypervisorError, MemoryError, MessagePage, PageSize, Platform, PspError, PvalidateError,
    RmpPermissions, RmpadjustError, Validation, Vmpl, PAGE_SIZE,
};
use crate::snp::hypervisor::HvClient;

/// Two shared pages for PSP guest messages.
#[derive(Debug)]
pub struct MessagePages {
    /// Request page: VA (no C-bit) and GPA.
    pub request: (usize, u64),
    /// Response page: VA (no C-bit) and GPA.
    pub response: (usize, u64),
}

/// The platform of the kernel on SEV-SNP hardware.
#[derive(Debug)]
pub struct SnpPlatform {
    hv: &'static HvClient<ArchGhcb>,
    map_offset: u64,
    guest_vmpl: Vmpl,
    messages: Mutex<Option<MessagePages>>,
}

impl SnpPlatform {
    /// The platform over the client of the registered GHCB, with physical memory
    /// mapped private at `phys + map_offset`.
    ///
    /// # Safety
    ///
    /// Every physical address the SVSM's checks let through (guest RAM, SVSM memory)
    /// must be mapped with the C-bit at `phys + map_offset`, and nothing else may hold
    /// references into guest memory.
    pub unsafe fn new(hv: &'static HvClient<ArchGhcb>, map_offset: u64, guest_vmpl: Vmpl) -> Self {
        Self {
            hv,
            map_offset,
            guest_vmpl,
            messages: Mutex::new(None),
        }
    }

    /// The hypervisor client of the vCPU running this (each SVSM vCPU has its own
    /// GHCB; the hypervisor accepts a GHCB only from the vCPU that registered it).
    pub fn hypervisor(&self) -> &HvClient<ArchGhcb> {
        #[cfg(target_os = "none")]
        if let Some(hv) = runtime::vcpus::current_hv() {
            return hv;
        }
        self.hv
    }

    /// Hands the platform the two shared pages guest requests use (after the caller
    /// rescinded their validation and made them shared).
    pub fn set_message_pages(&self, pages: MessagePages) {
        *self.messages.lock() = Some(pages);
    }

    fn va(&self, phys: u64) -> usize {
        phys.wrapping_add(self.map_offset) as usize
    }

    fn copy_out(&self, phys: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        // SAFETY: `new`'s contract maps `phys` privately, for guest memory only; the
        // callers checked the range (CheckedRange, VmsaPage) and `buf` is SVSM memory
        // distinct from it. A page the guest or host made unusable faults, and the
        // guarded copy returns that as an error.
        unsafe { guest_copy::read(self.va(phys) as *const u8, buf) }
    }

    fn copy_in(&self, phys: u64, data: &[u8]) -> Result<(), MemoryError> {
        // SAFETY: as for `copy_out`.
        unsafe { guest_copy::write(self.va(phys) as *mut u8, data) }
    }
}

fn sub_range(start: u64, len: u64, offset: u64, size: usize) -> Result<u64, MemoryError> {
    let end = offset
        .checked_add(size as u64)
        .ok_or(MemoryError::OutOfRange)?;
    if end > len {
        return Err(MemoryError::OutOfRange);
    }
    Ok(start + offset)
}

fn hv_error(e: crate::snp::SnpError) -> HypervisorError {
    e.into()
}

impl Platform for SnpPlatform {
    fn pvalidate(
        &self,
        addr: PhysAddr,
        size: PageSize,
        validate: bool,
    ) -> Result<Validation, PvalidateError> {
        // SAFETY: PVALIDATE (AMD APM vol. 3 "PVALIDATE"; the SVSM runs at VMPL0, where
        // it is allowed) changes only the RMP entry of the page at this VA. The caller
        // (address checks, launch plan) chose a guest page outside SVSM memory, mapped
        // privately per `new`'s contract, so no SVSM data loses its validation.
        unsafe { pvalidate::pvalidate(self.va(addr.raw()) as u64, size, validate) }
    }

    fn rmpadjust(
        &self,
        addr: PhysAddr,
        size: PageSize,
        target: Vmpl,
        perms: RmpPermissions,
        vmsa: bool,
    ) -> Result<(), RmpadjustError> {
        // SAFETY: RMPADJUST (AMD APM vol. 3 "RMPADJUST") changes only a lower VMPL's
        // permissions in this page's RMP entry; the page is chosen and mapped as for
        // `pvalidate`, and the request path never grants SVSM pages.
        unsafe { rmpadjust::rmpadjust(self.va(addr.raw()) as u64, size, target, perms, vmsa) }?;
        // Less access for a lower VMPL (or a page turned VMSA): no vCPU may keep a
        // cached translation that still allows the old access. The guest's
        // translations of the page are at guest virtual addresses the SVSM does not
        // know, so the whole TLB is flushed on every vCPU (INVLPGB/TLBSYNC for the
        // guest's ASID where CPUID reports them, as COCONUT-SVSM does after revoking
        // guest access; else an IPI to every SVSM vCPU), once the call is done and
        // before the guest runs again (`runtime::vcpus::between_calls`).
        #[cfg(target_os = "none")]
        if vmsa || perms != RmpPermissions::RWX {
            runtime::vcpus::request_flush();
        }
        Ok(())
    }

    fn read_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), MemoryError> {
        let addr = sub_range(range.start().raw(), range.len(), offset, buf.len())?;
        self.copy_out(addr, buf)
    }

    fn write_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        data: &[u8],
    ) -> Result<(), MemoryError> {
        if !range.is_writable_ram() {
            return Err(MemoryError::ReadOnly);
        }
        let addr = sub_range(range.start().raw(), range.len(), offset, data.len())?;
        self.copy_in(addr, data)
    }

    fn zero_guest(&self, range: &CheckedRange) -> Result<(), MemoryError> {
        if !range.is_writable_ram() {
            return Err(MemoryError::ReadOnly);
        }
        let len = usize::try_from(range.len()).map_err(|_| MemoryError::OutOfRange)?;
        // SAFETY: as for `copy_in`; the range was checked to be guest RAM.
        unsafe { guest_copy::zero(self.va(range.start().raw()) as *mut u8, len) }
    }

    fn read_vmsa(&self, vmsa: &VmsaPage, offset: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let addr = sub_range(vmsa.addr().raw(), PAGE_SIZE, offset, buf.len())?;
        self.copy_out(addr, buf)
    }

    fn write_vmsa(&self, vmsa: &VmsaPage, offset: u64, data: &[u8]) -> Result<(), MemoryError> {
        let addr = sub_range(vmsa.addr().raw(), PAGE_SIZE, offset, data.len())?;
        self.copy_in(addr, data)
    }

    fn vmsa_running(&self, _vmsa: &VmsaPage) -> bool {
        // SNP gives VMPL0 no view of whether the hypervisor is executing a VMSA right
        // now; DELETE_VCPU clears EFER.SVME first, after which the hardware refuses to
        // enter it, and its RMPADJUST of a VMSA still running fails with FAIL_INUSE,
        // which the guest gets as BUSY and retries.
        false
    }

    fn create_ap(
        &self,
        apic_id: u32,
        vmpl: Vmpl,
        vmsa: PhysAddr,
        sev_features: u64,
    ) -> Result<(), HypervisorError> {
        self.hypervisor()
            .create_ap(apic_id, vmpl, vmsa.raw(), sev_features)
            .map_err(hv_error)
    }

    fn run_guest(&self, _apic_id: u32) -> Result<(), HypervisorError> {
        // The run-VMPL request acts on the vCPU that issues it (GHCB spec §2.3.1).
        self.hypervisor()
            .run_vmpl(self.guest_vmpl)
            .map_err(hv_error)
    }

    fn guest_request(&self, request: &MessagePage) -> Result<MessagePage, PspError> {
        let messages = self.messages.lock();
        let pages = messages.as_ref().ok_or(PspError::Unavailable)?;
        // SAFETY: the message pages are shared pages set aside for this use
        // (`set_message_pages`), 4 KiB each, mapped at these VAs. The host could make
        // them fault (e.g. by mapping them as MMIO): the guarded copy reports that.
        unsafe { guest_copy::write(pages.request.0 as *mut u8, request) }
            .map_err(|_| PspError::Hypervisor(u32::MAX))?;
        self.hypervisor()
            .guest_request(pages.request.1, pages.response.1)?;
        let mut response = [0u8; PAGE_SIZE as usize];
        // SAFETY: as above; the response is copied out before anyone parses it.
        unsafe { guest_copy::read(pages.response.0 as *const u8, &mut response) }
            .map_err(|_| PspError::Hypervisor(u32::MAX))?;
        Ok(response)
    }
}

/// The kernel's SEV-SNP state and the hooks its boot path calls. Global, because the
/// #VC handler and port I/O have no other way to reach the GHCB; written once by
/// [`runtime::early_init`], read-only afterwards.
#[cfg(target_os = "none")]
pub mod runtime;
