//! Fair (first come, first served) locks, `fair` / `.fair()`: waiters of one
//! process get the lock in the order they asked, threads and async tasks
//! alike (oslo's `fair=True`), and a queued writer holds back the readers
//! that come after it.
//!
//! Like oslo's own test, waiters are queued one at a time at known moments:
//! the next starts only once the lock's queue shows the previous one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockutils::{LockError, synchronized};

const PATIENCE: Duration = Duration::from_secs(60);

fn queued(name: &str) -> Option<usize> {
    lockutils::__private_v0_1::queued(name)
}

/// Waits until `name` has `n` waiters in line, failing after [`PATIENCE`].
fn await_queued(name: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while queued(name) != Some(n) {
        assert!(
            Instant::now() < deadline,
            "{name}: never {n} in line (now {:?})",
            queued(name)
        );
        std::thread::yield_now();
    }
}

#[test]
fn threads_acquire_in_arrival_order() {
    const NAME: &str = "fair-threads";
    let held = lockutils::lock(NAME).fair().acquire().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..10)
        .map(|i| {
            let order = order.clone();
            let t = std::thread::spawn(move || {
                let guard = lockutils::lock(NAME).fair().acquire().unwrap();
                order.lock().unwrap().push(i);
                drop(guard);
            });
            await_queued(NAME, i + 1);
            t
        })
        .collect();
    assert!(
        order.lock().unwrap().is_empty(),
        "a waiter ran while the lock was held"
    );
    drop(held);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(queued(NAME), None, "the entry outlived its users");
}

/// The same with tasks on one executor thread: a waiting task parks, so
/// the others (and the holder) keep running; the watchdog fails the test
/// if the thread blocks instead.
#[test]
fn async_tasks_acquire_in_arrival_order() {
    const NAME: &str = "fair-tasks";
    within(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let held = lockutils::lock(NAME).fair().acquire_async().await.unwrap();
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for i in 0..10 {
                let order = order.clone();
                tasks.push(tokio::spawn(async move {
                    let guard = lockutils::lock(NAME).fair().acquire_async().await.unwrap();
                    order.lock().unwrap().push(i);
                    // Hand over while other tasks are runnable.
                    tokio::task::yield_now().await;
                    drop(guard);
                }));
                while queued(NAME) != Some(i + 1) {
                    tokio::task::yield_now().await;
                }
            }
            assert!(order.lock().unwrap().is_empty());
            drop(held);
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
        });
    });
}

/// Threads and tasks in one line: a task queued between two threads gets
/// its turn between them.
#[test]
fn threads_and_tasks_share_one_line() {
    const NAME: &str = "fair-mixed";
    let held = lockutils::lock(NAME).fair().acquire().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let spawn_thread = |who: &'static str| {
        let order = order.clone();
        std::thread::spawn(move || {
            let g = lockutils::lock(NAME).fair().acquire().unwrap();
            order.lock().unwrap().push(who);
            drop(g);
        })
    };
    let t1 = spawn_thread("thread 1");
    await_queued(NAME, 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let o = order.clone();
    let task = rt.spawn(async move {
        let g = lockutils::lock(NAME).fair().acquire_async().await.unwrap();
        o.lock().unwrap().push("task");
        drop(g);
    });
    await_queued(NAME, 2);
    let t2 = spawn_thread("thread 2");
    await_queued(NAME, 3);
    drop(held);
    t1.join().unwrap();
    t2.join().unwrap();
    rt.block_on(task).unwrap();
    assert_eq!(*order.lock().unwrap(), ["thread 1", "task", "thread 2"]);
}

/// A fair reader/writer lock: a writer queued behind a reader holds back
/// the readers that come after it (even non-blocking ones), and the readers
/// queued behind the writer then get in together.
#[test]
fn a_queued_writer_holds_back_later_readers() {
    const NAME: &str = "fair-rw";
    let reader = || lockutils::lock(NAME).fair().shared();
    let first = reader().acquire().unwrap();
    // While nobody waits, readers share.
    drop(reader().blocking(false).acquire().expect("second reader"));

    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let writer = std::thread::spawn(move || {
        let g = lockutils::lock(NAME).fair().acquire().unwrap();
        l.lock().unwrap().push("writer in");
        assert_eq!(lockutils::__private_v0_1::holders(NAME), Some(1));
        l.lock().unwrap().push("writer out");
        drop(g);
    });
    await_queued(NAME, 1);
    let r = reader().blocking(false).acquire();
    assert!(
        matches!(r, Err(LockError::WouldBlock { .. })),
        "a reader passed a queued writer: {r:?}"
    );

    // Two readers queue behind the writer; once it is done they are let in
    // together: each waits inside for the other.
    let (tx_a, rx_a) = mpsc::channel();
    let (tx_b, rx_b) = mpsc::channel();
    let later = |me: &'static str, tx: mpsc::Sender<()>, rx: mpsc::Receiver<()>| {
        let log = log.clone();
        std::thread::spawn(move || {
            let g = lockutils::lock(NAME).fair().shared().acquire().unwrap();
            log.lock().unwrap().push(me);
            tx.send(()).unwrap();
            let met = rx.recv_timeout(PATIENCE).is_ok();
            drop(g);
            met
        })
    };
    let a = later("reader a in", tx_a, rx_b);
    await_queued(NAME, 2);
    let b = later("reader b in", tx_b, rx_a);
    await_queued(NAME, 3);
    assert!(log.lock().unwrap().is_empty());
    drop(first);
    writer.join().unwrap();
    assert!(a.join().unwrap(), "reader a was alone inside");
    assert!(b.join().unwrap(), "reader b was alone inside");
    let log = log.lock().unwrap();
    assert_eq!(log[..2], ["writer in", "writer out"]);
    let mut readers = log[2..].to_vec();
    readers.sort();
    assert_eq!(readers, ["reader a in", "reader b in"]);
}

/// A waiter that gives up (timeout) leaves the line: those behind it move
/// up, and the lock is not handed to nobody.
#[test]
fn a_timed_out_waiter_leaves_the_line() {
    const NAME: &str = "fair-timeout";
    let held = lockutils::lock(NAME).fair().acquire().unwrap();
    let quitter = std::thread::spawn(|| {
        lockutils::lock(NAME)
            .fair()
            .timeout(Duration::from_millis(50))
            .acquire()
            .map(drop)
    });
    await_queued(NAME, 1);
    let (tx, rx) = mpsc::channel();
    let patient = std::thread::spawn(move || {
        let g = lockutils::lock(NAME).fair().acquire().unwrap();
        tx.send(()).unwrap();
        drop(g);
    });
    let r = quitter.join().unwrap();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    // Only the patient waiter is left (it may have queued before or after
    // the quitter left).
    await_queued(NAME, 1);
    drop(held);
    rx.recv_timeout(PATIENCE)
        .expect("the patient waiter never got the lock");
    patient.join().unwrap();
}

#[test]
fn fair_and_unfair_users_of_one_name_are_a_kind_mismatch() {
    let held = lockutils::lock("fair-mismatch").fair().acquire().unwrap();
    let r = lockutils::lock("fair-mismatch").acquire();
    match r {
        Err(LockError::KindMismatch { this, other, .. }) => {
            assert_eq!(this, "a lock");
            assert_eq!(other, "a fair lock");
        }
        other => panic!("expected KindMismatch, got {other:?}"),
    }
    drop(held);
}

static ENTERED: AtomicUsize = AtomicUsize::new(0);

#[synchronized("fair-attr", fair)]
fn fair_fn(i: usize, order: &Mutex<Vec<usize>>) {
    ENTERED.fetch_add(1, Ordering::SeqCst);
    order.lock().unwrap().push(i);
}

#[synchronized("fair-attr", fair, shared, blocking = false)]
fn fair_read() -> Result<(), LockError> {
    Ok(())
}

/// `#[synchronized(.., fair)]` queues like `.fair()`, on the same lock.
#[test]
fn the_attribute_is_fair() {
    let held = lockutils::lock("fair-attr").fair().acquire().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..5)
        .map(|i| {
            let order = order.clone();
            let t = std::thread::spawn(move || fair_fn(i, &order));
            await_queued("fair-attr", i + 1);
            t
        })
        .collect();
    let r = fair_read();
    assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    assert_eq!(ENTERED.load(Ordering::SeqCst), 0);
    drop(held);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
    fair_read().expect("free again");
}

/// Runs `f` on a thread, failing the test if it does not finish in time.
fn within(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("still running after {PATIENCE:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test body panicked"),
    }
}
