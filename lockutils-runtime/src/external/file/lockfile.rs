//! An open lock file, whatever kind of record lock it takes.
//!
//! Invariant: a [`LockFile`] whose locks belong to it ([`LockFile::owns_its_locks`]:
//! OFD locks, `LockFileEx` handles) is one owner to the kernel, so two of
//! them exclude each other even in one process; a classic one shares the
//! process's one descriptor for the inode and takes its locks through
//! `classic`, which arbitrates between the process's holders.

use std::fs::File;
use std::io;
use std::path::Path;

#[cfg(unix)]
use super::classic;
use super::sys::{self, How, OpenError, Range};
use crate::spec::Mode;

/// The environment variable that makes every lock file use classic
/// per-process `fcntl` locks, as where OFD locks do not exist. Meant for
/// testing that fallback on Linux; read once.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) const CLASSIC_LOCKS_ENV: &str = "LOCKUTILS_CLASSIC_LOCKS";

/// An open lock file. Closing it releases any lock held through it (for a
/// classic one: when the process's last user of the inode closes it).
#[derive(Debug)]
pub(crate) struct LockFile {
    handle: Handle,
}

#[derive(Debug)]
enum Handle {
    /// Locks belong to this open file (OFD locks; `LockFileEx` handles).
    Own(File),
    /// Classic per-process locks, arbitrated in-process (see `classic`).
    #[cfg(unix)]
    Classic(std::sync::Arc<classic::Inode>),
}

/// Whether every file must use classic locks: always where OFD locks do
/// not exist; on Linux when [`CLASSIC_LOCKS_ENV`] says so.
#[cfg(unix)]
fn classic_forced() -> bool {
    if cfg!(not(any(target_os = "linux", target_os = "android"))) {
        return true;
    }
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var_os(CLASSIC_LOCKS_ENV).is_some_and(|v| v == "1"))
}

impl LockFile {
    /// Opens `path` safely (see `sys::open`), creating it if missing. In
    /// classic mode the process's one descriptor for the file is shared
    /// instead of opening another.
    pub(crate) fn open(path: &Path) -> Result<LockFile, OpenError> {
        #[cfg(unix)]
        if let Some(inode) = classic::find(path) {
            return Ok(LockFile {
                handle: Handle::Classic(inode),
            });
        }
        let file = sys::open(path)?;
        #[cfg(unix)]
        if classic_forced() || sys::ofd_refused(&file) {
            let inode = classic::adopt(file).map_err(|e| OpenError::Io("inspect lock file", e))?;
            return Ok(LockFile {
                handle: Handle::Classic(inode),
            });
        }
        Ok(LockFile {
            handle: Handle::Own(file),
        })
    }

    /// The open file the locks are held through.
    pub(crate) fn file(&self) -> &File {
        match &self.handle {
            Handle::Own(f) => f,
            #[cfg(unix)]
            Handle::Classic(i) => i.file(),
        }
    }

    /// Whether its locks belong to it (OFD, `LockFileEx`), not to the
    /// process (classic `fcntl`).
    #[inline]
    pub(crate) fn owns_its_locks(&self) -> bool {
        matches!(self.handle, Handle::Own(_))
    }

    fn cmds(&self) -> sys::Cmds {
        match &self.handle {
            Handle::Own(_) => sys::OWN,
            #[cfg(unix)]
            Handle::Classic(_) => sys::CLASSIC,
        }
    }

    fn lock_how(&self, mode: Mode, range: Range, how: How) -> io::Result<bool> {
        match &self.handle {
            Handle::Own(f) => sys::lock(f, sys::OWN, mode, range, how),
            #[cfg(unix)]
            Handle::Classic(i) => i.lock(mode, range, how, |m, r, h| {
                sys::lock(i.file(), sys::CLASSIC, m, r, h)
            }),
        }
    }

    /// Takes the lock if no one else holds it. `Ok(false)`: busy.
    #[inline]
    pub(crate) fn try_lock(&self, mode: Mode, range: Range) -> io::Result<bool> {
        self.lock_how(mode, range, How::Try)
    }

    /// Waits in the kernel until the lock is ours.
    pub(crate) fn lock(&self, mode: Mode, range: Range) -> io::Result<()> {
        self.lock_how(mode, range, How::Block).map(|_| ())
    }

    /// Releases the lock on `range`.
    #[inline]
    pub(crate) fn unlock(&self, range: Range) -> io::Result<()> {
        match &self.handle {
            Handle::Own(f) => sys::unlock(f, sys::OWN, range),
            #[cfg(unix)]
            Handle::Classic(i) => i.unlock(range, |r| sys::unlock(i.file(), sys::CLASSIC, r)),
        }
    }

    /// Whether another owner holds a lock on any byte from `start` on
    /// (`F_OFD_GETLK`/`F_GETLK`). Always `false` on Windows, which cannot tell.
    pub(crate) fn others_hold_from(&self, start: u64) -> io::Result<bool> {
        sys::others_hold(self.file(), self.cmds(), start, 0)
    }

    /// Takes `flock(2)` on the whole file (`LOCK_EX`, or `LOCK_SH` for
    /// shared), waiting in the kernel if `wait`. `Ok(false)`: busy.
    ///
    /// Only Linux (and Android) keeps flock(2) and fcntl locks apart, so
    /// only there is this a lock of its own; elsewhere it succeeds without
    /// a system call: the BSDs' and macOS's flock(2) and fcntl locks
    /// already exclude each other (and a second, flock(2), lock of ours
    /// would conflict with our own fcntl lock), and Windows has none.
    pub(crate) fn flock(&self, mode: Mode, wait: bool) -> io::Result<bool> {
        sys::flock_whole(self.file(), mode, wait)
    }

    /// Releases what [`flock`](LockFile::flock) took.
    pub(crate) fn funlock(&self) -> io::Result<()> {
        sys::funlock(self.file())
    }

    /// Whether the file still has a name (was not removed while we waited).
    #[inline]
    pub(crate) fn is_linked(&self) -> io::Result<bool> {
        sys::is_linked(self.file())
    }

    /// The file's identity (device, inode).
    pub(crate) fn key(&self) -> io::Result<(u64, u64)> {
        sys::key(self.file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptors_in_one_process_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = LockFile::open(&p).unwrap();
        let b = LockFile::open(&p).unwrap();
        let (x, w) = (Mode::Exclusive, Range::Whole);
        assert!(a.try_lock(x, w).unwrap());
        assert!(
            !b.try_lock(x, w).unwrap(),
            "OFD locks must exclude a second descriptor"
        );
        assert!(b.others_hold_from(0).unwrap());
        a.unlock(w).unwrap();
        assert!(!b.others_hold_from(0).unwrap());
        assert!(b.try_lock(x, w).unwrap());
        b.unlock(w).unwrap();
    }

    #[test]
    fn shared_locks_share_and_byte_slots_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let (a, b) = (LockFile::open(&p).unwrap(), LockFile::open(&p).unwrap());
        assert!(a.try_lock(Mode::Shared, Range::Whole).unwrap());
        assert!(b.try_lock(Mode::Shared, Range::Whole).unwrap());
        assert!(!b.try_lock(Mode::Exclusive, Range::Byte(3)).unwrap());
        a.unlock(Range::Whole).unwrap();
        b.unlock(Range::Whole).unwrap();
        assert!(a.try_lock(Mode::Exclusive, Range::Byte(0)).unwrap());
        assert!(b.try_lock(Mode::Exclusive, Range::Byte(1)).unwrap());
        assert!(!b.try_lock(Mode::Exclusive, Range::Byte(0)).unwrap());
        assert!(b.others_hold_from(0).unwrap());
        assert!(
            !b.others_hold_from(1).unwrap(),
            "our own slot 1 counted as someone else's"
        );
        drop(a);
        assert!(!b.others_hold_from(0).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_symlink_fifo_directory_and_leaves_them_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            LockFile::open(&link),
            Err(OpenError::NotRegular("symlink"))
        ));
        // A dangling symlink must not create its target either.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            LockFile::open(&dangling),
            Err(OpenError::NotRegular("symlink"))
        ));
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            LockFile::open(&fifo),
            Err(OpenError::NotRegular("fifo"))
        ));

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            LockFile::open(&sub),
            Err(OpenError::NotRegular("directory"))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn created_mode_and_no_truncation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        drop(LockFile::open(&p).unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "mode {mode:o} wider than 0644");
        std::fs::write(&p, b"content").unwrap();
        let l = LockFile::open(&p).unwrap();
        assert!(l.try_lock(Mode::Exclusive, Range::Whole).unwrap());
        l.unlock(Range::Whole).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"content");
    }

    #[test]
    fn unlinked_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let l = LockFile::open(&p).unwrap();
        assert!(l.is_linked().unwrap());
        std::fs::remove_file(&p).unwrap();
        assert!(!l.is_linked().unwrap());
    }
}
