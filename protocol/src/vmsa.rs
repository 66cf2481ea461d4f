//! The VM save area (VMSA) of an SEV-SNP vCPU.
//!
//! Layout of Linux's `struct sev_es_save_area` (`arch/x86/include/asm/svm.h`), which
//! follows the AMD64 APM vol. 2, table "VMSA Layout, State Save Area for SEV-ES" (B-4),
//! padded to the 4 KiB page the hardware uses. Native-endian `u64` fields: the VMSA is
//! an in-memory x86 structure, not a byte stream. The SVSM reads and writes the guest's
//! registers here when it services a call, checks `guest_exit_code`, `vmpl`, `efer`
//! and `sev_features` when a guest asks to create a vCPU, and clears `EFER.SVME` to keep
//! the hypervisor from running a vCPU.

use bitflags::bitflags;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::error::ParseError;

/// Size of a VMSA page.
pub const VMSA_SIZE: usize = 4096;
/// Size of the architectural part of the save area (Linux
/// `EXPECTED_SEV_ES_SAVE_AREA_SIZE`).
pub const VMSA_SAVE_AREA_SIZE: usize = 0x670;

/// EFER.SVME (bit 12): a VMSA whose EFER lacks it cannot run.
pub const EFER_SVME: u64 = 1 << 12;
/// `guest_exit_code` of a vCPU that left with VMGEXIT (`SVM_EXIT_VMGEXIT`).
pub const SVM_EXIT_VMGEXIT: u64 = 0x403;

bitflags! {
    /// `sev_features` bits (Linux `SVM_SEV_FEAT_*`; the SEV_STATUS MSR 0xC0010131 holds
    /// the same bits shifted left by 2, Linux `MSR_AMD64_SNP_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SevFeatures: u64 {
        /// SNP is active (bit 0).
        const SNP_ACTIVE = 1 << 0;
        /// Virtual TOM (bit 1).
        const VTOM = 1 << 1;
        /// Reflect #VC (bit 2).
        const REFLECT_VC = 1 << 2;
        /// Restricted injection (bit 3).
        const RESTRICTED_INJECTION = 1 << 3;
        /// Alternate injection (bit 4).
        const ALTERNATE_INJECTION = 1 << 4;
        /// Debug register swap (bit 5).
        const DEBUG_SWAP = 1 << 5;
        /// Prevent host IBS (bit 6).
        const PREVENT_HOST_IBS = 1 << 6;
        /// BTB isolation (bit 7).
        const BTB_ISOLATION = 1 << 7;
        /// VMPL supervisor shadow stack (bit 8).
        const VMPL_SSS = 1 << 8;
        /// Secure TSC (bit 9).
        const SECURE_TSC = 1 << 9;
        /// VMGEXIT parameter (bit 10).
        const VMGEXIT_PARAMETER = 1 << 10;
        /// IBS virtualization (bit 12).
        const IBS_VIRTUALIZATION = 1 << 12;
        /// VMSA register protection (bit 14).
        const VMSA_REG_PROTECTION = 1 << 14;
        /// SMT protection (bit 15).
        const SMT_PROTECTION = 1 << 15;
        /// Secure AVIC (bit 16).
        const SECURE_AVIC = 1 << 16;
        /// IBPB on entry (bit 21).
        const IBPB_ON_ENTRY = 1 << 21;
    }
}

impl SevFeatures {
    /// The features of a SEV_STATUS MSR value (bits 2 and up).
    pub const fn from_sev_status(msr: u64) -> Self {
        Self::from_bits_retain(msr >> 2)
    }
}

/// A segment register in the save area (Linux `struct vmcb_seg`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VmsaSegment {
    /// Selector.
    pub selector: u16,
    /// Attributes (VMCB compressed format).
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

const _: () = assert!(core::mem::size_of::<VmsaSegment>() == 16);

/// The VMSA page (APM vol. 2 table B-4; Linux `struct sev_es_save_area`).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
#[expect(
    missing_docs,
    reason = "field names are the APM's and Linux's; the module docs say where to look"
)]
pub struct Vmsa {
    pub es: VmsaSegment,
    pub cs: VmsaSegment,
    pub ss: VmsaSegment,
    pub ds: VmsaSegment,
    pub fs: VmsaSegment,
    pub gs: VmsaSegment,
    pub gdtr: VmsaSegment,
    pub ldtr: VmsaSegment,
    pub idtr: VmsaSegment,
    pub tr: VmsaSegment,
    pub pl0_ssp: u64,
    pub pl1_ssp: u64,
    pub pl2_ssp: u64,
    pub pl3_ssp: u64,
    pub u_cet: u64,
    pub reserved_0xc8: [u8; 2],
    /// VMPL this VMSA runs at.
    pub vmpl: u8,
    pub cpl: u8,
    pub reserved_0xcc: [u8; 4],
    /// EFER; [`EFER_SVME`] must be set for the vCPU to run.
    pub efer: u64,
    pub reserved_0xd8: [u8; 104],
    pub xss: u64,
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    pub dr0: u64,
    pub dr1: u64,
    pub dr2: u64,
    pub dr3: u64,
    pub dr0_addr_mask: u64,
    pub dr1_addr_mask: u64,
    pub dr2_addr_mask: u64,
    pub dr3_addr_mask: u64,
    pub reserved_0x1c0: [u8; 24],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    pub reserved_0x248: [u8; 32],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    pub reserved_0x298: [u8; 80],
    pub pkru: u32,
    pub tsc_aux: u32,
    pub tsc_scale: u64,
    pub tsc_offset: u64,
    pub reserved_0x300: [u8; 8],
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub reserved_0x320: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub reserved_0x380: [u8; 16],
    pub guest_exit_info_1: u64,
    pub guest_exit_info_2: u64,
    pub guest_exit_int_info: u64,
    pub guest_nrip: u64,
    /// SEV features of this vCPU ([`SevFeatures`]).
    pub sev_features: u64,
    pub vintr_ctrl: u64,
    /// Why the vCPU last exited; [`SVM_EXIT_VMGEXIT`] for a VMGEXIT.
    pub guest_exit_code: u64,
    pub virtual_tom: u64,
    pub tlb_id: u64,
    pub pcpu_id: u64,
    pub event_inj: u64,
    pub xcr0: u64,
    pub reserved_0x3f0: [u8; 16],
    pub x87_dp: u64,
    pub mxcsr: u32,
    pub x87_ftw: u16,
    pub x87_fsw: u16,
    pub x87_fcw: u16,
    pub x87_fop: u16,
    pub x87_ds: u16,
    pub x87_cs: u16,
    pub x87_rip: u64,
    pub fpreg_x87: [u8; 80],
    pub fpreg_xmm: [u8; 256],
    pub fpreg_ymm: [u8; 256],
    /// Rest of the page.
    pub reserved_0x670: [u8; VMSA_SIZE - VMSA_SAVE_AREA_SIZE],
}

const _: () = assert!(core::mem::size_of::<Vmsa>() == VMSA_SIZE);
const _: () = assert!(core::mem::offset_of!(Vmsa, pl0_ssp) == 0xA0);
const _: () = assert!(core::mem::offset_of!(Vmsa, vmpl) == 0xCA);
const _: () = assert!(core::mem::offset_of!(Vmsa, cpl) == 0xCB);
const _: () = assert!(core::mem::offset_of!(Vmsa, efer) == 0xD0);
const _: () = assert!(core::mem::offset_of!(Vmsa, xss) == 0x140);
const _: () = assert!(core::mem::offset_of!(Vmsa, cr4) == 0x148);
const _: () = assert!(core::mem::offset_of!(Vmsa, cr3) == 0x150);
const _: () = assert!(core::mem::offset_of!(Vmsa, cr0) == 0x158);
const _: () = assert!(core::mem::offset_of!(Vmsa, rflags) == 0x170);
const _: () = assert!(core::mem::offset_of!(Vmsa, rip) == 0x178);
const _: () = assert!(core::mem::offset_of!(Vmsa, reserved_0x1c0) == 0x1C0);
const _: () = assert!(core::mem::offset_of!(Vmsa, rsp) == 0x1D8);
const _: () = assert!(core::mem::offset_of!(Vmsa, rax) == 0x1F8);
const _: () = assert!(core::mem::offset_of!(Vmsa, reserved_0x248) == 0x248);
const _: () = assert!(core::mem::offset_of!(Vmsa, g_pat) == 0x268);
const _: () = assert!(core::mem::offset_of!(Vmsa, reserved_0x298) == 0x298);
const _: () = assert!(core::mem::offset_of!(Vmsa, pkru) == 0x2E8);
const _: () = assert!(core::mem::offset_of!(Vmsa, reserved_0x300) == 0x300);
const _: () = assert!(core::mem::offset_of!(Vmsa, rcx) == 0x308);
const _: () = assert!(core::mem::offset_of!(Vmsa, rdx) == 0x310);
const _: () = assert!(core::mem::offset_of!(Vmsa, rbx) == 0x318);
const _: () = assert!(core::mem::offset_of!(Vmsa, reserved_0x320) == 0x320);
const _: () = assert!(core::mem::offset_of!(Vmsa, r8) == 0x340);
const _: () = assert!(core::mem::offset_of!(Vmsa, r9) == 0x348);
const _: () = assert!(core::mem::offset_of!(Vmsa, reserved_0x380) == 0x380);
const _: () = assert!(core::mem::offset_of!(Vmsa, guest_exit_info_1) == 0x390);
const _: () = assert!(core::mem::offset_of!(Vmsa, sev_features) == 0x3B0);
const _: () = assert!(core::mem::offset_of!(Vmsa, vintr_ctrl) == 0x3B8);
const _: () = assert!(core::mem::offset_of!(Vmsa, guest_exit_code) == 0x3C0);
const _: () = assert!(core::mem::offset_of!(Vmsa, virtual_tom) == 0x3C8);
const _: () = assert!(core::mem::offset_of!(Vmsa, xcr0) == 0x3E8);
const _: () = assert!(core::mem::offset_of!(Vmsa, reserved_0x3f0) == 0x3F0);
const _: () = assert!(core::mem::offset_of!(Vmsa, x87_dp) == 0x400);
const _: () = assert!(core::mem::offset_of!(Vmsa, fpreg_ymm) == 0x570);
const _: () = assert!(core::mem::offset_of!(Vmsa, reserved_0x670) == VMSA_SAVE_AREA_SIZE);

/// The SVSM call registers as they sit in a VMSA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallRegisters {
    /// RAX: call code in, result code out.
    pub rax: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
}

impl Vmsa {
    /// An all-zero VMSA.
    pub fn zeroed() -> Self {
        <Self as FromZeros>::new_zeroed()
    }

    /// Reads a VMSA from a 4 KiB page (any alignment).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        Self::read_from_prefix(bytes)
            .map(|(v, _)| v)
            .map_err(|_| ParseError::ShortBuffer {
                need: VMSA_SIZE,
                got: bytes.len(),
            })
    }

    /// Whether the vCPU last exited with VMGEXIT (the only state in which the SVSM
    /// services a call).
    pub fn exited_with_vmgexit(&self) -> bool {
        self.guest_exit_code == SVM_EXIT_VMGEXIT
    }

    /// Whether EFER.SVME is set (the vCPU may run).
    pub fn is_runnable(&self) -> bool {
        self.efer & EFER_SVME != 0
    }

    /// Sets or clears EFER.SVME.
    pub fn set_runnable(&mut self, runnable: bool) {
        if runnable {
            self.efer |= EFER_SVME;
        } else {
            self.efer &= !EFER_SVME;
        }
    }

    /// The SEV features, keeping bits this crate has no name for.
    pub fn features(&self) -> SevFeatures {
        SevFeatures::from_bits_retain(self.sev_features)
    }

    /// The call registers.
    pub fn call_registers(&self) -> CallRegisters {
        CallRegisters {
            rax: self.rax,
            rcx: self.rcx,
            rdx: self.rdx,
            r8: self.r8,
            r9: self.r9,
        }
    }

    /// Writes the output registers of a call (RAX, RCX, RDX, R8; R9 is input only).
    pub fn set_call_results(&mut self, out: &CallRegisters) {
        self.rax = out.rax;
        self.rcx = out.rcx;
        self.rdx = out.rdx;
        self.r8 = out.r8;
    }
}

impl core::fmt::Debug for Vmsa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vmsa")
            .field("vmpl", &self.vmpl)
            .field("efer", &format_args!("{:#x}", self.efer))
            .field("rip", &format_args!("{:#x}", self.rip))
            .field("sev_features", &format_args!("{:#x}", self.sev_features))
            .field(
                "guest_exit_code",
                &format_args!("{:#x}", self.guest_exit_code),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(page: &mut [u8], offset: usize, value: u64) {
        page[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn fields_at_linux_offsets() {
        let mut page = [0u8; VMSA_SIZE];
        page[0xCA] = 2;
        put(&mut page, 0xD0, EFER_SVME | 0x500);
        put(&mut page, 0x178, 0xFFF0);
        put(&mut page, 0x1F8, 0x0000_0002_0000_0001);
        put(&mut page, 0x308, 0x1111);
        put(&mut page, 0x310, 0x2222);
        put(&mut page, 0x340, 0x3333);
        put(&mut page, 0x348, 0x4444);
        put(&mut page, 0x3B0, 0x21);
        put(&mut page, 0x3C0, 0x403);
        put(&mut page, 0x3E8, 1);
        let v = Vmsa::parse(&page).unwrap();
        assert_eq!(v.vmpl, 2);
        assert!(v.is_runnable());
        assert_eq!(v.rip, 0xFFF0);
        assert!(v.exited_with_vmgexit());
        assert_eq!(
            v.call_registers(),
            CallRegisters {
                rax: 0x0000_0002_0000_0001,
                rcx: 0x1111,
                rdx: 0x2222,
                r8: 0x3333,
                r9: 0x4444
            }
        );
        assert_eq!(
            v.features(),
            SevFeatures::SNP_ACTIVE | SevFeatures::DEBUG_SWAP
        );
        assert_eq!(v.xcr0, 1);
        assert_eq!(v.as_bytes(), &page[..]);
    }

    #[test]
    fn svme_toggles_only_bit_12() {
        let mut v = Vmsa::zeroed();
        v.efer = 0x500 | EFER_SVME;
        v.set_runnable(false);
        assert_eq!(v.efer, 0x500);
        assert!(!v.is_runnable());
        v.set_runnable(true);
        assert_eq!(v.efer, 0x1500);
        assert_eq!(&v.as_bytes()[0xD0..0xD8], &0x1500u64.to_le_bytes());
    }

    #[test]
    fn call_results_written_back() {
        let mut v = Vmsa::zeroed();
        v.r9 = 9;
        v.set_call_results(&CallRegisters {
            rax: 0x8000_0005,
            rcx: 1,
            rdx: 2,
            r8: 3,
            r9: 99,
        });
        let b = v.as_bytes();
        assert_eq!(&b[0x1F8..0x200], &0x8000_0005u64.to_le_bytes());
        assert_eq!(&b[0x308..0x310], &1u64.to_le_bytes());
        assert_eq!(&b[0x310..0x318], &2u64.to_le_bytes());
        assert_eq!(&b[0x340..0x348], &3u64.to_le_bytes());
        // R9 is not an output register.
        assert_eq!(v.r9, 9);
    }

    #[test]
    fn not_vmgexit_is_detected() {
        let mut v = Vmsa::zeroed();
        v.guest_exit_code = 0x7B;
        assert!(!v.exited_with_vmgexit());
    }

    #[test]
    fn short_page_is_rejected() {
        let page = [0u8; VMSA_SIZE - 1];
        assert_eq!(
            Vmsa::parse(&page).err(),
            Some(ParseError::ShortBuffer {
                need: 4096,
                got: 4095
            })
        );
    }

    #[test]
    fn sev_feature_values() {
        assert_eq!(SevFeatures::SNP_ACTIVE.bits(), 1);
        assert_eq!(SevFeatures::RESTRICTED_INJECTION.bits(), 8);
        assert_eq!(SevFeatures::DEBUG_SWAP.bits(), 0x20);
        assert_eq!(SevFeatures::SECURE_TSC.bits(), 0x200);
        // SEV_STATUS bit 2 (SNP enabled) is sev_features bit 0.
        assert_eq!(
            SevFeatures::from_sev_status(0b111 | (1 << 7)),
            SevFeatures::SNP_ACTIVE | SevFeatures::DEBUG_SWAP
        );
    }
}
