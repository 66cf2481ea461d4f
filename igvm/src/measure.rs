//! The SNP launch digest of an IGVM file as QEMU/KVM compute it.
//!
//! SNP_LAUNCH_UPDATE extends the launch digest once per 4 KiB page with a 0x70-byte
//! PAGE_INFO record (SEV-SNP firmware ABI, "PAGE_INFO"): `digest_cur[48]`, `contents[48]`
//! (SHA-384 of the page for normal and VMSA pages, zero for the rest), `length` u16 (0x70),
//! `page_type` u8, `imi_page` u8, reserved u8, VMPL3/2/1 permissions u8 each, `gpa` u64;
//! the new digest is SHA-384 of the record. QEMU walks the file's directives in order:
//! page data (normal pages, pages without data as normal pages of zeros, unmeasured, secrets
//! and CPUID pages), parameter areas as unmeasured pages where they are inserted; then, at
//! launch finish, KVM measures one VMSA per vCPU (see [`crate::vmsa`]) at 0xFFFFFFFFF000.

use std::collections::BTreeMap;

use igvm::snp_defs::SevVmsa;
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader};
use igvm_defs::IgvmPageDataType;
use sha2::{Digest, Sha384};

use crate::vmsa::{check_launch_vmsa, kvm_measured_vmsa, page_bytes, reset_vmsa, VMSA_GPA};
use crate::{Error, PAGE_SIZE, SNP_COMPAT_MASK};

/// PAGE_INFO page types.
pub mod page_type {
    /// A normal page: its contents are measured.
    pub const NORMAL: u8 = 1;
    /// A VMSA page.
    pub const VMSA: u8 = 2;
    /// A zero page (the firmware zeroes it; contents field zero).
    pub const ZERO: u8 = 3;
    /// An unmeasured page.
    pub const UNMEASURED: u8 = 4;
    /// The secrets page.
    pub const SECRETS: u8 = 5;
    /// The CPUID page.
    pub const CPUID: u8 = 6;

    /// A name for listings.
    pub fn name(t: u8) -> &'static str {
        match t {
            NORMAL => "normal",
            VMSA => "vmsa",
            ZERO => "zero",
            UNMEASURED => "unmeasured",
            SECRETS => "secrets",
            CPUID => "cpuid",
            _ => "?",
        }
    }
}

/// The default CPUID signature of the vCPUs (QEMU's EPYC-v4 model, which
/// `scripts/snp/launch.sh` uses: family 0x17, model 1, stepping 2), for the reset VMSA of
/// vCPUs without an IGVM context. EPYC-Milan is 0xa00f11, EPYC-Genoa 0xa10f10.
pub const DEFAULT_VCPU_SIGNATURE: u32 = 0x0080_0f12;

/// The largest parameter area `measure` accepts (a file is untrusted input).
pub const MAX_PARAMETER_AREA: u64 = 64 << 20;

/// How the host will launch the file.
#[derive(Clone, Copy, Debug)]
pub struct HostConfig {
    /// Number of vCPUs QEMU creates (`-smp`).
    pub vcpus: u32,
    /// The VM's `sev_features`; `None` takes the launch VMSA's (what QEMU passes to KVM).
    pub sev_features: Option<u64>,
    /// CPUID signature for vCPUs measured in their reset state.
    pub vcpu_signature: u32,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            vcpus: 1,
            sev_features: None,
            vcpu_signature: DEFAULT_VCPU_SIGNATURE,
        }
    }
}

/// One step of the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// PAGE_INFO page type.
    pub page_type: u8,
    /// The page's GPA.
    pub gpa: u64,
    /// The contents field (SHA-384 of the page, or zero).
    pub contents: [u8; 48],
    /// The launch digest after this step.
    pub digest: [u8; 48],
}

/// The result: the digest and every step that led to it.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The final launch digest (the report's MEASUREMENT).
    pub digest: [u8; 48],
    /// The chain, in order.
    pub steps: Vec<Step>,
    /// The VMSA pages measured, one per vCPU.
    pub vmsa_pages: Vec<[u8; 4096]>,
}

/// The SNP guest policy of the file.
pub fn snp_policy(file: &IgvmFile) -> Option<u64> {
    file.initializations().iter().find_map(|h| match h {
        IgvmInitializationHeader::GuestPolicy {
            policy,
            compatibility_mask,
        } if compatibility_mask & SNP_COMPAT_MASK != 0 => Some(*policy),
        _ => None,
    })
}

fn applies(header: &IgvmDirectiveHeader) -> bool {
    header
        .compatibility_mask()
        .is_none_or(|m| m & SNP_COMPAT_MASK != 0)
}

/// Checks the QEMU/KVM launch rules: an SNP platform and policy, exactly one VP context
/// (vCPU 0) that is a valid launch VMSA at 0xFFFFFFFFF000, after every other SNP directive.
pub fn check_snp_launch(file: &IgvmFile) -> Result<&SevVmsa, Error> {
    if snp_policy(file).is_none() {
        return Err(Error::Igvm("no SEV-SNP guest policy".into()));
    }
    let snp: Vec<_> = file.directives().iter().filter(|h| applies(h)).collect();
    let contexts: Vec<_> = snp
        .iter()
        .enumerate()
        .filter_map(|(i, h)| match h {
            IgvmDirectiveHeader::SnpVpContext {
                gpa,
                vp_index,
                vmsa,
                ..
            } => Some((i, *gpa, *vp_index, vmsa.as_ref())),
            _ => None,
        })
        .collect();
    let [(index, gpa, vp_index, vmsa)] = contexts[..] else {
        return Err(Error::Igvm(format!(
            "{} SNP VP contexts; the SVSM launch needs exactly one (the BSP's)",
            contexts.len()
        )));
    };
    if vp_index != 0 {
        return Err(Error::Igvm(format!(
            "the launch VMSA is for vCPU {vp_index}, not the BSP (0)"
        )));
    }
    if index + 1 != snp.len() {
        return Err(Error::Igvm(
            "the launch VMSA is not the last SNP directive".into(),
        ));
    }
    check_launch_vmsa(gpa, vmsa)?;
    Ok(vmsa)
}

/// A running PAGE_INFO chain.
#[derive(Debug)]
struct Chain {
    digest: [u8; 48],
    steps: Vec<Step>,
}

impl Chain {
    fn new() -> Self {
        Self {
            digest: [0; 48],
            steps: Vec::new(),
        }
    }

    fn extend(&mut self, page_type: u8, gpa: u64, contents: [u8; 48]) {
        let mut info = [0u8; 0x70];
        info[0x00..0x30].copy_from_slice(&self.digest);
        info[0x30..0x60].copy_from_slice(&contents);
        info[0x60..0x62].copy_from_slice(&0x70u16.to_le_bytes());
        info[0x62] = page_type;
        info[0x68..0x70].copy_from_slice(&gpa.to_le_bytes());
        self.digest = Sha384::digest(info).into();
        self.steps.push(Step {
            page_type,
            gpa,
            contents,
            digest: self.digest,
        });
    }
}

fn sha384_page(data: &[u8]) -> [u8; 48] {
    let mut page = [0u8; PAGE_SIZE as usize];
    page[..data.len()].copy_from_slice(data);
    Sha384::digest(page).into()
}

/// The most vCPUs a KVM guest can have (Linux `KVM_MAX_VCPUS` on x86); each one adds a
/// VMSA to the digest (and a page to [`Measurement::vmsa_pages`]).
pub const MAX_VCPUS: u32 = 4096;

/// Computes the launch digest of `file` for the host configuration `host`.
pub fn measure(file: &IgvmFile, host: &HostConfig) -> Result<Measurement, Error> {
    if host.vcpus == 0 || host.vcpus > MAX_VCPUS {
        return Err(Error::InvalidOption(format!(
            "--vcpus {} is not between 1 and {MAX_VCPUS} (KVM's KVM_MAX_VCPUS)",
            host.vcpus
        )));
    }
    let launch = check_snp_launch(file)?;
    let mut chain = Chain::new();
    let mut areas: BTreeMap<u32, u64> = BTreeMap::new();
    for header in file.directives().iter().filter(|h| applies(h)) {
        match header {
            IgvmDirectiveHeader::PageData {
                gpa,
                flags,
                data_type,
                data,
                ..
            } => {
                if flags.is_2mb_page() || flags.shared() {
                    return Err(Error::Igvm(format!(
                        "page data at {gpa:#x} is a 2 MiB or shared page, which this launch does not use"
                    )));
                }
                if data.len() > PAGE_SIZE as usize {
                    return Err(Error::Igvm(format!(
                        "page data at {gpa:#x} has {} bytes, more than a page",
                        data.len()
                    )));
                }
                let (t, contents) = match *data_type {
                    IgvmPageDataType::SECRETS => (page_type::SECRETS, [0; 48]),
                    IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF => {
                        (page_type::CPUID, [0; 48])
                    }
                    IgvmPageDataType::NORMAL if flags.unmeasured() => {
                        (page_type::UNMEASURED, [0; 48])
                    }
                    IgvmPageDataType::NORMAL => (page_type::NORMAL, sha384_page(data)),
                    other => {
                        return Err(Error::Igvm(format!(
                            "page data at {gpa:#x} has type {other:?}, which QEMU does not load"
                        )))
                    }
                };
                chain.extend(t, *gpa, contents);
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                ..
            } => {
                areas.insert(*parameter_area_index, *number_of_bytes);
            }
            IgvmDirectiveHeader::ParameterInsert(insert) => {
                let size = areas.get(&insert.parameter_area_index).ok_or_else(|| {
                    Error::Igvm(format!(
                        "parameter insert names unknown area {}",
                        insert.parameter_area_index
                    ))
                })?;
                let end = insert
                    .gpa
                    .checked_add(*size)
                    .filter(|_| *size <= MAX_PARAMETER_AREA && insert.gpa % PAGE_SIZE == 0)
                    .ok_or_else(|| {
                        Error::Igvm(format!(
                            "parameter area {} ({size:#x} bytes at {:#x}) is unaligned, \
                             too large or wraps around",
                            insert.parameter_area_index, insert.gpa
                        ))
                    })?;
                let mut gpa = insert.gpa;
                while gpa < end {
                    chain.extend(page_type::UNMEASURED, gpa, [0; 48]);
                    gpa += PAGE_SIZE;
                }
            }
            _ => {}
        }
    }
    let sev_features = host
        .sev_features
        .unwrap_or_else(|| u64::from(launch.sev_features));
    let mut vmsa_pages = Vec::new();
    for vcpu in 0..host.vcpus {
        let vmsa = if vcpu == 0 {
            kvm_measured_vmsa(launch, sev_features)
        } else {
            reset_vmsa(host.vcpu_signature, sev_features)
        };
        let page = page_bytes(&vmsa);
        chain.extend(page_type::VMSA, VMSA_GPA, Sha384::digest(page).into());
        vmsa_pages.push(page);
    }
    Ok(Measurement {
        digest: chain.digest,
        steps: chain.steps,
        vmsa_pages,
    })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
