//! Self-test of the loaded IDT: every gate switches to an IST stack, and #HV has a
//! stack of its own.
#![allow(
    unsafe_code,
    reason = "reads the IDT the CPU uses, through SIDT's base"
)]

use svsm::arch::interrupts::stub_address;

use super::{ensure, Outcome, Test};
use crate::kernel::gdt;

pub const TESTS: &[(&str, Test)] = &[("idt_ist_stacks_and_hv_alone", idt_ist_stacks_and_hv_alone)];

/// #HV.
const VECTOR_HV: usize = 28;

fn idt_ist_stacks_and_hv_alone() -> Outcome {
    let idtr = x86_64::instructions::tables::sidt();
    ensure!(
        usize::from(idtr.limit) + 1 >= 256 * 16,
        "IDT limit {:#x} is short of 256 gates",
        idtr.limit
    );
    for vector in 0..256usize {
        let mut gate = [0u8; 16];
        // SAFETY: SIDT names the loaded IDT (AMD APM vol. 2 §4.6.6 "Global and Local
        // Descriptor-Table Registers" / "Interrupt-Descriptor-Table Register"), at least
        // 256 16-byte gates long (checked above), which the kernel never frees.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (idtr.base.as_u64() as usize + vector * 16) as *const u8,
                gate.as_mut_ptr(),
                16,
            )
        };
        // Long-mode interrupt gate (§4.8.4): offset 15:0 in bytes 0-1, 31:16 in 6-7,
        // 63:32 in 8-11; the IST index in bits 2:0 of byte 4.
        let offset = u64::from(u16::from_le_bytes([gate[0], gate[1]]))
            | u64::from(u16::from_le_bytes([gate[6], gate[7]])) << 16
            | u64::from(u32::from_le_bytes([gate[8], gate[9], gate[10], gate[11]])) << 32;
        let ist = u16::from(gate[4] & 7);
        let present = gate[5] & 0x80 != 0;
        if !present {
            // Vectors 9, 15, 22-27 and 31 are reserved; the crate leaves them absent.
            continue;
        }
        ensure!(ist != 0, "vector {vector} runs on the interrupted stack");
        ensure!(
            offset == stub_address(vector as u8),
            "vector {vector} points at {offset:#x}, not its stub"
        );
        if vector == VECTOR_HV {
            ensure!(
                ist == gdt::IST_HV,
                "#HV uses IST {ist}, not {}",
                gdt::IST_HV
            );
        } else {
            ensure!(ist != gdt::IST_HV, "vector {vector} shares the #HV stack");
        }
    }
    Ok(())
}
