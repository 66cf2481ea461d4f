//! TPM 2.0 for the SVSM: the engine bindings and the vTPM service.
//!
//! The engine is the TCG TPM 2.0 reference implementation as built by libtpms
//! ([`libtpms::LibTpms`], the only module with `unsafe`). The [`service::Service`] puts
//! the SVSM vTPM protocol's TPM_SEND_COMMAND transport in front of it: power-on,
//! start-up with the endorsement keys, locality and size rules, and failing closed.
//! The engine is a process-wide singleton (libtpms keeps its state in C globals); the
//! kernel has exactly one TPM.
//!
//! Bringing the vTPM up, in the kernel or on the host: [`start`] with the platform's
//! [`EntropySource`] (RDSEED/RDRAND in the kernel, `OsEntropy` on the host with the
//! `host` feature) powers the engine on, manufactures it and runs start-up; hand the
//! resulting [`Service`] to the SVSM (`svsm::requests::vtpm::VtpmProtocol`), keeping
//! [`Vtpm::ek_public`] for the attestation manifest. In the kernel, also refuse to serve
//! when [`LibTpms::uses_aes_ni`] is false (table-based AES leaks through the cache).
//! Before any guest code runs, [`Service::provision`] writes the endorsement evidence (EK
//! certificates under a per-boot CA that an SNP report binds, [`provision`], [`certs`])
//! to NV and withholds the platform hierarchy.
#![cfg_attr(not(test), no_std)]
extern crate alloc;

pub mod certs;
pub mod ek;
pub mod engine;
pub mod entropy;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc_compat;
pub mod libtpms;
pub mod nv;
pub mod provision;
pub mod service;
pub mod state;
pub mod tpm;
pub mod trace;

pub use ek::EkTemplate;
pub use engine::{Engine, EngineError};
#[cfg(any(test, feature = "host"))]
pub use entropy::OsEntropy;
pub use entropy::{EntropyError, EntropySource};
pub use libtpms::LibTpms;
pub use provision::{HardwareEvidence, Provisioned, ReportSource};
pub use service::{Service, StartupError, Vtpm, VtpmError};

/// The engine this crate was linked with: the pinned Debian packages with their .deb
/// digests (`scripts/xtask/src/engine.rs`) and the SHA-256 of `libtpms.a` and
/// `libcrypto.a` as linked. The engine is part of the launch measurement.
pub const ENGINE: &str = env!("VTPM_ENGINE");

const ENGINE_ID_LEN: usize = svsm_protocol::vtpm::ENGINE_ID_MARKER.len() + ENGINE.len() + 1;

/// [`ENGINE`] behind its marker and NUL-terminated, as the kernel carries it in its image
/// (`svsm_protocol::vtpm::find_engine_id` reads it back, for `svsm-igvm inspect`).
pub static ENGINE_ID: [u8; ENGINE_ID_LEN] = {
    let marker = svsm_protocol::vtpm::ENGINE_ID_MARKER;
    let engine = ENGINE.as_bytes();
    let mut id = [0u8; ENGINE_ID_LEN];
    let mut i = 0;
    while i < marker.len() {
        id[i] = marker[i];
        i += 1;
    }
    let mut j = 0;
    while j < engine.len() {
        id[i + j] = engine[j];
        j += 1;
    }
    id
};

/// Powers on the engine with `entropy` and starts the vTPM service on it.
pub fn start(
    entropy: alloc::boxed::Box<dyn EntropySource>,
) -> Result<Service<LibTpms>, StartupError> {
    let engine = LibTpms::power_on(entropy)?;
    Service::start(engine)
}

/// Like [`start`], with the TPM's permanent state kept in `store` between boots
/// ([`LibTpms::power_on_with_state`]).
///
/// A TPM manufactured at this boot gets [`DA_PARAMETERS`] first: the vTPM is usually
/// stopped without TPM2_Shutdown (a killed or crashed VM), and after such a stop the
/// TPM counts one dictionary-attack failure if DA-protected authorization was used; with
/// libtpms' defaults (3 tries, 1000 s) three killed VMs lock such keys out.
pub fn start_with_state(
    entropy: alloc::boxed::Box<dyn EntropySource>,
    store: alloc::boxed::Box<dyn state::StateStore>,
) -> Result<Service<LibTpms>, StartupError> {
    let engine = LibTpms::power_on_with_state(entropy, store)?;
    let manufactured = engine.state_evidence().is_none_or(|e| e.generation == 0);
    let mut service = Service::start(engine)?;
    if manufactured {
        let (max_tries, recovery_time, lockout_recovery) = DA_PARAMETERS;
        let mut command =
            tpm::dictionary_attack_parameters(max_tries, recovery_time, lockout_recovery);
        service::expect_success(service.engine_mut(), &mut command)?;
    }
    Ok(service)
}

/// The dictionary-attack parameters of a TPM the SVSM manufactures with persistent
/// state: (maxTries, recoveryTime in seconds, lockoutRecovery in seconds). 32 failures
/// before lockout (as common hardware TPMs), one forgiven every 10 minutes the TPM runs,
/// and a lockout-authorization failure blocks the lockout hierarchy for a day. The owner
/// changes them with TPM2_DictionaryAttackParameters (`tpm2_dictionarylockout -s -n N
/// -t T -l L`, lockout authorization) and clears the counter with
/// TPM2_DictionaryAttackLockReset (`tpm2_dictionarylockout -c`); they persist.
pub const DA_PARAMETERS: (u32, u32, u32) = (32, 600, 86_400);
