//! A project's own attribute, `#[nova_synchronized]`, made with
//! `lockutils_codegen::synchronized_with_prefix!(pub fn nova_synchronized, "nova-")`
//! in the `nova-macros` example crate.

use std::path::Path;
use std::sync::{OnceLock, mpsc};
use std::thread;

use lockutils::{LockError, LockName, locks_held, synchronized};
use nova_macros::nova_synchronized;

fn held(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Holds the full name `name` on another thread until the returned sender is
/// dropped; returns once the lock is held.
fn hold_elsewhere(name: &'static str) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let _guard = lockutils::lock(name).acquire().unwrap();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    held_rx.recv().unwrap();
    (release_tx, holder)
}

#[nova_synchronized("mylock")]
fn nova_mylock() -> Vec<String> {
    locks_held()
}

// The same lock through the base attribute, with oslo's prefix rule
// (`nova` + `-` + `mylock`), not waiting.
#[synchronized("mylock", prefix = "nova", blocking = false)]
fn plain_mylock() -> Result<Vec<String>, LockError> {
    Ok(locks_held())
}

#[nova_synchronized("mylock")]
fn nova_mylock_then(f: impl FnOnce() + Send) {
    thread::scope(|s| {
        s.spawn(f);
    });
}

// One test for everything on "nova-mylock": tests run in parallel.
#[test]
fn the_alias_adds_its_prefix_and_shares_the_lock_with_the_base_attribute() {
    assert_eq!(nova_mylock(), held(&["nova-mylock"]));
    assert!(locks_held().is_empty());
    assert_eq!(plain_mylock().unwrap(), held(&["nova-mylock"]));
    let (tx, rx) = mpsc::channel();
    // While the alias's body runs, the plain function (on another thread)
    // finds the lock busy.
    nova_mylock_then(move || tx.send(plain_mylock()).unwrap());
    match rx.recv().unwrap() {
        Err(LockError::WouldBlock { name }) => assert_eq!(name, "nova-mylock"),
        other => panic!("expected WouldBlock, got {other:?}"),
    }
    assert_eq!(plain_mylock().unwrap(), held(&["nova-mylock"]));
}

const ALIAS_CONST: LockName = LockName::new("alias-const");

#[nova_synchronized(ALIAS_CONST, crate = ::lockutils)]
fn by_const() -> Vec<String> {
    locks_held()
}

#[test]
fn the_alias_takes_const_names_and_crate() {
    assert_eq!(by_const(), held(&["nova-alias-const"]));
}

#[nova_synchronized("alias-nonblocking", blocking = false)]
fn nonblocking() -> Result<Vec<String>, LockError> {
    Ok(locks_held())
}

#[nova_synchronized("alias-timeout", timeout = "20ms")]
fn timed() -> std::io::Result<Vec<String>> {
    Ok(locks_held())
}

#[test]
fn the_alias_takes_blocking_and_timeout() {
    assert_eq!(nonblocking().unwrap(), held(&["nova-alias-nonblocking"]));
    assert_eq!(timed().unwrap(), held(&["nova-alias-timeout"]));

    let (release_a, holder_a) = hold_elsewhere("nova-alias-nonblocking");
    let (release_b, holder_b) = hold_elsewhere("nova-alias-timeout");
    assert!(matches!(
        nonblocking(),
        Err(LockError::WouldBlock { name }) if name == "nova-alias-nonblocking"
    ));
    assert_eq!(timed().unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    drop((release_a, release_b));
    holder_a.join().unwrap();
    holder_b.join().unwrap();

    assert!(nonblocking().is_ok());
}

#[nova_synchronized("alias-async", blocking = false)]
async fn async_nonblocking() -> Result<(), LockError> {
    Ok(())
}

#[test]
fn the_alias_works_on_async_fn() {
    let run = || futures_lite::future::block_on(async_nonblocking());
    run().unwrap();
    let (release, holder) = hold_elsewhere("nova-alias-async");
    assert!(matches!(run(), Err(LockError::WouldBlock { .. })));
    drop(release);
    holder.join().unwrap();
    run().unwrap();
}

// ------------------------------------------------------------- external

/// A lock directory that lives as long as the test binary, for `lock_path`
/// (which takes a `&'static str`).
const LOCK_DIR: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/alias-lock-path");

/// Whether the lock file is locked by an open file description other than
/// a fresh one of ours: tries a non-blocking OFD write lock on a new fd.
#[cfg(target_os = "linux")]
fn file_is_locked(path: &Path) -> bool {
    use std::os::fd::AsRawFd;

    // A write lock needs a descriptor open for writing.
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    // SAFETY: an all-zero `flock` is a valid value; the fields that matter
    // are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    // SAFETY: `file` is open and `lock` is a valid `flock`. The lock (if
    // taken) goes away when `file` is closed at the end of this function.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return false;
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => true,
        _ => panic!("F_OFD_SETLK on {}: {error}", path.display()),
    }
}

#[nova_synchronized("alias-external", external, lock_path = LOCK_DIR)]
fn external_with_lock_path() -> Result<bool, LockError> {
    let file = Path::new(LOCK_DIR).join("nova-alias-external");
    #[cfg(target_os = "linux")]
    return Ok(file_is_locked(&file));
    #[cfg(not(target_os = "linux"))]
    return Ok(file.exists());
}

#[test]
fn the_alias_takes_external_and_lock_path() {
    let file = Path::new(LOCK_DIR).join("nova-alias-external");
    assert!(
        external_with_lock_path().unwrap(),
        "the lock file was not locked"
    );
    assert!(file.is_file(), "no lock file at {}", file.display());
    #[cfg(target_os = "linux")]
    assert!(!file_is_locked(&file), "the lock file stayed locked");
}

/// The configured lock path, set once for this test binary.
fn configured_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        lockutils::config::set_lock_path(dir.path());
        dir
    })
    .path()
}

#[nova_synchronized("alias-configured", external, timeout = "5s")]
fn external_configured() -> Result<bool, LockError> {
    let file = configured_dir().join("nova-alias-configured");
    #[cfg(target_os = "linux")]
    return Ok(file_is_locked(&file));
    #[cfg(not(target_os = "linux"))]
    return Ok(file.exists());
}

#[test]
fn the_alias_takes_external_with_the_configured_lock_path() {
    let dir = configured_dir();
    assert!(
        external_configured().unwrap(),
        "the lock file was not locked"
    );
    assert!(dir.join("nova-alias-configured").is_file());

    // A waiter (maybe waiting for a holder on another thread) gets in once
    // the holder is gone.
    let (release, holder) = hold_elsewhere("nova-alias-configured");
    let (started_tx, started_rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        started_tx.send(()).unwrap();
        external_configured()
    });
    started_rx.recv().unwrap();
    drop(release);
    holder.join().unwrap();
    assert!(waiter.join().unwrap().unwrap());
}
