//! PVALIDATE (F2 0F 01 FF): set or clear the validated bit of a guest page's RMP entry.
//!
//! AMD64 APM vol. 3, "PVALIDATE": RAX = the page's virtual address, ECX bit 0 = page
//! size (0 = 4 KiB, 1 = 2 MiB), EDX bit 0 = the new validated state. EAX returns 0
//! (success), 1 (FAIL_INPUT) or 6 (FAIL_SIZEMISMATCH); on success rFLAGS.CF = 1 says the
//! validated bit already had the requested value and did not change. Only VMPL0 may
//! execute it (#GP otherwise); a page that is not assigned to the guest raises #NPF.
#![allow(unsafe_code, reason = "the PVALIDATE instruction")]

use crate::platform::{PageSize, PvalidateError, Validation};

/// EAX: success.
pub const PVALIDATE_SUCCESS: u32 = 0;
/// EAX: invalid input (e.g. a 2 MiB operand that is not 2 MiB aligned).
pub const PVALIDATE_FAIL_INPUT: u32 = 1;
/// EAX: the operand's size differs from the RMP entry's.
pub const PVALIDATE_FAIL_SIZEMISMATCH: u32 = 6;

/// The page-size operand (RCX) of PVALIDATE and RMPADJUST.
pub const fn page_size_operand(size: PageSize) -> u64 {
    match size {
        PageSize::Size4K => 0,
        PageSize::Size2M => 1,
    }
}

/// The operands (RAX, RCX, RDX) of PVALIDATE on the page mapped at `va`.
pub const fn pvalidate_operands(va: u64, size: PageSize, validate: bool) -> (u64, u64, u64) {
    (va, page_size_operand(size), validate as u64)
}

/// Decodes PVALIDATE's result: EAX and rFLAGS.CF.
pub fn decode_pvalidate(eax: u32, cf: bool) -> Result<Validation, PvalidateError> {
    match eax {
        PVALIDATE_SUCCESS if cf => Ok(Validation::Unchanged),
        PVALIDATE_SUCCESS => Ok(Validation::Changed),
        PVALIDATE_FAIL_INPUT => Err(PvalidateError::FailInput),
        PVALIDATE_FAIL_SIZEMISMATCH => Err(PvalidateError::FailSizeMismatch),
        // The APM defines no other code; treat one as bad input rather than success.
        _ => Err(PvalidateError::FailInput),
    }
}

/// Executes PVALIDATE on the page mapped at `va`.
///
/// # Safety
///
/// `va` must map, with the C-bit set, the guest page the caller means, aligned to
/// `size`. Rescinding validation of a page the SVSM still uses makes every later access
/// to it raise #VC; validating a page whose contents the caller then trusts is only
/// sound if the page was just assigned to this guest.
pub unsafe fn pvalidate(
    va: u64,
    size: PageSize,
    validate: bool,
) -> Result<Validation, PvalidateError> {
    let (rax, rcx, rdx) = pvalidate_operands(va, size, validate);
    let rax_out: u64;
    let cf: u8;
    // SAFETY: PVALIDATE (APM vol. 3, "PVALIDATE"; vol. 2, "Page Validation")
    // reads RAX/RCX/RDX, writes EAX and rFLAGS and changes only the RMP entry of the page
    // at `va`, which the caller vouched for. No memory is read or written by the
    // instruction itself; the stack is untouched.
    unsafe {
        core::arch::asm!(
            ".byte 0xf2, 0x0f, 0x01, 0xff",
            "setc {cf}",
            cf = out(reg_byte) cf,
            inout("rax") rax => rax_out,
            in("rcx") rcx,
            in("rdx") rdx,
            options(nostack),
        );
    }
    decode_pvalidate(rax_out as u32, cf != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_follow_the_apm() {
        assert_eq!(
            pvalidate_operands(0xffff_8000_0020_0000, PageSize::Size2M, true),
            (0xffff_8000_0020_0000, 1, 1)
        );
        assert_eq!(
            pvalidate_operands(0x1000, PageSize::Size4K, false),
            (0x1000, 0, 0)
        );
    }

    #[test]
    fn results_follow_the_apm() {
        assert_eq!(decode_pvalidate(0, false), Ok(Validation::Changed));
        assert_eq!(decode_pvalidate(0, true), Ok(Validation::Unchanged));
        assert_eq!(decode_pvalidate(1, false), Err(PvalidateError::FailInput));
        assert_eq!(
            decode_pvalidate(6, false),
            Err(PvalidateError::FailSizeMismatch)
        );
        // Codes the APM does not define are failures, never success.
        for eax in [2, 3, 5, 7, 0xffff_ffff] {
            assert!(decode_pvalidate(eax, false).is_err(), "{eax}");
        }
        // The codes agree with the platform's error type.
        assert_eq!(PvalidateError::FailInput.code(), Some(PVALIDATE_FAIL_INPUT));
        assert_eq!(
            PvalidateError::FailSizeMismatch.code(),
            Some(PVALIDATE_FAIL_SIZEMISMATCH)
        );
    }
}
