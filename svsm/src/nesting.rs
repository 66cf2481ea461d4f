//! Where an interrupt handler runs: off its IST stack, so the same vector can nest.
//!
//! Every IDT gate of the kernel switches to an IST stack (the C engine keeps live data
//! in the red zone below `%rsp`). The CPU loads the IST pointer from the TSS on every
//! delivery, so a second event of the same IST slot while a handler still runs on that
//! stack overwrites the first one's frame. Without restricted injection a hostile
//! hypervisor can inject any vector at any time (AMD APM vol. 2 "Restricted
//! Injection"), so #VC inside #VC, #HV inside #HV or an external vector inside any
//! handler must be survivable. As Linux's `vc_switch_off_ist` (arch/x86/kernel/traps.c)
//! does for #VC, the common entry path copies the frame to the interrupted stack,
//! below its 128-byte red zone, and runs the handler there; the IST stack is free again
//! at once and the return path never touches it.
//!
//! What remains is the entry window: the instructions between the CPU's delivery and
//! the switch. An event that arrives there on the same slot has overwritten a live
//! frame; one on another slot has not, but must not let a later event on the first
//! slot go unnoticed. [`decide`] finds both from the interrupted `%rsp` alone: an
//! `%rsp` inside an IST stack means that stack's handler is in its window, its CPU frame
//! sits at the stack's top and names what *it* interrupted, and so on down the chain
//! (each slot at most once). Every window found is recorded for its slot (the `%rsp`
//! its frame holds); an event whose slot has a recorded window that is not its own
//! frame has overwritten it. Either case is fatal (termination with a reason): the
//! outer frame is gone, and returning through it would run the SVSM on garbage.
//!
//! Nesting is bounded ([`MAX_DEPTH`]) and needs room on the interrupted stack
//! ([`HANDLER_ROOM`]); without it the handler stays on its IST stack and the kernel
//! terminates once it is done (a fault there reports itself first, e.g. a stack
//! overflow into a guard page). #DF never switches: it is fatal and its stack is the
//! one known to be good.
//!
//! Target-independent: the kernel calls [`decide`] with its CPU's stacks and state;
//! the host tests below drive it with simulated stacks.

use core::ops::Range;

/// IST slots per CPU (the TSS has seven; the kernel uses five).
pub const IST_SLOTS: usize = 5;
/// The red zone the x86-64 System V ABI lets code keep below `%rsp`.
pub const RED_ZONE: u64 = 128;
/// Bytes of the frame the entry path saves: 15 registers, vector, error code and the
/// CPU's five quadwords.
pub const FRAME_BYTES: u64 = 22 * 8;
/// Most handlers nested on one CPU (the outermost counts as 1).
pub const MAX_DEPTH: u32 = 4;
/// Bytes a handler needs below its frame (a #VC builds two GHCB pages on the stack).
pub const HANDLER_ROOM: u64 = 16 * 1024;
/// Where, below the top of an IST stack, the CPU stored the interrupted `%rsp`
/// (SS at -8, RSP at -16, RFLAGS, CS, RIP; APM vol. 2 §8.9.3 "Interrupt Stack Frame").
pub const TOP_FRAME_RSP: u64 = 16;
/// The #DF vector.
pub const VECTOR_DOUBLE_FAULT: u8 = 8;

/// One CPU's stacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuStacks {
    /// The kernel stack the CPU's code runs on (usable range).
    pub kernel: Range<u64>,
    /// Each IST slot's usable range (index = IST number - 1).
    pub ist: [Range<u64>; IST_SLOTS],
}

impl CpuStacks {
    /// The IST slot whose stack holds `address`.
    pub fn ist_slot_of(&self, address: u64) -> Option<usize> {
        self.ist.iter().position(|r| r.contains(&address))
    }
}

/// Why a handler cannot run nested safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestError {
    /// An event on this IST slot overwrote the frame of one still in its entry window.
    Clobbered(usize),
    /// More than [`MAX_DEPTH`] handlers nested.
    TooDeep,
    /// The interrupted stack has less than [`HANDLER_ROOM`] left.
    NoRoom(u64),
    /// The interrupted `%rsp` is on none of this CPU's stacks (e.g. a guard page).
    UnknownStack(u64),
    /// #DF: handled on its own stack, then fatal.
    DoubleFault,
    /// The frame's CS is not the kernel's code selector: the CPU pushed another
    /// layout than the stub assumed (a hypervisor injecting a vector with an error code
    /// it does not have, or without the one it has), so no field can be trusted.
    BadFrame(u64),
}

impl NestError {
    /// A stable number for the per-CPU record and the termination reason.
    pub fn code(self) -> u64 {
        match self {
            Self::Clobbered(_) => 1,
            Self::TooDeep => 2,
            Self::NoRoom(_) => 3,
            Self::UnknownStack(_) => 4,
            Self::DoubleFault => 5,
            Self::BadFrame(_) => 6,
        }
    }
}

impl core::fmt::Display for NestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Clobbered(slot) => write!(
                f,
                "an event on IST {} overwrote a frame still in its entry window",
                slot + 1
            ),
            Self::TooDeep => write!(f, "more than {MAX_DEPTH} nested handlers"),
            Self::NoRoom(rsp) => write!(f, "no room for a handler below {rsp:#x}"),
            Self::UnknownStack(rsp) => write!(f, "interrupted on no known stack ({rsp:#x})"),
            Self::DoubleFault => write!(f, "double fault"),
            Self::BadFrame(cs) => write!(
                f,
                "the frame's CS slot holds {cs:#x}: injected with a wrong error-code layout"
            ),
        }
    }
}

/// What the entry path does with the frame it saved on the IST stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Copy the frame to `frame` (on the interrupted stack, 16-byte aligned) and run
    /// the handler there; first record `windows` (slot → the `%rsp` in the frame at
    /// that stack's top) as live entry windows beneath this handler.
    Switch {
        /// Where the frame goes.
        frame: u64,
        /// Entry windows this event interrupted.
        windows: [Option<u64>; IST_SLOTS],
    },
    /// Run the handler on the IST stack, then terminate with this reason.
    Stay(NestError),
    /// Terminate now: the frame to return to is lost.
    Fatal(NestError),
}

/// What [`decide`] needs to know about this CPU at entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuState {
    /// Handlers running on this CPU (switched off their IST stacks).
    pub depth: u32,
    /// Per slot: the `%rsp` in the frame of a handler found in its entry window by a
    /// nested event (0: none).
    pub windows: [u64; IST_SLOTS],
}

/// What the entry path saved about the interrupted code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted {
    /// The vector the stub pushed.
    pub vector: u8,
    /// Where the saved frame lies (on an IST stack).
    pub frame: u64,
    /// The CS slot of the CPU's frame.
    pub cs: u64,
    /// The RSP slot of the CPU's frame.
    pub rsp: u64,
}

/// Where the handler of an event whose saved frame is `at` runs, on a CPU whose
/// kernel code selector is `kernel_cs`. `top_rsp(slot)` reads the `%rsp` the CPU saved
/// at the top of IST stack `slot` ([`TOP_FRAME_RSP`]).
pub fn decide(
    at: &Interrupted,
    kernel_cs: u64,
    stacks: &CpuStacks,
    state: &CpuState,
    top_rsp: impl Fn(usize) -> u64,
) -> Decision {
    let (vector, frame, interrupted_rsp) = (at.vector, at.frame, at.rsp);
    let Some(own) = stacks.ist_slot_of(frame) else {
        return Decision::Fatal(NestError::UnknownStack(frame));
    };
    // The SVSM runs only in ring 0 with one code selector: anything else means the
    // stub read the frame at the wrong offset.
    if at.cs != kernel_cs {
        return Decision::Fatal(NestError::BadFrame(at.cs));
    }
    // The chain of entry windows beneath this event.
    let mut rsp = interrupted_rsp;
    let mut windows = [None; IST_SLOTS];
    while let Some(slot) = stacks.ist_slot_of(rsp) {
        if slot == own || windows[slot].is_some() {
            return Decision::Fatal(NestError::Clobbered(own));
        }
        rsp = top_rsp(slot);
        windows[slot] = Some(rsp);
    }
    // A window on this slot that a nested event recorded, unless it is this frame's.
    let recorded = state.windows[own];
    if recorded != 0 && recorded != interrupted_rsp {
        return Decision::Fatal(NestError::Clobbered(own));
    }
    if vector == VECTOR_DOUBLE_FAULT {
        return Decision::Stay(NestError::DoubleFault);
    }
    if state.depth >= MAX_DEPTH {
        return Decision::Fatal(NestError::TooDeep);
    }
    if !stacks.kernel.contains(&rsp) {
        return Decision::Stay(NestError::UnknownStack(rsp));
    }
    let target = (rsp.saturating_sub(RED_ZONE) & !15).saturating_sub(FRAME_BYTES);
    if target < stacks.kernel.start.saturating_add(HANDLER_ROOM) {
        return Decision::Stay(NestError::NoRoom(rsp));
    }
    Decision::Switch {
        frame: target,
        windows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: Range<u64> = 0x10_0000..0x12_0000;
    const IST: u64 = 0x20_0000;
    const IST_SIZE: u64 = 0x8000;

    fn stacks() -> CpuStacks {
        CpuStacks {
            kernel: KERNEL,
            ist: core::array::from_fn(|s| {
                let base = IST + s as u64 * (IST_SIZE + 0x1000);
                base..base + IST_SIZE
            }),
        }
    }

    fn top(slot: usize) -> u64 {
        stacks().ist[slot].end
    }

    /// Where the entry path saves the frame of an event on `slot` (error code pushed).
    fn frame_on(slot: usize) -> u64 {
        top(slot) - FRAME_BYTES
    }

    const CS: u64 = 8;

    fn at(vector: u8, frame: u64, rsp: u64) -> Interrupted {
        Interrupted {
            vector,
            frame,
            cs: CS,
            rsp,
        }
    }

    const IDLE: CpuState = CpuState {
        depth: 0,
        windows: [0; IST_SLOTS],
    };

    fn no_windows(_: usize) -> u64 {
        panic!("no IST stack is in its entry window")
    }

    #[test]
    fn a_handler_moves_below_the_red_zone_of_the_interrupted_stack() {
        let rsp = 0x11_f00c;
        let d = decide(&at(29, frame_on(2), rsp), CS, &stacks(), &IDLE, no_windows);
        let expected = ((rsp - RED_ZONE) & !15) - FRAME_BYTES;
        assert_eq!(
            d,
            Decision::Switch {
                frame: expected,
                windows: [None; IST_SLOTS]
            }
        );
        assert_eq!(expected % 16, 0);
        assert!(expected + FRAME_BYTES <= rsp - RED_ZONE);
    }

    #[test]
    fn nested_same_vector_after_the_switch_goes_below_the_outer_handler() {
        // The outer #HV runs on the kernel stack at `outer`; a nested #HV lands on the
        // (free again) IST top and moves below the outer handler's stack use.
        let outer = 0x11_0000;
        let state = CpuState { depth: 1, ..IDLE };
        match decide(
            &at(28, frame_on(4), outer - 0x300),
            CS,
            &stacks(),
            &state,
            no_windows,
        ) {
            Decision::Switch { frame, windows } => {
                assert!(frame + FRAME_BYTES + RED_ZONE <= outer - 0x300);
                assert_eq!(windows, [None; IST_SLOTS]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn same_slot_in_the_entry_window_is_a_lost_frame() {
        // The outer #VC had pushed a few registers on IST 3 when the next #VC came.
        let rsp = top(2) - 0x60;
        assert_eq!(
            decide(&at(29, frame_on(2), rsp), CS, &stacks(), &IDLE, no_windows),
            Decision::Fatal(NestError::Clobbered(2))
        );
    }

    #[test]
    fn another_slot_in_its_window_is_recorded_and_skipped() {
        // #HV (IST 5) interrupts a #VC (IST 3) in its window; the #VC interrupted the
        // kernel stack at 0x11_8000.
        let rsp = top(2) - 0x60;
        let d = decide(&at(28, frame_on(4), rsp), CS, &stacks(), &IDLE, |slot| {
            assert_eq!(slot, 2);
            0x11_8000
        });
        let mut windows = [None; IST_SLOTS];
        windows[2] = Some(0x11_8000);
        assert_eq!(
            d,
            Decision::Switch {
                frame: ((0x11_8000 - RED_ZONE) & !15) - FRAME_BYTES,
                windows
            }
        );
    }

    #[test]
    fn a_recorded_window_catches_the_event_that_overwrote_it_later() {
        // After the case above, a #VC interrupts the #HV's handler (on the kernel
        // stack): its frame overwrote the #VC still in its window.
        let mut state = CpuState { depth: 1, ..IDLE };
        state.windows[2] = 0x11_8000;
        assert_eq!(
            decide(
                &at(29, frame_on(2), 0x11_7000),
                CS,
                &stacks(),
                &state,
                no_windows
            ),
            Decision::Fatal(NestError::Clobbered(2))
        );
        // The #VC itself, resuming its window once the #HV returned, is not fooled.
        state.depth = 0;
        assert!(matches!(
            decide(
                &at(29, frame_on(2), 0x11_8000),
                CS,
                &stacks(),
                &state,
                no_windows
            ),
            Decision::Switch { .. }
        ));
    }

    #[test]
    fn a_chain_through_another_window_back_to_this_slot_is_a_lost_frame() {
        // #VC (IST 3) in its window, interrupted by an external vector (IST 4) in its
        // window, interrupted by a second #VC: IST 3's top frame is gone.
        let d = decide(
            &at(29, frame_on(2), top(3) - 0x40),
            CS,
            &stacks(),
            &IDLE,
            |slot| {
                assert_eq!(slot, 3);
                top(2) - 0x58
            },
        );
        assert_eq!(d, Decision::Fatal(NestError::Clobbered(2)));
        // A loop between two other slots (frames that cannot both be intact).
        let d = decide(
            &at(28, frame_on(4), top(3) - 0x40),
            CS,
            &stacks(),
            &IDLE,
            |slot| {
                if slot == 3 {
                    top(2) - 0x40
                } else {
                    top(3) - 0x40
                }
            },
        );
        assert_eq!(d, Decision::Fatal(NestError::Clobbered(4)));
    }

    #[test]
    fn depth_is_bounded() {
        let state = CpuState {
            depth: MAX_DEPTH,
            ..IDLE
        };
        assert_eq!(
            decide(
                &at(0x30, frame_on(3), 0x11_0000),
                CS,
                &stacks(),
                &state,
                no_windows
            ),
            Decision::Fatal(NestError::TooDeep)
        );
        let state = CpuState {
            depth: MAX_DEPTH - 1,
            ..IDLE
        };
        assert!(matches!(
            decide(
                &at(0x30, frame_on(3), 0x11_0000),
                CS,
                &stacks(),
                &state,
                no_windows
            ),
            Decision::Switch { .. }
        ));
    }

    #[test]
    fn no_room_or_unknown_stack_stays_on_the_ist_stack() {
        let near_bottom = KERNEL.start + HANDLER_ROOM;
        assert_eq!(
            decide(
                &at(14, frame_on(2), near_bottom),
                CS,
                &stacks(),
                &IDLE,
                no_windows
            ),
            Decision::Stay(NestError::NoRoom(near_bottom))
        );
        // A stack overflow: %rsp in the guard page below the kernel stack.
        let guard = KERNEL.start - 8;
        assert_eq!(
            decide(
                &at(14, frame_on(2), guard),
                CS,
                &stacks(),
                &IDLE,
                no_windows
            ),
            Decision::Stay(NestError::UnknownStack(guard))
        );
        // A frame that is on no IST stack at all.
        assert_eq!(
            decide(
                &at(14, 0x11_0000, 0x11_0100),
                CS,
                &stacks(),
                &IDLE,
                no_windows
            ),
            Decision::Fatal(NestError::UnknownStack(0x11_0000))
        );
    }

    #[test]
    fn a_frame_with_the_wrong_error_code_layout_is_fatal() {
        // #VC injected without its error code: the stub's CS slot holds RFLAGS.
        let mut missing = at(29, frame_on(2), 0x10);
        missing.cs = 0x202;
        assert_eq!(
            decide(&missing, CS, &stacks(), &IDLE, no_windows),
            Decision::Fatal(NestError::BadFrame(0x202))
        );
        // An external vector injected with an error code: the CS slot holds RIP.
        let mut extra = at(0xf0, frame_on(3), 0x202);
        extra.cs = 0x400_1234;
        assert_eq!(
            decide(&extra, CS, &stacks(), &IDLE, no_windows),
            Decision::Fatal(NestError::BadFrame(0x400_1234))
        );
    }

    #[test]
    fn double_fault_stays_on_its_own_stack() {
        assert_eq!(
            decide(
                &at(8, frame_on(0), 0x11_0000),
                CS,
                &stacks(),
                &IDLE,
                no_windows
            ),
            Decision::Stay(NestError::DoubleFault)
        );
    }

    #[test]
    fn every_interrupted_rsp_has_a_defined_outcome() {
        // Sweep %rsp over every stack and the gaps between them, for every slot, with
        // window tops that point anywhere: never a panic, a switch always lands inside
        // the kernel stack with room, below the red zone.
        let s = stacks();
        let probes: alloc::vec::Vec<u64> = (0..0x40u64)
            .map(|i| KERNEL.start - 0x2000 + i * 0x1000)
            .chain((0..IST_SLOTS).flat_map(|slot| {
                let r = s.ist[slot].clone();
                [r.start, r.start + 8, r.end - 0x100, r.end - 8, r.end]
            }))
            .chain([0, u64::MAX, 8, 0x7f])
            .collect();
        for own in 0..IST_SLOTS {
            for &rsp in &probes {
                for &window in &probes {
                    let d = decide(&at(0x40, frame_on(own), rsp), CS, &s, &IDLE, |_| window);
                    if let Decision::Switch { frame, .. } = d {
                        assert!(frame >= KERNEL.start + HANDLER_ROOM, "{rsp:#x}");
                        assert!(frame + FRAME_BYTES + RED_ZONE <= KERNEL.end);
                        assert_eq!(frame % 16, 0);
                    }
                }
            }
        }
    }
}
