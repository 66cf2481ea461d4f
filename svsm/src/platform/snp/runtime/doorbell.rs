//! Restricted injection in the kernel: the boot vCPU's #HV doorbell page, the #HV
//! handler, and the external-vector hooks.
//!
//! The policy is [`crate::snp::doorbell`]'s (host-tested there and on the emulated
//! machine); this file only supplies the page (the entry's doorbell page and its shared
//! alias, [`early::doorbell_page_addresses`]), the atomics on it, and the glue to the
//! interrupt frame. The doorbell is registered in [`early_init`](super::early_init)
//! only when restricted injection is negotiated; otherwise [`handle_hv`] is never
//! reached (a #HV is classified spurious).
//!
//! Other vCPUs: a vCPU that starts later registers its own page with
//! [`register_on_this_vcpu`]; the handler currently serves the boot vCPU's page (the
//! per-CPU area that will hold each vCPU's page belongs to the SMP code).

use core::sync::atomic::{AtomicU16, AtomicU8, Ordering};

use spin::Once;

use super::{fail, get, FAILING};
use crate::arch::interrupts::InterruptFrame;
use crate::arch::snp::early;
use crate::arch::snp::ghcb::ArchGhcb;
use crate::arch::snp::pvalidate::pvalidate;
use crate::platform::{PageSize, PAGE_SIZE};
use crate::snp::doorbell::{
    process, register_doorbell, DoorbellPage, HookError, RestrictedInjection, VectorHook,
    VectorHooks, X2APIC_EOI_MSR,
};
use crate::snp::hypervisor::HvClient;
use crate::snp::SnpError;
use svsm_protocol::ghcb::PageState;
use svsm_protocol::hv_doorbell::{NO_EOI_REQUIRED_OFFSET, PENDING_EVENTS_OFFSET};

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// A doorbell page reached through its shared (no C-bit) mapping.
#[derive(Debug)]
pub struct ArchDoorbell {
    pending: &'static AtomicU16,
    no_eoi: &'static AtomicU8,
}

impl ArchDoorbell {
    /// The doorbell page mapped shared at `va`.
    ///
    /// # Safety
    ///
    /// `va` must be the 4 KiB-aligned shared mapping of a page that stays mapped and
    /// is used for nothing else for the rest of the kernel's life.
    pub unsafe fn new(va: usize) -> Self {
        let pending = (va + PENDING_EVENTS_OFFSET) as *const AtomicU16;
        let no_eoi = (va + NO_EOI_REQUIRED_OFFSET) as *const AtomicU8;
        Self {
            // SAFETY: the caller's contract; the word at offset 0 is 2-byte aligned
            // inside the page (GHCB spec 56421, "#HV Doorbell Page" layout). The
            // hypervisor writing it concurrently is what the atomic type is for.
            pending: unsafe { &*pending },
            // SAFETY: as above, the byte at offset 2.
            no_eoi: unsafe { &*no_eoi },
        }
    }
}

impl DoorbellPage for ArchDoorbell {
    // Locked XCHG / CMPXCHG loops on the shared page: each access is one atomic
    // read-modify-write against the hypervisor's writes (Linux `xchg` on
    // `pending_events`).
    fn take_pending(&self) -> u16 {
        self.pending.swap(0, Ordering::SeqCst)
    }
    fn clear_pending(&self, mask: u16) -> u16 {
        self.pending.fetch_and(!mask, Ordering::SeqCst)
    }
    fn take_no_eoi_required(&self) -> u8 {
        self.no_eoi.swap(0, Ordering::SeqCst)
    }
    fn reset(&self) {
        self.pending.store(0, Ordering::SeqCst);
        self.no_eoi.store(0, Ordering::SeqCst);
    }
}

static BOOT_DOORBELL: Once<ArchDoorbell> = Once::new();
static MODE: Once<RestrictedInjection> = Once::new();
static HOOKS: VectorHooks = VectorHooks::new();

/// Registers `hook` for the external `vector` (e.g. the cross-CPU call IPI): it runs
/// when the vector arrives, through the doorbell under restricted injection or injected
/// directly otherwise, and only while the SVSM is interruptible; the delivering path
/// sends the EOI.
pub fn register_vector(vector: u8, hook: VectorHook) -> Result<(), HookError> {
    HOOKS.register(vector, hook)
}

/// Makes the shared page at `gpa` (mapped at `va`) this vCPU's doorbell: zeroed,
/// registered and read back over `hv`.
///
/// # Safety
///
/// As [`ArchDoorbell::new`] for `va`; the page at `gpa` must already be shared (its
/// validation rescinded, the page state change done).
pub unsafe fn register_on_this_vcpu<T: crate::snp::GhcbTransport>(
    hv: &HvClient<T>,
    gpa: u64,
    va: usize,
) -> Result<ArchDoorbell, SnpError> {
    // SAFETY: the caller's contract.
    let page = unsafe { ArchDoorbell::new(va) };
    register_doorbell(hv, gpa, &page)?;
    Ok(page)
}

/// The boot vCPU's doorbell, in [`super::early_init`]: when `mode` is negotiated, the
/// entry's doorbell page is rescinded, made shared and registered. Returns whether it
/// is registered; a failure stops the VM with its reason.
pub(super) fn setup_boot(hv: &HvClient<ArchGhcb>, mode: RestrictedInjection) -> bool {
    MODE.call_once(|| mode);
    if !mode.wants_doorbell() {
        return false;
    }
    let (gpa, alias) = early::doorbell_page_addresses();
    // SAFETY: the entry's doorbell page, unused so far; rescinding it only makes its
    // private mapping unusable, which nothing uses again (AMD APM vol. 3 "PVALIDATE").
    if let Err(e) = unsafe { pvalidate(gpa, PageSize::Size4K, false) } {
        fail(hv, &SnpError::Pvalidate(gpa, e))
    }
    if let Err(e) = hv.page_state_change(gpa / PAGE_SIZE, PageState::Shared) {
        fail(hv, &e)
    }
    // SAFETY: `alias` is the entry's shared mapping of that page, used for nothing else.
    match unsafe { register_on_this_vcpu(hv, gpa, alias) } {
        Ok(page) => {
            BOOT_DOORBELL.call_once(|| page);
            true
        }
        Err(e) => fail(hv, &e),
    }
}

/// The #HV handler: takes this vCPU's doorbell events (only NMI and #MC when the
/// interrupted code had interrupts masked) and acts on them; a #MC, or an EOI the
/// hypervisor answers wrongly, stops the VM.
pub(super) fn handle_hv(frame: &InterruptFrame) {
    let Some(rt) = get() else { return };
    let Some(page) = this_vcpus_doorbell() else {
        return;
    };
    let interruptible = frame.rflags & RFLAGS_IF != 0;
    let hv = rt.client();
    match process(page, interruptible, &HOOKS, hv) {
        Ok(report) => {
            if report.nmis != 0 && !interruptible && !quiet(hv) {
                log::warn!("snp: ignoring an NMI posted in the #HV doorbell");
            }
            if report.exhausted && !quiet(hv) {
                log::warn!("snp: #HV doorbell still busy after its round limit");
            }
        }
        Err(e) => fail(hv, &e),
    }
}

/// The doorbell of the vCPU running this: the boot vCPU's, or an SVSM vCPU's own
/// (`vcpus`), never another vCPU's.
fn this_vcpus_doorbell() -> Option<&'static ArchDoorbell> {
    match super::vcpus::ap_doorbell() {
        Some(ap) => ap,
        None => BOOT_DOORBELL.get(),
    }
}

/// Processes whatever is posted in the doorbell, for code that runs interruptible but
/// may have missed a #HV (e.g. a wait loop before it halts). A no-op without a
/// doorbell.
pub fn poll() {
    let Some(rt) = get() else { return };
    let Some(page) = this_vcpus_doorbell() else {
        return;
    };
    if let Err(e) = process(page, true, &HOOKS, rt.client()) {
        fail(rt.client(), &e)
    }
}

/// A vector injected directly (no restricted injection): runs its hook and sends the
/// EOI when one is registered and the interrupted code was interruptible. Returns
/// whether it was handled.
pub(super) fn dispatch_direct(vector: u8, frame: &InterruptFrame) -> bool {
    let Some(rt) = get() else { return false };
    let Some(hook) = HOOKS.lookup(vector) else {
        return false;
    };
    if frame.rflags & RFLAGS_IF == 0 {
        // A hypervisor that injects past the interrupt window: not an interrupt the
        // SVSM can take here.
        return false;
    }
    hook(vector);
    // This vCPU's GHCB: the EOI goes to the APIC of the vCPU that took the vector.
    if let Err(e) = rt.client().write_msr(X2APIC_EOI_MSR, 0) {
        fail(rt.client(), &e)
    }
    true
}

/// Whether logging must be skipped: the console's port I/O goes through the GHCB,
/// which the interrupted code may hold, or the VM is already failing.
pub(super) fn quiet(hv: &HvClient<ArchGhcb>) -> bool {
    hv.transport().in_use() || FAILING.load(Ordering::SeqCst)
}

/// Logs the doorbell state (once the console works).
pub(super) fn report() {
    match BOOT_DOORBELL.get() {
        Some(_) => log::info!(
            "snp: restricted injection negotiated: #HV doorbell at {:#x} registered",
            early::doorbell_page_addresses().0
        ),
        None if MODE.get() == Some(&RestrictedInjection::Unannounced) => log::warn!(
            "snp: restricted injection is active but the hypervisor does not announce it: no #HV doorbell, no interrupts"
        ),
        None => log::info!("snp: restricted injection off: no #HV doorbell"),
    }
}
