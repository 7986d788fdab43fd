//! Asking about one lock file without `/proc`: `F_GETLK` on Unix, a
//! `LockFileEx` probe on Windows. Either reports at most one holder.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::{Holders, HoldersSource, check_file, io_error};
use crate::error::LockError;

#[cfg(unix)]
const SOURCE: HoldersSource = HoldersSource::GetLk;
#[cfg(windows)]
const SOURCE: HoldersSource = HoldersSource::LockFileEx;

/// A free lock, as `source` reports one (waiters unknown off Linux).
pub(super) fn free(path: PathBuf, source: HoldersSource) -> Holders {
    Holders {
        path,
        holders: Vec::new(),
        waiters: (source == HoldersSource::ProcLocks).then(Vec::new),
        source,
    }
}

/// The holder of the file at `path`, if any, as far as the OS tells.
pub(super) fn probe(path: &Path) -> Result<Holders, LockError> {
    if !check_file(path)? {
        return Ok(free(path.to_path_buf(), SOURCE));
    }
    // Classic locks: a descriptor opened and closed here would drop this
    // process's own locks on the file; ask through the one it keeps.
    #[cfg(unix)]
    let kept = crate::external::file::with_classic_file(path, sys::conflicting);
    #[cfg(not(unix))]
    let kept = None;
    let holder = match kept {
        Some(r) => r,
        None => {
            let file = open(path).map_err(|e| io_error(path, "open lock file", e))?;
            sys::conflicting(&file)
        }
    }
    .map_err(|e| io_error(path, "query lock on", e))?;
    let mut found = free(path.to_path_buf(), SOURCE);
    found.holders.extend(holder);
    Ok(found)
}

/// Opens for reading only: enough to ask, and never creates or follows.
fn open(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    sys::harden(&mut opts);
    opts.open(path)
}

#[cfg(unix)]
mod sys {
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;

    use super::super::{HoldKind, HoldMode, Holder};

    pub(super) fn harden(opts: &mut OpenOptions) {
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY);
    }

    /// `F_GETLK` for a write lock on the whole file: the kernel answers with
    /// one lock that would conflict, if any.
    pub(super) fn conflicting(file: &File) -> io::Result<Option<Holder>> {
        // SAFETY: `flock` is a plain C struct; all-zero is a valid value.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: F_GETLK with a valid `flock` on an open descriptor.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) } == -1 {
            return Err(io::Error::last_os_error());
        }
        if fl.l_type == libc::F_UNLCK as libc::c_short {
            return Ok(None);
        }
        // OFD locks (Linux) and flock locks (BSD) report no process.
        let pid = u32::try_from(fl.l_pid).ok().filter(|&p| p > 0);
        let start = u64::try_from(fl.l_start).unwrap_or(0);
        let end = u64::try_from(fl.l_len)
            .ok()
            .filter(|&len| len > 0)
            .map(|len| start.saturating_add(len - 1));
        Ok(Some(Holder {
            pid,
            command: None,
            mode: if fl.l_type == libc::F_RDLCK as libc::c_short {
                HoldMode::Shared
            } else {
                HoldMode::Exclusive
            },
            kind: if pid.is_some() {
                HoldKind::Posix
            } else {
                HoldKind::Unknown
            },
            since: None,
            start,
            end,
        }))
    }
}

#[cfg(windows)]
mod sys {
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::windows::fs::OpenOptionsExt;
    use std::os::windows::io::AsRawHandle;

    use windows_sys::Win32::Foundation::HANDLE;
    use windows_sys::Win32::Storage::FileSystem::{
        FILE_FLAG_OPEN_REPARSE_POINT, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
        LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx, UnlockFileEx,
    };
    use windows_sys::Win32::System::IO::OVERLAPPED;

    use super::super::{HoldKind, HoldMode, Holder};

    pub(super) fn harden(opts: &mut OpenOptions) {
        opts.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE);
    }

    /// Takes byte 0 (the byte lockutils and oslo lock) without waiting, and
    /// gives it back at once: `false` if someone else holds it in a way
    /// that conflicts with `exclusive`.
    fn try_byte0(file: &File, exclusive: bool) -> io::Result<bool> {
        let h = file.as_raw_handle() as HANDLE;
        let mut flags = LOCKFILE_FAIL_IMMEDIATELY;
        if exclusive {
            flags |= LOCKFILE_EXCLUSIVE_LOCK;
        }
        // SAFETY: all-zero is a valid OVERLAPPED ("offset 0").
        let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
        // SAFETY: a synchronous handle: the call completes before returning.
        if unsafe { LockFileEx(h, flags, 0, 1, 0, &mut ov) } == 0 {
            return Ok(false);
        }
        // SAFETY: as above; releases the byte just locked.
        if unsafe { UnlockFileEx(h, 0, 1, 0, &mut ov) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }

    /// Shared refused: an exclusive holder. Shared granted but exclusive
    /// refused: shared holders (one reported).
    pub(super) fn conflicting(file: &File) -> io::Result<Option<Holder>> {
        let mode = if !try_byte0(file, false)? {
            HoldMode::Exclusive
        } else if !try_byte0(file, true)? {
            HoldMode::Shared
        } else {
            return Ok(None);
        };
        Ok(Some(Holder {
            pid: None,
            command: None,
            mode,
            kind: HoldKind::LockFileEx,
            since: None,
            start: 0,
            end: Some(0),
        }))
    }
}
