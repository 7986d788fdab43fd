//! Model checks (`RUSTFLAGS="--cfg lockutils_loom"`): every interleaving, up to the
//! preemption bound, of a few threads on the in-process primitives. `loom`
//! reports a lost wake-up as a deadlock (every thread parked) and a data race
//! on `loom::cell::UnsafeCell` as a failure. No deadlines here: the timer
//! thread is not modelled.

use std::task::{Context, Wake, Waker};

use super::sync::{Arc, AtomicBool, Ordering};

mod loom_fifo;
mod loom_handoff;
mod loom_raw;

/// Runs `f` under `loom`, by default with at most three preemptions per
/// execution (`LOOM_MAX_PREEMPTIONS` overrides), which keeps every model to
/// seconds on a small machine.
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A task's waker as `loom` sees it: wakes by setting `woken` and unparking
/// the polling thread.
pub(crate) struct Flag {
    woken: AtomicBool,
    thread: loom::thread::Thread,
}

impl Flag {
    pub(crate) fn new() -> std::sync::Arc<Flag> {
        std::sync::Arc::new(Flag {
            woken: AtomicBool::new(false),
            thread: loom::thread::current(),
        })
    }

    /// Parks until the waker was used.
    pub(crate) fn wait(&self) {
        while !self.woken.load(Ordering::Acquire) {
            loom::thread::park();
        }
    }
}

impl Wake for Flag {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Polls `fut` once with `flag`'s waker.
pub(crate) fn poll_once<F: std::future::Future + Unpin>(
    fut: &mut F,
    flag: &std::sync::Arc<Flag>,
) -> std::task::Poll<F::Output> {
    let waker = Waker::from(flag.clone());
    std::pin::Pin::new(fut).poll(&mut Context::from_waker(&waker))
}

/// `Arc` of the model's kind, for sharing a primitive with spawned threads.
pub(crate) fn shared<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
