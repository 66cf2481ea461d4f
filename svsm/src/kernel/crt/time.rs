//! `<time.h>` on the kernel clock (TSC since boot, plus the CMOS time at boot).

use core::ffi::{c_int, c_long, c_uint, c_void};

use super::errno::EINVAL;
use super::fail;
use crate::kernel::time::{civil_from_days, monotonic_nanos, realtime_nanos};

const CLOCK_REALTIME: c_int = 0;
const CLOCKS_PER_SEC: u64 = 1_000_000;

/// `struct timespec`.
#[repr(C)]
struct Timespec {
    seconds: i64,
    nanoseconds: c_long,
}

/// `struct timeval`.
#[repr(C)]
struct Timeval {
    seconds: i64,
    microseconds: c_long,
}

/// `struct tm` (glibc layout).
#[repr(C)]
struct Tm {
    second: c_int,
    minute: c_int,
    hour: c_int,
    day: c_int,
    month: c_int,
    year: c_int,
    weekday: c_int,
    yearday: c_int,
    dst: c_int,
    gmt_offset: c_long,
    zone: *const u8,
}

#[unsafe(no_mangle)]
unsafe extern "C" fn time(out: *mut i64) -> i64 {
    let now = (realtime_nanos() / 1_000_000_000) as i64;
    if !out.is_null() {
        // SAFETY: C's contract: `out` is NULL or writable.
        unsafe { out.write(now) };
    }
    now
}

#[unsafe(no_mangle)]
extern "C" fn clock() -> c_long {
    (monotonic_nanos() / (1_000_000_000 / CLOCKS_PER_SEC)) as c_long
}

#[unsafe(no_mangle)]
unsafe extern "C" fn clock_gettime(clock: c_int, out: *mut c_void) -> c_int {
    if out.is_null() {
        return fail(EINVAL);
    }
    // Every clock but the wall clock counts from boot.
    let nanos = if clock == CLOCK_REALTIME {
        realtime_nanos()
    } else {
        monotonic_nanos()
    };
    // SAFETY: C's contract: `out` is a writable struct timespec.
    unsafe {
        out.cast::<Timespec>().write(Timespec {
            seconds: (nanos / 1_000_000_000) as i64,
            nanoseconds: (nanos % 1_000_000_000) as c_long,
        });
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn gettimeofday(out: *mut c_void, _zone: *mut c_void) -> c_int {
    if !out.is_null() {
        let nanos = realtime_nanos();
        // SAFETY: C's contract: `out` is a writable struct timeval.
        unsafe {
            out.cast::<Timeval>().write(Timeval {
                seconds: (nanos / 1_000_000_000) as i64,
                microseconds: (nanos % 1_000_000_000 / 1000) as c_long,
            });
        }
    }
    0
}

static UTC: &[u8] = b"UTC\0";

#[unsafe(no_mangle)]
unsafe extern "C" fn gmtime_r(time: *const i64, out: *mut c_void) -> *mut c_void {
    if time.is_null() || out.is_null() {
        return super::fail_null(EINVAL);
    }
    // SAFETY: C's contract: `time` is readable.
    let t = unsafe { time.read() };
    let Ok(t) = u64::try_from(t) else {
        // Before 1970: nothing in the SVSM has such a time.
        return super::fail_null(EINVAL);
    };
    let days = t / 86_400;
    let rest = t % 86_400;
    let (year, month, day) = civil_from_days(days);
    let year_start = crate::kernel::time::days_from_civil(year, 1, 1);
    let tm = Tm {
        second: (rest % 60) as c_int,
        minute: (rest / 60 % 60) as c_int,
        hour: (rest / 3600) as c_int,
        day: day as c_int,
        month: month as c_int - 1,
        year: year as c_int - 1900,
        weekday: ((days + 4) % 7) as c_int, // 1970-01-01 was a Thursday
        yearday: (days - year_start) as c_int,
        dst: 0,
        gmt_offset: 0,
        zone: UTC.as_ptr(),
    };
    // SAFETY: C's contract: `out` is a writable struct tm.
    unsafe { out.cast::<Tm>().write(tm) };
    out
}

/// Sleeping would stall the vCPU the guest waits on: return at once.
#[unsafe(no_mangle)]
extern "C" fn sleep(_seconds: c_uint) -> c_uint {
    0
}

#[unsafe(no_mangle)]
extern "C" fn usleep(_microseconds: c_uint) -> c_int {
    0
}

/// `gmtime`'s one static result (one thread of C execution: see the module above).
static GMTIME: spin::Mutex<[u64; 7]> = spin::Mutex::new([0; 7]);

/// `gmtime`: [`gmtime_r`] into a static `struct tm`, as the C library's.
#[unsafe(no_mangle)]
unsafe extern "C" fn gmtime(time: *const i64) -> *mut c_void {
    const _: () = assert!(core::mem::size_of::<Tm>() <= core::mem::size_of::<[u64; 7]>());
    let out = GMTIME.lock().as_mut_ptr().cast::<c_void>();
    // SAFETY: forwarded; `out` is a static buffer large and aligned enough for a Tm.
    unsafe { gmtime_r(time, out) }
}
