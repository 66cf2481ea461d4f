//! zlib and zstd, which forky's libcrypto can use for compressed certificates and TLS:
//! absent in the SVSM, so every entry point reports failure the library's own way.
//!
//! Nothing in the engine compresses (libtpms never asks OpenSSL to); these exist because
//! OpenSSL's compression methods name them. A stream is never created, so the calls that
//! take one are only reached after a failed creation, and fail again.

use core::ffi::{c_char, c_int, c_ulong, c_void};

/// zlib's `Z_STREAM_ERROR`.
const Z_STREAM_ERROR: c_int = -2;
/// zlib's `Z_MEM_ERROR`.
const Z_MEM_ERROR: c_int = -4;
/// zlib's `Z_VERSION_ERROR`: what an `*Init_` call returns for a library it cannot serve.
const Z_VERSION_ERROR: c_int = -6;
/// zstd's error results are `(size_t)-code`; `ZSTD_error_GENERIC` is 1.
const ZSTD_ERROR_GENERIC: usize = usize::MAX;

static NO_COMPRESSION: &[u8] = b"no compression in the SVSM\0";

#[unsafe(no_mangle)]
extern "C" fn deflateInit_(
    _stream: *mut c_void,
    _level: c_int,
    _version: *const c_char,
    _size: c_int,
) -> c_int {
    Z_VERSION_ERROR
}

#[unsafe(no_mangle)]
extern "C" fn inflateInit_(_stream: *mut c_void, _version: *const c_char, _size: c_int) -> c_int {
    Z_VERSION_ERROR
}

macro_rules! zlib_stream_error {
    ($($name:ident),* $(,)?) => {$(
        #[unsafe(no_mangle)]
        extern "C" fn $name(_stream: *mut c_void, _flush: c_int) -> c_int {
            Z_STREAM_ERROR
        }
    )*};
}

zlib_stream_error!(deflate, inflate, deflateEnd, inflateEnd);

#[unsafe(no_mangle)]
extern "C" fn compress(
    _dest: *mut u8,
    _dest_len: *mut c_ulong,
    _source: *const u8,
    _len: c_ulong,
) -> c_int {
    Z_MEM_ERROR
}

#[unsafe(no_mangle)]
extern "C" fn uncompress(
    _dest: *mut u8,
    _dest_len: *mut c_ulong,
    _source: *const u8,
    _len: c_ulong,
) -> c_int {
    Z_MEM_ERROR
}

#[unsafe(no_mangle)]
extern "C" fn zError(_code: c_int) -> *const c_char {
    NO_COMPRESSION.as_ptr().cast()
}

/// Stream creation fails: NULL.
macro_rules! zstd_no_stream {
    ($($name:ident),* $(,)?) => {$(
        #[unsafe(no_mangle)]
        extern "C" fn $name(_custom_memory: *const c_void) -> *mut c_void {
            core::ptr::null_mut()
        }
    )*};
}

zstd_no_stream!(ZSTD_createCStream_advanced, ZSTD_createDStream_advanced);

/// Every other call returns zstd's generic error.
macro_rules! zstd_error {
    ($($name:ident),* $(,)?) => {$(
        #[unsafe(no_mangle)]
        extern "C" fn $name() -> usize {
            ZSTD_ERROR_GENERIC
        }
    )*};
}

zstd_error!(
    ZSTD_compress,
    ZSTD_decompress,
    ZSTD_compressStream2,
    ZSTD_decompressStream,
    ZSTD_endStream,
    ZSTD_flushStream,
    ZSTD_freeCStream,
    ZSTD_freeDStream,
    ZSTD_initCStream,
    ZSTD_initDStream,
);

/// The recommended buffer sizes: none.
#[unsafe(no_mangle)]
extern "C" fn ZSTD_CStreamInSize() -> usize {
    0
}

#[unsafe(no_mangle)]
extern "C" fn ZSTD_DStreamInSize() -> usize {
    0
}

#[unsafe(no_mangle)]
extern "C" fn ZSTD_isError(_code: usize) -> u32 {
    1
}

#[unsafe(no_mangle)]
extern "C" fn ZSTD_getErrorName(_code: usize) -> *const c_char {
    NO_COMPRESSION.as_ptr().cast()
}
