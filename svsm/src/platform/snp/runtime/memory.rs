//! SVSM memory the launch did not validate.

use svsm_protocol::ghcb::PageState;

use super::run::boot_params;
use super::{fail, get};
use crate::arch::snp::pvalidate::pvalidate;
use crate::platform::{PageSize, PvalidateError, PAGE_SIZE, PAGE_SIZE_2M};
use crate::snp::SnpError;

/// Makes `[start, end)` of SVSM memory usable: private first when the host says
/// memory outside the IGVM file starts shared (IGVM environment flag), then
/// PVALIDATE, 2 MiB where aligned; pages the launch already validated are fine
/// (CF = 1).
pub fn validate_svsm_memory(start: u64, end: u64) {
    let Some(rt) = get() else { return };
    if boot_params(&rt.hv, rt.param_block).memory_is_shared() {
        for page in (start..end).step_by(PAGE_SIZE as usize) {
            if let Err(e) = rt
                .hv
                .page_state_change(page / PAGE_SIZE, PageState::Private)
            {
                fail(&rt.hv, &e)
            }
        }
    }
    let mut addr = start;
    while addr < end {
        let size = if addr % PAGE_SIZE_2M == 0 && end - addr >= PAGE_SIZE_2M {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        // SAFETY: SVSM memory the parameter block hands the kernel; nothing uses it
        // yet (the heap is set up afterwards).
        match unsafe { pvalidate(addr, size, true) } {
            Ok(_) => addr += size.bytes(),
            Err(PvalidateError::FailSizeMismatch) if size == PageSize::Size2M => {
                // 4 KiB RMP entries: validate page by page.
                for page in (addr..addr + PAGE_SIZE_2M).step_by(PAGE_SIZE as usize) {
                    // SAFETY: as above.
                    if let Err(e) = unsafe { pvalidate(page, PageSize::Size4K, true) } {
                        fail(&rt.hv, &SnpError::Pvalidate(page, e))
                    }
                }
                addr += PAGE_SIZE_2M;
            }
            Err(e) => fail(&rt.hv, &SnpError::Pvalidate(addr, e)),
        }
    }
    log::info!("snp: SVSM memory {start:#x}..{end:#x} validated");
}
