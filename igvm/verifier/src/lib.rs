//! Verifies an SVSM attestation chain.
