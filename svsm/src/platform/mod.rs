//! The hardware seam: what the SVSM needs from an SEV-SNP machine, as a trait on a value.
//!
//! Request handlers are generic over [`Platform`] and contain no `unsafe`; the
//! bare-metal kernel implements it with the real instructions, the emulated machine
//! (`svsm-emulated`) with a model of the RMP rules. Every method takes `&self`, so a test
//! can hold two platforms at once and nothing here is global state.
//!
//! Results of the SNP instructions are typed: the return codes the AMD APM (vol. 3,
//! PVALIDATE and RMPADJUST) defines, plus the exceptions (#VC, #NPF) an instruction can
//! raise instead, which a platform reports as [`RmpFault`] rather than crashing.
//!
//! Guest memory is reached only through [`CheckedRange`]
//! values, which only [`crate::address`] produces after checking the range against guest
//! RAM, SVSM memory and the registered VMSAs. Registered VMSAs are reached only through
//! [`VmsaPage`] handles.

pub mod native;

use crate::address::{CheckedRange, PhysAddr, VmsaPage};

use bitflags::bitflags;

pub mod snp;

/// Size of a 4 KiB page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Size of a 2 MiB page.
pub const PAGE_SIZE_2M: u64 = 0x20_0000;

/// Page size operand of PVALIDATE and RMPADJUST (RCX bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// 4 KiB (RCX = 0).
    Size4K,
    /// 2 MiB (RCX = 1).
    Size2M,
}

impl PageSize {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => PAGE_SIZE,
            PageSize::Size2M => PAGE_SIZE_2M,
        }
    }
}

impl From<svsm_protocol::core::PageSize> for PageSize {
    fn from(size: svsm_protocol::core::PageSize) -> Self {
        match size {
            svsm_protocol::core::PageSize::Size4K => PageSize::Size4K,
            svsm_protocol::core::PageSize::Size2M => PageSize::Size2M,
        }
    }
}

/// A virtual machine privilege level, 0 (most privileged) to 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vmpl(u8);

impl Vmpl {
    /// VMPL0, where the SVSM runs.
    pub const VMPL0: Vmpl = Vmpl(0);
    /// The VMPLs below VMPL0, in order.
    pub const LOWER: [Vmpl; 3] = [Vmpl(1), Vmpl(2), Vmpl(3)];

    /// The VMPL with this number, if it is 0..=3.
    pub const fn new(level: u8) -> Option<Self> {
        if level <= 3 {
            Some(Vmpl(level))
        } else {
            None
        }
    }

    /// The number of this VMPL.
    pub const fn level(self) -> u8 {
        self.0
    }
}

bitflags! {
    /// Per-VMPL page permissions in an RMP entry (RMPADJUST RDX bits 11:8, APM vol. 2
    /// "Virtual Machine Privilege Levels").
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct RmpPermissions: u8 {
        /// Read.
        const READ = 1 << 0;
        /// Write.
        const WRITE = 1 << 1;
        /// Execute at CPL 3.
        const USER_EXEC = 1 << 2;
        /// Execute at CPL 0.
        const SUPERVISOR_EXEC = 1 << 3;
    }
}

impl RmpPermissions {
    /// Read, write and both executes: what the guest VMPL gets on a validated page.
    pub const RWX: RmpPermissions = RmpPermissions::all();
}

/// Whether PVALIDATE changed the validated bit (CF = 0) or found it already in the
/// requested state (CF = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// The validated bit changed (CF = 0).
    Changed,
    /// The validated bit already had the requested value (CF = 1).
    Unchanged,
}

/// Exceptions an RMP instruction raises instead of returning a code. Real hardware
/// delivers them as #VC or #NPF; a platform reports them so the SVSM can refuse the
/// request instead of faulting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmpFault {
    /// The page is not assigned to the guest (hypervisor-owned or shared): #NPF.
    NotAssigned,
    /// RMPADJUST on a page that is not validated: #VC (PAGE_NOT_VALIDATED).
    NotValidated,
    /// The address is not backed by memory the instruction can act on.
    NoMemory,
}

/// Failures of PVALIDATE (APM vol. 3, PVALIDATE: EAX codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvalidateError {
    /// EAX = 1: invalid input (misaligned 2 MiB address, bad operands).
    FailInput,
    /// EAX = 6: the RMP entry's page size does not match the requested size.
    FailSizeMismatch,
    /// The instruction raised an exception.
    Fault(RmpFault),
}

impl PvalidateError {
    /// The EAX value the instruction returns, if it returned one.
    pub const fn code(self) -> Option<u32> {
        match self {
            PvalidateError::FailInput => Some(1),
            PvalidateError::FailSizeMismatch => Some(6),
            PvalidateError::Fault(_) => None,
        }
    }
}

/// Failures of RMPADJUST (APM vol. 3, RMPADJUST: EAX codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmpadjustError {
    /// EAX = 1: invalid input (target VMPL above 3, misaligned 2 MiB address, a VMSA
    /// request on a 2 MiB page).
    FailInput,
    /// EAX = 2: the target VMPL is not less privileged than the caller, or the caller
    /// tried to grant permissions it does not hold.
    FailPermission,
    /// EAX = 3: the page is a VMSA a vCPU is executing right now (VMRUN marks it in
    /// use until the #VMEXIT; APM vol. 2 "VMSA" under SEV-SNP, RMPADJUST's FAIL_INUSE).
    FailInUse,
    /// EAX = 6: the RMP entry's page size does not match the requested size.
    FailSizeMismatch,
    /// The instruction raised an exception.
    Fault(RmpFault),
}

impl RmpadjustError {
    /// The EAX value the instruction returns, if it returned one.
    pub const fn code(self) -> Option<u32> {
        match self {
            RmpadjustError::FailInput => Some(1),
            RmpadjustError::FailPermission => Some(2),
            RmpadjustError::FailInUse => Some(3),
            RmpadjustError::FailSizeMismatch => Some(6),
            RmpadjustError::Fault(_) => None,
        }
    }
}

/// Failure of an SVSM access to guest memory or to a VMSA page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// The page is not assigned to the guest (shared with the hypervisor): a private
    /// access would raise #NPF.
    NotPrivate,
    /// The page is not validated: the access would raise #VC.
    NotValidated,
    /// The page is mapped read-only by the hypervisor (e.g. flash): a write would loop
    /// on #NPF.
    ReadOnly,
    /// The page is MMIO or not backed at all.
    NotMemory,
    /// The offset or length lies outside the checked range.
    OutOfRange,
}

/// Failure of a hypervisor request (GHCB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorError {
    /// The hypervisor refused the request; the value is the error it reported
    /// (`sw_exit_info_1` bits 31:0 or the GHCB MSR response).
    Refused(u64),
    /// The hypervisor does not support the request.
    Unsupported,
}

/// Failure of a guest request to the PSP (SNP_GUEST_REQUEST, GHCB exit 0x80000011).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PspError {
    /// This platform has no PSP to talk to.
    Unavailable,
    /// The hypervisor failed the request (`sw_exit_info_2` bits 63:32).
    Hypervisor(u32),
    /// The firmware returned an error status (`sw_exit_info_2` bits 31:0).
    Firmware(u32),
    /// The PSP could not be reached right now; the request may be retried unchanged.
    Busy,
}

/// One 4 KiB message page exchanged with the PSP.
pub type MessagePage = [u8; PAGE_SIZE as usize];

/// What the SVSM needs from an SEV-SNP machine.
///
/// Addresses are guest physical addresses; the platform maps them as it needs (the
/// kernel through its page tables with the C-bit set). `pvalidate` and `rmpadjust` act
/// as VMPL0, the only level that runs the SVSM.
pub trait Platform: Send + Sync {
    /// PVALIDATE: set (`validate = true`) or clear the validated bit of the page at
    /// `addr`, which must be aligned to `size`.
    fn pvalidate(
        &self,
        addr: PhysAddr,
        size: PageSize,
        validate: bool,
    ) -> Result<Validation, PvalidateError>;

    /// RMPADJUST: set the permissions of `target` (which must be less privileged than
    /// VMPL0) on the page at `addr` to `perms`, and the page's VMSA bit to `vmsa`.
    fn rmpadjust(
        &self,
        addr: PhysAddr,
        size: PageSize,
        target: Vmpl,
        perms: RmpPermissions,
        vmsa: bool,
    ) -> Result<(), RmpadjustError>;

    /// Copies `buf.len()` bytes at `offset` within `range` out of guest memory.
    fn read_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), MemoryError>;

    /// Checks, without copying, that all of `range` can be read as
    /// [`read_guest`](Self::read_guest) reads it: for a handler that must know a whole
    /// buffer is usable before it acts but copies only the part the request occupies.
    /// By default, reads one byte of every page the range touches.
    fn check_guest(&self, range: &CheckedRange) -> Result<(), MemoryError> {
        let start = range.start().raw();
        let mut offset = 0;
        while offset < range.len() {
            self.read_guest(range, offset, &mut [0u8])?;
            // The start of the next page, as an offset into the range.
            let page = (start + offset) & !(PAGE_SIZE - 1);
            match page.checked_add(PAGE_SIZE) {
                Some(next) => offset = next - start,
                None => break,
            }
        }
        Ok(())
    }

    /// Copies `data` into guest memory at `offset` within `range`.
    fn write_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        data: &[u8],
    ) -> Result<(), MemoryError>;

    /// Zeroes all of `range`.
    fn zero_guest(&self, range: &CheckedRange) -> Result<(), MemoryError>;

    /// Copies bytes at `offset` out of a registered VMSA page.
    fn read_vmsa(&self, vmsa: &VmsaPage, offset: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Copies `data` into a registered VMSA page at `offset`.
    fn write_vmsa(&self, vmsa: &VmsaPage, offset: u64, data: &[u8]) -> Result<(), MemoryError>;

    /// Reads the 8-byte little-endian fields of a registered VMSA page: for every
    /// `(offset, value)` in `fields`, `value` becomes the field at `offset` (the request
    /// loop's reads of a call's registers). By default one
    /// [`read_vmsa`](Self::read_vmsa) per field; a platform whose VMSA accesses are
    /// costly makes it one access.
    fn read_vmsa_u64s(
        &self,
        vmsa: &VmsaPage,
        fields: &mut [(u64, u64)],
    ) -> Result<(), MemoryError> {
        for (offset, value) in fields {
            let mut bytes = [0u8; 8];
            self.read_vmsa(vmsa, *offset, &mut bytes)?;
            *value = u64::from_le_bytes(bytes);
        }
        Ok(())
    }

    /// Writes the 8-byte little-endian fields of a registered VMSA page, in order: for
    /// every `(offset, value)` in `fields`, `value` into the field at `offset` (the
    /// request loop's write-back of a call's results). By default one
    /// [`write_vmsa`](Self::write_vmsa) per field.
    fn write_vmsa_u64s(&self, vmsa: &VmsaPage, fields: &[(u64, u64)]) -> Result<(), MemoryError> {
        for (offset, value) in fields {
            self.write_vmsa(vmsa, *offset, &value.to_le_bytes())?;
        }
        Ok(())
    }

    /// Whether a vCPU is executing this VMSA at the guest VMPL right now (DELETE_VCPU
    /// must wait until it is not). A VMSA whose vCPU is inside an SVSM call is not
    /// running. The kernel answers from its per-CPU record of which guest VMSA each
    /// vCPU has entered and not yet left.
    fn vmsa_running(&self, vmsa: &VmsaPage) -> bool;

    /// Registers a VMSA with the hypervisor for `apic_id` at `vmpl` (AP creation, GHCB
    /// exit 0x80000013 with event "create"), so the hypervisor can run it.
    fn create_ap(
        &self,
        apic_id: u32,
        vmpl: Vmpl,
        vmsa: PhysAddr,
        sev_features: u64,
    ) -> Result<(), HypervisorError>;

    /// Runs the guest VMPL on the vCPU `apic_id` and returns when the guest next exits
    /// to VMPL0 (GHCB run-VMPL request).
    fn run_guest(&self, apic_id: u32) -> Result<(), HypervisorError>;

    /// Sends one encrypted guest message page to the PSP and returns its response page
    /// (SNP_GUEST_REQUEST).
    fn guest_request(&self, request: &MessagePage) -> Result<MessagePage, PspError>;
}

/// Forwards every [`Platform`] method through a pointer type, so an `Svsm` can hold a
/// platform by reference or shared ownership.
macro_rules! forward_platform {
    ($($ty:ty),*) => {$(
        impl<P: Platform + ?Sized> Platform for $ty {
            fn pvalidate(
                &self,
                addr: PhysAddr,
                size: PageSize,
                validate: bool,
            ) -> Result<Validation, PvalidateError> {
                (**self).pvalidate(addr, size, validate)
            }
            fn rmpadjust(
                &self,
                addr: PhysAddr,
                size: PageSize,
                target: Vmpl,
                perms: RmpPermissions,
                vmsa: bool,
            ) -> Result<(), RmpadjustError> {
                (**self).rmpadjust(addr, size, target, perms, vmsa)
            }
            fn read_guest(
                &self,
                range: &CheckedRange,
                offset: u64,
                buf: &mut [u8],
            ) -> Result<(), MemoryError> {
                (**self).read_guest(range, offset, buf)
            }
            fn check_guest(&self, range: &CheckedRange) -> Result<(), MemoryError> {
                (**self).check_guest(range)
            }
            fn write_guest(
                &self,
                range: &CheckedRange,
                offset: u64,
                data: &[u8],
            ) -> Result<(), MemoryError> {
                (**self).write_guest(range, offset, data)
            }
            fn zero_guest(&self, range: &CheckedRange) -> Result<(), MemoryError> {
                (**self).zero_guest(range)
            }
            fn read_vmsa(
                &self,
                vmsa: &VmsaPage,
                offset: u64,
                buf: &mut [u8],
            ) -> Result<(), MemoryError> {
                (**self).read_vmsa(vmsa, offset, buf)
            }
            fn write_vmsa(
                &self,
                vmsa: &VmsaPage,
                offset: u64,
                data: &[u8],
            ) -> Result<(), MemoryError> {
                (**self).write_vmsa(vmsa, offset, data)
            }
            fn read_vmsa_u64s(
                &self,
                vmsa: &VmsaPage,
                fields: &mut [(u64, u64)],
            ) -> Result<(), MemoryError> {
                (**self).read_vmsa_u64s(vmsa, fields)
            }
            fn write_vmsa_u64s(
                &self,
                vmsa: &VmsaPage,
                fields: &[(u64, u64)],
            ) -> Result<(), MemoryError> {
                (**self).write_vmsa_u64s(vmsa, fields)
            }
            fn vmsa_running(&self, vmsa: &VmsaPage) -> bool {
                (**self).vmsa_running(vmsa)
            }
            fn create_ap(
                &self,
                apic_id: u32,
                vmpl: Vmpl,
                vmsa: PhysAddr,
                sev_features: u64,
            ) -> Result<(), HypervisorError> {
                (**self).create_ap(apic_id, vmpl, vmsa, sev_features)
            }
            fn run_guest(&self, apic_id: u32) -> Result<(), HypervisorError> {
                (**self).run_guest(apic_id)
            }
            fn guest_request(&self, request: &MessagePage) -> Result<MessagePage, PspError> {
                (**self).guest_request(request)
            }
        }
    )*};
}

forward_platform!(&P, alloc::sync::Arc<P>, alloc::boxed::Box<P>);
