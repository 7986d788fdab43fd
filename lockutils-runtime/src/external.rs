//! The lock-file half of an external lock.
//!
//! Each registry entry has an [`ExternalSlot`]: the lock file it has open,
//! kept open between acquisitions (no open+close per acquisition) and
//! closed with the entry, so dynamic names never pile up descriptors. The
//! slot is only touched by whoever holds the entry's in-process mutex, which
//! is why it needs no lock of its own.
//!
//! After every acquisition we check that the file we locked still has a
//! name: `remove_external_lock_file` unlinks the file while holding its
//! lock, and a waiter that then gets the lock on the old inode would share
//! nothing with a newcomer who creates a new file. Such a waiter reopens
//! and tries again.

use std::cell::UnsafeCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Waker;
use std::time::Instant;

use crate::config;
use crate::error::LockError;
use crate::file_lock::{self, LockFile, OpenError};
use crate::hold::Hold;
use crate::registry::Entry;

/// Where a lock's directory comes from.
#[derive(Clone, Copy)]
pub(crate) enum Dir<'a> {
    /// The lock's own `lock_path`.
    Explicit(&'a Path),
    /// The process configuration (`set_lock_path` or the environment).
    Configured,
}

struct Open {
    file: LockFile,
    dir: Arc<Path>,
    /// The config generation `dir` was read under; `None` for an explicit dir.
    generation: Option<u64>,
}

/// The lock file of one registry entry.
pub(crate) struct ExternalSlot(UnsafeCell<Option<Open>>);

// SAFETY: the cell is only accessed by the holder of the entry's mutex,
// which serialises all access (see the module docs).
unsafe impl Sync for ExternalSlot {}

impl ExternalSlot {
    pub(crate) const fn new() -> Self {
        ExternalSlot(UnsafeCell::new(None))
    }

    /// # Safety
    /// The caller must hold the entry's in-process mutex.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self) -> &mut Option<Open> {
        // SAFETY: exclusive by the caller's contract.
        unsafe { &mut *self.0.get() }
    }

    /// Unlocks the file. Errors are ignored: closing the descriptor (which
    /// happens at the latest when the entry goes) releases the lock anyway.
    ///
    /// # Safety
    /// The caller must hold the entry's in-process mutex.
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: forwarded.
        if let Some(open) = unsafe { self.get() }
            && open.file.unlock().is_err() {
                // Don't keep a descriptor whose lock state we no longer know.
                unsafe { *self.get() = None };
            }
    }

    /// Closes the lock file (releasing any lock on it).
    ///
    /// # Safety
    /// The caller must hold the entry's in-process mutex.
    pub(crate) unsafe fn close(&self) {
        unsafe { *self.get() = None };
    }

    /// The path of the open lock file, for messages.
    ///
    /// # Safety
    /// The caller must hold the entry's in-process mutex.
    pub(crate) unsafe fn path(&self, entry: &Entry) -> Option<PathBuf> {
        unsafe { self.get() }.as_ref().map(|o| o.dir.join(file_name(entry)))
    }
}

fn file_name(entry: &Entry) -> String {
    // The prefix cannot contain '/', so replacing in the full name only
    // touches the name part, as oslo does.
    entry.name().replace('/', "_")
}

/// Makes sure the slot holds the right lock file open and returns it.
fn open_file<'s>(
    slot: &'s mut Option<Open>,
    entry: &Entry,
    dir: Dir<'_>,
) -> Result<&'s LockFile, LockError> {
    let reuse = match (dir, &*slot) {
        (_, None) => false,
        (Dir::Explicit(p), Some(o)) => o.generation.is_none() && *o.dir == *p,
        (Dir::Configured, Some(o)) => o.generation == Some(config::generation()),
    };
    if !reuse {
        let (generation, dir) = match dir {
            Dir::Explicit(p) => (None, Arc::from(p)),
            Dir::Configured => match config::current_lock_path() {
                (g, Some(d)) => (Some(g), d),
                (_, None) => {
                    return Err(LockError::LockPathNotSet { name: entry.name().to_owned() });
                }
            },
        };
        *slot = None; // close the old file before opening another
        let file = open_creating_dir(entry, &dir)?;
        *slot = Some(Open { file, dir, generation });
    }
    Ok(&slot.as_ref().unwrap_or_else(|| unreachable!()).file)
}

fn open_creating_dir(entry: &Entry, dir: &Path) -> Result<LockFile, LockError> {
    let path = dir.join(file_name(entry));
    let err = |e: OpenError| match e {
        OpenError::NotRegular(kind) => {
            LockError::NotRegularFile { name: entry.name().to_owned(), path: path.clone(), kind }
        }
        OpenError::Io(op, source) => {
            LockError::Io { name: entry.name().to_owned(), path: path.clone(), op, source }
        }
    };
    match LockFile::open(&path) {
        Err(OpenError::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {
            file_lock::create_dir(dir).map_err(|source| LockError::Io {
                name: entry.name().to_owned(),
                path: dir.to_path_buf(),
                op: "create lock directory",
                source,
            })?;
            LockFile::open(&path).map_err(err)
        }
        r => r.map_err(err),
    }
}

fn io_error(entry: &Entry, op: &'static str, source: std::io::Error) -> LockError {
    // SAFETY (of the callers): they hold the mutex.
    let path = unsafe { entry.external.path(entry) }.unwrap_or_default();
    LockError::Io { name: entry.name().to_owned(), path, op, source }
}

/// How long to wait for the lock file.
#[derive(Clone, Copy)]
pub(crate) enum FileWait {
    Try,
    Block,
    Until(Instant),
}

/// What an attempt found.
pub(crate) enum Attempt {
    Locked,
    Busy,
}

/// Takes the lock file for a thread that may block: `Block` waits in the
/// kernel on this thread, `Until` waits on a helper thread so the wait can
/// end at the deadline. `Ok(None)`: busy (for `Try`) or the deadline passed;
/// the hold is then gone and the in-process lock released.
pub(crate) fn lock(mut hold: Hold, dir: Dir<'_>, wait: FileWait) -> Result<Option<Hold>, LockError> {
    let deadline = match wait {
        FileWait::Try | FileWait::Block => {
            return Ok(match lock_step(&mut hold, dir, wait)? {
                Attempt::Locked => Some(hold),
                Attempt::Busy => None,
            });
        }
        FileWait::Until(deadline) => deadline,
    };
    if let Attempt::Locked = lock_step(&mut hold, dir, FileWait::Try)? {
        return Ok(Some(hold));
    }
    match Handoff::start(hold, dir)?.wait_until(deadline) {
        None => Ok(None),
        Some(r) => r.map(Some),
    }
}

/// One attempt: open if needed, lock (waiting in the kernel for `Block`),
/// then check the file is still linked, retrying if it was removed.
pub(crate) fn lock_step(hold: &mut Hold, dir: Dir<'_>, wait: FileWait) -> Result<Attempt, LockError> {
    loop {
        let entry = hold.entry();
        // SAFETY: a Hold owns the mutex.
        let slot = unsafe { entry.external.get() };
        let file = open_file(slot, entry, dir)?;
        let locked = match wait {
            FileWait::Block => file.lock().map(|()| true),
            _ => file.try_lock(),
        }
        .map_err(|e| io_error(entry, "lock", e))?;
        if !locked {
            return Ok(Attempt::Busy);
        }
        hold.set_file_locked();
        if still_linked(hold)? {
            return Ok(Attempt::Locked);
        }
    }
}

/// After locking: is the file still the one at its path? If it was removed
/// while we waited, release it, close it, and say no so the caller retries.
fn still_linked(hold: &mut Hold) -> Result<bool, LockError> {
    let entry = hold.entry();
    // SAFETY: a Hold owns the mutex.
    let slot = unsafe { entry.external.get() };
    let Some(open) = slot else { return Ok(false) };
    match open.file.is_linked() {
        Ok(true) => Ok(true),
        Ok(false) => {
            hold.release_file();
            // SAFETY: as above; `release_file` is done with the slot.
            unsafe { *hold.entry().external.get() = None };
            Ok(false)
        }
        Err(e) => {
            let err = io_error(entry, "inspect lock file", e);
            hold.release_file();
            Err(err)
        }
    }
}

/// A wait for the lock file on a helper thread, for callers that must not
/// block (async) or must stop at a deadline. The helper owns the [`Hold`]
/// while it waits; if the caller gives up, the helper releases everything
/// as soon as its kernel wait ends.
pub(crate) struct Handoff {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    done: Condvar,
}

enum State {
    Waiting(Option<Waker>),
    Done(Result<Hold, LockError>),
    Taken,
    Abandoned,
}

impl Handoff {
    /// Starts the helper thread; it takes the lock file in the kernel.
    pub(crate) fn start(hold: Hold, dir: Dir<'_>) -> Result<Handoff, LockError> {
        let shared =
            Arc::new(Shared { state: Mutex::new(State::Waiting(None)), done: Condvar::new() });
        let theirs = shared.clone();
        let dir_owned: Option<PathBuf> = match dir {
            Dir::Explicit(p) => Some(p.to_path_buf()),
            Dir::Configured => None,
        };
        let name = hold.entry().name().to_owned();
        std::thread::Builder::new()
            .name("lockutils-wait".into())
            .spawn(move || {
                let mut hold = hold;
                let dir = match &dir_owned {
                    Some(p) => Dir::Explicit(p),
                    None => Dir::Configured,
                };
                let r = loop {
                    match lock_step(&mut hold, dir, FileWait::Block) {
                        Ok(Attempt::Locked) => break Ok(hold),
                        Ok(Attempt::Busy) => continue, // not returned for Block
                        Err(e) => break Err(e),
                    }
                };
                let mut st = theirs.state.lock().unwrap_or_else(|e| e.into_inner());
                match std::mem::replace(&mut *st, State::Taken) {
                    State::Waiting(waker) => {
                        *st = State::Done(r);
                        drop(st);
                        theirs.done.notify_all();
                        if let Some(w) = waker {
                            w.wake();
                        }
                    }
                    // The caller left: `r` (the hold) drops here, releasing.
                    _ => drop(st),
                }
            })
            .map_err(|source| LockError::Io {
                name,
                path: PathBuf::new(),
                op: "start a thread to wait for",
                source,
            })?;
        Ok(Handoff { shared })
    }

    /// Blocks until the helper finished or the deadline passed (`None`).
    fn wait_until(self, deadline: Instant) -> Option<Result<Hold, LockError>> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let State::Done(_) = &*st {
                return match std::mem::replace(&mut *st, State::Taken) {
                    State::Done(r) => Some(r),
                    _ => unreachable!(),
                };
            }
            let now = Instant::now();
            if now >= deadline {
                *st = State::Abandoned;
                return None;
            }
            st = self.shared.done.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// For futures: the result if the helper finished, else remembers the
    /// waker to wake.
    pub(crate) fn poll(&self, waker: &Waker) -> Option<Result<Hold, LockError>> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *st {
            State::Waiting(w) => {
                match w {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                None
            }
            State::Done(_) => match std::mem::replace(&mut *st, State::Taken) {
                State::Done(r) => Some(r),
                _ => unreachable!(),
            },
            State::Taken | State::Abandoned => None,
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Waiting(_) = &*st {
            *st = State::Abandoned;
        }
        // A `Done` result nobody took drops with the state, releasing it.
    }
}

/// Whether `external` should touch lock files at all right now.
#[inline]
pub(crate) fn enabled() -> bool {
    config::process_locking()
}
