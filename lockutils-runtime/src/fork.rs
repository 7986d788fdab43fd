//! Telling a forked child from its parent.
//!
//! Invariant: [`generation`] is the number of `fork`s between the process
//! that first used lockutils and this one (0 there), once [`watch`] has
//! run; state that must not cross a fork records the generation it was made
//! in ([`Born`]) and is treated as not this process's when it differs.
//!
//! A child forked without `exec` gets a copy of the parent's memory but
//! only the forking thread. Everything else the runtime keeps is then
//! stale: in-process locks held or waited for by threads that do not exist
//! here, open lock files whose open file descriptions (and so OFD locks)
//! are the parent's, background threads (timers, lock-file waiters,
//! lock-server renewals) that were not copied, connections whose sockets
//! the parent still uses. A `pthread_atfork` child handler bumps a counter
//! (one atomic add, async-signal-safe, as a forked child's handlers must
//! be); the rest is decided lazily, by the code that finds a stamp of
//! another generation. Checking costs one relaxed load and no system call.

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

static FORKS: AtomicU32 = AtomicU32::new(0);

/// How many forks led to this process (0 in the original process).
#[inline(always)]
pub(crate) fn generation() -> u32 {
    FORKS.load(Ordering::Relaxed)
}

/// Starts counting forks. Called by whatever makes state that a fork must
/// not carry over (the registry, a lock file, a background thread, a lock
/// server's connection), before it makes it.
pub(crate) fn watch() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(imp::on_fork_in_child);
}

/// Runs in the child right after `fork` (see pthread_atfork(3)).
#[cfg_attr(not(unix), allow(dead_code))]
extern "C" fn forked() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The fork generation something was made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Born(u32);

impl Born {
    /// Stamps something made now (and starts watching forks).
    pub(crate) fn now() -> Born {
        watch();
        Born(generation())
    }

    /// Whether it was made in this process, not inherited through `fork`.
    #[inline(always)]
    pub(crate) fn here(self) -> bool {
        self.0 == generation()
    }
}

/// A process-wide value made afresh in every process: the first use in a
/// forked child makes a new one, and the parent's copy is left alone
/// (leaked), since threads that no longer exist may have held its locks.
/// Each value lives as long as its process.
pub(crate) struct PerProcess<T> {
    current: AtomicPtr<(Born, T)>,
    make: fn() -> T,
}

impl<T: Send + Sync> PerProcess<T> {
    pub(crate) const fn new(make: fn() -> T) -> PerProcess<T> {
        PerProcess {
            current: AtomicPtr::new(std::ptr::null_mut()),
            make,
        }
    }

    /// This process's value, made on first use.
    #[inline]
    pub(crate) fn get(&self) -> &T {
        let p = self.current.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: published by `make_here` from a leaked box, never
            // freed (see the type's docs).
            let (born, value) = unsafe { &*p };
            if born.here() {
                return value;
            }
        }
        self.make_here(p)
    }

    #[cold]
    fn make_here(&self, seen: *mut (Born, T)) -> &T {
        let new = Box::into_raw(Box::new((Born::now(), (self.make)())));
        match self
            .current
            .compare_exchange(seen, new, Ordering::AcqRel, Ordering::Acquire)
        {
            // The value `seen` (a parent's, if any) is leaked on purpose.
            // SAFETY: just published; boxes published here are never freed.
            Ok(_) => unsafe { &(*new).1 },
            Err(_) => {
                // Another thread of this process made one first.
                // SAFETY: `new` was never shared.
                drop(unsafe { Box::from_raw(new) });
                self.get()
            }
        }
    }
}

#[cfg(unix)]
mod imp {
    pub(super) fn on_fork_in_child() {
        // SAFETY: registers a handler that only does an atomic add, which
        // is async-signal-safe as a forked child's handlers must be.
        unsafe { libc::pthread_atfork(None, None, Some(super::forked)) };
    }
}

#[cfg(not(unix))]
mod imp {
    // No fork outside Unix.
    pub(super) fn on_fork_in_child() {}
}
