//! The glibc 2.38 symbol that Debian forky's libtpms.a calls and bookworm's glibc 2.36
//! lacks, for host binaries (the kernel's C runtime has its own).
//!
//! GCC 14 with glibc 2.38 headers redirects `strtoul` to its C23 variant, which differs
//! from the C99 one only in accepting binary (`0b`) numbers. libtpms parses its profile
//! strings (decimal and hexadecimal numbers) with it, never binary ones, so the symbol is
//! a tail jump to `strtoul`, arguments untouched. The complete list:
//!
//! | symbol | goes to |
//! |---|---|
//! | `__isoc23_strtoul` | `strtoul` |
#![allow(
    unsafe_code,
    reason = "an assembly tail jump that forwards a C call unchanged"
)]

core::arch::global_asm!(
    ".pushsection .text.vtpm_glibc_compat,\"ax\",@progbits",
    ".globl __isoc23_strtoul",
    ".type __isoc23_strtoul,@function",
    "__isoc23_strtoul:",
    "jmp strtoul@PLT",
    ".popsection",
);

#[cfg(test)]
mod tests {
    use core::ffi::{c_char, c_int, c_ulong};

    extern "C" {
        fn __isoc23_strtoul(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_ulong;
    }

    #[test]
    #[allow(unsafe_code)]
    fn the_shim_forwards_to_strtoul() {
        let mut end: *mut c_char = core::ptr::null_mut();
        // SAFETY: a NUL-terminated literal and a valid out-pointer.
        let v = unsafe { __isoc23_strtoul(c"0x11f-0x122".as_ptr(), &mut end, 0) };
        assert_eq!(v, 0x11f);
        // SAFETY: `end` points into the literal, at the dash.
        assert_eq!(unsafe { *end } as u8, b'-');
        // SAFETY: as above.
        let u = unsafe { __isoc23_strtoul(c"4087".as_ptr(), core::ptr::null_mut(), 10) };
        assert_eq!(u, 4087);
    }
}
