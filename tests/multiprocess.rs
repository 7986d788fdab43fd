//! External locks between real processes: this test binary runs itself
//! again as children (see `tests/support/mod.rs`), which synchronise with
//! the parent over pipes. Timing bounds, where there are any, have wide
//! slack; the figures they measure are printed (`--nocapture` shows them).
#![cfg(unix)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockutils::LockError;
use support::{Child, await_blocked_waiters, hold, lock_child, release, report, try_in_child};

// ---------------------------------------------------------------------------
// 8 processes x 4 threads x 2,500 increments of one counter file.

const PROCESSES: usize = 8;
const THREADS: usize = 4;
const INCREMENTS: u64 = 2_500;

#[test]
fn counter_file_is_exact_across_processes_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    let started = Instant::now();
    let mut children: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            support::counter_child(
                dir.path(),
                "",
                "counter",
                &counter,
                THREADS,
                INCREMENTS,
                Duration::ZERO,
            )
        })
        .collect();
    // Let every process start before any counts, so they all contend.
    for c in &mut children {
        c.expect("ready");
    }
    let counting = Instant::now();
    for c in &mut children {
        c.send("go");
    }
    for c in &mut children {
        c.expect(&format!("done {}", THREADS as u64 * INCREMENTS));
    }
    let counted = counting.elapsed();
    for c in children {
        c.finish();
    }
    let want = PROCESSES as u64 * THREADS as u64 * INCREMENTS;
    assert_eq!(
        support::read_counter(&counter),
        want,
        "lost or duplicated increments"
    );
    println!(
        "{PROCESSES} processes x {THREADS} threads x {INCREMENTS} increments = {want}: \
         counting took {counted:?} ({:.0} increments/s), whole test {:?}",
        want as f64 / counted.as_secs_f64(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// A holder killed with SIGKILL.

#[test]
fn sigkill_of_the_holder_wakes_a_blocked_waiter_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killme");
    let mut holder = hold(dir.path(), "", "killme");
    let mut waiter = lock_child("support::child_wait", dir.path(), "", "killme").spawn();
    waiter.expect("busy");
    // The waiter is asleep in the kernel, not about to call it.
    await_blocked_waiters(&path, 1);

    let killed = Instant::now();
    holder.kill();
    waiter.expect("acquired");
    let woke = killed.elapsed();
    println!("SIGKILL of the holder -> waiter in another process acquired after {woke:?}");
    assert!(
        woke < Duration::from_secs(2),
        "waiter took {woke:?} to acquire after SIGKILL"
    );

    // And the lock really moved: the waiter holds it now.
    assert_eq!(try_in_child(dir.path(), "", "killme"), "wouldblock");
    release(waiter).finish();
}

// ---------------------------------------------------------------------------
// A panic inside an external #[synchronized] body.

#[test]
fn panic_in_synchronized_body_releases_both_locks() {
    let dir = tempfile::tempdir().unwrap();
    let mut panicker = support::child("child_panic")
        .param("DIR", dir.path())
        .spawn();
    panicker.expect("inside");
    // Another process waits for the lock the body holds.
    let mut waiter = lock_child("support::child_wait", dir.path(), "", "panicky").spawn();
    waiter.expect("busy");
    await_blocked_waiters(&dir.path().join("panicky"), 1);

    panicker.send("panic");
    panicker.expect("caught");
    // The panicking process is still alive: only the unwinding released it.
    waiter.expect("acquired");
    let waiter = release(waiter);
    // Its in-process lock was released too (checked in the child).
    panicker.send("check");
    panicker.expect("in-process lock free");
    panicker.finish();
    waiter.finish();
}

#[lockutils::synchronized("panicky", external)]
fn panics_while_holding() {
    report("inside");
    support::await_order("panic");
    panic!("deliberate panic inside a synchronized body");
}

/// Child: runs an external `#[synchronized]` function that panics, catches
/// the panic, and checks the in-process lock is free afterwards.
#[test]
fn child_panic() {
    if !support::running_as("child_panic") {
        return;
    }
    lockutils::config::set_lock_path(support::param("DIR"));
    let r = std::panic::catch_unwind(panics_while_holding);
    assert!(r.is_err(), "the body should have panicked");
    assert!(
        lockutils::locks_held().is_empty(),
        "still listed: {:?}",
        lockutils::locks_held()
    );
    report("caught");
    support::await_order("check");
    // From another thread, so a still-held lock would show as busy rather
    // than as a re-entry panic.
    let free = std::thread::spawn(|| lockutils::lock("panicky").blocking(false).acquire().is_ok())
        .join()
        .unwrap();
    assert!(
        free,
        "in-process lock \"panicky\" still held after the panic"
    );
    report("in-process lock free");
}

// ---------------------------------------------------------------------------
// Children spawned (fork + exec) while the lock is held.

#[test]
fn spawned_child_does_not_keep_the_lock_after_release() {
    spawned_child_case("release");
}

#[test]
fn spawned_child_does_not_keep_the_lock_after_the_holder_exits() {
    spawned_child_case("exit");
}

/// A process `P` holds `spawned`, starts `sleep 30`, then releases (by
/// dropping the guard, or by exiting without dropping it); a third process
/// must get the lock while `sleep` is still running.
fn spawned_child_case(how: &str) {
    let dir = tempfile::tempdir().unwrap();
    let lock_file = dir.path().join("spawned");
    let mut holder = support::child("child_spawner")
        .param("DIR", dir.path())
        .spawn();
    let sleeper: i32 = holder
        .next_report()
        .strip_prefix("sleeper ")
        .expect("sleeper pid report")
        .parse()
        .unwrap();
    let _reap = KillOnDrop(sleeper);
    assert_eq!(try_in_child(dir.path(), "", "spawned"), "wouldblock");
    assert!(
        !fds_of(sleeper).contains(&lock_file),
        "the lock file's descriptor leaked into sleep"
    );

    holder.send(how);
    let holder = if how == "exit" {
        holder.finish();
        None
    } else {
        holder.expect("released");
        Some(holder)
    };
    assert!(alive(sleeper), "sleep should still be running");
    assert_eq!(
        try_in_child(dir.path(), "", "spawned"),
        "ok",
        "the spawned child kept the lock"
    );
    assert!(alive(sleeper), "sleep should still be running");
    if let Some(mut holder) = holder {
        holder.send("exit");
        holder.finish();
    }
}

/// Child: holds `spawned`, spawns `sleep 30`, reports its pid; then on
/// `release` drops the guard (and waits for `exit`), on `exit` exits at
/// once without running destructors, so only the kernel releases.
#[test]
fn child_spawner() {
    if !support::running_as("child_spawner") {
        return;
    }
    let dir = PathBuf::from(support::param("DIR"));
    let guard = lockutils::lock("spawned")
        .external()
        .lock_path(&dir)
        .acquire()
        .unwrap();
    let mut sleep = std::process::Command::new("sleep")
        .arg("30")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sleep");
    report(format!("sleeper {}", sleep.id()));
    match support::order().as_str() {
        "exit" => std::process::exit(0),
        "release" => {
            drop(guard);
            report("released");
            support::await_order("exit");
            let _ = sleep.kill();
            let _ = sleep.wait();
        }
        other => panic!("unexpected order {other:?}"),
    }
}

struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on a pid we started (via a child).
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

fn alive(pid: i32) -> bool {
    // A zombie would still "exist"; `sleep 30` is not one yet.
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// What the descriptors of process `pid` point to.
fn fds_of(pid: i32) -> Vec<PathBuf> {
    let fd_dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&fd_dir)
        .unwrap_or_else(|e| panic!("list {fd_dir}: {e}"))
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect()
}

// ---------------------------------------------------------------------------
// blocking(false), timeout and async against another process's hold.

#[test]
fn nonblocking_and_timeout_against_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let holder = hold(dir.path(), "nova-", "busy");
    let lock = lockutils::lock("busy")
        .prefix("nova-")
        .external()
        .lock_path(dir.path());

    match lock.clone().blocking(false).acquire() {
        Err(LockError::WouldBlock { name }) => assert_eq!(name, "nova-busy"),
        other => panic!("expected WouldBlock, got {other:?}"),
    }

    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let r = lock.clone().timeout(timeout).acquire();
    let waited = started.elapsed();
    match r {
        Err(LockError::Timeout { name, timeout: t }) => {
            assert_eq!(name, "nova-busy");
            assert_eq!(t, timeout);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    println!("timeout {timeout:?} against another process: gave up after {waited:?}");
    assert!(waited >= timeout, "gave up early, after {waited:?}");
    assert!(
        waited < timeout + Duration::from_secs(3),
        "gave up late, after {waited:?}"
    );
    // Failing left nothing held in this process.
    assert!(lockutils::locks_held().is_empty());

    let holder = release(holder);
    let guard = lock
        .clone()
        .timeout(Duration::from_secs(30))
        .acquire()
        .unwrap();
    assert_eq!(
        guard
            .location()
            .and_then(lockutils::Location::into_file)
            .as_deref(),
        Some(&*dir.path().join("nova-busy"))
    );
    assert_eq!(try_in_child(dir.path(), "nova-", "busy"), "wouldblock");
    drop(guard);
    holder.finish();
}

#[test]
fn timed_out_wait_leaves_nothing_behind() {
    // A timed wait leaves the kernel wait to the file's waiter thread; once
    // it gives up, that thread must let go as soon as it gets the file.
    let dir = tempfile::tempdir().unwrap();
    let holder = hold(dir.path(), "", "abandoned");
    let lock = lockutils::lock("abandoned")
        .external()
        .lock_path(dir.path());
    let r = lock.clone().timeout(Duration::from_millis(50)).acquire();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    let holder = release(holder);
    // The waiter thread may take the file briefly; a blocking acquire
    // from another process must still get it.
    let mut waiter = lock_child("support::child_wait", dir.path(), "", "abandoned").spawn();
    let _ = waiter.next_report(); // busy or free, depending on the waiter thread
    waiter.expect("acquired");
    release(waiter).finish();
    holder.finish();
}

#[test]
fn async_acquire_waits_for_another_process_without_blocking_the_executor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("async");
    let holder = hold(dir.path(), "", "async");
    // On a watchdog thread: a blocked executor would otherwise hang the test.
    let holder = support::within(Duration::from_secs(120), {
        let dir = dir.path().to_owned();
        move || async_phases(&dir, &path, holder)
    });
    release_confirmed(holder);
    assert_eq!(try_in_child(dir.path(), "", "async"), "ok");
}

/// The async test proper, on one single-threaded executor.
fn async_phases(dir: &Path, path: &Path, mut holder: Child) -> Child {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let lock = lockutils::lock("async").external().lock_path(dir);

        // 1. blocking(false): busy at once.
        let r = lock.clone().blocking(false).acquire_async().await;
        assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");

        // 2. Times out, while the one executor thread keeps running tasks.
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let (r, ticks) = while_ticking(lock.clone().timeout(timeout).acquire_async()).await;
        let waited = started.elapsed();
        assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
        assert!(
            waited >= timeout && waited < timeout + Duration::from_secs(3),
            "{waited:?}"
        );
        assert!(
            ticks >= 5,
            "the executor ran only {ticks} ticks while waiting {waited:?}"
        );
        println!("async timeout {timeout:?}: gave up after {waited:?}, {ticks} ticks meanwhile");

        // 3. Waits (no timeout) until the other process releases. The task
        // that tells it to release runs only if the executor is free while
        // the acquisition waits (in the kernel, on the file's waiter thread).
        let order_release = async {
            // Waiting in the kernel (on the file's waiter thread), or, with
            // classic locks, which poll instead, holding the in-process
            // lock while it tries the file now and then.
            let waiting = || match support::cohorting() {
                true => support::blocked_waiters(path) > 0,
                false => lockutils::__private_v0_1::holders("async") == Some(1),
            };
            while !waiting() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            holder.send("release");
        };
        let (r, ()) = futures_lite::future::zip(lock.acquire_async(), order_release).await;
        let guard = r.expect("acquire after the other process released");
        assert_eq!(
            guard
                .location()
                .and_then(lockutils::Location::into_file)
                .as_deref(),
            Some(path)
        );
        let busy = tokio::task::spawn_blocking({
            let dir = dir.to_owned();
            move || try_in_child(&dir, "", "async")
        });
        assert_eq!(busy.await.unwrap(), "wouldblock");
        drop(guard);
    });
    holder
}

fn release_confirmed(mut holder: Child) {
    holder.expect("released");
    holder.finish();
}

#[test]
fn cancelled_async_wait_lets_go_of_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let holder = hold(dir.path(), "", "cancelled");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let lock = lockutils::lock("cancelled")
        .external()
        .lock_path(dir.path());
    // Dropped after 100 ms while the file's waiter thread waits in the kernel.
    let r = rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(100), lock.acquire_async()).await
    });
    assert!(
        r.is_err(),
        "acquired while another process held the lock: {r:?}"
    );
    let holder = release(holder);
    // The waiter thread may get the file now; it must let go of it, and
    // of the in-process lock.
    let mut waiter = lock_child("support::child_wait", dir.path(), "", "cancelled").spawn();
    let _ = waiter.next_report(); // "busy" or "free", depending on the waiter thread
    waiter.expect("acquired");
    release(waiter).finish();
    let again = rt.block_on(
        lock.clone()
            .timeout(Duration::from_secs(30))
            .acquire_async(),
    );
    assert_eq!(
        again
            .unwrap()
            .location()
            .and_then(lockutils::Location::into_file)
            .as_deref(),
        Some(&*dir.path().join("cancelled"))
    );
    holder.finish();
}

/// Runs `fut` next to a task that ticks every 5 ms on the same thread;
/// returns its output and how many ticks happened before it finished.
async fn while_ticking<F: std::future::Future>(fut: F) -> (F::Output, u32) {
    let done = std::cell::Cell::new(false);
    let ticker = async {
        let mut ticks = 0;
        while !done.get() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            ticks += 1;
        }
        ticks
    };
    let main = async {
        let out = fut.await;
        done.set(true);
        out
    };
    futures_lite::future::zip(main, ticker).await
}

/// Checks the helpers' view of a lock file matches the runtime's.
#[test]
fn lock_file_path_is_where_the_children_look() {
    let dir = tempfile::tempdir().unwrap();
    let guard = lockutils::lock("where")
        .prefix("p")
        .external()
        .lock_path(dir.path())
        .acquire();
    let guard = guard.unwrap();
    let expected: &Path = &dir.path().join("p-where");
    assert_eq!(
        guard
            .location()
            .and_then(lockutils::Location::into_file)
            .as_deref(),
        Some(expected)
    );
    assert_eq!(try_in_child(dir.path(), "p", "where"), "wouldblock");
    drop(guard);
    assert_eq!(try_in_child(dir.path(), "p-", "where"), "ok");
}
