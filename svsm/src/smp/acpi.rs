//! The processors the firmware lists: RSDP, RSDT/XSDT and the MADT.
//!
//! ACPI 6.5 §5.2.5 "Root System Description Pointer" (signature "RSD PTR ", checksum
//! over the first 20 bytes, revision 2 adds the XSDT address at 24 and an extended
//! checksum over `length` bytes), §5.2.6 "System Description Table Header" (36 bytes,
//! every table sums to zero), §5.2.7/§5.2.8 RSDT (32-bit entries) and XSDT (64-bit),
//! §5.2.12 MADT (entries from byte 44): type 0 "Processor Local APIC" (8 bytes, APIC ID
//! at 3, flags at 4) and type 9 "Processor Local x2APIC" (16 bytes, ID at 4, flags at
//! 8); flags bit 0 = enabled. The tables are the host's (QEMU's) and untrusted: every
//! length is checked, a bad table is an error, never a panic.

use alloc::vec::Vec;

/// Reads physical memory (the kernel's identity map; a byte array in tests).
pub trait PhysRead {
    /// Fills `buf` from physical address `addr`; `false` if the range is unreadable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

/// Why the processor list could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// No RSDP found.
    NoRsdp,
    /// A table could not be read, or its length or checksum is wrong.
    BadTable(u64),
    /// No MADT in the RSDT/XSDT.
    NoMadt,
    /// An MADT entry is malformed (at this byte offset).
    BadMadtEntry(usize),
}

const SDT_HEADER: usize = 36;
const MADT_ENTRIES: usize = 44;
const MADT_LOCAL_APIC: u8 = 0;
const MADT_LOCAL_X2APIC: u8 = 9;
const MADT_ENABLED: u32 = 1;
/// Largest table the parser accepts (QEMU's MADT for 288 CPUs is below 4 KiB).
const MAX_TABLE: usize = 64 * 1024;

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Checks an RSDP candidate; returns (RSDT or XSDT address, is XSDT).
pub fn parse_rsdp(bytes: &[u8; 36]) -> Option<(u64, bool)> {
    if &bytes[..8] != b"RSD PTR " || !checksum_ok(&bytes[..20]) {
        return None;
    }
    if bytes[15] >= 2 {
        let length = le32(bytes, 20)? as usize;
        let xsdt = le64(bytes, 24)?;
        if length >= 36 && checksum_ok(&bytes[..36]) && xsdt != 0 {
            return Some((xsdt, true));
        }
    }
    Some((u64::from(le32(bytes, 16)?), false))
}

/// Finds the RSDP: at `hint` when non-zero (the PVH `rsdp_paddr`), else in the BIOS
/// area 0xE0000..0x100000 on 16-byte boundaries (ACPI §5.2.5.1).
pub fn find_rsdp(mem: &impl PhysRead, hint: u64) -> Result<(u64, bool), AcpiError> {
    let mut candidate = [0u8; 36];
    if hint != 0 {
        if mem.read(hint, &mut candidate) {
            if let Some(found) = parse_rsdp(&candidate) {
                return Ok(found);
            }
        }
        return Err(AcpiError::NoRsdp);
    }
    (0xE_0000u64..0x10_0000)
        .step_by(16)
        .find_map(|addr| {
            mem.read(addr, &mut candidate)
                .then(|| parse_rsdp(&candidate))
                .flatten()
        })
        .ok_or(AcpiError::NoRsdp)
}

/// Reads the whole table at `addr`, checking its length and checksum.
pub fn read_table(mem: &impl PhysRead, addr: u64) -> Result<Vec<u8>, AcpiError> {
    let mut header = [0u8; SDT_HEADER];
    if !mem.read(addr, &mut header) {
        return Err(AcpiError::BadTable(addr));
    }
    let length = le32(&header, 4).ok_or(AcpiError::BadTable(addr))? as usize;
    if !(SDT_HEADER..=MAX_TABLE).contains(&length) {
        return Err(AcpiError::BadTable(addr));
    }
    let mut table = alloc::vec![0u8; length];
    if !mem.read(addr, &mut table) || !checksum_ok(&table) {
        return Err(AcpiError::BadTable(addr));
    }
    Ok(table)
}

/// The enabled processors' APIC IDs in an MADT, in table order, without duplicates.
pub fn madt_apic_ids(madt: &[u8]) -> Result<Vec<u32>, AcpiError> {
    if madt.get(..4) != Some(b"APIC") || madt.len() < MADT_ENTRIES {
        return Err(AcpiError::BadTable(0));
    }
    let mut ids = Vec::new();
    let mut at = MADT_ENTRIES;
    while at < madt.len() {
        let kind = madt[at];
        let len = *madt.get(at + 1).ok_or(AcpiError::BadMadtEntry(at))? as usize;
        if len < 2 || at + len > madt.len() {
            return Err(AcpiError::BadMadtEntry(at));
        }
        let entry = &madt[at..at + len];
        let found = match kind {
            MADT_LOCAL_APIC if len >= 8 => Some((u32::from(entry[3]), le32(entry, 4))),
            MADT_LOCAL_X2APIC if len >= 16 => Some((le32(entry, 4).unwrap_or(0), le32(entry, 8))),
            MADT_LOCAL_APIC | MADT_LOCAL_X2APIC => return Err(AcpiError::BadMadtEntry(at)),
            _ => None,
        };
        if let Some((id, Some(flags))) = found {
            if flags & MADT_ENABLED != 0 && !ids.contains(&id) {
                ids.push(id);
            }
        }
        at += len;
    }
    Ok(ids)
}

/// The enabled processors' APIC IDs, from the RSDP (at `hint`, or searched for).
pub fn processor_apic_ids(mem: &impl PhysRead, hint: u64) -> Result<Vec<u32>, AcpiError> {
    let (root, xsdt) = find_rsdp(mem, hint)?;
    let table = read_table(mem, root)?;
    let width = if xsdt { 8 } else { 4 };
    let entries = table.get(SDT_HEADER..).unwrap_or_default();
    for chunk in entries.chunks_exact(width) {
        let addr = if xsdt {
            le64(chunk, 0)
        } else {
            le32(chunk, 0).map(u64::from)
        }
        .unwrap_or(0);
        let mut signature = [0u8; 4];
        if addr != 0 && mem.read(addr, &mut signature) && &signature == b"APIC" {
            return madt_apic_ids(&read_table(mem, addr)?);
        }
    }
    Err(AcpiError::NoMadt)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(Vec<(u64, Vec<u8>)>);

    impl PhysRead for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            for (base, bytes) in &self.0 {
                if addr >= *base && addr + buf.len() as u64 <= base + bytes.len() as u64 {
                    let off = (addr - base) as usize;
                    buf.copy_from_slice(&bytes[off..off + buf.len()]);
                    return true;
                }
            }
            false
        }
    }

    fn fix_checksum(t: &mut [u8], at: usize) {
        t[at] = 0;
        let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        t[at] = 0u8.wrapping_sub(sum);
    }

    fn table(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = signature.to_vec();
        t.extend_from_slice(&((SDT_HEADER + body.len()) as u32).to_le_bytes());
        t.resize(SDT_HEADER, 0);
        t.extend_from_slice(body);
        fix_checksum(&mut t, 9);
        t
    }

    fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![0u8; 8]; // local APIC address, flags
        for e in entries {
            body.extend_from_slice(e);
        }
        table(b"APIC", &body)
    }

    fn lapic(id: u8, flags: u32) -> Vec<u8> {
        let mut e = vec![0, 8, id, id];
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    fn rsdp_v0(rsdt: u32) -> Vec<u8> {
        let mut r = b"RSD PTR ".to_vec();
        r.resize(36, 0);
        r[16..20].copy_from_slice(&rsdt.to_le_bytes());
        fix_checksum(&mut r[..20], 8);
        r
    }

    /// QEMU's layout for `-smp 4`: RSDP in the BIOS area, RSDT with a FACP and the MADT.
    fn machine(madt_bytes: Vec<u8>) -> Mem {
        let mut rsdt_body = Vec::new();
        rsdt_body.extend_from_slice(&0x7000u32.to_le_bytes());
        rsdt_body.extend_from_slice(&0x8000u32.to_le_bytes());
        Mem(vec![
            (0xF_5A40, rsdp_v0(0x6000)),
            (0x6000, table(b"RSDT", &rsdt_body)),
            (0x7000, table(b"FACP", &[0; 8])),
            (0x8000, madt_bytes),
        ])
    }

    #[test]
    fn finds_the_enabled_processors() {
        let x2 = {
            let mut e = vec![9, 16, 0, 0];
            e.extend_from_slice(&0x100u32.to_le_bytes());
            e.extend_from_slice(&1u32.to_le_bytes());
            e.extend_from_slice(&7u32.to_le_bytes());
            e
        };
        let ioapic = [1u8, 12, 0, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0];
        let m = madt(&[
            &lapic(0, 1),
            &lapic(1, 1),
            &ioapic,
            &lapic(2, 0),
            &lapic(3, 1),
            &x2,
        ]);
        let mem = machine(m);
        assert_eq!(processor_apic_ids(&mem, 0), Ok(vec![0, 1, 3, 0x100]));
        // The PVH hint finds the same RSDP without the search.
        assert_eq!(processor_apic_ids(&mem, 0xF_5A40), Ok(vec![0, 1, 3, 0x100]));
    }

    #[test]
    fn hostile_tables_are_errors() {
        // Duplicates are listed once.
        assert_eq!(
            madt_apic_ids(&madt(&[&lapic(1, 1), &lapic(1, 1)])),
            Ok(vec![1])
        );
        // An entry running past the table, a zero length, a short local APIC entry.
        let mut m = madt(&[&lapic(0, 1)]);
        m[MADT_ENTRIES + 1] = 200;
        assert_eq!(
            madt_apic_ids(&m),
            Err(AcpiError::BadMadtEntry(MADT_ENTRIES))
        );
        m[MADT_ENTRIES + 1] = 0;
        assert_eq!(
            madt_apic_ids(&m),
            Err(AcpiError::BadMadtEntry(MADT_ENTRIES))
        );
        m[MADT_ENTRIES + 1] = 4;
        assert!(madt_apic_ids(&m).is_err());
        // A bad checksum in the MADT.
        let mut bad = madt(&[&lapic(0, 1)]);
        bad[40] ^= 1;
        assert_eq!(
            processor_apic_ids(&machine(bad), 0),
            Err(AcpiError::BadTable(0x8000))
        );
        // A wrong hint, and no RSDP anywhere.
        assert_eq!(
            processor_apic_ids(&machine(madt(&[])), 0x1234),
            Err(AcpiError::NoRsdp)
        );
        assert_eq!(processor_apic_ids(&Mem(vec![]), 0), Err(AcpiError::NoRsdp));
        // A length field beyond the limit.
        let mut huge = madt(&[&lapic(0, 1)]);
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            read_table(&Mem(vec![(0x8000, huge)]), 0x8000),
            Err(AcpiError::BadTable(0x8000))
        );
    }
}
