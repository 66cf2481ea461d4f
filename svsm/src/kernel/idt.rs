//! The IDT: every vector on an IST stack, one dispatcher.
//!
//! Exceptions are fatal (the SVSM reports the frame and terminates), except a fault of
//! a guarded guest-memory copy, which resumes at its fixup; the timer vector
//! counts ticks (the interrupt stress test uses it); the IPI vector runs this CPU's
//! pending calls and TLB shootdowns (`svsm::smp`); the APIC's spurious vector is
//! ignored; any other vector is logged and acknowledged.
#![allow(unsafe_code, reason = "IDT gates point at assembly stubs")]

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;
use svsm::arch::interrupts::{stub_address, InterruptFrame};
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{Entry, InterruptDescriptorTable};
use x86_64::VirtAddr;

use super::apic;
use super::exit::terminate;
use super::gdt;

/// The vector of the local APIC timer.
pub const TIMER_VECTOR: u8 = 0x20;
/// The local APIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

static IDT: Once<InterruptDescriptorTable> = Once::new();
static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);

/// Timer interrupts taken since boot.
pub fn timer_ticks() -> u64 {
    TIMER_TICKS.load(Ordering::Relaxed)
}

fn gate<F>(entry: &mut Entry<F>, vector: u8, ist: u16) {
    // SAFETY: the stub for `vector` is valid interrupt-entry code (arch::interrupts), and
    // the IST slot has a stack in the TSS loaded by `gdt::init` (AMD APM vol. 2 §8.9.4
    // "Interrupt-stack table").
    let options = unsafe { entry.set_handler_addr(VirtAddr::new(stub_address(vector))) };
    // SAFETY: as above: the IST slot `ist` holds a valid stack.
    unsafe { options.set_stack_index(ist - 1) };
}

/// Loads the IDT. `gdt::init` must have run.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        let e = gdt::IST_EXCEPTION;
        gate(&mut idt.divide_error, 0, e);
        gate(&mut idt.debug, 1, e);
        gate(&mut idt.non_maskable_interrupt, 2, gdt::IST_NMI);
        gate(&mut idt.breakpoint, 3, e);
        gate(&mut idt.overflow, 4, e);
        gate(&mut idt.bound_range_exceeded, 5, e);
        gate(&mut idt.invalid_opcode, 6, e);
        gate(&mut idt.device_not_available, 7, e);
        gate(&mut idt.double_fault, 8, gdt::IST_DOUBLE_FAULT);
        gate(&mut idt.invalid_tss, 10, e);
        gate(&mut idt.segment_not_present, 11, e);
        gate(&mut idt.stack_segment_fault, 12, e);
        gate(&mut idt.general_protection_fault, 13, e);
        gate(&mut idt.page_fault, 14, e);
        gate(&mut idt.x87_floating_point, 16, e);
        gate(&mut idt.alignment_check, 17, e);
        gate(&mut idt.machine_check, 18, gdt::IST_NMI);
        gate(&mut idt.simd_floating_point, 19, e);
        gate(&mut idt.virtualization, 20, e);
        gate(&mut idt.cp_protection_exception, 21, e);
        gate(&mut idt.hv_injection_exception, 28, gdt::IST_HV);
        gate(&mut idt.vmm_communication_exception, 29, e);
        gate(&mut idt.security_exception, 30, e);
        for (i, entry) in idt.slice_mut(32..=255).iter_mut().enumerate() {
            let vector = u8::try_from(32 + i).expect("vectors 32..=255 fit a byte");
            gate(entry, vector, gdt::IST_INTERRUPT);
        }
        idt
    });
    idt.load();
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved 31",
];

/// Called by the common interrupt stub with the saved registers.
#[unsafe(no_mangle)]
extern "C" fn interrupt_dispatch(frame: &mut InterruptFrame) {
    // A guarded access to guest memory that faulted: resume at its fixup, which returns
    // the error (arch::extable). Before the SEV-SNP hook, which would treat the #VC of
    // an unvalidated page as fatal.
    if svsm::arch::extable::fixup(frame) {
        return;
    }
    // SEV-SNP: #VC and the faults an SNP guest cannot survive (a no-op otherwise).
    if svsm::platform::snp::runtime::handle_interrupt(frame) {
        return;
    }
    match frame.vector {
        v if v < 32 => {
            let name = EXCEPTION_NAMES[v as usize];
            let cr2 = if v == 14 { Cr2::read_raw() } else { 0 };
            let stack = svsm::arch::entry::boot_stack();
            let in_guard = |page: u64| (page..page + 4096).contains(&cr2);
            if v == 14
                && (in_guard(stack.guard)
                    || gdt::guard_pages().into_iter().any(in_guard)
                    || super::smp::guard_pages().any(in_guard))
            {
                terminate(format_args!(
                    "stack overflow: write to the guard page at {cr2:#x} from rip {:#x}",
                    frame.rip
                ));
            }
            terminate(format_args!(
                "exception {name} (vector {v}, error code {:#x}) at rip {:#x}, rsp {:#x}, cr2 {cr2:#x}",
                frame.error_code, frame.rip, frame.rsp
            ));
        }
        v if v == u64::from(TIMER_VECTOR) => {
            TIMER_TICKS.fetch_add(1, Ordering::Relaxed);
            apic::end_of_interrupt();
        }
        // Under SEV-SNP the SEV-SNP hook above runs the IPI vector's registered hook.
        v if v == u64::from(svsm::smp::IPI_VECTOR) => {
            svsm::smp::handle_ipi();
            apic::end_of_interrupt();
        }
        v if v == u64::from(SPURIOUS_VECTOR) => {}
        v => {
            log::warn!("unexpected interrupt vector {v}");
            apic::end_of_interrupt();
        }
    }
}
