//! The vTPM's endorsement evidence in TPM NV: where each piece lives, the attributes of
//! its index, and the REPORT_DATA that binds the per-boot endorsement CA to the SNP report.
//!
//! At start-up, before any guest code runs, the SVSM makes a per-boot endorsement CA key,
//! asks the PSP for a report at VMPL0 whose REPORT_DATA is the SHA-512 of [`Binding`]'s
//! input, issues X.509 EK certificates under that CA and stores
//! everything at the indices below. A verifier reads them back (`tpm2_nvread`) and checks
//! AMD chain → report → CA key → EK certificate → EK.
//!
//! Indices (TCG EK Credential Profile for TPM Family 2.0, version 2.4, section 2.2.1.4
//! "Low Range" for the EK certificates, 2.2.1.5 for the EK certificate chain range
//! 0x01C00100-0x01C001FF):
//!
//! | index | content |
//! |---|---|
//! | [`RSA_EK_CERT_INDEX`] 0x01C00002 | RSA-2048 EK (template L-1) certificate, DER |
//! | [`ECC_EK_CERT_INDEX`] 0x01C0000A | ECC P-256 EK (template L-2) certificate, DER |
//! | [`CA_CERT_INDEX`] 0x01C00100 | the per-boot endorsement CA certificate, DER; its subject points to the report ([`CA_SUBJECT_EVIDENCE_OU`], serialNumber = hex SHA-256 of the report) |
//! | [`VCEK_CERT_INDEX`] 0x01C00101 | the VCEK certificate, DER, when the host supplied one |
//! | [`SNP_REPORT_INDEX`] 0x01C00110 | the SNP attestation report (0x4A0 bytes) |
//!
//! Chain walkers read 0x01C00100, 0x01C00101, ... up to the first absent index; they find
//! certificates only. The report sits past a gap so that none of them takes it for one.
//!
//! Domain separation. REPORT_DATA = SHA-512([`BINDING_TAG`] || len || CA SubjectPublicKeyInfo
//! || len || RSA EK TPMT_PUBLIC || len || ECC EK TPMT_PUBLIC), lengths as big-endian u32.
//! The attestation protocol asks for REPORT_DATA = SHA-512(nonce || manifest) with a nonce
//! of 1 to 64 bytes, and its manifest's first byte is never printable ASCII (a services
//! manifest starts with its header GUID, whose first byte is 0xBB; a single-service
//! manifest is the vTPM's TPMT_PUBLIC, which starts with the high byte of a TPM_ALG_ID,
//! 0x00). For the two inputs to be equal, the byte at offset n of the binding input (n =
//! the nonce length, 1..=64) would have to be the manifest's first byte; the tag makes
//! bytes 0..80 printable ASCII. So no two inputs are equal, and a report the guest obtains
//! through the attestation protocol carries a binding REPORT_DATA only if SHA-512 collides.

/// The EK Credential Profile's index of the RSA-2048 EK certificate.
pub const RSA_EK_CERT_INDEX: u32 = 0x01C0_0002;
/// The EK Credential Profile's index of the ECC NIST P-256 EK certificate.
pub const ECC_EK_CERT_INDEX: u32 = 0x01C0_000A;
/// The first index of the EK certificate chain range: the endorsement CA certificate.
pub const CA_CERT_INDEX: u32 = 0x01C0_0100;
/// The VCEK certificate (the next link in the chain range), when the host supplies it.
pub const VCEK_CERT_INDEX: u32 = 0x01C0_0101;
/// The SNP attestation report that binds the CA key and both EKs.
pub const SNP_REPORT_INDEX: u32 = 0x01C0_0110;

/// The vTPM's persistent state as this boot loaded it ([`StateEvidence`]), when the
/// vTPM keeps its state between boots.
pub const STATE_EVIDENCE_INDEX: u32 = 0x01C0_0111;

/// Every index the SVSM defines, in the order it writes them.
pub const ALL_INDICES: [u32; 6] = [
    RSA_EK_CERT_INDEX,
    ECC_EK_CERT_INDEX,
    CA_CERT_INDEX,
    VCEK_CERT_INDEX,
    SNP_REPORT_INDEX,
    STATE_EVIDENCE_INDEX,
];

/// Which persistent state this boot's vTPM started from: the sealed state's generation
/// (0: a TPM manufactured at this boot) and the SHA-256 of the sealed blob the host
/// handed over (zero for a new TPM). Bound into the provisioning report, so the host
/// cannot hand back an older state unseen: a verifier that remembers the generation it
/// last saw refuses a smaller one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateEvidence {
    /// The generation of the state loaded.
    pub generation: u64,
    /// SHA-256 of the sealed blob loaded.
    pub digest: [u8; 32],
}

/// Size of [`StateEvidence`] in NV: the generation (big-endian u64), then the digest.
pub const STATE_EVIDENCE_SIZE: usize = 40;

impl StateEvidence {
    /// The NV encoding.
    pub fn to_bytes(&self) -> [u8; STATE_EVIDENCE_SIZE] {
        let mut out = [0u8; STATE_EVIDENCE_SIZE];
        let (generation, digest) = out.split_at_mut(8);
        generation.copy_from_slice(&self.generation.to_be_bytes());
        digest.copy_from_slice(&self.digest);
        out
    }

    /// Reads the NV encoding (exactly [`STATE_EVIDENCE_SIZE`] bytes).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != STATE_EVIDENCE_SIZE {
            return None;
        }
        let (generation, digest) = bytes.split_at(8);
        Some(Self {
            generation: u64::from_be_bytes(generation.try_into().ok()?),
            digest: digest.try_into().ok()?,
        })
    }
}

/// TPMA_NV bits (TPM 2.0 Part 2, "TPMA_NV").
pub mod nv_attr {
    /// TPMA_NV_PPWRITE.
    pub const PPWRITE: u32 = 1 << 0;
    /// TPMA_NV_WRITELOCKED.
    pub const WRITELOCKED: u32 = 1 << 11;
    /// TPMA_NV_WRITEDEFINE: once write-locked, locked until the index is undefined.
    pub const WRITEDEFINE: u32 = 1 << 13;
    /// TPMA_NV_PPREAD.
    pub const PPREAD: u32 = 1 << 16;
    /// TPMA_NV_OWNERREAD.
    pub const OWNERREAD: u32 = 1 << 17;
    /// TPMA_NV_AUTHREAD.
    pub const AUTHREAD: u32 = 1 << 18;
    /// TPMA_NV_NO_DA.
    pub const NO_DA: u32 = 1 << 25;
    /// TPMA_NV_WRITTEN.
    pub const WRITTEN: u32 = 1 << 29;
    /// TPMA_NV_PLATFORMCREATE.
    pub const PLATFORMCREATE: u32 = 1 << 30;
}

/// The attributes of every evidence index: those the TCG PC Client Platform TPM Profile
/// gives EK certificate indices, and the set `swtpm_setup` uses (0x42072001).
pub const EVIDENCE_NV_ATTRIBUTES: u32 = nv_attr::PLATFORMCREATE
    | nv_attr::PPWRITE
    | nv_attr::PPREAD
    | nv_attr::WRITEDEFINE
    | nv_attr::OWNERREAD
    | nv_attr::AUTHREAD
    | nv_attr::NO_DA;

const _: () = assert!(EVIDENCE_NV_ATTRIBUTES == 0x4207_2001);

/// The first bytes of the binding input: printable ASCII, at least 65 bytes (one past the
/// longest attestation-protocol nonce), so that no nonce || manifest can equal it.
pub const BINDING_TAG: &[u8; 80] =
    b"SVSM vTPM endorsement CA binding: never an attestation nonce || manifest (v1.1.)";

// A compile-time check: indexing inside the bound cannot panic at run time.
#[allow(clippy::indexing_slicing)]
const _: () = {
    let mut i = 0;
    while i < BINDING_TAG.len() {
        assert!(BINDING_TAG[i] >= 0x20 && BINDING_TAG[i] <= 0x7E);
        i += 1;
    }
    assert!(BINDING_TAG.len() > 64);
};

/// The organizational unit of the CA certificate's subject: where the evidence that
/// vouches for the CA lies. Its serialNumber attribute is the hex SHA-256 of that report.
pub const CA_SUBJECT_EVIDENCE_OU: &str = "SNP report at TPM NV 0x01C00110";

/// The common name of the per-boot endorsement CA.
pub const CA_COMMON_NAME: &str = "SVSM vTPM endorsement CA (this boot only)";

/// The pieces whose SHA-512 is the provisioning report's REPORT_DATA.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The endorsement CA's SubjectPublicKeyInfo, DER.
    pub ca_public_key: &'a [u8],
    /// The RSA EK (template L-1) TPMT_PUBLIC.
    pub ek_rsa: &'a [u8],
    /// The ECC EK (template L-2) TPMT_PUBLIC.
    pub ek_ecc: &'a [u8],
    /// The [`StateEvidence`] encoding, or empty when the vTPM keeps no state.
    pub state: &'a [u8],
}

impl Binding<'_> {
    /// Feeds the binding input to `update` (a hash's update function), in order: the tag,
    /// then each piece preceded by its length as a big-endian u32.
    pub fn feed(&self, mut update: impl FnMut(&[u8])) {
        update(BINDING_TAG);
        for piece in [self.ca_public_key, self.ek_rsa, self.ek_ecc, self.state] {
            let len = u32::try_from(piece.len()).unwrap_or(u32::MAX);
            update(&len.to_be_bytes());
            update(piece);
        }
    }
}

/// Whether `manifest` could be the manifest of an attestation-protocol request whose
/// REPORT_DATA input starts like the binding input: only if its first byte is printable
/// ASCII. The SVSM's manifests never are (see the module documentation); the attestation
/// handler refuses to attest one that would be.
pub fn manifest_could_mimic_binding(manifest: &[u8]) -> bool {
    manifest.first().is_none_or(|&b| (0x20..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_input_starts_with_the_tag_and_length_prefixes_each_piece() {
        let mut out = [0u8; 128];
        let mut n = 0;
        Binding {
            ca_public_key: &[1, 2],
            ek_rsa: &[3],
            ek_ecc: &[],
            state: &[9],
        }
        .feed(|b| {
            out[n..n + b.len()].copy_from_slice(b);
            n += b.len();
        });
        assert_eq!(&out[..80], BINDING_TAG);
        assert_eq!(
            &out[80..n],
            &[0, 0, 0, 2, 1, 2, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 9]
        );
    }

    #[test]
    fn state_evidence_round_trips_and_refuses_other_sizes() {
        let e = StateEvidence {
            generation: 0x0102,
            digest: [0xAA; 32],
        };
        let bytes = e.to_bytes();
        assert_eq!(&bytes[..8], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(StateEvidence::parse(&bytes), Some(e));
        assert_eq!(StateEvidence::parse(&bytes[..39]), None);
        assert_eq!(StateEvidence::parse(&[0; 41]), None);
    }

    #[test]
    fn manifests_the_svsm_makes_cannot_mimic_the_binding() {
        // A services manifest (header GUID 63849ebb-..., mixed-endian first byte 0xBB)
        // and a TPMT_PUBLIC of an RSA key.
        assert!(!manifest_could_mimic_binding(&[0xBB, 0x9E, 0x84, 0x63]));
        assert!(!manifest_could_mimic_binding(&[0x00, 0x01, 0x00, 0x0B]));
        assert!(manifest_could_mimic_binding(b"SVSM"));
        assert!(manifest_could_mimic_binding(&[]));
    }

    #[test]
    fn indices_are_in_the_tcg_ranges() {
        for i in [
            CA_CERT_INDEX,
            VCEK_CERT_INDEX,
            SNP_REPORT_INDEX,
            STATE_EVIDENCE_INDEX,
        ] {
            assert!((0x01C0_0100..=0x01C0_01FF).contains(&i));
        }
        assert_eq!(ALL_INDICES.len(), 6);
    }
}
