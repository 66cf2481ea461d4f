//! The Microsoft TPM 2.0 simulator's TCP interface, as the `mssim` TCTI of tpm2-tss
//! speaks it.
//!
//! Two ports, big-endian framing (the simulator's `TpmTcpProtocol.h`):
//! - the command port takes `u32 TPM_SEND_COMMAND (8), u8 locality, u32 size, command`
//!   and answers `u32 size, response, u32 0`; `u32 TPM_SESSION_END (20)` ends the
//!   connection;
//! - the platform port (by TCTI convention the command port + 1) takes single `u32`
//!   signals (power on/off, NV on/off, cancel on/off, physical presence, reset) and
//!   answers each with `u32 0`.
//!
//! Every client gets its own thread; all of them share one [`TpmBackend`] behind a mutex,
//! so commands are serialized. A command runs only once it has been received whole, and
//! then to completion even if its client has gone: a client that disconnects mid-command
//! loses nothing that the next client would see half done.
//!
//! Hostile clients are bounded ([`Limits`]): each port serves at most
//! `max_clients` connections at once (one more is closed as soon as it is accepted), a
//! connection that sends nothing for `idle_timeout` is closed, and a command's body is
//! buffered as its bytes arrive, never at the size its header announces.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::{BackendError, TpmBackend};

/// TPM_SIGNAL_POWER_ON.
pub const SIGNAL_POWER_ON: u32 = 1;
/// TPM_SIGNAL_POWER_OFF.
pub const SIGNAL_POWER_OFF: u32 = 2;
/// TPM_SIGNAL_PHYS_PRES_ON.
pub const SIGNAL_PHYS_PRES_ON: u32 = 3;
/// TPM_SIGNAL_PHYS_PRES_OFF.
pub const SIGNAL_PHYS_PRES_OFF: u32 = 4;
/// TPM_SEND_COMMAND.
pub const SEND_COMMAND: u32 = 8;
/// TPM_SIGNAL_CANCEL_ON.
pub const SIGNAL_CANCEL_ON: u32 = 9;
/// TPM_SIGNAL_CANCEL_OFF.
pub const SIGNAL_CANCEL_OFF: u32 = 10;
/// TPM_SIGNAL_NV_ON.
pub const SIGNAL_NV_ON: u32 = 11;
/// TPM_SIGNAL_NV_OFF.
pub const SIGNAL_NV_OFF: u32 = 12;
/// TPM_SIGNAL_KEY_CACHE_ON.
pub const SIGNAL_KEY_CACHE_ON: u32 = 13;
/// TPM_SIGNAL_KEY_CACHE_OFF.
pub const SIGNAL_KEY_CACHE_OFF: u32 = 14;
/// TPM_SIGNAL_RESET: a power cycle.
pub const SIGNAL_RESET: u32 = 17;
/// TPM_SESSION_END.
pub const SESSION_END: u32 = 20;
/// TPM_STOP (asks the simulator to exit; this server only ends the connection).
pub const STOP: u32 = 21;

/// The largest command accepted off the wire; the transport behind carries less and
/// the backend refuses what does not fit.
const MAX_WIRE_COMMAND: u32 = 64 * 1024;

/// TPM_RC_LOCALITY.
const RC_LOCALITY: u32 = 0x907;
/// TPM_RC_COMMAND_SIZE.
const RC_COMMAND_SIZE: u32 = 0x142;
/// TPM_RC_FAILURE.
const RC_FAILURE: u32 = 0x101;

/// The backend shared by every client of every front end.
pub type SharedBackend = Arc<Mutex<Box<dyn TpmBackend>>>;

/// Locks the backend; a client thread that panicked while holding it leaves it usable.
pub fn lock(backend: &SharedBackend) -> MutexGuard<'_, Box<dyn TpmBackend>> {
    backend.lock().unwrap_or_else(|e| e.into_inner())
}

/// How much the server lets its clients hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once on each port; more are closed when accepted.
    pub max_clients: usize,
    /// A connection that sends nothing for this long is closed (also mid-command).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    /// 16 clients per port (tpm2-tools opens one per tool, a resource manager one in
    /// all), idle for at most 5 minutes.
    fn default() -> Self {
        Self {
            max_clients: 16,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The two listening sockets of the simulator interface.
#[derive(Debug)]
pub struct MssimServer {
    command: TcpListener,
    platform: TcpListener,
    limits: Limits,
}

impl MssimServer {
    /// Binds the command and platform ports on `addr` (port 0: any free port).
    pub fn bind(addr: IpAddr, port: u16, platform_port: u16) -> io::Result<Self> {
        let command = TcpListener::bind(SocketAddr::new(addr, port))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}:{port}: {e}")))?;
        let platform = TcpListener::bind(SocketAddr::new(addr, platform_port)).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot bind {addr}:{platform_port}: {e}"))
        })?;
        Ok(Self {
            command,
            platform,
            limits: Limits::default(),
        })
    }

    /// Serves with `limits` instead of [`Limits::default`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The bound (command, platform) addresses.
    pub fn local_addrs(&self) -> io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.command.local_addr()?, self.platform.local_addr()?))
    }

    /// Serves clients until `stop` is set.
    pub fn serve(self, backend: SharedBackend, stop: Arc<AtomicBool>) -> io::Result<()> {
        let limits = self.limits;
        let platform = {
            let (backend, stop) = (backend.clone(), stop.clone());
            let listener = self.platform;
            thread::Builder::new()
                .name("mssim-platform".into())
                .spawn(move || accept_loop(listener, backend, stop, limits, platform_client))?
        };
        accept_loop(self.command, backend, stop, limits, command_client);
        platform.join().ok();
        Ok(())
    }
}

/// Counts a client while it is served.
struct ClientSlot(Arc<AtomicUsize>);

impl ClientSlot {
    /// A slot if fewer than `max` clients hold one.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections until `stop`; each gets a thread running `client`, up to
/// `limits.max_clients` at once.
fn accept_loop(
    listener: TcpListener,
    backend: SharedBackend,
    stop: Arc<AtomicBool>,
    limits: Limits,
    client: fn(TcpStream, &SharedBackend) -> io::Result<()>,
) {
    let clients = Arc::new(AtomicUsize::new(0));
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("vtpm-daemon: cannot poll the listener: {e}");
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let Some(slot) = ClientSlot::take(&clients, limits.max_clients) else {
                    eprintln!(
                        "vtpm-daemon: {} clients already connected; closing the connection \
                         from {peer}",
                        limits.max_clients
                    );
                    drop(stream);
                    continue;
                };
                let backend = backend.clone();
                let spawned = thread::Builder::new()
                    .name("mssim-client".into())
                    .spawn(move || {
                        let _slot = slot;
                        if stream.set_nonblocking(false).is_ok()
                            && stream.set_read_timeout(Some(limits.idle_timeout)).is_ok()
                        {
                            let _ = stream.set_nodelay(true);
                            // A client that goes away is not an error of the server.
                            let _ = client(stream, &backend);
                        }
                    });
                if let Err(e) = spawned {
                    eprintln!("vtpm-daemon: cannot start a client thread: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                eprintln!("vtpm-daemon: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn read_u32(s: &mut TcpStream) -> io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn write_u32(s: &mut TcpStream, v: u32) -> io::Result<()> {
    s.write_all(&v.to_be_bytes())
}

/// A TPM response carrying only a response code (TPM_ST_NO_SESSIONS, size 10).
fn error_response(rc: u32) -> Vec<u8> {
    let mut r = vec![0x80, 0x01, 0, 0, 0, 10];
    r.extend_from_slice(&rc.to_be_bytes());
    r
}

/// One client of the command port.
fn command_client(mut s: TcpStream, backend: &SharedBackend) -> io::Result<()> {
    loop {
        // End of stream here is the client leaving between commands.
        match read_u32(&mut s)? {
            SEND_COMMAND => {
                let mut head = [0u8; 5];
                s.read_exact(&mut head)?;
                let locality = head[0];
                let size = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
                if size > MAX_WIRE_COMMAND {
                    // Cannot stay in step with a client that sends this: drop it.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a {size}-byte command is larger than any TPM command"),
                    ));
                }
                // Buffered as the bytes arrive: an announced size costs nothing until the
                // client sends it. A client that leaves mid-command: nothing was executed.
                let mut command = Vec::new();
                (&mut s).take(u64::from(size)).read_to_end(&mut command)?;
                if command.len() != size as usize {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let response = run(backend, locality, &command)?;
                let mut out = Vec::with_capacity(response.len() + 8);
                out.extend_from_slice(&(response.len() as u32).to_be_bytes());
                out.extend_from_slice(&response);
                out.extend_from_slice(&0u32.to_be_bytes());
                s.write_all(&out)?;
            }
            SESSION_END | STOP => return Ok(()),
            signal => {
                platform_signal(backend, signal)?;
                write_u32(&mut s, 0)?;
            }
        }
    }
}

/// Runs one command on the backend; backend refusals become TPM error responses.
fn run(backend: &SharedBackend, locality: u8, command: &[u8]) -> io::Result<Vec<u8>> {
    match lock(backend).command(locality, command) {
        Ok(r) => Ok(r),
        Err(BackendError::Locality(_)) => Ok(error_response(RC_LOCALITY)),
        Err(BackendError::CommandTooLarge(_)) => Ok(error_response(RC_COMMAND_SIZE)),
        Err(BackendError::PoweredOff) => Ok(error_response(RC_FAILURE)),
        Err(BackendError::Transport(why)) => {
            eprintln!("vtpm-daemon: {why}");
            Err(io::Error::other(why))
        }
    }
}

/// One client of the platform port.
fn platform_client(mut s: TcpStream, backend: &SharedBackend) -> io::Result<()> {
    loop {
        match read_u32(&mut s)? {
            SESSION_END | STOP => return Ok(()),
            signal => {
                platform_signal(backend, signal)?;
                write_u32(&mut s, 0)?;
            }
        }
    }
}

/// Acts on one platform signal; an unknown one ends the connection.
fn platform_signal(backend: &SharedBackend, signal: u32) -> io::Result<()> {
    let result = match signal {
        SIGNAL_POWER_ON => lock(backend).power_on(),
        SIGNAL_POWER_OFF => lock(backend).power_off(),
        SIGNAL_RESET => {
            let mut b = lock(backend);
            b.power_off().and_then(|()| b.power_on())
        }
        SIGNAL_CANCEL_ON | SIGNAL_CANCEL_OFF => {
            lock(backend).set_cancel(signal == SIGNAL_CANCEL_ON);
            Ok(())
        }
        // NV is always available (it lives in the SVSM's memory); physical presence
        // and the key cache do not exist for a vTPM.
        SIGNAL_NV_ON | SIGNAL_NV_OFF | SIGNAL_PHYS_PRES_ON | SIGNAL_PHYS_PRES_OFF
        | SIGNAL_KEY_CACHE_ON | SIGNAL_KEY_CACHE_OFF => Ok(()),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown platform signal {other}"),
            ))
        }
    };
    result.map_err(|e| {
        eprintln!("vtpm-daemon: platform signal {signal}: {e}");
        io::Error::other(e)
    })
}
