//! Hardware random numbers: `RDSEED` and `RDRAND`.
//!
//! Both instructions may transiently fail (CF = 0); callers retry a bounded number of
//! times and treat persistent failure as an error, never substituting weaker bytes.
#![allow(unsafe_code, reason = "RDRAND/RDSEED instructions")]

use core::arch::x86_64::__cpuid_count;
use core::sync::atomic::{AtomicU8, Ordering};

/// How often a transient failure is retried before giving up (Intel's DRNG guide
/// recommends 10 retries for RDRAND; RDSEED needs more under load).
const RETRIES: usize = 128;

/// Which random instructions this CPU has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// CPUID.1:ECX[30].
    pub rdrand: bool,
    /// CPUID.7.0:EBX[18].
    pub rdseed: bool,
}

/// CPUID answers, cached: bit 0 set once known, bit 1 RDRAND, bit 2 RDSEED (under SNP
/// every CPUID costs a #VC round trip).
static SUPPORT: AtomicU8 = AtomicU8::new(0);

/// Which random instructions exist (asks CPUID once).
pub fn support() -> Support {
    let mut bits = SUPPORT.load(Ordering::Relaxed);
    if bits == 0 {
        let s = query_support();
        bits = 1 | (u8::from(s.rdrand) << 1) | (u8::from(s.rdseed) << 2);
        SUPPORT.store(bits, Ordering::Relaxed);
    }
    Support {
        rdrand: bits & 2 != 0,
        rdseed: bits & 4 != 0,
    }
}

fn query_support() -> Support {
    let leaf1 = __cpuid_count(1, 0);
    let leaf7 = __cpuid_count(7, 0);
    Support {
        rdrand: leaf1.ecx & (1 << 30) != 0,
        rdseed: leaf7.ebx & (1 << 18) != 0,
    }
}

#[target_feature(enable = "rdrand")]
fn rdrand_step(out: &mut u64) -> bool {
    // RDRAND (Intel SDM vol. 2B "RDRAND") writes a register and CF.
    core::arch::x86_64::_rdrand64_step(out) == 1
}

#[target_feature(enable = "rdseed")]
fn rdseed_step(out: &mut u64) -> bool {
    // RDSEED (Intel SDM vol. 2B "RDSEED") writes a register and CF.
    core::arch::x86_64::_rdseed64_step(out) == 1
}

/// 64 random bits from RDRAND, or `None` if the CPU lacks it or it keeps failing.
pub fn rdrand64() -> Option<u64> {
    if !support().rdrand {
        return None;
    }
    let mut value = 0;
    for _ in 0..RETRIES {
        // SAFETY: `support()` reported RDRAND, so the target feature is present.
        if unsafe { rdrand_step(&mut value) } {
            return Some(value);
        }
    }
    None
}

/// 64 random bits from RDSEED, or `None` if the CPU lacks it or it keeps failing.
pub fn rdseed64() -> Option<u64> {
    if !support().rdseed {
        return None;
    }
    let mut value = 0;
    for _ in 0..RETRIES {
        // SAFETY: `support()` reported RDSEED, so the target feature is present.
        if unsafe { rdseed_step(&mut value) } {
            return Some(value);
        }
        core::hint::spin_loop();
    }
    None
}

/// 64 bits of seed-grade randomness: RDSEED when the CPU has it, else RDRAND.
pub fn seed64() -> Option<u64> {
    if support().rdseed {
        rdseed64()
    } else {
        rdrand64()
    }
}
