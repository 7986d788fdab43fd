//! The raw lock-file primitive: open a lock file safely, lock it, unlock it.
//!
//! Linux: open-file-description locks (`F_OFD_SETLK`/`F_OFD_SETLKW`, see
//! fcntl(2) "Open file description locks") on the whole file. They belong to
//! the open file, not the process, so two descriptors in one process exclude
//! each other, and they conflict with classic POSIX record locks, which is
//! what `fcntl.lockf` takes in oslo.concurrency and fasteners. (`flock(2)`,
//! used by fs2 and std's `File::lock`, conflicts with neither.)
//!
//! Other Unix: classic `F_SETLK`/`F_SETLKW`. These are per process, so the
//! in-process lock in front of them is what excludes threads.
//!
//! Windows: `LockFileEx` on byte 0, as oslo's `msvcrt.locking` does.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use crate::spec::Mode;

/// What part of the file a lock covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// The whole file (from byte 0, however long it grows): what oslo's
    /// `lockf` and fasteners lock. On Windows, byte 0.
    Whole,
    /// One byte: a semaphore slot, or a marker.
    Byte(u64),
}

/// Why a lock file could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Something that is not a regular file is at the path.
    NotRegular(&'static str),
    /// The operating system refused; the string says what we were doing.
    Io(&'static str, io::Error),
}

/// An open lock file. Closing it releases any lock held through it.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: File,
}

impl LockFile {
    /// Opens `path`, creating it (mode 0644 less the umask) if missing.
    ///
    /// Never follows a symlink, never blocks on a FIFO, never truncates or
    /// writes; refuses anything that is not a regular file.
    pub(crate) fn open(path: &Path) -> Result<LockFile, OpenError> {
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
        Ok(LockFile { file })
    }

    /// Takes the lock if no one else holds it. `Ok(false)`: busy.
    pub(crate) fn try_lock(&self, mode: Mode, range: Range) -> io::Result<bool> {
        imp::lock(&self.file, mode, range, false)
    }

    /// Waits in the kernel until the lock is ours.
    pub(crate) fn lock(&self, mode: Mode, range: Range) -> io::Result<()> {
        imp::lock(&self.file, mode, range, true).map(|_| ())
    }

    /// Releases the lock on `range`.
    pub(crate) fn unlock(&self, range: Range) -> io::Result<()> {
        imp::unlock(&self.file, range)
    }

    /// Whether another open file holds a lock on any byte from `start` on
    /// (`F_OFD_GETLK`). Always `false` on Windows, which cannot tell.
    pub(crate) fn others_hold_from(&self, start: u64) -> io::Result<bool> {
        imp::others_hold(&self.file, start, 0)
    }

    /// Whether the file still has a name (was not removed while we waited).
    pub(crate) fn is_linked(&self) -> io::Result<bool> {
        imp::is_linked(&self.file)
    }
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
    use super::{OpenError, Range};
    use crate::spec::Mode;
    use std::fs::{File, Metadata, OpenOptions};
    use std::io;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    const SETLK: libc::c_int = libc::F_OFD_SETLK;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const SETLKW: libc::c_int = libc::F_OFD_SETLKW;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const SETLK: libc::c_int = libc::F_SETLK;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const SETLKW: libc::c_int = libc::F_SETLKW;

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

    #[cfg(any(target_os = "linux", target_os = "android"))]
    const GETLK: libc::c_int = libc::F_OFD_GETLK;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const GETLK: libc::c_int = libc::F_GETLK;

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
            Range::Byte(i) => (i, 1),
        }
    }

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

    pub(super) fn lock(file: &File, mode: Mode, range: Range, wait: bool) -> io::Result<bool> {
        let cmd = if wait { SETLKW } else { SETLK };
        let kind = match mode {
            Mode::Exclusive => libc::F_WRLCK,
            Mode::Shared => libc::F_RDLCK,
        };
        let (start, len) = span(range);
        match fcntl(file, cmd, &mut flock(kind as libc::c_int, start, len)) {
            Ok(()) => Ok(true),
            Err(e) if !wait && matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn unlock(file: &File, range: Range) -> io::Result<()> {
        let (start, len) = span(range);
        fcntl(
            file,
            SETLK,
            &mut flock(libc::F_UNLCK as libc::c_int, start, len),
        )
    }

    pub(super) fn others_hold(file: &File, start: u64, len: u64) -> io::Result<bool> {
        let mut fl = flock(libc::F_WRLCK as libc::c_int, start, len);
        fcntl(file, GETLK, &mut fl)?;
        Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
    }

    pub(super) fn is_linked(file: &File) -> io::Result<bool> {
        // Plain fstat(2): std's `metadata` uses statx with an empty path,
        // which costs more on the hot path.
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid descriptor; fstat fills `st` on success.
        if unsafe { libc::fstat(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstat succeeded.
        Ok(unsafe { st.assume_init() }.st_nlink > 0)
    }
}

#[cfg(windows)]
mod imp {
    use super::{OpenError, Range};
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
            Offset: at as u32,
            OffsetHigh: (at >> 32) as u32,
        };
        ov
    }

    pub(super) fn lock(file: &File, mode: Mode, range: Range, wait: bool) -> io::Result<bool> {
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

    pub(super) fn others_hold(_file: &File, _start: u64, _len: u64) -> io::Result<bool> {
        Ok(false) // Windows has no way to ask
    }

    pub(super) fn unlock(file: &File, range: Range) -> io::Result<()> {
        let mut ov = overlapped(range);
        // SAFETY: as in `lock`.
        if unsafe { UnlockFileEx(handle(file), 0, 1, 0, &mut ov) } != 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub(super) fn is_linked(file: &File) -> io::Result<bool> {
        // SAFETY: a zeroed BY_HANDLE_FILE_INFORMATION is a valid out-param.
        let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: a valid handle and a valid out-pointer for the call.
        if unsafe { GetFileInformationByHandle(handle(file), &mut info) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info.nNumberOfLinks > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptors_in_one_process_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = LockFile::open(&p).unwrap();
        let b = LockFile::open(&p).unwrap();
        let (x, w) = (Mode::Exclusive, Range::Whole);
        assert!(a.try_lock(x, w).unwrap());
        assert!(
            !b.try_lock(x, w).unwrap(),
            "OFD locks must exclude a second descriptor"
        );
        assert!(b.others_hold_from(0).unwrap());
        a.unlock(w).unwrap();
        assert!(!b.others_hold_from(0).unwrap());
        assert!(b.try_lock(x, w).unwrap());
        b.unlock(w).unwrap();
    }

    #[test]
    fn shared_locks_share_and_byte_slots_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let (a, b) = (LockFile::open(&p).unwrap(), LockFile::open(&p).unwrap());
        assert!(a.try_lock(Mode::Shared, Range::Whole).unwrap());
        assert!(b.try_lock(Mode::Shared, Range::Whole).unwrap());
        assert!(!b.try_lock(Mode::Exclusive, Range::Byte(3)).unwrap());
        a.unlock(Range::Whole).unwrap();
        b.unlock(Range::Whole).unwrap();
        assert!(a.try_lock(Mode::Exclusive, Range::Byte(0)).unwrap());
        assert!(b.try_lock(Mode::Exclusive, Range::Byte(1)).unwrap());
        assert!(!b.try_lock(Mode::Exclusive, Range::Byte(0)).unwrap());
        assert!(b.others_hold_from(0).unwrap());
        assert!(
            !b.others_hold_from(1).unwrap(),
            "our own slot 1 counted as someone else's"
        );
        drop(a);
        assert!(!b.others_hold_from(0).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_symlink_fifo_directory_and_leaves_them_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            LockFile::open(&link),
            Err(OpenError::NotRegular("symlink"))
        ));
        // A dangling symlink must not create its target either.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            LockFile::open(&dangling),
            Err(OpenError::NotRegular("symlink"))
        ));
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            LockFile::open(&fifo),
            Err(OpenError::NotRegular("fifo"))
        ));

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(matches!(
            LockFile::open(&sub),
            Err(OpenError::NotRegular("directory"))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn created_mode_and_no_truncation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        drop(LockFile::open(&p).unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "mode {mode:o} wider than 0644");
        std::fs::write(&p, b"content").unwrap();
        let l = LockFile::open(&p).unwrap();
        assert!(l.try_lock(Mode::Exclusive, Range::Whole).unwrap());
        l.unlock(Range::Whole).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"content");
    }

    #[test]
    fn unlinked_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let l = LockFile::open(&p).unwrap();
        assert!(l.is_linked().unwrap());
        std::fs::remove_file(&p).unwrap();
        assert!(!l.is_linked().unwrap());
    }
}
