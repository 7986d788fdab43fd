//! Chaos tests: random acquisitions of every kind of lock for a while,
//! and processes killed with SIGKILL at random, with the invariants checked
//! from inside the critical sections.
//!
//! * One process: threads and tokio tasks take plain, fair, reader/writer,
//!   counted and external locks at random (blocking, `blocking(false)`,
//!   timed, async awaited, async polled a few times and dropped). Inside,
//!   counters check: one writer, readers only without a writer, at most N
//!   holders of N permits. Afterwards no thread, descriptor or registry
//!   entry is left over. It runs in a child process of its own, so that
//!   those counts are the test's alone.
//! * Across processes: worker processes (two threads each) take one
//!   external reader/writer lock and one external semaphore, and mark "I
//!   hold it" in shared memory; the parent kills workers at random, while
//!   they hold or wait, and starts new ones. No two live holders ever
//!   conflict, the survivors finish, and the locks are free at the end.
//!
//! `LOCKUTILS_CHAOS_SECS` sets how long each test runs (default 30 s; both
//! run at once), `LOCKUTILS_CHAOS_SEED` replays a run (each run prints the
//! seed it used).
#![cfg(unix)]

mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use lockutils::{LockError, LockGuard};
use support::shm::Shm;
use support::{Child, param, param_as, report, running_as};

const SECS_ENV: &str = "LOCKUTILS_CHAOS_SECS";
const SEED_ENV: &str = "LOCKUTILS_CHAOS_SEED";

/// How long each chaos test runs.
fn chaos_time() -> Duration {
    let secs = match std::env::var(SECS_ENV) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{SECS_ENV}={v:?}: {e}")),
        Err(_) => 30,
    };
    Duration::from_secs(secs)
}

/// The seed of this run: `LOCKUTILS_CHAOS_SEED`, or the clock's.
fn chaos_seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{SEED_ENV}={v:?}: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("{test}: seed {seed} (replay with {SEED_ENV}={seed})");
    seed
}

/// splitmix64: small, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn micros(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.below(max + 1))
    }
}

// ---------------------------------------------------------------------------
// One process.

/// One lock of the in-process chaos and what its holders must respect.
struct Target {
    name: &'static str,
    fair: bool,
    /// Reader/writer: acquisitions pick shared or exclusive at random.
    rw: bool,
    permits: Option<u32>,
    external: bool,
}

const TARGETS: [Target; 8] = [
    Target::new("chaos-plain"),
    Target {
        fair: true,
        ..Target::new("chaos-fair")
    },
    Target {
        rw: true,
        ..Target::new("chaos-rw")
    },
    Target {
        fair: true,
        rw: true,
        ..Target::new("chaos-fair-rw")
    },
    Target {
        permits: Some(3),
        ..Target::new("chaos-counted")
    },
    Target {
        external: true,
        ..Target::new("chaos-ext")
    },
    Target {
        external: true,
        rw: true,
        ..Target::new("chaos-ext-rw")
    },
    Target {
        external: true,
        permits: Some(2),
        ..Target::new("chaos-ext-counted")
    },
];

impl Target {
    const fn new(name: &'static str) -> Target {
        Target {
            name,
            fair: false,
            rw: false,
            permits: None,
            external: false,
        }
    }

    fn lock<'a>(&'a self, dir: &'a Path, shared: bool) -> lockutils::Lock<'a> {
        let mut lock = lockutils::lock(self.name);
        if self.fair {
            lock = lock.fair();
        }
        if let Some(n) = self.permits {
            lock = lock.permits(n);
        }
        if self.external {
            lock = lock.external().lock_path(dir);
        }
        if shared {
            lock = lock.shared();
        }
        lock
    }
}

/// Who is inside one target's critical section, as its holders count
/// themselves.
struct Inside {
    /// Exclusive holders (or a semaphore's holders).
    writers: AtomicUsize,
    readers: AtomicUsize,
}

impl Inside {
    const fn new() -> Inside {
        Inside {
            writers: AtomicUsize::new(0),
            readers: AtomicUsize::new(0),
        }
    }

    /// Counts this holder in, checking the target's invariant.
    fn enter(&self, t: &Target, shared: bool) {
        if shared {
            self.readers.fetch_add(1, SeqCst);
            let w = self.writers.load(SeqCst);
            assert_eq!(w, 0, "{}: a reader inside with a writer", t.name);
            return;
        }
        let w = self.writers.fetch_add(1, SeqCst) + 1;
        match t.permits {
            Some(n) => assert!(w <= n as usize, "{}: {w} holders of {n} permits", t.name),
            None => {
                assert_eq!(w, 1, "{}: {w} writers inside", t.name);
                let r = self.readers.load(SeqCst);
                assert_eq!(r, 0, "{}: a writer inside with {r} readers", t.name);
            }
        }
    }

    fn leave(&self, shared: bool) {
        if shared {
            self.readers.fetch_sub(1, SeqCst);
        } else {
            self.writers.fetch_sub(1, SeqCst);
        }
    }
}

static INSIDE: [Inside; TARGETS.len()] = [const { Inside::new() }; TARGETS.len()];

/// How acquisitions were made, and how they ended.
#[derive(Clone, Copy, Debug)]
enum Way {
    Blocking,
    Try,
    Timed,
    /// An async acquisition polled a few times, then dropped unless ready.
    AsyncDropped,
    /// An async acquisition with a timeout, run to its end.
    AsyncTimed,
    /// An async acquisition awaited without a timeout (tokio tasks).
    AsyncAwaited,
    /// `blocking(false)` in async code (tokio tasks).
    AsyncTry,
}

const WAYS: usize = 7;

#[derive(Default)]
struct Stats {
    got: [AtomicU64; WAYS],
    per_target: [AtomicU64; TARGETS.len()],
    would_block: AtomicU64,
    timed_out: AtomicU64,
    dropped: AtomicU64,
}

impl Stats {
    /// Records an outcome; any error but "busy" fails the test.
    fn count<T>(&self, way: Way, t: &Target, r: &Result<T, LockError>) {
        match r {
            Ok(_) => {
                self.got[way as usize].fetch_add(1, SeqCst);
                let i = TARGETS.iter().position(|x| x.name == t.name).unwrap();
                self.per_target[i].fetch_add(1, SeqCst);
            }
            Err(LockError::WouldBlock { .. }) => {
                self.would_block.fetch_add(1, SeqCst);
            }
            Err(LockError::Timeout { .. }) => {
                self.timed_out.fetch_add(1, SeqCst);
            }
            Err(e) => panic!("{} by {way:?}: {e}", t.name),
        }
    }
}

/// Polls the inner future at most `polls` more times, then gives up:
/// `None`, and the inner future is dropped with this one.
struct GiveUp<F> {
    fut: Pin<Box<F>>,
    polls: u64,
}

impl<F: Future> Future for GiveUp<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if self.polls == 0 {
            return Poll::Ready(None);
        }
        self.polls -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Runs `fut` on this thread, parking between polls.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            return v;
        }
        std::thread::park();
    }
}

/// Polls `fut` with the no-op waker until it is ready (it must make its
/// own progress, as [`GiveUp`] does).
fn spin_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// Stays in a critical section for a random while: mostly a moment,
/// sometimes a few milliseconds (so that waits time out and queues form).
fn linger(rng: &mut Rng) {
    match rng.below(100) {
        0..70 => {
            for _ in 0..rng.below(200) {
                std::hint::spin_loop();
            }
        }
        70..95 => std::thread::yield_now(),
        _ => std::thread::sleep(rng.micros(3000)),
    }
}

/// One random acquisition by a plain thread.
fn thread_step(rng: &mut Rng, dir: &Path, stats: &Stats) {
    let i = rng.below(TARGETS.len() as u64) as usize;
    let t = &TARGETS[i];
    let shared = t.rw && rng.below(2) == 0;
    let lock = t.lock(dir, shared);
    let (way, r) = match rng.below(5) {
        0 => (Way::Blocking, lock.acquire().map(Held::Sync)),
        1 => (Way::Try, lock.blocking(false).acquire().map(Held::Sync)),
        2 => {
            let timeout = rng.micros(3000);
            (Way::Timed, lock.timeout(timeout).acquire().map(Held::Sync))
        }
        3 => {
            let polls = rng.below(4);
            let fut = GiveUp {
                fut: Box::pin(lock.acquire_async()),
                polls,
            };
            match spin_on(fut) {
                Some(r) => (Way::AsyncDropped, r.map(Held::Async)),
                None => {
                    stats.dropped.fetch_add(1, SeqCst);
                    return;
                }
            }
        }
        _ => {
            let timeout = rng.micros(3000);
            let r = block_on(lock.timeout(timeout).acquire_async());
            (Way::AsyncTimed, r.map(Held::Async))
        }
    };
    stats.count(way, t, &r);
    if let Ok(guard) = r {
        INSIDE[i].enter(t, shared);
        linger(rng);
        INSIDE[i].leave(shared);
        drop(guard);
    }
}

enum Held {
    Sync(#[allow(dead_code)] LockGuard),
    Async(#[allow(dead_code)] lockutils::AsyncLockGuard),
}

/// One random acquisition by a tokio task.
async fn task_step(rng: &mut Rng, dir: &Path, stats: &Stats) {
    let i = rng.below(TARGETS.len() as u64) as usize;
    let t = &TARGETS[i];
    let shared = t.rw && rng.below(2) == 0;
    let lock = t.lock(dir, shared);
    let (way, r) = match rng.below(4) {
        0 => (Way::AsyncAwaited, lock.acquire_async().await),
        1 => (Way::AsyncTry, lock.blocking(false).acquire_async().await),
        2 => {
            let timeout = rng.micros(3000);
            (Way::AsyncTimed, lock.timeout(timeout).acquire_async().await)
        }
        _ => {
            let polls = rng.below(4);
            let fut = GiveUp {
                fut: Box::pin(lock.acquire_async()),
                polls,
            };
            match fut.await {
                Some(r) => (Way::AsyncDropped, r),
                None => {
                    stats.dropped.fetch_add(1, SeqCst);
                    return;
                }
            }
        }
    };
    stats.count(way, t, &r);
    if let Ok(guard) = r {
        INSIDE[i].enter(t, shared);
        match rng.below(10) {
            0..6 => {}
            6..9 => tokio::task::yield_now().await,
            _ => tokio::time::sleep(rng.micros(2000)).await,
        }
        INSIDE[i].leave(shared);
        drop(guard);
    }
}

/// This process's threads, by name.
fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("list /proc/self/task")
        .filter_map(|e| {
            let path = e.ok()?.path().join("comm");
            // A thread that exited since the listing has no comm left.
            Some(std::fs::read_to_string(path).ok()?.trim().to_owned())
        })
        .collect();
    names.sort();
    names
}

/// What must come back to where it started: threads, descriptors and
/// registry entries.
#[derive(Debug, PartialEq)]
struct Footprint {
    threads: Vec<String>,
    fds: usize,
    entries: usize,
}

fn footprint() -> Footprint {
    Footprint {
        threads: threads(),
        fds: support::open_fds(),
        entries: lockutils::__private_v0_1::live_entries(),
    }
}

#[test]
fn one_process_random_acquisitions_keep_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let seed = chaos_seed("one process");
    let mut c = support::child("chaos_one_process")
        .param("DIR", dir.path())
        .param("SECS", chaos_time().as_secs().to_string())
        .param("SEED", seed.to_string())
        .spawn();
    loop {
        match c.next_report().as_str() {
            "tick" => continue,
            "done" => break,
            stats if stats.starts_with("stats ") => eprintln!("one process: {stats}"),
            other => c.fail(&format!("unexpected report {other:?}")),
        }
    }
    c.finish();
}

/// Child of [`one_process_random_acquisitions_keep_every_invariant`].
#[test]
fn chaos_one_process() {
    if !running_as("chaos_one_process") {
        return;
    }
    const THREADS: u64 = 5;
    const TASKS: u64 = 6;
    let dir = PathBuf::from(param("DIR"));
    let seed: u64 = param_as("SEED");
    let secs: u64 = param_as("SECS");
    // The timer thread starts on the first async wait with a deadline and
    // stays for the life of the process: start it before counting.
    {
        let held = lockutils::lock("chaos-warm-up").acquire().unwrap();
        let waited = std::thread::spawn(|| {
            block_on(
                lockutils::lock("chaos-warm-up")
                    .timeout(Duration::from_millis(1))
                    .acquire_async(),
            )
            .map(drop)
        })
        .join()
        .unwrap();
        assert!(
            matches!(waited, Err(LockError::Timeout { .. })),
            "{waited:?}"
        );
        drop(held);
    }
    let before = footprint();
    let end = Instant::now() + Duration::from_secs(secs);
    let stats = Arc::new(Stats::default());

    let threads: Vec<_> = (0..THREADS)
        .map(|n| {
            let (dir, stats) = (dir.clone(), stats.clone());
            std::thread::Builder::new()
                .name(format!("chaos-{n}"))
                .spawn(move || {
                    let mut rng = Rng::new(seed, n);
                    while Instant::now() < end {
                        thread_step(&mut rng, &dir, &stats);
                    }
                })
                .unwrap()
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|n| {
            let (dir, stats) = (dir.clone(), stats.clone());
            rt.spawn(async move {
                let mut rng = Rng::new(seed, THREADS + n);
                while Instant::now() < end {
                    task_step(&mut rng, &dir, &stats).await;
                }
            })
        })
        .collect();
    // A sign of life for the parent now and then (its patience is finite).
    while Instant::now() < end {
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(10)),
        );
        report("tick");
    }
    for t in threads {
        t.join().expect("a thread saw a broken invariant");
    }
    rt.block_on(async {
        for t in tasks {
            t.await.expect("a task saw a broken invariant");
        }
    });
    drop(rt);

    // Every lock is free: another thread takes each at once, exclusively
    // (every permit of a semaphore).
    std::thread::spawn(move || {
        for t in &TARGETS {
            let lock = t.lock(&dir, false).blocking(false);
            let guards: Vec<_> = (0..t.permits.unwrap_or(1))
                .map(|_| {
                    lock.acquire()
                        .unwrap_or_else(|e| panic!("{} left taken: {e}", t.name))
                })
                .collect();
            drop(guards);
        }
    })
    .join()
    .unwrap();

    // Nothing left over. Threads that were joined may still be listed for
    // a moment (the kernel clears them after waking the joiner).
    let patience = Instant::now() + Duration::from_secs(30);
    let mut after = footprint();
    while after != before && Instant::now() < patience {
        std::thread::yield_now();
        after = footprint();
    }
    assert_eq!(
        after, before,
        "threads, descriptors or registry entries left over"
    );

    let got: Vec<u64> = stats.got.iter().map(|n| n.load(SeqCst)).collect();
    let per_target: Vec<u64> = stats.per_target.iter().map(|n| n.load(SeqCst)).collect();
    let (busy, timed_out, dropped) = (
        stats.would_block.load(SeqCst),
        stats.timed_out.load(SeqCst),
        stats.dropped.load(SeqCst),
    );
    report(format!(
        "stats got by way {got:?}, by lock {per_target:?}; would block {busy}, \
         timed out {timed_out}, async dropped {dropped}"
    ));
    // The run did what it says: every way took a lock, every lock was
    // taken, and contention made waits fail and futures be dropped.
    assert!(
        got.iter().all(|&n| n > 0),
        "a way never took a lock: {got:?}"
    );
    assert!(
        per_target.iter().all(|&n| n > 0),
        "a lock never taken: {per_target:?}"
    );
    assert!(busy > 0 && timed_out > 0 && dropped > 0, "no contention");
    report("done");
}

// ---------------------------------------------------------------------------
// Across processes.

/// Workers started in all (killed ones are replaced while slots remain).
const WORKERS: usize = 10;
/// Workers alive at once.
const LIVE: usize = 4;
/// Threads per worker.
const WORKER_THREADS: usize = 2;
const SLOTS: usize = WORKERS * WORKER_THREADS;
const RW_NAME: &str = "chaos-x-rw";
const SEM_NAME: &str = "chaos-x-sem";
const SEM_PERMITS: usize = 2;

/// The shared memory's layout (64 words).
mod word {
    use super::{SLOTS, WORKERS};
    /// Non-zero: workers finish their round and stop.
    pub const STOP: usize = 0;
    /// Conflicts seen by any worker.
    pub const VIOLATIONS: usize = 1;
    /// Acquisitions that failed otherwise than busy or timed out (the
    /// worker may be killed before its panic is seen).
    pub const ERRORS: usize = 2;
    /// Per worker thread: 0, or what it holds of the reader/writer lock
    /// (1 shared, 2 exclusive).
    pub const RW: usize = 3;
    /// Per worker thread: 1 while it holds a permit.
    pub const SEM: usize = RW + SLOTS;
    /// Per worker: 1 once the parent decided to kill it.
    pub const KILLED: usize = SEM + SLOTS;
    /// Per worker: rounds done.
    pub const ROUNDS: usize = KILLED + WORKERS;
    pub const END: usize = ROUNDS + WORKERS;
}

const _: () = assert!(word::END <= support::shm::SHM_WORDS);

fn live(shm: &Shm, slot: usize) -> bool {
    shm.word(word::KILLED + slot / WORKER_THREADS).load(SeqCst) == 0
}

/// In a worker: checks that no live thread's reader/writer mark conflicts
/// with this one's, which `slot` has just set.
fn check_rw_marks(shm: &Shm, slot: usize, conflict: impl Fn(u64) -> bool) {
    let others: Vec<(usize, u64)> = (0..SLOTS)
        .filter(|&s| s != slot && live(shm, s))
        .map(|s| (s, shm.word(word::RW + s).load(SeqCst)))
        .filter(|&(_, v)| conflict(v))
        .collect();
    if !others.is_empty() {
        shm.word(word::VIOLATIONS).fetch_add(1, SeqCst);
        let mine = shm.word(word::RW + slot).load(SeqCst);
        panic!("slot {slot} holds {mine} of the reader/writer lock together with {others:?}");
    }
}

/// One round of a worker thread: one random acquisition; while held, its
/// mark is set and checked against everyone else's.
fn worker_round(rng: &mut Rng, dir: &Path, shm: &Shm, slot: usize) {
    let sem = rng.below(3) == 0;
    let shared = !sem && rng.below(2) == 0;
    let mut lock = lockutils::lock(if sem { SEM_NAME } else { RW_NAME })
        .external()
        .lock_path(dir);
    if sem {
        lock = lock.permits(SEM_PERMITS as u32);
    } else if shared {
        lock = lock.shared();
    }
    let r = match rng.below(3) {
        0 => lock.acquire(),
        1 => lock.blocking(false).acquire(),
        _ => lock.timeout(rng.micros(20_000)).acquire(),
    };
    let guard = match r {
        Ok(g) => g,
        Err(LockError::WouldBlock { .. } | LockError::Timeout { .. }) => return,
        Err(e) => {
            shm.word(word::ERRORS).fetch_add(1, SeqCst);
            panic!("slot {slot}: {e}");
        }
    };
    let mark = if sem {
        shm.word(word::SEM + slot)
    } else {
        shm.word(word::RW + slot)
    };
    mark.store(if sem || !shared { 2 } else { 1 }, SeqCst);
    if sem {
        let holders = (0..SLOTS)
            .filter(|&s| live(shm, s) && shm.word(word::SEM + s).load(SeqCst) != 0)
            .count();
        if holders > SEM_PERMITS {
            shm.word(word::VIOLATIONS).fetch_add(1, SeqCst);
            panic!("sem: {holders} live holders of {SEM_PERMITS} permits");
        }
    } else if shared {
        check_rw_marks(shm, slot, |v| v == 2);
    } else {
        check_rw_marks(shm, slot, |v| v != 0);
    }
    // Hold for a while: the parent's kills land here often.
    std::thread::sleep(rng.micros(3000));
    mark.store(0, SeqCst);
    drop(guard);
}

/// Child of [`killed_workers_never_share_a_lock_and_leave_it_free`]:
/// `WORKER_THREADS` threads doing rounds (at least one each) until told to
/// stop; then reports `done`.
#[test]
fn chaos_worker() {
    if !running_as("chaos_worker") {
        return;
    }
    let dir = PathBuf::from(param("DIR"));
    let shm = Shm::from_parent();
    let worker: usize = param_as("WORKER");
    let seed: u64 = param_as("SEED");
    std::thread::scope(|s| {
        for t in 0..WORKER_THREADS {
            let (dir, shm) = (&dir, &shm);
            s.spawn(move || {
                let slot = worker * WORKER_THREADS + t;
                let mut rng = Rng::new(seed, slot as u64);
                // At least one round, however late it started.
                loop {
                    worker_round(&mut rng, dir, shm, slot);
                    shm.word(word::ROUNDS + worker).fetch_add(1, SeqCst);
                    if shm.word(word::STOP).load(SeqCst) != 0 {
                        break;
                    }
                }
            });
        }
    });
    report("done");
}

/// Whether worker `w` holds either lock now (one of its marks is set).
fn holds_something(shm: &Shm, w: usize) -> bool {
    (0..WORKER_THREADS).any(|t| {
        let slot = w * WORKER_THREADS + t;
        shm.word(word::RW + slot).load(SeqCst) != 0 || shm.word(word::SEM + slot).load(SeqCst) != 0
    })
}

#[test]
fn killed_workers_never_share_a_lock_and_leave_it_free() {
    let dir = tempfile::tempdir().unwrap();
    let seed = chaos_seed("across processes");
    let mut rng = Rng::new(seed, u64::MAX);
    let shm_path = dir.path().join("shm");
    let shm = Shm::create(&shm_path);
    let start = |w: usize| -> Child {
        support::child("chaos_worker")
            .param("DIR", dir.path())
            .param("SHM", &shm_path)
            .param("WORKER", w.to_string())
            .param("SEED", seed.to_string())
            .spawn()
    };
    let mut workers: Vec<Option<Child>> = (0..LIVE).map(|w| Some(start(w))).collect();
    let duration = chaos_time();
    let kills = WORKERS - LIVE;
    let end = Instant::now() + duration;
    let (mut killed_holding, mut killed_other) = (0, 0);
    for k in 0..kills {
        // Kills spread over the run, at random moments.
        let due = end - duration * (kills - k) as u32 / (kills + 1) as u32;
        let jitter = rng.micros(duration.as_micros() as u64 / (kills as u64 * 4));
        std::thread::sleep((due + jitter).saturating_duration_since(Instant::now()));
        let alive: Vec<usize> = (0..workers.len())
            .filter(|&w| workers[w].is_some())
            .collect();
        let victim = alive[rng.below(alive.len() as u64) as usize];
        // Half the time, while it holds a lock (if it gets one soon).
        if rng.below(2) == 0 {
            let patience = Instant::now() + Duration::from_secs(2);
            while !holds_something(&shm, victim) && Instant::now() < patience {
                std::thread::yield_now();
            }
        }
        shm.word(word::KILLED + victim).store(1, SeqCst);
        let holding = holds_something(&shm, victim);
        let mut child = workers[victim].take().unwrap();
        child.kill();
        if holding {
            killed_holding += 1;
        } else {
            killed_other += 1;
        }
        workers.push(Some(start(workers.len())));
    }
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    shm.word(word::STOP).store(1, SeqCst);
    let survivors: Vec<usize> = (0..workers.len())
        .filter(|&w| workers[w].is_some())
        .collect();
    for w in &survivors {
        let mut child = workers[*w].take().unwrap();
        child.expect("done");
        child.finish();
    }
    eprintln!(
        "across processes: {killed_holding} killed holding a lock, {killed_other} killed \
         waiting or between rounds; rounds per worker {:?}",
        (0..WORKERS)
            .map(|w| shm.word(word::ROUNDS + w).load(SeqCst))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        shm.word(word::VIOLATIONS).load(SeqCst),
        0,
        "conflicting holders"
    );
    assert_eq!(
        shm.word(word::ERRORS).load(SeqCst),
        0,
        "acquisitions failed"
    );
    for w in &survivors {
        assert!(
            shm.word(word::ROUNDS + w).load(SeqCst) > 0,
            "worker {w} never finished a round"
        );
    }
    assert!(
        killed_holding > 0,
        "no worker was killed while holding a lock"
    );
    // Nothing stays locked: another process takes the reader/writer lock
    // exclusively at once, and this one every permit.
    assert_eq!(support::try_in_child(dir.path(), "", RW_NAME), "ok");
    let sem = lockutils::lock(SEM_NAME)
        .external()
        .lock_path(dir.path())
        .permits(SEM_PERMITS as u32)
        .blocking(false);
    let permits: Vec<_> = (0..SEM_PERMITS)
        .map(|_| sem.acquire().expect("a permit left taken"))
        .collect();
    drop(permits);
}
