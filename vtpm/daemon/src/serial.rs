//! A backend to the vTPM inside the bare-metal SVSM kernel, over QEMU's COM2.
//!
//! QEMU connects the kernel's second UART to a Unix socket (`-serial
//! unix:PATH,server=on,wait=off`); this backend connects to that socket and frames each
//! request for the kernel's TPM channel (`svsm/src/kernel/tpm_channel.rs`), all integers
//! little-endian:
//! - request: `b"TPMQ"`, u8 operation, u8 locality, u32 tag, u32 length, payload;
//! - response: `b"TPMA"`, u32 tag, u32 status, u32 length, payload.
//!
//! Each request carries a fresh tag and only the answer with that tag counts, so an
//! answer to a request abandoned after a timeout cannot be mistaken for the next one.
//! The in-kernel TPM lives as long as the SVSM: it is always on, and it cannot be
//! powered off (restarting the engine would silently reset its PCRs).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{BackendError, TpmBackend};

/// Request magic.
pub const REQUEST_MAGIC: [u8; 4] = *b"TPMQ";
/// Response magic.
pub const RESPONSE_MAGIC: [u8; 4] = *b"TPMA";
/// Operation: run a TPM command.
pub const OP_COMMAND: u8 = 1;
/// Operation: is the TPM there and on?
pub const OP_PING: u8 = 2;
/// The largest command the kernel's channel accepts.
pub const MAX_PAYLOAD: usize = 4096;
/// Status: success.
pub const STATUS_SUCCESS: u32 = 0;
/// Status: locality refused.
pub const STATUS_LOCALITY: u32 = 1;
/// Status: command too large.
pub const STATUS_TOO_LARGE: u32 = 2;
/// Status: command shorter than its header says.
pub const STATUS_TRUNCATED: u32 = 3;
/// Status: unknown operation.
pub const STATUS_UNKNOWN_OPERATION: u32 = 4;

/// How long a TPM command may take in the kernel (RSA key generation under TCG is slow).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long to wait for an answer to a ping before asking again.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The in-kernel vTPM, reached through QEMU's COM2 socket.
#[derive(Debug)]
pub struct SerialBackend {
    stream: UnixStream,
    path: PathBuf,
    next_tag: u32,
}

fn transport(path: &Path, what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Transport(format!("{}: {what}: {e}", path.display()))
}

impl SerialBackend {
    /// Connects to QEMU's socket at `path` and waits until the kernel answers, for at
    /// most `wait` (QEMU may still be starting, the kernel still booting).
    pub fn connect(path: &Path, wait: Duration) -> Result<Self, BackendError> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(transport(path, "cannot connect to QEMU's COM2 socket", e))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let mut backend = Self {
            stream,
            path: path.to_path_buf(),
            next_tag: 1,
        };
        loop {
            match backend.request(OP_PING, 0, &[], PING_TIMEOUT) {
                Ok((STATUS_SUCCESS, _)) => return Ok(backend),
                Ok((status, _)) => {
                    return Err(transport(path, "the kernel refused a ping", status));
                }
                Err(_) if Instant::now() < deadline => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one request and waits up to `timeout` for the answer with its tag; returns
    /// the status and the payload.
    fn request(
        &mut self,
        op: u8,
        locality: u8,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(u32, Vec<u8>), BackendError> {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        let len = u32::try_from(payload.len())
            .map_err(|_| BackendError::CommandTooLarge(payload.len()))?;
        let mut frame = Vec::with_capacity(14 + payload.len());
        frame.extend_from_slice(&REQUEST_MAGIC);
        frame.extend_from_slice(&[op, locality]);
        frame.extend_from_slice(&tag.to_le_bytes());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(payload);
        self.stream
            .write_all(&frame)
            .map_err(|e| transport(&self.path, "cannot send to the kernel", e))?;
        let deadline = Instant::now() + timeout;
        loop {
            let (answer_tag, status, body) = self.read_answer(deadline)?;
            if answer_tag == tag {
                return Ok((status, body));
            }
            // A stale answer to an abandoned request: drop it.
        }
    }

    /// Reads the next answer, skipping bytes until the response magic.
    fn read_answer(&mut self, deadline: Instant) -> Result<(u32, u32, Vec<u8>), BackendError> {
        let mut window = [0u8; 4];
        while window != RESPONSE_MAGIC {
            window.rotate_left(1);
            window[3] = self.read_bytes::<1>(deadline)?[0];
        }
        let tag = u32::from_le_bytes(self.read_bytes::<4>(deadline)?);
        let status = u32::from_le_bytes(self.read_bytes::<4>(deadline)?);
        let len = u32::from_le_bytes(self.read_bytes::<4>(deadline)?) as usize;
        if len > MAX_PAYLOAD {
            return Err(transport(
                &self.path,
                "the kernel announced an oversized answer",
                len,
            ));
        }
        let mut body = vec![0u8; len];
        self.read_into(&mut body, deadline)?;
        Ok((tag, status, body))
    }

    fn read_bytes<const N: usize>(&mut self, deadline: Instant) -> Result<[u8; N], BackendError> {
        let mut buf = [0u8; N];
        self.read_into(&mut buf, deadline)?;
        Ok(buf)
    }

    fn read_into(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), BackendError> {
        let mut filled = 0;
        while filled < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(transport(
                    &self.path,
                    "no answer from the kernel",
                    "timed out",
                ));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| transport(&self.path, "cannot set a timeout", e))?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(transport(
                        &self.path,
                        "QEMU closed the socket",
                        "end of stream",
                    ))
                }
                Ok(n) => filled += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(transport(&self.path, "cannot read from the kernel", e)),
            }
        }
        Ok(())
    }
}

impl TpmBackend for SerialBackend {
    fn command(&mut self, locality: u8, command: &[u8]) -> Result<Vec<u8>, BackendError> {
        if command.len() > MAX_PAYLOAD {
            return Err(BackendError::CommandTooLarge(command.len()));
        }
        let (status, response) = self.request(OP_COMMAND, locality, command, COMMAND_TIMEOUT)?;
        match status {
            STATUS_SUCCESS => Ok(response),
            STATUS_LOCALITY => Err(BackendError::Locality(locality)),
            STATUS_TOO_LARGE => Err(BackendError::CommandTooLarge(command.len())),
            STATUS_TRUNCATED => Err(transport(
                &self.path,
                "the kernel refused the command",
                "shorter than its header says",
            )),
            other => Err(transport(
                &self.path,
                "the kernel answered with status",
                other,
            )),
        }
    }

    /// The in-kernel TPM is always on: checks that it answers.
    fn power_on(&mut self) -> Result<(), BackendError> {
        match self.request(OP_PING, 0, &[], COMMAND_TIMEOUT)? {
            (STATUS_SUCCESS, _) => Ok(()),
            (status, _) => Err(transport(&self.path, "the kernel refused a ping", status)),
        }
    }

    /// Refused: the in-kernel TPM lives as long as the SVSM, and restarting it would
    /// silently reset its PCRs.
    fn power_off(&mut self) -> Result<(), BackendError> {
        Err(BackendError::Transport(
            "the in-kernel vTPM cannot be powered off: it lives as long as the SVSM".into(),
        ))
    }

    fn set_cancel(&mut self, _on: bool) {
        // The kernel runs each command to completion.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake kernel on the other end of a socket pair: answers with scripted frames.
    fn fake_kernel(answers: Vec<Vec<u8>>) -> (PathBuf, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        let dir = std::env::temp_dir().join(format!(
            "vtpm-serial-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("com2.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut requests = Vec::new();
            for answer in answers {
                let mut header = [0u8; 14];
                s.read_exact(&mut header).expect("request header");
                let len = u32::from_le_bytes(header[10..14].try_into().expect("4 bytes")) as usize;
                let mut body = vec![0u8; len];
                s.read_exact(&mut body).expect("request body");
                let mut request = header.to_vec();
                request.extend_from_slice(&body);
                requests.push(request);
                s.write_all(&answer).expect("answer");
            }
            requests
        });
        (path, handle)
    }

    fn answer(tag: u32, status: u32, body: &[u8]) -> Vec<u8> {
        let mut a = RESPONSE_MAGIC.to_vec();
        a.extend_from_slice(&tag.to_le_bytes());
        a.extend_from_slice(&status.to_le_bytes());
        a.extend_from_slice(&(body.len() as u32).to_le_bytes());
        a.extend_from_slice(body);
        a
    }

    #[test]
    fn frames_commands_and_skips_stale_answers() {
        let mut second = b"noise".to_vec();
        second.extend(answer(1, 0, b"stale")); // an old answer, wrong tag for request 2
        second.extend(answer(2, 0, b"\x80\x01\0\0\0\x0a\0\0\0\0"));
        let (path, kernel) = fake_kernel(vec![answer(1, 0, &[]), second]);
        let mut backend = SerialBackend::connect(&path, Duration::from_secs(5)).expect("connect");
        let response = backend
            .command(0, b"\x80\x01\0\0\0\x0c\0\0\x01\x44\0\0")
            .expect("command");
        assert_eq!(response, b"\x80\x01\0\0\0\x0a\0\0\0\0");
        let requests = kernel.join().expect("fake kernel");
        assert_eq!(&requests[0][..6], b"TPMQ\x02\x00");
        assert_eq!(&requests[1][..6], b"TPMQ\x01\x00");
        assert_eq!(&requests[1][6..10], &2u32.to_le_bytes());
        assert_eq!(&requests[1][14..], b"\x80\x01\0\0\0\x0c\0\0\x01\x44\0\0");
    }

    #[test]
    fn maps_refusals_and_refuses_power_off() {
        let (path, kernel) = fake_kernel(vec![answer(1, 0, &[]), answer(2, STATUS_LOCALITY, &[])]);
        let mut backend = SerialBackend::connect(&path, Duration::from_secs(5)).expect("connect");
        assert_eq!(
            backend.command(3, b"\x80\x01\0\0\0\x0a\0\0\x01\x44"),
            Err(BackendError::Locality(3))
        );
        assert!(matches!(
            backend.power_off(),
            Err(BackendError::Transport(_))
        ));
        assert_eq!(
            backend.command(0, &vec![0u8; MAX_PAYLOAD + 1]),
            Err(BackendError::CommandTooLarge(MAX_PAYLOAD + 1))
        );
        kernel.join().expect("fake kernel");
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let err = SerialBackend::connect(
            Path::new("/nonexistent/com2.sock"),
            Duration::from_millis(200),
        )
        .expect_err("no socket");
        match err {
            BackendError::Transport(why) => {
                assert!(why.contains("/nonexistent/com2.sock"), "{why}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
