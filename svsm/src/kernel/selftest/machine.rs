//! Self-tests of the machine set-up: heap, page tables, per-CPU canary, SSE, interrupts.
#![allow(
    unsafe_code,
    reason = "tests write through a freshly mapped alias page"
)]

use alloc::alloc::{alloc, dealloc, Layout};
use alloc::vec::Vec;

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::structures::paging::PageTableFlags as Flags;

use super::{ensure, Outcome, Test};
use crate::kernel::{gdt, heap, paging, percpu};

pub const TESTS: &[(&str, Test)] = &[
    ("heap_alignment_and_release", heap_alignment_and_release),
    ("heap_exhaustion_returns_null", heap_exhaustion_returns_null),
    ("paging_image_permissions", paging_image_permissions),
    ("paging_guard_pages_unmapped", paging_guard_pages_unmapped),
    ("paging_map_and_unmap", paging_map_and_unmap),
    ("stack_canary_at_fs_0x28", stack_canary_at_fs_0x28),
    ("sse_enabled_without_xsave", sse_enabled_without_xsave),
    ("native_platform_guest_memory", native_platform_guest_memory),
];

fn heap_alignment_and_release() -> Outcome {
    let start = heap::stats().allocated;
    let mut blocks = Vec::new();
    for (i, align) in [8usize, 16, 64, 4096, 2 * 1024 * 1024]
        .into_iter()
        .enumerate()
    {
        let size = 24 + i * 1000;
        let layout = Layout::from_size_align(size, align).map_err(|e| alloc::format!("{e}"))?;
        // SAFETY: non-zero size.
        let p = unsafe { alloc(layout) };
        ensure!(
            !p.is_null(),
            "allocation of {size} bytes aligned {align} failed"
        );
        ensure!(p as usize % align == 0, "{p:p} is not aligned to {align}");
        // SAFETY: the block has `size` bytes.
        unsafe { p.write_bytes(i as u8, size) };
        blocks.push((p, layout, i as u8));
    }
    for &(p, layout, fill) in &blocks {
        // SAFETY: each block is live and `layout.size()` long.
        let bytes = unsafe { core::slice::from_raw_parts(p, layout.size()) };
        ensure!(
            bytes.iter().all(|&b| b == fill),
            "blocks overlap: {p:p} was overwritten"
        );
    }
    let peak = heap::stats();
    ensure!(peak.allocated > start, "the heap did not count the blocks");
    ensure!(
        peak.high_water >= peak.allocated,
        "high-water {} below current {}",
        peak.high_water,
        peak.allocated
    );
    for (p, layout, _) in blocks {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { dealloc(p, layout) };
    }
    let end = heap::stats().allocated;
    ensure!(
        end == start,
        "{} bytes leaked (started at {start}, ended at {end})",
        end.abs_diff(start)
    );
    Ok(())
}

fn heap_exhaustion_returns_null() -> Outcome {
    let total = heap::stats().total;
    let layout = Layout::from_size_align(total * 2, 16).map_err(|e| alloc::format!("{e}"))?;
    if let Some(block) = heap::try_allocate(layout) {
        // SAFETY: just allocated with this layout.
        unsafe { heap::release(block, layout) };
        return Err(alloc::format!(
            "a {}-byte allocation from a {total}-byte heap succeeded",
            total * 2
        ));
    }
    let small = Layout::from_size_align(64, 16).map_err(|e| alloc::format!("{e}"))?;
    let block = heap::try_allocate(small).ok_or("the heap refuses small blocks after a refusal")?;
    // SAFETY: just allocated with this layout.
    unsafe { heap::release(block, small) };
    Ok(())
}

fn paging_image_permissions() -> Outcome {
    let layout = paging::image_layout();
    let text = paging::translate(layout.start).ok_or("text is not mapped")?;
    ensure!(text.0 == layout.start, "text is not identity mapped");
    ensure!(!text.1.contains(Flags::WRITABLE), "text is writable");
    ensure!(
        !text.1.contains(Flags::NO_EXECUTE),
        "text is not executable"
    );
    let rodata = paging::translate(layout.text_end).ok_or("rodata is not mapped")?;
    ensure!(
        !rodata.1.contains(Flags::WRITABLE) && rodata.1.contains(Flags::NO_EXECUTE),
        "rodata flags {:?}",
        rodata.1
    );
    let bss = paging::translate(layout.bss_end - 1).ok_or("bss is not mapped")?;
    ensure!(
        bss.1.contains(Flags::WRITABLE) && bss.1.contains(Flags::NO_EXECUTE),
        "bss flags {:?}",
        bss.1
    );
    ensure!(paging::translate(0).is_none(), "page 0 is mapped");
    ensure!(paging::translate(0x10).is_none(), "null + 16 is mapped");
    Ok(())
}

fn paging_guard_pages_unmapped() -> Outcome {
    let stack = svsm::arch::entry::boot_stack();
    ensure!(
        paging::translate(stack.guard).is_none(),
        "the boot stack guard page is mapped"
    );
    ensure!(
        paging::translate(stack.bottom).is_some(),
        "the boot stack is not mapped"
    );
    ensure!(
        stack.top - stack.bottom >= 64 * 1024,
        "the engine's stack is only {} bytes",
        stack.top - stack.bottom
    );
    for guard in gdt::guard_pages() {
        ensure!(
            paging::translate(guard).is_none(),
            "IST guard page {guard:#x} is mapped"
        );
        ensure!(
            paging::translate(guard + 4096).is_some(),
            "IST stack above {guard:#x} is not mapped"
        );
    }
    Ok(())
}

fn paging_map_and_unmap() -> Outcome {
    const ALIAS: u64 = 0x0000_4000_0000_0000;
    let layout = Layout::from_size_align(4096, 4096).map_err(|e| alloc::format!("{e}"))?;
    // SAFETY: non-zero size.
    let frame = unsafe { alloc(layout) };
    ensure!(!frame.is_null(), "no page for the test");
    ensure!(
        paging::translate(ALIAS).is_none(),
        "{ALIAS:#x} is already mapped"
    );
    // SAFETY: the frame is ours; ALIAS is unused (checked above).
    unsafe { paging::map_page(ALIAS, frame as u64) }.map_err(|e| alloc::format!("{e:?}"))?;
    let mapped = paging::translate(ALIAS + 8);
    // SAFETY: ALIAS now maps the frame, which we own.
    unsafe {
        (ALIAS as *mut u64)
            .wrapping_add(1)
            .write_volatile(0x5356_534d_5445_5354)
    };
    // SAFETY: the frame is ours and 4096 bytes long.
    let seen = unsafe { frame.cast::<u64>().wrapping_add(1).read_volatile() };
    let unmapped = paging::unmap_page(ALIAS);
    let after = paging::translate(ALIAS);
    // SAFETY: allocated above with this layout; no mapping refers to it any more.
    unsafe { dealloc(frame, layout) };
    ensure!(
        mapped.map(|m| m.0) == Some(frame as u64 + 8),
        "translation {mapped:?} is not the frame"
    );
    ensure!(
        seen == 0x5356_534d_5445_5354,
        "a write through the alias did not reach the frame"
    );
    ensure!(unmapped.is_ok(), "unmap failed: {unmapped:?}");
    ensure!(after.is_none(), "still mapped after unmap");
    Ok(())
}

fn stack_canary_at_fs_0x28() -> Outcome {
    let canary = percpu::current().stack_canary();
    ensure!(canary != 0, "the canary is zero");
    ensure!(canary & 0xff == 0, "the canary's low byte is not zero");
    let through_fs = percpu::canary_through_fs();
    ensure!(
        through_fs == canary,
        "%fs:0x28 reads {through_fs:#x}, not the canary"
    );
    Ok(())
}

fn sse_enabled_without_xsave() -> Outcome {
    let cr0 = Cr0::read();
    let cr4 = Cr4::read();
    ensure!(
        !cr0.contains(Cr0Flags::EMULATE_COPROCESSOR),
        "CR0.EM is set"
    );
    ensure!(
        cr0.contains(Cr0Flags::MONITOR_COPROCESSOR),
        "CR0.MP is clear"
    );
    ensure!(!cr0.contains(Cr0Flags::TASK_SWITCHED), "CR0.TS is set");
    ensure!(cr4.contains(Cr4Flags::OSFXSR), "CR4.OSFXSR is clear");
    ensure!(
        cr4.contains(Cr4Flags::OSXMMEXCPT_ENABLE),
        "CR4.OSXMMEXCPT is clear"
    );
    ensure!(!cr4.contains(Cr4Flags::OSXSAVE), "CR4.OSXSAVE is set");
    ensure!(cr0.contains(Cr0Flags::NUMERIC_ERROR), "CR0.NE is clear");
    // The control bits (exception masks, rounding, FTZ/DAZ), not the sticky flags.
    let control = svsm::arch::fpu::mxcsr() & !0x3f;
    ensure!(
        control == svsm::arch::fpu::MXCSR_DEFAULT,
        "MXCSR control bits {control:#x} after the engine ran"
    );
    Ok(())
}

fn native_platform_guest_memory() -> Outcome {
    use svsm::address::{Access, GuestPhysAddr, GuestRegion, GuestState, MemoryKind, MemoryLayout};
    use svsm::platform::native::NativePlatform;
    use svsm::platform::{PageSize, Platform, PvalidateError, RmpFault};

    // Two heap pages play guest RAM; the image plays SVSM memory.
    let layout = Layout::from_size_align(2 * 4096, 4096).map_err(|e| alloc::format!("{e}"))?;
    // SAFETY: non-zero size; freed below.
    let pages = unsafe { alloc(layout) };
    ensure!(!pages.is_null(), "no pages for the test");
    let base = pages as u64;
    let image = paging::image_layout();
    let memory = MemoryLayout::new(
        alloc::vec![GuestRegion {
            start: base,
            end: base + 2 * 4096,
            kind: MemoryKind::Ram
        }],
        image.start,
        image.end,
    )
    .map_err(|e| alloc::format!("{e:?}"))?;
    let state = GuestState::new(memory, &[0]);
    // SAFETY: the two pages are this test's, identity mapped, until freed below.
    let platform = unsafe { NativePlatform::new(&[(base, base + 2 * 4096)]) };
    let outcome = (|| {
        let range = state
            .check(GuestPhysAddr::new(base + 4090), 12, Access::Data)
            .map_err(|e| alloc::format!("{e:?}"))?;
        platform
            .write_guest(&range, 0, b"across pages")
            .map_err(|e| alloc::format!("{e:?}"))?;
        let mut back = [0u8; 12];
        platform
            .read_guest(&range, 0, &mut back)
            .map_err(|e| alloc::format!("{e:?}"))?;
        ensure!(&back == b"across pages", "read back {back:?}");
        ensure!(
            state
                .check(GuestPhysAddr::new(image.start), 8, Access::Data)
                .is_err(),
            "SVSM memory passed the guest address check"
        );
        ensure!(
            platform.pvalidate(svsm::address::PhysAddr::new(base), PageSize::Size4K, true)
                == Err(PvalidateError::Fault(RmpFault::NoMemory)),
            "PVALIDATE without SEV-SNP did not report the missing RMP"
        );
        Ok(())
    })();
    // SAFETY: allocated above with this layout.
    unsafe { dealloc(pages, layout) };
    outcome
}
