//! The TCG PC Client crypto-agile event log, as Linux exposes it in
//! `/sys/kernel/security/tpm0/binary_bios_measurements`, and its replay per PCR bank.
//!
//! References are to the TCG PC Client Platform Firmware Profile Specification (PFP),
//! Family "2.0", Revision 1.04, whose section numbers Trusted Firmware-A and go-tcglog
//! cite as well:
//! - §9.2.1 TCG_PCR_EVENT, the SHA-1 ("legacy") event structure of the log's first event;
//! - §9.2.2 TCG_PCR_EVENT2, every later event: PCR index, event type, a
//!   TPML_DIGEST_VALUES (one digest per active bank) and the event data;
//! - §9.4.5.1 TCG_EfiSpecIdEvent ("Spec ID Event03"), the first event's data: the banks
//!   and the size of each bank's digests, which later events do not repeat;
//! - §9.4.5.3 TCG_EfiStartupLocalityEvent ("StartupLocality"): the locality from which
//!   the platform sent TPM2_Startup, which is PCR 0's initial value;
//! - §9.4.1 the event types, and §9.4.5 EV_NO_ACTION events, which are logged but not
//!   extended into any PCR.
//!
//! All integers are little-endian. The parser is bounded by its input: every length is
//! checked against what is left, so a truncated or hostile log yields an
//! [`Error::EventLog`] naming the event index and byte offset, never a panic.

use std::collections::BTreeMap;

use sha2::Digest;

use crate::Error;

/// TPM_ALG_SHA1.
pub const ALG_SHA1: u16 = 0x0004;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000B;
/// TPM_ALG_SHA384.
pub const ALG_SHA384: u16 = 0x000C;
/// TPM_ALG_SHA512.
pub const ALG_SHA512: u16 = 0x000D;

/// EV_NO_ACTION (§9.4.1): logged, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// EV_SEPARATOR (§9.4.1).
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// EV_EVENT_TAG (§9.4.1): a tagged event (TCG_PCClientTaggedEvent, §9.4.2), which
/// Linux's EFI stub uses for the initrd and the command line in PCR 9.
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
/// EV_EFI_BOOT_SERVICES_APPLICATION (§9.4.1): a UEFI application the firmware started,
/// measured by its PE Authenticode digest into PCR 4.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;

/// EV_EFI_PLATFORM_FIRMWARE_BLOB (§9.4.1): a firmware volume, by base and length.
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
/// EV_EFI_PLATFORM_FIRMWARE_BLOB2 (§9.4.1): a firmware volume, with a description.
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000A;

/// The PCRs a PC Client TPM has (§3.3.4: PCR 0 to 23).
pub const PCR_COUNT: u32 = 24;

/// More events than any firmware logs; the parser stops there rather than allocate on.
pub const MAX_EVENTS: usize = 1 << 16;

/// Signature of the first event's data (§9.4.5.1), NUL included.
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// Signature of the StartupLocality event's data (§9.4.5.3), NUL included.
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";

/// A parsed event log: the banks the Spec ID event declares, and every event in order
/// (the first, SHA-1 format, Spec ID event included, as `tpm2_eventlog` numbers them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// (TPM_ALG_ID, digest size) of every bank, as the Spec ID event lists them.
    pub banks: Vec<(u16, usize)>,
    /// The events, the Spec ID event first.
    pub events: Vec<Event>,
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The PCR the event is extended into (unless it is EV_NO_ACTION).
    pub pcr: u32,
    /// The event type (§9.4.1), e.g. [`EV_SEPARATOR`].
    pub event_type: u32,
    /// (TPM_ALG_ID, digest) per bank, in the order the log gives them.
    pub digests: Vec<(u16, Vec<u8>)>,
    /// The event data.
    pub data: Vec<u8>,
}

impl Event {
    /// This event's digest in bank `alg`, if it has one.
    pub fn digest(&self, alg: u16) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }

    /// Whether the event is extended into its PCR (everything but EV_NO_ACTION, §9.4.5).
    pub fn is_measured(&self) -> bool {
        self.event_type != EV_NO_ACTION
    }

    /// The tagged event ID of an EV_EVENT_TAG event (the first field of its
    /// TCG_PCClientTaggedEvent data, §9.4.2), e.g. Linux's initrd or load options tag.
    pub fn tag(&self) -> Option<u32> {
        if self.event_type != EV_EVENT_TAG {
            return None;
        }
        let id = self.data.get(..4)?;
        Some(u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
    }

    /// The locality of a StartupLocality event (§9.4.5.3), if this is one.
    pub fn startup_locality(&self) -> Option<u8> {
        if self.event_type != EV_NO_ACTION || self.pcr != 0 {
            return None;
        }
        match self
            .data
            .strip_prefix(STARTUP_LOCALITY_SIGNATURE.as_slice())
        {
            Some([locality]) => Some(*locality),
            _ => None,
        }
    }
}

/// A bounds-checked little-endian reader over the log.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.offset.checked_add(len)?;
        let out = self.bytes.get(self.offset..end)?;
        self.offset = end;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }

    fn is_empty(&self) -> bool {
        self.offset >= self.bytes.len()
    }
}

/// The error for event `index` starting at byte `offset`.
fn err(index: usize, offset: usize, why: impl core::fmt::Display) -> Error {
    Error::EventLog(format!("event {index} (offset {offset:#x}): {why}"))
}

/// The name of a TPM_ALG_ID as tpm2-tools and the policy file spell it.
pub fn alg_name(alg: u16) -> Option<&'static str> {
    Some(match alg {
        ALG_SHA1 => "sha1",
        ALG_SHA256 => "sha256",
        ALG_SHA384 => "sha384",
        ALG_SHA512 => "sha512",
        0x0012 => "sm3_256",
        _ => return None,
    })
}

/// The TPM_ALG_ID for a name of [`alg_name`].
pub fn alg_from_name(name: &str) -> Option<u16> {
    Some(match name {
        "sha1" => ALG_SHA1,
        "sha256" => ALG_SHA256,
        "sha384" => ALG_SHA384,
        "sha512" => ALG_SHA512,
        "sm3_256" => 0x0012,
        _ => return None,
    })
}

/// The name of an event type (§9.4.1), `None` for a value the profile does not define.
pub fn event_type_name(event_type: u32) -> Option<&'static str> {
    Some(match event_type {
        0x0000_0000 => "EV_PREBOOT_CERT",
        0x0000_0001 => "EV_POST_CODE",
        0x0000_0002 => "EV_UNUSED",
        0x0000_0003 => "EV_NO_ACTION",
        0x0000_0004 => "EV_SEPARATOR",
        0x0000_0005 => "EV_ACTION",
        0x0000_0006 => "EV_EVENT_TAG",
        0x0000_0007 => "EV_S_CRTM_CONTENTS",
        0x0000_0008 => "EV_S_CRTM_VERSION",
        0x0000_0009 => "EV_CPU_MICROCODE",
        0x0000_000A => "EV_PLATFORM_CONFIG_FLAGS",
        0x0000_000B => "EV_TABLE_OF_DEVICES",
        0x0000_000C => "EV_COMPACT_HASH",
        0x0000_000D => "EV_IPL",
        0x0000_000E => "EV_IPL_PARTITION_DATA",
        0x0000_000F => "EV_NONHOST_CODE",
        0x0000_0010 => "EV_NONHOST_CONFIG",
        0x0000_0011 => "EV_NONHOST_INFO",
        0x0000_0012 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x0000_0013 => "EV_POST_CODE2",
        0x8000_0000 => "EV_EFI_EVENT_BASE",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
        0x8000_000D => "EV_EFI_GPT_EVENT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        0x8000_00E3 => "EV_EFI_SPDM_DEVICE_POLICY",
        0x8000_00E4 => "EV_EFI_SPDM_DEVICE_AUTHORITY",
        _ => return None,
    })
}

/// The event type for a name of [`event_type_name`] or a number (`0x80000003`).
pub fn event_type_from_name(name: &str) -> Option<u32> {
    if let Some(hex) = name.strip_prefix("0x") {
        return u32::from_str_radix(hex, 16).ok();
    }
    (0..=0x13)
        .chain(0x8000_0000..=0x8000_0010)
        .chain(0x8000_00E0..=0x8000_00E4)
        .find(|t| event_type_name(*t) == Some(name))
}

/// A printable name for an event type: its name, or its number in hex.
pub fn event_type_label(event_type: u32) -> String {
    event_type_name(event_type)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{event_type:#010x}"))
}

/// The hash of bank `alg`, or `None` if this verifier cannot compute it.
pub(crate) fn hash(alg: u16, parts: &[&[u8]]) -> Option<Vec<u8>> {
    fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut h = D::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().to_vec()
    }
    Some(match alg {
        ALG_SHA1 => run::<sha1::Sha1>(parts),
        ALG_SHA256 => run::<sha2::Sha256>(parts),
        ALG_SHA384 => run::<sha2::Sha384>(parts),
        ALG_SHA512 => run::<sha2::Sha512>(parts),
        _ => return None,
    })
}

impl EventLog {
    /// Parses a crypto-agile log: the SHA-1 format Spec ID event (§9.2.1, §9.4.5.1),
    /// then TCG_PCR_EVENT2 records (§9.2.2) to the end of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<EventLog, Error> {
        let mut r = Reader { bytes, offset: 0 };
        let (first, banks) = Self::parse_spec_id(&mut r)?;
        let mut events = vec![first];
        while !r.is_empty() {
            let index = events.len();
            if index >= MAX_EVENTS {
                return Err(err(
                    index,
                    r.offset,
                    format_args!("more than {MAX_EVENTS} events"),
                ));
            }
            events.push(Self::parse_event2(&mut r, index, &banks)?);
        }
        Ok(EventLog { banks, events })
    }

    /// The first event: a TCG_PCR_EVENT (SHA-1 format) in PCR 0 of type EV_NO_ACTION
    /// whose data is a TCG_EfiSpecIdEvent.
    fn parse_spec_id(r: &mut Reader<'_>) -> Result<(Event, Vec<(u16, usize)>), Error> {
        let at = r.offset;
        let short = |what: &str| err(0, at, format_args!("truncated in the {what}"));
        let pcr = r.u32().ok_or_else(|| short("PCR index"))?;
        let event_type = r.u32().ok_or_else(|| short("event type"))?;
        let digest = r.take(20).ok_or_else(|| short("SHA-1 digest"))?.to_vec();
        let size = r.u32().ok_or_else(|| short("event size"))? as usize;
        let data = r.take(size).ok_or_else(|| {
            err(
                0,
                at,
                format_args!("event data of {size} bytes runs past the end of the log"),
            )
        })?;
        if pcr != 0 || event_type != EV_NO_ACTION {
            return Err(err(
                0,
                at,
                format_args!(
                    "the first event is PCR {pcr} {}, not the PCR 0 EV_NO_ACTION Spec ID \
                     event (is this a SHA-1-only log? only crypto-agile logs are supported)",
                    event_type_label(event_type)
                ),
            ));
        }
        let mut d = Reader {
            bytes: data,
            offset: 0,
        };
        let spec = |why: &str| err(0, at, format_args!("Spec ID event: {why}"));
        if d.take(16) != Some(SPEC_ID_SIGNATURE.as_slice()) {
            return Err(spec("no \"Spec ID Event03\" signature"));
        }
        let _platform_class = d.u32().ok_or_else(|| spec("truncated"))?;
        let _version = d.take(3).ok_or_else(|| spec("truncated"))?;
        let _uintn_size = d.u8().ok_or_else(|| spec("truncated"))?;
        let count = d.u32().ok_or_else(|| spec("truncated"))?;
        if count == 0 {
            return Err(spec("no algorithms"));
        }
        // Each entry takes four bytes, so a larger count cannot fit in the data.
        if count as usize > data.len() / 4 {
            return Err(spec(&format!("{count} algorithms do not fit in the event")));
        }
        let mut banks: Vec<(u16, usize)> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let alg = d.u16().ok_or_else(|| spec("truncated algorithm list"))?;
            let size = d.u16().ok_or_else(|| spec("truncated algorithm list"))? as usize;
            if size == 0 {
                return Err(spec(&format!("algorithm {alg:#06x} has digest size 0")));
            }
            if let Some(known) = hash(alg, &[]) {
                if known.len() != size {
                    return Err(spec(&format!(
                        "algorithm {alg:#06x} has digest size {size}, not {}",
                        known.len()
                    )));
                }
            }
            if banks.iter().any(|(a, _)| *a == alg) {
                return Err(spec(&format!("algorithm {alg:#06x} listed twice")));
            }
            banks.push((alg, size));
        }
        let vendor_size = d
            .u8()
            .ok_or_else(|| spec("truncated before vendorInfoSize"))?;
        d.take(vendor_size as usize)
            .ok_or_else(|| spec("vendor info runs past the event"))?;
        if !d.is_empty() {
            return Err(spec("bytes after the vendor info"));
        }
        let event = Event {
            pcr,
            event_type,
            digests: vec![(ALG_SHA1, digest)],
            data: data.to_vec(),
        };
        Ok((event, banks))
    }

    /// A TCG_PCR_EVENT2 (§9.2.2).
    fn parse_event2(
        r: &mut Reader<'_>,
        index: usize,
        banks: &[(u16, usize)],
    ) -> Result<Event, Error> {
        let at = r.offset;
        let short = |what: &str| err(index, at, format_args!("truncated in the {what}"));
        let pcr = r.u32().ok_or_else(|| short("PCR index"))?;
        let event_type = r.u32().ok_or_else(|| short("event type"))?;
        if pcr >= PCR_COUNT {
            return Err(err(
                index,
                at,
                format_args!("PCR index {pcr} (a PC Client TPM has PCRs 0 to 23)"),
            ));
        }
        let count = r.u32().ok_or_else(|| short("digest count"))?;
        if count as usize > banks.len() {
            return Err(err(
                index,
                at,
                format_args!(
                    "{count} digests, but the Spec ID event lists {} banks",
                    banks.len()
                ),
            ));
        }
        let mut digests: Vec<(u16, Vec<u8>)> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let alg = r.u16().ok_or_else(|| short("digest list"))?;
            let Some(&(_, size)) = banks.iter().find(|(a, _)| *a == alg) else {
                return Err(err(
                    index,
                    at,
                    format_args!(
                        "digest of algorithm {alg:#06x}, which the Spec ID event does not list"
                    ),
                ));
            };
            if digests.iter().any(|(a, _)| *a == alg) {
                return Err(err(
                    index,
                    at,
                    format_args!("two digests of algorithm {alg:#06x}"),
                ));
            }
            let digest = r.take(size).ok_or_else(|| short("digest list"))?;
            digests.push((alg, digest.to_vec()));
        }
        let size = r.u32().ok_or_else(|| short("event size"))? as usize;
        let data = r.take(size).ok_or_else(|| {
            err(
                index,
                at,
                format_args!("event data of {size} bytes runs past the end of the log"),
            )
        })?;
        Ok(Event {
            pcr,
            event_type,
            digests,
            data: data.to_vec(),
        })
    }

    /// The digest size of bank `alg`, if the log has that bank.
    pub fn digest_size(&self, alg: u16) -> Option<usize> {
        self.banks.iter().find(|(a, _)| *a == alg).map(|(_, s)| *s)
    }

    /// PCR `pcr`'s value at start-up in bank `alg` (before any event): zeros, except PCR 0
    /// after a StartupLocality event (§9.4.5.3), whose last byte is the locality.
    pub fn initial_value(&self, alg: u16, pcr: u32) -> Option<Vec<u8>> {
        let size = self.digest_size(alg)?;
        let mut value = vec![0u8; size];
        if pcr == 0 {
            if let Some(locality) = self.events.iter().find_map(Event::startup_locality) {
                value[size - 1] = locality;
            }
        }
        Some(value)
    }

    /// Replays the log in bank `alg`: every PCR some measured event extends (and PCR 0
    /// when a StartupLocality event sets its initial value), with the value it must hold
    /// afterwards. A PCR absent from the map holds its [initial value](Self::initial_value).
    pub fn replay(&self, alg: u16) -> Result<BTreeMap<u32, Vec<u8>>, Error> {
        let Some(size) = self.digest_size(alg) else {
            return Err(Error::EventLog(format!(
                "the log has no {} bank (it has {})",
                alg_label(alg),
                self.banks
                    .iter()
                    .map(|(a, _)| alg_label(*a))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if hash(alg, &[]).is_none() {
            return Err(Error::EventLog(format!(
                "cannot replay the {} bank: unsupported hash",
                alg_label(alg)
            )));
        }
        let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        if self.events.iter().any(|e| e.startup_locality().is_some()) {
            pcrs.insert(0, self.initial_value(alg, 0).unwrap_or_default());
        }
        for (index, event) in self.events.iter().enumerate() {
            if !event.is_measured() {
                continue;
            }
            let Some(digest) = event.digest(alg) else {
                return Err(Error::EventLog(format!(
                    "event {index} (PCR {}, {}) has no {} digest",
                    event.pcr,
                    event_type_label(event.event_type),
                    alg_label(alg)
                )));
            };
            let value = pcrs.entry(event.pcr).or_insert_with(|| vec![0u8; size]);
            *value = hash(alg, &[value, digest]).unwrap_or_default();
        }
        Ok(pcrs)
    }
}

/// The name of a bank, or its number in hex.
pub fn alg_label(alg: u16) -> String {
    alg_name(alg)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{alg:#06x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal log: Spec ID (sha1, sha256), StartupLocality 3, one PCR 0 event and one
    /// PCR 4 event.
    pub(crate) fn tiny_log() -> Vec<u8> {
        let mut spec = Vec::new();
        spec.extend_from_slice(SPEC_ID_SIGNATURE);
        spec.extend_from_slice(&0u32.to_le_bytes());
        spec.extend_from_slice(&[0, 2, 0, 2]);
        spec.extend_from_slice(&2u32.to_le_bytes());
        for (alg, size) in [(ALG_SHA1, 20u16), (ALG_SHA256, 32)] {
            spec.extend_from_slice(&alg.to_le_bytes());
            spec.extend_from_slice(&size.to_le_bytes());
        }
        spec.push(0);
        let mut log = Vec::new();
        log.extend_from_slice(&0u32.to_le_bytes());
        log.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        log.extend_from_slice(&[0; 20]);
        log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        log.extend_from_slice(&spec);
        let mut locality = STARTUP_LOCALITY_SIGNATURE.to_vec();
        locality.push(3);
        for (pcr, ty, data) in [
            (0u32, EV_NO_ACTION, locality),
            (0, 0x8, b"version".to_vec()),
            (4, EV_EFI_BOOT_SERVICES_APPLICATION, b"app".to_vec()),
        ] {
            log.extend_from_slice(&pcr.to_le_bytes());
            log.extend_from_slice(&ty.to_le_bytes());
            log.extend_from_slice(&2u32.to_le_bytes());
            for alg in [ALG_SHA1, ALG_SHA256] {
                let digest = if ty == EV_NO_ACTION {
                    vec![0; hash(alg, &[]).unwrap().len()]
                } else {
                    hash(alg, &[&data]).unwrap()
                };
                log.extend_from_slice(&alg.to_le_bytes());
                log.extend_from_slice(&digest);
            }
            log.extend_from_slice(&(data.len() as u32).to_le_bytes());
            log.extend_from_slice(&data);
        }
        log
    }

    #[test]
    fn parses_and_replays_a_tiny_log_with_startup_locality() {
        let log = EventLog::parse(&tiny_log()).unwrap();
        assert_eq!(log.banks, vec![(ALG_SHA1, 20), (ALG_SHA256, 32)]);
        assert_eq!(log.events.len(), 4);
        assert_eq!(log.events[1].startup_locality(), Some(3));
        let pcrs = log.replay(ALG_SHA256).unwrap();
        let mut init = vec![0u8; 32];
        init[31] = 3;
        let d0 = hash(ALG_SHA256, &[b"version"]).unwrap();
        assert_eq!(pcrs[&0], hash(ALG_SHA256, &[&init, &d0]).unwrap());
        let d4 = hash(ALG_SHA256, &[b"app"]).unwrap();
        assert_eq!(pcrs[&4], hash(ALG_SHA256, &[&[0u8; 32], &d4]).unwrap());
        assert_eq!(pcrs.len(), 2);
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_event() {
        let bytes = tiny_log();
        for len in 0..bytes.len() {
            let e = EventLog::parse(&bytes[..len]);
            // Cutting exactly at an event boundary leaves a valid shorter log.
            if let Err(Error::EventLog(msg)) = &e {
                assert!(msg.starts_with("event "), "{msg}");
            } else {
                let log = e.unwrap();
                assert!(log.events.len() < 4);
            }
        }
    }

    #[test]
    fn unknown_bank_and_bad_first_event_are_refused() {
        let log = EventLog::parse(&tiny_log()).unwrap();
        let e = log.replay(ALG_SHA384).unwrap_err().to_string();
        assert!(e.contains("no sha384 bank"), "{e}");
        let mut bytes = tiny_log();
        bytes[4] = 1; // first event type EV_POST_CODE
        let e = EventLog::parse(&bytes).unwrap_err().to_string();
        assert!(e.contains("event 0 (offset 0x0)"), "{e}");
        assert!(e.contains("EV_POST_CODE"), "{e}");
    }

    #[test]
    fn event_type_names_round_trip() {
        for t in [
            EV_NO_ACTION,
            EV_EVENT_TAG,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            0x8000_00E0,
        ] {
            assert_eq!(event_type_from_name(event_type_name(t).unwrap()), Some(t));
        }
        assert_eq!(event_type_from_name("0x1234"), Some(0x1234));
        assert_eq!(event_type_label(0x1234), "0x00001234");
    }
}
