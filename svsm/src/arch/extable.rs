//! The exception table: the few instructions allowed to fault, and where each resumes.
//!
//! Guest memory can stop being usable under the SVSM at any moment: the guest rescinds
//! a page's validation through the SVSM's own PVALIDATE call, the host reassigns it
//! (RMPUPDATE) or makes it shared. The SVSM's access then faults instead of completing.
//! Every access to guest memory therefore goes through the copy routines of
//! [`super::guest_copy`], whose faulting instructions are listed here with a fixup
//! address. The kernel's interrupt dispatcher calls [`fixup`] first: for a fault this
//! table covers, it resumes at the fixup with the fault's [`MemoryError`] in RAX, and the
//! copy returns that error; any other fault stays fatal.
//!
//! Which faults are recoverable (AMD APM vol. 2 §15.36.10 "RMP and VMPL Access Checks",
//! Table 15-39, for an SNP-active guest's data access through a C-bit mapping):
//! - a page that is not validated raises #VC with error code PAGE_NOT_VALIDATED
//!   (0x404), and CR2 holds the faulting address. Linux's `uapi/asm/svm.h` stops at
//!   `SVM_EXIT_VMGEXIT` (0x403) and its #VC handler has no case for 0x404: a Linux guest
//!   never touches an unvalidated page, an SVSM must expect to;
//! - the other RMP checks (page not assigned to the guest, wrong size, VMPL permission)
//!   exit to the hypervisor with #NPF; KVM then converts the page, and the retried access
//!   meets the validation check above. A hypervisor may also reflect an NPF as #VC with
//!   exit code NPF (0x400), as SEV-ES does for MMIO;
//! - a #PF: the page is not mapped in the SVSM's own tables (the self-tests' case, and an
//!   injected #PF), or its error code has bit 31 (RMP) set, which the APM defines for RMP
//!   violations.
#![allow(
    unsafe_code,
    reason = "reads the linker-placed table of fixup addresses"
)]

use crate::platform::MemoryError;

/// `#PF`.
pub const VECTOR_PF: u8 = 14;
/// `#VC`.
pub const VECTOR_VC: u8 = 29;
/// `SVM_EXIT_NPF`: a nested page fault, reflected to the guest as a #VC.
pub const EXIT_NPF: u64 = 0x400;
/// `PAGE_NOT_VALIDATED`: the #VC error code of a failed validation check (APM vol. 2
/// §15.36.10).
pub const EXIT_PAGE_NOT_VALIDATED: u64 = 0x404;
/// #PF error code bit 31: the fault was an RMP violation (APM vol. 2 §15.36.10; Linux
/// `X86_PF_RMP`).
pub const PF_ERROR_RMP: u64 = 1 << 31;

/// One table entry: an instruction that may fault on guest memory, and its fixup.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtableEntry {
    /// Address of the instruction.
    pub insn: u64,
    /// Where execution resumes if it faults.
    pub fixup: u64,
}

/// The fixup address for a fault at `rip`, if `rip` is a listed instruction. Only an
/// exact match counts: the table lists instruction starts, which is where RIP points
/// for a fault.
pub fn lookup(table: impl IntoIterator<Item = ExtableEntry>, rip: u64) -> Option<u64> {
    table.into_iter().find(|e| e.insn == rip).map(|e| e.fixup)
}

/// The memory error a fault with `vector` and `error_code` means for a guarded access,
/// or `None` if the fault is not one an access to guest memory can recover from.
pub fn classify(vector: u8, error_code: u64) -> Option<MemoryError> {
    match (vector, error_code) {
        (VECTOR_VC, EXIT_PAGE_NOT_VALIDATED) => Some(MemoryError::NotValidated),
        (VECTOR_VC, EXIT_NPF) => Some(MemoryError::NotPrivate),
        (VECTOR_PF, code) if code & PF_ERROR_RMP != 0 => Some(MemoryError::NotPrivate),
        (VECTOR_PF, _) => Some(MemoryError::NotMemory),
        _ => None,
    }
}

/// The value a copy routine returns in RAX: 0 for success, otherwise the error.
pub const fn encode(result: Result<(), MemoryError>) -> u64 {
    match result {
        Ok(()) => 0,
        Err(MemoryError::NotPrivate) => 1,
        Err(MemoryError::NotValidated) => 2,
        Err(MemoryError::ReadOnly) => 3,
        Err(MemoryError::NotMemory) => 4,
        Err(MemoryError::OutOfRange) => 5,
    }
}

/// The result a copy routine's RAX stands for. Unknown values (none are produced) read
/// as [`MemoryError::NotMemory`], never as success.
pub const fn decode(rax: u64) -> Result<(), MemoryError> {
    match rax {
        0 => Ok(()),
        1 => Err(MemoryError::NotPrivate),
        2 => Err(MemoryError::NotValidated),
        3 => Err(MemoryError::ReadOnly),
        5 => Err(MemoryError::OutOfRange),
        _ => Err(MemoryError::NotMemory),
    }
}

/// What the dispatcher does with a fault: resume at `rip` with `rax`, or leave it alone.
pub fn resolve(
    table: impl IntoIterator<Item = ExtableEntry>,
    vector: u8,
    error_code: u64,
    rip: u64,
) -> Option<(u64, u64)> {
    let fixup = lookup(table, rip)?;
    let error = classify(vector, error_code)?;
    Some((fixup, encode(Err(error))))
}

/// One entry as the assembly emits it: each field is the distance from the field
/// itself to its target (as Linux's `__ex_table` does), so the table needs no
/// relocation and lives in read-only data on the bare-metal target and in a
/// position-independent host binary alike.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RelativeEntry {
    insn: i32,
    fixup: i32,
}

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    static svsm_extable_start: RelativeEntry;
    static svsm_extable_end: RelativeEntry;
}

/// The table the copy routines in [`super::guest_copy`] place in the image.
#[cfg(target_arch = "x86_64")]
pub fn table() -> impl Iterator<Item = ExtableEntry> + Clone {
    let start = core::ptr::addr_of!(svsm_extable_start);
    let end = core::ptr::addr_of!(svsm_extable_end);
    let len = (end as usize - start as usize) / core::mem::size_of::<RelativeEntry>();
    // SAFETY: the two symbols bracket one contiguous, 4-byte aligned array of
    // (instruction, fixup) offset pairs that the `guest_copy` assembly emits into
    // read-only data; nothing writes it.
    let entries = unsafe { core::slice::from_raw_parts(start, len) };
    entries.iter().map(|e| {
        let at = e as *const RelativeEntry as u64;
        ExtableEntry {
            insn: at.wrapping_add_signed(e.insn.into()),
            fixup: (at + 4).wrapping_add_signed(e.fixup.into()),
        }
    })
}

/// The kernel dispatcher's hook: if the fault at `frame.rip` is a guarded access and a
/// recoverable kind, resume at its fixup with the error in RAX. Returns whether it did.
#[cfg(target_os = "none")]
pub fn fixup(frame: &mut super::interrupts::InterruptFrame) -> bool {
    let Ok(vector) = u8::try_from(frame.vector) else {
        return false;
    };
    match resolve(table(), vector, frame.error_code, frame.rip) {
        Some((rip, rax)) => {
            // No logging here: the guest can cause these at will, and the console's
            // lock may be held by the code the fault interrupted.
            frame.rip = rip;
            frame.rax = rax;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: [ExtableEntry; 3] = [
        ExtableEntry {
            insn: 0x1000,
            fixup: 0x1010,
        },
        ExtableEntry {
            insn: 0x2000,
            fixup: 0x2008,
        },
        ExtableEntry {
            insn: 0x3000,
            fixup: 0x3004,
        },
    ];

    #[test]
    fn only_listed_instruction_starts_have_a_fixup() {
        assert_eq!(lookup(TABLE, 0x2000), Some(0x2008));
        assert_eq!(lookup(TABLE, 0x3000), Some(0x3004));
        for rip in [0, 0x0FFF, 0x1001, 0x1010, 0x1FFF, 0x2001, 0x2008, u64::MAX] {
            assert_eq!(lookup(TABLE, rip), None, "{rip:#x}");
        }
        assert_eq!(lookup([], 0x1000), None);
    }

    #[test]
    fn recoverable_faults_map_to_memory_errors() {
        // APM vol. 2 §15.36.10: a failed validation check is #VC 0x404.
        assert_eq!(classify(29, 0x404), Some(MemoryError::NotValidated));
        assert_eq!(classify(29, 0x400), Some(MemoryError::NotPrivate));
        // #PF: not present (0), a write to a not-present page (2), an RMP violation.
        assert_eq!(classify(14, 0), Some(MemoryError::NotMemory));
        assert_eq!(classify(14, 0b10), Some(MemoryError::NotMemory));
        assert_eq!(classify(14, 1 << 31 | 0b11), Some(MemoryError::NotPrivate));
        // Every other #VC (CPUID, MSR, I/O, VMGEXIT, made-up codes) and every other
        // vector stays with the rest of the dispatcher.
        for code in [0x72, 0x7B, 0x7C, 0x401, 0x403, 0x405, u64::MAX] {
            assert_eq!(classify(29, code), None, "#VC {code:#x}");
        }
        for vector in (0..=255u8).filter(|v| ![14, 29].contains(v)) {
            assert_eq!(classify(vector, 0x404), None, "vector {vector}");
        }
    }

    #[test]
    fn resolve_needs_both_a_listed_rip_and_a_recoverable_fault() {
        assert_eq!(
            resolve(TABLE, 29, 0x404, 0x1000),
            Some((0x1010, encode(Err(MemoryError::NotValidated))))
        );
        assert_eq!(resolve(TABLE, 14, 2, 0x1000).map(|r| r.0), Some(0x1010));
        // A #GP at a listed instruction is no guest-memory fault: fatal as before.
        assert_eq!(resolve(TABLE, 13, 0, 0x1000), None);
        // A #VC 0x404 anywhere else is the SVSM's own memory: fatal as before.
        assert_eq!(resolve(TABLE, 29, 0x404, 0x1004), None);
    }

    #[test]
    fn results_round_trip_through_rax() {
        let all = [
            Ok(()),
            Err(MemoryError::NotPrivate),
            Err(MemoryError::NotValidated),
            Err(MemoryError::ReadOnly),
            Err(MemoryError::NotMemory),
            Err(MemoryError::OutOfRange),
        ];
        for result in all {
            assert_eq!(decode(encode(result)), result);
        }
        assert_eq!(encode(Ok(())), 0);
        // Garbage is an error, never success.
        assert_eq!(decode(99), Err(MemoryError::NotMemory));
        assert_eq!(decode(u64::MAX), Err(MemoryError::NotMemory));
    }

    #[test]
    fn the_image_lists_every_guarded_instruction_once() {
        let table: std::vec::Vec<ExtableEntry> = table().collect();
        assert_eq!(table.len(), super::super::guest_copy::GUARDED_INSTRUCTIONS);
        for (i, e) in table.iter().enumerate() {
            assert!(e.fixup > e.insn, "entry {i}: fixup before the instruction");
            assert!(
                e.fixup - e.insn < 64,
                "entry {i}: fixup outside its routine"
            );
            assert_eq!(
                table.iter().filter(|o| o.insn == e.insn).count(),
                1,
                "entry {i} listed twice"
            );
        }
    }
}
