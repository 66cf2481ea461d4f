//! The few TPM 2.0 wire facts the service needs: headers, codes, and the commands it
//! sends itself at start-up.
//!
//! Everything is big-endian, as TPM 2.0 Part 1 section 18 defines it. The service never
//! interprets guest commands beyond their header; these helpers exist for start-up
//! (Startup, the EK's CreatePrimary, FlushContext) and for checking response headers.

use alloc::vec::Vec;

/// Size of a command or response header: tag u16, size u32, code u32.
pub const HEADER_SIZE: usize = 10;

/// TPM_ST_NO_SESSIONS.
pub const ST_NO_SESSIONS: u16 = 0x8001;
/// TPM_ST_SESSIONS.
pub const ST_SESSIONS: u16 = 0x8002;

/// TPM_CC_Startup.
pub const CC_STARTUP: u32 = 0x0000_0144;
/// TPM_CC_CreatePrimary.
pub const CC_CREATE_PRIMARY: u32 = 0x0000_0131;
/// TPM_CC_FlushContext.
pub const CC_FLUSH_CONTEXT: u32 = 0x0000_0165;

/// TPM_SU_CLEAR.
pub const SU_CLEAR: u16 = 0x0000;
/// TPM_RH_ENDORSEMENT.
pub const RH_ENDORSEMENT: u32 = 0x4000_000B;
/// TPM_RS_PW, the password authorization session.
pub const RS_PW: u32 = 0x4000_0009;

/// TPM_RC_SUCCESS.
pub const RC_SUCCESS: u32 = 0;
/// TPM_RC_INITIALIZE: the TPM is already started (or not yet).
pub const RC_INITIALIZE: u32 = 0x100;
/// TPM_RC_FAILURE: the TPM is in failure mode.
pub const RC_FAILURE: u32 = 0x101;

/// The response every command gets once the engine is in failure mode.
pub const FAILURE_RESPONSE: [u8; HEADER_SIZE] = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x01];

/// A parsed command or response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// TPM_ST tag.
    pub tag: u16,
    /// Total size, header included.
    pub size: u32,
    /// Command code (commands) or response code (responses).
    pub code: u32,
}

impl Header {
    /// Reads the header at the start of `bytes`, if there is one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let h: &[u8; HEADER_SIZE] = bytes.get(..HEADER_SIZE)?.try_into().ok()?;
        Some(Self {
            tag: u16::from_be_bytes([h[0], h[1]]),
            size: u32::from_be_bytes([h[2], h[3], h[4], h[5]]),
            code: u32::from_be_bytes([h[6], h[7], h[8], h[9]]),
        })
    }
}

/// Builds a command: a header whose size field is fixed up once the body is written.
#[derive(Debug)]
pub struct CommandBuilder(Vec<u8>);

impl CommandBuilder {
    /// Starts a command with `tag` and `code`.
    pub fn new(tag: u16, code: u32) -> Self {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&tag.to_be_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&code.to_be_bytes());
        Self(v)
    }
    /// Appends a u16.
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a u32.
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends raw bytes.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// Appends a TPM2B: a u16 size, then the bytes.
    pub fn sized(self, b: &[u8]) -> Self {
        let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.u16(len).bytes(b)
    }
    /// Appends an empty password authorization area (TPM_RS_PW, no nonce, no
    /// attributes, empty password), preceded by its size.
    pub fn password_auth(self) -> Self {
        self.u32(9).u32(RS_PW).u16(0).bytes(&[0]).u16(0)
    }
    /// Finishes the command, writing its size into the header.
    pub fn build(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0[2..6].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

/// TPM2_Startup(TPM_SU_CLEAR).
pub fn startup_clear() -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_STARTUP)
        .u16(SU_CLEAR)
        .build()
}

/// TPM2_CreatePrimary in `hierarchy` with an empty password, empty sensitive data, the
/// given public template, no outside info and no creation PCRs.
pub fn create_primary(hierarchy: u32, template: &[u8]) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_CREATE_PRIMARY)
        .u32(hierarchy)
        .password_auth()
        // TPM2B_SENSITIVE_CREATE: size 4, empty userAuth, empty data.
        .u16(4)
        .u16(0)
        .u16(0)
        .sized(template)
        // outsideInfo, then a TPML_PCR_SELECTION with no entries.
        .u16(0)
        .u32(0)
        .build()
}

/// TPM_CC_Clear.
pub const CC_CLEAR: u32 = 0x0000_0126;
/// TPM_CC_EvictControl.
pub const CC_EVICT_CONTROL: u32 = 0x0000_0120;
/// TPM_CC_GetCapability.
pub const CC_GET_CAPABILITY: u32 = 0x0000_017A;
/// TPM_RH_OWNER.
pub const RH_OWNER: u32 = 0x4000_0001;
/// TPM_CAP_HANDLES.
pub const CAP_HANDLES: u32 = 1;
/// The first persistent object handle (TPM_HT_PERSISTENT << 24).
pub const PERSISTENT_FIRST: u32 = 0x8100_0000;

/// The command code of a command, if it has a header.
pub fn command_code(command: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(command.get(6..10)?.try_into().ok()?))
}

#[cfg(test)]
fn clear_probe() -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_CLEAR)
        .u32(0x4000_000A)
        .build()
}

/// TPM2_GetCapability(TPM_CAP_HANDLES, `first`, `count`).
pub fn get_handles(first: u32, count: u32) -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_GET_CAPABILITY)
        .u32(CAP_HANDLES)
        .u32(first)
        .u32(count)
        .build()
}

/// Parses a TPM2_GetCapability(TPM_CAP_HANDLES) response: (moreData, handles).
pub fn parse_handles(response: &[u8]) -> Option<(bool, Vec<u32>)> {
    let header = Header::parse(response)?;
    if header.code != RC_SUCCESS || header.size as usize != response.len() {
        return None;
    }
    // header, moreData u8, capability u32, TPML_HANDLE { count u32, handles }.
    let more = *response.get(10)? != 0;
    let count = u32::from_be_bytes(response.get(15..19)?.try_into().ok()?) as usize;
    let list = response.get(19..19usize.checked_add(count.checked_mul(4)?)?)?;
    let handles = list
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((more, handles))
}

/// TPM2_EvictControl(TPM_RH_OWNER with an empty password, `handle`, `handle`): removes
/// the persistent object at `handle`.
pub fn evict_persistent(handle: u32) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_EVICT_CONTROL)
        .u32(RH_OWNER)
        .u32(handle)
        .password_auth()
        .u32(handle)
        .build()
}

/// TPM_RH_LOCKOUT.
pub const RH_LOCKOUT: u32 = 0x4000_000A;
/// TPM_CC_DictionaryAttackParameters.
pub const CC_DICTIONARY_ATTACK_PARAMETERS: u32 = 0x0000_013A;

/// TPM2_DictionaryAttackParameters with the (empty) lockout authorization.
pub fn dictionary_attack_parameters(
    max_tries: u32,
    recovery_time: u32,
    lockout_recovery: u32,
) -> Vec<u8> {
    CommandBuilder::new(ST_SESSIONS, CC_DICTIONARY_ATTACK_PARAMETERS)
        .u32(RH_LOCKOUT)
        .password_auth()
        .u32(max_tries)
        .u32(recovery_time)
        .u32(lockout_recovery)
        .build()
}

/// TPM2_FlushContext(handle).
pub fn flush_context(handle: u32) -> Vec<u8> {
    CommandBuilder::new(ST_NO_SESSIONS, CC_FLUSH_CONTEXT)
        .u32(handle)
        .build()
}

/// What a successful TPM2_CreatePrimary returned that start-up keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedPrimary {
    /// The transient handle of the new object.
    pub handle: u32,
    /// Its TPMT_PUBLIC (the TPM2B_PUBLIC without its size prefix).
    pub public: Vec<u8>,
}

/// Parses a TPM2_CreatePrimary response: header, objectHandle, parameterSize, then
/// outPublic (TPM2B_PUBLIC). Returns `None` for an error response or a malformed one.
pub fn parse_create_primary(response: &[u8]) -> Option<CreatedPrimary> {
    let header = Header::parse(response)?;
    if header.code != RC_SUCCESS || header.size as usize != response.len() {
        return None;
    }
    let handle = u32::from_be_bytes(response.get(10..14)?.try_into().ok()?);
    let public_len = usize::from(u16::from_be_bytes(response.get(18..20)?.try_into().ok()?));
    let public = response.get(20..20 + public_len)?.to_vec();
    Some(CreatedPrimary { handle, public })
}

#[cfg(test)]
mod tests {
    #[test]
    fn handle_lists_parse_and_malformed_ones_are_refused() {
        let mut r = vec![
            0x80, 0x01, 0, 0, 0, 27, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2,
        ];
        r.extend_from_slice(&[0x81, 0, 0, 1, 0x81, 1, 0, 1]);
        assert_eq!(
            super::parse_handles(&r),
            Some((true, vec![0x8100_0001, 0x8101_0001]))
        );
        // A count beyond the data, a wrong size field, an error code.
        let mut long = r.clone();
        long[18] = 3;
        assert_eq!(super::parse_handles(&long), None);
        assert_eq!(super::parse_handles(&r[..r.len() - 1]), None);
        let mut error = r.clone();
        error[9] = 1;
        assert_eq!(super::parse_handles(&error), None);
        assert_eq!(
            super::command_code(&super::clear_probe()),
            Some(super::CC_CLEAR)
        );
        assert_eq!(super::command_code(&[0; 9]), None);
    }

    use super::*;

    #[test]
    fn startup_is_the_twelve_bytes_of_part3() {
        assert_eq!(
            startup_clear(),
            [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0]
        );
    }

    #[test]
    fn header_parse_needs_ten_bytes() {
        assert_eq!(Header::parse(&FAILURE_RESPONSE[..9]), None);
        assert_eq!(
            Header::parse(&FAILURE_RESPONSE),
            Some(Header {
                tag: ST_NO_SESSIONS,
                size: 10,
                code: RC_FAILURE
            })
        );
    }

    #[test]
    fn create_primary_response_parse_rejects_errors_and_short_bodies() {
        // An error response.
        assert_eq!(parse_create_primary(&FAILURE_RESPONSE), None);
        // A success header that claims a public area longer than the response.
        let mut r = vec![0x80, 0x02, 0, 0, 0, 22, 0, 0, 0, 0];
        r.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 100, 0, 0x23, 0, 0x0B]);
        r[5] = r.len() as u8;
        assert_eq!(parse_create_primary(&r), None);
    }
}
