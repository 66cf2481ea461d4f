//! tpm2-tools (Debian's, over the `mssim` TCTI) against the daemon: every command
//! travels the daemon's default path into the vTPM. Each test starts its own daemon.

mod common;

use common::{hex, Daemon};
use sha2::{Digest, Sha256};

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA-256 (RFC 2104) of `data` under a key of at most 64 bytes.
fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The TPM name tpm2_readpublic prints for an object.
fn name_of(d: &Daemon, context: &str) -> String {
    let out = d.tool_flush("tpm2_readpublic", &["-c", context]);
    out.lines()
        .find_map(|l| l.strip_prefix("name: "))
        .unwrap_or_else(|| panic!("no name in {out}"))
        .trim()
        .to_string()
}

/// Reads one SHA-256 PCR as raw bytes.
fn pcr(d: &Daemon, index: u32) -> Vec<u8> {
    let file = format!("pcr{index}.bin");
    d.tool("tpm2_pcrread", &[&format!("sha256:{index}"), "-o", &file]);
    d.read(&file)
}

#[test]
fn startup_selftest_and_capabilities() {
    let d = Daemon::start(&[]);
    assert_eq!(
        d.backend, "Svsm",
        "the default path is the SVSM on the emulated machine"
    );
    // The SVSM already started the TPM: the guest's Startup gets TPM_RC_INITIALIZE,
    // which tpm2_startup accepts.
    d.tool("tpm2_startup", &["-c"]);
    d.tool("tpm2_selftest", &["--fulltest"]);
    let fixed = d.tool("tpm2_getcap", &["properties-fixed"]);
    assert!(
        fixed.contains("TPM2_PT_MAX_COMMAND_SIZE:\n  raw: 0xFF7"),
        "max command size is 4087:\n{fixed}"
    );
    assert!(
        fixed.contains("TPM2_PT_MAX_RESPONSE_SIZE:\n  raw: 0xFF7"),
        "max response size is 4087:\n{fixed}"
    );
    assert!(fixed.contains("TPM2_PT_FAMILY_INDICATOR:\n  raw: 0x322E3000"));
    // libtpms 0.10: TPM 2.0 revision 1.83 (0xB7).
    assert!(
        fixed.contains("TPM2_PT_REVISION:\n  raw: 0xB7\n  value: 1.83"),
        "revision 1.83:\n{fixed}"
    );
    let commands = d.tool("tpm2_getcap", &["commands"]);
    // The default-v1 profile is active: TPM2_ECC_Encrypt (0x199) and
    // TPM2_PolicyCapability (0x19B) exist in it, not in the "null" profile.
    assert!(commands.contains("commandIndex: 0x199"), "{commands}");
    assert!(commands.contains("commandIndex: 0x19b"), "{commands}");
    assert!(commands.contains("TPM2_CC_CreatePrimary"), "{commands}");
    assert!(commands.contains("TPM2_CC_Quote"), "{commands}");
    let pcrs = d.tool("tpm2_getcap", &["pcrs"]);
    assert!(pcrs.contains("sha256"), "{pcrs}");
}

#[test]
fn getrandom_returns_fresh_bytes() {
    let d = Daemon::start(&[]);
    d.tool("tpm2_getrandom", &["-o", "r1", "32"]);
    d.tool("tpm2_getrandom", &["-o", "r2", "32"]);
    let (a, b) = (d.read("r1"), d.read("r2"));
    assert_eq!(a.len(), 32);
    assert_eq!(b.len(), 32);
    assert_ne!(a, b);
    assert_ne!(a, vec![0; 32]);
}

#[test]
fn pcrextend_and_pcrevent_match_sha256_computed_here() {
    let d = Daemon::start(&[]);
    assert_eq!(pcr(&d, 10), vec![0; 32], "PCR 10 starts at zero");
    let digest = sha256(b"measured by the test");
    d.tool("tpm2_pcrextend", &[&format!("10:sha256={}", hex(&digest))]);
    let mut expected = sha256(&[[0u8; 32], digest].concat());
    assert_eq!(pcr(&d, 10), expected);
    // A second extend chains.
    d.tool("tpm2_pcrextend", &[&format!("10:sha256={}", hex(&digest))]);
    expected = sha256(&[expected, digest].concat());
    assert_eq!(pcr(&d, 10), expected);

    let event = b"an event log entry";
    d.write("event", event);
    let out = d.tool("tpm2_pcrevent", &["11", "event"]);
    assert!(
        out.to_lowercase().contains(&hex(&sha256(event))),
        "pcrevent prints the event digest:\n{out}"
    );
    assert_eq!(pcr(&d, 11), sha256(&[[0u8; 32], sha256(event)].concat()));
}

#[test]
fn createprimary_rsa_and_ecc_are_deterministic_per_seed() {
    let d = Daemon::start(&[]);
    for (alg, kind) in [("rsa2048", "rsa"), ("ecc256", "ecc")] {
        d.tool_flush("tpm2_createprimary", &["-C", "o", "-G", alg, "-c", "a.ctx"]);
        let first = name_of(&d, "a.ctx");
        let public = d.tool_flush("tpm2_readpublic", &["-c", "a.ctx"]);
        assert!(
            public.contains(&format!("type:\n  value: {kind}")),
            "{public}"
        );
        d.tool_flush("tpm2_createprimary", &["-C", "o", "-G", alg, "-c", "b.ctx"]);
        assert_eq!(
            name_of(&d, "b.ctx"),
            first,
            "same seed, same template, same key"
        );
    }
}

#[test]
fn endorsement_key_equals_the_one_the_vtpm_vouches_for() {
    let d = Daemon::start(&[]);
    let Some(expected) = d.ek_name.clone() else {
        panic!("the daemon prints the EK name");
    };
    // tpm2_createek's default RSA template is the EK profile's template L-1.
    d.tool_flush(
        "tpm2_createek",
        &["-G", "rsa", "-c", "ek.ctx", "-u", "ek.pub"],
    );
    assert_eq!(name_of(&d, "ek.ctx"), expected);
}

#[test]
fn create_load_sign_and_verify() {
    let d = Daemon::start(&[]);
    d.tool_flush("tpm2_createprimary", &["-C", "o", "-c", "prim.ctx"]);
    d.write("msg", b"message to sign");
    d.write("other", b"message not signed");
    for alg in ["rsa2048", "ecc256"] {
        d.tool_flush(
            "tpm2_create",
            &[
                "-C", "prim.ctx", "-G", alg, "-u", "key.pub", "-r", "key.priv",
            ],
        );
        d.tool_flush(
            "tpm2_load",
            &[
                "-C", "prim.ctx", "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx",
            ],
        );
        d.tool_flush(
            "tpm2_sign",
            &["-c", "key.ctx", "-g", "sha256", "-o", "sig", "msg"],
        );
        d.tool_flush(
            "tpm2_verifysignature",
            &["-c", "key.ctx", "-g", "sha256", "-m", "msg", "-s", "sig"],
        );
        let bad = d.try_tool(
            "tpm2_verifysignature",
            &["-c", "key.ctx", "-g", "sha256", "-m", "other", "-s", "sig"],
        );
        assert!(
            !bad.status.success(),
            "{alg}: a signature over another message"
        );
    }
}

#[test]
fn quote_and_checkquote() {
    let d = Daemon::start(&[]);
    d.tool_flush(
        "tpm2_createek",
        &["-G", "rsa", "-c", "ek.ctx", "-u", "ek.pub"],
    );
    d.tool_flush(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u",
            "ak.pub", "-n", "ak.name",
        ],
    );
    let digest = sha256(b"boot component");
    d.tool("tpm2_pcrextend", &[&format!("12:sha256={}", hex(&digest))]);
    d.tool_flush(
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            "sha256:0,12",
            "-q",
            "0badc0de",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-o",
            "quote.pcrs",
            "-g",
            "sha256",
        ],
    );
    d.tool(
        "tpm2_checkquote",
        &[
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "quote.pcrs",
            "-g",
            "sha256",
            "-q",
            "0badc0de",
        ],
    );
    let wrong_nonce = d.try_tool(
        "tpm2_checkquote",
        &[
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "quote.pcrs",
            "-g",
            "sha256",
            "-q",
            "0badc0df",
        ],
    );
    assert!(!wrong_nonce.status.success(), "a quote for another nonce");
    // The PCR values in the quote are the ones the test extended.
    let pcrs = d.read("quote.pcrs");
    let expected = sha256(&[[0u8; 32], digest].concat());
    assert!(
        pcrs.windows(32).any(|w| w == expected),
        "PCR 12 in the quote"
    );
}

#[test]
fn nv_define_write_read_undefine() {
    let d = Daemon::start(&[]);
    let data: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(7)).collect();
    d.write("data", &data);
    d.tool(
        "tpm2_nvdefine",
        &[
            "0x1500016",
            "-C",
            "o",
            "-s",
            "32",
            "-a",
            "ownerread|ownerwrite",
        ],
    );
    d.tool("tpm2_nvwrite", &["0x1500016", "-C", "o", "-i", "data"]);
    d.tool(
        "tpm2_nvread",
        &["0x1500016", "-C", "o", "-s", "32", "-o", "back"],
    );
    assert_eq!(d.read("back"), data);
    d.tool("tpm2_nvundefine", &["0x1500016", "-C", "o"]);
    let gone = d.try_tool("tpm2_nvread", &["0x1500016", "-C", "o", "-s", "32"]);
    assert!(!gone.status.success(), "the index is gone");
}

#[test]
fn seal_and_unseal_under_a_pcr_policy() {
    let d = Daemon::start(&[]);
    d.tool_flush("tpm2_createprimary", &["-C", "o", "-c", "prim.ctx"]);
    d.tool("tpm2_pcrread", &["sha256:13", "-o", "pcr13.bin"]);
    d.tool(
        "tpm2_createpolicy",
        &[
            "--policy-pcr",
            "-l",
            "sha256:13",
            "-f",
            "pcr13.bin",
            "-L",
            "policy",
        ],
    );
    let secret = b"disk key 0123456789";
    d.write("secret", secret);
    d.tool_flush(
        "tpm2_create",
        &[
            "-C",
            "prim.ctx",
            "-L",
            "policy",
            "-i",
            "secret",
            "-u",
            "seal.pub",
            "-r",
            "seal.priv",
            "-c",
            "seal.ctx",
        ],
    );
    d.tool_flush(
        "tpm2_unseal",
        &["-c", "seal.ctx", "-p", "pcr:sha256:13", "-o", "unsealed"],
    );
    assert_eq!(d.read("unsealed"), secret);
    // A changed PCR: the policy no longer holds.
    d.tool(
        "tpm2_pcrextend",
        &[&format!("13:sha256={}", hex(&sha256(b"tampered")))],
    );
    let refused = d.try_tool("tpm2_unseal", &["-c", "seal.ctx", "-p", "pcr:sha256:13"]);
    assert!(!refused.status.success(), "unseal after the PCR changed");
}

#[test]
fn hmac_with_an_imported_key_and_hash() {
    let d = Daemon::start(&[]);
    d.tool_flush("tpm2_createprimary", &["-C", "o", "-c", "prim.ctx"]);
    let key: Vec<u8> = (1..=32u8).collect();
    d.write("key", &key);
    d.tool_flush(
        "tpm2_import",
        &[
            "-C", "prim.ctx", "-G", "hmac", "-i", "key", "-u", "key.pub", "-r", "key.priv",
        ],
    );
    d.tool_flush(
        "tpm2_load",
        &[
            "-C", "prim.ctx", "-u", "key.pub", "-r", "key.priv", "-c", "hmac.ctx",
        ],
    );
    let data = b"authenticate me";
    d.write("data", data);
    d.tool_flush(
        "tpm2_hmac",
        &["-c", "hmac.ctx", "-g", "sha256", "-o", "mac", "data"],
    );
    assert_eq!(d.read("mac"), hmac_sha256(&key, data));

    d.tool(
        "tpm2_hash",
        &["-C", "o", "-g", "sha256", "-o", "digest", "data"],
    );
    assert_eq!(d.read("digest"), sha256(data));
}

#[test]
fn evictcontrol_then_clear() {
    let d = Daemon::start(&[]);
    d.tool_flush("tpm2_createprimary", &["-C", "o", "-c", "prim.ctx"]);
    let before = name_of(&d, "prim.ctx");
    d.tool_flush(
        "tpm2_evictcontrol",
        &["-C", "o", "-c", "prim.ctx", "0x81000001"],
    );
    let handles = d.tool("tpm2_getcap", &["handles-persistent"]);
    assert!(handles.contains("0x81000001"), "{handles}");
    assert_eq!(name_of(&d, "0x81000001"), before);

    // Clear (lockout authorization): persistent owner objects go, the storage seed
    // changes, so the same template gives another key.
    d.tool("tpm2_clear", &["-c", "l"]);
    let handles = d.tool("tpm2_getcap", &["handles-persistent"]);
    assert!(!handles.contains("0x81000001"), "{handles}");
    d.tool_flush("tpm2_createprimary", &["-C", "o", "-c", "after.ctx"]);
    assert_ne!(name_of(&d, "after.ctx"), before);
}
