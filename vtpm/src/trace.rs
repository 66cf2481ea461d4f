//! A recording of vTPM traffic: the commands a client sent and the responses it got, in
//! order, with the power cycles between them.
//!
//! `vtpm-daemon --trace FILE` writes one; the fuzz targets in `fuzz/` replay them as
//! seeds (real tpm2-tools sessions, OVMF's measured boot and Linux's TPM probe, not
//! commands a fuzzer would have to discover). The file is the magic [`MAGIC`] followed
//! by records: a kind byte ([`Kind`]), the locality, a little-endian `u32` length and
//! that many bytes. The recording holds every command in clear, authorization values and
//! sealed data included: it is a debugging and test artifact, never for a production
//! vTPM.

use alloc::vec::Vec;

/// The first bytes of every trace.
pub const MAGIC: &[u8; 8] = b"VTPMTRC1";
/// The largest payload a record may claim (a TPM command or response is at most a few KiB;
/// the transport's buffer is 4 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A command, as the client sent it.
    Command = 0,
    /// The response the client got.
    Response = 1,
    /// The TPM was powered on (payload empty).
    PowerOn = 2,
    /// The TPM was powered off (payload empty).
    PowerOff = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Command),
            1 => Some(Self::Response),
            2 => Some(Self::PowerOn),
            3 => Some(Self::PowerOff),
            _ => None,
        }
    }
}

/// One record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// What it holds.
    pub kind: Kind,
    /// The locality of the command (0 for the others).
    pub locality: u8,
    /// The command or response bytes.
    pub payload: &'a [u8],
}

/// Why a trace does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceError {
    /// The file does not start with [`MAGIC`].
    Magic,
    /// The record at this byte offset is cut short.
    Truncated(usize),
    /// The record at this byte offset has an unknown kind.
    Kind(usize),
    /// The record at this byte offset claims more than [`MAX_PAYLOAD`] bytes.
    TooLarge(usize),
}

impl core::fmt::Display for TraceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Magic => write!(f, "not a vTPM trace (no VTPMTRC1 magic)"),
            Self::Truncated(at) => write!(f, "the record at byte {at} is cut short"),
            Self::Kind(at) => write!(f, "the record at byte {at} has an unknown kind"),
            Self::TooLarge(at) => write!(
                f,
                "the record at byte {at} claims more than {MAX_PAYLOAD} bytes"
            ),
        }
    }
}

/// Appends one record's encoding to `out` (the caller writes [`MAGIC`] first).
pub fn encode(out: &mut Vec<u8>, kind: Kind, locality: u8, payload: &[u8]) {
    out.push(kind as u8);
    out.push(locality);
    // A payload larger than u32::MAX cannot come from a TPM transport; clamp the claim so
    // that the record stays parseable as a truncated one rather than wrapping.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The records of `trace`, in order; the first malformed one ends the iteration with its
/// error.
pub fn records(trace: &[u8]) -> Result<Records<'_>, TraceError> {
    let rest = trace
        .strip_prefix(MAGIC.as_slice())
        .ok_or(TraceError::Magic)?;
    Ok(Records {
        rest,
        offset: MAGIC.len(),
    })
}

/// Iterator over a trace's records (see [`records`]).
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let at = self.offset;
        let result = (|| {
            let (&[kind, locality], rest) = self
                .rest
                .split_first_chunk::<2>()
                .ok_or(TraceError::Truncated(at))?;
            let kind = Kind::from_u8(kind).ok_or(TraceError::Kind(at))?;
            let (len, rest) = rest
                .split_first_chunk::<4>()
                .ok_or(TraceError::Truncated(at))?;
            let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
            if len > MAX_PAYLOAD {
                return Err(TraceError::TooLarge(at));
            }
            let payload = rest.get(..len).ok_or(TraceError::Truncated(at))?;
            let rest = rest.get(len..).unwrap_or_default();
            Ok((
                Record {
                    kind,
                    locality,
                    payload,
                },
                rest,
            ))
        })();
        match result {
            Ok((record, rest)) => {
                self.offset += self.rest.len() - rest.len();
                self.rest = rest;
                Some(Ok(record))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut t = MAGIC.to_vec();
        encode(&mut t, Kind::PowerOn, 0, &[]);
        encode(&mut t, Kind::Command, 0, &[0x80, 1, 0, 0, 0, 12]);
        encode(
            &mut t,
            Kind::Response,
            0,
            &[0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0],
        );
        let got: Vec<_> = records(&t).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].kind, Kind::PowerOn);
        assert_eq!(got[1].payload, &[0x80, 1, 0, 0, 0, 12]);
        assert_eq!(got[2].kind, Kind::Response);
    }

    #[test]
    fn malformed_traces_are_refused_with_the_offset() {
        assert_eq!(records(b"VTPMTRC0").err(), Some(TraceError::Magic));
        let mut t = MAGIC.to_vec();
        encode(&mut t, Kind::Command, 0, &[1, 2, 3]);
        let whole = t.len();
        t.extend_from_slice(&[9, 0, 0, 0, 0, 0]);
        let got: Vec<_> = records(&t).unwrap().collect();
        assert_eq!(got[1], Err(TraceError::Kind(whole)));
        let mut t = MAGIC.to_vec();
        encode(&mut t, Kind::Command, 0, &[1, 2, 3]);
        t.pop();
        let got: Vec<_> = records(&t).unwrap().collect();
        assert_eq!(got, vec![Err(TraceError::Truncated(8))]);
        let mut t = MAGIC.to_vec();
        t.extend_from_slice(&[0, 0]);
        t.extend_from_slice(&u32::MAX.to_le_bytes());
        let got: Vec<_> = records(&t).unwrap().collect();
        assert_eq!(got, vec![Err(TraceError::TooLarge(8))]);
    }
}
