//! Taking a lock: the run-time builder, and the acquisition steps that the
//! builder and `#[synchronized]` call sites share.

use std::future::Future;
use std::panic::Location;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::LockError;
use crate::external::{self, Attempt, Dir, FileWait, Handoff};
use crate::guard::{AsyncLockGuard, LockGuard, check_reentry};
use crate::hold::{EntryRef, Hold};
use crate::local::Kind;
use crate::registry;
use crate::semaphore::Mode;
use crate::timer::Sleep;
use crate::trace::{self, Site};

/// How long to wait for a busy lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Block,
    Try,
    Timeout(Duration),
}

/// One acquisition's options, borrowed from a builder or a call site.
#[derive(Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) mode: Mode,
    pub(crate) external: bool,
    /// Take the lock file even when process locking is switched off.
    pub(crate) force_file: bool,
    pub(crate) dir: Dir<'a>,
    pub(crate) wait: Wait,
    pub(crate) site: Site,
}

impl Request<'_> {
    fn busy(&self, name: &str) -> LockError {
        match self.wait {
            Wait::Timeout(timeout) => LockError::Timeout {
                name: name.to_owned(),
                timeout,
            },
            _ => LockError::WouldBlock {
                name: name.to_owned(),
            },
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.wait {
            // A deadline past the clock's range is no deadline.
            Wait::Timeout(t) => Instant::now().checked_add(t),
            _ => None,
        }
    }

    fn file_wait(&self, deadline: Option<Instant>) -> FileWait {
        match (self.wait, deadline) {
            (Wait::Try, _) => FileWait::Try,
            (_, Some(d)) => FileWait::Until(d),
            (_, None) => FileWait::Block,
        }
    }

    fn wants_file(&self) -> bool {
        self.external && (self.force_file || external::enabled())
    }
}

/// Takes the in-process lock, then (for external locks) the lock file.
#[inline]
pub(crate) fn acquire(entry: EntryRef, req: &Request<'_>) -> Result<LockGuard, LockError> {
    let started = trace::start();
    let mut deadline = None;
    if !entry.local.try_lock(req.mode) {
        deadline = req.deadline();
        wait_in_process(&entry, req, deadline)?;
    }
    // SAFETY: we just took the in-process lock in `req.mode`.
    let hold = unsafe { Hold::new(entry, req.mode) };
    let hold = if req.wants_file() {
        lock_file(hold, req, deadline)?
    } else {
        hold
    };
    Ok(LockGuard::new(hold, req.site, started))
}

#[cold]
fn wait_in_process(
    entry: &registry::Entry,
    req: &Request<'_>,
    deadline: Option<Instant>,
) -> Result<(), LockError> {
    if req.wait == Wait::Try {
        return Err(req.busy(entry.name()));
    }
    check_reentry(entry);
    if entry.local.lock_until(req.mode, deadline) {
        Ok(())
    } else {
        Err(req.busy(entry.name()))
    }
}

fn lock_file(hold: Hold, req: &Request<'_>, deadline: Option<Instant>) -> Result<Hold, LockError> {
    let deadline = deadline.or_else(|| req.deadline());
    external::lock(hold, req.dir, req.file_wait(deadline), |name| {
        req.busy(name)
    })
}

/// The async counterpart of [`acquire`]: waits without blocking the thread,
/// for the in-process lock and (on a helper thread) for the lock file.
pub(crate) async fn acquire_async(
    entry: EntryRef,
    req: Request<'_>,
) -> Result<AsyncLockGuard, LockError> {
    let started = trace::start();
    let deadline = req.deadline();
    if !entry.local.try_lock(req.mode)
        && (req.wait == Wait::Try || !entry.local.lock_async(req.mode, deadline).await)
    {
        return Err(req.busy(entry.name()));
    }
    // SAFETY: we just took the in-process lock in `req.mode`.
    let mut hold = unsafe { Hold::new(entry, req.mode) };
    if req.wants_file()
        && let Attempt::Busy = external::lock_step(&mut hold, req.dir, FileWait::Try)?
    {
        if req.wait == Wait::Try {
            return Err(req.busy(hold.entry().name()));
        }
        let name = hold.entry().name().to_owned();
        let handoff = Handoff::start(hold, req.dir, deadline)?;
        let wait = WaitForFile {
            handoff,
            sleep: deadline.map(Sleep::new),
        };
        hold = wait.await?.ok_or_else(|| req.busy(&name))?;
    }
    Ok(AsyncLockGuard::new(hold, req.site, started))
}

/// Waits for a [`Handoff`]; `Ok(None)` when the deadline passes first.
/// Dropping it abandons the wait (the helper releases what it gets).
struct WaitForFile {
    handoff: Handoff,
    sleep: Option<Sleep>,
}

impl Future for WaitForFile {
    type Output = Result<Option<Hold>, LockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.handoff.poll(cx.waker()) {
            return Poll::Ready(r);
        }
        if let Some(sleep) = &mut self.sleep
            && sleep.poll_expired(cx)
        {
            // The helper may have finished just now; take it if so.
            return Poll::Ready(self.handoff.poll(cx.waker()).unwrap_or(Ok(None)));
        }
        Poll::Pending
    }
}

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
        external: false,
        lock_path: None,
        wait: Wait::Block,
        mode: Mode::Exclusive,
        kind: Kind::MUTEX,
        backend: None,
    }
}

/// A lock to take, built by [`lock`]. It can be kept and acquired many times.
#[must_use = "a Lock does nothing until acquired"]
#[derive(Clone, Debug)]
pub struct Lock<'a> {
    name: &'a str,
    prefix: &'a str,
    external: bool,
    lock_path: Option<&'a Path>,
    wait: Wait,
    mode: Mode,
    kind: Kind,
    backend: Option<&'a str>,
}

impl<'a> Lock<'a> {
    /// Take the external lock on this lock server (`postgres://...`,
    /// `etcd://...`) instead of the configured backend. A `lock_path`
    /// given too wins (lock files).
    pub fn backend(mut self, url: &'a str) -> Self {
        self.backend = Some(url);
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
        self.external = true;
        self
    }

    /// Directory of the lock file, instead of the configured lock path.
    /// Implies nothing by itself: add [`external`](Lock::external).
    pub fn lock_path(mut self, dir: &'a (impl AsRef<Path> + ?Sized)) -> Self {
        self.lock_path = Some(dir.as_ref());
        self
    }

    /// `false`: fail with [`LockError::WouldBlock`] instead of waiting.
    /// Overrides an earlier [`timeout`](Lock::timeout).
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.wait = if blocking { Wait::Block } else { Wait::Try };
        self
    }

    /// Wait at most `timeout`, then fail with [`LockError::Timeout`].
    /// Overrides an earlier [`blocking`](Lock::blocking).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.wait = Wait::Timeout(timeout);
        self
    }

    /// Take the lock as a reader: readers share it, a writer (the default,
    /// exclusive mode) excludes everyone. Across processes this is a
    /// `F_RDLCK` on the lock file, which fasteners'
    /// `InterProcessReaderWriterLock` also understands. While a writer
    /// waits, new readers queue behind it (no writer starvation).
    pub fn shared(mut self) -> Self {
        self.mode = Mode::Shared;
        self
    }

    /// First come, first served: waiters of this process get the lock in
    /// the order they asked (oslo's `fair=True`). Every user of the name
    /// must say `fair`.
    pub fn fair(mut self) -> Self {
        self.kind.fair = true;
        self
    }

    /// A counted semaphore: at most `permits` holders at once in this
    /// process, and with [`external`](Lock::external) at most `permits`
    /// across every process using the lock file. Every user of the name
    /// must give the same number.
    pub fn permits(mut self, permits: u32) -> Self {
        self.kind.permits = Some(permits);
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

    fn entry(&self) -> Result<EntryRef, LockError> {
        let handle = if self.prefix.is_empty() {
            lockutils_name::check("", self.name).map_err(|problem| LockError::InvalidName {
                name: self.name.to_owned(),
                problem,
            })?;
            entry_for(self.name, self.kind, self.mode)?
        } else {
            entry_for(&self.full_name()?, self.kind, self.mode)?
        };
        if self.external {
            registry::keep_recent(&handle);
        }
        Ok(EntryRef::Owned(handle))
    }

    fn request(&self, site: Site) -> Request<'_> {
        let dir = match (self.lock_path, self.backend) {
            (Some(p), _) => Dir::Explicit(p),
            (None, Some(url)) => Dir::Backend(url),
            (None, None) => Dir::Configured,
        };
        Request {
            mode: self.mode,
            external: self.external,
            force_file: false,
            dir,
            wait: self.wait,
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

/// The registry entry for a full name, checking the options agree with
/// each other and with the name's other users.
pub(crate) fn entry_for(
    full_name: &str,
    kind: Kind,
    mode: Mode,
) -> Result<registry::Handle, LockError> {
    let invalid = |reason| LockError::InvalidOptions {
        name: full_name.to_owned(),
        reason,
    };
    match kind.permits {
        Some(0) => return Err(invalid("permits must be at least 1")),
        Some(_) if mode == Mode::Shared => {
            return Err(invalid("a semaphore (permits) has no shared mode"));
        }
        _ => {}
    }
    registry::get(full_name, kind).map_err(|other| LockError::KindMismatch {
        name: full_name.to_owned(),
        this: kind.to_string(),
        other: other.to_string(),
    })
}

/// Removes an external lock's file safely: takes the lock (in-process and
/// file), unlinks the file, releases. Processes waiting on the old file
/// notice it was removed when they get it, and retry on a new one.
///
/// A missing file is not an error. `lock_path` `None` means the configured
/// lock path. Only for plain (not fair, not semaphore) locks.
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
        mode: Mode::Exclusive,
        external: true,
        // Removal must not race a holder in another process, even when this
        // process has process locking switched off.
        force_file: true,
        dir: Dir::Explicit(&dir),
        wait: Wait::Block,
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
