//! A vTPM that keeps its state between boots (sealed into a host file): the service
//! records the state generation each allowed attestation shows, and refuses a boot that
//! started from an older state file the host handed back (a rollback), with the reason
//! in the answer and the audit log. Its own process: one TPM engine per process.

mod common;

use common::{Guest, Harness, Scratch};
use svsm_service::attest::ek_id;

/// Writes owner NV so that the next commit stores a new generation.
fn change_state(g: &Guest, data: &[u8]) {
    g.write("v", data);
    g.tool("tpm2_nvwrite", &["0x1500020", "-C", "o", "-i", "v"]);
}

#[test]
fn a_rolled_back_state_is_refused() {
    let dir = Scratch::new("state");
    let state = dir.path("vtpm.state");
    let g = Guest::with_state(&state);
    let h = Harness::start(None);
    let id = ek_id(&g.read("ek.pub"));
    let generation = |h: &Harness| {
        h.rt.block_on(h.db().guest(&id))
            .expect("db")
            .expect("a record")
            .state_generation
    };

    // A new vTPM: generation 0.
    let c = h.challenge();
    h.attest(&g.request(&c)).expect("allowed");
    assert_eq!(generation(&h), Some(0));
    g.tool(
        "tpm2_nvdefine",
        &[
            "0x1500020",
            "-C",
            "o",
            "-s",
            "8",
            "-a",
            "ownerread|ownerwrite|no_da",
        ],
    );
    change_state(&g, b"old data");
    let old = std::fs::read(&state).expect("the state file");

    // Later boots start from newer states; the service remembers the newest.
    g.reboot();
    change_state(&g, b"new data");
    g.reboot();
    let c = h.challenge();
    h.attest(&g.request(&c)).expect("allowed");
    let seen = generation(&h).expect("a generation");
    assert!(seen > 0, "{seen}");

    // The host hands back the old file: the vTPM opens it (it is this launch's), but
    // its generation is older than the one the service saw.
    std::fs::write(&state, &old).expect("restore the old state");
    g.reboot();
    let c = h.challenge();
    let body = h.assert_refused(
        &c.session,
        h.attest(&g.request(&c)),
        403,
        &format!("older than generation {seen} seen before"),
    );
    assert!(body.reason.contains("rollback"), "{}", body.reason);
    assert_eq!(generation(&h), Some(seen), "a refusal never lowers it");
}
