//! In-kernel self-tests, run when the command line holds the word `test`.
//!
//! Each test returns `Err(reason)` on failure; the runner reports every result on the
//! console and ends QEMU through isa-debug-exit with success only if all passed.
//! `cargo xtask test` boots the kernel this way and checks the exit status.

mod guest_memory;
mod idt_gates;
mod machine;
pub(super) mod nesting;
mod runtime;
mod smp;
mod tpm_sequence;

use alloc::string::String;

use vtpm::{LibTpms, Service};

use super::exit::ExitCode;
use super::heap;

/// One test's outcome.
pub type Outcome = Result<(), String>;

/// A self-test.
pub type Test = fn() -> Outcome;

/// Fails with a formatted reason unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(alloc::format!($($why)+));
        }
    };
}
pub(crate) use ensure;

/// Runs every self-test; returns the exit code to report.
pub fn run(service: &mut Service<LibTpms>) -> ExitCode {
    let mut passed = 0;
    let mut failed = 0;
    let mut report = |name: &str, outcome: Outcome| match outcome {
        Ok(()) => {
            log::info!("selftest {name} ... ok");
            passed += 1;
        }
        Err(why) => {
            log::error!("selftest {name} ... FAILED: {why}");
            failed += 1;
        }
    };
    for (name, test) in machine::TESTS
        .iter()
        .chain(runtime::TESTS)
        .chain(guest_memory::TESTS)
        .chain(idt_gates::TESTS)
        .chain(nesting::TESTS)
        .chain(smp::TESTS)
    {
        report(name, test());
    }
    // The machine tests above allocate a 2 MiB-aligned block: measure the TPM sequence
    // on its own.
    heap::reset_high_water();
    let before = heap::stats();
    let quiet = tpm_sequence::run(service, None);
    let after = heap::stats();
    log::info!(
        "memory: heap {} KiB allocated before the TPM sequence, {} KiB after; high-water {} KiB during it",
        before.allocated / 1024,
        after.allocated / 1024,
        after.high_water / 1024
    );
    let noisy = tpm_sequence::run(service, Some(tpm_sequence::TIMER_COUNT));
    report(
        "tpm_sequence",
        quiet.as_ref().map(|_| ()).map_err(Clone::clone),
    );
    report(
        "tpm_sequence_under_timer_interrupts",
        noisy.as_ref().map(|_| ()).map_err(Clone::clone),
    );
    report(
        "tpm_sequence_results_identical_under_interrupts",
        match (&quiet, &noisy) {
            (Ok(a), Ok(b)) if a.comparable() == b.comparable() => Ok(()),
            (Ok(a), Ok(b)) => Err(alloc::format!(
                "results differ: quiet {:?} vs interrupted {:?}",
                a.comparable(),
                b.comparable()
            )),
            _ => Err(String::from("a sequence failed")),
        },
    );
    let stats = heap::stats();
    log::info!(
        "memory: heap {} KiB allocated at the end; high-water {} KiB since the TPM sequence began",
        stats.allocated / 1024,
        stats.high_water / 1024
    );
    log::info!("selftest: {passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}
