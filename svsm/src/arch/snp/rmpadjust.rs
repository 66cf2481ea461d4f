//! RMPADJUST (F3 0F 01 FE): set a less privileged VMPL's permissions on a page.
//!
//! AMD64 APM vol. 3, "RMPADJUST", and vol. 2 "Virtual Machine Privilege
//! Levels": RAX = the page's virtual address, RCX bit 0 = page size (0 = 4 KiB,
//! 1 = 2 MiB), RDX = attributes: bits 7:0 the target VMPL, bit 8 read, bit 9 write,
//! bit 10 user-mode execute, bit 11 supervisor-mode execute, bit 16 VMSA. EAX returns 0
//! (success), 1 (FAIL_INPUT), 2 (FAIL_PERMISSION: the target is not less privileged
//! than the caller, or the caller tried to grant what it does not hold) or 6
//! (FAIL_SIZEMISMATCH). A page that is not validated raises #VC; one that is not
//! assigned raises #NPF.
#![allow(unsafe_code, reason = "the RMPADJUST instruction")]

use crate::platform::{PageSize, RmpPermissions, RmpadjustError, Vmpl};

use super::pvalidate::page_size_operand;

/// EAX: success.
pub const RMPADJUST_SUCCESS: u32 = 0;
/// EAX: invalid input.
pub const RMPADJUST_FAIL_INPUT: u32 = 1;
/// EAX: the caller lacks the privilege for this change.
pub const RMPADJUST_FAIL_PERMISSION: u32 = 2;
/// EAX: the operand's size differs from the RMP entry's.
pub const RMPADJUST_FAIL_SIZEMISMATCH: u32 = 6;
/// The page is a VMSA in use by a running vCPU (FAIL_INUSE).
pub const RMPADJUST_FAIL_INUSE: u32 = 3;

/// RDX bit: read permission.
pub const RMPADJUST_READ: u64 = 1 << 8;
/// RDX bit: write permission.
pub const RMPADJUST_WRITE: u64 = 1 << 9;
/// RDX bit: user-mode execute permission.
pub const RMPADJUST_USER_EXEC: u64 = 1 << 10;
/// RDX bit: supervisor-mode execute permission.
pub const RMPADJUST_SUPERVISOR_EXEC: u64 = 1 << 11;
/// RDX bit: the page is a VMSA.
pub const RMPADJUST_VMSA: u64 = 1 << 16;

/// The attribute operand (RDX) of RMPADJUST.
pub fn rmpadjust_attributes(target: Vmpl, perms: RmpPermissions, vmsa: bool) -> u64 {
    let mut rdx = u64::from(target.level());
    for (flag, bit) in [
        (RmpPermissions::READ, RMPADJUST_READ),
        (RmpPermissions::WRITE, RMPADJUST_WRITE),
        (RmpPermissions::USER_EXEC, RMPADJUST_USER_EXEC),
        (RmpPermissions::SUPERVISOR_EXEC, RMPADJUST_SUPERVISOR_EXEC),
    ] {
        if perms.contains(flag) {
            rdx |= bit;
        }
    }
    if vmsa {
        rdx |= RMPADJUST_VMSA;
    }
    rdx
}

/// The operands (RAX, RCX, RDX) of RMPADJUST on the page mapped at `va`.
pub fn rmpadjust_operands(
    va: u64,
    size: PageSize,
    target: Vmpl,
    perms: RmpPermissions,
    vmsa: bool,
) -> (u64, u64, u64) {
    (
        va,
        page_size_operand(size),
        rmpadjust_attributes(target, perms, vmsa),
    )
}

/// Decodes RMPADJUST's EAX.
pub fn decode_rmpadjust(eax: u32) -> Result<(), RmpadjustError> {
    match eax {
        RMPADJUST_SUCCESS => Ok(()),
        RMPADJUST_FAIL_INPUT => Err(RmpadjustError::FailInput),
        RMPADJUST_FAIL_PERMISSION => Err(RmpadjustError::FailPermission),
        RMPADJUST_FAIL_INUSE => Err(RmpadjustError::FailInUse),
        RMPADJUST_FAIL_SIZEMISMATCH => Err(RmpadjustError::FailSizeMismatch),
        _ => Err(RmpadjustError::FailInput),
    }
}

/// Executes RMPADJUST on the page mapped at `va`.
///
/// # Safety
///
/// `va` must map, with the C-bit set, the validated guest page the caller means,
/// aligned to `size`. Granting a lower VMPL access to SVSM memory, or setting the VMSA
/// bit on a page the SVSM uses as ordinary memory, breaks the SVSM's isolation: the
/// caller decides which pages may be handed out.
pub unsafe fn rmpadjust(
    va: u64,
    size: PageSize,
    target: Vmpl,
    perms: RmpPermissions,
    vmsa: bool,
) -> Result<(), RmpadjustError> {
    let (rax, rcx, rdx) = rmpadjust_operands(va, size, target, perms, vmsa);
    let rax_out: u64;
    // SAFETY: RMPADJUST (APM vol. 3, "RMPADJUST"; vol. 2, "Virtual Machine Privilege Levels") reads RAX/RCX/RDX,
    // writes EAX and rFLAGS and changes only the RMP entry of the page at `va`, which the
    // caller vouched for. It touches no memory and no stack.
    unsafe {
        core::arch::asm!(
            ".byte 0xf3, 0x0f, 0x01, 0xfe",
            inout("rax") rax => rax_out,
            in("rcx") rcx,
            in("rdx") rdx,
            options(nostack),
        );
    }
    decode_rmpadjust(rax_out as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmpl(level: u8) -> Vmpl {
        Vmpl::new(level).unwrap()
    }

    #[test]
    fn attribute_bits_follow_the_apm() {
        // Target VMPL in bits 7:0, R 8, W 9, UX 10, SX 11, VMSA 16.
        assert_eq!(
            rmpadjust_attributes(vmpl(2), RmpPermissions::RWX, false),
            0x0F02
        );
        assert_eq!(
            rmpadjust_attributes(vmpl(1), RmpPermissions::empty(), true),
            0x1_0001
        );
        assert_eq!(
            rmpadjust_attributes(vmpl(3), RmpPermissions::READ, false),
            0x103
        );
        assert_eq!(
            rmpadjust_attributes(vmpl(2), RmpPermissions::WRITE, false),
            0x202
        );
        assert_eq!(
            rmpadjust_attributes(vmpl(2), RmpPermissions::USER_EXEC, false),
            0x402
        );
        assert_eq!(
            rmpadjust_attributes(vmpl(2), RmpPermissions::SUPERVISOR_EXEC, false),
            0x802
        );
        assert_eq!(
            rmpadjust_operands(
                0x20_0000,
                PageSize::Size2M,
                vmpl(2),
                RmpPermissions::RWX,
                false
            ),
            (0x20_0000, 1, 0xF02)
        );
    }

    #[test]
    fn results_follow_the_apm() {
        assert_eq!(decode_rmpadjust(0), Ok(()));
        assert_eq!(decode_rmpadjust(1), Err(RmpadjustError::FailInput));
        assert_eq!(decode_rmpadjust(2), Err(RmpadjustError::FailPermission));
        assert_eq!(decode_rmpadjust(6), Err(RmpadjustError::FailSizeMismatch));
        // Audit finding: 3 (FAIL_INUSE, a running VMSA) was decoded as FAIL_INPUT.
        assert_eq!(decode_rmpadjust(3), Err(RmpadjustError::FailInUse));
        assert_eq!(decode_rmpadjust(4), Err(RmpadjustError::FailInput));
        for e in [
            RmpadjustError::FailInput,
            RmpadjustError::FailPermission,
            RmpadjustError::FailInUse,
            RmpadjustError::FailSizeMismatch,
        ] {
            assert_eq!(decode_rmpadjust(e.code().unwrap()), Err(e));
        }
    }
}
