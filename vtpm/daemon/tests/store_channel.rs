//! The kernel's store channel on the SEV-SNP path, as far as it can be tested here:
//! through the emulated GHCB. The SVSM's driver (`svsm::state_store`) makes every port
//! access an IOIO exit on the GHCB of a booted emulated machine, the emulated hypervisor
//! hands it to a 16550 model whose line is a socket, and at the other end runs the host
//! store helper (`vtpm_daemon::store_helper`, what `vtpm-state-store` runs) over a state
//! file. No SNP hardware is involved: this shows the GHCB IOIO path and the protocol,
//! not a real hypervisor's behaviour.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use svsm::psp::state_key::PspKeySource;
use svsm::snp::hypervisor::{HvClient, IoSize};
use svsm::state_store::{ChannelError, PortIo, StoreChannel};
use svsm_emulated::hypervisor::{EmulatedGhcb, SnpMachine, SnpMachineConfig};
use svsm_emulated::psp::EmulatedPsp;
use svsm_emulated::uart::SocketUart;
use svsm_protocol::state_store::STORE_UART_BASE;
use vtpm::state::{read_header, SealedStore};
use vtpm::{OsEntropy, Vtpm};
use vtpm_daemon::state_file::StateFile;

/// Port I/O as the kernel does it under SEV-SNP: GHCB IOIO exits.
struct GhcbPorts(HvClient<EmulatedGhcb>);

impl PortIo for GhcbPorts {
    fn inb(&self, port: u16) -> u8 {
        self.0
            .io_in(port, IoSize::Byte)
            .expect("IOIO IN through the GHCB") as u8
    }

    fn outb(&self, port: u16, value: u8) {
        self.0
            .io_out(port, IoSize::Byte, value.into())
            .expect("IOIO OUT through the GHCB");
    }
}

/// A booted emulated machine with the UART model on COM3 and the store helper on
/// `state` at the other end of its line; returns the machine, the model and a port
/// accessor on the boot vCPU's GHCB.
fn machine_with_store(state: &std::path::Path) -> (SnpMachine, std::sync::Arc<SocketUart>) {
    let m = SnpMachine::boot(SnpMachineConfig::default()).expect("the emulated machine boots");
    let (line, host) = UnixStream::pair().expect("socket pair");
    let uart = SocketUart::new(line).expect("UART model");
    m.hypervisor()
        .attach_port_device(STORE_UART_BASE, 8, uart.clone());
    let mut file = StateFile::new(state);
    std::thread::spawn(move || vtpm_daemon::store_helper::serve(host, &mut file));
    (m, uart)
}

fn ports(m: &SnpMachine) -> GhcbPorts {
    let (apic_id, gpa) = m.layout().ghcbs[0];
    GhcbPorts(HvClient::new(m.hypervisor().transport(apic_id, gpa)))
}

fn state_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("store-channel-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("directory");
    dir.join("vtpm.state")
}

#[test]
fn get_and_put_travel_through_ghcb_ioio_to_the_helpers_file() {
    let path = state_path("raw");
    let (m, uart) = machine_with_store(&path);
    let mut channel = StoreChannel::new(ports(&m), STORE_UART_BASE).expect("a UART on COM3");
    assert_eq!(channel.get(), Ok(None));
    let blob: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    channel.put(&blob).expect("stored");
    assert_eq!(std::fs::read(&path).expect("the state file"), blob);
    channel.put(b"second").expect("stored");
    assert_eq!(channel.get(), Ok(Some(b"second".to_vec())));
    assert!(
        uart.accesses() > 2 * 5000,
        "every byte is a port access through the GHCB"
    );
    // No device on COM4: all ones, so no UART and no channel.
    assert_eq!(
        StoreChannel::new(ports(&m), 0x2E8).err(),
        Some(ChannelError::NoUart)
    );
}

#[test]
fn the_vtpm_keeps_its_state_through_the_emulated_ghcb_channel() {
    let path = state_path("vtpm");
    let start = |m: &SnpMachine| {
        let psp = EmulatedPsp::default();
        let messenger = svsm::psp::GuestMessenger::new(psp.vmpck0(), psp.seqno());
        let keys = PspKeySource::new(psp, messenger, Box::new(OsEntropy)).expect("the state key");
        let channel = StoreChannel::new(ports(m), STORE_UART_BASE).expect("a UART on COM3");
        vtpm::start_with_state(
            Box::new(OsEntropy),
            Box::new(SealedStore::new(channel, keys)),
        )
        .expect("the vTPM starts")
    };
    let (m, _uart) = machine_with_store(&path);
    let service = start(&m);
    let ek = service.ek_public().to_vec();
    drop(service);
    let first = std::fs::read(&path).expect("the sealed state");
    let generation = read_header(&first)
        .expect("a sealed state")
        .generation
        .get();
    assert!(generation >= 1);
    // A reboot: a new machine, the same launch (the emulated PSP's key), the same file.
    drop(m);
    let (m, _uart) = machine_with_store(&path);
    let mut service = start(&m);
    assert_eq!(service.ek_public(), &ek[..], "the same EK after the reboot");
    let evidence = vtpm::Engine::state_evidence(service.engine_mut()).expect("kept state");
    assert_eq!(evidence.generation, generation);
}

/// The helper binary itself: `--remanufacture` sets a kept state aside (so the kernel
/// manufactures a new TPM), and it answers Get and Put on its socket from the file.
#[test]
fn the_helper_binary_serves_its_socket_and_remanufacture_sets_the_state_aside() {
    use std::io::{Read, Write};
    use svsm_protocol::state_store::{Operation, Request, Response, Status, HEADER_SIZE};

    let state = state_path("binary");
    std::fs::write(&state, b"a state the kernel refused").expect("state");
    let socket = state.with_file_name("com3.sock");
    let mut helper = std::process::Command::new(env!("CARGO_BIN_EXE_vtpm-state-store"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state")
        .arg(&state)
        .arg("--remanufacture")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("vtpm-state-store starts");
    let mut stream = None;
    for _ in 0..200 {
        if let Ok(s) = UnixStream::connect(&socket) {
            stream = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let mut stream = stream.expect("the helper listens");
    let mut exchange = |operation, sequence, payload: &[u8]| {
        let request = Request {
            operation,
            sequence,
            length: payload.len(),
        };
        stream.write_all(&request.header()).unwrap();
        stream.write_all(payload).unwrap();
        let mut header = [0u8; HEADER_SIZE];
        stream.read_exact(&mut header).unwrap();
        let response = Response::parse(&header, operation).expect("a well-formed answer");
        let mut body = vec![0u8; response.length];
        stream.read_exact(&mut body).unwrap();
        (response.sequence, response.status, body)
    };
    assert_eq!(exchange(Operation::Get, 1, &[]), (1, Status::Empty, vec![]));
    assert_eq!(
        exchange(Operation::Put, 2, b"sealed"),
        (2, Status::Ok, vec![])
    );
    assert_eq!(std::fs::read(&state).unwrap(), b"sealed");
    let mut rejected = state.clone().into_os_string();
    rejected.push(".rejected");
    assert_eq!(
        std::fs::read(&rejected).unwrap(),
        b"a state the kernel refused"
    );
    helper.kill().ok();
    helper.wait().ok();
}
