//! TLB invalidation requests and the INVLPGB/TLBSYNC operands that carry them.
//!
//! AMD APM vol. 3 "INVLPGB" (0F 01 FE) and "TLBSYNC" (0F 01 FF): INVLPGB broadcasts an
//! invalidation to every processor of the system (of the guest, in a guest: the
//! hardware substitutes the guest's ASID); TLBSYNC waits until every INVLPGB this
//! processor issued has completed everywhere. Operands:
//! - rAX: bits 63:12 the virtual page, bit 0 "VA valid", bit 1 "PCID valid", bit 2
//!   "ASID valid", bit 3 "include global", bit 4 "final translation only", bit 5
//!   "include nested"; with VA invalid every address matches;
//! - ECX[15:0]: how many pages after the first (at most CPUID Fn8000_0008 EDX[15:0]),
//!   ECX[31]: 2 MiB stride;
//! - EDX[15:0]: ASID, EDX[27:16]: PCID.
//!
//! CPUID Fn8000_0008 EBX[3] says whether INVLPGB and TLBSYNC exist (APM vol. 3
//! appendix E.4.7). Without them, the kernel sends an IPI to every other CPU and waits
//! for each one's acknowledgement (see [`super::Cpus::shootdown`]).

/// rAX bit 0: the VA field is valid.
pub const INVLPGB_VA: u64 = 1 << 0;
/// rAX bit 1: the PCID field is valid.
pub const INVLPGB_PCID: u64 = 1 << 1;
/// rAX bit 2: the ASID field is valid.
pub const INVLPGB_ASID: u64 = 1 << 2;
/// rAX bit 3: include global translations.
pub const INVLPGB_INCLUDE_GLOBAL: u64 = 1 << 3;
/// rAX bit 4: only final (leaf) translations.
pub const INVLPGB_FINAL_ONLY: u64 = 1 << 4;
/// ECX bit 31: the count steps in 2 MiB pages.
pub const INVLPGB_STRIDE_2M: u32 = 1 << 31;
/// CPUID Fn8000_0008 EBX bit 3: INVLPGB and TLBSYNC are supported.
pub const CPUID_EBX_INVLPGB: u32 = 1 << 3;
/// The CPUID leaf that reports INVLPGB.
pub const CPUID_LEAF_INVLPGB: u32 = 0x8000_0008;

const PAGE: u64 = 4096;

/// What to invalidate, on every CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushRequest {
    /// Every translation, global ones included.
    All,
    /// `count` 4 KiB pages from `start` (page aligned down).
    Pages {
        /// The first page's virtual address.
        start: u64,
        /// How many pages (0 invalidates nothing).
        count: u32,
    },
}

/// INVLPGB's register operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvlpgbOperands {
    /// rAX.
    pub rax: u64,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// INVLPGB as CPUID reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvlpgbSupport {
    /// The most extra pages one INVLPGB may cover (Fn8000_0008 EDX[15:0]).
    pub max_extra: u16,
}

impl InvlpgbSupport {
    /// From CPUID Fn8000_0008's EBX and EDX; `None` when INVLPGB is absent.
    pub fn from_cpuid(ebx: u32, edx: u32) -> Option<Self> {
        (ebx & CPUID_EBX_INVLPGB != 0).then_some(Self {
            max_extra: (edx & 0xFFFF) as u16,
        })
    }

    /// The INVLPGB instructions that carry `request` (the guest's ASID is implied: in a
    /// guest the ASID-valid bit with ASID 0 names the current guest). Each covers at
    /// most `max_extra + 1` pages; global translations are always included, since the
    /// kernel's mappings may be global.
    pub fn operands(self, request: FlushRequest) -> impl Iterator<Item = InvlpgbOperands> {
        let base = INVLPGB_ASID | INVLPGB_INCLUDE_GLOBAL;
        let per = u64::from(self.max_extra) + 1;
        let (first, pages, all) = match request {
            FlushRequest::All => (0, 1, true),
            FlushRequest::Pages { start, count } => (start & !(PAGE - 1), u64::from(count), false),
        };
        (0..pages.div_ceil(per)).map(move |i| {
            if all {
                return InvlpgbOperands {
                    rax: base,
                    ecx: 0,
                    edx: 0,
                };
            }
            let done = i * per;
            let n = (pages - done).min(per);
            InvlpgbOperands {
                rax: first.wrapping_add(done * PAGE) | INVLPGB_VA | base,
                ecx: (n - 1) as u32,
                edx: 0,
            }
        })
    }
}

/// How one CPU invalidates its own TLB, and whether it can reach every CPU at once.
pub trait TlbFlush: Sync {
    /// Invalidates `request` in this CPU's TLB (INVLPG or a CR3/CR4.PGE flush).
    fn flush_local(&self, request: FlushRequest);

    /// Invalidates `request` on every CPU and waits for completion (INVLPGB +
    /// TLBSYNC); `false` when the CPU has no broadcast invalidation.
    fn flush_broadcast(&self, request: FlushRequest) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn support_comes_from_cpuid_ebx_bit_3() {
        assert_eq!(InvlpgbSupport::from_cpuid(0, 0xFFFF), None);
        assert_eq!(
            InvlpgbSupport::from_cpuid(0b1000, 0x1_0007),
            Some(InvlpgbSupport { max_extra: 7 })
        );
    }

    #[test]
    fn operands_follow_the_apm_layout() {
        let s = InvlpgbSupport { max_extra: 7 };
        // Everything: no VA, ASID valid (ASID 0 = this guest), global included.
        assert_eq!(
            s.operands(FlushRequest::All).collect::<Vec<_>>(),
            [InvlpgbOperands {
                rax: 0b1100,
                ecx: 0,
                edx: 0
            }]
        );
        // One page: VA | VA-valid | ASID-valid | global, no extra pages; the offset
        // inside the page is dropped.
        assert_eq!(
            s.operands(FlushRequest::Pages {
                start: 0x7F_1234_5678,
                count: 1
            })
            .collect::<Vec<_>>(),
            [InvlpgbOperands {
                rax: 0x7F_1234_5000 | 0b1101,
                ecx: 0,
                edx: 0
            }]
        );
        // 20 pages with at most 8 per instruction: 8 + 8 + 4.
        let ops: Vec<_> = s
            .operands(FlushRequest::Pages {
                start: 0x40_0000,
                count: 20,
            })
            .collect();
        assert_eq!(
            ops.iter().map(|o| (o.rax, o.ecx)).collect::<Vec<_>>(),
            [
                (0x40_0000 | 0b1101, 7),
                (0x40_8000 | 0b1101, 7),
                (0x41_0000 | 0b1101, 3)
            ]
        );
        // Nothing to do for zero pages; a CPU reporting 0 extra pages gets one per page.
        assert_eq!(
            s.operands(FlushRequest::Pages {
                start: 0x1000,
                count: 0
            })
            .count(),
            0
        );
        assert_eq!(
            InvlpgbSupport { max_extra: 0 }
                .operands(FlushRequest::Pages {
                    start: 0x1000,
                    count: 3
                })
                .map(|o| o.ecx)
                .collect::<Vec<_>>(),
            [0, 0, 0]
        );
        assert_eq!(INVLPGB_STRIDE_2M, 0x8000_0000);
        assert_eq!(INVLPGB_PCID | INVLPGB_FINAL_ONLY, 0b1_0010);
    }
}
