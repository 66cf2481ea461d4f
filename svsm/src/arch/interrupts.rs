//! Interrupt entry stubs and interrupt-flag control (`CLI`, `STI`, `HLT`, `IRETQ`).
//!
//! One 16-byte stub per vector pushes a zero error code where the CPU pushes none, then
//! the vector number, and jumps to a common path that saves the general-purpose
//! registers, calls `interrupt_enter(&InterruptFrame) -> *mut InterruptFrame` (defined
//! by the kernel: where the handler runs, see [`crate::nesting`]), moves to the frame it
//! returns and calls `interrupt_dispatch(&mut InterruptFrame)` there. Every IDT gate
//! uses an IST stack (set up by the kernel), so the CPU never pushes onto the
//! interrupted stack: the C engine's assembly keeps live data in the red zone below
//! `%rsp`, which the copy skips. Kernel Rust code is built soft-float and never touches the SSE
//! registers, so the stubs need not save them.
#![allow(
    unsafe_code,
    reason = "interrupt entry and exit can only be written in assembly"
)]

/// Size of one stub in `isr_stubs`.
pub const STUB_SIZE: u64 = 16;

/// The registers as the common stub leaves them on the IST stack.
#[repr(C)]
#[derive(Debug)]
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector the stub pushed.
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// SAFETY: entered only by the CPU through IDT gates (AMD APM vol. 2 §8.9 "Long-mode
// interrupt control transfers": the CPU pushes SS, RSP, RFLAGS, CS, RIP and, for vectors
// 8, 10-14, 17, 21, 29 and 30, an error code, on a 16-byte aligned IST stack). The stubs
// keep that stack 16-byte aligned at the call (5 + 2 + 15 quadwords = 176 bytes).
// `interrupt_enter` returns where the frame is to live from now on: a 16-byte aligned
// copy below the interrupted stack's red zone (`svsm::nesting`), or the same frame; the
// stub moves RSP there, so the handler, the register restore and IRETQ (§8.9.5) run
// off the IST stack, which a nested event may then reuse.
core::arch::global_asm!(
    r#"
    .section .text.isr, "ax"
    .balign 16
    .globl isr_stubs
isr_stubs:
    .set isr_vector, 0
    .rept 256
    .balign 16
    .if (isr_vector == 8) || (isr_vector == 10) || (isr_vector == 11) || (isr_vector == 12) || (isr_vector == 13) || (isr_vector == 14) || (isr_vector == 17) || (isr_vector == 21) || (isr_vector == 29) || (isr_vector == 30)
    .else
    pushq $0
    .endif
    pushq $isr_vector
    jmp isr_common
    .set isr_vector, isr_vector + 1
    .endr

isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call interrupt_enter
    mov %rax, %rsp
    mov %rax, %rdi
    call interrupt_dispatch
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq
    .text
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static isr_stubs: u8;
}

/// Address of the entry stub for `vector`.
pub fn stub_address(vector: u8) -> u64 {
    core::ptr::addr_of!(isr_stubs) as u64 + u64::from(vector) * STUB_SIZE
}

/// Allows maskable interrupts (`STI`).
pub fn enable() {
    x86_64::instructions::interrupts::enable();
}

/// Masks maskable interrupts (`CLI`).
pub fn disable() {
    x86_64::instructions::interrupts::disable();
}

/// Whether maskable interrupts are enabled (RFLAGS.IF).
pub fn are_enabled() -> bool {
    x86_64::instructions::interrupts::are_enabled()
}

/// Allows interrupts and waits for the next one (`STI; HLT`: no interrupt can slip in
/// between), then masks them again.
pub fn wait_for_interrupt() {
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
}

/// Waits for the next interrupt (`HLT`).
pub fn halt() {
    x86_64::instructions::hlt();
}
