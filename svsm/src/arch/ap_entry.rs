//! The application processors' entry: the real-mode trampoline a start-up IPI runs.
//!
//! Intel SDM vol. 3A "Multiple-Processor (MP) Initialization" and AMD APM vol. 2
//! §14.1 "Processor Initialization": after INIT and a start-up IPI with vector `v`, an
//! AP starts in real mode at CS = `v << 8`, IP = 0. The trampoline (copied by the boot
//! CPU to [`TRAMPOLINE_BASE`]) loads its own GDT, enters protected mode, enables PAE,
//! loads the entry's identity page tables (`boot_pml4`: the low 4 GiB, executable),
//! sets EFER.LME and NXE, enables paging (APM vol. 2 §14.6 "Enabling and activating
//! long mode") and far-jumps to 64-bit code, which takes its stack, CPU index, the
//! kernel's CR3 and the kernel entry from the trampoline's parameter block and jumps
//! into the kernel's text. There `ap_entry64` switches to the kernel's page tables
//! (the trampoline page is not executable in them) and calls `ap_start(index)`.
//!
//! One AP starts at a time: the boot CPU fills the parameter block, starts the AP and
//! waits until the AP reports that it no longer needs the trampoline page.
#![allow(unsafe_code, reason = "mode switches can only be written in assembly")]

/// Where the trampoline runs (start-up vector 0x08).
pub const TRAMPOLINE_BASE: u64 = 0x8000;

// SAFETY: the trampoline is data in the image (copied to TRAMPOLINE_BASE before use);
// only an AP started with vector TRAMPOLINE_BASE >> 12 executes it, in real mode with
// interrupts disabled. It touches its own page (parameters, GDT), control registers
// and EFER as the sections cited above define, and jumps to `ap_entry64`.
// `ap_entry64` is entered only from there, with RAX = the kernel's CR3, RDI = the CPU
// index and RSP = the top of the CPU's own stack. `snp_ap_entry` is where an SEV-SNP
// SVSM vCPU's VMSA starts it, in long mode with RDI = its index and RSP = the
// 16-byte aligned top of its own stack; it calls `snp_ap_main`.
core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .balign 4096
    .globl ap_trampoline_start
ap_trampoline_start:
    .code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_gdt_pointer - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax                         /* CR0.PE */
    mov %eax, %cr0
    ljmpl $0x08, ${base} + (ap_pm32 - ap_trampoline_start)

    .code32
ap_pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $(1 << 5), %eax                  /* CR4.PAE */
    mov %eax, %cr4
    mov ({base} + (ap_boot_cr3 - ap_trampoline_start)), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx               /* EFER */
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax    /* LME | NXE */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax                /* PG | PE */
    mov %eax, %cr0
    ljmp $0x18, ${base} + (ap_lm64 - ap_trampoline_start)

    .code64
ap_lm64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov ({base} + (ap_stack - ap_trampoline_start)), %rsp
    mov ({base} + (ap_index - ap_trampoline_start)), %rdi
    mov ({base} + (ap_kernel_cr3 - ap_trampoline_start)), %rax
    mov ({base} + (ap_entry - ap_trampoline_start)), %rbx
    jmp *%rbx

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff            /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff            /* 0x10: data */
    .quad 0x00af9a000000ffff            /* 0x18: 64-bit code */
ap_gdt_end:
ap_gdt_pointer:
    .word ap_gdt_end - ap_gdt - 1
    .long {base} + (ap_gdt - ap_trampoline_start)
    .balign 8
    .globl ap_boot_cr3
ap_boot_cr3:
    .quad 0
    .globl ap_kernel_cr3
ap_kernel_cr3:
    .quad 0
    .globl ap_stack
ap_stack:
    .quad 0
    .globl ap_index
ap_index:
    .quad 0
    .globl ap_entry
ap_entry:
    .quad 0
    .globl ap_trampoline_end
ap_trampoline_end:

    .section .text.snp_ap_entry, "ax"
    .globl snp_ap_entry
snp_ap_entry:
    xor %ebp, %ebp
    call snp_ap_main
2:  cli
    hlt
    jmp 2b

    .section .text.ap_entry64, "ax"
    .globl ap_entry64
ap_entry64:
    mov %rax, %cr3
    xor %ebp, %ebp
    call ap_start
1:  cli
    hlt
    jmp 1b
    .text
"#,
    base = const TRAMPOLINE_BASE,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_boot_cr3: u8;
    static ap_kernel_cr3: u8;
    static ap_stack: u8;
    static ap_index: u8;
    static ap_entry: u8;
    static ap_entry64: u8;
    static boot_pml4: u8;
    static snp_ap_entry: u8;
}

/// Where an SEV-SNP SVSM vCPU starts (its VMSA's RIP).
pub fn snp_entry_address() -> u64 {
    core::ptr::addr_of!(snp_ap_entry) as u64
}

/// What one AP needs to reach the kernel.
#[derive(Debug, Clone, Copy)]
pub struct ApParameters {
    /// The kernel's page tables (PML4 physical address).
    pub kernel_cr3: u64,
    /// The top of the AP's own stack.
    pub stack_top: u64,
    /// The AP's CPU index (the argument of `ap_start`).
    pub index: u64,
}

/// Copies the trampoline to [`TRAMPOLINE_BASE`] with `params` filled in; `false`
/// (nothing written) if the trampoline does not fit its page.
///
/// # Safety
/// The page at [`TRAMPOLINE_BASE`] must be identity-mapped writable RAM that nothing
/// else uses, and no AP may be running the trampoline.
pub unsafe fn install(params: ApParameters) -> bool {
    let start = core::ptr::addr_of!(ap_trampoline_start) as u64;
    let end = core::ptr::addr_of!(ap_trampoline_end) as u64;
    if end.saturating_sub(start) > 4096 {
        return false;
    }
    let field = |sym: *const u8| TRAMPOLINE_BASE + (sym as u64 - start);
    // SAFETY: the caller owns the page; the blob fits one page (checked above) and
    // lies in the kernel's rodata.
    unsafe {
        core::ptr::copy_nonoverlapping(
            start as *const u8,
            TRAMPOLINE_BASE as *mut u8,
            (end - start) as usize,
        );
    }
    let values = [
        (
            core::ptr::addr_of!(ap_boot_cr3),
            core::ptr::addr_of!(boot_pml4) as u64,
        ),
        (core::ptr::addr_of!(ap_kernel_cr3), params.kernel_cr3),
        (core::ptr::addr_of!(ap_stack), params.stack_top),
        (core::ptr::addr_of!(ap_index), params.index),
        (
            core::ptr::addr_of!(ap_entry),
            core::ptr::addr_of!(ap_entry64) as u64,
        ),
    ];
    for (sym, value) in values {
        // SAFETY: an 8-byte aligned parameter slot inside the copy just made.
        unsafe { core::ptr::write_volatile(field(sym) as *mut u64, value) };
    }
    true
}

/// The start-up IPI vector of the trampoline.
pub const fn startup_vector() -> u8 {
    (TRAMPOLINE_BASE >> 12) as u8
}
