//! The GHCB page and the GHCB MSR as the SVSM's channel to the hypervisor.
//!
//! GHCB specification 56421, "GHCB MSR" and "GHCB Protocol": an MSR protocol
//! request is a value in the GHCB MSR followed by VMGEXIT; a page request is the GHCB
//! (a shared page, mapped without the C-bit) filled in, its GPA in the GHCB MSR, and
//! VMGEXIT. [`ArchGhcb`] copies the caller's GHCB into the shared page and the
//! hypervisor's answer back out, so parsing never reads memory the hypervisor can
//! change. One GHCB serves one vCPU; the lock keeps two users on that vCPU apart, and
//! interrupts stay masked while it is held (as Linux's `local_irq_save` around its
//! GHCB), so no interrupt handler of this vCPU can find it taken and spin forever; a
//! handler that runs with interrupts masked (NMI, #HV, an injected vector) checks
//! [`ArchGhcb::in_use`] before touching it, and a use that still finds it taken (a
//! vector injected into a GHCB call) stops the VM instead of spinning.
#![allow(unsafe_code, reason = "the shared GHCB page and VMGEXIT")]

use spin::Mutex;
use svsm_protocol::ghcb::Ghcb;
use zerocopy::{FromZeros, IntoBytes};

use super::msr::write_ghcb_msr;
use super::vmgexit::{msr_protocol, vmgexit};
use crate::snp::GhcbTransport;

/// The GHCB of one vCPU.
#[derive(Debug)]
pub struct ArchGhcb {
    va: usize,
    gpa: u64,
    lock: Mutex<()>,
}

impl ArchGhcb {
    /// The GHCB mapped at `va` (shared: no C-bit) whose GPA is `gpa`.
    ///
    /// # Safety
    ///
    /// Only in an SEV-SNP guest. `va` must map the 4 KiB page at `gpa` without the
    /// C-bit, and nothing else may use that page or the GHCB MSR of this vCPU while the
    /// value lives.
    pub const unsafe fn new(va: usize, gpa: u64) -> Self {
        Self {
            va,
            gpa,
            lock: Mutex::new(()),
        }
    }

    /// The GHCB's GPA.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Whether a GHCB call is under way (on this vCPU: the interrupted code's).
    pub fn in_use(&self) -> bool {
        self.lock.is_locked()
    }
}

/// Runs `f` with maskable interrupts masked, restoring RFLAGS.IF afterwards.
fn masked<R>(f: impl FnOnce() -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(f)
}

/// The lock of a vCPU's own GHCB is only ever held by that vCPU, with interrupts
/// masked: finding it taken means a handler interrupted a GHCB call on this vCPU, which
/// only a hypervisor injecting a vector into that call can cause. Spinning would hang
/// the vCPU for good and the call cannot be completed on its behalf, so the VM stops
/// with its reason (straight through the MSR protocol, GHCB spec §2.3.1, which needs no
/// GHCB page).
fn lock_or_terminate(lock: &Mutex<()>) -> spin::MutexGuard<'_, ()> {
    if let Some(guard) = lock.try_lock() {
        return guard;
    }
    let reason = crate::snp::SnpError::GhcbReentered.termination_reason();
    let request = svsm_protocol::ghcb::MsrRequest::Terminate {
        set: reason.set,
        code: reason.code,
    }
    .encode();
    // SAFETY: the termination request of the MSR protocol (GHCB spec §2.3.1): it writes
    // only the GHCB MSR and nothing runs afterwards.
    let _ = unsafe { msr_protocol(request) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

impl GhcbTransport for ArchGhcb {
    fn msr_exchange(&self, request: u64) -> u64 {
        masked(|| {
            let _guard = lock_or_terminate(&self.lock);
            // SAFETY: `new`'s contract: an SNP guest whose GHCB MSR this value owns. The
            // MSR protocol (GHCB spec §2.3.1) reads and writes only the MSR.
            unsafe { msr_protocol(request) }
        })
    }

    fn ghcb_exchange(&self, ghcb: &mut Ghcb) {
        masked(|| self.exchange_page(ghcb))
    }
}

impl ArchGhcb {
    fn exchange_page(&self, ghcb: &mut Ghcb) {
        let _guard = lock_or_terminate(&self.lock);
        let page = self.va as *mut u8;
        let size = core::mem::size_of::<Ghcb>();
        // SAFETY: `page` maps the GHCB page (4 KiB, `new`'s contract), which only this
        // value uses; `ghcb` is a distinct 4 KiB SVSM object.
        unsafe { core::ptr::copy_nonoverlapping(ghcb.as_bytes().as_ptr(), page, size) };
        // SAFETY: the page holds the request; its GPA goes into the GHCB MSR (GHCB spec,
        // "GHCB page protocol").
        unsafe { write_ghcb_msr(self.gpa) };
        // SAFETY: VMGEXIT with the GHCB MSR naming this vCPU's registered GHCB.
        unsafe { vmgexit() };
        let mut answer = Ghcb::new_zeroed();
        // SAFETY: as for the first copy, in the other direction, into SVSM memory.
        unsafe { core::ptr::copy_nonoverlapping(page, answer.as_mut_bytes().as_mut_ptr(), size) };
        *ghcb = answer;
    }
}
