//! The hypervisor is not trusted either: when it takes pages away from under the SVSM
//! (reclaims a VMSA page, maps a calling area read-only), the request loop must not
//! service a call it cannot complete, must not crash, and must not lose isolation.
//!
//! These attacks break the launch state on purpose, so the suite checks outcomes rather
//! than the full invariant set (SVSM pages the hypervisor reclaimed are no longer
//! "assigned and validated" by definition).

use svsm::error::SvsmError;
use svsm::platform::{PageSize, PAGE_SIZE};
use svsm::requests::{
    CallContext, CallRegisters, NotServiced, ProtocolService, RequestOutcome, Services,
    VersionRange,
};
use svsm_emulated::{Backing, EmulatedSystem, LaunchConfig, SharedSnp};
use svsm_protocol::call::CoreCall;
use svsm_tests::driver::GuestDriver;

fn query() -> CallRegisters {
    GuestDriver::core_regs(CoreCall::QueryProtocol, 1, 0, 0)
}

#[test]
fn reclaimed_guest_vmsa_is_not_serviced() {
    let system = EmulatedSystem::standard().unwrap();
    let ca = system.info().config.boot_ca;
    system
        .machine()
        .guest_begin_call(0, ca, &query(), true)
        .unwrap();
    system
        .machine()
        .hv_rmpupdate(system.info().boot_vmsa, PageSize::Size4K, false)
        .unwrap();
    assert_eq!(
        system.svsm().handle_request(0),
        RequestOutcome::NotServiced(NotServiced::VmsaUnreadable)
    );
    let mut pending = [0u8];
    system.machine().guest_read(ca, &mut pending).unwrap();
    assert_eq!(pending, [1], "the call must stay pending");
}

#[test]
fn read_only_calling_area_is_not_serviced() {
    let system = EmulatedSystem::standard().unwrap();
    let ca = system.info().config.boot_ca;
    system
        .machine()
        .guest_begin_call(0, ca, &query(), true)
        .unwrap();
    system
        .machine()
        .set_backing(ca, ca + PAGE_SIZE, Backing::ReadOnly);
    assert_eq!(
        system.svsm().handle_request(0),
        RequestOutcome::NotServiced(NotServiced::NoCallingArea)
    );
}

/// A service during whose call the hypervisor maps the caller's VMSA read-only: the
/// result cannot be written and is dropped; the guest's registers stay as they were.
struct VmsaThief;

impl ProtocolService<SharedSnp> for VmsaThief {
    fn versions(&self) -> VersionRange {
        VersionRange { min: 1, max: 1 }
    }

    fn handle(&self, call: &mut CallContext<'_, SharedSnp>) -> Result<(), SvsmError> {
        let boot_vmsa = 0x80_0000 + 4 * PAGE_SIZE;
        call.platform()
            .set_backing(boot_vmsa, boot_vmsa + PAGE_SIZE, Backing::ReadOnly);
        call.regs_mut().rcx = 42;
        Ok(())
    }
}

#[test]
fn results_are_dropped_when_the_vmsa_cannot_be_written() {
    let services = Services::new().with_attestation(Box::new(VmsaThief));
    let system = EmulatedSystem::launch(LaunchConfig::default(), services).unwrap();
    assert_eq!(system.info().boot_vmsa, 0x80_0000 + 4 * PAGE_SIZE);
    let ca = system.info().config.boot_ca;
    let regs = CallRegisters {
        rax: 1 << 32,
        rcx: 7,
        ..Default::default()
    };
    let machine = system.machine();
    machine.guest_begin_call(0, ca, &regs, true).unwrap();
    assert_eq!(
        system.svsm().handle_request(0),
        RequestOutcome::Serviced(svsm_protocol::SvsmResultCode::SUCCESS)
    );
    let ret = machine.guest_end_call(0, ca).unwrap();
    assert_eq!(ret.regs, regs, "nothing reached the read-only VMSA");
}
