//! The lock-file backend: lock files in a directory, oslo-compatible.
//!
//! Each registry entry keeps a [`Pool`]: lock files opened for it and kept
//! open between acquisitions (no open+close per acquisition), closed with
//! the entry, so dynamic names never pile up descriptors. A holder takes a
//! file from the pool for as long as it holds the lock: an exclusive holder
//! (there is one at a time per process) reuses the same file every time,
//! while concurrent shared holders or semaphore holders each get their own
//! open file, so the kernel sees them as separate owners and their locks can
//! neither merge nor release each other.
//!
//! What is locked:
//! * a lock (reader/writer): the whole file, `F_WRLCK` for a writer,
//!   `F_RDLCK` for a reader (the ranges `lockf` and fasteners use);
//! * a semaphore of N permits: one byte per permit (slot i = byte i), see
//!   [`slots`].
//!
//! After every acquisition we check that the file we locked still has a
//! name: `remove_external_lock_file` unlinks the file while holding its
//! lock, and a waiter that then gets the lock on the old inode would share
//! nothing with a newcomer who creates a new file. Such a waiter reopens
//! and tries again.
//!
//! [`sys`] holds the system calls (OFD locks, classic `fcntl`, `LockFileEx`).

mod slots;
pub(crate) mod sys;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use super::{Backend, ExternalHold, Target};
use crate::config;
use crate::error::LockError;
use crate::spec::{Mode, Wait};
use sys::{LockFile, OpenError, Range};

/// Lock files in the lock's own directory, or in the configured lock path.
#[derive(Clone, Copy)]
pub(crate) enum Files<'a> {
    Explicit(&'a Path),
    Configured,
}

impl Backend for Files<'_> {
    /// Takes a file, locks it (waiting in the kernel for `Block`), then
    /// checks it is still linked, retrying with a fresh file if it was
    /// removed.
    #[inline]
    fn lock(
        &self,
        target: &Target<'_>,
        mode: Mode,
        wait: Wait,
    ) -> Result<Option<ExternalHold>, LockError> {
        let block = !wait.is_try();
        loop {
            let open = target.state.take(target.name, *self)?;
            let got = match target.kind.permits {
                None => lock_whole(target, open, mode, block)?,
                Some(n) => slots::lock_slot(target, open, n, block)?,
            };
            let Some((open, range)) = got else {
                return Ok(None);
            };
            match open.file.is_linked() {
                Ok(true) => return Ok(Some(ExternalHold::File(FileHold { open, range }))),
                // Removed while we waited: drop this file and start over.
                Ok(false) => FileHold { open, range }.close(),
                Err(e) => {
                    let err = io_error(target.name, &open, "inspect lock file", e);
                    FileHold { open, range }.close();
                    return Err(err);
                }
            }
        }
    }

    /// `fcntl` has no timed wait: a deadline is kept by the caller.
    fn waits_until_deadline(&self) -> bool {
        false
    }

    fn supports_permits(&self) -> bool {
        true
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
    fn matches(&self, files: Files<'_>) -> bool {
        match files {
            Files::Explicit(p) => self.generation.is_none() && *self.dir == *p,
            Files::Configured => self.generation == Some(config::generation()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(file_name(name))
    }
}

/// The lock files of one registry entry.
pub(crate) struct Pool {
    idle: parking_lot::Mutex<Vec<Open>>,
    /// Spreads semaphore waiters over the slots.
    turn: AtomicU32,
}

impl Pool {
    pub(crate) const fn new() -> Self {
        Pool {
            idle: parking_lot::Mutex::new(Vec::new()),
            turn: AtomicU32::new(0),
        }
    }

    /// An idle file for `files`, or a newly opened one. Files opened under
    /// another lock path are closed on the way.
    fn take(&self, name: &str, files: Files<'_>) -> Result<Open, LockError> {
        let stale = {
            let mut idle = self.idle.lock();
            match idle.iter().rposition(|o| o.matches(files)) {
                Some(i) => return Ok(idle.swap_remove(i)),
                None => std::mem::take(&mut *idle),
            }
        };
        drop(stale); // closed outside the pool's lock
        let (generation, dir) = match files {
            Files::Explicit(p) => (None, Arc::from(p)),
            Files::Configured => match config::current_lock_path() {
                (g, Some(d)) => (Some(g), d),
                (_, None) => {
                    return Err(LockError::LockPathNotSet {
                        name: name.to_owned(),
                    });
                }
            },
        };
        let file = open_creating_dir(name, &dir)?;
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
    pub(crate) fn release(self, pool: &Pool) {
        if self.open.file.unlock(self.range).is_ok() {
            pool.give_back(self.open);
        }
    }

    /// Unlocks and closes the file (after removing it).
    pub(crate) fn close(self) {
        let _ = self.open.file.unlock(self.range);
    }

    /// The lock file's path; `name` is the full lock name.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.open.path(name)
    }
}

/// The file name of the lock `name` (a full name).
fn file_name(name: &str) -> String {
    // The prefix cannot contain '/', so replacing in the full name only
    // touches the name part, as oslo does.
    name.replace('/', "_")
}

fn open_creating_dir(name: &str, dir: &Path) -> Result<LockFile, LockError> {
    let path = dir.join(file_name(name));
    let err = |e: OpenError| match e {
        OpenError::NotRegular(kind) => LockError::NotRegularFile {
            name: name.to_owned(),
            path: path.clone(),
            kind,
        },
        OpenError::Io(op, source) => LockError::Io {
            name: name.to_owned(),
            path: path.clone(),
            op,
            source,
        },
    };
    match LockFile::open(&path) {
        Err(OpenError::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {
            sys::create_dir(dir).map_err(|source| LockError::Io {
                name: name.to_owned(),
                path: dir.to_path_buf(),
                op: "create lock directory",
                source,
            })?;
            LockFile::open(&path).map_err(err)
        }
        r => r.map_err(err),
    }
}

fn io_error(name: &str, open: &Open, op: &'static str, source: std::io::Error) -> LockError {
    LockError::Io {
        name: name.to_owned(),
        path: open.path(name),
        op,
        source,
    }
}

/// Locks the whole file in `mode`. `Ok(None)`: busy (only if `!block`).
fn lock_whole(
    target: &Target<'_>,
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
            target.state.give_back(open);
            Ok(None)
        }
        Err(e) => Err(io_error(target.name, &open, "lock", e)),
    }
}
