//! Random sequences of well-formed and malformed core calls from several vCPUs, with the
//! isolation invariants checked after every step.
//!
//! After each call: the invariants of `svsm_tests::invariants` hold; a call that was
//! refused (and is not BUSY, nor a PVALIDATE that made progress) changed nothing but
//! the caller's VMSA registers; every PVALIDATE entry the SVSM reports as done left its
//! pages validated with RWX for the guest, or rescinded with no lower-VMPL access.

use proptest::prelude::*;
use svsm::platform::{RmpPermissions, PAGE_SIZE};
use svsm::requests::{vmsa, CallRegisters, RequestOutcome};
use svsm_protocol::call::CoreCall;
use svsm_protocol::calling_area::BUFFER_OFFSET;
use svsm_protocol::SvsmResultCode as Code;
use svsm_tests::driver::GuestDriver;
use svsm_tests::fixtures::*;
use svsm_tests::invariants;

/// Pages the random calls aim at: ordinary guest pages, pages that are not the guest's,
/// VMSAs, calling areas, odd memory.
fn pool(p: &Prepared) -> Vec<u64> {
    vec![
        GUEST_PAGE,
        SPARE_PAGE,
        LIST_PAGE,
        UNVALIDATED_PAGE,
        NEW_VMSA_PAGE,
        NEW_CA_PAGE,
        NEW_VMSA_PAGE + 0x2000,
        NEW_CA_PAGE + 0x2000,
        AP1_VMSA,
        AP1_CA,
        p.boot_ca(),
        p.boot_vmsa(),
        p.vmpl0_vmsa(),
        p.svsm_start(),
        p.svsm_start() + 0x1F_F000,
        ROM_PAGE,
        MMIO_LOW,
        MMIO_HIGH,
        SMALL_CHUNK,
        SMALL_CHUNK + 0x1000,
        0x20_0000,
        0x60_0000,
        0xA0_0000,
        BEYOND,
        0,
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Pvalidate {
        vcpu: u32,
        entries: Vec<(usize, bool, bool, bool, u64)>,
        count_delta: i8,
        next: u16,
    },
    RemapCa {
        vcpu: u32,
        page: usize,
        misalign: u64,
    },
    CreateVcpu {
        vcpu: u32,
        vmsa: usize,
        ca: usize,
        apic: u32,
        prepare: bool,
        bad_vmpl: bool,
    },
    DeleteVcpu {
        vcpu: u32,
        page: usize,
        destroy_first: bool,
    },
    Raw {
        vcpu: u32,
        rax: u64,
        rcx: u64,
        rdx: u64,
        r8: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let vcpu = 0u32..4;
    let page = 0usize..25;
    prop_oneof![
        4 => (
            vcpu.clone(),
            prop::collection::vec((page.clone(), any::<bool>(), any::<bool>(), any::<bool>(), prop_oneof![9 => Just(0u64), 1 => 0u64..0x1000]), 1..6),
            -1i8..2,
            0u16..3,
        )
            .prop_map(|(vcpu, entries, count_delta, next)| Op::Pvalidate { vcpu, entries, count_delta, next }),
        2 => (vcpu.clone(), page.clone(), prop_oneof![4 => Just(0u64), 1 => 1u64..0x1000])
            .prop_map(|(vcpu, page, misalign)| Op::RemapCa { vcpu, page, misalign }),
        2 => (vcpu.clone(), page.clone(), page.clone(), 0u32..6, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(vcpu, vmsa, ca, apic, prepare, bad_vmpl)| Op::CreateVcpu { vcpu, vmsa, ca, apic, prepare, bad_vmpl }),
        1 => (vcpu.clone(), page.clone(), any::<bool>())
            .prop_map(|(vcpu, page, destroy_first)| Op::DeleteVcpu { vcpu, page, destroy_first }),
        1 => (vcpu, prop_oneof![Just(6u64), Just(7), any::<u64>(), 0u64..16, (0u64..4).prop_map(|p| p << 32)], any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(vcpu, rax, rcx, rdx, r8)| Op::Raw { vcpu, rax, rcx, rdx, r8 }),
    ]
}

fn core(call: CoreCall, rcx: u64, rdx: u64, r8: u64) -> CallRegisters {
    GuestDriver::core_regs(call, rcx, rdx, r8)
}

/// Makes one call from `vcpu`; `None` if the guest cannot make it (no VMSA, its
/// calling area is gone) or the SVSM did not service it.
fn call(p: &Prepared, guest: &GuestDriver<'_>, vcpu: u32, regs: &CallRegisters) -> Option<Code> {
    let ca = guest.calling_area(vcpu)?;
    let m = p.system.machine();
    m.guest_begin_call(vcpu, ca, regs, true).ok()?;
    let outcome = p.system.service(vcpu).ok()?;
    let _ = m.guest_end_call(vcpu, ca);
    match outcome {
        RequestOutcome::Serviced(code) => Some(code),
        RequestOutcome::NotServiced(_) => None,
    }
}

fn run_sequence(ops: &[Op]) -> Result<(), TestCaseError> {
    let p = Prepared::new().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let guest = p.guest();
    let pages = pool(&p);
    let page = |i: usize| pages.get(i).copied().unwrap_or(0);
    for op in ops {
        // The guest keeps call_pending clear between calls, as Linux and OVMF do.
        let vcpu = match op {
            Op::Pvalidate { vcpu, .. }
            | Op::RemapCa { vcpu, .. }
            | Op::CreateVcpu { vcpu, .. }
            | Op::DeleteVcpu { vcpu, .. }
            | Op::Raw { vcpu, .. } => *vcpu,
        };
        if let Some(ca) = guest.calling_area(vcpu) {
            let _ = p.system.machine().guest_write(ca, &[0]);
        }
        let volatile: Vec<u64> = p
            .system
            .svsm()
            .state_snapshot()
            .vmsas()
            .iter()
            .map(|v| v.addr)
            .collect();
        let mut done_entries = Vec::new();
        let code = match op {
            Op::Pvalidate {
                vcpu,
                entries,
                count_delta,
                next,
            } => {
                let Some(ca) = guest.calling_area(*vcpu) else {
                    continue;
                };
                let list = ca + BUFFER_OFFSET as u64;
                let raw: Vec<u64> = entries
                    .iter()
                    .map(|&(i, huge, validate, icf, junk)| {
                        let base = if huge { page(i) & !0x1F_FFFF } else { page(i) };
                        base | u64::from(huge)
                            | (u64::from(validate) << 2)
                            | (u64::from(icf) << 3)
                            | (junk & 0xFF0)
                    })
                    .collect();
                let count = (raw.len() as i64 + i64::from(*count_delta)).max(0) as u16;
                let mut bytes = Vec::new();
                bytes.extend_from_slice(&count.to_le_bytes());
                bytes.extend_from_slice(&next.to_le_bytes());
                bytes.extend_from_slice(&[0; 4]);
                for e in &raw {
                    bytes.extend_from_slice(&e.to_le_bytes());
                }
                if p.system.machine().guest_write(list, &bytes).is_err() {
                    continue;
                }
                let before = invariants::snapshot(&p.system);
                let code = call(&p, &guest, *vcpu, &core(CoreCall::Pvalidate, list, 0, 0));
                let mut header = [0u8; 4];
                let new_next = match p.system.machine().guest_read(list, &mut header) {
                    Ok(()) => u16::from_le_bytes([header[2], header[3]]),
                    Err(_) => u16::MAX,
                };
                let progressed = new_next != *next;
                if progressed && new_next != u16::MAX {
                    done_entries = raw
                        .get(usize::from(*next)..usize::from(new_next))
                        .unwrap_or(&[])
                        .to_vec();
                }
                if code.is_some() && code != Some(Code::SUCCESS) && !progressed {
                    if let Some(diff) =
                        invariants::difference(&before, &invariants::snapshot(&p.system), &volatile)
                    {
                        return Err(TestCaseError::fail(format!(
                            "{op:?}: refused but changed: {diff}"
                        )));
                    }
                }
                code
            }
            Op::RemapCa {
                vcpu,
                page: i,
                misalign,
            } => {
                let target = page(*i) + misalign;
                let code = call(&p, &guest, *vcpu, &core(CoreCall::RemapCa, target, 0, 0));
                if code == Some(Code::SUCCESS) {
                    guest.adopt_calling_area(*vcpu, target);
                }
                code
            }
            Op::CreateVcpu {
                vcpu,
                vmsa: v,
                ca,
                apic,
                prepare,
                bad_vmpl,
            } => {
                let (vmsa_page, ca_page) = (page(*v), page(*ca));
                if *prepare {
                    let _ = guest.prepare_vmsa(vmsa_page);
                    if *bad_vmpl {
                        let _ = p.system.machine().guest_write(vmsa_page + vmsa::VMPL, &[0]);
                    }
                }
                let before_call = invariants::snapshot(&p.system);
                let code = call(
                    &p,
                    &guest,
                    *vcpu,
                    &core(CoreCall::CreateVcpu, vmsa_page, ca_page, u64::from(*apic)),
                );
                if code == Some(Code::SUCCESS) {
                    let e = p.system.machine().rmp_entry(vmsa_page).unwrap();
                    prop_assert!(e.vmsa, "created VMSA lacks the VMSA bit");
                    let _ = p.system.machine().hv_ap_destroy(*apic);
                    p.system
                        .machine()
                        .hv_ap_create(*apic, p.system.info().config.guest_vmpl, vmsa_page)
                        .map_err(|e| TestCaseError::fail(format!("AP create: {e:?}")))?;
                    guest.adopt_calling_area(*apic, ca_page);
                } else if code.is_some() {
                    if let Some(diff) = invariants::difference(
                        &before_call,
                        &invariants::snapshot(&p.system),
                        &volatile,
                    ) {
                        return Err(TestCaseError::fail(format!(
                            "{op:?}: refused but changed: {diff}"
                        )));
                    }
                }
                code
            }
            Op::DeleteVcpu {
                vcpu,
                page: i,
                destroy_first,
            } => {
                let target = page(*i);
                if *destroy_first {
                    if let Some(owner) = p
                        .system
                        .svsm()
                        .state_snapshot()
                        .vmsa(target)
                        .map(|v| v.apic_id)
                    {
                        if owner != *vcpu {
                            let _ = p.system.machine().hv_ap_destroy(owner);
                        }
                    }
                }
                let before_call = invariants::snapshot(&p.system);
                let code = call(&p, &guest, *vcpu, &core(CoreCall::DeleteVcpu, target, 0, 0));
                if code.is_some() && code != Some(Code::SUCCESS) && code != Some(Code::BUSY) {
                    if let Some(diff) = invariants::difference(
                        &before_call,
                        &invariants::snapshot(&p.system),
                        &volatile,
                    ) {
                        return Err(TestCaseError::fail(format!(
                            "{op:?}: refused but changed: {diff}"
                        )));
                    }
                }
                code
            }
            Op::Raw {
                vcpu,
                rax,
                rcx,
                rdx,
                r8,
            } => {
                let regs = CallRegisters {
                    rax: *rax,
                    rcx: *rcx,
                    rdx: *rdx,
                    r8: *r8,
                    r9: 0,
                };
                // Random registers may well form a valid call: only the invariants apply.
                call(&p, &guest, *vcpu, &regs)
            }
        };
        invariants::check(&p.system)
            .map_err(|v| TestCaseError::fail(format!("{op:?} -> {code:?}: {v}")))?;
        // The last entry that covers a page decides its state.
        let mut expected = std::collections::BTreeMap::new();
        for e in done_entries {
            let huge = e & 1 == 1;
            let base = e & !0xFFF;
            let len = if huge { 0x20_0000 } else { PAGE_SIZE };
            for addr in (base..base + len).step_by(PAGE_SIZE as usize) {
                expected.insert(addr, e & 4 != 0);
            }
        }
        for (addr, validate) in expected {
            let entry = p.system.machine().rmp_entry(addr).unwrap();
            prop_assert_eq!(entry.validated, validate, "page {:#x} after {:?}", addr, op);
            if validate {
                prop_assert_eq!(entry.perms[2], RmpPermissions::RWX);
            } else {
                prop_assert!(entry.perms.iter().skip(1).all(|p| p.is_empty()));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_calls_keep_isolation(ops in prop::collection::vec(op(), 1..24)) {
        run_sequence(&ops)?;
    }
}
