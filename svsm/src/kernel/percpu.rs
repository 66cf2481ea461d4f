//! The per-CPU area that `%fs` points at: stack-protector canary and `errno`.
//!
//! Code built with `-fstack-protector` reads its canary from `%fs:0x28` (the x86-64
//! glibc TLS ABI), so the FS base must point here before the first call into C, on every
//! CPU. The canary comes from RDSEED/RDRAND; like glibc, its low byte is zero so a string
//! overflow cannot reproduce it.

use core::mem::offset_of;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use x86_64::registers::model_specific::FsBase;
use x86_64::VirtAddr;

use super::exit::terminate;

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
}

const _: () = assert!(offset_of!(PerCpu, stack_canary) == 0x28);

static BSP: PerCpu = PerCpu {
    self_address: AtomicU64::new(0),
    errno: AtomicI32::new(0),
    _reserved: [0; 7],
    stack_canary: AtomicU64::new(0),
};

/// Fills the boot CPU's area and points the FS base at it.
pub fn init_bsp() {
    let Some(random) = svsm::arch::random::seed64() else {
        terminate(format_args!(
            "no RDSEED/RDRAND randomness for the stack-protector canary"
        ));
    };
    let address = core::ptr::addr_of!(BSP) as u64;
    BSP.self_address.store(address, Ordering::Relaxed);
    BSP.stack_canary.store(random & !0xff, Ordering::Relaxed);
    FsBase::write(VirtAddr::new(address));
}

/// This CPU's area (only the boot CPU runs the kernel so far).
pub fn current() -> &'static PerCpu {
    &BSP
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
}

/// The canary as the C code sees it: read through `%fs:0x28`.
pub fn canary_through_fs() -> u64 {
    svsm::arch::segment::fs_read_u64::<0x28>()
}
