//! The run-time API without the macro: exclusion, waiting modes, re-entry,
//! `locks_held`, async acquisition and cancellation.

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lockutils::{LockError, lock, locks_held};

#[test]
fn same_name_excludes_across_threads() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let events = events.clone();
            thread::spawn(move || {
                for _ in 0..200 {
                    let _g = lock("api-same").acquire().unwrap();
                    events.lock().unwrap().push((t, true));
                    thread::yield_now();
                    events.lock().unwrap().push((t, false));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let ev = events.lock().unwrap();
    assert_eq!(ev.len(), 4 * 200 * 2);
    for pair in ev.chunks(2) {
        assert_eq!(
            pair[0].0, pair[1].0,
            "another thread entered while one held the lock"
        );
        assert!(pair[0].1 && !pair[1].1);
    }
}

#[test]
fn different_names_do_not_exclude() {
    // Both threads must be inside at once for the barrier to open.
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = ["api-diff-a", "api-diff-b"]
        .into_iter()
        .map(|name| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let _g = lock(name).acquire().unwrap();
                barrier.wait();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn prefix_is_part_of_the_identity() {
    let g = lock("api-pfx").prefix("nova").acquire().unwrap();
    assert_eq!(g.name(), "nova-api-pfx");
    // Same full name written another way: busy.
    let e = lock("api-pfx")
        .prefix("nova-")
        .blocking(false)
        .acquire()
        .unwrap_err();
    assert!(
        matches!(e, LockError::WouldBlock { ref name } if name == "nova-api-pfx"),
        "{e}"
    );
    // Other prefix, other lock.
    let _other = lock("api-pfx")
        .prefix("neutron-")
        .blocking(false)
        .acquire()
        .unwrap();
    drop(g);
}

#[test]
fn nonblocking_and_timeout_report_busy() {
    let (held_tx, held_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let _g = lock("api-busy").acquire().unwrap();
        held_tx.send(()).unwrap();
        done_rx.recv().unwrap();
    });
    held_rx.recv().unwrap();

    let e = lock("api-busy").blocking(false).acquire().unwrap_err();
    assert!(matches!(e, LockError::WouldBlock { .. }), "{e}");
    assert!(e.is_busy());

    let t0 = Instant::now();
    let e = lock("api-busy")
        .timeout(Duration::from_millis(100))
        .acquire()
        .unwrap_err();
    let waited = t0.elapsed();
    assert!(
        matches!(e, LockError::Timeout { timeout, .. } if timeout == Duration::from_millis(100)),
        "{e}"
    );
    assert!(
        waited >= Duration::from_millis(100),
        "gave up early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "gave up late: {waited:?}");
    assert!(e.to_string().contains("api-busy"));

    done_tx.send(()).unwrap();
    holder.join().unwrap();
    let _g = lock("api-busy")
        .timeout(Duration::from_secs(10))
        .acquire()
        .unwrap();
}

#[test]
fn a_timed_waiter_gets_the_lock_when_released_in_time() {
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let g = lock("api-timed").acquire().unwrap();
        held_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        drop(g);
    });
    held_rx.recv().unwrap();
    let waiter = thread::spawn(|| {
        lock("api-timed")
            .timeout(Duration::from_secs(30))
            .acquire()
            .map(drop)
    });
    go_tx.send(()).unwrap();
    waiter.join().unwrap().unwrap();
    holder.join().unwrap();
}

#[test]
fn re_entry_panics_naming_the_lock_instead_of_deadlocking() {
    let outer = lock("api-reentry").acquire().unwrap();
    let r = std::panic::catch_unwind(|| lock("api-reentry").acquire().map(drop));
    let msg = panic_message(r.unwrap_err());
    assert!(msg.contains("\"api-reentry\""), "{msg}");
    assert!(msg.contains("re-entrant"), "{msg}");
    // Non-blocking re-entry is not a deadlock: it is just busy.
    assert!(matches!(
        lock("api-reentry").blocking(false).acquire(),
        Err(LockError::WouldBlock { .. })
    ));
    assert_eq!(locks_held(), ["api-reentry"]);
    drop(outer);
    assert!(locks_held().is_empty());
}

#[test]
fn locks_held_lists_this_threads_locks_in_order() {
    assert!(locks_held().is_empty());
    let a = lock("api-held-a").acquire().unwrap();
    let b = lock("api-held-b").prefix("p").acquire().unwrap();
    assert_eq!(locks_held(), ["api-held-a", "p-api-held-b"]);
    // Another thread sees none of them.
    assert!(thread::spawn(locks_held).join().unwrap().is_empty());
    drop(a);
    assert_eq!(locks_held(), ["p-api-held-b"]);
    drop(b);
    assert!(locks_held().is_empty());
}

#[test]
fn panic_while_holding_releases_without_poisoning() {
    let r = thread::spawn(|| {
        let _g = lock("api-panic").acquire().unwrap();
        panic!("boom");
    })
    .join();
    assert!(r.is_err());
    let _g = lock("api-panic")
        .blocking(false)
        .acquire()
        .expect("lock stayed held after a panic");
}

#[test]
fn invalid_names_are_errors_not_panics() {
    for (name, prefix) in [("", ""), ("a\0b", ""), (".", ""), ("..", ""), ("x", "a/b")] {
        let e = lock(name).prefix(prefix).acquire().unwrap_err();
        assert!(
            matches!(e, LockError::InvalidName { .. }),
            "{name:?}/{prefix:?}: {e}"
        );
    }
    let long = "x".repeat(256);
    let e = lock(&long).acquire().unwrap_err();
    assert!(e.to_string().contains("longer than 255 bytes"), "{e}");
}

#[test]
fn kept_builder_can_be_acquired_repeatedly() {
    let l = lock("api-kept").prefix("k");
    for _ in 0..3 {
        let g = l.acquire().unwrap();
        assert_eq!(g.name(), "k-api-kept");
    }
}

#[test]
fn async_waiter_does_not_block_the_executor() {
    // One executor thread: if waiting blocked it, the holder task could
    // never run to release the lock.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let g = lock("api-async").acquire_async().await.unwrap();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            let l = lock("api-async");
            let fut = l.acquire_async();
            started_tx.send(()).unwrap();
            let g = fut.await.unwrap();
            g.name().to_owned()
        });
        started_rx.await.unwrap();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(g);
        assert_eq!(waiter.await.unwrap(), "api-async");
    });
}

#[test]
fn async_guard_is_held_across_await_on_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let inside = Arc::new(Mutex::new(0u32));
    let max_inside = Arc::new(Mutex::new(0u32));
    rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (inside, max_inside) = (inside.clone(), max_inside.clone());
                tokio::spawn(async move {
                    for _ in 0..20 {
                        let _g = lock("api-async-mt").acquire_async().await.unwrap();
                        let n = {
                            let mut i = inside.lock().unwrap();
                            *i += 1;
                            *i
                        };
                        {
                            let mut m = max_inside.lock().unwrap();
                            *m = (*m).max(n);
                        }
                        tokio::task::yield_now().await;
                        *inside.lock().unwrap() -= 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(*max_inside.lock().unwrap(), 1);
}

#[test]
fn async_timeout_and_nonblocking() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _g = lock("api-async-to").acquire_async().await.unwrap();
        let t0 = Instant::now();
        let e = lock("api-async-to")
            .timeout(Duration::from_millis(50))
            .acquire_async()
            .await;
        assert!(matches!(e, Err(LockError::Timeout { .. })), "{e:?}");
        assert!(t0.elapsed() >= Duration::from_millis(50));
        let e = lock("api-async-to").blocking(false).acquire_async().await;
        assert!(matches!(e, Err(LockError::WouldBlock { .. })), "{e:?}");
    });
}

#[test]
fn dropped_async_waiter_leaves_the_lock_usable() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let g = lock("api-async-cancel").acquire_async().await.unwrap();
        // A waiter that is polled (queued) and then dropped.
        let l = lock("api-async-cancel");
        let r = tokio::time::timeout(Duration::from_millis(20), l.acquire_async()).await;
        assert!(r.is_err(), "acquired a held lock");
        drop(g);
        // The next waiter must not be starved by the dropped one.
        let g2 = tokio::time::timeout(
            Duration::from_secs(10),
            lock("api-async-cancel").acquire_async(),
        )
        .await
        .expect("wake-up lost after a cancelled waiter")
        .unwrap();
        drop(g2);
    });
}

#[test]
fn threads_and_tasks_share_one_lock() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let counter = Arc::new(Mutex::new((0u64, false)));
    let thread_side = {
        let counter = counter.clone();
        thread::spawn(move || {
            for _ in 0..500 {
                let _g = lock("api-mixed").acquire().unwrap();
                let mut c = counter.lock().unwrap();
                assert!(!c.1, "a task was inside");
                c.1 = true;
                drop(c);
                thread::yield_now();
                let mut c = counter.lock().unwrap();
                c.0 += 1;
                c.1 = false;
            }
        })
    };
    rt.block_on(async {
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let counter = counter.clone();
                tokio::spawn(async move {
                    for _ in 0..250 {
                        let _g = lock("api-mixed").acquire_async().await.unwrap();
                        {
                            let mut c = counter.lock().unwrap();
                            assert!(!c.1, "a thread was inside");
                            c.1 = true;
                        }
                        tokio::task::yield_now().await;
                        let mut c = counter.lock().unwrap();
                        c.0 += 1;
                        c.1 = false;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    thread_side.join().unwrap();
    assert_eq!(counter.lock().unwrap().0, 1000);
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The messages a new user meets first, pinned word for word.
#[test]
fn kind_mismatch_and_backend_errors_read_as_sentences() {
    let plain = lockutils::lock("msg-kind").acquire().unwrap();
    let e = lockutils::lock("msg-kind").fair().acquire().unwrap_err();
    assert_eq!(
        e.to_string(),
        "lock \"msg-kind\" was asked for as a fair lock, but it is in use as a lock; \
         every user of a lock name must ask for the same kind"
    );
    drop(plain);

    let e = lockutils::config::set_backend("memcached://u:secret@h:11211").unwrap_err();
    assert_eq!(
        e.to_string(),
        "lock server memcached://u:***@h:11211: cannot configure: unknown scheme \
         \"memcached\": expected file://, postgres://, etcd://, redis:// or mysql://"
    );
    let e = lockutils::lock("msg-backend")
        .external()
        .backend("memcached://h")
        .acquire()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "lock \"msg-backend\" on memcached://h: cannot configure: unknown scheme \
         \"memcached\": expected file://, postgres://, etcd://, redis:// or mysql://"
    );
}
