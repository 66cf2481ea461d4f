//! The process: environment, exit hooks, fatal ends, signals, memory mappings, qsort.
//!
//! There is no environment (so OpenSSL reads no `OPENSSL_*` variables), no exit (atexit
//! hooks never run), no signals, no mmap. `abort`, failed asserts and the stack
//! protector end the SVSM with the reason on the console.

use core::ffi::{c_char, c_int, c_long, c_uint, c_void};

use super::c_str;
use super::errno::{EINVAL, ENOMEM, ENOSYS};
use super::fail;
use crate::kernel::exit::terminate;

#[unsafe(no_mangle)]
extern "C" fn abort() -> ! {
    terminate(format_args!("abort() called by the TPM engine"))
}

#[unsafe(no_mangle)]
unsafe extern "C" fn __assert_fail(
    assertion: *const c_char,
    file: *const c_char,
    line: c_uint,
    function: *const c_char,
) -> ! {
    // SAFETY: glibc's contract: the strings are NUL-terminated.
    let (assertion, file, function) = unsafe { (c_str(assertion), c_str(file), c_str(function)) };
    terminate(format_args!(
        "assertion failed in the TPM engine: {assertion} ({file}:{line}, {function})"
    ))
}

#[unsafe(no_mangle)]
extern "C" fn __stack_chk_fail() -> ! {
    terminate(format_args!("stack smashing detected in the TPM engine"))
}

#[unsafe(no_mangle)]
extern "C" fn __longjmp_chk_fail() -> ! {
    terminate(format_args!("longjmp to a frame that no longer exists"))
}

#[unsafe(no_mangle)]
extern "C" fn getenv(_name: *const c_char) -> *mut c_char {
    core::ptr::null_mut()
}

#[unsafe(no_mangle)]
extern "C" fn secure_getenv(_name: *const c_char) -> *mut c_char {
    core::ptr::null_mut()
}

/// The SVSM never exits, so exit hooks are accepted and never run.
#[unsafe(no_mangle)]
extern "C" fn atexit(_hook: Option<extern "C" fn()>) -> c_int {
    0
}

#[unsafe(no_mangle)]
extern "C" fn getpid() -> c_int {
    1
}

const SC_PAGESIZE: c_int = 30;

#[unsafe(no_mangle)]
extern "C" fn sysconf(name: c_int) -> c_long {
    if name == SC_PAGESIZE {
        4096
    } else {
        c_long::from(fail(EINVAL))
    }
}

#[unsafe(no_mangle)]
extern "C" fn uname(_out: *mut c_void) -> c_int {
    fail(ENOSYS)
}

/// `SIG_ERR`.
#[unsafe(no_mangle)]
extern "C" fn signal(_signal: c_int, _handler: *mut c_void) -> isize {
    fail(ENOSYS) as isize
}

#[unsafe(no_mangle)]
extern "C" fn sigaction(_signal: c_int, _new: *const c_void, _old: *mut c_void) -> c_int {
    fail(ENOSYS)
}

/// OpenSSL's ASYNC jobs need user contexts: refused, so it runs jobs synchronously.
#[unsafe(no_mangle)]
extern "C" fn getcontext(_context: *mut c_void) -> c_int {
    fail(ENOSYS)
}

#[unsafe(no_mangle)]
extern "C" fn setcontext(_context: *const c_void) -> c_int {
    fail(ENOSYS)
}

/// No sleeping: nothing in the SVSM can wake it (OpenSSL retries without one).
#[unsafe(no_mangle)]
extern "C" fn nanosleep(_request: *const c_void, _remaining: *mut c_void) -> c_int {
    fail(ENOSYS)
}

#[unsafe(no_mangle)]
extern "C" fn makecontext(_context: *mut c_void, _function: *mut c_void, _argc: c_int) {
    terminate(format_args!("makecontext() is not supported"))
}

/// `MAP_FAILED`.
#[unsafe(no_mangle)]
extern "C" fn mmap(
    _address: *mut c_void,
    _len: usize,
    _prot: c_int,
    _flags: c_int,
    _fd: c_int,
    _offset: c_long,
) -> isize {
    fail(ENOMEM) as isize
}

#[unsafe(no_mangle)]
extern "C" fn munmap(_address: *mut c_void, _len: usize) -> c_int {
    fail(EINVAL)
}

#[unsafe(no_mangle)]
extern "C" fn mprotect(_address: *mut c_void, _len: usize, _prot: c_int) -> c_int {
    fail(ENOSYS)
}

#[unsafe(no_mangle)]
extern "C" fn madvise(_address: *mut c_void, _len: usize, _advice: c_int) -> c_int {
    fail(ENOSYS)
}

#[unsafe(no_mangle)]
extern "C" fn mlock(_address: *const c_void, _len: usize) -> c_int {
    fail(ENOSYS)
}

#[unsafe(no_mangle)]
extern "C" fn shmget(_key: c_int, _size: usize, _flags: c_int) -> c_int {
    fail(ENOSYS)
}

/// `(void *) -1`.
#[unsafe(no_mangle)]
extern "C" fn shmat(_id: c_int, _address: *const c_void, _flags: c_int) -> isize {
    fail(ENOSYS) as isize
}

#[unsafe(no_mangle)]
extern "C" fn shmdt(_address: *const c_void) -> c_int {
    fail(ENOSYS)
}

/// `qsort`: an in-place heapsort (no allocation, no recursion, O(n log n)).
#[unsafe(no_mangle)]
unsafe extern "C" fn qsort(
    base: *mut c_void,
    count: usize,
    size: usize,
    compare: Option<unsafe extern "C" fn(*const c_void, *const c_void) -> c_int>,
) {
    let Some(compare) = compare else { return };
    if count < 2 || size == 0 {
        return;
    }
    let base = base.cast::<u8>();
    // SAFETY: C's contract: `base` holds `count` elements of `size` bytes; indices stay
    // below `count`.
    let at = |i: usize| unsafe { base.add(i * size) };
    // SAFETY: as above; the comparator is C's.
    let less = |i: usize, j: usize| unsafe { compare(at(i).cast(), at(j).cast()) < 0 };
    let swap = |i: usize, j: usize| {
        if i != j {
            // SAFETY: distinct elements of the array do not overlap.
            unsafe { core::ptr::swap_nonoverlapping(at(i), at(j), size) };
        }
    };
    let sift_down = |mut root: usize, end: usize| loop {
        let mut child = 2 * root + 1;
        if child >= end {
            break;
        }
        if child + 1 < end && less(child, child + 1) {
            child += 1;
        }
        if less(root, child) {
            swap(root, child);
            root = child;
        } else {
            break;
        }
    };
    for start in (0..count / 2).rev() {
        sift_down(start, count);
    }
    for end in (1..count).rev() {
        swap(0, end);
        sift_down(0, end);
    }
}

/// For the self-tests: sorts `values` through the C `qsort`.
pub fn qsort_i32(values: &mut [i32]) {
    unsafe extern "C" fn compare(a: *const c_void, b: *const c_void) -> c_int {
        // SAFETY: qsort hands out pointers into the i32 array.
        let (a, b) = unsafe { (a.cast::<i32>().read(), b.cast::<i32>().read()) };
        a.cmp(&b) as c_int
    }
    // SAFETY: the slice is `len` i32 elements.
    unsafe {
        qsort(
            values.as_mut_ptr().cast(),
            values.len(),
            core::mem::size_of::<i32>(),
            Some(compare),
        );
    }
}
