//! Copies to and from guest memory that return an error instead of faulting the SVSM.
//!
//! Two routines, each one `REP MOVSB` or `REP STOSB` listed in the exception table
//! ([`super::extable`]): if the string instruction faults on a page the guest or the
//! host made unusable, the dispatcher resumes at the routine's fixup with the error in
//! RAX, and the routine returns it. A fault can stop the copy part-way (the string
//! instruction's progress is architectural, APM vol. 3 "MOVS", "STOS"): the bytes
//! before the faulting page were copied, the rest were not. Callers treat an error as
//! "nothing usable was read or written".
//!
//! The routines follow the System V calling convention and touch only RAX, RCX, RSI
//! and RDI, all caller-saved; the direction flag is clear on entry by the same
//! convention. On the host they run too (the unit tests call them); only the bare-metal
//! kernel's dispatcher consults the table.
#![allow(unsafe_code, reason = "string instructions on guest memory")]

use super::extable;
use crate::platform::MemoryError;

/// How many instructions the routines below list in the exception table.
pub const GUARDED_INSTRUCTIONS: usize = 2;

// SAFETY: defines two functions and their table entries; nothing runs at load time.
// REP MOVSB copies RCX bytes from [RSI] to [RDI], REP STOSB stores AL into RCX bytes at
// [RDI], both upwards with DF = 0 (APM vol. 3, "MOVS", "STOS"). The table entries are
// PC-relative offsets (see `extable::RelativeEntry`).
core::arch::global_asm!(
    r#"
    .section .text.svsm_guest_copy, "ax"
    .balign 16
    .globl svsm_guarded_copy
svsm_guarded_copy:                  /* rdi = dst, rsi = src, rdx = len */
    mov %rdx, %rcx
    xor %eax, %eax
1:  rep movsb
2:  ret                             /* fixup: rax holds the error */

    .balign 16
    .globl svsm_guarded_fill
svsm_guarded_fill:                  /* rdi = dst, esi = byte, rdx = len */
    mov %rdx, %rcx
    mov %esi, %eax
3:  rep stosb
    xor %eax, %eax
    ret
4:  ret                             /* fixup: rax holds the error */

    .section .rodata.svsm_extable, "a"
    .balign 4
    .globl svsm_extable_start
svsm_extable_start:
    .long 1b - ., 2b - .
    .long 3b - ., 4b - .
    .globl svsm_extable_end
svsm_extable_end:
    .text
"#,
    options(att_syntax)
);

unsafe extern "sysv64" {
    fn svsm_guarded_copy(dst: *mut u8, src: *const u8, len: usize) -> u64;
    fn svsm_guarded_fill(dst: *mut u8, byte: u32, len: usize) -> u64;
}

/// Copies `buf.len()` bytes at `src` into `buf`.
///
/// # Safety
/// `src..src + buf.len()` must be addresses the SVSM maps for guest memory (or leaves
/// unmapped): memory no Rust reference points into, whose contents the SVSM never
/// trusts. A fault on it is reported; a fault anywhere else would not be.
pub unsafe fn read(src: *const u8, buf: &mut [u8]) -> Result<(), MemoryError> {
    // SAFETY: `buf` is valid for writes of its length; the caller vouches for `src`.
    // The routine writes only `buf` and reads only the source range.
    extable::decode(unsafe { svsm_guarded_copy(buf.as_mut_ptr(), src, buf.len()) })
}

/// Copies `data` to `dst`.
///
/// # Safety
/// As for [`read`], for `dst..dst + data.len()`, which must also be writable if mapped.
pub unsafe fn write(dst: *mut u8, data: &[u8]) -> Result<(), MemoryError> {
    // SAFETY: `data` is valid for reads of its length; the caller vouches for `dst`.
    extable::decode(unsafe { svsm_guarded_copy(dst, data.as_ptr(), data.len()) })
}

/// Zeroes `len` bytes at `dst`.
///
/// # Safety
/// As for [`write`].
pub unsafe fn zero(dst: *mut u8, len: usize) -> Result<(), MemoryError> {
    // SAFETY: the caller vouches for `dst..dst + len`.
    extable::decode(unsafe { svsm_guarded_fill(dst, 0, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_fills_like_memcpy_and_memset() {
        let source: std::vec::Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut target = std::vec![0xAAu8; 5003];
        // SAFETY: both buffers are this test's and long enough.
        unsafe { read(source.as_ptr(), &mut target[1..5001]) }.unwrap();
        assert_eq!(&target[1..5001], &source[..]);
        assert_eq!((target[0], target[5001]), (0xAA, 0xAA));
        // SAFETY: as above.
        unsafe { write(target.as_mut_ptr().wrapping_add(3000), b"svsm") }.unwrap();
        assert_eq!(&target[3000..3004], b"svsm");
        // SAFETY: as above.
        unsafe { zero(target.as_mut_ptr().wrapping_add(10), 100) }.unwrap();
        assert!(target[10..110].iter().all(|&b| b == 0));
        assert_eq!((target[9], target[110]), (source[8], source[109]));
        // Zero lengths touch nothing.
        // SAFETY: nothing is accessed.
        unsafe { read(core::ptr::null(), &mut []) }.unwrap();
        // SAFETY: nothing is accessed.
        unsafe { zero(core::ptr::null_mut(), 0) }.unwrap();
    }

    #[test]
    fn the_table_points_at_the_string_instructions() {
        let entries: std::vec::Vec<_> = extable::table().collect();
        let copy = svsm_guarded_copy as *const u8;
        let fill = svsm_guarded_fill as *const u8;
        // SAFETY: reading the routines' own code bytes, which the table points into.
        let byte = |a: u64, i: u64| unsafe { ((a + i) as *const u8).read() };
        // mov %rdx,%rcx (3 bytes), xor %eax,%eax (2): REP MOVSB (F3 A4) at +5.
        assert_eq!(entries[0].insn, copy as u64 + 5);
        assert_eq!(
            (byte(entries[0].insn, 0), byte(entries[0].insn, 1)),
            (0xF3, 0xA4)
        );
        assert_eq!(byte(entries[0].fixup, 0), 0xC3, "copy fixup is RET");
        // mov %rdx,%rcx (3), mov %esi,%eax (2): REP STOSB (F3 AA) at +5.
        assert_eq!(entries[1].insn, fill as u64 + 5);
        assert_eq!(
            (byte(entries[1].insn, 0), byte(entries[1].insn, 1)),
            (0xF3, 0xAA)
        );
        assert_eq!(byte(entries[1].fixup, 0), 0xC3, "fill fixup is RET");
        // The fill's fixup skips the success path's XOR, so the error survives.
        assert_eq!(entries[1].fixup, entries[1].insn + 2 + 2 + 1);
    }
}
