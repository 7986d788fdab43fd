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
//! With `flock` (Linux), the file is also locked with `flock(2)`, after
//! the OFD lock and through the same open file, and released before it.
//! flock(2) locks belong to the open file description just as OFD locks do,
//! and this process's holders of one lock already exclude each other in
//! process before either is asked for, so the same open file serves both:
//! no second one is needed. The one fixed order (OFD, then flock) means two
//! lockutils processes never hold one each while waiting for the other;
//! `flock(1)` and py-filelock users take flock only, so they never wait for
//! an OFD lock while holding the flock. A `flock` that is busy for a
//! non-blocking or timed attempt gives the OFD and in-process locks back
//! at once. The caller takes the flock once the OFD lock is held (see
//! `acquire.rs`): flock(2) has no timed wait, so a timed or async wait for
//! it polls (0.5 ms, doubling to 20 ms), on the caller's thread or task, so
//! that giving up releases everything before it returns. On NFS, Linux emulates
//! flock(2) with byte-range locks, which would conflict with our own OFD
//! lock: do not use `flock` there.
//!
//! Lock cohorting: an exclusive holder that releases while another thread
//! or task of this process waits for the same lock *parks* its locked file
//! in the pool ([`FileHold::park`]) instead of unlocking it. Whoever takes
//! the in-process lock next for a lock file (the waiter, or a newcomer
//! barging in first, as the barging lock allows) takes the parked file
//! ([`Pool::take_parked`]) and holds the file's lock without a system
//! call; the rules that keep a parked file from being stranded are in
//! `local::cohort`. A batch of handoffs is bounded
//! ([`config::cohort_limit`]: 64 handoffs or 1 ms by default); then the
//! file is unlocked for real, and this process lets another have its turn
//! ([`FileHold::end_batch`]): for a while, no holder of this process locks
//! the file again unless someone else has taken it meanwhile, found with
//! `F_OFD_GETLK`. Unlocking alone would not do: the kernel wakes a blocked
//! waiter but hands it nothing, and a thread of this process that is
//! already running relocks long before that process is scheduled (under
//! load, a waiting process starved for minutes). The while is
//! [`TURN_FOR_A_WAITER`] when `/proc/locks` shows a process blocked on the
//! file (it takes the lock within its wake-up time, and our wait ends
//! there), else an eighth of the batch's length ([`turn_for_pollers`]), so
//! that processes that poll with non-blocking tries (fasteners, hence
//! oslo.concurrency, and py-filelock) find the file free about a ninth of
//! the time while this process keeps it busy.
//!
//! [`sys`] holds the system calls (OFD locks, classic `fcntl`, `LockFileEx`,
//! `flock`).

#[cfg(unix)]
mod classic;
mod slots;
pub(crate) mod sys;

use std::cell::UnsafeCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::pending::{Outcome, Pending, Stop};
use super::{Backend, ExternalHold, Target};
use crate::config;
use crate::error::LockError;
use crate::local::cohort::Cohort;
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
        // `Backend::lock` runs for a holder of the in-process lock in
        // `mode`: in exclusive mode on a lock (not a semaphore), the one
        // writer of this process.
        let writer = mode == Mode::Exclusive && target.kind.permits.is_none();
        loop {
            let open = if writer {
                // SAFETY: this thread is the lock's one writer (above).
                unsafe { target.state.take_as_writer(target.name, *self)? }
            } else {
                target.state.take(target.name, *self)?
            };
            let got = match target.kind.permits {
                // SAFETY: `writer` only for the lock's writer (above).
                None => unsafe { lock_whole(target, open, mode, block, writer)? },
                Some(n) => slots::lock_slot(target, open, n, block)?,
            };
            let Some((open, range)) = got else {
                return Ok(None);
            };
            let hold = FileHold::new(open, range);
            match hold.open.file.is_linked() {
                Ok(true) => return Ok(Some(ExternalHold::File(hold))),
                // Removed while we waited: drop this file and start over.
                Ok(false) => hold.close(),
                Err(e) => {
                    let err = io_error(target.name, &hold.open, "inspect lock file", e);
                    hold.close();
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

    fn try_is_cheap(&self) -> bool {
        true
    }
}

impl Files<'_> {
    /// Starts waiting for `target` on a helper thread that gives up when
    /// the returned [`Pending`] is dropped (see `external::pending`). The
    /// helper uses its own open file from the pool, and the caller keeps
    /// its in-process lock.
    pub(crate) fn start_wait(&self, target: &Target<'_>, mode: Mode) -> Result<Pending, LockError> {
        let open = target.state.take(target.name, *self)?;
        let name = target.name.to_owned();
        let permits = target.kind.permits;
        let turn = target.state.turn.fetch_add(1, Ordering::Relaxed);
        let others_turn = target.state.others_turn.load(Ordering::Relaxed);
        Pending::spawn(target.name, true, move |stop| {
            if permits.is_none() {
                wait_turn(&open.file, others_turn, Some(stop));
            }
            wait_for(open, &name, mode, permits, turn, stop)
        })
    }
}

/// The helper's body for [`Files::start_wait`]: locks, checks the file is
/// still linked (reopening it if it was removed), until `stop` is asked.
fn wait_for(
    mut open: Open,
    name: &str,
    mode: Mode,
    permits: Option<u32>,
    turn: u32,
    stop: &Stop,
) -> Outcome {
    loop {
        let got = match permits {
            None => match lock_stoppable(&open.file, mode, Range::Whole, stop) {
                Ok(true) => Some((open, Range::Whole)),
                Ok(false) => None,
                Err(e) => return Err(io_error(name, &open, "lock", e)),
            },
            Some(n) => slots::wait_any_slot(name, open, n, turn, stop)?,
        };
        let Some((locked, range)) = got else {
            return Ok(None);
        };
        match locked.file.is_linked() {
            Ok(true) => return Ok(Some(ExternalHold::File(FileHold::new(locked, range)))),
            Ok(false) => {}
            Err(e) => return Err(io_error(name, &locked, "inspect lock file", e)),
        }
        // Removed while we waited: start over on the file now at the path.
        open = locked.reopen(name)?;
        FileHold::new(locked, range).close();
    }
}

/// Waits in the kernel for `range` until it is ours (`true`) or `stop` is
/// asked (`false`): the interrupt signal ends the kernel wait early.
pub(crate) fn lock_stoppable(
    file: &LockFile,
    mode: Mode,
    range: Range,
    stop: &Stop,
) -> std::io::Result<bool> {
    loop {
        if stop.asked() {
            return Ok(false);
        }
        match file.lock_interruptible(mode, range) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs `f` on this process's classic-mode descriptor for `path`, if it
/// has one. In classic mode, opening and closing another descriptor of the
/// file would drop every lock the process holds on it, so code that only
/// asks about the file (`holders`) must use this one.
#[cfg(unix)]
pub(crate) fn with_classic_file<R>(path: &Path, f: impl FnOnce(&std::fs::File) -> R) -> Option<R> {
    classic::find(path).map(|inode| f(inode.file()))
}

/// An open lock file and the directory it was opened in.
pub(crate) struct Open {
    file: LockFile,
    dir: Arc<Path>,
    /// The config generation `dir` was read under; `None` for an explicit dir.
    generation: Option<u64>,
    /// The process it was opened in (not inherited through `fork`).
    born: crate::fork::Born,
}

impl Open {
    fn new(file: LockFile, dir: Arc<Path>, generation: Option<u64>) -> Open {
        Open {
            file,
            dir,
            generation,
            born: crate::fork::Born::now(),
        }
    }

    /// Whether it can be used for `files` now: opened under that lock path,
    /// and in this process (not inherited through `fork`).
    fn matches(&self, files: Files<'_>) -> bool {
        let here = self.born.here();
        here && match files {
            // Equal bytes first: `Path`'s own equality walks components.
            Files::Explicit(p) => {
                self.generation.is_none()
                    && (self.dir.as_os_str() == p.as_os_str() || *self.dir == *p)
            }
            Files::Configured => self.generation == Some(config::generation()),
        }
    }

    /// Another open file of the same lock file, for a second owner.
    fn reopen(&self, name: &str) -> Result<Open, LockError> {
        let file = open_creating_dir(name, &self.dir)?;
        Ok(Open::new(file, self.dir.clone(), self.generation))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(file_name(name))
    }
}

/// The lock files of one registry entry.
pub(crate) struct Pool {
    /// The file the lock's writer (its exclusive holder) uses, kept apart
    /// so that the uncontended path takes and returns it without a
    /// mutex: two atomic read-modify-writes each way, which cost more
    /// here than everything else the path does in user space.
    writers: WriterSlot,
    idle: parking_lot::Mutex<Vec<Open>>,
    /// Spreads semaphore waiters over the slots.
    turn: AtomicU32,
    /// A locked file on its way from one holder to the next, and the
    /// waiters that may take it (cohorting; see the module docs).
    cohort: Cohort<FileHold>,
    /// Handoffs so far, and the most in one batch (for tests and benches).
    handoffs: AtomicU64,
    longest_batch: AtomicU32,
    /// Until when (in [`clock`] time; 0: not at all) it is another
    /// process's turn after a batch ended (see the module docs).
    others_turn: AtomicU64,
}

/// An open file that only the writer of the pool's lock touches: the
/// holder of the entry's in-process lock in exclusive mode, of which there
/// is one at a time. The in-process lock orders one writer's use before
/// the next one's, as a mutex would.
struct WriterSlot(UnsafeCell<Option<Open>>);

// SAFETY: the cell is only reached through `Pool::take_as_writer` and
// `Pool::give_back_as_writer`, whose callers hold the entry's in-process
// lock exclusively; that lock gives one thread at a time access, with
// release/acquire ordering between them. `Open` is `Send`.
unsafe impl Sync for WriterSlot {}

/// How long this process leaves a lock file to a process that
/// `/proc/locks` shows blocked on it when a batch of handoffs ends: enough
/// for it to be woken and scheduled on a busy machine. The wait ends as
/// soon as the file is seen taken.
pub(crate) const TURN_FOR_A_WAITER: Duration = Duration::from_millis(2);

/// How long this process leaves a lock file free for processes that poll
/// for it, after a batch of handoffs that lasted `batch`: an eighth of it
/// (between 20 µs and 1 ms), so the file is free about a ninth of the time
/// while this process keeps it busy.
pub(crate) fn turn_for_pollers(batch: Duration) -> Duration {
    (batch / 8).clamp(Duration::from_micros(20), Duration::from_millis(1))
}

/// Nanoseconds since the first call, never 0 (the "unset" value).
fn clock() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    START.elapsed().as_nanos() as u64 + 1
}

/// The longest pause between two looks at a lock file left to another
/// process (see [`wait_turn`]).
const TURN_POLL: Duration = Duration::from_micros(50);

/// Waits while it is another process's turn (until `until`, in [`clock`]
/// time), or until someone else holds a lock on `file` (then the caller
/// queues behind them in the kernel), or `stop` is asked. Sleeps between
/// looks, leaving the CPU to the process whose turn it is.
fn wait_turn(file: &LockFile, until: u64, stop: Option<&Stop>) {
    while let Some(left) = others_turn_left(file, until) {
        if stop.is_some_and(Stop::asked) {
            return;
        }
        std::thread::sleep(left.min(TURN_POLL));
    }
}

/// What is left of another process's turn that lasts until `until` (in
/// [`clock`] time; 0: none): `None` once it is over, or once someone else
/// holds a lock on `file` (the turn was taken).
fn others_turn_left(file: &LockFile, until: u64) -> Option<Duration> {
    let now = clock();
    if now >= until || file.others_hold_from(0).unwrap_or(true) {
        return None;
    }
    Some(Duration::from_nanos(until - now))
}

impl Pool {
    pub(crate) fn new() -> Self {
        Pool {
            writers: WriterSlot(UnsafeCell::new(None)),
            idle: parking_lot::Mutex::new(Vec::new()),
            turn: AtomicU32::new(0),
            cohort: Cohort::new(),
            handoffs: AtomicU64::new(0),
            longest_batch: AtomicU32::new(0),
            others_turn: AtomicU64::new(0),
        }
    }

    /// Whether a holder of the in-process lock may lock `file` now, after
    /// waiting (if `block`) while it is another process's turn. A try
    /// during that turn is `false`, unless someone else has taken the
    /// file already. One load when no batch has just ended.
    #[inline]
    fn my_turn(&self, file: &LockFile, block: bool) -> bool {
        let until = self.others_turn.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if block {
            wait_turn(file, until, None);
        } else if others_turn_left(file, until).is_some() {
            return false;
        }
        // The turn is over (or given): later holders need not look.
        let _ = self
            .others_turn
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        true
    }

    /// Whether a file is parked (one load).
    #[inline]
    pub(crate) fn is_parked(&self) -> bool {
        self.cohort.is_parked()
    }

    /// A holder of the in-process lock for a lock file is about to wait
    /// for it: counted until [`Arrival::settle`] (or its drop, giving up).
    pub(crate) fn arrive(&self) -> Arrival<'_> {
        self.cohort.arrive();
        Arrival { pool: self }
    }

    /// A waiter counted by [`Pool::arrive`] (then [`Arrival::keep`]) holds
    /// the in-process lock and has looked for a parked file.
    pub(crate) fn settled(&self) {
        self.cohort.settled();
    }

    /// The parked file, for a holder of the in-process lock that may use
    /// it (opened under `files`, in this process). A parked file it cannot
    /// use is unlocked and returned to the pool.
    pub(crate) fn take_parked(&self, files: Option<Files<'_>>) -> Option<FileHold> {
        let hold = self.cohort.take()?;
        match files {
            Some(files) if hold.open.matches(files) => {
                self.handoffs.fetch_add(1, Ordering::Relaxed);
                self.longest_batch
                    .fetch_max(hold.handoffs, Ordering::Relaxed);
                Some(hold)
            }
            _ => {
                hold.release(self);
                None
            }
        }
    }

    /// After releasing the in-process lock with a file parked: unlocks
    /// the file if nobody waits to take it any more.
    pub(crate) fn released(&self) {
        if let Some(hold) = self.cohort.released() {
            hold.release(self);
        }
    }

    /// Handoffs so far, and the most handoffs one batch had.
    pub(crate) fn cohort_stats(&self) -> (u64, u32) {
        (
            self.handoffs.load(Ordering::Relaxed),
            self.longest_batch.load(Ordering::Relaxed),
        )
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
        crate::fork::watch();
        let file = open_creating_dir(name, &dir)?;
        Ok(Open::new(file, dir, generation))
    }

    fn give_back(&self, open: Open) {
        self.idle.lock().push(open);
    }

    /// [`Pool::take`] for the writer: the writer's file if it can be used
    /// for `files`, else one from the shared pool. A writer's file opened
    /// under another lock path, or before a fork, is closed.
    ///
    /// # Safety
    /// The caller holds the entry's in-process lock in exclusive mode, and
    /// the entry is a lock, not a semaphore (a `Hold` that is a writer).
    #[inline]
    unsafe fn take_as_writer(&self, name: &str, files: Files<'_>) -> Result<Open, LockError> {
        // SAFETY: only the writer reaches the cell (the caller's promise).
        if let Some(open) = unsafe { (*self.writers.0.get()).take() } {
            if open.matches(files) {
                return Ok(open);
            }
            drop(open); // closed before another is opened
        }
        self.take(name, files)
    }

    /// [`Pool::give_back`] for the writer: into the writer's slot if it is
    /// free, else to the shared pool.
    ///
    /// # Safety
    /// As for [`Pool::take_as_writer`].
    #[inline]
    unsafe fn give_back_as_writer(&self, open: Open) {
        // SAFETY: only the writer reaches the cell (the caller's promise).
        let mine = unsafe { &mut *self.writers.0.get() };
        match mine {
            None => *mine = Some(open),
            Some(_) => self.give_back(open),
        }
    }
}

/// A waiter counted by the pool's cohort ([`Pool::arrive`]). Dropped
/// without [`settle`](Arrival::settle) (a timeout, a dropped future, a
/// panic), it gives up: a file parked for it is unlocked.
pub(crate) struct Arrival<'a> {
    pool: &'a Pool,
}

impl Arrival<'_> {
    /// The waiter holds the in-process lock: it stays counted until it
    /// has looked for a parked file and calls [`Pool::settled`].
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        if let Some(hold) = self.pool.cohort.gave_up() {
            hold.release(self.pool);
        }
    }
}

/// The lock-file part of a held lock.
pub(crate) struct FileHold {
    open: Open,
    range: Range,
    /// `flock(2)` is held too.
    flock: bool,
    /// Handoffs of this lock since it was taken from the kernel (see
    /// [`FileHold::park`]), and when the first was, in [`clock`] time.
    /// Two plain numbers, not an `Option<(u32, Instant)>`, keep guards
    /// small (they are moved by value).
    handoffs: u32,
    batch_start: u64,
}

impl FileHold {
    pub(super) fn new(open: Open, range: Range) -> FileHold {
        FileHold {
            open,
            range,
            flock: false,
            handoffs: 0,
            batch_start: 0,
        }
    }

    /// Parks this locked file in `pool` for the next holder of the
    /// in-process lock, unless nobody waits for it, the batch is used up,
    /// cohorting is off, or the file is a forked parent's: then it comes
    /// back, to be released for real, with how long the batch lasted if
    /// one just ended (the caller then ends it with
    /// [`FileHold::end_batch`] and lets a waiting thread of this process
    /// go first).
    pub(crate) fn park(mut self, pool: &Pool) -> Result<(), (FileHold, Option<Duration>)> {
        // Classic (per-process) locks: a second holder's own `fcntl` would
        // succeed on the parked lock (a process never conflicts with
        // itself), and reclaiming the parked file would then unlock it
        // under that holder. No cohorting there.
        if !pool.cohort.has_waiters() || !self.open.file.owns_its_locks() {
            return Err((self, None));
        }
        let (limit, within) = config::cohort_limit();
        let now = clock();
        let since = if self.handoffs == 0 {
            now
        } else {
            self.batch_start
        };
        let lasted = Duration::from_nanos(now - since);
        let n = self.handoffs + 1;
        if n > limit || lasted >= within || !self.open.born.here() {
            let ended = (self.handoffs > 0).then_some(lasted);
            return Err((self, ended));
        }
        self.handoffs = n;
        self.batch_start = since;
        pool.cohort.park(self).map_err(|f| (f, None))
    }

    /// Releases the file at the end of a batch of handoffs that lasted
    /// `batch`, and makes it another process's turn (see the module docs):
    /// [`TURN_FOR_A_WAITER`] if one is blocked on the file, else
    /// [`turn_for_pollers`]. Waiters are only listed while they are
    /// blocked, so this looks before unlocking.
    pub(crate) fn end_batch(self, pool: &Pool, batch: Duration) {
        let turn = if self.open.file.has_kernel_waiters() {
            TURN_FOR_A_WAITER
        } else {
            turn_for_pollers(batch)
        };
        self.release(pool);
        // The in-process lock is still ours: whoever takes it next sees this.
        pool.others_turn
            .store(clock() + turn.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Unlocks (flock first, then the OFD lock) and returns the file to the
    /// entry's pool. If unlocking fails the file is closed instead, which
    /// releases the locks anyway.
    ///
    /// In a child forked while this was held, it is the parent's lock (the
    /// open file description is shared): the child's copy is closed without
    /// unlocking, which leaves the parent's lock alone.
    #[inline]
    pub(crate) fn release(self, pool: &Pool) {
        if !self.open.born.here() {
            return; // inherited: closing our descriptor unlocks nothing
        }
        let flock_released = !self.flock || self.open.file.funlock().is_ok();
        if self.open.file.unlock(self.range).is_ok() && flock_released {
            pool.give_back(self.open);
        }
    }

    /// [`FileHold::release`] by the lock's writer, whose file goes back to
    /// the writer's slot.
    ///
    /// # Safety
    /// The caller holds the entry's in-process lock in exclusive mode, and
    /// the entry is a lock, not a semaphore (a `Hold` that is a writer).
    #[inline]
    pub(crate) unsafe fn release_as_writer(self, pool: &Pool) {
        if !self.open.born.here() {
            return; // inherited, as in `release`
        }
        let flock_released = !self.flock || self.open.file.funlock().is_ok();
        if self.open.file.unlock(self.range).is_ok() && flock_released {
            // SAFETY: the caller's promise.
            unsafe { pool.give_back_as_writer(self.open) };
        }
    }

    /// Unlocks and closes the file (after removing it); in a forked child,
    /// only closes it (see [`FileHold::release`]).
    pub(crate) fn close(self) {
        if self.open.born.here() {
            if self.flock {
                let _ = self.open.file.funlock();
            }
            let _ = self.open.file.unlock(self.range);
        }
    }

    /// Takes flock(2) too (see the module docs), waiting in the kernel if
    /// `block`. `Ok(false)`: busy. `name` is the full lock name.
    pub(crate) fn flock(&mut self, name: &str, mode: Mode, block: bool) -> Result<bool, LockError> {
        if self.flock {
            return Ok(true); // handed over with it (cohorting)
        }
        match self.open.file.flock(mode, block) {
            Ok(got) => {
                self.flock = got;
                Ok(got)
            }
            Err(e) => Err(io_error(name, &self.open, "flock", e)),
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
/// `writer`: the caller is the lock's writer (see [`Files::lock`]), and
/// a file it does not lock goes back to the writer's slot.
///
/// # Safety
/// If `writer`, as for [`Pool::take_as_writer`].
unsafe fn lock_whole(
    target: &Target<'_>,
    open: Open,
    mode: Mode,
    block: bool,
    writer: bool,
) -> Result<Option<(Open, Range)>, LockError> {
    let give_back = |open| {
        if writer {
            // SAFETY: the caller is the lock's writer (our contract).
            unsafe { target.state.give_back_as_writer(open) }
        } else {
            target.state.give_back(open)
        }
    };
    if !target.state.my_turn(&open.file, block) {
        // Another process's turn (see the module docs): busy for a try.
        give_back(open);
        return Ok(None);
    }
    let r = if block {
        open.file.lock(mode, Range::Whole).map(|()| true)
    } else {
        open.file.try_lock(mode, Range::Whole)
    };
    match r {
        Ok(true) => Ok(Some((open, Range::Whole))),
        Ok(false) => {
            give_back(open);
            Ok(None)
        }
        Err(e) => Err(io_error(target.name, &open, "lock", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// The writer's slot: its file comes back to it and is taken again,
    /// shared holders' files stay in the shared pool, a second file the
    /// writer returns goes there too, and a writer's file opened under
    /// another directory is not reused.
    #[cfg(unix)]
    #[test]
    fn the_writer_reuses_its_own_file_and_nobody_else_takes_it() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (in_a, in_b) = (Files::Explicit(a.path()), Files::Explicit(b.path()));
        let pool = Pool::new();
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

    /// A pool where it is another process's turn for `left`.
    fn turn_for_others(left: Duration) -> Pool {
        let pool = Pool::new();
        pool.others_turn
            .store(clock() + left.as_nanos() as u64, Ordering::Relaxed);
        pool
    }

    fn two_files(dir: &Path) -> (LockFile, LockFile) {
        let p = dir.join("l");
        (LockFile::open(&p).unwrap(), LockFile::open(&p).unwrap())
    }

    #[test]
    fn a_try_during_another_process_turn_is_busy_until_the_file_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = two_files(dir.path());
        let pool = turn_for_others(Duration::from_secs(3600));
        assert!(!pool.my_turn(&ours, false), "a try took another's turn");
        assert!(theirs.try_lock(Mode::Exclusive, Range::Whole).unwrap());
        assert!(pool.my_turn(&ours, false), "the turn was taken: ours now");
        assert_eq!(pool.others_turn.load(Ordering::Relaxed), 0, "turn kept");
        theirs.unlock(Range::Whole).unwrap();
        assert!(pool.my_turn(&ours, false), "a turn came back");
    }

    #[test]
    fn a_blocking_holder_waits_until_the_file_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = two_files(dir.path());
        let pool = turn_for_others(Duration::from_secs(3600));
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                assert!(pool.my_turn(&ours, true));
                done.store(true, Ordering::Relaxed);
            });
            // Nothing but another owner taking the file ends an hour's turn.
            assert!(!done.load(Ordering::Relaxed), "returned during the turn");
            assert!(theirs.try_lock(Mode::Exclusive, Range::Whole).unwrap());
            waiter.join().unwrap();
        });
        theirs.unlock(Range::Whole).unwrap();
    }

    #[test]
    fn a_turn_nobody_takes_ends_when_it_is_over() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, _) = two_files(dir.path());
        let turn = Duration::from_millis(3);
        let pool = turn_for_others(turn);
        let started = Instant::now();
        assert!(pool.my_turn(&ours, true));
        assert!(started.elapsed() >= turn - Duration::from_micros(100));
        assert_eq!(pool.others_turn.load(Ordering::Relaxed), 0);
    }

    /// Ends `hold`'s batch of `batch` and checks the turn it gave other
    /// processes was `want` (the turn's end, read against the clock taken
    /// just before and after, so a preempted test cannot fail it).
    fn check_turn(hold: FileHold, pool: &Pool, batch: Duration, want: Duration) {
        let before = clock();
        hold.end_batch(pool, batch);
        let after = clock();
        let until = pool.others_turn.load(Ordering::Relaxed);
        let want = want.as_nanos() as u64;
        assert!(
            until - after <= want && want <= until - before,
            "a turn of {} to {} ns, not {want}",
            until - after,
            until - before
        );
    }

    fn locked_hold(dir: &Path, file: LockFile) -> FileHold {
        assert!(file.try_lock(Mode::Exclusive, Range::Whole).unwrap());
        FileHold::new(Open::new(file, Arc::from(dir), None), Range::Whole)
    }

    #[test]
    fn a_batch_ends_with_a_short_turn_for_pollers() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = two_files(dir.path());
        let pool = Pool::new();
        let batch = Duration::from_millis(1);
        let hold = locked_hold(dir.path(), ours);
        check_turn(hold, &pool, batch, turn_for_pollers(batch));
        assert!(
            theirs.try_lock(Mode::Exclusive, Range::Whole).unwrap(),
            "kept locked"
        );
        theirs.unlock(Range::Whole).unwrap();
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_batch_ends_with_a_long_turn_for_a_process_blocked_on_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = two_files(dir.path());
        let pool = Pool::new();
        let hold = locked_hold(dir.path(), ours);
        let batch = Duration::from_millis(1);
        std::thread::scope(|s| {
            // Blocked in the kernel as another process's waiter would be.
            let waiter = s.spawn(|| theirs.lock(Mode::Exclusive, Range::Whole).unwrap());
            let deadline = Instant::now() + Duration::from_secs(30);
            while !hold.open.file.has_kernel_waiters() {
                assert!(Instant::now() < deadline, "waiter never listed");
                std::thread::yield_now();
            }
            check_turn(hold, &pool, batch, TURN_FOR_A_WAITER);
            waiter.join().unwrap();
        });
        theirs.unlock(Range::Whole).unwrap();
    }
}
