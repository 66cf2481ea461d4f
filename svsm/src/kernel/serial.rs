//! 16550 UARTs: COM1 carries the console log, COM2 the TPM channel to the host.

use core::fmt::{self, Write};

use svsm::arch::io::{inb, outb};

/// COM1's I/O base.
pub const COM1: u16 = 0x3f8;
/// COM2's I/O base.
pub const COM2: u16 = 0x2f8;

const DATA: u16 = 0;
const INTERRUPT_ENABLE: u16 = 1;
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;
const LINE_STATUS_DATA_READY: u8 = 0x01;
const LINE_STATUS_TX_EMPTY: u8 = 0x20;

/// One 16550-compatible UART at an I/O base.
#[derive(Debug, Clone, Copy)]
pub struct Uart {
    base: u16,
}

impl Uart {
    /// The UART at `base` (not yet initialized).
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    /// 115200 baud, 8N1, FIFOs on, no interrupts (the kernel polls).
    pub fn init(&self) {
        outb(self.base + INTERRUPT_ENABLE, 0x00);
        outb(self.base + LINE_CONTROL, 0x80); // divisor latch
        outb(self.base + DATA, 0x01); // divisor 1: 115200 baud
        outb(self.base + INTERRUPT_ENABLE, 0x00);
        outb(self.base + LINE_CONTROL, 0x03); // 8N1
        outb(self.base + FIFO_CONTROL, 0xc7);
        outb(self.base + MODEM_CONTROL, 0x03); // DTR, RTS
    }

    /// Sends one byte, waiting for room.
    pub fn write_byte(&self, byte: u8) {
        while inb(self.base + LINE_STATUS) & LINE_STATUS_TX_EMPTY == 0 {
            core::hint::spin_loop();
        }
        outb(self.base + DATA, byte);
    }

    /// Sends bytes.
    pub fn write_all(&self, bytes: &[u8]) {
        for &b in bytes {
            self.write_byte(b);
        }
    }

    /// A received byte, if one is waiting.
    pub fn try_read_byte(&self) -> Option<u8> {
        (inb(self.base + LINE_STATUS) & LINE_STATUS_DATA_READY != 0).then(|| inb(self.base + DATA))
    }

    /// Waits for one byte.
    pub fn read_byte(&self) -> u8 {
        loop {
            if let Some(b) = self.try_read_byte() {
                return b;
            }
            core::hint::spin_loop();
        }
    }

    /// Fills `buf` from the UART.
    pub fn read_exact(&self, buf: &mut [u8]) {
        for b in buf {
            *b = self.read_byte();
        }
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

/// The console: `log` records on COM1.
struct Console {
    lock: spin::Mutex<()>,
}

static CONSOLE: Console = Console {
    lock: spin::Mutex::new(()),
};

impl log::Log for Console {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        // A fatal path may interrupt a holder of the lock: better interleaved lines than
        // a silent hang, so give up waiting after a while.
        let guard = (0..1_000_000).find_map(|_| self.lock.try_lock());
        let mut uart = Uart::new(COM1);
        let _ = writeln!(uart, "[{:5}] {}", record.level(), record.args());
        drop(guard);
    }

    fn flush(&self) {}
}

/// Starts the console and routes `log` to it.
pub fn init_console() {
    Uart::new(COM1).init();
    if log::set_logger(&CONSOLE).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
