//! The SVSM's first steps on SEV-SNP, before it touches any guest state: talk to the
//! hypervisor, learn the C-bit, set up the GHCB.
//!
//! Order (GHCB spec 56421 §2.3.1 and the GHCB page protocol; Linux `sev_es_negotiate_protocol`,
//! `snp_register_ghcb_early`): SEV information and hypervisor features over the MSR
//! protocol; the CPUID page parsed and its C-bit compared with the hypervisor's; the
//! GHCB page rescinded (PVALIDATE off), made shared through the MSR page-state-change
//! request, and registered. The bare-metal kernel and the emulated machine run this
//! same code.

use svsm_protocol::ghcb::PageState;

use super::cpuid::{checked_cbit, CpuidPage};
use super::hypervisor::{HvClient, HypervisorInfo};
use super::{GhcbTransport, SnpError};
use crate::address::PhysAddr;
use crate::platform::{PageSize, Platform, PAGE_SIZE};

/// What the start-up learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpStart {
    /// The hypervisor's protocol range and features.
    pub hypervisor: HypervisorInfo,
    /// The CPUID page, parsed.
    pub cpuid: CpuidPage,
    /// The C-bit position.
    pub cbit: u8,
}

/// Negotiates with the hypervisor and reads the CPUID page (bytes already copied into
/// SVSM memory).
pub fn start<T: GhcbTransport>(hv: &HvClient<T>, cpuid_page: &[u8]) -> Result<SnpStart, SnpError> {
    let hypervisor = hv.negotiate()?;
    let cpuid = CpuidPage::parse(cpuid_page).map_err(SnpError::CpuidPage)?;
    let cbit = checked_cbit(&cpuid, hypervisor.cbit)?;
    log::info!(
        "snp: GHCB protocol {}..={} (using 2), hypervisor features {:#x}, C-bit {}",
        hypervisor.min_version,
        hypervisor.max_version,
        hypervisor.features.bits(),
        cbit
    );
    Ok(SnpStart {
        hypervisor,
        cpuid,
        cbit,
    })
}

/// Makes the page at `gpa` shared: rescind its validation, then ask the hypervisor
/// (Linux `set_memory_decrypted` takes the same two steps in this order).
pub fn make_shared<P: Platform, T: GhcbTransport>(
    platform: &P,
    hv: &HvClient<T>,
    gpa: u64,
) -> Result<(), SnpError> {
    platform
        .pvalidate(PhysAddr::new(gpa), PageSize::Size4K, false)
        .map_err(|e| SnpError::Pvalidate(gpa, e))?;
    hv.page_state_change(gpa / PAGE_SIZE, PageState::Shared)
}

/// Sets up the GHCB at `gpa`: shared, then registered.
pub fn setup_ghcb<P: Platform, T: GhcbTransport>(
    platform: &P,
    hv: &HvClient<T>,
    gpa: u64,
) -> Result<(), SnpError> {
    make_shared(platform, hv, gpa)?;
    hv.register_ghcb(gpa / PAGE_SIZE)?;
    log::info!("snp: GHCB at {gpa:#x} shared and registered");
    Ok(())
}

/// Reports a fatal SNP error: logs it and asks the hypervisor to terminate the VM with
/// its reason. Returns the reason (the bare-metal caller then halts forever; the
/// emulated machine's tests inspect it).
pub fn fail<T: GhcbTransport>(hv: &HvClient<T>, error: &SnpError) -> super::TerminateReason {
    let reason = error.termination_reason();
    log::error!(
        "snp: fatal: {error}; terminating (reason set {}, code {})",
        reason.set,
        reason.code
    );
    hv.terminate(reason);
    reason
}
