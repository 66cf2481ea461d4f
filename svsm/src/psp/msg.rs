//! Sealing and opening SNP guest messages with a VMPCK (AES-256-GCM).
//!
//! Wire layouts come from [`svsm_protocol::guest_msg`] (SEV-SNP firmware ABI, pub.
//! 56860, "Guest Message Header", "MSG_REPORT_REQ/RSP"). The authenticated data is
//! header bytes 0x30..0x60 (algorithm to the end of the header); the 12-byte IV is the
//! sequence number, little-endian, in its first 8 bytes; the 16-byte tag sits at offset
//! 0. These are pure functions: the sequence-number and key-wiping policy lives in
//! [`super::GuestMessenger`].

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{Nonce, Tag};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use svsm_protocol::guest_msg::{
    GuestMessageHeader, MessageType, ReportResponse, AUTHTAG_LEN, GUEST_MSG_HEADER_SIZE,
    GUEST_MSG_MAX_PAYLOAD, GUEST_MSG_SIZE,
};
use svsm_protocol::ParseError;
use zerocopy::IntoBytes;

pub use svsm_protocol::guest_msg::{ReportRequest, REPORT_REQUEST_SIZE, REPORT_RESPONSE_SIZE};

/// Size of an attestation report.
pub const REPORT_SIZE: usize = svsm_protocol::attest::ATTESTATION_REPORT_SIZE;

/// A message page.
pub type Page = [u8; GUEST_MSG_SIZE];

/// Why a message could not be built or did not pass the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// The payload does not fit a page.
    PayloadTooLarge,
    /// The header is malformed or does not answer the request (algorithm, versions,
    /// sizes, type, sequence number).
    Header(ParseError),
    /// The message is sealed with another VMPCK than expected.
    WrongKey,
    /// The payload is larger than the caller's buffer.
    BadSize,
    /// Authentication failed (wrong key, tampered header or payload).
    Authentication,
}

impl From<ParseError> for MessageError {
    fn from(e: ParseError) -> Self {
        MessageError::Header(e)
    }
}

fn iv(header: &GuestMessageHeader) -> Nonce<Aes256Gcm> {
    Nonce::<Aes256Gcm>::from(header.iv())
}

/// Reads and checks the header of a message page, without authenticating it.
pub fn read_header(page: &Page) -> Result<GuestMessageHeader, MessageError> {
    Ok(GuestMessageHeader::parse(page)?)
}

/// Builds and encrypts a message page of `msg_type` with sequence number `seqno` under
/// VMPCK number `vmpck` (whose value is `key`).
pub fn seal(
    key: &[u8; 32],
    seqno: u64,
    msg_type: MessageType,
    vmpck: u8,
    payload: &[u8],
) -> Result<Page, MessageError> {
    let size = u16::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= GUEST_MSG_MAX_PAYLOAD)
        .ok_or(MessageError::PayloadTooLarge)?;
    let mut header = GuestMessageHeader::new(seqno, msg_type, size, vmpck);
    let mut body = [0u8; GUEST_MSG_MAX_PAYLOAD];
    let body = &mut body[..payload.len()];
    body.copy_from_slice(payload);
    let tag = Aes256Gcm::new(key.into())
        .encrypt_inout_detached(&iv(&header), &header.aad(), InOutBuf::from(&mut *body))
        .map_err(|_| MessageError::PayloadTooLarge)?;
    header.authtag[..AUTHTAG_LEN].copy_from_slice(&tag);
    let mut page = [0u8; GUEST_MSG_SIZE];
    page[..GUEST_MSG_HEADER_SIZE].copy_from_slice(header.as_bytes());
    page[GUEST_MSG_HEADER_SIZE..GUEST_MSG_HEADER_SIZE + body.len()].copy_from_slice(body);
    Ok(page)
}

/// Checks that `page` is a `msg_type` message with sequence number `seqno` sealed with
/// VMPCK number `vmpck`, authenticates it, and decrypts its payload into `out`,
/// returning the payload length. Nothing is written to `out` unless the page
/// authenticates.
pub fn open(
    key: &[u8; 32],
    page: &Page,
    msg_type: MessageType,
    seqno: u64,
    vmpck: u8,
    out: &mut [u8],
) -> Result<usize, MessageError> {
    let header = read_header(page)?;
    header.check_response(msg_type, seqno)?;
    if header.msg_vmpck != vmpck {
        return Err(MessageError::WrongKey);
    }
    let size = usize::from(header.msg_sz.get());
    if size > out.len() {
        return Err(MessageError::BadSize);
    }
    let mut body = [0u8; GUEST_MSG_MAX_PAYLOAD];
    let body = &mut body[..size];
    body.copy_from_slice(&page[GUEST_MSG_HEADER_SIZE..GUEST_MSG_HEADER_SIZE + size]);
    let tag = Tag::<Aes256Gcm>::try_from(&header.authtag[..AUTHTAG_LEN])
        .map_err(|_| MessageError::Authentication)?;
    Aes256Gcm::new(key.into())
        .decrypt_inout_detached(
            &iv(&header),
            &header.aad(),
            InOutBuf::from(&mut *body),
            &tag,
        )
        .map_err(|_| MessageError::Authentication)?;
    out[..size].copy_from_slice(body);
    Ok(size)
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
pub fn report_response(payload: &[u8]) -> Result<[u8; REPORT_SIZE], ReportFailure> {
    let rsp = ReportResponse::parse(payload).map_err(|_| ReportFailure::Malformed)?;
    if rsp.status.get() != 0 {
        return Err(ReportFailure::Status(rsp.status.get()));
    }
    let mut report = [0u8; REPORT_SIZE];
    report.copy_from_slice(rsp.report.as_bytes());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [0x42; 32];
    const REQ: MessageType = MessageType::ReportRequest;

    fn request_payload() -> ReportRequest {
        ReportRequest::new([7; 64], 0)
    }

    #[test]
    fn seal_then_open_round_trips() {
        let payload = request_payload();
        let page = seal(&KEY, 1, REQ, 0, payload.as_bytes()).unwrap();
        // The payload is encrypted, the header is not.
        let body = &page[GUEST_MSG_HEADER_SIZE..GUEST_MSG_HEADER_SIZE + REPORT_REQUEST_SIZE];
        assert_ne!(body, payload.as_bytes());
        assert_eq!(
            usize::from(read_header(&page).unwrap().msg_sz.get()),
            REPORT_REQUEST_SIZE
        );
        let mut out = [0u8; 0x100];
        assert_eq!(
            open(&KEY, &page, REQ, 1, 0, &mut out),
            Ok(REPORT_REQUEST_SIZE)
        );
        assert_eq!(&out[..REPORT_REQUEST_SIZE], payload.as_bytes());
    }

    #[test]
    fn the_iv_is_the_sequence_number() {
        let payload = [0u8; 16];
        let a = seal(&KEY, 1, REQ, 0, &payload).unwrap();
        let b = seal(&KEY, 3, REQ, 0, &payload).unwrap();
        let body = GUEST_MSG_HEADER_SIZE..GUEST_MSG_HEADER_SIZE + 16;
        assert_ne!(a[body.clone()], b[body]);
        // Same seqno, same key, same data: the same ciphertext (deterministic GCM).
        let c = seal(&KEY, 1, REQ, 0, &payload).unwrap();
        assert_eq!(a[..], c[..]);
    }

    #[test]
    fn every_check_fires() {
        let page = seal(&KEY, 5, REQ, 0, &[1, 2, 3]).unwrap();
        let mut out = [0u8; 16];
        assert_eq!(
            open(&[0; 32], &page, REQ, 5, 0, &mut out),
            Err(MessageError::Authentication)
        );
        assert!(matches!(
            open(&KEY, &page, REQ, 6, 0, &mut out),
            Err(MessageError::Header(ParseError::SequenceMismatch { .. }))
        ));
        assert!(matches!(
            open(&KEY, &page, MessageType::ReportResponse, 5, 0, &mut out),
            Err(MessageError::Header(_))
        ));
        assert_eq!(
            open(&KEY, &page, REQ, 5, 1, &mut out),
            Err(MessageError::WrongKey)
        );
        assert_eq!(
            open(&KEY, &page, REQ, 5, 0, &mut out[..2]),
            Err(MessageError::BadSize)
        );
        // The authenticated header bytes (0x30..0x60) are covered: flip a reserved one.
        let mut bad = page;
        bad[0x40] ^= 1;
        assert_eq!(
            open(&KEY, &bad, REQ, 5, 0, &mut out),
            Err(MessageError::Authentication)
        );
        let mut bad = page;
        bad[GUEST_MSG_HEADER_SIZE] ^= 1;
        assert_eq!(
            open(&KEY, &bad, REQ, 5, 0, &mut out),
            Err(MessageError::Authentication)
        );
        let mut bad = page;
        bad[0x36] = 0xff;
        bad[0x37] = 0xff;
        assert!(matches!(
            open(&KEY, &bad, REQ, 5, 0, &mut out),
            Err(MessageError::Header(_))
        ));
        let mut bad = page;
        bad[0x30] = 2;
        assert!(matches!(
            open(&KEY, &bad, REQ, 5, 0, &mut out),
            Err(MessageError::Header(_))
        ));
        assert_eq!(out, [0; 16], "nothing leaks out of a failed open");
    }

    #[test]
    fn report_response_decoding() {
        let mut rsp = [0u8; REPORT_RESPONSE_SIZE];
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
