//! The acquisition steps that the builder and `#[synchronized]` call sites
//! share: the in-process lock first, then the external one.
//!
//! A thread that may block waits for the external lock itself; a timed
//! wait on lock files, and every async wait, goes to a helper thread
//! ([`Pending`]) that the caller can give up on. The caller keeps the
//! in-process lock throughout, so giving up (a timeout, a dropped future)
//! frees it at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::LockError;
use crate::external::{self, Arrival, Backend, Chosen, Dir, ExternalHold, Pending};
use crate::guard::{AsyncLockGuard, LockGuard, check_reentry};
use crate::hold::{EntryRef, Hold};
use crate::local::timer::Sleep;
use crate::order::{self, AsyncHold, SyncHold, Task};
use crate::registry;
use crate::spec::{Kind, Mode, Wait};
use crate::trace::{self, Site};

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
    fn wants_external(&self) -> bool {
        self.external && (self.force_file || crate::config::process_locking())
    }
}

/// Takes the in-process lock, then (for external locks) the external one.
#[inline]
pub(crate) fn acquire(entry: EntryRef, req: &Request<'_>) -> Result<LockGuard, LockError> {
    // Before anything can wait: a cycle is reported even for a free lock.
    let order = if order::is_off() {
        SyncHold::NONE
    } else {
        order_enter(&entry, req)?
    };
    let started = trace::start();
    let mut wait = req.wait;
    let external = req.wants_external();
    if !entry.local.try_lock(req.mode) {
        wait = wait.start();
        // Counted while it waits, so a releaser may park its lock file for
        // it (cohorting); uncounted, with nothing parked, if it gives up.
        let arrival = external.then(|| entry.external().arrive());
        wait_in_process(&entry, req.mode, wait)?;
        let counted = arrival.map(Arrival::keep).is_some();
        // SAFETY: we just took the in-process lock in `req.mode`.
        let mut hold = unsafe { Hold::new(entry, req.mode) };
        if counted {
            hold.take_parked(req.dir);
            hold.entry().external().settled();
        }
        return finish_sync(hold, req, wait, order, started);
    }
    // SAFETY: we just took the in-process lock in `req.mode`.
    let mut hold = unsafe { Hold::new(entry, req.mode) };
    if external {
        // A releaser may have parked its lock file (cohorting).
        hold.take_parked(req.dir);
    }
    finish_sync(hold, req, wait, order, started)
}

/// The rest of [`acquire`], once the in-process lock is held: the
/// external lock unless it was handed over, then the guard.
#[inline]
fn finish_sync(
    hold: Hold,
    req: &Request<'_>,
    wait: Wait,
    order: SyncHold,
    started: Option<Instant>,
) -> Result<LockGuard, LockError> {
    let hold = if req.wants_external() && !hold.has_external() {
        let wait = wait.start();
        let hold = lock_external_sync(hold, req.dir, wait)?;
        if hold.entry().kind().flock {
            flock_sync(hold, wait)?
        } else {
            hold
        }
    } else {
        hold
    };
    Ok(LockGuard::new(hold, order, req.site, started))
}

/// The first and the longest pause between two tries of a flock(2) wait
/// that must end at a deadline or be given up (flock(2) has no timeout).
const FLOCK_PAUSES: (Duration, Duration) = (Duration::from_micros(500), Duration::from_millis(20));

/// With `flock`: after the OFD lock, flock(2) on the same file, waiting as
/// `wait` says. When it stays busy the hold is dropped here, giving back
/// the OFD and in-process locks before the error returns.
#[cold]
fn flock_sync(mut hold: Hold, wait: Wait) -> Result<Hold, LockError> {
    let deadline = wait.deadline();
    let block = !wait.is_try() && deadline.is_none();
    let mut pause = FLOCK_PAUSES.0;
    loop {
        if hold.flock(block)? {
            return Ok(hold);
        }
        let left = deadline.map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return Err(wait.busy(hold.entry().name()));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(FLOCK_PAUSES.1);
    }
}

/// The async counterpart of [`flock_sync`]: polls without blocking the
/// task's thread. Dropping the future drops the hold, releasing all.
#[cold]
async fn flock_async(hold: &mut Hold, wait: Wait) -> Result<bool, LockError> {
    let deadline = wait.deadline();
    let mut pause = FLOCK_PAUSES.0;
    loop {
        if hold.flock(false)? {
            return Ok(true);
        }
        let now = Instant::now();
        if wait.is_try() || deadline.is_some_and(|d| d <= now) {
            return Ok(false);
        }
        let next = now + pause;
        let mut sleep = Sleep::new(deadline.map_or(next, |d| d.min(next)));
        std::future::poll_fn(|cx| {
            if sleep.poll_expired(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        pause = (pause * 2).min(FLOCK_PAUSES.1);
    }
}

fn order_site(site: Site) -> order::Site {
    match site {
        Site::Function(f) => order::Site::Function(f),
        Site::Caller(l) => order::Site::Caller(l),
    }
}

#[cold]
#[inline(never)]
fn order_enter(entry: &registry::Entry, req: &Request<'_>) -> Result<SyncHold, LockError> {
    // SAFETY: the entry (and so its name) outlives the returned hold: the
    // guard owning both drops the hold first, and on a failed acquisition
    // the hold, a local, drops before the entry, a parameter.
    unsafe { order::enter(entry.name(), order_site(req.site), !req.wait.is_try()) }
}

#[cold]
#[inline(never)]
async fn order_enter_async(
    entry: &registry::Entry,
    req: &Request<'_>,
) -> Result<AsyncHold, LockError> {
    let task = Task::current().await;
    let waits = !req.wait.is_try();
    // SAFETY: as in `order_enter`, for the async guard.
    unsafe { order::enter_async(entry.name(), order_site(req.site), waits, task) }
}

#[cold]
fn wait_in_process(entry: &registry::Entry, mode: Mode, wait: Wait) -> Result<(), LockError> {
    if wait.is_try() {
        return Err(wait.busy(entry.name()));
    }
    check_reentry(entry);
    if entry.local.lock_until(mode, wait.deadline()) {
        Ok(())
    } else {
        Err(wait.busy(entry.name()))
    }
}

/// The backend for `dir`, checked against what the lock needs of it.
fn backend_for<'d>(hold: &Hold, dir: Dir<'d>) -> Result<Chosen<'d>, LockError> {
    let entry = hold.entry();
    let backend = external::choose(dir, entry.name())?;
    if entry.kind().permits.is_some() && !backend.supports_permits() {
        return Err(LockError::InvalidOptions {
            name: entry.name().to_owned(),
            reason: "semaphores (permits) work with lock files only, not lock servers",
        });
    }
    if entry.kind().flock && matches!(backend, Chosen::Server(_)) {
        return Err(LockError::InvalidOptions {
            name: entry.name().to_owned(),
            reason: "flock locks lock files; this lock is on a lock server",
        });
    }
    Ok(backend)
}

/// One attempt at the external lock, waiting as `wait` says and as far as
/// the backend can (see [`Backend::lock`]). `Ok(false)`: busy.
fn lock_external(hold: &mut Hold, backend: &Chosen<'_>, wait: Wait) -> Result<bool, LockError> {
    match backend.lock(&hold.entry().target(), hold.mode(), wait)? {
        Some(external) => {
            hold.set_external(external);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Takes the external lock for a thread that may block. A deadline the
/// backend cannot keep itself is kept by waiting on a helper thread that
/// is stopped when the deadline passes; this thread keeps its in-process
/// lock meanwhile, and on `Timeout` drops it with everything else.
fn lock_external_sync(mut hold: Hold, dir: Dir<'_>, wait: Wait) -> Result<Hold, LockError> {
    let backend = backend_for(&hold, dir)?;
    let deadline = match wait.deadline() {
        Some(d) if !backend.waits_until_deadline() => d,
        _ => {
            return match lock_external(&mut hold, &backend, wait)? {
                true => Ok(hold),
                false => Err(wait.busy(hold.entry().name())),
            };
        }
    };
    if lock_external(&mut hold, &backend, Wait::Try)? {
        return Ok(hold);
    }
    let pending = backend.start_wait(&hold.entry().target(), hold.mode(), wait)?;
    match pending.wait_until(deadline) {
        Some(Ok(Some(external))) => {
            hold.set_external(external);
            Ok(hold)
        }
        Some(Err(e)) => Err(e),
        // `pending` drops first: the helper is stopped and joined.
        Some(Ok(None)) | None => Err(wait.busy(hold.entry().name())),
    }
}

/// The async counterpart of [`acquire`]: waits without blocking the thread,
/// for the in-process lock and (on a helper thread) for the external lock.
/// Nothing that may take a network round trip runs on the caller's thread.
pub(crate) async fn acquire_async(
    entry: EntryRef,
    req: Request<'_>,
) -> Result<AsyncLockGuard, LockError> {
    let order = if order::is_off() {
        AsyncHold::NONE
    } else {
        order_enter_async(&entry, &req).await?
    };
    let started = trace::start();
    let wait = req.wait.start();
    let external = req.wants_external();
    let mut counted = false;
    if !entry.local.try_lock(req.mode) {
        if wait.is_try() {
            return Err(wait.busy(entry.name()));
        }
        // Counted while it waits (see `acquire`); dropping this future
        // drops the arrival, which gives up.
        let arrival = external.then(|| entry.external().arrive());
        if !entry.local.lock_async(req.mode, wait.deadline()).await {
            return Err(wait.busy(entry.name()));
        }
        counted = arrival.map(Arrival::keep).is_some();
    }
    // SAFETY: we just took the in-process lock in `req.mode`.
    let mut hold = unsafe { Hold::new(entry, req.mode) };
    if external {
        // A releaser may have parked its lock file (cohorting).
        hold.take_parked(req.dir);
    }
    if counted {
        hold.entry().external().settled();
    }
    if req.wants_external() && !hold.has_external() {
        let backend = backend_for(&hold, req.dir)?;
        let done = backend.try_is_cheap() && lock_external(&mut hold, &backend, Wait::Try)?;
        if !done {
            if wait.is_try() && backend.try_is_cheap() {
                return Err(wait.busy(hold.entry().name()));
            }
            let pending = backend.start_wait(&hold.entry().target(), hold.mode(), wait)?;
            let waiting = WaitFor {
                pending,
                sleep: wait.deadline().map(Sleep::new),
            };
            // Dropped here (or with this future): the wait is given up.
            match waiting.await? {
                Some(external) => hold.set_external(external),
                None => return Err(wait.busy(hold.entry().name())),
            }
        }
        if hold.entry().kind().flock && !flock_async(&mut hold, wait).await? {
            return Err(wait.busy(hold.entry().name()));
        }
    }
    Ok(AsyncLockGuard::new(hold, order, req.site, started))
}

/// Waits for a [`Pending`]; `Ok(None)` when the deadline passes first.
struct WaitFor {
    pending: Pending,
    sleep: Option<Sleep>,
}

impl Future for WaitFor {
    type Output = Result<Option<ExternalHold>, LockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.pending.poll(cx.waker()) {
            return Poll::Ready(r);
        }
        if let Some(sleep) = &mut self.sleep
            && sleep.poll_expired(cx)
        {
            // The helper may have finished just now; take it if so.
            return Poll::Ready(self.pending.poll(cx.waker()).unwrap_or(Ok(None)));
        }
        Poll::Pending
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
    if kind.flock && kind.permits.is_some() {
        return Err(invalid(
            "flock(2) has no counted mode: `flock` cannot be combined with permits",
        ));
    }
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
