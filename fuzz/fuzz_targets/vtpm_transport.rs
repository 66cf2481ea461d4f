//! The vTPM service's transport checks (TPM_SEND_COMMAND framing, locality, sizes, the
//! response checks, failure mode) in front of a fake engine whose answers come from the
//! input: any locality, size and content from the guest, any response from the engine.
//!
//! An input that starts with `vtpm::trace::MAGIC` is a recorded session instead
//! (`vtpm-daemon --trace`): its commands become the guest's requests and its responses
//! the engine's replies, so the fuzzer mutates real traffic.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use svsm_protocol::vtpm::{
    SendCommandRequest, MAX_RESPONSE_SIZE, VTPM_BUFFER_MAX as TRANSPORT_BUFFER_SIZE,
};
use vtpm::trace::{self, Kind};
use vtpm::{Engine, EngineError, Service, Vtpm};

/// An engine that starts up cleanly, then answers with what the input says.
struct Fake {
    started: usize,
    replies: Vec<Reply>,
    next: usize,
    response: Vec<u8>,
    failed: bool,
}

#[derive(Debug, Arbitrary, Clone)]
enum Reply {
    /// A well-formed response of this code and body.
    Whole { code: u32, body: Vec<u8> },
    /// Raw bytes, whatever they claim.
    Raw(Vec<u8>),
    /// The engine reports an error.
    Error,
    /// The engine enters failure mode.
    Fail,
    /// A response longer than any the transport can carry.
    Huge(u16),
}

fn whole(code: u32, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(10 + body.len());
    r.extend_from_slice(&0x8001u16.to_be_bytes());
    r.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    r.extend_from_slice(&code.to_be_bytes());
    r.extend_from_slice(body);
    r
}

impl Engine for Fake {
    fn execute(&mut self, _locality: u8, command: &mut [u8]) -> Result<(), EngineError> {
        // Start-up: Startup, then CreatePrimary + FlushContext for each EK.
        if self.started < 5 {
            self.started += 1;
            let code = command
                .get(6..10)
                .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
            self.response = if code == 0x131 {
                let mut body = vec![0x80, 0, 0, 1, 0, 0, 0, 0];
                body.extend_from_slice(&4u16.to_be_bytes());
                body.extend_from_slice(&[0, 1, 0, 0xB]);
                whole(0, &body)
            } else {
                whole(0, &[])
            };
            return Ok(());
        }
        let reply = self.replies.get(self.next).cloned().unwrap_or(Reply::Error);
        self.next += 1;
        match reply {
            Reply::Whole { code, body } => self.response = whole(code, &body),
            Reply::Raw(bytes) => self.response = bytes,
            Reply::Error => return Err(EngineError::Process(1)),
            Reply::Fail => self.failed = true,
            Reply::Huge(extra) => {
                self.response = whole(0, &vec![0u8; MAX_RESPONSE_SIZE + usize::from(extra)])
            }
        }
        Ok(())
    }
    fn response(&self) -> &[u8] {
        &self.response
    }
    fn failed(&self) -> bool {
        self.failed
    }
    fn buffer_size(&self) -> u32 {
        4087
    }
}

#[derive(Debug, Arbitrary)]
struct Request {
    /// The guest's buffer as the service copies it in (header and command).
    buffer: Vec<u8>,
    /// How much of the 4 KiB transport buffer the handler gets.
    short: Option<u16>,
    /// Or the direct entry point with this locality.
    execute: Option<u8>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    replies: Vec<Reply>,
    requests: Vec<Request>,
}

impl Input {
    /// A recorded session's requests and replies, or the structured input.
    fn from_data(data: &[u8]) -> Option<Self> {
        let Ok(records) = trace::records(data) else {
            return Input::arbitrary_take_rest(Unstructured::new(data)).ok();
        };
        let mut input = Input {
            replies: Vec::new(),
            requests: Vec::new(),
        };
        for record in records.map_while(Result::ok) {
            match record.kind {
                Kind::Command => {
                    let mut buffer = vec![0u8; TRANSPORT_BUFFER_SIZE];
                    let request = SendCommandRequest {
                        locality: record.locality,
                        command: record.payload,
                    };
                    if let Ok(n) = request.encode(&mut buffer) {
                        buffer.truncate(n);
                        input.requests.push(Request {
                            buffer,
                            short: None,
                            execute: None,
                        });
                    }
                }
                Kind::Response => input.replies.push(Reply::Raw(record.payload.to_vec())),
                Kind::PowerOn | Kind::PowerOff => {}
            }
        }
        Some(input)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::from_data(data) else {
        return;
    };
    let engine = Fake {
        started: 0,
        replies: input.replies,
        next: 0,
        response: Vec::new(),
        failed: false,
    };
    let mut service = Service::start(engine).expect("the fake engine starts");
    for request in input.requests.iter().take(256) {
        if let Some(locality) = request.execute {
            let mut command = request.buffer.clone();
            let mut response = vec![0u8; MAX_RESPONSE_SIZE];
            if let Ok(n) = service.execute(locality, &mut command, &mut response) {
                assert!(n <= MAX_RESPONSE_SIZE);
                assert_eq!(locality, 0);
            }
            continue;
        }
        let mut buffer = vec![0u8; TRANSPORT_BUFFER_SIZE];
        let n = request.buffer.len().min(TRANSPORT_BUFFER_SIZE);
        buffer[..n].copy_from_slice(&request.buffer[..n]);
        let len = request.short.map_or(TRANSPORT_BUFFER_SIZE, |s| {
            usize::from(s) % TRANSPORT_BUFFER_SIZE
        });
        let was_failed = service.is_failed();
        if let Ok(n) = service.handle_request(&mut buffer[..len]) {
            // A response: 4-byte length then a whole TPM response that fits.
            assert!(n >= 4 + 10 && n <= TRANSPORT_BUFFER_SIZE);
            let size = u32::from_le_bytes(buffer[..4].try_into().unwrap()) as usize;
            assert_eq!(size + 4, n);
            let tpm_size = u32::from_be_bytes(buffer[6..10].try_into().unwrap()) as usize;
            assert_eq!(tpm_size, size);
            if was_failed {
                // Failure mode is sticky: TPM_RC_FAILURE only.
                assert_eq!(&buffer[10..14], &0x101u32.to_be_bytes());
            }
        }
    }
});
