//! Self-tests of guest-memory access through the exception table: a page that is not
//! mapped makes the copy fail with an error, and the kernel carries on.
#![allow(
    unsafe_code,
    reason = "maps a test page and calls the guarded copies on it"
)]

use alloc::alloc::{alloc_zeroed, dealloc, Layout};

use svsm::address::{Access, GuestPhysAddr, GuestRegion, GuestState, MemoryKind, MemoryLayout};
use svsm::arch::guest_copy;
use svsm::pagetable::DIRECT_MAP_BASE;
use svsm::platform::native::NativePlatform;
use svsm::platform::{MemoryError, Platform};
use x86_64::structures::paging::PageTableFlags as Flags;

use super::{ensure, Outcome, Test};
use crate::kernel::paging;

pub const TESTS: &[(&str, Test)] = &[
    (
        "guest_copy_fault_on_unmapped_page_is_an_error",
        guest_copy_fault_on_unmapped_page_is_an_error,
    ),
    (
        "native_platform_survives_an_unmapped_guest_page",
        native_platform_survives_an_unmapped_guest_page,
    ),
    (
        "paging_direct_map_aliases_ram",
        paging_direct_map_aliases_ram,
    ),
    ("paging_shared_alias", paging_shared_alias),
];

/// Two pages of address space no other test uses: the first mapped to a heap frame for
/// the test's duration, the second never mapped.
const WINDOW: u64 = 0x0000_4000_0010_0000;
const PAGE: u64 = 4096;

/// Runs `test` with `WINDOW` mapped to a zeroed frame and `WINDOW + PAGE` unmapped.
fn with_window(test: impl FnOnce(*mut u8) -> Outcome) -> Outcome {
    let layout = Layout::from_size_align(4096, 4096).map_err(|e| alloc::format!("{e}"))?;
    // SAFETY: non-zero size; freed below once nothing maps it.
    let frame = unsafe { alloc_zeroed(layout) };
    ensure!(!frame.is_null(), "no page for the test");
    ensure!(
        paging::translate(WINDOW).is_none() && paging::translate(WINDOW + PAGE).is_none(),
        "the test window {WINDOW:#x} is in use"
    );
    // SAFETY: the frame is ours and the window unused (checked above).
    let mapped = unsafe { paging::map_page(WINDOW, frame as u64) };
    let outcome = match mapped {
        Ok(()) => test(frame),
        Err(e) => Err(alloc::format!("cannot map the test window: {e:?}")),
    };
    let unmapped = paging::unmap_page(WINDOW);
    // SAFETY: allocated above with this layout; nothing maps it any more (or mapping
    // failed).
    unsafe { dealloc(frame, layout) };
    outcome?;
    ensure!(
        unmapped.is_ok(),
        "unmapping the window failed: {unmapped:?}"
    );
    Ok(())
}

fn guest_copy_fault_on_unmapped_page_is_an_error() -> Outcome {
    with_window(|frame| {
        let hole = (WINDOW + PAGE) as *mut u8;
        let mut buf = [0u8; 16];
        // SAFETY: the hole is unmapped address space nothing refers to.
        let read = unsafe { guest_copy::read(hole, &mut buf) };
        ensure!(
            read == Err(MemoryError::NotMemory),
            "read of an unmapped page: {read:?}"
        );
        // SAFETY: as above.
        let write = unsafe { guest_copy::write(hole.wrapping_add(100), b"lost") };
        ensure!(
            write == Err(MemoryError::NotMemory),
            "write to an unmapped page: {write:?}"
        );
        // SAFETY: as above.
        let zero = unsafe { guest_copy::zero(hole, 4096) };
        ensure!(
            zero == Err(MemoryError::NotMemory),
            "zeroing an unmapped page: {zero:?}"
        );
        // A copy that runs off the mapped page into the hole: the mapped part is
        // written, then the fault ends it.
        let window = WINDOW as *mut u8;
        // SAFETY: the window maps this test's frame; the hole is unmapped.
        let across = unsafe { guest_copy::write(window.wrapping_add(4090), &[0x5A; 12]) };
        ensure!(
            across == Err(MemoryError::NotMemory),
            "write across into the hole: {across:?}"
        );
        // SAFETY: the frame is ours and 4096 bytes long.
        let tail = unsafe { core::slice::from_raw_parts(frame.wrapping_add(4090), 6) };
        ensure!(
            tail == [0x5A; 6],
            "the mapped part was not written: {tail:?}"
        );
        // And the ordinary case still works, after all those faults.
        // SAFETY: the window maps this test's frame.
        unsafe { guest_copy::write(window.wrapping_add(8), b"svsm copy") }
            .map_err(|e| alloc::format!("copy to a mapped page failed: {e:?}"))?;
        let mut back = [0u8; 9];
        // SAFETY: as above.
        unsafe { guest_copy::read(window.wrapping_add(8), &mut back) }
            .map_err(|e| alloc::format!("copy from a mapped page failed: {e:?}"))?;
        ensure!(&back == b"svsm copy", "read back {back:?}");
        Ok(())
    })
}

fn native_platform_survives_an_unmapped_guest_page() -> Outcome {
    with_window(|_| {
        let image = paging::image_layout();
        let memory = MemoryLayout::new(
            alloc::vec![GuestRegion {
                start: WINDOW,
                end: WINDOW + 2 * PAGE,
                kind: MemoryKind::Ram,
            }],
            image.start,
            image.end,
        )
        .map_err(|e| alloc::format!("{e:?}"))?;
        let state = GuestState::new(memory, &[0]);
        // SAFETY: the window is this test's address space for its duration: one page
        // mapped to its own frame, one page that faults (the case under test).
        let platform = unsafe { NativePlatform::new(&[(WINDOW, WINDOW + 2 * PAGE)]) };
        let check = |gpa: u64, len: u64| {
            state
                .check(GuestPhysAddr::new(gpa), len, Access::Data)
                .map_err(|e| alloc::format!("{e:?}"))
        };
        let mapped = check(WINDOW, PAGE)?;
        let hole = check(WINDOW + PAGE, PAGE)?;
        let both = check(WINDOW, 2 * PAGE)?;
        platform
            .write_guest(&mapped, 16, b"guest data")
            .map_err(|e| alloc::format!("write to the mapped page: {e:?}"))?;
        let mut buf = [0u8; 10];
        let read = platform.read_guest(&hole, 0, &mut buf);
        ensure!(
            read == Err(MemoryError::NotMemory),
            "read of the hole: {read:?}"
        );
        let write = platform.write_guest(&hole, 8, b"x");
        ensure!(
            write == Err(MemoryError::NotMemory),
            "write to the hole: {write:?}"
        );
        let zero = platform.zero_guest(&both);
        ensure!(
            zero == Err(MemoryError::NotMemory),
            "zeroing across the hole: {zero:?}"
        );
        let check_all = platform.check_guest(&both);
        ensure!(
            check_all == Err(MemoryError::NotMemory),
            "check_guest across the hole: {check_all:?}"
        );
        platform
            .write_guest(&mapped, 16, b"still fine")
            .map_err(|e| alloc::format!("write after the faults: {e:?}"))?;
        platform
            .read_guest(&mapped, 16, &mut buf)
            .map_err(|e| alloc::format!("read after the faults: {e:?}"))?;
        ensure!(&buf == b"still fine", "read back {buf:?}");
        Ok(())
    })
}

fn paging_direct_map_aliases_ram() -> Outcome {
    let layout = Layout::from_size_align(4096, 4096).map_err(|e| alloc::format!("{e}"))?;
    // SAFETY: non-zero size; freed below.
    let page = unsafe { alloc_zeroed(layout) };
    ensure!(!page.is_null(), "no page for the test");
    let phys = page as u64;
    let outcome = (|| {
        let direct = DIRECT_MAP_BASE + phys;
        let (to, flags) = paging::translate(direct).ok_or("the heap is not in the direct map")?;
        ensure!(
            to == phys,
            "direct map {direct:#x} -> {to:#x}, not {phys:#x}"
        );
        ensure!(
            flags.contains(Flags::WRITABLE | Flags::NO_EXECUTE | Flags::HUGE_PAGE),
            "direct map flags {flags:?}"
        );
        // SAFETY: the page is this test's; nothing else refers to it.
        unsafe { core::slice::from_raw_parts_mut(page, 16) }.copy_from_slice(b"identity write..");
        let mut seen = [0u8; 16];
        // SAFETY: the direct-map alias of this test's page.
        unsafe { guest_copy::read(direct as *const u8, &mut seen) }
            .map_err(|e| alloc::format!("read through the direct map: {e:?}"))?;
        ensure!(&seen == b"identity write..", "direct map read {seen:?}");
        // Page 0 is only unmapped in the identity map; the kernel image is not
        // executable through the direct map.
        let image = paging::image_layout();
        let (_, text) = paging::translate(DIRECT_MAP_BASE + image.start)
            .ok_or("the image is not in the direct map")?;
        ensure!(
            text.contains(Flags::NO_EXECUTE),
            "text is executable through the direct map"
        );
        Ok(())
    })();
    // SAFETY: allocated above with this layout.
    unsafe { dealloc(page, layout) };
    outcome
}

fn paging_shared_alias() -> Outcome {
    const ALIAS: u64 = WINDOW + 16 * PAGE;
    let layout = Layout::from_size_align(4096, 4096).map_err(|e| alloc::format!("{e}"))?;
    // SAFETY: non-zero size; freed below once nothing maps it.
    let frame = unsafe { alloc_zeroed(layout) };
    ensure!(!frame.is_null(), "no page for the test");
    ensure!(paging::translate(ALIAS).is_none(), "{ALIAS:#x} is in use");
    // SAFETY: the frame is ours and ALIAS unused; without SEV nothing is shared.
    let mapped = unsafe { paging::map_shared_page(ALIAS, frame as u64) };
    let outcome = (|| {
        mapped.map_err(|e| alloc::format!("map_shared_page: {e:?}"))?;
        let (to, flags) = paging::translate(ALIAS).ok_or("the alias is not mapped")?;
        ensure!(to == frame as u64, "alias -> {to:#x}, not the frame");
        ensure!(
            flags.contains(Flags::WRITABLE | Flags::NO_EXECUTE),
            "alias flags {flags:?}"
        );
        // Without SEV no mapping carries a C-bit, shared or not.
        ensure!(
            paging::is_private(ALIAS) == Some(false)
                && paging::is_private(frame as u64) == Some(false),
            "a C-bit without SEV"
        );
        // SAFETY: ALIAS maps this test's frame.
        unsafe { guest_copy::write(ALIAS as *mut u8, b"through the alias") }
            .map_err(|e| alloc::format!("write through the alias: {e:?}"))?;
        // SAFETY: the frame is ours, 4096 bytes.
        let seen = unsafe { core::slice::from_raw_parts(frame, 17) };
        ensure!(seen == b"through the alias", "the frame holds {seen:?}");
        Ok(())
    })();
    let unmapped = paging::unmap_page(ALIAS);
    // SAFETY: allocated above with this layout; unmapped (or never mapped).
    unsafe { dealloc(frame, layout) };
    outcome?;
    ensure!(unmapped.is_ok(), "unmap: {unmapped:?}");
    ensure!(
        paging::translate(ALIAS).is_none(),
        "still mapped after unmap"
    );
    Ok(())
}
