//! What a held lock is made of, below the public guards.

use std::ops::Deref;

use crate::registry::{Entry, Handle};

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

/// An entry whose in-process mutex is held, and maybe its lock file too.
/// Dropping it releases the lock file first, then the mutex.
///
/// It is `Send`, so the ownership of a held lock can move to the thread
/// that waits for the lock file on an async or timed caller's behalf.
pub(crate) struct Hold {
    entry: EntryRef,
    file_locked: bool,
}

impl Hold {
    /// # Safety
    /// The caller must have just taken `entry.mutex`; the `Hold` now owns it.
    #[inline]
    pub(crate) unsafe fn new(entry: EntryRef) -> Hold {
        Hold { entry, file_locked: false }
    }

    #[inline]
    pub(crate) fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Whether the lock file is locked through this hold.
    pub(crate) fn file_locked(&self) -> bool {
        self.file_locked
    }

    /// Records that the entry's lock file is locked through this hold.
    pub(crate) fn set_file_locked(&mut self) {
        self.file_locked = true;
    }

    /// Releases the lock file now (keeping the mutex), e.g. to retry after
    /// the file was removed.
    pub(crate) fn release_file(&mut self) {
        if std::mem::take(&mut self.file_locked) {
            // SAFETY: we hold the mutex, which guards the slot.
            unsafe { self.entry.external.unlock() };
        }
    }
}

impl Hold {
    /// Releases and closes the lock file (after it was removed), keeping
    /// the mutex.
    pub(crate) fn forget_file(&mut self) {
        self.release_file();
        // SAFETY: we hold the mutex, which guards the slot.
        unsafe { self.entry.external.close() };
    }
}

impl Drop for Hold {
    #[inline]
    fn drop(&mut self) {
        self.release_file();
        // SAFETY: a Hold owns the mutex (see `Hold::new`).
        unsafe { self.entry.mutex.unlock() };
    }
}
