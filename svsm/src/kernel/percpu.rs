//! The per-CPU area that `%fs` points at: stack-protector canary, `errno`, CPU index.
//!
//! Code built with `-fstack-protector` reads its canary from `%fs:0x28` (the x86-64
//! glibc TLS ABI), so the FS base must point here before the first call into C, on every
//! CPU. The canary comes from RDSEED/RDRAND; like glibc, its low byte is zero so a string
//! overflow cannot reproduce it. `%fs:0` holds the area's own address (how
//! [`current`] finds it) and `%fs:0x30` the CPU's index in [`svsm::smp::CPUS`].
//! The boot CPU's area is static; each AP's is allocated by the boot CPU before the AP
//! starts and lives as long as the kernel. The area also names the CPU's stacks and
//! holds its interrupt-nesting state ([`svsm::nesting`]), which the entry path reads
//! through `%fs` before it knows anything else.
#![allow(unsafe_code, reason = "the FS base names this CPU's area")]

use alloc::boxed::Box;
use core::mem::offset_of;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use svsm::nesting::{CpuStacks, CpuState, IST_SLOTS};
use x86_64::registers::model_specific::FsBase;
use x86_64::VirtAddr;

use super::exit::terminate;
use super::gdt;

/// One CPU's area.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PerCpu {
    /// The area's own address (as `%fs:0` holds in the TLS ABI).
    self_address: AtomicU64,
    /// `errno` for the C runtime.
    errno: AtomicI32,
    _reserved: [u32; 7],
    /// The stack-protector canary, at `%fs:0x28`.
    stack_canary: AtomicU64,
    /// The CPU's index, at `%fs:0x30` ([`svsm::smp::PERCPU_INDEX_OFFSET`]).
    index: AtomicU64,
    /// The CPU's APIC ID.
    apic_id: AtomicU32,
    /// Handlers running off their IST stacks ([`svsm::nesting`]).
    depth: AtomicU32,
    /// The kernel stack's usable range.
    kernel_stack: [AtomicU64; 2],
    /// The IST stacks' tops (index = IST number - 1).
    ist_tops: [AtomicU64; IST_SLOTS],
    /// Entry windows recorded by nested events, per IST slot (0: none).
    windows: [AtomicU64; IST_SLOTS],
}

const _: () = assert!(offset_of!(PerCpu, stack_canary) == 0x28);
const _: () = assert!(offset_of!(PerCpu, index) == svsm::smp::PERCPU_INDEX_OFFSET as usize);

impl PerCpu {
    const fn new() -> Self {
        Self {
            self_address: AtomicU64::new(0),
            errno: AtomicI32::new(0),
            _reserved: [0; 7],
            stack_canary: AtomicU64::new(0),
            index: AtomicU64::new(0),
            apic_id: AtomicU32::new(0),
            depth: AtomicU32::new(0),
            kernel_stack: [const { AtomicU64::new(0) }; 2],
            ist_tops: [const { AtomicU64::new(0) }; IST_SLOTS],
            windows: [const { AtomicU64::new(0) }; IST_SLOTS],
        }
    }
}

static BSP: PerCpu = PerCpu::new();

/// Where a CPU's stacks are: the kernel stack's usable range and the IST tops.
#[derive(Debug, Clone, Copy)]
pub struct StackSet {
    /// Lowest usable address of the kernel stack.
    pub bottom: u64,
    /// Top of the kernel stack.
    pub top: u64,
    /// Tops of the IST stacks (each [`gdt::IST_STACK_SIZE`] bytes).
    pub ist_tops: [u64; IST_SLOTS],
}

fn fill(area: &'static PerCpu, index: usize, apic_id: u32, stacks: &StackSet) -> u64 {
    let Some(random) = svsm::arch::random::seed64() else {
        terminate(format_args!(
            "no RDSEED/RDRAND randomness for the stack-protector canary"
        ));
    };
    let address = core::ptr::from_ref(area) as u64;
    area.self_address.store(address, Ordering::Relaxed);
    area.stack_canary.store(random & !0xff, Ordering::Relaxed);
    area.index.store(index as u64, Ordering::Relaxed);
    area.apic_id.store(apic_id, Ordering::Relaxed);
    area.kernel_stack[0].store(stacks.bottom, Ordering::Relaxed);
    area.kernel_stack[1].store(stacks.top, Ordering::Relaxed);
    for (slot, top) in area.ist_tops.iter().zip(stacks.ist_tops) {
        slot.store(top, Ordering::Relaxed);
    }
    address
}

fn fill_and_load(area: &'static PerCpu, index: usize, apic_id: u32, stacks: &StackSet) {
    FsBase::write(VirtAddr::new(fill(area, index, apic_id, stacks)));
}

/// Fills the boot CPU's area (index 0) and points the FS base at it.
pub fn init_bsp() {
    let boot = svsm::arch::entry::boot_stack();
    let stacks = StackSet {
        bottom: boot.bottom,
        top: boot.top,
        ist_tops: gdt::boot_ist_tops(),
    };
    fill_and_load(&BSP, 0, 0, &stacks);
}

/// Records the boot CPU's APIC ID once the APIC is known.
pub fn set_bsp_apic_id(apic_id: u32) {
    BSP.apic_id.store(apic_id, Ordering::Relaxed);
}

/// Allocates an AP's area (on the boot CPU, before the AP starts).
pub fn allocate() -> &'static PerCpu {
    Box::leak(Box::new(PerCpu::new()))
}

/// Fills this AP's `area` and points the FS base at it (on the AP itself).
pub fn init_ap(area: &'static PerCpu, index: usize, apic_id: u32, stacks: &StackSet) {
    fill_and_load(area, index, apic_id, stacks);
}

/// Allocates and fills an AP's area on the boot CPU, for a CPU whose FS base is set
/// from outside (an SEV-SNP VMSA); returns its address.
pub fn prepare(index: usize, apic_id: u32, stacks: &StackSet) -> u64 {
    fill(allocate(), index, apic_id, stacks)
}

/// This CPU's area.
pub fn current() -> &'static PerCpu {
    let address = svsm::arch::segment::fs_read_u64::<0>();
    if address == 0 {
        return &BSP;
    }
    // SAFETY: `%fs:0` holds the address of this CPU's area, which `fill_and_load`
    // stored; areas are 'static (the BSP's static, the APs' leaked boxes).
    unsafe { &*(address as *const PerCpu) }
}

impl PerCpu {
    /// Where C code finds `errno`.
    pub fn errno_location(&self) -> *mut i32 {
        self.errno.as_ptr()
    }

    /// Sets `errno`.
    pub fn set_errno(&self, value: i32) {
        self.errno.store(value, Ordering::Relaxed);
    }

    /// The canary value (for checks and tests).
    pub fn stack_canary(&self) -> u64 {
        self.stack_canary.load(Ordering::Relaxed)
    }

    /// The area's address (what the FS base must hold on its CPU).
    pub fn address(&self) -> u64 {
        self.self_address.load(Ordering::Relaxed)
    }

    /// This CPU's stacks, as [`svsm::nesting`] sees them.
    pub fn stacks(&self) -> CpuStacks {
        CpuStacks {
            kernel: self.kernel_stack[0].load(Ordering::Relaxed)
                ..self.kernel_stack[1].load(Ordering::Relaxed),
            ist: core::array::from_fn(|slot| {
                let top = self.ist_tops[slot].load(Ordering::Relaxed);
                top.saturating_sub(gdt::IST_STACK_SIZE as u64)..top
            }),
        }
    }

    /// The nesting state [`svsm::nesting::decide`] reads.
    pub fn nesting_state(&self) -> CpuState {
        CpuState {
            depth: self.depth.load(Ordering::Relaxed),
            windows: core::array::from_fn(|slot| self.windows[slot].load(Ordering::Relaxed)),
        }
    }

    /// A handler switched off its IST stack: records the entry windows it interrupted
    /// and counts it.
    pub fn enter_handler(&self, windows: &[Option<u64>; IST_SLOTS]) {
        for (slot, window) in self.windows.iter().zip(windows) {
            if let Some(rsp) = window {
                slot.store(*rsp, Ordering::Relaxed);
            }
        }
        self.depth.fetch_add(1, Ordering::Relaxed);
    }

    /// Clears this CPU's recorded entry window of IST `slot` (its handler left it).
    pub fn leave_window(&self, slot: usize) {
        if let Some(w) = self.windows.get(slot) {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// A handler that switched is about to return.
    pub fn leave_handler(&self) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
    }

    /// Handlers running off their IST stacks now.
    pub fn depth(&self) -> u32 {
        self.depth.load(Ordering::Relaxed)
    }
}

/// The canary as the C code sees it: read through `%fs:0x28`.
pub fn canary_through_fs() -> u64 {
    svsm::arch::segment::fs_read_u64::<0x28>()
}
