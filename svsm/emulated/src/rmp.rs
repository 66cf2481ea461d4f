//! The reverse map table: one entry per 4 KiB page, and the rules of the instructions
//! that change it.
//!
//! The rules follow the AMD APM vol. 3 pseudo-code of PVALIDATE and RMPADJUST and vol. 2
//! "Reverse Map Table" / "Virtual Machine Privilege Levels":
//! - PVALIDATE (VMPL0 only): a 2 MiB operand must be 2 MiB aligned (FAIL_INPUT); a
//!   2 MiB operand on a page the RMP holds as 4 KiB is FAIL_SIZEMISMATCH; an unassigned
//!   page faults (#NPF); the validated bit not changing is reported (CF = 1).
//! - RMPADJUST: the target VMPL must be less privileged than the caller
//!   (FAIL_PERMISSION); a caller cannot grant permissions it does not hold itself
//!   (FAIL_PERMISSION); the VMSA bit is only honoured for VMPL0 and only on 4 KiB pages
//!   (FAIL_INPUT on 2 MiB); the page must be validated (#VC otherwise); page size
//!   mixing as for PVALIDATE.
//! - A 4 KiB operation on a page the RMP holds as part of a 2 MiB page makes the
//!   hardware raise #NPF, on which the hypervisor splits the entry (PSMASH) and
//!   retries; the model does that split itself.
//!
//! A 2 MiB RMP page is 512 entries with `large` set that share one state; every
//! operation keeps them equal.

use svsm::platform::{
    PageSize, PvalidateError, RmpFault, RmpPermissions, RmpadjustError, Validation, Vmpl,
};

/// Pages per 2 MiB page.
pub const PAGES_PER_2M: usize = 512;

/// One RMP entry (the fields the model needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RmpEntry {
    /// Assigned to the guest (private); unassigned pages are hypervisor-owned or shared.
    pub assigned: bool,
    /// Validated by PVALIDATE.
    pub validated: bool,
    /// Part of a 2 MiB RMP page.
    pub large: bool,
    /// Permissions of VMPL0..3. VMPL0 always has all of them on an assigned page.
    pub perms: [RmpPermissions; 4],
    /// The page is a VMSA.
    pub vmsa: bool,
}

/// The guest-visible part of an entry: everything but the page size, which only the
/// hypervisor decides (it may split a 2 MiB entry at any time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageState {
    /// Assigned (private).
    pub assigned: bool,
    /// Validated.
    pub validated: bool,
    /// Permissions of VMPL0..3.
    pub perms: [RmpPermissions; 4],
    /// VMSA bit.
    pub vmsa: bool,
}

impl RmpEntry {
    /// A freshly assigned private page: not validated, VMPL0 full access, others none.
    pub fn private(large: bool) -> Self {
        Self {
            assigned: true,
            validated: false,
            large,
            perms: [
                RmpPermissions::all(),
                RmpPermissions::empty(),
                RmpPermissions::empty(),
                RmpPermissions::empty(),
            ],
            vmsa: false,
        }
    }

    /// The guest-visible state.
    pub fn state(&self) -> PageState {
        PageState {
            assigned: self.assigned,
            validated: self.validated,
            perms: self.perms,
            vmsa: self.vmsa,
        }
    }

    /// Permissions of `vmpl`.
    pub fn perms_of(&self, vmpl: Vmpl) -> RmpPermissions {
        self.perms
            .get(usize::from(vmpl.level()))
            .copied()
            .unwrap_or(RmpPermissions::empty())
    }
}

/// Why RMPUPDATE refused an operand (APM vol. 3, RMPUPDATE, the RAX return codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmpupdateError {
    /// FAIL_INPUT (1): misaligned operand, or a page outside the table.
    FailInput,
}

impl RmpupdateError {
    /// The code RMPUPDATE leaves in RAX.
    pub const fn code(self) -> u64 {
        match self {
            Self::FailInput => 1,
        }
    }
}

/// The table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rmp {
    entries: Vec<RmpEntry>,
}

/// The pages an operation covers, after the size checks: first page index and count.
struct Span {
    first: usize,
    count: usize,
}

impl Rmp {
    /// A table for `pages` pages, all unassigned.
    pub fn new(pages: usize) -> Self {
        Self {
            entries: vec![RmpEntry::default(); pages],
        }
    }

    /// All entries.
    pub fn entries(&self) -> &[RmpEntry] {
        &self.entries
    }

    /// The entry of the page at `addr`.
    pub fn entry(&self, addr: u64) -> Option<&RmpEntry> {
        self.entries.get(page_index(addr)?)
    }

    /// The entry of the page at `addr`, mutable (hypervisor and launch set-up).
    pub fn entry_mut(&mut self, addr: u64) -> Option<&mut RmpEntry> {
        let index = page_index(addr)?;
        self.entries.get_mut(index)
    }

    /// RMPUPDATE by the hypervisor: assign `[addr, addr + size)` to the guest as one
    /// fresh page of `size`, or (`assigned = false`) give it back to the hypervisor.
    /// Either way the pages lose validation, permissions and the VMSA bit.
    ///
    /// As on hardware (APM vol. 3, RMPUPDATE), an operand that is not aligned to its page
    /// size, or that lies beyond the table, is refused with FAIL_INPUT and changes nothing:
    /// a 2 MiB page that straddled two 2 MiB frames would not be one RMP page.
    pub fn rmpupdate(
        &mut self,
        addr: u64,
        size: PageSize,
        assigned: bool,
    ) -> Result<(), RmpupdateError> {
        if addr % size.bytes() != 0 {
            return Err(RmpupdateError::FailInput);
        }
        let span = self.span(addr, size).ok_or(RmpupdateError::FailInput)?;
        let large = size == PageSize::Size2M && assigned;
        let group = self
            .entries
            .get_mut(span.first..span.first + span.count)
            .ok_or(RmpupdateError::FailInput)?;
        for e in group {
            *e = if assigned {
                RmpEntry::private(large)
            } else {
                RmpEntry::default()
            };
        }
        Ok(())
    }

    /// PSMASH by the hypervisor: split the 2 MiB RMP page holding `addr` into 512 4 KiB
    /// entries with the same state. No effect on a 4 KiB entry.
    pub fn psmash(&mut self, addr: u64) {
        let Some(index) = page_index(addr) else {
            return;
        };
        if !self.entries.get(index).is_some_and(|e| e.large) {
            return;
        }
        let first = index & !(PAGES_PER_2M - 1);
        if let Some(group) = self.entries.get_mut(first..first + PAGES_PER_2M) {
            for e in group {
                e.large = false;
            }
        }
    }

    /// Page index and count of an aligned operand inside the table.
    fn span(&self, addr: u64, size: PageSize) -> Option<Span> {
        let first = page_index(addr)?;
        let count = match size {
            PageSize::Size4K => 1,
            PageSize::Size2M => PAGES_PER_2M,
        };
        (first + count <= self.entries.len()).then_some(Span { first, count })
    }

    /// The size checks shared by PVALIDATE and RMPADJUST, after the alignment check:
    /// the covered pages, with a 4 KiB operand on a 2 MiB entry split first.
    fn sized_span(&mut self, addr: u64, size: PageSize) -> Result<Span, SizeProblem> {
        let span = self.span(addr, size).ok_or(SizeProblem::NoMemory)?;
        let head = *self.entries.get(span.first).ok_or(SizeProblem::NoMemory)?;
        if !head.assigned {
            return Err(SizeProblem::NotAssigned);
        }
        match size {
            PageSize::Size2M => {
                if !head.large {
                    return Err(SizeProblem::SizeMismatch);
                }
            }
            PageSize::Size4K => {
                if head.large {
                    self.psmash(addr);
                }
            }
        }
        Ok(span)
    }

    /// PVALIDATE, executed at VMPL0.
    pub fn pvalidate(
        &mut self,
        addr: u64,
        size: PageSize,
        validate: bool,
    ) -> Result<Validation, PvalidateError> {
        if addr % size.bytes() != 0 {
            return Err(PvalidateError::FailInput);
        }
        let span = self.sized_span(addr, size).map_err(|p| match p {
            SizeProblem::NoMemory => PvalidateError::Fault(RmpFault::NoMemory),
            SizeProblem::NotAssigned => PvalidateError::Fault(RmpFault::NotAssigned),
            SizeProblem::SizeMismatch => PvalidateError::FailSizeMismatch,
        })?;
        let group = self
            .entries
            .get_mut(span.first..span.first + span.count)
            .ok_or(PvalidateError::Fault(RmpFault::NoMemory))?;
        if group.first().is_some_and(|e| e.validated == validate) {
            return Ok(Validation::Unchanged);
        }
        for e in group {
            e.validated = validate;
        }
        Ok(Validation::Changed)
    }

    /// RMPADJUST, executed at `caller`.
    pub fn rmpadjust(
        &mut self,
        caller: Vmpl,
        addr: u64,
        size: PageSize,
        target: Vmpl,
        perms: RmpPermissions,
        vmsa: bool,
    ) -> Result<(), RmpadjustError> {
        if target <= caller {
            return Err(RmpadjustError::FailPermission);
        }
        if addr % size.bytes() != 0 || (vmsa && caller == Vmpl::VMPL0 && size == PageSize::Size2M) {
            return Err(RmpadjustError::FailInput);
        }
        let span = self.sized_span(addr, size).map_err(|p| match p {
            SizeProblem::NoMemory => RmpadjustError::Fault(RmpFault::NoMemory),
            SizeProblem::NotAssigned => RmpadjustError::Fault(RmpFault::NotAssigned),
            SizeProblem::SizeMismatch => RmpadjustError::FailSizeMismatch,
        })?;
        let group = self
            .entries
            .get_mut(span.first..span.first + span.count)
            .ok_or(RmpadjustError::Fault(RmpFault::NoMemory))?;
        let head = *group
            .first()
            .ok_or(RmpadjustError::Fault(RmpFault::NoMemory))?;
        if !head.validated {
            return Err(RmpadjustError::Fault(RmpFault::NotValidated));
        }
        if !head.perms_of(caller).contains(perms) {
            return Err(RmpadjustError::FailPermission);
        }
        for e in group {
            if let Some(p) = e.perms.get_mut(usize::from(target.level())) {
                *p = perms;
            }
            if caller == Vmpl::VMPL0 {
                e.vmsa = vmsa;
            }
        }
        Ok(())
    }
}

enum SizeProblem {
    NoMemory,
    NotAssigned,
    SizeMismatch,
}

fn page_index(addr: u64) -> Option<usize> {
    usize::try_from(addr >> 12).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB2: u64 = 0x20_0000;

    fn vmpl(n: u8) -> Vmpl {
        Vmpl::new(n).unwrap()
    }

    fn table() -> Rmp {
        let mut rmp = Rmp::new(4 * PAGES_PER_2M);
        rmp.rmpupdate(0, PageSize::Size2M, true).unwrap();
        for i in 0..PAGES_PER_2M as u64 {
            rmp.rmpupdate(MB2 + i * 0x1000, PageSize::Size4K, true)
                .unwrap();
        }
        rmp
    }

    #[test]
    fn pvalidate_rules() {
        let mut rmp = table();
        assert_eq!(
            rmp.pvalidate(0x1000, PageSize::Size2M, true),
            Err(PvalidateError::FailInput)
        );
        assert_eq!(
            rmp.pvalidate(MB2, PageSize::Size2M, true),
            Err(PvalidateError::FailSizeMismatch)
        );
        assert_eq!(
            rmp.pvalidate(2 * MB2, PageSize::Size4K, true),
            Err(PvalidateError::Fault(RmpFault::NotAssigned))
        );
        assert_eq!(
            rmp.pvalidate(8 * MB2, PageSize::Size4K, true),
            Err(PvalidateError::Fault(RmpFault::NoMemory))
        );
        assert_eq!(
            rmp.pvalidate(0, PageSize::Size2M, true),
            Ok(Validation::Changed)
        );
        assert!(rmp.entries()[..PAGES_PER_2M].iter().all(|e| e.validated));
        assert_eq!(
            rmp.pvalidate(0, PageSize::Size2M, true),
            Ok(Validation::Unchanged)
        );
        // 4K on a 2M entry: split, then act on the one page.
        assert_eq!(
            rmp.pvalidate(0x3000, PageSize::Size4K, false),
            Ok(Validation::Changed)
        );
        assert!(rmp.entries()[..PAGES_PER_2M].iter().all(|e| !e.large));
        assert!(!rmp.entry(0x3000).unwrap().validated);
        assert!(rmp.entry(0x4000).unwrap().validated);
        assert_eq!(
            rmp.pvalidate(0, PageSize::Size2M, true),
            Err(PvalidateError::FailSizeMismatch)
        );
    }

    #[test]
    fn rmpadjust_rules() {
        let mut rmp = table();
        let rw = RmpPermissions::READ | RmpPermissions::WRITE;
        assert_eq!(
            rmp.rmpadjust(vmpl(0), 0, PageSize::Size2M, vmpl(2), rw, false),
            Err(RmpadjustError::Fault(RmpFault::NotValidated))
        );
        rmp.pvalidate(0, PageSize::Size2M, true).unwrap();
        assert_eq!(
            rmp.rmpadjust(vmpl(0), 0, PageSize::Size2M, vmpl(0), rw, false),
            Err(RmpadjustError::FailPermission)
        );
        assert_eq!(
            rmp.rmpadjust(vmpl(2), 0, PageSize::Size2M, vmpl(1), rw, false),
            Err(RmpadjustError::FailPermission)
        );
        assert_eq!(
            rmp.rmpadjust(vmpl(0), 0x1000, PageSize::Size2M, vmpl(2), rw, false),
            Err(RmpadjustError::FailInput)
        );
        assert_eq!(
            rmp.rmpadjust(vmpl(0), 0, PageSize::Size2M, vmpl(1), rw, true),
            Err(RmpadjustError::FailInput)
        );
        assert_eq!(
            rmp.rmpadjust(vmpl(0), MB2, PageSize::Size2M, vmpl(2), rw, false),
            Err(RmpadjustError::FailSizeMismatch)
        );
        rmp.rmpadjust(vmpl(0), 0, PageSize::Size2M, vmpl(2), rw, false)
            .unwrap();
        assert!(rmp.entries()[..PAGES_PER_2M]
            .iter()
            .all(|e| e.perms[2] == rw && e.large));
        // VMPL2 cannot grant what it lacks (execute) nor target itself or VMPL1.
        assert_eq!(
            rmp.rmpadjust(
                vmpl(2),
                0,
                PageSize::Size2M,
                vmpl(3),
                RmpPermissions::RWX,
                false
            ),
            Err(RmpadjustError::FailPermission)
        );
        rmp.rmpadjust(
            vmpl(2),
            0,
            PageSize::Size2M,
            vmpl(3),
            RmpPermissions::READ,
            false,
        )
        .unwrap();
        assert_eq!(rmp.entry(0).unwrap().perms[3], RmpPermissions::READ);
        // The VMSA bit: ignored below VMPL0, set by VMPL0 on a 4K page (splitting).
        rmp.rmpadjust(
            vmpl(2),
            0,
            PageSize::Size2M,
            vmpl(3),
            RmpPermissions::READ,
            true,
        )
        .unwrap();
        assert!(!rmp.entry(0).unwrap().vmsa);
        rmp.rmpadjust(
            vmpl(0),
            0,
            PageSize::Size4K,
            vmpl(1),
            RmpPermissions::empty(),
            true,
        )
        .unwrap();
        assert!(rmp.entry(0).unwrap().vmsa);
        assert!(!rmp.entry(0x1000).unwrap().vmsa);
        assert!(!rmp.entry(0).unwrap().large);
    }

    #[test]
    fn rmpupdate_resets_state() {
        let mut rmp = table();
        rmp.pvalidate(MB2, PageSize::Size4K, true).unwrap();
        rmp.rmpupdate(MB2, PageSize::Size4K, false).unwrap();
        assert_eq!(*rmp.entry(MB2).unwrap(), RmpEntry::default());
        assert_eq!(
            rmp.rmpupdate(8 * MB2, PageSize::Size4K, true),
            Err(RmpupdateError::FailInput)
        );
    }

    /// Audit finding: a 2 MiB operand off a 2 MiB boundary was accepted and made a "2 MiB
    /// page" straddling two frames. Hardware answers FAIL_INPUT and changes nothing.
    #[test]
    fn rmpupdate_refuses_misaligned_operands() {
        let mut rmp = table();
        let before = rmp.clone();
        for (addr, size) in [
            (MB2 + 0x1000, PageSize::Size2M),
            (MB2 + 0x10_0000, PageSize::Size2M),
            (MB2 + 0x800, PageSize::Size4K),
        ] {
            assert_eq!(
                rmp.rmpupdate(addr, size, true),
                Err(RmpupdateError::FailInput)
            );
            assert_eq!(
                rmp.rmpupdate(addr, size, false),
                Err(RmpupdateError::FailInput)
            );
        }
        assert_eq!(rmp, before);
        assert_eq!(rmp.rmpupdate(MB2, PageSize::Size2M, true), Ok(()));
        assert!(rmp
            .entry(MB2 + 0x1000)
            .is_some_and(|e| e.large && e.assigned));
    }
}
