//! The TPM 2.0 structures a verifier reads: TPMT_PUBLIC (EK, AK), TPMS_ATTEST (quote),
//! TPMT_SIGNATURE, and object names.
//!
//! Encodings: TPM 2.0 Library, Part 2 (Structures), big-endian throughout. Only what an
//! attestation needs is decoded; anything else is refused with a reason rather than
//! guessed at.

use rsa::pkcs1v15;
use rsa::signature::hazmat::PrehashVerifier;
use rsa::{pss, BoxedUint};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::Error;

/// TPM_ALG_RSA.
pub const ALG_RSA: u16 = 0x0001;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000B;
/// TPM_ALG_SHA384.
pub const ALG_SHA384: u16 = 0x000C;
/// TPM_ALG_SHA512.
pub const ALG_SHA512: u16 = 0x000D;
/// TPM_ALG_NULL.
pub const ALG_NULL: u16 = 0x0010;
/// TPM_ALG_AES.
pub const ALG_AES: u16 = 0x0006;
/// TPM_ALG_CFB.
pub const ALG_CFB: u16 = 0x0043;
/// TPM_ALG_RSASSA.
pub const ALG_RSASSA: u16 = 0x0014;
/// TPM_ALG_RSAPSS.
pub const ALG_RSAPSS: u16 = 0x0016;
/// TPM_ALG_OAEP.
pub const ALG_OAEP: u16 = 0x0017;
/// TPM_ALG_ECC.
pub const ALG_ECC: u16 = 0x0023;
/// TPM_ALG_ECDSA.
pub const ALG_ECDSA: u16 = 0x0018;
/// TPM_ECC_NIST_P256.
pub const ECC_NIST_P256: u16 = 0x0003;
/// TPM_ECC_NIST_P384.
pub const ECC_NIST_P384: u16 = 0x0004;
/// TPM_GENERATED_VALUE: the magic of every TPMS_ATTEST the TPM makes.
pub const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;

/// Largest PCR selection bitmap a quote may carry: 256 PCRs, the most a u8 index names.
pub const MAX_PCR_SELECT: usize = 32;

/// TPMA_OBJECT bits.
pub mod attr {
    /// fixedTPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// fixedParent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// adminWithPolicy.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// restricted.
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt.
    pub const DECRYPT: u32 = 1 << 17;
    /// sign / encrypt.
    pub const SIGN: u32 = 1 << 18;
}

/// A big-endian cursor that fails with a named reason instead of panicking.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `data`, naming `what` in errors.
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, pos: 0, what }
    }
    /// Takes `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(Error::TpmFormat(self.what))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    /// A u8.
    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.bytes(1)?[0])
    }
    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, Error> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, Error> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64, Error> {
        let mut v = [0u8; 8];
        v.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_be_bytes(v))
    }
    /// A TPM2B: u16 size and that many bytes.
    pub fn tpm2b(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }
    /// Fails unless everything was read.
    pub fn finish(&self) -> Result<(), Error> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(Error::TpmFormat(self.what))
        }
    }
}

/// Digest of `data` with a TPM hash algorithm.
pub fn hash(alg: u16, data: &[&[u8]]) -> Result<Vec<u8>, Error> {
    fn run<D: Digest>(data: &[&[u8]]) -> Vec<u8> {
        let mut h = D::new();
        for d in data {
            h.update(d);
        }
        h.finalize().to_vec()
    }
    match alg {
        ALG_SHA256 => Ok(run::<Sha256>(data)),
        ALG_SHA384 => Ok(run::<Sha384>(data)),
        ALG_SHA512 => Ok(run::<Sha512>(data)),
        _ => Err(Error::TpmFormat("unsupported hash algorithm")),
    }
}

/// Digest size of a TPM hash algorithm.
pub fn digest_size(alg: u16) -> Result<usize, Error> {
    match alg {
        ALG_SHA256 => Ok(32),
        ALG_SHA384 => Ok(48),
        ALG_SHA512 => Ok(64),
        _ => Err(Error::TpmFormat("unsupported hash algorithm")),
    }
}

/// The parts of a TPMT_PUBLIC an attestation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// The exact marshalled TPMT_PUBLIC (the name is computed over it).
    pub bytes: Vec<u8>,
    /// TPM_ALG_RSA or TPM_ALG_ECC.
    pub kind: u16,
    /// The name algorithm.
    pub name_alg: u16,
    /// TPMA_OBJECT.
    pub attributes: u32,
    /// Symmetric algorithm of a storage key (AES for the EK) or TPM_ALG_NULL.
    pub symmetric: u16,
    /// Its key size in bits.
    pub symmetric_bits: u16,
    /// Its mode (CFB for the EK).
    pub symmetric_mode: u16,
    /// For RSA: the modulus (big-endian) and exponent.
    pub rsa: Option<(Vec<u8>, u32)>,
    /// For ECC: the curve and the point's x and y (big-endian).
    pub ecc: Option<(u16, Vec<u8>, Vec<u8>)>,
}

impl Public {
    /// Parses a TPMT_PUBLIC; a TPM2B_PUBLIC (with its size prefix, as tpm2-tools writes
    /// it) is accepted too.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let bytes = match bytes {
            [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => {
                rest
            }
            _ => bytes,
        };
        let mut r = Reader::new(bytes, "TPMT_PUBLIC");
        let kind = r.u16()?;
        let name_alg = r.u16()?;
        digest_size(name_alg)?;
        let attributes = r.u32()?;
        let _auth_policy = r.tpm2b()?;
        let symmetric = r.u16()?;
        let (symmetric_bits, symmetric_mode) = if symmetric == ALG_NULL {
            (0, ALG_NULL)
        } else {
            (r.u16()?, r.u16()?)
        };
        let mut ecc = None;
        let rsa = match kind {
            ALG_RSA => {
                let scheme = r.u16()?;
                // RSAES and NULL carry no details; every other RSA scheme names a hash.
                if scheme != ALG_NULL && scheme != 0x0015 {
                    r.u16()?;
                }
                let _bits = r.u16()?;
                let exponent = match r.u32()? {
                    0 => 65537,
                    e => e,
                };
                let modulus = r.tpm2b()?.to_vec();
                Some((modulus, exponent))
            }
            ALG_ECC => {
                let scheme = r.u16()?;
                if scheme != ALG_NULL {
                    r.u16()?;
                    if scheme == 0x001A {
                        // ECDAA carries a count.
                        r.u16()?;
                    }
                }
                let curve = r.u16()?;
                if r.u16()? != ALG_NULL {
                    r.u16()?;
                }
                let x = r.tpm2b()?.to_vec();
                let y = r.tpm2b()?.to_vec();
                ecc = Some((curve, x, y));
                None
            }
            _ => return Err(Error::TpmFormat("TPMT_PUBLIC of an unsupported type")),
        };
        r.finish()?;
        Ok(Public {
            bytes: bytes.to_vec(),
            kind,
            name_alg,
            attributes,
            symmetric,
            symmetric_bits,
            symmetric_mode,
            rsa,
            ecc,
        })
    }

    /// The object's name: nameAlg || H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Result<Vec<u8>, Error> {
        let mut name = self.name_alg.to_be_bytes().to_vec();
        name.extend(hash(self.name_alg, &[&self.bytes])?);
        Ok(name)
    }

    /// Checks that this is shaped like a TCG default endorsement key (EK Credential
    /// Profile templates L-1 and L-2, and the high-range ones of the same key types): a
    /// restricted decryption key created by the TPM, administered by policy, AES-CFB
    /// (128 or 256 bits) for its children, and an RSA-2048 modulus or a NIST P-256/P-384
    /// point of the curve's size. The fixed sizes also keep any other data from hiding in
    /// the key's public value.
    pub fn check_endorsement_key(&self) -> Result<(), Error> {
        let required = attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::ADMIN_WITH_POLICY
            | attr::RESTRICTED
            | attr::DECRYPT;
        if self.attributes & required != required || self.attributes & attr::SIGN != 0 {
            return Err(Error::EkShape(
                "not a restricted, fixedTPM, policy-administered decryption key",
            ));
        }
        let aes_cfb = self.symmetric == ALG_AES
            && self.symmetric_mode == ALG_CFB
            && matches!(self.symmetric_bits, 128 | 256);
        if !aes_cfb {
            return Err(Error::EkShape(
                "symmetric definition is not AES-128-CFB or AES-256-CFB",
            ));
        }
        match (&self.rsa, &self.ecc) {
            (Some((modulus, _)), None) if modulus.len() == 256 => Ok(()),
            (Some(_), None) => Err(Error::EkShape("RSA modulus is not 2048 bits")),
            (None, Some((curve, x, y))) => {
                let size = match *curve {
                    ECC_NIST_P256 => 32,
                    ECC_NIST_P384 => 48,
                    _ => return Err(Error::EkShape("ECC curve is not NIST P-256 or P-384")),
                };
                if x.len() == size && y.len() == size {
                    Ok(())
                } else {
                    Err(Error::EkShape("ECC point is not of the curve's size"))
                }
            }
            _ => Err(Error::EkShape("neither an RSA nor an ECC key")),
        }
    }

    /// The RSA public key, if this is an RSA object.
    pub fn rsa_key(&self) -> Result<rsa::PublicKey, Error> {
        let (modulus, exponent) = self
            .rsa
            .as_ref()
            .ok_or(Error::TpmFormat("not an RSA key"))?;
        let n = BoxedUint::from_be_slice_vartime(modulus);
        let e = BoxedUint::from(u64::from(*exponent));
        rsa::PublicKey::new(n, e).map_err(|_| Error::TpmFormat("unusable RSA public key"))
    }
}

/// A TPMT_SIGNATURE by an RSA key (RSASSA, RSAPSS) or an ECC key (ECDSA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// TPM_ALG_RSASSA, TPM_ALG_RSAPSS or TPM_ALG_ECDSA.
    pub scheme: u16,
    /// The hash algorithm that was signed with.
    pub hash_alg: u16,
    /// The RSA signature, or ECDSA's r followed by s (each as the TPM sent it).
    pub sig: Vec<u8>,
    /// For ECDSA: the length of r within `sig`.
    r_len: usize,
}

impl Signature {
    /// Parses a TPMT_SIGNATURE.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes, "TPMT_SIGNATURE");
        let scheme = r.u16()?;
        let hash_alg = r.u16()?;
        let (sig, r_len) = match scheme {
            ALG_RSASSA | ALG_RSAPSS => (r.tpm2b()?.to_vec(), 0),
            ALG_ECDSA => {
                let sig_r = r.tpm2b()?;
                let sig_s = r.tpm2b()?;
                ([sig_r, sig_s].concat(), sig_r.len())
            }
            _ => {
                return Err(Error::TpmFormat(
                    "signature scheme is not RSASSA, RSAPSS or ECDSA",
                ))
            }
        };
        r.finish()?;
        Ok(Signature {
            scheme,
            hash_alg,
            sig,
            r_len,
        })
    }

    /// Checks this signature over `message` with `key`.
    pub fn verify(&self, key: &Public, message: &[u8]) -> Result<(), Error> {
        let digest = hash(self.hash_alg, &[message])?;
        let ok = match self.scheme {
            ALG_ECDSA => self.verify_ecdsa(key, &digest)?,
            _ => {
                let pk = key.rsa_key()?;
                match (self.scheme, self.hash_alg) {
                    (ALG_RSASSA, ALG_SHA256) => verify_pkcs1::<Sha256>(pk, &digest, &self.sig),
                    (ALG_RSASSA, ALG_SHA384) => verify_pkcs1::<Sha384>(pk, &digest, &self.sig),
                    (ALG_RSAPSS, ALG_SHA256) => verify_pss::<Sha256>(pk, &digest, &self.sig),
                    (ALG_RSAPSS, ALG_SHA384) => verify_pss::<Sha384>(pk, &digest, &self.sig),
                    _ => return Err(Error::TpmFormat("unsupported signature hash")),
                }
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::QuoteSignature)
        }
    }

    /// ECDSA over `digest` with a P-256 or P-384 key.
    fn verify_ecdsa(&self, key: &Public, digest: &[u8]) -> Result<bool, Error> {
        let (curve, x, y) = key
            .ecc
            .as_ref()
            .ok_or(Error::TpmFormat("an ECDSA signature from a non-ECC key"))?;
        let (sig_r, sig_s) = self.sig.split_at(self.r_len);
        match *curve {
            ECC_NIST_P256 => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier;
                let point = sec1_point::<32>(x, y)?;
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|_| Error::TpmFormat("ECC key is not a P-256 point"))?;
                let Ok(sig) = p256::ecdsa::Signature::from_scalars(
                    left_pad::<32>(sig_r)?,
                    left_pad::<32>(sig_s)?,
                ) else {
                    return Ok(false);
                };
                Ok(key.verify_prehash(digest, &sig).is_ok())
            }
            ECC_NIST_P384 => {
                use p384::ecdsa::signature::hazmat::PrehashVerifier;
                let point = sec1_point::<48>(x, y)?;
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|_| Error::TpmFormat("ECC key is not a P-384 point"))?;
                let Ok(sig) = p384::ecdsa::Signature::from_scalars(
                    left_pad::<48>(sig_r)?,
                    left_pad::<48>(sig_s)?,
                ) else {
                    return Ok(false);
                };
                Ok(key.verify_prehash(digest, &sig).is_ok())
            }
            _ => Err(Error::TpmFormat("ECC curve is not NIST P-256 or P-384")),
        }
    }
}

/// A big-endian integer of at most N bytes as exactly N bytes.
fn left_pad<const N: usize>(v: &[u8]) -> Result<[u8; N], Error> {
    if v.len() > N {
        return Err(Error::TpmFormat("ECC value longer than the curve's size"));
    }
    let mut out = [0u8; N];
    out[N - v.len()..].copy_from_slice(v);
    Ok(out)
}

/// The uncompressed SEC1 encoding 04 || x || y.
fn sec1_point<const N: usize>(x: &[u8], y: &[u8]) -> Result<Vec<u8>, Error> {
    let mut point = vec![0x04];
    point.extend_from_slice(&left_pad::<N>(x)?);
    point.extend_from_slice(&left_pad::<N>(y)?);
    Ok(point)
}

fn verify_pkcs1<D>(pk: rsa::PublicKey, digest: &[u8], sig: &[u8]) -> bool
where
    D: Digest + const_oid_bridge::AssociatedOid,
{
    let key = pkcs1v15::VerifyingKey::<D>::new(pk);
    pkcs1v15::Signature::try_from(sig)
        .map(|s| key.verify_prehash(digest, &s).is_ok())
        .unwrap_or(false)
}

fn verify_pss<D>(pk: rsa::PublicKey, digest: &[u8], sig: &[u8]) -> bool
where
    D: Digest + digest_bridge::FixedOutputReset,
{
    // TPMs differ in the salt they use (digest size, or the largest that fits).
    let key = pss::VerifyingKey::<D>::new_with_auto_salt_len(pk);
    pss::Signature::try_from(sig)
        .map(|s| key.verify_prehash(digest, &s).is_ok())
        .unwrap_or(false)
}

mod const_oid_bridge {
    pub use rsa::pkcs8::spki::der::oid::AssociatedOid;
}
mod digest_bridge {
    pub use sha2::digest::FixedOutputReset;
}

/// A PCR selection: one bank and the PCR indices selected in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's hash algorithm.
    pub hash_alg: u16,
    /// Selected PCR indices in ascending order.
    pub pcrs: Vec<u8>,
}

/// The parts of a TPMS_ATTEST for a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The exact marshalled TPMS_ATTEST (what was signed).
    pub bytes: Vec<u8>,
    /// The signer's qualified name.
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (the verifier's nonce).
    pub extra_data: Vec<u8>,
    /// TPMS_CLOCK_INFO.clock.
    pub clock: u64,
    /// TPMS_CLOCK_INFO.resetCount.
    pub reset_count: u32,
    /// TPMS_CLOCK_INFO.restartCount.
    pub restart_count: u32,
    /// The PCR banks and indices quoted.
    pub selection: Vec<PcrSelection>,
    /// The digest of the selected PCR values.
    pub pcr_digest: Vec<u8>,
}

impl Quote {
    /// Parses a TPMS_ATTEST of type quote. A TPM2B_ATTEST (with size prefix) is accepted.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let bytes = match bytes {
            [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => {
                rest
            }
            _ => bytes,
        };
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        if r.u32()? != TPM_GENERATED_VALUE {
            return Err(Error::TpmFormat("TPMS_ATTEST without TPM_GENERATED_VALUE"));
        }
        if r.u16()? != ST_ATTEST_QUOTE {
            return Err(Error::TpmFormat("TPMS_ATTEST is not a quote"));
        }
        let qualified_signer = r.tpm2b()?.to_vec();
        let extra_data = r.tpm2b()?.to_vec();
        let clock = r.u64()?;
        let reset_count = r.u32()?;
        let restart_count = r.u32()?;
        let _safe = r.u8()?;
        let _firmware = r.u64()?;
        let count = r.u32()?;
        if count > 16 {
            return Err(Error::TpmFormat("too many PCR banks"));
        }
        let mut selection = Vec::new();
        for _ in 0..count {
            let hash_alg = r.u16()?;
            let size = r.u8()?;
            // PCR indices are u8: a bitmap of more than 32 bytes names PCRs that cannot
            // exist (a TPM's own bitmap is PCR_SELECT_MAX bytes, 3 for 24 PCRs).
            if usize::from(size) > MAX_PCR_SELECT {
                return Err(Error::TpmFormat(
                    "PCR selection bitmap longer than 32 bytes",
                ));
            }
            let bitmap = r.bytes(usize::from(size))?;
            let pcrs = bitmap
                .iter()
                .enumerate()
                .flat_map(|(i, byte)| {
                    (0..8u8)
                        .filter(move |bit| byte & (1 << bit) != 0)
                        .map(move |bit| (i * 8) as u8 + bit)
                })
                .collect();
            selection.push(PcrSelection { hash_alg, pcrs });
        }
        let pcr_digest = r.tpm2b()?.to_vec();
        r.finish()?;
        Ok(Quote {
            bytes: bytes.to_vec(),
            qualified_signer,
            extra_data,
            clock,
            reset_count,
            restart_count,
            selection,
            pcr_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_fails_instead_of_panicking() {
        let mut r = Reader::new(&[0, 5, 1, 2], "x");
        assert_eq!(r.tpm2b(), Err(Error::TpmFormat("x")));
        assert!(Public::parse(&[]).is_err());
        assert!(Quote::parse(&[0xff, 0x54, 0x43, 0x47, 0x80, 0x18]).is_err());
        assert!(Signature::parse(&[0, 0x14, 0, 0x0b, 0, 4, 1]).is_err());
    }

    fn ek_like(rsa_len: Option<usize>, ecc: Option<(u16, usize)>) -> Public {
        Public {
            bytes: Vec::new(),
            kind: if rsa_len.is_some() { ALG_RSA } else { ALG_ECC },
            name_alg: ALG_SHA256,
            // Template L-1/L-2: fixedTPM, fixedParent, sensitiveDataOrigin,
            // adminWithPolicy, restricted, decrypt.
            attributes: 0x000300B2,
            symmetric: ALG_AES,
            symmetric_bits: 128,
            symmetric_mode: ALG_CFB,
            rsa: rsa_len.map(|n| (vec![0xC5; n], 65537)),
            ecc: ecc.map(|(curve, n)| (curve, vec![1; n], vec![2; n])),
        }
    }

    #[test]
    fn endorsement_key_shapes() {
        assert_eq!(ek_like(Some(256), None).check_endorsement_key(), Ok(()));
        assert_eq!(
            ek_like(None, Some((ECC_NIST_P256, 32))).check_endorsement_key(),
            Ok(())
        );
        assert_eq!(
            ek_like(None, Some((ECC_NIST_P384, 48))).check_endorsement_key(),
            Ok(())
        );
        let refused = |ek: Public| ek.check_endorsement_key().unwrap_err();
        // A modulus longer than 2048 bits could carry other data.
        assert_eq!(
            refused(ek_like(Some(384), None)),
            Error::EkShape("RSA modulus is not 2048 bits")
        );
        assert!(matches!(
            refused(ek_like(None, Some((ECC_NIST_P256, 40)))),
            Error::EkShape(_)
        ));
        assert!(matches!(
            refused(ek_like(None, Some((0x0005, 66)))),
            Error::EkShape(_)
        ));
        let mut signing = ek_like(Some(256), None);
        signing.attributes |= attr::SIGN;
        assert!(matches!(refused(signing), Error::EkShape(_)));
        let mut unrestricted = ek_like(Some(256), None);
        unrestricted.attributes &= !attr::RESTRICTED;
        assert!(matches!(refused(unrestricted), Error::EkShape(_)));
        let mut no_symmetric = ek_like(Some(256), None);
        no_symmetric.symmetric = ALG_NULL;
        assert!(matches!(refused(no_symmetric), Error::EkShape(_)));
    }

    /// A TPMS_ATTEST quote with one SHA-256 bank whose bitmap is `bitmap`.
    fn quote_with_bitmap(bitmap: &[u8]) -> Vec<u8> {
        let mut q = TPM_GENERATED_VALUE.to_be_bytes().to_vec();
        q.extend_from_slice(&ST_ATTEST_QUOTE.to_be_bytes());
        q.extend_from_slice(&[0, 0]); // qualifiedSigner
        q.extend_from_slice(&[0, 1, 0xAA]); // extraData
        q.extend_from_slice(&[0; 8 + 4 + 4 + 1]); // clockInfo
        q.extend_from_slice(&[0; 8]); // firmwareVersion
        q.extend_from_slice(&1u32.to_be_bytes());
        q.extend_from_slice(&ALG_SHA256.to_be_bytes());
        q.push(bitmap.len() as u8);
        q.extend_from_slice(bitmap);
        q.extend_from_slice(&[0, 0]); // pcrDigest
        q
    }

    #[test]
    fn an_oversized_pcr_bitmap_is_refused_not_wrapped() {
        // 33 bytes with bit 0 of byte 32 set would name PCR 256, which a u8 index would
        // wrap to PCR 0 (and overflow-check builds panic on).
        let mut bitmap = [0u8; 33];
        bitmap[32] = 1;
        assert_eq!(
            Quote::parse(&quote_with_bitmap(&bitmap)),
            Err(Error::TpmFormat(
                "PCR selection bitmap longer than 32 bytes"
            ))
        );
        let mut bitmap = [0u8; 255];
        bitmap[254] = 0x80;
        assert!(Quote::parse(&quote_with_bitmap(&bitmap)).is_err());
        // The largest legal bitmap still names PCR 255.
        let mut bitmap = [0u8; 32];
        bitmap[0] = 1;
        bitmap[31] = 0x80;
        let q = Quote::parse(&quote_with_bitmap(&bitmap)).unwrap();
        assert_eq!(q.selection[0].pcrs, [0, 255]);
        assert_eq!(q.extra_data, [0xAA]);
    }
}
