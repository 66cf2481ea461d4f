//! The PVH boot information (`hvm_start_info`) QEMU hands to the entry in `%ebx`.
//!
//! Layout from Xen's `public/arch-x86/hvm/start_info.h` (version 1 adds the memory
//! map). The kernel copies what it needs (command line, RAM ranges) into its own memory
//! before it replaces the loader's page tables.
#![allow(
    unsafe_code,
    reason = "reads the loader's boot information by physical address"
)]

use core::ptr;

/// `hvm_start_info.magic`.
const MAGIC: u32 = 0x336e_c578;
/// E820 type of usable RAM.
const E820_RAM: u32 = 1;
/// How many RAM ranges the kernel keeps.
pub const MAX_RANGES: usize = 32;
/// Longest command line the kernel keeps.
const MAX_CMDLINE: usize = 256;

/// A physical memory range `[start, end)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

/// What the kernel takes from the boot information.
#[derive(Debug)]
pub struct BootInfo {
    ram: [Range; MAX_RANGES],
    ram_count: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// The IGVM parameters, when the kernel was launched from an IGVM file.
    igvm: Option<svsm::boot_params::BootParams>,
}

/// Why the boot information was unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootInfoError {
    /// `%ebx` did not point at an `hvm_start_info`.
    BadMagic(u32),
    /// Version 0 carries no memory map.
    NoMemoryMap,
    /// `%ebx` pointed at an IGVM parameter block whose areas are unusable.
    Igvm(svsm::boot_params::BootParamsError),
}

impl BootInfo {
    /// Reads the `hvm_start_info` at physical address `address` (identity mapped).
    pub fn read(address: u32) -> Result<Self, BootInfoError> {
        let base = address as usize as *const u8;
        // SAFETY: the PVH boot protocol (Xen `docs/misc/pvh.pandoc`) guarantees %ebx
        // points at a readable hvm_start_info; the boot page tables identity-map the low
        // 4 GiB. Unaligned reads: the loader promises alignment but need not be trusted.
        let field32 =
            |offset: usize| unsafe { ptr::read_unaligned(base.wrapping_add(offset).cast::<u32>()) };
        // SAFETY: as above.
        let field64 =
            |offset: usize| unsafe { ptr::read_unaligned(base.wrapping_add(offset).cast::<u64>()) };
        let magic = field32(0);
        if magic != MAGIC {
            // SAFETY: as above; an IGVM launch passes its parameter block (one page) in
            // the same register.
            let first = unsafe { core::slice::from_raw_parts(base, 4096) };
            if svsm::boot_params::is_param_block(first) {
                return Self::from_igvm(first).map_err(BootInfoError::Igvm);
            }
            return Err(BootInfoError::BadMagic(magic));
        }
        let version = field32(4);
        if version < 1 {
            return Err(BootInfoError::NoMemoryMap);
        }
        let cmdline_address = field64(0x18);
        let memmap_address = field64(0x28);
        let memmap_entries = field32(0x30) as usize;

        let mut info = Self {
            ram: [Range::default(); MAX_RANGES],
            ram_count: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            igvm: None,
        };
        if cmdline_address != 0 {
            let cmdline = cmdline_address as usize as *const u8;
            while info.cmdline_len < MAX_CMDLINE {
                // SAFETY: a NUL-terminated string the loader placed in low memory.
                let byte = unsafe { ptr::read(cmdline.wrapping_add(info.cmdline_len)) };
                if byte == 0 {
                    break;
                }
                info.cmdline[info.cmdline_len] = byte;
                info.cmdline_len += 1;
            }
        }
        for i in 0..memmap_entries {
            // hvm_memmap_table_entry is {u64 addr, u64 size, u32 type, u32 reserved}; the
            // loader placed `memmap_entries` of them at `memmap_paddr`.
            let entry = (memmap_address as usize as *const u8).wrapping_add(i * 24);
            // SAFETY: inside the loader's memory map (identity mapped, readable).
            let start = unsafe { ptr::read_unaligned(entry.cast::<u64>()) };
            // SAFETY: as above.
            let size = unsafe { ptr::read_unaligned(entry.wrapping_add(8).cast::<u64>()) };
            // SAFETY: as above.
            let kind = unsafe { ptr::read_unaligned(entry.wrapping_add(16).cast::<u32>()) };
            if kind == E820_RAM && size != 0 && info.ram_count < MAX_RANGES {
                info.ram[info.ram_count] = Range {
                    start,
                    end: start.saturating_add(size),
                };
                info.ram_count += 1;
            }
        }
        Ok(info)
    }

    /// The boot information of an IGVM launch: the kernel's RAM is the free part of the
    /// SVSM range that the measured parameter block names (never the guest's memory).
    fn from_igvm(block: &[u8]) -> Result<Self, svsm::boot_params::BootParamsError> {
        let block = svsm::boot_params::parse_block(block)?;
        let area = |r: svsm_protocol::igvm_params::MemoryRange| -> &[u8] {
            if r.size == 0 {
                return &[];
            }
            // SAFETY: the block is measured and `parse_block` checked that every area
            // lies inside the SVSM range below 4 GiB, which the boot tables map.
            unsafe { core::slice::from_raw_parts(r.base as usize as *const u8, r.size as usize) }
        };
        let page = svsm_protocol::igvm_params::MemoryRange {
            base: block.param_page_gpa,
            size: 4096,
        };
        let params = svsm::boot_params::BootParams::new(
            block,
            area(page),
            area(block.memory_map),
            area(block.madt),
        )?;
        let free = params.free_range();
        let mut info = Self {
            ram: [Range::default(); MAX_RANGES],
            ram_count: 1,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            igvm: None,
        };
        info.ram[0] = Range {
            start: free.base,
            end: free.base + free.size,
        };
        info.igvm = Some(params);
        Ok(info)
    }

    /// The IGVM parameters (secrets and CPUID pages, vCPUs, the guest's memory map, the
    /// firmware), when the kernel was launched from an IGVM file.
    pub fn igvm(&self) -> Option<&svsm::boot_params::BootParams> {
        self.igvm.as_ref()
    }

    /// The usable RAM ranges.
    pub fn ram(&self) -> &[Range] {
        &self.ram[..self.ram_count]
    }

    /// The kernel command line (lossy: non-UTF-8 makes it empty).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// Whether the command line holds the word `word`.
    pub fn has_flag(&self, word: &str) -> bool {
        self.cmdline().split_ascii_whitespace().any(|w| w == word)
    }
}
