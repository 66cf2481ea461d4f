//! Typed errors for parsing and encoding wire formats.
//!
//! Every parser in this crate returns [`ParseError`] instead of panicking. Each variant
//! carries the numbers that explain the rejection (sizes, offsets, offending bits), so
//! a log line says exactly what was wrong with the guest's bytes. All of them map to a
//! guest-visible [`SvsmResultCode`] through one `From` impl.

use core::fmt;

use crate::call::SvsmResultCode;

/// Names a field whose value was rejected.
///
/// Used where a byte offset is not meaningful (register values, bit fields) or to make
/// a log line readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// A PVALIDATE or memory-list entry (bits 11:4 or 11:2 reserved).
    ListEntry,
    /// The page-size field of a list entry (bits 1:0).
    PageSize,
    /// A guest physical address passed in a register or a request block.
    Gpa,
    /// The APIC ID register argument (R8) of CREATE_VCPU.
    ApicId,
    /// A register argument whose upper bits are reserved.
    Register,
    /// The platform command of a vTPM request.
    TpmCommand,
    /// The locality of a vTPM request.
    Locality,
    /// The message type of a PSP guest message.
    MessageType,
    /// The AEAD algorithm of a PSP guest message.
    Algorithm,
    /// The header version of a PSP guest message.
    HeaderVersion,
    /// The header size of a PSP guest message.
    HeaderSize,
    /// The message version of a PSP guest message.
    MessageVersion,
    /// The report size field of a report response.
    ReportSize,
    /// The total-length field of a services manifest.
    ManifestLength,
    /// A manifest entry's offset/length pair.
    ManifestEntry,
    /// The GUID of a services manifest header.
    ManifestGuid,
    /// A GHCB MSR protocol value.
    GhcbMsr,
    /// A VMPL number.
    Vmpl,
    /// The textual form of a GUID.
    GuidText,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Field::ListEntry => "list entry",
            Field::PageSize => "page size",
            Field::Gpa => "guest physical address",
            Field::ApicId => "APIC ID",
            Field::Register => "register argument",
            Field::TpmCommand => "vTPM platform command",
            Field::Locality => "locality",
            Field::MessageType => "message type",
            Field::Algorithm => "AEAD algorithm",
            Field::HeaderVersion => "header version",
            Field::HeaderSize => "header size",
            Field::MessageVersion => "message version",
            Field::ReportSize => "report size",
            Field::ManifestLength => "manifest length",
            Field::ManifestEntry => "manifest entry",
            Field::ManifestGuid => "manifest GUID",
            Field::GhcbMsr => "GHCB MSR value",
            Field::Vmpl => "VMPL",
            Field::GuidText => "GUID text",
        };
        f.write_str(name)
    }
}

/// Why a wire structure was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The input holds fewer bytes than the structure needs.
    ShortBuffer {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The output buffer of an encoder is too small.
    OutputTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// Reserved bytes starting at `offset` are not zero.
    ReservedBytes {
        /// Byte offset of the first non-zero reserved byte.
        offset: usize,
    },
    /// Reserved bits of a field are set.
    ReservedBits {
        /// The field.
        field: Field,
        /// The reserved bits that were set.
        bits: u64,
    },
    /// A size field is larger than the format allows.
    SizeTooLarge {
        /// The size found.
        size: usize,
        /// The largest size the format allows.
        max: usize,
    },
    /// A size field disagrees with the structure it describes.
    SizeMismatch {
        /// The size found.
        size: usize,
        /// The size expected.
        expected: usize,
    },
    /// A list declares no entries.
    EmptyList,
    /// A count is larger than the space that holds the entries.
    CountOverCapacity {
        /// The count found.
        count: usize,
        /// The largest count that fits.
        capacity: usize,
    },
    /// A list's `next` index is not below its entry count.
    NextOutOfRange {
        /// The `next` index found.
        next: u16,
        /// The entry count.
        entries: u16,
    },
    /// An address or offset lacks the alignment the format requires.
    Misaligned {
        /// The field.
        field: Field,
        /// The value found.
        value: u64,
        /// The required alignment in bytes.
        align: u64,
    },
    /// A field holds a value the format does not define.
    UnknownValue {
        /// The field.
        field: Field,
        /// The value found.
        value: u64,
    },
    /// A range (offset, length) lies outside the structure that holds it.
    OutOfBounds {
        /// The field.
        field: Field,
        /// Start of the range.
        offset: usize,
        /// Length of the range.
        len: usize,
        /// Size of the enclosing structure.
        limit: usize,
    },
    /// A message sequence number is not the one expected.
    SequenceMismatch {
        /// The sequence number found.
        got: u64,
        /// The sequence number expected.
        expected: u64,
    },
    /// Two ranges that must be disjoint overlap, or two addresses that must be
    /// distinct are equal.
    Overlap {
        /// The field.
        field: Field,
        /// Start of the offending range.
        offset: u64,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParseError::ShortBuffer { need, got } => {
                write!(f, "input too short: need {need} bytes, got {got}")
            }
            ParseError::OutputTooSmall { need, got } => {
                write!(f, "output buffer too small: need {need} bytes, got {got}")
            }
            ParseError::ReservedBytes { offset } => {
                write!(f, "reserved byte at offset {offset:#x} is not zero")
            }
            ParseError::ReservedBits { field, bits } => {
                write!(f, "{field}: reserved bits {bits:#x} are set")
            }
            ParseError::SizeTooLarge { size, max } => {
                write!(f, "size {size} exceeds the maximum {max}")
            }
            ParseError::SizeMismatch { size, expected } => {
                write!(f, "size {size} does not match the expected {expected}")
            }
            ParseError::EmptyList => f.write_str("list has no entries"),
            ParseError::CountOverCapacity { count, capacity } => {
                write!(f, "count {count} exceeds the capacity {capacity}")
            }
            ParseError::NextOutOfRange { next, entries } => {
                write!(
                    f,
                    "next index {next} is not below the entry count {entries}"
                )
            }
            ParseError::Misaligned {
                field,
                value,
                align,
            } => write!(f, "{field} {value:#x} is not {align:#x}-byte aligned"),
            ParseError::UnknownValue { field, value } => {
                write!(f, "{field}: unknown value {value:#x}")
            }
            ParseError::OutOfBounds {
                field,
                offset,
                len,
                limit,
            } => write!(
                f,
                "{field}: range {offset:#x}+{len:#x} lies outside the {limit:#x} bytes that hold it"
            ),
            ParseError::SequenceMismatch { got, expected } => {
                write!(f, "sequence number {got} is not the expected {expected}")
            }
            ParseError::Overlap { field, offset } => {
                write!(f, "{field} at {offset:#x} overlaps a range it must not")
            }
        }
    }
}

impl core::error::Error for ParseError {}

/// Guest-visible code for a rejected request.
///
/// A malformed request is `INVALID_PARAMETER` in the SVSM spec (58019) for every
/// rejection this crate detects: bad counts and indices, reserved bits, sizes and
/// alignment. Address *validity* (guest RAM, SVSM memory) is checked by the caller and
/// reported as `INVALID_ADDRESS` there.
impl From<ParseError> for SvsmResultCode {
    fn from(_: ParseError) -> Self {
        SvsmResultCode::INVALID_PARAMETER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::string::ToString;

    #[test]
    fn display_names_the_numbers() {
        let e = ParseError::ShortBuffer { need: 8, got: 3 };
        assert_eq!(e.to_string(), "input too short: need 8 bytes, got 3");
        let e = ParseError::NextOutOfRange {
            next: 4,
            entries: 4,
        };
        assert_eq!(e.to_string(), "next index 4 is not below the entry count 4");
        let e = ParseError::Misaligned {
            field: Field::Gpa,
            value: 0x1001,
            align: 0x1000,
        };
        assert_eq!(
            e.to_string(),
            "guest physical address 0x1001 is not 0x1000-byte aligned"
        );
        let e = ParseError::ReservedBits {
            field: Field::ListEntry,
            bits: 0x10,
        };
        assert_eq!(e.to_string(), "list entry: reserved bits 0x10 are set");
    }

    #[test]
    fn every_parse_error_is_invalid_parameter() {
        let errors = [
            ParseError::EmptyList,
            ParseError::ShortBuffer { need: 1, got: 0 },
            ParseError::ReservedBytes { offset: 2 },
            ParseError::CountOverCapacity {
                count: 511,
                capacity: 510,
            },
        ];
        for e in errors {
            assert_eq!(SvsmResultCode::from(e), SvsmResultCode::INVALID_PARAMETER);
        }
    }
}
