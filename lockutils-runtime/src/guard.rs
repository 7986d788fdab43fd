//! The guards users hold, and what this thread holds.
//!
//! Which thread holds a lock is needed for two things: the re-entry check
//! (a thread about to wait for a lock it holds would wait forever) and
//! [`locks_held`]. Both are rare, so the common case pays little: a writer
//! (an exclusive holder of a plain or fair lock, the most common case)
//! writes its thread's id and a sequence number into the entry; readers
//! and semaphore holders, which share a lock, are listed in a thread-local
//! list instead.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::path::PathBuf;

use crate::external::Location;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::external::Lost;
use crate::hold::Hold;
use crate::order::{AsyncOrderToken, OrderToken};
use crate::registry::{self, Entry};
use crate::trace::{self, Site};

thread_local! {
    /// Its address identifies the thread (while it lives).
    static ME: u8 = const { 0 };
    /// Counts this thread's synchronous acquisitions, to order `locks_held`.
    static SEQ: Cell<u64> = const { Cell::new(0) };
    /// Shared and semaphore holds of this thread, with their sequence
    /// numbers. A pointer stays valid while listed: the guard that listed
    /// it keeps the entry alive and unlists it when dropped.
    static SHARED: RefCell<Vec<(*const Entry, u64)>> = const { RefCell::new(Vec::new()) };
}

/// This thread's id: the address of a thread-local, never 0.
#[inline]
pub(crate) fn me() -> usize {
    ME.with(|b| b as *const u8 as usize)
}

#[inline]
fn next_seq() -> u64 {
    SEQ.with(|c| {
        let n = c.get() + 1;
        c.set(n);
        n
    })
}

/// Records this thread as the exclusive holder of `entry`.
#[inline(always)]
pub(crate) fn set_owner(entry: &Entry) {
    entry.owner_seq.store(next_seq(), Ordering::Relaxed);
    entry.owner.store(me(), Ordering::Relaxed);
}

/// Before releasing an exclusive hold.
#[inline(always)]
pub(crate) fn clear_owner(entry: &Entry) {
    entry.owner.store(0, Ordering::Relaxed);
}

/// The full names of the locks this thread holds through synchronous
/// acquisitions (`#[synchronized]` on a non-async function, or
/// [`Lock::acquire`](crate::Lock::acquire)), oldest first.
///
/// Locks held by async code are not listed: a future can move between
/// threads while it holds one. This looks through every lock in use, so it
/// is meant for debugging and assertions, not hot paths.
pub fn locks_held() -> Vec<String> {
    let me = me();
    let mut held: Vec<(u64, String)> = Vec::new();
    registry::for_each(|e| {
        if e.owner.load(Ordering::Relaxed) == me {
            held.push((e.owner_seq.load(Ordering::Relaxed), e.name().to_owned()));
        }
    });
    let _ = SHARED.try_with(|l| {
        for &(e, seq) in l.borrow().iter() {
            // SAFETY: listed entries are alive (see `SHARED`).
            held.push((seq, unsafe { &*e }.name().to_owned()));
        }
    });
    held.sort_unstable_by_key(|(seq, _)| *seq);
    held.into_iter().map(|(_, name)| name).collect()
}

/// Panics if this thread holds `entry` so that waiting for it would never
/// end: it holds the lock (exclusively or shared), or, for a semaphore,
/// every one of its permits. A thread holding some of a semaphore's
/// permits may wait for another: other holders can release one.
#[cold]
pub(crate) fn check_reentry(entry: &Entry) {
    let ptr: *const Entry = entry;
    let held_here = SHARED
        .try_with(|l| l.borrow().iter().filter(|&&(e, _)| e == ptr).count())
        .unwrap_or(0);
    let needed = match entry.kind().permits {
        Some(n) => n as usize,
        None => 1,
    };
    let mine = entry.owner.load(Ordering::Relaxed) == me() || held_here >= needed;
    if mine {
        panic!(
            "lockutils: this thread already holds lock {:?} and tried to take it again; \
             locks are not re-entrant, so waiting would deadlock",
            entry.name()
        );
    }
}

/// What `lock_file()` used to return: the path, or the server's
/// description as a path.
fn location_as_path(l: Location) -> PathBuf {
    match l {
        Location::File(p) => p,
        other => PathBuf::from(other.to_string()),
    }
}

struct Trace {
    site: Site,
    acquired: Instant,
}

#[cold]
#[inline(never)]
fn start_trace(hold: &Hold, site: Site, started: Instant) -> Option<Box<Trace>> {
    let location = hold.location();
    let acquired = trace::acquired(hold, site, location.as_ref(), started);
    Some(Box::new(Trace { site, acquired }))
}

/// Lists a shared or semaphore hold of this thread.
#[cold]
#[inline(never)]
fn list(entry: &Entry, seq: u64) {
    let e: *const Entry = entry;
    // `try_with`: a guard taken in a thread-local destructor is simply not
    // listed.
    let _ = SHARED.try_with(|l| l.borrow_mut().push((e, seq)));
}

#[cold]
#[inline(never)]
fn unlist(entry: &Entry) {
    let ptr: *const Entry = entry;
    let _ = SHARED.try_with(|l| {
        let mut l = l.borrow_mut();
        if let Some(i) = l.iter().rposition(|&(e, _)| e == ptr) {
            l.swap_remove(i);
        }
    });
}

#[cold]
#[inline(never)]
fn end_trace(entry: &Entry, t: Option<Box<Trace>>) {
    if let Some(t) = t {
        trace::released(entry.name(), t.site, t.acquired);
    }
}

/// A held lock, taken by a synchronous caller. Dropping it releases the
/// lock file (if any), then the in-process lock.
///
/// It cannot be sent to another thread: the thread that took the lock
/// releases it, which keeps [`locks_held`] and the re-entry check honest.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    // Dropped before `hold`: it names the lock by the entry's name.
    _order: OrderToken,
    hold: Hold,
    // Freed by `end_trace`, keeping the drop glue small.
    trace: ManuallyDrop<Option<Box<Trace>>>,
    _not_send: PhantomData<*const ()>,
}

impl LockGuard {
    #[inline(always)]
    pub(crate) fn new(
        hold: Hold,
        order: OrderToken,
        site: Site,
        started: Option<Instant>,
    ) -> LockGuard {
        let entry = hold.entry();
        if hold.is_writer() {
            set_owner(entry);
        } else {
            list(entry, next_seq());
        }
        let trace = match started {
            None => None,
            Some(t) => start_trace(&hold, site, t),
        };
        LockGuard {
            _order: order,
            hold,
            trace: ManuallyDrop::new(trace),
            _not_send: PhantomData,
        }
    }

    /// The full lock name (prefix, separator, name).
    pub fn name(&self) -> &str {
        self.hold.entry().name()
    }

    /// Where the external lock is held: a lock file's path, or a lock
    /// server's URL (password removed) and key. `None` when in-process only,
    /// or with process locking disabled.
    pub fn location(&self) -> Option<Location> {
        self.hold.location()
    }

    /// The lock file held, for an external lock (`None` when in-process
    /// only, or with process locking disabled). For a lock on a lock
    /// server, a description of it (URL and key).
    #[deprecated(
        since = "0.1.1",
        note = "use `location()`, which tells a lock file from a lock server"
    )]
    pub fn lock_file(&self) -> Option<PathBuf> {
        self.hold.location().map(location_as_path)
    }

    /// For a lock held on a lock server that provides one (PostgreSQL,
    /// etcd, Redis, MariaDB; not MySQL, nor lock files): a token that grows
    /// with every acquisition of the lock, to fence writes with. A store
    /// that refuses a token lower than one it has seen refuses a holder
    /// whose lock was given away while it was still working.
    pub fn fencing_token(&self) -> Option<u64> {
        self.hold.fencing_token()
    }

    /// For a lock held on a lock server: whether the backend's keepalive
    /// found that the server may have given it to someone else (the
    /// session, lease or key is gone). It reads a flag and asks no server,
    /// so it can be late: between the server letting the lock go and this
    /// turning `true` (PostgreSQL and MySQL: up to about a second, or 3 s
    /// for a server that stops answering; etcd: milliseconds, or the TTL
    /// when renewals stop getting through; Redis: up to a third of the
    /// TTL) another holder may already have the lock; use
    /// [`fencing_token`](Self::fencing_token) where that matters. In a
    /// child forked while the lock was held, the lock is the parent's:
    /// `true`. Lock files cannot be lost this way: always `false`.
    pub fn is_lost(&self) -> bool {
        self.hold.is_lost()
    }

    /// The descriptor of the open lock file the lock is held through (an
    /// external lock on lock files; `None` otherwise).
    ///
    /// On Linux the lock belongs to this open file description, not to the
    /// process: a child that inherits the descriptor (clear `FD_CLOEXEC` in
    /// the child, e.g. with `CommandExt::pre_exec`) keeps the lock held
    /// after this process dies, until every copy is closed. This is how
    /// `lockutils run` hands its lock to the command. Dropping the guard
    /// still releases it for all of them. Elsewhere (classic POSIX locks
    /// belong to the process) a child holds nothing through it.
    #[cfg(unix)]
    pub fn lock_file_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.hold.open_file().map(|f| f.as_fd())
    }

    /// For a lock held on a lock server: a future that completes when the
    /// lock is lost (the backend's keepalive found its session, lease or key
    /// gone; a `tracing` warning says so too). It does not hold the lock or
    /// borrow the guard, so it can be raced against the work the lock
    /// protects (`select!`) or awaited on another task. It never completes
    /// if the guard is dropped first, nor for locks that cannot be lost
    /// (in-process, lock files).
    pub fn lost(&self) -> Lost {
        self.hold.lost()
    }

    pub(crate) fn hold_mut(&mut self) -> &mut Hold {
        &mut self.hold
    }
}

impl Drop for LockGuard {
    #[inline(always)]
    fn drop(&mut self) {
        let entry = self.hold.entry();
        if self.hold.is_writer() {
            clear_owner(entry);
        } else {
            unlist(entry);
        }
        if self.trace.is_some() {
            end_trace(entry, self.trace.take());
        }
        // `hold` drops next: lock file, then in-process lock.
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// A held lock, taken by async code ([`Lock::acquire_async`](crate::Lock::acquire_async)
/// or `#[synchronized]` on an `async fn`). It is `Send`, so the future
/// holding it can move between executor threads. Dropping it releases the
/// lock file (if any), then the in-process lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct AsyncLockGuard {
    // Dropped before `hold`: it names the lock by the entry's name.
    _order: AsyncOrderToken,
    hold: Hold,
    trace: Option<Box<Trace>>,
}

impl AsyncLockGuard {
    pub(crate) fn new(
        hold: Hold,
        order: AsyncOrderToken,
        site: Site,
        started: Option<Instant>,
    ) -> AsyncLockGuard {
        let trace = started.and_then(|t| start_trace(&hold, site, t));
        AsyncLockGuard {
            _order: order,
            hold,
            trace,
        }
    }

    /// The full lock name (prefix, separator, name).
    pub fn name(&self) -> &str {
        self.hold.entry().name()
    }

    /// See [`LockGuard::location`].
    pub fn location(&self) -> Option<Location> {
        self.hold.location()
    }

    /// See [`LockGuard::lock_file`].
    #[deprecated(
        since = "0.1.1",
        note = "use `location()`, which tells a lock file from a lock server"
    )]
    pub fn lock_file(&self) -> Option<PathBuf> {
        self.hold.location().map(location_as_path)
    }

    /// See [`LockGuard::fencing_token`].
    pub fn fencing_token(&self) -> Option<u64> {
        self.hold.fencing_token()
    }

    /// See [`LockGuard::is_lost`].
    pub fn is_lost(&self) -> bool {
        self.hold.is_lost()
    }

    /// See [`LockGuard::lost`].
    pub fn lost(&self) -> Lost {
        self.hold.lost()
    }
}

impl Drop for AsyncLockGuard {
    fn drop(&mut self) {
        self.hold.release_server_elsewhere();
        end_trace(self.hold.entry(), self.trace.take());
    }
}

impl std::fmt::Debug for AsyncLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncLockGuard")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}
