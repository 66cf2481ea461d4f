//! The vTPM service's start-up refusals, its direct `execute` entry point and its error
//! mapping, against a scripted engine (the branches the protocol suites cannot reach with
//! a healthy engine; found by `cargo xtask coverage`).

use svsm_protocol::vtpm::MAX_RESPONSE_SIZE;
use svsm_protocol::vtpm::VTPM_BUFFER_MAX;
use svsm_protocol::SvsmResultCode;
use vtpm::tpm;
use vtpm::{Engine, EngineError, Service, StartupError, Vtpm, VtpmError};

/// What the scripted engine does wrong, if anything.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Startup answers this response code.
    StartupRc(u32),
    /// Startup answers a header whose size is not the response's length.
    StartupMalformed,
    /// CreatePrimary succeeds with a response too short to hold the key.
    CreatePrimaryShort,
    /// The engine is in failure mode once start-up is done.
    FailedAfterStart,
    /// The engine cannot process Startup at all.
    StartupError,
    /// The engine cannot process any command after start-up.
    ErrorAfterStart,
    /// After start-up, responses whose header size is not their length.
    LyingAfterStart,
    /// After start-up, a whole response larger than the transport carries.
    HugeAfterStart,
    /// The engine enters failure mode with its first command after start-up.
    FailsAfterStart,
    /// The engine advertises buffers larger than the transport.
    BigBuffers,
}

struct Scripted {
    fault: Fault,
    response: Vec<u8>,
    /// Commands executed.
    calls: usize,
}

fn response(code: u32, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&tpm::ST_NO_SESSIONS.to_be_bytes());
    r.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    r.extend_from_slice(&code.to_be_bytes());
    r.extend_from_slice(body);
    r
}

impl Engine for Scripted {
    fn execute(&mut self, _locality: u8, command: &mut [u8]) -> Result<(), EngineError> {
        let code = u32::from_be_bytes(command[6..10].try_into().unwrap());
        self.calls += 1;
        match (code, self.fault) {
            (tpm::CC_STARTUP, Fault::StartupError) => return Err(EngineError::Process(7)),
            // Startup, then CreatePrimary and FlushContext for each of the two EKs.
            (_, Fault::ErrorAfterStart) if self.calls > 5 => return Err(EngineError::Process(8)),
            (_, Fault::LyingAfterStart) if self.calls > 5 => {
                self.response = response(0, &[0; 8]);
                self.response[5] = 17;
                return Ok(());
            }
            (_, Fault::HugeAfterStart) if self.calls > 5 => {
                self.response = response(0, &[0; MAX_RESPONSE_SIZE]);
                return Ok(());
            }
            _ => {}
        }
        self.response = match (code, self.fault) {
            (tpm::CC_STARTUP, Fault::StartupRc(rc)) => response(rc, &[]),
            (tpm::CC_STARTUP, Fault::StartupMalformed) => {
                let mut r = response(0, &[]);
                r[5] = 11;
                r
            }
            (tpm::CC_CREATE_PRIMARY, Fault::CreatePrimaryShort) => response(0, &[0x80, 0]),
            (tpm::CC_CREATE_PRIMARY, _) => response(0, &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0, 1]),
            _ => response(0, &command[..command.len().min(8)]),
        };
        Ok(())
    }
    fn response(&self) -> &[u8] {
        &self.response
    }
    fn failed(&self) -> bool {
        self.fault == Fault::FailedAfterStart
            || (self.fault == Fault::FailsAfterStart && self.calls > 5)
    }
    fn buffer_size(&self) -> u32 {
        if self.fault == Fault::BigBuffers {
            4096
        } else {
            4087
        }
    }
}

fn start(fault: Fault) -> Result<Service<Scripted>, StartupError> {
    Service::start(Scripted {
        fault,
        response: Vec::new(),
        calls: 0,
    })
}

#[test]
fn start_up_refuses_every_way_the_engine_can_fail() {
    assert_eq!(
        start(Fault::StartupRc(tpm::RC_FAILURE)).err(),
        Some(StartupError::Command {
            command: tpm::CC_STARTUP,
            rc: tpm::RC_FAILURE
        })
    );
    assert_eq!(
        start(Fault::StartupMalformed).err(),
        Some(StartupError::Command {
            command: tpm::CC_STARTUP,
            rc: 0xFFFF_FFFF
        })
    );
    assert_eq!(
        start(Fault::CreatePrimaryShort).err(),
        Some(StartupError::Command {
            command: tpm::CC_CREATE_PRIMARY,
            rc: 0
        })
    );
    assert_eq!(
        start(Fault::FailedAfterStart).err(),
        Some(StartupError::Engine(EngineError::FailureMode))
    );
    assert_eq!(
        start(Fault::BigBuffers).err(),
        Some(StartupError::BufferSize(4096))
    );
    assert_eq!(
        start(Fault::StartupError).err(),
        Some(StartupError::Engine(EngineError::Process(7)))
    );
    let service = start(Fault::None).unwrap();
    assert_eq!(
        service.endorsement_key(vtpm::EkTemplate::RsaL1),
        &[0, 1][..]
    );
}

#[test]
fn execute_checks_locality_and_sizes_then_copies_the_response() {
    let mut s = start(Fault::None).unwrap();
    let mut response = vec![0u8; MAX_RESPONSE_SIZE];
    let mut command = tpm::startup_clear().to_vec();
    assert_eq!(
        s.execute(3, &mut command, &mut response),
        Err(VtpmError::Locality(3))
    );
    let mut big = vec![0u8; 4088];
    assert_eq!(
        s.execute(0, &mut big, &mut response),
        Err(VtpmError::CommandTooLarge(4088))
    );
    let mut short = vec![0u8; MAX_RESPONSE_SIZE - 1];
    assert_eq!(
        s.execute(0, &mut command, &mut short),
        Err(VtpmError::Truncated)
    );
    let n = s.execute(0, &mut command, &mut response).unwrap();
    assert_eq!(&response[..n], &response_for(&command)[..]);
    assert!(!s.is_failed());
    // The engine itself stays reachable for host diagnostics.
    assert!(!s.engine_mut().failed());
}

fn response_for(command: &[u8]) -> Vec<u8> {
    response(0, &command[..8])
}

#[test]
fn errors_map_to_the_protocols_codes_and_say_what_happened() {
    assert_eq!(
        SvsmResultCode::from(VtpmError::UnsupportedCommand(9)),
        SvsmResultCode::UNSUPPORTED_CALL
    );
    for e in [
        VtpmError::Locality(1),
        VtpmError::CommandTooLarge(5000),
        VtpmError::Truncated,
    ] {
        assert_eq!(SvsmResultCode::from(e), SvsmResultCode::INVALID_PARAMETER);
    }
    let texts = [
        VtpmError::UnsupportedCommand(9).to_string(),
        VtpmError::Locality(1).to_string(),
        VtpmError::CommandTooLarge(5000).to_string(),
        VtpmError::Truncated.to_string(),
        StartupError::Engine(EngineError::FailureMode).to_string(),
        StartupError::BufferSize(4096).to_string(),
        StartupError::Command {
            command: 0x144,
            rc: 0x101,
        }
        .to_string(),
    ];
    assert!(texts[0].contains('9'), "{}", texts[0]);
    assert!(texts[1].contains("locality 1"), "{}", texts[1]);
    assert!(texts[2].contains("5000"), "{}", texts[2]);
    assert!(texts[5].contains("4096"), "{}", texts[5]);
    assert!(
        texts[6].contains("0x144") && texts[6].contains("0x101"),
        "{}",
        texts[6]
    );
}

/// An engine that cannot process a command fails the TPM closed: TPM_RC_FAILURE now and
/// for every later command, which never reaches the engine again.
#[test]
fn an_engine_error_after_start_up_latches_failure_mode() {
    let mut s = start(Fault::ErrorAfterStart).unwrap();
    let mut response = vec![0u8; MAX_RESPONSE_SIZE];
    let mut command = tpm::startup_clear().to_vec();
    let n = s.execute(0, &mut command, &mut response).unwrap();
    assert_eq!(&response[..n], &tpm::FAILURE_RESPONSE[..]);
    assert!(s.is_failed());
    let calls = s.engine_mut().calls;
    let n = s.execute(0, &mut command, &mut response).unwrap();
    assert_eq!(&response[..n], &tpm::FAILURE_RESPONSE[..]);
    assert_eq!(s.engine_mut().calls, calls);
}

/// TPM_SEND_COMMAND framing (`handle_request`) over the same engine: every refusal, a
/// whole response, and the responses that fail the TPM closed.
#[test]
fn send_command_checks_the_frame_and_every_response() {
    let request = |command: u32, locality: u8, size: u32, len: usize| {
        let mut b = vec![0u8; len];
        let header = [&command.to_le_bytes()[..], &[locality], &size.to_le_bytes()].concat();
        let n = header.len().min(len);
        b[..n].copy_from_slice(&header[..n]);
        if len >= 9 + 12 {
            b[9..21].copy_from_slice(&tpm::startup_clear());
        }
        b
    };
    let mut s = start(Fault::None).unwrap();
    let full = VTPM_BUFFER_MAX;
    assert_eq!(
        s.handle_request(&mut request(8, 0, 12, 5)),
        Err(VtpmError::Truncated)
    );
    assert_eq!(
        s.handle_request(&mut request(9, 0, 12, full)),
        Err(VtpmError::UnsupportedCommand(9))
    );
    assert_eq!(
        s.handle_request(&mut request(8, 4, 12, full)),
        Err(VtpmError::Locality(4))
    );
    assert_eq!(
        s.handle_request(&mut request(8, 0, 4088, full)),
        Err(VtpmError::CommandTooLarge(4088))
    );
    assert_eq!(
        s.handle_request(&mut request(8, 0, 12, full - 1)),
        Err(VtpmError::Truncated)
    );
    let mut b = request(8, 0, 12, full);
    let n = s.handle_request(&mut b).unwrap();
    let expected = response_for(&tpm::startup_clear());
    assert_eq!(n, 4 + expected.len());
    assert_eq!(&b[..4], &(expected.len() as u32).to_le_bytes());
    assert_eq!(&b[4..n], &expected[..]);
    assert!(!s.is_failed());

    for fault in [
        Fault::LyingAfterStart,
        Fault::HugeAfterStart,
        Fault::ErrorAfterStart,
        Fault::FailsAfterStart,
    ] {
        let mut s = start(fault).unwrap();
        for _ in 0..2 {
            let mut b = request(8, 0, 12, full);
            assert_eq!(s.handle_request(&mut b), Ok(4 + 10));
            assert_eq!(&b[4..14], &tpm::FAILURE_RESPONSE[..]);
            assert!(s.is_failed());
        }
    }
}
