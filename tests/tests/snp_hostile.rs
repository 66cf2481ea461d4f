//! A hostile hypervisor against the SVSM's SEV-SNP code on the emulated machine.
//!
//! Every lie ends in a typed error and, where the SVSM cannot go on, a termination
//! request with the reason the error maps to; nothing panics, and a refused step leaves
//! the guest with nothing it could use (no half-built VMSA registered with the
//! hypervisor).

use svsm::platform::{HypervisorError, PageSize, Platform};
use svsm::requests::{CallRegisters, NotServiced, RequestOutcome};
use svsm::snp::hypervisor::{EVTINJ_TYPE_EXCEPTION, EVTINJ_VALID};
use svsm::snp::vc::{VcError, VcRegisters};
use svsm::snp::vector::{handle_vector, InterruptConfig, VectorOutcome};
use svsm::snp::{term, GhcbError, SnpError, TerminateReason, TERM_SET_SVSM};
use svsm_emulated::hypervisor::{Hostility, SnpMachine, SnpMachineConfig};
use svsm_protocol::call::{Call, CoreCall};

fn boot_with(hostility: Hostility) -> Result<SnpMachine, svsm_emulated::hypervisor::BootFailure> {
    SnpMachine::boot(SnpMachineConfig {
        hostility,
        ..SnpMachineConfig::default()
    })
}

fn svsm_reason(code: u8) -> Option<TerminateReason> {
    Some(TerminateReason {
        set: TERM_SET_SVSM,
        code,
    })
}

#[test]
fn wrong_protocol_versions_terminate_with_the_general_reason() {
    // Versions 3..=4 and 1..=1.
    for raw in [
        (4u64 << 48) | (3 << 32) | (51 << 24) | 1,
        (1 << 48) | (1 << 32) | (51 << 24) | 1,
    ] {
        let failure = boot_with(Hostility {
            sev_info: Some(raw),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(failure.error, SnpError::ProtocolVersion { .. }));
        assert_eq!(
            failure.terminated,
            Some(TerminateReason { set: 0, code: 1 })
        );
    }
}

#[test]
fn missing_snp_or_ap_creation_terminates_but_missing_multi_vmpl_does_not() {
    let failure = boot_with(Hostility {
        features: Some(0b10_0010),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(failure.error, SnpError::NoSnp(_)));
    assert_eq!(
        failure.terminated,
        Some(TerminateReason { set: 0, code: 2 })
    );
    let failure = boot_with(Hostility {
        features: Some(0b10_0001),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(failure.error, SnpError::NoApCreation(_)));
    // KVM's answer: SNP and AP creation, no multi-VMPL bit.
    let m = boot_with(Hostility {
        features: Some(0b11),
        ..Default::default()
    })
    .expect("a missing multi-VMPL bit is only logged");
    assert!(!m.start().hypervisor.multi_vmpl());
    assert_eq!(m.hypervisor().terminated(), None);
}

#[test]
fn garbage_msr_answers_and_a_wrong_registration_terminate() {
    for garbage in [0u64, u64::MAX, 0x013, 0x0000_0000_0000_0FFF] {
        let failure = boot_with(Hostility {
            msr_garbage: Some(garbage),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(
                failure.error,
                SnpError::BadMsrResponse { request: 0x002, .. }
            ),
            "{garbage:#x}: {:?}",
            failure.error
        );
        assert_eq!(
            failure.terminated,
            svsm_reason(term::BAD_HYPERVISOR_RESPONSE)
        );
    }
    let failure = boot_with(Hostility {
        wrong_ghcb_gfn: true,
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(failure.error, SnpError::GhcbRegistration { .. }));
    assert_eq!(failure.terminated, svsm_reason(term::GHCB_SETUP));
}

#[test]
fn a_c_bit_that_disagrees_with_the_cpuid_page_terminates() {
    let failure = SnpMachine::boot(SnpMachineConfig {
        hypervisor_cbit: 47,
        ..SnpMachineConfig::default()
    })
    .unwrap_err();
    assert_eq!(failure.error, SnpError::CbitPosition(47));
    assert_eq!(failure.terminated, svsm_reason(term::CPUID));
}

#[test]
fn refused_page_state_changes_terminate_before_the_guest_exists() {
    let failure = boot_with(Hostility {
        refuse_page_state: Some(6),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(
        failure.error,
        SnpError::PageStateChange { error: 6, .. }
    ));
    assert_eq!(failure.terminated, svsm_reason(term::PAGE_STATE));
}

#[test]
fn tampered_ghcb_answers_fail_the_ap_creation_with_typed_errors() {
    let cases = [
        (
            Hostility {
                page_error: Some((1, EVTINJ_VALID | EVTINJ_TYPE_EXCEPTION | 14)),
                ..Default::default()
            },
            SnpError::Ghcb(GhcbError::Vmm {
                info1: 1,
                info2: EVTINJ_VALID | EVTINJ_TYPE_EXCEPTION | 14,
            }),
        ),
        (
            Hostility {
                page_error: Some((1, EVTINJ_VALID | EVTINJ_TYPE_EXCEPTION | 13)),
                ..Default::default()
            },
            SnpError::Ghcb(GhcbError::Exception { vector: 13 }),
        ),
        (
            Hostility {
                bad_version: true,
                ..Default::default()
            },
            SnpError::Ghcb(GhcbError::BadHeader),
        ),
    ];
    for (hostility, expected) in cases {
        // Without restricted injection, AP creation is the launch's only GHCB page call.
        let failure = SnpMachine::boot(SnpMachineConfig {
            hostility: hostility.clone(),
            sev_status: SnpMachineConfig::default().sev_status & !(1 << 5),
            ..SnpMachineConfig::default()
        })
        .unwrap_err();
        assert_eq!(failure.error, expected);
        assert_eq!(
            failure.terminated,
            svsm_reason(term::BAD_HYPERVISOR_RESPONSE)
        );
        // With it, the #HV doorbell registration comes first and fails the same way.
        let failure = boot_with(hostility).unwrap_err();
        let SnpError::Ghcb(inner) = expected else {
            unreachable!()
        };
        assert_eq!(
            failure.error,
            SnpError::Doorbell(svsm::snp::doorbell::DoorbellError::Refused(inner))
        );
        assert_eq!(failure.terminated, svsm_reason(term::DOORBELL));
    }
}

#[test]
fn tampered_ghcb_answers_reach_the_vc_handler_as_typed_errors() {
    let m = boot_with(Hostility::default()).unwrap();
    let client = m.platform().bsp_client().unwrap();
    let config = InterruptConfig::default();
    let cpuid = &m.start().cpuid;
    let rdmsr = [0x0F, 0x32];
    let mut regs = VcRegisters {
        rcx: 0xC000_0080,
        ..Default::default()
    };
    m.hypervisor().set_hostility(Hostility {
        drop_outputs: true,
        ..Default::default()
    });
    assert_eq!(
        handle_vector(29, 0x7C, &rdmsr, &mut regs, &config, cpuid, client),
        Err(SnpError::Ghcb(GhcbError::MissingOutput(0x1F8)))
    );
    m.hypervisor().set_hostility(Hostility {
        page_error: Some((1, EVTINJ_VALID | EVTINJ_TYPE_EXCEPTION | 13)),
        ..Default::default()
    });
    assert_eq!(
        handle_vector(29, 0x7C, &rdmsr, &mut regs, &config, cpuid, client),
        Err(SnpError::Ghcb(GhcbError::Exception { vector: 13 }))
    );
    // The honest hypervisor answers, and CPUID never reaches it.
    m.hypervisor().set_hostility(Hostility {
        bad_version: true,
        ..Default::default()
    });
    let mut regs = VcRegisters {
        rax: 0x8000_001F,
        ..Default::default()
    };
    assert_eq!(
        handle_vector(29, 0x72, &[0x0F, 0xA2], &mut regs, &config, cpuid, client),
        Ok(VectorOutcome::Resumed(2))
    );
    assert_eq!(regs.rbx & 0x3F, 51);
    m.hypervisor().set_hostility(Hostility::default());
    m.hypervisor().set_io_read(0x3FD, 0x60);
    let mut regs = VcRegisters {
        rdx: 0x3FD,
        ..Default::default()
    };
    assert_eq!(
        handle_vector(29, 0x7B, &[0xEC], &mut regs, &config, cpuid, client),
        Ok(VectorOutcome::Resumed(1))
    );
    assert_eq!(regs.rax, 0x60);
}

#[test]
fn injected_vectors_are_ignored_or_terminate_never_panic() {
    let m = boot_with(Hostility::default()).unwrap();
    let client = m.platform().bsp_client().unwrap();
    let cpuid = &m.start().cpuid;
    let config = InterruptConfig::default();
    let mut fatal = 0;
    for vector in 0..=255u8 {
        // A hostile #VC with a made-up exit code and junk at RIP.
        let mut regs = VcRegisters::default();
        match handle_vector(
            vector,
            0x400,
            &[0xCC, 0xCC],
            &mut regs,
            &config,
            cpuid,
            client,
        ) {
            Ok(VectorOutcome::Ignored(v)) => assert_eq!(v, vector),
            Ok(other) => panic!("vector {vector}: {other:?}"),
            Err(SnpError::Vc(VcError::UnsupportedExit(0x400))) => assert_eq!(vector, 29),
            Err(SnpError::FatalVector(v)) => {
                assert_eq!(v, vector);
                assert!(vector < 32);
                let reason = svsm::snp::boot::fail(client, &SnpError::FatalVector(v));
                assert_eq!(
                    reason,
                    TerminateReason {
                        set: TERM_SET_SVSM,
                        code: term::EXCEPTION
                    }
                );
                fatal += 1;
            }
            Err(e) => panic!("vector {vector}: {e:?}"),
        }
        assert_eq!(
            regs,
            VcRegisters::default(),
            "vector {vector} changed registers"
        );
    }
    // 0, 4..=27, 30, 31: the faults the SVSM cannot have caused and survive.
    assert_eq!(fatal, 27);
    assert_eq!(
        m.hypervisor().terminated(),
        Some(TerminateReason {
            set: TERM_SET_SVSM,
            code: term::EXCEPTION
        })
    );
}

#[test]
fn pages_made_shared_under_the_svsm_are_refused_not_crashed_on() {
    let m = boot_with(Hostility::default()).unwrap();
    m.start_guest().unwrap();
    let bsp = m.bsp();
    let regs = CallRegisters {
        rax: Call::Core(CoreCall::QueryProtocol).to_rax(),
        rcx: 1,
        ..Default::default()
    };
    // The hypervisor takes the calling area back: the guest's write to call_pending
    // lands in a shared page, the SVSM finds no usable calling area and services nothing.
    m.machine()
        .hv_rmpupdate(m.caa(), PageSize::Size4K, false)
        .unwrap();
    let (outcome, _, ret) = m.call(bsp, m.caa(), &regs).unwrap();
    assert_eq!(
        outcome,
        RequestOutcome::NotServiced(NotServiced::NoCallingArea)
    );
    assert_eq!(ret.pending, 1, "the guest sees its call was not serviced");

    // The hypervisor takes the guest's VMSA page (in SVSM memory) away.
    let m = boot_with(Hostility::default()).unwrap();
    m.start_guest().unwrap();
    m.machine()
        .guest_begin_call(bsp, m.caa(), &regs, true)
        .unwrap();
    m.machine()
        .hv_rmpupdate(m.layout().guest_vmsa, PageSize::Size4K, false)
        .unwrap();
    assert_eq!(
        m.svsm().handle_request(bsp),
        RequestOutcome::NotServiced(NotServiced::VmsaUnreadable)
    );
}

#[test]
fn a_refused_run_vmpl_is_a_typed_error_after_the_result_is_written() {
    let m = boot_with(Hostility::default()).unwrap();
    m.start_guest().unwrap();
    m.hypervisor().set_hostility(Hostility {
        refuse_run: Some(9),
        ..Default::default()
    });
    let regs = CallRegisters {
        rax: Call::Core(CoreCall::QueryProtocol).to_rax(),
        rcx: 1,
        ..Default::default()
    };
    let bsp = m.bsp();
    m.machine()
        .guest_begin_call(bsp, m.caa(), &regs, true)
        .unwrap();
    assert!(matches!(
        m.svsm().handle_request(bsp),
        RequestOutcome::Serviced(_)
    ));
    assert_eq!(
        m.platform().run_guest(bsp),
        Err(HypervisorError::Refused(9))
    );
    // Run on a vCPU that has no GHCB client is refused, not a panic.
    assert!(m.platform().run_guest(77).is_err());
}

#[test]
fn pages_made_invalid_under_the_svsm_are_refused_not_crashed_on() {
    // The hypervisor re-assigns the guest's calling area (RMPUPDATE): the page is
    // private again but no longer validated, so neither the guest nor the SVSM can use
    // it; the SVSM reports the call as not serviced.
    let m = boot_with(Hostility::default()).unwrap();
    m.start_guest().unwrap();
    let bsp = m.bsp();
    let regs = CallRegisters {
        rax: Call::Core(CoreCall::QueryProtocol).to_rax(),
        rcx: 1,
        ..Default::default()
    };
    m.machine()
        .guest_begin_call(bsp, m.caa(), &regs, true)
        .unwrap();
    m.machine()
        .hv_rmpupdate(m.caa(), PageSize::Size4K, true)
        .unwrap();
    assert_eq!(
        m.svsm().handle_request(bsp),
        RequestOutcome::NotServiced(NotServiced::NoCallingArea)
    );
    // The guest's own view: the page faults with #VC (not validated).
    assert_eq!(
        m.guest_page(m.caa()).unwrap_err(),
        svsm_emulated::GuestFault::NotValidated
    );
    // The secrets copy invalidated the same way: the guest cannot read a half-valid page.
    let secrets = m.config().firmware.secrets_gpa;
    m.machine()
        .hv_rmpupdate(secrets, PageSize::Size4K, true)
        .unwrap();
    assert_eq!(
        m.guest_page(secrets).unwrap_err(),
        svsm_emulated::GuestFault::NotValidated
    );
}

#[test]
fn guest_requests_go_through_shared_pages_and_lying_answers_are_typed() {
    use svsm::platform::PspError;
    let m = boot_with(Hostility::default()).unwrap();
    let (request_gpa, response_gpa) = m.layout().messages;
    for gpa in [request_gpa, response_gpa] {
        assert!(
            !m.machine().rmp_entry(gpa).unwrap().assigned,
            "message pages are shared"
        );
    }
    let mut request = [0u8; 4096];
    request[..4].copy_from_slice(b"MSG!");
    let cases = [
        ((0, 2 << 32), Err(PspError::Busy)),
        ((0, 0x16), Err(PspError::Firmware(0x16))),
        ((0, 7 << 32), Err(PspError::Hypervisor(7))),
        ((1, 0), Err(PspError::Hypervisor(u32::MAX))),
    ];
    for (page_error, expected) in cases {
        m.hypervisor().set_hostility(Hostility {
            page_error: Some(page_error),
            ..Default::default()
        });
        assert_eq!(m.platform().guest_request(&request).map(|_| ()), expected);
        // The request went out through the shared page, nowhere else.
        let mut out = [0u8; 4096];
        m.machine().peek(request_gpa, &mut out).unwrap();
        assert_eq!(out, request);
    }
    // A hypervisor that takes a message page back cannot read it: a VMM error.
    m.hypervisor().set_hostility(Hostility::default());
    m.machine()
        .hv_rmpupdate(response_gpa, PageSize::Size4K, true)
        .unwrap();
    assert_eq!(
        m.platform().guest_request(&request).map(|_| ()),
        Err(PspError::Hypervisor(u32::MAX))
    );
}

#[test]
fn a_firmware_page_swapped_after_the_launch_is_never_accepted() {
    // The measured image was validated by the launch; a page the host replaced is
    // assigned but not validated. The SVSM must not validate it (that would accept the
    // host's contents as the firmware): RMPADJUST refuses it and the boot stops.
    let image = SnpMachineConfig::default().firmware.image.base;
    let page = image + 0x5000;
    let failure = SnpMachine::boot(SnpMachineConfig {
        swapped_after_launch: vec![page],
        ..SnpMachineConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        failure.error,
        SnpError::Rmpadjust(
            page,
            svsm::platform::RmpadjustError::Fault(svsm::platform::RmpFault::NotValidated)
        )
    );
    assert_eq!(failure.terminated, svsm_reason(term::RMP));
}
