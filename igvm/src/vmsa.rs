//! The launch VMSA, and the VMSA pages QEMU/KVM actually measure.
//!
//! Under QEMU/KVM the IGVM VMSA is not measured as written: QEMU copies a fixed set of its
//! fields into the vCPU (segments, descriptor tables, EFER, CR0/3/4, XCR0, PAT, DR6/DR7,
//! general registers, RIP, RFLAGS, x87 FCW, MXCSR) and KVM builds the VMSA it measures
//! from the vCPU: it sets EFER.SVME, clears CR0.CD/NW, ORs the host's CR4.MCE in, takes
//! `sev_features` from the VM's configuration and measures every vCPU's VMSA at GPA
//! 0xFFFFFFFFF000 after all pages. vCPUs without an IGVM context are measured in their
//! reset state. So the builder writes a VMSA that is already in this normal form (the
//! file's bytes are the measured bytes), and [`kvm_measured_vmsa`] computes the normal form
//! of any VMSA for `measure`.

use igvm::snp_defs::{SevFeatures, SevSelector, SevVmsa};
use zerocopy::{FromZeros, IntoBytes};

use crate::Error;

/// The GPA KVM gives every VMSA in the RMP, and so in the launch digest.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// The launch CR0: protected mode (PE), extension type (ET), numeric error (NE).
pub const LAUNCH_CR0: u64 = 0x31;
/// CR0 values KVM accepts unchanged for the launch (32-bit protected-mode entry).
pub const ALLOWED_LAUNCH_CR0: [u64; 2] = [0x31, 0x30];
/// EFER.SVME: KVM sets it in every SEV-ES VMSA.
pub const EFER_SVME: u64 = 1 << 12;
/// EFER.LME/LMA: a 64-bit entry, which KVM cannot launch.
const EFER_LONG_MODE: u64 = (1 << 8) | (1 << 10);
/// CR4.MCE: KVM ORs the host's value in; SNP hosts have it set.
pub const CR4_MCE: u64 = 1 << 6;
/// CR0.CD and CR0.NW: KVM clears them.
const CR0_CD_NW: u64 = (1 << 30) | (1 << 29);
/// The architectural reset PAT.
pub const RESET_PAT: u64 = 0x0007_0406_0007_0406;
/// `sev_features` bit 0: SNP active.
pub const SEV_FEATURE_SNP: u64 = 1;

fn selector(selector: u16, attrib: u16, limit: u32, base: u64) -> SevSelector {
    SevSelector {
        selector,
        attrib,
        limit,
        base,
    }
}

/// The BSP's launch VMSA: 32-bit flat protected mode at `entry`, with the IGVM entry
/// magic in EAX and the parameter block's GPA in EBX (where PVH loaders pass theirs).
pub fn launch_vmsa(entry: u64, param_block_gpa: u64, sev_features: u64) -> SevVmsa {
    let mut vmsa = SevVmsa::new_zeroed();
    let code = selector(0x08, 0xc9b, 0xffff_ffff, 0);
    let data = selector(0x10, 0xc93, 0xffff_ffff, 0);
    vmsa.cs = code;
    vmsa.es = data;
    vmsa.ss = data;
    vmsa.ds = data;
    vmsa.fs = data;
    vmsa.gs = data;
    vmsa.gdtr = selector(0, 0, 0xffff, 0);
    vmsa.idtr = selector(0, 0, 0xffff, 0);
    vmsa.ldtr = selector(0, 0x82, 0xffff, 0);
    vmsa.tr = selector(0, 0x8b, 0xffff, 0);
    vmsa.efer = EFER_SVME;
    vmsa.cr4 = CR4_MCE;
    vmsa.cr0 = LAUNCH_CR0;
    vmsa.dr7 = 0x400;
    vmsa.dr6 = 0xffff_0ff0;
    vmsa.rflags = 0x2;
    vmsa.rip = entry;
    vmsa.rax = u64::from(svsm_protocol::igvm_params::IGVM_ENTRY_MAGIC);
    vmsa.rbx = param_block_gpa;
    vmsa.pat = RESET_PAT;
    vmsa.xcr0 = 0x1;
    vmsa.mxcsr = 0x1f80;
    vmsa.x87_fcw = 0x37f;
    vmsa.sev_features = SevFeatures::from(sev_features);
    vmsa
}

/// The reset-state VMSA KVM measures for a vCPU the IGVM file gives no context
/// (real mode at F000:FFF0, RDX = the CPUID family/model/stepping signature).
pub fn reset_vmsa(vcpu_signature: u32, sev_features: u64) -> SevVmsa {
    let mut vmsa = SevVmsa::new_zeroed();
    let data = selector(0, 0x93, 0xffff, 0);
    vmsa.es = data;
    vmsa.cs = selector(0xf000, 0x9b, 0xffff, 0xffff_0000);
    vmsa.ss = data;
    vmsa.ds = data;
    vmsa.fs = data;
    vmsa.gs = data;
    vmsa.gdtr = selector(0, 0, 0xffff, 0);
    vmsa.idtr = selector(0, 0, 0xffff, 0);
    vmsa.ldtr = selector(0, 0x82, 0xffff, 0);
    vmsa.tr = selector(0, 0x8b, 0xffff, 0);
    vmsa.efer = EFER_SVME;
    vmsa.cr4 = CR4_MCE;
    vmsa.cr0 = 0x10;
    vmsa.dr7 = 0x400;
    vmsa.dr6 = 0xffff_0ff0;
    vmsa.rflags = 0x2;
    vmsa.rip = 0xfff0;
    vmsa.pat = RESET_PAT;
    vmsa.rdx = u64::from(vcpu_signature);
    vmsa.xcr0 = 0x1;
    vmsa.mxcsr = 0x1f80;
    vmsa.x87_fcw = 0x37f;
    vmsa.sev_features = SevFeatures::from(sev_features);
    vmsa
}

/// The VMSA KVM measures for a vCPU whose IGVM context is `file`: QEMU's copied fields,
/// KVM's adjustments, and the VM's `sev_features`.
pub fn kvm_measured_vmsa(file: &SevVmsa, sev_features: u64) -> SevVmsa {
    let mut v = SevVmsa::new_zeroed();
    v.es = file.es;
    v.cs = file.cs;
    v.ss = file.ss;
    v.ds = file.ds;
    v.fs = file.fs;
    v.gs = file.gs;
    v.gdtr = file.gdtr;
    v.idtr = file.idtr;
    v.ldtr = file.ldtr;
    v.tr = file.tr;
    v.efer = file.efer | EFER_SVME;
    v.cr0 = file.cr0 & !CR0_CD_NW;
    v.cr3 = file.cr3;
    v.cr4 = file.cr4 | CR4_MCE;
    v.xcr0 = file.xcr0;
    v.pat = file.pat;
    v.dr6 = file.dr6;
    v.dr7 = file.dr7;
    v.rax = file.rax;
    v.rcx = file.rcx;
    v.rdx = file.rdx;
    v.rbx = file.rbx;
    v.rsp = file.rsp;
    v.rbp = file.rbp;
    v.rsi = file.rsi;
    v.rdi = file.rdi;
    v.r8 = file.r8;
    v.r9 = file.r9;
    v.r10 = file.r10;
    v.r11 = file.r11;
    v.r12 = file.r12;
    v.r13 = file.r13;
    v.r14 = file.r14;
    v.r15 = file.r15;
    v.rip = file.rip;
    v.rflags = file.rflags;
    v.x87_fcw = file.x87_fcw;
    v.mxcsr = file.mxcsr;
    v.sev_features = SevFeatures::from(sev_features);
    v
}

/// The VMSA as the 4 KiB page that is measured.
pub fn page_bytes(vmsa: &SevVmsa) -> [u8; 4096] {
    let mut page = [0u8; 4096];
    let bytes = vmsa.as_bytes();
    page[..bytes.len()].copy_from_slice(bytes);
    page
}

/// Checks the QEMU/KVM launch rules for one IGVM VMSA: at [`VMSA_GPA`], 32-bit protected
/// mode with an accepted CR0, VMPL0, SNP active, and nothing QEMU would refuse or drop.
pub fn check_launch_vmsa(gpa: u64, vmsa: &SevVmsa) -> Result<(), Error> {
    if gpa != VMSA_GPA {
        return Err(Error::Igvm(format!(
            "the launch VMSA is at GPA {gpa:#x}; QEMU/KVM require {VMSA_GPA:#x}"
        )));
    }
    if !ALLOWED_LAUNCH_CR0.contains(&vmsa.cr0) {
        return Err(Error::Igvm(format!(
            "the launch VMSA has CR0 {:#x}; KVM launches only CR0 0x31 or 0x30",
            vmsa.cr0
        )));
    }
    if vmsa.efer & EFER_LONG_MODE != 0 || vmsa.cs.attrib & 0x200 != 0 {
        return Err(Error::Igvm(
            "the launch VMSA enters in 64-bit mode; KVM requires a 32-bit entry".into(),
        ));
    }
    if vmsa.vmpl != 0 {
        return Err(Error::Igvm(format!(
            "the launch VMSA is for VMPL{}; the SVSM starts at VMPL0",
            vmsa.vmpl
        )));
    }
    if u64::from(vmsa.sev_features) & SEV_FEATURE_SNP == 0 {
        return Err(Error::Igvm(
            "the launch VMSA's sev_features lack SNP (bit 0)".into(),
        ));
    }
    // What the file says must be what is measured (no field QEMU drops or KVM changes).
    let normal = kvm_measured_vmsa(vmsa, u64::from(vmsa.sev_features));
    if normal.as_bytes() != vmsa.as_bytes() {
        return Err(Error::Igvm(
            "the launch VMSA sets fields QEMU does not pass on or KVM changes, so the \
             measured VMSA would differ from the file's"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_vmsa_is_in_kvm_normal_form() {
        let v = launch_vmsa(0x10_0000, 0x20_0000, 1);
        check_launch_vmsa(VMSA_GPA, &v).unwrap();
        let bytes = page_bytes(&v);
        assert_eq!(&bytes[0x158..0x160], &0x31u64.to_le_bytes(), "cr0 @0x158");
        assert_eq!(&bytes[0xD0..0xD8], &EFER_SVME.to_le_bytes(), "efer @0xD0");
        assert_eq!(
            &bytes[0x178..0x180],
            &0x10_0000u64.to_le_bytes(),
            "rip @0x178"
        );
        assert_eq!(
            &bytes[0x3B0..0x3B8],
            &1u64.to_le_bytes(),
            "sev_features @0x3B0"
        );
        assert_eq!(bytes[0xCA], 0, "vmpl @0xCA");
    }

    #[test]
    fn rejects_what_kvm_cannot_launch() {
        let mut v = launch_vmsa(0x10_0000, 0, 1);
        assert!(check_launch_vmsa(0x1000, &v).is_err());
        v.cr0 = 0x8000_0011;
        assert!(check_launch_vmsa(VMSA_GPA, &v)
            .unwrap_err()
            .to_string()
            .contains("CR0"));
        let mut v = launch_vmsa(0x10_0000, 0, 1);
        v.efer |= 1 << 10;
        assert!(check_launch_vmsa(VMSA_GPA, &v)
            .unwrap_err()
            .to_string()
            .contains("64-bit"));
        let mut v = launch_vmsa(0x10_0000, 0, 1);
        v.lstar = 5;
        assert!(check_launch_vmsa(VMSA_GPA, &v)
            .unwrap_err()
            .to_string()
            .contains("QEMU"));
        let v = launch_vmsa(0x10_0000, 0, 0);
        assert!(check_launch_vmsa(VMSA_GPA, &v)
            .unwrap_err()
            .to_string()
            .contains("SNP"));
    }

    #[test]
    fn kvm_applies_its_adjustments() {
        let mut v = launch_vmsa(0x10_0000, 0, 1);
        v.cr0 = 0x6000_0031;
        v.efer = 0;
        v.cr4 = 0;
        let m = kvm_measured_vmsa(&v, 0x21);
        assert_eq!(m.cr0, 0x31);
        assert_eq!(m.efer, EFER_SVME);
        assert_eq!(m.cr4, CR4_MCE);
        assert_eq!(u64::from(m.sev_features), 0x21);
    }
}
