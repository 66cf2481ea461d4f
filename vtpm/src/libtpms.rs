//! The TPM 2.0 engine: FFI to the TCG reference code as built by libtpms 0.10.
#![allow(unsafe_code)] // Calls into the libtpms and libcrypto C archives and serves their callbacks.
//!
//! Invariants:
//! - libtpms keeps its state in C globals and calls back through plain C functions, so
//!   there is at most one engine per process: [`LibTpms::power_on`] takes a process-wide
//!   flag and [`Drop`] releases it. Every call into the engine goes through `&mut LibTpms`,
//!   so calls are serialized. (The kernel has exactly one TPM.)
//! - Engine state lives in memory owned here: the NV callbacks keep each state blob in
//!   `NV_STORE`; libtpms never opens an `NVChip` file. With a [`StateStore`]
//!   ([`LibTpms::power_on_with_state`]) the permanent state ("permall") is also loaded
//!   from it at power-on and handed to it at every commit, which returns only once it is
//!   kept; a store that fails makes the callback fail, and libtpms then enters its
//!   failure mode.
//! - All randomness, libtpms' and OpenSSL's, comes from the [`EntropySource`] given at
//!   power-on, installed as OpenSSL's RAND method. When it fails, libtpms would quietly
//!   fall back to `rand()`; `ENTROPY_FAILED` records the failure and the engine reports
//!   itself failed, so nothing computed from weak bytes is ever handed out.
//! - The engine runs the [`PROFILE`] profile, set before initialization: without one,
//!   libtpms 0.10 runs its "null" profile, which offers only libtpms 0.9's commands.
//! - No floating-point value crosses this boundary (the kernel target is soft-float):
//!   the RAND method's `add` entry, which takes a double, is left empty.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{c_char, c_int, c_uint, CStr};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use spin::Mutex;

use crate::engine::{Engine, EngineError};
use crate::entropy::EntropySource;
use crate::state::{StateError, StateStore};

/// libtpms' name for its permanent state blob.
const PERMANENT_STATE: &str = "permall";

/// TPM_SUCCESS.
const TPM_SUCCESS: u32 = 0;
/// TPM_FAIL.
const TPM_FAIL: u32 = 9;
/// TPM_RETRY: libtpms' "no such state blob" answer, which triggers manufacture.
const TPM_RETRY: u32 = 0x800;
/// TPMLIB_TPM_VERSION_2.
const TPMLIB_TPM_VERSION_2: c_int = 1;

/// The engine buffer size: what the engine advertises as TPM_PT_MAX_COMMAND_SIZE and
/// TPM_PT_MAX_RESPONSE_SIZE. 4087 is the largest command the SVSM transport carries, and
/// responses of that size fit its 4092-byte response area.
pub const ENGINE_BUFFER_SIZE: u32 = 4087;

/// The libtpms profile the TPM is manufactured with (`TPMLIB_SetProfile`'s JSON).
///
/// "default-v1" enables every command and algorithm libtpms 0.10 implements (TPM 2.0
/// revision 1.83: among others TPM2_PolicyCapability, TPM2_PolicyParameters,
/// TPM2_NV_DefineSpace2 and TPM2_NV_ReadPublic2, which "null" lacks), a superset of what
/// Linux, OVMF and tpm2-tools send. Its StateFormatLevel is stored with the permanent
/// state, so a persisted state keeps its profile.
pub const PROFILE: &str = "default-v1";

/// [`PROFILE`] as libtpms takes it.
const PROFILE_JSON: &CStr = c"{\"Name\":\"default-v1\"}";

/// TPMLIB_GetInfo's flag for the active profile (`TPMLIB_INFO_ACTIVE_PROFILE`).
const TPMLIB_INFO_ACTIVE_PROFILE: c_uint = 32;
/// TPMLIB_GetInfo's flags for the TPM specification and its attributes.
const TPMLIB_INFO_SPECIFICATION: c_uint = 1 | 2;

/// The `struct libtpms_callbacks` of `<libtpms/tpm_library.h>`.
#[repr(C)]
struct Callbacks {
    size_of_struct: c_int,
    nvram_init: Option<extern "C" fn() -> u32>,
    nvram_loaddata: Option<extern "C" fn(*mut *mut u8, *mut u32, u32, *const c_char) -> u32>,
    nvram_storedata: Option<extern "C" fn(*const u8, u32, u32, *const c_char) -> u32>,
    nvram_deletename: Option<extern "C" fn(u32, *const c_char, u8) -> u32>,
    io_init: Option<extern "C" fn() -> u32>,
    io_getlocality: Option<extern "C" fn(*mut u32, u32) -> u32>,
    io_getphysicalpresence: Option<extern "C" fn(*mut u8, u32) -> u32>,
}

/// OpenSSL's `struct rand_meth_st` (`<openssl/rand.h>`).
#[repr(C)]
struct RandMethod {
    seed: Option<extern "C" fn(*const u8, c_int) -> c_int>,
    bytes: Option<extern "C" fn(*mut u8, c_int) -> c_int>,
    cleanup: Option<extern "C" fn()>,
    /// `int (*add)(const void *, int, double)`: never set, no double crosses the FFI.
    add: Option<extern "C" fn()>,
    pseudorand: Option<extern "C" fn(*mut u8, c_int) -> c_int>,
    status: Option<extern "C" fn() -> c_int>,
}

extern "C" {
    fn TPMLIB_ChooseTPMVersion(version: c_int) -> u32;
    fn TPMLIB_RegisterCallbacks(callbacks: *mut Callbacks) -> u32;
    fn TPMLIB_SetBufferSize(wanted: u32, min: *mut u32, max: *mut u32) -> u32;
    fn TPMLIB_SetProfile(profile: *const c_char) -> u32;
    fn TPMLIB_MainInit() -> u32;
    fn TPMLIB_Terminate();
    fn TPMLIB_Process(
        response: *mut *mut u8,
        response_size: *mut u32,
        response_buffer_size: *mut u32,
        command: *mut u8,
        command_size: u32,
    ) -> u32;
    fn TPMLIB_GetInfo(flags: c_uint) -> *mut c_char;
    fn TPM_Malloc(buffer: *mut *mut u8, size: u32) -> u32;
    fn TPM_Free(buffer: *mut u8);
    fn RAND_set_rand_method(method: *const RandMethod) -> c_int;
    /// The reference code's failure-mode flag (a C `int`, `Global.c`).
    static g_inFailureMode: c_int;
    /// OpenSSL's record of the CPU features it uses (`crypto/x86_64cpuid.pl`): word 1 is
    /// CPUID.1:ECX.
    static OPENSSL_ia32cap_P: [c_uint; 4];
}

/// Set while an engine is alive in this process.
static IN_USE: AtomicBool = AtomicBool::new(false);
/// The state blobs libtpms stores through its NV callbacks, by name.
static NV_STORE: Mutex<BTreeMap<String, Vec<u8>>> = Mutex::new(BTreeMap::new());
/// Where the permanent state is kept between boots, if anywhere.
static STATE_STORE: Mutex<Option<Box<dyn StateStore>>> = Mutex::new(None);
/// Why the state store failed, if it did since power-on (the engine is then failed).
static STATE_ERROR: Mutex<Option<StateError>> = Mutex::new(None);
/// Set with [`STATE_ERROR`]: read on every command, so an atomic rather than the lock.
static STATE_FAILED: AtomicBool = AtomicBool::new(false);

/// Records a state store failure.
fn state_failed(e: StateError) {
    *STATE_ERROR.lock() = Some(e);
    STATE_FAILED.store(true, Ordering::SeqCst);
}

/// The locality of the command being processed (read by `tpm_io_getlocality`).
static LOCALITY: AtomicU8 = AtomicU8::new(0);
/// The entropy source of the live engine.
static ENTROPY: Mutex<Option<Box<dyn EntropySource>>> = Mutex::new(None);
/// Set when the entropy source failed since the engine was powered on.
static ENTROPY_FAILED: AtomicBool = AtomicBool::new(false);

static RAND_METHOD: RandMethod = RandMethod {
    seed: Some(rand_seed),
    bytes: Some(rand_bytes),
    cleanup: None,
    add: None,
    pseudorand: Some(rand_bytes),
    status: Some(rand_status),
};

/// Fills `buf` from the engine's entropy source; records a failure.
fn draw_entropy(buf: &mut [u8]) -> bool {
    let ok = match ENTROPY.lock().as_mut() {
        Some(source) => source.fill(buf).is_ok(),
        None => false,
    };
    if !ok {
        ENTROPY_FAILED.store(true, Ordering::SeqCst);
    }
    ok
}

extern "C" fn rand_bytes(buf: *mut u8, num: c_int) -> c_int {
    let Ok(len) = usize::try_from(num) else {
        ENTROPY_FAILED.store(true, Ordering::SeqCst);
        return 0;
    };
    if len == 0 {
        return 1;
    }
    if buf.is_null() {
        return 0;
    }
    // SAFETY: OpenSSL's RAND_bytes contract: `buf` points to `num` writable bytes for the
    // duration of this call, and nothing else accesses them meanwhile.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    c_int::from(draw_entropy(out))
}

extern "C" fn rand_seed(_buf: *const u8, _num: c_int) -> c_int {
    // Extra seed material is not needed: every byte comes from the entropy source.
    1
}

extern "C" fn rand_status() -> c_int {
    c_int::from(ENTROPY.lock().is_some() && !ENTROPY_FAILED.load(Ordering::SeqCst))
}

/// The state blob name libtpms passes, as an owned key.
fn blob_name(name: *const c_char) -> Option<String> {
    if name.is_null() {
        return None;
    }
    // SAFETY: libtpms passes a NUL-terminated string constant ("permall",
    // "volatilestate", "savestate") that outlives the callback.
    let name = unsafe { CStr::from_ptr(name) };
    name.to_str().ok().map(String::from)
}

extern "C" fn nvram_init() -> u32 {
    TPM_SUCCESS
}

extern "C" fn nvram_loaddata(
    data: *mut *mut u8,
    length: *mut u32,
    _tpm_number: u32,
    name: *const c_char,
) -> u32 {
    let Some(name) = blob_name(name) else {
        return TPM_FAIL;
    };
    if data.is_null() || length.is_null() {
        return TPM_FAIL;
    }
    if name == PERMANENT_STATE && !NV_STORE.lock().contains_key(&name) {
        if let Some(state_store) = STATE_STORE.lock().as_mut() {
            match state_store.load() {
                Ok(Some(state)) => {
                    NV_STORE.lock().insert(name.clone(), state.to_vec());
                }
                // Nothing kept yet: libtpms manufactures the TPM.
                Ok(None) => {}
                Err(e) => {
                    state_failed(e);
                    return TPM_FAIL;
                }
            }
        }
    }
    let store = NV_STORE.lock();
    let Some(blob) = store.get(&name) else {
        // No such blob: on first power-on this makes libtpms manufacture the TPM.
        return TPM_RETRY;
    };
    let Ok(len) = u32::try_from(blob.len()) else {
        return TPM_FAIL;
    };
    let mut buffer: *mut u8 = core::ptr::null_mut();
    // SAFETY: TPM_Malloc writes a pointer to `len` fresh bytes (or leaves NULL and fails)
    // into our local; libtpms takes ownership of what we hand it and frees it itself.
    let rc = unsafe { TPM_Malloc(&mut buffer, len.max(1)) };
    if rc != TPM_SUCCESS || buffer.is_null() {
        return TPM_FAIL;
    }
    // SAFETY: `buffer` holds at least `len` bytes and does not overlap `blob`.
    unsafe { core::ptr::copy_nonoverlapping(blob.as_ptr(), buffer, blob.len()) };
    // SAFETY: libtpms passes valid out-pointers (checked non-null above).
    unsafe {
        *data = buffer;
    }
    // SAFETY: as above.
    unsafe {
        *length = len;
    }
    TPM_SUCCESS
}

extern "C" fn nvram_storedata(
    data: *const u8,
    length: u32,
    _tpm_number: u32,
    name: *const c_char,
) -> u32 {
    let Some(name) = blob_name(name) else {
        return TPM_FAIL;
    };
    let blob = if length == 0 {
        Vec::new()
    } else if data.is_null() {
        return TPM_FAIL;
    } else {
        // SAFETY: libtpms passes `length` readable bytes at `data` for this call.
        unsafe { core::slice::from_raw_parts(data, length as usize) }.to_vec()
    };
    if name == PERMANENT_STATE {
        if let Some(state_store) = STATE_STORE.lock().as_mut() {
            if let Err(e) = state_store.store(&blob) {
                state_failed(e);
                return TPM_FAIL;
            }
        }
    }
    NV_STORE.lock().insert(name, blob);
    TPM_SUCCESS
}

extern "C" fn nvram_deletename(_tpm_number: u32, name: *const c_char, must_exist: u8) -> u32 {
    let Some(name) = blob_name(name) else {
        return TPM_FAIL;
    };
    match NV_STORE.lock().remove(&name) {
        None if must_exist != 0 => TPM_RETRY,
        _ => TPM_SUCCESS,
    }
}

extern "C" fn io_init() -> u32 {
    TPM_SUCCESS
}

extern "C" fn io_getlocality(locality: *mut u32, _tpm_number: u32) -> u32 {
    if locality.is_null() {
        return TPM_FAIL;
    }
    // SAFETY: libtpms passes a pointer to its local TPM_MODIFIER_INDICATOR (u32).
    unsafe {
        *locality = u32::from(LOCALITY.load(Ordering::SeqCst));
    }
    TPM_SUCCESS
}

extern "C" fn io_getphysicalpresence(present: *mut u8, _tpm_number: u32) -> u32 {
    if present.is_null() {
        return TPM_FAIL;
    }
    // SAFETY: libtpms passes a pointer to its local TPM_BOOL (one byte).
    unsafe {
        *present = 0;
    }
    TPM_SUCCESS
}

/// The engine: libtpms running the TCG TPM 2.0 reference code, powered on.
#[derive(Debug)]
pub struct LibTpms {
    /// libtpms' response buffer (allocated and grown by libtpms, freed on drop).
    response: *mut u8,
    /// Its allocated size.
    response_capacity: u32,
    /// The size of the last response.
    response_len: u32,
    /// Whether libtpms was initialized (so drop must terminate it).
    initialized: bool,
    /// The engine's buffer size (advertised max command/response size).
    buffer_size: u32,
}

// SAFETY: `response` is owned exclusively by this value (libtpms only touches it during
// TPMLIB_Process, which needs `&mut self`), so moving the value to another thread moves
// the ownership with it; the C globals are guarded by the one-engine-per-process flag.
unsafe impl Send for LibTpms {}

impl LibTpms {
    /// Powers the engine on: installs `entropy` as the source of all randomness,
    /// registers the in-memory NV and I/O callbacks, sizes the I/O buffer and runs
    /// libtpms' initialization, which manufactures the TPM (fresh seeds) because no
    /// state exists yet. The TPM then awaits TPM2_Startup.
    ///
    /// Fails with [`EngineError::Busy`] while another engine is alive in this process and
    /// with [`EngineError::Entropy`] when the source cannot deliver.
    pub fn power_on(entropy: Box<dyn EntropySource>) -> Result<Self, EngineError> {
        Self::power_on_inner(entropy, None)
    }

    /// Like [`Self::power_on`], with the permanent state kept in `store`: the TPM
    /// kept there is loaded (seeds, NV indices, persistent objects, authorizations,
    /// dictionary-attack state; PCRs start fresh), or a new one manufactured and stored
    /// when the store is empty, and every later commit is stored before the command that
    /// made it returns.
    ///
    /// A state that cannot be loaded or opened fails with [`EngineError::State`] and
    /// nothing of it is used: the TPM is never silently re-manufactured.
    pub fn power_on_with_state(
        entropy: Box<dyn EntropySource>,
        store: Box<dyn StateStore>,
    ) -> Result<Self, EngineError> {
        Self::power_on_inner(entropy, Some(store))
    }

    fn power_on_inner(
        entropy: Box<dyn EntropySource>,
        store: Option<Box<dyn StateStore>>,
    ) -> Result<Self, EngineError> {
        if IN_USE
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(EngineError::Busy);
        }
        // From here on, dropping `engine` terminates libtpms and releases the flag.
        let mut engine = Self {
            response: core::ptr::null_mut(),
            response_capacity: 0,
            response_len: 0,
            initialized: false,
            buffer_size: 0,
        };
        NV_STORE.lock().clear();
        *STATE_STORE.lock() = store;
        *STATE_ERROR.lock() = None;
        STATE_FAILED.store(false, Ordering::SeqCst);
        LOCALITY.store(0, Ordering::SeqCst);
        ENTROPY_FAILED.store(false, Ordering::SeqCst);
        *ENTROPY.lock() = Some(entropy);
        // Refuse to start at all when the source cannot deliver now.
        let mut probe = [0u8; 32];
        if !draw_entropy(&mut probe) {
            return Err(EngineError::Entropy);
        }
        // SAFETY: RAND_METHOD is a static with 'static lifetime whose entries are valid
        // `extern "C"` functions of the types OpenSSL expects (or NULL).
        if unsafe { RAND_set_rand_method(&RAND_METHOD) } != 1 {
            return Err(EngineError::Entropy);
        }
        // SAFETY: plain call; selects the TPM 2.0 personality before initialization.
        let rc = unsafe { TPMLIB_ChooseTPMVersion(TPMLIB_TPM_VERSION_2) };
        if rc != TPM_SUCCESS {
            return Err(EngineError::Init(rc));
        }
        let mut callbacks = Callbacks {
            size_of_struct: core::mem::size_of::<Callbacks>() as c_int,
            nvram_init: Some(nvram_init),
            nvram_loaddata: Some(nvram_loaddata),
            nvram_storedata: Some(nvram_storedata),
            nvram_deletename: Some(nvram_deletename),
            io_init: Some(io_init),
            io_getlocality: Some(io_getlocality),
            io_getphysicalpresence: Some(io_getphysicalpresence),
        };
        // SAFETY: libtpms copies the structure (`memcpy` into its own static) before
        // returning; the function pointers are 'static.
        let rc = unsafe { TPMLIB_RegisterCallbacks(&mut callbacks) };
        if rc != TPM_SUCCESS {
            return Err(EngineError::Init(rc));
        }
        // SAFETY: a NUL-terminated 'static string; libtpms copies what it keeps.
        let rc = unsafe { TPMLIB_SetProfile(PROFILE_JSON.as_ptr()) };
        if rc != TPM_SUCCESS {
            return Err(EngineError::Init(rc));
        }
        let (mut min, mut max) = (0u32, 0u32);
        // SAFETY: the out-pointers are valid locals.
        let size = unsafe { TPMLIB_SetBufferSize(ENGINE_BUFFER_SIZE, &mut min, &mut max) };
        if size != ENGINE_BUFFER_SIZE {
            return Err(EngineError::BufferSize(size));
        }
        engine.buffer_size = size;
        engine.initialized = true;
        // SAFETY: callbacks are registered and no other engine runs (IN_USE).
        let rc = unsafe { TPMLIB_MainInit() };
        if ENTROPY_FAILED.load(Ordering::SeqCst) {
            return Err(EngineError::Entropy);
        }
        if let Some(e) = *STATE_ERROR.lock() {
            return Err(EngineError::State(e));
        }
        if rc != TPM_SUCCESS {
            return Err(EngineError::Init(rc));
        }
        if engine.failed() {
            return Err(EngineError::FailureMode);
        }
        Ok(engine)
    }

    /// Whether OpenSSL runs AES with the AES-NI instructions. Its fallback is table
    /// based, and table lookups leak the key through the cache to a co-resident observer
    /// (the hypervisor, under SEV-SNP): the kernel refuses to serve the TPM without it.
    /// Meaningful once the engine is powered on (OpenSSL has read the CPU features).
    pub fn uses_aes_ni(&self) -> bool {
        // SAFETY: a plain read of OpenSSL's capability vector, written once at its
        // initialization (which MainInit triggered) and only read afterwards.
        let caps = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(OPENSSL_ia32cap_P)) };
        caps[1] & (1 << 25) != 0
    }

    /// Why the state store failed since power-on, if it did.
    pub fn state_error(&self) -> Option<StateError> {
        *STATE_ERROR.lock()
    }

    /// libtpms' description of itself (a JSON document with the TPM specification and
    /// attributes), if it can produce one.
    pub fn info() -> Option<String> {
        Self::get_info(TPMLIB_INFO_SPECIFICATION)
    }

    /// The profile the engine runs, as libtpms reports it (a JSON document:
    /// `{"ActiveProfile":{"Name":"default-v1","StateFormatLevel":..,"Commands":..}}`).
    pub fn active_profile(&self) -> Option<String> {
        Self::get_info(TPMLIB_INFO_ACTIVE_PROFILE)
    }

    fn get_info(flags: c_uint) -> Option<String> {
        // SAFETY: TPMLIB_GetInfo returns a malloc'ed NUL-terminated string or NULL; it
        // only reads libtpms' tables.
        let ptr = unsafe { TPMLIB_GetInfo(flags) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated, ours until freed below.
        let text = unsafe { CStr::from_ptr(ptr) }
            .to_str()
            .ok()
            .map(String::from);
        // SAFETY: the string was allocated by libtpms with malloc; TPM_Free is free.
        unsafe { TPM_Free(ptr.cast()) };
        text
    }
}

impl Engine for LibTpms {
    #[inline]
    fn execute(&mut self, locality: u8, command: &mut [u8]) -> Result<(), EngineError> {
        let command_len = u32::try_from(command.len()).map_err(|_| EngineError::Process(0))?;
        LOCALITY.store(locality, Ordering::SeqCst);
        let mut len = 0u32;
        // SAFETY: `command` is a live, exclusively borrowed buffer of `command_len` bytes;
        // `self.response`/`response_capacity` are the buffer libtpms allocated on an
        // earlier call (or NULL/0), which libtpms may reallocate and writes back.
        let rc = unsafe {
            TPMLIB_Process(
                &mut self.response,
                &mut len,
                &mut self.response_capacity,
                command.as_mut_ptr(),
                command_len,
            )
        };
        if rc != TPM_SUCCESS {
            return Err(EngineError::Process(rc));
        }
        if self.response.is_null() || len > self.response_capacity {
            self.response_len = 0;
            return Err(EngineError::Process(TPM_FAIL));
        }
        self.response_len = len;
        Ok(())
    }

    #[inline]
    fn response(&self) -> &[u8] {
        if self.response.is_null() {
            return &[];
        }
        // SAFETY: libtpms wrote `response_len` bytes into `response`, an allocation of
        // `response_capacity >= response_len` bytes that stays untouched until the next
        // TPMLIB_Process, which needs `&mut self` and so ends this borrow first.
        unsafe { core::slice::from_raw_parts(self.response, self.response_len as usize) }
    }

    #[inline]
    fn failed(&self) -> bool {
        // SAFETY: a plain read of a C `int` that only libtpms writes, and libtpms runs
        // only inside calls that hold `&mut self`.
        let in_failure = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(g_inFailureMode)) };
        in_failure != 0
            || ENTROPY_FAILED.load(Ordering::SeqCst)
            || STATE_FAILED.load(Ordering::SeqCst)
    }

    fn buffer_size(&self) -> u32 {
        self.buffer_size
    }

    /// libtpms 0.10.2 stores persistent objects in the layout of StateFormatLevel 2 and
    /// later (every profile but "null"), but its TPM2_Clear still reads their attributes
    /// at the old offset, finds no storage or endorsement object and evicts nothing
    /// (libtpms issue #626, fixed by pull request #627 after 0.10.2; Debian forky's
    /// 0.10.2-5 has the bug). `vtpm/tests/engine.rs` checks the engine still behaves so.
    fn clear_keeps_persistent_objects(&self) -> bool {
        true
    }

    fn state_evidence(&self) -> Option<svsm_protocol::ek_evidence::StateEvidence> {
        STATE_STORE.lock().as_ref().map(|store| store.evidence())
    }
}

impl Drop for LibTpms {
    fn drop(&mut self) {
        if self.initialized {
            // SAFETY: we hold the engine (IN_USE) and MainInit ran (whether or not it
            // succeeded; libtpms tears down what exists).
            unsafe { TPMLIB_Terminate() };
        }
        if !self.response.is_null() {
            // SAFETY: allocated by libtpms with malloc/realloc, not used after this.
            unsafe { TPM_Free(self.response) };
            self.response = core::ptr::null_mut();
        }
        NV_STORE.lock().clear();
        *STATE_STORE.lock() = None;
        *ENTROPY.lock() = None;
        IN_USE.store(false, Ordering::SeqCst);
    }
}
