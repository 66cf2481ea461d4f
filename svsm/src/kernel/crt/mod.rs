//! The freestanding C runtime that libtpms.a and libcrypto.a link against.
//!
//! The archives are Debian's, built for a glibc userland (stack protector, FORTIFY
//! `__*_chk` variants, pthreads, stdio). This module supplies every symbol the kernel
//! link leaves undefined, in three kinds:
//! - working functions the engine calls at run time: memory (16-byte aligned, the size
//!   kept in a header), strings, ctype tables, errno, setjmp/longjmp (`arch::setjmp`),
//!   qsort, time from the TSC, `pthread_once`/keys, randomness from RDSEED/RDRAND;
//! - stubs that fail cleanly, the way the C library documents failure (NULL or -1 and an
//!   errno): files, directories, sockets, dlopen, signals, threads, mmap;
//! - fatal paths (`abort`, `__assert_fail`, `__stack_chk_fail`, FORTIFY violations, a
//!   randomness failure) that end the SVSM through `exit::terminate` with the reason.
//!
//! Locks are no-ops: the engine is entered from one CPU, one call at a time (the kernel
//! owns the one vTPM service and calls it from its main loop), and never from interrupt
//! handlers. A second CPU entering the engine would need real locks here first. Varargs functions are declared with only the fixed arguments they read:
//! under the System V ABI the callee's view of those registers is the same.
#![allow(
    unsafe_code,
    reason = "C ABI functions handed raw pointers by the C engine"
)]
#![allow(
    clippy::missing_safety_doc,
    reason = "callers are C code following libc's contracts"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "each block dereferences caller-supplied pointers under one C library \
              contract, which its SAFETY comment names"
)]

mod ctype;
mod memory;
mod process;
mod pthread;
mod random;
mod regex;
mod stdio;
mod string;
mod stubs;
mod time;

pub use memory::{aligned_to_16, malloc_size};
pub use process::qsort_i32;
pub use pthread::once_runs_once;
pub use random::fill_random;

use core::ffi::c_int;

use super::percpu;

/// errno values (Linux numbering, as the archives were built for).
pub mod errno {
    use core::ffi::c_int;
    pub const ENOENT: c_int = 2;
    pub const EBADF: c_int = 9;
    pub const ENOMEM: c_int = 12;
    pub const EINVAL: c_int = 22;
    pub const ENOSYS: c_int = 38;
    pub const EOVERFLOW: c_int = 75;
    pub const EAFNOSUPPORT: c_int = 97;
    /// pthread functions return their error instead of setting errno.
    pub const EAGAIN_KEYS: c_int = 11;
    /// As above, for an unknown key.
    pub const EINVAL_KEYS: c_int = EINVAL;
}

/// Sets errno and returns -1: the usual C failure.
fn fail(code: c_int) -> c_int {
    percpu::current().set_errno(code);
    -1
}

/// Sets errno and returns NULL.
fn fail_null<T>(code: c_int) -> *mut T {
    percpu::current().set_errno(code);
    core::ptr::null_mut()
}

#[unsafe(no_mangle)]
extern "C" fn __errno_location() -> *mut c_int {
    percpu::current().errno_location()
}

/// The NUL-terminated C string at `s` as text, for log messages.
///
/// # Safety
/// `s` is NULL or a valid NUL-terminated string.
unsafe fn c_str<'a>(s: *const core::ffi::c_char) -> &'a str {
    if s.is_null() {
        return "(null)";
    }
    // SAFETY: the caller promises a NUL-terminated string.
    let bytes = unsafe { core::ffi::CStr::from_ptr(s) }.to_bytes();
    core::str::from_utf8(bytes).unwrap_or("(not UTF-8)")
}
