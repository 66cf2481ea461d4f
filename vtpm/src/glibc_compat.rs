//! glibc 2.38 symbols that Debian forky's engine archives call and bookworm's glibc 2.36
//! lacks, for host binaries (the kernel's C runtime has its own).
//!
//! GCC 14 with glibc 2.38 headers redirects `strtol`, `strtoul` and `sscanf` to their
//! C23 variants, which differ from the C99 ones only in accepting binary (`0b`) numbers.
//! Neither archive parses binary numbers (libtpms parses profile strings of decimal and
//! hexadecimal numbers; libcrypto parses OIDs and configuration values), so each symbol
//! is a tail jump to its C99 counterpart, arguments untouched (variadic ones included).
//! The complete list:
//!
//! | symbol | goes to |
//! |---|---|
//! | `__isoc23_strtol` | `strtol` |
//! | `__isoc23_strtoul` | `strtoul` |
//! | `__isoc23_sscanf` | `__isoc99_sscanf` |
#![allow(
    unsafe_code,
    reason = "three assembly tail jumps that forward C calls unchanged"
)]

core::arch::global_asm!(
    ".pushsection .text.vtpm_glibc_compat,\"ax\",@progbits",
    ".globl __isoc23_strtol",
    ".type __isoc23_strtol,@function",
    "__isoc23_strtol:",
    "jmp strtol@PLT",
    ".globl __isoc23_strtoul",
    ".type __isoc23_strtoul,@function",
    "__isoc23_strtoul:",
    "jmp strtoul@PLT",
    ".globl __isoc23_sscanf",
    ".type __isoc23_sscanf,@function",
    "__isoc23_sscanf:",
    "jmp __isoc99_sscanf@PLT",
    ".popsection",
);

#[cfg(test)]
mod tests {
    use core::ffi::{c_char, c_int, c_long, c_ulong};

    extern "C" {
        fn __isoc23_strtol(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_long;
        fn __isoc23_strtoul(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_ulong;
        fn __isoc23_sscanf(s: *const c_char, format: *const c_char, ...) -> c_int;
    }

    #[test]
    #[allow(unsafe_code)]
    fn the_shims_forward_to_the_c99_functions() {
        let mut end: *mut c_char = core::ptr::null_mut();
        // SAFETY: NUL-terminated literals and a valid out-pointer.
        let v = unsafe { __isoc23_strtol(c"-0x1f,".as_ptr(), &mut end, 0) };
        assert_eq!(v, -31);
        // SAFETY: `end` points into the literal, at the comma.
        assert_eq!(unsafe { *end } as u8, b',');
        // SAFETY: as above.
        let u = unsafe { __isoc23_strtoul(c"4087".as_ptr(), core::ptr::null_mut(), 10) };
        assert_eq!(u, 4087);
        let (mut a, mut b) = (0u32, 0u32);
        // SAFETY: the format's two %u conversions get two valid u32 out-pointers.
        let n = unsafe {
            __isoc23_sscanf(
                c"0x11f-0x122".as_ptr(),
                c"%x-%x".as_ptr(),
                &mut a as *mut u32,
                &mut b as *mut u32,
            )
        };
        assert_eq!((n, a, b), (2, 0x11f, 0x122));
    }
}
