//! RDMSR/WRMSR of the two SEV MSRs: the GHCB MSR (0xC0010130) and SEV_STATUS
//! (0xC0010131).
//!
//! AMD64 APM vol. 2 "SEV_STATUS MSR" and the GHCB specification (56421),
//! "GHCB MSR". In an SEV-ES/SNP guest these two MSRs are accessed directly (no #VC);
//! every other MSR access is intercepted and goes through the GHCB.
#![allow(unsafe_code, reason = "RDMSR/WRMSR of the SEV MSRs")]

use svsm_protocol::ghcb::{MSR_GHCB, MSR_SEV_STATUS};

/// Reads an MSR.
///
/// # Safety
///
/// `msr` must exist on this CPU (otherwise #GP) and be one the caller may read.
unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDMSR (APM vol. 3, "RDMSR") reads ECX and writes EDX:EAX; no memory.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
///
/// `msr` must exist and the value be one the CPU accepts (otherwise #GP).
unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: WRMSR (APM vol. 3, "WRMSR") reads ECX and EDX:EAX; no memory.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32,
            in("edx") (value >> 32) as u32, options(nomem, nostack, preserves_flags));
    }
}

/// Reads SEV_STATUS.
///
/// # Safety
///
/// Only on an AMD CPU with SEV (CPUID 0x8000001F EAX bit 1): elsewhere the MSR does
/// not exist and RDMSR raises #GP.
pub unsafe fn read_sev_status() -> u64 {
    // SAFETY: the caller guarantees the MSR exists (APM vol. 2, "SEV_STATUS MSR").
    unsafe { rdmsr(MSR_SEV_STATUS) }
}

/// Reads the GHCB MSR.
///
/// # Safety
///
/// Only in an SEV-ES or SEV-SNP guest (GHCB spec, "GHCB MSR").
pub unsafe fn read_ghcb_msr() -> u64 {
    // SAFETY: the caller guarantees an SEV-ES/SNP guest, where the MSR exists.
    unsafe { rdmsr(MSR_GHCB) }
}

/// Writes the GHCB MSR.
///
/// # Safety
///
/// Only in an SEV-ES or SEV-SNP guest. The value is what the next VMGEXIT hands the
/// hypervisor: a GHCB MSR protocol request, or the GPA of a page the caller made shared.
pub unsafe fn write_ghcb_msr(value: u64) {
    // SAFETY: the caller guarantees an SEV-ES/SNP guest (GHCB spec, "GHCB MSR").
    unsafe { wrmsr(MSR_GHCB, value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_numbers_follow_the_specs() {
        assert_eq!(MSR_GHCB, 0xC001_0130);
        assert_eq!(MSR_SEV_STATUS, 0xC001_0131);
    }
}
