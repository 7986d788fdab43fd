//! Lock-order checking: the process records "held A while taking B" for
//! every named lock, and the first acquisition that would close a
//! cycle (A→B then B→A, or longer) is reported before it waits.
//!
//! # What "held" means
//!
//! * **Synchronous code:** the locks this thread holds, in a thread-local
//!   list. A synchronous guard cannot leave its thread, so the list is exact.
//! * **Async code:** the locks held by the current *task*, recorded in a
//!   process-wide table keyed by the task's waker (its data pointer:
//!   tokio, async-std, smol and `futures` give each task, and each
//!   `FuturesUnordered` member, its own; not its vtable pointer, since
//!   Rust does not promise a vtable one address, and a waker and its clone
//!   can differ there, as Miri shows). A future moving between
//!   worker threads keeps its key, so its holds follow it. A waker with no
//!   data (std's `Waker::noop()`, `futures`' `noop_waker`, which
//!   `now_or_never` polls with) is one and the same for every task that
//!   uses it, so it names none: what polls with it is code driving futures
//!   by hand on one thread, and its holds are that thread's (kept apart
//!   from the synchronous list, like every async hold). The table owns a
//!   copy of each name: a guard may be dropped, and its registry entry
//!   freed, on another thread while its task's list is being checked. It
//!   also keeps a clone of the task's waker while the task has holds
//!   listed: a guard may outlive its task's waker (returned from a
//!   `block_on`), and a new waker at the freed address would otherwise
//!   inherit its holds.
//!   Limits, both documented for users: branches of one `join!`/`select!`
//!   share their task's waker, so a lock held in one branch counts as held
//!   while another branch takes a lock; a synchronous acquisition inside
//!   async code sees the thread's synchronous holds only; a future run
//!   inside another with its own waker (a `FuturesUnordered` member) does
//!   not see its parent task's holds; an async guard sent to another task
//!   stays listed under the task that took it; and futures polled by hand
//!   with a no-op waker on one thread count as one context. The first, the
//!   fourth and the last can cause a report without a real deadlock; the
//!   others only hide one.
//!
//! A lock counts as held from the moment it is asked for (it is pushed
//! before waiting; nothing else runs in that context while it waits) until
//! its guard drops. Try-locks (`blocking = false`) cannot deadlock, so they
//! add no edge; once taken they count as held like any other. Shared-mode
//! and semaphore holds take part like exclusive ones (a reader waiting
//! behind a queued writer deadlocks just the same). Re-taking a lock the
//! context holds adds no self-edge: the re-entry check reports that.
//!
//! # Cost
//!
//! Off: [`is_off`] is one relaxed load of a global byte. On: a thread-local
//! push and pop per acquisition; when other locks are held, a read lock of
//! the graph to see the edges are known, and a write lock plus a
//! breadth-first search only for a new edge. Async holds take a global
//! mutex per acquisition and release, copy the name (one allocation) and
//! clone the waker.

mod graph;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::panic::Location;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Poll, Waker};

use parking_lot::{Mutex, RwLock};

use crate::error::LockError;
use graph::{Cycle, Graph, Held};

/// The environment variable read for the lock-order check when
/// [`set_lock_order_check`] was not called: `panic`, `warn` or `off`.
pub const LOCK_ORDER_ENV: &str = "LOCKUTILS_LOCK_ORDER";

/// What to do when an acquisition would close a cycle in the order locks
/// are taken (a possible deadlock). Set with [`set_lock_order_check`] or
/// `LOCKUTILS_LOCK_ORDER`; the default is `Panic` in builds with
/// `debug_assertions` and `Off` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOrderCheck {
    /// Panic with the report, before waiting for the lock; unwinding
    /// releases what the panicking thread (or task) held.
    Panic,
    /// Log the report once per cycle, as a `tracing` warning with target
    /// `lockutils`, and take the lock.
    Warn,
    /// Record nothing (one relaxed atomic load per acquisition).
    Off,
}

const UNSET: u8 = 0;
const OFF: u8 = 1;
const WARN: u8 = 2;
const PANIC: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNSET);

impl LockOrderCheck {
    fn code(self) -> u8 {
        match self {
            LockOrderCheck::Panic => PANIC,
            LockOrderCheck::Warn => WARN,
            LockOrderCheck::Off => OFF,
        }
    }

    fn from_code(code: u8) -> LockOrderCheck {
        match code {
            PANIC => LockOrderCheck::Panic,
            WARN => LockOrderCheck::Warn,
            _ => LockOrderCheck::Off,
        }
    }

    /// `Panic` with `debug_assertions`, `Off` without.
    pub const DEFAULT: LockOrderCheck = if cfg!(debug_assertions) {
        LockOrderCheck::Panic
    } else {
        LockOrderCheck::Off
    };
}

/// Parses `panic`, `warn` or `off` (any case, surrounding blanks ignored).
impl FromStr for LockOrderCheck {
    type Err = LockError;

    fn from_str(s: &str) -> Result<Self, LockError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "panic" => Ok(LockOrderCheck::Panic),
            "warn" => Ok(LockOrderCheck::Warn),
            "off" => Ok(LockOrderCheck::Off),
            _ => Err(LockError::InvalidEnv {
                name: String::new(),
                var: LOCK_ORDER_ENV,
                value: s.to_owned(),
                expected: "panic, warn or off",
            }),
        }
    }
}

impl fmt::Display for LockOrderCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockOrderCheck::Panic => "panic",
            LockOrderCheck::Warn => "warn",
            LockOrderCheck::Off => "off",
        })
    }
}

/// Sets the lock-order check for the whole process, overriding
/// `LOCKUTILS_LOCK_ORDER`. Locks held at the time keep the bookkeeping
/// they started with.
pub fn set_lock_order_check(check: LockOrderCheck) {
    STATE.store(check.code(), Ordering::Relaxed);
}

/// The lock-order check in force: the last [`set_lock_order_check`], else
/// `LOCKUTILS_LOCK_ORDER` (unset or empty: [`LockOrderCheck::DEFAULT`]).
///
/// # Errors
/// [`LockError::InvalidEnv`] if the variable is set to anything else; every
/// acquisition fails the same way until it is fixed or the check is set
/// from code (a typo must not silently switch the check off).
pub fn lock_order_check() -> Result<LockOrderCheck, LockError> {
    resolve().map(LockOrderCheck::from_code)
}

/// True when the check is off: one relaxed load, for the fast paths.
#[inline(always)]
pub(crate) fn is_off() -> bool {
    STATE.load(Ordering::Relaxed) == OFF
}

#[cold]
fn resolve() -> Result<u8, LockError> {
    let state = STATE.load(Ordering::Relaxed);
    if state != UNSET {
        return Ok(state);
    }
    let check = match std::env::var(LOCK_ORDER_ENV) {
        Ok(v) if !v.trim().is_empty() => v.parse()?,
        Ok(_) | Err(std::env::VarError::NotPresent) => LockOrderCheck::DEFAULT,
        Err(std::env::VarError::NotUnicode(v)) => {
            return Err(LockError::InvalidEnv {
                name: String::new(),
                var: LOCK_ORDER_ENV,
                value: v.to_string_lossy().into_owned(),
                expected: "panic, warn or off",
            });
        }
    };
    // A concurrent `set_lock_order_check` wins over the environment.
    let _ = STATE.compare_exchange(UNSET, check.code(), Ordering::Relaxed, Ordering::Relaxed);
    Ok(STATE.load(Ordering::Relaxed))
}

fn resolve_for(name: &str) -> Result<u8, LockError> {
    resolve().map_err(|e| match e {
        LockError::InvalidEnv {
            var,
            value,
            expected,
            ..
        } => LockError::InvalidEnv {
            name: name.to_owned(),
            var,
            value,
            expected,
        },
        other => other,
    })
}

/// Who takes a lock, for the report: a `#[synchronized]` function's path,
/// or the caller of the run-time API.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Site {
    Function(&'static str),
    Caller(&'static Location<'static>),
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::Function(p) => f.write_str(p),
            Site::Caller(l) => write!(f, "{}:{}", l.file(), l.line()),
        }
    }
}

static GRAPH: LazyLock<RwLock<Graph>> = LazyLock::new(|| RwLock::new(Graph::default()));

/// One lock this thread holds synchronously. `name` points into the
/// lock's registry entry (or any string that outlives the hold; see
/// [`enter`]).
///
/// Invariant: a `Listed` exists only in its thread's hold list, and the
/// hold removes it, on that thread, before its name may die; only that
/// thread reads the list, so reading `name` through it is sound. (Not
/// `Send`, through the raw pointer: it cannot reach another thread.)
#[derive(Clone, Copy)]
struct Listed {
    name: *const str,
    site: Site,
    id: u64,
}

impl Held for Listed {
    fn name(&self) -> &str {
        // SAFETY: see the invariant on `Listed`.
        unsafe { &*self.name }
    }
    fn site(&self) -> Site {
        self.site
    }
}

/// One lock an async task holds. Owns its name: the list is shared by
/// every thread the task runs on, and its guard may drop (freeing the
/// registry entry) on any thread, even while the task's list is checked.
#[derive(Clone)]
struct TaskListed {
    name: Arc<str>,
    site: Site,
    id: u64,
}

impl Held for TaskListed {
    fn name(&self) -> &str {
        &self.name
    }
    fn site(&self) -> Site {
        self.site
    }
}

/// What [`check`] found, to act on once no hold list is borrowed.
struct Report {
    cycle: Cycle,
    /// `Panic` mode; otherwise warn, if `first`.
    panic: bool,
    first: bool,
}

// Both are called with no hold list borrowed: unwinding releases other
// holds, which unlist themselves, and a subscriber might take a lock.
impl Report {
    /// Panics with the report in `Panic` mode.
    fn panic_if_asked(&self) {
        if self.panic {
            report_panic(&self.cycle);
        }
    }

    /// Warns, the first time this cycle is seen.
    fn warn(&self) {
        if self.first {
            let cycle = &self.cycle;
            tracing::warn!(target: "lockutils", locks = ?cycle.locks(), "{cycle}");
        }
    }
}

/// Records the edges from `held` to `name`, and returns the cycle they
/// would close, if any. In `Panic` mode nothing is recorded then (the
/// acquisition will not happen); in `Warn` mode the edges are recorded
/// anyway, so later acquisitions in either order find known edges and
/// stay quiet: one warning per cycle.
fn check(held: &[impl Held], name: &str, site: Site, mode: u8) -> Option<Report> {
    if held.iter().all(|h| h.name() == name) {
        return None;
    }
    {
        let graph = GRAPH.read();
        if graph.knows_all(held, name) {
            graph.touch(held.iter().map(|h| h.name()).chain([name]));
            return None;
        }
    }
    let mut graph = GRAPH.write();
    let Some(cycle) = graph.find_cycle(held, name, site) else {
        graph.add(held, name, site);
        return None;
    };
    let panic = mode == PANIC;
    let first = !panic && graph.first_report(&cycle);
    if !panic {
        graph.add(held, name, site);
    }
    Some(Report {
        cycle,
        panic,
        first,
    })
}

#[cold]
#[inline(never)]
fn report_panic(cycle: &Cycle) -> ! {
    panic!("{cycle}")
}

thread_local! {
    /// This thread's synchronous holds, oldest first.
    static HELD: RefCell<Vec<Listed>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
}

fn next_id() -> u64 {
    NEXT_ID.with(|n| {
        let id = n.get() + 1;
        n.set(id);
        id
    })
}

/// A lock listed as held by this thread; dropping it unlists the lock.
/// Not `Send`: the thread that listed it unlists it.
#[must_use]
pub(crate) struct OrderToken {
    /// 0: nothing was listed (check off, or thread-locals gone).
    id: u64,
    _not_send: PhantomData<*const ()>,
}

impl OrderToken {
    /// A hold that lists nothing, for acquisitions made with the check off.
    pub(crate) const NONE: OrderToken = OrderToken {
        id: 0,
        _not_send: PhantomData,
    };
}

/// Before a synchronous acquisition of `name` by `site`: reports a cycle
/// (`Panic`: panics here, before anything waits), records the new edges
/// unless `waits` is false (a try-lock), and lists `name` as held by this
/// thread until the returned hold drops.
///
/// # Errors
/// [`LockError::InvalidEnv`] for a bad `LOCKUTILS_LOCK_ORDER`.
///
/// # Safety
/// `name` must stay valid and unchanged until the returned hold is dropped.
pub(crate) unsafe fn enter(name: &str, site: Site, waits: bool) -> Result<OrderToken, LockError> {
    let mode = resolve_for(name)?;
    if mode == OFF {
        return Ok(OrderToken::NONE);
    }
    let id = next_id();
    let me = Listed { name, site, id };
    let found = HELD.try_with(|h| {
        let report = if waits {
            check(h.borrow().as_slice(), name, site, mode)
        } else {
            None
        };
        if report.as_ref().is_none_or(|r| !r.panic) {
            h.borrow_mut().push(me);
        }
        report
    });
    let Ok(report) = found else {
        // Thread-locals are gone (a guard taken in a TLS destructor).
        return Ok(OrderToken::NONE);
    };
    let hold = OrderToken {
        id,
        _not_send: PhantomData,
    };
    if let Some(report) = report {
        // `Panic` did not list the lock; dropping `hold` is then a no-op.
        report.panic_if_asked();
        report.warn();
    }
    Ok(hold)
}

impl Drop for OrderToken {
    #[inline]
    fn drop(&mut self) {
        if self.id != 0 {
            unlist(self.id);
        }
    }
}

#[cold]
#[inline(never)]
fn unlist(id: u64) {
    let _ = HELD.try_with(|h| {
        let mut h = h.borrow_mut();
        if let Some(i) = h.iter().rposition(|l| l.id == id) {
            h.remove(i);
        }
    });
}

/// What async holds are listed under: a waker's data pointer, or a
/// thread's serial number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TaskKey {
    Waker(usize),
    Thread(usize),
}

/// An async task, as its waker identifies it; or, for a waker that names
/// no task, the thread polling it.
///
/// A waker's data pointer names its task only while the waker lives: once the
/// last clone is dropped, another task's waker may be allocated at the
/// same address (a `block_on` that returns the guard and frees its waker,
/// then another `block_on`). So the table keeps a clone of the waker while
/// the task has holds listed, and no other task can get its key meanwhile.
#[derive(Clone, Debug)]
pub(crate) struct Task {
    key: TaskKey,
    /// A clone of the task's waker (`None` for a thread).
    waker: Option<Waker>,
}

impl PartialEq for Task {
    fn eq(&self, other: &Task) -> bool {
        self.key == other.key
    }
}

impl Task {
    /// The task a waker wakes, or the polling thread for a waker with no
    /// data: such a waker (std's `Waker::noop()`, `futures`' `noop_waker`)
    /// is shared by every task using it, and keying them all by it would
    /// mix the holds of unrelated threads (false cycles, and reading
    /// another thread's holds).
    pub(crate) fn of(waker: &Waker) -> Task {
        if waker.data().is_null() {
            return Task {
                key: TaskKey::Thread(thread_serial()),
                waker: None,
            };
        }
        Task {
            key: TaskKey::Waker(waker.data() as usize),
            waker: Some(waker.clone()),
        }
    }

    /// The task polling the caller.
    pub(crate) async fn current() -> Task {
        poll_fn(|cx| Poll::Ready(Task::of(cx.waker()))).await
    }
}

/// This thread's serial number, from 1, never reused (a `ThreadId` has no
/// stable integer form). Where thread-locals are gone, a fresh one per call:
/// such a context then sees no other hold (a missed report, never a false one).
fn thread_serial() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    thread_local! {
        static SERIAL: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SERIAL
        .try_with(|s| *s)
        .unwrap_or_else(|_| NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One task's listed holds, and its waker, kept so that its key stays its
/// own while they are listed (see [`Task`]).
struct TaskHolds {
    held: Vec<TaskListed>,
    _waker: Option<Waker>,
}

/// Async holds, by task. Entries are removed when a task's last hold
/// drops, so the table holds only tasks that hold a lock right now. Wakers
/// and names leave it only to be dropped with the table unlocked: dropping
/// a waker runs its executor's code, which may drop a future that holds a
/// guard, whose hold takes this lock.
static TASKS: LazyLock<Mutex<HashMap<TaskKey, TaskHolds, foldhash::fast::RandomState>>> =
    LazyLock::new(|| Mutex::new(HashMap::default()));

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);

/// A lock listed as held by an async task; dropping it unlists the lock.
/// `Send`: the future holding it may move between threads.
#[must_use]
pub(crate) struct AsyncOrderToken {
    task: TaskKey,
    /// 0: nothing was listed.
    id: u64,
}

impl AsyncOrderToken {
    /// A hold that lists nothing, for acquisitions made with the check off.
    pub(crate) const NONE: AsyncOrderToken = AsyncOrderToken {
        task: TaskKey::Waker(0),
        id: 0,
    };
}

/// [`enter`] for an async acquisition by `task`.
///
/// `name` is copied into the task's list: the hold does not borrow it.
///
/// # Errors
/// [`LockError::InvalidEnv`] for a bad `LOCKUTILS_LOCK_ORDER`.
pub(crate) fn enter_async(
    name: &str,
    site: Site,
    waits: bool,
    task: Task,
) -> Result<AsyncOrderToken, LockError> {
    let mode = resolve_for(name)?;
    if mode == OFF {
        return Ok(AsyncOrderToken::NONE);
    }
    // A copy (of counted names), so the table is not locked while the
    // graph is searched, and no name dies while the copy is read.
    let listed = match TASKS.lock().get(&task.key) {
        Some(t) if waits => t.held.clone(),
        _ => Vec::new(),
    };
    let report = check(&listed, name, site, mode);
    drop(listed);
    if let Some(r) = &report {
        r.panic_if_asked();
    }
    let hold = list_async(task, name, site);
    if let Some(r) = report {
        r.warn();
    }
    Ok(hold)
}

fn list_async(task: Task, name: &str, site: Site) -> AsyncOrderToken {
    // A task moves between threads: its ids come from one global counter.
    let id = NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed);
    let me = TaskListed {
        name: Arc::from(name),
        site,
        id,
    };
    let Task { key, waker } = task;
    let mut tasks = TASKS.lock();
    // The first hold keeps the waker; later ones drop theirs, unlocked.
    let spare = match tasks.entry(key) {
        Entry::Occupied(mut t) => {
            t.get_mut().held.push(me);
            waker
        }
        Entry::Vacant(v) => {
            v.insert(TaskHolds {
                held: vec![me],
                _waker: waker,
            });
            None
        }
    };
    drop(tasks);
    drop(spare);
    AsyncOrderToken { task: key, id }
}

impl Drop for AsyncOrderToken {
    fn drop(&mut self) {
        if self.id == 0 {
            return;
        }
        let mut tasks = TASKS.lock();
        let Some(t) = tasks.get_mut(&self.task) else {
            return;
        };
        let gone = t
            .held
            .iter()
            .rposition(|l| l.id == self.id)
            .map(|i| t.held.remove(i));
        let emptied = if t.held.is_empty() {
            tasks.remove(&self.task)
        } else {
            None
        };
        drop(tasks);
        // The name and the waker, if these were the last, go unlocked.
        drop((gone, emptied));
    }
}

#[cfg(test)]
mod tests;
