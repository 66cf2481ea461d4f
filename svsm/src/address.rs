//! Guest addresses as allegations, and the one place that checks them.
//!
//! A [`GuestPhysAddr`] is what a guest claims: a number that cannot be dereferenced.
//! [`GuestState::check`] is the only code that turns a claim into a [`CheckedRange`],
//! after checking it against the guest memory map, the SVSM's own memory and every
//! registered VMSA page; only the [`Platform`](crate::platform::Platform) turns a checked
//! range into bytes. A registered VMSA is reached through a [`VmsaPage`] handle, which
//! only the registry in [`GuestState`] hands out.
//!
//! Invariants kept by [`GuestState`] (under the SVSM's state lock):
//! - no registered VMSA page is ever part of a checked range;
//! - a calling area is never a registered VMSA, and no two vCPUs share a calling area;
//! - a VMSA the guest created lies in guest RAM; a launch VMSA lies in SVSM memory.
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

use alloc::vec::Vec;
use core::fmt;

use crate::platform::PAGE_SIZE;

/// A guest physical address as the guest states it: not checked, not dereferenceable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestPhysAddr(u64);

impl GuestPhysAddr {
    /// Wraps a value taken from a register or a guest buffer.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value, for logging and arithmetic before a check.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl fmt::Debug for GuestPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestPhysAddr({:#x})", self.0)
    }
}

/// A physical address the SVSM acts on: one that came out of a check, or its own
/// memory. Operands of PVALIDATE and RMPADJUST.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// Wraps a trusted address (SVSM memory, launch layout).
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

/// What lies in a range of the guest's physical address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryKind {
    /// Ordinary RAM: readable and writable.
    Ram,
    /// Memory the hypervisor maps read-only (flash, ROM): guests validate it, but the
    /// SVSM must never write it.
    ReadOnly,
    /// MMIO that guests map private and validate; not memory the SVSM may touch.
    Mmio,
}

/// One range of the guest memory map, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestRegion {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What the range holds.
    pub kind: MemoryKind,
}

/// The guest memory map and the SVSM's own range, as the launch defined them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLayout {
    regions: Vec<GuestRegion>,
    svsm_start: u64,
    svsm_end: u64,
}

/// Why a memory layout was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// A region is empty, inverted or not 4 KiB aligned.
    BadRegion(GuestRegion),
    /// Two regions overlap.
    Overlap(GuestRegion, GuestRegion),
    /// The SVSM range is empty or not 4 KiB aligned.
    BadSvsmRange,
    /// A guest region overlaps the SVSM range.
    SvsmInGuestRegion(GuestRegion),
}

const PAGE_MASK: u64 = PAGE_SIZE - 1;

impl MemoryLayout {
    /// A layout of guest `regions` (in any order) and the SVSM range
    /// `[svsm_start, svsm_end)`, which must not overlap any region.
    pub fn new(
        mut regions: Vec<GuestRegion>,
        svsm_start: u64,
        svsm_end: u64,
    ) -> Result<Self, LayoutError> {
        regions.sort_by_key(|r| r.start);
        for r in &regions {
            if r.start >= r.end || (r.start | r.end) & PAGE_MASK != 0 {
                return Err(LayoutError::BadRegion(*r));
            }
            if r.start < svsm_end && svsm_start < r.end {
                return Err(LayoutError::SvsmInGuestRegion(*r));
            }
        }
        for pair in regions.windows(2) {
            if let [a, b] = pair {
                if b.start < a.end {
                    return Err(LayoutError::Overlap(*a, *b));
                }
            }
        }
        if svsm_start >= svsm_end || (svsm_start | svsm_end) & PAGE_MASK != 0 {
            return Err(LayoutError::BadSvsmRange);
        }
        Ok(Self {
            regions,
            svsm_start,
            svsm_end,
        })
    }

    /// The guest regions, sorted by address.
    pub fn regions(&self) -> &[GuestRegion] {
        &self.regions
    }

    /// The SVSM's memory, `[start, end)`.
    pub fn svsm_range(&self) -> (u64, u64) {
        (self.svsm_start, self.svsm_end)
    }

    /// Whether `[start, end)` touches SVSM memory.
    #[inline]
    pub fn overlaps_svsm(&self, start: u64, end: u64) -> bool {
        start < self.svsm_end && self.svsm_start < end
    }

    /// The region that holds all of `[start, end)`, if one does.
    #[inline]
    fn region_containing(&self, start: u64, end: u64) -> Option<&GuestRegion> {
        self.regions
            .iter()
            .find(|r| r.start <= start && end <= r.end)
    }
}

/// How the SVSM is going to use a range; decides which memory kinds are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The SVSM reads or writes the bytes (lists, calling areas, VMSAs, buffers): RAM
    /// only.
    Data,
    /// The SVSM validates or rescinds the pages (PVALIDATE): any guest region, since
    /// guests also validate MMIO and read-only ranges.
    Validate,
}

/// Why a guest address was refused; the guest sees `INVALID_ADDRESS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// The range is empty or wraps around the address space.
    BadRange,
    /// The range is not inside one region of the guest memory map.
    NotGuestMemory,
    /// The range touches the SVSM's memory.
    SvsmMemory,
    /// The range touches a registered VMSA page.
    VmsaPage,
    /// The SVSM would read or write a range that is not RAM.
    NotRam,
    /// The page is a calling area, which must not become a VMSA.
    CallingArea,
    /// The calling area belongs to another vCPU.
    CallingAreaInUse,
    /// The address does not name a VMSA this SVSM registered for the guest.
    NotGuestVmsa,
    /// The guest memory behind a checked range could not be accessed (not validated,
    /// not private).
    Inaccessible,
}

/// A range of guest memory that passed [`GuestState::check`]. Only this module can make
/// one; only the platform turns it into bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckedRange {
    start: u64,
    len: u64,
    kind: MemoryKind,
}

impl CheckedRange {
    /// First byte.
    pub fn start(&self) -> PhysAddr {
        PhysAddr(self.start)
    }

    /// Length in bytes (at least 1).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a checked range is never empty. (Here for clippy's `len` rule.)
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What the range lies in.
    pub fn kind(&self) -> MemoryKind {
        self.kind
    }

    /// Whether the SVSM may write the range (RAM).
    pub fn is_writable_ram(&self) -> bool {
        self.kind == MemoryKind::Ram
    }
}

/// A registered VMSA page. Only the registry hands these out.
///
/// A handle names one registration, not just a page: a VMSA deleted and created again on
/// the same page gets a new generation, so a handle taken before compares unequal to the
/// new one (a call's results never reach a VMSA created during the call).
#[derive(Debug, PartialEq, Eq)]
pub struct VmsaPage {
    addr: u64,
    generation: u64,
}

impl VmsaPage {
    /// The page's address.
    pub fn addr(&self) -> PhysAddr {
        PhysAddr(self.addr)
    }
}

/// Who made a VMSA a VMSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmsaOrigin {
    /// Built by the SVSM at launch (in SVSM memory).
    Launch,
    /// Made by the guest with CREATE_VCPU (a guest RAM page).
    Guest,
}

/// A registered guest-VMPL VMSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VmsaEntry {
    /// Its page.
    pub addr: u64,
    /// The vCPU it was created for.
    pub apic_id: u32,
    /// Who created it.
    pub origin: VmsaOrigin,
    /// Which registration this is (unique over the registry's life).
    pub generation: u64,
}

impl VmsaEntry {
    /// The handle of this registration.
    fn page(&self) -> VmsaPage {
        VmsaPage {
            addr: self.addr,
            generation: self.generation,
        }
    }
}

/// What the SVSM knows about one vCPU's guest side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VcpuEntry {
    /// Its APIC ID.
    pub apic_id: u32,
    /// The guest-VMPL VMSA it runs, if any.
    pub guest_vmsa: Option<u64>,
    /// Its calling area, if any.
    pub calling_area: Option<u64>,
}

/// The SVSM's registry of vCPUs, guest VMSAs and calling areas, plus the address
/// checker that consults it. Lives behind the SVSM's state lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestState {
    layout: MemoryLayout,
    vcpus: Vec<VcpuEntry>,
    vmsas: Vec<VmsaEntry>,
    /// The generation the next registered VMSA gets.
    next_generation: u64,
}

impl GuestState {
    /// A registry for the vCPUs `apic_ids`, none of which has a guest VMSA yet.
    pub fn new(layout: MemoryLayout, apic_ids: &[u32]) -> Self {
        let mut vcpus: Vec<VcpuEntry> = apic_ids
            .iter()
            .map(|&apic_id| VcpuEntry {
                apic_id,
                guest_vmsa: None,
                calling_area: None,
            })
            .collect();
        vcpus.sort_by_key(|v| v.apic_id);
        vcpus.dedup_by_key(|v| v.apic_id);
        Self {
            layout,
            vcpus,
            vmsas: Vec::new(),
            next_generation: 0,
        }
    }

    /// The memory layout.
    pub fn layout(&self) -> &MemoryLayout {
        &self.layout
    }

    /// THE check: `[gpa, gpa + len)` lies inside one region of the guest memory map
    /// (RAM for [`Access::Data`]), outside SVSM memory and outside every registered VMSA.
    #[inline]
    pub fn check(
        &self,
        gpa: GuestPhysAddr,
        len: u64,
        access: Access,
    ) -> Result<CheckedRange, AddressError> {
        let start = gpa.raw();
        let end = start
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(AddressError::BadRange)?;
        if self.layout.overlaps_svsm(start, end) {
            return Err(AddressError::SvsmMemory);
        }
        if self
            .vmsas
            .iter()
            .any(|v| start < v.addr.saturating_add(PAGE_SIZE) && v.addr < end)
        {
            return Err(AddressError::VmsaPage);
        }
        let region = self
            .layout
            .region_containing(start, end)
            .ok_or(AddressError::NotGuestMemory)?;
        if access == Access::Data && region.kind != MemoryKind::Ram {
            return Err(AddressError::NotRam);
        }
        Ok(CheckedRange {
            start,
            len,
            kind: region.kind,
        })
    }

    /// The vCPU with this APIC ID.
    #[inline]
    pub fn vcpu(&self, apic_id: u32) -> Option<&VcpuEntry> {
        self.vcpus.iter().find(|v| v.apic_id == apic_id)
    }

    fn vcpu_mut(&mut self, apic_id: u32) -> Option<&mut VcpuEntry> {
        self.vcpus.iter_mut().find(|v| v.apic_id == apic_id)
    }

    /// All vCPUs.
    pub fn vcpus(&self) -> &[VcpuEntry] {
        &self.vcpus
    }

    /// All registered guest-VMPL VMSAs.
    pub fn vmsas(&self) -> &[VmsaEntry] {
        &self.vmsas
    }

    /// The registered VMSA at `addr`.
    #[inline]
    pub fn vmsa(&self, addr: u64) -> Option<&VmsaEntry> {
        self.vmsas.iter().find(|v| v.addr == addr)
    }

    /// A handle to the VMSA the vCPU `apic_id` currently runs at the guest VMPL.
    #[inline]
    pub fn current_vmsa(&self, apic_id: u32) -> Option<VmsaPage> {
        let addr = self.vcpu(apic_id)?.guest_vmsa?;
        self.vmsa(addr).map(VmsaEntry::page)
    }

    /// A handle to the registered VMSA at `addr`.
    pub fn vmsa_page(&self, addr: u64) -> Option<VmsaPage> {
        self.vmsa(addr).map(VmsaEntry::page)
    }

    /// What a call on `apic_id` needs: its current guest VMSA and its calling area
    /// (checked like any guest range).
    pub fn call_target(&self, apic_id: u32) -> Option<(VmsaPage, CheckedRange)> {
        self.vcpu_call_target(self.vcpu(apic_id)?)
    }

    /// [`GuestState::call_target`] of a vCPU already looked up.
    #[inline]
    pub fn vcpu_call_target(&self, vcpu: &VcpuEntry) -> Option<(VmsaPage, CheckedRange)> {
        let ca = self
            .check(GuestPhysAddr(vcpu.calling_area?), PAGE_SIZE, Access::Data)
            .ok()?;
        let vmsa = self.vmsa(vcpu.guest_vmsa?)?;
        Some((vmsa.page(), ca))
    }

    /// The calling area of `apic_id`, checked like any guest range.
    pub fn calling_area(&self, apic_id: u32) -> Result<Option<CheckedRange>, AddressError> {
        match self.vcpu(apic_id).and_then(|v| v.calling_area) {
            Some(ca) => self
                .check(GuestPhysAddr(ca), PAGE_SIZE, Access::Data)
                .map(Some),
            None => Ok(None),
        }
    }

    /// Checks a page that is to become the calling area of `apic_id`: a RAM page
    /// outside SVSM memory and every VMSA, not the calling area of another vCPU.
    pub fn check_calling_area(
        &self,
        gpa: GuestPhysAddr,
        apic_id: u32,
    ) -> Result<CheckedRange, AddressError> {
        let range = self.check(gpa, PAGE_SIZE, Access::Data)?;
        if self
            .vcpus
            .iter()
            .any(|v| v.apic_id != apic_id && v.calling_area == Some(gpa.raw()))
        {
            return Err(AddressError::CallingAreaInUse);
        }
        Ok(range)
    }

    /// Checks a page that is to become a VMSA: a RAM page outside SVSM memory, every
    /// VMSA and every calling area.
    pub fn check_new_vmsa(&self, gpa: GuestPhysAddr) -> Result<CheckedRange, AddressError> {
        let range = self.check(gpa, PAGE_SIZE, Access::Data)?;
        if self.vcpus.iter().any(|v| v.calling_area == Some(gpa.raw())) {
            return Err(AddressError::CallingArea);
        }
        Ok(range)
    }

    /// Makes `ca` the calling area of `apic_id`. The caller checked it with
    /// [`GuestState::check_calling_area`]; an unknown vCPU is ignored.
    pub fn set_calling_area(&mut self, apic_id: u32, ca: &CheckedRange) {
        if let Some(v) = self.vcpu_mut(apic_id) {
            v.calling_area = Some(ca.start);
        }
    }

    /// Registers a guest-created VMSA (a page the caller checked with
    /// [`GuestState::check_new_vmsa`]) as the current VMSA of `apic_id`, with `ca` as its
    /// calling area.
    pub fn register_guest_vmsa(&mut self, apic_id: u32, vmsa: CheckedRange, ca: &CheckedRange) {
        let generation = self.take_generation();
        self.vmsas.push(VmsaEntry {
            addr: vmsa.start,
            apic_id,
            origin: VmsaOrigin::Guest,
            generation,
        });
        if let Some(v) = self.vcpu_mut(apic_id) {
            v.guest_vmsa = Some(vmsa.start);
            v.calling_area = Some(ca.start);
        }
    }

    /// Registers a VMSA the SVSM built at launch in its own memory as the current VMSA
    /// of `apic_id`.
    pub fn register_launch_vmsa(
        &mut self,
        apic_id: u32,
        vmsa: PhysAddr,
        ca: &CheckedRange,
    ) -> Result<(), AddressError> {
        let addr = vmsa.raw();
        let in_svsm = addr & PAGE_MASK == 0
            && addr
                .checked_add(PAGE_SIZE)
                .is_some_and(|end| addr >= self.layout.svsm_start && end <= self.layout.svsm_end);
        if !in_svsm || self.vmsa(addr).is_some() {
            return Err(AddressError::NotGuestVmsa);
        }
        let vcpu = self
            .vcpus
            .iter_mut()
            .find(|v| v.apic_id == apic_id)
            .ok_or(AddressError::NotGuestVmsa)?;
        vcpu.guest_vmsa = Some(addr);
        vcpu.calling_area = Some(ca.start);
        let generation = self.take_generation();
        self.vmsas.push(VmsaEntry {
            addr,
            apic_id,
            origin: VmsaOrigin::Launch,
            generation,
        });
        Ok(())
    }

    fn take_generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        generation
    }

    /// Removes a guest-created VMSA from the registry and unbinds it from any vCPU
    /// that runs it; returns the page as a range the guest may use again.
    pub fn unregister_guest_vmsa(&mut self, page: VmsaPage) -> Result<(), AddressError> {
        let index = self
            .vmsas
            .iter()
            .position(|v| v.page() == page && v.origin == VmsaOrigin::Guest)
            .ok_or(AddressError::NotGuestVmsa)?;
        self.vmsas.swap_remove(index);
        for v in &mut self.vcpus {
            if v.guest_vmsa == Some(page.addr) {
                v.guest_vmsa = None;
                v.calling_area = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn layout() -> MemoryLayout {
        MemoryLayout::new(
            vec![
                GuestRegion {
                    start: 0x10_0000,
                    end: 0x100_0000,
                    kind: MemoryKind::Ram,
                },
                GuestRegion {
                    start: 0,
                    end: 0xA_0000,
                    kind: MemoryKind::Ram,
                },
                GuestRegion {
                    start: 0xF_0000,
                    end: 0x10_0000,
                    kind: MemoryKind::ReadOnly,
                },
            ],
            0x100_0000,
            0x120_0000,
        )
        .unwrap()
    }

    #[test]
    fn layout_rejects_overlaps_and_bad_ranges() {
        let ram = |start, end| GuestRegion {
            start,
            end,
            kind: MemoryKind::Ram,
        };
        assert!(matches!(
            MemoryLayout::new(vec![ram(0, 0x2000), ram(0x1000, 0x3000)], 0x10000, 0x20000),
            Err(LayoutError::Overlap(..))
        ));
        assert!(matches!(
            MemoryLayout::new(vec![ram(0, 0x1800)], 0x10000, 0x20000),
            Err(LayoutError::BadRegion(_))
        ));
        assert!(matches!(
            MemoryLayout::new(vec![ram(0, 0x20000)], 0x10000, 0x20000),
            Err(LayoutError::SvsmInGuestRegion(_))
        ));
        assert_eq!(
            MemoryLayout::new(vec![ram(0, 0x1000)], 0x20000, 0x20000),
            Err(LayoutError::BadSvsmRange)
        );
    }

    #[test]
    fn check_accepts_ram_and_refuses_the_rest() {
        let s = GuestState::new(layout(), &[0]);
        let r = s
            .check(GuestPhysAddr::new(0x20_0000), 0x1000, Access::Data)
            .unwrap();
        assert_eq!(r.start().raw(), 0x20_0000);
        assert_eq!(r.len(), 0x1000);
        assert!(r.is_writable_ram());
        let cases = [
            (0x100_0000, 0x1000, Access::Data, AddressError::SvsmMemory),
            (
                0xFF_F000,
                0x2000,
                Access::Validate,
                AddressError::SvsmMemory,
            ),
            (
                0xA_0000,
                0x1000,
                Access::Validate,
                AddressError::NotGuestMemory,
            ),
            (0x9_F000, 0x2000, Access::Data, AddressError::NotGuestMemory),
            (0xF_0000, 0x1000, Access::Data, AddressError::NotRam),
            (
                u64::MAX - 0xFFF,
                0x1000,
                Access::Data,
                AddressError::BadRange,
            ),
            (0x1000, 0, Access::Data, AddressError::BadRange),
            (
                0x200_0000,
                0x1000,
                Access::Data,
                AddressError::NotGuestMemory,
            ),
        ];
        for (gpa, len, access, err) in cases {
            assert_eq!(
                s.check(GuestPhysAddr::new(gpa), len, access),
                Err(err),
                "{gpa:#x}+{len:#x}"
            );
        }
        let rom = s
            .check(GuestPhysAddr::new(0xF_0000), 0x1000, Access::Validate)
            .unwrap();
        assert!(!rom.is_writable_ram());
    }

    #[test]
    fn registered_vmsas_and_calling_areas_are_fenced() {
        let mut s = GuestState::new(layout(), &[0, 1]);
        let boot_ca = s.check_calling_area(GuestPhysAddr::new(0x1000), 0).unwrap();
        s.register_launch_vmsa(0, PhysAddr::new(0x100_1000), &boot_ca)
            .unwrap();
        assert_eq!(
            s.register_launch_vmsa(0, PhysAddr::new(0x100_1000), &boot_ca),
            Err(AddressError::NotGuestVmsa)
        );
        assert_eq!(
            s.register_launch_vmsa(1, PhysAddr::new(0x2000), &boot_ca),
            Err(AddressError::NotGuestVmsa)
        );
        let vmsa = s.check_new_vmsa(GuestPhysAddr::new(0x30_0000)).unwrap();
        assert_eq!(
            s.check_new_vmsa(GuestPhysAddr::new(0x1000)),
            Err(AddressError::CallingArea)
        );
        assert_eq!(
            s.check_calling_area(GuestPhysAddr::new(0x1000), 1),
            Err(AddressError::CallingAreaInUse)
        );
        let ca = s
            .check_calling_area(GuestPhysAddr::new(0x30_1000), 1)
            .unwrap();
        s.register_guest_vmsa(1, vmsa, &ca);
        assert_eq!(
            s.check(GuestPhysAddr::new(0x2F_F000), 0x2000, Access::Data),
            Err(AddressError::VmsaPage)
        );
        assert_eq!(
            s.check(GuestPhysAddr::new(0x20_0000), 0x20_0000, Access::Validate),
            Err(AddressError::VmsaPage)
        );
        assert_eq!(s.current_vmsa(1).unwrap().addr().raw(), 0x30_0000);
        let launch = s.vmsa_page(0x100_1000).unwrap();
        assert_eq!(
            s.unregister_guest_vmsa(launch),
            Err(AddressError::NotGuestVmsa)
        );
        let page = s.vmsa_page(0x30_0000).unwrap();
        s.unregister_guest_vmsa(page).unwrap();
        assert!(s.current_vmsa(1).is_none());
        assert!(s
            .check(GuestPhysAddr::new(0x30_0000), 0x1000, Access::Data)
            .is_ok());
        assert!(s.calling_area(1).unwrap().is_none());
        assert_eq!(s.calling_area(0).unwrap().unwrap().start().raw(), 0x1000);
    }
}
