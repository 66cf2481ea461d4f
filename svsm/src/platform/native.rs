//! The platform of the bare-metal kernel on a machine without SEV (QEMU, TCG or KVM).
//!
//! Guest memory is the kernel's identity-mapped RAM, so accesses are copies once they
//! are checked to lie in the RAM this platform was given; they use the same guarded
//! copies as on SEV-SNP ([`crate::arch::guest_copy`]), so a page the kernel unmapped
//! is an error, not a crash (the self-tests check that in QEMU). What needs SEV-SNP does
//! not exist here and says so instead of pretending:
//! - PVALIDATE and RMPADJUST: there is no RMP (both instructions raise #UD without
//!   SEV-SNP). They report [`RmpFault::NoMemory`], so no request can claim a validation
//!   or an isolation that was never applied;
//! - VMSAs never run (there are no guest VMPLs), AP creation and running the guest are
//!   [`HypervisorError::Unsupported`], and there is no PSP ([`PspError::Unavailable`]).
#![allow(
    unsafe_code,
    reason = "copies to and from identity-mapped physical memory"
)]

use alloc::vec::Vec;

use crate::address::{CheckedRange, MemoryKind, PhysAddr, VmsaPage};
use crate::arch::guest_copy;
use crate::platform::{
    HypervisorError, MemoryError, MessagePage, PageSize, Platform, PspError, PvalidateError,
    RmpFault, RmpPermissions, RmpadjustError, Validation, Vmpl, PAGE_SIZE,
};

/// QEMU without SEV: identity-mapped RAM, no RMP, no PSP.
#[derive(Debug)]
pub struct NativePlatform {
    /// `[start, end)` ranges of RAM the kernel maps at their physical addresses.
    ram: Vec<(u64, u64)>,
}

impl NativePlatform {
    /// A platform whose guest memory is the RAM in `ram` (`[start, end)` ranges).
    ///
    /// # Safety
    /// Every range must be mapped readable and writable at its physical address for the
    /// platform's life, and hold no memory the kernel itself uses: the platform reads
    /// and writes it on the guest's behalf.
    pub unsafe fn new(ram: &[(u64, u64)]) -> Self {
        Self { ram: ram.to_vec() }
    }

    /// The address of `[start + offset, + len)` once it is known to lie in `range` and
    /// in this platform's RAM.
    fn locate(&self, start: u64, limit: u64, offset: u64, len: usize) -> Result<u64, MemoryError> {
        let len = len as u64;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= limit)
            .ok_or(MemoryError::OutOfRange)?;
        let first = start.checked_add(offset).ok_or(MemoryError::OutOfRange)?;
        let last = start.checked_add(end).ok_or(MemoryError::OutOfRange)?;
        if !self.ram.iter().any(|&(s, e)| s <= first && last <= e) {
            return Err(MemoryError::NotMemory);
        }
        Ok(first)
    }

    fn locate_in(&self, range: &CheckedRange, offset: u64, len: usize) -> Result<u64, MemoryError> {
        if range.kind() != MemoryKind::Ram {
            return Err(MemoryError::NotMemory);
        }
        self.locate(range.start().raw(), range.len(), offset, len)
    }

    fn copy_out(address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        // SAFETY: `locate` checked that the bytes lie in RAM that `new`'s caller
        // promised is identity mapped and not the kernel's own. Should the kernel have
        // unmapped a page of it, the guarded copy reports the fault.
        unsafe { guest_copy::read(address as *const u8, buf) }
    }

    fn copy_in(address: u64, data: &[u8]) -> Result<(), MemoryError> {
        // SAFETY: as in `copy_out`; the memory is writable.
        unsafe { guest_copy::write(address as *mut u8, data) }
    }
}

impl Platform for NativePlatform {
    fn pvalidate(
        &self,
        _addr: PhysAddr,
        _size: PageSize,
        _validate: bool,
    ) -> Result<Validation, PvalidateError> {
        Err(PvalidateError::Fault(RmpFault::NoMemory))
    }

    fn rmpadjust(
        &self,
        _addr: PhysAddr,
        _size: PageSize,
        _target: Vmpl,
        _perms: RmpPermissions,
        _vmsa: bool,
    ) -> Result<(), RmpadjustError> {
        Err(RmpadjustError::Fault(RmpFault::NoMemory))
    }

    fn read_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), MemoryError> {
        let address = self.locate_in(range, offset, buf.len())?;
        Self::copy_out(address, buf)
    }

    fn write_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        data: &[u8],
    ) -> Result<(), MemoryError> {
        let address = self.locate_in(range, offset, data.len())?;
        Self::copy_in(address, data)
    }

    fn zero_guest(&self, range: &CheckedRange) -> Result<(), MemoryError> {
        let len = usize::try_from(range.len()).map_err(|_| MemoryError::OutOfRange)?;
        let address = self.locate_in(range, 0, len)?;
        // SAFETY: as in `copy_in`.
        unsafe { guest_copy::zero(address as *mut u8, len) }
    }

    fn read_vmsa(&self, vmsa: &VmsaPage, offset: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let address = self.locate(vmsa.addr().raw(), PAGE_SIZE, offset, buf.len())?;
        Self::copy_out(address, buf)
    }

    fn write_vmsa(&self, vmsa: &VmsaPage, offset: u64, data: &[u8]) -> Result<(), MemoryError> {
        let address = self.locate(vmsa.addr().raw(), PAGE_SIZE, offset, data.len())?;
        Self::copy_in(address, data)
    }

    fn vmsa_running(&self, _vmsa: &VmsaPage) -> bool {
        false
    }

    fn create_ap(
        &self,
        _apic_id: u32,
        _vmpl: Vmpl,
        _vmsa: PhysAddr,
        _sev_features: u64,
    ) -> Result<(), HypervisorError> {
        Err(HypervisorError::Unsupported)
    }

    fn run_guest(&self, _apic_id: u32) -> Result<(), HypervisorError> {
        Err(HypervisorError::Unsupported)
    }

    fn guest_request(&self, _request: &MessagePage) -> Result<MessagePage, PspError> {
        Err(PspError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Access, GuestPhysAddr, GuestRegion, GuestState, MemoryLayout};

    /// Page-aligned host memory standing in for identity-mapped guest RAM.
    #[repr(C, align(4096))]
    struct Pages([u8; 3 * 4096]);

    fn setup(pages: &mut Pages) -> (NativePlatform, GuestState, u64) {
        let base = pages.0.as_mut_ptr() as u64;
        let layout = MemoryLayout::new(
            alloc::vec![GuestRegion {
                start: base,
                end: base + 2 * 4096,
                kind: MemoryKind::Ram,
            }],
            base + 2 * 4096,
            base + 3 * 4096,
        )
        .expect("valid layout");
        // SAFETY: the first two pages are this test's memory, at their own addresses.
        let platform = unsafe { NativePlatform::new(&[(base, base + 2 * 4096)]) };
        (platform, GuestState::new(layout, &[0]), base)
    }

    #[test]
    fn copies_in_and_out_of_checked_ram() {
        let mut pages = Pages([0; 3 * 4096]);
        let (platform, state, base) = setup(&mut pages);
        let range = state
            .check(GuestPhysAddr::new(base + 4000), 200, Access::Data)
            .expect("range in RAM");
        platform.write_guest(&range, 10, b"svsm").expect("write");
        let mut back = [0u8; 4];
        platform.read_guest(&range, 10, &mut back).expect("read");
        assert_eq!(&back, b"svsm");
        platform.zero_guest(&range).expect("zero");
        platform.read_guest(&range, 10, &mut back).expect("read");
        assert_eq!(back, [0; 4]);
        assert_eq!(pages.0[4000 + 9], 0);
    }

    #[test]
    fn refuses_bytes_beyond_the_checked_range() {
        let mut pages = Pages([0; 3 * 4096]);
        let (platform, state, base) = setup(&mut pages);
        let range = state
            .check(GuestPhysAddr::new(base), 16, Access::Data)
            .expect("range in RAM");
        let mut buf = [0u8; 8];
        assert_eq!(
            platform.read_guest(&range, 9, &mut buf),
            Err(MemoryError::OutOfRange)
        );
        assert_eq!(
            platform.write_guest(&range, u64::MAX, &buf),
            Err(MemoryError::OutOfRange)
        );
        assert_eq!(platform.read_guest(&range, 8, &mut buf), Ok(()));
    }

    #[test]
    fn refuses_memory_it_was_not_given() {
        let mut pages = Pages([0; 3 * 4096]);
        let (_, state, base) = setup(&mut pages);
        // SAFETY: only the first page is handed over; nothing is accessed outside it.
        let platform = unsafe { NativePlatform::new(&[(base, base + 4096)]) };
        let range = state
            .check(GuestPhysAddr::new(base + 4096), 16, Access::Data)
            .expect("range in the layout's RAM");
        let mut buf = [0u8; 8];
        assert_eq!(
            platform.read_guest(&range, 0, &mut buf),
            Err(MemoryError::NotMemory)
        );
    }

    #[test]
    fn snp_operations_are_refused_not_faked() {
        let mut pages = Pages([0; 3 * 4096]);
        let (platform, _, base) = setup(&mut pages);
        let page = PhysAddr::new(base);
        assert_eq!(
            platform.pvalidate(page, PageSize::Size4K, true),
            Err(PvalidateError::Fault(RmpFault::NoMemory))
        );
        let vmpl1 = Vmpl::new(1).expect("VMPL1");
        assert_eq!(
            platform.rmpadjust(page, PageSize::Size4K, vmpl1, RmpPermissions::RWX, false),
            Err(RmpadjustError::Fault(RmpFault::NoMemory))
        );
        assert_eq!(
            platform.create_ap(1, vmpl1, page, 0),
            Err(HypervisorError::Unsupported)
        );
        assert_eq!(platform.run_guest(0), Err(HypervisorError::Unsupported));
        assert_eq!(
            platform.guest_request(&[0; 4096]),
            Err(PspError::Unavailable)
        );
    }
}
