//! Inter-process benchmarks, each against the raw system call it wraps,
//! measured in the same run: `cargo bench --bench external` (method and
//! current figures in BENCHMARKS.md).
//!
//! 1. Uncontended external acquire+release against raw `F_OFD_SETLK` +
//!    `F_UNLCK` on an already-open descriptor (bar: ≤ 1.5×), with
//!    open+lock+close (what naive libraries do) for reference.
//! 2. Cross-process handoff: the holder unlocks while the other process is
//!    asleep in the kernel waiting for the lock; latency from the unlock to
//!    the waiter holding the lock, CLOCK_MONOTONIC on both sides, through a
//!    shared mmap'd file (bar: median ≤ 1.5× raw `F_OFD_SETLKW`).
//! 3. Throughput: 4 processes × 2 threads incrementing a counter file under
//!    the lock, raw OFD (a descriptor per thread) against lockutils.
//!
//! The helper processes are this binary, re-run as the tests re-run
//! theirs (`tests/support`: `LOCKUTILS_TEST_CHILD` names the child's role,
//! its parameters travel in `LOCKUTILS_TEST_*`, its reports come back over
//! a pipe; the two sides of the handoff share a `tests/support/shm.rs`
//! mapping).
//!
//! `BENCH_ONLY=uncontended|kinds|handoff|throughput|busy|python` runs one
//! part; `BENCH_RUNS=n` sets the throughput runs (default 5);
//! `BENCH_ONLY=strace` (or `strace-dynamic`) runs 100,000 uncontended
//! lockutils acquisitions and nothing else, for `strace -c -f`.

#[path = "external/busy.rs"]
mod busy;
mod support;
// The tests' child processes, shared memory and venv. Its generic child
// tests are `#[test]`s, which a bench does not compile (nor what only they
// import).
#[allow(unused_imports)]
#[path = "../tests/support/mod.rs"]
mod test_support;

use std::ffi::CString;
use std::fs::File;
use std::hint::black_box;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use lockutils::__private_v0_1::{CallSite, LockSpec};
use support::{mono_ns, percentile, print_table, run_group, variant};
use test_support::shm::Shm;
use test_support::{param, param_as, report};

// ---- raw OFD primitives ---------------------------------------------------

fn flock_whole(kind: libc::c_int) -> libc::flock {
    // SAFETY: plain C struct, all-zero is valid (l_pid must be 0 for OFD).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

#[inline]
fn ofd(fd: libc::c_int, cmd: libc::c_int, kind: libc::c_int) {
    let fl = flock_whole(kind);
    // SAFETY: valid descriptor and flock.
    let r = unsafe { libc::fcntl(fd, cmd, &fl) };
    assert_eq!(r, 0, "fcntl: {}", std::io::Error::last_os_error());
}

fn open_rw(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open lock file")
}

/// open(O_CREAT) + lock + close (closing the descriptor releases the lock).
#[inline(never)]
fn naive_open_lock_close(path: &CString, c: &mut u64) {
    // SAFETY: valid C string; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
            0o644,
        )
    };
    assert!(fd >= 0);
    ofd(fd, libc::F_OFD_SETLK, libc::F_WRLCK);
    *black_box(c) += 1;
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
}

/// The floor for a design that keeps descriptors open across acquisitions:
/// after locking it must check the file was not removed meanwhile.
#[inline(never)]
fn raw_ofd_fstat(fd: libc::c_int, c: &mut u64) {
    ofd(fd, libc::F_OFD_SETLK, libc::F_WRLCK);
    // SAFETY: `stat` is a plain C struct; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and buffer.
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    assert!(black_box(st.st_nlink) > 0);
    *black_box(c) += 1;
    ofd(fd, libc::F_OFD_SETLK, libc::F_UNLCK);
}

#[inline(never)]
fn raw_ofd(fd: libc::c_int, c: &mut u64) {
    ofd(fd, libc::F_OFD_SETLK, libc::F_WRLCK);
    *black_box(c) += 1;
    ofd(fd, libc::F_OFD_SETLK, libc::F_UNLCK);
}

// ---- lockutils ------------------------------------------------------------

/// A `#[synchronized(name, external, lock_path = dir)]` call site, built at
/// run time so that `dir` can be a temporary directory.
fn call_site(name: &'static str, dir: &Path) -> &'static CallSite {
    let dir: &'static str = Box::leak(
        dir.to_str()
            .expect("utf-8 path")
            .to_owned()
            .into_boxed_str(),
    );
    Box::leak(Box::new(CallSite::new(
        LockSpec::new(name, "", "external::bench")
            .external()
            .lock_path(dir),
    )))
}

#[inline(never)]
fn lockutils_site(site: &'static CallSite, c: &mut u64) {
    let _g = site.acquire_or_panic();
    *black_box(c) += 1;
}

#[inline(never)]
#[lockutils::synchronized("bench-macro", external)]
fn lockutils_macro(c: &mut u64) {
    *black_box(c) += 1;
}

#[inline(never)]
fn lockutils_builder(name: &str, dir: &Path, c: &mut u64) {
    let _g = lockutils::lock(name)
        .external()
        .lock_path(dir)
        .acquire()
        .expect("lock");
    *black_box(c) += 1;
}

// ---- 1. uncontended -------------------------------------------------------

fn uncontended(dir: &Path, samples: usize) {
    let raw_file = open_rw(&dir.join("raw"));
    let raw_fd = raw_file.as_raw_fd();
    let naive_path = CString::new(dir.join("naive").as_os_str().as_bytes()).expect("path");
    let site = call_site("bench-site", dir);
    lockutils::config::set_lock_path(dir);
    let mut c = 0;
    lockutils_site(site, &mut c); // opens the file once; the call site keeps it
    lockutils_macro(&mut c);
    let dyn_name: String = black_box(String::from("bench-dynamic"));
    let [mut c0, mut c1, mut c2, mut c3, mut c4, mut c5, mut c6] = [0u64; 7];
    let mut vs = vec![
        variant("raw F_OFD_SETLK + F_UNLCK, fd kept open (raw)", || {
            raw_ofd(raw_fd, &mut c0)
        }),
        variant("static call site, external, lock_path = dir", || {
            lockutils_site(site, &mut c1)
        }),
        variant("#[synchronized(.., external)], set_lock_path(dir)", || {
            lockutils_macro(&mut c2)
        }),
        variant(
            "lock(\"bench-site\").external().lock_path(dir), entry kept",
            || lockutils_builder("bench-site", dir, &mut c3),
        ),
        variant(
            "lock(dyn).external().lock_path(dir), entry created+freed",
            || lockutils_builder(&dyn_name, dir, &mut c4),
        ),
        variant(
            "open(O_CREAT) + F_OFD_SETLK + close (naive, reference)",
            || naive_open_lock_close(&naive_path, &mut c5),
        ),
        variant(
            "raw F_OFD_SETLK + fstat + F_UNLCK (floor with a check)",
            || raw_ofd_fstat(raw_fd, &mut c6),
        ),
    ];
    let stats = run_group(&mut vs, samples, Duration::from_millis(2));
    print_table(
        "## 1. Uncontended external acquire + body + release, one thread (ns/op; ratio vs raw OFD)",
        &stats,
        0,
    );
    for (what, i) in [
        ("static call site / raw OFD (median)", 1),
        ("#[synchronized(.., external)] / raw OFD (median)", 2),
        (
            "lock(name).external() builder, entry kept / raw OFD (median)",
            3,
        ),
    ] {
        verdict(what, stats[i].median() / stats[0].median(), 1.5);
    }
}

// ---- 1b. kinds: readers and semaphores ---------------------------------------

/// A call site for `name` with `spec` options, in `dir`.
fn kind_site(
    name: &'static str,
    dir: &Path,
    f: impl FnOnce(LockSpec) -> LockSpec,
) -> &'static CallSite {
    let dir: &'static str = Box::leak(
        dir.to_str()
            .expect("utf-8 path")
            .to_owned()
            .into_boxed_str(),
    );
    let spec = f(LockSpec::new(name, "", "external::bench")
        .external()
        .lock_path(dir));
    Box::leak(Box::new(CallSite::new(spec)))
}

fn raw_ofd_read(fd: libc::c_int, c: &mut u64) {
    ofd(fd, libc::F_OFD_SETLK, libc::F_RDLCK);
    *black_box(c) += 1;
    ofd(fd, libc::F_OFD_SETLK, libc::F_UNLCK);
}

fn kinds(dir: &Path, samples: usize) {
    let raw_file = open_rw(&dir.join("raw-kinds"));
    let raw_fd = raw_file.as_raw_fd();
    let exclusive = kind_site("bench-kind-x", dir, |s| s);
    let shared = kind_site("bench-kind-r", dir, |s| s.shared());
    let semaphore = kind_site("bench-kind-sem", dir, |s| s.permits(4));
    let mut c = 0;
    for site in [exclusive, shared, semaphore] {
        lockutils_site(site, &mut c); // open each file once
    }
    let [mut c0, mut c1, mut c2, mut c3, mut c4] = [0u64; 5];
    let mut vs = vec![
        variant("raw F_OFD_SETLK F_RDLCK + F_UNLCK (raw read lock)", || {
            raw_ofd_read(raw_fd, &mut c0)
        }),
        variant("#[synchronized(.., shared, external)] (reader)", || {
            lockutils_site(shared, &mut c1)
        }),
        variant("raw F_OFD_SETLK F_WRLCK + F_UNLCK (raw write lock)", || {
            raw_ofd(raw_fd, &mut c2)
        }),
        variant("#[synchronized(.., external)] (exclusive)", || {
            lockutils_site(exclusive, &mut c3)
        }),
        variant(
            "#[synchronized(.., permits = 4, external)], slots free",
            || lockutils_site(semaphore, &mut c4),
        ),
    ];
    let stats = run_group(&mut vs, samples, Duration::from_millis(2));
    print_table(
        "## 1b. Readers and semaphores, uncontended (ns/op; ratio vs raw read lock)",
        &stats,
        0,
    );
    println!(
        "shared / raw F_RDLCK (median): {:.2}x",
        stats[1].median() / stats[0].median()
    );
    println!(
        "semaphore (free slot) / exclusive lockutils lock (median): {:.2}x",
        stats[4].median() / stats[3].median()
    );
}

fn verdict(what: &str, ratio: f64, bar: f64) {
    let ok = if ratio <= bar { "MET" } else { "MISSED" };
    println!("{what}: {ratio:.2}x  (bar <= {bar}x) -> {ok}");
}

// ---- 2. handoff latency ----------------------------------------------------

const ROUNDS: usize = 4000;

/// The words of the mapping the two processes share.
mod word {
    use super::ROUNDS;

    /// Set once side 0 holds the lock.
    pub const READY: usize = 0;
    /// `WAITING + side`: round + 1 that `side` is waiting for.
    pub const WAITING: usize = 1;
    /// Last round whose waiter holds the lock, + 1.
    pub const ACQUIRED: usize = 3;
    /// `RELEASED_AT + round`: when the holder unlocked (CLOCK_MONOTONIC ns).
    pub const RELEASED_AT: usize = 4;
    /// `ACQUIRED_AT + round`: when the waiter held the lock.
    pub const ACQUIRED_AT: usize = RELEASED_AT + ROUNDS;
    pub const END: usize = ACQUIRED_AT + ROUNDS;
}

/// Whether `pid`'s main thread is asleep (state `S`): blocked in the kernel.
fn asleep(pid: u32) -> bool {
    test_support::process_state(pid as i32) == Some('S')
}

enum Locker {
    Raw(File),
    Lockutils(
        &'static CallSite,
        Option<lockutils::__private_v0_1::SiteGuard>,
    ),
}

impl Locker {
    fn new(kind: &str, dir: &Path) -> Locker {
        match kind {
            "raw" => Locker::Raw(open_rw(&dir.join("handoff-raw"))),
            _ => Locker::Lockutils(call_site("handoff-lu", dir), None),
        }
    }
    #[inline]
    fn lock(&mut self) {
        match self {
            Locker::Raw(f) => ofd(f.as_raw_fd(), libc::F_OFD_SETLKW, libc::F_WRLCK),
            Locker::Lockutils(site, g) => *g = Some(site.acquire_or_panic()),
        }
    }
    #[inline]
    fn unlock(&mut self) {
        match self {
            Locker::Raw(f) => ofd(f.as_raw_fd(), libc::F_OFD_SETLK, libc::F_UNLCK),
            Locker::Lockutils(_, g) => *g = None,
        }
    }
}

/// One side of the ping-pong. Side 0 holds the lock first; in round `r`
/// side `r % 2` releases (once the other side sleeps in the kernel waiting)
/// and the other side acquires.
fn handoff_side(me: usize, peer: u32, locker: &mut Locker, shm: &Shm) {
    let other = 1 - me;
    if me == 0 {
        locker.lock();
        shm.word(word::READY).store(1, Ordering::SeqCst);
    } else {
        while shm.word(word::READY).load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
    }
    for r in 0..ROUNDS {
        let tag = r as u64 + 1;
        if r % 2 == me {
            while shm.word(word::WAITING + other).load(Ordering::SeqCst) != tag || !asleep(peer) {
                std::thread::yield_now();
            }
            shm.word(word::RELEASED_AT + r)
                .store(mono_ns(), Ordering::SeqCst);
            locker.unlock();
            while shm.word(word::ACQUIRED).load(Ordering::SeqCst) < tag {
                std::thread::yield_now();
            }
        } else {
            shm.word(word::WAITING + me).store(tag, Ordering::SeqCst);
            locker.lock();
            shm.word(word::ACQUIRED_AT + r)
                .store(mono_ns(), Ordering::SeqCst);
            shm.word(word::ACQUIRED).store(tag, Ordering::SeqCst);
        }
    }
    locker.unlock();
}

fn handoff_run(dir: &Path, kind: &str, run: usize) -> Vec<f64> {
    let shm_path = dir.join(format!("shm-{kind}-{run}"));
    let shm = Shm::create_words(&shm_path, word::END);
    let child = test_support::child(&format!("handoff-{kind}"))
        .param("DIR", dir)
        .param("SHM", &shm_path)
        .spawn();
    let mut locker = Locker::new(kind, dir);
    handoff_side(0, child.pid(), &mut locker, &shm);
    child.finish();
    (0..ROUNDS)
        .map(|r| {
            let a = shm.word(word::ACQUIRED_AT + r).load(Ordering::SeqCst);
            let b = shm.word(word::RELEASED_AT + r).load(Ordering::SeqCst);
            a.saturating_sub(b) as f64
        })
        .collect()
}

fn handoff(dir: &Path, runs: usize) {
    let mut raw = Vec::new();
    let mut lu = Vec::new();
    for run in 0..runs {
        raw.extend(handoff_run(dir, "raw", run));
        lu.extend(handoff_run(dir, "lu", run));
    }
    println!(
        "\n## 2. Cross-process handoff: holder unlocks -> waiter (asleep in the kernel) holds \
         the lock (us; {} handoffs each, {runs} runs interleaved)",
        raw.len()
    );
    println!(
        "| {:<44} | {:>8} | {:>8} | {:>8} | {:>8} | {:>9} |",
        "variant", "median", "p90", "p99", "min", "x median"
    );
    println!(
        "|{:-<46}|{:->10}|{:->10}|{:->10}|{:->10}|{:->11}|",
        "", ":", ":", ":", ":", ":"
    );
    let base = percentile(&raw, 50.0);
    for (name, xs) in [
        ("raw F_OFD_SETLKW / F_UNLCK (raw)", &raw),
        ("lockutils static call site, external", &lu),
    ] {
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "| {:<44} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2}x |",
            name,
            percentile(xs, 50.0) / 1e3,
            percentile(xs, 90.0) / 1e3,
            percentile(xs, 99.0) / 1e3,
            min / 1e3,
            percentile(xs, 50.0) / base
        );
    }
    verdict(
        "handoff median lockutils / raw",
        percentile(&lu, 50.0) / base,
        1.5,
    );
}

fn handoff_child(kind: &str) {
    let dir = PathBuf::from(param("DIR"));
    let shm = Shm::from_parent();
    let mut locker = Locker::new(kind, &dir);
    handoff_side(1, std::os::unix::process::parent_id(), &mut locker, &shm);
}

// ---- 3. throughput --------------------------------------------------------

const PROCS: usize = 4;
const THREADS: usize = 2;

/// One throughput run: increments per second, and the longest any thread
/// waited for one acquisition (ns). `others`: unrelated locks held on the
/// host meanwhile (by another process).
fn throughput_run(dir: &Path, kind: &str, ops: u64, others: usize) -> (f64, u64) {
    let hoard = (others > 0).then(|| busy::start(dir, &format!("hoard-{others}")));
    let counter = dir.join(format!("counter-{kind}"));
    std::fs::write(&counter, 0u64.to_le_bytes()).expect("counter");
    let mut children: Vec<_> = (0..PROCS)
        .map(|_| {
            let mut child = test_support::child(&format!("throughput-{kind}"))
                .param("DIR", dir)
                .param("COUNTER", &counter)
                .param("OPS", ops.to_string());
            if kind == "lu-off" {
                child = child.env("LOCKUTILS_COHORT", "off");
            }
            child.spawn()
        })
        .collect();
    test_support::ready_set_go(&mut children);
    let (mut start, mut end, mut worst) = (u64::MAX, 0u64, 0u64);
    for child in &mut children {
        // One report per thread: its start, its end and its longest wait.
        for _ in 0..THREADS {
            let line = child.next_report();
            let mut it = line
                .split_whitespace()
                .map(|x| x.parse::<u64>().expect("num"));
            if let (Some(a), Some(b), Some(w)) = (it.next(), it.next(), it.next()) {
                start = start.min(a);
                end = end.max(b);
                worst = worst.max(w);
            }
        }
        if cohort_stats_wanted() {
            let stats = child.next_report();
            eprintln!("cohort stats (handoffs, longest batch): {stats}");
        }
    }
    for child in children {
        child.finish();
    }
    if let Some(hoard) = hoard {
        hoard.finish();
    }
    let total = (PROCS * THREADS) as u64 * ops;
    let bytes = std::fs::read(&counter).expect("counter");
    let got = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    assert_eq!(got, total, "lost increments under the {kind} lock");
    (total as f64 / ((end - start) as f64 / 1e9), worst)
}

fn throughput(dir: &Path, runs: usize) {
    let ops = 25_000;
    let (handoffs, within) = lockutils::config::cohort_limit();
    println!(
        "\n## 3. Throughput: {PROCS} processes x {THREADS} threads, {ops} locked increments \
         of a counter file each (k ops/s; median of {runs} runs, interleaved, totals verified)"
    );
    println!("lockutils: static call sites, cohort {handoffs} handoffs / {within:?}");
    println!(
        "| {:<44} | {:>10} | {:>10} | {:>9} | {:>14} |",
        "variant", "median", "best", "x raw", "max wait (ms)"
    );
    println!(
        "|{:-<46}|{:->12}|{:->12}|{:->11}|{:->16}|",
        "", ":", ":", ":", ":"
    );
    for (others, bar) in [(0, 1.5), (1_000, 1.0), (10_000, 1.0)] {
        let kinds: &[&str] = if others == 0 {
            &["raw", "lu", "lu-off"]
        } else {
            &["raw", "lu"]
        };
        let mut rates = vec![Vec::new(); kinds.len()];
        let mut worst = vec![0f64; kinds.len()];
        for _ in 0..runs {
            for (i, kind) in kinds.iter().enumerate() {
                let (rate, w) = throughput_run(dir, kind, ops, others);
                rates[i].push(rate);
                worst[i] = worst[i].max(w as f64 / 1e6);
            }
        }
        let base = percentile(&rates[0], 50.0);
        let host = match others {
            0 => String::from("quiet host"),
            n => format!("{n} other locks held"),
        };
        for (i, kind) in kinds.iter().enumerate() {
            let name = match *kind {
                "raw" => "raw OFD, a descriptor per thread",
                "lu" => "lockutils",
                _ => "lockutils, cohorting off",
            };
            let xs = &rates[i];
            let best = xs.iter().copied().fold(0.0, f64::max);
            println!(
                "| {:<44} | {:>10.1} | {:>10.1} | {:>8.2}x | {:>14.2} |",
                format!("{name}, {host}"),
                percentile(xs, 50.0) / 1e3,
                best / 1e3,
                percentile(xs, 50.0) / base,
                worst[i]
            );
        }
        let ratio = percentile(&rates[1], 50.0) / base;
        let ok = if ratio >= bar { "MET" } else { "MISSED" };
        println!(
            "throughput lockutils / raw, {host} (median): {ratio:.2}x  (bar >= {bar}x) -> {ok}"
        );
    }
}

fn increment(counter: &File) {
    let mut b = [0u8; 8];
    // SAFETY: valid descriptor and buffer.
    let n = unsafe { libc::pread(counter.as_raw_fd(), b.as_mut_ptr().cast(), 8, 0) };
    assert_eq!(n, 8);
    let v = u64::from_le_bytes(b) + 1;
    // SAFETY: valid descriptor; the buffer is 8 live bytes.
    let n = unsafe { libc::pwrite(counter.as_raw_fd(), v.to_le_bytes().as_ptr().cast(), 8, 0) };
    assert_eq!(n, 8);
}

/// `BENCH_COHORT_STATS` set: each throughput child reports its cohort
/// statistics, which the parent prints.
fn cohort_stats_wanted() -> bool {
    std::env::var_os("BENCH_COHORT_STATS").is_some()
}

fn throughput_child(kind: &str) {
    let dir = PathBuf::from(param("DIR"));
    let counter = PathBuf::from(param("COUNTER"));
    let ops: u64 = param_as("OPS");
    let site = call_site("throughput-lu", &dir);
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (barrier, dir, counter, kind) = (
                barrier.clone(),
                dir.clone(),
                counter.clone(),
                kind.to_owned(),
            );
            std::thread::spawn(move || {
                let counter = open_rw(&counter);
                let raw = open_rw(&dir.join("throughput-raw"));
                barrier.wait();
                let t0 = mono_ns();
                let mut worst = 0;
                for _ in 0..ops {
                    let asked = mono_ns();
                    if kind == "raw" {
                        ofd(raw.as_raw_fd(), libc::F_OFD_SETLKW, libc::F_WRLCK);
                        worst = u64::max(worst, mono_ns() - asked);
                        increment(&counter);
                        ofd(raw.as_raw_fd(), libc::F_OFD_SETLK, libc::F_UNLCK);
                    } else {
                        let _g = site.acquire_or_panic();
                        worst = u64::max(worst, mono_ns() - asked);
                        increment(&counter);
                    }
                }
                (t0, mono_ns(), worst)
            })
        })
        .collect();
    test_support::await_go();
    barrier.wait();
    for t in threads {
        let (a, b, w) = t.join().expect("thread");
        report(format!("{a} {b} {w}"));
    }
    if cohort_stats_wanted() {
        let stats = lockutils::__private_v0_1::cohort_stats("throughput-lu");
        report(format!("{stats:?}"));
    }
}

// ---- python anchor --------------------------------------------------------

/// Nothing without the tests' venv (`tests/support/pyenv.rs`): a benchmark
/// installs nothing.
fn python_anchor(dir: &Path) {
    let Some(py) = test_support::pyenv::python_if_ready() else {
        return;
    };
    let script = r#"
import sys, time
from oslo_concurrency import lockutils
d = sys.argv[1]
n = 2000
for _ in range(100):
    with lockutils.lock("bench-py", external=True, lock_path=d):
        pass
best = []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(n):
        with lockutils.lock("bench-py", external=True, lock_path=d):
            pass
    best.append((time.perf_counter() - t) / n * 1e9)
best.sort()
print(best[len(best) // 2])
"#;
    match Command::new(&py).arg("-c").arg(script).arg(dir).output() {
        Ok(o) if o.status.success() => {
            let ns: f64 = String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(f64::NAN);
            println!(
                "\n## Reference: Python oslo.concurrency lockutils.lock(name, external=True) \
                 uncontended acquire+release: {:.1} us/op (median of 5 x 2000)",
                ns / 1e3
            );
        }
        _ => {}
    }
}

// ---- main -----------------------------------------------------------------

fn strace_loop(dir: &Path, dynamic: bool) {
    let site = call_site("bench-strace", dir);
    let mut c = 0;
    let n = 100_000;
    if dynamic {
        for _ in 0..n {
            lockutils_builder("bench-strace-dyn", dir, &mut c);
        }
    } else {
        lockutils_site(site, &mut c);
        for _ in 0..n {
            lockutils_site(site, &mut c);
        }
    }
    println!("{n} acquisitions");
}

fn main() {
    if let Ok(role) = std::env::var(test_support::CHILD_ENV) {
        match role.split_once('-') {
            Some(("handoff", kind)) => handoff_child(kind),
            Some(("throughput", kind)) => throughput_child(kind),
            Some(("hoard", n)) => busy::hoard_child(n.parse().expect("count")),
            Some(("hammer", kind)) => busy::hammer_child(kind),
            None if role == "blocked" => busy::blocked_child(),
            None if role == "holdfiles" => busy::holdfiles_child(),
            _ => panic!("unknown child role {role}"),
        }
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.starts_with("strace") {
        strace_loop(dir, only == "strace-dynamic");
        return;
    }
    let run = |part: &str| only.is_empty() || only == part;
    println!("# lockutils external (lock file) benchmarks");
    println!("machine: {}", support::machine());
    println!("lock files in {} ", dir.display());
    if run("uncontended") {
        uncontended(dir, support::samples(200));
    }
    if run("kinds") {
        kinds(dir, support::samples(200));
    }
    if run("handoff") {
        handoff(dir, 4);
    }
    if run("throughput") {
        let runs = std::env::var("BENCH_RUNS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5);
        throughput(dir, runs);
    }
    if run("busy") {
        busy::busy(dir);
    }
    if run("python") {
        python_anchor(dir);
    }
}
