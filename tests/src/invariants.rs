//! The isolation invariants every suite checks after every call, and snapshots for
//! "a rejected request changed nothing".
//!
//! The invariants read the emulated machine's RMP and the SVSM's registry directly:
//! 1. SVSM memory is assigned, validated, and no VMPL but 0 has any permission on it;
//! 2. no page with the RMP VMSA bit grants any permission to a VMPL other than 0, and
//!    every such page is a VMPL0 VMSA of the launch or a VMSA in the SVSM's registry;
//!    every registered VMSA has the bit;
//! 3. no page that is not validated keeps a permission for a VMPL other than 0 (the
//!    SVSM revokes before it rescinds);
//! 4. no calling area is a VMSA, and no two vCPUs share a calling area.

use std::fmt;

use svsm::address::GuestState;
use svsm::platform::{RmpPermissions, PAGE_SIZE};
use svsm_emulated::{EmulatedSystem, MachineSnapshot};

/// A broken invariant, with the page and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The page.
    pub page: u64,
    /// Which rule.
    pub rule: &'static str,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {:#x}: {}", self.page, self.rule)
    }
}

/// Checks the isolation invariants.
pub fn check(system: &EmulatedSystem) -> Result<(), Violation> {
    let rmp = system.machine().rmp();
    let state = system.svsm().state_snapshot();
    let info = system.info();
    let (svsm_start, svsm_end) = info.config.svsm_range;
    let lower_perms = |perms: &[RmpPermissions; 4]| perms.iter().skip(1).any(|p| !p.is_empty());
    for (index, entry) in rmp.entries().iter().enumerate() {
        let page = index as u64 * PAGE_SIZE;
        let violation = |rule| Err(Violation { page, rule });
        if (svsm_start..svsm_end).contains(&page) {
            if !entry.assigned || !entry.validated {
                return violation("SVSM page not assigned and validated");
            }
            if lower_perms(&entry.perms) {
                return violation("a lower VMPL has access to an SVSM page");
            }
        }
        if entry.vmsa {
            if lower_perms(&entry.perms) {
                return violation("a lower VMPL has access to a VMSA page");
            }
            let vmpl0 = info.vmpl0_vmsas.iter().any(|&(_, v)| v == page);
            if !vmpl0 && state.vmsa(page).is_none() {
                return violation("a page has the VMSA bit but is no known VMSA");
            }
        }
        if !entry.validated && lower_perms(&entry.perms) {
            return violation("a page that is not validated keeps lower-VMPL access");
        }
    }
    for v in state.vmsas() {
        if !rmp.entry(v.addr).is_some_and(|e| e.vmsa) {
            return Err(Violation {
                page: v.addr,
                rule: "a registered VMSA lacks the VMSA bit",
            });
        }
    }
    let cas: Vec<u64> = state
        .vcpus()
        .iter()
        .filter_map(|v| v.calling_area)
        .collect();
    for (i, ca) in cas.iter().enumerate() {
        if state.vmsa(*ca).is_some() {
            return Err(Violation {
                page: *ca,
                rule: "a calling area is a VMSA",
            });
        }
        if cas.iter().skip(i + 1).any(|other| other == ca) {
            return Err(Violation {
                page: *ca,
                rule: "two vCPUs share a calling area",
            });
        }
    }
    Ok(())
}

/// Everything a guest call could change: the machine and the SVSM's registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// RMP state, memory, vCPUs.
    pub machine: MachineSnapshot,
    /// The SVSM's registry.
    pub svsm: GuestState,
}

/// Takes a snapshot.
pub fn snapshot(system: &EmulatedSystem) -> Snapshot {
    Snapshot {
        machine: system.machine().snapshot(),
        svsm: system.svsm().state_snapshot(),
    }
}

/// What differs between two snapshots, ignoring the bytes of the pages in `volatile`
/// (the caller's VMSA, whose registers the call writes): `None` if nothing.
pub fn difference(before: &Snapshot, after: &Snapshot, volatile: &[u64]) -> Option<String> {
    if before.svsm != after.svsm {
        return Some(format!(
            "SVSM registry changed: {:?} -> {:?}",
            before.svsm, after.svsm
        ));
    }
    if before.machine.vcpus != after.machine.vcpus {
        return Some("vCPU state changed".into());
    }
    for (i, (a, b)) in before
        .machine
        .pages
        .iter()
        .zip(&after.machine.pages)
        .enumerate()
    {
        if a != b {
            return Some(format!(
                "RMP of page {:#x} changed: {a:?} -> {b:?}",
                i as u64 * PAGE_SIZE
            ));
        }
    }
    let page_size = PAGE_SIZE as usize;
    for (i, (a, b)) in before
        .machine
        .memory
        .chunks(page_size)
        .zip(after.machine.memory.chunks(page_size))
        .enumerate()
    {
        let page = i as u64 * PAGE_SIZE;
        if a != b && !volatile.contains(&page) {
            return Some(format!("memory of page {page:#x} changed"));
        }
    }
    None
}
