//! The event log parser and the measured-boot policy on two real logs of the Linux-guest
//! level (tests/data/README.md), cross-checked against `tpm2_eventlog`'s reading of the
//! same files and the PCR values the guest read.

use std::collections::BTreeMap;

use svsm_verifier::boot_policy::{BootPolicy, BootPolicyError, Reference, DEFAULT_PCRS};
use svsm_verifier::eventlog::{
    alg_from_name, event_type_label, EventLog, ALG_SHA256, EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EVENT_TAG,
};
use svsm_verifier::reference::{
    linux_load_options_digest, ovmf_qemu_load_options, pick_load_options, LINUX_INITRD_TAG,
    LINUX_LOAD_OPTIONS_TAG,
};
use svsm_verifier::Error;

const BOOKWORM: &[u8] = include_bytes!("data/eventlog-ovmf-bookworm.bin");
const BOOKWORM_TXT: &str = include_str!("data/eventlog-ovmf-bookworm.txt");
const BOOKWORM_YAML: &str = include_str!("data/eventlog-ovmf-bookworm.tpm2_eventlog.yaml");
const FORKY: &[u8] = include_bytes!("data/eventlog-ovmf-forky.bin");
const FORKY_TXT: &str = include_str!("data/eventlog-ovmf-forky.txt");
const FORKY_YAML: &str = include_str!("data/eventlog-ovmf-forky.tpm2_eventlog.yaml");

/// A fixture's notes: `key value` lines, and `pcr N=HEX` lines.
struct Notes {
    values: BTreeMap<String, String>,
    pcrs: Vec<(u8, Vec<u8>)>,
}

fn notes(text: &str) -> Notes {
    let mut values = BTreeMap::new();
    let mut pcrs = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line.split_once(' ').unwrap();
        if key == "pcr" {
            let (i, v) = value.split_once('=').unwrap();
            pcrs.push((i.parse().unwrap(), hex::decode(v).unwrap()));
        } else {
            values.insert(key.to_string(), value.to_string());
        }
    }
    Notes { values, pcrs }
}

/// What `tpm2_eventlog` printed: per event (number, PCR, type name, digests by bank
/// name), and the replayed PCRs per bank.
type Tpm2Event = (usize, u32, String, Vec<(String, String)>);

fn tpm2_eventlog(yaml: &str) -> (Vec<Tpm2Event>, BTreeMap<(String, u32), String>) {
    let mut events: Vec<Tpm2Event> = Vec::new();
    let mut pcrs = BTreeMap::new();
    let mut bank = String::new();
    let mut in_pcrs = false;
    let mut alg = String::new();
    for line in yaml.lines() {
        let t = line.trim();
        if line == "pcrs:" {
            in_pcrs = true;
        } else if in_pcrs {
            if let Some(b) = t.strip_suffix(':') {
                bank = b.to_string();
            } else if let Some((i, v)) = t.split_once(':') {
                let v = v.trim().trim_start_matches("0x").to_string();
                pcrs.insert((bank.clone(), i.trim().parse().unwrap()), v);
            }
        } else if let Some(n) = t.strip_prefix("- EventNum: ") {
            events.push((n.parse().unwrap(), 0, String::new(), Vec::new()));
        } else if let Some(p) = t.strip_prefix("PCRIndex: ") {
            events.last_mut().unwrap().1 = p.parse().unwrap();
        } else if let Some(ty) = t.strip_prefix("EventType: ") {
            events.last_mut().unwrap().2 = ty.to_string();
        } else if let Some(a) = t.strip_prefix("- AlgorithmId: ") {
            alg = a.to_string();
        } else if let Some(d) = t.strip_prefix("Digest: ") {
            let d = d.trim_matches('"').to_string();
            let e = events.last_mut().unwrap();
            // The Spec ID event's single SHA-1 digest has no AlgorithmId line.
            let a = if e.0 == 0 {
                "sha1".to_string()
            } else {
                alg.clone()
            };
            e.3.push((a, d));
        }
    }
    (events, pcrs)
}

fn quoted(notes: &Notes, pcrs: &[u8]) -> Vec<(u8, Vec<u8>)> {
    notes
        .pcrs
        .iter()
        .filter(|(i, _)| pcrs.contains(i))
        .cloned()
        .collect()
}

#[test]
fn the_parser_agrees_with_tpm2_eventlog_event_by_event_and_on_the_replay() {
    for (bytes, yaml, count) in [(BOOKWORM, BOOKWORM_YAML, 25), (FORKY, FORKY_YAML, 31)] {
        let log = EventLog::parse(bytes).unwrap();
        let (events, pcrs) = tpm2_eventlog(yaml);
        assert_eq!(log.events.len(), count);
        assert_eq!(events.len(), count);
        assert_eq!(log.banks.len(), 4);
        for ((index, event), (n, pcr, ty, digests)) in log.events.iter().enumerate().zip(&events) {
            assert_eq!(index, *n);
            assert_eq!(event.pcr, *pcr, "event {index}");
            assert_eq!(event_type_label(event.event_type), *ty, "event {index}");
            let mine: Vec<(String, String)> = event
                .digests
                .iter()
                .map(|(a, d)| (svsm_verifier::eventlog::alg_label(*a), hex::encode(d)))
                .collect();
            assert_eq!(&mine, digests, "event {index}");
        }
        let mut replayed = BTreeMap::new();
        for (alg, _) in &log.banks {
            for (pcr, value) in log.replay(*alg).unwrap() {
                replayed.insert(
                    (svsm_verifier::eventlog::alg_label(*alg), pcr),
                    hex::encode(value),
                );
            }
        }
        assert_eq!(replayed, pcrs);
    }
}

#[test]
fn the_replay_equals_what_the_guest_read() {
    for (bytes, txt) in [(BOOKWORM, BOOKWORM_TXT), (FORKY, FORKY_TXT)] {
        let log = EventLog::parse(bytes).unwrap();
        let notes = notes(txt);
        let replayed = log.replay(ALG_SHA256).unwrap();
        assert_eq!(notes.pcrs.len(), 10);
        for (pcr, value) in &notes.pcrs {
            let mine = replayed
                .get(&u32::from(*pcr))
                .cloned()
                .unwrap_or_else(|| log.initial_value(ALG_SHA256, u32::from(*pcr)).unwrap());
            assert_eq!(&mine, value, "PCR {pcr}");
        }
    }
}

#[test]
fn the_command_line_is_measured_as_ovmf_passes_it() {
    // bookworm's OVMF appends "initrd=initrd", forky's puts it first.
    for (bytes, txt, event, form) in [(BOOKWORM, BOOKWORM_TXT, 21, 0), (FORKY, FORKY_TXT, 27, 1)] {
        let log = EventLog::parse(bytes).unwrap();
        let cmdline = &notes(txt).values["cmdline"];
        let candidates = ovmf_qemu_load_options(cmdline, true);
        let digest = linux_load_options_digest(&candidates[form], ALG_SHA256).unwrap();
        assert_eq!(log.events[event].event_type, EV_EVENT_TAG);
        assert_eq!(log.events[event].digest(ALG_SHA256), Some(&digest[..]));
        assert_eq!(
            pick_load_options(&log, ALG_SHA256, &candidates),
            Some(candidates[form].as_str())
        );
        // The tagged event's data: the stub's tag and "LOADED_IMAGE::LoadOptions".
        assert_eq!(log.events[event].data[..4], 0x8F3B_22EDu32.to_le_bytes());
    }
}

/// The forky boot's references as `policy learn` computes them from the artifacts
/// (their digests are in the notes, the artifacts are too large to commit).
fn forky_computed(cmdline: &str) -> Vec<Reference> {
    let n = notes(FORKY_TXT);
    let hex = |k: &str| hex::decode(&n.values[k]).unwrap();
    vec![
        Reference {
            pcr: 4,
            event_type: EV_EFI_BOOT_SERVICES_APPLICATION,
            digest: hex("kernel-loaded-authenticode"),
            required: true,
            tag: None,
            source: "kernel".into(),
        },
        Reference {
            pcr: 9,
            event_type: EV_EVENT_TAG,
            digest: hex("initrd-sha256"),
            required: true,
            tag: Some(LINUX_INITRD_TAG),
            source: "initrd".into(),
        },
        Reference {
            pcr: 9,
            event_type: EV_EVENT_TAG,
            digest: linux_load_options_digest(&format!("initrd=initrd {cmdline}"), ALG_SHA256)
                .unwrap(),
            required: true,
            tag: Some(LINUX_LOAD_OPTIONS_TAG),
            source: "cmdline".into(),
        },
    ]
}

fn forky_policy(computed: &[Reference]) -> BootPolicy {
    let log = EventLog::parse(FORKY).unwrap();
    BootPolicy::learn(&log, ALG_SHA256, DEFAULT_PCRS, &[], computed)
        .expect("learn")
        .0
}

#[test]
fn a_learned_policy_accepts_its_boot_and_survives_toml() {
    let n = notes(FORKY_TXT);
    let log = EventLog::parse(FORKY).unwrap();
    let (policy, warnings) = BootPolicy::learn(
        &log,
        ALG_SHA256,
        DEFAULT_PCRS,
        &[],
        &forky_computed(&n.values["cmdline"]),
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let quote = quoted(&n, DEFAULT_PCRS);
    policy.check(&log, &quote).unwrap();
    assert_eq!(policy.pcr_selection(), (ALG_SHA256, DEFAULT_PCRS.to_vec()));
    let text = policy.to_toml();
    let again = BootPolicy::from_toml(&text).unwrap();
    assert_eq!(again, policy);
    again.check(&log, &quote).unwrap();
    // The computed values come first and name their source.
    assert!(text.contains("source = \"kernel\""), "{text}");
    // 30 measured events (the Spec ID event is not), 3 of them replaced by the computed
    // values; no (PCR, type, digest) repeats in this log.
    assert_eq!(policy.references().len(), 3 + (30 - 3));
}

#[test]
fn a_log_edited_to_look_right_fails_the_replay_naming_the_pcr() {
    let n = notes(FORKY_TXT);
    let policy = forky_policy(&forky_computed(&n.values["cmdline"]));
    let log = EventLog::parse(FORKY).unwrap();
    // Another command line was measured (the quote's PCR 9 differs), but the log was
    // left to show the expected one.
    let mut quote = quoted(&n, DEFAULT_PCRS);
    quote.iter_mut().find(|(i, _)| *i == 9).unwrap().1[0] ^= 1;
    let e = policy.check(&log, &quote).unwrap_err();
    assert!(
        matches!(e, BootPolicyError::ReplayMismatch { pcr: 9, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("PCR 9 (sha256): replayed log gives "),
        "{e}"
    );
    // The same with the log edited instead: a PCR 4 digest changed in place.
    let mut bytes = FORKY.to_vec();
    let old = log.events[14].digest(ALG_SHA256).unwrap().to_vec();
    let at = bytes.windows(32).position(|w| w == old).unwrap();
    bytes[at] ^= 0xFF;
    let edited = EventLog::parse(&bytes).unwrap();
    let e = policy
        .check(&edited, &quoted(&n, DEFAULT_PCRS))
        .unwrap_err();
    assert!(
        matches!(e, BootPolicyError::ReplayMismatch { pcr: 4, .. }),
        "{e}"
    );
}

#[test]
fn another_command_line_or_initrd_is_refused_naming_pcr_9() {
    let n = notes(FORKY_TXT);
    let log = EventLog::parse(FORKY).unwrap();
    let quote = quoted(&n, DEFAULT_PCRS);
    // A policy for another command line: the logged one is not a reference value.
    let mut computed = forky_computed(&format!("{} single", n.values["cmdline"]));
    let (policy, warnings) =
        BootPolicy::learn(&log, ALG_SHA256, DEFAULT_PCRS, &[], &computed).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let e = policy.check(&log, &quote).unwrap_err().to_string();
    assert!(
        e.starts_with("PCR 9 event 27 (EV_EVENT_TAG): digest ")
            && e.ends_with("is not a reference value"),
        "{e}"
    );
    // A policy for another initrd.
    computed = forky_computed(&n.values["cmdline"]);
    computed[1].digest[0] ^= 1;
    let (policy, _) = BootPolicy::learn(&log, ALG_SHA256, DEFAULT_PCRS, &[], &computed).unwrap();
    let e = policy.check(&log, &quote).unwrap_err().to_string();
    assert!(e.starts_with("PCR 9 event 28 (EV_EVENT_TAG)"), "{e}");
    // Another kernel.
    computed = forky_computed(&n.values["cmdline"]);
    computed[0].digest[0] ^= 1;
    let (policy, _) = BootPolicy::learn(&log, ALG_SHA256, DEFAULT_PCRS, &[], &computed).unwrap();
    let e = policy.check(&log, &quote).unwrap_err().to_string();
    assert!(
        e.starts_with("PCR 4 event 14 (EV_EFI_BOOT_SERVICES_APPLICATION)"),
        "{e}"
    );
}

#[test]
fn a_missing_required_event_an_unquoted_pcr_and_replay_only_pcrs() {
    let n = notes(FORKY_TXT);
    let log = EventLog::parse(FORKY).unwrap();
    let quote = quoted(&n, DEFAULT_PCRS);
    let mut extra = forky_computed(&n.values["cmdline"]);
    extra.push(Reference {
        pcr: 9,
        event_type: EV_EVENT_TAG,
        digest: vec![0xAB; 32],
        required: true,
        tag: None,
        source: "an initrd that did not boot".into(),
    });
    let policy = forky_policy(&extra);
    let e = policy.check(&log, &quote).unwrap_err().to_string();
    assert!(
        e.starts_with("PCR 9: the required EV_EVENT_TAG event abab"),
        "{e}"
    );
    assert!(e.contains("(an initrd that did not boot)"), "{e}");

    let policy = forky_policy(&forky_computed(&n.values["cmdline"]));
    let short: Vec<_> = quote.iter().filter(|(i, _)| *i != 7).cloned().collect();
    let e = policy.check(&log, &short).unwrap_err();
    assert_eq!(e, BootPolicyError::NotQuoted { pcr: 7 });

    // PCR 1 replayed only: its events may change, its value must still replay.
    let (policy, _) = BootPolicy::learn(
        &log,
        ALG_SHA256,
        DEFAULT_PCRS,
        &[1],
        &forky_computed(&n.values["cmdline"]),
    )
    .unwrap();
    assert!(policy.references().iter().all(|r| r.pcr != 1));
    policy.check(&log, &quote).unwrap();
    let mut other = quote.clone();
    other.iter_mut().find(|(i, _)| *i == 1).unwrap().1[0] ^= 1;
    let e = policy.check(&log, &other).unwrap_err();
    assert!(
        matches!(e, BootPolicyError::ReplayMismatch { pcr: 1, .. }),
        "{e}"
    );
}

#[test]
fn bad_policy_files_are_refused_with_the_reason() {
    for (text, why) in [
        ("bank = \"md5\"\npcrs = [0]\n", "bank \"md5\""),
        ("bank = \"sha256\"\npcrs = []\n", "pcrs: empty"),
        ("bank = \"sha256\"\npcrs = [24]\n", "PCR 24 does not exist"),
        ("bank = \"sha256\"\npcrs = [0, 0]\n", "PCR 0 listed twice"),
        ("bank = \"sha256\"\npcrs = [0]\nreplay_only = [1]\n", "replay_only: PCR 1"),
        ("bank = \"sha256\"\npcrs = [0]\ncolour = 1\n", "unknown field"),
        (
            "bank = \"sha256\"\npcrs = [0]\n[[reference]]\npcr = 4\ntype = \"EV_SEPARATOR\"\ndigest = \"00\"\n",
            "does not compare this PCR",
        ),
        (
            "bank = \"sha256\"\npcrs = [0]\n[[reference]]\npcr = 0\ntype = \"EV_NOPE\"\ndigest = \"00\"\n",
            "unknown event type",
        ),
        (
            "bank = \"sha256\"\npcrs = [0]\n[[reference]]\npcr = 0\ntype = \"EV_SEPARATOR\"\ndigest = \"00\"\n",
            "digest has 1 bytes",
        ),
        (
            "bank = \"sha256\"\npcrs = [0]\n[[reference]]\npcr = 0\ntype = \"EV_SEPARATOR\"\ndigest = \"zz\"\n",
            "not hex",
        ),
        (
            "bank = \"sha256\"\npcrs = [9]\n[[reference]]\npcr = 9\ntype = \"EV_EVENT_TAG\"\ndigest = \"0000000000000000000000000000000000000000000000000000000000000000\"\ntag = \"8f3b22ec\"\n",
            "is not 0x and 8 hex digits",
        ),
        ("not toml", "measured-boot policy"),
    ] {
        let e = BootPolicy::from_toml(text).unwrap_err();
        assert!(matches!(e, Error::BootPolicy(_)));
        assert!(e.to_string().contains(why), "{text}: {e}");
    }
    assert_eq!(alg_from_name("sha384"), Some(0x000C));
}

#[test]
fn truncated_and_garbage_logs_are_clear_errors() {
    for bytes in [BOOKWORM, FORKY] {
        let full = EventLog::parse(bytes).unwrap();
        for len in 0..bytes.len() {
            match EventLog::parse(&bytes[..len]) {
                // Cut at an event boundary: a valid, shorter log.
                Ok(log) => assert!(log.events.len() < full.events.len()),
                Err(Error::EventLog(msg)) => {
                    assert!(msg.starts_with("event "), "{msg}");
                    assert!(msg.contains("(offset 0x"), "{msg}");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    // Garbage after a good log: an event with an impossible PCR, a digest count larger
    // than the banks, a huge event size.
    for (tail, why) in [
        (&[0xFFu8; 12][..], "PCR index 4294967295"),
        (&[0, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0][..], "9 digests"),
        (
            &[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF][..],
            "runs past the end",
        ),
        (
            &[0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x99, 0][..],
            "algorithm 0x0099",
        ),
    ] {
        let mut bytes = FORKY.to_vec();
        bytes.extend_from_slice(tail);
        let e = EventLog::parse(&bytes).unwrap_err().to_string();
        assert!(e.starts_with("event log: event 31 (offset 0x19ef)"), "{e}");
        assert!(e.contains(why), "{e}");
    }
    // Pseudo-random bytes (xorshift): never a panic.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for round in 0..200 {
        let bytes: Vec<u8> = (0..round * 7)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(EventLog::parse(&bytes).is_err());
        let mut spliced = FORKY[..0x40].to_vec();
        spliced.extend_from_slice(&bytes);
        let _ = EventLog::parse(&spliced);
    }
}

#[test]
fn the_committed_policy_accepts_the_forky_boot_and_names_its_sources() {
    let text = include_str!("data/eventlog-ovmf-forky.policy.toml");
    let policy = BootPolicy::from_toml(text).unwrap();
    let n = notes(FORKY_TXT);
    let log = EventLog::parse(FORKY).unwrap();
    policy.check(&log, &quoted(&n, DEFAULT_PCRS)).unwrap();
    // The three computed values equal the digests noted from the artifacts.
    let computed = forky_computed(&n.values["cmdline"]);
    for (r, c) in policy.references()[..3].iter().zip(&computed) {
        assert_eq!(
            (r.pcr, r.event_type, &r.digest),
            (c.pcr, c.event_type, &c.digest)
        );
        assert!(!r.source.starts_with("learned"), "{}", r.source);
    }
    // Then OVMF's two firmware volumes (PCR 0), computed from forky's OVMF.fd.
    for r in &policy.references()[3..5] {
        assert!(
            r.source.starts_with("firmware OVMF.fd, volume "),
            "{}",
            r.source
        );
        assert_eq!(r.pcr, 0);
        assert_eq!(r.event_type, EV_EFI_PLATFORM_FIRMWARE_BLOB);
        assert!(log
            .events
            .iter()
            .any(|e| e.digest(ALG_SHA256) == Some(&r.digest[..])));
    }
    assert!(policy.references()[5..]
        .iter()
        .all(|r| r.source.starts_with("learned")));
    // The bookworm boot (another OVMF) is refused: its firmware events differ.
    let bookworm = EventLog::parse(BOOKWORM).unwrap();
    let e = policy
        .check(&bookworm, &quoted(&notes(BOOKWORM_TXT), DEFAULT_PCRS))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("PCR 0 event 1 (EV_S_CRTM_VERSION)"), "{e}");
}

#[test]
fn a_tagged_reference_only_matches_its_tag() {
    let n = notes(FORKY_TXT);
    let log = EventLog::parse(FORKY).unwrap();
    // The initrd's digest, but required under the load options' tag: the initrd event
    // (event 28) carries the initrd tag, so it is not this reference, which is missing.
    let mut computed = forky_computed(&n.values["cmdline"]);
    computed[1].tag = Some(LINUX_LOAD_OPTIONS_TAG);
    let policy = forky_policy(&computed);
    let e = policy
        .check(&log, &quoted(&n, DEFAULT_PCRS))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("PCR 9: the required EV_EVENT_TAG event 7eb50bfd"),
        "{e}"
    );
    assert_eq!(log.events[28].tag(), Some(LINUX_INITRD_TAG));
    assert_eq!(log.events[27].tag(), Some(LINUX_LOAD_OPTIONS_TAG));
    assert_eq!(log.events[14].tag(), None);
}
