//! Reads an OVMF image: its place below 4 GiB and its SEV metadata.
//!
//! OVMF ends with a GUID-keyed table (edk2 `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm`):
//! the 16-byte footer GUID lies 32 + 16 bytes before the end of the image, preceded by the
//! table's total length (u16). Entries run backwards from there, each laid out as
//! `data, u16 length, GUID` with the length covering all three. The SEV metadata entry holds
//! a u32 offset, from the end of the image, of a header `"ASEV", u32 size, u32 version (1),
//! u32 count` followed by `count` sections of `u32 gpa, u32 size, u32 type`.
//! GUIDs are stored in the mixed-endian UEFI byte order.
//!
//! OVMF from edk2-stable202511 on also carries an IGVM metadata entry (edk2
//! `OvmfPkg/ResetVector/X64/IgvmMetadata.nasm.inc`, `PlatformInitLib/Igvm.c`): a u32 offset
//! from the end of the image to a header `"IGVM", u32 size, u32 version (1), u32 count`
//! and `count` sections of `u32 start, u32 size, u32 type`. Type 0x100 is the firmware's
//! IGVM parameter area (a GPA range), 0x101 the memory map inside it (offset, size) and
//! 0x102 the vCPU count inside it; 0x200 is a HOB area. When the memory map's first entry
//! has a page count, OVMF takes its RAM from there instead of QEMU's fw_cfg E820 table:
//! this is how it learns that the SVSM's range is not its RAM.

use std::path::Path;

use svsm_protocol::igvm_params::{MemoryRange, FW_SEC_MEM_MAX};

use crate::{Error, PAGE_SIZE};

/// The table footer GUID 96b582de-1fb2-45f7-baea-a366c55a082d, UEFI byte order.
const FOOTER_GUID: [u8; 16] = guid(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// The IGVM metadata GUID 784fa70e-3176-4677-8a20-04b68699e374, UEFI byte order.
const IGVM_METADATA_GUID: [u8; 16] = guid(
    0x784f_a70e,
    0x3176,
    0x4677,
    [0x8a, 0x20, 0x04, 0xb6, 0x86, 0x99, 0xe3, 0x74],
);
/// IGVM metadata section: the firmware's IGVM parameter area (GPA, size).
const IGVM_PARAM_AREA: u32 = 0x100;
/// IGVM metadata section: the memory map inside the parameter area (offset, size).
const IGVM_PARAM_MEMORY_MAP: u32 = 0x101;
/// Size of one IGVM memory map entry (`IGVM_VHS_MEMORY_MAP_ENTRY`).
const MEMORY_MAP_ENTRY_SIZE: u64 = 24;

/// The SEV metadata GUID dc886566-984a-4798-a75e-5585a7bf67cc, UEFI byte order.
const SEV_METADATA_GUID: [u8; 16] = guid(
    0xdc88_6566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);

/// Builds the UEFI (mixed-endian) byte form of a GUID.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// The type of an SEV metadata section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionType {
    /// 1: memory the firmware expects validated before it runs.
    SnpSecMem,
    /// 2: where the firmware expects the secrets page.
    Secrets,
    /// 3: where the firmware expects the CPUID page.
    Cpuid,
    /// 4: where the firmware expects its SVSM calling area.
    SvsmCaa,
    /// 0x10: the kernel-hashes page for direct kernel boot.
    KernelHashes,
}

impl SectionType {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::SnpSecMem,
            2 => Self::Secrets,
            3 => Self::Cpuid,
            4 => Self::SvsmCaa,
            0x10 => Self::KernelHashes,
            _ => return None,
        })
    }

    /// The raw metadata value.
    pub fn raw(self) -> u32 {
        match self {
            Self::SnpSecMem => 1,
            Self::Secrets => 2,
            Self::Cpuid => 3,
            Self::SvsmCaa => 4,
            Self::KernelHashes => 0x10,
        }
    }
}

/// One SEV metadata section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// Its type.
    pub kind: SectionType,
    /// First GPA.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A parsed OVMF image.
#[derive(Clone, Debug)]
pub struct Firmware {
    /// The image bytes, placed so that they end at 4 GiB.
    pub data: Vec<u8>,
    /// The SEV metadata sections, in file order.
    pub sections: Vec<Section>,
    /// Where the firmware reads its memory map (an IGVM parameter, absolute GPA and
    /// size), if its IGVM metadata names one.
    pub memory_map: Option<MemoryRange>,
}

impl Firmware {
    /// Reads and checks the image at `path`; refuses firmware that cannot run under an SVSM.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let data = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let fw = Self::parse(data).map_err(|reason| Error::Firmware {
            path: path.to_path_buf(),
            reason,
        })?;
        if fw.section(SectionType::SvsmCaa).is_none() {
            let sections = fw
                .sections
                .iter()
                .map(|s| s.kind.raw().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::FirmwareWithoutSvsm {
                path: path.to_path_buf(),
                sections,
            });
        }
        Ok(fw)
    }

    /// Parses an image held in memory (does not require the calling-area section).
    pub fn parse(data: Vec<u8>) -> Result<Self, String> {
        let len = data.len() as u64;
        if len == 0 || len % PAGE_SIZE != 0 {
            return Err(format!("size {len:#x} is not a non-zero multiple of 4 KiB"));
        }
        if len > 16 << 20 {
            return Err(format!(
                "size {len:#x} exceeds the 16 MiB flash window below 4 GiB"
            ));
        }
        let table = footer_table(&data)?;
        let metadata = table
            .iter()
            .find(|(g, _)| *g == SEV_METADATA_GUID)
            .map(|(_, d)| *d)
            .ok_or("no SEV metadata entry in the footer table (not an SEV-capable OVMF)")?;
        let offset = read_u32(metadata, 0).ok_or("SEV metadata entry is shorter than 4 bytes")?;
        let start = data
            .len()
            .checked_sub(offset as usize)
            .ok_or_else(|| format!("SEV metadata offset {offset:#x} lies before the image"))?;
        let header = data
            .get(start..start + 16)
            .ok_or("SEV metadata header is truncated")?;
        if &header[0..4] != b"ASEV" {
            return Err("SEV metadata signature is not \"ASEV\"".into());
        }
        let size = read_u32(header, 4).unwrap_or(0) as usize;
        let version = read_u32(header, 8).unwrap_or(0);
        let count = read_u32(header, 12).unwrap_or(0) as usize;
        if version != 1 {
            return Err(format!("SEV metadata version {version} is not 1"));
        }
        if size < 16 + count * 12 || start + size > data.len() {
            return Err(format!(
                "SEV metadata size {size:#x} does not hold its {count} sections inside the image"
            ));
        }
        let mut sections = Vec::with_capacity(count);
        for i in 0..count {
            let at = start + 16 + i * 12;
            let gpa = read_u32(&data, at).unwrap_or(0) as u64;
            let size = read_u32(&data, at + 4).unwrap_or(0) as u64;
            let raw = read_u32(&data, at + 8).unwrap_or(0);
            let kind = SectionType::from_raw(raw)
                .ok_or_else(|| format!("SEV metadata section {i} has unknown type {raw}"))?;
            if gpa % PAGE_SIZE != 0 || size == 0 || size % PAGE_SIZE != 0 {
                return Err(format!(
                    "SEV metadata section {i} ({gpa:#x}+{size:#x}) is not whole 4 KiB pages"
                ));
            }
            sections.push(Section { kind, gpa, size });
        }
        let memory_map = match table.iter().find(|(g, _)| *g == IGVM_METADATA_GUID) {
            Some((_, entry)) => igvm_memory_map(&data, entry)?,
            None => None,
        };
        let fw = Self {
            data,
            sections,
            memory_map,
        };
        for s in &fw.sections {
            if s.gpa + s.size > fw.base() {
                return Err(format!(
                    "SEV metadata section at {:#x}+{:#x} overlaps the image itself",
                    s.gpa, s.size
                ));
            }
        }
        for (i, a) in fw.sections.iter().enumerate() {
            for b in &fw.sections[i + 1..] {
                if a.gpa < b.gpa + b.size && b.gpa < a.gpa + a.size {
                    return Err(format!(
                        "overlapping regions: SEV metadata sections {:#x}+{:#x} and {:#x}+{:#x}",
                        a.gpa, a.size, b.gpa, b.size
                    ));
                }
            }
        }
        if fw.sections_of(SectionType::SnpSecMem).count() > FW_SEC_MEM_MAX {
            return Err(format!("more than {FW_SEC_MEM_MAX} SNP_SEC_MEM sections"));
        }
        for kind in [
            SectionType::Secrets,
            SectionType::Cpuid,
            SectionType::SvsmCaa,
        ] {
            if fw.sections_of(kind).count() > 1 {
                return Err(format!("more than one section of type {}", kind.raw()));
            }
            if let Some(s) = fw.section(kind) {
                if s.size != PAGE_SIZE {
                    return Err(format!("section of type {} is not one page", kind.raw()));
                }
            }
        }
        Ok(fw)
    }

    /// The image's first GPA: it ends at 4 GiB.
    pub fn base(&self) -> u64 {
        (1u64 << 32) - self.data.len() as u64
    }

    /// The image's range.
    pub fn image(&self) -> MemoryRange {
        MemoryRange {
            base: self.base(),
            size: self.data.len() as u64,
        }
    }

    /// The single section of `kind`, if any.
    pub fn section(&self, kind: SectionType) -> Option<Section> {
        self.sections_of(kind).next()
    }

    /// Every section of `kind`.
    pub fn sections_of(&self, kind: SectionType) -> impl Iterator<Item = Section> + '_ {
        self.sections
            .iter()
            .copied()
            .filter(move |s| s.kind == kind)
    }
}

/// The memory map location from the IGVM metadata that `entry` (the footer table entry's
/// data) points at: `None` when the firmware was built without an IGVM parameter area.
fn igvm_memory_map(data: &[u8], entry: &[u8]) -> Result<Option<MemoryRange>, String> {
    let offset = read_u32(entry, 0).ok_or("IGVM metadata entry is shorter than 4 bytes")?;
    let start = data
        .len()
        .checked_sub(offset as usize)
        .ok_or_else(|| format!("IGVM metadata offset {offset:#x} lies before the image"))?;
    let header = data
        .get(start..start.saturating_add(16))
        .ok_or("IGVM metadata header is truncated")?;
    if &header[0..4] != b"IGVM" {
        return Err("IGVM metadata signature is not \"IGVM\"".into());
    }
    let size = read_u32(header, 4).unwrap_or(0) as usize;
    let version = read_u32(header, 8).unwrap_or(0);
    let count = read_u32(header, 12).unwrap_or(0) as usize;
    if version != 1 {
        return Err(format!("IGVM metadata version {version} is not 1"));
    }
    let fits = count
        .checked_mul(12)
        .and_then(|n| n.checked_add(16))
        .is_some_and(|need| size >= need && start.saturating_add(size) <= data.len());
    if !fits {
        return Err(format!(
            "IGVM metadata size {size:#x} does not hold its {count} sections inside the image"
        ));
    }
    let mut area = None;
    let mut map = None;
    for i in 0..count {
        let at = start + 16 + i * 12;
        let first = u64::from(read_u32(data, at).unwrap_or(0));
        let len = u64::from(read_u32(data, at + 4).unwrap_or(0));
        match read_u32(data, at + 8).unwrap_or(0) {
            IGVM_PARAM_AREA if area.is_some() => {
                return Err("IGVM metadata names two parameter areas".into())
            }
            IGVM_PARAM_AREA => area = Some((first, len)),
            IGVM_PARAM_MEMORY_MAP if map.is_some() => {
                return Err("IGVM metadata names two memory maps".into())
            }
            IGVM_PARAM_MEMORY_MAP => map = Some((first, len)),
            // The vCPU count, the HOB area and anything newer: not used here.
            _ => {}
        }
    }
    let Some((offset, len)) = map else {
        return Ok(None);
    };
    let (base, size) =
        area.ok_or("IGVM metadata names a memory map but no parameter area to hold it")?;
    if base % PAGE_SIZE != 0 || size == 0 || size % PAGE_SIZE != 0 {
        return Err(format!(
            "IGVM parameter area {base:#x}+{size:#x} is not whole 4 KiB pages"
        ));
    }
    if !(2 * MEMORY_MAP_ENTRY_SIZE..=PAGE_SIZE).contains(&len)
        || len % MEMORY_MAP_ENTRY_SIZE != 0
        || offset % 8 != 0
    {
        return Err(format!(
            "IGVM memory map at offset {offset:#x}, size {len:#x}, is not an 8-byte aligned \
             array of at least two and at most a page of 24-byte entries"
        ));
    }
    if offset + len > size {
        return Err(format!(
            "IGVM memory map {offset:#x}+{len:#x} lies outside its {size:#x}-byte parameter area"
        ));
    }
    Ok(Some(MemoryRange {
        base: base + offset,
        size: len,
    }))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at.checked_add(4)?)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    bytes
        .get(at..at.checked_add(2)?)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

/// One footer table entry: its GUID and its data.
type TableEntry<'a> = ([u8; 16], &'a [u8]);

/// The entries of the footer GUID table.
fn footer_table(data: &[u8]) -> Result<Vec<TableEntry<'_>>, String> {
    const ENTRY_HEADER: usize = 18;
    let footer = data
        .len()
        .checked_sub(32 + ENTRY_HEADER)
        .ok_or("image too small for a footer table")?;
    let guid_at = footer + 2;
    if data[guid_at..guid_at + 16] != FOOTER_GUID {
        return Err("no OVMF footer GUID table 32 bytes before the end (not an OVMF image)".into());
    }
    let total = read_u16(data, footer).unwrap_or(0) as usize;
    let table_len = total
        .checked_sub(ENTRY_HEADER)
        .ok_or("footer table length is smaller than its own header")?;
    let start = footer
        .checked_sub(table_len)
        .ok_or("footer table length points before the image")?;
    let mut table = &data[start..footer];
    let mut entries = Vec::new();
    while table.len() >= ENTRY_HEADER {
        let at = table.len() - ENTRY_HEADER;
        let size = read_u16(table, at).unwrap_or(0) as usize;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&table[at + 2..at + 18]);
        if size < ENTRY_HEADER || size > table.len() {
            return Err(format!("footer table entry has a bad length {size}"));
        }
        let entry_start = table.len() - size;
        entries.push((guid, &table[entry_start..at]));
        table = &table[..entry_start];
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_bytes_are_mixed_endian() {
        assert_eq!(&FOOTER_GUID[..4], &[0xde, 0x82, 0xb5, 0x96]);
        assert_eq!(&FOOTER_GUID[4..8], &[0xb2, 0x1f, 0xf7, 0x45]);
        assert_eq!(
            &FOOTER_GUID[8..],
            &[0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]
        );
    }

    #[test]
    fn rejects_non_ovmf() {
        let err = Firmware::parse(vec![0u8; 0x10000]).unwrap_err();
        assert!(err.contains("footer"), "{err}");
        let err = Firmware::parse(vec![0u8; 100]).unwrap_err();
        assert!(err.contains("multiple of 4 KiB"), "{err}");
    }
}
