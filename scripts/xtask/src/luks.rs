//! The Linux-guest level's secret release: the guest's disk is a LUKS2 volume with
//! dm-integrity, and its key reaches the guest only through the verification service
//! after attestation.
//!
//! The host has no device-mapper, so a provisioning boot of the guest formats the blank
//! virtio disk (`cryptsetup luksFormat --integrity hmac-sha256`) with a key the host
//! passes in fw_cfg, writes the known file and prints the event log; the host keeps the
//! key only as the service's secret. The service (`svsm-service`, HTTPS with a CA made
//! for the run) gets a policy of the SNP launch measurement of the IGVM file an operator
//! deploys (`svsm-igvm measure target/svsm-ovmf.igvm`, which the daemon's emulated PSP
//! reports for the machine that serves the guest's vTPM), the emulated machine's test
//! chain and TCB, and the measured-boot policy `svsm-verify policy learn` makes from the provisioning
//! boot's log, with the kernel's, the initrd's and the unlock command line's references
//! computed. Then, all under forky's OVMF (the build the IGVM file carries):
//!
//! - unlock: `svsm-agent` attests, activates the credential, opens the volume and reads
//!   the known file, whose content the host checks;
//! - another kernel command line and another initrd: the service refuses (PCR 9), the
//!   agent prints the reason, the volume stays locked, and the service's log names the
//!   same reason;
//! - integrity: the host flips bytes of the known file's ciphertext in the image; the
//!   guest, given the key, gets EIO reading the file instead of changed data.

use std::collections::BTreeMap;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::hex;
use crate::linux::{self, Boot, Guest, Run};

/// The modules the flow loads, in order (busybox modprobe adds each one's dependencies
/// from modules.dep). hmac, sha256, aes and cbc are built into Debian's kernel.
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "qemu_fw_cfg",
    "dm_mod",
    "dm_crypt",
    "dm_integrity",
    // authenc(hmac(sha256),xts(aes)): dm-crypt's AEAD for --integrity hmac-sha256;
    // xts(aes) is built on ecb(aes).
    "authenc",
    "ecb",
    "xts",
    // ext4's metadata checksums.
    "crc32c_generic",
    "ext4",
];
/// Binaries of the flow, with their libraries (ldd).
const BINARIES: &[&str] = &[
    "/usr/sbin/cryptsetup",
    "/usr/sbin/mke2fs",
    "/usr/sbin/debugfs",
];
/// The tpm2-tools the agent runs beyond the level's.
pub const AGENT_TOOLS: &[&str] = &[
    "createak",
    "startauthsession",
    "policysecret",
    "activatecredential",
];
/// The blank disk's size: LUKS2's 16 MiB header, dm-integrity's journal and tags, and a
/// small ext4. Formatting with the integrity wipe takes about 4 s under TCG.
const DISK_SIZE: u64 = 64 << 20;
/// The service's name for the disk key (a file in its secrets directory).
const SECRET_NAME: &str = "disk-key";
/// How long the service may take to listen.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(60);
/// `/etc/svsm/variant` in the initrd the policy admits, and in another one (same length).
const GOOD_VARIANT: &str = "the initrd the policy admits\n";
const OTHER_VARIANT: &str = "another initrd, same length!\n";
/// The guest's name in the service's log.
const GUEST_NAME: &str = "linux-guest-ci";

fn luks_dir() -> PathBuf {
    linux::work_dir().join("luks")
}

/// The kernel release of `linux-image-<release>`.
fn kernel_release(package: &str) -> &str {
    package.trim_start_matches("linux-image-")
}

/// Takes [`MODULES`] and their dependencies (by the package's modules.dep, made with
/// depmod since the package ships none) out of the kernel package, once, into
/// `target/linux-guest/modules-<release>/`; removes the package afterwards.
pub fn fetch_modules(dir: &Path) -> Result<PathBuf> {
    let package = linux::kernel_package()?;
    let release = kernel_release(&package).to_string();
    let cache = dir.join(format!("modules-{release}"));
    let stamp = cache.join("modules.wanted");
    let wanted = MODULES.join("\n");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(cache);
    }
    let deb = linux::download_deb(dir, &package)?;
    let full = dir.join("modules-full.tmp");
    if full.exists() {
        fs::remove_dir_all(&full)?;
    }
    fs::create_dir_all(&full)?;
    println!(
        "linux-guest: taking the LUKS flow's modules out of {}",
        deb.display()
    );
    let tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let status = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&full)
        .arg(format!("./lib/modules/{release}"))
        .stdin(tar.stdout.context("no dpkg-deb output")?)
        .status()
        .context("cannot run tar")?;
    ensure!(
        status.success(),
        "cannot extract the modules from {}",
        deb.display()
    );
    depmod(&full, &release)?;
    let tree = full.join("lib/modules").join(&release);
    let dep = fs::read_to_string(tree.join("modules.dep"))?;
    let files = closure(&dep, MODULES)?;
    if cache.exists() {
        fs::remove_dir_all(&cache)?;
    }
    for file in files.iter().map(String::as_str).chain([
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ]) {
        let dest = cache.join(file);
        fs::create_dir_all(dest.parent().context("module path")?)?;
        fs::copy(tree.join(file), &dest)
            .with_context(|| format!("cannot copy {file} out of the kernel package"))?;
    }
    fs::write(&stamp, wanted)?;
    fs::remove_dir_all(&full)?;
    let _ = fs::remove_file(&deb);
    Ok(cache)
}

fn depmod(base: &Path, release: &str) -> Result<()> {
    let out = Command::new("depmod")
        .arg("-b")
        .arg(base)
        .arg(release)
        .output()
        .context("cannot run depmod (Debian package kmod)")?;
    ensure!(
        out.status.success(),
        "depmod -b {} failed: {}",
        base.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The module files (paths relative to the release's directory) that loading `wanted`
/// takes, by modules.dep (`path: dependency paths...`, each line the full set).
fn closure(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>> {
    let mut by_name = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let name = module_name(path);
        by_name.insert(
            name,
            (
                path.to_string(),
                deps.split_whitespace().collect::<Vec<_>>(),
            ),
        );
    }
    let mut files = Vec::new();
    for want in wanted {
        let (path, deps) = by_name.get(&want.replace('-', "_")).with_context(|| {
            format!("{want} is not a module of this kernel (built in, or absent from modules.dep)")
        })?;
        files.push(path.clone());
        files.extend(deps.iter().map(|d| d.to_string()));
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// A module's name from its path (`kernel/drivers/md/dm-crypt.ko` → `dm_crypt`).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))
        .unwrap_or(file);
    stem.replace('-', "_")
}

/// Builds `svsm-agent` static (glibc, crt-static) for the guest, in its own target
/// directory so host builds keep their flags; its path.
pub fn build_agent() -> Result<PathBuf> {
    println!("linux-guest: building svsm-agent (static, x86_64-unknown-linux-gnu)");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "-p",
            "svsm-agent",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        .status()
        .context("cannot run cargo build")?;
    ensure!(status.success(), "building svsm-agent failed ({status})");
    Ok(PathBuf::from(
        "target/x86_64-unknown-linux-gnu/release/svsm-agent",
    ))
}

/// The LUKS flow's initramfs: the level's tree, the modules, cryptsetup, mke2fs, debugfs,
/// the agent and the service's CA certificate, and `/etc/svsm/variant` holding `variant`.
fn build_initramfs(
    modules: &Path,
    agent: &Path,
    ca_pem: &Path,
    name: &str,
    variant: &str,
) -> Result<PathBuf> {
    let dir = luks_dir();
    let root = dir.join(format!("{name}.rootfs"));
    linux::build_rootfs(&root)?;
    let release = modules
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("modules-"))
        .context("the modules' directory is not modules-<release>")?;
    let dest = root.join("lib/modules").join(release);
    copy_tree(modules, &dest)?;
    let _ = fs::remove_file(dest.join("modules.wanted"));
    depmod(&root, release)?;
    fs::create_dir_all(root.join("etc/svsm"))?;
    fs::write(root.join("etc/svsm/modules"), MODULES.join("\n") + "\n")?;
    fs::copy(ca_pem, root.join("etc/svsm/ca.pem"))?;
    fs::write(root.join("etc/svsm/variant"), variant)?;
    let mut libs = Vec::new();
    for binary in BINARIES {
        let path = Path::new(binary);
        ensure!(
            path.exists(),
            "{binary} is missing: install Debian's cryptsetup-bin and e2fsprogs"
        );
        linux::copy_into(&root, path)?;
        libs.extend(linux::libraries(path)?);
    }
    libs.sort();
    libs.dedup();
    for lib in &libs {
        linux::copy_into(&root, lib)?;
    }
    for tool in AGENT_TOOLS {
        let link = root.join(format!("usr/bin/tpm2_{tool}"));
        if !link.exists() {
            std::os::unix::fs::symlink("tpm2", link)?;
        }
    }
    // The agent without its debug information (it is only loaded, never debugged here).
    let agent_dest = root.join("usr/bin/svsm-agent");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&agent_dest)
        .arg(agent)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(agent, &agent_dest)?;
    }
    linux::set_executable(&agent_dest)?;
    let initrd = dir.join(format!("{name}.cpio"));
    linux::cpio(&root, &initrd)?;
    fs::remove_dir_all(&root)?;
    Ok(initrd)
}

fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let to = dest.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else {
            fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// The run's TLS material: a CA and the service's certificate for 10.0.2.2 (the host's
/// loopback as the guest sees it) and 127.0.0.1, made with openssl.
#[derive(Debug)]
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Result<Pki> {
    let p = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| -> Result<()> {
        linux::output(Command::new("openssl").args(args))
            .map(|_| ())
            .context("openssl (Debian package openssl)")
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=svsm linux-guest test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
        "-subj",
        "/CN=svsm-service",
    ])?;
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:10.0.2.2,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("server.pem"),
        "-days",
        "2",
        "-extfile",
        &p("server.ext"),
    ])?;
    Ok(Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

/// The running service; killed when dropped.
#[derive(Debug)]
struct Service {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Builds the service and the verifier's CLI.
fn build_service() -> Result<()> {
    println!("linux-guest: building svsm-service and svsm-verify");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "-p",
            "svsm-service",
            "--bin",
            "svsm-service",
            "-p",
            "svsm-verifier",
            "--bin",
            "svsm-verify",
        ])
        .status()
        .context("cannot run cargo build")?;
    ensure!(
        status.success(),
        "building svsm-service and svsm-verify failed ({status})"
    );
    Ok(())
}

fn start_service(
    dir: &Path,
    pki: &Pki,
    policy: &Path,
    secrets: &Path,
    port: u16,
) -> Result<Service> {
    let log = dir.join("service.log");
    let out = fs::File::create(&log)?;
    let db = dir.join("service.db");
    let _ = fs::remove_file(&db);
    let child = Command::new("target/debug/svsm-service")
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .arg("--policy")
        .arg(policy)
        .arg("--secrets")
        .arg(secrets)
        .arg("--db")
        .arg(format!("sqlite:{}", db.display()))
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("cannot start target/debug/svsm-service")?;
    let mut service = Service { child, log, port };
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = service.child.try_wait() {
            bail!(
                "svsm-service exited ({status}) before listening: {}",
                service.log_text().trim()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "svsm-service did not listen on 127.0.0.1:{port} within {SERVICE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(service)
}

/// The service's policy: the IGVM file's launch measurement, the emulated machine's test
/// chain (left by the ek_evidence suite) and TCB, the learned measured-boot policy, the
/// disk key.
fn write_policy(dir: &Path, boot_policy: &Path, measurement: &str) -> Result<PathBuf> {
    let chain = test_chain()?;
    let boot: toml::Table = toml::from_str(&fs::read_to_string(boot_policy)?)
        .with_context(|| format!("{} is not TOML", boot_policy.display()))?;
    let mut snp = toml::Table::new();
    // The deployed IGVM file's launch measurement ([`launch_measurement`]).
    snp.insert(
        "measurements".into(),
        toml::Value::Array(vec![toml::Value::String(measurement.to_string())]),
    );
    // The emulated machine's TCB (svsm_emulated::psp::LaunchInfo): the minimum is required.
    snp.insert("min_tcb".into(), "bl=8,tee=0,snp=0,ucode=3".into());
    snp.insert(
        "ark".into(),
        toml::Value::String(chain.join("ark.pem").display().to_string()),
    );
    snp.insert(
        "ask".into(),
        toml::Value::String(chain.join("ask.pem").display().to_string()),
    );
    let mut release = toml::Table::new();
    release.insert("secret".into(), toml::Value::String(SECRET_NAME.into()));
    let mut policy = toml::Table::new();
    policy.insert("snp".into(), toml::Value::Table(snp));
    policy.insert("boot".into(), toml::Value::Table(boot));
    policy.insert("release".into(), toml::Value::Table(release));
    let path = dir.join("policy.toml");
    fs::write(&path, toml::to_string(&policy)?)?;
    Ok(path)
}

/// The test chain's directory (ARK, ASK) the ek_evidence suite leaves; the suite runs
/// first when it is missing (`cargo xtask run --linux-guest` on a fresh tree).
fn test_chain() -> Result<PathBuf> {
    let dir = PathBuf::from("target/tmp/ek-evidence");
    if !dir.join("ark.pem").exists() {
        println!(
            "linux-guest: running the ek_evidence suite for the emulated machine's test chain"
        );
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["test", "-p", "svsm-tests", "--test", "ek_evidence"])
            .status()
            .context("cannot run cargo test")?;
        ensure!(status.success(), "the ek_evidence suite failed ({status})");
    }
    fs::canonicalize(&dir).with_context(|| format!("{} is missing", dir.display()))
}

/// What the flow sets up once: the TLS material, the key, the known file, the initrds,
/// the provisioned disk and the service.
#[derive(Debug)]
struct Flow {
    firmware: String,
    pki: Pki,
    known: String,
    disk: PathBuf,
    initrd: PathBuf,
    other_initrd: PathBuf,
    cipher_head: Vec<u8>,
    /// The service's port, in every boot's command line.
    port: u16,
    service: Option<Service>,
    /// The SNP launch measurement the policy requires and the emulated PSP reports.
    measurement: String,
}

/// The launch measurement the service requires: `svsm-igvm measure` of the IGVM file an
/// operator deploys (target/svsm-ovmf.igvm, the SVSM with forky's OVMF, which
/// `cargo xtask test` packages before this level; built here if missing) for one vCPU of
/// the default model. The emulated machine that serves the guest's vTPM has no launch of
/// its own to measure, so its PSP reports this digest (`vtpm-daemon
/// --launch-measurement`): the policy is the one written for the real file.
fn launch_measurement() -> Result<String> {
    let igvm = Path::new("target/svsm-ovmf.igvm");
    if !igvm.exists() {
        crate::igvm::package()?;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = linux::output(
        Command::new(cargo)
            .args(["run", "-q", "--release", "-p", "svsm-igvm", "--", "measure"])
            .arg(igvm)
            .args(["--vcpus", "1"]),
    )?;
    let digest = out
        .lines()
        .map(str::trim)
        .rfind(|l| l.len() == 96 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("svsm-igvm measure printed no digest: {out}"))?;
    Ok(digest.to_string())
}

/// The kernel command line of the provisioning and the unlock boots.
fn unlock_cmdline(port: u16) -> String {
    format!(
        "console=ttyS0 quiet panic=-1 svsm.luks=1 svsm.service=https://10.0.2.2:{port} svsm.guest={GUEST_NAME}"
    )
}

/// Prints a boot's result lines and times.
fn show(label: &str, run: &Run) {
    println!("linux-guest: {label}: results");
    for (name, (status, detail)) in &run.results {
        if name == "eventlog-hex" {
            println!("  {name:<24} {status} ({} hex digits)", detail.len());
        } else {
            println!("  {name:<24} {status} {detail}");
        }
    }
    println!(
        "linux-guest: {label}: QEMU start to /init {:.1} s, to done {:.1} s, QEMU exit {:.1} s",
        run.to_init.as_secs_f64(),
        run.to_done.as_secs_f64(),
        run.total.as_secs_f64()
    );
}

/// Every named line must be `ok`; each missing or failed one is a message.
fn require_ok(run: &Run, names: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for name in names {
        match run.results.get(*name) {
            None => failures.push(format!("{name}: no result line")),
            Some((status, detail)) if status != "ok" => {
                failures.push(format!("{name}: {status} {detail}"))
            }
            Some(_) => {}
        }
    }
    failures
}

fn verdict(label: &str, run: &Run, failures: Vec<String>) -> Result<()> {
    if failures.is_empty() {
        println!("linux-guest: {label}: every check passed");
        return Ok(());
    }
    bail!(
        "linux-guest: {label}: {} check(s) failed (serial log: {}):\n  {}",
        failures.len(),
        run.serial_log.display(),
        failures.join("\n  ")
    )
}

impl Flow {
    /// The TLS material, the key, the known file's content, the initrds, the blank disk;
    /// then the provisioning boot.
    fn provision(guest: &Guest) -> Result<(Self, Vec<u8>)> {
        let dir = luks_dir();
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let firmware = crate::igvm::debian_ovmf("forky")?.display().to_string();
        let measurement = launch_measurement()?;
        println!(
            "linux-guest: SNP launch measurement of target/svsm-ovmf.igvm (1 vCPU): {measurement}"
        );
        let modules = fetch_modules(&linux::work_dir())?;
        let agent = build_agent()?;
        let pki = make_pki(&dir)?;
        let initrd = build_initramfs(&modules, &agent, &pki.ca, "initramfs-luks", GOOD_VARIANT)?;
        // Another initrd of the same size: QEMU writes the initrd's size into the
        // kernel's setup header, which OVMF measures with the kernel (PCR 4), so one of
        // another size is refused there already; this one differs only in its content,
        // which only the EFI stub's initrd measurement (PCR 9) sees.
        let other_initrd = build_initramfs(
            &modules,
            &agent,
            &pki.ca,
            "initramfs-luks-other",
            OTHER_VARIANT,
        )?;
        ensure!(
            fs::metadata(&initrd)?.len() == fs::metadata(&other_initrd)?.len(),
            "the two initrds differ in size"
        );
        let mut random = [0u8; 48];
        getrandom::getrandom(&mut random)
            .map_err(|e| anyhow::anyhow!("no randomness for the disk key: {e}"))?;
        let secrets = dir.join("secrets");
        fs::create_dir_all(&secrets)?;
        let key = secrets.join(SECRET_NAME);
        fs::write(&key, &random[..32])?;
        let known = format!("svsm-linux-guest-known-file-{}", hex(&random[32..]));
        let known_file = dir.join("known.txt");
        fs::write(&known_file, &known)?;
        let disk = dir.join("disk.img");
        fs::File::create(&disk)?.set_len(DISK_SIZE)?;

        println!(
            "linux-guest: LUKS provisioning boot (forky OVMF): format {} MiB, write the known file",
            DISK_SIZE >> 20
        );
        // The service's port is fixed now: it is in the command line, which the
        // provisioning boot shares with the unlock boots, so that the policy is learned
        // from a boot of exactly what it admits (the mode comes from fw_cfg, which is
        // not measured).
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let run = guest.run_with(
            &unlock_cmdline(port),
            Some(&firmware),
            &Boot {
                initrd: Some(&initrd),
                disk: Some(&disk),
                // The unlock boots' devices: OVMF measures QEMU's ACPI tables (PCR 1),
                // which describe the NIC.
                net: true,
                fw_cfg: vec![("opt/svsm/disk-key", &key), ("opt/svsm/known", &known_file)],
                serial_log: Some("serial-luks-provision.log"),
                launch_measurement: Some(&measurement),
            },
        )?;
        show("LUKS provisioning", &run);
        let mut failures = require_ok(
            &run,
            &[
                "boot",
                "modules",
                "disk",
                "luks-format",
                "luks-open",
                "luks-mkfs",
                "luks-mount",
                "luks-write",
                "luks-cipher",
                "luks-close",
                "eventlog-hex",
                "done",
            ],
        );
        let detail = |name: &str| run.results.get(name).map(|(_, d)| d.trim().to_string());
        if detail("luks-write").is_some_and(|d| d != known) {
            failures.push(format!(
                "luks-write: the guest wrote something else than '{known}'"
            ));
        }
        let cipher_head = detail("luks-cipher")
            .and_then(|d| d.split("head=").nth(1).and_then(linux::unhex))
            .filter(|h| h.len() == 32)
            .unwrap_or_default();
        if cipher_head.is_empty() {
            failures.push("luks-cipher: no 32-byte ciphertext head".into());
        }
        let log = detail("eventlog-hex")
            .and_then(|d| linux::unhex(&d))
            .unwrap_or_default();
        if log.is_empty() {
            failures.push("eventlog-hex: no event log".into());
        }
        verdict("LUKS provisioning", &run, failures)?;
        // The key now lives only in the service's secrets directory.
        fs::remove_file(&known_file)?;
        Ok((
            Self {
                firmware,
                pki,
                known,
                disk,
                initrd,
                other_initrd,
                cipher_head,
                port,
                service: None,
                measurement,
            },
            log,
        ))
    }

    /// Learns the measured-boot policy from the provisioning boot's log with the unlock
    /// boot's references computed, writes the service's policy and starts it.
    fn start_service(&mut self, guest: &Guest, event_log: &[u8]) -> Result<()> {
        build_service()?;
        let dir = luks_dir();
        let log = dir.join("provision.eventlog");
        fs::write(&log, event_log)?;
        let port = self.port;
        let cmdline = unlock_cmdline(port);
        let boot_policy = dir.join("boot-policy.toml");
        linux::output(
            Command::new("target/debug/svsm-verify")
                .args(["policy", "learn", "--event-log"])
                .arg(&log)
                .arg("--kernel")
                .arg(&guest.kernel)
                .arg("--initrd")
                .arg(&self.initrd)
                .arg("--cmdline")
                .arg(&cmdline)
                .arg("--qemu-direct-boot")
                .arg("--qemu-memory")
                .arg(linux::MEMORY_MIB.to_string())
                .arg("-o")
                .arg(&boot_policy),
        )?;
        let policy = write_policy(&dir, &boot_policy, &self.measurement)?;
        println!(
            "linux-guest: measured-boot policy learned: {}; service policy: {}",
            boot_policy.display(),
            policy.display()
        );
        let service = start_service(&dir, &self.pki, &policy, &dir.join("secrets"), port)?;
        println!(
            "linux-guest: svsm-service listens on 127.0.0.1:{port} (10.0.2.2:{port} in the guest)"
        );
        self.service = Some(service);
        Ok(())
    }

    fn service(&self) -> Result<&Service> {
        self.service.as_ref().context("the service is not running")
    }

    /// An unlock boot with `cmdline_extra` appended, `initrd` and `disk`.
    fn unlock_boot(
        &self,
        guest: &Guest,
        label: &str,
        log: &str,
        cmdline_extra: &str,
        initrd: &Path,
        disk: &Path,
    ) -> Result<Run> {
        let service = self.service()?;
        println!("linux-guest: {label} (forky OVMF)");
        let cmdline = format!("{}{cmdline_extra}", unlock_cmdline(service.port));
        let run = guest.run_with(
            &cmdline,
            Some(&self.firmware),
            &Boot {
                initrd: Some(initrd),
                disk: Some(disk),
                net: true,
                fw_cfg: Vec::new(),
                serial_log: Some(log),
                launch_measurement: Some(&self.measurement),
            },
        )?;
        show(label, &run);
        Ok(run)
    }

    /// Attestation, then the volume opened and the known file read.
    fn unlock(&self, guest: &Guest) -> Result<()> {
        let label = "LUKS unlock after attestation";
        let run = self.unlock_boot(
            guest,
            label,
            "serial-luks-unlock.log",
            "",
            &self.initrd,
            &self.disk,
        )?;
        let mut failures = require_ok(
            &run,
            &[
                "boot",
                "modules",
                "disk",
                "net",
                "agent-challenge",
                "agent-evidence",
                "agent-attest",
                "agent-activate",
                "luks-open",
                "luks-mount",
                "luks-read",
                "agent",
                "done",
            ],
        );
        if let Some((_, d)) = run.results.get("luks-read") {
            if d.trim() != self.known {
                failures.push(format!(
                    "luks-read: expected '{}', the guest read '{}'",
                    self.known,
                    d.trim()
                ));
            }
        }
        verdict(label, &run, failures)
    }

    /// A boot that changes what boots: the service must refuse naming `pcr`, the agent
    /// must print the reason, the volume must stay locked, and the service's log must
    /// name the reason.
    fn refused(
        &self,
        guest: &Guest,
        label: &str,
        log: &str,
        extra: &str,
        initrd: &Path,
        pcr: &str,
    ) -> Result<()> {
        let run = self.unlock_boot(guest, label, log, extra, initrd, &self.disk)?;
        let mut failures = require_ok(
            &run,
            &[
                "boot",
                "modules",
                "net",
                "agent-challenge",
                "agent-evidence",
                "luks-locked",
                "done",
            ],
        );
        let attest = run.results.get("agent-attest");
        let reason = match attest {
            Some((status, detail)) if status == "fail" => detail
                .split_once("denied: ")
                .map(|(_, r)| r.trim().to_string()),
            _ => None,
        };
        match &reason {
            None => failures.push(format!(
                "agent-attest: expected the service's refusal (HTTP 403 denied), got {attest:?}"
            )),
            Some(reason) => {
                println!("linux-guest: {label}: the service refused: {reason}");
                if !reason.contains(&format!("{pcr} ")) {
                    failures.push(format!("the refusal does not name {pcr}: {reason}"));
                }
                let service_log = self.service()?.log_text();
                if !service_log.contains(reason.as_str()) {
                    failures.push(format!(
                        "the service's log does not name the reason '{reason}'"
                    ));
                }
            }
        }
        for name in ["agent-activate", "luks-open", "luks-read"] {
            if run.results.contains_key(name) {
                failures.push(format!("{name}: reached although the service refused"));
            }
        }
        verdict(label, &run, failures)
    }

    /// The host flips bytes of the known file's ciphertext; the guest must get EIO.
    fn integrity(&self, guest: &Guest) -> Result<()> {
        let label = "LUKS integrity (ciphertext flipped on the host)";
        let flipped = luks_dir().join("disk-flipped.img");
        let mut image = fs::read(&self.disk)?;
        let at = flip(&mut image, &self.cipher_head)?;
        fs::write(&flipped, &image)?;
        println!(
            "linux-guest: flipped one byte of the known file's ciphertext at offset(s) {at:?} of the image"
        );
        let run = self.unlock_boot(
            guest,
            label,
            "serial-luks-integrity.log",
            "",
            &self.initrd,
            &flipped,
        )?;
        let mut failures = require_ok(
            &run,
            &[
                "boot",
                "agent-attest",
                "agent-activate",
                "luks-open",
                "luks-mount",
                "done",
            ],
        );
        match run.results.get("luks-read") {
            Some((status, detail)) if status == "fail" && detail.contains("EIO") => {}
            other => failures.push(format!(
                "luks-read: expected an I/O error (EIO), got {other:?}"
            )),
        }
        verdict(label, &run, failures)
    }
}

/// Flips one byte (at +64) in every copy of the 32 bytes `head` in `image` (the data
/// area and, until dm-integrity's journal is reused, the journal); the offsets.
fn flip(image: &mut [u8], head: &[u8]) -> Result<Vec<usize>> {
    ensure!(head.len() == 32, "the ciphertext head must be 32 bytes");
    let at: Vec<usize> = image
        .windows(head.len())
        .enumerate()
        .filter(|(_, w)| *w == head)
        .map(|(i, _)| i)
        .collect();
    ensure!(
        !at.is_empty(),
        "the known file's ciphertext is nowhere in the image"
    );
    for &i in &at {
        let byte = image
            .get_mut(i + 64)
            .context("the ciphertext lies at the image's end")?;
        *byte ^= 0x01;
    }
    Ok(at)
}

/// The whole flow, for `cargo xtask test`.
pub fn test(guest: &Guest) -> Result<()> {
    let (mut flow, log) = Flow::provision(guest)?;
    flow.start_service(guest, &log)?;
    flow.unlock(guest)?;
    flow.refused(
        guest,
        "LUKS refused: another kernel command line",
        "serial-luks-cmdline.log",
        " svsm.debug=1",
        &flow.initrd,
        "PCR 9",
    )?;
    flow.refused(
        guest,
        "LUKS refused: another initrd",
        "serial-luks-initrd.log",
        "",
        &flow.other_initrd,
        "PCR 9",
    )?;
    flow.integrity(guest)
}

/// Provisioning, the service and one unlock, for `cargo xtask run --linux-guest`.
pub fn demo(guest: &Guest) -> Result<()> {
    let (mut flow, log) = Flow::provision(guest)?;
    flow.start_service(guest, &log)?;
    let result = flow.unlock(guest);
    if let Ok(service) = flow.service() {
        println!("linux-guest: the service's log:");
        for line in service.log_text().lines() {
            println!("  {line}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/md/dm-mod.ko:\n\
kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko\n\
kernel/drivers/md/dm-integrity.ko: kernel/crypto/async_tx/async_xor.ko kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko\n\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n";

    #[test]
    fn modules_come_with_their_dependencies_once() {
        let files = closure(DEP, &["dm_crypt", "dm-integrity"]).unwrap();
        assert_eq!(
            files,
            vec![
                "kernel/crypto/async_tx/async_xor.ko",
                "kernel/drivers/md/dm-bufio.ko",
                "kernel/drivers/md/dm-crypt.ko",
                "kernel/drivers/md/dm-integrity.ko",
                "kernel/drivers/md/dm-mod.ko",
            ]
        );
    }

    #[test]
    fn a_module_the_kernel_lacks_is_named() {
        let e = closure(DEP, &["hmac"]).unwrap_err();
        assert!(format!("{e}").contains("hmac is not a module"));
    }

    #[test]
    fn the_initrd_variants_have_one_length() {
        assert_eq!(GOOD_VARIANT.len(), OTHER_VARIANT.len());
        assert_ne!(GOOD_VARIANT, OTHER_VARIANT);
    }

    #[test]
    fn module_names_follow_modprobe() {
        assert_eq!(module_name("kernel/drivers/md/dm-crypt.ko"), "dm_crypt");
        assert_eq!(module_name("kernel/crypto/xts.ko.xz"), "xts");
    }

    #[test]
    fn every_copy_of_the_ciphertext_is_flipped() {
        let head = [0xA5u8; 32];
        let mut image = vec![0u8; 4096];
        image[100..132].copy_from_slice(&head);
        image[1000..1032].copy_from_slice(&head);
        let at = flip(&mut image, &head).unwrap();
        assert_eq!(at, vec![100, 1000]);
        assert_eq!(image[164], 1);
        assert_eq!(image[1064], 1);
        assert!(flip(&mut vec![0u8; 4096], &head).is_err());
    }
}
