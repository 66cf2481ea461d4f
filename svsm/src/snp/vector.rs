//! What each of the 256 vectors means when it arrives at the SVSM.
//!
//! Without restricted injection (APM vol. 2 "Restricted Injection") the
//! hypervisor can inject any vector at any time, including exception vectors the CPU
//! did not raise. The kernel installs a handler on all 256 IDT entries (each on an IST
//! stack) and asks [`classify`] what to do: resolve a #VC, take the #HV doorbell only
//! when restricted injection was negotiated, ignore NMIs and interrupts nobody
//! expects (logging them), and terminate with a reason on a fault the SVSM cannot
//! continue after. No vector panics.

use super::{SnpError, TerminateReason};

/// #VC.
pub const VECTOR_VC: u8 = 29;
/// #HV (the restricted-injection doorbell).
pub const VECTOR_HV: u8 = 28;
/// NMI.
pub const VECTOR_NMI: u8 = 2;
/// #MC.
pub const VECTOR_MC: u8 = 18;
/// First vector of external interrupts.
pub const FIRST_EXTERNAL: u8 = 32;

/// How interrupts reach this SVSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterruptConfig {
    /// Restricted injection is negotiated and this vCPU's #HV doorbell is registered
    /// ([`super::doorbell`]): the hardware lets the hypervisor inject only #HV, and a
    /// #HV means the doorbell has events. Without it a #HV is spurious.
    pub restricted_injection: bool,
    /// External vectors the SVSM programmed (e.g. its APIC timer).
    pub expected: [Option<u8>; 4],
}

/// What to do with a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorAction {
    /// Resolve the #VC ([`super::vc::handle_vc`]).
    HandleVc,
    /// Process the #HV doorbell page.
    HvDoorbell,
    /// Run the handler the SVSM registered for this external vector.
    Dispatch(u8),
    /// Nobody expects this vector: log it and return.
    Spurious(u8),
    /// Terminate with this error.
    Fatal(SnpError),
}

/// The action for `vector`.
pub fn classify(vector: u8, config: &InterruptConfig) -> VectorAction {
    match vector {
        VECTOR_VC => VectorAction::HandleVc,
        VECTOR_HV if config.restricted_injection => VectorAction::HvDoorbell,
        // NMIs and a #HV without restricted injection can only come from the hypervisor:
        // nothing in the SVSM raises them.
        VECTOR_NMI | VECTOR_HV => VectorAction::Spurious(vector),
        // Debug traps and breakpoints: the SVSM uses neither; an injected one is noise.
        1 | 3 => VectorAction::Spurious(vector),
        0..FIRST_EXTERNAL => VectorAction::Fatal(SnpError::FatalVector(vector)),
        _ if config.expected.contains(&Some(vector)) => VectorAction::Dispatch(vector),
        _ => VectorAction::Spurious(vector),
    }
}

/// The termination reason for a fatal vector.
pub fn fatal_reason(vector: u8) -> TerminateReason {
    SnpError::FatalVector(vector).termination_reason()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vector_has_a_defined_action() {
        let config = InterruptConfig {
            restricted_injection: false,
            expected: [Some(0x30), None, None, None],
        };
        for vector in 0..=255u8 {
            let action = classify(vector, &config);
            match vector {
                29 => assert_eq!(action, VectorAction::HandleVc),
                1 | 2 | 3 | 28 => assert_eq!(action, VectorAction::Spurious(vector)),
                0 | 4..=27 | 30 | 31 => {
                    assert_eq!(action, VectorAction::Fatal(SnpError::FatalVector(vector)))
                }
                0x30 => assert_eq!(action, VectorAction::Dispatch(0x30)),
                _ => assert_eq!(action, VectorAction::Spurious(vector)),
            }
        }
        assert_eq!(fatal_reason(14), TerminateReason { set: 3, code: 10 });
    }

    #[test]
    fn hv_doorbell_only_with_restricted_injection() {
        let on = InterruptConfig {
            restricted_injection: true,
            ..Default::default()
        };
        assert_eq!(classify(28, &on), VectorAction::HvDoorbell);
        assert_eq!(
            classify(28, &InterruptConfig::default()),
            VectorAction::Spurious(28)
        );
    }
}

/// What the vector handler did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorOutcome {
    /// A #VC was resolved: skip this many instruction bytes and resume.
    Resumed(usize),
    /// The vector was noise and was ignored.
    Ignored(u8),
    /// The #HV doorbell is to be processed.
    Doorbell,
    /// The registered handler of this external vector is to run.
    Dispatched(u8),
}

/// The common body of all 256 IDT handlers: classify the vector and, for #VC, resolve
/// it. An `Err` means the caller terminates with [`SnpError::termination_reason`].
pub fn handle_vector<T: super::GhcbTransport>(
    vector: u8,
    error_code: u64,
    insn: &[u8],
    regs: &mut super::vc::VcRegisters,
    config: &InterruptConfig,
    cpuid: &super::cpuid::CpuidPage,
    hv: &super::hypervisor::HvClient<T>,
) -> Result<VectorOutcome, SnpError> {
    match classify(vector, config) {
        VectorAction::HandleVc => {
            super::vc::handle_vc(error_code, insn, regs, cpuid, hv).map(VectorOutcome::Resumed)
        }
        VectorAction::HvDoorbell => Ok(VectorOutcome::Doorbell),
        VectorAction::Dispatch(v) => Ok(VectorOutcome::Dispatched(v)),
        VectorAction::Spurious(v) => {
            log::warn!("snp: ignoring unexpected vector {v}");
            Ok(VectorOutcome::Ignored(v))
        }
        VectorAction::Fatal(e) => Err(e),
    }
}
