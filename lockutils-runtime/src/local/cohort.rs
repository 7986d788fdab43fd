//! The bookkeeping of lock cohorting: something a releasing holder leaves
//! behind for the next holder of the same in-process lock (a lock file
//! still locked, in `external::file`), and the rule that it is never left
//! behind with nobody to pick it up.
//!
//! The protocol, with `waiting` counting threads and tasks between starting
//! to wait for the in-process lock and having settled what was parked:
//!
//! * a waiter calls [`Cohort::arrive`] before it waits; once it holds the
//!   lock it takes what is parked ([`Cohort::take`]) and then calls
//!   [`Cohort::settled`]; if it gives up instead (a deadline, a dropped
//!   future) it calls [`Cohort::gave_up`], which takes what is parked for
//!   the caller to dispose of;
//! * a releasing holder parks only if someone is waiting ([`Cohort::park`]),
//!   releases the in-process lock as usual (a barging lock: whoever takes
//!   it next, waiter or newcomer, may take what is parked), and then calls
//!   [`Cohort::released`], which hands the parked value back if nobody is
//!   waiting any more;
//! * any holder may take what is parked.
//!
//! Why nothing is stranded: a releaser that sees `waiting == 0` after
//! parking takes its value back. One that sees a waiter relies on it, and
//! that waiter either takes the lock later (and takes the value: the
//! releaser parked before releasing, so it is visible to the next holder
//! through the lock's own release/acquire) or gives up, lowering `waiting`
//! before it looks at the slot. The releaser parks before it reads
//! `waiting`, and both sides use sequentially consistent operations on
//! `waiting` and `parked_flag`, with a sequentially consistent fence
//! between each side's write and read (loom models SeqCst accesses as
//! acquire/release only, but fences fully), so either the waiter sees the
//! parked value or the releaser sees `waiting` lowered. The model in
//! `local/tests/loom_cohort.rs` checks this.

use super::sync::{AtomicBool, AtomicUsize, Mutex, Ordering, fence};

/// A slot for one parked value and the count of waiters that may take it.
pub(crate) struct Cohort<T> {
    waiting: AtomicUsize,
    /// Whether `parked` holds a value: lets holders skip the mutex.
    parked_flag: AtomicBool,
    parked: Mutex<Option<T>>,
}

impl<T> Cohort<T> {
    pub(crate) fn new() -> Self {
        Cohort {
            waiting: AtomicUsize::new(0),
            parked_flag: AtomicBool::new(false),
            parked: Mutex::new(None),
        }
    }

    /// A waiter starts waiting for the in-process lock.
    #[inline]
    pub(crate) fn arrive(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    /// A waiter that took the lock has taken (or had no) parked value.
    #[inline]
    pub(crate) fn settled(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// A waiter gave up: returns the parked value, if any, to dispose of.
    #[cold]
    pub(crate) fn gave_up(&self) -> Option<T> {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        // Pairs with the fence in `released`: either this sees the parked
        // flag, or the releaser sees `waiting` lowered.
        fence(Ordering::SeqCst);
        self.take()
    }

    /// Whether anyone waits: a holder parks only then.
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) != 0
    }

    /// Parks `value` for the next holder (the caller still holds the
    /// in-process lock). `Err`: nobody waits; dispose of it yourself.
    pub(crate) fn park(&self, value: T) -> Result<(), T> {
        if !self.has_waiters() {
            return Err(value);
        }
        let mut slot = self.parked.lock();
        debug_assert!(slot.is_none(), "two values parked at once");
        *slot = Some(value);
        self.parked_flag.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// After releasing the in-process lock with a value parked: the value
    /// back if nobody waits any more (so nobody would take it).
    pub(crate) fn released(&self) -> Option<T> {
        // Pairs with the fence in `gave_up`.
        fence(Ordering::SeqCst);
        if self.has_waiters() {
            None
        } else {
            self.take()
        }
    }

    /// Whether a value is parked (one load).
    #[inline]
    pub(crate) fn is_parked(&self) -> bool {
        self.parked_flag.load(Ordering::SeqCst)
    }

    /// Takes the parked value, if any.
    #[inline]
    pub(crate) fn take(&self) -> Option<T> {
        if !self.parked_flag.load(Ordering::SeqCst) {
            return None;
        }
        self.take_slow()
    }

    #[cold]
    fn take_slow(&self) -> Option<T> {
        let mut slot = self.parked.lock();
        self.parked_flag.store(false, Ordering::SeqCst);
        slot.take()
    }
}
