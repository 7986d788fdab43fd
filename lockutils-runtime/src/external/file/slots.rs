//! Semaphore slots: a counted lock of N permits locks one byte per permit
//! (slot i = byte i) of its lock file.
//!
//! A holder tries each slot without waiting, and if all are taken waits in
//! the kernel on one of them (see [`wait_any_slot`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::sys::Range;
use super::{ExternalHold, FileHold, Open, Target, io_error, lock_stoppable};
use crate::error::LockError;
use crate::external::pending::{Pending, Stop};
use crate::spec::Mode;

/// Tries every slot once without waiting.
fn try_slots(open: &Open, n: u32) -> std::io::Result<Option<Range>> {
    for i in 0..n {
        if open.file.try_lock(Mode::Exclusive, Range::Byte(i.into()))? {
            return Ok(Some(Range::Byte(i.into())));
        }
    }
    Ok(None)
}

/// Locks one of the `n` slot bytes. `Ok(None)`: all busy (only if
/// `!block`). The returned file is the one holding the slot.
pub(super) fn lock_slot(
    target: &Target<'_>,
    open: Open,
    n: u32,
    block: bool,
) -> Result<Option<(Open, Range)>, LockError> {
    match try_slots(&open, n) {
        Ok(Some(r)) => return Ok(Some((open, r))),
        Ok(None) => {}
        Err(e) => return Err(io_error(target.name, &open, "lock", e)),
    }
    // All busy. Anything locked at or past slot n is someone using this
    // file differently: more permits, or the whole file as a plain lock.
    match open.file.others_hold_from(u64::from(n)) {
        Ok(false) => {}
        Ok(true) => {
            return Err(LockError::KindMismatch {
                name: target.name.to_owned(),
                this: target.kind.to_string(),
                other: "another kind of lock or number of permits, by another process".to_owned(),
            });
        }
        Err(e) => return Err(io_error(target.name, &open, "inspect locks on", e)),
    }
    if !block {
        target.state.give_back(open);
        return Ok(None);
    }
    let turn = target.state.turn.fetch_add(1, Ordering::Relaxed);
    wait_any_slot(target.name, open, n, turn, &Stop::never())
}

/// Waits until any of the `n` slots is free and locks it; `Ok(None)` if
/// `stop` was asked first.
///
/// `fcntl` can only wait for one range, so the kernel wait is on one slot
/// (spread by process and `turn`), on a helper thread with its own open
/// file, while this thread re-tries every slot with a back-off from 1 to
/// 16 ms. Whichever gets a slot first wins; the helper is then stopped
/// (interrupted and joined, see `external::pending`), and a slot it got
/// meanwhile is released at once. The watched slot is handed over by the
/// kernel with no delay; another slot that frees is found within the
/// back-off, and a `stop` is seen within it too.
pub(super) fn wait_any_slot(
    name: &str,
    open: Open,
    n: u32,
    turn: u32,
    stop: &Stop,
) -> Result<Option<(Open, Range)>, LockError> {
    // Spread by process and turn; in classic mode, never a slot this
    // process holds or watches already (the kernel would grant it at once).
    let first = std::process::id().wrapping_add(turn) % n;
    let slot = (0..n)
        .map(|i| u64::from((first + i) % n))
        .find(|&s| !open.file.ours(s))
        .map_or(Range::Byte(u64::from(first)), Range::Byte);
    let watcher = match open.reopen(name) {
        Ok(w) => w,
        Err(_) => return wait_one_slot(name, open, slot, stop),
    };
    let watch = Pending::spawn(name, true, move |stop| {
        match lock_stoppable(&watcher.file, Mode::Exclusive, slot, stop) {
            Ok(true) => Ok(Some(ExternalHold::File(FileHold::new(watcher, slot)))),
            Ok(false) => Ok(None),
            Err(e) => Err(LockError::Io {
                name: String::new(),
                path: watcher.path(""),
                op: "lock",
                source: e,
            }),
        }
    });
    let Ok(watch) = watch else {
        return wait_one_slot(name, open, slot, stop);
    };
    let mut delay = Duration::from_millis(1);
    loop {
        match watch.wait_until(Instant::now() + delay) {
            Some(Ok(Some(ExternalHold::File(FileHold { open: w, range, .. })))) => {
                return Ok(Some((w, range)));
            }
            Some(Err(LockError::Io { source, .. })) => {
                return Err(io_error(name, &open, "lock", source));
            }
            Some(_) => return Ok(None),
            None => {}
        }
        if stop.asked() {
            return Ok(None); // `watch` drops: stopped and joined
        }
        match try_slots(&open, n) {
            Ok(Some(r)) => return Ok(Some((open, r))),
            Ok(None) => {}
            Err(e) => return Err(io_error(name, &open, "lock", e)),
        }
        delay = (delay * 2).min(Duration::from_millis(16));
    }
}

/// Fallback when no helper thread can be had: wait on one slot only.
fn wait_one_slot(
    name: &str,
    open: Open,
    slot: Range,
    stop: &Stop,
) -> Result<Option<(Open, Range)>, LockError> {
    match lock_stoppable(&open.file, Mode::Exclusive, slot, stop) {
        Ok(true) => Ok(Some((open, slot))),
        Ok(false) => Ok(None),
        Err(e) => Err(io_error(name, &open, "lock", e)),
    }
}
