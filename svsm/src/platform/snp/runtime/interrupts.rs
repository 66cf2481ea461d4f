//! The SEV-SNP hook of the kernel's interrupt dispatcher: #VC and hostile vectors.

use super::{fail, get};
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
