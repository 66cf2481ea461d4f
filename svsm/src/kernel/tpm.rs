//! The vTPM inside the kernel: the engine's entropy, the AES-NI check, start-up.
#![allow(unsafe_code, reason = "reads OpenSSL's capability vector")]

use alloc::boxed::Box;

use vtpm::{EntropyError, EntropySource, LibTpms, Service};

use super::crt::fill_random;
use super::exit::terminate;

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

/// Powers on the engine and starts the vTPM service.
pub fn start() -> Service<LibTpms> {
    require_aesni();
    let mut service = match vtpm::start(Box::new(CpuEntropy)) {
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
