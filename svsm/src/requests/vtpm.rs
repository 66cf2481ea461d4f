//! vTPM protocol (2), version 1: SVSM_VTPM_QUERY and SVSM_VTPM_CMD.
//!
//! SVSM_VTPM_CMD takes the GPA of one buffer (at most 4096 bytes) that carries a
//! TPM_SEND_COMMAND request in and the response out (58019 "vTPM Protocol", Linux
//! `include/linux/tpm_svsm.h`). The request is copied into SVSM memory before it is
//! parsed, in two checked reads that never re-read a field: the 9-byte header, then the
//! command of the size that header states. Every guest access goes through
//! [`CallContext`], which refuses ranges outside guest RAM, inside SVSM memory or on a
//! VMSA. TPM errors travel inside the TPM response with RAX = SUCCESS; a refused request
//! (platform command, locality, size, address) leaves the guest buffer and the TPM
//! untouched.
//!
//! One command runs at a time: a second vCPU that calls while the TPM is busy gets
//! `BUSY` (guests retry with identical registers) before anything is read.

use alloc::boxed::Box;
use alloc::sync::Arc;

use spin::mutex::SpinMutex as Mutex;
use svsm_protocol::call::VtpmCall;
use svsm_protocol::vtpm::{
    SendCommandRequestHeader, MAX_COMMAND_SIZE, SEND_COMMAND_REQUEST_HEADER_SIZE, VTPM_BUFFER_MAX,
};
use svsm_protocol::{Field, ParseError};
use vtpm::{Vtpm, VtpmError};
use zerocopy::FromBytes;

use super::{CallContext, ProtocolService, VersionRange};
use crate::address::GuestPhysAddr;
use crate::error::SvsmError;
use crate::platform::Platform;

/// The vTPM protocol versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };

/// The vTPM and the private copy of the guest's buffer it works in.
struct Inner<V> {
    vtpm: V,
    buffer: Box<[u8; VTPM_BUFFER_MAX]>,
}

/// The vTPM protocol service over a started vTPM.
pub struct VtpmProtocol<V> {
    inner: Mutex<Inner<V>>,
}

impl<V> ::core::fmt::Debug for VtpmProtocol<V> {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("VtpmProtocol").finish_non_exhaustive()
    }
}

impl<V: Vtpm + Send> VtpmProtocol<V> {
    /// Serves `vtpm` (already started: manufactured, TPM2_Startup done, EK made).
    pub fn new(vtpm: V) -> Self {
        Self {
            inner: Mutex::new(Inner {
                vtpm,
                buffer: Box::new([0; VTPM_BUFFER_MAX]),
            }),
        }
    }

    /// Runs `f` on the vTPM (e.g. to read the EK for the attestation manifest); waits
    /// for a command in progress.
    pub fn with_vtpm<R>(&self, f: impl FnOnce(&mut V) -> R) -> R {
        f(&mut self.inner.lock().vtpm)
    }
}

/// The vTPM protocol service for [`Services::with_vtpm`](super::Services::with_vtpm).
pub fn service<P: Platform, V: Vtpm + Send + 'static>(vtpm: V) -> Box<dyn ProtocolService<P>> {
    Box::new(VtpmProtocol::new(vtpm))
}

impl<P: Platform, V: Vtpm + Send> ProtocolService<P> for VtpmProtocol<V> {
    fn versions(&self) -> VersionRange {
        VERSIONS
    }

    fn handle(&self, call: &mut CallContext<'_, P>) -> Result<(), SvsmError> {
        match VtpmCall::from_id(call.call_id()) {
            Some(VtpmCall::Query) => {
                let (commands, features) = self.inner.lock().vtpm.query();
                let regs = call.regs_mut();
                regs.rcx = commands.bits();
                regs.rdx = features.bits();
                Ok(())
            }
            Some(VtpmCall::Cmd) => {
                let mut inner = self.inner.try_lock().ok_or(SvsmError::Busy)?;
                send_command(call, &mut inner)
            }
            None => Err(SvsmError::UnsupportedCall),
        }
    }
}

/// A shared vTPM protocol service: the SVSM serves it while its owner keeps a handle
/// (e.g. to read the EK for the attestation manifest).
impl<P: Platform, V: Vtpm + Send> ProtocolService<P> for Arc<VtpmProtocol<V>> {
    fn versions(&self) -> VersionRange {
        VERSIONS
    }

    fn handle(&self, call: &mut CallContext<'_, P>) -> Result<(), SvsmError> {
        <VtpmProtocol<V> as ProtocolService<P>>::handle(self, call)
    }
}

/// SVSM_VTPM_CMD: copy in, run, copy the response out.
fn send_command<P: Platform, V: Vtpm>(
    call: &mut CallContext<'_, P>,
    inner: &mut Inner<V>,
) -> Result<(), SvsmError> {
    let gpa = call.regs().rcx;
    let Inner { vtpm, buffer } = inner;
    let (header, rest) = buffer.split_at_mut(SEND_COMMAND_REQUEST_HEADER_SIZE);
    call.read_guest(GuestPhysAddr::new(gpa), header)?;
    // Only the size decides how much more to copy; the service checks every field of
    // this same copy.
    let size = SendCommandRequestHeader::read_from_bytes(header)
        .map_err(|_| vtpm_error(VtpmError::Truncated))?
        .size
        .get() as usize;
    let command = rest
        .get_mut(..size)
        .ok_or(vtpm_error(VtpmError::CommandTooLarge(size as u32)))?;
    let body = gpa
        .checked_add(SEND_COMMAND_REQUEST_HEADER_SIZE as u64)
        .ok_or(SvsmError::Parse(ParseError::UnknownValue {
            field: Field::Gpa,
            value: gpa,
        }))?;
    call.read_guest(GuestPhysAddr::new(body), command)?;
    // The response is written over the request, so the service gets the whole buffer.
    let len = vtpm.handle_request(&mut buffer[..]).map_err(vtpm_error)?;
    let response = buffer.get(..len).ok_or(SvsmError::InvalidFormat)?;
    call.write_guest(GuestPhysAddr::new(gpa), response)
}

/// The guest-visible code of a refused vTPM request.
fn vtpm_error(e: VtpmError) -> SvsmError {
    match e {
        VtpmError::UnsupportedCommand(_) => SvsmError::UnsupportedCall,
        VtpmError::Locality(l) => SvsmError::Parse(ParseError::UnknownValue {
            field: Field::Locality,
            value: l.into(),
        }),
        VtpmError::CommandTooLarge(size) => SvsmError::Parse(ParseError::SizeTooLarge {
            size: size as usize,
            max: MAX_COMMAND_SIZE,
        }),
        VtpmError::Truncated => SvsmError::Parse(ParseError::ShortBuffer {
            need: SEND_COMMAND_REQUEST_HEADER_SIZE,
            got: 0,
        }),
    }
}
