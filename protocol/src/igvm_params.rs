//! The IGVM parameter block: how `svsm-igvm` tells the SVSM kernel where things are.
//!
//! The IGVM file places three kinds of pages inside the SVSM's memory range:
//! - the parameter block ([`IgvmParamBlock`]): one measured page written by the builder. It
//!   names the SVSM's own range, its secrets and CPUID pages, where the host-filled areas
//!   are, and what the guest firmware expects (from the firmware's SEV metadata). Because it
//!   is measured, the kernel may trust it;
//! - host-filled parameter areas (unmeasured, so the kernel validates everything in them):
//!   the parameter page ([`IgvmParamPage`]: vCPU count, environment flags), the memory map
//!   (an array of [`MemoryMapEntry`], the IGVM format, ended by the first all-zero entry or
//!   the area's end) and the ACPI MADT (the vCPUs' APIC IDs);
//! - the secrets and CPUID pages that the PSP fills at launch.
//!
//! The launch VMSA enters the kernel in 32-bit protected mode with `EBX` = the parameter
//! block's GPA (below 4 GiB), the register in which a PVH loader passes its start info, and
//! `EAX` = [`IGVM_ENTRY_MAGIC`]. The kernel tells the two apart by the first bytes of the
//! structure `EBX` points at: [`PARAM_BLOCK_MAGIC`] here, the PVH magic there.
//!
//! Layouts are little-endian `zerocopy` types with compile-time size and offset checks. The
//! memory map entry is the IGVM specification's `IGVM_VHS_MEMORY_MAP_ENTRY`; the MADT is the
//! ACPI specification's (6.5, section 5.2.12).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `EAX` at the kernel's entry when it was launched from an IGVM file: "IGVM" in ASCII,
/// little-endian. Any other value means another boot path (PVH, multiboot).
pub const IGVM_ENTRY_MAGIC: u32 = u32::from_le_bytes(*b"IGVM");

/// [`IgvmParamBlock::magic`]: "SVSMPARM" in ASCII, little-endian.
pub const PARAM_BLOCK_MAGIC: u64 = u64::from_le_bytes(*b"SVSMPARM");

/// [`IgvmParamBlock::version`] of this layout.
pub const PARAM_BLOCK_VERSION: u32 = 2;

/// How many firmware `SNP_SEC_MEM` ranges the block can carry.
pub const FW_SEC_MEM_MAX: usize = 8;

/// [`IgvmParamBlock::flags`]: a guest firmware image is part of the IGVM file.
pub const PARAM_FLAG_FIRMWARE: u32 = 1 << 0;

/// The VMPL the guest (firmware, then the OS) runs at, by convention.
pub const DEFAULT_GUEST_VMPL: u32 = 2;

/// A range of guest-physical memory.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MemoryRange {
    /// First GPA of the range (4 KiB aligned).
    pub base: u64,
    /// Size in bytes (a multiple of 4 KiB).
    pub size: u64,
}

impl MemoryRange {
    /// One past the last GPA, or `None` when the range wraps around.
    pub fn end(&self) -> Option<u64> {
        self.base.checked_add(self.size)
    }
}

/// What the guest firmware expects, taken from its SEV metadata (OVMF's
/// `OvmfPkg/ResetVector` metadata sections: SNP_SEC_MEM, SECRETS, CPUID, SVSM_CAA).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FirmwareInfo {
    /// Where the firmware image lies (ends at 4 GiB for OVMF).
    pub image: MemoryRange,
    /// Where the firmware expects its copy of the secrets page.
    pub secrets_gpa: u64,
    /// Where the firmware expects its copy of the CPUID page.
    pub cpuid_gpa: u64,
    /// Where the firmware expects its (zeroed) SVSM calling area.
    pub caa_gpa: u64,
    /// Number of valid entries in `sec_mem`.
    pub sec_mem_count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Ranges the SVSM validates and hands to the guest VMPL before the firmware runs.
    pub sec_mem: [MemoryRange; FW_SEC_MEM_MAX],
}

/// The measured parameter block the builder writes into the SVSM's range.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IgvmParamBlock {
    /// [`PARAM_BLOCK_MAGIC`].
    pub magic: u64,
    /// [`PARAM_BLOCK_VERSION`].
    pub version: u32,
    /// `size_of::<IgvmParamBlock>()`.
    pub size: u32,
    /// The SVSM's whole memory range: the guest's memory map marks it reserved.
    pub svsm: MemoryRange,
    /// The part of that range the kernel's ELF segments occupy.
    pub kernel: MemoryRange,
    /// The SVSM's secrets page (filled by the PSP).
    pub secrets_gpa: u64,
    /// The SVSM's CPUID page (filled by the PSP, checked against the host's values).
    pub cpuid_gpa: u64,
    /// The host-filled [`IgvmParamPage`].
    pub param_page_gpa: u64,
    /// The host-filled memory map area (an array of [`MemoryMapEntry`]).
    pub memory_map: MemoryRange,
    /// The host-filled ACPI MADT area.
    pub madt: MemoryRange,
    /// First GPA after everything the IGVM file places in the SVSM range; the kernel may
    /// use `[free_base, svsm.base + svsm.size)` after validating it.
    pub free_base: u64,
    /// The VMPL the guest runs at.
    pub guest_vmpl: u32,
    /// `PARAM_FLAG_*` bits.
    pub flags: u32,
    /// The firmware's expectations; meaningful when [`PARAM_FLAG_FIRMWARE`] is set.
    pub firmware: FirmwareInfo,
    /// Where the firmware reads the guest's memory map: an array of [`MemoryMapEntry`]
    /// ended by an entry with no pages (OVMF's IGVM parameter area, edk2-stable202511 and
    /// later). It lies inside one of the firmware's `sec_mem` ranges, which the SVSM
    /// validates and zeroes; the SVSM writes the guest's map there, with its own range
    /// reserved, before the firmware runs. Size 0: the firmware takes its map from the
    /// host, which lists the SVSM's range as RAM.
    pub firmware_memory_map: MemoryRange,
}

/// The host-filled parameter page (IGVM `VP_COUNT` at byte 0, `ENVIRONMENT_INFO` at byte 4).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IgvmParamPage {
    /// Number of vCPUs the host created.
    pub vcpu_count: u32,
    /// IGVM environment information; bit 0: memory starts out shared (not assigned).
    pub environment: u32,
}

/// Byte offset of [`IgvmParamPage::vcpu_count`] (the IGVM `VP_COUNT` parameter).
pub const PARAM_PAGE_VCPU_COUNT_OFFSET: u32 = 0;
/// Byte offset of [`IgvmParamPage::environment`] (the IGVM `ENVIRONMENT_INFO` parameter).
pub const PARAM_PAGE_ENVIRONMENT_OFFSET: u32 = 4;
/// [`IgvmParamPage::environment`] bit: memory not in the IGVM file starts out shared.
pub const ENVIRONMENT_MEMORY_IS_SHARED: u32 = 1 << 0;

/// One memory map entry: the IGVM specification's `IGVM_VHS_MEMORY_MAP_ENTRY`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MemoryMapEntry {
    /// First 4 KiB page number.
    pub starting_gpa_page_number: u64,
    /// Number of 4 KiB pages.
    pub number_of_pages: u64,
    /// One of the `MEMORY_MAP_TYPE_*` values.
    pub entry_type: u16,
    /// Flags (IGVM: none defined), zero.
    pub flags: u16,
    /// Reserved, zero.
    pub reserved: u32,
}

/// [`MemoryMapEntry::entry_type`]: ordinary RAM.
pub const MEMORY_MAP_TYPE_MEMORY: u16 = 0;
/// [`MemoryMapEntry::entry_type`]: reserved by the platform (or, in the guest's map, the SVSM).
pub const MEMORY_MAP_TYPE_PLATFORM_RESERVED: u16 = 1;
/// [`MemoryMapEntry::entry_type`]: persistent memory.
pub const MEMORY_MAP_TYPE_PERSISTENT: u16 = 2;
/// [`MemoryMapEntry::entry_type`]: memory a VTL2 may protect.
pub const MEMORY_MAP_TYPE_VTL2_PROTECTABLE: u16 = 3;

/// ACPI MADT: size of the common table header plus the local APIC address and flags.
pub const MADT_HEADER_SIZE: usize = 44;
/// ACPI MADT signature.
pub const MADT_SIGNATURE: [u8; 4] = *b"APIC";
/// MADT entry type: processor local APIC (8 bytes: uid u8 @2, APIC ID u8 @3, flags u32 @4).
pub const MADT_TYPE_LOCAL_APIC: u8 = 0;
/// MADT entry type: processor local x2APIC (16 bytes: x2APIC ID u32 @4, flags u32 @8).
pub const MADT_TYPE_LOCAL_X2APIC: u8 = 9;
/// MADT local (x2)APIC flags: the processor is enabled.
pub const MADT_APIC_ENABLED: u32 = 1 << 0;

const _: () = {
    assert!(core::mem::size_of::<MemoryRange>() == 0x10);
    assert!(core::mem::size_of::<FirmwareInfo>() == 0xB0);
    assert!(core::mem::offset_of!(FirmwareInfo, secrets_gpa) == 0x10);
    assert!(core::mem::offset_of!(FirmwareInfo, caa_gpa) == 0x20);
    assert!(core::mem::offset_of!(FirmwareInfo, sec_mem_count) == 0x28);
    assert!(core::mem::offset_of!(FirmwareInfo, sec_mem) == 0x30);
    assert!(core::mem::size_of::<IgvmParamBlock>() == 0x138);
    assert!(core::mem::offset_of!(IgvmParamBlock, svsm) == 0x10);
    assert!(core::mem::offset_of!(IgvmParamBlock, kernel) == 0x20);
    assert!(core::mem::offset_of!(IgvmParamBlock, secrets_gpa) == 0x30);
    assert!(core::mem::offset_of!(IgvmParamBlock, cpuid_gpa) == 0x38);
    assert!(core::mem::offset_of!(IgvmParamBlock, param_page_gpa) == 0x40);
    assert!(core::mem::offset_of!(IgvmParamBlock, memory_map) == 0x48);
    assert!(core::mem::offset_of!(IgvmParamBlock, madt) == 0x58);
    assert!(core::mem::offset_of!(IgvmParamBlock, free_base) == 0x68);
    assert!(core::mem::offset_of!(IgvmParamBlock, guest_vmpl) == 0x70);
    assert!(core::mem::offset_of!(IgvmParamBlock, flags) == 0x74);
    assert!(core::mem::offset_of!(IgvmParamBlock, firmware) == 0x78);
    assert!(core::mem::offset_of!(IgvmParamBlock, firmware_memory_map) == 0x128);
    assert!(core::mem::size_of::<IgvmParamBlock>() <= 4096);
    assert!(core::mem::size_of::<IgvmParamPage>() == 8);
    assert!(core::mem::offset_of!(IgvmParamPage, environment) == 4);
    assert!(core::mem::size_of::<MemoryMapEntry>() == 24);
    assert!(core::mem::offset_of!(MemoryMapEntry, number_of_pages) == 8);
    assert!(core::mem::offset_of!(MemoryMapEntry, entry_type) == 16);
    assert!(core::mem::offset_of!(MemoryMapEntry, flags) == 18);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_values_spell_their_names() {
        assert_eq!(IGVM_ENTRY_MAGIC.to_le_bytes(), *b"IGVM");
        assert_eq!(PARAM_BLOCK_MAGIC.to_le_bytes(), *b"SVSMPARM");
    }

    #[test]
    fn block_round_trips_through_bytes() {
        let block = IgvmParamBlock {
            magic: PARAM_BLOCK_MAGIC,
            version: PARAM_BLOCK_VERSION,
            size: core::mem::size_of::<IgvmParamBlock>() as u32,
            secrets_gpa: 0x1234_5000,
            ..Default::default()
        };
        let bytes = block.as_bytes();
        assert_eq!(&bytes[0..8], b"SVSMPARM");
        assert_eq!(&bytes[0x30..0x38], &0x1234_5000u64.to_le_bytes());
        let back = IgvmParamBlock::read_from_bytes(bytes).unwrap();
        assert_eq!(back, block);
    }

    #[test]
    fn range_end_detects_wrap() {
        assert_eq!(
            MemoryRange {
                base: 0x1000,
                size: 0x1000
            }
            .end(),
            Some(0x2000)
        );
        assert_eq!(
            MemoryRange {
                base: u64::MAX,
                size: 2
            }
            .end(),
            None
        );
    }
}
