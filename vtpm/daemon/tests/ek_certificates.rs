//! The vTPM's endorsement evidence as standard tools see it through the daemon (the SVSM
//! on the emulated machine, whose PSP signs with the test key): EK certificates that
//! `tpm2_nvread` returns and `openssl` prints, whose keys are `tpm2_createek`'s, and a
//! platform hierarchy the guest cannot use.

mod common;

use std::process::Command;

use common::Daemon;
use svsm_verifier::ek_nv::{verify_nv_evidence, NvEvidence, TpmEks};

/// The indices the SVSM writes (protocol/src/ek_evidence.rs).
const INDICES: [&str; 5] = [
    "0x1C00002",
    "0x1C0000A",
    "0x1C00100",
    "0x1C00101",
    "0x1C00110",
];

/// Runs openssl in the daemon's scratch directory; returns stdout (must succeed).
fn openssl(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(d.path(""))
        .output()
        .expect("cannot run openssl (install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DER SubjectPublicKeyInfo of a certificate file (DER).
fn cert_key(d: &Daemon, cert: &str, out: &str) -> Vec<u8> {
    openssl(
        d,
        &[
            "x509", "-inform", "der", "-in", cert, "-noout", "-pubkey", "-out", "pem",
        ],
    );
    openssl(
        d,
        &[
            "pkey", "-pubin", "-in", "pem", "-outform", "der", "-out", out,
        ],
    );
    d.read(out)
}

#[test]
fn ek_certificates_in_nv_carry_the_keys_tpm2_createek_makes() {
    let d = Daemon::start(&[]);
    let handles = d.tool("tpm2_getcap", &["handles-nv-index"]);
    for index in INDICES {
        assert!(handles.contains(index), "{index} missing:\n{handles}");
        let public = d.tool("tpm2_nvreadpublic", &[index]);
        // PLATFORMCREATE|PPWRITE|PPREAD|WRITEDEFINE|OWNERREAD|AUTHREAD|NO_DA, written and
        // write-locked.
        assert!(public.contains("value: 0x62072801"), "{index}:\n{public}");
    }
    for (index, file, alg, usage) in [
        ("0x01C00002", "rsa.der", "rsa", "Key Encipherment"),
        ("0x01C0000A", "ecc.der", "ecc", "Key Agreement"),
    ] {
        d.tool("tpm2_nvread", &[index, "-o", file]);
        let text = openssl(
            &d,
            &["x509", "-inform", "der", "-in", file, "-noout", "-text"],
        );
        for needle in [
            "X509v3 Subject Alternative Name: critical",
            "DirName:/2.23.133.2.1=id:",
            "2.23.133.2.2=",
            "2.23.133.2.3=id:",
            "CA:FALSE",
            usage,
            "2.23.133.8.1",
            "X509v3 Authority Key Identifier",
            "X509v3 Subject Directory Attributes",
            "Issuer: CN = SVSM vTPM endorsement CA (this boot only)",
        ] {
            assert!(text.contains(needle), "{index}: no {needle:?} in\n{text}");
        }
        d.tool_flush(
            "tpm2_createek",
            &[
                "-G",
                alg,
                "-c",
                "ek.ctx",
                "-u",
                &format!("{alg}.pub"),
                "-f",
                "der",
            ],
        );
        assert_eq!(
            cert_key(&d, file, &format!("{alg}.cert-key")),
            d.read(&format!("{alg}.pub")),
            "the {alg} EK certificate certifies tpm2_createek's key"
        );
    }
    // Both chain to the CA certificate at 0x01C00100.
    d.tool("tpm2_nvread", &["0x01C00100", "-o", "ca.der"]);
    openssl(
        &d,
        &["x509", "-inform", "der", "-in", "ca.der", "-out", "ca.pem"],
    );
    for cert in ["rsa", "ecc"] {
        openssl(
            &d,
            &[
                "x509",
                "-inform",
                "der",
                "-in",
                &format!("{cert}.der"),
                "-out",
                &format!("{cert}.pem"),
            ],
        );
        let ok = openssl(&d, &["verify", "-CAfile", "ca.pem", &format!("{cert}.pem")]);
        assert!(ok.contains(": OK"), "{ok}");
    }
    // The report is whole.
    d.tool("tpm2_nvread", &["0x01C00110", "-o", "report.bin"]);
    assert_eq!(d.read("report.bin").len(), 0x4A0);

    // svsm-verifier accepts the chain from what tpm2_nvread returned: the VCEK from NV
    // 0x01C00101, ASK and ARK of the emulated PSP's test chain, the emulated launch's
    // measurement (zeros), and the EKs tpm2_createek made.
    d.tool("tpm2_nvread", &["0x01C00101", "-o", "vcek.der"]);
    let policy = common::emulated_policy(&d.read("vcek.der"), None);
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
        state: None,
    };
    let (rsa_pub, ecc_pub) = (d.read("rsa.pub"), d.read("ecc.pub"));
    // tpm2_createek -f der wrote SubjectPublicKeyInfo; the TPM's own TPM2B_PUBLIC:
    d.tool_flush(
        "tpm2_createek",
        &["-G", "rsa", "-c", "ek.ctx", "-u", "rsa.tpm"],
    );
    d.tool_flush(
        "tpm2_createek",
        &["-G", "ecc", "-c", "ek.ctx", "-u", "ecc.tpm"],
    );
    assert!(!rsa_pub.is_empty() && !ecc_pub.is_empty());
    let verified = verify_nv_evidence(
        &policy,
        &evidence,
        TpmEks {
            rsa: Some(&d.read("rsa.tpm")),
            ecc: Some(&d.read("ecc.tpm")),
        },
    )
    .expect("svsm-verifier accepts the NV evidence");
    assert_eq!(verified.report.vmpl(), 0);
    // And refuses it with the ECC EK in the RSA EK's place.
    assert!(verify_nv_evidence(
        &policy,
        &evidence,
        TpmEks {
            rsa: Some(&d.read("ecc.tpm")),
            ecc: None,
        }
    )
    .is_err());
}

#[test]
fn the_guest_cannot_use_the_platform_hierarchy() {
    let d = Daemon::start(&[]);
    let refused = |tool: &str, args: &[&str], code: &str| {
        let out = d.try_tool(tool, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tool} {args:?} succeeded");
        assert!(
            stderr.contains(code),
            "{tool} {args:?}: expected {code}:\n{stderr}"
        );
    };
    // TPM_RC_HIERARCHY (0x185): phEnable is clear.
    refused(
        "tpm2_hierarchycontrol",
        &["-C", "p", "shEnable", "clear"],
        "0x185",
    );
    refused(
        "tpm2_hierarchycontrol",
        &["-C", "p", "ehEnable", "clear"],
        "0x185",
    );
    refused(
        "tpm2_nvdefine",
        &["-C", "p", "-s", "32", "0x01C00200"],
        "0x185",
    );
    refused(
        "tpm2_nvdefine",
        &["-C", "p", "-s", "32", "0x01C00002"],
        "0x185",
    );
    refused("tpm2_nvundefine", &["-C", "p", "0x01C00002"], "0x185");
    refused("tpm2_nvundefine", &["-C", "p", "0x01C0000A"], "0x185");
    refused("tpm2_nvundefine", &["-C", "p", "0x01C00100"], "0x185");
    refused("tpm2_changeauth", &["-c", "p", "newpass"], "0x185");
    refused("tpm2_clear", &["-c", "p"], "0x185");
    // The owner cannot remove or rewrite a platform-created index either:
    // TPM_RC_NV_AUTHORIZATION (0x149) for the undefine, TPM_RC_NV_LOCKED (0x148) or
    // TPM_RC_NV_AUTHORIZATION for the write.
    refused("tpm2_nvundefine", &["-C", "o", "0x01C00002"], "0x149");
    d.write("junk", b"junk");
    let out = d.try_tool("tpm2_nvwrite", &["-C", "o", "-i", "junk", "0x01C00002"]);
    assert!(
        !out.status.success(),
        "an owner write of the EK certificate succeeded"
    );
    // The EK certificate is unchanged, and the owner hierarchy still works (SeaBIOS's
    // attempt to disable it with the platform authorization fails the same way).
    d.tool_flush("tpm2_createprimary", &["-C", "o", "-c", "prim.ctx"]);
    d.tool("tpm2_nvread", &["0x01C00002", "-o", "after.der"]);
    openssl(
        &d,
        &["x509", "-inform", "der", "-in", "after.der", "-noout"],
    );
    // TPM2_Clear with the lockout authorization leaves platform-created indices alone.
    d.tool("tpm2_clear", &["-c", "l"]);
    d.tool("tpm2_nvread", &["0x01C00002", "-o", "cleared.der"]);
    assert_eq!(d.read("cleared.der"), d.read("after.der"));
}

#[test]
fn the_report_carries_the_launch_measurement_the_daemon_was_given() {
    let measurement = "5a".repeat(48);
    let d = Daemon::start(&["--launch-measurement", &measurement]);
    d.tool("tpm2_nvread", &["0x01C00110", "-o", "report.bin"]);
    let report = d.read("report.bin");
    // MEASUREMENT: offset 0x90, 48 bytes (SEV-SNP ABI, ATTESTATION_REPORT).
    assert_eq!(common::hex(&report[0x90..0xC0]), measurement);

    for (args, needle) in [
        (
            vec!["--launch-measurement", "abcd"],
            "48 bytes (96 hex digits), not 2",
        ),
        (
            vec!["--launch-measurement", &measurement, "--backend", "engine"],
            "--backend svsm only",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vtpm-daemon"))
            .args(&args)
            .args(["--port", "0"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
    }
}
