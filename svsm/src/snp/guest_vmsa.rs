//! The guest's boot VMSA: the x86 reset state at the guest VMPL, with the guest's SEV
//! features.
//!
//! The register values are the processor's reset state (AMD APM vol. 2,
//! "Processor Initialization State"; the values COCONUT-SVSM and KVM use): real mode, CS selector 0xF000 with
//! base 0xFFFF_0000 and IP 0xFFF0 (the reset vector 0xFFFF_FFF0 where OVMF's
//! `ResetVector` starts), CR0 0x6000_0010, RFLAGS 2, DR6 0xFFFF_0FF0, DR7 0x400, PAT
//! 0x0007_0406_0007_0406, XCR0 1, MXCSR 0x1F80, x87 FCW 0x40 and tag word 0x5555 (the
//! VMSA's abridged encoding of an empty x87 stack). EFER.SVME is set because the
//! hardware runs only VMSAs that have it (APM vol. 2 "VMSA"). The layout is the
//! protocol crate's [`Vmsa`] (Linux `struct sev_es_save_area`).
//!
//! SEV features (`sev_features`, the SEV_STATUS MSR bits shifted down by 2): the guest
//! gets the SVSM's own features minus restricted injection (the guest at VMPL2 takes
//! interrupts from the hypervisor directly) and minus debug-swap (the guest may expect
//! to reach debug registers through the GHCB); alternate injection only when the SVSM
//! offers an APIC protocol that injects on the guest's behalf.

use svsm_protocol::vmsa::{SevFeatures, Vmsa, VmsaSegment, EFER_SVME};

use crate::platform::Vmpl;

/// The x86 reset vector.
pub const RESET_VECTOR: u64 = 0xFFFF_FFF0;
/// CR0 at reset: CD, NW, ET.
pub const RESET_CR0: u64 = 0x6000_0010;
/// PAT at reset.
pub const RESET_PAT: u64 = 0x0007_0406_0007_0406;

/// Real-mode code segment attributes: present, code, readable, accessed (0x9B).
const CODE_ATTRIB: u16 = 0x9B;
/// Real-mode data segment attributes: present, data, writable, accessed (0x93).
const DATA_ATTRIB: u16 = 0x93;
/// LDT attributes at reset: present, LDT (0x82).
const LDT_ATTRIB: u16 = 0x82;
/// TR attributes at reset: present, busy 32-bit TSS (0x8B).
const TR_ATTRIB: u16 = 0x8B;

/// The SEV features a guest VMSA gets, from the SVSM's own (SEV_STATUS >> 2).
pub fn guest_sev_features(svsm: SevFeatures, apic_protocol: bool) -> SevFeatures {
    let mut features = svsm;
    features.remove(SevFeatures::RESTRICTED_INJECTION | SevFeatures::DEBUG_SWAP);
    features.set(SevFeatures::ALTERNATE_INJECTION, apic_protocol);
    features
}

/// The reset-state VMSA for a vCPU at `vmpl` that starts at `reset_address` (the
/// reset vector, or the address the firmware's metadata names), with `features`.
pub fn reset_vmsa(reset_address: u64, vmpl: Vmpl, features: SevFeatures) -> Vmsa {
    let data = VmsaSegment {
        selector: 0,
        attrib: DATA_ATTRIB,
        limit: 0xFFFF,
        base: 0,
    };
    let system = |attrib| VmsaSegment {
        selector: 0,
        attrib,
        limit: 0xFFFF,
        base: 0,
    };
    let mut v = Vmsa::zeroed();
    v.cs = VmsaSegment {
        selector: 0xF000,
        attrib: CODE_ATTRIB,
        limit: 0xFFFF,
        base: reset_address & 0xFFFF_0000,
    };
    v.rip = reset_address & 0xFFFF;
    v.ds = data;
    v.es = data;
    v.fs = data;
    v.gs = data;
    v.ss = data;
    v.gdtr = system(0);
    v.idtr = system(0);
    v.ldtr = system(LDT_ATTRIB);
    v.tr = system(TR_ATTRIB);
    v.cr0 = RESET_CR0;
    set_reset_flags_debug_fpu(&mut v);
    v.efer = EFER_SVME;
    v.vmpl = vmpl.level();
    v.sev_features = features.bits();
    v
}

/// The reset values of RFLAGS, DR6, DR7, PAT, XCR0, MXCSR and the x87 control and tag
/// words: what every VMSA the SVSM builds starts from, whatever mode it then runs in.
pub fn set_reset_flags_debug_fpu(v: &mut Vmsa) {
    v.rflags = 0x2;
    v.dr6 = 0xFFFF_0FF0;
    v.dr7 = 0x400;
    v.g_pat = RESET_PAT;
    v.xcr0 = 1;
    v.mxcsr = 0x1F80;
    v.x87_ftw = 0x5555;
    v.x87_fcw = 0x40;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;
    use zerocopy::IntoBytes;

    #[test]
    fn vmsa_offsets_match_linux_sev_es_save_area() {
        // arch/x86/include/asm/svm.h, struct sev_es_save_area.
        assert_eq!(offset_of!(Vmsa, cs), 0x10);
        assert_eq!(offset_of!(Vmsa, gdtr), 0x60);
        assert_eq!(offset_of!(Vmsa, ldtr), 0x70);
        assert_eq!(offset_of!(Vmsa, idtr), 0x80);
        assert_eq!(offset_of!(Vmsa, tr), 0x90);
        assert_eq!(offset_of!(Vmsa, vmpl), 0xCA);
        assert_eq!(offset_of!(Vmsa, efer), 0xD0);
        assert_eq!(offset_of!(Vmsa, cr0), 0x158);
        assert_eq!(offset_of!(Vmsa, dr7), 0x160);
        assert_eq!(offset_of!(Vmsa, dr6), 0x168);
        assert_eq!(offset_of!(Vmsa, rflags), 0x170);
        assert_eq!(offset_of!(Vmsa, rip), 0x178);
        assert_eq!(offset_of!(Vmsa, g_pat), 0x268);
        assert_eq!(offset_of!(Vmsa, sev_features), 0x3B0);
        assert_eq!(offset_of!(Vmsa, guest_exit_code), 0x3C0);
        assert_eq!(offset_of!(Vmsa, xcr0), 0x3E8);
        assert_eq!(offset_of!(Vmsa, mxcsr), 0x408);
        assert_eq!(offset_of!(Vmsa, x87_ftw), 0x40C);
        assert_eq!(offset_of!(Vmsa, x87_fcw), 0x410);
    }

    #[test]
    fn reset_state_is_the_apm_reset_state_at_vmpl2() {
        let v = reset_vmsa(RESET_VECTOR, Vmpl::new(2).unwrap(), SevFeatures::SNP_ACTIVE);
        let bytes = v.as_bytes();
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        // CS: selector 0xF000, attrib 0x9B, limit 0xFFFF, base 0xFFFF0000; RIP 0xFFF0.
        assert_eq!(&bytes[0x10..0x12], &0xF000u16.to_le_bytes());
        assert_eq!(&bytes[0x12..0x14], &0x9Bu16.to_le_bytes());
        assert_eq!(u64_at(0x18), 0xFFFF_0000);
        assert_eq!(u64_at(0x178), 0xFFF0);
        assert_eq!(bytes[0xCA], 2);
        assert_eq!(u64_at(0xD0), 0x1000);
        assert_eq!(u64_at(0x158), 0x6000_0010);
        assert_eq!(u64_at(0x170), 2);
        assert_eq!(u64_at(0x3B0), 1);
        assert_eq!(u64_at(0x3E8), 1);
        assert_eq!(v.ldtr.attrib, 0x82);
        assert_eq!(v.tr.attrib, 0x8B);
        assert!(v.is_runnable());
        // A firmware-provided start address below 4 GiB splits the same way.
        let v = reset_vmsa(0x8_1234, Vmpl::new(2).unwrap(), SevFeatures::SNP_ACTIVE);
        assert_eq!((v.cs.base, v.rip), (0x8_0000, 0x1234));
    }

    #[test]
    fn guest_features_drop_restricted_injection_and_debug_swap() {
        let svsm = SevFeatures::SNP_ACTIVE
            | SevFeatures::RESTRICTED_INJECTION
            | SevFeatures::DEBUG_SWAP
            | SevFeatures::PREVENT_HOST_IBS
            | SevFeatures::ALTERNATE_INJECTION;
        assert_eq!(
            guest_sev_features(svsm, false),
            SevFeatures::SNP_ACTIVE | SevFeatures::PREVENT_HOST_IBS
        );
        assert_eq!(
            guest_sev_features(svsm, true),
            SevFeatures::SNP_ACTIVE
                | SevFeatures::PREVENT_HOST_IBS
                | SevFeatures::ALTERNATE_INJECTION
        );
        // From the SEV_STATUS MSR: bit 0 SEV, 1 SEV-ES, 2 SNP, 5 restricted injection (3 + 2).
        let status = 0b10_0111u64;
        assert_eq!(
            guest_sev_features(SevFeatures::from_sev_status(status), false),
            SevFeatures::SNP_ACTIVE
        );
    }

    #[test]
    fn no_svsm_feature_set_gives_the_guest_restricted_injection_or_debug_swap() {
        // Every combination of the 16 low SEV feature bits: restricted injection and
        // debug-swap never reach the guest; alternate injection only with an APIC
        // protocol (this SVSM offers none, so its launch passes `false`); every other
        // bit is the SVSM's own.
        let dropped = SevFeatures::RESTRICTED_INJECTION
            | SevFeatures::DEBUG_SWAP
            | SevFeatures::ALTERNATE_INJECTION;
        for bits in 0..=0xFFFFu64 {
            let svsm = SevFeatures::from_bits_retain(bits);
            let guest = guest_sev_features(svsm, false);
            assert!(!guest.intersects(dropped), "{bits:#x}");
            assert_eq!(guest.bits(), bits & !dropped.bits(), "{bits:#x}");
            let with_apic = guest_sev_features(svsm, true);
            assert_eq!(
                with_apic,
                guest | SevFeatures::ALTERNATE_INJECTION,
                "{bits:#x}"
            );
        }
        // The bit positions (SEV_STATUS >> 2): restricted injection 3, alternate 4,
        // debug-swap 5.
        assert_eq!(SevFeatures::RESTRICTED_INJECTION.bits(), 1 << 3);
        assert_eq!(SevFeatures::ALTERNATE_INJECTION.bits(), 1 << 4);
        assert_eq!(SevFeatures::DEBUG_SWAP.bits(), 1 << 5);
    }
}
