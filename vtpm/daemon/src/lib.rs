//! Serves the guest view of the vTPM to host TPM clients.
//!
//! Front ends speak the TPM clients' wire protocols (the Microsoft simulator's TCP
//! interface, swtpm's socket interface); each one drives a [`TpmBackend`], the vTPM as
//! the guest sees it. Front ends serialize their clients: a backend only ever sees one
//! command at a time.

pub mod engine_backend;
pub mod mssim;
pub mod serial;
pub mod state_file;
pub mod store_helper;
pub mod svsm_backend;
pub mod trace;

/// Why a backend could not carry a command to the TPM and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The locality is not one the guest may use (only 0 travels the SVSM path).
    Locality(u8),
    /// The command does not fit the transport.
    CommandTooLarge(usize),
    /// The TPM is powered off.
    PoweredOff,
    /// The transport failed; the text says where.
    Transport(String),
}

impl core::fmt::Display for BackendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Locality(l) => write!(f, "locality {l} is not available to the guest"),
            Self::CommandTooLarge(n) => write!(f, "a {n}-byte command does not fit the transport"),
            Self::PoweredOff => write!(f, "the TPM is powered off"),
            Self::Transport(why) => write!(f, "transport failure: {why}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// The vTPM as a front end drives it.
pub trait TpmBackend: Send {
    /// Sends one TPM command at `locality`; returns the TPM's whole response (TPM errors
    /// travel inside it).
    fn command(&mut self, locality: u8, command: &[u8]) -> Result<Vec<u8>, BackendError>;
    /// Powers the TPM on (a no-op when it is on).
    fn power_on(&mut self) -> Result<(), BackendError>;
    /// Powers the TPM off: the next power-on starts it afresh, as a reboot would.
    fn power_off(&mut self) -> Result<(), BackendError>;
    /// Sets or clears the cancel line for the command in progress.
    fn set_cancel(&mut self, on: bool);
}

pub mod swtpm;
