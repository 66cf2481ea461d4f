//! The host's vTPM state store helper: answers the SVSM kernel's store channel
//! (`svsm_protocol::state_store`, COM3) from a [`BlobStore`], in practice the same
//! atomically replaced [`StateFile`](crate::state_file::StateFile) as `vtpm-daemon
//! --state`.
//!
//! The helper never sees anything but the sealed blob. It trusts nothing the channel
//! sends either: a malformed or oversized request is answered `BadRequest` without
//! touching the store, and the stream resynchronizes on the next request magic.

use std::io::{self, ErrorKind, Read, Write};

use svsm_protocol::state_store::{
    Operation, Request, Response, Status, HEADER_SIZE, MAX_BLOB, REQUEST_MAGIC,
};
use vtpm::state::BlobStore;

/// What a served connection did (for the helper's log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Gets answered.
    pub gets: u64,
    /// Puts made durable.
    pub puts: u64,
    /// Requests refused or failed.
    pub failures: u64,
}

/// Reads one byte; `None` at the end of the stream.
fn next_byte(stream: &mut impl Read) -> io::Result<Option<u8>> {
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(byte[0])),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn respond(stream: &mut impl Write, sequence: u32, status: Status, blob: &[u8]) -> io::Result<()> {
    let header = Response {
        sequence,
        status,
        length: blob.len(),
    }
    .header();
    stream.write_all(&header)?;
    stream.write_all(blob)?;
    stream.flush()
}

/// Serves requests from `stream` with `store` until the stream ends (the VM stopped).
pub fn serve<S: Read + Write>(mut stream: S, store: &mut dyn BlobStore) -> io::Result<Served> {
    let mut served = Served::default();
    let mut window = [0u8; 4];
    loop {
        let Some(byte) = next_byte(&mut stream)? else {
            return Ok(served);
        };
        window.rotate_left(1);
        window[3] = byte;
        if window != REQUEST_MAGIC {
            continue;
        }
        window = [0; 4];
        let mut header = [0u8; HEADER_SIZE];
        header[..4].copy_from_slice(&REQUEST_MAGIC);
        match stream.read_exact(&mut header[4..]) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(served),
            Err(e) => return Err(e),
        }
        let sequence = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let request = match Request::parse(&header) {
            Ok(request) => request,
            Err(e) => {
                eprintln!("vtpm-state-store: refused a request: {e}");
                served.failures += 1;
                respond(&mut stream, sequence, Status::BadRequest, &[])?;
                continue;
            }
        };
        match request.operation {
            Operation::Get => match store.load() {
                Ok(Some(blob)) if blob.len() <= MAX_BLOB => {
                    served.gets += 1;
                    respond(&mut stream, sequence, Status::Ok, &blob)?;
                }
                Ok(Some(blob)) => {
                    eprintln!(
                        "vtpm-state-store: the kept state is {} bytes, more than the channel \
                         carries ({MAX_BLOB})",
                        blob.len()
                    );
                    served.failures += 1;
                    respond(&mut stream, sequence, Status::StoreFailed, &[])?;
                }
                Ok(None) => {
                    served.gets += 1;
                    respond(&mut stream, sequence, Status::Empty, &[])?;
                }
                Err(_) => {
                    served.failures += 1;
                    respond(&mut stream, sequence, Status::StoreFailed, &[])?;
                }
            },
            Operation::Put => {
                let mut blob = vec![0u8; request.length];
                match stream.read_exact(&mut blob) {
                    Ok(()) => {}
                    // The VM stopped mid-request: the previous state stays.
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(served),
                    Err(e) => return Err(e),
                }
                let status = match store.store(&blob) {
                    Ok(()) => {
                        served.puts += 1;
                        Status::Ok
                    }
                    Err(_) => {
                        served.failures += 1;
                        Status::StoreFailed
                    }
                };
                respond(&mut stream, sequence, status, &[])?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vtpm::state::StateError;

    struct Memory {
        blob: Option<Vec<u8>>,
        fail: bool,
    }

    impl BlobStore for Memory {
        fn load(&mut self) -> Result<Option<Vec<u8>>, StateError> {
            if self.fail {
                return Err(StateError::Store);
            }
            Ok(self.blob.clone())
        }
        fn store(&mut self, blob: &[u8]) -> Result<(), StateError> {
            if self.fail {
                return Err(StateError::Store);
            }
            self.blob = Some(blob.to_vec());
            Ok(())
        }
    }

    /// A stream that reads `input` and records what is written.
    struct Script {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn request(operation: Operation, sequence: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Request {
            operation,
            sequence,
            length: payload.len(),
        }
        .header()
        .to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// The responses in `output`: (sequence, status, payload).
    fn responses(mut output: &[u8]) -> Vec<(u32, Status, Vec<u8>)> {
        let mut out = Vec::new();
        while !output.is_empty() {
            let header: [u8; HEADER_SIZE] = output[..HEADER_SIZE].try_into().unwrap();
            let status =
                Status::from_code(u32::from_le_bytes(header[8..12].try_into().unwrap())).unwrap();
            let len = u32::from_le_bytes(header[12..].try_into().unwrap()) as usize;
            let sequence = u32::from_le_bytes(header[4..8].try_into().unwrap());
            out.push((
                sequence,
                status,
                output[HEADER_SIZE..HEADER_SIZE + len].to_vec(),
            ));
            output = &output[HEADER_SIZE + len..];
        }
        out
    }

    fn run(input: Vec<u8>, store: &mut Memory) -> (Served, Vec<(u32, Status, Vec<u8>)>) {
        let mut script = Script {
            input: io::Cursor::new(input),
            output: Vec::new(),
        };
        let served = serve(&mut script, store).unwrap();
        (served, responses(&script.output))
    }

    #[test]
    fn gets_and_puts_are_answered_after_garbage_and_bad_requests() {
        let mut store = Memory {
            blob: None,
            fail: false,
        };
        let mut input = b"noise".to_vec();
        input.extend(request(Operation::Get, 1, &[]));
        input.extend(request(Operation::Put, 2, b"sealed"));
        // An oversized Put: refused without reading (or storing) anything.
        let mut oversized = request(Operation::Put, 3, &[]);
        oversized[12..16].copy_from_slice(&(MAX_BLOB as u32 + 1).to_le_bytes());
        input.extend(oversized);
        // An unknown operation.
        let mut unknown = request(Operation::Get, 4, &[]);
        unknown[4] = 7;
        input.extend(unknown);
        input.extend(request(Operation::Get, 5, &[]));
        // The VM stops in the middle of a Put: nothing is stored.
        input.extend(&request(Operation::Put, 6, b"torn blob")[..HEADER_SIZE + 3]);
        let (served, answers) = run(input, &mut store);
        assert_eq!(
            answers,
            vec![
                (1, Status::Empty, vec![]),
                (2, Status::Ok, vec![]),
                (3, Status::BadRequest, vec![]),
                (4, Status::BadRequest, vec![]),
                (5, Status::Ok, b"sealed".to_vec()),
            ]
        );
        assert_eq!(
            served,
            Served {
                gets: 2,
                puts: 1,
                failures: 2
            }
        );
        assert_eq!(store.blob.as_deref(), Some(&b"sealed"[..]));
    }

    #[test]
    fn a_failing_store_is_reported_and_keeps_nothing_new() {
        let mut store = Memory {
            blob: Some(b"old".to_vec()),
            fail: true,
        };
        let mut input = request(Operation::Put, 1, b"new");
        input.extend(request(Operation::Get, 2, &[]));
        let (served, answers) = run(input, &mut store);
        assert_eq!(
            answers,
            vec![
                (1, Status::StoreFailed, vec![]),
                (2, Status::StoreFailed, vec![]),
            ]
        );
        assert_eq!(served.failures, 2);
        assert_eq!(store.blob.as_deref(), Some(&b"old"[..]));
    }
}
