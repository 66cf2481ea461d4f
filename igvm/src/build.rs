//! Lays out guest memory and emits the IGVM file.
//!
//! Layout (all inside guest RAM below 4 GiB):
//! - the SVSM range starts at the kernel's lowest page: the kernel's ELF pages, then the
//!   parameter block, the secrets page, the CPUID page, the host-filled parameter page,
//!   memory map and (optionally) MADT, then free memory up to `--svsm-size`;
//! - with firmware: the OVMF image ends at 4 GiB; its copies of the secrets and CPUID
//!   pages and its calling area sit where its SEV metadata says; its SNP_SEC_MEM ranges
//!   are left to the SVSM (listed in the parameter block, validated at start-up). Nothing
//!   of the firmware may touch the SVSM range. Where the firmware's IGVM metadata names a
//!   memory map parameter (OVMF edk2-stable202511 and later), the block records it: the
//!   SVSM writes the guest's map there, with its own range reserved, since OVMF otherwise
//!   takes QEMU's map, in which the SVSM's range is RAM.
//!
//! Directive order: firmware pages, kernel pages, SVSM pages, parameter areas, and the VP
//! contexts last, so that the launch VMSA follows every other directive as KVM measures it.

use std::path::PathBuf;

use igvm::snp_defs::SevVmsa;
use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{
    IgvmNativeVpContextX64, IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, SnpPolicy,
    IGVM_NATIVE_PLATFORM_VERSION, IGVM_SEV_SNP_PLATFORM_VERSION, IGVM_VHS_PARAMETER,
    IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM,
};
use svsm_protocol::igvm_params::{
    FirmwareInfo, IgvmParamBlock, MemoryRange, DEFAULT_GUEST_VMPL, FW_SEC_MEM_MAX,
    MADT_HEADER_SIZE, PARAM_BLOCK_MAGIC, PARAM_BLOCK_VERSION, PARAM_FLAG_FIRMWARE,
    PARAM_PAGE_ENVIRONMENT_OFFSET, PARAM_PAGE_VCPU_COUNT_OFFSET,
};
use zerocopy::{FromZeros, IntoBytes};

use crate::elf::KernelImage;
use crate::firmware::{Firmware, SectionType};
use crate::vmsa::{launch_vmsa, VMSA_GPA};
use crate::{page_align_up, Error, NATIVE_COMPAT_MASK, PAGE_SIZE, SNP_COMPAT_MASK};

/// Default size of the SVSM's memory range.
pub const DEFAULT_SVSM_SIZE: u64 = 64 << 20;
/// Default guest RAM (what `-m` gives QEMU).
pub const DEFAULT_MEMORY: u64 = 2 << 30;
/// Default SNP guest policy: ABI 0.0, SMT allowed (bit 16), reserved bit 17 set, no debug.
pub const DEFAULT_POLICY: u64 = 0x3_0000;
/// Default VMSA `sev_features`: SNP active only.
pub const DEFAULT_SEV_FEATURES: u64 = 0x1;
/// Default number of vCPUs the MADT area must describe.
pub const DEFAULT_MAX_VCPUS: u32 = 64;

/// Pages of the host-filled memory map (170 entries per page).
const MEMORY_MAP_PAGES: u64 = 1;
/// Parameter area indices.
const AREA_PARAM_PAGE: u32 = 0;
const AREA_MEMORY_MAP: u32 = 1;
const AREA_MADT: u32 = 2;

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// The kernel ELF.
    pub kernel: PathBuf,
    /// An OVMF image to launch at the guest VMPL, if any.
    pub firmware: Option<PathBuf>,
    /// Size of the SVSM's memory range (from the kernel's first page).
    pub svsm_size: u64,
    /// Guest RAM size the launch gives QEMU.
    pub memory: u64,
    /// SNP guest policy.
    pub policy: u64,
    /// The launch VMSA's `sev_features`.
    pub sev_features: u64,
    /// How many vCPUs the MADT area must hold.
    pub max_vcpus: u32,
    /// Ask the host for an ACPI MADT (QEMU's IGVM loader gained it after 10.1).
    pub madt: bool,
    /// Also describe the native (no isolation) platform.
    pub native: bool,
}

impl BuildConfig {
    /// Defaults for everything but the inputs.
    pub fn new(kernel: PathBuf, firmware: Option<PathBuf>) -> Self {
        Self {
            kernel,
            firmware,
            svsm_size: DEFAULT_SVSM_SIZE,
            memory: DEFAULT_MEMORY,
            policy: DEFAULT_POLICY,
            sev_features: DEFAULT_SEV_FEATURES,
            max_vcpus: DEFAULT_MAX_VCPUS,
            madt: false,
            native: true,
        }
    }
}

/// Where the builder put things.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The parameter block as written into the file.
    pub params: IgvmParamBlock,
    /// GPA of the parameter block.
    pub param_block_gpa: u64,
    /// The kernel's entry point.
    pub entry: u64,
}

/// A built file.
#[derive(Debug)]
pub struct Built {
    /// The file, as the igvm crate holds it.
    pub file: IgvmFile,
    /// Its serialized bytes.
    pub bytes: Vec<u8>,
    /// Where things are.
    pub layout: Layout,
}

/// RAM QEMU's q35 machine maps below 4 GiB for `memory` bytes of guest RAM.
pub fn q35_ram_below_4g(memory: u64) -> u64 {
    if memory >= 0xb000_0000 {
        0x8000_0000
    } else {
        memory
    }
}

fn overlaps(a: MemoryRange, b: MemoryRange) -> bool {
    a.base < b.base + b.size && b.base < a.base + a.size
}

fn describe(name: &str, r: MemoryRange) -> String {
    format!("{name} {:#x}..{:#x}", r.base, r.base + r.size)
}

/// Builds the IGVM file described by `config`.
pub fn build(config: &BuildConfig) -> Result<Built, Error> {
    if config.svsm_size == 0 || config.svsm_size % PAGE_SIZE != 0 {
        return Err(Error::InvalidOption(format!(
            "--svsm-size {:#x} is not a non-zero multiple of 4 KiB",
            config.svsm_size
        )));
    }
    if config.max_vcpus == 0 {
        return Err(Error::InvalidOption(
            "--max-vcpus must be at least 1".into(),
        ));
    }
    if config.sev_features & crate::vmsa::SEV_FEATURE_SNP == 0 {
        return Err(Error::InvalidOption(format!(
            "--sev-features {:#x} lacks SNP (bit 0)",
            config.sev_features
        )));
    }
    let policy = SnpPolicy::from(config.policy);
    if policy.reserved_must_be_one() != 1 || policy.reserved() != 0 {
        return Err(Error::InvalidOption(format!(
            "--policy {:#x}: bit 17 must be 1 and bits 63:21 must be 0",
            config.policy
        )));
    }
    let kernel = KernelImage::load(&config.kernel)?;
    let firmware = config.firmware.as_deref().map(Firmware::load).transpose()?;

    // The SVSM range: kernel pages, then our pages, then free memory.
    let svsm_base = kernel.base();
    let mut next = kernel.end();
    let mut take = |pages: u64| {
        let at = next;
        next += pages * PAGE_SIZE;
        at
    };
    let param_block_gpa = take(1);
    let secrets_gpa = take(1);
    let cpuid_gpa = take(1);
    let param_page_gpa = take(1);
    let memory_map_gpa = take(MEMORY_MAP_PAGES);
    let madt_size = page_align_up(MADT_HEADER_SIZE as u64 + 16 * u64::from(config.max_vcpus))
        .ok_or_else(|| Error::InvalidOption("--max-vcpus is too large".into()))?;
    let madt_gpa = if config.madt {
        take(madt_size / PAGE_SIZE)
    } else {
        0
    };
    let free_base = next;
    let used = free_base - svsm_base;
    if used > config.svsm_size {
        return Err(Error::DoesNotFit(format!(
            "the kernel ({:#x} bytes) and the SVSM's parameter pages need {used:#x} bytes, \
             more than --svsm-size {:#x}",
            kernel.end() - svsm_base,
            config.svsm_size
        )));
    }
    let svsm = MemoryRange {
        base: svsm_base,
        size: config.svsm_size,
    };
    let ram = q35_ram_below_4g(config.memory);
    let svsm_end = svsm.end().unwrap_or(u64::MAX);
    if svsm_end > ram {
        return Err(Error::DoesNotFit(format!(
            "the SVSM range {:#x}..{svsm_end:#x} ends beyond the {ram:#x} bytes of RAM below \
             4 GiB that q35 maps for --memory {:#x}",
            svsm.base, config.memory
        )));
    }

    let mut fw_info = FirmwareInfo::new_zeroed();
    if let Some(fw) = &firmware {
        let image = fw.image();
        if overlaps(svsm, image) {
            return Err(Error::Overlap {
                first: describe("the SVSM range", svsm),
                second: describe("the firmware image", image),
            });
        }
        for s in &fw.sections {
            let range = MemoryRange {
                base: s.gpa,
                size: s.size,
            };
            if overlaps(svsm, range) {
                return Err(Error::Overlap {
                    first: describe("the SVSM range", svsm),
                    second: describe(
                        &format!("firmware SEV metadata section (type {})", s.kind.raw()),
                        range,
                    ),
                });
            }
            if s.gpa + s.size > ram {
                return Err(Error::DoesNotFit(format!(
                    "firmware section {:#x}+{:#x} lies beyond the {ram:#x} bytes of RAM below 4 GiB",
                    s.gpa, s.size
                )));
            }
        }
        if overlaps(image, MemoryRange { base: 0, size: ram }) {
            return Err(Error::DoesNotFit(format!(
                "guest RAM below 4 GiB ({ram:#x} bytes) reaches the firmware image at {:#x}",
                image.base
            )));
        }
        if let Some(map) = fw.memory_map {
            // The SVSM writes the map after it has validated and zeroed the firmware's
            // SNP_SEC_MEM ranges, so it must lie inside one of them.
            let inside = fw
                .sections_of(SectionType::SnpSecMem)
                .any(|s| map.base >= s.gpa && map.base + map.size <= s.gpa + s.size);
            if !inside {
                return Err(Error::DoesNotFit(format!(
                    "the firmware's IGVM memory map {:#x}+{:#x} lies outside its SNP_SEC_MEM \
                     sections, where the SVSM could not write it",
                    map.base, map.size
                )));
            }
        }
        fw_info.image = image;
        fw_info.secrets_gpa = fw.section(SectionType::Secrets).map_or(0, |s| s.gpa);
        fw_info.cpuid_gpa = fw.section(SectionType::Cpuid).map_or(0, |s| s.gpa);
        fw_info.caa_gpa = fw.section(SectionType::SvsmCaa).map_or(0, |s| s.gpa);
        for (i, s) in fw
            .sections_of(SectionType::SnpSecMem)
            .take(FW_SEC_MEM_MAX)
            .enumerate()
        {
            fw_info.sec_mem[i] = MemoryRange {
                base: s.gpa,
                size: s.size,
            };
            fw_info.sec_mem_count += 1;
        }
    }

    let params = IgvmParamBlock {
        magic: PARAM_BLOCK_MAGIC,
        version: PARAM_BLOCK_VERSION,
        size: core::mem::size_of::<IgvmParamBlock>() as u32,
        svsm,
        kernel: MemoryRange {
            base: svsm_base,
            size: kernel.end() - svsm_base,
        },
        secrets_gpa,
        cpuid_gpa,
        param_page_gpa,
        memory_map: MemoryRange {
            base: memory_map_gpa,
            size: MEMORY_MAP_PAGES * PAGE_SIZE,
        },
        madt: MemoryRange {
            base: madt_gpa,
            size: if config.madt { madt_size } else { 0 },
        },
        free_base,
        guest_vmpl: DEFAULT_GUEST_VMPL,
        flags: if firmware.is_some() {
            PARAM_FLAG_FIRMWARE
        } else {
            0
        },
        firmware: fw_info,
        firmware_memory_map: firmware
            .as_ref()
            .and_then(|fw| fw.memory_map)
            .unwrap_or_default(),
    };

    let both = if config.native {
        SNP_COMPAT_MASK | NATIVE_COMPAT_MASK
    } else {
        SNP_COMPAT_MASK
    };
    let mut directives = Vec::new();
    let page = |gpa: u64, mask: u32, data_type: IgvmPageDataType, data: Vec<u8>| {
        IgvmDirectiveHeader::PageData {
            gpa,
            compatibility_mask: mask,
            flags: IgvmPageDataFlags::new(),
            data_type,
            data,
        }
    };
    if let Some(fw) = &firmware {
        let base = fw.base();
        for (i, chunk) in fw.data.chunks(PAGE_SIZE as usize).enumerate() {
            directives.push(page(
                base + i as u64 * PAGE_SIZE,
                both,
                IgvmPageDataType::NORMAL,
                chunk.to_vec(),
            ));
        }
        // The firmware's own CPUID page, filled and checked by the PSP like the SVSM's.
        if fw_info.cpuid_gpa != 0 {
            directives.push(page(
                fw_info.cpuid_gpa,
                SNP_COMPAT_MASK,
                IgvmPageDataType::CPUID_DATA,
                Vec::new(),
            ));
        }
        // Zero pages the SVSM fills: the secrets copy and the calling area.
        let mut zero_pages = vec![fw_info.secrets_gpa, fw_info.caa_gpa];
        zero_pages.retain(|gpa| *gpa != 0);
        zero_pages.sort_unstable();
        for gpa in zero_pages {
            directives.push(page(
                gpa,
                SNP_COMPAT_MASK,
                IgvmPageDataType::NORMAL,
                Vec::new(),
            ));
        }
    }
    for (gpa, bytes) in &kernel.pages {
        directives.push(page(
            *gpa,
            both,
            IgvmPageDataType::NORMAL,
            trim_zeros(&bytes[..]),
        ));
    }
    directives.push(page(
        param_block_gpa,
        both,
        IgvmPageDataType::NORMAL,
        params.as_bytes().to_vec(),
    ));
    directives.push(page(
        secrets_gpa,
        SNP_COMPAT_MASK,
        IgvmPageDataType::SECRETS,
        Vec::new(),
    ));
    directives.push(page(
        cpuid_gpa,
        SNP_COMPAT_MASK,
        IgvmPageDataType::CPUID_DATA,
        Vec::new(),
    ));

    let parameter = |index: u32, offset: u32| IGVM_VHS_PARAMETER {
        parameter_area_index: index,
        byte_offset: offset,
    };
    let insert = |index: u32, gpa: u64| {
        IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
            gpa,
            compatibility_mask: both,
            parameter_area_index: index,
        })
    };
    directives.push(IgvmDirectiveHeader::ParameterArea {
        number_of_bytes: PAGE_SIZE,
        parameter_area_index: AREA_PARAM_PAGE,
        initial_data: Vec::new(),
    });
    directives.push(IgvmDirectiveHeader::VpCount(parameter(
        AREA_PARAM_PAGE,
        PARAM_PAGE_VCPU_COUNT_OFFSET,
    )));
    directives.push(IgvmDirectiveHeader::EnvironmentInfo(parameter(
        AREA_PARAM_PAGE,
        PARAM_PAGE_ENVIRONMENT_OFFSET,
    )));
    directives.push(insert(AREA_PARAM_PAGE, param_page_gpa));
    directives.push(IgvmDirectiveHeader::ParameterArea {
        number_of_bytes: MEMORY_MAP_PAGES * PAGE_SIZE,
        parameter_area_index: AREA_MEMORY_MAP,
        initial_data: Vec::new(),
    });
    directives.push(IgvmDirectiveHeader::MemoryMap(parameter(
        AREA_MEMORY_MAP,
        0,
    )));
    directives.push(insert(AREA_MEMORY_MAP, memory_map_gpa));
    if config.madt {
        directives.push(IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: madt_size,
            parameter_area_index: AREA_MADT,
            initial_data: Vec::new(),
        });
        directives.push(IgvmDirectiveHeader::Madt(parameter(AREA_MADT, 0)));
        directives.push(insert(AREA_MADT, madt_gpa));
    }

    // Last: the VP contexts.
    let vmsa = launch_vmsa(kernel.entry, param_block_gpa, config.sev_features);
    if config.native {
        directives.push(IgvmDirectiveHeader::X64NativeVpContext {
            compatibility_mask: NATIVE_COMPAT_MASK,
            vp_index: 0,
            context: Box::new(native_context(&vmsa)),
        });
    }
    directives.push(IgvmDirectiveHeader::SnpVpContext {
        gpa: VMSA_GPA,
        compatibility_mask: SNP_COMPAT_MASK,
        vp_index: 0,
        vmsa: Box::new(vmsa),
    });

    let mut platforms = vec![IgvmPlatformHeader::SupportedPlatform(
        IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: SNP_COMPAT_MASK,
            highest_vtl: 0,
            platform_type: IgvmPlatformType::SEV_SNP,
            platform_version: IGVM_SEV_SNP_PLATFORM_VERSION,
            shared_gpa_boundary: 0,
        },
    )];
    if config.native {
        platforms.push(IgvmPlatformHeader::SupportedPlatform(
            IGVM_VHS_SUPPORTED_PLATFORM {
                compatibility_mask: NATIVE_COMPAT_MASK,
                highest_vtl: 0,
                platform_type: IgvmPlatformType::NATIVE,
                platform_version: IGVM_NATIVE_PLATFORM_VERSION,
                shared_gpa_boundary: 0,
            },
        ));
    }
    let initializations = vec![IgvmInitializationHeader::GuestPolicy {
        policy: config.policy,
        compatibility_mask: SNP_COMPAT_MASK,
    }];
    let file = IgvmFile::new(IgvmRevision::V1, platforms, initializations, directives)
        .map_err(|e| Error::Igvm(format!("the igvm crate refused the layout: {e}")))?;
    let mut bytes = Vec::new();
    file.serialize(&mut bytes)
        .map_err(|e| Error::Igvm(format!("cannot serialize: {e}")))?;
    Ok(Built {
        file,
        bytes,
        layout: Layout {
            params,
            param_block_gpa,
            entry: kernel.entry,
        },
    })
}

/// The page's data, or nothing for an all-zero page: the file stays small and QEMU
/// measures a page without data as a normal page of zeros, which is the same digest.
fn trim_zeros(page: &[u8]) -> Vec<u8> {
    let len = page.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    if len == 0 {
        Vec::new()
    } else {
        page.to_vec()
    }
}

/// The same 32-bit entry for the native platform.
fn native_context(vmsa: &SevVmsa) -> IgvmNativeVpContextX64 {
    let mut c = IgvmNativeVpContextX64::new_zeroed();
    c.rax = vmsa.rax;
    c.rbx = vmsa.rbx;
    c.rip = vmsa.rip;
    c.rflags = vmsa.rflags;
    c.idtr_limit = 0xffff;
    c.gdtr_limit = 0xffff;
    c.code_selector = vmsa.cs.selector;
    c.code_attributes = vmsa.cs.attrib;
    c.code_base = 0;
    c.code_limit = vmsa.cs.limit;
    c.data_selector = vmsa.ds.selector;
    c.data_attributes = vmsa.ds.attrib;
    c.data_base = 0;
    c.data_limit = vmsa.ds.limit;
    c.cr0 = vmsa.cr0;
    c.cr4 = 0;
    c.efer = 0;
    c
}
