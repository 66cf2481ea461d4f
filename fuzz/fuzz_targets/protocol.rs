//! Every parser of guest- and host-supplied bytes: calling-area payloads (PVALIDATE and
//! memory lists), core call operands, attestation requests, the services manifest, vTPM
//! buffers and the vTPM state store channel's headers, GHCB MSR values and the GHCB page, PSP messages and reports, the IGVM
//! parameter areas, secrets and CPUID pages, the VMSA, the ACPI MADT and the #VC IO
//! decoder.
//!
//! Input: one selector byte, then the bytes the parser gets (register operands are read
//! as little-endian u64s from them). Errors are expected; a panic or a hang is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use svsm_protocol::{attest, core, ghcb, guest_msg, manifest, secrets, state_store, vmsa, vtpm};

fn u64s(data: &[u8]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (i, chunk) in data.chunks(8).take(4).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        out[i] = u64::from_le_bytes(b);
    }
    out
}

/// `data` in a zeroed page of `size` bytes (parsers that want a whole page).
fn page(data: &[u8], size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    let n = data.len().min(size);
    p[..n].copy_from_slice(&data[..n]);
    p
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    match mode % 16 {
        0 => {
            if let Ok(list) = core::PvalidateList::parse(data) {
                let _ = list.pending().count();
            }
        }
        1 => {
            if let Ok(list) = core::MemoryList::parse(data) {
                let _ = list.pending().count();
            }
            if let Ok(pages) = core::parse_withdraw_list(data) {
                let _ = pages.count();
            }
        }
        2 => {
            let [a, b, c, d] = u64s(data);
            let _ = core::RemapCaRequest::from_regs(a);
            let _ = core::PvalidateRequest::from_regs(a);
            let _ = core::CreateVcpuRequest::from_regs(a, b, c);
            let _ = core::DeleteVcpuRequest::from_regs(a);
            let _ = core::DepositMemRequest::from_regs(a);
            let _ = core::WithdrawMemRequest::from_regs(a);
            let _ = core::ConfigureVtomRequest::from_regs(a, b, c, d);
            let _ = svsm_protocol::call::CallCode::from_rax(a);
        }
        3 => {
            let _ = attest::AttestRequest::parse_services(data);
            let _ = attest::AttestRequest::parse_single_service(data);
        }
        4 => {
            if let Ok(m) = manifest::Manifest::parse(data) {
                let _ = m.entries().count();
                let _ = m.find(manifest::VTPM_SERVICE_GUID);
            }
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = manifest::Guid::parse_str(text);
            }
        }
        5 => {
            let _ = vtpm::platform_command(data);
            let _ = vtpm::SendCommandRequest::parse(data);
            let _ = vtpm::parse_response(data);
            let _ = vtpm::TpmHeader::parse(data);
            let _ = vtpm::TpmHeader::parse_exact(data);
            // The vTPM state store channel's headers (host to SVSM and back).
            if let Ok(h) = <[u8; state_store::HEADER_SIZE]>::try_from(
                page(data, state_store::HEADER_SIZE).as_slice(),
            ) {
                let _ = state_store::Request::parse(&h);
                let _ = state_store::Response::parse(&h, state_store::Operation::Get);
                let _ = state_store::Response::parse(&h, state_store::Operation::Put);
            }
        }
        6 => {
            let [a, b, ..] = u64s(data);
            let _ = ghcb::MsrRequest::decode(a);
            let _ = ghcb::MsrResponse::decode(b);
            let _ = ghcb::ApCreation::decode(a);
        }
        7 => {
            use zerocopy::FromBytes;
            if let Ok((g, _)) = ghcb::Ghcb::read_from_prefix(&page(data, 4096)) {
                for field in [
                    ghcb::GhcbField::SwExitCode,
                    ghcb::GhcbField::SwExitInfo1,
                    ghcb::GhcbField::SwExitInfo2,
                    ghcb::GhcbField::Rax,
                ] {
                    let _ = g.get_if_valid(field);
                }
            }
        }
        8 => {
            if let Ok(h) = guest_msg::GuestMessageHeader::parse(data) {
                let _ = h.check_response(guest_msg::MessageType::ReportResponse, 1);
            }
            let _ = guest_msg::AttestationReport::parse(data);
            let _ = guest_msg::ReportResponse::parse(data);
            let _ = svsm::psp::msg::report_response(data);
        }
        9 => {
            let p: [u8; guest_msg::GUEST_MSG_SIZE] =
                page(data, guest_msg::GUEST_MSG_SIZE).try_into().unwrap();
            let mut out = vec![0u8; guest_msg::GUEST_MSG_SIZE];
            let _ = svsm::psp::msg::open(
                &[7u8; 32],
                &p,
                guest_msg::MessageType::ReportResponse,
                1,
                0,
                &mut out,
            );
        }
        10 => {
            if let Ok(s) = secrets::SecretsPage::parse(data) {
                let _ = s.vmpck(0);
                if let Some(info) = s.svsm_info() {
                    let _ = s.guest_copy(&info);
                }
            }
            let _ = svsm::snp::secrets::SvsmSecrets::parse(data);
        }
        11 => {
            let _ = svsm::snp::cpuid::CpuidPage::parse(data);
        }
        12 => {
            let _ = vmsa::Vmsa::parse(data);
        }
        13 => {
            // IGVM parameter block, then its host-filled areas.
            let (block, rest) = data.split_at(data.len().min(4096));
            if let Ok(block) = svsm::boot_params::parse_block(block) {
                let third = rest.len() / 3;
                let _ = svsm::boot_params::BootParams::new(
                    block,
                    &rest[..third],
                    &rest[third..2 * third],
                    &rest[2 * third..],
                );
            }
        }
        14 => {
            let _ = svsm::smp::acpi::madt_apic_ids(data);
            if let Ok(rsdp) = <[u8; 36]>::try_from(page(data, 36).as_slice()) {
                let _ = svsm::smp::acpi::parse_rsdp(&rsdp);
            }
        }
        _ => {
            let [a, ..] = u64s(data);
            let _ = svsm::snp::vc::decode_io(data.get(8..).unwrap_or(&[]), a);
        }
    }
});
