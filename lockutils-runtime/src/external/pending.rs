//! An external lock being waited for on a helper thread, for callers that
//! must not block (async) or must stop at a deadline.
//!
//! The helper owns only what the backend gives it for the wait (its own
//! open lock file, or a lock server's name): the caller keeps the
//! in-process lock, so giving up frees that at once. When the caller gives
//! up (drops the [`Pending`]):
//! * a stoppable wait (lock files on Linux) is interrupted with the
//!   interrupt signal (`file::sys::interrupt`), re-sent until the helper
//!   says it has left its wait, and the thread is joined: no thread or
//!   descriptor outlives the acquisition;
//! * any other wait (a lock server waiting until its deadline, or a
//!   platform without the signal) is left to finish; whatever it gets then
//!   is released at once, and it holds nothing anyone else needs meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ExternalHold;
use super::file::sys::interrupt;
use crate::error::LockError;

/// What the helper found: the external lock, `None` if it gave up (a lock
/// server's deadline passed, or it was stopped), or an error.
pub(crate) type Outcome = Result<Option<ExternalHold>, LockError>;

/// What the helper's body is told: whether it should stop waiting.
pub(crate) struct Stop(AtomicBool);

impl Stop {
    /// A stop never asked, for waits nobody will call off.
    pub(crate) fn never() -> Stop {
        Stop(AtomicBool::new(false))
    }

    /// True once the caller gave up.
    pub(crate) fn asked(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    stop: Stop,
}

struct Inner {
    /// The helper's result, until taken: `None` while waiting or once taken.
    outcome: Option<Outcome>,
    /// Woken when the outcome arrives.
    waker: Option<Waker>,
    /// The helper's body has returned.
    finished: bool,
}

/// A wait on a helper thread; see the module docs.
pub(crate) struct Pending {
    shared: Arc<Shared>,
    /// Joined on drop after a stop; `None` for waits that cannot be stopped
    /// (the thread is detached).
    thread: Option<JoinHandle<()>>,
    helper: u64,
}

impl Pending {
    /// Runs `body` on a new thread. `stoppable`: `body` waits only in
    /// calls that the interrupt signal ends, and checks [`Stop::asked`]
    /// after each.
    pub(crate) fn spawn(
        name: &str,
        stoppable: bool,
        body: impl FnOnce(&Stop) -> Outcome + Send + 'static,
    ) -> Result<Pending, LockError> {
        let stoppable = stoppable && interrupt::signal().is_some();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                outcome: None,
                waker: None,
                finished: false,
            }),
            changed: Condvar::new(),
            stop: Stop(AtomicBool::new(false)),
        });
        let theirs = shared.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("lockutils-wait".into())
            .spawn(move || {
                interrupt::helper_signal_mask();
                let _ = tx.send(interrupt::this_thread());
                let outcome = body(&theirs.stop);
                theirs.finish(outcome);
            })
            .map_err(|source| LockError::Io {
                name: name.to_owned(),
                path: std::path::PathBuf::new(),
                op: "start a thread to wait for",
                source,
            })?;
        let helper = rx.recv().unwrap_or(0);
        Ok(Pending {
            shared,
            thread: stoppable.then_some(thread),
            helper,
        })
    }

    /// Blocks until the helper finished (`Some`) or `deadline` passed.
    pub(crate) fn wait_until(&self, deadline: Instant) -> Option<Outcome> {
        let mut inner = self.shared.lock();
        loop {
            if let Some(r) = inner.outcome.take() {
                return Some(r);
            }
            let now = Instant::now();
            if inner.finished || now >= deadline {
                return None;
            }
            inner = self
                .shared
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// For futures: the result if the helper finished, else remembers the
    /// waker to wake when it does.
    pub(crate) fn poll(&self, waker: &Waker) -> Option<Outcome> {
        let mut inner = self.shared.lock();
        if let Some(r) = inner.outcome.take() {
            return Some(r);
        }
        match &inner.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => inner.waker = Some(waker.clone()),
        }
        None
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The helper's last step: hands its outcome over, or releases it if
    /// the caller already left.
    fn finish(&self, outcome: Outcome) {
        let mut inner = self.lock();
        inner.finished = true;
        if self.stop.asked() {
            drop(inner);
            self.changed.notify_all();
            // The caller left: a lock got late goes at once.
            if let Ok(Some(hold)) = outcome {
                hold.close();
            }
            return;
        }
        inner.outcome = Some(outcome);
        let waker = inner.waker.take();
        drop(inner);
        self.changed.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (unclaimed, finished) = {
            let mut inner = self.shared.lock();
            // Under the lock, so `finish` sees either "asked" or a caller
            // still there to take its outcome.
            self.shared.stop.0.store(true, Ordering::Release);
            (inner.outcome.take(), inner.finished)
        };
        // A result nobody took: release it now.
        if let Some(Ok(Some(hold))) = unclaimed {
            hold.close();
        }
        let Some(thread) = self.thread.take() else {
            return; // cannot be stopped: it releases what it gets itself
        };
        if !finished {
            self.interrupt_until_finished();
        }
        let _ = thread.join();
    }
}

impl Pending {
    /// Interrupts until the helper has left its wait. The signal can land
    /// just before the helper enters the kernel (then it is handled and
    /// the wait starts anyway), hence the repeats, with a growing pause.
    fn interrupt_until_finished(&self) {
        let mut pause = Duration::from_micros(20);
        let mut inner = self.shared.lock();
        while !inner.finished {
            interrupt::send(self.helper);
            inner = self
                .shared
                .changed
                .wait_timeout(inner, pause)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}
