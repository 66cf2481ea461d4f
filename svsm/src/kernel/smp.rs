//! The application processors: their stacks, their start on QEMU (INIT-SIPI-SIPI) and
//! their set-up on any platform.
//!
//! The boot CPU reads the processor list from the ACPI MADT while the entry's page
//! tables still map the firmware's tables ([`discover`]), and after the kernel's page
//! tables and its APIC are up starts each listed AP in turn ([`start_aps`]): INIT,
//! 10 ms, start-up IPI, 200 µs, a second start-up IPI if the AP has not reported
//! (Intel SDM vol. 3A "Typical BSP Initialization Sequence" in "MP Initialization";
//! AMD APM vol. 2 §16.5 "Interprocessor Interrupts"). The AP runs the trampoline
//! ([`svsm::arch::ap_entry`]) into [`ap_start`], takes its own GDT and TSS, IDT,
//! per-CPU area and SSE state ([`init_this_cpu`]; an SEV-SNP SVSM vCPU runs the same
//! but for the FS base, which its VMSA already holds), reports on the console and
//! waits for IPIs.
//!
//! Every AP's stacks come from the heap, allocated by the boot CPU for the CPUs the
//! firmware lists (the MADT on QEMU, the IGVM parameters under SEV-SNP) just before
//! each one starts, and are mapped with 4 KiB pages at a fixed place per CPU index in
//! [`STACK_AREA`]: a 128 KiB kernel stack (the vTPM engine may run on it under SEV-SNP)
//! and five 32 KiB IST stacks, each with an unmapped page of the area below it as its
//! guard. Nothing is reserved for CPUs that do not exist.
#![allow(
    unsafe_code,
    reason = "AP start-up: the trampoline page and the stacks"
)]

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Once;
use svsm::arch::ap_entry::{self, ApParameters, TRAMPOLINE_BASE};
use svsm::arch::tsc::rdtsc;
use svsm::smp::acpi::{self, PhysRead};
use svsm::smp::apic::Ipi;
use svsm::smp::{SmpError, CPUS, MAX_CPUS};
use x86_64::registers::control::Cr3;

use super::gdt::{IST_STACKS, IST_STACK_SIZE, PAGE};
use super::percpu::StackSet;
use super::{apic, enable_sse, gdt, idt, paging, percpu, time};

/// Bytes of an AP's kernel stack.
pub const AP_STACK_SIZE: usize = 128 * 1024;
/// Where the APs' stacks are mapped: PML4 slot 480, which the page-table plan leaves
/// unused (the direct map ends at slot 383, the shared aliases are at slot 496).
pub const STACK_AREA: u64 = 0xFFFF_F000_0000_0000;
/// Address space per CPU index in [`STACK_AREA`] (what is not a stack stays unmapped).
const STRIDE: u64 = 512 * 1024;
const _: () = assert!(
    (PAGE + AP_STACK_SIZE + IST_STACKS * (PAGE + IST_STACK_SIZE)) as u64 <= STRIDE
        && MAX_CPUS as u64 * STRIDE <= 1 << 39
);

/// Where one CPU's stacks are.
#[derive(Debug, Clone, Copy)]
pub struct Stacks {
    /// The kernel stack's guard page.
    pub guard: u64,
    /// Lowest usable address of the kernel stack.
    pub bottom: u64,
    /// Top of the kernel stack.
    pub top: u64,
    /// Guard pages of the IST stacks.
    pub ist_guards: [u64; IST_STACKS],
    /// Tops of the IST stacks.
    pub ist_tops: [u64; IST_STACKS],
}

impl Stacks {
    fn set(&self) -> StackSet {
        StackSet {
            bottom: self.bottom,
            top: self.top,
            ist_tops: self.ist_tops,
        }
    }
}

/// The stack addresses of CPU `index` (1..MAX_CPUS; the boot CPU has the entry's
/// stacks), whether or not they are allocated yet.
pub fn stacks(index: usize) -> Option<Stacks> {
    if index == 0 || index >= MAX_CPUS {
        return None;
    }
    let base = STACK_AREA + index as u64 * STRIDE;
    let ist_base =
        |slot: usize| base + (PAGE + AP_STACK_SIZE + slot * (PAGE + IST_STACK_SIZE)) as u64;
    Some(Stacks {
        guard: base,
        bottom: base + PAGE as u64,
        top: base + (PAGE + AP_STACK_SIZE) as u64,
        ist_guards: core::array::from_fn(ist_base),
        ist_tops: core::array::from_fn(|slot| ist_base(slot) + (PAGE + IST_STACK_SIZE) as u64),
    })
}

/// Whether `address` is in the stack area but in none of a CPU's stacks: a guard page
/// (or the unmapped rest of a CPU's share).
pub fn in_guard(address: u64) -> bool {
    let Some(offset) = address.checked_sub(STACK_AREA) else {
        return false;
    };
    let Some(s) = stacks((offset / STRIDE) as usize) else {
        return offset < STRIDE;
    };
    !(s.bottom..s.top).contains(&address)
        && !(0..IST_STACKS)
            .any(|k| (s.ist_guards[k] + PAGE as u64..s.ist_tops[k]).contains(&address))
}

/// Heap bytes one AP's stacks take.
pub const STACK_BYTES_PER_CPU: usize = AP_STACK_SIZE + IST_STACKS * IST_STACK_SIZE;

/// Allocates CPU `index`'s stacks from the heap and maps them at [`stacks`]`(index)`
/// (on the boot CPU, before the CPU starts). `None` when the heap or the page tables
/// cannot take them.
fn allocate_stacks(index: usize) -> Option<Stacks> {
    let s = stacks(index)?;
    let mut regions = Vec::with_capacity(1 + IST_STACKS);
    regions.push((s.bottom, AP_STACK_SIZE));
    for k in 0..IST_STACKS {
        regions.push((s.ist_guards[k] + PAGE as u64, IST_STACK_SIZE));
    }
    for (va, size) in regions {
        let layout = Layout::from_size_align(size, PAGE).ok()?;
        // SAFETY: a non-zero layout; the block belongs to this CPU's stack for good.
        let block = unsafe { alloc_zeroed(layout) } as u64;
        if block == 0 {
            return None;
        }
        for page in (0..size as u64).step_by(PAGE) {
            // SAFETY: `block` is heap memory (identity mapped, so its physical address
            // is its address) that only this stack uses; the stack area is unused
            // address space and this CPU index's share is mapped only here, once.
            unsafe { paging::map_page(va + page, block + page) }.ok()?;
        }
    }
    Some(s)
}

/// The per-CPU areas of the APs, by index.
static AREAS: Once<Vec<&'static percpu::PerCpu>> = Once::new();
/// The APIC IDs the MADT lists.
static PROCESSORS: Once<Vec<u32>> = Once::new();
/// Set by the AP being started once it no longer needs the trampoline.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Physical memory through the entry's identity map.
struct Identity;

impl PhysRead for Identity {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = addr.checked_add(buf.len() as u64) else {
            return false;
        };
        if addr < 0x1000 || end > 1 << 32 {
            return false;
        }
        // SAFETY: the entry's page tables identity-map the low 4 GiB (still live when
        // `discover` runs); firmware tables are plain memory and only read.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }
}

/// Reads the processor list from the MADT (before the kernel's page tables, which do
/// not map the firmware's ACPI area, replace the entry's).
pub fn discover() {
    let ids = match acpi::processor_apic_ids(&Identity, 0) {
        Ok(ids) => ids,
        Err(e) => {
            log::warn!("smp: no processor list ({e:?}); running on the boot CPU only");
            Vec::new()
        }
    };
    log::info!(
        "smp: the MADT lists {} processors: APIC IDs {ids:?}",
        ids.len()
    );
    PROCESSORS.call_once(|| ids);
}

/// How many processors the MADT listed.
pub fn listed() -> usize {
    PROCESSORS.get().map_or(0, Vec::len)
}

fn delay_micros(us: u64) {
    let ticks = time::tsc_hz() / 1_000_000 * us;
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

fn wait_started(us: u64) -> bool {
    let ticks = time::tsc_hz() / 1_000_000 * us;
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        if STARTED.load(Ordering::Acquire) {
            return true;
        }
        core::hint::spin_loop();
    }
    STARTED.load(Ordering::Acquire)
}

/// Registers the boot CPU (index 0) and starts every other listed processor on QEMU
/// (not under SEV-SNP, where the SVSM vCPUs are created from VMSAs instead).
pub fn start_aps() {
    let bsp = apic::id();
    percpu::set_bsp_apic_id(bsp);
    svsm::smp::set_ipi_sender(&apic::XApicIpi);
    if let Err(e) = CPUS.register(bsp).and_then(|_| CPUS.set_online(0)) {
        log::error!("smp: cannot register the boot CPU: {e}");
        return;
    }
    let ids: Vec<u32> = PROCESSORS
        .get()
        .map(|ids| ids.iter().copied().filter(|&id| id != bsp).collect())
        .unwrap_or_default();
    let mut areas = alloc::vec![percpu::current()];
    let mut pending = Vec::new();
    for id in ids {
        let index = match CPUS.register(id) {
            Ok(index) => index,
            Err(SmpError::TooManyCpus) => {
                log::warn!("smp: APIC ID {id} and later: more than {MAX_CPUS} CPUs, left halted");
                break;
            }
            Err(e) => {
                log::warn!("smp: APIC ID {id} skipped: {e}");
                continue;
            }
        };
        areas.push(percpu::allocate());
        pending.push((index, id));
    }
    AREAS.call_once(|| areas);
    let (kernel_pml4, _) = Cr3::read();
    for (index, id) in pending {
        let Some(s) = allocate_stacks(index) else {
            log::warn!("smp: no memory for CPU {index}'s stacks; it and later CPUs left halted");
            break;
        };
        STARTED.store(false, Ordering::Release);
        // SAFETY: the trampoline page is low RAM that nothing else uses (the loader's
        // boot information was copied at boot), identity mapped writable; the
        // previous AP reported that it left it.
        let installed = unsafe {
            ap_entry::install(ApParameters {
                kernel_cr3: kernel_pml4.start_address().as_u64(),
                stack_top: s.top,
                index: index as u64,
            })
        };
        if !installed {
            log::error!("smp: the AP trampoline does not fit its page; APs left halted");
            break;
        }
        let sipi = Ipi::Startup(ap_entry::startup_vector());
        let started = apic::send(id, Ipi::Init).is_ok() && {
            delay_micros(10_000);
            apic::send(id, sipi).is_ok()
                && (wait_started(200) || (apic::send(id, sipi).is_ok() && wait_started(2_000_000)))
        };
        if !started {
            log::warn!(
                "smp: CPU {index} (APIC ID {id}) did not start (trampoline {TRAMPOLINE_BASE:#x})"
            );
        }
    }
    // Wait for the started APs to finish their set-up.
    let expected = CPUS.count();
    let start = rdtsc();
    let limit = time::tsc_hz() * 5;
    while CPUS.online_count() < expected && rdtsc().wrapping_sub(start) < limit {
        core::hint::spin_loop();
    }
    log::info!(
        "smp: {} of {} CPUs online ({} KiB of stacks from the heap per AP); TLB shootdowns by {}",
        CPUS.online_count(),
        CPUS.count(),
        STACK_BYTES_PER_CPU / 1024,
        if svsm::smp::broadcast_invalidation() {
            "INVLPGB/TLBSYNC"
        } else {
            "IPI and acknowledgement"
        }
    );
}

/// The set-up every AP runs on itself on QEMU: its own GDT and TSS with its IST
/// stacks, the shared IDT, its per-CPU area (FS base, canary), SSE.
pub fn init_this_cpu(index: usize, apic_id: u32) {
    let Some(s) = stacks(index) else {
        loop {
            x86_64::instructions::interrupts::disable();
            x86_64::instructions::hlt();
        }
    };
    let area = AREAS
        .get()
        .and_then(|a| a.get(index).copied())
        .unwrap_or_else(percpu::allocate);
    // The per-CPU area first: the interrupt entry path reads this CPU's stacks there.
    percpu::init_ap(area, index, apic_id, &s.set());
    gdt::init_ap(s.ist_tops);
    idt::init();
    enable_sse();
}

/// SEV-SNP, on the boot vCPU: the stack top and the filled per-CPU area (the FS base
/// its VMSA starts with) of SVSM vCPU `index`.
fn snp_prepare(index: usize, apic_id: u32) -> Option<(u64, u64)> {
    let s = allocate_stacks(index)?;
    Some((s.top, percpu::prepare(index, apic_id, &s.set())))
}

/// SEV-SNP, on the new vCPU (its FS base already set by its VMSA): own GDT and TSS
/// with its IST stacks, the IDT, SSE.
fn snp_init(index: usize) {
    let Some(s) = stacks(index) else {
        loop {
            x86_64::instructions::interrupts::disable();
            x86_64::instructions::hlt();
        }
    };
    gdt::init_ap(s.ist_tops);
    idt::init();
    enable_sse();
}

/// Where the SVSM vCPUs' GHCB aliases are mapped: GPA + this (PML4 slot 0x1F0, which
/// the page-table plan leaves unused; the direct map ends at slot 383).
const SHARED_ALIAS_BASE: u64 = 0xFFFF_F800_0000_0000;

/// SEV-SNP, on the boot vCPU: the shared (C-bit-free) alias of an SVSM vCPU's GHCB.
fn snp_map_shared(gpa: u64) -> Option<u64> {
    if gpa % PAGE as u64 != 0 || gpa >= 1 << 39 {
        return None;
    }
    let va = SHARED_ALIAS_BASE + gpa;
    // SAFETY: `gpa` is a heap page the vCPU plan took for this vCPU's GHCB (nothing
    // else uses it), the alias region is unused, and the vCPU makes the page shared
    // before it touches the alias (paging::map_shared_page's contract).
    unsafe { paging::map_shared_page(va, gpa) }
        .ok()
        .map(|()| va)
}

/// Hands the SEV-SNP runtime the kernel's per-CPU set-up for SVSM vCPUs.
pub fn register_snp_hooks() {
    svsm::platform::snp::runtime::vcpus::set_cpu_hooks(
        svsm::platform::snp::runtime::vcpus::CpuHooks {
            prepare: snp_prepare,
            init: snp_init,
            map_shared: snp_map_shared,
        },
    );
}

/// An AP's first Rust code (from the trampoline), on its own stack.
#[unsafe(no_mangle)]
extern "C" fn ap_start(index: u64) -> ! {
    let index = index as usize;
    let apic_id = CPUS.apic_id(index).unwrap_or(u32::MAX);
    init_this_cpu(index, apic_id);
    // The trampoline page and its GDT are no longer in use.
    STARTED.store(true, Ordering::Release);
    apic::init_local();
    let rsp: u64;
    // SAFETY: reads RSP only.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    log::info!(
        "smp: CPU {index} (APIC ID {apic_id}) online: FS base {:#x}, stack {rsp:#x}",
        percpu::current().address()
    );
    if stacks(index).is_none_or(|s| !(s.bottom..s.top).contains(&rsp)) {
        log::error!("smp: CPU {index} is not on its own stack");
        loop {
            x86_64::instructions::interrupts::disable();
            x86_64::instructions::hlt();
        }
    }
    if CPUS.set_online(index).is_err() {
        log::error!("smp: CPU {index} is not registered");
    }
    loop {
        svsm::arch::interrupts::wait_for_interrupt();
    }
}
