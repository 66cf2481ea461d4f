//! UEFI GUIDs and the services manifest of the attestation protocol.
//!
//! The manifest (58019, "Services Manifest") is a 24-byte header (manifest GUID, u32
//! total length, u32 entry count), a table of 24-byte entries {service GUID, u32 offset,
//! u32 length} and then the service data. Offsets count from the start of the manifest.
//! GUIDs use the UEFI mixed-endian byte order: the first three groups little-endian, the
//! last eight bytes as written. The parser checks every offset and length against the
//! manifest's own bounds before handing out a slice.

use core::fmt;

use zerocopy::byteorder::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Field, ParseError};

/// A GUID in UEFI byte order (UEFI spec, `EFI_GUID`).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(transparent)]
pub struct Guid([u8; 16]);

const _: () = assert!(core::mem::size_of::<Guid>() == 16);

impl Guid {
    /// The GUID with the given fields (as in its text form `d1-d2-d3-d4[0..2]-d4[2..8]`).
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Self([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// The GUID stored as these 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 stored bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// Parses the text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
    pub fn parse_str(text: &str) -> Result<Self, ParseError> {
        let s = text.as_bytes();
        if s.len() != 36 {
            return Err(ParseError::SizeMismatch {
                size: s.len(),
                expected: 36,
            });
        }
        // Text positions of the 16 bytes, in text order.
        const POS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        for dash in [8usize, 13, 18, 23] {
            if s.get(dash) != Some(&b'-') {
                return Err(ParseError::UnknownValue {
                    field: Field::GuidText,
                    value: dash as u64,
                });
            }
        }
        let mut text_order = [0u8; 16];
        for (out, &pos) in text_order.iter_mut().zip(POS.iter()) {
            let hi = hex_digit(s.get(pos).copied(), pos)?;
            let lo = hex_digit(s.get(pos + 1).copied(), pos + 1)?;
            *out = (hi << 4) | lo;
        }
        let [a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, d2, d3, d4, d5, d6, d7] = text_order;
        Ok(Self([
            a3, a2, a1, a0, b1, b0, c1, c0, d0, d1, d2, d3, d4, d5, d6, d7,
        ]))
    }
}

fn hex_digit(c: Option<u8>, pos: usize) -> Result<u8, ParseError> {
    match c {
        Some(c @ b'0'..=b'9') => Ok(c - b'0'),
        Some(c @ b'a'..=b'f') => Ok(c - b'a' + 10),
        Some(c @ b'A'..=b'F') => Ok(c - b'A' + 10),
        _ => Err(ParseError::UnknownValue {
            field: Field::GuidText,
            value: pos as u64,
        }),
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, d2, d3, d4, d5, d6, d7] = self.0;
        write!(
            f,
            "{a3:02x}{a2:02x}{a1:02x}{a0:02x}-{b1:02x}{b0:02x}-{c1:02x}{c0:02x}-{d0:02x}{d1:02x}-{d2:02x}{d3:02x}{d4:02x}{d5:02x}{d6:02x}{d7:02x}"
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// GUID of the services manifest header: 63849ebb-3d92-4670-a1ff-58f9c94b87bb.
pub const SERVICES_MANIFEST_GUID: Guid = Guid::from_fields(
    0x6384_9ebb,
    0x3d92,
    0x4670,
    [0xa1, 0xff, 0x58, 0xf9, 0xc9, 0x4b, 0x87, 0xbb],
);

/// GUID of the vTPM service: c476f1eb-0123-45a5-9641-b4e7dde5bfe3.
pub const VTPM_SERVICE_GUID: Guid = Guid::from_fields(
    0xc476_f1eb,
    0x0123,
    0x45a5,
    [0x96, 0x41, 0xb4, 0xe7, 0xdd, 0xe5, 0xbf, 0xe3],
);

/// Manifest version of the vTPM service entry.
pub const VTPM_SERVICE_MANIFEST_VERSION: u32 = 0;

/// Size of the manifest header.
pub const MANIFEST_HEADER_SIZE: usize = 24;
/// Size of one manifest table entry.
pub const MANIFEST_ENTRY_SIZE: usize = 24;

/// Services manifest header (58019, table "Services Manifest").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ManifestHeader {
    /// [`SERVICES_MANIFEST_GUID`].
    pub guid: Guid,
    /// Total length of the manifest including this header.
    pub length: U32,
    /// Number of table entries.
    pub count: U32,
}

const _: () = assert!(core::mem::size_of::<ManifestHeader>() == MANIFEST_HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(ManifestHeader, length) == 16);
const _: () = assert!(core::mem::offset_of!(ManifestHeader, count) == 20);

/// One services manifest table entry (58019, table "Services Manifest Entry").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ManifestTableEntry {
    /// Service GUID.
    pub guid: Guid,
    /// Offset of the service data from the start of the manifest.
    pub offset: U32,
    /// Length of the service data.
    pub length: U32,
}

const _: () = assert!(core::mem::size_of::<ManifestTableEntry>() == MANIFEST_ENTRY_SIZE);
const _: () = assert!(core::mem::offset_of!(ManifestTableEntry, offset) == 16);
const _: () = assert!(core::mem::offset_of!(ManifestTableEntry, length) == 20);

/// One service's entry: its GUID and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceEntry<'a> {
    /// Service GUID.
    pub guid: Guid,
    /// Service data.
    pub data: &'a [u8],
}

/// Builds a manifest of `services` into `out`; returns its length.
pub fn build_manifest(services: &[ServiceEntry<'_>], out: &mut [u8]) -> Result<usize, ParseError> {
    let table_end = services
        .len()
        .checked_mul(MANIFEST_ENTRY_SIZE)
        .and_then(|t| t.checked_add(MANIFEST_HEADER_SIZE))
        .ok_or(ParseError::SizeTooLarge {
            size: usize::MAX,
            max: u32::MAX as usize,
        })?;
    let total = services
        .iter()
        .try_fold(table_end, |acc, s| acc.checked_add(s.data.len()))
        .ok_or(ParseError::SizeTooLarge {
            size: usize::MAX,
            max: u32::MAX as usize,
        })?;
    let total32 = u32::try_from(total).map_err(|_| ParseError::SizeTooLarge {
        size: total,
        max: u32::MAX as usize,
    })?;
    let got = out.len();
    let out = out
        .get_mut(..total)
        .ok_or(ParseError::OutputTooSmall { need: total, got })?;
    let (head, rest) = out.split_at_mut(MANIFEST_HEADER_SIZE);
    let header = ManifestHeader {
        guid: SERVICES_MANIFEST_GUID,
        length: U32::new(total32),
        // services.len() * 24 fits in u32 because total does.
        count: U32::new(services.len() as u32),
    };
    head.copy_from_slice(header.as_bytes());
    let (table, mut data) = rest.split_at_mut(table_end - MANIFEST_HEADER_SIZE);
    let mut offset = table_end;
    for (slot, service) in table.chunks_exact_mut(MANIFEST_ENTRY_SIZE).zip(services) {
        let entry = ManifestTableEntry {
            guid: service.guid,
            // offset and length are below total, which fits in u32.
            offset: U32::new(offset as u32),
            length: U32::new(service.data.len() as u32),
        };
        slot.copy_from_slice(entry.as_bytes());
        let (dst, tail) = data.split_at_mut(service.data.len());
        dst.copy_from_slice(service.data);
        data = tail;
        offset += service.data.len();
    }
    Ok(total)
}

/// A parsed, bounds-checked services manifest.
#[derive(Debug, Clone, Copy)]
pub struct Manifest<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Manifest<'a> {
    /// Parses a manifest at the start of `bytes`.
    ///
    /// Rejects: a short header; a header GUID other than [`SERVICES_MANIFEST_GUID`]; a
    /// total length below the header or beyond `bytes`; an entry count whose table does
    /// not fit in the total length; an entry whose data lies outside the manifest or
    /// overlaps the header and table.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (header, _) =
            ManifestHeader::read_from_prefix(bytes).map_err(|_| ParseError::ShortBuffer {
                need: MANIFEST_HEADER_SIZE,
                got: bytes.len(),
            })?;
        if header.guid != SERVICES_MANIFEST_GUID {
            let [a, b, c, d, ..] = header.guid.to_bytes();
            return Err(ParseError::UnknownValue {
                field: Field::ManifestGuid,
                value: u32::from_le_bytes([a, b, c, d]).into(),
            });
        }
        let length = usize::try_from(header.length.get()).unwrap_or(usize::MAX);
        if length < MANIFEST_HEADER_SIZE {
            return Err(ParseError::SizeMismatch {
                size: length,
                expected: MANIFEST_HEADER_SIZE,
            });
        }
        let bytes = bytes.get(..length).ok_or(ParseError::ShortBuffer {
            need: length,
            got: bytes.len(),
        })?;
        let capacity = (length - MANIFEST_HEADER_SIZE) / MANIFEST_ENTRY_SIZE;
        let count = usize::try_from(header.count.get()).unwrap_or(usize::MAX);
        if count > capacity {
            return Err(ParseError::CountOverCapacity { count, capacity });
        }
        let table_end = MANIFEST_HEADER_SIZE + count * MANIFEST_ENTRY_SIZE;
        let manifest = Self { bytes, count };
        for index in 0..count {
            let entry = manifest.table_entry(index)?;
            let offset = usize::try_from(entry.offset.get()).unwrap_or(usize::MAX);
            let len = usize::try_from(entry.length.get()).unwrap_or(usize::MAX);
            let in_bounds = offset.checked_add(len).is_some_and(|end| end <= length);
            if !in_bounds {
                return Err(ParseError::OutOfBounds {
                    field: Field::ManifestEntry,
                    offset,
                    len,
                    limit: length,
                });
            }
            if offset < table_end {
                return Err(ParseError::Overlap {
                    field: Field::ManifestEntry,
                    offset: offset as u64,
                });
            }
        }
        Ok(manifest)
    }

    fn table_entry(&self, index: usize) -> Result<ManifestTableEntry, ParseError> {
        let start = MANIFEST_HEADER_SIZE + index * MANIFEST_ENTRY_SIZE;
        let slot =
            self.bytes
                .get(start..start + MANIFEST_ENTRY_SIZE)
                .ok_or(ParseError::ShortBuffer {
                    need: start + MANIFEST_ENTRY_SIZE,
                    got: self.bytes.len(),
                })?;
        ManifestTableEntry::read_from_bytes(slot).map_err(|_| ParseError::ShortBuffer {
            need: MANIFEST_ENTRY_SIZE,
            got: slot.len(),
        })
    }

    /// Total length of the manifest.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the manifest has no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of entries.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The manifest bytes (exactly `len()` of them).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Entry `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<ServiceEntry<'a>> {
        if index >= self.count {
            return None;
        }
        let entry = self.table_entry(index).ok()?;
        let offset = usize::try_from(entry.offset.get()).ok()?;
        let len = usize::try_from(entry.length.get()).ok()?;
        let data = self.bytes.get(offset..offset.checked_add(len)?)?;
        Some(ServiceEntry {
            guid: entry.guid,
            data,
        })
    }

    /// All entries in table order.
    pub fn entries(&self) -> impl Iterator<Item = ServiceEntry<'a>> + '_ {
        (0..self.count).filter_map(move |i| self.get(i))
    }

    /// The first entry with this GUID.
    pub fn find(&self, guid: Guid) -> Option<ServiceEntry<'a>> {
        self.entries().find(|e| e.guid == guid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::string::ToString;

    #[test]
    fn guid_byte_order_is_uefi_mixed_endian() {
        assert_eq!(
            SERVICES_MANIFEST_GUID.to_bytes(),
            [
                0xbb, 0x9e, 0x84, 0x63, 0x92, 0x3d, 0x70, 0x46, 0xa1, 0xff, 0x58, 0xf9, 0xc9, 0x4b,
                0x87, 0xbb
            ]
        );
        assert_eq!(
            VTPM_SERVICE_GUID.to_bytes(),
            [
                0xeb, 0xf1, 0x76, 0xc4, 0x23, 0x01, 0xa5, 0x45, 0x96, 0x41, 0xb4, 0xe7, 0xdd, 0xe5,
                0xbf, 0xe3
            ]
        );
    }

    #[test]
    fn guid_text_round_trips() {
        for text in [
            "63849ebb-3d92-4670-a1ff-58f9c94b87bb",
            "c476f1eb-0123-45a5-9641-b4e7dde5bfe3",
        ] {
            let g = Guid::parse_str(text).unwrap();
            assert_eq!(g.to_string(), text);
        }
        assert_eq!(
            Guid::parse_str("63849EBB-3D92-4670-A1FF-58F9C94B87BB"),
            Ok(SERVICES_MANIFEST_GUID)
        );
        assert_eq!(
            Guid::parse_str("c476f1eb-0123-45a5-9641-b4e7dde5bfe3"),
            Ok(VTPM_SERVICE_GUID)
        );
    }

    #[test]
    fn guid_text_rejections() {
        assert_eq!(
            Guid::parse_str("63849ebb-3d92-4670-a1ff-58f9c94b87b"),
            Err(ParseError::SizeMismatch {
                size: 35,
                expected: 36
            })
        );
        assert_eq!(
            Guid::parse_str("63849ebb_3d92-4670-a1ff-58f9c94b87bb"),
            Err(ParseError::UnknownValue {
                field: Field::GuidText,
                value: 8
            })
        );
        assert_eq!(
            Guid::parse_str("63849ebb-3d92-4670-a1ff-58f9c94b87bg"),
            Err(ParseError::UnknownValue {
                field: Field::GuidText,
                value: 35
            })
        );
        // A multi-byte character of the right total length.
        assert!(Guid::parse_str("63849ebb-3d92-4670-a1ff-58f9c94b87é").is_err());
    }

    #[test]
    fn manifest_round_trips() {
        let ek = [0x00u8, 0x01, 0x00, 0x0b, 0xAA, 0xBB];
        let other = Guid::from_fields(1, 2, 3, [4; 8]);
        let services = [
            ServiceEntry {
                guid: VTPM_SERVICE_GUID,
                data: &ek,
            },
            ServiceEntry {
                guid: other,
                data: &[],
            },
        ];
        let mut out = [0u8; 256];
        let n = build_manifest(&services, &mut out).unwrap();
        assert_eq!(n, 24 + 2 * 24 + 6);
        assert_eq!(&out[..16], &SERVICES_MANIFEST_GUID.to_bytes());
        assert_eq!(&out[16..20], &(n as u32).to_le_bytes());
        assert_eq!(&out[20..24], &2u32.to_le_bytes());
        // First entry's offset: right after the table.
        assert_eq!(&out[40..44], &72u32.to_le_bytes());

        let m = Manifest::parse(&out).unwrap();
        assert_eq!(m.len(), n);
        assert_eq!(m.count(), 2);
        assert!(!m.is_empty());
        assert_eq!(m.get(0), Some(services[0]));
        assert_eq!(m.get(1), Some(services[1]));
        assert_eq!(m.get(2), None);
        assert_eq!(m.find(VTPM_SERVICE_GUID).unwrap().data, &ek);
        assert_eq!(m.entries().count(), 2);
    }

    #[test]
    fn empty_manifest() {
        let mut out = [0u8; 24];
        assert_eq!(build_manifest(&[], &mut out), Ok(24));
        let m = Manifest::parse(&out).unwrap();
        assert!(m.is_empty());
        assert_eq!(m.find(VTPM_SERVICE_GUID), None);
    }

    #[test]
    fn build_rejects_small_output() {
        let services = [ServiceEntry {
            guid: VTPM_SERVICE_GUID,
            data: &[1, 2, 3],
        }];
        let mut out = [0u8; 50];
        assert_eq!(
            build_manifest(&services, &mut out),
            Err(ParseError::OutputTooSmall { need: 51, got: 50 })
        );
    }

    fn one_entry_manifest() -> [u8; 52] {
        let mut out = [0u8; 52];
        let services = [ServiceEntry {
            guid: VTPM_SERVICE_GUID,
            data: &[9, 9, 9, 9],
        }];
        assert_eq!(build_manifest(&services, &mut out), Ok(52));
        out
    }

    #[test]
    fn parse_rejects_short_header_and_wrong_guid() {
        let m = one_entry_manifest();
        assert_eq!(
            Manifest::parse(&m[..23]).err(),
            Some(ParseError::ShortBuffer { need: 24, got: 23 })
        );
        let mut bad = m;
        bad[0] ^= 1;
        assert_eq!(
            Manifest::parse(&bad).err(),
            Some(ParseError::UnknownValue {
                field: Field::ManifestGuid,
                value: 0x6384_9eba
            })
        );
    }

    #[test]
    fn parse_rejects_bad_total_length() {
        let m = one_entry_manifest();
        assert_eq!(
            Manifest::parse(&m[..51]).err(),
            Some(ParseError::ShortBuffer { need: 52, got: 51 })
        );
        let mut small = m;
        small[16..20].copy_from_slice(&23u32.to_le_bytes());
        assert_eq!(
            Manifest::parse(&small).err(),
            Some(ParseError::SizeMismatch {
                size: 23,
                expected: 24
            })
        );
    }

    #[test]
    fn parse_rejects_count_over_capacity() {
        let mut m = one_entry_manifest();
        m[20..24].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(
            Manifest::parse(&m).err(),
            Some(ParseError::CountOverCapacity {
                count: 2,
                capacity: 1
            })
        );
        m[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Manifest::parse(&m),
            Err(ParseError::CountOverCapacity { .. })
        ));
    }

    #[test]
    fn parse_rejects_entry_outside_manifest() {
        let mut m = one_entry_manifest();
        m[44..48].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(
            Manifest::parse(&m).err(),
            Some(ParseError::OutOfBounds {
                field: Field::ManifestEntry,
                offset: 48,
                len: 5,
                limit: 52
            })
        );
        let mut m = one_entry_manifest();
        m[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Manifest::parse(&m),
            Err(ParseError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn parse_rejects_entry_overlapping_the_table() {
        let mut m = one_entry_manifest();
        m[40..44].copy_from_slice(&44u32.to_le_bytes());
        assert_eq!(
            Manifest::parse(&m).err(),
            Some(ParseError::Overlap {
                field: Field::ManifestEntry,
                offset: 44
            })
        );
    }
}
