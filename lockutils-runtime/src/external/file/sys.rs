//! The system calls behind lock files, and nothing else: open a lock file
//! safely, lock and unlock byte ranges, ask who holds them, `flock(2)`,
//! `fstat`.
//!
//! Linux: open-file-description locks (`F_OFD_SETLK`/`F_OFD_SETLKW`, see
//! fcntl(2) "Open file description locks"). They belong to the open file,
//! not the process, so two descriptors in one process exclude each other,
//! and they conflict with classic POSIX record locks, which is what
//! `fcntl.lockf` takes in oslo.concurrency and fasteners. (`flock(2)`, used
//! by fs2 and std's `File::lock`, conflicts with neither.)
//!
//! Other Unix: classic `F_SETLK`/`F_SETLKW` ([`CLASSIC`]); `lockfile`
//! decides which a file uses, `classic` arbitrates classic locks in
//! process.
//!
//! Windows: `LockFileEx` on byte 0, as oslo's `msvcrt.locking` does.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
pub(crate) use imp::{CLASSIC, ofd_refused};
pub(crate) use imp::{Cmds, OWN, flock_whole, funlock, is_linked, key, lock, others_hold, unlock};

/// What part of the file a lock covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// The whole file (from byte 0, however long it grows): what oslo's
    /// `lockf` and fasteners lock. On Windows, byte 0.
    Whole,
    /// One byte: a semaphore slot (`u32`, as permits are, which keeps a
    /// held lock file small).
    Byte(u32),
}

/// Whether a lock call may wait in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum How {
    Try,
    Block,
}

/// Why a lock file could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Something that is not a regular file is at the path.
    NotRegular(&'static str),
    /// The operating system refused; the string says what we were doing.
    Io(&'static str, io::Error),
}

/// Opens `path`, creating it (mode 0644 less the umask) if missing.
///
/// Never follows a symlink, never blocks on a FIFO, never truncates or
/// writes; refuses anything that is not a regular file.
pub(crate) fn open(path: &Path) -> Result<File, OpenError> {
    // Look before opening, so a device or FIFO planted at the path is
    // never opened at all (opening some devices has side effects). The
    // O_NOFOLLOW open and the fstat below close the race this leaves.
    match std::fs::symlink_metadata(path) {
        Ok(m) => imp::check_kind(&m)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(OpenError::Io("inspect lock file", e)),
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true);
    imp::harden(&mut opts);
    let file = opts.open(path).map_err(imp::open_error)?;
    let meta = file
        .metadata()
        .map_err(|e| OpenError::Io("inspect lock file", e))?;
    imp::check_kind(&meta)?;
    Ok(file)
}

/// Creates the lock directory and its parents (mode 0755 less the umask).
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o755);
    b.create(path)
}

#[cfg(unix)]
mod imp {
    use super::{How, OpenError, Range};
    use crate::spec::Mode;
    use std::fs::{File, Metadata, OpenOptions};
    use std::io;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;

    /// The `fcntl` commands of one kind of record lock.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Cmds {
        set: libc::c_int,
        wait: libc::c_int,
        get: libc::c_int,
    }

    /// Classic per-process locks.
    pub(crate) const CLASSIC: Cmds = Cmds {
        set: libc::F_SETLK,
        wait: libc::F_SETLKW,
        get: libc::F_GETLK,
    };

    /// Locks owned by the open file: OFD locks where they exist.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) const OWN: Cmds = Cmds {
        set: libc::F_OFD_SETLK,
        wait: libc::F_OFD_SETLKW,
        get: libc::F_OFD_GETLK,
    };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(crate) const OWN: Cmds = CLASSIC;

    /// Whether the kernel or file system refuses OFD locks on `file`
    /// (`EINVAL`, as on Linux before 3.15 and some FUSE file systems).
    pub(crate) fn ofd_refused(file: &File) -> bool {
        let mut fl = flock(libc::F_WRLCK as libc::c_int, 0, 0);
        matches!(
            fcntl(file, OWN.get, &mut fl),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL)
        )
    }

    pub(super) fn harden(opts: &mut OpenOptions) {
        // std adds O_CLOEXEC itself.
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .mode(0o644);
    }

    pub(super) fn open_error(e: io::Error) -> OpenError {
        match e.raw_os_error() {
            Some(libc::ELOOP) => OpenError::NotRegular("symlink"),
            Some(libc::EISDIR) => OpenError::NotRegular("directory"),
            Some(libc::ENXIO) => OpenError::NotRegular("socket or device"),
            _ => OpenError::Io("open lock file", e),
        }
    }

    pub(super) fn check_kind(m: &Metadata) -> Result<(), OpenError> {
        let t = m.file_type();
        let kind = if t.is_file() {
            return Ok(());
        } else if t.is_symlink() {
            "symlink"
        } else if t.is_dir() {
            "directory"
        } else if t.is_fifo() {
            "fifo"
        } else if t.is_socket() {
            "socket"
        } else if t.is_char_device() {
            "character device"
        } else if t.is_block_device() {
            "block device"
        } else {
            "special file"
        };
        Err(OpenError::NotRegular(kind))
    }

    fn flock(kind: libc::c_int, start: u64, len: u64) -> libc::flock {
        // SAFETY: `flock` is a plain C struct; all-zero is a valid value
        // (and l_pid must be 0 for OFD locks).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = start as libc::off_t;
        fl.l_len = len as libc::off_t; // 0: to end of file, however long it grows
        fl
    }

    fn span(range: Range) -> (u64, u64) {
        match range {
            Range::Whole => (0, 0),
            Range::Byte(i) => (u64::from(i), 1),
        }
    }

    /// `fcntl` with a lock description, retried on `EINTR` (a signal of
    /// the application's that interrupts a wait does not end it).
    fn fcntl(file: &File, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
        loop {
            // SAFETY: valid descriptor and a valid `flock` for the call.
            let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, fl as *mut libc::flock) };
            if r != -1 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Locks `range` in `mode`, waiting in the kernel if `how` says so.
    /// `Ok(false)`: busy (only for `How::Try`).
    pub(crate) fn lock(
        file: &File,
        cmds: Cmds,
        mode: Mode,
        range: Range,
        how: How,
    ) -> io::Result<bool> {
        let cmd = match how {
            How::Block => cmds.wait,
            How::Try => cmds.set,
        };
        let kind = match mode {
            Mode::Exclusive => libc::F_WRLCK,
            Mode::Shared => libc::F_RDLCK,
        };
        let (start, len) = span(range);
        match fcntl(file, cmd, &mut flock(kind as libc::c_int, start, len)) {
            Ok(()) => Ok(true),
            Err(e)
                if how == How::Try
                    && matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn unlock(file: &File, cmds: Cmds, range: Range) -> io::Result<()> {
        let (start, len) = span(range);
        fcntl(
            file,
            cmds.set,
            &mut flock(libc::F_UNLCK as libc::c_int, start, len),
        )
    }

    /// Whether another owner holds a lock on `[start, start + len)` (`len`
    /// 0: to the end), by `F_OFD_GETLK`/`F_GETLK`.
    pub(crate) fn others_hold(file: &File, cmds: Cmds, start: u64, len: u64) -> io::Result<bool> {
        let mut fl = flock(libc::F_WRLCK as libc::c_int, start, len);
        fcntl(file, cmds.get, &mut fl)?;
        Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn flock_op(file: &File, op: libc::c_int) -> io::Result<()> {
        loop {
            // SAFETY: flock(2) on an open descriptor; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// `flock(2)` on the whole file. `Ok(false)`: busy (only if `!wait`).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn flock_whole(file: &File, mode: Mode, wait: bool) -> io::Result<bool> {
        let mut op = match mode {
            Mode::Exclusive => libc::LOCK_EX,
            Mode::Shared => libc::LOCK_SH,
        };
        if !wait {
            op |= libc::LOCK_NB;
        }
        match flock_op(file, op) {
            Ok(()) => Ok(true),
            Err(e) if !wait && e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Only Linux keeps flock(2) and fcntl locks apart (see `LockFile::flock`).
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(crate) fn flock_whole(_file: &File, _mode: Mode, _wait: bool) -> io::Result<bool> {
        Ok(true)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn funlock(file: &File) -> io::Result<()> {
        flock_op(file, libc::LOCK_UN)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(crate) fn funlock(_file: &File) -> io::Result<()> {
        Ok(())
    }

    /// Plain fstat(2): std's `metadata` uses statx with an empty path,
    /// which costs more on the hot path.
    fn fstat(file: &File) -> io::Result<libc::stat> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid descriptor; fstat fills `st` on success.
        if unsafe { libc::fstat(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstat succeeded.
        Ok(unsafe { st.assume_init() })
    }

    /// Whether the file still has a name (was not removed while we waited).
    pub(crate) fn is_linked(file: &File) -> io::Result<bool> {
        Ok(fstat(file)?.st_nlink > 0)
    }

    /// The file's identity: device and inode.
    pub(crate) fn key(file: &File) -> io::Result<(u64, u64)> {
        let st = fstat(file)?;
        #[allow(clippy::unnecessary_cast)] // dev_t is 32 bits on some targets
        Ok((st.st_dev as u64, st.st_ino as u64))
    }
}

#[cfg(windows)]
mod imp {
    use super::{How, OpenError, Range};
    use crate::spec::Mode;
    use std::fs::{File, Metadata, OpenOptions};
    use std::io;
    use std::os::windows::fs::{MetadataExt, OpenOptionsExt};
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Foundation::{ERROR_IO_PENDING, ERROR_LOCK_VIOLATION, HANDLE};
    use windows_sys::Win32::Storage::FileSystem::{
        BY_HANDLE_FILE_INFORMATION, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_REPARSE_POINT,
        FILE_FLAG_OPEN_REPARSE_POINT, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
        GetFileInformationByHandle, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx,
        UnlockFileEx,
    };
    use windows_sys::Win32::System::IO::{OVERLAPPED, OVERLAPPED_0_0};

    /// Windows has one kind of lock: per handle.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Cmds;
    pub(crate) const OWN: Cmds = Cmds;

    pub(super) fn harden(opts: &mut OpenOptions) {
        // Open a symlink itself, not its target, so check_kind can refuse it.
        opts.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE);
    }

    pub(super) fn open_error(e: io::Error) -> OpenError {
        OpenError::Io("open lock file", e)
    }

    pub(super) fn check_kind(m: &Metadata) -> Result<(), OpenError> {
        let attrs = m.file_attributes();
        if attrs & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
            Err(OpenError::NotRegular("symlink"))
        } else if attrs & FILE_ATTRIBUTE_DIRECTORY != 0 {
            Err(OpenError::NotRegular("directory"))
        } else {
            Ok(())
        }
    }

    fn handle(file: &File) -> HANDLE {
        file.as_raw_handle() as HANDLE
    }

    fn overlapped(range: Range) -> OVERLAPPED {
        // SAFETY: all-zero is a valid OVERLAPPED ("offset 0").
        let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
        let at = match range {
            Range::Whole => 0,
            Range::Byte(i) => i,
        };
        ov.Anonymous.Anonymous = OVERLAPPED_0_0 {
            Offset: at,
            OffsetHigh: 0,
        };
        ov
    }

    pub(crate) fn lock(
        file: &File,
        _cmds: Cmds,
        mode: Mode,
        range: Range,
        how: How,
    ) -> io::Result<bool> {
        let wait = how == How::Block;
        let mut flags = 0;
        if mode == Mode::Exclusive {
            flags |= LOCKFILE_EXCLUSIVE_LOCK;
        }
        if !wait {
            flags |= LOCKFILE_FAIL_IMMEDIATELY;
        }
        let mut ov = overlapped(range);
        // SAFETY: the handle is synchronous, so the call completes before
        // returning and `ov` outlives it.
        let ok = unsafe { LockFileEx(handle(file), flags, 0, 1, 0, &mut ov) };
        if ok != 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error().map(|c| c as u32) {
            Some(ERROR_LOCK_VIOLATION) | Some(ERROR_IO_PENDING) if !wait => Ok(false),
            _ => Err(e),
        }
    }

    pub(crate) fn others_hold(
        _file: &File,
        _cmds: Cmds,
        _start: u64,
        _len: u64,
    ) -> io::Result<bool> {
        Ok(false) // Windows has no way to ask
    }

    pub(crate) fn unlock(file: &File, _cmds: Cmds, range: Range) -> io::Result<()> {
        let mut ov = overlapped(range);
        // SAFETY: as in `lock`.
        if unsafe { UnlockFileEx(handle(file), 0, 1, 0, &mut ov) } != 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Windows has no flock(2).
    pub(crate) fn flock_whole(_file: &File, _mode: Mode, _wait: bool) -> io::Result<bool> {
        Ok(true)
    }

    pub(crate) fn funlock(_file: &File) -> io::Result<()> {
        Ok(())
    }

    fn info(file: &File) -> io::Result<BY_HANDLE_FILE_INFORMATION> {
        // SAFETY: a zeroed BY_HANDLE_FILE_INFORMATION is a valid out-param.
        let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: a valid handle and a valid out-pointer for the call.
        if unsafe { GetFileInformationByHandle(handle(file), &mut info) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info)
    }

    pub(crate) fn is_linked(file: &File) -> io::Result<bool> {
        Ok(info(file)?.nNumberOfLinks > 0)
    }

    pub(crate) fn key(file: &File) -> io::Result<(u64, u64)> {
        let i = info(file)?;
        let index = (u64::from(i.nFileIndexHigh) << 32) | u64::from(i.nFileIndexLow);
        Ok((u64::from(i.dwVolumeSerialNumber), index))
    }
}
