//! Sockets, name lookup and dynamic loading: none exist in the SVSM; every call fails.

use core::ffi::{c_char, c_int, c_void};

use super::errno::{EAFNOSUPPORT, EBADF, ENOSYS};
use super::{fail, fail_null};

#[unsafe(no_mangle)]
extern "C" fn socket(_domain: c_int, _kind: c_int, _protocol: c_int) -> c_int {
    fail(EAFNOSUPPORT)
}

macro_rules! refuse_on_descriptor {
    ($($name:ident),* $(,)?) => {$(
        #[unsafe(no_mangle)]
        extern "C" fn $name(_fd: c_int) -> c_int {
            fail(EBADF)
        }
    )*};
}

refuse_on_descriptor!(
    accept,
    bind,
    connect,
    listen,
    shutdown,
    getsockname,
    getsockopt,
    setsockopt,
    recvmsg,
    sendmsg
);

/// `EAI_FAIL`.
const EAI_FAIL: c_int = -4;

#[unsafe(no_mangle)]
extern "C" fn getaddrinfo(
    _node: *const c_char,
    _service: *const c_char,
    _hints: *const c_void,
    _out: *mut *mut c_void,
) -> c_int {
    EAI_FAIL
}

#[unsafe(no_mangle)]
extern "C" fn getnameinfo(_address: *const c_void, _len: u32) -> c_int {
    EAI_FAIL
}

#[unsafe(no_mangle)]
extern "C" fn freeaddrinfo(_list: *mut c_void) {}

static NO_NETWORK: &[u8] = b"no network in the SVSM\0";

#[unsafe(no_mangle)]
extern "C" fn gai_strerror(_code: c_int) -> *const c_char {
    NO_NETWORK.as_ptr().cast()
}

#[unsafe(no_mangle)]
extern "C" fn gethostbyname(_name: *const c_char) -> *mut c_void {
    core::ptr::null_mut()
}

static NO_DLOPEN: &[u8] = b"dynamic loading is not supported in the SVSM\0";

#[unsafe(no_mangle)]
extern "C" fn dlopen(_path: *const c_char, _flags: c_int) -> *mut c_void {
    fail_null(ENOSYS)
}

#[unsafe(no_mangle)]
extern "C" fn dlsym(_handle: *mut c_void, _symbol: *const c_char) -> *mut c_void {
    fail_null(ENOSYS)
}

#[unsafe(no_mangle)]
extern "C" fn dlclose(_handle: *mut c_void) -> c_int {
    fail(ENOSYS)
}

#[unsafe(no_mangle)]
extern "C" fn dlerror() -> *const c_char {
    NO_DLOPEN.as_ptr().cast()
}

/// 0: "the address matches no shared object".
#[unsafe(no_mangle)]
extern "C" fn dladdr(_address: *const c_void, _info: *mut c_void) -> c_int {
    0
}
