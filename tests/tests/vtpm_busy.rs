//! Two vCPUs and one vTPM: while a command runs, another vCPU's SVSM_VTPM_CMD gets BUSY
//! before anything of its request is read or written, QUERY still answers, and the
//! guest's retry with identical registers succeeds once the TPM is free.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::Duration;

use svsm::requests::vtpm::VtpmProtocol;
use svsm::requests::{CallRegisters, Services};
use svsm_emulated::{EmulatedSystem, LaunchConfig};
use svsm_protocol::call::{Call, VtpmCall};
use svsm_protocol::SvsmResultCode;
use svsm_tests::driver::{GuestDriver, GuestKind};
use svsm_tests::fixtures::{AP1_CA, AP1_VMSA, LINUX_RANGE};
use vtpm::{Vtpm, VtpmError};

/// A vTPM whose commands wait at a gate the test opens.
struct Gated {
    entered: Sender<()>,
    release: Mutex<Receiver<()>>,
}

impl Vtpm for Gated {
    fn handle_request(&mut self, buffer: &mut [u8]) -> Result<usize, VtpmError> {
        self.entered.send(()).expect("test alive");
        self.release
            .lock()
            .expect("gate")
            .recv()
            .expect("test alive");
        // TPM_RC_SUCCESS, no body.
        let response = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0];
        buffer[..4].copy_from_slice(&10u32.to_le_bytes());
        buffer[4..14].copy_from_slice(&response);
        Ok(14)
    }

    fn ek_public(&self) -> &[u8] {
        &[]
    }
}

const BUF0: u64 = 0x20_0000;
const BUF1: u64 = 0x20_1000;

fn request() -> Vec<u8> {
    let command = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8];
    let mut r = 8u32.to_le_bytes().to_vec();
    r.push(0);
    r.extend_from_slice(&(command.len() as u32).to_le_bytes());
    r.extend_from_slice(&command);
    r
}

fn cmd(gpa: u64) -> CallRegisters {
    CallRegisters {
        rax: Call::Vtpm(VtpmCall::Cmd).to_rax(),
        rcx: gpa,
        ..CallRegisters::default()
    }
}

#[test]
fn a_second_vcpu_gets_busy_while_a_command_runs() {
    let (entered_tx, entered) = channel();
    let (release, release_rx) = channel();
    let vtpm = Gated {
        entered: entered_tx,
        release: Mutex::new(release_rx),
    };
    let services = Services::new().with_vtpm(Box::new(VtpmProtocol::new(vtpm)));
    let system = EmulatedSystem::launch(LaunchConfig::default(), services).expect("launch");
    let bsp = system.info().bsp();
    {
        let guest = GuestDriver::new(&system);
        guest
            .pvalidate_linux(bsp, LINUX_RANGE.0, LINUX_RANGE.1, true)
            .expect("validate");
        guest
            .start_ap(GuestKind::Linux, bsp, 1, AP1_VMSA, AP1_CA)
            .expect("AP 1");
    }
    let machine = system.machine();
    machine.guest_write(BUF0, &request()).expect("write");
    machine.guest_write(BUF1, &request()).expect("write");

    std::thread::scope(|s| {
        let first = s.spawn(|| {
            let guest = GuestDriver::new(&system);
            guest.call_once(bsp, &cmd(BUF0)).expect("call").regs.rax
        });
        entered
            .recv_timeout(Duration::from_secs(30))
            .expect("the first command reached the vTPM");

        let guest = GuestDriver::new(&system);
        guest.adopt_calling_area(1, AP1_CA);
        let busy = guest.call_once(1, &cmd(BUF1)).expect("call");
        assert_eq!(
            SvsmResultCode::from_raw(busy.regs.rax),
            SvsmResultCode::BUSY
        );
        let mut after = vec![0u8; request().len()];
        machine.guest_read(BUF1, &mut after).expect("read");
        assert_eq!(after, request(), "a BUSY request is left as it was");

        // QUERY does not wait for the command in progress.
        let query = CallRegisters {
            rax: Call::Vtpm(VtpmCall::Query).to_rax(),
            ..CallRegisters::default()
        };
        let q = guest.call_once(1, &query).expect("query");
        assert_eq!(
            SvsmResultCode::from_raw(q.regs.rax),
            SvsmResultCode::SUCCESS
        );
        assert_eq!(q.regs.rcx, 1 << 8);

        release.send(()).expect("open the gate");
        assert_eq!(
            SvsmResultCode::from_raw(first.join().expect("first vCPU")),
            SvsmResultCode::SUCCESS
        );
        // The retry with identical registers now runs.
        release.send(()).expect("open the gate");
        let retry = guest.call_once(1, &cmd(BUF1)).expect("retry");
        assert_eq!(
            SvsmResultCode::from_raw(retry.regs.rax),
            SvsmResultCode::SUCCESS
        );
        entered.recv().expect("the retry reached the vTPM");
        let mut size = [0u8; 4];
        machine.guest_read(BUF1, &mut size).expect("read");
        assert_eq!(u32::from_le_bytes(size), 10);
    });
}
