//! The command line from outside: good runs print size and digest; bad input gives a clear
//! error, a failing exit status and no output file (not even a partial one).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svsm-igvm"))
        .args(args)
        .output()
        .expect("run svsm-igvm")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs a build that must fail; checks the message and that `out` (and no temporary) exists.
fn build_fails(dir: &Path, args: &[&str], expect: &str) {
    let out = dir.join("out.igvm");
    let mut all = vec!["build", "--output", s(&out)];
    all.extend_from_slice(args);
    let o = tool(&all);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "succeeded: {all:?}");
    assert!(stderr.contains(expect), "stderr lacks {expect:?}: {stderr}");
    assert!(!out.exists(), "partial output left behind");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn build_measure_inspect_round_trip() {
    let dir = scratch("cli-ok");
    let kernel = put(&dir, "k.elf", &small_kernel(0x10_0000));
    let out = dir.join("svsm.igvm");
    let o = tool(&[
        "build",
        "--kernel",
        s(&kernel),
        "--output",
        s(&out),
        "--svsm-size",
        "1M",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(stdout.contains(&format!("{size} bytes")), "{stdout}");
    let digest_line = stdout
        .lines()
        .find(|l| l.starts_with("launch digest"))
        .unwrap();
    let digest = digest_line.rsplit(' ').next().unwrap();
    assert_eq!(digest.len(), 96);

    let m = tool(&["measure", s(&out)]);
    assert!(m.status.success());
    assert_eq!(
        String::from_utf8_lossy(&m.stdout).trim(),
        digest,
        "measure agrees with build"
    );
    let m2 = tool(&["measure", s(&out), "--vcpus", "2"]);
    assert_ne!(String::from_utf8_lossy(&m2.stdout).trim(), digest);

    let i = tool(&["inspect", s(&out)]);
    assert!(i.status.success());
    let listing = String::from_utf8_lossy(&i.stdout);
    for want in [
        "SEV_SNP",
        "NATIVE",
        "SNP guest policy 0x30000",
        "secrets",
        "cpuid",
        "memory map (host fills)",
        "vCPU count (host fills)",
        "SNP VMSA for vCPU 0 at 0xfffffffff000",
        "cr0 0x31",
        "rip 0x100010",
    ] {
        assert!(listing.contains(want), "listing lacks {want:?}:\n{listing}");
    }
}

#[test]
fn missing_kernel() {
    let dir = scratch("cli-missing");
    build_fails(&dir, &["--kernel", s(&dir.join("nope.elf"))], "cannot read");
}

#[test]
fn malformed_kernel() {
    let dir = scratch("cli-bad-elf");
    let k = put(&dir, "k.elf", b"\x7fELF but not really");
    build_fails(&dir, &["--kernel", s(&k)], "not a usable kernel ELF");
    let mut wrong_machine = small_kernel(0x10_0000);
    wrong_machine[18] = 3; // EM_386
    let k = put(&dir, "k2.elf", &wrong_machine);
    build_fails(&dir, &["--kernel", s(&k)], "not x86-64");
    let mut truncated = small_kernel(0x10_0000);
    truncated.truncate(0x100);
    let k = put(&dir, "k3.elf", &truncated);
    build_fails(&dir, &["--kernel", s(&k)], "outside the file");
}

#[test]
fn overlapping_segments() {
    let dir = scratch("cli-overlap");
    let elf = elf(
        0x10_0000,
        &[
            Seg {
                paddr: 0x10_0000,
                bytes: vec![1; 0x2000],
                mem_size: 0x2000,
            },
            Seg {
                paddr: 0x10_1000,
                bytes: vec![2; 0x1000],
                mem_size: 0x1000,
            },
        ],
    );
    let k = put(&dir, "k.elf", &elf);
    build_fails(&dir, &["--kernel", s(&k)], "overlapping regions");
}

#[test]
fn huge_segments_are_refused_before_allocating() {
    // Without the limit these allocate a page buffer per 4 KiB of p_memsz (4 GiB and
    // 1 TiB of memory): an out-of-memory kill instead of a message.
    let dir = scratch("cli-huge");
    for (paddr, mem_size, expect) in [
        (0x10_0000u64, 0x1_0000_0000u64, "does not end below 4 GiB"),
        (0x1_0000_0000, 0x100_0000_0000, "does not end below 4 GiB"),
        (0x10_0000, 0x4000_1000, "more than 0x40000000 bytes"),
    ] {
        let elf = elf(
            paddr,
            &[Seg {
                paddr,
                bytes: vec![1; 0x100],
                mem_size,
            }],
        );
        let k = put(&dir, "k.elf", &elf);
        build_fails(&dir, &["--kernel", s(&k)], expect);
    }
}

#[test]
fn entry_outside_the_image() {
    let dir = scratch("cli-entry");
    let elf = elf(
        0x50_0000,
        &[Seg {
            paddr: 0x10_0000,
            bytes: vec![1; 0x100],
            mem_size: 0x1000,
        }],
    );
    let k = put(&dir, "k.elf", &elf);
    build_fails(
        &dir,
        &["--kernel", s(&k)],
        "entry point 0x500000 lies outside",
    );
}

#[test]
fn missing_and_malformed_firmware() {
    let dir = scratch("cli-fw");
    let k = put(&dir, "k.elf", &small_kernel(0x4000_0000));
    build_fails(
        &dir,
        &["--kernel", s(&k), "--firmware", s(&dir.join("no.fd"))],
        "cannot read",
    );
    let fw = put(&dir, "zero.fd", &vec![0u8; 0x10_0000]);
    build_fails(
        &dir,
        &["--kernel", s(&k), "--firmware", s(&fw)],
        "not a usable firmware image",
    );
    let fw = put(&dir, "bookworm.fd", &firmware(0x20_0000, BOOKWORM_LIKE));
    build_fails(
        &dir,
        &["--kernel", s(&k), "--firmware", s(&fw)],
        "no SVSM calling-area section",
    );
    let mut overlapping = TRIXIE_LIKE.to_vec();
    overlapping.push((0x80_e000, 0x2000, 1));
    let fw = put(&dir, "overlap.fd", &firmware(0x20_0000, &overlapping));
    build_fails(
        &dir,
        &["--kernel", s(&k), "--firmware", s(&fw)],
        "overlapping regions: SEV metadata sections 0x80e000+0x1000 and 0x80e000+0x2000",
    );
}

#[test]
fn svsm_overlapping_firmware() {
    let dir = scratch("cli-svsm-fw");
    let k = put(&dir, "k.elf", &small_kernel(0x10_0000));
    let fw = put(&dir, "ovmf.fd", &firmware(0x20_0000, TRIXIE_LIKE));
    build_fails(
        &dir,
        &["--kernel", s(&k), "--firmware", s(&fw)],
        "overlapping regions: the SVSM range",
    );
}

#[test]
fn memory_that_does_not_fit() {
    let dir = scratch("cli-fit");
    let k = put(&dir, "k.elf", &small_kernel(0x10_0000));
    build_fails(
        &dir,
        &["--kernel", s(&k), "--svsm-size", "16K"],
        "memory does not fit",
    );
    build_fails(
        &dir,
        &["--kernel", s(&k), "--memory", "32M"],
        "memory does not fit",
    );
    let high = put(&dir, "high.elf", &small_kernel(0x9000_0000));
    build_fails(
        &dir,
        &["--kernel", s(&high), "--memory", "4G"],
        "memory does not fit",
    );
}

#[test]
fn bad_options() {
    let dir = scratch("cli-options");
    let k = put(&dir, "k.elf", &small_kernel(0x10_0000));
    build_fails(
        &dir,
        &["--kernel", s(&k), "--frobnicate"],
        "unexpected argument '--frobnicate'",
    );
    build_fails(
        &dir,
        &["--kernel", s(&k), "--svsm-size", "lots"],
        "is not a number",
    );
    build_fails(
        &dir,
        &["--kernel", s(&k), "--svsm-size", "0x1001"],
        "multiple of 4 KiB",
    );
    build_fails(
        &dir,
        &["--kernel", s(&k), "--sev-features", "0x20"],
        "lacks SNP",
    );
    build_fails(
        &dir,
        &["--kernel", s(&k), "--policy", "0x10000"],
        "bit 17 must be 1",
    );
    build_fails(
        &dir,
        &["--kernel", s(&k), "--vcpus", "0"],
        "--vcpus 0 is not between 1 and 4096",
    );
}

#[test]
fn measure_refuses_bad_files() {
    let dir = scratch("cli-measure");
    let f = put(&dir, "junk.igvm", b"not an igvm file at all");
    let o = tool(&["measure", s(&f)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid IGVM file"));
    let o = tool(&["inspect", s(&dir.join("none.igvm"))]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read"));
    // A vCPU count no KVM guest can have is refused, not measured page by page (a VMSA
    // page per vCPU: 16 TiB for u32::MAX).
    let k = put(&dir, "k.elf", &small_kernel(0x10_0000));
    let out = dir.join("ok.igvm");
    let o = tool(&[
        "build",
        "--kernel",
        s(&k),
        "--svsm-size",
        "1M",
        "--output",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for vcpus in ["0", "4097", "4294967295"] {
        let o = tool(&["measure", "--vcpus", vcpus, s(&out)]);
        assert!(!o.status.success(), "--vcpus {vcpus} accepted");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("is not between 1 and 4096"), "{stderr}");
    }
    assert!(tool(&["measure", "--vcpus", "4096", s(&out)])
        .status
        .success());
}

#[test]
fn snp_launch_script_command_line() {
    let script = workspace().join("scripts/snp/launch.sh");
    let o = Command::new("bash")
        .arg(&script)
        .args([
            "--dry-run",
            "--igvm",
            "x.igvm",
            "--smp",
            "4",
            "--memory",
            "8G",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = String::from_utf8_lossy(&o.stdout);
    for want in [
        "-machine q35,confidential-guest-support=sev0,memory-backend=ram0,igvm-cfg=igvm0",
        "-object memory-backend-memfd,id=ram0,size=8G,share=true",
        "-object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1",
        "-object igvm-cfg,id=igvm0,file=x.igvm",
        "-smp 4",
        "-m 8G",
    ] {
        assert!(line.contains(want), "command line lacks {want:?}: {line}");
    }
    assert!(
        !line.contains("-bios"),
        "firmware travels inside the IGVM file"
    );
    for bad in [
        &["--frobnicate"][..],
        &["--smp", "0"][..],
        &["--cbitpos", "x"][..],
    ] {
        let o = Command::new("bash")
            .arg(&script)
            .args(bad)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{bad:?} accepted");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("launch.sh:"),
            "{bad:?}"
        );
    }
}

#[test]
fn the_firmware_memory_map_is_reported_and_its_absence_warned_about() {
    let dir = scratch("cli-fw-map");
    let k = put(&dir, "k.elf", &small_kernel(0x4000_0000));
    let run = |fw: &Path| {
        let out = dir.join("svsm-ovmf.igvm");
        let o = tool(&[
            "build",
            "--kernel",
            s(&k),
            "--firmware",
            s(fw),
            "--svsm-size",
            "16M",
            "--output",
            s(&out),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let with_map = put(
        &dir,
        "forky.fd",
        &firmware_with_igvm(0x20_0000, FORKY_LIKE, Some(FORKY_IGVM)),
    );
    let (stdout, stderr) = run(&with_map);
    assert!(
        stdout.contains("firmware memory map: 0x812000+0xc0"),
        "{stdout}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    let without = put(&dir, "trixie.fd", &firmware(0x20_0000, TRIXIE_LIKE));
    let (stdout, stderr) = run(&without);
    assert!(!stdout.contains("firmware memory map"), "{stdout}");
    assert!(
        stderr.contains("warning") && stderr.contains("edk2-stable202511"),
        "{stderr}"
    );
    assert!(stderr.contains("0x40000000+0x1000000"), "{stderr}");
}

/// The engine's identity in the kernel image (behind its marker, here across a page
/// boundary) is printed by `build` and `inspect`; a kernel without one says so.
#[test]
fn the_vtpm_engine_in_the_image_is_reported() {
    let dir = scratch("cli-engine");
    let mut data = vec![0u8; 0x1100];
    let id = [
        svsm_protocol::vtpm::ENGINE_ID_MARKER,
        b"libtpms-dev 9.9-1 sha256:00ff\0",
    ]
    .concat();
    data[0xff8..0xff8 + id.len()].copy_from_slice(&id);
    let code: Vec<u8> = (0..0x1800u32).map(|i| (i * 7 + 3) as u8).collect();
    let kernel = put(
        &dir,
        "k.elf",
        &common::elf(
            0x10_0010,
            &[
                common::Seg {
                    paddr: 0x10_0000,
                    bytes: code,
                    mem_size: 0x2000,
                },
                common::Seg {
                    paddr: 0x10_2000,
                    bytes: data,
                    mem_size: 0x3000,
                },
            ],
        ),
    );
    let out = dir.join("svsm.igvm");
    let args = [
        "build",
        "--kernel",
        s(&kernel),
        "--output",
        s(&out),
        "--svsm-size",
        "1M",
    ];
    let o = tool(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("vTPM engine (part of that digest): libtpms-dev 9.9-1 sha256:00ff\n"),
        "{stdout}"
    );
    let i = tool(&["inspect", s(&out)]);
    let listing = String::from_utf8_lossy(&i.stdout);
    assert!(
        listing
            .contains("vTPM engine (in the measured SVSM image): libtpms-dev 9.9-1 sha256:00ff\n"),
        "{listing}"
    );
    let plain = put(&dir, "plain.elf", &small_kernel(0x10_0000));
    let o = tool(&[
        "build",
        "--kernel",
        s(&plain),
        "--output",
        s(&out),
        "--svsm-size",
        "1M",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("vTPM engine (part of that digest): not found")
    );
}

/// Fuzzing finding (igvm_inputs): a 77-byte file whose header walk overflows made the
/// `igvm` crate's parser panic, so `inspect` and `measure` crashed. Both now refuse the
/// file with an error naming it.
#[test]
fn igvm_headers_that_crash_the_parser_are_refused() {
    const CRASH: [u8; 77] = [
        0x49, 0x47, 0x56, 0x4d, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
        0xff, 0x4d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0x17, 0x4d, 0x01, 0x00, 0x00, 0x95, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x1b,
    ];
    assert!(svsm_igvm::parse_igvm(&CRASH).is_err());
    let dir = scratch("cli-igvm-crash");
    let file = put(&dir, "crash.igvm", &CRASH);
    for args in [
        vec!["inspect", s(&file)],
        vec!["measure", "--vcpus", "1", s(&file)],
    ] {
        let o = tool(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("crash.igvm") && stderr.contains("malformed IGVM headers"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
