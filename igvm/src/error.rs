//! The errors of the IGVM tool: each says which input is wrong and how.

use std::path::PathBuf;

/// Why building, measuring or inspecting failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The kernel file is not a usable ELF image.
    #[error("{}: not a usable kernel ELF: {reason}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The firmware file is not a usable OVMF image.
    #[error("{}: not a usable firmware image: {reason}", path.display())]
    Firmware {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The firmware cannot run under an SVSM.
    #[error(
        "{}: the firmware's SEV metadata has no SVSM calling-area section (type 4; its \
         sections are {sections}), so it cannot run under an SVSM: use an OVMF from edk2 \
         stable202405 or later, e.g. Debian trixie's `ovmf` package",
        path.display()
    )]
    FirmwareWithoutSvsm {
        /// The file.
        path: PathBuf,
        /// The section types it has, for the message.
        sections: String,
    },
    /// Two things were to be placed in the same guest memory.
    #[error("overlapping regions: {first} and {second}")]
    Overlap {
        /// One region, described.
        first: String,
        /// The other region, described.
        second: String,
    },
    /// The layout does not fit the memory it must fit in.
    #[error("memory does not fit: {0}")]
    DoesNotFit(String),
    /// A command-line value is out of range or inconsistent.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The IGVM file is malformed or breaks a QEMU/KVM launch rule.
    #[error("invalid IGVM file: {0}")]
    Igvm(String),
    /// The output could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}
