//! The engine's permanent state between boots: sealed with AES-256-GCM under a key only
//! this launch can derive, and kept by an untrusted store.
//!
//! libtpms commits its whole permanent state (seeds, NV indices, persistent objects,
//! hierarchy authorizations, dictionary-attack counters) as one blob whenever it changes.
//! [`SealedStore`] seals each commit under a key from a [`KeySource`] (in the SVSM: the
//! PSP's MSG_KEY_REQ, bound to the launch measurement and the guest policy) and hands the
//! ciphertext to a [`BlobStore`] (a file, a host helper), which sees nothing else.
//!
//! Invariants:
//! - a blob is parsed only after it authenticates: the header is the AEAD's associated
//!   data, so a changed header fails like a changed ciphertext;
//! - every sealed blob carries a generation one above the last one loaded or stored, so a
//!   host that hands back an older blob is visible (the generation enters the evidence);
//! - a blob that does not open is an error, never a reason to start afresh: the caller
//!   decides (by default the vTPM does not start, so its identity is never silently
//!   replaced);
//! - the header records how the key was derived (the launch fields, the VMPL, the TCB
//!   version), so a state sealed before a firmware update is opened with the older TCB's
//!   key, which the PSP still derives, and sealed again under the current one.

use alloc::vec::Vec;

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{Nonce, Tag};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use sha2::{Digest, Sha256};
pub use svsm_protocol::ek_evidence::StateEvidence;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
use zeroize::Zeroizing;

/// The first bytes of every sealed state.
pub const MAGIC: [u8; 8] = *b"SVSMvTPM";
/// The format this module writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the header.
pub const HEADER_SIZE: usize = 64;
/// Size of the AES-GCM tag after the ciphertext.
pub const TAG_SIZE: usize = 16;

/// How the sealing key is derived: what MSG_KEY_REQ is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySelection {
    /// GUEST_FIELD_SELECT.
    pub fields: u64,
    /// The VMPL mixed in.
    pub vmpl: u32,
    /// The guest SVN mixed in.
    pub guest_svn: u32,
    /// The TCB version mixed in.
    pub tcb_version: u64,
}

/// The header of a sealed state (little-endian; the whole header is authenticated).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: U16,
    /// [`HEADER_SIZE`].
    pub header_size: U16,
    /// Reserved, zero.
    pub reserved: U32,
    /// One above the generation this state replaced (1 for the first).
    pub generation: U64,
    /// [`KeySelection::fields`].
    pub key_fields: U64,
    /// [`KeySelection::vmpl`].
    pub key_vmpl: U32,
    /// [`KeySelection::guest_svn`].
    pub key_guest_svn: U32,
    /// [`KeySelection::tcb_version`].
    pub key_tcb_version: U64,
    /// The AES-GCM nonce (random for each seal).
    pub nonce: [u8; 12],
    /// Reserved, zero.
    pub reserved2: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_SIZE);

impl Header {
    /// How the key for this state was derived.
    pub fn key_selection(&self) -> KeySelection {
        KeySelection {
            fields: self.key_fields.get(),
            vmpl: self.key_vmpl.get(),
            guest_svn: self.key_guest_svn.get(),
            tcb_version: self.key_tcb_version.get(),
        }
    }
}

/// Why a state could not be sealed, opened, loaded or stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateError {
    /// Not a sealed vTPM state (wrong magic): a foreign file.
    Foreign,
    /// A sealed state of a format version this SVSM does not read.
    Version(u16),
    /// Shorter than its header and tag, or a header of the wrong size.
    Truncated,
    /// It does not authenticate under this launch's key: another launch's state, or
    /// corrupted.
    Authentication,
    /// The sealing key could not be derived (the PSP refused or is unreachable).
    Key,
    /// The store failed to keep or return the state.
    Store,
    /// No randomness for a nonce.
    Entropy,
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Foreign => "not a sealed vTPM state",
            Self::Version(_) => "a sealed vTPM state of an unknown format version",
            Self::Truncated => "a truncated sealed vTPM state",
            Self::Authentication => {
                "the sealed vTPM state does not open under this launch's key \
                 (another launch's state, or corrupted)"
            }
            Self::Key => "the state sealing key could not be derived",
            Self::Store => "the state store failed",
            Self::Entropy => "no randomness for the state's nonce",
        })
    }
}

impl core::error::Error for StateError {}

/// Reads the header of a sealed state (not yet authenticated: use it only to pick the
/// key, then [`open`]).
pub fn read_header(blob: &[u8]) -> Result<Header, StateError> {
    if blob.get(..MAGIC.len()).is_some_and(|m| m != MAGIC) {
        return Err(StateError::Foreign);
    }
    let (header, _) = Header::read_from_prefix(blob).map_err(|_| StateError::Truncated)?;
    if header.version.get() != FORMAT_VERSION {
        return Err(StateError::Version(header.version.get()));
    }
    if usize::from(header.header_size.get()) != HEADER_SIZE || blob.len() < HEADER_SIZE + TAG_SIZE {
        return Err(StateError::Truncated);
    }
    Ok(header)
}

/// Seals `state` as generation `generation` under `key` (derived with `selection`).
pub fn seal(
    key: &[u8; 32],
    selection: &KeySelection,
    generation: u64,
    nonce: [u8; 12],
    state: &[u8],
) -> Vec<u8> {
    let header = Header {
        magic: MAGIC,
        version: U16::new(FORMAT_VERSION),
        header_size: U16::new(HEADER_SIZE as u16),
        reserved: U32::new(0),
        generation: U64::new(generation),
        key_fields: U64::new(selection.fields),
        key_vmpl: U32::new(selection.vmpl),
        key_guest_svn: U32::new(selection.guest_svn),
        key_tcb_version: U64::new(selection.tcb_version),
        nonce,
        reserved2: [0; 4],
    };
    let mut blob = Vec::with_capacity(HEADER_SIZE + state.len() + TAG_SIZE);
    blob.extend_from_slice(header.as_bytes());
    blob.extend_from_slice(state);
    let tag = Aes256Gcm::new(key.into())
        .encrypt_inout_detached(
            &Nonce::<Aes256Gcm>::from(nonce),
            header.as_bytes(),
            InOutBuf::from(&mut blob[HEADER_SIZE..]),
        )
        .unwrap_or_else(|_| unreachable!("a state far below GCM's length limit"));
    blob.extend_from_slice(&tag);
    blob
}

/// Opens a sealed state under `key`: its header and the plaintext state. Nothing of the
/// state is returned unless the whole blob authenticates.
pub fn open(key: &[u8; 32], blob: &[u8]) -> Result<(Header, Zeroizing<Vec<u8>>), StateError> {
    let header = read_header(blob)?;
    let body_end = blob.len() - TAG_SIZE;
    let tag = Tag::<Aes256Gcm>::try_from(&blob[body_end..]).map_err(|_| StateError::Truncated)?;
    let mut state = Zeroizing::new(blob[HEADER_SIZE..body_end].to_vec());
    Aes256Gcm::new(key.into())
        .decrypt_inout_detached(
            &Nonce::<Aes256Gcm>::from(header.nonce),
            &blob[..HEADER_SIZE],
            InOutBuf::from(&mut state[..]),
            &tag,
        )
        .map_err(|_| StateError::Authentication)?;
    Ok((header, state))
}

/// Where sealed states are kept (untrusted: it sees only ciphertext).
pub trait BlobStore: Send {
    /// The kept blob, if there is one.
    fn load(&mut self) -> Result<Option<Vec<u8>>, StateError>;
    /// Replaces the kept blob atomically (a crash leaves the old one or the new one);
    /// returns once the new one is kept.
    fn store(&mut self, blob: &[u8]) -> Result<(), StateError>;
}

/// Derives sealing keys (in the SVSM: MSG_KEY_REQ to the PSP).
pub trait KeySource: Send {
    /// How the key for new seals is derived (the current TCB).
    fn current(&self) -> KeySelection;
    /// The key derived with `selection`.
    fn key(&mut self, selection: &KeySelection) -> Result<Zeroizing<[u8; 32]>, StateError>;
    /// 12 random bytes for a nonce.
    fn nonce(&mut self) -> Result<[u8; 12], StateError>;
}

/// Where the engine's permanent state goes when libtpms commits it.
pub trait StateStore: Send {
    /// The state kept from an earlier boot, if any (`None`: manufacture a new TPM).
    fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StateError>;
    /// Keeps `state`, replacing the previous one; returns once it is kept.
    fn store(&mut self, state: &[u8]) -> Result<(), StateError>;
    /// Which state [`Self::load`] returned: its generation and the digest of what the
    /// host handed over (generation 0 and a zero digest when there was none).
    fn evidence(&self) -> StateEvidence;
}

/// A [`StateStore`] that seals into a [`BlobStore`] with keys from a [`KeySource`].
#[derive(Debug)]
pub struct SealedStore<B, K> {
    blobs: B,
    keys: K,
    /// The generation of the last state loaded or stored (0: none yet).
    generation: u64,
    /// What was loaded at power-on.
    loaded: StateEvidence,
    /// The key for new seals, once derived (the selection does not change while the
    /// SVSM runs, and asking the PSP at every commit would cost a round trip each).
    sealing_key: Option<Zeroizing<[u8; 32]>>,
}

impl<B: BlobStore, K: KeySource> SealedStore<B, K> {
    /// A sealed store over `blobs` with keys from `keys`.
    pub fn new(blobs: B, keys: K) -> Self {
        Self {
            blobs,
            keys,
            generation: 0,
            loaded: StateEvidence {
                generation: 0,
                digest: [0; 32],
            },
            sealing_key: None,
        }
    }

    /// The generation of the state last loaded or stored (0 before any).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl<B: BlobStore, K: KeySource> StateStore for SealedStore<B, K> {
    fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StateError> {
        let Some(blob) = self.blobs.load()? else {
            return Ok(None);
        };
        let header = read_header(&blob)?;
        let key = self.keys.key(&header.key_selection())?;
        let (header, state) = open(&key, &blob)?;
        self.generation = header.generation.get();
        self.loaded = StateEvidence {
            generation: self.generation,
            digest: Sha256::digest(&blob).into(),
        };
        Ok(Some(state))
    }

    fn evidence(&self) -> StateEvidence {
        self.loaded
    }

    fn store(&mut self, state: &[u8]) -> Result<(), StateError> {
        let generation = self.generation.checked_add(1).ok_or(StateError::Store)?;
        let selection = self.keys.current();
        if self.sealing_key.is_none() {
            self.sealing_key = Some(self.keys.key(&selection)?);
        }
        let key = self.sealing_key.as_ref().ok_or(StateError::Key)?;
        let nonce = self.keys.nonce()?;
        let blob = seal(key, &selection, generation, nonce, state);
        self.blobs.store(&blob)?;
        self.generation = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [0x5A; 32];
    const SELECTION: KeySelection = KeySelection {
        fields: 0x29,
        vmpl: 0,
        guest_svn: 0,
        tcb_version: 0x0300_0000_0000_0008,
    };

    #[test]
    fn seal_then_open_round_trips_and_every_byte_is_checked() {
        let blob = seal(&KEY, &SELECTION, 7, [3; 12], b"permanent state");
        assert_eq!(blob.len(), HEADER_SIZE + 15 + TAG_SIZE);
        assert_eq!(&blob[..8], b"SVSMvTPM");
        assert!(
            !blob.windows(9).any(|w| w == b"permanent"),
            "the state is encrypted"
        );
        let (header, state) = open(&KEY, &blob).unwrap();
        assert_eq!(header.generation.get(), 7);
        assert_eq!(header.key_selection(), SELECTION);
        assert_eq!(&state[..], b"permanent state");
        // Flip any bit past the magic and version: it no longer opens.
        for i in 12..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            let e = open(&KEY, &bad).err();
            assert!(
                matches!(e, Some(StateError::Authentication | StateError::Truncated)),
                "byte {i}: {e:?}"
            );
        }
    }

    #[test]
    fn foreign_truncated_other_versions_and_other_keys_are_refused() {
        let blob = seal(&KEY, &SELECTION, 1, [0; 12], b"x");
        assert_eq!(
            open(&[0x5B; 32], &blob).err(),
            Some(StateError::Authentication)
        );
        assert_eq!(
            open(&KEY, b"NVChip\0\0 anything").err(),
            Some(StateError::Foreign)
        );
        assert_eq!(
            open(&KEY, &blob[..HEADER_SIZE + TAG_SIZE - 1]).err(),
            Some(StateError::Truncated)
        );
        assert_eq!(open(&KEY, &blob[..5]).err(), Some(StateError::Truncated));
        assert_eq!(open(&KEY, &[]).err(), Some(StateError::Truncated));
        let mut v2 = blob.clone();
        v2[8] = 2;
        assert_eq!(open(&KEY, &v2).err(), Some(StateError::Version(2)));
    }

    struct Memory(Option<Vec<u8>>);

    impl BlobStore for Memory {
        fn load(&mut self) -> Result<Option<Vec<u8>>, StateError> {
            Ok(self.0.clone())
        }
        fn store(&mut self, blob: &[u8]) -> Result<(), StateError> {
            self.0 = Some(blob.to_vec());
            Ok(())
        }
    }

    /// Keys from a secret and the TCB (what the PSP's derivation depends on here).
    struct Keys {
        secret: u8,
        tcb: u64,
        newest_tcb: u64,
    }

    impl KeySource for Keys {
        fn current(&self) -> KeySelection {
            KeySelection {
                tcb_version: self.tcb,
                ..SELECTION
            }
        }
        fn key(&mut self, s: &KeySelection) -> Result<Zeroizing<[u8; 32]>, StateError> {
            if s.tcb_version > self.newest_tcb {
                return Err(StateError::Key);
            }
            let mut k = [self.secret; 32];
            k[..8].copy_from_slice(&s.tcb_version.to_le_bytes());
            Ok(Zeroizing::new(k))
        }
        fn nonce(&mut self) -> Result<[u8; 12], StateError> {
            Ok([self.secret; 12])
        }
    }

    #[test]
    fn generations_advance_and_a_tcb_update_reseals_under_the_new_key() {
        let mut store = SealedStore::new(
            Memory(None),
            Keys {
                secret: 1,
                tcb: 8,
                newest_tcb: 8,
            },
        );
        assert_eq!(store.load().unwrap(), None);
        store.store(b"one").unwrap();
        store.store(b"two").unwrap();
        assert_eq!(store.generation(), 2);
        let kept = store.blobs.0.clone().unwrap();
        // A reboot after a firmware update: the old TCB's key opens it, the next commit
        // is sealed under the new TCB.
        let mut after = SealedStore::new(
            Memory(Some(kept.clone())),
            Keys {
                secret: 1,
                tcb: 9,
                newest_tcb: 9,
            },
        );
        assert_eq!(&after.load().unwrap().unwrap()[..], b"two");
        assert_eq!(after.generation(), 2);
        assert_eq!(after.evidence().generation, 2);
        assert_eq!(
            after.evidence().digest,
            <[u8; 32]>::from(Sha256::digest(&kept))
        );
        after.store(b"three").unwrap();
        let resealed = after.blobs.0.clone().unwrap();
        assert_eq!(
            read_header(&resealed).unwrap().key_selection().tcb_version,
            9
        );
        assert_eq!(read_header(&resealed).unwrap().generation.get(), 3);
        // Another machine (or launch): refused, nothing returned.
        let mut other = SealedStore::new(
            Memory(Some(kept)),
            Keys {
                secret: 2,
                tcb: 8,
                newest_tcb: 8,
            },
        );
        assert_eq!(other.load().err(), Some(StateError::Authentication));
        assert_eq!(other.generation(), 0);
        // A state sealed under a TCB the PSP will not derive (newer than the current).
        let mut rolled_back_firmware = SealedStore::new(
            Memory(Some(resealed)),
            Keys {
                secret: 1,
                tcb: 8,
                newest_tcb: 8,
            },
        );
        assert_eq!(rolled_back_firmware.load().err(), Some(StateError::Key));
    }
}
