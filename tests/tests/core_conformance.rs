//! Conformance of the core protocol on the emulated machine: every call's success paths,
//! driven the way Linux and OVMF drive them, with the isolation invariants checked
//! after each step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use svsm::address::GuestPhysAddr;
use svsm::error::SvsmError;
use svsm::platform::{RmpPermissions, Vmpl, PAGE_SIZE};
use svsm::requests::{
    vmsa, CallContext, CallRegisters, NotServiced, ProtocolService, RequestOutcome, Services,
    VersionRange,
};
use svsm_emulated::{EmulatedSystem, LaunchConfig, SharedSnp};
use svsm_protocol::call::CoreCall;
use svsm_protocol::core::{PageSize, PvalidateEntry};
use svsm_protocol::SvsmResultCode;
use svsm_tests::driver::{linux_entries, GuestDriver, GuestKind, PageRequest};
use svsm_tests::fixtures::*;
use svsm_tests::invariants;

fn regs(call: CoreCall, rcx: u64, rdx: u64, r8: u64) -> CallRegisters {
    GuestDriver::core_regs(call, rcx, rdx, r8)
}

fn guest_perms(system: &EmulatedSystem, page: u64) -> RmpPermissions {
    system.machine().rmp_entry(page).unwrap().perms[2]
}

fn check(system: &EmulatedSystem) {
    if let Err(v) = invariants::check(system) {
        panic!("isolation invariant broken: {v}");
    }
}

#[test]
fn query_protocol_reports_core_version_1_only() {
    let system = EmulatedSystem::standard().unwrap();
    let guest = GuestDriver::new(&system);
    let bsp = system.info().bsp();
    assert_eq!(guest.query_protocol(bsp, 0, 1).unwrap(), (1 << 32) | 1);
    assert_eq!(guest.query_protocol(bsp, 0, 2).unwrap(), 0);
    assert_eq!(guest.query_protocol(bsp, 0, 0).unwrap(), 0);
    assert_eq!(
        guest.query_protocol(bsp, 1, 1).unwrap(),
        0,
        "no attestation service"
    );
    assert_eq!(
        guest.query_protocol(bsp, 2, 1).unwrap(),
        0,
        "no vTPM service"
    );
    assert_eq!(guest.query_protocol(bsp, 3, 1).unwrap(), 0);
    check(&system);
}

#[test]
fn unsupported_protocols_and_calls() {
    let system = EmulatedSystem::standard().unwrap();
    let guest = GuestDriver::new(&system);
    let bsp = system.info().bsp();
    let code = |rax: u64| {
        let r = CallRegisters {
            rax,
            ..Default::default()
        };
        SvsmResultCode::from_raw(guest.call(bsp, &r).unwrap().rax)
    };
    assert_eq!(code(3 << 32), SvsmResultCode::UNSUPPORTED_PROTOCOL);
    assert_eq!(code(1 << 32), SvsmResultCode::UNSUPPORTED_PROTOCOL);
    assert_eq!(code((2 << 32) | 1), SvsmResultCode::UNSUPPORTED_PROTOCOL);
    assert_eq!(code(8), SvsmResultCode::UNSUPPORTED_CALL);
    assert_eq!(code(4), SvsmResultCode::UNSUPPORTED_CALL, "DEPOSIT_MEM");
    assert_eq!(code(5), SvsmResultCode::UNSUPPORTED_CALL, "WITHDRAW_MEM");
    check(&system);
}

#[test]
fn configure_vtom_query_says_unsupported() {
    let system = EmulatedSystem::standard().unwrap();
    let guest = GuestDriver::new(&system);
    let bsp = system.info().bsp();
    let out = guest
        .call(bsp, &regs(CoreCall::ConfigureVtom, 1, 0, 0))
        .unwrap();
    assert_eq!(SvsmResultCode::from_raw(out.rax), SvsmResultCode::SUCCESS);
    assert_eq!(out.rcx, 0);
    let out = guest
        .call(bsp, &regs(CoreCall::ConfigureVtom, 0x1000_0002, 0, 0))
        .unwrap();
    assert_eq!(
        SvsmResultCode::from_raw(out.rax),
        SvsmResultCode::INVALID_REQUEST
    );
    let out = guest
        .call(bsp, &regs(CoreCall::ConfigureVtom, 3, 0, 0))
        .unwrap();
    assert_eq!(
        SvsmResultCode::from_raw(out.rax),
        SvsmResultCode::INVALID_PARAMETER
    );
}

/// Linux's PVALIDATE path: 2 MiB entries where aligned, the 2 MiB -> 4 KiB fallback on
/// the chunk the hypervisor backs with 4 KiB RMP entries, every page zeroed before the
/// guest gets RWX, then rescinded with access revoked.
#[test]
fn linux_validates_and_rescinds_with_the_4k_fallback() {
    let system = EmulatedSystem::standard().unwrap();
    let machine = system.machine();
    // Stale contents the guest must never see.
    for page in (0x11_0000..0x70_0000).step_by(PAGE_SIZE as usize) {
        machine.load(page, &[0xA5; 64]).unwrap();
    }
    let guest = GuestDriver::new(&system);
    let bsp = system.info().bsp();
    guest
        .pvalidate_linux(bsp, 0x11_0000, 0x70_0000, true)
        .unwrap();
    check(&system);
    for page in (0x11_0000..0x70_0000).step_by(PAGE_SIZE as usize) {
        let entry = machine.rmp_entry(page).unwrap();
        assert!(entry.validated, "{page:#x}");
        assert_eq!(entry.perms[2], RmpPermissions::RWX, "{page:#x}");
        assert!(entry.perms[1].is_empty() && entry.perms[3].is_empty());
        let mut bytes = [0xFFu8; 64];
        machine.guest_read(page, &mut bytes).unwrap();
        assert_eq!(bytes, [0; 64], "page {page:#x} was not zeroed");
    }
    // The 4 KiB-backed chunk was validated page by page; 2 MiB chunks stayed 2 MiB.
    assert!(!machine.rmp_entry(SMALL_CHUNK).unwrap().large);
    assert!(machine.rmp_entry(0x20_0000).unwrap().large);

    guest
        .pvalidate_linux(bsp, 0x20_0000, 0x60_0000, false)
        .unwrap();
    check(&system);
    for page in (0x20_0000..0x60_0000).step_by(PAGE_SIZE as usize) {
        let entry = machine.rmp_entry(page).unwrap();
        assert!(!entry.validated);
        assert!(entry.perms.iter().skip(1).all(|p| p.is_empty()));
        assert!(machine.guest_read(page, &mut [0u8; 1]).is_err());
    }
    assert!(machine.rmp_entry(0x60_0000).unwrap().validated);
}

/// OVMF's PVALIDATE path, including its fallback (2 MiB entry rebuilt as 512 4 KiB).
#[test]
fn ovmf_validates_with_its_fallback() {
    let system = EmulatedSystem::standard().unwrap();
    let guest = GuestDriver::new(&system);
    let bsp = system.info().bsp();
    let mut pages = linux_entries(0x20_0000, 0x60_0000, true);
    pages.extend(linux_entries(0xA0_0000, 0xA0_3000, true));
    guest.pvalidate_ovmf(bsp, &pages).unwrap();
    check(&system);
    for page in (0x20_0000..0x60_0000)
        .chain(0xA0_0000..0xA0_3000)
        .step_by(PAGE_SIZE as usize)
    {
        assert!(
            system.machine().rmp_entry(page).unwrap().validated,
            "{page:#x}"
        );
        assert_eq!(guest_perms(&system, page), RmpPermissions::RWX);
    }
    assert!(!system.machine().rmp_entry(0xA0_3000).unwrap().validated);
}

/// A full calling area of 510 entries in one call, and `next` honoured on entry.
#[test]
fn full_list_and_next_semantics() {
    let system = EmulatedSystem::standard().unwrap();
    let guest = GuestDriver::new(&system);
    let bsp = system.info().bsp();
    let entries: Vec<PvalidateEntry> = (0..510u64)
        .map(|i| {
            PvalidateEntry::new(0x20_0000 + i * PAGE_SIZE, PageSize::Size4K, true, false).unwrap()
        })
        .collect();
    let (code, next) = guest.pvalidate_list(bsp, &entries, 0).unwrap();
    assert_eq!(code, SvsmResultCode::SUCCESS);
    assert_eq!(next, 510);
    // next = 3: entries 0..3 are skipped (their pages stay as they are).
    let entries: Vec<PvalidateEntry> = (0..6u64)
        .map(|i| {
            PvalidateEntry::new(0xA0_0000 + i * PAGE_SIZE, PageSize::Size4K, true, false).unwrap()
        })
        .collect();
    let (code, next) = guest.pvalidate_list(bsp, &entries, 3).unwrap();
    assert_eq!((code, next), (SvsmResultCode::SUCCESS, 6));
    for i in 0..6u64 {
        let validated = system
            .machine()
            .rmp_entry(0xA0_0000 + i * PAGE_SIZE)
            .unwrap()
            .validated;
        assert_eq!(validated, i >= 3, "entry {i}");
    }
    check(&system);
}

/// A failing entry stops the list; `next` names it; earlier entries stay done.
#[test]
fn failure_stops_at_the_entry_and_reports_next() {
    let system = EmulatedSystem::standard().unwrap();
    let guest = GuestDriver::new(&system);
    let bsp = system.info().bsp();
    let svsm_page = system.info().config.svsm_range.0;
    let e = |gpa, size, validate| PvalidateEntry::new(gpa, size, validate, false).unwrap();
    let entries = [
        e(0x20_0000, PageSize::Size4K, true),
        e(0x20_1000, PageSize::Size4K, true),
        e(svsm_page, PageSize::Size4K, true),
        e(0x20_2000, PageSize::Size4K, true),
    ];
    let (code, next) = guest.pvalidate_list(bsp, &entries, 0).unwrap();
    assert_eq!((code, next), (SvsmResultCode::INVALID_ADDRESS, 2));
    let rmp = |a| system.machine().rmp_entry(a).unwrap().validated;
    assert!(rmp(0x20_0000) && rmp(0x20_1000) && !rmp(0x20_2000));
    // SIZEMISMATCH is reported at the 2 MiB entry so the guest can split it.
    let entries = [
        e(0x20_2000, PageSize::Size4K, true),
        e(SMALL_CHUNK, PageSize::Size2M, true),
    ];
    let (code, next) = guest.pvalidate_list(bsp, &entries, 0).unwrap();
    assert_eq!(
        (code, next),
        (SvsmResultCode::PVALIDATE_FAIL_SIZEMISMATCH, 1)
    );
    check(&system);
}

/// ignore_cf turns "not changed" into success without touching the page; without it
/// the entry fails with PVALIDATE_FAIL_NOT_CHANGED.
#[test]
fn ignore_cf() {
    let p = Prepared::new().unwrap();
    let guest = p.guest();
    let entry = |validate, ignore| {
        PvalidateEntry::new(GUEST_PAGE, PageSize::Size4K, validate, ignore).unwrap()
    };
    let (code, next) = guest.pvalidate_list(0, &[entry(true, true)], 0).unwrap();
    assert_eq!((code, next), (SvsmResultCode::SUCCESS, 1));
    let mut data = [0u8; 10];
    p.system
        .machine()
        .guest_read(GUEST_PAGE, &mut data)
        .unwrap();
    assert_eq!(&data, b"guest data", "an unchanged page is not zeroed");
    let (code, next) = guest.pvalidate_list(0, &[entry(true, false)], 0).unwrap();
    assert_eq!(
        (code, next),
        (SvsmResultCode::PVALIDATE_FAIL_NOT_CHANGED, 0)
    );
    let unvalidated = PvalidateEntry::new(UNVALIDATED_PAGE, PageSize::Size4K, false, true).unwrap();
    let (code, _) = guest.pvalidate_list(0, &[unvalidated], 0).unwrap();
    assert_eq!(code, SvsmResultCode::SUCCESS);
    check(&p.system);
}

/// Read-only and MMIO ranges are validated but never written.
#[test]
fn rom_and_mmio_are_validated_without_zeroing() {
    let system = EmulatedSystem::standard().unwrap();
    system.machine().load(ROM_PAGE, b"BIOS").unwrap();
    let guest = GuestDriver::new(&system);
    let bsp = system.info().bsp();
    let pages = [
        PageRequest {
            gpa: ROM_PAGE,
            huge: false,
            validate: true,
        },
        PageRequest {
            gpa: MMIO_LOW,
            huge: false,
            validate: true,
        },
        PageRequest {
            gpa: MMIO_HIGH,
            huge: true,
            validate: true,
        },
    ];
    guest.pvalidate_ovmf(bsp, &pages).unwrap();
    let mut bios = [0u8; 4];
    system.machine().guest_read(ROM_PAGE, &mut bios).unwrap();
    assert_eq!(&bios, b"BIOS");
    for page in [ROM_PAGE, MMIO_LOW, MMIO_HIGH, MMIO_HIGH + 0x1F_F000] {
        assert!(system.machine().rmp_entry(page).unwrap().validated);
        assert_eq!(guest_perms(&system, page), RmpPermissions::RWX);
    }
    check(&system);
}

/// REMAP_CA moves the vCPU to a new calling area; call_pending is cleared in the area
/// that was current when the call arrived, not in the new one.
#[test]
fn remap_ca_clears_pending_in_the_old_area() {
    let p = Prepared::new().unwrap();
    let system = &p.system;
    let machine = system.machine();
    let old = p.boot_ca();
    // Junk in the new area's call_pending byte must survive the remap call.
    machine.guest_write(NEW_CA_PAGE, &[1]).unwrap();
    machine
        .guest_begin_call(0, old, &regs(CoreCall::RemapCa, NEW_CA_PAGE, 0, 0), true)
        .unwrap();
    let outcome = system.service(0).unwrap();
    assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::SUCCESS));
    let mut byte = [0u8];
    machine.guest_read(old, &mut byte).unwrap();
    assert_eq!(byte, [0], "old calling area still pending");
    machine.guest_read(NEW_CA_PAGE, &mut byte).unwrap();
    assert_eq!(byte, [1], "the new calling area was touched");
    let ret = machine.guest_end_call(0, old).unwrap();
    assert_eq!(ret.pending, 0);
    assert_eq!(
        system.svsm().state_snapshot().vcpu(0).unwrap().calling_area,
        Some(NEW_CA_PAGE)
    );
    // Further calls go through the new area; the old one is ignored.
    machine.guest_write(NEW_CA_PAGE, &[0]).unwrap();
    let guest = p.guest();
    guest.adopt_calling_area(0, NEW_CA_PAGE);
    assert_eq!(guest.query_protocol(0, 0, 1).unwrap(), (1 << 32) | 1);
    machine
        .guest_begin_call(0, old, &regs(CoreCall::QueryProtocol, 1, 0, 0), true)
        .unwrap();
    assert_eq!(
        system.service(0).unwrap(),
        RequestOutcome::NotServiced(NotServiced::NotPending)
    );
    check(system);
}

/// Linux brings up every AP with CREATE_VCPU and its own calling area; the APs can
/// call; Linux's hotplug path creates a new VMSA and then deletes the old one.
#[test]
fn linux_creates_and_deletes_vcpus() {
    let system = EmulatedSystem::standard().unwrap();
    let guest = GuestDriver::new(&system);
    guest
        .pvalidate_linux(0, 0x20_0000, 0x40_0000, true)
        .unwrap();
    for apic in 1..4u32 {
        let vmsa_page = 0x20_0000 + u64::from(apic) * 0x2000;
        guest
            .start_ap(GuestKind::Linux, 0, apic, vmsa_page, vmsa_page + PAGE_SIZE)
            .unwrap();
        check(&system);
        let entry = system.machine().rmp_entry(vmsa_page).unwrap();
        assert!(entry.vmsa);
        assert!(entry.perms.iter().skip(1).all(|p| p.is_empty()));
        assert!(system.machine().guest_write(vmsa_page, &[0]).is_err());
        assert_eq!(guest.query_protocol(apic, 0, 1).unwrap(), (1 << 32) | 1);
    }
    // Hotplug of AP 2: a new VMSA first, then the old one goes.
    let old = 0x20_4000;
    let new = 0x21_0000;
    system.machine().hv_ap_destroy(2).unwrap();
    guest.prepare_vmsa(new).unwrap();
    guest
        .call_ok(0, &regs(CoreCall::CreateVcpu, new, 0x20_5000, 2))
        .unwrap();
    system
        .machine()
        .hv_ap_create(2, Vmpl::new(2).unwrap(), new)
        .unwrap();
    guest
        .call_ok(0, &regs(CoreCall::DeleteVcpu, old, 0, 0))
        .unwrap();
    check(&system);
    let entry = system.machine().rmp_entry(old).unwrap();
    assert!(!entry.vmsa);
    assert_eq!(entry.perms[2], RmpPermissions::RWX);
    system.machine().guest_write(old, b"mine again").unwrap();
    assert_eq!(guest.query_protocol(2, 0, 1).unwrap(), (1 << 32) | 1);
    // CPU offline: AP destroy, then DELETE_VCPU.
    guest.stop_ap(0, 3, 0x20_6000).unwrap();
    check(&system);
    assert!(system
        .svsm()
        .state_snapshot()
        .vcpu(3)
        .unwrap()
        .guest_vmsa
        .is_none());
}

/// OVMF's way: the calling area is the page after the VMSA.
#[test]
fn ovmf_creates_vcpus() {
    let system = EmulatedSystem::standard().unwrap();
    let guest = GuestDriver::new(&system);
    let pages = linux_entries(0xA0_0000, 0xA2_0000, true);
    guest.pvalidate_ovmf(0, &pages).unwrap();
    for apic in 1..4u32 {
        let vmsa_page = 0xA0_0000 + u64::from(apic) * 0x2000;
        guest
            .start_ap(GuestKind::Ovmf, 0, apic, vmsa_page, 0)
            .unwrap();
        assert_eq!(guest.calling_area(apic), Some(vmsa_page + PAGE_SIZE));
        assert_eq!(guest.query_protocol(apic, 0, 1).unwrap(), (1 << 32) | 1);
    }
    check(&system);
}

/// No call without VMGEXIT and call_pending == 1; the guest's registers stay as they
/// were.
#[test]
fn calls_need_vmgexit_and_call_pending() {
    let system = EmulatedSystem::standard().unwrap();
    let machine = system.machine();
    let ca = system.info().config.boot_ca;
    let query = regs(CoreCall::QueryProtocol, 1, 0, 0);
    machine.guest_begin_call(0, ca, &query, false).unwrap();
    assert_eq!(
        system.service(0).unwrap(),
        RequestOutcome::NotServiced(NotServiced::NotPending)
    );
    assert_eq!(machine.guest_end_call(0, ca).unwrap().regs, query);
    machine.guest_write(ca, &[1]).unwrap();
    machine.guest_exit(0, &query, 0x7B).unwrap();
    assert_eq!(
        system.service(0).unwrap(),
        RequestOutcome::NotServiced(NotServiced::NotVmgexit)
    );
    let ret = machine.guest_end_call(0, ca).unwrap();
    assert_eq!((ret.regs, ret.pending), (query, 1));
    assert_eq!(
        system.svsm().handle_request(3),
        RequestOutcome::NotServiced(NotServiced::NoGuestVmsa)
    );
    assert_eq!(
        system.svsm().handle_request(77),
        RequestOutcome::NotServiced(NotServiced::UnknownVcpu)
    );
}

/// Two vCPUs with calls outstanding at the same time each get their own answer.
#[test]
fn two_vcpus_calling_at_once() {
    let p = Prepared::new().unwrap();
    let machine = p.system.machine();
    machine
        .guest_begin_call(
            0,
            p.boot_ca(),
            &regs(CoreCall::QueryProtocol, 1, 0, 0),
            true,
        )
        .unwrap();
    machine
        .guest_begin_call(
            1,
            AP1_CA,
            &regs(CoreCall::QueryProtocol, (1 << 32) | 1, 0, 0),
            true,
        )
        .unwrap();
    p.system.service(1).unwrap();
    p.system.service(0).unwrap();
    let bsp = machine.guest_end_call(0, p.boot_ca()).unwrap();
    let ap = machine.guest_end_call(1, AP1_CA).unwrap();
    assert_eq!(
        (bsp.regs.rax, bsp.regs.rcx, bsp.pending),
        (0, (1 << 32) | 1, 0)
    );
    assert_eq!((ap.regs.rax, ap.regs.rcx, ap.pending), (0, 0, 0));
}

/// A test service for protocol 1: proves the extension point (dispatch, QUERY_PROTOCOL,
/// guest memory access through the context, SVME cleared while servicing).
struct EchoService {
    svme_seen: Arc<AtomicU64>,
}

impl ProtocolService<SharedSnp> for EchoService {
    fn versions(&self) -> VersionRange {
        VersionRange { min: 1, max: 3 }
    }

    fn handle(&self, call: &mut CallContext<'_, SharedSnp>) -> Result<(), SvsmError> {
        let mut efer = [0u8; 8];
        let vmsa = call
            .platform()
            .peek(0x80_0000 + 4 * PAGE_SIZE + vmsa::EFER, &mut efer);
        if vmsa.is_some() {
            self.svme_seen
                .store(u64::from_le_bytes(efer) & vmsa::EFER_SVME, Ordering::SeqCst);
        }
        match call.call_id() {
            0 => {
                let gpa = GuestPhysAddr::new(call.regs().rcx);
                let mut buf = [0u8; 10];
                call.read_guest(gpa, &mut buf)?;
                buf.reverse();
                call.write_guest(gpa, &buf)?;
                call.regs_mut().rdx = 10;
                Ok(())
            }
            _ => Err(SvsmError::UnsupportedCall),
        }
    }
}

#[test]
fn a_protocol_service_plugs_into_dispatch() {
    let svme_seen = Arc::new(AtomicU64::new(u64::MAX));
    let services = Services::new().with_attestation(Box::new(EchoService {
        svme_seen: svme_seen.clone(),
    }));
    let system = EmulatedSystem::launch(LaunchConfig::default(), services).unwrap();
    let guest = GuestDriver::new(&system);
    guest
        .pvalidate_linux(0, 0x20_0000, 0x20_1000, true)
        .unwrap();
    system
        .machine()
        .guest_write(0x20_0000, b"0123456789")
        .unwrap();
    assert_eq!(guest.query_protocol(0, 1, 2).unwrap(), (3 << 32) | 1);
    assert_eq!(guest.query_protocol(0, 1, 4).unwrap(), 0);
    assert_eq!(guest.query_protocol(0, 2, 1).unwrap(), 0);
    let out = guest
        .call_ok(
            0,
            &CallRegisters {
                rax: 1 << 32,
                rcx: 0x20_0000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out.rdx, 10);
    let mut buf = [0u8; 10];
    system.machine().guest_read(0x20_0000, &mut buf).unwrap();
    assert_eq!(&buf, b"9876543210");
    assert_eq!(
        svme_seen.load(Ordering::SeqCst),
        0,
        "SVME set while servicing"
    );
    let mut efer = [0u8; 8];
    system
        .machine()
        .peek(system.info().boot_vmsa + vmsa::EFER, &mut efer)
        .unwrap();
    assert_ne!(
        u64::from_le_bytes(efer) & vmsa::EFER_SVME,
        0,
        "SVME not restored"
    );
    // The service's guest access goes through the same checks.
    let svsm_gpa = system.info().config.svsm_range.0;
    let out = guest
        .call(
            0,
            &CallRegisters {
                rax: 1 << 32,
                rcx: svsm_gpa,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        SvsmResultCode::from_raw(out.rax),
        SvsmResultCode::INVALID_ADDRESS
    );
    let out = guest
        .call(
            0,
            &CallRegisters {
                rax: (1 << 32) | 9,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        SvsmResultCode::from_raw(out.rax),
        SvsmResultCode::UNSUPPORTED_CALL
    );
    check(&system);
}

/// Several vCPUs on their own threads: PVALIDATE, REMAP_CA and queries race; BUSY is
/// retried as guests do; the invariants hold at the end and every page is where its
/// owner put it.
#[test]
fn vcpus_on_threads() {
    let p = Prepared::new().unwrap();
    let guest = p.guest();
    for apic in 2..4u32 {
        let vmsa_page = 0x32_0000 + u64::from(apic) * 0x2000;
        guest
            .start_ap(GuestKind::Linux, 0, apic, vmsa_page, vmsa_page + PAGE_SIZE)
            .unwrap();
    }
    std::thread::scope(|s| {
        for apic in 0..4u32 {
            let guest = &guest;
            s.spawn(move || {
                let base = 0x50_0000 + u64::from(apic) * 0x4_0000;
                for round in 0..20u64 {
                    guest
                        .pvalidate_linux(apic, base, base + 0x4_0000, round % 2 == 1)
                        .unwrap();
                    let ca = 0xA0_0000 + u64::from(apic) * 0x2000 + (round % 2) * PAGE_SIZE;
                    guest.remap_ca(apic, ca).unwrap();
                    assert_eq!(guest.query_protocol(apic, 0, 1).unwrap(), (1 << 32) | 1);
                }
            });
        }
    });
    check(&p.system);
    for apic in 0..4u64 {
        let base = 0x50_0000 + apic * 0x4_0000;
        for page in (base..base + 0x4_0000).step_by(PAGE_SIZE as usize) {
            assert!(
                p.system.machine().rmp_entry(page).unwrap().validated,
                "{page:#x}"
            );
        }
    }
}

/// A vTPM-like service on protocol 2; also exercises `Services::default`, the services'
/// debug output and the call context accessors.
struct VersionOnly;

impl ProtocolService<SharedSnp> for VersionOnly {
    fn versions(&self) -> VersionRange {
        VersionRange { min: 1, max: 1 }
    }

    fn handle(&self, call: &mut CallContext<'_, SharedSnp>) -> Result<(), SvsmError> {
        let described = format!("{call:?}");
        assert!(described.contains("apic_id"));
        call.regs_mut().rcx = u64::from(call.guest_vmpl().level()) | u64::from(call.apic_id()) << 8;
        Ok(())
    }
}

#[test]
fn vtpm_slot_and_debug_output() {
    let services = Services::default().with_vtpm(Box::new(VersionOnly));
    assert!(format!("{services:?}").contains("vtpm: Some"));
    let system = EmulatedSystem::launch(LaunchConfig::default(), services).unwrap();
    assert!(format!("{:?}", system.svsm()).contains("Services"));
    let guest = GuestDriver::new(&system);
    assert_eq!(guest.query_protocol(0, 2, 1).unwrap(), (1 << 32) | 1);
    assert_eq!(guest.query_protocol(0, 1, 1).unwrap(), 0);
    let out = guest
        .call_ok(
            0,
            &CallRegisters {
                rax: 2 << 32,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out.rcx, 2, "guest VMPL 2 from vCPU 0");
}

/// The kernel's loop: `run_once` runs the guest VMPL, then services its call.
#[test]
fn run_once_services_the_next_call() {
    let system = EmulatedSystem::standard().unwrap();
    let machine = system.machine();
    let ca = system.info().config.boot_ca;
    machine
        .guest_begin_call(0, ca, &regs(CoreCall::QueryProtocol, 1, 0, 0), true)
        .unwrap();
    let outcome = system.svsm().run_once(0).unwrap();
    assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::SUCCESS));
    let ret = machine.guest_end_call(0, ca).unwrap();
    assert_eq!((ret.regs.rcx, ret.pending), ((1 << 32) | 1, 0));
    // A vCPU whose guest VMSA cannot run (no VMSA) is refused by the hypervisor.
    assert!(system.svsm().run_once(3).is_err());
}

/// A service that holds the call until told to go on, so another vCPU can act while
/// this one is inside the SVSM.
struct Gate {
    entered: std::sync::mpsc::SyncSender<()>,
    proceed: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl ProtocolService<SharedSnp> for Gate {
    fn versions(&self) -> VersionRange {
        VersionRange { min: 1, max: 1 }
    }

    fn handle(&self, call: &mut CallContext<'_, SharedSnp>) -> Result<(), SvsmError> {
        let _ = self.entered.send(());
        let _ = self.proceed.lock().unwrap().recv();
        call.regs_mut().rcx = 42;
        Ok(())
    }
}

/// DELETE_VCPU of a vCPU's VMSA while that vCPU is inside an SVSM call: the VMSA is not
/// running, so the delete succeeds, and the call's result is not written into the page
/// the guest got back.
#[test]
fn delete_vcpu_while_it_is_inside_a_call() {
    let (entered_tx, entered_rx) = std::sync::mpsc::sync_channel(1);
    let (proceed_tx, proceed_rx) = std::sync::mpsc::channel();
    let services = Services::new().with_attestation(Box::new(Gate {
        entered: entered_tx,
        proceed: std::sync::Mutex::new(proceed_rx),
    }));
    let system = EmulatedSystem::launch(LaunchConfig::default(), services).unwrap();
    let guest = GuestDriver::new(&system);
    guest
        .pvalidate_linux(0, 0x20_0000, 0x40_0000, true)
        .unwrap();
    guest
        .start_ap(GuestKind::Linux, 0, 1, AP1_VMSA, AP1_CA)
        .unwrap();
    std::thread::scope(|s| {
        let ap = s.spawn(|| {
            guest.call_once(
                1,
                &CallRegisters {
                    rax: 1 << 32,
                    rcx: 7,
                    ..Default::default()
                },
            )
        });
        entered_rx.recv().unwrap();
        guest
            .call_ok(0, &regs(CoreCall::DeleteVcpu, AP1_VMSA, 0, 0))
            .unwrap();
        proceed_tx.send(()).unwrap();
        // The hypervisor cannot resume the deleted VMSA (SVME is clear) ...
        assert_eq!(
            ap.join().unwrap().unwrap_err(),
            svsm_tests::driver::DriverError::Guest(svsm_emulated::GuestFault::VmrunFailed)
        );
    });
    // ... and the SVSM wrote no result into the page the guest got back.
    let mut reg = [0u8; 8];
    system
        .machine()
        .peek(AP1_VMSA + vmsa::RAX, &mut reg)
        .unwrap();
    assert_eq!(u64::from_le_bytes(reg), 1 << 32);
    system
        .machine()
        .peek(AP1_VMSA + vmsa::RCX, &mut reg)
        .unwrap();
    assert_eq!(u64::from_le_bytes(reg), 7);
    let entry = system.machine().rmp_entry(AP1_VMSA).unwrap();
    assert!(!entry.vmsa);
    assert_eq!(entry.perms[2], RmpPermissions::RWX);
    check(&system);
}

/// A platform that stops inside PVALIDATE until told to go on, so a test can act while
/// another vCPU's PVALIDATE holds the registry.
struct GatedPlatform {
    inner: SharedSnp,
    entered: std::sync::mpsc::SyncSender<()>,
    proceed: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    /// Where it stops.
    gate: GateAt,
    /// Stops at the EFER write only once.
    efer_armed: std::sync::atomic::AtomicBool,
}

/// Where a [`GatedPlatform`] stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GateAt {
    /// Inside PVALIDATE.
    Pvalidate,
    /// Inside the request loop's write that clears EFER.SVME at the start of a call.
    EferClear,
}

impl GatedPlatform {
    fn wait(&self) {
        let _ = self.entered.send(());
        let _ = self.proceed.lock().unwrap().recv();
    }
}

impl svsm::platform::Platform for GatedPlatform {
    fn pvalidate(
        &self,
        addr: svsm::address::PhysAddr,
        size: svsm::platform::PageSize,
        validate: bool,
    ) -> Result<svsm::platform::Validation, svsm::platform::PvalidateError> {
        if self.gate == GateAt::Pvalidate {
            self.wait();
        }
        self.inner.pvalidate(addr, size, validate)
    }
    fn rmpadjust(
        &self,
        addr: svsm::address::PhysAddr,
        size: svsm::platform::PageSize,
        target: Vmpl,
        perms: RmpPermissions,
        vmsa: bool,
    ) -> Result<(), svsm::platform::RmpadjustError> {
        self.inner.rmpadjust(addr, size, target, perms, vmsa)
    }
    fn read_guest(
        &self,
        range: &svsm::address::CheckedRange,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), svsm::platform::MemoryError> {
        self.inner.read_guest(range, offset, buf)
    }
    fn write_guest(
        &self,
        range: &svsm::address::CheckedRange,
        offset: u64,
        data: &[u8],
    ) -> Result<(), svsm::platform::MemoryError> {
        self.inner.write_guest(range, offset, data)
    }
    fn zero_guest(
        &self,
        range: &svsm::address::CheckedRange,
    ) -> Result<(), svsm::platform::MemoryError> {
        self.inner.zero_guest(range)
    }
    fn read_vmsa(
        &self,
        vmsa: &svsm::address::VmsaPage,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), svsm::platform::MemoryError> {
        self.inner.read_vmsa(vmsa, offset, buf)
    }
    fn write_vmsa(
        &self,
        vmsa: &svsm::address::VmsaPage,
        offset: u64,
        data: &[u8],
    ) -> Result<(), svsm::platform::MemoryError> {
        let clears_svme = data
            .try_into()
            .is_ok_and(|v| u64::from_le_bytes(v) & vmsa::EFER_SVME == 0);
        if self.gate == GateAt::EferClear
            && offset == vmsa::EFER
            && clears_svme
            && self.efer_armed.swap(false, Ordering::SeqCst)
        {
            self.wait();
        }
        self.inner.write_vmsa(vmsa, offset, data)
    }
    fn vmsa_running(&self, vmsa: &svsm::address::VmsaPage) -> bool {
        self.inner.vmsa_running(vmsa)
    }
    fn create_ap(
        &self,
        apic_id: u32,
        vmpl: Vmpl,
        vmsa: svsm::address::PhysAddr,
        sev_features: u64,
    ) -> Result<(), svsm::platform::HypervisorError> {
        self.inner.create_ap(apic_id, vmpl, vmsa, sev_features)
    }
    fn run_guest(&self, apic_id: u32) -> Result<(), svsm::platform::HypervisorError> {
        self.inner.run_guest(apic_id)
    }
    fn guest_request(
        &self,
        request: &svsm::platform::MessagePage,
    ) -> Result<svsm::platform::MessagePage, svsm::platform::PspError> {
        self.inner.guest_request(request)
    }
}

/// A machine with two launch vCPUs (0 and 1, each with a calling area) and an SVSM on
/// a [`GatedPlatform`] that stops at `gate`.
struct GatedSetup {
    machine: SharedSnp,
    svsm: svsm::requests::Svsm<GatedPlatform>,
    boot_ca: u64,
    ap_ca: u64,
    entered: std::sync::mpsc::Receiver<()>,
    proceed: std::sync::mpsc::Sender<()>,
    _system: EmulatedSystem,
}

fn gated_setup(gate: GateAt) -> GatedSetup {
    use svsm::platform::{PageSize as RmpPageSize, Platform};
    use svsm::requests::{Svsm, SvsmConfig};

    let system = EmulatedSystem::standard().unwrap();
    let info = system.info().clone();
    let machine = system.shared_machine().clone();
    // A second guest VMSA (vCPU 1, in SVSM memory) and calling area, as a launch makes.
    let ap_vmsa = info.config.svsm_range.0 + 5 * PAGE_SIZE;
    let ap_ca = 0x20_0000;
    machine.load(ap_vmsa + vmsa::VMPL, &[2]).unwrap();
    machine
        .load(ap_vmsa + vmsa::EFER, &(vmsa::EFER_SVME).to_le_bytes())
        .unwrap();
    machine
        .rmpadjust(
            svsm::address::PhysAddr::new(ap_vmsa),
            RmpPageSize::Size4K,
            Vmpl::new(1).unwrap(),
            RmpPermissions::empty(),
            true,
        )
        .unwrap();
    machine
        .hv_ap_create(1, Vmpl::new(2).unwrap(), ap_vmsa)
        .unwrap();
    for page in [ap_ca, 0x20_1000, 0x20_2000] {
        machine.launch_pvalidate(page, RmpPageSize::Size4K).unwrap();
        machine
            .rmpadjust(
                svsm::address::PhysAddr::new(page),
                RmpPageSize::Size4K,
                Vmpl::new(2).unwrap(),
                RmpPermissions::RWX,
                false,
            )
            .unwrap();
    }

    let (entered_tx, entered_rx) = std::sync::mpsc::sync_channel(1);
    let (proceed_tx, proceed_rx) = std::sync::mpsc::channel();
    let layout = svsm::address::MemoryLayout::new(
        info.config.regions.clone(),
        info.config.svsm_range.0,
        info.config.svsm_range.1,
    )
    .unwrap();
    let svsm = Svsm::new(
        GatedPlatform {
            inner: machine.clone(),
            entered: entered_tx,
            proceed: std::sync::Mutex::new(proceed_rx),
            gate,
            efer_armed: std::sync::atomic::AtomicBool::new(true),
        },
        SvsmConfig {
            guest_vmpl: Vmpl::new(2).unwrap(),
            layout,
            apic_ids: info.config.apic_ids.clone(),
        },
        Services::new(),
    );
    svsm.register_launch_vcpu(
        0,
        svsm::address::PhysAddr::new(info.boot_vmsa),
        GuestPhysAddr::new(info.config.boot_ca),
    )
    .unwrap();
    svsm.register_launch_vcpu(
        1,
        svsm::address::PhysAddr::new(ap_vmsa),
        GuestPhysAddr::new(ap_ca),
    )
    .unwrap();
    GatedSetup {
        machine,
        svsm,
        boot_ca: info.config.boot_ca,
        ap_ca,
        entered: entered_rx,
        proceed: proceed_tx,
        _system: system,
    }
}

/// While one vCPU's PVALIDATE holds the registry, another vCPU's REMAP_CA gets BUSY and
/// changes nothing; retried with the same registers afterwards, it succeeds.
#[test]
fn busy_while_another_vcpu_holds_the_registry() {
    use svsm::platform::Platform;

    let GatedSetup {
        machine,
        svsm,
        boot_ca,
        ap_ca,
        entered: entered_rx,
        proceed: proceed_tx,
        ..
    } = gated_setup(GateAt::Pvalidate);
    let list = boot_ca + 8;
    let entry = PvalidateEntry::new(0x20_3000, PageSize::Size4K, true, false).unwrap();
    let mut bytes = vec![0u8; 16];
    svsm_protocol::core::encode_list(&[entry], 0, &mut bytes).unwrap();
    machine.guest_write(list, &bytes).unwrap();
    let remap = regs(CoreCall::RemapCa, 0x20_1000, 0, 0);
    std::thread::scope(|s| {
        machine
            .guest_begin_call(0, boot_ca, &regs(CoreCall::Pvalidate, list, 0, 0), true)
            .unwrap();
        let bsp = s.spawn(|| svsm.handle_request(0));
        entered_rx.recv().unwrap();
        machine.guest_begin_call(1, ap_ca, &remap, true).unwrap();
        let before = svsm.state_snapshot();
        assert_eq!(
            svsm.handle_request(1),
            RequestOutcome::Serviced(SvsmResultCode::BUSY)
        );
        assert_eq!(svsm.state_snapshot(), before, "BUSY changed the registry");
        proceed_tx.send(()).unwrap();
        assert_eq!(
            bsp.join().unwrap(),
            RequestOutcome::Serviced(SvsmResultCode::SUCCESS)
        );
    });
    machine.run_guest(1).unwrap();
    let ret = machine.guest_end_call(1, ap_ca).unwrap();
    assert_eq!(SvsmResultCode::from_raw(ret.regs.rax), SvsmResultCode::BUSY);
    // The guest retries with identical registers.
    machine.guest_begin_call(1, ap_ca, &remap, true).unwrap();
    proceed_tx.send(()).ok();
    assert_eq!(
        svsm.handle_request(1),
        RequestOutcome::Serviced(SvsmResultCode::SUCCESS)
    );
    assert_eq!(
        svsm.state_snapshot().vcpu(1).unwrap().calling_area,
        Some(0x20_1000)
    );
}

/// Audit finding: the request loop cleared the guest VMSA's EFER.SVME after dropping the
/// state lock, so a DELETE_VCPU on another vCPU could turn the page back into guest RAM
/// before the write landed in it. The write happens under the lock: while it is under
/// way, a call that needs the registry exclusively gets BUSY and changes nothing.
#[test]
fn the_efer_write_at_the_start_of_a_call_holds_the_registry() {
    use svsm::platform::Platform;

    let GatedSetup {
        machine,
        svsm,
        boot_ca,
        ap_ca,
        entered,
        proceed,
        ..
    } = gated_setup(GateAt::EferClear);
    let remap = regs(CoreCall::RemapCa, 0x20_1000, 0, 0);
    std::thread::scope(|s| {
        machine
            .guest_begin_call(0, boot_ca, &regs(CoreCall::QueryProtocol, 1, 0, 0), true)
            .unwrap();
        let bsp = s.spawn(|| svsm.handle_request(0));
        entered.recv().unwrap();
        machine.guest_begin_call(1, ap_ca, &remap, true).unwrap();
        let before = svsm.state_snapshot();
        let outcome = svsm.handle_request(1);
        let after = svsm.state_snapshot();
        // Let vCPU 0 go on before asserting, so a failure does not hang the test.
        proceed.send(()).unwrap();
        assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::BUSY));
        assert_eq!(after, before, "BUSY changed the registry");
        assert_eq!(
            bsp.join().unwrap(),
            RequestOutcome::Serviced(SvsmResultCode::SUCCESS)
        );
    });
    machine.run_guest(1).unwrap();
    let ret = machine.guest_end_call(1, ap_ca).unwrap();
    assert_eq!(SvsmResultCode::from_raw(ret.regs.rax), SvsmResultCode::BUSY);
    machine.guest_begin_call(1, ap_ca, &remap, true).unwrap();
    assert_eq!(
        svsm.handle_request(1),
        RequestOutcome::Serviced(SvsmResultCode::SUCCESS)
    );
}

/// Audit finding: a VMSA deleted and created again on the same page while its vCPU was
/// inside a call looked like the same VMSA to the write-back, which wrote the old call's
/// results into the new vCPU's registers. Each registration has its own generation: the
/// results are dropped and the new VMSA keeps what the guest put in it.
#[test]
fn results_never_reach_a_vmsa_recreated_on_the_same_page_during_the_call() {
    let (entered_tx, entered_rx) = std::sync::mpsc::sync_channel(1);
    let (proceed_tx, proceed_rx) = std::sync::mpsc::channel();
    let services = Services::new().with_attestation(Box::new(Gate {
        entered: entered_tx,
        proceed: std::sync::Mutex::new(proceed_rx),
    }));
    let system = EmulatedSystem::launch(LaunchConfig::default(), services).unwrap();
    let guest = GuestDriver::new(&system);
    guest
        .pvalidate_linux(0, 0x20_0000, 0x40_0000, true)
        .unwrap();
    guest
        .start_ap(GuestKind::Linux, 0, 1, AP1_VMSA, AP1_CA)
        .unwrap();
    std::thread::scope(|s| {
        let ap = s.spawn(|| {
            guest.call_once(
                1,
                &CallRegisters {
                    rax: 1 << 32,
                    rcx: 7,
                    ..Default::default()
                },
            )
        });
        entered_rx.recv().unwrap();
        guest
            .call_ok(0, &regs(CoreCall::DeleteVcpu, AP1_VMSA, 0, 0))
            .unwrap();
        // The same page becomes vCPU 1's VMSA again.
        guest
            .start_ap(GuestKind::Linux, 0, 1, AP1_VMSA, AP1_CA)
            .unwrap();
        proceed_tx.send(()).unwrap();
        let _ = ap.join().unwrap();
    });
    // The Gate's result (RCX = 42, RAX = SUCCESS) did not reach the new VMSA.
    let mut reg = [0u8; 8];
    system
        .machine()
        .peek(AP1_VMSA + vmsa::RCX, &mut reg)
        .unwrap();
    assert_ne!(u64::from_le_bytes(reg), 42);
    let entry = system.machine().rmp_entry(AP1_VMSA).unwrap();
    assert!(entry.vmsa);
    check(&system);
}

/// Audit finding: on SEV-SNP, `vmsa_running` always answers "no", so DELETE_VCPU of a
/// VMSA its vCPU is executing reaches RMPADJUST, which fails with FAIL_INUSE (3); that
/// was decoded as FAIL_INPUT and answered INVALID_PARAMETER. The model now refuses
/// RMPADJUST on a running VMSA as hardware does, and the guest gets BUSY with nothing
/// changed but the cleared SVME; once the vCPU has exited, the retry succeeds.
#[test]
fn delete_vcpu_of_a_running_vmsa_on_snp_is_busy_until_it_exits() {
    let system = EmulatedSystem::standard().unwrap();
    let guest = GuestDriver::new(&system);
    guest
        .pvalidate_linux(0, 0x20_0000, 0x40_0000, true)
        .unwrap();
    guest
        .start_ap(GuestKind::Linux, 0, 1, AP1_VMSA, AP1_CA)
        .unwrap();
    let machine = system.machine();
    machine.set_vmsa_running_visible(false);
    let registry = system.svsm().state_snapshot();
    let delete = regs(CoreCall::DeleteVcpu, AP1_VMSA, 0, 0);
    let ret = guest.call_once(0, &delete).unwrap();
    assert_eq!(SvsmResultCode::from_raw(ret.regs.rax), SvsmResultCode::BUSY);
    assert_eq!(system.svsm().state_snapshot(), registry);
    let entry = machine.rmp_entry(AP1_VMSA).unwrap();
    assert!(entry.vmsa);
    assert!(entry.perms[2].is_empty());
    check(&system);
    // vCPU 1 exits to VMPL0 (it makes a call); its VMSA is no longer in use.
    machine
        .guest_begin_call(1, AP1_CA, &regs(CoreCall::QueryProtocol, 0, 0, 0), true)
        .unwrap();
    let ret = guest.call_once(0, &delete).unwrap();
    assert_eq!(
        SvsmResultCode::from_raw(ret.regs.rax),
        SvsmResultCode::SUCCESS
    );
    let entry = machine.rmp_entry(AP1_VMSA).unwrap();
    assert!(!entry.vmsa);
    assert_eq!(entry.perms[2], RmpPermissions::RWX);
    check(&system);
}
