//! The SVSM's SEV-SNP start-up and guest launch on the emulated machine, checked from
//! the guest's side: what OVMF and then Linux read at VMPL2.
//!
//! The machine is laid out the way an IGVM launch leaves it (SVSM memory validated and
//! private to VMPL0, the PSP's secrets and CPUID pages in it, the firmware image
//! validated, the firmware's scratch memory left shared); `SnpMachine::boot` then runs
//! the same start-up code the kernel runs on hardware (GHCB negotiation and set-up,
//! CPUID page and C-bit, secrets, guest memory validation, the boot VMSA).

use svsm::platform::{RmpPermissions, Vmpl, PAGE_SIZE};
use svsm::requests::{CallRegisters, RequestOutcome};
use svsm_emulated::hypervisor::{SnpMachine, SnpMachineConfig};
use svsm_emulated::GuestFault;
use svsm_protocol::call::{Call, CoreCall};
use svsm_protocol::secrets::SecretsPage;
use svsm_protocol::vmsa::{SevFeatures, Vmsa};
use svsm_protocol::SvsmResultCode;

fn booted() -> SnpMachine {
    SnpMachine::boot(SnpMachineConfig::default()).expect("SNP boot on the emulated machine")
}

const VMPL2: usize = 2;

fn u64_at(page: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(page[offset..offset + 8].try_into().unwrap())
}

#[test]
fn start_up_negotiated_and_registered_a_shared_ghcb_per_vcpu() {
    let m = booted();
    assert_eq!(m.start().cbit, 51);
    assert_eq!(m.start().hypervisor.max_version, 2);
    let registered = m.hypervisor().registered_ghcbs();
    for &(apic_id, gpa) in &m.layout().ghcbs {
        assert!(
            registered.contains(&(apic_id, gpa / PAGE_SIZE)),
            "{apic_id}"
        );
        let entry = m.machine().rmp_entry(gpa).unwrap();
        assert!(!entry.assigned, "the GHCB must be shared");
    }
    assert_eq!(m.hypervisor().terminated(), None);
}

#[test]
fn linux_reads_its_secrets_page_with_the_svsm_fields_and_no_vmpck0_or_1() {
    let m = booted();
    let fw = m.config().firmware;
    let page = m
        .guest_page(fw.secrets_gpa)
        .expect("the guest can read its secrets copy");
    let secrets = SecretsPage::parse(&page).unwrap();
    let info = secrets.svsm_info().expect("svsm_size is not zero");
    let (svsm_start, svsm_end) = m.config().svsm_range;
    assert_eq!(info.base, svsm_start);
    assert_eq!(info.size, svsm_end - svsm_start);
    assert_eq!(info.caa, fw.caa_gpa);
    assert_eq!(info.caa % PAGE_SIZE, 0);
    assert_eq!(info.max_version, 1);
    assert_eq!(info.guest_vmpl, 2);
    assert_eq!(secrets.vmpck0, [0; 32]);
    assert_eq!(secrets.vmpck1, [0; 32]);
    assert_eq!(secrets.vmpck2, [0xA3; 32]);
    assert_eq!(secrets.vmpck3, [0xA4; 32]);
    // Everything else is the PSP's page.
    let psp = m.config().secrets;
    assert_eq!(page[..0x20], psp[..0x20]);
    assert_eq!(page[0xA0..0x140], psp[0xA0..0x140]);
    // The SVSM kept VMPCK0 for itself.
    assert_eq!(m.secrets().vmpck0(), &[0xA1; 32]);
}

#[test]
fn the_guest_cannot_reach_svsm_memory_or_the_psp_pages() {
    let m = booted();
    let (start, end) = m.config().svsm_range;
    for addr in (start..end).step_by(0x4_0000) {
        let e = m.machine().rmp_entry(addr).unwrap();
        if !e.assigned {
            continue; // a GHCB
        }
        assert_eq!(
            e.perms_of(Vmpl::new(2).unwrap()),
            RmpPermissions::empty(),
            "{addr:#x}"
        );
        assert_eq!(m.guest_page(addr).unwrap_err(), GuestFault::Permission);
    }
    for addr in [m.layout().secrets, m.layout().cpuid, m.layout().guest_vmsa] {
        assert_eq!(
            m.guest_page(addr).unwrap_err(),
            GuestFault::Permission,
            "{addr:#x}"
        );
    }
    // The guest's memory map check refuses SVSM memory.
    assert!(!m.is_guest_memory(start));
}

#[test]
fn firmware_memory_is_validated_zeroed_and_given_to_vmpl2() {
    let m = booted();
    let fw = m.config().firmware;
    let vmpl2 = Vmpl::new(2).unwrap();
    for range in fw.sec_mem.iter().take(fw.sec_mem_count as usize) {
        for addr in (range.base..range.base + range.size).step_by(PAGE_SIZE as usize) {
            let e = m.machine().rmp_entry(addr).unwrap();
            assert!(e.assigned && e.validated, "{addr:#x}");
            assert_eq!(e.perms_of(vmpl2), RmpPermissions::RWX, "{addr:#x}");
            assert!(!e.vmsa);
            assert_eq!(m.guest_page(addr).unwrap(), [0u8; 4096], "{addr:#x}");
        }
    }
    // The image keeps its contents and is executable at VMPL2.
    let image = m.guest_page(fw.image.base).unwrap();
    assert_eq!(&image[..], &m.config().firmware_bytes[..4096]);
    let e = m.machine().rmp_entry(fw.image.base).unwrap();
    assert!(e.perms_of(vmpl2).contains(RmpPermissions::SUPERVISOR_EXEC));
    // The scratch memory was shared at launch: the SVSM had it made private.
    assert!(m.summary().pages_made_private > 0);
    // A page the firmware did not ask for stays unvalidated (the guest validates it).
    let other = 0x50_0000;
    assert_eq!(m.guest_page(other).unwrap_err(), GuestFault::NotValidated);
}

#[test]
fn the_cpuid_copy_is_the_psp_page_and_the_calling_area_is_zero() {
    let m = booted();
    let fw = m.config().firmware;
    let mut psp = [0u8; 4096];
    m.machine().peek(m.layout().cpuid, &mut psp).unwrap();
    assert_eq!(m.guest_page(fw.cpuid_gpa).unwrap(), psp);
    assert_eq!(m.guest_page(fw.caa_gpa).unwrap(), [0u8; 4096]);
    m.machine().guest_write(fw.caa_gpa + 8, &[1, 2, 3]).unwrap();
}

#[test]
fn the_boot_vmsa_is_the_reset_state_at_vmpl2_with_filtered_features() {
    let m = booted();
    let addr = m.layout().guest_vmsa;
    let mut bytes = [0u8; 4096];
    m.machine().peek(addr, &mut bytes).unwrap();
    let v = Vmsa::parse(&bytes).unwrap();
    assert_eq!(v.vmpl, 2);
    assert_eq!(
        (v.cs.selector, v.cs.base, v.rip),
        (0xF000, 0xFFFF_0000, 0xFFF0)
    );
    assert_eq!(v.cr0, 0x6000_0010);
    assert!(v.is_runnable());
    // SEV_STATUS 0b1010_0111: SNP, restricted injection, debug swap; the guest gets SNP.
    assert_eq!(v.features(), SevFeatures::SNP_ACTIVE);
    assert_eq!(u64_at(&bytes, 0x3B0), 1);
    let e = m.machine().rmp_entry(addr).unwrap();
    assert!(e.vmsa && e.validated);
    // Registered with the hypervisor as the boot vCPU's VMPL2 VMSA.
    let bsp = m
        .machine()
        .vcpus()
        .into_iter()
        .find(|c| c.apic_id == m.bsp())
        .unwrap();
    assert_eq!(bsp.vmsas[VMPL2], Some(addr));
}

#[test]
fn a_call_runs_through_the_ghcb_run_vmpl_protocol() {
    let m = booted();
    m.start_guest().unwrap();
    let runs = m.hypervisor().runs();
    let regs = CallRegisters {
        rax: Call::Core(CoreCall::QueryProtocol).to_rax(),
        rcx: 1, // protocol 0, version 1
        ..Default::default()
    };
    let (outcome, run, ret) = m.call(m.bsp(), m.caa(), &regs).unwrap();
    assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::SUCCESS));
    run.unwrap();
    assert_eq!(ret.pending, 0);
    assert_eq!(ret.regs.rax, 0);
    assert_eq!(ret.regs.rcx, (1 << 32) | 1);
    assert_eq!(m.hypervisor().runs(), runs + 1);
}

#[test]
fn the_guest_validates_its_memory_through_the_svsm() {
    let m = booted();
    m.start_guest().unwrap();
    // A one-entry PVALIDATE list in the calling area's buffer: validate 0x50_0000.
    let ca = m.caa();
    let mut list = [0u8; 16];
    list[0..2].copy_from_slice(&1u16.to_le_bytes());
    list[8..16].copy_from_slice(&(0x50_0000u64 | 1 << 2).to_le_bytes());
    m.machine().guest_write(ca + 8, &list).unwrap();
    let regs = CallRegisters {
        rax: Call::Core(CoreCall::Pvalidate).to_rax(),
        rcx: ca + 8,
        ..Default::default()
    };
    let (outcome, _, ret) = m.call(m.bsp(), ca, &regs).unwrap();
    assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::SUCCESS));
    assert_eq!(ret.regs.rax, 0);
    assert!(m.machine().rmp_entry(0x50_0000).unwrap().validated);
}

/// PVALIDATE one 4 KiB page for the guest through the SVSM (a one-entry list in the
/// boot calling area's buffer).
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

#[test]
fn an_ap_created_by_the_guest_calls_through_its_own_ghcb() {
    let m = booted();
    m.start_guest().unwrap();
    let (vmsa, ca) = (0x50_0000, 0x50_1000);
    guest_pvalidate(&m, vmsa);
    guest_pvalidate(&m, ca);
    // The guest fills the AP's VMSA as Linux does: VMPL2, EFER.SVME, its features.
    let mut boot = [0u8; 4096];
    m.machine().peek(m.layout().guest_vmsa, &mut boot).unwrap();
    let mut page = [0u8; 4096];
    page[0xCA] = 2;
    page[0xD0..0xD8].copy_from_slice(&0x1D00u64.to_le_bytes());
    page[0x3B0..0x3B8].copy_from_slice(&boot[0x3B0..0x3B8]);
    m.machine().guest_write(vmsa, &page).unwrap();
    m.machine().guest_write(ca, &[0u8; 4096]).unwrap();
    let regs = CallRegisters {
        rax: Call::Core(CoreCall::CreateVcpu).to_rax(),
        rcx: vmsa,
        rdx: ca,
        r8: 1,
        ..Default::default()
    };
    let (outcome, _, ret) = m.call(m.bsp(), m.caa(), &regs).unwrap();
    assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::SUCCESS));
    assert_eq!(ret.regs.rax, 0);
    // The page is a VMSA now: the guest can no longer write it.
    assert!(m.machine().rmp_entry(vmsa).unwrap().vmsa);
    assert_eq!(
        m.machine().guest_write(vmsa, &[0]).unwrap_err(),
        GuestFault::Permission
    );
    // The guest asks the hypervisor to start it; its calls then come through vCPU 1's
    // own GHCB (run VMPL on that vCPU).
    m.machine()
        .hv_ap_create(1, Vmpl::new(2).unwrap(), vmsa)
        .unwrap();
    let runs = m.hypervisor().runs();
    let query = CallRegisters {
        rax: Call::Core(CoreCall::QueryProtocol).to_rax(),
        rcx: 1,
        ..Default::default()
    };
    let (outcome, run, ret) = m.call(1, ca, &query).unwrap();
    assert_eq!(outcome, RequestOutcome::Serviced(SvsmResultCode::SUCCESS));
    run.unwrap();
    assert_eq!(ret.regs.rcx, (1 << 32) | 1);
    assert_eq!(m.hypervisor().runs(), runs + 1);
}
