//! The kernel's page tables, built with the `x86_64` crate, identity mapped.
//!
//! Replaces the entry's static 2 MiB tables: page 0 is unmapped (null pointers fault),
//! the image is mapped with 4 KiB pages by section (text read-only and executable,
//! rodata read-only, data and bss writable; everything but text is no-execute), the
//! guard pages below the boot stack and the IST stacks are unmapped, the rest of RAM is
//! mapped writable and no-execute with 2 MiB pages, and the local APIC page uncached.
//! Table pages come from the heap.
#![allow(unsafe_code, reason = "installs page tables and reads linker symbols")]

use alloc::alloc::{alloc_zeroed, Layout};

use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::mapper::{MapToError, TranslateResult, UnmapError};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as Flags, PhysFrame,
    Size2MiB, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use super::pvh::Range;

const PAGE_4K: u64 = 4096;
const PAGE_2M: u64 = 2 * 1024 * 1024;

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

/// The live page tables, once installed.
static TABLES: spin::Mutex<Option<OffsetPageTable<'static>>> = spin::Mutex::new(None);

/// Why building the page tables failed.
#[derive(Debug)]
pub enum PagingError {
    /// No memory for a table.
    OutOfMemory,
    /// Mapping the page at this address failed.
    Map(#[allow(dead_code, reason = "read through Debug in the fatal message")] u64),
}

impl<S: x86_64::structures::paging::PageSize> From<MapToError<S>> for PagingError {
    fn from(e: MapToError<S>) -> Self {
        match e {
            MapToError::FrameAllocationFailed => Self::OutOfMemory,
            _ => Self::Map(0),
        }
    }
}

fn map_4k(
    table: &mut OffsetPageTable<'static>,
    address: u64,
    flags: Flags,
) -> Result<(), PagingError> {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(address));
    let frame = PhysFrame::containing_address(PhysAddr::new(address));
    // SAFETY: identity mapping of RAM or MMIO the kernel owns; the new tables are not yet
    // live, so no existing reference changes meaning.
    unsafe { table.map_to(page, frame, flags, &mut HeapFrames) }
        .map_err(|_| PagingError::Map(address))?
        .ignore();
    Ok(())
}

/// Builds the kernel's page tables for `ram` and switches to them.
pub fn init(ram: &[Range], guards: &[u64], apic_base: u64) -> Result<(), PagingError> {
    let layout = image_layout();
    let pml4_frame = HeapFrames
        .allocate_frame()
        .ok_or(PagingError::OutOfMemory)?;
    let pml4_ptr = pml4_frame.start_address().as_u64() as *mut PageTable;
    // SAFETY: a fresh zeroed page owned by the page tables from now on; identity mapped.
    let pml4 = unsafe { &mut *pml4_ptr };
    // SAFETY: all RAM is identity mapped (physical offset 0) by the boot tables and the
    // ones built here.
    let mut table = unsafe { OffsetPageTable::new(pml4, VirtAddr::new(0)) };

    let rw = Flags::PRESENT | Flags::WRITABLE | Flags::NO_EXECUTE;
    let low_end = layout.end.div_ceil(PAGE_2M) * PAGE_2M;
    let in_ram = |a: u64| ram.iter().any(|r| r.start <= a && a + PAGE_4K <= r.end);
    let mut address = PAGE_4K; // page 0 stays unmapped
    while address < low_end {
        let flags = if guards.contains(&address) {
            None
        } else if address >= layout.start && address < layout.text_end {
            Some(Flags::PRESENT)
        } else if address >= layout.text_end && address < layout.rodata_end {
            Some(Flags::PRESENT | Flags::NO_EXECUTE)
        } else if address >= layout.start && address < layout.end {
            Some(rw)
        } else if in_ram(address) || address < layout.start {
            // Low memory holds the loader's boot information even where it is not RAM.
            Some(rw)
        } else {
            None
        };
        if let Some(flags) = flags {
            map_4k(&mut table, address, flags)?;
        }
        address += PAGE_4K;
    }
    for range in ram {
        let mut chunk = range.start.div_ceil(PAGE_2M) * PAGE_2M;
        while chunk + PAGE_2M <= range.end {
            if chunk >= low_end {
                let page = Page::<Size2MiB>::containing_address(VirtAddr::new(chunk));
                let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(chunk));
                // SAFETY: identity mapping of RAM; the tables are not live yet.
                unsafe { table.map_to(page, frame, rw | Flags::HUGE_PAGE, &mut HeapFrames) }?
                    .ignore();
            }
            chunk += PAGE_2M;
        }
    }
    map_4k(
        &mut table,
        apic_base,
        rw | Flags::NO_CACHE | Flags::WRITE_THROUGH,
    )?;

    // SAFETY: the new tables map everything the kernel touches from here on (its image,
    // stacks except guard pages, the heap, the APIC) at the same addresses as before
    // (AMD APM vol. 2 §5.3 "Long-mode page translation").
    unsafe { Cr3::write(pml4_frame, Cr3Flags::empty()) };
    *TABLES.lock() = Some(table);
    Ok(())
}

/// What the live page tables say about `address`: the physical address and flags.
pub fn translate(address: u64) -> Option<(u64, Flags)> {
    let guard = TABLES.lock();
    let table = guard.as_ref()?;
    match table.translate(VirtAddr::new(address)) {
        TranslateResult::Mapped {
            frame,
            offset,
            flags,
        } => Some((frame.start_address().as_u64() + offset, flags)),
        _ => None,
    }
}

/// Maps the 4 KiB page at `virt` to `phys` (writable, no-execute) in the live tables.
///
/// # Safety
/// `phys` must be memory the caller owns, and `virt` must not be in use.
pub unsafe fn map_page(virt: u64, phys: u64) -> Result<(), PagingError> {
    let mut guard = TABLES.lock();
    let table = guard.as_mut().ok_or(PagingError::Map(virt))?;
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
    let frame = PhysFrame::containing_address(PhysAddr::new(phys));
    let flags = Flags::PRESENT | Flags::WRITABLE | Flags::NO_EXECUTE;
    // SAFETY: the caller owns `phys` and `virt` is unused.
    unsafe { table.map_to(page, frame, flags, &mut HeapFrames) }?.flush();
    Ok(())
}

/// Unmaps the 4 KiB page at `virt` from the live tables, and invalidates it in every
/// CPU's TLB before returning (a CPU that cannot be reached ends the SVSM: it could
/// keep using the page).
pub fn unmap_page(virt: u64) -> Result<(), UnmapError> {
    let mut guard = TABLES.lock();
    let Some(table) = guard.as_mut() else {
        return Err(UnmapError::PageNotMapped);
    };
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
    let (_, flush) = table.unmap(page)?;
    flush.ignore();
    drop(guard);
    let request = svsm::smp::tlb::FlushRequest::Pages {
        start: virt,
        count: 1,
    };
    if let Err(e) = svsm::smp::shootdown(request) {
        super::exit::terminate(format_args!("TLB shootdown for {virt:#x} failed: {e}"));
    }
    Ok(())
}
