//! The SVSM vCPUs on SEV-SNP hardware: created by the boot vCPU from VMPL0 VMSAs before
//! the guest runs, each with its own GHCB, stacks, IST stacks and per-CPU area, each
//! running the request loop for its APIC ID.
//!
//! What is target-independent (the plan, the VMSA contents, the creation steps) is in
//! [`crate::snp::svsm_vcpus`] and runs on the emulated machine too; this file adds
//! what only the bare-metal kernel can do: the kernel's own per-CPU set-up (through
//! [`CpuHooks`], which the kernel registers), shared aliases for the GHCB pages, and
//! the loop each vCPU runs.
//!
//! A vCPU's GHCB is a page of SVSM memory that the vCPU itself rescinds (PVALIDATE),
//! makes shared (GHCB MSR page state change) and registers (GHCB MSR protocol 0x012),
//! as GHCB spec 56421 (GHCB GPA registration) requires of every vCPU; the boot vCPU
//! has the kernel map its shared alias beforehand ([`CpuHooks::map_shared`]).
//!
//! Under restricted injection each vCPU also registers its own #HV doorbell page (the
//! runtime's handler finds it through [`ap_doorbell`]), since the hypervisor can then
//! only post the SVSM's IPI vector there.
//!
//! Between two turns of its loop every vCPU runs [`between_calls`]: the TLB shootdown
//! an RMPADJUST asked for, and a short interrupt window for the other vCPUs' IPIs.
//!
//! The loop: while the registry holds no guest VMSA for its APIC ID (the guest has not
//! called CREATE_VCPU for it yet, or deleted it), the vCPU halts; the hypervisor runs
//! the guest VMPL on its own once the guest creates that AP, and the guest's first
//! call wakes the vCPU, which services it before it runs the guest again.

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use spin::Once;
use svsm_protocol::ghcb::PageState;
use svsm_protocol::vmsa::SevFeatures;
use x86_64::registers::control::{Cr0, Cr3, Cr4};

use super::{fail, get};
use crate::arch::snp::ghcb::ArchGhcb;
use crate::arch::snp::msr::read_sev_status;
use crate::arch::snp::pvalidate::pvalidate;
use crate::platform::snp::SnpPlatform;
use crate::platform::{MemoryError, PageSize, PAGE_SIZE};
use crate::requests::{NotServiced, RequestOutcome, Svsm};
use crate::smp::{SmpError, CPUS, MAX_CPUS};
use crate::snp::hypervisor::HvClient;
use crate::snp::svsm_vcpus::{self, ApRegisters, SvsmMemory};
use crate::snp::SnpError;

/// EFER as the entry set it: LME and NXE (LMA and SVME are added by the VMSA builder).
const KERNEL_EFER: u64 = (1 << 8) | (1 << 11);
/// Spins the boot vCPU waits for one vCPU to report.
const START_SPINS: u64 = 2_000_000_000;

/// What the kernel does for its CPUs (its GDT, TSS, per-CPU areas and stacks live in
/// the kernel binary).
#[derive(Debug, Clone, Copy)]
pub struct CpuHooks {
    /// On the boot vCPU, before vCPU `index` (APIC ID) exists: the top of its kernel
    /// stack and its filled per-CPU area (the FS base its VMSA starts with).
    pub prepare: fn(usize, u32) -> Option<(u64, u64)>,
    /// On the new vCPU, first: its own GDT and TSS (IST stacks), the IDT, SSE.
    pub init: fn(usize),
    /// On the boot vCPU: maps the page at this GPA without the C-bit (the vCPU's
    /// GHCB, which the vCPU makes shared before it touches the alias); returns the
    /// alias's address.
    pub map_shared: fn(u64) -> Option<u64>,
}

static HOOKS: Once<CpuHooks> = Once::new();

/// Registers the kernel's per-CPU set-up (before [`super::run`]).
pub fn set_cpu_hooks(hooks: CpuHooks) {
    HOOKS.call_once(|| hooks);
}

#[derive(Debug)]
struct Slot {
    apic_id: AtomicU32,
    ghcb_gpa: AtomicU64,
    ghcb_alias: AtomicU64,
    client: Once<HvClient<ArchGhcb>>,
    online: AtomicBool,
    doorbell_gpa: AtomicU64,
    doorbell_alias: AtomicU64,
    doorbell: Once<super::doorbell::ArchDoorbell>,
}

impl Slot {
    const fn new() -> Self {
        Self {
            apic_id: AtomicU32::new(0),
            ghcb_gpa: AtomicU64::new(0),
            ghcb_alias: AtomicU64::new(0),
            client: Once::new(),
            online: AtomicBool::new(false),
            doorbell_gpa: AtomicU64::new(0),
            doorbell_alias: AtomicU64::new(0),
            doorbell: Once::new(),
        }
    }
}

static SLOTS: [Slot; MAX_CPUS] = [const { Slot::new() }; MAX_CPUS];
/// Set once the boot vCPU registered itself: from then on every CPU's `%fs:0x30`
/// names its slot.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static SVSM: Once<&'static Svsm<SnpPlatform>> = Once::new();
/// An RMPADJUST reduced a lower VMPL's access since the last flush.
static FLUSH_PENDING: AtomicBool = AtomicBool::new(false);

/// Records that every vCPU must flush its TLB before the guest runs again (called
/// after an RMPADJUST that reduces a lower VMPL's access). The flush itself waits for
/// every vCPU, so it must not run while this vCPU holds a lock another vCPU may spin
/// on with interrupts masked (the request handler holds the registry's lock around
/// RMPADJUST): [`between_calls`] runs it once the call is done and before any vCPU
/// runs the guest with the call's result.
pub fn request_flush() {
    FLUSH_PENDING.store(true, Ordering::Release);
}

/// What every vCPU does between two turns of its request loop, holding no lock: the
/// pending TLB shootdown (INVLPGB/TLBSYNC where CPUID reports them, else IPIs and
/// acknowledgements; a vCPU that never answers ends the SVSM), then a one-instruction
/// interrupt window in which IPIs from other vCPUs are taken (`STI; NOP; CLI`: no GHCB
/// call and no mailbox is in progress here), after the #HV doorbell was polled.
pub fn between_calls() {
    if FLUSH_PENDING.swap(false, Ordering::AcqRel) {
        if let Err(e) = crate::smp::shootdown(crate::smp::tlb::FlushRequest::All) {
            if let Some(rt) = get() {
                fail(rt.client(), &SnpError::TlbShootdown(e))
            }
        }
    }
    // Under restricted injection an IPI may sit in the doorbell without a #HV yet.
    super::poll_doorbell();
    x86_64::instructions::interrupts::enable();
    x86_64::instructions::nop();
    x86_64::instructions::interrupts::disable();
}

/// The GHCB client of the vCPU running this, when it is not the boot vCPU (which
/// uses the runtime's own). An SVSM vCPU sets its client first thing in
/// `snp_ap_main`, before its IDT is loaded, so no code of it ever gets `None` here
/// and falls back to the boot vCPU's GHCB.
pub fn current_hv() -> Option<&'static HvClient<ArchGhcb>> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let index = crate::smp::this_cpu();
    if index == 0 {
        return None;
    }
    SLOTS.get(index)?.client.get()
}

/// The #HV doorbell of the vCPU running this: `None` on the boot vCPU (whose doorbell
/// the runtime keeps), `Some(None)` on a vCPU without one.
pub(super) fn ap_doorbell() -> Option<Option<&'static super::doorbell::ArchDoorbell>> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    match crate::smp::this_cpu() {
        0 => None,
        index => Some(SLOTS.get(index).and_then(|s| s.doorbell.get())),
    }
}

fn ipi_hook(_vector: u8) {
    crate::smp::handle_ipi();
}

/// SVSM memory through the identity map (private, validated).
struct IdentityMemory;

impl SvsmMemory for IdentityMemory {
    fn write_page(&self, gpa: u64, page: &[u8; PAGE_SIZE as usize]) -> Result<(), MemoryError> {
        // SAFETY: `gpa` is a heap page the plan took for this vCPU (SVSM memory,
        // identity mapped private and validated); nothing else refers to it.
        unsafe {
            core::ptr::copy_nonoverlapping(page.as_ptr(), gpa as usize as *mut u8, page.len())
        };
        Ok(())
    }
}

fn heap_page() -> Option<u64> {
    let layout = Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize).ok()?;
    // SAFETY: a non-zero layout; the page belongs to one vCPU for good.
    let page = unsafe { alloc_zeroed(layout) } as u64;
    (page != 0).then_some(page)
}

/// Creates an SVSM vCPU for every APIC ID of `apic_ids` other than `bsp`, each
/// running the request loop of `svsm` for its APIC ID, and returns once all
/// reported (before the guest first runs). Without the kernel's hooks it creates none.
pub fn start(svsm: &'static Svsm<SnpPlatform>, apic_ids: &[u32], bsp: u32) {
    let Some(rt) = get() else { return };
    let hv = &rt.hv;
    let die = |e: SnpError| -> ! { fail(hv, &e) };
    let Some(hooks) = HOOKS.get() else {
        log::warn!("snp: no per-CPU hooks; the guest's APs have no SVSM vCPU");
        return;
    };
    SVSM.call_once(|| svsm);
    crate::smp::set_ipi_sender(&crate::arch::x2apic::X2ApicIpi);
    // The SVSM's IPIs arrive as a hooked external vector: injected directly, or posted
    // in the #HV doorbell under restricted injection; the delivering path sends the EOI.
    if let Err(e) = super::register_vector(crate::smp::IPI_VECTOR, ipi_hook) {
        log::warn!("snp: no hook for the IPI vector ({e:?}): shootdowns need INVLPGB");
    }
    match CPUS
        .register(bsp)
        .and_then(|i| CPUS.set_online(i).map(|()| i))
    {
        Ok(0) => {}
        Ok(_) | Err(_) => die(SnpError::SvsmVcpus(
            svsm_vcpus::VcpuPlanError::DuplicateApicId(bsp),
        )),
    }
    ACTIVE.store(true, Ordering::Release);
    let plan = svsm_vcpus::plan(apic_ids, bsp, MAX_CPUS, heap_page)
        .unwrap_or_else(|e| die(SnpError::SvsmVcpus(e)));
    // SAFETY: reads SEV_STATUS in an SEV-SNP guest (the runtime exists only then).
    let features = SevFeatures::from_sev_status(unsafe { read_sev_status() });
    let gdtr = x86_64::instructions::tables::sgdt();
    let (pml4, _) = Cr3::read_raw();
    for vcpu in &plan.aps {
        match CPUS.register(vcpu.apic_id) {
            Ok(index) if index == vcpu.index => {}
            _ => die(SnpError::SvsmVcpus(
                svsm_vcpus::VcpuPlanError::DuplicateApicId(vcpu.apic_id),
            )),
        }
        let Some((stack_top, fs_base)) = (hooks.prepare)(vcpu.index, vcpu.apic_id) else {
            die(SnpError::SvsmVcpus(svsm_vcpus::VcpuPlanError::TooMany(
                vcpu.index,
            )))
        };
        let Some(alias) = (hooks.map_shared)(vcpu.ghcb) else {
            die(SnpError::Memory(vcpu.ghcb, MemoryError::NotMemory))
        };
        let slot = &SLOTS[vcpu.index];
        slot.apic_id.store(vcpu.apic_id, Ordering::Relaxed);
        slot.ghcb_gpa.store(vcpu.ghcb, Ordering::Relaxed);
        if rt.interrupts.restricted_injection {
            // Its own #HV doorbell page (GHCB spec 56421, "#HV Doorbell Page"): with
            // restricted injection the hypervisor can only post the IPI vector there.
            let page = heap_page().unwrap_or_else(|| {
                die(SnpError::SvsmVcpus(svsm_vcpus::VcpuPlanError::OutOfMemory))
            });
            let Some(doorbell_alias) = (hooks.map_shared)(page) else {
                die(SnpError::Memory(page, MemoryError::NotMemory))
            };
            slot.doorbell_gpa.store(page, Ordering::Relaxed);
            slot.doorbell_alias.store(doorbell_alias, Ordering::Relaxed);
        }
        slot.ghcb_alias.store(alias, Ordering::Release);
        let regs = ApRegisters {
            rip: crate::arch::ap_entry::snp_entry_address(),
            rsp: stack_top,
            cpu_index: vcpu.index as u64,
            fs_base,
            cr0: Cr0::read_raw(),
            cr3: pml4.start_address().as_u64(),
            cr4: Cr4::read_raw(),
            efer: KERNEL_EFER,
            gdtr: (gdtr.base.as_u64(), gdtr.limit),
            sev_features: features,
        };
        let platform = svsm.platform();
        if let Err(e) = svsm_vcpus::create_vcpu(platform, &IdentityMemory, hv, vcpu, &regs) {
            die(e)
        }
        let mut spins = 0u64;
        while !slot.online.load(Ordering::Acquire) {
            spins += 1;
            if spins > START_SPINS {
                log::error!(
                    "snp: SVSM vCPU {} (APIC ID {}) did not report",
                    vcpu.index,
                    vcpu.apic_id
                );
                die(SnpError::TlbShootdown(SmpError::NoAck(vcpu.index)))
            }
            core::hint::spin_loop();
        }
    }
    log::info!(
        "snp: {} SVSM vCPUs online (APIC IDs {:?}); TLB shootdowns by {}",
        CPUS.online_count(),
        (0..CPUS.count())
            .filter_map(|i| CPUS.apic_id(i).ok())
            .collect::<Vec<_>>(),
        if crate::smp::broadcast_invalidation() {
            "INVLPGB/TLBSYNC"
        } else {
            "IPI and acknowledgement"
        }
    );
}

/// An SVSM vCPU's first Rust code (from `snp_ap_entry`): the kernel's set-up, its
/// GHCB, then the request loop for its APIC ID.
#[unsafe(no_mangle)]
extern "C" fn snp_ap_main(index: u64) -> ! {
    let index = index as usize;
    let Some(slot) = SLOTS.get(index) else { halt() };
    let gpa = slot.ghcb_gpa.load(Ordering::Relaxed);
    let alias = slot.ghcb_alias.load(Ordering::Acquire) as usize;
    let apic_id = slot.apic_id.load(Ordering::Relaxed);
    // The vCPU's own client before anything else (its handlers included) can ask for
    // one: `current_hv` must never hand this vCPU the boot vCPU's GHCB, whose lock and
    // registration are the boot vCPU's. Until the page is registered below, only the
    // MSR protocol works on it; a page exchange before then fails, and the failure
    // stops the VM.
    // SAFETY: `alias` maps `gpa` shared (map_shared), a page only this vCPU uses, and
    // this is an SEV-SNP guest.
    let hv = slot
        .client
        .call_once(|| HvClient::new(unsafe { ArchGhcb::new(alias, gpa) }));
    if let Some(hooks) = HOOKS.get() {
        (hooks.init)(index);
    }
    // SAFETY: the GHCB page (SVSM heap, identity mapped private) is unused: rescinding
    // it only makes the private mapping unusable (APM vol. 3 "PVALIDATE").
    if let Err(e) = unsafe { pvalidate(gpa, PageSize::Size4K, false) } {
        fail(hv, &SnpError::Pvalidate(gpa, e))
    }
    if let Err(e) = hv
        .page_state_change(gpa / PAGE_SIZE, PageState::Shared)
        .and_then(|()| hv.register_ghcb(gpa / PAGE_SIZE))
    {
        fail(hv, &e)
    }
    let doorbell = slot.doorbell_gpa.load(Ordering::Relaxed);
    if doorbell != 0 {
        let va = slot.doorbell_alias.load(Ordering::Relaxed) as usize;
        // SAFETY: the doorbell page (SVSM heap, identity mapped private) is unused;
        // rescinding it only makes the private mapping unusable.
        if let Err(e) = unsafe { pvalidate(doorbell, PageSize::Size4K, false) } {
            fail(hv, &SnpError::Pvalidate(doorbell, e))
        }
        if let Err(e) = hv.page_state_change(doorbell / PAGE_SIZE, PageState::Shared) {
            fail(hv, &e)
        }
        // SAFETY: `va` is the kernel's shared alias of that page (map_shared), used for
        // nothing else, and the page is shared now.
        match unsafe { super::doorbell::register_on_this_vcpu(hv, doorbell, va) } {
            Ok(page) => {
                slot.doorbell.call_once(|| page);
            }
            Err(e) => fail(hv, &e),
        }
    }
    if CPUS.set_online(index).is_err() {
        fail(hv, &SnpError::TlbShootdown(SmpError::UnknownCpu(index)))
    }
    slot.online.store(true, Ordering::Release);
    log::info!("snp: SVSM vCPU {index} (APIC ID {apic_id}) online; GHCB {gpa:#x} registered");
    let Some(svsm) = SVSM.get() else { halt() };
    run_vcpu(svsm, apic_id)
}

fn halt() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// The request loop of one SVSM vCPU.
fn run_vcpu(svsm: &Svsm<SnpPlatform>, apic_id: u32) -> ! {
    let mut has_vmsa = false;
    let mut serviced = 0u64;
    loop {
        between_calls();
        if !has_vmsa {
            match svsm.handle_request(apic_id) {
                RequestOutcome::NotServiced(
                    NotServiced::NoGuestVmsa | NotServiced::UnknownVcpu,
                ) => {
                    // Nothing to run yet: wait (IPIs and the guest's first call wake).
                    crate::arch::interrupts::wait_for_interrupt();
                    continue;
                }
                RequestOutcome::Serviced(_) => serviced += 1,
                RequestOutcome::NotServiced(_) => {}
            }
            has_vmsa = true;
        }
        match svsm.run_once(apic_id) {
            Ok(RequestOutcome::Serviced(code)) => {
                serviced += 1;
                if serviced <= 1 {
                    log::info!(
                        "snp: vCPU APIC ID {apic_id}: serviced a guest call (result {code})"
                    );
                }
            }
            Ok(RequestOutcome::NotServiced(NotServiced::NoGuestVmsa)) => has_vmsa = false,
            Ok(_) => {}
            Err(e) => {
                // The guest VMSA went away (DELETE_VCPU) or cannot run: wait for it.
                log::warn!("snp: vCPU APIC ID {apic_id}: running the guest failed: {e}");
                has_vmsa = false;
            }
        }
    }
}
