//! `regcomp`, `regexec`, `regfree` and `regerror` over [`svsm::posix_regex`]: libtpms
//! 0.10 parses its profile descriptions with POSIX extended expressions.
//!
//! The caller's `regex_t` (glibc's 64-byte layout) holds a pointer to the compiled
//! expression at offset 0 and the group count at `re_nsub`'s offset; `regfree` takes the
//! expression back. Matches are reported in `regmatch_t`s of two `int` offsets.

use alloc::boxed::Box;
use core::ffi::{c_char, c_int, CStr};

use svsm::posix_regex::{PosixRegex, RegexError, RE_NSUB_OFFSET};

/// `REG_NOMATCH`.
const REG_NOMATCH: c_int = 1;
/// `REG_BADPAT`.
const REG_BADPAT: c_int = 2;
/// `REG_ESPACE`: also what a `regexec` on an expression this runtime did not compile
/// gets.
const REG_ESPACE: c_int = 12;

/// glibc's `regmatch_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RegMatch {
    start: c_int,
    end: c_int,
}

/// The compiled expression a `regex_t` holds, if any.
///
/// # Safety
/// `preg` points at a 64-byte `regex_t`.
unsafe fn slot(preg: *mut u8) -> *mut *mut PosixRegex {
    preg.cast()
}

#[unsafe(no_mangle)]
unsafe extern "C" fn regcomp(preg: *mut u8, pattern: *const c_char, cflags: c_int) -> c_int {
    if preg.is_null() || pattern.is_null() {
        return REG_BADPAT;
    }
    // SAFETY: C's contract: `pattern` is NUL-terminated.
    let pattern = unsafe { CStr::from_ptr(pattern) }.to_bytes();
    let regex = match PosixRegex::new(pattern, cflags) {
        Ok(regex) => regex,
        Err(RegexError::Unsupported | RegexError::BadPattern) => return REG_BADPAT,
    };
    let groups = regex.groups();
    // SAFETY: C's contract: `preg` is a writable regex_t (64 bytes, 8-aligned).
    unsafe {
        slot(preg).write(Box::into_raw(Box::new(regex)));
        preg.add(RE_NSUB_OFFSET).cast::<usize>().write(groups);
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn regexec(
    preg: *const u8,
    string: *const c_char,
    nmatch: usize,
    pmatch: *mut RegMatch,
    eflags: c_int,
) -> c_int {
    if preg.is_null() || string.is_null() || eflags != 0 {
        return REG_ESPACE;
    }
    // SAFETY: C's contract: `preg` was compiled by regcomp (so holds our pointer or, after
    // a failed regcomp, whatever the caller left: checked non-null only).
    let regex = unsafe { *slot(preg.cast_mut()) };
    if regex.is_null() {
        return REG_ESPACE;
    }
    // SAFETY: a live expression from regcomp; `string` is NUL-terminated.
    let (regex, haystack) = unsafe { (&*regex, CStr::from_ptr(string).to_bytes()) };
    let wanted = if pmatch.is_null() { 0 } else { nmatch };
    let Some(found) = regex.exec(haystack, wanted) else {
        return REG_NOMATCH;
    };
    for i in 0..wanted {
        let m = match found.get(i).copied().flatten() {
            Some((start, end)) => match (c_int::try_from(start), c_int::try_from(end)) {
                (Ok(start), Ok(end)) => RegMatch { start, end },
                _ => return REG_ESPACE,
            },
            None => RegMatch { start: -1, end: -1 },
        };
        // SAFETY: C's contract: `pmatch` has `nmatch` entries.
        unsafe { pmatch.add(i).write(m) };
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn regfree(preg: *mut u8) {
    if preg.is_null() {
        return;
    }
    // SAFETY: C's contract: a regex_t regcomp filled; the pointer is taken out once.
    unsafe {
        let regex = slot(preg).replace(core::ptr::null_mut());
        if !regex.is_null() {
            drop(Box::from_raw(regex));
        }
    }
}
