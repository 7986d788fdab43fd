//! What `#[synchronized]` expands to. Not a public API: only generated code
//! names it, through `lockutils::__private`.

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::LockError;
use crate::external::Dir;
use crate::guard::{AsyncLockGuard, LockGuard};
use crate::hold::EntryRef;
use crate::lock::{self, Request, Wait};
pub use crate::name::LockName;
use crate::name::const_panic;
use crate::registry::{self, Entry, Handle};
use crate::trace::Site;

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
}

impl LockSpec {
    /// A blocking, in-process lock `prefix[-]name` taken by `function`.
    pub const fn new(name: &'static str, prefix: &'static str, function: &'static str) -> Self {
        if let Err(problem) = lockutils_name::check(prefix, name) {
            const_panic(problem);
        }
        LockSpec { name, prefix, function, external: false, lock_path: None, wait: Wait::Block }
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
    entry: OnceLock<Handle>,
}

impl CallSite {
    /// A call site for `spec`.
    pub const fn new(spec: LockSpec) -> Self {
        CallSite { spec, entry: OnceLock::new() }
    }

    #[inline]
    fn entry(&'static self) -> &'static Entry {
        self.entry.get_or_init(|| {
            registry::get(&lockutils_name::full_name(self.spec.prefix, self.spec.name))
        })
    }

    #[inline]
    fn request(&'static self) -> Request<'static> {
        let dir = match self.spec.lock_path {
            Some(p) => Dir::Explicit(Path::new(p)),
            None => Dir::Configured,
        };
        Request {
            external: self.spec.external,
            force_file: false,
            dir,
            wait: self.spec.wait,
            site: Site::Function(self.spec.function),
        }
    }

    /// Takes the lock for a synchronous function.
    #[inline]
    pub fn acquire(&'static self) -> Result<LockGuard, LockError> {
        lock::acquire(EntryRef::Static(self.entry()), &self.request())
    }

    /// Takes the lock, or panics with the lock's name, path and the cause.
    #[inline]
    pub fn acquire_or_panic(&'static self) -> LockGuard {
        match self.acquire() {
            Ok(g) => g,
            Err(e) => fail(e),
        }
    }

    /// Takes the lock for an `async fn` or a returned future.
    pub fn acquire_async(
        &'static self,
    ) -> impl Future<Output = Result<AsyncLockGuard, LockError>> + Send + 'static {
        lock::acquire_async(EntryRef::Static(self.entry()), self.request())
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
