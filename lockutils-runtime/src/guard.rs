//! The guards users hold, and this thread's list of held locks.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Instant;

use crate::hold::Hold;
use crate::registry::Entry;
use crate::trace::{self, Site};

thread_local! {
    /// Entries this thread holds through a [`LockGuard`], oldest first.
    /// A pointer stays valid while it is listed: the guard that listed it
    /// keeps the entry alive, and unlists it when dropped.
    static HELD: RefCell<Vec<*const Entry>> = const { RefCell::new(Vec::new()) };
}

/// The full names of the locks this thread holds through synchronous
/// acquisitions (`#[synchronized]` on a non-async function, or
/// [`Lock::acquire`](crate::Lock::acquire)), oldest first.
///
/// Locks held by async code are not listed: a future can move between
/// threads while it holds one.
pub fn locks_held() -> Vec<String> {
    HELD.try_with(|h| {
        h.borrow()
            .iter()
            // SAFETY: listed entries are alive (see `HELD`).
            .map(|&e| unsafe { &*e }.name().to_owned())
            .collect()
    })
    .unwrap_or_default()
}

/// Panics if this thread holds `entry`: waiting for it would never end.
#[cold]
pub(crate) fn check_reentry(entry: &Entry) {
    let me: *const Entry = entry;
    if HELD.try_with(|h| h.borrow().contains(&me)).unwrap_or(false) {
        panic!(
            "lockutils: this thread already holds lock {:?} and tried to take it again; \
             locks are not re-entrant, so waiting would deadlock",
            entry.name()
        );
    }
}

struct Trace {
    site: Site,
    acquired: Instant,
}

fn start_trace(hold: &Hold, site: Site, started: Option<Instant>) -> Option<Trace> {
    let started = started?;
    let path = lock_file(hold);
    let acquired = trace::acquired(hold, site, path.as_deref(), started);
    Some(Trace { site, acquired })
}

/// A held lock, taken by a synchronous caller. Dropping it releases the
/// lock file (if any), then the in-process lock.
///
/// It cannot be sent to another thread: the thread that took the lock
/// releases it, which keeps [`locks_held`] and the re-entry check honest.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    hold: Hold,
    trace: Option<Trace>,
    _not_send: PhantomData<*const ()>,
}

impl LockGuard {
    #[inline]
    pub(crate) fn new(hold: Hold, site: Site, started: Option<Instant>) -> LockGuard {
        let e: *const Entry = hold.entry();
        // `try_with`: a guard taken in a thread-local destructor is simply
        // not listed.
        let _ = HELD.try_with(|h| h.borrow_mut().push(e));
        let trace = start_trace(&hold, site, started);
        LockGuard { hold, trace, _not_send: PhantomData }
    }

    /// The full lock name (prefix, separator, name).
    pub fn name(&self) -> &str {
        self.hold.entry().name()
    }

    /// The lock file held, for an external lock (`None` when in-process
    /// only, or with process locking disabled). For a lock on a lock
    /// server, a description of it (URL and key).
    pub fn lock_file(&self) -> Option<PathBuf> {
        lock_file(&self.hold)
    }

    /// For a lock held on a lock server that provides one (etcd): a token
    /// that grows with every acquisition, to fence writes with.
    pub fn fencing_token(&self) -> Option<u64> {
        self.hold.remote().and_then(|r| r.fencing_token())
    }

    /// For a lock held on a lock server: whether the server may have given
    /// it to someone else since (the session or lease was lost). Lock files
    /// cannot be lost this way: always `false`.
    pub fn is_lost(&self) -> bool {
        self.hold.remote().is_some_and(|r| r.is_lost())
    }

    pub(crate) fn hold_mut(&mut self) -> &mut Hold {
        &mut self.hold
    }
}

impl Drop for LockGuard {
    #[inline]
    fn drop(&mut self) {
        let me: *const Entry = self.hold.entry();
        let _ = HELD.try_with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|&e| e == me) {
                h.remove(i);
            }
        });
        if let Some(t) = &self.trace {
            trace::released(self.hold.entry().name(), t.site, t.acquired);
        }
        // `hold` drops next: lock file, then in-process lock.
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").field("name", &self.name()).finish_non_exhaustive()
    }
}

/// A held lock, taken by async code ([`Lock::acquire_async`](crate::Lock::acquire_async)
/// or `#[synchronized]` on an `async fn`). It is `Send`, so the future
/// holding it can move between executor threads. Dropping it releases the
/// lock file (if any), then the in-process lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct AsyncLockGuard {
    hold: Hold,
    trace: Option<Trace>,
}

impl AsyncLockGuard {
    pub(crate) fn new(hold: Hold, site: Site, started: Option<Instant>) -> AsyncLockGuard {
        let trace = start_trace(&hold, site, started);
        AsyncLockGuard { hold, trace }
    }

    /// The full lock name (prefix, separator, name).
    pub fn name(&self) -> &str {
        self.hold.entry().name()
    }

    /// The lock file held, for an external lock.
    pub fn lock_file(&self) -> Option<PathBuf> {
        lock_file(&self.hold)
    }

    /// See [`LockGuard::fencing_token`].
    pub fn fencing_token(&self) -> Option<u64> {
        self.hold.remote().and_then(|r| r.fencing_token())
    }

    /// See [`LockGuard::is_lost`].
    pub fn is_lost(&self) -> bool {
        self.hold.remote().is_some_and(|r| r.is_lost())
    }
}

impl Drop for AsyncLockGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.trace {
            trace::released(self.hold.entry().name(), t.site, t.acquired);
        }
    }
}

impl std::fmt::Debug for AsyncLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncLockGuard").field("name", &self.name()).finish_non_exhaustive()
    }
}

fn lock_file(hold: &Hold) -> Option<PathBuf> {
    hold.file_path()
}
