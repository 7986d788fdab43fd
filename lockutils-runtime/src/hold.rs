//! What a held lock is made of, below the public guards.

use std::mem::ManuallyDrop;
use std::ops::Deref;

use crate::error::LockError;
use crate::external::{self, Dir, ExternalHold, Location, Lost};
use crate::registry::{Entry, Handle};
use crate::spec::Mode;

/// A reference to a registry entry: borrowed forever by a call site's
/// cache, or counted (for names looked up at run time).
pub(crate) enum EntryRef {
    Static(&'static Entry),
    Owned(Handle),
}

impl Deref for EntryRef {
    type Target = Entry;
    #[inline]
    fn deref(&self) -> &Entry {
        match self {
            EntryRef::Static(e) => e,
            EntryRef::Owned(h) => h,
        }
    }
}

/// An entry whose in-process lock is held in some mode, and maybe a lock
/// file too. Dropping it releases the lock file first, then the
/// in-process lock.
///
/// It is `Send`, so the ownership of a held lock can move to the thread
/// that waits for the lock file on an async or timed caller's behalf.
pub(crate) struct Hold {
    // `ManuallyDrop` keeps the drop glue tiny, so releasing inlines; `Drop`
    // below releases both explicitly.
    entry: ManuallyDrop<EntryRef>,
    mode: Mode,
    /// Exclusive hold of a lock (not a semaphore): one holder at a time.
    writer: bool,
    external: ManuallyDrop<Option<ExternalHold>>,
}

impl Hold {
    /// # Safety
    /// The caller must have just taken `entry`'s in-process lock in `mode`;
    /// the `Hold` now owns it.
    #[inline(always)]
    pub(crate) unsafe fn new(entry: EntryRef, mode: Mode) -> Hold {
        let writer = mode == Mode::Exclusive && entry.kind().permits.is_none();
        Hold {
            entry: ManuallyDrop::new(entry),
            mode,
            writer,
            external: ManuallyDrop::new(None),
        }
    }

    #[inline]
    pub(crate) fn entry(&self) -> &Entry {
        &self.entry
    }

    #[inline]
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// An exclusive hold of a lock (not a semaphore): one holder at a time.
    #[inline(always)]
    pub(crate) fn is_writer(&self) -> bool {
        self.writer
    }

    /// Records the lock file or server lock held through this hold.
    pub(crate) fn set_external(&mut self, external: ExternalHold) {
        debug_assert!(self.external.is_none());
        *self.external = Some(external);
    }

    /// Whether an external lock is held (perhaps handed over already).
    #[inline]
    pub(crate) fn has_external(&self) -> bool {
        self.external.is_some()
    }

    /// For a hold that wants its lock file in `dir`: takes over the file
    /// a releaser parked (cohorting), if there is one it can use. A parked
    /// file it cannot use (another directory, or this hold is not the
    /// writer) is released.
    #[inline]
    pub(crate) fn take_parked(&mut self, dir: Dir<'_>) {
        let entry = &**self.entry;
        let state = entry.external();
        if let Some(f) = external::take_parked(state, dir, entry.name()) {
            if self.writer {
                self.set_external(f);
            } else {
                f.release(state);
            }
        }
    }

    /// Where the external lock is held, if one is.
    pub(crate) fn location(&self) -> Option<Location> {
        let name = self.entry.name();
        self.external.as_ref().map(|f| f.location(name))
    }

    /// Takes flock(2) on the held lock file too, waiting in the kernel if
    /// `block`. `Ok(false)`: busy. Without an external lock (process
    /// locking off) there is nothing to take: `Ok(true)`.
    pub(crate) fn flock(&mut self, block: bool) -> Result<bool, LockError> {
        let (name, mode) = (self.entry.name(), self.mode);
        match self.external.as_mut() {
            Some(external) => external.flock(name, mode, block),
            None => Ok(true),
        }
    }

    /// The open lock file, if a lock file is held.
    #[cfg(unix)]
    pub(crate) fn open_file(&self) -> Option<&std::fs::File> {
        self.external.as_ref().and_then(ExternalHold::file)
    }

    /// The server lock's fencing token, if it has one.
    pub(crate) fn fencing_token(&self) -> Option<u64> {
        self.external.as_ref().and_then(ExternalHold::fencing_token)
    }

    /// Whether a server lock may have been given away since.
    pub(crate) fn is_lost(&self) -> bool {
        self.external.as_ref().is_some_and(ExternalHold::is_lost)
    }

    /// Releases a lock-server lock on a helper thread, for async guards:
    /// the release is a network round trip, which must not run on an
    /// executor thread. The in-process lock is released as usual (after
    /// this returns); another acquirer then waits on the server until the
    /// release lands there.
    pub(crate) fn release_remote_elsewhere(&mut self) {
        if !matches!(&*self.external, Some(ExternalHold::Remote(_))) {
            return;
        }
        let slot = std::sync::Arc::new(parking_lot::Mutex::new(self.external.take()));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("lockutils-release".into())
            .spawn(move || {
                if let Some(remote) = theirs.lock().take() {
                    remote.close();
                }
            });
        if spawned.is_err() {
            // No thread to be had: release here rather than never.
            if let Some(remote) = slot.lock().take() {
                remote.close();
            }
        }
    }

    /// A future that completes when the server lock is lost.
    pub(crate) fn lost(&self) -> Lost {
        Lost::new(self.external.as_ref().and_then(ExternalHold::lost_flag))
    }

    /// Releases and closes the lock file (after it was removed), keeping
    /// the in-process lock.
    pub(crate) fn forget_file(&mut self) {
        if let Some(f) = self.external.take() {
            f.close();
        }
    }
}

/// How [`Hold::release_external`] let go of the external lock.
enum Released {
    Plain,
    /// Parked for the next holder in this process (cohorting).
    Parked,
    /// Released for real at the end of a batch of handoffs.
    BatchEnded,
}

impl Hold {
    /// Releases the external lock, or parks a lock file for a thread of
    /// this process waiting for the same lock (cohorting: `Parked`, and
    /// the caller releases the in-process lock with [`Hold::hand_over`]).
    #[cold]
    #[inline(never)]
    fn release_external(&mut self) -> Released {
        let Some(f) = self.external.take() else {
            return Released::Plain;
        };
        let state = self.entry.external();
        let (f, ended) = if self.writer {
            match f.park(state) {
                Ok(()) => return Released::Parked,
                Err(e) => e,
            }
        } else {
            (f, None)
        };
        // A panic while releasing (a lock server's client, say) must not
        // skip the in-process unlock that follows in `drop`: catch it, and
        // resume once everything is released.
        let writer = self.writer;
        let released = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match ended {
            Some(batch) => f.end_batch(state, batch),
            // SAFETY: a writer's Hold holds the in-process lock exclusively
            // (see `new`) until `drop` unlocks it, after this returns.
            None if writer => unsafe { f.release_as_writer(state) },
            None => f.release(state),
        }));
        if let Err(panic) = released {
            self.unlock_and_forget();
            std::panic::resume_unwind(panic);
        }
        if ended.is_some() {
            Released::BatchEnded
        } else {
            Released::Plain
        }
    }

    /// The in-process part of `drop` when a batch of handoffs has just
    /// ended: a thread of this process queued for the lock gets it before
    /// the releaser can barge back in, so that the threads of a process
    /// take turns (each then waits for the file in the kernel, in line
    /// with other processes).
    #[cold]
    #[inline(never)]
    fn unlock_fair(&mut self) {
        // SAFETY: the writer's mode is held (only a writer parks, so only
        // a writer ends a batch), and this runs once, from `drop`.
        unsafe { self.entry.local.unlock_fair() };
        if let EntryRef::Owned(_) = &*self.entry {
            self.drop_entry();
        }
    }

    /// The in-process part of `drop` after a lock file was parked:
    /// releases the in-process lock, then unlocks the file if nobody
    /// waits to take it any more (see `local::cohort`).
    #[cold]
    #[inline(never)]
    fn hand_over(&mut self) {
        let entry = &**self.entry;
        // SAFETY: a Hold owns the in-process lock in `mode` (see `new`),
        // and this runs once, from `drop`, instead of `unlock_and_forget`.
        unsafe { entry.local.unlock(self.mode) };
        entry.external().released();
        if let EntryRef::Owned(_) = &*self.entry {
            self.drop_entry();
        }
    }

    /// The in-process part of `drop`, also run by a panicking release.
    #[inline(always)]
    fn unlock_and_forget(&mut self) {
        // SAFETY: a Hold owns the in-process lock in `mode` (see `new`),
        // and this runs once: from `drop`, or from `release_external`,
        // which then unwinds out of `drop` before `drop` gets here.
        unsafe { self.entry.local.unlock(self.mode) };
        if let EntryRef::Owned(_) = &*self.entry {
            self.drop_entry();
        }
    }

    #[cold]
    #[inline(never)]
    fn drop_entry(&mut self) {
        // SAFETY: called once, from `drop`, after the last use of `entry`.
        unsafe { ManuallyDrop::drop(&mut self.entry) };
    }
}

impl Drop for Hold {
    #[inline(always)]
    fn drop(&mut self) {
        if self.external.is_some() {
            match self.release_external() {
                Released::Parked => return self.hand_over(),
                Released::BatchEnded => return self.unlock_fair(),
                Released::Plain => {}
            }
        }
        self.unlock_and_forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::RemoteHold;
    use crate::spec::Kind;

    struct PanicsOnRelease;

    impl RemoteHold for PanicsOnRelease {
        fn release(self: Box<Self>) {
            panic!("the lock server's client panicked");
        }
        fn describe(&self) -> String {
            "test server".into()
        }
    }

    #[test]
    fn a_panicking_external_release_still_releases_the_in_process_lock() {
        let name = "hold-test-panicking-release";
        let entry = crate::registry::get(name, Kind::MUTEX).unwrap();
        assert!(entry.local.try_lock(Mode::Exclusive));
        // SAFETY: taken just above.
        let mut hold = unsafe { Hold::new(EntryRef::Owned(entry), Mode::Exclusive) };
        hold.set_external(ExternalHold::remote(PanicsOnRelease));
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(hold)));
        assert!(dropped.is_err(), "the release's panic is passed on");
        let again = crate::registry::get(name, Kind::MUTEX).unwrap();
        assert!(
            again.local.try_lock(Mode::Exclusive),
            "the in-process lock stayed taken after the external release panicked"
        );
        // SAFETY: taken just above.
        unsafe { again.local.unlock(Mode::Exclusive) };
    }
}
