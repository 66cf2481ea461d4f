//! SVSM call encoding: protocol and call ids in RAX, and the result codes.
//!
//! A guest loads RAX = `(protocol << 32) | call_id` (SVSM spec 58019, "SVSM Calling
//! Convention") and gets a result code back in RAX. [`Call::decode`] turns RAX into a
//! typed call or the result code the spec prescribes for an unknown protocol or call,
//! so the request loop has exactly one place that rejects them.

use core::fmt;

/// RAX split into its protocol (bits 63:32) and call id (bits 31:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallCode {
    /// Protocol number, RAX bits 63:32.
    pub protocol: u32,
    /// Call id within the protocol, RAX bits 31:0.
    pub call_id: u32,
}

impl CallCode {
    /// Splits a RAX value.
    pub const fn from_rax(rax: u64) -> Self {
        Self {
            protocol: (rax >> 32) as u32,
            call_id: rax as u32,
        }
    }

    /// Builds the RAX value.
    pub const fn to_rax(self) -> u64 {
        ((self.protocol as u64) << 32) | self.call_id as u64
    }
}

/// The SVSM protocols this project knows (58019, "SVSM Protocols").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Protocol {
    /// Core protocol (0).
    Core = 0,
    /// Attestation protocol (1).
    Attestation = 1,
    /// vTPM protocol (2).
    Vtpm = 2,
}

impl Protocol {
    /// The protocol with this number, if known.
    pub const fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(Protocol::Core),
            1 => Some(Protocol::Attestation),
            2 => Some(Protocol::Vtpm),
            _ => None,
        }
    }

    /// The protocol number.
    pub const fn id(self) -> u32 {
        self as u32
    }
}

/// Calls of the core protocol (58019, "Core Protocol").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CoreCall {
    /// SVSM_CORE_REMAP_CA (0).
    RemapCa = 0,
    /// SVSM_CORE_PVALIDATE (1).
    Pvalidate = 1,
    /// SVSM_CORE_CREATE_VCPU (2).
    CreateVcpu = 2,
    /// SVSM_CORE_DELETE_VCPU (3).
    DeleteVcpu = 3,
    /// SVSM_CORE_DEPOSIT_MEM (4).
    DepositMem = 4,
    /// SVSM_CORE_WITHDRAW_MEM (5).
    WithdrawMem = 5,
    /// SVSM_CORE_QUERY_PROTOCOL (6).
    QueryProtocol = 6,
    /// SVSM_CORE_CONFIGURE_VTOM (7).
    ConfigureVtom = 7,
}

impl CoreCall {
    /// The core call with this id, if defined.
    pub const fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => CoreCall::RemapCa,
            1 => CoreCall::Pvalidate,
            2 => CoreCall::CreateVcpu,
            3 => CoreCall::DeleteVcpu,
            4 => CoreCall::DepositMem,
            5 => CoreCall::WithdrawMem,
            6 => CoreCall::QueryProtocol,
            7 => CoreCall::ConfigureVtom,
            _ => return None,
        })
    }
}

/// Calls of the attestation protocol (58019, "Attestation Protocol").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum AttestCall {
    /// SVSM_ATTEST_SERVICES (0).
    AttestServices = 0,
    /// SVSM_ATTEST_SINGLE_SERVICE (1).
    AttestSingleService = 1,
}

impl AttestCall {
    /// The attestation call with this id, if defined.
    pub const fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(AttestCall::AttestServices),
            1 => Some(AttestCall::AttestSingleService),
            _ => None,
        }
    }
}

/// Calls of the vTPM protocol (58019, "vTPM Protocol").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum VtpmCall {
    /// SVSM_VTPM_QUERY (0).
    Query = 0,
    /// SVSM_VTPM_CMD (1).
    Cmd = 1,
}

impl VtpmCall {
    /// The vTPM call with this id, if defined.
    pub const fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(VtpmCall::Query),
            1 => Some(VtpmCall::Cmd),
            _ => None,
        }
    }
}

/// A decoded RAX: one known call of one known protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// A core protocol call.
    Core(CoreCall),
    /// An attestation protocol call.
    Attestation(AttestCall),
    /// A vTPM protocol call.
    Vtpm(VtpmCall),
}

impl Call {
    /// Decodes RAX. An unknown protocol yields `UNSUPPORTED_PROTOCOL`, an unknown call
    /// of a known protocol `UNSUPPORTED_CALL`, as the spec requires.
    pub const fn decode(rax: u64) -> Result<Self, SvsmResultCode> {
        let code = CallCode::from_rax(rax);
        let Some(protocol) = Protocol::from_id(code.protocol) else {
            return Err(SvsmResultCode::UNSUPPORTED_PROTOCOL);
        };
        let call = match protocol {
            Protocol::Core => match CoreCall::from_id(code.call_id) {
                Some(c) => Call::Core(c),
                None => return Err(SvsmResultCode::UNSUPPORTED_CALL),
            },
            Protocol::Attestation => match AttestCall::from_id(code.call_id) {
                Some(c) => Call::Attestation(c),
                None => return Err(SvsmResultCode::UNSUPPORTED_CALL),
            },
            Protocol::Vtpm => match VtpmCall::from_id(code.call_id) {
                Some(c) => Call::Vtpm(c),
                None => return Err(SvsmResultCode::UNSUPPORTED_CALL),
            },
        };
        Ok(call)
    }

    /// The protocol of this call.
    pub const fn protocol(self) -> Protocol {
        match self {
            Call::Core(_) => Protocol::Core,
            Call::Attestation(_) => Protocol::Attestation,
            Call::Vtpm(_) => Protocol::Vtpm,
        }
    }

    /// The call id within its protocol.
    pub const fn call_id(self) -> u32 {
        match self {
            Call::Core(c) => c as u32,
            Call::Attestation(c) => c as u32,
            Call::Vtpm(c) => c as u32,
        }
    }

    /// Encodes the call as the guest loads it into RAX.
    pub const fn to_rax(self) -> u64 {
        CallCode {
            protocol: self.protocol().id(),
            call_id: self.call_id(),
        }
        .to_rax()
    }
}

/// The result code an SVSM call returns in RAX (58019, "SVSM Result Codes"; the same
/// values as Linux's `SVSM_ERR_*` in `arch/x86/include/asm/sev.h` and edk2's `Svsm.h`).
///
/// A newtype rather than an enum: a guest-side driver must be able to hold any value
/// it reads back, and protocol-specific codes are `0x8000_1000 + n`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SvsmResultCode(u64);

impl SvsmResultCode {
    /// The call succeeded.
    pub const SUCCESS: Self = Self(0);
    /// The call made progress but must be repeated to finish.
    pub const INCOMPLETE: Self = Self(0x8000_0000);
    /// The protocol in RAX bits 63:32 is not supported.
    pub const UNSUPPORTED_PROTOCOL: Self = Self(0x8000_0001);
    /// The call id in RAX bits 31:0 is not supported by the protocol.
    pub const UNSUPPORTED_CALL: Self = Self(0x8000_0002);
    /// An address argument is not usable.
    pub const INVALID_ADDRESS: Self = Self(0x8000_0003);
    /// A request's format is invalid.
    pub const INVALID_FORMAT: Self = Self(0x8000_0004);
    /// A parameter is invalid.
    pub const INVALID_PARAMETER: Self = Self(0x8000_0005);
    /// The request is not valid in the current state.
    pub const INVALID_REQUEST: Self = Self(0x8000_0006);
    /// The SVSM is busy; retry the call.
    pub const BUSY: Self = Self(0x8000_0007);
    /// Base of the protocol-specific codes.
    pub const PROTOCOL_BASE: u64 = 0x8000_1000;
    /// PVALIDATE (or RMPADJUST) returned FAIL_INPUT (1).
    pub const PVALIDATE_FAIL_INPUT: Self = Self(Self::PROTOCOL_BASE + 0x1);
    /// RMPADJUST returned FAIL_PERMISSION (2).
    pub const PVALIDATE_FAIL_PERMISSION: Self = Self(Self::PROTOCOL_BASE + 0x2);
    /// The page is in use (FAIL_INUSE, 3): DELETE_VCPU of a running VMSA.
    pub const FAIL_INUSE: Self = Self(Self::PROTOCOL_BASE + 0x3);
    /// PVALIDATE (or RMPADJUST) returned FAIL_SIZEMISMATCH (6).
    pub const PVALIDATE_FAIL_SIZEMISMATCH: Self = Self(Self::PROTOCOL_BASE + 0x6);
    /// PVALIDATE did not change the validated state (CF = 1) and ignore_cf was clear.
    pub const PVALIDATE_FAIL_NOT_CHANGED: Self = Self(Self::PROTOCOL_BASE + 0x10);
    /// PVALIDATE returned a code above 0xF, which the architecture does not define.
    pub const PVALIDATE_FAIL_UNEXPECTED: Self = Self(Self::PROTOCOL_BASE + 0x11);
    /// Base of the "more memory needed" range; bits 29:0 count 4 KiB pages.
    pub const MEMORY_REQUIRED_BASE: u64 = 0x4000_0000;

    /// Wraps any RAX value (e.g. one a guest-side driver reads back).
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// A protocol-specific code `0x8000_1000 + n`.
    pub const fn protocol_specific(n: u32) -> Self {
        Self(Self::PROTOCOL_BASE + n as u64)
    }

    /// The code for a failed PVALIDATE or RMPADJUST: `0x8000_1000 + EAX` for EAX in
    /// 1..=0xF, [`Self::PVALIDATE_FAIL_UNEXPECTED`] above (58019, "SVSM_CORE_PVALIDATE").
    pub const fn from_instruction_error(eax: u32) -> Self {
        if eax <= 0xF {
            Self::protocol_specific(eax)
        } else {
            Self::PVALIDATE_FAIL_UNEXPECTED
        }
    }

    /// "Deposit `pages` more 4 KiB pages, then retry" (`0x4000_0000 | pages`); `None`
    /// if `pages` does not fit in bits 29:0.
    pub const fn memory_required(pages: u32) -> Option<Self> {
        if pages >= 1 << 30 {
            None
        } else {
            Some(Self(Self::MEMORY_REQUIRED_BASE | pages as u64))
        }
    }

    /// The page count of a "more memory needed" code.
    pub const fn required_pages(self) -> Option<u32> {
        if self.0 >= Self::MEMORY_REQUIRED_BASE && self.0 < 0x8000_0000 {
            Some((self.0 & 0x3FFF_FFFF) as u32)
        } else {
            None
        }
    }

    /// The value loaded into RAX.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Whether this is `SUCCESS`.
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// The spec's name for the code, if it has one.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "SUCCESS",
            0x8000_0000 => "INCOMPLETE",
            0x8000_0001 => "UNSUPPORTED_PROTOCOL",
            0x8000_0002 => "UNSUPPORTED_CALL",
            0x8000_0003 => "INVALID_ADDRESS",
            0x8000_0004 => "INVALID_FORMAT",
            0x8000_0005 => "INVALID_PARAMETER",
            0x8000_0006 => "INVALID_REQUEST",
            0x8000_0007 => "BUSY",
            0x8000_1001 => "PVALIDATE_FAIL_INPUT",
            0x8000_1002 => "PVALIDATE_FAIL_PERMISSION",
            0x8000_1003 => "FAIL_INUSE",
            0x8000_1006 => "PVALIDATE_FAIL_SIZEMISMATCH",
            0x8000_1010 => "PVALIDATE_FAIL_NOT_CHANGED",
            0x8000_1011 => "PVALIDATE_FAIL_UNEXPECTED",
            _ => return None,
        })
    }
}

impl fmt::Debug for SvsmResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SvsmResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#x})", self.0),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

impl From<SvsmResultCode> for u64 {
    fn from(code: SvsmResultCode) -> u64 {
        code.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::format;

    #[test]
    fn result_codes_have_the_spec_values() {
        let table: [(SvsmResultCode, u64); 15] = [
            (SvsmResultCode::SUCCESS, 0),
            (SvsmResultCode::INCOMPLETE, 0x8000_0000),
            (SvsmResultCode::UNSUPPORTED_PROTOCOL, 0x8000_0001),
            (SvsmResultCode::UNSUPPORTED_CALL, 0x8000_0002),
            (SvsmResultCode::INVALID_ADDRESS, 0x8000_0003),
            (SvsmResultCode::INVALID_FORMAT, 0x8000_0004),
            (SvsmResultCode::INVALID_PARAMETER, 0x8000_0005),
            (SvsmResultCode::INVALID_REQUEST, 0x8000_0006),
            (SvsmResultCode::BUSY, 0x8000_0007),
            (SvsmResultCode::PVALIDATE_FAIL_INPUT, 0x8000_1001),
            (SvsmResultCode::PVALIDATE_FAIL_SIZEMISMATCH, 0x8000_1006),
            (SvsmResultCode::PVALIDATE_FAIL_NOT_CHANGED, 0x8000_1010),
            (SvsmResultCode::PVALIDATE_FAIL_PERMISSION, 0x8000_1002),
            (SvsmResultCode::FAIL_INUSE, 0x8000_1003),
            (SvsmResultCode::PVALIDATE_FAIL_UNEXPECTED, 0x8000_1011),
        ];
        for (code, value) in table {
            assert_eq!(code.raw(), value);
            assert_eq!(u64::from(code), value);
            assert_eq!(SvsmResultCode::from_raw(value), code);
            assert!(code.name().is_some());
        }
        assert_eq!(
            SvsmResultCode::protocol_specific(6),
            SvsmResultCode::PVALIDATE_FAIL_SIZEMISMATCH
        );
        assert!(SvsmResultCode::SUCCESS.is_success());
        assert!(!SvsmResultCode::BUSY.is_success());
    }

    #[test]
    fn instruction_errors_map_into_the_protocol_range() {
        assert_eq!(
            SvsmResultCode::from_instruction_error(1),
            SvsmResultCode::PVALIDATE_FAIL_INPUT
        );
        assert_eq!(
            SvsmResultCode::from_instruction_error(6),
            SvsmResultCode::PVALIDATE_FAIL_SIZEMISMATCH
        );
        assert_eq!(
            SvsmResultCode::from_instruction_error(0xF).raw(),
            0x8000_100F
        );
        assert_eq!(
            SvsmResultCode::from_instruction_error(0x10),
            SvsmResultCode::PVALIDATE_FAIL_UNEXPECTED
        );
        assert_eq!(
            SvsmResultCode::from_instruction_error(u32::MAX),
            SvsmResultCode::PVALIDATE_FAIL_UNEXPECTED
        );
    }

    #[test]
    fn memory_required_range() {
        let code = SvsmResultCode::memory_required(3).unwrap();
        assert_eq!(code.raw(), 0x4000_0003);
        assert_eq!(code.required_pages(), Some(3));
        assert_eq!(
            SvsmResultCode::memory_required(0x3FFF_FFFF).unwrap().raw(),
            0x7FFF_FFFF
        );
        assert_eq!(SvsmResultCode::memory_required(1 << 30), None);
        assert_eq!(SvsmResultCode::SUCCESS.required_pages(), None);
        assert_eq!(SvsmResultCode::INCOMPLETE.required_pages(), None);
    }

    #[test]
    fn result_code_display() {
        assert_eq!(
            format!("{}", SvsmResultCode::INVALID_PARAMETER),
            "INVALID_PARAMETER (0x80000005)"
        );
        assert_eq!(
            format!("{:?}", SvsmResultCode::from_raw(0x8000_1234)),
            "0x80001234"
        );
    }

    #[test]
    fn rax_encoding_round_trips() {
        let code = CallCode::from_rax(0x0000_0002_0000_0001);
        assert_eq!(
            code,
            CallCode {
                protocol: 2,
                call_id: 1
            }
        );
        assert_eq!(code.to_rax(), 0x0000_0002_0000_0001);
        let any = 0xDEAD_BEEF_0123_4567;
        assert_eq!(CallCode::from_rax(any).to_rax(), any);
    }

    #[test]
    fn every_defined_call_decodes_and_encodes() {
        let calls = [
            (0, 0, Call::Core(CoreCall::RemapCa)),
            (0, 1, Call::Core(CoreCall::Pvalidate)),
            (0, 2, Call::Core(CoreCall::CreateVcpu)),
            (0, 3, Call::Core(CoreCall::DeleteVcpu)),
            (0, 4, Call::Core(CoreCall::DepositMem)),
            (0, 5, Call::Core(CoreCall::WithdrawMem)),
            (0, 6, Call::Core(CoreCall::QueryProtocol)),
            (0, 7, Call::Core(CoreCall::ConfigureVtom)),
            (1, 0, Call::Attestation(AttestCall::AttestServices)),
            (1, 1, Call::Attestation(AttestCall::AttestSingleService)),
            (2, 0, Call::Vtpm(VtpmCall::Query)),
            (2, 1, Call::Vtpm(VtpmCall::Cmd)),
        ];
        for (protocol, id, call) in calls {
            let rax = (protocol << 32) | id;
            assert_eq!(Call::decode(rax), Ok(call));
            assert_eq!(call.to_rax(), rax);
            assert_eq!(call.protocol().id() as u64, protocol);
            assert_eq!(call.call_id() as u64, id);
        }
    }

    #[test]
    fn unknown_protocol_is_unsupported_protocol() {
        assert_eq!(
            Call::decode(3 << 32),
            Err(SvsmResultCode::UNSUPPORTED_PROTOCOL)
        );
        assert_eq!(
            Call::decode(0xFFFF_FFFF_0000_0000),
            Err(SvsmResultCode::UNSUPPORTED_PROTOCOL)
        );
    }

    #[test]
    fn unknown_call_is_unsupported_call() {
        assert_eq!(Call::decode(8), Err(SvsmResultCode::UNSUPPORTED_CALL));
        assert_eq!(
            Call::decode((1 << 32) | 2),
            Err(SvsmResultCode::UNSUPPORTED_CALL)
        );
        assert_eq!(
            Call::decode((2 << 32) | 0xFFFF_FFFF),
            Err(SvsmResultCode::UNSUPPORTED_CALL)
        );
    }
}
