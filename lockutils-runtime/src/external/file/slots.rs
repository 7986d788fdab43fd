//! Semaphore slots: a counted lock of N permits locks one byte per permit
//! (slot i = byte i) of its lock file.
//!
//! A holder tries each slot without waiting, and if all are taken waits in
//! the kernel on one of them (see [`wait_any_slot`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use super::sys::{LockFile, Range};
use super::{Open, Target, io_error};
use crate::error::LockError;
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
    wait_any_slot(target, open, n).map(Some)
}

/// Waits until any of the `n` slots is free and locks it.
///
/// `fcntl` can only wait for one range, so the kernel wait is on one slot
/// (spread by process and turn), on a helper thread with its own open file,
/// while this thread re-tries every slot with a back-off from 1 to 16 ms.
/// Whichever gets a slot first wins; the helper's slot, if it comes later,
/// is released at once. The watched slot is handed over by the kernel with
/// no delay; another slot that frees is found within the back-off.
fn wait_any_slot(target: &Target<'_>, open: Open, n: u32) -> Result<(Open, Range), LockError> {
    let turn = target.state.turn.fetch_add(1, Ordering::Relaxed);
    let slot = Range::Byte(u64::from(std::process::id().wrapping_add(turn) % n));
    let path = open.path(target.name);
    let watcher = match LockFile::open(&path) {
        Ok(file) => Open {
            file,
            dir: open.dir.clone(),
            generation: open.generation,
        },
        Err(_) => return wait_one_slot(target, open, slot),
    };
    let shared = Arc::new((Mutex::new(Watch::Waiting), Condvar::new()));
    let theirs = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("lockutils-slot".into())
        .spawn(move || {
            let r = watcher.file.lock(Mode::Exclusive, slot);
            let mut st = theirs.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Watch::Waiting = *st {
                *st = match r {
                    Ok(()) => Watch::Got(watcher),
                    Err(e) => Watch::Failed(e),
                };
                theirs.1.notify_all();
            }
            // Abandoned: `watcher` closes here, releasing its slot.
        });
    if spawned.is_err() {
        return wait_one_slot(target, open, slot);
    }
    let (state, cv) = &*shared;
    let mut delay = std::time::Duration::from_millis(1);
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match std::mem::replace(&mut *st, Watch::Abandoned) {
            Watch::Got(w) => {
                target.state.give_back(open);
                return Ok((w, slot));
            }
            Watch::Failed(e) => return Err(io_error(target.name, &open, "lock", e)),
            _ => *st = Watch::Waiting,
        }
        match try_slots(&open, n) {
            Ok(Some(r)) => {
                // Tell the helper to let go; if it just got its slot, the
                // state drops with the last `Arc`, closing its file.
                *st = Watch::Abandoned;
                return Ok((open, r));
            }
            Ok(None) => {}
            Err(e) => {
                *st = Watch::Abandoned;
                return Err(io_error(target.name, &open, "lock", e));
            }
        }
        st = cv
            .wait_timeout(st, delay)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        delay = (delay * 2).min(std::time::Duration::from_millis(16));
    }
}

/// The helper thread's side of [`wait_any_slot`].
enum Watch {
    Waiting,
    Got(Open),
    Failed(std::io::Error),
    Abandoned,
}

/// Fallback when no helper thread can be had: wait on one slot only.
fn wait_one_slot(target: &Target<'_>, open: Open, slot: Range) -> Result<(Open, Range), LockError> {
    match open.file.lock(Mode::Exclusive, slot) {
        Ok(()) => Ok((open, slot)),
        Err(e) => Err(io_error(target.name, &open, "lock", e)),
    }
}
