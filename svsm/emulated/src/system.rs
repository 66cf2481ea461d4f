//! A machine in the state a launch leaves it, with the SVSM on it, and the call path
//! between the two.
//!
//! [`EmulatedSystem::launch`] does what the IGVM launch and the SVSM's start-up do on
//! real hardware: guest memory assigned to the guest (not validated: the guest validates
//! it through the SVSM), SVSM memory validated and private to VMPL0, a VMPL0 VMSA per
//! vCPU registered with the hypervisor, the boot vCPU's guest-VMPL VMSA (in SVSM
//! memory) and its boot calling area (validated, the guest's). [`EmulatedSystem::call`]
//! then runs one SVSM call as it happens on hardware: the guest's half up to VMGEXIT,
//! the SVSM's request loop step, the switch back, the guest's `xchg(call_pending, 0)`.

use std::sync::Arc;

use svsm::address::{GuestPhysAddr, GuestRegion, LayoutError, MemoryKind, MemoryLayout, PhysAddr};
use svsm::error::SvsmError;
use svsm::platform::{PageSize, Platform, RmpPermissions, Vmpl, PAGE_SIZE, PAGE_SIZE_2M};
use svsm::requests::{vmsa, CallRegisters, RequestOutcome, Services, Svsm, SvsmConfig};

use crate::machine::{Backing, CallReturn, EmulatedSnp, GuestFault};

/// The platform type of an emulated system.
pub type SharedSnp = Arc<EmulatedSnp>;

/// What the launch sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Physical memory size (a multiple of 2 MiB).
    pub memory_size: u64,
    /// The guest memory map.
    pub regions: Vec<GuestRegion>,
    /// SVSM memory `[start, end)`, 2 MiB aligned.
    pub svsm_range: (u64, u64),
    /// vCPUs; the first is the boot vCPU.
    pub apic_ids: Vec<u32>,
    /// The guest's VMPL.
    pub guest_vmpl: Vmpl,
    /// The boot calling area (a guest RAM page).
    pub boot_ca: u64,
    /// SEV features of the guest's VMSAs (SEV_STATUS >> 2; bit 0 = SNP active).
    pub sev_features: u64,
    /// 2 MiB chunks of guest memory the hypervisor backs with 4 KiB RMP entries (the
    /// rest of each region is 2 MiB where alignment allows).
    pub small_page_chunks: Vec<u64>,
}

impl Default for LaunchConfig {
    /// A 16 MiB machine with four vCPUs: low RAM, a VGA MMIO hole, a read-only BIOS
    /// area, RAM, 2 MiB of SVSM memory at 8 MiB, more RAM, 2 MiB of MMIO at the top.
    fn default() -> Self {
        let region = |start, end, kind| GuestRegion { start, end, kind };
        Self {
            memory_size: 0x100_0000,
            regions: vec![
                region(0, 0xA_0000, MemoryKind::Ram),
                region(0xA_0000, 0xC_0000, MemoryKind::Mmio),
                region(0xC_0000, 0x10_0000, MemoryKind::ReadOnly),
                region(0x10_0000, 0x80_0000, MemoryKind::Ram),
                region(0xA0_0000, 0xE0_0000, MemoryKind::Ram),
                region(0xE0_0000, 0x100_0000, MemoryKind::Mmio),
            ],
            svsm_range: (0x80_0000, 0xA0_0000),
            apic_ids: vec![0, 1, 2, 3],
            guest_vmpl: Vmpl::LOWER[1],
            boot_ca: 0x10_F000,
            sev_features: 1,
            small_page_chunks: vec![0x40_0000],
        }
    }
}

/// Where the launch put things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchInfo {
    /// The configuration.
    pub config: LaunchConfig,
    /// The boot vCPU's guest-VMPL VMSA (in SVSM memory).
    pub boot_vmsa: u64,
    /// Each vCPU's VMPL0 VMSA (in SVSM memory).
    pub vmpl0_vmsas: Vec<(u32, u64)>,
}

impl LaunchInfo {
    /// The boot vCPU.
    pub fn bsp(&self) -> u32 {
        self.config.apic_ids.first().copied().unwrap_or(0)
    }
}

/// Why a launch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchError {
    /// The memory map is inconsistent.
    Layout(LayoutError),
    /// A launch step on the machine failed (the configuration does not fit).
    Machine(&'static str),
    /// The SVSM refused the launch registration.
    Svsm(SvsmError),
}

/// The emulated machine with the SVSM running on it.
#[derive(Debug)]
pub struct EmulatedSystem {
    machine: SharedSnp,
    svsm: Svsm<SharedSnp>,
    info: LaunchInfo,
}

fn write_vmsa_fields(
    machine: &EmulatedSnp,
    addr: u64,
    vmpl: Vmpl,
    sev_features: u64,
) -> Option<()> {
    machine.load(addr + vmsa::VMPL, &[vmpl.level()])?;
    machine.load(
        addr + vmsa::EFER,
        &(vmsa::EFER_SVME | 0xD00_u64).to_le_bytes(),
    )?;
    machine.load(addr + vmsa::SEV_FEATURES, &sev_features.to_le_bytes())
}

impl EmulatedSystem {
    /// Launches a machine as `config` says, with the SVSM offering `services`.
    pub fn launch(
        config: LaunchConfig,
        services: Services<SharedSnp>,
    ) -> Result<Self, LaunchError> {
        let (svsm_start, svsm_end) = config.svsm_range;
        let layout = MemoryLayout::new(config.regions.clone(), svsm_start, svsm_end)
            .map_err(LaunchError::Layout)?;
        let machine = Arc::new(EmulatedSnp::new(
            config.memory_size,
            &config.apic_ids,
            config.guest_vmpl,
        ));
        let fail = LaunchError::Machine;

        // Guest memory: assigned (2 MiB where the hypervisor can), not validated.
        for r in &config.regions {
            let backing = match r.kind {
                MemoryKind::Ram => Backing::Ram,
                MemoryKind::ReadOnly => Backing::ReadOnly,
                MemoryKind::Mmio => Backing::Mmio,
            };
            machine.set_backing(r.start, r.end, backing);
            assign(&machine, r.start, r.end, &config.small_page_chunks)
                .ok_or(fail("guest region outside memory"))?;
        }
        // SVSM memory: assigned, validated, VMPL0 only.
        assign(&machine, svsm_start, svsm_end, &[]).ok_or(fail("SVSM range outside memory"))?;
        let mut addr = svsm_start;
        while addr < svsm_end {
            let size = if addr % PAGE_SIZE_2M == 0 && addr + PAGE_SIZE_2M <= svsm_end {
                PageSize::Size2M
            } else {
                PageSize::Size4K
            };
            machine
                .launch_pvalidate(addr, size)
                .map_err(|_| fail("cannot validate SVSM memory"))?;
            addr += size.bytes();
        }

        // The SVSM's own VMPL0 VMSAs, one per vCPU, then the boot guest VMSA.
        let mut next_page = svsm_start;
        let mut take_page = || {
            let page = next_page;
            next_page += PAGE_SIZE;
            page
        };
        let mut vmpl0_vmsas = Vec::new();
        for &apic_id in &config.apic_ids {
            let page = take_page();
            write_vmsa_fields(&machine, page, Vmpl::VMPL0, config.sev_features)
                .ok_or(fail("VMSA outside memory"))?;
            make_vmsa(&machine, page)?;
            machine
                .create_ap(
                    apic_id,
                    Vmpl::VMPL0,
                    PhysAddr::new(page),
                    config.sev_features,
                )
                .map_err(|_| fail("hypervisor refused a VMPL0 VMSA"))?;
            vmpl0_vmsas.push((apic_id, page));
        }
        let boot_vmsa = take_page();
        write_vmsa_fields(&machine, boot_vmsa, config.guest_vmpl, config.sev_features)
            .ok_or(fail("VMSA outside memory"))?;
        make_vmsa(&machine, boot_vmsa)?;

        // The boot calling area: validated and the guest's.
        machine
            .launch_pvalidate(config.boot_ca, PageSize::Size4K)
            .map_err(|_| fail("cannot validate the boot calling area"))?;
        machine
            .rmpadjust(
                PhysAddr::new(config.boot_ca),
                PageSize::Size4K,
                config.guest_vmpl,
                RmpPermissions::RWX,
                false,
            )
            .map_err(|_| fail("cannot grant the boot calling area"))?;

        let bsp = config.apic_ids.first().copied().ok_or(fail("no vCPUs"))?;
        let svsm = Svsm::new(
            machine.clone(),
            SvsmConfig {
                guest_vmpl: config.guest_vmpl,
                layout,
                apic_ids: config.apic_ids.clone(),
            },
            services,
        );
        svsm.register_launch_vcpu(
            bsp,
            PhysAddr::new(boot_vmsa),
            GuestPhysAddr::new(config.boot_ca),
        )
        .map_err(LaunchError::Svsm)?;
        machine
            .hv_ap_create(bsp, config.guest_vmpl, boot_vmsa)
            .map_err(|_| fail("hypervisor refused the boot VMSA"))?;

        Ok(Self {
            machine,
            svsm,
            info: LaunchInfo {
                config,
                boot_vmsa,
                vmpl0_vmsas,
            },
        })
    }

    /// The standard test machine ([`LaunchConfig::default`]) with core services only.
    pub fn standard() -> Result<Self, LaunchError> {
        Self::launch(LaunchConfig::default(), Services::new())
    }

    /// The machine.
    pub fn machine(&self) -> &EmulatedSnp {
        &self.machine
    }

    /// The machine, shared.
    pub fn shared_machine(&self) -> &SharedSnp {
        &self.machine
    }

    /// The SVSM.
    pub fn svsm(&self) -> &Svsm<SharedSnp> {
        &self.svsm
    }

    /// Where the launch put things.
    pub fn info(&self) -> &LaunchInfo {
        &self.info
    }

    /// One complete call from vCPU `apic_id` whose calling area is at `ca`.
    #[inline]
    pub fn call(
        &self,
        apic_id: u32,
        ca: u64,
        regs: &CallRegisters,
    ) -> Result<CallReturn, GuestFault> {
        self.machine.guest_begin_call(apic_id, ca, regs, true)?;
        self.service(apic_id)?;
        self.machine.guest_end_call(apic_id, ca)
    }

    /// The SVSM side of a call on `apic_id`: one request-loop step, then back to the
    /// guest VMPL.
    #[inline]
    pub fn service(&self, apic_id: u32) -> Result<RequestOutcome, GuestFault> {
        let outcome = self.svsm.handle_request(apic_id);
        self.machine
            .run_guest(apic_id)
            .map_err(|_| GuestFault::VmrunFailed)?;
        Ok(outcome)
    }
}

/// Assigns `[start, end)` to the guest: 2 MiB RMP pages where aligned and not listed in
/// `small`, 4 KiB pages elsewhere.
fn assign(machine: &EmulatedSnp, start: u64, end: u64, small: &[u64]) -> Option<()> {
    let mut addr = start;
    while addr < end {
        let large =
            addr % PAGE_SIZE_2M == 0 && addr + PAGE_SIZE_2M <= end && !small.contains(&addr);
        let size = if large {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        machine.hv_rmpupdate(addr, size, true).ok()?;
        addr += size.bytes();
    }
    Some(())
}

/// Sets the VMSA bit of a page in SVSM memory.
fn make_vmsa(machine: &EmulatedSnp, page: u64) -> Result<(), LaunchError> {
    machine
        .rmpadjust(
            PhysAddr::new(page),
            PageSize::Size4K,
            Vmpl::LOWER[0],
            RmpPermissions::empty(),
            true,
        )
        .map_err(|_| LaunchError::Machine("cannot make a VMSA"))
}
