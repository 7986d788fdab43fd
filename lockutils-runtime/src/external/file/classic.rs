//! Classic (per-process) `fcntl` record locks, made safe for a process
//! with many holders.
//!
//! Where open-file-description locks do not exist (FreeBSD, macOS) or are
//! refused (`EINVAL` on old kernels and some FUSE file systems), the only
//! `fcntl` locks belong to the *process*. Used naively they break three
//! ways: two holders of one process both get "the" lock (a process never
//! conflicts with itself), one holder's unlock drops the other's, and
//! closing *any* descriptor of the file drops every lock the process has on
//! it. So in classic mode:
//!
//! * the process keeps **one descriptor per file** (inode), shared by every
//!   holder through an `Arc` and closed only when the last one goes, so no
//!   `close` ever drops a lock someone still holds;
//! * **arbitration is in-process**: readers are counted (the first takes
//!   `F_RDLCK`, the last unlocks), a writer is alone (the in-process lock
//!   sees to that), and semaphore slots held or being waited for by this
//!   process are tracked, so two holders never share a slot and nobody
//!   waits in the kernel for a slot its own process holds.
//!
//! A file inherited through `fork` is never closed by the child (that
//! would drop the child's own locks on it); it is left open instead.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::sys::{How, Range};
use crate::fork;
use crate::spec::Mode;

/// The one descriptor this process has for a lock file, and what the
/// process holds through it.
#[derive(Debug)]
pub(crate) struct Inode {
    file: ManuallyDrop<File>,
    key: (u64, u64),
    born: fork::Born,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// Readers of this process holding the whole file (`F_RDLCK`).
    readers: usize,
    /// A writer of this process holds the whole file (`F_WRLCK`).
    writer: bool,
    /// Bumped whenever the readers' kernel lock is dropped: a reader that
    /// waited unlocked meanwhile may have seen its lock merged into one
    /// that was then dropped, and must try again.
    epoch: u64,
    /// Semaphore slots this process holds, and slots a thread of it waits
    /// for in the kernel (nobody else of this process may use those).
    slots: Vec<u32>,
    watched: Vec<u32>,
}

/// Files open in classic mode, by (device, inode), in this process (the
/// fork generation says which process that is).
static TABLE: Mutex<Table> = Mutex::new((0, None));

/// The fork generation the map belongs to, and the map.
type Table = (u32, Option<HashMap<(u64, u64), Weak<Inode>>>);

fn table() -> MutexGuard<'static, Table> {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let now = fork::generation();
    if t.0 != now {
        // Inherited through fork: the parent's entries are not ours.
        *t = (now, None);
    }
    t
}

/// The classic-mode file at `path`, if this process has it open already.
pub(crate) fn find(path: &Path) -> Option<Arc<Inode>> {
    let key = key_of(&std::fs::symlink_metadata(path).ok()?);
    table().1.as_ref()?.get(&key)?.upgrade()
}

/// Keeps `file` (just opened, holding no lock) as the process's descriptor
/// for its inode, or returns the one already kept (then `file` is left
/// open rather than closed: closing it would drop the process's locks).
pub(crate) fn adopt(file: File) -> io::Result<Arc<Inode>> {
    let key = key_of(&file.metadata()?);
    let mut t = table();
    let map = t.1.get_or_insert_with(HashMap::new);
    if let Some(kept) = map.get(&key).and_then(Weak::upgrade) {
        let _ = std::os::fd::IntoRawFd::into_raw_fd(file);
        return Ok(kept);
    }
    map.retain(|_, w| w.strong_count() > 0);
    let inode = Arc::new(Inode {
        file: ManuallyDrop::new(file),
        key,
        born: fork::Born::now(),
        held: Mutex::default(),
    });
    map.insert(key, Arc::downgrade(&inode));
    Ok(inode)
}

fn key_of(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

impl Inode {
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `range` in `mode` for one holder of this process. `Ok(false)`:
    /// busy (for `How::Try`). `kernel(mode, range, how)` is the raw call.
    pub(crate) fn lock(
        &self,
        mode: Mode,
        range: Range,
        how: How,
        kernel: impl Fn(Mode, Range, How) -> io::Result<bool>,
    ) -> io::Result<bool> {
        let kernel = |m, r, h| retrying_deadlock(|| kernel(m, r, h));
        match (mode, range) {
            (Mode::Shared, Range::Whole) => self.lock_reader(how, kernel),
            (Mode::Exclusive, Range::Byte(slot)) => self.lock_slot(slot, how, kernel),
            (Mode::Exclusive, Range::Whole) => {
                // The in-process lock admits one writer and no reader.
                let got = kernel(mode, range, how)?;
                if got {
                    self.held().writer = true;
                }
                Ok(got)
            }
            (Mode::Shared, Range::Byte(_)) => kernel(mode, range, how),
        }
    }

    fn lock_reader(
        &self,
        how: How,
        kernel: impl Fn(Mode, Range, How) -> io::Result<bool>,
    ) -> io::Result<bool> {
        loop {
            let mut held = self.held();
            if held.readers > 0 {
                held.readers += 1;
                return Ok(true);
            }
            if how == How::Try {
                let got = kernel(Mode::Shared, Range::Whole, How::Try)?;
                held.readers += usize::from(got);
                return Ok(got);
            }
            // Wait unlocked, so other readers and unlocks are not held up.
            let epoch = held.epoch;
            drop(held);
            kernel(Mode::Shared, Range::Whole, how)?;
            let mut held = self.held();
            if held.readers > 0 || held.epoch == epoch {
                held.readers += 1;
                return Ok(true);
            }
            // The last reader unlocked after the kernel granted us (our
            // lock merged into theirs): it is gone; wait again.
        }
    }

    fn lock_slot(
        &self,
        slot: u32,
        how: How,
        kernel: impl Fn(Mode, Range, How) -> io::Result<bool>,
    ) -> io::Result<bool> {
        let mut held = self.held();
        while held.slots.contains(&slot) || held.watched.contains(&slot) {
            if how == How::Try {
                return Ok(false);
            }
            // Another holder of this process took it since the slot was
            // chosen: a kernel wait would be granted at once (the process
            // owns the lock). Wait for it here, briefly.
            drop(held);
            std::thread::sleep(std::time::Duration::from_millis(1));
            held = self.held();
        }
        if how == How::Try {
            let got = kernel(Mode::Exclusive, Range::Byte(slot), How::Try)?;
            if got {
                held.slots.push(slot);
            }
            return Ok(got);
        }
        held.watched.push(slot);
        drop(held);
        let r = kernel(Mode::Exclusive, Range::Byte(slot), how);
        let mut held = self.held();
        held.watched.retain(|&s| s != slot);
        if r.is_ok() {
            held.slots.push(slot);
        }
        r
    }

    /// Releases one holder's `range`; the kernel lock goes when no holder
    /// of this process needs it any more.
    pub(crate) fn unlock(
        &self,
        range: Range,
        kernel: impl Fn(Range) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut held = self.held();
        match range {
            Range::Whole if held.writer => {
                held.writer = false;
                kernel(range)
            }
            Range::Whole => {
                held.readers = held.readers.saturating_sub(1);
                if held.readers > 0 {
                    return Ok(());
                }
                held.epoch += 1;
                kernel(range)
            }
            Range::Byte(slot) => {
                held.slots.retain(|&s| s != slot);
                kernel(range)
            }
        }
    }
}

/// Runs a kernel lock call, trying again shortly on `EDEADLK`. Classic
/// locks belong to the process, so the kernel's deadlock detection sees a
/// cycle where there is none: two processes each holding a slot and
/// waiting for the other's (either may get another slot), or two
/// processes whose different threads hold one lock each and wait for the
/// other's (each thread will release). A real cycle of lockutils locks
/// across processes is not this call's to report; the lock-order check
/// reports cycles in a process.
fn retrying_deadlock(call: impl Fn() -> io::Result<bool>) -> io::Result<bool> {
    loop {
        match call() {
            Err(e) if e.raw_os_error() == Some(libc::EDEADLK) => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        if let Ok(mut t) = TABLE.lock()
            && let Some(map) = t.1.as_mut()
            && map.get(&self.key).is_some_and(|w| w.strong_count() == 0)
        {
            map.remove(&self.key);
        }
        if self.born.here() {
            // SAFETY: dropped once, here; nobody holds a lock through it
            // (every holder keeps the `Arc`).
            unsafe { ManuallyDrop::drop(&mut self.file) };
        }
        // Inherited through fork: left open (closing would drop this
        // process's own locks on the file).
    }
}
