//! Where the engine's randomness comes from.
//!
//! The engine draws every random byte (its DRBG seed at power-on, OpenSSL's own needs)
//! from one [`EntropySource`] chosen by whoever starts it: the operating system's
//! generator on the host, RDSEED/RDRAND in the kernel, a failing source in tests. A source
//! that fails is never papered over: the engine refuses to start, or enters failure mode.

/// The source could not deliver the bytes asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntropyError;

impl core::fmt::Display for EntropyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the entropy source could not deliver random bytes")
    }
}

/// A source of cryptographically secure random bytes.
pub trait EntropySource: Send {
    /// Fills all of `buf`, or fails; never fills part of it with weak bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// The host operating system's generator (`getrandom(2)`).
#[cfg(any(test, feature = "host"))]
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

#[cfg(any(test, feature = "host"))]
impl EntropySource for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::getrandom(buf).map_err(|_| EntropyError)
    }
}

impl core::error::Error for EntropyError {}
