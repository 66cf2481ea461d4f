//! The SVSM side of the vTPM state store channel (`svsm_protocol::state_store`): a
//! polled 16550 UART (COM3) to the host's store helper, as a [`BlobStore`].
//!
//! Port I/O goes through [`PortIo`]: in the kernel the IN/OUT instructions, which under
//! SEV-SNP become GHCB IOIO exits (`svsm::arch::io`); in host tests the emulated
//! hypervisor's GHCB, so the same driver and framing code runs over the emulated GHCB.
//!
//! The host is untrusted and may be absent, slow or hostile:
//! - a UART that does not hold a scratch value is absent: no channel;
//! - every wait is bounded ([`StoreChannel::with_poll_limit`]); a host that stops
//!   answering fails the request, never hangs the SVSM;
//! - a response must carry this request's sequence number and pass
//!   `Response::parse` (known status, bounded length, a payload only where one belongs)
//!   before any payload byte is read; at most [`MAX_SKIPPED`] stray bytes are skipped
//!   before its magic;
//! - every failure is logged with its reason and reported as [`StateError::Store`]: the
//!   engine then fails the command that committed and stays in failure mode, while the
//!   host keeps the previous blob.

use alloc::vec;
use alloc::vec::Vec;

use svsm_protocol::state_store::{
    FrameError, Operation, Request, Response, Status, HEADER_SIZE, MAX_BLOB, RESPONSE_MAGIC,
};
use vtpm::state::{BlobStore, StateError};

/// Byte-wide port I/O.
pub trait PortIo: Send {
    /// IN: one byte from `port`.
    fn inb(&self, port: u16) -> u8;
    /// OUT: one byte to `port`.
    fn outb(&self, port: u16, value: u8);
}

const DATA: u16 = 0;
const INTERRUPT_ENABLE: u16 = 1;
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;
const SCRATCH: u16 = 7;
const DATA_READY: u8 = 0x01;
const TX_EMPTY: u8 = 0x20;

/// How many bytes before a response's magic are skipped before the response counts as
/// missing (stale bytes of an earlier, abandoned exchange).
pub const MAX_SKIPPED: usize = 4096;

/// The default bound on status polls per byte: long enough for a host that fsyncs a
/// file on slow storage (a poll is a VM exit, roughly a microsecond or more), short
/// enough that a host that never answers fails the request in tens of seconds.
pub const DEFAULT_POLL_LIMIT: u64 = 50_000_000;

/// Why an exchange failed (logged; the engine sees [`StateError::Store`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelError {
    /// No UART at the channel's base (its scratch register does not hold a value).
    NoUart,
    /// The host did not take or send a byte in time.
    Timeout,
    /// No response magic within [`MAX_SKIPPED`] bytes.
    NoResponse,
    /// A malformed response header.
    Frame(FrameError),
    /// A response to another request.
    Sequence {
        /// The request's sequence number.
        expected: u32,
        /// The response's.
        got: u32,
    },
    /// The host answered with this status.
    Host(Status),
    /// A blob longer than the channel carries.
    TooLarge(usize),
}

impl core::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoUart => f.write_str("no UART at the store channel's port"),
            Self::Timeout => f.write_str("the host store helper did not answer in time"),
            Self::NoResponse => f.write_str("no response from the host store helper"),
            Self::Frame(e) => write!(f, "a malformed response: {e}"),
            Self::Sequence { expected, got } => {
                write!(f, "a response to request {got}, not {expected}")
            }
            Self::Host(s) => write!(f, "the host store helper answered {s:?}"),
            Self::TooLarge(n) => write!(f, "a {n}-byte blob (the limit is {MAX_BLOB})"),
        }
    }
}

/// A polled 16550 UART.
#[derive(Debug)]
pub struct Uart<P> {
    io: P,
    base: u16,
    poll_limit: u64,
}

impl<P: PortIo> Uart<P> {
    /// The UART at `base`: checks that one is there (its scratch register keeps a
    /// value), then sets 8N1, FIFOs on, no interrupts (it is polled).
    pub fn probe(io: P, base: u16, poll_limit: u64) -> Result<Self, ChannelError> {
        for value in [0x5A, 0xA5] {
            io.outb(base + SCRATCH, value);
            if io.inb(base + SCRATCH) != value {
                return Err(ChannelError::NoUart);
            }
        }
        io.outb(base + INTERRUPT_ENABLE, 0x00);
        io.outb(base + LINE_CONTROL, 0x80); // divisor latch
        io.outb(base + DATA, 0x01); // divisor 1: 115200 baud
        io.outb(base + INTERRUPT_ENABLE, 0x00);
        io.outb(base + LINE_CONTROL, 0x03); // 8N1
        io.outb(base + FIFO_CONTROL, 0xc7);
        io.outb(base + MODEM_CONTROL, 0x03); // DTR, RTS
        Ok(Self {
            io,
            base,
            poll_limit,
        })
    }

    fn wait_for(&self, bit: u8) -> Result<(), ChannelError> {
        for _ in 0..self.poll_limit {
            if self.io.inb(self.base + LINE_STATUS) & bit != 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(ChannelError::Timeout)
    }

    /// Sends `bytes`.
    pub fn write_all(&self, bytes: &[u8]) -> Result<(), ChannelError> {
        for &b in bytes {
            self.wait_for(TX_EMPTY)?;
            self.io.outb(self.base + DATA, b);
        }
        Ok(())
    }

    /// Receives one byte.
    pub fn read_byte(&self) -> Result<u8, ChannelError> {
        self.wait_for(DATA_READY)?;
        Ok(self.io.inb(self.base + DATA))
    }

    /// Fills `buf`.
    pub fn read_exact(&self, buf: &mut [u8]) -> Result<(), ChannelError> {
        for b in buf {
            *b = self.read_byte()?;
        }
        Ok(())
    }

    /// Discards whatever the host already sent.
    fn drain(&self) {
        for _ in 0..MAX_SKIPPED {
            if self.io.inb(self.base + LINE_STATUS) & DATA_READY == 0 {
                return;
            }
            self.io.inb(self.base + DATA);
        }
    }
}

/// The store channel to the host's store helper.
#[derive(Debug)]
pub struct StoreChannel<P> {
    uart: Uart<P>,
    sequence: u32,
}

impl<P: PortIo> StoreChannel<P> {
    /// The channel on the UART at `base` with [`DEFAULT_POLL_LIMIT`].
    pub fn new(io: P, base: u16) -> Result<Self, ChannelError> {
        Self::with_poll_limit(io, base, DEFAULT_POLL_LIMIT)
    }

    /// The channel on the UART at `base`, waiting at most `poll_limit` status polls for
    /// each byte.
    pub fn with_poll_limit(io: P, base: u16, poll_limit: u64) -> Result<Self, ChannelError> {
        Ok(Self {
            uart: Uart::probe(io, base, poll_limit)?,
            sequence: 0,
        })
    }

    /// One exchange: the request (with `payload`), then the checked response header;
    /// the response's payload is read into the returned vector.
    fn exchange(
        &mut self,
        operation: Operation,
        payload: &[u8],
    ) -> Result<(Status, Vec<u8>), ChannelError> {
        if payload.len() > MAX_BLOB {
            return Err(ChannelError::TooLarge(payload.len()));
        }
        self.sequence = self.sequence.wrapping_add(1);
        let request = Request {
            operation,
            sequence: self.sequence,
            length: payload.len(),
        };
        // Whatever an abandoned exchange left behind is not this answer.
        self.uart.drain();
        self.uart.write_all(&request.header())?;
        self.uart.write_all(payload)?;
        let mut header = [0u8; HEADER_SIZE];
        self.sync()?;
        header[..4].copy_from_slice(&RESPONSE_MAGIC);
        self.uart.read_exact(&mut header[4..])?;
        let response = Response::parse(&header, operation).map_err(ChannelError::Frame)?;
        if response.sequence != self.sequence {
            return Err(ChannelError::Sequence {
                expected: self.sequence,
                got: response.sequence,
            });
        }
        let mut body = vec![0u8; response.length];
        self.uart.read_exact(&mut body)?;
        Ok((response.status, body))
    }

    /// Waits for the response magic, skipping at most [`MAX_SKIPPED`] other bytes.
    fn sync(&self) -> Result<(), ChannelError> {
        let mut window = [0u8; 4];
        for _ in 0..MAX_SKIPPED + RESPONSE_MAGIC.len() {
            window.rotate_left(1);
            window[3] = self.uart.read_byte()?;
            if window == RESPONSE_MAGIC {
                return Ok(());
            }
        }
        Err(ChannelError::NoResponse)
    }

    /// The kept blob, if any.
    pub fn get(&mut self) -> Result<Option<Vec<u8>>, ChannelError> {
        match self.exchange(Operation::Get, &[])? {
            (Status::Ok, blob) => Ok(Some(blob)),
            (Status::Empty, _) => Ok(None),
            (status, _) => Err(ChannelError::Host(status)),
        }
    }

    /// Replaces the kept blob; returns once the host reports it durable.
    pub fn put(&mut self, blob: &[u8]) -> Result<(), ChannelError> {
        match self.exchange(Operation::Put, blob)? {
            (Status::Ok, _) => Ok(()),
            (status, _) => Err(ChannelError::Host(status)),
        }
    }
}

impl<P: PortIo> BlobStore for StoreChannel<P> {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StateError> {
        self.get().map_err(|e| {
            log::error!("vTPM state store: cannot load the sealed state: {e}");
            StateError::Store
        })
    }

    fn store(&mut self, blob: &[u8]) -> Result<(), StateError> {
        self.put(blob).map_err(|e| {
            log::error!(
                "vTPM state store: cannot store the sealed state ({} bytes): {e}; \
                 the host keeps the previous one",
                blob.len()
            );
            StateError::Store
        })
    }
}

/// A [`BlobStore`] whose first load returns a blob fetched earlier (to pick the key
/// from its header before the engine starts) instead of fetching it again.
#[derive(Debug)]
pub struct Prefetched<B> {
    inner: B,
    first: Option<Option<Vec<u8>>>,
}

impl<B: BlobStore> Prefetched<B> {
    /// `inner`, whose first load answers `blob`.
    pub fn new(inner: B, blob: Option<Vec<u8>>) -> Self {
        Self {
            inner,
            first: Some(blob),
        }
    }
}

impl<B: BlobStore> BlobStore for Prefetched<B> {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StateError> {
        match self.first.take() {
            Some(blob) => Ok(blob),
            None => self.inner.load(),
        }
    }

    fn store(&mut self, blob: &[u8]) -> Result<(), StateError> {
        self.first = None;
        self.inner.store(blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use svsm_protocol::state_store::STORE_UART_BASE;

    type Responder = Box<dyn FnMut(Request, &[u8]) -> Vec<u8> + Send>;

    struct State {
        rx: VecDeque<u8>,
        tx: Vec<u8>,
        scratch: u8,
        line_control: u8,
        responder: Responder,
    }

    /// A UART whose host answers each whole request with what `responder` returns.
    struct Fake {
        state: Mutex<State>,
        present: bool,
    }

    impl Fake {
        fn new(responder: impl FnMut(Request, &[u8]) -> Vec<u8> + Send + 'static) -> Self {
            Self {
                state: Mutex::new(State {
                    rx: VecDeque::new(),
                    tx: Vec::new(),
                    scratch: 0,
                    line_control: 0,
                    responder: Box::new(responder),
                }),
                present: true,
            }
        }
    }

    impl PortIo for &Fake {
        fn inb(&self, port: u16) -> u8 {
            if !self.present {
                return 0xFF;
            }
            let mut s = self.state.lock().unwrap();
            match port - STORE_UART_BASE {
                DATA => s.rx.pop_front().unwrap_or(0),
                LINE_STATUS => TX_EMPTY | u8::from(!s.rx.is_empty()),
                SCRATCH => s.scratch,
                _ => 0,
            }
        }

        fn outb(&self, port: u16, value: u8) {
            let mut s = self.state.lock().unwrap();
            match port - STORE_UART_BASE {
                DATA if s.line_control & 0x80 == 0 => {
                    s.tx.push(value);
                    if s.tx.len() >= HEADER_SIZE {
                        let header: [u8; HEADER_SIZE] = s.tx[..HEADER_SIZE].try_into().unwrap();
                        let request = Request::parse(&header).unwrap();
                        if s.tx.len() == HEADER_SIZE + request.length {
                            let payload = s.tx[HEADER_SIZE..].to_vec();
                            s.tx.clear();
                            let answer = (s.responder)(request, &payload);
                            s.rx.extend(answer);
                        }
                    }
                }
                LINE_CONTROL => s.line_control = value,
                SCRATCH => s.scratch = value,
                _ => {}
            }
        }
    }

    fn answer(sequence: u32, status: Status, payload: &[u8]) -> Vec<u8> {
        let mut out = Response {
            sequence,
            status,
            length: payload.len(),
        }
        .header()
        .to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// An honest host with a blob in memory.
    fn honest() -> Fake {
        let mut kept: Option<Vec<u8>> = None;
        Fake::new(move |request, payload| match request.operation {
            Operation::Get => match &kept {
                Some(blob) => answer(request.sequence, Status::Ok, blob),
                None => answer(request.sequence, Status::Empty, &[]),
            },
            Operation::Put => {
                kept = Some(payload.to_vec());
                answer(request.sequence, Status::Ok, &[])
            }
        })
    }

    fn channel(fake: &Fake) -> Result<StoreChannel<&Fake>, ChannelError> {
        StoreChannel::with_poll_limit(fake, STORE_UART_BASE, 1000)
    }

    #[test]
    fn an_honest_host_keeps_and_returns_the_blob() {
        let fake = honest();
        let mut c = channel(&fake).unwrap();
        assert_eq!(c.get(), Ok(None));
        c.put(b"sealed").unwrap();
        assert_eq!(c.get(), Ok(Some(b"sealed".to_vec())));
        assert_eq!(BlobStore::load(&mut c), Ok(Some(b"sealed".to_vec())));
        // Nothing goes out for a blob the channel cannot carry.
        assert_eq!(
            c.put(&vec![0; MAX_BLOB + 1]),
            Err(ChannelError::TooLarge(MAX_BLOB + 1))
        );
        assert!(fake.state.lock().unwrap().tx.is_empty());
    }

    #[test]
    fn no_uart_no_channel() {
        let mut fake = honest();
        fake.present = false;
        assert_eq!(channel(&fake).err(), Some(ChannelError::NoUart));
    }

    #[test]
    fn hostile_or_failing_answers_are_errors() {
        let cases: Vec<(Responder, ChannelError)> = vec![
            (Box::new(|_, _| Vec::new()), ChannelError::Timeout),
            (
                Box::new(|r, _| answer(r.sequence + 1, Status::Empty, &[])),
                ChannelError::Sequence {
                    expected: 1,
                    got: 2,
                },
            ),
            (
                Box::new(|r, _| answer(r.sequence, Status::StoreFailed, &[])),
                ChannelError::Host(Status::StoreFailed),
            ),
            (
                Box::new(|r, _| {
                    let mut a = answer(r.sequence, Status::Ok, &[]);
                    a[12..16].copy_from_slice(&(MAX_BLOB as u32 + 1).to_le_bytes());
                    a
                }),
                ChannelError::Frame(FrameError::TooLong(MAX_BLOB as u32 + 1)),
            ),
            (
                Box::new(|r, _| {
                    let mut a = answer(r.sequence, Status::Ok, &[]);
                    a[8..12].copy_from_slice(&9u32.to_le_bytes());
                    a
                }),
                ChannelError::Frame(FrameError::Status(9)),
            ),
            (
                Box::new(|r, _| {
                    let mut a = vec![0x41; MAX_SKIPPED + 1];
                    a.extend(answer(r.sequence, Status::Empty, &[]));
                    a
                }),
                ChannelError::NoResponse,
            ),
            // A truncated blob: the host stops sending.
            (
                Box::new(|r, _| {
                    let mut a = answer(r.sequence, Status::Ok, b"0123456789");
                    a.truncate(a.len() - 3);
                    a
                }),
                ChannelError::Timeout,
            ),
        ];
        for (responder, expected) in cases {
            let fake = Fake::new(responder);
            let mut c = channel(&fake).unwrap();
            assert_eq!(c.get().err(), Some(expected));
            assert_eq!(BlobStore::load(&mut c).err(), Some(StateError::Store));
        }
        // A store the host refuses, or answers with a payload.
        let fake = Fake::new(|r, _| answer(r.sequence, Status::StoreFailed, &[]));
        let mut c = channel(&fake).unwrap();
        assert_eq!(BlobStore::store(&mut c, b"x"), Err(StateError::Store));
        let fake = Fake::new(|r, _| answer(r.sequence, Status::Ok, b"unasked"));
        let mut c = channel(&fake).unwrap();
        assert_eq!(c.put(b"x"), Err(ChannelError::Frame(FrameError::Payload)));
    }

    #[test]
    fn stray_bytes_before_the_answer_are_skipped() {
        let fake = Fake::new(|r, _| {
            let mut a = b"old noise".to_vec();
            a.extend(answer(r.sequence, Status::Ok, b"blob"));
            a
        });
        let mut c = channel(&fake).unwrap();
        assert_eq!(c.get(), Ok(Some(b"blob".to_vec())));
    }

    #[test]
    fn a_prefetched_blob_is_returned_once() {
        let fake = honest();
        let mut c = channel(&fake).unwrap();
        c.put(b"kept").unwrap();
        let mut p = Prefetched::new(c, Some(b"fetched earlier".to_vec()));
        assert_eq!(p.load(), Ok(Some(b"fetched earlier".to_vec())));
        assert_eq!(p.load(), Ok(Some(b"kept".to_vec())));
        p.store(b"new").unwrap();
        assert_eq!(p.load(), Ok(Some(b"new".to_vec())));
    }
}
