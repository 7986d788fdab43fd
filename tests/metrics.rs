//! Lock metrics (feature `metrics`) as a real exporter renders them: the
//! Prometheus exporter of the metrics-rs project, one recorder per test
//! (a thread-local one, so tests running side by side do not mix), read
//! back from its text output.
#![cfg(all(unix, feature = "metrics"))]

mod support;

use std::time::Duration;

use lockutils::__private_v0_1::has_waiters;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use support::{param, report, running_as};

/// A recorder of its own, at an address no other recorder will take (the
/// runtime tells recorders apart by address), and its handle.
fn recorder() -> (&'static PrometheusRecorder, PrometheusHandle) {
    let rec = PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.01, 0.1, 1.0])
        .unwrap()
        .build_recorder();
    let handle = rec.handle();
    (Box::leak(Box::new(rec)), handle)
}

/// The value of `metric{lock="name"}` in the exporter's text, or 0.
fn value(text: &str, metric: &str, lock: &str) -> f64 {
    let head = format!("{metric}{{lock=\"{lock}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn acquisitions(text: &str, lock: &str) -> f64 {
    value(text, "lockutils_acquisitions_total", lock)
}

fn contended(text: &str, lock: &str) -> f64 {
    value(text, "lockutils_contended_acquisitions_total", lock)
}

/// One acquisition waits for another thread's: counted as contended, its
/// wait and its hold recorded; the uncontended ones are not contended.
#[test]
fn contended_acquisitions_and_wait_and_hold_times_are_counted_by_name() {
    let (rec, handle) = recorder();
    let name = "m-contended";
    let held = lockutils::lock(name).acquire().unwrap();
    let waiter = std::thread::spawn(move || {
        metrics::with_local_recorder(rec, || {
            drop(lockutils::lock(name).acquire().unwrap());
            for _ in 0..5 {
                drop(lockutils::lock(name).acquire().unwrap());
            }
        })
    });
    support::wait_for("the thread waits", support::PATIENCE, || {
        has_waiters(name) == Some(true)
    });
    std::thread::sleep(Duration::from_millis(20)); // the wait to be measured
    drop(held);
    waiter.join().unwrap();
    let text = handle.render();
    assert_eq!(acquisitions(&text, name), 6.0, "{text}");
    assert_eq!(contended(&text, name), 1.0, "{text}");
    assert_eq!(
        value(&text, "lockutils_wait_seconds_count", name),
        6.0,
        "{text}"
    );
    let waited = value(&text, "lockutils_wait_seconds_sum", name);
    assert!(waited >= 0.02, "waited {waited} s in all: {text}");
    assert_eq!(
        value(&text, "lockutils_hold_seconds_count", name),
        6.0,
        "{text}"
    );
    assert!(text.contains("# HELP lockutils_wait_seconds"), "{text}");
}

#[test]
fn hold_times_are_recorded_at_release() {
    let (rec, handle) = recorder();
    metrics::with_local_recorder(rec, || {
        let guard = lockutils::lock("m-hold").acquire().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(guard);
    });
    let text = handle.render();
    assert_eq!(value(&text, "lockutils_hold_seconds_count", "m-hold"), 1.0);
    let held = value(&text, "lockutils_hold_seconds_sum", "m-hold");
    assert!((0.05..5.0).contains(&held), "held {held} s: {text}");
}

#[lockutils::synchronized("m-sync")]
fn synchronized_body() {}

/// `#[synchronized]`'s inline fast path steps aside: every call counts.
#[test]
fn synchronized_calls_are_counted() {
    let (rec, handle) = recorder();
    metrics::with_local_recorder(rec, || (0..10).for_each(|_| synchronized_body()));
    assert_eq!(acquisitions(&handle.render(), "m-sync"), 10.0);
}

/// An async acquisition of a lock file that another process holds:
/// contended, counted once it gets the file.
#[test]
fn lock_files_held_by_another_process_count_as_contended_async_too() {
    let (rec, handle) = recorder();
    let dir = tempfile::tempdir().unwrap();
    let name = "m-file";
    let holder = support::hold(dir.path(), "", name);
    let path = dir.path().join(name);
    let d = dir.path().to_path_buf();
    let waiter = std::thread::spawn(move || {
        metrics::with_local_recorder(rec, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let lock = lockutils::lock(name).external().lock_path(&d);
                drop(lock.acquire_async().await.unwrap());
            })
        })
    });
    support::await_blocked_waiters(&path, 1);
    support::release(holder).finish();
    waiter.join().unwrap();
    let text = handle.render();
    assert_eq!(acquisitions(&text, name), 1.0, "{text}");
    assert_eq!(contended(&text, name), 1.0, "{text}");
}

/// A lock used before any recorder was in force is still reported once
/// one is (handles follow the recorder).
#[test]
fn a_recorder_installed_after_the_first_acquisitions_gets_the_later_ones() {
    let name = "m-late";
    let kept = lockutils::lock(name);
    drop(kept.acquire().unwrap()); // counted by no one
    let (rec, handle) = recorder();
    metrics::with_local_recorder(rec, || drop(kept.acquire().unwrap()));
    assert_eq!(acquisitions(&handle.render(), name), 1.0);
}

/// Child: takes `COUNT` locks of distinct names with
/// `LOCKUTILS_METRICS_NAMES` set by the parent, reports how many series
/// of their own appeared and what the folded series counted.
#[test]
fn child_many_names() {
    if !running_as("child_many_names") {
        return;
    }
    let (rec, handle) = recorder();
    let count: usize = param("COUNT").parse().unwrap();
    metrics::with_local_recorder(rec, || {
        for i in 0..count {
            drop(lockutils::lock(&format!("m-fold-{i}")).acquire().unwrap());
        }
    });
    let text = handle.render();
    let own = text
        .lines()
        .filter(|l| l.starts_with("lockutils_acquisitions_total{lock=\"m-fold-"))
        .count();
    let folded = acquisitions(&text, lockutils::config::METRICS_FOLDED);
    report(format!("own {own} folded {folded}"));
}

/// Past the bound on names, further names share one folded series.
#[test]
fn names_past_the_limit_are_folded_into_one_series() {
    let mut c = support::child("child_many_names")
        .param("COUNT", "10")
        .env(lockutils::config::METRICS_NAMES_ENV, "3")
        .spawn();
    c.expect("own 3 folded 7");
    c.finish();
}
