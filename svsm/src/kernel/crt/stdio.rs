//! Files, directories and formatted output: none exist in the SVSM, so every call fails
//! the way the C library documents (OpenSSL probes for its config file and copes; libtpms
//! keeps its state through the NV callbacks the vTPM registers, never in files).
//!
//! Formatting into memory (`snprintf`, `asprintf` and their `v`-variants) works: libtpms
//! 0.10 formats its profile descriptions with them ([`svsm::cfmt`]; the variadic entry
//! points are in `arch::varargs`). Formatting to files and descriptors fails, logging
//! the format, so an unexpected use shows on the console.

use alloc::vec::Vec;
use core::ffi::{c_char, c_int, c_long, c_void, CStr};
use core::ptr;

use super::errno::{EBADF, EINVAL, ENOENT, ENOSYS, EOVERFLOW};
use super::memory::crt_malloc;
use super::{c_str, fail, fail_null};
use svsm::cfmt::{self, CArgs, FormatError};

/// `FILE *` objects the archives reference by name: NULL, so every stdio call on them
/// fails.
#[unsafe(no_mangle)]
static stderr: usize = 0;
#[unsafe(no_mangle)]
static stdin: usize = 0;
#[unsafe(no_mangle)]
static stdout: usize = 0;

const EOF: c_int = -1;

#[unsafe(no_mangle)]
unsafe extern "C" fn fopen(path: *const c_char, _mode: *const c_char) -> *mut c_void {
    // SAFETY: C's contract: `path` is NUL-terminated.
    log::debug!("crt: fopen({}) refused: no files", unsafe { c_str(path) });
    fail_null(ENOENT)
}

#[unsafe(no_mangle)]
unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut c_void {
    // SAFETY: forwarded unchanged.
    unsafe { fopen(path, mode) }
}

#[unsafe(no_mangle)]
extern "C" fn fclose(_f: *mut c_void) -> c_int {
    fail(EBADF);
    EOF
}

#[unsafe(no_mangle)]
extern "C" fn fread(_p: *mut c_void, _size: usize, _n: usize, _f: *mut c_void) -> usize {
    fail(EBADF);
    0
}

#[unsafe(no_mangle)]
extern "C" fn fwrite(_p: *const c_void, _size: usize, _n: usize, _f: *mut c_void) -> usize {
    fail(EBADF);
    0
}

#[unsafe(no_mangle)]
extern "C" fn fseek(_f: *mut c_void, _offset: c_long, _whence: c_int) -> c_int {
    fail(EBADF)
}

#[unsafe(no_mangle)]
extern "C" fn ftell(_f: *mut c_void) -> c_long {
    c_long::from(fail(EBADF))
}

/// `fflush(NULL)` (flush everything) succeeds: there is nothing to flush.
#[unsafe(no_mangle)]
extern "C" fn fflush(f: *mut c_void) -> c_int {
    if f.is_null() {
        0
    } else {
        fail(EBADF);
        EOF
    }
}

#[unsafe(no_mangle)]
extern "C" fn fgets(_s: *mut c_char, _n: c_int, _f: *mut c_void) -> *mut c_char {
    fail_null(EBADF)
}

#[unsafe(no_mangle)]
extern "C" fn fputs(_s: *const c_char, _f: *mut c_void) -> c_int {
    fail(EBADF);
    EOF
}

#[unsafe(no_mangle)]
extern "C" fn fputc(_c: c_int, _f: *mut c_void) -> c_int {
    fail(EBADF);
    EOF
}

#[unsafe(no_mangle)]
extern "C" fn feof(_f: *mut c_void) -> c_int {
    1
}

#[unsafe(no_mangle)]
extern "C" fn ferror(_f: *mut c_void) -> c_int {
    1
}

#[unsafe(no_mangle)]
extern "C" fn fileno(_f: *mut c_void) -> c_int {
    fail(EBADF)
}

#[unsafe(no_mangle)]
unsafe extern "C" fn perror(s: *const c_char) {
    // SAFETY: C's contract: `s` is NULL or NUL-terminated.
    log::warn!("crt: perror: {}", unsafe { c_str(s) });
}

#[unsafe(no_mangle)]
unsafe extern "C" fn open(path: *const c_char, _flags: c_int) -> c_int {
    // SAFETY: C's contract: `path` is NUL-terminated.
    log::debug!("crt: open({}) refused: no files", unsafe { c_str(path) });
    fail(ENOENT)
}

#[unsafe(no_mangle)]
extern "C" fn read(_fd: c_int, _buf: *mut c_void, _n: usize) -> isize {
    fail(EBADF) as isize
}

#[unsafe(no_mangle)]
extern "C" fn write(_fd: c_int, _buf: *const c_void, _n: usize) -> isize {
    fail(EBADF) as isize
}

#[unsafe(no_mangle)]
extern "C" fn close(_fd: c_int) -> c_int {
    fail(EBADF)
}

#[unsafe(no_mangle)]
extern "C" fn remove(_path: *const c_char) -> c_int {
    fail(ENOENT)
}

#[unsafe(no_mangle)]
extern "C" fn stat(_path: *const c_char, _buf: *mut c_void) -> c_int {
    fail(ENOENT)
}

#[unsafe(no_mangle)]
extern "C" fn fstat(_fd: c_int, _buf: *mut c_void) -> c_int {
    fail(EBADF)
}

#[unsafe(no_mangle)]
extern "C" fn opendir(_path: *const c_char) -> *mut c_void {
    fail_null(ENOENT)
}

#[unsafe(no_mangle)]
extern "C" fn readdir(_dir: *mut c_void) -> *mut c_void {
    fail_null(EBADF)
}

#[unsafe(no_mangle)]
extern "C" fn closedir(_dir: *mut c_void) -> c_int {
    fail(EBADF)
}

#[unsafe(no_mangle)]
extern "C" fn fcntl(_fd: c_int, _cmd: c_int) -> c_int {
    fail(EBADF)
}

#[unsafe(no_mangle)]
extern "C" fn ioctl(_fd: c_int, _request: u64) -> c_int {
    fail(EBADF)
}

#[unsafe(no_mangle)]
extern "C" fn tcgetattr(_fd: c_int, _termios: *mut c_void) -> c_int {
    fail(EBADF)
}

#[unsafe(no_mangle)]
extern "C" fn tcsetattr(_fd: c_int, _action: c_int, _termios: *const c_void) -> c_int {
    fail(EBADF)
}

#[unsafe(no_mangle)]
extern "C" fn select(
    _n: c_int,
    _read: *mut c_void,
    _write: *mut c_void,
    _except: *mut c_void,
    _timeout: *mut c_void,
) -> c_int {
    fail(ENOSYS)
}

#[unsafe(no_mangle)]
extern "C" fn __fdelt_chk(fd: c_long) -> c_long {
    if !(0..1024).contains(&fd) {
        crate::kernel::exit::terminate(format_args!("__fdelt_chk: descriptor {fd} out of range"));
    }
    fd / 64
}

/// Refuses a printf-family call: empties the destination if there is one, logs the
/// format, returns -1.
///
/// # Safety
/// `format` is NUL-terminated; `buf` is NULL or has `len` bytes.
unsafe fn refuse_format(name: &str, buf: *mut c_char, len: usize, format: *const c_char) -> c_int {
    if !buf.is_null() && len > 0 {
        // SAFETY: the caller's contract.
        unsafe { *buf = 0 };
    }
    // SAFETY: the caller's contract.
    log::warn!("crt: {name}({:?}) refused: no printf in the SVSM", unsafe {
        c_str(format)
    });
    fail(ENOSYS)
}

#[unsafe(no_mangle)]
unsafe extern "C" fn __fprintf_chk(_f: *mut c_void, _flag: c_int, format: *const c_char) -> c_int {
    // SAFETY: C's contract for fprintf.
    unsafe { refuse_format("fprintf", ptr::null_mut(), 0, format) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn vfprintf(_f: *mut c_void, format: *const c_char, _args: *mut c_void) -> c_int {
    // SAFETY: C's contract for vfprintf.
    unsafe { refuse_format("vfprintf", ptr::null_mut(), 0, format) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn __vfprintf_chk(
    _f: *mut c_void,
    _flag: c_int,
    format: *const c_char,
    _args: *mut c_void,
) -> c_int {
    // SAFETY: C's contract for vfprintf.
    unsafe { refuse_format("vfprintf", ptr::null_mut(), 0, format) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn __dprintf_chk(_fd: c_int, _flag: c_int, format: *const c_char) -> c_int {
    // SAFETY: C's contract for dprintf.
    unsafe { refuse_format("dprintf", ptr::null_mut(), 0, format) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn __vdprintf_chk(
    _fd: c_int,
    _flag: c_int,
    format: *const c_char,
    _args: *mut c_void,
) -> c_int {
    // SAFETY: C's contract for vdprintf.
    unsafe { refuse_format("vdprintf", ptr::null_mut(), 0, format) }
}

/// A System V AMD64 `va_list` (ABI §3.5.7): what `va_list` arguments point at.
#[repr(C)]
#[derive(Debug)]
pub struct VaList {
    gp_offset: u32,
    fp_offset: u32,
    overflow_arg_area: *const u64,
    reg_save_area: *const u8,
}

/// The formatter's arguments, taken from a `va_list`.
struct VaArgs(*mut VaList);

impl CArgs for VaArgs {
    fn next_word(&mut self) -> u64 {
        // SAFETY: the C caller's contract: the va_list is live and holds an INTEGER-class
        // argument for every conversion of its format, in the register save area while
        // gp_offset < 48 and in the overflow area after.
        unsafe {
            let va = &mut *self.0;
            if va.gp_offset < 48 {
                let v = va
                    .reg_save_area
                    .add(va.gp_offset as usize)
                    .cast::<u64>()
                    .read_unaligned();
                va.gp_offset += 8;
                v
            } else {
                let v = va.overflow_arg_area.read_unaligned();
                va.overflow_arg_area = va.overflow_arg_area.add(1);
                v
            }
        }
    }

    fn append_string(&self, address: u64, limit: usize, out: &mut Vec<u8>) {
        if address == 0 {
            out.extend(b"(null)".iter().take(limit));
            return;
        }
        let mut p = address as *const u8;
        for _ in 0..limit {
            // SAFETY: the C caller's contract for %s: a NUL-terminated string (or at
            // least `limit` readable bytes when a precision is given).
            let b = unsafe { p.read() };
            if b == 0 {
                break;
            }
            out.push(b);
            // SAFETY: still inside the string (its NUL not yet reached).
            p = unsafe { p.add(1) };
        }
    }
}

/// Formats `format` with the arguments in `ap`.
///
/// # Safety
/// `format` is NUL-terminated and `ap` a live va_list with its arguments.
unsafe fn vformat(format: *const c_char, ap: *mut VaList) -> Result<Vec<u8>, FormatError> {
    // SAFETY: the caller's contract.
    let fmt = unsafe { CStr::from_ptr(format) }.to_bytes();
    let mut out = Vec::new();
    cfmt::format(fmt, &mut VaArgs(ap), &mut out)?;
    Ok(out)
}

/// `vsnprintf` with FORTIFY's check that `len` fits the destination (`slen`).
#[unsafe(no_mangle)]
unsafe extern "C" fn __vsnprintf_chk(
    buf: *mut c_char,
    len: usize,
    _flag: c_int,
    slen: usize,
    format: *const c_char,
    ap: *mut VaList,
) -> c_int {
    if len > slen {
        crate::kernel::exit::terminate(format_args!(
            "vsnprintf: {len} bytes into a {slen}-byte buffer"
        ));
    }
    // SAFETY: C's contract for vsnprintf.
    let text = match unsafe { vformat(format, ap) } {
        Ok(text) => text,
        // SAFETY: as above.
        Err(_) => return unsafe { refuse_format("vsnprintf", buf, len, format) },
    };
    let Ok(n) = c_int::try_from(text.len()) else {
        return fail(EOVERFLOW);
    };
    if len > 0 {
        let copied = text.len().min(len - 1);
        // SAFETY: `buf` has `len` bytes; `copied + 1 <= len`.
        unsafe {
            ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), copied);
            *buf.add(copied) = 0;
        }
    }
    n
}

/// `vasprintf`: the formatted string in a fresh `malloc` block.
#[unsafe(no_mangle)]
unsafe extern "C" fn __vasprintf_chk(
    out: *mut *mut c_char,
    _flag: c_int,
    format: *const c_char,
    ap: *mut VaList,
) -> c_int {
    if out.is_null() {
        return fail(EINVAL);
    }
    // SAFETY: C's contract: `out` is writable.
    unsafe { *out = ptr::null_mut() };
    // SAFETY: C's contract for vasprintf.
    let text = match unsafe { vformat(format, ap) } {
        Ok(text) => text,
        // SAFETY: as above.
        Err(_) => return unsafe { refuse_format("vasprintf", ptr::null_mut(), 0, format) },
    };
    let Ok(n) = c_int::try_from(text.len()) else {
        return fail(EOVERFLOW);
    };
    let block = crt_malloc(text.len() + 1).cast::<u8>();
    if block.is_null() {
        return -1;
    }
    // SAFETY: `block` has text.len() + 1 fresh bytes; `out` is writable.
    unsafe {
        ptr::copy_nonoverlapping(text.as_ptr(), block, text.len());
        *block.add(text.len()) = 0;
        *out = block.cast();
    }
    n
}

/// `sscanf` converts nothing: returns EOF (input failure).
#[unsafe(no_mangle)]
unsafe extern "C" fn __isoc99_sscanf(_s: *const c_char, format: *const c_char) -> c_int {
    // SAFETY: C's contract: `format` is NUL-terminated.
    log::warn!("crt: sscanf({:?}) refused", unsafe { c_str(format) });
    EOF
}
