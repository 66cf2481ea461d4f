//! The per-vCPU calling area page (58019, "Calling Area").
//!
//! One 4 KiB page per vCPU: byte 0 `call_pending`, byte 1 `mem_available`, bytes 2..8
//! reserved, bytes 8..4096 a buffer guests use for request lists. The SVSM reads
//! `call_pending` to decide whether a request is real and clears it when it answers;
//! it must access that byte atomically in guest memory, so the offsets are exported for
//! code that does not go through [`CallingArea`].

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of a calling area.
pub const CALLING_AREA_SIZE: usize = 4096;
/// Offset of `call_pending`.
pub const CALL_PENDING_OFFSET: usize = 0;
/// Offset of `mem_available`.
pub const MEM_AVAILABLE_OFFSET: usize = 1;
/// Offset of the request buffer.
pub const BUFFER_OFFSET: usize = 8;
/// Size of the request buffer.
pub const BUFFER_SIZE: usize = CALLING_AREA_SIZE - BUFFER_OFFSET;

/// Layout of a calling area (58019, table "Calling Area"; Linux `struct svsm_ca`).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CallingArea {
    /// 1 while the guest has a request outstanding.
    pub call_pending: u8,
    /// Set by the SVSM when it would accept memory via DEPOSIT_MEM.
    pub mem_available: u8,
    /// Reserved.
    pub reserved: [u8; 6],
    /// Request buffer.
    pub buffer: [u8; BUFFER_SIZE],
}

const _: () = assert!(core::mem::size_of::<CallingArea>() == CALLING_AREA_SIZE);
const _: () = assert!(core::mem::offset_of!(CallingArea, call_pending) == CALL_PENDING_OFFSET);
const _: () = assert!(core::mem::offset_of!(CallingArea, mem_available) == MEM_AVAILABLE_OFFSET);
const _: () = assert!(core::mem::offset_of!(CallingArea, buffer) == BUFFER_OFFSET);

/// The states of `call_pending` (58019, table "Calling Area").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPending {
    /// 0: no call requested (a spurious entry by the host).
    Idle,
    /// 1: the guest requested a call.
    Pending,
    /// Any other value: reserved; the SVSM answers `INVALID_FORMAT`.
    Reserved(u8),
}

impl CallPending {
    /// Interprets the byte.
    pub const fn from_byte(byte: u8) -> Self {
        match byte {
            0 => CallPending::Idle,
            1 => CallPending::Pending,
            other => CallPending::Reserved(other),
        }
    }
}

impl CallingArea {
    /// An all-zero calling area (no call pending).
    pub const fn zeroed() -> Self {
        Self {
            call_pending: 0,
            mem_available: 0,
            reserved: [0; 6],
            buffer: [0; BUFFER_SIZE],
        }
    }

    /// Whether a call is pending (`call_pending` is exactly 1).
    pub const fn is_call_pending(&self) -> bool {
        self.call_pending == 1
    }

    /// The state of `call_pending`.
    pub const fn call_pending_state(&self) -> CallPending {
        CallPending::from_byte(self.call_pending)
    }
}

impl fmt::Debug for CallingArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallingArea")
            .field("call_pending", &self.call_pending)
            .field("mem_available", &self.mem_available)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_from_bytes() {
        let mut page = [0u8; CALLING_AREA_SIZE];
        page[0] = 1;
        page[1] = 1;
        page[8] = 0xAA;
        page[4095] = 0x55;
        let ca = CallingArea::read_from_bytes(&page[..]).unwrap();
        assert!(ca.is_call_pending());
        assert_eq!(ca.mem_available, 1);
        assert_eq!(ca.buffer[0], 0xAA);
        assert_eq!(ca.buffer[BUFFER_SIZE - 1], 0x55);
        assert_eq!(ca.as_bytes(), &page[..]);
    }

    #[test]
    fn short_page_is_rejected() {
        let page = [0u8; CALLING_AREA_SIZE - 1];
        assert!(CallingArea::read_from_bytes(&page[..]).is_err());
    }

    #[test]
    fn call_pending_states() {
        assert_eq!(CallPending::from_byte(0), CallPending::Idle);
        assert_eq!(CallPending::from_byte(1), CallPending::Pending);
        assert_eq!(CallPending::from_byte(2), CallPending::Reserved(2));
        assert_eq!(CallPending::from_byte(0xFF), CallPending::Reserved(0xFF));
        let mut ca = CallingArea::zeroed();
        ca.call_pending = 2;
        assert!(!ca.is_call_pending());
        assert_eq!(ca.call_pending_state(), CallPending::Reserved(2));
    }

    #[test]
    fn zeroed_has_no_call_pending() {
        let ca = CallingArea::zeroed();
        assert!(!ca.is_call_pending());
        assert!(ca.as_bytes().iter().all(|&b| b == 0));
    }
}
