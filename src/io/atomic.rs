//! Safe output writes: a reader sees the old file or the complete new one, never half of it,
//! also after a crash or `kill -9` in the middle of the write; and an output path that is not a
//! regular file is written to, never replaced.
//!
//! What [`write_atomic`] does depends on what the path is (after symbolic links):
//!
//! - **A regular file, or nothing yet:** the data goes to a temporary file beside the target
//!   (`.<name>.tmp-<pid>-<n>`), which is flushed to disk (`fsync`) and then renamed over the
//!   target; the directory is synced after the rename, so that the rename itself survives a
//!   power loss. A killed writer leaves only its temporary file behind, which
//!   [`remove_stale_temps`] cleans up once the writer is gone.
//! - **A character device, block device, FIFO or socket** (`/dev/null`, `/dev/stdout`, a named
//!   pipe): opened for writing and written through, without a temporary file, as `cp` and
//!   `numpy.save` do. The path stays what it was (a FIFO's reader gets the bytes); such a write
//!   is not atomic. (A socket cannot be opened as a file on Linux: that is an error, and the
//!   socket stays.)
//! - **A symbolic link:** the link is kept. Its chain is followed to the final target (a
//!   relative link is resolved against the directory holding it), and the rules above apply to
//!   that target: a regular file is replaced atomically through a temporary file in the
//!   *target's* directory, so the link then points at the new file; a dangling link's target is
//!   created; a link to a device or FIFO writes to it.
//! - **A directory:** an error (`is a directory, not a file`); nothing is written.

use std::fs::{File, FileType};
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

/// Symbolic links followed at most before a write gives up (Linux's own limit).
const MAX_LINKS: usize = 40;

/// How a write of a path goes, after its symbolic links.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Write a temporary file beside this regular file (existing or not), rename it over.
    Replace(PathBuf),
    /// Open the path for writing and write through: a device, FIFO or socket.
    Through,
}

/// Whether a file of this type is written through rather than replaced.
fn is_special(kind: &FileType) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        kind.is_char_device() || kind.is_block_device() || kind.is_fifo() || kind.is_socket()
    }
    #[cfg(not(unix))]
    {
        !kind.is_file() && !kind.is_dir() && !kind.is_symlink()
    }
}

/// Decides how `path` is written (see the module doc). Touches nothing.
fn plan(path: &Path) -> io::Result<Plan> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory, not a file",
        )),
        Ok(meta) if is_special(&meta.file_type()) => Ok(Plan::Through),
        Ok(_) => {
            if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
                // The link's final target, replaced in its own directory.
                Ok(Plan::Replace(std::fs::canonicalize(path)?))
            } else {
                Ok(Plan::Replace(path.to_path_buf()))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Plan::Replace(dangling_target(path)?)),
        Err(e) => Err(e),
    }
}

/// What a write of `path`, where nothing exists, creates: `path`, or the final target of the
/// chain of dangling symbolic links that starts there.
fn dangling_target(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                // A relative target is relative to the link's directory (an absolute one
                // replaces the whole path in `join`).
                let target = std::fs::read_link(&current)?;
                current = parent_dir(&current).join(target);
            }
            _ => return Ok(current),
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

/// Writes `path` through `write`, without ever leaving half a file at a regular path and
/// without replacing what is not a regular file (see the module doc for links, devices and
/// FIFOs). A regular file or a new path: into a temporary file beside it, synced, renamed over
/// it, the directory synced; on any error the temporary file is removed and `path` is left
/// untouched. A directory is an error.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> Result<()> {
    match plan(path).map_err(|e| Error::io(path, e))? {
        Plan::Through => write_through(path, write).map_err(|e| Error::io(path, e)),
        Plan::Replace(target) => replace(path, &target, write),
    }
}

/// Opens a device, FIFO or socket for writing (no creation, no temporary file) and writes it.
fn write_through(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    write(&mut file)?;
    file.flush()?;
    // A block device holds data that a sync makes durable; a character device or FIFO cannot
    // be synced (EINVAL).
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file.metadata()?.file_type().is_block_device() {
            file.sync_all()?;
        }
    }
    Ok(())
}

/// Replaces (or creates) the regular file `target` atomically; errors name `path`, the path
/// the caller gave.
fn replace(
    path: &Path,
    target: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(target)?;
    let result = (|| {
        let mut file = File::create(&tmp)?;
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(parent_dir(target)).map_err(|e| Error::io(parent_dir(target), e))
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

/// Removes the temporary files that writers killed mid-write left in `dir`: those
/// (`.<name>.tmp-<pid>-<n>`) of processes that are gone. A temporary file of a live process
/// (this one, or another run writing beside this one) is left alone: on Linux a process is
/// live while `/proc/<pid>` exists; elsewhere, where that cannot be told, every other
/// process's temporary file counts as stale. Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = temp_owner(&name) else {
            continue;
        };
        let live = owner.is_some_and(|pid| pid == std::process::id() || process_alive(pid));
        if !live && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether `name` is a temporary file of [`write_atomic`] (`.<name>.tmp-<pid>-<n>`), and the
/// pid of the process that writes it (`None` if that does not parse).
fn temp_owner(name: &str) -> Option<Option<u32>> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, tail) = name.rsplit_once(".tmp-")?;
    Some(
        tail.split_once('-')
            .and_then(|(pid, _)| pid.parse::<u32>().ok()),
    )
}

/// Whether the process `pid` runs (Linux: `/proc/<pid>` exists). Elsewhere `false`: the
/// caller then treats the temporary files of other processes as stale, as before.
fn process_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        Path::new("/proc").join(pid.to_string()).exists()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        false
    }
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

    /// A temporary file of a live process (pid 1, this test's parent, this process) is being
    /// written: it stays. One of a process that is gone is removed.
    #[cfg(target_os = "linux")]
    #[test]
    fn temps_of_live_processes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let parent = std::os::unix::process::parent_id();
        let live = [
            ".a.bpk.tmp-1-0".to_string(),
            format!(".b.bpk.tmp-{parent}-3"),
            format!(".c.bpk.tmp-{}-7", std::process::id()),
        ];
        for name in &live {
            std::fs::write(dir.path().join(name), b"being written").unwrap();
        }
        std::fs::write(dir.path().join(".d.bpk.tmp-999999999-0"), b"half").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 1);
        for name in &live {
            assert!(dir.path().join(name).is_file(), "{name} was removed");
        }
        assert!(!dir.path().join(".d.bpk.tmp-999999999-0").exists());
    }
}

#[cfg(all(test, unix))]
mod special_file_tests {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;

    use super::*;

    /// Makes a FIFO at `path` with the `mkfifo` tool (std cannot).
    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mkfifo {}: {status}", path.display());
    }

    #[test]
    fn the_plan_follows_what_the_path_is() {
        // The decision alone: nothing is written.
        assert_eq!(plan(Path::new("/dev/null")).unwrap(), Plan::Through);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let fifo = d.join("fifo");
        mkfifo(&fifo);
        assert_eq!(plan(&fifo).unwrap(), Plan::Through);
        std::os::unix::fs::symlink("/dev/null", d.join("to_null")).unwrap();
        assert_eq!(plan(&d.join("to_null")).unwrap(), Plan::Through);
        assert_eq!(plan(&d.join("new")).unwrap(), Plan::Replace(d.join("new")));
        std::fs::write(d.join("file"), b"x").unwrap();
        assert_eq!(
            plan(&d.join("file")).unwrap(),
            Plan::Replace(d.join("file"))
        );
        std::os::unix::fs::symlink("file", d.join("to_file")).unwrap();
        assert_eq!(
            plan(&d.join("to_file")).unwrap(),
            Plan::Replace(std::fs::canonicalize(d.join("file")).unwrap())
        );
        std::os::unix::fs::symlink("missing", d.join("dangling")).unwrap();
        assert_eq!(
            plan(&d.join("dangling")).unwrap(),
            Plan::Replace(d.join("missing"))
        );
        let err = plan(d).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::IsADirectory);
        std::os::unix::fs::symlink("loop", d.join("loop")).unwrap();
        assert!(plan(&d.join("loop")).is_err());
    }

    #[test]
    fn dev_null_stays_a_character_device() {
        let null = Path::new("/dev/null");
        // Checked first, so that a regression fails here instead of replacing the machine's
        // /dev/null (tests may run as root).
        assert_eq!(plan(null).unwrap(), Plan::Through);
        write_atomic_bytes(null, b"discarded").unwrap();
        let kind = std::fs::symlink_metadata(null).unwrap().file_type();
        assert!(kind.is_char_device(), "/dev/null is now {kind:?}");
        // Through a link, too: the link stays, and so does the device.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("out.npy");
        std::os::unix::fs::symlink(null, &link).unwrap();
        assert_eq!(plan(&link).unwrap(), Plan::Through);
        write_atomic_bytes(&link, b"discarded").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let kind = std::fs::symlink_metadata(null).unwrap().file_type();
        assert!(kind.is_char_device(), "/dev/null is now {kind:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_fifo_is_written_through_and_stays_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.npy");
        mkfifo(&fifo);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                File::open(&fifo).unwrap().read_to_end(&mut bytes).unwrap();
                bytes
            })
        };
        write_atomic_bytes(&fifo, b"through the pipe").unwrap();
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "the FIFO was replaced: {kind:?}");
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        // No temporary file was made beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_to_a_regular_file_is_kept_and_its_target_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let target = data.join("model.bin");
        std::fs::write(&target, b"old").unwrap();
        // A chain: link -> link2 -> data/model.bin, the first one relative.
        let link2 = dir.path().join("link2");
        std::os::unix::fs::symlink(&target, &link2).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("link2", &link).unwrap();
        write_atomic_bytes(&link, b"new").unwrap();
        for l in [&link, &link2] {
            let kind = std::fs::symlink_metadata(l).unwrap().file_type();
            assert!(kind.is_symlink(), "{} was replaced: {kind:?}", l.display());
        }
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("link2"));
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // The temporary file went beside the target, and is gone.
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn a_dangling_symlink_creates_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("out.npy");
        std::os::unix::fs::symlink("real.npy", &link).unwrap();
        write_atomic_bytes(&link, b"created").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read(dir.path().join("real.npy")).unwrap(),
            b"created"
        );
        assert_eq!(std::fs::read(&link).unwrap(), b"created");
    }

    #[test]
    fn a_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let err = write_atomic_bytes(&out, b"x").unwrap_err().to_string();
        assert!(err.contains("is a directory, not a file"), "{err}");
        assert!(err.contains(&out.display().to_string()), "{err}");
        assert!(out.is_dir());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_socket_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("out.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        // Linux cannot open a socket as a file: an error, and the socket stays.
        let _ = write_atomic_bytes(&sock, b"x");
        let kind = std::fs::symlink_metadata(&sock).unwrap().file_type();
        assert!(kind.is_socket(), "the socket was replaced: {kind:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
