//! The SVSM vCPUs on the emulated machine: the plan and creation steps the kernel
//! runs on hardware ([`svsm::snp::svsm_vcpus`]), with stand-ins for what only the
//! kernel has (its AP entry, stacks, per-CPU areas and page tables).
//!
//! Each vCPU's GHCB is the page the start-up already made shared and registered on
//! that vCPU (the layout's per-vCPU GHCB), so the plan takes it as the vCPU's GHCB; the
//! VMSA pages come from the top of SVSM memory, downwards.

use svsm::platform::{MemoryError, PAGE_SIZE};
use svsm::smp::MAX_CPUS;
use svsm::snp::hypervisor::HvClient;
use svsm::snp::svsm_vcpus::{self, ApRegisters, SvsmMemory, SvsmVcpuPlan, VcpuPlanError};
use svsm::snp::{GhcbTransport, SnpError};
use svsm_protocol::vmsa::SevFeatures;

use crate::hypervisor::GhcbPlatform;
use crate::machine::EmulatedSnp;

/// The stand-in kernel AP entry, stack region and page tables, inside SVSM memory
/// (offsets from its start).
pub const ENTRY_OFFSET: u64 = 0x1_0000;
/// Where the stand-in stacks start (one 64 KiB stack per CPU index above it).
pub const STACKS_OFFSET: u64 = 0x10_0000;
/// The stand-in page tables.
pub const CR3_OFFSET: u64 = 0x2_0000;
/// The stand-in per-CPU areas (256 bytes per CPU index).
pub const PERCPU_OFFSET: u64 = 0x3_0000;

/// SVSM memory of the emulated machine, written by VMPL0.
#[derive(Debug)]
pub struct MachineMemory<'a>(pub &'a EmulatedSnp);

impl SvsmMemory for MachineMemory<'_> {
    fn write_page(&self, gpa: u64, page: &[u8; PAGE_SIZE as usize]) -> Result<(), MemoryError> {
        self.0.load(gpa, page).ok_or(MemoryError::OutOfRange)
    }
}

/// The register state the kernel would give SVSM vCPU `index` (stand-in addresses in
/// SVSM memory at `svsm_start`).
pub fn ap_registers(svsm_start: u64, index: usize, sev_status: u64) -> ApRegisters {
    ApRegisters {
        rip: svsm_start + ENTRY_OFFSET,
        rsp: svsm_start + STACKS_OFFSET + (index as u64 + 1) * 0x1_0000,
        cpu_index: index as u64,
        fs_base: svsm_start + PERCPU_OFFSET + index as u64 * 0x100,
        cr0: 0x8005_0033,
        cr3: svsm_start + CR3_OFFSET,
        cr4: 0x0000_0620,
        efer: 0x0D00,
        gdtr: (svsm_start + ENTRY_OFFSET + 0x800, 0x27),
        sev_features: SevFeatures::from_sev_status(sev_status),
    }
}

/// Plans and creates an SVSM vCPU for every APIC ID but `bsp`, on the boot vCPU's
/// GHCB `hv`: `ghcbs` names each vCPU's registered GHCB page (and so the APIC IDs);
/// the VMSA pages are taken from the top of `svsm_range` down.
pub fn create_svsm_vcpus<T: GhcbTransport>(
    machine: &EmulatedSnp,
    platform: &GhcbPlatform,
    hv: &HvClient<T>,
    ghcbs: &[(u32, u64)],
    bsp: u32,
    svsm_range: (u64, u64),
    sev_status: u64,
) -> Result<SvsmVcpuPlan, SnpError> {
    let apic_ids: Vec<u32> = ghcbs.iter().map(|g| g.0).collect();
    // Pages in the order the plan takes them: a VMSA page, then that vCPU's GHCB.
    let mut pages = Vec::new();
    let mut next_vmsa = svsm_range.1;
    for &(_, ghcb) in ghcbs.iter().filter(|g| g.0 != bsp) {
        next_vmsa -= PAGE_SIZE;
        if next_vmsa % (2 * 1024 * 1024) == 0 {
            next_vmsa -= PAGE_SIZE;
        }
        if next_vmsa < svsm_range.0 {
            return Err(SnpError::SvsmVcpus(VcpuPlanError::OutOfMemory));
        }
        pages.push(next_vmsa);
        pages.push(ghcb);
    }
    let mut source = pages.into_iter();
    let plan = svsm_vcpus::plan(&apic_ids, bsp, MAX_CPUS, || source.next())
        .map_err(SnpError::SvsmVcpus)?;
    for vcpu in &plan.aps {
        let regs = ap_registers(svsm_range.0, vcpu.index, sev_status);
        svsm_vcpus::create_vcpu(platform, &MachineMemory(machine), hv, vcpu, &regs)?;
    }
    Ok(plan)
}
