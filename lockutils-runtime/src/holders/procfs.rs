//! Holders and waiters from Linux `/proc`.
//!
//! `/proc/locks` has one line per granted lock and, marked `->`, one per
//! blocked request, naming the file by `major:minor:inode`:
//!
//! ```text
//! 1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 0 EOF
//! 2: OFDLCK ADVISORY  READ  -1   fe:00:5679 0 EOF
//! 3: FLOCK  ADVISORY  WRITE 4321 fe:00:5680 0 EOF
//! 3: -> FLOCK  ADVISORY  WRITE 4400 fe:00:5680 0 EOF
//! ```
//!
//! * POSIX locks belong to a process: the PID shown is the holder.
//! * OFD locks (lockutils') belong to an open file and show PID -1; a
//!   `flock(2)` lock also belongs to its open file, and its PID is only the
//!   process that took it (which may have exited, leaving the lock to a
//!   child that inherited the file). For both, the holders are the
//!   processes whose `/proc/PID/fdinfo/N` lists the lock (as `lock:` lines)
//!   for an `/proc/PID/fd/N` that is the file; each process sharing the
//!   open file is listed. Processes we may not inspect (other users', when
//!   not root) are missed: their OFD locks show with no PID, their flock
//!   locks with the PID from `/proc/locks`.
//! * Blocked OFD requests show PID -1 too; the waiting thread is found in
//!   `/proc/PID/task/TID/syscall` (an `fcntl(fd, F_OFD_SETLKW)` on a
//!   descriptor of the file), which needs ptrace rights over the process
//!   (root, or the same user when Yama allows it); otherwise no PID.
//! * PIDs are those of the PID namespace `/proc` belongs to.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{HoldKind, HoldMode, Holder, Holders, HoldersSource, check_file};
use crate::error::LockError;
use crate::mounts::{self, LocksId};

/// A file as `/proc/locks` names it (`major:minor:inode`, the device
/// being the file system's, see `crate::mounts`).
type FileId = LocksId;

/// A file as `stat` names it: `(st_dev, st_ino)`. The device may differ
/// from the one in its [`FileId`] (btrfs, overlayfs); both are stable.
type StatId = (u64, u64);

/// The lines of `/proc/locks` about the `wanted` files; `None` if it
/// cannot be read.
///
/// The kernel builds each `read`'s piece (one page, about 70 lines) under
/// the lock lists' locks, so a table of one page is one moment. A longer
/// table comes in several pieces, and each piece starts again at a
/// position counted from the head of the lists, where new locks are added.
/// A lock taken between two pieces moves every older line one place down,
/// and the next piece starts by showing again the last line of the one
/// before; a lock let go moves them up, and the line that would have
/// started the next piece is never shown. So repeats at a piece's start
/// are dropped (see [`without_repeats`]), and a longer table is read again
/// until two reads in a row agree on the wanted files' lines; after
/// [`READS`] reads the last one is taken. This cost, like that of reading
/// `/proc/locks` at all, grows with the locks on the host; only `holders`
/// pays it.
fn wanted_entries(wanted: &[FileId]) -> Option<Vec<Entry>> {
    let mut last: Option<Vec<Entry>> = None;
    for _ in 0..READS {
        let pieces = read_proc_locks()?;
        let entries: Vec<Entry> = without_repeats(&pieces)
            .filter_map(parse)
            .filter(|e| wanted.contains(&e.id))
            .collect();
        if pieces.len() <= 1 || last.as_ref().is_some_and(|l| same_lines(l, &entries)) {
            return Some(entries);
        }
        last = Some(entries);
    }
    last
}

/// How many times a table longer than a page is read, at most.
const READS: usize = 8;

/// The lines of `pieces`, less the records at the start of each piece
/// that show again what the pieces before showed (see [`repeats`]).
fn without_repeats(pieces: &[String]) -> impl Iterator<Item = &str> {
    let mut shown: Vec<Vec<&str>> = Vec::new();
    for piece in pieces {
        let piece = records(piece);
        let skip = repeats(&shown, &piece);
        shown.extend(piece.into_iter().skip(skip));
    }
    shown.into_iter().flatten()
}

/// How many records at the start of `piece` show again records of
/// `shown`: the longest run that starts as some record of `shown` does and
/// follows `shown` in order from there, passing over the records let go
/// meanwhile. (When locks keep being taken, the kernel may even show the
/// last lock of its lists again in piece after piece.) A record is a
/// granted lock's line and its waiters' `->` lines, compared without their
/// numbers. Two equal records that really are two locks (shared locks on
/// one range, from two open files) lose one this way when a piece starts
/// with the second: a line too few rather than a holder or waiter shown
/// twice.
fn repeats(shown: &[Vec<&str>], piece: &[Vec<&str>]) -> usize {
    let Some(first) = piece.first() else {
        return 0;
    };
    let run = |start: usize| {
        let (mut t, mut n) = (start, 0);
        while n < piece.len() && t < shown.len() {
            match shown[t..].iter().position(|r| same_record(r, &piece[n])) {
                Some(off) => (t, n) = (t + off + 1, n + 1),
                None => break,
            }
        }
        n
    };
    (0..shown.len())
        .filter(|&s| same_record(&shown[s], first))
        .map(run)
        .max()
        .unwrap_or(0)
}

/// A piece's records, each a list of lines.
fn records(piece: &str) -> Vec<Vec<&str>> {
    let mut records: Vec<Vec<&str>> = Vec::new();
    for line in piece.lines() {
        match records.last_mut() {
            Some(record) if unnumbered(line).trim_start().starts_with("->") => record.push(line),
            _ => records.push(vec![line]),
        }
    }
    records
}

/// Whether two records have the same lines, numbers aside.
fn same_record(a: &[&str], b: &[&str]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| unnumbered(x) == unnumbered(y))
}

/// A line without its leading `N:`.
fn unnumbered(line: &str) -> &str {
    line.split_once(':').map_or(line, |(_, rest)| rest)
}

/// Whether `a` and `b` hold the same lines, in any order.
fn same_lines(a: &[Entry], b: &[Entry]) -> bool {
    let count = |list: &[Entry], e: &Entry| list.iter().filter(|x| *x == e).count();
    a.len() == b.len() && a.iter().all(|e| count(a, e) == count(b, e))
}

/// The text of `/proc/locks` in the pieces its `read`s gave. Pieces are
/// asked for in 16 KiB: a small first read (the 32-byte probe
/// `read_to_string` starts with) would split even a one-page table.
fn read_proc_locks() -> Option<Vec<String>> {
    use std::io::Read;
    const PIECE: usize = 16 * 1024;
    let mut f = fs::File::open("/proc/locks").ok()?;
    let mut pieces = Vec::new();
    let mut buf = vec![0; PIECE];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            return Some(pieces);
        }
        pieces.push(String::from_utf8(buf[..n].to_vec()).ok()?);
    }
}

/// One line of `/proc/locks` (or an fdinfo `lock:` line, without the tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    waiter: bool,
    kind: HoldKind,
    mode: HoldMode,
    /// As printed: -1 for OFD locks.
    pid: i32,
    id: FileId,
    start: u64,
    end: Option<u64>,
}

impl Entry {
    /// What tells two locks on one file apart, without the process.
    fn key(&self) -> (HoldKind, HoldMode, u64, Option<u64>) {
        (self.kind, self.mode, self.start, self.end)
    }
}

/// Parses one line; leases, delegations and garbage give `None`.
fn parse(line: &str) -> Option<Entry> {
    let mut t = line.split_whitespace();
    if !t.next()?.ends_with(':') {
        return None;
    }
    let mut kind = t.next()?;
    let waiter = kind == "->";
    if waiter {
        kind = t.next()?;
    }
    let kind = match kind {
        "POSIX" => HoldKind::Posix,
        "OFDLCK" => HoldKind::Ofd,
        "FLOCK" => HoldKind::Flock,
        _ => return None,
    };
    let _advisory = t.next()?;
    let mode = match t.next()? {
        "WRITE" => HoldMode::Exclusive,
        "READ" => HoldMode::Shared,
        _ => return None,
    };
    let pid = t.next()?.parse().ok()?;
    let mut dev = t.next()?.split(':');
    let major = u64::from_str_radix(dev.next()?, 16).ok()?;
    let minor = u64::from_str_radix(dev.next()?, 16).ok()?;
    let ino = dev.next()?.parse().ok()?;
    let start = t.next()?.parse().ok()?;
    let end = match t.next()? {
        "EOF" => None,
        n => Some(n.parse().ok()?),
    };
    Some(Entry {
        waiter,
        kind,
        mode,
        pid,
        id: FileId { major, minor, ino },
        start,
        end,
    })
}

/// Answers for `paths` from `/proc`; `None` if `/proc/locks` is unreadable.
pub(super) fn inspect<P: AsRef<Path>>(paths: &[P]) -> Option<Vec<Result<Holders, LockError>>> {
    // Each path's identities, or its answer when there is nothing to look up.
    let ids: Vec<Result<Option<(FileId, StatId)>, LockError>> = paths
        .iter()
        .map(|p| {
            let p = p.as_ref();
            if !check_file(p)? {
                return Ok(None);
            }
            mounts::locks_id(p)
                .map(Some)
                .map_err(|e| super::io_error(p, "inspect lock file", e))
        })
        .collect();
    let both: Vec<(FileId, StatId)> = ids.iter().filter_map(|r| *r.as_ref().ok()?).collect();
    let wanted: Vec<FileId> = both.iter().map(|(id, _)| *id).collect();
    let entries = wanted_entries(&wanted)?;
    // Only OFD and flock locks need the (slower) look through open files.
    let by_file: Vec<(FileId, StatId)> = both
        .iter()
        .filter(|(id, _)| {
            entries
                .iter()
                .any(|e| e.id == *id && e.kind != HoldKind::Posix)
        })
        .copied()
        .collect();
    let scan = if by_file.is_empty() {
        Scan::default()
    } else {
        scan_open_files(&by_file)
    };
    let clock = Clock::read();
    let answers = paths
        .iter()
        .zip(ids)
        .map(|(p, id)| {
            let mut found = super::probe::free(p.as_ref().to_path_buf(), HoldersSource::ProcLocks);
            if let Some((id, _)) = id? {
                fill(&mut found, id, &entries, &scan, &clock);
            }
            Ok(found)
        })
        .collect();
    Some(answers)
}

/// One file's holders and waiters.
fn fill(found: &mut Holders, id: FileId, entries: &[Entry], scan: &Scan, clock: &Clock) {
    let mine: Vec<&Entry> = entries.iter().filter(|e| e.id == id).collect();
    let make = |pid: Option<u32>, e: &Entry| holder(pid, e, clock);
    for e in mine
        .iter()
        .filter(|e| !e.waiter && e.kind == HoldKind::Posix)
    {
        found.holders.push(make(u32::try_from(e.pid).ok(), e));
    }
    // OFD and flock locks: one line per lock; their processes come from
    // fdinfo (several when they share the open file).
    let by_file: Vec<&&Entry> = mine
        .iter()
        .filter(|e| !e.waiter && e.kind != HoldKind::Posix)
        .collect();
    let keys: BTreeSet<_> = by_file.iter().map(|e| e.key()).collect();
    for key in keys {
        let locks: Vec<&&&Entry> = by_file.iter().filter(|e| e.key() == key).collect();
        let pids: BTreeSet<u32> = scan
            .held
            .iter()
            .filter(|h| h.file == id && h.lock.key() == key)
            .map(|h| h.pid)
            .collect();
        for &pid in &pids {
            found.holders.push(make(Some(pid), locks[0]));
        }
        // Locks whose processes we could not see: flock's own PID, if any.
        for lock in locks.iter().skip(pids.len()) {
            let pid = u32::try_from(lock.pid).ok().filter(|p| *p > 0);
            found.holders.push(make(pid, lock));
        }
    }
    let mut ofd_waiters = scan.ofd_waiting.iter().filter(|w| w.file == id);
    let waiters = found.waiters.get_or_insert_with(Vec::new);
    for e in mine.iter().filter(|e| e.waiter) {
        let pid = match e.kind {
            HoldKind::Ofd => ofd_waiters.next().map(|w| w.pid),
            _ => u32::try_from(e.pid).ok(),
        };
        waiters.push(make(pid, e));
    }
}

fn holder(pid: Option<u32>, e: &Entry, clock: &Clock) -> Holder {
    Holder {
        pid,
        command: pid.and_then(command_line),
        mode: e.mode,
        kind: e.kind,
        since: pid.and_then(|p| clock.process_start(p)),
        start: e.start,
        end: e.end,
    }
}

/// A lock held through a process's open file.
struct Held {
    pid: u32,
    file: FileId,
    lock: Entry,
}

/// A thread blocked in `fcntl(F_OFD_SETLKW)` on one of the files.
struct Waiting {
    pid: u32,
    file: FileId,
}

/// What a look through every process's open files found.
#[derive(Default)]
struct Scan {
    held: Vec<Held>,
    ofd_waiting: Vec<Waiting>,
}

/// Every process's open files that are one of `files`: the OFD and flock
/// locks held through them, and the threads waiting for an OFD lock on them.
/// An open file is recognised by its `stat` identity (what `stat` on
/// `/proc/PID/fd/N` gives), and recorded under the `/proc/locks` one.
fn scan_open_files(files: &[(FileId, StatId)]) -> Scan {
    let mut scan = Scan::default();
    let Ok(procs) = fs::read_dir("/proc") else {
        return scan;
    };
    for proc_dir in procs.flatten() {
        let Some(pid) = proc_dir
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Unreadable (another user's, or gone): skipped, see the module docs.
        let Ok(fds) = fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        let mut open_here: Vec<(u64, FileId)> = Vec::new();
        for fd in fds.flatten() {
            // stat() follows the magic link to the open file itself.
            let Ok(meta) = fs::metadata(fd.path()) else {
                continue;
            };
            let seen: StatId = (meta.dev(), meta.ino());
            let Some(&(file, _)) = files.iter().find(|(_, s)| *s == seen) else {
                continue;
            };
            let Some(n) = fd.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            open_here.push((n, file));
            let info = proc_dir.path().join("fdinfo").join(fd.file_name());
            let Ok(text) = fs::read_to_string(info) else {
                continue;
            };
            let locks = text.lines().filter_map(|l| parse(l.strip_prefix("lock:")?));
            for lock in locks.filter(|l| !l.waiter && l.kind != HoldKind::Posix) {
                scan.held.push(Held { pid, file, lock });
            }
        }
        if !open_here.is_empty() {
            find_ofd_waits(&proc_dir.path(), pid, &open_here, &mut scan.ofd_waiting);
        }
    }
    scan
}

/// The threads of process `pid` blocked in `fcntl(fd, F_OFD_SETLKW, ..)`
/// on one of `open` (descriptor number, file). `/proc/PID/task/TID/syscall`
/// reads `NR arg1 arg2 ...` (hex arguments) while a thread is in a call.
fn find_ofd_waits(dir: &Path, pid: u32, open: &[(u64, FileId)], out: &mut Vec<Waiting>) {
    let Ok(tasks) = fs::read_dir(dir.join("task")) else {
        return;
    };
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("syscall")) else {
            continue;
        };
        let mut t = text.split_whitespace();
        let nr = t.next().and_then(|n| n.parse::<i64>().ok());
        if nr != Some(libc::SYS_fcntl) {
            continue;
        }
        let hex = |s: Option<&str>| {
            s.and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        };
        let (fd, cmd) = (hex(t.next()), hex(t.next()));
        if cmd != Some(libc::F_OFD_SETLKW as u64) {
            continue;
        }
        if let Some(&(_, file)) = open.iter().find(|(n, _)| Some(*n) == fd) {
            out.push(Waiting { pid, file });
        }
    }
}

/// `/proc/PID/cmdline` with arguments joined by spaces, or `[comm]` for a
/// process without one; `None` where unreadable.
fn command_line(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if !args.is_empty() {
        return Some(args.join(" "));
    }
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(format!("[{}]", comm.trim_end()))
}

/// What turns a process's start (in clock ticks since boot) into a time.
struct Clock {
    boot: Option<SystemTime>,
    ticks_per_second: u64,
}

impl Clock {
    fn read() -> Clock {
        let boot = fs::read_to_string("/proc/stat").ok().and_then(|s| {
            let secs = s.lines().find_map(|l| l.strip_prefix("btime "))?;
            let secs: u64 = secs.trim().parse().ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        });
        // SAFETY: sysconf has no memory-safety preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Clock {
            boot,
            ticks_per_second: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
        }
    }

    /// Field 22 of `/proc/PID/stat`, counted after the parenthesised
    /// command name (which may itself hold spaces and parentheses).
    fn process_start(&self, pid: u32) -> Option<SystemTime> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_name = &stat[stat.rfind(')')? + 1..];
        // Fields 3.. follow the name; starttime is field 22.
        let ticks: u64 = after_name.split_whitespace().nth(22 - 3)?.parse().ok()?;
        let t = self.ticks_per_second;
        let since_boot =
            Duration::from_secs(ticks / t) + Duration::from_nanos((ticks % t) * 1_000_000_000 / t);
        Some(self.boot? + since_boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_locks_lines() {
        let e = parse("2: POSIX  ADVISORY  WRITE 12847 fe:00:10224182 0 EOF").unwrap();
        assert_eq!(
            (e.kind, e.mode, e.pid, e.waiter),
            (HoldKind::Posix, HoldMode::Exclusive, 12847, false)
        );
        let id = FileId {
            major: 0xfe,
            minor: 0,
            ino: 10224182,
        };
        assert_eq!((e.id, e.start, e.end), (id, 0, None));

        let e = parse("1: -> OFDLCK ADVISORY  READ -1 08:1a:42 3 3").unwrap();
        assert_eq!(
            (e.kind, e.mode, e.pid, e.waiter),
            (HoldKind::Ofd, HoldMode::Shared, -1, true)
        );
        let id = FileId {
            major: 8,
            minor: 0x1a,
            ino: 42,
        };
        assert_eq!((e.id, e.start, e.end), (id, 3, Some(3)));

        let e = parse("3: FLOCK  ADVISORY  WRITE 9577 fe:00:10215953 0 EOF").unwrap();
        assert_eq!((e.kind, e.pid, e.waiter), (HoldKind::Flock, 9577, false));
        let e = parse("3: -> FLOCK  ADVISORY  READ 9600 fe:00:10215953 0 EOF").unwrap();
        assert_eq!(
            (e.kind, e.mode, e.waiter),
            (HoldKind::Flock, HoldMode::Shared, true)
        );

        let fdinfo = "\t1: OFDLCK ADVISORY  WRITE -1 fe:00:10224184 0 EOF";
        assert_eq!(parse(fdinfo).unwrap().kind, HoldKind::Ofd);

        assert_eq!(parse("4: LEASE  ACTIVE    READ 11 fe:00:1 0 EOF"), None);
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn this_process_started_in_the_past() {
        let clock = Clock::read();
        let started = clock
            .process_start(std::process::id())
            .expect("own start time");
        let now = SystemTime::now();
        assert!(started <= now, "{started:?} after {now:?}");
        // A test process is not a day old.
        assert!(now.duration_since(started).unwrap() < Duration::from_secs(86_400));
    }

    /// Pieces as the kernel gave them while a thread took and let go of
    /// locks: the second piece starts with lines the first one ended with
    /// (one of them, 4, let go in between), the third and fourth show the
    /// last lock and its waiter again.
    #[test]
    fn lines_shown_again_in_a_later_piece_are_dropped() {
        let pieces = [
            "1: FLOCK  ADVISORY  WRITE 7 fe:00:1 0 EOF\n\
             2: FLOCK  ADVISORY  WRITE 7 fe:00:2 0 EOF\n\
             3: FLOCK  ADVISORY  WRITE 7 fe:00:3 0 EOF\n\
             4: FLOCK  ADVISORY  WRITE 7 fe:00:4 0 EOF\n",
            "5: FLOCK  ADVISORY  WRITE 7 fe:00:3 0 EOF\n\
             6: FLOCK  ADVISORY  WRITE 7 fe:00:5 0 EOF\n\
             6: -> FLOCK  ADVISORY  WRITE 8 fe:00:5 0 EOF\n",
            "7: FLOCK  ADVISORY  WRITE 7 fe:00:5 0 EOF\n\
             7: -> FLOCK  ADVISORY  WRITE 8 fe:00:5 0 EOF\n",
            "8: FLOCK  ADVISORY  WRITE 7 fe:00:5 0 EOF\n\
             8: -> FLOCK  ADVISORY  WRITE 8 fe:00:5 0 EOF\n",
        ]
        .map(String::from);
        let inodes: Vec<u64> = without_repeats(&pieces)
            .map(|l| parse(l).unwrap().id.ino)
            .collect();
        assert_eq!(inodes, [1, 2, 3, 4, 5, 5]);
    }

    /// A piece that starts with a lock not shown before is all kept.
    #[test]
    fn a_piece_of_new_lines_is_kept() {
        let pieces = [
            "1: POSIX  ADVISORY  WRITE 7 fe:00:1 0 EOF\n",
            "2: POSIX  ADVISORY  WRITE 7 fe:00:2 0 EOF\n\
             3: POSIX  ADVISORY  WRITE 7 fe:00:1 0 EOF\n",
        ]
        .map(String::from);
        assert_eq!(without_repeats(&pieces).count(), 3);
    }
}
