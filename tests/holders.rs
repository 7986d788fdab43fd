//! `lockutils::holders()`: who holds a lock file and who waits for it,
//! against real holders: this process, another lockutils process, a
//! classic POSIX `lockf` holder (Python), util-linux `flock(1)`; on file
//! systems whose `stat` device is not the one `/proc/locks` prints
//! (btrfs and its subvolumes, overlayfs over two file systems), mounted by
//! the tests themselves (as root).

#[cfg(target_os = "linux")]
#[path = "support/mounts.rs"]
mod mounts;
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use lockutils::{HoldKind, HoldMode, Holders, HoldersSource, LockError};
use support::{PATIENCE, lock_child};

/// Polls `holders` until `cond` holds; fails the test after [`PATIENCE`].
fn wait_for(what: &str, path: &Path, cond: impl Fn(&Holders) -> bool) -> Holders {
    let start = Instant::now();
    loop {
        let found = lockutils::holders_of_file(path).expect("holders_of_file");
        if cond(&found) {
            return found;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "gave up waiting until {what}: {found:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process running `program args...` that prints `held` once it holds
/// the lock and lets go when its stdin closes.
struct Outside {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Outside {
    fn start(program: &str, args: &[&str]) -> Outside {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {program} (apt-get install util-linux python3): {e}")
            });
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim_end(), "held", "{program} {args:?}");
        Outside { child, stdin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn release(mut self) {
        drop(self.stdin.take());
        assert!(self.child.wait().expect("wait").success());
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A lock this very process holds: its own PID, an OFD lock, exclusive,
/// held since no later than now; free again once dropped.
#[test]
fn own_lock_shows_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lockutils::lock("own").external().lock_path(dir.path());
    let before = lockutils::holders(&lock).unwrap();
    assert!(!before.is_held(), "{before:#?}");
    assert_eq!(before.path, dir.path().join("own"));

    let guard = lock.acquire().unwrap();
    let found = lockutils::holders(&lock).unwrap();
    assert_eq!(found.source, HoldersSource::ProcLocks);
    assert!(found.is_complete());
    assert_eq!(found.holders.len(), 1, "{found:#?}");
    let h = &found.holders[0];
    assert_eq!(h.pid, Some(std::process::id()));
    assert_eq!((h.kind, h.mode), (HoldKind::Ofd, HoldMode::Exclusive));
    assert_eq!((h.start, h.end), (0, None));
    let since = h.since.expect("since");
    assert!(since <= SystemTime::now(), "{since:?}");
    let command = h.command.as_deref().expect("command line");
    assert!(command.contains("holders"), "{command:?}");
    assert_eq!(found.waiters, Some(Vec::new()));
    drop(guard);
    assert!(!lockutils::holders(&lock).unwrap().is_held());
}

/// Another process's lockutils lock, and another lockutils process waiting
/// for it: both PIDs, the waiter as a blocked request.
#[test]
fn holder_and_waiter_in_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pair");
    let mut holder = lock_child("support::child_hold", dir.path(), "", "pair").spawn();
    holder.expect("locked");
    let mut waiter = lock_child("support::child_wait", dir.path(), "", "pair").spawn();
    waiter.expect("busy");
    let found = wait_for("a waiter shows", &path, |f| {
        f.waiters.as_ref().is_some_and(|w| !w.is_empty())
    });
    let pids: Vec<Option<u32>> = found.holders.iter().map(|h| h.pid).collect();
    assert_eq!(pids, [Some(holder.pid())], "{found:#?}");
    let waiters = found.waiters.as_ref().unwrap();
    assert_eq!(waiters.len(), 1, "{found:#?}");
    assert_eq!(waiters[0].kind, HoldKind::Ofd);
    // Found through /proc/PID/task/TID/syscall: needs ptrace rights, which
    // the tests have (root, or the same user as the child).
    assert_eq!(waiters[0].pid, Some(waiter.pid()), "{found:#?}");

    holder.send("release");
    holder.expect("released");
    waiter.expect("acquired");
    let found = lockutils::holders_of_file(&path).unwrap();
    assert_eq!(found.holders[0].pid, Some(waiter.pid()), "{found:#?}");
    assert_eq!(found.waiters, Some(Vec::new()));
    waiter.send("release");
    waiter.expect("released");
}

/// Shared holders in two processes are both listed, mode shared.
#[test]
fn shared_holders_are_all_listed() {
    let dir = tempfile::tempdir().unwrap();
    let spawn = || {
        let mut c = lock_child("support::child_hold", dir.path(), "", "readers")
            .param("MODE", "shared")
            .spawn();
        c.expect("locked");
        c
    };
    let (mut a, mut b) = (spawn(), spawn());
    let found =
        lockutils::holders(&lockutils::lock("readers").external().lock_path(dir.path())).unwrap();
    let mut pids: Vec<u32> = found.holders.iter().filter_map(|h| h.pid).collect();
    pids.sort();
    let mut want = vec![a.pid(), b.pid()];
    want.sort();
    assert_eq!(pids, want, "{found:#?}");
    assert!(found.holders.iter().all(|h| h.mode == HoldMode::Shared));
    for c in [&mut a, &mut b] {
        c.send("release");
        c.expect("released");
    }
}

/// Python's `fcntl.lockf` (what oslo.concurrency and fasteners take): a
/// POSIX lock, with the Python process's PID.
#[test]
fn posix_lockf_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("posix");
    let script = "import fcntl, sys\n\
                  f = open(sys.argv[1], 'a')\n\
                  fcntl.lockf(f, fcntl.LOCK_EX)\n\
                  print('held', flush=True)\n\
                  sys.stdin.read()\n";
    let py = Outside::start("python3", &["-c", script, path.to_str().unwrap()]);
    let found = lockutils::holders_of_file(&path).unwrap();
    assert_eq!(found.holders.len(), 1, "{found:#?}");
    let h = &found.holders[0];
    assert_eq!((h.pid, h.kind), (Some(py.pid()), HoldKind::Posix));
    assert!(
        h.command.as_deref().unwrap().contains("fcntl.lockf"),
        "{h:?}"
    );
    py.release();
    assert!(!lockutils::holders_of_file(&path).unwrap().is_held());
}

/// util-linux `flock(1)`: flock(2) locks show as `Flock`, held by flock and
/// by the command that inherited its descriptor; a second `flock` waiting
/// shows as a waiter with its PID.
#[test]
fn flock1_holder_and_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job");
    let p = path.to_str().unwrap();
    let holder = Outside::start("flock", &[p, "sh", "-c", "echo held; read x || true"]);
    let found = lockutils::holders_of_file(&path).unwrap();
    assert!(found.is_held(), "{found:#?}");
    assert!(
        found.holders.iter().all(|h| h.kind == HoldKind::Flock),
        "{found:#?}"
    );
    let flock = found
        .holders
        .iter()
        .find(|h| h.pid == Some(holder.pid()))
        .unwrap_or_else(|| panic!("flock's own pid {} missing: {found:#?}", holder.pid()));
    assert!(
        flock.command.as_deref().unwrap().starts_with("flock"),
        "{flock:?}"
    );
    assert_eq!(flock.mode, HoldMode::Exclusive);

    let mut second = Command::new("flock")
        .args(["--shared", p, "true"])
        .spawn()
        .expect("flock");
    let found = wait_for("flock waits", &path, |f| {
        f.waiters.as_ref().is_some_and(|w| !w.is_empty())
    });
    let w = &found.waiters.as_ref().unwrap()[0];
    assert_eq!(
        (w.pid, w.kind, w.mode),
        (Some(second.id()), HoldKind::Flock, HoldMode::Shared)
    );

    holder.release();
    assert!(second.wait().unwrap().success());
    assert!(!lockutils::holders_of_file(&path).unwrap().is_held());
}

/// Many files in one call: one answer each, in order; a missing file is
/// free; something else at the path is refused.
#[test]
fn many_files_missing_and_not_regular() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lockutils::lock("a").external().lock_path(dir.path());
    let _guard = lock.acquire().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let paths = [
        dir.path().join("missing"),
        dir.path().join("a"),
        dir.path().join("sub"),
    ];
    let answers = lockutils::holders_of_files(&paths);
    assert_eq!(answers.len(), 3);
    let missing = answers[0].as_ref().unwrap();
    assert!(!missing.is_held() && missing.path == paths[0]);
    assert!(answers[1].as_ref().unwrap().is_held());
    match &answers[2] {
        Err(LockError::NotRegularFile { kind, path, .. }) => {
            assert_eq!((*kind, path), ("directory", &paths[2]));
        }
        other => panic!("{other:?}"),
    }
}

/// A lock on a lock server has no file to inspect; a bad name is refused
/// before anything is looked at.
#[test]
fn server_locks_and_bad_names_are_errors() {
    let on_server = lockutils::lock("x")
        .external()
        .backend("postgres://127.0.0.1:1/db");
    assert!(
        matches!(
            lockutils::holders(&on_server),
            Err(LockError::InvalidOptions { .. })
        ),
        "{:?}",
        lockutils::holders(&on_server)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = lockutils::lock("..").external().lock_path(dir.path());
    assert!(matches!(
        lockutils::holders(&bad),
        Err(LockError::InvalidName { .. })
    ));
}

// ---------------------------------------------------------------------------
// File systems whose `stat` device is not the one `/proc/locks` prints.

/// Whether `/proc/locks` names the file at `path` by the device `stat`
/// gives it (which holders() matched before it read the mount's device).
#[cfg(target_os = "linux")]
fn proc_locks_uses_stat_device(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    let (dev, ino) = (meta.dev(), meta.ino());
    let id = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks.lines().any(|l| l.split_whitespace().any(|t| t == id))
}

/// Holds `name` in `dir` here, then has another process wait for it: this
/// process shows as the holder, the other as the waiter and then as the
/// holder; free at the end.
#[cfg(target_os = "linux")]
fn shows_holder_and_waiter(dir: &Path, name: &str) {
    let lock = lockutils::lock(name).external().lock_path(dir);
    let path = dir.join(name);
    let guard = lock.acquire().unwrap();
    assert!(
        !proc_locks_uses_stat_device(&path),
        "{}: /proc/locks names this file by stat's device; the test needs a file system \
         where the two differ",
        path.display()
    );
    let found = lockutils::holders(&lock).unwrap();
    assert!(found.is_held(), "{}: {found:#?}", path.display());
    let pids: Vec<Option<u32>> = found.holders.iter().map(|h| h.pid).collect();
    assert_eq!(pids, [Some(std::process::id())], "{found:#?}");

    let mut waiter = lock_child("support::child_wait", dir, "", name).spawn();
    waiter.expect("busy");
    let found = wait_for("a waiter shows", &path, |f| {
        f.waiters.as_ref().is_some_and(|w| !w.is_empty())
    });
    let waiters: Vec<Option<u32>> = found.waiters.unwrap().iter().map(|w| w.pid).collect();
    assert_eq!(waiters, [Some(waiter.pid())]);
    drop(guard);
    waiter.expect("acquired");
    let found = lockutils::holders_of_file(&path).unwrap();
    let pids: Vec<Option<u32>> = found.holders.iter().map(|h| h.pid).collect();
    assert_eq!(pids, [Some(waiter.pid())], "{found:#?}");
    waiter.send("release");
    waiter.expect("released");
    waiter.finish();
    assert!(!lockutils::holders(&lock).unwrap().is_held());
}

/// btrfs gives each subvolume, the top level included, a device of its
/// own in `stat` (00:2a) while `/proc/locks` prints the file system's
/// (00:28): a held lock was reported free, with no holders.
#[cfg(target_os = "linux")]
#[test]
fn holders_on_btrfs_and_in_a_subvolume() {
    let base = tempfile::tempdir().unwrap();
    let mut mounts = mounts::Mounts::default();
    let fs = mounts.btrfs(base.path(), "btrfs");
    let sub = mounts.subvolume(&fs, "subvolume");
    shows_holder_and_waiter(&fs, "on-btrfs");
    shows_holder_and_waiter(&sub, "on-btrfs-subvolume");
}

/// overlayfs whose layers are on two file systems (a tmpfs below, the
/// temporary directory's file system above) and without `xino`: `stat`
/// gives a regular file the upper layer's device, `/proc/locks` the
/// overlay's.
#[cfg(target_os = "linux")]
#[test]
fn holders_on_overlayfs_over_two_file_systems() {
    let base = tempfile::tempdir().unwrap();
    let mut mounts = mounts::Mounts::default();
    let lower = mounts.tmpfs(base.path(), "lower");
    let overlay = mounts.overlay(base.path(), "overlay", &lower, "xino=off");
    shows_holder_and_waiter(&overlay, "on-overlay");
}

/// `/proc/locks` longer than a page comes in several reads, and the
/// kernel restarts each read at a position counted from the head of its
/// lists: locks taken and let go meanwhile (here by another thread) move
/// every older line, which a second read then shows twice or never. With
/// hundreds of other locks on the host and a thread taking and dropping
/// twenty more, a `flock` holder and its one waiter must still come out as
/// exactly one holder and one waiter every time.
#[test]
fn a_table_longer_than_a_page_is_read_as_one_moment() {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn flock(file: &std::fs::File, op: i32) {
        // SAFETY: flock(2) on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), op) }, 0);
    }
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(p)
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watched");
    // Taken first, so that the locks below come before it in the kernel's
    // lists (each is added at the head) and it is printed pages down.
    let holder = open(&path);
    flock(&holder, libc::LOCK_EX);
    let waiter = open(&path);
    let blocked = std::thread::spawn(move || {
        flock(&waiter, libc::LOCK_EX);
        waiter
    });
    wait_for("the waiter blocks", &path, |h| {
        h.waiters.as_ref().is_some_and(|w| !w.is_empty())
    });
    let fillers: Vec<std::fs::File> = (0..200)
        .map(|i| {
            let f = open(&dir.path().join(format!("filler-{i}")));
            flock(&f, libc::LOCK_EX);
            f
        })
        .collect();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let files: Vec<std::fs::File> = (0..20)
            .map(|i| open(&dir.path().join(format!("churn-{i}"))))
            .collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                files.iter().for_each(|f| flock(f, libc::LOCK_EX));
                files.iter().for_each(|f| flock(f, libc::LOCK_UN));
            }
        })
    };
    let table = std::fs::read_to_string("/proc/locks").unwrap();
    assert!(table.len() > 8192, "{} bytes of /proc/locks", table.len());
    // Children that other tests fork share the holder's open file until
    // they exec: only this process's lines count.
    let me = Some(std::process::id());
    for round in 0..300 {
        let found = lockutils::holders_of_file(&path).expect("holders_of_file");
        let waiters = found.waiters.as_deref().unwrap_or_default();
        let holding = found.holders.iter().filter(|h| h.pid == me).count();
        let waiting = waiters.iter().filter(|h| h.pid == me).count();
        assert!((holding, waiting) == (1, 1), "round {round}: {found:#?}");
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    drop(fillers);
    flock(&holder, libc::LOCK_UN);
    drop(blocked.join().unwrap());
}
