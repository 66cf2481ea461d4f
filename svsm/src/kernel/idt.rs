//! The IDT: every vector on an IST stack, one dispatcher.
//!
//! The entry path ([`interrupt_enter`]) moves each handler off its IST stack onto the
//! interrupted stack below its red zone, so the same vector can arrive again while the
//! handler runs (a hostile hypervisor injects what it likes); what cannot nest safely
//! ends the SVSM with its reason ([`svsm::nesting`]). #DF stays on its stack.
//!
//! Exceptions are fatal (the SVSM reports the frame and terminates), except a fault of
//! a guarded guest-memory copy, which resumes at its fixup; the timer vector
//! counts ticks (the interrupt stress test uses it); the IPI vector runs this CPU's
//! pending calls and TLB shootdowns (`svsm::smp`); the APIC's spurious vector is
//! ignored; any other vector is logged and acknowledged.
#![allow(unsafe_code, reason = "IDT gates point at assembly stubs")]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use spin::Once;
use svsm::arch::interrupts::{stub_address, InterruptFrame};
use svsm::nesting::{self, Decision, NestError};
use x86_64::instructions::segmentation::{Segment, CS};
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{Entry, InterruptDescriptorTable};
use x86_64::VirtAddr;

use super::apic;
use super::exit::terminate;
use super::{gdt, percpu};

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

/// The IST slot (1-based) of `vector`'s gate: #DF, NMI and #MC, #HV each have their
/// own stack, the other exceptions share one, external vectors another.
pub fn ist_of(vector: u8) -> u16 {
    match vector {
        8 => gdt::IST_DOUBLE_FAULT,
        2 | 18 => gdt::IST_NMI,
        28 => gdt::IST_HV,
        0..=31 => gdt::IST_EXCEPTION,
        _ => gdt::IST_INTERRUPT,
    }
}

/// Loads the IDT. `gdt::init` must have run.
pub fn init() {
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        gate(&mut idt.divide_error, 0, ist_of(0));
        gate(&mut idt.debug, 1, ist_of(1));
        gate(&mut idt.non_maskable_interrupt, 2, ist_of(2));
        gate(&mut idt.breakpoint, 3, ist_of(3));
        gate(&mut idt.overflow, 4, ist_of(4));
        gate(&mut idt.bound_range_exceeded, 5, ist_of(5));
        gate(&mut idt.invalid_opcode, 6, ist_of(6));
        gate(&mut idt.device_not_available, 7, ist_of(7));
        gate(&mut idt.double_fault, 8, ist_of(8));
        gate(&mut idt.invalid_tss, 10, ist_of(10));
        gate(&mut idt.segment_not_present, 11, ist_of(11));
        gate(&mut idt.stack_segment_fault, 12, ist_of(12));
        gate(&mut idt.general_protection_fault, 13, ist_of(13));
        gate(&mut idt.page_fault, 14, ist_of(14));
        gate(&mut idt.x87_floating_point, 16, ist_of(16));
        gate(&mut idt.alignment_check, 17, ist_of(17));
        gate(&mut idt.machine_check, 18, ist_of(18));
        gate(&mut idt.simd_floating_point, 19, ist_of(19));
        gate(&mut idt.virtualization, 20, ist_of(20));
        gate(&mut idt.cp_protection_exception, 21, ist_of(21));
        gate(&mut idt.hv_injection_exception, 28, ist_of(28));
        gate(&mut idt.vmm_communication_exception, 29, ist_of(29));
        gate(&mut idt.security_exception, 30, ist_of(30));
        for (i, entry) in idt.slice_mut(32..=255).iter_mut().enumerate() {
            let vector = u8::try_from(32 + i).expect("vectors 32..=255 fit a byte");
            gate(entry, vector, ist_of(vector));
        }
        idt
    });
    idt.load();
}

/// A self-test's handler: runs first for every vector while installed; `true` means
/// it dealt with the vector.
pub type TestHook = fn(&mut InterruptFrame) -> bool;

static TEST_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs (or, with `None`, removes) the self-test hook.
pub fn set_test_hook(hook: Option<TestHook>) {
    TEST_HOOK.store(hook.map_or(0, |h| h as usize), Ordering::SeqCst);
}

fn test_hook() -> Option<TestHook> {
    match TEST_HOOK.load(Ordering::SeqCst) {
        0 => None,
        // SAFETY: a non-zero value is only ever stored from a `TestHook` by
        // `set_test_hook`, so it is a valid function pointer of that type.
        h => Some(unsafe { core::mem::transmute::<usize, TestHook>(h) }),
    }
}

/// Ends the SVSM from the entry path: the frame it would return through is lost, or
/// the handler may not nest deeper. Console output is dropped under SEV-SNP when the
/// interrupted code holds the GHCB.
fn nesting_fatal(error: NestError, frame: &InterruptFrame) -> ! {
    x86_64::instructions::interrupts::disable();
    log::error!(
        "SVSM terminated: vector {} at rip {:#x}, rsp {:#x}: {error}",
        frame.vector,
        frame.rip,
        frame.rsp
    );
    svsm::platform::snp::runtime::terminate_if_snp(&svsm::snp::SnpError::Nesting(error));
    super::exit::exit(super::exit::ExitCode::Failure)
}

/// Called by the common interrupt stub on the IST stack with the frame it saved;
/// returns where the frame is to live while the handler runs (see [`svsm::nesting`]).
#[unsafe(no_mangle)]
extern "C" fn interrupt_enter(frame: *mut InterruptFrame) -> *mut InterruptFrame {
    let cpu = percpu::current();
    let stacks = cpu.stacks();
    let here = frame as u64;
    // SAFETY: the stub passes the frame it just saved on this CPU's IST stack.
    let saved = unsafe { &*frame };
    let interrupted = nesting::Interrupted {
        vector: (saved.vector & 0xff) as u8,
        frame: here,
        cs: saved.cs,
        rsp: saved.rsp,
    };
    let decision = nesting::decide(
        &interrupted,
        // The handler's CS is the gate's, the kernel's one code selector.
        u64::from(CS::get_reg().0),
        &stacks,
        &cpu.nesting_state(),
        |slot| {
            let top = stacks.ist[slot].end;
            // SAFETY: the last quadwords of this CPU's IST stack `slot` (mapped, the
            // stack's own memory), where the CPU stored the interrupted RSP of the
            // event whose handler is in its entry window there (AMD APM vol. 2 §8.9.3
            // "Interrupt Stack Frame").
            unsafe { core::ptr::read_volatile((top - nesting::TOP_FRAME_RSP) as *const u64) }
        },
    );
    match decision {
        Decision::Switch {
            frame: target,
            windows,
        } => {
            cpu.enter_handler(&windows);
            let target = target as *mut InterruptFrame;
            // SAFETY: `target` lies on this CPU's kernel stack below the interrupted
            // code's red zone with room for the handler below it (`decide`), memory no
            // live frame uses; the source is the frame on the IST stack, which does not
            // overlap it.
            unsafe { core::ptr::copy_nonoverlapping(frame, target, 1) };
            target
        }
        Decision::Stay(error) => {
            if error != NestError::DoubleFault {
                log::warn!(
                    "interrupt: vector {} at rip {:#x} stays on its IST stack: {error}",
                    saved.vector,
                    saved.rip
                );
            }
            frame
        }
        Decision::Fatal(error) => nesting_fatal(error, saved),
    }
}

/// Called by the common interrupt stub with the saved registers, on the stack
/// `interrupt_enter` chose.
#[unsafe(no_mangle)]
extern "C" fn interrupt_dispatch(frame: &mut InterruptFrame) {
    let cpu = percpu::current();
    let on_ist = cpu
        .stacks()
        .ist_slot_of(core::ptr::from_mut(frame) as u64)
        .is_some();
    if !on_ist {
        // Off the IST stack: this vector's entry window is closed.
        cpu.leave_window(usize::from(ist_of((frame.vector & 0xff) as u8)) - 1);
    }
    dispatch(frame);
    if on_ist {
        // A handler that could not leave its IST stack (reason logged at entry) must not
        // return: another event on that slot would overwrite its frame.
        terminate(format_args!(
            "vector {} at rip {:#x} was handled on its IST stack",
            frame.vector, frame.rip
        ));
    }
    cpu.leave_handler();
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

/// The handler of every vector.
fn dispatch(frame: &mut InterruptFrame) {
    if let Some(hook) = test_hook() {
        if hook(frame) {
            return;
        }
    }
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
                    || super::smp::in_guard(cr2))
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
