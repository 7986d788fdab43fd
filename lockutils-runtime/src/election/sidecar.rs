//! An election's record on lock files: who leads, beside the lock file.
//!
//! The lock file is oslo.concurrency's too and is never written, so the
//! leader keeps its record in `<lock path>/.lockutils-leaders/<file name>`:
//! four lines, the fencing token, the leader's PID, its process start
//! (Linux: field 22 of `/proc/PID/stat`, clock ticks since boot; 0
//! elsewhere) and its identity.
//!
//! Invariants:
//! * only the holder of the lock writes the record, after taking the lock
//!   and before anything else may read it as leader, by writing a new file
//!   and renaming it over the old one (readers see the old record or the
//!   new one, never a mix);
//! * the fencing token is the previous record's plus one: it grows with
//!   every leader, since no two leaders write at once;
//! * a record names the leader only while its process (PID and process
//!   start) holds the lock file, as `holders()` sees it: a leader that died
//!   leaves its record, stale and never shown, until the next one writes.
//!   A holder whose process `holders()` cannot name (another user's,
//!   unless root; another PID namespace) shows with an empty identity.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::builder::Lock;
use crate::error::LockError;
use crate::external::Leader;

/// The directory of the records, inside the lock path.
pub(crate) const RECORDS: &str = ".lockutils-leaders";

/// The record of the lock file at `lock_file`.
fn record_path(lock_file: &Path) -> Option<PathBuf> {
    let dir = lock_file.parent()?;
    Some(dir.join(RECORDS).join(lock_file.file_name()?))
}

/// A record as read: token, PID, process start, identity.
struct Record {
    token: u64,
    pid: u32,
    start: u64,
    identity: String,
}

fn read(path: &Path) -> Option<Record> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    Some(Record {
        token: lines.next()?.parse().ok()?,
        pid: lines.next()?.parse().ok()?,
        start: lines.next()?.parse().ok()?,
        identity: lines.next()?.to_owned(),
    })
}

/// Writes the record of the leader (this process) of the lock file at
/// `lock_file`, which it holds; returns its fencing token.
pub(super) fn record(lock_file: &Path, name: &str, identity: &str) -> Result<u64, LockError> {
    let io = |op: &'static str, path: &Path, source: std::io::Error| LockError::Io {
        name: name.to_owned(),
        path: path.to_path_buf(),
        op,
        source,
    };
    let Some(path) = record_path(lock_file) else {
        let e = std::io::Error::other("the lock file has no directory");
        return Err(io("record the leader beside", lock_file, e));
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("create the leaders' directory", dir, e))?;
    let token = read(&path).map_or(1, |r| r.token.saturating_add(1));
    let pid = std::process::id();
    let start = process_start(pid).unwrap_or(0);
    let tmp = dir.join(format!(".{}.{pid}.new", file_name(&path)));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| writeln!(f, "{token}\n{pid}\n{start}\n{identity}"))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write the leader's record", &path, e));
    }
    Ok(token)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Who holds `lock`'s file, and the record if it is theirs.
pub(super) fn leader(lock: &Lock<'_>) -> Result<Option<Leader>, LockError> {
    let found = crate::holders::holders(lock)?;
    if !found.is_held() {
        return Ok(None);
    }
    let record = record_path(&found.path).and_then(|p| read(&p));
    let current = record.filter(|r| {
        found.holders.iter().any(|h| {
            h.pid == Some(r.pid) && process_start(r.pid).is_none_or(|start| start == r.start)
        })
    });
    Ok(Some(match current {
        Some(r) => Leader::new(r.identity, Some(r.token)),
        None => Leader::new(String::new(), None),
    }))
}

/// When process `pid` started (Linux: clock ticks since boot), to tell it
/// from a later process given the same PID; `None` where unknown.
fn process_start(pid: u32) -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command (field 2) is in parentheses and may contain spaces
        // or parentheses: count fields after the last ')'. There, field 3
        // is the first, so start time (field 22) is the 20th.
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(19)?.parse().ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = pid;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_beside_the_lock_file_in_their_own_directory() {
        assert_eq!(
            record_path(Path::new("/var/lock/nova-sched")),
            Some(PathBuf::from("/var/lock/.lockutils-leaders/nova-sched"))
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_start() {
        let mine = process_start(std::process::id()).unwrap();
        assert!(mine > 0);
        assert_eq!(process_start(std::process::id()), Some(mine));
        assert_eq!(process_start(u32::MAX), None);
    }
}
