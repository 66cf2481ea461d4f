//! The SNP secrets page, as the PSP writes it and as the SVSM hands it to the guest.
//!
//! Layout from the SEV-SNP firmware ABI (56860, table "Secrets Page Format", version 3)
//! with the SVSM fields at 0x140..0x160 defined by the SVSM spec (58019, "SVSM
//! Discovery"); it matches Linux's `struct snp_secrets_page` and edk2's
//! `SVSM_INFORMATION`. The SVSM gives the guest a copy with VMPCK0..VMPCK(guest_vmpl-1)
//! zeroed and the `svsm_*` fields filled in; [`SecretsPage::guest_copy`] does exactly
//! that and nothing else.

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Field, ParseError};

/// Size of the secrets page.
pub const SECRETS_PAGE_SIZE: usize = 4096;

/// The OS area of the secrets page (guest-owned scratch, 96 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SecretsOsArea {
    /// Message sequence number for VMPCK0.
    pub msg_seqno_0: U32,
    /// Message sequence number for VMPCK1.
    pub msg_seqno_1: U32,
    /// Message sequence number for VMPCK2.
    pub msg_seqno_2: U32,
    /// Message sequence number for VMPCK3.
    pub msg_seqno_3: U32,
    /// GPA of the AP jump table (SEV-ES AP reset).
    pub ap_jump_table_pa: U64,
    /// Reserved.
    pub reserved: [u8; 40],
    /// Free for guest use.
    pub guest_usage: [u8; 32],
}

const _: () = assert!(core::mem::size_of::<SecretsOsArea>() == 96);

/// The SNP secrets page (56860 "Secrets Page Format"; 58019 SVSM fields).
#[derive(Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SecretsPage {
    /// Secrets page format version.
    pub version: U32,
    /// Bit 0: IMI enabled; other bits reserved.
    pub imien: U32,
    /// Family/model/stepping of the CPU.
    pub fms: U32,
    /// Reserved.
    pub reserved1: [u8; 4],
    /// Guest OS visible workarounds.
    pub gosvw: [u8; 16],
    /// VM platform communication key for VMPL0.
    pub vmpck0: [u8; 32],
    /// VMPCK for VMPL1.
    pub vmpck1: [u8; 32],
    /// VMPCK for VMPL2.
    pub vmpck2: [u8; 32],
    /// VMPCK for VMPL3.
    pub vmpck3: [u8; 32],
    /// OS area.
    pub os_area: SecretsOsArea,
    /// VMSA register-protection tweak bitmap.
    pub vmsa_tweak_bitmap: [u8; 64],
    /// GPA of the SVSM's memory.
    pub svsm_base: U64,
    /// Size of the SVSM's memory; 0 means no SVSM.
    pub svsm_size: U64,
    /// GPA of the boot calling area (4 KiB aligned).
    pub svsm_caa: U64,
    /// Highest core protocol version the SVSM supports.
    pub svsm_max_version: U32,
    /// VMPL the guest runs at.
    pub svsm_guest_vmpl: u8,
    /// Reserved.
    pub reserved2: [u8; 3],
    /// TSC scaling factor (Secure TSC).
    pub tsc_factor: U32,
    /// Reserved.
    pub reserved3: [u8; 3740],
}

const _: () = assert!(core::mem::size_of::<SecretsPage>() == SECRETS_PAGE_SIZE);
const _: () = assert!(core::mem::offset_of!(SecretsPage, fms) == 0x008);
const _: () = assert!(core::mem::offset_of!(SecretsPage, gosvw) == 0x010);
const _: () = assert!(core::mem::offset_of!(SecretsPage, vmpck0) == 0x020);
const _: () = assert!(core::mem::offset_of!(SecretsPage, vmpck1) == 0x040);
const _: () = assert!(core::mem::offset_of!(SecretsPage, vmpck2) == 0x060);
const _: () = assert!(core::mem::offset_of!(SecretsPage, vmpck3) == 0x080);
const _: () = assert!(core::mem::offset_of!(SecretsPage, os_area) == 0x0A0);
const _: () = assert!(
    core::mem::offset_of!(SecretsPage, os_area)
        + core::mem::offset_of!(SecretsOsArea, ap_jump_table_pa)
        == 0x0B0
);
const _: () = assert!(core::mem::offset_of!(SecretsPage, vmsa_tweak_bitmap) == 0x100);
const _: () = assert!(core::mem::offset_of!(SecretsPage, svsm_base) == 0x140);
const _: () = assert!(core::mem::offset_of!(SecretsPage, svsm_size) == 0x148);
const _: () = assert!(core::mem::offset_of!(SecretsPage, svsm_caa) == 0x150);
const _: () = assert!(core::mem::offset_of!(SecretsPage, svsm_max_version) == 0x158);
const _: () = assert!(core::mem::offset_of!(SecretsPage, svsm_guest_vmpl) == 0x15C);
const _: () = assert!(core::mem::offset_of!(SecretsPage, tsc_factor) == 0x160);

/// What the SVSM announces in the guest's copy of the secrets page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvsmInfo {
    /// GPA of the SVSM's memory.
    pub base: u64,
    /// Size of the SVSM's memory (non-zero).
    pub size: u64,
    /// GPA of the boot calling area (4 KiB aligned).
    pub caa: u64,
    /// Core protocol version (1).
    pub max_version: u32,
    /// The guest's VMPL (1..=3).
    pub guest_vmpl: u8,
}

impl SecretsPage {
    /// Reads a secrets page from 4096 bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        Self::read_from_prefix(bytes)
            .map(|(p, _)| p)
            .map_err(|_| ParseError::ShortBuffer {
                need: SECRETS_PAGE_SIZE,
                got: bytes.len(),
            })
    }

    /// The VMPCK for `vmpl` (0..=3).
    pub fn vmpck(&self, vmpl: u8) -> Option<&[u8; 32]> {
        match vmpl {
            0 => Some(&self.vmpck0),
            1 => Some(&self.vmpck1),
            2 => Some(&self.vmpck2),
            3 => Some(&self.vmpck3),
            _ => None,
        }
    }

    /// The SVSM fields, or `None` if `svsm_size` is 0 (no SVSM).
    pub fn svsm_info(&self) -> Option<SvsmInfo> {
        if self.svsm_size.get() == 0 {
            return None;
        }
        Some(SvsmInfo {
            base: self.svsm_base.get(),
            size: self.svsm_size.get(),
            caa: self.svsm_caa.get(),
            max_version: self.svsm_max_version.get(),
            guest_vmpl: self.svsm_guest_vmpl,
        })
    }

    /// The copy the SVSM gives a guest at `info.guest_vmpl`: VMPCKs of every more
    /// privileged VMPL zeroed, the SVSM fields filled in. Rejects what Linux would
    /// reject (size 0, guest VMPL 0 or above 3, unaligned calling area).
    pub fn guest_copy(&self, info: &SvsmInfo) -> Result<Self, ParseError> {
        if info.size == 0 {
            return Err(ParseError::SizeMismatch {
                size: 0,
                expected: 1,
            });
        }
        if info.guest_vmpl == 0 || info.guest_vmpl > 3 {
            return Err(ParseError::UnknownValue {
                field: Field::Vmpl,
                value: info.guest_vmpl.into(),
            });
        }
        if info.caa % 0x1000 != 0 {
            return Err(ParseError::Misaligned {
                field: Field::Gpa,
                value: info.caa,
                align: 0x1000,
            });
        }
        let mut copy = self.clone();
        let keys = [
            &mut copy.vmpck0,
            &mut copy.vmpck1,
            &mut copy.vmpck2,
            &mut copy.vmpck3,
        ];
        for key in keys.into_iter().take(info.guest_vmpl.into()) {
            *key = [0; 32];
        }
        copy.svsm_base = U64::new(info.base);
        copy.svsm_size = U64::new(info.size);
        copy.svsm_caa = U64::new(info.caa);
        copy.svsm_max_version = U32::new(info.max_version);
        copy.svsm_guest_vmpl = info.guest_vmpl;
        Ok(copy)
    }
}

impl core::fmt::Debug for SecretsPage {
    // Never print keys.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecretsPage")
            .field("version", &self.version.get())
            .field("svsm_size", &self.svsm_size.get())
            .field("svsm_caa", &self.svsm_caa.get())
            .field("svsm_guest_vmpl", &self.svsm_guest_vmpl)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::format;

    fn psp_page() -> [u8; SECRETS_PAGE_SIZE] {
        let mut b = [0u8; SECRETS_PAGE_SIZE];
        b[0..4].copy_from_slice(&3u32.to_le_bytes());
        for (i, v) in [0x11u8, 0x22, 0x33, 0x44].iter().enumerate() {
            b[0x20 + i * 32..0x40 + i * 32].fill(*v);
        }
        b[0xA0..0xA4].copy_from_slice(&7u32.to_le_bytes());
        b
    }

    #[test]
    fn fields_at_spec_offsets() {
        let mut b = psp_page();
        b[0x140..0x148].copy_from_slice(&0x8000_0000u64.to_le_bytes());
        b[0x148..0x150].copy_from_slice(&0x100_0000u64.to_le_bytes());
        b[0x150..0x158].copy_from_slice(&0x8100_0000u64.to_le_bytes());
        b[0x158..0x15C].copy_from_slice(&1u32.to_le_bytes());
        b[0x15C] = 2;
        b[0x160..0x164].copy_from_slice(&5u32.to_le_bytes());
        let p = SecretsPage::parse(&b).unwrap();
        assert_eq!(p.version.get(), 3);
        assert_eq!(p.vmpck(0), Some(&[0x11; 32]));
        assert_eq!(p.vmpck(3), Some(&[0x44; 32]));
        assert_eq!(p.vmpck(4), None);
        assert_eq!(p.os_area.msg_seqno_0.get(), 7);
        assert_eq!(p.tsc_factor.get(), 5);
        assert_eq!(
            p.svsm_info(),
            Some(SvsmInfo {
                base: 0x8000_0000,
                size: 0x100_0000,
                caa: 0x8100_0000,
                max_version: 1,
                guest_vmpl: 2
            })
        );
        assert_eq!(p.as_bytes(), &b[..]);
    }

    #[test]
    fn no_svsm_when_size_is_zero() {
        let p = SecretsPage::parse(&psp_page()).unwrap();
        assert_eq!(p.svsm_info(), None);
    }

    #[test]
    fn short_page_is_rejected() {
        assert_eq!(
            SecretsPage::parse(&psp_page()[..4095]).err(),
            Some(ParseError::ShortBuffer {
                need: 4096,
                got: 4095
            })
        );
    }

    #[test]
    fn guest_copy_hides_higher_vmpcks() {
        let p = SecretsPage::parse(&psp_page()).unwrap();
        let info = SvsmInfo {
            base: 0x8000_0000,
            size: 0x100_0000,
            caa: 0x8100_0000,
            max_version: 1,
            guest_vmpl: 2,
        };
        let g = p.guest_copy(&info).unwrap();
        assert_eq!(g.vmpck0, [0; 32]);
        assert_eq!(g.vmpck1, [0; 32]);
        assert_eq!(g.vmpck2, [0x33; 32]);
        assert_eq!(g.vmpck3, [0x44; 32]);
        assert_eq!(g.svsm_info(), Some(info));
        let gb = g.as_bytes();
        assert_eq!(&gb[0x148..0x150], &0x100_0000u64.to_le_bytes());
        assert_eq!(gb[0x15C], 2);
        // Untouched elsewhere.
        assert_eq!(g.os_area, p.os_area);
        assert_eq!(g.version, p.version);
        // The debug form never prints keys.
        assert!(!format!("{g:?}").contains("51"));
    }

    #[test]
    fn guest_copy_rejections() {
        let p = SecretsPage::parse(&psp_page()).unwrap();
        let good = SvsmInfo {
            base: 0x8000_0000,
            size: 0x100_0000,
            caa: 0x8100_0000,
            max_version: 1,
            guest_vmpl: 2,
        };
        assert!(p.guest_copy(&SvsmInfo { size: 0, ..good }).is_err());
        assert!(p
            .guest_copy(&SvsmInfo {
                guest_vmpl: 0,
                ..good
            })
            .is_err());
        assert!(p
            .guest_copy(&SvsmInfo {
                guest_vmpl: 4,
                ..good
            })
            .is_err());
        assert_eq!(
            p.guest_copy(&SvsmInfo {
                caa: 0x8100_0010,
                ..good
            })
            .err(),
            Some(ParseError::Misaligned {
                field: Field::Gpa,
                value: 0x8100_0010,
                align: 0x1000
            })
        );
    }
}
