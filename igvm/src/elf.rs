//! Reads the kernel ELF: its loadable segments as 4 KiB pages at their physical addresses.
//!
//! The kernel is linked at a fixed address, so each `PT_LOAD` segment's physical address
//! (`p_paddr`) is its GPA. Segments may share a page (the linker packs them) but must not
//! share bytes; file bytes beyond `p_filesz` up to `p_memsz` are zero (`.bss`).

use std::collections::BTreeMap;
use std::path::Path;

use object::elf::{EM_X86_64, ET_EXEC, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

use crate::{Error, PAGE_SIZE};

/// Where the kernel's segments must end: below 4 GiB.
const MAX_KERNEL_END: u64 = 1 << 32;
/// The most memory the kernel's segments may take (far beyond a real SVSM kernel).
const MAX_KERNEL_SIZE: u64 = 1 << 30;

/// One loadable segment, as read from the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address of the first byte.
    pub gpa: u64,
    /// Size in memory (file bytes plus zero fill).
    pub mem_size: u64,
    /// ELF `p_flags` (PF_X 1, PF_W 2, PF_R 4).
    pub flags: u32,
}

/// The kernel image: its entry point and its memory, page by page.
#[derive(Clone, Debug)]
pub struct KernelImage {
    /// The 32-bit protected-mode entry point (`e_entry`).
    pub entry: u64,
    /// The loadable segments, in file order.
    pub segments: Vec<Segment>,
    /// Page GPA -> the page's contents, covering every segment byte.
    pub pages: BTreeMap<u64, Box<[u8; PAGE_SIZE as usize]>>,
}

impl KernelImage {
    /// The lowest GPA the kernel occupies (page aligned).
    pub fn base(&self) -> u64 {
        self.pages.keys().next().copied().unwrap_or(0)
    }

    /// One past the highest page the kernel occupies.
    pub fn end(&self) -> u64 {
        self.pages.keys().next_back().map_or(0, |p| p + PAGE_SIZE)
    }

    /// Reads and checks the ELF file at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let data = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&data).map_err(|reason| Error::Elf {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses an ELF image held in memory.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        let header = object::elf::FileHeader64::<Endianness>::parse(data)
            .map_err(|e| format!("not a 64-bit ELF file ({e})"))?;
        let endian = header
            .endian()
            .map_err(|e| format!("bad ELF byte order ({e})"))?;
        if header.e_machine(endian) != EM_X86_64 {
            return Err(format!(
                "machine type {} is not x86-64 ({EM_X86_64})",
                header.e_machine(endian)
            ));
        }
        if header.e_type(endian) != ET_EXEC {
            return Err(format!(
                "ELF type {} is not an executable linked at a fixed address (ET_EXEC)",
                header.e_type(endian)
            ));
        }
        let program_headers = header
            .program_headers(endian, data)
            .map_err(|e| format!("bad program headers ({e})"))?;

        let mut segments = Vec::new();
        let mut pages: BTreeMap<u64, Box<[u8; PAGE_SIZE as usize]>> = BTreeMap::new();
        // Byte ranges already written, to refuse segments that overlap.
        let mut claimed: Vec<(u64, u64)> = Vec::new();
        let mut total = 0u64;
        for ph in program_headers {
            if ph.p_type(endian) != PT_LOAD || ph.p_memsz(endian) == 0 {
                continue;
            }
            let gpa = ph.p_paddr(endian);
            let mem_size = ph.p_memsz(endian);
            let file_size = ph.p_filesz(endian);
            if file_size > mem_size {
                return Err(format!(
                    "segment at {gpa:#x} has more file bytes ({file_size:#x}) than memory ({mem_size:#x})"
                ));
            }
            // The SVSM lives in RAM below 4 GiB (the launch enters in 32-bit mode and the
            // builder places its range there): refuse anything else before allocating
            // pages for it, so a huge p_memsz is an error, not an out-of-memory kill.
            let end = gpa
                .checked_add(mem_size)
                .filter(|end| *end <= MAX_KERNEL_END)
                .ok_or_else(|| {
                    format!("segment at {gpa:#x} of {mem_size:#x} bytes does not end below 4 GiB")
                })?;
            total = total.saturating_add(mem_size);
            if total > MAX_KERNEL_SIZE {
                return Err(format!(
                    "the loadable segments need more than {MAX_KERNEL_SIZE:#x} bytes of memory \
                     (segment at {gpa:#x} of {mem_size:#x} bytes)"
                ));
            }
            if let Some((a, b)) = claimed.iter().find(|(a, b)| gpa < *b && *a < end) {
                return Err(format!(
                    "overlapping regions: segments {a:#x}..{b:#x} and {gpa:#x}..{end:#x}"
                ));
            }
            claimed.push((gpa, end));
            let bytes = ph
                .data(endian, data)
                .map_err(|_| format!("segment at {gpa:#x} points outside the file"))?;
            // Every page the segment touches exists, so .bss pages are zero pages.
            let mut page = gpa & !(PAGE_SIZE - 1);
            while page < end {
                pages
                    .entry(page)
                    .or_insert_with(|| Box::new([0; PAGE_SIZE as usize]));
                page += PAGE_SIZE;
            }
            for (i, chunk) in bytes.chunks(PAGE_SIZE as usize).enumerate() {
                // Copy byte runs page by page (the segment need not be page aligned).
                let mut addr = gpa + (i as u64) * PAGE_SIZE;
                let mut rest = chunk;
                while !rest.is_empty() {
                    let page = addr & !(PAGE_SIZE - 1);
                    let offset = (addr - page) as usize;
                    let n = rest.len().min(PAGE_SIZE as usize - offset);
                    let dst = pages.get_mut(&page).ok_or("internal: page missing")?;
                    dst[offset..offset + n].copy_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    addr += n as u64;
                }
            }
            segments.push(Segment {
                gpa,
                mem_size,
                flags: ph.p_flags(endian),
            });
        }
        if segments.is_empty() {
            return Err("no loadable (PT_LOAD) segment".into());
        }
        let entry = header.e_entry(endian);
        if !claimed.iter().any(|(a, b)| (*a..*b).contains(&entry)) {
            return Err(format!(
                "entry point {entry:#x} lies outside every loadable segment"
            ));
        }
        if entry >= 1 << 32 {
            return Err(format!(
                "entry point {entry:#x} is above 4 GiB; the launch enters in 32-bit protected mode"
            ));
        }
        Ok(Self {
            entry,
            segments,
            pages,
        })
    }
}
