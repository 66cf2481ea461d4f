//! Self-tests of the other CPUs: all online, each with its own per-CPU area and
//! stacks, cross-CPU calls, and a TLB shootdown every CPU observes.
#![allow(unsafe_code, reason = "reads through a test mapping on every CPU")]

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::vec::Vec;

use svsm::smp::{call, CPUS};
use x86_64::registers::model_specific::FsBase;

use super::{ensure, Outcome, Test};
use crate::kernel::gdt::PAGE;
use crate::kernel::smp::{listed, stacks};
use crate::kernel::{apic, paging, percpu};

pub const TESTS: &[(&str, Test)] = &[
    ("smp_every_listed_cpu_online", every_listed_cpu_online),
    (
        "smp_per_cpu_areas_and_stacks_distinct",
        per_cpu_areas_distinct,
    ),
    ("smp_ipi_call_round_trip", ipi_call_round_trip),
    ("smp_tlb_shootdown_remap_seen_by_every_cpu", tlb_shootdown),
];

const WHAT_FS_BASE: u64 = 0;
const WHAT_CANARY_THROUGH_FS: u64 = 1;
const WHAT_RSP: u64 = 2;
const WHAT_INDEX_THROUGH_FS: u64 = 3;
const WHAT_APIC_ID: u64 = 4;

/// Runs on the target CPU: reports one of its own values.
fn report(what: u64, _cpu: usize) -> u64 {
    match what {
        WHAT_FS_BASE => FsBase::read().as_u64(),
        WHAT_CANARY_THROUGH_FS => percpu::canary_through_fs(),
        WHAT_RSP => {
            let rsp: u64;
            // SAFETY: reads RSP only.
            unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
            rsp
        }
        WHAT_INDEX_THROUGH_FS => svsm::smp::this_cpu() as u64,
        WHAT_APIC_ID => u64::from(apic::id()),
        _ => u64::MAX,
    }
}

fn ask(cpu: usize, what: u64) -> Result<u64, alloc::string::String> {
    call(cpu, report, what).map_err(|e| alloc::format!("call to CPU {cpu}: {e}"))
}

fn every_listed_cpu_online() -> Outcome {
    let listed = listed();
    ensure!(
        listed >= 2,
        "the MADT lists {listed} processors: boot QEMU with -smp 2 or more"
    );
    let expected = listed.min(svsm::smp::MAX_CPUS);
    ensure!(
        CPUS.count() == expected,
        "{} CPUs registered, {expected} expected",
        CPUS.count()
    );
    ensure!(
        CPUS.online_count() == expected,
        "only {} of {expected} CPUs online",
        CPUS.online_count()
    );
    Ok(())
}

fn per_cpu_areas_distinct() -> Outcome {
    let mut bases = Vec::new();
    let mut canaries = Vec::new();
    for cpu in 0..CPUS.count() {
        let base = ask(cpu, WHAT_FS_BASE)?;
        let canary = ask(cpu, WHAT_CANARY_THROUGH_FS)?;
        let rsp = ask(cpu, WHAT_RSP)?;
        let index = ask(cpu, WHAT_INDEX_THROUGH_FS)?;
        let apic_id = ask(cpu, WHAT_APIC_ID)?;
        ensure!(
            index == cpu as u64,
            "CPU {cpu} reads index {index} at %fs:0x30"
        );
        ensure!(
            CPUS.apic_id(cpu) == Ok(apic_id as u32),
            "CPU {cpu} has APIC ID {apic_id}, registered {:?}",
            CPUS.apic_id(cpu)
        );
        ensure!(
            canary != 0 && canary & 0xff == 0,
            "CPU {cpu}: canary {canary:#x}"
        );
        if cpu > 0 {
            // A call runs in the IPI handler, which the entry path moved off the IST
            // stack onto the interrupted one: the CPU's own kernel stack.
            let s = stacks(cpu).ok_or("no stacks")?;
            ensure!(
                (s.bottom..s.top).contains(&rsp),
                "CPU {cpu}'s IPI handler runs on {rsp:#x}, outside its kernel stack {:#x}..{:#x}",
                s.bottom,
                s.top
            );
            // Its stacks are mapped from the heap, each above an unmapped guard page.
            ensure!(
                paging::translate(s.guard).is_none() && paging::translate(s.bottom).is_some(),
                "CPU {cpu}'s kernel stack guard {:#x} is mapped or its stack is not",
                s.guard
            );
            for (guard, top) in s.ist_guards.into_iter().zip(s.ist_tops) {
                ensure!(
                    paging::translate(guard).is_none()
                        && paging::translate(guard + PAGE as u64).is_some()
                        && paging::translate(top - 8).is_some(),
                    "CPU {cpu}'s IST guard {guard:#x} is mapped or its stack is not"
                );
            }
        }
        bases.push(base);
        canaries.push(canary);
    }
    for (i, b) in bases.iter().enumerate() {
        ensure!(
            !bases[..i].contains(b),
            "CPU {i} shares FS base {b:#x} with another CPU"
        );
        ensure!(
            !canaries[..i].contains(&canaries[i]),
            "CPU {i} shares its canary with another CPU"
        );
    }
    ensure!(
        bases.first() == Some(&percpu::current().address()),
        "the boot CPU's FS base is not its area"
    );
    Ok(())
}

fn mix(arg: u64, cpu: usize) -> u64 {
    arg.rotate_left(17) ^ ((cpu as u64) << 56)
}

fn ipi_call_round_trip() -> Outcome {
    let before: Vec<u64> = (0..CPUS.count()).map(|c| CPUS.flushes_served(c)).collect();
    for round in 0..50u64 {
        for cpu in 0..CPUS.count() {
            let arg = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ cpu as u64;
            let got = call(cpu, mix, arg).map_err(|e| alloc::format!("CPU {cpu}: {e}"))?;
            ensure!(
                got == mix(arg, cpu),
                "CPU {cpu} answered {got:#x} in round {round}"
            );
        }
    }
    let after: Vec<u64> = (0..CPUS.count()).map(|c| CPUS.flushes_served(c)).collect();
    ensure!(
        before == after,
        "calls caused flushes: {before:?} -> {after:?}"
    );
    ensure!(
        call(CPUS.count(), mix, 1).is_err(),
        "a call to a CPU that does not exist succeeded"
    );
    Ok(())
}

/// A virtual address nothing else maps (the paging test uses its own).
const SHOOTDOWN_VA: u64 = 0x5F00_0000_0000;

fn read_va(va: u64, _cpu: usize) -> u64 {
    // SAFETY: the test mapped `va` before calling; a stale translation would read the
    // old frame, which stays allocated until the test ends.
    unsafe { (va as *const u64).read_volatile() }
}

fn tlb_shootdown() -> Outcome {
    let layout = Layout::from_size_align(4096, 4096).map_err(|e| alloc::format!("{e}"))?;
    // SAFETY: non-zero size.
    let a = unsafe { alloc_zeroed(layout) };
    // SAFETY: as above.
    let b = unsafe { alloc_zeroed(layout) };
    ensure!(!a.is_null() && !b.is_null(), "no frames");
    // SAFETY: both frames are ours, 4096 bytes.
    unsafe { a.cast::<u64>().write_volatile(0xAAAA_0000_0000_AAAA) };
    // SAFETY: as above.
    unsafe { b.cast::<u64>().write_volatile(0xBBBB_0000_0000_BBBB) };
    let result = (|| {
        let cpus = CPUS.count();
        // SAFETY: frame `a` is ours; the address is unused.
        unsafe { paging::map_page(SHOOTDOWN_VA, a as u64) }
            .map_err(|e| alloc::format!("map: {e:?}"))?;
        for cpu in 0..cpus {
            let v = call(cpu, read_va, SHOOTDOWN_VA).map_err(|e| alloc::format!("{e}"))?;
            ensure!(
                v == 0xAAAA_0000_0000_AAAA,
                "CPU {cpu} read {v:#x} before the change"
            );
        }
        let served: Vec<u64> = (0..cpus).map(|c| CPUS.flushes_served(c)).collect();
        // The change: unmap (shootdown on every CPU), map the other frame.
        paging::unmap_page(SHOOTDOWN_VA).map_err(|e| alloc::format!("unmap: {e:?}"))?;
        // SAFETY: frame `b` is ours; the address was just unmapped.
        unsafe { paging::map_page(SHOOTDOWN_VA, b as u64) }
            .map_err(|e| alloc::format!("map: {e:?}"))?;
        for (cpu, before) in served.iter().enumerate() {
            let v = call(cpu, read_va, SHOOTDOWN_VA).map_err(|e| alloc::format!("{e}"))?;
            ensure!(
                v == 0xBBBB_0000_0000_BBBB,
                "CPU {cpu} read {v:#x}: its TLB kept the old frame"
            );
            if cpu > 0 && !svsm::smp::broadcast_invalidation() {
                ensure!(
                    CPUS.flushes_served(cpu) > *before,
                    "CPU {cpu} served no shootdown"
                );
            }
        }
        paging::unmap_page(SHOOTDOWN_VA).map_err(|e| alloc::format!("unmap: {e:?}"))?;
        ensure!(paging::translate(SHOOTDOWN_VA).is_none(), "still mapped");
        Ok(())
    })();
    // SAFETY: allocated above with this layout; no mapping refers to them any more
    // (or, after a failed step, the test reports failure and the kernel exits).
    unsafe { dealloc(a, layout) };
    // SAFETY: as above.
    unsafe { dealloc(b, layout) };
    result
}
