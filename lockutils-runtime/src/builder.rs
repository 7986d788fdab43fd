//! The run-time API: [`lock`] and its [`Lock`] builder, and
//! [`remove_external_lock_file`].

use std::future::Future;
use std::panic::Location;
use std::path::Path;
use std::time::Duration;

use crate::acquire::{Request, acquire, acquire_async, entry_for};
use crate::error::LockError;
use crate::guard::{AsyncLockGuard, LockGuard};
use crate::hold::EntryRef;
use crate::registry;
use crate::spec::{LockDir, Mode, Options, Wait};
use crate::trace::Site;

/// Starts describing a lock named `name`; finish with
/// [`acquire`](Lock::acquire) or [`acquire_async`](Lock::acquire_async).
///
/// ```
/// # use lockutils_runtime as lockutils;
/// # fn main() -> Result<(), lockutils::LockError> {
/// let guard = lockutils::lock("iptables").prefix("nova-").acquire()?;
/// assert_eq!(guard.name(), "nova-iptables");
/// # Ok(()) }
/// ```
pub fn lock(name: &str) -> Lock<'_> {
    Lock {
        name,
        prefix: "",
        opts: Options::DEFAULT,
    }
}

/// A lock to take, built by [`lock`]. It can be kept and acquired many times.
#[must_use = "a Lock does nothing until acquired"]
#[derive(Clone, Debug)]
pub struct Lock<'a> {
    name: &'a str,
    prefix: &'a str,
    opts: Options<'a>,
}

impl<'a> Lock<'a> {
    /// Take the external lock on this lock server (`postgres://...`,
    /// `etcd://...`) instead of the configured backend. A `lock_path`
    /// given too wins (lock files).
    pub fn backend(mut self, url: &'a str) -> Self {
        self.opts.backend = Some(url);
        self
    }

    /// Prefix for the lock: joined to the name with `-` unless empty or
    /// already ending in `-` (oslo's rule). Part of the lock's identity.
    pub fn prefix(mut self, prefix: &'a str) -> Self {
        self.prefix = prefix;
        self
    }

    /// Also take the inter-process lock file `<lock path>/<prefix><name>`.
    pub fn external(mut self) -> Self {
        self.opts.external = true;
        self
    }

    /// Directory of the lock file, instead of the configured lock path.
    /// Implies nothing by itself: add [`external`](Lock::external).
    pub fn lock_path(mut self, dir: &'a (impl AsRef<Path> + ?Sized)) -> Self {
        self.opts.lock_path = Some(LockDir::Path(dir.as_ref()));
        self
    }

    /// `false`: fail with [`LockError::WouldBlock`] instead of waiting.
    /// Overrides an earlier [`timeout`](Lock::timeout).
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.opts.wait = if blocking { Wait::Block } else { Wait::Try };
        self
    }

    /// Wait at most `timeout`, then fail with [`LockError::Timeout`].
    /// Overrides an earlier [`blocking`](Lock::blocking).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.wait = Wait::Timeout(timeout);
        self
    }

    /// Take the lock as a reader: readers share it, a writer (the default,
    /// exclusive mode) excludes everyone. Across processes this is a
    /// `F_RDLCK` on the lock file, which fasteners'
    /// `InterProcessReaderWriterLock` also understands. While a writer
    /// waits, new readers queue behind it (no writer starvation).
    pub fn shared(mut self) -> Self {
        self.opts.mode = Mode::Shared;
        self
    }

    /// First come, first served: waiters of this process get the lock in
    /// the order they asked (oslo's `fair=True`). Every user of the name
    /// must say `fair`.
    pub fn fair(mut self) -> Self {
        self.opts.kind.fair = true;
        self
    }

    /// Also lock the lock file with `flock(2)` (Linux), so util-linux
    /// `flock(1)`, py-filelock, Rust std `File::lock`, fs4 and fd-lock
    /// users are excluded too (OFD locks and flock(2) locks do not see each
    /// other). Taken after the OFD lock, through the same open file, and
    /// released before it; a non-blocking or timed attempt that finds the
    /// flock busy gives the OFD and in-process locks back at once. A timed
    /// wait for the flock part polls (flock(2) has no timeout). Needs
    /// [`external`](Lock::external) on lock files (not a lock server, not
    /// with [`permits`](Lock::permits), not on NFS); every user of the name
    /// in this process must say `flock`. Elsewhere than Linux it adds
    /// nothing: the BSDs and macOS already make flock(2) and fcntl locks
    /// exclude each other.
    pub fn flock(mut self) -> Self {
        self.opts.kind.flock = true;
        self
    }

    /// A counted semaphore: at most `permits` holders at once in this
    /// process, and with [`external`](Lock::external) at most `permits`
    /// across every process using the lock file. Every user of the name
    /// must give the same number.
    pub fn permits(mut self, permits: u32) -> Self {
        self.opts.kind.permits = Some(permits);
        self
    }

    /// The full lock name: prefix, separator, name.
    pub fn full_name(&self) -> Result<String, LockError> {
        lockutils_name::check(self.prefix, self.name).map_err(|problem| {
            LockError::InvalidName {
                name: lockutils_name::full_name(self.prefix, self.name),
                problem,
            }
        })?;
        Ok(lockutils_name::full_name(self.prefix, self.name))
    }

    /// The lock file's name inside the lock path: the full name with `/`
    /// in the name replaced by `_`, byte for byte oslo.concurrency's.
    pub fn file_name(&self) -> Result<String, LockError> {
        self.full_name()?;
        Ok(lockutils_name::file_name(self.prefix, self.name))
    }

    /// The options, for `holders()` to find the file.
    pub(crate) fn options(&self) -> &Options<'a> {
        &self.opts
    }

    /// An election's candidate: the identity a lock server records beside
    /// the lock (see `election`).
    pub(crate) fn candidate(mut self, identity: &'a str) -> Self {
        self.opts.identity = Some(identity);
        self
    }

    /// The registry entry, keyed by the lock's canonical name: its file
    /// name, so that names sharing a lock file (`a/b` and `a_b`) are one
    /// lock in-process too.
    pub(crate) fn entry(&self) -> Result<EntryRef, LockError> {
        let handle = if self.prefix.is_empty() && !self.name.contains('/') {
            lockutils_name::check("", self.name).map_err(|problem| LockError::InvalidName {
                name: self.name.to_owned(),
                problem,
            })?;
            entry_for(self.name, &self.opts)?
        } else {
            entry_for(&self.file_name()?, &self.opts)?
        };
        if self.opts.external {
            registry::keep_recent(&handle);
        }
        Ok(EntryRef::Owned(handle))
    }

    fn request(&self, site: Site) -> Request<'a> {
        Request {
            opts: self.opts,
            force_file: false,
            site,
        }
    }

    /// Takes the lock, blocking this thread while it waits.
    ///
    /// # Panics
    /// If this thread already holds the lock and would have to wait for
    /// itself (locks are not re-entrant).
    #[track_caller]
    pub fn acquire(&self) -> Result<LockGuard, LockError> {
        let site = Site::Caller(Location::caller());
        acquire(self.entry()?, &self.request(site))
    }

    /// Takes the lock without blocking the thread: waiting tasks park their
    /// waker, and a lock file is waited for on a helper thread. Works on any
    /// executor.
    #[track_caller]
    pub fn acquire_async(
        &self,
    ) -> impl Future<Output = Result<AsyncLockGuard, LockError>> + Send + '_ {
        let site = Site::Caller(Location::caller());
        async move { acquire_async(self.entry()?, self.request(site)).await }
    }
}

/// Removes an external lock's file safely: takes the lock (in-process and
/// file), unlinks the file, releases. Processes waiting on the old file
/// notice it was removed when they get it, and retry on a new one.
///
/// A missing file is not an error. `lock_path` `None` means the configured
/// lock path. Only for plain (not fair, not semaphore, not `flock`) locks.
#[track_caller]
pub fn remove_external_lock_file(
    name: &str,
    prefix: &str,
    lock_path: Option<&Path>,
) -> Result<(), LockError> {
    let lock = lock(name).prefix(prefix).external();
    let full = lock.full_name()?;
    let dir = match lock_path {
        Some(p) => p.to_path_buf(),
        None => crate::config::lock_path()
            .ok_or_else(|| LockError::LockPathNotSet { name: full.clone() })?,
    };
    let path = dir.join(lockutils_name::file_name(prefix, name));
    if let Err(e) = std::fs::symlink_metadata(&path)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        return Ok(());
    }
    let req = Request {
        opts: Options {
            external: true,
            lock_path: Some(LockDir::Path(&dir)),
            ..Options::DEFAULT
        },
        // Removal must not race a holder in another process, even when this
        // process has process locking switched off.
        force_file: true,
        site: Site::Caller(Location::caller()),
    };
    let mut guard = acquire(lock.entry()?, &req)?;
    let removed = std::fs::remove_file(&path);
    guard.hold_mut().forget_file();
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LockError::Io {
            name: full,
            path,
            op: "remove lock file",
            source,
        }),
    }
}
