//! Ending the SVSM: QEMU's isa-debug-exit port, then a halt that never resumes.
//!
//! With `-device isa-debug-exit,iobase=0xf4,iosize=0x04` QEMU exits with status
//! `(value << 1) | 1`; without the device the write is ignored and the CPU halts with
//! interrupts masked. Every fatal path (panic, `abort`, failed assert, stack-protector
//! hit, exception, randomness failure) comes through [`terminate`], so the reason is on
//! the console before the machine stops.

use svsm::arch::{interrupts, io};

/// The isa-debug-exit port.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// What the kernel reports to the host on exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything asked of it succeeded (QEMU exit status 33).
    Success = 0x10,
    /// Something failed (QEMU exit status 35).
    Failure = 0x11,
}

/// Stops the machine, reporting `code`.
pub fn exit(code: ExitCode) -> ! {
    io::outl(DEBUG_EXIT_PORT, code as u32);
    loop {
        interrupts::disable();
        interrupts::halt();
    }
}

/// Ends the SVSM with a logged reason.
pub fn terminate(reason: core::fmt::Arguments<'_>) -> ! {
    interrupts::disable();
    log::error!("SVSM terminated: {reason}");
    // SEV-SNP: the termination request with the kernel's reason (isa-debug-exit is
    // QEMU's).
    svsm::platform::snp::runtime::terminate_if_snp(&svsm::snp::SnpError::Kernel);
    exit(ExitCode::Failure)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    terminate(format_args!("panic: {info}"))
}
