//! The acquisition steps that the builder and `#[synchronized]` call sites
//! share: the in-process lock first, then the external one.
//!
//! A thread that may block waits for the external lock itself; a timed
//! wait on lock files, and every async wait, goes to a helper thread
//! ([`Handoff`]) that the caller can abandon.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::LockError;
use crate::external::{self, Backend, Dir};
use crate::guard::{AsyncLockGuard, LockGuard, check_reentry};
use crate::hold::{EntryRef, Hold};
use crate::local::timer::Sleep;
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
    let started = trace::start();
    let mut wait = req.wait;
    if !entry.local.try_lock(req.mode) {
        wait = wait.start();
        wait_in_process(&entry, req.mode, wait)?;
    }
    // SAFETY: we just took the in-process lock in `req.mode`.
    let hold = unsafe { Hold::new(entry, req.mode) };
    let hold = if req.wants_external() {
        lock_external_sync(hold, req.dir, wait.start())?
    } else {
        hold
    };
    Ok(LockGuard::new(hold, req.site, started))
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

/// One attempt at the external lock for `dir`, waiting as `wait` says and
/// as far as the backend can (see [`Backend::lock`]). `Ok(false)`: busy.
fn lock_external(hold: &mut Hold, dir: Dir<'_>, wait: Wait) -> Result<bool, LockError> {
    let target = hold.entry().target();
    let backend = external::choose(dir, target.name)?;
    if target.kind.permits.is_some() && !backend.supports_permits() {
        return Err(LockError::InvalidOptions {
            name: target.name.to_owned(),
            reason: "semaphores (permits) work with lock files only, not lock servers",
        });
    }
    match backend.lock(&target, hold.mode(), wait)? {
        Some(external) => {
            hold.set_external(external);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Takes the external lock for a thread that may block. A deadline the
/// backend cannot keep itself is kept by waiting on a helper thread. When
/// it stays busy the hold is dropped (releasing the in-process lock).
fn lock_external_sync(mut hold: Hold, dir: Dir<'_>, wait: Wait) -> Result<Hold, LockError> {
    let busy = |hold: &Hold| wait.busy(hold.entry().name());
    let Some(deadline) = wait.deadline() else {
        return match lock_external(&mut hold, dir, wait)? {
            true => Ok(hold),
            false => Err(busy(&hold)),
        };
    };
    let waits_itself = external::choose(dir, hold.entry().name())?.waits_until_deadline();
    let first = if waits_itself { wait } else { Wait::Try };
    if lock_external(&mut hold, dir, first)? {
        return Ok(hold);
    }
    let err = busy(&hold);
    if waits_itself {
        return Err(err);
    }
    match Handoff::start(hold, dir, wait)?.wait_until(deadline) {
        Some(Ok(Some(hold))) => Ok(hold),
        Some(Err(e)) => Err(e),
        Some(Ok(None)) | None => Err(err),
    }
}

/// The async counterpart of [`acquire`]: waits without blocking the thread,
/// for the in-process lock and (on a helper thread) for the external lock.
pub(crate) async fn acquire_async(
    entry: EntryRef,
    req: Request<'_>,
) -> Result<AsyncLockGuard, LockError> {
    let started = trace::start();
    let wait = req.wait.start();
    if !entry.local.try_lock(req.mode)
        && (wait.is_try() || !entry.local.lock_async(req.mode, wait.deadline()).await)
    {
        return Err(wait.busy(entry.name()));
    }
    // SAFETY: we just took the in-process lock in `req.mode`.
    let mut hold = unsafe { Hold::new(entry, req.mode) };
    if req.wants_external() && !lock_external(&mut hold, req.dir, Wait::Try)? {
        if wait.is_try() {
            return Err(wait.busy(hold.entry().name()));
        }
        let name = hold.entry().name().to_owned();
        let handoff = Handoff::start(hold, req.dir, wait)?;
        let waiting = WaitForFile {
            handoff,
            sleep: wait.deadline().map(Sleep::new),
        };
        hold = waiting.await?.ok_or_else(|| wait.busy(&name))?;
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

/// A wait for the lock file on a helper thread, for callers that must not
/// block (async) or must stop at a deadline. The helper owns the [`Hold`]
/// while it waits; if the caller gives up, the helper releases everything
/// as soon as its kernel wait ends.
struct Handoff {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    done: Condvar,
}

/// What the helper found: the hold, `None` if a lock server's deadline
/// passed, or an error.
type Outcome = Result<Option<Hold>, LockError>;

enum State {
    Waiting(Option<Waker>),
    Done(Outcome),
    Taken,
    Abandoned,
}

impl Handoff {
    /// Starts the helper thread; it takes the lock file in the kernel (no
    /// deadline there: the caller abandons it), or waits on a lock server
    /// that can until the deadline, so that nothing stays queued there.
    fn start(hold: Hold, dir: Dir<'_>, wait: Wait) -> Result<Handoff, LockError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Waiting(None)),
            done: Condvar::new(),
        });
        let theirs = shared.clone();
        let dir_owned = dir.to_owned();
        let name = hold.entry().name().to_owned();
        std::thread::Builder::new()
            .name("lockutils-wait".into())
            .spawn(move || {
                let mut hold = hold;
                let dir = dir_owned.borrow();
                let r: Outcome = match lock_external(&mut hold, dir, wait) {
                    Ok(true) => Ok(Some(hold)),
                    Ok(false) => Ok(None),
                    Err(e) => Err(e),
                };
                let mut st = theirs.state.lock().unwrap_or_else(|e| e.into_inner());
                match std::mem::replace(&mut *st, State::Taken) {
                    State::Waiting(waker) => {
                        *st = State::Done(r);
                        drop(st);
                        theirs.done.notify_all();
                        if let Some(w) = waker {
                            w.wake();
                        }
                    }
                    // The caller left: `r` (the hold) drops here, releasing.
                    _ => drop(st),
                }
            })
            .map_err(|source| LockError::Io {
                name,
                path: PathBuf::new(),
                op: "start a thread to wait for",
                source,
            })?;
        Ok(Handoff { shared })
    }

    /// Blocks until the helper finished or the deadline passed (`None`).
    fn wait_until(self, deadline: Instant) -> Option<Outcome> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let State::Done(_) = &*st {
                return take_done(&mut st);
            }
            let now = Instant::now();
            if now >= deadline {
                *st = State::Abandoned;
                return None;
            }
            st = self
                .shared
                .done
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// For futures: the result if the helper finished, else remembers the
    /// waker to wake.
    fn poll(&self, waker: &Waker) -> Option<Outcome> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *st {
            State::Waiting(w) => {
                match w {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                None
            }
            State::Done(_) => take_done(&mut st),
            State::Taken | State::Abandoned => None,
        }
    }
}

fn take_done(st: &mut State) -> Option<Outcome> {
    match std::mem::replace(st, State::Taken) {
        State::Done(r) => Some(r),
        other => {
            *st = other;
            None
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Waiting(_) = &*st {
            *st = State::Abandoned;
        }
        // A `Done` result nobody took drops with the state, releasing it.
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
