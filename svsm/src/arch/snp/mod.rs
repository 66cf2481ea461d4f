//! The SEV-SNP instructions the SVSM issues at VMPL0, one file per instruction family.
//!
//! Each file pairs the instruction (an `unsafe fn` with a `// SAFETY:` naming the AMD APM
//! section) with safe, pure functions that build its register operands and decode its
//! results. The pure halves are what the host tests check against the manual; the
//! instructions themselves only execute inside an SEV-SNP guest (they raise #UD
//! elsewhere), so the bare-metal kernel calls them only after SEV_STATUS says SNP is
//! active.

#[cfg_attr(not(target_os = "none"), allow(dead_code))]
pub mod early;
pub mod ghcb;
pub mod msr;
pub mod pvalidate;
pub mod rmpadjust;
pub mod vmgexit;
