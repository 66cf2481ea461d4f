//! TLB invalidation: INVLPG, a full flush, INVLPGB and TLBSYNC.
//!
//! AMD APM vol. 3 "INVLPG" (one page, this CPU, global entries included), vol. 2
//! §5.5.2 "TLB Management" (writing CR4.PGE flushes every entry, global ones
//! included), vol. 3 "INVLPGB" and "TLBSYNC" (broadcast to every CPU, then wait for
//! completion; operands in [`crate::smp::tlb`]). INVLPGB exists only when CPUID
//! Fn8000_0008 EBX[3] says so; elsewhere it raises #UD, so [`ArchTlb`] checks once.
#![allow(unsafe_code, reason = "TLB management instructions")]

use spin::Once;
use x86_64::registers::control::{Cr4, Cr4Flags};

use crate::smp::tlb::{
    FlushRequest, InvlpgbOperands, InvlpgbSupport, TlbFlush, CPUID_LEAF_INVLPGB,
};

/// Invalidates this CPU's translation of the page holding `va`.
pub fn invlpg(va: u64) {
    // SAFETY: INVLPG (APM vol. 3 "INVLPG") only drops a cached translation; it reads
    // no memory through `va`.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

/// Invalidates every translation of this CPU, global ones included.
pub fn flush_all_local() {
    let cr4 = Cr4::read();
    if cr4.contains(Cr4Flags::PAGE_GLOBAL) {
        // SAFETY: toggling CR4.PGE flushes the whole TLB (APM vol. 2 §5.5.2) and
        // changes nothing else; the original value is restored at once.
        unsafe { Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL) };
        // SAFETY: as above: the original CR4.
        unsafe { Cr4::write(cr4) };
    } else {
        x86_64::instructions::tlb::flush_all();
    }
}

/// Executes INVLPGB with `ops`.
///
/// # Safety
/// Only on a CPU whose CPUID reports INVLPGB (else #UD).
pub unsafe fn invlpgb(ops: InvlpgbOperands) {
    // SAFETY: INVLPGB (0F 01 FE, APM vol. 3 "INVLPGB") with rAX/ECX/EDX as the caller
    // encoded them; it invalidates translations only and touches no memory. The caller
    // checked CPUID Fn8000_0008 EBX[3].
    unsafe {
        core::arch::asm!(
            ".byte 0x0f, 0x01, 0xfe",
            in("rax") ops.rax,
            in("ecx") ops.ecx,
            in("edx") ops.edx,
            options(nostack, preserves_flags)
        )
    }
}

/// Executes TLBSYNC: waits until every INVLPGB of this CPU completed everywhere.
///
/// # Safety
/// Only on a CPU whose CPUID reports INVLPGB (else #UD).
pub unsafe fn tlbsync() {
    // SAFETY: TLBSYNC (0F 01 FF, APM vol. 3 "TLBSYNC") has no operands and only waits.
    unsafe { core::arch::asm!(".byte 0x0f, 0x01, 0xff", options(nostack, preserves_flags)) }
}

/// The CPU's TLB management: INVLPG locally, INVLPGB/TLBSYNC for broadcasts when the
/// CPU has them.
#[derive(Debug, Default)]
pub struct ArchTlb {
    support: Once<Option<InvlpgbSupport>>,
}

impl ArchTlb {
    /// Checks CPUID on first use.
    pub const fn new() -> Self {
        Self {
            support: Once::new(),
        }
    }

    /// What CPUID Fn8000_0008 says about INVLPGB (under SEV-SNP the #VC handler
    /// answers from the CPUID page).
    pub fn invlpgb(&self) -> Option<InvlpgbSupport> {
        *self.support.call_once(|| {
            let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
            if max < CPUID_LEAF_INVLPGB {
                return None;
            }
            let leaf = core::arch::x86_64::__cpuid(CPUID_LEAF_INVLPGB);
            InvlpgbSupport::from_cpuid(leaf.ebx, leaf.edx)
        })
    }
}

impl TlbFlush for ArchTlb {
    fn flush_local(&self, request: FlushRequest) {
        match request {
            FlushRequest::All => flush_all_local(),
            FlushRequest::Pages { count, .. } if count > 64 => flush_all_local(),
            FlushRequest::Pages { start, count } => {
                for i in 0..u64::from(count) {
                    invlpg(start.wrapping_add(i * 4096));
                }
            }
        }
    }

    fn flush_broadcast(&self, request: FlushRequest) -> bool {
        let Some(support) = self.invlpgb() else {
            return false;
        };
        for ops in support.operands(request) {
            // SAFETY: CPUID reported INVLPGB (checked just above).
            unsafe { invlpgb(ops) };
        }
        // SAFETY: as above.
        unsafe { tlbsync() };
        true
    }
}
