//! Lock-order checking: the first acquisition that closes a
//! cycle in "held A while taking B" is reported before it waits, naming
//! every lock and the function that took it.
//!
//! The check and its graph are process-wide, so every test here takes
//! [`serial`] and uses lock names of its own. The environment variable is
//! read once per process: those tests re-run this binary as a child.

#[path = "support/capture.rs"]
mod capture;

use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use lockutils::{LockError, config::LockOrderCheck, synchronized};

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time, with the check set to `check`.
fn serial(check: LockOrderCheck) -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    lockutils::config::set_lock_order_check(check);
    guard
}

fn panic_message(err: Box<dyn std::any::Any + Send>) -> String {
    match err.downcast::<String>() {
        Ok(s) => *s,
        Err(e) => e.downcast_ref::<&str>().unwrap_or(&"?").to_string(),
    }
}

/// Runs `f` on a new thread and returns its panic message.
fn panics_on_a_thread(f: impl FnOnce() + Send + 'static) -> String {
    panic_message(thread::spawn(f).join().expect_err("should have panicked"))
}

/// Whether another thread can take `name` without waiting right now.
fn is_free(name: &'static str) -> bool {
    thread::spawn(move || lockutils::lock(name).blocking(false).acquire().is_ok())
        .join()
        .unwrap()
}

// ---- two locks, #[synchronized] --------------------------------------------

#[synchronized("order-a")]
fn a_then_b() {
    b_inner();
}

#[synchronized("order-b")]
fn b_inner() {}

#[synchronized("order-b")]
fn b_then_a() {
    a_inner();
}

#[synchronized("order-a")]
fn a_inner() {}

#[test]
fn two_lock_inversion_panics_naming_both_locks_and_both_functions() {
    let _s = serial(LockOrderCheck::Panic);
    thread::spawn(a_then_b).join().unwrap();
    let text = panics_on_a_thread(b_then_a);
    assert!(text.contains("among 2 locks"), "{text}");
    assert!(
        text.contains(
            "now: \"order-a\" taken by lock_order::a_inner while holding \"order-b\" \
             (taken by lock_order::b_then_a)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "earlier: \"order-b\" taken by lock_order::b_inner while holding \"order-a\" \
             (taken by lock_order::a_then_b)"
        ),
        "{text}"
    );
    // The panic released what the thread held, and the good order still works.
    assert!(is_free("order-a") && is_free("order-b"));
    a_then_b();
}

#[synchronized("order-wait-a")]
fn wait_a_then_b() {
    wait_b_inner();
}

#[synchronized("order-wait-b")]
fn wait_b_inner() {}

#[synchronized("order-wait-b")]
fn b_then_busy_a() {
    wait_a_inner().unwrap();
}

// Without the check, the test would see a timeout here instead of hanging.
#[synchronized("order-wait-a", timeout = "10s")]
fn wait_a_inner() -> Result<(), LockError> {
    Ok(())
}

#[test]
fn the_report_comes_before_waiting_for_a_busy_lock() {
    let _s = serial(LockOrderCheck::Panic);
    thread::spawn(wait_a_then_b).join().unwrap();
    // One thread holds a until told; the test tells it only afterwards, so
    // the thread below would wait for a until the timeout if it waited.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (held_tx, held_rx) = mpsc::channel();
    let holder = thread::spawn(move || {
        let _a = lockutils::lock("order-wait-a").acquire().unwrap();
        held_tx.send(()).unwrap();
        let _ = go_rx.recv();
    });
    held_rx.recv().unwrap();
    let started = std::time::Instant::now();
    let text = panics_on_a_thread(b_then_busy_a);
    assert!(
        text.contains("\"order-wait-a\" taken by lock_order::wait_a_inner"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it waited first"
    );
    drop(go_tx);
    holder.join().unwrap();
    assert!(is_free("order-wait-b"), "the panicking thread released b");
}

// ---- three locks, the builder -------------------------------------------

#[test]
fn three_lock_cycle_names_every_lock_and_call_site() {
    let _s = serial(LockOrderCheck::Panic);
    let nest = |outer: &'static str, inner: &'static str| {
        thread::spawn(move || {
            let _o = lockutils::lock(outer).acquire().unwrap();
            let _i = lockutils::lock(inner).acquire().unwrap();
        })
        .join()
    };
    nest("cycle3-x", "cycle3-y").unwrap();
    nest("cycle3-y", "cycle3-z").unwrap();
    nest("cycle3-x", "cycle3-y").unwrap();
    let text = panic_message(nest("cycle3-z", "cycle3-x").unwrap_err());
    assert!(text.contains("among 3 locks"), "{text}");
    for lock in [
        "\"cycle3-x\" taken by",
        "\"cycle3-y\" taken by",
        "\"cycle3-z\" taken by",
    ] {
        assert!(text.contains(lock), "{lock} missing from {text}");
    }
    assert!(
        text.contains("tests/lock_order.rs:"),
        "call sites are file:line: {text}"
    );
    for name in ["cycle3-x", "cycle3-y", "cycle3-z"] {
        assert!(is_free(name), "{name} left held");
    }
}

// ---- shared, semaphores, external, try-locks ----------------------------

#[test]
fn shared_semaphore_and_external_locks_take_part() {
    let _s = serial(LockOrderCheck::Panic);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    {
        let _r = lockutils::lock("kinds-read").shared().acquire().unwrap();
        let _p = lockutils::lock("kinds-permits")
            .permits(3)
            .acquire()
            .unwrap();
        let _e = lockutils::lock("kinds-file")
            .external()
            .lock_path(&path)
            .acquire()
            .unwrap();
    }
    let p = path.clone();
    let text = panics_on_a_thread(move || {
        let _e = lockutils::lock("kinds-file")
            .external()
            .lock_path(&p)
            .acquire()
            .unwrap();
        let _r = lockutils::lock("kinds-read").shared().acquire().unwrap();
    });
    assert!(text.contains("\"kinds-read\""), "{text}");
    assert!(text.contains("\"kinds-file\""), "{text}");
    let text = panics_on_a_thread(|| {
        let _p = lockutils::lock("kinds-permits")
            .permits(3)
            .acquire()
            .unwrap();
        let _r = lockutils::lock("kinds-read").shared().acquire().unwrap();
    });
    assert!(text.contains("\"kinds-permits\""), "{text}");
    // The lock file was released by unwinding too.
    let free = lockutils::lock("kinds-file")
        .external()
        .lock_path(&path)
        .blocking(false)
        .acquire();
    assert!(free.is_ok(), "{free:?}");
}

#[test]
fn try_locks_add_no_edge() {
    let _s = serial(LockOrderCheck::Panic);
    thread::spawn(|| {
        let _a = lockutils::lock("try-a").acquire().unwrap();
        let _b = lockutils::lock("try-b").blocking(false).acquire().unwrap();
    })
    .join()
    .unwrap();
    // The usual way out of an inversion: try the second lock, back off.
    let _b = lockutils::lock("try-b").acquire().unwrap();
    let _a = lockutils::lock("try-a").acquire().unwrap();
}

// ---- many threads ---------------------------------------------------------

#[synchronized("many-0")]
fn many_0(depth: u32) {
    if depth > 0 {
        many_1(depth - 1);
    }
}

#[synchronized("many-1", shared)]
fn many_1(depth: u32) {
    if depth > 0 {
        many_2(depth - 1);
    }
}

#[synchronized("many-2", permits = 2)]
fn many_2(depth: u32) {
    if depth > 0 {
        many_3();
    }
}

#[synchronized("many-3")]
fn many_3() {}

#[test]
fn consistent_orders_across_many_threads_are_never_reported() {
    let _s = serial(LockOrderCheck::Panic);
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                for i in 0..500u32 {
                    // Every thread enters the chain at another depth and
                    // skips links, but always in the order 0, 1, 2, 3.
                    match (i + t) % 4 {
                        0 => many_0(3),
                        1 => many_1(2),
                        2 => many_0(1),
                        _ => {
                            let _g = lockutils::lock("many-0").acquire().unwrap();
                            many_2(1);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a consistent order was reported");
    }
}

// ---- async tasks ------------------------------------------------------------

#[synchronized("task-a")]
async fn task_a_then_b() {
    tokio::task::yield_now().await;
    task_b_inner().await;
}

#[synchronized("task-b")]
async fn task_b_inner() {
    tokio::task::yield_now().await;
}

#[synchronized("task-b")]
async fn task_b_then_a() {
    tokio::task::yield_now().await;
    task_a_inner().await;
}

#[synchronized("task-a")]
async fn task_a_inner() {}

#[test]
fn async_tasks_report_inversions_across_worker_threads() {
    let _s = serial(LockOrderCheck::Panic);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Many tasks in the good order, concurrently: nothing reported.
        let good: Vec<_> = (0..32).map(|_| tokio::spawn(task_a_then_b())).collect();
        for t in good {
            t.await.expect("consistent order reported");
        }
        // Two tasks holding one lock each, concurrently: no edge between them.
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let other = tokio::spawn(async move {
            let _b = lockutils::lock("task-c").acquire_async().await.unwrap();
            held_tx.send(()).unwrap();
            go_rx.await.unwrap();
        });
        held_rx.await.unwrap();
        let a = lockutils::lock("task-a").acquire_async().await.unwrap();
        go_tx.send(()).unwrap();
        other.await.unwrap();
        drop(a);
        // Had "task-c -> task-a" been recorded, this order would panic.
        tokio::spawn(async {
            let _a = lockutils::lock("task-a").acquire_async().await.unwrap();
            let _c = lockutils::lock("task-c").acquire_async().await.unwrap();
        })
        .await
        .expect("holds of another task are not this task's");

        let err = tokio::spawn(task_b_then_a()).await.unwrap_err();
        let text = panic_message(err.into_panic());
        assert!(
            text.contains(
                "now: \"task-a\" taken by lock_order::task_a_inner while holding \"task-b\""
            ),
            "{text}"
        );
        assert!(text.contains("lock_order::task_a_then_b"), "{text}");
        // The builder in a task: the same check.
        let err = tokio::spawn(async {
            let _b = lockutils::lock("task-b").acquire_async().await.unwrap();
            tokio::task::yield_now().await;
            let _a = lockutils::lock("task-a").acquire_async().await.unwrap();
        })
        .await
        .unwrap_err();
        assert!(panic_message(err.into_panic()).contains("among 2 locks"));
    });
    assert!(is_free("task-a") && is_free("task-b"));
}

/// Issue 20, item 1: a task sends each guard to a thread that drops it
/// while the task takes its next lock. The task's check read the sent
/// lock's name after that thread had freed its registry entry: a
/// heap-use-after-free under AddressSanitizer (`scripts/sanitizers.sh`).
#[test]
fn a_guard_dropped_on_another_thread_while_its_task_takes_a_lock() {
    let _s = serial(LockOrderCheck::Panic);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel::<lockutils::AsyncLockGuard>();
    let dropper = thread::spawn(move || rx.into_iter().map(drop).count());
    let task = rt.spawn(async move {
        for i in 0..3000 {
            let name = format!("sent-guard-{i}");
            let guard = lockutils::lock(&name).acquire_async().await.unwrap();
            tx.send(guard).unwrap();
        }
        3000
    });
    let sent = rt
        .block_on(task)
        .expect("no cycle among names taken one after another");
    assert_eq!(dropper.join().unwrap(), sent);
}

// ---- off ------------------------------------------------------------------

#[test]
fn off_records_and_reports_nothing() {
    let _s = serial(LockOrderCheck::Off);
    {
        let _a = lockutils::lock("off-a").acquire().unwrap();
        let _b = lockutils::lock("off-b").acquire().unwrap();
    }
    let _b = lockutils::lock("off-b").acquire().unwrap();
    let _a = lockutils::lock("off-a").acquire().unwrap();
    drop((_a, _b));
    // Nothing was recorded while off: switching on finds no cycle.
    lockutils::config::set_lock_order_check(LockOrderCheck::Panic);
    let _a = lockutils::lock("off-a").acquire().unwrap();
    let _b = lockutils::lock("off-b").acquire().unwrap();
}

// ---- the environment (child processes) ------------------------------------

const CHILD: &str = "LOCK_ORDER_TEST_CHILD";

/// Runs `child_inversion` in a new process with `LOCKUTILS_LOCK_ORDER`
/// set to `value`; returns its exit status and output.
fn child(value: &str) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_inversion",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env(lockutils::config::LOCK_ORDER_ENV, value)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// In a child process: one inversion, run three times, printing what
/// happened; the parent test reads it.
#[test]
fn child_inversion() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    match lockutils::config::lock_order_check() {
        Ok(check) => println!("check={check}"),
        Err(e) => {
            let err = lockutils::lock("env-a").acquire().unwrap_err();
            assert!(matches!(err, LockError::InvalidEnv { .. }));
            println!("error={e}; acquire: {err}");
            return;
        }
    }
    let out = capture::debug_output(|| {
        for _ in 0..3 {
            drop((
                lockutils::lock("env-a").acquire(),
                lockutils::lock("env-b").acquire(),
            ));
            drop((
                lockutils::lock("env-b").acquire(),
                lockutils::lock("env-a").acquire(),
            ));
        }
    });
    println!("warnings={}", out.matches(" WARN ").count());
    println!("{out}");
    println!("survived");
}

#[test]
fn the_environment_variable_sets_the_check() {
    let (ok, out) = child("warn");
    assert!(ok, "{out}");
    assert!(
        out.contains("check=warn") && out.contains("survived"),
        "{out}"
    );
    assert!(
        out.contains("warnings=1"),
        "one warning for one cycle, however often: {out}"
    );
    assert!(
        out.contains("WARN lockutils") && out.contains("\"env-a\" taken by tests/lock_order.rs:"),
        "{out}"
    );

    let (ok, out) = child("OFF");
    assert!(
        ok && out.contains("check=off") && out.contains("warnings=0"),
        "{out}"
    );

    let (ok, out) = child("panic");
    assert!(!ok, "{out}");
    assert!(
        out.contains("check=panic") && !out.contains("survived"),
        "{out}"
    );
    assert!(
        out.contains("lock order cycle (possible deadlock) among 2 locks"),
        "{out}"
    );

    // Empty is unset: the default (this test binary has debug assertions).
    let (ok, out) = child("");
    assert!(!ok && out.contains("check=panic"), "{out}");

    let (ok, out) = child("sometimes");
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "acquire: environment variable LOCKUTILS_LOCK_ORDER=\"sometimes\" is not one of \
             panic, warn or off"
        ),
        "{out}"
    );
}

#[test]
fn the_default_follows_debug_assertions() {
    let expected = if cfg!(debug_assertions) {
        LockOrderCheck::Panic
    } else {
        LockOrderCheck::Off
    };
    assert_eq!(LockOrderCheck::DEFAULT, expected);
}
