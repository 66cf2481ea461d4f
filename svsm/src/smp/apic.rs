//! Interprocessor-interrupt encodings of the local APIC's interrupt command register.
//!
//! Intel SDM vol. 3A §11.6.1 "Interrupt Command Register (ICR)" (AMD APM vol. 2 §16.5
//! "Interprocessor Interrupts", same layout): bits 7:0 vector, 10:8 delivery mode
//! (000 fixed, 101 INIT, 110 start-up), 11 destination mode (0 physical), 12 delivery
//! status (xAPIC only), 14 level (1 assert), 15 trigger mode (0 edge), 19:18 shorthand.
//! The xAPIC takes the destination in ICR high bits 31:24 (register 0x310) and the
//! rest in ICR low (0x300; writing it sends); the x2APIC takes one 64-bit WRMSR to
//! MSR 0x830 with the 32-bit destination in bits 63:32 (Intel SDM §11.12.9 "ICR
//! Operation in x2APIC Mode"). Under SEV-SNP that WRMSR raises #VC (MSR intercept)
//! and reaches the hypervisor as a GHCB MSR exit (0x7C) with RCX = 0x830.

/// The x2APIC ICR MSR.
pub const X2APIC_ICR_MSR: u32 = 0x830;
/// The xAPIC ICR low register offset.
pub const XAPIC_ICR_LOW: u64 = 0x300;
/// The xAPIC ICR high register offset.
pub const XAPIC_ICR_HIGH: u64 = 0x310;
/// ICR bit 12: the xAPIC has not yet accepted the last IPI.
pub const ICR_DELIVERY_PENDING: u32 = 1 << 12;

const MODE_FIXED: u32 = 0b000 << 8;
const MODE_INIT: u32 = 0b101 << 8;
const MODE_STARTUP: u32 = 0b110 << 8;
const LEVEL_ASSERT: u32 = 1 << 14;
const TRIGGER_LEVEL: u32 = 1 << 15;

/// One interprocessor interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipi {
    /// A fixed interrupt with this vector (must be 16 or more: lower vectors are
    /// illegal for fixed delivery and set the APIC's "send illegal vector" error).
    Fixed(u8),
    /// INIT, level asserted.
    Init,
    /// INIT level de-assert (only needed by pre-Pentium-4 APICs; kept for the encoding
    /// test, the kernel does not send it).
    InitDeassert,
    /// Start-up IPI: the AP starts in real mode at `vector << 12`.
    Startup(u8),
}

/// Why an IPI cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpiError {
    /// Fixed delivery with a vector below 16.
    IllegalVector(u8),
    /// An xAPIC destination above 255.
    DestinationTooLarge(u32),
}

impl Ipi {
    /// ICR bits 31:0 (vector, delivery mode, level, trigger; physical destination, no
    /// shorthand).
    pub fn icr_low(self) -> Result<u32, IpiError> {
        Ok(match self {
            Ipi::Fixed(v) if v < 16 => return Err(IpiError::IllegalVector(v)),
            Ipi::Fixed(v) => MODE_FIXED | LEVEL_ASSERT | u32::from(v),
            Ipi::Init => MODE_INIT | LEVEL_ASSERT,
            Ipi::InitDeassert => MODE_INIT | TRIGGER_LEVEL,
            Ipi::Startup(page) => MODE_STARTUP | LEVEL_ASSERT | u32::from(page),
        })
    }

    /// The xAPIC pair (ICR high, ICR low) sending this IPI to `apic_id`; write the high
    /// half first, the low half sends.
    pub fn xapic(self, apic_id: u32) -> Result<(u32, u32), IpiError> {
        if apic_id > 0xFF {
            return Err(IpiError::DestinationTooLarge(apic_id));
        }
        Ok((apic_id << 24, self.icr_low()?))
    }

    /// The x2APIC ICR value (MSR 0x830) sending this IPI to `apic_id`.
    pub fn x2apic(self, apic_id: u32) -> Result<u64, IpiError> {
        Ok((u64::from(apic_id) << 32) | u64::from(self.icr_low()?))
    }
}

/// The SIPI vector that starts an AP at physical address `entry` (4 KiB aligned,
/// below 1 MiB), or `None` if it cannot be expressed.
pub fn startup_vector(entry: u64) -> Option<u8> {
    (entry % 4096 == 0 && entry < 0x10_0000)
        .then(|| u8::try_from(entry >> 12).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_the_icr_layout() {
        // Linux `apic_icr_write(APIC_INT_LEVELTRIG | APIC_INT_ASSERT | APIC_DM_INIT)`
        // uses the same bits; 0x4500 is the asserted INIT every MP start-up sends.
        assert_eq!(Ipi::Init.icr_low(), Ok(0x0000_4500));
        assert_eq!(Ipi::InitDeassert.icr_low(), Ok(0x0000_8500));
        // SIPI to 0x8000: vector 0x08, mode 110.
        assert_eq!(Ipi::Startup(0x08).icr_low(), Ok(0x0000_4608));
        assert_eq!(Ipi::Fixed(0xF0).icr_low(), Ok(0x0000_40F0));
        assert_eq!(Ipi::Fixed(0xF0).xapic(3), Ok((0x0300_0000, 0x40F0)));
        assert_eq!(Ipi::Init.xapic(0xFF), Ok((0xFF00_0000, 0x4500)));
        assert_eq!(Ipi::Fixed(0xF0).x2apic(0x1_0002), Ok(0x0001_0002_0000_40F0));
        assert_eq!(Ipi::Startup(0x9F).x2apic(1), Ok(0x0000_0001_0000_469F));
    }

    #[test]
    fn illegal_requests_are_refused() {
        for v in 0..16 {
            assert_eq!(Ipi::Fixed(v).icr_low(), Err(IpiError::IllegalVector(v)));
            assert_eq!(Ipi::Fixed(v).x2apic(1), Err(IpiError::IllegalVector(v)));
        }
        assert_eq!(
            Ipi::Init.xapic(256),
            Err(IpiError::DestinationTooLarge(256))
        );
        assert_eq!(startup_vector(0x8000), Some(8));
        assert_eq!(startup_vector(0x9_F000), Some(0x9F));
        assert_eq!(startup_vector(0x8001), None);
        assert_eq!(startup_vector(0x10_0000), None);
    }

    /// Under SEV-SNP the x2APIC ICR write traps (#VC, MSR exit) and the handler sends
    /// it to the hypervisor as a GHCB MSR exit: exit code 0x7C, exit_info_1 = 1
    /// (WRMSR), RCX = 0x830, RAX/RDX = the ICR value's halves (GHCB spec 56421,
    /// "MSR_PROT"; APM vol. 2 "#VC Exception").
    #[test]
    fn x2apic_ipi_under_snp_reaches_the_hypervisor_as_a_ghcb_msr_write() {
        use crate::snp::cpuid::CpuidPage;
        use crate::snp::hypervisor::HvClient;
        use crate::snp::vc::{handle_vc, VcRegisters, EXIT_MSR};
        use crate::snp::GhcbTransport;
        use std::sync::Mutex;
        use svsm_protocol::ghcb::{Ghcb, GhcbField};

        type Seen = (u64, u64, Option<u64>, Option<u64>, Option<u64>);
        struct Recorder(Mutex<Option<Seen>>);
        impl GhcbTransport for Recorder {
            fn msr_exchange(&self, _: u64) -> u64 {
                panic!("an ICR write is a GHCB page exit, not an MSR protocol request")
            }
            fn ghcb_exchange(&self, g: &mut Ghcb) {
                *self.0.lock().unwrap() = Some((
                    g.sw_exit_code,
                    g.sw_exit_info_1,
                    g.get_if_valid(GhcbField::Rcx),
                    g.get_if_valid(GhcbField::Rax),
                    g.get_if_valid(GhcbField::Rdx),
                ));
                g.sw_exit_info_1 = 0;
            }
        }
        let hv = HvClient::new(Recorder(Mutex::new(None)));
        let cpuid = CpuidPage::parse(&CpuidPage::encode(&[]).unwrap()).unwrap();
        let value = Ipi::Fixed(0xF0).x2apic(3).unwrap();
        let mut regs = VcRegisters {
            rax: value & 0xFFFF_FFFF,
            rdx: value >> 32,
            rcx: u64::from(X2APIC_ICR_MSR),
            ..Default::default()
        };
        // WRMSR is 0F 30: two bytes to skip.
        assert_eq!(
            handle_vc(EXIT_MSR, &[0x0F, 0x30], &mut regs, &cpuid, &hv),
            Ok(2)
        );
        assert_eq!(
            *hv.transport().0.lock().unwrap(),
            Some((0x7C, 1, Some(0x830), Some(0x40F0), Some(3)))
        );
    }
}
