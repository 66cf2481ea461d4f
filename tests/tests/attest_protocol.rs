//! Conformance of the attestation protocol (1) against the emulated machine: request
//! validation, the sizes Linux learns from INVALID_PARAMETER, single-service requests,
//! and what happens when the PSP misbehaves. Every refused request must leave guest
//! memory and the PSP's sequence number untouched.

mod attest_common;

use attest_common::{World, CERT_PAGE, MANIFEST_PAGE, NONCE_PAGE, REPORT_PAGE};
use sha2::{Digest, Sha512};
use svsm::requests::CallRegisters;
use svsm_protocol::attest::{AttestRequest, GuestBuffer};
use svsm_protocol::call::AttestCall;
use svsm_protocol::manifest::{Guid, VTPM_SERVICE_GUID};
use svsm_protocol::SvsmResultCode;
use svsm_tests::driver::GuestKind;
use svsm_tests::fixtures::{AP1_CA, AP1_VMSA, BEYOND, MMIO_HIGH};

const NONCE: [u8; 64] = [0x4E; 64];
const FILL: u8 = 0xEE;

fn code(regs: &CallRegisters) -> SvsmResultCode {
    SvsmResultCode::from_raw(regs.rax)
}

/// Fills the output pages so a test can see whether anything was written.
fn prime(world: &World) {
    world.write(NONCE_PAGE, &NONCE);
    for page in [REPORT_PAGE, MANIFEST_PAGE, CERT_PAGE] {
        world.write(page, &[FILL; 4096]);
    }
}

fn untouched(world: &World) -> bool {
    [REPORT_PAGE, MANIFEST_PAGE, CERT_PAGE]
        .iter()
        .all(|&p| world.read(p, 4096).iter().all(|&b| b == FILL))
}

/// Asserts the call was refused with `expected` and changed nothing.
fn refused(world: &World, out: &CallRegisters, expected: SvsmResultCode) {
    assert_eq!(code(out), expected);
    assert!(untouched(world), "a refused request wrote guest memory");
    assert_eq!(world.system.machine().psp().seqno(), 0, "the PSP was asked");
}

/// Points one buffer of a request somewhere else (given the SVSM's start).
type Tamper = fn(&mut AttestRequest, u64);

fn big_request() -> AttestRequest {
    World::request(NONCE.len() as u32, 0x1000, 0x1000)
}

#[test]
fn query_protocol_reports_attestation_version_1() {
    let world = World::new();
    let guest = world.guest();
    assert_eq!(
        guest.query_protocol(world.bsp(), 1, 1).unwrap(),
        (1 << 32) | 1
    );
    assert_eq!(guest.query_protocol(world.bsp(), 1, 2).unwrap(), 0);
}

#[test]
fn attest_services_returns_report_manifest_and_lengths() {
    let world = World::new();
    prime(&world);
    let out = world.attest_call(&big_request(), world.ca() + 8);
    assert_eq!(code(&out), SvsmResultCode::SUCCESS);
    let manifest_len = 24 + 24 + world.ek_public.len();
    assert_eq!((out.rcx, out.rdx, out.r8), (manifest_len as u64, 0, 0x4A0));
    let manifest = world.read(MANIFEST_PAGE, manifest_len);
    let report = world.read(REPORT_PAGE, 0x4A0);
    let expected: [u8; 64] = Sha512::new()
        .chain_update(NONCE)
        .chain_update(&manifest)
        .finalize()
        .into();
    assert_eq!(&report[0x50..0x90], &expected[..], "REPORT_DATA");
    assert_eq!(&report[0x30..0x34], &[0; 4], "requested at VMPL0");
    assert_eq!(&manifest[48..], &world.ek_public[..]);
    // Only the report and manifest were written: past them the fill is intact, and no
    // certificate was written (this platform supplies none).
    assert!(world
        .read(REPORT_PAGE + 0x4A0, 16)
        .iter()
        .all(|&b| b == FILL));
    assert!(world
        .read(MANIFEST_PAGE + manifest_len as u64, 16)
        .iter()
        .all(|&b| b == FILL));
    assert!(world.read(CERT_PAGE, 4096).iter().all(|&b| b == FILL));
    assert_eq!(world.system.machine().psp().seqno(), 2);
}

#[test]
fn too_small_buffers_get_invalid_parameter_with_the_sizes() {
    let world = World::new();
    prime(&world);
    let manifest_len = (24 + 24 + world.ek_public.len()) as u64;
    for (report_size, manifest_size) in [(0, 0), (0x49F, 0x1000), (0x1000, manifest_len as u32 - 1)]
    {
        let req = World::request(NONCE.len() as u32, report_size, manifest_size);
        let out = world.attest_call(&req, world.ca() + 8);
        refused(&world, &out, SvsmResultCode::INVALID_PARAMETER);
        assert_eq!((out.rcx, out.rdx, out.r8), (manifest_len, 0, 0x4A0));
    }
    // Buffers of exactly the sizes work.
    let req = World::request(NONCE.len() as u32, 0x4A0, manifest_len as u32);
    assert_eq!(
        code(&world.attest_call(&req, world.ca() + 8)),
        SvsmResultCode::SUCCESS
    );
}

#[test]
fn reserved_bytes_must_be_zero() {
    let world = World::new();
    prime(&world);
    let mut block = [0u8; 0x40];
    big_request().encode(&mut block).unwrap();
    for offset in [0x0C, 0x0F, 0x1A, 0x1F, 0x2C, 0x3C, 0x3F] {
        let mut bad = block;
        bad[offset] = 1;
        world.write(world.ca() + 8, &bad);
        let out = world.raw_attest_call(AttestCall::AttestServices, world.ca() + 8);
        refused(&world, &out, SvsmResultCode::INVALID_PARAMETER);
    }
}

#[test]
fn the_request_block_must_be_aligned_and_within_a_page() {
    let world = World::new();
    prime(&world);
    let req = big_request();
    refused(
        &world,
        &world.attest_call(&req, world.ca() + 12),
        SvsmResultCode::INVALID_PARAMETER,
    );
    // 8-byte aligned, but the 0x40-byte block runs into the next page.
    refused(
        &world,
        &world.attest_call(&req, NONCE_PAGE + 0xFC8),
        SvsmResultCode::INVALID_PARAMETER,
    );
}

#[test]
fn nonce_sizes_are_checked() {
    let world = World::new();
    prime(&world);
    // 65 and more: the nonce could carry the start of a forged manifest.
    for size in [0, 65, 4096, 4097] {
        let req = World::request(size, 0x1000, 0x1000);
        refused(
            &world,
            &world.attest_call(&req, world.ca() + 8),
            SvsmResultCode::INVALID_PARAMETER,
        );
    }
}

/// Every buffer the guest names must be guest RAM outside SVSM memory and every VMSA.
#[test]
fn buffers_outside_guest_ram_are_invalid_addresses() {
    let world = World::new();
    let guest = world.guest();
    guest
        .start_ap(GuestKind::Linux, world.bsp(), 1, AP1_VMSA, AP1_CA)
        .expect("AP 1 starts");
    prime(&world);
    let svsm = world.system.info().config.svsm_range.0;
    let cases: [(&str, Tamper); 6] = [
        ("report in SVSM memory", |r, s| r.report.gpa = s),
        ("manifest in SVSM memory", |r, s| r.manifest.gpa = s),
        ("nonce in SVSM memory", |r, s| r.nonce.gpa = s),
        ("report on a VMSA", |r, _| r.report.gpa = AP1_VMSA),
        ("manifest in MMIO", |r, _| r.manifest.gpa = MMIO_HIGH),
        ("report running into SVSM memory", |r, s| {
            r.report = GuestBuffer {
                gpa: s - 0x100,
                size: 0x1000,
            }
        }),
    ];
    for (what, tamper) in cases {
        let mut req = big_request();
        tamper(&mut req, svsm);
        let out = world.attest_call(&req, world.ca() + 8);
        assert_eq!(code(&out), SvsmResultCode::INVALID_ADDRESS, "{what}");
        assert!(untouched(&world), "{what}: wrote guest memory");
        assert_eq!(
            world.system.machine().psp().seqno(),
            0,
            "{what}: asked the PSP"
        );
    }
    // A certificate buffer is checked too when its size is not zero.
    let mut req = big_request();
    req.certificates = GuestBuffer {
        gpa: svsm,
        size: 0x1000,
    };
    refused(
        &world,
        &world.attest_call(&req, world.ca() + 8),
        SvsmResultCode::INVALID_ADDRESS,
    );
    // The request block itself (the guest cannot even write there).
    for block in [svsm, AP1_VMSA, MMIO_HIGH, BEYOND] {
        refused(
            &world,
            &world.raw_attest_call(AttestCall::AttestServices, block),
            SvsmResultCode::INVALID_ADDRESS,
        );
    }
}

#[test]
fn single_service_returns_the_vtpm_manifest() {
    let world = World::new();
    prime(&world);
    let out = world.attest_single(&NONCE, VTPM_SERVICE_GUID, 0);
    assert_eq!(code(&out), SvsmResultCode::SUCCESS);
    assert_eq!(out.rcx, world.ek_public.len() as u64);
    let manifest = world.read(MANIFEST_PAGE, out.rcx as usize);
    assert_eq!(manifest, world.ek_public);
    let report = world.read(REPORT_PAGE, 0x4A0);
    let expected: [u8; 64] = Sha512::new()
        .chain_update(NONCE)
        .chain_update(&manifest)
        .finalize()
        .into();
    assert_eq!(&report[0x50..0x90], &expected[..]);
}

#[test]
fn single_service_refuses_unknown_services_and_versions() {
    let world = World::new();
    prime(&world);
    let unknown = Guid::from_fields(0x1234_5678, 1, 2, [3; 8]);
    refused(
        &world,
        &world.attest_single(&NONCE, unknown, 0),
        SvsmResultCode::INVALID_PARAMETER,
    );
    refused(
        &world,
        &world.attest_single(&NONCE, VTPM_SERVICE_GUID, 1),
        SvsmResultCode::INVALID_PARAMETER,
    );
}

#[test]
fn unknown_attestation_calls_are_unsupported() {
    let world = World::new();
    let out = world
        .guest()
        .call(
            world.bsp(),
            &CallRegisters {
                rax: (1 << 32) | 2,
                rcx: world.ca() + 8,
                ..CallRegisters::default()
            },
        )
        .unwrap();
    assert_eq!(code(&out), SvsmResultCode::UNSUPPORTED_CALL);
}

#[test]
fn psp_busy_is_retried_with_the_same_message() {
    let world = World::new();
    prime(&world);
    let psp = world.system.machine().psp();
    psp.inject_busy(5);
    let out = world.attest_call(&big_request(), world.ca() + 8);
    assert_eq!(code(&out), SvsmResultCode::SUCCESS);
    assert_eq!((psp.seqno(), psp.reports_signed()), (2, 1));
}

#[test]
fn a_psp_that_stays_busy_delays_attestation_but_breaks_nothing() {
    let world = World::new();
    prime(&world);
    let psp = world.system.machine().psp();
    psp.inject_busy(100);
    // One call: the SVSM resends a few times, then answers BUSY having written nothing.
    let req = big_request();
    let mut block = [0u8; 0x40];
    req.encode(&mut block).unwrap();
    world.write(world.ca() + 8, &block);
    let regs = CallRegisters {
        rax: svsm_protocol::call::Call::Attestation(AttestCall::AttestServices).to_rax(),
        rcx: world.ca() + 8,
        ..CallRegisters::default()
    };
    let once = world.guest().call_once(world.bsp(), &regs).unwrap();
    assert_eq!(
        SvsmResultCode::from_raw(once.regs.rax),
        SvsmResultCode::BUSY
    );
    assert!(untouched(&world));
    assert_eq!((psp.seqno(), psp.reports_signed()), (0, 0));
    // The guest retries with the same registers, as Linux does, until the host lets the
    // request through: one report, one pair of sequence numbers, the key intact.
    let out = world.attest_call(&req, world.ca() + 8);
    assert_eq!(code(&out), SvsmResultCode::SUCCESS);
    assert_eq!((psp.seqno(), psp.reports_signed()), (2, 1));
    let out = world.attest_call(&req, world.ca() + 8);
    assert_eq!(code(&out), SvsmResultCode::SUCCESS);
    assert_eq!((psp.seqno(), psp.reports_signed()), (4, 2));
}

#[test]
fn a_psp_error_ends_attestation_for_good() {
    let world = World::new();
    prime(&world);
    let psp = world.system.machine().psp();
    // A report for VMPL0 made behind the SVSM's back with VMPCK0 moves the PSP's
    // sequence on; the SVSM's next message is then refused by the PSP.
    let mut other = svsm::psp::GuestMessenger::new(svsm_emulated::psp::TEST_VMPCK0, 0);
    other.get_report(psp, &[0; 64], 0).unwrap();
    let out = world.attest_call(&big_request(), world.ca() + 8);
    assert_eq!(code(&out), SvsmResultCode::INVALID_REQUEST);
    assert!(untouched(&world));
    // VMPCK0 is gone from the SVSM: no message is ever sealed again, so nothing the
    // hypervisor saw can be answered twice.
    let out = world.attest_call(&big_request(), world.ca() + 8);
    assert_eq!(code(&out), SvsmResultCode::INVALID_REQUEST);
    assert_eq!(psp.seqno(), 2, "the SVSM sent nothing more");
}

#[test]
fn certificates_go_to_a_guest_that_passes_a_buffer() {
    let world = World::new();
    prime(&world);
    // Too small: INVALID_PARAMETER with the table's length in RDX, nothing written.
    let mut req = big_request();
    req.certificates = GuestBuffer {
        gpa: CERT_PAGE,
        size: 0x100,
    };
    let out = world.attest_call(&req, world.ca() + 8);
    refused(&world, &out, SvsmResultCode::INVALID_PARAMETER);
    let table_len = out.rdx;
    assert!(table_len > 0x100);
    assert_eq!(out.r8, 0x4A0);
    // Exactly big enough: the table arrives, with the VCEK entry first.
    req.certificates.size = table_len as u32;
    let out = world.attest_call(&req, world.ca() + 8);
    assert_eq!(code(&out), SvsmResultCode::SUCCESS);
    assert_eq!(out.rdx, table_len);
    let table = world.read(CERT_PAGE, table_len as usize);
    let vcek_guid = Guid::from_fields(
        0x63da_758d,
        0xe664,
        0x4564,
        [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd],
    );
    assert_eq!(&table[..16], &vcek_guid.to_bytes());
    assert!(world
        .read(CERT_PAGE + table_len, 16)
        .iter()
        .all(|&b| b == FILL));
}
