//! Waiting for a lock file on behalf of callers that must not block (async
//! tasks) or must stop at a deadline.
//!
//! A kernel wait for a record lock (`F_OFD_SETLKW`) cannot be called off:
//! closing the descriptor or any other lock call leaves it waiting, and
//! only a signal would end it, which would take a signal from the
//! application. So such callers do not wait in the kernel themselves.
//! They leave a [`Ticket`] with the file's [`Waiter`], a thread that waits
//! in the kernel for them and hands them what it gets; a caller that gives
//! up withdraws its ticket and returns at once, whatever the thread is
//! doing.
//!
//! Invariants:
//! * at most one waiter thread per lock file (device and inode) per
//!   process; a caller that arrives while it waits for a caller that left
//!   reuses its wait instead of starting another;
//! * a lock the thread gets goes to a ticket that still wants it (its
//!   caller holds the in-process lock in the matching mode until it
//!   withdraws, which happens under the same mutex); when no ticket wants
//!   it the thread unlocks it at once, so it never holds a lock for nobody
//!   longer than it takes to find that out;
//! * the thread ends when no ticket is left, so an idle process keeps no
//!   thread and no descriptor for it;
//! * it blocks every signal, so that the application's process-directed
//!   signals go to the application's threads; `EINTR` is retried anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use super::pool::Open;
use super::sys::Range;
use crate::error::LockError;
use crate::fork::PerProcess;
use crate::spec::Mode;

/// What a caller wants of a lock file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// The whole file in this mode.
    Whole(Mode),
    /// Any one of the semaphore's slots (bytes `0..permits`).
    Slot { permits: u32 },
}

/// A lock the thread got for a caller: the open file it holds it through.
pub(crate) type Got = (Open, Range);

/// A lock file's identity: device and inode.
type FileKey = (u64, u64);

/// The waiter threads of this process, by lock file.
static WAITERS: PerProcess<Mutex<HashMap<FileKey, Arc<Waiter>>>> =
    PerProcess::lazy(Default::default);

/// The thread (while it runs) that waits for one lock file.
pub(crate) struct Waiter {
    key: FileKey,
    /// The full lock name, for errors.
    name: Box<str>,
    state: Mutex<Queue>,
}

struct Queue {
    tickets: VecDeque<Arc<Ticket>>,
    /// The thread is running (it clears this as it ends, under the lock).
    running: bool,
}

/// One caller's request, shared with the thread.
pub(crate) struct Ticket {
    want: Want,
    /// Until when (in `handoff::clock` time) other processes have their
    /// turn at the file: the thread waits it out before it locks.
    turn: u64,
    inner: Mutex<Delivery>,
}

#[derive(Default)]
struct Delivery {
    /// A file the caller lent, for the thread to wait on if it has none.
    open: Option<Open>,
    outcome: Option<Result<Got, LockError>>,
    waker: Option<Waker>,
}

/// Spreads semaphore waits over the slots.
static SLOT_TURN: AtomicU32 = AtomicU32::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A caller's wait: dropped, it withdraws its ticket (see its `Drop`).
pub(crate) struct Wait {
    waiter: Arc<Waiter>,
    ticket: Arc<Ticket>,
}

impl Wait {
    /// Asks the waiter thread of `open`'s file (starting it if none runs)
    /// to get `want` for this caller, who holds the in-process lock in the
    /// matching mode and keeps it until it takes the result or withdraws.
    /// `open` is lent for the wait (and given back on withdrawal if the
    /// thread did not need it); `turn` as in [`Ticket`]. `name` is the full
    /// lock name.
    pub(crate) fn start(name: &str, open: Open, want: Want, turn: u64) -> Result<Wait, LockError> {
        let key = open
            .file
            .key()
            .map_err(|e| open.error(name, "inspect lock file", e))?;
        let ticket = Arc::new(Ticket {
            want,
            turn,
            inner: Mutex::new(Delivery {
                open: Some(open),
                ..Delivery::default()
            }),
        });
        let mut map = lock(WAITERS.get());
        let waiter = match map.get(&key) {
            Some(w) => w.clone(),
            None => {
                let w = Arc::new(Waiter {
                    key,
                    name: name.into(),
                    state: Mutex::new(Queue {
                        tickets: VecDeque::new(),
                        running: false,
                    }),
                });
                map.insert(key, w.clone());
                w
            }
        };
        let mut st = lock(&waiter.state);
        st.tickets.push_back(ticket.clone());
        if !st.running {
            st.running = true;
            let theirs = waiter.clone();
            let spawned = std::thread::Builder::new()
                .name("lockutils-wait".into())
                .spawn(move || theirs.run());
            if let Err(source) = spawned {
                st.running = false;
                st.tickets.pop_back();
                let empty = st.tickets.is_empty();
                drop(st);
                if empty {
                    map.remove(&key);
                }
                let open = lock(&ticket.inner).open.take();
                return Err(LockError::Io {
                    name: name.to_owned(),
                    path: open.map(|o| o.path(name)).unwrap_or_default(),
                    op: "start a thread to wait for",
                    source,
                });
            }
        }
        drop(st);
        drop(map);
        Ok(Wait { waiter, ticket })
    }

    /// The result if the thread delivered one (then this wait is over),
    /// else remembers `waker` to wake when it does.
    pub(crate) fn poll(&self, waker: &Waker) -> Option<Result<Got, LockError>> {
        let mut t = lock(&self.ticket.inner);
        if let Some(r) = t.outcome.take() {
            return Some(r);
        }
        match &t.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => t.waker = Some(waker.clone()),
        }
        None
    }
}

impl Drop for Wait {
    /// Gives up: takes the ticket back, and lets go of a lock that was
    /// delivered meanwhile. Never waits for the thread.
    fn drop(&mut self) {
        let mut st = lock(&self.waiter.state);
        st.tickets.retain(|t| !Arc::ptr_eq(t, &self.ticket));
        drop(st);
        let mut t = lock(&self.ticket.inner);
        let (outcome, lent) = (t.outcome.take(), t.open.take());
        drop(t);
        if let Some(Ok((open, range))) = outcome {
            // Closing the file would release it too; unlocking first
            // keeps the order the same as every other release.
            let _ = open.file.unlock(range);
        }
        drop(lent);
    }
}

impl Waiter {
    /// The thread's body: serves tickets in order until none is left.
    fn run(self: Arc<Self>) {
        block_signals();
        let mut open: Option<Open> = None;
        loop {
            let Some((want, turn)) = self.next(&mut open) else {
                return;
            };
            // Every ticket lends a file, and the thread takes one only
            // while it has none, so a file is at hand; if not, the oldest
            // ticket learns so rather than waiting forever.
            let got = match open.take() {
                Some(file) => wait_for(&self.name, file, want, turn),
                None => Err(LockError::Io {
                    name: self.name.to_string(),
                    path: Default::default(),
                    op: "wait for",
                    source: std::io::Error::other("no open lock file to wait on"),
                }),
            };
            open = self.deliver(want, got);
        }
    }

    /// The oldest ticket's wish, with a file to wait on in `open` (the
    /// thread's own from before, else the ticket's). `None`: no ticket is
    /// left, and the thread has deregistered.
    fn next(&self, open: &mut Option<Open>) -> Option<(Want, u64)> {
        // The map's lock first, as `Wait::start` takes them: a caller
        // either finds the thread still running or a fresh entry.
        let map = WAITERS.get();
        let mut map = lock(map);
        let mut st = lock(&self.state);
        let Some(ticket) = st.tickets.front().cloned() else {
            st.running = false;
            drop(st);
            if map.get(&self.key).is_some_and(|w| std::ptr::eq(&**w, self)) {
                map.remove(&self.key);
            }
            return None;
        };
        drop(map);
        if open.is_none() {
            *open = lock(&ticket.inner).open.take();
        }
        Some((ticket.want, ticket.turn))
    }

    /// Hands what a wait got to the oldest ticket that wants it, or
    /// unlocks it if none does. Returns the file to wait on next.
    fn deliver(&self, want: Want, got: Result<Got, LockError>) -> Option<Open> {
        let mut st = lock(&self.state);
        let taker = st.tickets.iter().position(|t| t.want == want);
        let Some(i) = taker else {
            drop(st);
            return match got {
                Ok((open, range)) => {
                    // Nobody wants it any more: let go at once. If even
                    // that fails, closing the file releases it.
                    open.file.unlock(range).ok().map(|()| open)
                }
                Err(_) => None,
            };
        };
        let ticket = st.tickets.remove(i).unwrap_or_else(|| unreachable!());
        let mut t = lock(&ticket.inner);
        // The taker's own file goes back with the lock, for its pool.
        let spare = t.open.take();
        t.outcome = Some(got);
        let waker = t.waker.take();
        drop(t);
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        spare
    }
}

/// Waits in the kernel, after other processes' turn, until `want` is
/// held through `open`. A removed file is the caller's to notice.
fn wait_for(name: &str, open: Open, want: Want, turn: u64) -> Result<Got, LockError> {
    super::handoff::wait_turn_until(&open.file, turn);
    let (mode, range) = match want {
        Want::Whole(mode) => (mode, Range::Whole),
        Want::Slot { permits } => {
            let first = std::process::id().wrapping_add(SLOT_TURN.fetch_add(1, Ordering::Relaxed))
                % permits.max(1);
            (Mode::Exclusive, Range::Byte(first))
        }
    };
    match open.file.lock(mode, range) {
        Ok(()) => Ok((open, range)),
        Err(e) => Err(open.error(name, "lock", e)),
    }
}

/// Blocks every signal this thread can block (see the module's invariants).
fn block_signals() {
    #[cfg(unix)]
    {
        // SAFETY: all-zero is a valid sigset to fill.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset; the mask is this thread's own.
        unsafe {
            libc::sigfillset(&mut set);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
    }
}

/// Waiter threads running now in this process (for tests).
pub(crate) fn running() -> usize {
    lock(WAITERS.get()).len()
}
