//! The PSP's secrets page in SVSM memory, and the copy the guest gets.
//!
//! The SVSM reads the secrets page the PSP filled at launch once, keeps VMPCK0 (the key
//! of its guest-message channel to the PSP) only in SVSM memory, and hands the guest a
//! copy built by [`SecretsPage::guest_copy`]: VMPCK0..VMPCK(guest_vmpl-1) zeroed (VMPCK0
//! and VMPCK1 for a guest at VMPL2) and the SVSM fields filled as the SVSM specification
//! (58019, "SVSM Discovery") defines them. The checks are the ones Linux applies when it
//! finds the SVSM (`svsm_setup_ca` in `arch/x86/boot/startup/sev-shared.c`): a non-zero
//! `svsm_size`, a guest VMPL other than 0, a 4 KiB aligned calling area; a copy that
//! would fail them is refused here, before the guest sees it.

use svsm_protocol::secrets::{SecretsPage, SvsmInfo, SECRETS_PAGE_SIZE};
use zerocopy::IntoBytes;

use super::SnpError;

/// The SVSM's own secrets: the PSP's page and the VMPCK0 it holds.
pub struct SvsmSecrets {
    page: SecretsPage,
}

impl core::fmt::Debug for SvsmSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SvsmSecrets").finish_non_exhaustive()
    }
}

impl SvsmSecrets {
    /// Parses the PSP's secrets page (copied into SVSM memory by the caller).
    pub fn parse(bytes: &[u8]) -> Result<Self, SnpError> {
        let page = SecretsPage::parse(bytes).map_err(SnpError::Secrets)?;
        Ok(Self { page })
    }

    /// VMPCK0, for the guest-message channel.
    pub fn vmpck0(&self) -> &[u8; 32] {
        &self.page.vmpck0
    }

    /// The page as the PSP wrote it.
    pub fn page(&self) -> &SecretsPage {
        &self.page
    }

    /// The guest's copy, as bytes to place at the GPA the firmware asked for.
    pub fn guest_copy(&self, info: &SvsmInfo) -> Result<[u8; SECRETS_PAGE_SIZE], SnpError> {
        let copy = self.page.guest_copy(info).map_err(SnpError::Secrets)?;
        let mut out = [0u8; SECRETS_PAGE_SIZE];
        out.copy_from_slice(copy.as_bytes());
        Ok(out)
    }

    /// Wipes VMPCK0, after an unrecoverable guest-message error (so an IV is never
    /// reused with it).
    pub fn wipe_vmpck0(&mut self) {
        self.page.vmpck0 = [0; 32];
    }
}

impl Drop for SvsmSecrets {
    fn drop(&mut self) {
        // Keys leave no copy in freed memory; the fence keeps the stores from being
        // dropped as dead.
        for key in [
            &mut self.page.vmpck0,
            &mut self.page.vmpck1,
            &mut self.page.vmpck2,
            &mut self.page.vmpck3,
        ] {
            key.fill(0);
        }
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psp_page() -> [u8; SECRETS_PAGE_SIZE] {
        let mut page = [0u8; SECRETS_PAGE_SIZE];
        page[0] = 3; // version
        for (i, key) in (0x20..0xA0).step_by(0x20).enumerate() {
            page[key..key + 32].fill(0x11 * (i as u8 + 1));
        }
        page[0x100] = 0x5A; // vmsa_tweak_bitmap
        page
    }

    fn info() -> SvsmInfo {
        SvsmInfo {
            base: 0x8000_0000,
            size: 0x100_0000,
            caa: 0x80F000,
            max_version: 1,
            guest_vmpl: 2,
        }
    }

    #[test]
    fn guest_copy_follows_the_svsm_spec() {
        let secrets = SvsmSecrets::parse(&psp_page()).unwrap();
        assert_eq!(secrets.vmpck0(), &[0x11; 32]);
        let copy = secrets.guest_copy(&info()).unwrap();
        // VMPCK0 and VMPCK1 zeroed; VMPCK2 and VMPCK3 kept.
        assert_eq!(&copy[0x20..0x60], &[0u8; 0x40][..]);
        assert_eq!(&copy[0x60..0x80], &[0x33; 32][..]);
        assert_eq!(&copy[0x80..0xA0], &[0x44; 32][..]);
        // svsm_base 0x140, svsm_size 0x148, svsm_caa 0x150, max_version 0x158, vmpl 0x15C.
        assert_eq!(&copy[0x140..0x148], &0x8000_0000u64.to_le_bytes());
        assert_eq!(&copy[0x148..0x150], &0x100_0000u64.to_le_bytes());
        assert_eq!(&copy[0x150..0x158], &0x80F000u64.to_le_bytes());
        assert_eq!(&copy[0x158..0x15C], &1u32.to_le_bytes());
        assert_eq!(copy[0x15C], 2);
        // Everything else is the PSP's.
        assert_eq!(copy[0], 3);
        assert_eq!(copy[0x100], 0x5A);
    }

    #[test]
    fn copies_linux_would_reject_are_refused() {
        let secrets = SvsmSecrets::parse(&psp_page()).unwrap();
        for bad in [
            SvsmInfo { size: 0, ..info() },
            SvsmInfo {
                guest_vmpl: 0,
                ..info()
            },
            SvsmInfo {
                guest_vmpl: 4,
                ..info()
            },
            SvsmInfo {
                caa: 0x80F008,
                ..info()
            },
        ] {
            assert!(
                matches!(secrets.guest_copy(&bad), Err(SnpError::Secrets(_))),
                "{bad:?}"
            );
        }
        assert!(SvsmSecrets::parse(&[0u8; 100]).is_err());
    }

    #[test]
    fn wipe_removes_vmpck0() {
        let mut secrets = SvsmSecrets::parse(&psp_page()).unwrap();
        secrets.wipe_vmpck0();
        assert_eq!(secrets.vmpck0(), &[0; 32]);
    }
}
