//! External locks in one process: lock-file safety, lock-path
//! configuration, file names, errors, descriptors. What is process-global
//! (the lock path from the environment, `set_process_locking`, resource
//! limits, privileges, counting descriptors) runs in a child process; see
//! `tests/support/mod.rs`.
#![cfg(unix)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lockutils::{LockError, NameProblem};
use support::planted::{Planted, check_refusal};
use support::{hold, lock_child, release, report, try_in_child};

// ---------------------------------------------------------------------------
// Something other than a regular file at the lock file's path.

#[test]
fn planted_non_regular_files_are_refused_and_left_untouched() {
    for planted in Planted::ALL {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let at = dir.path().join("nova-planted");
        planted.plant(&at, outside.path());
        let lock_dir = dir.path().to_owned();
        // Opening a FIFO without O_NONBLOCK would hang: bound the attempt.
        let r = support::within(Duration::from_secs(20), move || {
            let lock = lockutils::lock("planted")
                .prefix("nova-")
                .external()
                .lock_path(&lock_dir);
            lock.acquire().map(|g| g.name().to_owned())
        });
        check_refusal(r, planted, "nova-planted", &at);
        planted.check_untouched(&at, outside.path());
        // The in-process lock was given back too.
        let again = lockutils::lock("planted")
            .prefix("nova-")
            .blocking(false)
            .acquire();
        assert!(
            again.is_ok(),
            "{planted:?}: in-process lock still held: {again:?}"
        );
    }
}

#[test]
fn planted_files_are_refused_by_async_acquire() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    for planted in Planted::ALL {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let at = dir.path().join("planted-async");
        planted.plant(&at, outside.path());
        let lock = lockutils::lock("planted-async")
            .external()
            .lock_path(dir.path());
        let r = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), lock.acquire_async()).await
        });
        let r = r.expect("async acquire hung").map(|g| g.name().to_owned());
        check_refusal(r, planted, "planted-async", &at);
        planted.check_untouched(&at, outside.path());
    }
}

#[test]
fn synchronized_body_does_not_run_when_a_file_is_planted() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let mut c = support::child("child_planted")
        .param("DIR", dir.path())
        .param("OUTSIDE", outside.path())
        .spawn();
    c.expect("ok");
    c.finish();
}

#[lockutils::synchronized("planted", external)]
fn planted_result(ran: &AtomicBool) -> Result<(), LockError> {
    ran.store(true, Ordering::SeqCst);
    Ok(())
}

#[lockutils::synchronized("planted", external)]
fn planted_plain(ran: &AtomicBool) {
    ran.store(true, Ordering::SeqCst);
}

/// Child: `#[synchronized(external)]` functions against each planting: a
/// `Result` function gets the error, a plain one panics naming the lock,
/// the path and the kind; neither body runs.
#[test]
fn child_planted() {
    if !support::running_as("child_planted") {
        return;
    }
    let dir = PathBuf::from(support::param("DIR"));
    let outside = PathBuf::from(support::param("OUTSIDE"));
    lockutils::config::set_lock_path(&dir);
    let at = dir.join("planted");
    let ran = AtomicBool::new(false);
    for planted in Planted::ALL {
        planted.plant(&at, &outside);
        let r = planted_result(&ran).map(|()| String::new());
        check_refusal(r, planted, "planted", &at);
        let panic = std::panic::catch_unwind(|| planted_plain(&ran)).expect_err("no panic");
        let msg = panic
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        for part in ["\"planted\"", &at.display().to_string(), planted.kind()] {
            assert!(msg.contains(part), "panic message {msg:?} lacks {part:?}");
        }
        assert!(!ran.load(Ordering::SeqCst), "{planted:?}: the body ran");
        planted.check_untouched(&at, &outside);
        Planted::remove(&at, &outside);
    }
    // With the path clear, the same functions run.
    planted_result(&ran).unwrap();
    assert!(ran.load(Ordering::SeqCst));
    assert!(std::fs::symlink_metadata(&at).unwrap().is_file());
    report("ok");
}

#[test]
fn location_names_the_lock_file_and_the_old_lock_file_still_does() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lockutils::lock("where").prefix("nova").external();
    let guard = lock.lock_path(dir.path()).acquire().unwrap();
    let path = dir.path().join("nova-where");
    assert_eq!(
        guard.location(),
        Some(lockutils::Location::File(path.clone()))
    );
    assert_eq!(
        guard.location().unwrap().to_string(),
        path.display().to_string()
    );
    #[allow(deprecated)]
    let old = guard.lock_file();
    assert_eq!(old, Some(path));
    drop(guard);
    let in_process = lockutils::lock("where-not").acquire().unwrap();
    assert_eq!(in_process.location(), None);
}

#[test]
fn lock_files_are_never_truncated_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept");
    std::fs::write(&path, "someone else's notes\n").unwrap();
    let guard = lockutils::lock("kept")
        .external()
        .lock_path(dir.path())
        .acquire()
        .unwrap();
    assert_eq!(
        guard
            .location()
            .and_then(lockutils::Location::into_file)
            .as_deref(),
        Some(&*path)
    );
    drop(guard);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "someone else's notes\n"
    );
    // Files this library creates are empty, mode 0644 at most.
    let guard = lockutils::lock("fresh")
        .external()
        .lock_path(dir.path())
        .acquire()
        .unwrap();
    let meta = std::fs::metadata(
        guard
            .location()
            .and_then(lockutils::Location::into_file)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta.len(), 0);
    assert_eq!(
        meta.permissions().mode() & 0o777 & !0o644,
        0,
        "mode wider than 0644"
    );
}

// ---------------------------------------------------------------------------
// Lock paths that cannot be used.

#[test]
fn lock_path_below_a_regular_file_is_an_io_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let lock_dir = file.join("locks");
    let r = lockutils::lock("blocked")
        .external()
        .lock_path(&lock_dir)
        .acquire();
    match r {
        Err(
            ref e @ LockError::Io {
                ref name,
                ref path,
                ref source,
                ..
            },
        ) => {
            assert_eq!(name, "blocked");
            assert!(
                path.starts_with(&lock_dir),
                "{path:?} is not in {lock_dir:?}"
            );
            assert_eq!(source.raw_os_error(), Some(libc::ENOTDIR), "{source}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        other => panic!("expected LockError::Io, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
    assert!(lockutils::locks_held().is_empty());
}

/// A lock path that can never be created, whoever runs the test.
const NO_SUCH_LOCK_PATH: &str = "/dev/null/locks";

#[lockutils::synchronized("devnull", external, lock_path = NO_SUCH_LOCK_PATH)]
fn devnull_result(ran: &AtomicBool) -> Result<(), LockError> {
    ran.store(true, Ordering::SeqCst);
    Ok(())
}

#[lockutils::synchronized("devnull", external, lock_path = "/dev/null/locks")]
fn devnull_plain(ran: &AtomicBool) {
    ran.store(true, Ordering::SeqCst);
}

#[test]
fn synchronized_body_does_not_run_when_the_lock_path_is_unusable() {
    let ran = AtomicBool::new(false);
    match devnull_result(&ran) {
        Err(LockError::Io { name, path, .. }) => {
            assert_eq!(name, "devnull");
            assert!(path.starts_with(NO_SUCH_LOCK_PATH), "{path:?}");
        }
        other => panic!("expected LockError::Io, got {other:?}"),
    }
    let panic = std::panic::catch_unwind(|| devnull_plain(&ran)).expect_err("no panic");
    let msg = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        msg.contains("\"devnull\"") && msg.contains(NO_SUCH_LOCK_PATH),
        "{msg}"
    );
    assert!(!ran.load(Ordering::SeqCst), "the body ran without its lock");
}

#[test]
fn unwritable_lock_directory_is_an_io_error() {
    // Root ignores permissions, so the child drops to `nobody` first; the
    // directories must then be reachable by it.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut c = support::child("child_unwritable").param("DIR", &ro).spawn();
    c.expect("ok");
    c.finish();
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        0,
        "something was created"
    );
}

/// Child: as an unprivileged user, a read-only lock directory and a lock
/// directory that cannot be created are both `LockError::Io` with EACCES.
#[test]
fn child_unwritable() {
    if !support::running_as("child_unwritable") {
        return;
    }
    support::drop_privileges();
    let ro = PathBuf::from(support::param("DIR"));
    let cases = [(ro.clone(), "open lock file", ro.join("ro-lock")), {
        let sub = ro.join("sub").join("locks");
        (sub.clone(), "create lock directory", sub)
    }];
    for (lock_dir, op, at) in cases {
        match lockutils::lock("ro-lock")
            .external()
            .lock_path(&lock_dir)
            .acquire()
        {
            Err(LockError::Io {
                name,
                path,
                op: o,
                source,
            }) => {
                assert_eq!(name, "ro-lock");
                assert_eq!(path, at);
                assert_eq!(o, op);
                assert_eq!(source.raw_os_error(), Some(libc::EACCES), "{source}");
            }
            other => panic!("{lock_dir:?}: expected LockError::Io, got {other:?}"),
        }
    }
    report("ok");
}

#[test]
fn running_out_of_descriptors_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = support::child("child_emfile")
        .param("DIR", dir.path())
        .spawn();
    let r = c.next_report();
    c.finish();
    let held: usize = r.strip_prefix("ok after ").expect(&r).parse().unwrap();
    assert!(held >= 1, "failed before taking any lock");
}

#[lockutils::synchronized("emfile-macro", external)]
fn emfile_result(ran: &AtomicBool) -> Result<(), LockError> {
    ran.store(true, Ordering::SeqCst);
    Ok(())
}

/// Child: with RLIMIT_NOFILE lowered, takes distinct external locks until
/// one fails: the failure is `LockError::Io` (EMFILE) naming the file, and
/// everything works again once descriptors are freed.
#[test]
fn child_emfile() {
    if !support::running_as("child_emfile") {
        return;
    }
    let dir = PathBuf::from(support::param("DIR"));
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer / in-pointer for get/setrlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let low = libc::rlimit {
        rlim_cur: highest + 1 + 16,
        rlim_max: old.rlim_max,
    };
    // SAFETY: a valid rlimit to read.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);

    let mut guards = Vec::new();
    let mut failure = None;
    for i in 0..1000 {
        match lockutils::lock(&format!("emfile-{i}"))
            .external()
            .lock_path(&dir)
            .acquire()
        {
            Ok(g) => guards.push(g),
            Err(e) => {
                failure = Some((i, e));
                break;
            }
        }
    }
    // A #[synchronized] body does not run either.
    lockutils::config::set_lock_path(&dir);
    let ran = AtomicBool::new(false);
    let r = emfile_result(&ran);
    // SAFETY: a valid rlimit to read.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
    assert!(!ran.load(Ordering::SeqCst), "the body ran without its lock");
    match r {
        Err(LockError::Io { source, .. }) if source.raw_os_error() == Some(libc::EMFILE) => {}
        other => panic!("expected LockError::Io (EMFILE), got {other:?}"),
    }
    let (i, e) = failure.expect("never ran out of descriptors");
    match &e {
        LockError::Io {
            name, path, source, ..
        } => {
            assert_eq!(name, &format!("emfile-{i}"));
            assert_eq!(path, &dir.join(name));
            assert_eq!(source.raw_os_error(), Some(libc::EMFILE), "{source}");
        }
        other => panic!("expected LockError::Io, got {other:?}"),
    }
    assert!(e.to_string().contains(&format!("emfile-{i}")), "{e}");
    // Nothing half-held: that name works now.
    drop(guards);
    let g = lockutils::lock(&format!("emfile-{i}"))
        .external()
        .lock_path(&dir)
        .acquire();
    assert!(g.is_ok(), "{g:?}");
    report(format!("ok after {i}"));
}

// ---------------------------------------------------------------------------
// Where lock files go.

#[test]
fn lock_path_not_set_says_how_to_set_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = support::child("child_no_lock_path")
        .env_remove("LOCKUTILS_LOCK_PATH")
        .env_remove("OSLO_LOCK_PATH")
        .param("DIR", dir.path())
        .spawn();
    c.expect("ok");
    c.finish();
    assert!(dir.path().join("nopath").exists());
}

#[lockutils::synchronized("nopath-macro", external)]
fn no_path_result(ran: &AtomicBool) -> Result<(), LockError> {
    ran.store(true, Ordering::SeqCst);
    Ok(())
}

#[lockutils::synchronized("nopath-macro", external)]
fn no_path_plain(ran: &AtomicBool) {
    ran.store(true, Ordering::SeqCst);
}

/// Child, with neither environment variable: `LockPathNotSet`, whose
/// message says how to set a path; in-process locks still work.
#[test]
fn child_no_lock_path() {
    if !support::running_as("child_no_lock_path") {
        return;
    }
    assert_eq!(lockutils::config::lock_path(), None);
    let e = lockutils::lock("nopath")
        .external()
        .acquire()
        .expect_err("no lock path");
    assert!(
        matches!(&e, LockError::LockPathNotSet { name } if name == "nopath"),
        "{e:?}"
    );
    let msg = e.to_string();
    for how in [
        "lock_path",
        "set_lock_path",
        "LOCKUTILS_LOCK_PATH",
        "OSLO_LOCK_PATH",
    ] {
        assert!(msg.contains(how), "message {msg:?} does not mention {how}");
    }
    // The same name in-process only needs no path.
    drop(lockutils::lock("nopath").acquire().unwrap());

    let ran = AtomicBool::new(false);
    let r = no_path_result(&ran);
    assert!(matches!(r, Err(LockError::LockPathNotSet { .. })), "{r:?}");
    let panic = std::panic::catch_unwind(|| no_path_plain(&ran)).expect_err("no panic");
    let msg = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        msg.contains("nopath-macro") && msg.contains("LOCKUTILS_LOCK_PATH"),
        "{msg}"
    );
    assert!(!ran.load(Ordering::SeqCst), "the body ran without its lock");

    lockutils::config::set_lock_path(support::param("DIR"));
    let g = lockutils::lock("nopath").external().acquire().unwrap();
    assert!(
        g.location()
            .and_then(lockutils::Location::into_file)
            .unwrap()
            .starts_with(support::param("DIR"))
    );
    report("ok");
}

/// Runs `child_env_path` with the given environment; it checks the lock
/// file lands in `expect`.
fn env_case(vars: &[(&str, &Path)], expect: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = support::child("child_env_path")
        .env_remove("LOCKUTILS_LOCK_PATH")
        .env_remove("OSLO_LOCK_PATH")
        .param("EXPECT", expect)
        .param("SET", tmp.path().join("set"))
        .param("EXPLICIT", tmp.path().join("explicit"));
    for (k, v) in vars {
        b = b.env(k, v);
    }
    let mut c = b.spawn();
    c.expect("ok");
    c.finish();
}

#[test]
fn lockutils_lock_path_beats_oslo_lock_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    env_case(&[("LOCKUTILS_LOCK_PATH", &a), ("OSLO_LOCK_PATH", &b)], &a);
    assert!(a.join("env").exists() && !b.exists());
}

#[test]
fn oslo_lock_path_is_used_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("b");
    env_case(&[("OSLO_LOCK_PATH", &b)], &b);
    assert!(b.join("env").exists());
}

#[test]
fn lockutils_lock_path_is_used_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    env_case(&[("LOCKUTILS_LOCK_PATH", &a)], &a);
    assert!(a.join("env").exists());
}

/// Child: the environment's lock path is `EXPECT`; `set_lock_path` beats
/// it, an explicit `lock_path` beats both, `reset_lock_path` goes back.
#[test]
fn child_env_path() {
    if !support::running_as("child_env_path") {
        return;
    }
    let expect = PathBuf::from(support::param("EXPECT"));
    let set = PathBuf::from(support::param("SET"));
    let explicit = PathBuf::from(support::param("EXPLICIT"));
    let file_of = |lock: lockutils::Lock<'_>| {
        lock.acquire()
            .unwrap()
            .location()
            .and_then(lockutils::Location::into_file)
            .unwrap()
    };
    let env = || lockutils::lock("env").external();

    assert_eq!(lockutils::config::lock_path().as_deref(), Some(&*expect));
    assert_eq!(file_of(env()), expect.join("env"));
    lockutils::config::set_lock_path(&set);
    assert_eq!(file_of(env()), set.join("env"));
    assert_eq!(file_of(env().lock_path(&explicit)), explicit.join("env"));
    lockutils::config::reset_lock_path();
    assert_eq!(file_of(env()), expect.join("env"));
    report("ok");
}

#[test]
fn missing_lock_directories_are_created() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = tmp.path().join("a").join("b").join("c");
    let guard = lockutils::lock("deep")
        .external()
        .lock_path(&deep)
        .acquire()
        .unwrap();
    assert_eq!(
        guard
            .location()
            .and_then(lockutils::Location::into_file)
            .as_deref(),
        Some(&*deep.join("deep"))
    );
    assert!(deep.join("deep").is_file());
    for d in [tmp.path().join("a"), tmp.path().join("a/b"), deep] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o755, 0, "{d:?} has mode {mode:o}, wider than 0755");
    }
}

// ---------------------------------------------------------------------------
// Names.

#[test]
fn file_names_are_oslos() {
    // Expected values from oslo.concurrency's _get_lock_path (and checked
    // against the real thing in tests/interop.rs).
    let cases = [
        ("iptables", "nova-", "nova-iptables"),
        ("iptables", "nova", "nova-iptables"),
        ("iptables", "", "iptables"),
        ("a/b", "", "a_b"),
        ("x/y/z", "neutron", "neutron-x_y_z"),
        ("vol-1", "cinder--", "cinder--vol-1"),
        ("ünïcödé", "", "ünïcödé"),
        ("...", "", "..."),
        ("with space", "p", "p-with space"),
    ];
    for (name, prefix, file) in cases {
        let dir = tempfile::tempdir().unwrap();
        let guard = lockutils::lock(name)
            .prefix(prefix)
            .external()
            .lock_path(dir.path());
        let guard = guard
            .acquire()
            .unwrap_or_else(|e| panic!("{name:?}/{prefix:?}: {e}"));
        assert_eq!(
            guard
                .location()
                .and_then(lockutils::Location::into_file)
                .as_deref(),
            Some(&*dir.path().join(file)),
            "{name:?}"
        );
        let made: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(made, [file], "({name:?}, {prefix:?})");
    }
}

#[test]
fn names_sharing_a_file_exclude_each_other() {
    // As in oslo, "c/d" and "c_d" are one lock file (documented).
    let dir = tempfile::tempdir().unwrap();
    let slash = lockutils::lock("c/d")
        .external()
        .lock_path(dir.path())
        .acquire()
        .unwrap();
    let under = lockutils::lock("c_d")
        .external()
        .lock_path(dir.path())
        .blocking(false)
        .acquire();
    assert!(
        matches!(under, Err(LockError::WouldBlock { .. })),
        "{under:?}"
    );
    assert_eq!(try_in_child(dir.path(), "", "c_d"), "wouldblock");
    // One lock in-process too: waiting for the other spelling while
    // holding one is re-entry, which panics instead of waiting on itself.
    let reentry = std::panic::catch_unwind(|| {
        lockutils::lock("c_d")
            .external()
            .lock_path(dir.path())
            .timeout(Duration::from_secs(5))
            .acquire()
    });
    let message = *reentry
        .expect_err("waited on itself instead of the re-entry panic")
        .downcast::<String>()
        .unwrap();
    assert!(message.contains("already holds lock \"c_d\""), "{message}");
    drop(slash);
    drop(
        lockutils::lock("c_d")
            .external()
            .lock_path(dir.path())
            .blocking(false)
            .acquire()
            .unwrap(),
    );
}

#[test]
fn invalid_names_are_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(256);
    let cases: [(&str, &str, NameProblem); 8] = [
        ("", "", NameProblem::Empty),
        ("", "nova-", NameProblem::Empty),
        ("a\0b", "", NameProblem::Nul),
        (".", "", NameProblem::Dot),
        ("..", "", NameProblem::Dot),
        ("x", "a/", NameProblem::BadPrefix),
        (&long, "", NameProblem::TooLong),
        (&long[..251], "nova", NameProblem::TooLong),
    ];
    for (name, prefix, problem) in cases {
        let lock = lockutils::lock(name)
            .prefix(prefix)
            .external()
            .lock_path(dir.path());
        match lock.acquire() {
            Err(LockError::InvalidName { problem: p, .. }) => assert_eq!(p, problem, "{name:?}"),
            other => panic!("({name:?}, {prefix:?}): expected InvalidName, got {other:?}"),
        }
        let r = lockutils::remove_external_lock_file(name, prefix, Some(dir.path()));
        assert!(matches!(r, Err(LockError::InvalidName { .. })), "{r:?}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a file was created"
    );
    // The longest acceptable file name, 255 bytes with the separator, works.
    let longest = &long[..250];
    let g = lockutils::lock(longest)
        .prefix("nova")
        .external()
        .lock_path(dir.path())
        .acquire();
    assert_eq!(
        g.unwrap()
            .location()
            .and_then(lockutils::Location::into_file)
            .unwrap()
            .file_name()
            .unwrap()
            .len(),
        255
    );
}

// ---------------------------------------------------------------------------
// set_process_locking(false).

#[test]
fn disabled_process_locking_makes_external_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let holder = hold(dir.path(), "", "shared");
    let mut c = support::child("child_no_process_locking")
        .param("DIR", dir.path())
        .spawn();
    c.expect("ok");
    c.finish();
    release(holder).finish();
    assert!(
        !dir.path().join("fresh").exists(),
        "a lock file was created"
    );
}

/// Child: with process locking off, external locks take no file (none is
/// created, another process's hold does not matter) but still exclude
/// threads; turned back on, the file counts again.
#[test]
fn child_no_process_locking() {
    if !support::running_as("child_no_process_locking") {
        return;
    }
    let dir = PathBuf::from(support::param("DIR"));
    lockutils::config::set_process_locking(false);
    assert!(!lockutils::config::process_locking());
    let fresh = lockutils::lock("fresh")
        .external()
        .lock_path(&dir)
        .acquire()
        .unwrap();
    assert_eq!(
        fresh.location().and_then(lockutils::Location::into_file),
        None
    );
    assert!(!dir.join("fresh").exists());

    let shared = lockutils::lock("shared").external().lock_path(&dir);
    // Another process holds the file; a 10 s timeout would fail this if
    // the file were taken.
    let g = shared
        .clone()
        .timeout(Duration::from_secs(10))
        .acquire()
        .unwrap();
    assert_eq!(g.location().and_then(lockutils::Location::into_file), None);
    let other_thread = std::thread::scope(|s| {
        s.spawn(|| {
            lockutils::lock("shared")
                .blocking(false)
                .acquire()
                .map(drop)
        })
        .join()
        .unwrap()
    });
    assert!(
        matches!(other_thread, Err(LockError::WouldBlock { .. })),
        "{other_thread:?}"
    );
    drop(g);

    lockutils::config::set_process_locking(true);
    let r = shared.clone().blocking(false).acquire();
    assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    report("ok");
}

// ---------------------------------------------------------------------------
// remove_external_lock_file.

#[test]
fn remove_deletes_an_idle_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nova-idle");
    drop(
        lockutils::lock("idle")
            .prefix("nova")
            .external()
            .lock_path(dir.path())
            .acquire(),
    );
    assert!(path.exists());
    lockutils::remove_external_lock_file("idle", "nova", Some(dir.path())).unwrap();
    assert!(!path.exists());
    // Missing is fine.
    lockutils::remove_external_lock_file("idle", "nova", Some(dir.path())).unwrap();
    // And the lock works afterwards.
    let g = lockutils::lock("idle")
        .prefix("nova")
        .external()
        .lock_path(dir.path())
        .acquire();
    assert_eq!(
        g.unwrap()
            .location()
            .and_then(lockutils::Location::into_file)
            .as_deref(),
        Some(&*path)
    );
}

#[test]
fn remove_refuses_planted_files() {
    for planted in [Planted::SymlinkToFile, Planted::Directory] {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let at = dir.path().join("rm-planted");
        planted.plant(&at, outside.path());
        let r = lockutils::remove_external_lock_file("rm-planted", "", Some(dir.path()));
        check_refusal(r.map(|()| String::new()), planted, "rm-planted", &at);
        planted.check_untouched(&at, outside.path());
    }
}

#[test]
fn remove_waits_for_the_holder_then_removes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("contested");
    let holder = hold(dir.path(), "", "contested");
    // Mark the file, to tell it from a new one later.
    std::fs::write(&path, "old file\n").unwrap();
    let remover = std::thread::spawn({
        let dir = dir.path().to_owned();
        move || lockutils::remove_external_lock_file("contested", "", Some(&dir))
    });
    // The remover waits in the kernel for the holder.
    support::await_blocked_waiters(&path, 1);
    assert!(!remover.is_finished());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "old file\n",
        "removed while held"
    );

    let holder = release(holder);
    remover.join().unwrap().unwrap();
    assert!(!path.exists(), "not removed");
    // Two processes still exclude each other on the path.
    let again = hold(dir.path(), "", "contested");
    assert_eq!(try_in_child(dir.path(), "", "contested"), "wouldblock");
    release(again).finish();
    holder.finish();
}

#[test]
fn waiter_on_a_removed_file_moves_to_the_new_one() {
    // A process that opened the lock file before it was removed must not
    // lock the dead inode: newcomers would lock a new file beside it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moved");
    let holder = hold(dir.path(), "", "moved");
    std::fs::write(&path, "old file\n").unwrap();
    let mut waiter = lock_child("support::child_wait", dir.path(), "", "moved").spawn();
    waiter.expect("busy");
    support::await_blocked_waiters(&path, 1);
    // Freeze the waiter (its wait is interrupted, to be restarted on the
    // old file's descriptor when it continues), so the remover goes first.
    let stopped = support::Stopped::new(waiter.pid());
    support::await_blocked_waiters_gone(&path);

    let remover = std::thread::spawn({
        let dir = dir.path().to_owned();
        move || lockutils::remove_external_lock_file("moved", "", Some(&dir))
    });
    support::await_blocked_waiters(&path, 1);
    let holder = release(holder);
    remover.join().unwrap().unwrap();
    assert!(!path.exists(), "not removed");

    drop(stopped); // SIGCONT: the waiter locks the old, unlinked file...
    waiter.expect("acquired");
    // ...notices, and moves to the file newcomers use.
    let now = std::fs::read_to_string(&path).ok();
    assert_eq!(now.as_deref(), Some(""), "the waiter kept the removed file");
    assert_eq!(try_in_child(dir.path(), "", "moved"), "wouldblock");
    release(waiter).finish();
    assert_eq!(try_in_child(dir.path(), "", "moved"), "ok");
    holder.finish();
}

// ---------------------------------------------------------------------------
// Descriptors.

#[test]
fn many_dynamic_names_do_not_pile_up_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = support::child("child_fd_count")
        .param("DIR", dir.path())
        .spawn();
    let r = c.next_report();
    c.finish();
    assert!(r.starts_with("ok "), "{r}");
    println!("{r}");
}

/// Child: counts this process's descriptors around 2,000 distinct external
/// names locked one after another.
#[test]
fn child_fd_count() {
    if !support::running_as("child_fd_count") {
        return;
    }
    let dir = PathBuf::from(support::param("DIR"));
    let take = |name: &str| {
        lockutils::lock(name)
            .external()
            .lock_path(&dir)
            .acquire()
            .unwrap()
    };
    // Each thread keeps its 16 most recent external names open (so taking
    // one again does not reopen its file): fill that cache first.
    for i in 0..32 {
        drop(take(&format!("warm-{i}")));
    }
    let before = support::open_fds();
    for i in 0..2000 {
        drop(take(&format!("instance-{i:04}")));
    }
    let after = support::open_fds();
    assert!(
        after <= before,
        "{before} descriptors before, {after} after 2,000 names"
    );
    // The count does see lock files: 100 held at once are 100 more, less
    // the 16 recent ones they push out of the cache.
    let held: Vec<_> = (0..100).map(|i| take(&format!("held-{i}"))).collect();
    let during = support::open_fds();
    assert!(
        during >= before + 100 - 16,
        "{during} while holding 100, {before} before"
    );
    drop(held);
    assert!(support::open_fds() <= before);
    report(format!(
        "ok {before} descriptors before, {after} after 2,000 names, {during} holding 100"
    ));
}
