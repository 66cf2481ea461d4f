//! A guest-side SVSM driver that issues calls the way Linux and OVMF do.
//!
//! It knows only what a guest knows: the boot calling area (from the secrets page), the
//! calling areas it set up itself, and the result codes it reads back. The call
//! convention is the one both guests implement: `call_pending = 1`, registers, VMGEXIT,
//! `xchg(call_pending, 0)`, retry INCOMPLETE and BUSY with identical registers.
//!
//! The PVALIDATE strategies follow the two guests:
//! - [`GuestDriver::pvalidate_linux`]: Linux's `svsm_pval_pages` (arch/x86/coco/sev):
//!   page-state-change descriptors of up to 253 entries (2 MiB where aligned), copied
//!   into the calling-area buffer in batches of up to 510; on
//!   `PVALIDATE_FAIL_SIZEMISMATCH` for a 2 MiB entry at `next`, remember it, step `next`
//!   past it and call again; afterwards validate each remembered 2 MiB range as 512
//!   4 KiB entries;
//! - [`GuestDriver::pvalidate_ovmf`]: edk2's `AmdSvsmLib` `SvsmPvalidate`: batches of
//!   up to 510 entries; on SIZEMISMATCH for a 2 MiB entry, rebuild the list as that
//!   range's 512 4 KiB entries, then resume with the entries after it.

use std::collections::HashMap;
use std::sync::Mutex;

use svsm::platform::{Vmpl, PAGE_SIZE, PAGE_SIZE_2M};
use svsm::requests::{vmsa, CallRegisters};
use svsm_emulated::{CallReturn, EmulatedSystem, GuestFault};
use svsm_protocol::call::{Call, CoreCall};
use svsm_protocol::calling_area::BUFFER_OFFSET;
use svsm_protocol::core::{encode_list, PageSize, PvalidateEntry, PVALIDATE_MAX_ENTRIES};
use svsm_protocol::SvsmResultCode;

/// Entries in one Linux page-state-change descriptor (`VMGEXIT_PSC_MAX_ENTRY`).
pub const LINUX_PSC_MAX_ENTRIES: usize = 253;

/// How many times a BUSY/INCOMPLETE call is retried before the driver gives up.
pub const MAX_RETRIES: usize = 10_000;

/// Why a guest-side operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverError {
    /// The guest's own memory access or VMGEXIT faulted.
    Guest(GuestFault),
    /// The call was never serviced (`call_pending` still 1): guests terminate.
    NotServiced,
    /// The SVSM returned an error (Linux and OVMF terminate on most of these).
    Svsm(SvsmResultCode),
    /// BUSY/INCOMPLETE did not end.
    RetriesExhausted,
    /// The request could not be built (e.g. an unaligned range).
    BadRequest,
}

impl From<GuestFault> for DriverError {
    fn from(e: GuestFault) -> Self {
        DriverError::Guest(e)
    }
}

/// The guest whose SVSM client code the driver imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// Linux (`arch/x86/coco/sev`).
    Linux,
    /// OVMF (`OvmfPkg/Library/AmdSvsmLib`).
    Ovmf,
}

/// The guest side of an emulated system.
#[derive(Debug)]
pub struct GuestDriver<'a> {
    system: &'a EmulatedSystem,
    calling_areas: Mutex<HashMap<u32, u64>>,
    guest_vmpl: Vmpl,
    sev_features: u64,
}

/// A PVALIDATE request as the guest lists it: address, 2 MiB or not, validate or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Guest physical address (aligned to the size).
    pub gpa: u64,
    /// A 2 MiB entry.
    pub huge: bool,
    /// Validate (true) or rescind.
    pub validate: bool,
}

impl PageRequest {
    fn entry(self) -> Result<PvalidateEntry, DriverError> {
        let size = if self.huge {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        PvalidateEntry::new(self.gpa, size, self.validate, false)
            .map_err(|_| DriverError::BadRequest)
    }
}

/// Splits `[start, end)` into entries the way Linux's `__set_pages_state` does: 2 MiB
/// where the address is 2 MiB aligned and a whole 2 MiB remains, 4 KiB elsewhere.
pub fn linux_entries(start: u64, end: u64, validate: bool) -> Vec<PageRequest> {
    let mut out = Vec::new();
    let mut addr = start;
    while addr < end {
        let huge = addr % PAGE_SIZE_2M == 0 && end - addr >= PAGE_SIZE_2M;
        out.push(PageRequest {
            gpa: addr,
            huge,
            validate,
        });
        addr += if huge { PAGE_SIZE_2M } else { PAGE_SIZE };
    }
    out
}

impl<'a> GuestDriver<'a> {
    /// The guest of `system`: the boot vCPU uses the boot calling area from the secrets
    /// page.
    pub fn new(system: &'a EmulatedSystem) -> Self {
        let info = system.info();
        let mut cas = HashMap::new();
        cas.insert(info.bsp(), info.config.boot_ca);
        Self {
            system,
            calling_areas: Mutex::new(cas),
            guest_vmpl: info.config.guest_vmpl,
            sev_features: info.config.sev_features,
        }
    }

    /// The system.
    pub fn system(&self) -> &'a EmulatedSystem {
        self.system
    }

    /// The calling area vCPU `apic_id` uses.
    pub fn calling_area(&self, apic_id: u32) -> Option<u64> {
        self.lock_cas().get(&apic_id).copied()
    }

    /// Tells the driver that vCPU `apic_id` uses the calling area at `ca` (state a
    /// guest already set up).
    pub fn adopt_calling_area(&self, apic_id: u32, ca: u64) {
        self.lock_cas().insert(apic_id, ca);
    }

    fn lock_cas(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u64>> {
        self.calling_areas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One attempt of a call, no retry.
    pub fn call_once(&self, apic_id: u32, regs: &CallRegisters) -> Result<CallReturn, DriverError> {
        let ca = self
            .calling_area(apic_id)
            .ok_or(DriverError::Guest(GuestFault::BadVcpu))?;
        let ret = self.system.call(apic_id, ca, regs)?;
        if ret.pending != 0 {
            return Err(DriverError::NotServiced);
        }
        Ok(ret)
    }

    /// A call as Linux's `svsm_perform_call_protocol` and OVMF's `SvsmMsrProtocol` make
    /// it: retried with identical registers while the answer is BUSY or INCOMPLETE.
    /// Returns the final registers (RAX = result code).
    pub fn call(&self, apic_id: u32, regs: &CallRegisters) -> Result<CallRegisters, DriverError> {
        for _ in 0..MAX_RETRIES {
            let ret = self.call_once(apic_id, regs)?;
            let code = SvsmResultCode::from_raw(ret.regs.rax);
            if code != SvsmResultCode::BUSY && code != SvsmResultCode::INCOMPLETE {
                return Ok(ret.regs);
            }
        }
        Err(DriverError::RetriesExhausted)
    }

    /// A call that must succeed.
    pub fn call_ok(
        &self,
        apic_id: u32,
        regs: &CallRegisters,
    ) -> Result<CallRegisters, DriverError> {
        let out = self.call(apic_id, regs)?;
        match SvsmResultCode::from_raw(out.rax) {
            SvsmResultCode::SUCCESS => Ok(out),
            code => Err(DriverError::Svsm(code)),
        }
    }

    /// Registers for a core call.
    pub fn core_regs(call: CoreCall, rcx: u64, rdx: u64, r8: u64) -> CallRegisters {
        CallRegisters {
            rax: Call::Core(call).to_rax(),
            rcx,
            rdx,
            r8,
            r9: 0,
        }
    }

    /// SVSM_CORE_QUERY_PROTOCOL: the RCX answer.
    pub fn query_protocol(
        &self,
        apic_id: u32,
        protocol: u32,
        version: u32,
    ) -> Result<u64, DriverError> {
        let rcx = (u64::from(protocol) << 32) | u64::from(version);
        let out = self.call_ok(
            apic_id,
            &Self::core_regs(CoreCall::QueryProtocol, rcx, 0, 0),
        )?;
        Ok(out.rcx)
    }

    /// SVSM_CORE_REMAP_CA to `new_ca` (a page the guest owns), as Linux does when it
    /// moves from the boot calling area to its per-CPU one. The new area is zeroed
    /// first, as Linux allocates it zeroed.
    pub fn remap_ca(&self, apic_id: u32, new_ca: u64) -> Result<(), DriverError> {
        self.system
            .machine()
            .guest_write(new_ca, &[0u8; PAGE_SIZE as usize])?;
        self.call_ok(apic_id, &Self::core_regs(CoreCall::RemapCa, new_ca, 0, 0))?;
        self.lock_cas().insert(apic_id, new_ca);
        Ok(())
    }

    /// Writes a PVALIDATE list into the calling area's buffer and calls PVALIDATE once
    /// (with BUSY/INCOMPLETE retries). Returns the result code and the list's `next`.
    pub fn pvalidate_list(
        &self,
        apic_id: u32,
        entries: &[PvalidateEntry],
        next: u16,
    ) -> Result<(SvsmResultCode, u16), DriverError> {
        let ca = self
            .calling_area(apic_id)
            .ok_or(DriverError::Guest(GuestFault::BadVcpu))?;
        let list_gpa = ca + BUFFER_OFFSET as u64;
        let mut buf = vec![0u8; PAGE_SIZE as usize - BUFFER_OFFSET];
        encode_list(entries, next, &mut buf).map_err(|_| DriverError::BadRequest)?;
        self.system.machine().guest_write(list_gpa, &buf)?;
        let out = self.call(
            apic_id,
            &Self::core_regs(CoreCall::Pvalidate, list_gpa, 0, 0),
        )?;
        let mut header = [0u8; 4];
        self.system.machine().guest_read(list_gpa, &mut header)?;
        Ok((
            SvsmResultCode::from_raw(out.rax),
            u16::from_le_bytes([header[2], header[3]]),
        ))
    }

    /// Validates or rescinds `[start, end)` as Linux does (see the module docs).
    pub fn pvalidate_linux(
        &self,
        apic_id: u32,
        start: u64,
        end: u64,
        validate: bool,
    ) -> Result<(), DriverError> {
        let all = linux_entries(start, end, validate);
        for desc in all.chunks(LINUX_PSC_MAX_ENTRIES) {
            self.linux_pval_pages(apic_id, desc)?;
        }
        Ok(())
    }

    /// Linux's `svsm_pval_pages` for one descriptor.
    fn linux_pval_pages(&self, apic_id: u32, desc: &[PageRequest]) -> Result<(), DriverError> {
        let mut fallback = Vec::new();
        for batch in desc.chunks(PVALIDATE_MAX_ENTRIES) {
            let entries = batch
                .iter()
                .map(|r| r.entry())
                .collect::<Result<Vec<_>, _>>()?;
            let mut next = 0u16;
            loop {
                let (code, reported) = self.pvalidate_list(apic_id, &entries, next)?;
                if code == SvsmResultCode::SUCCESS {
                    break;
                }
                let failed = entries.get(usize::from(reported)).copied();
                match failed {
                    Some(e)
                        if code == SvsmResultCode::PVALIDATE_FAIL_SIZEMISMATCH
                            && e.page_size() == PageSize::Size2M =>
                    {
                        fallback.push(e);
                        next = reported + 1;
                        if usize::from(next) >= entries.len() {
                            break;
                        }
                    }
                    _ => return Err(DriverError::Svsm(code)),
                }
            }
        }
        for e in fallback {
            let small: Vec<PvalidateEntry> = (0..512u64)
                .map(|i| {
                    PvalidateEntry::new(
                        e.gpa() + i * PAGE_SIZE,
                        PageSize::Size4K,
                        e.validate(),
                        false,
                    )
                })
                .collect::<Result<_, _>>()
                .map_err(|_| DriverError::BadRequest)?;
            for batch in small.chunks(PVALIDATE_MAX_ENTRIES) {
                let (code, _) = self.pvalidate_list(apic_id, batch, 0)?;
                if code != SvsmResultCode::SUCCESS {
                    return Err(DriverError::Svsm(code));
                }
            }
        }
        Ok(())
    }

    /// Validates or rescinds the listed pages as OVMF does (see the module docs).
    pub fn pvalidate_ovmf(&self, apic_id: u32, pages: &[PageRequest]) -> Result<(), DriverError> {
        let mut index = 0;
        while index < pages.len() {
            let batch_end = (index + PVALIDATE_MAX_ENTRIES).min(pages.len());
            let batch = pages.get(index..batch_end).ok_or(DriverError::BadRequest)?;
            let entries = batch
                .iter()
                .map(|r| r.entry())
                .collect::<Result<Vec<_>, _>>()?;
            let (code, next) = self.pvalidate_list(apic_id, &entries, 0)?;
            match entries.get(usize::from(next)) {
                Some(e)
                    if code == SvsmResultCode::PVALIDATE_FAIL_SIZEMISMATCH
                        && e.page_size() == PageSize::Size2M =>
                {
                    let small: Vec<PvalidateEntry> = (0..512u64)
                        .map(|i| {
                            PvalidateEntry::new(
                                e.gpa() + i * PAGE_SIZE,
                                PageSize::Size4K,
                                e.validate(),
                                false,
                            )
                        })
                        .collect::<Result<_, _>>()
                        .map_err(|_| DriverError::BadRequest)?;
                    for chunk in small.chunks(PVALIDATE_MAX_ENTRIES) {
                        let (code, _) = self.pvalidate_list(apic_id, chunk, 0)?;
                        if code != SvsmResultCode::SUCCESS {
                            return Err(DriverError::Svsm(code));
                        }
                    }
                    index += usize::from(next) + 1;
                }
                _ if code == SvsmResultCode::SUCCESS => index = batch_end,
                _ => return Err(DriverError::Svsm(code)),
            }
        }
        Ok(())
    }

    /// Fills a guest page as a VMSA for an AP at the guest VMPL: VMPL field, EFER with
    /// SVME, the guest's SEV features, an exit code that is not VMGEXIT.
    pub fn prepare_vmsa(&self, vmsa_gpa: u64) -> Result<(), DriverError> {
        let mut page = vec![0u8; PAGE_SIZE as usize];
        let put = |page: &mut Vec<u8>, offset: u64, bytes: &[u8]| {
            let start = offset as usize;
            page[start..start + bytes.len()].copy_from_slice(bytes);
        };
        put(&mut page, vmsa::VMPL, &[self.guest_vmpl.level()]);
        put(
            &mut page,
            vmsa::EFER,
            &(vmsa::EFER_SVME | 0xD00).to_le_bytes(),
        );
        put(
            &mut page,
            vmsa::SEV_FEATURES,
            &self.sev_features.to_le_bytes(),
        );
        self.system.machine().guest_write(vmsa_gpa, &page)?;
        Ok(())
    }

    /// Brings up an AP the way the guest kind does: prepare its VMSA, CREATE_VCPU
    /// (Linux: the AP's own calling area; OVMF: the page after the VMSA), then ask the
    /// hypervisor to start it. `caller` is the vCPU making the call.
    pub fn start_ap(
        &self,
        kind: GuestKind,
        caller: u32,
        apic_id: u32,
        vmsa_gpa: u64,
        linux_ca: u64,
    ) -> Result<(), DriverError> {
        let ca = match kind {
            GuestKind::Linux => linux_ca,
            GuestKind::Ovmf => vmsa_gpa + PAGE_SIZE,
        };
        self.prepare_vmsa(vmsa_gpa)?;
        self.system
            .machine()
            .guest_write(ca, &[0u8; PAGE_SIZE as usize])?;
        self.call_ok(
            caller,
            &Self::core_regs(CoreCall::CreateVcpu, vmsa_gpa, ca, u64::from(apic_id)),
        )?;
        self.system
            .machine()
            .hv_ap_create(apic_id, self.guest_vmpl, vmsa_gpa)?;
        self.lock_cas().insert(apic_id, ca);
        Ok(())
    }

    /// Takes an AP down as Linux does: the hypervisor stops it (AP destroy), then
    /// DELETE_VCPU gives the VMSA page back.
    pub fn stop_ap(&self, caller: u32, apic_id: u32, vmsa_gpa: u64) -> Result<(), DriverError> {
        self.system.machine().hv_ap_destroy(apic_id)?;
        self.call_ok(
            caller,
            &Self::core_regs(CoreCall::DeleteVcpu, vmsa_gpa, 0, 0),
        )?;
        self.lock_cas().remove(&apic_id);
        Ok(())
    }
}
