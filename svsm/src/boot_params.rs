//! Boot parameters from the IGVM parameter areas: checked, then interpreted.
//!
//! When the kernel starts from an IGVM file, `EBX` points at the parameter block
//! ([`IgvmParamBlock`], see `svsm_protocol::igvm_params`). The kernel hands this module the
//! bytes of that block and of the areas it names; this module does no memory access of
//! its own, so it runs the same on the host (tests) and in the kernel.
//!
//! The block is measured, so it is trusted for what it says, but it is still checked for
//! consistency (a bad build must stop the boot, not corrupt memory). The parameter page,
//! the memory map and the MADT are written by the host and are not measured: every value
//! in them is checked, and a value that does not add up stops the boot with a typed error.
//! The memory map handed on to the guest marks the SVSM's range reserved, because the
//! guest's PVALIDATE of SVSM memory fails and Linux then terminates.

use svsm_protocol::igvm_params::{
    FirmwareInfo, IgvmParamBlock, IgvmParamPage, MemoryMapEntry, MemoryRange, FW_SEC_MEM_MAX,
    MADT_APIC_ENABLED, MADT_HEADER_SIZE, MADT_SIGNATURE, MADT_TYPE_LOCAL_APIC,
    MADT_TYPE_LOCAL_X2APIC, MEMORY_MAP_TYPE_MEMORY, MEMORY_MAP_TYPE_PLATFORM_RESERVED,
    MEMORY_MAP_TYPE_VTL2_PROTECTABLE, PARAM_BLOCK_MAGIC, PARAM_BLOCK_VERSION, PARAM_FLAG_FIRMWARE,
};
use zerocopy::FromBytes;

const PAGE_SIZE: u64 = 4096;

/// Most vCPUs the kernel takes from the host.
pub const MAX_VCPUS: usize = 256;
/// Most memory map entries the kernel keeps.
pub const MAX_MEMORY_ENTRIES: usize = 64;

/// A region the parameter block names, for error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The SVSM's memory range.
    Svsm,
    /// The kernel image.
    Kernel,
    /// The parameter block itself.
    ParamBlock,
    /// The SVSM's secrets page.
    Secrets,
    /// The SVSM's CPUID page.
    Cpuid,
    /// The host-filled parameter page.
    ParamPage,
    /// The host-filled memory map.
    MemoryMap,
    /// The host-filled MADT.
    Madt,
    /// Free SVSM memory.
    Free,
    /// The firmware image.
    FirmwareImage,
    /// The firmware's secrets page.
    FirmwareSecrets,
    /// The firmware's CPUID page.
    FirmwareCpuid,
    /// The firmware's calling area.
    FirmwareCallingArea,
    /// A firmware SNP_SEC_MEM range (its index).
    FirmwareSecMem(usize),
    /// Where the firmware reads the guest's memory map.
    FirmwareMemoryMap,
}

/// Why the boot parameters are unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootParamsError {
    /// Fewer bytes than the structure needs.
    Truncated,
    /// The block's magic is not [`PARAM_BLOCK_MAGIC`].
    BadMagic(u64),
    /// A block version this kernel does not know.
    BadVersion(u32),
    /// The block's size field disagrees with the layout.
    BadSize(u32),
    /// A region is empty, unaligned or wraps around.
    BadRegion(Region),
    /// A region that must lie inside the SVSM range does not.
    OutsideSvsm(Region),
    /// Two regions overlap.
    Overlap(Region, Region),
    /// The guest VMPL is not 1, 2 or 3.
    BadGuestVmpl(u32),
    /// The host's vCPU count is zero or above [`MAX_VCPUS`].
    BadVcpuCount(u32),
    /// The memory map has more entries than [`MAX_MEMORY_ENTRIES`] or the output holds.
    TooManyEntries,
    /// A memory map entry is empty, wraps, or has an unknown type.
    BadMemoryEntry(usize),
    /// Memory map entries are not sorted or overlap.
    MemoryMapUnsorted(usize),
    /// The SVSM range is not wholly inside one RAM entry of the host's memory map.
    SvsmNotInRam,
    /// The MADT's header or an entry is malformed.
    BadMadt,
    /// The MADT lists a different number of enabled processors than the vCPU count.
    ApicCount {
        /// Enabled processors in the MADT.
        found: usize,
        /// The host's vCPU count.
        expected: u32,
    },
    /// Two processors share an APIC ID.
    DuplicateApicId(u32),
}

fn range_ok(r: MemoryRange) -> bool {
    r.size != 0 && r.base % PAGE_SIZE == 0 && r.size % PAGE_SIZE == 0 && r.end().is_some()
}

fn page(base: u64) -> MemoryRange {
    MemoryRange {
        base,
        size: PAGE_SIZE,
    }
}

fn inside(outer: MemoryRange, inner: MemoryRange) -> bool {
    match (outer.end(), inner.end()) {
        (Some(oe), Some(ie)) => inner.base >= outer.base && ie <= oe,
        _ => false,
    }
}

fn overlaps(a: MemoryRange, b: MemoryRange) -> bool {
    a.base < b.base.saturating_add(b.size) && b.base < a.base.saturating_add(a.size)
}

/// True when `bytes` starts like a parameter block (how the entry tells IGVM from PVH).
pub fn is_param_block(bytes: &[u8]) -> bool {
    bytes.get(..8) == Some(&PARAM_BLOCK_MAGIC.to_le_bytes()[..])
}

/// Reads and checks the measured parameter block.
pub fn parse_block(bytes: &[u8]) -> Result<IgvmParamBlock, BootParamsError> {
    let (block, _) =
        IgvmParamBlock::read_from_prefix(bytes).map_err(|_| BootParamsError::Truncated)?;
    if block.magic != PARAM_BLOCK_MAGIC {
        return Err(BootParamsError::BadMagic(block.magic));
    }
    if block.version != PARAM_BLOCK_VERSION {
        return Err(BootParamsError::BadVersion(block.version));
    }
    if block.size as usize != core::mem::size_of::<IgvmParamBlock>() {
        return Err(BootParamsError::BadSize(block.size));
    }
    check_block(&block)?;
    Ok(block)
}

fn check_block(b: &IgvmParamBlock) -> Result<(), BootParamsError> {
    if !range_ok(b.svsm) {
        return Err(BootParamsError::BadRegion(Region::Svsm));
    }
    let mut placed: [(Region, MemoryRange); 7] = [
        (Region::Kernel, b.kernel),
        (Region::Secrets, page(b.secrets_gpa)),
        (Region::Cpuid, page(b.cpuid_gpa)),
        (Region::ParamPage, page(b.param_page_gpa)),
        (Region::MemoryMap, b.memory_map),
        (Region::Madt, b.madt),
        (Region::Free, MemoryRange::default()),
    ];
    let svsm_end = b
        .svsm
        .end()
        .ok_or(BootParamsError::BadRegion(Region::Svsm))?;
    if b.free_base % PAGE_SIZE != 0 || b.free_base < b.svsm.base || b.free_base > svsm_end {
        return Err(BootParamsError::BadRegion(Region::Free));
    }
    placed[6].1 = MemoryRange {
        base: b.free_base,
        size: svsm_end - b.free_base,
    };
    for (i, (region, r)) in placed.iter().enumerate() {
        let optional = matches!(region, Region::Madt | Region::Free);
        if optional && r.size == 0 {
            continue;
        }
        if !range_ok(*r) {
            return Err(BootParamsError::BadRegion(*region));
        }
        if !inside(b.svsm, *r) {
            return Err(BootParamsError::OutsideSvsm(*region));
        }
        for (other, o) in &placed[i + 1..] {
            if o.size != 0 && overlaps(*r, *o) {
                return Err(BootParamsError::Overlap(*region, *other));
            }
        }
    }
    if !(1..=3).contains(&b.guest_vmpl) {
        return Err(BootParamsError::BadGuestVmpl(b.guest_vmpl));
    }
    if b.flags & PARAM_FLAG_FIRMWARE != 0 {
        check_firmware(b.svsm, &b.firmware)?;
        check_firmware_memory_map(&b.firmware, b.firmware_memory_map)?;
    } else if b.firmware_memory_map != MemoryRange::default() {
        return Err(BootParamsError::BadRegion(Region::FirmwareMemoryMap));
    }
    Ok(())
}

fn check_firmware(svsm: MemoryRange, fw: &FirmwareInfo) -> Result<(), BootParamsError> {
    if fw.sec_mem_count as usize > FW_SEC_MEM_MAX {
        return Err(BootParamsError::BadRegion(Region::FirmwareSecMem(
            fw.sec_mem_count as usize,
        )));
    }
    let mut regions = [(Region::FirmwareImage, fw.image); 4 + FW_SEC_MEM_MAX];
    let mut n = 1;
    for (region, gpa) in [
        (Region::FirmwareSecrets, fw.secrets_gpa),
        (Region::FirmwareCpuid, fw.cpuid_gpa),
        (Region::FirmwareCallingArea, fw.caa_gpa),
    ] {
        if gpa != 0 {
            regions[n] = (region, page(gpa));
            n += 1;
        }
    }
    for (i, r) in fw.sec_mem[..fw.sec_mem_count as usize].iter().enumerate() {
        regions[n] = (Region::FirmwareSecMem(i), *r);
        n += 1;
    }
    for (region, r) in &regions[..n] {
        if !range_ok(*r) {
            return Err(BootParamsError::BadRegion(*region));
        }
        if overlaps(svsm, *r) {
            return Err(BootParamsError::Overlap(Region::Svsm, *region));
        }
    }
    Ok(())
}

/// The firmware's memory map area, if any: whole 24-byte entries (at least two, so one is
/// left to end the list, at most a page, so a page-sized buffer always holds it), 8-byte
/// aligned, inside one SNP_SEC_MEM range (memory the SVSM validates and zeroes before it
/// writes the map, never its own).
fn check_firmware_memory_map(fw: &FirmwareInfo, map: MemoryRange) -> Result<(), BootParamsError> {
    if map == MemoryRange::default() {
        return Ok(());
    }
    let entry = core::mem::size_of::<MemoryMapEntry>() as u64;
    let bad = BootParamsError::BadRegion(Region::FirmwareMemoryMap);
    if map.base % 8 != 0
        || !(2 * entry..=PAGE_SIZE).contains(&map.size)
        || map.size % entry != 0
        || map.end().is_none()
    {
        return Err(bad);
    }
    let count = (fw.sec_mem_count as usize).min(FW_SEC_MEM_MAX);
    let inside_sec_mem = fw
        .sec_mem
        .get(..count)
        .unwrap_or_default()
        .iter()
        .any(|r| inside(*r, map));
    if !inside_sec_mem {
        return Err(BootParamsError::OutsideSvsm(Region::FirmwareMemoryMap));
    }
    Ok(())
}

/// The boot parameters, checked.
#[derive(Debug, Clone)]
pub struct BootParams {
    block: IgvmParamBlock,
    vcpu_count: u32,
    memory_shared: bool,
    apic_ids: [u32; MAX_VCPUS],
    memory: [MemoryMapEntry; MAX_MEMORY_ENTRIES],
    memory_count: usize,
}

impl BootParams {
    /// Checks the host-filled areas against the (already parsed) block. `madt` may be
    /// empty or all zero when the block names no MADT or the host did not fill it; the
    /// vCPUs then have APIC IDs 0..count.
    pub fn new(
        block: IgvmParamBlock,
        param_page: &[u8],
        memory_map: &[u8],
        madt: &[u8],
    ) -> Result<Self, BootParamsError> {
        check_block(&block)?;
        let (page, _) =
            IgvmParamPage::read_from_prefix(param_page).map_err(|_| BootParamsError::Truncated)?;
        if page.vcpu_count == 0 || page.vcpu_count as usize > MAX_VCPUS {
            return Err(BootParamsError::BadVcpuCount(page.vcpu_count));
        }
        let mut params = Self {
            block,
            vcpu_count: page.vcpu_count,
            memory_shared: page.environment & 1 != 0,
            apic_ids: [0; MAX_VCPUS],
            memory: [MemoryMapEntry::default(); MAX_MEMORY_ENTRIES],
            memory_count: 0,
        };
        params.read_memory_map(memory_map)?;
        params.read_madt(madt)?;
        Ok(params)
    }

    fn read_memory_map(&mut self, bytes: &[u8]) -> Result<(), BootParamsError> {
        // Copy each entry out: the bytes need not be aligned, and are read only once.
        let entries = bytes
            .chunks_exact(core::mem::size_of::<MemoryMapEntry>())
            .filter_map(|chunk| MemoryMapEntry::read_from_bytes(chunk).ok());
        let mut previous_end = 0u64;
        for (i, e) in entries.enumerate() {
            if e.number_of_pages == 0 {
                break;
            }
            if self.memory_count == MAX_MEMORY_ENTRIES {
                return Err(BootParamsError::TooManyEntries);
            }
            let start = e
                .starting_gpa_page_number
                .checked_mul(PAGE_SIZE)
                .ok_or(BootParamsError::BadMemoryEntry(i))?;
            let end = e
                .number_of_pages
                .checked_mul(PAGE_SIZE)
                .and_then(|size| start.checked_add(size))
                .ok_or(BootParamsError::BadMemoryEntry(i))?;
            if e.entry_type > MEMORY_MAP_TYPE_VTL2_PROTECTABLE {
                return Err(BootParamsError::BadMemoryEntry(i));
            }
            if i > 0 && start < previous_end {
                return Err(BootParamsError::MemoryMapUnsorted(i));
            }
            previous_end = end;
            self.memory[self.memory_count] = e;
            self.memory_count += 1;
        }
        let svsm = self.block.svsm;
        let in_ram = self
            .memory_map()
            .iter()
            .any(|e| e.entry_type == MEMORY_MAP_TYPE_MEMORY && inside(entry_range(e), svsm));
        if !in_ram {
            return Err(BootParamsError::SvsmNotInRam);
        }
        Ok(())
    }

    fn read_madt(&mut self, madt: &[u8]) -> Result<(), BootParamsError> {
        let count = self.vcpu_count as usize;
        if self.block.madt.size == 0 || madt.iter().all(|b| *b == 0) {
            for (i, id) in self.apic_ids[..count].iter_mut().enumerate() {
                *id = i as u32;
            }
            return Ok(());
        }
        if madt.len() < MADT_HEADER_SIZE || madt[..4] != MADT_SIGNATURE {
            return Err(BootParamsError::BadMadt);
        }
        let length = u32::from_le_bytes([madt[4], madt[5], madt[6], madt[7]]) as usize;
        if length < MADT_HEADER_SIZE || length > madt.len() {
            return Err(BootParamsError::BadMadt);
        }
        let mut found = 0usize;
        let mut at = MADT_HEADER_SIZE;
        while at < length {
            let kind = madt[at];
            let len = *madt.get(at + 1).ok_or(BootParamsError::BadMadt)? as usize;
            if len < 2 || at + len > length {
                return Err(BootParamsError::BadMadt);
            }
            let entry = &madt[at..at + len];
            let le32 =
                |o: usize| u32::from_le_bytes([entry[o], entry[o + 1], entry[o + 2], entry[o + 3]]);
            let processor = match kind {
                MADT_TYPE_LOCAL_APIC if len >= 8 => Some((u32::from(entry[3]), le32(4))),
                MADT_TYPE_LOCAL_X2APIC if len >= 16 => Some((le32(4), le32(8))),
                MADT_TYPE_LOCAL_APIC | MADT_TYPE_LOCAL_X2APIC => {
                    return Err(BootParamsError::BadMadt)
                }
                _ => None,
            };
            if let Some((id, flags)) = processor {
                if flags & MADT_APIC_ENABLED != 0 {
                    if found == count {
                        return Err(BootParamsError::ApicCount {
                            found: found + 1,
                            expected: self.vcpu_count,
                        });
                    }
                    if self.apic_ids[..found].contains(&id) {
                        return Err(BootParamsError::DuplicateApicId(id));
                    }
                    self.apic_ids[found] = id;
                    found += 1;
                }
            }
            at += len;
        }
        if found != count {
            return Err(BootParamsError::ApicCount {
                found,
                expected: self.vcpu_count,
            });
        }
        Ok(())
    }

    /// The measured block.
    pub fn block(&self) -> &IgvmParamBlock {
        &self.block
    }

    /// The SVSM's memory range.
    pub fn svsm_range(&self) -> MemoryRange {
        self.block.svsm
    }

    /// Free SVSM memory after everything the IGVM file placed.
    pub fn free_range(&self) -> MemoryRange {
        let end = self.block.svsm.base + self.block.svsm.size;
        MemoryRange {
            base: self.block.free_base,
            size: end - self.block.free_base,
        }
    }

    /// The SVSM's secrets page.
    pub fn secrets_gpa(&self) -> u64 {
        self.block.secrets_gpa
    }

    /// The SVSM's CPUID page.
    pub fn cpuid_gpa(&self) -> u64 {
        self.block.cpuid_gpa
    }

    /// The guest VMPL.
    pub fn guest_vmpl(&self) -> u32 {
        self.block.guest_vmpl
    }

    /// The firmware to launch, if the file carries one.
    pub fn firmware(&self) -> Option<&FirmwareInfo> {
        (self.block.flags & PARAM_FLAG_FIRMWARE != 0).then_some(&self.block.firmware)
    }

    /// The number of vCPUs.
    pub fn vcpu_count(&self) -> u32 {
        self.vcpu_count
    }

    /// Whether memory outside the IGVM file starts out shared (needs a page-state change).
    pub fn memory_is_shared(&self) -> bool {
        self.memory_shared
    }

    /// The vCPUs' APIC IDs, the BSP's first.
    pub fn apic_ids(&self) -> &[u32] {
        &self.apic_ids[..self.vcpu_count as usize]
    }

    /// The host's memory map, checked.
    pub fn memory_map(&self) -> &[MemoryMapEntry] {
        &self.memory[..self.memory_count]
    }

    /// The memory map the guest sees: the host's, with the SVSM range reserved. Returns
    /// the number of entries written to `out`.
    pub fn guest_memory_map(&self, out: &mut [MemoryMapEntry]) -> Result<usize, BootParamsError> {
        let svsm = self.block.svsm;
        let mut n = 0;
        let mut push = |base: u64, end: u64, entry_type: u16| {
            if end <= base {
                return Ok(());
            }
            let slot = out.get_mut(n).ok_or(BootParamsError::TooManyEntries)?;
            *slot = MemoryMapEntry {
                starting_gpa_page_number: base / PAGE_SIZE,
                number_of_pages: (end - base) / PAGE_SIZE,
                entry_type,
                flags: 0,
                reserved: 0,
            };
            n += 1;
            Ok(())
        };
        let svsm_end = svsm.base + svsm.size;
        for e in self.memory_map() {
            let r = entry_range(e);
            let end = r.base + r.size;
            if !overlaps(r, svsm) {
                push(r.base, end, e.entry_type)?;
                continue;
            }
            push(r.base, svsm.base.max(r.base).min(end), e.entry_type)?;
            push(
                svsm.base.max(r.base),
                svsm_end.min(end),
                MEMORY_MAP_TYPE_PLATFORM_RESERVED,
            )?;
            push(svsm_end.min(end).max(r.base), end, e.entry_type)?;
        }
        Ok(n)
    }
}

impl BootParams {
    /// Where the firmware reads the guest's memory map, if it takes one (OVMF's IGVM
    /// parameter area), and the bytes to write there: [`Self::guest_memory_map`] (the
    /// SVSM's range reserved) as `IGVM_VHS_MEMORY_MAP_ENTRY` records, then zeros to the
    /// area's end, so the list always ends with an entry of no pages. `buf` must hold the
    /// area. Write them after the firmware's SNP_SEC_MEM ranges are validated and zeroed
    /// and before the firmware runs.
    pub fn firmware_memory_map<'a>(
        &self,
        buf: &'a mut [u8],
    ) -> Result<Option<(u64, &'a [u8])>, BootParamsError> {
        let area = self.block.firmware_memory_map;
        if self.firmware().is_none() || area.size == 0 {
            return Ok(None);
        }
        let len = usize::try_from(area.size).map_err(|_| BootParamsError::TooManyEntries)?;
        let out = buf.get_mut(..len).ok_or(BootParamsError::TooManyEntries)?;
        out.fill(0);
        let entry_size = core::mem::size_of::<MemoryMapEntry>();
        // One entry stays zero: the firmware reads until it finds no pages.
        let capacity = (len / entry_size).saturating_sub(1);
        let mut entries = [MemoryMapEntry::default(); MAX_MEMORY_ENTRIES * 3];
        let n = self.guest_memory_map(&mut entries)?;
        if n > capacity {
            return Err(BootParamsError::TooManyEntries);
        }
        for (slot, e) in out.chunks_exact_mut(entry_size).zip(entries.iter().take(n)) {
            slot.copy_from_slice(zerocopy::IntoBytes::as_bytes(e));
        }
        Ok(Some((area.base, out)))
    }
}

fn entry_range(e: &MemoryMapEntry) -> MemoryRange {
    MemoryRange {
        base: e.starting_gpa_page_number * PAGE_SIZE,
        size: e.number_of_pages * PAGE_SIZE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svsm_protocol::igvm_params::DEFAULT_GUEST_VMPL;
    use zerocopy::IntoBytes;

    const SVSM: u64 = 0x4000_0000;

    fn block() -> IgvmParamBlock {
        IgvmParamBlock {
            magic: PARAM_BLOCK_MAGIC,
            version: PARAM_BLOCK_VERSION,
            size: core::mem::size_of::<IgvmParamBlock>() as u32,
            svsm: MemoryRange {
                base: SVSM,
                size: 0x100_0000,
            },
            kernel: MemoryRange {
                base: SVSM,
                size: 0x5000,
            },
            secrets_gpa: SVSM + 0x6000,
            cpuid_gpa: SVSM + 0x7000,
            param_page_gpa: SVSM + 0x8000,
            memory_map: MemoryRange {
                base: SVSM + 0x9000,
                size: 0x1000,
            },
            madt: MemoryRange {
                base: SVSM + 0xA000,
                size: 0x1000,
            },
            free_base: SVSM + 0xB000,
            guest_vmpl: DEFAULT_GUEST_VMPL,
            flags: 0,
            firmware: FirmwareInfo::default(),
            firmware_memory_map: MemoryRange::default(),
        }
    }

    fn entry(base: u64, size: u64, entry_type: u16) -> MemoryMapEntry {
        MemoryMapEntry {
            starting_gpa_page_number: base / PAGE_SIZE,
            number_of_pages: size / PAGE_SIZE,
            entry_type,
            flags: 0,
            reserved: 0,
        }
    }

    fn map(entries: &[MemoryMapEntry]) -> [u8; 4096] {
        let mut page = [0u8; 4096];
        let bytes = entries.as_bytes();
        page[..bytes.len()].copy_from_slice(bytes);
        page
    }

    fn qemu_map() -> [u8; 4096] {
        map(&[
            entry(0, 0x80000000, MEMORY_MAP_TYPE_MEMORY),
            entry(0xfeffc000, 0x4000, MEMORY_MAP_TYPE_PLATFORM_RESERVED),
        ])
    }

    fn param_page(vcpus: u32, environment: u32) -> [u8; 8] {
        IgvmParamPage {
            vcpu_count: vcpus,
            environment,
        }
        .as_bytes()
        .try_into()
        .unwrap()
    }

    fn madt(entries: &[&[u8]]) -> [u8; 4096] {
        let mut t = [0u8; 4096];
        t[..4].copy_from_slice(b"APIC");
        let mut at = MADT_HEADER_SIZE;
        for e in entries {
            t[at..at + e.len()].copy_from_slice(e);
            at += e.len();
        }
        t[4..8].copy_from_slice(&(at as u32).to_le_bytes());
        t
    }

    fn lapic(id: u8, enabled: bool) -> [u8; 8] {
        [0, 8, id, id, enabled as u8, 0, 0, 0]
    }

    fn x2apic(id: u32) -> [u8; 16] {
        let mut e = [0u8; 16];
        e[0] = 9;
        e[1] = 16;
        e[4..8].copy_from_slice(&id.to_le_bytes());
        e[8] = 1;
        e
    }

    #[test]
    fn block_is_recognised_and_checked() {
        let b = block();
        assert!(is_param_block(b.as_bytes()));
        assert!(!is_param_block(&0x336e_c578u32.to_le_bytes()));
        assert_eq!(parse_block(b.as_bytes()), Ok(b));
        assert_eq!(
            parse_block(&b.as_bytes()[..100]),
            Err(BootParamsError::Truncated)
        );
        let mut bad = b;
        bad.version = 1; // the layout before the firmware memory map
        assert_eq!(
            parse_block(bad.as_bytes()),
            Err(BootParamsError::BadVersion(1))
        );
        let mut bad = b;
        bad.secrets_gpa = SVSM + 0x2000; // inside the kernel
        assert_eq!(
            parse_block(bad.as_bytes()),
            Err(BootParamsError::Overlap(Region::Kernel, Region::Secrets))
        );
        let mut bad = b;
        bad.cpuid_gpa = 0x1000;
        assert_eq!(
            parse_block(bad.as_bytes()),
            Err(BootParamsError::OutsideSvsm(Region::Cpuid))
        );
        let mut bad = b;
        bad.svsm.size = !0xfff;
        assert_eq!(
            parse_block(bad.as_bytes()),
            Err(BootParamsError::BadRegion(Region::Svsm))
        );
        let mut bad = b;
        bad.guest_vmpl = 0;
        assert_eq!(
            parse_block(bad.as_bytes()),
            Err(BootParamsError::BadGuestVmpl(0))
        );
        let mut bad = b;
        bad.flags = PARAM_FLAG_FIRMWARE;
        bad.firmware.image = MemoryRange {
            base: 0xffc0_0000,
            size: 0x40_0000,
        };
        bad.firmware.caa_gpa = SVSM + 0x20_0000;
        assert_eq!(
            parse_block(bad.as_bytes()),
            Err(BootParamsError::Overlap(
                Region::Svsm,
                Region::FirmwareCallingArea
            ))
        );
    }

    #[test]
    fn host_areas_are_read() {
        let p = BootParams::new(block(), &param_page(2, 1), &qemu_map(), &[0; 4096]).unwrap();
        assert_eq!(p.vcpu_count(), 2);
        assert!(p.memory_is_shared());
        assert_eq!(p.apic_ids(), &[0, 1], "no MADT: sequential APIC IDs");
        assert_eq!(p.memory_map().len(), 2);
        assert_eq!(p.free_range().base, SVSM + 0xB000);
        assert!(p.firmware().is_none());
        let m = madt(&[&lapic(0, true), &lapic(2, false), &x2apic(4)]);
        let p = BootParams::new(block(), &param_page(2, 0), &qemu_map(), &m).unwrap();
        assert_eq!(p.apic_ids(), &[0, 4], "disabled processors are skipped");
    }

    #[test]
    fn bad_host_areas_are_refused() {
        let zero = [0u8; 4096];
        let b = block();
        assert_eq!(
            BootParams::new(b, &param_page(0, 0), &qemu_map(), &zero).unwrap_err(),
            BootParamsError::BadVcpuCount(0)
        );
        assert_eq!(
            BootParams::new(b, &param_page(1000, 0), &qemu_map(), &zero).unwrap_err(),
            BootParamsError::BadVcpuCount(1000)
        );
        let unsorted = map(&[entry(0x1_0000_0000, 0x1000, 0), entry(0, 0x8000_0000, 0)]);
        assert_eq!(
            BootParams::new(b, &param_page(1, 0), &unsorted, &zero).unwrap_err(),
            BootParamsError::MemoryMapUnsorted(1)
        );
        let small = map(&[entry(0, 0x100_0000, 0)]);
        assert_eq!(
            BootParams::new(b, &param_page(1, 0), &small, &zero).unwrap_err(),
            BootParamsError::SvsmNotInRam
        );
        let reserved = map(&[entry(0, 0x8000_0000, MEMORY_MAP_TYPE_PLATFORM_RESERVED)]);
        assert_eq!(
            BootParams::new(b, &param_page(1, 0), &reserved, &zero).unwrap_err(),
            BootParamsError::SvsmNotInRam
        );
        let wraps = map(&[
            entry(0, 0x8000_0000, 0),
            MemoryMapEntry {
                starting_gpa_page_number: u64::MAX / 2,
                number_of_pages: 5,
                entry_type: 0,
                flags: 0,
                reserved: 0,
            },
        ]);
        assert_eq!(
            BootParams::new(b, &param_page(1, 0), &wraps, &zero).unwrap_err(),
            BootParamsError::BadMemoryEntry(1)
        );
        let odd_type = map(&[entry(0, 0x8000_0000, 9)]);
        assert_eq!(
            BootParams::new(b, &param_page(1, 0), &odd_type, &zero).unwrap_err(),
            BootParamsError::BadMemoryEntry(0)
        );
        let m = madt(&[&lapic(0, true)]);
        assert_eq!(
            BootParams::new(b, &param_page(2, 0), &qemu_map(), &m).unwrap_err(),
            BootParamsError::ApicCount {
                found: 1,
                expected: 2
            }
        );
        let m = madt(&[&lapic(3, true), &x2apic(3)]);
        assert_eq!(
            BootParams::new(b, &param_page(2, 0), &qemu_map(), &m).unwrap_err(),
            BootParamsError::DuplicateApicId(3)
        );
        let mut m = madt(&[&lapic(0, true)]);
        m[MADT_HEADER_SIZE + 1] = 0; // entry length 0 would loop forever
        assert_eq!(
            BootParams::new(b, &param_page(1, 0), &qemu_map(), &m).unwrap_err(),
            BootParamsError::BadMadt
        );
        let mut m = madt(&[&lapic(0, true)]);
        m[4..8].copy_from_slice(&10_000u32.to_le_bytes());
        assert_eq!(
            BootParams::new(b, &param_page(1, 0), &qemu_map(), &m).unwrap_err(),
            BootParamsError::BadMadt
        );
        assert_eq!(
            BootParams::new(b, &[0; 4], &qemu_map(), &zero).unwrap_err(),
            BootParamsError::Truncated
        );
    }

    #[test]
    fn guest_map_reserves_the_svsm_range() {
        let p = BootParams::new(block(), &param_page(1, 0), &qemu_map(), &[0; 4096]).unwrap();
        let mut out = [MemoryMapEntry::default(); 8];
        let n = p.guest_memory_map(&mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[
                entry(0, SVSM, MEMORY_MAP_TYPE_MEMORY),
                entry(SVSM, 0x100_0000, MEMORY_MAP_TYPE_PLATFORM_RESERVED),
                entry(
                    SVSM + 0x100_0000,
                    0x8000_0000 - SVSM - 0x100_0000,
                    MEMORY_MAP_TYPE_MEMORY
                ),
                entry(0xfeffc000, 0x4000, MEMORY_MAP_TYPE_PLATFORM_RESERVED),
            ]
        );
        // Every byte of the SVSM range is reserved, nothing else changed size.
        let total: u64 = out[..n].iter().map(|e| e.number_of_pages).sum();
        assert_eq!(total, (0x8000_0000 + 0x4000) / PAGE_SIZE);
        let mut tiny = [MemoryMapEntry::default(); 2];
        assert_eq!(
            p.guest_memory_map(&mut tiny),
            Err(BootParamsError::TooManyEntries)
        );
    }

    /// A block with firmware whose IGVM memory map (OVMF's layout: 8 entries at the start
    /// of its parameter area 0x812000) lies in its third SNP_SEC_MEM range.
    fn block_with_firmware_map(map: MemoryRange) -> IgvmParamBlock {
        let mut b = block();
        b.flags = PARAM_FLAG_FIRMWARE;
        b.firmware.image = MemoryRange {
            base: 0xFFC0_0000,
            size: 0x40_0000,
        };
        b.firmware.sec_mem_count = 2;
        b.firmware.sec_mem[0] = MemoryRange {
            base: 0x80_0000,
            size: 0x9000,
        };
        b.firmware.sec_mem[1] = MemoryRange {
            base: 0x81_1000,
            size: 0x1_F000,
        };
        b.firmware_memory_map = map;
        b
    }

    const OVMF_MAP: MemoryRange = MemoryRange {
        base: 0x81_2000,
        size: 8 * 24,
    };

    #[test]
    fn firmware_memory_map_reserves_the_svsm_range_and_ends_the_list() {
        let b = block_with_firmware_map(OVMF_MAP);
        let p = BootParams::new(b, &param_page(1, 0), &qemu_map(), &[0; 4096]).unwrap();
        let mut buf = [0xEEu8; 4096];
        let (gpa, bytes) = p.firmware_memory_map(&mut buf).unwrap().unwrap();
        assert_eq!((gpa, bytes.len()), (0x81_2000, 8 * 24));
        let mut expected = [MemoryMapEntry::default(); 8];
        let n = p.guest_memory_map(&mut expected).unwrap();
        assert_eq!(n, 4);
        assert_eq!(&bytes[..n * 24], expected[..n].as_bytes());
        assert_eq!(
            expected[1],
            entry(SVSM, 0x100_0000, MEMORY_MAP_TYPE_PLATFORM_RESERVED)
        );
        // Everything after the last entry is zero: the firmware's list ends there.
        assert!(bytes[n * 24..].iter().all(|&b| b == 0));

        // Firmware without a map parameter: nothing to write.
        let p = BootParams::new(
            block_with_firmware_map(MemoryRange::default()),
            &param_page(1, 0),
            &qemu_map(),
            &[0; 4096],
        )
        .unwrap();
        assert_eq!(p.firmware_memory_map(&mut buf), Ok(None));
    }

    #[test]
    fn a_firmware_memory_map_too_small_for_the_guest_map_is_refused() {
        // Room for 4 entries, one of which must stay zero; the guest map has 4.
        let b = block_with_firmware_map(MemoryRange {
            base: 0x81_2000,
            size: 4 * 24,
        });
        let p = BootParams::new(b, &param_page(1, 0), &qemu_map(), &[0; 4096]).unwrap();
        let mut buf = [0u8; 4096];
        assert_eq!(
            p.firmware_memory_map(&mut buf),
            Err(BootParamsError::TooManyEntries)
        );
        // A caller buffer smaller than the area.
        let p = BootParams::new(
            block_with_firmware_map(OVMF_MAP),
            &param_page(1, 0),
            &qemu_map(),
            &[0; 4096],
        )
        .unwrap();
        assert_eq!(
            p.firmware_memory_map(&mut [0u8; 100]),
            Err(BootParamsError::TooManyEntries)
        );
    }

    #[test]
    fn a_misplaced_firmware_memory_map_is_refused() {
        let region = |base, size| MemoryRange { base, size };
        for (map, err) in [
            // Outside every SNP_SEC_MEM range: in the SVSM's own range.
            (
                region(SVSM + 0xC000, 8 * 24),
                BootParamsError::OutsideSvsm(Region::FirmwareMemoryMap),
            ),
            // Straddling the end of an SNP_SEC_MEM range.
            (
                region(0x80_8FF0, 8 * 24),
                BootParamsError::OutsideSvsm(Region::FirmwareMemoryMap),
            ),
            // Room for one entry only: no terminator.
            (
                region(0x81_2000, 24),
                BootParamsError::BadRegion(Region::FirmwareMemoryMap),
            ),
            // More than a page.
            (
                region(0x81_2000, 171 * 24),
                BootParamsError::BadRegion(Region::FirmwareMemoryMap),
            ),
            // Not whole entries, unaligned, wrapping.
            (
                region(0x81_2000, 50),
                BootParamsError::BadRegion(Region::FirmwareMemoryMap),
            ),
            (
                region(0x81_2004, 48),
                BootParamsError::BadRegion(Region::FirmwareMemoryMap),
            ),
            (
                region(u64::MAX - 7, 48),
                BootParamsError::BadRegion(Region::FirmwareMemoryMap),
            ),
        ] {
            let b = block_with_firmware_map(map);
            assert_eq!(parse_block(b.as_bytes()), Err(err), "{map:x?}");
        }
        // A map without firmware.
        let mut b = block();
        b.firmware_memory_map = OVMF_MAP;
        assert_eq!(
            parse_block(b.as_bytes()),
            Err(BootParamsError::BadRegion(Region::FirmwareMemoryMap))
        );
    }
}
