//! Attestation protocol (1) request blocks and output registers.
//!
//! RCX holds the GPA of a request block (58019, "SVSM_ATTEST_SERVICES" and
//! "SVSM_ATTEST_SINGLE_SERVICE"; Linux `struct svsm_attest_call`). Each buffer is
//! described by a GPA and a size; the spec gives the nonce a u16 size followed by six
//! reserved bytes (Linux writes a u32, which reads the same for sizes below 64 KiB).
//! Every reserved byte must be zero. The SVSM answers with the manifest, certificate and
//! report lengths in RCX, RDX and R8, on success and when a buffer was too small.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::ParseError;
use crate::manifest::Guid;

/// Size of the ATTEST_SERVICES request block.
pub const ATTEST_SERVICES_REQUEST_SIZE: usize = 0x40;
/// Size of the ATTEST_SINGLE_SERVICE request block.
pub const ATTEST_SINGLE_SERVICE_REQUEST_SIZE: usize = 0x58;
/// Size of an SNP attestation report, returned in R8.
pub const ATTESTATION_REPORT_SIZE: usize = 0x4A0;

/// ATTEST_SERVICES request block (58019, table "SVSM_ATTEST_SERVICES Call").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct AttestServicesRequestBlock {
    /// GPA of the report buffer.
    pub report_gpa: U64,
    /// Size of the report buffer.
    pub report_size: U32,
    /// Reserved, zero.
    pub reserved0: [u8; 4],
    /// GPA of the nonce.
    pub nonce_gpa: U64,
    /// Size of the nonce.
    pub nonce_size: U16,
    /// Reserved, zero.
    pub reserved1: [u8; 6],
    /// GPA of the manifest buffer.
    pub manifest_gpa: U64,
    /// Size of the manifest buffer.
    pub manifest_size: U32,
    /// Reserved, zero.
    pub reserved2: [u8; 4],
    /// GPA of the certificate buffer.
    pub cert_gpa: U64,
    /// Size of the certificate buffer.
    pub cert_size: U32,
    /// Reserved, zero.
    pub reserved3: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<AttestServicesRequestBlock>() == 0x40);
const _: () = assert!(core::mem::offset_of!(AttestServicesRequestBlock, report_gpa) == 0x00);
const _: () = assert!(core::mem::offset_of!(AttestServicesRequestBlock, report_size) == 0x08);
const _: () = assert!(core::mem::offset_of!(AttestServicesRequestBlock, nonce_gpa) == 0x10);
const _: () = assert!(core::mem::offset_of!(AttestServicesRequestBlock, nonce_size) == 0x18);
const _: () = assert!(core::mem::offset_of!(AttestServicesRequestBlock, reserved1) == 0x1A);
const _: () = assert!(core::mem::offset_of!(AttestServicesRequestBlock, manifest_gpa) == 0x20);
const _: () = assert!(core::mem::offset_of!(AttestServicesRequestBlock, manifest_size) == 0x28);
const _: () = assert!(core::mem::offset_of!(AttestServicesRequestBlock, cert_gpa) == 0x30);
const _: () = assert!(core::mem::offset_of!(AttestServicesRequestBlock, cert_size) == 0x38);

/// ATTEST_SINGLE_SERVICE request block (58019, table "SVSM_ATTEST_SINGLE_SERVICE Call"):
/// the ATTEST_SERVICES block, then the service GUID and manifest version.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct AttestSingleServiceRequestBlock {
    /// The common part.
    pub common: AttestServicesRequestBlock,
    /// GUID of the service to attest.
    pub guid: Guid,
    /// Manifest version requested.
    pub manifest_version: U32,
    /// Reserved, zero.
    pub reserved: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<AttestSingleServiceRequestBlock>() == 0x58);
const _: () = assert!(core::mem::offset_of!(AttestSingleServiceRequestBlock, guid) == 0x40);
const _: () =
    assert!(core::mem::offset_of!(AttestSingleServiceRequestBlock, manifest_version) == 0x50);
const _: () = assert!(core::mem::offset_of!(AttestSingleServiceRequestBlock, reserved) == 0x54);

/// A guest buffer named by a request block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestBuffer {
    /// Guest physical address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u32,
}

/// The service selected by ATTEST_SINGLE_SERVICE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSelector {
    /// Service GUID.
    pub guid: Guid,
    /// Manifest version.
    pub manifest_version: u32,
}

/// A parsed attestation request (either call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttestRequest {
    /// Where the report goes.
    pub report: GuestBuffer,
    /// The nonce to bind into REPORT_DATA.
    pub nonce: GuestBuffer,
    /// Where the manifest goes.
    pub manifest: GuestBuffer,
    /// Where the certificates go (size 0: none wanted).
    pub certificates: GuestBuffer,
    /// `Some` for ATTEST_SINGLE_SERVICE.
    pub service: Option<ServiceSelector>,
}

fn check_zero(bytes: &[u8], base: usize) -> Result<(), ParseError> {
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => Err(ParseError::ReservedBytes { offset: base + i }),
        None => Ok(()),
    }
}

impl AttestServicesRequestBlock {
    fn check_reserved(&self) -> Result<(), ParseError> {
        check_zero(&self.reserved0, 0x0C)?;
        check_zero(&self.reserved1, 0x1A)?;
        check_zero(&self.reserved2, 0x2C)?;
        check_zero(&self.reserved3, 0x3C)
    }

    fn to_request(self, service: Option<ServiceSelector>) -> AttestRequest {
        AttestRequest {
            report: GuestBuffer {
                gpa: self.report_gpa.get(),
                size: self.report_size.get(),
            },
            nonce: GuestBuffer {
                gpa: self.nonce_gpa.get(),
                size: self.nonce_size.get().into(),
            },
            manifest: GuestBuffer {
                gpa: self.manifest_gpa.get(),
                size: self.manifest_size.get(),
            },
            certificates: GuestBuffer {
                gpa: self.cert_gpa.get(),
                size: self.cert_size.get(),
            },
            service,
        }
    }
}

impl AttestRequest {
    /// Parses an ATTEST_SERVICES request block (0x40 bytes, copied out of guest memory).
    pub fn parse_services(bytes: &[u8]) -> Result<Self, ParseError> {
        let (block, _) = AttestServicesRequestBlock::read_from_prefix(bytes).map_err(|_| {
            ParseError::ShortBuffer {
                need: ATTEST_SERVICES_REQUEST_SIZE,
                got: bytes.len(),
            }
        })?;
        block.check_reserved()?;
        Ok(block.to_request(None))
    }

    /// Parses an ATTEST_SINGLE_SERVICE request block (0x58 bytes).
    pub fn parse_single_service(bytes: &[u8]) -> Result<Self, ParseError> {
        let (block, _) =
            AttestSingleServiceRequestBlock::read_from_prefix(bytes).map_err(|_| {
                ParseError::ShortBuffer {
                    need: ATTEST_SINGLE_SERVICE_REQUEST_SIZE,
                    got: bytes.len(),
                }
            })?;
        block.common.check_reserved()?;
        check_zero(&block.reserved, 0x54)?;
        Ok(block.common.to_request(Some(ServiceSelector {
            guid: block.guid,
            manifest_version: block.manifest_version.get(),
        })))
    }

    /// Encodes the request block a guest writes (0x40 or 0x58 bytes) into `out`; returns
    /// its length. Nonce sizes above u16::MAX are not representable.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ParseError> {
        let nonce_size = u16::try_from(self.nonce.size).map_err(|_| ParseError::SizeTooLarge {
            size: self.nonce.size as usize,
            max: u16::MAX.into(),
        })?;
        let common = AttestServicesRequestBlock {
            report_gpa: U64::new(self.report.gpa),
            report_size: U32::new(self.report.size),
            reserved0: [0; 4],
            nonce_gpa: U64::new(self.nonce.gpa),
            nonce_size: U16::new(nonce_size),
            reserved1: [0; 6],
            manifest_gpa: U64::new(self.manifest.gpa),
            manifest_size: U32::new(self.manifest.size),
            reserved2: [0; 4],
            cert_gpa: U64::new(self.certificates.gpa),
            cert_size: U32::new(self.certificates.size),
            reserved3: [0; 4],
        };
        let got = out.len();
        match self.service {
            None => {
                let need = ATTEST_SERVICES_REQUEST_SIZE;
                common
                    .write_to_prefix(out)
                    .map_err(|_| ParseError::OutputTooSmall { need, got })?;
                Ok(need)
            }
            Some(service) => {
                let need = ATTEST_SINGLE_SERVICE_REQUEST_SIZE;
                AttestSingleServiceRequestBlock {
                    common,
                    guid: service.guid,
                    manifest_version: U32::new(service.manifest_version),
                    reserved: [0; 4],
                }
                .write_to_prefix(out)
                .map_err(|_| ParseError::OutputTooSmall { need, got })?;
                Ok(need)
            }
        }
    }
}

/// The output registers of both attestation calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttestResponse {
    /// Manifest length (RCX).
    pub manifest_size: u64,
    /// Certificate length (RDX).
    pub cert_size: u64,
    /// Report length (R8), [`ATTESTATION_REPORT_SIZE`].
    pub report_size: u64,
}

impl AttestResponse {
    /// (RCX, RDX, R8).
    pub const fn to_regs(self) -> (u64, u64, u64) {
        (self.manifest_size, self.cert_size, self.report_size)
    }

    /// From (RCX, RDX, R8).
    pub const fn from_regs(rcx: u64, rdx: u64, r8: u64) -> Self {
        Self {
            manifest_size: rcx,
            cert_size: rdx,
            report_size: r8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::VTPM_SERVICE_GUID;

    fn sample() -> AttestRequest {
        AttestRequest {
            report: GuestBuffer {
                gpa: 0x1_0000_1000,
                size: 0x1000,
            },
            nonce: GuestBuffer {
                gpa: 0x2000,
                size: 64,
            },
            manifest: GuestBuffer {
                gpa: 0x3000,
                size: 0x1000,
            },
            certificates: GuestBuffer {
                gpa: 0x4000,
                size: 0x4000,
            },
            service: None,
        }
    }

    #[test]
    fn services_block_at_spec_offsets() {
        let mut b = [0u8; 0x40];
        b[0x00..0x08].copy_from_slice(&0x1_0000_1000u64.to_le_bytes());
        b[0x08..0x0C].copy_from_slice(&0x1000u32.to_le_bytes());
        b[0x10..0x18].copy_from_slice(&0x2000u64.to_le_bytes());
        b[0x18..0x1A].copy_from_slice(&64u16.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&0x3000u64.to_le_bytes());
        b[0x28..0x2C].copy_from_slice(&0x1000u32.to_le_bytes());
        b[0x30..0x38].copy_from_slice(&0x4000u64.to_le_bytes());
        b[0x38..0x3C].copy_from_slice(&0x4000u32.to_le_bytes());
        assert_eq!(AttestRequest::parse_services(&b), Ok(sample()));
    }

    #[test]
    fn linux_u32_nonce_size_reads_the_same() {
        let mut b = [0u8; 0x40];
        sample().encode(&mut b).unwrap();
        // Linux's svsm_loc_entry: u32 len then 4 reserved bytes. For 64 the upper half
        // of the u32 is zero, so the u16 + 6 zero bytes reading accepts it.
        b[0x18..0x1C].copy_from_slice(&64u32.to_le_bytes());
        assert_eq!(AttestRequest::parse_services(&b).unwrap().nonce.size, 64);
        // A size of 64 KiB or more sets byte 0x1A, a reserved byte.
        b[0x18..0x1C].copy_from_slice(&0x1_0000u32.to_le_bytes());
        assert_eq!(
            AttestRequest::parse_services(&b),
            Err(ParseError::ReservedBytes { offset: 0x1A })
        );
    }

    #[test]
    fn services_round_trip() {
        let mut out = [0u8; 0x80];
        assert_eq!(sample().encode(&mut out), Ok(0x40));
        assert_eq!(AttestRequest::parse_services(&out), Ok(sample()));
    }

    #[test]
    fn single_service_round_trip() {
        let mut req = sample();
        req.service = Some(ServiceSelector {
            guid: VTPM_SERVICE_GUID,
            manifest_version: 0,
        });
        let mut out = [0u8; 0x58];
        assert_eq!(req.encode(&mut out), Ok(0x58));
        assert_eq!(&out[0x40..0x50], &VTPM_SERVICE_GUID.to_bytes());
        assert_eq!(AttestRequest::parse_single_service(&out), Ok(req));
    }

    #[test]
    fn each_reserved_byte_is_checked() {
        let mut base = [0u8; 0x58];
        let mut req = sample();
        req.service = Some(ServiceSelector {
            guid: VTPM_SERVICE_GUID,
            manifest_version: 7,
        });
        req.encode(&mut base).unwrap();
        let reserved = (0x0C..0x10)
            .chain(0x1A..0x20)
            .chain(0x2C..0x30)
            .chain(0x3C..0x40)
            .chain(0x54..0x58);
        for offset in reserved {
            let mut b = base;
            b[offset] = 1;
            assert_eq!(
                AttestRequest::parse_single_service(&b),
                Err(ParseError::ReservedBytes { offset })
            );
            if offset < 0x40 {
                assert_eq!(
                    AttestRequest::parse_services(&b[..0x40]),
                    Err(ParseError::ReservedBytes { offset })
                );
            }
        }
    }

    #[test]
    fn short_blocks_are_rejected() {
        let b = [0u8; 0x57];
        assert_eq!(
            AttestRequest::parse_services(&b[..0x3F]),
            Err(ParseError::ShortBuffer {
                need: 0x40,
                got: 0x3F
            })
        );
        assert_eq!(
            AttestRequest::parse_single_service(&b),
            Err(ParseError::ShortBuffer {
                need: 0x58,
                got: 0x57
            })
        );
    }

    #[test]
    fn encode_rejections() {
        let mut out = [0u8; 0x3F];
        assert_eq!(
            sample().encode(&mut out),
            Err(ParseError::OutputTooSmall {
                need: 0x40,
                got: 0x3F
            })
        );
        let mut req = sample();
        req.nonce.size = 0x1_0000;
        let mut out = [0u8; 0x40];
        assert_eq!(
            req.encode(&mut out),
            Err(ParseError::SizeTooLarge {
                size: 0x1_0000,
                max: 0xFFFF
            })
        );
    }

    #[test]
    fn output_registers() {
        let r = AttestResponse {
            manifest_size: 100,
            cert_size: 0,
            report_size: ATTESTATION_REPORT_SIZE as u64,
        };
        assert_eq!(r.to_regs(), (100, 0, 0x4A0));
        assert_eq!(AttestResponse::from_regs(100, 0, 0x4A0), r);
    }
}
