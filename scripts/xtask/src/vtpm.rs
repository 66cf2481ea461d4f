//! The vTPM's steps: its kernel-target build check and its benchmark.
//!
//! The vTPM's tests (engine, service, daemon, tpm2-tools end to end) run with the
//! workspace's host tests; this module adds what those cannot show. The benchmark's
//! figures are printed, never asserted.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSegment, SectionKind};

use crate::forky::{self, Peer};
use crate::{cargo, kernel, step};

/// Test steps: the vTPM crate (engine bindings, service) builds for the kernel target.
pub fn test() -> Result<()> {
    step(
        "vtpm for x86_64-unknown-none",
        cargo(&["build", "-p", "vtpm", "--target", "x86_64-unknown-none"]),
    )
}

/// The per-command latency benchmark: engine, SVSM path, bookworm's swtpm, forky's
/// swtpm (when this machine can build the forky root) and OpenSSL's raw sign; then the
/// kernel's image size, heap and time to vTPM ready in QEMU.
pub fn bench() -> Result<()> {
    let mut cmd = cargo(&[
        "run",
        // Release with fat LTO and one codegen unit (the workspace's Cargo.toml).
        "--profile",
        "bench-release",
        "-q",
        "-p",
        "vtpm-daemon",
        "--bin",
        "vtpm-bench",
        "--",
    ]);
    match forky::peer() {
        // vtpm-bench asks the root's swtpm for its version itself.
        Peer::Root(dir) => {
            cmd.arg("--forky-root").arg(dir);
        }
        Peer::Skipped(why) => {
            println!("xtask: column (d), forky's swtpm, skipped: {why}");
            cmd.arg("--forky-skipped").arg(why);
        }
    }
    step(
        "vTPM latency (engine, SVSM path, bookworm's swtpm, forky's swtpm)",
        cmd,
    )?;
    println!("xtask: == the kernel: image size, heap, time to vTPM ready ==");
    // A figure, not a gate: a kernel that does not build (its errors are above) leaves
    // the latency table standing.
    let elf = match kernel::build() {
        Ok(elf) => elf,
        Err(e) => {
            println!("xtask: kernel figures skipped: {e:#}");
            return Ok(());
        }
    };
    print_image_size(&elf)?;
    print_boot_figures(&elf)
}

/// The kernel ELF's allocated sections by kind, its loaded size and its file size.
fn print_image_size(elf: &Path) -> Result<()> {
    let data = std::fs::read(elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("{} is not an ELF file", elf.display()))?;
    let (mut text, mut rodata, mut data_size, mut bss) = (0u64, 0u64, 0u64, 0u64);
    for section in file.sections() {
        match section.kind() {
            SectionKind::Text => text += section.size(),
            SectionKind::ReadOnlyData
            | SectionKind::ReadOnlyDataWithRel
            | SectionKind::ReadOnlyString => rodata += section.size(),
            SectionKind::Data | SectionKind::Tls => data_size += section.size(),
            SectionKind::UninitializedData | SectionKind::UninitializedTls => bss += section.size(),
            _ => {}
        }
    }
    let (file_bytes, memory_bytes) = file
        .segments()
        .fold((0, 0), |(f, m), s| (f + s.file_range().1, m + s.size()));
    let kib = |n: u64| n.div_ceil(1024);
    println!(
        "Kernel image {}: text {} KiB, rodata {} KiB, data {} KiB, bss {} KiB; loaded \
         segments {} KiB in the file, {} KiB in memory; ELF file {} KiB (with symbols and debug information)",
        elf.display(),
        kib(text),
        kib(rodata),
        kib(data_size),
        kib(bss),
        kib(file_bytes),
        kib(memory_bytes),
        kib(data.len() as u64)
    );
    Ok(())
}

/// Boots the kernel in QEMU (TCG) with its self-tests, which run a TPM command sequence
/// after the vTPM starts, and prints what its console says: the time from kernel entry
/// to vTPM ready (TSC), the heap when the vTPM is ready and its high-water mark during
/// the TPM sequence; plus the host's time from starting QEMU to that line.
fn print_boot_figures(elf: &Path) -> Result<()> {
    let start = Instant::now();
    let mut child = kernel::qemu(elf, "test")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let stdout = child.stdout.take().context("no QEMU stdout")?;
    let reader = std::thread::spawn(move || {
        let mut ready_at = None;
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if ready_at.is_none() && line.contains("memory: vTPM started") {
                ready_at = Some(start.elapsed());
            }
            lines.push(line);
        }
        (ready_at, lines)
    });
    let status = kernel::wait_with_timeout(&mut child, Duration::from_secs(300))?;
    let (ready_at, lines) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("console reader panicked"))?;
    let find = |what: &str| lines.iter().find(|l| l.contains(what));
    let ready = find("memory: vTPM started").with_context(|| {
        format!(
            "the kernel never said its vTPM started (QEMU status {status:?}):\n{}",
            lines.join("\n")
        )
    })?;
    let after = |line: &str, key: &str| -> Option<String> {
        let rest = &line[line.find(key)? + key.len()..];
        Some(
            rest.split_whitespace()
                .next()?
                .trim_end_matches([',', ';'])
                .to_string(),
        )
    };
    let na = || "?".to_string();
    println!(
        "vTPM ready {} ms after kernel entry (the kernel's TSC; QEMU TCG, no SEV), {} ms \
         after QEMU started (host clock)",
        after(ready, "ready ").unwrap_or_else(na),
        ready_at.map_or_else(na, |t| format!("{:.0}", t.as_secs_f64() * 1e3))
    );
    println!(
        "Heap with the vTPM ready: {} KiB allocated, high-water {} KiB since boot",
        after(ready, "heap ").unwrap_or_else(na),
        after(ready, "high-water ").unwrap_or_else(na)
    );
    match find("during it") {
        Some(line) => println!(
            "Heap while the vTPM runs the self-tests' TPM sequence (EK, signing keys, Sign, \
             Quote): high-water {} KiB",
            after(line, "high-water ").unwrap_or_else(na)
        ),
        None => println!("The self-tests' TPM sequence did not report its heap use"),
    }
    if let Some(summary) = find("selftest: ") {
        println!("(kernel self-tests in that boot: {})", summary.trim());
    }
    Ok(())
}
