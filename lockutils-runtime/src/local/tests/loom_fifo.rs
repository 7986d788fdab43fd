//! Models of the fair lock, [`FifoLock`].

use loom::thread;

use super::{Flag, model, poll_once, shared};
use crate::local::fifo::FifoLock;
use crate::spec::Mode;

/// An async waiter is granted the lock by the release and dropped before it
/// polls again: the drop must give the lock back, to the thread queued
/// behind it or to nobody.
#[test]
fn loom_fifo_granted_then_dropped_gives_the_lock_back() {
    model(|| {
        let lock = shared(FifoLock::new(1));
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
            flag.wait(); // granted
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
        assert_eq!(lock.queued(), 0);
        assert!(
            lock.try_lock(Mode::Exclusive),
            "the dropped grant kept the lock"
        );
    });
}
