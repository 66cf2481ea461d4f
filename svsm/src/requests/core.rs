//! The core protocol (0), version 1: calling areas, PVALIDATE, vCPUs, protocol queries.
//!
//! Every handler decodes its registers with `svsm_protocol::core`, checks every guest
//! address in [`crate::address`], copies guest buffers into SVSM memory before parsing
//! them, and changes state only after every check passed. The exceptions are spelled
//! out where they happen: PVALIDATE records its progress in the list's `next` field
//! (entries before a failing one stay done, as the spec requires), and CREATE_VCPU must
//! revoke the guest's access to the VMSA page before it can read the page without a
//! race; on a later refusal it gives the guest VMPL its standard RWX access back.
//!
//! Security rules from the SVSM spec (58019) and COCONUT-SVSM's experience:
//! - rescind: the guest loses its RMP permissions before the page stops being
//!   validated;
//! - validate: a page that changed to validated is zeroed before the guest VMPL gets
//!   access, but only if it is RAM (guests also validate MMIO and read-only ranges,
//!   which the SVSM must never write);
//! - a VMSA page never keeps any permission for a VMPL other than 0.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
#![forbid(unsafe_code)]

use svsm_protocol::call::CoreCall;
use svsm_protocol::core::{
    ConfigureVtomRequest, CreateVcpuRequest, DeleteVcpuRequest, PvalidateEntry, PvalidateList,
    PvalidateRequest, QueryProtocolRequest, RemapCaRequest,
};

use svsm_protocol::vmsa::Vmsa;

use super::{vmsa, CallContext, VersionRange};
use crate::address::{Access, AddressError, CheckedRange, GuestPhysAddr, GuestState};
use crate::error::{Reason, SvsmError};
use crate::platform::{
    PageSize, Platform, RmpPermissions, RmpadjustError, Validation, Vmpl, PAGE_SIZE,
};

/// The core protocol versions this SVSM implements.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };

/// Handles one core protocol call.
pub fn handle<P: Platform>(call: &mut CallContext<'_, P>) -> Result<(), SvsmError> {
    match CoreCall::from_id(call.call_id()) {
        Some(CoreCall::RemapCa) => remap_ca(call),
        Some(CoreCall::Pvalidate) => pvalidate(call),
        Some(CoreCall::CreateVcpu) => create_vcpu(call),
        Some(CoreCall::DeleteVcpu) => delete_vcpu(call),
        // Memory deposit/withdraw is optional (58019); this SVSM does not take memory
        // from the guest.
        Some(CoreCall::DepositMem) | Some(CoreCall::WithdrawMem) => Err(SvsmError::UnsupportedCall),
        Some(CoreCall::QueryProtocol) => query_protocol(call),
        Some(CoreCall::ConfigureVtom) => configure_vtom(call),
        None => Err(SvsmError::UnsupportedCall),
    }
}

/// SVSM_CORE_REMAP_CA: RCX = the new calling area of the calling vCPU.
fn remap_ca<P: Platform>(call: &mut CallContext<'_, P>) -> Result<(), SvsmError> {
    let request = RemapCaRequest::from_regs(call.regs().rcx)?;
    let svsm = call.svsm();
    let mut state = svsm.state_try_write()?;
    let ca = state.check_calling_area(GuestPhysAddr::new(request.ca_gpa), call.apic_id())?;
    probe_calling_area(svsm.platform(), &ca)?;
    state.set_calling_area(call.apic_id(), &ca);
    Ok(())
}

/// A calling area must be memory the SVSM can use (private and validated); a page it
/// cannot read would silently stop every later call of the vCPU.
fn probe_calling_area<P: Platform>(platform: &P, ca: &CheckedRange) -> Result<(), SvsmError> {
    let mut pending = [0u8];
    platform.read_guest(ca, 0, &mut pending)?;
    Ok(())
}

/// SVSM_CORE_QUERY_PROTOCOL: RCX = (protocol << 32) | version.
fn query_protocol<P: Platform>(call: &mut CallContext<'_, P>) -> Result<(), SvsmError> {
    let request = QueryProtocolRequest::from_regs(call.regs().rcx);
    let answer = call
        .svsm()
        .query_protocol(request.protocol, request.version);
    call.regs_mut().rcx = answer;
    Ok(())
}

/// SVSM_CORE_CONFIGURE_VTOM: this SVSM answers the query with "not supported" (RCX = 0)
/// and refuses a well-formed configure request (malformed ones are
/// `INVALID_PARAMETER`).
fn configure_vtom<P: Platform>(call: &mut CallContext<'_, P>) -> Result<(), SvsmError> {
    let regs = *call.regs();
    match ConfigureVtomRequest::from_regs(regs.rcx, regs.rdx, regs.r8, regs.r9)? {
        ConfigureVtomRequest::Query => {
            call.regs_mut().rcx = ConfigureVtomRequest::UNSUPPORTED_RCX;
            Ok(())
        }
        ConfigureVtomRequest::Configure { .. } => {
            Err(SvsmError::InvalidRequest(Reason::VtomUnsupported))
        }
    }
}

/// SVSM_CORE_PVALIDATE: RCX = GPA of a list of pages to validate or rescind.
///
/// The list (from its GPA to the end of its page) is copied into SVSM memory once and
/// parsed there; processing starts at `next`, stops at the first failure, and the new
/// `next` is written back so the guest can resume or split the failing entry.
fn pvalidate<P: Platform>(call: &mut CallContext<'_, P>) -> Result<(), SvsmError> {
    let request = PvalidateRequest::from_regs(call.regs().rcx)?;
    let svsm = call.svsm();
    let state = svsm.state_read();
    let len = request.bytes_to_page_end();
    let list_range = state.check(
        GuestPhysAddr::new(request.list_gpa),
        len as u64,
        Access::Data,
    )?;
    let mut copy = [0u8; PAGE_SIZE as usize];
    let bytes = copy
        .get_mut(..len)
        .ok_or(SvsmError::Address(AddressError::BadRange))?;
    svsm.platform().read_guest(&list_range, 0, bytes)?;
    let list = PvalidateList::parse(bytes)?;

    let mut next = list.next();
    let mut result = Ok(());
    for (index, entry) in list.pending() {
        result = pvalidate_entry(svsm.platform(), &state, svsm.guest_vmpl(), entry);
        if result.is_err() {
            break;
        }
        next = index.saturating_add(1);
    }
    if next != list.next() {
        // The `next` field is at offset 2 of the header.
        svsm.platform()
            .write_guest(&list_range, 2, &next.to_le_bytes())?;
    }
    result
}

/// One PVALIDATE entry.
fn pvalidate_entry<P: Platform>(
    platform: &P,
    state: &GuestState,
    guest_vmpl: Vmpl,
    entry: PvalidateEntry,
) -> Result<(), SvsmError> {
    let size = PageSize::from(entry.page_size());
    let range = state.check(
        GuestPhysAddr::new(entry.gpa()),
        size.bytes(),
        Access::Validate,
    )?;
    let addr = range.start();
    if entry.validate() {
        match platform.pvalidate(addr, size, true)? {
            Validation::Changed => {
                // The page may hold whatever its physical page held before (another
                // GPA's data, even the SVSM's): zero it before the guest can see it.
                if range.is_writable_ram() {
                    platform.zero_guest(&range)?;
                }
                platform.rmpadjust(addr, size, guest_vmpl, RmpPermissions::RWX, false)?;
                Ok(())
            }
            Validation::Unchanged => unchanged(entry),
        }
    } else {
        // Revoke every lower VMPL's access first, so no VMPL can touch the page while
        // or after it stops being validated.
        for vmpl in Vmpl::LOWER {
            match platform.rmpadjust(addr, size, vmpl, RmpPermissions::empty(), false) {
                Ok(()) => {}
                // Not validated (or not the guest's): there is nothing to revoke, and
                // PVALIDATE below reports "not changed" (or the fault).
                Err(RmpadjustError::Fault(_)) => break,
                // FAIL_SIZEMISMATCH maps to PVALIDATE_FAIL_SIZEMISMATCH, so the
                // guest splits the entry as for PVALIDATE itself.
                Err(e) => return Err(e.into()),
            }
        }
        match platform.pvalidate(addr, size, false)? {
            Validation::Changed => Ok(()),
            Validation::Unchanged => unchanged(entry),
        }
    }
}

/// The "validated bit did not change" outcome (CF = 1).
fn unchanged(entry: PvalidateEntry) -> Result<(), SvsmError> {
    if entry.ignore_cf() {
        Ok(())
    } else {
        Err(SvsmError::PvalidateNotChanged)
    }
}

/// SVSM_CORE_CREATE_VCPU: RCX = VMSA GPA, RDX = calling area GPA, R8[31:0] = APIC ID.
fn create_vcpu<P: Platform>(call: &mut CallContext<'_, P>) -> Result<(), SvsmError> {
    let regs = *call.regs();
    let request = CreateVcpuRequest::from_regs(regs.rcx, regs.rdx, regs.r8)?;
    let svsm = call.svsm();
    let platform = svsm.platform();
    let guest_vmpl = svsm.guest_vmpl();
    let mut state = svsm.state_try_write()?;

    let vmsa_range = state.check_new_vmsa(GuestPhysAddr::new(request.vmsa_gpa))?;
    let ca_range = state.check_calling_area(GuestPhysAddr::new(request.ca_gpa), request.apic_id)?;
    probe_calling_area(platform, &ca_range)?;
    if state.vcpu(request.apic_id).is_none() {
        return Err(SvsmError::InvalidParameter(Reason::UnknownApicId));
    }
    let caller_vmsa = state
        .current_vmsa(call.apic_id())
        .ok_or(SvsmError::Address(AddressError::NotGuestVmsa))?;
    let caller_features = svsm.read_vmsa_u64(&caller_vmsa, vmsa::SEV_FEATURES)?;

    // From here the page is private to VMPL0: the guest cannot change what is checked.
    revoke_guest_access(platform, &vmsa_range)?;
    let checked = check_new_vmsa_contents(platform, &vmsa_range, guest_vmpl, caller_features)
        .and_then(|()| {
            platform
                .rmpadjust(
                    vmsa_range.start(),
                    PageSize::Size4K,
                    vmpl1(),
                    RmpPermissions::empty(),
                    true,
                )
                .map_err(SvsmError::from)
        });
    if let Err(e) = checked {
        restore_guest_access(platform, &vmsa_range, guest_vmpl);
        return Err(e);
    }
    state.register_guest_vmsa(request.apic_id, vmsa_range, &ca_range);
    Ok(())
}

/// VMPL1, the target RMPADJUST needs to change only the VMSA bit (any VMPL below 0
/// works; its permissions are already none).
fn vmpl1() -> Vmpl {
    Vmpl::LOWER[0]
}

/// Removes every lower VMPL's permissions on a 4 KiB page. A page that is not
/// validated (or not the guest's) fails at the first VMPL, before anything changed.
fn revoke_guest_access<P: Platform>(platform: &P, range: &CheckedRange) -> Result<(), SvsmError> {
    for vmpl in Vmpl::LOWER {
        platform.rmpadjust(
            range.start(),
            PageSize::Size4K,
            vmpl,
            RmpPermissions::empty(),
            false,
        )?;
    }
    Ok(())
}

/// Gives the guest VMPL back the access a validated page normally has.
fn restore_guest_access<P: Platform>(platform: &P, range: &CheckedRange, guest_vmpl: Vmpl) {
    let _ = platform
        .rmpadjust(
            range.start(),
            PageSize::Size4K,
            guest_vmpl,
            RmpPermissions::RWX,
            false,
        )
        .inspect_err(|e| log::warn!("cannot restore guest access to {:?}: {e:?}", range.start()));
}

/// The VMSA checks of 58019: VMPL field = guest VMPL, EFER.SVME set, SEV features equal
/// to the caller's. Parses a copy of the page.
fn check_new_vmsa_contents<P: Platform>(
    platform: &P,
    range: &CheckedRange,
    guest_vmpl: Vmpl,
    caller_features: u64,
) -> Result<(), SvsmError> {
    let mut page = [0u8; PAGE_SIZE as usize];
    platform.read_guest(range, 0, &mut page)?;
    let new = Vmsa::parse(&page)?;
    if new.vmpl != guest_vmpl.level() {
        return Err(SvsmError::InvalidParameter(Reason::VmsaVmpl));
    }
    if !new.is_runnable() {
        return Err(SvsmError::InvalidParameter(Reason::VmsaSvme));
    }
    if new.sev_features != caller_features {
        return Err(SvsmError::InvalidParameter(Reason::VmsaSevFeatures));
    }
    Ok(())
}

/// SVSM_CORE_DELETE_VCPU: RCX = GPA of a VMSA the guest created.
fn delete_vcpu<P: Platform>(call: &mut CallContext<'_, P>) -> Result<(), SvsmError> {
    let request = DeleteVcpuRequest::from_regs(call.regs().rcx)?;
    let svsm = call.svsm();
    let platform = svsm.platform();
    let mut state = svsm.state_try_write()?;
    let entry = state
        .vmsa(request.vmsa_gpa)
        .copied()
        .filter(|v| v.origin == crate::address::VmsaOrigin::Guest)
        .ok_or(SvsmError::Address(AddressError::NotGuestVmsa))?;
    let page = state
        .vmsa_page(entry.addr)
        .ok_or(SvsmError::Address(AddressError::NotGuestVmsa))?;
    if state.current_vmsa(call.apic_id()).as_ref() == Some(&page) {
        return Err(SvsmError::InvalidRequest(Reason::CallerVmsa));
    }
    // Clear SVME so the hypervisor cannot enter the VMSA again, then wait until it is
    // not running: BUSY lets the guest retry (the cleared SVME is the recorded
    // progress).
    let efer = svsm.read_vmsa_u64(&page, vmsa::EFER)?;
    svsm.write_vmsa_u64(&page, vmsa::EFER, efer & !vmsa::EFER_SVME)?;
    if platform.vmsa_running(&page) {
        return Err(SvsmError::Busy);
    }
    let addr = page.addr();
    platform.rmpadjust(
        addr,
        PageSize::Size4K,
        vmpl1(),
        RmpPermissions::empty(),
        false,
    )?;
    state.unregister_guest_vmsa(page)?;
    platform.rmpadjust(
        addr,
        PageSize::Size4K,
        svsm.guest_vmpl(),
        RmpPermissions::RWX,
        false,
    )?;
    Ok(())
}
