//! Reference values computed from boot artifacts, for a [`BootPolicy`](crate::boot_policy):
//! the kernel's PE Authenticode digest (PCR 4) and what Linux's EFI stub measures into
//! PCR 9 (the initrd and the command line).
//!
//! The Authenticode digest follows Microsoft's "Windows Authenticode Portable Executable
//! Signature Format" (section "Calculating the PE Image Hash"), as UEFI firmware computes
//! it for EV_EFI_BOOT_SERVICES_APPLICATION events (TCG PC Client Platform Firmware Profile
//! rev. 1.04, §3.3.4 PCR usage: PCR 4 receives the digest of each UEFI application the boot
//! manager starts). The `authenticode` crate on crates.io computes the same digest but pins
//! `digest` 0.10, `der` 0.7, `x509-cert` 0.2 and `object` 0.39, a second copy of the
//! RustCrypto stack this workspace has at 0.11/0.8/0.3, so the few lines of the hash are
//! here on top of the workspace's `object`.

use object::pe::{ImageNtHeaders32, ImageNtHeaders64, IMAGE_DIRECTORY_ENTRY_SECURITY};
use object::read::pe::{optional_header_magic, ImageNtHeaders, ImageOptionalHeader};
use object::LittleEndian as LE;

use crate::boot_policy::Reference;
use crate::eventlog::{alg_label, hash, EventLog, EV_EFI_BOOT_SERVICES_APPLICATION, EV_EVENT_TAG};
use crate::Error;

/// The tag Linux's EFI stub gives the initrd's EV_EVENT_TAG event in PCR 9
/// (`INITRD_EVENT_TAG_ID` in drivers/firmware/efi/libstub/efistub.h).
pub const LINUX_INITRD_TAG: u32 = 0x8F3B_22EC;
/// The tag Linux's EFI stub gives the load options' (command line's) EV_EVENT_TAG event
/// in PCR 9 (`LOAD_OPTIONS_EVENT_TAG_ID`).
pub const LINUX_LOAD_OPTIONS_TAG: u32 = 0x8F3B_22ED;

fn pe_error(why: impl core::fmt::Display) -> Error {
    Error::PeImage(why.to_string())
}

/// The PE Authenticode digest of `image` in bank `alg`: the image with the checksum, the
/// certificate table's directory entry and the certificate table left out, the headers
/// first, then each section's raw data in file order, then any data after the sections
/// that is not the certificate table.
pub fn pe_authenticode_digest(image: &[u8], alg: u16) -> Result<Vec<u8>, Error> {
    let ranges = match optional_header_magic(image).map_err(pe_error)? {
        object::pe::IMAGE_NT_OPTIONAL_HDR64_MAGIC => {
            authenticode_ranges::<ImageNtHeaders64>(image)?
        }
        object::pe::IMAGE_NT_OPTIONAL_HDR32_MAGIC => {
            authenticode_ranges::<ImageNtHeaders32>(image)?
        }
        magic => return Err(pe_error(format_args!("optional header magic {magic:#x}"))),
    };
    let parts: Vec<&[u8]> = ranges
        .iter()
        .map(|r| {
            image
                .get(r.clone())
                .ok_or_else(|| pe_error("range past the end"))
        })
        .collect::<Result<_, _>>()?;
    hash(alg, &parts).ok_or_else(|| pe_error(format_args!("cannot hash {}", alg_label(alg))))
}

/// The byte ranges of `image` the Authenticode digest covers, in order.
fn authenticode_ranges<Pe: ImageNtHeaders>(
    image: &[u8],
) -> Result<Vec<core::ops::Range<usize>>, Error> {
    let dos = object::pe::ImageDosHeader::parse(image).map_err(pe_error)?;
    let nt_offset = u64::from(dos.nt_headers_offset());
    let mut offset = nt_offset;
    let (nt, directories) = Pe::parse(image, &mut offset).map_err(pe_error)?;
    let optional = nt.optional_header();
    // The optional header begins after the signature (4 bytes) and the file header (20);
    // CheckSum is at offset 64 of both the PE32 and the PE32+ optional header, and the data
    // directories follow the fixed part of the optional header.
    let optional_at = usize::try_from(nt_offset)
        .ok()
        .and_then(|o| o.checked_add(24))
        .ok_or_else(|| pe_error("NT headers offset"))?;
    let checksum_at = optional_at + 64;
    let directories_at = optional_at + core::mem::size_of::<Pe::ImageOptionalHeader>();
    let headers_end = optional.size_of_headers() as usize;
    if headers_end > image.len() || headers_end < directories_at {
        return Err(pe_error(format_args!(
            "SizeOfHeaders {headers_end:#x} does not fit the file"
        )));
    }
    let mut ranges = Vec::with_capacity(4);
    ranges.push(0..checksum_at);
    let (security, cert_size) = match directories.get(IMAGE_DIRECTORY_ENTRY_SECURITY) {
        Some(dir) => {
            let entry_at = directories_at + IMAGE_DIRECTORY_ENTRY_SECURITY * 8;
            ranges.push(checksum_at + 4..entry_at);
            ranges.push(entry_at + 8..headers_end);
            (true, dir.size.get(LE) as usize)
        }
        // No certificate table entry: everything after the checksum.
        None => {
            ranges.push(checksum_at + 4..headers_end);
            (false, 0)
        }
    };
    let sections = nt.sections(image, offset).map_err(pe_error)?;
    let mut raw: Vec<(usize, usize)> = sections
        .iter()
        .map(|s| {
            (
                s.pointer_to_raw_data.get(LE) as usize,
                s.size_of_raw_data.get(LE) as usize,
            )
        })
        .filter(|(_, size)| *size != 0)
        .collect();
    raw.sort_unstable();
    let mut hashed = headers_end;
    for (start, size) in raw {
        let end = start
            .checked_add(size)
            .filter(|end| *end <= image.len())
            .ok_or_else(|| pe_error(format_args!("a section at {start:#x} runs past the file")))?;
        ranges.push(start..end);
        hashed = hashed.saturating_add(size);
    }
    // Data after the sections that is not the certificate table (which is last).
    let tail_end = image
        .len()
        .saturating_sub(if security { cert_size } else { 0 });
    if tail_end > hashed {
        ranges.push(hashed..tail_end);
    }
    Ok(ranges)
}

/// The kernel image as OVMF loads it when QEMU boots it directly (`-kernel`): QEMU's x86
/// loader (hw/i386/x86.c, `x86_load_linux`, QEMU 7.2 as in Debian bookworm) fills in fields
/// of the bzImage setup header before it hands the image to the firmware over fw_cfg, and
/// those bytes lie in the PE image's hashed `.setup` section, so PCR 4's application digest
/// is that of the patched image, not of the file:
/// - `type_of_loader` (0x210) = 0xB0, `loadflags` (0x211) |= CAN_USE_HEAP (0x80);
/// - `cmd_line_ptr` (0x228) = 0x20000 and `heap_end_ptr` (0x224) = 0x20000 - 0x10000 - 0x200;
/// - with an initrd, `ramdisk_image` (0x218) and `ramdisk_size` (0x21C): the initrd sits
///   at the highest 4 KiB-aligned address below both `initrd_addr_max` (0x22C) and the RAM
///   below 4 GiB minus the 0x28000 bytes q35/pc keep for ACPI tables.
///
/// `below_4g` is the guest RAM below 4 GiB (q35: all of `-m` up to 2.75 GiB, see
/// [`q35_below_4g`]). The result was checked against the Linux-guest level's logs, where
/// the digest does not change between boots but does with the initrd's size or `-m`.
pub fn qemu_direct_boot_kernel(
    image: &[u8],
    initrd_size: Option<u64>,
    below_4g: u64,
) -> Result<Vec<u8>, Error> {
    // The setup header fields QEMU writes end at 0x230 (initrd_addr_max).
    if image.len() < 0x230 {
        return Err(pe_error("too short for a Linux boot protocol header"));
    }
    let mut out = image.to_vec();
    let u16_at = |o: usize| {
        image
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if u32_at(0x202) != Some(0x5372_6448) {
        return Err(pe_error(
            "no Linux boot protocol header (\"HdrS\" at 0x202)",
        ));
    }
    let version = u16_at(0x206).unwrap_or(0);
    if version < 0x203 || image.get(0x211).is_none_or(|f| f & 0x01 == 0) {
        return Err(pe_error(format_args!(
            "boot protocol {version:#x} or a kernel not loaded high: QEMU's direct boot \
             patches such images differently"
        )));
    }
    let (real_addr, cmdline_addr) = (0x1_0000u32, 0x2_0000u32);
    out[0x210] = 0xB0;
    out[0x211] |= 0x80;
    out[0x224..0x226].copy_from_slice(&((cmdline_addr - real_addr - 0x200) as u16).to_le_bytes());
    out[0x228..0x22C].copy_from_slice(&cmdline_addr.to_le_bytes());
    if let Some(size) = initrd_size {
        let acpi_data_size = 0x2_8000u64;
        let mut max = u64::from(u32_at(0x22C).unwrap_or(0x37FF_FFFF));
        let limit = below_4g.saturating_sub(acpi_data_size);
        if max >= limit {
            max = limit.saturating_sub(1);
        }
        let addr = max
            .checked_sub(size)
            .map(|a| a & !0xFFF)
            .and_then(|a| u32::try_from(a).ok())
            .ok_or_else(|| pe_error(format_args!("an initrd of {size} bytes does not fit")))?;
        let size = u32::try_from(size).map_err(|_| pe_error("initrd larger than 4 GiB"))?;
        out[0x218..0x21C].copy_from_slice(&addr.to_le_bytes());
        out[0x21C..0x220].copy_from_slice(&size.to_le_bytes());
    }
    Ok(out)
}

/// The RAM below 4 GiB of a q35 guest with `ram` bytes (QEMU's `pc_q35_init`: all of it
/// below 2.75 GiB, else 2 GiB).
pub fn q35_below_4g(ram: u64) -> u64 {
    if ram >= 0xB000_0000 {
        0x8000_0000
    } else {
        ram
    }
}

/// The LZMA GUID-defined section's GUID (edk2's `gLzmaCustomDecompressGuid`,
/// EE4E5898-3914-4259-9D6E-DC7BD79403CF), as the bytes of an EFI_GUID.
const LZMA_GUID: [u8; 16] = [
    0x98, 0x58, 0x4E, 0xEE, 0x14, 0x39, 0x59, 0x42, 0x9D, 0x6E, 0xDC, 0x7B, 0xD7, 0x94, 0x03, 0xCF,
];
/// EFI_FIRMWARE_FILE_SYSTEM2_GUID (8C8CE578-8A3D-4F1C-9935-896185C32DD3) as bytes.
const FFS2_GUID: [u8; 16] = [
    0x78, 0xE5, 0x8C, 0x8C, 0x3D, 0x8A, 0x1C, 0x4F, 0x99, 0x35, 0x89, 0x61, 0x85, 0xC3, 0x2D, 0xD3,
];
/// EFI_FIRMWARE_FILE_SYSTEM3_GUID (5473C07A-3DCB-4DCA-BD6F-1E9689E7349A) as bytes.
const FFS3_GUID: [u8; 16] = [
    0x7A, 0xC0, 0x73, 0x54, 0xCB, 0x3D, 0xCA, 0x4D, 0xBD, 0x6F, 0x1E, 0x96, 0x89, 0xE7, 0x34, 0x9A,
];
/// The most a compressed firmware volume may expand to (OVMF's is 16 MB).
const MAX_DECOMPRESSED: usize = 64 << 20;

/// The firmware volumes OVMF measures into PCR 0 as EV_EFI_PLATFORM_FIRMWARE_BLOB(2)
/// events: the PEI and DXE volumes (PEIFV, DXEFV) that the SEC phase decompresses from
/// the flash image's FVMAIN_COMPACT, hashed as decompressed (checked against both of the
/// Linux-guest level's logs: bookworm's and forky's OVMF.fd). Walks the UEFI PI
/// structures: firmware volumes ("_FVH", PI Vol. 3 §3.2.1), their FFS files (§2.2.3),
/// the files' sections (§2.2.4), an LZMA GUID-defined section's content, and the
/// FIRMWARE_VOLUME_IMAGE sections (type 0x17) in it.
pub fn ovmf_firmware_volumes(image: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    let mut fv_at = 0usize;
    while let Some(fv) = image.get(fv_at..) {
        let Some(length) = fv_length(fv) else { break };
        let fv = &fv[..length];
        fv_at += length;
        // Only volumes with an FFS file system hold files (not, e.g., the varstore).
        if !matches!(fv.get(16..32), Some(g) if g == FFS2_GUID || g == FFS3_GUID) {
            continue;
        }
        let header = usize::from(u16::from_le_bytes([fv[48], fv[49]]));
        let mut file_at = header.next_multiple_of(8);
        // FFS files: 24-byte headers, 8-byte aligned, until the free space (0xFF).
        while let Some(h) = fv.get(file_at..file_at + 24) {
            if h.iter().all(|b| *b == 0xFF) {
                break;
            }
            let (size, body) = if h[19] & 0x01 != 0 {
                // FFS_ATTRIB_LARGE_FILE: an 8-byte size after the header.
                let ext = fv
                    .get(file_at + 24..file_at + 32)
                    .ok_or_else(|| fw_error("large file"))?;
                let size = u64::from_le_bytes(ext.try_into().unwrap_or_default());
                (usize::try_from(size).unwrap_or(usize::MAX), 32)
            } else {
                (
                    usize::from(h[20]) | usize::from(h[21]) << 8 | usize::from(h[22]) << 16,
                    24,
                )
            };
            let end = file_at
                .checked_add(size)
                .filter(|e| *e <= fv.len() && size >= body)
                .ok_or_else(|| {
                    fw_error(format_args!(
                        "an FFS file at {file_at:#x} runs past its volume"
                    ))
                })?;
            // EFI_FV_FILETYPE_RAW (0x01) and EFI_FV_FILETYPE_FFS_PAD (0xF0) have no sections.
            if h[18] != 0x01 && h[18] != 0xF0 {
                sections(&fv[file_at + body..end], &mut out, 0)?;
            }
            file_at = end.next_multiple_of(8);
        }
    }
    if out.is_empty() {
        return Err(fw_error(
            "no compressed firmware volume holding volume images (not an OVMF image?)",
        ));
    }
    Ok(out)
}

fn fw_error(why: impl core::fmt::Display) -> Error {
    Error::FirmwareImage(why.to_string())
}

/// The FvLength of the firmware volume `fv` starts with, if it is one that fits.
fn fv_length(fv: &[u8]) -> Option<usize> {
    if fv.get(40..44)? != b"_FVH" {
        return None;
    }
    let length = usize::try_from(u64::from_le_bytes(fv.get(32..40)?.try_into().ok()?)).ok()?;
    (length >= 56 && length <= fv.len()).then_some(length)
}

/// Walks the sections in `data`: volume images are collected, LZMA sections expanded.
fn sections(data: &[u8], out: &mut Vec<Vec<u8>>, depth: u32) -> Result<(), Error> {
    if depth > 4 {
        return Err(fw_error("sections nested too deep"));
    }
    let mut at = 0usize;
    while let Some(h) = data.get(at..at + 4) {
        let size24 = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        let (size, header) = if size24 == 0xFF_FFFF {
            let ext = data
                .get(at + 4..at + 8)
                .ok_or_else(|| fw_error("section size"))?;
            (
                u32::from_le_bytes(ext.try_into().unwrap_or_default()) as usize,
                8,
            )
        } else {
            (size24, 4)
        };
        let end = at
            .checked_add(size)
            .filter(|e| *e <= data.len() && size >= header)
            .ok_or_else(|| fw_error(format_args!("a section at {at:#x} runs past its file")))?;
        let body = &data[at + header..end];
        match h[3] {
            // EFI_SECTION_GUID_DEFINED: GUID, DataOffset (from the section's start), attributes.
            0x02 if body.get(..16) == Some(&LZMA_GUID[..]) => {
                let offset = body
                    .get(16..18)
                    .map(|o| usize::from(u16::from_le_bytes([o[0], o[1]])))
                    .ok_or_else(|| fw_error("GUID-defined section header"))?;
                let compressed = data
                    .get(at + offset..end)
                    .ok_or_else(|| fw_error("LZMA section data offset"))?;
                let mut expanded = Limited(Vec::new());
                lzma_rs::lzma_decompress(&mut &compressed[..], &mut expanded)
                    .map_err(|e| fw_error(format_args!("LZMA section: {e}")))?;
                sections(&expanded.0, out, depth + 1)?;
            }
            // EFI_SECTION_FIRMWARE_VOLUME_IMAGE.
            0x17 => {
                let length = fv_length(body).ok_or_else(|| {
                    fw_error(format_args!("the volume image at {at:#x} is not a volume"))
                })?;
                out.push(body[..length].to_vec());
            }
            _ => {}
        }
        at = end.next_multiple_of(4);
    }
    Ok(())
}

/// A Vec writer that refuses to grow past [`MAX_DECOMPRESSED`].
struct Limited(Vec<u8>);

impl std::io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_DECOMPRESSED {
            return Err(std::io::Error::other("expands past 64 MiB"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// PCR 0's references for an OVMF image: one required EV_EFI_PLATFORM_FIRMWARE_BLOB
/// (or `event_type`) event per firmware volume of [`ovmf_firmware_volumes`].
pub fn ovmf_references(
    alg: u16,
    name: &str,
    image: &[u8],
    event_type: u32,
) -> Result<Vec<Reference>, Error> {
    ovmf_firmware_volumes(image)?
        .iter()
        .enumerate()
        .map(|(i, fv)| {
            Ok(Reference {
                pcr: 0,
                event_type,
                digest: hash(alg, &[fv]).ok_or_else(|| fw_error("unsupported bank"))?,
                required: true,
                tag: None,
                source: format!("firmware {name}, volume {} ({} bytes)", i + 1, fv.len()),
            })
        })
        .collect()
}

/// What Linux's EFI stub hashes for the initrd's PCR 9 event: the initrd's bytes as the
/// stub loaded them (`efi_measure_tagged_event` over the loaded initrd in
/// drivers/firmware/efi/libstub/efi-stub-helper.c).
pub fn linux_initrd_digest(initrd: &[u8], alg: u16) -> Result<Vec<u8>, Error> {
    hash(alg, &[initrd]).ok_or_else(|| pe_error(format_args!("cannot hash {}", alg_label(alg))))
}

/// What Linux's EFI stub hashes for the load options' PCR 9 event: the LoadedImage
/// protocol's LoadOptions as the firmware passed them, which for a boot entry or a
/// firmware's own loader is the command line in UTF-16LE with its NUL terminator.
pub fn linux_load_options_digest(load_options: &str, alg: u16) -> Result<Vec<u8>, Error> {
    let mut bytes: Vec<u8> = load_options
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    bytes.extend_from_slice(&[0, 0]);
    hash(alg, &[&bytes]).ok_or_else(|| pe_error(format_args!("cannot hash {}", alg_label(alg))))
}

/// The load options OVMF may give a kernel QEMU loads directly (`-kernel`, `-append`,
/// `-initrd`): the `-append` text, and with an initrd an `initrd=initrd` option, which
/// older OVMF appends (Debian bookworm's, edk2 2022.11: "APPEND initrd=initrd") and newer
/// OVMF puts first (Debian forky's: "initrd=initrd APPEND"); both observed in the
/// Linux-guest level's logs. Without an initrd, the text alone.
pub fn ovmf_qemu_load_options(append: &str, initrd: bool) -> Vec<String> {
    if initrd {
        vec![
            format!("{append} initrd=initrd"),
            format!("initrd=initrd {append}"),
        ]
    } else {
        vec![append.to_string()]
    }
}

/// The references for the artifacts given: the kernel (PCR 4, PE Authenticode), the
/// initrd and the load options (PCR 9, Linux's EFI stub), each required. `kernel` is the
/// image as the firmware loads it (see [`qemu_direct_boot_kernel`]).
pub fn linux_references(
    alg: u16,
    kernel: Option<(&str, &[u8])>,
    initrd: Option<(&str, &[u8])>,
    load_options: Option<&str>,
) -> Result<Vec<Reference>, Error> {
    let mut out = Vec::new();
    if let Some((name, image)) = kernel {
        out.push(Reference {
            pcr: 4,
            event_type: EV_EFI_BOOT_SERVICES_APPLICATION,
            digest: pe_authenticode_digest(image, alg)?,
            required: true,
            tag: None,
            source: format!("kernel {name} (PE Authenticode)"),
        });
    }
    if let Some((name, bytes)) = initrd {
        out.push(Reference {
            pcr: 9,
            event_type: EV_EVENT_TAG,
            digest: linux_initrd_digest(bytes, alg)?,
            required: true,
            tag: Some(LINUX_INITRD_TAG),
            source: format!("initrd {name} (Linux EFI stub)"),
        });
    }
    if let Some(options) = load_options {
        out.push(Reference {
            pcr: 9,
            event_type: EV_EVENT_TAG,
            digest: linux_load_options_digest(options, alg)?,
            required: true,
            tag: Some(LINUX_LOAD_OPTIONS_TAG),
            source: format!("command line \"{options}\" (Linux EFI stub, UTF-16)"),
        });
    }
    Ok(out)
}

/// Of several candidate load options (e.g. [`ovmf_qemu_load_options`]), the one whose
/// digest is a PCR 9 EV_EVENT_TAG event of `log`: the log only tells which firmware
/// convention applies, the value is still computed. The first candidate if none is.
pub fn pick_load_options<'a>(
    log: &EventLog,
    alg: u16,
    candidates: &'a [String],
) -> Option<&'a str> {
    let logged: Vec<&[u8]> = log
        .events
        .iter()
        .filter(|e| e.pcr == 9 && e.tag() == Some(LINUX_LOAD_OPTIONS_TAG))
        .filter_map(|e| e.digest(alg))
        .collect();
    candidates
        .iter()
        .find(|c| linux_load_options_digest(c, alg).is_ok_and(|d| logged.contains(&d.as_slice())))
        .or(candidates.first())
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::ALG_SHA256;

    #[test]
    fn load_options_are_utf16_with_a_terminator() {
        // SHA-256 of "a\0" "\0\0" (UTF-16LE "a" and its NUL).
        let d = linux_load_options_digest("a", ALG_SHA256).unwrap();
        assert_eq!(d, hash(ALG_SHA256, &[&[b'a', 0, 0, 0]]).unwrap());
        assert_eq!(
            ovmf_qemu_load_options("quiet", true),
            ["quiet initrd=initrd", "initrd=initrd quiet"]
        );
        assert_eq!(ovmf_qemu_load_options("quiet", false), ["quiet"]);
    }

    #[test]
    fn qemu_direct_boot_fills_in_the_setup_header() {
        let mut image = vec![0u8; 0x300];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        image[0x211] = 0x01;
        image[0x22C..0x230].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        let out = qemu_direct_boot_kernel(&image, Some(0x1000), q35_below_4g(512 << 20)).unwrap();
        let u32_at = |o: usize| u32::from_le_bytes(out[o..o + 4].try_into().unwrap());
        assert_eq!(out[0x210], 0xB0);
        assert_eq!(out[0x211], 0x81);
        assert_eq!(u16::from_le_bytes([out[0x224], out[0x225]]), 0xFE00);
        assert_eq!(u32_at(0x228), 0x2_0000);
        // Below 512 MiB minus 0x28000 of ACPI data, 4 KiB aligned.
        assert_eq!(u32_at(0x218), 0x1FFD_6000);
        assert_eq!(u32_at(0x21C), 0x1000);
        // Another initrd size moves the initrd, so the kernel's digest changes with it.
        let other = qemu_direct_boot_kernel(&image, Some(0x2000), 512 << 20).unwrap();
        assert_ne!(other, out);
        // Without an initrd the ramdisk fields stay as they were.
        let none = qemu_direct_boot_kernel(&image, None, 512 << 20).unwrap();
        assert_eq!(none[0x218..0x220], [0; 8]);
        assert_eq!(q35_below_4g(4 << 30), 0x8000_0000);
        // Not a bzImage, or one QEMU loads low: refused.
        assert!(qemu_direct_boot_kernel(&[0u8; 0x300], None, 512 << 20).is_err());
        image[0x211] = 0;
        assert!(qemu_direct_boot_kernel(&image, None, 512 << 20).is_err());
        image[0x211] = 1;
        for len in [0x100, 0x212, 0x22F] {
            assert!(qemu_direct_boot_kernel(&image[..len], Some(1), 512 << 20).is_err());
        }
    }

    /// A firmware volume of `length` bytes (at least 72) with an FFS2 file system and
    /// `files` after its 72-byte header.
    fn volume(length: usize, files: &[u8]) -> Vec<u8> {
        let mut fv = vec![0xFFu8; length];
        fv[..16].fill(0);
        fv[16..32].copy_from_slice(&FFS2_GUID);
        fv[32..40].copy_from_slice(&(length as u64).to_le_bytes());
        fv[40..44].copy_from_slice(b"_FVH");
        fv[48..50].copy_from_slice(&72u16.to_le_bytes());
        fv[72..72 + files.len()].copy_from_slice(files);
        fv
    }

    fn section(ty: u8, body: &[u8]) -> Vec<u8> {
        let size = (body.len() + 4) as u32;
        let mut s = size.to_le_bytes()[..3].to_vec();
        s.push(ty);
        s.extend_from_slice(body);
        while s.len() % 4 != 0 {
            s.push(0);
        }
        s
    }

    fn file(ty: u8, sections: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 24];
        f[18] = ty;
        f[20..23].copy_from_slice(&((24 + sections.len()) as u32).to_le_bytes()[..3]);
        f.extend_from_slice(sections);
        while f.len() % 8 != 0 {
            f.push(0xFF);
        }
        f
    }

    #[test]
    fn ovmf_volumes_are_found_in_the_lzma_section() {
        let pei = volume(0x100, &[]);
        let dxe = volume(0x200, &[]);
        let mut inner = section(0x17, &pei);
        inner.extend(section(0x17, &dxe));
        let mut packed = Vec::new();
        lzma_rs::lzma_compress(&mut &inner[..], &mut packed).unwrap();
        let build = |packed: &[u8]| {
            let mut guided = LZMA_GUID.to_vec();
            guided.extend_from_slice(&24u16.to_le_bytes()); // DataOffset: 4 + 16 + 2 + 2
            guided.extend_from_slice(&1u16.to_le_bytes());
            guided.extend_from_slice(packed);
            let mut files = file(0x01, b"raw, not sections");
            files.extend(file(0x0B, &section(0x02, &guided)));
            // A varstore-like volume first (no FFS file system), then the code volume.
            let mut image = volume(0x100, &[]);
            image[16] = 0;
            image.extend(volume(0x1000, &files));
            image
        };
        let image = build(&packed);
        let found = ovmf_firmware_volumes(&image).unwrap();
        assert_eq!(found, [pei, dxe]);
        let refs = ovmf_references(ALG_SHA256, "OVMF.fd", &image, 0x8000_0008).unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1].digest, hash(ALG_SHA256, &[&found[1]]).unwrap());
        // Damaged: the compressed data cut short, a file running past its volume.
        let e = ovmf_firmware_volumes(&build(&packed[..packed.len() / 2])).unwrap_err();
        assert!(e.to_string().contains("LZMA section"), "{e}");
        let mut long = image.clone();
        let first_file = 0x100 + 72;
        long[first_file + 20..first_file + 23].fill(0xFF);
        let e = ovmf_firmware_volumes(&long).unwrap_err().to_string();
        assert!(e.contains("runs past its volume"), "{e}");
        assert!(ovmf_firmware_volumes(&[0u8; 4096]).is_err());
    }

    #[test]
    fn garbage_is_not_a_pe_image() {
        for bytes in [&b""[..], b"MZ", &[0u8; 4096]] {
            let e = pe_authenticode_digest(bytes, ALG_SHA256).unwrap_err();
            assert!(matches!(e, Error::PeImage(_)), "{e}");
        }
    }
}
