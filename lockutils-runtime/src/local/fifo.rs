//! The fair in-process primitive (`fair`): first come, first served.
//!
//! Waiters queue in arrival order and a release hands the lock directly to
//! the waiters at the front that fit (a writer needs everything, a reader
//! or a permit one unit), so no newcomer can overtake them. This is oslo's
//! `fair=True`. It is slower than [`RawLock`](super::raw::RawLock)
//! under contention (every waiter is woken by name), which is why it is
//! opt-in.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::raw::{WRITER, spin_until, thread_waker, units};
use super::sync::thread;
use super::sync::{Arc, AtomicBool, Mutex, Ordering};
use super::timer::Sleep;
use crate::spec::Mode;

pub(crate) struct FifoLock {
    cap: usize,
    state: Mutex<Line>,
}

struct Line {
    used: usize,
    queue: VecDeque<Arc<Node>>,
}

struct Node {
    need: usize,
    granted: AtomicBool,
    waker: Mutex<Waker>,
}

impl FifoLock {
    pub(crate) fn new(cap: usize) -> Self {
        FifoLock {
            cap,
            state: Mutex::new(Line {
                used: 0,
                queue: VecDeque::new(),
            }),
        }
    }

    /// Takes `mode` if it is free and nobody is queued. Never waits.
    pub(crate) fn try_lock(&self, mode: Mode) -> bool {
        let need = units(self.cap, mode);
        let mut st = self.state.lock();
        if st.queue.is_empty() && st.used + need <= self.cap {
            st.used += need;
            true
        } else {
            false
        }
    }

    /// Takes `mode` now, or queues a node for it.
    fn try_or_enqueue(&self, mode: Mode, waker: &Waker) -> Option<Arc<Node>> {
        let need = units(self.cap, mode);
        let mut st = self.state.lock();
        if st.queue.is_empty() && st.used + need <= self.cap {
            st.used += need;
            return None;
        }
        let node = Arc::new(Node {
            need,
            granted: AtomicBool::new(false),
            waker: Mutex::new(waker.clone()),
        });
        st.queue.push_back(node.clone());
        Some(node)
    }

    /// Waits in line for `mode`, blocking the thread, until `deadline`.
    /// `spin`: spin a little before parking (see
    /// [`RawLock::lock_until`](super::raw::RawLock::lock_until)).
    pub(crate) fn lock_until(&self, mode: Mode, deadline: Option<Instant>, spin: bool) -> bool {
        let waker = thread_waker();
        let Some(node) = self.try_or_enqueue(mode, &waker) else {
            return true;
        };
        if spin {
            spin_until(&node.granted);
        }
        loop {
            if node.granted.load(Ordering::Acquire) {
                return true;
            }
            match deadline {
                None => thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return self.leave(&node);
                    }
                    thread::park_timeout(d - now);
                }
            }
        }
    }

    /// Leaves the queue. Returns true if the lock was granted meanwhile
    /// (the caller then holds it).
    fn leave(&self, node: &Arc<Node>) -> bool {
        let mut st = self.state.lock();
        if node.granted.load(Ordering::Acquire) {
            return true;
        }
        st.queue.retain(|n| !Arc::ptr_eq(n, node));
        // A writer leaving the front may let the readers behind it in.
        self.grant(&mut st);
        false
    }

    /// Releases `mode`, handing the lock to the waiters at the front.
    ///
    /// # Safety
    /// The caller must hold `mode`.
    pub(crate) unsafe fn unlock(&self, mode: Mode) {
        let mut st = self.state.lock();
        st.used -= units(self.cap, mode);
        self.grant(&mut st);
    }

    /// Hands the writer's mode to the first waiter in line if it waits
    /// for the writer's mode; returns whether it did (else the caller
    /// still holds the lock). See [`RawLock::handoff`](super::raw::RawLock::handoff).
    ///
    /// # Safety
    /// The caller must hold the writer's mode.
    pub(crate) unsafe fn handoff(&self) -> bool {
        let mut st = self.state.lock();
        if st.queue.front().is_none_or(|n| n.need != WRITER) {
            return false;
        }
        // `used` stays WRITER: the lock passes from the caller to the node.
        let node = st.queue.pop_front().unwrap_or_else(|| unreachable!());
        node.granted.store(true, Ordering::Release);
        node.waker.lock().wake_by_ref();
        true
    }

    fn grant(&self, st: &mut Line) {
        while let Some(front) = st.queue.front() {
            if st.used + front.need > self.cap {
                break;
            }
            st.used += front.need;
            let node = st.queue.pop_front().unwrap_or_else(|| unreachable!());
            node.granted.store(true, Ordering::Release);
            node.waker.lock().wake_by_ref();
        }
    }

    pub(crate) fn lock_async(&self, mode: Mode, deadline: Option<Instant>) -> FifoAsync<'_> {
        FifoAsync {
            lock: self,
            mode,
            node: None,
            done: false,
            sleep: deadline.map(Sleep::new),
        }
    }

    /// Waiters in line, for introspection and tests.
    pub(crate) fn queued(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Holders right now (a writer counts as one).
    pub(crate) fn holders(&self) -> usize {
        let used = self.state.lock().used;
        if used >= WRITER { 1 } else { used }
    }
}

/// Future of [`FifoLock::lock_async`]. Dropped while queued, it leaves the
/// queue; dropped after being granted but before completing, it releases.
pub(crate) struct FifoAsync<'a> {
    lock: &'a FifoLock,
    mode: Mode,
    node: Option<Arc<Node>>,
    done: bool,
    sleep: Option<Sleep>,
}

impl Future for FifoAsync<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        let node = match &this.node {
            None => match this.lock.try_or_enqueue(this.mode, cx.waker()) {
                None => {
                    this.done = true;
                    return Poll::Ready(true);
                }
                Some(node) => this.node.insert(node),
            },
            Some(node) => node,
        };
        if node.granted.load(Ordering::Acquire) {
            this.done = true;
            return Poll::Ready(true);
        }
        {
            let mut w = node.waker.lock();
            if !w.will_wake(cx.waker()) {
                *w = cx.waker().clone();
            }
        }
        if node.granted.load(Ordering::Acquire) {
            this.done = true;
            return Poll::Ready(true);
        }
        if let Some(sleep) = &mut this.sleep
            && sleep.poll_expired(cx)
        {
            this.done = true;
            return Poll::Ready(this.lock.leave(node));
        }
        Poll::Pending
    }
}

impl FifoAsync<'_> {
    /// Leaves the line. Returns `true` if the lock was granted meanwhile:
    /// the caller holds it and must release it. See
    /// [`LockAsync::cancel`](super::raw::LockAsync::cancel).
    pub(crate) fn cancel(&mut self) -> bool {
        if std::mem::replace(&mut self.done, true) {
            return false;
        }
        match self.node.take() {
            Some(node) => self.lock.leave(&node),
            None => false,
        }
    }
}

impl Drop for FifoAsync<'_> {
    fn drop(&mut self) {
        if self.cancel() {
            // Granted, but nobody will use it.
            // SAFETY: `cancel` returned true: we hold `mode`.
            unsafe { self.lock.unlock(self.mode) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::raw::tests::block_on;
    use std::time::Duration;

    #[test]
    fn waiters_acquire_in_arrival_order() {
        let l = Arc::new(FifoLock::new(WRITER));
        assert!(l.try_lock(Mode::Exclusive));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..10 {
            let (l2, order2) = (l.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                assert!(l2.lock_until(Mode::Exclusive, None, false));
                order2.lock().push(i);
                // SAFETY: this thread holds the lock in that mode (taken just above).
                unsafe { l2.unlock(Mode::Exclusive) };
            }));
            while l.queued() < i + 1 {
                std::thread::yield_now();
            }
        }
        // SAFETY: this thread holds the lock in that mode (taken just above).
        unsafe { l.unlock(Mode::Exclusive) };
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn reader_behind_writer_waits_and_timeout_leaves_line() {
        let l = FifoLock::new(WRITER);
        assert!(l.try_lock(Mode::Shared));
        std::thread::scope(|s| {
            let w = s.spawn(|| {
                l.lock_until(
                    Mode::Exclusive,
                    Some(Instant::now() + Duration::from_millis(50)),
                    false,
                )
            });
            while l.queued() < 1 {
                std::thread::yield_now();
            }
            // A new reader may not pass the queued writer.
            assert!(!l.try_lock(Mode::Shared));
            assert!(!w.join().unwrap(), "writer got in while a reader held");
        });
        assert_eq!(l.queued(), 0);
        assert!(
            l.try_lock(Mode::Shared),
            "the timed-out writer blocked readers"
        );
    }

    #[test]
    fn dropped_async_waiter_gives_back_what_it_was_granted() {
        let l = FifoLock::new(1);
        assert!(l.try_lock(Mode::Exclusive));
        let mut fut = Box::pin(l.lock_async(Mode::Exclusive, None));
        let waker = Waker::noop();
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending()
        );
        // SAFETY: this thread holds the lock in that mode (taken just above).
        unsafe { l.unlock(Mode::Exclusive) }; // granted to the future
        drop(fut);
        assert!(
            l.try_lock(Mode::Exclusive),
            "granted-then-dropped waiter kept the lock"
        );
        let fut = l.lock_async(
            Mode::Exclusive,
            Some(Instant::now() + Duration::from_millis(10)),
        );
        assert!(!block_on(fut));
    }
}
