//! The in-process primitive: one mutex that threads and async tasks share.
//!
//! The lock word is an `AtomicBool`; waiters queue on an
//! [`event_listener::Event`]. A thread parks in the kernel (futex) while it
//! waits, a task parks its waker, and an unlock wakes exactly one of them,
//! whichever kind it is. Waiters can barge (like `parking_lot`'s mutex): a
//! woken waiter retries and, if someone else got there first, queues again.
//! A listener that was woken but gave up (timeout, dropped future) passes its
//! wake-up on, so no unlock is ever lost.
//!
//! There is no poisoning: a panicking holder's guard unlocks on unwind.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use event_listener::{Event, EventListener, Listener};

use crate::timer::Sleep;

/// A mutex with no data: lock and unlock are explicit.
pub(crate) struct RawMutex {
    locked: AtomicBool,
    waiters: Event,
}

impl RawMutex {
    pub(crate) const fn new() -> Self {
        RawMutex { locked: AtomicBool::new(false), waiters: Event::new() }
    }

    /// Takes the lock if it is free. Never waits.
    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Waits for the lock, blocking this thread, until `deadline` if one is
    /// given. Returns whether the lock was taken.
    pub(crate) fn lock_until(&self, deadline: Option<Instant>) -> bool {
        loop {
            if self.try_lock() {
                return true;
            }
            let listener = self.waiters.listen();
            // Re-check after queueing: an unlock between the failed try and
            // `listen` notified nobody.
            if self.try_lock() {
                return true;
            }
            match deadline {
                None => listener.wait(),
                Some(d) => {
                    if listener.wait_deadline(d).is_none() {
                        return self.try_lock();
                    }
                }
            }
        }
    }

    /// A future that takes the lock, or gives up at `deadline`.
    pub(crate) fn lock_async(&self, deadline: Option<Instant>) -> LockAsync<'_> {
        LockAsync { mutex: self, listener: None, sleep: deadline.map(Sleep::new) }
    }

    /// Releases the lock and wakes one waiter.
    ///
    /// # Safety
    /// The caller must hold the lock (have taken it and not released it).
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
        self.waiters.notify(1);
    }

    #[cfg(test)]
    pub(crate) fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

/// Future returned by [`RawMutex::lock_async`]: `true` once the lock is
/// taken, `false` if the deadline passed first. Dropping it before it
/// completes leaves the lock untouched.
pub(crate) struct LockAsync<'a> {
    mutex: &'a RawMutex,
    listener: Option<EventListener>,
    sleep: Option<Sleep>,
}

impl Future for LockAsync<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        loop {
            if this.mutex.try_lock() {
                return Poll::Ready(true);
            }
            match &mut this.listener {
                None => this.listener = Some(this.mutex.waiters.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => this.listener = None,
                    Poll::Pending => {
                        if let Some(sleep) = &mut this.sleep
                            && sleep.poll_expired(cx) {
                                return Poll::Ready(this.mutex.try_lock());
                            }
                        return Poll::Pending;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn excludes_threads_and_counts_exactly() {
        struct Shared {
            m: RawMutex,
            inside: AtomicUsize,
            n: std::cell::UnsafeCell<u64>,
        }
        unsafe impl Sync for Shared {}
        let s = Arc::new(Shared {
            m: RawMutex::new(),
            inside: AtomicUsize::new(0),
            n: std::cell::UnsafeCell::new(0),
        });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        assert!(s.m.lock_until(None));
                        assert_eq!(s.inside.fetch_add(1, Ordering::SeqCst), 0);
                        unsafe { *s.n.get() += 1 };
                        s.inside.fetch_sub(1, Ordering::SeqCst);
                        unsafe { s.m.unlock() };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(unsafe { *s.n.get() }, 80_000);
        assert!(!s.m.is_locked());
    }

    #[test]
    fn deadline_expires_then_lock_is_free_again() {
        let m = RawMutex::new();
        assert!(m.try_lock());
        let t0 = Instant::now();
        assert!(!m.lock_until(Some(t0 + Duration::from_millis(30))));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        unsafe { m.unlock() };
        assert!(m.lock_until(Some(Instant::now())));
        unsafe { m.unlock() };
    }

    #[test]
    fn async_waiter_is_woken_by_thread_unlock() {
        let m = Arc::new(RawMutex::new());
        assert!(m.try_lock());
        let (tx, rx) = std::sync::mpsc::channel();
        let m2 = m.clone();
        let waiter = std::thread::spawn(move || {
            let fut = m2.lock_async(None);
            tx.send(()).unwrap();
            assert!(futures_lite_block_on(fut));
            unsafe { m2.unlock() };
        });
        rx.recv().unwrap();
        unsafe { m.unlock() };
        waiter.join().unwrap();
        assert!(m.try_lock());
    }

    #[test]
    fn async_deadline() {
        let m = RawMutex::new();
        assert!(m.try_lock());
        let t0 = Instant::now();
        assert!(!futures_lite_block_on(m.lock_async(Some(t0 + Duration::from_millis(20)))));
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    /// Minimal executor for the tests: parks the thread between polls.
    pub(crate) fn futures_lite_block_on<F: Future>(fut: F) -> F::Output {
        use std::task::{Wake, Waker};
        struct Unparker(std::thread::Thread);
        impl Wake for Unparker {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unparker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
}
