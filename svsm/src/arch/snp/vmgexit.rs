//! VMGEXIT (`rep vmmcall`, F3 0F 01 D9): hand control to the hypervisor.
//!
//! AMD64 APM vol. 3, "VMGEXIT", and vol. 2 "VMGEXIT": in an SEV-ES/SNP guest
//! the instruction exits to the hypervisor with the GHCB MSR as its only channel (the
//! GHCB MSR protocol, or the GPA of the shared GHCB page). The hypervisor may change
//! any state the GHCB exposes, so callers treat everything it returns as untrusted.
//! The run-VMPL request (GHCB spec §2.3.1, function 0x016) returns here only when the
//! hypervisor next runs this VMPL0 VMSA.
#![allow(unsafe_code, reason = "the VMGEXIT instruction")]

use super::msr::{read_ghcb_msr, write_ghcb_msr};

/// Executes VMGEXIT.
///
/// # Safety
///
/// Only in an SEV-ES or SEV-SNP guest, with the GHCB MSR holding the request the
/// caller means (a value for the MSR protocol, or the GPA of a shared GHCB page whose
/// contents the caller prepared and will only read through a copy).
pub unsafe fn vmgexit() {
    // SAFETY: VMGEXIT (APM vol. 3 "VMGEXIT"; vol. 2, "VMGEXIT") saves the guest state into
    // the VMSA and resumes after the instruction; registers not exposed in the GHCB come
    // back unchanged. The hypervisor may write the shared GHCB page, hence no `nomem`.
    unsafe { core::arch::asm!("rep vmmcall", options(nostack)) }
}

/// One GHCB MSR protocol exchange: writes `request` into the GHCB MSR, exits, and
/// returns what the hypervisor left in the MSR.
///
/// # Safety
///
/// Only in an SEV-ES or SEV-SNP guest, and not while the GHCB MSR must hold a
/// registered GHCB's GPA for another user on this CPU (the caller restores it).
pub unsafe fn msr_protocol(request: u64) -> u64 {
    // SAFETY: the caller guarantees an SEV-ES/SNP guest; the MSR takes the request
    // (GHCB specification §2.3.1).
    unsafe { write_ghcb_msr(request) };
    // SAFETY: the GHCB MSR holds an MSR protocol request, not a page GPA.
    unsafe { vmgexit() };
    // SAFETY: the hypervisor left its answer in the MSR.
    unsafe { read_ghcb_msr() }
}
