//! The request loop on the emulated SEV-SNP machine, driven by a structured sequence of
//! guest calls, guest memory writes and hypervisor actions from several vCPUs.
//!
//! The SVSM serves all three protocols: core, attestation (the emulated PSP signs with
//! its test key; the host's certificate table is the test chain) and the vTPM (the real
//! vTPM service over a small fake engine, so that inputs stay cheap; the engine itself has
//! its own targets).
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
use svsm::psp::GuestMessenger;
use svsm::requests::attest::{AttestationService, StaticEvidence};
use svsm::requests::CallRegisters;
use svsm::requests::{vtpm as vtpm_protocol, ProtocolService, Services};
use svsm_emulated::psp::{cert_table, test_chain, test_vcek, TEST_VMPCK0};
use svsm_emulated::{Backing, HostChange, HostRace};
use svsm_emulated::{EmulatedSystem, LaunchConfig, SharedSnp};
use svsm_protocol::attest::{AttestRequest, GuestBuffer, ServiceSelector};
use svsm_protocol::call::CoreCall;
use svsm_protocol::call::{AttestCall, Call as SvsmCall, VtpmCall};
use svsm_protocol::calling_area::BUFFER_OFFSET;
use svsm_protocol::manifest::VTPM_SERVICE_GUID;
use svsm_tests::driver::{GuestDriver, GuestKind};
use svsm_tests::fixtures::*;
use svsm_tests::invariants;
use vtpm::{Engine, EngineError, Service};

/// An engine that starts cleanly and answers every later command with a whole response
/// echoing the start of the command.
struct EchoEngine {
    response: Vec<u8>,
}

fn whole(code: u32, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(10 + body.len());
    r.extend_from_slice(&0x8001u16.to_be_bytes());
    r.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    r.extend_from_slice(&code.to_be_bytes());
    r.extend_from_slice(body);
    r
}

impl Engine for EchoEngine {
    fn execute(&mut self, _locality: u8, command: &mut [u8]) -> Result<(), EngineError> {
        let code = command
            .get(6..10)
            .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        self.response = if code == 0x131 {
            // CreatePrimary: a handle, a parameter size, a four-byte TPMT_PUBLIC.
            whole(0, &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0xB])
        } else {
            whole(0, command.get(..16).unwrap_or(command))
        };
        Ok(())
    }
    fn response(&self) -> &[u8] {
        &self.response
    }
    fn failed(&self) -> bool {
        false
    }
    fn buffer_size(&self) -> u32 {
        4087
    }
}

/// The host's certificate table for the emulated chip (made once: it signs).
fn certificates() -> Vec<u8> {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let chain = test_chain(test_vcek().verifying_key()).expect("test chain");
            cert_table(&chain).expect("certificate table")
        })
        .clone()
}

/// The standard machine with all three protocols, the guest in the state of
/// [`Prepared::new`]: RAM validated the Linux and the OVMF way, AP 1 started.
fn system() -> EmulatedSystem {
    let service = Service::start(EchoEngine {
        response: Vec::new(),
    })
    .expect("the fake engine starts");
    let ek = service.endorsement_key(vtpm::EkTemplate::RsaL1).to_vec();
    let attestation: Box<dyn ProtocolService<SharedSnp>> = Box::new(
        AttestationService::new(
            GuestMessenger::new(TEST_VMPCK0, 0),
            vec![Box::new(StaticEvidence::vtpm(&ek))],
        )
        .with_certificates(certificates()),
    );
    let services = Services::new()
        .with_attestation(attestation)
        .with_vtpm(vtpm_protocol::service::<SharedSnp, _>(service));
    let system = EmulatedSystem::launch(LaunchConfig::default(), services).expect("launch");
    {
        let guest = GuestDriver::new(&system);
        let bsp = system.info().bsp();
        guest
            .pvalidate_linux(bsp, LINUX_RANGE.0, LINUX_RANGE.1, true)
            .expect("Linux-style validation");
        let pages = svsm_tests::driver::linux_entries(OVMF_RANGE.0, OVMF_RANGE.1, true);
        guest
            .pvalidate_ovmf(bsp, &pages)
            .expect("OVMF-style validation");
        guest
            .start_ap(GuestKind::Linux, bsp, 1, AP1_VMSA, AP1_CA)
            .expect("AP 1");
        system
            .machine()
            .guest_write(GUEST_PAGE, b"guest data")
            .expect("guest data");
    }
    system
}

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
    /// ATTEST_SERVICES or ATTEST_SINGLE_SERVICE with a request block of guest buffers.
    Attest {
        block: Page,
        report: (Page, u32),
        nonce: (Page, u16),
        manifest: (Page, u32),
        certificates: (Page, u32),
        single: Option<(bool, u32)>,
        raw_call_id: Option<u8>,
    },
    /// SVSM_VTPM_QUERY.
    VtpmQuery,
    /// SVSM_VTPM_CMD with this request in a guest page.
    VtpmCmd {
        page: Page,
        request: Vec<u8>,
        raw_call_id: Option<u8>,
    },
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
        let p = svsm_tests::fixtures::Prepared::new().expect("fixture");
        (p.boot_ca(), p.boot_vmsa(), p.vmpl0_vmsa(), p.svsm_start())
    })
}

/// The system under test (named as the fixture it mirrors).
struct Prepared {
    system: EmulatedSystem,
}

struct Run<'a> {
    p: &'a Prepared,
    guest: GuestDriver<'a>,
    pages: Vec<u64>,
    /// Pages the hypervisor changed with RMPUPDATE (directly or in a race). What it does
    /// to a page is its own doing (on hardware it can take any page, SVSM memory
    /// included: a denial of service the SVSM cannot prevent), so a broken invariant on
    /// such a page is not a finding against the SVSM.
    taken: std::cell::RefCell<std::collections::BTreeSet<u64>>,
}

impl Run<'_> {
    /// Whether the hypervisor may be pointed at `page` by the input: not SVSM memory and
    /// not a registered VMSA (taking those only breaks the machine, see `taken`).
    fn hypervisor_may_take(&self, page: u64) -> bool {
        let (start, end) = self.p.system.info().config.svsm_range;
        !(start..end).contains(&page)
            && self.p.system.svsm().state_snapshot().vmsa(page).is_none()
            && !self.p.system.info().vmpl0_vmsas.iter().any(|v| v.1 == page)
    }

    fn buffer(&self, (page, size): &(Page, u32)) -> GuestBuffer {
        GuestBuffer {
            gpa: self.page(page),
            size: *size % 0x6000,
        }
    }

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
            Call::Attest {
                block,
                report,
                nonce,
                manifest,
                certificates,
                single,
                raw_call_id,
            } => {
                let request = AttestRequest {
                    report: self.buffer(report),
                    nonce: GuestBuffer {
                        gpa: self.page(&nonce.0),
                        size: u32::from(nonce.1 % 0x100),
                    },
                    manifest: self.buffer(manifest),
                    certificates: self.buffer(certificates),
                    service: single.map(|(vtpm, version)| ServiceSelector {
                        guid: if vtpm {
                            VTPM_SERVICE_GUID
                        } else {
                            svsm_protocol::manifest::Guid::from_bytes([version as u8; 16])
                        },
                        manifest_version: version % 3,
                    }),
                };
                let mut bytes = [0u8; 0x58];
                let n = request.encode(&mut bytes).unwrap_or(0);
                let block = self.page(block);
                let _ = self.p.system.machine().guest_write(block, &bytes[..n]);
                let call = if single.is_some() {
                    AttestCall::AttestSingleService
                } else {
                    AttestCall::AttestServices
                };
                let mut rax = SvsmCall::Attestation(call).to_rax();
                if let Some(id) = raw_call_id {
                    rax = (1 << 32) | u64::from(*id % 8);
                }
                CallRegisters {
                    rax,
                    rcx: block,
                    ..CallRegisters::default()
                }
            }
            Call::VtpmQuery => CallRegisters {
                rax: SvsmCall::Vtpm(VtpmCall::Query).to_rax(),
                ..CallRegisters::default()
            },
            Call::VtpmCmd {
                page,
                request,
                raw_call_id,
            } => {
                let page = self.page(page);
                let n = request.len().min(0x1000);
                let _ = self.p.system.machine().guest_write(page, &request[..n]);
                let mut rax = SvsmCall::Vtpm(VtpmCall::Cmd).to_rax();
                if let Some(id) = raw_call_id {
                    rax = (2 << 32) | u64::from(*id % 4);
                }
                CallRegisters {
                    rax,
                    rcx: page,
                    ..CallRegisters::default()
                }
            }
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
                let base = page & !(size.bytes() - 1);
                let pages: Vec<u64> = (base..base + size.bytes())
                    .step_by(PAGE_SIZE as usize)
                    .collect();
                if !pages.iter().all(|p| self.hypervisor_may_take(*p)) {
                    return;
                }
                self.taken.borrow_mut().extend(pages);
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
            } => {
                let page = self.page(page);
                if !self.hypervisor_may_take(page) {
                    return;
                }
                self.taken.borrow_mut().insert(page);
                m.hv_race(HostRace {
                    after: u64::from(*after % 32),
                    page,
                    change: if *invalidate {
                        HostChange::Invalidate
                    } else {
                        HostChange::MakeShared
                    },
                })
            }
        }
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let p = Prepared { system: system() };
    let guest = GuestDriver::new(&p.system);
    guest.adopt_calling_area(1, AP1_CA);
    let run = Run {
        guest,
        pages: pool(),
        p: &p,
        taken: Default::default(),
    };
    for step in steps.iter().take(64) {
        run.step(step);
        if let Err(v) = invariants::check(&p.system) {
            if run.taken.borrow().contains(&v.page) {
                // The hypervisor's own doing on a page it took (see `Run::taken`).
                return;
            }
            panic!("invariant broken after {step:?}: {v}");
        }
    }
});
