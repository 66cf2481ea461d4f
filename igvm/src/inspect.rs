//! A readable listing of an IGVM file: headers, memory regions, page types, the VMSA.

use std::fmt::Write;

use igvm::snp_defs::{SevSelector, SevVmsa};
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader};
use igvm_defs::IgvmPageDataType;

use crate::PAGE_SIZE;

/// A run of consecutive pages with the same attributes.
struct Run {
    start: u64,
    pages: u64,
    mask: u32,
    kind: String,
}

fn page_kind(data_type: IgvmPageDataType, unmeasured: bool, has_data: bool) -> String {
    match data_type {
        IgvmPageDataType::SECRETS => "secrets".into(),
        IgvmPageDataType::CPUID_DATA => "cpuid".into(),
        IgvmPageDataType::CPUID_XF => "cpuid-xf".into(),
        IgvmPageDataType::NORMAL if unmeasured => "normal, unmeasured".into(),
        IgvmPageDataType::NORMAL if has_data => "normal, data".into(),
        IgvmPageDataType::NORMAL => "normal, zero".into(),
        other => format!("{other:?}"),
    }
}

fn selector(name: &str, s: &SevSelector) -> String {
    format!(
        "  {name:<4} selector {:#06x} attrib {:#06x} limit {:#010x} base {:#x}\n",
        s.selector, s.attrib, s.limit, s.base
    )
}

/// The VMSA's registers that matter at launch.
pub fn vmsa_listing(v: &SevVmsa) -> String {
    let mut out = String::new();
    for (name, s) in [
        ("cs", &v.cs),
        ("ds", &v.ds),
        ("es", &v.es),
        ("fs", &v.fs),
        ("gs", &v.gs),
        ("ss", &v.ss),
        ("gdtr", &v.gdtr),
        ("idtr", &v.idtr),
        ("ldtr", &v.ldtr),
        ("tr", &v.tr),
    ] {
        out.push_str(&selector(name, s));
    }
    let _ = writeln!(
        out,
        "  vmpl {} cpl {} efer {:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x} xcr0 {:#x}",
        v.vmpl, v.cpl, v.efer, v.cr0, v.cr3, v.cr4, v.xcr0
    );
    let _ = writeln!(
        out,
        "  rip {:#x} rsp {:#x} rflags {:#x} rax {:#x} rbx {:#x} rdx {:#x} rsi {:#x}",
        v.rip, v.rsp, v.rflags, v.rax, v.rbx, v.rdx, v.rsi
    );
    let _ = writeln!(
        out,
        "  pat {:#x} dr6 {:#x} dr7 {:#x} mxcsr {:#x} x87_fcw {:#x} sev_features {:#x}",
        v.pat,
        v.dr6,
        v.dr7,
        v.mxcsr,
        v.x87_fcw,
        u64::from(v.sev_features)
    );
    out
}

/// The vTPM engine the SVSM image carries (its packages, versions and archive digests):
/// found behind its marker in the measured page data, which is laid out by address.
pub fn engine(file: &IgvmFile) -> Option<String> {
    let mut pages: Vec<(u64, &[u8])> = file
        .directives()
        .iter()
        .filter_map(|h| match h {
            IgvmDirectiveHeader::PageData {
                gpa, flags, data, ..
            } if !flags.unmeasured() && !data.is_empty() => Some((*gpa, data.as_slice())),
            _ => None,
        })
        .collect();
    pages.sort_by_key(|(gpa, _)| *gpa);
    let mut image = Vec::new();
    for (_, data) in pages {
        let at = image.len();
        image.extend_from_slice(data);
        // Each page is PAGE_SIZE in the guest; shorter data is zero-filled.
        image.resize(at + data.len().max(PAGE_SIZE as usize), 0);
    }
    svsm_protocol::vtpm::find_engine_id(&image).map(str::to_string)
}

/// The whole listing.
pub fn listing(file: &IgvmFile) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "vTPM engine (in the measured SVSM image): {}",
        engine(file).unwrap_or_else(|| "not found".to_string())
    );
    out.push_str("platforms:\n");
    for p in file.platforms() {
        let IgvmPlatformHeader::SupportedPlatform(p) = p;
        let _ = writeln!(
            out,
            "  mask {:#x}: {:?} version {} highest_vtl {} shared_gpa_boundary {:#x}",
            p.compatibility_mask,
            p.platform_type,
            p.platform_version,
            p.highest_vtl,
            p.shared_gpa_boundary
        );
    }
    out.push_str("initialization:\n");
    for h in file.initializations() {
        match h {
            IgvmInitializationHeader::GuestPolicy {
                policy,
                compatibility_mask,
            } => {
                let _ = writeln!(
                    out,
                    "  mask {compatibility_mask:#x}: SNP guest policy {policy:#x} (smt {}, debug {}, migration agent {})",
                    policy >> 16 & 1,
                    policy >> 19 & 1,
                    policy >> 18 & 1
                );
            }
            other => {
                let _ = writeln!(out, "  {other:?}");
            }
        }
    }
    out.push_str("directives:\n");
    let mut run: Option<Run> = None;
    let flush = |out: &mut String, run: &mut Option<Run>| {
        if let Some(r) = run.take() {
            let _ = writeln!(
                out,
                "  mask {:#x}: pages {:#012x}..{:#012x} ({:>5} pages) {}",
                r.mask,
                r.start,
                r.start.saturating_add(r.pages.saturating_mul(PAGE_SIZE)),
                r.pages,
                r.kind
            );
        }
    };
    let mut vmsas = Vec::new();
    for h in file.directives() {
        if let IgvmDirectiveHeader::PageData {
            gpa,
            compatibility_mask,
            flags,
            data_type,
            data,
        } = h
        {
            let kind = page_kind(*data_type, flags.unmeasured(), !data.is_empty());
            if let Some(r) = &mut run {
                if r.kind == kind
                    && r.mask == *compatibility_mask
                    && r.start.checked_add(r.pages * PAGE_SIZE) == Some(*gpa)
                {
                    r.pages += 1;
                    continue;
                }
            }
            flush(&mut out, &mut run);
            run = Some(Run {
                start: *gpa,
                pages: 1,
                mask: *compatibility_mask,
                kind,
            });
            continue;
        }
        flush(&mut out, &mut run);
        match h {
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "  parameter area {parameter_area_index}: {number_of_bytes:#x} bytes"
                );
            }
            IgvmDirectiveHeader::VpCount(p) => {
                let _ = writeln!(
                    out,
                    "  area {} +{:#x}: vCPU count (host fills)",
                    p.parameter_area_index, p.byte_offset
                );
            }
            IgvmDirectiveHeader::EnvironmentInfo(p) => {
                let _ = writeln!(
                    out,
                    "  area {} +{:#x}: environment info (host fills)",
                    p.parameter_area_index, p.byte_offset
                );
            }
            IgvmDirectiveHeader::MemoryMap(p) => {
                let _ = writeln!(
                    out,
                    "  area {} +{:#x}: memory map (host fills)",
                    p.parameter_area_index, p.byte_offset
                );
            }
            IgvmDirectiveHeader::Madt(p) => {
                let _ = writeln!(
                    out,
                    "  area {} +{:#x}: ACPI MADT (host fills)",
                    p.parameter_area_index, p.byte_offset
                );
            }
            IgvmDirectiveHeader::ParameterInsert(i) => {
                let _ = writeln!(
                    out,
                    "  mask {:#x}: insert area {} at {:#x} (unmeasured)",
                    i.compatibility_mask, i.parameter_area_index, i.gpa
                );
            }
            IgvmDirectiveHeader::SnpVpContext {
                gpa,
                compatibility_mask,
                vp_index,
                vmsa,
            } => {
                let _ = writeln!(
                    out,
                    "  mask {compatibility_mask:#x}: SNP VMSA for vCPU {vp_index} at {gpa:#x}"
                );
                vmsas.push((*vp_index, vmsa.clone()));
            }
            IgvmDirectiveHeader::X64NativeVpContext {
                compatibility_mask,
                vp_index,
                context,
            } => {
                let _ = writeln!(
                    out,
                    "  mask {compatibility_mask:#x}: native context for vCPU {vp_index}: rip {:#x} cr0 {:#x} cs {:#x} ds {:#x}",
                    context.rip, context.cr0, context.code_selector, context.data_selector
                );
            }
            other => {
                let _ = writeln!(out, "  {other}");
            }
        }
    }
    flush(&mut out, &mut run);
    for (vp, vmsa) in vmsas {
        let _ = writeln!(out, "VMSA of vCPU {vp}:");
        out.push_str(&vmsa_listing(&vmsa));
    }
    out
}
