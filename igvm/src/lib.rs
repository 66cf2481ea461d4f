//! `svsm-igvm`: builds the SVSM's IGVM file, computes its SNP launch digest and lists it.
//!
//! The library holds everything the command line does so tests drive the same code:
//! [`elf`] reads the kernel, [`firmware`] reads OVMF's SEV metadata, [`build`] lays out
//! the guest memory and emits IGVM directives, [`vmsa`] makes the launch VMSA (and the one
//! KVM will really measure), [`measure`] replays the PAGE_INFO chain of the SNP firmware
//! ABI as QEMU/KVM drive it, [`inspect`] prints a file, [`output`] writes files atomically.
#![forbid(unsafe_code)]

pub mod build;
pub mod elf;
pub mod error;
pub mod firmware;
pub mod inspect;
pub mod measure;
pub mod output;
pub mod vmsa;

pub use error::Error;

/// The size of a small page.
pub const PAGE_SIZE: u64 = 4096;

/// Compatibility mask bit of the SEV-SNP platform header.
pub const SNP_COMPAT_MASK: u32 = 1 << 0;
/// Compatibility mask bit of the native (no isolation) platform header.
pub const NATIVE_COMPAT_MASK: u32 = 1 << 1;

/// Reads an IGVM file held in memory; a malformed one is an error, never a crash.
///
/// The `igvm` crate (0.5) can panic on hostile headers (fuzzing found an `attempt to
/// add with overflow` in its header walk), so its parser runs under `catch_unwind`, with
/// the panic message kept off the terminal, and a panic becomes this error.
pub fn parse_igvm(bytes: &[u8]) -> Result<igvm::IgvmFile, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let parsed = std::panic::catch_unwind(|| igvm::IgvmFile::new_from_binary(bytes, None));
    std::panic::set_hook(hook);
    match parsed {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("malformed IGVM headers (the igvm parser gave up on them)".into()),
    }
}

/// Rounds `value` up to a multiple of the page size, or `None` on overflow.
pub fn page_align_up(value: u64) -> Option<u64> {
    value
        .checked_add(PAGE_SIZE - 1)
        .map(|v| v & !(PAGE_SIZE - 1))
}
