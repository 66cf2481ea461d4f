//! The hostile guest: malicious core-protocol requests, each a different attack.
//!
//! Every case runs on a fresh prepared guest (see `svsm_tests::fixtures`). Before and
//! after the call the isolation invariants are checked; a request the SVSM must refuse
//! has to come back with the expected code *and* leave the RMP, all of memory (but the
//! caller's VMSA, which receives the result registers), the vCPUs and the SVSM's registry
//! exactly as they were. The suite prints how many cases it ran.

use svsm::platform::{PageSize as RmpPageSize, RmpPermissions};
use svsm::requests::{CallRegisters, NotServiced, RequestOutcome};
use svsm_protocol::call::CoreCall;
use svsm_protocol::calling_area::BUFFER_OFFSET;
use svsm_protocol::SvsmResultCode as Code;
use svsm_tests::driver::GuestDriver;
use svsm_tests::fixtures::*;
use svsm_tests::invariants;

/// What the SVSM must do with a case.
#[derive(Clone, Copy)]
enum Expect {
    /// Refuse with this code and change nothing.
    Rejected(Code),
    /// Not service the call at all, and change nothing.
    Ignored,
    /// Answer with this code; the state may change (partial progress, a success that
    /// is still an attack), checked by the invariants and `post`.
    Answer(Code),
}

/// How the hostile guest makes its request.
enum Action {
    /// An ordinary call.
    Call(CallRegisters),
    /// A VMGEXIT with this call_pending byte and exit code.
    Raw {
        pending: u8,
        exit_code: u64,
        regs: CallRegisters,
    },
    /// The SVSM's request loop is entered on a vCPU directly (a hypervisor running
    /// VMPL0 on a vCPU without a guest call).
    Direct(u32),
    /// No call: the guest attacks with its own instructions and memory accesses (done by
    /// the action itself, which checks that the hardware refused).
    Nothing,
}

type Hook = Box<dyn Fn(&Prepared)>;

/// A page computed from the prepared guest.
type Target = fn(&Prepared) -> u64;

struct Case {
    name: String,
    caller: u32,
    setup: Hook,
    action: Box<dyn Fn(&Prepared) -> Action>,
    expect: Expect,
    post: Hook,
}

fn core(call: CoreCall, rcx: u64, rdx: u64, r8: u64) -> CallRegisters {
    GuestDriver::core_regs(call, rcx, rdx, r8)
}

fn rax(rax: u64, rcx: u64) -> CallRegisters {
    CallRegisters {
        rax,
        rcx,
        ..Default::default()
    }
}

fn nothing() -> Hook {
    Box::new(|_| {})
}

/// A case whose registers do not depend on the prepared guest.
fn case(name: &str, regs: CallRegisters, expect: Expect) -> Case {
    Case {
        name: name.into(),
        caller: 0,
        setup: nothing(),
        action: Box::new(move |_| Action::Call(regs)),
        expect,
        post: nothing(),
    }
}

/// A case whose registers are computed from the prepared guest.
fn case_with(
    name: &str,
    regs: impl Fn(&Prepared) -> CallRegisters + 'static,
    expect: Expect,
) -> Case {
    Case {
        name: name.into(),
        caller: 0,
        setup: nothing(),
        action: Box::new(move |p| Action::Call(regs(p))),
        expect,
        post: nothing(),
    }
}

impl Case {
    fn setup(mut self, f: impl Fn(&Prepared) + 'static) -> Self {
        self.setup = Box::new(f);
        self
    }
    fn post(mut self, f: impl Fn(&Prepared) + 'static) -> Self {
        self.post = Box::new(f);
        self
    }
    fn from(mut self, apic: u32) -> Self {
        self.caller = apic;
        self
    }
}

/// Writes a PVALIDATE list (raw header fields and raw entries) at `gpa`.
fn write_list(p: &Prepared, gpa: u64, entries: u16, next: u16, raw: &[u64]) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&entries.to_le_bytes());
    bytes.extend_from_slice(&next.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    for e in raw {
        bytes.extend_from_slice(&e.to_le_bytes());
    }
    p.system.machine().guest_write(gpa, &bytes).unwrap();
}

/// A PVALIDATE case with the list in the caller's calling area.
fn pval(name: &str, entries: u16, next: u16, raw: Vec<u64>, expect: Expect) -> Case {
    let raw2 = raw.clone();
    Case {
        name: name.into(),
        caller: 0,
        setup: Box::new(move |p| {
            write_list(p, p.boot_ca() + BUFFER_OFFSET as u64, entries, next, &raw2)
        }),
        action: Box::new(|p| {
            Action::Call(core(
                CoreCall::Pvalidate,
                p.boot_ca() + BUFFER_OFFSET as u64,
                0,
                0,
            ))
        }),
        expect,
        post: nothing(),
    }
}

/// A one-entry PVALIDATE case whose entry depends on the prepared guest.
fn pval_one(name: &str, entry: impl Fn(&Prepared) -> u64 + 'static, expect: Expect) -> Case {
    let entry = std::rc::Rc::new(entry);
    let e2 = entry.clone();
    Case {
        name: name.into(),
        caller: 0,
        setup: Box::new(move |p| write_list(p, p.boot_ca() + BUFFER_OFFSET as u64, 1, 0, &[e2(p)])),
        action: Box::new(|p| {
            Action::Call(core(
                CoreCall::Pvalidate,
                p.boot_ca() + BUFFER_OFFSET as u64,
                0,
                0,
            ))
        }),
        expect,
        post: nothing(),
    }
}

const V4K: u64 = 0b100; // validate, 4 KiB
const R4K: u64 = 0b000; // rescind, 4 KiB
const V2M: u64 = 0b101;
const R2M: u64 = 0b001;
const ICF: u64 = 0b1000;

fn rejected(code: Code) -> Expect {
    Expect::Rejected(code)
}

const ADDR: Code = Code::INVALID_ADDRESS;
const PARAM: Code = Code::INVALID_PARAMETER;

/// Prepares a guest page as a VMSA with one field overridden.
fn bad_vmsa(p: &Prepared, page: u64, offset: u64, bytes: &[u8]) {
    p.guest().prepare_vmsa(page).unwrap();
    p.system
        .machine()
        .guest_write(page + offset, bytes)
        .unwrap();
}

fn cases() -> Vec<Case> {
    use svsm::requests::vmsa;
    let mut c = Vec::new();

    // --- RAX: protocols and calls that do not exist ---
    for (name, value) in [
        ("protocol 3", 3u64 << 32),
        ("protocol 0xFFFFFFFF", 0xFFFF_FFFF << 32),
        ("protocol 0x10000", 0x1_0000 << 32),
        ("attestation call 0 without the service", 1 << 32),
        ("vTPM command without the service", (2 << 32) | 1),
        ("attestation call 99 without the service", (1 << 32) | 99),
    ] {
        c.push(case(
            name,
            rax(value, 0),
            rejected(Code::UNSUPPORTED_PROTOCOL),
        ));
    }
    for (name, value) in [
        ("core call 8", 8u64),
        ("core call 0xFFFFFFFF", 0xFFFF_FFFF),
        ("core call 0x100", 0x100),
    ] {
        c.push(case(name, rax(value, 0), rejected(Code::UNSUPPORTED_CALL)));
    }
    c.push(case_with(
        "DEPOSIT_MEM of SVSM memory",
        |p| core(CoreCall::DepositMem, p.svsm_start(), 0, 0),
        rejected(Code::UNSUPPORTED_CALL),
    ));
    c.push(case_with(
        "WITHDRAW_MEM of SVSM memory",
        |p| core(CoreCall::WithdrawMem, p.svsm_start(), 0, 0),
        rejected(Code::UNSUPPORTED_CALL),
    ));
    for (name, rcx) in [
        ("CONFIGURE_VTOM disable", 0u64),
        ("CONFIGURE_VTOM enable at 4 GiB", 0x1_0000_0002),
        (
            "CONFIGURE_VTOM enable with new CR3, RIP and RSP",
            0x1_0000_001E,
        ),
    ] {
        c.push(case(
            name,
            core(CoreCall::ConfigureVtom, rcx, u64::MAX, u64::MAX),
            rejected(Code::INVALID_REQUEST),
        ));
    }
    for (name, rcx) in [
        ("CONFIGURE_VTOM disable with a vTOM", 0x1_0000_0000u64),
        ("CONFIGURE_VTOM with reserved bits 11:5", 0x20),
        ("CONFIGURE_VTOM with every bit but query", !1),
        ("CONFIGURE_VTOM query with garbage bits", u64::MAX),
    ] {
        c.push(case(
            name,
            core(CoreCall::ConfigureVtom, rcx, 0, 0),
            rejected(PARAM),
        ));
    }
    for (name, rcx) in [
        (
            "QUERY_PROTOCOL protocol 0xFFFFFFFF",
            0xFFFF_FFFF_0000_0001u64,
        ),
        ("QUERY_PROTOCOL version 0xFFFFFFFF", 0xFFFF_FFFF),
        ("QUERY_PROTOCOL all ones", u64::MAX),
    ] {
        c.push(
            case(
                name,
                core(CoreCall::QueryProtocol, rcx, 0, 0),
                Expect::Answer(Code::SUCCESS),
            )
            .post(|p| {
                assert_eq!(
                    p.system.svsm().state_snapshot(),
                    p.system.svsm().state_snapshot()
                )
            }),
        );
    }

    // --- REMAP_CA ---
    for (name, off) in [("by 1", 1u64), ("by 8", 8), ("by 0x800", 0x800)] {
        c.push(case(
            &format!("REMAP_CA unaligned {name}"),
            core(CoreCall::RemapCa, NEW_CA_PAGE + off, 0, 0),
            rejected(PARAM),
        ));
    }
    let remap_targets: Vec<(&str, Target)> = vec![
        ("onto the first SVSM page", |p| p.svsm_start()),
        ("onto the middle of SVSM memory", |p| {
            p.svsm_start() + 0x10_0000
        }),
        ("onto the last SVSM page", |p| p.svsm_start() + 0x1F_F000),
        ("onto the boot VMSA", |p| p.boot_vmsa()),
        ("onto a VMPL0 VMSA", |p| p.vmpl0_vmsa()),
        ("onto AP 1's VMSA", |_| AP1_VMSA),
        ("onto AP 1's calling area", |_| AP1_CA),
        ("onto ROM", |_| ROM_PAGE),
        ("onto low MMIO", |_| MMIO_LOW),
        ("onto high MMIO", |_| MMIO_HIGH),
        ("beyond memory", |_| BEYOND),
        ("onto the last page of the address space", |_| !0xFFF_u64),
        ("onto a guest page with the C-bit set", |_| {
            (1 << 51) | GUEST_PAGE
        }),
        ("onto a page the guest never validated", |_| {
            UNVALIDATED_PAGE
        }),
    ];
    for (name, target) in remap_targets {
        c.push(case_with(
            &format!("REMAP_CA {name}"),
            move |p| core(CoreCall::RemapCa, target(p), 0, 0),
            rejected(ADDR),
        ));
    }
    c.push(
        case(
            "REMAP_CA onto a page the hypervisor made shared",
            core(CoreCall::RemapCa, SPARE_PAGE, 0, 0),
            rejected(ADDR),
        )
        .setup(|p| {
            p.system
                .machine()
                .hv_rmpupdate(SPARE_PAGE, RmpPageSize::Size4K, false)
                .unwrap();
        }),
    );
    c.push(
        case(
            "REMAP_CA by AP 1 onto the BSP's calling area",
            core(CoreCall::RemapCa, 0, 0, 0),
            rejected(ADDR),
        )
        .from(1),
    );

    // --- PVALIDATE: the list's address ---
    for (name, off) in [("by 1", 1u64), ("by 4", 4)] {
        c.push(case_with(
            &format!("PVALIDATE list unaligned {name}"),
            move |p| core(CoreCall::Pvalidate, p.boot_ca() + 8 + off, 0, 0),
            rejected(PARAM),
        ));
    }
    let list_targets: Vec<(&str, Target)> = vec![
        ("in SVSM memory", |p| p.svsm_start() + 8),
        ("on AP 1's VMSA", |_| AP1_VMSA + 8),
        ("on the boot VMSA", |p| p.boot_vmsa()),
        ("in ROM", |_| ROM_PAGE),
        ("in MMIO", |_| MMIO_HIGH + 8),
        ("beyond memory", |_| BEYOND),
        ("at the top of the address space", |_| u64::MAX - 7),
        ("on a page the guest never validated", |_| UNVALIDATED_PAGE),
        ("at GPA 0 (never validated)", |_| 0),
    ];
    for (name, target) in list_targets {
        c.push(case_with(
            &format!("PVALIDATE list {name}"),
            move |p| core(CoreCall::Pvalidate, target(p), 0, 0),
            rejected(ADDR),
        ));
    }
    c.push(
        case(
            "PVALIDATE list on a page the hypervisor made shared",
            core(CoreCall::Pvalidate, SPARE_PAGE, 0, 0),
            rejected(ADDR),
        )
        .setup(|p| {
            write_list(p, SPARE_PAGE, 1, 0, &[UNVALIDATED_PAGE | V4K]);
            p.system
                .machine()
                .hv_rmpupdate(SPARE_PAGE, RmpPageSize::Size4K, false)
                .unwrap();
        }),
    );

    // --- PVALIDATE: the list's header ---
    c.push(pval(
        "PVALIDATE with no entries",
        0,
        0,
        vec![],
        rejected(PARAM),
    ));
    c.push(pval(
        "PVALIDATE with 511 entries (beyond the calling area)",
        511,
        0,
        vec![UNVALIDATED_PAGE | V4K; 511],
        rejected(PARAM),
    ));
    c.push(pval(
        "PVALIDATE with 0xFFFF entries",
        0xFFFF,
        0,
        vec![UNVALIDATED_PAGE | V4K],
        rejected(PARAM),
    ));
    c.push(pval(
        "PVALIDATE with next == entries",
        2,
        2,
        vec![UNVALIDATED_PAGE | V4K; 2],
        rejected(PARAM),
    ));
    c.push(pval(
        "PVALIDATE with next = 0xFFFF",
        1,
        0xFFFF,
        vec![UNVALIDATED_PAGE | V4K],
        rejected(PARAM),
    ));
    c.push(
        case(
            "PVALIDATE list crossing its page",
            core(CoreCall::Pvalidate, LIST_PAGE + 0xF00, 0, 0),
            rejected(PARAM),
        )
        .setup(|p| write_list(p, LIST_PAGE + 0xF00, 40, 0, &[UNVALIDATED_PAGE | V4K; 30])),
    );
    c.push(
        case(
            "PVALIDATE header in the last 8 bytes of a page",
            core(CoreCall::Pvalidate, LIST_PAGE + 0xFF8, 0, 0),
            rejected(PARAM),
        )
        .setup(|p| write_list(p, LIST_PAGE + 0xFF8, 1, 0, &[])),
    );
    c.push(
        case(
            "PVALIDATE 2-entry list where 1 fits before the page end",
            core(CoreCall::Pvalidate, LIST_PAGE + 0xFF0, 0, 0),
            rejected(PARAM),
        )
        .setup(|p| write_list(p, LIST_PAGE + 0xFF0, 2, 0, &[UNVALIDATED_PAGE | V4K])),
    );

    // --- PVALIDATE: malformed entries (the whole list is refused before any entry) ---
    for (name, raw) in [
        ("page size 2", UNVALIDATED_PAGE | 0b110),
        ("page size 3", UNVALIDATED_PAGE | 0b111),
        ("reserved bit 4", UNVALIDATED_PAGE | V4K | 0x10),
        ("reserved bit 11", UNVALIDATED_PAGE | V4K | 0x800),
        ("all reserved bits", UNVALIDATED_PAGE | V4K | 0xFF0),
        ("a 2 MiB entry 4 KiB past alignment", 0x20_1000 | R2M),
        ("a 2 MiB entry at 1 MiB", 0x10_0000 | V2M),
    ] {
        c.push(pval(
            &format!("PVALIDATE entry with {name}"),
            1,
            0,
            vec![raw],
            rejected(PARAM),
        ));
    }
    c.push(pval(
        "PVALIDATE good rescind followed by a malformed entry",
        2,
        0,
        vec![GUEST_PAGE | R4K, UNVALIDATED_PAGE | 0b111],
        rejected(PARAM),
    ));

    // --- PVALIDATE: entries aimed at memory that is not the guest's ---
    let entry_targets: Vec<(&str, Target)> = vec![
        ("validate of an SVSM page", |p| {
            (p.svsm_start() + 0x5000) | V4K
        }),
        ("rescind of an SVSM page", |p| {
            (p.svsm_start() + 0x5000) | R4K
        }),
        ("rescind of the SVSM's first 2 MiB", |p| {
            p.svsm_start() | R2M
        }),
        ("validate of the SVSM's first 2 MiB", |p| {
            p.svsm_start() | V2M | ICF
        }),
        ("rescind of the boot VMSA", |p| p.boot_vmsa() | R4K),
        ("rescind of a VMPL0 VMSA", |p| p.vmpl0_vmsa() | R4K),
        ("rescind of AP 1's VMSA", |_| AP1_VMSA | R4K),
        ("validate of AP 1's VMSA with ignore_cf", |_| {
            AP1_VMSA | V4K | ICF
        }),
        ("rescind of the 2 MiB page around AP 1's VMSA", |_| {
            0x20_0000 | R2M
        }),
        ("validate beyond memory", |_| BEYOND | V4K),
        ("rescind at the top of the address space", |_| {
            (!0xFFF_u64) | R4K
        }),
        ("validate with the C-bit set", |_| {
            (1 << 51) | UNVALIDATED_PAGE | V4K
        }),
        ("a 2 MiB rescind spanning RAM, MMIO and ROM", |_| R2M),
    ];
    for (name, entry) in entry_targets {
        c.push(pval_one(
            &format!("PVALIDATE {name}"),
            entry,
            rejected(ADDR),
        ));
    }
    c.push(
        pval_one(
            "PVALIDATE validate of a page the hypervisor made shared",
            |_| SPARE_PAGE | V4K,
            rejected(ADDR),
        )
        .setup(|p| {
            p.system
                .machine()
                .hv_rmpupdate(SPARE_PAGE, RmpPageSize::Size4K, false)
                .unwrap();
            write_list(p, p.boot_ca() + 8, 1, 0, &[SPARE_PAGE | V4K]);
        }),
    );
    c.push(
        pval_one(
            "PVALIDATE rescind of a page the hypervisor made shared",
            |_| SPARE_PAGE | R4K,
            rejected(ADDR),
        )
        .setup(|p| {
            p.system
                .machine()
                .hv_rmpupdate(SPARE_PAGE, RmpPageSize::Size4K, false)
                .unwrap();
            write_list(p, p.boot_ca() + 8, 1, 0, &[SPARE_PAGE | R4K]);
        }),
    );
    c.push(pval_one(
        "PVALIDATE rescind of a page that is not validated",
        |_| UNVALIDATED_PAGE | R4K,
        rejected(Code::PVALIDATE_FAIL_NOT_CHANGED),
    ));
    c.push(pval_one(
        "PVALIDATE validate of a validated page (would wipe it)",
        |_| GUEST_PAGE | V4K,
        rejected(Code::PVALIDATE_FAIL_NOT_CHANGED),
    ));
    c.push(pval_one(
        "PVALIDATE 2 MiB rescind of a 4 KiB-backed chunk",
        |_| SMALL_CHUNK | R2M,
        rejected(Code::PVALIDATE_FAIL_SIZEMISMATCH),
    ));
    c.push(
        pval_one(
            "PVALIDATE 2 MiB validate of a chunk the hypervisor split",
            |_| 0xE0_0000 | V2M,
            rejected(Code::PVALIDATE_FAIL_SIZEMISMATCH),
        )
        .setup(|p| {
            p.system.machine().hv_psmash(MMIO_HIGH);
            write_list(p, p.boot_ca() + 8, 1, 0, &[MMIO_HIGH | V2M]);
        }),
    );
    // Partial progress: earlier entries stay done, `next` names the failing one.
    c.push(
        pval(
            "PVALIDATE good entry then an SVSM page",
            2,
            0,
            vec![UNVALIDATED_PAGE | V4K, 0x80_5000 | V4K],
            Expect::Answer(ADDR),
        )
        .post(|p| {
            assert!(
                p.system
                    .machine()
                    .rmp_entry(UNVALIDATED_PAGE)
                    .unwrap()
                    .validated
            );
            assert_eq!(read_next(p, p.boot_ca() + 8), 1);
        }),
    );
    c.push(
        pval(
            "PVALIDATE the same page twice in one list",
            2,
            0,
            vec![UNVALIDATED_PAGE | V4K, UNVALIDATED_PAGE | V4K],
            Expect::Answer(Code::PVALIDATE_FAIL_NOT_CHANGED),
        )
        .post(|p| assert_eq!(read_next(p, p.boot_ca() + 8), 1)),
    );
    c.push(
        pval(
            "PVALIDATE rescind then revalidate wipes guest data",
            2,
            0,
            vec![GUEST_PAGE | R4K, GUEST_PAGE | V4K],
            Expect::Answer(Code::SUCCESS),
        )
        .post(|p| {
            let mut data = [0xFFu8; 10];
            p.system
                .machine()
                .guest_read(GUEST_PAGE, &mut data)
                .unwrap();
            assert_eq!(data, [0; 10]);
        }),
    );
    c.push(
        case(
            "PVALIDATE list rescinding its own page",
            core(CoreCall::Pvalidate, LIST_PAGE, 0, 0),
            Expect::Answer(ADDR),
        )
        .setup(|p| write_list(p, LIST_PAGE, 1, 0, &[LIST_PAGE | R4K]))
        .post(|p| {
            let e = p.system.machine().rmp_entry(LIST_PAGE).unwrap();
            assert!(!e.validated && e.perms[2].is_empty());
        }),
    );
    c.push(
        case(
            "PVALIDATE rescinding the caller's own calling area",
            core(CoreCall::Pvalidate, LIST_PAGE, 0, 0),
            Expect::Answer(Code::SUCCESS),
        )
        .setup(|p| write_list(p, LIST_PAGE, 1, 0, &[p.boot_ca() | R4K]))
        .post(|p| {
            // The guest cut its own line: the next call cannot even be made.
            assert!(p.system.machine().guest_write(p.boot_ca(), &[1]).is_err());
            assert_eq!(
                p.system.svsm().handle_request(0),
                RequestOutcome::NotServiced(NotServiced::NoCallingArea)
            );
        }),
    );

    // --- CREATE_VCPU ---
    let create = |vmsa: u64, ca: u64, apic: u64| core(CoreCall::CreateVcpu, vmsa, ca, apic);
    let prep = |p: &Prepared| p.guest().prepare_vmsa(NEW_VMSA_PAGE).unwrap();
    for (name, vmsa, ca) in [
        ("VMSA unaligned by 1", NEW_VMSA_PAGE + 1, NEW_CA_PAGE),
        (
            "VMSA unaligned by 0x800",
            NEW_VMSA_PAGE + 0x800,
            NEW_CA_PAGE,
        ),
        ("calling area unaligned", NEW_VMSA_PAGE, NEW_CA_PAGE + 8),
        (
            "VMSA and calling area the same page",
            NEW_VMSA_PAGE,
            NEW_VMSA_PAGE,
        ),
    ] {
        c.push(
            case(
                &format!("CREATE_VCPU {name}"),
                create(vmsa, ca, 2),
                rejected(PARAM),
            )
            .setup(prep),
        );
    }
    let vmsa_targets: Vec<(&str, Target)> = vec![
        ("VMSA in SVSM memory", |p| p.svsm_start() + 0x10_0000),
        ("VMSA = AP 1's VMSA (the same vCPU twice)", |_| AP1_VMSA),
        ("VMSA = the boot VMSA", |p| p.boot_vmsa()),
        ("VMSA = a VMPL0 VMSA", |p| p.vmpl0_vmsa()),
        ("VMSA = the caller's calling area", |p| p.boot_ca()),
        ("VMSA = AP 1's calling area", |_| AP1_CA),
        ("VMSA in ROM", |_| ROM_PAGE),
        ("VMSA in MMIO", |_| MMIO_HIGH),
        ("VMSA beyond memory", |_| BEYOND),
        ("VMSA at the top of the address space", |_| !0xFFF_u64),
        ("VMSA on a page the guest never validated", |_| {
            UNVALIDATED_PAGE
        }),
        ("VMSA at GPA 0", |_| 0),
    ];
    for (name, vmsa) in vmsa_targets {
        c.push(case_with(
            &format!("CREATE_VCPU {name}"),
            move |p| create(vmsa(p), NEW_CA_PAGE, 2),
            rejected(ADDR),
        ));
    }
    let ca_targets: Vec<(&str, Target)> = vec![
        ("calling area in SVSM memory", |p| p.svsm_start()),
        ("calling area = AP 1's VMSA", |_| AP1_VMSA),
        ("calling area = the boot VMSA", |p| p.boot_vmsa()),
        ("calling area = the BSP's calling area", |p| p.boot_ca()),
        ("calling area in ROM", |_| ROM_PAGE),
        ("calling area in MMIO", |_| MMIO_LOW),
        ("calling area beyond memory", |_| BEYOND),
        ("calling area on a page the guest never validated", |_| {
            UNVALIDATED_PAGE
        }),
    ];
    for (name, ca) in ca_targets {
        c.push(
            case_with(
                &format!("CREATE_VCPU {name}"),
                move |p| create(NEW_VMSA_PAGE, ca(p), 2),
                rejected(ADDR),
            )
            .setup(prep),
        );
    }
    c.push(
        case(
            "CREATE_VCPU with a VMSA page the hypervisor made shared",
            create(SPARE_PAGE, NEW_CA_PAGE, 2),
            rejected(ADDR),
        )
        .setup(|p| {
            p.system
                .machine()
                .hv_rmpupdate(SPARE_PAGE, RmpPageSize::Size4K, false)
                .unwrap();
        }),
    );
    c.push(
        case(
            "CREATE_VCPU with a calling area the hypervisor made shared",
            create(NEW_VMSA_PAGE, SPARE_PAGE, 2),
            rejected(ADDR),
        )
        .setup(|p| {
            p.guest().prepare_vmsa(NEW_VMSA_PAGE).unwrap();
            p.system
                .machine()
                .hv_rmpupdate(SPARE_PAGE, RmpPageSize::Size4K, false)
                .unwrap();
        }),
    );
    for (name, apic) in [
        ("APIC ID 99", 99u64),
        ("APIC ID 0xFFFFFFFF", 0xFFFF_FFFF),
        ("APIC ID 4", 4),
    ] {
        c.push(
            case(
                &format!("CREATE_VCPU for unknown {name}"),
                create(NEW_VMSA_PAGE, NEW_CA_PAGE, apic),
                rejected(PARAM),
            )
            .setup(prep),
        );
    }
    for (name, offset, bytes) in [
        ("VMPL 0 (privilege escalation)", vmsa::VMPL, vec![0u8]),
        ("VMPL 1", vmsa::VMPL, vec![1]),
        ("VMPL 3", vmsa::VMPL, vec![3]),
        ("VMPL 0xFF", vmsa::VMPL, vec![0xFF]),
        (
            "EFER.SVME clear",
            vmsa::EFER,
            0xD00u64.to_le_bytes().to_vec(),
        ),
        ("EFER all zero", vmsa::EFER, 0u64.to_le_bytes().to_vec()),
        (
            "no SEV features",
            vmsa::SEV_FEATURES,
            0u64.to_le_bytes().to_vec(),
        ),
        (
            "an extra SEV feature",
            vmsa::SEV_FEATURES,
            0x21u64.to_le_bytes().to_vec(),
        ),
        (
            "every SEV feature",
            vmsa::SEV_FEATURES,
            u64::MAX.to_le_bytes().to_vec(),
        ),
    ] {
        c.push(
            case(
                &format!("CREATE_VCPU with a VMSA of {name}"),
                create(NEW_VMSA_PAGE, NEW_CA_PAGE, 2),
                rejected(PARAM),
            )
            .setup(move |p| bad_vmsa(p, NEW_VMSA_PAGE, offset, &bytes)),
        );
    }
    c.push(
        case(
            "CREATE_VCPU with a blank page as VMSA",
            create(NEW_VMSA_PAGE, NEW_CA_PAGE, 2),
            rejected(PARAM),
        )
        .setup(|p| {
            p.system
                .machine()
                .guest_write(NEW_VMSA_PAGE, &[0u8; 4096])
                .unwrap()
        }),
    );
    c.push(
        case(
            "CREATE_VCPU by AP 1 with AP 1's calling area for AP 2",
            create(NEW_VMSA_PAGE, AP1_CA, 2),
            rejected(ADDR),
        )
        .setup(prep)
        .from(1),
    );
    c.push(
        case(
            "CREATE_VCPU with VMSA in the page after the VMSA of AP 1 used as its CA",
            create(AP1_CA, NEW_CA_PAGE, 2),
            rejected(ADDR),
        )
        .setup(prep),
    );

    // --- DELETE_VCPU ---
    let delete = |vmsa: u64| core(CoreCall::DeleteVcpu, vmsa, 0, 0);
    c.push(case(
        "DELETE_VCPU unaligned",
        delete(AP1_VMSA + 8),
        rejected(PARAM),
    ));
    let delete_targets: Vec<(&str, Target)> = vec![
        ("of a plain guest page", |_| GUEST_PAGE),
        ("of the boot VMSA", |p| p.boot_vmsa()),
        ("of a VMPL0 VMSA", |p| p.vmpl0_vmsa()),
        ("of an SVSM page", |p| p.svsm_start() + 0x1_0000),
        ("of a calling area", |p| p.boot_ca()),
        ("beyond memory", |_| BEYOND),
        ("of AP 1's VMSA with the C-bit set", |_| {
            (1 << 51) | AP1_VMSA
        }),
        ("of a page that is not validated", |_| UNVALIDATED_PAGE),
    ];
    for (name, target) in delete_targets {
        c.push(case_with(
            &format!("DELETE_VCPU {name}"),
            move |p| delete(target(p)),
            rejected(ADDR),
        ));
    }
    c.push(
        case(
            "DELETE_VCPU of the caller's own VMSA",
            delete(AP1_VMSA),
            rejected(Code::INVALID_REQUEST),
        )
        .from(1),
    );
    c.push(
        case(
            "DELETE_VCPU of a running vCPU's VMSA",
            delete(AP1_VMSA),
            Expect::Answer(Code::BUSY),
        )
        .post(|p| {
            // Still a VMSA, still not the guest's; SVME cleared so it cannot be entered.
            let e = p.system.machine().rmp_entry(AP1_VMSA).unwrap();
            assert!(e.vmsa && e.perms[2].is_empty());
            p.system.machine().hv_ap_destroy(1).unwrap();
            let out = p
                .guest()
                .call(0, &core(CoreCall::DeleteVcpu, AP1_VMSA, 0, 0))
                .unwrap();
            assert_eq!(Code::from_raw(out.rax), Code::SUCCESS);
        }),
    );
    c.push(
        case("DELETE_VCPU twice", delete(AP1_VMSA), rejected(ADDR)).setup(|p| {
            p.system.machine().hv_ap_destroy(1).unwrap();
            p.guest()
                .call_ok(0, &core(CoreCall::DeleteVcpu, AP1_VMSA, 0, 0))
                .unwrap();
        }),
    );

    // --- the request loop itself ---
    for (name, pending, exit_code) in [
        ("call_pending 0", 0u8, vmsa::VMGEXIT_EXIT_CODE),
        ("call_pending 2", 2, vmsa::VMGEXIT_EXIT_CODE),
        ("call_pending 0xFF", 0xFF, vmsa::VMGEXIT_EXIT_CODE),
        ("an IOIO exit instead of VMGEXIT", 1, 0x7B),
        ("exit code 0", 1, 0),
        ("exit code VMGEXIT + 1", 1, vmsa::VMGEXIT_EXIT_CODE + 1),
    ] {
        c.push(Case {
            name: format!("a call with {name}"),
            caller: 0,
            setup: nothing(),
            action: Box::new(move |_| Action::Raw {
                pending,
                exit_code,
                regs: core(CoreCall::RemapCa, NEW_CA_PAGE, 0, 0),
            }),
            expect: Expect::Ignored,
            post: nothing(),
        });
    }
    for (name, apic) in [
        ("a vCPU without a guest VMSA", 2u32),
        ("an unknown vCPU", 42),
    ] {
        c.push(Case {
            name: format!("the request loop entered for {name}"),
            caller: 0,
            setup: nothing(),
            action: Box::new(move |_| Action::Direct(apic)),
            expect: Expect::Ignored,
            post: nothing(),
        });
    }
    c.push(Case {
        name: "a call through a calling area the hypervisor made shared".into(),
        caller: 0,
        setup: Box::new(|p| {
            p.system
                .machine()
                .hv_rmpupdate(p.boot_ca(), RmpPageSize::Size4K, false)
                .unwrap();
        }),
        action: Box::new(|_| Action::Raw {
            pending: 1,
            exit_code: vmsa::VMGEXIT_EXIT_CODE,
            regs: core(CoreCall::RemapCa, NEW_CA_PAGE, 0, 0),
        }),
        expect: Expect::Ignored,
        post: nothing(),
    });

    // --- two vCPUs at once ---
    c.push(
        case(
            "CREATE_VCPU racing a rescind of the new VMSA (create first)",
            create(NEW_VMSA_PAGE, NEW_CA_PAGE, 2),
            Expect::Answer(Code::SUCCESS),
        )
        .setup(prep)
        .post(|p| {
            let out = p
                .guest()
                .pvalidate_list(
                    1,
                    &[svsm_protocol::core::PvalidateEntry::new(
                        NEW_VMSA_PAGE,
                        svsm_protocol::core::PageSize::Size4K,
                        false,
                        false,
                    )
                    .unwrap()],
                    0,
                )
                .unwrap();
            assert_eq!(out.0, ADDR);
            assert!(
                p.system
                    .machine()
                    .rmp_entry(NEW_VMSA_PAGE)
                    .unwrap()
                    .validated
            );
        }),
    );
    c.push(
        case(
            "CREATE_VCPU after another vCPU rescinded the VMSA page",
            create(NEW_VMSA_PAGE, NEW_CA_PAGE, 2),
            rejected(ADDR),
        )
        .setup(|p| {
            p.guest().prepare_vmsa(NEW_VMSA_PAGE).unwrap();
            let e = svsm_protocol::core::PvalidateEntry::new(
                NEW_VMSA_PAGE,
                svsm_protocol::core::PageSize::Size4K,
                false,
                false,
            )
            .unwrap();
            assert_eq!(
                p.guest().pvalidate_list(1, &[e], 0).unwrap().0,
                Code::SUCCESS
            );
        }),
    );
    c.push(
        case(
            "CREATE_VCPU of a VMSA another vCPU just made a VMSA",
            create(NEW_VMSA_PAGE, NEW_CA_PAGE, 3),
            rejected(ADDR),
        )
        .setup(|p| {
            p.guest().prepare_vmsa(NEW_VMSA_PAGE).unwrap();
            p.guest()
                .call_ok(1, &core(CoreCall::CreateVcpu, NEW_VMSA_PAGE, SPARE_PAGE, 2))
                .unwrap();
        }),
    );
    c.push(Case {
        name: "two vCPUs remapping onto the same calling area at once".into(),
        caller: 0,
        setup: nothing(),
        action: Box::new(|p| {
            let m = p.system.machine();
            m.guest_begin_call(1, AP1_CA, &core(CoreCall::RemapCa, NEW_CA_PAGE, 0, 0), true)
                .unwrap();
            m.guest_begin_call(
                0,
                p.boot_ca(),
                &core(CoreCall::RemapCa, NEW_CA_PAGE, 0, 0),
                true,
            )
            .unwrap();
            assert_eq!(
                p.system.service(1).unwrap(),
                RequestOutcome::Serviced(Code::SUCCESS)
            );
            m.guest_end_call(1, AP1_CA).unwrap();
            Action::Direct(0)
        }),
        expect: Expect::Answer(ADDR),
        post: Box::new(|p| {
            let state = p.system.svsm().state_snapshot();
            assert_eq!(state.vcpu(1).unwrap().calling_area, Some(NEW_CA_PAGE));
            assert_eq!(state.vcpu(0).unwrap().calling_area, Some(p.boot_ca()));
        }),
    });
    c.push(Case {
        name: "a rescind of AP 1's calling area while AP 1's call is pending".into(),
        caller: 0,
        setup: nothing(),
        action: Box::new(|p| {
            let m = p.system.machine();
            m.guest_begin_call(1, AP1_CA, &core(CoreCall::QueryProtocol, 1, 0, 0), true)
                .unwrap();
            write_list(p, LIST_PAGE, 1, 0, &[AP1_CA | R4K]);
            Action::Call(core(CoreCall::Pvalidate, LIST_PAGE, 0, 0))
        }),
        expect: Expect::Answer(Code::SUCCESS),
        post: Box::new(|p| {
            assert_eq!(
                p.system.svsm().handle_request(1),
                RequestOutcome::NotServiced(NotServiced::NoCallingArea)
            );
        }),
    });
    c.push(Case {
        name: "DELETE_VCPU of a vCPU that is inside its own call".into(),
        caller: 0,
        setup: Box::new(|p| p.system.machine().hv_ap_destroy(1).map(|_| ()).unwrap()),
        action: Box::new(|_| Action::Call(core(CoreCall::DeleteVcpu, AP1_VMSA, 0, 0))),
        expect: Expect::Answer(Code::SUCCESS),
        post: Box::new(|p| {
            let e = p.system.machine().rmp_entry(AP1_VMSA).unwrap();
            assert!(!e.vmsa && e.perms[2] == RmpPermissions::RWX);
        }),
    });

    // --- the guest on its own: instructions and accesses the hardware must refuse ---
    c.push(Case {
        name: "the guest grants VMPL3 access to an SVSM page with its own RMPADJUST".into(),
        caller: 0,
        setup: nothing(),
        action: Box::new(|p| {
            let r = p.system.machine().guest_rmpadjust(
                p.svsm_start(),
                RmpPageSize::Size4K,
                svsm::platform::Vmpl::new(3).unwrap(),
                RmpPermissions::READ,
                false,
            );
            assert_eq!(r, Err(svsm::platform::RmpadjustError::FailPermission));
            Action::Nothing
        }),
        expect: Expect::Ignored,
        post: nothing(),
    });
    c.push(Case {
        name: "the guest grants VMPL1 (more privileged) access with its own RMPADJUST".into(),
        caller: 0,
        setup: nothing(),
        action: Box::new(|p| {
            let r = p.system.machine().guest_rmpadjust(
                GUEST_PAGE,
                RmpPageSize::Size4K,
                svsm::platform::Vmpl::new(1).unwrap(),
                RmpPermissions::READ,
                false,
            );
            assert_eq!(r, Err(svsm::platform::RmpadjustError::FailPermission));
            Action::Nothing
        }),
        expect: Expect::Ignored,
        post: nothing(),
    });
    c.push(Case {
        name: "the guest sets the VMSA bit itself with RMPADJUST".into(),
        caller: 0,
        setup: nothing(),
        action: Box::new(|p| {
            // Below VMPL0 the VMSA bit is ignored: the call succeeds and changes nothing
            // (VMPL3 already has no access).
            let r = p.system.machine().guest_rmpadjust(
                NEW_VMSA_PAGE,
                RmpPageSize::Size4K,
                svsm::platform::Vmpl::new(3).unwrap(),
                RmpPermissions::empty(),
                true,
            );
            assert_eq!(r, Ok(()));
            assert!(!p.system.machine().rmp_entry(NEW_VMSA_PAGE).unwrap().vmsa);
            Action::Nothing
        }),
        expect: Expect::Ignored,
        post: nothing(),
    });
    let access_targets: Vec<(&str, Target, bool)> = vec![
        (
            "the guest reads SVSM memory",
            |p| p.svsm_start() + 0x2_0000,
            false,
        ),
        ("the guest reads the boot VMSA", |p| p.boot_vmsa(), false),
        (
            "the guest forges AP 1's registers in its VMSA",
            |_| AP1_VMSA + 0x1F8,
            true,
        ),
    ];
    for (name, target, write) in access_targets {
        c.push(Case {
            name: name.into(),
            caller: 0,
            setup: nothing(),
            action: Box::new(move |p| {
                let m = p.system.machine();
                let r = if write {
                    m.guest_write(target(p), &[0xCC; 8])
                } else {
                    m.guest_read(target(p), &mut [0u8; 8])
                };
                assert_eq!(r, Err(svsm_emulated::GuestFault::Permission));
                Action::Nothing
            }),
            expect: Expect::Ignored,
            post: nothing(),
        });
    }
    c.push(
        pval(
            "PVALIDATE with next skipping good entries to reach an SVSM page",
            510,
            509,
            {
                let mut raw = vec![UNVALIDATED_PAGE | V4K; 509];
                raw.push(0x80_6000 | R4K);
                raw
            },
            rejected(ADDR),
        )
        .post(|p| {
            assert!(
                !p.system
                    .machine()
                    .rmp_entry(UNVALIDATED_PAGE)
                    .unwrap()
                    .validated
            )
        }),
    );
    c.push(
        case(
            "PVALIDATE list crossing from the last guest page into SVSM memory",
            core(CoreCall::Pvalidate, 0x7F_FFF0, 0, 0),
            rejected(PARAM),
        )
        .setup(|p| {
            let e = svsm_protocol::core::PvalidateEntry::new(
                0x7F_F000,
                svsm_protocol::core::PageSize::Size4K,
                true,
                false,
            )
            .unwrap();
            assert_eq!(
                p.guest().pvalidate_list(0, &[e], 0).unwrap().0,
                Code::SUCCESS
            );
            write_list(p, 0x7F_FFF0, 2, 0, &[UNVALIDATED_PAGE | V4K]);
        }),
    );
    c
}

fn read_next(p: &Prepared, list: u64) -> u16 {
    let mut h = [0u8; 4];
    p.system.machine().guest_read(list, &mut h).unwrap();
    u16::from_le_bytes([h[2], h[3]])
}

/// Runs the action; the code the guest got, or `None` if the call was not serviced.
fn run(p: &Prepared, caller: u32, action: Action) -> Option<Code> {
    let m = p.system.machine();
    let ca = p.guest().calling_area(caller).unwrap();
    match action {
        Action::Call(regs) => {
            m.guest_begin_call(caller, ca, &regs, true).unwrap();
            let outcome = p.system.service(caller).unwrap();
            let ret = m.guest_end_call(caller, ca);
            match outcome {
                RequestOutcome::Serviced(code) => {
                    if let Ok(ret) = ret {
                        assert_eq!(Code::from_raw(ret.regs.rax), code);
                        assert_eq!(ret.pending, 0);
                    }
                    Some(code)
                }
                RequestOutcome::NotServiced(_) => None,
            }
        }
        Action::Raw {
            pending,
            exit_code,
            regs,
        } => {
            let _ = m.guest_write(ca, &[pending]);
            m.guest_exit(caller, &regs, exit_code).unwrap();
            let outcome = p.system.service(caller).unwrap();
            if let Ok(ret) = m.guest_end_call(caller, ca) {
                assert_eq!(ret.regs, regs, "registers of an unserviced call changed");
                assert_eq!(ret.pending, pending);
            }
            match outcome {
                RequestOutcome::Serviced(code) => Some(code),
                RequestOutcome::NotServiced(_) => None,
            }
        }
        Action::Nothing => None,
        Action::Direct(apic) => {
            let outcome = p.system.svsm().handle_request(apic);
            match outcome {
                RequestOutcome::Serviced(code) => Some(code),
                RequestOutcome::NotServiced(_) => None,
            }
        }
    }
}

#[test]
fn hostile_guest() {
    let cases = cases();
    let mut names = std::collections::HashSet::new();
    for case in &cases {
        assert!(
            names.insert(case.name.clone()),
            "duplicate case {}",
            case.name
        );
    }
    for case in &cases {
        let p = Prepared::new().unwrap();
        (case.setup)(&p);
        if let Err(v) = invariants::check(&p.system) {
            panic!("{}: invariant broken by the setup: {v}", case.name);
        }
        let volatile: Vec<u64> = [p.boot_vmsa(), AP1_VMSA].to_vec();
        let before = invariants::snapshot(&p.system);
        let action = (case.action)(&p);
        let got = run(&p, case.caller, action);
        if let Err(v) = invariants::check(&p.system) {
            panic!("{}: isolation invariant broken: {v}", case.name);
        }
        let after = invariants::snapshot(&p.system);
        match case.expect {
            Expect::Rejected(code) => {
                assert_eq!(got, Some(code), "{}", case.name);
                if let Some(diff) = invariants::difference(&before, &after, &volatile) {
                    panic!("{}: a rejected request changed state: {diff}", case.name);
                }
            }
            Expect::Ignored => {
                assert_eq!(got, None, "{}", case.name);
                if let Some(diff) = invariants::difference(&before, &after, &volatile) {
                    panic!("{}: an ignored call changed state: {diff}", case.name);
                }
            }
            Expect::Answer(code) => assert_eq!(got, Some(code), "{}", case.name),
        }
        (case.post)(&p);
        if let Err(v) = invariants::check(&p.system) {
            panic!("{}: isolation invariant broken afterwards: {v}", case.name);
        }
    }
    println!(
        "hostile guest: {} distinct malicious requests refused or contained",
        cases.len()
    );
    assert!(cases.len() >= 150, "only {} hostile cases", cases.len());
}
