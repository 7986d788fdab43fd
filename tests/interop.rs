//! A Rust service and an OpenStack Python service sharing `lock_path` and
//! lock names exclude each other: real `oslo_concurrency.lockutils` (and
//! `fasteners`) processes against this crate's lock files.
//!
//! The Python side is `tests/support/oslo_helper.py`, run by a venv that
//! `tests/support/python.rs` creates on first use (or `$LOCKUTILS_PYTHON`).
//! Without Python 3, venv and pip these tests fail, saying what to install.
#![cfg(unix)]

mod support;

use std::path::Path;
use std::time::Duration;

use lockutils::LockError;
use support::python::helper;
use support::{lock_child, release};

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

#[test]
fn oslo_holder_excludes_rust() {
    let dir = tempfile::tempdir().unwrap();
    let mut py = helper(&["hold", "iptables", "nova-", s(dir.path())]).spawn();
    py.expect("locked");
    assert!(dir.path().join("nova-iptables").is_file());

    let lock = lockutils::lock("iptables")
        .prefix("nova-")
        .external()
        .lock_path(dir.path());
    let r = lock.clone().blocking(false).acquire();
    assert!(matches!(r, Err(LockError::WouldBlock { .. })), "{r:?}");
    let r = lock.clone().timeout(Duration::from_millis(200)).acquire();
    assert!(matches!(r, Err(LockError::Timeout { .. })), "{r:?}");

    // A Rust process blocked in F_OFD_SETLKW wakes when Python's lockf
    // lock goes.
    let mut waiter = lock_child("support::child_wait", dir.path(), "nova-", "iptables").spawn();
    waiter.expect("busy");
    support::await_blocked_waiters(&dir.path().join("nova-iptables"), 1);
    py.send("release");
    py.expect("released");
    waiter.expect("acquired");
    release(waiter).finish();
    py.finish();

    let guard = lock
        .clone()
        .blocking(false)
        .acquire()
        .expect("free after Python released");
    assert_eq!(
        guard
            .location()
            .and_then(lockutils::Location::into_file)
            .as_deref(),
        Some(&*dir.path().join("nova-iptables"))
    );
}

#[test]
fn rust_holder_makes_oslo_and_fasteners_fail() {
    let dir = tempfile::tempdir().unwrap();
    let attempt = || {
        let mut py = helper(&["try", "iptables", "nova-", s(dir.path())]).spawn();
        let r = py.next_report();
        py.finish();
        r
    };
    let lock = lockutils::lock("iptables")
        .prefix("nova-")
        .external()
        .lock_path(dir.path());
    let guard = lock.acquire().unwrap();
    assert_eq!(attempt(), "oslo=wouldblock fasteners=wouldblock");
    drop(guard);
    assert_eq!(attempt(), "oslo=ok fasteners=ok");
}

#[test]
fn rust_and_oslo_processes_share_a_counter_exactly() {
    const EACH: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    let each = EACH.to_string();
    let args = [
        "count",
        "counter",
        "nova-",
        s(dir.path()),
        s(&counter),
        &each,
    ];
    let mut pythons: Vec<_> = (0..2).map(|_| helper(&args).spawn()).collect();
    // oslo's increments take about a millisecond (its lock file is opened
    // and closed each time, the counter rewritten); pace the Rust side so
    // that both really run at the same time.
    let pace = Duration::from_millis(1);
    let mut rusts: Vec<_> = (0..2)
        .map(|_| support::counter_child(dir.path(), "nova-", "counter", &counter, 1, EACH, pace))
        .collect();
    for c in pythons.iter_mut().chain(&mut rusts) {
        c.expect("ready");
    }
    for c in pythons.iter_mut().chain(&mut rusts) {
        c.send("go");
    }
    let mut spans = Vec::new();
    for mut c in pythons.into_iter().chain(rusts) {
        c.expect(&format!("done {EACH}"));
        let span = c.next_report();
        let (first, last) = span
            .strip_prefix("span ")
            .and_then(|s| s.split_once(' '))
            .expect(&span);
        spans.push((first.parse::<u64>().unwrap(), last.parse::<u64>().unwrap()));
        c.finish();
    }
    assert_eq!(
        support::read_counter(&counter),
        4 * EACH,
        "lost or duplicated increments"
    );
    // The exact total means something only if the two sides interleaved.
    let overlap = |(a, b): (u64, u64), (c, d): (u64, u64)| a < d && c < b;
    let (py, rs) = spans.split_at(2);
    assert!(
        py.iter().any(|&p| rs.iter().any(|&r| overlap(p, r))),
        "Python and Rust did not run at the same time: spans {spans:?}"
    );
    println!("counter spans (first, last) of 2 oslo and 2 Rust processes: {spans:?}");
}

#[test]
fn oslo_gets_its_turn_while_rust_threads_hand_the_lock_file_over() {
    // Three Rust threads hammer one lock (no pause: one is always queued,
    // so releases hand the file over in process) while two oslo processes
    // count on the same file: the batch bound must give oslo its turns,
    // and the total must be exact.
    // With classic per-process locks there are no handoffs and no turns:
    // each Rust release frees the file, and oslo's poller (sleeping up to
    // 100 ms between tries) finds it free by chance, about every 0.2 s
    // here. A few increments show that it still gets in.
    let py_each: u64 = if support::cohorting() { 300 } else { 20 };
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    let each = py_each.to_string();
    let args = [
        "count",
        "counter",
        "nova-",
        s(dir.path()),
        s(&counter),
        &each,
    ];
    let mut pythons: Vec<_> = (0..2).map(|_| helper(&args).spawn()).collect();
    // The Rust threads count until both oslo processes are done: oslo
    // finishes only by getting turns between the Rust threads' handoffs
    // (or the test gives up after the patience period).
    let mut rust = support::counter_child_with(
        dir.path(),
        "nova-",
        "counter",
        &counter,
        3,
        1_000,
        Duration::ZERO,
        &[("LOCKUTILS_TEST_UNTIL_STOP", "1")],
    );
    for c in pythons.iter_mut().chain(std::iter::once(&mut rust)) {
        c.expect("ready");
    }
    for c in pythons.iter_mut().chain(std::iter::once(&mut rust)) {
        c.send("go");
    }
    let mut py_spans = Vec::new();
    for mut py in pythons {
        py.expect(&format!("done {py_each}"));
        py_spans.push(py.next_report());
        py.finish();
    }
    rust.send("stop");
    let done = rust.next_report();
    let rust_added: u64 = done
        .strip_prefix("done ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a done report: {done:?}"));
    let rust_span = rust.next_report();
    let (handoffs, longest) = support::parse_cohort(&rust.next_report());
    rust.finish();
    assert_eq!(
        support::read_counter(&counter),
        2 * py_each + rust_added,
        "lost or duplicated increments"
    );
    support::check_handoffs(handoffs, "Rust threads beside oslo");
    assert!(
        longest <= lockutils::config::cohort_limit().0,
        "batch of {longest}"
    );
    let span = |r: &str| -> (u64, u64) {
        let (a, b) = r
            .strip_prefix("span ")
            .and_then(|x| x.split_once(' '))
            .expect(r);
        (a.parse().unwrap(), b.parse().unwrap())
    };
    let (rs_first, rs_last) = span(&rust_span);
    // oslo wrote values inside the Rust span: it got turns while the Rust
    // threads were handing over, not only before or after them.
    assert!(
        py_spans
            .iter()
            .map(|p| span(p))
            .any(|(a, b)| a < rs_last && rs_first < b),
        "oslo never ran while Rust held: rust {rust_span}, oslo {py_spans:?}"
    );
    println!(
        "rust span {rust_span}, oslo spans {py_spans:?}, {handoffs} handoffs (longest batch {longest})"
    );
}

#[test]
fn oslo_makes_the_same_file_names() {
    let cases = [
        ("iptables", "nova-"),
        ("iptables", "nova"),
        ("iptables", ""),
        ("a/b", ""),
        ("x/y/z", "neutron"),
        ("ünïcödé", "p"),
    ];
    for (name, prefix) in cases {
        let py_dir = tempfile::tempdir().unwrap();
        let mut py = helper(&["filename", name, prefix, s(py_dir.path())]).spawn();
        let oslo = py.next_report();
        py.finish();
        let oslo = oslo.strip_prefix("file ").expect(&oslo).to_owned();

        let dir = tempfile::tempdir().unwrap();
        let guard = lockutils::lock(name)
            .prefix(prefix)
            .external()
            .lock_path(dir.path());
        let ours = guard
            .acquire()
            .unwrap()
            .location()
            .and_then(lockutils::Location::into_file)
            .unwrap();
        assert_eq!(ours.parent(), Some(dir.path()));
        assert_eq!(
            ours.file_name().unwrap().to_str(),
            Some(&*oslo),
            "({name:?}, {prefix:?})"
        );
    }
}
