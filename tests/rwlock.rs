//! Reader/writer locks: `shared` (a reader) against the default exclusive
//! mode (a writer), between threads, async tasks, real processes, and
//! Python processes using fasteners' `InterProcessReaderWriterLock`.
//!
//! Readers overlap, a writer overlaps no one, a SIGKILLed holder's hold
//! goes with it, and in-process a waiting writer keeps new readers out
//! (writer preference; across processes the kernel decides, and Linux does
//! not prefer writers).
//!
//! Cross-process children are this test binary run again (see
//! `tests/support/mod.rs`); they synchronise with the parent over pipes and
//! a file every process maps into memory, never through sleeps.
#![cfg(unix)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockutils::{Lock, LockError, synchronized};
use support::shm::{Shm, spawn_sharing};
use support::{
    Child, ChildBuilder, all_done, await_blocked_waiters, await_go, holding, lock_child, param,
    ready_set_go, release, report, running_as, tried, wait_for,
};

const PATIENCE: Duration = Duration::from_secs(60);

/// Works (spins) for `d` while holding a lock, so that holders overlap
/// where they may. Nothing waits on it.
fn busy(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn is_busy<T: std::fmt::Debug>(r: &Result<T, LockError>) -> bool {
    matches!(r, Err(LockError::WouldBlock { .. }))
}

// ---------------------------------------------------------------------------
// In-process.

/// Two readers inside at once: each, once in, waits for the other to be in
/// too. Were readers exclusive, the second could not enter while the first
/// waits, and both would time out.
fn two_readers_meet(lock: impl Fn() -> Lock<'static> + Send + Sync + 'static) {
    let lock = Arc::new(lock);
    let (tx_a, rx_a) = mpsc::channel();
    let (tx_b, rx_b) = mpsc::channel();
    let reader = |tx: mpsc::Sender<()>, rx: mpsc::Receiver<()>| {
        let lock = lock.clone();
        std::thread::spawn(move || {
            let guard = lock().shared().acquire().expect("reader");
            tx.send(()).unwrap();
            let met = rx.recv_timeout(Duration::from_secs(10)).is_ok();
            drop(guard);
            met
        })
    };
    let a = reader(tx_a, rx_b);
    let b = reader(tx_b, rx_a);
    assert!(a.join().unwrap(), "reader a was alone inside");
    assert!(b.join().unwrap(), "reader b was alone inside");
}

#[test]
fn readers_overlap_in_process() {
    two_readers_meet(|| lockutils::lock("rw-overlap"));
}

#[test]
fn readers_overlap_in_process_with_external() {
    // `'static` through a static, not `Box::leak`: LeakSanitizer counts
    // what a static reaches as in use (scripts/sanitizers.sh).
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir: &'static Path = DIR.get_or_init(|| tempfile::tempdir().unwrap().keep());
    two_readers_meet(move || lockutils::lock("rw-overlap-ext").external().lock_path(dir));
    let _ = std::fs::remove_dir_all(dir);
}

/// 4 reader threads and 2 writer threads, each logging entry and exit
/// while holding the lock; replaying the log, a writer always entered an
/// empty room and no reader entered while a writer was in.
#[test]
fn a_writer_never_overlaps_anyone_in_process() {
    #[derive(Clone, Copy, Debug)]
    enum Event {
        In(bool),
        Out(bool),
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let log = log.clone();
            let writer = i < 2;
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    let lock = lockutils::lock("rw-log");
                    let lock = if writer { lock } else { lock.shared() };
                    let guard = lock.acquire().unwrap();
                    log.lock().unwrap().push(Event::In(writer));
                    busy(Duration::from_micros(20));
                    log.lock().unwrap().push(Event::Out(writer));
                    drop(guard);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (mut readers, mut writers, mut max_readers) = (0usize, 0usize, 0usize);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 6 * 2_000 * 2);
    for (i, e) in log.iter().enumerate() {
        match *e {
            Event::In(true) => {
                assert!(
                    readers == 0 && writers == 0,
                    "event {i}: a writer joined {readers} readers, {writers} writers"
                );
                writers += 1;
            }
            Event::In(false) => {
                assert_eq!(writers, 0, "event {i}: a reader joined a writer");
                readers += 1;
                max_readers = max_readers.max(readers);
            }
            Event::Out(true) => writers -= 1,
            Event::Out(false) => readers -= 1,
        }
    }
    println!("rw-log: up to {max_readers} readers were inside at once");
}

/// Writer preference: while a writer waits behind a reader, a new reader
/// is refused (`blocking(false)`) and a blocking one waits for the writer
/// to be done.
#[test]
fn a_waiting_writer_keeps_new_readers_out() {
    const NAME: &str = "rw-prefer";
    let reader = || lockutils::lock(NAME).shared();
    let first = reader().acquire().unwrap();
    drop(
        reader()
            .blocking(false)
            .acquire()
            .expect("readers share while nobody waits"),
    );

    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let writer = std::thread::spawn(move || {
        let g = lockutils::lock(NAME).acquire().unwrap();
        l.lock().unwrap().push("writer");
        drop(g);
    });
    // The barging lock has no visible queue: the writer is waiting once a
    // new reader is refused while only the first reader holds.
    wait_for("a new reader is refused", PATIENCE, || {
        is_busy(&reader().blocking(false).acquire())
    });
    assert_eq!(lockutils::__private_v0_1::holders(NAME), Some(1));
    assert!(
        log.lock().unwrap().is_empty(),
        "the writer got in with a reader"
    );

    let l = log.clone();
    let late = std::thread::spawn(move || {
        let g = reader().acquire().unwrap();
        l.lock().unwrap().push("late reader");
        drop(g);
    });
    // A blocking reader (from another thread: this one holds the lock, and
    // waiting for it here would be a re-entry) does not get in either.
    let probe = std::thread::spawn(|| {
        lockutils::lock(NAME)
            .shared()
            .timeout(Duration::from_millis(50))
            .acquire()
            .map(drop)
    });
    let r = probe.join().unwrap();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    drop(first);
    writer.join().unwrap();
    late.join().unwrap();
    assert_eq!(*log.lock().unwrap(), ["writer", "late reader"]);
    drop(reader().blocking(false).acquire().expect("free again"));
}

/// The same with the writer waiting in a task (`acquire_async`).
#[test]
fn a_waiting_async_writer_keeps_new_readers_out() {
    const NAME: &str = "rw-prefer-async";
    let first = lockutils::lock(NAME).shared().acquire().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let writer = rt.spawn(async {
        let g = lockutils::lock(NAME).acquire_async().await.unwrap();
        assert_eq!(lockutils::__private_v0_1::holders(NAME), Some(1));
        drop(g);
    });
    wait_for("a new reader is refused", PATIENCE, || {
        is_busy(&lockutils::lock(NAME).shared().blocking(false).acquire())
    });
    assert!(!writer.is_finished());
    drop(first);
    rt.block_on(writer).unwrap();
    drop(
        lockutils::lock(NAME)
            .shared()
            .blocking(false)
            .acquire()
            .expect("free again"),
    );
}

/// Async readers share, an async writer waits without blocking the one
/// executor thread (the watchdog fails the test if it does).
#[test]
fn async_readers_share_and_a_waiting_writer_leaves_the_executor_free() {
    support::block_on_within(PATIENCE, async {
        const NAME: &str = "rw-async";
        let a = lockutils::lock(NAME)
            .shared()
            .acquire_async()
            .await
            .unwrap();
        let b = lockutils::lock(NAME)
            .shared()
            .acquire_async()
            .await
            .unwrap();
        assert_eq!(lockutils::__private_v0_1::holders(NAME), Some(2));
        let writer = tokio::spawn(async {
            let g = lockutils::lock(NAME).acquire_async().await.unwrap();
            lockutils::__private_v0_1::holders(NAME).map(|n| (n, drop(g)))
        });
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(!writer.is_finished(), "the writer got in with two readers");
        let r = lockutils::lock(NAME)
            .shared()
            .blocking(false)
            .acquire_async()
            .await;
        assert!(is_busy(&r), "a reader passed the waiting writer: {r:?}");
        drop((a, b));
        assert_eq!(writer.await.unwrap(), Some((1, ())));
    });
}

#[synchronized("rw-attr", shared)]
fn read_together(tx: mpsc::Sender<()>, rx: mpsc::Receiver<()>) -> bool {
    tx.send(()).unwrap();
    rx.recv_timeout(Duration::from_secs(10)).is_ok()
}

#[synchronized("rw-attr", blocking = false)]
fn try_write() -> Result<(), LockError> {
    Ok(())
}

/// `#[synchronized(.., shared)]` readers overlap; a writer function on the
/// same name is refused while a reader is inside.
#[test]
fn the_attribute_takes_shared_and_exclusive_modes() {
    let (tx_a, rx_a) = mpsc::channel();
    let (tx_b, rx_b) = mpsc::channel();
    let a = std::thread::spawn(move || read_together(tx_a, rx_b));
    let b = std::thread::spawn(move || read_together(tx_b, rx_a));
    assert!(
        a.join().unwrap() && b.join().unwrap(),
        "the attribute's readers did not overlap"
    );

    try_write().expect("free");
    let reader = lockutils::lock("rw-attr").shared().acquire().unwrap();
    assert!(is_busy(&try_write()));
    drop(reader);
    try_write().expect("free again");
}

// ---------------------------------------------------------------------------
// Across processes.

/// A generic child (`tests/support/mod.rs`) on `name` in `dir`, in `mode`
/// (`shared` or `exclusive`).
fn rw_child(test: &str, dir: &Path, name: &str, mode: &str) -> ChildBuilder {
    lock_child(test, dir, "", name).param("MODE", mode)
}

/// A process holding `name` in `mode` (it has reported `locked`).
fn hold(dir: &Path, name: &str, mode: &str) -> Child {
    holding(rw_child("support::child_hold", dir, name, mode))
}

/// What a `blocking(false)` attempt in `mode` from another process gets.
fn try_in_child(dir: &Path, name: &str, mode: &str) -> String {
    tried(rw_child("support::child_try", dir, name, mode))
}

#[test]
fn readers_overlap_and_writers_wait_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = hold(d, "rw", "shared");
    // A second reader process gets in while the first holds.
    let second = hold(d, "rw", "shared");
    assert_eq!(try_in_child(d, "rw", "exclusive"), "wouldblock");
    assert_eq!(try_in_child(d, "rw", "shared"), "ok");
    let here = lockutils::lock("rw").shared().external().lock_path(d);
    drop(
        here.clone()
            .blocking(false)
            .acquire()
            .expect("a third reader, here"),
    );

    let mut writer = rw_child("support::child_wait", d, "rw", "exclusive").spawn();
    writer.expect("busy");
    await_blocked_waiters(&d.join("rw"), 1);
    release(first).finish();
    // One reader is still in: the writer still waits.
    assert_eq!(try_in_child(d, "rw", "exclusive"), "wouldblock");
    release(second).finish();
    writer.expect("acquired");
    assert_eq!(try_in_child(d, "rw", "shared"), "wouldblock");
    assert!(is_busy(&here.clone().blocking(false).acquire()));
    release(writer).finish();
    drop(here.blocking(false).acquire().expect("free at last"));
}

// Words of the mixed test's shared memory.
const READERS: usize = 0;
const WRITERS: usize = 1;
const CLASHES: usize = 2;
const MAX_READERS: usize = 3;
const READS: usize = 4;
const WRITES: usize = 5;

const PROCESSES: usize = 4;
const READER_THREADS: usize = 2;
const ROUNDS: u64 = 400;

/// 4 processes, each with 2 reader threads and 1 writer thread, on one
/// external lock. Each holder announces itself in shared memory, then looks
/// for the others: a writer must find nobody, a reader no writer.
#[test]
fn a_writer_never_overlaps_anyone_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (shm, mut children) = spawn_sharing(dir.path(), PROCESSES, || {
        lock_child("rw_child_mix", dir.path(), "", "mix")
    });
    let started = ready_set_go(&mut children);
    let took = all_done(children, started);
    let w = |i| shm.word(i).load(Ordering::SeqCst);
    assert_eq!(w(CLASHES), 0, "a writer overlapped someone");
    assert_eq!(w(READS), PROCESSES as u64 * READER_THREADS as u64 * ROUNDS);
    assert_eq!(w(WRITES), PROCESSES as u64 * ROUNDS);
    assert_eq!((w(READERS), w(WRITERS)), (0, 0));
    println!(
        "{PROCESSES} processes x ({READER_THREADS} readers + 1 writer) x {ROUNDS} rounds: \
         {} reads, {} writes in {took:?}, up to {} readers inside at once",
        w(READS),
        w(WRITES),
        w(MAX_READERS)
    );
}

/// Child of the mixed test: reader threads and a writer thread.
#[test]
fn rw_child_mix() {
    if !running_as("rw_child_mix") {
        return;
    }
    let (name, dir) = (param("NAME"), PathBuf::from(param("DIR")));
    let shm = Shm::from_parent();
    await_go();
    let (name, dir, shm) = (&name, &dir, &shm);
    std::thread::scope(|s| {
        for t in 0..=READER_THREADS {
            let writer = t == READER_THREADS;
            s.spawn(move || {
                let lock = lockutils::lock(name).external().lock_path(dir);
                let lock = if writer { lock } else { lock.shared() };
                for _ in 0..ROUNDS {
                    let guard = lock
                        .acquire()
                        .unwrap_or_else(|e| panic!("rw_child_mix: {e}"));
                    if writer {
                        let others = shm.word(WRITERS).fetch_add(1, Ordering::SeqCst);
                        if others != 0 || shm.word(READERS).load(Ordering::SeqCst) != 0 {
                            shm.word(CLASHES).fetch_add(1, Ordering::SeqCst);
                        }
                        shm.word(WRITES).fetch_add(1, Ordering::SeqCst);
                        shm.word(WRITERS).fetch_sub(1, Ordering::SeqCst);
                    } else {
                        let now = shm.word(READERS).fetch_add(1, Ordering::SeqCst) + 1;
                        shm.word(MAX_READERS).fetch_max(now, Ordering::SeqCst);
                        if shm.word(WRITERS).load(Ordering::SeqCst) != 0 {
                            shm.word(CLASHES).fetch_add(1, Ordering::SeqCst);
                        }
                        busy(Duration::from_micros(50));
                        shm.word(READS).fetch_add(1, Ordering::SeqCst);
                        shm.word(READERS).fetch_sub(1, Ordering::SeqCst);
                    }
                    drop(guard);
                }
            });
        }
    });
    report("done");
}

/// A holder in `held` mode is SIGKILLed while another process waits in
/// the kernel in `wanted` mode: the waiter gets the lock promptly.
fn sigkill_frees(held: &str, wanted: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = hold(dir.path(), "killed", held);
    let mut waiter = rw_child("support::child_wait", dir.path(), "killed", wanted).spawn();
    waiter.expect("busy");
    await_blocked_waiters(&dir.path().join("killed"), 1);
    let killed = Instant::now();
    holder.kill();
    waiter.expect("acquired");
    let woke = killed.elapsed();
    println!("SIGKILL of a {held} holder -> {wanted} waiter acquired after {woke:?}");
    assert!(woke < Duration::from_secs(2), "took {woke:?}");
    release(waiter).finish();
}

#[test]
fn sigkill_of_a_reader_frees_its_hold() {
    sigkill_frees("shared", "exclusive");
}

#[test]
fn sigkill_of_a_writer_frees_its_hold() {
    sigkill_frees("exclusive", "shared");
}

/// An async reader waiting for a writer in another process leaves the
/// kernel wait to the file's waiter thread: the single executor thread
/// keeps running.
#[test]
fn async_reader_waits_for_another_process_without_blocking_the_executor() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = hold(dir.path(), "async-rw", "exclusive");
    let path = dir.path().to_owned();
    let holder = support::block_on_within(PATIENCE, async move {
        let reader = tokio::spawn(async move {
            let lock = lockutils::lock("async-rw")
                .shared()
                .external()
                .lock_path(&path);
            lock.acquire_async().await.map(drop)
        });
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(!reader.is_finished(), "a reader got in with a writer");
        holder.send("release");
        holder.expect("released");
        reader.await.unwrap().expect("reader after the writer left");
        holder
    });
    holder.finish();
}

const ATTR_DIR: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/lockutils-rwlock-attr");

#[synchronized("rw-attr-ext", shared, external, lock_path = ATTR_DIR, blocking = false)]
fn read_external() -> Result<(), LockError> {
    Ok(())
}

#[synchronized("rw-attr-ext", external, lock_path = ATTR_DIR, blocking = false)]
fn write_external() -> Result<(), LockError> {
    Ok(())
}

#[test]
fn the_attribute_shares_across_processes() {
    let dir = Path::new(ATTR_DIR);
    let reader = hold(dir, "rw-attr-ext", "shared");
    read_external().expect("a reader beside another process's reader");
    assert!(is_busy(&write_external()));
    release(reader).finish();
    let writer = hold(dir, "rw-attr-ext", "exclusive");
    assert!(is_busy(&read_external()));
    release(writer).finish();
    write_external().expect("free");
}

// ---------------------------------------------------------------------------
// Python fasteners.

fn fasteners(args: &[&str]) -> ChildBuilder {
    support::python::script("fasteners_rw.py", args)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn fasteners_hold(mode: &str, path: &Path) -> Child {
    let mut py = fasteners(&["hold", mode, s(path)]).spawn();
    py.expect("locked");
    py
}

fn fasteners_try(path: &Path) -> String {
    let mut py = fasteners(&["try", s(path)]).spawn();
    let r = py.next_report();
    py.finish();
    r
}

#[test]
fn fasteners_reader_shares_with_rust_readers_only() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lockutils::lock("fasteners-r")
        .external()
        .lock_path(dir.path());
    let py = fasteners_hold("read", &dir.path().join("fasteners-r"));
    let reader = lock
        .clone()
        .shared()
        .blocking(false)
        .acquire()
        .expect("Rust reader");
    assert!(
        is_busy(&lock.clone().blocking(false).acquire()),
        "a Rust writer got in"
    );
    drop(reader);
    assert!(
        is_busy(&lock.clone().blocking(false).acquire()),
        "a Rust writer got in"
    );
    release(py).finish();
    drop(
        lock.blocking(false)
            .acquire()
            .expect("free after Python released"),
    );
}

#[test]
fn fasteners_writer_excludes_rust_readers_and_wakes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fasteners-w");
    let lock = lockutils::lock("fasteners-w")
        .external()
        .lock_path(dir.path());
    let py = fasteners_hold("write", &path);
    assert!(
        is_busy(&lock.clone().shared().blocking(false).acquire()),
        "a Rust reader got in"
    );
    assert!(
        is_busy(&lock.clone().blocking(false).acquire()),
        "a Rust writer got in"
    );
    // A Rust reader asleep in the kernel wakes when Python's lockf goes.
    let mut waiter = rw_child("support::child_wait", dir.path(), "fasteners-w", "shared").spawn();
    waiter.expect("busy");
    await_blocked_waiters(&path, 1);
    release(py).finish();
    waiter.expect("acquired");
    assert_eq!(fasteners_try(&path), "read=ok write=busy");
    release(waiter).finish();
}

#[test]
fn rust_writer_excludes_fasteners() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rust-w");
    let guard = lockutils::lock("rust-w")
        .external()
        .lock_path(dir.path())
        .acquire()
        .unwrap();
    assert_eq!(fasteners_try(&path), "read=busy write=busy");
    drop(guard);
    assert_eq!(fasteners_try(&path), "read=ok write=ok");
}

#[test]
fn rust_reader_shares_with_fasteners_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rust-r");
    let lock = lockutils::lock("rust-r")
        .shared()
        .external()
        .lock_path(dir.path());
    let guard = lock.acquire().unwrap();
    assert_eq!(fasteners_try(&path), "read=ok write=busy");
    // Several Rust readers at once, still one to Python's eyes.
    let second = lock.acquire().unwrap();
    assert_eq!(fasteners_try(&path), "read=ok write=busy");
    drop((guard, second));
    assert_eq!(fasteners_try(&path), "read=ok write=ok");
}
