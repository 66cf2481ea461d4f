//! The SVSM's client of the hypervisor: the GHCB MSR protocol and the GHCB page calls.
//!
//! GHCB specification 56421 (version 2), as Linux implements it
//! (`arch/x86/boot/startup/sev-shared.c`, `arch/x86/coco/sev/`):
//! - §2.3.1 "GHCB MSR Protocol": SEV information (0x002/0x001) with the supported
//!   protocol range, hypervisor features (0x080/0x081), GHCB registration
//!   (0x012/0x013), page state change (0x014/0x015), run VMPL (0x016/0x017) and
//!   termination (0x100);
//! - "GHCB page protocol": the request sets `sw_exit_code`, `sw_exit_info_1/2`, the
//!   registers it passes, and their valid bits; the answer's `sw_exit_info_1[31:0]` is
//!   0 on success, 1 with an exception to take in `sw_exit_info_2`;
//! - exits used: MSR (0x7C), IOIO (0x7B), AP creation (0x8000_0013), guest request
//!   (0x8000_0011).
//!
//! Every answer is decoded with the protocol crate's parsers and compared with the
//! request; outputs are read only when their valid bit is set.

use svsm_protocol::ghcb::{
    ApCreation, ApCreationEvent, Ghcb, GhcbField, HvFeatures, MsrRequest, MsrResponse, PageState,
    GHCB_PROTOCOL_VERSION, GHCB_USAGE_DEFAULT, SVM_EXIT_IOIO, SVM_EXIT_MSR,
    SVM_VMGEXIT_AP_CREATION, SVM_VMGEXIT_GUEST_REQUEST,
};

use super::{GhcbError, GhcbTransport, SnpError, TerminateReason};
use crate::platform::{PspError, Vmpl};

/// `SVM_EVTINJ_VALID`: bit 31 of an event injection value.
pub const EVTINJ_VALID: u64 = 1 << 31;
/// `SVM_EVTINJ_TYPE_MASK` (bits 10:8).
pub const EVTINJ_TYPE_MASK: u64 = 7 << 8;
/// `SVM_EVTINJ_TYPE_EXEPT`: an exception.
pub const EVTINJ_TYPE_EXCEPTION: u64 = 3 << 8;
/// #GP.
pub const VECTOR_GP: u8 = 13;
/// #UD.
pub const VECTOR_UD: u8 = 6;

/// IOIO exit_info_1 (APM vol. 2 "IN and OUT Behavior", EXITINFO1): IN.
pub const IOIO_TYPE_IN: u64 = 1 << 0;
/// IOIO: 8-bit operand.
pub const IOIO_DATA_8: u64 = 1 << 4;
/// IOIO: 16-bit operand.
pub const IOIO_DATA_16: u64 = 1 << 5;
/// IOIO: 32-bit operand.
pub const IOIO_DATA_32: u64 = 1 << 6;
/// IOIO: 16-bit address size.
pub const IOIO_ADDR_16: u64 = 1 << 7;
/// IOIO: 32-bit address size.
pub const IOIO_ADDR_32: u64 = 1 << 8;
/// IOIO: 64-bit address size.
pub const IOIO_ADDR_64: u64 = 1 << 9;

/// `SNP_GUEST_VMM_ERR_INVALID_LEN`: `sw_exit_info_2[63:32]` of a guest request whose
/// certificate buffer is too small.
pub const GUEST_VMM_ERR_INVALID_LEN: u32 = 1;
/// `SNP_GUEST_VMM_ERR_BUSY`: the PSP is busy; retry unchanged.
pub const GUEST_VMM_ERR_BUSY: u32 = 2;

/// The GHCB protocol version this SVSM speaks.
pub const PROTOCOL_VERSION: u16 = GHCB_PROTOCOL_VERSION;

/// Operand size of an I/O access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoSize {
    /// One byte.
    Byte,
    /// Two bytes.
    Word,
    /// Four bytes.
    Dword,
}

impl IoSize {
    /// The exit_info_1 size bit.
    pub const fn ioio_bit(self) -> u64 {
        match self {
            IoSize::Byte => IOIO_DATA_8,
            IoSize::Word => IOIO_DATA_16,
            IoSize::Dword => IOIO_DATA_32,
        }
    }

    /// The mask of the value's meaningful bits.
    pub const fn mask(self) -> u64 {
        match self {
            IoSize::Byte => 0xFF,
            IoSize::Word => 0xFFFF,
            IoSize::Dword => 0xFFFF_FFFF,
        }
    }
}

/// exit_info_1 of a non-string, non-REP IN/OUT on `port` (64-bit address size as
/// Linux's `vc_ioio_exitinfo` encodes it for a 64-bit kernel).
pub const fn ioio_exit_info(port: u16, size: IoSize, is_in: bool) -> u64 {
    ((port as u64) << 16) | size.ioio_bit() | IOIO_ADDR_64 | if is_in { IOIO_TYPE_IN } else { 0 }
}

/// What the hypervisor said about itself at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypervisorInfo {
    /// Lowest GHCB protocol version it supports.
    pub min_version: u16,
    /// Highest GHCB protocol version it supports.
    pub max_version: u16,
    /// The C-bit position it reports.
    pub cbit: u8,
    /// Its feature bits.
    pub features: HvFeatures,
}

impl HypervisorInfo {
    /// Whether the hypervisor announced multi-VMPL support (GHCB HV feature bit 5).
    pub fn multi_vmpl(&self) -> bool {
        self.features.contains(HvFeatures::SNP_MULTI_VMPL)
    }
}

/// Decodes a GHCB page answer's status (Linux `verify_exception_info`).
pub fn check_ghcb_result(ghcb: &Ghcb) -> Result<(), GhcbError> {
    if ghcb.protocol_version != PROTOCOL_VERSION || ghcb.ghcb_usage != GHCB_USAGE_DEFAULT {
        return Err(GhcbError::BadHeader);
    }
    let info1 = ghcb.sw_exit_info_1;
    let info2 = ghcb.sw_exit_info_2;
    match info1 & 0xFFFF_FFFF {
        0 => Ok(()),
        1 => {
            let vector = (info2 & 0xFF) as u8;
            if info2 & EVTINJ_VALID != 0
                && info2 & EVTINJ_TYPE_MASK == EVTINJ_TYPE_EXCEPTION
                && (vector == VECTOR_GP || vector == VECTOR_UD)
            {
                Err(GhcbError::Exception { vector })
            } else {
                Err(GhcbError::Vmm { info1, info2 })
            }
        }
        _ => Err(GhcbError::Vmm { info1, info2 }),
    }
}

/// A fresh GHCB request: header set, valid bitmap clear, exit code and infos set.
pub fn ghcb_request(exit_code: u64, info1: u64, info2: u64) -> Ghcb {
    let mut ghcb = Ghcb::zeroed();
    ghcb.protocol_version = PROTOCOL_VERSION;
    ghcb.ghcb_usage = GHCB_USAGE_DEFAULT;
    ghcb.set(GhcbField::SwExitCode, exit_code);
    ghcb.set(GhcbField::SwExitInfo1, info1);
    ghcb.set(GhcbField::SwExitInfo2, info2);
    ghcb
}

fn output(ghcb: &Ghcb, field: GhcbField) -> Result<u64, GhcbError> {
    ghcb.get_if_valid(field)
        .ok_or(GhcbError::MissingOutput(field as u16))
}

/// The SVSM's client of the hypervisor over a transport.
#[derive(Debug)]
pub struct HvClient<T> {
    transport: T,
}

impl<T: GhcbTransport> HvClient<T> {
    /// A client over `transport`.
    pub const fn new(transport: T) -> Self {
        Self { transport }
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    fn msr_call(&self, request: MsrRequest) -> Result<MsrResponse, SnpError> {
        let raw = request.encode();
        let response = self.transport.msr_exchange(raw);
        MsrResponse::decode(response).map_err(|_| SnpError::BadMsrResponse {
            request: raw,
            response,
        })
    }

    fn mismatch(request: MsrRequest, response: MsrResponse) -> SnpError {
        SnpError::BadMsrResponse {
            request: request.encode(),
            response: response.encode(),
        }
    }

    /// SEV information and hypervisor features: the first thing the SVSM asks. Fails if
    /// the hypervisor cannot speak GHCB protocol version 2, does not support SNP or AP
    /// creation. A missing multi-VMPL bit is only logged: KVM does not advertise it,
    /// yet runs VMPLs when the host supports them.
    pub fn negotiate(&self) -> Result<HypervisorInfo, SnpError> {
        let (min_version, max_version, cbit) = match self.msr_call(MsrRequest::SevInfo)? {
            MsrResponse::SevInfo {
                max_version,
                min_version,
                cbit,
            } => (min_version, max_version, cbit),
            other => return Err(Self::mismatch(MsrRequest::SevInfo, other)),
        };
        if min_version > PROTOCOL_VERSION || max_version < PROTOCOL_VERSION {
            return Err(SnpError::ProtocolVersion {
                min: min_version,
                max: max_version,
            });
        }
        let features = match self.msr_call(MsrRequest::HypervisorFeatures)? {
            MsrResponse::HypervisorFeatures(f) => f,
            other => return Err(Self::mismatch(MsrRequest::HypervisorFeatures, other)),
        };
        if !features.contains(HvFeatures::SNP) {
            return Err(SnpError::NoSnp(features));
        }
        if !features.contains(HvFeatures::SNP_AP_CREATION) {
            return Err(SnpError::NoApCreation(features));
        }
        let info = HypervisorInfo {
            min_version,
            max_version,
            cbit,
            features,
        };
        if !info.multi_vmpl() {
            log::warn!(
                "hypervisor features {:#x} lack multi-VMPL (bit 5); continuing, as KVM does not advertise it",
                features.bits()
            );
        }
        Ok(info)
    }

    /// Changes one page's state through the MSR protocol.
    pub fn page_state_change(&self, gfn: u64, state: PageState) -> Result<(), SnpError> {
        let request = MsrRequest::PageStateChange { gfn, state };
        match self.msr_call(request)? {
            MsrResponse::PageStateChange { error: 0 } => Ok(()),
            MsrResponse::PageStateChange { error } => Err(SnpError::PageStateChange { gfn, error }),
            other => Err(Self::mismatch(request, other)),
        }
    }

    /// Registers the GHCB at `gfn` (which the caller already made shared: the
    /// hypervisor can only read a shared page).
    pub fn register_ghcb(&self, gfn: u64) -> Result<(), SnpError> {
        let request = MsrRequest::RegisterGhcb { gfn };
        match self.msr_call(request)? {
            MsrResponse::RegisterGhcb { gfn: got } if got == gfn => Ok(()),
            MsrResponse::RegisterGhcb { gfn: got } => {
                Err(SnpError::GhcbRegistration { expected: gfn, got })
            }
            other => Err(Self::mismatch(request, other)),
        }
    }

    /// Asks the hypervisor to run `vmpl` on this vCPU; returns when the hypervisor next
    /// runs VMPL0 here (after the guest's VMGEXIT, or for any reason it chooses).
    pub fn run_vmpl(&self, vmpl: Vmpl) -> Result<(), SnpError> {
        let request = MsrRequest::RunVmpl { vmpl: vmpl.level() };
        match self.msr_call(request)? {
            MsrResponse::RunVmpl { error: 0 } => Ok(()),
            MsrResponse::RunVmpl { error } => Err(SnpError::RunVmpl(error)),
            other => Err(Self::mismatch(request, other)),
        }
    }

    /// Asks the hypervisor to terminate the VM. Returns only if the hypervisor ignored
    /// the request (a caller then halts).
    pub fn terminate(&self, reason: TerminateReason) {
        let _ = self.transport.msr_exchange(
            MsrRequest::Terminate {
                set: reason.set,
                code: reason.code,
            }
            .encode(),
        );
    }

    fn page_call(&self, ghcb: &mut Ghcb) -> Result<(), SnpError> {
        self.transport.ghcb_exchange(ghcb);
        check_ghcb_result(ghcb).map_err(SnpError::Ghcb)
    }

    /// RDMSR through the GHCB (exit 0x7C, exit_info_1 = 0).
    pub fn read_msr(&self, msr: u32) -> Result<u64, SnpError> {
        let mut ghcb = ghcb_request(SVM_EXIT_MSR, 0, 0);
        ghcb.set(GhcbField::Rcx, msr.into());
        self.page_call(&mut ghcb)?;
        let lo = output(&ghcb, GhcbField::Rax).map_err(SnpError::Ghcb)?;
        let hi = output(&ghcb, GhcbField::Rdx).map_err(SnpError::Ghcb)?;
        Ok(((hi & 0xFFFF_FFFF) << 32) | (lo & 0xFFFF_FFFF))
    }

    /// WRMSR through the GHCB (exit 0x7C, exit_info_1 = 1).
    pub fn write_msr(&self, msr: u32, value: u64) -> Result<(), SnpError> {
        let mut ghcb = ghcb_request(SVM_EXIT_MSR, 1, 0);
        ghcb.set(GhcbField::Rcx, msr.into());
        ghcb.set(GhcbField::Rax, value & 0xFFFF_FFFF);
        ghcb.set(GhcbField::Rdx, value >> 32);
        self.page_call(&mut ghcb)
    }

    /// IN through the GHCB (exit 0x7B).
    pub fn io_in(&self, port: u16, size: IoSize) -> Result<u64, SnpError> {
        let mut ghcb = ghcb_request(SVM_EXIT_IOIO, ioio_exit_info(port, size, true), 0);
        ghcb.set(GhcbField::Rax, 0);
        self.page_call(&mut ghcb)?;
        Ok(output(&ghcb, GhcbField::Rax).map_err(SnpError::Ghcb)? & size.mask())
    }

    /// OUT through the GHCB (exit 0x7B).
    pub fn io_out(&self, port: u16, size: IoSize, value: u64) -> Result<(), SnpError> {
        let mut ghcb = ghcb_request(SVM_EXIT_IOIO, ioio_exit_info(port, size, false), 0);
        ghcb.set(GhcbField::Rax, value & size.mask());
        self.page_call(&mut ghcb)
    }

    /// AP creation (exit 0x8000_0013, event "create"): the hypervisor may run the VMSA
    /// at `vmsa_gpa` as vCPU `apic_id` at `vmpl`; RAX carries the VMSA's sev_features.
    pub fn create_ap(
        &self,
        apic_id: u32,
        vmpl: Vmpl,
        vmsa_gpa: u64,
        sev_features: u64,
    ) -> Result<(), SnpError> {
        let info1 = ApCreation {
            apic_id,
            vmpl: vmpl.level(),
            event: ApCreationEvent::Create,
        }
        .encode();
        let mut ghcb = ghcb_request(SVM_VMGEXIT_AP_CREATION, info1, vmsa_gpa);
        ghcb.set(GhcbField::Rax, sev_features);
        self.page_call(&mut ghcb)
    }

    /// SNP guest request (exit 0x8000_0011) with the request and response pages at
    /// these (shared) GPAs.
    pub fn guest_request(&self, request_gpa: u64, response_gpa: u64) -> Result<(), PspError> {
        let mut ghcb = ghcb_request(SVM_VMGEXIT_GUEST_REQUEST, request_gpa, response_gpa);
        self.transport.ghcb_exchange(&mut ghcb);
        if check_ghcb_result(&ghcb).is_err() {
            return Err(PspError::Hypervisor(u32::MAX));
        }
        let info2 = ghcb.sw_exit_info_2;
        let vmm = (info2 >> 32) as u32;
        let firmware = info2 as u32;
        match (vmm, firmware) {
            (0, 0) => Ok(()),
            (GUEST_VMM_ERR_BUSY, _) => Err(PspError::Busy),
            (0, fw) => Err(PspError::Firmware(fw)),
            (vmm, _) => Err(PspError::Hypervisor(vmm)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A scripted peer: answers MSR requests from a list, echoes GHCB calls through a
    /// closure.
    struct Script {
        msr: Mutex<Vec<(u64, u64)>>,
        page: Box<dyn Fn(&mut Ghcb) + Send + Sync>,
    }

    impl GhcbTransport for Script {
        fn msr_exchange(&self, request: u64) -> u64 {
            let mut msr = self.msr.lock().unwrap();
            let (expect, answer) = msr.remove(0);
            assert_eq!(request, expect, "unexpected MSR request");
            answer
        }
        fn ghcb_exchange(&self, ghcb: &mut Ghcb) {
            // Success unless the script says otherwise.
            let request_info1 = ghcb.sw_exit_info_1;
            (self.page)(ghcb);
            if ghcb.sw_exit_info_1 == request_info1 {
                ghcb.sw_exit_info_1 = 0;
            }
        }
    }

    fn msr_script(pairs: &[(u64, u64)]) -> HvClient<Script> {
        HvClient::new(Script {
            msr: Mutex::new(pairs.to_vec()),
            page: Box::new(|_| {}),
        })
    }

    fn page_script(f: impl Fn(&mut Ghcb) + Send + Sync + 'static) -> HvClient<Script> {
        HvClient::new(Script {
            msr: Mutex::new(Vec::new()),
            page: Box::new(f),
        })
    }

    // SEV info response: max 2, min 1, C-bit 51 => 0x0002_0001_3300_0001.
    const SEV_INFO: u64 = (2 << 48) | (1 << 32) | (51 << 24) | 0x001;

    #[test]
    fn msr_values_follow_the_ghcb_spec() {
        assert_eq!(MsrRequest::SevInfo.encode(), 0x002);
        assert_eq!(MsrRequest::HypervisorFeatures.encode(), 0x080);
        assert_eq!(MsrRequest::RunVmpl { vmpl: 2 }.encode(), 0x2_0000_0016);
        assert_eq!(
            MsrRequest::PageStateChange {
                gfn: 0x12345,
                state: PageState::Shared
            }
            .encode(),
            0x0020_0000_1234_5014
        );
        assert_eq!(
            MsrRequest::Terminate { set: 3, code: 7 }.encode(),
            0x07_3100
        );
        assert_eq!(SEV_INFO, 0x0002_0001_3300_0001);
    }

    #[test]
    fn negotiation_accepts_version_2_and_logs_missing_multi_vmpl() {
        let hv = msr_script(&[(0x002, SEV_INFO), (0x080, (0b11 << 12) | 0x081)]);
        let info = hv.negotiate().unwrap();
        assert_eq!((info.min_version, info.max_version, info.cbit), (1, 2, 51));
        assert!(!info.multi_vmpl());
        let hv = msr_script(&[(0x002, SEV_INFO), (0x080, (0b10_0011 << 12) | 0x081)]);
        assert!(hv.negotiate().unwrap().multi_vmpl());
    }

    #[test]
    fn negotiation_refuses_what_it_must() {
        // Protocol range 3..=4 and 1..=1 exclude version 2.
        let v34 = (4 << 48) | (3 << 32) | (51 << 24) | 0x001;
        let v11 = (1 << 48) | (1 << 32) | (51 << 24) | 0x001;
        for info in [v34, v11] {
            let err = msr_script(&[(0x002, info)]).negotiate().unwrap_err();
            assert!(matches!(err, SnpError::ProtocolVersion { .. }), "{err:?}");
            assert_eq!(
                err.termination_reason(),
                TerminateReason { set: 0, code: 1 }
            );
        }
        // No SNP bit; no AP creation.
        let err = msr_script(&[(0x002, SEV_INFO), (0x080, (0b10 << 12) | 0x081)])
            .negotiate()
            .unwrap_err();
        assert!(matches!(err, SnpError::NoSnp(_)));
        assert_eq!(
            err.termination_reason(),
            TerminateReason { set: 0, code: 2 }
        );
        let err = msr_script(&[(0x002, SEV_INFO), (0x080, (0b1 << 12) | 0x081)])
            .negotiate()
            .unwrap_err();
        assert!(matches!(err, SnpError::NoApCreation(_)));
        // A wrong function code in the answer.
        let err = msr_script(&[(0x002, 0x013)]).negotiate().unwrap_err();
        assert_eq!(
            err,
            SnpError::BadMsrResponse {
                request: 0x002,
                response: 0x013
            }
        );
        // Reserved bits 23:12 of the SEV info answer set.
        let err = msr_script(&[(0x002, SEV_INFO | 0x5000)])
            .negotiate()
            .unwrap_err();
        assert!(matches!(err, SnpError::BadMsrResponse { .. }));
    }

    #[test]
    fn registration_and_page_state_check_the_answer() {
        let hv = msr_script(&[(0x1234_5012, 0x1234_5013)]);
        hv.register_ghcb(0x12345).unwrap();
        let hv = msr_script(&[(0x1234_5012, 0x1234_6013)]);
        assert_eq!(
            hv.register_ghcb(0x12345),
            Err(SnpError::GhcbRegistration {
                expected: 0x12345,
                got: 0x12346
            })
        );
        let hv = msr_script(&[(0x0020_0000_0000_5014, 0x015)]);
        hv.page_state_change(5, PageState::Shared).unwrap();
        let hv = msr_script(&[(0x0010_0000_0000_5014, (7 << 32) | 0x015)]);
        assert_eq!(
            hv.page_state_change(5, PageState::Private),
            Err(SnpError::PageStateChange { gfn: 5, error: 7 })
        );
    }

    #[test]
    fn run_vmpl_needs_a_zero_error() {
        let vmpl2 = Vmpl::new(2).unwrap();
        msr_script(&[(0x2_0000_0016, 0x017)])
            .run_vmpl(vmpl2)
            .unwrap();
        assert_eq!(
            msr_script(&[(0x2_0000_0016, (1 << 32) | 0x017)]).run_vmpl(vmpl2),
            Err(SnpError::RunVmpl(1))
        );
        // An answer from another function is not success.
        assert!(matches!(
            msr_script(&[(0x2_0000_0016, 0x015)]).run_vmpl(vmpl2),
            Err(SnpError::BadMsrResponse { .. })
        ));
    }

    #[test]
    fn ghcb_results_follow_linux() {
        let mut g = ghcb_request(SVM_EXIT_MSR, 0, 0);
        assert_eq!(check_ghcb_result(&g), Ok(()));
        g.sw_exit_info_1 = 1;
        g.sw_exit_info_2 = EVTINJ_VALID | EVTINJ_TYPE_EXCEPTION | 13;
        assert_eq!(
            check_ghcb_result(&g),
            Err(GhcbError::Exception { vector: 13 })
        );
        g.sw_exit_info_2 = EVTINJ_VALID | EVTINJ_TYPE_EXCEPTION | 14;
        assert!(matches!(check_ghcb_result(&g), Err(GhcbError::Vmm { .. })));
        g.sw_exit_info_2 = EVTINJ_TYPE_EXCEPTION | 6;
        assert!(matches!(check_ghcb_result(&g), Err(GhcbError::Vmm { .. })));
        g.sw_exit_info_1 = 2;
        assert!(matches!(check_ghcb_result(&g), Err(GhcbError::Vmm { .. })));
        // Only bits 31:0 carry the result.
        g.sw_exit_info_1 = 1 << 32;
        assert_eq!(check_ghcb_result(&g), Ok(()));
        g.protocol_version = 1;
        assert_eq!(check_ghcb_result(&g), Err(GhcbError::BadHeader));
    }

    #[test]
    fn msr_call_sets_the_fields_and_needs_rax_rdx_back() {
        let hv = page_script(|g| {
            assert_eq!(g.get_if_valid(GhcbField::SwExitCode), Some(0x7C));
            assert_eq!(g.get_if_valid(GhcbField::SwExitInfo1), Some(0));
            assert_eq!(g.get_if_valid(GhcbField::Rcx), Some(0x1B));
            // The valid bitmap: SW_EXITCODE is bit 0x390/8 = 114.
            assert_ne!(g.valid_bitmap[114 / 8] & (1 << (114 % 8)), 0);
            g.clear_valid();
            g.set(GhcbField::Rax, 0xFEE0_0900);
            g.set(GhcbField::Rdx, 0x1);
        });
        assert_eq!(hv.read_msr(0x1B).unwrap(), 0x1_FEE0_0900);
        let hv = page_script(|g| {
            g.clear_valid();
            g.set(GhcbField::Rax, 5);
        });
        assert_eq!(
            hv.read_msr(0x1B),
            Err(SnpError::Ghcb(GhcbError::MissingOutput(0x310)))
        );
    }

    #[test]
    fn valid_bits_are_offset_over_8_as_in_linux() {
        // Linux `ghcb_set_<field>` sets bit offsetof(struct ghcb_save_area, field) / 8.
        for (field, bit) in [
            (GhcbField::Rax, 63),
            (GhcbField::Rcx, 97),
            (GhcbField::Rdx, 98),
            (GhcbField::Rbx, 99),
            (GhcbField::SwExitCode, 114),
            (GhcbField::SwExitInfo1, 115),
            (GhcbField::SwExitInfo2, 116),
            (GhcbField::SwScratch, 117),
            (GhcbField::Xcr0, 125),
        ] {
            let mut g = Ghcb::zeroed();
            g.set(field, 1);
            let set: Vec<usize> = (0..128)
                .filter(|b| g.valid_bitmap[b / 8] & (1 << (b % 8)) != 0)
                .collect();
            assert_eq!(set, vec![bit], "{field:?}");
        }
        // A request carries the protocol version 2 and usage 0 at 0xFFA/0xFFC.
        let g = ghcb_request(SVM_EXIT_MSR, 0, 0);
        let bytes = zerocopy::IntoBytes::as_bytes(&g);
        assert_eq!(&bytes[0xFFA..0xFFC], &2u16.to_le_bytes());
        assert_eq!(&bytes[0xFFC..0x1000], &0u32.to_le_bytes());
        assert_eq!(&bytes[0x390..0x398], &0x7Cu64.to_le_bytes());
    }

    #[test]
    fn ioio_exit_info_follows_the_apm() {
        // OUT DX, AL to 0x3F8: port << 16, SZ8 (bit 4), A64 (bit 9), type OUT.
        assert_eq!(ioio_exit_info(0x3F8, IoSize::Byte, false), 0x03F8_0210);
        assert_eq!(ioio_exit_info(0xCFC, IoSize::Dword, true), 0x0CFC_0241);
        let hv = page_script(|g| {
            assert_eq!(g.sw_exit_info_1, 0x0060_0211);
            g.set(GhcbField::Rax, 0xABCD);
        });
        // Only the operand's bits come back.
        assert_eq!(hv.io_in(0x60, IoSize::Byte).unwrap(), 0xCD);
    }

    #[test]
    fn ap_creation_and_guest_request_encodings() {
        let hv = page_script(|g| {
            assert_eq!(g.sw_exit_code, 0x8000_0013);
            assert_eq!(g.sw_exit_info_1, (3 << 32) | (2 << 16) | 1);
            assert_eq!(g.sw_exit_info_2, 0x8_0000);
            assert_eq!(g.get_if_valid(GhcbField::Rax), Some(0x1));
        });
        hv.create_ap(3, Vmpl::new(2).unwrap(), 0x8_0000, 1).unwrap();
        let busy = page_script(|g| g.sw_exit_info_2 = u64::from(GUEST_VMM_ERR_BUSY) << 32);
        assert_eq!(busy.guest_request(0x1000, 0x2000), Err(PspError::Busy));
        let fw = page_script(|g| g.sw_exit_info_2 = 0x16);
        assert_eq!(
            fw.guest_request(0x1000, 0x2000),
            Err(PspError::Firmware(0x16))
        );
        let ok = page_script(|g| {
            assert_eq!(
                (g.sw_exit_code, g.sw_exit_info_1, g.sw_exit_info_2),
                (0x8000_0011, 0x1000, 0x2000)
            );
            g.sw_exit_info_2 = 0;
        });
        assert_eq!(ok.guest_request(0x1000, 0x2000), Ok(()));
    }
}
