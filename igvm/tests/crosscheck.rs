//! Cross-check against sev-snp-measure (PyPI), an independent implementation of the SNP
//! launch digest: with Debian trixie's OVMF inside the IGVM file, two vCPUs, see
//! `crosscheck.py` for what is compared. `cargo xtask test` fetches both inputs.

mod common;

use std::fmt::Write;
use std::process::Command;

use common::*;
use svsm_igvm::build::{build, BuildConfig};
use svsm_igvm::firmware::Firmware;
use svsm_igvm::measure::{hex, measure, HostConfig};

#[test]
fn digest_agrees_with_sev_snp_measure() {
    let dir = scratch("crosscheck");
    let ovmf = debian_ovmf("trixie");
    let ssm = workspace().join("target/sev-snp-measure");
    assert!(
        ssm.join("sevsnpmeasure/gctx.py").exists(),
        "{} is missing: run `cargo xtask test` (it fetches sev-snp-measure)",
        ssm.display()
    );
    let kernel = put(&dir, "kernel.elf", &small_kernel(0x4000_0000));
    let mut config = BuildConfig::new(kernel, Some(ovmf.clone()));
    config.svsm_size = 16 << 20;
    let built = build(&config).unwrap();
    let host = HostConfig {
        vcpus: 2,
        ..HostConfig::default()
    };
    let m = measure(&built.file, &host).unwrap();
    let fw = Firmware::load(&ovmf).unwrap();

    let mut json = String::from("{");
    let _ = write!(json, "\"ovmf\": \"{}\", ", ovmf.display());
    let _ = write!(json, "\"ovmf_gpa\": {}, ", fw.base());
    let _ = write!(json, "\"ovmf_pages\": {}, ", fw.data.len() / 4096);
    let sections: Vec<String> = fw
        .sections
        .iter()
        .map(|s| format!("[{}, {}, {}]", s.gpa, s.size, s.kind.raw()))
        .collect();
    let _ = write!(json, "\"sections\": [{}], ", sections.join(", "));
    let _ = write!(
        json,
        "\"launch\": {{\"rip\": {}, \"rax\": {}, \"rbx\": {}, \"sev_features\": 1, \"vcpu_signature\": {}}}, ",
        built.layout.entry,
        u32::from_le_bytes(*b"IGVM"),
        built.layout.param_block_gpa,
        host.vcpu_signature
    );
    let steps: Vec<String> = m
        .steps
        .iter()
        .map(|s| {
            format!(
                "{{\"type\": {}, \"gpa\": {}, \"contents\": \"{}\", \"digest\": \"{}\"}}",
                s.page_type,
                s.gpa,
                hex(&s.contents),
                hex(&s.digest)
            )
        })
        .collect();
    let _ = write!(json, "\"steps\": [{}], ", steps.join(", "));
    let vmsas: Vec<String> = m
        .vmsa_pages
        .iter()
        .map(|p| format!("\"{}\"", hex(p)))
        .collect();
    let _ = write!(json, "\"vmsa\": [{}], ", vmsas.join(", "));
    let _ = write!(json, "\"digest\": \"{}\"}}", hex(&m.digest));
    let input = put(&dir, "ours.json", json.as_bytes());

    let out = Command::new("python3")
        .arg(workspace().join("igvm/tests/crosscheck.py"))
        .arg(&input)
        .env("PYTHONPATH", &ssm)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sev-snp-measure disagrees:\n{stdout}");
    assert!(stdout.contains("crosscheck: 6 checks agree"), "{stdout}");
}
