//! The simulator interface against hostile clients (audit findings): connections are
//! bounded, idle ones are closed, and an announced command size costs no memory until
//! its bytes arrive. Observed through behaviour (what the server answers, whether it
//! closes, the largest allocation it makes), never through timings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vtpm_daemon::mssim::{Limits, MssimServer, SharedBackend};
use vtpm_daemon::{BackendError, TpmBackend};

/// The system allocator, recording the largest single allocation since the last reset.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::SeqCst);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::SeqCst);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// A TPM that answers every command with TPM_RC_SUCCESS.
struct Echo;

impl TpmBackend for Echo {
    fn command(&mut self, _locality: u8, _command: &[u8]) -> Result<Vec<u8>, BackendError> {
        Ok(vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0])
    }
    fn power_on(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    fn power_off(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    fn set_cancel(&mut self, _on: bool) {}
}

struct Running {
    command: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(limits: Limits) -> Running {
    let server = MssimServer::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0)
        .unwrap()
        .with_limits(limits);
    let (command, _) = server.local_addrs().unwrap();
    let backend: SharedBackend = Arc::new(Mutex::new(Box::new(Echo)));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || server.serve(backend, stop).unwrap())
    };
    Running {
        command,
        stop,
        thread: Some(thread),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    // A bound on every read, so that a broken server fails the test instead of hanging it.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// One GetRandom-sized command; whether it got the whole answer.
fn served(s: &mut TcpStream) -> bool {
    let command = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8];
    let mut frame = 8u32.to_be_bytes().to_vec();
    frame.push(0);
    frame.extend_from_slice(&(command.len() as u32).to_be_bytes());
    frame.extend_from_slice(&command);
    if s.write_all(&frame).is_err() {
        return false;
    }
    let mut answer = [0u8; 4 + 10 + 4];
    s.read_exact(&mut answer).is_ok()
}

/// Whether the server closed `s` (end of stream or reset).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn hostile_clients_are_bounded() {
    // 1. At most max_clients connections are served; one more is closed at once, and
    //    a slot comes free when a client leaves.
    let server = start(Limits {
        max_clients: 3,
        idle_timeout: Duration::from_secs(600),
    });
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(server.command)).collect();
    for s in &mut held {
        assert!(served(s), "a client within the bound is served");
    }
    let mut extra = connect(server.command);
    assert!(closed(&mut extra), "a client beyond the bound is closed");
    drop(held.pop());
    // The server notices the departure when its thread ends; retry until a slot is free.
    let mut later_served = false;
    for _ in 0..200 {
        let mut s = connect(server.command);
        if served(&mut s) {
            later_served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(later_served, "a freed slot serves a new client");
    drop(held);
    drop(server);

    // 2. A client that sends nothing is closed after the idle timeout; so is one that
    //    stops in the middle of a command.
    let server = start(Limits {
        max_clients: 4,
        idle_timeout: Duration::from_millis(200),
    });
    let mut idle = connect(server.command);
    assert!(closed(&mut idle), "an idle client is closed");
    let mut partial = connect(server.command);
    partial.write_all(&8u32.to_be_bytes()).unwrap();
    assert!(
        closed(&mut partial),
        "a client silent mid-command is closed"
    );

    // 3. A command announced at 64 KiB whose body never comes allocates nothing near
    //    that size.
    let mut big = connect(server.command);
    LARGEST.store(0, Ordering::SeqCst);
    let mut frame = 8u32.to_be_bytes().to_vec();
    frame.push(0);
    frame.extend_from_slice(&(64 * 1024u32).to_be_bytes());
    frame.extend_from_slice(&[0x80, 0x01, 0, 0]);
    big.write_all(&frame).unwrap();
    assert!(closed(&mut big), "the silent client is closed");
    let largest = LARGEST.load(Ordering::SeqCst);
    assert!(
        largest < 16 * 1024,
        "largest allocation while a 64 KiB command was announced: {largest} bytes"
    );
}
