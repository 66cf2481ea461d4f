//! The real engine (libtpms) behind the vTPM service: start-up, the endorsement keys,
//! the transport's size and locality rules, and failing closed on bad randomness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vtpm::service::{MAX_COMMAND_SIZE, REQUEST_HEADER_SIZE, TRANSPORT_BUFFER_SIZE};
use vtpm::tpm::{self, CommandBuilder, Header};
use vtpm::{EkTemplate, Engine, EngineError, EntropyError, EntropySource, LibTpms, Vtpm};

/// One engine per process: the tests take turns.
static ENGINE: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    ENGINE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The OS generator, switchable to failing by the test.
struct Switchable {
    fail: Arc<AtomicBool>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl EntropySource for Switchable {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(EntropyError);
        }
        getrandom::getrandom(buf).map_err(|_| EntropyError)
    }
}

fn os() -> Box<dyn EntropySource> {
    Box::new(Switchable {
        fail: Arc::new(AtomicBool::new(false)),
        calls: Arc::default(),
    })
}

/// Wraps a TPM command in a TPM_SEND_COMMAND request at `locality`.
fn request(locality: u8, command: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; TRANSPORT_BUFFER_SIZE];
    b[..4].copy_from_slice(&8u32.to_le_bytes());
    b[4] = locality;
    b[5..9].copy_from_slice(&(command.len() as u32).to_le_bytes());
    b[9..9 + command.len()].copy_from_slice(command);
    b
}

/// Sends `command` through the transport; returns the TPM response.
fn send(vtpm: &mut impl Vtpm, command: &[u8]) -> Vec<u8> {
    let mut b = request(0, command);
    let n = vtpm.handle_request(&mut b).expect("request accepted");
    let len = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
    assert_eq!(n, 4 + len);
    let r = b[4..4 + len].to_vec();
    assert_eq!(Header::parse(&r).unwrap().size as usize, r.len());
    r
}

fn rc(response: &[u8]) -> u32 {
    Header::parse(response).unwrap().code
}

fn get_random(n: u16) -> Vec<u8> {
    CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17B)
        .u16(n)
        .build()
}

/// GetCapability(TPM_CAP_TPM_PROPERTIES, property, 1): returns the property's value.
fn property(vtpm: &mut impl Vtpm, property: u32) -> u32 {
    let cmd = CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17A)
        .u32(6)
        .u32(property)
        .u32(1)
        .build();
    let r = send(vtpm, &cmd);
    assert_eq!(rc(&r), 0);
    // header, moreData u8, capability u32, count u32, then {property u32, value u32}.
    let at = 10 + 1 + 4 + 4;
    assert_eq!(
        u32::from_be_bytes(r[at..at + 4].try_into().unwrap()),
        property
    );
    u32::from_be_bytes(r[at + 4..at + 8].try_into().unwrap())
}

#[test]
fn starts_with_the_endorsement_keys_and_the_guest_startup_gets_initialize() {
    let _g = lock();
    let mut vtpm = vtpm::start(os()).expect("vTPM starts");
    // The guest's Startup: already done.
    let r = send(&mut vtpm, &tpm::startup_clear());
    assert_eq!(rc(&r), tpm::RC_INITIALIZE);
    // GetRandom works and returns the bytes asked for.
    let r = send(&mut vtpm, &get_random(32));
    assert_eq!(rc(&r), 0);
    assert_eq!(&r[10..12], &[0, 32]);
    assert_eq!(r.len(), 12 + 32);
    // The RSA EK: template L-1 with a 2048-bit modulus filled in.
    let ek = vtpm.ek_public().to_vec();
    let template = EkTemplate::RsaL1.public_template();
    assert_eq!(ek.len(), template.len());
    assert_eq!(
        &ek[..template.len() - 256],
        &template[..template.len() - 256]
    );
    assert!(ek[ek.len() - 256..].iter().any(|&b| b != 0));
    // The ECC EK: template L-2 with a P-256 point filled in.
    let ecc = vtpm.endorsement_key(EkTemplate::EccL2);
    let t = EkTemplate::EccL2.public_template();
    assert_eq!(ecc.len(), t.len());
    assert_eq!(&ecc[..t.len() - 68], &t[..t.len() - 68]);
    assert!(ecc[t.len() - 66..t.len() - 34].iter().any(|&b| b != 0));
    // No object slot stays taken: no transient handles (GetCapability(HANDLES, 0x80000000)).
    let cmd = CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17A)
        .u32(1)
        .u32(0x8000_0000)
        .u32(16)
        .build();
    let r = send(&mut vtpm, &cmd);
    assert_eq!(rc(&r), 0);
    assert_eq!(&r[15..19], &[0, 0, 0, 0], "no transient objects loaded");
    // Nothing on disk.
    assert!(!std::path::Path::new("NVChip").exists());
}

#[test]
fn advertised_sizes_fit_the_transport() {
    let _g = lock();
    let mut vtpm = vtpm::start(os()).expect("vTPM starts");
    // TPM_PT_MAX_COMMAND_SIZE, TPM_PT_MAX_RESPONSE_SIZE.
    let cmd = property(&mut vtpm, 0x11E);
    let rsp = property(&mut vtpm, 0x11F);
    assert!(cmd as usize <= MAX_COMMAND_SIZE, "max command {cmd}");
    assert!(rsp as usize <= 4092, "max response {rsp}");
    assert_eq!(cmd, vtpm::libtpms::ENGINE_BUFFER_SIZE);
}

#[test]
fn oversized_and_foreign_locality_requests_are_refused_without_effect() {
    let _g = lock();
    let mut vtpm = vtpm::start(os()).expect("vTPM starts");
    for locality in 1..=4u8 {
        let mut b = request(locality, &get_random(8));
        let before = b.clone();
        assert_eq!(
            vtpm.handle_request(&mut b),
            Err(vtpm::VtpmError::Locality(locality))
        );
        assert_eq!(b, before, "a refused request leaves the buffer alone");
    }
    let mut b = request(0, &get_random(8));
    b[5..9].copy_from_slice(&(MAX_COMMAND_SIZE as u32 + 1).to_le_bytes());
    assert_eq!(
        vtpm.handle_request(&mut b),
        Err(vtpm::VtpmError::CommandTooLarge(
            MAX_COMMAND_SIZE as u32 + 1
        ))
    );
    // A 4087-byte command is carried (and the engine judges it).
    let mut big = vec![0u8; MAX_COMMAND_SIZE];
    big[..10].copy_from_slice(&[0x80, 0x01, 0, 0, 0x0F, 0xF7, 0, 0, 0x01, 0x7B]);
    let r = send(&mut vtpm, &big);
    assert_ne!(rc(&r), 0);
    assert!(!vtpm.is_failed());
    // Other platform commands are not supported.
    let mut b = request(0, &get_random(8));
    b[..4].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(
        vtpm.handle_request(&mut b),
        Err(vtpm::VtpmError::UnsupportedCommand(1))
    );
    // A buffer shorter than the size it alleges.
    let mut short = request(0, &get_random(8))[..REQUEST_HEADER_SIZE + 5].to_vec();
    assert_eq!(
        vtpm.handle_request(&mut short),
        Err(vtpm::VtpmError::Truncated)
    );
    // And the TPM still works.
    assert_eq!(rc(&send(&mut vtpm, &get_random(8))), 0);
}

#[test]
fn one_engine_per_process() {
    let _g = lock();
    let first = LibTpms::power_on(os()).expect("first engine");
    assert_eq!(LibTpms::power_on(os()).err(), Some(EngineError::Busy));
    drop(first);
    let again = LibTpms::power_on(os()).expect("engine again after the first is gone");
    assert!(!again.failed());
}

#[test]
fn start_up_fails_closed_without_entropy() {
    let _g = lock();
    let fail = Arc::new(AtomicBool::new(true));
    let source = Box::new(Switchable {
        fail: fail.clone(),
        calls: Arc::default(),
    });
    let err = vtpm::start(source).expect_err("no vTPM without entropy");
    assert_eq!(
        err,
        vtpm::StartupError::Engine(EngineError::Entropy),
        "{err}"
    );
    // The failed start released the engine.
    assert!(vtpm::start(os()).is_ok());
}

#[test]
fn entropy_failure_while_running_latches_failure_mode() {
    let _g = lock();
    let fail = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let source = Box::new(Switchable {
        fail: fail.clone(),
        calls: calls.clone(),
    });
    let mut vtpm = vtpm::start(source).expect("vTPM starts");
    let before = calls.load(Ordering::SeqCst);
    fail.store(true, Ordering::SeqCst);
    // Key generation draws on OpenSSL's randomness, which now fails: the result (which
    // libtpms would have computed from its rand() fallback) is withheld.
    let create = tpm::create_primary(0x4000_0001, &EkTemplate::EccL2.public_template());
    let r = send(&mut vtpm, &create);
    assert!(
        calls.load(Ordering::SeqCst) > before,
        "the command asked for entropy"
    );
    assert_eq!(r, tpm::FAILURE_RESPONSE);
    assert!(vtpm.is_failed());
    // Entropy comes back, but the TPM stays failed: every command, Startup included.
    fail.store(false, Ordering::SeqCst);
    for command in [get_random(8), tpm::startup_clear(), create] {
        assert_eq!(send(&mut vtpm, &command), tpm::FAILURE_RESPONSE);
    }
}

#[test]
fn the_engine_describes_itself_as_a_tpm_2_0() {
    let _g = lock();
    let engine = LibTpms::power_on(os()).expect("engine");
    let info = LibTpms::info().expect("libtpms describes itself");
    assert!(info.contains("\"family\":\"2.0\""), "{info}");
    assert!(info.contains("\"manufacturer\":\"id:00001014\""), "{info}");
    drop(engine);
}

#[test]
fn openssl_uses_aes_ni_where_the_cpu_has_it() {
    let _g = lock();
    let engine = LibTpms::power_on(os()).expect("engine");
    assert_eq!(
        engine.uses_aes_ni(),
        std::arch::is_x86_feature_detected!("aes")
    );
}

#[test]
fn malformed_tpm_commands_get_whole_responses() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let _g = lock();
    let vtpm = std::cell::RefCell::new(vtpm::start(os()).expect("vTPM starts"));
    // Real command codes with arbitrary parameters, sizes that may lie, any tag.
    let codes = prop_oneof![
        Just(0x17Au32), // GetCapability
        Just(0x17B),    // GetRandom
        Just(0x182),    // PCR_Extend
        Just(0x17E),    // PCR_Read
        Just(0x131),    // CreatePrimary
        Just(0x15D),    // Sign
        Just(0x158),    // Quote
        Just(0x14E),    // NV_Read
        Just(0x161),    // ContextLoad
        Just(0x165),    // FlushContext
        any::<u32>(),
    ];
    let strategy = (
        prop_oneof![Just(0x8001u16), Just(0x8002), any::<u16>()],
        codes,
        proptest::collection::vec(any::<u8>(), 0..600),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    runner
        .run(&strategy, |(tag, code, body, honest)| {
            let mut cmd = tag.to_be_bytes().to_vec();
            let size = if honest {
                10 + body.len() as u32
            } else {
                10 + body.len() as u32 / 2
            };
            cmd.extend_from_slice(&size.to_be_bytes());
            cmd.extend_from_slice(&code.to_be_bytes());
            cmd.extend_from_slice(&body);
            let r = send(&mut *vtpm.borrow_mut(), &cmd);
            prop_assert!(r.len() >= 10 && r.len() <= 4092);
            Ok(())
        })
        .expect("every command answered with a whole response");
    let mut vtpm = vtpm.into_inner();
    assert!(!vtpm.is_failed(), "malformed commands do not break the TPM");
    assert_eq!(rc(&send(&mut vtpm, &get_random(8))), 0);
}

/// GetCapability(TPM_CAP_COMMANDS, code, 1): whether the TPM lists command `code`.
fn implements_command(vtpm: &mut impl Vtpm, code: u32) -> bool {
    let cmd = CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17A)
        .u32(2)
        .u32(code)
        .u32(1)
        .build();
    let r = send(vtpm, &cmd);
    assert_eq!(rc(&r), 0);
    // header, moreData u8, capability u32, count u32, then TPMA_CC (index in bits 0..15).
    let count = u32::from_be_bytes(r[15..19].try_into().unwrap());
    count == 1 && u32::from_be_bytes(r[19..23].try_into().unwrap()) & 0xFFFF == code
}

#[test]
fn runs_revision_1_83_with_the_default_v1_profile() {
    let _g = lock();
    let engine = LibTpms::power_on(os()).expect("powers on");
    let profile = engine
        .active_profile()
        .expect("libtpms reports its profile");
    assert!(
        profile.starts_with(r#"{"ActiveProfile":{"Name":"default-v1","StateFormatLevel":"#),
        "{profile}"
    );
    let mut vtpm = vtpm::Service::start(engine).expect("starts");
    // TPM_PT_REVISION: 1.83 or later.
    let revision = property(&mut vtpm, 0x102);
    assert!(revision >= 183, "TPM2_PT_REVISION {revision}");
    // Commands the "null" profile (libtpms 0.9's set) lacks: TPM2_ECC_Encrypt (0x199),
    // TPM2_PolicyCapability (0x19B).
    assert!(implements_command(&mut vtpm, 0x199));
    assert!(implements_command(&mut vtpm, 0x19B));
    // And what Linux, OVMF and tpm2-tools rely on is still there: PCR_Extend (0x182),
    // CreatePrimary (0x131), Quote (0x158), NV_Read (0x14E), HierarchyChangeAuth (0x129).
    for code in [0x182, 0x131, 0x158, 0x14E, 0x129] {
        assert!(implements_command(&mut vtpm, code), "command {code:#x}");
    }
}

/// The persistent handles GetCapability(TPM_CAP_HANDLES) lists.
fn persistent_handles(vtpm: &mut impl Vtpm) -> Vec<u32> {
    let r = send(vtpm, &tpm::get_handles(tpm::PERSISTENT_FIRST, 64));
    tpm::parse_handles(&r).expect("a handle list").1
}

/// Creates a primary key under the owner and makes it persistent at `handle`.
fn persist_primary(vtpm: &mut impl Vtpm, handle: u32) {
    let template = EkTemplate::EccL2.public_template();
    let r = send(vtpm, &tpm::create_primary(tpm::RH_OWNER, &template));
    let created = tpm::parse_create_primary(&r).expect("CreatePrimary under the owner");
    let evict = CommandBuilder::new(tpm::ST_SESSIONS, tpm::CC_EVICT_CONTROL)
        .u32(tpm::RH_OWNER)
        .u32(created.handle)
        .password_auth()
        .u32(handle)
        .build();
    assert_eq!(rc(&send(vtpm, &evict)), 0);
    assert_eq!(rc(&send(vtpm, &tpm::flush_context(created.handle))), 0);
}

/// TPM2_Clear with the (empty) lockout authorization.
fn clear() -> Vec<u8> {
    CommandBuilder::new(tpm::ST_SESSIONS, tpm::CC_CLEAR)
        .u32(0x4000_000A)
        .password_auth()
        .build()
}

/// TPM2_Clear evicts the owner's persistent objects (TPM 2.0 Part 3, TPM2_Clear). The
/// engine alone does not (libtpms 0.10.2, issue #626): the service completes it. When a
/// fixed engine is pinned, the first half fails and the workaround can go.
#[test]
fn clear_evicts_persistent_objects_though_libtpms_0_10_2_does_not() {
    let _g = lock();
    let mut vtpm = vtpm::start(os()).expect("vTPM starts");
    persist_primary(&mut vtpm, 0x8100_0001);
    persist_primary(&mut vtpm, 0x8101_0001);
    assert_eq!(persistent_handles(&mut vtpm), [0x8100_0001, 0x8101_0001]);
    // The engine by itself.
    let mut command = clear();
    let engine = vtpm.engine_mut();
    engine.execute(0, &mut command).expect("Clear runs");
    assert_eq!(rc(engine.response()), 0);
    let still_there = persistent_handles(&mut vtpm) == [0x8100_0001, 0x8101_0001];
    assert_eq!(
        still_there,
        vtpm.engine_mut().clear_keeps_persistent_objects(),
        "the engine's Clear behaviour changed: update LibTpms::clear_keeps_persistent_objects"
    );
    // Through the service: the guest sees Clear's own response, and the objects are gone.
    let r = send(&mut vtpm, &clear());
    assert_eq!(rc(&r), 0);
    assert_eq!(&r[..2], &tpm::ST_SESSIONS.to_be_bytes());
    assert_eq!(persistent_handles(&mut vtpm), Vec::<u32>::new());
    assert!(!vtpm.is_failed());
}

mod persistence {
    //! The permanent state kept between power cycles through a sealed store.

    use super::*;
    use vtpm::state::{BlobStore, KeySelection, KeySource, SealedStore, StateError};
    use vtpm::StartupError;
    use zeroize::Zeroizing;

    /// A host store in memory, shared across power cycles; can be told to fail.
    #[derive(Clone, Default)]
    struct Host {
        blob: Arc<Mutex<Option<Vec<u8>>>>,
        fail: Arc<AtomicBool>,
        stores: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl BlobStore for Host {
        fn load(&mut self) -> Result<Option<Vec<u8>>, StateError> {
            Ok(self.blob.lock().unwrap().clone())
        }
        fn store(&mut self, blob: &[u8]) -> Result<(), StateError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(StateError::Store);
            }
            self.stores.fetch_add(1, Ordering::SeqCst);
            *self.blob.lock().unwrap() = Some(blob.to_vec());
            Ok(())
        }
    }

    /// Keys as a launch derives them: from a per-launch secret.
    struct Launch(u8);

    impl KeySource for Launch {
        fn current(&self) -> KeySelection {
            KeySelection {
                fields: 0x29,
                vmpl: 0,
                guest_svn: 0,
                tcb_version: 8,
            }
        }
        fn key(&mut self, _s: &KeySelection) -> Result<Zeroizing<[u8; 32]>, StateError> {
            Ok(Zeroizing::new([self.0; 32]))
        }
        fn nonce(&mut self) -> Result<[u8; 12], StateError> {
            let mut n = [0u8; 12];
            getrandom::getrandom(&mut n).map_err(|_| StateError::Entropy)?;
            Ok(n)
        }
    }

    fn boot(host: &Host, launch: u8) -> Result<vtpm::Service<LibTpms>, StartupError> {
        vtpm::start_with_state(
            os(),
            Box::new(SealedStore::new(host.clone(), Launch(launch))),
        )
    }

    const INDEX: u32 = 0x0150_0001;

    fn nv_define(vtpm: &mut impl Vtpm) -> u32 {
        // OWNERWRITE | OWNERREAD | NO_DA, 32 bytes.
        let public = CommandBuilder::new(0, 0) // scratch: only its body is used
            .u32(INDEX)
            .u16(0x000B)
            .u32(0x0202_0002)
            .u16(0)
            .u16(32)
            .build()[10..]
            .to_vec();
        let cmd = CommandBuilder::new(tpm::ST_SESSIONS, 0x12A)
            .u32(tpm::RH_OWNER)
            .password_auth()
            .u16(0)
            .sized(&public)
            .build();
        rc(&send(vtpm, &cmd))
    }

    fn nv_write(vtpm: &mut impl Vtpm, data: &[u8]) -> u32 {
        let cmd = CommandBuilder::new(tpm::ST_SESSIONS, 0x137)
            .u32(tpm::RH_OWNER)
            .u32(INDEX)
            .password_auth()
            .sized(data)
            .u16(0)
            .build();
        rc(&send(vtpm, &cmd))
    }

    fn nv_read(vtpm: &mut impl Vtpm, len: u16) -> Option<Vec<u8>> {
        let cmd = CommandBuilder::new(tpm::ST_SESSIONS, 0x14E)
            .u32(tpm::RH_OWNER)
            .u32(INDEX)
            .password_auth()
            .u16(len)
            .u16(0)
            .build();
        let r = send(vtpm, &cmd);
        (rc(&r) == 0).then(|| r[16..16 + usize::from(len)].to_vec())
    }

    #[test]
    fn the_tpm_survives_a_power_cycle_and_pcrs_start_fresh() {
        let _g = lock();
        let host = Host::default();
        let (ek, ecc) = {
            let mut vtpm = boot(&host, 1).expect("first boot manufactures");
            assert!(
                host.blob.lock().unwrap().is_some(),
                "the new TPM is stored at once"
            );
            assert_eq!(nv_define(&mut vtpm), 0);
            assert_eq!(nv_write(&mut vtpm, b"kept across boots"), 0);
            persist_primary(&mut vtpm, 0x8100_0002);
            let pcr16 = CommandBuilder::new(tpm::ST_SESSIONS, 0x182)
                .u32(16)
                .password_auth()
                .u32(1)
                .u16(0x000B)
                .bytes(&[0x11; 32])
                .build();
            assert_eq!(rc(&send(&mut vtpm, &pcr16)), 0);
            (
                vtpm.ek_public().to_vec(),
                vtpm.endorsement_key(EkTemplate::EccL2).to_vec(),
            )
        };
        let blob = host.blob.lock().unwrap().clone().unwrap();
        assert!(
            !blob.windows(17).any(|w| w == b"kept across boots"),
            "the host sees ciphertext"
        );
        let mut vtpm = boot(&host, 1).expect("second boot loads the state");
        assert_eq!(vtpm.ek_public(), &ek[..], "the same RSA EK");
        assert_eq!(
            vtpm.endorsement_key(EkTemplate::EccL2),
            &ecc[..],
            "the same ECC EK"
        );
        assert_eq!(
            nv_read(&mut vtpm, 17).as_deref(),
            Some(&b"kept across boots"[..])
        );
        assert_eq!(persistent_handles(&mut vtpm), [0x8100_0002]);
        // PCR 16 is back to zero: PCRs are not part of the permanent state.
        let read = CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17E)
            .u32(1)
            .u16(0x000B)
            .bytes(&[3, 0, 0, 1])
            .build();
        let r = send(&mut vtpm, &read);
        assert_eq!(&r[r.len() - 32..], &[0u8; 32]);
    }

    #[test]
    fn another_launch_or_a_corrupted_state_is_refused_and_nothing_is_replaced() {
        let _g = lock();
        let host = Host::default();
        drop(boot(&host, 1).expect("manufactures"));
        let kept = host.blob.lock().unwrap().clone().unwrap();
        let stores = host.stores.load(Ordering::SeqCst);
        assert_eq!(
            boot(&host, 2).err(),
            Some(StartupError::Engine(EngineError::State(
                StateError::Authentication
            )))
        );
        let mut corrupt = kept.clone();
        corrupt[200] ^= 0x40;
        *host.blob.lock().unwrap() = Some(corrupt);
        assert_eq!(
            boot(&host, 1).err(),
            Some(StartupError::Engine(EngineError::State(
                StateError::Authentication
            )))
        );
        *host.blob.lock().unwrap() = Some(kept[..100].to_vec());
        assert_eq!(
            boot(&host, 1).err(),
            Some(StartupError::Engine(EngineError::State(
                StateError::Authentication
            )))
        );
        *host.blob.lock().unwrap() = Some(b"a libtpms NVChip file".to_vec());
        assert_eq!(
            boot(&host, 1).err(),
            Some(StartupError::Engine(EngineError::State(
                StateError::Foreign
            )))
        );
        // Nothing was stored over the kept state by any refused boot.
        assert_eq!(host.stores.load(Ordering::SeqCst), stores);
        *host.blob.lock().unwrap() = Some(kept);
        assert!(boot(&host, 1).is_ok());
    }

    #[test]
    fn a_failed_store_fails_the_command_and_the_tpm_stays_failed() {
        let _g = lock();
        let host = Host::default();
        let mut vtpm = boot(&host, 1).expect("manufactures");
        assert_eq!(nv_define(&mut vtpm), 0);
        let kept = host.blob.lock().unwrap().clone();
        host.fail.store(true, Ordering::SeqCst);
        assert_eq!(nv_write(&mut vtpm, b"lost"), tpm::RC_FAILURE);
        assert!(vtpm.is_failed());
        host.fail.store(false, Ordering::SeqCst);
        assert_eq!(rc(&send(&mut vtpm, &get_random(8))), tpm::RC_FAILURE);
        // The host still has the previous generation.
        assert_eq!(*host.blob.lock().unwrap(), kept);
        drop(vtpm);
        let mut again = boot(&host, 1).expect("the previous state loads");
        assert_eq!(
            nv_read(&mut again, 4),
            None,
            "the index exists, never written"
        );
    }
}
