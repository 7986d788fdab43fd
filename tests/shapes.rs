//! `#[synchronized]` on every synchronous function shape the attribute's
//! docs list (free functions, methods, generics, `unsafe fn`, trait-impl
//! methods, `impl Trait` returns), and the in-process semantics:
//! exclusion, release on every exit path, `blocking = false`, `timeout`,
//! re-entry.
//!
//! Every test uses its own lock names, so the tests can run in parallel.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe, Location};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lockutils::{LockError, LockName, locks_held, synchronized};

// ---------------------------------------------------------------- helpers

thread_local! {
    /// What `observe()` saw, one entry per call, on this thread.
    static SEEN: RefCell<Vec<Vec<String>>> = const { RefCell::new(Vec::new()) };
}

/// Records the locks this thread holds right now.
fn observe() {
    SEEN.with(|s| s.borrow_mut().push(locks_held()));
}

/// Takes what `observe()` recorded on this thread.
fn seen() -> Vec<Vec<String>> {
    SEEN.with(|s| s.take())
}

/// Whether another thread could take `name` (without waiting) right now.
fn is_free(name: &str) -> bool {
    let name = name.to_owned();
    thread::spawn(move || lockutils::lock(&name).blocking(false).acquire().is_ok())
        .join()
        .unwrap()
}

/// Holds `name` on another thread until the returned sender is dropped or
/// sent to; returns once the lock is held.
fn hold_elsewhere(name: &'static str) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let _guard = lockutils::lock(name).acquire().unwrap();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    held_rx.recv().unwrap();
    (release_tx, holder)
}

fn held(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[derive(Debug)]
enum AppError {
    Lock(LockError),
    Parse(std::num::ParseIntError),
}

impl From<LockError> for AppError {
    fn from(e: LockError) -> Self {
        AppError::Lock(e)
    }
}

impl From<std::num::ParseIntError> for AppError {
    fn from(e: std::num::ParseIntError) -> Self {
        AppError::Parse(e)
    }
}

// ---------------------------------------------------------------- shapes

#[synchronized("shapes-free")]
fn free(x: u32) -> (u32, Vec<String>) {
    (x + 1, locks_held())
}

#[test]
fn free_function() {
    assert_eq!(free(1), (2, held(&["shapes-free"])));
    assert!(locks_held().is_empty());
    assert!(is_free("shapes-free"));
}

struct Counter {
    n: u32,
}

impl Counter {
    #[synchronized("shapes-new")]
    fn new() -> Self {
        observe();
        Counter { n: 0 }
    }

    #[synchronized("shapes-ref")]
    fn get(&self) -> (u32, Vec<String>) {
        (self.n, locks_held())
    }

    #[synchronized("shapes-mut")]
    fn bump(&mut self) -> Vec<String> {
        self.n += 1;
        locks_held()
    }

    #[synchronized("shapes-owned")]
    fn into_inner(self) -> (u32, Vec<String>) {
        (self.n, locks_held())
    }
}

#[test]
fn methods_taking_self_in_every_way() {
    let mut c = Counter::new();
    assert_eq!(seen(), [held(&["shapes-new"])]);
    assert_eq!(c.bump(), held(&["shapes-mut"]));
    assert_eq!(c.get(), (1, held(&["shapes-ref"])));
    assert_eq!(c.into_inner(), (1, held(&["shapes-owned"])));
    assert!(locks_held().is_empty());
}

#[synchronized("shapes-generic")]
fn largest<'a, T>(items: &'a [T], _also: impl AsRef<str>) -> Option<(&'a T, Vec<String>)>
where
    T: Ord + std::fmt::Debug,
{
    items.iter().max().map(|m| (m, locks_held()))
}

struct Wrapper<'a, T>(&'a [T]);

impl<'a, T: Clone> Wrapper<'a, T> {
    #[synchronized("shapes-generic-impl")]
    fn first_two<U>(&self, extra: U) -> (Vec<T>, U, Vec<String>)
    where
        U: Copy,
    {
        (
            self.0.iter().take(2).cloned().collect(),
            extra,
            locks_held(),
        )
    }
}

#[test]
fn generics_lifetimes_and_where_clauses() {
    let items = [3, 9, 4];
    assert_eq!(largest(&items, "x"), Some((&9, held(&["shapes-generic"]))));
    assert_eq!(largest::<u8>(&[], String::new()), None);
    let words = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let (two, extra, h) = Wrapper(&words).first_two('!');
    assert_eq!((two, extra), (vec!["a".to_owned(), "b".to_owned()], '!'));
    assert_eq!(h, held(&["shapes-generic-impl"]));
}

#[synchronized("shapes-impl-trait")]
fn evens(limit: u32) -> impl Iterator<Item = u32> + Clone {
    observe();
    (0..limit).filter(|n| n % 2 == 0)
}

#[test]
fn impl_trait_return() {
    let it = evens(7);
    assert_eq!(seen(), [held(&["shapes-impl-trait"])]);
    assert_eq!(it.collect::<Vec<_>>(), [0, 2, 4, 6]);
}

/// # Safety
/// `p` must be valid for reads.
#[synchronized("shapes-unsafe")]
unsafe fn read(p: *const u32) -> (u32, Vec<String>) {
    // SAFETY: the caller promises `p` is valid.
    (unsafe { *p }, locks_held())
}

#[test]
fn unsafe_fn() {
    let x = 41;
    // SAFETY: `&x` is valid.
    assert_eq!(unsafe { read(&x) }, (41, held(&["shapes-unsafe"])));
}

trait Store {
    fn put(&mut self, v: u32) -> Vec<String>;

    #[synchronized("shapes-trait-default")]
    fn describe(&self) -> Vec<String> {
        locks_held()
    }
}

impl Store for Vec<u32> {
    #[synchronized("shapes-trait-impl")]
    fn put(&mut self, v: u32) -> Vec<String> {
        self.push(v);
        locks_held()
    }
}

#[test]
fn trait_impl_and_default_methods() {
    let mut v = Vec::new();
    assert_eq!(v.put(5), held(&["shapes-trait-impl"]));
    assert_eq!(v, [5]);
    assert_eq!(v.describe(), held(&["shapes-trait-default"]));
}

#[synchronized("shapes-try")]
fn parse(s: &str) -> Result<u32, AppError> {
    observe();
    if s.is_empty() {
        return Ok(0);
    }
    let n: u32 = s.trim().parse()?;
    Ok(n * 2)
}

#[test]
fn question_mark_and_early_return_release_the_lock() {
    assert_eq!(parse("").unwrap(), 0);
    assert!(is_free("shapes-try"));
    assert_eq!(parse(" 21").unwrap(), 42);
    assert!(is_free("shapes-try"));
    match parse("x") {
        Err(AppError::Parse(e)) => assert_eq!(*e.kind(), std::num::IntErrorKind::InvalidDigit),
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert!(is_free("shapes-try"));
    assert_eq!(seen(), vec![held(&["shapes-try"]); 3]);
    assert!(locks_held().is_empty());
}

#[synchronized("shapes-panic")]
fn explode() {
    observe();
    panic!("boom");
}

#[test]
fn panic_in_body_releases_the_lock() {
    let result = panic::catch_unwind(explode);
    assert!(result.is_err());
    assert_eq!(seen(), [held(&["shapes-panic"])]);
    assert!(locks_held().is_empty());
    assert!(is_free("shapes-panic"));
    // And the same thread can take it again (no poisoning, no stale entry).
    let again = panic::catch_unwind(explode);
    assert!(again.is_err());
    assert_eq!(seen(), [held(&["shapes-panic"])]);
}

// ------------------------------------------------------------ exclusion

static EVENTS: Mutex<Vec<(usize, bool)>> = Mutex::new(Vec::new());

fn record(id: usize, entering: bool) {
    EVENTS.lock().unwrap().push((id, entering));
}

#[synchronized("shapes-exclusive")]
fn exclusive_a(id: usize) {
    record(id, true);
    for _ in 0..20 {
        thread::yield_now();
    }
    record(id, false);
}

#[synchronized("shapes-exclusive")]
fn exclusive_b(id: usize) {
    record(id, true);
    for _ in 0..20 {
        thread::yield_now();
    }
    record(id, false);
}

#[test]
fn functions_naming_the_same_lock_never_overlap() {
    const ROUNDS: usize = 300;
    let start = Arc::new(Barrier::new(2));
    let threads: Vec<_> = [0usize, 1]
        .into_iter()
        .map(|id| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                for _ in 0..ROUNDS {
                    if id == 0 {
                        exclusive_a(id);
                    } else {
                        exclusive_b(id);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let events = EVENTS.lock().unwrap();
    assert_eq!(events.len(), 2 * 2 * ROUNDS);
    for pair in events.chunks(2) {
        let [(a, enter), (b, exit)] = pair else {
            unreachable!()
        };
        assert!(
            *enter && !*exit && a == b,
            "interleaved: {pair:?} in {events:?}"
        );
    }
}

/// Says "I'm in" on `tx`, then waits up to 10 s to hear the same from the
/// other function: true only if both bodies run at the same time.
fn meet(tx: mpsc::Sender<()>, rx: mpsc::Receiver<()>) -> bool {
    tx.send(()).unwrap();
    rx.recv_timeout(Duration::from_secs(10)).is_ok()
}

#[synchronized("shapes-overlap-a")]
fn overlap_a(tx: mpsc::Sender<()>, rx: mpsc::Receiver<()>) -> bool {
    meet(tx, rx)
}

#[synchronized("shapes-overlap-b")]
fn overlap_b(tx: mpsc::Sender<()>, rx: mpsc::Receiver<()>) -> bool {
    meet(tx, rx)
}

#[test]
fn different_names_run_at_the_same_time() {
    let (a_tx, a_rx) = mpsc::channel();
    let (b_tx, b_rx) = mpsc::channel();
    let a = thread::spawn(move || overlap_a(a_tx, b_rx));
    let b = thread::spawn(move || overlap_b(b_tx, a_rx));
    assert!(a.join().unwrap(), "a never saw b inside its body");
    assert!(b.join().unwrap(), "b never saw a inside its body");
}

// ------------------------------------------------ fallible acquisition

#[synchronized("shapes-nonblocking", blocking = false)]
fn try_run() -> Result<Vec<String>, LockError> {
    Ok(locks_held())
}

#[synchronized("shapes-nonblocking", blocking = false)]
fn try_run_io() -> std::io::Result<()> {
    observe();
    Ok(())
}

#[synchronized("shapes-nonblocking", blocking = false)]
fn try_run_app() -> Result<(), AppError> {
    observe();
    Ok(())
}

#[test]
fn nonblocking_returns_would_block_through_from() {
    assert_eq!(try_run().unwrap(), held(&["shapes-nonblocking"]));

    let (release, holder) = hold_elsewhere("shapes-nonblocking");
    match try_run() {
        Err(LockError::WouldBlock { name }) => assert_eq!(name, "shapes-nonblocking"),
        other => panic!("expected WouldBlock, got {other:?}"),
    }
    let io = try_run_io().unwrap_err();
    assert_eq!(io.kind(), std::io::ErrorKind::WouldBlock);
    assert!(matches!(
        try_run_app(),
        Err(AppError::Lock(LockError::WouldBlock { .. }))
    ));
    assert!(seen().is_empty(), "a body ran without its lock");
    drop(release);
    holder.join().unwrap();

    assert_eq!(try_run().unwrap(), held(&["shapes-nonblocking"]));
}

#[synchronized("shapes-timeout", timeout = "50ms")]
fn timed() -> Result<Vec<String>, AppError> {
    Ok(locks_held())
}

#[test]
fn timeout_returns_timeout_through_from() {
    assert_eq!(timed().unwrap(), held(&["shapes-timeout"]));

    let (release, holder) = hold_elsewhere("shapes-timeout");
    let started = Instant::now();
    match timed() {
        Err(AppError::Lock(LockError::Timeout { name, timeout })) => {
            assert_eq!(name, "shapes-timeout");
            assert_eq!(timeout, Duration::from_millis(50));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "gave up early"
    );

    // A waiter within its timeout gets the lock when it is released.
    let (entered_tx, entered_rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        entered_tx.send(()).unwrap();
        #[synchronized("shapes-timeout", timeout = "1m")]
        fn patient() -> Result<Vec<String>, LockError> {
            Ok(locks_held())
        }
        patient()
    });
    entered_rx.recv().unwrap();
    drop(release);
    holder.join().unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), held(&["shapes-timeout"]));
}

// ------------------------------------------------------ names and paths

const SHARED: LockName = LockName::new("shapes-const");
const PREFIX: &str = "proj";

mod names {
    pub const OTHER: lockutils::LockName = lockutils::LockName::new("shapes-const-mod");
}

#[synchronized(SHARED)]
fn by_const() -> Vec<String> {
    locks_held()
}

#[synchronized(names::OTHER, prefix = PREFIX)]
fn by_const_with_prefix() -> Vec<String> {
    locks_held()
}

#[synchronized("shapes-literal", prefix = "proj-")]
fn by_literal_with_prefix() -> Vec<String> {
    locks_held()
}

#[test]
fn const_names_and_prefixes() {
    assert_eq!(by_const(), held(&["shapes-const"]));
    // oslo's rule: a `-` joins the prefix unless it already ends in one.
    assert_eq!(by_const_with_prefix(), held(&["proj-shapes-const-mod"]));
    assert_eq!(by_literal_with_prefix(), held(&["proj-shapes-literal"]));
}

// Arguments that name `Self` or the function's generics: a call-site
// `static` cannot name them (E0401), so the spec is built in a `const`
// block and looked up on every call.

struct Account;

impl Account {
    const NAME: LockName = LockName::new("shapes-self-name");
    const PREFIX: &str = "acct";

    #[synchronized(Self::NAME)]
    fn update(&self) -> Vec<String> {
        locks_held()
    }

    #[synchronized("shapes-self-prefix", prefix = Self::PREFIX)]
    fn audit() -> Vec<String> {
        locks_held()
    }
}

trait Service {
    const PREFIX: &'static str;
    const NAME: LockName;
}

struct Nova;
struct Cinder;

impl Service for Nova {
    const PREFIX: &'static str = "nova";
    const NAME: LockName = LockName::new("shapes-generic-nova");
}

impl Service for Cinder {
    const PREFIX: &'static str = "cinder-";
    const NAME: LockName = LockName::new("shapes-generic-cinder");
}

#[synchronized("shapes-generic", prefix = T::PREFIX)]
fn generic_prefix<T: Service>() -> Vec<String> {
    locks_held()
}

#[synchronized(T::NAME, timeout = "10s")]
fn generic_name<T: Service>(x: u8) -> Result<(u8, Vec<String>), LockError> {
    Ok((x, locks_held()))
}

#[synchronized("shapes-generic-try", prefix = T::PREFIX, blocking = false)]
fn generic_try<T: Service>() -> Result<Vec<String>, LockError> {
    Ok(locks_held())
}

/// A generic impl: `Self` is generic too.
struct Pool<T>(std::marker::PhantomData<T>);

impl<T: Service> Pool<T> {
    const NAME: LockName = T::NAME;

    #[synchronized(Self::NAME)]
    fn resize(&self) -> Vec<String> {
        locks_held()
    }
}

#[test]
fn self_and_generic_arguments() {
    assert_eq!(Account.update(), held(&["shapes-self-name"]));
    assert_eq!(Account::audit(), held(&["acct-shapes-self-prefix"]));
    // One expansion, a lock per instantiation.
    assert_eq!(generic_prefix::<Nova>(), held(&["nova-shapes-generic"]));
    assert_eq!(generic_prefix::<Cinder>(), held(&["cinder-shapes-generic"]));
    assert_eq!(
        generic_name::<Nova>(7).unwrap(),
        (7, held(&["shapes-generic-nova"]))
    );
    assert_eq!(
        Pool::<Cinder>(std::marker::PhantomData).resize(),
        held(&["shapes-generic-cinder"])
    );
    assert!(is_free("nova-shapes-generic"));
    assert!(is_free("shapes-self-name"));
    // Still real locks, one per instantiation: busy while another thread
    // holds that one, free otherwise.
    let (release, holder) = hold_elsewhere("nova-shapes-generic-try");
    assert!(matches!(
        generic_try::<Nova>(),
        Err(LockError::WouldBlock { name }) if name == "nova-shapes-generic-try"
    ));
    assert_eq!(
        generic_try::<Cinder>().unwrap(),
        held(&["cinder-shapes-generic-try"])
    );
    drop(release);
    holder.join().unwrap();
    assert_eq!(
        generic_try::<Nova>().unwrap(),
        held(&["nova-shapes-generic-try"])
    );
}

mod reexport {
    pub use ::lockutils;
}

#[synchronized("shapes-crate", crate = ::lockutils)]
fn with_crate_path() -> Vec<String> {
    locks_held()
}

#[synchronized("shapes-crate-reexport", crate = crate::reexport::lockutils)]
fn with_reexported_crate_path() -> Vec<String> {
    locks_held()
}

#[test]
fn crate_path() {
    assert_eq!(with_crate_path(), held(&["shapes-crate"]));
    assert_eq!(
        with_reexported_crate_path(),
        held(&["shapes-crate-reexport"])
    );
}

mod visible {
    use super::*;

    /// Kept: this doc comment, `pub`, and `#[track_caller]`.
    #[synchronized("shapes-attrs")]
    #[track_caller]
    pub fn caller() -> (&'static Location<'static>, Vec<String>) {
        (Location::caller(), locks_held())
    }
}

#[test]
fn attributes_and_visibility_are_kept() {
    // `visible::caller` is callable from outside its module: `pub` was kept.
    let (location, h) = visible::caller();
    // `#[track_caller]` was kept: the location is this line, not the body's.
    assert_eq!(location.line(), line!() - 2);
    assert_eq!(location.file(), file!());
    assert_eq!(h, held(&["shapes-attrs"]));
}

// ---------------------------------------------------------------- re-entry

#[synchronized("shapes-reentry")]
fn reenter_inner() {}

#[synchronized("shapes-reentry")]
fn reenter_outer() -> String {
    let attempt = panic::catch_unwind(AssertUnwindSafe(reenter_inner));
    let payload = attempt.expect_err("re-entry did not panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn same_thread_reentry_panics_naming_the_lock() {
    let message = reenter_outer();
    assert!(
        message.contains("shapes-reentry"),
        "message does not name the lock: {message:?}"
    );
    assert!(locks_held().is_empty());
    assert!(is_free("shapes-reentry"));
}
