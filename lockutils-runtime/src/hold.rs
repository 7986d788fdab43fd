//! What a held lock is made of, below the public guards.

use std::mem::ManuallyDrop;
use std::ops::Deref;

use crate::external::{ExternalHold, Location, Lost};
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

    /// Where the external lock is held, if one is.
    pub(crate) fn location(&self) -> Option<Location> {
        let name = self.entry.name();
        self.external.as_ref().map(|f| f.location(name))
    }

    /// The server lock's fencing token, if it has one.
    pub(crate) fn fencing_token(&self) -> Option<u64> {
        self.external.as_ref().and_then(ExternalHold::fencing_token)
    }

    /// Whether a server lock may have been given away since.
    pub(crate) fn is_lost(&self) -> bool {
        self.external.as_ref().is_some_and(ExternalHold::is_lost)
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

impl Hold {
    #[cold]
    #[inline(never)]
    fn release_external(&mut self) {
        if let Some(f) = self.external.take() {
            f.release(&self.entry.external);
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
            self.release_external();
        }
        // SAFETY: a Hold owns the in-process lock in `mode` (see `new`).
        unsafe { self.entry.local.unlock(self.mode) };
        if let EntryRef::Owned(_) = &*self.entry {
            self.drop_entry();
        }
    }
}
