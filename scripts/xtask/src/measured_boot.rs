//! The Linux-guest level's measured-boot checks on the guest's real TCG event log (the
//! guest prints it, `eventlog-data`, with its boot PCRs, `pcrs:<bank>`):
//! 1. `svsm-verify eventlog` and tpm2-tools' `tpm2_eventlog` read the same events (PCR,
//!    type, every digest) and replay them to the same PCR values in every bank;
//! 2. the replay equals what the guest's `tpm2_pcrread` read, in every bank it reported;
//! 3. `svsm-verify policy learn` computes the kernel's (PCR 4), the initrd's and the
//!    command line's (PCR 9) reference values, and for forky's OVMF its firmware volumes'
//!    (PCR 0), from the artifacts this level booted and finds them in the log, and `policy check` accepts the boot with the guest's PCR values;
//!    a policy for another command line is refused, naming PCR 9.
//!
//! The log, the policy and `tpm2_eventlog`'s reading are left in target/linux-guest/.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::attest::verify_cmd;

/// An event as both tools print it: (index, PCR, type name, [(bank, digest hex)]).
type Event = (usize, u32, String, Vec<(String, String)>);
/// Replayed PCRs: (bank, PCR) -> value hex.
type Pcrs = BTreeMap<(String, u32), String>;

/// What the level booted, for the reference values.
pub struct Boot<'a> {
    /// The OVMF image, when its firmware volumes are to be computed (PCR 0).
    pub firmware: Option<&'a Path>,
    /// The kernel image file (`-kernel`).
    pub kernel: &'a Path,
    /// The initrd file (`-initrd`).
    pub initrd: &'a Path,
    /// The `-append` text.
    pub cmdline: &'a str,
    /// `-m`, in MiB.
    pub memory_mib: u64,
}

/// Runs the checks on one boot's results; `label` names the files it leaves.
pub fn check(
    results: &BTreeMap<String, (String, String)>,
    dir: &Path,
    label: &str,
    boot: &Boot<'_>,
) -> Result<()> {
    let (_, hex) = results
        .get("eventlog-data")
        .context("no eventlog-data line (the guest did not print its event log)")?;
    let bytes = crate::linux::unhex(hex.trim()).context("eventlog-data: not hex")?;
    let slug: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let log = dir.join(format!("eventlog-{slug}.bin"));
    fs::write(&log, &bytes)?;
    let log_arg = log.display().to_string();

    // 1. The parser against tpm2_eventlog.
    let yaml = run(Command::new("tpm2_eventlog").arg(&log))
        .context("tpm2_eventlog (Debian package tpm2-tools)")?;
    fs::write(
        dir.join(format!("eventlog-{slug}.tpm2_eventlog.yaml")),
        &yaml,
    )?;
    let (their_events, their_pcrs) = parse_tpm2_eventlog(&yaml);
    let ours = run(&mut verify_cmd(&["eventlog".into(), log_arg.clone()]))?;
    let (our_events, our_pcrs) = parse_svsm_verify(&ours);
    ensure!(
        our_events.len() == their_events.len(),
        "svsm-verify reads {} events, tpm2_eventlog {}",
        our_events.len(),
        their_events.len()
    );
    for (ours, theirs) in our_events.iter().zip(&their_events) {
        ensure!(
            ours == theirs,
            "event {}: svsm-verify reads {ours:?}, tpm2_eventlog {theirs:?}",
            ours.0
        );
    }
    ensure!(
        our_pcrs == their_pcrs,
        "replayed PCRs: svsm-verify {our_pcrs:?}, tpm2_eventlog {their_pcrs:?}"
    );

    // 2. The replay against the guest's PCRs.
    let mut banks = 0;
    let mut sha256 = Vec::new();
    for (name, (_, values)) in results.iter() {
        let Some(bank) = name.strip_prefix("pcrs:") else {
            continue;
        };
        banks += 1;
        for pair in values.split_whitespace() {
            let (pcr, value) = pair.split_once('=').context("pcrs: not PCR=VALUE")?;
            let pcr: u32 = pcr.parse().context("pcrs: PCR index")?;
            let value = value.to_lowercase();
            let replayed = our_pcrs
                .get(&(bank.to_string(), pcr))
                .cloned()
                .unwrap_or_else(|| "0".repeat(value.len()));
            ensure!(
                replayed == value,
                "PCR {pcr} ({bank}): the log replays to {replayed}, the guest read {value}"
            );
            if bank == "sha256" {
                sha256.push(format!("{pcr}={value}"));
            }
        }
    }
    ensure!(
        banks > 0 && !sha256.is_empty(),
        "no pcrs:<bank> lines from the guest"
    );

    // 3. Reference values computed from the artifacts.
    let policy = dir.join(format!("policy-{slug}.toml"));
    let learn = |cmdline: &str, out: &Path| {
        let mut args: Vec<String> = Vec::new();
        if let Some(firmware) = boot.firmware {
            args.push("--firmware".into());
            args.push(firmware.display().to_string());
        }
        let mut cmd = verify_cmd(&[
            "policy".into(),
            "learn".into(),
            "--event-log".into(),
            log_arg.clone(),
            "--kernel".into(),
            boot.kernel.display().to_string(),
            "--initrd".into(),
            boot.initrd.display().to_string(),
            "--cmdline".into(),
            cmdline.into(),
            "--qemu-direct-boot".into(),
            "--qemu-memory".into(),
            boot.memory_mib.to_string(),
            "-o".into(),
            out.display().to_string(),
        ]);
        cmd.args(args);
        cmd.output().context("cannot run svsm-verify policy learn")
    };
    let out = learn(boot.cmdline, &policy)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Kernel, initrd, command line, and OVMF's two volumes when the firmware is given.
    let computed = if boot.firmware.is_some() { 5 } else { 3 };
    ensure!(
        out.status.success() && stdout.contains(&format!("({computed} computed from artifacts)")),
        "policy learn with the kernel, initrd and command line: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let quoted = sha256.join(",");
    run(&mut verify_cmd(&[
        "policy".into(),
        "check".into(),
        "--policy".into(),
        policy.display().to_string(),
        "--event-log".into(),
        log_arg.clone(),
        "--pcr".into(),
        quoted,
    ]))
    .context("policy check of the boot with its learned policy")?;
    let other = dir.join(format!("policy-{slug}-other-cmdline.toml"));
    let out = learn(&format!("{} single", boot.cmdline), &other)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("PCR 9 event"),
        "a policy for another command line must refuse this boot naming PCR 9: {stderr}"
    );
    println!(
        "linux-guest: {label}: event log ({} bytes, {} events) read alike by svsm-verify and \
         tpm2_eventlog, replays to the guest's PCRs in {banks} bank(s); kernel, initrd, \
         command line{} found as computed ({})",
        bytes.len(),
        our_events.len(),
        if boot.firmware.is_some() {
            " and firmware volumes"
        } else {
            ""
        },
        policy.display()
    );
    Ok(())
}

/// Output of a command that must succeed.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `tpm2_eventlog`'s YAML, the parts compared: events and the `pcrs:` section.
fn parse_tpm2_eventlog(yaml: &str) -> (Vec<Event>, Pcrs) {
    let mut events: Vec<Event> = Vec::new();
    let mut pcrs = Pcrs::new();
    let (mut in_pcrs, mut bank, mut alg) = (false, String::new(), String::new());
    for line in yaml.lines() {
        let t = line.trim();
        if line == "pcrs:" {
            in_pcrs = true;
        } else if in_pcrs {
            if let Some(b) = t.strip_suffix(':') {
                bank = b.to_string();
            } else if let Some((i, v)) = t.split_once(':') {
                if let Ok(i) = i.trim().parse() {
                    let v = v.trim().trim_start_matches("0x").to_string();
                    pcrs.insert((bank.clone(), i), v);
                }
            }
        } else if let Some(n) = t.strip_prefix("- EventNum: ") {
            events.push((
                n.parse().unwrap_or(usize::MAX),
                0,
                String::new(),
                Vec::new(),
            ));
        } else if let Some(e) = events.last_mut() {
            if let Some(p) = t.strip_prefix("PCRIndex: ") {
                e.1 = p.parse().unwrap_or(u32::MAX);
            } else if let Some(ty) = t.strip_prefix("EventType: ") {
                e.2 = ty.to_string();
            } else if let Some(a) = t.strip_prefix("- AlgorithmId: ") {
                alg = a.to_string();
            } else if let Some(d) = t.strip_prefix("Digest: ") {
                // The Spec ID event's one SHA-1 digest has no AlgorithmId line.
                let a = if e.0 == 0 { "sha1".into() } else { alg.clone() };
                e.3.push((a, d.trim_matches('"').to_string()));
            }
        }
    }
    (events, pcrs)
}

/// `svsm-verify eventlog`'s output: `event N pcr P TYPE …`, `  BANK DIGEST`,
/// `replayed BANK pcr P VALUE`.
fn parse_svsm_verify(text: &str) -> (Vec<Event>, Pcrs) {
    let mut events: Vec<Event> = Vec::new();
    let mut pcrs = Pcrs::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["event", n, "pcr", p, ty, ..] => events.push((
                n.parse().unwrap_or(usize::MAX),
                p.parse().unwrap_or(u32::MAX),
                ty.to_string(),
                Vec::new(),
            )),
            ["replayed", bank, "pcr", p, value] => {
                pcrs.insert(
                    (bank.to_string(), p.parse().unwrap_or(u32::MAX)),
                    value.to_string(),
                );
            }
            [bank, digest] if line.starts_with("  ") => {
                if let Some(e) = events.last_mut() {
                    e.3.push((bank.to_string(), digest.to_string()));
                }
            }
            _ => {}
        }
    }
    (events, pcrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_readings_parse_alike() {
        let yaml = "---\nversion: 1\nevents:\n- EventNum: 0\n  PCRIndex: 0\n  EventType: EV_NO_ACTION\n  Digest: \"00\"\n- EventNum: 1\n  PCRIndex: 4\n  EventType: EV_SEPARATOR\n  DigestCount: 1\n  Digests:\n  - AlgorithmId: sha256\n    Digest: \"ab\"\n  EventSize: 4\npcrs:\n  sha256:\n    4  : 0xcd\n";
        let text = "banks sha256 (32 bytes)\nevent 0 pcr 0 EV_NO_ACTION (45 bytes of data)\n  sha1 00\nevent 1 pcr 4 EV_SEPARATOR (4 bytes of data)\n  sha256 ab\nreplayed sha256 pcr 4 cd\n";
        let a = parse_tpm2_eventlog(yaml);
        let b = parse_svsm_verify(text);
        assert_eq!(a, b);
        assert_eq!(a.0.len(), 2);
        assert_eq!(a.1[&("sha256".to_string(), 4)], "cd");
    }
}
