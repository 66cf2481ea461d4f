//! The SVSM path on the emulated SEV-SNP machine: every command travels guest driver,
//! calling area, SVSM_VTPM_CMD, request loop, vTPM service, engine, and back.
//!
//! The guest side does what Linux's `tpm_svsm` driver does: at probe, SVSM_VTPM_QUERY
//! must offer TPM_SEND_COMMAND; then each command is written into the driver's buffer
//! page as a TPM_SEND_COMMAND request, the call goes through the vCPU's calling area
//! (retried with identical registers on BUSY), and the response is read back from the
//! same page. A power cycle is a reboot: a new machine, a new SVSM, a new vTPM.

use std::sync::Arc;

use svsm::platform::PAGE_SIZE;
use svsm::psp::evidence::{provision_vtpm, PspReports};
use svsm::psp::GuestMessenger;
use svsm::requests::vtpm::VtpmProtocol;
use svsm::requests::{CallRegisters, Services};
use svsm_emulated::psp::{cert_table, test_chain, LaunchInfo};
use svsm_emulated::{EmulatedSystem, LaunchConfig};
use svsm_guest_driver::{GuestDriver, MAX_RETRIES};
use svsm_protocol::call::{Call, VtpmCall};
use svsm_protocol::vtpm::{
    PlatformCommands, MAX_COMMAND_SIZE, MAX_RESPONSE_SIZE, SEND_COMMAND_REQUEST_HEADER_SIZE,
    SEND_COMMAND_RESPONSE_HEADER_SIZE, TPM_SEND_COMMAND, VTPM_BUFFER_MAX,
};
use svsm_protocol::SvsmResultCode;
use vtpm::{Engine, LibTpms, OsEntropy, Service, Vtpm};

use crate::{BackendError, TpmBackend};

/// The guest page the driver uses as its vTPM buffer (guest RAM, validated at boot).
pub const BUFFER_GPA: u64 = 0x20_0000;

/// The vTPM service as the SVSM hosts it.
pub type HostedVtpm<E = LibTpms> = VtpmProtocol<Service<E>>;

/// One boot of the emulated machine with its vTPM.
struct Booted<E: Engine> {
    system: EmulatedSystem,
    vtpm: Arc<HostedVtpm<E>>,
    ek: Vec<u8>,
    bsp: u32,
    ca: u64,
}

/// Starts a vTPM service for a new boot.
type StartService<E> = Box<dyn FnMut() -> Result<Service<E>, BackendError> + Send>;

/// The SVSM on the emulated machine, driven as Linux's `tpm_svsm` drives it.
pub struct SvsmBackend<E: Engine = LibTpms> {
    booted: Option<Booted<E>>,
    start: StartService<E>,
    launch: LaunchInfo,
}

impl<E: Engine> std::fmt::Debug for SvsmBackend<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvsmBackend")
            .field("powered", &self.booted.is_some())
            .finish()
    }
}

fn transport(what: impl std::fmt::Display) -> BackendError {
    BackendError::Transport(what.to_string())
}

impl<E: Engine + Send + 'static> Booted<E> {
    /// Launches the machine with the SVSM hosting `service` (a freshly started vTPM),
    /// provisions the vTPM's endorsement evidence with a report from the machine's PSP
    /// (the host's certificate table holds the test chain, so the VCEK comes along) before
    /// the guest runs, validates the driver's buffer page and probes the vTPM as Linux
    /// does.
    fn boot(service: Service<E>, launch: &LaunchInfo) -> Result<Self, BackendError> {
        let ek = service.ek_public().to_vec();
        let vtpm = Arc::new(VtpmProtocol::new(service));
        let services = Services::new().with_vtpm(Box::new(vtpm.clone()));
        let system = EmulatedSystem::launch(LaunchConfig::default(), services)
            .map_err(|e| transport(format!("launch of the emulated machine failed: {e:?}")))?;
        let psp = system.machine().psp();
        psp.set_launch(launch.clone());
        let chain = test_chain(&psp.vcek_public_key())
            .and_then(|c| cert_table(&c))
            .map_err(|e| transport(format!("the test certificate chain: {}", e.0)))?;
        psp.set_cert_table(chain);
        let mut messenger = GuestMessenger::new(psp.vmpck0(), 0);
        vtpm.with_vtpm(|service| {
            let mut reports = PspReports::new(&mut messenger, psp).with_certificates();
            provision_vtpm(service, Some(&mut reports))
        })
        .map_err(transport)?;
        let bsp = system.info().bsp();
        let ca = system.info().config.boot_ca;
        GuestDriver::new(&system)
            .pvalidate_linux(bsp, BUFFER_GPA, BUFFER_GPA + PAGE_SIZE, true)
            .map_err(|e| transport(format!("the guest cannot validate its buffer: {e:?}")))?;
        let booted = Self {
            system,
            vtpm,
            ek,
            bsp,
            ca,
        };
        let query = booted.call(VtpmCall::Query, 0)?;
        let commands = PlatformCommands::from_bits_retain(query.rcx);
        if !commands.contains(PlatformCommands::SEND_COMMAND) {
            return Err(transport("the SVSM vTPM does not offer TPM_SEND_COMMAND"));
        }
        Ok(booted)
    }

    /// One vTPM call from the boot vCPU through its calling area, retried with identical
    /// registers while BUSY or INCOMPLETE (as `svsm_perform_call_protocol` does).
    fn call(&self, call: VtpmCall, rcx: u64) -> Result<CallRegisters, BackendError> {
        let regs = CallRegisters {
            rax: Call::Vtpm(call).to_rax(),
            rcx,
            ..CallRegisters::default()
        };
        for _ in 0..MAX_RETRIES {
            let ret = self
                .system
                .call(self.bsp, self.ca, &regs)
                .map_err(guest_fault)?;
            if ret.pending != 0 {
                return Err(cold_transport("the SVSM did not service the call"));
            }
            match SvsmResultCode::from_raw(ret.regs.rax) {
                SvsmResultCode::SUCCESS => return Ok(ret.regs),
                SvsmResultCode::BUSY | SvsmResultCode::INCOMPLETE => continue,
                code => return Err(call_failed(code)),
            }
        }
        Err(cold_transport("the SVSM stayed busy"))
    }

    /// One TPM command as `tpm_svsm` sends it: the request is built in place in the
    /// driver's buffer page, the call made, and the response's bytes copied out of the
    /// page into `response` (cleared first; its allocation is reused).
    fn command_into(
        &self,
        locality: u8,
        command: &[u8],
        response: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        if command.len() > MAX_COMMAND_SIZE {
            return Err(BackendError::CommandTooLarge(command.len()));
        }
        let machine = self.system.machine();
        let len = SEND_COMMAND_REQUEST_HEADER_SIZE + command.len();
        machine
            .guest_write_with(BUFFER_GPA, len, |request| {
                let (header, body) = request.split_at_mut(SEND_COMMAND_REQUEST_HEADER_SIZE);
                header[..4].copy_from_slice(&TPM_SEND_COMMAND.to_le_bytes());
                header[4] = locality;
                header[5..].copy_from_slice(&(command.len() as u32).to_le_bytes());
                body.copy_from_slice(command);
            })
            .map_err(guest_fault)?;
        match self.call(VtpmCall::Cmd, BUFFER_GPA) {
            Ok(_) => {}
            // The SVSM refuses localities other than 0 (INVALID_PARAMETER).
            Err(_) if locality != 0 => return Err(BackendError::Locality(locality)),
            Err(e) => return Err(e),
        }
        response.clear();
        machine
            .guest_read_with(BUFFER_GPA, VTPM_BUFFER_MAX, |page| {
                let (size, rest) = page.split_at(SEND_COMMAND_RESPONSE_HEADER_SIZE);
                let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
                // Linux rejects a response over 4092 bytes.
                match rest.get(..size).filter(|_| size <= MAX_RESPONSE_SIZE) {
                    Some(bytes) => {
                        response.extend_from_slice(bytes);
                        Ok(())
                    }
                    None => Err(bad_response_size(size)),
                }
            })
            .map_err(guest_fault)?
    }
}

// The error paths of a command, out of line so that the path's code stays small.

#[cold]
#[inline(never)]
fn guest_fault(e: svsm_emulated::GuestFault) -> BackendError {
    transport(format!("guest fault: {e:?}"))
}

#[cold]
#[inline(never)]
fn cold_transport(what: &'static str) -> BackendError {
    transport(what)
}

#[cold]
#[inline(never)]
fn call_failed(code: SvsmResultCode) -> BackendError {
    transport(format!("SVSM call failed: {code}"))
}

#[cold]
#[inline(never)]
fn bad_response_size(size: usize) -> BackendError {
    transport(format!("a {size}-byte response from the SVSM"))
}

impl SvsmBackend {
    /// Boots the emulated machine with the SVSM and its vTPM (the libtpms engine,
    /// entropy from the operating system).
    pub fn new() -> Result<Self, BackendError> {
        Self::launched(LaunchInfo::default())
    }

    /// Like [`Self::new`], with the emulated PSP reporting `launch` (its measurement:
    /// for example `svsm-igvm measure` of the IGVM file this vTPM stands in for, so that
    /// a verifier's policy is the one written for that file).
    pub fn launched(launch: LaunchInfo) -> Result<Self, BackendError> {
        Self::with_service_launched(
            Box::new(|| vtpm::start(Box::new(OsEntropy)).map_err(transport)),
            launch,
        )
    }

    /// Like [`Self::new`], with the vTPM's permanent state sealed into the file at
    /// `path` under the key the emulated PSP derives for this launch (MSG_KEY_REQ from
    /// VMPL0, as on SNP), loaded at every power-on and stored at every commit.
    ///
    /// The emulated machine is always the same test machine with the same test launch,
    /// so every daemon derives the same key: this shows the mechanism, not secrecy.
    pub fn with_state(path: &std::path::Path) -> Result<Self, BackendError> {
        Self::with_state_launched(path, LaunchInfo::default())
    }

    /// [`Self::with_state`] with the emulated PSP reporting `launch` ([`Self::launched`]);
    /// the state key mixes in its measurement, as on SNP.
    pub fn with_state_launched(
        path: &std::path::Path,
        launch: LaunchInfo,
    ) -> Result<Self, BackendError> {
        let path = path.to_path_buf();
        let keys_launch = launch.clone();
        Self::with_service_launched(
            Box::new(move || {
                let psp = svsm_emulated::psp::EmulatedPsp::default();
                psp.set_launch(keys_launch.clone());
                let messenger = svsm::psp::GuestMessenger::new(psp.vmpck0(), psp.seqno());
                let keys =
                    svsm::psp::state_key::PspKeySource::new(psp, messenger, Box::new(OsEntropy))
                        .map_err(|e| transport(format!("cannot derive the state key: {e:?}")))?;
                let store =
                    vtpm::state::SealedStore::new(crate::state_file::StateFile::new(&path), keys);
                vtpm::start_with_state(Box::new(OsEntropy), Box::new(store)).map_err(transport)
            }),
            launch,
        )
    }
}

impl<E: Engine + Send + 'static> SvsmBackend<E> {
    /// Boots the emulated machine with the SVSM hosting the vTPM service `start` makes;
    /// every power-on (a reboot) calls it again.
    pub fn with_service(start: StartService<E>) -> Result<Self, BackendError> {
        Self::with_service_launched(start, LaunchInfo::default())
    }

    /// [`Self::with_service`] with the emulated PSP reporting `launch`.
    pub fn with_service_launched(
        mut start: StartService<E>,
        launch: LaunchInfo,
    ) -> Result<Self, BackendError> {
        let booted = Booted::boot(start()?, &launch)?;
        Ok(Self {
            booted: Some(booted),
            start,
            launch,
        })
    }

    /// The endorsement key (template L-1) of this boot, as a TPMT_PUBLIC.
    pub fn ek_public(&self) -> Option<Vec<u8>> {
        self.booted.as_ref().map(|b| b.ek.clone())
    }

    /// [`TpmBackend::command`] with the response copied into `response` (cleared first;
    /// its allocation is reused, so a caller that keeps one buffer allocates nothing
    /// per command).
    pub fn command_into(
        &mut self,
        locality: u8,
        command: &[u8],
        response: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        self.booted
            .as_ref()
            .ok_or(BackendError::PoweredOff)?
            .command_into(locality, command, response)
    }

    /// Runs `f` on the engine inside this boot's SVSM, bypassing the SVSM path (for the
    /// benchmark's direct measurement on the same engine).
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut E) -> R) -> Option<R> {
        self.booted
            .as_ref()
            .map(|b| b.vtpm.with_vtpm(|service| f(service.engine_mut())))
    }
}

impl<E: Engine + Send + 'static> TpmBackend for SvsmBackend<E> {
    fn command(&mut self, locality: u8, command: &[u8]) -> Result<Vec<u8>, BackendError> {
        let mut response = Vec::new();
        self.command_into(locality, command, &mut response)?;
        Ok(response)
    }

    fn power_on(&mut self) -> Result<(), BackendError> {
        if self.booted.is_none() {
            self.booted = Some(Booted::boot((self.start)()?, &self.launch)?);
        }
        Ok(())
    }

    fn power_off(&mut self) -> Result<(), BackendError> {
        // Dropping the machine drops the SVSM, its vTPM service and the engine.
        self.booted = None;
        Ok(())
    }

    fn set_cancel(&mut self, _on: bool) {
        // The SVSM vTPM protocol has no cancel: commands run to completion.
    }
}
