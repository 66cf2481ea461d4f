//! `malloc` and friends on the kernel heap: 16-byte aligned, the size kept in a header.

use alloc::alloc::{alloc, alloc_zeroed, dealloc, realloc as heap_realloc, Layout};
use core::ffi::{c_int, c_void};

use super::errno::{EINVAL, ENOMEM};
use super::fail_null;

/// Bytes before each block: the requested size, keeping the block 16-byte aligned.
const HEADER: usize = 16;
const ALIGN: usize = 16;

fn layout_for(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, ALIGN).ok()
}

/// Whether `p` is 16-byte aligned (what glibc's malloc guarantees on x86-64).
pub fn aligned_to_16(p: *const c_void) -> bool {
    (p as usize) % ALIGN == 0
}

/// The size recorded for a block `malloc` returned.
///
/// # Safety
/// `p` came from this allocator and was not freed.
pub unsafe fn malloc_size(p: *const c_void) -> usize {
    // SAFETY: the header precedes every block and holds its size.
    unsafe { p.cast::<u8>().sub(HEADER).cast::<usize>().read() }
}

/// Allocates `size` bytes, zeroed if asked.
fn allocate(size: usize, zeroed: bool) -> *mut c_void {
    let Some(layout) = layout_for(size) else {
        return fail_null(ENOMEM);
    };
    // SAFETY: the layout has non-zero size (it includes the header).
    let base = unsafe {
        if zeroed {
            alloc_zeroed(layout)
        } else {
            alloc(layout)
        }
    };
    if base.is_null() {
        return fail_null(ENOMEM);
    }
    // SAFETY: `base` is a fresh block of HEADER + size bytes, 16-byte aligned.
    unsafe {
        base.cast::<usize>().write(size);
        base.add(HEADER).cast()
    }
}

#[unsafe(no_mangle)]
extern "C" fn malloc(size: usize) -> *mut c_void {
    allocate(size, false)
}

#[unsafe(no_mangle)]
extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        Some(total) => allocate(total, true),
        None => fail_null(ENOMEM),
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: C's contract: `p` came from malloc/calloc/realloc and is freed once.
    unsafe {
        let size = malloc_size(p);
        let base = p.cast::<u8>().sub(HEADER);
        let layout = layout_for(size).expect("the size was valid when allocated");
        dealloc(base, layout);
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return malloc(size);
    }
    let Some(new_total) = size.checked_add(HEADER) else {
        return fail_null(ENOMEM);
    };
    // SAFETY: C's contract: `p` is a live block from this allocator; on failure it stays
    // valid, as realloc requires.
    unsafe {
        let old = malloc_size(p);
        let base = p.cast::<u8>().sub(HEADER);
        let layout = layout_for(old).expect("the size was valid when allocated");
        let moved = heap_realloc(base, layout, new_total);
        if moved.is_null() {
            return fail_null(ENOMEM);
        }
        moved.cast::<usize>().write(size);
        moved.add(HEADER).cast()
    }
}

/// `posix_memalign` for alignments up to 16 (every block is 16-byte aligned); a larger
/// alignment gets `ENOMEM` (blocks keep their size in a header, so they cannot be
/// over-aligned), and OpenSSL's aligned allocator then aligns a larger `malloc` block
/// itself.
#[unsafe(no_mangle)]
unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if out.is_null() || !align.is_power_of_two() || align < core::mem::size_of::<usize>() {
        return EINVAL;
    }
    if align > ALIGN {
        return ENOMEM;
    }
    let p = allocate(size, false);
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: C's contract: `out` is writable.
    unsafe { *out = p };
    0
}

/// `malloc` for the C runtime's own functions (strdup, asprintf, posix_memalign).
pub(super) fn crt_malloc(size: usize) -> *mut c_void {
    allocate(size, false)
}
