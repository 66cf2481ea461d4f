//! A guest in a known state on the standard emulated machine, for the suites.
//!
//! [`Prepared::new`] launches [`LaunchConfig::default`](svsm_emulated::LaunchConfig),
//! validates most of the guest RAM the way Linux and OVMF do, and brings up AP 1 the
//! Linux way. The constants name the pages the suites aim at.

use svsm_emulated::{EmulatedSystem, LaunchError};

use crate::driver::{DriverError, GuestDriver, GuestKind};

/// A validated guest page holding guest data.
pub const GUEST_PAGE: u64 = 0x20_0000;
/// A second validated guest page, free for the suites.
pub const SPARE_PAGE: u64 = 0x20_1000;
/// A validated page the suites use for lists outside any calling area.
pub const LIST_PAGE: u64 = 0x20_2000;
/// A guest RAM page the guest never validated.
pub const UNVALIDATED_PAGE: u64 = 0x70_0000;
/// A validated guest page for new VMSAs.
pub const NEW_VMSA_PAGE: u64 = 0x31_0000;
/// A validated guest page for new calling areas.
pub const NEW_CA_PAGE: u64 = 0x31_1000;
/// AP 1's VMSA (a guest page made a VMSA by CREATE_VCPU).
pub const AP1_VMSA: u64 = 0x30_0000;
/// AP 1's calling area.
pub const AP1_CA: u64 = 0x30_1000;
/// The 2 MiB chunk the hypervisor backs with 4 KiB RMP entries.
pub const SMALL_CHUNK: u64 = 0x40_0000;
/// Start of the read-only (BIOS) region.
pub const ROM_PAGE: u64 = 0xC_0000;
/// A page of the low MMIO hole.
pub const MMIO_LOW: u64 = 0xA_0000;
/// The 2 MiB MMIO range at the top.
pub const MMIO_HIGH: u64 = 0xE0_0000;
/// Beyond all memory.
pub const BEYOND: u64 = 0x1000_0000;

/// Guest RAM the fixture validates the Linux way.
pub const LINUX_RANGE: (u64, u64) = (0x11_0000, 0x70_0000);
/// Guest RAM the fixture validates the OVMF way (2 MiB entries).
pub const OVMF_RANGE: (u64, u64) = (0xA0_0000, 0xE0_0000);

/// The standard machine with a guest in a known state.
#[derive(Debug)]
pub struct Prepared {
    /// The machine and the SVSM.
    pub system: EmulatedSystem,
}

/// Why the fixture could not be set up.
#[derive(Debug)]
pub enum FixtureError {
    /// The launch failed.
    Launch(LaunchError),
    /// A guest step failed.
    Driver(DriverError),
}

impl From<DriverError> for FixtureError {
    fn from(e: DriverError) -> Self {
        FixtureError::Driver(e)
    }
}

impl Prepared {
    /// Launches and prepares the guest.
    pub fn new() -> Result<Self, FixtureError> {
        let system = EmulatedSystem::standard().map_err(FixtureError::Launch)?;
        {
            let guest = GuestDriver::new(&system);
            let bsp = system.info().bsp();
            guest.pvalidate_linux(bsp, LINUX_RANGE.0, LINUX_RANGE.1, true)?;
            let pages: Vec<_> = crate::driver::linux_entries(OVMF_RANGE.0, OVMF_RANGE.1, true);
            guest.pvalidate_ovmf(bsp, &pages)?;
            guest.start_ap(GuestKind::Linux, bsp, 1, AP1_VMSA, AP1_CA)?;
            system
                .machine()
                .guest_write(GUEST_PAGE, b"guest data")
                .map_err(|e| FixtureError::Driver(e.into()))?;
        }
        Ok(Self { system })
    }

    /// A driver for the prepared guest (calling areas: boot CA for the BSP, AP1_CA for
    /// AP 1).
    pub fn guest(&self) -> GuestDriver<'_> {
        let guest = GuestDriver::new(&self.system);
        guest.adopt_calling_area(1, AP1_CA);
        guest
    }

    /// The boot calling area.
    pub fn boot_ca(&self) -> u64 {
        self.system.info().config.boot_ca
    }

    /// The boot vCPU's VMSA (in SVSM memory).
    pub fn boot_vmsa(&self) -> u64 {
        self.system.info().boot_vmsa
    }

    /// A VMPL0 VMSA (in SVSM memory).
    pub fn vmpl0_vmsa(&self) -> u64 {
        self.system.info().vmpl0_vmsas.first().map_or(0, |v| v.1)
    }

    /// Start of SVSM memory.
    pub fn svsm_start(&self) -> u64 {
        self.system.info().config.svsm_range.0
    }
}
