//! Host tests of the page-table plan and of the entries it produces, read back bit by bit
//! against the long-mode formats of AMD APM vol. 2 §5.3.

use super::*;
use alloc::boxed::Box;
use x86_64::structures::paging::mapper::{MappedPageTable, Translate};

const MIB: u64 = 0x10_0000;
const GIB: u64 = 0x4000_0000;
const CBIT: u64 = 1 << 51;

// AMD APM vol. 2 §5.4 "Page-Translation-Table Entry Fields".
const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;

/// An image at 64 MiB: 2 MiB text, 1 MiB rodata, data and bss ending off a 2 MiB line.
fn image() -> ImageSections {
    ImageSections {
        start: 64 * MIB,
        text_end: 66 * MIB,
        rodata_end: 67 * MIB,
        end: 69 * MIB + 0x3000,
    }
}

const GUARD: u64 = 68 * MIB;
const GHCB: u64 = 69 * MIB;
const GHCB_ALIAS: u64 = GHCB + 0x1000;

fn native_layout<'a>(ram: &'a [PhysRange], guards: &'a [u64]) -> Layout<'a> {
    Layout {
        image: image(),
        low_memory: true,
        identity: ram,
        guards,
        shared: &[],
        mmio: &[0xFEE0_0000],
        direct: ram,
        huge_1g: true,
    }
}

/// What the plan maps at `virt`: physical address, kind, page size.
fn lookup(runs: &[Run], virt: u64) -> Option<(u64, Kind, MapSize)> {
    runs.iter()
        .find(|r| r.virt <= virt && virt < r.virt + r.len)
        .map(|r| (r.phys + (virt - r.virt), r.kind, r.page))
}

fn assert_disjoint(runs: &[Run]) {
    let mut sorted = runs.to_vec();
    sorted.sort_by_key(|r| r.virt);
    for pair in sorted.windows(2) {
        assert!(
            pair[0].virt + pair[0].len <= pair[1].virt,
            "runs overlap: {:x?} and {:x?}",
            pair[0],
            pair[1]
        );
    }
    for r in runs {
        let size = r.page.bytes();
        assert_eq!(r.len % size, 0, "{r:x?}");
        assert_eq!(r.virt % size, 0, "{r:x?}");
        assert_eq!(r.phys % size, 0, "{r:x?}");
    }
}

#[test]
fn the_native_layout_maps_sections_guards_and_ram() {
    let ram = [
        PhysRange {
            start: 0,
            end: 0x9F000,
        },
        PhysRange {
            start: MIB,
            end: 256 * MIB,
        },
    ];
    let runs = plan(&native_layout(&ram, &[GUARD])).unwrap();
    assert_disjoint(&runs);
    let at = |v| lookup(&runs, v);
    assert_eq!(at(0), None, "page 0 is mapped");
    assert_eq!(at(0xFFF), None);
    assert_eq!(at(0x1000), Some((0x1000, Kind::Data, MapSize::Size4K)));
    assert_eq!(at(64 * MIB), Some((64 * MIB, Kind::Text, MapSize::Size4K)));
    assert_eq!(at(66 * MIB - 1).map(|m| m.1), Some(Kind::Text));
    assert_eq!(at(66 * MIB).map(|m| m.1), Some(Kind::ReadOnly));
    assert_eq!(at(67 * MIB).map(|m| m.1), Some(Kind::Data));
    assert_eq!(at(GUARD), None, "the guard page is mapped");
    assert_eq!(at(GUARD + 0x1000).map(|m| m.1), Some(Kind::Data));
    // Above the image's 2 MiB line: 2 MiB pages.
    assert_eq!(at(70 * MIB), Some((70 * MIB, Kind::Data, MapSize::Size2M)));
    assert_eq!(at(256 * MIB - 1).map(|m| m.2), Some(MapSize::Size2M));
    assert_eq!(at(256 * MIB), None);
    assert_eq!(
        at(0xFEE0_0000),
        Some((0xFEE0_0000, Kind::Mmio, MapSize::Size4K))
    );
    // The direct map: 4 KiB up to the first 2 MiB line, 2 MiB after; nothing executable.
    let d = DIRECT_MAP_BASE;
    assert_eq!(
        at(d + 0x1000),
        Some((0x1000, Kind::DirectMap, MapSize::Size4K))
    );
    assert_eq!(at(d + 0xA0000), None, "the hole below 1 MiB");
    assert_eq!(at(d + MIB), Some((MIB, Kind::DirectMap, MapSize::Size4K)));
    assert_eq!(
        at(d + 2 * MIB),
        Some((2 * MIB, Kind::DirectMap, MapSize::Size2M))
    );
    assert_eq!(at(d + 256 * MIB), None);
    assert!(runs
        .iter()
        .filter(|r| r.kind != Kind::Text)
        .all(|r| r.kind.flags().contains(Flags::NO_EXECUTE)));
    // Few runs: the plan coalesces.
    assert!(runs.len() < 20, "{} runs", runs.len());
}

/// An SEV-SNP launch: the SVSM range holds the image, guest RAM lies below it and above
/// 4 GiB, the firmware just under 4 GiB.
const SVSM: PhysRange = PhysRange {
    start: 62 * MIB,
    end: 96 * MIB,
};
const GUEST_RAM: [PhysRange; 4] = [
    PhysRange {
        start: 0,
        end: 62 * MIB,
    },
    PhysRange {
        start: 96 * MIB,
        end: 2 * GIB,
    },
    PhysRange {
        start: 0xFFC0_0000,
        end: 4 * GIB,
    },
    PhysRange {
        start: 4 * GIB,
        end: 6 * GIB + 0x5000,
    },
];

fn snp_runs() -> Vec<Run> {
    let direct: Vec<PhysRange> = GUEST_RAM.iter().copied().chain([SVSM]).collect();
    plan(&Layout {
        image: image(),
        low_memory: false,
        identity: &[SVSM],
        guards: &[GUARD],
        shared: &[(GHCB_ALIAS, GHCB)],
        mmio: &[],
        direct: &direct,
        huge_1g: true,
    })
    .unwrap()
}

#[test]
fn the_snp_layout_keeps_guest_memory_out_of_the_identity_map() {
    let runs = snp_runs();
    assert_disjoint(&runs);
    let at = |v| lookup(&runs, v);
    // Guest memory is reachable only through the direct map.
    assert_eq!(at(0x1000), None);
    assert_eq!(at(61 * MIB), None);
    assert_eq!(at(100 * MIB), None);
    // The SVSM range is identity mapped, the image by section.
    assert_eq!(at(62 * MIB), Some((62 * MIB, Kind::Data, MapSize::Size4K)));
    assert_eq!(at(64 * MIB).map(|m| m.1), Some(Kind::Text));
    assert_eq!(at(GUARD), None);
    assert_eq!(at(72 * MIB), Some((72 * MIB, Kind::Data, MapSize::Size2M)));
    // The GHCB: its own page private, its alias the same frame without the C-bit.
    assert_eq!(at(GHCB), Some((GHCB, Kind::Data, MapSize::Size4K)));
    assert_eq!(at(GHCB_ALIAS), Some((GHCB, Kind::Shared, MapSize::Size4K)));
    // The direct map covers all guest RAM, above 4 GiB too, in the largest pages.
    let d = DIRECT_MAP_BASE;
    // Guest RAM and the SVSM range are contiguous here: one 1 GiB page at 0.
    assert_eq!(at(d), Some((0, Kind::DirectMap, MapSize::Size1G)));
    assert_eq!(at(d + 62 * MIB).map(|m| m.1), Some(Kind::DirectMap));
    assert_eq!(at(d + GIB), Some((GIB, Kind::DirectMap, MapSize::Size1G)));
    assert_eq!(
        at(d + 0xFFC0_0000),
        Some((0xFFC0_0000, Kind::DirectMap, MapSize::Size2M))
    );
    assert_eq!(at(d + 2 * GIB), None, "the MMIO hole is mapped");
    assert_eq!(
        at(d + 5 * GIB),
        Some((5 * GIB, Kind::DirectMap, MapSize::Size1G))
    );
    assert_eq!(
        at(d + 6 * GIB + 0x4000),
        Some((6 * GIB + 0x4000, Kind::DirectMap, MapSize::Size4K))
    );
    assert_eq!(at(d + 6 * GIB + 0x5000), None);
}

#[test]
fn plans_that_cannot_work_are_refused() {
    let ram = [PhysRange {
        start: MIB,
        end: DIRECT_MAP_SIZE + 0x1000,
    }];
    assert_eq!(
        plan(&native_layout(&ram, &[])),
        Err(PlanError::BeyondDirectMap(DIRECT_MAP_SIZE))
    );
    let mut layout = native_layout(&[], &[]);
    layout.image.text_end += 1;
    assert_eq!(plan(&layout), Err(PlanError::BadImage));
    layout.image = ImageSections {
        start: 64 * MIB,
        text_end: 63 * MIB,
        rodata_end: 65 * MIB,
        end: 66 * MIB,
    };
    assert_eq!(plan(&layout), Err(PlanError::BadImage));
}

#[test]
fn ranges_are_merged_and_shrunk_to_whole_pages() {
    let r = |start, end| PhysRange { start, end };
    assert_eq!(
        normalize(&[
            r(0x5000, 0x9000),
            r(0x1001, 0x3FFF),
            r(0x8000, 0xA000),
            r(0x9000, 0x9800)
        ]),
        [r(0x2000, 0x3000), r(0x5000, 0xA000)]
    );
    assert_eq!(normalize(&[r(0x1001, 0x1FFF), r(0x3000, 0x3000)]), []);
    assert_eq!(normalize(&[r(u64::MAX - 5, u64::MAX)]), []);
}

#[test]
fn the_cbit_mask_follows_cpuid() {
    assert_eq!(
        EncryptionMask::from_cbit(51).map(EncryptionMask::bits),
        Some(CBIT)
    );
    assert_eq!(
        EncryptionMask::from_cbit(47).map(EncryptionMask::bits),
        Some(1 << 47)
    );
    for bad in [0, 12, 31, 52, 63] {
        assert_eq!(EncryptionMask::from_cbit(bad), None, "position {bad}");
    }
    let mask = EncryptionMask::from_cbit(51).unwrap();
    assert_eq!(mask.private(0x1234_5000), 0x1234_5000 | CBIT);
    assert_eq!(mask.strip(0x1234_5000 | CBIT), 0x1234_5000);
    assert_eq!(EncryptionMask::NONE.private(0x1000), 0x1000);
}

#[repr(C, align(4096))]
struct Frame([u8; 4096]);

/// Host memory standing in for table frames: "physical" addresses are host addresses.
#[derive(Default)]
struct HostFrames(Vec<Box<Frame>>);

// SAFETY: each frame is a fresh, zeroed, 4 KiB-aligned box kept alive by the allocator.
unsafe impl FrameAllocator<Size4KiB> for HostFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let frame = Box::new(Frame([0; 4096]));
        let address = &*frame as *const Frame as u64;
        self.0.push(frame);
        PhysFrame::from_start_address(PhysAddr::new(address)).ok()
    }
}

/// Reads entry `index` of the table at host address `table`.
fn entry(table: u64, index: u64) -> u64 {
    // SAFETY: `table` is one of the test's frames (a PML4 or a table `apply` created),
    // 512 entries long.
    unsafe { ((table + 8 * index) as *const u64).read() }
}

/// Walks the raw tables as the CPU does (APM vol. 2 §5.3) and checks every non-leaf
/// entry on the way: present, writable, executable (NX clear, so the leaf decides), and
/// private. Returns the leaf entry and its level (1 = PTE, 2 = PDE, 3 = PDPE).
fn walk(pml4: u64, virt: u64) -> Option<(u64, u8)> {
    let mut table = pml4;
    for level in (1..=4u8).rev() {
        let index = (virt >> (12 + 9 * u64::from(level - 1))) & 511;
        let e = entry(table, index);
        if e & P == 0 {
            return None;
        }
        if level == 1 || (level <= 3 && e & PS != 0) {
            return Some((e, level));
        }
        assert_eq!(
            e & (P | RW | NX),
            P | RW,
            "level {level} entry {e:#x} for {virt:#x}"
        );
        assert_eq!(e & CBIT, CBIT, "level {level} entry {e:#x} lacks the C-bit");
        table = (e & ADDRESS) & !CBIT;
    }
    None
}

#[test]
fn applied_entries_follow_the_apm_formats_with_the_cbit() {
    let runs = snp_runs();
    let mask = EncryptionMask::from_cbit(51).unwrap();
    let mut frames = HostFrames::default();
    let mut root = Box::new(Frame([0; 4096]));
    let pml4 = &mut *root as *mut Frame as u64;
    // SAFETY: the PML4 is this test's zeroed frame.
    let level_4 = unsafe { &mut *(pml4 as *mut PageTable) };
    let mapping = CbitFrameMapping { mask, offset: 0 };
    // SAFETY: the tables are host memory reached at their addresses (offset 0).
    let mut table = unsafe { MappedPageTable::new(level_4, mapping) };
    // SAFETY: not a live page table; nothing ever loads it.
    unsafe { apply(&mut table, &runs, mask, &mut frames) }.unwrap();
    assert!(frames.0.len() < 64, "{} table frames", frames.0.len());

    let leaf = |virt| walk(pml4, virt).unwrap_or_else(|| panic!("{virt:#x} not mapped"));
    // Text: present, read-only, executable, private, 4 KiB (a PTE: bit 7 is PAT).
    let (e, level) = leaf(64 * MIB);
    assert_eq!(level, 1);
    assert_eq!(e & (P | RW | NX), P);
    assert_eq!(e & ADDRESS, (64 * MIB) | CBIT);
    // Rodata: read-only, no-execute.
    let (e, _) = leaf(66 * MIB);
    assert_eq!(e & (P | RW | NX), P | NX);
    // Data: writable, no-execute, private.
    let (e, _) = leaf(67 * MIB + 0x5000);
    assert_eq!(e & (P | RW | NX), P | RW | NX);
    assert_eq!(e & ADDRESS, (67 * MIB + 0x5000) | CBIT);
    // The guard is absent; so is guest memory at its identity address.
    assert_eq!(walk(pml4, GUARD), None);
    assert_eq!(walk(pml4, 0x1000), None);
    // The GHCB alias: the GHCB's frame, without the C-bit.
    let (e, level) = leaf(GHCB_ALIAS);
    assert_eq!(
        (level, e & ADDRESS, e & (P | RW | NX)),
        (1, GHCB, P | RW | NX)
    );
    let (e, _) = leaf(GHCB);
    assert_eq!(e & ADDRESS, GHCB | CBIT);
    // Heap in 2 MiB pages: a PDE with PS.
    let (e, level) = leaf(72 * MIB);
    assert_eq!((level, e & PS, e & ADDRESS), (2, PS, (72 * MIB) | CBIT));
    // The direct map: 1 GiB PDPEs, 2 MiB PDEs, 4 KiB PTEs, all private, never executable.
    let d = DIRECT_MAP_BASE;
    for (phys, want_level) in [
        (0, 3),
        (GIB, 3),
        (GIB + 0x12_3456, 3),
        (0xFFC0_0000, 2),
        (5 * GIB, 3),
        (6 * GIB + 0x4000, 1),
    ] {
        let (e, level) = leaf(d + phys);
        assert_eq!(level, want_level, "{phys:#x}");
        let page = match level {
            3 => GIB,
            2 => 2 * MIB,
            _ => 0x1000,
        };
        assert_eq!(
            e & ADDRESS & !(page - 1),
            (phys & !(page - 1)) | CBIT,
            "{phys:#x}"
        );
        assert_eq!(e & (P | RW | NX), P | RW | NX, "{phys:#x}");
        assert_eq!(e & (PCD | PWT), 0);
    }
    assert_eq!(walk(pml4, d + 2 * GIB), None);
    // The crate's own walker agrees once the C-bit is stripped.
    let translated = table
        .translate_addr(VirtAddr::new(d + 5 * GIB + 0x777))
        .unwrap();
    assert_eq!(mask.strip(translated.as_u64()), 5 * GIB + 0x777);
}

#[test]
fn without_sev_no_entry_has_the_cbit() {
    let ram = [PhysRange {
        start: MIB,
        end: 128 * MIB,
    }];
    let runs = plan(&native_layout(&ram, &[GUARD])).unwrap();
    let mut frames = HostFrames::default();
    let mut root = Box::new(Frame([0; 4096]));
    let pml4 = &mut *root as *mut Frame as u64;
    // SAFETY: as in the SEV test.
    let level_4 = unsafe { &mut *(pml4 as *mut PageTable) };
    let mapping = CbitFrameMapping {
        mask: EncryptionMask::NONE,
        offset: 0,
    };
    // SAFETY: as in the SEV test.
    let mut table = unsafe { MappedPageTable::new(level_4, mapping) };
    // SAFETY: as in the SEV test.
    unsafe { apply(&mut table, &runs, EncryptionMask::NONE, &mut frames) }.unwrap();
    for virt in [
        0x1000,
        64 * MIB,
        67 * MIB,
        100 * MIB,
        DIRECT_MAP_BASE + 100 * MIB,
    ] {
        let e = table
            .translate_addr(VirtAddr::new(virt))
            .unwrap_or_else(|| panic!("{virt:#x}"));
        assert_eq!(e.as_u64() & CBIT, 0);
    }
    let (e, _) = table
        .translate_addr(VirtAddr::new(0xFEE0_0000))
        .map(|a| (a.as_u64(), ()))
        .unwrap();
    assert_eq!(e, 0xFEE0_0000);
    // Mapping the same page twice is an error, not a silent overwrite.
    let again = [runs[0]];
    // SAFETY: as above.
    let twice = unsafe { apply(&mut table, &again, EncryptionMask::NONE, &mut frames) };
    assert_eq!(twice, Err(ApplyError::Map(runs[0].virt)));
}
