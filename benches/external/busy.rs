//! The other processes of a host: the worst waits of a process blocked in
//! the kernel and of an oslo.concurrency poller beside two threads that
//! keep the lock busy, unrelated locks held on the host (for the
//! throughput runs), and how long dropping a pending async acquisition
//! takes.
//!
//! Child roles (this binary re-run as a `tests/support` child):
//! `hoard-N` holds N unrelated byte locks, `hammer-lu`/`hammer-raw` keep a
//! lock busy from two threads, `blocked` takes it again and again with
//! `F_OFD_SETLKW` and reports its waits, `holdfiles` holds lock files.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::support::{mono_ns, percentile};
use super::test_support::{self, Child, param, report};
use super::{call_site, ofd, open_rw};

fn dir_param() -> PathBuf {
    PathBuf::from(param("DIR"))
}

/// Starts this binary as the child `role`, and waits for its `ready`. The
/// child stops when the parent closes its stdin ([`Child::finish`]).
pub(super) fn start(dir: &Path, role: &str) -> Child {
    let mut child = test_support::child(role).param("DIR", dir).spawn();
    child.expect("ready");
    child
}

/// Blocks until stdin is closed (the parent's [`Child::finish`]).
fn await_stop() {
    let mut buf = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut buf);
}

/// Child `hoard-N`: holds N byte locks (every other byte, so none merge)
/// of a file of its own, as N unrelated locks on the host.
pub(super) fn hoard_child(n: usize) {
    let f = open_rw(&dir_param().join(format!("hoard-{n}")));
    for i in 0..n {
        // SAFETY: `flock` is a plain C struct; all-zero is a valid value.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = (2 * i) as libc::off_t;
        fl.l_len = 1;
        // SAFETY: a valid descriptor and `flock`.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    }
    report("ready");
    await_stop();
}

/// Child `hammer-lu` or `hammer-raw`: two threads take and release the
/// lock `busy` with no pause (as a service under load does) until stopped.
pub(super) fn hammer_child(kind: &str) {
    let dir = dir_param();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (stop, dir, kind) = (stop.clone(), dir.clone(), kind.to_owned());
            std::thread::spawn(move || {
                let site = call_site("busy", &dir);
                let raw = open_rw(&dir.join("busy"));
                while !stop.load(Ordering::Relaxed) {
                    if kind == "raw" {
                        ofd(raw.as_raw_fd(), libc::F_OFD_SETLKW, libc::F_WRLCK);
                        std::hint::black_box(());
                        ofd(raw.as_raw_fd(), libc::F_OFD_SETLK, libc::F_UNLCK);
                    } else {
                        let _g = site.acquire_or_panic();
                        std::hint::black_box(());
                    }
                }
            })
        })
        .collect();
    report("ready");
    await_stop();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("hammer thread");
    }
}

/// Child `blocked`: 300 acquisitions of `busy` with `F_OFD_SETLKW`, each
/// held briefly; prints the median and the longest wait (ns).
pub(super) fn blocked_child() {
    let f = open_rw(&dir_param().join("busy"));
    report("ready");
    let mut waits = Vec::new();
    for _ in 0..300 {
        let asked = mono_ns();
        ofd(f.as_raw_fd(), libc::F_OFD_SETLKW, libc::F_WRLCK);
        waits.push((mono_ns() - asked) as f64);
        ofd(f.as_raw_fd(), libc::F_OFD_SETLK, libc::F_UNLCK);
        std::thread::sleep(Duration::from_micros(200));
    }
    report(format!(
        "{} {}",
        percentile(&waits, 50.0),
        waits.iter().copied().fold(0.0, f64::max)
    ));
    await_stop();
}

/// The waits (median, longest; ms) of a blocked process beside `hammer`.
fn blocked_beside(dir: &Path, hammer: &str) -> (f64, f64) {
    let h = start(dir, &format!("hammer-{hammer}"));
    let mut b = start(dir, "blocked");
    let line = b.next_report();
    b.finish();
    h.finish();
    let mut it = line
        .split_whitespace()
        .map(|x| x.parse::<f64>().expect("ns"));
    (it.next().unwrap() / 1e6, it.next().unwrap() / 1e6)
}

/// The waits (median, longest; ms) of an oslo.concurrency process taking
/// the lock 100 times (a fresh `lockutils.lock(...)` each time, as a
/// service does) beside `hammer`; `None` without the tests' venv
/// (`tests/support/pyenv.rs`: a benchmark installs nothing).
fn oslo_beside(dir: &Path, hammer: &str) -> Option<(f64, f64)> {
    let py = test_support::pyenv::python_if_ready()?;
    let script = r#"
import sys, time
from oslo_concurrency import lockutils
d = sys.argv[1]
waits = []
for _ in range(100):
    t = time.monotonic()
    with lockutils.lock("busy", external=True, lock_path=d, do_log=False):
        waits.append(time.monotonic() - t)
    time.sleep(0.002)
waits.sort()
print(waits[len(waits) // 2] * 1e3, waits[-1] * 1e3)
"#;
    let h = start(dir, &format!("hammer-{hammer}"));
    let out = Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .ok()?;
    h.finish();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some((it.next()??, it.next()??))
}

/// Child `holdfiles`: holds `busy-*` lock files of every kind below.
pub(super) fn holdfiles_child() {
    let dir = dir_param();
    let files: Vec<File> = KINDS
        .iter()
        .map(|(name, _)| {
            let f = open_rw(&dir.join(name));
            if name.ends_with("semaphore") {
                // Both slots of the 2-permit semaphore, not the whole file
                // (which another kind of lock would hold).
                for slot in 0..2 {
                    // SAFETY: `flock` is a plain C struct; all-zero is valid.
                    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
                    fl.l_type = libc::F_WRLCK as libc::c_short;
                    fl.l_whence = libc::SEEK_SET as libc::c_short;
                    fl.l_start = slot;
                    fl.l_len = 1;
                    // SAFETY: a valid descriptor and `flock`.
                    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
                    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
                }
            } else {
                ofd(f.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK);
            }
            f
        })
        .collect();
    report("ready");
    await_stop();
    drop(files);
}

type Build = fn(lockutils::Lock<'_>) -> lockutils::Lock<'_>;

/// The kinds whose pending async acquisitions are dropped.
const KINDS: [(&str, Build); 4] = [
    ("busy-plain", |l| l),
    ("busy-fair", |l| l.fair()),
    ("busy-shared", |l| l.shared()),
    ("busy-semaphore", |l| l.permits(2)),
];

/// How long dropping a pending async acquisition of each kind takes
/// (median, longest; µs) while another process holds its lock file.
fn drops(dir: &Path) -> Vec<(&'static str, f64, f64)> {
    let holder = start(dir, "holdfiles");
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let out = KINDS
        .iter()
        .map(|(name, build)| {
            let mut took = Vec::new();
            for _ in 0..200 {
                let lock = build(lockutils::lock(name).external().lock_path(dir));
                let mut fut = Box::pin(lock.acquire_async());
                assert!(fut.as_mut().poll(&mut cx).is_pending(), "{name} was free");
                let t = Instant::now();
                drop(fut);
                took.push(t.elapsed().as_nanos() as f64 / 1e3);
            }
            (
                *name,
                percentile(&took, 50.0),
                took.iter().copied().fold(0.0, f64::max),
            )
        })
        .collect();
    holder.finish();
    out
}

pub(super) fn busy(dir: &Path) {
    println!("\n## 4. Other processes: worst waits beside two threads that keep the lock busy");
    println!(
        "| {:<62} | {:>11} | {:>11} |",
        "waiting process", "median ms", "longest ms"
    );
    println!("|{:-<64}|{:->13}|{:->13}|", "", ":", ":");
    for (hammer, what) in [("raw", "raw OFD threads"), ("lu", "lockutils threads")] {
        let (m, w) = blocked_beside(dir, hammer);
        println!(
            "| {:<62} | {:>11.3} | {:>11.3} |",
            format!("blocked in F_OFD_SETLKW, beside 2 {what}"),
            m,
            w
        );
    }
    for (hammer, what) in [("raw", "raw OFD threads"), ("lu", "lockutils threads")] {
        match oslo_beside(dir, hammer) {
            Some((m, w)) => println!(
                "| {:<62} | {:>11.3} | {:>11.3} |",
                format!("oslo.concurrency poller, beside 2 {what}"),
                m,
                w
            ),
            None => println!("| oslo.concurrency poller: no venv (run scripts/test.sh once) | | |"),
        }
    }
    println!(
        "\n## 5. Dropping a pending async acquisition (its lock file held elsewhere; us, 200 each)"
    );
    println!("| {:<24} | {:>10} | {:>10} |", "kind", "median", "longest");
    println!("|{:-<26}|{:->12}|{:->12}|", "", ":", ":");
    let mut worst: f64 = 0.0;
    for (name, m, w) in drops(dir) {
        println!("| {name:<24} | {m:>10.1} | {w:>10.1} |");
        worst = worst.max(w);
    }
    let ok = if worst < 1000.0 { "MET" } else { "MISSED" };
    println!("longest drop of a pending async acquisition: {worst:.1} us  (bar < 1000 us) -> {ok}");
    let _ = std::io::stdout().flush();
}
