//! Atomic file writes: a reader sees the old file or the complete new one, never half of it,
//! also after a crash or `kill -9` in the middle of the write.
//!
//! The data goes to a temporary file beside the target (`.<name>.tmp-<pid>-<n>`), which is
//! flushed to disk (`fsync`) and then renamed over the target; the directory is synced after
//! the rename, so that the rename itself survives a power loss. A killed writer leaves only its
//! temporary file behind, which [`remove_stale_temps`] cleans up.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Test hook (hidden): when this variable is set and the target's file name contains its value,
/// [`write_atomic_bytes`] writes half of the data to the temporary file, then sleeps for a
/// minute before writing the rest, so that a test can kill the process mid-write.
#[doc(hidden)]
pub const PAUSE_ENV: &str = "BURN_QAT_PAUSE_IN_CHECKPOINT_WRITE";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The temporary file a write of `path` goes through.
fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, io::Error::other("not a file path")))?;
    Ok(parent_dir(path).join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Syncs a directory's entries (Unix; elsewhere directories cannot be opened and renames are
/// durable as they are).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Writes `path` through `write` into a temporary file beside it, syncs it, renames it over
/// `path` and syncs the directory. On any error the temporary file is removed and `path` is
/// left untouched.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> Result<()> {
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut file = File::create(&tmp)?;
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(parent_dir(path)).map_err(|e| Error::io(parent_dir(path), e))
}

/// [`write_atomic`] of a byte buffer (checkpoints). Honours the [`PAUSE_ENV`] test hook.
pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let pause = std::env::var(PAUSE_ENV).ok().filter(|fragment| {
        !fragment.is_empty()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(fragment.as_str()))
    });
    write_atomic(path, |file| {
        let (head, tail) = bytes.split_at(if pause.is_some() { bytes.len() / 2 } else { 0 });
        file.write_all(head)?;
        if pause.is_some() {
            file.flush()?;
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        file.write_all(tail)
    })
}

/// Removes the temporary files that writers killed mid-write left in `dir` (those of other
/// processes: `.<name>.tmp-<pid>-<n>` with a pid that is not this one). Returns how many.
pub fn remove_stale_temps(dir: &Path) -> Result<usize> {
    let own = format!(".tmp-{}-", std::process::id());
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name.starts_with('.') && name.contains(".tmp-") && !name.contains(&own);
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_atomic_bytes(&path, b"first").unwrap();
        write_atomic_bytes(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A failing writer leaves the old file and no temporary one.
        let err = write_atomic(&path, |_| Err(io::Error::other("disk full"))).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temps_of_other_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".x.bpk.tmp-999999999-0"), b"half").unwrap();
        std::fs::write(dir.path().join("keep.bpk"), b"whole").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
