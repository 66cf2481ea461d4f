//! Time for the C runtime: the TSC, calibrated against the PIT, and the CMOS clock.
//!
//! `time()` and `CLOCK_REALTIME` are the CMOS wall-clock time read at boot plus TSC time
//! since; the monotonic clocks are TSC time since boot. The engine uses time for its
//! clock (TPMS_CLOCK_INFO) and OpenSSL for DRBG reseed intervals: neither needs more
//! than this.

use core::sync::atomic::{AtomicU64, Ordering};

use svsm::arch::io::{inb, outb};
use svsm::arch::tsc::rdtsc;

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration window: 1/100 s.
const CALIBRATION_DIVISOR: u64 = 100;
/// Assumed TSC rate when the PIT never answers (a VM without one).
const FALLBACK_TSC_HZ: u64 = 2_000_000_000;

static TSC_HZ: AtomicU64 = AtomicU64::new(FALLBACK_TSC_HZ);
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static BOOT_EPOCH_SECONDS: AtomicU64 = AtomicU64::new(0);

/// Measures the TSC rate with PIT channel 2 and reads the wall clock.
pub fn init() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
    match calibrate() {
        Some(hz) => TSC_HZ.store(hz, Ordering::Relaxed),
        None => log::warn!("PIT calibration failed; assuming a {FALLBACK_TSC_HZ} Hz TSC"),
    }
    BOOT_EPOCH_SECONDS.store(read_cmos_epoch(), Ordering::Relaxed);
}

fn calibrate() -> Option<u64> {
    let count = PIT_HZ / CALIBRATION_DIVISOR;
    // Gate channel 2 on, speaker off; channel 2, lobyte/hibyte, mode 0 (terminal count).
    outb(0x61, (inb(0x61) & !0x02) | 0x01);
    outb(0x43, 0xb0);
    outb(0x42, (count & 0xff) as u8);
    outb(0x42, (count >> 8) as u8);
    let start = rdtsc();
    // Bound the wait: about ten seconds of a very fast TSC.
    for _ in 0..100_000_000u64 {
        if inb(0x61) & 0x20 != 0 {
            let elapsed = rdtsc().wrapping_sub(start);
            return (elapsed > 0).then_some(elapsed * CALIBRATION_DIVISOR);
        }
    }
    None
}

/// TSC ticks per second.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Nanoseconds since boot.
pub fn monotonic_nanos() -> u64 {
    let ticks = rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed));
    (u128::from(ticks) * 1_000_000_000 / u128::from(tsc_hz())) as u64
}

/// Microseconds since the TSC read `tsc` (e.g. at kernel entry, before [`init`]).
pub fn micros_since(tsc: u64) -> u64 {
    let ticks = rdtsc().wrapping_sub(tsc);
    (u128::from(ticks) * 1_000_000 / u128::from(tsc_hz())) as u64
}

/// Nanoseconds since the Unix epoch.
pub fn realtime_nanos() -> u64 {
    BOOT_EPOCH_SECONDS.load(Ordering::Relaxed) * 1_000_000_000 + monotonic_nanos()
}

fn cmos(register: u8) -> u8 {
    outb(0x70, register);
    inb(0x71)
}

fn read_cmos_epoch() -> u64 {
    // Wait for the end of an update cycle (bounded).
    for _ in 0..1_000_000 {
        if cmos(0x0a) & 0x80 == 0 {
            break;
        }
    }
    let status_b = cmos(0x0b);
    let bcd = status_b & 0x04 == 0;
    let decode = |v: u8| {
        if bcd {
            u64::from((v >> 4) * 10 + (v & 0x0f))
        } else {
            u64::from(v)
        }
    };
    let second = decode(cmos(0x00));
    let minute = decode(cmos(0x02));
    let hour = decode(cmos(0x04) & 0x7f);
    let day = decode(cmos(0x07));
    let month = decode(cmos(0x08));
    let year = 2000 + decode(cmos(0x09));
    days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
}

/// Days from 1970-01-01 to the given date (proleptic Gregorian calendar).
pub fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// The calendar date of a day count since 1970-01-01: (year, month 1-12, day 1-31).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
