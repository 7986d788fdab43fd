//! What `#[synchronized]` expands to. Not a public API: only generated code
//! names it, through `lockutils::__private`.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::acquire::{self, Request};
use crate::error::LockError;
use crate::external::Dir;
use crate::guard::{AsyncLockGuard, LockGuard};
use crate::hold::{EntryRef, Hold};
use crate::local::LocalAsync;
pub use crate::name::LockName;
use crate::name::const_panic;
use crate::order::AsyncHold;
use crate::registry::{Entry, Handle};
use crate::spec::{Kind, Mode, Wait};
use crate::trace::{self, Site};

/// A `#[synchronized]` attribute's arguments, checked during constant
/// evaluation (a bad name or prefix fails the build).
#[derive(Debug, Clone, Copy)]
pub struct LockSpec {
    name: &'static str,
    prefix: &'static str,
    function: &'static str,
    external: bool,
    lock_path: Option<&'static str>,
    wait: Wait,
    mode: Mode,
    kind: Kind,
    backend: Option<&'static str>,
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
            external: false,
            lock_path: None,
            wait: Wait::Block,
            mode: Mode::Exclusive,
            kind: Kind::MUTEX,
            backend: None,
        }
    }

    /// `backend = "postgres://..."`.
    pub const fn backend(mut self, url: &'static str) -> Self {
        self.backend = Some(url);
        self
    }

    /// `shared`.
    pub const fn shared(mut self) -> Self {
        self.mode = Mode::Shared;
        self
    }

    /// `fair`.
    pub const fn fair(mut self) -> Self {
        self.kind.fair = true;
        self
    }

    /// `permits = n`; `n` is checked (at least 1) during constant evaluation.
    pub const fn permits(mut self, n: u32) -> Self {
        assert!(n >= 1, "lockutils: permits must be at least 1");
        self.kind.permits = Some(n);
        self
    }

    /// `flock` (the attribute checks it comes with `external`).
    pub const fn flock(mut self) -> Self {
        self.kind.flock = true;
        self
    }

    /// `external`.
    pub const fn external(mut self) -> Self {
        self.external = true;
        self
    }

    /// `lock_path = "..."`.
    pub const fn lock_path(mut self, path: &'static str) -> Self {
        self.lock_path = Some(path);
        self
    }

    /// `blocking = false`.
    pub const fn nonblocking(mut self) -> Self {
        self.wait = Wait::Try;
        self
    }

    /// `timeout = "..."`, in nanoseconds.
    pub const fn timeout_nanos(mut self, nanos: u64) -> Self {
        self.wait = Wait::Timeout(Duration::from_nanos(nanos));
        self
    }

    #[inline]
    fn request(&self) -> Request<'static> {
        let dir = Dir::from_options(self.lock_path.map(Path::new), self.backend);
        Request {
            mode: self.mode,
            external: self.external,
            force_file: false,
            dir,
            wait: self.wait,
            site: Site::Function(self.function),
        }
    }

    fn handle(&self) -> Result<Handle, LockError> {
        // The canonical name, as `Lock::entry` keys it (see there).
        let full = lockutils_name::file_name(self.prefix, self.name);
        acquire::entry_for(&full, self.kind, self.mode)
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
    entry: OnceLock<Handle>,
}

// A call site whose name is in use as another kind gets an error on every
// call (nothing is cached then).

impl CallSite {
    /// A call site for `spec`.
    pub const fn new(spec: LockSpec) -> Self {
        let fast =
            !spec.external && matches!(spec.mode, Mode::Exclusive) && spec.kind.permits.is_none();
        CallSite {
            spec,
            fast,
            entry: OnceLock::new(),
        }
    }

    /// The uncontended case, inlined into the function: an in-process
    /// exclusive lock that is free, with no debug subscriber listening and
    /// the lock-order check off.
    #[inline(always)]
    fn try_fast(&'static self) -> Option<SiteGuard> {
        if self.fast
            && !trace::maybe_on()
            && crate::order::is_off()
            && let Some(h) = self.entry.get()
            && h.local.try_lock(Mode::Exclusive)
        {
            let entry: &'static Entry = h;
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
        let handle = self.spec.handle()?;
        // Another thread may have won the race; either handle is the entry.
        Ok(self.entry.get_or_init(|| handle))
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
            state: State::Start,
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
        self.fast && !trace::maybe_on() && crate::order::is_off()
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
    state: State,
}

enum State {
    Start,
    /// Queued on the in-process lock (`wait` as started, for its error).
    Local(LocalAsync<'static>, Wait),
    Full(BoxedAcquire),
    Done,
}

impl SiteAcquire {
    /// The guard for the in-process lock `entry`, just taken exclusively.
    #[inline(always)]
    fn guard(&self, entry: &'static Entry) -> AsyncLockGuard {
        // SAFETY: the caller took `entry`'s lock exclusively just now.
        let hold = unsafe { Hold::new(EntryRef::Static(entry), Mode::Exclusive) };
        AsyncLockGuard::new(hold, AsyncHold::NONE, self.site.spec.request().site, None)
    }

    #[cold]
    fn start_slow(&mut self) {
        let site = self.site;
        let entry = match site.entry.get() {
            Some(h) if site.inline_ok() && !site.spec.wait.is_try() => h,
            _ => {
                self.state = State::Full(site.full_async());
                return;
            }
        };
        let entry: &'static Entry = entry;
        let wait = site.spec.wait.start();
        self.state = State::Local(
            entry.local.lock_async(Mode::Exclusive, wait.deadline()),
            wait,
        );
    }
}

impl Future for SiteAcquire {
    type Output = Result<AsyncLockGuard, LockError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let State::Start = this.state {
            let site = this.site;
            if site.inline_ok()
                && let Some(h) = site.entry.get()
                && h.local.try_lock(Mode::Exclusive)
            {
                this.state = State::Done;
                let entry: &'static Entry = h;
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
            State::Local(fut, wait) => {
                let taken = ready!(Pin::new(fut).poll(cx));
                let wait = *wait;
                // Only `Local` states are built from a cached entry.
                let entry: &'static Entry = self.site.entry.get().expect("cached");
                if taken {
                    Ok(self.guard(entry))
                } else {
                    Err(wait.busy(entry.name()))
                }
            }
            State::Full(fut) => ready!(fut.as_mut().poll(cx)),
            State::Start | State::Done => panic!("lockutils: SiteAcquire polled after completion"),
        };
        // Drops the finished inner future (its lock wait is over).
        self.state = State::Done;
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
        e.external_if_made().map_or((0, 0), |s| s.cohort_stats())
    })
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
