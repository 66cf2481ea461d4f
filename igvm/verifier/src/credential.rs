//! The verifier's half of the credential challenge: TPM2_MakeCredential done in software.
//!
//! TPM 2.0 Library Part 1 §24 (Credential Protection) and Part 3 TPM2_MakeCredential: a
//! random seed is RSA-OAEP-encrypted to an RSA EK (hash = the EK's nameAlg, label
//! "IDENTITY\0"), or, for an ECC EK (Part 1 §C.6.4, "ECC Secret Sharing for
//! Credentials"), derived from one-pass ECDH with an ephemeral key on the EK's curve:
//! seed = KDFe(nameAlg, Z = x of (ephemeral secret × EK point), "IDENTITY", x of the
//! ephemeral point, x of the EK point, digest bits), the ephemeral point (TPMS_ECC_POINT)
//! being the encrypted secret; symKey = KDFa(nameAlg, seed, "STORAGE", AK name, -, EK symmetric key
//! bits); encIdentity = AES-CFB(symKey, IV 0, TPM2B(credential)); HMACkey = KDFa(nameAlg,
//! seed, "INTEGRITY", -, -, digest bits); outerHMAC = HMAC(HMACkey, encIdentity || AK
//! name). Only a TPM holding the EK's private key and a loaded object with that name can
//! return the credential through TPM2_ActivateCredential.

use aes::cipher::KeyIvInit;
use hmac::{Hmac, KeyInit, Mac};
use p256::elliptic_curve;
use rsa::oaep::EncryptingKey;
use rsa::rand_core::TryCryptoRng;
use rsa::traits::RandomizedEncryptor;
use sha2::{Sha256, Sha384};

use crate::tpm::{self, Public};
use crate::Error;

/// The label TPM2_MakeCredential uses for the seed (with its terminating zero).
const IDENTITY_LABEL: &[u8] = b"IDENTITY\0";

/// KDFa (TPM 2.0 Part 1 §11.4.10.2, SP 800-108 counter mode with HMAC): `bits` of key
/// material from `key`, `label` (a terminating zero is added), and two contexts.
pub fn kdfa(
    alg: u16,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, Error> {
    counter_kdf(bits, |counter| {
        let parts: [&[u8]; 6] = [
            &counter.to_be_bytes(),
            label,
            if label.last() == Some(&0) { &[] } else { &[0] },
            context_u,
            context_v,
            &bits.to_be_bytes(),
        ];
        hmac(alg, key, &parts)
    })
}

/// KDFe (TPM 2.0 Part 1 §11.4.10.3, SP 800-56A concatenation KDF): `bits` of key
/// material from the shared secret `z`, `label` (a terminating zero is added), and the two
/// parties' information. Hash(counter || Z || label || 0 || partyU || partyV), counter from 1.
pub fn kdfe(
    alg: u16,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, Error> {
    counter_kdf(bits, |counter| {
        let parts: [&[u8]; 6] = [
            &counter.to_be_bytes(),
            z,
            label,
            if label.last() == Some(&0) { &[] } else { &[0] },
            party_u,
            party_v,
        ];
        tpm::hash(alg, &parts)
    })
}

/// The counter loop both KDFs share: blocks for counter 1, 2, ... until `bits` are
/// covered, cut to whole bytes, and the excess high bits of the first byte cleared
/// (TPM 2.0 Part 1 §11.4.10).
fn counter_kdf(
    bits: u32,
    mut block: impl FnMut(u32) -> Result<Vec<u8>, Error>,
) -> Result<Vec<u8>, Error> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + 64);
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend(block(counter)?);
        counter += 1;
    }
    out.truncate(bytes);
    if bits % 8 != 0 {
        out[0] &= (1u8 << (bits % 8)) - 1;
    }
    Ok(out)
}

/// HMAC with a TPM hash algorithm over the concatenation of `parts`.
pub fn hmac(alg: u16, key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match alg {
        tpm::ALG_SHA256 => Ok(run::<Hmac<Sha256>>(key, parts)),
        tpm::ALG_SHA384 => Ok(run::<Hmac<Sha384>>(key, parts)),
        _ => Err(Error::TpmFormat(
            "unsupported name algorithm for the credential",
        )),
    }
}

/// What the vTPM receives: TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET, marshalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialBlob {
    /// TPM2B_ID_OBJECT (integrity HMAC and encrypted identity), with its size prefix.
    pub id_object: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET (the OAEP-encrypted seed), with its size prefix.
    pub encrypted_secret: Vec<u8>,
}

/// TPM2_MakeCredential for an RSA or ECC (NIST P-256, P-384) EK with an AES-CFB
/// symmetric definition.
pub fn make_credential<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    ek: &Public,
    ak_name: &[u8],
    credential: &[u8],
) -> Result<CredentialBlob, Error> {
    let name_alg = ek.name_alg;
    let digest_len = tpm::digest_size(name_alg)?;
    if credential.len() > digest_len || credential.is_empty() {
        return Err(Error::TpmFormat("credential must be 1..=digest-size bytes"));
    }
    if ek.symmetric != tpm::ALG_AES || ek.symmetric_mode != tpm::ALG_CFB {
        return Err(Error::TpmFormat("EK symmetric definition is not AES-CFB"));
    }
    let (seed, encrypted_seed) = match ek.kind {
        tpm::ALG_RSA => rsa_seed(rng, ek, digest_len)?,
        tpm::ALG_ECC => ecc_seed(rng, ek, digest_len)?,
        _ => return Err(Error::TpmFormat("EK is neither RSA nor ECC")),
    };

    let sym_bits = u32::from(ek.symmetric_bits);
    let sym_key = kdfa(name_alg, &seed, b"STORAGE", ak_name, &[], sym_bits)?;
    let mut enc_identity = (credential.len() as u16).to_be_bytes().to_vec();
    enc_identity.extend_from_slice(credential);
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;

    let hmac_key = kdfa(
        name_alg,
        &seed,
        b"INTEGRITY",
        &[],
        &[],
        digest_len as u32 * 8,
    )?;
    let outer_hmac = hmac(name_alg, &hmac_key, &[&enc_identity, ak_name])?;

    let mut id_object = Vec::new();
    let body_len = 2 + outer_hmac.len() + enc_identity.len();
    id_object.extend_from_slice(&(body_len as u16).to_be_bytes());
    id_object.extend_from_slice(&(outer_hmac.len() as u16).to_be_bytes());
    id_object.extend_from_slice(&outer_hmac);
    id_object.extend_from_slice(&enc_identity);

    let mut encrypted_secret = (encrypted_seed.len() as u16).to_be_bytes().to_vec();
    encrypted_secret.extend_from_slice(&encrypted_seed);
    Ok(CredentialBlob {
        id_object,
        encrypted_secret,
    })
}

/// A fresh seed and its RSA-OAEP encryption to the EK (the encrypted secret's body).
fn rsa_seed<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    ek: &Public,
    digest_len: usize,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut seed = vec![0u8; digest_len];
    rng.try_fill_bytes(&mut seed)
        .map_err(|_| Error::TpmFormat("no randomness for the seed"))?;
    let ek_key = ek.rsa_key()?;
    let encrypted_seed = match ek.name_alg {
        tpm::ALG_SHA256 => EncryptingKey::<Sha256>::new_with_label(ek_key, IDENTITY_LABEL)
            .encrypt_with_rng(rng, &seed),
        tpm::ALG_SHA384 => EncryptingKey::<Sha384>::new_with_label(ek_key, IDENTITY_LABEL)
            .encrypt_with_rng(rng, &seed),
        _ => return Err(Error::TpmFormat("unsupported EK name algorithm")),
    }
    .map_err(|_| Error::TpmFormat("OAEP encryption of the seed failed"))?;
    Ok((seed, encrypted_seed))
}

/// One-pass ECDH with an ephemeral key on the EK's curve: the seed KDFe derives from the
/// shared secret, and the marshalled TPMS_ECC_POINT of the ephemeral public key (the
/// encrypted secret's body).
fn ecc_seed<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    ek: &Public,
    digest_len: usize,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let (curve, ek_x, ek_y) = ek
        .ecc
        .as_ref()
        .ok_or(Error::TpmFormat("ECC EK without a point"))?;
    let (z, eph_x, eph_y) = match *curve {
        tpm::ECC_NIST_P256 => ecdh::<p256::NistP256, R>(rng, ek_x, ek_y)?,
        tpm::ECC_NIST_P384 => ecdh::<p384::NistP384, R>(rng, ek_x, ek_y)?,
        _ => return Err(Error::TpmFormat("EK curve is not NIST P-256 or P-384")),
    };
    let seed = kdfe(
        ek.name_alg,
        &z,
        IDENTITY_LABEL,
        &eph_x,
        ek_x,
        digest_len as u32 * 8,
    )?;
    let mut point = Vec::with_capacity(4 + eph_x.len() + eph_y.len());
    for coordinate in [&eph_x, &eph_y] {
        point.extend_from_slice(&(coordinate.len() as u16).to_be_bytes());
        point.extend_from_slice(coordinate);
    }
    Ok((seed, point))
}

/// The ECDH shared secret's x coordinate and the ephemeral public point's x and y.
type EcdhOutput = (Vec<u8>, Vec<u8>, Vec<u8>);

/// ECDH on curve `C` between a fresh ephemeral key and the point (x, y): the shared
/// secret's x coordinate and the ephemeral public point's x and y, each the curve's
/// field size long.
fn ecdh<C, R>(rng: &mut R, x: &[u8], y: &[u8]) -> Result<EcdhOutput, Error>
where
    C: elliptic_curve::CurveArithmetic,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromSec1Point<C> + elliptic_curve::sec1::ToSec1Point<C>,
    R: TryCryptoRng + ?Sized,
{
    use elliptic_curve::ecdh::EphemeralSecret;
    use elliptic_curve::Generate;

    let size = elliptic_curve::FieldBytes::<C>::default().len();
    let pad = |v: &[u8]| -> Result<Vec<u8>, Error> {
        let mut out = vec![0u8; size];
        let at = size.checked_sub(v.len()).ok_or(Error::TpmFormat(
            "EK point coordinate longer than the curve's size",
        ))?;
        out[at..].copy_from_slice(v);
        Ok(out)
    };
    let mut sec1 = vec![0x04];
    sec1.extend(pad(x)?);
    sec1.extend(pad(y)?);
    let ek_point = elliptic_curve::PublicKey::<C>::from_sec1_bytes(&sec1)
        .map_err(|_| Error::TpmFormat("EK point is not on its curve"))?;
    let ephemeral = EphemeralSecret::<C>::try_generate_from_rng(rng)
        .map_err(|_| Error::TpmFormat("no randomness for the ephemeral key"))?;
    let z = ephemeral
        .diffie_hellman(&ek_point)
        .raw_secret_bytes()
        .to_vec();
    let public = elliptic_curve::sec1::ToSec1Point::to_sec1_point(&ephemeral.public_key(), false);
    let public = public.as_bytes();
    // Uncompressed SEC1: 04 || x || y.
    let (eph_x, eph_y) = public
        .get(1..)
        .filter(|xy| xy.len() == 2 * size)
        .map(|xy| xy.split_at(size))
        .ok_or(Error::TpmFormat("ephemeral point encoding"))?;
    Ok((z, eph_x.to_vec(), eph_y.to_vec()))
}

/// AES-CFB with a zero IV (the TPM's parameter and credential encryption).
fn aes_cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), Error> {
    let iv = [0u8; 16];
    match key.len() {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
            .map_err(|_| Error::TpmFormat("bad AES key"))?
            .encrypt(data),
        32 => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .map_err(|_| Error::TpmFormat("bad AES key"))?
            .encrypt(data),
        _ => {
            return Err(Error::TpmFormat(
                "EK symmetric key size is not 128 or 256 bits",
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KDFa vector: KDFa(SHA-256, key, "STORAGE", ...) computed by hand against the
    /// definition: one HMAC block, truncated.
    #[test]
    fn kdfa_is_counter_mode_hmac() {
        let key = [7u8; 32];
        let out = kdfa(tpm::ALG_SHA256, &key, b"STORAGE", b"u", b"v", 128).unwrap();
        let block = hmac(
            tpm::ALG_SHA256,
            &key,
            &[
                &1u32.to_be_bytes(),
                b"STORAGE\0",
                b"u",
                b"v",
                &128u32.to_be_bytes(),
            ],
        )
        .unwrap();
        assert_eq!(out, block[..16]);
        let long = kdfa(tpm::ALG_SHA256, &key, b"INTEGRITY", &[], &[], 512).unwrap();
        let second = hmac(
            tpm::ALG_SHA256,
            &key,
            &[&2u32.to_be_bytes(), b"INTEGRITY\0", &512u32.to_be_bytes()],
        )
        .unwrap();
        assert_eq!(long[32..], second[..]);
    }
}
