//! `vtpm-daemon --state`: the vTPM's sealed state survives restarts, a killed writer
//! leaves a whole state, and a state that does not open stops the daemon.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::Daemon;
use svsm_verifier::ek_nv::{verify_nv_evidence, EkVerified, NvEvidence, TpmEks};
use svsm_verifier::Error;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A directory for a state file that outlives each daemon (whose own directory goes).
fn state_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vtpm-state-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("state directory");
    dir
}

fn with_state(path: &Path) -> Daemon {
    Daemon::start(&["--state", path.to_str().expect("UTF-8 path")])
}

/// Runs the daemon expecting it to refuse to start; returns its standard error.
fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vtpm-daemon"))
        .args(["--port", "0"])
        .args(args)
        .output()
        .expect("run vtpm-daemon");
    assert!(!out.status.success(), "the daemon started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const INDEX: &str = "0x1500020";

/// Defines [`INDEX`] with `size` bytes, owner read and write, outside dictionary-attack
/// protection.
fn nv_define(d: &Daemon, size: u16) {
    let size = size.to_string();
    d.tool(
        "tpm2_nvdefine",
        &[
            INDEX,
            "-C",
            "o",
            "-s",
            &size,
            "-a",
            "ownerread|ownerwrite|no_da",
        ],
    );
}

#[test]
fn the_same_tpm_after_a_restart_ek_nv_persistent_keys_and_sealed_data() {
    let dir = state_dir();
    let state = dir.join("vtpm.state");
    let secret = b"luks passphrase 42";
    let (ek_name, ek_public) = {
        let mut d = with_state(&state);
        d.tool_flush(
            "tpm2_createek",
            &["-G", "rsa", "-c", "ek.ctx", "-u", "ek.pub"],
        );
        nv_define(&d, 32);
        d.write("data", b"written before the restart");
        d.tool("tpm2_nvwrite", &[INDEX, "-C", "o", "-i", "data"]);
        d.tool_flush("tpm2_createprimary", &["-C", "o", "-c", "prim.ctx"]);
        d.tool_flush(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", "prim.ctx", "0x81000001"],
        );
        // Data sealed under a policy on PCR 16 (all zero after every start-up).
        d.tool("tpm2_pcrread", &["sha256:16", "-o", "pcr16.bin"]);
        d.tool(
            "tpm2_createpolicy",
            &[
                "--policy-pcr",
                "-l",
                "sha256:16",
                "-f",
                "pcr16.bin",
                "-L",
                "policy",
            ],
        );
        d.write("secret", secret);
        d.tool_flush(
            "tpm2_create",
            &[
                "-C",
                "0x81000001",
                "-L",
                "policy",
                "-i",
                "secret",
                "-u",
                "seal.pub",
                "-r",
                "seal.priv",
                "-c",
                "seal.ctx",
            ],
        );
        d.tool_flush(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", "seal.ctx", "0x81000002"],
        );
        let name = d.ek_name.clone().expect("the daemon names its EK");
        let public = d.read("ek.pub");
        let (status, _) = d.terminate();
        assert!(status.success());
        (name, public)
    };
    assert!(state.exists());
    let d = with_state(&state);
    assert_eq!(
        d.ek_name.as_deref(),
        Some(ek_name.as_str()),
        "the same endorsement key"
    );
    d.tool_flush(
        "tpm2_createek",
        &["-G", "rsa", "-c", "ek.ctx", "-u", "ek.pub"],
    );
    assert_eq!(d.read("ek.pub"), ek_public);
    d.tool("tpm2_nvread", &[INDEX, "-C", "o", "-s", "26", "-o", "back"]);
    assert_eq!(d.read("back"), b"written before the restart");
    let handles = d.tool("tpm2_getcap", &["handles-persistent"]);
    assert!(
        handles.contains("0x81000001") && handles.contains("0x81000002"),
        "{handles}"
    );
    d.tool_flush(
        "tpm2_unseal",
        &["-c", "0x81000002", "-p", "pcr:sha256:16", "-o", "unsealed"],
    );
    assert_eq!(d.read("unsealed"), secret);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_daemon_leaves_the_old_state_or_the_new_one() {
    let dir = state_dir();
    let state = dir.join("vtpm.state");
    let mut before = 7u64.to_be_bytes();
    {
        let d = with_state(&state);
        nv_define(&d, 8);
        d.write("v", &before);
        d.tool("tpm2_nvwrite", &[INDEX, "-C", "o", "-i", "v"]);
        // Dropped: SIGKILL.
    }
    let mut acknowledged = 0;
    for round in 1..5u64 {
        let mut d = with_state(&state);
        // Commit after commit; the daemon dies (SIGKILL) while they run.
        let tcti = d.tcti();
        let scratch = d.dir.clone();
        let writer = std::thread::spawn(move || {
            let mut written = Vec::new();
            for i in 0..100u64 {
                let value = (round * 1000 + i).to_be_bytes();
                std::fs::write(scratch.join("v"), value).unwrap();
                let ok = Command::new("tpm2_nvwrite")
                    .args([INDEX, "-C", "o", "-i", "v"])
                    .env("TPM2TOOLS_TCTI", &tcti)
                    .current_dir(&scratch)
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !ok {
                    break;
                }
                written.push(value);
            }
            written
        });
        std::thread::sleep(Duration::from_millis(300 + 150 * round));
        d.signal(rustix::process::Signal::KILL);
        let written = writer.join().unwrap();
        acknowledged += written.len();
        // It starts again: the file is one whole state, the last committed or the one
        // being committed when the daemon died.
        let d = with_state(&state);
        d.tool("tpm2_nvread", &[INDEX, "-C", "o", "-s", "8", "-o", "back"]);
        let back: [u8; 8] = d.read("back").try_into().unwrap();
        let last = written.last().copied().unwrap_or(before);
        let in_flight = (round * 1000 + written.len() as u64).to_be_bytes();
        assert!(
            back == last || back == in_flight,
            "round {round}: read {}, last acknowledged {}, {} writes",
            u64::from_be_bytes(back),
            u64::from_be_bytes(last),
            written.len()
        );
        before = back;
    }
    assert!(
        acknowledged > 0,
        "no write ever completed: the test showed nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_state_that_does_not_open_stops_the_daemon_and_remanufacture_sets_it_aside() {
    let dir = state_dir();
    let state = dir.join("vtpm.state");
    let first = {
        let d = with_state(&state);
        d.ek_name.clone().expect("an EK name")
    };
    let good = std::fs::read(&state).unwrap();
    let path = state.to_str().unwrap();
    // Corrupted, truncated, foreign: refused with the reason; the file is left alone.
    let mut corrupted = good.clone();
    corrupted[good.len() / 2] ^= 0x10;
    for (bad, why) in [
        (corrupted.clone(), "does not open under this launch's key"),
        (good[..40].to_vec(), "truncated"),
        (
            b"a swtpm tpm2-00.permall file".to_vec(),
            "not a sealed vTPM state",
        ),
    ] {
        std::fs::write(&state, &bad).unwrap();
        let err = refused(&["--state", path]);
        assert!(err.contains("cannot be used") && err.contains(why), "{err}");
        assert!(err.contains("--remanufacture"), "{err}");
        assert_eq!(
            std::fs::read(&state).unwrap(),
            bad,
            "the refused state is untouched"
        );
    }
    // The operator's explicit choice: a new TPM, the bad file kept aside.
    std::fs::write(&state, &corrupted).unwrap();
    let d = Daemon::start(&["--state", path, "--remanufacture"]);
    assert_ne!(
        d.ek_name.as_deref(),
        Some(first.as_str()),
        "a new endorsement key"
    );
    assert_eq!(
        std::fs::read(dir.join("vtpm.state.rejected")).unwrap(),
        corrupted
    );
    drop(d);
    // The engine backend keeps no state.
    let err = refused(&["--backend", "engine", "--state", path]);
    assert!(err.contains("--backend svsm"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads this boot's endorsement evidence from NV, state evidence included, and checks
/// it with the verifier, requiring at least `min_generation`.
fn verify(d: &Daemon, min_generation: Option<u64>) -> Result<EkVerified, Error> {
    for (index, file) in [
        ("0x01C00002", "rsa.der"),
        ("0x01C0000A", "ecc.der"),
        ("0x01C00100", "ca.der"),
        ("0x01C00101", "vcek.der"),
        ("0x01C00110", "report.bin"),
        ("0x01C00111", "state.bin"),
    ] {
        d.tool("tpm2_nvread", &[index, "-o", file]);
    }
    check(d, &d.read("state.bin"), min_generation)
}

/// Checks the evidence files [`verify`] read, with `state` as the state evidence.
fn check(d: &Daemon, state: &[u8], min_generation: Option<u64>) -> Result<EkVerified, Error> {
    let (rsa, ecc, ca, report) = (
        d.read("rsa.der"),
        d.read("ecc.der"),
        d.read("ca.der"),
        d.read("report.bin"),
    );
    let evidence = NvEvidence {
        rsa_ek_cert: &rsa,
        ecc_ek_cert: &ecc,
        ca_cert: &ca,
        report: &report,
        state: Some(state),
    };
    let policy = common::emulated_policy(&d.read("vcek.der"), min_generation);
    verify_nv_evidence(&policy, &evidence, TpmEks::default())
}

/// The host hands back an older sealed state: it opens (it is this launch's), but its
/// generation, bound into the boot's report, shows the rollback to a verifier that
/// remembers the generation it saw; and a state evidence swapped for another does not
/// match the report.
#[test]
fn a_rolled_back_state_is_reported_by_the_verifier() {
    let dir = state_dir();
    let state = dir.join("vtpm.state");
    let first = {
        let d = with_state(&state);
        let v = verify(&d, None).expect("a new TPM verifies");
        assert_eq!(
            v.state.map(|s| s.generation),
            Some(0),
            "manufactured at this boot"
        );
        nv_define(&d, 8);
        d.write("v", b"old data");
        d.tool("tpm2_nvwrite", &[INDEX, "-C", "o", "-i", "v"]);
        v
    };
    let old = std::fs::read(&state).unwrap();
    let seen = {
        let d = with_state(&state);
        let v = verify(&d, first.state.map(|s| s.generation)).expect("a later state verifies");
        let generation = v.state.unwrap().generation;
        assert!(generation > 0);
        d.write("v", b"new data");
        d.tool("tpm2_nvwrite", &[INDEX, "-C", "o", "-i", "v"]);
        generation
    };
    let seen = {
        // The next boot started from a newer state still; the relying party remembers it.
        let d = with_state(&state);
        let v = verify(&d, Some(seen)).expect("no rollback");
        let now = v.state.unwrap().generation;
        assert!(now > seen, "{now} after {seen}");
        now
    };
    // The host replays the old file.
    std::fs::write(&state, &old).unwrap();
    let d = with_state(&state);
    d.tool("tpm2_nvread", &[INDEX, "-C", "o", "-s", "8", "-o", "back"]);
    assert_eq!(d.read("back"), b"old data", "the old state did load");
    match verify(&d, Some(seen)) {
        Err(Error::StateRollback {
            generation: Some(g),
            minimum,
        }) => assert!(g < minimum && minimum == seen, "{g} < {minimum}"),
        other => panic!("the rollback went unseen: {:?}", other.map(|v| v.state)),
    }
    // The verifier without a memory of the generation accepts it (and prints it).
    assert!(verify(&d, None).is_ok());
    // Claiming another generation breaks the binding with the report.
    let mut forged = d.read("state.bin");
    forged[7] = forged[7].wrapping_add(5);
    assert!(matches!(check(&d, &forged, None), Err(Error::EkBinding)));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Killed VMs (no TPM2_Shutdown) after DA-protected authorization count as failures:
/// with libtpms' defaults (3 tries) three kills lock a password-protected key out. A
/// TPM the SVSM manufactures gets 32 tries and a 10-minute recovery instead.
#[test]
fn kill_and_restart_loops_do_not_lock_out_keys() {
    let dir = state_dir();
    let state = dir.join("vtpm.state");
    {
        let d = with_state(&state);
        let fixed = d.tool("tpm2_getcap", &["properties-variable"]);
        assert!(fixed.contains("TPM2_PT_MAX_AUTH_FAIL: 0x20"), "{fixed}");
        assert!(fixed.contains("TPM2_PT_LOCKOUT_INTERVAL: 0x258"), "{fixed}");
        assert!(
            fixed.contains("TPM2_PT_LOCKOUT_RECOVERY: 0x15180"),
            "{fixed}"
        );
        d.tool_flush(
            "tpm2_createprimary",
            &["-C", "o", "-p", "pw", "-c", "p.ctx"],
        );
        d.tool_flush(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", "p.ctx", "0x81000005"],
        );
    }
    for kill in 1..=5u32 {
        let mut d = with_state(&state);
        // DA-protected authorization (the key's password), then the VM dies.
        d.tool_flush(
            "tpm2_create",
            &[
                "-C",
                "0x81000005",
                "-P",
                "pw",
                "-u",
                "k.pub",
                "-r",
                "k.priv",
            ],
        );
        d.signal(rustix::process::Signal::KILL);
        let d = with_state(&state);
        let vars = d.tool("tpm2_getcap", &["properties-variable"]);
        assert!(
            vars.contains(&format!("TPM2_PT_LOCKOUT_COUNTER: 0x{kill:X}"))
                && vars.contains("inLockout:                 0"),
            "after {kill} kills:\n{vars}"
        );
    }
    // The owner can tune them and clear the counter (lockout authorization, empty).
    let d = with_state(&state);
    d.tool(
        "tpm2_dictionarylockout",
        &["-s", "-n", "5", "-t", "60", "-l", "3600"],
    );
    d.tool("tpm2_dictionarylockout", &["-c"]);
    let vars = d.tool("tpm2_getcap", &["properties-variable"]);
    assert!(
        vars.contains("TPM2_PT_LOCKOUT_COUNTER: 0x0")
            && vars.contains("TPM2_PT_MAX_AUTH_FAIL: 0x5"),
        "{vars}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
