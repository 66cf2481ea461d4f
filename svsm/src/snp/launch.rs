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
//! 5. a boot VMSA at the guest VMPL in the reset state ([`super::guest_vmsa`]), in SVSM
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

use svsm_protocol::ghcb::PageState;
use svsm_protocol::igvm_params::FirmwareInfo;
use svsm_protocol::secrets::SvsmInfo;
use svsm_protocol::vmsa::SevFeatures;
use zerocopy::IntoBytes;

use super::guest_vmsa::reset_vmsa;
use super::hypervisor::HvClient;
use super::secrets::SvsmSecrets;
use super::{GhcbTransport, SnpError};
use crate::address::{Access, GuestPhysAddr, GuestState, PhysAddr};
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
}

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

fn write_page<P: Platform>(
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
        write_page(platform, &state, fw.secrets_gpa, &copy)?;
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
        write_page(platform, &state, fw.cpuid_gpa, page)?;
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
