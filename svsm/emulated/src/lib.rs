//! An emulated SEV-SNP machine implementing the SVSM platform on the host.

pub mod psp;
