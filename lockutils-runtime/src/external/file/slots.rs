//! Semaphore slots: a counted lock of N permits locks one byte per permit
//! (slot i = byte i) of its lock file.
//!
//! A holder tries each slot without waiting, lowest first; one that must
//! wait leaves the kernel wait on one slot to the file's waiter thread and
//! tries every slot again now and then (`fcntl` can wait for one range
//! only), so a slot that frees is found whichever it is.

use std::time::Duration;

use super::pool::Open;
use super::sys::Range;
use crate::error::LockError;
use crate::spec::{Kind, Mode};

/// The pauses between two tries of every slot while waiting: from the
/// first to the longest, doubling.
pub(crate) const RETRY: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_millis(16));

/// Tries every slot once without waiting. `Ok(None)`: all busy. Anything
/// locked at or past slot `permits` while all are busy is someone using
/// the file differently (more permits, or the whole file as a plain lock):
/// an error naming both kinds.
pub(crate) fn try_slots(
    name: &str,
    kind: Kind,
    open: &Open,
    permits: u32,
) -> Result<Option<Range>, LockError> {
    for i in 0..permits {
        let slot = Range::Byte(i);
        match open.file.try_lock(Mode::Exclusive, slot) {
            Ok(true) => return Ok(Some(slot)),
            Ok(false) => {}
            Err(e) => return Err(open.error(name, "lock", e)),
        }
    }
    match open.file.others_hold_from(u64::from(permits)) {
        Ok(false) => Ok(None),
        Ok(true) => Err(LockError::KindMismatch {
            name: name.to_owned(),
            this: kind.to_string(),
            other: "another kind of lock or number of permits, by another process".to_owned(),
        }),
        Err(e) => Err(open.error(name, "inspect locks on", e)),
    }
}
