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
    handle: Handle,
}

#[derive(Debug)]
enum Handle {
    /// Locks belong to this open file (OFD locks; `LockFileEx` handles).
    Own(File),
    /// Classic per-process locks, arbitrated in-process (see `classic`).
    #[cfg(unix)]
    Classic(std::sync::Arc<super::classic::Inode>),
}

/// The environment variable that makes every lock file use classic
/// per-process `fcntl` locks, as where OFD locks do not exist. Meant for
/// testing that fallback on Linux; read once.
#[cfg_attr(not(unix), allow(dead_code))]
pub const CLASSIC_LOCKS_ENV: &str = "LOCKUTILS_CLASSIC_LOCKS";

impl LockFile {
    /// Opens `path`, creating it (mode 0644 less the umask) if missing.
    ///
    /// Never follows a symlink, never blocks on a FIFO, never truncates or
    /// writes; refuses anything that is not a regular file. In classic mode
    /// (no OFD locks for this file) the process's one descriptor for the
    /// file is shared instead of opening another.
    pub(crate) fn open(path: &Path) -> Result<LockFile, OpenError> {
        // Look before opening, so a device or FIFO planted at the path is
        // never opened at all (opening some devices has side effects). The
        // O_NOFOLLOW open and the fstat below close the race this leaves.
        match std::fs::symlink_metadata(path) {
            Ok(m) => imp::check_kind(&m)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(OpenError::Io("inspect lock file", e)),
        }
        #[cfg(unix)]
        if let Some(inode) = super::classic::find(path) {
            return Ok(LockFile {
                handle: Handle::Classic(inode),
            });
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true);
        imp::harden(&mut opts);
        let file = opts.open(path).map_err(imp::open_error)?;
        let meta = file
            .metadata()
            .map_err(|e| OpenError::Io("inspect lock file", e))?;
        imp::check_kind(&meta)?;
        #[cfg(unix)]
        if imp::classic_forced() || imp::ofd_refused(&file) {
            let inode =
                super::classic::adopt(file).map_err(|e| OpenError::Io("inspect lock file", e))?;
            return Ok(LockFile {
                handle: Handle::Classic(inode),
            });
        }
        Ok(LockFile {
            handle: Handle::Own(file),
        })
    }

    /// The open file the locks are held through.
    pub(crate) fn file(&self) -> &File {
        match &self.handle {
            Handle::Own(f) => f,
            #[cfg(unix)]
            Handle::Classic(i) => i.file(),
        }
    }

    /// Whether this file uses classic per-process locks.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn is_classic(&self) -> bool {
        !matches!(self.handle, Handle::Own(_))
    }

    fn lock_how(&self, mode: Mode, range: Range, how: imp::How) -> io::Result<bool> {
        match &self.handle {
            Handle::Own(f) => imp::lock(f, imp::OWN, mode, range, how),
            #[cfg(unix)]
            Handle::Classic(i) => i.lock(mode, range, how, |m, r, h| {
                imp::lock(i.file(), imp::CLASSIC, m, r, h)
            }),
        }
    }

    /// Takes the lock if no one else holds it. `Ok(false)`: busy.
    pub(crate) fn try_lock(&self, mode: Mode, range: Range) -> io::Result<bool> {
        self.lock_how(mode, range, imp::How::Try)
    }

    /// Waits in the kernel until the lock is ours.
    pub(crate) fn lock(&self, mode: Mode, range: Range) -> io::Result<()> {
        self.lock_how(mode, range, imp::How::Block).map(|_| ())
    }

    /// Waits in the kernel once: `Err` with `ErrorKind::Interrupted` when a
    /// signal arrived first (see [`interrupt`]), so the caller can decide
    /// whether to wait on.
    pub(crate) fn lock_interruptible(&self, mode: Mode, range: Range) -> io::Result<()> {
        self.lock_how(mode, range, imp::How::Once).map(|_| ())
    }

    /// Releases the lock on `range`.
    pub(crate) fn unlock(&self, range: Range) -> io::Result<()> {
        match &self.handle {
            Handle::Own(f) => imp::unlock(f, imp::OWN, range),
            #[cfg(unix)]
            Handle::Classic(i) => i.unlock(range, |r| imp::unlock(i.file(), imp::CLASSIC, r)),
        }
    }

    /// Whether a semaphore slot is held or waited for by another holder of
    /// this process (classic mode, where the kernel cannot tell).
    #[cfg_attr(not(unix), allow(unused_variables))]
    pub(crate) fn ours(&self, slot: u64) -> bool {
        match &self.handle {
            Handle::Own(_) => false,
            #[cfg(unix)]
            Handle::Classic(i) => i.ours(slot),
        }
    }

    /// Whether another owner holds a lock on any byte from `start` on
    /// (`F_OFD_GETLK`/`F_GETLK`). Always `false` on Windows, which cannot tell.
    pub(crate) fn others_hold_from(&self, start: u64) -> io::Result<bool> {
        let cmds = if self.is_classic() {
            imp::CLASSIC
        } else {
            imp::OWN
        };
        imp::others_hold(self.file(), cmds, start, 0)
    }

    /// Takes `flock(2)` on the whole file (`LOCK_EX`, or `LOCK_SH` for
    /// shared), waiting in the kernel if `wait`. `Ok(false)`: busy.
    ///
    /// Only Linux (and Android) keeps flock(2) and fcntl locks apart, so
    /// only there is this a lock of its own; elsewhere it succeeds without
    /// a system call: the BSDs' and macOS's flock(2) and fcntl locks
    /// already exclude each other (and a second, flock(2), lock of ours
    /// would conflict with our own fcntl lock), and Windows has none.
    pub(crate) fn flock(&self, mode: Mode, wait: bool) -> io::Result<bool> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return imp::flock_whole(self.file(), mode, wait);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = (mode, wait);
            Ok(true)
        }
    }

    /// Releases what [`flock`](LockFile::flock) took.
    pub(crate) fn funlock(&self) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return imp::funlock(self.file());
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Ok(())
    }

    /// Whether its locks belong to it (OFD, `LockFileEx`), not to the
    /// process (classic `fcntl`).
    pub(crate) fn owns_its_locks(&self) -> bool {
        matches!(self.handle, Handle::Own(_))
    }

    /// Whether the file still has a name (was not removed while we waited).
    pub(crate) fn is_linked(&self) -> io::Result<bool> {
        imp::is_linked(self.file())
    }

    /// Whether some owner is blocked in the kernel waiting for a lock on
    /// this file: on Linux, a waiter (`->`) line for its inode in
    /// `/proc/locks` (see proc(5)). `false` where that cannot be told:
    /// other systems, no `/proc`, or waiters in another PID namespace,
    /// which `/proc/locks` does not show.
    pub(crate) fn has_kernel_waiters(&self) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return imp::kernel_waiters(self.file());
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        false
    }
}

/// The text of `/proc/locks` (Linux), read in large pieces; `None` if it
/// cannot be read. The kernel builds each `read`'s piece (up to a page)
/// under the lock lists' locks, but between two calls the lists change,
/// so tiny reads (the 32-byte probe `read_to_string` starts with on an
/// empty buffer) skip lines while other locks come and go: a blocked
/// waiter went unseen that way. A table of one page is thus read
/// consistently.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn read_proc_locks() -> Option<String> {
    use std::io::Read;
    const PIECE: usize = 16 * 1024;
    let mut f = File::open("/proc/locks").ok()?;
    let mut text = Vec::new();
    loop {
        let at = text.len();
        text.resize(at + PIECE, 0);
        let n = f.read(&mut text[at..]).ok()?;
        text.truncate(at + n);
        if n == 0 {
            return String::from_utf8(text).ok();
        }
    }
}

/// Stopping a helper thread's kernel wait.
///
/// A thread blocked in `F_OFD_SETLKW` cannot be woken by closing its
/// descriptor or by any lock operation; only a signal ends the wait early
/// (`EINTR`, see fcntl(2)). So the runtime installs a no-op handler, without
/// `SA_RESTART`, on one real-time signal that nobody else handles (default
/// disposition, searched from `SIGRTMAX` down), and sends it with
/// `pthread_kill` to the helper thread it wants to stop. Helper threads
/// block every other signal ([`helper_signal_mask`]), so no signal of the
/// application's ever lands on them, and the interrupt signal is only ever
/// sent to them. Where no such signal exists, waits cannot be stopped and
/// [`signal`] is `None`.
pub(crate) mod interrupt {
    /// The interrupt signal, installed on first use.
    pub(crate) fn signal() -> Option<i32> {
        super::imp::interrupt_signal()
    }

    /// In a helper thread: blocks every signal but the interrupt one.
    pub(crate) fn helper_signal_mask() {
        super::imp::helper_signal_mask();
    }

    /// The calling thread, as [`send`] names it.
    pub(crate) fn this_thread() -> u64 {
        super::imp::this_thread()
    }

    /// Sends the interrupt signal to `thread` (from [`this_thread`]), which
    /// must still exist (not yet joined).
    pub(crate) fn send(thread: u64) {
        super::imp::send_interrupt(thread);
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

    pub(crate) use super::super::classic::How;

    /// The `fcntl` commands of one kind of record lock.
    #[derive(Clone, Copy)]
    pub(super) struct Cmds {
        set: libc::c_int,
        wait: libc::c_int,
        get: libc::c_int,
    }

    /// Classic per-process locks.
    pub(super) const CLASSIC: Cmds = Cmds {
        set: libc::F_SETLK,
        wait: libc::F_SETLKW,
        get: libc::F_GETLK,
    };

    /// Locks owned by the open file: OFD locks where they exist.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) const OWN: Cmds = Cmds {
        set: libc::F_OFD_SETLK,
        wait: libc::F_OFD_SETLKW,
        get: libc::F_OFD_GETLK,
    };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) const OWN: Cmds = CLASSIC;

    /// Whether every file must use classic locks: always where OFD locks
    /// do not exist; on Linux when [`CLASSIC_LOCKS_ENV`](super::CLASSIC_LOCKS_ENV) says so.
    pub(super) fn classic_forced() -> bool {
        if cfg!(not(any(target_os = "linux", target_os = "android"))) {
            return true;
        }
        static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FORCED.get_or_init(|| std::env::var_os(super::CLASSIC_LOCKS_ENV).is_some_and(|v| v == "1"))
    }

    /// Whether the kernel or file system refuses OFD locks on `file`
    /// (`EINVAL`, as on Linux before 3.15 and some FUSE file systems).
    pub(super) fn ofd_refused(file: &File) -> bool {
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

    pub(super) fn lock(
        file: &File,
        cmds: Cmds,
        mode: Mode,
        range: Range,
        how: How,
    ) -> io::Result<bool> {
        if how == How::Once {
            return lock_once(file, cmds, mode, range).map(|()| true);
        }
        let cmd = if how == How::Block {
            cmds.wait
        } else {
            cmds.set
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

    /// One `F_OFD_SETLKW`, not retried on `EINTR`.
    fn lock_once(file: &File, cmds: Cmds, mode: Mode, range: Range) -> io::Result<()> {
        let kind = match mode {
            Mode::Exclusive => libc::F_WRLCK,
            Mode::Shared => libc::F_RDLCK,
        };
        let (start, len) = span(range);
        let mut fl = flock(kind as libc::c_int, start, len);
        // SAFETY: valid descriptor and a valid `flock` for the call.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmds.wait, &mut fl as *mut libc::flock) };
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    extern "C" fn on_interrupt(_: libc::c_int) {}

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn interrupt_signal() -> Option<i32> {
        use std::sync::OnceLock;
        static SIGNAL: OnceLock<Option<i32>> = OnceLock::new();
        *SIGNAL.get_or_init(|| {
            (libc::SIGRTMIN()..=libc::SIGRTMAX())
                .rev()
                .find(|&sig| install_if_free(sig))
        })
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn interrupt_signal() -> Option<i32> {
        None
    }

    /// Installs the no-op handler on `sig` if nobody handles it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn install_if_free(sig: libc::c_int) -> bool {
        // SAFETY: `sigaction` is a plain C struct; all-zero is valid.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a null new action only reads the current one into `old`.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0
            || old.sa_sigaction != libc::SIG_DFL
        {
            return false;
        }
        // SAFETY: as above.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // No SA_RESTART: the interrupted fcntl must return EINTR.
        new.sa_flags = 0;
        // SAFETY: `new.sa_mask` is a valid sigset to empty, and `new` a
        // valid action whose handler is async-signal-safe (it does nothing).
        unsafe {
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(sig, &new, std::ptr::null_mut()) == 0
        }
    }

    pub(super) fn helper_signal_mask() {
        // SAFETY: all-zero is a valid sigset to fill.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset; the mask applies to this thread.
        unsafe {
            libc::sigfillset(&mut set);
            if let Some(sig) = interrupt_signal() {
                libc::sigdelset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
    }

    pub(super) fn this_thread() -> u64 {
        // SAFETY: always safe to call.
        unsafe { libc::pthread_self() as u64 }
    }

    pub(super) fn send_interrupt(thread: u64) {
        if let Some(sig) = interrupt_signal() {
            // SAFETY: the caller guarantees the thread was not joined, so
            // the id is still valid.
            unsafe { libc::pthread_kill(thread as libc::pthread_t, sig) };
        }
    }

    pub(super) fn unlock(file: &File, cmds: Cmds, range: Range) -> io::Result<()> {
        let (start, len) = span(range);
        fcntl(
            file,
            cmds.set,
            &mut flock(libc::F_UNLCK as libc::c_int, start, len),
        )
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

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn flock_whole(file: &File, mode: Mode, wait: bool) -> io::Result<bool> {
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

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn funlock(file: &File) -> io::Result<()> {
        flock_op(file, libc::LOCK_UN)
    }

    pub(super) fn others_hold(file: &File, cmds: Cmds, start: u64, len: u64) -> io::Result<bool> {
        let mut fl = flock(libc::F_WRLCK as libc::c_int, start, len);
        fcntl(file, cmds.get, &mut fl)?;
        Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
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

    pub(super) fn is_linked(file: &File) -> io::Result<bool> {
        Ok(fstat(file)?.st_nlink > 0)
    }

    /// See `LockFile::has_kernel_waiters`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn kernel_waiters(file: &File) -> bool {
        let Ok(st) = fstat(file) else {
            return false;
        };
        // The kernel prints the device as "%02x:%02x" (major, minor).
        let id = format!(
            "{:02x}:{:02x}:{}",
            libc::major(st.st_dev),
            libc::minor(st.st_dev),
            st.st_ino
        );
        match super::read_proc_locks() {
            Some(text) => waiting_on(&text, &id),
            None => false,
        }
    }

    /// Whether `/proc/locks` text lists a blocked waiter for the inode
    /// `id` ("major:minor:inode"). A waiter's line reads
    /// `3: -> POSIX  ADVISORY  WRITE 2507 fe:00:10010752 0 EOF`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn waiting_on(locks: &str, id: &str) -> bool {
        locks.lines().any(|line| {
            let mut t = line.split_whitespace();
            t.nth(1) == Some("->") && t.nth(4) == Some(id)
        })
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

    /// How long a lock call may wait (classic mode does not exist here).
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum How {
        Try,
        Block,
        Once,
    }

    /// Windows has one kind of lock: per handle.
    #[derive(Clone, Copy)]
    pub(super) struct Cmds;
    pub(super) const OWN: Cmds = Cmds;
    pub(super) const CLASSIC: Cmds = Cmds;

    pub(super) fn lock(
        file: &File,
        _cmds: Cmds,
        mode: Mode,
        range: Range,
        how: How,
    ) -> io::Result<bool> {
        let wait = how != How::Try;
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

    pub(super) fn others_hold(
        _file: &File,
        _cmds: Cmds,
        _start: u64,
        _len: u64,
    ) -> io::Result<bool> {
        Ok(false) // Windows has no way to ask
    }

    // Windows waits cannot be interrupted here (CancelSynchronousIo is not
    // wired up): waits there are not stoppable.
    pub(super) fn interrupt_signal() -> Option<i32> {
        None
    }

    pub(super) fn helper_signal_mask() {}

    pub(super) fn this_thread() -> u64 {
        0
    }

    pub(super) fn send_interrupt(_thread: u64) {}

    pub(super) fn unlock(file: &File, _cmds: Cmds, range: Range) -> io::Result<()> {
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

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_waiter_blocked_in_the_kernel_is_seen_in_proc_locks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let other = dir.path().join("other");
        let (a, b) = (LockFile::open(&p).unwrap(), LockFile::open(&p).unwrap());
        let c = LockFile::open(&other).unwrap();
        let (x, w) = (Mode::Exclusive, Range::Whole);
        assert!(a.try_lock(x, w).unwrap());
        assert!(!a.has_kernel_waiters(), "a holder alone is not a waiter");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| b.lock(x, w).unwrap());
            // The kernel lists the waiter once it blocks; nothing else
            // can say when that is, so ask /proc/locks until it does.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !a.has_kernel_waiters() {
                assert!(std::time::Instant::now() < deadline, "waiter never listed");
                std::thread::yield_now();
            }
            assert!(!c.has_kernel_waiters(), "another file's lock has no waiter");
            a.unlock(w).unwrap();
            waiter.join().unwrap();
        });
        assert!(!b.has_kernel_waiters(), "the waiter holds the lock now");
        b.unlock(w).unwrap();
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn proc_locks_waiter_lines_are_matched_by_inode() {
        let text = "1: OFDLCK ADVISORY  WRITE -1 fe:00:10010752 0 EOF\n\
                    1: -> POSIX  ADVISORY  WRITE 2507 fe:00:10010752 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 2600 fe:00:77 0 EOF\n";
        assert!(imp::waiting_on(text, "fe:00:10010752"));
        assert!(
            !imp::waiting_on(text, "fe:00:77"),
            "a holder is not a waiter"
        );
        assert!(!imp::waiting_on(text, "fe:00:1001075"), "an inode prefix");
        assert!(!imp::waiting_on("", "fe:00:77"));
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
