//! The in-process primitives: what threads and async tasks of one process
//! wait on.
//!
//! * [`raw`]: the default, barging lock word and wait queue (reader/writer
//!   and counted modes);
//! * [`fifo`]: the fair (first come, first served) variant;
//! * [`cohort`]: what a releaser leaves for the next holder (lock
//!   cohorting) and the rule that it is never stranded;
//! * [`timer`]: deadlines for async waits, with no async runtime required.
//!
//! [`Local`] picks one of them for a lock's [`Kind`]. Nothing here knows
//! about names, files or servers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

pub(crate) mod cohort;
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

    pub(crate) fn lock_until(&self, mode: Mode, deadline: Option<Instant>) -> bool {
        match self {
            Local::Barging(l) => l.lock_until(mode, deadline),
            Local::Fair(l) => l.lock_until(mode, deadline),
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

    /// Releases the writer's mode, handing it straight to a thread queued
    /// for it if one is first in line, so that no newcomer barges in
    /// (fair locks hand over in order anyway).
    ///
    /// # Safety
    /// The caller must hold the writer's mode of a reader/writer lock.
    #[cold]
    pub(crate) unsafe fn unlock_fair(&self) {
        // SAFETY: forwarded.
        unsafe {
            match self {
                Local::Barging(l) => l.unlock_handoff(),
                Local::Fair(l) => l.unlock(Mode::Exclusive),
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
