//! SEV-SNP logic that does not depend on the target: shared by the bare-metal
//! [`SnpPlatform`](crate::platform::snp::SnpPlatform) and the emulated machine.
//!
//! - [`hypervisor`]: the GHCB MSR protocol (SEV information, hypervisor features, page
//!   state change, GHCB registration, run VMPL, termination) and the GHCB page calls
//!   (MSR, I/O, AP creation, guest requests), over a [`GhcbTransport`];
//! - [`boot`]: negotiation, C-bit and GHCB set-up at start-up;
//! - [`cpuid`]: the SNP CPUID page and the C-bit position it gives;
//! - [`vc`]: what the #VC handler does with an intercepted CPUID, MSR or I/O access;
//! - [`vector`]: what any of the 256 vectors means when it arrives;
//! - [`doorbell`]: restricted injection: the #HV doorbell page, its registration and
//!   what its pending events mean;
//! - [`secrets`]: the PSP's secrets page kept in SVSM memory, and the guest's copy;
//! - [`guest_vmsa`]: the guest's reset VMSA;
//! - [`svsm_vcpus`]: one VMPL0 vCPU per guest APIC ID: the plan and their VMSAs;
//! - [`launch`]: the firmware's memory, the secrets/CPUID/calling-area pages and the
//!   boot VMSA, set up before the guest first runs.
//!
//! Everything the hypervisor returns is untrusted: every response is decoded into a
//! typed value and checked against the request, and a wrong answer is a typed
//! [`SnpError`] that maps to a termination reason, never a panic.

pub mod boot;
pub mod cpuid;
pub mod doorbell;
pub mod guest_vmsa;
pub mod hypervisor;
pub mod launch;
pub mod secrets;
pub mod svsm_vcpus;
pub mod vc;
pub mod vector;

use svsm_protocol::ghcb::{
    Ghcb, HvFeatures, TERM_PROTOCOL_UNSUPPORTED, TERM_SET_GENERAL, TERM_SNP_UNSUPPORTED,
};
use svsm_protocol::ParseError;

use crate::address::AddressError;
use crate::error::SvsmError;
use crate::platform::{HypervisorError, MemoryError, PvalidateError, RmpadjustError};

/// The channel to the hypervisor. The bare-metal implementation writes the GHCB MSR and
/// executes VMGEXIT; the emulated machine answers with its model hypervisor.
pub trait GhcbTransport: Send + Sync {
    /// One GHCB MSR protocol exchange: `request` into the GHCB MSR, VMGEXIT, and the
    /// value the hypervisor left in the MSR.
    fn msr_exchange(&self, request: u64) -> u64;

    /// One GHCB page exchange: `ghcb` is copied into the registered (shared) GHCB page,
    /// the GHCB MSR set to its GPA, VMGEXIT, and the page copied back into `ghcb`, so
    /// the caller parses a private copy that the hypervisor cannot change under it.
    fn ghcb_exchange(&self, ghcb: &mut Ghcb);
}

impl<T: GhcbTransport + ?Sized> GhcbTransport for &T {
    fn msr_exchange(&self, request: u64) -> u64 {
        (**self).msr_exchange(request)
    }
    fn ghcb_exchange(&self, ghcb: &mut Ghcb) {
        (**self).ghcb_exchange(ghcb)
    }
}

impl<T: GhcbTransport + ?Sized> GhcbTransport for alloc::sync::Arc<T> {
    fn msr_exchange(&self, request: u64) -> u64 {
        (**self).msr_exchange(request)
    }
    fn ghcb_exchange(&self, ghcb: &mut Ghcb) {
        (**self).ghcb_exchange(ghcb)
    }
}

/// Failure of a GHCB page call (GHCB spec 56421, "SW_EXITINFO1" and Linux
/// `verify_exception_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GhcbError {
    /// `sw_exit_info_1[31:0] == 1` with a valid #GP or #UD exception in
    /// `sw_exit_info_2`: the hypervisor asks the guest to take that exception.
    Exception {
        /// The vector (13 or 6).
        vector: u8,
    },
    /// Any other non-zero result, or an exception the specification does not allow.
    Vmm {
        /// `sw_exit_info_1`.
        info1: u64,
        /// `sw_exit_info_2`.
        info2: u64,
    },
    /// A register the response must carry is not marked valid.
    MissingOutput(u16),
    /// The hypervisor changed the GHCB's protocol version or usage.
    BadHeader,
}

/// Why the SNP set-up or a hypervisor request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnpError {
    /// The MSR protocol answer is not the response to the request that was sent.
    BadMsrResponse {
        /// The request.
        request: u64,
        /// What came back.
        response: u64,
    },
    /// The hypervisor's GHCB protocol range does not include version 2.
    ProtocolVersion {
        /// Lowest version it supports.
        min: u16,
        /// Highest version it supports.
        max: u16,
    },
    /// The hypervisor does not announce SEV-SNP support.
    NoSnp(HvFeatures),
    /// The hypervisor does not announce AP creation, which the SVSM needs.
    NoApCreation(HvFeatures),
    /// The hypervisor registered another GHCB GFN than the one asked for.
    GhcbRegistration {
        /// GFN requested.
        expected: u64,
        /// GFN answered.
        got: u64,
    },
    /// A page state change failed.
    PageStateChange {
        /// The page.
        gfn: u64,
        /// The hypervisor's error code.
        error: u32,
    },
    /// The run-VMPL request failed.
    RunVmpl(u32),
    /// A GHCB page call failed.
    Ghcb(GhcbError),
    /// The CPUID page is malformed.
    CpuidPage(ParseError),
    /// The CPUID page lacks a leaf the SVSM needs.
    CpuidLeafMissing(u32),
    /// The C-bit position from the CPUID page is outside 32..=63 or disagrees with the
    /// hypervisor's SEV information.
    CbitPosition(u8),
    /// The secrets page is unusable.
    Secrets(ParseError),
    /// The IGVM parameter block or the areas it names are unusable.
    BootParams,
    /// PVALIDATE failed.
    Pvalidate(u64, PvalidateError),
    /// RMPADJUST failed.
    Rmpadjust(u64, RmpadjustError),
    /// SVSM access to memory failed.
    Memory(u64, MemoryError),
    /// A range the firmware metadata names is not acceptable guest memory.
    Address(u64, AddressError),
    /// The firmware's memory map (at this GPA) cannot be written.
    FirmwareMemoryMap(u64, launch::FirmwareMapError),
    /// The request loop refused a launch registration.
    Svsm(SvsmError),
    /// A #VC the handler must not resolve.
    Vc(vc::VcError),
    /// An exception or vector the SVSM cannot continue after.
    FatalVector(u8),
    /// The #HV doorbell page could not be set up.
    Doorbell(doorbell::DoorbellError),
    /// The SVSM vCPUs cannot be planned or created.
    SvsmVcpus(svsm_vcpus::VcpuPlanError),
    /// A TLB shootdown did not reach every vCPU.
    TlbShootdown(crate::smp::SmpError),
    /// A handler could not run nested safely ([`crate::nesting`]).
    Nesting(crate::nesting::NestError),
    /// A vCPU's GHCB was needed by a handler that interrupted a GHCB call on the same
    /// vCPU (only a hypervisor injecting into that call can cause it).
    GhcbReentered,
    /// The kernel stopped on a fatal error of its own (a panic, a failed check).
    Kernel,
}

/// A termination reason (GHCB MSR protocol function 0x100: set in bits 15:12, code in
/// bits 23:16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminateReason {
    /// Reason code set.
    pub set: u8,
    /// Reason code.
    pub code: u8,
}

/// Reason code set for this SVSM's own codes. The GHCB specification defines set 0
/// (general) and set 1 (Linux); a guest is free to use another set for its own codes.
pub const TERM_SET_SVSM: u8 = 3;

/// SVSM reason codes in [`TERM_SET_SVSM`].
pub mod term {
    /// The hypervisor answered a GHCB request wrongly.
    pub const BAD_HYPERVISOR_RESPONSE: u8 = 1;
    /// The GHCB could not be set up.
    pub const GHCB_SETUP: u8 = 2;
    /// A page state change failed.
    pub const PAGE_STATE: u8 = 3;
    /// PVALIDATE or RMPADJUST failed.
    pub const RMP: u8 = 4;
    /// The CPUID page or C-bit is unusable.
    pub const CPUID: u8 = 5;
    /// The secrets page is unusable.
    pub const SECRETS: u8 = 6;
    /// Memory the SVSM needs is not accessible (shared or invalidated under it).
    pub const MEMORY: u8 = 7;
    /// The guest launch could not be set up.
    pub const LAUNCH: u8 = 8;
    /// An unhandled #VC.
    pub const VC: u8 = 9;
    /// An unexpected exception.
    pub const EXCEPTION: u8 = 10;
    /// Running the guest failed.
    pub const RUN: u8 = 11;
    /// The #HV doorbell page could not be registered under restricted injection.
    pub const DOORBELL: u8 = 12;
    /// Interrupt handlers nested unsafely: a frame was overwritten, or too deep.
    pub const NESTING: u8 = 13;
    /// A handler needed the GHCB that the interrupted code on the same vCPU held.
    pub const GHCB_REENTERED: u8 = 14;
    /// A fatal error of the kernel itself (panic, failed check).
    pub const KERNEL: u8 = 15;
}

impl SnpError {
    /// The termination reason this failure is reported with.
    pub fn termination_reason(&self) -> TerminateReason {
        let svsm = |code| TerminateReason {
            set: TERM_SET_SVSM,
            code,
        };
        match self {
            SnpError::ProtocolVersion { .. } => TerminateReason {
                set: TERM_SET_GENERAL,
                code: TERM_PROTOCOL_UNSUPPORTED,
            },
            SnpError::NoSnp(_) | SnpError::NoApCreation(_) => TerminateReason {
                set: TERM_SET_GENERAL,
                code: TERM_SNP_UNSUPPORTED,
            },
            SnpError::BadMsrResponse { .. } | SnpError::Ghcb(_) => {
                svsm(term::BAD_HYPERVISOR_RESPONSE)
            }
            SnpError::GhcbRegistration { .. } => svsm(term::GHCB_SETUP),
            SnpError::PageStateChange { .. } => svsm(term::PAGE_STATE),
            SnpError::Pvalidate(..) | SnpError::Rmpadjust(..) | SnpError::TlbShootdown(_) => {
                svsm(term::RMP)
            }
            SnpError::CpuidPage(_) | SnpError::CpuidLeafMissing(_) | SnpError::CbitPosition(_) => {
                svsm(term::CPUID)
            }
            SnpError::Secrets(_) => svsm(term::SECRETS),
            SnpError::Memory(..) => svsm(term::MEMORY),
            SnpError::Address(..)
            | SnpError::Svsm(_)
            | SnpError::BootParams
            | SnpError::FirmwareMemoryMap(..)
            | SnpError::SvsmVcpus(_) => svsm(term::LAUNCH),
            SnpError::Vc(_) => svsm(term::VC),
            SnpError::FatalVector(_) => svsm(term::EXCEPTION),
            SnpError::RunVmpl(_) => svsm(term::RUN),
            SnpError::Doorbell(_) => svsm(term::DOORBELL),
            SnpError::Nesting(_) => svsm(term::NESTING),
            SnpError::GhcbReentered => svsm(term::GHCB_REENTERED),
            SnpError::Kernel => svsm(term::KERNEL),
        }
    }
}

impl core::fmt::Display for SnpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

impl From<SnpError> for HypervisorError {
    fn from(e: SnpError) -> Self {
        match e {
            SnpError::RunVmpl(code) => HypervisorError::Refused(code.into()),
            SnpError::PageStateChange { error, .. } => HypervisorError::Refused(error.into()),
            SnpError::Ghcb(GhcbError::Vmm { info1, .. }) => HypervisorError::Refused(info1),
            SnpError::NoApCreation(_) | SnpError::NoSnp(_) => HypervisorError::Unsupported,
            _ => HypervisorError::Refused(u64::MAX),
        }
    }
}
