//! The vTPM service: the TPM_SEND_COMMAND transport of the SVSM vTPM protocol in front
//! of the engine, with start-up sequencing and the fail-closed rules.
//!
//! Invariants:
//! - Only locality 0 reaches the engine; a request that is refused (locality, platform
//!   command, sizes) changes no state.
//! - Nothing the engine returns reaches the guest unless its header's size equals its
//!   length and it fits the 4092-byte response area.
//! - Once the engine fails (its own failure mode, failed randomness, a malformed
//!   response), every later command gets TPM_RC_FAILURE. The engine is never restarted
//!   behind the guest's back: that would silently reset the PCRs a verifier relies on.

use alloc::vec::Vec;

use crate::ek::EkTemplate;
use crate::engine::{Engine, EngineError};
use crate::tpm::{self, Header};

use svsm_protocol::vtpm::{PlatformCommands, SendCommandRequestHeader, VtpmFeatures};
pub use svsm_protocol::vtpm::{
    MAX_COMMAND_SIZE, MAX_RESPONSE_SIZE, SEND_COMMAND_REQUEST_HEADER_SIZE as REQUEST_HEADER_SIZE,
    SEND_COMMAND_RESPONSE_HEADER_SIZE as RESPONSE_HEADER_SIZE, TPM_SEND_COMMAND,
    VTPM_BUFFER_MAX as TRANSPORT_BUFFER_SIZE,
};
use svsm_protocol::SvsmResultCode;
use zerocopy::FromBytes;

/// Why a vTPM request was refused (the guest sees an SVSM result code, and nothing
/// changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VtpmError {
    /// A platform command other than TPM_SEND_COMMAND.
    UnsupportedCommand(u32),
    /// A locality other than 0.
    Locality(u8),
    /// A TPM command larger than the transport carries (its alleged size).
    CommandTooLarge(u32),
    /// The buffer is too short for its header or for the command size it alleges.
    Truncated,
}

impl From<VtpmError> for SvsmResultCode {
    fn from(e: VtpmError) -> Self {
        match e {
            // QUERY tells the guest which platform commands exist.
            VtpmError::UnsupportedCommand(_) => SvsmResultCode::UNSUPPORTED_CALL,
            VtpmError::Locality(_) | VtpmError::CommandTooLarge(_) | VtpmError::Truncated => {
                SvsmResultCode::INVALID_PARAMETER
            }
        }
    }
}

impl core::fmt::Display for VtpmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnsupportedCommand(c) => write!(f, "unsupported vTPM platform command {c}"),
            Self::Locality(l) => write!(f, "locality {l} is not available to the guest"),
            Self::CommandTooLarge(n) => write!(
                f,
                "a {n}-byte TPM command exceeds the {MAX_COMMAND_SIZE}-byte transport"
            ),
            Self::Truncated => f.write_str("the vTPM request is shorter than it claims"),
        }
    }
}

impl core::error::Error for VtpmError {}

/// Why the vTPM could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupError {
    /// The engine failed.
    Engine(EngineError),
    /// The engine advertises buffers larger than the transport carries.
    BufferSize(u32),
    /// A start-up command failed: which one (command code) and the TPM response code.
    Command {
        /// The TPM command code.
        command: u32,
        /// The TPM response code (or 0 for a malformed response).
        rc: u32,
    },
}

impl From<EngineError> for StartupError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e)
    }
}

impl core::fmt::Display for StartupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Engine(e) => write!(f, "vTPM start-up failed: {e}"),
            Self::BufferSize(n) => write!(
                f,
                "vTPM start-up failed: the engine advertises {n}-byte buffers, more than \
                 the {MAX_COMMAND_SIZE}-byte transport carries"
            ),
            Self::Command { command, rc } => write!(
                f,
                "vTPM start-up failed: TPM command {command:#x} returned {rc:#x}"
            ),
        }
    }
}

impl core::error::Error for StartupError {}

/// The guest-facing vTPM, as the SVSM request handlers see it.
pub trait Vtpm {
    /// SVSM_VTPM_QUERY: the supported platform commands (TPM_SEND_COMMAND only) and
    /// feature bits (none).
    fn query(&self) -> (PlatformCommands, VtpmFeatures) {
        (PlatformCommands::SEND_COMMAND, VtpmFeatures::empty())
    }

    /// Handles a TPM_SEND_COMMAND request held in `buffer` (the service's private
    /// 4096-byte copy of the guest's buffer, of which only the request's header and the
    /// command it announces need to be copied in; a shorter buffer is refused) and
    /// writes the response into the same buffer; returns the response's length (4 + the
    /// TPM response). On error the buffer holds no response and nothing changed.
    fn handle_request(&mut self, buffer: &mut [u8]) -> Result<usize, VtpmError>;

    /// The endorsement key made at start-up with template L-1, as a TPMT_PUBLIC.
    fn ek_public(&self) -> &[u8];
}

/// The vTPM service over an engine.
#[derive(Debug)]
pub struct Service<E: Engine> {
    engine: E,
    failed: bool,
    /// A response kept while the service runs commands of its own after it (TPM2_Clear's).
    held: Vec<u8>,
    ek_rsa: Vec<u8>,
    ek_ecc: Vec<u8>,
}

impl<E: Engine> Service<E> {
    /// Starts the TPM on a freshly powered-on (manufactured) engine: checks the buffer
    /// sizes, sends TPM2_Startup(CLEAR), creates the endorsement keys with templates L-1
    /// and L-2, keeps their public areas and flushes them. The guest's own Startup then
    /// gets TPM_RC_INITIALIZE.
    pub fn start(mut engine: E) -> Result<Self, StartupError> {
        let size = engine.buffer_size();
        if size as usize > MAX_COMMAND_SIZE {
            return Err(StartupError::BufferSize(size));
        }
        let mut startup = tpm::startup_clear();
        expect_success(&mut engine, &mut startup)?;
        let ek_rsa = create_and_flush(&mut engine, EkTemplate::RsaL1)?;
        let ek_ecc = create_and_flush(&mut engine, EkTemplate::EccL2)?;
        if engine.failed() {
            return Err(StartupError::Engine(EngineError::FailureMode));
        }
        Ok(Self {
            engine,
            failed: false,
            held: Vec::new(),
            ek_rsa,
            ek_ecc,
        })
    }

    /// The endorsement key of `template`, as a TPMT_PUBLIC (created at start-up).
    pub fn endorsement_key(&self, template: EkTemplate) -> &[u8] {
        match template {
            EkTemplate::RsaL1 => &self.ek_rsa,
            EkTemplate::EccL2 => &self.ek_ecc,
        }
    }

    /// The engine itself, bypassing the service's checks: for measurements and
    /// diagnostics on the host, never for guest commands.
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    /// Whether the TPM is in failure mode (every command gets TPM_RC_FAILURE).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Runs one TPM command at `locality` and writes the TPM response into `response`
    /// (room for the largest response, [`MAX_RESPONSE_SIZE`] bytes); returns its length.
    /// This is TPM_SEND_COMMAND without its transport framing.
    pub fn execute(
        &mut self,
        locality: u8,
        command: &mut [u8],
        response: &mut [u8],
    ) -> Result<usize, VtpmError> {
        if locality != 0 {
            return Err(VtpmError::Locality(locality));
        }
        if command.len() > MAX_COMMAND_SIZE {
            return Err(VtpmError::CommandTooLarge(
                u32::try_from(command.len()).unwrap_or(u32::MAX),
            ));
        }
        if response.len() < MAX_RESPONSE_SIZE {
            return Err(VtpmError::Truncated);
        }
        let reply = self.run(command, MAX_RESPONSE_SIZE);
        // Checked by `well_formed` (or the canned failure response, 10 bytes).
        let out = response
            .get_mut(..reply.len())
            .ok_or(VtpmError::Truncated)?;
        out.copy_from_slice(reply);
        Ok(reply.len())
    }
}

impl<E: Engine> Service<E> {
    /// Runs a command on the engine unless it has failed; returns the response to hand
    /// out: the engine's, when it is whole and fits `max` bytes, else TPM_RC_FAILURE.
    fn run(&mut self, command: &mut [u8], max: usize) -> &[u8] {
        // Read before the engine may use the command buffer as scratch.
        let clear = tpm::command_code(command) == Some(tpm::CC_CLEAR);
        if !self.failed {
            let healthy = self.engine.execute(0, command).is_ok()
                && !self.engine.failed()
                && well_formed(self.engine.response(), max);
            if !healthy {
                self.failed = true;
                log::error!("vTPM: engine failure; every later command gets TPM_RC_FAILURE");
            }
        }
        if self.failed {
            return &tpm::FAILURE_RESPONSE;
        }
        if clear
            && self.engine.clear_keeps_persistent_objects()
            && Header::parse(self.engine.response()).is_some_and(|h| h.code == tpm::RC_SUCCESS)
        {
            self.held.clear();
            self.held.extend_from_slice(self.engine.response());
            if self.evict_after_clear().is_err() {
                self.failed = true;
                log::error!("vTPM: engine failure after TPM2_Clear; every later command gets TPM_RC_FAILURE");
                return &tpm::FAILURE_RESPONSE;
            }
            return &self.held;
        }
        self.engine.response()
    }

    /// Completes a successful TPM2_Clear on an engine that leaves persistent objects in
    /// place ([`Engine::clear_keeps_persistent_objects`]): evicts every persistent object
    /// the owner may evict. Clear has just reset ownerAuth to empty, so the empty password
    /// authorizes it; platform objects refuse (TPM_RC_HIERARCHY) and stay, as TPM2_Clear
    /// keeps them. Fails only when the engine does.
    fn evict_after_clear(&mut self) -> Result<(), EngineError> {
        let mut handles = Vec::new();
        let mut next = tpm::PERSISTENT_FIRST;
        loop {
            let mut query = tpm::get_handles(next, 64);
            self.engine.execute(0, &mut query)?;
            let (more, found) =
                tpm::parse_handles(self.engine.response()).ok_or(EngineError::FailureMode)?;
            let persistent: Vec<u32> = found
                .into_iter()
                .filter(|h| h >> 24 == tpm::PERSISTENT_FIRST >> 24)
                .collect();
            let Some(&last) = persistent.last() else {
                break;
            };
            handles.extend_from_slice(&persistent);
            if !more || last == u32::MAX {
                break;
            }
            next = last + 1;
        }
        for handle in handles {
            let mut evict = tpm::evict_persistent(handle);
            self.engine.execute(0, &mut evict)?;
            if self.engine.failed() || !well_formed(self.engine.response(), MAX_RESPONSE_SIZE) {
                return Err(EngineError::FailureMode);
            }
        }
        Ok(())
    }
}

impl<E: Engine> Vtpm for Service<E> {
    fn handle_request(&mut self, buffer: &mut [u8]) -> Result<usize, VtpmError> {
        let (header, _) =
            SendCommandRequestHeader::read_from_prefix(buffer).map_err(|_| VtpmError::Truncated)?;
        // Read each field once, from our copy.
        let platform_command = header.command.get();
        let locality = header.locality;
        let size = header.size.get();
        if platform_command != TPM_SEND_COMMAND {
            return Err(VtpmError::UnsupportedCommand(platform_command));
        }
        if locality != 0 {
            return Err(VtpmError::Locality(locality));
        }
        if size as usize > MAX_COMMAND_SIZE {
            return Err(VtpmError::CommandTooLarge(size));
        }
        // The whole transport buffer, so that any response fits.
        if buffer.len() < TRANSPORT_BUFFER_SIZE {
            return Err(VtpmError::Truncated);
        }
        let end = REQUEST_HEADER_SIZE + size as usize;
        // The engine reads the command before the response is written over it.
        let reply = self.run(&mut buffer[REQUEST_HEADER_SIZE..end], MAX_RESPONSE_SIZE);
        let len = reply.len();
        buffer[..RESPONSE_HEADER_SIZE].copy_from_slice(&(len as u32).to_le_bytes());
        buffer[RESPONSE_HEADER_SIZE..RESPONSE_HEADER_SIZE + len].copy_from_slice(reply);
        Ok(RESPONSE_HEADER_SIZE + len)
    }

    fn ek_public(&self) -> &[u8] {
        &self.ek_rsa
    }
}

/// Whether `response` is a whole TPM response of at most `max` bytes: a header whose size
/// field equals the length.
#[inline]
fn well_formed(response: &[u8], max: usize) -> bool {
    response.len() <= max
        && Header::parse(response).is_some_and(|h| h.size as usize == response.len())
}

/// Runs a start-up command and requires TPM_RC_SUCCESS; returns the response.
pub(crate) fn expect_success<'e, E: Engine>(
    engine: &'e mut E,
    command: &mut [u8],
) -> Result<&'e [u8], StartupError> {
    let code = Header::parse(command).map_or(0, |h| h.code);
    engine.execute(0, command)?;
    let response = engine.response();
    let rc = match Header::parse(response) {
        Some(h) if h.size as usize == response.len() => h.code,
        _ => 0xFFFF_FFFF,
    };
    if rc != tpm::RC_SUCCESS {
        return Err(StartupError::Command { command: code, rc });
    }
    Ok(response)
}

/// Creates the endorsement key of `template`, returns its TPMT_PUBLIC and flushes it so
/// it holds no object slot.
fn create_and_flush<E: Engine>(
    engine: &mut E,
    template: EkTemplate,
) -> Result<Vec<u8>, StartupError> {
    let mut create = tpm::create_primary(tpm::RH_ENDORSEMENT, &template.public_template());
    let response = expect_success(engine, &mut create)?;
    let created = tpm::parse_create_primary(response).ok_or(StartupError::Command {
        command: tpm::CC_CREATE_PRIMARY,
        rc: 0,
    })?;
    let mut flush = tpm::flush_context(created.handle);
    expect_success(engine, &mut flush)?;
    Ok(created.public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// An engine that answers every command with a scripted response and counts calls.
    struct Scripted {
        reply: Vec<u8>,
        failed: bool,
        calls: usize,
    }

    impl Engine for Scripted {
        fn execute(&mut self, _locality: u8, _command: &mut [u8]) -> Result<(), EngineError> {
            self.calls += 1;
            Ok(())
        }
        fn response(&self) -> &[u8] {
            &self.reply
        }
        fn failed(&self) -> bool {
            self.failed
        }
        fn buffer_size(&self) -> u32 {
            4087
        }
    }

    fn service(reply: Vec<u8>) -> Service<Scripted> {
        Service {
            engine: Scripted {
                reply,
                failed: false,
                calls: 0,
            },
            failed: false,
            held: Vec::new(),
            ek_rsa: Vec::new(),
            ek_ecc: Vec::new(),
        }
    }

    fn ok_response(len: usize) -> Vec<u8> {
        let mut r = vec![0u8; len];
        r[..2].copy_from_slice(&tpm::ST_NO_SESSIONS.to_be_bytes());
        r[2..6].copy_from_slice(&(len as u32).to_be_bytes());
        r
    }

    fn request(locality: u8) -> Vec<u8> {
        let mut b = vec![0u8; TRANSPORT_BUFFER_SIZE];
        b[..4].copy_from_slice(&8u32.to_le_bytes());
        b[4] = locality;
        b[5..9].copy_from_slice(&12u32.to_le_bytes());
        b[9..21].copy_from_slice(&tpm::startup_clear());
        b
    }

    #[test]
    fn a_whole_response_is_framed_with_its_length() {
        let reply = ok_response(MAX_RESPONSE_SIZE);
        let mut s = service(reply.clone());
        let mut b = request(0);
        assert_eq!(s.handle_request(&mut b), Ok(TRANSPORT_BUFFER_SIZE));
        assert_eq!(&b[..4], &(MAX_RESPONSE_SIZE as u32).to_le_bytes());
        assert_eq!(&b[4..], &reply[..]);
    }

    #[test]
    fn a_response_whose_header_lies_about_its_size_fails_closed() {
        let mut reply = ok_response(64);
        reply[5] = 63;
        let mut s = service(reply);
        let mut b = request(0);
        assert_eq!(s.handle_request(&mut b), Ok(4 + 10));
        assert_eq!(&b[4..14], &tpm::FAILURE_RESPONSE);
        assert!(s.is_failed());
        // Later commands never reach the engine.
        let calls = s.engine.calls;
        s.engine.reply = ok_response(10);
        let mut b = request(0);
        s.handle_request(&mut b).unwrap();
        assert_eq!(&b[4..14], &tpm::FAILURE_RESPONSE);
        assert_eq!(s.engine.calls, calls);
    }

    #[test]
    fn a_response_larger_than_the_transport_fails_closed() {
        let mut s = service(ok_response(MAX_RESPONSE_SIZE + 1));
        let mut b = request(0);
        assert_eq!(s.handle_request(&mut b), Ok(4 + 10));
        assert_eq!(&b[4..14], &tpm::FAILURE_RESPONSE);
        assert!(s.is_failed());
    }

    #[test]
    fn a_response_too_short_for_a_header_fails_closed() {
        let mut s = service(vec![0x80, 0x01, 0, 0, 0, 6]);
        let mut b = request(0);
        s.handle_request(&mut b).unwrap();
        assert_eq!(&b[4..14], &tpm::FAILURE_RESPONSE);
    }

    #[test]
    fn engine_failure_mode_latches() {
        let mut s = service(ok_response(10));
        s.engine.failed = true;
        let mut b = request(0);
        s.handle_request(&mut b).unwrap();
        assert_eq!(&b[4..14], &tpm::FAILURE_RESPONSE);
        s.engine.failed = false;
        let mut b = request(0);
        s.handle_request(&mut b).unwrap();
        assert_eq!(&b[4..14], &tpm::FAILURE_RESPONSE);
    }

    #[test]
    fn refused_requests_never_reach_the_engine() {
        let mut s = service(ok_response(10));
        for locality in 1..=255u8 {
            let mut b = request(locality);
            assert_eq!(s.handle_request(&mut b), Err(VtpmError::Locality(locality)));
        }
        let mut b = request(0);
        b[5..9].copy_from_slice(&4088u32.to_le_bytes());
        assert_eq!(
            s.handle_request(&mut b),
            Err(VtpmError::CommandTooLarge(4088))
        );
        assert_eq!(s.handle_request(&mut [8, 0, 0]), Err(VtpmError::Truncated));
        let mut cmd = tpm::startup_clear();
        let mut out = [0u8; 64];
        assert_eq!(
            s.execute(3, &mut cmd, &mut out),
            Err(VtpmError::Locality(3))
        );
        assert_eq!(s.engine.calls, 0);
        assert!(!s.is_failed());
    }

    proptest::proptest! {
        /// Whatever the guest's buffer holds (and whatever the engine answers), the
        /// service never panics; it either refuses with the buffer untouched, or answers
        /// with a framed, whole response of at most 4092 bytes.
        #[test]
        fn arbitrary_buffers_never_panic(
            platform in proptest::prop_oneof![proptest::strategy::Just(8u32), proptest::prelude::any::<u32>()],
            locality in proptest::prop_oneof![proptest::strategy::Just(0u8), proptest::prelude::any::<u8>()],
            size in proptest::prop_oneof![0u32..4200, proptest::prelude::any::<u32>()],
            len in proptest::prop_oneof![proptest::strategy::Just(4096usize), 0usize..4200],
            fill in proptest::prelude::any::<u8>(),
            reply in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4200),
            lie in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = vec![fill; len];
            let mut head = platform.to_le_bytes().to_vec();
            head.push(locality);
            head.extend_from_slice(&size.to_le_bytes());
            let n = head.len().min(len);
            bytes[..n].copy_from_slice(&head[..n]);
            let mut reply = reply;
            if !lie && reply.len() >= 10 {
                let l = reply.len() as u32;
                reply[2..6].copy_from_slice(&l.to_be_bytes());
            }
            let mut s = service(reply);
            let mut b = bytes.clone();
            match s.handle_request(&mut b) {
                Err(_) => proptest::prop_assert_eq!(&b, &bytes),
                Ok(n) => {
                    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                    proptest::prop_assert_eq!(n, 4 + len);
                    proptest::prop_assert!(len <= MAX_RESPONSE_SIZE);
                    let h = Header::parse(&b[4..n]).expect("a header");
                    proptest::prop_assert_eq!(h.size as usize, len);
                }
            }
        }
    }

    #[test]
    fn buffers_without_room_for_any_response_are_refused_up_front() {
        let mut s = service(ok_response(MAX_RESPONSE_SIZE));
        // A whole request, but not the whole transport buffer.
        let mut b = request(0)[..64].to_vec();
        assert_eq!(s.handle_request(&mut b), Err(VtpmError::Truncated));
        let mut cmd = tpm::startup_clear();
        let mut out = vec![0u8; MAX_RESPONSE_SIZE - 1];
        assert_eq!(s.execute(0, &mut cmd, &mut out), Err(VtpmError::Truncated));
        assert_eq!(s.engine.calls, 0);
        assert!(
            !s.is_failed(),
            "the caller's mistake is not the TPM's failure"
        );
    }

    #[test]
    fn start_refuses_an_engine_advertising_more_than_the_transport() {
        struct Big;
        impl Engine for Big {
            fn execute(&mut self, _: u8, _: &mut [u8]) -> Result<(), EngineError> {
                Ok(())
            }
            fn response(&self) -> &[u8] {
                &[]
            }
            fn failed(&self) -> bool {
                false
            }
            fn buffer_size(&self) -> u32 {
                4096
            }
        }
        assert_eq!(
            Service::start(Big).err(),
            Some(StartupError::BufferSize(4096))
        );
    }
}
