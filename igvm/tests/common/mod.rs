//! Test inputs made from scratch: minimal kernel ELF files and OVMF-like firmware images.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// One loadable segment of a test ELF.
pub struct Seg {
    pub paddr: u64,
    pub bytes: Vec<u8>,
    pub mem_size: u64,
}

/// A minimal x86-64 ET_EXEC ELF with the given PT_LOAD segments.
pub fn elf(entry: u64, segs: &[Seg]) -> Vec<u8> {
    let phoff = 64u64;
    let mut data_off = phoff + 56 * segs.len() as u64;
    let mut out = vec![0u8; data_off as usize];
    out[0..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // 64-bit
    out[5] = 1; // little-endian
    out[6] = 1; // version
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&entry.to_le_bytes());
    out[32..40].copy_from_slice(&phoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    out[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    for (i, s) in segs.iter().enumerate() {
        let ph = (phoff + 56 * i as u64) as usize;
        out[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        out[ph + 4..ph + 8].copy_from_slice(&7u32.to_le_bytes()); // RWX
        out[ph + 8..ph + 16].copy_from_slice(&data_off.to_le_bytes());
        out[ph + 16..ph + 24].copy_from_slice(&s.paddr.to_le_bytes()); // vaddr
        out[ph + 24..ph + 32].copy_from_slice(&s.paddr.to_le_bytes()); // paddr
        out[ph + 32..ph + 40].copy_from_slice(&(s.bytes.len() as u64).to_le_bytes());
        out[ph + 40..ph + 48].copy_from_slice(&s.mem_size.to_le_bytes());
        out[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        data_off += s.bytes.len() as u64;
    }
    for s in segs {
        out.extend_from_slice(&s.bytes);
    }
    out
}

/// A small kernel: 2 pages of code at `base`, 1 page of data, 2 pages of bss.
pub fn small_kernel(base: u64) -> Vec<u8> {
    let code: Vec<u8> = (0..0x1800u32).map(|i| (i * 7 + 3) as u8).collect();
    let data: Vec<u8> = (0..0x100u32).map(|i| (i ^ 0x5a) as u8).collect();
    elf(
        base + 0x10,
        &[
            Seg {
                paddr: base,
                bytes: code,
                mem_size: 0x2000,
            },
            Seg {
                paddr: base + 0x2000,
                bytes: data,
                mem_size: 0x3000,
            },
        ],
    )
}

fn guid_bytes(a: u32, b: u16, c: u16, d: [u8; 8]) -> Vec<u8> {
    let mut v = a.to_le_bytes().to_vec();
    v.extend_from_slice(&b.to_le_bytes());
    v.extend_from_slice(&c.to_le_bytes());
    v.extend_from_slice(&d);
    v
}

/// An OVMF-like image of `size` bytes with a footer table holding SEV metadata sections
/// `(gpa, size, type)`.
pub fn firmware(size: usize, sections: &[(u32, u32, u32)]) -> Vec<u8> {
    firmware_with_igvm(size, sections, None)
}

/// Like [`firmware`], and with `igvm` also an IGVM metadata entry (edk2-stable202511 and
/// later) whose sections are `(start, size, type)`.
pub fn firmware_with_igvm(
    size: usize,
    sections: &[(u32, u32, u32)],
    igvm: Option<&[(u32, u32, u32)]>,
) -> Vec<u8> {
    let mut img: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut table = Vec::new();
    // SEV metadata at offset 0x1000, IGVM metadata at 0x2000 from the start.
    let mut blocks = vec![(
        0x1000usize,
        b"ASEV",
        sections,
        (
            0xdc88_6566,
            0x984a,
            0x4798,
            [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
        ),
    )];
    if let Some(igvm) = igvm {
        blocks.push((
            0x2000,
            b"IGVM",
            igvm,
            (
                0x784f_a70e,
                0x3176,
                0x4677,
                [0x8a, 0x20, 0x04, 0xb6, 0x86, 0x99, 0xe3, 0x74],
            ),
        ));
    }
    for (at, sig, sections, (a, b, c, d)) in blocks {
        let mut meta = sig.to_vec();
        meta.extend_from_slice(&((16 + 12 * sections.len()) as u32).to_le_bytes());
        meta.extend_from_slice(&1u32.to_le_bytes());
        meta.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        for (gpa, sz, t) in sections {
            meta.extend_from_slice(&gpa.to_le_bytes());
            meta.extend_from_slice(&sz.to_le_bytes());
            meta.extend_from_slice(&t.to_le_bytes());
        }
        img[at..at + meta.len()].copy_from_slice(&meta);
        // Footer table entry: offset from the end, length, GUID.
        table.extend_from_slice(&((size - at) as u32).to_le_bytes());
        table.extend_from_slice(&(4u16 + 18).to_le_bytes());
        table.extend_from_slice(&guid_bytes(a, b, c, d));
    }
    let mut footer = ((table.len() + 18) as u16).to_le_bytes().to_vec();
    footer.extend_from_slice(&guid_bytes(
        0x96b5_82de,
        0x1fb2,
        0x45f7,
        [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
    ));
    let end = size - 32;
    let start = end - footer.len() - table.len();
    img[start..start + table.len()].copy_from_slice(&table);
    img[start + table.len()..end].copy_from_slice(&footer);
    img
}

/// SEV metadata like Debian forky's OVMF (edk2 2026.08): kernel hashes at 0x810000.
pub const FORKY_LIKE: &[(u32, u32, u32)] = &[
    (0x80_0000, 0x9000, 1),
    (0x80_a000, 0x3000, 1),
    (0x80_d000, 0x1000, 2),
    (0x80_e000, 0x1000, 3),
    (0x80_f000, 0x1000, 4),
    (0x81_1000, 0x1_f000, 1),
    (0x81_0000, 0x1000, 0x10),
];

/// IGVM metadata like Debian forky's OVMF: the parameter area at 0x812000, the memory
/// map (8 entries) at its start, the vCPU count after it, a HOB area.
pub const FORKY_IGVM: &[(u32, u32, u32)] = &[
    (0x81_2000, 0x1000, 0x100),
    (0, 0xC0, 0x101),
    (0xC0, 0x10, 0x102),
    (0x81_3000, 0x1000, 0x200),
];

/// Sections like Debian trixie's OVMF (with an SVSM calling area).
pub const TRIXIE_LIKE: &[(u32, u32, u32)] = &[
    (0x80_0000, 0x9000, 1),
    (0x80_a000, 0x3000, 1),
    (0x80_d000, 0x1000, 2),
    (0x80_e000, 0x1000, 3),
    (0x80_f000, 0x1000, 4),
    (0x81_0000, 0x1_0000, 1),
];

/// Sections like Debian bookworm's OVMF (no calling area: types 1, 1, 2, 3, 1).
pub const BOOKWORM_LIKE: &[(u32, u32, u32)] = &[
    (0x80_0000, 0x9000, 1),
    (0x80_a000, 0x3000, 1),
    (0x80_d000, 0x1000, 2),
    (0x80_e000, 0x1000, 3),
    (0x80_f000, 0x1_1000, 1),
];

/// A fresh empty directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("svsm-igvm-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where `cargo xtask` caches Debian's OVMF images (`trixie` or `bookworm`).
pub fn debian_ovmf(release: &str) -> PathBuf {
    let p = workspace()
        .join("target/firmware")
        .join(release)
        .join("OVMF.fd");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test` (its igvm setup step downloads Debian's ovmf packages)",
        p.display()
    );
    p
}
