//! Async and contended in-process benchmarks: async tasks (against
//! tokio's and async-lock's mutexes) and several threads on one name
//! (against one `parking_lot::Mutex`).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::future::block_on;
use lockutils::synchronized;

use crate::support::{self, mono_ns, percentile, print_table, run_group, variant};
use crate::{raw_parking_lot, synchronized_x, verdict};

static TOKIO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static ASYNC_LOCK: async_lock::Mutex<()> = async_lock::Mutex::new(());

/// Polls `fut` once: an uncontended lock never returns `Pending`, so this
/// measures the future itself, with no executor around it.
#[inline(always)]
fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an uncontended lock returned Pending"),
    }
}

#[inline(never)]
#[synchronized("async-x")]
async fn synchronized_async(c: &mut u64) {
    *black_box(c) += 1;
}

#[inline(never)]
async fn tokio_async(c: &mut u64) {
    let _g = TOKIO.lock().await;
    *black_box(c) += 1;
}

#[inline(never)]
async fn async_lock_async(c: &mut u64) {
    let _g = ASYNC_LOCK.lock().await;
    *black_box(c) += 1;
}

#[inline(never)]
async fn builder_async(c: &mut u64) {
    let _g = lockutils::lock("async-x")
        .acquire_async()
        .await
        .expect("lock");
    *black_box(c) += 1;
}

/// Uncontended `#[synchronized] async fn`.
pub fn uncontended_async(samples: usize) {
    let mut c = [0u64; 6];
    let [c0, c1, c2, c3, c4, c5] = &mut c;
    poll_once(synchronized_async(c1)); // the call site caches its entry
    let mut vs = vec![
        variant("static tokio::sync::Mutex, lock().await (peer)", || {
            poll_once(tokio_async(c0))
        }),
        variant("#[synchronized(\"async-x\")] async fn", || {
            poll_once(synchronized_async(c1))
        }),
        variant("static async_lock::Mutex, lock().await", || {
            poll_once(async_lock_async(c2))
        }),
        variant("lock(\"async-x\").acquire_async().await", || {
            poll_once(builder_async(c3))
        }),
        variant("block_on: static tokio::sync::Mutex", || {
            block_on(tokio_async(c4))
        }),
        variant("block_on: #[synchronized(\"async-x\")] async fn", || {
            block_on(synchronized_async(c5))
        }),
    ];
    let stats = run_group(&mut vs, samples, Duration::from_millis(2));
    print_table(
        "## 5a. Uncontended async lock + body + unlock, polled once (ns/op; ratio vs tokio)",
        &stats,
        0,
    );
    verdict(
        "#[synchronized] async fn / tokio::sync::Mutex (median)",
        stats[1].median() / stats[0].median(),
        1.0,
    );
    verdict(
        "block_on(#[synchronized] async fn) / block_on(tokio::sync::Mutex) (median)",
        stats[5].median() / stats[4].median(),
        1.0,
    );
    let (mut n, mut m) = (0, 0);
    println!(
        "future sizes: #[synchronized] async fn {} bytes, tokio::sync::Mutex async fn {} bytes",
        std::mem::size_of_val(&synchronized_async(&mut n)),
        std::mem::size_of_val(&tokio_async(&mut m)),
    );
}

// ---- 64 tasks, one name, 2 workers ----------------------------------------

const TASKS: usize = 64;
const ROUNDS: u64 = 200;

#[synchronized("tasks-one-name")]
async fn task_synchronized(n: &AtomicU64) {
    let v = n.load(Ordering::Relaxed);
    tokio::task::yield_now().await;
    n.store(v + 1, Ordering::Relaxed);
}

async fn task_tokio(n: &AtomicU64) {
    let _g = TOKIO.lock().await;
    let v = n.load(Ordering::Relaxed);
    tokio::task::yield_now().await;
    n.store(v + 1, Ordering::Relaxed);
}

async fn task_async_lock(n: &AtomicU64) {
    let _g = ASYNC_LOCK.lock().await;
    let v = n.load(Ordering::Relaxed);
    tokio::task::yield_now().await;
    n.store(v + 1, Ordering::Relaxed);
}

#[derive(Clone, Copy)]
enum Peer {
    Tokio,
    Synchronized,
    AsyncLock,
}

/// One run: 64 tasks x 200 locked increments (a `yield_now` inside the
/// lock, so the lock is held across an await). ns per increment; the total
/// is checked, so a broken lock cannot look fast.
fn tasks_run(rt: &tokio::runtime::Runtime, peer: Peer) -> f64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.store(0, Ordering::Relaxed);
    let t0 = mono_ns();
    rt.block_on(async {
        let hs: Vec<_> = (0..TASKS)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..ROUNDS {
                        match peer {
                            Peer::Tokio => task_tokio(&N).await,
                            Peer::Synchronized => task_synchronized(&N).await,
                            Peer::AsyncLock => task_async_lock(&N).await,
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.await.expect("task");
        }
    });
    let dt = mono_ns() - t0;
    assert_eq!(
        N.load(Ordering::Relaxed),
        TASKS as u64 * ROUNDS,
        "lost update"
    );
    dt as f64 / (TASKS as u64 * ROUNDS) as f64
}

/// 64 tasks on one name, 2 workers.
pub fn tasks_on_one_name(runs: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let peers = [
        (Peer::Tokio, "tokio::sync::Mutex (peer)"),
        (Peer::Synchronized, "#[synchronized] async fn"),
        (Peer::AsyncLock, "async_lock::Mutex"),
    ];
    for (p, _) in peers {
        tasks_run(&rt, p); // warm up
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    for round in 0..runs {
        for j in 0..peers.len() {
            let i = (round + j) % peers.len();
            ns[i].push(tasks_run(&rt, peers[i].0));
        }
    }
    let stats: Vec<support::Stats> = peers
        .iter()
        .zip(ns)
        .map(|((_, name), samples)| support::Stats {
            name: (*name).to_owned(),
            samples,
        })
        .collect();
    print_table(
        &format!(
            "## 5b. {TASKS} tasks x {ROUNDS} locked increments on one lock, yield_now inside, \
             2 tokio workers (ns per increment; {runs} runs interleaved)"
        ),
        &stats,
        0,
    );
    verdict(
        "#[synchronized] async fn / tokio::sync::Mutex, 64 tasks (median)",
        stats[1].median() / stats[0].median(),
        1.0,
    );
}

// ---- several threads, one name ----------------------------------------------

const THREADS: usize = 4;

/// Runs `THREADS` threads on one lock for `dur`: total M ops/s.
fn hammer(sync: bool, dur: Duration) -> f64 {
    let barrier = Barrier::new(THREADS + 1);
    let stop = AtomicBool::new(false);
    let spans: Vec<(u64, u64, u64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                let (barrier, stop) = (&barrier, &stop);
                s.spawn(move || {
                    let mut c = 0u64;
                    barrier.wait();
                    let t0 = mono_ns();
                    let mut ops = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            if sync {
                                synchronized_x(&mut c);
                            } else {
                                raw_parking_lot(&mut c);
                            }
                        }
                        ops += 64;
                    }
                    (t0, mono_ns(), ops)
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.1).max().unwrap_or(0);
    let ops: u64 = spans.iter().map(|s| s.2).sum();
    ops as f64 / ((end - start) as f64 / 1e3)
}

/// 4 threads hammering one name, a distribution over runs (each run times
/// both, back to back, in alternating order).
pub fn threads_on_one_name(runs: usize) {
    let mut c = 0;
    synchronized_x(&mut c); // the call site caches its entry
    let dur = Duration::from_millis(100);
    let (mut pl, mut ls, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..runs {
        let (a, b) = if round % 2 == 0 {
            let a = hammer(false, dur);
            (a, hammer(true, dur))
        } else {
            let b = hammer(true, dur);
            (hammer(false, dur), b)
        };
        pl.push(a);
        ls.push(b);
        // Time ratio: parking_lot throughput over ours.
        ratio.push(a / b);
    }
    println!(
        "\n## 5c. {THREADS} threads on one lock, tiny body (M ops/s, all threads; {runs} runs of \
         {} ms, each pair back to back)",
        dur.as_millis()
    );
    println!(
        "| {:<40} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} |",
        "variant", "min", "p25", "median", "p75", "max"
    );
    println!(
        "|{:-<42}|{:->10}|{:->10}|{:->10}|{:->10}|{:->10}|",
        "", ":", ":", ":", ":", ":"
    );
    for (name, xs) in [
        ("one parking_lot::Mutex (peer)", &pl),
        ("#[synchronized(\"x\")]", &ls),
        ("time ratio (parking_lot / ours)", &ratio),
    ] {
        println!(
            "| {:<40} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} |",
            name,
            percentile(xs, 0.0),
            percentile(xs, 25.0),
            percentile(xs, 50.0),
            percentile(xs, 75.0),
            percentile(xs, 100.0)
        );
    }
    let worst = percentile(&ratio, 100.0);
    verdict(
        "4 threads, #[synchronized] / parking_lot (median time ratio)",
        percentile(&ratio, 50.0),
        1.2,
    );
    println!(
        "worst run: {worst:.2}x ({} 2x)",
        if worst <= 2.0 { "none above" } else { "ABOVE" }
    );
}
