//! An emulated hypervisor that speaks the GHCB protocol, honest or hostile, and an SNP
//! machine booted by the SVSM's own start-up code.
//!
//! [`EmulatedHypervisor`] answers the GHCB MSR protocol (GHCB spec 56421 §2.3.1) and,
//! through [`crate::ghcb`], the GHCB page exits, acting on the [`EmulatedSnp`] machine:
//! page state changes are RMPUPDATEs, run VMPL switches the vCPU to the guest, AP
//! creation registers a VMSA. [`Hostility`] makes it lie: wrong versions, features,
//! registrations, refused page state changes and VMPL runs, tampered GHCB answers.
//! [`EmulatedGhcb`] is the SVSM-side transport: it writes the GHCB into the page in the
//! machine's memory, refuses to hand over a page that is not shared (the hypervisor
//! would read ciphertext), and reads the answer back.
//!
//! [`SnpMachine::boot`] runs the SVSM's SEV-SNP start-up and guest launch
//! ([`svsm::snp::boot`], [`svsm::snp::launch`]) on a machine laid out the way an IGVM
//! launch leaves it, with an OVMF-like firmware; the `snp_*` suites then look at the
//! machine as a Linux or OVMF guest would.

use std::sync::{Arc, Mutex, MutexGuard};

use std::collections::BTreeMap;
use svsm::address::{
    CheckedRange, GuestPhysAddr, GuestRegion, MemoryKind, MemoryLayout, PhysAddr, VmsaPage,
};
use svsm::boot_params::BootParams;
use svsm::platform::{
    HypervisorError, MemoryError, MessagePage, PageSize, Platform, PspError, PvalidateError,
    RmpPermissions, RmpadjustError, Validation, Vmpl, PAGE_SIZE, PAGE_SIZE_2M,
};
use svsm::requests::{CallRegisters, RequestOutcome, Services, Svsm, SvsmConfig};
use svsm::snp::cpuid::{CpuidEntry, CpuidPage};
use svsm::snp::doorbell::{
    self, setup_doorbell, DoorbellPage, DoorbellReport, RestrictedInjection, VectorHooks,
};
use svsm::snp::hypervisor::HvClient;
use svsm::snp::launch::{launch_guest, FirmwareMemoryMap, GuestLaunch, LaunchSummary};
use svsm::snp::secrets::SvsmSecrets;
use svsm::snp::vc::VcRegisters;
use svsm::snp::vector::{handle_vector, InterruptConfig, VectorOutcome};
use svsm::snp::{boot, GhcbTransport, SnpError, TerminateReason};

use svsm_protocol::ghcb::{
    Ghcb, GhcbField, HvFeatures, MsrRequest, MsrResponse, PageState, GHCB_PROTOCOL_VERSION,
};
use svsm_protocol::hv_doorbell::{DoorbellRequest, NO_DOORBELL_PAGE, SVM_VMGEXIT_HV_DOORBELL_PAGE};
use svsm_protocol::igvm_params::{
    FirmwareInfo, IgvmParamBlock, IgvmParamPage, MemoryMapEntry, MemoryRange, DEFAULT_GUEST_VMPL,
    MEMORY_MAP_TYPE_MEMORY, MEMORY_MAP_TYPE_PLATFORM_RESERVED, PARAM_BLOCK_MAGIC,
    PARAM_BLOCK_VERSION, PARAM_FLAG_FIRMWARE,
};
use svsm_protocol::vmsa::SevFeatures;
use zerocopy::{FromZeros, IntoBytes};

use crate::ghcb::{handle_page_exit, Devices, PortDevice};
use crate::machine::{Backing, CallReturn, EmulatedSnp, GuestFault};

/// Ways the hypervisor lies. Each field, when set, replaces the honest behaviour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hostility {
    /// Raw answer to the SEV information request.
    pub sev_info: Option<u64>,
    /// Feature bits announced instead of SNP | AP creation | multi-VMPL.
    pub features: Option<u64>,
    /// Answer GHCB registration with another GFN.
    pub wrong_ghcb_gfn: bool,
    /// Refuse every page state change with this error code.
    pub refuse_page_state: Option<u32>,
    /// Refuse run VMPL with this error code.
    pub refuse_run: Option<u32>,
    /// Answer every GHCB page exit with these `sw_exit_info_1`/`sw_exit_info_2`.
    pub page_error: Option<(u64, u64)>,
    /// Answer every GHCB page exit without any valid output register.
    pub drop_outputs: bool,
    /// Change the GHCB's protocol version in every answer.
    pub bad_version: bool,
    /// Answer every MSR protocol request with this raw value.
    pub msr_garbage: Option<u64>,
    /// Answer the #HV doorbell SET with this GPA instead of the one set.
    pub doorbell_set_answer: Option<u64>,
    /// Answer the #HV doorbell QUERY with this GPA instead of the registered one.
    pub doorbell_query_answer: Option<u64>,
    /// Refuse every #HV doorbell request as KVM refuses a bad one.
    pub refuse_doorbell: bool,
}

/// Why the hardware refused an injection (AMD APM vol. 2 "Restricted Injection": with
/// restricted injection active, VMRUN fails if the hypervisor injects anything but #HV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectionRefused {
    /// The vector the hypervisor tried to inject.
    pub vector: u8,
}

#[derive(Debug, Default)]
struct HvState {
    hostility: Hostility,
    registered: Vec<(u32, u64)>,
    terminated: Option<TerminateReason>,
    devices: Devices,
    runs: u64,
    /// #HV doorbell GPA per APIC ID.
    doorbells: BTreeMap<u32, u64>,
    /// Every doorbell NAE request: APIC ID, sw_exit_info_1.
    doorbell_requests: Vec<(u32, u64)>,
    /// Injected vectors not yet delivered: APIC ID, vector.
    injections: Vec<(u32, u8)>,
    /// SEV features of the SVSM's vCPUs (what the hardware enforces on injection).
    svsm_features: Option<SevFeatures>,
}

/// The emulated hypervisor.
#[derive(Debug)]
pub struct EmulatedHypervisor {
    machine: Arc<EmulatedSnp>,
    cbit: u8,
    state: Mutex<HvState>,
}

/// The default feature bits: SNP, AP creation, restricted injection (the model answers
/// the #HV doorbell event), multi-VMPL.
pub fn honest_features() -> HvFeatures {
    HvFeatures::SNP
        | HvFeatures::SNP_AP_CREATION
        | HvFeatures::SNP_RESTRICTED_INJECTION
        | HvFeatures::SNP_MULTI_VMPL
}

/// `GHCB_ERR_INVALID_INPUT`: KVM's `sw_exit_info_2` when it refuses a request
/// (`sw_exit_info_1` = 2).
pub const GHCB_ERR_INVALID_INPUT: u64 = 1;

impl EmulatedHypervisor {
    /// A hypervisor for `machine` that reports C-bit position `cbit`.
    pub fn new(machine: Arc<EmulatedSnp>, cbit: u8) -> Arc<Self> {
        Arc::new(Self {
            machine,
            cbit,
            state: Mutex::new(HvState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HvState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the hypervisor lie as `hostility` says from now on.
    pub fn set_hostility(&self, hostility: Hostility) {
        self.lock().hostility = hostility;
    }

    /// The termination request the SVSM sent, if any.
    pub fn terminated(&self) -> Option<TerminateReason> {
        self.lock().terminated
    }

    /// The GHCB GFNs registered, per APIC ID.
    pub fn registered_ghcbs(&self) -> Vec<(u32, u64)> {
        self.lock().registered.clone()
    }

    /// How many run-VMPL requests succeeded.
    pub fn runs(&self) -> u64 {
        self.lock().runs
    }

    /// The devices (MSRs, ports).
    pub fn devices(&self) -> Devices {
        self.lock().devices.clone()
    }

    /// Sets the value IN reads from `port`.
    pub fn set_io_read(&self, port: u16, value: u64) {
        self.lock().devices.io_reads.insert(port, value);
    }

    /// Attaches `device` to the `len` ports from `base` (IOIO exits to them reach it).
    pub fn attach_port_device(&self, base: u16, len: u16, device: Arc<dyn PortDevice>) {
        self.lock().devices.port_devices.push((base, len, device));
    }

    /// The SVSM-side transport of vCPU `apic_id`, whose GHCB page is at `gpa`.
    pub fn transport(self: &Arc<Self>, apic_id: u32, gpa: u64) -> EmulatedGhcb {
        EmulatedGhcb {
            hv: self.clone(),
            apic_id,
            gpa,
        }
    }

    /// The machine.
    pub fn machine(&self) -> &Arc<EmulatedSnp> {
        &self.machine
    }

    fn page_state(&self, gfn: u64, state: PageState) -> u32 {
        let addr = gfn.saturating_mul(PAGE_SIZE);
        // The hypervisor splits a 2 MiB RMP page before changing one 4 KiB page of it.
        self.machine.hv_psmash(addr);
        let assigned = state == PageState::Private;
        match self.machine.hv_rmpupdate(addr, PageSize::Size4K, assigned) {
            Ok(()) => 0,
            Err(_) => 1,
        }
    }

    /// Answers one MSR protocol request from vCPU `apic_id`.
    pub fn msr_protocol(&self, apic_id: u32, value: u64) -> u64 {
        let hostility = self.lock().hostility.clone();
        if let Some(garbage) = hostility.msr_garbage {
            return garbage;
        }
        let Ok(request) = MsrRequest::decode(value) else {
            // An unknown request: KVM answers with an empty value.
            return 0;
        };
        let response = match request {
            MsrRequest::SevInfo => {
                if let Some(raw) = hostility.sev_info {
                    return raw;
                }
                MsrResponse::SevInfo {
                    max_version: 2,
                    min_version: 1,
                    cbit: self.cbit,
                }
            }
            MsrRequest::HypervisorFeatures => {
                MsrResponse::HypervisorFeatures(HvFeatures::from_bits_retain(
                    hostility.features.unwrap_or(honest_features().bits()),
                ))
            }
            MsrRequest::RegisterGhcb { gfn } => {
                let mut s = self.lock();
                s.registered.retain(|(id, _)| *id != apic_id);
                s.registered.push((apic_id, gfn));
                MsrResponse::RegisterGhcb {
                    gfn: if hostility.wrong_ghcb_gfn {
                        gfn + 1
                    } else {
                        gfn
                    },
                }
            }
            MsrRequest::PageStateChange { gfn, state } => MsrResponse::PageStateChange {
                error: match hostility.refuse_page_state {
                    Some(error) => error,
                    None => self.page_state(gfn, state),
                },
            },
            MsrRequest::RunVmpl { vmpl } => {
                let error = if let Some(error) = hostility.refuse_run {
                    error
                } else if vmpl != self.machine.guest_vmpl().level() {
                    1
                } else if self.machine.run_guest(apic_id).is_err() {
                    2
                } else {
                    self.lock().runs += 1;
                    0
                };
                MsrResponse::RunVmpl { error }
            }
            MsrRequest::Terminate { set, code } => {
                self.lock().terminated = Some(TerminateReason { set, code });
                return value;
            }
        };
        response.encode()
    }

    /// Answers one GHCB page exit (the page's bytes at `gpa`) from vCPU `apic_id`.
    fn page_protocol(&self, apic_id: u32, gpa: u64) -> Result<(), ()> {
        let mut s = self.lock();
        if !s.registered.contains(&(apic_id, gpa / PAGE_SIZE)) {
            return Err(());
        }
        let mut ghcb = Ghcb::new_zeroed();
        self.machine.peek(gpa, ghcb.as_mut_bytes()).ok_or(())?;
        if ghcb.get_if_valid(GhcbField::SwExitCode) == Some(SVM_VMGEXIT_HV_DOORBELL_PAGE) {
            let answer = self.doorbell_event(&mut s, apic_id, &ghcb);
            ghcb.protocol_version = GHCB_PROTOCOL_VERSION;
            ghcb.clear_valid();
            match answer {
                Ok(info2) => {
                    ghcb.sw_exit_info_1 = 0;
                    ghcb.set(GhcbField::SwExitInfo2, info2);
                }
                Err(()) => {
                    ghcb.sw_exit_info_1 = 2;
                    ghcb.sw_exit_info_2 = GHCB_ERR_INVALID_INPUT;
                }
            }
        } else {
            handle_page_exit(&self.machine, &mut s.devices, &mut ghcb);
        }
        let h = &s.hostility;
        if let Some((info1, info2)) = h.page_error {
            ghcb.sw_exit_info_1 = info1;
            ghcb.sw_exit_info_2 = info2;
        }
        if h.drop_outputs {
            ghcb.clear_valid();
        }
        if h.bad_version {
            ghcb.protocol_version = 1;
        }
        self.machine.load(gpa, ghcb.as_bytes()).ok_or(())
    }
}

impl EmulatedHypervisor {
    /// The #HV doorbell NAE event (GHCB spec 56421, as KVM's `sev_snp_hv_doorbell_page`
    /// answers it): `Ok(sw_exit_info_2)` or a refusal.
    fn doorbell_event(&self, s: &mut HvState, apic_id: u32, ghcb: &Ghcb) -> Result<u64, ()> {
        let info1 = ghcb.get_if_valid(GhcbField::SwExitInfo1).ok_or(())?;
        let info2 = ghcb.get_if_valid(GhcbField::SwExitInfo2).ok_or(())?;
        s.doorbell_requests.push((apic_id, info1));
        if s.hostility.refuse_doorbell {
            return Err(());
        }
        match DoorbellRequest::decode(info1) {
            Some(DoorbellRequest::GetPreferred) => Ok(NO_DOORBELL_PAGE),
            Some(DoorbellRequest::Set) => {
                s.doorbells.remove(&apic_id);
                let in_memory = info2
                    .checked_add(PAGE_SIZE)
                    .is_some_and(|end| end <= self.machine.memory_size());
                if info2 % PAGE_SIZE != 0 || !in_memory {
                    return Err(());
                }
                s.doorbells.insert(apic_id, info2);
                Ok(s.hostility.doorbell_set_answer.unwrap_or(info2))
            }
            Some(DoorbellRequest::Query) => Ok(s.hostility.doorbell_query_answer.unwrap_or(
                s.doorbells
                    .get(&apic_id)
                    .copied()
                    .unwrap_or(NO_DOORBELL_PAGE),
            )),
            Some(DoorbellRequest::Clear) => {
                s.doorbells.remove(&apic_id);
                Ok(0)
            }
            None => {
                s.doorbells.remove(&apic_id);
                Err(())
            }
        }
    }

    /// The #HV doorbell pages registered, per APIC ID.
    pub fn registered_doorbells(&self) -> Vec<(u32, u64)> {
        self.lock()
            .doorbells
            .iter()
            .map(|(&a, &g)| (a, g))
            .collect()
    }

    /// Every doorbell NAE request the SVSM made: APIC ID, request (`sw_exit_info_1`).
    pub fn doorbell_requests(&self) -> Vec<(u32, u64)> {
        self.lock().doorbell_requests.clone()
    }

    /// Tells the hardware model the SEV features of the SVSM's vCPUs.
    pub fn set_svsm_features(&self, features: SevFeatures) {
        self.lock().svsm_features = Some(features);
    }

    /// Writes `word` into the pending-events word of `apic_id`'s doorbell page and
    /// `no_eoi` into its no-EOI-required byte (any bits, at any time: hostile or not).
    /// `None` when that vCPU has no doorbell or the page is not shared (the hypervisor
    /// cannot write a private page meaningfully).
    pub fn post_doorbell(&self, apic_id: u32, word: u16, no_eoi: u8) -> Option<()> {
        let gpa = *self.lock().doorbells.get(&apic_id)?;
        if self.machine.rmp_entry(gpa).is_none_or(|e| e.assigned) {
            return None;
        }
        let [lo, hi] = word.to_le_bytes();
        self.machine.load(gpa, &[lo, hi, no_eoi])
    }

    /// The pending-events word and no-EOI byte of `apic_id`'s doorbell, as the page
    /// holds them now.
    pub fn doorbell_state(&self, apic_id: u32) -> Option<(u16, u8)> {
        let gpa = *self.lock().doorbells.get(&apic_id)?;
        let mut b = [0u8; 3];
        self.machine.peek(gpa, &mut b)?;
        Some((u16::from_le_bytes([b[0], b[1]]), b[2]))
    }

    /// Injects `vector` into the SVSM's vCPU `apic_id`. The hardware refuses anything
    /// but #HV (28) when the vCPU runs with restricted injection.
    pub fn inject(&self, apic_id: u32, vector: u8) -> Result<(), InjectionRefused> {
        let mut s = self.lock();
        if s.svsm_features
            .is_some_and(|f| f.contains(SevFeatures::RESTRICTED_INJECTION))
            && vector != svsm::snp::vector::VECTOR_HV
        {
            return Err(InjectionRefused { vector });
        }
        s.injections.push((apic_id, vector));
        Ok(())
    }

    /// Takes the injections pending for `apic_id`, oldest first.
    pub fn take_injections(&self, apic_id: u32) -> Vec<u8> {
        let mut s = self.lock();
        let mut mine = Vec::new();
        s.injections.retain(|&(id, vector)| {
            if id == apic_id {
                mine.push(vector);
            }
            id != apic_id
        });
        mine
    }
}

/// The SVSM-side view of a doorbell page in the emulated machine's memory: each access
/// one read-modify-write under the machine's lock.
#[derive(Debug, Clone)]
pub struct EmulatedDoorbell {
    machine: Arc<EmulatedSnp>,
    gpa: u64,
}

impl EmulatedDoorbell {
    fn word(&self, f: impl FnOnce(u16) -> u16) -> u16 {
        self.machine
            .update(self.gpa, 2, |b| {
                let old = u16::from_le_bytes([b[0], b[1]]);
                b.copy_from_slice(&f(old).to_le_bytes());
                old
            })
            .unwrap_or(0)
    }
}

impl DoorbellPage for EmulatedDoorbell {
    fn take_pending(&self) -> u16 {
        self.word(|_| 0)
    }
    fn clear_pending(&self, mask: u16) -> u16 {
        self.word(|old| old & !mask)
    }
    fn take_no_eoi_required(&self) -> u8 {
        self.machine
            .update(self.gpa + 2, 1, |b| core::mem::take(&mut b[0]))
            .unwrap_or(0)
    }
    fn reset(&self) {
        let _ = self.machine.load(self.gpa, &[0; 3]);
    }
}

/// What the SVSM did with one delivered vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The vector handler's outcome.
    pub outcome: VectorOutcome,
    /// For a #HV under restricted injection: what the doorbell held and what was done.
    pub doorbell: Option<DoorbellReport>,
}

/// The SVSM-side GHCB transport of one vCPU on the emulated machine.
#[derive(Debug, Clone)]
pub struct EmulatedGhcb {
    hv: Arc<EmulatedHypervisor>,
    apic_id: u32,
    gpa: u64,
}

impl GhcbTransport for EmulatedGhcb {
    fn msr_exchange(&self, request: u64) -> u64 {
        self.hv.msr_protocol(self.apic_id, request)
    }

    fn ghcb_exchange(&self, ghcb: &mut Ghcb) {
        // The hypervisor can only read the page if it is shared.
        let shared = self
            .hv
            .machine
            .rmp_entry(self.gpa)
            .is_some_and(|e| !e.assigned);
        let exchanged = shared
            && self.hv.machine.load(self.gpa, ghcb.as_bytes()).is_some()
            && self.hv.page_protocol(self.apic_id, self.gpa).is_ok()
            && self
                .hv
                .machine
                .peek(self.gpa, ghcb.as_mut_bytes())
                .is_some();
        if !exchanged {
            // What the SVSM reads back from a page the hypervisor never answered: its
            // own request, which the result check refuses (exit_info_1 non-zero).
            ghcb.sw_exit_info_1 = u64::MAX;
        }
    }
}

/// The SVSM's platform on the emulated machine with every hypervisor request going
/// through the GHCB protocol ([`HvClient`], the same client
/// [`svsm::platform::snp::SnpPlatform`] uses on hardware). Memory and RMP instructions
/// are the machine's.
#[derive(Debug)]
pub struct GhcbPlatform {
    machine: Arc<EmulatedSnp>,
    clients: Vec<(u32, HvClient<EmulatedGhcb>)>,
    guest_vmpl: Vmpl,
    /// The shared request and response pages of PSP guest messages.
    messages: (u64, u64),
}

impl GhcbPlatform {
    fn client(&self, apic_id: u32) -> Result<&HvClient<EmulatedGhcb>, HypervisorError> {
        self.clients
            .iter()
            .find(|(id, _)| *id == apic_id)
            .map(|(_, c)| c)
            .ok_or(HypervisorError::Refused(u64::MAX))
    }

    /// The boot vCPU's hypervisor client.
    pub fn bsp_client(&self) -> Option<&HvClient<EmulatedGhcb>> {
        self.clients.first().map(|(_, c)| c)
    }
}

impl Platform for GhcbPlatform {
    fn pvalidate(
        &self,
        addr: PhysAddr,
        size: PageSize,
        validate: bool,
    ) -> Result<Validation, PvalidateError> {
        self.machine.pvalidate(addr, size, validate)
    }
    fn rmpadjust(
        &self,
        addr: PhysAddr,
        size: PageSize,
        target: Vmpl,
        perms: RmpPermissions,
        vmsa: bool,
    ) -> Result<(), RmpadjustError> {
        self.machine.rmpadjust(addr, size, target, perms, vmsa)
    }
    fn read_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), MemoryError> {
        self.machine.read_guest(range, offset, buf)
    }
    fn check_guest(&self, range: &CheckedRange) -> Result<(), MemoryError> {
        self.machine.check_guest(range)
    }
    fn write_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        data: &[u8],
    ) -> Result<(), MemoryError> {
        self.machine.write_guest(range, offset, data)
    }
    fn zero_guest(&self, range: &CheckedRange) -> Result<(), MemoryError> {
        self.machine.zero_guest(range)
    }
    fn read_vmsa(&self, vmsa: &VmsaPage, offset: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.machine.read_vmsa(vmsa, offset, buf)
    }
    fn write_vmsa(&self, vmsa: &VmsaPage, offset: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.machine.write_vmsa(vmsa, offset, data)
    }
    fn read_vmsa_u64s(
        &self,
        vmsa: &VmsaPage,
        fields: &mut [(u64, u64)],
    ) -> Result<(), MemoryError> {
        self.machine.read_vmsa_u64s(vmsa, fields)
    }
    fn write_vmsa_u64s(&self, vmsa: &VmsaPage, fields: &[(u64, u64)]) -> Result<(), MemoryError> {
        self.machine.write_vmsa_u64s(vmsa, fields)
    }
    fn vmsa_running(&self, vmsa: &VmsaPage) -> bool {
        self.machine.vmsa_running(vmsa)
    }
    fn create_ap(
        &self,
        apic_id: u32,
        vmpl: Vmpl,
        vmsa: PhysAddr,
        sev_features: u64,
    ) -> Result<(), HypervisorError> {
        // AP creation goes out on the boot vCPU's GHCB.
        let client = self
            .bsp_client()
            .ok_or(HypervisorError::Refused(u64::MAX))?;
        client
            .create_ap(apic_id, vmpl, vmsa.raw(), sev_features)
            .map_err(HypervisorError::from)
    }
    fn run_guest(&self, apic_id: u32) -> Result<(), HypervisorError> {
        self.client(apic_id)?
            .run_vmpl(self.guest_vmpl)
            .map_err(HypervisorError::from)
    }
    fn guest_request(&self, request: &MessagePage) -> Result<MessagePage, PspError> {
        // As on hardware: the request into the shared page, the GHCB exit on the boot
        // vCPU, the response copied out of the other shared page.
        let (request_gpa, response_gpa) = self.messages;
        self.machine
            .load(request_gpa, request)
            .ok_or(PspError::Unavailable)?;
        self.bsp_client()
            .ok_or(PspError::Unavailable)?
            .guest_request(request_gpa, response_gpa)?;
        let mut response = [0u8; PAGE_SIZE as usize];
        self.machine
            .peek(response_gpa, &mut response)
            .ok_or(PspError::Unavailable)?;
        Ok(response)
    }
}

/// How the emulated SNP machine is laid out.
#[derive(Debug, Clone)]
pub struct SnpMachineConfig {
    /// Memory size (a multiple of 2 MiB).
    pub memory_size: u64,
    /// The guest memory map.
    pub regions: Vec<GuestRegion>,
    /// The SVSM range `[start, end)`.
    pub svsm_range: (u64, u64),
    /// vCPUs; the first is the boot vCPU.
    pub apic_ids: Vec<u32>,
    /// The firmware's expectations (OVMF-like metadata).
    pub firmware: FirmwareInfo,
    /// Bytes of the firmware image, loaded at `firmware.image.base`.
    pub firmware_bytes: Vec<u8>,
    /// The firmware's IGVM memory-map parameter as the IGVM builder records it in the
    /// parameter block (OVMF from edk2-stable202511 on: the start of its IGVM parameter
    /// area, 8 entries); empty for firmware without it (the default, like trixie's OVMF).
    pub firmware_memory_map: MemoryRange,
    /// What the launch is told to write instead of what the boot parameters derive (a
    /// parameter block that broke their rules): the launch must refuse it by itself.
    pub firmware_memory_map_override: Option<FirmwareMemoryMap>,
    /// Guest ranges the hypervisor leaves shared at launch (ENVIRONMENT memory-is-shared
    /// style); the SVSM must make them private before validating.
    pub shared_at_launch: Vec<(u64, u64)>,
    /// SEV_STATUS of the SVSM's vCPUs.
    pub sev_status: u64,
    /// The PSP's secrets page.
    pub secrets: [u8; 4096],
    /// The CPUID page entries.
    pub cpuid: Vec<CpuidEntry>,
    /// C-bit the hypervisor reports.
    pub hypervisor_cbit: u8,
    /// Lies the hypervisor tells from the start.
    pub hostility: Hostility,
    /// Pages the hypervisor swaps after the launch, before the SVSM runs (RMPUPDATE:
    /// assigned again, no longer validated).
    pub swapped_after_launch: Vec<u64>,
}

/// A PSP secrets page with a distinct pattern in each VMPCK.
pub fn test_secrets() -> [u8; 4096] {
    let mut page = [0u8; 4096];
    page[0] = 3;
    page[8] = 0xA0; // fms
    for (i, offset) in [0x20usize, 0x40, 0x60, 0x80].into_iter().enumerate() {
        page[offset..offset + 32].fill(0xA1 + i as u8);
    }
    page
}

/// The CPUID entries of the test machine: leaf 0, 1, 7.0 and 0x8000_001F with C-bit 51.
pub fn test_cpuid() -> Vec<CpuidEntry> {
    let e = |eax_in, ecx_in, eax, ebx, ecx, edx| CpuidEntry {
        eax_in,
        ecx_in,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    vec![
        e(0, 0, 0x10, 0x6874_7541, 0x444D_4163, 0x6974_6E65),
        e(1, 0, 0x00A0_0F11, 0x0800, 0x7EF8_3203, 0x178B_FBFF),
        e(7, 0, 0, 0x219C_97A9, 0x0040_069C, 0x10),
        e(0x8000_001F, 0, 0x0001_001F, 0x0000_0173, 0x1FD, 1),
    ]
}

impl Default for SnpMachineConfig {
    /// 32 MiB, two vCPUs; OVMF's SEV metadata layout from the trixie OVMF.fd
    /// (SNP_SEC_MEM 0x800000+0x9000 and 0x80A000+0x3000, SECRETS 0x80D000, CPUID
    /// 0x80E000, SVSM_CAA 0x80F000, SNP_SEC_MEM 0x810000+0x10000); the firmware image at
    /// 30 MiB (on QEMU it ends at 4 GiB, which the model's memory does not reach); SVSM
    /// memory 16..18 MiB; the 2 MiB around the firmware's scratch left shared.
    fn default() -> Self {
        let region = |start, end, kind| GuestRegion { start, end, kind };
        let range = |base, size| MemoryRange { base, size };
        let mut sec_mem = [MemoryRange::default(); 8];
        sec_mem[0] = range(0x80_0000, 0x9000);
        sec_mem[1] = range(0x80_A000, 0x3000);
        sec_mem[2] = range(0x81_0000, 0x1_0000);
        Self {
            memory_size: 0x200_0000,
            regions: vec![
                region(0, 0xA_0000, MemoryKind::Ram),
                region(0x10_0000, 0x100_0000, MemoryKind::Ram),
                region(0x120_0000, 0x1E0_0000, MemoryKind::Ram),
                region(0x1E0_0000, 0x200_0000, MemoryKind::Ram),
            ],
            svsm_range: (0x100_0000, 0x120_0000),
            apic_ids: vec![0, 1],
            firmware: FirmwareInfo {
                image: range(0x1E0_0000, 0x20_0000),
                secrets_gpa: 0x80_D000,
                cpuid_gpa: 0x80_E000,
                caa_gpa: 0x80_F000,
                sec_mem_count: 3,
                reserved: 0,
                sec_mem,
            },
            firmware_bytes: (0..0x1000u32).map(|i| (i % 251) as u8).collect(),
            firmware_memory_map: MemoryRange::default(),
            firmware_memory_map_override: None,
            shared_at_launch: vec![(0x80_0000, 0xA0_0000)],
            // SEV, SEV-ES, SNP, restricted injection, debug swap (bits 0, 1, 2, 5, 7).
            sev_status: 0b1010_0111,
            secrets: test_secrets(),
            cpuid: test_cpuid(),
            hypervisor_cbit: 51,
            hostility: Hostility::default(),
            swapped_after_launch: Vec::new(),
        }
    }
}

/// Where things are on the booted machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpLayout {
    /// The PSP's secrets page (SVSM memory).
    pub secrets: u64,
    /// The PSP's CPUID page (SVSM memory).
    pub cpuid: u64,
    /// GHCB page per vCPU.
    pub ghcbs: Vec<(u32, u64)>,
    /// The boot vCPU's guest VMSA (SVSM memory).
    pub guest_vmsa: u64,
    /// The shared PSP message pages (request, response).
    pub messages: (u64, u64),
    /// The #HV doorbell page set aside per vCPU (registered, and made shared, only when
    /// restricted injection is negotiated).
    pub doorbells: Vec<(u32, u64)>,
    /// The IGVM parameter block, followed by the host-filled parameter page and memory
    /// map (SVSM memory, as the IGVM file places them).
    pub param_block: u64,
}

/// Why the boot failed: the SVSM's error and the termination request it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFailure {
    /// The error.
    pub error: SnpError,
    /// What the hypervisor received.
    pub terminated: Option<TerminateReason>,
}

/// An emulated SEV-SNP machine after the SVSM's start-up and guest launch.
#[derive(Debug)]
pub struct SnpMachine {
    start: boot::SnpStart,
    machine: Arc<EmulatedSnp>,
    hv: Arc<EmulatedHypervisor>,
    svsm: Svsm<Arc<GhcbPlatform>>,
    platform: Arc<GhcbPlatform>,
    layout: SnpLayout,
    config: SnpMachineConfig,
    summary: LaunchSummary,
    secrets: SvsmSecrets,
    interrupts: Vec<(u32, InterruptConfig)>,
    hooks: VectorHooks,
    svsm_vcpus: svsm::snp::svsm_vcpus::SvsmVcpuPlan,
}

impl SnpMachine {
    /// Lays the machine out as an IGVM launch would, then runs the SVSM's SNP start-up
    /// and guest launch. On failure the SVSM has sent its termination request.
    pub fn boot(config: SnpMachineConfig) -> Result<Self, BootFailure> {
        Self::boot_observed(config).map_err(|(failure, _)| failure)
    }

    /// [`Self::boot`], keeping the machine when the boot fails, so a test can check what
    /// the SVSM did (or did not do) to it before it stopped.
    pub fn boot_observed(
        config: SnpMachineConfig,
    ) -> Result<Self, (BootFailure, Arc<EmulatedSnp>)> {
        let machine = Arc::new(EmulatedSnp::new(
            config.memory_size,
            &config.apic_ids,
            Vmpl::LOWER[1],
        ));
        Self::boot_on(machine.clone(), config).map_err(|failure| (failure, machine))
    }

    fn boot_on(machine: Arc<EmulatedSnp>, config: SnpMachineConfig) -> Result<Self, BootFailure> {
        let hv = EmulatedHypervisor::new(machine.clone(), config.hypervisor_cbit);
        hv.set_hostility(config.hostility.clone());
        let (svsm_start, svsm_end) = config.svsm_range;
        let layout = SnpLayout {
            secrets: svsm_start,
            cpuid: svsm_start + PAGE_SIZE,
            ghcbs: config
                .apic_ids
                .iter()
                .enumerate()
                .map(|(i, &id)| (id, svsm_start + (2 + i as u64) * PAGE_SIZE))
                .collect(),
            guest_vmsa: svsm_start + (2 + config.apic_ids.len() as u64) * PAGE_SIZE,
            messages: (
                svsm_start + (3 + config.apic_ids.len() as u64) * PAGE_SIZE,
                svsm_start + (4 + config.apic_ids.len() as u64) * PAGE_SIZE,
            ),
            doorbells: config
                .apic_ids
                .iter()
                .enumerate()
                .map(|(i, &id)| {
                    (
                        id,
                        svsm_start + (5 + config.apic_ids.len() + i) as u64 * PAGE_SIZE,
                    )
                })
                .collect(),
            param_block: svsm_start + (5 + 2 * config.apic_ids.len() as u64) * PAGE_SIZE,
        };
        let bsp = config.apic_ids.first().copied().unwrap_or(0);
        let fail_early = |error| BootFailure {
            error,
            terminated: None,
        };
        let launch_error = SnpError::Memory(0, MemoryError::NotMemory);

        // ---- what the IGVM launch leaves behind ----
        for r in &config.regions {
            machine.set_backing(r.start, r.end, Backing::Ram);
            assign(&machine, r.start, r.end).ok_or_else(|| fail_early(launch_error))?;
        }
        assign(&machine, svsm_start, svsm_end).ok_or_else(|| fail_early(launch_error))?;
        validate(&machine, svsm_start, svsm_end).ok_or_else(|| fail_early(launch_error))?;
        let fw = config.firmware.image;
        validate(&machine, fw.base, fw.base + fw.size).ok_or_else(|| fail_early(launch_error))?;
        machine
            .load(fw.base, &config.firmware_bytes)
            .ok_or_else(|| fail_early(launch_error))?;
        for &(start, end) in &config.shared_at_launch {
            let mut addr = start;
            while addr < end {
                machine.hv_psmash(addr);
                machine
                    .hv_rmpupdate(addr, PageSize::Size4K, false)
                    .map_err(|_| fail_early(launch_error))?;
                addr += PAGE_SIZE;
            }
        }
        machine
            .load(layout.secrets, &config.secrets)
            .ok_or_else(|| fail_early(launch_error))?;
        let cpuid_bytes =
            CpuidPage::encode(&config.cpuid).map_err(|e| fail_early(SnpError::CpuidPage(e)))?;
        machine
            .load(layout.cpuid, &cpuid_bytes)
            .ok_or_else(|| fail_early(launch_error))?;
        let (block, param_page, host_map) = parameter_areas(&config, layout.param_block);
        for (gpa, bytes) in [
            (layout.param_block, block.as_bytes()),
            (block.param_page_gpa, param_page.as_bytes()),
            (block.memory_map.base, host_map.as_bytes()),
        ] {
            machine
                .load(gpa, bytes)
                .ok_or_else(|| fail_early(launch_error))?;
        }

        for &page in &config.swapped_after_launch {
            machine.hv_psmash(page);
            machine
                .hv_rmpupdate(page, PageSize::Size4K, true)
                .map_err(|_| fail_early(launch_error))?;
        }

        // ---- the SVSM's start-up, the same code the kernel runs ----
        let bsp_gpa = layout.ghcbs.first().map_or(0, |g| g.1);
        let bsp_client = HvClient::new(hv.transport(bsp, bsp_gpa));
        let fail = |error: SnpError| BootFailure {
            error,
            terminated: Some(boot::fail(&bsp_client, &error)),
        };
        // The SVSM copies the PSP's pages into its own memory before parsing them.
        let mut cpuid_copy = [0u8; 4096];
        machine
            .peek(layout.cpuid, &mut cpuid_copy)
            .ok_or_else(|| fail(launch_error))?;
        let start = boot::start(&bsp_client, &cpuid_copy).map_err(fail)?;
        let mut clients = Vec::new();
        for &(apic_id, gpa) in &layout.ghcbs {
            let client = HvClient::new(hv.transport(apic_id, gpa));
            boot::setup_ghcb(machine.as_ref(), &client, gpa).map_err(fail)?;
            clients.push((apic_id, client));
        }
        // Restricted injection: the #HV doorbell on every vCPU, only when negotiated.
        let features = SevFeatures::from_sev_status(config.sev_status);
        hv.set_svsm_features(features);
        let mode = RestrictedInjection::new(features, start.hypervisor.features);
        let mut interrupts = Vec::new();
        for (&(apic_id, gpa), (_, client)) in layout.doorbells.iter().zip(&clients) {
            let page = EmulatedDoorbell {
                machine: machine.clone(),
                gpa,
            };
            let registered =
                setup_doorbell(machine.as_ref(), client, mode, gpa, &page).map_err(fail)?;
            interrupts.push((
                apic_id,
                InterruptConfig {
                    restricted_injection: registered,
                    ..Default::default()
                },
            ));
        }
        for gpa in [layout.messages.0, layout.messages.1] {
            boot::make_shared(machine.as_ref(), &bsp_client, gpa).map_err(fail)?;
        }
        let mut secrets_copy = [0u8; 4096];
        machine
            .peek(layout.secrets, &mut secrets_copy)
            .ok_or_else(|| fail(launch_error))?;
        let secrets = SvsmSecrets::parse(&secrets_copy).map_err(fail)?;
        // The boot parameters, read back from SVSM memory as the kernel reads them.
        let params = read_boot_params(&machine, layout.param_block)
            .ok_or_else(|| fail(SnpError::BootParams))?;
        let firmware_memory_map = match config.firmware_memory_map_override.clone() {
            Some(map) => Some(map),
            None => FirmwareMemoryMap::from_params(&params).map_err(fail)?,
        };

        let memory_layout = MemoryLayout::new(config.regions.clone(), svsm_start, svsm_end)
            .map_err(|_| fail(launch_error))?;
        let platform = Arc::new(GhcbPlatform {
            machine: machine.clone(),
            clients,
            guest_vmpl: Vmpl::LOWER[1],
            messages: layout.messages,
        });
        let svsm = Svsm::new(
            platform.clone(),
            SvsmConfig {
                guest_vmpl: Vmpl::LOWER[1],
                layout: memory_layout,
                apic_ids: config.apic_ids.clone(),
            },
            Services::new(),
        );
        let features = svsm::snp::guest_vmsa::guest_sev_features(
            SevFeatures::from_sev_status(config.sev_status),
            false,
        );
        let plan = GuestLaunch {
            firmware: config.firmware,
            guest_vmpl: Vmpl::LOWER[1],
            bsp_apic_id: bsp,
            vmsa_page: layout.guest_vmsa,
            svsm_base: svsm_start,
            svsm_size: svsm_end - svsm_start,
            guest_features: features,
            reset_address: svsm::snp::guest_vmsa::RESET_VECTOR,
            firmware_memory_map,
        };
        let summary =
            launch_guest(&svsm, &bsp_client, &plan, &secrets, &cpuid_copy).map_err(fail)?;
        let svsm_vcpus = crate::vcpus::create_svsm_vcpus(
            &machine,
            &platform,
            &bsp_client,
            &layout.ghcbs,
            bsp,
            config.svsm_range,
            config.sev_status,
        )
        .map_err(fail)?;
        Ok(Self {
            start,
            machine,
            hv,
            svsm,
            platform,
            layout,
            config,
            summary,
            secrets,
            interrupts,
            hooks: VectorHooks::new(),
            svsm_vcpus,
        })
    }

    /// The SVSM vCPUs the boot vCPU created (one per other APIC ID).
    pub fn svsm_vcpus(&self) -> &svsm::snp::svsm_vcpus::SvsmVcpuPlan {
        &self.svsm_vcpus
    }

    /// What the SVSM learned at start-up (hypervisor, CPUID page, C-bit).
    pub fn start(&self) -> &boot::SnpStart {
        &self.start
    }

    /// The machine.
    pub fn machine(&self) -> &EmulatedSnp {
        &self.machine
    }

    /// The hypervisor.
    pub fn hypervisor(&self) -> &Arc<EmulatedHypervisor> {
        &self.hv
    }

    /// The SVSM.
    pub fn svsm(&self) -> &Svsm<Arc<GhcbPlatform>> {
        &self.svsm
    }

    /// The platform.
    pub fn platform(&self) -> &GhcbPlatform {
        &self.platform
    }

    /// Where things are.
    pub fn layout(&self) -> &SnpLayout {
        &self.layout
    }

    /// The configuration.
    pub fn config(&self) -> &SnpMachineConfig {
        &self.config
    }

    /// What the launch did.
    pub fn summary(&self) -> LaunchSummary {
        self.summary
    }

    /// The SVSM's secrets.
    pub fn secrets(&self) -> &SvsmSecrets {
        &self.secrets
    }

    /// How interrupts reach the SVSM on `apic_id` (restricted injection: doorbell
    /// registered).
    pub fn interrupt_config(&self, apic_id: u32) -> Option<InterruptConfig> {
        self.interrupts
            .iter()
            .find(|(id, _)| *id == apic_id)
            .map(|(_, c)| *c)
    }

    /// The SVSM's external-vector hooks (tests register theirs here).
    pub fn hooks(&self) -> &VectorHooks {
        &self.hooks
    }

    /// The CPU delivers the vectors the hypervisor injected into `apic_id`, one after
    /// the other, to the SVSM's common vector handler, as the kernel's IDT would: a #VC
    /// with a made-up exit code (0x400) and junk at RIP; a #HV under restricted
    /// injection processes the doorbell (`interruptible` is the interrupted RFLAGS.IF).
    /// A fatal outcome sends the termination request the kernel would send.
    pub fn deliver(
        &self,
        apic_id: u32,
        interruptible: bool,
    ) -> Vec<(u8, Result<Delivery, SnpError>)> {
        let Some((config, (_, client))) = self
            .interrupt_config(apic_id)
            .zip(self.platform.clients.iter().find(|(id, _)| *id == apic_id))
        else {
            return Vec::new();
        };
        let page = self
            .layout
            .doorbells
            .iter()
            .find(|(id, _)| *id == apic_id)
            .map(|&(_, gpa)| EmulatedDoorbell {
                machine: self.machine.clone(),
                gpa,
            });
        self.hv
            .take_injections(apic_id)
            .into_iter()
            .map(|vector| {
                let mut regs = VcRegisters::default();
                let result = handle_vector(
                    vector,
                    0x400,
                    &[0xCC, 0xCC],
                    &mut regs,
                    &config,
                    &self.start.cpuid,
                    client,
                )
                .and_then(|outcome| {
                    let doorbell = match (outcome, &page) {
                        (VectorOutcome::Doorbell, Some(page)) => {
                            Some(doorbell::process(page, interruptible, &self.hooks, client)?)
                        }
                        _ => None,
                    };
                    Ok(Delivery { outcome, doorbell })
                });
                if let Err(e) = &result {
                    boot::fail(client, e);
                }
                (vector, result)
            })
            .collect()
    }

    /// The guest's first run: the SVSM asks the hypervisor (GHCB run VMPL) to run the
    /// boot vCPU at the guest VMPL.
    pub fn start_guest(&self) -> Result<(), HypervisorError> {
        self.platform.run_guest(self.bsp())
    }

    /// The boot vCPU.
    pub fn bsp(&self) -> u32 {
        self.config.apic_ids.first().copied().unwrap_or(0)
    }

    /// One call from the guest on `apic_id` with calling area `ca`: the guest's half up
    /// to VMGEXIT, the SVSM's request-loop step, the switch back through the GHCB MSR
    /// run-VMPL request, the guest's `xchg(call_pending, 0)`.
    pub fn call(
        &self,
        apic_id: u32,
        ca: u64,
        regs: &CallRegisters,
    ) -> Result<(RequestOutcome, Result<(), HypervisorError>, CallReturn), GuestFault> {
        self.machine.guest_begin_call(apic_id, ca, regs, true)?;
        let outcome = self.svsm.handle_request(apic_id);
        let run = self.platform.run_guest(apic_id);
        let ret = self.machine.guest_end_call(apic_id, ca)?;
        Ok((outcome, run, ret))
    }

    /// The guest address of the firmware's calling area.
    pub fn caa(&self) -> u64 {
        self.config.firmware.caa_gpa
    }

    /// A checked-range helper for tests that need guest-visible reads of a whole page.
    pub fn guest_page(&self, gpa: u64) -> Result<[u8; 4096], GuestFault> {
        let mut page = [0u8; 4096];
        self.machine.guest_read(gpa, &mut page)?;
        Ok(page)
    }

    /// Checks `gpa` the way the SVSM checks guest addresses.
    pub fn is_guest_memory(&self, gpa: u64) -> bool {
        self.svsm
            .state_snapshot()
            .check(GuestPhysAddr::new(gpa), 1, svsm::address::Access::Validate)
            .is_ok()
    }
}

/// The parameter areas an IGVM file with this machine's layout carries, as the host
/// fills them: the block (its own pages named after the emulated layout's: a page that
/// stands for the kernel, the block, the parameter page, the memory map), the parameter
/// page (vCPU count), and the host's memory map (QEMU's view: the SVSM range is RAM).
fn parameter_areas(
    config: &SnpMachineConfig,
    block_gpa: u64,
) -> (IgvmParamBlock, IgvmParamPage, [MemoryMapEntry; 16]) {
    let (svsm_start, svsm_end) = config.svsm_range;
    let page = |n: u64| block_gpa + n * PAGE_SIZE;
    let block = IgvmParamBlock {
        magic: PARAM_BLOCK_MAGIC,
        version: PARAM_BLOCK_VERSION,
        size: core::mem::size_of::<IgvmParamBlock>() as u32,
        svsm: MemoryRange {
            base: svsm_start,
            size: svsm_end - svsm_start,
        },
        kernel: MemoryRange {
            base: page(1),
            size: PAGE_SIZE,
        },
        secrets_gpa: svsm_start,
        cpuid_gpa: svsm_start + PAGE_SIZE,
        param_page_gpa: page(2),
        memory_map: MemoryRange {
            base: page(3),
            size: PAGE_SIZE,
        },
        madt: MemoryRange::default(),
        free_base: page(4),
        guest_vmpl: DEFAULT_GUEST_VMPL,
        flags: PARAM_FLAG_FIRMWARE,
        firmware: config.firmware,
        firmware_memory_map: config.firmware_memory_map,
    };
    let param_page = IgvmParamPage {
        vcpu_count: config.apic_ids.len() as u32,
        environment: 0,
    };
    // RAM and the SVSM range, merged where they touch; anything else reserved.
    let mut ranges: Vec<(u64, u64, u16)> = config
        .regions
        .iter()
        .map(|r| {
            let kind = match r.kind {
                MemoryKind::Ram => MEMORY_MAP_TYPE_MEMORY,
                MemoryKind::ReadOnly | MemoryKind::Mmio => MEMORY_MAP_TYPE_PLATFORM_RESERVED,
            };
            (r.start, r.end, kind)
        })
        .chain([(svsm_start, svsm_end, MEMORY_MAP_TYPE_MEMORY)])
        .collect();
    ranges.sort_unstable();
    let mut map = [MemoryMapEntry::default(); 16];
    let mut n = 0usize;
    for (start, end, kind) in ranges {
        if n > 0 {
            let last = &mut map[n - 1];
            let last_end = (last.starting_gpa_page_number + last.number_of_pages) * PAGE_SIZE;
            if last.entry_type == kind && last_end == start {
                last.number_of_pages += (end - start) / PAGE_SIZE;
                continue;
            }
        }
        // The last entry stays empty: it ends the list.
        if n + 1 < map.len() {
            map[n] = MemoryMapEntry {
                starting_gpa_page_number: start / PAGE_SIZE,
                number_of_pages: (end - start) / PAGE_SIZE,
                entry_type: kind,
                flags: 0,
                reserved: 0,
            };
            n += 1;
        }
    }
    (block, param_page, map)
}

/// Reads the parameter block and the areas it names back from the machine's memory and
/// checks them as the kernel does.
fn read_boot_params(machine: &EmulatedSnp, block_gpa: u64) -> Option<BootParams> {
    let mut page = [0u8; 4096];
    machine.peek(block_gpa, &mut page)?;
    let block = svsm::boot_params::parse_block(&page).ok()?;
    let mut param_page = [0u8; 4096];
    machine.peek(block.param_page_gpa, &mut param_page)?;
    let mut map = vec![0u8; block.memory_map.size as usize];
    machine.peek(block.memory_map.base, &mut map)?;
    BootParams::new(block, &param_page, &map, &[]).ok()
}

fn assign(machine: &EmulatedSnp, start: u64, end: u64) -> Option<()> {
    let mut addr = start;
    while addr < end {
        let size = if addr % PAGE_SIZE_2M == 0 && addr + PAGE_SIZE_2M <= end {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        machine.hv_rmpupdate(addr, size, true).ok()?;
        addr += size.bytes();
    }
    Some(())
}

fn validate(machine: &EmulatedSnp, start: u64, end: u64) -> Option<()> {
    let mut addr = start;
    while addr < end {
        let size = if addr % PAGE_SIZE_2M == 0 && addr + PAGE_SIZE_2M <= end {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        machine.launch_pvalidate(addr, size).ok()?;
        addr += size.bytes();
    }
    Some(())
}
