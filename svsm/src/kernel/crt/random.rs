//! Randomness for the C engine: `getrandom`, `syscall(SYS_getrandom)`, `rand`.
//!
//! Every byte comes from RDSEED (RDRAND where the CPU lacks RDSEED). If the CPU stops
//! delivering, the SVSM terminates: handing out weaker bytes would silently weaken every
//! key the TPM makes. `rand()` is RDRAND too, never an LCG: libtpms falls back to it when
//! `RAND_bytes` fails.

use core::ffi::{c_int, c_long, c_uint, c_void};

use svsm::arch::random::{rdrand64, seed64};

use super::errno::ENOSYS;
use super::fail;
use crate::kernel::exit::terminate;

/// Linux's system-call number of getrandom on x86-64.
const SYS_GETRANDOM: c_long = 318;

/// Fills `buf` with seed-grade random bytes, or reports that the CPU did not deliver.
pub fn fill_random(buf: &mut [u8]) -> Result<(), RandomError> {
    for chunk in buf.chunks_mut(8) {
        let value = seed64().ok_or(RandomError)?;
        chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
    }
    Ok(())
}

/// RDSEED/RDRAND did not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomError;

/// Fills `len` bytes at `buf` or terminates the SVSM.
///
/// # Safety
/// `buf` has `len` writable bytes.
unsafe fn fill_or_terminate(buf: *mut c_void, len: usize) -> isize {
    if len == 0 {
        return 0;
    }
    // SAFETY: the caller's contract.
    let bytes = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    if fill_random(bytes).is_err() {
        terminate(format_args!(
            "RDSEED/RDRAND failed: refusing to hand out weak randomness"
        ));
    }
    len as isize
}

#[unsafe(no_mangle)]
unsafe extern "C" fn getrandom(buf: *mut c_void, len: usize, _flags: c_uint) -> isize {
    // SAFETY: C's contract: `buf` has `len` writable bytes.
    unsafe { fill_or_terminate(buf, len) }
}

/// `syscall(2)`: only getrandom exists; every other number fails with ENOSYS.
#[unsafe(no_mangle)]
unsafe extern "C" fn syscall(number: c_long, a1: usize, a2: usize, _a3: usize) -> c_long {
    if number == SYS_GETRANDOM {
        // SAFETY: getrandom's contract: a1 is the buffer, a2 its length.
        return unsafe { fill_or_terminate(a1 as *mut c_void, a2) } as c_long;
    }
    log::debug!("crt: syscall {number} refused");
    c_long::from(fail(ENOSYS))
}

#[unsafe(no_mangle)]
extern "C" fn rand() -> c_int {
    match rdrand64() {
        Some(value) => (value & 0x7fff_ffff) as c_int,
        None => terminate(format_args!("RDRAND failed in rand()")),
    }
}

/// Seeding has no effect: `rand` is not a seeded generator.
#[unsafe(no_mangle)]
extern "C" fn srand(_seed: c_uint) {}
