//! Reads the SVSM services manifest the way a remote verifier sees it.
//!
//! Layout (SVSM specification, pub. 58019, "Services Manifest"): header GUID
//! 63849ebb-3d92-4670-a1ff-58f9c94b87bb, u32 total length, u32 entry count, then entries
//! of {GUID, u32 offset, u32 length} whose offsets count from the start of the manifest.
//! GUIDs are stored in the mixed-endian UEFI byte order. This reader is written apart
//! from the SVSM's builder on purpose, so the two cannot share a mistake unnoticed.

use crate::Error;

/// A GUID in its textual field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid {
    /// First field (stored little-endian).
    pub d1: u32,
    /// Second field (stored little-endian).
    pub d2: u16,
    /// Third field (stored little-endian).
    pub d3: u16,
    /// Last eight bytes (stored as they are).
    pub d4: [u8; 8],
}

impl Guid {
    /// The 16 bytes in UEFI order.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.d1.to_le_bytes());
        b[4..6].copy_from_slice(&self.d2.to_le_bytes());
        b[6..8].copy_from_slice(&self.d3.to_le_bytes());
        b[8..16].copy_from_slice(&self.d4);
        b
    }
}

/// The services manifest header GUID.
pub const MANIFEST_GUID: Guid = Guid {
    d1: 0x6384_9ebb,
    d2: 0x3d92,
    d3: 0x4670,
    d4: [0xa1, 0xff, 0x58, 0xf9, 0xc9, 0x4b, 0x87, 0xbb],
};

/// The vTPM service GUID; its manifest entry is the EK's TPMT_PUBLIC.
pub const VTPM_GUID: Guid = Guid {
    d1: 0xc476_f1eb,
    d2: 0x0123,
    d3: 0x45a5,
    d4: [0x96, 0x41, 0xb4, 0xe7, 0xdd, 0xe5, 0xbf, 0xe3],
};

const HEADER_SIZE: usize = 24;
const ENTRY_SIZE: usize = 24;

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(v)
}

/// Finds the data of the service with `guid` in a services manifest.
pub fn find_service(manifest: &[u8], guid: Guid) -> Result<Option<&[u8]>, Error> {
    if manifest.len() < HEADER_SIZE {
        return Err(Error::ManifestFormat("shorter than its header"));
    }
    if manifest[..16] != MANIFEST_GUID.to_bytes() {
        return Err(Error::ManifestFormat("wrong header GUID"));
    }
    let total = u32_at(manifest, 16) as usize;
    if total != manifest.len() {
        return Err(Error::ManifestFormat(
            "total length differs from the data's length",
        ));
    }
    let count = u32_at(manifest, 20) as usize;
    let table_end = count
        .checked_mul(ENTRY_SIZE)
        .and_then(|n| n.checked_add(HEADER_SIZE))
        .filter(|&end| end <= total)
        .ok_or(Error::ManifestFormat("entry table exceeds the manifest"))?;
    let mut found = None;
    for entry in manifest[HEADER_SIZE..table_end].chunks_exact(ENTRY_SIZE) {
        let offset = u32_at(entry, 16) as usize;
        let len = u32_at(entry, 20) as usize;
        let data = offset
            .checked_add(len)
            .filter(|&end| offset >= table_end && end <= total)
            .map(|end| &manifest[offset..end])
            .ok_or(Error::ManifestFormat("entry data outside the manifest"))?;
        if entry[..16] == guid.to_bytes() {
            if found.is_some() {
                return Err(Error::ManifestFormat("service listed twice"));
            }
            found = Some(data);
        }
    }
    Ok(found)
}

/// The EK TPMT_PUBLIC from the manifest's vTPM entry.
pub fn vtpm_ek(manifest: &[u8]) -> Result<&[u8], Error> {
    find_service(manifest, VTPM_GUID)?.ok_or(Error::ManifestNoVtpm)
}

/// Builds a manifest from (GUID, data) pairs; for tests and tools that need one.
pub fn build(services: &[(Guid, &[u8])]) -> Vec<u8> {
    let table_end = HEADER_SIZE + services.len() * ENTRY_SIZE;
    let total = table_end + services.iter().map(|(_, d)| d.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MANIFEST_GUID.to_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(services.len() as u32).to_le_bytes());
    let mut offset = table_end;
    for (guid, data) in services {
        out.extend_from_slice(&guid.to_bytes());
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        offset += data.len();
    }
    for (_, data) in services {
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_bytes_are_mixed_endian() {
        assert_eq!(
            VTPM_GUID.to_bytes(),
            [
                0xeb, 0xf1, 0x76, 0xc4, 0x23, 0x01, 0xa5, 0x45, 0x96, 0x41, 0xb4, 0xe7, 0xdd, 0xe5,
                0xbf, 0xe3
            ]
        );
    }

    #[test]
    fn finds_the_vtpm_entry() {
        let m = build(&[(VTPM_GUID, b"ek bytes")]);
        assert_eq!(vtpm_ek(&m), Ok(&b"ek bytes"[..]));
    }

    #[test]
    fn rejects_malformed_manifests() {
        let m = build(&[(VTPM_GUID, b"ek bytes")]);
        assert_eq!(
            vtpm_ek(&m[..20]),
            Err(Error::ManifestFormat("shorter than its header"))
        );
        let mut bad = m.clone();
        bad[0] ^= 1;
        assert_eq!(
            vtpm_ek(&bad),
            Err(Error::ManifestFormat("wrong header GUID"))
        );
        let mut bad = m.clone();
        bad.push(0);
        assert!(matches!(vtpm_ek(&bad), Err(Error::ManifestFormat(_))));
        let mut bad = m.clone();
        bad[HEADER_SIZE + 20] = 0xff; // entry length
        assert_eq!(
            vtpm_ek(&bad),
            Err(Error::ManifestFormat("entry data outside the manifest"))
        );
        let mut bad = m.clone();
        bad[20] = 200; // entry count
        assert_eq!(
            vtpm_ek(&bad),
            Err(Error::ManifestFormat("entry table exceeds the manifest"))
        );
        let other = Guid {
            d1: 1,
            d2: 2,
            d3: 3,
            d4: [4; 8],
        };
        assert_eq!(
            vtpm_ek(&build(&[(other, b"x")])),
            Err(Error::ManifestNoVtpm)
        );
        assert!(vtpm_ek(&build(&[(VTPM_GUID, b"a"), (VTPM_GUID, b"b")])).is_err());
    }
}
