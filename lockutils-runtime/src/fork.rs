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

use std::marker::PhantomData;
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

/// A value each process makes for itself. In a forked child the first
/// use makes a new one, and the inherited one is left alone for good:
/// never used, never dropped. It may hold sockets the parent still talks
/// through, mutexes that threads absent in the child held at the fork, a
/// runtime whose threads the child lacks; dropping any of those could write
/// to the parent's connections or wait forever.
///
/// Two ways to make one: [`PerProcess::lazy`] for a `static` made on first
/// use in each process ([`PerProcess::get`]), and [`PerProcess::new`] for a
/// value made now, which a child renews from the inherited one
/// ([`PerProcess::renewed`]).
///
/// Invariant: `current` is null (a lazy one not made yet) or points to a
/// live `Made` from `Box::into_raw`; a `Made` is freed only by `Drop`, and
/// only if it was made in the dropping process. Values replaced after a
/// fork are leaked, one per fork generation that used them.
pub(crate) struct PerProcess<T> {
    current: AtomicPtr<Made<T>>,
    /// Makes a lazy one's value.
    make: Option<fn() -> T>,
    /// Shares `T` between threads and moves it across them, as `RwLock<T>`
    /// does: `Send` if `T: Send`, `Sync` if `T: Send + Sync`.
    _owns: PhantomData<std::sync::RwLock<T>>,
}

struct Made<T> {
    born: Born,
    value: T,
}

impl<T> PerProcess<T> {
    /// A value `make` makes on first use in each process.
    pub(crate) const fn lazy(make: fn() -> T) -> PerProcess<T> {
        PerProcess {
            current: AtomicPtr::new(std::ptr::null_mut()),
            make: Some(make),
            _owns: PhantomData,
        }
    }

    /// `value`, made in this process.
    #[cfg_attr(
        not(any(feature = "redis", feature = "postgres", feature = "etcd")),
        allow(dead_code) // only lock servers keep connections
    )]
    pub(crate) fn new(value: T) -> PerProcess<T> {
        let made = Box::new(Made {
            born: Born::now(),
            value,
        });
        PerProcess {
            current: AtomicPtr::new(Box::into_raw(made)),
            make: None,
            _owns: PhantomData,
        }
    }

    /// This process's value, made on first use (for one made by
    /// [`PerProcess::lazy`]).
    #[inline]
    pub(crate) fn get(&self) -> &T {
        self.renewed(|_| match self.make {
            Some(make) => make(),
            None => unreachable!("PerProcess::get on a value made by new(): use renewed()"),
        })
    }

    /// This process's value; in a forked child, the first call makes it
    /// with `fresh`, given the inherited value (`None` for a lazy one not
    /// made before).
    #[inline]
    pub(crate) fn renewed(&self, fresh: impl FnOnce(Option<&T>) -> T) -> &T {
        let made = self.current.load(Ordering::Acquire);
        if !made.is_null() {
            // SAFETY: a non-null `current` points to a live `Made` (the
            // invariant); it is freed only by `drop(&mut self)`, which
            // cannot run while `&self` is borrowed.
            let m = unsafe { &*made };
            if m.born.here() {
                return &m.value;
            }
        }
        self.renew(made, fresh)
    }

    #[cold]
    #[inline(never)]
    fn renew(&self, seen: *mut Made<T>, fresh: impl FnOnce(Option<&T>) -> T) -> &T {
        // SAFETY: as in `renewed`; an inherited `Made` is never freed here.
        let value = fresh(unsafe { seen.as_ref() }.map(|m| &m.value));
        let made = Box::into_raw(Box::new(Made {
            born: Born::now(),
            value,
        }));
        match self
            .current
            .compare_exchange(seen, made, Ordering::AcqRel, Ordering::Acquire)
        {
            // An inherited one is leaked on purpose (see the type's docs).
            // SAFETY: `made` is live and now `current`.
            Ok(_) => unsafe { &(*made).value },
            Err(theirs) => {
                // Another thread of this process made it first: use
                // theirs, free ours (never shared).
                // SAFETY: `made` came from Box::into_raw just above and
                // was never published.
                drop(unsafe { Box::from_raw(made) });
                // SAFETY: `theirs` is `current`, not null (someone stored
                // it) and live by the invariant.
                unsafe { &(*theirs).value }
            }
        }
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        let made = *self.current.get_mut();
        if made.is_null() {
            return;
        }
        // SAFETY: `current` is live and owned by `self`, dropped only here.
        let made = unsafe { Box::from_raw(made) };
        if !made.born.here() {
            // Inherited through fork: left alone, like the ones replaced.
            std::mem::forget(made);
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_makes_its_own_value_and_leaves_the_inherited_one() {
        use std::sync::atomic::AtomicUsize;
        static DROPPED: AtomicUsize = AtomicUsize::new(0);
        struct Counted(u32);
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPPED.fetch_add(1, Ordering::SeqCst);
            }
        }
        let per = PerProcess::new(Counted(1));
        assert_eq!(per.renewed(|_| unreachable!("made here")).0, 1);
        // SAFETY: the child only calls into `per`, then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let fresh = per.renewed(|old| Counted(old.unwrap().0 + 1)).0;
            let again = per.renewed(|_| Counted(99)).0;
            drop(per); // frees the child's value only
            let ok = fresh == 2 && again == 2 && DROPPED.load(Ordering::SeqCst) == 1;
            // SAFETY: ends the child without the parent's atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(per.renewed(|_| unreachable!("still this process's")).0, 1);
        drop(per);
        assert_eq!(DROPPED.load(Ordering::SeqCst), 1);
    }
}
