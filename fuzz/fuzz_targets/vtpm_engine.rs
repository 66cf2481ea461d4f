//! The vTPM service in front of the real engine (libtpms), powered on afresh for every
//! input (the engine is one global instance with a sticky failure mode).
//!
//! The input is a sequence of well-formed TPM commands (correct header, size and
//! authorization area) with fuzzed parameters, so the fuzzer gets past the header checks
//! into the commands' parameter parsing. The Debian archive carries no coverage
//! instrumentation: inside the engine this target is blind (OSS-Fuzz fuzzes
//! TPMLIB_Process itself); what it checks is that every response the service hands out
//! is whole and fits, whatever the engine does.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use svsm_protocol::vtpm::SendCommandRequest;
use svsm_protocol::vtpm::{MAX_RESPONSE_SIZE, VTPM_BUFFER_MAX};
use vtpm::trace::{self, Kind};
use vtpm::{OsEntropy, Vtpm};

/// Commands replayed from one recorded session at most.
const MAX_TRACE_COMMANDS: usize = 256;

/// Command codes the engine implements (TPM 2.0 part 2, TPM_CC), a mix of the common
/// and the parsing-heavy.
const CODES: [u32; 40] = [
    0x17B, 0x182, 0x17E, 0x131, 0x165, 0x17A, 0x153, 0x157, 0x158, 0x15D, 0x15E, 0x176, 0x177,
    0x178, 0x179, 0x17F, 0x180, 0x181, 0x183, 0x184, 0x185, 0x186, 0x187, 0x188, 0x189, 0x18A,
    0x18B, 0x18C, 0x18D, 0x18E, 0x191, 0x192, 0x193, 0x161, 0x16B, 0x14E, 0x145, 0x146, 0x14F,
    0x127,
];

#[derive(Debug, Arbitrary)]
struct Command {
    code: u8,
    raw_code: Option<u32>,
    handles: Vec<u32>,
    session: bool,
    params: Vec<u8>,
}

impl Command {
    fn encode(&self) -> Vec<u8> {
        let code = self
            .raw_code
            .unwrap_or(CODES[usize::from(self.code) % CODES.len()]);
        let mut out = Vec::new();
        let tag: u16 = if self.session { 0x8002 } else { 0x8001 };
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&code.to_be_bytes());
        for h in self.handles.iter().take(3) {
            out.extend_from_slice(&h.to_be_bytes());
        }
        if self.session {
            // One password session (TPM_RS_PW), empty nonce and password.
            out.extend_from_slice(&9u32.to_be_bytes());
            out.extend_from_slice(&0x4000_0009u32.to_be_bytes());
            out.extend_from_slice(&[0, 0, 1, 0, 0]);
        }
        let room = 4000usize.saturating_sub(out.len());
        out.extend_from_slice(&self.params[..self.params.len().min(room)]);
        let size = (out.len() as u32).to_be_bytes();
        out[2..6].copy_from_slice(&size);
        out
    }
}

/// The commands of the input: a recorded session's, or the structured ones encoded.
fn commands(data: &[u8]) -> Vec<Vec<u8>> {
    match trace::records(data) {
        Ok(records) => records
            .map_while(Result::ok)
            .filter(|r| r.kind == Kind::Command)
            .take(MAX_TRACE_COMMANDS)
            .map(|r| r.payload.to_vec())
            .collect(),
        Err(_) => Vec::<Command>::arbitrary_take_rest(Unstructured::new(data))
            .unwrap_or_default()
            .iter()
            .take(16)
            .map(Command::encode)
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let commands = commands(data);
    if commands.is_empty() {
        return;
    }
    let mut service = vtpm::start(Box::new(OsEntropy)).expect("the engine starts");
    for bytes in &commands {
        let mut buffer = vec![0u8; VTPM_BUFFER_MAX];
        let request = SendCommandRequest {
            locality: 0,
            command: bytes,
        };
        if request.encode(&mut buffer).is_err() {
            // A recorded command larger than the transport carries: skip it.
            continue;
        }
        let n = service
            .handle_request(&mut buffer)
            .expect("a well-formed request");
        let size = u32::from_le_bytes(buffer[..4].try_into().unwrap()) as usize;
        assert_eq!(size + 4, n);
        assert!(size >= 10 && size <= MAX_RESPONSE_SIZE);
        let tpm_size = u32::from_be_bytes(buffer[6..10].try_into().unwrap()) as usize;
        assert_eq!(tpm_size, size);
    }
});
