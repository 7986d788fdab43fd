//! Who holds a lock file, as far as the operating system tells.
//!
//! Linux: `/proc/locks` lists every granted lock (and every blocked
//! request, marked `->`) with the file's `major:minor:inode`. A classic
//! POSIX lock (`lockf`, as Python's oslo.concurrency and fasteners take)
//! shows its owner's PID; an open-file-description lock (lockutils' own)
//! belongs to an open file, not a process, and shows PID -1. For those we
//! look at every process's open files: `/proc/PID/fd/N` stat()s as the
//! file itself, and `/proc/PID/fdinfo/N` lists, as `lock:` lines, the locks
//! held through that open file (see proc(5), "/proc/pid/fdinfo"). Processes
//! we may not inspect (other users', when not root) are skipped, so their
//! OFD locks show with an unknown PID. `flock(2)` locks are ignored: they
//! exclude neither lockutils nor oslo.
//!
//! Elsewhere (or without a readable `/proc/locks`): `F_GETLK`, which says
//! whether the file is locked and, for a POSIX lock, by which PID.

use std::collections::BTreeSet;
use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// A file as `/proc/locks` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    major: u64,
    minor: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &Metadata) -> FileId {
        let dev = meta.dev();
        // glibc's (and the kernel's user-space) dev_t encoding.
        let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
        let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
        FileId {
            major,
            minor,
            ino: meta.ino(),
        }
    }
}

/// How the lock was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// An open-file-description lock (lockutils).
    Ofd,
    /// A classic POSIX record lock (`lockf`, `fcntl(F_SETLK)`: oslo, fasteners).
    Posix,
}

/// Exclusive (a writer) or shared (a reader).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// `F_WRLCK`.
    Exclusive,
    /// `F_RDLCK`.
    Shared,
}

/// One holder of a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The process, when known.
    pub pid: Option<i32>,
    /// Its command line, when readable.
    pub command: Option<String>,
    /// How the lock was taken.
    pub kind: Kind,
    /// Exclusive or shared.
    pub access: Access,
    /// First byte locked.
    pub start: u64,
    /// Last byte locked; `None`: to the end of the file, however long.
    pub end: Option<u64>,
}

/// What is known about a lock file's users.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Who holds it (empty: free).
    pub holders: Vec<Holder>,
    /// How many lock requests wait for it (Linux only; 0 elsewhere).
    pub waiters: usize,
}

impl Usage {
    /// `pid 12 (cmd), pid 34 (cmd)`, or a note that the holder is unknown.
    pub fn describe_holders(&self) -> String {
        let described: Vec<String> = self
            .holders
            .iter()
            .map(|h| match (h.pid, &h.command) {
                (Some(pid), Some(cmd)) => format!("pid {pid} ({})", one_line(cmd, 120)),
                (Some(pid), None) => format!("pid {pid}"),
                (None, _) => "an unknown process (its /proc entries are not readable)".to_owned(),
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        described.join(", ")
    }
}

/// One line of `/proc/locks` (or an fdinfo `lock:` line, without the tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    waiter: bool,
    kind: Kind,
    access: Access,
    pid: i32,
    id: FileId,
    start: u64,
    end: Option<u64>,
}

impl Entry {
    fn key(&self) -> (Access, u64, Option<u64>) {
        (self.access, self.start, self.end)
    }
}

/// Parses `1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 0 EOF`, or the same
/// with `->` before the kind for a blocked request. Other kinds (FLOCK,
/// LEASE, DELEG) give `None`.
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
        "POSIX" => Kind::Posix,
        "OFDLCK" => Kind::Ofd,
        _ => return None,
    };
    let _advisory = t.next()?;
    let access = match t.next()? {
        "WRITE" => Access::Exclusive,
        "READ" => Access::Shared,
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
        access,
        pid,
        id: FileId { major, minor, ino },
        start,
        end,
    })
}

/// Users of each file in `ids` (same order), from `/proc`. `None` when
/// `/proc/locks` cannot be read (not Linux, or /proc not mounted).
pub fn inspect(ids: &[FileId]) -> Option<Vec<Usage>> {
    let text = fs::read_to_string("/proc/locks").ok()?;
    let entries: Vec<Entry> = text
        .lines()
        .filter_map(parse)
        .filter(|e| ids.contains(&e.id))
        .collect();
    let ofd_files: Vec<FileId> = entries
        .iter()
        .filter(|e| !e.waiter && e.kind == Kind::Ofd)
        .map(|e| e.id)
        .collect();
    let ofd_holdings = if ofd_files.is_empty() {
        Vec::new()
    } else {
        scan_open_files(&ofd_files)
    };
    let usages = ids
        .iter()
        .map(|id| usage_of(*id, &entries, &ofd_holdings))
        .collect();
    Some(usages)
}

/// One file's holders and waiters, from its `/proc/locks` entries and the
/// OFD holdings found in fdinfo.
fn usage_of(id: FileId, entries: &[Entry], holdings: &[Holding]) -> Usage {
    let mine = entries.iter().filter(|e| e.id == id);
    let mut usage = Usage {
        waiters: mine.clone().filter(|e| e.waiter).count(),
        ..Usage::default()
    };
    let held = mine.filter(|e| !e.waiter);
    for e in held.clone().filter(|e| e.kind == Kind::Posix) {
        usage.holders.push(holder(Some(e.pid), e));
    }
    // OFD locks: one /proc/locks line per lock, PID -1; the processes that
    // hold it come from their fdinfo (several when they share the open file).
    let ofd: Vec<&Entry> = held.filter(|e| e.kind == Kind::Ofd).collect();
    let keys: BTreeSet<_> = ofd.iter().map(|e| e.key()).collect();
    for key in keys {
        let locks: Vec<&&Entry> = ofd.iter().filter(|e| e.key() == key).collect();
        let pids: BTreeSet<i32> = holdings
            .iter()
            .filter(|h| h.file == id && h.lock.key() == key)
            .map(|h| h.pid)
            .collect();
        for &pid in &pids {
            usage.holders.push(holder(Some(pid), locks[0]));
        }
        // Locks whose holders we could not see.
        for _ in pids.len()..locks.len() {
            usage.holders.push(holder(None, locks[0]));
        }
    }
    usage
}

fn holder(pid: Option<i32>, e: &Entry) -> Holder {
    Holder {
        pid,
        command: pid.and_then(command_line),
        kind: e.kind,
        access: e.access,
        start: e.start,
        end: e.end,
    }
}

/// An OFD lock held through a process's open file.
struct Holding {
    pid: i32,
    file: FileId,
    lock: Entry,
}

/// The OFD locks held through the open files of every process we may
/// inspect, on the files in `files`.
fn scan_open_files(files: &[FileId]) -> Vec<Holding> {
    let mut found = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return found;
    };
    for proc_dir in procs.flatten() {
        let Some(pid) = proc_dir
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // Unreadable (another user's, or gone): skipped, see the module docs.
        let Ok(fds) = fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            // stat() follows the magic link to the open file itself.
            let Ok(meta) = fs::metadata(fd.path()) else {
                continue;
            };
            let file = FileId::of(&meta);
            if !files.contains(&file) {
                continue;
            }
            let info = proc_dir.path().join("fdinfo").join(fd.file_name());
            let Ok(text) = fs::read_to_string(info) else {
                continue;
            };
            for line in text.lines() {
                let Some(lock) = line.strip_prefix("lock:").and_then(parse) else {
                    continue;
                };
                if !lock.waiter && lock.kind == Kind::Ofd {
                    found.push(Holding { pid, file, lock });
                }
            }
        }
    }
    found
}

/// `/proc/PID/cmdline` with arguments joined by spaces, or `[comm]` for a
/// process without one; `None` where unreadable.
pub fn command_line(pid: i32) -> Option<String> {
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

/// `text` on one line (control characters as spaces), at most `max`
/// characters (cut with `…`): for tables and messages.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Asks the kernel with `F_GETLK` whether anyone holds the file at `path`
/// (any byte), and which PID for a POSIX lock. One holder at most.
pub fn probe(path: &Path) -> io::Result<Usage> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    // SAFETY: all-zero is a valid flock; the fields we need are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    // SAFETY: F_GETLK with a valid flock on an open descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) } == -1 {
        return Err(io::Error::last_os_error());
    }
    if fl.l_type == libc::F_UNLCK as _ {
        return Ok(Usage::default());
    }
    let pid = (fl.l_pid > 0).then_some(fl.l_pid);
    let start = u64::try_from(fl.l_start).unwrap_or(0);
    let end = (fl.l_len > 0).then(|| start + fl.l_len as u64 - 1);
    let holder = Holder {
        pid,
        command: pid.and_then(command_line),
        kind: if pid.is_some() {
            Kind::Posix
        } else {
            Kind::Ofd
        },
        access: if fl.l_type == libc::F_RDLCK as _ {
            Access::Shared
        } else {
            Access::Exclusive
        },
        start,
        end,
    };
    Ok(Usage {
        holders: vec![holder],
        waiters: 0,
    })
}

/// Users of the file at `path`: `/proc` where readable, else [`probe`].
/// `None` if the file is missing or cannot be inspected.
pub fn of_path(path: &Path) -> Option<Usage> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    match inspect(&[FileId::of(&meta)]) {
        Some(mut usages) => usages.pop(),
        None => probe(path).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_flattens_and_cuts() {
        assert_eq!(
            one_line("python -c \nimport x\tok", 100),
            "python -c  import x ok"
        );
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("abcd", 4), "abcd");
    }

    #[test]
    fn parses_proc_locks_lines() {
        let e = parse("2: POSIX  ADVISORY  WRITE 12847 fe:00:10224182 0 EOF").unwrap();
        assert_eq!(
            (e.kind, e.access, e.pid, e.waiter),
            (Kind::Posix, Access::Exclusive, 12847, false)
        );
        assert_eq!(
            e.id,
            FileId {
                major: 0xfe,
                minor: 0,
                ino: 10224182
            }
        );
        assert_eq!((e.start, e.end), (0, None));

        let e = parse("1: -> OFDLCK ADVISORY  READ -1 08:1a:42 3 3").unwrap();
        assert_eq!(
            (e.kind, e.access, e.pid, e.waiter),
            (Kind::Ofd, Access::Shared, -1, true)
        );
        assert_eq!(
            e.id,
            FileId {
                major: 8,
                minor: 0x1a,
                ino: 42
            }
        );
        assert_eq!((e.start, e.end), (3, Some(3)));

        let fdinfo = "\t1: OFDLCK ADVISORY  WRITE -1 fe:00:10224184 0 EOF";
        assert_eq!(parse(fdinfo).unwrap().kind, Kind::Ofd);

        assert_eq!(
            parse("3: FLOCK  ADVISORY  WRITE 9577 fe:00:10215953 0 EOF"),
            None
        );
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse(""), None);
    }
}
