//! The lock files one registry entry keeps open between acquisitions.
//!
//! Invariants:
//! * a pooled [`Open`] holds no lock;
//! * the writer's slot is touched only by the holder of the entry's
//!   in-process lock in the writer's mode (one thread at a time, ordered by
//!   that lock's release and acquire), so it needs no mutex;
//! * an [`Open`] is used only for the lock path it was opened under, and
//!   only in the process that opened it (never one inherited through
//!   `fork`, whose open file description, and so its OFD locks, is the
//!   parent's).
//!
//! Files are opened once and kept (no open + close per acquisition) and
//! closed with the entry, so names nobody uses any more hold no descriptor.
//! The exclusive holder (one at a time per process) reuses the same file
//! every time; concurrent shared or semaphore holders each take their own,
//! so that the kernel sees separate owners whose locks neither merge nor
//! release each other.

use std::cell::UnsafeCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::lockfile::LockFile;
use super::sys::{self, OpenError};
use crate::config;
use crate::error::LockError;
use crate::fork::Born;

/// Lock files in the lock's own directory, or in the configured lock path.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Files<'a> {
    Explicit(&'a Path),
    Configured,
}

/// An open lock file and the directory it was opened in.
#[derive(Debug)]
pub(crate) struct Open {
    pub(crate) file: LockFile,
    dir: Arc<Path>,
    /// The config generation `dir` was read under; [`EXPLICIT`] for an
    /// explicit dir (a plain `u64`, not an `Option`, keeps a held lock
    /// file, and so every guard, small).
    generation: u64,
    /// The process it was opened in.
    born: Born,
}

/// The generation of an [`Open`] whose directory the lock named itself
/// (configuration generations count from 0 and never get this far).
const EXPLICIT: u64 = u64::MAX;

impl Open {
    /// Opens the lock file of `name` (a full name) in `files`.
    pub(crate) fn new(name: &str, files: Files<'_>) -> Result<Open, LockError> {
        let (generation, dir) = match files {
            Files::Explicit(p) => (EXPLICIT, Arc::from(p)),
            Files::Configured => match config::current_lock_path() {
                (g, Some(d)) => (g, d),
                (_, None) => {
                    return Err(LockError::LockPathNotSet {
                        name: name.to_owned(),
                    });
                }
            },
        };
        let born = Born::now();
        let file = open_creating_dir(name, &dir)?;
        Ok(Open {
            file,
            dir,
            generation,
            born,
        })
    }

    /// Whether it can be used for `files` now: opened under that lock path,
    /// and in this process (not inherited through `fork`).
    #[inline]
    pub(crate) fn matches(&self, files: Files<'_>) -> bool {
        self.born.here()
            && match files {
                // Equal bytes first: `Path`'s own equality walks components.
                Files::Explicit(p) => {
                    self.generation == EXPLICIT
                        && (self.dir.as_os_str() == p.as_os_str() || *self.dir == *p)
                }
                Files::Configured => self.generation == config::generation(),
            }
    }

    /// Whether it was opened in this process.
    #[inline]
    pub(crate) fn is_here(&self) -> bool {
        self.born.here()
    }

    /// Another open file of the same lock file, for a second owner.
    pub(crate) fn reopen(&self, name: &str) -> Result<Open, LockError> {
        let file = open_creating_dir(name, &self.dir)?;
        Ok(Open {
            file,
            dir: self.dir.clone(),
            generation: self.generation,
            born: Born::now(),
        })
    }

    /// The lock file's path; `name` is the full lock name.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(file_name(name))
    }

    /// An I/O error on this file, naming the lock and the path.
    pub(crate) fn error(&self, name: &str, op: &'static str, source: std::io::Error) -> LockError {
        LockError::Io {
            name: name.to_owned(),
            path: self.path(name),
            op,
            source,
        }
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

/// The open lock files of one registry entry.
pub(crate) struct FilePool {
    /// The file the lock's writer (its exclusive holder) uses, kept apart
    /// so that the uncontended path takes and returns it without a mutex.
    writers: WriterSlot,
    idle: parking_lot::Mutex<Vec<Open>>,
}

/// An open file that only the writer of the pool's lock touches (see the
/// module's invariants).
struct WriterSlot(UnsafeCell<Option<Open>>);

// SAFETY: the cell is only reached through `FilePool::take_as_writer` and
// `FilePool::give_back_as_writer`, whose callers hold the entry's
// in-process lock exclusively; that lock gives one thread at a time
// access, with release/acquire ordering between them. `Open` is `Send`.
unsafe impl Sync for WriterSlot {}

impl FilePool {
    pub(crate) fn new() -> FilePool {
        FilePool {
            writers: WriterSlot(UnsafeCell::new(None)),
            idle: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// An idle file for `files`, or a newly opened one. Files opened under
    /// another lock path (or inherited through fork) are closed on the way.
    pub(crate) fn take(&self, name: &str, files: Files<'_>) -> Result<Open, LockError> {
        let stale = {
            let mut idle = self.idle.lock();
            match idle.iter().rposition(|o| o.matches(files)) {
                Some(i) => return Ok(idle.swap_remove(i)),
                None => std::mem::take(&mut *idle),
            }
        };
        drop(stale); // closed outside the pool's lock
        Open::new(name, files)
    }

    /// Returns a file that holds no lock.
    pub(crate) fn give_back(&self, open: Open) {
        self.idle.lock().push(open);
    }

    /// [`FilePool::take`] for the writer: the writer's file if it can be
    /// used for `files`, else one from the shared pool.
    ///
    /// # Safety
    /// The caller holds the entry's in-process lock in the writer's mode.
    #[inline]
    pub(crate) unsafe fn take_as_writer(
        &self,
        name: &str,
        files: Files<'_>,
    ) -> Result<Open, LockError> {
        // SAFETY: only the writer reaches the cell (the caller's promise).
        if let Some(open) = unsafe { (*self.writers.0.get()).take() } {
            if open.matches(files) {
                return Ok(open);
            }
            drop(open); // closed before another is opened
        }
        self.take(name, files)
    }

    /// [`FilePool::give_back`] for the writer: into the writer's slot if
    /// it is free, else to the shared pool.
    ///
    /// # Safety
    /// As for [`FilePool::take_as_writer`].
    #[inline]
    pub(crate) unsafe fn give_back_as_writer(&self, open: Open) {
        // SAFETY: only the writer reaches the cell (the caller's promise).
        let mine = unsafe { &mut *self.writers.0.get() };
        match mine {
            None => *mine = Some(open),
            Some(_) => self.give_back(open),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's slot: its file comes back to it and is taken again,
    /// shared holders' files stay in the shared pool, a second file the
    /// writer returns goes there too, and a writer's file opened under
    /// another directory is not reused.
    #[cfg(unix)]
    #[test]
    fn the_writer_reuses_its_own_file_and_nobody_else_takes_it() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (in_a, in_b) = (Files::Explicit(a.path()), Files::Explicit(b.path()));
        let pool = FilePool::new();
        let dir_of = |open: &Open| open.dir.to_path_buf();
        // A descriptor number names one open file while it stays open.
        let fd = |open: &Open| std::os::fd::AsRawFd::as_raw_fd(open.file.file());
        // SAFETY: no other thread sees `pool`; this test is its only writer.
        unsafe {
            let first = pool.take_as_writer("l", in_a).unwrap();
            let ino = fd(&first);
            pool.give_back_as_writer(first);
            assert!(
                pool.idle.lock().is_empty(),
                "the writer's file went to the shared pool"
            );
            let reader = pool.take("l", in_a).unwrap();
            assert_eq!(pool.idle.lock().len(), 0);
            let again = pool.take_as_writer("l", in_a).unwrap();
            assert_eq!(fd(&again), ino, "the writer got another file");
            pool.give_back(reader);
            let second = pool.take_as_writer("l", in_a).unwrap(); // from the shared pool
            pool.give_back_as_writer(again);
            pool.give_back_as_writer(second);
            assert_eq!(pool.idle.lock().len(), 1, "a second file stays shared");
            let elsewhere = pool.take_as_writer("l", in_b).unwrap();
            assert_eq!(dir_of(&elsewhere), b.path());
            assert!(
                pool.idle.lock().is_empty(),
                "a file from another dir was kept"
            );
            assert!((*pool.writers.0.get()).is_none());
            pool.give_back_as_writer(elsewhere);
        }
    }
}
