//! `vtpm-bench`: per-command latency of the vTPM through (a) the engine called directly,
//! (b) the full SVSM path on the emulated machine, (c) this machine's swtpm (Debian
//! bookworm's) and (d) the current swtpm (Debian forky's, run with `chroot` from a forky
//! root that `cargo xtask bench` builds) over their sockets, with the same in-process
//! client and the same command bytes; plus OpenSSL's raw sign time.
//!
//! A benchmark, not a test: it prints medians and asserts nothing about time. Build it
//! with the `bench-release` profile (`cargo xtask bench` does).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use vtpm::tpm::{self, CommandBuilder, Header};
use vtpm::{Engine, EngineError, LibTpms, OsEntropy, Service};
use vtpm_daemon::svsm_backend::SvsmBackend;
use vtpm_daemon::BackendError;

/// One way to reach a TPM: runs a command, returns its response code and the time the
/// command took on this path; the response stays readable until the next command.
trait Path {
    fn run(&mut self, command: &mut [u8]) -> Result<(u32, Duration)>;
    fn response(&self) -> &[u8];
    /// The following runs are samples of command `index` of [`COMMANDS`] (`None`: not
    /// a sample, e.g. a warm-up).
    fn sampling(&mut self, _index: Option<usize>) {}
}

/// The engine with a stopwatch: how long its last command took inside the engine.
#[derive(Debug)]
struct Timed {
    inner: LibTpms,
    last: Duration,
}

impl Engine for Timed {
    fn execute(&mut self, locality: u8, command: &mut [u8]) -> Result<(), EngineError> {
        let start = Instant::now();
        let result = self.inner.execute(locality, command);
        self.last = start.elapsed();
        result
    }
    fn response(&self) -> &[u8] {
        self.inner.response()
    }
    fn failed(&self) -> bool {
        self.inner.failed()
    }
    fn buffer_size(&self) -> u32 {
        self.inner.buffer_size()
    }
}

type Backend = SvsmBackend<Timed>;

/// (a) the engine inside the SVSM, called directly (no service, no SVSM path): the
/// same engine instance that (b) reaches, so the two are measured side by side. It is
/// called through the same stopwatch wrapper ([`Timed`]) that (b)'s service calls, so
/// both paths pay the wrapper's two clock reads, and its time includes copying the
/// response into the client's buffer, as (b)'s does. Besides the whole command it
/// records, for every sample, its time outside the engine (the whole minus the
/// engine's own time): (b)'s time outside the engine minus this is the SVSM path's
/// overhead, free of the engine's run-to-run noise.
struct Direct<'a> {
    backend: &'a RefCell<Backend>,
    response: Vec<u8>,
    sampling: Option<usize>,
    outside: Vec<Vec<Duration>>,
}

impl Path for Direct<'_> {
    fn run(&mut self, command: &mut [u8]) -> Result<(u32, Duration)> {
        let backend = self.backend.borrow();
        let (result, elapsed, engine) = backend
            .with_engine(|engine| {
                let start = Instant::now();
                let result = engine.execute(0, command);
                self.response.clear();
                self.response.extend_from_slice(engine.response());
                (result, start.elapsed(), engine.last)
            })
            .context("the SVSM is powered off")?;
        result?;
        if let Some(index) = self.sampling {
            self.outside[index].push(elapsed.saturating_sub(engine));
        }
        Ok((code(&self.response)?, elapsed))
    }
    fn response(&self) -> &[u8] {
        &self.response
    }
    fn sampling(&mut self, index: Option<usize>) {
        self.sampling = index;
    }
}

/// (b) the full SVSM path on the emulated machine. Besides the whole round trip it
/// records, for every sample, its time outside the engine: the round trip minus the
/// time the engine spent on the command within it.
struct Svsm<'a> {
    backend: &'a RefCell<Backend>,
    response: Vec<u8>,
    sampling: Option<usize>,
    outside: Vec<Vec<Duration>>,
}

impl Path for Svsm<'_> {
    fn run(&mut self, command: &mut [u8]) -> Result<(u32, Duration)> {
        let mut backend = self.backend.borrow_mut();
        let start = Instant::now();
        svsm_round_trip(&mut backend, command, &mut self.response)?;
        let elapsed = start.elapsed();
        if let Some(index) = self.sampling {
            let engine = backend.with_engine(|e| e.last).context("powered off")?;
            self.outside[index].push(elapsed.saturating_sub(engine));
        }
        Ok((code(&self.response)?, elapsed))
    }
    fn response(&self) -> &[u8] {
        &self.response
    }
    fn sampling(&mut self, index: Option<usize>) {
        self.sampling = index;
    }
}

/// One command through the whole SVSM path (guest driver to engine and back). Never
/// inlined, so that an instruction counter (`--count` under callgrind) can tell the
/// path's instructions from the engine's (`TPMLIB_Process`).
/// The response lands in `response`, whose allocation is reused (as (a) reuses its own).
#[inline(never)]
fn svsm_round_trip(backend: &mut Backend, command: &[u8], response: &mut Vec<u8>) -> Result<()> {
    Ok(backend.command_into(0, command, response)?)
}

/// (c) and (d): swtpm's data channel, raw TPM commands over TCP.
struct Swtpm {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Swtpm {
    fn exchange(&mut self, command: &[u8]) -> Result<()> {
        self.stream.write_all(command)?;
        self.buffer.resize(10, 0);
        self.stream.read_exact(&mut self.buffer)?;
        let size = Header::parse(&self.buffer).context("swtpm response")?.size as usize;
        if !(10..=4096).contains(&size) {
            bail!("swtpm sent a {size}-byte response");
        }
        self.buffer.resize(size, 0);
        self.stream.read_exact(&mut self.buffer[10..])?;
        Ok(())
    }
}

impl Path for Swtpm {
    fn run(&mut self, command: &mut [u8]) -> Result<(u32, Duration)> {
        let start = Instant::now();
        self.exchange(command)?;
        let elapsed = start.elapsed();
        Ok((code(&self.buffer)?, elapsed))
    }
    fn response(&self) -> &[u8] {
        &self.buffer
    }
}

fn code(response: &[u8]) -> Result<u32> {
    let h = Header::parse(response).context("a response without a header")?;
    if h.size as usize != response.len() {
        bail!(
            "response header says {} bytes, got {}",
            h.size,
            response.len()
        );
    }
    Ok(h.code)
}

/// Runs `command` and requires success.
fn ok(path: &mut dyn Path, mut command: Vec<u8>) -> Result<Vec<u8>> {
    let cc = Header::parse(&command).map_or(0, |h| h.code);
    let (rc, _) = path.run(&mut command)?;
    if rc != 0 {
        bail!("command {cc:#x} failed with {rc:#x}");
    }
    Ok(path.response().to_vec())
}

const ALG_NULL: u16 = 0x0010;
/// TPM_RC_RETRY.
const RC_RETRY: u32 = 0x922;
const ALG_SHA256: u16 = 0x000B;
const RH_OWNER: u32 = 0x4000_0001;
const RH_NULL: u32 = 0x4000_0007;
/// fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, sign.
const SIGNING_KEY: u32 = 0x0004_0072;

fn ecc_signing_template() -> Vec<u8> {
    CommandBuilder::new(0, 0)
        .u16(0x0023)
        .u16(ALG_SHA256)
        .u32(SIGNING_KEY)
        .u16(0)
        .u16(ALG_NULL)
        .u16(ALG_NULL)
        .u16(0x0003)
        .u16(ALG_NULL)
        .u16(0)
        .u16(0)
        .build()[10..]
        .to_vec()
}

fn rsa_signing_template() -> Vec<u8> {
    rsa_signing_template_unique(&[])
}

/// The RSA signing key's template with `unique` as its unique field: a different
/// `unique` derives a different primary key from the same seed.
fn rsa_signing_template_unique(unique: &[u8]) -> Vec<u8> {
    CommandBuilder::new(0, 0)
        .u16(0x0001)
        .u16(ALG_SHA256)
        .u32(SIGNING_KEY)
        .u16(0)
        .u16(ALG_NULL)
        .u16(ALG_NULL)
        .u16(2048)
        .u32(0)
        .sized(unique)
        .build()[10..]
        .to_vec()
}

/// How many RSA keys [`sign_rsa_per_key`] signs with, and how many signs per key.
const RSA_KEYS: u8 = 24;
const SIGNS_PER_KEY: usize = 20;

/// Sign RSA-2048 with [`RSA_KEYS`] different primary keys on each of `paths` (each its
/// own TPM): for each key the median of [`SIGNS_PER_KEY`] signs (after a warm-up),
/// sorted, per path. The paths take turns round by round, as in [`time`], so that all
/// see the same machine load. One key's sign time is not the TPM's: with libtpms 0.10 it
/// is one of two figures about four times apart, depending on the key (the main table's
/// figures use one key per TPM, which each run draws anew), so the two groups are
/// compared apart ([`KeyGroups`]).
fn sign_rsa_per_key(paths: &mut [&mut dyn Path]) -> Result<Vec<Vec<f64>>> {
    let n = paths.len();
    let mut medians = vec![Vec::new(); n];
    for k in 0..RSA_KEYS {
        let template = rsa_signing_template_unique(&[k; 16]);
        let mut keys = Vec::with_capacity(n);
        for path in paths.iter_mut() {
            let response = ok(&mut **path, tpm::create_primary(RH_OWNER, &template))?;
            let key = tpm::parse_create_primary(&response)
                .context("RSA key")?
                .handle;
            keys.push((key, sign(key, 0x0014)));
        }
        for (path, (_, command)) in paths.iter_mut().zip(&keys) {
            for _ in 0..3 {
                let (rc, _) = path.run(&mut command.clone())?;
                if rc != 0 && rc != RC_RETRY {
                    bail!("Sign RSA-2048 failed with {rc:#x}");
                }
            }
        }
        let mut samples = vec![Vec::with_capacity(SIGNS_PER_KEY); n];
        for round in 0..SIGNS_PER_KEY {
            for i in order(round, n) {
                let (rc, t) = paths[i].run(&mut keys[i].1.clone())?;
                if rc != 0 {
                    bail!("Sign RSA-2048 failed with {rc:#x}");
                }
                samples[i].push(t);
            }
        }
        for (i, samples) in samples.iter().enumerate() {
            medians[i].push(median(samples));
        }
        for (path, (key, _)) in paths.iter_mut().zip(&keys) {
            ok(&mut **path, tpm::flush_context(*key))?;
        }
    }
    for m in &mut medians {
        m.sort_by(f64::total_cmp);
    }
    Ok(medians)
}

fn sign(key: u32, scheme: u16) -> Vec<u8> {
    CommandBuilder::new(tpm::ST_SESSIONS, 0x15D)
        .u32(key)
        .password_auth()
        .sized(&[0xA5; 32])
        .u16(scheme)
        .u16(ALG_SHA256)
        // A null hash-check ticket (allowed for an unrestricted key).
        .u16(0x8024)
        .u32(RH_NULL)
        .u16(0)
        .build()
}

fn quote(key: u32) -> Vec<u8> {
    CommandBuilder::new(tpm::ST_SESSIONS, 0x158)
        .u32(key)
        .password_auth()
        .sized(&[0x5A; 16])
        .u16(0x0014)
        .u16(ALG_SHA256)
        .u32(1)
        .u16(ALG_SHA256)
        .bytes(&[3, 0xFF, 0, 0])
        .build()
}

fn get_random() -> Vec<u8> {
    CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17B)
        .u16(32)
        .build()
}

fn pcr_extend() -> Vec<u8> {
    CommandBuilder::new(tpm::ST_SESSIONS, 0x182)
        .u32(16)
        .password_auth()
        .u32(1)
        .u16(ALG_SHA256)
        .bytes(&[0x11; 32])
        .build()
}

fn pcr_read() -> Vec<u8> {
    CommandBuilder::new(tpm::ST_NO_SESSIONS, 0x17E)
        .u32(1)
        .u16(ALG_SHA256)
        .bytes(&[3, 0, 0, 1])
        .build()
}

/// The cargo profile this binary was built with, named after its directory under
/// `target/` (`cargo xtask bench` builds with `bench-release`: the release profile with
/// fat LTO and one codegen unit, see the workspace's Cargo.toml).
fn build_profile() -> String {
    let dir = std::env::current_exe().ok().and_then(|exe| {
        exe.parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    });
    let dir = dir.unwrap_or_else(|| "unknown".into());
    match (cfg!(debug_assertions), dir.as_str()) {
        (true, _) => format!("{dir} (debug assertions on: not a benchmark build)"),
        (false, "bench-release") => "bench-release (release, fat LTO, codegen-units = 1)".into(),
        (false, _) => format!("{dir} (optimized)"),
    }
}

/// Per-key Sign RSA-2048 medians split in two: keys that sign in under twice the
/// fastest key's time, and the others.
struct KeyGroups {
    fast: Vec<f64>,
    slow: Vec<f64>,
}

impl KeyGroups {
    fn new(sorted: &[f64]) -> Self {
        let limit = sorted.first().copied().unwrap_or(0.0) * 2.0;
        let (fast, slow) = sorted.iter().partition(|&&t| t < limit);
        Self { fast, slow }
    }

    /// The median of a group, if it has keys.
    fn median(group: &[f64]) -> Option<f64> {
        (!group.is_empty()).then(|| group[group.len() / 2])
    }

    fn describe(&self) -> String {
        let show = |g: &[f64]| Self::median(g).map_or("-".into(), |m| format!("{m:.0}"));
        format!(
            "{:>2} fast keys, median {:>6}; {:>2} slow keys, median {:>6}",
            self.fast.len(),
            show(&self.fast),
            self.slow.len(),
            show(&self.slow)
        )
    }
}

/// The commands measured, in order.
const COMMANDS: [&str; 8] = [
    "GetRandom(32)",
    "PCR_Extend",
    "PCR_Read",
    "CreatePrimary ECC P-256",
    "Sign RSA-2048",
    "Sign ECC P-256",
    "Quote (RSA-2048)",
    "FlushContext",
];

/// Latency samples of each of [`COMMANDS`] on each path: `[path][command][sample]`. The paths share one TPM
/// (or are one), so keys are made once through the first; samples alternate between
/// the paths so that both see the same machine load.
fn measure(paths: &mut [&mut dyn Path], scale: usize) -> Result<Vec<Vec<Vec<Duration>>>> {
    let first = &mut *paths[0];
    let ecc = tpm::parse_create_primary(&ok(
        first,
        tpm::create_primary(RH_OWNER, &ecc_signing_template()),
    )?)
    .context("ECC key")?
    .handle;
    let rsa = tpm::parse_create_primary(&ok(
        first,
        tpm::create_primary(RH_OWNER, &rsa_signing_template()),
    )?)
    .context("RSA key")?
    .handle;
    let (get_random, extend, read) = (get_random(), pcr_extend(), pcr_read());
    let mut samples_by_path = vec![Vec::new(); paths.len()];
    let plain: [(&[u8], usize); 3] = [(&get_random, 2000), (&extend, 2000), (&read, 2000)];
    for (index, (command, n)) in plain.into_iter().enumerate() {
        for (i, m) in time(paths, index, command, n * scale)?
            .into_iter()
            .enumerate()
        {
            samples_by_path[i].push(m);
        }
    }
    // CreatePrimary and FlushContext alternate: each created key is flushed.
    let create = tpm::create_primary(RH_OWNER, &ecc_signing_template());
    let mut creates = vec![Vec::new(); paths.len()];
    let mut flushes = vec![Vec::new(); paths.len()];
    for round in 0..200 * scale {
        for i in order(round, paths.len()) {
            let path = &mut *paths[i];
            path.sampling(Some(3));
            let mut c = create.clone();
            let (rc, t) = path.run(&mut c)?;
            if rc != 0 {
                bail!("CreatePrimary failed with {rc:#x}");
            }
            creates[i].push(t);
            let handle = tpm::parse_create_primary(path.response())
                .context("CreatePrimary response")?
                .handle;
            path.sampling(Some(7));
            let (rc, t) = path.run(&mut tpm::flush_context(handle))?;
            path.sampling(None);
            if rc != 0 {
                bail!("FlushContext failed with {rc:#x}");
            }
            flushes[i].push(t);
        }
    }
    for (i, samples) in creates.into_iter().enumerate() {
        samples_by_path[i].push(samples);
    }
    let signed: [(Vec<u8>, usize); 3] = [
        (sign(rsa, 0x0014), 200),
        (sign(ecc, 0x0018), 300),
        (quote(rsa), 200),
    ];
    for (index, (command, n)) in (4..).zip(signed) {
        for (i, m) in time(paths, index, &command, n * scale)?
            .into_iter()
            .enumerate()
        {
            samples_by_path[i].push(m);
        }
    }
    for (i, samples) in flushes.into_iter().enumerate() {
        samples_by_path[i].push(samples);
    }
    ok(&mut *paths[0], tpm::flush_context(ecc))?;
    ok(&mut *paths[0], tpm::flush_context(rsa))?;
    Ok(samples_by_path)
}

/// The order in which round `round` runs the `n` paths: forwards in even rounds,
/// backwards in odd ones, so that no path always runs in the other's wake (with the
/// caches and predictors as the other left them).
fn order(round: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| if round % 2 == 0 { k } else { n - 1 - k })
}

/// The median of `samples`, in µs.
fn median(samples: &[Duration]) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    median_f64(&mut v)
}

fn median_f64(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `n` latency samples of `command` (number `index` of [`COMMANDS`]) on each path,
/// alternating.
fn time(
    paths: &mut [&mut dyn Path],
    index: usize,
    command: &[u8],
    n: usize,
) -> Result<Vec<Vec<Duration>>> {
    let cc = Header::parse(command).map_or(0, |h| h.code);
    let mut buf = command.to_vec();
    // Warm up, and let the engine run its self-test of an algorithm on first use
    // (answered with TPM_RC_RETRY, which a TSS retries).
    for path in paths.iter_mut() {
        for _ in 0..5 {
            buf.copy_from_slice(command);
            let (rc, _) = path.run(&mut buf)?;
            if rc != 0 && rc != RC_RETRY {
                bail!("command {cc:#x} failed with {rc:#x}");
            }
        }
    }
    let mut samples = vec![Vec::with_capacity(n); paths.len()];
    for path in paths.iter_mut() {
        path.sampling(Some(index));
    }
    for round in 0..n {
        for i in order(round, paths.len()) {
            let path = &mut *paths[i];
            buf.copy_from_slice(command);
            let (rc, t) = path.run(&mut buf)?;
            if rc != 0 {
                bail!("benchmarked command {cc:#x} failed with {rc:#x}");
            }
            samples[i].push(t);
        }
    }
    for path in paths.iter_mut() {
        path.sampling(None);
    }
    Ok(samples)
}

/// What runs before each probe of [`probe`].
const PROBES: [&str; 9] = [
    "a GetRandom(32) on (a)",
    "a Sign RSA-2048 on (a)",
    "32 MiB of memory traffic (no TPM work)",
    "1 MiB of traffic, 4 times (caches, 256 pages)",
    "one line in each of 4096 pages (TLBs, 4096 lines)",
    "0.1 ms of spinning on the clock (no memory traffic)",
    "0.5 ms of spinning on the clock",
    "1 ms of spinning on the clock",
    "3 ms of spinning on the clock",
];

/// How long each spinning probe of [`PROBES`] spins, in µs (the probes from index 5).
const SPINS_US: [u64; 4] = [100, 500, 1000, 3000];

/// Where the SVSM path's cost after a heavy command comes from: the time outside the
/// engine of the same cheap command (GetRandom) through (b), `n` times after each of
/// [`PROBES`], round-robin. If it rises after an RSA sign as much as after memory
/// traffic that runs no TPM code at all, the extra cost is the state the path finds its
/// caches and TLBs in, not work the path does for heavy commands. The last two tell the
/// two apart: 1 MiB swept four times evicts the data and code caches but touches only
/// 256 pages; one line in each of 4096 pages evicts the TLBs (and the page-walk caches)
/// while filling only the few cache sets that page offset 0 maps to. The last four
/// touch no memory at all: they show what the machine itself (the kernel, the host,
/// other tenants) does to the caches and TLBs while time passes, up to as long as an RSA
/// sign takes.
fn probe(direct: &mut Direct<'_>, svsm: &mut Svsm<'_>, n: usize) -> Result<[f64; 9]> {
    let rsa = tpm::parse_create_primary(&ok(
        direct,
        tpm::create_primary(RH_OWNER, &rsa_signing_template()),
    )?)
    .context("RSA key")?
    .handle;
    let sign = sign(rsa, 0x0014);
    let random = get_random();
    let mut traffic = vec![0u8; 32 << 20];
    for round in 0..n + 5 {
        for (i, _) in PROBES.iter().enumerate() {
            match i {
                0 => {
                    ok(direct, random.clone())?;
                }
                1 => {
                    ok(direct, sign.clone())?;
                }
                2 => touch(&mut traffic, 64, 1),
                3 => touch(&mut traffic[..1 << 20], 64, 4),
                4 => touch(&mut traffic[..4096 * 4096], 4096, 1),
                _ => {
                    let spin = Duration::from_micros(SPINS_US[i - 5]);
                    let start = Instant::now();
                    while start.elapsed() < spin {
                        std::hint::spin_loop();
                    }
                }
            }
            // The first rounds are a warm-up.
            svsm.sampling((round >= 5).then_some(COMMANDS.len() + i));
            let (rc, _) = svsm.run(&mut random.clone())?;
            svsm.sampling(None);
            if rc != 0 {
                bail!("GetRandom failed with {rc:#x}");
            }
        }
    }
    ok(direct, tpm::flush_context(rsa))?;
    let cost = |i: usize| median(&svsm.outside[COMMANDS.len() + i]);
    Ok(std::array::from_fn(cost))
}

/// Writes the first byte of every `stride` bytes of `memory`, `times` times over.
fn touch(memory: &mut [u8], stride: usize, times: usize) {
    for _ in 0..times {
        for chunk in memory.chunks_mut(stride) {
            chunk[0] = chunk[0].wrapping_add(1);
        }
    }
    std::hint::black_box(memory);
}

/// A free TCP port on loopback.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// swtpm in socket mode with a scratch state directory; killed on drop.
struct SwtpmProcess {
    child: Child,
    dir: PathBuf,
}

impl Drop for SwtpmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `swtpm` command: this machine's, or (`root`) the one in a Debian root, run with
/// `chroot`; with the state directory to create (on this side) and the one to name to
/// swtpm (as it sees it).
fn swtpm_command(root: Option<&FsPath>, name: &str) -> (Command, PathBuf, PathBuf) {
    let scratch = format!("vtpm-bench-{name}-{}", std::process::id());
    match root {
        None => {
            let dir = std::env::temp_dir().join(scratch);
            (Command::new("swtpm"), dir.clone(), dir)
        }
        Some(root) => {
            let mut cmd = Command::new("chroot");
            cmd.arg(root).arg("swtpm");
            (
                cmd,
                root.join("tmp").join(&scratch),
                PathBuf::from("/tmp").join(scratch),
            )
        }
    }
}

/// `swtpm --version`'s first line.
fn swtpm_version(root: Option<&FsPath>) -> String {
    let (mut cmd, _, _) = swtpm_command(root, "version");
    cmd.arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                // "TPM emulator version 0.10.2, Copyright (c) ...": the version.
                .and_then(|l| l.split(',').next())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "version unknown".into())
}

/// Starts swtpm (this machine's, or the one in `root`) with the same options either way,
/// and libtpms's `profile` when given (swtpm 0.10; without one, libtpms 0.10 runs a new
/// state with its "null" profile, 0.9's).
fn start_swtpm(root: Option<&FsPath>, profile: Option<&str>) -> Result<(SwtpmProcess, Swtpm)> {
    // Each swtpm its own state directory: several run at once.
    let name = format!(
        "swtpm-{}-{}",
        if root.is_some() { "root" } else { "host" },
        profile.unwrap_or("no-profile")
    );
    let (mut cmd, dir, seen_as) = swtpm_command(root, &name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (port, ctrl) = (free_port()?, free_port()?);
    cmd.args(["socket", "--tpm2"]);
    if let Some(name) = profile {
        cmd.args(["--profile", &format!("name={name}")]);
    }
    let child = cmd
        .args(["--server", &format!("type=tcp,port={port}")])
        .args(["--ctrl", &format!("type=tcp,port={ctrl}")])
        .args(["--flags", "not-need-init,startup-clear"])
        .args(["--tpmstate", &format!("dir={}", seen_as.display())])
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| match root {
            None => "cannot run swtpm (install the swtpm package)".to_string(),
            Some(r) => format!("cannot run chroot {} swtpm", r.display()),
        })?;
    let process = SwtpmProcess { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => bail!("swtpm did not listen on port {port}: {e}"),
        }
    };
    stream.set_nodelay(true)?;
    Ok((
        process,
        Swtpm {
            stream,
            buffer: Vec::new(),
        },
    ))
}

/// OpenSSL's raw sign time (µs) for RSA-2048 and ECDSA P-256, from `openssl speed`.
fn openssl_sign_times() -> Result<(f64, f64)> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "2", "-mr", "rsa2048", "ecdsap256"])
        .stderr(Stdio::null())
        .output()
        .context("cannot run openssl (install the openssl package)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rsa = None;
    let mut ecdsa = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        // +F2:<n>:<bits>:<sign/s>:<verify/s> (RSA); +F4 the same for ECDSA.
        if f.len() >= 5 {
            let per_sec: f64 = f[3].parse().unwrap_or(0.0);
            if per_sec > 0.0 {
                match (f[0], f[2]) {
                    ("+F2", "2048") => rsa = Some(1e6 / per_sec),
                    ("+F4", "256") => ecdsa = Some(1e6 / per_sec),
                    _ => {}
                }
            }
        }
    }
    match (rsa, ecdsa) {
        (Some(r), Some(e)) => Ok((r, e)),
        _ => bail!("cannot read openssl speed's output:\n{text}"),
    }
}

/// One SVSM on the emulated machine whose vTPM runs the timed libtpms engine.
fn new_backend() -> Result<Backend> {
    Backend::with_service(Box::new(|| {
        let inner = LibTpms::power_on(Box::new(OsEntropy))
            .map_err(|e| BackendError::Transport(e.to_string()))?;
        Service::start(Timed {
            inner,
            last: Duration::ZERO,
        })
        .map_err(|e| BackendError::Transport(e.to_string()))
    }))
    .context("cannot start the SVSM on the emulated machine")
}

/// `vtpm-bench --count <command> <n>`: runs `n` of one command through (b) only and
/// prints nothing; made for an instruction count of the SVSM path, e.g.
/// `valgrind --tool=callgrind --toggle-collect='*count_loop*' vtpm-bench --count sign-rsa 20`
/// then (inclusive) `count_loop` minus `TPMLIB_Process`, divided by `n`.
fn count(which: &str, n: &str) -> Result<()> {
    let n: usize = n
        .parse()
        .with_context(|| format!("--count: {n:?} is not a number of commands"))?;
    let backend = RefCell::new(new_backend()?);
    let mut svsm = Svsm {
        backend: &backend,
        response: Vec::new(),
        sampling: None,
        outside: Vec::new(),
    };
    let key = |path: &mut Svsm<'_>, template: Vec<u8>| -> Result<u32> {
        Ok(
            tpm::parse_create_primary(&ok(path, tpm::create_primary(RH_OWNER, &template))?)
                .context("CreatePrimary response")?
                .handle,
        )
    };
    let command = match which {
        "get-random" => get_random(),
        "pcr-extend" => pcr_extend(),
        "pcr-read" => pcr_read(),
        "sign-ecc" => sign(key(&mut svsm, ecc_signing_template())?, 0x0018),
        "sign-rsa" => sign(key(&mut svsm, rsa_signing_template())?, 0x0014),
        "quote" => quote(key(&mut svsm, rsa_signing_template())?),
        _ => bail!(
            "--count: unknown command {which:?} (get-random, pcr-extend, pcr-read, sign-ecc, \
             sign-rsa, quote)"
        ),
    };
    // Warm-up, as in the timed runs (a first use may answer TPM_RC_RETRY).
    for _ in 0..5 {
        svsm.run(&mut command.clone())?;
    }
    count_loop(&backend, &command, n)
}

/// The counted part of [`count`]: `n` round trips through the SVSM path.
#[inline(never)]
fn count_loop(backend: &RefCell<Backend>, command: &[u8], n: usize) -> Result<()> {
    let mut backend = backend.borrow_mut();
    let mut response = Vec::new();
    for _ in 0..n {
        svsm_round_trip(&mut backend, command, &mut response)?;
        let rc = code(&response)?;
        if rc != 0 {
            bail!("the counted command failed with {rc:#x}");
        }
    }
    Ok(())
}

/// Per-command latency of the vTPM: engine, SVSM path, swtpm (bookworm's and forky's).
#[derive(Debug, Parser)]
struct Args {
    /// Only run N of one command through (b), printing nothing (for callgrind):
    /// get-random, pcr-extend, pcr-read, sign-ecc, sign-rsa or quote.
    #[arg(long, num_args = 2, value_names = ["COMMAND", "N"])]
    count: Option<Vec<String>>,
    /// A Debian forky root holding swtpm 0.10.x: column (d) runs `chroot <root> swtpm`.
    #[arg(long, value_name = "DIR")]
    forky_root: Option<PathBuf>,
    /// Why there is no forky root (printed in place of column (d)).
    #[arg(long, value_name = "REASON", conflicts_with = "forky_root")]
    forky_skipped: Option<String>,
    /// Only measure what the persistent state costs.
    #[arg(long)]
    persistence_only: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some([which, n]) = args.count.as_deref() {
        return count(which, n);
    }
    if args.persistence_only {
        return persistence_costs();
    }
    let scale = std::env::var("VTPM_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1usize)
        .max(1);

    // (c) this machine's swtpm; (d) forky's, with the engine's profile (the one (a)
    // runs), and again without a profile (libtpms's "null" profile, which a swtpm 0.10
    // started without --profile on a new state runs). Started first, so that the
    // per-key Sign RSA-2048 runs on every TPM in the same rounds.
    let c_version = swtpm_version(None);
    let mut c_tpm = start_swtpm(None, None)?;
    let mut forky = match (&args.forky_root, &args.forky_skipped) {
        (Some(root), _) => Ok((
            swtpm_version(Some(root)),
            start_swtpm(Some(root), Some(vtpm::libtpms::PROFILE))?,
            start_swtpm(Some(root), None)?,
        )),
        (None, Some(why)) => Err(why.clone()),
        (None, None) => Err("no --forky-root given (`cargo xtask bench` builds one)".to_string()),
    };

    // (a) and (b): one SVSM on the emulated machine; its engine is measured directly
    // and through the whole SVSM path, alternately.
    let (a, b, outside_a, outside_b, probe, mut keys) = {
        let backend = RefCell::new(new_backend()?);
        let mut direct = Direct {
            backend: &backend,
            response: Vec::new(),
            sampling: None,
            outside: vec![Vec::new(); COMMANDS.len()],
        };
        let mut svsm = Svsm {
            backend: &backend,
            response: Vec::new(),
            sampling: None,
            outside: vec![Vec::new(); COMMANDS.len() + PROBES.len()],
        };
        let mut m = measure(&mut [&mut svsm, &mut direct], scale)?;
        let a = m.pop().context("direct samples")?;
        let b = m.pop().context("SVSM samples")?;
        let probe = probe(&mut direct, &mut svsm, 200 * scale)?;
        let mut paths: Vec<&mut dyn Path> = vec![&mut direct, &mut c_tpm.1];
        if let Ok((_, d, null)) = &mut forky {
            paths.push(&mut d.1);
            paths.push(&mut null.1);
        }
        let keys = sign_rsa_per_key(&mut paths)?;
        (a, b, direct.outside, svsm.outside, probe, keys)
    };

    // The swtpms over their TCP data channel, with the same commands, one at a time.
    let swtpm = |path: &mut Swtpm| -> Result<Vec<f64>> {
        let samples = measure(&mut [path], scale)?
            .pop()
            .context("swtpm samples")?;
        Ok(samples.iter().map(|s| median(s)).collect())
    };
    let c = swtpm(&mut c_tpm.1)?;
    drop(c_tpm);
    let mut keys = keys.drain(..);
    let (a_keys, c_keys) = (
        keys.next().context("per-key (a)")?,
        keys.next().context("per-key (c)")?,
    );
    let d = match forky {
        Ok((version, mut d_tpm, mut null_tpm)) => {
            let d = swtpm(&mut d_tpm.1)?;
            drop(d_tpm);
            let null = swtpm(&mut null_tpm.1)?;
            let d_keys = keys.next().context("per-key (d)")?;
            let null_keys = keys.next().context("per-key (d) null")?;
            Ok((version, d, null, d_keys, null_keys))
        }
        Err(why) => Err(why),
    };

    let (openssl_rsa, openssl_ecdsa) = openssl_sign_times()?;

    // The overhead of (b) over (a). Both run the same engine instance, so (b)'s time
    // minus (a)'s is the SVSM path, plus the engine's run-to-run noise, which for a
    // command of milliseconds is far larger than the path. Each sample of either path
    // therefore also records its time outside the engine (the whole minus the engine's
    // own time in it); the overhead is the median, over the rounds, of (b)'s time
    // outside the engine minus (a)'s in the same round: the time the SVSM path adds,
    // with no engine time in it. The plain differences are printed beside it.
    let paired = |x: &[Vec<Duration>], y: &[Vec<Duration>]| -> Vec<f64> {
        x.iter()
            .zip(y)
            .map(|(x, y)| {
                let mut d: Vec<f64> = x
                    .iter()
                    .zip(y)
                    .map(|(x, y)| (y.as_secs_f64() - x.as_secs_f64()) * 1e6)
                    .collect();
                median_f64(&mut d)
            })
            .collect()
    };
    let overhead = paired(&outside_a, &outside_b[..COMMANDS.len()]);
    let paired_whole = paired(&a, &b);
    let medians = |v: &[Vec<Duration>]| -> Vec<f64> { v.iter().map(|s| median(s)).collect() };
    let (out_a, out_b) = (medians(&outside_a), medians(&outside_b[..COMMANDS.len()]));
    let (a, b) = (medians(&a), medians(&b));

    println!(
        "vTPM per-command latency, medians in microseconds (build profile: {})",
        build_profile()
    );
    println!(
        "Method: (a) is the libtpms engine called directly (TPMLIB_Process, no service, no \
         SVSM) by an in-process client\n  that copies the response into its buffer; (b) is \
         the whole SVSM path on the emulated machine, on the same engine instance:\n  guest \
         driver, calling area, SVSM_VTPM_CMD, request loop, vTPM service, engine and back, \
         the response copied into\n  the same kind of client buffer; (c) is swtpm over its \
         socket with the same client. The engine runs inside a stopwatch\n  (two clock reads) \
         on both (a) and (b). Each round runs a command once on (a) and once on (b), \
         alternating\n  which goes first; both get the same warm-up (5 runs). overhead = \
         median over the rounds of (b)'s time outside\n  the engine minus (a)'s in the same \
         round: what the SVSM path adds, free of the engine's run-to-run noise.\n  (c) and \
         (d) run the same commands, rounds and warm-up, one swtpm at a time, each with a \
         fresh state directory.\n  Sign RSA-2048 and Quote use one RSA key per TPM, whose \
         sign time depends on the key (see the per-key figures after the table)."
    );
    println!(
        "  (a), (b): {}",
        vtpm::ENGINE.lines().collect::<Vec<_>>().join("; ")
    );
    println!("  (c) bookworm's swtpm: {c_version}");
    match &d {
        Ok((version, ..)) => println!(
            "  (d) forky's swtpm (chroot into the forky root): {version}, --profile \
             name={}, the engine's; \"(d) null\": the same swtpm without --profile",
            vtpm::libtpms::PROFILE
        ),
        Err(why) => println!("  (d) forky's swtpm: skipped: {why}"),
    }
    println!(
        "{:<24} {:>10} {:>10} {:>9} {:>7} {:>10} {:>7} {:>10} {:>7} {:>10}",
        "command",
        "(a) engine",
        "(b) SVSM",
        "overhead",
        "(b)/(a)",
        "(c) swtpm",
        "(c)/(a)",
        "(d) swtpm",
        "(a)/(d)",
        "(d) null"
    );
    for (i, name) in COMMANDS.iter().enumerate() {
        let (d_median, a_over_d, d_null) = match &d {
            Ok((_, d, null, ..)) => (
                format!("{:.2}", d[i]),
                format!("{:.3}", a[i] / d[i]),
                format!("{:.2}", null[i]),
            ),
            Err(_) => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<24} {:>10.2} {:>10.2} {:>9.2} {:>7.3} {:>10.2} {:>7.3} {:>10} {:>7} {:>10}",
            name,
            a[i],
            b[i],
            overhead[i],
            b[i] / a[i],
            c[i],
            c[i] / a[i],
            d_median,
            a_over_d,
            d_null
        );
    }
    let mut sorted = overhead.clone();
    let worst = sorted.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "Overhead of (b) over (a): median over the commands {:.2} µs; worst command {:.2} µs",
        median_f64(&mut sorted),
        worst
    );
    println!(
        "Beside it (µs): time outside the engine on (a) and on (b), the difference of the \
         whole medians, and the median\n  of the paired whole differences (both carry the \
         engine's noise):"
    );
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>10}",
        "command", "(a) out", "(b) out", "(b)-(a)", "paired"
    );
    for (i, name) in COMMANDS.iter().enumerate() {
        println!(
            "{:<24} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            name,
            out_a[i],
            out_b[i],
            b[i] - a[i],
            paired_whole[i]
        );
    }
    println!(
        "Time outside the engine of GetRandom(32) through (b) (median µs), depending on \
         what ran just before it:"
    );
    for (name, cost) in PROBES.iter().zip(probe) {
        println!("  {name:<48} {cost:>6.2}");
    }
    println!("Sign against OpenSSL's raw sign (`openssl speed`), each path's time over it:");
    for (label, index, raw) in [
        ("RSA-2048:   ", 4, openssl_rsa),
        ("ECDSA P-256:", 5, openssl_ecdsa),
    ] {
        let forky = match &d {
            Ok((_, d, null, ..)) => format!(
                ", (d) {:.2} µs ({:.2}x), (d) null {:.2} µs ({:.2}x)",
                d[index],
                d[index] / raw,
                null[index],
                null[index] / raw
            ),
            Err(_) => String::new(),
        };
        println!(
            "  {label} openssl {raw:.2} µs, (a) engine {:.2} µs ({:.2}x), (b) SVSM path {:.2} µs \
             ({:.2}x), (c) {:.2} µs ({:.2}x){forky}",
            a[index],
            a[index] / raw,
            b[index],
            b[index] / raw,
            c[index],
            c[index] / raw
        );
    }
    match &d {
        Ok((_, d, ..)) => println!(
            "Sign RSA-2048, (a) engine over (d) forky's swtpm, one key each (the table): \
             {:.3}",
            a[4] / d[4]
        ),
        Err(_) => println!("Sign RSA-2048, (a) over (d): no column (d)"),
    }
    println!(
        "Sign RSA-2048 with {RSA_KEYS} different keys per TPM (primary keys whose templates \
         differ only in unique): each key's median\n  of {SIGNS_PER_KEY} signs (µs), keys \
         under twice the fastest key's time counted as fast:"
    );
    let mut rows: Vec<(&str, &Vec<f64>)> = vec![("(a) engine", &a_keys), ("(c) swtpm", &c_keys)];
    if let Ok((_, _, _, d_keys, null_keys)) = &d {
        rows.push(("(d) swtpm", d_keys));
        rows.push(("(d) null", null_keys));
    }
    for (label, keys) in &rows {
        let list: Vec<String> = keys.iter().map(|t| format!("{t:.0}")).collect();
        println!("  {label:<10} {}", KeyGroups::new(keys).describe());
        println!("  {:<10} [{}]", "", list.join(" "));
    }
    if let Ok((_, _, _, d_keys, _)) = &d {
        let (ga, gd) = (KeyGroups::new(&a_keys), KeyGroups::new(d_keys));
        let ratio = |x: &[f64], y: &[f64]| match (KeyGroups::median(x), KeyGroups::median(y)) {
            (Some(x), Some(y)) => format!("{:.3}", x / y),
            _ => "-".into(),
        };
        println!(
            "Sign RSA-2048, (a) engine over (d) forky's swtpm, key for key's kind: fast keys \
             {}, slow keys {} (issue 14's target: at most 1.15)",
            ratio(&ga.fast, &gd.fast),
            ratio(&ga.slow, &gd.slow)
        );
    }
    persistence_costs()?;
    Ok(())
}

/// What the persistent state costs: an NV-changing command (an 8-byte TPM2_NV_Write)
/// without a state store and with the state sealed into a file (AES-256-GCM, temporary
/// file, fsync, rename, directory fsync; the key from the emulated PSP's MSG_KEY_REQ,
/// derived once), the restore at power-on (unseal, libtpms' load, start-up), and the
/// sealed blob's size.
fn persistence_costs() -> Result<()> {
    use svsm::psp::state_key::PspKeySource;
    use svsm::psp::GuestMessenger;
    use svsm_emulated::psp::EmulatedPsp;
    use vtpm::state::SealedStore;
    use vtpm_daemon::state_file::StateFile;

    const WRITES: usize = 40;
    const RESTORES: usize = 8;
    let dir = std::env::temp_dir().join(format!("vtpm-bench-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("vtpm.state");
    let store = || -> Result<Box<dyn vtpm::state::StateStore>> {
        let psp = EmulatedPsp::default();
        let messenger = GuestMessenger::new(psp.vmpck0(), psp.seqno());
        let keys = PspKeySource::new(psp, messenger, Box::new(OsEntropy))
            .map_err(|e| anyhow::anyhow!("state key: {e:?}"))?;
        Ok(Box::new(SealedStore::new(StateFile::new(&path), keys)))
    };
    let index = 0x0150_0042;
    let nv_writes = |service: &mut Service<LibTpms>| -> Result<Vec<Duration>> {
        let public = CommandBuilder::new(0, 0)
            .u32(index)
            .u16(ALG_SHA256)
            .u32(0x0202_0002) // OWNERWRITE | OWNERREAD | NO_DA
            .u16(0)
            .u16(8)
            .build()[10..]
            .to_vec();
        let define = CommandBuilder::new(tpm::ST_SESSIONS, 0x12A)
            .u32(RH_OWNER)
            .password_auth()
            .u16(0)
            .sized(&public)
            .build();
        run_ok(service, define)?;
        let mut times = Vec::with_capacity(WRITES);
        for i in 0..WRITES as u64 {
            let write = CommandBuilder::new(tpm::ST_SESSIONS, 0x137)
                .u32(RH_OWNER)
                .u32(index)
                .password_auth()
                .sized(&i.to_be_bytes())
                .u16(0)
                .build();
            let start = Instant::now();
            run_ok(service, write)?;
            times.push(start.elapsed());
        }
        Ok(times)
    };
    let plain = {
        let mut service = vtpm::start(Box::new(OsEntropy)).map_err(|e| anyhow::anyhow!("{e}"))?;
        nv_writes(&mut service)?
    };
    let sealed = {
        let mut service = vtpm::start_with_state(Box::new(OsEntropy), store()?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        nv_writes(&mut service)?
    };
    let size = std::fs::metadata(&path)?.len();
    let mut restores = Vec::with_capacity(RESTORES);
    for _ in 0..RESTORES {
        let store = store()?;
        let start = Instant::now();
        let service = vtpm::start_with_state(Box::new(OsEntropy), store)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        restores.push(start.elapsed());
        drop(service);
    }
    let mut fresh = Vec::with_capacity(RESTORES);
    for _ in 0..RESTORES {
        let start = Instant::now();
        let service = vtpm::start(Box::new(OsEntropy)).map_err(|e| anyhow::anyhow!("{e}"))?;
        fresh.push(start.elapsed());
        drop(service);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "Persistent state (medians, µs; {WRITES} writes, {RESTORES} starts; file in {}):",
        std::env::temp_dir().display()
    );
    println!(
        "  TPM2_NV_Write, 8 bytes: {:.0} without a store, {:.0} sealed into the file ({:.0} for \
         sealing and storing each commit of the whole state)",
        median(&plain),
        median(&sealed),
        median(&sealed) - median(&plain)
    );
    println!(
        "  start-up: {:.0} restoring the sealed state, {:.0} manufacturing a new TPM",
        median(&restores),
        median(&fresh)
    );
    println!("  sealed state: {size} bytes (64-byte header, 16-byte tag)");
    Ok(())
}

/// Runs `command` through the service; requires TPM_RC_SUCCESS.
fn run_ok(service: &mut Service<LibTpms>, mut command: Vec<u8>) -> Result<()> {
    let mut response = vec![0u8; vtpm::service::MAX_RESPONSE_SIZE];
    let n = service
        .execute(0, &mut command, &mut response)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rc = code(&response[..n])?;
    if rc != 0 {
        bail!("TPM error {rc:#x}");
    }
    Ok(())
}
