//! PVALIDATE throughput through the full request path on the emulated machine, against
//! zeroing the same memory with a plain memset in the same run.
//!
//! This measures our code (guest driver, request loop, PVALIDATE handler, address
//! checks) and the emulated RMP model; it says nothing about PVALIDATE on SNP hardware.

use std::hint::black_box;
use std::time::{Duration, Instant};

use svsm::address::{GuestRegion, MemoryKind};
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
const ROUNDS: usize = 11;

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

/// One timed measurement per round: validating `[start, end)` in entries of `size`
/// through the full request path (then rescinding it, untimed), and zeroing a buffer of
/// the same size with memset. The two alternate, so both see the same machine load.
struct Samples {
    path: Vec<Duration>,
    memset: Vec<Duration>,
    entries: usize,
}

fn measure(
    guest: &GuestDriver<'_>,
    start: u64,
    end: u64,
    size: PageSize,
) -> Result<Samples, String> {
    let entries = |validate: bool| -> Vec<PvalidateEntry> {
        (start..end)
            .step_by(size.bytes() as usize)
            .filter_map(|gpa| PvalidateEntry::new(gpa, size, validate, false).ok())
            .collect()
    };
    let (validate, rescind) = (entries(true), entries(false));
    let mut buf = vec![1u8; (end - start) as usize];
    let mut samples = Samples {
        path: Vec::new(),
        memset: Vec::new(),
        entries: validate.len(),
    };
    // Round 0 warms up (first touch of the memory, caches) and is not kept.
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
        let path = t.elapsed();
        for batch in rescind.chunks(PVALIDATE_MAX_ENTRIES) {
            let (code, _) = guest
                .pvalidate_list(0, batch, 0)
                .map_err(|e| format!("{e:?}"))?;
            if code != SvsmResultCode::SUCCESS {
                return Err(format!("rescind: {code}"));
            }
        }
        let t = Instant::now();
        buf.fill(black_box(0));
        black_box(&mut buf);
        let zero = t.elapsed();
        if round > 0 {
            samples.path.push(path);
            samples.memset.push(zero);
        }
    }
    Ok(samples)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn report(label: &str, bytes: u64, mut s: Samples) {
    let path = median(&mut s.path);
    let zero = median(&mut s.memset);
    let mib = bytes as f64 / MIB as f64;
    let per_entry = path.saturating_sub(zero).as_nanos() as f64 / s.entries as f64;
    println!(
        "{label}: {} entries ({} MiB), median of {ROUNDS} rounds: PVALIDATE {:.2} ms = {:.0} MiB/s; \
         memset of the same memory {:.2} ms = {:.0} MiB/s; ratio {:.2}x memset; \
         path cost besides zeroing {:.0} ns/entry",
        s.entries,
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
        let samples = measure(&guest, start, end, size)?;
        report(label, end - start, samples);
    }
    Ok(())
}
