//! Deadlines for async waits, without tying users to an async runtime.
//!
//! One lazily started thread (`lockutils-timer`) keeps a heap of deadlines
//! and wakes each task whose deadline passed. It is only used by async
//! acquisitions that have a timeout and have to wait.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::{Context, Waker};
use std::time::Instant;

struct Timer {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_id: u64,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            state: Mutex::default(),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("lockutils-timer".into())
            .spawn(move || t.run())
            .expect("lockutils: cannot start the timer thread for async timeouts");
        t
    })
}

impl Timer {
    fn run(&self) {
        let mut expired = Vec::new();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            while let Some(&Reverse((at, id))) = st.heap.peek() {
                if at > now {
                    break;
                }
                st.heap.pop();
                expired.extend(st.wakers.remove(&id));
            }
            if !expired.is_empty() {
                // Wake with the state unlocked: a waker may poll its task
                // right here and that task may use the timer (a waker that
                // re-enters would otherwise deadlock this thread).
                drop(st);
                for w in expired.drain(..) {
                    w.wake();
                }
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                // Time passed while waking: look at the heap again.
                continue;
            }
            st = match st.heap.peek() {
                Some(&Reverse((at, _))) => {
                    let wait = at.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// A deadline a future can poll. Registers with the timer thread only when
/// polled before the deadline; unregisters on drop.
pub(crate) struct Sleep {
    deadline: Instant,
    id: Option<u64>,
}

impl Sleep {
    pub(crate) fn new(deadline: Instant) -> Sleep {
        Sleep { deadline, id: None }
    }

    /// True once the deadline has passed; otherwise arranges for `cx`'s
    /// waker to be woken at the deadline.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if Instant::now() >= self.deadline {
            return true;
        }
        let t = timer();
        let mut st = t.state.lock().unwrap_or_else(|e| e.into_inner());
        match self.id {
            Some(id) => match st.wakers.get_mut(&id) {
                Some(w) if w.will_wake(cx.waker()) => {}
                Some(w) => *w = cx.waker().clone(),
                // Fired between our clock read and the lock: expired.
                None => return true,
            },
            None => {
                let id = st.next_id;
                st.next_id += 1;
                st.heap.push(Reverse((self.deadline, id)));
                st.wakers.insert(id, cx.waker().clone());
                self.id = Some(id);
                drop(st);
                t.changed.notify_one();
            }
        }
        false
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // The heap entry stays until it expires (a no-op then, having no
            // waker), unless dead entries pile up: then sweep them.
            let mut st = timer().state.lock().unwrap_or_else(|e| e.into_inner());
            st.wakers.remove(&id);
            if st.heap.len() > 64 + 2 * st.wakers.len() {
                let State { heap, wakers, .. } = &mut *st;
                heap.retain(|Reverse((_, id))| wakers.contains_key(id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc::{Sender, channel};
    use std::task::Wake;
    use std::time::Duration;

    /// A waker that, when woken, uses the timer itself (as a task polled
    /// inline by its waker would), then reports.
    struct ReEnters(std::sync::Mutex<Sender<bool>>);

    impl Wake for ReEnters {
        fn wake(self: Arc<Self>) {
            let mut later = Sleep::new(Instant::now() + Duration::from_secs(3600));
            let expired = later.poll_expired(&mut Context::from_waker(Waker::noop()));
            let _ = self.0.lock().unwrap().send(expired);
        }
    }

    #[test]
    fn a_waker_that_registers_a_new_sleep_does_not_deadlock_the_timer() {
        let (tx, rx) = channel();
        let waker = Waker::from(Arc::new(ReEnters(std::sync::Mutex::new(tx))));
        // Deadlines far enough away that the first poll comes before them
        // even on a loaded machine or under valgrind (5 ms did not).
        let mut sleep = Sleep::new(Instant::now() + Duration::from_millis(200));
        assert!(!sleep.poll_expired(&mut Context::from_waker(&waker)));
        // Dropping it takes the timer's lock: if the timer thread deadlocked
        // holding it, this test would hang instead of failing.
        std::mem::forget(sleep);
        let expired = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the timer thread deadlocked waking a waker that uses the timer");
        assert!(!expired, "a sleep an hour away counted as expired");
        // The timer still works afterwards.
        let mut again = Sleep::new(Instant::now() + Duration::from_millis(200));
        let (tx, rx) = channel();
        let waker = Waker::from(Arc::new(ReEnters(std::sync::Mutex::new(tx))));
        assert!(!again.poll_expired(&mut Context::from_waker(&waker)));
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_ok());
    }
}
