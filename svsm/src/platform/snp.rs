//! [`SnpPlatform`]: the [`Platform`] of the bare-metal kernel on SEV-SNP hardware.
//!
//! PVALIDATE and RMPADJUST are the instructions in [`crate::arch::snp`]; run VMPL, AP
//! creation and guest requests go through [`HvClient`] over the vCPU's GHCB
//! ([`ArchGhcb`]), the same client the emulated machine's tests drive. Guest memory and
//! VMSA pages are reached through the kernel's private (C-bit) mapping of physical
//! memory at `phys + map_offset`; the caller of [`SnpPlatform::new`] vouches for that
//! mapping. Only the boot vCPU's GHCB is used so far.
//!
//! [`runtime`] holds the kernel's SEV-SNP state and the hooks its boot path calls.
#![allow(
    unsafe_code,
    reason = "guest memory through the kernel's private mapping"
)]

use spin::Mutex;

use crate::address::{CheckedRange, PhysAddr, VmsaPage};
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

    /// The hypervisor client.
    pub fn hypervisor(&self) -> &HvClient<ArchGhcb> {
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

    fn copy_out(&self, phys: u64, buf: &mut [u8]) {
        // SAFETY: `new`'s contract maps `phys` privately; the callers checked the range
        // (CheckedRange, VmsaPage) and `buf` is SVSM memory distinct from it.
        unsafe {
            core::ptr::copy_nonoverlapping(self.va(phys) as *const u8, buf.as_mut_ptr(), buf.len())
        }
    }

    fn copy_in(&self, phys: u64, data: &[u8]) {
        // SAFETY: as for `copy_out`.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.va(phys) as *mut u8, data.len())
        }
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
        // SAFETY: the caller (address checks, launch plan) chose a guest page outside SVSM
        // memory; it is mapped privately per `new`'s contract.
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
        // SAFETY: as for `pvalidate`; the request path never grants SVSM pages.
        unsafe { rmpadjust::rmpadjust(self.va(addr.raw()) as u64, size, target, perms, vmsa) }
    }

    fn read_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), MemoryError> {
        let addr = sub_range(range.start().raw(), range.len(), offset, buf.len())?;
        self.copy_out(addr, buf);
        Ok(())
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
        self.copy_in(addr, data);
        Ok(())
    }

    fn zero_guest(&self, range: &CheckedRange) -> Result<(), MemoryError> {
        if !range.is_writable_ram() {
            return Err(MemoryError::ReadOnly);
        }
        let zeros = [0u8; PAGE_SIZE as usize];
        let mut done = 0;
        while done < range.len() {
            let n = (range.len() - done).min(PAGE_SIZE);
            self.copy_in(range.start().raw() + done, &zeros[..n as usize]);
            done += n;
        }
        Ok(())
    }

    fn read_vmsa(&self, vmsa: &VmsaPage, offset: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let addr = sub_range(vmsa.addr().raw(), PAGE_SIZE, offset, buf.len())?;
        self.copy_out(addr, buf);
        Ok(())
    }

    fn write_vmsa(&self, vmsa: &VmsaPage, offset: u64, data: &[u8]) -> Result<(), MemoryError> {
        let addr = sub_range(vmsa.addr().raw(), PAGE_SIZE, offset, data.len())?;
        self.copy_in(addr, data);
        Ok(())
    }

    fn vmsa_running(&self, _vmsa: &VmsaPage) -> bool {
        // SNP gives VMPL0 no view of whether the hypervisor is executing a VMSA right
        // now; the request loop clears EFER.SVME first, after which the hardware refuses
        // to enter it.
        false
    }

    fn create_ap(
        &self,
        apic_id: u32,
        vmpl: Vmpl,
        vmsa: PhysAddr,
        sev_features: u64,
    ) -> Result<(), HypervisorError> {
        self.hv
            .create_ap(apic_id, vmpl, vmsa.raw(), sev_features)
            .map_err(hv_error)
    }

    fn run_guest(&self, _apic_id: u32) -> Result<(), HypervisorError> {
        // The run-VMPL request acts on the vCPU that issues it (GHCB spec §2.3.1).
        self.hv.run_vmpl(self.guest_vmpl).map_err(hv_error)
    }

    fn guest_request(&self, request: &MessagePage) -> Result<MessagePage, PspError> {
        let messages = self.messages.lock();
        let pages = messages.as_ref().ok_or(PspError::Unavailable)?;
        // SAFETY: the message pages are shared pages set aside for this use
        // (`set_message_pages`), 4 KiB each, mapped at these VAs.
        unsafe {
            core::ptr::copy_nonoverlapping(
                request.as_ptr(),
                pages.request.0 as *mut u8,
                request.len(),
            )
        };
        self.hv.guest_request(pages.request.1, pages.response.1)?;
        let mut response = [0u8; PAGE_SIZE as usize];
        // SAFETY: as above; the response is copied out before anyone parses it.
        unsafe {
            core::ptr::copy_nonoverlapping(
                pages.response.0 as *const u8,
                response.as_mut_ptr(),
                response.len(),
            )
        };
        Ok(response)
    }
}

/// The kernel's SEV-SNP state and the hooks its boot path calls. Global, because the
/// #VC handler and port I/O have no other way to reach the GHCB; written once by
/// [`runtime::early_init`], read-only afterwards.
#[cfg(target_os = "none")]
pub mod runtime {
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicBool, Ordering};

    use spin::Once;
    use svsm_protocol::ghcb::PageState;
    use svsm_protocol::igvm_params::{IgvmParamBlock, MEMORY_MAP_TYPE_MEMORY, PARAM_FLAG_FIRMWARE};
    use svsm_protocol::vmsa::SevFeatures;
    use zerocopy::FromBytes;

    use super::SnpPlatform;
    use crate::address::{GuestRegion, MemoryKind, MemoryLayout};
    use crate::arch::interrupts::InterruptFrame;
    use crate::arch::snp::early;
    use crate::arch::snp::ghcb::ArchGhcb;
    use crate::arch::snp::msr::read_sev_status;
    use crate::arch::snp::pvalidate::pvalidate;
    use crate::platform::{PageSize, PvalidateError, Vmpl, PAGE_SIZE, PAGE_SIZE_2M};
    use crate::requests::{Services, Svsm, SvsmConfig};
    use crate::snp::boot::{self, SnpStart};
    use crate::snp::guest_vmsa::{guest_sev_features, RESET_VECTOR};
    use crate::snp::hypervisor::{HvClient, IoSize};
    use crate::snp::launch::{launch_guest, GuestLaunch};
    use crate::snp::secrets::SvsmSecrets;
    use crate::snp::vc::VcRegisters;
    use crate::snp::vector::{
        classify, handle_vector, InterruptConfig, VectorAction, VectorOutcome,
    };
    use crate::snp::{SnpError, TerminateReason};

    /// What the kernel knows about SEV-SNP once the GHCB works.
    #[derive(Debug)]
    pub struct SnpRuntime {
        hv: HvClient<ArchGhcb>,
        start: SnpStart,
        param_block: u64,
        interrupts: InterruptConfig,
    }

    impl SnpRuntime {
        /// The hypervisor client on the boot vCPU's GHCB.
        pub fn hypervisor(&self) -> &HvClient<ArchGhcb> {
            &self.hv
        }
    }

    static RUNTIME: Once<SnpRuntime> = Once::new();
    /// Set once a fatal error is being reported; port I/O is dropped from then on.
    static FAILING: AtomicBool = AtomicBool::new(false);

    /// The runtime, once [`early_init`] set it up (only under SEV-SNP).
    pub fn get() -> Option<&'static SnpRuntime> {
        RUNTIME.get()
    }

    /// Stops the VM with `error`'s reason: a termination request, then halt forever.
    pub fn fail(_hv: &HvClient<ArchGhcb>, error: &SnpError) -> ! {
        let reason: TerminateReason = error.termination_reason();
        // Log once: if the console itself (port I/O through the GHCB) is what failed,
        // logging again would recurse.
        if !FAILING.swap(true, Ordering::SeqCst) {
            log::error!(
                "snp: fatal: {error}; terminating (reason set {}, code {})",
                reason.set,
                reason.code
            );
        }
        // Straight to the MSR, past the GHCB's lock: the failure may have struck while
        // this vCPU held it (a #VC inside a GHCB call).
        let request = svsm_protocol::ghcb::MsrRequest::Terminate {
            set: reason.set,
            code: reason.code,
        }
        .encode();
        // SAFETY: an SEV-SNP guest (the runtime exists only then); the termination
        // request is the MSR protocol's (GHCB spec §2.3.1), and nothing runs afterwards.
        let _ = unsafe { crate::arch::snp::vmgexit::msr_protocol(request) };
        loop {
            x86_64::instructions::hlt();
        }
    }

    /// Reads `N` bytes at physical address `gpa` (identity mapped, private).
    fn read_phys<const N: usize>(gpa: u64) -> [u8; N] {
        let mut out = [0u8; N];
        // SAFETY: callers pass pages of the SVSM range the measured parameter block
        // names (the block itself, the CPUID and secrets pages), all identity mapped with
        // the C-bit by the entry.
        unsafe { core::ptr::copy_nonoverlapping(gpa as usize as *const u8, out.as_mut_ptr(), N) };
        out
    }

    /// The first SEV-SNP step of the kernel, before the console (whose port I/O goes
    /// through the GHCB): negotiate, read the CPUID page, set up the GHCB. Returns
    /// `false` (changing nothing) when the entry found no C-bit (not SEV-SNP).
    pub fn early_init(boot_info: u32) -> bool {
        if early::cbit().is_none() {
            return false;
        }
        let (ghcb_gpa, alias) = early::ghcb_addresses();
        // SAFETY: the entry mapped `alias` to the GHCB page without the C-bit and nothing
        // else uses it; this is an SEV-SNP guest (the entry found the C-bit).
        let hv = HvClient::new(unsafe { ArchGhcb::new(alias, ghcb_gpa) });
        let block = read_phys::<4096>(boot_info.into());
        let Ok((block, _)) = IgvmParamBlock::read_from_prefix(&block) else {
            fail(&hv, &SnpError::BootParams)
        };
        let cpuid = read_phys::<4096>(block.cpuid_gpa);
        let start = match boot::start(&hv, &cpuid) {
            Ok(start) => start,
            Err(e) => fail(&hv, &e),
        };
        // The GHCB: rescinded (through its private address), shared, registered.
        // SAFETY: the GHCB page is the entry's, unused so far; rescinding it only makes
        // its private mapping unusable, which nothing uses again.
        if let Err(e) = unsafe { pvalidate(ghcb_gpa, PageSize::Size4K, false) } {
            fail(&hv, &SnpError::Pvalidate(ghcb_gpa, e))
        }
        if let Err(e) = hv
            .page_state_change(ghcb_gpa / PAGE_SIZE, PageState::Shared)
            .and_then(|()| hv.register_ghcb(ghcb_gpa / PAGE_SIZE))
        {
            fail(&hv, &e)
        }
        // SAFETY: an SEV-SNP guest (the entry found the C-bit), where SEV_STATUS exists.
        let status = unsafe { read_sev_status() };
        let interrupts = InterruptConfig {
            restricted_injection: SevFeatures::from_sev_status(status)
                .contains(SevFeatures::RESTRICTED_INJECTION),
            expected: [None; 4],
        };
        RUNTIME.call_once(|| SnpRuntime {
            hv,
            start,
            param_block: boot_info.into(),
            interrupts,
        });
        true
    }

    /// Logs what [`early_init`] found (once the console works).
    pub fn report() {
        if let Some(rt) = get() {
            let h = &rt.start.hypervisor;
            log::info!(
                "snp: SEV-SNP guest; GHCB protocol {}..={} (using 2), hypervisor features {:#x}{}, C-bit {}",
                h.min_version,
                h.max_version,
                h.features.bits(),
                if h.multi_vmpl() { "" } else { " (no multi-VMPL bit: continuing)" },
                rt.start.cbit
            );
            log::info!(
                "snp: GHCB at {:#x} shared and registered",
                rt.hv.transport().gpa()
            );
        }
    }

    fn io_size(bytes: u8) -> IoSize {
        match bytes {
            1 => IoSize::Byte,
            2 => IoSize::Word,
            _ => IoSize::Dword,
        }
    }

    /// Port output under SEV-SNP (through the GHCB); `false` when not under SEV-SNP.
    pub fn port_out(port: u16, bytes: u8, value: u32) -> bool {
        let Some(rt) = get() else { return false };
        if FAILING.load(Ordering::SeqCst) {
            return true;
        }
        if let Err(e) = rt.hv.io_out(port, io_size(bytes), value.into()) {
            fail(&rt.hv, &e)
        }
        true
    }

    /// Port input under SEV-SNP (through the GHCB); `None` when not under SEV-SNP.
    pub fn port_in(port: u16, bytes: u8) -> Option<u32> {
        let rt = get()?;
        if FAILING.load(Ordering::SeqCst) {
            return Some(u32::MAX);
        }
        match rt.hv.io_in(port, io_size(bytes)) {
            Ok(value) => Some(value as u32),
            Err(e) => fail(&rt.hv, &e),
        }
    }

    /// Makes `[start, end)` of SVSM memory usable: private first when the host says
    /// memory outside the IGVM file starts shared (IGVM environment flag), then
    /// PVALIDATE, 2 MiB where aligned; pages the launch already validated are fine
    /// (CF = 1).
    pub fn validate_svsm_memory(start: u64, end: u64) {
        let Some(rt) = get() else { return };
        if boot_params(&rt.hv, rt.param_block).memory_is_shared() {
            for page in (start..end).step_by(PAGE_SIZE as usize) {
                if let Err(e) = rt
                    .hv
                    .page_state_change(page / PAGE_SIZE, PageState::Private)
                {
                    fail(&rt.hv, &e)
                }
            }
        }
        let mut addr = start;
        while addr < end {
            let size = if addr % PAGE_SIZE_2M == 0 && end - addr >= PAGE_SIZE_2M {
                PageSize::Size2M
            } else {
                PageSize::Size4K
            };
            // SAFETY: SVSM memory the parameter block hands the kernel; nothing uses it
            // yet (the heap is set up afterwards).
            match unsafe { pvalidate(addr, size, true) } {
                Ok(_) => addr += size.bytes(),
                Err(PvalidateError::FailSizeMismatch) if size == PageSize::Size2M => {
                    // 4 KiB RMP entries: validate page by page.
                    for page in (addr..addr + PAGE_SIZE_2M).step_by(PAGE_SIZE as usize) {
                        // SAFETY: as above.
                        if let Err(e) = unsafe { pvalidate(page, PageSize::Size4K, true) } {
                            fail(&rt.hv, &SnpError::Pvalidate(page, e))
                        }
                    }
                    addr += PAGE_SIZE_2M;
                }
                Err(e) => fail(&rt.hv, &SnpError::Pvalidate(addr, e)),
            }
        }
        log::info!("snp: SVSM memory {start:#x}..{end:#x} validated");
    }

    /// The hook at the top of the kernel's interrupt dispatcher: resolves #VC, stops on
    /// exceptions the SVSM cannot survive, leaves everything else to the kernel.
    /// Returns `true` when the vector was dealt with.
    pub fn handle_interrupt(frame: &mut InterruptFrame) -> bool {
        let Some(rt) = get() else { return false };
        let vector = (frame.vector & 0xFF) as u8;
        let config = rt.interrupts;
        match classify(vector, &config) {
            VectorAction::HandleVc => {}
            // Injected NMI, #DB, #BP, #HV or an external vector: nothing in the SVSM
            // raises them and under SEV-SNP it takes no interrupts of its own (its APIC
            // is not set up), so they are noise: no EOI, no fault.
            VectorAction::Spurious(v) => {
                log::warn!("snp: ignoring injected vector {v}");
                return true;
            }
            VectorAction::HvDoorbell => return true,
            VectorAction::Fatal(e) => {
                log::error!(
                    "snp: exception {vector} at rip {:#x}, error code {:#x}",
                    frame.rip,
                    frame.error_code
                );
                fail(&rt.hv, &e)
            }
            _ => return false,
        }
        let mut insn = [0u8; 15];
        // SAFETY: a #VC is raised by the SVSM's own code (CPUID, MSR, I/O): RIP points
        // into its identity-mapped, private text. 15 bytes is the longest instruction.
        unsafe {
            core::ptr::copy_nonoverlapping(
                frame.rip as usize as *const u8,
                insn.as_mut_ptr(),
                insn.len(),
            )
        };
        let mut regs = VcRegisters {
            rax: frame.rax,
            rbx: frame.rbx,
            rcx: frame.rcx,
            rdx: frame.rdx,
        };
        match handle_vector(
            vector,
            frame.error_code,
            &insn,
            &mut regs,
            &config,
            &rt.start.cpuid,
            &rt.hv,
        ) {
            Ok(VectorOutcome::Resumed(len)) => {
                frame.rax = regs.rax;
                frame.rbx = regs.rbx;
                frame.rcx = regs.rcx;
                frame.rdx = regs.rdx;
                frame.rip += len as u64;
                true
            }
            Ok(_) => true,
            Err(e) => {
                log::error!(
                    "snp: unhandled #VC {:#x} at rip {:#x}",
                    frame.error_code,
                    frame.rip
                );
                fail(&rt.hv, &e)
            }
        }
    }

    /// The guest's memory regions: the host's RAM without the SVSM range, and the
    /// firmware image.
    fn guest_regions(
        block: &IgvmParamBlock,
        params: &crate::boot_params::BootParams,
    ) -> Vec<GuestRegion> {
        let mut map = [svsm_protocol::igvm_params::MemoryMapEntry::default(); 64];
        let n = params.guest_memory_map(&mut map).unwrap_or(0);
        let mut regions: Vec<GuestRegion> = map
            .iter()
            .take(n)
            .filter(|e| e.entry_type == MEMORY_MAP_TYPE_MEMORY)
            .map(|e| GuestRegion {
                start: e.starting_gpa_page_number * PAGE_SIZE,
                end: (e.starting_gpa_page_number + e.number_of_pages) * PAGE_SIZE,
                kind: MemoryKind::Ram,
            })
            .collect();
        let image = block.firmware.image;
        if block.flags & PARAM_FLAG_FIRMWARE != 0
            && image.size != 0
            && !regions
                .iter()
                .any(|r| r.start < image.base + image.size && image.base < r.end)
        {
            regions.push(GuestRegion {
                start: image.base,
                end: image.base + image.size,
                kind: MemoryKind::Ram,
            });
        }
        regions
    }

    /// The boot parameters, read again from the measured block and the host's areas.
    fn boot_params(hv: &HvClient<ArchGhcb>, block_gpa: u64) -> crate::boot_params::BootParams {
        let page = read_phys::<4096>(block_gpa);
        let bad = SnpError::BootParams;
        let Ok(block) = crate::boot_params::parse_block(&page) else {
            fail(hv, &bad)
        };
        let area = |r: svsm_protocol::igvm_params::MemoryRange| -> &[u8] {
            if r.size == 0 {
                return &[];
            }
            // SAFETY: `parse_block` checked that every area lies inside the SVSM range
            // below 4 GiB, identity mapped with the C-bit.
            unsafe { core::slice::from_raw_parts(r.base as usize as *const u8, r.size as usize) }
        };
        let param_page = svsm_protocol::igvm_params::MemoryRange {
            base: block.param_page_gpa,
            size: PAGE_SIZE,
        };
        match crate::boot_params::BootParams::new(
            block,
            area(param_page),
            area(block.memory_map),
            area(block.madt),
        ) {
            Ok(params) => params,
            Err(_) => fail(hv, &bad),
        }
    }

    /// Launches the guest and runs the request loop on the boot vCPU, serving the core,
    /// attestation and vTPM protocols (the last with `vtpm`); never returns. Halts at once if
    /// [`early_init`] did not run.
    pub fn run<V: vtpm::Vtpm + Send + 'static>(vtpm: V) -> ! {
        let Some(rt) = get() else {
            log::error!("snp: run without early_init");
            loop {
                x86_64::instructions::hlt();
            }
        };
        let hv = &rt.hv;
        let params = boot_params(hv, rt.param_block);
        let params = &params;
        let block = *params.block();
        let die = |e: SnpError| -> ! { fail(hv, &e) };
        let guest_vmpl = Vmpl::new(block.guest_vmpl as u8).unwrap_or(Vmpl::LOWER[1]);
        let secrets =
            SvsmSecrets::parse(&read_phys::<4096>(block.secrets_gpa)).unwrap_or_else(|e| die(e));
        let cpuid = read_phys::<4096>(block.cpuid_gpa);
        let (svsm_start, svsm_end) = (block.svsm.base, block.svsm.base + block.svsm.size);
        let layout = MemoryLayout::new(guest_regions(&block, params), svsm_start, svsm_end)
            .unwrap_or_else(|_| die(SnpError::BootParams));
        let bsp = params.apic_ids().first().copied().unwrap_or(0);
        // SAFETY: the entry's tables identity-map the low 4 GiB with the C-bit; guest
        // memory above 4 GiB is not reachable yet (see the README's SNP notes).
        let platform = unsafe { SnpPlatform::new(hv, 0, guest_vmpl) };
        // The PSP message pages: rescinded (private address), then shared.
        let [request, response] = early::message_page_addresses();
        for (gpa, _) in [request, response] {
            // SAFETY: the entry's message pages, unused so far; only their shared
            // aliases are used from now on.
            if let Err(e) = unsafe { pvalidate(gpa, PageSize::Size4K, false) } {
                die(SnpError::Pvalidate(gpa, e))
            }
            if let Err(e) = hv.page_state_change(gpa / PAGE_SIZE, PageState::Shared) {
                die(e)
            }
        }
        platform.set_message_pages(super::MessagePages {
            request: (request.1, request.0),
            response: (response.1, response.0),
        });
        // The vTPM, and attestation over the PSP channel with VMPCK0 (copied into the
        // messenger in SVSM memory; the guest's secrets copy has it zeroed).
        let ek_public = vtpm.ek_public().to_vec();
        let services = Services::new()
            .with_attestation(crate::requests::attest::service(
                crate::psp::GuestMessenger::new(*secrets.vmpck0(), 0),
                alloc::vec![alloc::boxed::Box::new(
                    crate::requests::attest::StaticEvidence::vtpm(&ek_public)
                )],
            ))
            .with_vtpm(crate::requests::vtpm::service(vtpm));
        let svsm = Svsm::new(
            platform,
            SvsmConfig {
                guest_vmpl,
                layout,
                apic_ids: params.apic_ids().to_vec(),
            },
            services,
        );
        // The boot VMSA: the second page of an 8 KiB-aligned pair from the heap, so it is
        // never 2 MiB aligned (Linux `snp_alloc_vmsa_page`: an SNP erratum makes the CPU
        // signal an RMP violation when a large page collides with a VMSA's RMP entry).
        let vmsa_layout = core::alloc::Layout::from_size_align(8192, 8192)
            .unwrap_or_else(|_| die(SnpError::Memory(0, crate::platform::MemoryError::NotMemory)));
        // SAFETY: a non-zero-sized layout; the pages are leaked: they live as long as the VM.
        let pair = unsafe { alloc::alloc::alloc_zeroed(vmsa_layout) } as u64;
        if pair == 0 {
            die(SnpError::Memory(0, crate::platform::MemoryError::NotMemory));
        }
        let vmsa_page = pair + PAGE_SIZE;
        // SAFETY: reads SEV_STATUS in an SEV guest (the entry found the C-bit).
        let status = unsafe { read_sev_status() };
        let plan = GuestLaunch {
            firmware: block.firmware,
            guest_vmpl,
            bsp_apic_id: bsp,
            vmsa_page,
            svsm_base: svsm_start,
            svsm_size: block.svsm.size,
            guest_features: guest_sev_features(SevFeatures::from_sev_status(status), false),
            reset_address: RESET_VECTOR,
        };
        match launch_guest(&svsm, hv, &plan, &secrets, &cpuid) {
            Ok(summary) => log::info!(
                "snp: guest launch ready: {} pages granted to VMPL{} ({} made private first)",
                summary.pages_granted,
                guest_vmpl.level(),
                summary.pages_made_private
            ),
            Err(e) => die(e),
        }
        log::info!(
            "snp: running the guest at VMPL{} on APIC ID {bsp}",
            guest_vmpl.level()
        );
        let mut serviced = 0u64;
        loop {
            match svsm.run_once(bsp) {
                Ok(crate::requests::RequestOutcome::Serviced(code)) => {
                    serviced += 1;
                    if serviced <= 3 {
                        log::info!("snp: serviced guest call {serviced} (result {code})");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    log::error!("snp: running the guest failed: {e}");
                    die(SnpError::RunVmpl(u32::MAX))
                }
            }
        }
    }
}
