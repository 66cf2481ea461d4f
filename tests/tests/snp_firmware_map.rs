//! The guest's memory map for OVMF, checked from the guest's side: what OVMF from
//! edk2-stable202511 on reads in its IGVM parameter area after the SVSM's launch.
//!
//! OVMF (`OvmfPkg/Library/PlatformInitLib/Igvm.c`) takes its RAM from the IGVM memory-map
//! parameter instead of QEMU's fw_cfg E820 table when the first entry there has pages and
//! passes its sanity check (entry type below 16, reserved field zero). It reads 24-byte
//! `IGVM_VHS_MEMORY_MAP_ENTRY` records (page number, page count, type, flags, reserved)
//! until one has no pages, with no other bound, and turns type 0 into E820 RAM and type 1
//! into E820 reserved, skipping the rest. In QEMU's own map the SVSM's range is RAM: OVMF
//! would validate it and stop. The emulated machine carries the IGVM parameter block and
//! the host's memory map (the SVSM range inside RAM, as QEMU fills it) in SVSM memory;
//! `SnpMachine::boot` reads them back with the kernel's `BootParams` and launches the
//! guest with the same `launch_guest` the kernel runs.

use std::sync::Arc;

use svsm::platform::{RmpPermissions, Vmpl, PAGE_SIZE};
use svsm::snp::launch::{FirmwareMapError, FirmwareMemoryMap};
use svsm::snp::{term, SnpError, TerminateReason, TERM_SET_SVSM};
use svsm_emulated::hypervisor::{BootFailure, SnpMachine, SnpMachineConfig};
use svsm_emulated::machine::EmulatedSnp;
use svsm_emulated::GuestFault;
use svsm_protocol::igvm_params::MemoryRange;

/// OVMF's memory map: 8 entries at the start of its IGVM parameter area 0x812000+0x1000
/// (the vCPU count follows at +0xC0), inside its SNP_SEC_MEM range 0x811000+0x1F000.
const MAP: u64 = 0x81_2000;
const MAP_SIZE: u64 = 8 * 24;
const ENTRY: usize = 24;

/// The metadata of Debian forky's OVMF.fd (the firmware `cargo xtask` packages into
/// `target/svsm-ovmf.igvm`): SEV metadata SNP_SEC_MEM 0x800000+0x9000, 0x80A000+0x3000,
/// 0x811000+0x1F000, secrets 0x80D000, CPUID 0x80E000, calling area 0x80F000 (kernel
/// hashes 0x810000); IGVM metadata parameter area 0x812000+0x1000, memory map +0+0xC0,
/// vCPU count +0xC0+0x10, HOB area 0x813000.
fn forky() -> SnpMachineConfig {
    let mut config = SnpMachineConfig::default();
    config.firmware.sec_mem[2] = MemoryRange {
        base: 0x81_1000,
        size: 0x1_F000,
    };
    config
}

fn with_map(map: MemoryRange) -> SnpMachineConfig {
    SnpMachineConfig {
        firmware_memory_map: map,
        ..forky()
    }
}

fn ovmf_config() -> SnpMachineConfig {
    with_map(MemoryRange {
        base: MAP,
        size: MAP_SIZE,
    })
}

/// An E820 entry as OVMF builds it from an IGVM entry: base, length, E820 type
/// (1 RAM, 2 reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct E820 {
    base: u64,
    length: u64,
    kind: u32,
}

/// What OVMF's `PlatformIgvmScanE820` passes on from the bytes at its map's address:
/// `None` when it falls back to fw_cfg (no first entry, or the sanity check fails).
fn ovmf_scan(bytes: &[u8]) -> Option<Vec<E820>> {
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    if u64_at(8) == 0 || u16_at(16) & 0xfff0 != 0 || u32_at(20) != 0 {
        return None;
    }
    let mut out = Vec::new();
    // OVMF has no bound here; the page holding the map does (a read past it is a test
    // failure, not an answer).
    for at in (0..).step_by(ENTRY) {
        let pages = u64_at(at + 8);
        if pages == 0 {
            break;
        }
        let kind = match u16_at(at + 16) {
            0 => 1,
            1 => 2,
            _ => continue,
        };
        out.push(E820 {
            base: u64_at(at) << 12,
            length: pages << 12,
            kind,
        });
    }
    Some(out)
}

fn overlaps(e: &E820, start: u64, end: u64) -> bool {
    e.base < end && start < e.base + e.length
}

#[test]
fn ovmf_reads_the_guest_map_with_the_svsm_range_reserved() {
    let m = SnpMachine::boot(ovmf_config()).expect("SNP boot with OVMF's memory map");
    // The guest reads it at VMPL2: the page is validated, private and granted.
    let page = m.guest_page(MAP).expect("OVMF can read its parameter area");
    let e = m.machine().rmp_entry(MAP).unwrap();
    assert!(e.assigned && e.validated);
    assert_eq!(e.perms_of(Vmpl::new(2).unwrap()), RmpPermissions::RWX);

    let map = ovmf_scan(&page).expect("OVMF takes the IGVM map, not fw_cfg");
    let (svsm_start, svsm_end) = m.config().svsm_range;
    let ram = |base: u64, end: u64| E820 {
        base,
        length: end - base,
        kind: 1,
    };
    // The host's map is [0, 640 KiB) and [1 MiB, 32 MiB) of RAM (the SVSM inside it);
    // the guest's splits the second around the SVSM.
    assert_eq!(
        map,
        [
            ram(0, 0xA_0000),
            ram(0x10_0000, svsm_start),
            E820 {
                base: svsm_start,
                length: svsm_end - svsm_start,
                kind: 2,
            },
            ram(svsm_end, 0x200_0000),
        ]
    );
    // No RAM entry touches the SVSM, and RAM below and above it is there.
    assert!(map
        .iter()
        .filter(|e| e.kind == 1)
        .all(|e| !overlaps(e, svsm_start, svsm_end)));
    assert!(map
        .iter()
        .any(|e| e.kind == 1 && e.base + e.length == svsm_start));
    assert!(map.iter().any(|e| e.kind == 1 && e.base == svsm_end));
    // Every entry's flags and reserved fields are zero; the fifth entry ends the list and
    // the rest of the area, and what follows it (OVMF's vCPU count), stays zero.
    for at in (0..4 * ENTRY).step_by(ENTRY) {
        assert_eq!(page[at + 18..at + ENTRY], [0; 6], "entry at {at}");
    }
    assert!(page[4 * ENTRY..].iter().all(|&b| b == 0));
    // The rest of the firmware's memory is zero, as without a map.
    let fw = m.config().firmware;
    let third = fw.sec_mem[2];
    assert_eq!((third.base, third.size), (0x81_1000, 0x1_F000));
    for addr in (third.base..third.base + third.size).step_by(PAGE_SIZE as usize) {
        if addr != MAP {
            assert_eq!(m.guest_page(addr).unwrap(), [0u8; 4096], "{addr:#x}");
        }
    }
    assert_eq!(m.hypervisor().terminated(), None);
}

#[test]
fn ovmf_gets_every_guest_ram_range_it_may_validate_and_nothing_of_the_svsm() {
    let m = SnpMachine::boot(ovmf_config()).unwrap();
    let map = ovmf_scan(&m.guest_page(MAP).unwrap()).unwrap();
    // Every RAM range OVMF will validate is guest memory the SVSM accepts, and every
    // guest RAM region of the machine is in OVMF's map.
    for e in map.iter().filter(|e| e.kind == 1) {
        for addr in (e.base..e.base + e.length).step_by(0x1_0000) {
            assert!(m.is_guest_memory(addr), "{addr:#x}");
        }
    }
    for r in &m.config().regions {
        assert!(
            map.iter()
                .any(|e| e.kind == 1 && e.base <= r.start && r.end <= e.base + e.length),
            "{r:x?}"
        );
    }
    // And the reserved range really is SVSM memory the guest cannot touch.
    let (svsm_start, _) = m.config().svsm_range;
    assert_eq!(
        m.guest_page(svsm_start).unwrap_err(),
        GuestFault::Permission
    );
}

#[test]
fn the_map_may_cross_a_page_boundary_inside_one_sec_mem_range() {
    // The IGVM parameter need not be page aligned; OVMF's is, another firmware's might
    // not be. Two entries before the boundary, the rest after it.
    let base = MAP + PAGE_SIZE - 2 * ENTRY as u64;
    let m = SnpMachine::boot(with_map(MemoryRange {
        base,
        size: MAP_SIZE,
    }))
    .unwrap();
    let mut bytes = vec![0u8; 2 * PAGE_SIZE as usize];
    m.machine().guest_read(MAP, &mut bytes).unwrap();
    let offset = (PAGE_SIZE as usize) - 2 * ENTRY;
    let map = ovmf_scan(&bytes[offset..]).unwrap();
    assert_eq!(map.len(), 4);
    assert_eq!(map[2].kind, 2);
    assert!(bytes[..offset].iter().all(|&b| b == 0));
}

#[test]
fn firmware_without_the_memory_map_parameter_gets_nothing_written() {
    // The default machine's firmware has no IGVM block (trixie's OVMF 2025.02):
    // OVMF finds no first entry at its would-be map and reads QEMU's fw_cfg instead.
    let m = SnpMachine::boot(SnpMachineConfig::default()).unwrap();
    let page = m.guest_page(MAP).unwrap();
    assert_eq!(page, [0u8; 4096]);
    assert_eq!(ovmf_scan(&page), None);
}

fn launch_reason() -> Option<TerminateReason> {
    Some(TerminateReason {
        set: TERM_SET_SVSM,
        code: term::LAUNCH,
    })
}

/// The boot failed before the launch touched the firmware's memory: its scratch ranges
/// are still as the host left them (shared, not validated) and the map's page holds
/// nothing the SVSM wrote.
fn assert_nothing_launched(machine: &Arc<EmulatedSnp>, failure: &BootFailure) {
    assert_eq!(failure.terminated, launch_reason());
    let fw = forky().firmware;
    for r in fw.sec_mem.iter().take(fw.sec_mem_count as usize) {
        for addr in (r.base..r.base + r.size).step_by(PAGE_SIZE as usize) {
            let e = machine.rmp_entry(addr).unwrap();
            assert!(!e.assigned && !e.validated, "{addr:#x}");
        }
    }
}

#[test]
fn a_misplaced_map_in_the_parameter_block_stops_the_boot_before_the_launch() {
    let (svsm_start, _) = SnpMachineConfig::default().svsm_range;
    for (base, size) in [
        // In SVSM memory.
        (svsm_start + 0x8000, MAP_SIZE),
        // In guest RAM the firmware did not name as SNP_SEC_MEM (never validated).
        (0x50_0000, MAP_SIZE),
        // Straddling the end of the first SNP_SEC_MEM range (0x800000+0x9000).
        (0x80_8FF0, MAP_SIZE),
        // Larger than a page, room for one entry only, not whole entries, unaligned.
        (MAP, 171 * 24),
        (MAP, 24),
        (MAP, 50),
        (MAP + 4, MAP_SIZE),
    ] {
        let (failure, machine) =
            SnpMachine::boot_observed(with_map(MemoryRange { base, size })).unwrap_err();
        assert_eq!(failure.error, SnpError::BootParams, "{base:#x}+{size:#x}");
        assert_nothing_launched(&machine, &failure);
    }
}

#[test]
fn a_map_area_too_small_for_the_guest_map_is_a_typed_launch_error() {
    // Four entries' room, one of which must stay empty; the guest's map has four.
    let (failure, machine) = SnpMachine::boot_observed(with_map(MemoryRange {
        base: MAP,
        size: 4 * 24,
    }))
    .unwrap_err();
    assert_eq!(
        failure.error,
        SnpError::FirmwareMemoryMap(MAP, FirmwareMapError::TooSmall)
    );
    assert_nothing_launched(&machine, &failure);
}

/// What the launch is told to write when the parameter block's rules were bypassed.
fn forced(gpa: u64, bytes: Vec<u8>) -> SnpMachineConfig {
    SnpMachineConfig {
        firmware_memory_map_override: Some(FirmwareMemoryMap { gpa, bytes }),
        ..forky()
    }
}

/// Bytes of `n` RAM entries of one page each, then `empty` empty entries.
fn entries(n: usize, empty: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n as u64 {
        out.extend_from_slice(&(0x100 + i).to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
    }
    out.resize((n + empty) * ENTRY, 0);
    out
}

#[test]
fn the_launch_itself_refuses_a_map_outside_the_memory_it_validated() {
    let (svsm_start, _) = SnpMachineConfig::default().svsm_range;
    let secrets = svsm_start; // the PSP's secrets page, in SVSM memory
    for (gpa, bytes, error) in [
        (secrets, entries(3, 1), FirmwareMapError::OutsideSecMem),
        (0x50_0000, entries(3, 1), FirmwareMapError::OutsideSecMem),
        (0x80_8FF0, entries(3, 5), FirmwareMapError::OutsideSecMem),
        (u64::MAX - 7, entries(1, 1), FirmwareMapError::BadShape),
        (MAP, entries(170, 1), FirmwareMapError::BadShape),
        (MAP, entries(0, 1), FirmwareMapError::BadShape),
        (MAP + 4, entries(3, 1), FirmwareMapError::BadShape),
        (MAP, vec![0; 50], FirmwareMapError::BadShape),
        // All eight entries full: OVMF would read on past the area.
        (MAP, entries(8, 0), FirmwareMapError::NotTerminated),
    ] {
        let (failure, machine) = SnpMachine::boot_observed(forced(gpa, bytes)).unwrap_err();
        assert_eq!(
            failure.error,
            SnpError::FirmwareMemoryMap(gpa, error),
            "{gpa:#x}"
        );
        assert_nothing_launched(&machine, &failure);
        // Nothing was written over the SVSM's copy of the PSP's secrets page.
        let mut page = [0u8; 4096];
        machine.peek(secrets, &mut page).unwrap();
        assert_eq!(page, SnpMachineConfig::default().secrets, "{gpa:#x}");
    }
}

#[test]
fn the_launch_writes_a_well_formed_forced_map_exactly() {
    // The same path with bytes that pass: written as given, read as given.
    let bytes = entries(3, 2);
    let m = SnpMachine::boot(forced(MAP + 0x100, bytes.clone())).unwrap();
    let page = m.guest_page(MAP).unwrap();
    assert_eq!(&page[0x100..0x100 + bytes.len()], &bytes[..]);
    assert_eq!(ovmf_scan(&page[0x100..]).unwrap().len(), 3);
    assert!(page[..0x100].iter().all(|&b| b == 0));
}
