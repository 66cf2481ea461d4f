//! The kernel's error type and its one mapping to the guest-visible result code.
//!
//! Module errors (address checks, wire-format parsing, platform instructions, memory
//! access, the PSP) roll up into [`SvsmError`]; the guest sees only the
//! [`SvsmResultCode`] that the single `From` impl below assigns. Nothing here carries a
//! string: every variant is a typed reason a log line can print.

use core::fmt;

use svsm_protocol::{ParseError, SvsmResultCode};

use crate::address::AddressError;
use crate::platform::{HypervisorError, MemoryError, PspError, PvalidateError, RmpadjustError};

/// Why a well-formed request was refused in the current state, or why a parameter's
/// value (as opposed to its format) is unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// CREATE_VCPU: no vCPU has this APIC ID.
    UnknownApicId,
    /// CREATE_VCPU: the VMSA's VMPL field is not the guest's VMPL.
    VmsaVmpl,
    /// CREATE_VCPU: the VMSA's EFER.SVME is clear.
    VmsaSvme,
    /// CREATE_VCPU: the VMSA's SEV features differ from the caller's.
    VmsaSevFeatures,
    /// DELETE_VCPU: the calling vCPU cannot delete the VMSA it is running on.
    CallerVmsa,
    /// CONFIGURE_VTOM: this SVSM does not configure vTOM.
    VtomUnsupported,
}

/// Every way a request can fail inside the SVSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvsmError {
    /// A guest address failed the check in [`crate::address`].
    Address(AddressError),
    /// Guest bytes or registers do not form a valid request.
    Parse(ParseError),
    /// A parameter's value is unacceptable.
    InvalidParameter(Reason),
    /// The request is not valid in the current state.
    InvalidRequest(Reason),
    /// The request's format is invalid (protocol-specific parsers).
    InvalidFormat,
    /// Guest memory behind a checked range could not be accessed.
    Memory(MemoryError),
    /// PVALIDATE failed.
    Pvalidate(PvalidateError),
    /// PVALIDATE found the page already in the requested state and ignore_cf was
    /// clear.
    PvalidateNotChanged,
    /// RMPADJUST failed.
    Rmpadjust(RmpadjustError),
    /// The hypervisor refused a request.
    Hypervisor(HypervisorError),
    /// The PSP refused a guest request.
    Psp(PspError),
    /// The protocol in RAX is not supported.
    UnsupportedProtocol,
    /// The call in RAX is not supported by its protocol.
    UnsupportedCall,
    /// Another vCPU holds what this request needs; retry unchanged.
    Busy,
    /// Progress was made and recorded; retry to finish.
    Incomplete,
    /// A protocol-specific result `0x8000_1000 + n`.
    ProtocolSpecific(u32),
}

impl From<AddressError> for SvsmError {
    fn from(e: AddressError) -> Self {
        SvsmError::Address(e)
    }
}

impl From<ParseError> for SvsmError {
    fn from(e: ParseError) -> Self {
        SvsmError::Parse(e)
    }
}

impl From<MemoryError> for SvsmError {
    fn from(e: MemoryError) -> Self {
        SvsmError::Memory(e)
    }
}

impl From<PvalidateError> for SvsmError {
    fn from(e: PvalidateError) -> Self {
        SvsmError::Pvalidate(e)
    }
}

impl From<RmpadjustError> for SvsmError {
    fn from(e: RmpadjustError) -> Self {
        SvsmError::Rmpadjust(e)
    }
}

impl From<HypervisorError> for SvsmError {
    fn from(e: HypervisorError) -> Self {
        SvsmError::Hypervisor(e)
    }
}

impl From<PspError> for SvsmError {
    fn from(e: PspError) -> Self {
        SvsmError::Psp(e)
    }
}

/// The one mapping from kernel errors to guest-visible result codes (58019, "SVSM
/// Result Codes").
impl From<SvsmError> for SvsmResultCode {
    fn from(e: SvsmError) -> Self {
        match e {
            SvsmError::Address(_) | SvsmError::Memory(_) => SvsmResultCode::INVALID_ADDRESS,
            SvsmError::Parse(p) => p.into(),
            SvsmError::InvalidParameter(_) => SvsmResultCode::INVALID_PARAMETER,
            SvsmError::InvalidRequest(_) => SvsmResultCode::INVALID_REQUEST,
            SvsmError::InvalidFormat => SvsmResultCode::INVALID_FORMAT,
            SvsmError::Pvalidate(PvalidateError::FailInput) => SvsmResultCode::PVALIDATE_FAIL_INPUT,
            SvsmError::Pvalidate(PvalidateError::FailSizeMismatch)
            | SvsmError::Rmpadjust(RmpadjustError::FailSizeMismatch) => {
                SvsmResultCode::PVALIDATE_FAIL_SIZEMISMATCH
            }
            SvsmError::Pvalidate(PvalidateError::Fault(_))
            | SvsmError::Rmpadjust(RmpadjustError::Fault(_)) => SvsmResultCode::INVALID_ADDRESS,
            SvsmError::PvalidateNotChanged => SvsmResultCode::PVALIDATE_FAIL_NOT_CHANGED,
            SvsmError::Rmpadjust(RmpadjustError::FailInput) => SvsmResultCode::INVALID_PARAMETER,
            SvsmError::Rmpadjust(RmpadjustError::FailPermission)
            | SvsmError::Hypervisor(_)
            | SvsmError::Psp(PspError::Unavailable)
            | SvsmError::Psp(PspError::Hypervisor(_))
            | SvsmError::Psp(PspError::Firmware(_)) => SvsmResultCode::INVALID_REQUEST,
            SvsmError::Psp(PspError::Busy)
            | SvsmError::Busy
            | SvsmError::Rmpadjust(RmpadjustError::FailInUse) => SvsmResultCode::BUSY,
            SvsmError::UnsupportedProtocol => SvsmResultCode::UNSUPPORTED_PROTOCOL,
            SvsmError::UnsupportedCall => SvsmResultCode::UNSUPPORTED_CALL,
            SvsmError::Incomplete => SvsmResultCode::INCOMPLETE,
            SvsmError::ProtocolSpecific(n) => SvsmResultCode::protocol_specific(n),
        }
    }
}

impl fmt::Display for SvsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SvsmError::Parse(p) => write!(f, "malformed request: {p}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl core::error::Error for SvsmError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::RmpFault;

    #[test]
    fn every_error_maps_to_the_spec_code() {
        let table = [
            (
                SvsmError::Address(AddressError::SvsmMemory),
                SvsmResultCode::INVALID_ADDRESS,
            ),
            (
                SvsmError::Memory(MemoryError::NotValidated),
                SvsmResultCode::INVALID_ADDRESS,
            ),
            (
                SvsmError::Parse(ParseError::EmptyList),
                SvsmResultCode::INVALID_PARAMETER,
            ),
            (
                SvsmError::InvalidParameter(Reason::UnknownApicId),
                SvsmResultCode::INVALID_PARAMETER,
            ),
            (
                SvsmError::InvalidRequest(Reason::VtomUnsupported),
                SvsmResultCode::INVALID_REQUEST,
            ),
            (SvsmError::InvalidFormat, SvsmResultCode::INVALID_FORMAT),
            (
                SvsmError::Pvalidate(PvalidateError::FailInput),
                SvsmResultCode::PVALIDATE_FAIL_INPUT,
            ),
            (
                SvsmError::Pvalidate(PvalidateError::FailSizeMismatch),
                SvsmResultCode::PVALIDATE_FAIL_SIZEMISMATCH,
            ),
            (
                SvsmError::Rmpadjust(RmpadjustError::FailSizeMismatch),
                SvsmResultCode::PVALIDATE_FAIL_SIZEMISMATCH,
            ),
            (
                SvsmError::Pvalidate(PvalidateError::Fault(RmpFault::NotAssigned)),
                SvsmResultCode::INVALID_ADDRESS,
            ),
            (
                SvsmError::Rmpadjust(RmpadjustError::Fault(RmpFault::NotValidated)),
                SvsmResultCode::INVALID_ADDRESS,
            ),
            (
                SvsmError::PvalidateNotChanged,
                SvsmResultCode::PVALIDATE_FAIL_NOT_CHANGED,
            ),
            (
                SvsmError::Rmpadjust(RmpadjustError::FailInput),
                SvsmResultCode::INVALID_PARAMETER,
            ),
            (
                SvsmError::Rmpadjust(RmpadjustError::FailPermission),
                SvsmResultCode::INVALID_REQUEST,
            ),
            (
                SvsmError::Hypervisor(HypervisorError::Unsupported),
                SvsmResultCode::INVALID_REQUEST,
            ),
            (
                SvsmError::Psp(PspError::Unavailable),
                SvsmResultCode::INVALID_REQUEST,
            ),
            (
                SvsmError::Psp(PspError::Firmware(1)),
                SvsmResultCode::INVALID_REQUEST,
            ),
            (
                SvsmError::Psp(PspError::Hypervisor(1)),
                SvsmResultCode::INVALID_REQUEST,
            ),
            (SvsmError::Psp(PspError::Busy), SvsmResultCode::BUSY),
            (SvsmError::Busy, SvsmResultCode::BUSY),
            // A VMSA still running: the guest retries (DELETE_VCPU on SNP).
            (
                SvsmError::Rmpadjust(RmpadjustError::FailInUse),
                SvsmResultCode::BUSY,
            ),
            (
                SvsmError::UnsupportedProtocol,
                SvsmResultCode::UNSUPPORTED_PROTOCOL,
            ),
            (SvsmError::UnsupportedCall, SvsmResultCode::UNSUPPORTED_CALL),
            (SvsmError::Incomplete, SvsmResultCode::INCOMPLETE),
            (
                SvsmError::ProtocolSpecific(6),
                SvsmResultCode::PVALIDATE_FAIL_SIZEMISMATCH,
            ),
        ];
        for (error, code) in table {
            assert_eq!(SvsmResultCode::from(error), code, "{error}");
        }
    }
}
