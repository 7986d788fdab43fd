//! The `#[synchronized]` attribute of [lockutils](https://docs.rs/lockutils).
//!
//! Use it through the `lockutils` crate (`use lockutils::synchronized;`),
//! which re-exports it and holds the runtime the generated code calls. The
//! parsing and code generation live in `lockutils-codegen`, so that your own
//! proc-macro crate can define an attribute with your project's prefix
//! (`lockutils_codegen::synchronized_with_prefix!`).
#![warn(missing_docs)]

use proc_macro::TokenStream;

/// Runs the function only while holding a named lock.
///
/// ```ignore
/// use lockutils::synchronized;
///
/// #[synchronized("iptables", prefix = "nova-")]
/// fn apply_rules(rules: &[&str]) -> usize {
///     rules.len() // runs holding the in-process lock "nova-iptables"
/// }
/// ```
///
/// # Arguments
///
/// The lock name comes first; the options follow in any order, each at most
/// once.
///
/// | argument | meaning |
/// |---|---|
/// | `"name"` | the lock name, checked at compile time (not empty, no NUL byte, not `.` or `..`; with the prefix, at most 255 bytes) |
/// | `NAME` | a path to a `const NAME: lockutils::LockName`, checked during constant evaluation |
/// | `prefix = "nova-"` or `prefix = CONST` | the lock prefix; a `-` is added unless it is empty or already ends in `-` (oslo's rule); `CONST` is a `&'static str` |
/// | `external` | also take the inter-process lock: a lock file, or the lock server `lockutils::config::set_backend` names |
/// | `lock_path = "/dir"` or `lock_path = CONST` | the lock file's directory, instead of the configured one |
/// | `blocking = false` | do not wait: a busy lock is `Err(LockError::WouldBlock { .. })` |
/// | `timeout = "250ms"` | wait at most this long, then `Err(LockError::Timeout { .. })`; units `ns`, `us`, `ms`, `s`, `m`, `h`, decimals allowed (`"1.5s"`) |
/// | `fair` | first come, first served: this process's waiters get the lock in the order they asked (oslo's `fair=True`) |
/// | `shared` | take the lock as a reader: readers overlap, a writer (the default, exclusive mode) excludes everyone; with `external`, an `F_RDLCK` on the lock file (fasteners' `InterProcessReaderWriterLock` understands it). While a writer waits, new readers wait behind it |
/// | `permits = 4` or `permits = CONST` | a counted semaphore: at most that many holders at once, in this process, and with `external` across every process using the lock file; at least 1 (`0` is a compile error); `CONST` is a `u32`, checked during constant evaluation. Not with `shared` |
/// | `flock` | with `external` on Linux, also take `flock(2)` on the lock file, after the record lock, so that util-linux `flock(1)`, py-filelock and std `File::lock` users are excluded too; not with `permits` |
/// | `crate = path` | where the generated code finds `lockutils` (default `::lockutils`), for crates that rename or re-export it |
///
/// A const name, prefix or `permits` must be nameable from an item inside
/// the function (a module-level or block-level `const`, not `Self::NAME` or
/// a generic).
///
/// `fair` and `permits` say what kind of lock a name is, and every user of
/// the name, in this process and (for `permits`) in the others sharing the
/// lock file, must say the same. Taking a name as another kind than it is
/// in use as fails with `LockError::KindMismatch`, which is returned where
/// lock errors are (see below) and is otherwise a panic naming the lock. A
/// reader (`shared`) and a writer of one name are the same kind of lock.
///
/// # Errors and panics
///
/// With `blocking = false` or `timeout` the function must return
/// `Result<_, E>` with `E: From<lockutils::LockError>` (the last path segment
/// is what counts, so `io::Result<T>` works): a failure to get the lock is
/// returned as `Err(E::from(error))` and the body does not run. With
/// `external` the lock can also fail (no lock path, an unwritable
/// directory, ...): a `Result` function gets the error, any other function
/// panics with a message naming the lock, the path and the cause.
///
/// Re-entering a lock the current thread already holds, synchronously,
/// panics with a message naming the lock instead of deadlocking.
///
/// # Function shapes
///
/// The lock is taken by one statement at the top of the body, so `return`,
/// `?`, `self`, generics, `unsafe fn`, trait-impl methods and `impl Trait`
/// returns behave as written, and the lock is released on every exit path,
/// panics included. The guard is not reachable from the body.
///
/// * `async fn`: the lock is awaited (the executor thread is never blocked)
///   and held until the future completes.
/// * A plain `fn` returning `impl Future<Output = T>`,
///   `Pin<Box<dyn Future<Output = T> + ..>>`, `BoxFuture` or
///   `LocalBoxFuture` (the shape `#[async_trait]` produces): the lock is
///   taken when the returned future is first polled and held until it
///   completes. **Code in the body before the future is returned runs
///   without the lock**: the body is evaluated first to build the future,
///   and the returned future awaits the lock before running it. Options
///   that need a `Result` look at the future's `Output`.
///
/// `const fn`, closures and items other than functions are compile errors.
///
/// # Aliases
///
/// `lockutils_codegen::synchronized_with_prefix!(pub fn nova_synchronized, "nova-");`
/// in a proc-macro crate of yours defines `#[nova_synchronized(..)]`, which
/// takes every argument above except `prefix`.
#[proc_macro_attribute]
pub fn synchronized(attr: TokenStream, item: TokenStream) -> TokenStream {
    lockutils_codegen::synchronized(attr.into(), item.into()).into()
}
