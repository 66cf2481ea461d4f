//! FS-relative loads: how C code reaches its per-CPU data (the `%fs:0x28` canary).
#![allow(unsafe_code, reason = "FS-relative memory access")]

/// Reads the quadword at FS base + `OFFSET`.
///
/// The kernel points the FS base at its per-CPU area before any use, and `OFFSET` must
/// lie inside that area.
pub fn fs_read_u64<const OFFSET: u32>() -> u64 {
    let value: u64;
    // SAFETY: a load from FS base + OFFSET (AMD APM vol. 2 §4.5.3 "Segment registers in
    // 64-bit mode": FS.base is added to the effective address); the kernel set FS.base to
    // its per-CPU area, which covers OFFSET.
    unsafe {
        core::arch::asm!(
            "mov {value}, fs:[{offset}]",
            value = out(reg) value,
            offset = const OFFSET,
            options(nostack, readonly, preserves_flags)
        );
    }
    value
}
