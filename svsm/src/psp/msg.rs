//! SNP guest messages: the 0x60-byte header, AES-256-GCM with a VMPCK, and the report
//! request and response payloads.
//!
//! Layout: SEV-SNP firmware ABI (AMD pub. 56860), "Guest Message Header" and
//! "MSG_REPORT_REQ/RSP". The authenticated data is header bytes 0x30..0x60 (algo to the
//! end of the header); the 12-byte IV is the message sequence number, little-endian, in
//! its first 8 bytes; the 16-byte tag sits at offset 0. Encoding and decoding are pure
//! functions: the sequence-number and key-wiping policy lives in [`super::GuestMessenger`].

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{Nonce, Tag};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};

/// Size of a message page.
pub const PAGE_SIZE: usize = 4096;
/// Size of the message header.
pub const HEADER_SIZE: usize = 0x60;
/// The most payload a page carries.
pub const MAX_PAYLOAD: usize = PAGE_SIZE - HEADER_SIZE;
/// AEAD algorithm 1: AES-256-GCM.
pub const ALGO_AES_256_GCM: u8 = 1;
/// Header version 1.
pub const HEADER_VERSION: u8 = 1;
/// Message version of MSG_REPORT_REQ/RSP this code speaks.
pub const MSG_VERSION: u8 = 1;
/// MSG_REPORT_REQ.
pub const MSG_REPORT_REQ: u8 = 5;
/// MSG_REPORT_RSP.
pub const MSG_REPORT_RSP: u8 = 6;
/// Size of an attestation report.
pub const REPORT_SIZE: usize = 0x4A0;
/// Size of MSG_REPORT_REQ.
pub const REPORT_REQ_SIZE: usize = 0x60;
/// Size of MSG_REPORT_RSP (status, size, reserved, report).
pub const REPORT_RSP_SIZE: usize = 0x20 + REPORT_SIZE;

const OFF_AUTHTAG: usize = 0x00;
const OFF_SEQNO: usize = 0x20;
const OFF_ALGO: usize = 0x30;
const OFF_HDR_VERSION: usize = 0x31;
const OFF_HDR_SIZE: usize = 0x32;
const OFF_MSG_TYPE: usize = 0x34;
const OFF_MSG_VERSION: usize = 0x35;
const OFF_MSG_SIZE: usize = 0x36;
const OFF_MSG_VMPCK: usize = 0x3C;
const AAD: core::ops::Range<usize> = 0x30..HEADER_SIZE;
const TAG_SIZE: usize = 16;

/// A message page.
pub type Page = [u8; PAGE_SIZE];

/// Why a message could not be built or did not pass the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// The payload does not fit a page.
    PayloadTooLarge,
    /// The header's algorithm, header version or header size is not ours.
    BadHeader,
    /// The message type is not the expected one.
    WrongType,
    /// The message version is not the expected one.
    WrongVersion,
    /// The sequence number is not the expected one.
    WrongSequence,
    /// The VMPCK number is not the expected one.
    WrongKey,
    /// The payload size is larger than the page or than the caller's buffer.
    BadSize,
    /// Authentication failed (wrong key, tampered header or payload).
    Authentication,
}

/// The header fields a receiver checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message sequence number (also the IV).
    pub seqno: u64,
    /// Message type.
    pub msg_type: u8,
    /// Message version.
    pub msg_version: u8,
    /// Payload size.
    pub msg_size: u16,
    /// Which VMPCK protects it.
    pub vmpck: u8,
}

fn iv(seqno: u64) -> Nonce<Aes256Gcm> {
    let mut iv = Nonce::<Aes256Gcm>::default();
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// Reads the header of a message page without authenticating it.
pub fn read_header(page: &Page) -> Result<Header, MessageError> {
    if page[OFF_ALGO] != ALGO_AES_256_GCM
        || page[OFF_HDR_VERSION] != HEADER_VERSION
        || u16::from_le_bytes([page[OFF_HDR_SIZE], page[OFF_HDR_SIZE + 1]]) != HEADER_SIZE as u16
    {
        return Err(MessageError::BadHeader);
    }
    let mut seqno = [0u8; 8];
    seqno.copy_from_slice(&page[OFF_SEQNO..OFF_SEQNO + 8]);
    Ok(Header {
        seqno: u64::from_le_bytes(seqno),
        msg_type: page[OFF_MSG_TYPE],
        msg_version: page[OFF_MSG_VERSION],
        msg_size: u16::from_le_bytes([page[OFF_MSG_SIZE], page[OFF_MSG_SIZE + 1]]),
        vmpck: page[OFF_MSG_VMPCK],
    })
}

/// Builds and encrypts a message page: `header` describes it (its `msg_size` is taken
/// from `payload`).
pub fn seal(key: &[u8; 32], header: Header, payload: &[u8]) -> Result<Page, MessageError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(MessageError::PayloadTooLarge);
    }
    let mut page = [0u8; PAGE_SIZE];
    page[OFF_SEQNO..OFF_SEQNO + 8].copy_from_slice(&header.seqno.to_le_bytes());
    page[OFF_ALGO] = ALGO_AES_256_GCM;
    page[OFF_HDR_VERSION] = HEADER_VERSION;
    page[OFF_HDR_SIZE..OFF_HDR_SIZE + 2].copy_from_slice(&(HEADER_SIZE as u16).to_le_bytes());
    page[OFF_MSG_TYPE] = header.msg_type;
    page[OFF_MSG_VERSION] = header.msg_version;
    page[OFF_MSG_SIZE..OFF_MSG_SIZE + 2].copy_from_slice(&(payload.len() as u16).to_le_bytes());
    page[OFF_MSG_VMPCK] = header.vmpck;
    let (head, body) = page.split_at_mut(HEADER_SIZE);
    let body = &mut body[..payload.len()];
    body.copy_from_slice(payload);
    let cipher = Aes256Gcm::new(key.into());
    let tag = cipher
        .encrypt_inout_detached(&iv(header.seqno), &head[AAD], InOutBuf::from(body))
        .map_err(|_| MessageError::PayloadTooLarge)?;
    head[OFF_AUTHTAG..OFF_AUTHTAG + TAG_SIZE].copy_from_slice(&tag);
    Ok(page)
}

/// Checks a received page against what is expected and decrypts its payload into
/// `out`, returning the payload length. Nothing is written to `out` unless the page
/// authenticates.
pub fn open(
    key: &[u8; 32],
    page: &Page,
    expected: Header,
    out: &mut [u8],
) -> Result<usize, MessageError> {
    let header = read_header(page)?;
    if header.msg_type != expected.msg_type {
        return Err(MessageError::WrongType);
    }
    if header.msg_version != expected.msg_version {
        return Err(MessageError::WrongVersion);
    }
    if header.seqno != expected.seqno {
        return Err(MessageError::WrongSequence);
    }
    if header.vmpck != expected.vmpck {
        return Err(MessageError::WrongKey);
    }
    let size = usize::from(header.msg_size);
    if size > MAX_PAYLOAD || size > out.len() {
        return Err(MessageError::BadSize);
    }
    let mut body = [0u8; MAX_PAYLOAD];
    let body = &mut body[..size];
    body.copy_from_slice(&page[HEADER_SIZE..HEADER_SIZE + size]);
    let tag = Tag::<Aes256Gcm>::try_from(&page[OFF_AUTHTAG..OFF_AUTHTAG + TAG_SIZE])
        .map_err(|_| MessageError::Authentication)?;
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt_inout_detached(
            &iv(header.seqno),
            &page[AAD],
            InOutBuf::from(&mut *body),
            &tag,
        )
        .map_err(|_| MessageError::Authentication)?;
    out[..size].copy_from_slice(body);
    Ok(size)
}

/// MSG_REPORT_REQ: the 64 bytes to bind, the VMPL the report is for, key selection 0
/// (the platform's choice, VCEK unless a VLEK is installed).
pub fn report_request(user_data: &[u8; 64], vmpl: u32) -> [u8; REPORT_REQ_SIZE] {
    let mut req = [0u8; REPORT_REQ_SIZE];
    req[..64].copy_from_slice(user_data);
    req[0x40..0x44].copy_from_slice(&vmpl.to_le_bytes());
    req
}

/// Why a MSG_REPORT_RSP carries no report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFailure {
    /// The firmware's non-zero status.
    Status(u32),
    /// The response is shorter than its fields or its report size is wrong.
    Malformed,
}

/// Decodes a MSG_REPORT_RSP payload into the report it carries.
pub fn report_response(payload: &[u8]) -> Result<&[u8; REPORT_SIZE], ReportFailure> {
    let field = |off: usize| -> Result<u32, ReportFailure> {
        payload
            .get(off..off + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(ReportFailure::Malformed)
    };
    let status = field(0)?;
    if status != 0 {
        return Err(ReportFailure::Status(status));
    }
    if field(4)? as usize != REPORT_SIZE {
        return Err(ReportFailure::Malformed);
    }
    payload
        .get(0x20..0x20 + REPORT_SIZE)
        .and_then(|r| r.try_into().ok())
        .ok_or(ReportFailure::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [0x42; 32];

    fn header(seqno: u64) -> Header {
        Header {
            seqno,
            msg_type: MSG_REPORT_REQ,
            msg_version: MSG_VERSION,
            msg_size: 0,
            vmpck: 0,
        }
    }

    #[test]
    fn seal_then_open_round_trips() {
        let payload = report_request(&[7; 64], 0);
        let page = seal(&KEY, header(1), &payload).unwrap();
        // The payload is encrypted, the header is not.
        assert_ne!(
            &page[HEADER_SIZE..HEADER_SIZE + REPORT_REQ_SIZE],
            &payload[..]
        );
        assert_eq!(read_header(&page).unwrap().msg_size, REPORT_REQ_SIZE as u16);
        let mut out = [0u8; 0x100];
        let mut expected = header(1);
        expected.msg_size = REPORT_REQ_SIZE as u16;
        assert_eq!(open(&KEY, &page, expected, &mut out), Ok(REPORT_REQ_SIZE));
        assert_eq!(&out[..REPORT_REQ_SIZE], &payload[..]);
    }

    #[test]
    fn the_iv_is_the_sequence_number() {
        let payload = [0u8; 16];
        let a = seal(&KEY, header(1), &payload).unwrap();
        let b = seal(&KEY, header(3), &payload).unwrap();
        assert_ne!(
            a[HEADER_SIZE..HEADER_SIZE + 16],
            b[HEADER_SIZE..HEADER_SIZE + 16]
        );
        // Same seqno, same key, same data: the same ciphertext (deterministic GCM).
        let c = seal(&KEY, header(1), &payload).unwrap();
        assert_eq!(a[..], c[..]);
    }

    #[test]
    fn every_check_fires() {
        let page = seal(&KEY, header(5), &[1, 2, 3]).unwrap();
        let mut out = [0u8; 16];
        let ok = header(5);
        assert_eq!(
            open(&[0; 32], &page, ok, &mut out),
            Err(MessageError::Authentication)
        );
        assert_eq!(
            open(&KEY, &page, Header { seqno: 6, ..ok }, &mut out),
            Err(MessageError::WrongSequence)
        );
        assert_eq!(
            open(&KEY, &page, Header { msg_type: 6, ..ok }, &mut out),
            Err(MessageError::WrongType)
        );
        assert_eq!(
            open(
                &KEY,
                &page,
                Header {
                    msg_version: 2,
                    ..ok
                },
                &mut out
            ),
            Err(MessageError::WrongVersion)
        );
        assert_eq!(
            open(&KEY, &page, Header { vmpck: 1, ..ok }, &mut out),
            Err(MessageError::WrongKey)
        );
        assert_eq!(
            open(&KEY, &page, ok, &mut out[..2]),
            Err(MessageError::BadSize)
        );
        // The authenticated header bytes (0x30..0x60) are covered: flip a reserved one.
        let mut bad = page;
        bad[0x40] ^= 1;
        assert_eq!(
            open(&KEY, &bad, ok, &mut out),
            Err(MessageError::Authentication)
        );
        let mut bad = page;
        bad[HEADER_SIZE] ^= 1;
        assert_eq!(
            open(&KEY, &bad, ok, &mut out),
            Err(MessageError::Authentication)
        );
        let mut bad = page;
        bad[0x36] = 0xff;
        bad[0x37] = 0xff;
        assert_eq!(open(&KEY, &bad, ok, &mut out), Err(MessageError::BadSize));
        let mut bad = page;
        bad[OFF_ALGO] = 2;
        assert_eq!(open(&KEY, &bad, ok, &mut out), Err(MessageError::BadHeader));
        assert_eq!(out, [0; 16], "nothing leaks out of a failed open");
    }

    #[test]
    fn report_response_decoding() {
        let mut rsp = [0u8; REPORT_RSP_SIZE];
        rsp[4..8].copy_from_slice(&(REPORT_SIZE as u32).to_le_bytes());
        rsp[0x20] = 0xAA;
        assert_eq!(report_response(&rsp).unwrap()[0], 0xAA);
        assert_eq!(
            report_response(&rsp[..0x20 + 8]),
            Err(ReportFailure::Malformed)
        );
        rsp[0] = 0x16;
        assert_eq!(report_response(&rsp), Err(ReportFailure::Status(0x16)));
        rsp[0] = 0;
        rsp[4] = 0;
        assert_eq!(report_response(&rsp), Err(ReportFailure::Malformed));
        assert_eq!(report_response(&rsp[..4]), Err(ReportFailure::Malformed));
    }
}
