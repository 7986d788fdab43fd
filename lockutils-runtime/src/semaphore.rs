//! The in-process primitives: what threads and async tasks of one process
//! wait on. Both count *units* against a capacity:
//!
//! * a reader/writer lock has capacity [`WRITER`]: a writer (exclusive)
//!   needs all of it, a reader (shared) needs one unit;
//! * a counted semaphore (`permits = N`) has capacity N, and every holder
//!   needs one unit.
//!
//! [`RawLock`] is the default: a word of state and an
//! [`event_listener::Event`] queue. Threads park in the kernel (futex), tasks
//! park their waker, and one release wakes whoever can use it. Waiters can
//! barge, like `parking_lot`'s locks. Writer preference: while a writer
//! waits, new readers queue behind it instead of overlapping the readers
//! already inside, so a stream of readers cannot starve writers.
//!
//! [`FifoLock`](crate::fifo::FifoLock) is the fair (first come, first
//! served) variant, in `fifo.rs`.
//!
//! There is no poisoning: a panicking holder's guard releases on unwind.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use event_listener::{Event, EventListener, Listener};

use crate::timer::Sleep;

/// Capacity of a reader/writer lock, and what a writer needs of it.
pub(crate) const WRITER: usize = 1 << (usize::BITS - 2);

/// Exclusive (a writer, or any holder of a semaphore) or shared (a reader).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    Exclusive,
    Shared,
}

/// Units a holder in `mode` needs of a primitive with capacity `cap`.
#[inline]
pub(crate) fn units(cap: usize, mode: Mode) -> usize {
    if cap == WRITER && mode == Mode::Exclusive { WRITER } else { 1 }
}

/// A barging lock with no data: acquire and release are explicit.
pub(crate) struct RawLock {
    cap: usize,
    /// Units in use.
    used: AtomicUsize,
    /// Writers waiting; readers do not barge past them.
    writers_waiting: AtomicUsize,
    /// Set once anyone used shared mode: from then on a release wakes all
    /// waiters, since a reader cannot use a wake-up meant for a writer.
    mixed: AtomicBool,
    waiters: Event,
}

impl RawLock {
    pub(crate) const fn new(cap: usize) -> Self {
        RawLock {
            cap,
            used: AtomicUsize::new(0),
            writers_waiting: AtomicUsize::new(0),
            mixed: AtomicBool::new(false),
            waiters: Event::new(),
        }
    }

    /// Takes `mode` if it is available now. Never waits.
    #[inline]
    pub(crate) fn try_lock(&self, mode: Mode) -> bool {
        if self.cap == WRITER && mode == Mode::Exclusive {
            return self
                .used
                .compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
                .is_ok();
        }
        self.try_lock_one(mode)
    }

    fn try_lock_one(&self, mode: Mode) -> bool {
        if mode == Mode::Shared {
            if !self.mixed.load(Ordering::SeqCst) {
                self.mixed.store(true, Ordering::SeqCst);
                // Waiters queued under one-at-a-time wake-ups re-check now.
                self.waiters.notify(usize::MAX);
            }
            if self.writers_waiting.load(Ordering::Acquire) > 0 {
                return false;
            }
        }
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used + 1 > self.cap || used >= WRITER {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    #[inline]
    fn is_writer(&self, mode: Mode) -> bool {
        self.cap == WRITER && mode == Mode::Exclusive
    }

    /// Waits for `mode`, blocking this thread, until `deadline` if one is
    /// given. Returns whether it was taken.
    pub(crate) fn lock_until(&self, mode: Mode, deadline: Option<Instant>) -> bool {
        let _writer = self.is_writer(mode).then(|| WaitingWriter::new(self));
        loop {
            if self.try_lock(mode) {
                return true;
            }
            let listener = self.waiters.listen();
            // Re-check after queueing: a release between the failed try and
            // `listen` woke nobody.
            if self.try_lock(mode) {
                return true;
            }
            match deadline {
                None => listener.wait(),
                Some(d) => {
                    if listener.wait_deadline(d).is_none() {
                        return self.try_lock(mode);
                    }
                }
            }
        }
    }

    /// A future that takes `mode`, or gives up at `deadline`.
    pub(crate) fn lock_async(&self, mode: Mode, deadline: Option<Instant>) -> LockAsync<'_> {
        LockAsync {
            lock: self,
            mode,
            listener: None,
            sleep: deadline.map(Sleep::new),
            writer: None,
        }
    }

    /// Releases `mode` and wakes whoever can use it.
    ///
    /// # Safety
    /// The caller must hold `mode` (have taken it and not released it).
    #[inline]
    pub(crate) unsafe fn unlock(&self, mode: Mode) {
        let before = if self.is_writer(mode) {
            // A writer holds everything: nobody else can change `used` now.
            self.used.store(0, Ordering::Release);
            WRITER
        } else {
            self.used.fetch_sub(1, Ordering::Release)
        };
        if self.mixed.load(Ordering::SeqCst) {
            // Only the last reader out can let a writer in.
            if mode == Mode::Exclusive || self.cap != WRITER || before == 1 {
                self.waiters.notify(usize::MAX);
            }
        } else {
            self.waiters.notify(1);
        }
    }

    /// Holders right now (a writer counts as one), for introspection.
    pub(crate) fn holders(&self) -> usize {
        let used = self.used.load(Ordering::Relaxed);
        if used >= WRITER { 1 } else { used }
    }
}

/// Counts a waiting writer while it lives, so readers stop barging.
struct WaitingWriter<'a>(&'a RawLock);

impl<'a> WaitingWriter<'a> {
    fn new(lock: &'a RawLock) -> Self {
        lock.writers_waiting.fetch_add(1, Ordering::AcqRel);
        WaitingWriter(lock)
    }
}

impl Drop for WaitingWriter<'_> {
    fn drop(&mut self) {
        if self.0.writers_waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Readers held back by us may go now.
            self.0.waiters.notify(usize::MAX);
        }
    }
}

/// Future returned by [`RawLock::lock_async`]: `true` once taken, `false`
/// if the deadline passed first. Dropping it before it completes leaves the
/// lock untouched.
pub(crate) struct LockAsync<'a> {
    lock: &'a RawLock,
    mode: Mode,
    listener: Option<EventListener>,
    sleep: Option<Sleep>,
    writer: Option<WaitingWriter<'a>>,
}

impl Future for LockAsync<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        loop {
            if this.lock.try_lock(this.mode) {
                this.writer = None;
                return Poll::Ready(true);
            }
            match &mut this.listener {
                None => {
                    if this.writer.is_none() && this.lock.is_writer(this.mode) {
                        this.writer = Some(WaitingWriter::new(this.lock));
                    }
                    this.listener = Some(this.lock.waiters.listen());
                }
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => this.listener = None,
                    Poll::Pending => {
                        if let Some(sleep) = &mut this.sleep
                            && sleep.poll_expired(cx)
                        {
                            let got = this.lock.try_lock(this.mode);
                            this.writer = None;
                            return Poll::Ready(got);
                        }
                        return Poll::Pending;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn excludes_threads_and_counts_exactly() {
        struct Shared {
            m: RawLock,
            inside: AtomicUsize,
            n: std::cell::UnsafeCell<u64>,
        }
        unsafe impl Sync for Shared {}
        let s = Arc::new(Shared {
            m: RawLock::new(WRITER),
            inside: AtomicUsize::new(0),
            n: std::cell::UnsafeCell::new(0),
        });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        assert!(s.m.lock_until(Mode::Exclusive, None));
                        assert_eq!(s.inside.fetch_add(1, Ordering::SeqCst), 0);
                        unsafe { *s.n.get() += 1 };
                        s.inside.fetch_sub(1, Ordering::SeqCst);
                        unsafe { s.m.unlock(Mode::Exclusive) };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(unsafe { *s.n.get() }, 80_000);
        assert_eq!(s.m.holders(), 0);
    }

    #[test]
    fn readers_share_writers_exclude_and_waiting_writer_stops_new_readers() {
        let l = RawLock::new(WRITER);
        assert!(l.try_lock(Mode::Shared));
        assert!(l.try_lock(Mode::Shared));
        assert!(!l.try_lock(Mode::Exclusive));
        assert_eq!(l.holders(), 2);
        {
            let _w = WaitingWriter::new(&l);
            assert!(!l.try_lock(Mode::Shared), "reader barged past a waiting writer");
        }
        assert!(l.try_lock(Mode::Shared));
        for _ in 0..3 {
            unsafe { l.unlock(Mode::Shared) };
        }
        assert!(l.try_lock(Mode::Exclusive));
        assert!(!l.try_lock(Mode::Shared));
        unsafe { l.unlock(Mode::Exclusive) };
    }

    #[test]
    fn permits_count() {
        let l = RawLock::new(3);
        for _ in 0..3 {
            assert!(l.try_lock(Mode::Exclusive));
        }
        assert!(!l.try_lock(Mode::Exclusive));
        assert_eq!(l.holders(), 3);
        unsafe { l.unlock(Mode::Exclusive) };
        assert!(l.lock_until(Mode::Exclusive, Some(Instant::now())));
    }

    #[test]
    fn deadline_expires_then_lock_is_free_again() {
        let m = RawLock::new(WRITER);
        assert!(m.try_lock(Mode::Exclusive));
        let t0 = Instant::now();
        assert!(!m.lock_until(Mode::Exclusive, Some(t0 + Duration::from_millis(30))));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        unsafe { m.unlock(Mode::Exclusive) };
        assert!(m.lock_until(Mode::Exclusive, Some(Instant::now())));
        unsafe { m.unlock(Mode::Exclusive) };
    }

    #[test]
    fn async_waiter_is_woken_by_thread_unlock() {
        let m = Arc::new(RawLock::new(WRITER));
        assert!(m.try_lock(Mode::Exclusive));
        let (tx, rx) = std::sync::mpsc::channel();
        let m2 = m.clone();
        let waiter = std::thread::spawn(move || {
            let fut = m2.lock_async(Mode::Exclusive, None);
            tx.send(()).unwrap();
            assert!(block_on(fut));
            unsafe { m2.unlock(Mode::Exclusive) };
        });
        rx.recv().unwrap();
        unsafe { m.unlock(Mode::Exclusive) };
        waiter.join().unwrap();
        assert!(m.try_lock(Mode::Exclusive));
    }

    #[test]
    fn async_deadline() {
        let m = RawLock::new(WRITER);
        assert!(m.try_lock(Mode::Exclusive));
        let t0 = Instant::now();
        let fut = m.lock_async(Mode::Exclusive, Some(t0 + Duration::from_millis(20)));
        assert!(!block_on(fut));
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    /// Minimal executor for the tests: parks the thread between polls.
    pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
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
