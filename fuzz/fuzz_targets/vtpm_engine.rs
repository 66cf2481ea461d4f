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

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use svsm_protocol::vtpm::{MAX_RESPONSE_SIZE, VTPM_BUFFER_MAX};
use vtpm::{OsEntropy, Vtpm};

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

fuzz_target!(|commands: Vec<Command>| {
    let mut service = vtpm::start(Box::new(OsEntropy)).expect("the engine starts");
    for command in commands.iter().take(16) {
        let bytes = command.encode();
        let mut buffer = vec![0u8; VTPM_BUFFER_MAX];
        buffer[..4].copy_from_slice(&8u32.to_le_bytes());
        buffer[4] = 0;
        buffer[5..9].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        buffer[9..9 + bytes.len()].copy_from_slice(&bytes);
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
