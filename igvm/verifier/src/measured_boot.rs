//! `svsm-verify eventlog` and `svsm-verify policy …`: the measured-boot commands.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use svsm_verifier::boot_policy::{BootPolicy, DEFAULT_PCRS};
use svsm_verifier::eventlog::{
    alg_from_name, alg_label, event_type_label, EventLog, EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2,
};
use svsm_verifier::reference;

/// `svsm-verify eventlog FILE`.
#[derive(Debug, Args)]
pub struct EventlogArgs {
    /// The event log (binary_bios_measurements).
    pub file: PathBuf,
}

/// `svsm-verify policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Learn a measured-boot policy from a known-good boot's event log, with the
    /// reference values of the artifacts given computed instead of learned.
    Learn(LearnArgs),
    /// Check an event log and the PCR values a quote covered against a policy.
    Check(CheckArgs),
}

/// `svsm-verify policy learn`.
#[derive(Debug, Args)]
pub struct LearnArgs {
    /// The known-good boot's event log (binary_bios_measurements).
    #[arg(long)]
    pub event_log: PathBuf,
    /// The firmware (an OVMF image such as OVMF.fd): PCR 0's firmware volume digests are
    /// computed.
    #[arg(long)]
    pub firmware: Option<PathBuf>,
    /// The kernel (a PE image such as vmlinuz): PCR 4's application digest is computed.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The initrd: PCR 9's initrd digest (Linux's EFI stub) is computed.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// The kernel command line: PCR 9's load options digest (Linux's EFI stub) is
    /// computed from it.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// The kernel was booted by QEMU directly (-kernel/-append/-initrd, q35) under OVMF:
    /// QEMU patches the kernel's setup header (which depends on the initrd's size and
    /// --qemu-memory), and OVMF adds "initrd=initrd" to the command line.
    #[arg(long)]
    pub qemu_direct_boot: bool,
    /// QEMU's -m, in MiB (for --qemu-direct-boot with --kernel).
    #[arg(long, requires = "qemu_direct_boot")]
    pub qemu_memory: Option<u64>,
    /// The bank.
    #[arg(long, default_value = "sha256")]
    pub bank: String,
    /// The PCRs the quote must cover (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_PCRS.to_vec())]
    pub pcrs: Vec<u8>,
    /// PCRs to replay only, without comparing their events (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub replay_only: Vec<u8>,
    /// Where to write the policy.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

/// `svsm-verify policy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy (TOML).
    #[arg(long)]
    pub policy: PathBuf,
    /// The event log.
    #[arg(long)]
    pub event_log: PathBuf,
    /// A quoted PCR value in the policy's bank, `INDEX=HEX` (repeat, or comma-separate).
    #[arg(long = "pcr", value_delimiter = ',', required = true)]
    pub pcrs: Vec<String>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn parse_log(path: &Path) -> Result<EventLog> {
    EventLog::parse(&read(path)?).with_context(|| path.display().to_string())
}

/// Prints every event (index, PCR, type, digest per bank) and the replayed PCRs per bank,
/// one item per line so that scripts can read it too:
///
/// ```text
/// event 1 pcr 0 EV_S_CRTM_VERSION
///   sha256 96a2…
/// replayed sha256 pcr 0 934e…
/// ```
pub fn eventlog(args: &EventlogArgs) -> Result<()> {
    let log = parse_log(&args.file)?;
    let banks: Vec<String> = log
        .banks
        .iter()
        .map(|(a, s)| format!("{} ({s} bytes)", alg_label(*a)))
        .collect();
    println!("banks {}", banks.join(", "));
    for (index, event) in log.events.iter().enumerate() {
        let locality = event
            .startup_locality()
            .map(|l| format!(" StartupLocality={l}"))
            .unwrap_or_default();
        println!(
            "event {index} pcr {} {}{locality} ({} bytes of data)",
            event.pcr,
            event_type_label(event.event_type),
            event.data.len()
        );
        for (alg, digest) in &event.digests {
            println!("  {} {}", alg_label(*alg), hex::encode(digest));
        }
    }
    for (alg, _) in &log.banks {
        match log.replay(*alg) {
            Ok(pcrs) => {
                for (pcr, value) in pcrs {
                    println!(
                        "replayed {} pcr {pcr} {}",
                        alg_label(*alg),
                        hex::encode(value)
                    );
                }
            }
            Err(e) => println!("replayed {}: {e}", alg_label(*alg)),
        }
    }
    Ok(())
}

/// `svsm-verify policy …`.
pub fn policy(cmd: &PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Learn(args) => learn(args),
        PolicyCommand::Check(args) => check(args),
    }
}

fn learn(args: &LearnArgs) -> Result<()> {
    let log = parse_log(&args.event_log)?;
    let Some(alg) = alg_from_name(&args.bank) else {
        bail!("--bank {}: not sha1, sha256, sha384 or sha512", args.bank);
    };
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let kernel = args
        .kernel
        .as_ref()
        .map(|p| Ok::<_, anyhow::Error>((name(p), read(p)?)));
    let kernel = kernel.transpose()?;
    let initrd = args
        .initrd
        .as_ref()
        .map(|p| Ok::<_, anyhow::Error>((name(p), read(p)?)));
    let initrd = initrd.transpose()?;
    let kernel = match kernel {
        Some((name, image)) if args.qemu_direct_boot => {
            let Some(mib) = args.qemu_memory else {
                bail!("--kernel with --qemu-direct-boot needs --qemu-memory (QEMU's -m, MiB)");
            };
            let patched = reference::qemu_direct_boot_kernel(
                &image,
                initrd.as_ref().map(|(_, b)| b.len() as u64),
                reference::q35_below_4g(mib << 20),
            )?;
            Some((format!("{name} as QEMU's direct boot loads it"), patched))
        }
        other => other,
    };
    let candidates = match &args.cmdline {
        // Without --initrd, QEMU may still have had one: every form is a candidate.
        Some(c) if args.qemu_direct_boot && initrd.is_none() => {
            let mut all = reference::ovmf_qemu_load_options(c, true);
            all.push(c.clone());
            all
        }
        Some(c) if args.qemu_direct_boot => reference::ovmf_qemu_load_options(c, true),
        Some(c) => vec![c.clone()],
        None => Vec::new(),
    };
    let load_options = reference::pick_load_options(&log, alg, &candidates);
    let mut computed = reference::linux_references(
        alg,
        kernel.as_ref().map(|(n, b)| (n.as_str(), b.as_slice())),
        initrd.as_ref().map(|(n, b)| (n.as_str(), b.as_slice())),
        load_options,
    )?;
    if let Some(path) = &args.firmware {
        // Newer firmware logs the volumes as EV_EFI_PLATFORM_FIRMWARE_BLOB2.
        let blob2 = log
            .events
            .iter()
            .any(|e| e.pcr == 0 && e.event_type == EV_EFI_PLATFORM_FIRMWARE_BLOB2);
        let event_type = if blob2 {
            EV_EFI_PLATFORM_FIRMWARE_BLOB2
        } else {
            EV_EFI_PLATFORM_FIRMWARE_BLOB
        };
        computed.extend(reference::ovmf_references(
            alg,
            &name(path),
            &read(path)?,
            event_type,
        )?);
    }
    let (policy, warnings) =
        BootPolicy::learn(&log, alg, &args.pcrs, &args.replay_only, &computed)?;
    for w in &warnings {
        eprintln!("svsm-verify: warning: {w}");
    }
    // A computed value the log does not contain: the artifacts are not the ones this
    // boot measured, so the policy would refuse the boot it was learned from.
    let replayed = log.replay(alg)?;
    let quoted: Vec<(u8, Vec<u8>)> = args
        .pcrs
        .iter()
        .map(|&p| {
            let value = replayed
                .get(&u32::from(p))
                .cloned()
                .or_else(|| log.initial_value(alg, u32::from(p)))
                .unwrap_or_default();
            (p, value)
        })
        .collect();
    policy
        .check(&log, &quoted)
        .context("the learned policy does not accept the boot it was learned from")?;
    std::fs::write(&args.output, policy.to_toml())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "policy: {} references ({} computed from artifacts) over PCRs {:?} ({}), written to {}",
        policy.references().len(),
        computed.len(),
        args.pcrs,
        alg_label(alg),
        args.output.display()
    );
    Ok(())
}

fn check(args: &CheckArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("cannot read {}", args.policy.display()))?;
    let policy = BootPolicy::from_toml(&text)?;
    let log = parse_log(&args.event_log)?;
    let mut quoted = Vec::new();
    for p in &args.pcrs {
        let Some((index, value)) = p.split_once('=') else {
            bail!("--pcr {p:?}: expected INDEX=HEX");
        };
        let index: u8 = index
            .trim()
            .parse()
            .with_context(|| format!("--pcr {p:?}: bad index"))?;
        let value = hex::decode(value.trim().trim_start_matches("0x"))
            .with_context(|| format!("--pcr {p:?}: not hex"))?;
        quoted.push((index, value));
    }
    policy.check(&log, &quoted)?;
    println!("measured boot: the log replays to the quoted PCRs and matches the policy");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

    fn forky_pcrs(changed: Option<u8>) -> Vec<String> {
        let notes = std::fs::read_to_string(format!("{DATA}/eventlog-ovmf-forky.txt")).unwrap();
        notes
            .lines()
            .filter_map(|l| l.strip_prefix("pcr "))
            .filter(|p| !p.starts_with("8="))
            .map(|p| match changed {
                Some(c) if p.starts_with(&format!("{c}=")) => format!("{c}={}", "11".repeat(32)),
                _ => p.to_string(),
            })
            .collect()
    }

    #[test]
    fn learn_then_check_from_the_command_line() {
        let out =
            std::env::temp_dir().join(format!("svsm-verify-policy-{}.toml", std::process::id()));
        let log = PathBuf::from(format!("{DATA}/eventlog-ovmf-forky.bin"));
        let learn_args = LearnArgs {
            event_log: log.clone(),
            firmware: None,
            kernel: None,
            initrd: None,
            cmdline: Some("console=ttyS0 quiet panic=-1 svsm.extend=0000000000000000000000000000000000000000000000000000000000000001 svsm.nonce=0011".into()),
            qemu_direct_boot: true,
            qemu_memory: None,
            bank: "sha256".into(),
            pcrs: DEFAULT_PCRS.to_vec(),
            replay_only: vec![1],
            output: out.clone(),
        };
        learn(&learn_args).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("replay_only = [1]"), "{text}");
        assert!(
            text.contains("command line \"initrd=initrd console=ttyS0"),
            "{text}"
        );
        let mut check_args = CheckArgs {
            policy: out.clone(),
            event_log: log.clone(),
            pcrs: forky_pcrs(None),
        };
        check(&check_args).unwrap();
        check_args.pcrs = forky_pcrs(Some(9));
        let e = format!("{:#}", check(&check_args).unwrap_err());
        assert!(
            e.starts_with("PCR 9 (sha256): replayed log gives 4ee6a1d1"),
            "{e}"
        );
        check_args.pcrs = vec!["9".into()];
        let e = format!("{:#}", check(&check_args).unwrap_err());
        assert!(e.contains("expected INDEX=HEX"), "{e}");
        // A command line the log does not hold: learning refuses, naming the event.
        let other = LearnArgs {
            cmdline: Some("quiet".into()),
            ..learn_args
        };
        let e = format!("{:#}", learn(&other).unwrap_err());
        assert!(e.contains("PCR 9 event 27 (EV_EVENT_TAG)"), "{e}");
        let _ = std::fs::remove_file(out);
    }
}
