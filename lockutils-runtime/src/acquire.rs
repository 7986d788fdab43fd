//! One acquisition, for the builder and the `#[synchronized]` call sites:
//! the in-process phase (a thread that may block, or an async task), then
//! one external phase with the backend's session.
//!
//! Invariants:
//! * the in-process lock is taken first and held throughout the external
//!   phase; giving up anywhere (a deadline, `blocking(false)`, an error, a
//!   dropped future) drops the [`Hold`], which releases everything at once;
//! * one deadline for the whole acquisition: a timeout is turned into an
//!   instant when the acquisition starts ([`Wait::start`]);
//! * nothing that may wait for a lock server or a lock file in the kernel
//!   runs on an async caller's thread: async external waits are polled
//!   (see `external::Waiting`);
//! * an in-process wait that is given up after the lock was handed over
//!   releases the lock like any holder ([`InProcessWait`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::LockError;
use crate::external::{self, Backend, Session, Target};
use crate::guard::{AsyncLockGuard, LockGuard, check_reentry};
use crate::hold::{self, EntryRef, Hold};
use crate::local::LocalAsync;
use crate::local::timer::Sleep;
use crate::metrics;
use crate::order::{self, AsyncOrderToken, OrderToken, Task};
use crate::registry::{self, Entry};
use crate::spec::{Kind, Mode, Options, Wait};
use crate::trace::{self, Site};

/// One acquisition: the options, and who asks.
#[derive(Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) opts: Options<'a>,
    /// Take the lock file even when process locking is switched off.
    pub(crate) force_file: bool,
    pub(crate) site: Site,
}

impl Request<'_> {
    #[inline]
    fn wants_external(&self) -> bool {
        self.opts.external && (self.force_file || crate::config::process_locking())
    }
}

/// Takes the in-process lock, then (for external locks) the external one,
/// blocking this thread as `req` allows.
#[inline]
pub(crate) fn acquire(entry: EntryRef, req: &Request<'_>) -> Result<LockGuard, LockError> {
    // Before anything can wait: a cycle is reported even for a free lock.
    let order = if order::is_off() {
        OrderToken::NONE
    } else {
        order_enter(&entry, req)?
    };
    let started = trace::start();
    let hold = take(entry, req)?;
    Ok(LockGuard::new(hold, order, req.site, started))
}

/// The locks of [`acquire`], without a guard: for a holder that is not
/// one thread's (an election's `Leadership`).
#[inline(always)]
pub(crate) fn take(entry: EntryRef, req: &Request<'_>) -> Result<Hold, LockError> {
    let mut clock = metrics::Clock::start();
    let mode = req.opts.mode;
    let wait = req.opts.wait.start();
    let hold = if entry.local.try_lock(mode) {
        // SAFETY: just taken in `mode`, without waiting.
        unsafe { Hold::new(entry, mode) }
    } else {
        clock.contended();
        wait_in_process(entry, mode, wait, req.wants_external())?
    };
    let mut hold = if req.wants_external() {
        finish_sync(hold, req, wait, &mut clock)?
    } else {
        hold
    };
    hold.acquired(clock);
    Ok(hold)
}

/// The async counterpart of [`acquire`]: never blocks the caller's thread.
pub(crate) async fn acquire_async(
    entry: EntryRef,
    req: Request<'_>,
) -> Result<AsyncLockGuard, LockError> {
    let order = if order::is_off() {
        AsyncOrderToken::NONE
    } else {
        order_enter_async(&entry, &req).await?
    };
    let started = trace::start();
    let hold = take_async(entry, &req).await?;
    Ok(AsyncLockGuard::new(hold, order, req.site, started))
}

/// The locks of [`acquire_async`], without a guard (see [`take`]).
pub(crate) async fn take_async(entry: EntryRef, req: &Request<'_>) -> Result<Hold, LockError> {
    let mut clock = metrics::Clock::start();
    let mode = req.opts.mode;
    let wait = req.opts.wait.start();
    let hold = if entry.local.try_lock(mode) {
        // SAFETY: just taken in `mode`, without waiting.
        unsafe { Hold::new(entry, mode) }
    } else if wait.is_try() {
        return Err(wait.busy(entry.name()));
    } else {
        clock.contended();
        let got = InProcessWait::new(&entry, mode, wait.deadline()).await;
        if !got {
            return Err(wait.busy(entry.name()));
        }
        // SAFETY: just taken in `mode`, by waiting.
        unsafe { Hold::waited(entry, mode, req.wants_external()) }
    };
    let mut hold = if req.wants_external() {
        finish_async(hold, req, wait, &mut clock).await?
    } else {
        hold
    };
    hold.acquired(clock);
    Ok(hold)
}

#[cold]
fn wait_in_process(
    entry: EntryRef,
    mode: Mode,
    wait: Wait,
    external: bool,
) -> Result<Hold, LockError> {
    if wait.is_try() {
        return Err(wait.busy(entry.name()));
    }
    check_reentry(&entry);
    // While a lock file is being handed from thread to thread, a writer
    // queues at once and spins a little before it parks (see
    // `Local::lock_until`).
    let spin = mode == Mode::Exclusive && entry.files_if_made().is_some_and(|f| f.handing_over());
    if entry.local.lock_until(mode, wait.deadline(), spin) {
        // SAFETY: just taken in `mode`, by waiting.
        Ok(unsafe { Hold::waited(entry, mode, external) })
    } else {
        Err(wait.busy(entry.name()))
    }
}

/// An async wait for an in-process lock. Dropped before it completes, it
/// gives up; if the lock was handed to it meanwhile (with a lock file,
/// perhaps), it releases that like any holder.
pub(crate) struct InProcessWait<'a> {
    entry: &'a Entry,
    mode: Mode,
    fut: LocalAsync<'a>,
    done: bool,
}

impl<'a> InProcessWait<'a> {
    pub(crate) fn new(entry: &'a Entry, mode: Mode, deadline: Option<Instant>) -> Self {
        InProcessWait {
            entry,
            mode,
            fut: entry.local.lock_async(mode, deadline),
            done: false,
        }
    }
}

impl Future for InProcessWait<'_> {
    /// `true`: taken (the caller owns it, see `Hold::waited`); `false`:
    /// the deadline passed.
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        let got = std::task::ready!(Pin::new(&mut this.fut).poll(cx));
        this.done = true;
        Poll::Ready(got)
    }
}

impl Drop for InProcessWait<'_> {
    fn drop(&mut self) {
        if !self.done && self.fut.cancel() {
            // Handed over while nobody was polling: release it, and what
            // came with it, as a holder would.
            let writer = self.mode == Mode::Exclusive && self.entry.kind().permits.is_none();
            let handed = if writer {
                // SAFETY: `cancel` said the lock is ours, in the writer's mode.
                self.entry
                    .files_if_made()
                    .and_then(|f| unsafe { f.take_handed() })
                    .map(Session::File)
            } else {
                None
            };
            // SAFETY: held in `mode` (`cancel` said so); given up here.
            unsafe { hold::release(self.entry, self.mode, writer, handed) };
        }
    }
}

/// The backend for `hold`'s lock as `req` places it, checked against what
/// the lock needs of it.
fn backend_for<'h>(hold: &'h Hold, req: &Request<'h>) -> Result<Backend<'h>, LockError> {
    let entry = hold.entry();
    let backend = external::choose(req.opts.place(), entry.name(), || entry.files())?;
    if backend.is_server() {
        req.opts.check_server(entry.name())?;
    }
    Ok(backend)
}

/// A lock file handed over with the in-process lock, if this acquisition
/// can use it (it asks for the same place); one it cannot use is let go.
fn usable(hold: &Hold, backend: &Backend<'_>, handed: Option<Session>) -> Option<Session> {
    match handed {
        Some(Session::File(f)) if !backend.serves(&f) => {
            // SAFETY: `hold` holds the in-process lock the file was taken
            // for, and keeps it (the handoff is refused).
            unsafe { f.release(hold.entry().files(), hold.is_writer(), false, || false) };
            None
        }
        other => other,
    }
}

/// What a backend is asked to lock for `hold`, as `req` asks.
fn target<'h>(hold: &'h Hold, req: &Request<'h>) -> Target<'h> {
    Target {
        name: hold.entry().name(),
        kind: hold.entry().kind(),
        mode: hold.mode(),
        identity: req.opts.identity,
    }
}

/// The external phase of [`acquire`]: the backend's session, waiting on
/// this thread as `wait` allows.
fn finish_sync(
    mut hold: Hold,
    req: &Request<'_>,
    wait: Wait,
    clock: &mut metrics::Clock,
) -> Result<Hold, LockError> {
    let handed = hold.take_session();
    let session = {
        let backend = backend_for(&hold, req)?;
        match usable(&hold, &backend, handed) {
            Some(s) => Some(s),
            None => {
                let t = target(&hold, req);
                match wait {
                    Wait::Try => backend.try_lock(&t)?,
                    // Counting contention: one try first (see `metrics`).
                    _ if metrics::ON => match backend.try_lock(&t)? {
                        Some(s) => Some(s),
                        None => {
                            clock.contended();
                            backend.lock_blocking(&t, wait)?
                        }
                    },
                    _ => backend.lock_blocking(&t, wait)?,
                }
            }
        }
    };
    match session {
        Some(s) => hold.set_session(s),
        None => return Err(wait.busy(hold.entry().name())),
    }
    if hold.entry().kind().flock {
        flock_sync(&mut hold, wait)?;
    }
    Ok(hold)
}

/// The external phase of [`acquire_async`]: a lock file is tried at once
/// (a system call); anything that must wait is polled.
async fn finish_async(
    mut hold: Hold,
    req: &Request<'_>,
    wait: Wait,
    clock: &mut metrics::Clock,
) -> Result<Hold, LockError> {
    let handed = hold.take_session();
    let session = {
        let backend = backend_for(&hold, req)?;
        match usable(&hold, &backend, handed) {
            Some(s) => Some(s),
            None => {
                let t = target(&hold, req);
                let cheap = backend.try_is_cheap();
                // Counting contention: one try first (see `metrics`), on
                // the helper thread for a lock server.
                let tried = cheap || metrics::ON;
                let first = if cheap {
                    backend.try_lock(&t)?
                } else if tried {
                    wait_external(&backend, &t, Wait::Try).await?
                } else {
                    None
                };
                match first {
                    Some(s) => Some(s),
                    None if tried && wait.is_try() => None,
                    None => {
                        if tried {
                            clock.contended();
                        }
                        wait_external(&backend, &t, wait).await?
                    }
                }
            }
        }
    };
    match session {
        Some(s) => hold.set_session(s),
        None => return Err(wait.busy(hold.entry().name())),
    }
    if hold.entry().kind().flock && !flock_async(&mut hold, wait).await? {
        return Err(wait.busy(hold.entry().name()));
    }
    Ok(hold)
}

/// Waits for the external lock without blocking the task's thread, until
/// `wait`'s deadline (`Ok(None)` then). Dropped, it gives everything up.
async fn wait_external(
    backend: &Backend<'_>,
    t: &Target<'_>,
    wait: Wait,
) -> Result<Option<Session>, LockError> {
    let mut waiting = Some(backend.wait(t, wait)?);
    let deadline = wait.deadline();
    let mut expiry = deadline.map(Sleep::new);
    let mut retry: Option<(Instant, Sleep)> = None;
    std::future::poll_fn(|cx| {
        let w = waiting.as_mut().expect("polled after completion");
        if let Poll::Ready(r) = w.poll(t, cx.waker()) {
            waiting = None;
            return Poll::Ready(r);
        }
        if let Some(s) = &mut expiry
            && s.poll_expired(cx)
        {
            if let Some(w) = waiting.take() {
                w.cancel(t);
            }
            return Poll::Ready(Ok(None));
        }
        // A wait that also tries by itself (semaphore slots, classic
        // locks) wants to be polled again by then.
        if let Some(at) = w.next_try() {
            let sleep = match &mut retry {
                Some((when, s)) if *when == at => s,
                _ => &mut retry.insert((at, Sleep::new(at))).1,
            };
            if sleep.poll_expired(cx) {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    })
    .await
}

/// The first and the longest pause between two tries of a flock(2) wait
/// that must end at a deadline or be given up (flock(2) has no timeout).
const FLOCK_PAUSES: (Duration, Duration) = (Duration::from_micros(500), Duration::from_millis(20));

/// With `flock`: after the record lock, flock(2) on the same file,
/// waiting as `wait` says (see `external::file`). `Err` when it stays
/// busy: the caller drops the hold, giving back everything.
#[cold]
fn flock_sync(hold: &mut Hold, wait: Wait) -> Result<(), LockError> {
    let deadline = wait.deadline();
    let block = !wait.is_try() && deadline.is_none();
    let mut pause = FLOCK_PAUSES.0;
    loop {
        if hold.flock(block)? {
            return Ok(());
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
/// task's thread. `Ok(false)`: still busy at the deadline.
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
fn order_enter(entry: &Entry, req: &Request<'_>) -> Result<OrderToken, LockError> {
    // SAFETY: the entry (and so its name) outlives the returned hold: the
    // guard owning both drops the hold first, and on a failed acquisition
    // the hold, a local, drops before the entry, a parameter.
    unsafe { order::enter(entry.name(), order_site(req.site), !req.opts.wait.is_try()) }
}

#[cold]
#[inline(never)]
async fn order_enter_async(entry: &Entry, req: &Request<'_>) -> Result<AsyncOrderToken, LockError> {
    let task = Task::current().await;
    let waits = !req.opts.wait.is_try();
    order::enter_async(entry.name(), order_site(req.site), waits, task)
}

/// The registry entry for `full_name`, checking the options agree with
/// each other and with the name's other users.
pub(crate) fn entry_for(
    full_name: &str,
    opts: &Options<'_>,
) -> Result<registry::Handle, LockError> {
    opts.check(full_name)?;
    registry::get(full_name, opts.kind).map_err(|other: Kind| LockError::KindMismatch {
        name: full_name.to_owned(),
        this: opts.kind.to_string(),
        other: other.to_string(),
    })
}
