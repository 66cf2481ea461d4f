//! The guest launch and the request loop.

use alloc::vec::Vec;

use svsm_protocol::ghcb::PageState;
use svsm_protocol::igvm_params::{IgvmParamBlock, MEMORY_MAP_TYPE_MEMORY, PARAM_FLAG_FIRMWARE};
use svsm_protocol::vmsa::SevFeatures;

use super::{fail, get, read_phys};
use crate::address::{GuestRegion, MemoryKind, MemoryLayout};
use crate::arch::snp::early;
use crate::arch::snp::ghcb::ArchGhcb;
use crate::arch::snp::msr::read_sev_status;
use crate::arch::snp::pvalidate::pvalidate;
use crate::platform::snp::SnpPlatform;
use crate::platform::{PageSize, Vmpl, PAGE_SIZE};
use crate::requests::{Services, Svsm, SvsmConfig};
use crate::snp::guest_vmsa::{guest_sev_features, RESET_VECTOR};
use crate::snp::hypervisor::HvClient;
use crate::snp::launch::{launch_guest, FirmwareMemoryMap, GuestLaunch};
use crate::snp::secrets::SvsmSecrets;
use crate::snp::SnpError;

/// The guest's memory regions: the host's RAM without the SVSM range, and the
/// firmware image.
fn guest_regions(
    block: &IgvmParamBlock,
    params: &crate::boot_params::BootParams,
) -> Result<Vec<GuestRegion>, crate::boot_params::BootParamsError> {
    // As many entries as the firmware's page-sized map holds: a longer host map is
    // refused by the launch, never cut short here (a cut map would leave RAM the
    // firmware is told about unvalidated and ungranted).
    let mut map = [svsm_protocol::igvm_params::MemoryMapEntry::default();
        PAGE_SIZE as usize / core::mem::size_of::<svsm_protocol::igvm_params::MemoryMapEntry>()];
    let n = params.guest_memory_map(&mut map)?;
    let mut regions: Vec<GuestRegion> = map
        .iter()
        .take(n)
        .filter(|e| e.entry_type == MEMORY_MAP_TYPE_MEMORY)
        .map(|e| GuestRegion {
            start: e.starting_gpa_page_number * PAGE_SIZE,
            end: (e.starting_gpa_page_number + e.number_of_pages) * PAGE_SIZE,
            kind: MemoryKind::Ram,
        })
        .collect();
    let image = block.firmware.image;
    if block.flags & PARAM_FLAG_FIRMWARE != 0
        && image.size != 0
        && !regions
            .iter()
            .any(|r| r.start < image.base + image.size && image.base < r.end)
    {
        regions.push(GuestRegion {
            start: image.base,
            end: image.base + image.size,
            kind: MemoryKind::Ram,
        });
    }
    Ok(regions)
}

/// The boot parameters, read again from the measured block and the host's areas.
pub(super) fn boot_params(
    hv: &HvClient<ArchGhcb>,
    block_gpa: u64,
) -> crate::boot_params::BootParams {
    let page = read_phys::<4096>(block_gpa);
    let bad = SnpError::BootParams;
    let Ok(block) = crate::boot_params::parse_block(&page) else {
        fail(hv, &bad)
    };
    let area = |r: svsm_protocol::igvm_params::MemoryRange| -> &[u8] {
        if r.size == 0 {
            return &[];
        }
        // SAFETY: `parse_block` checked that every area lies inside the SVSM range
        // below 4 GiB, identity mapped with the C-bit.
        unsafe { core::slice::from_raw_parts(r.base as usize as *const u8, r.size as usize) }
    };
    let param_page = svsm_protocol::igvm_params::MemoryRange {
        base: block.param_page_gpa,
        size: PAGE_SIZE,
    };
    match crate::boot_params::BootParams::new(
        block,
        area(param_page),
        area(block.memory_map),
        area(block.madt),
    ) {
        Ok(params) => params,
        Err(_) => fail(hv, &bad),
    }
}

/// Launches the guest and runs the request loop on the boot vCPU, serving the core,
/// attestation and vTPM protocols; never returns. Halts at once if [`early_init`] did
/// not run.
///
/// `start_vtpm` starts the vTPM once the PSP channel works and before any guest code
/// runs: it gets the PSP and the VMPCK0 messenger (for the state key, MSG_KEY_REQ), which
/// then serves the vTPM's provisioning and the attestation protocol, so one messenger
/// owns VMPCK0's sequence numbers.
pub fn run<E, F>(start_vtpm: F) -> !
where
    E: vtpm::Engine + Send + 'static,
    F: FnOnce(&dyn crate::psp::PspTransport, &mut crate::psp::GuestMessenger) -> vtpm::Service<E>,
{
    let Some(rt) = get() else {
        log::error!("snp: run without early_init");
        loop {
            x86_64::instructions::hlt();
        }
    };
    let hv = &rt.hv;
    let params = boot_params(hv, rt.param_block);
    let params = &params;
    let block = *params.block();
    let die = |e: SnpError| -> ! { fail(hv, &e) };
    let guest_vmpl = Vmpl::new(block.guest_vmpl as u8).unwrap_or(Vmpl::LOWER[1]);
    let mut psp_page = read_phys::<4096>(block.secrets_gpa);
    let parsed = SvsmSecrets::parse(&psp_page);
    // The stack copy holds all four VMPCKs: it leaves nothing behind once parsed.
    psp_page.fill(0);
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    let secrets = parsed.unwrap_or_else(|e| die(e));
    let cpuid = read_phys::<4096>(block.cpuid_gpa);
    let (svsm_start, svsm_end) = (block.svsm.base, block.svsm.base + block.svsm.size);
    let regions = guest_regions(&block, params).unwrap_or_else(|_| die(SnpError::BootParams));
    let layout = MemoryLayout::new(regions, svsm_start, svsm_end)
        .unwrap_or_else(|_| die(SnpError::BootParams));
    let bsp = params.apic_ids().first().copied().unwrap_or(0);
    // SAFETY: the kernel's page tables (kernel::paging, built before this runs) map the
    // guest's memory from the IGVM memory map, above 4 GiB too, the firmware and the
    // SVSM range privately at `phys + DIRECT_MAP_BASE`.
    let platform = unsafe { SnpPlatform::new(hv, crate::pagetable::DIRECT_MAP_BASE, guest_vmpl) };
    // The PSP message pages: rescinded (private address), then shared.
    let [request, response] = early::message_page_addresses();
    for (gpa, _) in [request, response] {
        // SAFETY: the entry's message pages, unused so far; only their shared
        // aliases are used from now on.
        if let Err(e) = unsafe { pvalidate(gpa, PageSize::Size4K, false) } {
            die(SnpError::Pvalidate(gpa, e))
        }
        if let Err(e) = hv.page_state_change(gpa / PAGE_SIZE, PageState::Shared) {
            die(e)
        }
    }
    platform.set_message_pages(crate::platform::snp::MessagePages {
        request: (request.1, request.0),
        response: (response.1, response.0),
    });
    // The vTPM, and attestation over the PSP channel with VMPCK0 (copied into the
    // messenger in SVSM memory; the guest's secrets copy has it zeroed). The vTPM's
    // endorsement evidence comes first, over the same messenger, before any guest code.
    let mut messenger = crate::psp::GuestMessenger::new(*secrets.vmpck0(), 0);
    let mut vtpm = start_vtpm(&crate::psp::PlatformPsp(&platform), &mut messenger);
    {
        let psp = crate::psp::PlatformPsp(&platform);
        let mut reports = crate::psp::evidence::PspReports::new(&mut messenger, &psp);
        if let Err(e) = crate::psp::evidence::provision_vtpm(&mut vtpm, Some(&mut reports)) {
            log::error!("snp: the vTPM's platform hierarchy cannot be withheld: {e}");
            die(SnpError::Kernel)
        }
    }
    let ek_public = vtpm::Vtpm::ek_public(&vtpm).to_vec();
    let services = Services::new()
        .with_attestation(crate::requests::attest::service(
            messenger,
            alloc::vec![alloc::boxed::Box::new(
                crate::requests::attest::StaticEvidence::vtpm(&ek_public)
            )],
        ))
        .with_vtpm(crate::requests::vtpm::service(vtpm));
    // 'static: every SVSM vCPU runs the request loop on it (see `vcpus`).
    let svsm: &'static Svsm<SnpPlatform> =
        alloc::boxed::Box::leak(alloc::boxed::Box::new(Svsm::new(
            platform,
            SvsmConfig {
                guest_vmpl,
                layout,
                apic_ids: params.apic_ids().to_vec(),
            },
            services,
        )));
    // The boot VMSA: the second page of an 8 KiB-aligned pair from the heap, so it is
    // never 2 MiB aligned (Linux `snp_alloc_vmsa_page`: an SNP erratum makes the CPU
    // signal an RMP violation when a large page collides with a VMSA's RMP entry).
    let vmsa_layout = core::alloc::Layout::from_size_align(8192, 8192)
        .unwrap_or_else(|_| die(SnpError::Memory(0, crate::platform::MemoryError::NotMemory)));
    // SAFETY: a non-zero-sized layout; the pages are leaked: they live as long as the VM.
    let pair = unsafe { alloc::alloc::alloc_zeroed(vmsa_layout) } as u64;
    if pair == 0 {
        die(SnpError::Memory(0, crate::platform::MemoryError::NotMemory));
    }
    let vmsa_page = pair + PAGE_SIZE;
    // SAFETY: reads SEV_STATUS in an SEV guest (the entry found the C-bit).
    let status = unsafe { read_sev_status() };
    let plan = GuestLaunch {
        firmware: block.firmware,
        guest_vmpl,
        bsp_apic_id: bsp,
        vmsa_page,
        svsm_base: svsm_start,
        svsm_size: block.svsm.size,
        guest_features: guest_sev_features(SevFeatures::from_sev_status(status), false),
        reset_address: RESET_VECTOR,
        // OVMF's IGVM memory-map parameter: the guest's map with the SVSM range reserved.
        firmware_memory_map: FirmwareMemoryMap::from_params(params).unwrap_or_else(|e| die(e)),
    };
    match launch_guest(svsm, hv, &plan, &secrets, &cpuid) {
        Ok(summary) => log::info!(
            "snp: guest launch ready: {} pages granted to VMPL{} ({} made private first)",
            summary.pages_granted,
            guest_vmpl.level(),
            summary.pages_made_private
        ),
        Err(e) => die(e),
    }
    // The guest's other vCPUs need their SVSM vCPUs before it starts them.
    super::vcpus::start(svsm, params.apic_ids(), bsp);
    log::info!(
        "snp: running the guest at VMPL{} on APIC ID {bsp}",
        guest_vmpl.level()
    );
    let mut serviced = 0u64;
    loop {
        super::vcpus::between_calls();
        match svsm.run_once(bsp) {
            Ok(crate::requests::RequestOutcome::Serviced(code)) => {
                serviced += 1;
                if serviced <= 3 {
                    log::info!("snp: serviced guest call {serviced} (result {code})");
                }
            }
            Ok(_) => {}
            Err(e) => {
                log::error!("snp: running the guest failed: {e}");
                die(SnpError::RunVmpl(u32::MAX))
            }
        }
    }
}
