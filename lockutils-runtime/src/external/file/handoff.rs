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

/// How long other processes have the file after this process kept it for
/// `kept`. A blocked process is woken and takes the file within its
/// wake-up time, and the turn ends there, so the length matters for
/// processes that poll (fasteners, hence oslo.concurrency, and
/// py-filelock), which find the file free only if they try during a turn:
/// * with `others` (another process was seen holding the file within
///   [`OTHERS_RECENTLY`]), after a streak of at least [`STREAK`] in which
///   this process kept the file (released only for moments), three times
///   the streak, up to 3 ms: the file is free three quarters of the time
///   this process would otherwise keep it, so a poller gets in within a try
///   or two, while a blocked process ends the turn as soon as it is woken
///   (a turn costs the others' wake-up, not its length). Whether those
///   others poll or wait in the kernel cannot be told apart from here: in
///   a short turn both take the file at once;
/// * otherwise, after a batch of handoffs that reached its bound, an
///   eighth of it, 20 µs to 1 ms: what a poller nobody has seen yet
///   finds, and all the time a process alone loses.
pub(crate) fn turn_after(kept: Duration, others: bool) -> Duration {
    if others {
        (kept * 3).clamp(Duration::from_micros(20), Duration::from_millis(3))
    } else {
        (kept / 8).clamp(Duration::from_micros(20), Duration::from_millis(1))
    }
}

/// How long a sight of another process holding the file counts as
/// evidence that others want it.
const OTHERS_RECENTLY: Duration = Duration::from_secs(1);

/// The shortest streak (see [`turn_after`]) that earns others a turn.
const STREAK: Duration = Duration::from_millis(1);

/// A release at least this long before this process takes the file again
/// ends a streak: the file was free for others meanwhile.
const STREAK_GAP: Duration = Duration::from_micros(100);

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
        if self.handoffs == 0 || self.start == 0 {
            return self.handoffs < limit;
        }
        self.handoffs < limit && clock() - self.start < within.as_nanos() as u64
    }

    /// Counts a handoff offered. The batch's clock starts when the first
    /// one reaches its waiter ([`Batch::received`]), which keeps the clock
    /// off a release that finds nobody to hand to.
    pub(crate) fn count(&mut self) {
        self.handoffs += 1;
    }

    /// The waiter it was handed to took it.
    #[inline]
    pub(crate) fn received(&mut self) {
        if self.start == 0 {
            self.start = clock();
        }
    }

    /// How long the batch has lasted, or `None` if the file was not handed
    /// over since it was locked (no batch).
    pub(crate) fn lasted(&self) -> Option<Duration> {
        (self.handoffs > 0 && self.start != 0).then(|| Duration::from_nanos(clock() - self.start))
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
    /// When (in [`clock`] time; 0: never) another process was last seen
    /// holding the file (see [`turn_after`]).
    others_seen: AtomicU64,
    /// While others want the file: when this process's streak began (0:
    /// none), and when it last let go of the file. Written by the writer.
    streak_start: AtomicU64,
    last_release: AtomicU64,
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
            others_seen: AtomicU64::new(0),
            streak_start: AtomicU64::new(0),
            last_release: AtomicU64::new(0),
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

    /// Starts other processes' turn after this process kept the file for
    /// `kept` (see [`turn_after`]).
    pub(crate) fn give_turn(&self, kept: Duration, others: bool) {
        let until = clock() + turn_after(kept, others).as_nanos() as u64;
        self.turn.store(until, Ordering::Relaxed);
    }

    /// Whether another process was seen holding the file lately.
    pub(crate) fn others_want_it(&self) -> bool {
        recent(self.others_seen.load(Ordering::Relaxed))
    }

    /// Records that another process was seen holding the file (which
    /// also ends this process's streak).
    #[cold]
    pub(crate) fn saw_others(&self) {
        self.others_seen.store(clock(), Ordering::Relaxed);
        self.streak_start.store(0, Ordering::Relaxed);
    }

    /// A writer of this process took the file from the kernel. Nothing to
    /// do unless others want it (one load).
    #[inline]
    pub(crate) fn took(&self) {
        if self.others_seen.load(Ordering::Relaxed) != 0 {
            self.took_slow();
        }
    }

    #[cold]
    fn took_slow(&self) {
        if !self.others_want_it() {
            return;
        }
        let now = clock();
        let last = self.last_release.load(Ordering::Relaxed);
        if self.streak_start.load(Ordering::Relaxed) == 0
            || now - last > STREAK_GAP.as_nanos() as u64
        {
            self.streak_start.store(now, Ordering::Relaxed);
        }
    }

    /// A writer of this process lets go of the file: how long it kept it,
    /// if that earns others a turn while they want it (see
    /// [`turn_after`]). One load when nobody else was seen.
    #[inline]
    pub(crate) fn letting_go(&self) -> Option<Duration> {
        if self.others_seen.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.letting_go_slow()
    }

    #[cold]
    fn letting_go_slow(&self) -> Option<Duration> {
        if !self.others_want_it() {
            return None;
        }
        let now = clock();
        self.last_release.store(now, Ordering::Relaxed);
        let start = self.streak_start.load(Ordering::Relaxed);
        let kept = Duration::from_nanos(now - start);
        if start == 0 || kept < STREAK {
            return None;
        }
        self.streak_start.store(0, Ordering::Relaxed);
        Some(kept)
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
        let taken = if block {
            wait_turn_until(file, until)
        } else {
            match turn(file, until) {
                Turn::Left => return false,
                t => t == Turn::Taken,
            }
        };
        if taken {
            self.saw_others();
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
/// Whether `at` (in [`clock`] time; 0: never) is within
/// [`OTHERS_RECENTLY`].
fn recent(at: u64) -> bool {
    at != 0 && clock() - at < OTHERS_RECENTLY.as_nanos() as u64
}

/// Returns whether the turn was taken (`true`) rather than over.
pub(crate) fn wait_turn_until(file: &LockFile, until: u64) -> bool {
    if until == 0 {
        return false;
    }
    // Yields between looks rather than sleeping: a sleep this short lasts
    // the timer's slack (50 µs by default), longer than most turns, and
    // the process whose turn it is may need this CPU to take the file.
    loop {
        match turn(file, until) {
            Turn::Left => std::thread::yield_now(),
            Turn::Over => return false,
            Turn::Taken => return true,
        }
    }
}

/// Where another process's turn that lasts until `until` stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    /// Still on, and nobody else has taken the file.
    Left,
    /// Over.
    Over,
    /// Someone else holds a lock on the file: the turn was taken.
    Taken,
}

fn turn(file: &LockFile, until: u64) -> Turn {
    if clock() >= until {
        Turn::Over
    } else if file.others_hold_from(0).unwrap_or(true) {
        Turn::Taken
    } else {
        Turn::Left
    }
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
            b.received();
        }
        assert!(!b.may_continue(), "bound passed");
        assert!(b.lasted().is_some());
    }

    /// While other processes were seen holding the file, a streak of
    /// holding it earns them a turn of three times the streak; with nobody
    /// seen, none.
    #[test]
    fn a_streak_earns_others_a_long_turn_and_nobody_seen_none() {
        let h: Handoff<()> = Handoff::new();
        h.took();
        assert_eq!(h.letting_go(), None, "nobody else was seen");
        h.saw_others();
        h.took();
        std::thread::sleep(STREAK);
        let kept = h
            .letting_go()
            .expect("a streak while pollers want the file");
        assert!(kept >= STREAK);
        assert_eq!(h.letting_go(), None, "the streak was not reset");
        assert_eq!(
            turn_after(Duration::from_millis(1), true),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn a_batch_end_gives_others_a_turn_of_an_eighth() {
        let h: Handoff<()> = Handoff::new();
        let batch = Duration::from_millis(1);
        let before = clock();
        h.give_turn(batch, false);
        let after = clock();
        let until = h.turn.load(Ordering::Relaxed);
        let want = turn_after(batch, false).as_nanos() as u64;
        assert!(until - after <= want && want <= until - before);
    }
}
