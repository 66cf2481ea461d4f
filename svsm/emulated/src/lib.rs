//! An emulated SEV-SNP machine implementing the SVSM platform on the host.
//!
//! - [`rmp`]: the reverse map table and the APM's rules for PVALIDATE and RMPADJUST;
//! - [`machine`]: [`EmulatedSnp`], memory + RMP + vCPUs with a
//!   VMSA per VMPL, implementing [`svsm::platform::Platform`], with doors for the guest
//!   (RMP-checked accesses, the call handshake) and the hypervisor;
//! - [`system`]: a machine in the state a launch leaves it, with the SVSM running on it;
//! - [`psp`]: the emulated PSP;
//! - [`ghcb`], [`hypervisor`]: the GHCB protocol answered by an emulated (optionally
//!   hostile) hypervisor, and a machine booted by the SVSM's SEV-SNP start-up code;
//! - [`vcpus`]: the SVSM vCPUs (one VMPL0 vCPU per other APIC ID) that boot creates;
//! - [`uart`]: a 16550 UART model behind the emulated hypervisor's port I/O, connected
//!   to a host byte stream.
//!
//! It is a model of the hardware's rules, not a recorder: tests run the real request
//! handlers on it and check what the RMP and memory look like afterwards.

pub mod ghcb;
pub mod hypervisor;
pub mod machine;
pub mod psp;
pub mod rmp;
pub mod system;
pub mod uart;
pub mod vcpus;

pub use machine::{
    Backing, CallReturn, EmulatedSnp, GuestFault, HostChange, HostRace, MachineSnapshot, VcpuMode,
};
pub use system::{EmulatedSystem, LaunchConfig, LaunchError, LaunchInfo, SharedSnp};
