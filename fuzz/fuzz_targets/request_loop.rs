//! The request loop on the emulated SEV-SNP machine, driven by a structured sequence of
//! guest calls, guest memory writes and hypervisor actions from several vCPUs.
//!
//! The vCPUs are interleaved by the input on one thread (a call is three steps: the
//! guest's VMGEXIT, the SVSM's request-loop step, the return to the guest), so every
//! finding replays exactly. After every step the isolation invariants of
//! `svsm_tests::invariants` must hold; a panic anywhere is a finding.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use svsm::platform::{PageSize, Platform, PAGE_SIZE};
use svsm::requests::CallRegisters;
use svsm_emulated::{Backing, HostChange, HostRace};
use svsm_protocol::call::CoreCall;
use svsm_protocol::calling_area::BUFFER_OFFSET;
use svsm_tests::driver::GuestDriver;
use svsm_tests::fixtures::*;
use svsm_tests::invariants;

/// The vCPUs the input drives (the standard machine has four).
const VCPUS: u32 = 4;

#[derive(Debug, Arbitrary)]
enum Page {
    Pool(u8),
    Any(u64),
}

#[derive(Debug, Arbitrary)]
enum Call {
    Pvalidate {
        entries: Vec<(Page, bool, bool, bool)>,
        count_delta: i8,
        next: u16,
        in_calling_area: bool,
    },
    RemapCa(Page, u16),
    CreateVcpu {
        vmsa: Page,
        ca: Page,
        apic: u8,
        prepare: bool,
    },
    DeleteVcpu(Page),
    QueryProtocol(u32, u32),
    Raw {
        rax: u64,
        rcx: u64,
        rdx: u64,
        r8: u64,
        r9: u64,
    },
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// The guest on a vCPU makes a call: writes its request, sets call_pending, VMGEXIT.
    Begin {
        vcpu: u8,
        call: Call,
        pending: bool,
    },
    /// The SVSM's request loop services whatever the vCPU left.
    Service {
        vcpu: u8,
    },
    /// The vCPU goes back to the guest VMPL and reads its result.
    Resume {
        vcpu: u8,
    },
    /// A whole call at once.
    Whole {
        vcpu: u8,
        call: Call,
    },
    /// The guest writes guest memory (anything it can reach at its VMPL).
    GuestWrite {
        page: Page,
        offset: u16,
        bytes: Vec<u8>,
    },
    /// The guest's own RMPADJUST.
    GuestRmpadjust {
        page: Page,
        target: u8,
        perms: u8,
        vmsa: bool,
    },
    /// The hypervisor takes a page away or gives it back.
    HvRmpupdate {
        page: Page,
        assigned: bool,
        huge: bool,
    },
    /// The hypervisor splits a 2 MiB RMP page.
    HvPsmash(Page),
    /// The hypervisor stops or starts a vCPU.
    HvApDestroy(u8),
    HvApCreate {
        vcpu: u8,
        vmsa: Page,
    },
    /// The hypervisor remaps a page's backing.
    HvBacking {
        page: Page,
        kind: u8,
    },
    /// The hypervisor changes a page while the SVSM works on the next call.
    HvRace {
        after: u8,
        page: Page,
        invalidate: bool,
    },
}

fn pool() -> Vec<u64> {
    let p = prepared_template();
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
        p.0,
        p.1,
        p.2,
        p.3,
        p.3 + 0x1F_F000,
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

/// (boot CA, boot VMSA, a VMPL0 VMSA, SVSM start) of the standard machine.
fn prepared_template() -> (u64, u64, u64, u64) {
    static T: OnceLock<(u64, u64, u64, u64)> = OnceLock::new();
    *T.get_or_init(|| {
        let p = Prepared::new().expect("fixture");
        (p.boot_ca(), p.boot_vmsa(), p.vmpl0_vmsa(), p.svsm_start())
    })
}

struct Run<'a> {
    p: &'a Prepared,
    guest: GuestDriver<'a>,
    pages: Vec<u64>,
}

impl Run<'_> {
    fn page(&self, page: &Page) -> u64 {
        match page {
            Page::Pool(i) => self.pages[usize::from(*i) % self.pages.len()],
            Page::Any(a) => *a & !0xFFF & 0x0FFF_FFFF,
        }
    }

    fn regs(&self, vcpu: u32, call: &Call) -> CallRegisters {
        let core = GuestDriver::core_regs;
        match call {
            Call::Pvalidate {
                entries,
                count_delta,
                next,
                in_calling_area,
            } => {
                let list = match (in_calling_area, self.guest.calling_area(vcpu)) {
                    (true, Some(ca)) => ca + BUFFER_OFFSET as u64,
                    _ => LIST_PAGE,
                };
                let raw: Vec<u64> = entries
                    .iter()
                    .take(64)
                    .map(|(page, huge, validate, icf)| {
                        let page = self.page(page);
                        let base = if *huge { page & !0x1F_FFFF } else { page };
                        base | u64::from(*huge)
                            | (u64::from(*validate) << 2)
                            | (u64::from(*icf) << 3)
                    })
                    .collect();
                let count = (raw.len() as i64 + i64::from(*count_delta)).max(0) as u16;
                let mut bytes = Vec::with_capacity(8 + 8 * raw.len());
                bytes.extend_from_slice(&count.to_le_bytes());
                bytes.extend_from_slice(&next.to_le_bytes());
                bytes.extend_from_slice(&[0; 4]);
                for e in &raw {
                    bytes.extend_from_slice(&e.to_le_bytes());
                }
                let _ = self.p.system.machine().guest_write(list, &bytes);
                core(CoreCall::Pvalidate, list, 0, 0)
            }
            Call::RemapCa(page, misalign) => core(
                CoreCall::RemapCa,
                self.page(page) + u64::from(*misalign % 0x1000),
                0,
                0,
            ),
            Call::CreateVcpu {
                vmsa,
                ca,
                apic,
                prepare,
            } => {
                let vmsa = self.page(vmsa);
                if *prepare {
                    let _ = self.guest.prepare_vmsa(vmsa);
                }
                core(
                    CoreCall::CreateVcpu,
                    vmsa,
                    self.page(ca),
                    u64::from(*apic % 6),
                )
            }
            Call::DeleteVcpu(page) => core(CoreCall::DeleteVcpu, self.page(page), 0, 0),
            Call::QueryProtocol(protocol, version) => core(
                CoreCall::QueryProtocol,
                (u64::from(*protocol % 4) << 32) | u64::from(*version % 3),
                0,
                0,
            ),
            Call::Raw {
                rax,
                rcx,
                rdx,
                r8,
                r9,
            } => CallRegisters {
                rax: *rax,
                rcx: *rcx,
                rdx: *rdx,
                r8: *r8,
                r9: *r9,
            },
        }
    }

    fn begin(&self, vcpu: u32, call: &Call, pending: bool) {
        let Some(ca) = self.guest.calling_area(vcpu) else {
            return;
        };
        let regs = self.regs(vcpu, call);
        let _ = self
            .p
            .system
            .machine()
            .guest_begin_call(vcpu, ca, &regs, pending);
    }

    fn resume(&self, vcpu: u32) {
        let m = self.p.system.machine();
        if m.run_guest(vcpu).is_ok() {
            if let Some(ca) = self.guest.calling_area(vcpu) {
                let _ = m.guest_end_call(vcpu, ca);
            }
        }
    }

    fn step(&self, step: &Step) {
        let m = self.p.system.machine();
        let vcpu = |v: &u8| u32::from(*v) % VCPUS;
        match step {
            Step::Begin {
                vcpu: v,
                call,
                pending,
            } => self.begin(vcpu(v), call, *pending),
            Step::Service { vcpu: v } => {
                let outcome = self.p.system.svsm().handle_request(vcpu(v));
                let _ = outcome;
            }
            Step::Resume { vcpu: v } => self.resume(vcpu(v)),
            Step::Whole { vcpu: v, call } => {
                let v = vcpu(v);
                if let Some(ca) = self.guest.calling_area(v) {
                    let _ = m.guest_write(ca, &[0]);
                }
                self.begin(v, call, true);
                let _ = self.p.system.svsm().handle_request(v);
                self.resume(v);
                // A successful CREATE_VCPU is followed by the hypervisor starting it.
                if let Call::CreateVcpu { vmsa, ca, apic, .. } = call {
                    let (vmsa, ca, apic) = (self.page(vmsa), self.page(ca), u32::from(*apic % 6));
                    if self.p.system.svsm().state_snapshot().vmsa(vmsa).is_some() {
                        let _ = m.hv_ap_destroy(apic);
                        if m.hv_ap_create(apic, self.p.system.info().config.guest_vmpl, vmsa)
                            .is_ok()
                        {
                            self.guest.adopt_calling_area(apic, ca);
                        }
                    }
                }
                if let Call::RemapCa(page, 0) = call {
                    let target = self.page(page);
                    let state = self.p.system.svsm().state_snapshot();
                    if state.vcpu(v).and_then(|e| e.calling_area) == Some(target) {
                        self.guest.adopt_calling_area(v, target);
                    }
                }
            }
            Step::GuestWrite {
                page,
                offset,
                bytes,
            } => {
                let addr = self.page(page) + u64::from(*offset % 0x1000);
                let len = bytes.len().min(256);
                let _ = m.guest_write(addr, &bytes[..len]);
            }
            Step::GuestRmpadjust {
                page,
                target,
                perms,
                vmsa,
            } => {
                if let (Some(target), Some(perms)) = (
                    svsm::platform::Vmpl::new(*target % 4),
                    svsm::platform::RmpPermissions::from_bits(*perms & 0xF),
                ) {
                    let _ =
                        m.guest_rmpadjust(self.page(page), PageSize::Size4K, target, perms, *vmsa);
                }
            }
            Step::HvRmpupdate {
                page,
                assigned,
                huge,
            } => {
                let size = if *huge {
                    PageSize::Size2M
                } else {
                    PageSize::Size4K
                };
                let page = self.page(page);
                m.hv_psmash(page);
                let _ = m.hv_rmpupdate(page, size, *assigned);
            }
            Step::HvPsmash(page) => m.hv_psmash(self.page(page)),
            Step::HvApDestroy(v) => {
                let _ = m.hv_ap_destroy(vcpu(v));
            }
            Step::HvApCreate { vcpu: v, vmsa } => {
                let _ = m.hv_ap_create(
                    vcpu(v),
                    self.p.system.info().config.guest_vmpl,
                    self.page(vmsa),
                );
            }
            Step::HvBacking { page, kind } => {
                let backing = match kind % 3 {
                    0 => Backing::Ram,
                    1 => Backing::ReadOnly,
                    _ => Backing::Mmio,
                };
                let page = self.page(page);
                m.set_backing(page, page + PAGE_SIZE, backing);
            }
            Step::HvRace {
                after,
                page,
                invalidate,
            } => m.hv_race(HostRace {
                after: u64::from(*after % 32),
                page: self.page(page),
                change: if *invalidate {
                    HostChange::Invalidate
                } else {
                    HostChange::MakeShared
                },
            }),
        }
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let p = Prepared::new().expect("fixture");
    let run = Run {
        guest: p.guest(),
        pages: pool(),
        p: &p,
    };
    for step in steps.iter().take(64) {
        run.step(step);
        if let Err(v) = invariants::check(&p.system) {
            panic!("invariant broken after {step:?}: {v}");
        }
    }
});
