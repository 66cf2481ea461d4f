//! Core protocol (0) request formats: PVALIDATE lists and the register arguments of
//! every core call.
//!
//! The list parsers take bytes the SVSM has already copied out of guest memory (from
//! the list's GPA to the end of its page) and check everything a list can get wrong
//! before any entry is acted on, so a rejected request changes no state. Address
//! *validity* (guest RAM, not SVSM memory) is the caller's job; this module checks
//! only what the bytes and registers say on their own.

use zerocopy::byteorder::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Field, ParseError};

/// Size of a 4 KiB page.
pub const PAGE_SIZE_4K: u64 = 0x1000;
/// Size of a 2 MiB page.
pub const PAGE_SIZE_2M: u64 = 0x20_0000;

/// Size of a list header.
pub const LIST_HEADER_SIZE: usize = 8;
/// Size of one list entry.
pub const LIST_ENTRY_SIZE: usize = 8;
/// Most entries a list in a calling area's buffer can hold: (4088 - 8) / 8.
pub const PVALIDATE_MAX_ENTRIES: usize =
    (crate::calling_area::BUFFER_SIZE - LIST_HEADER_SIZE) / LIST_ENTRY_SIZE;

const _: () = assert!(PVALIDATE_MAX_ENTRIES == 510);

/// Header of a PVALIDATE (or memory deposit/withdraw) list (58019, table "PVALIDATE
/// Operation"; Linux `struct svsm_pvalidate_call`, edk2 `SVSM_PVALIDATE_REQUEST`).
///
/// The four reserved bytes are not checked: Linux reuses its calling-area buffer for
/// the attestation request block, whose first field (a u64 GPA) can leave non-zero
/// bytes there, and it does not clear them before a PVALIDATE call.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ListHeader {
    /// Number of entries in the list.
    pub entries: U16,
    /// Index of the next entry to process; the SVSM advances it.
    pub next: U16,
    /// Reserved.
    pub reserved: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<ListHeader>() == LIST_HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(ListHeader, entries) == 0);
const _: () = assert!(core::mem::offset_of!(ListHeader, next) == 2);
const _: () = assert!(core::mem::offset_of!(ListHeader, reserved) == 4);

/// Page size of a list entry (bits 1:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageSize {
    /// 4 KiB (0).
    Size4K = 0,
    /// 2 MiB (1).
    Size2M = 1,
}

impl PageSize {
    /// Decodes bits 1:0; values 2 and 3 are undefined.
    pub const fn from_bits(bits: u64) -> Result<Self, ParseError> {
        match bits {
            0 => Ok(PageSize::Size4K),
            1 => Ok(PageSize::Size2M),
            value => Err(ParseError::UnknownValue {
                field: Field::PageSize,
                value,
            }),
        }
    }

    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => PAGE_SIZE_4K,
            PageSize::Size2M => PAGE_SIZE_2M,
        }
    }
}

const PAGE_SIZE_MASK: u64 = 0b11;
const GFN_SHIFT: u32 = 12;
const GPA_MASK: u64 = !0xFFF;

/// One entry of a PVALIDATE list (58019, table "PVALIDATE Entry"; Linux
/// `struct svsm_pvalidate_entry`): bits 1:0 page size, bit 2 action (1 validate,
/// 0 rescind), bit 3 ignore_cf, bits 11:4 reserved, bits 63:12 GFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PvalidateEntry {
    page_size: PageSize,
    validate: bool,
    ignore_cf: bool,
    gpa: u64,
}

impl PvalidateEntry {
    const ACTION: u64 = 1 << 2;
    const IGNORE_CF: u64 = 1 << 3;
    const RESERVED: u64 = 0xFF0;

    /// A new entry; `gpa` must be aligned to `page_size`.
    pub const fn new(
        gpa: u64,
        page_size: PageSize,
        validate: bool,
        ignore_cf: bool,
    ) -> Result<Self, ParseError> {
        if gpa % page_size.bytes() != 0 {
            return Err(ParseError::Misaligned {
                field: Field::Gpa,
                value: gpa,
                align: page_size.bytes(),
            });
        }
        Ok(Self {
            page_size,
            validate,
            ignore_cf,
            gpa,
        })
    }

    /// Decodes a raw entry, rejecting reserved bits, an undefined page size and a 2M
    /// entry whose address is not 2M aligned.
    pub const fn decode(raw: u64) -> Result<Self, ParseError> {
        if raw & Self::RESERVED != 0 {
            return Err(ParseError::ReservedBits {
                field: Field::ListEntry,
                bits: raw & Self::RESERVED,
            });
        }
        let page_size = match PageSize::from_bits(raw & PAGE_SIZE_MASK) {
            Ok(size) => size,
            Err(e) => return Err(e),
        };
        Self::new(
            raw & GPA_MASK,
            page_size,
            raw & Self::ACTION != 0,
            raw & Self::IGNORE_CF != 0,
        )
    }

    /// The raw entry.
    pub const fn encode(self) -> u64 {
        let mut raw = self.gpa | self.page_size as u64;
        if self.validate {
            raw |= Self::ACTION;
        }
        if self.ignore_cf {
            raw |= Self::IGNORE_CF;
        }
        raw
    }

    /// Guest physical address of the page (GFN << 12).
    pub const fn gpa(self) -> u64 {
        self.gpa
    }

    /// Guest frame number (bits 63:12).
    pub const fn gfn(self) -> u64 {
        self.gpa >> GFN_SHIFT
    }

    /// Page size.
    pub const fn page_size(self) -> PageSize {
        self.page_size
    }

    /// true: validate the page; false: rescind validation.
    pub const fn validate(self) -> bool {
        self.validate
    }

    /// Whether "validated state did not change" counts as success.
    pub const fn ignore_cf(self) -> bool {
        self.ignore_cf
    }
}

/// One entry of a DEPOSIT_MEM list (58019, table "Deposit Memory Operation"): bits 1:0
/// page size (0 4K, 1 2M), bits 11:2 reserved, bits 63:12 GFN. The list has the same
/// header as a PVALIDATE list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryEntry {
    page_size: PageSize,
    gpa: u64,
}

impl MemoryEntry {
    const RESERVED: u64 = 0xFFC;

    /// A new entry; `gpa` must be aligned to `page_size`.
    pub const fn new(gpa: u64, page_size: PageSize) -> Result<Self, ParseError> {
        if gpa % page_size.bytes() != 0 {
            return Err(ParseError::Misaligned {
                field: Field::Gpa,
                value: gpa,
                align: page_size.bytes(),
            });
        }
        Ok(Self { page_size, gpa })
    }

    /// Decodes a raw entry.
    pub const fn decode(raw: u64) -> Result<Self, ParseError> {
        if raw & Self::RESERVED != 0 {
            return Err(ParseError::ReservedBits {
                field: Field::ListEntry,
                bits: raw & Self::RESERVED,
            });
        }
        match PageSize::from_bits(raw & PAGE_SIZE_MASK) {
            Ok(size) => Self::new(raw & GPA_MASK, size),
            Err(e) => Err(e),
        }
    }

    /// The raw entry.
    pub const fn encode(self) -> u64 {
        self.gpa | self.page_size as u64
    }

    /// Guest physical address.
    pub const fn gpa(self) -> u64 {
        self.gpa
    }

    /// Page size.
    pub const fn page_size(self) -> PageSize {
        self.page_size
    }
}

/// An entry type that can live in a [`List`].
pub trait ListEntry: Copy {
    /// Decodes and validates a raw entry.
    fn decode(raw: u64) -> Result<Self, ParseError>;
    /// Encodes the entry.
    fn encode(self) -> u64;
}

impl ListEntry for PvalidateEntry {
    fn decode(raw: u64) -> Result<Self, ParseError> {
        PvalidateEntry::decode(raw)
    }
    fn encode(self) -> u64 {
        PvalidateEntry::encode(self)
    }
}

impl ListEntry for MemoryEntry {
    fn decode(raw: u64) -> Result<Self, ParseError> {
        MemoryEntry::decode(raw)
    }
    fn encode(self) -> u64 {
        MemoryEntry::encode(self)
    }
}

/// A validated list: header plus `entries` entries that all decode.
///
/// Borrowed from bytes in SVSM memory; every entry was checked by [`List::parse`], so
/// [`List::get`] cannot fail for an index below [`List::entries`].
#[derive(Debug, Clone, Copy)]
pub struct List<'a, E> {
    entries: u16,
    next: u16,
    raw: &'a [u8],
    _entry: core::marker::PhantomData<E>,
}

/// A validated PVALIDATE list.
pub type PvalidateList<'a> = List<'a, PvalidateEntry>;
/// A validated DEPOSIT_MEM list.
pub type MemoryList<'a> = List<'a, MemoryEntry>;

impl<'a, E: ListEntry> List<'a, E> {
    /// Parses a list from `bytes` (from the list's GPA up to the end of its page, already
    /// copied into SVSM memory).
    ///
    /// Rejects: a short header; `entries == 0`; `entries` above
    /// [`PVALIDATE_MAX_ENTRIES`]; `next >= entries`; entries that do not fit in `bytes`
    /// (the list would cross its page); any entry that does not decode.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (header, rest) =
            ListHeader::read_from_prefix(bytes).map_err(|_| ParseError::ShortBuffer {
                need: LIST_HEADER_SIZE,
                got: bytes.len(),
            })?;
        let entries = header.entries.get();
        let next = header.next.get();
        if entries == 0 {
            return Err(ParseError::EmptyList);
        }
        if usize::from(entries) > PVALIDATE_MAX_ENTRIES {
            return Err(ParseError::CountOverCapacity {
                count: entries.into(),
                capacity: PVALIDATE_MAX_ENTRIES,
            });
        }
        if next >= entries {
            return Err(ParseError::NextOutOfRange { next, entries });
        }
        let len = usize::from(entries) * LIST_ENTRY_SIZE;
        let raw = rest.get(..len).ok_or(ParseError::ShortBuffer {
            need: LIST_HEADER_SIZE + len,
            got: bytes.len(),
        })?;
        for chunk in raw.chunks_exact(LIST_ENTRY_SIZE) {
            E::decode(read_u64(chunk))?;
        }
        Ok(Self {
            entries,
            next,
            raw,
            _entry: core::marker::PhantomData,
        })
    }

    /// Number of entries.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Index of the next entry to process.
    pub fn next(&self) -> u16 {
        self.next
    }

    /// Entry `index`, or `None` if `index >= entries`.
    pub fn get(&self, index: u16) -> Option<E> {
        let start = usize::from(index) * LIST_ENTRY_SIZE;
        let chunk = self.raw.get(start..start + LIST_ENTRY_SIZE)?;
        E::decode(read_u64(chunk)).ok()
    }

    /// The entries still to process, from `next` on, with their indices.
    pub fn pending(&self) -> impl Iterator<Item = (u16, E)> + '_ {
        (self.next..self.entries).filter_map(move |i| self.get(i).map(|e| (i, e)))
    }
}

fn read_u64(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    for (dst, src) in bytes.iter_mut().zip(chunk) {
        *dst = *src;
    }
    u64::from_le_bytes(bytes)
}

/// Writes a list (header with `next`, then the entries) into `out`; returns the number
/// of bytes written.
pub fn encode_list<E: ListEntry>(
    entries: &[E],
    next: u16,
    out: &mut [u8],
) -> Result<usize, ParseError> {
    if entries.is_empty() {
        return Err(ParseError::EmptyList);
    }
    if entries.len() > PVALIDATE_MAX_ENTRIES {
        return Err(ParseError::CountOverCapacity {
            count: entries.len(),
            capacity: PVALIDATE_MAX_ENTRIES,
        });
    }
    // Bounded by PVALIDATE_MAX_ENTRIES above.
    let count = entries.len() as u16;
    if next >= count {
        return Err(ParseError::NextOutOfRange {
            next,
            entries: count,
        });
    }
    let need = LIST_HEADER_SIZE + entries.len() * LIST_ENTRY_SIZE;
    let got = out.len();
    let out = out
        .get_mut(..need)
        .ok_or(ParseError::OutputTooSmall { need, got })?;
    let (head, body) = out.split_at_mut(LIST_HEADER_SIZE);
    let header = ListHeader {
        entries: U16::new(count),
        next: U16::new(next),
        reserved: [0; 4],
    };
    head.copy_from_slice(header.as_bytes());
    for (chunk, entry) in body.chunks_exact_mut(LIST_ENTRY_SIZE).zip(entries) {
        chunk.copy_from_slice(&entry.encode().to_le_bytes());
    }
    Ok(need)
}

/// Writes the `next` field back into a list header in `list` (the SVSM reports its
/// progress this way).
pub fn write_next(list: &mut [u8], next: u16) -> Result<(), ParseError> {
    let got = list.len();
    let field = list
        .get_mut(2..4)
        .ok_or(ParseError::OutputTooSmall { need: 4, got })?;
    field.copy_from_slice(&next.to_le_bytes());
    Ok(())
}

fn check_aligned(value: u64, align: u64) -> Result<u64, ParseError> {
    if value % align == 0 {
        Ok(value)
    } else {
        Err(ParseError::Misaligned {
            field: Field::Gpa,
            value,
            align,
        })
    }
}

/// SVSM_CORE_REMAP_CA input: RCX = GPA of the new calling area (4 KiB aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemapCaRequest {
    /// GPA of the new calling area.
    pub ca_gpa: u64,
}

impl RemapCaRequest {
    /// Decodes the registers.
    pub fn from_regs(rcx: u64) -> Result<Self, ParseError> {
        Ok(Self {
            ca_gpa: check_aligned(rcx, PAGE_SIZE_4K)?,
        })
    }
}

/// SVSM_CORE_PVALIDATE input: RCX = GPA of the list (8-byte aligned; the list must not
/// cross its 4 KiB page, which [`List::parse`] enforces on the bytes up to the page end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvalidateRequest {
    /// GPA of the list.
    pub list_gpa: u64,
}

impl PvalidateRequest {
    /// Decodes the registers.
    pub fn from_regs(rcx: u64) -> Result<Self, ParseError> {
        Ok(Self {
            list_gpa: check_aligned(rcx, 8)?,
        })
    }

    /// Bytes from the list's GPA to the end of its page: how much to copy for
    /// [`List::parse`].
    pub fn bytes_to_page_end(&self) -> usize {
        // At most 4096, fits in usize.
        (PAGE_SIZE_4K - (self.list_gpa % PAGE_SIZE_4K)) as usize
    }
}

/// SVSM_CORE_CREATE_VCPU input: RCX = VMSA GPA, RDX = calling area GPA, R8[31:0] = APIC
/// ID. Both addresses 4 KiB aligned and distinct. R8 bits 63:32 are ignored, as
/// COCONUT-SVSM does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateVcpuRequest {
    /// GPA of the new vCPU's VMSA.
    pub vmsa_gpa: u64,
    /// GPA of the new vCPU's calling area.
    pub ca_gpa: u64,
    /// APIC ID of the new vCPU.
    pub apic_id: u32,
}

impl CreateVcpuRequest {
    /// Decodes the registers.
    pub fn from_regs(rcx: u64, rdx: u64, r8: u64) -> Result<Self, ParseError> {
        let vmsa_gpa = check_aligned(rcx, PAGE_SIZE_4K)?;
        let ca_gpa = check_aligned(rdx, PAGE_SIZE_4K)?;
        if vmsa_gpa == ca_gpa {
            return Err(ParseError::Overlap {
                field: Field::Gpa,
                offset: ca_gpa,
            });
        }
        Ok(Self {
            vmsa_gpa,
            ca_gpa,
            apic_id: r8 as u32,
        })
    }

    /// The registers (RCX, RDX, R8) a guest loads.
    pub fn to_regs(&self) -> (u64, u64, u64) {
        (self.vmsa_gpa, self.ca_gpa, self.apic_id.into())
    }
}

/// SVSM_CORE_DELETE_VCPU input: RCX = VMSA GPA (4 KiB aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteVcpuRequest {
    /// GPA of the VMSA to delete.
    pub vmsa_gpa: u64,
}

impl DeleteVcpuRequest {
    /// Decodes the registers.
    pub fn from_regs(rcx: u64) -> Result<Self, ParseError> {
        Ok(Self {
            vmsa_gpa: check_aligned(rcx, PAGE_SIZE_4K)?,
        })
    }
}

/// SVSM_CORE_DEPOSIT_MEM input: RCX = GPA of a [`MemoryList`] (8-byte aligned; the list
/// must not cross its page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepositMemRequest {
    /// GPA of the list.
    pub list_gpa: u64,
}

impl DepositMemRequest {
    /// Decodes the registers.
    pub fn from_regs(rcx: u64) -> Result<Self, ParseError> {
        Ok(Self {
            list_gpa: check_aligned(rcx, 8)?,
        })
    }
}

/// Size of the WITHDRAW_MEM list header (u16 count, 6 unused bytes).
pub const WITHDRAW_HEADER_SIZE: usize = 8;

/// SVSM_CORE_WITHDRAW_MEM input: RCX = GPA of a buffer the SVSM fills with a withdraw
/// list (58019, table "Withdraw Memory Operation": u16 count @0, 6 unused bytes, then
/// the GPAs of the returned 4 KiB pages). 8-byte aligned, and there must be room for at
/// least one entry before the page ends (page offset 0xFF8 is rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WithdrawMemRequest {
    /// GPA of the buffer.
    pub list_gpa: u64,
}

impl WithdrawMemRequest {
    /// Decodes the registers.
    pub fn from_regs(rcx: u64) -> Result<Self, ParseError> {
        let list_gpa = check_aligned(rcx, 8)?;
        let request = Self { list_gpa };
        if request.capacity() == 0 {
            return Err(ParseError::CountOverCapacity {
                count: 1,
                capacity: 0,
            });
        }
        Ok(request)
    }

    /// How many page GPAs fit between the header and the end of the page.
    pub fn capacity(&self) -> usize {
        // At most 4096, fits in usize.
        let room = (PAGE_SIZE_4K - (self.list_gpa % PAGE_SIZE_4K)) as usize;
        room.saturating_sub(WITHDRAW_HEADER_SIZE) / LIST_ENTRY_SIZE
    }
}

/// Writes a withdraw list (count, then the 4 KiB-aligned page GPAs) into `out`; returns
/// the bytes written. `out` should end where the guest's page ends.
pub fn encode_withdraw_list(pages: &[u64], out: &mut [u8]) -> Result<usize, ParseError> {
    let capacity = out.len().saturating_sub(WITHDRAW_HEADER_SIZE) / LIST_ENTRY_SIZE;
    let count = u16::try_from(pages.len())
        .ok()
        .filter(|_| pages.len() <= capacity)
        .ok_or(ParseError::CountOverCapacity {
            count: pages.len(),
            capacity,
        })?;
    if let Some(&gpa) = pages.iter().find(|&&gpa| gpa % PAGE_SIZE_4K != 0) {
        return Err(ParseError::Misaligned {
            field: Field::Gpa,
            value: gpa,
            align: PAGE_SIZE_4K,
        });
    }
    let need = WITHDRAW_HEADER_SIZE + pages.len() * LIST_ENTRY_SIZE;
    let got = out.len();
    let out = out
        .get_mut(..need)
        .ok_or(ParseError::OutputTooSmall { need, got })?;
    let (head, body) = out.split_at_mut(WITHDRAW_HEADER_SIZE);
    head.fill(0);
    if let Some(count_field) = head.get_mut(..2) {
        count_field.copy_from_slice(&count.to_le_bytes());
    }
    for (chunk, gpa) in body.chunks_exact_mut(LIST_ENTRY_SIZE).zip(pages) {
        chunk.copy_from_slice(&gpa.to_le_bytes());
    }
    Ok(need)
}

/// Reads a withdraw list written by the SVSM (guest side): the page GPAs it returned.
pub fn parse_withdraw_list(bytes: &[u8]) -> Result<impl Iterator<Item = u64> + '_, ParseError> {
    let count = bytes
        .first_chunk::<2>()
        .map(|c| usize::from(u16::from_le_bytes(*c)))
        .ok_or(ParseError::ShortBuffer {
            need: WITHDRAW_HEADER_SIZE,
            got: bytes.len(),
        })?;
    let need = WITHDRAW_HEADER_SIZE + count * LIST_ENTRY_SIZE;
    let body = bytes
        .get(WITHDRAW_HEADER_SIZE..need)
        .ok_or(ParseError::ShortBuffer {
            need,
            got: bytes.len(),
        })?;
    Ok(body.chunks_exact(LIST_ENTRY_SIZE).map(read_u64))
}

/// SVSM_CORE_QUERY_PROTOCOL input: RCX = (protocol << 32) | version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryProtocolRequest {
    /// Protocol number asked about.
    pub protocol: u32,
    /// Version asked about.
    pub version: u32,
}

impl QueryProtocolRequest {
    /// Decodes RCX (every value is well formed).
    pub const fn from_regs(rcx: u64) -> Self {
        Self {
            protocol: (rcx >> 32) as u32,
            version: rcx as u32,
        }
    }

    /// The RCX value a guest loads.
    pub const fn to_rcx(self) -> u64 {
        ((self.protocol as u64) << 32) | self.version as u64
    }
}

/// SVSM_CORE_QUERY_PROTOCOL output: RCX = (max << 32) | min for a supported protocol
/// version, 0 otherwise (RAX is SUCCESS either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryProtocolResponse {
    /// The protocol/version is not supported.
    Unsupported,
    /// Supported, with the range of versions the SVSM implements.
    Supported {
        /// Lowest supported version.
        min: u32,
        /// Highest supported version.
        max: u32,
    },
}

impl QueryProtocolResponse {
    /// The RCX value the SVSM returns.
    pub const fn to_rcx(self) -> u64 {
        match self {
            QueryProtocolResponse::Unsupported => 0,
            QueryProtocolResponse::Supported { min, max } => ((max as u64) << 32) | min as u64,
        }
    }

    /// Decodes the RCX value a guest reads back.
    pub const fn from_rcx(rcx: u64) -> Self {
        if rcx == 0 {
            QueryProtocolResponse::Unsupported
        } else {
            QueryProtocolResponse::Supported {
                min: rcx as u32,
                max: (rcx >> 32) as u32,
            }
        }
    }
}

/// SVSM_CORE_CONFIGURE_VTOM input (58019, table "vTOM Configuration Operation").
///
/// Query: RCX = 1 exactly. Configure: RCX bit 0 = 0, bit 1 enable, bit 2 set CR3 from
/// RDX, bit 3 set RIP from R8, bit 4 set RSP from R9, bits 11:5 zero, bits 63:12 the
/// vTOM (zero when disabling). Reserved bits set: `INVALID_PARAMETER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigureVtomRequest {
    /// Ask whether vTOM can be configured.
    Query,
    /// Enable or disable vTOM.
    Configure {
        /// Enable (true) or disable (false) vTOM.
        enable: bool,
        /// The vTOM (bits 63:12 of RCX); 0 when disabling.
        vtom: u64,
        /// New CR3 after success (RDX), if bit 2 is set.
        cr3: Option<u64>,
        /// New RIP after success (R8), if bit 3 is set.
        rip: Option<u64>,
        /// New RSP after success (R9), if bit 4 is set.
        rsp: Option<u64>,
    },
}

impl ConfigureVtomRequest {
    /// RCX returned for a query when vTOM configuration is not supported.
    pub const UNSUPPORTED_RCX: u64 = 0;

    /// Decodes the registers.
    pub fn from_regs(rcx: u64, rdx: u64, r8: u64, r9: u64) -> Result<Self, ParseError> {
        if rcx & 1 != 0 {
            if rcx != 1 {
                return Err(ParseError::ReservedBits {
                    field: Field::Register,
                    bits: rcx & !1,
                });
            }
            return Ok(ConfigureVtomRequest::Query);
        }
        if rcx & 0xFE0 != 0 {
            return Err(ParseError::ReservedBits {
                field: Field::Register,
                bits: rcx & 0xFE0,
            });
        }
        let enable = rcx & (1 << 1) != 0;
        let vtom = rcx & GPA_MASK;
        if !enable && vtom != 0 {
            return Err(ParseError::ReservedBits {
                field: Field::Register,
                bits: vtom,
            });
        }
        Ok(ConfigureVtomRequest::Configure {
            enable,
            vtom,
            cr3: (rcx & (1 << 2) != 0).then_some(rdx),
            rip: (rcx & (1 << 3) != 0).then_some(r8),
            rsp: (rcx & (1 << 4) != 0).then_some(r9),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::SvsmResultCode;

    fn list_bytes(entries: u16, next: u16, raw: &[u64]) -> [u8; 4088] {
        let mut buf = [0u8; 4088];
        buf[0..2].copy_from_slice(&entries.to_le_bytes());
        buf[2..4].copy_from_slice(&next.to_le_bytes());
        for (i, e) in raw.iter().enumerate() {
            buf[8 + i * 8..16 + i * 8].copy_from_slice(&e.to_le_bytes());
        }
        buf
    }

    #[test]
    fn entry_bits_match_the_spec() {
        // 2M, validate, ignore_cf, GFN 0x200 (GPA 0x20_0000).
        let raw = 0x20_0000 | 1 | (1 << 2) | (1 << 3);
        let e = PvalidateEntry::decode(raw).unwrap();
        assert_eq!(e.page_size(), PageSize::Size2M);
        assert!(e.validate());
        assert!(e.ignore_cf());
        assert_eq!(e.gpa(), 0x20_0000);
        assert_eq!(e.gfn(), 0x200);
        assert_eq!(e.encode(), raw);

        let e = PvalidateEntry::decode(0xFFFF_FFFF_FFFF_F000).unwrap();
        assert_eq!(e.page_size(), PageSize::Size4K);
        assert!(!e.validate());
        assert!(!e.ignore_cf());
        assert_eq!(e.gfn(), 0x000F_FFFF_FFFF_FFFF);
    }

    #[test]
    fn entry_round_trips() {
        for (gpa, size) in [
            (0x1000, PageSize::Size4K),
            (0x4000_0000, PageSize::Size2M),
            (0, PageSize::Size4K),
        ] {
            for validate in [false, true] {
                for ignore_cf in [false, true] {
                    let e = PvalidateEntry::new(gpa, size, validate, ignore_cf).unwrap();
                    assert_eq!(PvalidateEntry::decode(e.encode()), Ok(e));
                }
            }
        }
    }

    #[test]
    fn entry_with_reserved_bits_is_rejected() {
        for bit in 4..12 {
            assert_eq!(
                PvalidateEntry::decode(0x1000 | (1 << bit)),
                Err(ParseError::ReservedBits {
                    field: Field::ListEntry,
                    bits: 1 << bit
                })
            );
        }
    }

    #[test]
    fn entry_with_undefined_page_size_is_rejected() {
        for size in [2u64, 3] {
            assert_eq!(
                PvalidateEntry::decode(0x1000 | size),
                Err(ParseError::UnknownValue {
                    field: Field::PageSize,
                    value: size
                })
            );
        }
    }

    #[test]
    fn unaligned_2m_entry_is_rejected() {
        assert_eq!(
            PvalidateEntry::decode(0x1000 | 1),
            Err(ParseError::Misaligned {
                field: Field::Gpa,
                value: 0x1000,
                align: PAGE_SIZE_2M
            })
        );
    }

    #[test]
    fn list_parses_and_iterates_from_next() {
        let raw = [0x1004, 0x2004, 0x20_0001];
        let buf = list_bytes(3, 1, &raw);
        let list = PvalidateList::parse(&buf).unwrap();
        assert_eq!(list.entries(), 3);
        assert_eq!(list.next(), 1);
        assert_eq!(list.get(0).unwrap().gpa(), 0x1000);
        assert!(list.get(3).is_none());
        let pending: [(u16, u64); 2] = {
            let mut it = list.pending().map(|(i, e)| (i, e.gpa()));
            [it.next().unwrap(), it.next().unwrap()]
        };
        assert_eq!(pending, [(1, 0x2000), (2, 0x20_0000)]);
        assert_eq!(list.pending().count(), 2);
    }

    #[test]
    fn list_ignores_reserved_header_bytes() {
        let mut buf = list_bytes(1, 0, &[0x1004]);
        buf[4..8].copy_from_slice(&[0xAA; 4]);
        assert!(PvalidateList::parse(&buf).is_ok());
    }

    #[test]
    fn list_with_no_entries_is_rejected() {
        let buf = list_bytes(0, 0, &[]);
        assert_eq!(
            PvalidateList::parse(&buf).err(),
            Some(ParseError::EmptyList)
        );
    }

    #[test]
    fn list_over_capacity_is_rejected() {
        let buf = list_bytes(511, 0, &[]);
        assert_eq!(
            PvalidateList::parse(&buf).err(),
            Some(ParseError::CountOverCapacity {
                count: 511,
                capacity: 510
            })
        );
    }

    #[test]
    fn list_at_capacity_is_accepted() {
        let raw = [0x1004u64; 510];
        let buf = list_bytes(510, 509, &raw);
        let list = PvalidateList::parse(&buf).unwrap();
        assert_eq!(list.pending().count(), 1);
    }

    #[test]
    fn next_at_or_past_entries_is_rejected() {
        let buf = list_bytes(2, 2, &[0x1004, 0x2004]);
        assert_eq!(
            PvalidateList::parse(&buf).err(),
            Some(ParseError::NextOutOfRange {
                next: 2,
                entries: 2
            })
        );
    }

    #[test]
    fn list_crossing_the_page_end_is_rejected() {
        let buf = list_bytes(3, 0, &[0x1004, 0x2004, 0x3004]);
        // Only room for two entries before the page ends.
        assert_eq!(
            PvalidateList::parse(&buf[..24]).err(),
            Some(ParseError::ShortBuffer { need: 32, got: 24 })
        );
        assert_eq!(
            PvalidateList::parse(&buf[..7]).err(),
            Some(ParseError::ShortBuffer { need: 8, got: 7 })
        );
    }

    #[test]
    fn list_with_one_bad_entry_is_rejected_as_a_whole() {
        let buf = list_bytes(3, 0, &[0x1004, 0x2004 | 0x100, 0x3004]);
        assert_eq!(
            PvalidateList::parse(&buf).err(),
            Some(ParseError::ReservedBits {
                field: Field::ListEntry,
                bits: 0x100
            })
        );
        let buf = list_bytes(2, 0, &[0x1004, 0x1005]);
        assert!(matches!(
            PvalidateList::parse(&buf),
            Err(ParseError::Misaligned { .. })
        ));
    }

    #[test]
    fn list_encode_round_trips() {
        let entries = [
            PvalidateEntry::new(0x1000, PageSize::Size4K, true, false).unwrap(),
            PvalidateEntry::new(0x20_0000, PageSize::Size2M, false, true).unwrap(),
        ];
        let mut out = [0xFFu8; 64];
        let n = encode_list(&entries, 1, &mut out).unwrap();
        assert_eq!(n, 24);
        assert_eq!(&out[4..8], &[0; 4]);
        let list = PvalidateList::parse(&out[..n]).unwrap();
        assert_eq!(list.next(), 1);
        assert_eq!(list.get(0), Some(entries[0]));
        assert_eq!(list.get(1), Some(entries[1]));

        write_next(&mut out, 0).unwrap();
        assert_eq!(PvalidateList::parse(&out[..n]).unwrap().next(), 0);
    }

    #[test]
    fn list_encode_rejections() {
        let e = PvalidateEntry::new(0x1000, PageSize::Size4K, true, false).unwrap();
        let mut out = [0u8; 16];
        assert_eq!(
            encode_list::<PvalidateEntry>(&[], 0, &mut out),
            Err(ParseError::EmptyList)
        );
        assert_eq!(
            encode_list(&[e, e], 0, &mut out),
            Err(ParseError::OutputTooSmall { need: 24, got: 16 })
        );
        assert_eq!(
            encode_list(&[e], 1, &mut out),
            Err(ParseError::NextOutOfRange {
                next: 1,
                entries: 1
            })
        );
        let many = [e; 511];
        let mut big = [0u8; 8192];
        assert_eq!(
            encode_list(&many, 0, &mut big),
            Err(ParseError::CountOverCapacity {
                count: 511,
                capacity: 510
            })
        );
        assert_eq!(
            write_next(&mut out[..3], 0),
            Err(ParseError::OutputTooSmall { need: 4, got: 3 })
        );
    }

    #[test]
    fn memory_entries() {
        let e = MemoryEntry::decode(0x20_0001).unwrap();
        assert_eq!(e.page_size(), PageSize::Size2M);
        assert_eq!(e.gpa(), 0x20_0000);
        assert_eq!(MemoryEntry::decode(e.encode()), Ok(e));
        assert_eq!(
            MemoryEntry::decode(0x1000 | 0b100),
            Err(ParseError::ReservedBits {
                field: Field::ListEntry,
                bits: 0b100
            })
        );
        assert!(MemoryEntry::decode(0x1002).is_err());
        assert!(MemoryEntry::decode(0x1001).is_err());
        let buf = list_bytes(1, 0, &[0x5000]);
        let list = MemoryList::parse(&buf).unwrap();
        assert_eq!(list.get(0).unwrap().gpa(), 0x5000);
    }

    #[test]
    fn register_requests() {
        assert_eq!(
            RemapCaRequest::from_regs(0x7000),
            Ok(RemapCaRequest { ca_gpa: 0x7000 })
        );
        assert!(matches!(
            RemapCaRequest::from_regs(0x7008),
            Err(ParseError::Misaligned { align: 0x1000, .. })
        ));

        let p = PvalidateRequest::from_regs(0x7FF8).unwrap();
        assert_eq!(p.bytes_to_page_end(), 8);
        assert_eq!(
            PvalidateRequest::from_regs(0x7000)
                .unwrap()
                .bytes_to_page_end(),
            4096
        );
        assert!(matches!(
            PvalidateRequest::from_regs(0x7004),
            Err(ParseError::Misaligned { align: 8, .. })
        ));

        let c = CreateVcpuRequest::from_regs(0x1000, 0x2000, 0xFFFF_FFFF_0000_0005).unwrap();
        assert_eq!(c.apic_id, 5);
        assert_eq!(c.to_regs(), (0x1000, 0x2000, 5));
        assert!(matches!(
            CreateVcpuRequest::from_regs(0x1001, 0x2000, 0),
            Err(ParseError::Misaligned { value: 0x1001, .. })
        ));
        assert!(matches!(
            CreateVcpuRequest::from_regs(0x1000, 0x2800, 0),
            Err(ParseError::Misaligned { value: 0x2800, .. })
        ));
        assert_eq!(
            CreateVcpuRequest::from_regs(0x1000, 0x1000, 0),
            Err(ParseError::Overlap {
                field: Field::Gpa,
                offset: 0x1000
            })
        );

        assert_eq!(
            DeleteVcpuRequest::from_regs(0x3000),
            Ok(DeleteVcpuRequest { vmsa_gpa: 0x3000 })
        );
        assert!(DeleteVcpuRequest::from_regs(0x3001).is_err());

        assert!(DepositMemRequest::from_regs(0x10).is_ok());
        assert!(DepositMemRequest::from_regs(0x11).is_err());
        let err = DepositMemRequest::from_regs(0x11).unwrap_err();
        assert_eq!(SvsmResultCode::from(err), SvsmResultCode::INVALID_PARAMETER);
    }

    #[test]
    fn query_protocol_encoding() {
        let q = QueryProtocolRequest::from_regs((2 << 32) | 1);
        assert_eq!(
            q,
            QueryProtocolRequest {
                protocol: 2,
                version: 1
            }
        );
        assert_eq!(q.to_rcx(), (2 << 32) | 1);
        let r = QueryProtocolResponse::Supported { min: 1, max: 1 };
        assert_eq!(r.to_rcx(), 0x0000_0001_0000_0001);
        assert_eq!(QueryProtocolResponse::from_rcx(r.to_rcx()), r);
        assert_eq!(QueryProtocolResponse::Unsupported.to_rcx(), 0);
        assert_eq!(
            QueryProtocolResponse::from_rcx(0),
            QueryProtocolResponse::Unsupported
        );
    }

    #[test]
    fn configure_vtom_forms() {
        assert_eq!(
            ConfigureVtomRequest::from_regs(1, 0, 0, 0),
            Ok(ConfigureVtomRequest::Query)
        );
        assert_eq!(
            ConfigureVtomRequest::from_regs(0x1_0000_0000 | 0b1_1110, 0x5000, 0x6000, 0x7000),
            Ok(ConfigureVtomRequest::Configure {
                enable: true,
                vtom: 0x1_0000_0000,
                cr3: Some(0x5000),
                rip: Some(0x6000),
                rsp: Some(0x7000),
            })
        );
        assert_eq!(
            ConfigureVtomRequest::from_regs(0, 1, 2, 3),
            Ok(ConfigureVtomRequest::Configure {
                enable: false,
                vtom: 0,
                cr3: None,
                rip: None,
                rsp: None,
            })
        );
        assert_eq!(ConfigureVtomRequest::UNSUPPORTED_RCX, 0);
    }

    #[test]
    fn configure_vtom_rejections() {
        // Query with any other bit set.
        assert_eq!(
            ConfigureVtomRequest::from_regs(0x1001, 0, 0, 0),
            Err(ParseError::ReservedBits {
                field: Field::Register,
                bits: 0x1000
            })
        );
        // Bits 11:5 set.
        assert_eq!(
            ConfigureVtomRequest::from_regs(0x22, 0, 0, 0),
            Err(ParseError::ReservedBits {
                field: Field::Register,
                bits: 0x20
            })
        );
        // Disabling with a vTOM value.
        assert!(matches!(
            ConfigureVtomRequest::from_regs(0x1000, 0, 0, 0),
            Err(ParseError::ReservedBits { bits: 0x1000, .. })
        ));
    }

    #[test]
    fn withdraw_list_round_trips() {
        let req = WithdrawMemRequest::from_regs(0x7FE0).unwrap();
        assert_eq!(req.capacity(), 3);
        assert_eq!(
            WithdrawMemRequest::from_regs(0x7000).unwrap().capacity(),
            511
        );
        let mut out = [0xFFu8; 32];
        let pages = [0x1000, 0x5000, 0x9000];
        assert_eq!(encode_withdraw_list(&pages, &mut out), Ok(32));
        assert_eq!(&out[..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[8..16], &0x1000u64.to_le_bytes());
        let back: [u64; 3] = {
            let mut it = parse_withdraw_list(&out).unwrap();
            [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
        };
        assert_eq!(back, pages);
        // An empty list is valid: nothing to withdraw.
        assert_eq!(encode_withdraw_list(&[], &mut out), Ok(8));
        assert_eq!(parse_withdraw_list(&out).unwrap().count(), 0);
    }

    #[test]
    fn withdraw_rejections() {
        // No room for a single entry.
        assert_eq!(
            WithdrawMemRequest::from_regs(0x7FF8),
            Err(ParseError::CountOverCapacity {
                count: 1,
                capacity: 0
            })
        );
        assert!(matches!(
            WithdrawMemRequest::from_regs(0x7004),
            Err(ParseError::Misaligned { align: 8, .. })
        ));
        let mut out = [0u8; 24];
        assert_eq!(
            encode_withdraw_list(&[0x1000, 0x2000, 0x3000], &mut out),
            Err(ParseError::CountOverCapacity {
                count: 3,
                capacity: 2
            })
        );
        assert_eq!(
            encode_withdraw_list(&[0x1800], &mut out),
            Err(ParseError::Misaligned {
                field: Field::Gpa,
                value: 0x1800,
                align: 0x1000
            })
        );
        assert!(parse_withdraw_list(&[1]).is_err());
        assert_eq!(
            parse_withdraw_list(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]).err(),
            Some(ParseError::ShortBuffer { need: 24, got: 16 })
        );
    }
}
