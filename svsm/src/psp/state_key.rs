//! The vTPM state's sealing key, derived by the PSP (MSG_KEY_REQ) at VMPL0.
//!
//! The key is derived from the chip's VCEK root (the VLEK where the host installed one:
//! KEY_SEL 0) and always mixes in the launch MEASUREMENT and the GUEST_POLICY: the
//! measurement does not cover the policy, so without the policy a debuggable launch of
//! the same image would derive the same key. It also mixes in the TCB version (the
//! current one for new seals; the one a sealed state's header names when it is opened,
//! which the PSP accepts while it is not newer than the current TCB) and VMPL 0, which
//! the guest (holding VMPCK2 and VMPCK3 only) can never ask for. IMAGE_ID and FAMILY_ID
//! are never selected: GUEST_FIELD_SELECT has no bit for the ID or author key, so a key
//! bound to those IDs alone could be derived by any launch whose ID block, signed by
//! anyone, names them (SEV-SNP firmware ABI, pub. 56860, "MSG_KEY_REQ" and
//! "GUEST_FIELD_SELECT").

use alloc::boxed::Box;
use alloc::vec::Vec;

use svsm_protocol::guest_msg::{AttestationReport, GuestFieldSelect, KeyRequest};
use vtpm::state::{KeySelection, KeySource, StateError};
use vtpm::EntropySource;
use zeroize::Zeroizing;

use super::{GuestMessageError, GuestMessenger, PspTransport};

/// The launch fields every state key mixes in.
pub const STATE_KEY_FIELDS: GuestFieldSelect = GuestFieldSelect::MEASUREMENT
    .union(GuestFieldSelect::GUEST_POLICY)
    .union(GuestFieldSelect::TCB_VERSION);

/// The MSG_KEY_REQ for `selection`, if it is what this SVSM seals with: a header naming
/// other fields (an ID-only binding, another VMPL) is not this SVSM's state.
fn key_request(selection: &KeySelection) -> Result<KeyRequest, StateError> {
    if selection.fields != STATE_KEY_FIELDS.bits() || selection.vmpl != 0 {
        return Err(StateError::Key);
    }
    let fields = GuestFieldSelect::from_bits(selection.fields).ok_or(StateError::Key)?;
    Ok(KeyRequest::new(
        fields,
        selection.vmpl,
        selection.guest_svn,
        selection.tcb_version,
    ))
}

/// The selection this SVSM seals with under TCB version `tcb`.
pub fn current_selection(tcb: u64) -> KeySelection {
    KeySelection {
        fields: STATE_KEY_FIELDS.bits(),
        vmpl: 0,
        guest_svn: 0,
        tcb_version: tcb,
    }
}

/// The TCB version new states are sealed under: COMMITTED_TCB from a report of this
/// launch. MSG_KEY_REQ's TCB_VERSION "must not exceed CommittedTcb" (SEV-SNP firmware
/// ABI, pub. 56860, MSG_KEY_REQ). REPORTED_TCB is not used: the hypervisor sets it
/// (SNP_CONFIG) and may set it below the committed TCB, which would seal the state under
/// a key that firmware at that older, perhaps vulnerable, TCB can also derive. Firmware
/// cannot go below the committed TCB, so a key under it stays out of a downgraded
/// firmware's reach.
pub fn committed_tcb<T: PspTransport + ?Sized>(
    psp: &T,
    messenger: &mut GuestMessenger,
) -> Result<u64, GuestMessageError> {
    let report = messenger.get_report(psp, &[0; 64], 0)?;
    Ok(AttestationReport::parse(&report)
        .map_err(|_| GuestMessageError::Response(super::MessageError::BadSize))?
        .committed_tcb
        .get())
}

/// The keys one boot of the kernel needs, derived from the PSP before the vTPM starts:
/// the sealing key under the current TCB and, when the kept state was sealed under
/// another selection (an older TCB), the key that opens it. The kernel derives them up
/// front with the one VMPCK0 messenger it then hands to the attestation protocol, so
/// the messenger's sequence numbers are never shared.
pub struct DerivedKeys {
    current: KeySelection,
    keys: Vec<(KeySelection, Zeroizing<[u8; 32]>)>,
    entropy: Box<dyn EntropySource>,
}

impl core::fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DerivedKeys")
            .field("current", &self.current)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl DerivedKeys {
    /// Derives the sealing key for TCB version `tcb` and, if `kept` names another
    /// selection, the key for it (refused like [`PspKeySource`] refuses it when it is
    /// not what this SVSM seals with).
    pub fn derive<T: PspTransport + ?Sized>(
        psp: &T,
        messenger: &mut GuestMessenger,
        tcb: u64,
        kept: Option<KeySelection>,
        entropy: Box<dyn EntropySource>,
    ) -> Result<Self, StateError> {
        let current = current_selection(tcb);
        let mut keys = Vec::new();
        for selection in core::iter::once(current).chain(kept.filter(|k| *k != current)) {
            let key = messenger
                .derive_key(psp, &key_request(&selection)?)
                .map_err(|_| StateError::Key)?;
            keys.push((selection, key));
        }
        Ok(Self {
            current,
            keys,
            entropy,
        })
    }
}

impl KeySource for DerivedKeys {
    fn current(&self) -> KeySelection {
        self.current
    }

    fn key(&mut self, selection: &KeySelection) -> Result<Zeroizing<[u8; 32]>, StateError> {
        self.keys
            .iter()
            .find(|(s, _)| s == selection)
            .map(|(_, key)| key.clone())
            .ok_or(StateError::Key)
    }

    fn nonce(&mut self) -> Result<[u8; 12], StateError> {
        let mut nonce = [0u8; 12];
        self.entropy
            .fill(&mut nonce)
            .map_err(|_| StateError::Entropy)?;
        Ok(nonce)
    }
}

/// Sealing keys from the PSP, through the SVSM's VMPCK0 messenger.
pub struct PspKeySource<T> {
    psp: T,
    messenger: GuestMessenger,
    current: KeySelection,
    entropy: Box<dyn EntropySource>,
}

impl<T> core::fmt::Debug for PspKeySource<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PspKeySource")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl<T: PspTransport> PspKeySource<T> {
    /// Reads the current TCB from a report of this launch (VMPL0) and keeps the
    /// messenger for the key requests.
    pub fn new(
        psp: T,
        mut messenger: GuestMessenger,
        entropy: Box<dyn EntropySource>,
    ) -> Result<Self, GuestMessageError> {
        let tcb = committed_tcb(&psp, &mut messenger)?;
        Ok(Self {
            psp,
            messenger,
            current: current_selection(tcb),
            entropy,
        })
    }
}

impl<T: PspTransport + Send> KeySource for PspKeySource<T> {
    fn current(&self) -> KeySelection {
        self.current
    }

    fn key(&mut self, selection: &KeySelection) -> Result<Zeroizing<[u8; 32]>, StateError> {
        self.messenger
            .derive_key(&self.psp, &key_request(selection)?)
            .map_err(|_| StateError::Key)
    }

    fn nonce(&mut self) -> Result<[u8; 12], StateError> {
        let mut nonce = [0u8; 12];
        self.entropy
            .fill(&mut nonce)
            .map_err(|_| StateError::Entropy)?;
        Ok(nonce)
    }
}
