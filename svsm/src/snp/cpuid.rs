//! The SNP CPUID page: the CPUID values the PSP checked at launch, and the C-bit
//! position they give.
//!
//! Layout from the SEV-SNP firmware ABI (56860, "CPUID Page" / `SNP_CPUID_FUNCTION`),
//! as Linux reads it (`struct snp_cpuid_table` in `arch/x86/include/asm/sev.h`): a
//! count (u32 at 0), 12 reserved bytes, then up to 64 entries of 48 bytes: `eax_in`,
//! `ecx_in` (u32), `xcr0_in`, `xss_in` (u64), `eax`, `ebx`, `ecx`, `edx` (u32) and 8
//! reserved bytes. The parsed page is a fixed array (no heap: the #VC handler needs it
//! before the kernel has one). Lookup matches `eax_in`, and `ecx_in` only for the leaves whose
//! output depends on ECX (Linux `cpuid_function_is_indexed`). A leaf the page lacks
//! reads as zeros, as Linux treats it. The page is parsed once into SVSM memory.

use svsm_protocol::ParseError;

use super::SnpError;

/// Size of the CPUID page.
pub const CPUID_PAGE_SIZE: usize = 4096;
/// Most entries a CPUID page holds (`SNP_CPUID_COUNT_MAX`).
pub const CPUID_COUNT_MAX: usize = 64;
/// Offset of the first entry.
pub const CPUID_ENTRIES_OFFSET: usize = 16;
/// Size of one entry.
pub const CPUID_ENTRY_SIZE: usize = 48;
/// Offset of the EBX output within an entry.
pub const CPUID_EBX_OUTPUT_OFFSET: usize = 28;
/// The leaf that reports the memory encryption features (EBX[5:0] = C-bit position).
pub const LEAF_MEMORY_ENCRYPTION: u32 = 0x8000_001F;

/// One CPUID page entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidEntry {
    /// Input EAX (the leaf).
    pub eax_in: u32,
    /// Input ECX (the sub-leaf).
    pub ecx_in: u32,
    /// Input XCR0 (leaf 0xD).
    pub xcr0_in: u64,
    /// Input XSS (leaf 0xD).
    pub xss_in: u64,
    /// Output EAX.
    pub eax: u32,
    /// Output EBX.
    pub ebx: u32,
    /// Output ECX.
    pub ecx: u32,
    /// Output EDX.
    pub edx: u32,
}

/// The outputs of CPUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Leaves whose output depends on ECX (Linux `cpuid_function_is_indexed`).
pub fn is_indexed(leaf: u32) -> bool {
    matches!(
        leaf,
        0x4 | 0x7
            | 0xB
            | 0xD
            | 0xF
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1D
            | 0x1E
            | 0x1F
            | 0x24
            | 0x8000_001D
    )
}

/// The parsed CPUID page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuidPage {
    entries: [CpuidEntry; CPUID_COUNT_MAX],
    count: usize,
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    bytes
        .get(offset..offset.saturating_add(4))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    bytes
        .get(offset..offset.saturating_add(8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Byte offset of entry `i` (< [`CPUID_COUNT_MAX`], so within the page).
const fn entry_offset(i: usize) -> usize {
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "i < CPUID_COUNT_MAX: at most 16 + 63 * 48 bytes"
    )]
    let o = CPUID_ENTRIES_OFFSET + i * CPUID_ENTRY_SIZE;
    o
}

const _: () = assert!(entry_offset(CPUID_COUNT_MAX) <= CPUID_PAGE_SIZE);

impl CpuidPage {
    /// Parses a CPUID page (4096 bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        if bytes.len() < CPUID_PAGE_SIZE {
            return Err(ParseError::ShortBuffer {
                need: CPUID_PAGE_SIZE,
                got: bytes.len(),
            });
        }
        let count = u32_at(bytes, 0) as usize;
        if count > CPUID_COUNT_MAX {
            return Err(ParseError::SizeTooLarge {
                size: count,
                max: CPUID_COUNT_MAX,
            });
        }
        let mut entries = [CpuidEntry::default(); CPUID_COUNT_MAX];
        for (i, slot) in entries.iter_mut().enumerate().take(count) {
            let e = bytes.get(entry_offset(i)..).unwrap_or_default();
            *slot = CpuidEntry {
                eax_in: u32_at(e, 0),
                ecx_in: u32_at(e, 4),
                xcr0_in: u64_at(e, 8),
                xss_in: u64_at(e, 16),
                eax: u32_at(e, 24),
                ebx: u32_at(e, CPUID_EBX_OUTPUT_OFFSET),
                ecx: u32_at(e, 32),
                edx: u32_at(e, 36),
            };
        }
        Ok(Self { entries, count })
    }

    /// Builds the page bytes for `entries` (tests and the emulated launch).
    #[allow(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        reason = "entries.len() <= CPUID_COUNT_MAX, checked first: every entry is in the page"
    )]
    pub fn encode(entries: &[CpuidEntry]) -> Result<[u8; CPUID_PAGE_SIZE], ParseError> {
        if entries.len() > CPUID_COUNT_MAX {
            return Err(ParseError::SizeTooLarge {
                size: entries.len(),
                max: CPUID_COUNT_MAX,
            });
        }
        let mut page = [0u8; CPUID_PAGE_SIZE];
        page[0..4].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        for (i, e) in entries.iter().enumerate() {
            let o = CPUID_ENTRIES_OFFSET + i * CPUID_ENTRY_SIZE;
            page[o..o + 4].copy_from_slice(&e.eax_in.to_le_bytes());
            page[o + 4..o + 8].copy_from_slice(&e.ecx_in.to_le_bytes());
            page[o + 8..o + 16].copy_from_slice(&e.xcr0_in.to_le_bytes());
            page[o + 16..o + 24].copy_from_slice(&e.xss_in.to_le_bytes());
            page[o + 24..o + 28].copy_from_slice(&e.eax.to_le_bytes());
            page[o + CPUID_EBX_OUTPUT_OFFSET..o + CPUID_EBX_OUTPUT_OFFSET + 4]
                .copy_from_slice(&e.ebx.to_le_bytes());
            page[o + 32..o + 36].copy_from_slice(&e.ecx.to_le_bytes());
            page[o + 36..o + 40].copy_from_slice(&e.edx.to_le_bytes());
        }
        Ok(page)
    }

    /// The entries.
    pub fn entries(&self) -> &[CpuidEntry] {
        self.entries.get(..self.count).unwrap_or_default()
    }

    /// CPUID(`leaf`, `subleaf`) as the page answers it; zeros for a leaf it lacks.
    pub fn lookup(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.entries()
            .iter()
            .find(|e| e.eax_in == leaf && (!is_indexed(leaf) || e.ecx_in == subleaf))
            .map(|e| CpuidResult {
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
            })
            .unwrap_or_default()
    }

    /// The C-bit position: CPUID 0x8000_001F EBX[5:0]. Fails if the leaf is missing or
    /// the position is not a physical address bit an SNP machine can use (32..=51: a
    /// page-table entry's address field ends at bit 51; bits 52..=63 are ignored or NX,
    /// so a "C-bit" there would map every page unencrypted or non-executable).
    pub fn cbit_position(&self) -> Result<u8, SnpError> {
        if !self
            .entries()
            .iter()
            .any(|e| e.eax_in == LEAF_MEMORY_ENCRYPTION)
        {
            return Err(SnpError::CpuidLeafMissing(LEAF_MEMORY_ENCRYPTION));
        }
        let position = (self.lookup(LEAF_MEMORY_ENCRYPTION, 0).ebx & 0x3F) as u8;
        if !(32..=MAX_CBIT).contains(&position) {
            return Err(SnpError::CbitPosition(position));
        }
        Ok(position)
    }
}

/// Highest C-bit position: the last physical-address bit of a page-table entry (AMD APM
/// vol. 2, "Long-Mode Page Translation": bits 51:12 hold the address).
pub const MAX_CBIT: u8 = 51;

/// The C-bit position, checked against what the hypervisor reported in its SEV
/// information (the CPUID page is the trusted source; a disagreement means the
/// hypervisor is wrong or hostile).
pub fn checked_cbit(page: &CpuidPage, hypervisor_cbit: u8) -> Result<u8, SnpError> {
    let position = page.cbit_position()?;
    if position != hypervisor_cbit {
        return Err(SnpError::CbitPosition(hypervisor_cbit));
    }
    Ok(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(eax_in: u32, ecx_in: u32, out: [u32; 4]) -> CpuidEntry {
        CpuidEntry {
            eax_in,
            ecx_in,
            eax: out[0],
            ebx: out[1],
            ecx: out[2],
            edx: out[3],
            ..Default::default()
        }
    }

    #[test]
    fn layout_matches_linux_snp_cpuid_table() {
        let page =
            CpuidPage::encode(&[entry(0x8000_001F, 0, [0x1_001B, 0x0000_0173, 0x1FD, 1])]).unwrap();
        assert_eq!(&page[0..4], &1u32.to_le_bytes());
        // Entry 0 at 16: eax_in, then the EBX output at 16 + 28.
        assert_eq!(&page[16..20], &0x8000_001Fu32.to_le_bytes());
        assert_eq!(&page[44..48], &0x173u32.to_le_bytes());
        // 16 + 64 * 48 bytes fit the page.
        const { assert!(CPUID_ENTRIES_OFFSET + CPUID_COUNT_MAX * CPUID_ENTRY_SIZE <= CPUID_PAGE_SIZE) };
    }

    #[test]
    fn cbit_is_ebx_bits_5_0_of_leaf_8000001f() {
        // EBX 0x173: C-bit 51 (0x33), reduced physical bits 5 in EBX[11:6].
        let page = CpuidPage::parse(
            &CpuidPage::encode(&[entry(0x8000_001F, 0, [0x1_001B, 0x173, 0, 0])]).unwrap(),
        )
        .unwrap();
        assert_eq!(page.cbit_position(), Ok(51));
        assert_eq!(checked_cbit(&page, 51), Ok(51));
        assert_eq!(checked_cbit(&page, 47), Err(SnpError::CbitPosition(47)));
        let low = CpuidPage::parse(
            &CpuidPage::encode(&[entry(0x8000_001F, 0, [0, 0x10, 0, 0])]).unwrap(),
        )
        .unwrap();
        assert_eq!(low.cbit_position(), Err(SnpError::CbitPosition(16)));
        // Bits 52..=63 are no address bits (63 is NX): a hostile CPUID page's 0x3F or 52.
        for ebx in [0x3F, 52] {
            let high = CpuidPage::parse(
                &CpuidPage::encode(&[entry(0x8000_001F, 0, [0, ebx, 0, 0])]).unwrap(),
            )
            .unwrap();
            assert_eq!(high.cbit_position(), Err(SnpError::CbitPosition(ebx as u8)));
        }
        let none = CpuidPage::parse(&CpuidPage::encode(&[]).unwrap()).unwrap();
        assert_eq!(
            none.cbit_position(),
            Err(SnpError::CpuidLeafMissing(0x8000_001F))
        );
    }

    #[test]
    fn indexed_leaves_match_the_subleaf() {
        let page = CpuidPage::parse(
            &CpuidPage::encode(&[
                entry(7, 0, [1, 2, 3, 4]),
                entry(7, 1, [5, 6, 7, 8]),
                entry(1, 9, [0xA00F11, 0, 0, 0]),
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(page.lookup(7, 1).eax, 5);
        assert_eq!(page.lookup(7, 0).edx, 4);
        assert_eq!(page.lookup(7, 2), CpuidResult::default());
        // Leaf 1 does not depend on ECX.
        assert_eq!(page.lookup(1, 0).eax, 0xA00F11);
        assert_eq!(page.lookup(0x4000_0000, 0), CpuidResult::default());
    }

    #[test]
    fn bad_pages_are_refused() {
        let mut page = [0u8; CPUID_PAGE_SIZE];
        page[0..4].copy_from_slice(&65u32.to_le_bytes());
        assert!(CpuidPage::parse(&page).is_err());
        assert!(CpuidPage::parse(&page[..100]).is_err());
    }
}
