//! The in-process primitives: what threads and async tasks of one process
//! wait on.
//!
//! * [`raw`]: the default, barging lock word and wait queue (reader/writer
//!   and counted modes);
//! * [`fifo`]: the fair (first come, first served) variant;
//! * [`timer`]: deadlines for async waits, with no async runtime required.
//!
//! [`Local`] picks one of them for a lock's [`Kind`]. Nothing here knows
//! about names, files or servers.
//!
//! Both primitives can hand the writer's mode directly to a queued waiter
//! ([`Local::handoff`]), thread or task: the lock is never free in between,
//! so whatever the releaser passes along with it (a locked file) reaches
//! that one waiter and nobody else. A task's future dropped after such a
//! grant holds the lock: [`LocalAsync::cancel`] tells its owner so, who
//! then releases it like any holder.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

pub(crate) mod fifo;
pub(crate) mod raw;
pub(crate) mod sync;
pub(crate) mod timer;

#[cfg(all(test, lockutils_loom))]
pub(crate) mod tests;

use fifo::{FifoAsync, FifoLock};
use raw::{LockAsync, RawLock, WRITER};

use crate::spec::{Kind, Mode};

/// The capacity of the primitive for `kind`: [`WRITER`] units for a
/// reader/writer lock, `n` for a semaphore of `n` permits.
fn capacity(kind: Kind) -> usize {
    match kind.permits {
        Some(n) => n as usize,
        None => WRITER,
    }
}

/// The in-process primitive of one lock name.
pub(crate) enum Local {
    Barging(RawLock),
    Fair(FifoLock),
}

impl Local {
    pub(crate) fn new(kind: Kind) -> Local {
        if kind.fair {
            Local::Fair(FifoLock::new(capacity(kind)))
        } else {
            Local::Barging(RawLock::new(capacity(kind)))
        }
    }

    #[inline(always)]
    pub(crate) fn try_lock(&self, mode: Mode) -> bool {
        match self {
            Local::Barging(l) => l.try_lock(mode),
            Local::Fair(l) => l.try_lock(mode),
        }
    }

    /// Waits for `mode` until `deadline`; `spin`: spin a little once
    /// queued, for a lock likely to be handed over soon.
    pub(crate) fn lock_until(&self, mode: Mode, deadline: Option<Instant>, spin: bool) -> bool {
        match self {
            Local::Barging(l) => l.lock_until(mode, deadline, spin),
            Local::Fair(l) => l.lock_until(mode, deadline, spin),
        }
    }

    pub(crate) fn lock_async(&self, mode: Mode, deadline: Option<Instant>) -> LocalAsync<'_> {
        match self {
            Local::Barging(l) => LocalAsync::Barging(l.lock_async(mode, deadline)),
            Local::Fair(l) => LocalAsync::Fair(l.lock_async(mode, deadline)),
        }
    }

    /// # Safety
    /// The caller must hold `mode`.
    #[inline(always)]
    pub(crate) unsafe fn unlock(&self, mode: Mode) {
        // SAFETY: forwarded.
        unsafe {
            match self {
                Local::Barging(l) => l.unlock(mode),
                Local::Fair(l) => l.unlock(mode),
            }
        }
    }

    /// Holders now (a writer counts as one).
    pub(crate) fn holders(&self) -> usize {
        match self {
            Local::Barging(l) => l.holders(),
            Local::Fair(l) => l.holders(),
        }
    }

    /// Hands the writer's mode to the waiter first in line if it waits
    /// for the writer's mode (thread or task). Returns whether it did; if
    /// not, the caller still holds the lock.
    ///
    /// # Safety
    /// The caller must hold the writer's mode of a reader/writer lock.
    #[cold]
    pub(crate) unsafe fn handoff(&self) -> bool {
        // SAFETY: forwarded.
        unsafe {
            match self {
                Local::Barging(l) => l.handoff(),
                Local::Fair(l) => l.handoff(),
            }
        }
    }

    /// Whether anyone is queued, for introspection.
    pub(crate) fn has_waiters(&self) -> bool {
        match self {
            Local::Barging(l) => l.has_waiters(),
            Local::Fair(l) => l.queued() > 0,
        }
    }

    /// Waiters in line (fair locks only; 0 otherwise).
    pub(crate) fn queued(&self) -> usize {
        match self {
            Local::Barging(_) => 0,
            Local::Fair(l) => l.queued(),
        }
    }
}

/// Future of [`Local::lock_async`].
pub(crate) enum LocalAsync<'a> {
    Barging(LockAsync<'a>),
    Fair(FifoAsync<'a>),
}

impl LocalAsync<'_> {
    /// Gives up waiting; `true` if the lock was handed over meanwhile (the
    /// caller holds it then, and must release it).
    pub(crate) fn cancel(&mut self) -> bool {
        match self {
            LocalAsync::Barging(f) => f.cancel(),
            LocalAsync::Fair(f) => f.cancel(),
        }
    }
}

impl Future for LocalAsync<'_> {
    type Output = bool;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        // Both variants are Unpin.
        match self.get_mut() {
            LocalAsync::Barging(f) => Pin::new(f).poll(cx),
            LocalAsync::Fair(f) => Pin::new(f).poll(cx),
        }
    }
}
