//! Restricted injection: the #HV doorbell page, its registration and what its pending
//! events mean.
//!
//! Under restricted injection (SEV_FEATURES bit 3, AMD APM vol. 2 "Restricted
//! Injection") the hardware lets the hypervisor inject only #HV (vector 28); interrupts
//! and NMIs are posted in a per-vCPU doorbell page the guest registers with the "#HV
//! Doorbell Page" NAE event (GHCB spec 56421; the values are in
//! [`svsm_protocol::hv_doorbell`]). Linux (`arch/x86/coco/sev`, the restricted-injection
//! series) and COCONUT-SVSM take the events the same way: atomically exchange the
//! pending-events word with zero, handle NMI and #MC, dispatch the vector, acknowledge it
//! unless the page says no EOI is required.
//!
//! Policy (the same on hardware and on the emulated machine):
//! - the doorbell is registered only when restricted injection is *negotiated*: active
//!   in SEV_STATUS and announced by the hypervisor (GHCB HV feature bit 2); otherwise a
//!   #HV is spurious ([`super::vector::classify`]);
//! - the registration is checked: SET must answer with the GPA that was set and QUERY
//!   must then return it, else a typed [`DoorbellError`] (termination code
//!   [`super::term::DOORBELL`]);
//! - a #MC through the doorbell terminates (as a directly injected #MC does); an NMI is
//!   logged and ignored (the SVSM uses none); vectors 1..=31 cannot be external
//!   interrupts and are dropped; a vector 32..=255 runs the hook registered for it
//!   ([`VectorHooks`]) or is logged and dropped; vectors from 32 up are acknowledged
//!   (x2APIC EOI through the GHCB) unless the no-EOI-required flag is set;
//! - when the interrupted code had interrupts disabled, only NMI and #MC are taken; the
//!   vector stays posted (with the no-further-signal bit as the hypervisor left it)
//!   until the SVSM is interruptible again ([`process`] with `interruptible`);
//! - one #HV takes at most [`MAX_ROUNDS`] words: a hypervisor that keeps posting cannot
//!   hold the vCPU in the handler; what is left stays posted for the next #HV.
//!
//! Nothing here trusts the page: every word is read once, atomically, and every value
//! of it has a defined outcome.

use spin::{Mutex, Once};
use svsm_protocol::ghcb::{GhcbField, HvFeatures};
use svsm_protocol::hv_doorbell::{
    DoorbellRequest, PendingEvents, NO_DOORBELL_PAGE, NO_EOI_REQUIRED, PENDING_MC, PENDING_NMI,
    SVM_VMGEXIT_HV_DOORBELL_PAGE,
};
use svsm_protocol::vmsa::SevFeatures;

use super::boot::make_shared;
use super::hypervisor::{check_ghcb_result, ghcb_request, HvClient};
use super::vector::{FIRST_EXTERNAL, VECTOR_MC};
use super::{GhcbError, GhcbTransport, SnpError};
use crate::platform::{Platform, PAGE_SIZE};

/// The x2APIC EOI register (MSR 0x80B; Intel SDM vol. 3A table 11-6, AMD APM vol. 2
/// "x2APIC Register Address Space").
pub const X2APIC_EOI_MSR: u32 = 0x80B;

/// Most pending-events words one #HV takes.
pub const MAX_ROUNDS: usize = 16;

/// Whether restricted injection is in force and agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictedInjection {
    /// Not active: the hypervisor injects vectors directly.
    Off,
    /// Active in SEV_STATUS and announced by the hypervisor: register the doorbell.
    Negotiated,
    /// Active in SEV_STATUS, but the hypervisor does not announce it: no doorbell is
    /// registered, so no interrupt can reach this vCPU (logged).
    Unannounced,
}

impl RestrictedInjection {
    /// From the vCPU's SEV features (SEV_STATUS >> 2) and the hypervisor's features.
    pub fn new(features: SevFeatures, hypervisor: HvFeatures) -> Self {
        match (
            features.contains(SevFeatures::RESTRICTED_INJECTION),
            hypervisor.contains(HvFeatures::SNP_RESTRICTED_INJECTION),
        ) {
            (false, _) => Self::Off,
            (true, true) => Self::Negotiated,
            (true, false) => Self::Unannounced,
        }
    }
}

/// Why the doorbell could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorbellError {
    /// The hypervisor refused the request (or answered it with a bad GHCB).
    Refused(GhcbError),
    /// SET answered with another GPA than the one set.
    WrongGpa {
        /// The GPA set.
        expected: u64,
        /// What came back.
        got: u64,
    },
    /// QUERY after SET returned another GPA (or none).
    QueryMismatch {
        /// The GPA set.
        expected: u64,
        /// What QUERY returned.
        got: u64,
    },
    /// GET_PREFERRED or QUERY returned a GPA that is not page aligned.
    Unaligned(u64),
    /// The page to register is not page aligned (a caller bug, refused before asking).
    BadPage(u64),
}

impl From<DoorbellError> for SnpError {
    fn from(e: DoorbellError) -> Self {
        SnpError::Doorbell(e)
    }
}

fn page_or_none(answer: u64) -> Result<Option<u64>, DoorbellError> {
    match answer {
        NO_DOORBELL_PAGE => Ok(None),
        gpa if gpa % PAGE_SIZE == 0 => Ok(Some(gpa)),
        gpa => Err(DoorbellError::Unaligned(gpa)),
    }
}

impl<T: GhcbTransport> HvClient<T> {
    /// One doorbell NAE event (exit 0x8000_0014): the answer's `sw_exit_info_2`.
    fn doorbell_call(&self, request: DoorbellRequest, gpa: u64) -> Result<u64, DoorbellError> {
        let mut ghcb = ghcb_request(SVM_VMGEXIT_HV_DOORBELL_PAGE, request as u64, gpa);
        self.transport().ghcb_exchange(&mut ghcb);
        check_ghcb_result(&ghcb).map_err(DoorbellError::Refused)?;
        // The answer is in SW_EXITINFO2 (KVM sets it with its valid bit; a peer that
        // leaves the bit clear has still written the field, as for guest requests).
        Ok(ghcb
            .get_if_valid(GhcbField::SwExitInfo2)
            .unwrap_or(ghcb.sw_exit_info_2))
    }

    /// GET_PREFERRED: the GPA the hypervisor would like (`None`: no preference). The
    /// SVSM never places its page there; this is for diagnostics and tests.
    pub fn doorbell_preferred(&self) -> Result<Option<u64>, DoorbellError> {
        page_or_none(self.doorbell_call(DoorbellRequest::GetPreferred, 0)?)
    }

    /// SET: registers the (shared) page at `gpa` for this vCPU; the answer must name it.
    pub fn set_doorbell(&self, gpa: u64) -> Result<(), DoorbellError> {
        if gpa % PAGE_SIZE != 0 || gpa == NO_DOORBELL_PAGE {
            return Err(DoorbellError::BadPage(gpa));
        }
        match self.doorbell_call(DoorbellRequest::Set, gpa)? {
            got if got == gpa => Ok(()),
            got => Err(DoorbellError::WrongGpa { expected: gpa, got }),
        }
    }

    /// QUERY: the page registered for this vCPU (`None`: none).
    pub fn query_doorbell(&self) -> Result<Option<u64>, DoorbellError> {
        page_or_none(self.doorbell_call(DoorbellRequest::Query, 0)?)
    }

    /// CLEAR: unregisters this vCPU's page.
    pub fn clear_doorbell(&self) -> Result<(), DoorbellError> {
        self.doorbell_call(DoorbellRequest::Clear, 0).map(|_| ())
    }
}

/// A doorbell page the hypervisor can write at any moment. Each method is one atomic
/// access to the shared page (a locked instruction on hardware).
pub trait DoorbellPage {
    /// Exchanges the pending-events word with zero; returns what it held.
    fn take_pending(&self) -> u16;
    /// Clears `mask` in the pending-events word; returns what it held.
    fn clear_pending(&self, mask: u16) -> u16;
    /// Exchanges the no-EOI-required byte with zero; returns what it held.
    fn take_no_eoi_required(&self) -> u8;
    /// Zeroes the pending-events word and the no-EOI-required byte (before
    /// registration).
    fn reset(&self);
}

impl RestrictedInjection {
    /// Whether a doorbell is to be registered; logs the unannounced case.
    pub fn wants_doorbell(self) -> bool {
        match self {
            Self::Off => false,
            Self::Negotiated => true,
            Self::Unannounced => {
                log::warn!(
                    "snp: restricted injection is active but the hypervisor does not announce it (GHCB HV feature bit 2): no #HV doorbell, no interrupts"
                );
                false
            }
        }
    }
}

/// Sets up this vCPU's doorbell at `gpa` when restricted injection is negotiated:
/// rescinded and made shared, then [`register_doorbell`] (`page` is its shared
/// mapping). Returns whether a doorbell is now registered; with `Off`/`Unannounced`
/// nothing is touched and nothing is asked.
pub fn setup_doorbell<P: Platform, T: GhcbTransport, D: DoorbellPage>(
    platform: &P,
    hv: &HvClient<T>,
    mode: RestrictedInjection,
    gpa: u64,
    page: &D,
) -> Result<bool, SnpError> {
    if !mode.wants_doorbell() {
        return Ok(false);
    }
    if gpa % PAGE_SIZE != 0 {
        return Err(DoorbellError::BadPage(gpa).into());
    }
    make_shared(platform, hv, gpa)?;
    register_doorbell(hv, gpa, page)?;
    Ok(true)
}

/// Registers the already shared page at `gpa` (`page` its shared mapping): zeroed,
/// SET, and QUERY must return it.
pub fn register_doorbell<T: GhcbTransport, D: DoorbellPage>(
    hv: &HvClient<T>,
    gpa: u64,
    page: &D,
) -> Result<(), DoorbellError> {
    page.reset();
    hv.set_doorbell(gpa)?;
    match hv.query_doorbell()? {
        Some(got) if got == gpa => {
            log::info!("snp: #HV doorbell at {gpa:#x} registered (restricted injection)");
            Ok(())
        }
        other => Err(DoorbellError::QueryMismatch {
            expected: gpa,
            got: other.unwrap_or(NO_DOORBELL_PAGE),
        }),
    }
}

/// A handler for an external vector: runs in interrupt context and must not take locks
/// the interrupted code may hold. It does the work only; the path that delivered the
/// vector acknowledges it (EOI).
pub type VectorHook = fn(u8);

/// How many external vectors can have a hook.
pub const HOOK_SLOTS: usize = 8;

/// Why a hook was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookError {
    /// Vectors 0..=31 are exceptions, never external interrupts.
    NotExternal(u8),
    /// The vector already has a hook.
    Taken(u8),
    /// All [`HOOK_SLOTS`] are used.
    Full,
}

/// The external vectors the SVSM handles, with their hooks (e.g. the cross-CPU call
/// IPI). Lookups are lock-free (interrupt context); registrations are serialized.
#[derive(Debug)]
pub struct VectorHooks {
    slots: [Once<(u8, VectorHook)>; HOOK_SLOTS],
    register: Mutex<()>,
}

impl Default for VectorHooks {
    fn default() -> Self {
        Self::new()
    }
}

impl VectorHooks {
    /// No hooks.
    pub const fn new() -> Self {
        Self {
            slots: [const { Once::new() }; HOOK_SLOTS],
            register: Mutex::new(()),
        }
    }

    /// Registers `hook` for `vector` (32..=255), once.
    pub fn register(&self, vector: u8, hook: VectorHook) -> Result<(), HookError> {
        if vector < FIRST_EXTERNAL {
            return Err(HookError::NotExternal(vector));
        }
        let _serial = self.register.lock();
        if self.lookup(vector).is_some() {
            return Err(HookError::Taken(vector));
        }
        let slot = self
            .slots
            .iter()
            .find(|s| !s.is_completed())
            .ok_or(HookError::Full)?;
        slot.call_once(|| (vector, hook));
        Ok(())
    }

    /// The hook of `vector`, if any.
    pub fn lookup(&self, vector: u8) -> Option<VectorHook> {
        self.slots
            .iter()
            .filter_map(Once::get)
            .find(|(v, _)| *v == vector)
            .map(|&(_, hook)| hook)
    }
}

/// What a vector posted in the doorbell means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostedVector {
    /// 0: nothing posted.
    None,
    /// A vector with a hook: run it.
    Dispatch(u8),
    /// 1..=31: not an external interrupt; dropped (logged).
    NotExternal(u8),
    /// 32..=255 without a hook: dropped (logged).
    Unexpected(u8),
}

impl PostedVector {
    /// Classifies `vector` against `hooks`.
    pub fn classify(vector: u8, hooks: &VectorHooks) -> Self {
        match vector {
            0 => Self::None,
            1..FIRST_EXTERNAL => Self::NotExternal(vector),
            v if hooks.lookup(v).is_some() => Self::Dispatch(v),
            v => Self::Unexpected(v),
        }
    }

    /// Whether the vector is acknowledged (external vectors, taken or dropped, so the
    /// hypervisor's APIC model does not keep it in service), given the no-EOI byte.
    pub fn needs_eoi(self, no_eoi_required: u8) -> bool {
        matches!(self, Self::Dispatch(_) | Self::Unexpected(_))
            && no_eoi_required & NO_EOI_REQUIRED == 0
    }
}

/// What one #HV (or poll) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DoorbellReport {
    /// Pending-events words taken (non-zero ones).
    pub rounds: usize,
    /// Vectors whose hook ran.
    pub dispatched: u32,
    /// Vectors dropped (no hook, or not external).
    pub dropped: u32,
    /// NMIs taken (and ignored).
    pub nmis: u32,
    /// EOIs written.
    pub eois: u32,
    /// Reserved bits seen set (logged).
    pub reserved: u16,
    /// A vector was left posted because the SVSM was not interruptible.
    pub deferred: bool,
    /// [`MAX_ROUNDS`] words were taken and the word was still not empty.
    pub exhausted: bool,
}

/// Handles this vCPU's doorbell: takes the pending events and acts on them (module
/// docs). `interruptible` is the interrupted code's RFLAGS.IF (or true for a poll from
/// interruptible code). An `Err` (a #MC, or an EOI the hypervisor answered wrongly)
/// means the caller terminates with its reason.
pub fn process<D: DoorbellPage, T: GhcbTransport>(
    page: &D,
    interruptible: bool,
    hooks: &VectorHooks,
    hv: &HvClient<T>,
) -> Result<DoorbellReport, SnpError> {
    let mut report = DoorbellReport::default();
    if !interruptible {
        // Only what cannot wait; the vector and the no-further-signal bit stay.
        let events = PendingEvents::decode(page.clear_pending(PENDING_NMI | PENDING_MC));
        if events.mc {
            return Err(SnpError::FatalVector(VECTOR_MC));
        }
        if events.nmi {
            report.nmis += 1;
        }
        report.deferred = events.vector != 0;
        report.reserved = events.reserved;
        return Ok(report);
    }
    for _ in 0..MAX_ROUNDS {
        // Clears no-further-signal too: from here on the hypervisor may signal again.
        let word = page.take_pending();
        if word == 0 {
            return Ok(report);
        }
        report.rounds += 1;
        let events = PendingEvents::decode(word);
        if events.reserved != 0 && report.reserved == 0 {
            log::warn!("snp: #HV doorbell word {word:#06x} has reserved bits set");
        }
        report.reserved |= events.reserved;
        if events.mc {
            return Err(SnpError::FatalVector(VECTOR_MC));
        }
        if events.nmi {
            report.nmis += 1;
            log::warn!("snp: ignoring an NMI posted in the #HV doorbell");
        }
        let posted = PostedVector::classify(events.vector, hooks);
        match posted {
            PostedVector::None => {}
            PostedVector::Dispatch(v) => {
                if let Some(hook) = hooks.lookup(v) {
                    hook(v);
                }
                report.dispatched += 1;
            }
            PostedVector::NotExternal(v) | PostedVector::Unexpected(v) => {
                log::warn!("snp: dropping vector {v} posted in the #HV doorbell");
                report.dropped += 1;
            }
        }
        if posted != PostedVector::None && posted.needs_eoi(page.take_no_eoi_required()) {
            hv.write_msr(X2APIC_EOI_MSR, 0)?;
            report.eois += 1;
        }
    }
    // Clearing no bits reads the word without taking it.
    report.exhausted = page.clear_pending(0) != 0;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU8, Ordering};
    use std::sync::Mutex as StdMutex;
    use svsm_protocol::ghcb::{Ghcb, SVM_EXIT_MSR};
    use svsm_protocol::hv_doorbell::PENDING_NO_FURTHER_SIGNAL;

    /// A doorbell page in host memory; `refill` plays the hypervisor posting again
    /// after each take.
    #[derive(Default)]
    struct TestPage {
        word: AtomicU16,
        no_eoi: AtomicU8,
        refill: Option<u16>,
        takes: AtomicU32,
    }

    impl DoorbellPage for TestPage {
        fn take_pending(&self) -> u16 {
            self.takes.fetch_add(1, Ordering::SeqCst);
            let old = self.word.swap(0, Ordering::SeqCst);
            if let Some(w) = self.refill {
                self.word.store(w, Ordering::SeqCst);
            }
            old
        }
        fn clear_pending(&self, mask: u16) -> u16 {
            self.word.fetch_and(!mask, Ordering::SeqCst)
        }
        fn take_no_eoi_required(&self) -> u8 {
            self.no_eoi.swap(0, Ordering::SeqCst)
        }
        fn reset(&self) {
            self.word.store(0, Ordering::SeqCst);
            self.no_eoi.store(0, Ordering::SeqCst);
        }
    }

    /// A scripted hypervisor: answers doorbell events with `answer`, records EOIs.
    struct Hv {
        answer: Box<dyn Fn(&mut Ghcb) + Send + Sync>,
        calls: StdMutex<Vec<(u64, u64, u64)>>,
    }

    impl GhcbTransport for Hv {
        fn msr_exchange(&self, _request: u64) -> u64 {
            0
        }
        fn ghcb_exchange(&self, ghcb: &mut Ghcb) {
            self.calls.lock().unwrap().push((
                ghcb.sw_exit_code,
                ghcb.sw_exit_info_1,
                ghcb.sw_exit_info_2,
            ));
            let request = ghcb.sw_exit_info_1;
            (self.answer)(ghcb);
            if ghcb.sw_exit_info_1 == request {
                ghcb.sw_exit_info_1 = 0;
            }
        }
    }

    fn hv(answer: impl Fn(&mut Ghcb) + Send + Sync + 'static) -> HvClient<Hv> {
        HvClient::new(Hv {
            answer: Box::new(answer),
            calls: StdMutex::new(Vec::new()),
        })
    }

    fn calls(hv: &HvClient<Hv>) -> Vec<(u64, u64, u64)> {
        hv.transport().calls.lock().unwrap().clone()
    }

    #[test]
    fn negotiation_needs_both_sides() {
        let ri = SevFeatures::SNP_ACTIVE | SevFeatures::RESTRICTED_INJECTION;
        let hv_ri = HvFeatures::SNP | HvFeatures::SNP_RESTRICTED_INJECTION;
        assert_eq!(
            RestrictedInjection::new(SevFeatures::SNP_ACTIVE, hv_ri),
            RestrictedInjection::Off
        );
        assert_eq!(
            RestrictedInjection::new(ri, hv_ri),
            RestrictedInjection::Negotiated
        );
        assert_eq!(
            RestrictedInjection::new(ri, HvFeatures::SNP),
            RestrictedInjection::Unannounced
        );
        // SEV_STATUS bit 5 is restricted injection; HV feature bit 2.
        assert_eq!(
            RestrictedInjection::new(
                SevFeatures::from_sev_status(0b10_0100),
                HvFeatures::from_bits_retain(0b100)
            ),
            RestrictedInjection::Negotiated
        );
    }

    #[test]
    fn doorbell_calls_encode_the_nae_event() {
        let client = hv(|g| {
            g.sw_exit_info_2 = match g.sw_exit_info_1 {
                0 => NO_DOORBELL_PAGE,
                1 => g.sw_exit_info_2,
                2 => 0x5000,
                _ => 0,
            };
        });
        assert_eq!(client.doorbell_preferred(), Ok(None));
        assert_eq!(client.set_doorbell(0x5000), Ok(()));
        assert_eq!(client.query_doorbell(), Ok(Some(0x5000)));
        assert_eq!(client.clear_doorbell(), Ok(()));
        assert_eq!(
            calls(&client),
            vec![
                (0x8000_0014, 0, 0),
                (0x8000_0014, 1, 0x5000),
                (0x8000_0014, 2, 0),
                (0x8000_0014, 3, 0),
            ]
        );
    }

    #[test]
    fn doorbell_answers_are_checked() {
        let wrong = hv(|g| g.sw_exit_info_2 = 0x6000);
        assert_eq!(
            wrong.set_doorbell(0x5000),
            Err(DoorbellError::WrongGpa {
                expected: 0x5000,
                got: 0x6000
            })
        );
        assert_eq!(wrong.doorbell_preferred(), Ok(Some(0x6000)));
        let unaligned = hv(|g| g.sw_exit_info_2 = 0x6008);
        assert_eq!(
            unaligned.query_doorbell(),
            Err(DoorbellError::Unaligned(0x6008))
        );
        // KVM's refusal: sw_exit_info_1 = 2, sw_exit_info_2 = GHCB_ERR_INVALID_INPUT.
        let refused = hv(|g| {
            g.sw_exit_info_1 = 2 | 1 << 40;
            g.sw_exit_info_2 = 1;
        });
        assert_eq!(
            refused.set_doorbell(0x5000),
            Err(DoorbellError::Refused(GhcbError::Vmm {
                info1: 2 | 1 << 40,
                info2: 1
            }))
        );
        assert_eq!(
            SnpError::from(DoorbellError::WrongGpa {
                expected: 0,
                got: 1
            })
            .termination_reason(),
            super::super::TerminateReason { set: 3, code: 12 }
        );
        // An unaligned page is refused before the hypervisor hears of it.
        let client = hv(|_| {});
        assert_eq!(
            client.set_doorbell(0x5008),
            Err(DoorbellError::BadPage(0x5008))
        );
        assert!(calls(&client).is_empty());
    }

    static HOOK_A: AtomicU32 = AtomicU32::new(0);
    fn hook_a(v: u8) {
        HOOK_A.fetch_add(u32::from(v), Ordering::SeqCst);
    }
    fn hook_nop(_: u8) {}

    #[test]
    fn hooks_register_once_per_external_vector() {
        let hooks = VectorHooks::new();
        assert_eq!(
            hooks.register(28, hook_nop),
            Err(HookError::NotExternal(28))
        );
        assert_eq!(hooks.register(0xF0, hook_nop), Ok(()));
        assert_eq!(hooks.register(0xF0, hook_nop), Err(HookError::Taken(0xF0)));
        for v in 0..(HOOK_SLOTS as u8 - 1) {
            hooks.register(0x40 + v, hook_nop).unwrap();
        }
        assert_eq!(hooks.register(0x60, hook_nop), Err(HookError::Full));
        assert!(hooks.lookup(0xF0).is_some());
        assert!(hooks.lookup(0x60).is_none());
    }

    #[test]
    fn every_posted_vector_has_a_defined_outcome() {
        let hooks = VectorHooks::new();
        hooks.register(0xF0, hook_nop).unwrap();
        for v in 0..=255u8 {
            let expected = match v {
                0 => PostedVector::None,
                1..=31 => PostedVector::NotExternal(v),
                0xF0 => PostedVector::Dispatch(v),
                _ => PostedVector::Unexpected(v),
            };
            assert_eq!(PostedVector::classify(v, &hooks), expected);
        }
        assert!(PostedVector::Dispatch(0xF0).needs_eoi(0));
        assert!(PostedVector::Unexpected(0x41).needs_eoi(0xFE));
        assert!(!PostedVector::Dispatch(0xF0).needs_eoi(1));
        assert!(!PostedVector::NotExternal(3).needs_eoi(0));
        assert!(!PostedVector::None.needs_eoi(0));
    }

    fn eoi_count(hv: &HvClient<Hv>) -> usize {
        calls(hv)
            .iter()
            .filter(|c| c.0 == SVM_EXIT_MSR && c.1 == 1)
            .count()
    }

    #[test]
    fn a_posted_vector_runs_its_hook_and_is_acknowledged() {
        let hooks = VectorHooks::new();
        hooks.register(0xF1, hook_a).unwrap();
        let client = hv(|_| {});
        let page = TestPage::default();
        page.word
            .store(PENDING_NO_FURTHER_SIGNAL | 0xF1, Ordering::SeqCst);
        let before = HOOK_A.load(Ordering::SeqCst);
        let report = process(&page, true, &hooks, &client).unwrap();
        assert_eq!(HOOK_A.load(Ordering::SeqCst) - before, 0xF1);
        assert_eq!(
            report,
            DoorbellReport {
                rounds: 1,
                dispatched: 1,
                eois: 1,
                ..Default::default()
            }
        );
        // The whole word was taken: no-further-signal is clear again.
        assert_eq!(page.word.load(Ordering::SeqCst), 0);
        assert_eq!(eoi_count(&client), 1);
        // With no-EOI-required set, no EOI, and the flag is consumed.
        page.word.store(0xF1, Ordering::SeqCst);
        page.no_eoi.store(1, Ordering::SeqCst);
        let report = process(&page, true, &hooks, &client).unwrap();
        assert_eq!((report.dispatched, report.eois), (1, 0));
        assert_eq!(page.no_eoi.load(Ordering::SeqCst), 0);
        assert_eq!(eoi_count(&client), 1);
    }

    #[test]
    fn not_interruptible_takes_only_nmi_and_defers_the_vector() {
        let hooks = VectorHooks::new();
        let client = hv(|_| {});
        let page = TestPage::default();
        let word = PENDING_NO_FURTHER_SIGNAL | PENDING_NMI | 0x45;
        page.word.store(word, Ordering::SeqCst);
        let report = process(&page, false, &hooks, &client).unwrap();
        assert_eq!(
            report,
            DoorbellReport {
                nmis: 1,
                deferred: true,
                ..Default::default()
            }
        );
        assert_eq!(
            page.word.load(Ordering::SeqCst),
            PENDING_NO_FURTHER_SIGNAL | 0x45
        );
        assert!(calls(&client).is_empty(), "no GHCB use while deferring");
        // Once interruptible, the vector is taken (dropped: no hook) and acknowledged.
        let report = process(&page, true, &hooks, &client).unwrap();
        assert_eq!(
            (report.dropped, report.eois, report.deferred),
            (1, 1, false)
        );
    }

    #[test]
    fn a_machine_check_terminates_interruptible_or_not() {
        let hooks = VectorHooks::new();
        let client = hv(|_| {});
        for interruptible in [false, true] {
            let page = TestPage::default();
            page.word.store(PENDING_MC | 0x30, Ordering::SeqCst);
            let err = process(&page, interruptible, &hooks, &client).unwrap_err();
            assert_eq!(err, SnpError::FatalVector(18));
            assert_eq!(
                err.termination_reason(),
                super::super::TerminateReason { set: 3, code: 10 }
            );
        }
    }

    #[test]
    fn a_hypervisor_that_keeps_posting_cannot_hold_the_handler() {
        let hooks = VectorHooks::new();
        let client = hv(|_| {});
        let page = TestPage {
            refill: Some(0x7C00 | 0x50),
            ..Default::default()
        };
        page.word.store(0x50, Ordering::SeqCst);
        let report = process(&page, true, &hooks, &client).unwrap();
        assert_eq!(report.rounds, MAX_ROUNDS);
        assert!(report.exhausted);
        assert_eq!(report.reserved, 0x7C00);
        assert_eq!(report.dropped as usize, MAX_ROUNDS);
        assert_eq!(page.takes.load(Ordering::SeqCst) as usize, MAX_ROUNDS);
    }

    #[test]
    fn every_word_has_an_outcome_and_none_panics() {
        let hooks = VectorHooks::new();
        hooks.register(0xF2, hook_nop).unwrap();
        let client = hv(|_| {});
        for word in 0..=u16::MAX {
            for interruptible in [false, true] {
                let page = TestPage::default();
                page.word.store(word, Ordering::SeqCst);
                let e = PendingEvents::decode(word);
                match process(&page, interruptible, &hooks, &client) {
                    Err(err) => {
                        assert!(e.mc, "{word:#x}");
                        assert_eq!(err, SnpError::FatalVector(18));
                    }
                    Ok(r) => {
                        assert!(!e.mc);
                        assert_eq!(r.nmis, u32::from(e.nmi), "{word:#x}");
                        if interruptible {
                            assert_eq!(page.word.load(Ordering::SeqCst), 0);
                            assert_eq!(r.dispatched, u32::from(e.vector == 0xF2));
                            assert_eq!(r.dropped, u32::from(e.vector != 0 && e.vector != 0xF2));
                            assert_eq!(r.eois, u32::from(e.vector >= 32));
                        } else {
                            assert_eq!(r.deferred, e.vector != 0);
                            assert_eq!(
                                page.word.load(Ordering::SeqCst),
                                word & !(PENDING_NMI | PENDING_MC)
                            );
                        }
                    }
                }
            }
        }
    }
}
