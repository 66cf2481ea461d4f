//! The x2APIC through its MSRs: IPIs (ICR, MSR 0x830) and end-of-interrupt (MSR 0x80B).
//!
//! Intel SDM vol. 3A §11.12 "Extended XAPIC (x2APIC)"; AMD APM vol. 2 "x2APIC".
//! Under SEV-SNP every WRMSR to these raises #VC (the MSRs are intercepted) and the
//! handler forwards it to the hypervisor through the GHCB (exit 0x7C, RCX = MSR).
#![allow(unsafe_code, reason = "x2APIC MSR writes")]

use x86_64::registers::model_specific::Msr;

use crate::smp::apic::{Ipi, X2APIC_ICR_MSR};
use crate::smp::{IpiSend, SmpError};

/// The x2APIC EOI MSR.
pub const X2APIC_EOI_MSR: u32 = 0x80B;

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

/// Signals end-of-interrupt to the x2APIC (a write of 0 to MSR 0x80B).
pub fn end_of_interrupt() {
    let mut msr = Msr::new(X2APIC_EOI_MSR);
    // SAFETY: the EOI write (Intel SDM vol. 3A §11.12.1.2, the x2APIC register
    // table) only retires the interrupt in service; under SEV-SNP it is intercepted
    // and emulated.
    unsafe { msr.write(0) };
}
