//! SVSM vCPUs: one VMPL0 vCPU for each guest APIC ID, created by the boot vCPU.
//!
//! A guest that starts its APs (Linux `wakeup_cpu_via_vmgexit`, OVMF's MP services)
//! first asks the SVSM for each one (CREATE_VCPU, SVSM spec 58019, core protocol)
//! and then the hypervisor (AP creation). Its calls from APIC ID n then arrive on
//! whatever VMPL0 VMSA the hypervisor runs for vCPU n, so each guest vCPU needs an
//! SVSM vCPU of its own, running before the guest starts its APs. The boot vCPU
//! creates them:
//!
//! 1. [`plan`]: which APIC IDs get an SVSM vCPU (every one the IGVM parameters list,
//!    each once; the boot vCPU already runs) and which SVSM pages each gets: a VMSA
//!    page that is never 2 MiB aligned (Linux `snp_alloc_vmsa_page`: the SNP erratum
//!    where a 2 MiB RMP entry that collides with a VMSA page raises an RMP violation)
//!    and a GHCB page (the vCPU itself makes it shared and registers it);
//! 2. [`svsm_vcpu_vmsa`]: the VMPL0 VMSA, already in 64-bit long mode with the boot
//!    vCPU's page tables, control registers and SEV features, its own FS base (the
//!    per-CPU area with the stack-protector canary) and stack (AMD APM vol. 2, the
//!    VMSA layout of the SEV-ES/SNP chapter, as Linux's `struct sev_es_save_area`; segment attributes in the VMCB's compressed form: descriptor bits 47:40
//!    in attrib bits 7:0, bits 55:52 in attrib bits 11:8), entering the kernel's AP
//!    entry with the CPU index in RDI. IDTR is empty until the vCPU loads its own
//!    tables, so an early exception shuts the vCPU down instead of running on a stack
//!    it does not own;
//! 3. [`create_vcpu`]: the VMSA written into SVSM memory, RMPADJUST sets its VMSA bit
//!    (APM vol. 3 "RMPADJUST", RDX bit 16; VMPL0 may do this only for 4 KiB pages), and
//!    AP creation through the GHCB (GHCB spec 56421, the "SNP AP Creation" NAE event, exit
//!    0x8000_0013, event "create", VMPL 0, RAX = the VMSA's sev_features). If the
//!    hypervisor refuses, the VMSA bit is cleared again, so the page stays ordinary
//!    SVSM memory.
//!
//! SVSM VMSA pages lie in SVSM memory, which the guest VMPL never gets any RMP
//! permission on and which the SVSM's address checks refuse as a CREATE_VCPU target
//! (INVALID_ADDRESS).

use alloc::vec::Vec;

use svsm_protocol::vmsa::{SevFeatures, Vmsa, VmsaSegment, EFER_SVME};
use zerocopy::IntoBytes;

use super::guest_vmsa::set_reset_flags_debug_fpu;
use super::hypervisor::HvClient;
use super::{GhcbTransport, SnpError};
use crate::address::PhysAddr;
use crate::platform::{
    MemoryError, PageSize, Platform, RmpPermissions, Vmpl, PAGE_SIZE, PAGE_SIZE_2M,
};

/// The kernel's 64-bit code selector (GDT entry 1).
pub const CODE_SELECTOR: u16 = 0x08;
/// The kernel's data selector (GDT entry 2).
pub const DATA_SELECTOR: u16 = 0x10;
/// 64-bit ring-0 code, present, readable, accessed; L and G (descriptor
/// 0x00AF_9B00_0000_FFFF in the VMCB attribute form).
pub const CODE64_ATTRIB: u16 = 0xA9B;
/// Ring-0 data, present, writable, accessed; D/B and G (descriptor 0x00CF_9300_0000_FFFF).
pub const DATA_ATTRIB: u16 = 0xC93;
/// A present, busy 64-bit TSS (type 0xB).
pub const TSS_ATTRIB: u16 = 0x08B;
/// CR0.PE.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.OSXSAVE (kept clear: the SVSM runs without XSAVE).
pub const CR4_OSXSAVE: u64 = 1 << 18;
/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;

/// Why the SVSM vCPUs cannot be planned or created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuPlanError {
    /// The parameters list no vCPU.
    NoVcpus,
    /// The boot vCPU's APIC ID is not in the list.
    BspMissing(u32),
    /// An APIC ID appears twice.
    DuplicateApicId(u32),
    /// More vCPUs than the kernel supports.
    TooMany(usize),
    /// No SVSM page left for a VMSA or GHCB.
    OutOfMemory,
    /// A page handed in is not 4 KiB aligned.
    UnalignedPage(u64),
    /// The register state cannot run (not long mode, non-canonical or unaligned
    /// RIP/RSP).
    BadRegisters,
}

/// One SVSM vCPU to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedVcpu {
    /// The APIC ID it serves.
    pub apic_id: u32,
    /// Its CPU index (the boot vCPU is 0).
    pub index: usize,
    /// Its VMSA page (SVSM memory, never 2 MiB aligned).
    pub vmsa: u64,
    /// Its GHCB page (SVSM memory; made shared by the vCPU itself).
    pub ghcb: u64,
}

/// The SVSM vCPUs of a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvsmVcpuPlan {
    /// The boot vCPU's APIC ID (index 0, already running).
    pub bsp: u32,
    /// The vCPUs the boot vCPU creates, in the parameters' order.
    pub aps: Vec<PlannedVcpu>,
}

impl SvsmVcpuPlan {
    /// The planned vCPU for `apic_id`.
    pub fn get(&self, apic_id: u32) -> Option<&PlannedVcpu> {
        self.aps.iter().find(|v| v.apic_id == apic_id)
    }
}

/// Plans an SVSM vCPU for every APIC ID in `apic_ids` (the IGVM parameters' list)
/// other than `bsp`, at most `max` vCPUs in all, with pages from `page` (fresh,
/// 4 KiB-aligned SVSM pages). A 2 MiB-aligned page never becomes a VMSA: it serves as
/// that vCPU's GHCB instead.
pub fn plan(
    apic_ids: &[u32],
    bsp: u32,
    max: usize,
    mut page: impl FnMut() -> Option<u64>,
) -> Result<SvsmVcpuPlan, VcpuPlanError> {
    if apic_ids.is_empty() {
        return Err(VcpuPlanError::NoVcpus);
    }
    for (i, id) in apic_ids.iter().enumerate() {
        if apic_ids.iter().take(i).any(|other| other == id) {
            return Err(VcpuPlanError::DuplicateApicId(*id));
        }
    }
    if !apic_ids.contains(&bsp) {
        return Err(VcpuPlanError::BspMissing(bsp));
    }
    if apic_ids.len() > max {
        return Err(VcpuPlanError::TooMany(apic_ids.len()));
    }
    let mut next = || {
        let p = page().ok_or(VcpuPlanError::OutOfMemory)?;
        if p % PAGE_SIZE != 0 {
            return Err(VcpuPlanError::UnalignedPage(p));
        }
        Ok(p)
    };
    let mut aps = Vec::new();
    for &apic_id in apic_ids.iter().filter(|&&id| id != bsp) {
        let first = next()?;
        let second = next()?;
        let (vmsa, ghcb) = if first % PAGE_SIZE_2M == 0 {
            (second, first)
        } else {
            (first, second)
        };
        if vmsa % PAGE_SIZE_2M == 0 {
            // Both 2 MiB aligned: impossible for two distinct 4 KiB pages of a heap,
            // but a hostile allocator is no reason to break the rule.
            return Err(VcpuPlanError::UnalignedPage(vmsa));
        }
        aps.push(PlannedVcpu {
            apic_id,
            // At most `max` entries: no overflow.
            index: aps.len().saturating_add(1),
            vmsa,
            ghcb,
        });
    }
    Ok(SvsmVcpuPlan { bsp, aps })
}

/// The register state an SVSM vCPU starts with (the boot vCPU's, mostly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApRegisters {
    /// The kernel's AP entry.
    pub rip: u64,
    /// The top of the vCPU's stack (16-byte aligned).
    pub rsp: u64,
    /// The CPU index, passed in RDI.
    pub cpu_index: u64,
    /// The FS base: the vCPU's per-CPU area (canary at `%fs:0x28`), valid from its
    /// first instruction.
    pub fs_base: u64,
    /// CR0 (PE and PG set).
    pub cr0: u64,
    /// CR3: the kernel's page tables.
    pub cr3: u64,
    /// CR4 (PAE set; OSXSAVE is cleared).
    pub cr4: u64,
    /// EFER (LME set; LMA and SVME are added).
    pub efer: u64,
    /// The GDT the selectors index (base, limit).
    pub gdtr: (u64, u16),
    /// The vCPU's SEV features: the SVSM's own (SEV_STATUS >> 2).
    pub sev_features: SevFeatures,
}

fn canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_FFFF
}

/// The VMPL0 VMSA of an SVSM vCPU.
pub fn svsm_vcpu_vmsa(r: &ApRegisters) -> Result<Vmsa, VcpuPlanError> {
    let long_mode = r.cr0 & (CR0_PE | CR0_PG) == (CR0_PE | CR0_PG)
        && r.cr4 & CR4_PAE != 0
        && r.efer & EFER_LME != 0;
    if !long_mode
        || r.rip == 0
        || !canonical(r.rip)
        || !canonical(r.rsp)
        || r.rsp % 16 != 0
        || r.cr3 % PAGE_SIZE != 0
        || !canonical(r.fs_base)
    {
        return Err(VcpuPlanError::BadRegisters);
    }
    let flat = |selector, attrib| VmsaSegment {
        selector,
        attrib,
        limit: 0xFFFF_FFFF,
        base: 0,
    };
    let mut v = Vmsa::zeroed();
    v.cs = flat(CODE_SELECTOR, CODE64_ATTRIB);
    v.ss = flat(DATA_SELECTOR, DATA_ATTRIB);
    v.ds = flat(DATA_SELECTOR, DATA_ATTRIB);
    v.es = flat(DATA_SELECTOR, DATA_ATTRIB);
    v.fs = VmsaSegment {
        base: r.fs_base,
        ..flat(0, 0)
    };
    v.gs = flat(0, 0);
    v.gdtr = VmsaSegment {
        selector: 0,
        attrib: 0,
        limit: u32::from(r.gdtr.1),
        base: r.gdtr.0,
    };
    v.idtr = VmsaSegment::default();
    v.ldtr = VmsaSegment::default();
    v.tr = VmsaSegment {
        selector: 0,
        attrib: TSS_ATTRIB,
        limit: 0x67,
        base: 0,
    };
    v.cr0 = r.cr0;
    v.cr3 = r.cr3;
    v.cr4 = r.cr4 & !CR4_OSXSAVE;
    v.efer = r.efer | EFER_LMA | EFER_SVME;
    v.rip = r.rip;
    v.rsp = r.rsp;
    v.rdi = r.cpu_index;
    // The kernel keeps the reset PAT.
    set_reset_flags_debug_fpu(&mut v);
    v.vmpl = 0;
    v.cpl = 0;
    v.sev_features = r.sev_features.bits();
    Ok(v)
}

/// Writes whole pages of SVSM memory (private, VMPL0 only).
pub trait SvsmMemory {
    /// Writes `page` at `gpa`.
    fn write_page(&self, gpa: u64, page: &[u8; PAGE_SIZE as usize]) -> Result<(), MemoryError>;
}

/// VMPL1 as RMPADJUST's target for a VMSA-bit change (any lower VMPL works; the
/// permissions stay none).
fn vmsa_bit_target() -> Vmpl {
    Vmpl::LOWER[0]
}

/// Creates the SVSM vCPU `vcpu` with `regs` (its RIP, RSP and index filled in):
/// VMSA written, VMSA bit set, AP creation at VMPL0 on the boot vCPU's GHCB `hv`.
/// On failure nothing remains: the VMSA bit is cleared again.
pub fn create_vcpu<P: Platform, M: SvsmMemory, T: GhcbTransport>(
    platform: &P,
    memory: &M,
    hv: &HvClient<T>,
    vcpu: &PlannedVcpu,
    regs: &ApRegisters,
) -> Result<(), SnpError> {
    let vmsa = svsm_vcpu_vmsa(regs).map_err(SnpError::SvsmVcpus)?;
    if vcpu.vmsa % PAGE_SIZE != 0 || vcpu.vmsa % PAGE_SIZE_2M == 0 {
        return Err(SnpError::SvsmVcpus(VcpuPlanError::UnalignedPage(vcpu.vmsa)));
    }
    let mut page = [0u8; PAGE_SIZE as usize];
    let _: () = const { assert!(core::mem::size_of::<Vmsa>() <= PAGE_SIZE as usize) };
    let (head, _) = page.split_at_mut(core::mem::size_of::<Vmsa>());
    head.copy_from_slice(vmsa.as_bytes());
    memory
        .write_page(vcpu.vmsa, &page)
        .map_err(|e| SnpError::Memory(vcpu.vmsa, e))?;
    let set_bit = |on: bool| {
        platform.rmpadjust(
            PhysAddr::new(vcpu.vmsa),
            PageSize::Size4K,
            vmsa_bit_target(),
            RmpPermissions::empty(),
            on,
        )
    };
    set_bit(true).map_err(|e| SnpError::Rmpadjust(vcpu.vmsa, e))?;
    if let Err(e) = hv.create_ap(vcpu.apic_id, Vmpl::VMPL0, vcpu.vmsa, vmsa.sev_features) {
        if let Err(undo) = set_bit(false) {
            log::warn!(
                "snp: cannot clear the VMSA bit of {:#x}: {undo:?}",
                vcpu.vmsa
            );
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    fn regs() -> ApRegisters {
        ApRegisters {
            rip: 0x400_1230,
            rsp: 0x500_0000,
            cpu_index: 3,
            fs_base: 0xFC0_0040,
            cr0: 0x8005_0033,
            cr3: 0x600_0000,
            cr4: 0x0004_0620,
            efer: 0xD00,
            gdtr: (0x410_0000, 0x27),
            sev_features: SevFeatures::SNP_ACTIVE | SevFeatures::RESTRICTED_INJECTION,
        }
    }

    #[test]
    fn vmsa_is_long_mode_vmpl0_at_linux_offsets() {
        let v = svsm_vcpu_vmsa(&regs()).unwrap();
        let b = v.as_bytes();
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        // struct sev_es_save_area: es 0x00, cs 0x10, ss 0x20, ds 0x30 (selector,
        // attrib, limit, base), gdtr 0x60, idtr 0x80, tr 0x90.
        assert_eq!((u16_at(0x10), u16_at(0x12)), (0x08, 0xA9B));
        assert_eq!(u32_at(0x14), 0xFFFF_FFFF);
        assert_eq!((u16_at(0x20), u16_at(0x22)), (0x10, 0xC93));
        assert_eq!((u16_at(0x30), u16_at(0x32)), (0x10, 0xC93));
        assert_eq!((u16_at(0x00), u16_at(0x02)), (0x10, 0xC93));
        // fs 0x40: selector 0, base = the per-CPU area.
        assert_eq!((u16_at(0x40), u64_at(0x48)), (0, 0xFC0_0040));
        assert_eq!((u32_at(0x64), u64_at(0x68)), (0x27, 0x410_0000));
        assert_eq!(
            (u32_at(0x84), u64_at(0x88)),
            (0, 0),
            "IDT loaded by the vCPU"
        );
        assert_eq!(u16_at(0x92), 0x8B);
        // vmpl 0xCA, cpl 0xCB, efer 0xD0: LME | LMA | NXE | SVME.
        assert_eq!((b[0xCA], b[0xCB]), (0, 0));
        assert_eq!(u64_at(0xD0), 0xD00 | 0x400 | 0x1000);
        // cr4 0x148 (OSXSAVE removed), cr3 0x150, cr0 0x158, rflags 0x170, rip 0x178,
        // rsp 0x1D8, rdi 0x338, g_pat 0x268, sev_features 0x3B0, xcr0 0x3E8.
        assert_eq!(u64_at(0x148), 0x620);
        assert_eq!(u64_at(0x150), 0x600_0000);
        assert_eq!(u64_at(0x158), 0x8005_0033);
        assert_eq!(u64_at(0x170), 2);
        assert_eq!(u64_at(0x178), 0x400_1230);
        assert_eq!(u64_at(0x1D8), 0x500_0000);
        assert_eq!(offset_of!(Vmsa, rdi), 0x338);
        assert_eq!(u64_at(0x338), 3);
        assert_eq!(u64_at(0x268), super::super::guest_vmsa::RESET_PAT);
        assert_eq!(u64_at(0x3B0), 0b1001);
        assert_eq!(u64_at(0x3E8), 1);
        assert!(v.is_runnable());
    }

    #[test]
    fn registers_that_cannot_run_are_refused() {
        let bad = [
            ApRegisters {
                cr0: 0x11,
                ..regs()
            },
            ApRegisters { cr4: 0, ..regs() },
            ApRegisters { efer: 0, ..regs() },
            ApRegisters { rip: 0, ..regs() },
            ApRegisters {
                rip: 0x8000_0000_0000,
                ..regs()
            },
            ApRegisters {
                rsp: 0x500_0008,
                ..regs()
            },
            ApRegisters {
                cr3: 0x600_0010,
                ..regs()
            },
            ApRegisters {
                fs_base: 0x1_0000_0000_0000,
                ..regs()
            },
        ];
        for r in bad {
            assert_eq!(
                svsm_vcpu_vmsa(&r).err(),
                Some(VcpuPlanError::BadRegisters),
                "{r:?}"
            );
        }
        // A higher-half (canonical) address is fine.
        assert!(svsm_vcpu_vmsa(&ApRegisters {
            rip: 0xFFFF_8000_0000_1000,
            ..regs()
        })
        .is_ok());
    }

    fn pages(list: &[u64]) -> impl FnMut() -> Option<u64> + '_ {
        let mut it = list.iter().copied();
        move || it.next()
    }

    #[test]
    fn plan_gives_every_other_apic_id_its_own_pages() {
        let p = plan(
            &[0, 1, 2, 5],
            0,
            16,
            pages(&[
                0x10_1000, 0x10_2000, 0x10_3000, 0x10_4000, 0x20_0000, 0x20_1000,
            ]),
        )
        .unwrap();
        assert_eq!(p.bsp, 0);
        assert_eq!(
            p.aps,
            [
                PlannedVcpu {
                    apic_id: 1,
                    index: 1,
                    vmsa: 0x10_1000,
                    ghcb: 0x10_2000
                },
                PlannedVcpu {
                    apic_id: 2,
                    index: 2,
                    vmsa: 0x10_3000,
                    ghcb: 0x10_4000
                },
                // The 2 MiB-aligned page becomes the GHCB, never the VMSA.
                PlannedVcpu {
                    apic_id: 5,
                    index: 3,
                    vmsa: 0x20_1000,
                    ghcb: 0x20_0000
                },
            ]
        );
        assert_eq!(p.get(5).map(|v| v.index), Some(3));
        assert_eq!(p.get(0), None, "the boot vCPU already runs");
        // The boot vCPU need not be the first or lowest.
        let p = plan(&[4, 7], 7, 16, pages(&[0x1000, 0x2000])).unwrap();
        assert_eq!(p.aps.iter().map(|v| v.apic_id).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn bad_lists_and_pages_are_refused() {
        let many = pages(&[0x1000; 64]);
        assert_eq!(plan(&[], 0, 16, many), Err(VcpuPlanError::NoVcpus));
        assert_eq!(
            plan(&[0, 1, 1], 0, 16, pages(&[0x1000; 8])),
            Err(VcpuPlanError::DuplicateApicId(1))
        );
        assert_eq!(
            plan(&[1, 2], 0, 16, pages(&[0x1000; 8])),
            Err(VcpuPlanError::BspMissing(0))
        );
        assert_eq!(
            plan(&[0, 1, 2], 0, 2, pages(&[0x1000; 8])),
            Err(VcpuPlanError::TooMany(3))
        );
        assert_eq!(
            plan(&[0, 1, 2], 0, 16, pages(&[0x1000, 0x2000, 0x3000])),
            Err(VcpuPlanError::OutOfMemory)
        );
        assert_eq!(
            plan(&[0, 1], 0, 16, pages(&[0x1000, 0x2008])),
            Err(VcpuPlanError::UnalignedPage(0x2008))
        );
        assert_eq!(
            plan(&[0, 1], 0, 16, pages(&[0x20_0000, 0x40_0000])),
            Err(VcpuPlanError::UnalignedPage(0x40_0000))
        );
    }
}
