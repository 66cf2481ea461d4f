//! Debian packages from other releases, fetched with apt under a private state directory
//! (the system's apt configuration and package database are never touched).
//!
//! Used for forky's OVMF (the IGVM tests) and for the TPM engine's archives. Forky is
//! Debian's testing release: its Release file can be past its Valid-Until date on a
//! mirror, which apt would otherwise refuse.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run_command as run;

/// apt with its lists, cache and sources under `dir`, reading one release's `main`.
#[derive(Debug)]
pub struct PrivateApt {
    dir: PathBuf,
    release: String,
    options: Vec<String>,
    updated: bool,
}

impl PrivateApt {
    /// Prepares `dir` (created if missing) for apt on `release`.
    pub fn new(dir: &Path, release: &str) -> Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial", "deb"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let mirror = debian_mirror()?;
        let sources = dir.join("sources.list");
        fs::write(&sources, format!("deb {mirror} {release} main\n"))?;
        let abs = |p: &Path| -> Result<String> {
            Ok(fs::canonicalize(p)
                .with_context(|| format!("cannot resolve {}", p.display()))?
                .to_string_lossy()
                .into_owned())
        };
        let options = vec![
            format!("-o=Dir::Etc::SourceList={}", abs(&sources)?),
            "-o=Dir::Etc::SourceParts=-".to_string(),
            format!("-o=Dir::State::Lists={}", abs(&dir.join("lists"))?),
            format!("-o=Dir::Cache={}", abs(&dir.join("cache"))?),
            "-o=APT::Get::List-Cleanup=0".to_string(),
            "-o=Debug::NoLocking=1".to_string(),
            "-o=APT::Sandbox::User=root".to_string(),
            "-o=Acquire::Check-Valid-Until=false".to_string(),
        ];
        Ok(Self {
            dir: dir.to_path_buf(),
            release: release.to_string(),
            options,
            updated: false,
        })
    }

    /// Reads the release's package lists (once per value).
    pub fn update(&mut self) -> Result<()> {
        if !self.updated {
            run(
                Command::new("apt-get")
                    .args(&self.options)
                    .args(["-q", "update"]),
                &format!("apt-get update ({})", self.release),
            )?;
            self.updated = true;
        }
        Ok(())
    }

    /// The versions of `package` the release offers, newest first.
    pub fn versions(&mut self, package: &str) -> Result<Vec<String>> {
        self.update()?;
        let out = Command::new("apt-cache")
            .args(&self.options)
            .args(["madison", package])
            .output()
            .context("cannot run apt-cache")?;
        // "   libtpms-dev | 0.10.2-5 | http://... forky/main amd64 Packages"
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!(" {}/", self.release)))
            .filter_map(|l| l.split('|').nth(1).map(|v| v.trim().to_string()))
            .collect())
    }

    /// Downloads `package` (or `package=version`) and returns the path of the .deb.
    pub fn download(&mut self, spec: &str) -> Result<PathBuf> {
        self.update()?;
        let deb_dir = self.dir.join("deb");
        let name = spec.split('=').next().unwrap_or(spec);
        // A stale download of another version must not be taken for this one.
        for old in debs_of(&deb_dir, name)? {
            fs::remove_file(&old).with_context(|| format!("cannot remove {}", old.display()))?;
        }
        run(
            Command::new("apt-get")
                .args(&self.options)
                .args(["-q", "download", spec])
                .current_dir(&deb_dir),
            &format!("apt-get download {spec} ({})", self.release),
        )?;
        debs_of(&deb_dir, name)?
            .into_iter()
            .next()
            .with_context(|| format!("apt-get download {spec} left no .deb"))
    }
}

/// The `.deb` files of `package` in `dir`.
fn debs_of(dir: &Path, package: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!("{package}_");
    Ok(fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect())
}

/// Unpacks a .deb's files into `into`.
pub fn unpack(deb: &Path, into: &Path) -> Result<()> {
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(into),
        &format!("dpkg-deb -x {}", deb.display()),
    )
}

/// The Debian mirror this machine's apt uses (first `URIs:` or `deb` line).
pub fn debian_mirror() -> Result<String> {
    let mut files: Vec<PathBuf> = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(uri) = uri.filter(|u| u.trim_end_matches('/').ends_with("/debian")) {
                return Ok(uri.to_string());
            }
        }
    }
    bail!("no Debian archive found in /etc/apt/sources.list(.d): cannot fetch packages of other Debian releases")
}
