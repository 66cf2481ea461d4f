//! The #HV doorbell page and its NAE event, used under SEV-SNP restricted injection.
//!
//! GHCB specification 56421 (version 2.03 and later), "#HV Doorbell Page" NAE event and
//! the doorbell page layout, as Linux (`struct hv_doorbell_page` / `union
//! hv_pending_events`, `SVM_VMGEXIT_HV_DOORBELL_PAGE` in `uapi/asm/svm.h`) and KVM
//! (`sev_snp_hv_doorbell_page`) use them:
//! - the event: `sw_exit_code` 0x8000_0014, `sw_exit_info_1` the request
//!   ([`DoorbellRequest`]), `sw_exit_info_2` the page's GPA (SET); the hypervisor answers
//!   in `sw_exit_info_2` with the preferred (GET_PREFERRED) or registered (SET, QUERY)
//!   GPA, all ones meaning "none";
//! - the page: a 16-bit pending-events word at offset 0 (vector in bits 7:0, NMI bit 8,
//!   #MC bit 9, bits 14:10 reserved, "no further signal" bit 15), the no-EOI-required
//!   byte at offset 2 (bit 0), the rest reserved.
//!
//! The hypervisor writes the page at any time: [`PendingEvents::decode`] accepts every
//! 16-bit value and reports reserved bits instead of failing.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `SVM_VMGEXIT_HV_DOORBELL_PAGE`: the #HV doorbell page NAE event.
pub const SVM_VMGEXIT_HV_DOORBELL_PAGE: u64 = 0x8000_0014;

/// The answer meaning "no page" (GET_PREFERRED: no preference; QUERY: none registered).
pub const NO_DOORBELL_PAGE: u64 = u64::MAX;

/// `sw_exit_info_1` of the doorbell NAE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum DoorbellRequest {
    /// `SVM_VMGEXIT_GET_PREFERRED_HV_DOORBELL_PAGE` (0): the GPA the hypervisor prefers.
    GetPreferred = 0,
    /// `SVM_VMGEXIT_SET_HV_DOORBELL_PAGE` (1): register the page at `sw_exit_info_2`.
    Set = 1,
    /// `SVM_VMGEXIT_QUERY_HV_DOORBELL_PAGE` (2): the GPA registered for this vCPU.
    Query = 2,
    /// `SVM_VMGEXIT_CLEAR_HV_DOORBELL_PAGE` (3): unregister.
    Clear = 3,
}

impl DoorbellRequest {
    /// Decodes `sw_exit_info_1` (a hypervisor model reads a guest's request).
    pub const fn decode(info1: u64) -> Option<Self> {
        match info1 {
            0 => Some(Self::GetPreferred),
            1 => Some(Self::Set),
            2 => Some(Self::Query),
            3 => Some(Self::Clear),
            _ => None,
        }
    }
}

/// Pending vector, bits 7:0 of the pending-events word (0 = none).
pub const PENDING_VECTOR_MASK: u16 = 0x00FF;
/// NMI pending, bit 8.
pub const PENDING_NMI: u16 = 1 << 8;
/// Machine check pending, bit 9.
pub const PENDING_MC: u16 = 1 << 9;
/// Reserved bits 14:10.
pub const PENDING_RESERVED: u16 = 0x7C00;
/// No further signal, bit 15: set while the hypervisor holds back further #HVs; the
/// guest clears it when it takes the events.
pub const PENDING_NO_FURTHER_SIGNAL: u16 = 1 << 15;

/// Offset of the pending-events word in the page.
pub const PENDING_EVENTS_OFFSET: usize = 0;
/// Offset of the no-EOI-required byte in the page.
pub const NO_EOI_REQUIRED_OFFSET: usize = 2;
/// The no-EOI-required flag (bit 0 of its byte): the hypervisor already retired the
/// vector, so the guest must not write the APIC's EOI register.
pub const NO_EOI_REQUIRED: u8 = 1;

/// The pending-events word, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingEvents {
    /// The pending vector (0 = none).
    pub vector: u8,
    /// An NMI is pending.
    pub nmi: bool,
    /// A machine check is pending.
    pub mc: bool,
    /// The hypervisor holds back further #HVs.
    pub no_further_signal: bool,
    /// Reserved bits (14:10) that were set, in place.
    pub reserved: u16,
}

impl PendingEvents {
    /// Decodes any word the hypervisor may have written.
    pub const fn decode(word: u16) -> Self {
        Self {
            vector: (word & PENDING_VECTOR_MASK) as u8,
            nmi: word & PENDING_NMI != 0,
            mc: word & PENDING_MC != 0,
            no_further_signal: word & PENDING_NO_FURTHER_SIGNAL != 0,
            reserved: word & PENDING_RESERVED,
        }
    }

    /// The word (what a hypervisor model writes).
    pub const fn encode(self) -> u16 {
        let mut word = self.vector as u16 | (self.reserved & PENDING_RESERVED);
        if self.nmi {
            word |= PENDING_NMI;
        }
        if self.mc {
            word |= PENDING_MC;
        }
        if self.no_further_signal {
            word |= PENDING_NO_FURTHER_SIGNAL;
        }
        word
    }

    /// Whether anything is pending (the no-further-signal bit alone is not an event).
    pub const fn any(&self) -> bool {
        self.vector != 0 || self.nmi || self.mc
    }
}

/// The #HV doorbell page (Linux `struct hv_doorbell_page`).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct HvDoorbellPage {
    /// The pending-events word ([`PendingEvents`]).
    pub pending_events: u16,
    /// [`NO_EOI_REQUIRED`] in bit 0.
    pub no_eoi_required: u8,
    /// Reserved.
    pub reserved: [u8; 61],
    /// Reserved to the end of the page.
    pub padding: [u8; 4032],
}

const _: () = assert!(core::mem::size_of::<HvDoorbellPage>() == 4096);
const _: () =
    assert!(core::mem::offset_of!(HvDoorbellPage, pending_events) == PENDING_EVENTS_OFFSET);
const _: () =
    assert!(core::mem::offset_of!(HvDoorbellPage, no_eoi_required) == NO_EOI_REQUIRED_OFFSET);
const _: () = assert!(core::mem::offset_of!(HvDoorbellPage, padding) == 64);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn event_and_request_values_follow_the_ghcb_spec() {
        // uapi/asm/svm.h: SVM_VMGEXIT_HV_DOORBELL_PAGE 0x80000014, GET_PREFERRED 0,
        // SET 1, QUERY 2, CLEAR 3 (KVM's SVM_VMGEXIT_HVDB_*).
        assert_eq!(SVM_VMGEXIT_HV_DOORBELL_PAGE, 0x8000_0014);
        assert_eq!(DoorbellRequest::GetPreferred as u64, 0);
        assert_eq!(DoorbellRequest::Set as u64, 1);
        assert_eq!(DoorbellRequest::Query as u64, 2);
        assert_eq!(DoorbellRequest::Clear as u64, 3);
        for r in [
            DoorbellRequest::GetPreferred,
            DoorbellRequest::Set,
            DoorbellRequest::Query,
            DoorbellRequest::Clear,
        ] {
            assert_eq!(DoorbellRequest::decode(r as u64), Some(r));
        }
        assert_eq!(DoorbellRequest::decode(4), None);
        assert_eq!(DoorbellRequest::decode(1 << 32 | 1), None);
        // KVM answers GET_PREFERRED with ~0 and QUERY without a page with INVALID_PAGE.
        assert_eq!(NO_DOORBELL_PAGE, !0);
    }

    #[test]
    fn pending_events_layout_is_linux_union_hv_pending_events() {
        // u8 vector; u8 nmi:1, mc:1, reserved1:5, no_further_signal:1 (little-endian).
        let e = PendingEvents::decode(0x8330);
        assert_eq!(
            e,
            PendingEvents {
                vector: 0x30,
                nmi: true,
                mc: true,
                no_further_signal: true,
                reserved: 0,
            }
        );
        assert_eq!(PendingEvents::decode(0x0100).encode(), 0x0100);
        assert_eq!(PendingEvents::decode(0x7C00).reserved, 0x7C00);
        assert!(!PendingEvents::decode(0x7C00).any());
        assert!(!PendingEvents::decode(PENDING_NO_FURTHER_SIGNAL).any());
        // Every word decodes, and decoding loses nothing.
        for word in 0..=u16::MAX {
            assert_eq!(PendingEvents::decode(word).encode(), word);
        }
    }

    #[test]
    fn page_offsets() {
        let mut page = HvDoorbellPage::new_zeroed();
        page.pending_events = 0x8120;
        page.no_eoi_required = NO_EOI_REQUIRED;
        let bytes = page.as_bytes();
        assert_eq!(&bytes[0..2], &[0x20, 0x81]);
        assert_eq!(bytes[2], 1);
        assert!(bytes[3..].iter().all(|&b| b == 0));
    }
}
