//! The checker on its own: holds listed through `enter`/`enter_async` with
//! `'static` names, real threads, a real `tracing` subscriber.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Barrier};

use super::graph::HeldLock;
use super::*;
use crate::registry::{self, Handle};
use crate::spec::Kind;

/// Rounds of the tests that repeat an interleaving: fewer under Miri,
/// which interprets every step (and explores interleavings by itself).
const ROUNDS: usize = if cfg!(miri) { 60 } else { 3000 };

/// The check is process-wide: tests that set it run one at a time.
static MODE: Mutex<()> = Mutex::new(());

fn with_mode<T>(check: LockOrderCheck, f: impl FnOnce() -> T) -> T {
    let _one = MODE.lock();
    set_lock_order_check(check);
    f()
}

fn take(name: &'static str, site: &'static str) -> OrderToken {
    // SAFETY: a `'static` name outlives every hold.
    unsafe { enter(name, Site::Function(site), true) }.expect("valid check")
}

fn panic_text(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("should panic");
    match err.downcast::<String>() {
        Ok(s) => *s,
        Err(e) => e.downcast_ref::<&str>().unwrap_or(&"?").to_string(),
    }
}

/// A task known by made-up pointers (no waker behind them).
fn fake_task(data: usize) -> Task {
    Task {
        key: TaskKey::Waker(data),
        waker: None,
    }
}

fn held_here() -> usize {
    HELD.with(|h| h.borrow().len())
}

#[test]
fn two_lock_inversion_panics_naming_both_locks_and_functions() {
    with_mode(LockOrderCheck::Panic, || {
        {
            let _a = take("t2-a", "app::f");
            let _b = take("t2-b", "app::f");
        }
        let text = panic_text(|| {
            let _b = take("t2-b", "app::g");
            let _a = take("t2-a", "app::g");
        });
        assert!(text.contains("among 2 locks"), "{text}");
        assert!(
            text.contains("now: \"t2-a\" taken by app::g while holding \"t2-b\" (taken by app::g)"),
            "{text}"
        );
        assert!(
            text.contains(
                "earlier: \"t2-b\" taken by app::f while holding \"t2-a\" (taken by app::f)"
            ),
            "{text}"
        );
        // Unwinding unlisted what the closure held.
        assert_eq!(held_here(), 0);
        // The panicking acquisition recorded nothing: the good order still
        // passes, and the bad one still panics.
        drop((take("t2-a", "app::f"), take("t2-b", "app::f")));
        panic_text(|| drop((take("t2-b", "app::g"), take("t2-a", "app::g"))));
    });
}

#[test]
fn three_lock_cycle_names_every_lock() {
    with_mode(LockOrderCheck::Panic, || {
        drop((take("t3-a", "f1"), take("t3-b", "f1")));
        drop((take("t3-b", "f2"), take("t3-c", "f2")));
        // Again in the recorded order: fine (and no direct a -> c edge, so
        // the cycle below is the three-lock one).
        drop((take("t3-b", "f4"), take("t3-c", "f4")));
        let text = panic_text(|| drop((take("t3-c", "f3"), take("t3-a", "f3"))));
        assert!(text.contains("among 3 locks"), "{text}");
        for line in [
            "\"t3-a\" taken by f3 while holding \"t3-c\"",
            "\"t3-b\" taken by f1 while holding \"t3-a\"",
            "\"t3-c\" taken by f2 while holding \"t3-b\"",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
    });
}

#[test]
fn consistent_orders_across_many_threads_are_never_reported() {
    const NAMES: [&str; 6] = ["tm-0", "tm-1", "tm-2", "tm-3", "tm-4", "tm-5"];
    with_mode(LockOrderCheck::Panic, || {
        let start = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..ROUNDS as u32 / 10 {
                        // Each thread takes a different increasing subset.
                        let mask = (i * 7 + t * 13) % 64;
                        let holds: Vec<OrderToken> = (0..6)
                            .filter(|b| mask & (1 << b) != 0)
                            .map(|b| take(NAMES[b], "worker"))
                            .collect();
                        drop(holds);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no thread reported a cycle");
        }
        // Every increasing pair was seen, so the graph knows them all.
        let graph = GRAPH.read();
        let held = [HeldLock {
            name: "tm-0",
            site: Site::Function("x"),
        }];
        assert!(graph.knows_all(&held, "tm-5"));
    });
}

#[derive(Clone, Default)]
struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn warn_logs_each_cycle_once_and_takes_the_lock() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        // No wall clock: Miri's isolation has none.
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    with_mode(LockOrderCheck::Warn, || {
        tracing::subscriber::with_default(subscriber, || {
            drop((take("tw-a", "f"), take("tw-b", "f")));
            for _ in 0..3 {
                let (b, a) = (take("tw-b", "g"), take("tw-a", "g"));
                assert_eq!(held_here(), 2);
                drop((a, b));
                drop((take("tw-a", "f"), take("tw-b", "f")));
            }
        });
    });
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(out.matches("WARN").count(), 1, "{out}");
    assert!(out.contains("lockutils: lock order cycle"), "{out}");
    assert!(
        out.contains("\"tw-a\" taken by g while holding \"tw-b\""),
        "{out}"
    );
}

#[test]
fn try_locks_add_no_edge_but_count_as_held() {
    with_mode(LockOrderCheck::Panic, || {
        {
            let _a = take("tt-a", "f");
            // SAFETY: a `'static` name outlives every hold.
            let _b = unsafe { enter("tt-b", Site::Function("f"), false) }.unwrap();
            // Held: a lock taken now gets edges from both.
            let _c = take("tt-c", "f");
        }
        // b -> a is not an inversion (the try added no a -> b) ...
        drop((take("tt-b", "g"), take("tt-a", "g")));
        // ... but c -> b is (b was held when c was taken).
        panic_text(|| drop((take("tt-c", "g"), take("tt-b", "g"))));
    });
}

#[test]
fn off_lists_nothing() {
    with_mode(LockOrderCheck::Off, || {
        let h = take("to-a", "f");
        assert_eq!(h.id, 0);
        assert_eq!(held_here(), 0);
        assert!(is_off());
    });
}

#[test]
fn async_holds_belong_to_their_task() {
    fn take_in(task: &Task, name: &'static str) -> AsyncOrderToken {
        enter_async(name, Site::Function("task"), true, task.clone()).unwrap()
    }
    let (t1, t2) = (&fake_task(1), &fake_task(2));
    with_mode(LockOrderCheck::Panic, || {
        // Task 1 holds a while task 2 takes b: no edge between them.
        let a = take_in(t1, "ta-a");
        let b = take_in(t2, "ta-b");
        // Task 1's list moves with the task: dropped on another thread.
        std::thread::spawn(move || drop(a)).join().unwrap();
        drop(b);
        let _b = take_in(t1, "ta-b");
        let _a = take_in(t1, "ta-a");
        let text = panic_text(|| {
            let _a = take_in(t2, "ta-a");
            let _b = take_in(t2, "ta-b");
        });
        assert!(
            text.contains("\"ta-b\" taken by task while holding \"ta-a\""),
            "{text}"
        );
        assert!(
            !TASKS.lock().contains_key(&t2.key),
            "unwinding unlisted task 2"
        );
    });
}

#[test]
fn the_variable_takes_three_values() {
    assert_eq!(
        "panic".parse::<LockOrderCheck>().unwrap(),
        LockOrderCheck::Panic
    );
    assert_eq!(
        " Warn\n".parse::<LockOrderCheck>().unwrap(),
        LockOrderCheck::Warn
    );
    assert_eq!(
        "OFF".parse::<LockOrderCheck>().unwrap(),
        LockOrderCheck::Off
    );
    let e = "sometimes".parse::<LockOrderCheck>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "environment variable LOCKUTILS_LOCK_ORDER=\"sometimes\" is not one of panic, warn or off"
    );
    assert_eq!(
        LockOrderCheck::DEFAULT,
        LockOrderCheck::Panic,
        "tests build with debug_assertions"
    );
}

#[test]
fn a_task_is_known_by_its_waker_and_call_sites_print_as_file_line() {
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Wake};

    struct W;
    impl Wake for W {
        fn wake(self: Arc<Self>) {}
    }
    let poll_with = |waker: &Waker| {
        let mut fut = pin!(Task::current());
        match fut.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(t) => t,
            Poll::Pending => panic!("Task::current is ready at once"),
        }
    };
    let (w1, w2) = (Waker::from(Arc::new(W)), Waker::from(Arc::new(W)));
    assert_eq!(poll_with(&w1), poll_with(&w1.clone()));
    assert_ne!(poll_with(&w1), poll_with(&w2));
    assert_eq!(poll_with(&w1), Task::of(&w1));

    let here = Site::Caller(Location::caller());
    assert!(
        here.to_string()
            .starts_with("lockutils-runtime/src/order/tests.rs:"),
        "{here}"
    );
}

/// An async hold of a registry entry's name by `task`, as an async
/// acquisition makes one; the hold must drop before the handle.
fn take_entry(name: &str, task: Task) -> (AsyncOrderToken, Handle) {
    let entry = registry::get(name, Kind::MUTEX).expect("a mutex");
    let hold = enter_async(entry.name(), Site::Function("task"), true, task);
    (hold.expect("valid check"), entry)
}

/// Issue 20, item 1: one task's holds, listed from several threads (a
/// task whose guards are dropped on other threads; or, before the fix,
/// threads polling with the one no-op waker), each freed with its
/// registry entry while another thread checks against the task's list.
/// Under AddressSanitizer this was a heap-use-after-free in the graph's
/// name lookup (`scripts/sanitizers.sh` runs it so).
#[test]
fn a_task_list_read_on_one_thread_while_another_frees_a_listed_name() {
    // Each pass takes its own names: the graph keeps the first pass's
    // edges, and the same names taken in another interleaving would be a
    // true order inversion between the two passes.
    for (pass, task) in [fake_task(0x5afe), Task::of(Waker::noop())]
        .into_iter()
        .enumerate()
    {
        with_mode(LockOrderCheck::Panic, || {
            let start = Arc::new(Barrier::new(3));
            let threads: Vec<_> = (0..3)
                .map(|t| {
                    let (start, task) = (start.clone(), task.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        for i in 0..ROUNDS {
                            let name = format!("uaf-{pass}-{t}-{i}");
                            let (hold, entry) = take_entry(&name, task.clone());
                            drop(hold);
                            drop(entry);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join()
                    .expect("names taken one after another close no cycle");
            }
            assert!(!TASKS.lock().contains_key(&task.key), "every hold unlisted");
        });
    }
}

/// The no-op waker is one waker for every task that polls with it: keyed
/// by it, a lock one thread holds counted as held by another thread
/// taking its own lock, and recorded a false edge. Its holds are now the
/// polling thread's: apart across threads, together on one thread.
#[test]
fn the_no_op_waker_does_not_make_threads_one_task() {
    use std::sync::mpsc::channel;
    let take = |name: &'static str| {
        let task = Task::of(Waker::noop());
        enter_async(name, Site::Function("by-hand"), true, task).unwrap()
    };
    with_mode(LockOrderCheck::Panic, || {
        // Another thread holds "nw-a" while this one takes "nw-b".
        let (held_tx, held_rx) = channel();
        let (go_tx, go_rx) = channel::<()>();
        let other = std::thread::spawn(move || {
            let a = take("nw-a");
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            drop(a);
        });
        held_rx.recv().unwrap();
        let b = take("nw-b");
        go_tx.send(()).unwrap();
        other.join().unwrap();
        drop(b);
        // Had "nw-a -> nw-b" been recorded, this order would panic.
        let (b, a) = (take("nw-b"), take("nw-a"));
        drop((a, b));
        // On one thread, futures polled with the no-op waker are one
        // context: the inversion is found.
        let text = panic_text(|| drop((take("nw-a"), take("nw-b"))));
        assert!(
            text.contains("\"nw-b\" taken by by-hand while holding \"nw-a\""),
            "{text}"
        );
        let me = Task::of(Waker::noop());
        assert!(
            !TASKS.lock().contains_key(&me.key),
            "unwinding unlisted them"
        );
        let there = std::thread::spawn(|| Task::of(Waker::noop()));
        assert_ne!(there.join().unwrap(), me);
    });
}

/// A waker's pointers name its task only while the waker lives. A guard
/// that outlives its waker (returned from a `block_on` that then frees
/// it) kept its hold listed under a dead address, and the next waker
/// allocated there (the next `block_on`'s) inherited the hold: a false
/// edge, then a false cycle (seen in tests/chaos.rs). The table now keeps
/// the waker alive while the task has holds listed.
#[test]
fn a_hold_that_outlives_its_waker_is_not_inherited_by_the_next_waker() {
    use std::task::Wake;
    struct W;
    impl Wake for W {
        fn wake(self: Arc<Self>) {}
    }
    let fresh = || Waker::from(Arc::new(W));
    let take = |name: &'static str, waker: &Waker| {
        enter_async(name, Site::Function("block_on"), true, Task::of(waker)).unwrap()
    };
    with_mode(LockOrderCheck::Panic, || {
        let first = fresh();
        let a = take("wr-a", &first);
        let key = Task::of(&first).key;
        drop(first);
        // The allocator hands a freed block of the same size back first:
        // without the table's clone, this waker is at the old address.
        let second = fresh();
        assert_ne!(
            Task::of(&second).key,
            key,
            "a new waker has the key of a task with holds listed"
        );
        let b = take("wr-b", &second);
        drop(second);
        drop((b, a));
        // Had "wr-a -> wr-b" been recorded, this order would panic.
        let third = fresh();
        let (b, a) = (take("wr-b", &third), take("wr-a", &third));
        drop((a, b));
    });
}
