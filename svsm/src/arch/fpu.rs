//! x87 and SSE state initialization (`FNINIT`, `LDMXCSR`).
//!
//! The C engine uses SSE (and could use x87); their control words start in the
//! documented default state, with every floating-point exception masked, rather than in
//! whatever state the loader or the launch VMSA left.
#![allow(unsafe_code, reason = "FPU control instructions")]

/// MXCSR after reset: every SIMD floating-point exception masked, round to nearest.
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// Puts the x87 unit and MXCSR in their default state. CR0/CR4 must already enable SSE
/// (CR4.OSFXSR, CR0.EM clear), or LDMXCSR raises #UD.
pub fn init() {
    let mxcsr = MXCSR_DEFAULT;
    // SAFETY: FNINIT (Intel SDM vol. 2A "FINIT/FNINIT") resets the x87 control, status
    // and tag words; LDMXCSR (vol. 2A "LDMXCSR") loads MXCSR from the 4 bytes of the
    // local `mxcsr`, which is readable for the instruction's duration. Neither touches
    // other memory.
    unsafe {
        core::arch::asm!(
            "fninit",
            "ldmxcsr [{0}]",
            in(reg) &mxcsr,
            options(nostack, preserves_flags)
        );
    }
}

/// Reads MXCSR (`STMXCSR`).
pub fn mxcsr() -> u32 {
    let mut value: u32 = 0;
    // SAFETY: STMXCSR (Intel SDM vol. 2B "STMXCSR") stores MXCSR into the 4 bytes of the
    // local `value`; SSE is enabled before any caller runs.
    unsafe {
        core::arch::asm!(
            "stmxcsr [{0}]",
            in(reg) &mut value,
            options(nostack, preserves_flags)
        );
    }
    value
}
