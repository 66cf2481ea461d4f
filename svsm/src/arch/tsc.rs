//! The time-stamp counter (`RDTSC`).
#![allow(unsafe_code, reason = "RDTSC intrinsic")]

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC (Intel SDM vol. 2B "RDTSC") reads a counter into registers and
    // touches no memory; CR4.TSD is clear, so it is allowed at CPL 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}
