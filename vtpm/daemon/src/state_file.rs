//! The vTPM's sealed state in a host file (`vtpm-daemon --state PATH`, and
//! `vtpm-state-store` for the kernel).
//!
//! The file holds only what [`vtpm::state::SealedStore`] hands over: ciphertext under
//! a header. Replacement is atomic: the new blob is written to a temporary file beside
//! the target, flushed to the disk, renamed over the target, and the directory is
//! flushed, so a crash at any point leaves the old state or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use vtpm::state::{BlobStore, StateError};

/// A [`BlobStore`] in one file.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The store at `path` (created at the first commit).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// The temporary file a replacement is written to first.
    fn temporary(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".new");
        self.path.with_file_name(name)
    }

    fn replace(&self, blob: &[u8]) -> std::io::Result<()> {
        let temporary = self.temporary();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        file.write_all(blob)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, &self.path)?;
        // The rename is durable once the directory is.
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }
}

impl BlobStore for StateFile {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StateError> {
        match fs::read(&self.path) {
            Ok(blob) => Ok(Some(blob)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => {
                eprintln!("vTPM state file: cannot read {}: {e}", self.path.display());
                Err(StateError::Store)
            }
        }
    }

    fn store(&mut self, blob: &[u8]) -> Result<(), StateError> {
        self.replace(blob).map_err(|e| {
            eprintln!(
                "vTPM state file: cannot store the state in {}: {e}",
                self.path.display()
            );
            StateError::Store
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_reads_them_back() {
        let dir = std::env::temp_dir().join(format!("vtpm-state-file-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut store = StateFile::new(&dir.join("vtpm.state"));
        assert_eq!(store.load(), Ok(None));
        store.store(b"generation one").unwrap();
        store.store(b"two").unwrap();
        assert_eq!(store.load(), Ok(Some(b"two".to_vec())));
        assert!(
            !store.temporary().exists(),
            "no temporary file is left behind"
        );
        // A directory where the file should be: a clear failure, not a panic.
        let mut bad = StateFile::new(&dir);
        assert_eq!(bad.load(), Err(StateError::Store));
        assert_eq!(bad.store(b"x"), Err(StateError::Store));
        fs::remove_dir_all(&dir).unwrap();
    }
}
