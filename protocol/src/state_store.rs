//! The vTPM state store channel: how the SVSM fetches its sealed vTPM state from the
//! host's store helper at boot and hands it every new one.
//!
//! The channel is a byte stream (a 16550 UART, COM3 at I/O port 0x3E8, that the host
//! connects to its store helper). The host is untrusted: it only ever sees the sealed
//! blob (`vtpm::state`), and everything it sends back is checked here before use. All
//! integers are little-endian.
//!
//! - request ([`RequestHeader`], 16 bytes): magic [`REQUEST_MAGIC`], u8 operation
//!   ([`Operation`]), 3 reserved zero bytes, u32 sequence number, u32 payload length, then
//!   the payload: nothing for [`Operation::Get`], the sealed blob for [`Operation::Put`];
//! - response ([`ResponseHeader`], 16 bytes): magic [`RESPONSE_MAGIC`], u32 sequence
//!   number (the request's), u32 status ([`Status`]), u32 payload length, then the
//!   payload: the kept blob for a successful Get, nothing otherwise.
//!
//! Every length is bounded by [`MAX_BLOB`] before anything is read or allocated, the
//! sequence number ties a response to its request (a stale or replayed answer is
//! refused), and unknown operations, statuses or non-zero reserved bytes are errors. A
//! Put is answered [`Status::Ok`] only once the helper has made the new blob durable
//! (temporary file, fsync, rename, directory fsync); until then the previous blob stays.

use zerocopy::byteorder::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The first bytes of a request.
pub const REQUEST_MAGIC: [u8; 4] = *b"SSTQ";
/// The first bytes of a response.
pub const RESPONSE_MAGIC: [u8; 4] = *b"SSTA";
/// Size of a request or response header.
pub const HEADER_SIZE: usize = 16;
/// The largest blob either side accepts: libtpms' permanent state is bounded by its NV
/// memory (128 KiB in libtpms 0.10) plus the PCR and object state around it; a sealed
/// state is typically a few KiB.
pub const MAX_BLOB: usize = 256 * 1024;
/// The I/O base of the UART the SVSM uses for this channel (COM3).
pub const STORE_UART_BASE: u16 = 0x3E8;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Operation {
    /// Return the kept blob ([`Status::Empty`] when there is none).
    Get = 1,
    /// Replace the kept blob atomically with the payload.
    Put = 2,
}

impl Operation {
    /// The operation with code `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Get),
            2 => Some(Self::Put),
            _ => None,
        }
    }
}

/// How the host answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Done: a Get carries the blob, a Put's blob is durable.
    Ok = 0,
    /// Get: no blob is kept (a first boot).
    Empty = 1,
    /// The host could not read or write its store; for a Put, the previous blob stays.
    StoreFailed = 2,
    /// The request was malformed (bad header, unknown operation, too long).
    BadRequest = 3,
}

impl Status {
    /// The status with code `code`.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Ok),
            1 => Some(Self::Empty),
            2 => Some(Self::StoreFailed),
            3 => Some(Self::BadRequest),
            _ => None,
        }
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not this channel's magic.
    Magic,
    /// An operation code this version does not know.
    Operation(u8),
    /// A status code this version does not know.
    Status(u32),
    /// Reserved bytes are not zero.
    Reserved,
    /// A payload longer than [`MAX_BLOB`].
    TooLong(u32),
    /// A payload where none belongs (a Get request, a Put answer, a failure), or none
    /// where one does.
    Payload,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Magic => f.write_str("not a state store frame (bad magic)"),
            Self::Operation(op) => write!(f, "unknown operation {op}"),
            Self::Status(s) => write!(f, "unknown status {s}"),
            Self::Reserved => f.write_str("reserved bytes are not zero"),
            Self::TooLong(n) => write!(f, "a {n}-byte payload (the limit is {MAX_BLOB})"),
            Self::Payload => f.write_str("a payload length that does not fit the frame"),
        }
    }
}

/// A request header on the wire.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RequestHeader {
    /// [`REQUEST_MAGIC`].
    pub magic: [u8; 4],
    /// [`Operation`] code.
    pub operation: u8,
    /// Zero.
    pub reserved: [u8; 3],
    /// Chosen by the SVSM, echoed by the host.
    pub sequence: U32,
    /// Payload length.
    pub length: U32,
}

/// A response header on the wire.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ResponseHeader {
    /// [`RESPONSE_MAGIC`].
    pub magic: [u8; 4],
    /// The request's sequence number.
    pub sequence: U32,
    /// [`Status`] code.
    pub status: U32,
    /// Payload length.
    pub length: U32,
}

const _: () = assert!(core::mem::size_of::<RequestHeader>() == HEADER_SIZE);
const _: () = assert!(core::mem::size_of::<ResponseHeader>() == HEADER_SIZE);

/// A checked request: what to do, and how many payload bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub operation: Operation,
    /// The sequence number to echo.
    pub sequence: u32,
    /// Payload bytes that follow (0 for Get; 1..=[`MAX_BLOB`] for Put).
    pub length: usize,
}

impl Request {
    /// The header of this request.
    pub fn header(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        let header = RequestHeader {
            magic: REQUEST_MAGIC,
            operation: self.operation as u8,
            reserved: [0; 3],
            sequence: U32::new(self.sequence),
            length: U32::new(self.length as u32),
        };
        out.copy_from_slice(header.as_bytes());
        out
    }

    /// Checks a request header (the host side).
    pub fn parse(bytes: &[u8; HEADER_SIZE]) -> Result<Self, FrameError> {
        let header = RequestHeader::read_from_bytes(bytes).map_err(|_| FrameError::Magic)?;
        if header.magic != REQUEST_MAGIC {
            return Err(FrameError::Magic);
        }
        let operation = Operation::from_code(header.operation)
            .ok_or(FrameError::Operation(header.operation))?;
        if header.reserved != [0; 3] {
            return Err(FrameError::Reserved);
        }
        let length = checked_length(header.length.get())?;
        match (operation, length) {
            (Operation::Get, 0) => {}
            (Operation::Put, n) if n > 0 => {}
            _ => return Err(FrameError::Payload),
        }
        Ok(Self {
            operation,
            sequence: header.sequence.get(),
            length,
        })
    }
}

/// A checked response: the status, and how many payload bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The request's sequence number.
    pub sequence: u32,
    /// The host's answer.
    pub status: Status,
    /// Payload bytes that follow (only a successful Get has any).
    pub length: usize,
}

impl Response {
    /// The header of this response.
    pub fn header(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        let header = ResponseHeader {
            magic: RESPONSE_MAGIC,
            sequence: U32::new(self.sequence),
            status: U32::new(self.status as u32),
            length: U32::new(self.length as u32),
        };
        out.copy_from_slice(header.as_bytes());
        out
    }

    /// Checks a response header to a request of `operation` (the SVSM side): only a
    /// successful Get carries a payload, and it is at most [`MAX_BLOB`] bytes.
    pub fn parse(bytes: &[u8; HEADER_SIZE], operation: Operation) -> Result<Self, FrameError> {
        let header = ResponseHeader::read_from_bytes(bytes).map_err(|_| FrameError::Magic)?;
        if header.magic != RESPONSE_MAGIC {
            return Err(FrameError::Magic);
        }
        let status = Status::from_code(header.status.get())
            .ok_or(FrameError::Status(header.status.get()))?;
        let length = checked_length(header.length.get())?;
        let payload_expected = operation == Operation::Get && status == Status::Ok;
        if payload_expected != (length > 0) {
            return Err(FrameError::Payload);
        }
        Ok(Self {
            sequence: header.sequence.get(),
            status,
            length,
        })
    }
}

fn checked_length(length: u32) -> Result<usize, FrameError> {
    match usize::try_from(length) {
        Ok(n) if n <= MAX_BLOB => Ok(n),
        _ => Err(FrameError::TooLong(length)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let put = Request {
            operation: Operation::Put,
            sequence: 7,
            length: 2048,
        };
        let bytes = put.header();
        assert_eq!(&bytes[..4], b"SSTQ");
        assert_eq!(Request::parse(&bytes), Ok(put));
        let get = Request {
            operation: Operation::Get,
            sequence: 8,
            length: 0,
        };
        assert_eq!(Request::parse(&get.header()), Ok(get));

        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(Request::parse(&bad), Err(FrameError::Magic));
        let mut bad = bytes;
        bad[4] = 9;
        assert_eq!(Request::parse(&bad), Err(FrameError::Operation(9)));
        let mut bad = bytes;
        bad[6] = 1;
        assert_eq!(Request::parse(&bad), Err(FrameError::Reserved));
        let mut bad = bytes;
        bad[12..].copy_from_slice(&(MAX_BLOB as u32 + 1).to_le_bytes());
        assert_eq!(
            Request::parse(&bad),
            Err(FrameError::TooLong(MAX_BLOB as u32 + 1))
        );
        let mut bad = bytes;
        bad[12..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Request::parse(&bad), Err(FrameError::TooLong(u32::MAX)));
        // A Get with a payload, a Put without one.
        let mut bad = get.header();
        bad[12] = 1;
        assert_eq!(Request::parse(&bad), Err(FrameError::Payload));
        let mut bad = bytes;
        bad[12..].copy_from_slice(&[0; 4]);
        assert_eq!(Request::parse(&bad), Err(FrameError::Payload));
    }

    #[test]
    fn responses_round_trip_and_only_a_successful_get_carries_a_payload() {
        let blob = Response {
            sequence: 3,
            status: Status::Ok,
            length: 100,
        };
        let bytes = blob.header();
        assert_eq!(&bytes[..4], b"SSTA");
        assert_eq!(Response::parse(&bytes, Operation::Get), Ok(blob));
        assert_eq!(
            Response::parse(&bytes, Operation::Put),
            Err(FrameError::Payload)
        );
        let empty = Response {
            sequence: 3,
            status: Status::Empty,
            length: 0,
        };
        assert_eq!(Response::parse(&empty.header(), Operation::Get), Ok(empty));
        let stored = Response {
            sequence: 4,
            status: Status::Ok,
            length: 0,
        };
        assert_eq!(
            Response::parse(&stored.header(), Operation::Put),
            Ok(stored)
        );
        // An empty "success" to a Get, a failure with a payload.
        assert_eq!(
            Response::parse(&stored.header(), Operation::Get),
            Err(FrameError::Payload)
        );
        let failed = Response {
            sequence: 4,
            status: Status::StoreFailed,
            length: 5,
        };
        assert_eq!(
            Response::parse(&failed.header(), Operation::Get),
            Err(FrameError::Payload)
        );

        let mut bad = bytes;
        bad[3] = b'Q';
        assert_eq!(
            Response::parse(&bad, Operation::Get),
            Err(FrameError::Magic)
        );
        let mut bad = bytes;
        bad[8..12].copy_from_slice(&77u32.to_le_bytes());
        assert_eq!(
            Response::parse(&bad, Operation::Get),
            Err(FrameError::Status(77))
        );
        let mut bad = bytes;
        bad[12..].copy_from_slice(&(MAX_BLOB as u32 + 1).to_le_bytes());
        assert_eq!(
            Response::parse(&bad, Operation::Get),
            Err(FrameError::TooLong(MAX_BLOB as u32 + 1))
        );
    }
}
