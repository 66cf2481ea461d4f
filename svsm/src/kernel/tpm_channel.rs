//! The TPM channel on COM2: host TPM clients reach the in-kernel vTPM through it.
//!
//! The host side is `vtpm_daemon::serial` (a `TpmBackend`), which QEMU connects to COM2
//! through a socket chardev. Framing, all integers little-endian:
//! - request: magic `b"TPMQ"`, u8 operation, u8 locality, u32 tag, u32 length, then
//!   `length` bytes;
//! - response: magic `b"TPMA"`, u32 tag (the request's), u32 status, u32 length, then
//!   `length` bytes.
//!
//! The tag lets the host drop a stale answer (to a request it gave up waiting for).
//!
//! Operations: 1 runs a TPM command (the payload) and answers with the TPM response;
//! 2 asks whether the TPM is on (it always is: the engine lives as long as the SVSM and
//! is never restarted). Status 0 is success; the others name why a request was refused
//! (see [`Status`]); a refused request changes no TPM state. After garbage the kernel
//! resynchronizes on the next request magic.

use alloc::vec;

use vtpm::{LibTpms, Service, VtpmError};

use svsm::arch::interrupts;

use super::apic;
use super::serial::{Uart, COM2};

/// Request magic.
pub const REQUEST_MAGIC: [u8; 4] = *b"TPMQ";
/// Response magic.
pub const RESPONSE_MAGIC: [u8; 4] = *b"TPMA";
/// Operation: run a TPM command.
pub const OP_COMMAND: u8 = 1;
/// Operation: is the TPM on?
pub const OP_PING: u8 = 2;
/// The largest payload accepted (the vTPM transport buffer).
pub const MAX_PAYLOAD: usize = 4096;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Success = 0,
    /// The locality is not 0.
    Locality = 1,
    /// The command does not fit the transport.
    CommandTooLarge = 2,
    /// The command is shorter than its header says.
    Truncated = 3,
    /// Unknown operation.
    UnknownOperation = 4,
}

impl From<VtpmError> for Status {
    fn from(e: VtpmError) -> Self {
        match e {
            VtpmError::Locality(_) => Self::Locality,
            VtpmError::CommandTooLarge(_) => Self::CommandTooLarge,
            VtpmError::Truncated => Self::Truncated,
            VtpmError::UnsupportedCommand(_) => Self::UnknownOperation,
        }
    }
}

fn read_u32(uart: &Uart) -> u32 {
    let mut b = [0u8; 4];
    uart.read_exact(&mut b);
    u32::from_le_bytes(b)
}

/// The idle tick: while no request is arriving the CPU halts, and the APIC timer wakes
/// it every millisecond to look at the UART again (1 ms in bus clocks; QEMU: ns).
const IDLE_TICK: u32 = 1_000_000;

/// Waits for the request magic, skipping anything else. Between requests the CPU halts
/// instead of spinning; within a request the caller reads without halting.
fn sync(uart: &Uart) {
    let mut window = [0u8; 4];
    loop {
        let byte = loop {
            if let Some(b) = uart.try_read_byte() {
                break b;
            }
            interrupts::wait_for_interrupt();
        };
        window.rotate_left(1);
        window[3] = byte;
        if window == REQUEST_MAGIC {
            return;
        }
    }
}

fn respond(uart: &Uart, tag: u32, status: Status, payload: &[u8]) {
    uart.write_all(&RESPONSE_MAGIC);
    uart.write_all(&tag.to_le_bytes());
    uart.write_all(&(status as u32).to_le_bytes());
    uart.write_all(&(payload.len() as u32).to_le_bytes());
    uart.write_all(payload);
}

/// Serves TPM requests on COM2, forever.
pub fn serve(service: &mut Service<LibTpms>) -> ! {
    let uart = Uart::new(COM2);
    uart.init();
    // Interrupts stay masked except while halted between requests, so the engine never
    // runs interrupted here.
    apic::start_timer(IDLE_TICK);
    log::info!("vTPM channel: serving TPM commands on COM2");
    let mut command = vec![0u8; MAX_PAYLOAD];
    let mut response = vec![0u8; MAX_PAYLOAD];
    let mut served: u64 = 0;
    loop {
        sync(&uart);
        let mut op_locality = [0u8; 2];
        uart.read_exact(&mut op_locality);
        let [op, locality] = op_locality;
        let tag = read_u32(&uart);
        let len = read_u32(&uart) as usize;
        if len > MAX_PAYLOAD {
            // Drain what the host sent so the stream stays in step.
            for _ in 0..len {
                uart.read_byte();
            }
            respond(&uart, tag, Status::CommandTooLarge, &[]);
            continue;
        }
        uart.read_exact(&mut command[..len]);
        match op {
            OP_COMMAND => match service.execute(locality, &mut command[..len], &mut response) {
                Ok(n) => {
                    respond(&uart, tag, Status::Success, &response[..n]);
                    served += 1;
                    if served % 100 == 0 {
                        let heap = super::heap::stats();
                        log::info!(
                            "vTPM channel: {served} commands served; heap {} KiB allocated, \
                             high-water {} KiB",
                            heap.allocated / 1024,
                            heap.high_water / 1024
                        );
                    }
                }
                Err(e) => {
                    log::warn!("vTPM channel: request refused: {e}");
                    respond(&uart, tag, e.into(), &[]);
                }
            },
            OP_PING => respond(&uart, tag, Status::Success, &[]),
            _ => respond(&uart, tag, Status::UnknownOperation, &[]),
        }
    }
}
