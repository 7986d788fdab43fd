//! What `#[synchronized]` expands to. Not a public API: only generated code
//! names it, through `lockutils::__private`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::acquire::{self, InProcessWait, Request};
use crate::error::LockError;
use crate::guard::{AsyncLockGuard, LockGuard};
use crate::hold::{EntryRef, Hold};
pub use crate::name::LockName;
use crate::name::const_panic;
use crate::order::AsyncOrderToken;
use crate::registry::{Entry, Handle};
use crate::spec::{LockDir, Mode, Options, Wait};
use crate::trace::{self, Site};

/// A `#[synchronized]` attribute's arguments, checked during constant
/// evaluation (a bad name or prefix fails the build).
#[derive(Debug, Clone, Copy)]
pub struct LockSpec {
    name: &'static str,
    prefix: &'static str,
    function: &'static str,
    opts: Options<'static>,
}

impl LockSpec {
    /// A blocking, in-process lock `prefix[-]name` taken by `function`.
    pub const fn new(name: &'static str, prefix: &'static str, function: &'static str) -> Self {
        if let Err(problem) = lockutils_name::check(prefix, name) {
            const_panic(problem);
        }
        LockSpec {
            name,
            prefix,
            function,
            opts: Options::DEFAULT,
        }
    }

    /// `backend = "postgres://..."`.
    pub const fn backend(mut self, url: &'static str) -> Self {
        self.opts.backend = Some(url);
        self
    }

    /// `shared`.
    pub const fn shared(mut self) -> Self {
        self.opts.mode = Mode::Shared;
        self
    }

    /// `fair`.
    pub const fn fair(mut self) -> Self {
        self.opts.kind.fair = true;
        self
    }

    /// `permits = n`; `n` is checked (at least 1) during constant evaluation.
    pub const fn permits(mut self, n: u32) -> Self {
        assert!(n >= 1, "lockutils: permits must be at least 1");
        self.opts.kind.permits = Some(n);
        self
    }

    /// `flock` (the attribute checks it comes with `external`).
    pub const fn flock(mut self) -> Self {
        self.opts.kind.flock = true;
        self
    }

    /// `external`.
    pub const fn external(mut self) -> Self {
        self.opts.external = true;
        self
    }

    /// `lock_path = "..."`.
    pub const fn lock_path(mut self, path: &'static str) -> Self {
        self.opts.lock_path = Some(LockDir::Str(path));
        self
    }

    /// `blocking = false`.
    pub const fn nonblocking(mut self) -> Self {
        self.opts.wait = Wait::Try;
        self
    }

    /// `timeout = "..."`, in nanoseconds.
    pub const fn timeout_nanos(mut self, nanos: u64) -> Self {
        self.opts.wait = Wait::Timeout(Duration::from_nanos(nanos));
        self
    }

    #[inline]
    fn request(&self) -> Request<'static> {
        Request {
            opts: self.opts,
            force_file: false,
            site: Site::Function(self.function),
        }
    }

    fn handle(&self) -> Result<Handle, LockError> {
        // The canonical name, as `Lock::entry` keys it (see there).
        let full = lockutils_name::file_name(self.prefix, self.name);
        acquire::entry_for(&full, &self.opts)
    }

    // Without a call site: for arguments that name the function's generics
    // or `Self`, which a `static` cannot. Every call looks the name up.

    /// Takes the lock for a synchronous function.
    pub fn acquire(self) -> Result<LockGuard, LockError> {
        acquire::acquire(EntryRef::Owned(self.handle()?), &self.request())
    }

    /// Takes the lock, or panics with the lock's name, path and the cause.
    pub fn acquire_or_panic(self) -> LockGuard {
        self.acquire().unwrap_or_else(|e| fail(e))
    }

    /// Takes the lock for an `async fn` or a returned future.
    pub fn acquire_async(
        self,
    ) -> impl Future<Output = Result<AsyncLockGuard, LockError>> + Send + 'static {
        let entry = self.handle();
        let req = self.request();
        async move { acquire::acquire_async(EntryRef::Owned(entry?), req).await }
    }

    /// Like [`LockSpec::acquire_async`], panicking on failure.
    pub fn acquire_async_or_panic(self) -> impl Future<Output = AsyncLockGuard> + Send + 'static {
        let fut = self.acquire_async();
        async move { fut.await.unwrap_or_else(|e| fail(e)) }
    }
}

/// One `#[synchronized]` function's lock, in a `static`. After the first
/// call it keeps its registry entry, so later calls skip the registry.
pub struct CallSite {
    spec: LockSpec,
    /// In-process only and exclusive: a free lock can be taken inline.
    fast: bool,
    entry: Cached,
}

/// A call site's registry entry, kept for the rest of the process (its
/// handle is never dropped). A forked child looks its own up again: the
/// parent's entry belongs to the parent's registry.
struct Cached(AtomicPtr<Entry>);

impl Cached {
    const fn new() -> Cached {
        Cached(AtomicPtr::new(std::ptr::null_mut()))
    }

    #[inline(always)]
    fn get(&self) -> Option<&'static Entry> {
        let p = self.0.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: set by `keep` from a leaked handle: the entry lives as
        // long as the process.
        let e = unsafe { &*p };
        e.born.here().then_some(e)
    }

    #[cold]
    fn keep(&self, handle: Handle) -> &'static Entry {
        // Racing threads leak a handle each to the same entry (the name's
        // one entry while both hold it), and store the same pointer.
        let e = handle.leak();
        self.0
            .store(std::ptr::from_ref(e).cast_mut(), Ordering::Release);
        e
    }
}

// A call site whose name is in use as another kind gets an error on every
// call (nothing is cached then).

impl CallSite {
    /// A call site for `spec`.
    pub const fn new(spec: LockSpec) -> Self {
        let fast = !spec.opts.external
            && matches!(spec.opts.mode, Mode::Exclusive)
            && spec.opts.kind.permits.is_none();
        CallSite {
            spec,
            fast,
            entry: Cached::new(),
        }
    }

    /// The uncontended case, inlined into the function: an in-process
    /// exclusive lock that is free, with no debug subscriber listening and
    /// the lock-order check off.
    #[inline(always)]
    fn try_fast(&'static self) -> Option<SiteGuard> {
        if self.fast
            && !crate::metrics::ON
            && !trace::maybe_on()
            && crate::order::is_off()
            && let Some(entry) = self.entry.get()
            && entry.local.try_lock(Mode::Exclusive)
        {
            crate::guard::set_owner(entry);
            return Some(SiteGuard(Inner::Fast(entry)));
        }
        None
    }

    #[inline]
    fn entry(&'static self) -> Result<&'static Entry, LockError> {
        match self.entry.get() {
            Some(h) => Ok(h),
            None => self.resolve(),
        }
    }

    #[cold]
    fn resolve(&'static self) -> Result<&'static Entry, LockError> {
        Ok(self.entry.keep(self.spec.handle()?))
    }

    #[inline]
    fn request(&'static self) -> Request<'static> {
        self.spec.request()
    }

    /// Takes the lock for a synchronous function.
    #[inline(always)]
    pub fn acquire(&'static self) -> Result<SiteGuard, LockError> {
        match self.try_fast() {
            Some(g) => Ok(g),
            None => self.acquire_slow().map(|g| SiteGuard(Inner::Full(g))),
        }
    }

    #[inline(never)]
    fn acquire_slow(&'static self) -> Result<LockGuard, LockError> {
        acquire::acquire(EntryRef::Static(self.entry()?), &self.request())
    }

    /// Takes the lock, or panics with the lock's name, path and the cause.
    #[inline(always)]
    pub fn acquire_or_panic(&'static self) -> SiteGuard {
        match self.try_fast() {
            Some(g) => g,
            None => SiteGuard(Inner::Full(self.acquire_or_panic_slow())),
        }
    }

    #[inline(never)]
    fn acquire_or_panic_slow(&'static self) -> LockGuard {
        match self.acquire_slow() {
            Ok(g) => g,
            Err(e) => fail(e),
        }
    }

    /// Takes the lock for an `async fn` or a returned future.
    ///
    /// A small hand-written future (see [`SiteAcquire`]): a free lock is
    /// taken on the first poll with no allocation and nothing else stored.
    #[inline]
    pub fn acquire_async(&'static self) -> SiteAcquire {
        SiteAcquire {
            site: self,
            state: Step::Start,
        }
    }

    /// Like [`CallSite::acquire_async`], panicking on failure.
    #[inline]
    pub fn acquire_async_or_panic(&'static self) -> SiteAcquireOrPanic {
        SiteAcquireOrPanic(self.acquire_async())
    }

    /// Whether the inline paths may be used now: an in-process exclusive
    /// lock, nobody tracing, the lock-order check off.
    #[inline(always)]
    fn inline_ok(&'static self) -> bool {
        self.fast && !crate::metrics::ON && !trace::maybe_on() && crate::order::is_off()
    }

    /// The full acquisition, boxed: only for what the inline paths do not
    /// cover (external locks, tracing, the lock-order check, first call).
    #[cold]
    #[inline(never)]
    fn full_async(&'static self) -> BoxedAcquire {
        let entry = self.entry();
        let req = self.request();
        Box::pin(async move { acquire::acquire_async(EntryRef::Static(entry?), req).await })
    }
}

type BoxedAcquire = Pin<Box<dyn Future<Output = Result<AsyncLockGuard, LockError>> + Send>>;

/// The future of [`CallSite::acquire_async`]. On its first poll it tries
/// the lock; if that fails on an in-process call site it waits in the
/// lock's own queue (inline, no allocation); anything else goes through
/// the full, boxed acquisition. Dropping it gives up the wait, as the
/// inner futures do.
#[must_use = "futures do nothing unless polled"]
pub struct SiteAcquire {
    site: &'static CallSite,
    state: Step,
}

enum Step {
    Start,
    /// Queued on the in-process lock (`wait` as started, for its error).
    Local(InProcessWait<'static>, Wait),
    Full(BoxedAcquire),
    Done,
}

impl SiteAcquire {
    /// The guard for the in-process lock `entry`, just taken exclusively
    /// without waiting.
    #[inline(always)]
    fn guard(&self, entry: &'static Entry) -> AsyncLockGuard {
        // SAFETY: the caller took `entry`'s lock exclusively just now,
        // without waiting.
        let hold = unsafe { Hold::new(EntryRef::Static(entry), Mode::Exclusive) };
        AsyncLockGuard::new(
            hold,
            AsyncOrderToken::NONE,
            self.site.spec.request().site,
            None,
        )
    }

    #[cold]
    fn start_slow(&mut self) {
        let site = self.site;
        let entry = match site.entry.get() {
            Some(e) if site.inline_ok() && !site.spec.opts.wait.is_try() => e,
            _ => {
                self.state = Step::Full(site.full_async());
                return;
            }
        };
        let wait = site.spec.opts.wait.start();
        self.state = Step::Local(
            InProcessWait::new(entry, Mode::Exclusive, wait.deadline()),
            wait,
        );
    }
}

impl Future for SiteAcquire {
    type Output = Result<AsyncLockGuard, LockError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Step::Start = this.state {
            let site = this.site;
            if site.inline_ok()
                && let Some(entry) = site.entry.get()
                && entry.local.try_lock(Mode::Exclusive)
            {
                this.state = Step::Done;
                return Poll::Ready(Ok(this.guard(entry)));
            }
            this.start_slow();
        }
        this.poll_slow(cx)
    }
}

impl SiteAcquire {
    #[inline(never)]
    fn poll_slow(&mut self, cx: &mut Context<'_>) -> Poll<Result<AsyncLockGuard, LockError>> {
        let result = match &mut self.state {
            Step::Local(fut, wait) => {
                let taken = ready!(Pin::new(fut).poll(cx));
                let wait = *wait;
                // Only `Local` states are built from a cached entry.
                let entry: &'static Entry = self.site.entry.get().expect("cached");
                if taken {
                    // SAFETY: the wait took `entry`'s lock exclusively.
                    let hold =
                        unsafe { Hold::waited(EntryRef::Static(entry), Mode::Exclusive, false) };
                    let site = self.site.spec.request().site;
                    Ok(AsyncLockGuard::new(hold, AsyncOrderToken::NONE, site, None))
                } else {
                    Err(wait.busy(entry.name()))
                }
            }
            Step::Full(fut) => ready!(fut.as_mut().poll(cx)),
            Step::Start | Step::Done => panic!("lockutils: SiteAcquire polled after completion"),
        };
        // Drops the finished inner future (its lock wait is over).
        self.state = Step::Done;
        Poll::Ready(result)
    }
}

impl std::fmt::Debug for SiteAcquire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SiteAcquire")
            .field(&self.site.spec.name)
            .finish()
    }
}

/// The future of [`CallSite::acquire_async_or_panic`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct SiteAcquireOrPanic(SiteAcquire);

impl Future for SiteAcquireOrPanic {
    type Output = AsyncLockGuard;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<AsyncLockGuard> {
        match ready!(Pin::new(&mut self.0).poll(cx)) {
            Ok(g) => Poll::Ready(g),
            Err(e) => fail(e),
        }
    }
}

/// Waiters queued for a fair lock (0 for other kinds), `None` if nobody
/// uses the name. For tests.
pub fn queued(full_name: &str) -> Option<usize> {
    crate::registry::peek(full_name, |e| e.local.queued())
}

/// Whether a thread or task of this process is queued for the lock,
/// `None` if nobody uses the name. For tests.
pub fn has_waiters(full_name: &str) -> Option<bool> {
    crate::registry::peek(full_name, |e| e.local.has_waiters())
}

/// Lock cohorting so far for a name: handoffs of its lock file from one
/// thread to the next without unlocking it, and the most handoffs in one
/// batch. `None` if nobody uses the name. For tests and benchmarks.
pub fn cohort_stats(full_name: &str) -> Option<(u64, u32)> {
    crate::registry::peek(full_name, |e| {
        e.files_if_made().map_or((0, 0), |s| s.cohort_stats())
    })
}

/// Threads of this process waiting for a lock file on a caller's behalf
/// (at most one per lock file). For tests.
pub fn waiter_threads() -> usize {
    crate::external::file::waiter_threads()
}

/// Holders of a lock in this process (a writer counts as one), `None` if
/// nobody uses the name. For tests.
pub fn holders(full_name: &str) -> Option<usize> {
    crate::registry::peek(full_name, |e| e.local.holders())
}

/// The guard a synchronous `#[synchronized]` function holds: for the
/// common case (an in-process lock taken without waiting, nobody tracing)
/// just the entry, released inline; otherwise a full [`LockGuard`].
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct SiteGuard(Inner);

enum Inner {
    Fast(&'static Entry),
    Full(LockGuard),
}

impl Drop for SiteGuard {
    #[inline(always)]
    fn drop(&mut self) {
        if let Inner::Fast(entry) = self.0 {
            crate::guard::clear_owner(entry);
            // SAFETY: `try_fast` took the lock exclusively for this guard.
            unsafe { entry.local.unlock(Mode::Exclusive) };
        }
    }
}

impl std::fmt::Debug for SiteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Fast(e) => f.debug_tuple("SiteGuard").field(&e.name()).finish(),
            Inner::Full(g) => f.debug_tuple("SiteGuard").field(g).finish(),
        }
    }
}

/// Converts the error for a function returning `Result<_, E>`.
#[inline]
pub fn into_error<E: From<LockError>>(e: LockError) -> E {
    E::from(e)
}

#[cold]
#[track_caller]
fn fail(e: LockError) -> ! {
    panic!("lockutils: {e}")
}
