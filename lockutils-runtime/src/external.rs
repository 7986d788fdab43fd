//! The lock-file half of an external lock.
//!
//! Each registry entry has a [`FilePool`]: lock files opened for it and
//! kept open between acquisitions (no open+close per acquisition), closed
//! with the entry, so dynamic names never pile up descriptors. A holder
//! takes a file from the pool for as long as it holds the lock: an
//! exclusive holder (there is one at a time per process) reuses the same
//! file every time, while concurrent shared holders or semaphore holders
//! each get their own open file, so the kernel sees them as separate
//! owners and their locks can neither merge nor release each other.
//!
//! What is locked:
//! * a lock (reader/writer): the whole file, `F_WRLCK` for a writer,
//!   `F_RDLCK` for a reader (the ranges `lockf` and fasteners use);
//! * a semaphore of N permits: one byte per permit (slot i = byte i).
//!   A holder tries each slot without waiting, and if all are taken waits
//!   in the kernel on one of them.
//!
//! After every acquisition we check that the file we locked still has a
//! name: `remove_external_lock_file` unlinks the file while holding its
//! lock, and a waiter that then gets the lock on the old inode would share
//! nothing with a newcomer who creates a new file. Such a waiter reopens
//! and tries again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Waker;
use std::time::Instant;

use crate::backend::{self, Backend, RemoteHold};
use crate::config;
use crate::error::LockError;
use crate::file_lock::{self, LockFile, OpenError, Range};
use crate::hold::Hold;
use crate::registry::Entry;
use crate::semaphore::Mode;

/// Where an external lock lives.
#[derive(Clone, Copy)]
pub(crate) enum Dir<'a> {
    /// Lock files in the lock's own `lock_path`.
    Explicit(&'a Path),
    /// The lock server at this URL (the lock's own `backend`).
    Backend(&'a str),
    /// The process configuration: the configured lock server if any, else
    /// lock files in the configured lock path.
    Configured,
}

/// A [`Dir`] that owns its parts, to send to a helper thread.
enum OwnedDir {
    Explicit(PathBuf),
    Backend(String),
    Configured,
}

impl OwnedDir {
    fn new(dir: Dir<'_>) -> OwnedDir {
        match dir {
            Dir::Explicit(p) => OwnedDir::Explicit(p.to_path_buf()),
            Dir::Backend(u) => OwnedDir::Backend(u.to_owned()),
            Dir::Configured => OwnedDir::Configured,
        }
    }

    fn borrow(&self) -> Dir<'_> {
        match self {
            OwnedDir::Explicit(p) => Dir::Explicit(p),
            OwnedDir::Backend(u) => Dir::Backend(u),
            OwnedDir::Configured => Dir::Configured,
        }
    }
}

/// The lock server for `dir`, or `None` for lock files.
fn server(dir: Dir<'_>) -> Result<Option<Arc<dyn Backend>>, LockError> {
    match dir {
        Dir::Explicit(_) => Ok(None),
        Dir::Backend(url) => backend::get(url).map(Some),
        Dir::Configured => config::backend(),
    }
}

/// What an external lock holds: a lock file, or a lock on a server.
pub(crate) enum ExternalHold {
    File(FileHold),
    Remote(Box<dyn RemoteHold>),
}

impl ExternalHold {
    pub(crate) fn release(self, entry: &Entry) {
        match self {
            ExternalHold::File(f) => f.release(entry),
            ExternalHold::Remote(r) => r.release(),
        }
    }

    /// Releases and closes (after the file was removed).
    pub(crate) fn close(self) {
        match self {
            ExternalHold::File(f) => f.close(),
            ExternalHold::Remote(r) => r.release(),
        }
    }

    pub(crate) fn describe(&self, entry: &Entry) -> PathBuf {
        match self {
            ExternalHold::File(f) => f.path(entry),
            ExternalHold::Remote(r) => PathBuf::from(r.describe()),
        }
    }

    pub(crate) fn remote(&self) -> Option<&dyn RemoteHold> {
        match self {
            ExternalHold::File(_) => None,
            ExternalHold::Remote(r) => Some(&**r),
        }
    }
}

/// An open lock file and the directory it was opened in.
pub(crate) struct Open {
    file: LockFile,
    dir: Arc<Path>,
    /// The config generation `dir` was read under; `None` for an explicit dir.
    generation: Option<u64>,
}

impl Open {
    fn matches(&self, dir: Dir<'_>) -> bool {
        match dir {
            Dir::Explicit(p) => self.generation.is_none() && *self.dir == *p,
            Dir::Configured => self.generation == Some(config::generation()),
            Dir::Backend(_) => false,
        }
    }
}

/// The lock files of one registry entry.
pub(crate) struct FilePool {
    idle: parking_lot::Mutex<Vec<Open>>,
    /// Spreads semaphore waiters over the slots.
    turn: AtomicU32,
}

impl FilePool {
    pub(crate) const fn new() -> Self {
        FilePool {
            idle: parking_lot::Mutex::new(Vec::new()),
            turn: AtomicU32::new(0),
        }
    }

    /// An idle file for `dir`, or a newly opened one. Files opened under
    /// another lock path are closed on the way.
    fn take(&self, entry: &Entry, dir: Dir<'_>) -> Result<Open, LockError> {
        let stale = {
            let mut idle = self.idle.lock();
            match idle.iter().rposition(|o| o.matches(dir)) {
                Some(i) => return Ok(idle.swap_remove(i)),
                None => std::mem::take(&mut *idle),
            }
        };
        drop(stale); // closed outside the pool's lock
        let (generation, dir) = match dir {
            Dir::Explicit(p) => (None, Arc::from(p)),
            Dir::Backend(_) => unreachable!("lock servers use no files"),
            Dir::Configured => match config::current_lock_path() {
                (g, Some(d)) => (Some(g), d),
                (_, None) => {
                    return Err(LockError::LockPathNotSet {
                        name: entry.name().to_owned(),
                    });
                }
            },
        };
        let file = open_creating_dir(entry, &dir)?;
        Ok(Open {
            file,
            dir,
            generation,
        })
    }

    fn give_back(&self, open: Open) {
        self.idle.lock().push(open);
    }
}

/// The lock-file part of a held lock.
pub(crate) struct FileHold {
    open: Open,
    range: Range,
}

impl FileHold {
    /// Unlocks and returns the file to the entry's pool. If unlocking fails
    /// the file is closed instead, which releases the lock anyway.
    pub(crate) fn release(self, entry: &Entry) {
        if self.open.file.unlock(self.range).is_ok() {
            entry.files.give_back(self.open);
        }
    }

    /// Unlocks and closes the file (after removing it).
    pub(crate) fn close(self) {
        let _ = self.open.file.unlock(self.range);
    }

    pub(crate) fn path(&self, entry: &Entry) -> PathBuf {
        self.open.dir.join(file_name(entry))
    }
}

fn file_name(entry: &Entry) -> String {
    // The prefix cannot contain '/', so replacing in the full name only
    // touches the name part, as oslo does.
    entry.name().replace('/', "_")
}

fn open_creating_dir(entry: &Entry, dir: &Path) -> Result<LockFile, LockError> {
    let path = dir.join(file_name(entry));
    let err = |e: OpenError| match e {
        OpenError::NotRegular(kind) => LockError::NotRegularFile {
            name: entry.name().to_owned(),
            path: path.clone(),
            kind,
        },
        OpenError::Io(op, source) => LockError::Io {
            name: entry.name().to_owned(),
            path: path.clone(),
            op,
            source,
        },
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

/// How long to wait for the lock file.
#[derive(Clone, Copy, PartialEq, Eq)]
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
/// end at the deadline. When it is busy (for `Try`) or the deadline passes,
/// the hold is dropped (releasing the in-process lock) and `busy(name)` is
/// the error.
pub(crate) fn lock(
    mut hold: Hold,
    dir: Dir<'_>,
    wait: FileWait,
    busy: impl FnOnce(&str) -> LockError,
) -> Result<Hold, LockError> {
    let deadline = match wait {
        FileWait::Try | FileWait::Block => {
            return match lock_step(&mut hold, dir, wait)? {
                Attempt::Locked => Ok(hold),
                Attempt::Busy => Err(busy(hold.entry().name())),
            };
        }
        FileWait::Until(deadline) => deadline,
    };
    // A lock server waits on the server, up to the deadline: no helper
    // thread is left waiting there (with the in-process lock) after a
    // timeout.
    if server(dir)?.is_some() {
        return match lock_step(&mut hold, dir, wait)? {
            Attempt::Locked => Ok(hold),
            Attempt::Busy => Err(busy(hold.entry().name())),
        };
    }
    if let Attempt::Locked = lock_step(&mut hold, dir, FileWait::Try)? {
        return Ok(hold);
    }
    let err = busy(hold.entry().name());
    match Handoff::start(hold, dir, Some(deadline))?.wait_until(deadline) {
        Some(Ok(Some(hold))) => Ok(hold),
        Some(Err(e)) => Err(e),
        Some(Ok(None)) | None => Err(err),
    }
}

/// One attempt on the lock server or lock file for `dir`: `Try` and
/// `Block`, and for lock servers also `Until`.
pub(crate) fn lock_step(
    hold: &mut Hold,
    dir: Dir<'_>,
    wait: FileWait,
) -> Result<Attempt, LockError> {
    match server(dir)? {
        None => file_step(hold, dir, wait),
        Some(server) => {
            let entry = hold.entry();
            if entry.kind().permits.is_some() {
                return Err(LockError::InvalidOptions {
                    name: entry.name().to_owned(),
                    reason: "semaphores (permits) work with lock files only, not lock servers",
                });
            }
            match server.lock(entry.name(), hold.mode(), wait)? {
                Some(r) => {
                    hold.set_external(ExternalHold::Remote(r));
                    Ok(Attempt::Locked)
                }
                None => Ok(Attempt::Busy),
            }
        }
    }
}

/// Takes a file, locks it (waiting in the kernel for `Block`), then checks
/// it is still linked, retrying with a fresh file if it was removed.
fn file_step(hold: &mut Hold, dir: Dir<'_>, wait: FileWait) -> Result<Attempt, LockError> {
    let block = wait == FileWait::Block;
    loop {
        let entry = hold.entry();
        let open = entry.files.take(entry, dir)?;
        let got = match entry.kind().permits {
            None => lock_whole(entry, open, hold.mode(), block)?,
            Some(n) => lock_slot(entry, open, n, block)?,
        };
        let Some((open, range)) = got else {
            return Ok(Attempt::Busy);
        };
        match open.file.is_linked() {
            Ok(true) => {
                hold.set_external(ExternalHold::File(FileHold { open, range }));
                return Ok(Attempt::Locked);
            }
            // Removed while we waited: drop this file and start over.
            Ok(false) => FileHold { open, range }.close(),
            Err(e) => {
                let err = io_error(entry, &open, "inspect lock file", e);
                FileHold { open, range }.close();
                return Err(err);
            }
        }
    }
}

fn io_error(entry: &Entry, open: &Open, op: &'static str, source: std::io::Error) -> LockError {
    LockError::Io {
        name: entry.name().to_owned(),
        path: open.dir.join(file_name(entry)),
        op,
        source,
    }
}

/// Locks the whole file in `mode`. `Ok(None)`: busy (only if `!block`).
fn lock_whole(
    entry: &Entry,
    open: Open,
    mode: Mode,
    block: bool,
) -> Result<Option<(Open, Range)>, LockError> {
    let r = if block {
        open.file.lock(mode, Range::Whole).map(|()| true)
    } else {
        open.file.try_lock(mode, Range::Whole)
    };
    match r {
        Ok(true) => Ok(Some((open, Range::Whole))),
        Ok(false) => {
            entry.files.give_back(open);
            Ok(None)
        }
        Err(e) => Err(io_error(entry, &open, "lock", e)),
    }
}

/// Tries every slot once without waiting.
fn try_slots(open: &Open, n: u32) -> std::io::Result<Option<Range>> {
    for i in 0..n {
        if open.file.try_lock(Mode::Exclusive, Range::Byte(i.into()))? {
            return Ok(Some(Range::Byte(i.into())));
        }
    }
    Ok(None)
}

/// Locks one of the `n` slot bytes. `Ok(None)`: all busy (only if
/// `!block`). The returned file is the one holding the slot.
fn lock_slot(
    entry: &Entry,
    open: Open,
    n: u32,
    block: bool,
) -> Result<Option<(Open, Range)>, LockError> {
    match try_slots(&open, n) {
        Ok(Some(r)) => return Ok(Some((open, r))),
        Ok(None) => {}
        Err(e) => return Err(io_error(entry, &open, "lock", e)),
    }
    // All busy. Anything locked at or past slot n is someone using this
    // file differently: more permits, or the whole file as a plain lock.
    match open.file.others_hold_from(u64::from(n)) {
        Ok(false) => {}
        Ok(true) => {
            return Err(LockError::KindMismatch {
                name: entry.name().to_owned(),
                this: entry.kind().to_string(),
                other: "another kind or number of permits by another process".to_owned(),
            });
        }
        Err(e) => return Err(io_error(entry, &open, "inspect locks on", e)),
    }
    if !block {
        entry.files.give_back(open);
        return Ok(None);
    }
    wait_any_slot(entry, open, n).map(Some)
}

/// Waits until any of the `n` slots is free and locks it.
///
/// `fcntl` can only wait for one range, so the kernel wait is on one slot
/// (spread by process and turn), on a helper thread with its own open file,
/// while this thread re-tries every slot with a back-off from 1 to 16 ms.
/// Whichever gets a slot first wins; the helper's slot, if it comes later,
/// is released at once. The watched slot is handed over by the kernel with
/// no delay; another slot that frees is found within the back-off.
fn wait_any_slot(entry: &Entry, open: Open, n: u32) -> Result<(Open, Range), LockError> {
    let turn = entry.files.turn.fetch_add(1, Ordering::Relaxed);
    let slot = Range::Byte(u64::from(std::process::id().wrapping_add(turn) % n));
    let path = open.dir.join(file_name(entry));
    let watcher = match LockFile::open(&path) {
        Ok(file) => Open {
            file,
            dir: open.dir.clone(),
            generation: open.generation,
        },
        Err(_) => return wait_one_slot(entry, open, slot),
    };
    let shared = Arc::new((Mutex::new(Watch::Waiting), Condvar::new()));
    let theirs = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("lockutils-slot".into())
        .spawn(move || {
            let r = watcher.file.lock(Mode::Exclusive, slot);
            let mut st = theirs.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Watch::Waiting = *st {
                *st = match r {
                    Ok(()) => Watch::Got(watcher),
                    Err(e) => Watch::Failed(e),
                };
                theirs.1.notify_all();
            }
            // Abandoned: `watcher` closes here, releasing its slot.
        });
    if spawned.is_err() {
        return wait_one_slot(entry, open, slot);
    }
    let (state, cv) = &*shared;
    let mut delay = std::time::Duration::from_millis(1);
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match std::mem::replace(&mut *st, Watch::Abandoned) {
            Watch::Got(w) => {
                entry.files.give_back(open);
                return Ok((w, slot));
            }
            Watch::Failed(e) => return Err(io_error(entry, &open, "lock", e)),
            _ => *st = Watch::Waiting,
        }
        match try_slots(&open, n) {
            Ok(Some(r)) => {
                // Tell the helper to let go; if it just got its slot, the
                // state drops with the last `Arc`, closing its file.
                *st = Watch::Abandoned;
                return Ok((open, r));
            }
            Ok(None) => {}
            Err(e) => {
                *st = Watch::Abandoned;
                return Err(io_error(entry, &open, "lock", e));
            }
        }
        st = cv
            .wait_timeout(st, delay)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        delay = (delay * 2).min(std::time::Duration::from_millis(16));
    }
}

/// The helper thread's side of [`wait_any_slot`].
enum Watch {
    Waiting,
    Got(Open),
    Failed(std::io::Error),
    Abandoned,
}

/// Fallback when no helper thread can be had: wait on one slot only.
fn wait_one_slot(entry: &Entry, open: Open, slot: Range) -> Result<(Open, Range), LockError> {
    match open.file.lock(Mode::Exclusive, slot) {
        Ok(()) => Ok((open, slot)),
        Err(e) => Err(io_error(entry, &open, "lock", e)),
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

/// What the helper found: the hold, `None` if a lock server's deadline
/// passed, or an error.
type Outcome = Result<Option<Hold>, LockError>;

enum State {
    Waiting(Option<Waker>),
    Done(Outcome),
    Taken,
    Abandoned,
}

impl Handoff {
    /// Starts the helper thread; it takes the lock file in the kernel (no
    /// deadline there: the caller abandons it), or waits on the lock server
    /// until `deadline`, so that nothing stays queued on the server.
    pub(crate) fn start(
        hold: Hold,
        dir: Dir<'_>,
        deadline: Option<Instant>,
    ) -> Result<Handoff, LockError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Waiting(None)),
            done: Condvar::new(),
        });
        let theirs = shared.clone();
        let dir_owned = OwnedDir::new(dir);
        let name = hold.entry().name().to_owned();
        std::thread::Builder::new()
            .name("lockutils-wait".into())
            .spawn(move || {
                let mut hold = hold;
                let dir = dir_owned.borrow();
                let wait = match (server(dir), deadline) {
                    (Ok(Some(_)), Some(d)) => FileWait::Until(d),
                    _ => FileWait::Block,
                };
                let r: Outcome = match lock_step(&mut hold, dir, wait) {
                    Ok(Attempt::Locked) => Ok(Some(hold)),
                    Ok(Attempt::Busy) => Ok(None),
                    Err(e) => Err(e),
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
    fn wait_until(self, deadline: Instant) -> Option<Outcome> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let State::Done(_) = &*st {
                return take_done(&mut st);
            }
            let now = Instant::now();
            if now >= deadline {
                *st = State::Abandoned;
                return None;
            }
            st = self
                .shared
                .done
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// For futures: the result if the helper finished, else remembers the
    /// waker to wake.
    pub(crate) fn poll(&self, waker: &Waker) -> Option<Outcome> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *st {
            State::Waiting(w) => {
                match w {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                None
            }
            State::Done(_) => take_done(&mut st),
            State::Taken | State::Abandoned => None,
        }
    }
}

fn take_done(st: &mut State) -> Option<Outcome> {
    match std::mem::replace(st, State::Taken) {
        State::Done(r) => Some(r),
        other => {
            *st = other;
            None
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
