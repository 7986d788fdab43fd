//! How a held lock tells that it was lost: a flag that the backend's own
//! keepalive sets (so asking costs no round trip), a `tracing` warning the
//! first time, and an event that wakes every [`Lost`] future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};

use crate::fork::Born;

/// Set once, when a held lock is known lost; and always set in a child
/// forked without `exec` while the lock was held: the lock belongs to the
/// parent's session, lease or key, which the child can neither keep alive
/// nor watch, and the parent may release it at any moment.
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "etcd", feature = "mysql")),
    allow(dead_code) // only lock servers set it
)]
pub(crate) struct LostFlag {
    /// The process that holds the lock.
    born: Born,
    lost: AtomicBool,
    /// The hold was released on purpose: no warning, and no wake-up.
    released: AtomicBool,
    event: Event,
}

#[cfg_attr(
    not(any(
        feature = "redis",
        feature = "postgres",
        feature = "etcd",
        feature = "mysql"
    )),
    allow(dead_code)
)]
impl LostFlag {
    pub(crate) fn new() -> Arc<LostFlag> {
        Arc::new(LostFlag {
            born: Born::now(),
            lost: AtomicBool::new(false),
            released: AtomicBool::new(false),
            event: Event::new(),
        })
    }

    pub(crate) fn is_set(&self) -> bool {
        self.inherited() || self.lost.load(Ordering::Acquire)
    }

    /// Whether this process is a child forked while the lock was held: the
    /// hold is the parent's, and dropping it here must release nothing.
    pub(crate) fn inherited(&self) -> bool {
        !self.born.here()
    }

    /// Marks the lock lost: warns (once, naming `lock` and `why`) and wakes
    /// every [`Lost`] future. Nothing happens after [`released`](Self::released).
    pub(crate) fn set(&self, lock: &str, why: &str) {
        if self.released.load(Ordering::Acquire) || self.lost.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            lock,
            why,
            "lockutils: lock lost; the server may give it to someone else"
        );
        self.event.notify(usize::MAX);
    }

    /// The hold is being released: later losses are expected, not news.
    pub(crate) fn released(&self) {
        self.released.store(true, Ordering::Release);
    }
}

/// A future that completes when a held lock is lost (see
/// `LockGuard::lost`): the backend's keepalive found the session, lease or
/// key gone. In a child forked while the lock was held, it is complete at
/// once (the lock is the parent's). It never completes for a lock that is
/// released first, nor for a lock that cannot be lost (in-process, lock
/// files).
pub struct Lost {
    flag: Option<Arc<LostFlag>>,
    listener: Option<EventListener>,
}

impl Lost {
    pub(crate) fn new(flag: Option<Arc<LostFlag>>) -> Lost {
        Lost {
            flag,
            listener: None,
        }
    }
}

impl Future for Lost {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(flag) = this.flag.clone() else {
            return Poll::Pending;
        };
        loop {
            if flag.is_set() {
                return Poll::Ready(());
            }
            match this.listener.as_mut() {
                // Listen, then look again: a loss between the two is seen.
                None => this.listener = Some(flag.event.listen()),
                Some(l) => match Pin::new(l).poll(cx) {
                    Poll::Ready(()) => this.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl std::fmt::Debug for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lost = self.flag.as_ref().map(|f| f.is_set());
        f.debug_struct("Lost").field("lost", &lost).finish()
    }
}
