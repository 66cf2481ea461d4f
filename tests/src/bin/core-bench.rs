//! PVALIDATE throughput through the full request path on the emulated machine, against
//! zeroing the same memory with a plain memset in the same run.
//!
//! This measures our code (guest driver, request loop, PVALIDATE handler, address
//! checks) and the emulated RMP model; it says nothing about PVALIDATE on SNP hardware.

use std::hint::black_box;
use std::time::{Duration, Instant};

use svsm::address::{GuestRegion, MemoryKind};
use svsm::platform::PAGE_SIZE;
use svsm::requests::Services;
use svsm_emulated::{EmulatedSystem, LaunchConfig};
use svsm_protocol::core::{PageSize, PvalidateEntry, PVALIDATE_MAX_ENTRIES};
use svsm_protocol::SvsmResultCode;
use svsm_tests::driver::GuestDriver;

const MIB: u64 = 1 << 20;
/// Guest RAM the 2 MiB case uses (2 MiB RMP pages).
const LARGE: (u64, u64) = (16 * MIB, 80 * MIB);
/// Guest RAM the 4 KiB case uses (4 KiB RMP pages).
const SMALL: (u64, u64) = (80 * MIB, 144 * MIB);
const ROUNDS: u32 = 8;

fn config() -> LaunchConfig {
    let mut regions = LaunchConfig::default().regions;
    regions.push(GuestRegion {
        start: LARGE.0,
        end: SMALL.1,
        kind: MemoryKind::Ram,
    });
    LaunchConfig {
        memory_size: 160 * MIB,
        regions,
        small_page_chunks: (SMALL.0..SMALL.1).step_by(0x20_0000).collect(),
        ..LaunchConfig::default()
    }
}

/// Validates (then rescinds, untimed) `[start, end)` in entries of `size`, `ROUNDS`
/// times; returns the time spent validating and the number of entries per round.
fn run(
    guest: &GuestDriver<'_>,
    start: u64,
    end: u64,
    size: PageSize,
) -> Result<(Duration, usize), String> {
    let entries = |validate: bool| -> Vec<PvalidateEntry> {
        (start..end)
            .step_by(size.bytes() as usize)
            .filter_map(|gpa| PvalidateEntry::new(gpa, size, validate, false).ok())
            .collect()
    };
    let (validate, rescind) = (entries(true), entries(false));
    let mut spent = Duration::ZERO;
    // Round 0 warms up (first touch of the memory, caches) and is not timed.
    for round in 0..=ROUNDS {
        let t = Instant::now();
        for batch in validate.chunks(PVALIDATE_MAX_ENTRIES) {
            let (code, _) = guest
                .pvalidate_list(0, batch, 0)
                .map_err(|e| format!("{e:?}"))?;
            if code != SvsmResultCode::SUCCESS {
                return Err(format!("validate: {code}"));
            }
        }
        if round > 0 {
            spent += t.elapsed();
        }
        for batch in rescind.chunks(PVALIDATE_MAX_ENTRIES) {
            let (code, _) = guest
                .pvalidate_list(0, batch, 0)
                .map_err(|e| format!("{e:?}"))?;
            if code != SvsmResultCode::SUCCESS {
                return Err(format!("rescind: {code}"));
            }
        }
    }
    Ok((spent, validate.len()))
}

/// Time to zero `bytes` bytes `ROUNDS` times with a plain memset.
fn memset(bytes: u64) -> Duration {
    let mut buf = vec![1u8; bytes as usize];
    buf.fill(black_box(0));
    let t = Instant::now();
    for _ in 0..ROUNDS {
        buf.fill(black_box(0));
        black_box(&mut buf);
    }
    t.elapsed()
}

fn report(label: &str, bytes: u64, entries: usize, path: Duration, zero: Duration) {
    let mib = bytes as f64 / MIB as f64 * f64::from(ROUNDS);
    let per_entry =
        path.saturating_sub(zero).as_nanos() as f64 / (entries as f64 * f64::from(ROUNDS));
    println!(
        "{label}: {entries} entries ({} MiB) x {ROUNDS} rounds: PVALIDATE {:.1} ms = {:.0} MiB/s; \
         memset of the same memory {:.1} ms = {:.0} MiB/s; ratio {:.2}x memset; \
         path cost besides zeroing {:.0} ns/entry",
        bytes / MIB,
        path.as_secs_f64() * 1e3,
        mib / path.as_secs_f64(),
        zero.as_secs_f64() * 1e3,
        mib / zero.as_secs_f64(),
        path.as_secs_f64() / zero.as_secs_f64(),
        per_entry,
    );
}

fn main() -> Result<(), String> {
    println!(
        "PVALIDATE benchmark on the emulated SNP machine: it measures this project's request \
         path (guest driver, request loop, handler, address checks) and the RMP model, not \
         PVALIDATE on SNP hardware."
    );
    let system = EmulatedSystem::launch(config(), Services::new()).map_err(|e| format!("{e:?}"))?;
    let guest = GuestDriver::new(&system);
    for (label, (start, end), size) in [
        ("4 KiB entries", SMALL, PageSize::Size4K),
        ("2 MiB entries", LARGE, PageSize::Size2M),
    ] {
        let (path, entries) = run(&guest, start, end, size)?;
        let zero = memset(end - start);
        report(label, end - start, entries, path, zero);
        debug_assert_eq!((end - start) % PAGE_SIZE, 0);
    }
    Ok(())
}
