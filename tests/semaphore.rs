//! Counted semaphores (`permits = N`): at most N holders at once, between
//! threads and tasks of one process and, with `external`, between real
//! processes (one byte-range lock per permit on the lock file). Every user of
//! a name must agree on N; the mismatches that can be seen are errors.
//!
//! Cross-process children are this test binary run again (see
//! `tests/support/mod.rs`); they count concurrent holders in a file that
//! every process maps into memory, and synchronise with the parent over
//! pipes and that shared memory, never through sleeps.
#![cfg(unix)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lockutils::{LockError, synchronized};
use support::shm::{Shm, spawn_sharing};
use support::{
    Child, all_done, await_go, holding, lock_child, param, param_as, ready_set_go, report,
    running_as, tried, wait_for,
};

/// Gives up on a condition that never comes true, instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// In-process.

/// 8 threads on `permits = 3`: never more than 3 inside, and 3 do get in at
/// once. The first holders keep their permit until the test has seen three
/// of them inside and a fourth attempt refused; then everyone runs freely.
#[test]
fn three_permits_admit_exactly_three_threads() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 2_000;
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(AtomicUsize::new(0));
    let lock = || lockutils::lock("sem-three").permits(3);
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (inside, max, gate) = (inside.clone(), max.clone(), gate.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let guard = lock().acquire().expect("acquire a permit");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    assert!(now <= 3, "{now} threads inside a 3-permit semaphore");
                    if round == 0 {
                        wait_for("the gate opens", PATIENCE, || {
                            gate.load(Ordering::SeqCst) == 1
                        });
                    }
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(guard);
                }
            })
        })
        .collect();
    wait_for("3 threads are inside", PATIENCE, || {
        inside.load(Ordering::SeqCst) == 3
    });
    assert_eq!(lockutils::__private_v0_1::holders("sem-three"), Some(3));
    let fourth = lock().blocking(false).acquire();
    assert!(
        matches!(fourth, Err(LockError::WouldBlock { .. })),
        "{fourth:?}"
    );
    gate.store(1, Ordering::SeqCst);
    for t in threads {
        t.join().expect("a counting thread failed");
    }
    assert_eq!(max.load(Ordering::SeqCst), 3);
    assert_eq!(
        lockutils::__private_v0_1::holders("sem-three"),
        None,
        "entry not freed"
    );
}

/// Tasks on a single-threaded executor: three hold permits while five wait
/// for one. Waiting must park the task, not the thread, or the task that
/// opens the gate would never run (the watchdog then fails the test).
#[test]
fn async_waiters_do_not_block_the_executor() {
    support::block_on_within(Duration::from_secs(60), async {
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (inside, max, gate) = (inside.clone(), max.clone(), gate.clone());
                tokio::spawn(async move {
                    let guard = lockutils::lock("sem-async")
                        .permits(3)
                        .acquire_async()
                        .await;
                    let guard = guard.expect("acquire a permit");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    // Every holder waits for a ticket from the main task.
                    gate.acquire().await.expect("gate").forget();
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(guard);
                })
            })
            .collect();
        while inside.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        // Everyone else is parked on the semaphore now; let them all run.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(inside.load(Ordering::SeqCst), 3, "a 4th task got in");
        gate.add_permits(8);
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(max.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn another_number_of_permits_is_a_kind_mismatch() {
    let held = lockutils::lock("sem-mismatch")
        .permits(3)
        .acquire()
        .unwrap();
    let r = lockutils::lock("sem-mismatch").permits(4).acquire();
    match r {
        Err(LockError::KindMismatch { name, this, other }) => {
            assert_eq!(name, "sem-mismatch");
            assert_eq!(this, "a semaphore of 4 permits");
            assert_eq!(other, "a semaphore of 3 permits");
        }
        other => panic!("expected KindMismatch, got {other:?}"),
    }
    let r = lockutils::lock("sem-mismatch").acquire();
    assert!(matches!(r, Err(LockError::KindMismatch { .. })), "{r:?}");
    let r = lockutils::lock("sem-mismatch").permits(3).fair().acquire();
    assert!(matches!(r, Err(LockError::KindMismatch { .. })), "{r:?}");
    // The same kind still works while the mismatches were refused.
    let second = lockutils::lock("sem-mismatch")
        .permits(3)
        .acquire()
        .unwrap();
    assert_eq!(lockutils::__private_v0_1::holders("sem-mismatch"), Some(2));
    drop((held, second));
    // Once nobody uses the name, it can become another kind.
    let g = lockutils::lock("sem-mismatch")
        .permits(4)
        .acquire()
        .unwrap();
    drop(g);
}

#[test]
fn zero_permits_and_shared_semaphores_are_invalid() {
    let r = lockutils::lock("sem-zero").permits(0).acquire();
    assert!(matches!(r, Err(LockError::InvalidOptions { .. })), "{r:?}");
    let r = lockutils::lock("sem-shared").permits(2).shared().acquire();
    assert!(matches!(r, Err(LockError::InvalidOptions { .. })), "{r:?}");
}

#[synchronized("sem-macro", permits = 2)]
fn two_at_a_time() -> Option<usize> {
    lockutils::__private_v0_1::holders("sem-macro")
}

#[synchronized("sem-macro-mismatch", permits = 2)]
fn two_or_panic() {}

#[test]
fn the_attribute_takes_a_permit() {
    assert_eq!(two_at_a_time(), Some(1));
    let held = lockutils::lock("sem-macro").permits(2).acquire().unwrap();
    assert_eq!(
        two_at_a_time(),
        Some(2),
        "the function did not share the semaphore"
    );
    // Both permits taken: the function waits for one.
    let other = lockutils::lock("sem-macro").permits(2).acquire().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || tx.send(two_at_a_time()).unwrap());
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "a third holder got in"
    );
    drop(other);
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Some(2));
    t.join().unwrap();
    drop(held);

    let _plain = lockutils::lock("sem-macro-mismatch").acquire().unwrap();
    let panic = std::thread::spawn(two_or_panic)
        .join()
        .expect_err("mismatch did not panic");
    let message = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(message.contains("sem-macro-mismatch"), "{message}");
    assert!(message.contains("semaphore of 2 permits"), "{message}");
}

// ---------------------------------------------------------------------------
// Across processes.

// Words of the counting test's shared memory.
const INSIDE: usize = 0;
const MAX: usize = 1;
const GATE: usize = 2;
const OVER: usize = 3;
const TAKEN: usize = 4;

const PROCESSES: usize = 6;
const THREADS: usize = 3;
const PERMITS: u32 = 4;
const ROUNDS: u64 = 300;

/// 6 processes x 3 threads on an external `permits = 4` semaphore: the
/// holders counted in shared memory never exceed 4, and reach 4 (the first
/// four holders keep their permits until the parent has seen them).
#[test]
fn four_permits_admit_exactly_four_holders_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (shm, mut children) = spawn_sharing(dir.path(), PROCESSES, || {
        lock_child("sem_child_count", dir.path(), "", "pool")
            .param("THREADS", THREADS.to_string())
            .param("ROUNDS", ROUNDS.to_string())
    });
    let started = ready_set_go(&mut children);
    wait_for("4 holders are inside", PATIENCE, || {
        shm.word(INSIDE).load(Ordering::SeqCst) == 4
    });
    // A fifth holder, from yet another process, is refused meanwhile.
    assert_eq!(try_in_child(dir.path(), "pool", PERMITS), "wouldblock");
    assert_eq!(shm.word(INSIDE).load(Ordering::SeqCst), 4);
    shm.word(GATE).store(1, Ordering::SeqCst);
    let took = all_done(children, started);
    let total = PROCESSES as u64 * THREADS as u64 * ROUNDS;
    assert_eq!(shm.word(TAKEN).load(Ordering::SeqCst), total);
    assert_eq!(
        shm.word(OVER).load(Ordering::SeqCst),
        0,
        "more than 4 holders at once"
    );
    assert_eq!(shm.word(MAX).load(Ordering::SeqCst), 4);
    assert_eq!(shm.word(INSIDE).load(Ordering::SeqCst), 0);
    println!(
        "{PROCESSES} processes x {THREADS} threads x {ROUNDS} rounds on permits = {PERMITS}: \
         max concurrent holders {}, {total} acquisitions in {took:?} ({:.0}/s)",
        shm.word(MAX).load(Ordering::SeqCst),
        total as f64 / took.as_secs_f64()
    );
}

/// Child: `THREADS` threads each take the `permits = 4` external semaphore
/// `ROUNDS` times, counting holders in the shared memory `SHM`. In their
/// first round the holders wait for the parent to open the gate.
#[test]
fn sem_child_count() {
    if !running_as("sem_child_count") {
        return;
    }
    let dir = PathBuf::from(param("DIR"));
    let name = param("NAME");
    let threads: usize = param_as("THREADS");
    let rounds: u64 = param_as("ROUNDS");
    let shm = Shm::from_parent();
    await_go();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let lock = lockutils::lock(&name)
                    .permits(PERMITS)
                    .external()
                    .lock_path(&dir);
                for round in 0..rounds {
                    let guard = lock
                        .acquire()
                        .unwrap_or_else(|e| panic!("sem_child_count: {e}"));
                    let now = shm.word(INSIDE).fetch_add(1, Ordering::SeqCst) + 1;
                    shm.word(MAX).fetch_max(now, Ordering::SeqCst);
                    if now > u64::from(PERMITS) {
                        shm.word(OVER).fetch_add(1, Ordering::SeqCst);
                    }
                    if round == 0 {
                        wait_for("the gate opens", PATIENCE, || {
                            shm.word(GATE).load(Ordering::SeqCst) == 1
                        });
                    }
                    shm.word(TAKEN).fetch_add(1, Ordering::SeqCst);
                    shm.word(INSIDE).fetch_sub(1, Ordering::SeqCst);
                    drop(guard);
                }
            });
        }
    });
    report("done");
}

/// What a `blocking(false)` attempt on the external semaphore of `permits`
/// permits gets in another process: [`support::outcome`], or `mismatch`.
fn try_in_child(dir: &Path, name: &str, permits: u32) -> String {
    tried(lock_child("support::child_try", dir, "", name).param("PERMITS", permits.to_string()))
}

/// A process holding `count` permits of the external semaphore of
/// `permits` permits (`0`: the plain lock) until ordered to `release` (or
/// `release-one` / `release-slot I`, then `release`).
fn hold_in_child(dir: &Path, name: &str, permits: u32, count: usize) -> Child {
    let c = lock_child("support::child_hold", dir, "", name).param("COUNT", count.to_string());
    holding(if permits > 0 {
        c.param("PERMITS", permits.to_string())
    } else {
        c
    })
}

/// A process taking the semaphore with 2 permits while another holds three
/// slots of it as a 4-permit semaphore: both of its slots are busy, and a
/// slot past its own count is held, so it cannot be the same semaphore.
/// That is reported, blocking or not, instead of waiting.
#[test]
fn fewer_permits_than_another_process_is_a_kind_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let holder = hold_in_child(dir.path(), "mixed", 4, 3);
    let lock = lockutils::lock("mixed")
        .permits(2)
        .external()
        .lock_path(dir.path());
    let r = lock.clone().blocking(false).acquire();
    assert!(matches!(r, Err(LockError::KindMismatch { .. })), "{r:?}");
    let path = dir.path().to_owned();
    let r = support::within(PATIENCE, move || {
        lockutils::lock("mixed")
            .permits(2)
            .external()
            .lock_path(&path)
            .acquire()
            .map(drop)
            .map_err(|e| (matches!(e, LockError::KindMismatch { .. }), e.to_string()))
    });
    match r {
        Err((true, message)) => {
            assert!(message.contains("\"mixed\""), "{message}");
            assert!(message.contains("2 permits"), "{message}");
        }
        other => panic!("blocking acquire: expected KindMismatch, got {other:?}"),
    }
    support::release(holder).finish();
}

/// A plain (whole-file) lock held by another process, taken as a semaphore:
/// every slot is busy and the lock reaches past them.
#[test]
fn semaphore_against_a_plain_lock_is_a_kind_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let holder = hold_in_child(dir.path(), "plain", 0, 1);
    assert_eq!(try_in_child(dir.path(), "plain", 3), "mismatch");
    support::release(holder).finish();
}

const MACRO_DIR: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/lockutils-semaphore-macro");

#[synchronized("sem-ext-macro", permits = 2, external, lock_path = MACRO_DIR, blocking = false)]
fn pooled_external() -> Result<Option<usize>, LockError> {
    Ok(lockutils::__private_v0_1::holders("sem-ext-macro"))
}

/// The attribute with `permits = 2, external`: another process holding
/// both permits refuses it, holding one leaves one for it.
#[test]
fn the_attribute_takes_a_permit_across_processes() {
    assert_eq!(pooled_external().unwrap(), Some(1));
    let mut holder = hold_in_child(Path::new(MACRO_DIR), "sem-ext-macro", 2, 2);
    let r = pooled_external();
    assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    holder.send("release-one");
    holder.expect("released-one");
    assert_eq!(pooled_external().unwrap(), Some(1));
    // The file is the one the attribute named.
    assert!(Path::new(MACRO_DIR).join("sem-ext-macro").is_file());
    support::release(holder).finish();
}

/// `acquire_async` of an external semaphore whose permits are all held
/// by another process leaves the kernel wait to the file's waiter thread;
/// meanwhile the single-threaded executor keeps running other tasks.
#[test]
fn async_external_wait_leaves_the_executor_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = hold_in_child(dir.path(), "async-pool", 2, 2);
    let path = dir.path().to_owned();
    let holder = support::block_on_within(PATIENCE, async move {
        let waiter = tokio::spawn(async move {
            let lock = lockutils::lock("async-pool")
                .permits(2)
                .external()
                .lock_path(&path);
            let guard = lock.acquire_async().await.expect("async permit");
            guard.location().and_then(lockutils::Location::into_file)
        });
        // Ticks on the same thread while the waiter waits.
        let mut ticks = 0;
        while ticks < 20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            ticks += 1;
        }
        assert!(!waiter.is_finished(), "got a permit another process holds");
        holder.send("release");
        holder.expect("released");
        let file = waiter.await.expect("waiter task");
        assert!(file.is_some_and(|f| f.ends_with("async-pool")));
        holder
    });
    holder.finish();
}

/// A waiter for an external semaphore whose permits are all taken must get
/// the first permit freed, not only the one slot it waits on in the kernel
/// (chosen from its pid): here the holder frees the other slot.
#[test]
fn a_waiter_gets_whichever_permit_frees_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = hold_in_child(dir.path(), "any-slot", 2, 2);
    let path = dir.path().to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let lock = lockutils::lock("any-slot")
            .permits(2)
            .external()
            .lock_path(&path);
        let guard = lock.acquire();
        let _ = tx.send(guard.map(drop).map_err(|e| e.to_string()));
    });
    // Waiting: in the kernel on one slot (the file's waiter thread), or,
    // with classic locks, which poll instead, holding its in-process permit.
    if support::cohorting() {
        support::await_blocked_waiters(&dir.path().join("any-slot"), 1);
    } else {
        let deadline = std::time::Instant::now() + support::PATIENCE;
        while lockutils::__private_v0_1::holders("any-slot") != Some(1) {
            assert!(std::time::Instant::now() < deadline, "never waited");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // The first wait of a process is on slot pid % 2; free the other (which
    // the waiter must find by trying every slot).
    let other = 1 - std::process::id() % 2;
    holder.send(&format!("release-slot {other}"));
    holder.expect("released-one");
    let got = rx.recv_timeout(Duration::from_secs(5));
    assert!(
        matches!(got, Ok(Ok(()))),
        "a permit was free for 5 s and the waiter did not get it: {got:?}"
    );
    support::release(holder).finish();
}

// ---------------------------------------------------------------------------
// Tracing.

#[test]
fn acquire_event_carries_mode_permits_and_fair() {
    let out = support::capture::debug_output(|| {
        drop(
            lockutils::lock("sem-traced")
                .permits(5)
                .fair()
                .acquire()
                .unwrap(),
        );
        drop(lockutils::lock("rw-traced").shared().acquire().unwrap());
    });
    let acquired: Vec<&str> = out.lines().filter(|l| l.contains("acquired by")).collect();
    assert_eq!(acquired.len(), 2, "{out}");
    let (sem, rw) = (acquired[0], acquired[1]);
    assert!(sem.contains("lock=\"sem-traced\""), "{sem}");
    assert!(sem.contains("mode=\"exclusive\""), "{sem}");
    assert!(sem.contains("permits=5"), "{sem}");
    assert!(sem.contains("fair=true"), "{sem}");
    assert!(rw.contains("lock=\"rw-traced\""), "{rw}");
    assert!(rw.contains("mode=\"shared\""), "{rw}");
    assert!(rw.contains("permits=1"), "{rw}");
    assert!(rw.contains("fair=false"), "{rw}");
}

/// Holding some of a semaphore's permits is not re-entry: the thread may
/// wait for another, which another thread can release. (It used to panic
/// with "would deadlock".)
#[test]
fn a_thread_holding_one_of_two_permits_may_wait_for_the_other() {
    let lock = || lockutils::lock("sem-wait-second").permits(2);
    let mine = lock().acquire().unwrap();
    let (taken_tx, taken_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let g = lock().acquire().unwrap();
        taken_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        drop(g);
    });
    taken_rx.recv().unwrap();
    // Both permits are taken, one by this thread: a timed wait times out
    // (no re-entry panic).
    let r = lock().timeout(Duration::from_millis(50)).acquire();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    // And a blocking wait gets the permit the other thread releases.
    release_tx.send(()).unwrap();
    let second = lock().acquire().unwrap();
    assert_eq!(
        lockutils::__private_v0_1::holders("sem-wait-second"),
        Some(2)
    );
    drop((mine, second));
    other.join().unwrap();
}

/// Holding every permit is re-entry: waiting could never end.
#[test]
fn a_thread_holding_every_permit_gets_the_reentry_panic() {
    let lock = || lockutils::lock("sem-hold-all").permits(2);
    let (a, b) = (lock().acquire().unwrap(), lock().acquire().unwrap());
    let r = std::panic::catch_unwind(|| lock().acquire());
    let message = *r
        .expect_err("waited on itself")
        .downcast::<String>()
        .unwrap();
    assert!(
        message.contains("already holds lock \"sem-hold-all\""),
        "{message}"
    );
    drop((a, b));
}
