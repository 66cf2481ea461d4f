//! The kernel heap: a buddy allocator, with the figures the memory report needs.
//!
//! Rust allocations and the C runtime's `malloc` share it. Allocation never happens in
//! interrupt context (the handlers only count and acknowledge), so a spin lock suffices.
#![allow(unsafe_code, reason = "the global allocator hands out raw memory")]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use buddy_system_allocator::Heap;

/// Buddy orders: blocks up to 2^31 bytes.
const ORDERS: usize = 32;

/// The global allocator.
pub struct KernelHeap {
    heap: spin::Mutex<Heap<ORDERS>>,
    /// The most bytes (as the buddy allocator rounds them) ever allocated at once.
    high_water: AtomicUsize,
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap {
    heap: spin::Mutex::new(Heap::empty()),
    high_water: AtomicUsize::new(0),
};

/// Heap figures, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Memory handed to the heap.
    pub total: usize,
    /// Allocated now, as the allocator rounds it (powers of two).
    pub allocated: usize,
    /// Allocated now, as requested.
    pub requested: usize,
    /// The most ever allocated at once (rounded).
    pub high_water: usize,
}

/// Gives the heap the range `[start, end)`.
///
/// # Safety
/// The range must be mapped, writable RAM that nothing else uses, for the kernel's life.
pub unsafe fn init(start: u64, end: u64) {
    // SAFETY: the caller hands over exclusive use of the range.
    unsafe {
        HEAP.heap
            .lock()
            .init(start as usize, (end - start) as usize);
    }
}

/// The heap's figures now.
pub fn stats() -> Stats {
    let heap = HEAP.heap.lock();
    Stats {
        total: heap.stats_total_bytes(),
        allocated: heap.stats_alloc_actual(),
        requested: heap.stats_alloc_user(),
        high_water: HEAP.high_water.load(Ordering::Relaxed),
    }
}

/// Restarts the high-water mark from the current allocation.
pub fn reset_high_water() {
    let heap = HEAP.heap.lock();
    HEAP.high_water
        .store(heap.stats_alloc_actual(), Ordering::Relaxed);
}

/// Asks the heap itself for a block (not through `alloc::alloc`, whose unused results
/// the optimizer may assume succeeded); `None` when it has no such block.
pub fn try_allocate(layout: Layout) -> Option<NonNull<u8>> {
    HEAP.heap.lock().alloc(layout).ok()
}

/// Returns a block from [`try_allocate`].
///
/// # Safety
/// `block` came from `try_allocate(layout)` and is returned once.
pub unsafe fn release(block: NonNull<u8>, layout: Layout) {
    // SAFETY: the caller's contract.
    unsafe { HEAP.heap.lock().dealloc(block, layout) };
}

// SAFETY: `Heap` hands out disjoint blocks satisfying the layout, and takes back only
// what it handed out (GlobalAlloc's contract binds callers of `dealloc`).
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.heap.lock();
        match heap.alloc(layout) {
            Ok(block) => {
                self.high_water
                    .fetch_max(heap.stats_alloc_actual(), Ordering::Relaxed);
                block.as_ptr()
            }
            Err(()) => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(block) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with `layout`.
            unsafe { self.heap.lock().dealloc(block, layout) };
        }
    }
}
