//! The 32-bit protected-mode entry: from the loader's hand-off to 64-bit Rust.
//!
//! QEMU's PVH boot (`-kernel` with the Xen PVH note) and the SNP launch both start the
//! first vCPU in 32-bit protected mode with paging off, flat segments and interrupts
//! disabled; `%ebx` holds the physical address of the boot information (the PVH
//! `hvm_start_info`). The entry zeroes `.bss`, builds nothing at run time (the early
//! page tables are static data identity-mapping the low 4 GiB with 2 MiB pages), enables
//! PAE, long mode and NX, and calls `kernel_start(boot_info)` on the boot stack. The
//! kernel replaces these tables with its own as soon as it has a heap.
#![allow(
    unsafe_code,
    reason = "the mode switch can only be written in assembly"
)]

/// Bytes of the boot stack, which is also the stack the TPM engine runs on.
pub const BOOT_STACK_SIZE: usize = 256 * 1024;

// SAFETY: runs once, on the first vCPU, before any Rust code. The sequence is AMD APM
// vol. 2 §14.6 "Enabling and activating long mode" (CR4.PAE, CR3, EFER.LME, CR0.PG, then
// a far jump to a 64-bit code segment); EFER.NXE is §5.6.2. It touches only the static
// data defined here (tables, GDT, stack) and `.bss`, which it zeroes.
core::arch::global_asm!(
    r#"
    .section .note.pvh, "a"
    .balign 4
    .long 4             /* namesz: "Xen\0" */
    .long 4             /* descsz */
    .long 18            /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4

    .section .text.entry, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi              /* keep the boot information pointer */
    mov %eax, %ebp              /* and the loader's magic (SNP hook below) */

    mov $__bss_start, %edi      /* zero .bss (holds the stack: nothing pushed yet) */
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    mov $boot_stack_top, %esp

    mov $boot_pml4, %edi        /* SEV-SNP: C-bit into the tables (arch::snp::early) */
    call snp_early_cbit

    mov %cr4, %eax
    or $(1 << 5), %eax          /* CR4.PAE */
    mov %eax, %cr4

    mov $boot_pml4, %eax
    mov %eax, %cr3

    mov $0xc0000080, %ecx       /* EFER */
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax    /* LME | NXE */
    wrmsr

    mov %cr0, %eax
    or $0x80000001, %eax        /* PG | PE */
    mov %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %esi, %edi              /* kernel_start(boot_info: u32) */
    call kernel_start
1:  cli
    hlt
    jmp 1b

    .section .data.boot_tables, "aw"
    .balign 4096
    .globl boot_pml4            /* also the APs' tables until they reach the kernel */
boot_pml4:
    .quad boot_pdpt + 0x3
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 0x0003
    .quad boot_pd + 0x1003
    .quad boot_pd + 0x2003
    .quad boot_pd + 0x3003
    .fill 508, 8, 0
boot_pd:
    .set boot_pd_index, 0
    .rept 2048
    .quad (boot_pd_index << 21) | 0x83   /* present, writable, 2 MiB */
    .set boot_pd_index, boot_pd_index + 1
    .endr

    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss.boot_stack, "aw", @nobits
    .balign 4096
    .globl boot_stack_guard
boot_stack_guard:
    .skip 4096
    .globl boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .globl boot_stack_top
boot_stack_top:
    .text
"#,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    static boot_stack_guard: u8;
    static boot_stack_bottom: u8;
    static boot_stack_top: u8;
}

/// The boot stack: its guard page (left unmapped by the kernel's page tables) and the
/// usable range.
#[derive(Debug, Clone, Copy)]
pub struct BootStack {
    /// Address of the guard page below the stack.
    pub guard: u64,
    /// Lowest usable address.
    pub bottom: u64,
    /// One past the highest usable address.
    pub top: u64,
}

/// Where the linker put the boot stack.
pub fn boot_stack() -> BootStack {
    BootStack {
        guard: core::ptr::addr_of!(boot_stack_guard) as u64,
        bottom: core::ptr::addr_of!(boot_stack_bottom) as u64,
        top: core::ptr::addr_of!(boot_stack_top) as u64,
    }
}
