//! The bare-metal kernel: boot sequence, CPU tables, memory, console and C runtime.
//!
//! `kernel_start` runs once on the boot CPU, called by the 32-bit entry
//! (`svsm::arch::entry`) in long mode on the boot stack. Order matters: the console
//! first (so every later failure is reported), then the per-CPU area (the FS base must
//! be valid before any C code runs), SSE, GDT/IDT, the heap, the kernel's own page
//! tables, the other CPUs (see `smp`). Then it starts the vTPM (with the state its host
//! keeps behind COM3, when there is a key for it: see `tpm`) and either runs its
//! self-tests (command-line word `test`) or serves the vTPM over COM2; under SEV-SNP the
//! vTPM starts inside the SNP run, once the PSP channel works, and serves the guest.
#![allow(unsafe_code, reason = "boot: control registers and the heap hand-over")]

mod apic;
mod crt;
mod exit;
mod gdt;
mod heap;
mod idt;
mod paging;
mod percpu;
mod pvh;
mod selftest;
mod serial;
mod smp;
mod time;
mod tpm;
mod tpm_channel;

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

use exit::{exit, terminate};

const MIB: u64 = 1024 * 1024;

/// Turns on SSE for the C engine: CR0.EM clear, CR0.MP and CR0.NE set, CR4.OSFXSR and
/// OSXMMEXCPT set, then the x87 and MXCSR defaults. CR4.OSXSAVE stays clear, so OpenSSL
/// does not pick its AVX code paths.
pub(crate) fn enable_sse() {
    // SAFETY: only the FPU control bits change (AMD APM vol. 2 §11.3 "Enabling SSE
    // instructions"); the kernel's own code is soft-float and unaffected.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::NUMERIC_ERROR);
        });
    }
    // SAFETY: only the SSE enable bits change (same section); OSXSAVE stays clear, as
    // it was at boot.
    unsafe {
        Cr4::update(|f| {
            f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
            f.remove(Cr4Flags::OSXSAVE);
        });
    }
    svsm::arch::fpu::init();
}

/// Fails on purpose when the command line asks (`crash=panic`, `crash=stack-overflow`,
/// `crash=longjmp`, `crash=abort`, `crash=nest-depth`, `crash=vc-without-error-code`), so
/// the host can check that every fatal path ends the SVSM with its reason on the console.
fn crash_on_request(info: &pvh::BootInfo) {
    unsafe extern "C" {
        fn abort() -> !;
    }
    #[allow(
        unconditional_recursion,
        reason = "runs into the guard page on purpose"
    )]
    fn recurse(depth: u64) -> u64 {
        let frame = core::hint::black_box([depth; 64]);
        recurse(depth + 1) + frame[0]
    }
    if info.has_flag("crash=panic") {
        panic!("crash=panic on the command line");
    }
    if info.has_flag("crash=stack-overflow") {
        log::info!("overflowing the stack: {}", recurse(0));
    }
    if info.has_flag("crash=longjmp") {
        svsm::arch::setjmp::jump_into_dead_frame();
    }
    if info.has_flag("crash=nest-depth") {
        selftest::nesting::crash_too_deep();
    }
    if info.has_flag("crash=vc-without-error-code") {
        selftest::nesting::crash_misframed_vc();
    }
    if info.has_flag("crash=abort") {
        // SAFETY: the C runtime's abort takes no arguments and never returns.
        unsafe { abort() }
    }
}

/// Logs the heap after the vTPM started and the time since kernel entry.
fn log_ready(entry_tsc: u64) {
    let stats = heap::stats();
    let ready_us = time::micros_since(entry_tsc);
    log::info!(
        "memory: vTPM started (EK ready); heap {} KiB allocated, high-water {} KiB; \
         ready {}.{:03} ms after kernel entry",
        stats.allocated / 1024,
        stats.high_water / 1024,
        ready_us / 1000,
        ready_us % 1000
    );
}

/// The 64-bit entry point, called once by the boot CPU.
#[unsafe(no_mangle)]
extern "C" fn kernel_start(boot_info: u32) -> ! {
    // Read first, for the time from kernel entry to vTPM ready (logged below).
    let entry_tsc = svsm::arch::tsc::rdtsc();
    // SEV-SNP (the entry found a C-bit): the GHCB first, since port I/O goes through it.
    let snp = svsm::platform::snp::runtime::early_init(boot_info);
    serial::init_console();
    percpu::init_bsp();
    enable_sse();
    gdt::init();
    idt::init();
    log::info!("SVSM kernel {} starting", env!("CARGO_PKG_VERSION"));
    svsm::platform::snp::runtime::report();

    let info = match pvh::BootInfo::read(boot_info) {
        Ok(info) => info,
        Err(e) => terminate(format_args!("unusable boot information: {e:?}")),
    };
    if let Some(p) = info.igvm() {
        let svsm = p.svsm_range();
        log::info!(
            "IGVM launch: SVSM {:#x}+{:#x}, {} vCPUs, secrets {:#x}, CPUID {:#x}, firmware {}",
            svsm.base,
            svsm.size,
            p.vcpu_count(),
            p.secrets_gpa(),
            p.cpuid_gpa(),
            p.firmware().is_some()
        );
    }
    time::init();
    log::info!(
        "command line {:?}; TSC {} MHz",
        info.cmdline(),
        time::tsc_hz() / 1_000_000
    );

    let layout = paging::image_layout();
    let heap_start = layout.end.div_ceil(2 * MIB) * 2 * MIB;
    let Some(heap_range) = info
        .ram()
        .iter()
        .find(|r| r.start <= heap_start && heap_start < r.end)
    else {
        terminate(format_args!(
            "no RAM above the kernel image at {heap_start:#x}"
        ));
    };
    // The kernel's page tables map RAM in whole 2 MiB pages above the image.
    let heap_end = heap_range.end / (2 * MIB) * (2 * MIB);
    if heap_end <= heap_start {
        terminate(format_args!(
            "no RAM above the kernel image at {heap_start:#x}"
        ));
    }
    // SEV-SNP: the heap's pages must be validated before first use (no-op otherwise).
    svsm::platform::snp::runtime::validate_svsm_memory(heap_start, heap_end);
    // SAFETY: RAM above the image, identity mapped by the boot tables (and by the
    // kernel's own, see `paging`), used by nothing else (the loader's data lies below
    // the image).
    unsafe { heap::init(heap_start, heap_end) };
    if !snp {
        // While the entry's tables still map the firmware's ACPI tables.
        smp::discover();
    }

    let stack = svsm::arch::entry::boot_stack();
    let mut guards = alloc::vec![stack.guard];
    guards.extend(gdt::guard_pages());
    // Under SEV-SNP the xAPIC's MMIO would need #VC MMIO emulation: left out for now.
    if let Err(e) = paging::init(&info, &guards, (!snp).then(apic::base)) {
        terminate(format_args!("cannot build the page tables: {e:?}"));
    }
    if !snp {
        apic::init();
        smp::start_aps();
    }

    log::info!(
        "image {:#x}..{:#x}: text {} KiB, rodata {} KiB, data {} KiB, bss {} KiB",
        layout.start,
        layout.end,
        (layout.text_end - layout.start) / 1024,
        (layout.rodata_end - layout.text_end) / 1024,
        (layout.bss_start - layout.rodata_end) / 1024,
        (layout.bss_end - layout.bss_start) / 1024
    );
    let stats = heap::stats();
    log::info!(
        "memory: heap {} MiB at {heap_start:#x}; after boot {} KiB allocated (high-water {} KiB)",
        stats.total / MIB as usize,
        stats.allocated / 1024,
        stats.high_water / 1024
    );
    if snp {
        smp::register_snp_hooks();
        svsm::platform::snp::runtime::run(|psp, messenger| {
            let service = tpm::start_snp(psp, messenger);
            log_ready(entry_tsc);
            service
        });
    }
    let mut service = tpm::start(&info);
    log_ready(entry_tsc);
    // No PSP without SEV: no report, so no certificate; the platform hierarchy is
    // withheld all the same.
    if let Err(e) = svsm::psp::evidence::provision_vtpm(&mut service, None) {
        terminate(format_args!(
            "the vTPM's platform hierarchy cannot be withheld: {e}"
        ));
    }
    if info.has_flag("test") {
        exit(selftest::run(&mut service));
    }
    crash_on_request(&info);
    tpm_channel::serve(&mut service)
}
