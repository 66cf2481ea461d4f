//! Atomic output: a file appears complete or not at all.
//!
//! The bytes go to a temporary file beside the target, are flushed to disk, and the
//! temporary file is renamed over the target. On any failure the temporary file is
//! removed, so a failed run never leaves a partial output behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// Writes `bytes` to `path` atomically (temporary file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temp_path(path);
    let result = write_then_rename(&tmp, path, bytes);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)
}

/// `dir/.name.tmp.<pid>`: beside the target so the rename stays on one file system.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let tmp_name = format!(".{name}.tmp.{}", std::process::id());
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(tmp_name),
        _ => PathBuf::from(tmp_name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("svsm-igvm-out-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("a.bin");
        write_atomic(&target, b"hello").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failure_leaves_nothing() {
        let target = Path::new("/nonexistent-dir-for-svsm-igvm/a.bin");
        let err = write_atomic(target, b"x").unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");
        assert!(!target.exists());
    }
}
