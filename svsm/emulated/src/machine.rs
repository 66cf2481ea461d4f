//! The emulated SEV-SNP machine: physical memory, the RMP, vCPUs with a VMSA per VMPL,
//! a hypervisor that runs them, and a PSP.
//!
//! [`EmulatedSnp`] implements [`Platform`] for the SVSM at VMPL0, and offers the other
//! actors their own doors: the guest (accesses checked against the RMP at the guest's
//! VMPL, the VMGEXIT call handshake) and the hypervisor (RMPUPDATE, PSMASH, AP
//! creation). It refuses what SNP hardware refuses, with the hardware's codes; it does
//! not record calls.

use std::sync::{Mutex, MutexGuard};

use svsm::address::{CheckedRange, PhysAddr, VmsaPage};
use svsm::platform::{
    HypervisorError, MemoryError, MessagePage, PageSize, Platform, PspError, PvalidateError,
    RmpPermissions, RmpadjustError, Validation, Vmpl, PAGE_SIZE,
};
use svsm::requests::{vmsa, CallRegisters};

use crate::psp::EmulatedPsp;
use crate::rmp::{PageState, Rmp, RmpEntry};

/// What backs a physical page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backing {
    /// RAM.
    Ram,
    /// Memory the hypervisor maps read-only: reads work, writes fault.
    ReadOnly,
    /// MMIO: no memory behind it.
    Mmio,
}

/// Where a vCPU is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuMode {
    /// Not started, or stopped by the hypervisor.
    Stopped,
    /// Running the guest VMPL.
    Guest,
    /// Running VMPL0 (the SVSM) after a VMGEXIT.
    Svsm,
}

/// One vCPU: the VMSA the hypervisor runs at each VMPL, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vcpu {
    /// APIC ID.
    pub apic_id: u32,
    /// The VMSA registered with the hypervisor for each VMPL.
    pub vmsas: [Option<u64>; 4],
    /// Current mode.
    pub mode: VcpuMode,
}

/// A guest access that the hardware refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestFault {
    /// #VC: the page is private but not validated.
    NotValidated,
    /// #NPF: the RMP denies this VMPL the access (or the page is a VMSA).
    Permission,
    /// No memory behind the address, or a write to read-only memory.
    NoMemory,
    /// The vCPU is unknown or not in the state the operation needs.
    BadVcpu,
    /// The hypervisor cannot run the guest VMSA (EFER.SVME clear, not a VMSA).
    VmrunFailed,
}

/// What a guest reads back after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallReturn {
    /// RAX, RCX, RDX, R8, R9 as the guest sees them after the VMPL switch back.
    pub regs: CallRegisters,
    /// The value `xchg(call_pending, 0)` returned: 1 means the call was never serviced.
    pub pending: u8,
}

/// What the hypervisor does to a page in a [`HostRace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChange {
    /// RMPUPDATE to hypervisor-owned: the page is shared from then on. On hardware the
    /// SVSM's private access exits with #NPF; the hypervisor either converts the page
    /// back (assigned, not validated: the next case) or reflects the fault, which the
    /// exception table reports as [`MemoryError::NotPrivate`].
    MakeShared,
    /// RMPUPDATE to guest-owned: assigned but no longer validated. On hardware the
    /// SVSM's access raises #VC PAGE_NOT_VALIDATED, which the exception table reports as
    /// [`MemoryError::NotValidated`].
    Invalidate,
}

/// A hypervisor acting on another CPU while the SVSM works: once the SVSM has made
/// `after` accesses to guest memory or VMSAs (counted from when the race is armed), the
/// hypervisor applies `change` to the 4 KiB page at `page`, before the SVSM's next
/// access. Sweeping `after` puts the change between every check and every use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRace {
    /// How many SVSM accesses complete before the change.
    pub after: u64,
    /// The page (4 KiB aligned).
    pub page: u64,
    /// What happens to it.
    pub change: HostChange,
}

/// The whole machine state behind one lock.
#[derive(Debug, Clone)]
struct Machine {
    memory: Vec<u8>,
    backing: Vec<Backing>,
    rmp: Rmp,
    /// One byte per page saying which accesses the RMP entry and the backing allow
    /// ([`allowed`]), recomputed whenever either changes: the O(1) check of an
    /// access. A refused access is re-examined against the RMP itself for its precise
    /// fault, so the summary only ever answers "allowed".
    allowed: Vec<u8>,
    vcpus: Vec<Vcpu>,
    guest_vmpl: Vmpl,
    /// Accesses the SVSM made through the platform (guest memory and VMSAs).
    svsm_accesses: u64,
    /// An armed [`HostRace`] and the access count it was armed at.
    race: Option<(HostRace, u64)>,
    /// Whether [`Platform::vmsa_running`] tells the SVSM the truth (the kernel's own
    /// record) or, as the SEV-SNP platform does, always answers "not running".
    running_visible: bool,
}

/// The accesses a page's summary byte allows.
mod allowed {
    /// The SVSM (VMPL0) may read.
    pub const SVSM_READ: u8 = 1 << 0;
    /// The SVSM may write.
    pub const SVSM_WRITE: u8 = 1 << 1;
    /// The guest, at its VMPL, may read.
    pub const GUEST_READ: u8 = 1 << 2;
    /// The guest may write.
    pub const GUEST_WRITE: u8 = 1 << 3;
}

/// An emulated SEV-SNP machine.
#[derive(Debug)]
pub struct EmulatedSnp {
    inner: Mutex<Machine>,
    psp: EmulatedPsp,
}

/// A copy of everything a guest call could change: the guest-visible RMP state of
/// every page, all of memory, and the vCPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSnapshot {
    /// Per-page RMP state (without the page size, which is the hypervisor's choice).
    pub pages: Vec<PageState>,
    /// Physical memory.
    pub memory: Vec<u8>,
    /// vCPUs.
    pub vcpus: Vec<Vcpu>,
}

fn range_pages(start: u64, len: u64) -> impl Iterator<Item = u64> {
    let first = start & !(PAGE_SIZE - 1);
    let end = start.saturating_add(len);
    (first..end).step_by(PAGE_SIZE as usize)
}

/// What an access by the SVSM does with the bytes it reaches.
enum SvsmCopy<'a> {
    /// Copies them into the buffer.
    Read(&'a mut [u8]),
    /// Copies the data over them.
    Write(&'a [u8]),
    /// Zeroes this many bytes.
    Zero(usize),
    /// Only checks that this many bytes could be read.
    Check(usize),
    /// Reads 8-byte little-endian fields of the `len` bytes reached, which lie at
    /// `start` in their page: each `(offset, value)` gets the field at page offset
    /// `offset`.
    ReadU64s {
        start: u64,
        len: usize,
        fields: &'a mut [(u64, u64)],
    },
    /// Writes 8-byte little-endian fields, as [`Self::ReadU64s`] reads them.
    WriteU64s {
        start: u64,
        len: usize,
        fields: &'a [(u64, u64)],
    },
}

impl SvsmCopy<'_> {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Self::Read(buf) => buf.len(),
            Self::Write(data) => data.len(),
            Self::Zero(len) | Self::Check(len) => *len,
            Self::ReadU64s { len, .. } | Self::WriteU64s { len, .. } => *len,
        }
    }

    #[inline]
    fn writes(&self) -> bool {
        matches!(
            self,
            Self::Write(_) | Self::Zero(_) | Self::WriteU64s { .. }
        )
    }
}

/// The 8 bytes at `offset` in `bytes`.
#[inline]
fn field_bytes(bytes: &mut [u8], offset: Option<u64>) -> Result<&mut [u8; 8], MemoryError> {
    offset
        .and_then(|offset| usize::try_from(offset).ok())
        .and_then(|start| bytes.get_mut(start..start.checked_add(8)?))
        .and_then(|field| <&mut [u8; 8]>::try_from(field).ok())
        .ok_or(MemoryError::OutOfRange)
}

/// The SVSM's (VMPL0's) access to one page: private, validated, backed.
#[inline]
fn svsm_page_access(entry: &RmpEntry, backing: Backing, write: bool) -> Result<(), MemoryError> {
    if !entry.assigned {
        return Err(MemoryError::NotPrivate);
    }
    if !entry.validated {
        return Err(MemoryError::NotValidated);
    }
    match backing {
        Backing::Ram => Ok(()),
        Backing::ReadOnly if !write => Ok(()),
        Backing::ReadOnly => Err(MemoryError::ReadOnly),
        Backing::Mmio => Err(MemoryError::NotMemory),
    }
}

/// The guest's access at `vmpl` to one page: shared pages are free; private pages must
/// be validated and grant the access to `vmpl`; VMSA pages never to a VMPL above 0.
#[inline]
fn guest_page_access(
    vmpl: Vmpl,
    entry: &RmpEntry,
    backing: Backing,
    write: bool,
) -> Result<(), GuestFault> {
    match backing {
        Backing::Ram => {}
        Backing::ReadOnly if !write => {}
        Backing::ReadOnly | Backing::Mmio => return Err(GuestFault::NoMemory),
    }
    if !entry.assigned {
        return Ok(());
    }
    if !entry.validated {
        return Err(GuestFault::NotValidated);
    }
    let need = if write {
        RmpPermissions::WRITE
    } else {
        RmpPermissions::READ
    };
    if !entry.perms_of(vmpl).contains(need) || (entry.vmsa && vmpl != Vmpl::VMPL0) {
        return Err(GuestFault::Permission);
    }
    Ok(())
}

impl Machine {
    /// Recomputes the summary of the pages `[start, end)` touches.
    fn refresh(&mut self, start: u64, end: u64) {
        let first = usize::try_from(start >> 12).unwrap_or(usize::MAX);
        let end = usize::try_from(end.saturating_add(PAGE_SIZE - 1) >> 12).unwrap_or(usize::MAX);
        let vmpl = self.guest_vmpl;
        for index in first..end.min(self.allowed.len()) {
            let (Some(entry), Some(&backing)) =
                (self.rmp.entries().get(index), self.backing.get(index))
            else {
                continue;
            };
            let mut bits = 0;
            for (ok, bit) in [
                (
                    svsm_page_access(entry, backing, false).is_ok(),
                    allowed::SVSM_READ,
                ),
                (
                    svsm_page_access(entry, backing, true).is_ok(),
                    allowed::SVSM_WRITE,
                ),
                (
                    guest_page_access(vmpl, entry, backing, false).is_ok(),
                    allowed::GUEST_READ,
                ),
                (
                    guest_page_access(vmpl, entry, backing, true).is_ok(),
                    allowed::GUEST_WRITE,
                ),
            ] {
                if ok {
                    bits |= bit;
                }
            }
            if let Some(slot) = self.allowed.get_mut(index) {
                *slot = bits;
            }
        }
    }

    /// Recomputes the summary of the page of `size` holding `addr`: all that an RMP
    /// instruction on it can change (a 4 KiB operation inside a 2 MiB RMP page splits
    /// it, but the split leaves every other page's state as it was).
    /// RMPADJUST's FAIL_INUSE: `[addr, addr + size)` (aligned down) holds a VMSA a vCPU
    /// is executing at the guest VMPL right now (VMRUN marks it in use until #VMEXIT).
    fn refuse_in_use(&self, addr: u64, size: PageSize) -> Result<(), RmpadjustError> {
        let start = addr & !(size.bytes() - 1);
        let end = start.saturating_add(size.bytes());
        let level = usize::from(self.guest_vmpl.level());
        let in_use = self.vcpus.iter().any(|v| {
            v.mode == VcpuMode::Guest
                && v.vmsas
                    .get(level)
                    .copied()
                    .flatten()
                    .is_some_and(|a| (start..end).contains(&a))
        });
        if in_use {
            Err(RmpadjustError::FailInUse)
        } else {
            Ok(())
        }
    }

    fn refresh_page(&mut self, addr: u64, size: PageSize) {
        let start = addr & !(size.bytes() - 1);
        self.refresh(start, start.saturating_add(size.bytes()));
    }

    /// Whether the summary allows `need` on every page of `[addr, addr + len)` (`len > 0`,
    /// inside memory); `false` means "look at the RMP", not "refused".
    #[inline]
    fn summary_allows(&self, addr: u64, len: u64, need: u8) -> bool {
        let Some(last) = len.checked_sub(1).and_then(|n| addr.checked_add(n)) else {
            return false;
        };
        let (Ok(first), Ok(last)) = (usize::try_from(addr >> 12), usize::try_from(last >> 12))
        else {
            return false;
        };
        self.allowed
            .get(first..=last)
            .is_some_and(|pages| pages.iter().all(|&bits| bits & need == need))
    }

    fn page(&self, addr: u64) -> Option<(RmpEntry, Backing)> {
        let index = usize::try_from(addr >> 12).ok()?;
        Some((*self.rmp.entry(addr)?, *self.backing.get(index)?))
    }

    #[inline]
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        self.memory.get(start..start.checked_add(len)?)
    }

    #[inline]
    fn bytes_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let start = usize::try_from(addr).ok()?;
        self.memory.get_mut(start..start.checked_add(len)?)
    }

    /// Counts one SVSM access and, if an armed race is due, lets the hypervisor act
    /// first.
    fn svsm_step(&mut self) {
        if let Some((race, armed_at)) = self.race {
            if self.svsm_accesses - armed_at == race.after {
                let assigned = race.change == HostChange::Invalidate;
                let page = race.page & !(PAGE_SIZE - 1);
                let _ = self.rmp.rmpupdate(page, PageSize::Size4K, assigned);
                self.refresh_page(page, PageSize::Size4K);
                self.race = None;
            }
        }
        self.svsm_accesses += 1;
    }

    /// An access by VMPL0 (the SVSM): private, validated, backed.
    #[inline]
    fn svsm_access(&self, addr: u64, len: u64, write: bool) -> Result<(), MemoryError> {
        let need = if write {
            allowed::SVSM_WRITE
        } else {
            allowed::SVSM_READ
        };
        if self.summary_allows(addr, len, need) {
            debug_assert_eq!(self.svsm_access_rmp(addr, len, write), Ok(()));
            return Ok(());
        }
        self.svsm_access_rmp(addr, len, write)
    }

    /// [`Self::svsm_access`] decided page by page from the RMP entries and backings
    /// themselves (the first page that refuses gives the fault).
    #[cold]
    fn svsm_access_rmp(&self, addr: u64, len: u64, write: bool) -> Result<(), MemoryError> {
        for page in range_pages(addr, len) {
            let (entry, backing) = self.page(page).ok_or(MemoryError::NotMemory)?;
            svsm_page_access(&entry, backing, write)?;
        }
        Ok(())
    }

    /// An access by the guest at `vmpl`: shared pages are free; private pages must be
    /// validated and grant the access to `vmpl`; VMSA pages never to a VMPL above 0.
    #[inline]
    fn guest_access(&self, vmpl: Vmpl, addr: u64, len: u64, write: bool) -> Result<(), GuestFault> {
        let need = if write {
            allowed::GUEST_WRITE
        } else {
            allowed::GUEST_READ
        };
        if vmpl == self.guest_vmpl && self.summary_allows(addr, len, need) {
            debug_assert_eq!(self.guest_access_rmp(vmpl, addr, len, write), Ok(()));
            return Ok(());
        }
        self.guest_access_rmp(vmpl, addr, len, write)
    }

    /// [`Self::guest_access`] decided page by page from the RMP entries and backings
    /// themselves (the first page that refuses gives the fault).
    #[cold]
    fn guest_access_rmp(
        &self,
        vmpl: Vmpl,
        addr: u64,
        len: u64,
        write: bool,
    ) -> Result<(), GuestFault> {
        for page in range_pages(addr, len) {
            let (entry, backing) = self.page(page).ok_or(GuestFault::NoMemory)?;
            guest_page_access(vmpl, &entry, backing, write)?;
        }
        Ok(())
    }

    /// The guest's bytes `[addr, addr + len)` after a guest access check at its VMPL:
    /// every guest access goes through here.
    #[inline(never)]
    fn guest_bytes_mut(
        &mut self,
        addr: u64,
        len: usize,
        write: bool,
    ) -> Result<&mut [u8], GuestFault> {
        self.guest_access(self.guest_vmpl, addr, len as u64, write)?;
        self.bytes_mut(addr, len).ok_or(GuestFault::NoMemory)
    }

    /// The guest on `apic_id` exits to VMPL0 with `exit_code` and the registers `regs`
    /// (the hardware saves them into its guest VMSA).
    fn exit(
        &mut self,
        apic_id: u32,
        regs: &CallRegisters,
        exit_code: u64,
    ) -> Result<(), GuestFault> {
        let vmsa_addr = self.guest_vmsa(apic_id).ok_or(GuestFault::BadVcpu)?;
        let vcpu = self.vcpu_mut(apic_id).ok_or(GuestFault::BadVcpu)?;
        if vcpu.mode != VcpuMode::Guest {
            return Err(GuestFault::BadVcpu);
        }
        vcpu.mode = VcpuMode::Svsm;
        for (offset, value) in [
            (vmsa::RAX, regs.rax),
            (vmsa::RCX, regs.rcx),
            (vmsa::RDX, regs.rdx),
            (vmsa::R8, regs.r8),
            (vmsa::R9, regs.r9),
            (vmsa::GUEST_EXIT_CODE, exit_code),
        ] {
            self.write_u64(vmsa_addr + offset, value)
                .ok_or(GuestFault::NoMemory)?;
        }
        Ok(())
    }

    #[inline]
    fn vcpu_mut(&mut self, apic_id: u32) -> Option<&mut Vcpu> {
        self.vcpus.iter_mut().find(|v| v.apic_id == apic_id)
    }

    #[inline]
    fn guest_vmsa(&self, apic_id: u32) -> Option<u64> {
        let vcpu = self.vcpus.iter().find(|v| v.apic_id == apic_id)?;
        *vcpu.vmsas.get(usize::from(self.guest_vmpl.level()))?
    }

    #[inline]
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let bytes: [u8; 8] = self.bytes(addr, 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    #[inline]
    fn write_u64(&mut self, addr: u64, value: u64) -> Option<()> {
        self.bytes_mut(addr, 8)?
            .copy_from_slice(&value.to_le_bytes());
        Some(())
    }
}

impl EmulatedSnp {
    /// A machine with `memory_size` bytes of physical memory (a multiple of 2 MiB),
    /// every page RAM and unassigned, and vCPUs with the given APIC IDs, all stopped.
    /// `guest_vmpl` is the VMPL the guest side of the machine runs at.
    pub fn new(memory_size: u64, apic_ids: &[u32], guest_vmpl: Vmpl) -> Self {
        let pages = usize::try_from(memory_size / PAGE_SIZE).unwrap_or(0);
        let memory = vec![0u8; pages * PAGE_SIZE as usize];
        Self {
            inner: Mutex::new(Machine {
                memory,
                backing: vec![Backing::Ram; pages],
                rmp: Rmp::new(pages),
                allowed: Vec::new(),
                vcpus: apic_ids
                    .iter()
                    .map(|&apic_id| Vcpu {
                        apic_id,
                        vmsas: [None; 4],
                        mode: VcpuMode::Stopped,
                    })
                    .collect(),
                guest_vmpl,
                svsm_accesses: 0,
                race: None,
                running_visible: true,
            }),
            psp: EmulatedPsp::default(),
        }
        .summarized()
    }

    /// The machine with its per-page summary computed.
    fn summarized(self) -> Self {
        {
            let mut m = self.lock();
            let pages = m.backing.len();
            m.allowed = vec![0; pages];
            m.refresh(0, (pages as u64) * PAGE_SIZE);
        }
        self
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, Machine> {
        // A panic elsewhere while holding the lock poisons it; the state is still the
        // model's state, so keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every access the SVSM (VMPL0) makes to memory: one lock, the RMP check of the
    /// whole range, then the copy. The platform's reads, writes and checks of guest
    /// memory and VMSAs all come here, so a call's many small accesses share one piece
    /// of code.
    #[inline(never)]
    fn svsm_copy(&self, addr: u64, op: SvsmCopy<'_>) -> Result<(), MemoryError> {
        let mut m = self.lock();
        m.svsm_step();
        m.svsm_access(addr, op.len() as u64, op.writes())?;
        let bytes = m.bytes_mut(addr, op.len()).ok_or(MemoryError::NotMemory)?;
        match op {
            SvsmCopy::Read(buf) => buf.copy_from_slice(bytes),
            SvsmCopy::Write(data) => bytes.copy_from_slice(data),
            SvsmCopy::Zero(_) => bytes.fill(0),
            SvsmCopy::Check(_) => {}
            SvsmCopy::ReadU64s { start, fields, .. } => {
                for (offset, value) in fields {
                    let field = field_bytes(bytes, offset.checked_sub(start))?;
                    *value = u64::from_le_bytes(*field);
                }
            }
            SvsmCopy::WriteU64s { start, fields, .. } => {
                for &(offset, value) in fields {
                    *field_bytes(bytes, offset.checked_sub(start))? = value.to_le_bytes();
                }
            }
        }
        Ok(())
    }

    /// The emulated PSP.
    pub fn psp(&self) -> &EmulatedPsp {
        &self.psp
    }

    /// Memory size in bytes.
    pub fn memory_size(&self) -> u64 {
        self.lock().memory.len() as u64
    }

    /// The VMPL the guest side runs at.
    pub fn guest_vmpl(&self) -> Vmpl {
        self.lock().guest_vmpl
    }

    // ----- set-up and the hypervisor's side -----

    /// Declares what backs `[start, end)` (page aligned).
    pub fn set_backing(&self, start: u64, end: u64, backing: Backing) {
        let mut m = self.lock();
        for page in range_pages(start, end.saturating_sub(start)) {
            if let Some(b) = usize::try_from(page >> 12)
                .ok()
                .and_then(|i| m.backing.get_mut(i))
            {
                *b = backing;
            }
            m.refresh(page, page + 1);
        }
    }

    /// RMPUPDATE by the hypervisor (see [`Rmp::rmpupdate`]).
    pub fn hv_rmpupdate(
        &self,
        addr: u64,
        size: PageSize,
        assigned: bool,
    ) -> Result<(), crate::rmp::RmpupdateError> {
        let mut m = self.lock();
        let done = m.rmp.rmpupdate(addr, size, assigned);
        m.refresh_page(addr, size);
        done
    }

    /// Whether [`Platform::vmsa_running`] tells the truth (the default, as the kernel's
    /// per-CPU record does) or always answers "not running", as on the SEV-SNP platform,
    /// where only RMPADJUST's FAIL_INUSE tells the SVSM that a VMSA still runs.
    pub fn set_vmsa_running_visible(&self, visible: bool) {
        self.lock().running_visible = visible;
    }

    /// Arms `race`: the hypervisor changes a page after the SVSM's next `race.after`
    /// accesses. Replaces a race not yet run.
    pub fn hv_race(&self, race: HostRace) {
        let mut m = self.lock();
        let now = m.svsm_accesses;
        m.race = Some((race, now));
    }

    /// Whether an armed race has not happened yet (the SVSM stopped short of it).
    pub fn hv_race_pending(&self) -> bool {
        self.lock().race.is_some()
    }

    /// Cancels an armed race.
    pub fn hv_race_cancel(&self) {
        self.lock().race = None;
    }

    /// How many accesses to guest memory and VMSAs the SVSM has made so far.
    pub fn svsm_accesses(&self) -> u64 {
        self.lock().svsm_accesses
    }

    /// PSMASH by the hypervisor.
    pub fn hv_psmash(&self, addr: u64) {
        let mut m = self.lock();
        m.rmp.psmash(addr);
        m.refresh_page(addr, PageSize::Size2M);
    }

    /// The guest asks the hypervisor to start vCPU `apic_id` at `vmpl` with the VMSA at
    /// `vmsa` (GHCB AP creation). The hypervisor can only run pages whose RMP VMSA bit
    /// is set; the vCPU starts running the guest.
    pub fn hv_ap_create(&self, apic_id: u32, vmpl: Vmpl, vmsa: u64) -> Result<(), GuestFault> {
        let mut m = self.lock();
        if !m.rmp.entry(vmsa).is_some_and(|e| e.vmsa && e.validated) {
            return Err(GuestFault::VmrunFailed);
        }
        let guest_vmpl = m.guest_vmpl;
        let vcpu = m.vcpu_mut(apic_id).ok_or(GuestFault::BadVcpu)?;
        if let Some(slot) = vcpu.vmsas.get_mut(usize::from(vmpl.level())) {
            *slot = Some(vmsa);
        }
        if vmpl == guest_vmpl {
            vcpu.mode = VcpuMode::Guest;
        }
        Ok(())
    }

    /// The guest asks the hypervisor to stop vCPU `apic_id` and forget its guest VMSA
    /// (GHCB AP destroy).
    pub fn hv_ap_destroy(&self, apic_id: u32) -> Result<(), GuestFault> {
        let mut m = self.lock();
        let guest_vmpl = usize::from(m.guest_vmpl.level());
        let vcpu = m.vcpu_mut(apic_id).ok_or(GuestFault::BadVcpu)?;
        if let Some(slot) = vcpu.vmsas.get_mut(guest_vmpl) {
            *slot = None;
        }
        vcpu.mode = VcpuMode::Stopped;
        Ok(())
    }

    /// Writes bytes straight into memory, bypassing the RMP (launch loading).
    pub fn load(&self, addr: u64, data: &[u8]) -> Option<()> {
        self.lock()
            .bytes_mut(addr, data.len())?
            .copy_from_slice(data);
        Some(())
    }

    /// Reads and writes `len` bytes at `addr` in one step under the machine's lock,
    /// bypassing the RMP: an atomic read-modify-write, as a locked instruction on a
    /// shared page is.
    pub fn update<R>(&self, addr: u64, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        Some(f(self.lock().bytes_mut(addr, len)?))
    }

    /// Reads memory straight, bypassing the RMP (for tests' inspection).
    pub fn peek(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        buf.copy_from_slice(self.lock().bytes(addr, buf.len())?);
        Some(())
    }

    /// PVALIDATE and RMPADJUST as the launch uses them (VMPL0).
    pub fn launch_pvalidate(
        &self,
        addr: u64,
        size: PageSize,
    ) -> Result<Validation, PvalidateError> {
        let mut m = self.lock();
        let result = m.rmp.pvalidate(addr, size, true);
        m.refresh_page(addr, size);
        result
    }

    // ----- the guest's side -----

    /// RMPADJUST executed by the guest at its VMPL.
    pub fn guest_rmpadjust(
        &self,
        addr: u64,
        size: PageSize,
        target: Vmpl,
        perms: RmpPermissions,
        vmsa: bool,
    ) -> Result<(), RmpadjustError> {
        let mut m = self.lock();
        let caller = m.guest_vmpl;
        m.refuse_in_use(addr, size)?;
        let result = m.rmp.rmpadjust(caller, addr, size, target, perms, vmsa);
        m.refresh_page(addr, size);
        result
    }

    /// A guest read at the guest VMPL.
    pub fn guest_read(&self, addr: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        let mut m = self.lock();
        buf.copy_from_slice(m.guest_bytes_mut(addr, buf.len(), false)?);
        Ok(())
    }

    /// A guest write at the guest VMPL.
    pub fn guest_write(&self, addr: u64, data: &[u8]) -> Result<(), GuestFault> {
        let mut m = self.lock();
        m.guest_bytes_mut(addr, data.len(), true)?
            .copy_from_slice(data);
        Ok(())
    }

    /// The guest reads its memory `[addr, addr + len)` in place: `f` sees the bytes
    /// after the same check as [`Self::guest_read`], and copies out only what it uses
    /// (a driver parsing a response in its buffer page).
    pub fn guest_read_with<R>(
        &self,
        addr: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, GuestFault> {
        let mut m = self.lock();
        Ok(f(m.guest_bytes_mut(addr, len, false)?))
    }

    /// The guest writes its memory `[addr, addr + len)` in place: `f` fills the bytes
    /// after the same check as [`Self::guest_write`] (a driver building a request in its
    /// buffer page).
    pub fn guest_write_with<R>(
        &self,
        addr: u64,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, GuestFault> {
        let mut m = self.lock();
        Ok(f(m.guest_bytes_mut(addr, len, true)?))
    }

    /// The guest half of a call, up to the VMGEXIT: `call_pending = 1` in the calling
    /// area at `ca` (a guest write), the registers saved into the vCPU's guest VMSA by
    /// the hardware, exit code VMGEXIT, and the vCPU switched to VMPL0.
    #[inline]
    pub fn guest_begin_call(
        &self,
        apic_id: u32,
        ca: u64,
        regs: &CallRegisters,
        set_pending: bool,
    ) -> Result<(), GuestFault> {
        let mut m = self.lock();
        if set_pending {
            m.guest_bytes_mut(ca, 1, true)?.fill(1);
        }
        m.exit(apic_id, regs, vmsa::VMGEXIT_EXIT_CODE)
    }

    /// The guest exits to VMPL0 with `exit_code` and the registers `regs`.
    pub fn guest_exit(
        &self,
        apic_id: u32,
        regs: &CallRegisters,
        exit_code: u64,
    ) -> Result<(), GuestFault> {
        self.lock().exit(apic_id, regs, exit_code)
    }

    /// The guest half of a call after the SVSM ran: the registers from the guest VMSA,
    /// then `xchg(call_pending, 0)` in the calling area at `ca`.
    #[inline]
    pub fn guest_end_call(&self, apic_id: u32, ca: u64) -> Result<CallReturn, GuestFault> {
        let mut m = self.lock();
        let vmsa_addr = m.guest_vmsa(apic_id).ok_or(GuestFault::BadVcpu)?;
        let reg = |offset| m.read_u64(vmsa_addr + offset).ok_or(GuestFault::NoMemory);
        let regs = CallRegisters {
            rax: reg(vmsa::RAX)?,
            rcx: reg(vmsa::RCX)?,
            rdx: reg(vmsa::RDX)?,
            r8: reg(vmsa::R8)?,
            r9: reg(vmsa::R9)?,
        };
        // The exchange is one read-modify-write: the guest needs read and write access.
        m.guest_access(m.guest_vmpl, ca, 1, false)?;
        let byte = m.guest_bytes_mut(ca, 1, true)?;
        let pending = byte.first().copied().unwrap_or(0);
        byte.fill(0);
        Ok(CallReturn { regs, pending })
    }

    /// The vCPUs.
    pub fn vcpus(&self) -> Vec<Vcpu> {
        self.lock().vcpus.clone()
    }

    /// The RMP entry of the page at `addr`.
    pub fn rmp_entry(&self, addr: u64) -> Option<RmpEntry> {
        self.lock().rmp.entry(addr).copied()
    }

    /// The whole RMP.
    pub fn rmp(&self) -> Rmp {
        self.lock().rmp.clone()
    }

    /// Everything a call could change.
    pub fn snapshot(&self) -> MachineSnapshot {
        let m = self.lock();
        MachineSnapshot {
            pages: m.rmp.entries().iter().map(RmpEntry::state).collect(),
            memory: m.memory.clone(),
            vcpus: m.vcpus.clone(),
        }
    }
}

impl Platform for EmulatedSnp {
    fn pvalidate(
        &self,
        addr: PhysAddr,
        size: PageSize,
        validate: bool,
    ) -> Result<Validation, PvalidateError> {
        let mut m = self.lock();
        let result = m.rmp.pvalidate(addr.raw(), size, validate);
        m.refresh_page(addr.raw(), size);
        result
    }

    fn rmpadjust(
        &self,
        addr: PhysAddr,
        size: PageSize,
        target: Vmpl,
        perms: RmpPermissions,
        vmsa: bool,
    ) -> Result<(), RmpadjustError> {
        let mut m = self.lock();
        m.refuse_in_use(addr.raw(), size)?;
        let result = m
            .rmp
            .rmpadjust(Vmpl::VMPL0, addr.raw(), size, target, perms, vmsa);
        m.refresh_page(addr.raw(), size);
        result
    }

    #[inline]
    fn read_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), MemoryError> {
        let addr = sub_range(range, offset, buf.len())?;
        self.svsm_copy(addr, SvsmCopy::Read(buf))
    }

    #[inline]
    fn check_guest(&self, range: &CheckedRange) -> Result<(), MemoryError> {
        let len = usize::try_from(range.len()).map_err(|_| MemoryError::OutOfRange)?;
        let addr = sub_range(range, 0, len)?;
        self.svsm_copy(addr, SvsmCopy::Check(len))
    }

    #[inline]
    fn write_guest(
        &self,
        range: &CheckedRange,
        offset: u64,
        data: &[u8],
    ) -> Result<(), MemoryError> {
        let addr = sub_range(range, offset, data.len())?;
        self.svsm_copy(addr, SvsmCopy::Write(data))
    }

    fn zero_guest(&self, range: &CheckedRange) -> Result<(), MemoryError> {
        let len = usize::try_from(range.len()).map_err(|_| MemoryError::OutOfRange)?;
        self.svsm_copy(range.start().raw(), SvsmCopy::Zero(len))
    }

    #[inline]
    fn read_vmsa(&self, vmsa: &VmsaPage, offset: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let addr = vmsa_offset(vmsa, offset, buf.len())?;
        self.svsm_copy(addr, SvsmCopy::Read(buf))
    }

    #[inline]
    fn write_vmsa(&self, vmsa: &VmsaPage, offset: u64, data: &[u8]) -> Result<(), MemoryError> {
        let addr = vmsa_offset(vmsa, offset, data.len())?;
        self.svsm_copy(addr, SvsmCopy::Write(data))
    }

    /// One SVSM access: the span of the page the fields occupy is checked once.
    #[inline]
    fn read_vmsa_u64s(
        &self,
        vmsa: &VmsaPage,
        fields: &mut [(u64, u64)],
    ) -> Result<(), MemoryError> {
        let (addr, start, len) = vmsa_span(vmsa, fields.iter().map(|f| f.0))?;
        self.svsm_copy(addr, SvsmCopy::ReadU64s { start, len, fields })
    }

    /// One SVSM access: the span of the page the fields occupy is checked once.
    #[inline]
    fn write_vmsa_u64s(&self, vmsa: &VmsaPage, fields: &[(u64, u64)]) -> Result<(), MemoryError> {
        let (addr, start, len) = vmsa_span(vmsa, fields.iter().map(|f| f.0))?;
        self.svsm_copy(addr, SvsmCopy::WriteU64s { start, len, fields })
    }

    fn vmsa_running(&self, vmsa: &VmsaPage) -> bool {
        let m = self.lock();
        if !m.running_visible {
            return false;
        }
        let level = usize::from(m.guest_vmpl.level());
        m.vcpus.iter().any(|v| {
            v.mode == VcpuMode::Guest
                && v.vmsas.get(level).copied().flatten() == Some(vmsa.addr().raw())
        })
    }

    fn create_ap(
        &self,
        apic_id: u32,
        vmpl: Vmpl,
        vmsa: PhysAddr,
        _sev_features: u64,
    ) -> Result<(), HypervisorError> {
        self.hv_ap_create(apic_id, vmpl, vmsa.raw())
            .map_err(|_| HypervisorError::Refused(1))
    }

    #[inline]
    fn run_guest(&self, apic_id: u32) -> Result<(), HypervisorError> {
        let mut m = self.lock();
        let vmsa_addr = m.guest_vmsa(apic_id).ok_or(HypervisorError::Refused(1))?;
        let efer = m
            .read_u64(vmsa_addr + vmsa::EFER)
            .ok_or(HypervisorError::Refused(1))?;
        if efer & vmsa::EFER_SVME == 0 {
            return Err(HypervisorError::Refused(2));
        }
        let vcpu = m.vcpu_mut(apic_id).ok_or(HypervisorError::Refused(1))?;
        vcpu.mode = VcpuMode::Guest;
        Ok(())
    }

    fn guest_request(&self, request: &MessagePage) -> Result<MessagePage, PspError> {
        self.psp.guest_request(request)
    }
}

/// The address of `[offset, offset + len)` inside a checked range.
fn sub_range(range: &CheckedRange, offset: u64, len: usize) -> Result<u64, MemoryError> {
    let end = offset
        .checked_add(len as u64)
        .ok_or(MemoryError::OutOfRange)?;
    if end > range.len() {
        return Err(MemoryError::OutOfRange);
    }
    Ok(range.start().raw() + offset)
}

/// The address of `[offset, offset + len)` inside a VMSA page.
fn vmsa_offset(vmsa: &VmsaPage, offset: u64, len: usize) -> Result<u64, MemoryError> {
    let end = offset
        .checked_add(len as u64)
        .ok_or(MemoryError::OutOfRange)?;
    if end > PAGE_SIZE {
        return Err(MemoryError::OutOfRange);
    }
    Ok(vmsa.addr().raw() + offset)
}

/// Where 8-byte fields at `offsets` of a VMSA page lie: the address of the span from
/// the lowest field's start to the highest field's end, that span's offset in the page,
/// and its length (0 if there are no fields).
fn vmsa_span(
    vmsa: &VmsaPage,
    offsets: impl Iterator<Item = u64>,
) -> Result<(u64, u64, usize), MemoryError> {
    let mut span: Option<(u64, u64)> = None;
    for offset in offsets {
        vmsa_offset(vmsa, offset, 8)?;
        let (lo, hi) = span.unwrap_or((offset, offset + 8));
        span = Some((lo.min(offset), hi.max(offset + 8)));
    }
    let (lo, hi) = span.unwrap_or((0, 0));
    Ok((vmsa.addr().raw() + lo, lo, (hi - lo) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB2: u64 = 0x20_0000;

    fn vmpl(n: u8) -> Vmpl {
        Vmpl::new(n).unwrap()
    }

    /// 4 MiB, one vCPU, guest at VMPL2; the first 2 MiB assigned as 4 KiB pages.
    fn machine() -> EmulatedSnp {
        let m = EmulatedSnp::new(2 * MB2, &[0], vmpl(2));
        for page in (0..MB2).step_by(PAGE_SIZE as usize) {
            m.hv_rmpupdate(page, PageSize::Size4K, true).unwrap();
        }
        m
    }

    #[test]
    fn guest_accesses_follow_the_rmp() {
        let m = machine();
        // Shared (unassigned) memory is free for the guest.
        m.guest_write(MB2, b"shared").unwrap();
        // Private but not validated: #VC.
        assert_eq!(m.guest_write(0x1000, b"x"), Err(GuestFault::NotValidated));
        m.launch_pvalidate(0x1000, PageSize::Size4K).unwrap();
        // Validated, but VMPL2 has no permission yet: #NPF.
        assert_eq!(m.guest_read(0x1000, &mut [0]), Err(GuestFault::Permission));
        m.rmpadjust(
            PhysAddr::new(0x1000),
            PageSize::Size4K,
            vmpl(2),
            RmpPermissions::READ,
            false,
        )
        .unwrap();
        m.guest_read(0x1000, &mut [0]).unwrap();
        assert_eq!(m.guest_write(0x1000, b"x"), Err(GuestFault::Permission));
        // An access that spans into a page without access is refused as a whole.
        assert_eq!(
            m.guest_read(0xFFF, &mut [0, 0]),
            Err(GuestFault::NotValidated)
        );
        // Read-only and MMIO backing.
        m.set_backing(0x1000, 0x2000, Backing::ReadOnly);
        assert_eq!(m.guest_write(0x1000, b"x"), Err(GuestFault::NoMemory));
        m.set_backing(MB2, MB2 + 0x1000, Backing::Mmio);
        assert_eq!(m.guest_read(MB2, &mut [0]), Err(GuestFault::NoMemory));
        assert_eq!(m.guest_read(4 * MB2, &mut [0]), Err(GuestFault::NoMemory));
    }

    /// A VMSA a vCPU is executing is in use: RMPADJUST on it answers FAIL_INUSE and
    /// changes nothing, at any VMPL; once the vCPU has exited it succeeds.
    #[test]
    fn rmpadjust_of_a_running_vmsa_is_fail_inuse() {
        let m = machine();
        let vmsa = 0x3000;
        m.launch_pvalidate(vmsa, PageSize::Size4K).unwrap();
        m.rmpadjust(
            PhysAddr::new(vmsa),
            PageSize::Size4K,
            vmpl(1),
            RmpPermissions::empty(),
            true,
        )
        .unwrap();
        m.hv_ap_create(0, vmpl(2), vmsa).unwrap();
        let before = m.snapshot();
        for target in [vmpl(1), vmpl(3)] {
            assert_eq!(
                m.rmpadjust(
                    PhysAddr::new(vmsa),
                    PageSize::Size4K,
                    target,
                    RmpPermissions::empty(),
                    false,
                ),
                Err(RmpadjustError::FailInUse)
            );
        }
        assert_eq!(
            m.guest_rmpadjust(
                vmsa,
                PageSize::Size4K,
                vmpl(3),
                RmpPermissions::empty(),
                false
            ),
            Err(RmpadjustError::FailInUse)
        );
        assert_eq!(m.snapshot(), before);
        m.hv_ap_destroy(0).unwrap();
        m.rmpadjust(
            PhysAddr::new(vmsa),
            PageSize::Size4K,
            vmpl(1),
            RmpPermissions::empty(),
            false,
        )
        .unwrap();
    }

    /// The per-page summary equals a fresh computation from the RMP and the backing.
    fn summary_in_step(m: &EmulatedSnp) {
        let mut guard = m.lock();
        let kept = guard.allowed.clone();
        let pages = guard.allowed.len() as u64;
        guard.refresh(0, pages * PAGE_SIZE);
        assert_eq!(kept, guard.allowed);
    }

    #[test]
    fn the_access_summary_follows_every_rmp_and_backing_change() {
        let m = machine();
        summary_in_step(&m);
        m.hv_rmpupdate(MB2, PageSize::Size2M, true).unwrap();
        summary_in_step(&m);
        m.launch_pvalidate(MB2, PageSize::Size2M).unwrap();
        summary_in_step(&m);
        m.rmpadjust(
            PhysAddr::new(MB2 + 0x3000),
            PageSize::Size4K,
            vmpl(2),
            RmpPermissions::READ,
            false,
        )
        .unwrap();
        summary_in_step(&m);
        m.guest_read(MB2 + 0x3000, &mut [0]).unwrap();
        assert_eq!(
            m.guest_write(MB2 + 0x3000, b"x"),
            Err(GuestFault::Permission)
        );
        m.hv_psmash(MB2);
        summary_in_step(&m);
        m.pvalidate(PhysAddr::new(MB2 + 0x5000), PageSize::Size4K, false)
            .unwrap();
        summary_in_step(&m);
        m.rmpadjust(
            PhysAddr::new(MB2 + 0x6000),
            PageSize::Size4K,
            vmpl(1),
            RmpPermissions::empty(),
            true,
        )
        .unwrap();
        summary_in_step(&m);
        m.guest_rmpadjust(
            MB2 + 0x3000,
            PageSize::Size4K,
            vmpl(3),
            RmpPermissions::READ,
            false,
        )
        .unwrap_or_default();
        summary_in_step(&m);
        m.set_backing(0x1000, 0x3000, Backing::ReadOnly);
        summary_in_step(&m);
        m.set_backing(MB2 + 0x3000, MB2 + 0x4000, Backing::Mmio);
        summary_in_step(&m);
        assert_eq!(
            m.guest_read(MB2 + 0x3000, &mut [0]),
            Err(GuestFault::NoMemory)
        );
        m.hv_rmpupdate(MB2, PageSize::Size4K, false).unwrap();
        summary_in_step(&m);
    }

    /// Audit finding: a 2 MiB RMPUPDATE off a 2 MiB boundary was accepted; the summary was
    /// refreshed for the aligned frame while the RMP changed the straddling one, so the
    /// guest could read a page the RMP says is not validated. Now refused, nothing changes.
    #[test]
    fn a_misaligned_2m_rmpupdate_is_refused_and_changes_nothing() {
        let m = machine();
        m.launch_pvalidate(0x10_1000, PageSize::Size4K).unwrap();
        m.rmpadjust(
            PhysAddr::new(0x10_1000),
            PageSize::Size4K,
            vmpl(2),
            RmpPermissions::all(),
            false,
        )
        .unwrap();
        let before = m.snapshot();
        assert_eq!(
            m.hv_rmpupdate(0x10_0000, PageSize::Size2M, true),
            Err(crate::rmp::RmpupdateError::FailInput)
        );
        summary_in_step(&m);
        assert_eq!(m.snapshot(), before);
        // The page keeps its validation and permissions: still readable, as the RMP says.
        m.guest_read(0x10_1000, &mut [0]).unwrap();
        // The straddled page beyond the first frame stays shared, not a private page.
        m.guest_write(MB2 + 0x1000, b"shared").unwrap();
    }

    #[test]
    fn vmsa_pages_and_the_call_handshake() {
        let m = machine();
        let (vmsa, ca) = (0x3000, 0x4000);
        for page in [vmsa, ca] {
            m.launch_pvalidate(page, PageSize::Size4K).unwrap();
            m.rmpadjust(
                PhysAddr::new(page),
                PageSize::Size4K,
                vmpl(2),
                RmpPermissions::RWX,
                false,
            )
            .unwrap();
        }
        // Not a VMSA yet: the hypervisor cannot run it.
        assert_eq!(
            m.hv_ap_create(0, vmpl(2), vmsa),
            Err(GuestFault::VmrunFailed)
        );
        m.rmpadjust(
            PhysAddr::new(vmsa),
            PageSize::Size4K,
            vmpl(1),
            RmpPermissions::empty(),
            true,
        )
        .unwrap();
        // A VMSA page is never accessible below VMPL0, whatever its permissions say.
        assert_eq!(m.guest_read(vmsa, &mut [0]), Err(GuestFault::Permission));
        m.hv_ap_create(0, vmpl(2), vmsa).unwrap();
        assert_eq!(m.vcpus()[0].mode, VcpuMode::Guest);
        let regs = CallRegisters {
            rax: 6,
            rcx: 1,
            ..Default::default()
        };
        m.guest_begin_call(0, ca, &regs, true).unwrap();
        assert_eq!(m.vcpus()[0].mode, VcpuMode::Svsm);
        // A second exit while in VMPL0 is impossible.
        assert_eq!(m.guest_exit(0, &regs, 0), Err(GuestFault::BadVcpu));
        // SVME clear: the hypervisor refuses to run the VMSA.
        assert_eq!(m.run_guest(0), Err(HypervisorError::Refused(2)));
        m.load(vmsa + vmsa::EFER, &vmsa::EFER_SVME.to_le_bytes())
            .unwrap();
        m.run_guest(0).unwrap();
        let ret = m.guest_end_call(0, ca).unwrap();
        assert_eq!((ret.regs, ret.pending), (regs, 1));
        m.hv_ap_destroy(0).unwrap();
        assert_eq!(m.vcpus()[0].mode, VcpuMode::Stopped);
        assert_eq!(m.hv_ap_destroy(9), Err(GuestFault::BadVcpu));
    }
}
