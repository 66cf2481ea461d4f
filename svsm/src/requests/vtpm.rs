//! vTPM protocol (2), version 1: SVSM_VTPM_QUERY and SVSM_VTPM_CMD.
//!
//! SVSM_VTPM_CMD takes the GPA of one 4096-byte buffer that carries a
//! TPM_SEND_COMMAND request in and the response out (58019 "vTPM Protocol", Linux
//! `include/linux/tpm_svsm.h`). The whole buffer is checked, and the bytes the request
//! occupies are copied into SVSM memory, before the request is parsed; only that copy is
//! parsed. Every guest access goes through
//! [`CallContext`], which refuses ranges outside guest RAM, inside SVSM memory or on a
//! VMSA. TPM errors travel inside the TPM response with RAX = SUCCESS; a refused request
//! (platform command, locality, size, address) leaves the guest buffer and the TPM
//! untouched.
//!
//! One command runs at a time: a second vCPU that calls while the TPM is busy gets
//! `BUSY` (guests retry with identical registers) before anything is read.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
#![forbid(unsafe_code)]

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
    /// The SVSM_VTPM_QUERY answer (RCX, RDX), fixed at start: QUERY never waits for a
    /// command in progress.
    query: (u64, u64),
}

impl<V> ::core::fmt::Debug for VtpmProtocol<V> {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("VtpmProtocol").finish_non_exhaustive()
    }
}

impl<V: Vtpm + Send> VtpmProtocol<V> {
    /// Serves `vtpm` (already started: manufactured, TPM2_Startup done, EK made).
    pub fn new(vtpm: V) -> Self {
        let (commands, features) = vtpm.query();
        Self {
            inner: Mutex::new(Inner {
                vtpm,
                buffer: Box::new([0; VTPM_BUFFER_MAX]),
            }),
            query: (commands.bits(), features.bits()),
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
                let regs = call.regs_mut();
                (regs.rcx, regs.rdx) = self.query;
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
///
/// The buffer is the 4096 bytes at RCX, all of which must be guest RAM outside SVSM
/// memory: checking the whole of it before the command runs means the response, which
/// may be longer than the request, can always be written back, so a refused request
/// never leaves a command executed behind it. Only the bytes the request occupies are
/// copied in (its header, then the command the header announces, if the transport
/// carries that size), each byte once; only the service parses them, from the copy.
fn send_command<P: Platform, V: Vtpm>(
    call: &mut CallContext<'_, P>,
    inner: &mut Inner<V>,
) -> Result<(), SvsmError> {
    let gpa = GuestPhysAddr::new(call.regs().rcx);
    let Inner { vtpm, buffer } = inner;
    {
        // One check of the whole buffer; the request's pieces are copied under it.
        let guest = call.guest_buffer(gpa, VTPM_BUFFER_MAX as u64)?;
        let (header, rest) = buffer.split_at_mut(SEND_COMMAND_REQUEST_HEADER_SIZE);
        guest.read(0, header)?;
        let (request, _) = SendCommandRequestHeader::read_from_prefix(header)
            .map_err(|_| SvsmError::InvalidFormat)?;
        let size = request.size.get() as usize;
        if let Some(command) = rest.get_mut(..size).filter(|c| !c.is_empty()) {
            guest.read(SEND_COMMAND_REQUEST_HEADER_SIZE as u64, command)?;
        }
    }
    // The response is written over the request in the same private buffer.
    let len = vtpm.handle_request(&mut buffer[..]).map_err(vtpm_error)?;
    let response = buffer.get(..len).ok_or(SvsmError::InvalidFormat)?;
    call.write_guest(gpa, response)
}

/// The guest-visible code of a refused vTPM request (out of line: the error path).
#[cold]
#[inline(never)]
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
