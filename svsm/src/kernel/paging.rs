//! The kernel's page tables: the plan of [`svsm::pagetable`], applied with the `x86_64`
//! crate and installed in CR3.
//!
//! Replaces the entry's static 2 MiB tables with:
//! - an identity map of the kernel's own memory: page 0 unmapped (null pointers fault),
//!   the image with 4 KiB pages by section (text read-only and executable, rodata
//!   read-only, data and bss writable; everything but text no-execute), the guard pages
//!   below the boot stack and the IST stacks unmapped, the rest of its RAM writable and
//!   no-execute with 2 MiB pages; on the PVH path also low memory (the loader's boot
//!   information) and the local APIC page uncached;
//! - a direct map of physical memory at [`svsm::pagetable::DIRECT_MAP_BASE`]: the RAM
//!   on the PVH path; under SEV-SNP the guest's memory from the IGVM memory map (above
//!   4 GiB too), the firmware and the SVSM range, which is where [`SnpPlatform`] reaches
//!   guest memory and VMSAs.
//!
//! Under SEV-SNP every private entry carries the C-bit the entry found in the CPUID
//! page, the guest's memory is not identity mapped at all, and the pages shared with the
//! hypervisor (the GHCB, the PSP message pages, the #HV doorbell) keep their aliases
//! without the C-bit. Table pages come from the heap. After a change to the live
//! tables, [`invalidate`] is the one place that flushes the translation.
//!
//! [`SnpPlatform`]: svsm::platform::snp::SnpPlatform
#![allow(unsafe_code, reason = "installs page tables and reads linker symbols")]

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::vec::Vec;

use svsm::pagetable::{
    self, CbitFrameMapping, EncryptedFrames, EncryptionMask, ImageSections, PhysRange,
};
use svsm_protocol::igvm_params::{MemoryMapEntry, MEMORY_MAP_TYPE_MEMORY, PARAM_FLAG_FIRMWARE};
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::mapper::{
    MapToError, MappedPageTable, TranslateResult, UnmapError,
};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, Page, PageTable, PageTableFlags as Flags, PhysFrame, Size4KiB,
    Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use super::pvh::{BootInfo, Range};

unsafe extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __bss_start: u8;
    static __bss_end: u8;
    static __image_end: u8;
}

/// Where the linker put the image's parts.
#[derive(Debug, Clone, Copy)]
pub struct ImageLayout {
    pub start: u64,
    pub text_end: u64,
    pub rodata_end: u64,
    pub bss_start: u64,
    pub bss_end: u64,
    pub end: u64,
}

/// The image layout from the linker script's symbols.
pub fn image_layout() -> ImageLayout {
    ImageLayout {
        start: core::ptr::addr_of!(__image_start) as u64,
        text_end: core::ptr::addr_of!(__text_end) as u64,
        rodata_end: core::ptr::addr_of!(__rodata_end) as u64,
        bss_start: core::ptr::addr_of!(__bss_start) as u64,
        bss_end: core::ptr::addr_of!(__bss_end) as u64,
        end: core::ptr::addr_of!(__image_end) as u64,
    }
}

/// Allocates zeroed page-table pages from the heap.
#[derive(Debug)]
pub struct HeapFrames;

// SAFETY: each frame is a fresh, zeroed, 4 KiB-aligned heap block that is never freed,
// identity mapped, so its physical address is its address.
unsafe impl FrameAllocator<Size4KiB> for HeapFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let layout = Layout::from_size_align(4096, 4096).ok()?;
        // SAFETY: the layout has non-zero size.
        let page = unsafe { alloc_zeroed(layout) };
        if page.is_null() {
            return None;
        }
        PhysFrame::from_start_address(PhysAddr::new(page as u64)).ok()
    }
}

/// The live page tables, once installed, and the C-bit their private entries carry.
struct Tables {
    table: MappedPageTable<'static, CbitFrameMapping>,
    mask: EncryptionMask,
}

static TABLES: spin::Mutex<Option<Tables>> = spin::Mutex::new(None);

/// Why building the page tables failed.
#[derive(Debug)]
pub enum PagingError {
    /// No memory for a table.
    OutOfMemory,
    /// Mapping the page at this address failed.
    Map(#[allow(dead_code, reason = "read through Debug in the fatal message")] u64),
    /// The C-bit lies outside a page-table entry's address field.
    CbitPosition(#[allow(dead_code, reason = "read through Debug in the fatal message")] u8),
    /// The memory layout cannot be mapped.
    Plan(
        #[allow(dead_code, reason = "read through Debug in the fatal message")]
        pagetable::PlanError,
    ),
}

impl<S: x86_64::structures::paging::PageSize> From<MapToError<S>> for PagingError {
    fn from(e: MapToError<S>) -> Self {
        match e {
            MapToError::FrameAllocationFailed => Self::OutOfMemory,
            _ => Self::Map(0),
        }
    }
}

fn phys_range(r: &Range) -> PhysRange {
    PhysRange {
        start: r.start,
        end: r.end,
    }
}

/// What the direct map covers: the RAM on the PVH path; under an IGVM launch the
/// guest's memory map, the firmware image and the SVSM range.
fn direct_ranges(info: &BootInfo) -> Vec<PhysRange> {
    let Some(params) = info.igvm() else {
        return info.ram().iter().map(phys_range).collect();
    };
    let mut map = [MemoryMapEntry::default(); 64];
    let n = params.guest_memory_map(&mut map).unwrap_or(0);
    let page = 4096u64;
    let mut ranges: Vec<PhysRange> = map
        .iter()
        .take(n)
        .filter(|e| e.entry_type == MEMORY_MAP_TYPE_MEMORY)
        .map(|e| PhysRange {
            start: e.starting_gpa_page_number.saturating_mul(page),
            end: e
                .starting_gpa_page_number
                .saturating_add(e.number_of_pages)
                .saturating_mul(page),
        })
        .collect();
    let block = params.block();
    if block.flags & PARAM_FLAG_FIRMWARE != 0 {
        let image = block.firmware.image;
        ranges.push(PhysRange {
            start: image.base,
            end: image.base.saturating_add(image.size),
        });
    }
    let svsm = params.svsm_range();
    ranges.push(PhysRange {
        start: svsm.base,
        end: svsm.base.saturating_add(svsm.size),
    });
    ranges
}

/// Whether the CPU maps 1 GiB pages (CPUID 0x8000_0001 EDX[26], AMD APM vol. 3
/// "CPUID Fn8000_0001_EDX"). Under SEV-SNP the #VC handler answers from the CPUID page.
fn has_1g_pages() -> bool {
    let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    max >= 0x8000_0001 && core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0
}

/// Builds the kernel's page tables and switches to them. `guards` stay unmapped;
/// `apic_base` is the xAPIC page to map uncached (none under SEV-SNP).
pub fn init(info: &BootInfo, guards: &[u64], apic_base: Option<u64>) -> Result<(), PagingError> {
    let layout = image_layout();
    let cbit = svsm::arch::snp::early::cbit();
    let mask = match cbit {
        None => EncryptionMask::NONE,
        Some(position) => {
            EncryptionMask::from_cbit(position).ok_or(PagingError::CbitPosition(position))?
        }
    };
    let mut identity: Vec<PhysRange> = info.ram().iter().map(phys_range).collect();
    if let Some(params) = info.igvm() {
        let svsm = params.svsm_range();
        identity.push(PhysRange {
            start: svsm.base,
            end: svsm.base.saturating_add(svsm.size),
        });
    }
    let mut shared = Vec::new();
    if cbit.is_some() {
        let (ghcb, alias) = svsm::arch::snp::early::ghcb_addresses();
        shared.push((alias as u64, ghcb));
        for (page, alias) in svsm::arch::snp::early::message_page_addresses() {
            shared.push((alias as u64, page));
        }
        let (doorbell, alias) = svsm::arch::snp::early::doorbell_page_addresses();
        shared.push((alias as u64, doorbell));
    }
    let direct = direct_ranges(info);
    let mmio: Vec<u64> = apic_base.into_iter().collect();
    let runs = pagetable::plan(&pagetable::Layout {
        image: ImageSections {
            start: layout.start,
            text_end: layout.text_end,
            rodata_end: layout.rodata_end,
            end: layout.end,
        },
        low_memory: info.igvm().is_none(),
        identity: &identity,
        guards,
        shared: &shared,
        mmio: &mmio,
        direct: &direct,
        huge_1g: has_1g_pages(),
    })
    .map_err(PagingError::Plan)?;

    let pml4_frame = HeapFrames
        .allocate_frame()
        .ok_or(PagingError::OutOfMemory)?;
    let pml4_ptr = pml4_frame.start_address().as_u64() as *mut PageTable;
    // SAFETY: a fresh zeroed page owned by the page tables from now on; identity mapped.
    let pml4 = unsafe { &mut *pml4_ptr };
    // SAFETY: table pages come from the heap, identity mapped (offset 0) by the boot
    // tables and by the ones built here; the mapping strips the C-bit.
    let mut table = unsafe { MappedPageTable::new(pml4, CbitFrameMapping { mask, offset: 0 }) };
    // SAFETY: the tables are not live yet.
    unsafe { pagetable::apply(&mut table, &runs, mask, &mut HeapFrames) }.map_err(|e| match e {
        pagetable::ApplyError::OutOfMemory => PagingError::OutOfMemory,
        pagetable::ApplyError::Map(at) => PagingError::Map(at),
    })?;

    let root = PhysFrame::from_start_address(PhysAddr::new(mask.private(pml4_ptr as u64)))
        .map_err(|_| PagingError::Map(pml4_ptr as u64))?;
    // SAFETY: the new tables map everything the kernel touches from here on (its image,
    // stacks except guard pages, the heap, the APIC, the shared GHCB alias) at the same
    // addresses as before (AMD APM vol. 2 §5.3 "Long-mode page translation"); CR3
    // carries the C-bit like every other private table address (§7.10.1; the walk is
    // private either way, §15.36.10).
    unsafe { Cr3::write(root, Cr3Flags::empty()) };
    *TABLES.lock() = Some(Tables { table, mask });
    let direct: u64 = runs
        .iter()
        .filter(|r| r.kind == pagetable::Kind::DirectMap)
        .map(|r| r.len)
        .sum();
    log::info!(
        "paging: kernel tables live; direct map of {} MiB at {:#x}; C-bit {}",
        direct >> 20,
        pagetable::DIRECT_MAP_BASE,
        cbit.map_or("none".into(), |c| alloc::format!(
            "{c} in every private entry"
        ))
    );
    Ok(())
}

/// Which CPUs may hold a translation that a change to the live tables made stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stale {
    /// A mapping was added where there was none: no CPU caches a not-present entry,
    /// so this CPU's flush is enough.
    ThisCpu,
    /// A mapping was removed or changed: any CPU may still hold it.
    AllCpus,
}

/// The one place the kernel drops a stale translation after changing the live tables:
/// on this CPU and, when a mapping was removed or changed, on every CPU before it
/// returns (`svsm::smp::shootdown`: INVLPGB or IPIs with acknowledgements; a CPU that
/// cannot be reached ends the SVSM, since it could keep using the old translation).
/// Called without the tables' lock: another CPU may be waiting for it with interrupts
/// masked.
fn invalidate(virt: VirtAddr, stale: Stale) {
    if stale == Stale::ThisCpu {
        x86_64::instructions::tlb::flush(virt);
        return;
    }
    let request = svsm::smp::tlb::FlushRequest::Pages {
        start: virt.as_u64(),
        count: 1,
    };
    if let Err(e) = svsm::smp::shootdown(request) {
        super::exit::terminate(format_args!("TLB shootdown for {virt:#x} failed: {e}"));
    }
}

/// What the live page tables say about `address`: the physical address (without the
/// C-bit) and flags.
pub fn translate(address: u64) -> Option<(u64, Flags)> {
    let guard = TABLES.lock();
    let tables = guard.as_ref()?;
    match tables.table.translate(VirtAddr::try_new(address).ok()?) {
        TranslateResult::Mapped {
            frame,
            offset,
            flags,
        } => Some((
            tables.mask.strip(frame.start_address().as_u64()) + offset,
            flags,
        )),
        _ => None,
    }
}

/// Maps the 4 KiB page at `virt` to `phys` (private, writable, no-execute) in the live
/// tables.
///
/// # Safety
/// `phys` must be memory the caller owns, and `virt` must not be in use.
pub unsafe fn map_page(virt: u64, phys: u64) -> Result<(), PagingError> {
    // SAFETY: the caller's promise.
    unsafe { map_4k(virt, phys, true) }
}

/// Maps the 4 KiB page at `virt` to `phys` without the C-bit (writable, no-execute):
/// the alias through which the SVSM and the hypervisor share a page (a vCPU's GHCB, a
/// #HV doorbell page). Without SEV it is an ordinary mapping.
///
/// # Safety
/// As for [`map_page`]; under SEV-SNP `phys` must also have been made shared (PVALIDATE
/// rescinded, page state change to shared) before anything accesses the alias.
pub unsafe fn map_shared_page(virt: u64, phys: u64) -> Result<(), PagingError> {
    // SAFETY: the caller's promise.
    unsafe { map_4k(virt, phys, false) }
}

/// # Safety
/// As for [`map_page`].
unsafe fn map_4k(virt: u64, phys: u64, private: bool) -> Result<(), PagingError> {
    let mut guard = TABLES.lock();
    let tables = guard.as_mut().ok_or(PagingError::Map(virt))?;
    let mask = tables.mask;
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
    let address = if private { mask.private(phys) } else { phys };
    let frame = PhysFrame::containing_address(PhysAddr::new(address));
    let flags = Flags::PRESENT | Flags::WRITABLE | Flags::NO_EXECUTE;
    let mut frames = EncryptedFrames {
        frames: &mut HeapFrames,
        mask,
    };
    // SAFETY: the caller owns `phys` and `virt` is unused; the entry follows AMD APM
    // vol. 2 §5.4, with the C-bit (§7.10.1) only on a private mapping.
    unsafe {
        tables.table.map_to_with_table_flags(
            page,
            frame,
            flags,
            Flags::PRESENT | Flags::WRITABLE,
            &mut frames,
        )
    }?
    .ignore();
    drop(guard);
    // `map_to` refuses a page that is already mapped: this only adds a translation.
    invalidate(page.start_address(), Stale::ThisCpu);
    Ok(())
}

/// Whether the live tables map `address` through the C-bit (`None` if unmapped).
pub fn is_private(address: u64) -> Option<bool> {
    let guard = TABLES.lock();
    let tables = guard.as_ref()?;
    match tables.table.translate(VirtAddr::try_new(address).ok()?) {
        TranslateResult::Mapped { frame, .. } => {
            let mask = tables.mask.bits();
            Some(mask != 0 && frame.start_address().as_u64() & mask == mask)
        }
        _ => None,
    }
}

/// Unmaps the 4 KiB page at `virt` from the live tables, and invalidates it in every
/// CPU's TLB before returning.
pub fn unmap_page(virt: u64) -> Result<(), UnmapError> {
    let mut guard = TABLES.lock();
    let Some(tables) = guard.as_mut() else {
        return Err(UnmapError::PageNotMapped);
    };
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
    tables.table.unmap(page).map(|(_, flush)| flush.ignore())?;
    drop(guard);
    invalidate(page.start_address(), Stale::AllCpus);
    Ok(())
}
