//! Lock cohorting: a locked file passed from one holder of this process to
//! the next with the in-process lock, and the turn other processes get
//! when a batch of such handoffs ends.
//!
//! Invariants:
//! * a locked file is in the [`Handoff`] slot only while the entry's
//!   in-process lock is held in the writer's mode by a waiter it was
//!   handed to (`Local::handoff`) that has not taken the file yet; so the
//!   slot is touched only by the writer, one thread at a time, like the
//!   pool's writer slot, and a file is never locked for a holder that does
//!   not exist: the granted waiter *is* the holder, whether it runs yet or
//!   not;
//! * a batch (consecutive handoffs without unlocking) is bounded by
//!   [`config::cohort_limit`]: so many handoffs, or so long from the first;
//!   a batch that ends unlocks the file and gives other processes a turn.
//!
//! Why a turn: unlocking alone does not let another process in. The kernel
//! wakes a process blocked on the file but hands it nothing, and a thread
//! of this process that is already running relocks long before that
//! process is scheduled; processes that poll (fasteners, hence
//! oslo.concurrency, and py-filelock) try now and then and would find the
//! file free only between one unlock and the next lock. So after a batch,
//! for [`turn_after`] the batch, this process does not lock the file again
//! unless `F_OFD_GETLK` shows that another process has taken it; once one
//! has, this process queues behind it in the kernel. The turn costs this
//! process nothing when others want the file, and its length when nobody
//! does; it never reads anything host-wide.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::lockfile::LockFile;
use crate::config;

/// Nanoseconds since the first call, never 0 (the "unset" value).
pub(crate) fn clock() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    START.elapsed().as_nanos() as u64 + 1
}

/// How long other processes have the file after a batch of handoffs that
/// lasted `batch`: an eighth of it, between 20 µs and 1 ms. A blocked
/// process is woken and takes the file well within that on a machine
/// that is not overloaded (its turn then ends at once); a process that
/// polls finds the file free about a ninth of the time while this process
/// keeps it busy.
pub(crate) fn turn_after(batch: Duration) -> Duration {
    (batch / 8).clamp(Duration::from_micros(20), Duration::from_millis(1))
}

/// How long a releaser in a batch of handoffs waits for the thread it
/// handed the file to last to queue again (it is on its way back when
/// the two take turns): far less than a kernel unlock and relock, and
/// the batch goes on instead of ending early.
const QUEUE_AGAIN: Duration = Duration::from_micros(3);

/// Offers the lock again for a short while (see [`QUEUE_AGAIN`]): `true`
/// once `handoff` handed it over.
#[cold]
pub(crate) fn soon(handoff: &impl Fn() -> bool) -> bool {
    let until = Instant::now() + QUEUE_AGAIN;
    loop {
        for _ in 0..32 {
            std::hint::spin_loop();
        }
        if handoff() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
    }
}

/// Where a held lock file stands in a batch of handoffs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Batch {
    /// Handoffs since the file was last locked in the kernel.
    handoffs: u32,
    /// When the first of them was, in [`clock`] time.
    start: u64,
}

impl Batch {
    /// Whether the file may be handed over once more: cohorting is on and
    /// the batch is within its bound ([`config::cohort_limit`]).
    #[inline]
    pub(crate) fn may_continue(&self) -> bool {
        let (limit, within) = config::cohort_limit();
        if self.handoffs == 0 {
            return limit > 0;
        }
        self.handoffs < limit && clock() - self.start < within.as_nanos() as u64
    }

    /// Counts a handoff; the first one starts the batch's clock.
    pub(crate) fn count(&mut self) {
        if self.handoffs == 0 {
            self.start = clock();
        }
        self.handoffs += 1;
    }

    /// How long the batch has lasted, or `None` if the file was not handed
    /// over since it was locked (no batch).
    pub(crate) fn lasted(&self) -> Option<Duration> {
        (self.handoffs > 0).then(|| Duration::from_nanos(clock() - self.start))
    }

    /// Handoffs in this batch so far.
    pub(crate) fn handoffs(&self) -> u32 {
        self.handoffs
    }
}

/// A lock file's handoff slot, the turn it leaves to other processes, and
/// statistics, for one registry entry. `T` is the held lock file.
pub(crate) struct Handoff<T> {
    slot: UnsafeCell<Option<T>>,
    /// Until when (in [`clock`] time; 0: not at all) it is another
    /// process's turn.
    turn: AtomicU64,
    /// Handoffs so far, and the most in one batch (for tests and benches).
    handoffs: AtomicU64,
    longest: AtomicU32,
    /// A writer of this process holds the file, or is being handed it:
    /// waiters then stay close (see `acquire`). Written only by the writer.
    held: AtomicBool,
}

// SAFETY: `slot` is only reached through `put` and `take`, whose callers
// hold the entry's in-process lock in the writer's mode (see the module's
// invariants): one thread at a time, ordered by that lock. `T` is `Send`.
unsafe impl<T: Send> Sync for Handoff<T> {}

impl<T> Handoff<T> {
    pub(crate) fn new() -> Handoff<T> {
        Handoff {
            slot: UnsafeCell::new(None),
            turn: AtomicU64::new(0),
            handoffs: AtomicU64::new(0),
            longest: AtomicU32::new(0),
            held: AtomicBool::new(false),
        }
    }

    /// Leaves `file` for the waiter the in-process lock is about to be
    /// handed to.
    ///
    /// # Safety
    /// The caller holds the entry's in-process lock in the writer's mode.
    pub(crate) unsafe fn put(&self, file: T) {
        // SAFETY: the caller is the writer (our contract).
        let slot = unsafe { &mut *self.slot.get() };
        debug_assert!(slot.is_none(), "two files handed over at once");
        *slot = Some(file);
    }

    /// What was handed over with the in-process lock, if anything.
    ///
    /// # Safety
    /// As for [`Handoff::put`].
    #[inline]
    pub(crate) unsafe fn take(&self) -> Option<T> {
        // SAFETY: the caller is the writer (our contract).
        unsafe { (*self.slot.get()).take() }
    }

    /// Whether a writer of this process holds the file (a hint; one
    /// relaxed load).
    #[inline]
    pub(crate) fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Records whether a writer holds the file (by the writer, as it takes
    /// or lets go of the file). Stores only on a change.
    #[inline]
    pub(crate) fn set_held(&self, on: bool) {
        if self.held.load(Ordering::Relaxed) != on {
            self.held.store(on, Ordering::Relaxed);
        }
    }

    /// Counts a batch of `n` handoffs that just ended.
    pub(crate) fn count(&self, n: u32) {
        if n > 0 {
            self.handoffs.fetch_add(u64::from(n), Ordering::Relaxed);
            self.longest.fetch_max(n, Ordering::Relaxed);
        }
    }

    /// Handoffs so far, and the most handoffs one batch had.
    pub(crate) fn stats(&self) -> (u64, u32) {
        (
            self.handoffs.load(Ordering::Relaxed),
            self.longest.load(Ordering::Relaxed),
        )
    }

    /// Starts other processes' turn after a batch that lasted `batch`.
    pub(crate) fn give_turn(&self, batch: Duration) {
        let until = clock() + turn_after(batch).as_nanos() as u64;
        self.turn.store(until, Ordering::Relaxed);
    }

    /// Whether this process may lock `file` now. During another process's
    /// turn: a try (`!block`) is `false`; a blocking caller waits the turn
    /// out, sleeping between looks. Either way the turn ends early once
    /// someone else has taken the file. One load when no turn is on.
    #[inline]
    pub(crate) fn my_turn(&self, file: &LockFile, block: bool) -> bool {
        let until = self.turn.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        self.my_turn_slow(file, block, until)
    }

    #[cold]
    fn my_turn_slow(&self, file: &LockFile, block: bool, until: u64) -> bool {
        if block {
            wait_turn_until(file, until);
        } else if others_turn_left(file, until).is_some() {
            return false;
        }
        // Over (or taken): later holders need not look.
        let _ = self
            .turn
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        true
    }

    /// Until when (in [`clock`] time; 0: no turn) other processes have
    /// the file, for a wait that happens elsewhere.
    pub(crate) fn turn_until(&self) -> u64 {
        self.turn.load(Ordering::Relaxed)
    }
}

/// Waits, sleeping between looks, while it is another process's turn
/// that lasts until `until` (in [`clock`] time; 0: none) and nobody has
/// taken `file`.
pub(crate) fn wait_turn_until(file: &LockFile, until: u64) {
    if until == 0 {
        return;
    }
    // Yields between looks rather than sleeping: a sleep this short lasts
    // the timer's slack (50 µs by default), longer than most turns, and
    // the process whose turn it is may need this CPU to take the file.
    while others_turn_left(file, until).is_some() {
        std::thread::yield_now();
    }
}

/// What is left of another process's turn that lasts until `until`: `None`
/// once it is over, or once someone else holds a lock on `file` (the turn
/// was taken).
fn others_turn_left(file: &LockFile, until: u64) -> Option<Duration> {
    let now = clock();
    if now >= until || file.others_hold_from(0).unwrap_or(true) {
        return None;
    }
    Some(Duration::from_nanos(until - now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::file::sys::Range;
    use crate::spec::Mode;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    /// A handoff slot where it is another process's turn for `left`.
    fn turn_for_others(left: Duration) -> Handoff<()> {
        let h = Handoff::new();
        h.turn
            .store(clock() + left.as_nanos() as u64, Ordering::Relaxed);
        h
    }

    fn two_files(dir: &Path) -> (LockFile, LockFile) {
        let p = dir.join("l");
        (LockFile::open(&p).unwrap(), LockFile::open(&p).unwrap())
    }

    #[test]
    fn a_try_during_another_process_turn_is_busy_until_the_file_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = two_files(dir.path());
        let h = turn_for_others(Duration::from_secs(3600));
        assert!(!h.my_turn(&ours, false), "a try took another's turn");
        assert!(theirs.try_lock(Mode::Exclusive, Range::Whole).unwrap());
        assert!(h.my_turn(&ours, false), "the turn was taken: ours now");
        assert_eq!(h.turn.load(Ordering::Relaxed), 0, "turn kept");
        theirs.unlock(Range::Whole).unwrap();
        assert!(h.my_turn(&ours, false), "a turn came back");
    }

    #[test]
    fn a_blocking_holder_waits_until_the_file_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = two_files(dir.path());
        let h = turn_for_others(Duration::from_secs(3600));
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                assert!(h.my_turn(&ours, true));
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
        let h = turn_for_others(turn);
        let started = Instant::now();
        assert!(h.my_turn(&ours, true));
        assert!(started.elapsed() >= turn - Duration::from_micros(100));
        assert_eq!(h.turn.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_batch_continues_until_its_bound() {
        let (limit, _) = config::cohort_limit();
        assert!(limit > 1, "cohorting is off in this test run");
        let mut b = Batch::default();
        assert_eq!(b.lasted(), None, "a file never handed over is no batch");
        for n in 1..=limit {
            assert!(b.may_continue(), "stopped at handoff {n}");
            b.count();
        }
        assert!(!b.may_continue(), "bound passed");
        assert!(b.lasted().is_some());
    }

    #[test]
    fn a_batch_end_gives_others_a_turn_of_an_eighth() {
        let h: Handoff<()> = Handoff::new();
        let batch = Duration::from_millis(1);
        let before = clock();
        h.give_turn(batch);
        let after = clock();
        let until = h.turn.load(Ordering::Relaxed);
        let want = turn_after(batch).as_nanos() as u64;
        assert!(until - after <= want && want <= until - before);
    }
}
