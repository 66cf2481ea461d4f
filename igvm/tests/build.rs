//! Builds small IGVM files from made-up inputs and checks them from outside: the igvm
//! crate's reader, a launch digest recomputed from first principles, reproducibility, the
//! QEMU/KVM launch rules, and the firmware rules.

mod common;

use common::*;
use igvm::{IgvmDirectiveHeader, IgvmFile, IsolationType};
use igvm_defs::IgvmPageDataType;
use sha2::{Digest, Sha384};
use svsm_igvm::build::{build, BuildConfig};
use svsm_igvm::measure::{measure, HostConfig};
use svsm_igvm::Error;
use svsm_protocol::igvm_params::{IgvmParamBlock, PARAM_BLOCK_MAGIC, PARAM_FLAG_FIRMWARE};
use zerocopy::FromBytes;

const BASE: u64 = 0x10_0000;

fn small_config(dir: &std::path::Path) -> BuildConfig {
    let kernel = put(dir, "kernel.elf", &small_kernel(BASE));
    let mut c = BuildConfig::new(kernel, None);
    c.svsm_size = 1 << 20;
    c
}

/// One PAGE_INFO step, written from the SNP firmware ABI's table, independent of the tool.
fn page_info(digest: &[u8; 48], contents: &[u8; 48], page_type: u8, gpa: u64) -> [u8; 48] {
    let mut rec = Vec::with_capacity(0x70);
    rec.extend_from_slice(digest);
    rec.extend_from_slice(contents);
    rec.extend_from_slice(&0x70u16.to_le_bytes());
    rec.push(page_type);
    rec.push(0); // imi_page
    rec.extend_from_slice(&[0, 0, 0, 0]); // reserved, VMPL3/2/1 permissions
    rec.extend_from_slice(&gpa.to_le_bytes());
    assert_eq!(rec.len(), 0x70);
    Sha384::digest(&rec).into()
}

fn sha(page: &[u8]) -> [u8; 48] {
    let mut p = vec![0u8; 4096];
    p[..page.len()].copy_from_slice(page);
    Sha384::digest(&p).into()
}

fn put_seg(page: &mut [u8], off: usize, sel: u16, attrib: u16, limit: u32, base: u64) {
    page[off..off + 2].copy_from_slice(&sel.to_le_bytes());
    page[off + 2..off + 4].copy_from_slice(&attrib.to_le_bytes());
    page[off + 4..off + 8].copy_from_slice(&limit.to_le_bytes());
    page[off + 8..off + 16].copy_from_slice(&base.to_le_bytes());
}

fn put64(page: &mut [u8], off: usize, v: u64) {
    page[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// The launch VMSA the SVSM needs, byte by byte at the APM's VMSA offsets.
fn expected_vmsa(entry: u64, param_block: u64, sev_features: u64) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    for off in [0x00, 0x20, 0x30, 0x40, 0x50] {
        put_seg(&mut p, off, 0x10, 0xc93, 0xffff_ffff, 0); // es ss ds fs gs
    }
    put_seg(&mut p, 0x10, 0x08, 0xc9b, 0xffff_ffff, 0); // cs
    put_seg(&mut p, 0x60, 0, 0, 0xffff, 0); // gdtr
    put_seg(&mut p, 0x70, 0, 0x82, 0xffff, 0); // ldtr
    put_seg(&mut p, 0x80, 0, 0, 0xffff, 0); // idtr
    put_seg(&mut p, 0x90, 0, 0x8b, 0xffff, 0); // tr
    put64(&mut p, 0xD0, 0x1000); // efer: SVME
    put64(&mut p, 0x148, 0x40); // cr4: MCE
    put64(&mut p, 0x158, 0x31); // cr0: PE ET NE
    put64(&mut p, 0x160, 0x400); // dr7
    put64(&mut p, 0x168, 0xffff_0ff0); // dr6
    put64(&mut p, 0x170, 0x2); // rflags
    put64(&mut p, 0x178, entry); // rip
    put64(&mut p, 0x1F8, u64::from(u32::from_le_bytes(*b"IGVM"))); // rax
    put64(&mut p, 0x268, 0x0007_0406_0007_0406); // g_pat
    put64(&mut p, 0x318, param_block); // rbx
    put64(&mut p, 0x3B0, sev_features);
    put64(&mut p, 0x3E8, 1); // xcr0
    p[0x408..0x40C].copy_from_slice(&0x1f80u32.to_le_bytes()); // mxcsr
    p[0x410..0x412].copy_from_slice(&0x37fu16.to_le_bytes()); // x87 fcw
    p
}

#[test]
fn small_file_parses_and_its_digest_matches_first_principles() {
    let dir = scratch("first-principles");
    let built = build(&small_config(&dir)).unwrap();
    // The igvm crate's reader accepts it, for SNP and for native.
    let snp = IgvmFile::new_from_binary(&built.bytes, Some(IsolationType::Snp)).unwrap();
    IgvmFile::new_from_binary(&built.bytes, None).unwrap();

    // The parameter block says what the layout is.
    let pb_gpa = BASE + 5 * 0x1000;
    let pb_data = snp
        .directives()
        .iter()
        .find_map(|d| match d {
            IgvmDirectiveHeader::PageData { gpa, data, .. } if *gpa == pb_gpa => Some(data.clone()),
            _ => None,
        })
        .expect("parameter block page");
    let (pb, _) = IgvmParamBlock::read_from_prefix(&pb_data).unwrap();
    assert_eq!(pb.magic, PARAM_BLOCK_MAGIC);
    assert_eq!((pb.svsm.base, pb.svsm.size), (BASE, 1 << 20));
    assert_eq!((pb.kernel.base, pb.kernel.size), (BASE, 0x5000));
    assert_eq!(pb.secrets_gpa, BASE + 0x6000);
    assert_eq!(pb.cpuid_gpa, BASE + 0x7000);
    assert_eq!(pb.param_page_gpa, BASE + 0x8000);
    assert_eq!(pb.memory_map.base, BASE + 0x9000);
    assert_eq!(pb.free_base, BASE + 0xA000);
    assert_eq!(pb.flags & PARAM_FLAG_FIRMWARE, 0);

    // The chain, from the inputs this test made.
    let elf = small_kernel(BASE);
    let code: Vec<u8> = (0..0x1800u32).map(|i| (i * 7 + 3) as u8).collect();
    let data: Vec<u8> = (0..0x100u32).map(|i| (i ^ 0x5a) as u8).collect();
    assert!(elf.len() > code.len());
    let zero = [0u8; 48];
    let mut d = [0u8; 48];
    d = page_info(&d, &sha(&code[..0x1000]), 1, BASE);
    d = page_info(&d, &sha(&code[0x1000..]), 1, BASE + 0x1000);
    d = page_info(&d, &sha(&data), 1, BASE + 0x2000);
    d = page_info(&d, &sha(&[]), 1, BASE + 0x3000); // bss: a normal page of zeros
    d = page_info(&d, &sha(&[]), 1, BASE + 0x4000);
    d = page_info(&d, &sha(&pb_data), 1, pb_gpa);
    d = page_info(&d, &zero, 5, BASE + 0x6000); // secrets
    d = page_info(&d, &zero, 6, BASE + 0x7000); // CPUID
    d = page_info(&d, &zero, 4, BASE + 0x8000); // parameter page, unmeasured
    d = page_info(&d, &zero, 4, BASE + 0x9000); // memory map, unmeasured
    let vmsa = expected_vmsa(BASE + 0x10, pb_gpa, 1);
    d = page_info(&d, &sha(&vmsa), 2, 0xFFFF_FFFF_F000);

    let m = measure(&snp, &HostConfig::default()).unwrap();
    assert_eq!(m.vmsa_pages[0].to_vec(), vmsa, "VMSA page bytes");
    assert_eq!(m.steps.len(), 11);
    assert_eq!(m.digest, d, "launch digest");
}

#[test]
fn each_vcpu_adds_a_vmsa_and_sev_features_change_the_digest() {
    let dir = scratch("vcpus");
    let built = build(&small_config(&dir)).unwrap();
    let one = measure(&built.file, &HostConfig::default()).unwrap();
    let two = measure(
        &built.file,
        &HostConfig {
            vcpus: 2,
            ..HostConfig::default()
        },
    )
    .unwrap();
    assert_eq!(two.steps.len(), one.steps.len() + 1);
    assert_eq!(
        two.steps[..one.steps.len()],
        one.steps[..],
        "same chain up to the extra VMSA"
    );
    assert_ne!(two.digest, one.digest);
    let last = two.steps.last().unwrap();
    assert_eq!((last.page_type, last.gpa), (2, 0xFFFF_FFFF_F000));
    // The AP is measured in its reset state: real mode at F000:FFF0, RDX = signature.
    let ap = &two.vmsa_pages[1];
    assert_eq!(&ap[0x178..0x180], &0xfff0u64.to_le_bytes());
    assert_eq!(&ap[0x310..0x318], &0x800f12u64.to_le_bytes());
    assert_eq!(&ap[0x18..0x20], &0xffff_0000u64.to_le_bytes(), "cs base");
    let debug_swap = measure(
        &built.file,
        &HostConfig {
            sev_features: Some(0x21),
            ..HostConfig::default()
        },
    )
    .unwrap();
    assert_ne!(debug_swap.digest, one.digest);
    assert_eq!(
        &debug_swap.vmsa_pages[0][0x3B0..0x3B8],
        &0x21u64.to_le_bytes()
    );
}

#[test]
fn builds_are_reproducible() {
    let dir = scratch("repro");
    let a = build(&small_config(&dir)).unwrap();
    let b = build(&small_config(&dir)).unwrap();
    assert_eq!(a.bytes, b.bytes);
    let da = measure(&a.file, &HostConfig::default()).unwrap().digest;
    let db = measure(&b.file, &HostConfig::default()).unwrap().digest;
    assert_eq!(da, db);
    // ... and a different kernel gives a different file and digest.
    let mut other = small_kernel(BASE);
    let n = other.len();
    other[n - 1] ^= 1;
    let c = build(&BuildConfig {
        kernel: put(&dir, "other.elf", &other),
        ..small_config(&dir)
    })
    .unwrap();
    assert_ne!(c.bytes, a.bytes);
    assert_ne!(measure(&c.file, &HostConfig::default()).unwrap().digest, da);
}

/// The QEMU/KVM rules: one launch VMSA, at 0xFFFFFFFFF000, CR0 0x31/0x30, last.
fn assert_launch_rules(file: &IgvmFile) {
    let snp: Vec<_> = file
        .directives()
        .iter()
        .filter(|d| d.compatibility_mask().is_none_or(|m| m & 1 != 0))
        .collect();
    let vmsas: Vec<_> = snp
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            IgvmDirectiveHeader::SnpVpContext {
                gpa,
                vp_index,
                vmsa,
                ..
            } => Some((i, *gpa, *vp_index, vmsa.cr0)),
            _ => None,
        })
        .collect();
    assert_eq!(vmsas.len(), 1, "exactly one launch VMSA");
    let (index, gpa, vp, cr0) = vmsas[0];
    assert_eq!(gpa, 0xFFFF_FFFF_F000);
    assert_eq!(vp, 0);
    assert!(cr0 == 0x31 || cr0 == 0x30, "cr0 {cr0:#x}");
    assert_eq!(index, snp.len() - 1, "the VMSA is the last SNP directive");
}

#[test]
fn launch_rules_hold() {
    let dir = scratch("rules");
    let built = build(&small_config(&dir)).unwrap();
    assert_launch_rules(
        &IgvmFile::new_from_binary(&built.bytes, Some(IsolationType::Snp)).unwrap(),
    );
}

#[test]
fn firmware_metadata_is_honoured() {
    let dir = scratch("fw");
    let fw = put(&dir, "ovmf.fd", &firmware(0x20_0000, TRIXIE_LIKE));
    let kernel = put(&dir, "kernel.elf", &small_kernel(0x4000_0000));
    let mut c = BuildConfig::new(kernel, Some(fw));
    c.svsm_size = 16 << 20;
    let built = build(&c).unwrap();
    let file = IgvmFile::new_from_binary(&built.bytes, Some(IsolationType::Snp)).unwrap();
    assert_launch_rules(&file);
    let p = built.layout.params;
    assert_eq!(p.flags & PARAM_FLAG_FIRMWARE, PARAM_FLAG_FIRMWARE);
    assert_eq!(
        (p.firmware.image.base, p.firmware.image.size),
        (0xffe0_0000, 0x20_0000)
    );
    assert_eq!(p.firmware.secrets_gpa, 0x80_d000);
    assert_eq!(p.firmware.cpuid_gpa, 0x80_e000);
    assert_eq!(p.firmware.caa_gpa, 0x80_f000);
    assert_eq!(p.firmware.sec_mem_count, 3);
    assert_eq!(p.firmware.sec_mem[2].base, 0x81_0000);
    let page_at = |want: u64| {
        file.directives().iter().find_map(|d| match d {
            IgvmDirectiveHeader::PageData {
                gpa,
                data_type,
                data,
                ..
            } if *gpa == want => Some((*data_type, data.len())),
            _ => None,
        })
    };
    assert_eq!(page_at(0x80_e000), Some((IgvmPageDataType::CPUID_DATA, 0)));
    assert_eq!(
        page_at(0x80_d000),
        Some((IgvmPageDataType::NORMAL, 0)),
        "secrets copy: zero page"
    );
    assert_eq!(
        page_at(0x80_f000),
        Some((IgvmPageDataType::NORMAL, 0)),
        "calling area: zero page"
    );
    assert_eq!(page_at(0xffe0_0000), Some((IgvmPageDataType::NORMAL, 4096)));
    assert_eq!(page_at(0x80_0000), None, "SNP_SEC_MEM is left to the SVSM");
    // The firmware's pages come first and are measured as normal pages.
    let m = measure(&file, &HostConfig::default()).unwrap();
    let fw_bytes = firmware(0x20_0000, TRIXIE_LIKE);
    let mut d = [0u8; 48];
    for (i, chunk) in fw_bytes.chunks(4096).enumerate() {
        d = page_info(&d, &sha(chunk), 1, 0xffe0_0000 + i as u64 * 4096);
    }
    assert_eq!(m.steps[511].digest, d);
}

#[test]
fn the_firmware_memory_map_parameter_is_recorded() {
    let dir = scratch("fw-igvm");
    let fw = put(
        &dir,
        "ovmf.fd",
        &firmware_with_igvm(0x20_0000, FORKY_LIKE, Some(FORKY_IGVM)),
    );
    let kernel = put(&dir, "kernel.elf", &small_kernel(0x4000_0000));
    let mut c = BuildConfig::new(kernel.clone(), Some(fw));
    c.svsm_size = 16 << 20;
    let p = build(&c).unwrap().layout.params;
    assert_eq!(
        (p.firmware_memory_map.base, p.firmware_memory_map.size),
        (0x81_2000, 0xC0)
    );
    // It reaches the kernel through the measured block.
    let block = IgvmParamBlock::read_from_bytes(zerocopy::IntoBytes::as_bytes(&p)).unwrap();
    assert_eq!(block.firmware_memory_map, p.firmware_memory_map);

    // A firmware built without an IGVM parameter area (zero sections): no map.
    let fw = put(
        &dir,
        "no-area.fd",
        &firmware_with_igvm(0x20_0000, FORKY_LIKE, Some(&[])),
    );
    let mut c = BuildConfig::new(kernel.clone(), Some(fw));
    c.svsm_size = 16 << 20;
    assert_eq!(build(&c).unwrap().layout.params.firmware_memory_map.size, 0);

    // A map the SVSM could not write: outside every SNP_SEC_MEM section.
    let outside: &[(u32, u32, u32)] = &[(0x90_0000, 0x1000, 0x100), (0, 0xC0, 0x101)];
    let fw = put(
        &dir,
        "outside.fd",
        &firmware_with_igvm(0x20_0000, FORKY_LIKE, Some(outside)),
    );
    let mut c = BuildConfig::new(kernel, Some(fw));
    c.svsm_size = 16 << 20;
    let err = build(&c).unwrap_err();
    assert!(err.to_string().contains("SNP_SEC_MEM"), "{err}");
}

#[test]
fn malformed_igvm_metadata_is_refused() {
    for (igvm, why) in [
        (&[(0, 0xC0, 0x101)][..], "no parameter area"),
        (
            &[(0x81_2000, 0x1000, 0x100), (0xF80, 0xC0, 0x101)][..],
            "outside its",
        ),
        (
            &[(0x81_2000, 0x1000, 0x100), (0, 24, 0x101)][..],
            "at least two",
        ),
        (
            &[(0x81_2000, 0x1000, 0x100), (0, 0xC1, 0x101)][..],
            "at least two",
        ),
        (
            &[(0x81_2000, 0x2000, 0x100), (0, 171 * 24, 0x101)][..],
            "at most a page",
        ),
        (
            &[(0x81_2800, 0x1000, 0x100), (0, 0xC0, 0x101)][..],
            "whole 4 KiB pages",
        ),
        (
            &[(0x81_2000, 0x1000, 0x100), (0x81_3000, 0x1000, 0x100)][..],
            "two parameter areas",
        ),
    ] {
        let img = firmware_with_igvm(0x20_0000, FORKY_LIKE, Some(igvm));
        let err = svsm_igvm::firmware::Firmware::parse(img).unwrap_err();
        assert!(err.contains(why), "{igvm:x?}: {err}");
    }
    // A truncated or corrupt header.
    let mut img = firmware_with_igvm(0x20_0000, FORKY_LIKE, Some(FORKY_IGVM));
    img[0x2000] = b'X';
    let err = svsm_igvm::firmware::Firmware::parse(img).unwrap_err();
    assert!(err.contains("\"IGVM\""), "{err}");
    let mut img = firmware_with_igvm(0x20_0000, FORKY_LIKE, Some(FORKY_IGVM));
    img[0x200C..0x2010].copy_from_slice(&u32::MAX.to_le_bytes()); // section count
    let err = svsm_igvm::firmware::Firmware::parse(img).unwrap_err();
    assert!(err.contains("does not hold"), "{err}");
}

#[test]
fn firmware_without_calling_area_is_refused() {
    let dir = scratch("bookworm-like");
    let fw = put(&dir, "ovmf.fd", &firmware(0x20_0000, BOOKWORM_LIKE));
    let kernel = put(&dir, "kernel.elf", &small_kernel(0x4000_0000));
    let err = build(&BuildConfig::new(kernel, Some(fw))).unwrap_err();
    assert!(matches!(err, Error::FirmwareWithoutSvsm { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("type 4") && msg.contains("1, 1, 2, 3, 1"),
        "{msg}"
    );
}

#[test]
fn svsm_range_must_not_touch_firmware() {
    let dir = scratch("fw-overlap");
    let fw = put(&dir, "ovmf.fd", &firmware(0x20_0000, TRIXIE_LIKE));
    // A kernel at 1 MiB with a 16 MiB range covers the firmware's pages at 8 MiB.
    let kernel = put(&dir, "kernel.elf", &small_kernel(0x10_0000));
    let mut c = BuildConfig::new(kernel, Some(fw));
    c.svsm_size = 16 << 20;
    let err = build(&c).unwrap_err();
    assert!(matches!(err, Error::Overlap { .. }), "{err}");
    assert!(err.to_string().contains("0x800000"), "{err}");
}

#[test]
fn debian_trixie_ovmf_builds() {
    let dir = scratch("trixie");
    let kernel = put(&dir, "kernel.elf", &small_kernel(0x4000_0000));
    let mut c = BuildConfig::new(kernel, Some(debian_ovmf("trixie")));
    c.svsm_size = 16 << 20;
    let built = build(&c).unwrap();
    let file = IgvmFile::new_from_binary(&built.bytes, Some(IsolationType::Snp)).unwrap();
    assert_launch_rules(&file);
    let p = built.layout.params;
    assert_eq!(p.firmware.caa_gpa, 0x80_f000);
    assert_eq!(p.firmware.secrets_gpa, 0x80_d000);
    assert_eq!(p.firmware.cpuid_gpa, 0x80_e000);
    assert_eq!(p.firmware.sec_mem_count, 3);
    assert_eq!(p.firmware.image.base, 0xffc0_0000);
    assert_eq!(
        p.firmware_memory_map.size, 0,
        "trixie's OVMF (2025.02) takes its memory map from QEMU only"
    );
    measure(&file, &HostConfig::default()).unwrap();
}

#[test]
fn debian_forky_ovmf_takes_its_memory_map_from_the_svsm() {
    let dir = scratch("forky");
    let kernel = put(&dir, "kernel.elf", &small_kernel(0x4000_0000));
    let mut c = BuildConfig::new(kernel, Some(debian_ovmf("forky")));
    c.svsm_size = 16 << 20;
    let built = build(&c).unwrap();
    let file = IgvmFile::new_from_binary(&built.bytes, Some(IsolationType::Snp)).unwrap();
    assert_launch_rules(&file);
    let p = built.layout.params;
    // edk2's IGVM parameter area at 0x812000: eight 24-byte entries at its start, inside
    // the SNP_SEC_MEM range 0x811000+0x1f000 that the SVSM validates.
    assert_eq!(
        (p.firmware_memory_map.base, p.firmware_memory_map.size),
        (0x81_2000, 0xC0)
    );
    assert!(p.firmware.sec_mem[..p.firmware.sec_mem_count as usize]
        .iter()
        .any(|r| r.base <= 0x81_2000 && 0x81_20C0 <= r.base + r.size));
    measure(&file, &HostConfig::default()).unwrap();
}

#[test]
fn debian_bookworm_ovmf_is_refused() {
    let dir = scratch("bookworm");
    let kernel = put(&dir, "kernel.elf", &small_kernel(0x4000_0000));
    let err = build(&BuildConfig::new(kernel, Some(debian_ovmf("bookworm")))).unwrap_err();
    assert!(matches!(err, Error::FirmwareWithoutSvsm { .. }), "{err}");
}

#[test]
fn measure_refuses_hostile_parameter_areas() {
    // A file the tool did not build: a parameter area of 1 TiB must not make `measure`
    // loop for ages or overflow; it is refused.
    let dir = scratch("hostile");
    let built = build(&small_config(&dir)).unwrap();
    let mut directives = built.file.directives().to_vec();
    for d in directives.iter_mut() {
        if let IgvmDirectiveHeader::ParameterArea {
            number_of_bytes, ..
        } = d
        {
            *number_of_bytes = 1 << 40;
        }
    }
    let hostile = IgvmFile::new(
        igvm::IgvmRevision::V1,
        built.file.platforms().to_vec(),
        built.file.initializations().to_vec(),
        directives,
    )
    .expect("the igvm crate accepts the file, so `measure` must refuse it");
    let err = measure(&hostile, &HostConfig::default()).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
}

#[test]
fn madt_area_on_request() {
    let dir = scratch("madt");
    let plain = build(&small_config(&dir)).unwrap();
    assert_eq!(
        plain.layout.params.madt.size, 0,
        "no MADT unless asked (QEMU 10.1 lacks it)"
    );
    let with = build(&BuildConfig {
        madt: true,
        max_vcpus: 300,
        ..small_config(&dir)
    })
    .unwrap();
    let p = with.layout.params;
    // 44-byte header + 16 bytes per x2APIC entry for 300 vCPUs: two pages.
    assert_eq!((p.madt.base, p.madt.size), (BASE + 0xA000, 0x2000));
    assert_eq!(p.free_base, BASE + 0xC000);
    let file = IgvmFile::new_from_binary(&with.bytes, Some(IsolationType::Snp)).unwrap();
    assert!(file
        .directives()
        .iter()
        .any(|d| matches!(d, IgvmDirectiveHeader::Madt(p) if p.parameter_area_index == 2)));
    let m = measure(&file, &HostConfig::default()).unwrap();
    let unmeasured: Vec<u64> = m
        .steps
        .iter()
        .filter(|s| s.page_type == 4)
        .map(|s| s.gpa)
        .collect();
    assert_eq!(
        unmeasured,
        vec![BASE + 0x8000, BASE + 0x9000, BASE + 0xA000, BASE + 0xB000]
    );
}

/// Audit finding: OVMF metadata sections must not overlap each other (two sections the
/// SVSM would validate or fill twice). Every way of overlapping is refused, naming both
/// sections; sections that only touch are fine.
#[test]
fn overlapping_firmware_metadata_sections_are_refused() {
    use svsm_igvm::firmware::Firmware;
    for extra in [
        (0x80_e000, 0x2000, 1), // covers the secrets and the calling-area pages
        (0x80_0000, 0x1000, 1), // inside the first section
        (0x7F_F000, 0x2000, 1), // straddles the first section's start
        (0x80_d000, 0x1000, 2), // the same page twice
    ] {
        let mut sections = TRIXIE_LIKE.to_vec();
        sections.push(extra);
        let err = Firmware::parse(firmware(0x20_0000, &sections)).unwrap_err();
        assert!(
            err.contains("overlapping regions: SEV metadata sections"),
            "{extra:x?}: {err}"
        );
    }
    let mut touching = TRIXIE_LIKE.to_vec();
    touching.push((0x7F_0000, 0x1_0000, 1));
    Firmware::parse(firmware(0x20_0000, &touching)).unwrap();
}
