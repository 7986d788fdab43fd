//! Models of [`Cohort`] with a [`RawLock`]: a value parked by a releasing
//! holder is taken by exactly one thread, never by two, and is never left
//! in the slot with nobody to take it, whether the waiter that made the
//! releaser park takes the lock, a newcomer barges in first, or the waiter
//! gives up.

use loom::thread;

use super::{model, shared};
use crate::local::cohort::Cohort;
use crate::local::raw::{RawLock, WRITER};
use crate::local::sync::{AtomicUsize, Ordering};
use crate::spec::Mode;

/// The lock, its cohort slot, and who holds the "file" (the parked value
/// stands for a lock file's lock: held by one owner at a time).
struct Shared {
    lock: RawLock,
    cohort: Cohort<u32>,
    /// Owners of the value right now: a holder that took it, or the slot.
    owners: AtomicUsize,
    /// Times the value was disposed of (unlocked for real).
    disposed: AtomicUsize,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            lock: RawLock::new(WRITER),
            cohort: Cohort::new(),
            owners: AtomicUsize::new(0),
            disposed: AtomicUsize::new(0),
        }
    }

    fn dispose(&self, _value: u32) {
        self.owners.fetch_sub(1, Ordering::SeqCst);
        self.disposed.fetch_add(1, Ordering::SeqCst);
    }

    /// Took the value: nobody else may own it.
    fn own(&self, _value: &u32) {
        assert_eq!(
            self.owners.load(Ordering::SeqCst),
            1,
            "the value has two owners"
        );
    }

    /// A holder of the lock (and of the value) releasing as `Hold` does.
    fn release_parking(&self, value: u32) {
        match self.cohort.park(value) {
            Ok(()) => {
                // SAFETY: the caller holds the lock exclusively.
                unsafe { self.lock.unlock(Mode::Exclusive) };
                if let Some(v) = self.cohort.released() {
                    self.own(&v);
                    self.dispose(v);
                }
            }
            Err(v) => {
                self.dispose(v);
                // SAFETY: as above.
                unsafe { self.lock.unlock(Mode::Exclusive) };
            }
        }
    }

    /// A counted waiter that holds the lock: takes the value if parked,
    /// settles, uses and disposes of it, and releases.
    fn settle_and_release(&self) {
        let got = self.cohort.take();
        self.cohort.settled();
        if let Some(v) = got {
            self.own(&v);
            self.dispose(v);
        }
        // SAFETY: the caller holds the lock exclusively.
        unsafe { self.lock.unlock(Mode::Exclusive) };
    }

    /// A waiter that takes the lock, and the value if it is parked.
    fn wait_and_take(&self) {
        self.cohort.arrive();
        assert!(self.lock.lock_until(Mode::Exclusive, None));
        self.settle_and_release();
    }

    /// A waiter that gives up (its one try fails) or takes the lock.
    fn try_or_give_up(&self) {
        self.cohort.arrive();
        if self.lock.try_lock(Mode::Exclusive) {
            self.settle_and_release();
        } else if let Some(v) = self.cohort.gave_up() {
            self.own(&v);
            self.dispose(v);
        }
    }

    /// A newcomer on the fast path: no waiting, but it takes the value if
    /// it finds one parked.
    fn barge(&self) {
        if self.lock.try_lock(Mode::Exclusive) {
            if let Some(v) = self.cohort.take() {
                self.own(&v);
                self.dispose(v);
            }
            // SAFETY: taken just above.
            unsafe { self.lock.unlock(Mode::Exclusive) };
        }
    }

    fn check_end(&self) {
        assert!(self.cohort.take().is_none(), "a parked value was stranded");
        assert_eq!(
            self.disposed.load(Ordering::SeqCst),
            1,
            "disposed twice or never"
        );
        assert_eq!(self.owners.load(Ordering::SeqCst), 0);
    }
}

/// The holder that starts with the lock and the value.
fn holder(s: &Shared) {
    s.owners.fetch_add(1, Ordering::SeqCst);
    s.release_parking(7);
}

/// The holder releasing while `others` run, then the end-of-run checks.
fn run(others: Vec<fn(&Shared)>) {
    model(move || {
        let s = shared(Shared::new());
        assert!(s.lock.try_lock(Mode::Exclusive));
        let ts: Vec<_> = others
            .iter()
            .map(|&f| {
                let s = s.clone();
                thread::spawn(move || f(&s))
            })
            .collect();
        holder(&s);
        for t in ts {
            t.join().unwrap();
        }
        s.check_end();
    });
}

#[test]
fn loom_cohort_parked_value_is_taken_once_by_a_waiter_or_given_back() {
    run(vec![Shared::wait_and_take]);
}

#[test]
fn loom_cohort_a_waiter_giving_up_strands_nothing() {
    run(vec![Shared::try_or_give_up]);
}

#[test]
fn loom_cohort_a_newcomer_barging_in_and_a_waiter_share_one_value() {
    run(vec![Shared::wait_and_take, Shared::barge]);
}

#[test]
fn loom_cohort_a_newcomer_and_a_waiter_giving_up_share_one_value() {
    run(vec![Shared::try_or_give_up, Shared::barge]);
}
