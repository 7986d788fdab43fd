//! The `flock` option: besides its OFD lock, the lock file is also locked
//! with `flock(2)`, so util-linux `flock(1)` and py-filelock users are
//! excluded, in both directions, waiting, non-blocking and timed.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use lockutils::{HoldKind, LockError};
use support::PATIENCE;

const FLOCK_MISSING: &str = "util-linux flock(1) is needed: apt-get install util-linux";

/// util-linux `flock(1) [opts] PATH sh -c 'echo held; read x'`: holds the
/// file's flock(2) lock until released.
struct Flock1 {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Flock1 {
    fn hold(path: &Path, opts: &[&str]) -> Flock1 {
        let mut child = Command::new("flock")
            .args(opts)
            .arg(path)
            .args(["sh", "-c", "echo held; read x || true"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect(FLOCK_MISSING);
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line, "held\n", "flock(1) did not take the lock");
        Flock1 { child, stdin }
    }

    fn release(mut self) {
        drop(self.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Flock1 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `flock(1) OPTS PATH true`'s exit code: 0 if it got the lock, 1 if not
/// (`-n`, `-w`).
fn flock1_try(path: &Path, opts: &[&str]) -> i32 {
    let status = Command::new("flock")
        .args(opts)
        .arg(path)
        .arg("true")
        .status()
        .expect(FLOCK_MISSING);
    status.code().expect("flock(1) died")
}

/// Waits (boundedly) until no OFD lock is held on `path`, only flock ones.
fn only_flock_holders_soon(path: &Path) {
    let start = Instant::now();
    loop {
        let found = lockutils::holders_of_file(path).unwrap();
        if found.holders.iter().all(|h| h.kind == HoldKind::Flock) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "our OFD lock stays: {found:#?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The lock `name` in `dir`, with `flock`. Each test has its own name:
/// the in-process lock is per name, whatever the directory.
fn flock_lock<'a>(dir: &'a Path, name: &'a str) -> lockutils::Lock<'a> {
    lockutils::lock(name).external().lock_path(dir).flock()
}

/// While flock(1) holds the file, `.flock()` is busy, at once or after the
/// timeout; the failed attempt gave back its OFD and in-process locks
/// (the same lock without `flock` is free). Once flock(1) is gone it is
/// taken.
#[test]
fn flock1_holder_excludes_a_flock_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flock1_holder_excludes_a_flock_lock");
    let other = Flock1::hold(&path, &[]);
    let lock = flock_lock(dir.path(), "flock1_holder_excludes_a_flock_lock");
    match lock.clone().blocking(false).acquire() {
        Err(LockError::WouldBlock { name }) => {
            assert_eq!(name, "flock1_holder_excludes_a_flock_lock")
        }
        other => panic!("expected WouldBlock, got {other:?}"),
    }
    let found = lockutils::holders_of_file(&path).unwrap();
    assert!(
        found.holders.iter().all(|h| h.kind == HoldKind::Flock),
        "our OFD lock was not given back: {found:#?}"
    );
    // Nothing kept: another process's OFD attempt finds the file free
    // (flock(1) does not exclude it), and this thread holds no lock.
    assert_eq!(
        support::try_in_child(dir.path(), "", "flock1_holder_excludes_a_flock_lock"),
        "ok"
    );
    assert!(lockutils::locks_held().is_empty());

    let asked = Duration::from_millis(200);
    let started = Instant::now();
    match lock.clone().timeout(asked).acquire() {
        Err(LockError::Timeout { timeout, .. }) => assert_eq!(timeout, asked),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= asked && took < Duration::from_secs(5), "{took:?}");
    // What waited for the file lets go as its deadline passes too.
    only_flock_holders_soon(&path);

    other.release();
    let guard = lock
        .blocking(false)
        .acquire()
        .expect("free once flock(1) is gone");
    drop(guard);
}

/// A `.flock()` holder excludes flock(1), exclusive and shared; a shared
/// `.flock()` holder lets `flock -s` in and keeps `flock` (exclusive) out.
#[test]
fn a_flock_lock_excludes_flock1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a_flock_lock_excludes_flock1");
    let guard = flock_lock(dir.path(), "a_flock_lock_excludes_flock1")
        .acquire()
        .unwrap();
    assert_eq!(flock1_try(&path, &["-n"]), 1, "flock -n got a held lock");
    assert_eq!(flock1_try(&path, &["-s", "-w", "0.1"]), 1);
    let found = lockutils::holders_of_file(&path).unwrap();
    let kinds: Vec<HoldKind> = found.holders.iter().map(|h| h.kind).collect();
    assert!(
        kinds.contains(&HoldKind::Ofd) && kinds.contains(&HoldKind::Flock),
        "{found:#?}"
    );
    drop(guard);
    assert_eq!(flock1_try(&path, &["-n"]), 0, "released, yet busy");
    assert!(!lockutils::holders_of_file(&path).unwrap().is_held());

    let reader = flock_lock(dir.path(), "a_flock_lock_excludes_flock1")
        .shared()
        .acquire()
        .unwrap();
    assert_eq!(flock1_try(&path, &["-s", "-n"]), 0, "readers share");
    assert_eq!(
        flock1_try(&path, &["-n"]),
        1,
        "a writer got in beside a reader"
    );
    drop(reader);
}

/// A blocking `.flock()` waits for flock(1) to let go (seen as a flock
/// waiter of this process in /proc/locks), then holds the lock.
#[test]
fn blocking_flock_waits_for_flock1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocking_flock_waits_for_flock1");
    let other = Flock1::hold(&path, &[]);
    let d = dir.path().to_path_buf();
    let waiter = std::thread::spawn(move || {
        let guard = flock_lock(&d, "blocking_flock_waits_for_flock1")
            .acquire()
            .unwrap();
        drop(guard);
    });
    let start = Instant::now();
    loop {
        let found = lockutils::holders_of_file(&path).unwrap();
        let waiting = found.waiters.unwrap_or_default();
        if waiting
            .iter()
            .any(|w| w.kind == HoldKind::Flock && w.pid == Some(std::process::id()))
        {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "no flock waiter showed");
        std::thread::sleep(Duration::from_millis(5));
    }
    other.release();
    waiter.join().unwrap();
}

/// Async, with a timeout: busy while flock(1) holds, taken after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_flock_times_out_then_acquires() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("async_flock_times_out_then_acquires");
    let other = Flock1::hold(&path, &[]);
    let lock = flock_lock(dir.path(), "async_flock_times_out_then_acquires")
        .timeout(Duration::from_millis(100));
    match lock.acquire_async().await {
        Err(LockError::Timeout { .. }) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    only_flock_holders_soon(&path);
    other.release();
    let guard = lock.acquire_async().await.unwrap();
    assert_eq!(flock1_try(&path, &["-n"]), 1);
    drop(guard);
}

/// The attribute: `#[synchronized(.., external, flock)]`.
#[test]
fn attribute_takes_flock_too() {
    let dir = tempfile::tempdir().unwrap();
    lockutils::config::set_lock_path(dir.path());
    let path = dir.path().join("attr-flock");

    #[lockutils::synchronized("attr-flock", external, flock, blocking = false)]
    fn guarded(path: &Path) -> Result<i32, LockError> {
        Ok(flock1_try(path, &["-n"]))
    }

    assert_eq!(
        guarded(&path).unwrap(),
        1,
        "flock(1) got in while the body ran"
    );
    let other = Flock1::hold(&path, &[]);
    assert!(matches!(guarded(&path), Err(LockError::WouldBlock { .. })));
    other.release();
    assert_eq!(guarded(&path).unwrap(), 1);
}

/// py-filelock (`filelock.FileLock`, flock(2)) in both directions.
#[test]
fn py_filelock_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py_filelock_both_directions");
    let p = path.to_str().unwrap();
    let mut py = support::python::script("filelock_helper.py", &["hold", p]).spawn();
    py.expect("locked");
    assert!(matches!(
        flock_lock(dir.path(), "py_filelock_both_directions")
            .blocking(false)
            .acquire(),
        Err(LockError::WouldBlock { .. })
    ));
    py.send("release");
    py.expect("released");
    py.finish();

    let guard = flock_lock(dir.path(), "py_filelock_both_directions")
        .acquire()
        .unwrap();
    let mut py = support::python::script("filelock_helper.py", &["try", p]).spawn();
    py.expect("busy");
    py.finish();
    drop(guard);
    let mut py = support::python::script("filelock_helper.py", &["try", p]).spawn();
    py.expect("ok");
    py.finish();
}

/// What cannot be combined is an error, before anything is locked.
#[test]
fn flock_needs_a_plain_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let no_external = lockutils::lock("x").lock_path(dir.path()).flock();
    assert!(matches!(
        no_external.acquire(),
        Err(LockError::InvalidOptions { .. })
    ));
    let semaphore = flock_lock(dir.path(), "flock_needs_a_plain_lock_file").permits(2);
    assert!(matches!(
        semaphore.acquire(),
        Err(LockError::InvalidOptions { .. })
    ));
}
