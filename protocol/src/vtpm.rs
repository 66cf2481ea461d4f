//! vTPM protocol (2) formats: the QUERY bitmap and the TPM_SEND_COMMAND buffers.
//!
//! The request and response share one guest buffer of at most 4096 bytes (Linux
//! `include/linux/tpm_svsm.h`, 58019 "vTPM Protocol"). Both follow the platform
//! interface of the TCG (Microsoft) TPM simulator and are packed and little-endian:
//! request `u32 command @0, u8 locality @4, u32 size @5, bytes @9`; response
//! `u32 size @0, bytes @4`. The TPM command and response themselves are big-endian TPM
//! structures; [`TpmHeader`] reads their 10-byte header.

use bitflags::bitflags;
use zerocopy::byteorder::big_endian::{U16 as BeU16, U32 as BeU32};
use zerocopy::byteorder::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Field, ParseError};

/// Largest request/response buffer (`SVSM_VTPM_MAX_BUFFER`).
pub const VTPM_BUFFER_MAX: usize = 4096;
/// Size of the TPM_SEND_COMMAND request header.
pub const SEND_COMMAND_REQUEST_HEADER_SIZE: usize = 9;
/// Size of the TPM_SEND_COMMAND response header.
pub const SEND_COMMAND_RESPONSE_HEADER_SIZE: usize = 4;
/// Largest TPM command that fits: 4096 - 9.
pub const MAX_COMMAND_SIZE: usize = VTPM_BUFFER_MAX - SEND_COMMAND_REQUEST_HEADER_SIZE;
/// Largest TPM response that fits: 4096 - 4.
pub const MAX_RESPONSE_SIZE: usize = VTPM_BUFFER_MAX - SEND_COMMAND_RESPONSE_HEADER_SIZE;

/// Precedes the vTPM engine's identity (its packages, versions and archive digests, as
/// UTF-8, NUL-terminated) in the SVSM image, where `svsm-igvm inspect` finds it: the
/// engine is part of the launch measurement, and a verifier must know which it is.
pub const ENGINE_ID_MARKER: &[u8] = b"SVSM-VTPM-ENGINE:";

/// The engine identity that follows [`ENGINE_ID_MARKER`] in `image`, if the marker is
/// there and the text up to its NUL is UTF-8 (at most 1 KiB).
pub fn find_engine_id(image: &[u8]) -> Option<&str> {
    let at = image
        .windows(ENGINE_ID_MARKER.len())
        .position(|w| w == ENGINE_ID_MARKER)?
        + ENGINE_ID_MARKER.len();
    let rest = image.get(at..image.len().min(at + 1024))?;
    let end = rest.iter().position(|&b| b == 0)?;
    core::str::from_utf8(rest.get(..end)?).ok()
}

const _: () = assert!(MAX_COMMAND_SIZE == 4087);
const _: () = assert!(MAX_RESPONSE_SIZE == 4092);

/// Platform command: send a TPM command (TCG simulator `TPM_SEND_COMMAND`).
pub const TPM_SEND_COMMAND: u32 = 8;
/// Platform command: signal cancel on (TCG simulator `TPM_SIGNAL_CANCEL_ON`).
pub const TPM_SIGNAL_CANCEL_ON: u32 = 9;
/// Platform command: signal cancel off (TCG simulator `TPM_SIGNAL_CANCEL_OFF`).
pub const TPM_SIGNAL_CANCEL_OFF: u32 = 10;

bitflags! {
    /// SVSM_VTPM_QUERY RCX: bit N set means platform command N is supported.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PlatformCommands: u64 {
        /// TPM_SEND_COMMAND (bit 8), the one Linux's tpm_svsm driver requires.
        const SEND_COMMAND = 1 << TPM_SEND_COMMAND;
        /// TPM_SIGNAL_CANCEL_ON (bit 9).
        const SIGNAL_CANCEL_ON = 1 << TPM_SIGNAL_CANCEL_ON;
        /// TPM_SIGNAL_CANCEL_OFF (bit 10).
        const SIGNAL_CANCEL_OFF = 1 << TPM_SIGNAL_CANCEL_OFF;
    }
}

bitflags! {
    /// SVSM_VTPM_QUERY RDX: vTPM feature bits. The spec defines none; the SVSM returns 0.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct VtpmFeatures: u64 {}
}

/// Header of a TPM_SEND_COMMAND request (Linux `struct tpm_send_cmd_req`, packed).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C, packed)]
pub struct SendCommandRequestHeader {
    /// Platform command (8).
    pub command: U32,
    /// Locality (0).
    pub locality: u8,
    /// Size of the TPM command that follows.
    pub size: U32,
}

const _: () =
    assert!(core::mem::size_of::<SendCommandRequestHeader>() == SEND_COMMAND_REQUEST_HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(SendCommandRequestHeader, command) == 0);
const _: () = assert!(core::mem::offset_of!(SendCommandRequestHeader, locality) == 4);
const _: () = assert!(core::mem::offset_of!(SendCommandRequestHeader, size) == 5);

/// Reads the platform command (the first u32) of a vTPM request buffer, so a handler
/// can tell an unsupported command from a malformed one.
pub fn platform_command(buf: &[u8]) -> Result<u32, ParseError> {
    U32::read_from_prefix(buf)
        .map(|(c, _)| c.get())
        .map_err(|_| ParseError::ShortBuffer {
            need: 4,
            got: buf.len(),
        })
}

/// A parsed TPM_SEND_COMMAND request, borrowing the TPM command bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendCommandRequest<'a> {
    /// Locality (always 0 after parsing).
    pub locality: u8,
    /// The TPM command.
    pub command: &'a [u8],
}

impl<'a> SendCommandRequest<'a> {
    /// Parses a request buffer (already copied into SVSM memory).
    ///
    /// Rejects a short header, a platform command other than TPM_SEND_COMMAND, a
    /// non-zero locality (the spec requires 0: localities 3 and 4 guard the DRTM PCRs),
    /// a size above 4087 and a size larger than the bytes that follow.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        let (header, rest) = SendCommandRequestHeader::read_from_prefix(buf).map_err(|_| {
            ParseError::ShortBuffer {
                need: SEND_COMMAND_REQUEST_HEADER_SIZE,
                got: buf.len(),
            }
        })?;
        let command = header.command.get();
        if command != TPM_SEND_COMMAND {
            return Err(ParseError::UnknownValue {
                field: Field::TpmCommand,
                value: command.into(),
            });
        }
        if header.locality != 0 {
            return Err(ParseError::UnknownValue {
                field: Field::Locality,
                value: header.locality.into(),
            });
        }
        let size = usize::try_from(header.size.get()).unwrap_or(usize::MAX);
        if size > MAX_COMMAND_SIZE {
            return Err(ParseError::SizeTooLarge {
                size,
                max: MAX_COMMAND_SIZE,
            });
        }
        let command = rest.get(..size).ok_or(ParseError::ShortBuffer {
            need: SEND_COMMAND_REQUEST_HEADER_SIZE + size,
            got: buf.len(),
        })?;
        Ok(Self {
            locality: header.locality,
            command,
        })
    }

    /// Writes the request into `out`; returns the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ParseError> {
        let size = self.command.len();
        if size > MAX_COMMAND_SIZE {
            return Err(ParseError::SizeTooLarge {
                size,
                max: MAX_COMMAND_SIZE,
            });
        }
        let need = SEND_COMMAND_REQUEST_HEADER_SIZE + size;
        let got = out.len();
        let out = out
            .get_mut(..need)
            .ok_or(ParseError::OutputTooSmall { need, got })?;
        let header = SendCommandRequestHeader {
            command: U32::new(TPM_SEND_COMMAND),
            locality: self.locality,
            // Bounded by MAX_COMMAND_SIZE above.
            size: U32::new(size as u32),
        };
        let (head, body) = out.split_at_mut(SEND_COMMAND_REQUEST_HEADER_SIZE);
        head.copy_from_slice(header.as_bytes());
        body.copy_from_slice(self.command);
        Ok(need)
    }
}

/// Writes a TPM_SEND_COMMAND response (`u32 size`, then the TPM response) into `out`;
/// returns the bytes written. Rejects a response above 4092 bytes, which Linux would
/// refuse.
pub fn encode_response(response: &[u8], out: &mut [u8]) -> Result<usize, ParseError> {
    let size = response.len();
    if size > MAX_RESPONSE_SIZE {
        return Err(ParseError::SizeTooLarge {
            size,
            max: MAX_RESPONSE_SIZE,
        });
    }
    let need = SEND_COMMAND_RESPONSE_HEADER_SIZE + size;
    let got = out.len();
    let out = out
        .get_mut(..need)
        .ok_or(ParseError::OutputTooSmall { need, got })?;
    let (head, body) = out.split_at_mut(SEND_COMMAND_RESPONSE_HEADER_SIZE);
    // Bounded by MAX_RESPONSE_SIZE above.
    head.copy_from_slice(&(size as u32).to_le_bytes());
    body.copy_from_slice(response);
    Ok(need)
}

/// Parses a TPM_SEND_COMMAND response buffer; returns the TPM response bytes.
pub fn parse_response(buf: &[u8]) -> Result<&[u8], ParseError> {
    let (size, rest) = U32::read_from_prefix(buf).map_err(|_| ParseError::ShortBuffer {
        need: SEND_COMMAND_RESPONSE_HEADER_SIZE,
        got: buf.len(),
    })?;
    let size = usize::try_from(size.get()).unwrap_or(usize::MAX);
    if size > MAX_RESPONSE_SIZE {
        return Err(ParseError::SizeTooLarge {
            size,
            max: MAX_RESPONSE_SIZE,
        });
    }
    rest.get(..size).ok_or(ParseError::ShortBuffer {
        need: SEND_COMMAND_RESPONSE_HEADER_SIZE + size,
        got: buf.len(),
    })
}

/// Size of a TPM 2.0 command or response header.
pub const TPM_HEADER_SIZE: usize = 10;
/// TPM_ST_NO_SESSIONS.
pub const TPM_ST_NO_SESSIONS: u16 = 0x8001;
/// TPM_ST_SESSIONS.
pub const TPM_ST_SESSIONS: u16 = 0x8002;
/// TPM_RC_SUCCESS.
pub const TPM_RC_SUCCESS: u32 = 0;

/// The big-endian header of a TPM 2.0 command (tag, size, command code) or response
/// (tag, size, response code) (TPM 2.0 Part 1, "Command/Response Header Fields").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C, packed)]
pub struct TpmHeader {
    /// TPM_ST_NO_SESSIONS or TPM_ST_SESSIONS.
    pub tag: BeU16,
    /// Total size including this header.
    pub size: BeU32,
    /// Command code or response code.
    pub code: BeU32,
}

const _: () = assert!(core::mem::size_of::<TpmHeader>() == TPM_HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(TpmHeader, size) == 2);
const _: () = assert!(core::mem::offset_of!(TpmHeader, code) == 6);

impl TpmHeader {
    /// A header with the given fields.
    pub fn new(tag: u16, size: u32, code: u32) -> Self {
        Self {
            tag: BeU16::new(tag),
            size: BeU32::new(size),
            code: BeU32::new(code),
        }
    }

    /// Reads the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        Self::read_from_prefix(bytes)
            .map(|(h, _)| h)
            .map_err(|_| ParseError::ShortBuffer {
                need: TPM_HEADER_SIZE,
                got: bytes.len(),
            })
    }

    /// Reads the header of a complete TPM message and checks that its size field
    /// equals the message length.
    pub fn parse_exact(bytes: &[u8]) -> Result<Self, ParseError> {
        let header = Self::parse(bytes)?;
        let size = usize::try_from(header.size.get()).unwrap_or(usize::MAX);
        if size != bytes.len() {
            return Err(ParseError::SizeMismatch {
                size,
                expected: bytes.len(),
            });
        }
        Ok(header)
    }

    /// The tag.
    pub fn tag(&self) -> u16 {
        self.tag.get()
    }

    /// The size field.
    pub fn size(&self) -> u32 {
        self.size.get()
    }

    /// The command or response code.
    pub fn code(&self) -> u32 {
        self.code.get()
    }
}

#[cfg(test)]
mod engine_id_tests {
    use super::*;

    #[test]
    fn the_engine_id_is_found_after_its_marker() {
        let mut image = [0u8; 64].to_vec();
        image.extend_from_slice(ENGINE_ID_MARKER);
        image.extend_from_slice(b"libtpms-dev 0.10.2-5\0tail");
        assert_eq!(find_engine_id(&image), Some("libtpms-dev 0.10.2-5"));
        // No marker, no NUL within 1 KiB, not UTF-8: nothing.
        assert_eq!(find_engine_id(&[0u8; 64]), None);
        let mut open = ENGINE_ID_MARKER.to_vec();
        open.extend_from_slice(&[b'x'; 2000]);
        assert_eq!(find_engine_id(&open), None);
        let mut bad = ENGINE_ID_MARKER.to_vec();
        bad.extend_from_slice(&[0xff, 0xfe, 0]);
        assert_eq!(find_engine_id(&bad), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, TPM_PT_TOTAL_COMMANDS, 1), as Linux's
    // tpm2_probe sends it.
    const GET_CAP: [u8; 22] = [
        0x80, 0x01, 0, 0, 0, 22, 0, 0, 0x01, 0x7A, 0, 0, 0, 6, 0, 0, 0x01, 0x29, 0, 0, 0, 1,
    ];

    #[test]
    fn query_bitmap_values() {
        assert_eq!(PlatformCommands::SEND_COMMAND.bits(), 0x100);
        assert_eq!(PlatformCommands::SIGNAL_CANCEL_ON.bits(), 0x200);
        assert_eq!(PlatformCommands::SIGNAL_CANCEL_OFF.bits(), 0x400);
        assert_eq!(VtpmFeatures::empty().bits(), 0);
        assert!(
            PlatformCommands::from_bits_truncate(0x100).contains(PlatformCommands::SEND_COMMAND)
        );
    }

    #[test]
    fn request_parses_at_spec_offsets() {
        let mut buf = [0u8; 64];
        buf[0..4].copy_from_slice(&8u32.to_le_bytes());
        buf[4] = 0;
        buf[5..9].copy_from_slice(&22u32.to_le_bytes());
        buf[9..31].copy_from_slice(&GET_CAP);
        let req = SendCommandRequest::parse(&buf).unwrap();
        assert_eq!(req.locality, 0);
        assert_eq!(req.command, &GET_CAP);
        assert_eq!(platform_command(&buf), Ok(8));
    }

    #[test]
    fn request_round_trips() {
        let req = SendCommandRequest {
            locality: 0,
            command: &GET_CAP,
        };
        let mut out = [0u8; VTPM_BUFFER_MAX];
        let n = req.encode(&mut out).unwrap();
        assert_eq!(n, 31);
        assert_eq!(&out[..9], &[8, 0, 0, 0, 0, 22, 0, 0, 0]);
        assert_eq!(SendCommandRequest::parse(&out[..n]), Ok(req));
    }

    #[test]
    fn largest_request_fits_the_buffer() {
        let cmd = [0xA5u8; MAX_COMMAND_SIZE];
        let req = SendCommandRequest {
            locality: 0,
            command: &cmd,
        };
        let mut out = [0u8; VTPM_BUFFER_MAX];
        assert_eq!(req.encode(&mut out), Ok(VTPM_BUFFER_MAX));
        assert_eq!(SendCommandRequest::parse(&out).unwrap().command.len(), 4087);
    }

    #[test]
    fn request_rejections() {
        let mut buf = [0u8; 32];
        buf[0..4].copy_from_slice(&8u32.to_le_bytes());
        buf[5..9].copy_from_slice(&4u32.to_le_bytes());
        assert!(SendCommandRequest::parse(&buf).is_ok());

        assert_eq!(
            SendCommandRequest::parse(&buf[..8]),
            Err(ParseError::ShortBuffer { need: 9, got: 8 })
        );

        let mut wrong_cmd = buf;
        wrong_cmd[0] = 9;
        assert_eq!(
            SendCommandRequest::parse(&wrong_cmd),
            Err(ParseError::UnknownValue {
                field: Field::TpmCommand,
                value: 9
            })
        );

        let mut locality = buf;
        locality[4] = 3;
        assert_eq!(
            SendCommandRequest::parse(&locality),
            Err(ParseError::UnknownValue {
                field: Field::Locality,
                value: 3
            })
        );

        let mut too_big = buf;
        too_big[5..9].copy_from_slice(&4088u32.to_le_bytes());
        assert_eq!(
            SendCommandRequest::parse(&too_big),
            Err(ParseError::SizeTooLarge {
                size: 4088,
                max: 4087
            })
        );

        let mut overruns = buf;
        overruns[5..9].copy_from_slice(&24u32.to_le_bytes());
        assert_eq!(
            SendCommandRequest::parse(&overruns),
            Err(ParseError::ShortBuffer { need: 33, got: 32 })
        );

        let mut huge = buf;
        huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            SendCommandRequest::parse(&huge),
            Err(ParseError::SizeTooLarge { .. })
        ));

        assert_eq!(
            platform_command(&buf[..3]),
            Err(ParseError::ShortBuffer { need: 4, got: 3 })
        );
    }

    #[test]
    fn request_encode_rejections() {
        let big = [0u8; MAX_COMMAND_SIZE + 1];
        let mut out = [0u8; 8192];
        assert_eq!(
            SendCommandRequest {
                locality: 0,
                command: &big
            }
            .encode(&mut out),
            Err(ParseError::SizeTooLarge {
                size: 4088,
                max: 4087
            })
        );
        let mut small = [0u8; 30];
        assert_eq!(
            SendCommandRequest {
                locality: 0,
                command: &GET_CAP
            }
            .encode(&mut small),
            Err(ParseError::OutputTooSmall { need: 31, got: 30 })
        );
    }

    #[test]
    fn response_round_trips() {
        let tpm_rsp = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0];
        let mut out = [0u8; VTPM_BUFFER_MAX];
        let n = encode_response(&tpm_rsp, &mut out).unwrap();
        assert_eq!(n, 14);
        assert_eq!(&out[..4], &[10, 0, 0, 0]);
        assert_eq!(parse_response(&out[..n]), Ok(&tpm_rsp[..]));
    }

    #[test]
    fn response_rejections() {
        let big = [0u8; MAX_RESPONSE_SIZE + 1];
        let mut out = [0u8; 8192];
        assert_eq!(
            encode_response(&big, &mut out),
            Err(ParseError::SizeTooLarge {
                size: 4093,
                max: 4092
            })
        );
        assert_eq!(
            encode_response(&big[..MAX_RESPONSE_SIZE], &mut out),
            Ok(VTPM_BUFFER_MAX)
        );
        assert_eq!(
            encode_response(&[1, 2, 3], &mut out[..6]),
            Err(ParseError::OutputTooSmall { need: 7, got: 6 })
        );
        assert_eq!(
            parse_response(&[1, 0, 0]),
            Err(ParseError::ShortBuffer { need: 4, got: 3 })
        );
        assert_eq!(
            parse_response(&[5, 0, 0, 0, 1, 2]),
            Err(ParseError::ShortBuffer { need: 9, got: 6 })
        );
        let mut over = [0u8; 8];
        over[..4].copy_from_slice(&4093u32.to_le_bytes());
        assert_eq!(
            parse_response(&over),
            Err(ParseError::SizeTooLarge {
                size: 4093,
                max: 4092
            })
        );
    }

    #[test]
    fn tpm_header_is_big_endian() {
        let h = TpmHeader::parse(&GET_CAP).unwrap();
        assert_eq!(h.tag(), TPM_ST_NO_SESSIONS);
        assert_eq!(h.size(), 22);
        assert_eq!(h.code(), 0x17A);
        assert_eq!(TpmHeader::parse_exact(&GET_CAP), Ok(h));
        let rsp = TpmHeader::new(TPM_ST_NO_SESSIONS, 10, 0x100);
        assert_eq!(rsp.as_bytes(), &[0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0]);
    }

    #[test]
    fn tpm_header_rejections() {
        assert_eq!(
            TpmHeader::parse(&GET_CAP[..9]),
            Err(ParseError::ShortBuffer { need: 10, got: 9 })
        );
        assert_eq!(
            TpmHeader::parse_exact(&GET_CAP[..20]),
            Err(ParseError::SizeMismatch {
                size: 22,
                expected: 20
            })
        );
    }
}
