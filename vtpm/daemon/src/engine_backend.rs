//! A backend that runs the vTPM service in this process, without the SVSM path.
//!
//! For diagnostics and as the baseline of the benchmarks: commands reach the same
//! service and engine as through the SVSM, minus the guest driver, calling area and
//! request loop.

use vtpm::service::MAX_RESPONSE_SIZE;
use vtpm::{LibTpms, OsEntropy, Service, VtpmError};

use crate::{BackendError, TpmBackend};

/// The vTPM service over the engine, in this process.
#[derive(Debug)]
pub struct EngineBackend {
    service: Option<Service<LibTpms>>,
    command: Vec<u8>,
    response: Vec<u8>,
}

impl EngineBackend {
    /// Powers the engine on and starts the vTPM (manufacture, Startup, EK).
    pub fn new() -> Result<Self, BackendError> {
        let mut backend = Self {
            service: None,
            command: Vec::with_capacity(4096),
            response: vec![0; MAX_RESPONSE_SIZE],
        };
        backend.power_on()?;
        Ok(backend)
    }
}

impl EngineBackend {
    /// The endorsement key (template L-1) as a TPMT_PUBLIC, while powered on.
    pub fn ek_public(&self) -> Option<Vec<u8>> {
        use vtpm::Vtpm;
        self.service.as_ref().map(|s| s.ek_public().to_vec())
    }
}

impl TpmBackend for EngineBackend {
    fn command(&mut self, locality: u8, command: &[u8]) -> Result<Vec<u8>, BackendError> {
        let service = self.service.as_mut().ok_or(BackendError::PoweredOff)?;
        self.command.clear();
        self.command.extend_from_slice(command);
        match service.execute(locality, &mut self.command, &mut self.response) {
            Ok(n) => Ok(self.response[..n].to_vec()),
            Err(VtpmError::Locality(l)) => Err(BackendError::Locality(l)),
            Err(VtpmError::CommandTooLarge(_)) => Err(BackendError::CommandTooLarge(command.len())),
            Err(e) => Err(BackendError::Transport(e.to_string())),
        }
    }

    fn power_on(&mut self) -> Result<(), BackendError> {
        if self.service.is_none() {
            let service = vtpm::start(Box::new(OsEntropy))
                .map_err(|e| BackendError::Transport(e.to_string()))?;
            self.service = Some(service);
        }
        Ok(())
    }

    fn power_off(&mut self) -> Result<(), BackendError> {
        self.service = None;
        Ok(())
    }

    fn set_cancel(&mut self, _on: bool) {
        // Commands run to completion; there is nothing to cancel between them.
    }
}
