//! Process-wide settings: where external locks live, and whether they are on.
//!
//! This module is the bottom of the runtime: it names nothing above it.
//! Checking a lock server's URL is `external`'s job, which then records it
//! here.
//!
//! External locks go to the lock server chosen with `set_backend` or
//! `$LOCKUTILS_BACKEND` (`postgres://...`, `etcd://...`), else to lock files.
//! The lock path is, in order: the lock's own `lock_path`, the directory
//! given to [`set_lock_path`] (or `set_backend("file:///dir")`),
//! `$LOCKUTILS_LOCK_PATH`, `$OSLO_LOCK_PATH`, a `file://` `$LOCKUTILS_BACKEND`.
//! The environment is read once, the first time a lock path is needed;
//! change it at run time with [`set_lock_path`]. There is no temporary
//! directory default: a world-writable default is how lock files get
//! planted, and a per-process one would not lock anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

/// The environment variables read for the lock path, in order.
pub const LOCK_PATH_ENV: [&str; 2] = ["LOCKUTILS_LOCK_PATH", "OSLO_LOCK_PATH"];

/// The environment variable naming the backend URL.
pub const BACKEND_ENV: &str = "LOCKUTILS_BACKEND";

/// The configured lock server's URL, if any (read from the environment on
/// first use).
static BACKEND: LazyLock<RwLock<Option<String>>> = LazyLock::new(|| {
    let url = std::env::var(BACKEND_ENV)
        .ok()
        .filter(|u| !u.is_empty() && scheme(u).as_deref() != Some("file"));
    REMOTE.store(url.is_some(), Ordering::Release);
    RwLock::new(url)
});

/// Whether a lock server is configured: lets file-only processes skip the
/// backend lookup.
static REMOTE: AtomicBool = AtomicBool::new(false);

static LOCK_PATH: LazyLock<RwLock<Option<Arc<Path>>>> =
    LazyLock::new(|| RwLock::new(lock_path_from_env()));

/// Bumped by every [`set_lock_path`], so open lock files can tell cheaply
/// whether the path they were opened under is still the configured one.
static GENERATION: AtomicU64 = AtomicU64::new(0);

static PROCESS_LOCKING: AtomicBool = AtomicBool::new(true);

fn lock_path_from_env() -> Option<Arc<Path>> {
    let from_backend = || {
        let url = std::env::var(BACKEND_ENV).ok()?;
        file_url_path(&url).map(|p| Arc::from(PathBuf::from(p)))
    };
    LOCK_PATH_ENV
        .iter()
        .find_map(|var| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(|v| Arc::from(PathBuf::from(v)))
        })
        .or_else(from_backend)
}

/// `/dir` for `file:///dir`.
pub(crate) fn file_url_path(url: &str) -> Option<&str> {
    if scheme(url).as_deref() != Some("file") {
        return None;
    }
    let path = &url[url.find("://")? + 3..];
    path.starts_with('/').then_some(path)
}

/// Records the lock server's URL (already checked by the caller), or
/// `None` for lock files. A `file://` URL sets the lock path instead.
pub(crate) fn set_backend_url(url: &str) {
    if let Some(dir) = file_url_path(url) {
        set_lock_path(dir);
        *BACKEND.write() = None;
        REMOTE.store(false, Ordering::Release);
        return;
    }
    *BACKEND.write() = Some(url.to_owned());
    REMOTE.store(true, Ordering::Release);
}

/// Whether `url` is a `file://` URL (which sets the lock path).
pub(crate) fn is_file_url(url: &str) -> bool {
    file_url_path(url).is_some()
}

/// Runs `f` on the configured lock server's URL, or returns `None` for
/// lock files. File-only processes pay one atomic load.
#[inline]
pub(crate) fn with_backend_url<R>(f: impl FnOnce(&str) -> R) -> Option<R> {
    let setting = &*BACKEND;
    if !REMOTE.load(Ordering::Acquire) {
        return None;
    }
    setting.read().as_deref().map(f)
}

/// The URL's scheme, lower-cased, if it has one.
pub(crate) fn scheme(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    (!scheme.is_empty() && !rest.is_empty()).then(|| scheme.to_ascii_lowercase())
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Sets the directory where external locks keep their files, for locks that
/// do not name their own `lock_path`. Takes effect for the next acquisition.
pub fn set_lock_path(dir: impl Into<PathBuf>) {
    let dir: PathBuf = dir.into();
    let mut path = LOCK_PATH.write();
    *path = Some(Arc::from(dir));
    GENERATION.fetch_add(1, Ordering::Release);
}

/// Forgets any [`set_lock_path`] and reads the environment again.
pub fn reset_lock_path() {
    let mut path = LOCK_PATH.write();
    *path = lock_path_from_env();
    GENERATION.fetch_add(1, Ordering::Release);
}

/// The configured lock path (from [`set_lock_path`] or the environment).
pub fn lock_path() -> Option<PathBuf> {
    LOCK_PATH.read().as_deref().map(Path::to_path_buf)
}

/// Turns inter-process locking on or off for the whole process.
///
/// With `false`, `external` locks take only their in-process lock, exactly
/// like oslo.concurrency's `disable_process_locking` option. Meant for tests
/// and single-process deployments.
pub fn set_process_locking(enabled: bool) {
    PROCESS_LOCKING.store(enabled, Ordering::Release);
}

/// Whether `external` locks currently take their lock file.
pub fn process_locking() -> bool {
    PROCESS_LOCKING.load(Ordering::Acquire)
}

/// The environment variable that sets the cohort batch (see
/// [`set_cohort_limit`]): `off` (or `0`) turns handoffs off; `N` allows N
/// handoffs per batch; `N/Dus` also sets the time bound in microseconds.
pub const COHORT_ENV: &str = "LOCKUTILS_COHORT";

/// Handoffs a lock file may see before it is released to other processes.
static COHORT_HANDOFFS: AtomicU32 = AtomicU32::new(DEFAULT_COHORT.0);
/// Nanoseconds from a batch's first handoff after which it ends.
static COHORT_NANOS: AtomicU64 = AtomicU64::new(DEFAULT_COHORT.1);
/// Whether [`COHORT_ENV`] was read (or a setter overrode it).
static COHORT_SET: std::sync::Once = std::sync::Once::new();

/// 1,024 handoffs or 1 ms, whichever comes first: in practice the time,
/// which bounds what other processes wait for (and the handoffs, a batch
/// of very short critical sections).
const DEFAULT_COHORT: (u32, u64) = (1024, 1_000_000);

/// Bounds lock cohorting for lock files.
///
/// When a thread or task of this process releases an exclusive lock-file
/// lock while another of this process is queued for the same lock, the
/// file's lock is handed to that one waiter together with the in-process
/// lock, instead of being released to the kernel and taken again (two
/// `fcntl` calls and a cross-process race saved per handover); the file is
/// never left locked with nobody holding it. A batch of such handoffs ends
/// after `max_handoffs` handoffs or `max_time` from its first handoff,
/// whichever comes first; the file is then released for real, and this
/// process leaves it to other processes (lockutils, oslo.concurrency) for
/// a turn of an eighth of the batch's length (20 µs to 1 ms), which ends
/// as soon as another process has taken the file; a non-blocking try of
/// this process during it reports busy. While another process has been
/// seen holding the file within the last second, a streak of a
/// millisecond or more in which this process kept it earns the others a
/// turn of three times the streak (at most 3 ms), long enough for
/// processes that poll (oslo.concurrency, py-filelock) to find it free. The default is 1,024 handoffs or
/// 1 ms; `max_handoffs = 0` turns cohorting off. `$LOCKUTILS_COHORT` sets
/// it at start-up (`off`, `N` or `N/Dus`).
pub fn set_cohort_limit(max_handoffs: u32, max_time: Duration) {
    COHORT_SET.call_once(|| {});
    let nanos = u64::try_from(max_time.as_nanos()).unwrap_or(u64::MAX);
    COHORT_NANOS.store(nanos, Ordering::Relaxed);
    COHORT_HANDOFFS.store(max_handoffs, Ordering::Relaxed);
}

/// The cohort bound in force: handoffs per batch and the batch's time.
pub fn cohort_limit() -> (u32, Duration) {
    COHORT_SET.call_once(read_cohort_env);
    (
        COHORT_HANDOFFS.load(Ordering::Relaxed),
        Duration::from_nanos(COHORT_NANOS.load(Ordering::Relaxed)),
    )
}

/// Reads [`COHORT_ENV`]; a value that does not parse is reported once on
/// stderr and the default kept (a lock setting must not stop a service).
fn read_cohort_env() {
    let Ok(v) = std::env::var(COHORT_ENV) else {
        return;
    };
    match parse_cohort(&v) {
        Some((n, nanos)) => {
            COHORT_HANDOFFS.store(n, Ordering::Relaxed);
            COHORT_NANOS.store(nanos, Ordering::Relaxed);
        }
        None => eprintln!(
            "lockutils: ignoring {COHORT_ENV}={v:?}: expected `off`, a handoff count \
             such as `64`, or a count and microseconds such as `64/1000us`"
        ),
    }
}

fn parse_cohort(v: &str) -> Option<(u32, u64)> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("off") {
        return Some((0, DEFAULT_COHORT.1));
    }
    let (n, t) = match v.split_once('/') {
        Some((n, t)) => (n, Some(t.trim().strip_suffix("us")?)),
        None => (v, None),
    };
    let n = n.trim().parse().ok()?;
    let nanos = match t {
        Some(t) => t.trim().parse::<u64>().ok()?.checked_mul(1_000)?,
        None => DEFAULT_COHORT.1,
    };
    Some((n, nanos))
}

/// The configuration generation (see [`GENERATION`]).
#[inline]
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// The configured lock path and the generation it belongs to.
pub(crate) fn current_lock_path() -> (u64, Option<Arc<Path>>) {
    let guard = LOCK_PATH.read();
    (GENERATION.load(Ordering::Acquire), guard.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("etcd://h:2379"), "etcd://h:2379");
        assert_eq!(
            redact("postgres://u:p@ss@h/db?x=1"),
            "postgres://u:***@h/db?x=1"
        );
    }

    #[test]
    fn cohort_settings_parse() {
        assert_eq!(parse_cohort("off"), Some((0, 1_000_000)));
        assert_eq!(parse_cohort("0"), Some((0, 1_000_000)));
        assert_eq!(parse_cohort("16"), Some((16, 1_000_000)));
        assert_eq!(parse_cohort("16/250us"), Some((16, 250_000)));
        assert_eq!(parse_cohort("16/250ms"), None);
        assert_eq!(parse_cohort("many"), None);
    }
}
