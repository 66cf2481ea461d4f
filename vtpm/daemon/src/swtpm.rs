//! swtpm's socket interface over a [`TpmBackend`]: the control channel that QEMU's
//! `-tpmdev emulator` backend drives, and the data channel that carries TPM commands.
//!
//! The wire format is swtpm's (`include/swtpm/tpm_ioctl.h`, "Commands used by the
//! non-CUSE TPMs"): a control message is a big-endian u32 command number followed by the
//! request part of that command's structure; the reply is the response part, which
//! always starts with a big-endian u32 result code (TPM 1.2 numbering: `TPM_SUCCESS`,
//! `TPM_BAD_PARAMETER`, ...). A control message is what arrives in one burst, completed
//! to the size its command needs within [`MESSAGE_DEADLINE`], as swtpm reads it: a
//! message of the wrong size is malformed. The data channel is either a stream socket
//! QEMU hands over with `CMD_SET_DATAFD` (an `SCM_RIGHTS` file descriptor on the unix
//! control socket) or a listening socket of our own; it carries plain TPM 2.0 commands,
//! framed by the size in their header.
//!
//! Invariants:
//! - every TPM command travels the backend (for the daemon: the SVSM path); the front
//!   end only ever answers on its own with a TPM error header (TPM off, malformed frame,
//!   a backend that refused), never with a made-up success;
//! - the only locality is 0, as on the SVSM path: `CMD_SET_LOCALITY` to anything else is
//!   refused with `TPM_BAD_LOCALITY`, and so are the locality-3/4 operations (resetting
//!   the established flag, the `_TPM_Hash_*` DRTM sequence);
//! - a malformed or refused control message changes nothing: every check runs before
//!   the first effect;
//! - clients are serialized: one control client at a time, and every TPM command and
//!   control command holds the device lock for its whole run; a control client that has
//!   sent nothing for [`CONTROL_IDLE_GRACE`] gives way to one waiting to connect, so an
//!   idle client cannot lock the others out (QEMU reconnects its control channel), and
//!   at most [`MAX_DATA_CLIENTS`] data clients are served at once;
//! - the TPM state never leaves the backend: the state-blob commands (migration) are not
//!   offered, so QEMU blocks migration of a VM that uses this TPM.

use std::io::{self, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketType};
use svsm_protocol::vtpm::{TpmHeader, MAX_COMMAND_SIZE, TPM_HEADER_SIZE, TPM_ST_NO_SESSIONS};

use crate::{BackendError, TpmBackend};

/// Control-channel command numbers (`tpm_ioctl.h`, the `CMD_*` enum).
pub mod cmd {
    /// Which `PTM_CAP_*` commands the TPM offers.
    pub const GET_CAPABILITY: u32 = 0x01;
    /// (Re)start the TPM: `_TPM_Init`, as at every VM reset.
    pub const INIT: u32 = 0x02;
    /// Stop the TPM and end the process.
    pub const SHUTDOWN: u32 = 0x03;
    /// Read the TPM-established flag.
    pub const GET_TPMESTABLISHED: u32 = 0x04;
    /// Set the locality of the following TPM commands.
    pub const SET_LOCALITY: u32 = 0x05;
    /// `_TPM_Hash_Start`.
    pub const HASH_START: u32 = 0x06;
    /// `_TPM_Hash_Data`.
    pub const HASH_DATA: u32 = 0x07;
    /// `_TPM_Hash_End`.
    pub const HASH_END: u32 = 0x08;
    /// Cancel the TPM command in progress.
    pub const CANCEL_TPM_CMD: u32 = 0x09;
    /// Write the volatile state to storage.
    pub const STORE_VOLATILE: u32 = 0x0a;
    /// Reset the TPM-established flag (localities 3 and 4 only).
    pub const RESET_TPMESTABLISHED: u32 = 0x0b;
    /// Read a state blob (migration).
    pub const GET_STATEBLOB: u32 = 0x0c;
    /// Write a state blob (migration).
    pub const SET_STATEBLOB: u32 = 0x0d;
    /// Stop the TPM, keep the process.
    pub const STOP: u32 = 0x0e;
    /// Which state-encryption keys are in use.
    pub const GET_CONFIG: u32 = 0x0f;
    /// Use the stream socket passed with this message as the data channel.
    pub const SET_DATAFD: u32 = 0x10;
    /// Query or set the TPM's I/O buffer size.
    pub const SET_BUFFERSIZE: u32 = 0x11;
    /// libtpms' implementation information.
    pub const GET_INFO: u32 = 0x12;
    /// Lock the storage (migration).
    pub const LOCK_STORAGE: u32 = 0x13;
}

/// Capability bits of `CMD_GET_CAPABILITY` (`tpm_ioctl.h`, `PTM_CAP_*`).
pub mod cap {
    /// `CMD_INIT`.
    pub const INIT: u32 = 1;
    /// `CMD_SHUTDOWN`.
    pub const SHUTDOWN: u32 = 1 << 1;
    /// `CMD_GET_TPMESTABLISHED`.
    pub const GET_TPMESTABLISHED: u32 = 1 << 2;
    /// `CMD_SET_LOCALITY`.
    pub const SET_LOCALITY: u32 = 1 << 3;
    /// `CMD_HASH_START`, `CMD_HASH_DATA`, `CMD_HASH_END`.
    pub const HASHING: u32 = 1 << 4;
    /// `CMD_CANCEL_TPM_CMD`.
    pub const CANCEL_TPM_CMD: u32 = 1 << 5;
    /// `CMD_STORE_VOLATILE`.
    pub const STORE_VOLATILE: u32 = 1 << 6;
    /// `CMD_RESET_TPMESTABLISHED`.
    pub const RESET_TPMESTABLISHED: u32 = 1 << 7;
    /// `CMD_GET_STATEBLOB`.
    pub const GET_STATEBLOB: u32 = 1 << 8;
    /// `CMD_SET_STATEBLOB`.
    pub const SET_STATEBLOB: u32 = 1 << 9;
    /// `CMD_STOP`.
    pub const STOP: u32 = 1 << 10;
    /// `CMD_GET_CONFIG`.
    pub const GET_CONFIG: u32 = 1 << 11;
    /// `CMD_SET_DATAFD`.
    pub const SET_DATAFD: u32 = 1 << 12;
    /// `CMD_SET_BUFFERSIZE`.
    pub const SET_BUFFERSIZE: u32 = 1 << 13;
}

/// Result codes of control replies (TPM 1.2 numbering, libtpms `tpm_error.h`).
pub mod result {
    /// Success.
    pub const TPM_SUCCESS: u32 = 0;
    /// A parameter is bad: the message is malformed.
    pub const TPM_BAD_PARAMETER: u32 = 3;
    /// The operation failed.
    pub const TPM_FAIL: u32 = 9;
    /// Unknown command, or one not allowed in the TPM's current state.
    pub const TPM_BAD_ORDINAL: u32 = 10;
    /// An I/O error, or a data channel is already attached.
    pub const TPM_IOERROR: u32 = 31;
    /// The locality is not allowed for this operation.
    pub const TPM_BAD_LOCALITY: u32 = 61;
}

/// TPM 2.0 response codes the front end answers with on the data channel (TPM 2.0 Part 2,
/// "TPM_RC").
pub mod rc {
    /// The TPM is off or failed.
    pub const TPM_RC_FAILURE: u32 = 0x101;
    /// The command's size is wrong or too large.
    pub const TPM_RC_COMMAND_SIZE: u32 = 0x142;
    /// The command's locality is not allowed.
    pub const TPM_RC_LOCALITY: u32 = 0x907;
}

/// What `CMD_GET_CAPABILITY` reports. QEMU's TPM 2 backend needs INIT, SHUTDOWN,
/// GET_TPMESTABLISHED, SET_LOCALITY, RESET_TPMESTABLISHED, SET_DATAFD, STOP and
/// SET_BUFFERSIZE. Hashing (a locality-4 DRTM sequence), volatile-state storage and the
/// state blobs are not offered.
pub const CAPABILITIES: u32 = cap::INIT
    | cap::SHUTDOWN
    | cap::GET_TPMESTABLISHED
    | cap::SET_LOCALITY
    | cap::CANCEL_TPM_CMD
    | cap::RESET_TPMESTABLISHED
    | cap::STOP
    | cap::SET_DATAFD
    | cap::SET_BUFFERSIZE;

/// `PTM_INIT_FLAG_DELETE_VOLATILE`: delete the volatile state after reading it. This TPM
/// keeps no volatile state outside the backend, so the flag changes nothing.
pub const INIT_FLAG_DELETE_VOLATILE: u32 = 1;

/// The largest I/O buffer: one TPM command must fit the SVSM transport (4087 bytes).
pub const MAX_BUFFER_SIZE: u32 = MAX_COMMAND_SIZE as u32;
/// The smallest I/O buffer a client may set. The largest command or response the engine
/// produces is a saved context (TPM2_ContextSave/ContextLoad), under 3 KiB; libtpms's own
/// floor is `sizeof(TPMS_CONTEXT) + 128`.
pub const MIN_BUFFER_SIZE: u32 = 3072;

/// How long the rest of a message may take to arrive once its first bytes are in (swtpm
/// allows 500 ms for a control message).
pub const MESSAGE_DEADLINE: Duration = Duration::from_millis(500);

/// The largest control message read in one go: the command number and swtpm's largest
/// request structure (`ptm_hdata`: a u32 length and 4096 bytes of data).
const CONTROL_MESSAGE_MAX: usize = 4 + 4 + 4096;

/// How often blocked threads look at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a control client may stay silent while another one waits to connect.
pub const CONTROL_IDLE_GRACE: Duration = Duration::from_secs(1);

/// Data-channel clients served at once on the listening data socket; more are closed.
pub const MAX_DATA_CLIENTS: usize = 16;

/// What the control loop does next.
enum ControlEvent {
    /// The client sent something.
    Message,
    /// The client has been idle while another waits: drop it, accept the next.
    GiveWay,
    /// `stop` was set.
    Stop,
}

/// Waits for the control client's next message, or for a reason to stop serving it.
fn next_control_event(
    client: &impl AsFd,
    listener: &impl AsFd,
    stop: &AtomicBool,
) -> io::Result<ControlEvent> {
    let idle_since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if readable_by(client, Instant::now() + POLL_INTERVAL)? {
            return Ok(ControlEvent::Message);
        }
        if idle_since.elapsed() >= CONTROL_IDLE_GRACE
            && readable_by(listener, Instant::now() + Duration::from_millis(1))?
        {
            return Ok(ControlEvent::GiveWay);
        }
    }
    Ok(ControlEvent::Stop)
}

/// The daemon holds its backend boxed; the box drives this front end like the backend.
impl TpmBackend for Box<dyn TpmBackend> {
    fn command(&mut self, locality: u8, command: &[u8]) -> Result<Vec<u8>, BackendError> {
        (**self).command(locality, command)
    }
    fn power_on(&mut self) -> Result<(), BackendError> {
        (**self).power_on()
    }
    fn power_off(&mut self) -> Result<(), BackendError> {
        (**self).power_off()
    }
    fn set_cancel(&mut self, on: bool) {
        (**self).set_cancel(on)
    }
}

/// A TPM 2.0 response that is only a header: `TPM_ST_NO_SESSIONS`, size 10, `code`.
pub fn error_response(code: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(TPM_HEADER_SIZE);
    out.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
    out.extend_from_slice(&(TPM_HEADER_SIZE as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out
}

/// What the caller of [`Device::control`] must do after sending the reply.
#[derive(Debug)]
pub enum ControlEffect {
    /// Nothing.
    None,
    /// Serve TPM commands on this stream socket (from `CMD_SET_DATAFD`); call
    /// [`Device::data_detached`] once it closes.
    AttachData(OwnedFd),
    /// `CMD_SHUTDOWN`: stop serving.
    Terminate,
}

/// The reply to one control message and what follows from it.
#[derive(Debug)]
pub struct ControlReply {
    /// The bytes to send back.
    pub bytes: Vec<u8>,
    /// What to do after sending them.
    pub effect: ControlEffect,
}

impl ControlReply {
    fn result(code: u32) -> Self {
        Self {
            bytes: code.to_be_bytes().to_vec(),
            effect: ControlEffect::None,
        }
    }

    fn with(code: u32, payload: &[u8]) -> Self {
        let mut bytes = code.to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        Self {
            bytes,
            effect: ControlEffect::None,
        }
    }
}

/// The TPM as swtpm's interface presents it: a backend plus the state swtpm keeps beside
/// the engine (running or not, locality, buffer size, whether a data channel is attached).
#[derive(Debug)]
pub struct Device<B> {
    backend: B,
    running: bool,
    locality: u8,
    buffer_size: u32,
    data_attached: bool,
}

impl<B: TpmBackend> Device<B> {
    /// Takes over `backend` and powers it off: as with swtpm, the TPM starts only on
    /// `CMD_INIT`, so every start is a fresh one.
    pub fn new(mut backend: B) -> Result<Self, BackendError> {
        backend.power_off()?;
        Ok(Self {
            backend,
            running: false,
            locality: 0,
            buffer_size: MAX_BUFFER_SIZE,
            data_attached: false,
        })
    }

    /// Whether the TPM has been started (`CMD_INIT`) and not stopped since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The I/O buffer size: the largest command accepted and response returned.
    pub fn buffer_size(&self) -> u32 {
        self.buffer_size
    }

    /// The locality of the following TPM commands (always 0).
    pub fn locality(&self) -> u8 {
        self.locality
    }

    /// Whether a data channel from `CMD_SET_DATAFD` is attached.
    pub fn data_attached(&self) -> bool {
        self.data_attached
    }

    /// The data channel from `CMD_SET_DATAFD` closed: another may be attached.
    pub fn data_detached(&mut self) {
        self.data_attached = false;
    }

    /// The backend, for inspection.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Handles one control message (command number and request body) with the file
    /// descriptors that came with it; descriptors not taken over are closed.
    pub fn control(&mut self, message: &[u8], fds: Vec<OwnedFd>) -> ControlReply {
        use result::*;
        let Some((command, body)) = message.split_first_chunk::<4>() else {
            return ControlReply::result(TPM_BAD_PARAMETER);
        };
        let command = u32::from_be_bytes(*command);
        match command {
            // Must always succeed (swtpm): extra bytes are ignored.
            cmd::GET_CAPABILITY => ControlReply::with(TPM_SUCCESS, &CAPABILITIES.to_be_bytes()),
            cmd::INIT => self.init(body),
            cmd::STOP | cmd::SHUTDOWN => {
                if !body.is_empty() {
                    return ControlReply::result(TPM_BAD_PARAMETER);
                }
                let code = self.stop();
                let mut reply = ControlReply::result(code);
                if command == cmd::SHUTDOWN {
                    reply.effect = ControlEffect::Terminate;
                }
                reply
            }
            cmd::GET_TPMESTABLISHED => {
                if !self.running {
                    return ControlReply::result(TPM_BAD_ORDINAL);
                }
                if !body.is_empty() {
                    return ControlReply::result(TPM_BAD_PARAMETER);
                }
                // ptm_est: result, the flag byte, three bytes of padding. The flag is set
                // only by the locality-4 _TPM_Hash_Start, which is refused, so it is 0.
                ControlReply::with(TPM_SUCCESS, &[0, 0, 0, 0])
            }
            cmd::RESET_TPMESTABLISHED => {
                if !self.running {
                    return ControlReply::result(TPM_BAD_ORDINAL);
                }
                if body.is_empty() {
                    return ControlReply::result(TPM_BAD_PARAMETER);
                }
                // The engine resets the flag only at locality 3 or 4 (TPM_BAD_LOCALITY
                // below that); those localities are not the guest's, so every request is
                // refused.
                ControlReply::result(TPM_BAD_LOCALITY)
            }
            cmd::SET_LOCALITY => match body.first() {
                None => ControlReply::result(TPM_BAD_PARAMETER),
                Some(0) => {
                    self.locality = 0;
                    ControlReply::result(TPM_SUCCESS)
                }
                Some(_) => ControlReply::result(TPM_BAD_LOCALITY),
            },
            cmd::HASH_START | cmd::HASH_DATA | cmd::HASH_END => {
                if !self.running {
                    return ControlReply::result(TPM_BAD_ORDINAL);
                }
                let well_formed = if command == cmd::HASH_DATA {
                    hash_data_well_formed(body)
                } else {
                    body.is_empty()
                };
                if !well_formed {
                    return ControlReply::result(TPM_BAD_PARAMETER);
                }
                // _TPM_Hash_Start/Data/End are the DRTM sequence of locality 4.
                ControlReply::result(TPM_BAD_LOCALITY)
            }
            cmd::CANCEL_TPM_CMD => {
                if !self.running {
                    return ControlReply::result(TPM_BAD_ORDINAL);
                }
                if !body.is_empty() {
                    return ControlReply::result(TPM_BAD_PARAMETER);
                }
                // As in libtpms, the cancel line stays on until the next command starts;
                // the device lock makes that the command after this message.
                self.backend.set_cancel(true);
                ControlReply::result(TPM_SUCCESS)
            }
            cmd::SET_DATAFD => self.set_data_fd(body, fds),
            cmd::SET_BUFFERSIZE => self.set_buffer_size(body),
            _ => ControlReply::result(TPM_BAD_ORDINAL),
        }
    }

    fn init(&mut self, body: &[u8]) -> ControlReply {
        use result::*;
        let Ok(flags) = <[u8; 4]>::try_from(body) else {
            return ControlReply::result(TPM_BAD_PARAMETER);
        };
        if u32::from_be_bytes(flags) & !INIT_FLAG_DELETE_VOLATILE != 0 {
            return ControlReply::result(TPM_BAD_PARAMETER);
        }
        // A power cycle: off (a no-op when off), then on, so the TPM starts afresh
        // exactly as at a reboot.
        self.running = false;
        if let Err(e) = self.backend.power_off() {
            eprintln!("swtpm: CMD_INIT: power-off failed: {e}");
            return ControlReply::result(TPM_FAIL);
        }
        match self.backend.power_on() {
            Ok(()) => {
                self.running = true;
                ControlReply::result(TPM_SUCCESS)
            }
            Err(e) => {
                eprintln!("swtpm: CMD_INIT: power-on failed: {e}");
                ControlReply::result(TPM_FAIL)
            }
        }
    }

    fn stop(&mut self) -> u32 {
        self.running = false;
        match self.backend.power_off() {
            Ok(()) => result::TPM_SUCCESS,
            Err(e) => {
                eprintln!("swtpm: power-off failed: {e}");
                result::TPM_FAIL
            }
        }
    }

    fn set_data_fd(&mut self, body: &[u8], mut fds: Vec<OwnedFd>) -> ControlReply {
        use result::*;
        if self.data_attached {
            return ControlReply::result(TPM_IOERROR);
        }
        if !body.is_empty() || fds.len() != 1 {
            return ControlReply::result(TPM_BAD_PARAMETER);
        }
        let Some(fd) = fds.pop() else {
            return ControlReply::result(TPM_BAD_PARAMETER);
        };
        // The data channel must be a connected stream socket (QEMU passes one end of a
        // socketpair); anything else is refused here rather than failing later.
        match rustix::net::sockopt::socket_type(&fd) {
            Ok(SocketType::STREAM) => {}
            _ => return ControlReply::result(TPM_BAD_PARAMETER),
        }
        self.data_attached = true;
        ControlReply {
            bytes: TPM_SUCCESS.to_be_bytes().to_vec(),
            effect: ControlEffect::AttachData(fd),
        }
    }

    fn set_buffer_size(&mut self, body: &[u8]) -> ControlReply {
        use result::*;
        let Some(wanted) = body.first_chunk::<4>() else {
            return ControlReply::result(TPM_BAD_PARAMETER);
        };
        let wanted = u32::from_be_bytes(*wanted);
        if wanted != 0 {
            if self.running {
                return ControlReply::result(TPM_BAD_ORDINAL);
            }
            self.buffer_size = wanted.clamp(MIN_BUFFER_SIZE, MAX_BUFFER_SIZE);
        }
        let mut payload = Vec::with_capacity(12);
        for v in [self.buffer_size, MIN_BUFFER_SIZE, MAX_BUFFER_SIZE] {
            payload.extend_from_slice(&v.to_be_bytes());
        }
        ControlReply::with(TPM_SUCCESS, &payload)
    }

    /// Runs one TPM command from the data channel and returns the response to send.
    pub fn execute(&mut self, command: &[u8]) -> Vec<u8> {
        if !self.running {
            return error_response(rc::TPM_RC_FAILURE);
        }
        let fits = command.len() <= self.buffer_size as usize;
        if !fits || TpmHeader::parse_exact(command).is_err() {
            return error_response(rc::TPM_RC_COMMAND_SIZE);
        }
        self.backend.set_cancel(false);
        match self.backend.command(self.locality, command) {
            Ok(response) => {
                let fits = response.len() <= self.buffer_size as usize;
                if fits && TpmHeader::parse_exact(&response).is_ok() {
                    response
                } else {
                    // Never a truncated or inconsistent reply.
                    eprintln!(
                        "swtpm: refusing a {}-byte response (buffer {} bytes, or its header size is wrong)",
                        response.len(),
                        self.buffer_size
                    );
                    error_response(rc::TPM_RC_FAILURE)
                }
            }
            Err(BackendError::Locality(_)) => error_response(rc::TPM_RC_LOCALITY),
            Err(BackendError::CommandTooLarge(_)) => error_response(rc::TPM_RC_COMMAND_SIZE),
            Err(e) => {
                eprintln!("swtpm: TPM command failed: {e}");
                error_response(rc::TPM_RC_FAILURE)
            }
        }
    }
}

/// `ptm_hdata` request: a u32 length, then at most that many bytes.
fn hash_data_well_formed(body: &[u8]) -> bool {
    match body.split_first_chunk::<4>() {
        Some((length, data)) => data.len() as u64 <= u64::from(u32::from_be_bytes(*length)),
        None => false,
    }
}

/// How many bytes a control message with this beginning needs (command number plus the
/// fixed part of its request, plus the data a length field announces), as swtpm reads
/// it. Capped at [`CONTROL_MESSAGE_MAX`].
fn control_message_len(start: &[u8]) -> usize {
    let Some((command, body)) = start.split_first_chunk::<4>() else {
        return 4;
    };
    let be32_at = |at: usize| {
        body.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_be_bytes(b) as usize)
    };
    let needed = match u32::from_be_bytes(*command) {
        cmd::INIT | cmd::SET_BUFFERSIZE | cmd::LOCK_STORAGE => 4 + 4,
        cmd::SET_LOCALITY | cmd::RESET_TPMESTABLISHED => 4 + 1,
        cmd::HASH_DATA => 4 + 4 + be32_at(0).unwrap_or(0),
        cmd::GET_STATEBLOB => 4 + 12,
        cmd::SET_STATEBLOB => 4 + 12 + be32_at(8).unwrap_or(0),
        cmd::GET_INFO => 4 + 16,
        _ => 4,
    };
    needed.min(CONTROL_MESSAGE_MAX)
}

/// Waits until `fd` is readable or `deadline` passes; false on timeout.
fn readable_by(fd: &impl AsFd, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let timeout = rustix::event::Timespec {
            tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: left.subsec_nanos().into(),
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until `fd` is readable; false once `stop` is set.
fn readable_unless(fd: &impl AsFd, stop: &AtomicBool) -> io::Result<bool> {
    while !stop.load(Ordering::Relaxed) {
        if readable_by(fd, Instant::now() + POLL_INTERVAL)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads into `buf[*filled..]` until it is full or `deadline` passes. Returns false if
/// the peer closed the connection.
fn fill_by<S: Read + AsFd>(
    stream: &mut S,
    buf: &mut [u8],
    filled: &mut usize,
    deadline: Instant,
) -> io::Result<bool> {
    while *filled < buf.len() {
        if !readable_by(stream, deadline)? {
            break;
        }
        match stream.read(&mut buf[*filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Receives one control message and the file descriptors that came with it; `None` when
/// the client closed the connection.
pub fn recv_control<S: Read + AsFd>(stream: &mut S) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; CONTROL_MESSAGE_MAX];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match rustix::net::recvmsg(&*stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => break r.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received == 0 {
        return Ok(None);
    }
    let deadline = Instant::now() + MESSAGE_DEADLINE;
    let mut filled = received;
    loop {
        let needed = control_message_len(&buf[..filled]);
        if filled >= needed {
            break;
        }
        let before = filled;
        if !fill_by(stream, &mut buf[..needed], &mut filled, deadline)? {
            return Ok(None);
        }
        if filled == before {
            break; // deadline: the message is what arrived
        }
    }
    buf.truncate(filled);
    Ok(Some((buf, fds)))
}

/// One frame from the data channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete command, as long as its header says.
    Command(Vec<u8>),
    /// A frame whose size field is below the header size or above the largest buffer,
    /// or whose bytes stopped arriving: answered with `TPM_RC_COMMAND_SIZE`.
    Malformed,
}

/// Reads one TPM command from the data channel; `None` when the client closed it.
pub fn read_frame<S: Read + AsFd>(stream: &mut S) -> io::Result<Option<Frame>> {
    let mut header = [0u8; TPM_HEADER_SIZE];
    let first = loop {
        match stream.read(&mut header) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if first == 0 {
        return Ok(None);
    }
    let deadline = Instant::now() + MESSAGE_DEADLINE;
    let mut filled = first;
    if !fill_by(stream, &mut header, &mut filled, deadline)? {
        return Ok(None);
    }
    if filled < TPM_HEADER_SIZE {
        return Ok(Some(Frame::Malformed));
    }
    let size = TpmHeader::parse(&header).map_or(0, |h| h.size() as usize);
    if size < TPM_HEADER_SIZE || size > MAX_BUFFER_SIZE as usize {
        // Drain what the sender sent of it (QEMU caps a command at its buffer size), so
        // the next command starts on a frame boundary.
        let mut scratch = vec![0u8; size.saturating_sub(TPM_HEADER_SIZE).min(64 * 1024)];
        let mut drained = 0;
        if !fill_by(stream, &mut scratch, &mut drained, deadline)? {
            return Ok(None);
        }
        return Ok(Some(Frame::Malformed));
    }
    let mut command = vec![0u8; size];
    command[..TPM_HEADER_SIZE].copy_from_slice(&header);
    let mut filled = TPM_HEADER_SIZE;
    if !fill_by(stream, &mut command, &mut filled, deadline)? {
        return Ok(None);
    }
    if filled < size {
        return Ok(Some(Frame::Malformed));
    }
    Ok(Some(Frame::Command(command)))
}

/// Where a channel listens: `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix stream socket at this path.
    Unix(PathBuf),
    /// A TCP socket at this address.
    Tcp(SocketAddr),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("'{s}': the unix socket path is empty"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            let mut addrs = addr
                .to_socket_addrs()
                .map_err(|e| format!("'{s}': not a HOST:PORT address ({e})"))?;
            return addrs
                .next()
                .map(Self::Tcp)
                .ok_or_else(|| format!("'{s}': HOST resolves to no address"));
        }
        Err(format!("'{s}': expected unix:PATH or tcp:HOST:PORT"))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// A bound listening socket of either kind.
#[derive(Debug)]
enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// An accepted connection of either kind.
#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buf),
            Self::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.flush(),
            Self::Tcp(s) => s.flush(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Tcp(s) => s.as_fd(),
        }
    }
}

impl Listener {
    fn bind(endpoint: &Endpoint) -> io::Result<Self> {
        match endpoint {
            Endpoint::Unix(path) => {
                remove_stale_socket(path)?;
                Ok(Self::Unix(UnixListener::bind(path)?, path.clone()))
            }
            Endpoint::Tcp(addr) => Ok(Self::Tcp(TcpListener::bind(addr)?)),
        }
    }

    fn endpoint(&self) -> io::Result<Endpoint> {
        match self {
            Self::Unix(_, path) => Ok(Endpoint::Unix(path.clone())),
            Self::Tcp(l) => Ok(Endpoint::Tcp(l.local_addr()?)),
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            Self::Unix(l, _) => Ok(Stream::Unix(l.accept()?.0)),
            Self::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
        }
    }

    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Self::Unix(l, _) => l.as_fd(),
            Self::Tcp(l) => l.as_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes a socket file left by an earlier run; refuses to remove anything else, or a
/// socket someone still listens on.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process listens on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where the swtpm front end listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The control channel (QEMU: `-chardev socket,path=PATH` for `unix:PATH`).
    pub control: Endpoint,
    /// A listening data channel for clients such as tpm2-tools' swtpm TCTI; QEMU does not
    /// need one (it hands over its own with `CMD_SET_DATAFD`).
    pub data: Option<Endpoint>,
}

/// Locks the device; a poisoned lock (a thread panicked inside the backend) is an error,
/// never a TPM to go on with.
fn lock<B>(device: &Mutex<Device<B>>) -> io::Result<MutexGuard<'_, Device<B>>> {
    device
        .lock()
        .map_err(|_| io::Error::other("the TPM device lock is poisoned"))
}

/// The swtpm front end: bound sockets and the device they serve.
#[derive(Debug)]
pub struct Server<B> {
    device: Arc<Mutex<Device<B>>>,
    control: Listener,
    data: Option<Listener>,
}

impl<B: TpmBackend + 'static> Server<B> {
    /// Binds the sockets of `config` and takes over `backend` (powered off until
    /// `CMD_INIT`).
    pub fn bind(config: &Config, backend: B) -> anyhow::Result<Self> {
        use anyhow::Context;
        let device = Device::new(backend).context("cannot power off the TPM backend")?;
        let control = Listener::bind(&config.control)
            .with_context(|| format!("cannot listen on {}", config.control))?;
        let data = match &config.data {
            Some(endpoint) => Some(
                Listener::bind(endpoint).with_context(|| format!("cannot listen on {endpoint}"))?,
            ),
            None => None,
        };
        Ok(Self {
            device: Arc::new(Mutex::new(device)),
            control,
            data,
        })
    }

    /// Where the control channel listens (with the port the system chose for port 0).
    pub fn control_endpoint(&self) -> io::Result<Endpoint> {
        self.control.endpoint()
    }

    /// Where the data channel listens, if it does.
    pub fn data_endpoint(&self) -> io::Result<Option<Endpoint>> {
        self.data.as_ref().map(Listener::endpoint).transpose()
    }

    /// Serves until a client sends `CMD_SHUTDOWN` or `stop` is set, then stops every data
    /// channel, powers the TPM off and returns. Control clients are served one at a time.
    pub fn run(self, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        if let Some(listener) = self.data {
            let device = Arc::clone(&self.device);
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                serve_data_listener(&listener, &device, &stop);
            }));
        }
        let outcome = serve_control(&self.control, &self.device, &stop, &mut threads);
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            let _ = thread.join();
        }
        let mut device = lock(&self.device)?;
        if device.is_running() {
            let _ = device.stop();
        }
        outcome
    }
}

/// Accepts control clients one after another until `CMD_SHUTDOWN`.
fn serve_control<B: TpmBackend + 'static>(
    listener: &Listener,
    device: &Arc<Mutex<Device<B>>>,
    stop: &Arc<AtomicBool>,
    threads: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<()> {
    while readable_unless(&listener.as_fd(), stop)? {
        let mut client = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow::Error::new(e).context("cannot accept a control client")),
        };
        loop {
            match next_control_event(&client, &listener.as_fd(), stop)? {
                ControlEvent::Message => {}
                ControlEvent::Stop => return Ok(()),
                ControlEvent::GiveWay => {
                    eprintln!("swtpm: idle control client dropped: another one is waiting");
                    break;
                }
            }
            let (message, fds) = match recv_control(&mut client) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("swtpm: control client dropped: {e}");
                    break;
                }
            };
            let reply = lock(device)?.control(&message, fds);
            if let Err(e) = client.write_all(&reply.bytes) {
                eprintln!("swtpm: cannot answer the control client: {e}");
                // A data channel it attached is still served; only this client is gone.
            }
            match reply.effect {
                ControlEffect::None => {}
                ControlEffect::Terminate => return Ok(()),
                ControlEffect::AttachData(fd) => {
                    let device = Arc::clone(device);
                    let stop = Arc::clone(stop);
                    threads.retain(|t| !t.is_finished());
                    threads.push(std::thread::spawn(move || {
                        let mut stream = Stream::Unix(UnixStream::from(fd));
                        if let Err(e) = serve_data(&mut stream, &device, &stop) {
                            eprintln!("swtpm: data channel closed: {e}");
                        }
                        if let Ok(mut d) = lock(&device) {
                            d.data_detached();
                        }
                    }));
                }
            }
        }
    }
    Ok(())
}

/// Accepts data clients until `stop`; each is served on its own thread, and the device
/// lock serializes their commands.
fn serve_data_listener<B: TpmBackend + 'static>(
    listener: &Listener,
    device: &Arc<Mutex<Device<B>>>,
    stop: &Arc<AtomicBool>,
) {
    let mut clients: Vec<JoinHandle<()>> = Vec::new();
    loop {
        match readable_unless(&listener.as_fd(), stop) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                eprintln!("swtpm: data listener failed: {e}");
                break;
            }
        }
        match listener.accept() {
            Ok(mut stream) => {
                let device = Arc::clone(device);
                let stop = Arc::clone(stop);
                clients.retain(|t| !t.is_finished());
                if clients.len() >= MAX_DATA_CLIENTS {
                    eprintln!("swtpm: {MAX_DATA_CLIENTS} data clients already; closing one more");
                    drop(stream);
                    continue;
                }
                clients.push(std::thread::spawn(move || {
                    if let Err(e) = serve_data(&mut stream, &device, &stop) {
                        eprintln!("swtpm: data client dropped: {e}");
                    }
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => eprintln!("swtpm: cannot accept a data client: {e}"),
        }
    }
    for client in clients {
        let _ = client.join();
    }
}

/// Serves TPM commands on one data stream until the peer closes it or `stop` is set.
fn serve_data<B: TpmBackend, S: Read + Write + AsFd>(
    stream: &mut S,
    device: &Mutex<Device<B>>,
    stop: &AtomicBool,
) -> io::Result<()> {
    while readable_unless(&*stream, stop)? {
        let response = match read_frame(stream)? {
            None => return Ok(()),
            Some(Frame::Malformed) => error_response(rc::TPM_RC_COMMAND_SIZE),
            Some(Frame::Command(command)) => lock(device)?.execute(&command),
        };
        stream.write_all(&response)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::io::IoSlice;

    /// What the test backend saw.
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    struct Log {
        power_on: u32,
        power_off: u32,
        cancel: Vec<bool>,
        commands: Vec<(u8, Vec<u8>)>,
    }

    /// A tiny TPM: answers every command with TPM_RC_SUCCESS and the command's bytes
    /// after the header echoed back, refuses localities other than 0 as the SVSM path
    /// does, and counts power cycles. `reply` overrides the response when set.
    #[derive(Debug, Default)]
    struct EchoTpm {
        on: bool,
        log: Arc<Mutex<Log>>,
        reply: Option<Vec<u8>>,
        fail_power_on: bool,
    }

    impl TpmBackend for EchoTpm {
        fn command(&mut self, locality: u8, command: &[u8]) -> Result<Vec<u8>, BackendError> {
            if !self.on {
                return Err(BackendError::PoweredOff);
            }
            if locality != 0 {
                return Err(BackendError::Locality(locality));
            }
            if command.len() > MAX_COMMAND_SIZE {
                return Err(BackendError::CommandTooLarge(command.len()));
            }
            self.log
                .lock()
                .unwrap()
                .commands
                .push((locality, command.to_vec()));
            if let Some(r) = &self.reply {
                return Ok(r.clone());
            }
            let mut out = error_response(0);
            out.extend_from_slice(&command[TPM_HEADER_SIZE..]);
            let size = (out.len() as u32).to_be_bytes();
            out[2..6].copy_from_slice(&size);
            Ok(out)
        }
        fn power_on(&mut self) -> Result<(), BackendError> {
            if self.fail_power_on {
                return Err(BackendError::Transport("no machine".into()));
            }
            self.log.lock().unwrap().power_on += 1;
            self.on = true;
            Ok(())
        }
        fn power_off(&mut self) -> Result<(), BackendError> {
            self.log.lock().unwrap().power_off += 1;
            self.on = false;
            Ok(())
        }
        fn set_cancel(&mut self, on: bool) {
            self.log.lock().unwrap().cancel.push(on);
        }
    }

    fn device() -> (Device<EchoTpm>, Arc<Mutex<Log>>) {
        let tpm = EchoTpm::default();
        let log = Arc::clone(&tpm.log);
        (Device::new(tpm).unwrap(), log)
    }

    fn running() -> (Device<EchoTpm>, Arc<Mutex<Log>>) {
        let (mut d, log) = device();
        assert_eq!(ctl(&mut d, cmd::INIT, &[0, 0, 0, 0]), vec![0, 0, 0, 0]);
        (d, log)
    }

    fn msg(command: u32, body: &[u8]) -> Vec<u8> {
        let mut m = command.to_be_bytes().to_vec();
        m.extend_from_slice(body);
        m
    }

    fn ctl<B: TpmBackend>(d: &mut Device<B>, command: u32, body: &[u8]) -> Vec<u8> {
        let reply = d.control(&msg(command, body), Vec::new());
        assert!(matches!(reply.effect, ControlEffect::None));
        reply.bytes
    }

    fn code(c: u32) -> Vec<u8> {
        c.to_be_bytes().to_vec()
    }

    /// A TPM2_GetRandom(8) command.
    fn get_random() -> Vec<u8> {
        vec![0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8]
    }

    /// State the control channel keeps, to check that refused messages change nothing.
    fn snapshot(d: &Device<EchoTpm>, log: &Arc<Mutex<Log>>) -> (bool, u8, u32, bool, Log) {
        (
            d.is_running(),
            d.locality(),
            d.buffer_size(),
            d.data_attached(),
            log.lock().unwrap().clone(),
        )
    }

    #[test]
    fn new_device_is_off_until_init() {
        let (mut d, log) = device();
        assert!(!d.is_running());
        assert_eq!(log.lock().unwrap().power_off, 1);
        assert_eq!(d.execute(&get_random()), error_response(rc::TPM_RC_FAILURE));
        assert!(log.lock().unwrap().commands.is_empty());
    }

    #[test]
    fn get_capability_reports_what_qemu_needs_for_tpm2() {
        let (mut d, _) = device();
        let reply = ctl(&mut d, cmd::GET_CAPABILITY, &[]);
        assert_eq!(reply.len(), 8);
        // QEMU reads the eight bytes as one big-endian u64.
        let caps = u64::from_be_bytes(reply.clone().try_into().unwrap());
        let qemu_tpm2 = cap::INIT
            | cap::SHUTDOWN
            | cap::GET_TPMESTABLISHED
            | cap::SET_LOCALITY
            | cap::RESET_TPMESTABLISHED
            | cap::SET_DATAFD
            | cap::STOP
            | cap::SET_BUFFERSIZE;
        assert_eq!(caps & u64::from(qemu_tpm2), u64::from(qemu_tpm2));
        assert_eq!(
            caps & u64::from(cap::HASHING | cap::GET_STATEBLOB | cap::SET_STATEBLOB),
            0
        );
        // swtpm's newer layout: result then caps.
        assert_eq!(&reply[..4], &[0, 0, 0, 0]);
        // Extra bytes are ignored: GET_CAPABILITY always succeeds.
        assert_eq!(ctl(&mut d, cmd::GET_CAPABILITY, &[1, 2, 3]), reply);
    }

    #[test]
    fn init_power_cycles_and_starts() {
        let (mut d, log) = running();
        assert!(d.is_running());
        let cycles = |log: &Arc<Mutex<Log>>| {
            let l = log.lock().unwrap();
            (l.power_on, l.power_off)
        };
        assert_eq!(cycles(&log), (1, 2));
        assert_eq!(d.execute(&get_random())[6..10], [0, 0, 0, 0]);
        // A second INIT is a reboot: off, then on again.
        assert_eq!(
            ctl(&mut d, cmd::INIT, &code(INIT_FLAG_DELETE_VOLATILE)),
            code(0)
        );
        assert_eq!(cycles(&log), (2, 3));
    }

    #[test]
    fn init_reports_a_backend_that_cannot_start() {
        let tpm = EchoTpm {
            fail_power_on: true,
            ..EchoTpm::default()
        };
        let mut d = Device::new(tpm).unwrap();
        assert_eq!(ctl(&mut d, cmd::INIT, &[0; 4]), code(result::TPM_FAIL));
        assert!(!d.is_running());
    }

    #[test]
    fn malformed_init_changes_nothing() {
        for body in [
            &[][..],
            &[0, 0, 0],
            &[0, 0, 0, 0, 0],
            &[0, 0, 0, 2],
            &[0x80, 0, 0, 0],
        ] {
            let (mut d, log) = running();
            let before = snapshot(&d, &log);
            assert_eq!(
                ctl(&mut d, cmd::INIT, body),
                code(result::TPM_BAD_PARAMETER),
                "{body:?}"
            );
            assert_eq!(snapshot(&d, &log), before);
        }
    }

    #[test]
    fn stop_powers_off_and_keeps_serving() {
        let (mut d, log) = running();
        assert_eq!(ctl(&mut d, cmd::STOP, &[]), code(0));
        assert!(!d.is_running());
        assert_eq!(log.lock().unwrap().power_off, 3);
        assert_eq!(d.execute(&get_random()), error_response(rc::TPM_RC_FAILURE));
    }

    #[test]
    fn shutdown_powers_off_and_terminates() {
        let (mut d, log) = running();
        let reply = d.control(&msg(cmd::SHUTDOWN, &[]), Vec::new());
        assert_eq!(reply.bytes, code(0));
        assert!(matches!(reply.effect, ControlEffect::Terminate));
        assert!(!d.is_running());
        assert_eq!(log.lock().unwrap().power_off, 3);
    }

    #[test]
    fn stop_and_shutdown_with_a_body_change_nothing() {
        for command in [cmd::STOP, cmd::SHUTDOWN] {
            let (mut d, log) = running();
            let before = snapshot(&d, &log);
            let reply = d.control(&msg(command, &[0]), Vec::new());
            assert_eq!(reply.bytes, code(result::TPM_BAD_PARAMETER));
            assert!(matches!(reply.effect, ControlEffect::None));
            assert_eq!(snapshot(&d, &log), before);
        }
    }

    #[test]
    fn established_flag_is_clear_and_cannot_be_reset() {
        let (mut d, _) = device();
        assert_eq!(
            ctl(&mut d, cmd::GET_TPMESTABLISHED, &[]),
            code(result::TPM_BAD_ORDINAL)
        );
        assert_eq!(
            ctl(&mut d, cmd::RESET_TPMESTABLISHED, &[3, 0, 0, 0]),
            code(result::TPM_BAD_ORDINAL)
        );
        let (mut d, log) = running();
        assert_eq!(
            ctl(&mut d, cmd::GET_TPMESTABLISHED, &[]),
            vec![0, 0, 0, 0, 0, 0, 0, 0]
        );
        let before = snapshot(&d, &log);
        assert_eq!(
            ctl(&mut d, cmd::GET_TPMESTABLISHED, &[0]),
            code(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(
            ctl(&mut d, cmd::RESET_TPMESTABLISHED, &[]),
            code(result::TPM_BAD_PARAMETER)
        );
        for loc in [0u8, 1, 2, 3, 4, 5, 0xff] {
            // QEMU sends the whole 4-byte ptm_reset_est.
            assert_eq!(
                ctl(&mut d, cmd::RESET_TPMESTABLISHED, &[loc, 0, 0, 0]),
                code(result::TPM_BAD_LOCALITY),
                "locality {loc}"
            );
        }
        assert_eq!(snapshot(&d, &log), before);
    }

    #[test]
    fn only_locality_zero_is_accepted() {
        let (mut d, log) = device();
        // Allowed while the TPM is off, as in swtpm; QEMU sends the whole 4-byte ptm_loc.
        assert_eq!(ctl(&mut d, cmd::SET_LOCALITY, &[0, 0, 0, 0]), code(0));
        assert_eq!(ctl(&mut d, cmd::SET_LOCALITY, &[0]), code(0));
        let before = snapshot(&d, &log);
        for loc in [1u8, 2, 3, 4, 5, 0xff] {
            assert_eq!(
                ctl(&mut d, cmd::SET_LOCALITY, &[loc, 0, 0, 0]),
                code(result::TPM_BAD_LOCALITY)
            );
        }
        assert_eq!(
            ctl(&mut d, cmd::SET_LOCALITY, &[]),
            code(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(snapshot(&d, &log), before);
        assert_eq!(d.locality(), 0);
    }

    #[test]
    fn commands_carry_locality_zero_to_the_backend() {
        let (mut d, log) = running();
        let _ = ctl(&mut d, cmd::SET_LOCALITY, &[3]);
        let response = d.execute(&get_random());
        assert_eq!(&response[6..10], &[0, 0, 0, 0]);
        assert_eq!(log.lock().unwrap().commands, vec![(0, get_random())]);
    }

    #[test]
    fn a_backend_locality_refusal_is_tpm_rc_locality() {
        let (mut d, _) = running();
        // Only reachable if the backend itself refuses; force it by poking the field.
        d.locality = 2;
        assert_eq!(
            d.execute(&get_random()),
            error_response(rc::TPM_RC_LOCALITY)
        );
    }

    #[test]
    fn hashing_is_refused_as_a_locality_four_operation() {
        let (mut d, _) = device();
        for command in [cmd::HASH_START, cmd::HASH_END] {
            assert_eq!(ctl(&mut d, command, &[]), code(result::TPM_BAD_ORDINAL));
        }
        let (mut d, log) = running();
        let before = snapshot(&d, &log);
        assert_eq!(
            ctl(&mut d, cmd::HASH_START, &[]),
            code(result::TPM_BAD_LOCALITY)
        );
        assert_eq!(
            ctl(&mut d, cmd::HASH_DATA, &[0, 0, 0, 2, 1, 2]),
            code(result::TPM_BAD_LOCALITY)
        );
        assert_eq!(
            ctl(&mut d, cmd::HASH_END, &[]),
            code(result::TPM_BAD_LOCALITY)
        );
        // Malformed: bodies where none belongs, a missing length, more data than announced.
        assert_eq!(
            ctl(&mut d, cmd::HASH_START, &[0]),
            code(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(
            ctl(&mut d, cmd::HASH_END, &[0]),
            code(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(
            ctl(&mut d, cmd::HASH_DATA, &[0, 0]),
            code(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(
            ctl(&mut d, cmd::HASH_DATA, &[0, 0, 0, 1, 1, 2]),
            code(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(snapshot(&d, &log), before);
    }

    #[test]
    fn cancel_sets_the_line_until_the_next_command() {
        let (mut d, log) = device();
        assert_eq!(
            ctl(&mut d, cmd::CANCEL_TPM_CMD, &[]),
            code(result::TPM_BAD_ORDINAL)
        );
        let (mut d, _) = running();
        assert_eq!(
            ctl(&mut d, cmd::CANCEL_TPM_CMD, &[0]),
            code(result::TPM_BAD_PARAMETER)
        );
        assert!(log.lock().unwrap().cancel.is_empty());
        let log = Arc::clone(&d.backend().log);
        assert_eq!(ctl(&mut d, cmd::CANCEL_TPM_CMD, &[]), code(0));
        assert_eq!(log.lock().unwrap().cancel, vec![true]);
        let _ = d.execute(&get_random());
        assert_eq!(log.lock().unwrap().cancel, vec![true, false]);
    }

    #[test]
    fn buffer_size_is_queried_clamped_and_enforced() {
        let (mut d, log) = device();
        let answer = |size: u32| {
            let mut v = code(0);
            for x in [size, MIN_BUFFER_SIZE, MAX_BUFFER_SIZE] {
                v.extend_from_slice(&x.to_be_bytes());
            }
            v
        };
        assert_eq!(
            ctl(&mut d, cmd::SET_BUFFERSIZE, &[0; 4]),
            answer(MAX_BUFFER_SIZE)
        );
        // QEMU's tpm-crb asks for 3968 bytes.
        assert_eq!(
            ctl(&mut d, cmd::SET_BUFFERSIZE, &3968u32.to_be_bytes()),
            answer(3968)
        );
        assert_eq!(
            ctl(&mut d, cmd::SET_BUFFERSIZE, &1u32.to_be_bytes()),
            answer(MIN_BUFFER_SIZE)
        );
        assert_eq!(
            ctl(&mut d, cmd::SET_BUFFERSIZE, &u32::MAX.to_be_bytes()),
            answer(MAX_BUFFER_SIZE)
        );
        assert_eq!(
            ctl(&mut d, cmd::SET_BUFFERSIZE, &3968u32.to_be_bytes()),
            answer(3968)
        );
        let before = snapshot(&d, &log);
        assert_eq!(
            ctl(&mut d, cmd::SET_BUFFERSIZE, &[0, 0, 0]),
            code(result::TPM_BAD_PARAMETER)
        );
        assert_eq!(snapshot(&d, &log), before);
        assert_eq!(ctl(&mut d, cmd::INIT, &[0; 4]), code(0));
        // Setting while running is refused; querying is not.
        assert_eq!(
            ctl(&mut d, cmd::SET_BUFFERSIZE, &4000u32.to_be_bytes()),
            code(result::TPM_BAD_ORDINAL)
        );
        assert_eq!(ctl(&mut d, cmd::SET_BUFFERSIZE, &[0; 4]), answer(3968));
        // A command over the buffer never reaches the backend.
        let mut big = vec![0x80, 0x01, 0, 0, 0x0f, 0x81, 0, 0, 0x01, 0x7b];
        big.resize(3969, 0);
        let commands = log.lock().unwrap().commands.len();
        assert_eq!(d.execute(&big), error_response(rc::TPM_RC_COMMAND_SIZE));
        assert_eq!(log.lock().unwrap().commands.len(), commands);
    }

    #[test]
    fn responses_over_the_buffer_or_with_a_wrong_size_are_failures() {
        for reply in [
            {
                let mut r = error_response(0);
                r[2..6].copy_from_slice(&4000u32.to_be_bytes());
                r.resize(4000, 0);
                r
            },
            vec![0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0],
            vec![0x80, 0x01, 0, 0],
        ] {
            let tpm = EchoTpm {
                reply: Some(reply),
                ..EchoTpm::default()
            };
            let mut d = Device::new(tpm).unwrap();
            assert_eq!(
                ctl(&mut d, cmd::SET_BUFFERSIZE, &3968u32.to_be_bytes())[..4],
                code(0)
            );
            assert_eq!(ctl(&mut d, cmd::INIT, &[0; 4]), code(0));
            assert_eq!(d.execute(&get_random()), error_response(rc::TPM_RC_FAILURE));
        }
    }

    #[test]
    fn malformed_commands_never_reach_the_backend() {
        let (mut d, log) = running();
        for command in [
            vec![0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0], // shorter than its size
            vec![0x80, 0x01, 0, 0, 0, 9, 0, 0, 0x01, 0x7b, 0, 8], // longer than its size
            vec![0x80, 0x01, 0, 0, 0, 5],                       // no header
        ] {
            assert_eq!(d.execute(&command), error_response(rc::TPM_RC_COMMAND_SIZE));
        }
        assert!(log.lock().unwrap().commands.is_empty());
    }

    #[test]
    fn unsupported_and_unknown_commands_are_bad_ordinals() {
        let (mut d, log) = running();
        let before = snapshot(&d, &log);
        for command in [
            cmd::STORE_VOLATILE,
            cmd::GET_STATEBLOB,
            cmd::SET_STATEBLOB,
            cmd::GET_CONFIG,
            cmd::GET_INFO,
            cmd::LOCK_STORAGE,
            0,
            0x14,
            0xffff_ffff,
        ] {
            assert_eq!(
                ctl(&mut d, command, &[]),
                code(result::TPM_BAD_ORDINAL),
                "{command:#x}"
            );
        }
        assert_eq!(snapshot(&d, &log), before);
    }

    #[test]
    fn a_message_shorter_than_a_command_number_is_a_bad_parameter() {
        let (mut d, log) = running();
        let before = snapshot(&d, &log);
        for m in [&[][..], &[0], &[0, 0, 0]] {
            let reply = d.control(m, Vec::new());
            assert_eq!(reply.bytes, code(result::TPM_BAD_PARAMETER));
        }
        assert_eq!(snapshot(&d, &log), before);
    }

    #[test]
    fn set_datafd_takes_exactly_one_stream_socket() {
        let (mut d, log) = device();
        let before = snapshot(&d, &log);
        // No descriptor, two descriptors, a body, a datagram socket: refused, all closed.
        assert_eq!(
            ctl(&mut d, cmd::SET_DATAFD, &[]),
            code(result::TPM_BAD_PARAMETER)
        );
        let (a, b) = UnixStream::pair().unwrap();
        let reply = d.control(&msg(cmd::SET_DATAFD, &[]), vec![a.into(), b.into()]);
        assert_eq!(reply.bytes, code(result::TPM_BAD_PARAMETER));
        let (a, _b) = UnixStream::pair().unwrap();
        let reply = d.control(&msg(cmd::SET_DATAFD, &[0]), vec![a.into()]);
        assert_eq!(reply.bytes, code(result::TPM_BAD_PARAMETER));
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let reply = d.control(&msg(cmd::SET_DATAFD, &[]), vec![a.into()]);
        assert_eq!(reply.bytes, code(result::TPM_BAD_PARAMETER));
        assert_eq!(snapshot(&d, &log), before);

        let (a, _b) = UnixStream::pair().unwrap();
        let reply = d.control(&msg(cmd::SET_DATAFD, &[]), vec![a.into()]);
        assert_eq!(reply.bytes, code(0));
        assert!(matches!(reply.effect, ControlEffect::AttachData(_)));
        assert!(d.data_attached());
        // A second one while the first is attached: swtpm's TPM_IOERROR.
        let (a, _b) = UnixStream::pair().unwrap();
        let reply = d.control(&msg(cmd::SET_DATAFD, &[]), vec![a.into()]);
        assert_eq!(reply.bytes, code(result::TPM_IOERROR));
        assert!(matches!(reply.effect, ControlEffect::None));
        d.data_detached();
        let (a, _b) = UnixStream::pair().unwrap();
        let reply = d.control(&msg(cmd::SET_DATAFD, &[]), vec![a.into()]);
        assert_eq!(reply.bytes, code(0));
    }

    #[test]
    fn control_messages_are_completed_to_their_size() {
        let (mut client, mut server) = UnixStream::pair().unwrap();
        // INIT in two pieces arrives as one message.
        client.write_all(&msg(cmd::INIT, &[0, 0])).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            client.write_all(&[0, 1]).unwrap();
            client
        });
        let (m, fds) = recv_control(&mut server).unwrap().unwrap();
        assert_eq!(m, msg(cmd::INIT, &[0, 0, 0, 1]));
        assert!(fds.is_empty());
        let mut client = writer.join().unwrap();
        // A short INIT stays short once the deadline passes.
        client.write_all(&msg(cmd::INIT, &[0])).unwrap();
        let (m, _) = recv_control(&mut server).unwrap().unwrap();
        assert_eq!(m, msg(cmd::INIT, &[0]));
        // A closed connection is the end.
        drop(client);
        assert!(recv_control(&mut server).unwrap().is_none());
    }

    #[test]
    fn control_messages_carry_scm_rights() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let (data, _peer) = UnixStream::pair().unwrap();
        let fds = [data.as_fd()];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        let m = msg(cmd::SET_DATAFD, &[]);
        rustix::net::sendmsg(
            &client,
            &[IoSlice::new(&m)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        let (got, fds) = recv_control(&mut server).unwrap().unwrap();
        assert_eq!(got, m);
        assert_eq!(fds.len(), 1);
    }

    #[test]
    fn data_frames_follow_their_header() {
        let (mut client, mut server) = UnixStream::pair().unwrap();
        // Two commands back to back come out as two frames.
        let mut two = get_random();
        two.extend(get_random());
        client.write_all(&two).unwrap();
        assert_eq!(
            read_frame(&mut server).unwrap(),
            Some(Frame::Command(get_random()))
        );
        assert_eq!(
            read_frame(&mut server).unwrap(),
            Some(Frame::Command(get_random()))
        );
        // A size below the header, and one above the buffer (its bytes are drained).
        client
            .write_all(&[0x80, 0x01, 0, 0, 0, 2, 0, 0, 0, 0])
            .unwrap();
        assert_eq!(read_frame(&mut server).unwrap(), Some(Frame::Malformed));
        let mut big = vec![0x80, 0x01, 0, 0, 0x10, 0, 0, 0, 0x01, 0x7b];
        big.resize(4096, 0);
        client.write_all(&big).unwrap();
        client.write_all(&get_random()).unwrap();
        assert_eq!(read_frame(&mut server).unwrap(), Some(Frame::Malformed));
        assert_eq!(
            read_frame(&mut server).unwrap(),
            Some(Frame::Command(get_random()))
        );
        // A command whose bytes stop coming, then a short header.
        client.write_all(&get_random()[..11]).unwrap();
        assert_eq!(read_frame(&mut server).unwrap(), Some(Frame::Malformed));
        client.write_all(&[0x80, 0x01, 0]).unwrap();
        assert_eq!(read_frame(&mut server).unwrap(), Some(Frame::Malformed));
        drop(client);
        assert_eq!(read_frame(&mut server).unwrap(), None);
    }

    #[test]
    fn endpoints_parse_or_say_what_is_wrong() {
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Endpoint>(),
            Ok(Endpoint::Unix("/tmp/x.sock".into()))
        );
        assert_eq!(
            "tcp:127.0.0.1:2322".parse::<Endpoint>(),
            Ok(Endpoint::Tcp("127.0.0.1:2322".parse().unwrap()))
        );
        assert!("unix:".parse::<Endpoint>().unwrap_err().contains("empty"));
        assert!("tcp:nowhere"
            .parse::<Endpoint>()
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!("/tmp/x"
            .parse::<Endpoint>()
            .unwrap_err()
            .contains("unix:PATH"));
    }

    /// Sends one control message and reads `reply_len` bytes back.
    fn round_trip(stream: &mut UnixStream, command: u32, body: &[u8], reply_len: usize) -> Vec<u8> {
        stream.write_all(&msg(command, body)).unwrap();
        let mut reply = vec![0; reply_len];
        stream.read_exact(&mut reply).unwrap();
        reply
    }

    #[test]
    fn the_server_speaks_qemus_sequence() {
        let dir = std::env::temp_dir().join(format!("swtpm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let control = dir.join("ctrl.sock");
        let config = Config {
            control: Endpoint::Unix(control.clone()),
            data: Some("tcp:127.0.0.1:0".parse().unwrap()),
        };
        let tpm = EchoTpm::default();
        let log = Arc::clone(&tpm.log);
        let server = Server::bind(&config, tpm).unwrap();
        let Some(Endpoint::Tcp(data_addr)) = server.data_endpoint().unwrap() else {
            panic!("no TCP data endpoint");
        };
        let thread = std::thread::spawn(move || server.run(Arc::new(AtomicBool::new(false))));

        let mut ctrl = UnixStream::connect(&control).unwrap();
        // CMD_SET_DATAFD with one end of a socketpair, as QEMU does.
        let (data, mut qemu_data) = UnixStream::pair().unwrap();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        let fds = [data.as_fd()];
        assert!(anc.push(SendAncillaryMessage::ScmRights(&fds)));
        let m = msg(cmd::SET_DATAFD, &[]);
        rustix::net::sendmsg(&ctrl, &[IoSlice::new(&m)], &mut anc, SendFlags::empty()).unwrap();
        let mut reply = [0u8; 4];
        ctrl.read_exact(&mut reply).unwrap();
        assert_eq!(reply, [0, 0, 0, 0]);
        drop(data);

        // QEMU's version probe (TPM2_ReadClock) before CMD_INIT gets a TPM 2 header.
        let read_clock = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x81];
        qemu_data.write_all(&read_clock).unwrap();
        let mut response = [0u8; 10];
        qemu_data.read_exact(&mut response).unwrap();
        assert_eq!(response.to_vec(), error_response(rc::TPM_RC_FAILURE));

        assert_eq!(
            round_trip(&mut ctrl, cmd::GET_CAPABILITY, &[], 8)[4..],
            CAPABILITIES.to_be_bytes()
        );
        assert_eq!(round_trip(&mut ctrl, cmd::STOP, &[], 4), code(0));
        assert_eq!(
            round_trip(&mut ctrl, cmd::SET_BUFFERSIZE, &3968u32.to_be_bytes(), 16)[..8],
            [0, 0, 0, 0, 0, 0, 0x0f, 0x80]
        );
        assert_eq!(round_trip(&mut ctrl, cmd::INIT, &[0; 4], 4), code(0));
        assert_eq!(
            round_trip(&mut ctrl, cmd::SET_LOCALITY, &[0; 4], 4),
            code(0)
        );
        assert_eq!(
            round_trip(&mut ctrl, cmd::SET_LOCALITY, &[4, 0, 0, 0], 4),
            code(result::TPM_BAD_LOCALITY)
        );
        assert_eq!(
            round_trip(&mut ctrl, cmd::GET_TPMESTABLISHED, &[], 8),
            vec![0; 8]
        );

        // A command on QEMU's data channel and one on the TCP data channel.
        qemu_data.write_all(&get_random()).unwrap();
        let mut response = [0u8; 12];
        qemu_data.read_exact(&mut response).unwrap();
        assert_eq!(response, [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0, 8]);
        let mut tcp = TcpStream::connect(data_addr).unwrap();
        tcp.write_all(&get_random()).unwrap();
        tcp.read_exact(&mut response).unwrap();
        assert_eq!(response, [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0, 8]);
        // A malformed frame gets TPM_RC_COMMAND_SIZE and the stream stays in step.
        tcp.write_all(&[0x80, 0x01, 0, 0, 0, 3, 0, 0, 0, 0])
            .unwrap();
        let mut short = [0u8; 10];
        tcp.read_exact(&mut short).unwrap();
        assert_eq!(short.to_vec(), error_response(rc::TPM_RC_COMMAND_SIZE));
        tcp.write_all(&get_random()).unwrap();
        tcp.read_exact(&mut response).unwrap();
        assert_eq!(&response[6..10], &[0, 0, 0, 0]);
        assert_eq!(log.lock().unwrap().commands.len(), 3);

        // A second control client after the first leaves.
        drop(ctrl);
        let mut ctrl = UnixStream::connect(&control).unwrap();
        assert_eq!(round_trip(&mut ctrl, cmd::SHUTDOWN, &[], 4), code(0));
        thread.join().unwrap().unwrap();
        assert!(!control.exists(), "the control socket is removed");
        // The data channels are closed once the server stops.
        let mut buf = [0u8; 1];
        assert_eq!(qemu_data.read(&mut buf).unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Audit finding: one control client that connected and sent nothing blocked every
    /// other client forever. Now an idle client gives way to one that is waiting.
    #[test]
    fn an_idle_control_client_does_not_lock_out_the_next() {
        let config = Config {
            control: "tcp:127.0.0.1:0".parse().unwrap(),
            data: None,
        };
        let server = Server::bind(&config, EchoTpm::default()).unwrap();
        let Endpoint::Tcp(addr) = server.control_endpoint().unwrap() else {
            panic!("not TCP");
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || server.run(stop))
        };
        let mut idle = TcpStream::connect(addr).unwrap();
        // The idle client is served first (it gets an answer), then goes silent.
        idle.write_all(&msg(cmd::GET_CAPABILITY, &[])).unwrap();
        let mut reply = [0u8; 8];
        idle.read_exact(&mut reply).unwrap();
        let mut next = TcpStream::connect(addr).unwrap();
        // A generous bound so a broken server fails the test instead of hanging it.
        next.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        next.write_all(&msg(cmd::GET_CAPABILITY, &[])).unwrap();
        next.read_exact(&mut reply)
            .expect("the waiting client is served");
        assert_eq!(reply[4..], CAPABILITIES.to_be_bytes());
        // The idle one was closed.
        idle.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(idle.read(&mut reply).unwrap(), 0);
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn the_server_stops_on_its_flag_and_powers_off() {
        let config = Config {
            control: "tcp:127.0.0.1:0".parse().unwrap(),
            data: None,
        };
        let tpm = EchoTpm::default();
        let log = Arc::clone(&tpm.log);
        let server = Server::bind(&config, tpm).unwrap();
        let Endpoint::Tcp(addr) = server.control_endpoint().unwrap() else {
            panic!("not TCP");
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || server.run(stop))
        };
        let mut ctrl = TcpStream::connect(addr).unwrap();
        ctrl.write_all(&msg(cmd::INIT, &[0; 4])).unwrap();
        let mut reply = [0u8; 4];
        ctrl.read_exact(&mut reply).unwrap();
        assert_eq!(reply, [0; 4]);
        // No descriptors travel over TCP: CMD_SET_DATAFD is malformed there.
        ctrl.write_all(&msg(cmd::SET_DATAFD, &[])).unwrap();
        ctrl.read_exact(&mut reply).unwrap();
        assert_eq!(reply.to_vec(), code(result::TPM_BAD_PARAMETER));
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap().unwrap();
        assert_eq!(log.lock().unwrap().power_off, 3);
    }

    #[test]
    fn a_socket_in_use_or_a_plain_file_is_not_taken_over() {
        let dir = std::env::temp_dir().join(format!("swtpm-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let live = dir.join("live.sock");
        let _listener = UnixListener::bind(&live).unwrap();
        let config = Config {
            control: Endpoint::Unix(live.clone()),
            data: None,
        };
        let err = Server::bind(&config, EchoTpm::default()).unwrap_err();
        assert!(
            format!("{err:#}").contains("another process listens"),
            "{err:#}"
        );
        assert!(live.exists());
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        let config = Config {
            control: Endpoint::Unix(file.clone()),
            data: None,
        };
        let err = Server::bind(&config, EchoTpm::default()).unwrap_err();
        assert!(format!("{err:#}").contains("not a socket"), "{err:#}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        // A socket file nobody listens on is stale: it is replaced.
        let stale = dir.join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let config = Config {
            control: Endpoint::Unix(stale.clone()),
            data: None,
        };
        assert!(Server::bind(&config, EchoTpm::default()).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
