//! Property tests: every parser takes arbitrary bytes without panicking, and what the
//! encoders write parses back to the same value.
//!
//! Random bytes rarely get past a magic value or a count check, so some strategies
//! plant a valid prefix (manifest GUID, PVALIDATE header, vTPM header) and randomise
//! the rest, to reach the deeper checks.

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use crate::attest::AttestRequest;
use crate::call::Call;
use crate::core::{
    encode_list, parse_withdraw_list, ConfigureVtomRequest, CreateVcpuRequest, DeleteVcpuRequest,
    DepositMemRequest, MemoryEntry, MemoryList, PageSize, PvalidateEntry, PvalidateList,
    PvalidateRequest, QueryProtocolRequest, RemapCaRequest, WithdrawMemRequest,
    PVALIDATE_MAX_ENTRIES,
};
use crate::ghcb::{ApCreation, MsrRequest, MsrResponse};
use crate::guest_msg::{AttestationReport, GuestMessageHeader, ReportResponse};
use crate::manifest::{build_manifest, Guid, Manifest, ServiceEntry, SERVICES_MANIFEST_GUID};
use crate::secrets::SecretsPage;
use crate::vmsa::Vmsa;
use crate::vtpm::{
    parse_response, platform_command, SendCommandRequest, TpmHeader, MAX_COMMAND_SIZE,
};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Parses a list and, if it is accepted, checks what the parser promised.
fn check_pvalidate(data: &[u8]) {
    if let Ok(list) = PvalidateList::parse(data) {
        assert!(list.entries() >= 1);
        assert!(usize::from(list.entries()) <= PVALIDATE_MAX_ENTRIES);
        assert!(list.next() < list.entries());
        for i in 0..list.entries() {
            let e = list.get(i).expect("validated entry");
            if e.page_size() == PageSize::Size2M {
                assert_eq!(e.gpa() % 0x20_0000, 0);
            }
            assert_eq!(PvalidateEntry::decode(e.encode()), Ok(e));
        }
        assert_eq!(
            list.pending().count(),
            usize::from(list.entries() - list.next())
        );
    }
}

fn check_manifest(data: &[u8]) {
    if let Ok(m) = Manifest::parse(data) {
        assert!(m.len() <= data.len());
        assert_eq!(m.entries().count(), m.count());
        for e in m.entries() {
            // Every slice lies inside the manifest, after the table.
            let start = e.data.as_ptr() as usize - m.as_bytes().as_ptr() as usize;
            assert!(start >= 24 + 24 * m.count());
            assert!(start + e.data.len() <= m.len());
        }
    }
}

proptest! {
    #[test]
    fn core_parsers_never_panic(data in bytes(4200)) {
        check_pvalidate(&data);
        let _ = MemoryList::parse(&data);
        if let Ok(pages) = parse_withdraw_list(&data) {
            prop_assert!(pages.count() * 8 + 8 <= data.len());
        }
        let _ = AttestRequest::parse_services(&data);
        let _ = AttestRequest::parse_single_service(&data);
        let _ = SendCommandRequest::parse(&data);
        let _ = parse_response(&data);
        let _ = platform_command(&data);
        let _ = TpmHeader::parse(&data);
        let _ = TpmHeader::parse_exact(&data);
        check_manifest(&data);
        let _ = GuestMessageHeader::parse(&data);
        let _ = AttestationReport::parse(&data);
        let _ = ReportResponse::parse(&data);
        let _ = SecretsPage::parse(&data);
        let _ = Vmsa::parse(&data);
    }

    #[test]
    fn register_decoders_never_panic(a: u64, b: u64, c: u64) {
        let _ = Call::decode(a);
        let _ = PvalidateEntry::decode(a);
        let _ = MemoryEntry::decode(a);
        let _ = RemapCaRequest::from_regs(a);
        let _ = PvalidateRequest::from_regs(a).map(|r| assert!(r.bytes_to_page_end() <= 4096));
        let _ = CreateVcpuRequest::from_regs(a, b, c);
        let _ = DeleteVcpuRequest::from_regs(a);
        let _ = DepositMemRequest::from_regs(a);
        if let Ok(w) = WithdrawMemRequest::from_regs(a) {
            prop_assert!((1..=511).contains(&w.capacity()));
        }
        prop_assert_eq!(QueryProtocolRequest::from_regs(a).to_rcx(), a);
        let _ = ConfigureVtomRequest::from_regs(a, b, c, a ^ b);
        if let Ok(r) = MsrRequest::decode(a) {
            prop_assert_eq!(MsrRequest::decode(r.encode()), Ok(r));
        }
        if let Ok(r) = MsrResponse::decode(a) {
            prop_assert_eq!(MsrResponse::decode(r.encode()), Ok(r));
        }
        if let Ok(r) = ApCreation::decode(a) {
            prop_assert_eq!(r.encode(), a);
        }
    }

    #[test]
    fn guid_text_parser_never_panics(s in "\\PC{0,40}", t in "[0-9a-fA-F-]{36}") {
        let _ = Guid::parse_str(&s);
        if let Ok(g) = Guid::parse_str(&t) {
            prop_assert_eq!(std::format!("{g}"), t.to_ascii_lowercase());
        }
    }

    #[test]
    fn pvalidate_lists_with_plausible_headers(
        entries in 0u16..520,
        next in 0u16..520,
        body in proptest::collection::vec(any::<u64>(), 0..520),
        cut in 0usize..4200,
    ) {
        let mut data = Vec::new();
        data.extend_from_slice(&entries.to_le_bytes());
        data.extend_from_slice(&next.to_le_bytes());
        data.extend_from_slice(&[0; 4]);
        for e in &body {
            // Mostly well-formed entries: clear reserved bits, keep size and GFN random.
            data.extend_from_slice(&(e & !0xFF0).to_le_bytes());
        }
        data.truncate(cut.max(8));
        check_pvalidate(&data);
    }

    #[test]
    fn manifests_with_the_right_guid(rest in bytes(600), length in 0u32..700, count in 0u32..30) {
        let mut data = Vec::new();
        data.extend_from_slice(&SERVICES_MANIFEST_GUID.to_bytes());
        data.extend_from_slice(&length.to_le_bytes());
        data.extend_from_slice(&count.to_le_bytes());
        data.extend_from_slice(&rest);
        check_manifest(&data);
    }

    #[test]
    fn pvalidate_list_round_trips(
        raw in proptest::collection::vec((any::<u64>(), any::<bool>(), any::<bool>(), any::<bool>()), 1..=510),
        next_seed: u16,
    ) {
        let entries: Vec<PvalidateEntry> = raw
            .iter()
            .map(|&(gfn, big, validate, ignore_cf)| {
                let (size, gpa) = if big {
                    (PageSize::Size2M, (gfn << 21) & !0xFFF)
                } else {
                    (PageSize::Size4K, gfn << 12)
                };
                PvalidateEntry::new(gpa, size, validate, ignore_cf).expect("aligned")
            })
            .collect();
        let next = next_seed % entries.len() as u16;
        let mut out = [0u8; 4088];
        let n = encode_list(&entries, next, &mut out).expect("fits");
        let list = PvalidateList::parse(&out[..n]).expect("parses");
        prop_assert_eq!(list.next(), next);
        for (i, e) in entries.iter().enumerate() {
            prop_assert_eq!(list.get(i as u16), Some(*e));
        }
    }

    #[test]
    fn vtpm_request_round_trips(cmd in bytes(MAX_COMMAND_SIZE + 1)) {
        let req = SendCommandRequest { locality: 0, command: &cmd };
        let mut out = [0u8; 4096];
        let n = req.encode(&mut out).expect("fits");
        prop_assert_eq!(SendCommandRequest::parse(&out[..n]), Ok(req));
    }

    #[test]
    fn manifest_round_trips(
        services in proptest::collection::vec((any::<[u8; 16]>(), bytes(64)), 0..8)
    ) {
        let entries: Vec<ServiceEntry<'_>> = services
            .iter()
            .map(|(g, d)| ServiceEntry { guid: Guid::from_bytes(*g), data: d })
            .collect();
        let mut out = [0u8; 1024];
        let n = build_manifest(&entries, &mut out).expect("fits");
        let m = Manifest::parse(&out[..n]).expect("parses");
        prop_assert_eq!(m.count(), entries.len());
        for (i, e) in entries.iter().enumerate() {
            prop_assert_eq!(m.get(i), Some(*e));
        }
    }
}
