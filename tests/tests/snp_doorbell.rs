//! Restricted injection and the #HV doorbell on the emulated SEV-SNP machine, against an
//! honest and a hostile hypervisor.
//!
//! The SVSM registers a doorbell only when restricted injection is negotiated (active in
//! SEV_STATUS and announced by the hypervisor); a registration answered wrongly is a
//! typed error with its termination reason; any pending-events word the hypervisor
//! writes, and any of the 256 vectors it injects, with and without restricted
//! injection, has the outcome `svsm::snp::doorbell` and `svsm::snp::vector` document.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use svsm::snp::doorbell::{DoorbellError, DoorbellReport, MAX_ROUNDS, X2APIC_EOI_MSR};
use svsm::snp::vc::VcError;
use svsm::snp::vector::VectorOutcome;
use svsm::snp::{term, SnpError, TerminateReason, TERM_SET_SVSM};
use svsm_emulated::hypervisor::{
    honest_features, Delivery, EmulatedHypervisor, Hostility, InjectionRefused, SnpMachine,
    SnpMachineConfig,
};
use svsm_protocol::ghcb::HvFeatures;
use svsm_protocol::hv_doorbell::{
    PendingEvents, NO_DOORBELL_PAGE, NO_EOI_REQUIRED, PENDING_MC, PENDING_NMI,
    PENDING_NO_FURTHER_SIGNAL,
};

/// SEV, SEV-ES, SNP (SEV_STATUS bits 0-2).
const SNP: u64 = 0b111;
/// SEV_STATUS bit 5: restricted injection.
const RI: u64 = 1 << 5;

fn machine(
    sev_status: u64,
    features: HvFeatures,
    hostility: Hostility,
) -> Result<SnpMachine, svsm_emulated::hypervisor::BootFailure> {
    SnpMachine::boot(SnpMachineConfig {
        sev_status,
        hostility: Hostility {
            features: Some(features.bits()),
            ..hostility
        },
        ..SnpMachineConfig::default()
    })
}

fn with_ri() -> SnpMachine {
    machine(SNP | RI, honest_features(), Hostility::default()).unwrap()
}

fn without_ri() -> SnpMachine {
    machine(SNP, honest_features(), Hostility::default()).unwrap()
}

fn doorbell_reason() -> Option<TerminateReason> {
    Some(TerminateReason {
        set: TERM_SET_SVSM,
        code: term::DOORBELL,
    })
}

fn eois(m: &SnpMachine) -> usize {
    m.hypervisor()
        .devices()
        .msr_writes
        .iter()
        .filter(|&&(msr, value)| msr == X2APIC_EOI_MSR && value == 0)
        .count()
}

/// One #HV with `word` (and `no_eoi`) posted on the boot vCPU.
fn ring(m: &SnpMachine, word: u16, no_eoi: u8, interruptible: bool) -> Result<Delivery, SnpError> {
    let bsp = m.bsp();
    m.hypervisor().post_doorbell(bsp, word, no_eoi).unwrap();
    m.hypervisor().inject(bsp, 28).unwrap();
    let mut delivered = m.deliver(bsp, interruptible);
    assert_eq!(delivered.len(), 1);
    let (vector, result) = delivered.remove(0);
    assert_eq!(vector, 28);
    result
}

#[test]
fn the_doorbell_is_registered_only_when_restricted_injection_is_negotiated() {
    let no_ri_feature = honest_features() - HvFeatures::SNP_RESTRICTED_INJECTION;
    for (status, features, registered) in [
        (SNP | RI, honest_features(), true),
        (SNP | RI, no_ri_feature, false),
        (SNP, honest_features(), false),
        (SNP, no_ri_feature, false),
    ] {
        let m = machine(status, features, Hostility::default()).unwrap();
        let hv = m.hypervisor();
        let config = m.interrupt_config(m.bsp()).unwrap();
        assert_eq!(
            config.restricted_injection, registered,
            "{status:#x} {features:?}"
        );
        if registered {
            // Every vCPU: SET then QUERY, the page shared, its words zero.
            assert_eq!(hv.registered_doorbells(), m.layout().doorbells);
            let requests: Vec<u64> = hv.doorbell_requests().iter().map(|r| r.1).collect();
            assert_eq!(requests, [1, 2].repeat(m.layout().doorbells.len()));
            for &(apic_id, gpa) in &m.layout().doorbells {
                assert!(!m.machine().rmp_entry(gpa).unwrap().assigned, "shared");
                assert_eq!(hv.doorbell_state(apic_id), Some((0, 0)));
            }
        } else {
            // The hypervisor never heard of a doorbell; the pages stay private.
            assert!(hv.doorbell_requests().is_empty());
            assert!(hv.registered_doorbells().is_empty());
            for &(_, gpa) in &m.layout().doorbells {
                assert!(m.machine().rmp_entry(gpa).unwrap().assigned, "private");
            }
        }
        assert_eq!(hv.terminated(), None);
    }
}

#[test]
fn a_registration_answered_wrongly_is_a_typed_error_never_accepted() {
    let gpa = SnpMachineConfig::default().svsm_range.0;
    let first = with_ri().layout().doorbells[0].1;
    let cases = [
        (
            Hostility {
                doorbell_set_answer: Some(first + 0x1000),
                ..Default::default()
            },
            DoorbellError::WrongGpa {
                expected: first,
                got: first + 0x1000,
            },
        ),
        (
            Hostility {
                doorbell_set_answer: Some(NO_DOORBELL_PAGE),
                ..Default::default()
            },
            DoorbellError::WrongGpa {
                expected: first,
                got: NO_DOORBELL_PAGE,
            },
        ),
        (
            Hostility {
                doorbell_query_answer: Some(gpa),
                ..Default::default()
            },
            DoorbellError::QueryMismatch {
                expected: first,
                got: gpa,
            },
        ),
        (
            Hostility {
                doorbell_query_answer: Some(NO_DOORBELL_PAGE),
                ..Default::default()
            },
            DoorbellError::QueryMismatch {
                expected: first,
                got: NO_DOORBELL_PAGE,
            },
        ),
        (
            Hostility {
                doorbell_query_answer: Some(first + 8),
                ..Default::default()
            },
            DoorbellError::Unaligned(first + 8),
        ),
        (
            Hostility {
                refuse_doorbell: true,
                ..Default::default()
            },
            DoorbellError::Refused(svsm::snp::GhcbError::Vmm { info1: 2, info2: 1 }),
        ),
    ];
    for (hostility, expected) in cases {
        let failure = machine(SNP | RI, honest_features(), hostility.clone()).unwrap_err();
        assert_eq!(failure.error, SnpError::Doorbell(expected), "{hostility:?}");
        assert_eq!(failure.terminated, doorbell_reason());
        // The same lies cannot hurt a VM that never negotiated restricted injection.
        assert!(machine(SNP, honest_features(), hostility).is_ok());
    }
}

static IPI_HOOK: AtomicU32 = AtomicU32::new(0);
fn ipi_hook(vector: u8) {
    IPI_HOOK.fetch_add(u32::from(vector), Ordering::SeqCst);
}

#[test]
fn a_posted_ipi_runs_its_hook_and_is_acknowledged_once() {
    let m = with_ri();
    m.hooks().register(0xF8, ipi_hook).unwrap();
    let before = IPI_HOOK.load(Ordering::SeqCst);
    let delivery = ring(&m, PENDING_NO_FURTHER_SIGNAL | 0xF8, 0, true).unwrap();
    assert_eq!(delivery.outcome, VectorOutcome::Doorbell);
    assert_eq!(
        delivery.doorbell,
        Some(DoorbellReport {
            rounds: 1,
            dispatched: 1,
            eois: 1,
            ..Default::default()
        })
    );
    assert_eq!(IPI_HOOK.load(Ordering::SeqCst) - before, 0xF8);
    assert_eq!(eois(&m), 1);
    // The word was taken whole: no-further-signal is clear, the hypervisor may signal.
    assert_eq!(m.hypervisor().doorbell_state(m.bsp()), Some((0, 0)));
    // No EOI when the page says none is required; the flag is consumed.
    let delivery = ring(&m, 0xF8, NO_EOI_REQUIRED, true).unwrap();
    assert_eq!(delivery.doorbell.unwrap().eois, 0);
    assert_eq!(eois(&m), 1);
    assert_eq!(m.hypervisor().doorbell_state(m.bsp()), Some((0, 0)));
    // An empty doorbell: a #HV with nothing to do.
    let delivery = ring(&m, 0, 0, true).unwrap();
    assert_eq!(delivery.doorbell, Some(DoorbellReport::default()));
    assert_eq!(m.hypervisor().terminated(), None);
}

#[test]
fn every_garbage_word_has_its_documented_outcome() {
    let m = with_ri();
    m.hooks().register(0xF9, |_| {}).unwrap();
    // Every vector with no flags, and every flag byte (NMI, #MC, reserved bits,
    // no-further-signal) with no vector, an exception vector, the hooked vector and an
    // unexpected one. (The unit tests in svsm::snp::doorbell run all 65536 words.)
    let words = (0..=0xFFu16)
        .chain((0..=0xFFu16).flat_map(|flags| [0x00, 0x05, 0xF9, 0x80].map(|v| flags << 8 | v)));
    for word in words {
        let e = PendingEvents::decode(word);
        let before = eois(&m);
        match ring(&m, word, 0, true) {
            Err(error) => {
                // A machine check through the doorbell stops the SVSM.
                assert!(e.mc, "{word:#06x}");
                assert_eq!(error, SnpError::FatalVector(18));
                assert_eq!(
                    m.hypervisor().terminated(),
                    Some(TerminateReason {
                        set: TERM_SET_SVSM,
                        code: term::EXCEPTION
                    })
                );
            }
            Ok(delivery) => {
                assert!(!e.mc, "{word:#06x}");
                let r = delivery.doorbell.unwrap();
                let taken = word != 0;
                assert_eq!(r.rounds, usize::from(taken), "{word:#06x}");
                assert_eq!(r.nmis, u32::from(e.nmi));
                assert_eq!(r.reserved, e.reserved);
                assert_eq!(r.dispatched, u32::from(e.vector == 0xF9));
                assert_eq!(r.dropped, u32::from(e.vector != 0 && e.vector != 0xF9));
                // External vectors are acknowledged, dropped or not; 1..=31 are not.
                assert_eq!(r.eois, u32::from(e.vector >= 32));
                assert_eq!(eois(&m) - before, usize::from(e.vector >= 32));
                assert!(!r.deferred && !r.exhausted);
                assert_eq!(m.hypervisor().doorbell_state(m.bsp()), Some((0, 0)));
            }
        }
    }
}

#[test]
fn while_not_interruptible_only_nmi_and_mc_are_taken() {
    let m = with_ri();
    m.hooks().register(0xFA, |_| {}).unwrap();
    let word = PENDING_NO_FURTHER_SIGNAL | PENDING_NMI | 0xFA;
    let r = ring(&m, word, 0, false).unwrap().doorbell.unwrap();
    assert_eq!(
        r,
        DoorbellReport {
            nmis: 1,
            deferred: true,
            ..Default::default()
        }
    );
    // The vector stays posted, no-further-signal still set: the hypervisor holds back.
    assert_eq!(
        m.hypervisor().doorbell_state(m.bsp()),
        Some((PENDING_NO_FURTHER_SIGNAL | 0xFA, 0))
    );
    assert_eq!(eois(&m), 0, "no GHCB call while deferring");
    // The next #HV that finds the SVSM interruptible takes it.
    m.hypervisor().inject(m.bsp(), 28).unwrap();
    let (_, result) = m.deliver(m.bsp(), true).remove(0);
    let r = result.unwrap().doorbell.unwrap();
    assert_eq!((r.dispatched, r.eois, r.deferred), (1, 1, false));
    // A machine check is never deferred.
    let err = ring(&m, PENDING_MC | 0x40, 0, false).unwrap_err();
    assert_eq!(err, SnpError::FatalVector(18));
}

#[test]
fn a_hypervisor_that_keeps_posting_cannot_hold_the_vcpu() {
    // The hypervisor posts again while every vector is handled (a concurrent writer):
    // the SVSM takes at most MAX_ROUNDS words per #HV and leaves the rest posted.
    static HV: OnceLock<(Arc<EmulatedHypervisor>, u32)> = OnceLock::new();
    fn repost(_: u8) {
        if let Some((hv, bsp)) = HV.get() {
            hv.post_doorbell(*bsp, 0x42, 0);
        }
    }
    let m = with_ri();
    let bsp = m.bsp();
    assert!(HV.set((m.hypervisor().clone(), bsp)).is_ok());
    m.hooks().register(0x41, repost).unwrap();
    m.hooks().register(0x42, repost).unwrap();
    let r = ring(&m, 0x41, 0, true).unwrap().doorbell.unwrap();
    assert_eq!(r.rounds, MAX_ROUNDS);
    assert!(r.exhausted);
    assert_eq!(r.dispatched as usize, MAX_ROUNDS);
    assert_eq!(eois(&m), MAX_ROUNDS);
    // What is left stays posted for the next #HV.
    assert_eq!(m.hypervisor().doorbell_state(bsp), Some((0x42, 0)));
    assert_eq!(m.hypervisor().terminated(), None);
}

#[test]
fn every_vector_injected_without_restricted_injection_has_its_outcome() {
    let m = without_ri();
    let bsp = m.bsp();
    assert!(!m.interrupt_config(bsp).unwrap().restricted_injection);
    for vector in 0..=255u8 {
        m.hypervisor().inject(bsp, vector).unwrap();
        let (v, result) = m.deliver(bsp, true).remove(0);
        assert_eq!(v, vector);
        match vector {
            // A #VC with a made-up exit code: refused, the SVSM terminates.
            29 => assert_eq!(
                result.unwrap_err(),
                SnpError::Vc(VcError::UnsupportedExit(0x400))
            ),
            // #DB, NMI, #BP and a #HV without a doorbell: noise.
            1 | 2 | 3 | 28 => assert_eq!(
                result.unwrap(),
                Delivery {
                    outcome: VectorOutcome::Ignored(vector),
                    doorbell: None
                }
            ),
            // Exceptions the SVSM did not cause: terminate.
            0..=31 => assert_eq!(result.unwrap_err(), SnpError::FatalVector(vector)),
            // External vectors nobody expects: ignored.
            _ => assert_eq!(
                result.unwrap(),
                Delivery {
                    outcome: VectorOutcome::Ignored(vector),
                    doorbell: None
                }
            ),
        }
    }
    // Nothing was ever read from a doorbell: none is registered.
    assert!(m.hypervisor().registered_doorbells().is_empty());
}

#[test]
fn every_vector_under_restricted_injection_has_its_outcome() {
    let m = with_ri();
    let bsp = m.bsp();
    m.hooks().register(0xFB, |_| {}).unwrap();
    for vector in 0..=255u8 {
        // The hardware lets only #HV through.
        if vector == 28 {
            m.hypervisor().inject(bsp, vector).unwrap();
            let (_, result) = m.deliver(bsp, true).remove(0);
            assert_eq!(result.unwrap().outcome, VectorOutcome::Doorbell);
        } else {
            assert_eq!(
                m.hypervisor().inject(bsp, vector),
                Err(InjectionRefused { vector })
            );
            assert!(m.deliver(bsp, true).is_empty());
        }
        // The same vector posted in the doorbell.
        let before = eois(&m);
        let r = ring(&m, u16::from(vector), 0, true)
            .unwrap()
            .doorbell
            .unwrap();
        match vector {
            0 => assert_eq!(r, DoorbellReport::default()),
            1..=31 => assert_eq!((r.dropped, r.eois), (1, 0), "{vector}"),
            0xFB => assert_eq!((r.dispatched, r.eois), (1, 1)),
            _ => assert_eq!((r.dropped, r.eois), (1, 1), "{vector}"),
        }
        assert_eq!(eois(&m) - before, r.eois as usize);
    }
    assert_eq!(m.hypervisor().terminated(), None);
}

#[test]
fn the_guest_vmsa_gets_neither_restricted_injection_nor_debug_swap() {
    // The SVSM runs with restricted injection and debug-swap; the guest's VMSA has
    // neither, and no alternate injection (the SVSM offers no APIC protocol).
    let m = machine(
        SNP | RI | (1 << 6) | (1 << 7),
        honest_features(),
        Hostility::default(),
    )
    .unwrap();
    let mut features = [0u8; 8];
    m.machine()
        .peek(m.layout().guest_vmsa + 0x3B0, &mut features)
        .unwrap();
    assert_eq!(u64::from_le_bytes(features), 1, "SNP active only");
}
