//! In-process benchmarks, each against the primitive it stands in for,
//! measured in the same run: `cargo bench --bench inprocess` (method and
//! current figures in BENCHMARKS.md).
//!
//! 1. An uncontended `#[synchronized("x")]` call against the same body under
//!    a `static parking_lot::Mutex<()>` (bar: ≤ 1.5×), plus the run-time API
//!    with a dynamic name that goes through the registry on every call.
//! 2. Two threads on two different names: throughput against a
//!    `parking_lot::Mutex` per thread (no global lock on the acquire path).
//! 3. Memory: 1,000,000 distinct dynamic names, then 1,000,000 more; the
//!    second million must add under 1 MiB of resident memory.
//! 4. The lock-order check (`LOCKUTILS_LOCK_ORDER`) off and on, for one
//!    lock and for a nested pair whose order is already known.
//!
//! 5. Async and contended: an uncontended `#[synchronized] async fn`
//!    against a `static tokio::sync::Mutex` (and `async-lock`), 64 tasks on
//!    one name with 2 tokio workers, and 4 threads hammering one name
//!    against one `parking_lot::Mutex` (a distribution over runs).
//!
//! `BENCH_SAMPLES=n` changes the number of samples; `BENCH_ONLY=uncontended|
//! threads|memory|order|async|tasks|contended` runs one part; `BENCH_ONLY=profile` only loops the
//! `#[synchronized]` call, for `perf record` (`profile-runtime`: the same
//! for `lock("x").acquire()`; `profile-dynamic`: a name whose entry is
//! created and freed by every call).

mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Weak};
use std::time::{Duration, Instant};

use lockutils::{config::LockOrderCheck, synchronized};
use parking_lot::Mutex;
use support::{Padded, mono_ns, print_table, run_group, variant, variant_setup};

// ---- the bodies under test -------------------------------------------------

static RAW: Mutex<()> = Mutex::new(());

#[inline(never)]
fn raw_parking_lot(c: &mut u64) {
    let _g = RAW.lock();
    *black_box(c) += 1;
}

#[inline(never)]
#[synchronized("x")]
fn synchronized_x(c: &mut u64) {
    *black_box(c) += 1;
}

#[inline(never)]
#[synchronized("x", blocking = false)]
fn synchronized_x_try(c: &mut u64) -> Result<(), lockutils::LockError> {
    *black_box(c) += 1;
    Ok(())
}

#[inline(never)]
fn unlocked(c: &mut u64) {
    *black_box(c) += 1;
}

#[inline(never)]
fn runtime_api(name: &str, c: &mut u64) {
    let _g = lockutils::lock(name).acquire().expect("lock");
    *black_box(c) += 1;
}

#[inline(never)]
fn kept_builder(lock: &lockutils::Lock<'_>, c: &mut u64) {
    let _g = lock.acquire().expect("lock");
    *black_box(c) += 1;
}

/// A naive registry, for reference: one global `Mutex<HashMap<String,
/// Weak<Mutex>>>`, entries removed when the last user leaves (oslo's
/// weak-value dictionary done the obvious way).
struct NaiveRegistry(Mutex<HashMap<String, Weak<Mutex<()>>>>);

static NAIVE: std::sync::LazyLock<NaiveRegistry> =
    std::sync::LazyLock::new(|| NaiveRegistry(Mutex::new(HashMap::new())));

#[inline(never)]
fn naive_registry(name: &str, c: &mut u64) {
    let m = {
        let mut map = NAIVE.0.lock();
        match map.get(name).and_then(Weak::upgrade) {
            Some(m) => m,
            None => {
                let m = Arc::new(Mutex::new(()));
                map.insert(name.to_owned(), Arc::downgrade(&m));
                m
            }
        }
    };
    {
        let _g = m.lock();
        *black_box(c) += 1;
    }
    let mut map = NAIVE.0.lock();
    if Arc::strong_count(&m) == 1 {
        map.remove(name);
    }
}

// ---- 1. uncontended -------------------------------------------------------

fn uncontended(samples: usize) {
    // A runtime `String`, so nothing can be resolved at compile time.
    let name: String = black_box(String::from("dyn-name"));
    let kept = lockutils::lock(&name);
    // "x" is kept alive by the static call site of `synchronized_x` once
    // that has run, so `lock("x")` finds a live entry; `name` has no other
    // user, so its entry is created and freed on every call (oslo's weak
    // dictionary behaviour).
    let mut c = 0u64;
    synchronized_x(&mut c);
    let [
        mut c0,
        mut c1,
        mut c2,
        mut c3,
        mut c4,
        mut c5,
        mut c6,
        mut c7,
    ] = [0u64; 8];
    let mut vs = vec![
        variant("static parking_lot::Mutex<()> (raw)", || {
            raw_parking_lot(&mut c0)
        }),
        variant("#[synchronized(\"x\")]", || synchronized_x(&mut c1)),
        variant("#[synchronized(\"x\", blocking = false)] -> Result", || {
            synchronized_x_try(&mut c2).expect("free")
        }),
        variant(
            "lock(\"x\").acquire(), entry kept alive by a call site",
            || runtime_api("x", &mut c3),
        ),
        variant(
            "lock(dyn String).acquire(), entry created+freed per call",
            || runtime_api(&name, &mut c4),
        ),
        variant("kept Lock builder (dyn name).acquire()", || {
            kept_builder(&kept, &mut c5)
        }),
        variant("naive global Mutex<HashMap<String, Weak>> registry", || {
            naive_registry(&name, &mut c6)
        }),
        variant("no lock (body + call only)", || unlocked(&mut c7)),
    ];
    let stats = run_group(&mut vs, samples, Duration::from_millis(2));
    print_table(
        "## 1. Uncontended lock + body + unlock, one thread (ns/op; ratio vs raw parking_lot)",
        &stats,
        0,
    );
    verdict(
        "#[synchronized] / parking_lot (median)",
        stats[1].median() / stats[0].median(),
        1.5,
    );
    verdict(
        "lock(\"x\").acquire(), entry alive / parking_lot (median)",
        stats[3].median() / stats[0].median(),
        4.0,
    );
    verdict(
        "lock(dyn).acquire(), entry created+freed / parking_lot (median)",
        stats[4].median() / stats[0].median(),
        8.0,
    );
}

fn verdict(what: &str, ratio: f64, bar: f64) {
    let ok = if ratio <= bar { "MET" } else { "MISSED" };
    println!("\n{what}: {ratio:.2}x  (bar <= {bar}x) -> {ok}");
}

// ---- 2. two threads, two names ---------------------------------------------

static PL: [Padded<Mutex<()>>; 2] = [Padded(Mutex::new(())), Padded(Mutex::new(()))];

#[inline(never)]
#[synchronized("thread-0")]
fn sync_t0(c: &mut u64) {
    *black_box(c) += 1;
}

#[inline(never)]
#[synchronized("thread-1")]
fn sync_t1(c: &mut u64) {
    *black_box(c) += 1;
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    ParkingLot,
    ParkingLotShared,
    Synchronized,
    DynamicKept,
    DynamicFresh,
    Naive,
}

const KINDS: [(Kind, &str); 6] = [
    (Kind::ParkingLot, "parking_lot::Mutex, one per thread (raw)"),
    (Kind::Synchronized, "#[synchronized(\"thread-<i>\")]"),
    (
        Kind::DynamicKept,
        "lock(dyn name).acquire(), entry kept alive",
    ),
    (
        Kind::DynamicFresh,
        "lock(dyn name).acquire(), entry created+freed",
    ),
    (
        Kind::Naive,
        "naive global-Mutex registry, own name per thread",
    ),
    (
        Kind::ParkingLotShared,
        "one shared parking_lot::Mutex (a global lock)",
    ),
];

fn thread_op(kind: Kind, t: usize, name: &str, c: &mut u64) {
    match kind {
        Kind::ParkingLot => {
            let _g = PL[t].0.lock();
            *black_box(c) += 1;
        }
        Kind::ParkingLotShared => raw_parking_lot(c),
        Kind::Synchronized => {
            if t == 0 {
                sync_t0(c)
            } else {
                sync_t1(c)
            }
        }
        Kind::DynamicKept | Kind::DynamicFresh => runtime_api(name, c),
        Kind::Naive => naive_registry(name, c),
    }
}

/// Runs `threads` threads at once for about `dur`; returns the total
/// throughput (ops/s) from the first start to the last finish.
fn run_threads(kind: Kind, threads: usize, dur: Duration) -> f64 {
    let barrier = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    let spans: Vec<(u64, u64, u64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, stop) = (&barrier, &stop);
                s.spawn(move || {
                    // Kept: the static call site of sync_t<i> keeps "thread-<i>".
                    let name = match kind {
                        Kind::DynamicKept => format!("thread-{t}"),
                        _ => format!("fresh-{t}"),
                    };
                    let mut c = 0u64;
                    for _ in 0..1000 {
                        thread_op(kind, t, &name, &mut c);
                    }
                    barrier.wait();
                    let t0 = mono_ns();
                    let mut ops = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..256 {
                            thread_op(kind, t, &name, &mut c);
                        }
                        ops += 256;
                    }
                    (t0, mono_ns(), ops)
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.1).max().unwrap_or(0);
    let ops: u64 = spans.iter().map(|s| s.2).sum();
    ops as f64 / ((end - start) as f64 / 1e9)
}

fn two_threads(samples: usize) {
    // The call sites must have run once for "thread-<i>" to stay alive.
    let mut c = 0;
    sync_t0(&mut c);
    sync_t1(&mut c);
    let threads = 2;
    let dur = Duration::from_millis(40);
    let mut one: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    let mut two: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    for round in 0..samples {
        for j in 0..KINDS.len() {
            let i = (round + j) % KINDS.len();
            let kind = KINDS[i].0;
            one[i].push(run_threads(kind, 1, dur));
            two[i].push(run_threads(kind, threads, dur));
        }
    }
    println!(
        "\n## 2. {threads} threads, each on its own name (M ops/s, all threads together; \
         median of {samples} x 40 ms)"
    );
    println!(
        "| {:<52} | {:>9} | {:>9} | {:>8} | {:>10} |",
        "variant", "1 thread", "2 threads", "scaling", "2T vs raw"
    );
    println!(
        "|{:-<54}|{:->11}|{:->11}|{:->10}|{:->12}|",
        "", ":", ":", ":", ":"
    );
    let raw2 = support::percentile(&two[0], 50.0);
    for (i, (_, label)) in KINDS.iter().enumerate() {
        let m1 = support::percentile(&one[i], 50.0);
        let m2 = support::percentile(&two[i], 50.0);
        println!(
            "| {:<52} | {:>9.1} | {:>9.1} | {:>7.2}x | {:>9.2}x |",
            label,
            m1 / 1e6,
            m2 / 1e6,
            m2 / m1,
            m2 / raw2
        );
    }
    println!(
        "\n(scaling = 2-thread / 1-thread throughput: about 2x when nothing is shared, \
         below 1x for a global lock; on a 2-core machine shared with other work, \
         expect less than 2x even for the raw mutex.)"
    );
}

// ---- 3. memory ------------------------------------------------------------

fn lock_names(from: u64, to: u64, buf: &mut String) -> Duration {
    let t = Instant::now();
    for i in from..to {
        buf.clear();
        let _ = write!(buf, "instance-{i:016x}");
        let g = lockutils::lock(buf).acquire().expect("lock");
        drop(black_box(g));
    }
    t.elapsed()
}

fn memory() {
    const M: u64 = 1_000_000;
    let mut buf = String::new();
    lock_names(0, 10_000, &mut buf);
    let warm = support::rss_bytes();
    let t1 = lock_names(10_000, 10_000 + M, &mut buf);
    let first = support::rss_bytes();
    let t2 = lock_names(10_000 + M, 10_000 + 2 * M, &mut buf);
    let second = support::rss_bytes();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let delta = |a: u64, b: u64| (b as i64 - a as i64) as f64 / (1024.0 * 1024.0);
    println!(
        "\n## 3. Memory: distinct dynamic names, each locked once (RSS from /proc/self/statm)"
    );
    println!(
        "| {:<38} | {:>10} | {:>12} | {:>10} |",
        "point", "RSS MiB", "delta MiB", "ns/lock"
    );
    println!("|{:-<40}|{:->12}|{:->14}|{:->12}|", "", ":", ":", ":");
    println!(
        "| {:<38} | {:>10.2} | {:>12} | {:>10} |",
        "after warm-up (10,000 names)",
        mib(warm),
        "",
        ""
    );
    println!(
        "| {:<38} | {:>10.2} | {:>12.3} | {:>10.1} |",
        "after the first 1,000,000 names",
        mib(first),
        delta(warm, first),
        t1.as_nanos() as f64 / M as f64
    );
    println!(
        "| {:<38} | {:>10.2} | {:>12.3} | {:>10.1} |",
        "after the second 1,000,000 names",
        mib(second),
        delta(first, second),
        t2.as_nanos() as f64 / M as f64
    );
    let live = lockutils::__private_v0_1::live_entries();
    println!("\nlive registry entries at the end: {live}");
    let added = delta(first, second);
    let ok = if added < 1.0 { "MET" } else { "MISSED" };
    println!("second million added {added:.3} MiB (bar < 1 MiB) -> {ok}");
}

// ---- 4. lock-order check ---------------------------------------------------

#[inline(never)]
#[synchronized("order-outer")]
fn nested_outer(c: &mut u64) {
    nested_inner(c);
}

#[inline(never)]
#[synchronized("order-inner")]
fn nested_inner(c: &mut u64) {
    *black_box(c) += 1;
}

#[inline(never)]
fn runtime_async(c: &mut u64) {
    futures_lite::future::block_on(async {
        let _g = lockutils::lock("x").acquire_async().await.expect("lock");
        *black_box(c) += 1;
    });
}

fn lock_order(samples: usize) {
    let off = || lockutils::config::set_lock_order_check(LockOrderCheck::Off);
    let on = || lockutils::config::set_lock_order_check(LockOrderCheck::Panic);
    let mut c = [0u64; 9];
    let [c0, c1, c2, c3, c4, c5, c6, c7, c8] = &mut c;
    // Record the nested pair's edge once, so "on" measures the common case.
    on();
    nested_outer(c3);
    let mut vs = vec![
        variant("static parking_lot::Mutex<()> (raw)", || {
            raw_parking_lot(c0)
        }),
        variant_setup("#[synchronized(\"x\")], check off", off, || {
            synchronized_x(c1)
        }),
        variant_setup("#[synchronized(\"x\")], check on", on, || {
            synchronized_x(c2)
        }),
        variant_setup("nested #[synchronized] pair, check off", off, || {
            nested_outer(c3)
        }),
        variant_setup("nested #[synchronized] pair, check on", on, || {
            nested_outer(c4)
        }),
        variant_setup("lock(\"x\").acquire(), check off", off, || {
            runtime_api("x", c5)
        }),
        variant_setup("lock(\"x\").acquire(), check on", on, || {
            runtime_api("x", c6)
        }),
        variant_setup(
            "block_on(lock(\"x\").acquire_async()), check off",
            off,
            || runtime_async(c7),
        ),
        variant_setup(
            "block_on(lock(\"x\").acquire_async()), check on",
            on,
            || runtime_async(c8),
        ),
    ];
    let stats = run_group(&mut vs, samples, Duration::from_millis(2));
    off();
    print_table(
        "## 4. Lock-order check off / on, one thread (ns/op; ratio vs raw parking_lot)",
        &stats,
        0,
    );
    for (what, off_at) in [
        ("#[synchronized]", 1),
        ("nested pair", 3),
        ("acquire()", 5),
        ("acquire_async()", 7),
    ] {
        let (a, b) = (stats[off_at].median(), stats[off_at + 1].median());
        println!("check on / off, {what}: {:.2}x (+{:.1} ns)", b / a, b - a);
    }
}

#[path = "inprocess/contention.rs"]
mod contention;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only == part;
    println!("# lockutils in-process benchmarks");
    println!("machine: {}", support::machine());
    if only == "profile" {
        // For `perf record`: the #[synchronized] call alone, many times.
        let mut c = 0u64;
        for _ in 0..50_000_000 {
            synchronized_x(&mut c);
        }
        println!("{c}");
        return;
    }
    if only == "profile-runtime" {
        // For `perf record`: `lock("x").acquire()` alone, entry kept alive.
        let mut c = 0u64;
        synchronized_x(&mut c);
        for _ in 0..20_000_000 {
            runtime_api("x", &mut c);
        }
        println!("{c}");
        return;
    }
    if only == "profile-dynamic" {
        // For `perf record`: `lock(name).acquire()` where nobody else uses
        // the name, so every call creates and frees its entry.
        let mut c = 0u64;
        let name = String::from("bench-dynamic-profile");
        for _ in 0..20_000_000 {
            runtime_api(&name, &mut c);
        }
        println!("{c}");
        return;
    }
    if run("uncontended") {
        uncontended(support::samples(300));
    }
    if run("threads") {
        two_threads((support::samples(300) / 20).max(3));
    }
    if run("memory") {
        memory();
    }
    if run("order") {
        lock_order(support::samples(300));
    }
    if run("async") {
        contention::uncontended_async(support::samples(300));
    }
    if run("tasks") {
        contention::tasks_on_one_name(support::runs(9));
    }
    if run("contended") {
        contention::threads_on_one_name(support::runs(15));
    }
}
