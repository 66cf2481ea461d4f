//! The vTPM's start-up evidence: a report at VMPL0 over VMPCK0 for
//! [`vtpm::Service::provision`], with the VCEK certificate when the host supplies its
//! certificate table.
//!
//! The same messenger (and so the same sequence numbers) then serves the attestation
//! protocol: provisioning runs before any guest call, so the two never interleave.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use vtpm::{HardwareEvidence, ReportSource};

use super::{GuestMessenger, PspTransport};

/// The VCEK's entry in the host's certificate table: GUID
/// 63da758d-e664-4564-adc5-f4b93be8accd (GHCB, "SNP Extended Guest Request"), mixed-endian.
pub const VCEK_TABLE_GUID: [u8; 16] = [
    0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd,
];

/// The largest host certificate table asked for (the attestation protocol's limit too).
const MAX_CERT_TABLE: usize = 0x4000;

/// Reports for provisioning from `transport` with `messenger`.
pub struct PspReports<'a, T: PspTransport + ?Sized> {
    messenger: &'a mut GuestMessenger,
    transport: &'a T,
    extended: bool,
}

impl<T: PspTransport + ?Sized> core::fmt::Debug for PspReports<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PspReports")
            .field("extended", &self.extended)
            .finish_non_exhaustive()
    }
}

impl<'a, T: PspTransport + ?Sized> PspReports<'a, T> {
    /// Standard requests only (no certificate table).
    pub fn new(messenger: &'a mut GuestMessenger, transport: &'a T) -> Self {
        Self {
            messenger,
            transport,
            extended: false,
        }
    }

    /// Extended requests, so that the host's certificate table (and the VCEK in it)
    /// comes with the report. Only for transports that implement them: a refused
    /// extended request costs VMPCK0.
    pub fn with_certificates(mut self) -> Self {
        self.extended = true;
        self
    }
}

impl<T: PspTransport + ?Sized> ReportSource for PspReports<'_, T> {
    fn report(&mut self, report_data: &[u8; 64]) -> Result<HardwareEvidence, String> {
        if self.extended {
            let mut table = vec![0u8; MAX_CERT_TABLE];
            let (report, len) = self
                .messenger
                .get_extended_report(self.transport, report_data, 0, &mut table)
                .map_err(|e| alloc::format!("the PSP gave no report: {e:?}"))?;
            let vcek = table.get(..len).and_then(vcek_from_table);
            return Ok(HardwareEvidence {
                report: report.to_vec(),
                vcek,
            });
        }
        let report = self
            .messenger
            .get_report(self.transport, report_data, 0)
            .map_err(|e| alloc::format!("the PSP gave no report: {e:?}"))?;
        Ok(HardwareEvidence {
            report: report.to_vec(),
            vcek: None,
        })
    }
}

/// Provisions the vTPM's endorsement evidence before any guest code runs, with reports
/// from `reports` (`None`: no PSP, e.g. QEMU without SEV), and logs what it did. An error
/// means the platform hierarchy could not be withheld: the caller must not serve.
pub fn provision_vtpm<E: vtpm::Engine>(
    service: &mut vtpm::Service<E>,
    reports: Option<&mut dyn ReportSource>,
) -> Result<vtpm::Provisioned, vtpm::StartupError> {
    let done = service.provision(reports)?;
    match &done.uncertified {
        None => {
            for (index, size) in &done.indices {
                log::info!("vTPM: NV index {index:#010x} holds {size} bytes (write-locked)");
            }
            log::info!(
                "vTPM: EK certificates issued by this boot's endorsement CA, whose key an SNP \
                 report binds; platform hierarchy disabled (phEnable clear)"
            );
        }
        Some(reason) => log::warn!(
            "vTPM: no EK certificates ({reason}): the EK certificate indices stay absent; \
             platform hierarchy disabled (phEnable clear)"
        ),
    }
    Ok(done)
}

/// The VCEK certificate in a host certificate table ({GUID, u32 offset, u32 length}
/// entries, little-endian, ended by an all-zero entry), if it is there and whole.
pub fn vcek_from_table(table: &[u8]) -> Option<Vec<u8>> {
    for entry in table.chunks(24) {
        let entry: &[u8; 24] = entry.try_into().ok()?;
        if entry.iter().all(|&b| b == 0) {
            return None;
        }
        if entry[..16] != VCEK_TABLE_GUID {
            continue;
        }
        let field = |at: usize| {
            entry
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(|b| u32::from_le_bytes(b) as usize)
        };
        let (offset, len) = (field(16)?, field(20)?);
        return table
            .get(offset..offset.checked_add(len)?)
            .map(<[u8]>::to_vec);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vcek_is_found_by_its_guid_and_a_bad_entry_yields_none() {
        let mut table = Vec::new();
        table.extend_from_slice(&[0x11; 16]);
        table.extend_from_slice(&72u32.to_le_bytes());
        table.extend_from_slice(&1u32.to_le_bytes());
        table.extend_from_slice(&VCEK_TABLE_GUID);
        table.extend_from_slice(&73u32.to_le_bytes());
        table.extend_from_slice(&2u32.to_le_bytes());
        table.extend_from_slice(&[0; 24]);
        table.extend_from_slice(&[0xAA, 0xBB, 0xCC]);
        assert_eq!(vcek_from_table(&table), Some(vec![0xBB, 0xCC]));
        table[40..44].copy_from_slice(&74u32.to_le_bytes());
        assert_eq!(vcek_from_table(&table), None);
        assert_eq!(vcek_from_table(&[0; 24]), None);
    }
}
