//! The measured-boot policy: which PCRs a quote must cover, and the reference values the
//! events of the TCG event log ([`crate::eventlog`]) are compared with.
//!
//! The policy is a TOML file people read and edit (the README's section "Measured boot:
//! the event log and the reference-value policy" describes it):
//!
//! ```toml
//! bank = "sha256"                 # the PCR bank the quote covers and events are compared in
//! pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 9]   # the PCRs the quote must cover; each is replayed
//! replay_only = [1]               # of those, PCRs whose events are not compared
//!
//! [[reference]]
//! pcr = 4
//! type = "EV_EFI_BOOT_SERVICES_APPLICATION"
//! digest = "…"                    # hex, the bank's digest of the event
//! source = "kernel vmlinuz (PE Authenticode)"   # where the value came from (free text)
//! # tag = "0x8f3b22ec"          # EV_EVENT_TAG only: the tagged event ID it must carry
//! required = true                 # (default) the log must contain this event
//! ```
//!
//! [`BootPolicy::check`] first replays the log against the quoted PCR values (a log
//! edited to look right no longer replays to the quote), then requires every measured
//! event of a compared PCR to be a reference value of that PCR and type, and every
//! required reference to appear in the log.

use core::fmt;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::eventlog::{
    alg_from_name, alg_label, event_type_from_name, event_type_label, hash, Event, EventLog,
    PCR_COUNT,
};
use crate::Error;

/// One reference value: an event a good boot measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The PCR the event is extended into.
    pub pcr: u8,
    /// The event type (§9.4.1 of the TCG PC Client Platform Firmware Profile).
    pub event_type: u32,
    /// The event's digest in the policy's bank.
    pub digest: Vec<u8>,
    /// Whether the log must contain this event (otherwise it is only allowed).
    pub required: bool,
    /// For an EV_EVENT_TAG event, the tagged event ID it must carry (e.g. Linux's initrd
    /// tag 0x8F3B22EC); `None` matches any.
    pub tag: Option<u32>,
    /// Where the value came from: an artifact it was computed from, or "learned".
    pub source: String,
}

impl Reference {
    /// Whether `event` (in PCR `pcr`, with `digest` in the policy's bank) is this reference.
    fn matches(&self, pcr: u8, event: &Event, digest: &[u8]) -> bool {
        self.same_kind(pcr, event) && self.digest == digest
    }

    /// Whether `event` is of this reference's PCR, type and tag.
    fn same_kind(&self, pcr: u8, event: &Event) -> bool {
        self.pcr == pcr
            && self.event_type == event.event_type
            && self.tag.is_none_or(|t| event.tag() == Some(t))
    }
}

/// A measured-boot policy (see the module documentation for its TOML form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy", into = "RawPolicy")]
pub struct BootPolicy {
    alg: u16,
    pcrs: Vec<u8>,
    replay_only: Vec<u8>,
    references: Vec<Reference>,
}

/// The policy as the TOML file spells it (names and hex), validated into [`BootPolicy`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    bank: String,
    pcrs: Vec<u8>,
    #[serde(default)]
    replay_only: Vec<u8>,
    #[serde(default, rename = "reference")]
    references: Vec<RawReference>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReference {
    pcr: u8,
    #[serde(rename = "type")]
    event_type: String,
    digest: String,
    #[serde(default = "yes")]
    required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(default)]
    source: String,
}

fn yes() -> bool {
    true
}

impl TryFrom<RawPolicy> for BootPolicy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Self, String> {
        let alg = alg_from_name(&raw.bank)
            .filter(|a| hash(*a, &[]).is_some())
            .ok_or_else(|| {
                format!(
                    "bank \"{}\": not one of sha1, sha256, sha384, sha512",
                    raw.bank
                )
            })?;
        let size = hash(alg, &[]).map(|d| d.len()).unwrap_or_default();
        if raw.pcrs.is_empty() {
            return Err("pcrs: empty; the quote must cover some PCR".into());
        }
        let mut seen = BTreeSet::new();
        for &pcr in &raw.pcrs {
            if u32::from(pcr) >= PCR_COUNT {
                return Err(format!("pcrs: PCR {pcr} does not exist (0 to 23)"));
            }
            if !seen.insert(pcr) {
                return Err(format!("pcrs: PCR {pcr} listed twice"));
            }
        }
        for pcr in &raw.replay_only {
            if !seen.contains(pcr) {
                return Err(format!("replay_only: PCR {pcr} is not in pcrs"));
            }
        }
        let mut references = Vec::with_capacity(raw.references.len());
        for (i, r) in raw.references.into_iter().enumerate() {
            let at = format!("reference {} (PCR {})", i + 1, r.pcr);
            if !seen.contains(&r.pcr) || raw.replay_only.contains(&r.pcr) {
                return Err(format!(
                    "{at}: the policy does not compare this PCR's events (add it to pcrs, \
                     remove it from replay_only)"
                ));
            }
            let event_type = event_type_from_name(&r.event_type)
                .ok_or_else(|| format!("{at}: unknown event type \"{}\"", r.event_type))?;
            let digest =
                hex::decode(&r.digest).map_err(|e| format!("{at}: digest is not hex: {e}"))?;
            if digest.len() != size {
                return Err(format!(
                    "{at}: digest has {} bytes, a {} digest has {size}",
                    digest.len(),
                    raw.bank
                ));
            }
            let tag = match &r.tag {
                None => None,
                Some(t) => Some(
                    t.strip_prefix("0x")
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .ok_or_else(|| format!("{at}: tag \"{t}\" is not 0x and 8 hex digits"))?,
                ),
            };
            references.push(Reference {
                pcr: r.pcr,
                event_type,
                digest,
                required: r.required,
                tag,
                source: r.source,
            });
        }
        Ok(BootPolicy {
            alg,
            pcrs: raw.pcrs,
            replay_only: raw.replay_only,
            references,
        })
    }
}

impl From<BootPolicy> for RawPolicy {
    fn from(p: BootPolicy) -> Self {
        RawPolicy {
            bank: alg_label(p.alg),
            pcrs: p.pcrs,
            replay_only: p.replay_only,
            references: p
                .references
                .into_iter()
                .map(|r| RawReference {
                    pcr: r.pcr,
                    event_type: event_type_label(r.event_type),
                    digest: hex::encode(r.digest),
                    required: r.required,
                    tag: r.tag.map(|t| format!("{t:#010x}")),
                    source: r.source,
                })
                .collect(),
        }
    }
}

/// Why a boot does not pass a [`BootPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootPolicyError {
    /// The event log does not parse or cannot be replayed in the policy's bank.
    Log(Error),
    /// The quote does not cover a PCR the policy requires.
    NotQuoted {
        /// The PCR.
        pcr: u8,
    },
    /// Replaying the log does not give the quoted value: the log is not the one the TPM
    /// measured (edited, truncated, or from another boot).
    ReplayMismatch {
        /// The PCR.
        pcr: u8,
        /// The bank.
        alg: u16,
        /// What replaying the log gives.
        replayed: Vec<u8>,
        /// What the quote says.
        quoted: Vec<u8>,
    },
    /// A measured event of a compared PCR matches no reference value of that PCR and type.
    NotReference {
        /// The PCR.
        pcr: u8,
        /// The event's index in the log (the Spec ID event is 0).
        index: usize,
        /// The event type.
        event_type: u32,
        /// The event's digest in the policy's bank.
        digest: Vec<u8>,
    },
    /// A required reference value does not appear in the log.
    Missing {
        /// The PCR.
        pcr: u8,
        /// The event type.
        event_type: u32,
        /// The reference digest.
        digest: Vec<u8>,
        /// The reference's source.
        source: String,
    },
}

impl fmt::Display for BootPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootPolicyError::Log(e) => write!(f, "{e}"),
            BootPolicyError::NotQuoted { pcr } => {
                write!(
                    f,
                    "PCR {pcr}: the policy requires it but the quote does not cover it"
                )
            }
            BootPolicyError::ReplayMismatch {
                pcr,
                alg,
                replayed,
                quoted,
            } => write!(
                f,
                "PCR {pcr} ({}): replayed log gives {} but the quote says {}",
                alg_label(*alg),
                hex::encode(replayed),
                hex::encode(quoted)
            ),
            BootPolicyError::NotReference {
                pcr,
                index,
                event_type,
                digest,
            } => write!(
                f,
                "PCR {pcr} event {index} ({}): digest {} is not a reference value",
                event_type_label(*event_type),
                hex::encode(digest)
            ),
            BootPolicyError::Missing {
                pcr,
                event_type,
                digest,
                source,
            } => write!(
                f,
                "PCR {pcr}: the required {} event {}{} is not in the log",
                event_type_label(*event_type),
                hex::encode(digest),
                if source.is_empty() {
                    String::new()
                } else {
                    format!(" ({source})")
                }
            ),
        }
    }
}

impl std::error::Error for BootPolicyError {}

impl From<Error> for BootPolicyError {
    fn from(e: Error) -> Self {
        BootPolicyError::Log(e)
    }
}

/// The PCRs a learned policy covers by default: the firmware's (0-7) and the boot
/// loader's/kernel's (9; Linux's EFI stub measures the initrd and command line there).
/// PCR 8 is unused by OVMF's direct kernel boot; 10 is IMA's (runtime, not boot); 16 is
/// the debug PCR; 17-22 are for dynamic launch.
pub const DEFAULT_PCRS: &[u8] = &[0, 1, 2, 3, 4, 5, 6, 7, 9];

impl BootPolicy {
    /// A policy: bank `alg`, the quote covering `pcrs`, the events of `pcrs` not in
    /// `replay_only` compared with `references`. Validated as [`from_toml`](Self::from_toml)
    /// validates a file.
    pub fn new(
        alg: u16,
        pcrs: Vec<u8>,
        replay_only: Vec<u8>,
        references: Vec<Reference>,
    ) -> Result<BootPolicy, Error> {
        let policy = BootPolicy {
            alg,
            pcrs,
            replay_only,
            references,
        };
        let raw = RawPolicy::from(policy);
        BootPolicy::try_from(raw).map_err(Error::BootPolicy)
    }

    /// Learns a policy from a known-good boot's log: every measured event of `pcrs` (not in
    /// `replay_only`) becomes a required reference, except that where `computed`
    /// references are given for a PCR and event type, they replace what the log has for
    /// that PCR and type. Returns the policy and one warning per logged event that was
    /// not learned because it differs from every computed value of its kind.
    pub fn learn(
        log: &EventLog,
        alg: u16,
        pcrs: &[u8],
        replay_only: &[u8],
        computed: &[Reference],
    ) -> Result<(BootPolicy, Vec<String>), Error> {
        let mut references: Vec<Reference> = computed.to_vec();
        let mut warnings = Vec::new();
        for (index, event) in log.events.iter().enumerate() {
            let Ok(pcr) = u8::try_from(event.pcr) else {
                continue;
            };
            if !event.is_measured() || !pcrs.contains(&pcr) || replay_only.contains(&pcr) {
                continue;
            }
            let digest = event.digest(alg).ok_or_else(|| {
                Error::EventLog(format!(
                    "event {index} (PCR {pcr}, {}) has no {} digest",
                    event_type_label(event.event_type),
                    alg_label(alg)
                ))
            })?;
            let same_kind = |r: &&Reference| r.same_kind(pcr, event);
            if computed.iter().any(|r| same_kind(&r)) {
                if !computed.iter().any(|r| r.matches(pcr, event, digest)) {
                    warnings.push(format!(
                        "PCR {pcr} event {index} ({}): digest {} differs from every value \
                         computed from the artifacts; not learned",
                        event_type_label(event.event_type),
                        hex::encode(digest)
                    ));
                }
                continue;
            }
            let known = references.iter().any(|r| r.matches(pcr, event, digest));
            if !known {
                references.push(Reference {
                    pcr,
                    event_type: event.event_type,
                    digest: digest.to_vec(),
                    required: true,
                    tag: event.tag(),
                    source: format!("learned (event {index})"),
                });
            }
        }
        let policy = BootPolicy::new(alg, pcrs.to_vec(), replay_only.to_vec(), references)?;
        Ok((policy, warnings))
    }

    /// Parses and validates a policy file.
    pub fn from_toml(text: &str) -> Result<BootPolicy, Error> {
        toml::from_str(text).map_err(|e| Error::BootPolicy(e.to_string()))
    }

    /// The policy as a TOML file, with a comment on its format.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# svsm-verify measured-boot policy (see the README, \"Measured boot\").\n\
             # bank: the PCR bank; pcrs: the PCRs the quote must cover, each replayed from the\n\
             # event log; replay_only: PCRs whose events are not compared. Every measured\n\
             # event of the other PCRs must match a [[reference]] (PCR, type, digest), and\n\
             # every reference with required = true must appear in the log.\n{body}"
        )
    }

    /// The bank and PCR indices the quote must cover.
    pub fn pcr_selection(&self) -> (u16, Vec<u8>) {
        (self.alg, self.pcrs.clone())
    }

    /// The reference values.
    pub fn references(&self) -> &[Reference] {
        &self.references
    }

    /// The PCRs that are replayed but whose events are not compared.
    pub fn replay_only(&self) -> &[u8] {
        &self.replay_only
    }

    /// Checks a boot: the log replays to the `quoted` values (the (index, value) pairs
    /// the quote covered, in the policy's bank) for every PCR of the policy, every measured
    /// event of a compared PCR is a reference value, and every required reference is in
    /// the log.
    pub fn check(&self, log: &EventLog, quoted: &[(u8, Vec<u8>)]) -> Result<(), BootPolicyError> {
        let replayed = log.replay(self.alg)?;
        for &pcr in &self.pcrs {
            let Some((_, quoted)) = quoted.iter().find(|(i, _)| *i == pcr) else {
                return Err(BootPolicyError::NotQuoted { pcr });
            };
            let value = match replayed.get(&u32::from(pcr)) {
                Some(v) => v.clone(),
                None => log
                    .initial_value(self.alg, u32::from(pcr))
                    .unwrap_or_default(),
            };
            if &value != quoted {
                return Err(BootPolicyError::ReplayMismatch {
                    pcr,
                    alg: self.alg,
                    replayed: value,
                    quoted: quoted.clone(),
                });
            }
        }
        let compared = |pcr: u32| {
            u8::try_from(pcr)
                .ok()
                .filter(|p| self.pcrs.contains(p) && !self.replay_only.contains(p))
        };
        let mut matched = vec![false; self.references.len()];
        for (index, event) in log.events.iter().enumerate() {
            let Some(pcr) = compared(event.pcr) else {
                continue;
            };
            if !event.is_measured() {
                continue;
            }
            // replay() succeeded, so every measured event has a digest in this bank.
            let digest = event.digest(self.alg).unwrap_or_default();
            let mut found = false;
            for (r, m) in self.references.iter().zip(matched.iter_mut()) {
                if r.matches(pcr, event, digest) {
                    *m = true;
                    found = true;
                }
            }
            if !found {
                return Err(BootPolicyError::NotReference {
                    pcr,
                    index,
                    event_type: event.event_type,
                    digest: digest.to_vec(),
                });
            }
        }
        for (r, m) in self.references.iter().zip(&matched) {
            if r.required && !m {
                return Err(BootPolicyError::Missing {
                    pcr: r.pcr,
                    event_type: r.event_type,
                    digest: r.digest.clone(),
                    source: r.source.clone(),
                });
            }
        }
        Ok(())
    }
}
