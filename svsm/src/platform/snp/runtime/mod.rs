//! The kernel's SEV-SNP state and the hooks its boot path calls: negotiation and the
//! GHCB at start-up, port I/O, termination; memory validation ([`memory`]), the #VC
//! and hostile-vector hook ([`interrupts`]), the guest launch and request loop ([`run`]),
//! the SVSM vCPUs of the other APIC IDs ([`vcpus`]).

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Once;
use svsm_protocol::ghcb::PageState;
use svsm_protocol::igvm_params::IgvmParamBlock;
use svsm_protocol::vmsa::SevFeatures;
use zerocopy::FromBytes;

use crate::arch::snp::early;
use crate::arch::snp::ghcb::ArchGhcb;
use crate::arch::snp::msr::read_sev_status;
use crate::arch::snp::pvalidate::pvalidate;
use crate::platform::{PageSize, PAGE_SIZE};
use crate::snp::boot::{self, SnpStart};
use crate::snp::doorbell::RestrictedInjection;
use crate::snp::hypervisor::{HvClient, IoSize};
use crate::snp::vector::InterruptConfig;
use crate::snp::{SnpError, TerminateReason};

/// What the kernel knows about SEV-SNP once the GHCB works.
#[derive(Debug)]
pub struct SnpRuntime {
    hv: HvClient<ArchGhcb>,
    start: SnpStart,
    param_block: u64,
    interrupts: InterruptConfig,
}

impl SnpRuntime {
    /// The hypervisor client on the boot vCPU's GHCB.
    pub fn hypervisor(&self) -> &HvClient<ArchGhcb> {
        &self.hv
    }

    /// The hypervisor client on the GHCB of the vCPU running this.
    pub fn client(&self) -> &HvClient<ArchGhcb> {
        vcpus::current_hv().unwrap_or(&self.hv)
    }
}

static RUNTIME: Once<SnpRuntime> = Once::new();
/// Set once a fatal error is being reported; port I/O is dropped from then on.
static FAILING: AtomicBool = AtomicBool::new(false);

/// The runtime, once [`early_init`] set it up (only under SEV-SNP).
pub fn get() -> Option<&'static SnpRuntime> {
    RUNTIME.get()
}

/// Stops the VM with `error`'s reason: a termination request, then halt forever.
pub fn fail(_hv: &HvClient<ArchGhcb>, error: &SnpError) -> ! {
    let reason: TerminateReason = error.termination_reason();
    // Log once: if the console itself (port I/O through the GHCB) is what failed,
    // logging again would recurse.
    if !FAILING.swap(true, Ordering::SeqCst) {
        log::error!(
            "snp: fatal: {error}; terminating (reason set {}, code {})",
            reason.set,
            reason.code
        );
    }
    // Straight to the MSR, past the GHCB's lock: the failure may have struck while
    // this vCPU held it (a #VC inside a GHCB call).
    let request = svsm_protocol::ghcb::MsrRequest::Terminate {
        set: reason.set,
        code: reason.code,
    }
    .encode();
    // SAFETY: an SEV-SNP guest (the runtime exists only then); the termination
    // request is the MSR protocol's (GHCB spec §2.3.1), and nothing runs afterwards.
    let _ = unsafe { crate::arch::snp::vmgexit::msr_protocol(request) };
    loop {
        x86_64::instructions::hlt();
    }
}

/// Reads `N` bytes at physical address `gpa` (identity mapped, private).
fn read_phys<const N: usize>(gpa: u64) -> [u8; N] {
    let mut out = [0u8; N];
    // SAFETY: callers pass pages of the SVSM range the measured parameter block
    // names (the block itself, the CPUID and secrets pages), all identity mapped with
    // the C-bit by the entry.
    unsafe { core::ptr::copy_nonoverlapping(gpa as usize as *const u8, out.as_mut_ptr(), N) };
    out
}

/// The first SEV-SNP step of the kernel, before the console (whose port I/O goes
/// through the GHCB): negotiate, read the CPUID page, set up the GHCB. Returns
/// `false` (changing nothing) when the entry found no C-bit (not SEV-SNP).
pub fn early_init(boot_info: u32) -> bool {
    if early::cbit().is_none() {
        return false;
    }
    let (ghcb_gpa, alias) = early::ghcb_addresses();
    // SAFETY: the entry mapped `alias` to the GHCB page without the C-bit and nothing
    // else uses it; this is an SEV-SNP guest (the entry found the C-bit).
    let hv = HvClient::new(unsafe { ArchGhcb::new(alias, ghcb_gpa) });
    let block = read_phys::<4096>(boot_info.into());
    let Ok((block, _)) = IgvmParamBlock::read_from_prefix(&block) else {
        fail(&hv, &SnpError::BootParams)
    };
    let cpuid = read_phys::<4096>(block.cpuid_gpa);
    let start = match boot::start(&hv, &cpuid) {
        Ok(start) => start,
        Err(e) => fail(&hv, &e),
    };
    // The GHCB: rescinded (through its private address), shared, registered.
    // SAFETY: the GHCB page is the entry's, unused so far; rescinding it only makes
    // its private mapping unusable, which nothing uses again.
    if let Err(e) = unsafe { pvalidate(ghcb_gpa, PageSize::Size4K, false) } {
        fail(&hv, &SnpError::Pvalidate(ghcb_gpa, e))
    }
    if let Err(e) = hv
        .page_state_change(ghcb_gpa / PAGE_SIZE, PageState::Shared)
        .and_then(|()| hv.register_ghcb(ghcb_gpa / PAGE_SIZE))
    {
        fail(&hv, &e)
    }
    // SAFETY: an SEV-SNP guest (the entry found the C-bit), where SEV_STATUS exists.
    let status = unsafe { read_sev_status() };
    // Restricted injection: the #HV doorbell only when both sides agree.
    let mode = RestrictedInjection::new(
        SevFeatures::from_sev_status(status),
        start.hypervisor.features,
    );
    let interrupts = InterruptConfig {
        restricted_injection: doorbell::setup_boot(&hv, mode),
        expected: [None; 4],
    };
    RUNTIME.call_once(|| SnpRuntime {
        hv,
        start,
        param_block: boot_info.into(),
        interrupts,
    });
    true
}

/// Logs what [`early_init`] found (once the console works).
pub fn report() {
    if let Some(rt) = get() {
        let h = &rt.start.hypervisor;
        log::info!(
            "snp: SEV-SNP guest; GHCB protocol {}..={} (using 2), hypervisor features {:#x}{}, C-bit {}",
            h.min_version,
            h.max_version,
            h.features.bits(),
            if h.multi_vmpl() { "" } else { " (no multi-VMPL bit: continuing)" },
            rt.start.cbit
        );
        log::info!(
            "snp: GHCB at {:#x} shared and registered",
            rt.hv.transport().gpa()
        );
        doorbell::report();
    }
}

fn io_size(bytes: u8) -> IoSize {
    match bytes {
        1 => IoSize::Byte,
        2 => IoSize::Word,
        _ => IoSize::Dword,
    }
}

/// Stops the VM for a fatal error of the kernel itself (a panic, a nesting failure)
/// with a termination request, when under SEV-SNP; returns otherwise.
pub fn terminate_if_snp(error: &SnpError) {
    if let Some(rt) = get() {
        fail(rt.client(), error)
    }
}

/// Whether the console's port I/O must be dropped: the VM is failing, or this vCPU's
/// GHCB is held by the code a handler interrupted (only an injected vector gets
/// there; waiting for it would hang the vCPU).
fn console_blocked(rt: &SnpRuntime) -> bool {
    FAILING.load(Ordering::SeqCst) || rt.client().transport().in_use()
}

/// Port output under SEV-SNP (through the GHCB); `false` when not under SEV-SNP.
pub fn port_out(port: u16, bytes: u8, value: u32) -> bool {
    let Some(rt) = get() else { return false };
    if console_blocked(rt) {
        return true;
    }
    if let Err(e) = rt.client().io_out(port, io_size(bytes), value.into()) {
        fail(rt.client(), &e)
    }
    true
}

/// Port input under SEV-SNP (through the GHCB); `None` when not under SEV-SNP.
pub fn port_in(port: u16, bytes: u8) -> Option<u32> {
    let rt = get()?;
    if console_blocked(rt) {
        return Some(u32::MAX);
    }
    match rt.client().io_in(port, io_size(bytes)) {
        Ok(value) => Some(value as u32),
        Err(e) => fail(rt.client(), &e),
    }
}

mod doorbell;
mod interrupts;
mod memory;
mod run;
pub mod vcpus;

pub use doorbell::{poll as poll_doorbell, register_vector};

pub use interrupts::handle_interrupt;
pub use memory::validate_svsm_memory;
pub use run::run;
