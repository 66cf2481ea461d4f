//! The x2APIC through its MSRs: IPIs (ICR, MSR 0x830).
//!
//! Intel SDM vol. 3A §11.12 "Extended XAPIC (x2APIC)"; AMD APM vol. 2 "x2APIC".
//! Under SEV-SNP every WRMSR to these raises #VC (the MSRs are intercepted) and the
//! handler forwards it to the hypervisor through the GHCB (exit 0x7C, RCX = MSR).
#![allow(unsafe_code, reason = "x2APIC MSR writes")]

use x86_64::registers::model_specific::Msr;

use crate::smp::apic::{Ipi, X2APIC_ICR_MSR};
use crate::smp::{IpiSend, SmpError};

/// Sends IPIs through the x2APIC ICR (MSR 0x830). Under SEV-SNP the WRMSR raises #VC
/// and the handler forwards it to the hypervisor through the GHCB (exit 0x7C).
#[derive(Debug, Default)]
pub struct X2ApicIpi;

impl IpiSend for X2ApicIpi {
    fn send(&self, apic_id: u32, vector: u8) -> Result<(), SmpError> {
        let value = Ipi::Fixed(vector)
            .x2apic(apic_id)
            .map_err(|_| SmpError::Ipi(apic_id))?;
        let mut msr = Msr::new(X2APIC_ICR_MSR);
        // SAFETY: a write to the x2APIC ICR (Intel SDM vol. 3A §11.12.9) sends one fixed
        // IPI and touches no memory; the caller runs with the x2APIC enabled (or under
        // SEV-SNP, where the write is intercepted and emulated by the hypervisor).
        unsafe { msr.write(value) };
        Ok(())
    }
}
