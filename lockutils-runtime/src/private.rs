//! What `#[synchronized]` expands to. Not a public API: only generated code
//! names it, through `lockutils::__private`.

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::acquire::{self, Request};
use crate::error::LockError;
use crate::external::Dir;
use crate::guard::{AsyncLockGuard, LockGuard};
use crate::hold::EntryRef;
pub use crate::name::LockName;
use crate::name::const_panic;
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
    /// exclusive lock that is free, with no debug subscriber listening.
    #[inline(always)]
    fn try_fast(&'static self) -> Option<SiteGuard> {
        if self.fast
            && !trace::maybe_on()
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
        let s = &self.spec;
        let full = lockutils_name::full_name(s.prefix, s.name);
        let handle = acquire::entry_for(&full, s.kind, s.mode)?;
        // Another thread may have won the race; either handle is the entry.
        Ok(self.entry.get_or_init(|| handle))
    }

    #[inline]
    fn request(&'static self) -> Request<'static> {
        let dir = match (self.spec.lock_path, self.spec.backend) {
            (Some(p), _) => Dir::Explicit(Path::new(p)),
            (None, Some(url)) => Dir::Backend(url),
            (None, None) => Dir::Configured,
        };
        Request {
            mode: self.spec.mode,
            external: self.spec.external,
            force_file: false,
            dir,
            wait: self.spec.wait,
            site: Site::Function(self.spec.function),
        }
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
    pub fn acquire_async(
        &'static self,
    ) -> impl Future<Output = Result<AsyncLockGuard, LockError>> + Send + 'static {
        let entry = self.entry();
        let req = self.request();
        async move { acquire::acquire_async(EntryRef::Static(entry?), req).await }
    }

    /// Like [`CallSite::acquire_async`], panicking on failure.
    pub fn acquire_async_or_panic(
        &'static self,
    ) -> impl Future<Output = AsyncLockGuard> + Send + 'static {
        let fut = self.acquire_async();
        async move {
            match fut.await {
                Ok(g) => g,
                Err(e) => fail(e),
            }
        }
    }
}

/// Waiters queued for a fair lock (0 for other kinds), `None` if nobody
/// uses the name. For tests.
pub fn queued(full_name: &str) -> Option<usize> {
    crate::registry::peek(full_name, |e| e.local.queued())
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
