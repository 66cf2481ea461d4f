//! The daemon as a server: the simulator protocol spoken byte by byte, localities and
//! sizes, concurrent and vanishing clients, power cycles, clean shutdown, bad command
//! lines.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;
use sha2::{Digest, Sha256};
use vtpm::tpm::{self, CommandBuilder, Header};

/// A raw client of the simulator interface.
struct Sim {
    cmd: TcpStream,
    platform: TcpStream,
}

impl Sim {
    fn connect(d: &Daemon) -> Self {
        Self {
            cmd: TcpStream::connect(("127.0.0.1", d.port)).expect("command port"),
            platform: TcpStream::connect(("127.0.0.1", d.port + 1)).expect("platform port"),
        }
    }

    fn send(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        let mut frame = 8u32.to_be_bytes().to_vec();
        frame.push(locality);
        frame.extend_from_slice(&(command.len() as u32).to_be_bytes());
        frame.extend_from_slice(command);
        self.cmd.write_all(&frame).expect("send command");
        let mut len = [0u8; 4];
        self.cmd.read_exact(&mut len).expect("response length");
        let mut response = vec![0u8; u32::from_be_bytes(len) as usize];
        self.cmd.read_exact(&mut response).expect("response");
        let mut ack = [0u8; 4];
        self.cmd.read_exact(&mut ack).expect("acknowledgement");
        assert_eq!(ack, [0; 4]);
        let header = Header::parse(&response).expect("a TPM response");
        assert_eq!(header.size as usize, response.len());
        response
    }

    fn signal(&mut self, signal: u32) {
        self.platform
            .write_all(&signal.to_be_bytes())
            .expect("send signal");
        let mut ack = [0u8; 4];
        self.platform.read_exact(&mut ack).expect("signal answer");
        assert_eq!(ack, [0; 4], "signal {signal}");
    }
}

fn rc(response: &[u8]) -> u32 {
    Header::parse(response).expect("header").code
}

fn get_random(n: u16) -> Vec<u8> {
    CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17B)
        .u16(n)
        .build()
}

fn pcr_extend(index: u32, digest: &[u8; 32]) -> Vec<u8> {
    CommandBuilder::new(tpm::ST_SESSIONS, 0x182)
        .u32(index)
        .password_auth()
        .u32(1)
        .u16(0x000B)
        .bytes(digest)
        .build()
}

fn pcr_read_command(index: u32) -> Vec<u8> {
    let mut select = [0u8; 3];
    select[(index / 8) as usize] = 1 << (index % 8);
    CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17E)
        .u32(1)
        .u16(0x000B)
        .bytes(&[3])
        .bytes(&select)
        .build()
}

fn pcr_read(sim: &mut Sim, index: u32) -> [u8; 32] {
    let r = sim.send(0, &pcr_read_command(index));
    assert_eq!(rc(&r), 0);
    // header, update counter, selection (count, hash, size, 3 bytes), digest count,
    // TPM2B size, digest.
    r[30..62].try_into().expect("32-byte digest")
}

fn extended(old: [u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update(old)
        .chain_update(digest)
        .finalize()
        .into()
}

#[test]
fn localities_other_than_zero_are_refused() {
    let d = Daemon::start(&[]);
    let mut sim = Sim::connect(&d);
    sim.signal(1);
    sim.signal(11);
    for locality in 1..=4 {
        let r = sim.send(locality, &pcr_extend(17, &[7; 32]));
        assert_eq!(rc(&r), 0x907, "TPM_RC_LOCALITY at locality {locality}");
    }
    let r = sim.send(0, &get_random(16));
    assert_eq!(rc(&r), 0);
    assert_eq!(r.len(), 12 + 16);
}

#[test]
fn commands_larger_than_the_transport_are_refused() {
    let d = Daemon::start(&[]);
    let mut sim = Sim::connect(&d);
    let mut big = vec![0u8; 4088];
    big[..10].copy_from_slice(&[0x80, 0x01, 0, 0, 0x0F, 0xF8, 0, 0, 0x01, 0x7B]);
    let r = sim.send(0, &big);
    assert_eq!(rc(&r), 0x142, "TPM_RC_COMMAND_SIZE");
    assert_eq!(rc(&sim.send(0, &get_random(8))), 0);
}

#[test]
fn concurrent_clients_are_serialized() {
    let d = Daemon::start(&[]);
    let port = d.port;
    let threads: Vec<_> = [14u32, 15, 16, 23]
        .into_iter()
        .map(|index| {
            std::thread::spawn(move || {
                let mut sim = Sim {
                    cmd: TcpStream::connect(("127.0.0.1", port)).expect("connect"),
                    platform: TcpStream::connect(("127.0.0.1", port + 1)).expect("connect"),
                };
                let mut expected = [0u8; 32];
                for round in 0..25u8 {
                    let digest = [index as u8 ^ round; 32];
                    assert_eq!(rc(&sim.send(0, &pcr_extend(index, &digest))), 0);
                    expected = extended(expected, &digest);
                }
                (index, expected)
            })
        })
        .collect();
    let mut sim = Sim::connect(&d);
    for t in threads {
        let (index, expected) = t.join().expect("client thread");
        assert_eq!(pcr_read(&mut sim, index), expected, "PCR {index}");
    }
}

#[test]
fn a_client_that_disconnects_mid_command_loses_nothing() {
    let d = Daemon::start(&[]);
    let digest = [0x5A; 32];
    let command = pcr_extend(15, &digest);
    // Half a command, then gone: nothing runs.
    {
        let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
        let mut frame = 8u32.to_be_bytes().to_vec();
        frame.push(0);
        frame.extend_from_slice(&(command.len() as u32).to_be_bytes());
        frame.extend_from_slice(&command[..command.len() / 2]);
        s.write_all(&frame).expect("send half");
    }
    let mut sim = Sim::connect(&d);
    assert_eq!(
        pcr_read(&mut sim, 15),
        [0; 32],
        "the half command did not run"
    );
    // A whole command whose client leaves before the answer: it runs, once.
    {
        let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
        let mut frame = 8u32.to_be_bytes().to_vec();
        frame.push(0);
        frame.extend_from_slice(&(command.len() as u32).to_be_bytes());
        frame.extend_from_slice(&command);
        s.write_all(&frame).expect("send whole");
    }
    let expected = extended([0; 32], &digest);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pcr_read(&mut sim, 15) != expected {
        assert!(Instant::now() < deadline, "the whole command never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    // And the server still serves everyone.
    assert_eq!(rc(&sim.send(0, &get_random(8))), 0);
    assert_eq!(pcr_read(&mut sim, 15), expected, "ran exactly once");
}

#[test]
fn a_power_cycle_is_a_reboot_with_a_fresh_vtpm() {
    let d = Daemon::start(&[]);
    let mut sim = Sim::connect(&d);
    assert_eq!(rc(&sim.send(0, &pcr_extend(10, &[1; 32]))), 0);
    d.tool_flush("tpm2_createek", &["-G", "rsa", "-c", "ek1.ctx"]);
    let ek1 = d.tool_flush("tpm2_readpublic", &["-c", "ek1.ctx"]);

    sim.signal(2);
    assert_eq!(
        sim.send(0, &get_random(8)),
        tpm::FAILURE_RESPONSE,
        "a powered-off TPM answers nothing useful"
    );
    sim.signal(1);
    // Started again by the SVSM: the guest's Startup gets TPM_RC_INITIALIZE.
    assert_eq!(rc(&sim.send(0, &tpm::startup_clear())), tpm::RC_INITIALIZE);
    assert_eq!(pcr_read(&mut sim, 10), [0; 32], "PCRs start over");
    d.tool_flush("tpm2_createek", &["-G", "rsa", "-c", "ek2.ctx"]);
    let ek2 = d.tool_flush("tpm2_readpublic", &["-c", "ek2.ctx"]);
    assert_ne!(ek1, ek2, "an ephemeral vTPM has a new EK at every boot");
}

#[test]
fn sigterm_and_sigint_stop_the_daemon_cleanly() {
    for signal in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let mut d = Daemon::start(&[]);
        let mut sim = Sim::connect(&d);
        assert_eq!(rc(&sim.send(0, &get_random(8))), 0);
        let (status, out) = d.signal(signal);
        assert!(status.success(), "{signal:?}: exit status {status}");
        assert!(out.contains("vtpm-daemon: stopped"), "{signal:?}: {out}");
    }
}

#[test]
fn bad_command_lines_say_what_is_wrong() {
    let out = Command::new(env!("CARGO_BIN_EXE_vtpm-daemon"))
        .args(["--backend", "quantum"])
        .output()
        .expect("run the daemon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'quantum'"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_vtpm-daemon"))
        .args(["--port", "65535"])
        .output()
        .expect("run the daemon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--platform-port"), "{err}");
}

/// Audit finding: `--listen 0.0.0.0` was accepted silently, exposing power-off to the
/// network. Off loopback the daemon refuses unless told `--allow-remote`, and says why.
#[test]
fn listening_off_loopback_needs_allow_remote() {
    for args in [
        &["--listen", "0.0.0.0", "--port", "0"][..],
        &["--listen", "::", "--port", "0"][..],
        &["--swtpm-ctrl", "tcp:0.0.0.0:0"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vtpm-daemon"))
            .args(args)
            .output()
            .expect("run the daemon");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("which is not loopback") && err.contains("--allow-remote"),
            "{args:?}: {err}"
        );
        assert!(err.contains("power-cycle the vTPM"), "{err}");
    }
}

#[test]
fn the_engine_backend_serves_the_same_vtpm_without_the_svsm() {
    let d = Daemon::start(&["--backend", "engine"]);
    assert_eq!(d.backend, "Engine");
    let mut sim = Sim::connect(&d);
    assert_eq!(rc(&sim.send(0, &tpm::startup_clear())), tpm::RC_INITIALIZE);
    let digest = [0x42; 32];
    assert_eq!(rc(&sim.send(0, &pcr_extend(9, &digest))), 0);
    assert_eq!(pcr_read(&mut sim, 9), extended([0; 32], &digest));
    assert_eq!(
        rc(&sim.send(3, &get_random(8))),
        0x907,
        "locality 3 refused"
    );
    d.tool_flush("tpm2_createek", &["-G", "rsa", "-c", "ek.ctx"]);
    let out = d.tool_flush("tpm2_readpublic", &["-c", "ek.ctx"]);
    let name = d.ek_name.clone().expect("the daemon prints the EK name");
    assert!(out.contains(&format!("name: {name}")), "{out}");
}
