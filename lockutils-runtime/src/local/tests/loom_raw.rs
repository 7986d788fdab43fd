//! Models of [`RawLock`]: the lock word and its wait queue.

use loom::cell::UnsafeCell;
use loom::thread;

use super::{Flag, model, poll_once, shared};
use crate::local::raw::{RawLock, WRITER};
use crate::local::sync::{AtomicUsize, Ordering};
use crate::spec::Mode;

/// A lock and the data it guards.
struct Guarded {
    lock: RawLock,
    data: UnsafeCell<usize>,
}

// SAFETY: `data` is only touched while `lock` is held exclusively; loom's
// `UnsafeCell` fails the model if two threads ever touch it at once.
unsafe impl Sync for Guarded {}

impl Guarded {
    fn bump(&self) {
        assert!(self.lock.lock_until(Mode::Exclusive, None, false));
        // SAFETY: the lock is held exclusively.
        self.data.with_mut(|n| unsafe { *n += 1 });
        // SAFETY: taken just above.
        unsafe { self.lock.unlock(Mode::Exclusive) };
    }
}

#[test]
fn loom_exclusive_excludes_and_loses_no_wake_up() {
    model(|| {
        let g = shared(Guarded {
            lock: RawLock::new(WRITER),
            data: UnsafeCell::new(0),
        });
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let g = g.clone();
                thread::spawn(move || g.bump())
            })
            .collect();
        g.bump();
        for t in ts {
            t.join().unwrap();
        }
        // SAFETY: every other thread was joined.
        assert_eq!(g.data.with(|n| unsafe { *n }), 3);
        assert!(g.lock.try_lock(Mode::Exclusive), "lock left taken");
    });
}

/// Readers and writers inside at once, as a count: a writer adds `WRITER`.
struct Inside(AtomicUsize);

impl Inside {
    fn enter(&self, mode: Mode) {
        let before = match mode {
            Mode::Exclusive => self.0.fetch_add(WRITER, Ordering::SeqCst),
            Mode::Shared => self.0.fetch_add(1, Ordering::SeqCst),
        };
        match mode {
            Mode::Exclusive => assert_eq!(before, 0, "a writer got in beside others"),
            Mode::Shared => assert!(before < WRITER, "a reader got in beside a writer"),
        }
    }
    fn leave(&self, mode: Mode) {
        let n = if mode == Mode::Exclusive { WRITER } else { 1 };
        self.0.fetch_sub(n, Ordering::SeqCst);
    }
}

fn use_lock(lock: &RawLock, inside: &Inside, mode: Mode) {
    assert!(lock.lock_until(mode, None, false));
    inside.enter(mode);
    inside.leave(mode);
    // SAFETY: taken just above.
    unsafe { lock.unlock(mode) };
}

#[test]
fn loom_shared_readers_share_writer_excludes_no_deadlock() {
    model(|| {
        let lock = shared(RawLock::new(WRITER));
        let inside = shared(Inside(AtomicUsize::new(0)));
        // A reader inside while a reader and a writer arrive: the second
        // reader either joins it or queues behind the writer (preference).
        assert!(lock.try_lock(Mode::Shared));
        let (l, i) = (lock.clone(), inside.clone());
        let reader = thread::spawn(move || use_lock(&l, &i, Mode::Shared));
        let (l, i) = (lock.clone(), inside.clone());
        let writer = thread::spawn(move || use_lock(&l, &i, Mode::Exclusive));
        inside.enter(Mode::Shared);
        inside.leave(Mode::Shared);
        // SAFETY: taken above.
        unsafe { lock.unlock(Mode::Shared) };
        reader.join().unwrap();
        writer.join().unwrap();
        assert!(lock.try_lock(Mode::Exclusive), "lock left taken");
    });
}

#[test]
fn loom_counted_never_more_than_n() {
    model(|| {
        let lock = shared(RawLock::new(2));
        let inside = shared(AtomicUsize::new(0));
        // The main thread holds one permit meanwhile, so the two others
        // contend for the last one.
        assert!(lock.try_lock(Mode::Exclusive));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (l, i) = (lock.clone(), inside.clone());
                thread::spawn(move || {
                    assert!(l.lock_until(Mode::Exclusive, None, false));
                    assert!(i.fetch_add(1, Ordering::SeqCst) < 2, "a third holder");
                    i.fetch_sub(1, Ordering::SeqCst);
                    // SAFETY: taken just above.
                    unsafe { l.unlock(Mode::Exclusive) };
                })
            })
            .collect();
        inside.fetch_add(1, Ordering::SeqCst);
        thread::yield_now();
        inside.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: taken just above.
        unsafe { lock.unlock(Mode::Exclusive) };
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(lock.holders(), 0);
    });
}

/// A reader queued in front of a writer (counted in
/// `writers_waiting`). The release must see that shared mode was used and
/// wake both; waking only the reader, which then queues again behind the
/// writer, leaves the writer parked with the lock free.
#[test]
fn loom_writer_queued_behind_reader_is_woken() {
    model(|| {
        let lock = shared(RawLock::new(WRITER));
        assert!(lock.try_lock(Mode::Exclusive));
        let l = lock.clone();
        let reader = thread::spawn(move || {
            assert!(l.lock_until(Mode::Shared, None, false));
            // SAFETY: taken just above.
            unsafe { l.unlock(Mode::Shared) };
        });
        let l = lock.clone();
        let writer = thread::spawn(move || {
            assert!(l.lock_until(Mode::Exclusive, None, false));
            // SAFETY: taken just above.
            unsafe { l.unlock(Mode::Exclusive) };
        });
        // SAFETY: taken above.
        unsafe { lock.unlock(Mode::Exclusive) };
        reader.join().unwrap();
        writer.join().unwrap();
        assert!(lock.try_lock(Mode::Exclusive));
    });
}

/// Two waiters besides the holder: an async one that is polled once and
/// dropped, and a thread. Whichever way the release and the drop
/// interleave, the thread gets the lock and the lock ends free.
#[test]
fn loom_async_waiter_polled_once_then_dropped() {
    model(|| {
        let lock = shared(RawLock::new(WRITER));
        assert!(lock.try_lock(Mode::Exclusive));
        let l = lock.clone();
        let task = thread::spawn(move || {
            let flag = Flag::new();
            let mut fut = l.lock_async(Mode::Exclusive, None);
            if poll_once(&mut fut, &flag).is_ready() {
                // SAFETY: the future completed with the lock taken.
                unsafe { l.unlock(Mode::Exclusive) };
            }
            drop(fut);
        });
        let l = lock.clone();
        let waiter = thread::spawn(move || {
            assert!(l.lock_until(Mode::Exclusive, None, false));
            // SAFETY: taken just above.
            unsafe { l.unlock(Mode::Exclusive) };
        });
        // SAFETY: taken above.
        unsafe { lock.unlock(Mode::Exclusive) };
        task.join().unwrap();
        waiter.join().unwrap();
        assert!(lock.try_lock(Mode::Exclusive), "lock left taken");
        // SAFETY: taken just above.
        unsafe { lock.unlock(Mode::Exclusive) };
        assert_eq!(lock.holders(), 0);
    });
}

/// The lost wake-up of commit 60c4b9f: an async waiter is woken by the
/// release and dropped before it polls again. The wake-up it got must go on
/// to the other waiter.
#[test]
fn loom_async_waiter_cancelled_right_after_being_woken() {
    model(|| {
        let lock = shared(RawLock::new(WRITER));
        assert!(lock.try_lock(Mode::Exclusive));
        let l = lock.clone();
        let task = thread::spawn(move || {
            let flag = Flag::new();
            let mut fut = l.lock_async(Mode::Exclusive, None);
            if poll_once(&mut fut, &flag).is_ready() {
                // SAFETY: the future completed with the lock taken.
                unsafe { l.unlock(Mode::Exclusive) };
                return;
            }
            // Queued: every release wakes it (it is never passed over for
            // good), then it gives up without polling.
            flag.wait();
            drop(fut);
        });
        let l = lock.clone();
        let waiter = thread::spawn(move || {
            assert!(l.lock_until(Mode::Exclusive, None, false));
            // SAFETY: taken just above.
            unsafe { l.unlock(Mode::Exclusive) };
        });
        // SAFETY: taken above.
        unsafe { lock.unlock(Mode::Exclusive) };
        task.join().unwrap();
        waiter.join().unwrap();
        assert!(lock.try_lock(Mode::Exclusive), "lock left taken");
    });
}

#[test]
fn loom_handoff_excludes_a_newcomer_and_wakes_the_waiter() {
    model(|| {
        let g = shared(Guarded {
            lock: RawLock::new(WRITER),
            data: UnsafeCell::new(0),
        });
        assert!(g.lock.try_lock(Mode::Exclusive));
        let waiter = {
            let g = g.clone();
            thread::spawn(move || g.bump())
        };
        let newcomer = {
            let g = g.clone();
            thread::spawn(move || {
                if g.lock.try_lock(Mode::Exclusive) {
                    // SAFETY: the lock is held exclusively.
                    g.data.with_mut(|n| unsafe { *n += 1 });
                    // SAFETY: taken just above.
                    unsafe { g.lock.unlock(Mode::Exclusive) };
                }
            })
        };
        // SAFETY: the lock is held exclusively.
        g.data.with_mut(|n| unsafe { *n += 1 });
        // SAFETY: taken before the threads started.
        if !unsafe { g.lock.handoff() } {
            // The waiter was not queued yet: a plain release.
            // SAFETY: still held (not handed over).
            unsafe { g.lock.unlock(Mode::Exclusive) };
        }
        waiter.join().unwrap();
        newcomer.join().unwrap();
        assert!(g.lock.try_lock(Mode::Exclusive), "lock left taken");
    });
}
