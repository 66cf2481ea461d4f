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

    /// Plays the kernel's dispatcher for a page fault in a host process: the same
    /// table lookup and classification, the fixup written into the saved RIP and RAX.
    #[cfg(target_os = "linux")]
    mod host_faults {
        use super::super::{extable, read, write, zero};
        use crate::platform::MemoryError;

        extern "C" fn on_fault(
            _: libc::c_int,
            _: *mut libc::siginfo_t,
            context: *mut libc::c_void,
        ) {
            let context = context.cast::<libc::ucontext_t>();
            // SAFETY: the kernel hands a SA_SIGINFO handler the interrupted context,
            // which it restores on return.
            let regs = unsafe { &mut (*context).uc_mcontext.gregs };
            let rip = regs[libc::REG_RIP as usize] as u64;
            let vector = regs[libc::REG_TRAPNO as usize] as u8;
            let error = regs[libc::REG_ERR as usize] as u64;
            match extable::resolve(extable::table(), vector, error, rip) {
                Some((fixup, rax)) => {
                    regs[libc::REG_RIP as usize] = fixup as i64;
                    regs[libc::REG_RAX as usize] = rax as i64;
                }
                // Not a guarded access: fall back to the default action (a crash).
                // SAFETY: resetting a signal's disposition is async-signal-safe.
                None => unsafe {
                    libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                },
            }
        }

        #[test]
        fn a_fault_resumes_at_the_fixup_with_the_error() {
            const PAGE: usize = 4096;
            // SAFETY: an anonymous private mapping of two pages, unmapped below.
            let base = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    2 * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED);
            let base = base.cast::<u8>();
            let hole = base.wrapping_add(PAGE);
            // SAFETY: the second page of our own mapping.
            let protected = unsafe { libc::mprotect(hole.cast(), PAGE, libc::PROT_NONE) };
            assert_eq!(protected, 0);
            // SAFETY: a zeroed sigaction is valid; the handler and flags are set next.
            let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            // SAFETY: a zeroed sigaction for the previous disposition.
            let mut previous: libc::sigaction = unsafe { core::mem::zeroed() };
            // SAFETY: installs the handler above for SIGSEGV, restored below.
            let installed = unsafe { libc::sigaction(libc::SIGSEGV, &action, &mut previous) };
            assert_eq!(installed, 0);

            let mut buf = [0u8; 16];
            // SAFETY: the hole is our PROT_NONE page; nothing refers to it.
            let faulted_read = unsafe { read(hole, &mut buf) };
            // SAFETY: as above.
            let faulted_write = unsafe { write(hole.wrapping_add(8), b"lost") };
            // SAFETY: the tail of the readable page, then the hole.
            let across = unsafe { write(base.wrapping_add(PAGE - 4), &[0xA5; 8]) };
            // SAFETY: as above.
            let faulted_zero = unsafe { zero(hole, PAGE) };
            // SAFETY: the readable page.
            let fine = unsafe { write(base, b"svsm") };
            // SAFETY: the readable page, 4096 bytes.
            let first = unsafe { core::slice::from_raw_parts(base, PAGE) }.to_vec();

            // SAFETY: restores the previous disposition.
            unsafe { libc::sigaction(libc::SIGSEGV, &previous, core::ptr::null_mut()) };
            // SAFETY: our mapping, no longer used.
            unsafe { libc::munmap(base.cast(), 2 * PAGE) };

            assert_eq!(faulted_read, Err(MemoryError::NotMemory));
            assert_eq!(faulted_write, Err(MemoryError::NotMemory));
            assert_eq!(across, Err(MemoryError::NotMemory));
            assert_eq!(&first[PAGE - 4..], &[0xA5; 4], "the mapped part was copied");
            assert_eq!(faulted_zero, Err(MemoryError::NotMemory));
            assert_eq!(fine, Ok(()));
            assert_eq!(&first[..4], b"svsm");
        }
    }
}
