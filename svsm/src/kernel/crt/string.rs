//! `<string.h>` and `<stdlib.h>` string functions, and the FORTIFY `__mem*_chk` checks.
//!
//! `memcpy`, `memmove`, `memset` and `memcmp` come from Rust's `compiler_builtins`.

use core::ffi::{c_char, c_int, c_long, c_ulong, c_void};
use core::ptr;

use super::errno::EINVAL;
use super::memory::crt_malloc;
use crate::kernel::exit::terminate;

unsafe extern "C" {
    fn memcpy(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void;
    fn memset(dst: *mut c_void, c: c_int, n: usize) -> *mut c_void;
}

#[unsafe(no_mangle)]
unsafe extern "C" fn __memcpy_chk(
    dst: *mut c_void,
    src: *const c_void,
    n: usize,
    dst_len: usize,
) -> *mut c_void {
    if n > dst_len {
        terminate(format_args!(
            "__memcpy_chk: {n} bytes into a {dst_len}-byte buffer"
        ));
    }
    // SAFETY: C's contract for memcpy; the size was checked against the buffer.
    unsafe { memcpy(dst, src, n) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn __memset_chk(
    dst: *mut c_void,
    c: c_int,
    n: usize,
    dst_len: usize,
) -> *mut c_void {
    if n > dst_len {
        terminate(format_args!(
            "__memset_chk: {n} bytes into a {dst_len}-byte buffer"
        ));
    }
    // SAFETY: C's contract for memset; the size was checked against the buffer.
    unsafe { memset(dst, c, n) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: C's contract: `s` is NUL-terminated.
    unsafe {
        while *s.add(n) != 0 {
            n += 1;
        }
    }
    n
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memchr(s: *const c_void, c: c_int, n: usize) -> *mut c_void {
    let s = s.cast::<u8>();
    for i in 0..n {
        // SAFETY: C's contract: `s` has `n` readable bytes.
        if unsafe { *s.add(i) } == c as u8 {
            // SAFETY: inside the same buffer.
            return unsafe { s.add(i) }.cast_mut().cast();
        }
    }
    ptr::null_mut()
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strcmp(a: *const c_char, b: *const c_char) -> c_int {
    // SAFETY: both strings are NUL-terminated.
    unsafe { strncmp(a, b, usize::MAX) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strncmp(a: *const c_char, b: *const c_char, n: usize) -> c_int {
    for i in 0..n {
        // SAFETY: both strings are NUL-terminated; we stop at the first NUL.
        let (x, y) = unsafe { (*a.add(i) as u8, *b.add(i) as u8) };
        if x != y {
            return c_int::from(x) - c_int::from(y);
        }
        if x == 0 {
            return 0;
        }
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strcpy(dst: *mut c_char, src: *const c_char) -> *mut c_char {
    // SAFETY: C's contract: `dst` has room for `src` and its NUL.
    unsafe {
        let n = strlen(src);
        memcpy(dst.cast(), src.cast(), n + 1);
    }
    dst
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strncpy(dst: *mut c_char, src: *const c_char, n: usize) -> *mut c_char {
    let mut i = 0;
    // SAFETY: C's contract: `dst` has `n` bytes; `src` is NUL-terminated or has `n` bytes.
    unsafe {
        while i < n && *src.add(i) != 0 {
            *dst.add(i) = *src.add(i);
            i += 1;
        }
        while i < n {
            *dst.add(i) = 0;
            i += 1;
        }
    }
    dst
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strcat(dst: *mut c_char, src: *const c_char) -> *mut c_char {
    // SAFETY: C's contract: `dst` has room for both strings.
    unsafe {
        strcpy(dst.add(strlen(dst)), src);
    }
    dst
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strchr(s: *const c_char, c: c_int) -> *mut c_char {
    let c = c as u8;
    let mut p = s;
    // SAFETY: `s` is NUL-terminated; the NUL itself matches c == 0.
    unsafe {
        loop {
            let b = *p as u8;
            if b == c {
                return p.cast_mut();
            }
            if b == 0 {
                return ptr::null_mut();
            }
            p = p.add(1);
        }
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strrchr(s: *const c_char, c: c_int) -> *mut c_char {
    let c = c as u8;
    let mut found = ptr::null_mut();
    let mut p = s;
    // SAFETY: `s` is NUL-terminated.
    unsafe {
        loop {
            let b = *p as u8;
            if b == c {
                found = p.cast_mut();
            }
            if b == 0 {
                return found;
            }
            p = p.add(1);
        }
    }
}

/// Whether byte `b` is in the NUL-terminated set `set`.
///
/// # Safety
/// `set` is NUL-terminated.
unsafe fn in_set(b: u8, set: *const c_char) -> bool {
    let mut p = set;
    // SAFETY: the caller's contract.
    unsafe {
        while *p != 0 {
            if *p as u8 == b {
                return true;
            }
            p = p.add(1);
        }
    }
    false
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strspn(s: *const c_char, accept: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: both strings are NUL-terminated.
    unsafe {
        while *s.add(n) != 0 && in_set(*s.add(n) as u8, accept) {
            n += 1;
        }
    }
    n
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strcspn(s: *const c_char, reject: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: both strings are NUL-terminated.
    unsafe {
        while *s.add(n) != 0 && !in_set(*s.add(n) as u8, reject) {
            n += 1;
        }
    }
    n
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strpbrk(s: *const c_char, accept: *const c_char) -> *mut c_char {
    // SAFETY: both strings are NUL-terminated.
    unsafe {
        let n = strcspn(s, accept);
        if *s.add(n) == 0 {
            ptr::null_mut()
        } else {
            s.add(n).cast_mut()
        }
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strstr(haystack: *const c_char, needle: *const c_char) -> *mut c_char {
    // SAFETY: both strings are NUL-terminated.
    unsafe {
        let n = strlen(needle);
        if n == 0 {
            return haystack.cast_mut();
        }
        let mut p = haystack;
        while *p != 0 {
            if strncmp(p, needle, n) == 0 {
                return p.cast_mut();
            }
            p = p.add(1);
        }
    }
    ptr::null_mut()
}

/// `strtok`'s position between calls (the engine is single-threaded).
static STRTOK_NEXT: spin::Mutex<usize> = spin::Mutex::new(0);

#[unsafe(no_mangle)]
unsafe extern "C" fn strtok(s: *mut c_char, delim: *const c_char) -> *mut c_char {
    let mut next = STRTOK_NEXT.lock();
    let start = if s.is_null() { *next as *mut c_char } else { s };
    if start.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: C's contract: the string (from this call or the previous one) is
    // NUL-terminated and writable.
    unsafe {
        let token = start.add(strspn(start, delim));
        if *token == 0 {
            *next = 0;
            return ptr::null_mut();
        }
        let end = token.add(strcspn(token, delim));
        if *end == 0 {
            *next = 0;
        } else {
            *end = 0;
            *next = end.add(1) as usize;
        }
        token
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strdup(s: *const c_char) -> *mut c_char {
    // SAFETY: `s` is NUL-terminated; the copy gets its length plus the NUL.
    unsafe {
        let n = strlen(s) + 1;
        let copy = crt_malloc(n);
        if !copy.is_null() {
            memcpy(copy, s.cast(), n);
        }
        copy.cast()
    }
}

fn digit_value(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'a'..=b'z' => Some(u32::from(b - b'a') + 10),
        b'A'..=b'Z' => Some(u32::from(b - b'A') + 10),
        _ => None,
    }
}

/// The shared parser of `strtol`/`strtoul`: (negative, magnitude saturated, end).
///
/// # Safety
/// `s` is NUL-terminated.
unsafe fn parse_integer(s: *const c_char, base: c_int) -> Option<(bool, u64, *const c_char)> {
    if base != 0 && !(2..=36).contains(&base) {
        return None;
    }
    // SAFETY: reads stop at the NUL.
    unsafe {
        let mut p = s;
        while matches!(*p as u8, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            p = p.add(1);
        }
        let mut negative = false;
        if *p as u8 == b'-' || *p as u8 == b'+' {
            negative = *p as u8 == b'-';
            p = p.add(1);
        }
        let mut base = base as u32;
        let hex_prefix = *p as u8 == b'0' && matches!(*p.add(1) as u8, b'x' | b'X');
        if (base == 0 || base == 16)
            && hex_prefix
            && digit_value(*p.add(2) as u8).is_some_and(|d| d < 16)
        {
            p = p.add(2);
            base = 16;
        } else if base == 0 {
            base = if *p as u8 == b'0' { 8 } else { 10 };
        }
        let digits_start = p;
        let mut value: u64 = 0;
        while let Some(d) = digit_value(*p as u8).filter(|&d| d < base) {
            value = value
                .saturating_mul(u64::from(base))
                .saturating_add(u64::from(d));
            p = p.add(1);
        }
        if p == digits_start {
            return Some((false, 0, s));
        }
        Some((negative, value, p))
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strtol(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_long {
    // SAFETY: C's contract: `s` is NUL-terminated, `end` NULL or writable.
    unsafe {
        let Some((negative, magnitude, stop)) = parse_integer(s, base) else {
            super::fail(EINVAL);
            return 0;
        };
        if !end.is_null() {
            *end = stop.cast_mut();
        }
        if negative {
            if magnitude > c_long::MAX as u64 + 1 {
                c_long::MIN
            } else {
                (magnitude as i64).wrapping_neg()
            }
        } else {
            c_long::try_from(magnitude).unwrap_or(c_long::MAX)
        }
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strtoul(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_ulong {
    // SAFETY: C's contract: `s` is NUL-terminated, `end` NULL or writable.
    unsafe {
        let Some((negative, magnitude, stop)) = parse_integer(s, base) else {
            super::fail(EINVAL);
            return 0;
        };
        if !end.is_null() {
            *end = stop.cast_mut();
        }
        if negative {
            magnitude.wrapping_neg()
        } else {
            magnitude
        }
    }
}

static ERROR_TEXT: &[u8] = b"error (no error texts in the SVSM)\0";

#[unsafe(no_mangle)]
extern "C" fn strerror(_errnum: c_int) -> *const c_char {
    ERROR_TEXT.as_ptr().cast()
}

#[unsafe(no_mangle)]
unsafe extern "C" fn __xpg_strerror_r(_errnum: c_int, buf: *mut c_char, len: usize) -> c_int {
    if buf.is_null() || len == 0 {
        return EINVAL;
    }
    let n = (ERROR_TEXT.len() - 1).min(len - 1);
    // SAFETY: C's contract: `buf` has `len` bytes.
    unsafe {
        memcpy(buf.cast(), ERROR_TEXT.as_ptr().cast(), n);
        *buf.add(n) = 0;
    }
    0
}

/// BSD's name for `strchr`.
#[unsafe(no_mangle)]
unsafe extern "C" fn index(s: *const c_char, c: c_int) -> *mut c_char {
    // SAFETY: forwarded unchanged.
    unsafe { strchr(s, c) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strndup(s: *const c_char, n: usize) -> *mut c_char {
    // SAFETY: `s` is NUL-terminated or has at least `n` bytes; the copy gets at most `n`
    // of them plus a NUL.
    unsafe {
        let len = (0..n).find(|&i| *s.add(i) == 0).unwrap_or(n);
        let copy = crt_malloc(len + 1).cast::<c_char>();
        if !copy.is_null() {
            memcpy(copy.cast(), s.cast(), len);
            *copy.add(len) = 0;
        }
        copy
    }
}

/// glibc 2.38's C23 `strtol` (what forky's archives call): C23 adds `0b` binary
/// numbers, which the engine never parses; the C99 parser serves.
#[unsafe(no_mangle)]
unsafe extern "C" fn __isoc23_strtol(
    s: *const c_char,
    end: *mut *mut c_char,
    base: c_int,
) -> c_long {
    // SAFETY: forwarded unchanged.
    unsafe { strtol(s, end, base) }
}

/// glibc 2.38's C23 `strtoul`, as [`__isoc23_strtol`].
#[unsafe(no_mangle)]
unsafe extern "C" fn __isoc23_strtoul(
    s: *const c_char,
    end: *mut *mut c_char,
    base: c_int,
) -> c_ulong {
    // SAFETY: forwarded unchanged.
    unsafe { strtoul(s, end, base) }
}
