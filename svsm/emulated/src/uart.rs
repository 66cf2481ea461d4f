//! A 16550 UART behind the emulated hypervisor's port I/O, connected to a host byte
//! stream (as QEMU connects `-serial unix:PATH` to a socket).
//!
//! Only what a polled driver uses: the data register (received bytes in order; a
//! written byte goes to the stream at once), the line status register (data ready when
//! a byte has arrived; the transmitter is always empty) and the scratch register. The
//! other registers accept writes and read zero. A reader thread moves the stream's
//! bytes into the receive queue.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ghcb::PortDevice;

const DATA: u16 = 0;
const LINE_CONTROL: u16 = 3;
/// LINE_CONTROL's divisor latch access bit: DATA and the next port are the divisor.
const DLAB: u8 = 0x80;
const LINE_STATUS: u16 = 5;
const SCRATCH: u16 = 7;
/// Transmitter holding register and transmitter empty.
const TX_EMPTY: u8 = 0x60;
const DATA_READY: u8 = 0x01;

#[derive(Debug, Default)]
struct State {
    received: VecDeque<u8>,
    scratch: u8,
    line_control: u8,
    /// Port accesses so far (each one a GHCB IOIO exit).
    accesses: u64,
}

/// The UART model (8 ports).
#[derive(Debug)]
pub struct SocketUart {
    state: Arc<Mutex<State>>,
    tx: Mutex<UnixStream>,
}

impl SocketUart {
    /// A UART whose line is `stream`.
    pub fn new(stream: UnixStream) -> std::io::Result<Arc<Self>> {
        let state = Arc::new(Mutex::new(State::default()));
        let mut rx = stream.try_clone()?;
        let queue = state.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = rx.read(&mut buf) {
                let mut s = queue.lock().unwrap_or_else(|e| e.into_inner());
                s.received.extend(&buf[..n]);
            }
        });
        Ok(Arc::new(Self {
            state,
            tx: Mutex::new(stream),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many port accesses reached the model.
    pub fn accesses(&self) -> u64 {
        self.lock().accesses
    }
}

impl PortDevice for SocketUart {
    fn read(&self, offset: u16) -> u8 {
        let mut s = self.lock();
        s.accesses += 1;
        match offset {
            DATA if s.line_control & DLAB == 0 => s.received.pop_front().unwrap_or(0),
            LINE_CONTROL => s.line_control,
            LINE_STATUS => TX_EMPTY | if s.received.is_empty() { 0 } else { DATA_READY },
            SCRATCH => s.scratch,
            _ => 0,
        }
    }

    fn write(&self, offset: u16, value: u8) {
        let transmit = {
            let mut s = self.lock();
            s.accesses += 1;
            match offset {
                SCRATCH => s.scratch = value,
                LINE_CONTROL => s.line_control = value,
                _ => {}
            }
            offset == DATA && s.line_control & DLAB == 0
        };
        if transmit {
            let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            // A closed line loses the byte, as a disconnected serial line would.
            let _ = tx.write_all(&[value]);
        }
    }
}
