//! The SEV-SNP part of the 32-bit entry: the C-bit in the boot page tables, and the
//! boot vCPU's GHCB page with its shared alias.
//!
//! In an SNP guest every data access through a mapping without the C-bit is a shared
//! access, which the RMP refuses for the SVSM's private memory (AMD APM vol. 2,
//! "Encrypt Memory", "RMP and VMPL Access Checks"); with paging off every
//! access is private. So before the entry turns paging on, `snp_early_cbit` looks for
//! the C-bit position in the CPUID page the IGVM parameter block names (leaf
//! 0x8000_001F, EBX[5:0]; executing CPUID here would raise a #VC with no handler) and
//! sets it in every entry of the boot tables. It also splits the 2 MiB page holding the
//! GHCB into 4 KiB entries, maps the GHCB page, the two PSP message pages and the #HV
//! doorbell page private at their own addresses (for PVALIDATE) and shared at the next
//! page (for the hypervisor). On any other boot path
//! (PVH, or an IGVM launch without a filled CPUID page) it changes nothing and
//! [`cbit`] stays `None`.
//!
//! Called from the entry with `%ebp` = the entry's `%eax`, `%esi` = the boot
//! information pointer, `%edi` = the boot PML4, on the boot stack; preserves `%esi` and
//! `%esp`.
#![allow(unsafe_code, reason = "32-bit entry code and the statics it fills")]

// SAFETY: 32-bit code called once by the entry with paging off (all accesses
// private). It reads the measured parameter block and the CPUID page through their
// GPAs, and writes only the boot page tables (reached from %edi) and the statics below.
// The magic values and offsets are the Rust constants of the IGVM parameter block
// (svsm_protocol::igvm_params) and the CPUID page (crate::snp::cpuid).
#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .code32
    .globl snp_early_cbit
snp_early_cbit:
    cmp ${igvm_magic}, %ebp          /* launched from an IGVM file */
    jne 9f
    cmpl ${block_magic_lo}, (%esi)   /* "SVSM" */
    jne 9f
    cmpl ${block_magic_hi}, 4(%esi)  /* "PARM" */
    jne 9f
    cmpl $0, {cpuid_gpa}+4(%esi)     /* cpuid_gpa below 4 GiB */
    jne 9f
    mov {cpuid_gpa}(%esi), %ebx
    test %ebx, %ebx
    jz 9f
    mov (%ebx), %ecx                 /* entry count */
    cmp ${count_max}, %ecx
    ja 9f
    lea {entries}(%ebx), %edx
1:  test %ecx, %ecx
    jz 9f
    cmpl ${leaf}, (%edx)
    je 2f
    add ${entry_size}, %edx
    dec %ecx
    jmp 1b
2:  mov {ebx_out}(%edx), %eax
    and $0x3f, %eax
    cmp $32, %eax
    jb 9f
    mov %eax, snp_cbit_position
    lea -32(%eax), %ecx
    mov $1, %edx
    shl %cl, %edx                    /* the C-bit in the high dword of an entry */

    or %edx, 4(%edi)                 /* PML4[0] */
    mov (%edi), %ebx
    and $0xfffff000, %ebx            /* the PDPT */
    mov $4, %ecx
3:  or %edx, 4(%ebx)
    push %ebx
    mov (%ebx), %ebx
    and $0xfffff000, %ebx            /* one PD */
    push %ecx
    mov $512, %ecx
4:  or %edx, 4(%ebx)
    add $8, %ebx
    loop 4b
    pop %ecx
    pop %ebx
    add $8, %ebx
    loop 3b

    /* The 2 MiB page holding the GHCB, as 4 KiB pages, all private ... */
    mov $snp_ghcb_page, %eax
    and $0xffe00000, %eax            /* its 2 MiB region */
    mov $snp_ghcb_pt, %ebx
    mov $512, %ecx
5:  lea 3(%eax), %ebp
    mov %ebp, (%ebx)
    mov %edx, 4(%ebx)
    add $0x1000, %eax
    add $8, %ebx
    loop 5b
    /* ... except the aliases, which map the GHCB, message and doorbell pages shared. */
    mov $snp_ghcb_page, %eax
    mov $4, %ecx
6:  mov %eax, %ebx
    add $0x1000, %ebx                /* the alias follows its page */
    shr $12, %ebx
    and $511, %ebx
    lea snp_ghcb_pt(,%ebx,8), %ebx
    lea 3(%eax), %ebp
    mov %ebp, (%ebx)
    movl $0, 4(%ebx)
    add $0x2000, %eax
    loop 6b
    /* The PD entry of that region points at the new table. */
    mov $snp_ghcb_page, %eax
    shr $21, %eax                    /* region index across the four PDs */
    mov (%edi), %ebx
    and $0xfffff000, %ebx            /* PDPT */
    mov %eax, %ecx
    shr $9, %ecx
    mov (%ebx,%ecx,8), %ebx
    and $0xfffff000, %ebx            /* the PD */
    and $511, %eax
    lea (%ebx,%eax,8), %ebx
    mov $snp_ghcb_pt, %eax
    or $3, %eax
    mov %eax, (%ebx)
    mov %edx, 4(%ebx)
9:  ret

    .section .data.snp, "aw"
    .balign 4
    .globl snp_cbit_position
snp_cbit_position:
    .long 0

    .section .bss.snp, "aw", @nobits
    .balign 32768                    /* the four pairs share one 2 MiB region */
    .globl snp_ghcb_page
snp_ghcb_page:
    .skip 4096
    .globl snp_ghcb_alias
snp_ghcb_alias:
    .skip 4096
    .globl snp_request_page
snp_request_page:
    .skip 8192                       /* page, alias */
    .globl snp_response_page
snp_response_page:
    .skip 8192                       /* page, alias */
    .globl snp_doorbell_page
snp_doorbell_page:
    .skip 8192                       /* page, alias */
    .balign 4096
snp_ghcb_pt:
    .skip 4096
    .text
"#,
    igvm_magic = const IGVM_ENTRY_MAGIC,
    block_magic_lo = const PARAM_BLOCK_MAGIC as u32,
    block_magic_hi = const (PARAM_BLOCK_MAGIC >> 32) as u32,
    cpuid_gpa = const core::mem::offset_of!(IgvmParamBlock, cpuid_gpa),
    count_max = const CPUID_COUNT_MAX,
    entries = const CPUID_ENTRIES_OFFSET,
    entry_size = const CPUID_ENTRY_SIZE,
    leaf = const LEAF_MEMORY_ENCRYPTION,
    ebx_out = const CPUID_EBX_OUTPUT_OFFSET,
    options(att_syntax)
);

#[cfg(target_os = "none")]
use crate::snp::cpuid::{
    CPUID_COUNT_MAX, CPUID_EBX_OUTPUT_OFFSET, CPUID_ENTRIES_OFFSET, CPUID_ENTRY_SIZE,
    LEAF_MEMORY_ENCRYPTION,
};
#[cfg(target_os = "none")]
use svsm_protocol::igvm_params::{IgvmParamBlock, IGVM_ENTRY_MAGIC, PARAM_BLOCK_MAGIC};

#[cfg(target_os = "none")]
unsafe extern "C" {
    static snp_cbit_position: u32;
    static snp_ghcb_page: u8;
    static snp_ghcb_alias: u8;
    static snp_request_page: u8;
    static snp_response_page: u8;
    static snp_doorbell_page: u8;
}

/// The C-bit position the entry found, or `None` when not running under SEV-SNP.
#[cfg(target_os = "none")]
pub fn cbit() -> Option<u8> {
    // SAFETY: written once by the entry before any Rust code runs; only read here.
    let position = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(snp_cbit_position)) };
    (32..64).contains(&position).then_some(position as u8)
}

/// Not the bare-metal kernel: never under SEV-SNP.
#[cfg(not(target_os = "none"))]
pub fn cbit() -> Option<u8> {
    None
}

/// The boot vCPU's GHCB page: its private address (for PVALIDATE; identity-mapped, so
/// also its GPA) and its shared alias.
#[cfg(target_os = "none")]
pub fn ghcb_addresses() -> (u64, usize) {
    (
        core::ptr::addr_of!(snp_ghcb_page) as u64,
        core::ptr::addr_of!(snp_ghcb_alias) as usize,
    )
}

/// The two pages for PSP guest messages (request, response): each page's private
/// address (its GPA) and its shared alias, the next page.
#[cfg(target_os = "none")]
pub fn message_page_addresses() -> [(u64, usize); 2] {
    let pair = |page: *const u8| (page as u64, page as usize + 4096);
    [
        pair(core::ptr::addr_of!(snp_request_page)),
        pair(core::ptr::addr_of!(snp_response_page)),
    ]
}

/// The boot vCPU's #HV doorbell page (restricted injection): its private address (its
/// GPA, for PVALIDATE) and its shared alias, the next page.
#[cfg(target_os = "none")]
pub fn doorbell_page_addresses() -> (u64, usize) {
    let page = core::ptr::addr_of!(snp_doorbell_page);
    (page as u64, page as usize + 4096)
}
