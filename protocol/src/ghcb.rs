//! GHCB protocol values: the GHCB MSR protocol, the GHCB page and the exit codes.
//!
//! From the GHCB specification (56421): section 2.3.1 "GHCB MSR Protocol" and table
//! "GHCB Layout", as used by Linux (`arch/x86/include/asm/sev-common.h`,
//! `struct ghcb` in `svm.h`, `uapi/asm/svm.h`). A GHCB MSR value carries its function in
//! bits 11:0 and data above; [`MsrRequest`] and [`MsrResponse`] encode and decode every
//! function the SVSM uses, rejecting reserved bits a peer must not set.

use bitflags::bitflags;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::error::{Field, ParseError};

/// The GHCB MSR (`MSR_AMD64_SEV_ES_GHCB`).
pub const MSR_GHCB: u32 = 0xC001_0130;
/// The SEV status MSR (`MSR_AMD64_SEV`).
pub const MSR_SEV_STATUS: u32 = 0xC001_0131;

/// Mask of the function field of a GHCB MSR value.
pub const MSR_INFO_MASK: u64 = 0xFFF;

/// SEV information request.
pub const MSR_SEV_INFO_REQ: u64 = 0x002;
/// SEV information response.
pub const MSR_SEV_INFO_RESP: u64 = 0x001;
/// Register GHCB GPA request.
pub const MSR_REG_GPA_REQ: u64 = 0x012;
/// Register GHCB GPA response.
pub const MSR_REG_GPA_RESP: u64 = 0x013;
/// SNP page state change request.
pub const MSR_PSC_REQ: u64 = 0x014;
/// SNP page state change response.
pub const MSR_PSC_RESP: u64 = 0x015;
/// SNP run VMPL request.
pub const MSR_RUN_VMPL_REQ: u64 = 0x016;
/// SNP run VMPL response.
pub const MSR_RUN_VMPL_RESP: u64 = 0x017;
/// Hypervisor feature support request.
pub const MSR_HV_FT_REQ: u64 = 0x080;
/// Hypervisor feature support response.
pub const MSR_HV_FT_RESP: u64 = 0x081;
/// Termination request.
pub const MSR_TERM_REQ: u64 = 0x100;

/// Terminate reason set 0: general.
pub const TERM_SET_GENERAL: u8 = 0;
/// Terminate reason set 1: Linux-specific codes.
pub const TERM_SET_LINUX: u8 = 1;
/// General reason 0: general termination request.
pub const TERM_GENERAL_REQUEST: u8 = 0;
/// General reason 1: protocol version not supported.
pub const TERM_PROTOCOL_UNSUPPORTED: u8 = 1;
/// General reason 2: SNP features not supported.
pub const TERM_SNP_UNSUPPORTED: u8 = 2;

bitflags! {
    /// Hypervisor feature bits (HV_FT response bits 63:12, shifted down; Linux
    /// `GHCB_HV_FT_*` checks bits 0, 1 and 5).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct HvFeatures: u64 {
        /// SEV-SNP support (bit 0).
        const SNP = 1 << 0;
        /// SNP AP creation (bit 1).
        const SNP_AP_CREATION = 1 << 1;
        /// SNP restricted injection (bit 2).
        const SNP_RESTRICTED_INJECTION = 1 << 2;
        /// SNP restricted injection timer (bit 3).
        const SNP_RESTRICTED_INJECTION_TIMER = 1 << 3;
        /// APIC ID list (bit 4).
        const APIC_ID_LIST = 1 << 4;
        /// SNP multiple VMPLs (bit 5): needed to run an SVSM.
        const SNP_MULTI_VMPL = 1 << 5;
    }
}

/// Page state change operation (PSC request bits 55:52).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageState {
    /// Make the page private (1).
    Private = 1,
    /// Make the page shared (2).
    Shared = 2,
}

/// A GHCB MSR protocol request (guest to hypervisor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrRequest {
    /// SEV information.
    SevInfo,
    /// Register the GHCB at this GFN.
    RegisterGhcb {
        /// GFN of the GHCB page (bits 63:12).
        gfn: u64,
    },
    /// Change the state of one 4 KiB page.
    PageStateChange {
        /// GFN (bits 51:12).
        gfn: u64,
        /// New state (bits 55:52).
        state: PageState,
    },
    /// Run the vCPU at this VMPL (bits 39:32).
    RunVmpl {
        /// Target VMPL.
        vmpl: u8,
    },
    /// Hypervisor feature support.
    HypervisorFeatures,
    /// Terminate the guest.
    Terminate {
        /// Reason set (bits 15:12).
        set: u8,
        /// Reason code (bits 23:16).
        code: u8,
    },
}

const GFN_52_MASK: u64 = 0x000F_FFFF_FFFF_F000;

fn reserved(value: u64, allowed: u64) -> Result<(), ParseError> {
    let bits = value & !allowed;
    if bits != 0 {
        Err(ParseError::ReservedBits {
            field: Field::GhcbMsr,
            bits,
        })
    } else {
        Ok(())
    }
}

impl MsrRequest {
    /// The MSR value.
    pub fn encode(self) -> u64 {
        match self {
            MsrRequest::SevInfo => MSR_SEV_INFO_REQ,
            MsrRequest::RegisterGhcb { gfn } => (gfn << 12) | MSR_REG_GPA_REQ,
            MsrRequest::PageStateChange { gfn, state } => {
                ((state as u64) << 52) | ((gfn << 12) & GFN_52_MASK) | MSR_PSC_REQ
            }
            MsrRequest::RunVmpl { vmpl } => (u64::from(vmpl) << 32) | MSR_RUN_VMPL_REQ,
            MsrRequest::HypervisorFeatures => MSR_HV_FT_REQ,
            MsrRequest::Terminate { set, code } => {
                (u64::from(code) << 16) | (u64::from(set & 0xF) << 12) | MSR_TERM_REQ
            }
        }
    }

    /// Decodes an MSR value written by a guest.
    pub fn decode(value: u64) -> Result<Self, ParseError> {
        match value & MSR_INFO_MASK {
            MSR_SEV_INFO_REQ => {
                reserved(value, MSR_INFO_MASK)?;
                Ok(MsrRequest::SevInfo)
            }
            MSR_REG_GPA_REQ => Ok(MsrRequest::RegisterGhcb { gfn: value >> 12 }),
            MSR_PSC_REQ => {
                reserved(value, 0x00FF_FFFF_FFFF_FFFF)?;
                let state = match (value >> 52) & 0xF {
                    1 => PageState::Private,
                    2 => PageState::Shared,
                    op => {
                        return Err(ParseError::UnknownValue {
                            field: Field::GhcbMsr,
                            value: op,
                        })
                    }
                };
                Ok(MsrRequest::PageStateChange {
                    gfn: (value & GFN_52_MASK) >> 12,
                    state,
                })
            }
            MSR_RUN_VMPL_REQ => {
                reserved(value, 0xFF_0000_0000 | MSR_INFO_MASK)?;
                Ok(MsrRequest::RunVmpl {
                    vmpl: (value >> 32) as u8,
                })
            }
            MSR_HV_FT_REQ => {
                reserved(value, MSR_INFO_MASK)?;
                Ok(MsrRequest::HypervisorFeatures)
            }
            MSR_TERM_REQ => {
                reserved(value, 0xFF_FFFF)?;
                Ok(MsrRequest::Terminate {
                    set: ((value >> 12) & 0xF) as u8,
                    code: (value >> 16) as u8,
                })
            }
            function => Err(ParseError::UnknownValue {
                field: Field::GhcbMsr,
                value: function,
            }),
        }
    }
}

/// A GHCB MSR protocol response (hypervisor to guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrResponse {
    /// SEV information.
    SevInfo {
        /// Highest GHCB protocol version (bits 63:48).
        max_version: u16,
        /// Lowest GHCB protocol version (bits 47:32).
        min_version: u16,
        /// C-bit position (bits 31:24).
        cbit: u8,
    },
    /// GHCB registration result: the registered GFN (bits 63:12).
    RegisterGhcb {
        /// GFN the hypervisor registered; must equal the request's.
        gfn: u64,
    },
    /// Page state change result (bits 63:32, 0 = success).
    PageStateChange {
        /// Error code.
        error: u32,
    },
    /// Run VMPL result (bits 63:32, 0 = success).
    RunVmpl {
        /// Error code.
        error: u32,
    },
    /// Hypervisor features (bits 63:12).
    HypervisorFeatures(HvFeatures),
}

impl MsrResponse {
    /// The MSR value.
    pub fn encode(self) -> u64 {
        match self {
            MsrResponse::SevInfo {
                max_version,
                min_version,
                cbit,
            } => {
                (u64::from(max_version) << 48)
                    | (u64::from(min_version) << 32)
                    | (u64::from(cbit) << 24)
                    | MSR_SEV_INFO_RESP
            }
            MsrResponse::RegisterGhcb { gfn } => (gfn << 12) | MSR_REG_GPA_RESP,
            MsrResponse::PageStateChange { error } => (u64::from(error) << 32) | MSR_PSC_RESP,
            MsrResponse::RunVmpl { error } => (u64::from(error) << 32) | MSR_RUN_VMPL_RESP,
            MsrResponse::HypervisorFeatures(f) => (f.bits() << 12) | MSR_HV_FT_RESP,
        }
    }

    /// Decodes an MSR value returned by the hypervisor (untrusted).
    pub fn decode(value: u64) -> Result<Self, ParseError> {
        match value & MSR_INFO_MASK {
            MSR_SEV_INFO_RESP => {
                reserved(value, !0xFF_F000)?;
                Ok(MsrResponse::SevInfo {
                    max_version: (value >> 48) as u16,
                    min_version: (value >> 32) as u16,
                    cbit: (value >> 24) as u8,
                })
            }
            MSR_REG_GPA_RESP => Ok(MsrResponse::RegisterGhcb { gfn: value >> 12 }),
            MSR_PSC_RESP => {
                reserved(value, !0xFFFF_F000)?;
                Ok(MsrResponse::PageStateChange {
                    error: (value >> 32) as u32,
                })
            }
            MSR_RUN_VMPL_RESP => {
                reserved(value, !0xFFFF_F000)?;
                Ok(MsrResponse::RunVmpl {
                    error: (value >> 32) as u32,
                })
            }
            MSR_HV_FT_RESP => Ok(MsrResponse::HypervisorFeatures(
                HvFeatures::from_bits_retain(value >> 12),
            )),
            function => Err(ParseError::UnknownValue {
                field: Field::GhcbMsr,
                value: function,
            }),
        }
    }
}

/// `SVM_EXIT_CPUID`.
pub const SVM_EXIT_CPUID: u64 = 0x72;
/// `SVM_EXIT_IOIO`.
pub const SVM_EXIT_IOIO: u64 = 0x7B;
/// `SVM_EXIT_MSR`.
pub const SVM_EXIT_MSR: u64 = 0x7C;
/// `SVM_VMGEXIT_PSC`: page state change with a GHCB buffer.
pub const SVM_VMGEXIT_PSC: u64 = 0x8000_0010;
/// `SVM_VMGEXIT_GUEST_REQUEST`: a PSP guest message.
pub const SVM_VMGEXIT_GUEST_REQUEST: u64 = 0x8000_0011;
/// `SVM_VMGEXIT_EXT_GUEST_REQUEST`: a PSP guest message with certificates.
pub const SVM_VMGEXIT_EXT_GUEST_REQUEST: u64 = 0x8000_0012;
/// `SVM_VMGEXIT_AP_CREATION`.
pub const SVM_VMGEXIT_AP_CREATION: u64 = 0x8000_0013;
/// `SVM_VMGEXIT_SNP_RUN_VMPL`.
pub const SVM_VMGEXIT_SNP_RUN_VMPL: u64 = 0x8000_0018;
/// `SVM_VMGEXIT_HV_FEATURES`.
pub const SVM_VMGEXIT_HV_FEATURES: u64 = 0x8000_FFFD;
/// `SVM_VMGEXIT_TERM_REQUEST`.
pub const SVM_VMGEXIT_TERM_REQUEST: u64 = 0x8000_FFFE;

/// AP creation event (exit_info_1 bits 15:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApCreationEvent {
    /// Create the vCPU on the next INIT (0).
    CreateOnInit = 0,
    /// Create the vCPU now (1).
    Create = 1,
    /// Destroy the vCPU (2).
    Destroy = 2,
}

/// The exit_info_1 of an AP creation request: `apic_id << 32 | vmpl << 16 | event`
/// (exit_info_2 = VMSA GPA, RAX = the VMSA's sev_features).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApCreation {
    /// APIC ID of the vCPU.
    pub apic_id: u32,
    /// VMPL of the VMSA.
    pub vmpl: u8,
    /// What to do.
    pub event: ApCreationEvent,
}

impl ApCreation {
    /// exit_info_1.
    pub fn encode(self) -> u64 {
        (u64::from(self.apic_id) << 32) | (u64::from(self.vmpl) << 16) | self.event as u64
    }

    /// Decodes exit_info_1.
    pub fn decode(exit_info_1: u64) -> Result<Self, ParseError> {
        reserved(exit_info_1, 0xFFFF_FFFF_00FF_FFFF)?;
        let event = match exit_info_1 & 0xFFFF {
            0 => ApCreationEvent::CreateOnInit,
            1 => ApCreationEvent::Create,
            2 => ApCreationEvent::Destroy,
            value => {
                return Err(ParseError::UnknownValue {
                    field: Field::GhcbMsr,
                    value,
                })
            }
        };
        Ok(Self {
            apic_id: (exit_info_1 >> 32) as u32,
            vmpl: (exit_info_1 >> 16) as u8,
            event,
        })
    }
}

/// Size of the GHCB shared buffer.
pub const GHCB_SHARED_BUFFER_SIZE: usize = 2032;
/// GHCB protocol version the SVSM speaks (2, the first with SNP).
pub const GHCB_PROTOCOL_VERSION: u16 = 2;
/// GHCB usage 0: the standard layout.
pub const GHCB_USAGE_DEFAULT: u32 = 0;

/// The GHCB page (56421, table "GHCB Layout"; Linux `struct ghcb` with
/// `struct ghcb_save_area`).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
#[expect(
    missing_docs,
    reason = "field names are the GHCB spec's and Linux's; the module docs say where to look"
)]
pub struct Ghcb {
    pub reserved_0x0: [u8; 203],
    pub cpl: u8,
    pub reserved_0xcc: [u8; 116],
    pub xss: u64,
    pub reserved_0x148: [u8; 24],
    pub dr7: u64,
    pub reserved_0x168: [u8; 16],
    pub rip: u64,
    pub reserved_0x180: [u8; 88],
    pub rsp: u64,
    pub reserved_0x1e0: [u8; 24],
    pub rax: u64,
    pub reserved_0x200: [u8; 264],
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub reserved_0x320: [u8; 8],
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub reserved_0x380: [u8; 16],
    pub sw_exit_code: u64,
    pub sw_exit_info_1: u64,
    pub sw_exit_info_2: u64,
    pub sw_scratch: u64,
    pub reserved_0x3b0: [u8; 56],
    pub xcr0: u64,
    /// One bit per 8-byte field of the save area: set when the field is valid.
    pub valid_bitmap: [u8; 16],
    pub x87_state_gpa: u64,
    pub reserved_0x408: [u8; 1016],
    pub shared_buffer: [u8; GHCB_SHARED_BUFFER_SIZE],
    pub reserved_0xff0: [u8; 10],
    /// Negotiated GHCB protocol version.
    pub protocol_version: u16,
    /// GHCB usage ([`GHCB_USAGE_DEFAULT`]).
    pub ghcb_usage: u32,
}

const _: () = assert!(core::mem::size_of::<Ghcb>() == 4096);
const _: () = assert!(core::mem::offset_of!(Ghcb, cpl) == 0xCB);
const _: () = assert!(core::mem::offset_of!(Ghcb, xss) == 0x140);
const _: () = assert!(core::mem::offset_of!(Ghcb, dr7) == 0x160);
const _: () = assert!(core::mem::offset_of!(Ghcb, rip) == 0x178);
const _: () = assert!(core::mem::offset_of!(Ghcb, rsp) == 0x1D8);
const _: () = assert!(core::mem::offset_of!(Ghcb, rax) == 0x1F8);
const _: () = assert!(core::mem::offset_of!(Ghcb, rcx) == 0x308);
const _: () = assert!(core::mem::offset_of!(Ghcb, rdx) == 0x310);
const _: () = assert!(core::mem::offset_of!(Ghcb, rbx) == 0x318);
const _: () = assert!(core::mem::offset_of!(Ghcb, r8) == 0x340);
const _: () = assert!(core::mem::offset_of!(Ghcb, sw_exit_code) == 0x390);
const _: () = assert!(core::mem::offset_of!(Ghcb, sw_exit_info_1) == 0x398);
const _: () = assert!(core::mem::offset_of!(Ghcb, sw_exit_info_2) == 0x3A0);
const _: () = assert!(core::mem::offset_of!(Ghcb, sw_scratch) == 0x3A8);
const _: () = assert!(core::mem::offset_of!(Ghcb, xcr0) == 0x3E8);
const _: () = assert!(core::mem::offset_of!(Ghcb, valid_bitmap) == 0x3F0);
const _: () = assert!(core::mem::offset_of!(Ghcb, x87_state_gpa) == 0x400);
const _: () = assert!(core::mem::offset_of!(Ghcb, shared_buffer) == 0x800);
const _: () = assert!(core::mem::offset_of!(Ghcb, reserved_0xff0) == 0xFF0);
const _: () = assert!(core::mem::offset_of!(Ghcb, protocol_version) == 0xFFA);
const _: () = assert!(core::mem::offset_of!(Ghcb, ghcb_usage) == 0xFFC);

/// A GHCB save-area field that has a valid bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum GhcbField {
    /// CPL (0xCB; valid bit 25).
    Cpl = 0xCB,
    /// XSS (0x140).
    Xss = 0x140,
    /// RAX (0x1F8).
    Rax = 0x1F8,
    /// RCX (0x308).
    Rcx = 0x308,
    /// RDX (0x310).
    Rdx = 0x310,
    /// RBX (0x318).
    Rbx = 0x318,
    /// SW_EXITCODE (0x390).
    SwExitCode = 0x390,
    /// SW_EXITINFO1 (0x398).
    SwExitInfo1 = 0x398,
    /// SW_EXITINFO2 (0x3A0).
    SwExitInfo2 = 0x3A0,
    /// SW_SCRATCH (0x3A8).
    SwScratch = 0x3A8,
    /// XCR0 (0x3E8).
    Xcr0 = 0x3E8,
}

impl GhcbField {
    /// Offset of the field in the GHCB.
    pub const fn offset(self) -> usize {
        self as usize
    }

    /// Index of the field's valid bit: offset / 8.
    pub const fn valid_bit(self) -> usize {
        self.offset() / 8
    }
}

impl Ghcb {
    /// An all-zero GHCB.
    pub fn zeroed() -> Self {
        <Self as FromZeros>::new_zeroed()
    }

    /// Whether `field`'s valid bit is set.
    pub fn is_valid(&self, field: GhcbField) -> bool {
        let bit = field.valid_bit();
        self.valid_bitmap
            .get(bit / 8)
            .is_some_and(|byte| byte & (1 << (bit % 8)) != 0)
    }

    /// Sets `field` and its valid bit.
    pub fn set(&mut self, field: GhcbField, value: u64) {
        match field {
            // CPL is one byte.
            GhcbField::Cpl => self.cpl = value as u8,
            GhcbField::Xss => self.xss = value,
            GhcbField::Rax => self.rax = value,
            GhcbField::Rcx => self.rcx = value,
            GhcbField::Rdx => self.rdx = value,
            GhcbField::Rbx => self.rbx = value,
            GhcbField::SwExitCode => self.sw_exit_code = value,
            GhcbField::SwExitInfo1 => self.sw_exit_info_1 = value,
            GhcbField::SwExitInfo2 => self.sw_exit_info_2 = value,
            GhcbField::SwScratch => self.sw_scratch = value,
            GhcbField::Xcr0 => self.xcr0 = value,
        }
        let bit = field.valid_bit();
        if let Some(byte) = self.valid_bitmap.get_mut(bit / 8) {
            *byte |= 1 << (bit % 8);
        }
    }

    /// The value of `field` if its valid bit is set.
    pub fn get_if_valid(&self, field: GhcbField) -> Option<u64> {
        if !self.is_valid(field) {
            return None;
        }
        Some(match field {
            GhcbField::Cpl => self.cpl.into(),
            GhcbField::Xss => self.xss,
            GhcbField::Rax => self.rax,
            GhcbField::Rcx => self.rcx,
            GhcbField::Rdx => self.rdx,
            GhcbField::Rbx => self.rbx,
            GhcbField::SwExitCode => self.sw_exit_code,
            GhcbField::SwExitInfo1 => self.sw_exit_info_1,
            GhcbField::SwExitInfo2 => self.sw_exit_info_2,
            GhcbField::SwScratch => self.sw_scratch,
            GhcbField::Xcr0 => self.xcr0,
        })
    }

    /// Clears the save area's valid bitmap (before building a new request).
    pub fn clear_valid(&mut self) {
        self.valid_bitmap = [0; 16];
    }
}

impl core::fmt::Debug for Ghcb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ghcb")
            .field("sw_exit_code", &format_args!("{:#x}", self.sw_exit_code))
            .field(
                "sw_exit_info_1",
                &format_args!("{:#x}", self.sw_exit_info_1),
            )
            .field(
                "sw_exit_info_2",
                &format_args!("{:#x}", self.sw_exit_info_2),
            )
            .field("protocol_version", &self.protocol_version)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_vmpl_request_matches_the_reference() {
        // "write 0x016 | (0 << 32) to MSR 0xC0010130".
        assert_eq!(MsrRequest::RunVmpl { vmpl: 0 }.encode(), 0x016);
        assert_eq!(MsrRequest::RunVmpl { vmpl: 2 }.encode(), 0x2_0000_0016);
        assert_eq!(
            MsrRequest::decode(0x2_0000_0016),
            Ok(MsrRequest::RunVmpl { vmpl: 2 })
        );
        // "expect 0x017 with bits 63:32 zero".
        assert_eq!(
            MsrResponse::decode(0x017),
            Ok(MsrResponse::RunVmpl { error: 0 })
        );
        assert_eq!(
            MsrResponse::decode(0x5_0000_0017),
            Ok(MsrResponse::RunVmpl { error: 5 })
        );
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            MsrRequest::SevInfo,
            MsrRequest::RegisterGhcb { gfn: 0x12345 },
            MsrRequest::PageStateChange {
                gfn: 0xF_FFFF_FFFF,
                state: PageState::Private,
            },
            MsrRequest::PageStateChange {
                gfn: 0x800,
                state: PageState::Shared,
            },
            MsrRequest::RunVmpl { vmpl: 1 },
            MsrRequest::HypervisorFeatures,
            MsrRequest::Terminate { set: 1, code: 0x42 },
        ];
        for r in requests {
            assert_eq!(MsrRequest::decode(r.encode()), Ok(r));
        }
        assert_eq!(MsrRequest::SevInfo.encode(), 0x002);
        assert_eq!(MsrRequest::HypervisorFeatures.encode(), 0x080);
        assert_eq!(
            MsrRequest::PageStateChange {
                gfn: 0x800,
                state: PageState::Shared
            }
            .encode(),
            (2 << 52) | 0x80_0000 | 0x014
        );
        assert_eq!(
            MsrRequest::Terminate { set: 1, code: 0x42 }.encode(),
            0x42_1100
        );
        assert_eq!(
            MsrRequest::RegisterGhcb { gfn: 0x12345 }.encode(),
            0x1234_5012
        );
    }

    #[test]
    fn responses_round_trip() {
        let responses = [
            MsrResponse::SevInfo {
                max_version: 2,
                min_version: 1,
                cbit: 51,
            },
            MsrResponse::RegisterGhcb { gfn: 0x12345 },
            MsrResponse::PageStateChange { error: 0 },
            MsrResponse::RunVmpl { error: 1 },
            MsrResponse::HypervisorFeatures(HvFeatures::SNP | HvFeatures::SNP_MULTI_VMPL),
        ];
        for r in responses {
            assert_eq!(MsrResponse::decode(r.encode()), Ok(r));
        }
        assert_eq!(
            MsrResponse::SevInfo {
                max_version: 2,
                min_version: 1,
                cbit: 51
            }
            .encode(),
            0x0002_0001_3300_0001
        );
        assert_eq!(
            MsrResponse::HypervisorFeatures(HvFeatures::SNP | HvFeatures::SNP_AP_CREATION).encode(),
            0x3081
        );
    }

    #[test]
    fn msr_rejections() {
        assert_eq!(
            MsrRequest::decode(0x003),
            Err(ParseError::UnknownValue {
                field: Field::GhcbMsr,
                value: 3
            })
        );
        assert_eq!(
            MsrRequest::decode(0x1016),
            Err(ParseError::ReservedBits {
                field: Field::GhcbMsr,
                bits: 0x1000
            })
        );
        assert!(matches!(
            MsrRequest::decode((3 << 52) | 0x014),
            Err(ParseError::UnknownValue { value: 3, .. })
        ));
        assert!(matches!(
            MsrRequest::decode((1 << 60) | (1 << 52) | 0x014),
            Err(ParseError::ReservedBits { .. })
        ));
        assert!(MsrRequest::decode(0x1_0000_0002).is_err());
        assert!(MsrRequest::decode(0x100_0000_0100).is_err());
        assert!(MsrRequest::decode(0x1_0000_0080).is_err());
        assert!(matches!(
            MsrResponse::decode(0x1001),
            Err(ParseError::ReservedBits { .. })
        ));
        assert!(MsrResponse::decode(0x1015).is_err());
        assert!(MsrResponse::decode(0x1017).is_err());
        assert!(MsrResponse::decode(0x016).is_err());
    }

    #[test]
    fn hv_feature_bits() {
        assert_eq!(HvFeatures::SNP.bits(), 1);
        assert_eq!(HvFeatures::SNP_AP_CREATION.bits(), 2);
        assert_eq!(HvFeatures::SNP_MULTI_VMPL.bits(), 0x20);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(SVM_VMGEXIT_SNP_RUN_VMPL, 0x8000_0018);
        assert_eq!(SVM_VMGEXIT_AP_CREATION, 0x8000_0013);
        assert_eq!(SVM_VMGEXIT_GUEST_REQUEST, 0x8000_0011);
        assert_eq!(SVM_VMGEXIT_EXT_GUEST_REQUEST, 0x8000_0012);
    }

    #[test]
    fn ap_creation_round_trips() {
        let a = ApCreation {
            apic_id: 3,
            vmpl: 2,
            event: ApCreationEvent::Create,
        };
        assert_eq!(a.encode(), 0x3_0002_0001);
        assert_eq!(ApCreation::decode(a.encode()), Ok(a));
        let d = ApCreation {
            apic_id: 0xFFFF_FFFF,
            vmpl: 0,
            event: ApCreationEvent::Destroy,
        };
        assert_eq!(ApCreation::decode(d.encode()), Ok(d));
        assert!(matches!(
            ApCreation::decode(3),
            Err(ParseError::UnknownValue { value: 3, .. })
        ));
        assert!(matches!(
            ApCreation::decode(0x100_0001),
            Err(ParseError::ReservedBits { .. })
        ));
    }

    #[test]
    fn ghcb_valid_bitmap() {
        let mut g = Ghcb::zeroed();
        assert_eq!(g.get_if_valid(GhcbField::SwExitCode), None);
        g.set(GhcbField::SwExitCode, SVM_VMGEXIT_SNP_RUN_VMPL);
        g.set(GhcbField::Rax, 7);
        g.set(GhcbField::Cpl, 3);
        assert_eq!(
            g.get_if_valid(GhcbField::SwExitCode),
            Some(SVM_VMGEXIT_SNP_RUN_VMPL)
        );
        assert_eq!(g.get_if_valid(GhcbField::Rax), Some(7));
        assert_eq!(g.get_if_valid(GhcbField::Cpl), Some(3));
        assert_eq!(g.get_if_valid(GhcbField::Rcx), None);
        let b = g.as_bytes();
        // sw_exit_code: offset 0x390, bit 114 = byte 14 bit 2 of the bitmap at 0x3F0.
        assert_eq!(b[0x3F0 + 14] & (1 << 2), 1 << 2);
        // rax: 0x1F8 / 8 = 63 = byte 7 bit 7.
        assert_eq!(b[0x3F0 + 7] & 0x80, 0x80);
        // cpl: 0xCB / 8 = 25 = byte 3 bit 1.
        assert_eq!(b[0x3F0 + 3] & 0x02, 0x02);
        assert_eq!(&b[0x390..0x398], &0x8000_0018u64.to_le_bytes());
        g.clear_valid();
        assert_eq!(g.get_if_valid(GhcbField::Rax), None);
    }

    #[test]
    fn ghcb_trailer_offsets() {
        let mut g = Ghcb::zeroed();
        g.protocol_version = GHCB_PROTOCOL_VERSION;
        g.ghcb_usage = 0x1234_5678;
        g.shared_buffer[0] = 0xAA;
        let b = g.as_bytes();
        assert_eq!(&b[0xFFA..0xFFC], &[2, 0]);
        assert_eq!(&b[0xFFC..0x1000], &0x1234_5678u32.to_le_bytes());
        assert_eq!(b[0x800], 0xAA);
    }
}
