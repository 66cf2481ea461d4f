//! The pthread calls OpenSSL and libtpms make: once, keys, rwlocks, self.
//!
//! There is one thread of C execution (see the module above), so locks are no-ops that
//! succeed. `pthread_once` runs its routine exactly once; keys store one value each.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use super::errno::{EAGAIN_KEYS, EINVAL_KEYS};

/// `PTHREAD_ONCE_INIT` is 0; 1 while the routine runs; 2 once it returned.
const ONCE_RUNNING: i32 = 1;
const ONCE_DONE: i32 = 2;

#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_once(control: *mut c_int, routine: Option<extern "C" fn()>) -> c_int {
    // SAFETY: C's contract: `control` points at a pthread_once_t (an int).
    let state = unsafe { AtomicI32::from_ptr(control) };
    if state
        .compare_exchange(0, ONCE_RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        if let Some(routine) = routine {
            routine();
        }
        state.store(ONCE_DONE, Ordering::Release);
    }
    0
}

/// Runs `pthread_once` twice on one control with a counting routine; the count after.
pub fn once_runs_once() -> usize {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn count() {
        COUNT.fetch_add(1, Ordering::Relaxed);
    }
    let mut control: c_int = 0;
    // SAFETY: `control` is a live, zero-initialized pthread_once_t.
    unsafe {
        pthread_once(&mut control, Some(count));
        pthread_once(&mut control, Some(count));
    }
    COUNT.load(Ordering::Relaxed)
}

const MAX_KEYS: usize = 64;

/// Key slots: `Some(value)` for a created key.
static KEYS: spin::Mutex<[Option<usize>; MAX_KEYS]> = spin::Mutex::new([None; MAX_KEYS]);

#[unsafe(no_mangle)]
unsafe extern "C" fn pthread_key_create(
    key: *mut u32,
    _destructor: Option<extern "C" fn(*mut c_void)>,
) -> c_int {
    let mut keys = KEYS.lock();
    let Some(index) = keys.iter().position(Option::is_none) else {
        return EAGAIN_KEYS;
    };
    keys[index] = Some(0);
    // SAFETY: C's contract: `key` is writable.
    unsafe { key.write(index as u32) };
    0
}

#[unsafe(no_mangle)]
extern "C" fn pthread_key_delete(key: u32) -> c_int {
    match KEYS.lock().get_mut(key as usize) {
        Some(slot @ Some(_)) => {
            *slot = None;
            0
        }
        _ => EINVAL_KEYS,
    }
}

#[unsafe(no_mangle)]
extern "C" fn pthread_getspecific(key: u32) -> *mut c_void {
    match KEYS.lock().get(key as usize) {
        Some(Some(value)) => *value as *mut c_void,
        _ => core::ptr::null_mut(),
    }
}

#[unsafe(no_mangle)]
extern "C" fn pthread_setspecific(key: u32, value: *const c_void) -> c_int {
    match KEYS.lock().get_mut(key as usize) {
        Some(Some(slot)) => {
            *slot = value as usize;
            0
        }
        _ => EINVAL_KEYS,
    }
}

#[unsafe(no_mangle)]
extern "C" fn pthread_self() -> u64 {
    1
}

#[unsafe(no_mangle)]
extern "C" fn pthread_rwlock_init(_lock: *mut c_void, _attr: *const c_void) -> c_int {
    0
}

#[unsafe(no_mangle)]
extern "C" fn pthread_rwlock_destroy(_lock: *mut c_void) -> c_int {
    0
}

#[unsafe(no_mangle)]
extern "C" fn pthread_rwlock_rdlock(_lock: *mut c_void) -> c_int {
    0
}

#[unsafe(no_mangle)]
extern "C" fn pthread_rwlock_wrlock(_lock: *mut c_void) -> c_int {
    0
}

#[unsafe(no_mangle)]
extern "C" fn pthread_rwlock_unlock(_lock: *mut c_void) -> c_int {
    0
}
