//! The vTPM inside the kernel: the engine's entropy, the AES-NI check, start-up, and
//! the state kept between boots.
//!
//! The vTPM keeps its permanent state between boots when it has a key only this launch
//! can derive and a store channel to the host:
//! - under SEV-SNP the key comes from the PSP (MSG_KEY_REQ, `svsm::psp::state_key`) and
//!   the state travels over COM3 to the host's store helper (`svsm::state_store`); with
//!   no UART on COM3 the vTPM keeps no state and is manufactured afresh;
//! - without SEV there is no PSP. Only for tests, the command-line word
//!   `vtpm.insecure_test_key=LABEL` selects [`InsecureTestKeys`], a key anyone can
//!   compute from the label: the state is then kept but NOT confidential, and the kernel
//!   says so on the console. It is never used under SEV-SNP;
//! - otherwise the vTPM is manufactured afresh at every boot.
//!
//! A kept state that does not open (another launch's, corrupted, truncated, foreign) or
//! a store channel that fails at boot stops the SVSM with the reason: the vTPM's identity
//! is never silently replaced.
#![allow(unsafe_code, reason = "reads OpenSSL's capability vector")]

use alloc::boxed::Box;
use alloc::vec::Vec;

use sha2::{Digest, Sha256};
use svsm::psp::state_key::DerivedKeys;
use svsm::psp::{GuestMessenger, PspTransport};
use svsm::state_store::{ChannelError, PortIo, Prefetched, StoreChannel};
use svsm_protocol::state_store::STORE_UART_BASE;
use vtpm::state::{
    read_header, BlobStore, KeySelection, KeySource, SealedStore, StateError, StateStore,
};
use vtpm::{EntropyError, EntropySource, LibTpms, Service};
use zeroize::Zeroizing;

use super::crt::fill_random;
use super::exit::terminate;
use super::pvh::BootInfo;
use super::time;

/// RDSEED/RDRAND, for the engine's DRBG.
#[derive(Debug)]
pub struct CpuEntropy;

impl EntropySource for CpuEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        fill_random(buf).map_err(|_| EntropyError)
    }
}

unsafe extern "C" {
    fn OPENSSL_cpuid_setup();
    static OPENSSL_ia32cap_P: [u32; 4];
}

/// CPUID.1:ECX.AESNI as OpenSSL records it in word 1 of its capability vector.
const AESNI_BIT: u32 = 1 << 25;

/// Runs OpenSSL's CPU detection and terminates unless it chose AES-NI: the table-based
/// AES fallback leaks key bits through the cache to a co-resident observer.
pub fn require_aesni() {
    // SAFETY: OPENSSL_cpuid_setup only runs CPUID and fills OPENSSL_ia32cap_P (guarded
    // against running twice); it reads no environment here (getenv returns NULL).
    unsafe { OPENSSL_cpuid_setup() };
    // SAFETY: a plain read of OpenSSL's capability words, which nothing writes any more.
    let caps = unsafe { core::ptr::addr_of!(OPENSSL_ia32cap_P).read_volatile() };
    log::info!(
        "OpenSSL capability vector {:08x}:{:08x}:{:08x}:{:08x}",
        caps[0],
        caps[1],
        caps[2],
        caps[3]
    );
    if caps[1] & AESNI_BIT == 0 {
        terminate(format_args!(
            "OpenSSL did not select AES-NI: refusing the table-based AES"
        ));
    }
    log::info!("OpenSSL uses AES-NI");
}

/// Powers on the engine and starts the vTPM service without SEV-SNP: with state kept
/// under the insecure test key when the command line asks for it, afresh otherwise.
pub fn start(info: &BootInfo) -> Service<LibTpms> {
    require_aesni();
    let label = info
        .cmdline()
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(TEST_KEY_FLAG));
    let Some(label) = label else {
        log::info!("vTPM state: not kept (no PSP without SEV-SNP): a new TPM at every boot");
        return check(vtpm::start(Box::new(CpuEntropy)));
    };
    log::warn!(
        "vTPM state: INSECURE TEST KEY (command line {TEST_KEY_FLAG}{label}): the state is \
         kept, sealed under a key anyone can compute from the label; NOT confidential, for \
         tests under QEMU without SEV only"
    );
    let channel = match StoreChannel::new(KernelPorts, STORE_UART_BASE) {
        Ok(channel) => channel,
        Err(e) => terminate(format_args!(
            "vTPM state: the store channel on COM3 is unusable: {e}; the vTPM does not start"
        )),
    };
    check(start_kept(channel, |_| {
        Ok(InsecureTestKeys::new(label.as_bytes()))
    }))
}

/// Starts the vTPM under SEV-SNP, before any guest code runs, with state kept through
/// the store channel (when the host provides COM3) under keys the PSP derives for this
/// launch. The TCB version new seals use is the one a report of this launch names.
pub fn start_snp(psp: &dyn PspTransport, messenger: &mut GuestMessenger) -> Service<LibTpms> {
    require_aesni();
    let channel = match StoreChannel::new(KernelPorts, STORE_UART_BASE) {
        Ok(channel) => channel,
        Err(ChannelError::NoUart) => {
            log::warn!(
                "vTPM state: no store channel (no UART on COM3): not kept, a new TPM at \
                 every boot"
            );
            return check(vtpm::start(Box::new(CpuEntropy)));
        }
        Err(e) => terminate(format_args!(
            "vTPM state: the store channel on COM3 is unusable: {e}; the vTPM does not start"
        )),
    };
    check(start_kept(channel, |kept| {
        let tcb = svsm::psp::state_key::committed_tcb(psp, messenger).map_err(|e| {
            log::error!("vTPM state: no report for the current TCB: {e:?}");
            StateError::Key
        })?;
        DerivedKeys::derive(psp, messenger, tcb, kept, Box::new(CpuEntropy))
    }))
}

/// The command-line prefix that selects [`InsecureTestKeys`] (QEMU without SEV only).
pub const TEST_KEY_FLAG: &str = "vtpm.insecure_test_key=";

/// Starts the vTPM with the state kept behind `channel`: fetches the kept blob, picks its
/// key selection from the (not yet authenticated) header, gets the keys from `keys`, and
/// starts the engine, which opens and loads the state or manufactures and stores a new
/// TPM. Any failure stops the SVSM with the reason.
fn start_kept<P, K>(
    mut channel: StoreChannel<P>,
    keys: impl FnOnce(Option<KeySelection>) -> Result<K, StateError>,
) -> Result<Service<LibTpms>, vtpm::StartupError>
where
    P: PortIo + 'static,
    K: KeySource + 'static,
{
    let fetch = svsm::arch::tsc::rdtsc();
    let kept = match channel.get() {
        Ok(kept) => kept,
        Err(e) => terminate(format_args!(
            "vTPM state: cannot fetch the kept state from the host: {e}; the vTPM does not \
             start, so its identity is never silently replaced"
        )),
    };
    let fetch_us = time::micros_since(fetch);
    let selection = match kept.as_deref().map(read_header).transpose() {
        Ok(header) => header.map(|h| h.key_selection()),
        Err(e) => refuse(e),
    };
    let keys = keys(selection).unwrap_or_else(|e| refuse(e));
    let store = Timed::new(SealedStore::new(Prefetched::new(channel, kept), keys));
    let restore = svsm::arch::tsc::rdtsc();
    let service = vtpm::start_with_state(Box::new(CpuEntropy), Box::new(store));
    let restore_us = time::micros_since(restore);
    if let Err(vtpm::StartupError::Engine(vtpm::EngineError::State(e))) = service {
        refuse(e)
    }
    let mut service = service?;
    let generation = vtpm::Engine::state_evidence(service.engine_mut()).map_or(0, |e| e.generation);
    if generation == 0 {
        log::info!(
            "vTPM state: none kept: a new TPM was manufactured and stored \
             (fetch {}.{:03} ms, manufacture and store {}.{:03} ms)",
            fetch_us / 1000,
            fetch_us % 1000,
            restore_us / 1000,
            restore_us % 1000
        );
    } else {
        log::info!(
            "vTPM state: restored generation {} (fetch {}.{:03} ms, open + load + start-up \
             {}.{:03} ms)",
            generation,
            fetch_us / 1000,
            fetch_us % 1000,
            restore_us / 1000,
            restore_us % 1000
        );
    }
    Ok(service)
}

/// Stops the SVSM because the kept state cannot be used.
fn refuse(e: StateError) -> ! {
    terminate(format_args!(
        "vTPM state refused: {e}. The vTPM does not start, so its identity is never \
         silently replaced (the host's store is left as it is; an operator can set it \
         aside: vtpm-state-store --remanufacture)"
    ))
}

/// Port I/O for the store channel: IN/OUT, which become GHCB IOIO exits under SEV-SNP.
#[derive(Debug)]
struct KernelPorts;

impl PortIo for KernelPorts {
    fn inb(&self, port: u16) -> u8 {
        svsm::arch::io::inb(port)
    }

    fn outb(&self, port: u16, value: u8) {
        svsm::arch::io::outb(port, value)
    }
}

/// FOR TESTS UNDER QEMU WITHOUT SEV ONLY: a state key anyone can compute.
///
/// The key is SHA-256 of a fixed domain string and the label from the command line, so a
/// state kept with it is not confidential and not bound to any launch; a different label
/// plays "another launch" in tests. Its key selection (no fields, TCB 0) is one the PSP
/// key source refuses, so an SNP launch never opens such a state, and this source opens
/// only states sealed with its own selection.
#[derive(Debug)]
pub struct InsecureTestKeys {
    key: Zeroizing<[u8; 32]>,
}

/// The key selection [`InsecureTestKeys`] seals with.
const TEST_SELECTION: KeySelection = KeySelection {
    fields: 0,
    vmpl: 0,
    guest_svn: 0,
    tcb_version: 0,
};

impl InsecureTestKeys {
    /// The test key for `label`.
    pub fn new(label: &[u8]) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"SVSM vTPM state: INSECURE test key for QEMU without SEV\0");
        hash.update(label);
        Self {
            key: Zeroizing::new(hash.finalize().into()),
        }
    }
}

impl KeySource for InsecureTestKeys {
    fn current(&self) -> KeySelection {
        TEST_SELECTION
    }

    fn key(&mut self, selection: &KeySelection) -> Result<Zeroizing<[u8; 32]>, StateError> {
        if *selection != TEST_SELECTION {
            return Err(StateError::Key);
        }
        Ok(self.key.clone())
    }

    fn nonce(&mut self) -> Result<[u8; 12], StateError> {
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce).map_err(|_| StateError::Entropy)?;
        Ok(nonce)
    }
}

/// How many stores are logged one by one before only every 100th is.
const LOGGED_STORES: u64 = 20;

/// A sealed store that logs how long each load and store takes (sealing, the channel,
/// the host's durable write).
struct Timed<B, K> {
    inner: SealedStore<B, K>,
    stores: u64,
    total_us: u64,
    max_us: u64,
}

impl<B: BlobStore, K: KeySource> Timed<B, K> {
    fn new(inner: SealedStore<B, K>) -> Self {
        Self {
            inner,
            stores: 0,
            total_us: 0,
            max_us: 0,
        }
    }
}

impl<B: BlobStore, K: KeySource> StateStore for Timed<B, K> {
    fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StateError> {
        let start = svsm::arch::tsc::rdtsc();
        let state = self.inner.load()?;
        let us = time::micros_since(start);
        if let Some(state) = &state {
            log::info!(
                "vTPM state: generation {} opened ({} bytes of state) in {}.{:03} ms",
                self.inner.generation(),
                state.len(),
                us / 1000,
                us % 1000
            );
        }
        Ok(state)
    }

    fn store(&mut self, state: &[u8]) -> Result<(), StateError> {
        let start = svsm::arch::tsc::rdtsc();
        self.inner.store(state)?;
        let us = time::micros_since(start);
        self.stores += 1;
        self.total_us += us;
        self.max_us = self.max_us.max(us);
        if self.stores <= LOGGED_STORES || self.stores % 100 == 0 {
            let mean = self.total_us / self.stores;
            log::info!(
                "vTPM state: generation {} stored ({} bytes sealed) in {}.{:03} ms \
                 ({} stores this boot, mean {}.{:03} ms, max {}.{:03} ms)",
                self.inner.generation(),
                state.len() + vtpm::state::HEADER_SIZE + vtpm::state::TAG_SIZE,
                us / 1000,
                us % 1000,
                self.stores,
                mean / 1000,
                mean % 1000,
                self.max_us / 1000,
                self.max_us % 1000
            );
        }
        Ok(())
    }

    fn evidence(&self) -> vtpm::state::StateEvidence {
        self.inner.evidence()
    }
}

/// Checks the started service: the engine, its profile.
fn check(service: Result<Service<LibTpms>, vtpm::StartupError>) -> Service<LibTpms> {
    let mut service = match service {
        Ok(service) => service,
        Err(e) => terminate(format_args!("the vTPM did not start: {e}")),
    };
    // Read through the image's copy, which keeps it in the image for `svsm-igvm inspect`.
    let id = core::hint::black_box(&vtpm::ENGINE_ID[..]);
    log::info!(
        "vtpm: engine {}",
        svsm_protocol::vtpm::find_engine_id(id).unwrap_or("(unreadable)")
    );
    match service.engine_mut().active_profile() {
        Some(profile)
            if profile.contains(&alloc::format!("\"Name\":\"{}\"", vtpm::libtpms::PROFILE)) =>
        {
            log::info!("vtpm: profile {}", vtpm::libtpms::PROFILE);
        }
        other => terminate(format_args!(
            "the engine does not run the {} profile: {other:?}",
            vtpm::libtpms::PROFILE
        )),
    }
    service
}
