//! The seam between the vTPM service and the TPM 2.0 engine.
//!
//! The service is generic over [`Engine`] so its checks (locality, sizes, response
//! headers, failure latch) can be exercised against engines that misbehave on purpose;
//! the real engine is [`crate::libtpms::LibTpms`].

/// Why the engine could not start or run a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    /// Another engine is alive in this process (the engine is a process-wide singleton).
    Busy,
    /// The entropy source failed: the engine never runs on weak randomness.
    Entropy,
    /// The engine's buffer could not be sized to fit the transport (size it got).
    BufferSize(u32),
    /// Engine initialization (manufacture, power-on) failed with this code.
    Init(u32),
    /// The engine could not process a command (library result code).
    Process(u32),
    /// The engine is in failure mode.
    FailureMode,
    /// The persistent state could not be loaded or stored.
    State(crate::state::StateError),
}

impl core::fmt::Display for EngineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Busy => f.write_str("a TPM engine is already running in this process"),
            Self::Entropy => {
                f.write_str("the entropy source failed; the TPM refuses to run on weak randomness")
            }
            Self::BufferSize(n) => write!(f, "the engine's I/O buffer could not be set ({n})"),
            Self::Init(rc) => write!(f, "TPM engine initialization failed (code {rc:#x})"),
            Self::Process(rc) => write!(f, "the TPM engine could not process a command ({rc:#x})"),
            Self::FailureMode => f.write_str("the TPM engine is in failure mode"),
            Self::State(e) => write!(f, "the TPM's persistent state: {e}"),
        }
    }
}

/// A TPM 2.0 engine that has been powered on.
pub trait Engine {
    /// Runs one command at `locality`; its response is then [`Engine::response`]. The
    /// command buffer is the caller's private copy (the engine may use it as scratch).
    fn execute(&mut self, locality: u8, command: &mut [u8]) -> Result<(), EngineError>;

    /// The response to the last command executed (empty before the first).
    fn response(&self) -> &[u8];

    /// Whether the engine has entered failure mode, or its randomness has failed since
    /// it started (either way nothing it says can be trusted any more).
    fn failed(&self) -> bool;

    /// The largest command and response sizes the engine advertises
    /// (TPM_PT_MAX_COMMAND_SIZE, TPM_PT_MAX_RESPONSE_SIZE).
    fn buffer_size(&self) -> u32;

    /// Whether TPM2_Clear leaves the persistent objects of the storage and endorsement
    /// hierarchies in place, against TPM 2.0 Part 3's TPM2_Clear (an engine bug), so the
    /// service must evict them itself.
    fn clear_keeps_persistent_objects(&self) -> bool {
        false
    }

    /// Which persistent state the engine started from, when it keeps one between boots.
    fn state_evidence(&self) -> Option<svsm_protocol::ek_evidence::StateEvidence> {
        None
    }
}

impl core::error::Error for EngineError {}
