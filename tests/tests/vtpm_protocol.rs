//! The vTPM protocol (2) on the emulated machine, driven by a guest that behaves like
//! Linux's `tpm_svsm` driver: QUERY, TPM_SEND_COMMAND through the calling area, the
//! buffer rules (locality, sizes, addresses), failing closed, and a byte-for-byte replay
//! of what Linux's TPM core sends when it probes the TPM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use svsm::requests::vtpm::VtpmProtocol;
use svsm::requests::{CallRegisters, Services};
use svsm_emulated::{EmulatedSystem, LaunchConfig};
use svsm_protocol::call::{Call, CoreCall, VtpmCall};
use svsm_protocol::SvsmResultCode;
use svsm_tests::driver::GuestDriver;
use vtpm::tpm::{self, CommandBuilder, Header};
use vtpm::{EkTemplate, EntropyError, EntropySource, Vtpm};

/// The guest's vTPM buffer (Linux allocates one page).
const BUF: u64 = 0x20_0000;
/// The last guest page below SVSM memory (0x80_0000).
const EDGE_PAGE: u64 = 0x7F_F000;
/// The start of SVSM memory in the standard machine.
const SVSM_START: u64 = 0x80_0000;

/// One engine per process: the tests take turns.
static ENGINE: Mutex<()> = Mutex::new(());

/// The OS generator, switchable to failing.
struct Entropy(Arc<AtomicBool>);

impl EntropySource for Entropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        if self.0.load(Ordering::SeqCst) {
            return Err(EntropyError);
        }
        getrandom::getrandom(buf).map_err(|_| EntropyError)
    }
}

struct Booted {
    system: EmulatedSystem,
    ek: Vec<u8>,
    fail_entropy: Arc<AtomicBool>,
    /// Dropped last: the engine (inside `system`) is gone before the next test starts.
    _engine: MutexGuard<'static, ()>,
}

/// Launches the standard machine with the vTPM and lets the guest validate its pages.
fn boot() -> Booted {
    let guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let fail = Arc::new(AtomicBool::new(false));
    let service = vtpm::start(Box::new(Entropy(fail.clone()))).expect("vTPM starts");
    let ek = service.ek_public().to_vec();
    let services = Services::new().with_vtpm(Box::new(VtpmProtocol::new(service)));
    let system = EmulatedSystem::launch(LaunchConfig::default(), services).expect("launch");
    {
        let guest = GuestDriver::new(&system);
        let bsp = system.info().bsp();
        for page in [BUF, EDGE_PAGE] {
            guest
                .pvalidate_linux(bsp, page, page + 0x1000, true)
                .expect("validate");
        }
    }
    Booted {
        system,
        ek,
        fail_entropy: fail,
        _engine: guard,
    }
}

impl Booted {
    fn guest(&self) -> GuestDriver<'_> {
        GuestDriver::new(&self.system)
    }

    fn bsp(&self) -> u32 {
        self.system.info().bsp()
    }

    /// A vTPM call from the boot vCPU; returns the registers (RAX = result code).
    fn call(&self, call: VtpmCall, rcx: u64) -> CallRegisters {
        let regs = CallRegisters {
            rax: Call::Vtpm(call).to_rax(),
            rcx,
            ..CallRegisters::default()
        };
        self.guest().call(self.bsp(), &regs).expect("call serviced")
    }

    /// Writes a TPM_SEND_COMMAND request at `gpa` and calls SVSM_VTPM_CMD.
    fn send_at(&self, gpa: u64, platform: u32, locality: u8, size: u32, command: &[u8]) -> u64 {
        let mut req = platform.to_le_bytes().to_vec();
        req.push(locality);
        req.extend_from_slice(&size.to_le_bytes());
        req.extend_from_slice(command);
        self.system
            .machine()
            .guest_write(gpa, &req)
            .expect("guest write");
        self.call(VtpmCall::Cmd, gpa).rax
    }

    /// Sends a TPM command as Linux does; returns the TPM response.
    fn tpm(&self, command: &[u8]) -> Vec<u8> {
        let rax = self.send_at(BUF, 8, 0, command.len() as u32, command);
        assert_eq!(SvsmResultCode::from_raw(rax), SvsmResultCode::SUCCESS);
        let mut size = [0u8; 4];
        self.system
            .machine()
            .guest_read(BUF, &mut size)
            .expect("read");
        let size = u32::from_le_bytes(size) as usize;
        assert!(size <= 4092, "Linux rejects responses over 4092 bytes");
        let mut response = vec![0u8; size];
        self.system
            .machine()
            .guest_read(BUF + 4, &mut response)
            .expect("read");
        let header = Header::parse(&response).expect("a TPM header");
        assert_eq!(header.size as usize, size, "the header size is the length");
        response
    }

    fn read_guest(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.system.machine().guest_read(gpa, &mut b).expect("read");
        b
    }
}

fn rc(response: &[u8]) -> u32 {
    Header::parse(response).expect("header").code
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn pcr_extend(index: u32, digest: &[u8; 32]) -> Vec<u8> {
    CommandBuilder::new(tpm::ST_SESSIONS, 0x182)
        .u32(index)
        .password_auth()
        .u32(1)
        .u16(0x000B)
        .bytes(digest)
        .build()
}

fn pcr_read(b: &Booted, index: u32) -> Vec<u8> {
    let mut select = [0u8; 3];
    select[(index / 8) as usize] = 1 << (index % 8);
    let cmd = CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17E)
        .u32(1)
        .u16(0x000B)
        .bytes(&[3])
        .bytes(&select)
        .build();
    let r = b.tpm(&cmd);
    assert_eq!(rc(&r), 0);
    r[30..62].to_vec()
}

#[test]
fn query_protocol_and_vtpm_query() {
    let b = boot();
    let regs = GuestDriver::core_regs(CoreCall::QueryProtocol, (2 << 32) | 1, 0, 0);
    let out = b.guest().call_ok(b.bsp(), &regs).expect("QUERY_PROTOCOL");
    assert_eq!(out.rcx, (1 << 32) | 1, "vTPM protocol version 1 only");
    let regs = GuestDriver::core_regs(CoreCall::QueryProtocol, (2 << 32) | 2, 0, 0);
    assert_eq!(b.guest().call_ok(b.bsp(), &regs).expect("query").rcx, 0);

    let out = b.call(VtpmCall::Query, 0);
    assert_eq!(SvsmResultCode::from_raw(out.rax), SvsmResultCode::SUCCESS);
    assert_eq!(out.rcx, 1 << 8, "TPM_SEND_COMMAND only");
    assert_eq!(out.rdx, 0, "no feature bits");

    // Unknown vTPM call.
    let regs = CallRegisters {
        rax: (2 << 32) | 2,
        ..CallRegisters::default()
    };
    let out = b.guest().call(b.bsp(), &regs).expect("serviced");
    assert_eq!(
        SvsmResultCode::from_raw(out.rax),
        SvsmResultCode::UNSUPPORTED_CALL
    );
}

/// What Linux sends when it probes the TPM behind `tpm_svsm` (drivers/char/tpm:
/// tpm_svsm.c, tpm2-cmd.c `tpm2_probe`, `tpm2_auto_startup`, `tpm2_get_cc_attrs_tbl`,
/// `tpm2_get_pcr_allocation`; tpm2-sessions.c `tpm2_create_null_primary` with
/// CONFIG_TCG_TPM2_HMAC), byte for byte, and what it checks in the answers.
#[test]
fn linux_probe_sequence_byte_for_byte() {
    let b = boot();
    // tpm_svsm_probe: SVSM_VTPM_QUERY must offer TPM_SEND_COMMAND (bit 8).
    let q = b.call(VtpmCall::Query, 0);
    assert_eq!(q.rcx & (1 << 8), 1 << 8);

    // tpm2_probe: GetCapability(TPM_CAP_TPM_PROPERTIES, TPM_PT_TOTAL_COMMANDS, 1); Linux
    // only checks that the tag is TPM2_ST_NO_SESSIONS.
    let probe = [
        0x80, 0x01, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x01, 0x7A, 0x00, 0x00, 0x00, 0x06, 0x00,
        0x00, 0x01, 0x29, 0x00, 0x00, 0x00, 0x01,
    ];
    let r = b.tpm(&probe);
    assert_eq!(be16(&r, 0), 0x8001);
    assert_eq!(rc(&r), 0);
    let total_commands = be32(&r, 23);
    assert_eq!(be32(&r, 19), 0x129);
    assert!(total_commands > 50, "{total_commands} commands");

    // tpm2_do_selftest: SelfTest(fullTest = NO); the SVSM already started the TPM, so
    // Linux gets SUCCESS (or TESTING) and never needs Startup.
    let r = b.tpm(&[0x80, 0x01, 0, 0, 0, 0x0B, 0, 0, 0x01, 0x43, 0x00]);
    assert!(matches!(rc(&r), 0 | 0x90A), "SelfTest: {:#x}", rc(&r));
    // Were Linux to send Startup(CLEAR), TPM_RC_INITIALIZE, which it accepts.
    let r = b.tpm(&[0x80, 0x01, 0, 0, 0, 0x0C, 0, 0, 0x01, 0x44, 0, 0]);
    assert_eq!(rc(&r), tpm::RC_INITIALIZE);

    // tpm2_get_cc_attrs_tbl: TPM_PT_TOTAL_COMMANDS again, then GetCapability(
    // TPM_CAP_COMMANDS, TPM2_CC_FIRST, n); one TPMA_CC per command.
    let r = b.tpm(&probe);
    assert_eq!(be32(&r, 23), total_commands);
    let mut cmd = vec![
        0x80, 0x01, 0, 0, 0, 0x16, 0, 0, 0x01, 0x7A, 0, 0, 0, 0x02, 0, 0, 0x01, 0x1F,
    ];
    cmd.extend_from_slice(&total_commands.to_be_bytes());
    let r = b.tpm(&cmd);
    assert_eq!(rc(&r), 0);
    assert_eq!(be32(&r, 11), 2, "capability TPM_CAP_COMMANDS");
    assert_eq!(be32(&r, 15), total_commands, "every command's attributes");
    assert_eq!(r.len(), 19 + 4 * total_commands as usize);

    // tpm2_get_pcr_allocation: GetCapability(TPM_CAP_PCRS, 0, 1): SHA-256 has a bank.
    let r = b.tpm(&[
        0x80, 0x01, 0, 0, 0, 0x16, 0, 0, 0x01, 0x7A, 0, 0, 0, 0x05, 0, 0, 0, 0, 0, 0, 0, 0x01,
    ]);
    assert_eq!(rc(&r), 0);
    let banks = be32(&r, 15) as usize;
    let mut at = 19;
    let mut sha256_full = false;
    for _ in 0..banks {
        let alg = be16(&r, at);
        let size = r[at + 2] as usize;
        let select = &r[at + 3..at + 3 + size];
        if alg == 0x000B {
            sha256_full = select.iter().all(|&s| s == 0xFF);
        }
        at += 3 + size;
    }
    assert!(sha256_full, "all 24 SHA-256 PCRs allocated");

    // CONFIG_TCG_TPM2_HMAC: the null-hierarchy ECC P-256 primary (template "H" with
    // zero-size unique points), saved and flushed.
    let null_primary = [
        0x80, 0x02, 0x00, 0x00, 0x00, 0x43, 0x00, 0x00, 0x01, 0x31, // header
        0x40, 0x00, 0x00, 0x07, // TPM_RH_NULL
        0x00, 0x00, 0x00, 0x09, 0x40, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, // auth
        0x00, 0x04, 0x00, 0x00, 0x00, 0x00, // empty sensitive
        0x00, 0x1A, // template size
        0x00, 0x23, 0x00, 0x0B, 0x00, 0x03, 0x04, 0x72, 0x00, 0x00, // ECC, SHA-256, attrs
        0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, // AES-128-CFB, scheme NULL
        0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, // P-256, KDF NULL, x, y
        0x00, 0x00, // outside info
        0x00, 0x00, 0x00, 0x00, // creation PCRs
    ];
    let r = b.tpm(&null_primary);
    assert_eq!(rc(&r), 0);
    assert_eq!(be16(&r, 0), 0x8002);
    let handle = be32(&r, 10);
    assert_eq!(handle >> 24, 0x80, "a transient handle");
    // The checks of tpm2_parse_create_primary.
    let public_len = be16(&r, 18) as usize;
    let p = &r[20..20 + public_len];
    assert_eq!(&p[..10], &[0, 0x23, 0, 0x0B, 0, 0x03, 0x04, 0x72, 0, 0]);
    assert_eq!(&p[10..20], &[0, 6, 0, 0x80, 0, 0x43, 0, 0x10, 0, 3]);
    assert_eq!(be16(p, 20), 0x0010);
    assert_eq!(be16(p, 22), 32, "x is 32 bytes");
    assert_eq!(be16(p, 56), 32, "y is 32 bytes");
    assert_eq!(public_len, 90);
    // The name Linux computes and compares on every later load.
    let mut name = vec![0, 0x0B];
    name.extend_from_slice(&Sha256::digest(p));
    // It closes the parameters (parameterSize counts from after the header, handle and
    // parameterSize fields: 18 bytes); the session area follows.
    let end = be32(&r, 14) as usize + 18;
    assert_eq!(
        &r[end - 34..end],
        &name[..],
        "the name closes the parameters"
    );

    // tpm2_save_context, then tpm2_flush_context.
    let mut save = vec![0x80, 0x01, 0, 0, 0, 0x0E, 0, 0, 0x01, 0x62];
    save.extend_from_slice(&handle.to_be_bytes());
    let r = b.tpm(&save);
    assert_eq!(rc(&r), 0);
    assert!(r.len() <= 4092);
    let mut flush = vec![0x80, 0x01, 0, 0, 0, 0x0E, 0, 0, 0x01, 0x65];
    flush.extend_from_slice(&handle.to_be_bytes());
    assert_eq!(rc(&b.tpm(&flush)), 0);
}

#[test]
fn localities_other_than_zero_are_invalid_and_change_nothing() {
    let b = boot();
    let before = pcr_read(&b, 17);
    let cmd = pcr_extend(17, &[9; 32]);
    for locality in [1u8, 2, 3, 4, 0x80, 0xFF] {
        let rax = b.send_at(BUF, 8, locality, cmd.len() as u32, &cmd);
        assert_eq!(
            SvsmResultCode::from_raw(rax),
            SvsmResultCode::INVALID_PARAMETER,
            "locality {locality}"
        );
        // The request is still in the buffer: no response was written.
        assert_eq!(b.read_guest(BUF + 4, 1), [locality]);
    }
    assert_eq!(pcr_read(&b, 17), before, "no DRTM PCR moved");
}

#[test]
fn sizes_and_platform_commands_are_checked() {
    let b = boot();
    let cmd = CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17B)
        .u16(8)
        .build();
    // Larger than the transport carries.
    for size in [4088u32, 4096, 0xFFFF_FFFF] {
        let rax = b.send_at(BUF, 8, 0, size, &cmd);
        assert_eq!(
            SvsmResultCode::from_raw(rax),
            SvsmResultCode::INVALID_PARAMETER,
            "size {size}"
        );
    }
    // Platform commands other than TPM_SEND_COMMAND.
    for platform in [0u32, 1, 2, 9, 10, 11, 0xFFFF_FFFF] {
        let rax = b.send_at(BUF, platform, 0, cmd.len() as u32, &cmd);
        assert_eq!(
            SvsmResultCode::from_raw(rax),
            SvsmResultCode::UNSUPPORTED_CALL,
            "platform command {platform}"
        );
    }
    // A 4087-byte command travels (the engine answers it), and the response size is
    // written before the response.
    let mut big = vec![0u8; 4087];
    big[..10].copy_from_slice(&[0x80, 0x01, 0, 0, 0x0F, 0xF7, 0, 0, 0x01, 0x7B]);
    let r = b.tpm(&big);
    assert_ne!(rc(&r), 0);
    // Only 4 + response bytes are written back: the rest of the request stays.
    let r = b.tpm(&cmd);
    assert_eq!(r.len(), 12 + 8);
    assert_eq!(b.read_guest(BUF + 4 + 20, 8), &big[15..23]);
}

#[test]
fn buffers_outside_guest_ram_or_into_svsm_memory_are_refused() {
    let b = boot();
    let cmd = CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17B)
        .u16(8)
        .build();
    // A buffer inside SVSM memory, beyond memory, in MMIO.
    for gpa in [
        SVSM_START,
        SVSM_START + 0x1000,
        0x1000_0000,
        0xA_0000,
        u64::MAX - 8,
    ] {
        let out = b.call(VtpmCall::Cmd, gpa);
        assert_eq!(
            SvsmResultCode::from_raw(out.rax),
            SvsmResultCode::INVALID_ADDRESS,
            "buffer at {gpa:#x}"
        );
    }
    // A buffer that starts in guest RAM and runs into SVSM memory, even with a request
    // and a response that would fit before the boundary.
    let gpa = SVSM_START - 64;
    let mut head = 8u32.to_le_bytes().to_vec();
    head.push(0);
    head.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    head.extend_from_slice(&cmd);
    b.system.machine().guest_write(gpa, &head).expect("write");
    let out = b.call(VtpmCall::Cmd, gpa);
    assert_eq!(
        SvsmResultCode::from_raw(out.rax),
        SvsmResultCode::INVALID_ADDRESS
    );
    assert_eq!(b.read_guest(gpa, head.len()), head, "nothing written back");
    // The TPM still answers.
    assert_eq!(rc(&b.tpm(&cmd)), 0);
}

#[test]
fn the_ek_the_service_keeps_is_the_profile_ek_of_this_tpm() {
    let b = boot();
    let r = b.tpm(&tpm::create_primary(
        tpm::RH_ENDORSEMENT,
        &EkTemplate::RsaL1.public_template(),
    ));
    let created = tpm::parse_create_primary(&r).expect("EK");
    assert_eq!(
        created.public, b.ek,
        "the guest's EK is the one in the manifest"
    );
    // Start-up flushed its own EK: the guest's is the only transient object.
    assert_eq!(created.handle, 0x8000_0000);
}

#[test]
fn entropy_failure_fails_closed_through_the_svsm_path() {
    let b = boot();
    let digest = [3u8; 32];
    assert_eq!(rc(&b.tpm(&pcr_extend(16, &digest))), 0);
    b.fail_entropy.store(true, Ordering::SeqCst);
    let r = b.tpm(&tpm::create_primary(
        0x4000_0001,
        &EkTemplate::EccL2.public_template(),
    ));
    assert_eq!(
        r,
        tpm::FAILURE_RESPONSE,
        "TPM errors travel with RAX = SUCCESS"
    );
    b.fail_entropy.store(false, Ordering::SeqCst);
    // Every later command, the guest's Startup included.
    assert_eq!(b.tpm(&tpm::startup_clear()), tpm::FAILURE_RESPONSE);
    assert_eq!(
        b.tpm(&pcr_extend(16, &digest)),
        tpm::FAILURE_RESPONSE,
        "no command runs on a failed TPM"
    );
}
