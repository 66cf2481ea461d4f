//! `svsm-service serve` as an operator runs it: it refuses a bad policy or a missing
//! secret with the reason, serves challenges over TLS, and stops on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{emulated_measurement, policy_text, Pki, Scratch, SECRET};
use svsm_protocol::service_api::{ChallengeResponse, CHALLENGE_PATH};

fn serve(dir: &Scratch, pki: &Pki, policy: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_svsm-service"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .arg("--policy")
        .arg(dir.path(policy))
        .arg("--secrets")
        .arg(dir.path("secrets"))
        .arg("--db")
        .arg(format!("sqlite:{}", dir.path("cli.db").display()));
    cmd
}

#[test]
fn serve_refuses_bad_configuration_and_serves_good_one() {
    let dir = Scratch::new("cli");
    let pki = Pki::new(&dir);
    std::fs::write(
        dir.path("policy.toml"),
        policy_text(&dir, &emulated_measurement()),
    )
    .expect("policy");
    std::fs::write(dir.path("bad.toml"), "[snp]\nmeasurements = []\n").expect("bad policy");

    let out = serve(&dir, &pki, "bad.toml").output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");

    // No secrets directory yet.
    let out = serve(&dir, &pki, "policy.toml").output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secret \"disk-key\""), "{err}");

    std::fs::create_dir_all(dir.path("secrets")).expect("secrets");
    std::fs::write(dir.path("secrets/disk-key"), SECRET).expect("secret");
    let mut child = serve(&dir, &pki, "policy.toml")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("read") > 0,
            "exited early"
        );
        if let Some(a) = line
            .trim()
            .strip_prefix("svsm-service: listening on https://")
        {
            break a.to_string();
        }
    };
    let c: ChallengeResponse = pki
        .client()
        .post(format!("https://{addr}{CHALLENGE_PATH}"))
        .json(&serde_json::json!({}))
        .send()
        .expect("challenge")
        .json()
        .expect("body");
    assert_eq!(c.nonce.len(), 64);
    assert_eq!(c.pcr_selection, common::SELECTION);

    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("stderr");
    assert!(rest.contains("stopped"), "{rest}");
    // Nothing secret was logged.
    assert!(!rest.contains(std::str::from_utf8(SECRET).expect("text")));
}
