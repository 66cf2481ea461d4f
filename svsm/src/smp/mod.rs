//! Several CPUs: the registry of SVSM CPUs, cross-CPU calls and TLB shootdowns.
//!
//! Target-independent: the kernel (QEMU, SEV-SNP) and the host tests (threads standing
//! in for CPUs) run the same code. A CPU is a slot with an index (what `%fs:0x30`
//! holds on the bare-metal kernel, see [`PERCPU_INDEX_OFFSET`]) and an APIC ID;
//! registered by the boot CPU before the CPU starts, online once it runs its idle
//! loop and answers IPIs.
//!
//! Requests (a TLB shootdown, a call) are serialized by one requester lock; a CPU that
//! waits for the lock or for acknowledgements keeps servicing its own mailbox, so two
//! requesters never wait on each other. Each target slot carries a sequence number: the
//! requester records its request (merging with one still pending, which widens to a
//! full flush), bumps `requested`, sends the IPI, and waits until the target's
//! `completed` reaches that number. The target copies the request and the number under
//! the slot's lock, flushes, then publishes the number, so a request that arrives
//! during its flush is never acknowledged by it. Waiting is bounded: a CPU that never
//! answers is an error the caller turns into a termination (a stale TLB entry is a
//! security problem, not a performance one).
//!
//! - [`acpi`]: which APIC IDs the firmware lists (MADT);
//! - [`apic`]: IPI encodings (xAPIC ICR, x2APIC ICR MSR);
//! - [`tlb`]: flush requests and INVLPGB/TLBSYNC operands.

pub mod acpi;
pub mod apic;
pub mod tlb;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use spin::Mutex;

use tlb::{FlushRequest, TlbFlush};

/// Most CPUs the SVSM runs on (the boot CPU included): as many vCPUs as an SEV-SNP
/// launch can have (the IGVM measure tool's limit). The registry's slots are small;
/// each CPU's stacks and areas are allocated only for the CPUs that exist.
pub const MAX_CPUS: usize = 4096;
/// The vector of SVSM IPIs (calls and shootdowns); also in the SEV-SNP runtime's list
/// of expected external vectors.
pub const IPI_VECTOR: u8 = 0xF0;
/// Where the kernel's per-CPU area (at the FS base) keeps the CPU's index.
pub const PERCPU_INDEX_OFFSET: u32 = 0x30;
/// Spins a requester waits for one acknowledgement before it gives up (a few seconds
/// on any CPU; the TCG-emulated machine included).
pub const DEFAULT_ACK_SPINS: u64 = 200_000_000;

/// A function run on another CPU: gets the argument and the CPU's index.
pub type CrossCall = fn(u64, usize) -> u64;

/// Sends an IPI.
pub trait IpiSend: Sync {
    /// Sends fixed `vector` to the CPU with `apic_id`.
    fn send(&self, apic_id: u32, vector: u8) -> Result<(), SmpError>;
}

/// Why a multi-CPU operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmpError {
    /// All [`MAX_CPUS`] slots are taken.
    TooManyCpus,
    /// The APIC ID is registered already.
    DuplicateApicId(u32),
    /// No CPU has this index.
    UnknownCpu(usize),
    /// The CPU is registered but not online.
    NotOnline(usize),
    /// The CPU did not acknowledge in time.
    NoAck(usize),
    /// The IPI could not be sent (the APIC or the hypervisor refused).
    Ipi(u32),
}

impl core::fmt::Display for SmpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SmpError::TooManyCpus => write!(f, "more than {MAX_CPUS} CPUs"),
            SmpError::DuplicateApicId(id) => write!(f, "APIC ID {id} registered twice"),
            SmpError::UnknownCpu(i) => write!(f, "no CPU {i}"),
            SmpError::NotOnline(i) => write!(f, "CPU {i} is not online"),
            SmpError::NoAck(i) => write!(f, "CPU {i} did not acknowledge"),
            SmpError::Ipi(id) => write!(f, "cannot send an IPI to APIC ID {id}"),
        }
    }
}

const ABSENT: u8 = 0;
const REGISTERED: u8 = 1;
const ONLINE: u8 = 2;

#[derive(Debug)]
struct Slot {
    state: AtomicU8,
    apic_id: AtomicU32,
    /// The merged flush request not yet taken, and calls waiting.
    mailbox: Mutex<Mailbox>,
    requested: AtomicU64,
    completed: AtomicU64,
    call_result: AtomicU64,
    flushes: AtomicU64,
    /// The sequence number the current shootdown waits for (0: not a target).
    posted: AtomicU64,
}

/// A flush request waiting in a mailbox; `None` is all zeros, so a registry of
/// [`MAX_CPUS`] empty slots lives in `.bss`, not in the measured image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
enum PendingFlush {
    #[default]
    None = 0,
    All = 1,
    Pages {
        start: u64,
        count: u32,
    } = 2,
}

impl PendingFlush {
    fn get(self) -> Option<FlushRequest> {
        match self {
            Self::None => None,
            Self::All => Some(FlushRequest::All),
            Self::Pages { start, count } => Some(FlushRequest::Pages { start, count }),
        }
    }

    fn from(request: FlushRequest) -> Self {
        match request {
            FlushRequest::All => Self::All,
            FlushRequest::Pages { start, count } => Self::Pages { start, count },
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Mailbox {
    flush: PendingFlush,
    call: Option<(CrossCall, u64)>,
}

impl Slot {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(ABSENT),
            apic_id: AtomicU32::new(0),
            mailbox: Mutex::new(Mailbox {
                flush: PendingFlush::None,
                call: None,
            }),
            requested: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            call_result: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            posted: AtomicU64::new(0),
        }
    }
}

/// The SVSM's CPUs.
#[derive(Debug)]
pub struct Cpus {
    slots: [Slot; MAX_CPUS],
    count: AtomicUsize,
    requester: AtomicBool,
    ack_spins: AtomicU64,
}

impl Default for Cpus {
    fn default() -> Self {
        Self::new()
    }
}

/// Widens two flush requests into one that covers both.
fn merge(a: FlushRequest, b: FlushRequest) -> FlushRequest {
    if a == b {
        a
    } else {
        FlushRequest::All
    }
}

impl Cpus {
    /// No CPUs.
    pub const fn new() -> Self {
        Self {
            slots: [const { Slot::new() }; MAX_CPUS],
            count: AtomicUsize::new(0),
            requester: AtomicBool::new(false),
            // 0: DEFAULT_ACK_SPINS (an all-zero registry lives in .bss, not in the
            // measured image).
            ack_spins: AtomicU64::new(0),
        }
    }

    /// Sets how long a requester waits for one acknowledgement.
    pub fn set_ack_spins(&self, spins: u64) {
        self.ack_spins.store(spins.max(1), Ordering::Relaxed);
    }

    /// Registers the CPU with `apic_id` (boot CPU first); returns its index.
    /// Registration happens on the boot CPU only, before the CPUs start.
    pub fn register(&self, apic_id: u32) -> Result<usize, SmpError> {
        let n = self.count.load(Ordering::Acquire);
        if (0..n).any(|i| self.slots[i].apic_id.load(Ordering::Relaxed) == apic_id) {
            return Err(SmpError::DuplicateApicId(apic_id));
        }
        let slot = self.slots.get(n).ok_or(SmpError::TooManyCpus)?;
        slot.apic_id.store(apic_id, Ordering::Relaxed);
        slot.state.store(REGISTERED, Ordering::Release);
        self.count.store(n + 1, Ordering::Release);
        Ok(n)
    }

    /// How many CPUs are registered.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn slot(&self, index: usize) -> Result<&Slot, SmpError> {
        if index >= self.count() {
            return Err(SmpError::UnknownCpu(index));
        }
        self.slots.get(index).ok_or(SmpError::UnknownCpu(index))
    }

    /// The APIC ID of CPU `index`.
    pub fn apic_id(&self, index: usize) -> Result<u32, SmpError> {
        Ok(self.slot(index)?.apic_id.load(Ordering::Relaxed))
    }

    /// The index of the CPU with `apic_id`.
    pub fn index_of(&self, apic_id: u32) -> Option<usize> {
        (0..self.count()).find(|&i| self.slots[i].apic_id.load(Ordering::Relaxed) == apic_id)
    }

    /// Marks CPU `index` online (called by that CPU once it takes IPIs).
    pub fn set_online(&self, index: usize) -> Result<(), SmpError> {
        self.slot(index)?.state.store(ONLINE, Ordering::Release);
        Ok(())
    }

    /// Whether CPU `index` is online.
    pub fn is_online(&self, index: usize) -> bool {
        self.slot(index)
            .is_ok_and(|s| s.state.load(Ordering::Acquire) == ONLINE)
    }

    /// How many CPUs are online.
    pub fn online_count(&self) -> usize {
        (0..self.count()).filter(|&i| self.is_online(i)).count()
    }

    /// How many shootdown requests CPU `index` has served.
    pub fn flushes_served(&self, index: usize) -> u64 {
        self.slot(index)
            .map_or(0, |s| s.flushes.load(Ordering::Acquire))
    }

    /// Runs what is pending for CPU `me` (its IPI handler, and every wait loop).
    pub fn service(&self, me: usize, flush: &impl TlbFlush) {
        let Ok(slot) = self.slot(me) else { return };
        let (work, seq) = {
            let mut mailbox = slot.mailbox.lock();
            let work = *mailbox;
            *mailbox = Mailbox::default();
            (work, slot.requested.load(Ordering::Acquire))
        };
        if let Some(request) = work.flush.get() {
            flush.flush_local(request);
            slot.flushes.fetch_add(1, Ordering::AcqRel);
        }
        if let Some((f, arg)) = work.call {
            slot.call_result.store(f(arg, me), Ordering::Release);
        }
        slot.completed.fetch_max(seq, Ordering::AcqRel);
    }

    fn lock_requester(&self, me: usize, flush: &impl TlbFlush) {
        while self
            .requester
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.service(me, flush);
            core::hint::spin_loop();
        }
    }

    fn unlock_requester(&self) {
        self.requester.store(false, Ordering::Release);
    }

    /// Posts work to `target` and sends the IPI; returns the sequence number to wait
    /// for.
    fn post(
        &self,
        target: usize,
        ipi: &impl IpiSend,
        work: impl FnOnce(&mut Mailbox),
    ) -> Result<u64, SmpError> {
        let slot = self.slot(target)?;
        let seq = {
            let mut mailbox = slot.mailbox.lock();
            work(&mut mailbox);
            slot.requested.fetch_add(1, Ordering::AcqRel) + 1
        };
        ipi.send(slot.apic_id.load(Ordering::Relaxed), IPI_VECTOR)?;
        Ok(seq)
    }

    fn wait(
        &self,
        me: usize,
        target: usize,
        seq: u64,
        flush: &impl TlbFlush,
    ) -> Result<(), SmpError> {
        let slot = self.slot(target)?;
        let limit = match self.ack_spins.load(Ordering::Relaxed) {
            0 => DEFAULT_ACK_SPINS,
            spins => spins,
        };
        let mut spins = 0u64;
        while slot.completed.load(Ordering::Acquire) < seq {
            self.service(me, flush);
            spins += 1;
            if spins >= limit {
                return Err(SmpError::NoAck(target));
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// Invalidates `request` on every online CPU, CPU `me` included, and returns once
    /// all did: INVLPGB/TLBSYNC when `flush` has them, else an IPI to each other
    /// online CPU and its acknowledgement. Returns how many CPUs were sent an IPI.
    pub fn shootdown(
        &self,
        me: usize,
        request: FlushRequest,
        ipi: &impl IpiSend,
        flush: &impl TlbFlush,
    ) -> Result<usize, SmpError> {
        if flush.flush_broadcast(request) {
            return Ok(0);
        }
        flush.flush_local(request);
        self.lock_requester(me, flush);
        let result = self.shootdown_locked(me, request, ipi, flush);
        self.unlock_requester();
        result
    }

    fn shootdown_locked(
        &self,
        me: usize,
        request: FlushRequest,
        ipi: &impl IpiSend,
        flush: &impl TlbFlush,
    ) -> Result<usize, SmpError> {
        let n = self.count();
        let mut sent = 0;
        let mut posted = |target: usize| -> Result<bool, SmpError> {
            if target == me || !self.is_online(target) {
                return Ok(false);
            }
            self.post(target, ipi, |m| {
                m.flush =
                    PendingFlush::from(m.flush.get().map_or(request, |old| merge(old, request)));
            })?;
            sent += 1;
            Ok(true)
        };
        // Every target first, so they flush in parallel; a CPU posted to is marked by
        // its slot's `posted` sequence (only this requester writes it, under the lock).
        for target in 0..n {
            let seq = if posted(target)? {
                self.slots[target].requested.load(Ordering::Acquire)
            } else {
                0
            };
            self.slots[target].posted.store(seq, Ordering::Relaxed);
        }
        for target in 0..n {
            let seq = self.slots[target].posted.load(Ordering::Relaxed);
            if seq != 0 {
                self.wait(me, target, seq, flush)?;
            }
        }
        Ok(sent)
    }

    /// Runs `f(arg, target)` on CPU `target` (from its IPI handler) and returns its
    /// result: the cross-CPU call round trip.
    pub fn call(
        &self,
        me: usize,
        target: usize,
        f: CrossCall,
        arg: u64,
        ipi: &impl IpiSend,
        flush: &impl TlbFlush,
    ) -> Result<u64, SmpError> {
        if target == me {
            return Ok(f(arg, me));
        }
        if !self.is_online(target) {
            return Err(if target < self.count() {
                SmpError::NotOnline(target)
            } else {
                SmpError::UnknownCpu(target)
            });
        }
        self.lock_requester(me, flush);
        let result = self
            .post(target, ipi, |m| m.call = Some((f, arg)))
            .and_then(|seq| self.wait(me, target, seq, flush))
            .map(|()| self.slots[target].call_result.load(Ordering::Acquire));
        if result.is_err() {
            // Withdraw a call the target never took, so it cannot run later.
            self.slots[target].mailbox.lock().call = None;
        }
        self.unlock_requester();
        result
    }
}

/// The CPUs of the bare-metal kernel.
pub static CPUS: Cpus = Cpus::new();

impl<T: IpiSend + ?Sized> IpiSend for &T {
    fn send(&self, apic_id: u32, vector: u8) -> Result<(), SmpError> {
        (**self).send(apic_id, vector)
    }
}

/// The bare-metal kernel's side: its CPUs' TLBs, the IPI path the platform chose, and
/// the entry points the IPI handler and the memory code call.
#[cfg(target_os = "none")]
mod kernel {
    use spin::Once;

    use super::tlb::FlushRequest;
    use super::{CrossCall, IpiSend, SmpError, CPUS, PERCPU_INDEX_OFFSET};
    use crate::arch::tlb::ArchTlb;

    /// The TLB management of every CPU.
    pub static TLB: ArchTlb = ArchTlb::new();
    static SENDER: Once<&'static (dyn IpiSend + Sync)> = Once::new();

    /// The index of the CPU running this (from `%fs:0x30`; the kernel sets the FS
    /// base on every CPU before it registers a second CPU, and only then can a
    /// request reach this).
    pub fn this_cpu() -> usize {
        crate::arch::segment::fs_read_u64::<PERCPU_INDEX_OFFSET>() as usize
    }

    /// Chooses how IPIs are sent (the xAPIC on QEMU, the x2APIC MSR under SEV-SNP);
    /// set once, before a second CPU starts.
    pub fn set_ipi_sender(sender: &'static (dyn IpiSend + Sync)) {
        SENDER.call_once(|| sender);
    }

    struct NoIpi;

    impl IpiSend for NoIpi {
        fn send(&self, apic_id: u32, _: u8) -> Result<(), SmpError> {
            Err(SmpError::Ipi(apic_id))
        }
    }

    fn sender() -> &'static (dyn IpiSend + Sync) {
        SENDER.get().copied().unwrap_or(&NoIpi)
    }

    /// Invalidates `request` on every online CPU (this one included), with interrupts
    /// masked so this CPU's own IPI handler cannot run while it holds a mailbox.
    pub fn shootdown(request: FlushRequest) -> Result<usize, SmpError> {
        x86_64::instructions::interrupts::without_interrupts(|| {
            CPUS.shootdown(this_cpu(), request, &sender(), &TLB)
        })
    }

    /// Runs `f(arg, target)` on CPU `target` and returns its result.
    pub fn call(target: usize, f: CrossCall, arg: u64) -> Result<u64, SmpError> {
        x86_64::instructions::interrupts::without_interrupts(|| {
            CPUS.call(this_cpu(), target, f, arg, &sender(), &TLB)
        })
    }

    /// The body of the IPI vector's handler: runs what is pending for this CPU.
    pub fn handle_ipi() {
        CPUS.service(this_cpu(), &TLB);
    }

    /// Whether this CPU can invalidate every CPU's TLB with INVLPGB.
    pub fn broadcast_invalidation() -> bool {
        TLB.invlpgb().is_some()
    }
}

#[cfg(target_os = "none")]
pub use kernel::{
    broadcast_invalidation, call, handle_ipi, set_ipi_sender, shootdown, this_cpu, TLB,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool as StdBool;
    use std::sync::{Arc, Mutex as StdMutex};
    use std::thread;

    /// A TLB per simulated CPU: records the flushes it performed.
    #[derive(Default)]
    struct Tlbs {
        log: StdMutex<Vec<(usize, FlushRequest)>>,
        broadcast: bool,
    }

    struct CpuTlb<'a> {
        tlbs: &'a Tlbs,
        cpu: usize,
    }

    impl TlbFlush for CpuTlb<'_> {
        fn flush_local(&self, r: FlushRequest) {
            self.tlbs.log.lock().unwrap().push((self.cpu, r));
        }
        fn flush_broadcast(&self, r: FlushRequest) -> bool {
            if self.tlbs.broadcast {
                self.tlbs.log.lock().unwrap().push((usize::MAX, r));
            }
            self.tlbs.broadcast
        }
    }

    /// IPIs as per-APIC-ID doorbells that the simulated CPUs poll.
    struct Doorbells {
        rung: Vec<StdBool>,
        sent: StdMutex<Vec<(u32, u8)>>,
        refuse: Option<u32>,
    }

    impl IpiSend for Doorbells {
        fn send(&self, apic_id: u32, vector: u8) -> Result<(), SmpError> {
            if self.refuse == Some(apic_id) {
                return Err(SmpError::Ipi(apic_id));
            }
            self.sent.lock().unwrap().push((apic_id, vector));
            self.rung[apic_id as usize].store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    struct World {
        cpus: Cpus,
        tlbs: Tlbs,
        bells: Doorbells,
        stop: StdBool,
    }

    /// `n` CPUs with APIC IDs 0..n, CPU 0 the caller, the others threads that answer
    /// their doorbell (except the ones listed as `deaf`).
    fn world(n: usize, deaf: &[usize], broadcast: bool) -> Arc<World> {
        let w = Arc::new(World {
            cpus: Cpus::new(),
            tlbs: Tlbs {
                broadcast,
                ..Default::default()
            },
            bells: Doorbells {
                rung: (0..n).map(|_| StdBool::new(false)).collect(),
                sent: StdMutex::new(Vec::new()),
                refuse: None,
            },
            stop: StdBool::new(false),
        });
        w.cpus.set_ack_spins(2_000_000);
        for id in 0..n as u32 {
            w.cpus.register(id).unwrap();
        }
        for cpu in 0..n {
            w.cpus.set_online(cpu).unwrap();
            if cpu == 0 || deaf.contains(&cpu) {
                continue;
            }
            let w = Arc::clone(&w);
            thread::spawn(move || {
                let tlb = CpuTlb { tlbs: &w.tlbs, cpu };
                while !w.stop.load(Ordering::SeqCst) {
                    if w.bells.rung[cpu].swap(false, Ordering::SeqCst) {
                        w.cpus.service(cpu, &tlb);
                    }
                    thread::yield_now();
                }
            });
        }
        w
    }

    fn flushes_of(w: &World, cpu: usize) -> Vec<FlushRequest> {
        let log = w.tlbs.log.lock().unwrap();
        log.iter()
            .filter(|(c, _)| *c == cpu)
            .map(|(_, r)| *r)
            .collect()
    }

    #[test]
    fn shootdown_reaches_every_online_cpu_before_it_returns() {
        let w = world(4, &[], false);
        let tlb = CpuTlb {
            tlbs: &w.tlbs,
            cpu: 0,
        };
        let page = FlushRequest::Pages {
            start: 0x40_0000,
            count: 1,
        };
        assert_eq!(w.cpus.shootdown(0, page, &w.bells, &tlb), Ok(3));
        for cpu in 0..4 {
            assert_eq!(flushes_of(&w, cpu), [page], "CPU {cpu}");
        }
        assert_eq!(
            *w.bells.sent.lock().unwrap(),
            [(1, IPI_VECTOR), (2, IPI_VECTOR), (3, IPI_VECTOR)]
        );
        w.stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn broadcast_invalidation_sends_no_ipi() {
        let w = world(4, &[], true);
        let tlb = CpuTlb {
            tlbs: &w.tlbs,
            cpu: 0,
        };
        assert_eq!(
            w.cpus.shootdown(0, FlushRequest::All, &w.bells, &tlb),
            Ok(0)
        );
        assert!(w.bells.sent.lock().unwrap().is_empty());
        assert_eq!(flushes_of(&w, usize::MAX), [FlushRequest::All]);
        w.stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn call_round_trip_runs_on_the_target() {
        fn tag(arg: u64, cpu: usize) -> u64 {
            arg * 100 + cpu as u64
        }
        let w = world(3, &[], false);
        let tlb = CpuTlb {
            tlbs: &w.tlbs,
            cpu: 0,
        };
        assert_eq!(w.cpus.call(0, 2, tag, 7, &w.bells, &tlb), Ok(702));
        assert_eq!(w.cpus.call(0, 1, tag, 5, &w.bells, &tlb), Ok(501));
        assert_eq!(w.cpus.call(0, 0, tag, 5, &w.bells, &tlb), Ok(500));
        assert_eq!(
            w.cpus.call(0, 9, tag, 5, &w.bells, &tlb),
            Err(SmpError::UnknownCpu(9))
        );
        w.stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn a_cpu_that_never_answers_is_an_error_and_its_late_flush_widens() {
        let w = world(3, &[2], false);
        let tlb = CpuTlb {
            tlbs: &w.tlbs,
            cpu: 0,
        };
        let a = FlushRequest::Pages {
            start: 0x1000,
            count: 1,
        };
        let b = FlushRequest::Pages {
            start: 0x2000,
            count: 1,
        };
        assert_eq!(
            w.cpus.shootdown(0, a, &w.bells, &tlb),
            Err(SmpError::NoAck(2))
        );
        assert_eq!(
            w.cpus.shootdown(0, b, &w.bells, &tlb),
            Err(SmpError::NoAck(2))
        );
        // When CPU 2 finally runs its handler, it covers both requests at once.
        let late = CpuTlb {
            tlbs: &w.tlbs,
            cpu: 2,
        };
        w.cpus.service(2, &late);
        assert_eq!(flushes_of(&w, 2), [FlushRequest::All]);
        assert_eq!(flushes_of(&w, 1), [a, b]);
        // A call to a deaf CPU is withdrawn: it does not run when the CPU wakes.
        fn never(_: u64, _: usize) -> u64 {
            panic!("a withdrawn call ran")
        }
        assert_eq!(
            w.cpus.call(0, 2, never, 0, &w.bells, &tlb),
            Err(SmpError::NoAck(2))
        );
        w.cpus.service(2, &late);
        w.stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn registry_refuses_duplicates_and_overflow() {
        let cpus = Cpus::new();
        assert_eq!(cpus.register(0), Ok(0));
        assert_eq!(cpus.register(0), Err(SmpError::DuplicateApicId(0)));
        for id in 1..MAX_CPUS as u32 {
            assert_eq!(cpus.register(id * 2), Ok(id as usize));
        }
        assert_eq!(cpus.register(999), Err(SmpError::TooManyCpus));
        assert_eq!(cpus.index_of(6), Some(3));
        assert!(!cpus.is_online(3));
        assert_eq!(
            cpus.set_online(MAX_CPUS),
            Err(SmpError::UnknownCpu(MAX_CPUS))
        );
        cpus.set_online(3).unwrap();
        assert_eq!(cpus.online_count(), 1);
        // Offline CPUs are not sent IPIs.
        let tlbs = Tlbs::default();
        let bells = Doorbells {
            rung: (0..64).map(|_| StdBool::new(false)).collect(),
            sent: StdMutex::new(Vec::new()),
            refuse: Some(6),
        };
        let tlb = CpuTlb {
            tlbs: &tlbs,
            cpu: 0,
        };
        // CPU 3 (APIC ID 6) is online but its IPI is refused: reported, not ignored.
        assert_eq!(
            cpus.shootdown(0, FlushRequest::All, &bells, &tlb),
            Err(SmpError::Ipi(6))
        );
        assert_eq!(
            cpus.call(0, 4, |_, _| 0, 0, &bells, &tlb),
            Err(SmpError::NotOnline(4))
        );
    }
}
