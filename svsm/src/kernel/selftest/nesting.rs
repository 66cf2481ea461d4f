//! Self-test of nested interrupts: a handler that raises its own vector again (and
//! another vector in between) finds its frame intact afterwards, and the interrupted
//! code gets its registers back.
//!
//! `int $28` enters through the #HV gate and its IST stack exactly as an injected #HV
//! does (no error code is pushed for vector 28), so this is the hostile-hypervisor case
//! of a #HV inside the #HV handler; vector 0x41 (unused) stands for an external vector
//! on the interrupt IST stack.
#![allow(unsafe_code, reason = "raises vectors with INT n and reads RSP")]

use core::sync::atomic::{AtomicU64, Ordering};

use svsm::arch::interrupts::InterruptFrame;

use super::{ensure, Outcome, Test};
use crate::kernel::{idt, percpu};

pub const TESTS: &[(&str, Test)] = &[(
    "interrupt_nested_same_vector_keeps_the_outer_frame",
    nested_same_vector_keeps_the_outer_frame,
)];

const VECTOR_HV: u64 = 28;
const VECTOR_OTHER: u64 = 0x41;
/// What the test puts in RBX and R12 before `int $28`.
const MAGIC_RBX: u64 = 0x5eed_0000_cafe_f00d;
const MAGIC_R12: u64 = 0x0123_4567_89ab_cdef;

/// Per depth (1..=3): the frame's address, and a failure (0: none).
static FRAME_AT: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static FAILURE: AtomicU64 = AtomicU64::new(0);
static INNERMOST_RAN: AtomicU64 = AtomicU64::new(0);

fn fail(code: u64) {
    let _ = FAILURE.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
}

fn raise_hv() {
    // SAFETY: INT 28 through the kernel's #HV gate (DPL 0, CPL 0; AMD APM vol. 2 §8.2
    // "Vectors", §8.9 "Long-mode interrupt control transfers"), handled by `hook`,
    // which returns; it clobbers no register (the stub saves them all).
    unsafe { core::arch::asm!("int 28") };
}

fn raise_other() {
    // SAFETY: as for `raise_hv`, vector 0x41 through an interrupt gate.
    unsafe { core::arch::asm!("int 0x41") };
}

/// The copy of what the CPU saved, to compare after the nested vector returned.
fn snapshot(frame: &InterruptFrame) -> [u64; 8] {
    [
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        frame.ss,
        frame.rbx,
        frame.r12,
        frame.vector,
    ]
}

fn hook(frame: &mut InterruptFrame) -> bool {
    if frame.vector != VECTOR_HV && frame.vector != VECTOR_OTHER {
        return false;
    }
    let cpu = percpu::current();
    let depth = cpu.depth() as usize;
    let here = core::ptr::from_mut(frame) as u64;
    if !(1..=3).contains(&depth) {
        fail(0x100 + depth as u64);
        return true;
    }
    FRAME_AT[depth].store(here, Ordering::SeqCst);
    // The handler runs off its IST stack, below the one it interrupted.
    if cpu.stacks().ist_slot_of(here).is_some() {
        fail(0x200 + depth as u64);
    }
    if depth > 1 && here >= FRAME_AT[depth - 1].load(Ordering::SeqCst) {
        fail(0x300 + depth as u64);
    }
    let before = snapshot(frame);
    match (depth, frame.vector) {
        // #HV, then another vector inside it, then #HV again inside that.
        (1, VECTOR_HV) => raise_other(),
        (2, VECTOR_OTHER) => raise_hv(),
        (3, VECTOR_HV) => {
            INNERMOST_RAN.store(1, Ordering::SeqCst);
        }
        _ => fail(0x400 + depth as u64),
    }
    if snapshot(frame) != before {
        fail(0x500 + depth as u64);
    }
    true
}

fn nested_same_vector_keeps_the_outer_frame() -> Outcome {
    for f in &FRAME_AT {
        f.store(0, Ordering::SeqCst);
    }
    FAILURE.store(0, Ordering::SeqCst);
    INNERMOST_RAN.store(0, Ordering::SeqCst);
    let depth_before = percpu::current().depth();
    idt::set_test_hook(Some(hook));
    let (rbx, r12): (u64, u64);
    // SAFETY: INT 28 as in `raise_hv`; RBX (saved and restored around, since LLVM
    // reserves it) and R12 carry values the handler must hand back unchanged.
    unsafe {
        core::arch::asm!(
            "xchg {b}, rbx",
            "int 28",
            "xchg {b}, rbx",
            b = inout(reg) MAGIC_RBX => rbx,
            inout("r12") MAGIC_R12 => r12,
        )
    };
    idt::set_test_hook(None);
    let failure = FAILURE.load(Ordering::SeqCst);
    ensure!(failure == 0, "handler check {failure:#x} failed");
    ensure!(
        INNERMOST_RAN.load(Ordering::SeqCst) == 1,
        "the third handler did not run"
    );
    ensure!(
        rbx == MAGIC_RBX && r12 == MAGIC_R12,
        "registers came back as {rbx:#x}, {r12:#x}"
    );
    ensure!(
        percpu::current().depth() == depth_before,
        "nesting depth {} after the handlers returned",
        percpu::current().depth()
    );
    let frames = [1, 2, 3].map(|d| FRAME_AT[d].load(Ordering::SeqCst));
    log::info!(
        "interrupt: nested #HV, vector 0x41, #HV ran with frames at {:#x}, {:#x}, {:#x}",
        frames[0],
        frames[1],
        frames[2]
    );
    Ok(())
}

fn recurse_hook(frame: &mut InterruptFrame) -> bool {
    if frame.vector != VECTOR_OTHER {
        return false;
    }
    raise_other();
    true
}

/// `crash=nest-depth`: a handler that raises its own vector again, without end; the
/// entry path must stop it at the depth bound with its reason.
pub fn crash_too_deep() {
    idt::set_test_hook(Some(recurse_hook));
    raise_other();
    idt::set_test_hook(None);
}

/// `crash=vc-without-error-code`: `int 29` enters the #VC gate without the error code
/// the CPU pushes for a real #VC, as a hypervisor injecting #VC without one would; the
/// entry path must refuse the misread frame.
pub fn crash_misframed_vc() {
    // SAFETY: INT 29 through the kernel's #VC gate (AMD APM vol. 2 §8.9); the entry path
    // ends the SVSM on the frame it cannot read, so nothing returns here.
    unsafe { core::arch::asm!("int 29") };
}
