//! The attestation level of `cargo xtask test`: the `svsm-verify` command line on a real
//! AMD Milan report and on the evidence the end-to-end suite (tests/tests/attest_e2e.rs)
//! left behind, each once as it is and once tampered, where the tool must fail and name
//! the broken link.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cargo;

/// Where the verifier's test data lives.
const MILAN: &str = "igvm/verifier/tests/data";
/// The Milan report's launch measurement.
const MILAN_MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b5\
                                 79ea158d3e1a0dc39b2c60bd95b9c480cd81841f";

pub(crate) fn verify_cmd(args: &[String]) -> Command {
    let mut cmd = cargo(&[
        "run",
        "--quiet",
        "-p",
        "svsm-verifier",
        "--bin",
        "svsm-verify",
        "--",
    ]);
    cmd.args(args);
    cmd
}

/// Runs `svsm-verify` and requires success.
pub(crate) fn expect_pass(what: &str, args: &[String]) -> Result<()> {
    let out = verify_cmd(args)
        .output()
        .with_context(|| format!("{what}: cannot run svsm-verify"))?;
    if !out.status.success() {
        bail!(
            "{what}: svsm-verify failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("xtask: attest: {what}: passed");
    Ok(())
}

/// Runs `svsm-verify` and requires a failure whose message names `link`.
fn expect_fail(what: &str, args: &[String], link: &str) -> Result<()> {
    let out = verify_cmd(args)
        .output()
        .with_context(|| format!("{what}: cannot run svsm-verify"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !stderr.contains(link) {
        bail!(
            "{what}: expected a failure naming {link:?}, got {}: {stderr}",
            out.status
        );
    }
    println!("xtask: attest: {what}: rejected ({})", stderr.trim());
    Ok(())
}

fn s(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_string()).collect()
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::read_to_string(&p)
        .map(|t| t.trim().to_string())
        .with_context(|| format!("cannot read {}", p.display()))
}

/// `svsm-verify ek` on the NV evidence the `ek_evidence` suite left: accepted with the
/// test chain and the measurement, refused without a measurement, with another one, with
/// AMD's chain, and with an EK that is not the certified one.
fn ek_checks(target: &Path, milan: &dyn Fn(&str) -> String) -> Result<()> {
    let dir = target.join("tmp").join("ek-evidence");
    if !dir.join("0x01C00110.bin").exists() {
        bail!(
            "no NV evidence in {}: the ek_evidence suite did not run before this step",
            dir.display()
        );
    }
    let measurement = read(&dir, "measurement.hex")?;
    let ek = |measurement: Option<&str>, chain: (&str, &str, &str), rsa_pub: &str| {
        let mut a = s(&["ek"]);
        for (flag, file) in [
            ("--rsa-ek-cert", "0x01C00002.der"),
            ("--ecc-ek-cert", "0x01C0000A.der"),
            ("--ca-cert", "0x01C00100.der"),
            ("--report", "0x01C00110.bin"),
            ("--ek-ecc-public", "ek-ecc.pub"),
        ] {
            a.push(flag.into());
            a.push(path(&dir, file));
        }
        a.extend(["--ek-rsa-public".into(), path(&dir, rsa_pub)]);
        a.extend(["--vcek".into(), chain.0.to_string()]);
        a.extend(["--ask".into(), chain.1.to_string()]);
        a.extend(["--ark".into(), chain.2.to_string()]);
        if let Some(m) = measurement {
            a.extend(["--measurement".into(), m.to_string()]);
        }
        a
    };
    let (vcek, ask, ark) = (
        path(&dir, "0x01C00101.der"),
        path(&dir, "ask.pem"),
        path(&dir, "ark.pem"),
    );
    let test = (vcek.as_str(), ask.as_str(), ark.as_str());
    expect_pass(
        "NV endorsement evidence, test chain",
        &ek(Some(&measurement), test, "ek-rsa.pub"),
    )?;
    expect_fail(
        "NV endorsement evidence without a measurement",
        &ek(None, test, "ek-rsa.pub"),
        "launch measurement: none given",
    )?;
    let mut wrong = measurement.clone();
    wrong.replace_range(0..2, if wrong.starts_with("00") { "01" } else { "00" });
    expect_fail(
        "NV endorsement evidence, other measurement",
        &ek(Some(&wrong), test, "ek-rsa.pub"),
        "launch measurement",
    )?;
    let amd = (milan("vcek.der"), milan("ask.pem"), milan("ark.pem"));
    expect_fail(
        "NV endorsement evidence against AMD's chain",
        &ek(Some(&measurement), (&amd.0, &amd.1, &amd.2), "ek-rsa.pub"),
        "report signature",
    )?;
    expect_fail(
        "NV endorsement evidence, the TPM presents another EK",
        &ek(Some(&measurement), test, "ek-ecc.pub"),
        "certifies another key",
    )?;
    keylime_checks(&dir, &measurement)
}

/// The Keylime `ek_check_script` (scripts/keylime/ek_check_svsm.sh) with the environment
/// Keylime's tenant gives it: accepts the registered RSA EK, refuses a certificate that
/// is not the SVSM's, another EK, and a missing measurement.
fn keylime_checks(dir: &Path, measurement: &str) -> Result<()> {
    let agent = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
    let evidence = dir.join("keylime");
    let agent_dir = evidence.join(agent);
    std::fs::create_dir_all(&agent_dir)?;
    for name in [
        "0x01C00002.der",
        "0x01C0000A.der",
        "0x01C00100.der",
        "0x01C00101.der",
        "0x01C00110.bin",
    ] {
        std::fs::copy(dir.join(name), agent_dir.join(name))
            .with_context(|| format!("cannot copy {name}"))?;
    }
    let file =
        |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("cannot read {name}"));
    let verify = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("debug")
        .join("svsm-verify");
    let run =
        |ek_cert: &[u8], ek_tpm: &[u8], measurement: Option<&str>| -> Result<(bool, String)> {
            let mut cmd = Command::new("scripts/keylime/ek_check_svsm.sh");
            cmd.env("AGENT_UUID", agent)
                .env("EK_CERT", base64(ek_cert))
                .env("EK_TPM", base64(ek_tpm))
                .env("SVSM_EVIDENCE_DIR", &evidence)
                .env("SVSM_ASK", dir.join("ask.pem"))
                .env("SVSM_ARK", dir.join("ark.pem"))
                .env("SVSM_VERIFY", &verify)
                .env_remove("SVSM_MEASUREMENT");
            if let Some(m) = measurement {
                cmd.env("SVSM_MEASUREMENT", m);
            }
            let out = cmd
                .output()
                .context("cannot run scripts/keylime/ek_check_svsm.sh")?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok((out.status.success(), text))
        };
    let (rsa_cert, ecc_cert) = (file("0x01C00002.der")?, file("0x01C0000A.der")?);
    let (rsa, ecc) = (file("ek-rsa.pub")?, file("ek-ecc.pub")?);
    // (what, EK_CERT, EK_TPM, SVSM_MEASUREMENT, accepted, what the output says)
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], Option<&'a str>, bool, &'a str);
    let cases: [Case<'_>; 5] = [
        (
            "RSA EK registered",
            &rsa_cert,
            &rsa,
            Some(measurement),
            true,
            "evidence: OK",
        ),
        (
            "ECC EK registered",
            &ecc_cert,
            &ecc,
            Some(measurement),
            true,
            "evidence: OK",
        ),
        (
            "a certificate the SVSM did not write",
            &rsa_cert[..rsa_cert.len() - 1],
            &rsa,
            Some(measurement),
            false,
            "not one the SVSM wrote",
        ),
        (
            "another EK than the certified one",
            &rsa_cert,
            &ecc,
            Some(measurement),
            false,
            "certifies another key",
        ),
        (
            "no measurement",
            &rsa_cert,
            &rsa,
            None,
            false,
            "SVSM_MEASUREMENT",
        ),
    ];
    for (what, cert, tpm, m, pass, needle) in cases {
        let (ok, text) = run(cert, tpm, m)?;
        if ok != pass || !text.contains(needle) {
            bail!("keylime ek_check_script, {what}: exit ok={ok}, expected {pass} and {needle:?}:\n{text}");
        }
        println!(
            "xtask: attest: keylime ek_check_script, {what}: {}",
            if ok { "accepted" } else { "refused" }
        );
    }
    Ok(())
}

/// Standard base64 (RFC 4648) with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The checks; run after the host tests.
pub fn cli_checks() -> Result<()> {
    println!("xtask: == attestation CLI ==");
    let milan = |name: &str| format!("{MILAN}/{name}");
    let report_args = |measurement: &str| {
        let mut a = s(&["report", "--report"]);
        a.extend([
            milan("report.bin"),
            "--vcek".into(),
            milan("vcek.der"),
            "--ask".into(),
            milan("ask.pem"),
            "--ark".into(),
            milan("ark.pem"),
            "--measurement".into(),
            measurement.into(),
        ]);
        a
    };
    expect_pass(
        "real Milan report and AMD chain",
        &report_args(MILAN_MEASUREMENT),
    )?;
    let mut wrong = MILAN_MEASUREMENT.to_string();
    wrong.replace_range(0..2, "00");
    expect_fail(
        "Milan report, other measurement",
        &report_args(&wrong),
        "launch measurement",
    )?;

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("tmp").join("attest-evidence");
    if !dir.join("report.bin").exists() {
        bail!(
            "no evidence in {}: the attest_e2e suite did not run before this step",
            dir.display()
        );
    }
    let nonce = read(&dir, "nonce.hex")?;
    let measurement = read(&dir, "measurement.hex")?;
    let pcrs = read(&dir, "pcrs.txt")?;
    let full = |nonce: &str, vcek: &[String]| {
        let mut a = s(&["full", "--report"]);
        a.push(path(&dir, "report.bin"));
        a.extend(vcek.iter().cloned());
        for (flag, file) in [
            ("--manifest", "manifest.bin"),
            ("--ak-public", "ak.pub"),
            ("--challenge", "challenge"),
            ("--activated-secret", "activated.bin"),
            ("--quote", "quote.bin"),
            ("--quote-signature", "quote.sig"),
        ] {
            a.push(flag.into());
            a.push(path(&dir, file));
        }
        a.extend(["--nonce".into(), nonce.to_string()]);
        a.extend(["--measurement".into(), measurement.clone()]);
        for pcr in pcrs.lines() {
            a.extend(["--pcr".into(), pcr.to_string()]);
        }
        a
    };
    let chain = vec![
        "--vcek".into(),
        path(&dir, "vcek.der"),
        "--ask".into(),
        path(&dir, "ask.pem"),
        "--ark".into(),
        path(&dir, "ark.pem"),
    ];
    let key = vec!["--vcek-key".into(), path(&dir, "vcek.pub.pem")];
    expect_pass(
        "emulated SVSM attestation, test chain",
        &full(&nonce, &chain),
    )?;
    expect_pass(
        "emulated SVSM attestation, trusted VCEK key",
        &full(&nonce, &key),
    )?;
    let mut other = nonce.clone();
    other.replace_range(0..2, if other.starts_with("00") { "01" } else { "00" });
    expect_fail(
        "emulated SVSM attestation, another nonce",
        &full(&other, &chain),
        "REPORT_DATA",
    )?;
    // The Milan chain does not vouch for the emulated PSP's key.
    let milan_chain = vec![
        "--vcek".into(),
        milan("vcek.der"),
        "--ask".into(),
        milan("ask.pem"),
        "--ark".into(),
        milan("ark.pem"),
    ];
    expect_fail(
        "emulated report against AMD's chain",
        &full(&nonce, &milan_chain),
        "report signature",
    )?;
    // The host's table cannot bring its own root: with AMD's ARK pinned it fails.
    let table_amd_root = vec![
        "--cert-table".into(),
        path(&dir, "certs.bin"),
        "--ark".into(),
        milan("ark.pem"),
    ];
    expect_fail(
        "emulated certificates against AMD's root",
        &full(&nonce, &table_amd_root),
        "certificate chain",
    )?;
    // The challenge step, from a services manifest and from the bare EK that
    // ATTEST_SINGLE_SERVICE returns: both name the same EK.
    let challenge = |what: &str, manifest: &str, single: bool, out: &str| {
        let mut a = s(&["challenge", "--manifest"]);
        a.push(path(&dir, manifest));
        a.extend(["--ak-public".into(), path(&dir, "ak.pub")]);
        a.extend(["--out-dir".into(), path(&dir, out)]);
        if single {
            a.push("--single-service".into());
        }
        expect_pass(what, &a)
    };
    challenge(
        "challenge from the services manifest",
        "manifest.bin",
        false,
        "challenge-services",
    )?;
    challenge(
        "challenge from the single-service EK",
        "single-manifest.bin",
        true,
        "challenge-single",
    )?;
    let ek_name = |out: &str| -> Result<String> {
        let text = read(&dir.join(out), "challenge")?;
        let line = text.lines().find(|l| l.starts_with("ek_name="));
        Ok(line.unwrap_or_default().to_string())
    };
    if ek_name("challenge-services")? != ek_name("challenge-single")?
        || ek_name("challenge-single")?.len() <= "ek_name=".len()
    {
        bail!("the two challenges name different EKs");
    }
    for file in ["credential", "id_object", "encrypted_secret"] {
        if !dir.join("challenge-single").join(file).exists() {
            bail!("the challenge step wrote no {file}");
        }
    }
    let mut a = s(&["challenge", "--single-service", "--manifest"]);
    a.push(path(&dir, "manifest.bin"));
    a.extend(["--ak-public".into(), path(&dir, "ak.pub")]);
    a.extend(["--out-dir".into(), path(&dir, "challenge-wrong")]);
    expect_fail(
        "a services manifest taken for a bare EK",
        &a,
        "TPM structure",
    )?;
    // The audit's finding: without --measurement, `full` must refuse unless told not to.
    let mut unmeasured = full(&nonce, &chain);
    let at = unmeasured
        .iter()
        .position(|a| a == "--measurement")
        .context("no --measurement")?;
    unmeasured.drain(at..at + 2);
    expect_fail(
        "full attestation without a measurement",
        &unmeasured,
        "launch measurement: none given",
    )?;
    unmeasured.push("--no-measurement-check".into());
    expect_pass(
        "full attestation, measurement explicitly unchecked",
        &unmeasured,
    )?;
    ek_checks(&target, &milan)?;
    expect_fail(
        "bad command line",
        &s(&[
            "report",
            "--report",
            "/nonexistent/report.bin",
            "--vcek-key",
            "x",
        ]),
        "cannot read",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_rfc4648() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(super::base64(&[0xFB, 0xFF]), "+/8=");
    }
}
