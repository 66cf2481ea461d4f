//! The kernel's page tables as a plan: what is mapped where, with which flags, and
//! whether through SEV's encryption bit (the C-bit).
//!
//! [`plan`] turns the kernel's memory layout into [`Run`]s of equal mappings; [`apply`]
//! writes them into tables the `x86_64` crate manages. Both run on the host, where the
//! tests check the result entry by entry against the long-mode page-table formats of
//! AMD APM vol. 2 §5.3 "Long-Mode Page Translation" and §5.4 "Page-Translation-Table
//! Entry Fields" (bit 0 P, bit 1 R/W, bit 3 PWT, bit 4 PCD, bit 7 PS in a PDPE or PDE,
//! bits 51:12 the physical base, bit 63 NX).
//!
//! The address space has two parts:
//! - an identity map of the SVSM's own memory: the image by section (text read-only and
//!   executable, rodata read-only, data and bss writable; only text executable), the
//!   guard pages left out, the heap writable, and the few pages the SVSM shares with the
//!   hypervisor (the GHCB, the PSP message pages) mapped *without* the C-bit at their
//!   alias addresses;
//! - a direct map of physical memory at [`DIRECT_MAP_BASE`] (`phys + DIRECT_MAP_BASE`):
//!   the guest's RAM from the IGVM memory map, including RAM above 4 GiB, the firmware
//!   and the SVSM range, private (C-bit), writable, never executable, in 1 GiB and 2 MiB
//!   pages where alignment allows. The SEV-SNP platform reaches guest memory and VMSAs
//!   only there. A permanent direct map needs no page-table change per access, so no TLB
//!   shootdown on the request path and no per-CPU mapping slots; a page the guest or
//!   host takes away under it faults on access, which the exception table turns into an
//!   error (Linux keeps its whole direct map private the same way).
//!
//! Under SEV, every private mapping carries the C-bit in its physical address (APM vol.
//! 2 §7.10.1 "Determining Support for Secure Memory Encryption": the position is CPUID
//! 0x8000_001F EBX[5:0], bit 51 on Milan and Genoa), including the entries that point at
//! lower-level tables; shared mappings leave it clear. The `x86_64` crate's walker reads
//! a table's address out of its parent entry, so [`CbitFrameMapping`] strips the bit
//! before turning that address into a pointer.
#![allow(
    unsafe_code,
    reason = "implements the x86_64 crate's unsafe page-table traits"
)]

use alloc::vec::Vec;

use x86_64::structures::paging::mapper::{MapToError, PageTableFrameMapping};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, Page, PageSize, PageTable, PageTableFlags as Flags, PhysFrame,
    Size1GiB, Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

/// Where the direct map of physical memory starts: PML4 slot 256, the first canonical
/// upper-half address.
pub const DIRECT_MAP_BASE: u64 = 0xFFFF_8000_0000_0000;
/// How much physical memory the direct map can cover (64 TiB, PML4 slots 256..384).
pub const DIRECT_MAP_SIZE: u64 = 1 << 46;

const SIZE_4K: u64 = 0x1000;
const SIZE_2M: u64 = 0x20_0000;
const SIZE_1G: u64 = 0x4000_0000;

/// The C-bit as a mask on physical addresses and page-table entries; empty without SEV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncryptionMask(u64);

impl EncryptionMask {
    /// No encryption bit (not an SEV guest).
    pub const NONE: Self = Self(0);

    /// The mask for C-bit `position` (CPUID 0x8000_001F EBX[5:0]). Only positions in
    /// the address field above 4 GiB (bits 32..=51) are accepted.
    pub const fn from_cbit(position: u8) -> Option<Self> {
        if position >= 32 && position <= 51 {
            Some(Self(1 << position))
        } else {
            None
        }
    }

    /// The mask's bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// `phys` as a private (encrypted) address.
    pub const fn private(self, phys: u64) -> u64 {
        phys | self.0
    }

    /// The physical address an entry's address field names, without the C-bit.
    pub const fn strip(self, addr: u64) -> u64 {
        addr & !self.0
    }
}

/// What a mapping is for, which fixes its flags and whether it is private.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Kernel code: read-only, executable.
    Text,
    /// Read-only data.
    ReadOnly,
    /// Writable kernel data, stacks, heap.
    Data,
    /// A page shared with the hypervisor (GHCB, PSP messages): writable, no C-bit.
    Shared,
    /// Device registers (the xAPIC): writable, uncached, no C-bit.
    Mmio,
    /// The direct map of physical memory: writable, private.
    DirectMap,
}

impl Kind {
    /// The entry flags (without the C-bit, which sits in the address).
    pub fn flags(self) -> Flags {
        let rw = Flags::PRESENT | Flags::WRITABLE | Flags::NO_EXECUTE;
        match self {
            Kind::Text => Flags::PRESENT,
            Kind::ReadOnly => Flags::PRESENT | Flags::NO_EXECUTE,
            Kind::Data | Kind::Shared | Kind::DirectMap => rw,
            Kind::Mmio => rw | Flags::NO_CACHE | Flags::WRITE_THROUGH,
        }
    }

    /// Whether the mapping carries the C-bit.
    pub fn private(self) -> bool {
        !matches!(self, Kind::Shared | Kind::Mmio)
    }
}

/// The page size of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapSize {
    /// 4 KiB (PTE).
    Size4K,
    /// 2 MiB (PDE with PS).
    Size2M,
    /// 1 GiB (PDPE with PS).
    Size1G,
}

impl MapSize {
    /// Bytes per page.
    pub const fn bytes(self) -> u64 {
        match self {
            MapSize::Size4K => SIZE_4K,
            MapSize::Size2M => SIZE_2M,
            MapSize::Size1G => SIZE_1G,
        }
    }
}

/// `len` bytes at `virt` mapped to `phys` with pages of one size and one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First virtual address.
    pub virt: u64,
    /// First physical address (without the C-bit).
    pub phys: u64,
    /// Length in bytes, a multiple of the page size.
    pub len: u64,
    /// The page size.
    pub page: MapSize,
    /// What the run maps.
    pub kind: Kind,
}

/// A physical range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Where the linker put the image's sections (all 4 KiB aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSections {
    /// Start of text.
    pub start: u64,
    /// End of text, start of rodata.
    pub text_end: u64,
    /// End of rodata, start of data.
    pub rodata_end: u64,
    /// End of the image (data and bss).
    pub end: u64,
}

/// What the kernel maps.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    /// The kernel image.
    pub image: ImageSections,
    /// Identity-map `[4 KiB, image start)` writable (the PVH loader's boot information
    /// lives there); off under SEV-SNP, where that memory is the guest's.
    pub low_memory: bool,
    /// The SVSM's RAM, identity mapped writable (heap, the SVSM range).
    pub identity: &'a [PhysRange],
    /// Pages left unmapped (stack guards).
    pub guards: &'a [u64],
    /// Shared aliases: `(virtual, physical)` pages mapped without the C-bit.
    pub shared: &'a [(u64, u64)],
    /// Device pages, identity mapped uncached.
    pub mmio: &'a [u64],
    /// Physical memory for the direct map.
    pub direct: &'a [PhysRange],
    /// Whether the CPU has 1 GiB pages (CPUID 0x8000_0001 EDX[26]).
    pub huge_1g: bool,
}

/// Why a layout cannot be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// Physical memory at this address lies beyond what the direct map covers.
    BeyondDirectMap(u64),
    /// The image's section addresses are not ordered and page aligned.
    BadImage,
}

/// Sorted, merged ranges, shrunk inward to whole 4 KiB pages; empty ones dropped.
pub fn normalize(ranges: &[PhysRange]) -> Vec<PhysRange> {
    let mut pages: Vec<PhysRange> = ranges
        .iter()
        .map(|r| PhysRange {
            start: r.start.saturating_add(SIZE_4K - 1) & !(SIZE_4K - 1),
            end: r.end & !(SIZE_4K - 1),
        })
        .filter(|r| r.start < r.end)
        .collect();
    pages.sort_by_key(|r| r.start);
    let mut merged: Vec<PhysRange> = Vec::with_capacity(pages.len());
    for r in pages {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

fn push(runs: &mut Vec<Run>, virt: u64, phys: u64, page: MapSize, kind: Kind) {
    let size = page.bytes();
    if let Some(last) = runs.last_mut() {
        if last.kind == kind
            && last.page == page
            && last.virt + last.len == virt
            && last.phys + last.len == phys
        {
            last.len += size;
            return;
        }
    }
    runs.push(Run {
        virt,
        phys,
        len: size,
        page,
        kind,
    });
}

/// The largest page that maps `at` within `[at, end)` given the allowed sizes.
fn page_at(at: u64, end: u64, huge_1g: bool) -> MapSize {
    let fits = |size: u64| at % size == 0 && end - at >= size;
    if huge_1g && fits(SIZE_1G) {
        MapSize::Size1G
    } else if fits(SIZE_2M) {
        MapSize::Size2M
    } else {
        MapSize::Size4K
    }
}

/// The runs that map `layout`, identity part first, then the direct map.
pub fn plan(layout: &Layout<'_>) -> Result<Vec<Run>, PlanError> {
    let image = layout.image;
    let aligned = [image.start, image.text_end, image.rodata_end, image.end]
        .iter()
        .all(|a| a % SIZE_4K == 0);
    let ordered = image.start <= image.text_end
        && image.text_end <= image.rodata_end
        && image.rodata_end <= image.end;
    if !(aligned && ordered) {
        return Err(PlanError::BadImage);
    }
    let identity = normalize(layout.identity);
    let in_identity = |a: u64| identity.iter().any(|r| r.start <= a && a < r.end);
    let mut runs = Vec::new();

    // Up to the 2 MiB boundary above the image: 4 KiB pages, so sections, guards and
    // aliases get their own permissions. Page 0 stays unmapped (null pointers fault).
    let low_end = image.end.div_ceil(SIZE_2M) * SIZE_2M;
    for page in (SIZE_4K..low_end).step_by(SIZE_4K as usize) {
        let (phys, kind) = if layout.guards.contains(&page) {
            continue;
        } else if let Some(&(_, phys)) = layout.shared.iter().find(|(v, _)| *v == page) {
            (phys, Kind::Shared)
        } else if layout.mmio.contains(&page) {
            (page, Kind::Mmio)
        } else if (image.start..image.text_end).contains(&page) {
            (page, Kind::Text)
        } else if (image.text_end..image.rodata_end).contains(&page) {
            (page, Kind::ReadOnly)
        } else if (image.rodata_end..image.end).contains(&page)
            || in_identity(page)
            || (layout.low_memory && page < image.start)
        {
            (page, Kind::Data)
        } else {
            continue;
        };
        push(&mut runs, page, phys, MapSize::Size4K, kind);
    }
    // The rest of the SVSM's RAM: 2 MiB pages where whole, 4 KiB at unaligned ends.
    for range in &identity {
        let mut at = range.start.max(low_end);
        while at < range.end {
            let page = page_at(at, range.end, false);
            push(&mut runs, at, at, page, Kind::Data);
            at += page.bytes();
        }
    }
    for &page in layout.mmio.iter().filter(|&&p| p >= low_end) {
        push(&mut runs, page, page, MapSize::Size4K, Kind::Mmio);
    }
    // The direct map.
    for range in normalize(layout.direct) {
        if range.end > DIRECT_MAP_SIZE {
            return Err(PlanError::BeyondDirectMap(range.start.max(DIRECT_MAP_SIZE)));
        }
        let mut at = range.start;
        while at < range.end {
            let page = page_at(at, range.end, layout.huge_1g);
            push(&mut runs, DIRECT_MAP_BASE + at, at, page, Kind::DirectMap);
            at += page.bytes();
        }
    }
    Ok(runs)
}

/// Lets the `x86_64` crate's walker reach tables whose entries carry the C-bit: page
/// tables live at `phys + offset` (the kernel's are identity mapped, offset 0).
#[derive(Debug, Clone, Copy)]
pub struct CbitFrameMapping {
    /// The C-bit to strip from table addresses.
    pub mask: EncryptionMask,
    /// Where table frames are mapped relative to their physical address.
    pub offset: u64,
}

// SAFETY: the constructor's caller (see `CbitFrameMapping` users) maps every table frame
// at `phys + offset`; stripping the C-bit recovers `phys` from an entry's address field
// (APM vol. 2 §7.10.1: the C-bit is an address bit only to the page walk).
unsafe impl PageTableFrameMapping for CbitFrameMapping {
    fn frame_to_pointer(&self, frame: PhysFrame) -> *mut PageTable {
        let phys = self.mask.strip(frame.start_address().as_u64());
        phys.wrapping_add(self.offset) as *mut PageTable
    }
}

/// Hands out an allocator's frames with the C-bit set, so the entries that point at
/// new tables are private like the tables themselves.
#[derive(Debug)]
pub struct EncryptedFrames<'a, A> {
    /// The allocator of zeroed, unused frames.
    pub frames: &'a mut A,
    /// The C-bit.
    pub mask: EncryptionMask,
}

// SAFETY: every frame comes from `frames` (which promises unused frames) and only gains
// the C-bit, which changes how the CPU accesses it, not which frame it is.
unsafe impl<A: FrameAllocator<Size4KiB>> FrameAllocator<Size4KiB> for EncryptedFrames<'_, A> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let frame = self.frames.allocate_frame()?;
        let address = self.mask.private(frame.start_address().as_u64());
        PhysFrame::from_start_address(PhysAddr::try_new(address).ok()?).ok()
    }
}

/// Why applying a plan failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyError {
    /// No frame for a new table.
    OutOfMemory,
    /// The page at this virtual address could not be mapped (already mapped, or an
    /// address the types refuse).
    Map(u64),
}

fn map_error<S: PageSize>(virt: u64) -> impl Fn(MapToError<S>) -> ApplyError {
    move |e| match e {
        MapToError::FrameAllocationFailed => ApplyError::OutOfMemory,
        _ => ApplyError::Map(virt),
    }
}

/// The entry address for `phys` mapped as `kind`.
fn frame_address(
    mask: EncryptionMask,
    phys: u64,
    kind: Kind,
    virt: u64,
) -> Result<PhysAddr, ApplyError> {
    let address = if kind.private() {
        mask.private(phys)
    } else {
        phys
    };
    PhysAddr::try_new(address).map_err(|_| ApplyError::Map(virt))
}

fn virt_addr(virt: u64) -> Result<VirtAddr, ApplyError> {
    VirtAddr::try_new(virt).map_err(|_| ApplyError::Map(virt))
}

/// Flags of the entries that point at lower-level tables: present and writable, so the
/// leaf entry alone decides the access (as Linux's `_KERNPG_TABLE` does); NX clear for
/// the same reason.
const TABLE_FLAGS: Flags = Flags::PRESENT.union(Flags::WRITABLE);

/// Writes `runs` into `table`, private runs with `mask`'s C-bit, table frames from
/// `frames` (zeroed, identity reachable through the table's frame mapping). No TLB
/// flush: the tables are meant to be loaded afterwards.
///
/// # Safety
/// `table` must not be the live page table, or every run must map memory exactly as it
/// is already used; `frames` must yield unused frames.
pub unsafe fn apply<M, A>(
    table: &mut M,
    runs: &[Run],
    mask: EncryptionMask,
    frames: &mut A,
) -> Result<(), ApplyError>
where
    M: Mapper<Size4KiB> + Mapper<Size2MiB> + Mapper<Size1GiB>,
    A: FrameAllocator<Size4KiB>,
{
    let mut frames = EncryptedFrames { frames, mask };
    for run in runs {
        let size = run.page.bytes();
        let mut done = 0;
        while done < run.len {
            let (virt, phys) = (run.virt + done, run.phys + done);
            let address = frame_address(mask, phys, run.kind, virt)?;
            let page_virt = virt_addr(virt)?;
            let flags = run.kind.flags();
            // SAFETY (each arm): writes one leaf entry, and any missing table entries
            // above it, in the format of AMD APM vol. 2 §5.3-§5.4; the caller guarantees
            // the table is not live (or the mapping matches its use), and the frames are
            // the run's.
            match run.page {
                MapSize::Size4K => {
                    let page = Page::<Size4KiB>::containing_address(page_virt);
                    let frame = PhysFrame::<Size4KiB>::containing_address(address);
                    // SAFETY: see above.
                    unsafe {
                        table.map_to_with_table_flags(page, frame, flags, TABLE_FLAGS, &mut frames)
                    }
                    .map(|f| f.ignore())
                    .map_err(map_error(virt))?
                }
                MapSize::Size2M => {
                    let page = Page::<Size2MiB>::containing_address(page_virt);
                    let frame = PhysFrame::<Size2MiB>::containing_address(address);
                    let flags = flags | Flags::HUGE_PAGE;
                    // SAFETY: see above.
                    unsafe {
                        table.map_to_with_table_flags(page, frame, flags, TABLE_FLAGS, &mut frames)
                    }
                    .map(|f| f.ignore())
                    .map_err(map_error(virt))?
                }
                MapSize::Size1G => {
                    let page = Page::<Size1GiB>::containing_address(page_virt);
                    let frame = PhysFrame::<Size1GiB>::containing_address(address);
                    let flags = flags | Flags::HUGE_PAGE;
                    // SAFETY: see above.
                    unsafe {
                        table.map_to_with_table_flags(page, frame, flags, TABLE_FLAGS, &mut frames)
                    }
                    .map(|f| f.ignore())
                    .map_err(map_error(virt))?
                }
            }
            done += size;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
