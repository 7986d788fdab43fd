//! Deadlines for async waits, without tying users to an async runtime.
//!
//! One lazily started thread (`lockutils-timer`) keeps a heap of deadlines
//! and wakes each task whose deadline passed. It is only used by async
//! acquisitions that have a timeout and have to wait.
//!
//! Invariant: the timer a [`Sleep`] registers with has its thread running
//! in this process. A child forked without `exec` has none of its
//! parent's threads, so a timer made in another fork generation
//! ([`Born`]) is left alone (its mutex may even be held forever, by a
//! thread that was not copied) and a new one is started; a `Sleep`
//! registered with the old one registers again with the new one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Waker};
use std::time::Instant;

use crate::fork::Born;

struct Timer {
    state: Mutex<Deadlines>,
    changed: Condvar,
    /// The fork generation whose thread runs this timer.
    born: Born,
}

#[derive(Default)]
struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_id: u64,
}

/// The timer of this process, or null before the first use. Every timer
/// is leaked (`Box::leak`) and never freed, so a pointer read here stays
/// valid; at most one is made per fork generation (plus losers of a
/// race to make it, freed before anyone sees them).
static TIMER: AtomicPtr<Timer> = AtomicPtr::new(std::ptr::null_mut());

/// This process's timer, started on first use (again in a forked child).
fn timer() -> &'static Timer {
    let seen = TIMER.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in `TIMER` comes from `Box::leak` in
    // `start` and is never freed.
    match unsafe { seen.as_ref() } {
        Some(t) if t.born.here() => t,
        _ => start(seen),
    }
}

/// Makes and starts a timer to replace `seen` (none yet, or one of another
/// fork generation), unless another thread did meanwhile.
#[cold]
#[inline(never)]
fn start(seen: *mut Timer) -> &'static Timer {
    let new = Box::into_raw(Box::new(Timer {
        state: Mutex::default(),
        changed: Condvar::new(),
        born: Born::now(),
    }));
    if let Err(other) = TIMER.compare_exchange(seen, new, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: `new` came from `Box::into_raw` above and was never
        // published, so this is its only owner.
        drop(unsafe { Box::from_raw(new) });
        // SAFETY: as in `timer`: a non-null `TIMER` is leaked, never freed.
        return match unsafe { other.as_ref() } {
            Some(t) if t.born.here() => t,
            _ => start(other),
        };
    }
    // SAFETY: `new` is published in `TIMER` and so never freed: a
    // `'static` reference to it is sound.
    let t: &'static Timer = unsafe { &*new };
    let spawned = std::thread::Builder::new()
        .name("lockutils-timer".into())
        .spawn(move || t.run());
    if let Err(e) = spawned {
        // Give the next caller a try at starting one (a timer without a
        // thread would never fire).
        let _ = TIMER.compare_exchange(new, seen, Ordering::AcqRel, Ordering::Acquire);
        panic!("lockutils: cannot start the timer thread for async timeouts: {e}");
    }
    t
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, Deadlines> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        let mut expired = Vec::new();
        let mut st = self.lock();
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
                st = self.lock();
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
    /// The timer it registered with, and its id there.
    registered: Option<(&'static Timer, u64)>,
}

impl Sleep {
    pub(crate) fn new(deadline: Instant) -> Sleep {
        Sleep {
            deadline,
            registered: None,
        }
    }

    /// True once the deadline has passed; otherwise arranges for `cx`'s
    /// waker to be woken at the deadline.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if Instant::now() >= self.deadline {
            return true;
        }
        let t = timer();
        match self.registered {
            // Registered with this process's timer.
            Some((at, id)) if std::ptr::eq(at, t) => {
                let mut st = t.lock();
                match st.wakers.get_mut(&id) {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    Some(w) => *w = cx.waker().clone(),
                    // Fired between our clock read and the lock: expired.
                    None => return true,
                }
            }
            // Never registered, or with the timer of the process this one
            // was forked from, whose thread is not here.
            _ => {
                let mut st = t.lock();
                let id = st.next_id;
                st.next_id += 1;
                st.heap.push(Reverse((self.deadline, id)));
                st.wakers.insert(id, cx.waker().clone());
                self.registered = Some((t, id));
                drop(st);
                t.changed.notify_one();
            }
        }
        false
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // A timer of another fork generation is left alone: its lock may
        // be held by a thread that was not copied into this process.
        let Some((t, id)) = self.registered.filter(|(t, _)| t.born.here()) else {
            return;
        };
        // The heap entry stays until it expires (a no-op then, having no
        // waker), unless dead entries pile up: then sweep them.
        let mut st = t.lock();
        st.wakers.remove(&id);
        if st.heap.len() > 64 + 2 * st.wakers.len() {
            let Deadlines { heap, wakers, .. } = &mut *st;
            heap.retain(|Reverse((_, id))| wakers.contains_key(id));
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

    /// The environment variable that makes the fork test below do the
    /// forking (in a process of its own, see there).
    #[cfg(unix)]
    const FORK_HERE: &str = "LOCKUTILS_TEST_TIMER_FORK_HERE";

    #[cfg(unix)]
    use crate::local::raw::tests::block_on;

    /// An async wait with a deadline for a lock this thread holds: false
    /// (timed out), and how long it took.
    #[cfg(unix)]
    fn timed_wait_for_a_held_lock() -> (bool, Duration) {
        use crate::local::Local;
        use crate::spec::{Kind, Mode};
        let lock = Local::new(Kind::MUTEX);
        assert!(lock.try_lock(Mode::Exclusive));
        let start = Instant::now();
        let got =
            block_on(lock.lock_async(Mode::Exclusive, Some(start + Duration::from_millis(200))));
        (got, start.elapsed())
    }

    /// Issue 20, item 3: a child forked without `exec` has no timer thread
    /// of its parent's. An async wait with a deadline there was never woken
    /// (the child hung until the alarm below killed it), nor was a sleep
    /// the parent had registered; now the child starts a timer of its own
    /// and the inherited sleep registers with it.
    #[test]
    #[cfg(unix)]
    #[cfg_attr(miri, ignore = "forks and runs processes")]
    fn an_async_timeout_fires_in_a_forked_child() {
        if std::env::var_os(FORK_HERE).is_none() {
            // Fork in a process that runs only this test: `fork` copies
            // only the calling thread, and another test's thread holding a
            // lock the child needs (a registry shard, the allocator's)
            // would hang the child for reasons of its own.
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "local::timer::tests::an_async_timeout_fires_in_a_forked_child",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(FORK_HERE, "1")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "the test did not run: {text}");
            return;
        }
        // The parent's timer thread runs and works ...
        let (got, took) = timed_wait_for_a_held_lock();
        assert!(!got && took >= Duration::from_millis(200), "{took:?}");
        let start = Instant::now();
        // A sleep registered with the parent's timer, polled in the child.
        let mut inherited = Sleep::new(start + Duration::from_millis(600));
        assert!(!inherited.poll_expired(&mut Context::from_waker(Waker::noop())));
        // SAFETY: `fork` in a process whose other threads (the test
        // harness's, the timer) hold nothing the child uses but the
        // timer's own lock, which the child must not need.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // The child: SIGALRM ends it if the wait is never woken.
            // SAFETY: `alarm` and `_exit` only make system calls.
            unsafe { libc::alarm(10) };
            let (got, took) = timed_wait_for_a_held_lock();
            let mut code = match (got, took >= Duration::from_millis(200)) {
                (false, true) => 0,
                (true, _) => 1,
                (false, false) => 2,
            };
            let expired = block_on(std::future::poll_fn(|cx| {
                match inherited.poll_expired(cx) {
                    true => std::task::Poll::Ready(Instant::now()),
                    false => std::task::Poll::Pending,
                }
            }));
            drop(inherited);
            if code == 0 && expired.duration_since(start) < Duration::from_millis(600) {
                code = 3;
            }
            // SAFETY: as above; no destructor or exit handler of the
            // parent's runs in the child.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            !(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM),
            "the async timeout never fired in the forked child (killed by its 10 s alarm)"
        );
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        match libc::WEXITSTATUS(status) {
            0 => {}
            1 => panic!("the child got a lock it held itself"),
            2 => panic!("the child's wait ended before its deadline"),
            3 => panic!("the sleep inherited from the parent ended before its deadline"),
            c => panic!("child exited with {c}"),
        }
    }
}
