//! The SVSM's channel to the PSP: attestation reports and derived keys requested with
//! VMPCK0.
//!
//! Invariants:
//! - a sequence number is used once: a request uses `seqno + 1`, its response `seqno + 2`,
//!   and the counter only moves forward;
//! - a request the PSP may have processed but whose outcome is unknown, or a response
//!   that fails any check, wipes VMPCK0: after that no message is ever encrypted again,
//!   so no IV can be reused with the key;
//! - BUSY resends the identical ciphertext (same sequence number), which is safe because
//!   the PSP did not process it. If the hypervisor keeps answering BUSY, the caller gets
//!   BUSY and the exact request is kept: the next exchange sends those bytes again first
//!   (the hypervisor has seen them, so nothing else may ever be sealed under that
//!   sequence number) and only then seals its own. A throttling host delays attestation
//!   but cannot make the SVSM reuse an IV or give up its key;
//! - an extended request refused because the certificate buffer is too small is re-sent
//!   as a standard request, so the PSP consumes the sequence number (the hypervisor could
//!   otherwise keep the ciphertext and replay it later), and only then is the size
//!   reported.

pub mod evidence;
pub mod msg;
pub mod state_key;

use zeroize::Zeroize;

use crate::platform::{MessagePage, Platform, PspError};

use alloc::boxed::Box;

use svsm_protocol::guest_msg::{KeyRequest, KeyResponse, MessageType, KEY_RESPONSE_SIZE};
use zerocopy::IntoBytes;

pub use msg::{MessageError, REPORT_SIZE};

/// How often BUSY is answered by resending before the request is given up.
pub const MAX_BUSY_RETRIES: u32 = 16;

/// The hypervisor's "certificate buffer too small" error (GHCB, SNP_GUEST_REQUEST
/// sw_exit_info_2 bits 63:32 = 1; RBX then holds the number of pages needed).
pub const VMM_ERR_INVALID_LEN: u32 = 1;

/// Why an extended request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendedError {
    /// The hypervisor needs a certificate buffer of this many bytes.
    CertBufferTooSmall(usize),
    /// Any other failure.
    Psp(PspError),
}

/// Where guest messages go: standard requests always, extended ones (with the host's
/// certificate table) where the platform offers them.
pub trait PspTransport {
    /// SNP_GUEST_REQUEST.
    fn request(&self, page: &MessagePage) -> Result<MessagePage, PspError>;

    /// SNP_EXTENDED_GUEST_REQUEST: also copies the host's certificate table into
    /// `certs` and returns its length (at most `certs.len()`; a longer claim is treated
    /// as a transport failure).
    fn extended_request(
        &self,
        page: &MessagePage,
        certs: &mut [u8],
    ) -> Result<(MessagePage, usize), ExtendedError> {
        let _ = (page, certs);
        Err(ExtendedError::Psp(PspError::Unavailable))
    }
}

impl<T: PspTransport + ?Sized> PspTransport for &T {
    fn request(&self, page: &MessagePage) -> Result<MessagePage, PspError> {
        (**self).request(page)
    }

    fn extended_request(
        &self,
        page: &MessagePage,
        certs: &mut [u8],
    ) -> Result<(MessagePage, usize), ExtendedError> {
        (**self).extended_request(page, certs)
    }
}

/// The PSP as the [`Platform`] reaches it.
#[derive(Debug)]
pub struct PlatformPsp<'a, P: ?Sized>(pub &'a P);

impl<P: Platform + ?Sized> PspTransport for PlatformPsp<'_, P> {
    fn request(&self, page: &MessagePage) -> Result<MessagePage, PspError> {
        self.0.guest_request(page)
    }
}

/// Why a report could not be obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMessageError {
    /// VMPCK0 was wiped after an earlier failure (or never installed): no more messages.
    KeyWiped,
    /// The hypervisor kept answering BUSY; the request is kept and goes out first next
    /// time. Retry later.
    Busy,
    /// The sequence number space is exhausted.
    SequenceExhausted,
    /// The transport failed; VMPCK0 has been wiped.
    Transport(PspError),
    /// The response failed a check; VMPCK0 has been wiped.
    Response(MessageError),
    /// The firmware answered with a non-zero status (the message itself was valid).
    Firmware(u32),
    /// The certificate buffer is too small; this many bytes are needed. The sequence
    /// number was consumed and the key is intact.
    CertBufferTooSmall(usize),
}

impl From<GuestMessageError> for PspError {
    fn from(e: GuestMessageError) -> Self {
        match e {
            GuestMessageError::KeyWiped | GuestMessageError::SequenceExhausted => {
                PspError::Unavailable
            }
            GuestMessageError::Busy => PspError::Busy,
            GuestMessageError::Transport(e) => e,
            // The key is gone after a bad response: the PSP is unusable from now on.
            GuestMessageError::Response(_) => PspError::Unavailable,
            GuestMessageError::Firmware(status) => PspError::Firmware(status),
            GuestMessageError::CertBufferTooSmall(_) => PspError::Hypervisor(VMM_ERR_INVALID_LEN),
        }
    }
}

/// VMPCK0 and its sequence number.
pub struct GuestMessenger {
    key: Option<[u8; 32]>,
    /// The last sequence number used (0 before the first message).
    seqno: u64,
    /// A request (sealed with `seqno + 1`) the hypervisor was shown but never forwarded,
    /// and the type of its answer.
    pending: Option<(Box<MessagePage>, MessageType)>,
}

impl core::fmt::Debug for GuestMessenger {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GuestMessenger")
            .field("key", &self.key.map(|_| "<VMPCK0>"))
            .field("seqno", &self.seqno)
            .field("pending", &self.pending.is_some())
            .finish()
    }
}

impl Drop for GuestMessenger {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl GuestMessenger {
    /// Takes VMPCK0 (from the PSP's secrets page) and the last sequence number used with
    /// it (0 at launch). An all-zero key means the key was already wiped.
    pub fn new(vmpck0: [u8; 32], seqno: u64) -> Self {
        let key = if vmpck0 == [0; 32] {
            None
        } else {
            Some(vmpck0)
        };
        GuestMessenger {
            key,
            seqno,
            pending: None,
        }
    }

    /// Whether the key is still usable.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The last sequence number used.
    pub fn seqno(&self) -> u64 {
        self.seqno
    }

    /// Whether a request is waiting to be sent again.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn wipe(&mut self) {
        if let Some(key) = self.key.as_mut() {
            key.zeroize();
        }
        self.key = None;
        self.pending = None;
    }

    /// Asks the PSP for an attestation report binding `user_data`, for VMPL `vmpl`.
    pub fn get_report<T: PspTransport + ?Sized>(
        &mut self,
        psp: &T,
        user_data: &[u8; 64],
        vmpl: u32,
    ) -> Result<[u8; REPORT_SIZE], GuestMessageError> {
        let payload = msg::ReportRequest::new(*user_data, vmpl);
        let (rsp, size) =
            self.exchange(psp, MessageType::ReportRequest, payload.as_bytes(), None)?;
        self.decode_report(&rsp[..size])
    }

    /// Asks the PSP for the key MSG_KEY_REQ `request` derives (sealed with VMPCK0, so
    /// any VMPL may be asked for). The key is handed out in a buffer that wipes itself.
    pub fn derive_key<T: PspTransport + ?Sized>(
        &mut self,
        psp: &T,
        request: &KeyRequest,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, GuestMessageError> {
        let (mut rsp, size) =
            self.exchange(psp, MessageType::KeyRequest, request.as_bytes(), None)?;
        let decoded = KeyResponse::parse(&rsp[..size]);
        let result = match decoded {
            Ok(r) if size == KEY_RESPONSE_SIZE && r.status.get() == 0 => {
                Ok(zeroize::Zeroizing::new(r.derived_key))
            }
            Ok(r) if r.status.get() != 0 => Err(GuestMessageError::Firmware(r.status.get())),
            _ => {
                // Authenticated but nonsensical: the PSP is not behaving; stop using it.
                self.wipe();
                Err(GuestMessageError::Response(MessageError::BadSize))
            }
        };
        rsp.zeroize();
        result
    }

    /// Like [`Self::get_report`] through an extended request that also fetches the
    /// host's certificate table into `certs`; returns the report and the table's length.
    pub fn get_extended_report<T: PspTransport + ?Sized>(
        &mut self,
        psp: &T,
        user_data: &[u8; 64],
        vmpl: u32,
        certs: &mut [u8],
    ) -> Result<([u8; REPORT_SIZE], usize), GuestMessageError> {
        let payload = msg::ReportRequest::new(*user_data, vmpl);
        let mut certs_len = 0;
        let (rsp, size) = self.exchange(
            psp,
            MessageType::ReportRequest,
            payload.as_bytes(),
            Some((certs, &mut certs_len)),
        )?;
        Ok((self.decode_report(&rsp[..size])?, certs_len))
    }

    fn decode_report(&mut self, payload: &[u8]) -> Result<[u8; REPORT_SIZE], GuestMessageError> {
        match msg::report_response(payload) {
            Ok(report) => Ok(report),
            Err(msg::ReportFailure::Status(status)) => Err(GuestMessageError::Firmware(status)),
            Err(msg::ReportFailure::Malformed) => {
                // Authenticated but nonsensical: the PSP is not behaving; stop using it.
                self.wipe();
                Err(GuestMessageError::Response(MessageError::BadSize))
            }
        }
    }

    /// One request/response exchange (MSG_REPORT_REQ or MSG_KEY_REQ and its answer). On
    /// return the sequence number has moved past both messages, or the key is wiped, or
    /// (BUSY) the request is pending and the sequence number has not moved.
    fn exchange<T: PspTransport + ?Sized>(
        &mut self,
        psp: &T,
        msg_type: MessageType,
        payload: &[u8],
        certs: Option<(&mut [u8], &mut usize)>,
    ) -> Result<([u8; msg::REPORT_RESPONSE_SIZE], usize), GuestMessageError> {
        // A working copy that is wiped when this exchange ends, however it ends.
        let key = zeroize::Zeroizing::new(self.key.ok_or(GuestMessageError::KeyWiped)?);
        let reply = match msg_type {
            MessageType::KeyRequest => MessageType::KeyResponse,
            _ => MessageType::ReportResponse,
        };
        let mut request = self.seal(&key, msg_type, payload)?;
        if let Some((pending, pending_reply)) = self.pending.take() {
            if pending[..] == request[..] {
                // The guest asked again for exactly what is pending (same key, sequence
                // number and plaintext give the same bytes): send it, use its answer.
                return self.transmit(psp, &key, pending, reply, certs);
            }
            // Something else is wanted. The pending bytes go out first, so the PSP
            // consumes their sequence number; their answer is of no use any more.
            self.transmit(psp, &key, pending, pending_reply, None)?;
            request = self.seal(&key, msg_type, payload)?;
        }
        self.transmit(psp, &key, request, reply, certs)
    }

    /// Seals a request of `msg_type` with the next sequence number.
    fn seal(
        &mut self,
        key: &[u8; 32],
        msg_type: MessageType,
        payload: &[u8],
    ) -> Result<Box<MessagePage>, GuestMessageError> {
        let req_seqno = self
            .seqno
            .checked_add(1)
            .filter(|s| s.checked_add(1).is_some())
            .ok_or(GuestMessageError::SequenceExhausted)?;
        match msg::seal(key, req_seqno, msg_type, 0, payload) {
            Ok(page) => Ok(Box::new(page)),
            Err(e) => {
                self.wipe();
                Err(GuestMessageError::Response(e))
            }
        }
    }

    /// Sends `request` (sealed with `seqno + 1`), resending it on BUSY, and checks the
    /// answer. Success moves the sequence number by two.
    fn transmit<T: PspTransport + ?Sized>(
        &mut self,
        psp: &T,
        key: &[u8; 32],
        request: Box<MessagePage>,
        reply: MessageType,
        mut certs: Option<(&mut [u8], &mut usize)>,
    ) -> Result<([u8; msg::REPORT_RESPONSE_SIZE], usize), GuestMessageError> {
        let rsp_seqno = self
            .seqno
            .checked_add(2)
            .ok_or(GuestMessageError::SequenceExhausted)?;
        let mut too_small = None;
        let mut busy = 0;
        let result = loop {
            let sent = match certs.as_mut() {
                Some((buf, len)) if too_small.is_none() => {
                    match psp.extended_request(&request, buf) {
                        Ok((page, n)) if n <= buf.len() => {
                            **len = n;
                            Ok(page)
                        }
                        // A table longer than the buffer it was copied into: the
                        // transport is lying about what it wrote.
                        Ok(_) => Err(PspError::Unavailable),
                        Err(ExtendedError::CertBufferTooSmall(needed)) => {
                            // Consume the sequence number with the same ciphertext as a
                            // standard request before reporting the size.
                            too_small = Some(needed);
                            continue;
                        }
                        Err(ExtendedError::Psp(e)) => Err(e),
                    }
                }
                _ => psp.request(&request),
            };
            match sent {
                Err(PspError::Busy) if busy < MAX_BUSY_RETRIES => busy += 1,
                other => break other,
            }
        };
        let response = match result {
            Ok(page) => page,
            Err(PspError::Busy) => {
                // Never forwarded: keep the exact bytes for next time.
                self.pending = Some((request, reply));
                return Err(GuestMessageError::Busy);
            }
            Err(e) => {
                // The PSP may have seen it: never use these numbers or this key again.
                self.seqno = rsp_seqno;
                self.wipe();
                return Err(GuestMessageError::Transport(e));
            }
        };
        self.seqno = rsp_seqno;
        let mut out = [0u8; msg::REPORT_RESPONSE_SIZE];
        let size = match msg::open(key, &response, reply, rsp_seqno, 0, &mut out) {
            Ok(size) => size,
            Err(e) => {
                self.wipe();
                return Err(GuestMessageError::Response(e));
            }
        };
        if let Some(needed) = too_small {
            return Err(GuestMessageError::CertBufferTooSmall(needed));
        }
        Ok((out, size))
    }
}

#[cfg(test)]
mod tests {
    use core::cell::{Cell, RefCell};

    use super::msg::*;
    use super::*;

    const KEY: [u8; 32] = [0x5A; 32];

    /// A PSP that answers with a canned report, driven by a script of transport
    /// outcomes, and records every page it was sent.
    struct ScriptedPsp {
        script: RefCell<std::vec::Vec<Result<(), PspError>>>,
        ext_too_small: Cell<Option<usize>>,
        ext_len: Cell<usize>,
        sent: RefCell<std::vec::Vec<(bool, MessagePage)>>,
        reply_seqno_offset: u64,
        reply_key: [u8; 32],
        reply_size: Cell<Option<usize>>,
    }

    impl ScriptedPsp {
        fn new(script: std::vec::Vec<Result<(), PspError>>) -> Self {
            ScriptedPsp {
                script: RefCell::new(script),
                ext_too_small: Cell::new(None),
                ext_len: Cell::new(1),
                sent: RefCell::new(std::vec::Vec::new()),
                reply_seqno_offset: 1,
                reply_key: KEY,
                reply_size: Cell::new(None),
            }
        }

        fn answer(&self, page: &MessagePage) -> MessagePage {
            let header = read_header(page).unwrap();
            let mut rsp = [0u8; REPORT_RESPONSE_SIZE];
            rsp[4..8].copy_from_slice(&(REPORT_SIZE as u32).to_le_bytes());
            rsp[0x20] = 0x99;
            let seqno = header.msg_seqno.get() + self.reply_seqno_offset;
            let size = self.reply_size.get().unwrap_or(rsp.len());
            seal(
                &self.reply_key,
                seqno,
                MessageType::ReportResponse,
                0,
                &rsp[..size],
            )
            .unwrap()
        }
    }

    impl PspTransport for ScriptedPsp {
        fn request(&self, page: &MessagePage) -> Result<MessagePage, PspError> {
            self.sent.borrow_mut().push((false, *page));
            let step = self.script.borrow_mut().pop().unwrap_or(Ok(()));
            step.map(|()| self.answer(page))
        }

        fn extended_request(
            &self,
            page: &MessagePage,
            certs: &mut [u8],
        ) -> Result<(MessagePage, usize), ExtendedError> {
            self.sent.borrow_mut().push((true, *page));
            if let Some(needed) = self.ext_too_small.get() {
                if certs.len() < needed {
                    return Err(ExtendedError::CertBufferTooSmall(needed));
                }
            }
            certs[0] = 0xCE;
            Ok((self.answer(page), self.ext_len.get()))
        }
    }

    #[test]
    fn a_report_moves_the_sequence_number_by_two() {
        let psp = ScriptedPsp::new(vec![]);
        let mut m = GuestMessenger::new(KEY, 0);
        let report = m.get_report(&psp, &[1; 64], 0).unwrap();
        assert_eq!(report[0], 0x99);
        assert_eq!(m.seqno(), 2);
        m.get_report(&psp, &[1; 64], 0).unwrap();
        assert_eq!(m.seqno(), 4);
        let sent = psp.sent.borrow();
        assert_eq!(read_header(&sent[0].1).unwrap().msg_seqno.get(), 1);
        assert_eq!(read_header(&sent[1].1).unwrap().msg_seqno.get(), 3);
    }

    #[test]
    fn busy_resends_the_identical_ciphertext() {
        let psp = ScriptedPsp::new(vec![Err(PspError::Busy), Err(PspError::Busy)]);
        let mut m = GuestMessenger::new(KEY, 10);
        m.get_report(&psp, &[2; 64], 0).unwrap();
        let sent = psp.sent.borrow();
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|(_, p)| p[..] == sent[0].1[..]));
        assert_eq!(m.seqno(), 12);
        assert!(m.has_key());
    }

    #[test]
    fn endless_busy_keeps_the_request_for_next_time() {
        let n = MAX_BUSY_RETRIES as usize + 1;
        let psp = ScriptedPsp::new(vec![Err(PspError::Busy); n]);
        let mut m = GuestMessenger::new(KEY, 0);
        assert_eq!(
            m.get_report(&psp, &[1; 64], 0),
            Err(GuestMessageError::Busy)
        );
        assert!(m.has_key() && m.has_pending());
        assert_eq!(m.seqno(), 0, "nothing was consumed");
        // The next request, for other data, first sends the kept bytes again, then its
        // own under the next sequence number.
        m.get_report(&psp, &[2; 64], 0).unwrap();
        assert!(!m.has_pending());
        assert_eq!(m.seqno(), 4);
        let sent = psp.sent.borrow();
        assert_eq!(sent.len(), n + 2);
        assert!(sent[..=n].iter().all(|(_, p)| p[..] == sent[0].1[..]));
        assert_eq!(read_header(&sent[n + 1].1).unwrap().msg_seqno.get(), 3);
    }

    #[test]
    fn the_same_request_again_is_answered_by_the_pending_one() {
        let n = MAX_BUSY_RETRIES as usize + 1;
        let psp = ScriptedPsp::new(vec![Err(PspError::Busy); n]);
        let mut m = GuestMessenger::new(KEY, 0);
        assert_eq!(
            m.get_report(&psp, &[1; 64], 0),
            Err(GuestMessageError::Busy)
        );
        // The guest retries with identical inputs: one request, one report.
        assert_eq!(m.get_report(&psp, &[1; 64], 0).unwrap()[0], 0x99);
        assert_eq!((m.seqno(), m.has_pending()), (2, false));
        let sent = psp.sent.borrow();
        assert_eq!(sent.len(), n + 1);
        assert!(sent.iter().all(|(_, p)| p[..] == sent[0].1[..]));
    }

    #[test]
    fn a_pending_request_still_busy_stays_pending() {
        let n = MAX_BUSY_RETRIES as usize + 1;
        let psp = ScriptedPsp::new(vec![Err(PspError::Busy); 2 * n]);
        let mut m = GuestMessenger::new(KEY, 0);
        assert_eq!(
            m.get_report(&psp, &[1; 64], 0),
            Err(GuestMessageError::Busy)
        );
        assert_eq!(
            m.get_report(&psp, &[2; 64], 0),
            Err(GuestMessageError::Busy)
        );
        assert!(m.has_pending() && m.has_key());
        // Only ever the one sealed request went out.
        let sent = psp.sent.borrow();
        assert_eq!(sent.len(), 2 * n);
        assert!(sent.iter().all(|(_, p)| p[..] == sent[0].1[..]));
    }

    #[test]
    fn transport_errors_wipe_the_key() {
        for e in [
            PspError::Hypervisor(5),
            PspError::Firmware(0x16),
            PspError::Unavailable,
        ] {
            let psp = ScriptedPsp::new(vec![Err(e)]);
            let mut m = GuestMessenger::new(KEY, 0);
            assert_eq!(
                m.get_report(&psp, &[0; 64], 0),
                Err(GuestMessageError::Transport(e))
            );
            assert!(!m.has_key());
            assert_eq!(
                m.seqno(),
                2,
                "the numbers the PSP may have seen are never reused"
            );
        }
    }

    #[test]
    fn a_response_with_the_wrong_sequence_number_wipes_the_key() {
        let mut psp = ScriptedPsp::new(vec![]);
        psp.reply_seqno_offset = 3;
        let mut m = GuestMessenger::new(KEY, 0);
        assert!(matches!(
            m.get_report(&psp, &[0; 64], 0),
            Err(GuestMessageError::Response(MessageError::Header(
                svsm_protocol::ParseError::SequenceMismatch { .. }
            )))
        ));
        assert!(!m.has_key());
    }

    #[test]
    fn a_short_authenticated_response_is_no_report() {
        let psp = ScriptedPsp::new(vec![]);
        // Status 0 and the right report size, but the report itself cut off.
        psp.reply_size.set(Some(0x20 + 8));
        let mut m = GuestMessenger::new(KEY, 0);
        assert_eq!(
            m.get_report(&psp, &[0; 64], 0),
            Err(GuestMessageError::Response(MessageError::BadSize))
        );
        assert!(!m.has_key());
    }

    #[test]
    fn a_forged_response_wipes_the_key() {
        let mut psp = ScriptedPsp::new(vec![]);
        psp.reply_key = [1; 32];
        let mut m = GuestMessenger::new(KEY, 0);
        assert_eq!(
            m.get_report(&psp, &[0; 64], 0),
            Err(GuestMessageError::Response(MessageError::Authentication))
        );
        assert!(!m.has_key());
    }

    #[test]
    fn too_small_certificate_buffer_consumes_the_sequence_number() {
        let psp = ScriptedPsp::new(vec![]);
        psp.ext_too_small.set(Some(3 * 4096));
        let mut m = GuestMessenger::new(KEY, 0);
        let mut certs = [0u8; 4096];
        assert_eq!(
            m.get_extended_report(&psp, &[0; 64], 0, &mut certs),
            Err(GuestMessageError::CertBufferTooSmall(3 * 4096))
        );
        {
            let sent = psp.sent.borrow();
            assert_eq!(sent.len(), 2);
            assert!(sent[0].0 && !sent[1].0, "extended first, then standard");
            assert_eq!(sent[0].1[..], sent[1].1[..], "the same ciphertext");
        }
        assert!(m.has_key());
        assert_eq!(m.seqno(), 2);
        // With a big enough buffer the next request works, with fresh numbers.
        let mut certs = [0u8; 3 * 4096];
        let (_, n) = m
            .get_extended_report(&psp, &[0; 64], 0, &mut certs)
            .unwrap();
        assert_eq!((n, certs[0]), (1, 0xCE));
        assert_eq!(m.seqno(), 4);
    }

    #[test]
    fn a_certificate_length_beyond_the_buffer_is_a_transport_failure() {
        let psp = ScriptedPsp::new(vec![]);
        psp.ext_len.set(4097);
        let mut m = GuestMessenger::new(KEY, 0);
        let mut certs = [0u8; 4096];
        assert_eq!(
            m.get_extended_report(&psp, &[0; 64], 0, &mut certs),
            Err(GuestMessageError::Transport(PspError::Unavailable))
        );
        // The PSP saw the request: its numbers are spent and the key is gone.
        assert_eq!((m.seqno(), m.has_key()), (2, false));
    }

    #[test]
    fn a_zero_key_is_no_key() {
        let psp = ScriptedPsp::new(vec![]);
        let mut m = GuestMessenger::new([0; 32], 0);
        assert_eq!(
            m.get_report(&psp, &[0; 64], 0),
            Err(GuestMessageError::KeyWiped)
        );
        assert!(psp.sent.borrow().is_empty());
    }

    #[test]
    fn sequence_exhaustion_is_refused_before_sending() {
        let psp = ScriptedPsp::new(vec![]);
        let mut m = GuestMessenger::new(KEY, u64::MAX - 1);
        assert_eq!(
            m.get_report(&psp, &[0; 64], 0),
            Err(GuestMessageError::SequenceExhausted)
        );
        assert!(psp.sent.borrow().is_empty());
    }
}
