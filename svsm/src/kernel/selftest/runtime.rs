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
    fn __snprintf_chk(
        buf: *mut c_char,
        len: usize,
        flag: c_int,
        slen: usize,
        format: *const c_char,
        ...
    ) -> c_int;
    fn __asprintf_chk(out: *mut *mut c_char, flag: c_int, format: *const c_char, ...) -> c_int;
    fn regcomp(preg: *mut u8, pattern: *const c_char, cflags: c_int) -> c_int;
    fn regexec(
        preg: *const u8,
        s: *const c_char,
        n: usize,
        m: *mut [c_int; 2],
        flags: c_int,
    ) -> c_int;
    fn regfree(preg: *mut u8);
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
    (
        "crt_printf_formats_register_and_stack_arguments",
        crt_printf_formats_register_and_stack_arguments,
    ),
    (
        "crt_regex_takes_apart_a_profile",
        crt_regex_takes_apart_a_profile,
    ),
];

/// `snprintf` and `asprintf` as the engine calls them (FORTIFY's `_chk` entries), with
/// more arguments than registers, so both halves of the `va_list` are read.
fn crt_printf_formats_register_and_stack_arguments() -> Outcome {
    let expected = b"default-v1|7|0x11f|18446744073709551615|Z|end|-3|42";
    let mut buf = [0u8; 80];
    // SAFETY: a NUL-terminated format whose conversions match the arguments' types; the
    // destination has `buf.len()` bytes.
    let n = unsafe {
        __snprintf_chk(
            buf.as_mut_ptr().cast(),
            buf.len(),
            1,
            buf.len(),
            c"%s|%d|%#x|%lu|%c|%s|%d|%u".as_ptr(),
            c"default-v1".as_ptr(),
            7 as c_int,
            0x11f as c_int,
            u64::MAX,
            c_int::from(b'Z'),
            c"end".as_ptr(),
            -3 as c_int,
            42 as c_int,
        )
    };
    ensure!(n as usize == expected.len(), "snprintf returned {n}");
    ensure!(
        buf[..expected.len()] == expected[..] && buf[expected.len()] == 0,
        "snprintf wrote {:?}",
        core::str::from_utf8(&buf[..expected.len()])
    );
    // Truncation: the full length is returned, the buffer holds len - 1 bytes and a NUL.
    let mut small = [0xffu8; 5];
    // SAFETY: as above, into 5 bytes.
    let n = unsafe {
        __snprintf_chk(
            small.as_mut_ptr().cast(),
            small.len(),
            1,
            small.len(),
            c"%s-%d".as_ptr(),
            c"abcdef".as_ptr(),
            12 as c_int,
        )
    };
    ensure!(
        n == 9 && small == *b"abcd\0",
        "truncated snprintf: {n}, {small:?}"
    );
    let mut out: *mut c_char = core::ptr::null_mut();
    // SAFETY: a writable out-pointer; the result is a malloc block, freed below.
    let n = unsafe {
        __asprintf_chk(
            &mut out,
            1,
            c"{\"Name\":\"%s\",\"StateFormatLevel\":%d,%s%s%s%.*s}".as_ptr(),
            c"default-v1".as_ptr(),
            7 as c_int,
            c"\"a\":".as_ptr(),
            c"1".as_ptr(),
            c",".as_ptr(),
            3 as c_int,
            c"\"b\":2xyz".as_ptr(),
        )
    };
    let text = br#"{"Name":"default-v1","StateFormatLevel":7,"a":1,"b"}"#;
    ensure!(
        !out.is_null() && n as usize == text.len(),
        "asprintf returned {n}"
    );
    // SAFETY: asprintf's block holds n bytes and a NUL.
    let got = unsafe { core::slice::from_raw_parts(out.cast::<u8>(), text.len() + 1) };
    let same = got[..text.len()] == text[..] && got[text.len()] == 0;
    // SAFETY: asprintf's block, freed once.
    unsafe { free(out.cast()) };
    ensure!(same, "asprintf wrote {:?}", core::str::from_utf8(got));
    // A refused conversion fails the call: -1 and an empty string.
    // SAFETY: as above.
    let n = unsafe {
        __snprintf_chk(
            buf.as_mut_ptr().cast(),
            8,
            1,
            buf.len(),
            c"%n".as_ptr(),
            0usize,
        )
    };
    ensure!(n == -1 && buf[0] == 0, "%n was not refused: {n}");
    Ok(())
}

/// `regcomp`/`regexec`/`regfree` on the pattern libtpms uses for a profile's name.
fn crt_regex_takes_apart_a_profile() -> Outcome {
    let mut preg = [0u64; 8];
    let pattern = c"^\\{.*[[:space:]]*\"Name\"[[:space:]]*:[[:space:]]*\"([^\"]+)\".*\\}$";
    let subject = c"{\"Name\":\"default-v1\",\"StateFormatLevel\":7}";
    // SAFETY: a 64-byte regex_t, NUL-terminated pattern; REG_EXTENDED.
    let rc = unsafe { regcomp(preg.as_mut_ptr().cast(), pattern.as_ptr(), 1) };
    ensure!(rc == 0, "regcomp: {rc}");
    ensure!(preg[6] == 1, "re_nsub {}", preg[6]);
    let mut m = [[-1 as c_int; 2]; 3];
    // SAFETY: the compiled expression, a NUL-terminated subject, 3 match slots.
    let rc = unsafe { regexec(preg.as_ptr().cast(), subject.as_ptr(), 3, m.as_mut_ptr(), 0) };
    ensure!(rc == 0, "regexec: {rc}");
    ensure!(m == [[0, 42], [9, 19], [-1, -1]], "matches {m:?}");
    // SAFETY: as above.
    let rc = unsafe {
        regexec(
            preg.as_ptr().cast(),
            c"{}".as_ptr(),
            0,
            core::ptr::null_mut(),
            0,
        )
    };
    ensure!(rc == 1, "regexec on \"{{}}\": {rc} (REG_NOMATCH is 1)");
    // SAFETY: compiled above; freed once, which empties the slot.
    unsafe { regfree(preg.as_mut_ptr().cast()) };
    ensure!(preg[0] == 0, "regfree left the expression");
    // Basic (non-extended) syntax is refused: REG_BADPAT.
    // SAFETY: as above.
    let rc = unsafe { regcomp(preg.as_mut_ptr().cast(), c"a".as_ptr(), 0) };
    ensure!(rc == 2, "basic regcomp: {rc}");
    Ok(())
}

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
