//! Port I/O (`IN`/`OUT`), for the UARTs, the PIT, the CMOS clock and isa-debug-exit.
#![allow(unsafe_code, reason = "port I/O instructions")]

use x86_64::instructions::port::Port;

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    #[cfg(target_os = "none")]
    if crate::platform::snp::runtime::port_out(port, 1, value.into()) {
        return;
    }
    // SAFETY: OUT (Intel SDM vol. 2B "OUT") writes to I/O space, not memory; the kernel
    // only uses it on the legacy devices it owns (UARTs, PIT, PIC, CMOS, debug exit).
    unsafe { Port::new(port).write(value) }
}

/// Reads one byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    #[cfg(target_os = "none")]
    if let Some(value) = crate::platform::snp::runtime::port_in(port, 1) {
        return value as u8;
    }
    // SAFETY: IN (Intel SDM vol. 2A "IN") reads I/O space, not memory.
    unsafe { Port::new(port).read() }
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    #[cfg(target_os = "none")]
    if crate::platform::snp::runtime::port_out(port, 4, value) {
        return;
    }
    // SAFETY: as for `outb`.
    unsafe { Port::new(port).write(value) }
}
