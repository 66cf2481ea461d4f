//! `svsm-verify`: checks an SVSM guest's attestation from the command line.
//!
//! Three steps, matching the protocol: `report` checks an SNP report alone (and the
//! AMD chain), `challenge` makes the credential challenge for an attestation key under
//! the manifest's EK, and `full` checks everything once the guest has answered. `ek`
//! checks the endorsement evidence a guest reads from TPM NV (EK certificates, the
//! per-boot CA and the SNP report that binds it).
//!
//! `eventlog` prints a TCG event log and its replay; `policy learn` writes a measured-boot
//! policy from a known-good boot's log and the boot artifacts, `policy check` checks a log
//! and quoted PCR values against one.
//!
//! The launch measurement is required: without `--measurement` every command refuses,
//! unless `--no-measurement-check` says the caller accepts any SVSM image.

mod measured_boot;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use svsm_verifier::chain::{trusted_vcek_key, Chain};
use svsm_verifier::ek_nv::{self, EkPolicy, MeasurementCheck, NvEvidence};
use svsm_verifier::report::Tcb;
use svsm_verifier::{
    manifest, tpm, Challenge, Evidence, ExpectedPcrs, ManifestKind, Policy, VcekTrust,
};

/// Verify an SVSM guest's attestation (SNP report, AMD chain, services manifest, vTPM quote).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check an SNP report: signature, chain, VMPL0, and optionally its binding and
    /// measurement.
    Report {
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Make the credential challenge for an attestation key under the manifest's EK.
    Challenge {
        /// The services manifest from ATTEST_SERVICES (or, with --single-service, the
        /// EK that ATTEST_SINGLE_SERVICE returned).
        #[arg(long)]
        manifest: PathBuf,
        /// The attestation key's public area (TPMT_PUBLIC or TPM2B_PUBLIC).
        #[arg(long)]
        ak_public: PathBuf,
        /// The manifest came from ATTEST_SINGLE_SERVICE for the vTPM (it is the EK's
        /// TPMT_PUBLIC itself, not a services manifest).
        #[arg(long)]
        single_service: bool,
        /// Directory for the outputs: `credential` (tpm2_activatecredential's input
        /// format), `id_object`, `encrypted_secret`, and `challenge` (keep it: it holds
        /// the secret the vTPM must return).
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Check the whole chain.
    Full {
        #[command(flatten)]
        report: ReportArgs,
        /// The attestation key's public area (TPMT_PUBLIC or TPM2B_PUBLIC).
        #[arg(long)]
        ak_public: PathBuf,
        /// The `challenge` file written by the challenge step.
        #[arg(long)]
        challenge: PathBuf,
        /// The secret TPM2_ActivateCredential returned.
        #[arg(long)]
        activated_secret: PathBuf,
        /// The quote (TPMS_ATTEST, as `tpm2_quote -m` writes it).
        #[arg(long)]
        quote: PathBuf,
        /// The quote's signature (TPMT_SIGNATURE, as `tpm2_quote -s` writes it).
        #[arg(long)]
        quote_signature: PathBuf,
        /// An expected PCR value, `sha256:INDEX=HEX` (repeat for each PCR quoted).
        #[arg(long = "pcr", required = true)]
        pcrs: Vec<String>,
        /// The manifest came from ATTEST_SINGLE_SERVICE for the vTPM (it is the EK's
        /// TPMT_PUBLIC itself, not a services manifest).
        #[arg(long)]
        single_service: bool,
    },
    /// Check the endorsement evidence read from TPM NV: ARK → ASK → VCEK → report →
    /// endorsement CA → EK certificates → EKs.
    Ek {
        /// The RSA EK certificate (tpm2_nvread 0x01C00002).
        #[arg(long)]
        rsa_ek_cert: PathBuf,
        /// The ECC EK certificate (tpm2_nvread 0x01C0000A).
        #[arg(long)]
        ecc_ek_cert: PathBuf,
        /// The endorsement CA certificate (tpm2_nvread 0x01C00100).
        #[arg(long)]
        ca_cert: PathBuf,
        /// The SNP report (tpm2_nvread 0x01C00110).
        #[arg(long)]
        report: PathBuf,
        /// The VCEK certificate (tpm2_nvread 0x01C00101, or AMD's KDS); with --ask, --ark.
        #[arg(long, requires_all = ["ask", "ark"], conflicts_with = "vcek_key")]
        vcek: Option<PathBuf>,
        /// The ASK certificate (DER or PEM).
        #[arg(long)]
        ask: Option<PathBuf>,
        /// The ARK certificate (DER or PEM): the trust anchor.
        #[arg(long)]
        ark: Option<PathBuf>,
        /// Trust this P-384 key as the VCEK instead of checking a chain.
        #[arg(long)]
        vcek_key: Option<PathBuf>,
        /// The expected launch measurement, in hex (48 bytes).
        #[arg(long)]
        measurement: Option<String>,
        /// Accept any launch measurement (any SVSM image a host built passes).
        #[arg(long, conflicts_with = "measurement")]
        no_measurement_check: bool,
        /// The lowest acceptable REPORTED_TCB, e.g. `bl=3,tee=0,snp=8,ucode=115`.
        #[arg(long)]
        min_tcb: Option<String>,
        /// The RSA EK as the TPM presents it (tpm2_createek -G rsa -u FILE).
        #[arg(long)]
        ek_rsa_public: Option<PathBuf>,
        /// The ECC EK as the TPM presents it (tpm2_createek -G ecc -u FILE).
        #[arg(long)]
        ek_ecc_public: Option<PathBuf>,
        /// The vTPM state evidence (tpm2_nvread 0x01C00111), when the vTPM keeps its
        /// state between boots.
        #[arg(long)]
        state_evidence: Option<PathBuf>,
        /// Refuse a vTPM that started from a state generation below this one (the last
        /// generation this relying party saw): the host handed back an older state.
        #[arg(long)]
        min_state_generation: Option<u64>,
    },
    /// Print a TCG event log (binary_bios_measurements): every event's PCR, type and
    /// digests, and the PCR values it replays to in each bank.
    Eventlog(measured_boot::EventlogArgs),
    /// Measured-boot policies: learn one from a known-good boot, check a boot against one.
    #[command(subcommand)]
    Policy(measured_boot::PolicyCommand),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The attestation report (0x4A0 bytes).
    #[arg(long)]
    report: PathBuf,
    /// The VCEK certificate (DER or PEM); with --ask and --ark.
    #[arg(long, requires_all = ["ask", "ark"], conflicts_with_all = ["vcek_key", "cert_table"])]
    vcek: Option<PathBuf>,
    /// The host certificate table the SVSM returned (VCEK and ASK); with --ark.
    #[arg(long, requires = "ark", conflicts_with = "vcek_key")]
    cert_table: Option<PathBuf>,
    /// The ASK certificate (DER or PEM).
    #[arg(long)]
    ask: Option<PathBuf>,
    /// The ARK certificate (DER or PEM): the trust anchor.
    #[arg(long)]
    ark: Option<PathBuf>,
    /// Trust this P-384 key as the VCEK instead of checking a chain (PEM or DER).
    #[arg(long)]
    vcek_key: Option<PathBuf>,
    /// The services manifest from ATTEST_SERVICES.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The nonce the verifier gave the guest, in hex.
    #[arg(long, requires = "manifest")]
    nonce: Option<String>,
    /// The expected launch measurement, in hex (48 bytes).
    #[arg(long)]
    measurement: Option<String>,
    /// Accept any launch measurement (any SVSM image a host built passes).
    #[arg(long, conflicts_with = "measurement")]
    no_measurement_check: bool,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))
}

fn parse_hex(what: &str, text: &str) -> Result<Vec<u8>> {
    hex::decode(text.trim()).with_context(|| format!("{what}: {text:?} is not hex"))
}

impl ReportArgs {
    fn trust(&self) -> Result<VcekTrust> {
        match (
            &self.vcek,
            &self.ask,
            &self.ark,
            &self.vcek_key,
            &self.cert_table,
        ) {
            (Some(vcek), Some(ask), Some(ark), None, None) => Ok(VcekTrust::Chain(Box::new(
                Chain::parse(&read(vcek)?, &read(ask)?, &read(ark)?)?,
            ))),
            (None, None, Some(ark), None, Some(table)) => Ok(VcekTrust::Chain(Box::new(
                Chain::from_cert_table(&read(table)?, &read(ark)?)?,
            ))),
            (None, None, None, Some(key), None) => {
                Ok(VcekTrust::Key(trusted_vcek_key(&read(key)?)?))
            }
            _ => bail!(
                "give either --vcek, --ask and --ark, or --cert-table and --ark, or --vcek-key"
            ),
        }
    }

    fn nonce(&self) -> Result<Option<Vec<u8>>> {
        self.nonce
            .as_deref()
            .map(|n| parse_hex("--nonce", n))
            .transpose()
    }

    /// The expected measurement; refused when absent unless the caller opted out.
    fn measurement(&self) -> Result<Option<[u8; 48]>> {
        measurement(self.measurement.as_deref(), self.no_measurement_check)
    }
}

/// The expected measurement from `--measurement`, or `None` only with
/// `--no-measurement-check`.
fn measurement(given: Option<&str>, opt_out: bool) -> Result<Option<[u8; 48]>> {
    match given {
        None if opt_out => Ok(None),
        None => Err(svsm_verifier::Error::MeasurementRequired.into()),
        Some(m) => Ok(Some(parse_hex("--measurement", m)?.try_into().map_err(
            |_| anyhow::anyhow!("--measurement must be 48 bytes (96 hex digits)"),
        )?)),
    }
}

fn parse_pcr(text: &str) -> Result<(u16, u8, Vec<u8>)> {
    let bad = || format!("--pcr {text:?}: expected BANK:INDEX=HEX, e.g. sha256:0=00..00");
    let (bank, rest) = text.split_once(':').with_context(bad)?;
    let (index, value) = rest.split_once('=').with_context(bad)?;
    let alg = match bank {
        "sha256" => tpm::ALG_SHA256,
        "sha384" => tpm::ALG_SHA384,
        "sha512" => tpm::ALG_SHA512,
        _ => bail!("--pcr {text:?}: bank must be sha256, sha384 or sha512"),
    };
    let index: u8 = index.parse().ok().filter(|i| *i < 24).with_context(bad)?;
    let value = parse_hex("--pcr", value)?;
    if value.len() != tpm::digest_size(alg)? {
        bail!("--pcr {text:?}: value length does not match the bank");
    }
    Ok((alg, index, value))
}

fn expected_pcrs(args: &[String]) -> Result<ExpectedPcrs> {
    let mut parsed = args
        .iter()
        .map(|a| parse_pcr(a))
        .collect::<Result<Vec<_>>>()?;
    let Some(&(alg, _, _)) = parsed.first() else {
        bail!("--pcr: give at least one expected PCR value");
    };
    if parsed.iter().any(|p| p.0 != alg) {
        bail!("--pcr: all values must come from one bank");
    }
    parsed.sort_by_key(|p| p.1);
    if parsed.windows(2).any(|w| w[0].1 == w[1].1) {
        bail!("--pcr: a PCR index is given twice");
    }
    Ok(ExpectedPcrs {
        hash_alg: alg,
        values: parsed.into_iter().map(|(_, i, v)| (i, v)).collect(),
    })
}

fn save_challenge(path: &Path, c: &Challenge) -> Result<()> {
    write(path, c.to_text().as_bytes())
}

fn load_challenge(path: &Path) -> Result<Challenge> {
    let text = String::from_utf8(read(path)?).context("challenge file is not text")?;
    Challenge::from_text(&text).with_context(|| format!("{}", path.display()))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Report { report } => {
            let manifest = report.manifest.as_deref().map(read).transpose()?;
            let nonce = report.nonce()?;
            let binding = match (&nonce, &manifest) {
                (Some(n), Some(m)) => Some((n.as_slice(), m.as_slice())),
                (None, None) => None,
                _ => bail!("--nonce and --manifest go together"),
            };
            let trust = report.trust()?;
            let report_bytes = read(&report.report)?;
            let verified = svsm_verifier::verify_report(
                &trust,
                &report_bytes,
                binding,
                report.measurement()?.as_ref(),
            )?;
            println!(
                "report: OK (version {}, VMPL {})",
                verified.version(),
                verified.vmpl()
            );
            if report.no_measurement_check {
                println!("measurement: NOT CHECKED (--no-measurement-check)");
            }
            println!("measurement: {}", hex::encode(verified.measurement()));
            if binding.is_some() {
                println!("REPORT_DATA: binds the nonce and the services manifest");
            }
        }
        Command::Challenge {
            manifest: manifest_path,
            ak_public,
            single_service,
            out_dir,
        } => {
            let manifest_bytes = read(&manifest_path)?;
            let ek = if single_service {
                &manifest_bytes[..]
            } else {
                manifest::vtpm_ek(&manifest_bytes)?
            };
            let challenge = Challenge::new(&mut getrandom_sys_rng::SysRng, ek, &read(&ak_public)?)?;
            fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {}", out_dir.display()))?;
            let mut tools = vec![0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1];
            tools.extend_from_slice(&challenge.blob.id_object);
            tools.extend_from_slice(&challenge.blob.encrypted_secret);
            write(&out_dir.join("credential"), &tools)?;
            write(&out_dir.join("id_object"), &challenge.blob.id_object)?;
            write(
                &out_dir.join("encrypted_secret"),
                &challenge.blob.encrypted_secret,
            )?;
            save_challenge(&out_dir.join("challenge"), &challenge)?;
            println!("challenge: written to {}", out_dir.display());
        }
        Command::Full {
            report,
            ak_public,
            challenge,
            activated_secret,
            quote,
            quote_signature,
            pcrs,
            single_service,
        } => {
            let manifest = read(
                report
                    .manifest
                    .as_deref()
                    .context("full verification needs --manifest")?,
            )?;
            let trust = report.trust()?;
            let policy = Policy {
                manifest_kind: if single_service {
                    ManifestKind::Vtpm
                } else {
                    ManifestKind::Services
                },
                vcek: trust,
                nonce: report.nonce()?.context("full verification needs --nonce")?,
                pcrs: expected_pcrs(&pcrs)?,
                measurement: report.measurement()?,
            };
            let report_bytes = read(&report.report)?;
            let ak = read(&ak_public)?;
            let secret = read(&activated_secret)?;
            let quote = read(&quote)?;
            let signature = read(&quote_signature)?;
            let evidence = Evidence {
                report: &report_bytes,
                manifest: &manifest,
                ak_public: &ak,
                activated_secret: &secret,
                quote: &quote,
                quote_signature: &signature,
            };
            let verified = svsm_verifier::verify(&policy, &load_challenge(&challenge)?, &evidence)?;
            println!("attestation: OK");
            if report.no_measurement_check {
                println!("measurement: NOT CHECKED (--no-measurement-check)");
            }
            println!(
                "measurement: {}",
                hex::encode(verified.report.measurement())
            );
            println!(
                "EK name: {}",
                hex::encode(tpm::Public::parse(&verified.ek_public)?.name()?)
            );
        }
        Command::Ek {
            rsa_ek_cert,
            ecc_ek_cert,
            ca_cert,
            report,
            vcek,
            ask,
            ark,
            vcek_key,
            measurement: expected,
            no_measurement_check,
            min_tcb,
            ek_rsa_public,
            ek_ecc_public,
            state_evidence,
            min_state_generation,
        } => {
            let trust = match (&vcek, &ask, &ark, &vcek_key) {
                (Some(vcek), Some(ask), Some(ark), None) => VcekTrust::Chain(Box::new(
                    Chain::parse(&read(vcek)?, &read(ask)?, &read(ark)?)?,
                )),
                (None, None, None, Some(key)) => VcekTrust::Key(trusted_vcek_key(&read(key)?)?),
                _ => bail!("give either --vcek, --ask and --ark, or --vcek-key"),
            };
            let (rsa, ecc, ca, report) = (
                read(&rsa_ek_cert)?,
                read(&ecc_ek_cert)?,
                read(&ca_cert)?,
                read(&report)?,
            );
            let measurement = match measurement(expected.as_deref(), no_measurement_check)? {
                Some(m) => MeasurementCheck::Expect(m),
                None => MeasurementCheck::Unchecked,
            };
            let min_tcb = min_tcb
                .as_deref()
                .map(|t| {
                    t.parse::<Tcb>()
                        .map_err(|e| anyhow::anyhow!("--min-tcb: {e}"))
                })
                .transpose()?;
            let ek_rsa = ek_rsa_public.as_deref().map(read).transpose()?;
            let ek_ecc = ek_ecc_public.as_deref().map(read).transpose()?;
            let state = state_evidence.as_deref().map(read).transpose()?;
            let verified = ek_nv::verify_nv_evidence(
                &EkPolicy {
                    vcek: trust,
                    measurement,
                    min_tcb,
                    min_state_generation,
                },
                &NvEvidence {
                    rsa_ek_cert: &rsa,
                    ecc_ek_cert: &ecc,
                    ca_cert: &ca,
                    report: &report,
                    state: state.as_deref(),
                },
                ek_nv::TpmEks {
                    rsa: ek_rsa.as_deref(),
                    ecc: ek_ecc.as_deref(),
                },
            )?;
            println!("endorsement evidence: OK");
            if no_measurement_check {
                println!("measurement: NOT CHECKED (--no-measurement-check)");
            }
            println!(
                "measurement: {}",
                hex::encode(verified.report.measurement())
            );
            println!("reported TCB: {}", verified.report.reported_tcb());
            match verified.state {
                Some(s) if s.generation == 0 => {
                    println!("vTPM state: new at this boot (generation 0)")
                }
                Some(s) => println!(
                    "vTPM state: generation {} (sealed blob sha256 {}); remember it and pass \
                     --min-state-generation {} next time to detect a rollback",
                    s.generation,
                    hex::encode(s.digest),
                    s.generation
                ),
                None => println!("vTPM state: not kept between boots"),
            }
            for (what, public) in [("RSA", &verified.ek_rsa), ("ECC", &verified.ek_ecc)] {
                println!(
                    "{what} EK name: {}",
                    hex::encode(tpm::Public::parse(public)?.name()?)
                );
            }
            for (what, given) in [("RSA", &ek_rsa), ("ECC", &ek_ecc)] {
                if given.is_some() {
                    println!("{what} EK: equal to the TPM's (tpm2_createek)");
                }
            }
        }
        Command::Eventlog(args) => measured_boot::eventlog(&args)?,
        Command::Policy(cmd) => measured_boot::policy(&cmd)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("svsm-verify: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn pcr_arguments_are_checked() {
        let zero = "00".repeat(32);
        let p = expected_pcrs(&[format!("sha256:7={zero}"), format!("sha256:0={zero}")]).unwrap();
        assert_eq!(p.hash_alg, tpm::ALG_SHA256);
        assert_eq!(p.values.iter().map(|v| v.0).collect::<Vec<_>>(), [0, 7]);
        for bad in [
            format!("sha1:0={zero}"),
            format!("sha256:24={zero}"),
            format!("sha256:x={zero}"),
            "sha256:0=00".to_string(),
            format!("sha256 0={zero}"),
            "sha256:0=zz".to_string(),
        ] {
            assert!(parse_pcr(&bad).is_err(), "{bad} accepted");
        }
        assert!(expected_pcrs(&[format!("sha256:1={zero}"), format!("sha256:1={zero}")]).is_err());
        assert!(expected_pcrs(&[]).is_err());
        let z384 = "00".repeat(48);
        assert!(expected_pcrs(&[format!("sha256:1={zero}"), format!("sha384:2={z384}")]).is_err());
    }

    #[test]
    fn a_missing_measurement_is_refused_unless_opted_out() {
        let err = measurement(None, false).unwrap_err();
        assert_eq!(
            err.downcast_ref::<svsm_verifier::Error>(),
            Some(&svsm_verifier::Error::MeasurementRequired)
        );
        assert_eq!(measurement(None, true).unwrap(), None);
        assert_eq!(
            measurement(Some(&"ab".repeat(48)), false).unwrap(),
            Some([0xAB; 48])
        );
        assert!(measurement(Some("abcd"), false).is_err());
    }

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
    }
}
