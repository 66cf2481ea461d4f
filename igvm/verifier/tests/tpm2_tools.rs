//! The verifier reads a quote, its signature and the AK exactly as tpm2-tools wrote them
//! against swtpm, an implementation independent of this project's vTPM plumbing.

use sha2::{Digest, Sha256};
use svsm_verifier::tpm::{self, PcrSelection, Public, Quote, Signature};

const AK: &[u8] = include_bytes!("data/tpm2-tools/ak.pub");
const QUOTE: &[u8] = include_bytes!("data/tpm2-tools/quote.msg");
const SIG: &[u8] = include_bytes!("data/tpm2-tools/quote.sig");

#[test]
fn a_tpm2_tools_quote_verifies() {
    let ak = Public::parse(AK).expect("TPM2B_PUBLIC");
    let required = tpm::attr::FIXED_TPM | tpm::attr::RESTRICTED | tpm::attr::SIGN;
    assert_eq!(ak.attributes & required, required);
    let quote = Quote::parse(QUOTE).expect("TPMS_ATTEST");
    let sig = Signature::parse(SIG).expect("TPMT_SIGNATURE");
    assert_eq!(
        (sig.scheme, sig.hash_alg),
        (tpm::ALG_RSASSA, tpm::ALG_SHA256)
    );
    sig.verify(&ak, &quote.bytes)
        .expect("the AK signed the quote");
    assert_eq!(quote.extra_data, [0x00, 0x11, 0x22, 0x33]);
    assert_eq!(
        quote.selection,
        [PcrSelection {
            hash_alg: tpm::ALG_SHA256,
            pcrs: vec![0, 7]
        }]
    );
    let zero_pcrs: Vec<u8> = Sha256::digest([0u8; 64]).to_vec();
    assert_eq!(quote.pcr_digest, zero_pcrs);
    // The qualified signer names the AK (hash of its public area under SHA-256).
    assert_eq!(&quote.qualified_signer[..2], &[0x00, 0x0b]);
}

#[test]
fn a_flipped_quote_byte_breaks_the_signature() {
    let ak = Public::parse(AK).unwrap();
    let sig = Signature::parse(SIG).unwrap();
    let mut bytes = QUOTE.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        sig.verify(&ak, &bytes),
        Err(svsm_verifier::Error::QuoteSignature)
    );
}
