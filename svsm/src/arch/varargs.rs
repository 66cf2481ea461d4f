//! Entry points for the C engine's variadic `printf` calls: each builds a System V
//! `va_list` over its own arguments and calls the `v`-variant, as a C compiler's
//! prologue for a variadic function would.
//!
//! Stable Rust cannot define a variadic function, so these two are assembly. The
//! register save area holds the six integer argument registers (rdi, rsi, rdx, rcx, r8,
//! r9; System V AMD64 ABI §3.5.7); `gp_offset` skips the named ones; `fp_offset` is 176
//! (all vector registers consumed: no floating-point argument is ever read, the kernel
//! is soft-float); `overflow_arg_area` is the caller's stack arguments, just above the
//! return address.
//!
//! | symbol | named arguments | calls, with the `va_list *` as |
//! |---|---|---|
//! | `__snprintf_chk(buf, len, flag, slen, fmt, ...)` | 5 | `__vsnprintf_chk`, 6th (r9) |
//! | `__asprintf_chk(out, flag, fmt, ...)` | 3 | `__vasprintf_chk`, 4th (rcx) |
#![allow(unsafe_code, reason = "variadic C entry points in assembly")]

// SAFETY: System V AMD64 ABI §3.5.7 (va_list layout and register save area). Each entry
// uses 72 bytes of its own stack (48 for the registers, 24 for the va_list), keeps the
// stack 16-byte aligned at the call (entry rsp is 8 mod 16; 8 + 72 = 80), passes the
// named arguments through unchanged, and returns what the v-variant returns.
core::arch::global_asm!(
    r#"
    .text
    .globl __snprintf_chk
    .type __snprintf_chk,@function
__snprintf_chk:
    sub $72, %rsp
    mov %rdi, 0(%rsp)
    mov %rsi, 8(%rsp)
    mov %rdx, 16(%rsp)
    mov %rcx, 24(%rsp)
    mov %r8, 32(%rsp)
    mov %r9, 40(%rsp)
    movl $40, 48(%rsp)          /* gp_offset: 5 named integer arguments */
    movl $176, 52(%rsp)         /* fp_offset: none */
    lea 80(%rsp), %rax          /* overflow_arg_area: the caller's stack arguments */
    mov %rax, 56(%rsp)
    mov %rsp, 64(%rsp)          /* reg_save_area */
    lea 48(%rsp), %r9           /* the va_list, as the 6th argument */
    call __vsnprintf_chk
    add $72, %rsp
    ret

    .globl __asprintf_chk
    .type __asprintf_chk,@function
__asprintf_chk:
    sub $72, %rsp
    mov %rdi, 0(%rsp)
    mov %rsi, 8(%rsp)
    mov %rdx, 16(%rsp)
    mov %rcx, 24(%rsp)
    mov %r8, 32(%rsp)
    mov %r9, 40(%rsp)
    movl $24, 48(%rsp)          /* gp_offset: 3 named integer arguments */
    movl $176, 52(%rsp)
    lea 80(%rsp), %rax
    mov %rax, 56(%rsp)
    mov %rsp, 64(%rsp)
    lea 48(%rsp), %rcx          /* the va_list, as the 4th argument */
    call __vasprintf_chk
    add $72, %rsp
    ret
"#,
    options(att_syntax)
);
