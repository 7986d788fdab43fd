//! The in-process primitives: what threads and async tasks of one process
//! wait on. Both count *units* against a capacity:
//!
//! * a reader/writer lock has capacity [`WRITER`]: a writer (exclusive)
//!   needs all of it, a reader (shared) needs one unit;
//! * a counted semaphore (`permits = N`) has capacity N, and every holder
//!   needs one unit.
//!
//! [`RawLock`] is the default. Its fast paths are one atomic
//! read-modify-write each way, like `parking_lot`'s mutex: a word holds the
//! units in use and a `PARKED` bit that says someone is queued. Only when
//! the bit is set does a release take the slow path, which wakes a waiter
//! (all of them once shared mode has been used, since a reader cannot use a
//! wake-up meant for a writer). Waiters queue under a small mutex, threads
//! and async tasks in the same queue: a thread parks in the kernel, a task
//! parks its waker. Woken waiters retry, and others may barge in first.
//! Writer preference: while a writer waits, new readers queue behind it
//! instead of joining the readers inside, so readers cannot starve writers.
//!
//! [`FifoLock`](super::fifo::FifoLock) is the fair (first come, first
//! served) variant, in `fifo.rs`.
//!
//! There is no poisoning: a panicking holder's guard releases on unwind.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use super::sync::thread;
use super::sync::{Arc, AtomicBool, AtomicUsize, Mutex, Ordering};
use super::timer::Sleep;
use crate::spec::Mode;

/// Capacity of a reader/writer lock, and what a writer needs of it.
pub(crate) const WRITER: usize = 1 << (usize::BITS - 2);

/// Set in the state word while the queue is not empty.
const PARKED: usize = 1 << (usize::BITS - 1);

/// Attempts of [`RawLock::spin_take`] before a thread queues. Under loom
/// a single attempt: spinning changes no state the models check, and its
/// extra schedules would only slow them down.
#[cfg(not(lockutils_loom))]
const SPINS: u32 = 10;
#[cfg(lockutils_loom)]
const SPINS: u32 = 1;

/// Units a holder in `mode` needs of a primitive with capacity `cap`.
#[inline]
pub(crate) fn units(cap: usize, mode: Mode) -> usize {
    if cap == WRITER && mode == Mode::Exclusive {
        WRITER
    } else {
        1
    }
}

/// A barging lock with no data: acquire and release are explicit.
pub(crate) struct RawLock {
    cap: usize,
    /// Units in use, plus [`PARKED`].
    state: AtomicUsize,
    /// Writers queued; readers do not pass them.
    writers_waiting: AtomicUsize,
    /// Set once anyone used shared mode: from then on a release wakes every
    /// waiter.
    mixed: AtomicBool,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
}

/// A queued thread or task.
struct Waiter {
    woken: AtomicBool,
    /// Set (before `woken`) when a release handed this waiter the lock
    /// itself ([`RawLock::handoff`]): it holds the lock, no retry.
    granted: AtomicBool,
    /// It waits for the writer's mode: the only kind of waiter a lock is
    /// handed to. A task's future may be dropped after the grant; it then
    /// holds the lock and must release it (see [`LockAsync::cancel`]).
    writer: bool,
    waker: Mutex<Waker>,
}

impl Waiter {
    fn new(waker: Waker, writer: bool) -> Arc<Waiter> {
        Arc::new(Waiter {
            woken: AtomicBool::new(false),
            granted: AtomicBool::new(false),
            writer,
            waker: Mutex::new(waker),
        })
    }
}

/// How long a queued thread that may be handed the lock spins before it
/// parks (see [`RawLock::lock_until`]): many short critical sections of
/// another thread, so that a handoff between two running threads costs
/// no futex wake and no context switch (a futex wake-up costs about 25 µs
/// on a virtual machine whose idle CPU must be woken first).
#[cfg(not(lockutils_loom))]
const QUEUED_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// Spins between two yields of the CPU while waiting to be handed the lock.
#[cfg(not(lockutils_loom))]
const SPINS_PER_YIELD: u32 = 256;

/// A waker that unparks the current thread: lets threads and tasks share
/// one wait queue. One per thread, cloned for each wait.
pub(crate) fn thread_waker() -> Waker {
    #[cfg(not(lockutils_loom))]
    {
        thread_local! {
            static WAKER: Waker = new_thread_waker();
        }
        if let Ok(w) = WAKER.try_with(Waker::clone) {
            return w;
        }
    }
    new_thread_waker()
}

fn new_thread_waker() -> Waker {
    // `std`'s `Arc`: a `Waker` is built from nothing else.
    Waker::from(std::sync::Arc::new(ThreadWaker(thread::current())))
}

struct ThreadWaker(thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

impl RawLock {
    pub(crate) fn new(cap: usize) -> Self {
        RawLock {
            cap,
            state: AtomicUsize::new(0),
            writers_waiting: AtomicUsize::new(0),
            mixed: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    #[inline]
    fn is_writer(&self, mode: Mode) -> bool {
        self.cap == WRITER && mode == Mode::Exclusive
    }

    /// Takes `mode` if it is available now. Never waits.
    #[inline(always)]
    pub(crate) fn try_lock(&self, mode: Mode) -> bool {
        if self.is_writer(mode)
            && self
                .state
                .compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return true;
        }
        self.try_take(mode)
    }

    /// Takes `mode` if the units are free, whether or not others are
    /// queued (barging), keeping [`PARKED`] as it is.
    #[inline(never)]
    fn try_take(&self, mode: Mode) -> bool {
        let writer = self.is_writer(mode);
        if mode == Mode::Shared {
            if !self.mixed.load(Ordering::Relaxed) {
                self.mixed.store(true, Ordering::Relaxed);
            }
            if self.writers_waiting.load(Ordering::Acquire) > 0 {
                return false;
            }
        }
        let need = units(self.cap, mode);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let used = s & !PARKED;
            let fits = if writer {
                used == 0
            } else {
                used < WRITER && used < self.cap
            };
            if !fits {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                s + need,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Tries for `mode` a few times before a thread queues and parks, as
    /// `parking_lot` does: a holder with a short critical section is
    /// usually gone within a few hundred cycles, and taking the lock then
    /// saves a futex wait, a wake-up and two context switches. Spins with
    /// `spin_loop` for 2, 4, 8 rounds, then yields the CPU (on a machine
    /// with fewer cores than threads the holder may need it), at most
    /// [`SPINS`] attempts in all. No spinning once others are queued: they
    /// are parked already, and the lock will be handed to one of them.
    #[inline]
    fn spin_take(&self, mode: Mode) -> bool {
        let mut round = 0;
        loop {
            if self.try_take(mode) {
                return true;
            }
            round += 1;
            if round >= SPINS || self.state.load(Ordering::Relaxed) & PARKED != 0 {
                return false;
            }
            if round <= 3 {
                for _ in 0..(1u32 << round) {
                    std::hint::spin_loop();
                }
            } else {
                thread::yield_now();
            }
        }
    }

    /// Under the queue lock: takes `mode` if free, else queues `waiter`.
    /// Returns whether it took the lock.
    fn take_or_queue(&self, mode: Mode, waiter: &Arc<Waiter>, counted: &mut bool) -> bool {
        let mut q = self.queue.lock();
        self.state.fetch_or(PARKED, Ordering::AcqRel);
        if self.is_writer(mode) && !*counted {
            self.writers_waiting.fetch_add(1, Ordering::AcqRel);
            *counted = true;
        }
        if self.try_take(mode) {
            if q.is_empty() {
                self.state.fetch_and(!PARKED, Ordering::AcqRel);
            }
            drop(q);
            self.uncount(counted);
            return true;
        }
        waiter.woken.store(false, Ordering::Relaxed);
        q.push_back(waiter.clone());
        false
    }

    /// A queued writer stops counting (it got the lock or gave up). The
    /// last one lets readers held back by it go.
    fn uncount(&self, counted: &mut bool) {
        if std::mem::take(counted) && self.writers_waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.wake(true);
        }
    }

    /// A waiter gives up. If it was woken meanwhile, it passes the wake-up
    /// on, so no release is lost; if it was handed the lock meanwhile, it
    /// keeps it and returns `true`.
    fn leave(&self, waiter: &Arc<Waiter>, counted: &mut bool) -> bool {
        let mut q = self.queue.lock();
        let was_queued = match q.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        };
        if q.is_empty() {
            self.state.fetch_and(!PARKED, Ordering::AcqRel);
        }
        drop(q);
        self.uncount(counted);
        if !was_queued && waiter.woken.load(Ordering::Acquire) {
            if waiter.granted.load(Ordering::Relaxed) {
                return true;
            }
            self.wake(false);
        }
        false
    }

    /// Wakes one waiter, or all of them (`all`, or once shared mode was
    /// used). Clears [`PARKED`] when the queue empties.
    #[cold]
    fn wake(&self, all: bool) {
        let mut woken = Vec::new();
        {
            let mut q = self.queue.lock();
            // Read under the queue lock: every queued reader set `mixed`
            // before it took this lock to queue, so this sees it. Read
            // before the lock, a relaxed load may miss it on a weakly
            // ordered CPU; one reader is woken, queues again behind the
            // writer it must not pass, and the writer is never woken.
            let all = all || self.mixed.load(Ordering::Relaxed);
            if !all {
                // The common handover: one waiter, no list to allocate.
                let w = q.pop_front();
                if let Some(w) = &w {
                    // Marked under the queue lock, as below.
                    w.woken.store(true, Ordering::Release);
                }
                if q.is_empty() {
                    self.state.fetch_and(!PARKED, Ordering::AcqRel);
                }
                drop(q);
                if let Some(w) = w {
                    w.waker.lock().wake_by_ref();
                }
                return;
            }
            while let Some(w) = q.pop_front() {
                // Marked under the queue lock, so that a waiter giving up
                // (`leave`) sees either "still queued" or "woken", never
                // neither, and passes a wake-up on instead of losing it.
                w.woken.store(true, Ordering::Release);
                woken.push(w);
                if !all {
                    break;
                }
            }
            if q.is_empty() {
                self.state.fetch_and(!PARKED, Ordering::AcqRel);
            }
        }
        for w in woken {
            w.waker.lock().wake_by_ref();
        }
    }

    /// Waits for `mode`, blocking this thread, until `deadline` if one is
    /// given. Returns whether it was taken (perhaps handed over by its
    /// holder, see [`RawLock::handoff`]).
    ///
    /// `spin`: the holder is likely to hand the lock over soon (a lock file
    /// passed from one thread to the next): queue at once, so as to be in
    /// line when it releases, and spin a little before parking, so that the
    /// handoff costs no futex wake. Otherwise try a few times, then queue
    /// and park.
    pub(crate) fn lock_until(&self, mode: Mode, deadline: Option<Instant>, spin: bool) -> bool {
        if !spin && self.spin_take(mode) {
            return true;
        }
        let waiter = Waiter::new(thread_waker(), self.is_writer(mode));
        let mut counted = false;
        loop {
            if self.take_or_queue(mode, &waiter, &mut counted) {
                return true;
            }
            if spin {
                spin_until(&waiter.woken);
            }
            while !waiter.woken.load(Ordering::Acquire) {
                match deadline {
                    None => thread::park(),
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            return self.leave(&waiter, &mut counted) || self.try_take(mode);
                        }
                        thread::park_timeout(d - now);
                    }
                }
            }
            if waiter.granted.load(Ordering::Relaxed) {
                // Handed over by the holder: ours already.
                self.uncount(&mut counted);
                return true;
            }
            // Woken: try again (someone may have barged in first).
            if self.spin_take(mode) {
                self.uncount(&mut counted);
                return true;
            }
        }
    }

    /// A future that takes `mode`, or gives up at `deadline`. It may be
    /// handed the lock while queued (see [`RawLock::handoff`]).
    pub(crate) fn lock_async(&self, mode: Mode, deadline: Option<Instant>) -> LockAsync<'_> {
        LockAsync {
            lock: self,
            mode,
            waiter: None,
            counted: false,
            done: false,
            sleep: deadline.map(Sleep::new),
        }
    }

    /// Releases `mode` and, if anyone is queued, wakes whoever can use it.
    ///
    /// # Safety
    /// The caller must hold `mode` (have taken it and not released it).
    #[inline(always)]
    pub(crate) unsafe fn unlock(&self, mode: Mode) {
        if self.is_writer(mode)
            && self
                .state
                .compare_exchange(WRITER, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
        self.unlock_slow(mode);
    }

    /// Hands the writer's mode to the first queued waiter if that one
    /// waits for the writer's mode, a thread or a task: the lock never
    /// becomes free, so nobody barges in, and the waiter wakes holding it.
    /// Returns whether it did; if not, the caller still holds the lock.
    ///
    /// Used where a holder passes something on with the lock (a locked
    /// file), and as the "fair unlock" a barging lock needs now and then,
    /// or one thread can keep a lock from another indefinitely.
    ///
    /// # Safety
    /// The caller must hold the writer's mode.
    #[cold]
    pub(crate) unsafe fn handoff(&self) -> bool {
        debug_assert_eq!(self.cap, WRITER);
        let mut q = self.queue.lock();
        if !q.front().is_some_and(|w| w.writer) {
            return false;
        }
        let w = q.pop_front().unwrap_or_else(|| unreachable!());
        // `granted` before `woken` (release): a waiter that sees itself
        // woken sees the grant, and everything the holder wrote before.
        w.granted.store(true, Ordering::Relaxed);
        w.woken.store(true, Ordering::Release);
        if q.is_empty() {
            self.state.fetch_and(!PARKED, Ordering::AcqRel);
        }
        drop(q);
        w.waker.lock().wake_by_ref();
        true
    }

    #[cold]
    #[inline(never)]
    fn unlock_slow(&self, mode: Mode) {
        let before = self
            .state
            .fetch_sub(units(self.cap, mode), Ordering::Release);
        if before & PARKED != 0 {
            self.wake(false);
        }
    }

    /// Whether anyone is queued, for introspection.
    pub(crate) fn has_waiters(&self) -> bool {
        self.state.load(Ordering::Relaxed) & PARKED != 0
    }

    /// Holders right now (a writer counts as one), for introspection.
    pub(crate) fn holders(&self) -> usize {
        let used = self.state.load(Ordering::Relaxed) & !PARKED;
        if used >= WRITER { 1 } else { used }
    }
}

/// Future returned by [`RawLock::lock_async`]: `true` once taken, `false`
/// if the deadline passed first. Dropping it before it completes leaves the
/// lock untouched (and passes on a wake-up it received).
pub(crate) struct LockAsync<'a> {
    lock: &'a RawLock,
    mode: Mode,
    waiter: Option<Arc<Waiter>>,
    counted: bool,
    done: bool,
    sleep: Option<Sleep>,
}

impl Future for LockAsync<'_> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        let lock = this.lock;
        loop {
            let waiter = match &this.waiter {
                None => {
                    if lock.try_take(this.mode) {
                        this.done = true;
                        return Poll::Ready(true);
                    }
                    &*this
                        .waiter
                        .insert(Waiter::new(cx.waker().clone(), lock.is_writer(this.mode)))
                }
                Some(w) if w.woken.load(Ordering::Acquire) => {
                    if w.granted.load(Ordering::Relaxed) || lock.try_take(this.mode) {
                        lock.uncount(&mut this.counted);
                        this.done = true;
                        return Poll::Ready(true);
                    }
                    w
                }
                Some(w) => {
                    // Still queued: refresh the waker, then check the deadline.
                    {
                        let mut slot = w.waker.lock();
                        if !slot.will_wake(cx.waker()) {
                            *slot = cx.waker().clone();
                        }
                    }
                    if w.woken.load(Ordering::Acquire) {
                        continue;
                    }
                    if let Some(sleep) = &mut this.sleep
                        && sleep.poll_expired(cx)
                    {
                        let w = w.clone();
                        // Handed the lock meanwhile: it is ours after all.
                        let got = lock.leave(&w, &mut this.counted);
                        this.done = true;
                        return Poll::Ready(got);
                    }
                    return Poll::Pending;
                }
            };
            let waiter = waiter.clone();
            if lock.take_or_queue(this.mode, &waiter, &mut this.counted) {
                this.done = true;
                return Poll::Ready(true);
            }
            // Queued; loop once more to register the deadline.
        }
    }
}

impl LockAsync<'_> {
    /// Gives up waiting. Returns `true` if the lock was handed to this
    /// waiter meanwhile: the caller holds it and must release it (with
    /// whatever came with it). A finished or never-polled future holds
    /// nothing here.
    pub(crate) fn cancel(&mut self) -> bool {
        if std::mem::replace(&mut self.done, true) {
            return false;
        }
        match self.waiter.take() {
            Some(w) => self.lock.leave(&w, &mut self.counted),
            None => false,
        }
    }
}

impl Drop for LockAsync<'_> {
    /// Gives up as [`LockAsync::cancel`] does; a lock handed over meanwhile
    /// is released. Callers that hand things over with the lock cancel
    /// first, to release those too.
    fn drop(&mut self) {
        if self.cancel() {
            // SAFETY: `cancel` returned true: the lock is held in `mode`.
            unsafe { self.lock.unlock(self.mode) };
        }
    }
}

/// Spins until `flag` is set (a queued waiter woken or granted), at most
/// [`QUEUED_SPIN`]; yields the CPU now and then, since the holder may need
/// it on a machine with fewer cores than threads.
#[cfg(not(lockutils_loom))]
pub(super) fn spin_until(flag: &AtomicBool) {
    let until = Instant::now() + QUEUED_SPIN;
    let mut round = 0u32;
    while !flag.load(Ordering::Acquire) {
        round += 1;
        if round.is_multiple_of(SPINS_PER_YIELD) {
            if Instant::now() >= until {
                return;
            }
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Models do not spin: it changes no state they check.
#[cfg(lockutils_loom)]
pub(super) fn spin_until(_: &AtomicBool) {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn excludes_threads_and_counts_exactly() {
        struct Shared {
            m: RawLock,
            inside: AtomicUsize,
            n: std::cell::UnsafeCell<u64>,
        }
        // SAFETY: `n` is only touched while `m` is held, which excludes other threads.
        unsafe impl Sync for Shared {}
        let s = Arc::new(Shared {
            m: RawLock::new(WRITER),
            inside: AtomicUsize::new(0),
            n: std::cell::UnsafeCell::new(0),
        });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        assert!(s.m.lock_until(Mode::Exclusive, None, false));
                        assert_eq!(s.inside.fetch_add(1, Ordering::SeqCst), 0);
                        // SAFETY: `m` is held, so no other thread touches `n`.
                        unsafe { *s.n.get() += 1 };
                        s.inside.fetch_sub(1, Ordering::SeqCst);
                        // SAFETY: this thread holds the lock in that mode (taken just above).
                        unsafe { s.m.unlock(Mode::Exclusive) };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: every thread was joined: nobody else touches `n`.
        assert_eq!(unsafe { *s.n.get() }, 80_000);
        assert_eq!(s.m.holders(), 0);
    }

    #[test]
    fn readers_share_writers_exclude_and_waiting_writer_stops_new_readers() {
        let l = RawLock::new(WRITER);
        assert!(l.try_lock(Mode::Shared));
        assert!(l.try_lock(Mode::Shared));
        assert!(!l.try_lock(Mode::Exclusive));
        assert_eq!(l.holders(), 2);
        l.writers_waiting.fetch_add(1, Ordering::SeqCst);
        assert!(
            !l.try_lock(Mode::Shared),
            "reader barged past a waiting writer"
        );
        l.writers_waiting.fetch_sub(1, Ordering::SeqCst);
        assert!(l.try_lock(Mode::Shared));
        for _ in 0..3 {
            // SAFETY: this thread holds the lock in that mode (taken just above).
            unsafe { l.unlock(Mode::Shared) };
        }
        assert!(l.try_lock(Mode::Exclusive));
        assert!(!l.try_lock(Mode::Shared));
        // SAFETY: this thread holds the lock in that mode (taken just above).
        unsafe { l.unlock(Mode::Exclusive) };
    }

    #[test]
    fn a_handed_over_lock_is_never_free_for_a_newcomer() {
        let l = Arc::new(RawLock::new(WRITER));
        assert!(l.try_lock(Mode::Exclusive));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (l2, done) = (l.clone(), std::sync::mpsc::channel::<()>());
        let waiter = std::thread::spawn(move || {
            assert!(l2.lock_until(Mode::Exclusive, None, false));
            // Holds until the newcomer below has tried.
            rx.recv().unwrap();
            // SAFETY: taken just above.
            unsafe { l2.unlock(Mode::Exclusive) };
            done.0.send(()).unwrap();
        });
        while !l.has_waiters() {
            std::thread::yield_now();
        }
        // SAFETY: taken at the start.
        let handed = unsafe { l.handoff() };
        assert!(handed, "a queued writer was not handed the lock");
        assert!(
            !l.try_lock(Mode::Exclusive),
            "a newcomer took a lock that was handed to a queued thread"
        );
        tx.send(()).unwrap();
        done.1.recv().unwrap();
        waiter.join().unwrap();
        assert!(l.try_lock(Mode::Exclusive));
        // SAFETY: taken just above.
        assert!(!unsafe { l.handoff() }, "handed to nobody");
        // SAFETY: still ours (nobody was queued).
        unsafe { l.unlock(Mode::Exclusive) };
        assert_eq!(l.state.load(Ordering::SeqCst), 0);
    }

    /// A task queued for the writer's mode is handed the lock like a
    /// thread; dropped before it polls again, it gives the lock back.
    #[test]
    fn a_task_handed_the_lock_holds_it_until_polled_or_dropped() {
        let l = RawLock::new(WRITER);
        assert!(l.try_lock(Mode::Exclusive));
        let mut fut = Box::pin(l.lock_async(Mode::Exclusive, None));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        // SAFETY: taken at the start.
        assert!(unsafe { l.handoff() }, "the queued task was passed over");
        assert!(
            !l.try_lock(Mode::Exclusive),
            "free while handed to the task"
        );
        assert_eq!(l.holders(), 1);
        assert!(
            fut.as_mut().cancel(),
            "the task did not learn it holds the lock"
        );
        // SAFETY: `cancel` said the lock is held.
        unsafe { l.unlock(Mode::Exclusive) };
        drop(fut);
        assert!(l.try_lock(Mode::Exclusive));
        // SAFETY: taken just above.
        unsafe { l.unlock(Mode::Exclusive) };
        // Dropped without `cancel`: the drop releases what was handed over.
        assert!(l.try_lock(Mode::Exclusive));
        let mut fut = Box::pin(l.lock_async(Mode::Exclusive, None));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        // SAFETY: taken just above.
        assert!(unsafe { l.handoff() });
        drop(fut);
        assert_eq!(l.state.load(Ordering::SeqCst), 0, "left taken or parked");
    }

    #[test]
    fn permits_count() {
        let l = RawLock::new(3);
        for _ in 0..3 {
            assert!(l.try_lock(Mode::Exclusive));
        }
        assert!(!l.try_lock(Mode::Exclusive));
        assert_eq!(l.holders(), 3);
        // SAFETY: this thread holds the lock in that mode (taken just above).
        unsafe { l.unlock(Mode::Exclusive) };
        assert!(l.lock_until(Mode::Exclusive, Some(Instant::now()), false));
    }

    #[test]
    fn queued_writer_blocks_new_readers_and_timeout_lets_them_in() {
        let l = Arc::new(RawLock::new(WRITER));
        assert!(l.try_lock(Mode::Shared));
        let l2 = l.clone();
        let w = std::thread::spawn(move || {
            l2.lock_until(
                Mode::Exclusive,
                Some(Instant::now() + Duration::from_millis(100)),
                false,
            )
        });
        while l.writers_waiting.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert!(!l.try_lock(Mode::Shared), "a reader passed a queued writer");
        // A reader that waits is let in when the writer gives up.
        assert!(l.lock_until(
            Mode::Shared,
            Some(Instant::now() + Duration::from_secs(10)),
            false
        ));
        assert!(!w.join().unwrap());
        assert_eq!(l.holders(), 2);
        // SAFETY: this thread holds the lock in that mode (taken just above).
        unsafe { l.unlock(Mode::Shared) };
        // SAFETY: this thread holds the lock in that mode (taken just above).
        unsafe { l.unlock(Mode::Shared) };
        assert_eq!(l.state.load(Ordering::SeqCst), 0, "PARKED left set");
    }

    #[test]
    fn many_waiters_mixed_threads_and_tasks_all_get_through() {
        let l = Arc::new(RawLock::new(WRITER));
        let inside = Arc::new(AtomicUsize::new(0));
        let mut hs = Vec::new();
        for t in 0..6 {
            let (l, inside) = (l.clone(), inside.clone());
            hs.push(std::thread::spawn(move || {
                for _ in 0..2_000 {
                    if t % 2 == 0 {
                        assert!(l.lock_until(Mode::Exclusive, None, false));
                    } else {
                        assert!(block_on(l.lock_async(Mode::Exclusive, None)));
                    }
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    // SAFETY: this thread holds the lock in that mode (taken just above).
                    unsafe { l.unlock(Mode::Exclusive) };
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(l.state.load(Ordering::SeqCst), 0);
        assert!(l.queue.lock().is_empty());
    }

    #[test]
    fn waiters_giving_up_never_lose_a_wake_up() {
        // Threads keep timing out while others release: a wake-up that went
        // to a waiter as it gave up must be passed on, or the untimed waits
        // at the end would sleep forever with the lock free.
        let l = Arc::new(RawLock::new(WRITER));
        let timeouts = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for t in 0..4u64 {
            let (l, done_tx, timeouts) = (l.clone(), done_tx.clone(), timeouts.clone());
            std::thread::spawn(move || {
                for i in 0..3_000u64 {
                    let d = Instant::now() + Duration::from_micros((i * 7 + t * 13) % 50);
                    if l.lock_until(Mode::Exclusive, Some(d), false) {
                        let until = Instant::now() + Duration::from_micros(20);
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                        // SAFETY: this thread holds the lock in that mode (taken just above).
                        unsafe { l.unlock(Mode::Exclusive) };
                    } else {
                        timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
                assert!(l.lock_until(Mode::Exclusive, None, false));
                // SAFETY: this thread holds the lock in that mode (taken just above).
                unsafe { l.unlock(Mode::Exclusive) };
                done_tx.send(()).unwrap();
            });
        }
        for _ in 0..4 {
            done_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("a waiter slept on with the lock free (lost wake-up)");
        }
        assert_eq!(l.state.load(Ordering::SeqCst), 0);
        assert!(
            timeouts.load(Ordering::Relaxed) > 0,
            "no waiter ever gave up: test too easy"
        );
    }

    #[test]
    fn deadline_expires_then_lock_is_free_again() {
        let m = RawLock::new(WRITER);
        assert!(m.try_lock(Mode::Exclusive));
        let t0 = Instant::now();
        assert!(!m.lock_until(Mode::Exclusive, Some(t0 + Duration::from_millis(30)), false));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        // SAFETY: this thread holds the lock in that mode (taken just above).
        unsafe { m.unlock(Mode::Exclusive) };
        assert!(m.lock_until(Mode::Exclusive, Some(Instant::now()), false));
        // SAFETY: this thread holds the lock in that mode (taken just above).
        unsafe { m.unlock(Mode::Exclusive) };
    }

    #[test]
    fn async_waiter_is_woken_by_thread_unlock() {
        let m = Arc::new(RawLock::new(WRITER));
        assert!(m.try_lock(Mode::Exclusive));
        let (tx, rx) = std::sync::mpsc::channel();
        let m2 = m.clone();
        let waiter = std::thread::spawn(move || {
            let fut = m2.lock_async(Mode::Exclusive, None);
            tx.send(()).unwrap();
            assert!(block_on(fut));
            // SAFETY: this thread holds the lock in that mode (taken just above).
            unsafe { m2.unlock(Mode::Exclusive) };
        });
        rx.recv().unwrap();
        // SAFETY: this thread holds the lock in that mode (taken just above).
        unsafe { m.unlock(Mode::Exclusive) };
        waiter.join().unwrap();
        assert!(m.try_lock(Mode::Exclusive));
    }

    #[test]
    fn async_deadline() {
        let m = RawLock::new(WRITER);
        assert!(m.try_lock(Mode::Exclusive));
        let t0 = Instant::now();
        let fut = m.lock_async(Mode::Exclusive, Some(t0 + Duration::from_millis(20)));
        assert!(!block_on(fut));
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    /// Minimal executor for the tests: parks the thread between polls.
    pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
        use std::task::{Wake, Waker};
        struct Unparker(std::thread::Thread);
        impl Wake for Unparker {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unparker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
}
