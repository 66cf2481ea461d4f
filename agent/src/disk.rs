//! The LUKS2 volume: `cryptsetup open` with the released key on standard input, `mount`,
//! and the known file read.

use std::io::{ErrorKind, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{report, UnlockArgs};

/// The largest known file the agent prints.
const MAX_SHOWN: usize = 200;

/// Whether the device-mapper device `name` exists.
pub fn is_open(name: &str) -> bool {
    Path::new("/dev/mapper").join(name).exists()
}

/// Opens, mounts and reads; each step reported.
pub fn open_and_read(args: &UnlockArgs, key: &[u8]) -> Result<(), ()> {
    let step = |check: &str, result: Result<String>| match result {
        Ok(detail) => {
            report(check, true, &detail);
            Ok(())
        }
        Err(e) => {
            report(check, false, &format!("{e:#}"));
            Err(())
        }
    };
    step("luks-open", open(&args.device, &args.name, key))?;
    let mapped = Path::new("/dev/mapper").join(&args.name);
    step("luks-mount", mount(&mapped, &args.mount))?;
    let path = args.mount.join(&args.file);
    step("luks-read", read(&path))
}

fn open(device: &Path, name: &str, key: &[u8]) -> Result<String> {
    let mut child = Command::new("cryptsetup")
        .arg("open")
        .arg("--key-file")
        .arg("-")
        .arg(device)
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run cryptsetup")?;
    let written = child
        .stdin
        .take()
        .context("no standard input for cryptsetup")
        .and_then(|mut stdin| stdin.write_all(key).context("cannot pass the key"));
    // cryptsetup reads the key up to end of file: stdin is closed here.
    let out = child.wait_with_output().context("cryptsetup")?;
    written?;
    if !out.status.success() {
        bail!(
            "cryptsetup open {} failed ({}): {}",
            device.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(format!("{} -> /dev/mapper/{name}", device.display()))
}

fn mount(device: &Path, target: &Path) -> Result<String> {
    std::fs::create_dir_all(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let out = Command::new("mount")
        .args(["-t", "ext4", "-o", "ro"])
        .arg(device)
        .arg(target)
        .output()
        .context("cannot run mount")?;
    if !out.status.success() {
        bail!(
            "mount {} failed ({}): {}",
            device.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(format!(
        "{} on {} (ext4, read-only)",
        device.display(),
        target.display()
    ))
}

fn read(path: &Path) -> Result<String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let shown: String = text.trim().chars().take(MAX_SHOWN).collect();
            Ok(shown)
        }
        Err(e) if e.raw_os_error() == Some(5) => {
            bail!(
                "EIO reading {}: {e} (integrity check failed)",
                path.display()
            )
        }
        Err(e) if e.kind() == ErrorKind::NotFound => bail!("{} is missing", path.display()),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    }
}
