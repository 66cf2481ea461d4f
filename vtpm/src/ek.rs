//! The endorsement key templates of the TCG EK Credential Profile for TPM 2.0
//! (version 2.5, section B.3.3, "Template L-1" and "Template L-2").
//!
//! Both are TPMT_PUBLIC in wire form (big-endian, no TPM2B size prefix): a restricted
//! decryption key in the endorsement hierarchy, fixed to this TPM, whose use needs
//! policy A (PolicySecret with the endorsement authorization), with AES-128-CFB as the
//! symmetric algorithm for its children and an all-zero `unique` field of the size the
//! profile fixes (256 bytes for RSA-2048, two 32-byte coordinates for P-256). tpm2-tools
//! (`tpm2_createek`) and tpm2-tss build the same bytes, which the end-to-end tests check.

use alloc::vec::Vec;

/// Policy A, SHA-256: TPM2_PolicySecret(TPM_RH_ENDORSEMENT) from an empty policy
/// (profile section B.3.3, Table 3). A unit test recomputes it.
pub const POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// TPMA_OBJECT of both templates: fixedTPM, fixedParent, sensitiveDataOrigin,
/// adminWithPolicy, restricted, decrypt.
pub const EK_ATTRIBUTES: u32 = 0x0003_00B2;

const ALG_RSA: u16 = 0x0001;
const ALG_ECC: u16 = 0x0023;
const ALG_SHA256: u16 = 0x000B;
const ALG_AES: u16 = 0x0006;
const ALG_CFB: u16 = 0x0043;
const ALG_NULL: u16 = 0x0010;
const ECC_NIST_P256: u16 = 0x0003;

/// Which of the profile's default templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkTemplate {
    /// Template L-1: RSA-2048, SHA-256, AES-128-CFB, policy A.
    RsaL1,
    /// Template L-2: ECC NIST P-256, SHA-256, AES-128-CFB, policy A.
    EccL2,
}

impl EkTemplate {
    /// The template as a TPMT_PUBLIC in wire form.
    pub fn public_template(self) -> Vec<u8> {
        let mut t = Vec::with_capacity(320);
        let (kind, unique_len) = match self {
            Self::RsaL1 => (ALG_RSA, 256),
            Self::EccL2 => (ALG_ECC, 32),
        };
        t.extend_from_slice(&kind.to_be_bytes());
        t.extend_from_slice(&ALG_SHA256.to_be_bytes());
        t.extend_from_slice(&EK_ATTRIBUTES.to_be_bytes());
        t.extend_from_slice(&32u16.to_be_bytes());
        t.extend_from_slice(&POLICY_A_SHA256);
        // TPMT_SYM_DEF_OBJECT: AES, 128 bits, CFB.
        for v in [ALG_AES, 128, ALG_CFB] {
            t.extend_from_slice(&v.to_be_bytes());
        }
        // The key's own scheme is NULL.
        t.extend_from_slice(&ALG_NULL.to_be_bytes());
        let zeros = [0u8; 256];
        match self {
            Self::RsaL1 => {
                t.extend_from_slice(&2048u16.to_be_bytes());
                // Exponent 0 means the default, 65537.
                t.extend_from_slice(&0u32.to_be_bytes());
                t.extend_from_slice(&(unique_len as u16).to_be_bytes());
                t.extend_from_slice(&zeros[..unique_len]);
            }
            Self::EccL2 => {
                t.extend_from_slice(&ECC_NIST_P256.to_be_bytes());
                // KDF scheme NULL.
                t.extend_from_slice(&ALG_NULL.to_be_bytes());
                for _ in 0..2 {
                    t.extend_from_slice(&(unique_len as u16).to_be_bytes());
                    t.extend_from_slice(&zeros[..unique_len]);
                }
            }
        }
        t
    }
}

/// The public key of an EK's TPMT_PUBLIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkPublic<'a> {
    /// RSA: the modulus (big-endian) and the exponent (65537 when the area says 0).
    Rsa {
        /// The modulus.
        modulus: &'a [u8],
        /// The public exponent.
        exponent: u32,
    },
    /// ECC NIST P-256: the point's coordinates.
    EccP256 {
        /// x, 32 bytes.
        x: &'a [u8],
        /// y, 32 bytes.
        y: &'a [u8],
    },
}

impl<'a> EkPublic<'a> {
    /// Reads the key out of a TPMT_PUBLIC of type RSA or ECC (TPM 2.0 Part 2,
    /// "TPMT_PUBLIC"); `None` for anything else or anything malformed.
    pub fn parse(public: &'a [u8]) -> Option<Self> {
        let mut r = Reader(public);
        let kind = r.u16()?;
        let _name_alg = r.u16()?;
        let _attributes = r.u32()?;
        r.sized()?;
        // TPMT_SYM_DEF_OBJECT: algorithm, then key bits and mode unless NULL.
        if r.u16()? != ALG_NULL {
            r.u16()?;
            r.u16()?;
        }
        // The scheme: algorithm, then its hash unless NULL.
        if r.u16()? != ALG_NULL {
            r.u16()?;
        }
        let key = match kind {
            ALG_RSA => {
                let _bits = r.u16()?;
                let exponent = match r.u32()? {
                    0 => 65537,
                    e => e,
                };
                let modulus = r.sized()?;
                Self::Rsa { modulus, exponent }
            }
            ALG_ECC => {
                if r.u16()? != ECC_NIST_P256 {
                    return None;
                }
                if r.u16()? != ALG_NULL {
                    r.u16()?;
                }
                let x = r.sized()?;
                let y = r.sized()?;
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                Self::EccP256 { x, y }
            }
            _ => return None,
        };
        r.0.is_empty().then_some(key)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn sized(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn policy_a_is_policy_secret_of_the_endorsement_hierarchy() {
        // TPM 2.0 Part 3, TPM2_PolicySecret: policyDigest' = H(H(0 || CC || authName) ||
        // policyRef), where the name of a permanent handle is the handle itself.
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(0x0000_0151u32.to_be_bytes());
        h.update(0x4000_000Bu32.to_be_bytes());
        let step = h.finalize();
        let digest = Sha256::digest(step);
        assert_eq!(digest.as_slice(), POLICY_A_SHA256);
    }

    #[test]
    fn ek_public_parse_reads_the_key_and_refuses_malformed_areas() {
        let rsa = EkTemplate::RsaL1.public_template();
        assert_eq!(
            EkPublic::parse(&rsa),
            Some(EkPublic::Rsa {
                modulus: &[0; 256],
                exponent: 65537
            })
        );
        let ecc = EkTemplate::EccL2.public_template();
        assert!(matches!(
            EkPublic::parse(&ecc),
            Some(EkPublic::EccP256 { .. })
        ));
        // Trailing bytes, a cut area, another curve.
        let mut long = rsa.clone();
        long.push(0);
        assert_eq!(EkPublic::parse(&long), None);
        assert_eq!(EkPublic::parse(&rsa[..rsa.len() - 1]), None);
        let mut p384 = ecc.clone();
        p384[50..52].copy_from_slice(&0x0004u16.to_be_bytes());
        assert_eq!(EkPublic::parse(&p384), None);
    }

    #[test]
    fn templates_have_the_profile_sizes() {
        let rsa = EkTemplate::RsaL1.public_template();
        // type, nameAlg, attributes, policy (2 + 32), sym (6), scheme, keyBits, exponent,
        // unique (2 + 256).
        assert_eq!(rsa.len(), 2 + 2 + 4 + 34 + 6 + 2 + 2 + 4 + 258);
        assert_eq!(&rsa[..8], &[0, 1, 0, 0x0B, 0, 3, 0, 0xB2]);
        let ecc = EkTemplate::EccL2.public_template();
        assert_eq!(ecc.len(), 2 + 2 + 4 + 34 + 6 + 2 + 2 + 2 + 34 + 34);
        assert_eq!(&ecc[..2], &[0, 0x23]);
    }
}
