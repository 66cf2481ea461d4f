//! Every instruction the kernel issues directly, one file per instruction family.
//!
//! Each `unsafe` block names the manual section that defines the instruction. Files whose
//! code only makes sense on the bare-metal target (the mode-switching entry, interrupt
//! stubs, the C `setjmp`) are compiled only for `target_os = "none"`, so the host build
//! of the library never exports symbols that would collide with the host's libc.

#[cfg(target_os = "none")]
pub mod ap_entry;
#[cfg(target_os = "none")]
pub mod entry;
pub mod extable;
pub mod fpu;
pub mod guest_copy;
#[cfg(target_os = "none")]
pub mod interrupts;
pub mod io;
pub mod random;
pub mod segment;
#[cfg(target_os = "none")]
pub mod setjmp;
pub mod snp;
pub mod tlb;
pub mod tsc;
#[cfg(target_os = "none")]
pub mod varargs;
pub mod x2apic;
