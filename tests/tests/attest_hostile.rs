//! Hostile attestation requests: arbitrary request blocks and registers never panic the
//! SVSM, a refused request writes nothing and consumes no PSP sequence number, an
//! accepted one consumes exactly two, and the machine's isolation invariants hold
//! throughout.

mod attest_common;

use attest_common::{World, CERT_PAGE, MANIFEST_PAGE, NONCE_PAGE, REPORT_PAGE};
use proptest::prelude::*;
use svsm_protocol::call::AttestCall;
use svsm_protocol::SvsmResultCode;
use svsm_tests::fixtures::{BEYOND, MMIO_HIGH, ROM_PAGE, UNVALIDATED_PAGE};
use svsm_tests::invariants;

const FILL: u8 = 0xEE;

/// Addresses worth aiming at: the guest's own pages, SVSM memory, ROM, MMIO, unvalidated
/// RAM, beyond memory, the last bytes of a page, and anything at all.
fn gpa(svsm: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(NONCE_PAGE),
        Just(REPORT_PAGE),
        Just(MANIFEST_PAGE),
        Just(CERT_PAGE),
        Just(svsm),
        Just(svsm - 8),
        Just(ROM_PAGE),
        Just(MMIO_HIGH),
        Just(UNVALIDATED_PAGE),
        Just(BEYOND),
        Just(REPORT_PAGE + 0xFF8),
        any::<u64>(),
    ]
}

fn size() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(0x4A0),
        Just(0x49F),
        Just(0x1000),
        Just(u32::MAX),
        0u32..0x3000,
    ]
}

#[derive(Debug, Clone)]
struct Block {
    bytes: [u8; 0x58],
    single: bool,
}

fn block(svsm: u64) -> impl Strategy<Value = Block> {
    (
        gpa(svsm),
        size(),
        gpa(svsm),
        prop_oneof![Just(64u16), Just(0), any::<u16>()],
        gpa(svsm),
        size(),
        gpa(svsm),
        size(),
        prop::collection::vec(prop_oneof![9 => Just(0u8), 1 => any::<u8>()], 20),
        any::<bool>(),
        any::<[u8; 16]>(),
        prop_oneof![Just(0u32), any::<u32>()],
    )
        .prop_map(
            |(rg, rs, ng, ns, mg, ms, cg, cs, reserved, single, guid, version)| {
                let mut b = [0u8; 0x58];
                b[0..8].copy_from_slice(&rg.to_le_bytes());
                b[8..12].copy_from_slice(&rs.to_le_bytes());
                b[0x10..0x18].copy_from_slice(&ng.to_le_bytes());
                b[0x18..0x1A].copy_from_slice(&ns.to_le_bytes());
                b[0x20..0x28].copy_from_slice(&mg.to_le_bytes());
                b[0x28..0x2C].copy_from_slice(&ms.to_le_bytes());
                b[0x30..0x38].copy_from_slice(&cg.to_le_bytes());
                b[0x38..0x3C].copy_from_slice(&cs.to_le_bytes());
                // Reserved: 0x0C..0x10, 0x1A..0x20, 0x2C..0x30, 0x3C..0x40, 0x54..0x58.
                let slots = [0x0C..0x10, 0x1A..0x20, 0x2C..0x30, 0x3C..0x40, 0x54..0x58];
                let mut r = reserved.into_iter();
                for slot in slots {
                    for i in slot {
                        b[i] = r.next().unwrap_or(0);
                    }
                }
                b[0x40..0x50].copy_from_slice(&guid);
                b[0x50..0x54].copy_from_slice(&version.to_le_bytes());
                Block { bytes: b, single }
            },
        )
}

fn prime(world: &World) {
    world.write(NONCE_PAGE, &[0x4E; 4096]);
    for page in [REPORT_PAGE, MANIFEST_PAGE, CERT_PAGE] {
        world.write(page, &[FILL; 4096]);
    }
}

fn snapshot(world: &World) -> Vec<Vec<u8>> {
    [REPORT_PAGE, MANIFEST_PAGE, CERT_PAGE]
        .iter()
        .map(|&p| world.read(p, 4096))
        .collect()
}

#[test]
fn arbitrary_requests_are_answered_or_refused_cleanly() {
    let world = World::new();
    let svsm = world.system.info().config.svsm_range.0;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    });
    let block_offset = prop_oneof![Just(8u64), Just(16), Just(12), Just(0xFC8)];
    runner
        .run(&(block(svsm), block_offset), |(block, offset)| {
            prime(&world);
            let before = snapshot(&world);
            let psp = world.system.machine().psp();
            let seqno = psp.seqno();
            let at = world.ca() + offset.min(0xFF8 - 0x58 + 8);
            let len = if block.single { 0x58 } else { 0x40 };
            let at = if at + len as u64 > world.ca() + 0x1000 {
                world.ca() + 8
            } else {
                at
            };
            world.write(at, &block.bytes[..len]);
            let call = if block.single {
                AttestCall::AttestSingleService
            } else {
                AttestCall::AttestServices
            };
            let out = world.raw_attest_call(call, at);
            let code = SvsmResultCode::from_raw(out.rax);
            if code == SvsmResultCode::SUCCESS {
                prop_assert_eq!(psp.seqno(), seqno + 2);
            } else {
                prop_assert!(
                    [
                        SvsmResultCode::INVALID_PARAMETER,
                        SvsmResultCode::INVALID_ADDRESS,
                    ]
                    .contains(&code),
                    "unexpected result {:?}",
                    code
                );
                prop_assert_eq!(psp.seqno(), seqno, "a refused request reached the PSP");
                prop_assert!(snapshot(&world) == before, "a refused request wrote memory");
            }
            prop_assert!(invariants::check(&world.system).is_ok());
            Ok(())
        })
        .unwrap();
    // The SVSM still attests normally afterwards.
    let (report, _) = world.attest(&[7; 64]);
    assert_eq!(report.len(), 0x4A0);
}

#[test]
fn arbitrary_registers_do_not_disturb_the_svsm() {
    let world = World::new();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    runner
        .run(&(any::<u64>(), 0u32..4), |(rcx, call)| {
            let out = world.raw_attest_call_id(call, rcx);
            let code = SvsmResultCode::from_raw(out.rax);
            prop_assert!(code != SvsmResultCode::SUCCESS || call < 2);
            prop_assert_eq!(world.system.machine().psp().reports_signed() > 0, false);
            Ok(())
        })
        .unwrap();
}
