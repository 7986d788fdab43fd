//! The synchronisation types the in-process primitives and the registry are
//! built from. Ordinary builds get exactly `std`'s atomics and `Arc`,
//! `parking_lot`'s mutex and `std::thread`'s parking; `--cfg lockutils_loom` swaps in
//! `loom`'s model-checked equivalents, so the same code runs under the
//! model checker (`local/tests/`, `registry.rs`).

#[cfg(not(lockutils_loom))]
pub(crate) use parking_lot::Mutex;
#[cfg(not(lockutils_loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(lockutils_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[cfg(lockutils_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(lockutils_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Thread parking (what a blocked thread waits in).
pub(crate) mod thread {
    #[cfg(not(lockutils_loom))]
    pub(crate) use std::thread::{Thread, current, park, park_timeout, yield_now};

    #[cfg(lockutils_loom)]
    pub(crate) use loom::thread::{Thread, current, park, yield_now};

    /// The models use no deadlines; `park_timeout` may return early (as
    /// std's may, spuriously), so yielding keeps its contract.
    #[cfg(lockutils_loom)]
    pub(crate) fn park_timeout(_: std::time::Duration) {
        loom::thread::yield_now();
    }
}

/// `loom`'s mutex with `parking_lot`'s interface (no poisoning).
#[cfg(lockutils_loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(lockutils_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Mutex<T> {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
