//! `setjmp`/`longjmp` for the C engine (non-local exits inside libtpms and OpenSSL).
//!
//! The buffer holds the System V callee-saved registers, the stack pointer and the return
//! address (8 quadwords; glibc's `jmp_buf` is 200 bytes, so callers' buffers are large
//! enough). Signal masks do not exist here, so `__sigsetjmp`'s mask argument is ignored.
//! `__longjmp_chk` (what `_FORTIFY_SOURCE` code calls) refuses to jump to a frame below
//! the current stack pointer, which would resume on a dead frame: it ends the SVSM
//! through `__longjmp_chk_fail` instead.
#![allow(unsafe_code, reason = "saving and restoring callee-saved registers")]

// SAFETY: these follow the System V AMD64 ABI §3.2.1 (callee-saved rbx, rbp, r12-r15, rsp)
// and are only called by C code that passes a `jmp_buf` it owns. They read and write the
// 64 bytes of that buffer and nothing else.
core::arch::global_asm!(
    r#"
    .text
    .globl setjmp
    .globl _setjmp
    .globl __sigsetjmp
setjmp:
_setjmp:
__sigsetjmp:
    mov %rbx, 0(%rdi)
    mov %rbp, 8(%rdi)
    mov %r12, 16(%rdi)
    mov %r13, 24(%rdi)
    mov %r14, 32(%rdi)
    mov %r15, 40(%rdi)
    lea 8(%rsp), %rdx           /* the caller's rsp after this call returns */
    mov %rdx, 48(%rdi)
    mov (%rsp), %rdx            /* the return address */
    mov %rdx, 56(%rdi)
    xor %eax, %eax
    ret

    .globl __longjmp_chk
__longjmp_chk:
    cmp %rsp, 48(%rdi)
    jb __longjmp_chk_fail       /* target frame lies below us: it is gone */
    /* fall through */
    .globl longjmp
    .globl _longjmp
longjmp:
_longjmp:
    mov %esi, %eax
    test %eax, %eax
    jnz 1f
    inc %eax                    /* longjmp(env, 0) returns 1 */
1:  mov 0(%rdi), %rbx
    mov 8(%rdi), %rbp
    mov 16(%rdi), %r12
    mov 24(%rdi), %r13
    mov 32(%rdi), %r14
    mov 40(%rdi), %r15
    mov 48(%rdi), %rsp
    jmp *56(%rdi)

    /* A C-shaped caller for tests: _setjmp, then __longjmp_chk(env, value) once (what
       FORTIFY-built code calls); returns what the second return of _setjmp returned. */
    .globl setjmp_round_trip
setjmp_round_trip:
    push %rbx
    push %r12
    sub $72, %rsp               /* 64-byte jmp_buf, keeps rsp 16-byte aligned */
    mov %edi, %r12d             /* the value to jump with, in a callee-saved register */
    mov $0x5eed, %ebx
    mov %rsp, %rdi
    call _setjmp
    test %eax, %eax
    jnz 2f
    xor %ebx, %ebx              /* clobber: longjmp must restore rbx */
    mov %rsp, %rdi
    mov %r12d, %esi
    call __longjmp_chk
    ud2
2:  cmp $0x5eed, %ebx
    je 3f
    mov $-1, %eax               /* rbx was not restored */
3:  add $72, %rsp
    pop %r12
    pop %rbx
    ret

    /* For tests: _setjmp in a callee that then returns, and __longjmp_chk to that dead
       frame from the caller. The check must refuse (and end the SVSM). */
    .globl longjmp_into_dead_frame
longjmp_into_dead_frame:
    sub $72, %rsp               /* the jmp_buf lives in this (still live) frame */
    mov %rsp, %rdi
    call 4f                     /* callee: _setjmp with its own, deeper stack pointer */
    mov %rsp, %rdi
    mov $1, %esi
    call __longjmp_chk          /* target rsp is below ours: refused */
    ud2
4:  sub $24, %rsp               /* a deeper frame */
    call _setjmp
    add $24, %rsp
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn setjmp_round_trip(value: i32) -> i32;
}

/// Runs `_setjmp` then `__longjmp_chk(env, value)` from assembly and returns what the second
/// return of `setjmp` produced (`-1` if a callee-saved register was not restored).
pub fn round_trip(value: i32) -> i32 {
    // SAFETY: the routine uses only its own stack frame (System V ABI compliant).
    unsafe { setjmp_round_trip(value) }
}

unsafe extern "C" {
    fn longjmp_into_dead_frame() -> !;
}

/// Calls `__longjmp_chk` with a buffer saved by a frame that has returned: FORTIFY's
/// check must refuse it, which ends the SVSM (used by the fatal-path tests).
pub fn jump_into_dead_frame() -> ! {
    // SAFETY: the routine never returns: `__longjmp_chk` refuses the jump and ends the
    // SVSM through `__longjmp_chk_fail`.
    unsafe { longjmp_into_dead_frame() }
}
