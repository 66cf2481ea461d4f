//! Self-tests of the C runtime, called the way the C engine calls it.
#![allow(unsafe_code, reason = "calls the C runtime through its C ABI")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "each block is one C-runtime scenario under the C library's contracts"
)]

use core::ffi::{c_char, c_int, c_long, c_ulong, c_void};

use super::{ensure, Outcome, Test};
use crate::kernel::crt::{self, aligned_to_16, errno, malloc_size};

unsafe extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn calloc(count: usize, size: usize) -> *mut c_void;
    fn realloc(p: *mut c_void, size: usize) -> *mut c_void;
    fn free(p: *mut c_void);
    fn __errno_location() -> *mut c_int;
    fn getrandom(buf: *mut c_void, len: usize, flags: u32) -> isize;
    fn syscall(number: c_long, a1: usize, a2: usize, a3: usize) -> c_long;
    fn pthread_key_create(key: *mut u32, destructor: *const c_void) -> c_int;
    fn pthread_setspecific(key: u32, value: *const c_void) -> c_int;
    fn pthread_getspecific(key: u32) -> *mut c_void;
    fn pthread_key_delete(key: u32) -> c_int;
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut c_void;
    fn strtol(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_long;
    fn strtoul(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_ulong;
    fn strstr(haystack: *const c_char, needle: *const c_char) -> *mut c_char;
    fn strcmp(a: *const c_char, b: *const c_char) -> c_int;
    fn clock_gettime(clock: c_int, out: *mut [i64; 2]) -> c_int;
    fn time(out: *mut i64) -> i64;
    fn gmtime_r(time: *const i64, out: *mut [c_int; 14]) -> *mut c_void;
    fn __ctype_b_loc() -> *const *const u16;
}

pub const TESTS: &[(&str, Test)] = &[
    (
        "crt_malloc_alignment_and_size",
        crt_malloc_alignment_and_size,
    ),
    ("crt_realloc_keeps_contents", crt_realloc_keeps_contents),
    (
        "crt_calloc_zeroes_and_refuses_overflow",
        crt_calloc_zeroes_and_refuses_overflow,
    ),
    ("crt_setjmp_longjmp", crt_setjmp_longjmp),
    ("crt_pthread_once_runs_once", crt_pthread_once_runs_once),
    ("crt_pthread_keys_hold_values", crt_pthread_keys_hold_values),
    ("crt_getrandom_from_rdseed", crt_getrandom_from_rdseed),
    (
        "crt_syscall_refuses_all_but_getrandom",
        crt_syscall_refuses_all_but_getrandom,
    ),
    ("crt_files_fail_cleanly", crt_files_fail_cleanly),
    ("crt_strings_and_numbers", crt_strings_and_numbers),
    ("crt_qsort_sorts", crt_qsort_sorts),
    ("crt_time_from_tsc", crt_time_from_tsc),
    ("crt_ctype_table", crt_ctype_table),
];

fn errno_value() -> c_int {
    // SAFETY: `__errno_location` returns the per-CPU errno.
    unsafe { *__errno_location() }
}

fn crt_malloc_alignment_and_size() -> Outcome {
    for size in [0usize, 1, 15, 16, 17, 100, 4095, 70_000] {
        // SAFETY: plain C allocation, freed below.
        let p = unsafe { malloc(size) };
        ensure!(!p.is_null(), "malloc({size}) failed");
        ensure!(
            aligned_to_16(p),
            "malloc({size}) = {p:p} is not 16-byte aligned"
        );
        // SAFETY: `p` came from malloc.
        let recorded = unsafe { malloc_size(p) };
        ensure!(recorded == size, "malloc({size}) recorded {recorded}");
        // SAFETY: `p` has `size` bytes; freed once.
        unsafe {
            p.cast::<u8>().write_bytes(0xa5, size);
            free(p);
        }
    }
    // SAFETY: free(NULL) is a no-op.
    unsafe { free(core::ptr::null_mut()) };
    Ok(())
}

fn crt_realloc_keeps_contents() -> Outcome {
    // SAFETY: C allocation calls on blocks this test owns.
    unsafe {
        let p = malloc(10).cast::<u8>();
        ensure!(!p.is_null(), "malloc failed");
        for i in 0..10 {
            p.add(i).write(i as u8);
        }
        let q = realloc(p.cast(), 100_000).cast::<u8>();
        ensure!(!q.is_null(), "realloc failed");
        ensure!(aligned_to_16(q.cast()), "realloc result not aligned");
        let kept = (0..10).all(|i| q.add(i).read() == i as u8);
        let r = realloc(q.cast(), 4).cast::<u8>();
        let shrunk_kept = !r.is_null() && (0..4).all(|i| r.add(i).read() == i as u8);
        free(r.cast());
        let from_null = realloc(core::ptr::null_mut(), 32);
        let ok_null = !from_null.is_null();
        free(from_null);
        ensure!(kept, "growing lost the contents");
        ensure!(shrunk_kept, "shrinking lost the contents");
        ensure!(ok_null, "realloc(NULL, n) did not allocate");
    }
    Ok(())
}

fn crt_calloc_zeroes_and_refuses_overflow() -> Outcome {
    // SAFETY: C allocation calls on blocks this test owns.
    unsafe {
        let dirty = malloc(4096).cast::<u8>();
        dirty.write_bytes(0xff, 4096);
        free(dirty.cast());
        let p = calloc(64, 64).cast::<u8>();
        ensure!(!p.is_null(), "calloc failed");
        let zero = (0..4096).all(|i| p.add(i).read() == 0);
        free(p.cast());
        ensure!(zero, "calloc memory is not zeroed");
        *__errno_location() = 0;
        let huge = calloc(usize::MAX / 2, 3);
        ensure!(huge.is_null(), "calloc overflow returned memory");
        ensure!(
            errno_value() == errno::ENOMEM,
            "errno {} after overflow",
            errno_value()
        );
    }
    Ok(())
}

fn crt_setjmp_longjmp() -> Outcome {
    let v = svsm::arch::setjmp::round_trip(42);
    ensure!(v == 42, "setjmp returned {v} after longjmp(env, 42)");
    let v = svsm::arch::setjmp::round_trip(0);
    ensure!(
        v == 1,
        "setjmp returned {v} after longjmp(env, 0) (must be 1)"
    );
    Ok(())
}

fn crt_pthread_once_runs_once() -> Outcome {
    let count = crt::once_runs_once();
    ensure!(count == 1, "the once routine ran {count} times");
    Ok(())
}

fn crt_pthread_keys_hold_values() -> Outcome {
    let mut a = 0u32;
    let mut b = 0u32;
    // SAFETY: the key calls get valid pointers; values are opaque.
    unsafe {
        ensure!(
            pthread_key_create(&mut a, core::ptr::null()) == 0,
            "key_create failed"
        );
        ensure!(
            pthread_key_create(&mut b, core::ptr::null()) == 0,
            "key_create failed"
        );
        ensure!(a != b, "two keys share slot {a}");
        ensure!(pthread_getspecific(a).is_null(), "a new key is not NULL");
        ensure!(
            pthread_setspecific(a, 0x1234 as *const c_void) == 0,
            "setspecific failed"
        );
        ensure!(
            pthread_setspecific(b, 0x5678 as *const c_void) == 0,
            "setspecific failed"
        );
        ensure!(
            pthread_getspecific(a) as usize == 0x1234,
            "key a lost its value"
        );
        ensure!(
            pthread_getspecific(b) as usize == 0x5678,
            "key b lost its value"
        );
        ensure!(
            pthread_key_delete(a) == 0 && pthread_key_delete(b) == 0,
            "key_delete failed"
        );
        ensure!(
            pthread_setspecific(a, core::ptr::null()) != 0,
            "a deleted key accepted a value"
        );
    }
    Ok(())
}

fn crt_getrandom_from_rdseed() -> Outcome {
    let mut x = [0u8; 48];
    let mut y = [0u8; 48];
    // SAFETY: the buffers are 48 bytes.
    let (nx, ny) = unsafe {
        (
            getrandom(x.as_mut_ptr().cast(), x.len(), 0),
            getrandom(y.as_mut_ptr().cast(), y.len(), 0),
        )
    };
    ensure!(nx == 48 && ny == 48, "getrandom returned {nx}, {ny}");
    ensure!(x != y, "two draws are equal");
    ensure!(x.iter().any(|&b| b != 0), "a draw is all zero");
    Ok(())
}

fn crt_syscall_refuses_all_but_getrandom() -> Outcome {
    let mut x = [0u8; 16];
    // SAFETY: SYS_getrandom with a 16-byte buffer; other numbers touch nothing.
    unsafe {
        let n = syscall(318, x.as_mut_ptr() as usize, x.len(), 0);
        ensure!(n == 16, "syscall(SYS_getrandom) returned {n}");
        *__errno_location() = 0;
        let n = syscall(1, 1, x.as_ptr() as usize, 16); // write(2)
        ensure!(n == -1, "syscall(SYS_write) returned {n}");
        ensure!(errno_value() == errno::ENOSYS, "errno {}", errno_value());
    }
    ensure!(x.iter().any(|&b| b != 0), "getrandom left the buffer zero");
    Ok(())
}

fn crt_files_fail_cleanly() -> Outcome {
    // SAFETY: NUL-terminated strings.
    unsafe {
        *__errno_location() = 0;
        let f = fopen(c"/usr/lib/ssl/openssl.cnf".as_ptr(), c"r".as_ptr());
        ensure!(f.is_null(), "fopen returned a FILE");
        ensure!(errno_value() == errno::ENOENT, "errno {}", errno_value());
    }
    Ok(())
}

fn crt_strings_and_numbers() -> Outcome {
    // SAFETY: NUL-terminated strings; `end` is writable.
    unsafe {
        let mut end: *mut c_char = core::ptr::null_mut();
        let s = c"  -0x1fz";
        let v = strtol(s.as_ptr(), &mut end, 0);
        ensure!(v == -31, "strtol(\"  -0x1fz\", 0) = {v}");
        ensure!(
            end.cast_const() == s.as_ptr().add(7),
            "strtol stopped at the wrong place"
        );
        ensure!(
            strtoul(c"777".as_ptr(), core::ptr::null_mut(), 8) == 511,
            "strtoul base 8"
        );
        ensure!(
            strtol(
                c"99999999999999999999999".as_ptr(),
                core::ptr::null_mut(),
                10
            ) == c_long::MAX,
            "strtol does not saturate"
        );
        let hay = c"libtpms with openssl";
        let found = strstr(hay.as_ptr(), c"open".as_ptr());
        ensure!(
            found.cast_const() == hay.as_ptr().add(13),
            "strstr found the wrong place"
        );
        ensure!(
            strstr(hay.as_ptr(), c"swtpm".as_ptr()).is_null(),
            "strstr found a ghost"
        );
        ensure!(strcmp(c"abc".as_ptr(), c"abd".as_ptr()) < 0, "strcmp order");
        ensure!(
            strcmp(c"abc".as_ptr(), c"abc".as_ptr()) == 0,
            "strcmp equality"
        );
    }
    Ok(())
}

fn crt_qsort_sorts() -> Outcome {
    let mut values = [5, -3, 99, 0, 7, 7, -100, 42, 1, 2, 3, 1000, -1];
    crt::qsort_i32(&mut values);
    ensure!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "not sorted: {values:?}"
    );
    ensure!(
        values[0] == -100 && values[12] == 1000,
        "elements lost: {values:?}"
    );
    Ok(())
}

fn crt_time_from_tsc() -> Outcome {
    let mut a = [0i64; 2];
    let mut b = [0i64; 2];
    // SAFETY: writable timespec-shaped buffers.
    unsafe {
        ensure!(clock_gettime(1, &mut a) == 0, "CLOCK_MONOTONIC failed");
        for _ in 0..10_000 {
            core::hint::spin_loop();
        }
        ensure!(clock_gettime(1, &mut b) == 0, "CLOCK_MONOTONIC failed");
    }
    ensure!(
        (b[0], b[1]) > (a[0], a[1]),
        "the monotonic clock did not advance: {a:?} {b:?}"
    );
    ensure!(a[1] < 1_000_000_000, "nanoseconds out of range");
    // SAFETY: NULL is allowed.
    let now = unsafe { time(core::ptr::null_mut()) };
    ensure!(
        now > 1_577_836_800,
        "time() = {now} is before 2020 (CMOS clock not read?)"
    );
    let mut tm = [0 as c_int; 14];
    let epoch_plus = 951_782_400i64 + 3_723; // 2000-02-29 01:02:03 UTC, a Tuesday
                                             // SAFETY: valid pointers.
    let r = unsafe { gmtime_r(&epoch_plus, &mut tm) };
    ensure!(!r.is_null(), "gmtime_r failed");
    ensure!(
        tm[..8] == [3, 2, 1, 29, 1, 100, 2, 59],
        "gmtime_r gave {:?}",
        &tm[..8]
    );
    Ok(())
}

fn crt_ctype_table() -> Outcome {
    // SAFETY: the table covers -128..=255.
    let class = |c: i32| unsafe { *(*__ctype_b_loc()).offset(c as isize) };
    const ALPHA: u16 = 0x0400;
    const DIGIT: u16 = 0x0800;
    const SPACE: u16 = 0x2000;
    ensure!(class(b'a' as i32) & ALPHA != 0, "'a' is not alpha");
    ensure!(class(b'7' as i32) & DIGIT != 0, "'7' is not a digit");
    ensure!(class(b' ' as i32) & SPACE != 0, "' ' is not space");
    ensure!(
        class(b'-' as i32) & (ALPHA | DIGIT | SPACE) == 0,
        "'-' misclassified"
    );
    ensure!(class(-1) == 0, "EOF has classes");
    Ok(())
}
