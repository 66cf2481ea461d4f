//! The SEV-SNP hook of the kernel's interrupt dispatcher: #VC and hostile vectors.

use super::{doorbell, fail, get};
use crate::arch::interrupts::InterruptFrame;
use crate::snp::vc::VcRegisters;
use crate::snp::vector::{classify, handle_vector, VectorAction, VectorOutcome};

/// The hook at the top of the kernel's interrupt dispatcher: resolves #VC, stops on
/// exceptions the SVSM cannot survive, leaves everything else to the kernel.
/// Returns `true` when the vector was dealt with.
pub fn handle_interrupt(frame: &mut InterruptFrame) -> bool {
    let Some(rt) = get() else { return false };
    let vector = (frame.vector & 0xFF) as u8;
    let config = rt.interrupts;
    match classify(vector, &config) {
        VectorAction::HandleVc => {}
        // An external vector with a registered hook (directly injected: no restricted
        // injection) runs it; injected NMI, #DB, #BP, #HV without a doorbell, or any
        // other vector are noise: no EOI, no fault, logged unless the console's GHCB is
        // the interrupted code's.
        VectorAction::Spurious(v) => {
            if !doorbell::dispatch_direct(v, frame) && !doorbell::quiet(rt.client()) {
                log::warn!("snp: ignoring injected vector {v}");
            }
            return true;
        }
        VectorAction::HvDoorbell => {
            doorbell::handle_hv(frame);
            return true;
        }
        VectorAction::Fatal(e) => {
            if doorbell::quiet(rt.client()) {
                fail(&rt.hv, &e)
            }
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
        rt.client(),
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
