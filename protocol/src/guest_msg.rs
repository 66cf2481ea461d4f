//! PSP guest messages: the encrypted-message header, the report request/response, the
//! derived-key request/response and the SNP attestation report.
//!
//! Layouts from the SEV-SNP firmware ABI spec (56860), "SNP_GUEST_REQUEST" (message
//! header), "MSG_REPORT_REQ", "MSG_REPORT_RSP", "MSG_KEY_REQ", "MSG_KEY_RSP" and
//! "ATTESTATION_REPORT"; they match Linux's `struct snp_guest_msg_hdr`,
//! `struct snp_report_req`, `struct snp_derived_key_req` and virtee's
//! `AttestationReport`. Messages are AES-256-GCM sealed with a VMPCK: the AAD is header
//! bytes 0x30..0x60 and the 96-bit IV is the message sequence number, little-endian, in
//! its first eight bytes. Reusing an IV breaks GCM, so a caller that loses track of the
//! sequence number must wipe the VMPCK.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Field, ParseError};

/// Size of the message header.
pub const GUEST_MSG_HEADER_SIZE: usize = 0x60;
/// Size of a whole guest message page.
pub const GUEST_MSG_SIZE: usize = 4096;
/// Largest payload in one message page.
pub const GUEST_MSG_MAX_PAYLOAD: usize = GUEST_MSG_SIZE - GUEST_MSG_HEADER_SIZE;
/// Bytes of the 32-byte authtag field that AES-GCM uses.
pub const AUTHTAG_LEN: usize = 16;
/// Byte range of the header that is authenticated as additional data.
pub const AAD_RANGE: core::ops::Range<usize> = 0x30..0x60;
/// Length of the AES-GCM IV.
pub const IV_LEN: usize = 12;
/// Header version this crate speaks.
pub const HEADER_VERSION: u8 = 1;
/// Message version of MSG_REPORT_REQ/RSP this crate speaks.
pub const MESSAGE_VERSION: u8 = 1;
/// AEAD algorithm: AES-256-GCM.
pub const AEAD_AES_256_GCM: u8 = 1;

/// Guest message types (56860, table "Message Type Encodings").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// MSG_CPUID_REQ.
    CpuidRequest = 1,
    /// MSG_CPUID_RSP.
    CpuidResponse = 2,
    /// MSG_KEY_REQ.
    KeyRequest = 3,
    /// MSG_KEY_RSP.
    KeyResponse = 4,
    /// MSG_REPORT_REQ.
    ReportRequest = 5,
    /// MSG_REPORT_RSP.
    ReportResponse = 6,
}

impl MessageType {
    /// The type with this value, if defined here.
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => MessageType::CpuidRequest,
            2 => MessageType::CpuidResponse,
            3 => MessageType::KeyRequest,
            4 => MessageType::KeyResponse,
            5 => MessageType::ReportRequest,
            6 => MessageType::ReportResponse,
            _ => return None,
        })
    }
}

/// Guest message header (56860, table "Message Header"; Linux `struct snp_guest_msg_hdr`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct GuestMessageHeader {
    /// Authentication tag (first [`AUTHTAG_LEN`] bytes used).
    pub authtag: [u8; 32],
    /// Message sequence number.
    pub msg_seqno: U64,
    /// Reserved.
    pub reserved1: [u8; 8],
    /// AEAD algorithm ([`AEAD_AES_256_GCM`]).
    pub algo: u8,
    /// Header version ([`HEADER_VERSION`]).
    pub hdr_version: u8,
    /// Header size (0x60).
    pub hdr_sz: U16,
    /// Message type.
    pub msg_type: u8,
    /// Message version.
    pub msg_version: u8,
    /// Payload size.
    pub msg_sz: U16,
    /// Reserved.
    pub reserved2: [u8; 4],
    /// VMPCK index used to seal the message.
    pub msg_vmpck: u8,
    /// Reserved.
    pub reserved3: [u8; 35],
}

const _: () = assert!(core::mem::size_of::<GuestMessageHeader>() == GUEST_MSG_HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(GuestMessageHeader, msg_seqno) == 0x20);
const _: () = assert!(core::mem::offset_of!(GuestMessageHeader, algo) == 0x30);
const _: () = assert!(core::mem::offset_of!(GuestMessageHeader, hdr_version) == 0x31);
const _: () = assert!(core::mem::offset_of!(GuestMessageHeader, hdr_sz) == 0x32);
const _: () = assert!(core::mem::offset_of!(GuestMessageHeader, msg_type) == 0x34);
const _: () = assert!(core::mem::offset_of!(GuestMessageHeader, msg_version) == 0x35);
const _: () = assert!(core::mem::offset_of!(GuestMessageHeader, msg_sz) == 0x36);
const _: () = assert!(core::mem::offset_of!(GuestMessageHeader, msg_vmpck) == 0x3C);

impl GuestMessageHeader {
    /// A request header (authtag zero until sealed).
    pub fn new(msg_seqno: u64, msg_type: MessageType, msg_sz: u16, vmpck: u8) -> Self {
        Self {
            authtag: [0; 32],
            msg_seqno: U64::new(msg_seqno),
            reserved1: [0; 8],
            algo: AEAD_AES_256_GCM,
            hdr_version: HEADER_VERSION,
            // 0x60 fits in u16.
            hdr_sz: U16::new(GUEST_MSG_HEADER_SIZE as u16),
            msg_type: msg_type as u8,
            msg_version: MESSAGE_VERSION,
            msg_sz: U16::new(msg_sz),
            reserved2: [0; 4],
            msg_vmpck: vmpck,
            reserved3: [0; 35],
        }
    }

    /// Parses the header at the start of a message and checks the fields the receiver
    /// relies on: algorithm, header version and size, and that the payload fits.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let (header, payload) =
            Self::read_from_prefix(bytes).map_err(|_| ParseError::ShortBuffer {
                need: GUEST_MSG_HEADER_SIZE,
                got: bytes.len(),
            })?;
        if header.algo != AEAD_AES_256_GCM {
            return Err(ParseError::UnknownValue {
                field: Field::Algorithm,
                value: header.algo.into(),
            });
        }
        if header.hdr_version != HEADER_VERSION {
            return Err(ParseError::UnknownValue {
                field: Field::HeaderVersion,
                value: header.hdr_version.into(),
            });
        }
        if usize::from(header.hdr_sz.get()) != GUEST_MSG_HEADER_SIZE {
            return Err(ParseError::UnknownValue {
                field: Field::HeaderSize,
                value: header.hdr_sz.get().into(),
            });
        }
        let msg_sz = usize::from(header.msg_sz.get());
        if msg_sz > payload.len().min(GUEST_MSG_MAX_PAYLOAD) {
            return Err(ParseError::SizeTooLarge {
                size: msg_sz,
                max: payload.len().min(GUEST_MSG_MAX_PAYLOAD),
            });
        }
        Ok(header)
    }

    /// Checks that a response answers a request: expected type and version, and the
    /// sequence number the PSP must use (request seqno + 1).
    pub fn check_response(
        &self,
        expected_type: MessageType,
        expected_seqno: u64,
    ) -> Result<(), ParseError> {
        if self.msg_type != expected_type as u8 {
            return Err(ParseError::UnknownValue {
                field: Field::MessageType,
                value: self.msg_type.into(),
            });
        }
        if self.msg_version != MESSAGE_VERSION {
            return Err(ParseError::UnknownValue {
                field: Field::MessageVersion,
                value: self.msg_version.into(),
            });
        }
        if self.msg_seqno.get() != expected_seqno {
            return Err(ParseError::SequenceMismatch {
                got: self.msg_seqno.get(),
                expected: expected_seqno,
            });
        }
        Ok(())
    }

    /// The additional authenticated data: header bytes 0x30..0x60.
    pub fn aad(&self) -> [u8; 0x30] {
        let mut aad = [0u8; 0x30];
        if let Some(src) = self.as_bytes().get(AAD_RANGE) {
            aad.copy_from_slice(src);
        }
        aad
    }

    /// The AES-GCM IV for this message's sequence number.
    pub fn iv(&self) -> [u8; IV_LEN] {
        iv_from_seqno(self.msg_seqno.get())
    }
}

/// The 96-bit IV for a sequence number: the seqno little-endian in bytes 0..8, then
/// zeros.
pub fn iv_from_seqno(seqno: u64) -> [u8; IV_LEN] {
    let mut iv = [0u8; IV_LEN];
    let (head, _) = iv.split_at_mut(8);
    head.copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// MSG_REPORT_REQ payload (56860, table "MSG_REPORT_REQ Message Structure"; Linux
/// `struct snp_report_req`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ReportRequest {
    /// Data placed into the report's REPORT_DATA.
    pub user_data: [u8; 64],
    /// VMPL to put in the report (must be >= the requester's VMPL).
    pub vmpl: U32,
    /// Key selection (bits 1:0): 0 either, 1 VCEK, 2 VLEK.
    pub key_sel: U32,
    /// Reserved.
    pub reserved: [u8; 24],
}

/// Size of [`ReportRequest`].
pub const REPORT_REQUEST_SIZE: usize = 0x60;
const _: () = assert!(core::mem::size_of::<ReportRequest>() == REPORT_REQUEST_SIZE);
const _: () = assert!(core::mem::offset_of!(ReportRequest, vmpl) == 0x40);
const _: () = assert!(core::mem::offset_of!(ReportRequest, key_sel) == 0x44);

impl ReportRequest {
    /// A request for a report at `vmpl` with `user_data`, any signing key.
    pub fn new(user_data: [u8; 64], vmpl: u32) -> Self {
        Self {
            user_data,
            vmpl: U32::new(vmpl),
            key_sel: U32::new(0),
            reserved: [0; 24],
        }
    }
}

/// MSG_KEY_REQ payload (56860, "MSG_KEY_REQ", table "MSG_KEY_REQ Message Structure";
/// Linux `struct snp_derived_key_req`): asks the PSP for a key derived from a root key
/// and the guest's launch, mixing in the fields [`GuestFieldSelect`] names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct KeyRequest {
    /// Bit 0: the root key, 0 the chip's VCEK-derivation key, 1 the VM root key
    /// (VMRK, only with a migration agent). Bits 2:1 (KEY_SEL): 0 the VLEK where one is
    /// installed and the VCEK otherwise, 1 the VCEK, 2 the VLEK.
    pub root_key_select: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// Which launch fields are mixed in ([`GuestFieldSelect`]).
    pub guest_field_select: U64,
    /// The VMPL mixed in: at least the VMPL of the VMPCK that sealed the request.
    pub vmpl: U32,
    /// The guest SVN mixed in (at most the launch's), if selected.
    pub guest_svn: U32,
    /// The TCB version mixed in (no component above the current TCB's), if selected.
    pub tcb_version: U64,
}

/// Size of [`KeyRequest`].
pub const KEY_REQUEST_SIZE: usize = 0x20;
const _: () = assert!(core::mem::size_of::<KeyRequest>() == KEY_REQUEST_SIZE);
const _: () = assert!(core::mem::offset_of!(KeyRequest, guest_field_select) == 0x08);
const _: () = assert!(core::mem::offset_of!(KeyRequest, vmpl) == 0x10);
const _: () = assert!(core::mem::offset_of!(KeyRequest, guest_svn) == 0x14);
const _: () = assert!(core::mem::offset_of!(KeyRequest, tcb_version) == 0x18);

/// MSG_KEY_REQ's ROOT_KEY_SELECT: derive from the VM root key (VMRK) instead.
pub const ROOT_KEY_VMRK: u32 = 1;
/// MSG_KEY_REQ's KEY_SEL (bits 2:1): the VCEK even where a VLEK is installed.
pub const KEY_SEL_VCEK: u32 = 1 << 1;
/// MSG_KEY_REQ's KEY_SEL (bits 2:1): the VLEK.
pub const KEY_SEL_VLEK: u32 = 2 << 1;

bitflags::bitflags! {
    /// MSG_KEY_REQ's GUEST_FIELD_SELECT (56860, table "GUEST_FIELD_SELECT Field"):
    /// which launch fields the PSP mixes into the derived key. There is no bit for the
    /// ID key or the author key, so a key bound to IMAGE_ID or FAMILY_ID alone can be
    /// derived by any launch whose ID block, signed by anyone, carries those IDs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct GuestFieldSelect: u64 {
        /// The guest policy.
        const GUEST_POLICY = 1 << 0;
        /// The image ID of the ID block.
        const IMAGE_ID = 1 << 1;
        /// The family ID of the ID block.
        const FAMILY_ID = 1 << 2;
        /// The launch measurement.
        const MEASUREMENT = 1 << 3;
        /// The guest SVN given in the request.
        const GUEST_SVN = 1 << 4;
        /// The TCB version given in the request.
        const TCB_VERSION = 1 << 5;
    }
}

impl KeyRequest {
    /// A request for a key from the VCEK (or the VLEK, where the host installed one)
    /// for `vmpl`, mixing in `fields`, `guest_svn` and `tcb_version`.
    pub fn new(fields: GuestFieldSelect, vmpl: u32, guest_svn: u32, tcb_version: u64) -> Self {
        Self {
            root_key_select: U32::new(0),
            reserved: U32::new(0),
            guest_field_select: U64::new(fields.bits()),
            vmpl: U32::new(vmpl),
            guest_svn: U32::new(guest_svn),
            tcb_version: U64::new(tcb_version),
        }
    }
}

/// MSG_KEY_RSP payload (56860, table "MSG_KEY_RSP Message Structure"; Linux
/// `struct snp_derived_key_resp`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct KeyResponse {
    /// 0 on success, otherwise a firmware error (0x16 INVALID_PARAM).
    pub status: U32,
    /// Reserved.
    pub reserved: [u8; 0x1C],
    /// The derived key.
    pub derived_key: [u8; 32],
}

/// Size of [`KeyResponse`].
pub const KEY_RESPONSE_SIZE: usize = 0x40;
const _: () = assert!(core::mem::size_of::<KeyResponse>() == KEY_RESPONSE_SIZE);
const _: () = assert!(core::mem::offset_of!(KeyResponse, derived_key) == 0x20);

impl KeyResponse {
    /// Parses a decrypted MSG_KEY_RSP payload (a non-zero status is returned as is).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        Self::read_from_prefix(bytes)
            .map(|(r, _)| r)
            .map_err(|_| ParseError::ShortBuffer {
                need: KEY_RESPONSE_SIZE,
                got: bytes.len(),
            })
    }
}

/// SNP TCB version as stored in reports (raw; field layout differs per CPU family).
pub type TcbVersion = U64;

/// The report's signature field (56860, table "ECDSA P-384 with SHA-384 Signature"):
/// R and S as 72-byte little-endian integers.
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ReportSignature {
    /// R, little-endian, zero-padded.
    pub r: [u8; 72],
    /// S, little-endian, zero-padded.
    pub s: [u8; 72],
    /// Reserved.
    pub reserved: [u8; 368],
}

const _: () = assert!(core::mem::size_of::<ReportSignature>() == 512);

impl core::fmt::Debug for ReportSignature {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReportSignature").finish_non_exhaustive()
    }
}

/// Signature algorithm: ECDSA P-384 with SHA-384.
pub const SIGNATURE_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// ATTESTATION_REPORT (56860, table "ATTESTATION_REPORT Structure").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct AttestationReport {
    /// Report format version (2 or later).
    pub version: U32,
    /// Guest SVN.
    pub guest_svn: U32,
    /// Guest policy.
    pub policy: U64,
    /// Family ID from the ID block.
    pub family_id: [u8; 16],
    /// Image ID from the ID block.
    pub image_id: [u8; 16],
    /// VMPL the report was requested for.
    pub vmpl: U32,
    /// Signature algorithm ([`SIGNATURE_ALGO_ECDSA_P384_SHA384`]).
    pub signature_algo: U32,
    /// Current platform TCB version.
    pub platform_version: TcbVersion,
    /// Platform information flags (SMT, TSME, ...).
    pub platform_info: U64,
    /// Flags: bit 0 author key enabled, bit 1 mask chip key, bits 4:2 signing key.
    pub flags: U32,
    /// Reserved.
    pub reserved0: [u8; 4],
    /// Guest-provided data (REPORT_DATA).
    pub report_data: [u8; 64],
    /// Launch measurement (SHA-384).
    pub measurement: [u8; 48],
    /// Host-provided data.
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key.
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key.
    pub author_key_digest: [u8; 48],
    /// Report ID of this guest.
    pub report_id: [u8; 32],
    /// Report ID of the migration agent.
    pub report_id_ma: [u8; 32],
    /// TCB version used to derive the signing key.
    pub reported_tcb: TcbVersion,
    /// CPUID family/model/stepping (report version 3+) and reserved bytes.
    pub reserved1: [u8; 24],
    /// Chip identifier (zero if masked).
    pub chip_id: [u8; 64],
    /// Committed TCB version.
    pub committed_tcb: TcbVersion,
    /// Current firmware build.
    pub current_build: u8,
    /// Current firmware minor version.
    pub current_minor: u8,
    /// Current firmware major version.
    pub current_major: u8,
    /// Reserved.
    pub reserved2: u8,
    /// Committed firmware build.
    pub committed_build: u8,
    /// Committed firmware minor version.
    pub committed_minor: u8,
    /// Committed firmware major version.
    pub committed_major: u8,
    /// Reserved.
    pub reserved3: u8,
    /// TCB version at launch.
    pub launch_tcb: TcbVersion,
    /// Reserved (mitigation vectors in later versions).
    pub reserved4: [u8; 168],
    /// Signature over bytes 0..0x2A0.
    pub signature: ReportSignature,
}

const _: () = assert!(core::mem::size_of::<AttestationReport>() == 0x4A0);
const _: () = assert!(core::mem::offset_of!(AttestationReport, policy) == 0x08);
const _: () = assert!(core::mem::offset_of!(AttestationReport, family_id) == 0x10);
const _: () = assert!(core::mem::offset_of!(AttestationReport, image_id) == 0x20);
const _: () = assert!(core::mem::offset_of!(AttestationReport, vmpl) == 0x30);
const _: () = assert!(core::mem::offset_of!(AttestationReport, signature_algo) == 0x34);
const _: () = assert!(core::mem::offset_of!(AttestationReport, platform_version) == 0x38);
const _: () = assert!(core::mem::offset_of!(AttestationReport, platform_info) == 0x40);
const _: () = assert!(core::mem::offset_of!(AttestationReport, flags) == 0x48);
const _: () = assert!(core::mem::offset_of!(AttestationReport, report_data) == 0x50);
const _: () = assert!(core::mem::offset_of!(AttestationReport, measurement) == 0x90);
const _: () = assert!(core::mem::offset_of!(AttestationReport, host_data) == 0xC0);
const _: () = assert!(core::mem::offset_of!(AttestationReport, id_key_digest) == 0xE0);
const _: () = assert!(core::mem::offset_of!(AttestationReport, author_key_digest) == 0x110);
const _: () = assert!(core::mem::offset_of!(AttestationReport, report_id) == 0x140);
const _: () = assert!(core::mem::offset_of!(AttestationReport, report_id_ma) == 0x160);
const _: () = assert!(core::mem::offset_of!(AttestationReport, reported_tcb) == 0x180);
const _: () = assert!(core::mem::offset_of!(AttestationReport, chip_id) == 0x1A0);
const _: () = assert!(core::mem::offset_of!(AttestationReport, committed_tcb) == 0x1E0);
const _: () = assert!(core::mem::offset_of!(AttestationReport, current_build) == 0x1E8);
const _: () = assert!(core::mem::offset_of!(AttestationReport, committed_build) == 0x1EC);
const _: () = assert!(core::mem::offset_of!(AttestationReport, launch_tcb) == 0x1F0);
const _: () = assert!(core::mem::offset_of!(AttestationReport, signature) == 0x2A0);

/// Bytes of the report covered by the signature.
pub const REPORT_SIGNED_LEN: usize = 0x2A0;
/// Offset of signature R.
pub const REPORT_SIGNATURE_R_OFFSET: usize = 0x2A0;
/// Offset of signature S.
pub const REPORT_SIGNATURE_S_OFFSET: usize = 0x2E8;

const _: () = assert!(
    core::mem::offset_of!(AttestationReport, signature) + core::mem::offset_of!(ReportSignature, s)
        == REPORT_SIGNATURE_S_OFFSET
);

impl AttestationReport {
    /// Reads a report from the first 0x4A0 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        Self::read_from_prefix(bytes)
            .map(|(r, _)| r)
            .map_err(|_| ParseError::ShortBuffer {
                need: crate::attest::ATTESTATION_REPORT_SIZE,
                got: bytes.len(),
            })
    }

    /// The bytes the signature covers (0..0x2A0).
    pub fn signed_bytes(&self) -> &[u8] {
        let bytes = self.as_bytes();
        bytes.get(..REPORT_SIGNED_LEN).unwrap_or(bytes)
    }
}

/// MSG_REPORT_RSP payload (56860, table "MSG_REPORT_RSP Message Structure").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ReportResponse {
    /// 0 on success, otherwise a firmware error (e.g. 0x16 INVALID_PARAM).
    pub status: U32,
    /// Size of the report (0x4A0).
    pub report_size: U32,
    /// Reserved.
    pub reserved: [u8; 24],
    /// The report.
    pub report: AttestationReport,
}

/// Size of [`ReportResponse`].
pub const REPORT_RESPONSE_SIZE: usize = 0x20 + 0x4A0;
const _: () = assert!(core::mem::size_of::<ReportResponse>() == REPORT_RESPONSE_SIZE);
const _: () = assert!(core::mem::offset_of!(ReportResponse, report_size) == 0x04);
const _: () = assert!(core::mem::offset_of!(ReportResponse, report) == 0x20);

impl ReportResponse {
    /// Parses a decrypted MSG_REPORT_RSP payload. A non-zero status is returned as is
    /// (the caller reports it); with status 0 the report size must be 0x4A0.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let (rsp, _) = Self::read_from_prefix(bytes).map_err(|_| ParseError::ShortBuffer {
            need: REPORT_RESPONSE_SIZE,
            got: bytes.len(),
        })?;
        let size = usize::try_from(rsp.report_size.get()).unwrap_or(usize::MAX);
        if rsp.status.get() == 0 && size != crate::attest::ATTESTATION_REPORT_SIZE {
            return Err(ParseError::SizeMismatch {
                size,
                expected: crate::attest::ATTESTATION_REPORT_SIZE,
            });
        }
        Ok(rsp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MSG_KEY_REQ that asks for a key bound to the measurement and the policy at
    /// VMPL0 with a TCB, byte for byte as Linux's `struct snp_derived_key_req` lays it
    /// out.
    #[test]
    fn key_request_layout() {
        let fields = GuestFieldSelect::MEASUREMENT | GuestFieldSelect::GUEST_POLICY;
        let r = KeyRequest::new(fields, 0, 0, 0x0300_0000_0000_0008);
        let mut expected = [0u8; 0x20];
        expected[0x08] = 0x09;
        expected[0x18] = 0x08;
        expected[0x1F] = 0x03;
        assert_eq!(r.as_bytes(), &expected);
        let r = KeyRequest {
            root_key_select: U32::new(KEY_SEL_VCEK),
            ..KeyRequest::new(GuestFieldSelect::all(), 2, 7, 0)
        };
        assert_eq!(r.as_bytes()[0], 0x02);
        assert_eq!(r.as_bytes()[0x08], 0x3F);
        assert_eq!(&r.as_bytes()[0x10..0x18], &[2, 0, 0, 0, 7, 0, 0, 0]);
        let mut rsp = [0u8; 0x40];
        rsp[0x20..].copy_from_slice(&[0xAB; 32]);
        let parsed = KeyResponse::parse(&rsp).unwrap();
        assert_eq!((parsed.status.get(), parsed.derived_key), (0, [0xAB; 32]));
        assert!(KeyResponse::parse(&rsp[..0x3F]).is_err());
    }

    const MILAN_REPORT: &[u8] = include_bytes!("../tests/data/snp-milan-report.bin");

    #[test]
    fn real_milan_report_parses() {
        assert_eq!(MILAN_REPORT.len(), 0x4A0);
        let r = AttestationReport::parse(MILAN_REPORT).unwrap();
        assert_eq!(r.version.get(), 2);
        assert_eq!(r.vmpl.get(), 0);
        assert_eq!(r.signature_algo.get(), SIGNATURE_ALGO_ECDSA_P384_SHA384);
        assert_eq!(r.policy.get(), 0x3_0000);
        assert_eq!(&r.measurement[..4], &[0x7a, 0x1e, 0x5c, 0x26]);
        assert_eq!(&r.measurement[45..], &[0x81, 0x84, 0x1f]);
        assert_eq!(&r.report_data[..4], &[0xd4, 0x47, 0xb5, 0x5d]);
        assert_eq!(r.platform_version.get(), 0x7308_0000_0000_0003);
        assert_eq!(r.current_major, 1);
        assert_eq!(r.current_minor, 0x34);
        assert_eq!(r.current_build, 4);
        assert_eq!(&r.chip_id[..4], &[0xd4, 0x95, 0x54, 0xec]);
        assert_eq!(r.report_id_ma, [0xFF; 32]);
        assert_eq!(
            &r.signature.r[..],
            &MILAN_REPORT[REPORT_SIGNATURE_R_OFFSET..REPORT_SIGNATURE_R_OFFSET + 72]
        );
        assert_eq!(&r.signature.s[..2], &[0x20, 0x9d]);
        assert_eq!(r.signed_bytes(), &MILAN_REPORT[..0x2A0]);
        assert_eq!(r.as_bytes(), MILAN_REPORT);
    }

    #[test]
    fn short_report_is_rejected() {
        assert_eq!(
            AttestationReport::parse(&MILAN_REPORT[..0x49F]),
            Err(ParseError::ShortBuffer {
                need: 0x4A0,
                got: 0x49F
            })
        );
    }

    #[test]
    fn header_fields_at_spec_offsets() {
        let h = GuestMessageHeader::new(0x0102_0304_0506_0708, MessageType::ReportRequest, 0x60, 0);
        let b = h.as_bytes();
        assert_eq!(&b[0x20..0x28], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(b[0x30], 1);
        assert_eq!(b[0x31], 1);
        assert_eq!(&b[0x32..0x34], &[0x60, 0]);
        assert_eq!(b[0x34], 5);
        assert_eq!(b[0x35], 1);
        assert_eq!(&b[0x36..0x38], &[0x60, 0]);
        assert_eq!(b[0x3C], 0);
        assert_eq!(&h.aad()[..], &b[0x30..0x60]);
    }

    #[test]
    fn header_round_trips() {
        let h = GuestMessageHeader::new(2, MessageType::ReportResponse, 0x4C0, 0);
        let mut msg = [0u8; GUEST_MSG_SIZE];
        msg[..0x60].copy_from_slice(h.as_bytes());
        let parsed = GuestMessageHeader::parse(&msg).unwrap();
        assert_eq!(parsed, h);
        assert_eq!(
            parsed.check_response(MessageType::ReportResponse, 2),
            Ok(())
        );
    }

    #[test]
    fn header_rejections() {
        let good = GuestMessageHeader::new(2, MessageType::ReportResponse, 0x4C0, 0);
        let mut msg = [0u8; GUEST_MSG_SIZE];
        msg[..0x60].copy_from_slice(good.as_bytes());

        assert_eq!(
            GuestMessageHeader::parse(&msg[..0x5F]),
            Err(ParseError::ShortBuffer {
                need: 0x60,
                got: 0x5F
            })
        );
        let mut m = msg;
        m[0x30] = 2;
        assert_eq!(
            GuestMessageHeader::parse(&m),
            Err(ParseError::UnknownValue {
                field: Field::Algorithm,
                value: 2
            })
        );
        let mut m = msg;
        m[0x31] = 2;
        assert_eq!(
            GuestMessageHeader::parse(&m),
            Err(ParseError::UnknownValue {
                field: Field::HeaderVersion,
                value: 2
            })
        );
        let mut m = msg;
        m[0x32] = 0x40;
        assert_eq!(
            GuestMessageHeader::parse(&m),
            Err(ParseError::UnknownValue {
                field: Field::HeaderSize,
                value: 0x40
            })
        );
        let mut m = msg;
        m[0x36..0x38].copy_from_slice(&0x0FA1u16.to_le_bytes());
        assert_eq!(
            GuestMessageHeader::parse(&m),
            Err(ParseError::SizeTooLarge {
                size: 0xFA1,
                max: 0xFA0
            })
        );
        // Payload shorter than msg_sz.
        assert_eq!(
            GuestMessageHeader::parse(&msg[..0x100]),
            Err(ParseError::SizeTooLarge {
                size: 0x4C0,
                max: 0xA0
            })
        );

        assert!(matches!(
            good.check_response(MessageType::ReportRequest, 2),
            Err(ParseError::UnknownValue {
                field: Field::MessageType,
                value: 6
            })
        ));
        assert!(matches!(
            good.check_response(MessageType::ReportResponse, 3),
            Err(ParseError::SequenceMismatch {
                got: 2,
                expected: 3
            })
        ));
        let mut v = good;
        v.msg_version = 2;
        assert!(matches!(
            v.check_response(MessageType::ReportResponse, 2),
            Err(ParseError::UnknownValue {
                field: Field::MessageVersion,
                ..
            })
        ));
    }

    #[test]
    fn iv_is_seqno_little_endian() {
        assert_eq!(
            iv_from_seqno(0x0102_0304_0506_0708),
            [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0]
        );
        let h = GuestMessageHeader::new(1, MessageType::ReportRequest, 0x60, 0);
        assert_eq!(h.iv(), [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn message_types() {
        assert_eq!(MessageType::ReportRequest as u8, 5);
        assert_eq!(MessageType::ReportResponse as u8, 6);
        for v in 1..=6 {
            assert_eq!(MessageType::from_u8(v).map(|t| t as u8), Some(v));
        }
        assert_eq!(MessageType::from_u8(0), None);
        assert_eq!(MessageType::from_u8(7), None);
    }

    #[test]
    fn report_request_layout() {
        let r = ReportRequest::new([0xAB; 64], 0);
        let b = r.as_bytes();
        assert_eq!(b.len(), 0x60);
        assert_eq!(&b[..64], &[0xAB; 64]);
        assert_eq!(&b[0x40..0x48], &[0; 8]);
        assert_eq!(ReportRequest::read_from_bytes(b), Ok(r));
    }

    #[test]
    fn report_response_round_trips() {
        let mut rsp = [0u8; REPORT_RESPONSE_SIZE];
        rsp[4..8].copy_from_slice(&0x4A0u32.to_le_bytes());
        rsp[0x20..].copy_from_slice(MILAN_REPORT);
        let parsed = ReportResponse::parse(&rsp).unwrap();
        assert_eq!(parsed.status.get(), 0);
        assert_eq!(parsed.report.as_bytes(), MILAN_REPORT);
        assert_eq!(parsed.as_bytes(), &rsp[..]);
    }

    #[test]
    fn report_response_rejections() {
        let mut rsp = [0u8; REPORT_RESPONSE_SIZE];
        rsp[4..8].copy_from_slice(&0x4A0u32.to_le_bytes());
        assert_eq!(
            ReportResponse::parse(&rsp[..REPORT_RESPONSE_SIZE - 1]),
            Err(ParseError::ShortBuffer {
                need: 0x4C0,
                got: 0x4BF
            })
        );
        rsp[4..8].copy_from_slice(&0x400u32.to_le_bytes());
        assert_eq!(
            ReportResponse::parse(&rsp),
            Err(ParseError::SizeMismatch {
                size: 0x400,
                expected: 0x4A0
            })
        );
        // A firmware error status is not a parse error.
        rsp[0..4].copy_from_slice(&0x16u32.to_le_bytes());
        assert_eq!(ReportResponse::parse(&rsp).unwrap().status.get(), 0x16);
    }
}
