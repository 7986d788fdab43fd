//! A held lock: the registry entry, the mode its in-process lock is held
//! in, and the external [`Session`] if one is held. Released by one `Drop`.
//!
//! Invariants:
//! * a [`Hold`] owns its entry's in-process lock in `mode` from the moment
//!   it is made until its drop releases it, after the session: the
//!   external lock is released (or handed over with the in-process lock)
//!   first, and what that release says ([`Unlock`]) decides how the
//!   in-process lock goes;
//! * a holder that got the in-process lock by waiting may have been handed
//!   a locked file with it: [`Hold::waited`] takes it over, so nothing is
//!   ever left in the handoff slot with the in-process lock held by
//!   someone who does not know it;
//! * in a process forked from the one that took it, a hold is the
//!   parent's: dropping it there releases nothing (not the parent's lock
//!   file, not the in-process lock whose waiters are the parent's threads).

use std::mem::ManuallyDrop;
use std::ops::Deref;

use crate::error::LockError;
use crate::external::{Location, Lost, Session, Unlock};
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

/// An entry whose in-process lock is held in some mode, and maybe an
/// external lock too; see the module docs.
///
/// It is `Send`: an async guard holding it moves between executor threads.
pub(crate) struct Hold {
    // `ManuallyDrop` keeps the drop glue tiny, so releasing inlines; `Drop`
    // below releases both explicitly.
    entry: ManuallyDrop<EntryRef>,
    mode: Mode,
    /// Exclusive hold of a lock (not a semaphore): one holder at a time.
    writer: bool,
    session: ManuallyDrop<Option<Session>>,
    /// When the lock was held, for the hold-time metric (feature
    /// `metrics`; empty without it).
    since: crate::metrics::Since,
}

impl Hold {
    /// # Safety
    /// The caller must have just taken `entry`'s in-process lock in `mode`
    /// without waiting (so nothing was handed over with it); the `Hold`
    /// now owns it.
    #[inline(always)]
    pub(crate) unsafe fn new(entry: EntryRef, mode: Mode) -> Hold {
        let writer = mode == Mode::Exclusive && entry.kind().permits.is_none();
        Hold {
            entry: ManuallyDrop::new(entry),
            mode,
            writer,
            session: ManuallyDrop::new(None),
            since: Default::default(),
        }
    }

    /// A hold of an in-process lock taken by waiting: a locked file handed
    /// over with it becomes this hold's session if `external` (the
    /// acquisition takes the external lock), and is let go otherwise (the
    /// in-process lock stays held).
    ///
    /// # Safety
    /// The caller must have just taken `entry`'s in-process lock in `mode`;
    /// the `Hold` now owns it.
    #[inline]
    pub(crate) unsafe fn waited(entry: EntryRef, mode: Mode, external: bool) -> Hold {
        // SAFETY: forwarded.
        let mut hold = unsafe { Hold::new(entry, mode) };
        if hold.writer
            && let Some(files) = hold.entry.files_if_made()
            // SAFETY: this hold holds the writer's mode (our contract).
            && let Some(f) = unsafe { files.take_handed() }
        {
            if external {
                *hold.session = Some(Session::File(f));
            } else {
                // SAFETY: the writer's mode is held, and kept (nothing is
                // handed over).
                unsafe { f.release(files, true, false, || false) };
            }
        }
        hold
    }

    /// Counts the acquisition that made this hold (see `metrics`).
    #[inline(always)]
    pub(crate) fn acquired(&mut self, clock: crate::metrics::Clock) {
        self.since = clock.acquired(&self.entry.metrics, self.entry.name());
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

    /// Takes the external lock out (to release it without the in-process
    /// lock going with it).
    pub(crate) fn take_session(&mut self) -> Option<Session> {
        self.session.take()
    }

    /// Records the external lock held through this hold.
    pub(crate) fn set_session(&mut self, session: Session) {
        debug_assert!(self.session.is_none());
        *self.session = Some(session);
    }

    /// Where the external lock is held, if one is.
    pub(crate) fn location(&self) -> Option<Location> {
        let name = self.entry.name();
        self.session.as_ref().map(|s| s.location(name))
    }

    /// The open lock file, if a lock file is held.
    #[cfg(unix)]
    pub(crate) fn open_file(&self) -> Option<&std::fs::File> {
        self.session.as_ref().and_then(Session::file)
    }

    /// The server lock's fencing token, if it has one.
    pub(crate) fn fencing_token(&self) -> Option<u64> {
        self.session.as_ref().and_then(Session::fencing_token)
    }

    /// Whether a server lock may have been given away since.
    pub(crate) fn is_lost(&self) -> bool {
        self.session.as_ref().is_some_and(Session::is_lost)
    }

    /// A future that completes when the server lock is lost.
    pub(crate) fn lost(&self) -> Lost {
        match self.session.as_ref() {
            Some(s) => s.lost(),
            None => Lost::new(None),
        }
    }

    /// Releases a lock-server lock on a helper thread, for async guards:
    /// the release is a network round trip, which must not run on an
    /// executor thread. The in-process lock is released as usual (when
    /// this hold drops); another acquirer then waits on the server until
    /// the release lands there.
    pub(crate) fn release_server_elsewhere(&mut self) {
        if let Some(s) = self.session.take() {
            *self.session = s.release_server_elsewhere();
        }
    }

    /// Releases and closes the lock file (after it was removed), keeping
    /// the in-process lock.
    pub(crate) fn forget_file(&mut self) {
        if let Some(s) = self.session.take() {
            s.close();
        }
    }

    /// Takes `flock(2)` on the held lock file too, waiting in the kernel
    /// if `block`. `Ok(false)`: busy. Without a lock file (process locking
    /// off) there is nothing to take: `Ok(true)`.
    pub(crate) fn flock(&mut self, block: bool) -> Result<bool, LockError> {
        let (name, mode) = (self.entry.name(), self.mode);
        match self.session.as_mut().and_then(Session::as_file) {
            Some(f) => f.flock(name, mode, block),
            None => Ok(true),
        }
    }
}

impl Drop for Hold {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.entry.born.here() {
            return self.leave_inherited();
        }
        self.entry.metrics.released(self.since);
        let session = self.session.take();
        // SAFETY: a Hold owns its in-process lock in `mode` (see `new`),
        // and this runs once.
        unsafe { release(&self.entry, self.mode, self.writer, session) };
        if let EntryRef::Owned(_) = &*self.entry {
            self.drop_entry();
        }
    }
}

impl Hold {
    #[cold]
    #[inline(never)]
    fn drop_entry(&mut self) {
        // SAFETY: called once, from `drop`, after the last use of `entry`.
        unsafe { ManuallyDrop::drop(&mut self.entry) };
    }

    /// `drop` in a forked child: closes an inherited lock file's
    /// descriptor (which leaves the parent's lock alone) and leaves
    /// everything else as it is (see the module docs).
    #[cold]
    #[inline(never)]
    fn leave_inherited(&mut self) {
        if let Some(Session::File(f)) = self.session.take() {
            drop(f);
        }
    }
}

/// Releases a held lock: the external `session` (if any) first, then the
/// in-process lock as the session's release says. A panic while releasing
/// the session (a lock server's client, say) does not skip the in-process
/// unlock: it is caught, and resumed once everything is released.
///
/// # Safety
/// The caller holds `entry`'s in-process lock in `mode`, and gives it up.
#[inline(always)]
pub(crate) unsafe fn release(entry: &Entry, mode: Mode, writer: bool, session: Option<Session>) {
    let unlock = match session {
        None => Unlock::Plain,
        // SAFETY: forwarded.
        Some(s) => unsafe { release_session(entry, mode, writer, s) },
    };
    match unlock {
        // SAFETY: held in `mode` (our contract); released once, here.
        Unlock::Plain => unsafe { entry.local.unlock(mode) },
        // SAFETY: as above; only a writer's release says `HandOff`.
        Unlock::HandOff => unsafe { hand_off_or_unlock(entry, mode) },
        Unlock::Done => {}
    }
}

#[cold]
#[inline(never)]
unsafe fn hand_off_or_unlock(entry: &Entry, mode: Mode) {
    // SAFETY: the caller holds the writer's mode.
    if !unsafe { entry.local.handoff() } {
        // SAFETY: still held (nobody was handed it).
        unsafe { entry.local.unlock(mode) };
    }
}

/// The session part of [`release`].
#[inline]
unsafe fn release_session(entry: &Entry, mode: Mode, writer: bool, s: Session) -> Unlock {
    let released = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let handoff = || {
            // SAFETY: the caller holds the writer's mode when a writer's
            // lock file is offered (the session only calls this for one).
            unsafe { entry.local.handoff() }
        };
        let queued = writer;
        // SAFETY: forwarded; `handoff` hands over the in-process lock held.
        unsafe { s.release(|| entry.files_if_made(), writer, queued, handoff) }
    }));
    match released {
        Ok(unlock) => unlock,
        Err(panic) => {
            // SAFETY: still held in `mode` (a panicking release hands
            // nothing over); released once, here.
            unsafe { entry.local.unlock(mode) };
            std::panic::resume_unwind(panic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::ServerLock;
    use crate::spec::Kind;

    struct PanicsOnRelease;

    impl ServerLock for PanicsOnRelease {
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
        hold.set_session(Session::Server(Box::new(PanicsOnRelease)));
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
