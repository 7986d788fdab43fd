//! What kind of lock a name is, and its in-process primitive.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::fifo::{FifoAsync, FifoLock};
use crate::semaphore::{LockAsync, Mode, RawLock, WRITER};

/// What every user of a lock name must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Kind {
    /// First come, first served.
    pub(crate) fair: bool,
    /// `Some(n)`: a counted semaphore; `None`: a reader/writer lock (whose
    /// default, exclusive mode is a plain mutex).
    pub(crate) permits: Option<u32>,
}

impl Kind {
    pub(crate) const MUTEX: Kind = Kind {
        fair: false,
        permits: None,
    };

    fn capacity(self) -> usize {
        match self.permits {
            Some(n) => n as usize,
            None => WRITER,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.fair, self.permits) {
            (false, None) => f.write_str("a lock"),
            (true, None) => f.write_str("a fair lock"),
            (false, Some(n)) => write!(f, "a semaphore of {n} permits"),
            (true, Some(n)) => write!(f, "a fair semaphore of {n} permits"),
        }
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
            Local::Fair(FifoLock::new(kind.capacity()))
        } else {
            Local::Barging(RawLock::new(kind.capacity()))
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
