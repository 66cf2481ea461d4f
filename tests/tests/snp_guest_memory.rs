//! The host takes guest pages away while the SVSM is using them.
//!
//! On SEV-SNP hardware the hypervisor can RMPUPDATE any guest page at any moment, from
//! another CPU, between the SVSM's check of a buffer and its copy of it. The SVSM's
//! access then faults, and the kernel's exception table turns the fault into a
//! `MemoryError` (`arch::extable`: #VC PAGE_NOT_VALIDATED is `NotValidated`, a reflected
//! NPF `NotPrivate`). The emulated machine produces the same errors for the same page
//! states, and its `HostRace` lets the hypervisor act after any number of the SVSM's
//! accesses. Each test below sweeps that number over every access a call makes, so the
//! change lands between every check and every use, and asserts: the call fails with
//! INVALID_ADDRESS (or is not serviced, for the calling area) or succeeds untouched, the
//! SVSM keeps serving, and a failed call changed nothing the guest or the SVSM keeps.

use std::sync::{Mutex, MutexGuard};

use svsm::address::PhysAddr;
use svsm::address::{Access, GuestPhysAddr};
use svsm::arch::extable;
use svsm::platform::{MemoryError, PageSize, Platform, RmpPermissions};
use svsm::requests::vtpm::VtpmProtocol;
use svsm::requests::{vmsa, CallRegisters, NotServiced, RequestOutcome, Services};
use svsm_emulated::{EmulatedSystem, GuestFault, HostChange, HostRace, LaunchConfig};
use svsm_protocol::call::{Call, CoreCall, VtpmCall};
use svsm_protocol::SvsmResultCode;
use svsm_tests::driver::GuestDriver;
use vtpm::tpm::{self, CommandBuilder, Header};
use vtpm::{EntropyError, EntropySource};

/// The guest's TPM buffer (the standard machine's RAM at 2 MiB).
const BUF: u64 = 0x20_0000;
/// Another guest page, for the PVALIDATE list.
const LIST: u64 = 0x30_0000;
/// Pages the PVALIDATE list names.
const TARGETS: u64 = 0x40_0000;

/// One engine per process: the tests take turns.
static ENGINE: Mutex<()> = Mutex::new(());

struct OsEntropy;

impl EntropySource for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::getrandom(buf).map_err(|_| EntropyError)
    }
}

struct Booted {
    system: EmulatedSystem,
    _engine: MutexGuard<'static, ()>,
}

fn boot(with_vtpm: bool) -> Booted {
    let guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut services = Services::new();
    if with_vtpm {
        let service = vtpm::start(Box::new(OsEntropy)).expect("vTPM starts");
        services = services.with_vtpm(Box::new(VtpmProtocol::new(service)));
    }
    let system = EmulatedSystem::launch(LaunchConfig::default(), services).expect("launch");
    let b = Booted {
        system,
        _engine: guard,
    };
    for page in [BUF, LIST] {
        b.restore(page);
    }
    b.guest()
        .pvalidate_linux(b.bsp(), TARGETS, TARGETS + 0x2000, true)
        .expect("validate the targets");
    b
}

impl Booted {
    fn guest(&self) -> GuestDriver<'_> {
        GuestDriver::new(&self.system)
    }

    fn bsp(&self) -> u32 {
        self.system.info().bsp()
    }

    fn ca(&self) -> u64 {
        self.system.info().config.boot_ca
    }

    /// The guest gets `page` back after the host took it: the host assigns it again,
    /// the guest validates it (through the SVSM, as Linux does).
    fn restore(&self, page: u64) {
        let m = self.system.machine();
        if m.rmp_entry(page).is_some_and(|e| e.assigned && e.validated) {
            return;
        }
        m.hv_rmpupdate(page, PageSize::Size4K, true)
            .expect("assign");
        if page != self.ca() {
            self.guest()
                .pvalidate_linux(self.bsp(), page, page + 0x1000, true)
                .expect("validate");
            return;
        }
        // The calling area cannot carry its own PVALIDATE list: validate it as the
        // launch does (VMPL0 PVALIDATE, then the guest's permissions back).
        let shared = self.system.shared_machine();
        let at = PhysAddr::new(page);
        shared
            .pvalidate(at, PageSize::Size4K, true)
            .expect("PVALIDATE");
        let vmpl = self.system.info().config.guest_vmpl;
        shared
            .rmpadjust(at, PageSize::Size4K, vmpl, RmpPermissions::RWX, false)
            .expect("RMPADJUST");
    }

    /// Writes a TPM_SEND_COMMAND request for `command` at BUF.
    fn put_command(&self, command: &[u8]) {
        let mut req = 8u32.to_le_bytes().to_vec();
        req.push(0);
        req.extend_from_slice(&(command.len() as u32).to_le_bytes());
        req.extend_from_slice(command);
        self.system
            .machine()
            .guest_write(BUF, &req)
            .expect("guest write");
    }

    fn vtpm_cmd(&self) -> u64 {
        let regs = CallRegisters {
            rax: Call::Vtpm(VtpmCall::Cmd).to_rax(),
            rcx: BUF,
            ..CallRegisters::default()
        };
        self.guest().call(self.bsp(), &regs).expect("serviced").rax
    }

    /// Sends `command` and returns the TPM response.
    fn tpm(&self, command: &[u8]) -> Vec<u8> {
        self.put_command(command);
        assert_eq!(
            SvsmResultCode::from_raw(self.vtpm_cmd()),
            SvsmResultCode::SUCCESS
        );
        let mut size = [0u8; 4];
        self.system.machine().guest_read(BUF, &mut size).unwrap();
        let mut response = vec![0u8; u32::from_le_bytes(size) as usize];
        self.system
            .machine()
            .guest_read(BUF + 4, &mut response)
            .unwrap();
        response
    }

    fn pcr16(&self) -> Vec<u8> {
        let cmd = CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17E)
            .u32(1)
            .u16(0x000B)
            .bytes(&[3])
            .bytes(&[0, 0, 1])
            .build();
        let r = self.tpm(&cmd);
        assert_eq!(Header::parse(&r).unwrap().code, 0);
        r[30..62].to_vec()
    }
}

fn pcr16_extend() -> Vec<u8> {
    CommandBuilder::new(tpm::ST_SESSIONS, 0x182)
        .u32(16)
        .password_auth()
        .u32(1)
        .u16(0x000B)
        .bytes(&[0x5A; 32])
        .build()
}

#[test]
fn the_emulated_machine_reports_what_the_exception_table_reports() {
    let b = boot(false);
    let m = b.system.shared_machine();
    let range = b
        .system
        .svsm()
        .state_snapshot()
        .check(GuestPhysAddr::new(BUF), 16, Access::Data)
        .unwrap();
    let mut buf = [0u8; 16];
    m.read_guest(&range, 0, &mut buf).unwrap();
    // Assigned but not validated: on hardware #VC 0x404 (APM vol. 2 §15.36.10).
    m.hv_rmpupdate(BUF, PageSize::Size4K, true).unwrap();
    assert_eq!(
        m.read_guest(&range, 0, &mut buf),
        Err(MemoryError::NotValidated)
    );
    assert_eq!(
        extable::classify(extable::VECTOR_VC, extable::EXIT_PAGE_NOT_VALIDATED),
        Some(MemoryError::NotValidated)
    );
    // Shared: on hardware #NPF, reflected as #VC NPF.
    m.hv_rmpupdate(BUF, PageSize::Size4K, false).unwrap();
    assert_eq!(m.write_guest(&range, 0, &buf), Err(MemoryError::NotPrivate));
    assert_eq!(
        extable::classify(extable::VECTOR_VC, extable::EXIT_NPF),
        Some(MemoryError::NotPrivate)
    );
}

#[test]
fn a_tpm_buffer_taken_between_check_and_use_fails_the_call_and_nothing_else() {
    let b = boot(true);
    let m = b.system.machine();
    let before = b.pcr16();
    // Count the accesses of one complete call (a read-only command: PCR_Read).
    let read = CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17E)
        .u32(1)
        .u16(0x000B)
        .bytes(&[3])
        .bytes(&[0, 0, 1])
        .build();
    b.put_command(&read);
    let start = m.svsm_accesses();
    assert_eq!(b.vtpm_cmd(), 0);
    let per_call = m.svsm_accesses() - start;
    assert!(per_call >= 6, "{per_call} accesses");

    let mut pcr = before.clone();
    let (mut lost_responses, mut refused_untouched, mut succeeded) = (0, 0, 0);
    for change in [HostChange::Invalidate, HostChange::MakeShared] {
        for after in 0..per_call {
            b.put_command(&pcr16_extend());
            m.hv_race(HostRace {
                after,
                page: BUF,
                change,
            });
            let rax = SvsmResultCode::from_raw(b.vtpm_cmd());
            let raced = !m.hv_race_pending();
            m.hv_race_cancel();
            let buffer_gone = !m.rmp_entry(BUF).unwrap().validated;
            b.restore(BUF);
            let now = b.pcr16();
            match rax {
                SvsmResultCode::SUCCESS => {
                    // The change came after the SVSM's last touch of the buffer.
                    assert!(raced && buffer_gone, "{change:?} after {after}");
                    assert_ne!(now, pcr, "a successful extend changes PCR 16");
                    succeeded += 1;
                }
                SvsmResultCode::INVALID_ADDRESS => {
                    assert!(buffer_gone);
                    if now != pcr {
                        // The command ran and only its response could not be written:
                        // the one window where the host can make a result vanish.
                        lost_responses += 1;
                    } else {
                        refused_untouched += 1;
                    }
                }
                other => panic!("{change:?} after {after}: {other}"),
            }
            pcr = now;
        }
        // Exactly one point lies between the engine running and the response landing.
        assert_eq!(lost_responses, 1, "{change:?}");
        // Before it, the buffer is checked, the header read, the command read: every
        // change there refuses the call with the TPM untouched.
        assert!(refused_untouched >= 3, "{change:?}: {refused_untouched}");
        assert!(succeeded >= 1, "{change:?}");
        (lost_responses, refused_untouched, succeeded) = (0, 0, 0);
    }
    // The SVSM and its TPM keep serving.
    assert_eq!(Header::parse(&b.tpm(&read)).unwrap().code, 0);
}

#[test]
fn a_calling_area_taken_mid_call_leaves_the_call_unserviced_and_unchanged() {
    let b = boot(false);
    let m = b.system.machine();
    let vmsa_page = b.system.info().boot_vmsa;
    let regs = CallRegisters {
        rax: Call::Core(CoreCall::QueryProtocol).to_rax(),
        rcx: 1,
        ..CallRegisters::default()
    };
    let vmsa_u64 = |offset: u64| {
        let mut bytes = [0u8; 8];
        m.peek(vmsa_page + offset, &mut bytes).unwrap();
        u64::from_le_bytes(bytes)
    };
    let start = m.svsm_accesses();
    b.guest().call(b.bsp(), &regs).expect("an ordinary call");
    let per_call = m.svsm_accesses() - start;
    let efer = vmsa_u64(vmsa::EFER);
    let (mut unserviced, mut serviced) = (0, 0);
    for change in [HostChange::Invalidate, HostChange::MakeShared] {
        for after in 0..per_call {
            m.guest_begin_call(b.bsp(), b.ca(), &regs, true).unwrap();
            m.hv_race(HostRace {
                after,
                page: b.ca(),
                change,
            });
            let outcome = b.system.service(b.bsp()).unwrap();
            let raced = !m.hv_race_pending();
            m.hv_race_cancel();
            match outcome {
                RequestOutcome::NotServiced(NotServiced::NoCallingArea) => {
                    // Nothing reached the guest: RAX is still the request, EFER as
                    // the guest left it.
                    assert_eq!(vmsa_u64(vmsa::RAX), regs.rax, "after {after}");
                    assert_eq!(vmsa_u64(vmsa::EFER), efer);
                    unserviced += 1;
                }
                RequestOutcome::Serviced(code) => {
                    assert_eq!(code, SvsmResultCode::SUCCESS);
                    assert_eq!(vmsa_u64(vmsa::RAX), 0);
                    assert_eq!(vmsa_u64(vmsa::EFER), efer, "SVME restored");
                    serviced += 1;
                }
                other => panic!("{change:?} after {after}: {other:?}"),
            }
            // The guest's own next touch of an invalidated calling area faults, as on
            // hardware (#VC); a shared one it may touch.
            let end = m.guest_end_call(b.bsp(), b.ca());
            if raced && change == HostChange::Invalidate {
                assert_eq!(end.unwrap_err(), GuestFault::NotValidated);
            } else {
                assert!(end.is_ok(), "{change:?} after {after}: {end:?}");
            }
            b.restore(b.ca());
        }
    }
    assert!(
        unserviced >= 2 && serviced >= 2,
        "{unserviced} / {serviced}"
    );
    // The calling area works again once the guest has it back.
    m.guest_write(b.ca(), &[0]).unwrap();
    let out = b.guest().call(b.bsp(), &regs).expect("serviced");
    assert_eq!(out.rax, 0);
    assert_eq!(out.rcx, 1 << 32 | 1, "core protocol versions 1..=1");
}

#[test]
fn a_pvalidate_list_taken_before_it_is_read_changes_no_page() {
    let b = boot(false);
    let m = b.system.machine();
    let guest = b.guest();
    // Rescind both target pages: one list entry each.
    let entries = |validate: bool| {
        use svsm_protocol::core::{PageSize, PvalidateEntry};
        [TARGETS, TARGETS + 0x1000]
            .map(|gpa| PvalidateEntry::new(gpa, PageSize::Size4K, validate, false).unwrap())
    };
    let write_list = |validate: bool| {
        let mut list = vec![0u8; 0x1000];
        svsm_protocol::core::encode_list(&entries(validate), 0, &mut list).unwrap();
        m.guest_write(LIST, &list).unwrap();
    };
    let regs = GuestDriver::core_regs(CoreCall::Pvalidate, LIST, 0, 0);
    let validated = |gpa: u64| m.rmp_entry(gpa).unwrap().validated;
    // One uncontested rescind and re-validate: how many accesses a call makes.
    write_list(false);
    let start = m.svsm_accesses();
    assert_eq!(guest.call(b.bsp(), &regs).unwrap().rax, 0);
    let per_call = m.svsm_accesses() - start;
    assert!(!validated(TARGETS) && !validated(TARGETS + 0x1000));
    guest
        .pvalidate_linux(b.bsp(), TARGETS, TARGETS + 0x2000, true)
        .unwrap();

    let mut refused_untouched = 0;
    for after in 0..per_call {
        write_list(false);
        m.hv_race(HostRace {
            after,
            page: LIST,
            change: HostChange::Invalidate,
        });
        let rax = SvsmResultCode::from_raw(guest.call(b.bsp(), &regs).unwrap().rax);
        m.hv_race_cancel();
        let targets = (validated(TARGETS), validated(TARGETS + 0x1000));
        match rax {
            SvsmResultCode::SUCCESS => assert_eq!(targets, (false, false)),
            SvsmResultCode::INVALID_ADDRESS if targets == (true, true) => refused_untouched += 1,
            // The list was read and the pages rescinded; only writing `next` back
            // failed (the guest reads the list again on retry and finds them rescinded).
            SvsmResultCode::INVALID_ADDRESS => assert_eq!(targets, (false, false)),
            other => panic!("after {after}: {other}"),
        }
        b.restore(LIST);
        for page in [TARGETS, TARGETS + 0x1000] {
            b.restore(page);
        }
    }
    // Every change before the list is read refuses the call with no page touched.
    assert!(refused_untouched >= 1, "{refused_untouched}");
    // The SVSM still serves PVALIDATE.
    write_list(false);
    assert_eq!(guest.call(b.bsp(), &regs).unwrap().rax, 0);
}
