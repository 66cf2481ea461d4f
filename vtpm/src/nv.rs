//! The TPM commands start-up provisioning sends itself: properties, random bytes, NV
//! indices under the platform hierarchy, and the hierarchy control that withholds it.
//!
//! Every command is built here from TPM 2.0 Part 3's tables (big-endian, a password
//! session with the empty platform authorization, which the TPM has right after
//! TPM2_Startup(CLEAR)); responses are checked by the caller's `expect_success` and
//! parsed without trusting any length they carry.

use alloc::vec::Vec;

use crate::tpm::{CommandBuilder, ST_NO_SESSIONS, ST_SESSIONS};

/// TPM_RH_PLATFORM.
pub const RH_PLATFORM: u32 = 0x4000_000C;
/// TPM_CC_NV_UndefineSpace.
pub const CC_NV_UNDEFINE_SPACE: u32 = 0x0000_0122;
/// TPM_CC_HierarchyControl.
pub const CC_HIERARCHY_CONTROL: u32 = 0x0000_0121;
/// TPM_CC_NV_DefineSpace.
pub const CC_NV_DEFINE_SPACE: u32 = 0x0000_012A;
/// TPM_CC_NV_Write.
pub const CC_NV_WRITE: u32 = 0x0000_0137;
/// TPM_CC_NV_WriteLock.
pub const CC_NV_WRITE_LOCK: u32 = 0x0000_0138;
/// TPM_CC_GetCapability.
pub const CC_GET_CAPABILITY: u32 = 0x0000_017A;
/// TPM_CC_GetRandom.
pub const CC_GET_RANDOM: u32 = 0x0000_017B;
/// TPM_CAP_TPM_PROPERTIES.
pub const CAP_TPM_PROPERTIES: u32 = 6;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000B;

/// TPM_PT values (TPM 2.0 Part 2, "TPM_PT") start-up reads.
pub mod pt {
    /// The first fixed property.
    pub const FIXED: u32 = 0x100;
    /// TPM_PT_LEVEL.
    pub const LEVEL: u32 = 0x101;
    /// TPM_PT_REVISION (the specification revision times 100).
    pub const REVISION: u32 = 0x102;
    /// TPM_PT_MANUFACTURER.
    pub const MANUFACTURER: u32 = 0x105;
    /// TPM_PT_VENDOR_STRING_1 (..4 follow).
    pub const VENDOR_STRING_1: u32 = 0x106;
    /// TPM_PT_FIRMWARE_VERSION_1.
    pub const FIRMWARE_VERSION_1: u32 = 0x10B;
    /// TPM_PT_NV_INDEX_MAX: the largest NV index data size.
    pub const NV_INDEX_MAX: u32 = 0x117;
    /// TPM_PT_NV_BUFFER_MAX: the largest NV_Write/NV_Read chunk.
    pub const NV_BUFFER_MAX: u32 = 0x12C;
}

/// Whether `rc` is TPM_RC_HANDLE (format one, any handle number): the index is absent.
pub fn is_rc_handle(rc: u32) -> bool {
    rc & 0x0BF == 0x08B
}

/// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, `first`, `count`).
pub fn get_properties(first: u32, count: u32) -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_GET_CAPABILITY)
        .u32(CAP_TPM_PROPERTIES)
        .u32(first)
        .u32(count)
        .build()
}

/// The (property, value) pairs of a TPM2_GetCapability(TPM_PROPERTIES) response.
pub fn parse_properties(response: &[u8]) -> Option<Vec<(u32, u32)>> {
    let be32 = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            response.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    // header (10), moreData (1), capability (4), count (4), then pairs.
    if be32(11)? != CAP_TPM_PROPERTIES {
        return None;
    }
    let count = be32(15)? as usize;
    let mut out = Vec::new();
    for i in 0..count {
        let at = 19 + 8 * i;
        out.push((be32(at)?, be32(at + 4)?));
    }
    Some(out)
}

/// TPM2_GetRandom(`n`).
pub fn get_random(n: u16) -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_GET_RANDOM)
        .u16(n)
        .build()
}

/// The bytes of a TPM2_GetRandom response.
pub fn parse_random(response: &[u8]) -> Option<&[u8]> {
    let n = usize::from(u16::from_be_bytes(response.get(10..12)?.try_into().ok()?));
    response.get(12..12 + n)
}

/// TPM2_NV_UndefineSpace(TPM_RH_PLATFORM, `index`).
pub fn undefine(index: u32) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_NV_UNDEFINE_SPACE)
        .u32(RH_PLATFORM)
        .u32(index)
        .password_auth()
        .build()
}

/// TPM2_NV_DefineSpace(TPM_RH_PLATFORM) of an ordinary index of `size` bytes with
/// `attributes`, an empty authorization value and no policy; names use SHA-256.
pub fn define(index: u32, attributes: u32, size: u16) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_NV_DEFINE_SPACE)
        .u32(RH_PLATFORM)
        .password_auth()
        // auth: empty.
        .u16(0)
        // TPM2B_NV_PUBLIC: nvIndex, nameAlg, attributes, authPolicy (empty), dataSize.
        .u16(14)
        .u32(index)
        .u16(ALG_SHA256)
        .u32(attributes)
        .u16(0)
        .u16(size)
        .build()
}

/// TPM2_NV_Write(TPM_RH_PLATFORM, `index`) of `data` at `offset`.
pub fn write(index: u32, data: &[u8], offset: u16) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_NV_WRITE)
        .u32(RH_PLATFORM)
        .u32(index)
        .password_auth()
        .sized(data)
        .u16(offset)
        .build()
}

/// TPM2_NV_WriteLock(TPM_RH_PLATFORM, `index`).
pub fn write_lock(index: u32) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_NV_WRITE_LOCK)
        .u32(RH_PLATFORM)
        .u32(index)
        .password_auth()
        .build()
}

/// TPM2_HierarchyControl(TPM_RH_PLATFORM, enable = TPM_RH_PLATFORM, state = NO): clears
/// phEnable until the next TPM2_Startup(CLEAR). phEnableNV is left alone.
pub fn disable_platform_hierarchy() -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_HIERARCHY_CONTROL)
        .u32(RH_PLATFORM)
        .password_auth()
        .u32(RH_PLATFORM)
        .bytes(&[0])
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn define_space_has_part3_layout() {
        let c = define(0x01C0_0002, 0x4207_2001, 1234);
        // header, authHandle, auth area (4 + 9), auth (2), TPM2B_NV_PUBLIC (2 + 14).
        assert_eq!(c.len(), 10 + 4 + 13 + 2 + 16);
        assert_eq!(&c[6..10], &CC_NV_DEFINE_SPACE.to_be_bytes());
        assert_eq!(&c[29..31], &14u16.to_be_bytes());
        assert_eq!(&c[31..35], &0x01C0_0002u32.to_be_bytes());
        assert_eq!(&c[37..41], &0x4207_2001u32.to_be_bytes());
        assert_eq!(&c[43..45], &1234u16.to_be_bytes());
    }

    #[test]
    fn rc_handle_is_recognised_for_any_handle_number() {
        assert!(is_rc_handle(0x18B));
        assert!(is_rc_handle(0x28B));
        assert!(!is_rc_handle(0x9A2));
        assert!(!is_rc_handle(0x185));
    }

    #[test]
    fn properties_parse_refuses_short_responses() {
        let mut r = alloc::vec![0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        r.extend_from_slice(&6u32.to_be_bytes());
        r.extend_from_slice(&2u32.to_be_bytes());
        r.extend_from_slice(&0x105u32.to_be_bytes());
        r.extend_from_slice(&0x49424D00u32.to_be_bytes());
        assert_eq!(parse_properties(&r), None);
        r.extend_from_slice(&0x106u32.to_be_bytes());
        r.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(
            parse_properties(&r),
            Some(alloc::vec![(0x105, 0x49424D00), (0x106, 1)])
        );
    }
}
