//! The lock-file backend: lock files in a directory, oslo-compatible.
//!
//! Invariants:
//! * a lock file is locked by this process only for a holder of the
//!   entry's in-process lock: the thread or task that holds it, or the
//!   queued waiter the in-process lock was handed to together with the
//!   file (see [`handoff`]), or for the instant it takes a waiter thread
//!   to find that nobody wants what it got (see [`waiter`]);
//! * giving up (a deadline, `blocking(false)`, a dropped future) never
//!   waits for the kernel: only callers that may block for as long as it
//!   takes wait there themselves;
//! * after every acquisition the file locked is still the file at the
//!   path (`remove_external_lock_file` unlinks a file while holding its
//!   lock, and a waiter that then gets the lock on the old inode would
//!   share nothing with a newcomer who creates a new file): otherwise the
//!   acquisition starts over on a fresh file;
//! * nothing here reads a host-wide table or signals a thread.
//!
//! What is locked:
//! * a lock (reader/writer): the whole file, `F_WRLCK` for a writer,
//!   `F_RDLCK` for a reader (the ranges `lockf` and fasteners use);
//! * a semaphore of N permits: one byte per permit (see [`slots`]).
//!
//! Each registry entry keeps an [`EntryFiles`]: its open files (see
//! [`pool`]) and its handoff slot and turn (see [`handoff`]). A held lock
//! file is a [`FileSession`]; its release says what the in-process unlock
//! does next ([`Unlock`]).
//!
//! With `flock` (Linux), the file is also locked with `flock(2)`, after
//! the OFD lock and through the same open file, and released before it.
//! flock(2) locks belong to the open file description just as OFD locks
//! do, and this process's holders of one lock already exclude each other
//! in process before either is asked for, so the same open file serves
//! both. The one fixed order (OFD, then flock) means two lockutils
//! processes never hold one each while waiting for the other; `flock(1)`
//! and py-filelock users take flock only, so they never wait for an OFD
//! lock while holding the flock. flock(2) has no timed wait: a timed or
//! async wait for it polls (see `acquire`). On NFS, Linux emulates flock(2)
//! with byte-range locks, which would conflict with our own OFD lock: do
//! not use `flock` there.
//!
//! Where locks belong to the process (classic `fcntl`: FreeBSD, macOS,
//! Linux without OFD locks), there is one descriptor per file per process
//! and no handoff (see [`classic`]); waits that must be given up poll
//! instead of leaving the wait to a thread, since a thread still waiting
//! for the process after its caller left could take a lock in the
//! process's name.

#[cfg(unix)]
mod classic;
mod handoff;
mod lockfile;
mod pool;
mod slots;
mod sys;
mod waiter;

use std::path::PathBuf;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::LockError;
use crate::spec::{Kind, Mode};
use handoff::{Batch, Handoff};
use pool::{FilePool, Open};
use sys::Range;
use waiter::Want;

pub(crate) use pool::Files;
pub(crate) use waiter::running as waiter_threads;

/// What the in-process unlock does after an external lock was released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unlock {
    /// Release the in-process lock as usual.
    Plain,
    /// Hand the in-process lock to a queued waiter for the writer's mode if
    /// there is one, else release it: a batch of handoffs ended, and the
    /// threads of this process take turns rather than the releaser
    /// barging back in.
    HandOff,
    /// Nothing: the in-process lock was handed over with the lock file.
    Done,
}

/// What one acquisition asks of lock files.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileRequest<'a> {
    /// The full lock name.
    pub(crate) name: &'a str,
    pub(crate) kind: Kind,
    pub(crate) mode: Mode,
    pub(crate) files: Files<'a>,
}

impl FileRequest<'_> {
    /// The lock's one writer: exclusive mode on a lock (not a semaphore).
    #[inline]
    fn writer(&self) -> bool {
        self.mode == Mode::Exclusive && self.kind.permits.is_none()
    }

    fn want(&self) -> Want {
        match self.kind.permits {
            Some(permits) => Want::Slot { permits },
            None => Want::Whole(self.mode),
        }
    }
}

/// The lock-file state of one registry entry.
pub(crate) struct EntryFiles {
    pool: FilePool,
    handoff: Handoff<FileSession>,
}

/// A lock file held for one holder: the lock-file backend's part of a
/// held lock, released by [`FileSession::release`].
#[derive(Debug)]
pub(crate) struct FileSession {
    open: Open,
    range: Range,
    /// `flock(2)` is held too.
    flock: bool,
    batch: Batch,
}

impl EntryFiles {
    pub(crate) fn new() -> EntryFiles {
        EntryFiles {
            pool: FilePool::new(),
            handoff: Handoff::new(),
        }
    }

    /// The locked file handed over with the in-process lock, if one was.
    ///
    /// # Safety
    /// The caller holds the entry's in-process lock in the writer's mode.
    #[inline]
    pub(crate) unsafe fn take_handed(&self) -> Option<FileSession> {
        // SAFETY: the caller's promise.
        let mut s = unsafe { self.handoff.take() }?;
        s.batch.received();
        Some(s)
    }

    /// Whether a writer of this process holds the lock file, so that the
    /// file is likely to be handed over with the in-process lock: a waiter
    /// then had better stay close (a hint; one relaxed load).
    #[inline]
    pub(crate) fn handing_over(&self) -> bool {
        self.handoff.held()
    }

    /// Handoffs so far, and the most in one batch.
    pub(crate) fn cohort_stats(&self) -> (u64, u32) {
        self.handoff.stats()
    }

    /// A file from the pool for `req`.
    #[inline]
    fn take(&self, req: &FileRequest<'_>) -> Result<Open, LockError> {
        if req.writer() {
            // SAFETY: a writer's request comes from the holder of the
            // in-process lock in the writer's mode (the callers' contract).
            unsafe { self.pool.take_as_writer(req.name, req.files) }
        } else {
            self.pool.take(req.name, req.files)
        }
    }

    /// Returns a file that holds no lock to the pool.
    #[inline]
    fn give_back(&self, req: &FileRequest<'_>, open: Open) {
        self.pool_back(req.writer(), open);
    }

    /// Returns a file that holds no lock to the pool; `writer` as for
    /// [`FileSession::release`].
    #[inline]
    fn pool_back(&self, writer: bool, open: Open) {
        if writer {
            // SAFETY: a writer's file comes back from the holder of the
            // in-process lock in the writer's mode (the callers' contract).
            unsafe { self.pool.give_back_as_writer(open) }
        } else {
            self.pool.give_back(open)
        }
    }

    /// Checks that the file just locked is still at its path. `Ok(None)`:
    /// it was removed; the lock is let go and the file closed, and the
    /// caller starts over.
    #[inline]
    fn linked(
        &self,
        req: &FileRequest<'_>,
        open: Open,
        range: Range,
    ) -> Result<Option<FileSession>, LockError> {
        match open.file.is_linked() {
            Ok(true) => {
                if req.writer() {
                    self.handoff.set_held(true);
                    self.handoff.took();
                }
                Ok(Some(FileSession {
                    open,
                    range,
                    flock: false,
                    batch: Batch::default(),
                }))
            }
            Ok(false) => {
                let _ = open.file.unlock(range);
                Ok(None)
            }
            Err(e) => {
                let err = open.error(req.name, "inspect lock file", e);
                let _ = open.file.unlock(range);
                Err(err)
            }
        }
    }

    /// One attempt without waiting, for a holder of the in-process lock in
    /// `req.mode`. `Ok(None)`: busy (or another process's turn).
    #[inline]
    pub(crate) fn try_lock(&self, req: &FileRequest<'_>) -> Result<Option<FileSession>, LockError> {
        loop {
            let open = self.take(req)?;
            let got = match req.kind.permits {
                None => {
                    if !self.handoff.my_turn(&open.file, false) {
                        None
                    } else {
                        match open.file.try_lock(req.mode, Range::Whole) {
                            Ok(true) => Some(Range::Whole),
                            Ok(false) => {
                                self.handoff.saw_others();
                                None
                            }
                            Err(e) => return Err(open.error(req.name, "lock", e)),
                        }
                    }
                }
                Some(n) => match slots::try_slots(req.name, req.kind, &open, n) {
                    Ok(r) => r,
                    Err(e) => {
                        self.give_back(req, open);
                        return Err(e);
                    }
                },
            };
            let Some(range) = got else {
                self.give_back(req, open);
                return Ok(None);
            };
            if let Some(s) = self.linked(req, open, range)? {
                return Ok(Some(s));
            }
        }
    }

    /// Waits on this thread for as long as it takes (a caller that may
    /// block without a deadline): in the kernel for a lock, after other
    /// processes' turn.
    pub(crate) fn lock_blocking(&self, req: &FileRequest<'_>) -> Result<FileSession, LockError> {
        if req.kind.permits.is_some() {
            // Slots are taken lowest first when free; `fcntl` waits for one
            // range only, so a wait goes through the waiter thread while
            // this thread tries every slot now and then.
            if let Some(s) = self.try_lock(req)? {
                return Ok(s);
            }
            let mut wait = self.wait(req)?;
            let waker = crate::local::raw::thread_waker();
            loop {
                match wait.poll(self, req, &waker) {
                    Poll::Ready(r) => return r,
                    Poll::Pending => match wait.next_try() {
                        Some(at) => {
                            std::thread::park_timeout(at.saturating_duration_since(Instant::now()))
                        }
                        None => std::thread::park(),
                    },
                }
            }
        }
        loop {
            let open = self.take(req)?;
            self.handoff.my_turn(&open.file, true);
            // A try first: one call when the file is free, as the wait
            // would be, and a busy file is seen (see `handoff::turn_after`).
            let got = match open.file.try_lock(req.mode, Range::Whole) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    self.handoff.saw_others();
                    open.file.lock(req.mode, Range::Whole)
                }
                Err(e) => Err(e),
            };
            if let Err(e) = got {
                return Err(open.error(req.name, "lock", e));
            }
            if let Some(s) = self.linked(req, open, Range::Whole)? {
                return Ok(s);
            }
        }
    }

    /// Starts a wait that can be given up at any moment (an async caller,
    /// or one with a deadline): see [`FileWait`].
    pub(crate) fn wait(&self, req: &FileRequest<'_>) -> Result<FileWait, LockError> {
        let open = self.take(req)?;
        let mut wait = FileWait {
            thread: None,
            polled: None,
            next_try: None,
            pause: slots::RETRY.0,
        };
        if open.file.owns_its_locks() {
            let kernel = if req.kind.permits.is_some() {
                // The caller tries every slot now and then; the thread
                // waits on one in the kernel, through a second file.
                let other = open.reopen(req.name)?;
                wait.polled = Some(open);
                wait.next_try = Some(Instant::now() + wait.pause);
                other
            } else {
                open
            };
            let turn = self.handoff.turn_until();
            wait.thread = Some(waiter::Wait::start(req.name, kernel, req.want(), turn)?);
        } else {
            // Classic locks: poll (see the module docs).
            wait.polled = Some(open);
            wait.next_try = Some(Instant::now());
        }
        Ok(wait)
    }
}

/// A wait for a lock file that can be given up at any moment: through the
/// file's waiter thread (see [`waiter`]), and by trying again now and then
/// where the kernel cannot wait for what is wanted (any one of a
/// semaphore's slots) or a waiter thread cannot be used (classic locks).
/// Dropping it gives up: a lock delivered meanwhile is let go.
pub(crate) struct FileWait {
    thread: Option<waiter::Wait>,
    /// A file this caller tries with itself.
    polled: Option<Open>,
    next_try: Option<Instant>,
    pause: Duration,
}

impl FileWait {
    /// The held lock once it is ours; else remembers `waker` (woken when
    /// the waiter thread delivers) and, if [`FileWait::next_try`] says so,
    /// wants to be polled again by then.
    pub(crate) fn poll(
        &mut self,
        files: &EntryFiles,
        req: &FileRequest<'_>,
        waker: &Waker,
    ) -> Poll<Result<FileSession, LockError>> {
        loop {
            if let Some(t) = &self.thread
                && let Some(got) = t.poll(waker)
            {
                self.thread = None;
                let (open, range) = got?;
                if let Some(s) = files.linked(req, open, range)? {
                    if let Some(mine) = self.polled.take() {
                        files.give_back(req, mine);
                    }
                    return Poll::Ready(Ok(s));
                }
                // Removed while waited for: wait again on a fresh file.
                *self = files.wait(req)?;
                continue;
            }
            if let Some(at) = self.next_try
                && Instant::now() >= at
                && let Some(s) = self.try_polled(files, req)?
            {
                return Poll::Ready(Ok(s));
            }
            return Poll::Pending;
        }
    }

    /// One try with this caller's own file; schedules the next.
    fn try_polled(
        &mut self,
        files: &EntryFiles,
        req: &FileRequest<'_>,
    ) -> Result<Option<FileSession>, LockError> {
        let Some(open) = self.polled.take() else {
            return Ok(None);
        };
        let got = match req.kind.permits {
            Some(n) => slots::try_slots(req.name, req.kind, &open, n)?,
            None => match open.file.try_lock(req.mode, Range::Whole) {
                Ok(true) => Some(Range::Whole),
                Ok(false) => None,
                Err(e) => return Err(open.error(req.name, "lock", e)),
            },
        };
        match got {
            Some(range) => {
                let fresh = files.linked(req, open, range)?;
                if fresh.is_none() {
                    // Removed: go on with a fresh file.
                    self.polled = Some(files.take(req)?);
                }
                Ok(fresh)
            }
            None => {
                self.polled = Some(open);
                self.next_try = Some(Instant::now() + self.pause);
                self.pause = (self.pause * 2).min(slots::RETRY.1);
                Ok(None)
            }
        }
    }

    /// When this wait wants to be polled again even if not woken.
    pub(crate) fn next_try(&self) -> Option<Instant> {
        self.next_try
    }

    /// Gives up, returning this caller's own file to the pool (a lock the
    /// waiter thread delivered meanwhile is let go as the drop does).
    pub(crate) fn cancel(mut self, files: &EntryFiles, req: &FileRequest<'_>) {
        if let Some(open) = self.polled.take() {
            files.give_back(req, open);
        }
    }
}

impl FileSession {
    /// Also takes `flock(2)` on the file (see the module docs), waiting in
    /// the kernel if `block`. `Ok(false)`: busy.
    pub(crate) fn flock(&mut self, name: &str, mode: Mode, block: bool) -> Result<bool, LockError> {
        if self.flock {
            return Ok(true); // handed over with it
        }
        match self.open.file.flock(mode, block) {
            Ok(got) => {
                self.flock = got;
                Ok(got)
            }
            Err(e) => Err(self.open.error(name, "flock", e)),
        }
    }

    /// Whether it can serve an acquisition of `files` (a file handed over
    /// with the in-process lock was opened for the releaser's request).
    pub(crate) fn serves(&self, files: Files<'_>) -> bool {
        self.open.matches(files)
    }

    /// Releases the lock, or hands it over with the in-process lock:
    /// `handoff` offers the in-process lock (held in the writer's mode) to
    /// a queued waiter and says whether one took it. Returns what the
    /// in-process unlock does next.
    ///
    /// `writer`: it was taken by the lock's writer (exclusive mode on a
    /// lock, not a semaphore); `queued`: someone is queued for the
    /// in-process lock (a hint: nothing is offered to nobody).
    ///
    /// # Safety
    /// The caller holds the entry's in-process lock in the mode this file
    /// was taken for, and `handoff` hands that lock over.
    #[inline]
    pub(crate) unsafe fn release(
        mut self,
        files: &EntryFiles,
        writer: bool,
        queued: bool,
        handoff: impl Fn() -> bool,
    ) -> Unlock {
        // The turn other processes get (see `handoff::turn_after`): after a
        // streak while they want the file, or after a batch that reached
        // its bound. A batch that ends because nobody here waits releases
        // the file as a plain release does.
        let mut turn = None;
        if writer && self.open.file.owns_its_locks() {
            let in_batch = self.batch.handoffs() > 0;
            let bounded = !self.batch.may_continue();
            if (queued || in_batch) && !bounded {
                let before = self.batch;
                self.batch.count();
                // SAFETY: the caller holds the writer's mode (our contract).
                unsafe { files.handoff.put(self) };
                if handoff() || (in_batch && handoff::soon(&handoff)) {
                    return Unlock::Done;
                }
                // Nobody queued for it: take it back.
                // SAFETY: still the writer (the handoff did not happen).
                self = unsafe { files.handoff.take() }.unwrap_or_else(|| unreachable!());
                self.batch = before;
            }
            turn = match files.handoff.letting_go() {
                Some(kept) => Some((kept, true)),
                None if bounded => self.batch.lasted().map(|b| (b, false)),
                None => None,
            };
        }
        if writer {
            files.handoff.set_held(false);
            files.handoff.count(self.batch.handoffs());
        }
        self.unlock(files, writer);
        match turn {
            Some((kept, others)) => {
                files.handoff.give_turn(kept, others);
                Unlock::HandOff
            }
            None => Unlock::Plain,
        }
    }

    /// Unlocks (flock first, then the record lock) and returns the file to
    /// the pool. If unlocking fails the file is closed instead, which
    /// releases the locks anyway.
    #[inline]
    fn unlock(self, files: &EntryFiles, writer: bool) {
        let flock_released = !self.flock || self.open.file.funlock().is_ok();
        if self.open.file.unlock(self.range).is_ok() && flock_released {
            files.pool_back(writer, self.open);
        }
    }

    /// Unlocks and closes the file (after removing it). A file inherited
    /// through `fork` is only closed: its open file description, and so
    /// its lock, is the parent's.
    pub(crate) fn close(self) {
        if self.open.is_here() {
            if self.flock {
                let _ = self.open.file.funlock();
            }
            let _ = self.open.file.unlock(self.range);
        }
    }

    /// The lock file's path; `name` is the full lock name.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.open.path(name)
    }

    /// The open file the lock is held through.
    #[cfg(unix)]
    pub(crate) fn file(&self) -> &std::fs::File {
        self.open.file.file()
    }
}

/// Runs `f` on this process's classic-mode descriptor for `path`, if it
/// has one. In classic mode, opening and closing another descriptor of the
/// file would drop every lock the process holds on it, so code that only
/// asks about the file (`holders`) must use this one.
#[cfg(unix)]
pub(crate) fn with_classic_file<R>(
    path: &std::path::Path,
    f: impl FnOnce(&std::fs::File) -> R,
) -> Option<R> {
    classic::find(path).map(|inode| f(inode.file()))
}
