//! `#[synchronized]` on `async fn` and on functions returning futures: the
//! lock is awaited (never blocking the executor) and held until the future
//! completes, not only while it is built.
//!
//! Async guards are not listed by `locks_held()` (a future can move between
//! threads), so these tests look from outside: `is_free` tries the lock,
//! without waiting, from another thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use lockutils::{LockError, synchronized};
use tokio::sync::oneshot;

/// Whether another thread could take `name` (without waiting) right now.
fn is_free(name: &str) -> bool {
    let name = name.to_owned();
    thread::spawn(move || lockutils::lock(&name).blocking(false).acquire().is_ok())
        .join()
        .unwrap()
}

/// Fails the test instead of hanging it if `fut` never completes.
async fn within_10s<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("did not complete within 10 s")
}

/// A body that says it is running, then waits to be told to finish.
struct Pause {
    entered: oneshot::Sender<()>,
    finish: oneshot::Receiver<()>,
}

/// The test's side of a [`Pause`].
struct Control {
    entered: oneshot::Receiver<()>,
    finish: oneshot::Sender<()>,
}

fn pause() -> (Pause, Control) {
    let (entered_tx, entered_rx) = oneshot::channel();
    let (finish_tx, finish_rx) = oneshot::channel();
    (
        Pause {
            entered: entered_tx,
            finish: finish_rx,
        },
        Control {
            entered: entered_rx,
            finish: finish_tx,
        },
    )
}

impl Pause {
    async fn run(self) {
        self.entered.send(()).unwrap();
        self.finish.await.unwrap();
    }
}

/// Checks that `name` is free, that it is held once the body has been
/// entered (and across the body's `.await`), and free again afterwards.
async fn assert_held_while_running<T: Send + 'static>(
    name: &str,
    task: tokio::task::JoinHandle<T>,
    control: Control,
) -> T {
    within_10s(control.entered).await.unwrap();
    assert!(!is_free(name), "{name} is free while the body runs");
    control.finish.send(()).unwrap();
    let out = within_10s(task).await.unwrap();
    assert!(
        is_free(name),
        "{name} is still held after the future completed"
    );
    out
}

// --------------------------------------------------------------- async fn

#[synchronized("async-fn")]
async fn async_fn(p: Pause, x: u32) -> u32 {
    p.run().await;
    x + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_fn_holds_the_lock_across_await() {
    let (p, control) = pause();
    let task = tokio::spawn(async_fn(p, 41));
    assert_eq!(
        assert_held_while_running("async-fn", task, control).await,
        42
    );
}

struct Service {
    n: u32,
}

impl Service {
    #[synchronized("async-method")]
    async fn handle(&self, p: Pause) -> u32 {
        p.run().await;
        self.n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_method() {
    let (p, control) = pause();
    let service = Arc::new(Service { n: 7 });
    let task = tokio::spawn(async move { service.handle(p).await });
    assert_eq!(
        assert_held_while_running("async-method", task, control).await,
        7
    );
}

static EVENTS: Mutex<Vec<(usize, bool)>> = Mutex::new(Vec::new());

#[synchronized("async-exclusive")]
async fn exclusive(id: usize) {
    EVENTS.lock().unwrap().push((id, true));
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    EVENTS.lock().unwrap().push((id, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_fns_naming_the_same_lock_never_overlap() {
    let tasks: Vec<_> = (0..4)
        .map(|id| {
            tokio::spawn(async move {
                for _ in 0..50 {
                    exclusive(id).await;
                }
            })
        })
        .collect();
    for t in tasks {
        within_10s(t).await.unwrap();
    }
    let events = EVENTS.lock().unwrap();
    assert_eq!(events.len(), 4 * 50 * 2);
    for pair in events.chunks(2) {
        assert!(
            pair[0].1 && !pair[1].1 && pair[0].0 == pair[1].0,
            "interleaved: {pair:?}"
        );
    }
}

// ------------------------------------------- functions returning a future

/// Compile-time check: `F` is `Send` and `Unpin`.
fn send_unpin<F: Future + Send + Unpin>(f: F) -> F {
    f
}

/// Compile-time check: `F` is `Send`.
fn send<F: Future + Send>(f: F) -> F {
    f
}

#[synchronized("async-unpin")]
fn unpin_future(p: Pause) -> impl Future<Output = u32> + Unpin + Send {
    Box::pin(async move {
        p.run().await;
        6
    })
}

#[synchronized("async-send")]
fn send_future(p: Pause) -> impl Future<Output = u32> + Send {
    async move {
        p.run().await;
        7
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_futures_keep_send_and_unpin() {
    let (p, control) = pause();
    let mut fut = send_unpin(unpin_future(p));
    // `Unpin`: it can be polled in place, without pinning it first.
    assert!(
        futures_lite::future::poll_once(&mut fut).await.is_none(),
        "completed before it was told to finish"
    );
    let task = tokio::spawn(fut);
    assert_eq!(
        assert_held_while_running("async-unpin", task, control).await,
        6
    );

    let (p, control) = pause();
    let task = tokio::spawn(send(send_future(p)));
    assert_eq!(
        assert_held_while_running("async-send", task, control).await,
        7
    );
}

#[synchronized("async-impl")]
fn impl_future(p: Pause) -> impl Future<Output = (bool, u32)> + Send {
    // Runs before the future is returned, so without the lock (documented).
    let free_while_building = is_free("async-impl");
    async move {
        p.run().await;
        (free_while_building, 5)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impl_future_holds_the_lock_while_it_runs() {
    let (p, control) = pause();
    let fut = impl_future(p);
    assert!(
        is_free("async-impl"),
        "the lock is held before the future runs"
    );
    let task = tokio::spawn(fut);
    let (free_while_building, n) = assert_held_while_running("async-impl", task, control).await;
    assert!(free_while_building);
    assert_eq!(n, 5);
}

#[synchronized("async-boxed")]
fn boxed(p: Pause, early: bool) -> Pin<Box<dyn Future<Output = &'static str> + Send>> {
    if early {
        // An early `return` is wrapped too.
        return Box::pin(async move {
            p.run().await;
            "early"
        });
    }
    Box::pin(async move {
        p.run().await;
        "late"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxed_future_holds_the_lock_on_every_return_path() {
    for (early, expected) in [(true, "early"), (false, "late")] {
        let (p, control) = pause();
        let fut = boxed(p, early);
        assert!(
            is_free("async-boxed"),
            "the lock is held before the future runs"
        );
        let task = tokio::spawn(fut);
        assert_eq!(
            assert_held_while_running("async-boxed", task, control).await,
            expected
        );
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The shape `#[async_trait]` produces.
trait Handler: Send + Sync {
    fn handle(&self, p: Pause)
    -> Pin<Box<dyn Future<Output = Result<u32, LockError>> + Send + '_>>;
    fn try_handle(&self) -> BoxFuture<'_, Result<u32, LockError>>;
}

struct Doubler {
    n: u32,
}

impl Handler for Doubler {
    #[synchronized("async-trait")]
    fn handle(
        &self,
        p: Pause,
    ) -> Pin<Box<dyn Future<Output = Result<u32, LockError>> + Send + '_>> {
        Box::pin(async move {
            p.run().await;
            Ok(self.n * 2)
        })
    }

    #[synchronized("async-trait", blocking = false)]
    fn try_handle(&self) -> BoxFuture<'_, Result<u32, LockError>> {
        Box::pin(async move { Ok(self.n) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_trait_style_methods() {
    let handler: Arc<dyn Handler> = Arc::new(Doubler { n: 21 });
    let (p, control) = pause();
    let h = Arc::clone(&handler);
    let task = tokio::spawn(async move { h.handle(p).await });
    within_10s(async {
        let mut control = control;
        (&mut control.entered).await.unwrap();
        // While `handle`'s future runs, `try_handle` finds the lock busy.
        match handler.try_handle().await {
            Err(LockError::WouldBlock { name }) => assert_eq!(name, "async-trait"),
            other => panic!("expected WouldBlock, got {other:?}"),
        }
        control.finish.send(()).unwrap();
    })
    .await;
    assert_eq!(within_10s(task).await.unwrap().unwrap(), 42);
    assert_eq!(handler.try_handle().await.unwrap(), 21);
}

// ------------------------------------------------ fallible acquisition

#[synchronized("async-fallible", timeout = "30ms")]
async fn timed() -> Result<(), LockError> {
    Ok(())
}

#[synchronized("async-fallible", blocking = false)]
async fn nonblocking() -> std::io::Result<()> {
    Ok(())
}

#[synchronized("async-fallible", blocking = false)]
fn nonblocking_future() -> impl Future<Output = Result<u8, String>> {
    async { Ok(1) }
}

#[tokio::test(flavor = "current_thread")]
async fn timeout_and_nonblocking_errors() {
    timed().await.unwrap();
    nonblocking().await.unwrap();
    assert_eq!(nonblocking_future().await, Ok(1));

    let guard = lockutils::lock("async-fallible")
        .acquire_async()
        .await
        .unwrap();
    match timed().await {
        Err(LockError::Timeout { name, timeout }) => {
            assert_eq!(name, "async-fallible");
            assert_eq!(timeout, Duration::from_millis(30));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let io = nonblocking().await.unwrap_err();
    assert_eq!(io.kind(), std::io::ErrorKind::WouldBlock);
    let message = nonblocking_future().await.unwrap_err();
    assert!(message.contains("async-fallible"), "{message}");
    drop(guard);

    timed().await.unwrap();
}

// ----------------------------------------------- the executor keeps going

static ORDER: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

fn step(s: &'static str) {
    ORDER.lock().unwrap().push(s);
}

#[synchronized("async-executor")]
async fn holder(p: Pause) {
    step("holder in");
    p.run().await;
    step("holder out");
}

#[synchronized("async-executor")]
async fn waiter() {
    step("waiter in");
}

#[test]
fn a_waiting_task_does_not_block_the_executor() {
    // One thread runs every task: if `waiter` blocked it while waiting for
    // the lock, the task that lets `holder` finish could never run. A
    // blocked executor cannot time itself out, so it runs on its own thread
    // and this one gives up after 10 s.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(one_thread_scenario());
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the executor thread was blocked (or the scenario failed)");
    assert_eq!(
        *ORDER.lock().unwrap(),
        ["holder in", "releaser", "holder out", "waiter in"]
    );
}

async fn one_thread_scenario() {
    let (p, control) = pause();
    let holder = tokio::spawn(holder(p));
    control.entered.await.unwrap();
    let waiter = tokio::spawn(waiter());
    tokio::task::yield_now().await; // `waiter` now waits for the lock
    let releaser = tokio::spawn(async move {
        step("releaser");
        control.finish.send(()).unwrap();
    });
    releaser.await.unwrap();
    holder.await.unwrap();
    waiter.await.unwrap();
}

// ------------------------------------- a call site's inline wait

#[synchronized("async-cached-wait", timeout = "40ms")]
async fn cached_timed() -> Result<(), LockError> {
    Ok(())
}

static CACHED_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[synchronized("async-cached-wait")]
async fn cached_block() {
    CACHED_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Once a call site has run, a busy lock is waited for in the lock's own
/// queue, inline in the call site's future: that wait still times out,
/// gives up cleanly when dropped, and is woken by the release.
#[tokio::test]
async fn a_call_site_that_ran_once_times_out_gives_up_and_is_woken() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::task::{Context, Waker};
    // The first calls cache the entry; later ones take the inline paths.
    cached_timed().await.unwrap();
    cached_block().await;
    assert_eq!(CACHED_RUNS.load(SeqCst), 1);

    let held = lockutils::lock("async-cached-wait").acquire().unwrap();
    match within_10s(cached_timed()).await {
        Err(LockError::Timeout { name, timeout }) => {
            assert_eq!(name, "async-cached-wait");
            assert_eq!(timeout, Duration::from_millis(40));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    {
        let mut dropped = std::pin::pin!(cached_block());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            dropped.as_mut().poll(&mut cx).is_pending(),
            "ran while held"
        );
    }
    let waiter = tokio::spawn(cached_block());
    tokio::task::yield_now().await; // let it queue
    assert_eq!(
        CACHED_RUNS.load(SeqCst),
        1,
        "a waiter ran while the lock was held"
    );
    drop(held);
    within_10s(waiter).await.unwrap();
    assert_eq!(
        CACHED_RUNS.load(SeqCst),
        2,
        "the dropped waiter ran, or the live one did not"
    );
    assert!(is_free("async-cached-wait"), "left held after the waiters");
}
