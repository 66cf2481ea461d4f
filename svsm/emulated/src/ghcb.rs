//! The GHCB page exits, as the emulated hypervisor answers them.
//!
//! GHCB specification 56421, "GHCB page protocol" (as KVM implements it in `arch/x86/kvm/svm/sev.c`):
//! the hypervisor reads the request from the shared GHCB page, acts, writes its outputs
//! with their valid bits and `sw_exit_info_1 = 0` (success) or a non-zero error. The
//! model handles MSR accesses (a small MSR file), port I/O (byte-wide devices attached
//! to port ranges, e.g. the [`crate::uart`] model; elsewhere a log of writes and fixed
//! read values), AP creation (through the machine's hypervisor door, which accepts only
//! pages with the RMP VMSA bit), guest requests (both message pages must be shared; the
//! machine's PSP answers) and refuses every other exit.

use std::collections::BTreeMap;
use std::sync::Arc;

use svsm::platform::Vmpl;
use svsm::platform::{PspError, PAGE_SIZE};
use svsm_protocol::ghcb::{
    ApCreation, ApCreationEvent, Ghcb, GhcbField, GHCB_PROTOCOL_VERSION, SVM_EXIT_IOIO,
    SVM_EXIT_MSR, SVM_VMGEXIT_AP_CREATION, SVM_VMGEXIT_GUEST_REQUEST,
};

use crate::machine::EmulatedSnp;

/// `sw_exit_info_1` of a request the hypervisor could not carry out.
pub const VMM_ERROR: u64 = 2;

/// A device behind a range of I/O ports, accessed a byte at a time (IN/OUT of AL).
pub trait PortDevice: Send + Sync + std::fmt::Debug {
    /// IN from the port at `offset` into the device's range.
    fn read(&self, offset: u16) -> u8;
    /// OUT of `value` to the port at `offset`.
    fn write(&self, offset: u16, value: u8);
}

/// The devices and MSRs behind the emulated hypervisor.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    /// Devices by port range: first port, number of ports.
    pub port_devices: Vec<(u16, u16, Arc<dyn PortDevice>)>,
    /// MSR values (RDMSR of an absent MSR reads 0).
    pub msrs: BTreeMap<u32, u64>,
    /// Every OUT: port, value.
    pub io_writes: Vec<(u16, u64)>,
    /// Values IN reads per port (absent ports read all ones).
    pub io_reads: BTreeMap<u16, u64>,
    /// Every WRMSR: MSR, value (e.g. the x2APIC EOIs after doorbell vectors).
    pub msr_writes: Vec<(u32, u64)>,
}

/// Answers one GHCB page request in place.
pub fn handle_page_exit(machine: &EmulatedSnp, devices: &mut Devices, ghcb: &mut Ghcb) {
    let result = answer(machine, devices, ghcb);
    ghcb.protocol_version = GHCB_PROTOCOL_VERSION;
    ghcb.sw_exit_info_1 = match result {
        Ok(()) => 0,
        Err(()) => VMM_ERROR,
    };
}

fn answer(machine: &EmulatedSnp, devices: &mut Devices, ghcb: &mut Ghcb) -> Result<(), ()> {
    let code = ghcb.get_if_valid(GhcbField::SwExitCode).ok_or(())?;
    let info1 = ghcb.get_if_valid(GhcbField::SwExitInfo1).ok_or(())?;
    let info2 = ghcb.get_if_valid(GhcbField::SwExitInfo2).ok_or(())?;
    let rax = ghcb.get_if_valid(GhcbField::Rax);
    let rcx = ghcb.get_if_valid(GhcbField::Rcx);
    let rdx = ghcb.get_if_valid(GhcbField::Rdx);
    ghcb.clear_valid();
    match code {
        SVM_EXIT_MSR => {
            let msr = rcx.ok_or(())? as u32;
            match info1 {
                0 => {
                    let value = devices.msrs.get(&msr).copied().unwrap_or(0);
                    ghcb.set(GhcbField::Rax, value & 0xFFFF_FFFF);
                    ghcb.set(GhcbField::Rdx, value >> 32);
                }
                1 => {
                    let value = (rdx.ok_or(())? << 32) | (rax.ok_or(())? & 0xFFFF_FFFF);
                    devices.msrs.insert(msr, value);
                    devices.msr_writes.push((msr, value));
                }
                _ => return Err(()),
            }
            Ok(())
        }
        SVM_EXIT_IOIO => {
            let port = (info1 >> 16) as u16;
            if info1 & 0b1100 != 0 {
                // String or REP I/O needs a scratch buffer the model does not offer.
                return Err(());
            }
            let device = devices
                .port_devices
                .iter()
                .find(|(base, len, _)| port >= *base && port - base < *len)
                .map(|(base, _, device)| (port - base, device.clone()));
            if let Some((offset, device)) = device {
                // Byte accesses only (SZ8, info1 bit 4): the devices are 8-bit.
                if info1 & (1 << 4) == 0 {
                    return Err(());
                }
                if info1 & 1 != 0 {
                    ghcb.set(GhcbField::Rax, device.read(offset).into());
                } else {
                    device.write(offset, rax.ok_or(())? as u8);
                }
                return Ok(());
            }
            if info1 & 1 != 0 {
                let value = devices.io_reads.get(&port).copied().unwrap_or(u64::MAX);
                ghcb.set(GhcbField::Rax, value);
            } else {
                devices.io_writes.push((port, rax.ok_or(())?));
            }
            Ok(())
        }
        SVM_VMGEXIT_AP_CREATION => {
            let request = ApCreation::decode(info1).map_err(|_| ())?;
            let vmpl = Vmpl::new(request.vmpl).ok_or(())?;
            match request.event {
                ApCreationEvent::Create | ApCreationEvent::CreateOnInit => {
                    // KVM refuses a VMSA whose sev_features differ from RAX's.
                    let mut features = [0u8; 8];
                    machine
                        .peek(info2 + svsm::requests::vmsa::SEV_FEATURES, &mut features)
                        .ok_or(())?;
                    if Some(u64::from_le_bytes(features)) != rax {
                        return Err(());
                    }
                    machine
                        .hv_ap_create(request.apic_id, vmpl, info2)
                        .map_err(|_| ())
                }
                ApCreationEvent::Destroy => machine.hv_ap_destroy(request.apic_id).map_err(|_| ()),
            }
        }
        SVM_VMGEXIT_GUEST_REQUEST => {
            // Both pages must be shared: the hypervisor copies them to and from the PSP.
            let shared = |gpa: u64| {
                gpa % PAGE_SIZE == 0 && machine.rmp_entry(gpa).is_some_and(|e| !e.assigned)
            };
            if !shared(info1) || !shared(info2) {
                return Err(());
            }
            let mut request = [0u8; PAGE_SIZE as usize];
            machine.peek(info1, &mut request).ok_or(())?;
            // sw_exit_info_2: hypervisor error in bits 63:32, firmware error in 31:0.
            let status = match machine.psp().guest_request(&request) {
                Ok(response) => {
                    machine.load(info2, &response).ok_or(())?;
                    0
                }
                Err(PspError::Busy) => 2 << 32,
                Err(PspError::Firmware(code)) => u64::from(code),
                Err(PspError::Hypervisor(code)) => u64::from(code) << 32,
                Err(PspError::Unavailable) => return Err(()),
            };
            ghcb.set(GhcbField::SwExitInfo2, status);
            Ok(())
        }
        _ => Err(()),
    }
}
