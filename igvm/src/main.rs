//! `svsm-igvm`: builds, measures and inspects the SVSM IGVM file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use igvm::IgvmFile;
use svsm_igvm::build::{self, BuildConfig};
use svsm_igvm::measure::{self, HostConfig};
use svsm_igvm::{inspect, output, Error};

/// Builds, measures and inspects the SVSM IGVM file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// A number in decimal or with a 0x prefix.
fn number(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not a number (decimal or 0x-prefixed hex)"))
}

/// A size: a number, optionally with a K, M or G suffix (powers of 1024).
fn size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n = number(digits)?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[derive(Debug, clap::Args)]
struct HostArgs {
    /// Number of vCPUs QEMU creates (one VMSA each is measured).
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// CPUID family/model/stepping signature of the vCPUs (default: EPYC-v4, 0x800f12).
    #[arg(long, value_parser = number)]
    vcpu_signature: Option<u64>,
}

impl HostArgs {
    fn config(&self, sev_features: Option<u64>) -> Result<HostConfig, Error> {
        let signature = match self.vcpu_signature {
            None => measure::DEFAULT_VCPU_SIGNATURE,
            Some(s) => u32::try_from(s).map_err(|_| {
                Error::InvalidOption(format!("--vcpu-signature {s:#x} exceeds 32 bits"))
            })?,
        };
        Ok(HostConfig {
            vcpus: self.vcpus,
            sev_features,
            vcpu_signature: signature,
        })
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build an IGVM file from the kernel ELF and, optionally, an OVMF image.
    Build {
        /// The SVSM kernel ELF.
        #[arg(long)]
        kernel: PathBuf,
        /// An OVMF image (with an SVSM calling-area section) to run at the guest VMPL.
        #[arg(long)]
        firmware: Option<PathBuf>,
        /// Where to write the IGVM file.
        #[arg(long, short)]
        output: PathBuf,
        /// Size of the SVSM's memory range, from the kernel's first page.
        #[arg(long, value_parser = size, default_value = "64M")]
        svsm_size: u64,
        /// Guest RAM the launch gives QEMU (-m).
        #[arg(long, value_parser = size, default_value = "2G")]
        memory: u64,
        /// SNP guest policy.
        #[arg(long, value_parser = number, default_value = "0x30000")]
        policy: u64,
        /// The launch VMSA's sev_features.
        #[arg(long, value_parser = number, default_value = "0x1")]
        sev_features: u64,
        /// How many vCPUs the MADT area must hold.
        #[arg(long, default_value_t = build::DEFAULT_MAX_VCPUS)]
        max_vcpus: u32,
        /// Ask the host for an ACPI MADT (needs a QEMU whose IGVM loader has it; 10.1 has not).
        #[arg(long)]
        madt: bool,
        /// Describe only the SEV-SNP platform (no native platform header).
        #[arg(long)]
        snp_only: bool,
        /// Host configuration for the digest printed after the build.
        #[command(flatten)]
        host: HostArgs,
    },
    /// Print the SNP launch digest QEMU/KVM will compute for a file.
    Measure {
        /// The IGVM file.
        file: PathBuf,
        /// Host configuration.
        #[command(flatten)]
        host: HostArgs,
        /// The VM's sev_features (default: the launch VMSA's, which is what QEMU uses).
        #[arg(long, value_parser = number)]
        sev_features: Option<u64>,
        /// Also print every PAGE_INFO step.
        #[arg(long)]
        log: bool,
    },
    /// Print what a file contains.
    Inspect {
        /// The IGVM file.
        file: PathBuf,
    },
}

fn read_igvm(path: &PathBuf) -> Result<IgvmFile, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    svsm_igvm::parse_igvm(&bytes).map_err(|e| Error::Igvm(format!("{}: {e}", path.display())))
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Cmd::Build {
            kernel,
            firmware,
            output: out,
            svsm_size,
            memory,
            policy,
            sev_features,
            max_vcpus,
            madt,
            snp_only,
            host,
        } => {
            let host = host.config(None)?;
            let config = BuildConfig {
                svsm_size,
                memory,
                policy,
                sev_features,
                max_vcpus,
                madt,
                native: !snp_only,
                ..BuildConfig::new(kernel, firmware)
            };
            let built = build::build(&config)?;
            // Measure before writing: a file that breaks a launch rule is never written.
            let m = measure::measure(&built.file, &host)?;
            output::write_atomic(&out, &built.bytes)?;
            println!("{}: {} bytes", out.display(), built.bytes.len());
            println!(
                "launch digest ({} vCPU): {}",
                host.vcpus,
                measure::hex(&m.digest)
            );
            println!(
                "vTPM engine (part of that digest): {}",
                inspect::engine(&built.file).unwrap_or_else(|| "not found in the kernel".into())
            );
            if built.layout.params.flags & svsm_protocol::igvm_params::PARAM_FLAG_FIRMWARE != 0 {
                let map = built.layout.params.firmware_memory_map;
                if map.size == 0 {
                    eprintln!(
                        "svsm-igvm: warning: the firmware names no IGVM memory map parameter \
                         (OVMF before edk2-stable202511): it will take QEMU's memory map, in \
                         which the SVSM range {:#x}+{:#x} is RAM, and stop when it validates \
                         that range",
                        built.layout.params.svsm.base, built.layout.params.svsm.size
                    );
                } else {
                    println!(
                        "firmware memory map: {:#x}+{:#x} (the SVSM writes the guest's map there)",
                        map.base, map.size
                    );
                }
            }
        }
        Cmd::Measure {
            file,
            host,
            sev_features,
            log,
        } => {
            let igvm = read_igvm(&file)?;
            let m = measure::measure(&igvm, &host.config(sev_features)?)?;
            if log {
                for s in &m.steps {
                    println!(
                        "{:<10} {:#014x} {} -> {}",
                        measure::page_type::name(s.page_type),
                        s.gpa,
                        measure::hex(&s.contents),
                        measure::hex(&s.digest)
                    );
                }
            }
            println!("{}", measure::hex(&m.digest));
        }
        Cmd::Inspect { file } => {
            let igvm = read_igvm(&file)?;
            print!("{}", inspect::listing(&igvm));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("svsm-igvm: error: {e}");
            ExitCode::FAILURE
        }
    }
}
