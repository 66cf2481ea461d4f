//! The guest launch: everything the SVSM prepares before the guest firmware's first
//! instruction.
//!
//! What OVMF needs from an SVSM (edk2 `OvmfPkg/ResetVector` SEV metadata, read by the
//! IGVM builder into [`FirmwareInfo`]; the same steps COCONUT-SVSM performs):
//! 1. its `SNP_SEC_MEM` ranges validated, zeroed and given to the guest VMPL (read,
//!    write, both executes), and its image (validated by the launch, never validated
//!    again here) given to the guest VMPL;
//! 2. a copy of the secrets page at the GPA its metadata names, with the SVSM fields
//!    ([`super::secrets`]);
//! 3. a copy of the CPUID page at the GPA its metadata names;
//! 4. a zeroed calling-area page at the GPA its metadata names (`SVSM_CAA`);
//! 5. when its IGVM metadata names a memory-map parameter (edk2-stable202511 and later,
//!    `OvmfPkg/Library/PlatformInitLib/Igvm.c`), the guest's memory map there, with the
//!    SVSM's range reserved ([`FirmwareMemoryMap`]): OVMF then takes its RAM from it
//!    instead of QEMU's fw_cfg E820 table, in which the SVSM's range is RAM;
//! 6. a boot VMSA at the guest VMPL in the reset state ([`super::guest_vmsa`]), in SVSM
//!    memory, with the RMP VMSA bit, registered with the request loop (boot calling
//!    area = the `SVSM_CAA` page) and with the hypervisor through AP creation (GHCB
//!    exit 0x8000_0013 on the boot vCPU's GHCB).
//!
//! Memory validation: PVALIDATE as 2 MiB where the range allows, falling back to 4 KiB
//! on FAIL_SIZEMISMATCH (APM vol. 3 "PVALIDATE"); a page the hypervisor has not
//! assigned to the guest (#NPF, reported as [`RmpFault::NotAssigned`]) is first made
//! private through the GHCB page state change. A page already valid (CF = 1) is
//! accepted. Every range is checked against the guest memory map and SVSM memory
//! before any instruction touches it.

use alloc::vec::Vec;

use svsm_protocol::ghcb::PageState;
use svsm_protocol::igvm_params::{FirmwareInfo, MemoryMapEntry};
use svsm_protocol::secrets::SvsmInfo;
use svsm_protocol::vmsa::SevFeatures;
use zerocopy::{FromBytes, IntoBytes};

use super::guest_vmsa::reset_vmsa;
use super::hypervisor::HvClient;
use super::secrets::SvsmSecrets;
use super::{GhcbTransport, SnpError};
use crate::address::{Access, GuestPhysAddr, GuestState, PhysAddr};
use crate::boot_params::{BootParams, BootParamsError};
use crate::platform::{
    PageSize, Platform, PvalidateError, RmpFault, RmpPermissions, RmpadjustError, Vmpl, PAGE_SIZE,
    PAGE_SIZE_2M,
};
use crate::requests::Svsm;

/// What the launch needs to know.
#[derive(Debug, Clone)]
pub struct GuestLaunch {
    /// The firmware's expectations (from the IGVM parameter block).
    pub firmware: FirmwareInfo,
    /// The guest's VMPL.
    pub guest_vmpl: Vmpl,
    /// The boot vCPU.
    pub bsp_apic_id: u32,
    /// A page of SVSM memory for the boot VMSA.
    pub vmsa_page: u64,
    /// The SVSM's range, announced in the secrets copy.
    pub svsm_base: u64,
    /// Its size.
    pub svsm_size: u64,
    /// The SVSM's own SEV features (SEV_STATUS >> 2); the guest gets them filtered.
    pub guest_features: SevFeatures,
    /// Where the boot vCPU starts (the reset vector for OVMF).
    pub reset_address: u64,
    /// The guest's memory map for the firmware, if it takes one.
    pub firmware_memory_map: Option<FirmwareMemoryMap>,
}

/// The guest's memory map as the firmware reads it (OVMF's IGVM memory-map parameter,
/// edk2 `PlatformInitLib/Igvm.c`): `IGVM_VHS_MEMORY_MAP_ENTRY` records (page number, page
/// count, type, flags, reserved: 24 bytes), read until the first entry with no pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareMemoryMap {
    /// Where the firmware reads it.
    pub gpa: u64,
    /// What to write there: the entries, then at least one empty entry.
    pub bytes: Vec<u8>,
}

/// Why the firmware's memory map cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareMapError {
    /// Not whole 24-byte entries, fewer than two, more than a page, or not 8-byte
    /// aligned.
    BadShape,
    /// The last entry has pages: the firmware would read on past the area.
    NotTerminated,
    /// Not inside one SNP_SEC_MEM range (the memory the launch validates, zeroes and
    /// grants to the guest before it writes the map).
    OutsideSecMem,
    /// Overlaps the secrets, CPUID or calling-area page, which the launch writes after
    /// the map.
    OverlapsFirmwarePage,
    /// The guest's memory map has more entries than the firmware's area holds with one
    /// left empty.
    TooSmall,
}

impl FirmwareMemoryMap {
    /// What the boot parameters say to write ([`BootParams::firmware_memory_map`]):
    /// `None` when there is no firmware or it names no memory-map parameter.
    pub fn from_params(params: &BootParams) -> Result<Option<Self>, SnpError> {
        let mut buf = [0u8; PAGE_SIZE as usize];
        match params.firmware_memory_map(&mut buf) {
            Ok(map) => Ok(map.map(|(gpa, bytes)| Self {
                gpa,
                bytes: bytes.to_vec(),
            })),
            Err(BootParamsError::TooManyEntries) => Err(SnpError::FirmwareMemoryMap(
                params.block().firmware_memory_map.base,
                FirmwareMapError::TooSmall,
            )),
            Err(_) => Err(SnpError::BootParams),
        }
    }

    /// The entries the firmware reads: up to the first without pages.
    pub fn entries(&self) -> impl Iterator<Item = MemoryMapEntry> + '_ {
        self.bytes
            .chunks_exact(ENTRY_SIZE)
            .filter_map(|c| MemoryMapEntry::read_from_bytes(c).ok())
            .take_while(|e| e.number_of_pages != 0)
    }

    /// Checks the map against the firmware's metadata, before anything is validated:
    /// a map the launch refuses is never written, and nothing else is done either.
    pub fn check(&self, fw: &FirmwareInfo) -> Result<(), FirmwareMapError> {
        let len = self.bytes.len();
        if len % ENTRY_SIZE != 0
            || !(2 * ENTRY_SIZE..=PAGE_SIZE as usize).contains(&len)
            || self.gpa % 8 != 0
        {
            return Err(FirmwareMapError::BadShape);
        }
        let last = &self.bytes[len - ENTRY_SIZE..];
        if last[8..16] != [0; 8] {
            return Err(FirmwareMapError::NotTerminated);
        }
        let end = self
            .gpa
            .checked_add(len as u64)
            .ok_or(FirmwareMapError::BadShape)?;
        let count = (fw.sec_mem_count as usize).min(fw.sec_mem.len());
        let inside = fw.sec_mem.iter().take(count).any(|r| {
            r.base
                .checked_add(r.size)
                .is_some_and(|r_end| r.base <= self.gpa && end <= r_end)
        });
        if !inside {
            return Err(FirmwareMapError::OutsideSecMem);
        }
        let overlaps_page = [fw.secrets_gpa, fw.cpuid_gpa, fw.caa_gpa]
            .into_iter()
            .filter(|&p| p != 0)
            .any(|p| p < end && self.gpa < p.saturating_add(PAGE_SIZE));
        if overlaps_page {
            return Err(FirmwareMapError::OverlapsFirmwarePage);
        }
        Ok(())
    }
}

const ENTRY_SIZE: usize = core::mem::size_of::<MemoryMapEntry>();

/// What the launch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaunchSummary {
    /// 4 KiB pages validated or found valid and given to the guest VMPL.
    pub pages_granted: u64,
    /// Pages the hypervisor had to make private first.
    pub pages_made_private: u64,
}

/// How a range is handed to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Validate, zero and grant (firmware scratch memory, the calling area).
    Zeroed,
    /// Grant only, keeping the contents (the firmware image, validated and measured by
    /// the launch): a page that is not validated any more was swapped by the host, and
    /// RMPADJUST refuses it.
    KeepContents,
}

fn pvalidate_page<P: Platform, T: GhcbTransport>(
    platform: &P,
    hv: &HvClient<T>,
    addr: u64,
    summary: &mut LaunchSummary,
) -> Result<(), SnpError> {
    match platform.pvalidate(PhysAddr::new(addr), PageSize::Size4K, true) {
        Ok(_) => Ok(()),
        Err(PvalidateError::Fault(RmpFault::NotAssigned)) => {
            hv.page_state_change(addr / PAGE_SIZE, PageState::Private)?;
            summary.pages_made_private += 1;
            platform
                .pvalidate(PhysAddr::new(addr), PageSize::Size4K, true)
                .map(|_| ())
                .map_err(|e| SnpError::Pvalidate(addr, e))
        }
        Err(e) => Err(SnpError::Pvalidate(addr, e)),
    }
}

/// Validates `[start, start + size)` and gives the guest VMPL full access to it.
pub fn grant_range<P: Platform, T: GhcbTransport>(
    platform: &P,
    hv: &HvClient<T>,
    state: &GuestState,
    start: u64,
    size: u64,
    vmpl: Vmpl,
    grant: Grant,
) -> Result<LaunchSummary, SnpError> {
    let range = state
        .check(GuestPhysAddr::new(start), size, Access::Validate)
        .map_err(|e| SnpError::Address(start, e))?;
    if start % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
        return Err(SnpError::Address(
            start,
            crate::address::AddressError::BadRange,
        ));
    }
    let mut summary = LaunchSummary::default();
    let end = start + size;
    let mut addr = start;
    let grant_page = |addr: u64, size: PageSize| {
        platform
            .rmpadjust(PhysAddr::new(addr), size, vmpl, RmpPermissions::RWX, false)
            .map_err(|e| SnpError::Rmpadjust(addr, e))
    };
    while addr < end {
        if addr % PAGE_SIZE_2M == 0 && end - addr >= PAGE_SIZE_2M {
            let large = match grant {
                // Measured contents were validated by the launch: never validate them
                // here, or a page the host swapped in would be accepted.
                Grant::KeepContents => Ok(()),
                Grant::Zeroed => platform
                    .pvalidate(PhysAddr::new(addr), PageSize::Size2M, true)
                    .map(|_| ())
                    .map_err(|e| SnpError::Pvalidate(addr, e)),
            };
            let granted = large.and_then(|()| grant_page(addr, PageSize::Size2M));
            match granted {
                Ok(()) => {
                    summary.pages_granted += PAGE_SIZE_2M / PAGE_SIZE;
                    addr += PAGE_SIZE_2M;
                    continue;
                }
                // 4 KiB RMP entries, or (scratch memory) an unassigned page: per page.
                Err(SnpError::Rmpadjust(_, RmpadjustError::FailSizeMismatch))
                | Err(SnpError::Pvalidate(_, _)) => {}
                Err(e) => return Err(e),
            }
        }
        if grant == Grant::Zeroed {
            pvalidate_page(platform, hv, addr, &mut summary)?;
        }
        grant_page(addr, PageSize::Size4K)?;
        summary.pages_granted += 1;
        addr += PAGE_SIZE;
    }
    if grant == Grant::Zeroed && range.is_writable_ram() {
        platform
            .zero_guest(&range)
            .map_err(|e| SnpError::Memory(start, e))?;
    }
    Ok(summary)
}

fn write_bytes<P: Platform>(
    platform: &P,
    state: &GuestState,
    gpa: u64,
    bytes: &[u8],
) -> Result<(), SnpError> {
    let range = state
        .check(GuestPhysAddr::new(gpa), bytes.len() as u64, Access::Data)
        .map_err(|e| SnpError::Address(gpa, e))?;
    platform
        .write_guest(&range, 0, bytes)
        .map_err(|e| SnpError::Memory(gpa, e))
}

/// Prepares the guest as [`GuestLaunch`] says (see the module documentation).
pub fn launch_guest<P: Platform, T: GhcbTransport>(
    svsm: &Svsm<P>,
    hv: &HvClient<T>,
    plan: &GuestLaunch,
    secrets: &SvsmSecrets,
    cpuid_page: &[u8],
) -> Result<LaunchSummary, SnpError> {
    let platform = svsm.platform();
    let state = svsm.state_snapshot();
    let fw = &plan.firmware;
    let vmpl = plan.guest_vmpl;
    let mut total = LaunchSummary::default();
    let mut add = |s: LaunchSummary| {
        total.pages_granted += s.pages_granted;
        total.pages_made_private += s.pages_made_private;
    };

    // Refused before anything is validated: a rejected plan changes nothing.
    if let Some(map) = &plan.firmware_memory_map {
        map.check(fw)
            .map_err(|e| SnpError::FirmwareMemoryMap(map.gpa, e))?;
    }
    let count = (fw.sec_mem_count as usize).min(fw.sec_mem.len());
    for range in fw.sec_mem.iter().take(count) {
        add(grant_range(
            platform,
            hv,
            &state,
            range.base,
            range.size,
            vmpl,
            Grant::Zeroed,
        )?);
    }
    if fw.image.size != 0 {
        add(grant_range(
            platform,
            hv,
            &state,
            fw.image.base,
            fw.image.size,
            vmpl,
            Grant::KeepContents,
        )?);
    }
    log::info!(
        "snp: firmware memory validated and granted to VMPL{}",
        vmpl.level()
    );
    // The map lies in an SNP_SEC_MEM range (checked above), validated, zeroed and granted
    // by now; the secrets, CPUID and calling-area pages written next do not overlap it.
    if let Some(map) = &plan.firmware_memory_map {
        write_bytes(platform, &state, map.gpa, &map.bytes)?;
        log::info!(
            "snp: guest memory map for the firmware at {:#x}: {} entries, SVSM {:#x}+{:#x} reserved",
            map.gpa,
            map.entries().count(),
            plan.svsm_base,
            plan.svsm_size
        );
    }

    for gpa in [fw.secrets_gpa, fw.cpuid_gpa, fw.caa_gpa] {
        if gpa != 0 {
            add(grant_range(
                platform,
                hv,
                &state,
                gpa,
                PAGE_SIZE,
                vmpl,
                Grant::Zeroed,
            )?);
        }
    }
    if fw.secrets_gpa != 0 {
        let copy = secrets.guest_copy(&SvsmInfo {
            base: plan.svsm_base,
            size: plan.svsm_size,
            caa: fw.caa_gpa,
            max_version: 1,
            guest_vmpl: vmpl.level(),
        })?;
        write_bytes(platform, &state, fw.secrets_gpa, &copy)?;
        log::info!(
            "snp: guest secrets page at {:#x} (VMPCK0/1 zeroed)",
            fw.secrets_gpa
        );
    }
    if fw.cpuid_gpa != 0 {
        let page = cpuid_page
            .get(..PAGE_SIZE as usize)
            .ok_or(SnpError::CpuidPage(
                svsm_protocol::ParseError::ShortBuffer {
                    need: PAGE_SIZE as usize,
                    got: cpuid_page.len(),
                },
            ))?;
        write_bytes(platform, &state, fw.cpuid_gpa, page)?;
        log::info!("snp: guest CPUID page at {:#x}", fw.cpuid_gpa);
    }

    // The boot VMSA, registered with the request loop before the hypervisor can run it.
    svsm.register_launch_vcpu(
        plan.bsp_apic_id,
        PhysAddr::new(plan.vmsa_page),
        GuestPhysAddr::new(fw.caa_gpa),
    )
    .map_err(SnpError::Svsm)?;
    let vmsa = reset_vmsa(plan.reset_address, vmpl, plan.guest_features);
    let page = svsm
        .state_snapshot()
        .vmsa_page(plan.vmsa_page)
        .ok_or(SnpError::Memory(
            plan.vmsa_page,
            crate::platform::MemoryError::OutOfRange,
        ))?;
    platform
        .write_vmsa(&page, 0, vmsa.as_bytes())
        .map_err(|e| SnpError::Memory(plan.vmsa_page, e))?;
    platform
        .rmpadjust(
            PhysAddr::new(plan.vmsa_page),
            PageSize::Size4K,
            Vmpl::LOWER[0],
            RmpPermissions::empty(),
            true,
        )
        .map_err(|e| SnpError::Rmpadjust(plan.vmsa_page, e))?;
    hv.create_ap(
        plan.bsp_apic_id,
        vmpl,
        plan.vmsa_page,
        plan.guest_features.bits(),
    )?;
    log::info!(
        "snp: guest VMSA at {:#x} for APIC ID {} at VMPL{}, sev_features {:#x}, start {:#x}",
        plan.vmsa_page,
        plan.bsp_apic_id,
        vmpl.level(),
        plan.guest_features.bits(),
        plan.reset_address
    );
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use svsm_protocol::igvm_params::MemoryRange;

    /// OVMF-like metadata: SNP_SEC_MEM 0x800000+0x9000 and 0x80A000+0x3000 with the
    /// secrets page at 0x80B000 inside the second (a firmware may put it there), and
    /// 0x810000+0x10000; CPUID 0x80E000, calling area 0x80F000.
    fn firmware() -> FirmwareInfo {
        let mut fw = FirmwareInfo {
            secrets_gpa: 0x80_B000,
            cpuid_gpa: 0x80_E000,
            caa_gpa: 0x80_F000,
            sec_mem_count: 3,
            ..FirmwareInfo::default()
        };
        fw.sec_mem[0] = MemoryRange {
            base: 0x80_0000,
            size: 0x9000,
        };
        fw.sec_mem[1] = MemoryRange {
            base: 0x80_A000,
            size: 0x3000,
        };
        fw.sec_mem[2] = MemoryRange {
            base: 0x81_0000,
            size: 0x1_0000,
        };
        fw
    }

    fn map(gpa: u64, full: usize, empty: usize) -> FirmwareMemoryMap {
        let entry = |page: u64, pages: u64, kind: u16| MemoryMapEntry {
            starting_gpa_page_number: page,
            number_of_pages: pages,
            entry_type: kind,
            flags: 0,
            reserved: 0,
        };
        let mut bytes = vec![];
        for i in 0..full as u64 {
            bytes.extend_from_slice(entry(i * 16, 8, 0).as_bytes());
        }
        bytes.resize((full + empty) * ENTRY_SIZE, 0);
        FirmwareMemoryMap { gpa, bytes }
    }

    #[test]
    fn a_terminated_map_inside_one_sec_mem_range_is_accepted_and_read_to_the_empty_entry() {
        let fw = firmware();
        let m = map(0x81_2000, 4, 4);
        assert_eq!(m.check(&fw), Ok(()));
        assert_eq!(m.entries().count(), 4);
        // Ending exactly at a range's end, crossing a page boundary inside one.
        assert_eq!(map(0x80_9000 - 8 * 24, 4, 4).check(&fw), Ok(()));
        assert_eq!(map(0x81_1000 - 48, 2, 6).check(&fw), Ok(()));
        // A whole page of entries, the last one empty.
        assert_eq!(map(0x81_3000, 169, 1).check(&fw), Ok(()));
    }

    #[test]
    fn malformed_or_misplaced_maps_are_refused_with_their_reason() {
        let fw = firmware();
        for (m, error) in [
            (map(0x81_2000, 8, 0), FirmwareMapError::NotTerminated),
            (map(0x81_2000, 0, 1), FirmwareMapError::BadShape),
            (map(0x81_2000, 170, 1), FirmwareMapError::BadShape),
            (map(0x81_2004, 1, 1), FirmwareMapError::BadShape),
            (map(u64::MAX - 7, 1, 1), FirmwareMapError::BadShape),
            // Between two ranges, straddling a range's end.
            (map(0x80_9000, 1, 1), FirmwareMapError::OutsideSecMem),
            (map(0x80_9000 - 24, 1, 1), FirmwareMapError::OutsideSecMem),
            // The secrets page inside the second range: the launch writes it after the map.
            (map(0x80_B010, 1, 1), FirmwareMapError::OverlapsFirmwarePage),
            (map(0x80_AFE0, 1, 1), FirmwareMapError::OverlapsFirmwarePage),
        ] {
            assert_eq!(m.check(&fw), Err(error), "{:#x}", m.gpa);
        }
        let mut short = map(0x81_2000, 1, 1);
        short.bytes.truncate(47);
        assert_eq!(short.check(&fw), Err(FirmwareMapError::BadShape));
        // Ranges past sec_mem_count do not count.
        let mut fewer = fw;
        fewer.sec_mem_count = 2;
        assert_eq!(
            map(0x81_2000, 1, 1).check(&fewer),
            Err(FirmwareMapError::OutsideSecMem)
        );
        // A firmware that names no SNP_SEC_MEM range takes no map.
        let none = FirmwareInfo::default();
        assert_eq!(
            map(0x81_2000, 1, 1).check(&none),
            Err(FirmwareMapError::OutsideSecMem)
        );
    }
}
