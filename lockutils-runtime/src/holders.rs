//! Who holds a lock file, and who waits for it, as the operating system
//! tells: what `lockutils status` shows, for code to log or act on.
//!
//! * Linux: `/proc/locks` lists every granted lock and every blocked
//!   request on every file, with its kind (open-file-description,
//!   POSIX or `flock(2)`), mode and, for POSIX and `flock` locks, a PID.
//!   Open-file-description locks (lockutils' own) belong to an open file,
//!   not a process, so their holders are found in `/proc/PID/fdinfo`, which
//!   lists the locks held through each open file (proc(5)). Processes of
//!   other users are unreadable unless this one is root: their OFD locks
//!   show with no PID. Blocked OFD requests are matched to their threads
//!   through `/proc/PID/task/TID/syscall`, which needs ptrace rights.
//! * Other Unix (or Linux without a readable `/proc`): `F_GETLK`, which
//!   reports one conflicting lock, with a PID for a POSIX lock. It cannot
//!   see locks this very process holds there (classic POSIX locks never
//!   conflict with their own process), nor waiters.
//! * Windows: a `LockFileEx` probe, which tells held or free and the mode,
//!   but no process.
//!
//! [`Holders::source`] says which of these answered, so a caller knows what
//! "no holders" or a missing PID means.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::builder::Lock;
use crate::config;
use crate::error::LockError;
use crate::spec::Place;

mod probe;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod procfs;

/// Who holds a lock file and who waits for it, at one moment: a lock can
/// change hands right after.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holders {
    /// The lock file asked about.
    pub path: PathBuf,
    /// The holders (empty: free). Several for a shared lock, and one per
    /// process when processes share the open file a lock was taken through
    /// (a forked child, or the command of `lockutils run`).
    pub holders: Vec<Holder>,
    /// Blocked lock requests on the file, oldest first where the OS keeps
    /// an order. `None`: this OS cannot tell (everywhere but Linux).
    pub waiters: Option<Vec<Holder>>,
    /// What answered, and so what may be missing.
    pub source: HoldersSource,
}

impl Holders {
    /// Whether anyone holds the lock.
    pub fn is_held(&self) -> bool {
        !self.holders.is_empty()
    }

    /// Whether [`holders`](Holders::holders) is every holder. `false` where
    /// only one conflicting lock can be reported ([`HoldersSource::GetLk`],
    /// [`HoldersSource::LockFileEx`]).
    pub fn is_complete(&self) -> bool {
        self.source == HoldersSource::ProcLocks
    }
}

/// One holder of a lock, or one waiter for it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The process, when known. `None`: an open-file-description lock
    /// whose process may not be inspected (another user's, when not root),
    /// or an OS that does not say.
    pub pid: Option<u32>,
    /// The process's command line (arguments joined by spaces, `[name]`
    /// for a kernel thread), when readable.
    pub command: Option<String>,
    /// Exclusive (a writer) or shared (a reader).
    pub mode: HoldMode,
    /// Which kind of lock the kernel records.
    pub kind: HoldKind,
    /// No later than when the lock was taken: the start time of the holding
    /// process. The kernel records no time for a lock itself, so this is a
    /// lower bound. `None` where unknown (no PID, or not Linux).
    pub since: Option<SystemTime>,
    /// First byte locked.
    pub start: u64,
    /// Last byte locked; `None`: to the end of the file, however long.
    pub end: Option<u64>,
}

/// Exclusive or shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HoldMode {
    /// A write lock (`F_WRLCK`, `LOCK_EX`): excludes everyone.
    Exclusive,
    /// A read lock (`F_RDLCK`, `LOCK_SH`): shared with other readers.
    Shared,
}

/// How a lock was taken, as the kernel tells it apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HoldKind {
    /// An open-file-description lock (`F_OFD_SETLK`): lockutils' own.
    Ofd,
    /// A classic POSIX record lock (`lockf`, `fcntl(F_SETLK)`): Python's
    /// oslo.concurrency and fasteners.
    Posix,
    /// A `flock(2)` lock: util-linux `flock(1)`, Rust std `File::lock`,
    /// fs4/fd-lock, py-filelock. It excludes other `flock(2)` users only,
    /// not OFD or POSIX locks.
    Flock,
    /// A `LockFileEx` lock (Windows).
    LockFileEx,
    /// The OS reports a conflicting lock without saying which kind
    /// (`F_GETLK` without a PID).
    Unknown,
}

/// What answered a [`holders`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HoldersSource {
    /// Linux `/proc/locks` (and `/proc/PID/fdinfo`): every holder and
    /// waiter of every kind.
    ProcLocks,
    /// `F_GETLK`: at most one holder, a PID only for a POSIX lock, no
    /// waiters, and not the locks of this process itself.
    GetLk,
    /// Windows `LockFileEx` probe: held or free and the mode; no PID, no
    /// waiters.
    LockFileEx,
}

/// Who holds (and waits for) lock `lock`'s file: the file its
/// [`acquire`](Lock::acquire) would lock, in the lock path it would use.
///
/// A missing lock file is a free lock. Errors: an invalid name,
/// [`LockError::LockPathNotSet`], [`LockError::InvalidOptions`] for a lock
/// on a lock server (which has no file to inspect),
/// [`LockError::NotRegularFile`] if something else is at the path.
///
/// ```
/// # fn main() -> Result<(), lockutils_runtime::LockError> {
/// # use lockutils_runtime as lockutils;
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = lockutils::lock("backup").external().lock_path(dir.path());
/// let guard = lock.acquire()?;
/// let who = lockutils::holders(&lock)?;
/// # #[cfg(target_os = "linux")]
/// assert_eq!(who.holders[0].pid, Some(std::process::id()));
/// drop(guard);
/// assert!(!lockutils::holders(&lock)?.is_held());
/// # Ok(()) }
/// ```
pub fn holders(lock: &Lock<'_>) -> Result<Holders, LockError> {
    holders_of_file(&lock_file_of(lock)?)
}

/// The lock file `lock.acquire()` would lock: in the lock's own lock path,
/// else the configured one, as acquisition chooses.
fn lock_file_of(lock: &Lock<'_>) -> Result<PathBuf, LockError> {
    let file = lock.file_name()?;
    let name = lock.full_name()?;
    let on_server = |name| LockError::InvalidOptions {
        name,
        reason: "holders() inspects lock files; this lock is on a lock server",
    };
    let dir = match lock.options().place() {
        Place::Dir(dir) => dir.to_path_buf(),
        Place::Server(_) => return Err(on_server(name)),
        Place::Configured if config::with_backend_url(|_| ()).is_some() => {
            return Err(on_server(name));
        }
        Place::Configured => config::lock_path().ok_or(LockError::LockPathNotSet { name })?,
    };
    Ok(dir.join(file))
}

/// Who holds (and waits for) the lock file at `path`. A missing file is a
/// free lock; something other than a regular file is
/// [`LockError::NotRegularFile`]. Symlinks are not followed.
pub fn holders_of_file(path: &Path) -> Result<Holders, LockError> {
    holders_of_files(&[path]).pop().unwrap_or_else(|| {
        // One path in, one answer out; kept total rather than unwrapped.
        Ok(probe::free(path.to_path_buf(), HoldersSource::GetLk))
    })
}

/// [`holders_of_file`] for many files at once (one answer per path, in
/// order): on Linux, one pass over `/proc` serves them all.
pub fn holders_of_files<P: AsRef<Path>>(paths: &[P]) -> Vec<Result<Holders, LockError>> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(found) = procfs::inspect(paths) {
        return found;
    }
    paths.iter().map(|p| probe::probe(p.as_ref())).collect()
}

/// The error for a path that is not a regular file, named after the file.
fn not_regular(path: &Path, kind: &'static str) -> LockError {
    LockError::NotRegularFile {
        name: file_label(path),
        path: path.to_path_buf(),
        kind,
    }
}

fn io_error(path: &Path, op: &'static str, source: std::io::Error) -> LockError {
    LockError::Io {
        name: file_label(path),
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// A path-based call has no lock name; errors name the file instead.
fn file_label(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// What is at `path`: `Ok(true)` a regular file, `Ok(false)` nothing.
fn check_file(path: &Path) -> Result<bool, LockError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(m) => Err(not_regular(path, kind_of(&m.file_type()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, "inspect lock file", e)),
    }
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else {
        "special file"
    }
}
