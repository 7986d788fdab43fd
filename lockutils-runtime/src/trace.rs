//! `tracing` events in the spirit of oslo's
//! `Lock "x" acquired by "mod::f" :: waited 0.000s`.
//!
//! Events are at `debug` level with target `lockutils`. Timestamps are only
//! taken when such an event would be recorded, so a disabled subscriber
//! costs one atomic load per acquisition.

use std::fmt;
use std::panic::Location;
use std::time::Instant;

use tracing::Level;

/// Who took the lock: a `#[synchronized]` function, or the caller of the
/// run-time API.
#[derive(Clone, Copy)]
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

/// When the acquisition started, if events are on. The first check is a
/// plain load of the global level filter, so with no debug subscriber this
/// is nearly free and keeps callers inlinable.
#[inline(always)]
pub(crate) fn start() -> Option<Instant> {
    if tracing::level_enabled!(Level::DEBUG) {
        start_slow()
    } else {
        None
    }
}

/// Whether an event might be recorded (cheap, may say yes wrongly).
#[inline(always)]
pub(crate) fn maybe_on() -> bool {
    tracing::level_enabled!(Level::DEBUG)
}

#[cold]
#[inline(never)]
fn start_slow() -> Option<Instant> {
    if tracing::enabled!(target: "lockutils", Level::DEBUG) {
        Some(Instant::now())
    } else {
        None
    }
}

/// Emits "acquired" and returns the moment the lock was taken.
#[cold]
pub(crate) fn acquired(
    hold: &crate::hold::Hold,
    site: Site,
    location: Option<&crate::external::Location>,
    started: Instant,
) -> Instant {
    let name = hold.entry().name();
    let mode = hold.mode().as_str();
    let permits = hold.entry().kind().permits.unwrap_or(1);
    let fair = hold.entry().kind().fair;
    let now = Instant::now();
    let waited = now.duration_since(started).as_secs_f64();
    let path = location.map(ToString::to_string).unwrap_or_default();
    tracing::debug!(
        target: "lockutils",
        lock = name,
        function = %site,
        lock_path = path,
        mode,
        permits,
        fair,
        waited,
        "Lock {name:?} acquired by {:?} :: waited {waited:.3}s",
        site.to_string()
    );
    now
}

/// Emits "released".
#[cold]
pub(crate) fn released(name: &str, site: Site, acquired_at: Instant) {
    let held = acquired_at.elapsed().as_secs_f64();
    tracing::debug!(
        target: "lockutils",
        lock = name,
        function = %site,
        held,
        "Lock {name:?} \"released\" by {:?} :: held {held:.3}s",
        site.to_string()
    );
}
