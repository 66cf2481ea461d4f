//! SVSM vCPUs on the emulated SEV-SNP machine: one VMPL0 vCPU per guest APIC ID,
//! created by the boot vCPU before the guest runs, with the same plan and creation
//! code the kernel runs on hardware (`svsm::snp::svsm_vcpus`).
//!
//! Checked from outside: every APIC ID of the parameters has a VMPL0 VMSA registered
//! with the hypervisor (AP creation at VMPL0), in SVSM memory, with the RMP VMSA bit,
//! out of the guest VMPL's reach, and its own registered GHCB; a guest vCPU that the
//! guest creates (CREATE_VCPU, then AP creation at VMPL2) is serviced on the SVSM vCPU
//! of its APIC ID; hostile requests get the specification's error and change nothing.

use svsm::platform::{RmpPermissions, Vmpl, PAGE_SIZE};
use svsm::requests::{CallRegisters, RequestOutcome};
use svsm::snp::svsm_vcpus::{self, PlannedVcpu, VcpuPlanError};
use svsm::snp::{GhcbError, SnpError, TerminateReason};
use svsm_emulated::hypervisor::{Hostility, SnpMachine, SnpMachineConfig};
use svsm_emulated::vcpus::{ap_registers, MachineMemory, ENTRY_OFFSET};
use svsm_emulated::{GuestFault, VcpuMode};
use svsm_protocol::call::{Call, CoreCall};
use svsm_protocol::vmsa::{SevFeatures, Vmsa};
use svsm_protocol::SvsmResultCode;

const VMPL0: usize = 0;
const VMPL2: usize = 2;
const APIC_IDS: [u32; 4] = [0, 1, 2, 3];

fn booted() -> SnpMachine {
    SnpMachine::boot(SnpMachineConfig {
        apic_ids: APIC_IDS.to_vec(),
        ..Default::default()
    })
    .expect("SNP boot on the emulated machine")
}

fn vmsa_at(m: &SnpMachine, gpa: u64) -> Vmsa {
    let mut page = [0u8; 4096];
    m.machine().peek(gpa, &mut page).unwrap();
    Vmsa::parse(&page).unwrap()
}

fn vcpu(m: &SnpMachine, apic_id: u32) -> svsm_emulated::machine::Vcpu {
    m.machine()
        .vcpus()
        .into_iter()
        .find(|v| v.apic_id == apic_id)
        .unwrap()
}

#[test]
fn every_other_apic_id_has_a_vmpl0_svsm_vcpu_registered_with_the_hypervisor() {
    let m = booted();
    let plan = m.svsm_vcpus();
    assert_eq!(plan.bsp, 0);
    assert_eq!(
        plan.aps
            .iter()
            .map(|v| (v.apic_id, v.index))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2), (3, 3)]
    );
    let (start, end) = m.config().svsm_range;
    let features = SevFeatures::from_sev_status(m.config().sev_status);
    let mut seen = Vec::new();
    for v in &plan.aps {
        assert!(
            (start..end).contains(&v.vmsa),
            "VMSA {:#x} in SVSM memory",
            v.vmsa
        );
        assert_ne!(v.vmsa % (2 << 20), 0, "never 2 MiB aligned");
        assert!(!seen.contains(&v.vmsa) && !seen.contains(&v.ghcb));
        seen.extend([v.vmsa, v.ghcb]);
        // The hypervisor runs this page as vCPU n's VMPL0 VMSA.
        assert_eq!(vcpu(&m, v.apic_id).vmsas[VMPL0], Some(v.vmsa));
        let e = m.machine().rmp_entry(v.vmsa).unwrap();
        assert!(e.assigned && e.validated && e.vmsa, "{e:?}");
        // What the vCPU starts with: VMPL0, long mode, its own index, stack and FS.
        let s = vmsa_at(&m, v.vmsa);
        assert_eq!((s.vmpl, s.cpl), (0, 0));
        assert_eq!(s.efer, 0x1D00);
        assert_eq!(s.sev_features, features.bits());
        assert_eq!(s.rip, start + ENTRY_OFFSET);
        assert_eq!(s.rdi, v.index as u64);
        let regs = ap_registers(start, v.index, m.config().sev_status);
        assert_eq!(
            (s.rsp, s.fs.base, s.cr3),
            (regs.rsp, regs.fs_base, regs.cr3)
        );
        assert_eq!((s.cs.selector, s.cs.attrib), (0x08, 0xA9B));
    }
    // The boot vCPU has no second VMPL0 VMSA: it already runs.
    assert_eq!(vcpu(&m, 0).vmsas[VMPL0], None);
    assert_eq!(m.hypervisor().terminated(), None);
}

#[test]
fn svsm_vmsas_are_out_of_the_guest_vmpls_reach() {
    let m = booted();
    for v in &m.svsm_vcpus().aps {
        let e = m.machine().rmp_entry(v.vmsa).unwrap();
        for vmpl in 1..4 {
            assert_eq!(e.perms[vmpl], RmpPermissions::empty(), "VMPL{vmpl}");
        }
        let mut byte = [0u8; 1];
        assert_eq!(
            m.machine().guest_read(v.vmsa, &mut byte).unwrap_err(),
            GuestFault::Permission
        );
        assert_eq!(
            m.machine().guest_write(v.vmsa, &[0xCC]).unwrap_err(),
            GuestFault::Permission
        );
        assert!(
            !m.is_guest_memory(v.vmsa),
            "the SVSM's checks refuse it too"
        );
    }
}

#[test]
fn each_svsm_vcpu_has_its_own_registered_shared_ghcb() {
    let m = booted();
    let registered = m.hypervisor().registered_ghcbs();
    for v in &m.svsm_vcpus().aps {
        assert!(
            registered.contains(&(v.apic_id, v.ghcb / PAGE_SIZE)),
            "vCPU {} registered {:#x}",
            v.apic_id,
            v.ghcb
        );
        assert!(!m.machine().rmp_entry(v.ghcb).unwrap().assigned, "shared");
    }
}

/// PVALIDATE one 4 KiB page for the guest through the SVSM (the boot calling area).
fn guest_pvalidate(m: &SnpMachine, gpa: u64) {
    let ca = m.caa();
    let mut list = [0u8; 16];
    list[0..2].copy_from_slice(&1u16.to_le_bytes());
    list[8..16].copy_from_slice(&(gpa | 1 << 2).to_le_bytes());
    m.machine().guest_write(ca + 8, &list).unwrap();
    let regs = CallRegisters {
        rax: Call::Core(CoreCall::Pvalidate).to_rax(),
        rcx: ca + 8,
        ..Default::default()
    };
    let (outcome, _, _) = m.call(m.bsp(), ca, &regs).unwrap();
    assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::SUCCESS));
}

/// A guest VMSA page as Linux fills it for an AP: VMPL2, EFER.SVME, its features.
fn prepare_guest_vmsa(m: &SnpMachine, gpa: u64) {
    let mut boot = [0u8; 4096];
    m.machine().peek(m.layout().guest_vmsa, &mut boot).unwrap();
    let mut page = [0u8; 4096];
    page[0xCA] = 2;
    page[0xD0..0xD8].copy_from_slice(&0x1D00u64.to_le_bytes());
    page[0x3B0..0x3B8].copy_from_slice(&boot[0x3B0..0x3B8]);
    m.machine().guest_write(gpa, &page).unwrap();
}

fn create_vcpu_regs(vmsa: u64, ca: u64, apic_id: u32) -> CallRegisters {
    CallRegisters {
        rax: Call::Core(CoreCall::CreateVcpu).to_rax(),
        rcx: vmsa,
        rdx: ca,
        r8: u64::from(apic_id),
        ..Default::default()
    }
}

fn query() -> CallRegisters {
    CallRegisters {
        rax: Call::Core(CoreCall::QueryProtocol).to_rax(),
        rcx: 1,
        ..Default::default()
    }
}

#[test]
fn the_guests_vcpu_n_is_serviced_by_svsm_vcpu_n() {
    let m = booted();
    m.start_guest().unwrap();
    for (n, base) in [(2u32, 0x50_0000u64), (3, 0x52_0000), (1, 0x54_0000)] {
        let (vmsa, ca) = (base, base + PAGE_SIZE);
        guest_pvalidate(&m, vmsa);
        guest_pvalidate(&m, ca);
        prepare_guest_vmsa(&m, vmsa);
        m.machine().guest_write(ca, &[0u8; 4096]).unwrap();
        let (outcome, _, ret) = m
            .call(m.bsp(), m.caa(), &create_vcpu_regs(vmsa, ca, n))
            .unwrap();
        assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::SUCCESS));
        assert_eq!(ret.regs.rax, 0);
        // The guest starts its AP through the hypervisor, at its own VMPL.
        m.machine()
            .hv_ap_create(n, Vmpl::new(2).unwrap(), vmsa)
            .unwrap();
        let svsm_vmsa = m.svsm_vcpus().get(n).unwrap().vmsa;
        let v = vcpu(&m, n);
        assert_eq!(v.vmsas[VMPL0], Some(svsm_vmsa), "SVSM vCPU {n} behind it");
        assert_eq!(v.vmsas[VMPL2], Some(vmsa));
        // Its call reaches the request loop for APIC ID n (the SVSM vCPU of that ID),
        // which switches back through vCPU n's run-VMPL request.
        let runs = m.hypervisor().runs();
        let (outcome, run, ret) = m.call(n, ca, &query()).unwrap();
        assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::SUCCESS));
        run.unwrap();
        assert_eq!(ret.pending, 0);
        assert_eq!(ret.regs.rcx, (1 << 32) | 1);
        assert_eq!(m.hypervisor().runs(), runs + 1);
        assert_eq!(vcpu(&m, n).mode, VcpuMode::Guest);
        // Another vCPU's loop finds no call of the guest's vCPU n.
        let other = if n == 1 { 2 } else { 1 };
        assert!(matches!(
            m.svsm().handle_request(other),
            RequestOutcome::NotServiced(_)
        ));
    }
}

#[test]
fn create_vcpu_for_an_unknown_apic_id_is_refused_and_changes_nothing() {
    let m = booted();
    m.start_guest().unwrap();
    let (vmsa, ca) = (0x50_0000, 0x50_1000);
    guest_pvalidate(&m, vmsa);
    guest_pvalidate(&m, ca);
    prepare_guest_vmsa(&m, vmsa);
    let before_rmp = m.machine().rmp_entry(vmsa).unwrap();
    let before_state = m.svsm().state_snapshot();
    let before_vcpus = m.machine().vcpus();
    let (outcome, _, ret) = m
        .call(m.bsp(), m.caa(), &create_vcpu_regs(vmsa, ca, 9))
        .unwrap();
    assert_eq!(
        outcome,
        RequestOutcome::Serviced(SvsmResultCode::INVALID_PARAMETER)
    );
    assert_eq!(ret.regs.rax, SvsmResultCode::INVALID_PARAMETER.raw());
    assert_eq!(m.machine().rmp_entry(vmsa).unwrap(), before_rmp);
    assert_eq!(
        format!("{:?}", m.svsm().state_snapshot()),
        format!("{before_state:?}")
    );
    assert_eq!(
        m.machine()
            .vcpus()
            .iter()
            .map(|v| v.vmsas)
            .collect::<Vec<_>>(),
        before_vcpus.iter().map(|v| v.vmsas).collect::<Vec<_>>()
    );
}

#[test]
fn create_vcpu_on_an_svsm_vmsa_page_is_refused_and_changes_nothing() {
    let m = booted();
    m.start_guest().unwrap();
    let ca = 0x50_1000;
    guest_pvalidate(&m, ca);
    for target in m.svsm_vcpus().aps.clone() {
        let before = m.machine().snapshot();
        let (outcome, _, ret) = m
            .call(
                m.bsp(),
                m.caa(),
                &create_vcpu_regs(target.vmsa, ca, target.apic_id),
            )
            .unwrap();
        assert_eq!(
            outcome,
            RequestOutcome::Serviced(SvsmResultCode::INVALID_ADDRESS)
        );
        assert_eq!(ret.regs.rax, SvsmResultCode::INVALID_ADDRESS.raw());
        let after = m.machine().snapshot();
        assert_eq!(after.pages, before.pages, "no RMP change");
        assert_eq!(
            after.vcpus.iter().map(|v| v.vmsas).collect::<Vec<_>>(),
            before.vcpus.iter().map(|v| v.vmsas).collect::<Vec<_>>()
        );
        let svsm_vmsa = vmsa_at(&m, target.vmsa);
        assert_eq!(svsm_vmsa.vmpl, 0, "the SVSM's VMSA is untouched");
        // As the calling area, too.
        let (outcome, _, _) = m
            .call(
                m.bsp(),
                m.caa(),
                &create_vcpu_regs(0x50_0000, target.vmsa, target.apic_id),
            )
            .unwrap();
        assert!(
            matches!(
                outcome,
                RequestOutcome::Serviced(c) if c == SvsmResultCode::INVALID_ADDRESS
                    || c == SvsmResultCode::INVALID_PARAMETER
            ),
            "{outcome:?}"
        );
        assert_eq!(vcpu(&m, target.apic_id).vmsas[VMPL0], Some(target.vmsa));
    }
}

#[test]
fn a_second_create_vcpu_with_the_same_vmsa_is_refused_and_changes_nothing() {
    let m = booted();
    m.start_guest().unwrap();
    let (vmsa, ca) = (0x50_0000, 0x50_1000);
    guest_pvalidate(&m, vmsa);
    guest_pvalidate(&m, ca);
    prepare_guest_vmsa(&m, vmsa);
    let (outcome, _, _) = m
        .call(m.bsp(), m.caa(), &create_vcpu_regs(vmsa, ca, 1))
        .unwrap();
    assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::SUCCESS));
    let before = m.machine().snapshot();
    let state = format!("{:?}", m.svsm().state_snapshot());
    for apic_id in [1, 2] {
        let (outcome, _, _) = m
            .call(m.bsp(), m.caa(), &create_vcpu_regs(vmsa, ca, apic_id))
            .unwrap();
        assert_eq!(
            outcome,
            RequestOutcome::Serviced(SvsmResultCode::INVALID_ADDRESS),
            "APIC ID {apic_id}"
        );
    }
    let after = m.machine().snapshot();
    assert_eq!(after.pages, before.pages);
    assert_eq!(format!("{:?}", m.svsm().state_snapshot()), state);
}

#[test]
fn duplicate_apic_ids_in_the_parameters_end_the_boot_with_the_launch_reason() {
    // Without restricted injection (no per-vCPU #HV doorbell to register first), so
    // the SVSM vCPU plan is what sees the duplicate.
    let failure = SnpMachine::boot(SnpMachineConfig {
        apic_ids: vec![0, 1, 1],
        sev_status: 0b1000_0111,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        failure.error,
        SnpError::SvsmVcpus(VcpuPlanError::DuplicateApicId(1))
    );
    assert_eq!(
        failure.terminated,
        Some(TerminateReason { set: 3, code: 8 })
    );
}

#[test]
fn a_refused_ap_creation_leaves_no_vmsa_bit_behind() {
    let m = booted();
    let (start, end) = m.config().svsm_range;
    // A fresh SVSM page (below the ones the plan took) as the VMSA of a new vCPU.
    let page = end - 16 * PAGE_SIZE;
    let planned = PlannedVcpu {
        apic_id: 3,
        index: 3,
        vmsa: page,
        ghcb: m.svsm_vcpus().get(3).unwrap().ghcb,
    };
    let before = m.machine().rmp_entry(page).unwrap();
    let vmsas_before = vcpu(&m, 3).vmsas;
    m.hypervisor().set_hostility(Hostility {
        page_error: Some((2, 0)),
        ..Default::default()
    });
    let hv = m.platform().bsp_client().unwrap();
    let regs = ap_registers(start, 3, m.config().sev_status);
    let err = svsm_vcpus::create_vcpu(
        m.platform(),
        &MachineMemory(m.machine()),
        hv,
        &planned,
        &regs,
    )
    .unwrap_err();
    assert!(
        matches!(err, SnpError::Ghcb(GhcbError::Vmm { info1: 2, .. })),
        "{err:?}"
    );
    assert_eq!(m.machine().rmp_entry(page).unwrap(), before);
    assert!(!m.machine().rmp_entry(page).unwrap().vmsa);
    // This hypervisor lied: it installed the VMSA and reported failure. Whatever it
    // kept, the page has no VMSA bit any more, so the hardware will not run it.
    let now = vcpu(&m, 3).vmsas;
    assert!(now[VMPL0] == vmsas_before[VMPL0] || now[VMPL0] == Some(page));
    assert_eq!(now[1..], vmsas_before[1..]);
    // A 2 MiB-aligned page is never made a VMSA, whatever the caller plans.
    let aligned = PlannedVcpu {
        vmsa: start,
        ..planned
    };
    m.hypervisor().set_hostility(Hostility::default());
    assert_eq!(
        svsm_vcpus::create_vcpu(
            m.platform(),
            &MachineMemory(m.machine()),
            hv,
            &aligned,
            &regs
        )
        .unwrap_err(),
        SnpError::SvsmVcpus(VcpuPlanError::UnalignedPage(start))
    );
    assert!(!m.machine().rmp_entry(start).unwrap().vmsa);
}
