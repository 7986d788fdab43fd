//! The device number the kernel names a file by in `/proc/locks` and in
//! `/proc/PID/fdinfo` lock lines: its file system's (the superblock's
//! `s_dev`), which is not always `stat`'s `st_dev`.
//!
//! Invariant: [`locks_id`] gives the `major:minor:inode` that `/proc/locks`
//! prints for a lock on the file, whatever the file system.
//!
//! `st_dev` differs from the superblock's number on btrfs, which reports
//! each subvolume's own anonymous device (the top-level one included), and
//! on overlayfs whose layers are on different file systems without `xino`,
//! which reports the underlying layer's device for regular files. The
//! superblock's number is what `/proc/self/mountinfo` shows for the file's
//! mount (field 3, proc(5)), and `statx(STATX_MNT_ID)` (Linux 5.8) names the
//! mount. The inode number is `stat`'s on these file systems (overlayfs
//! sets its inodes' numbers to what `stat` reports so that `/proc/locks`
//! agrees, see `ovl_map_ino`). Before Linux 5.8 there is no mount id to
//! ask for, and `st_dev` is used as it is.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A file as `/proc/locks` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LocksId {
    pub(crate) major: u64,
    pub(crate) minor: u64,
    pub(crate) ino: u64,
}

/// The identity `/proc/locks` gives the file at `path` (a symlink itself,
/// not its target), and the `(st_dev, st_ino)` that `stat` gives it.
pub(crate) fn locks_id(path: &Path) -> io::Result<(LocksId, (u64, u64))> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: a NUL-terminated path and a buffer statx fills on success.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_INO | libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded (and the buffer was zeroed before).
    let stx = unsafe { stx.assume_init() };
    let (stat_major, stat_minor) = (u64::from(stx.stx_dev_major), u64::from(stx.stx_dev_minor));
    let dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    let (major, minor) = if stx.stx_mask & libc::STATX_MNT_ID != 0 {
        superblock_of_mount(stx.stx_mnt_id)?.unwrap_or((stat_major, stat_minor))
    } else {
        (stat_major, stat_minor)
    };
    let id = LocksId {
        major,
        minor,
        ino: stx.stx_ino,
    };
    Ok((id, (dev, stx.stx_ino)))
}

/// The superblock's `major:minor` of mount `id`, from this process's
/// `/proc/self/mountinfo` (`None`: no such mount listed).
fn superblock_of_mount(id: u64) -> io::Result<Option<(u64, u64)>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().find_map(|line| parse_mountinfo(line, id)))
}

/// Field 3 of a mountinfo line whose field 1 (the mount id) is `id`:
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`.
fn parse_mountinfo(line: &str, id: u64) -> Option<(u64, u64)> {
    let mut fields = line.split(' ');
    if fields.next()?.parse::<u64>().ok()? != id {
        return None;
    }
    let (major, minor) = fields.nth(1)?.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_the_superblock_device() {
        let line = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
        assert_eq!(parse_mountinfo(line, 36), Some((98, 0)));
        assert_eq!(parse_mountinfo(line, 35), None);
        assert_eq!(parse_mountinfo("garbage", 36), None);
        assert_eq!(parse_mountinfo("", 36), None);
    }

    #[test]
    fn the_id_is_what_proc_locks_prints_for_a_lock_on_the_file() {
        use std::os::unix::io::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).unwrap();
        // SAFETY: flock(2) on a descriptor we own.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        let (id, (dev, ino)) = locks_id(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!((dev, ino), (meta.dev(), meta.ino()));
        let printed = format!("{:02x}:{:02x}:{}", id.major, id.minor, id.ino);
        let pid = std::process::id().to_string();
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        let ours = locks.lines().any(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            t.get(1) == Some(&"FLOCK")
                && t.get(4) == Some(&pid.as_str())
                && t.get(5) == Some(&printed.as_str())
        });
        assert!(ours, "no FLOCK line of ours for {printed} in:\n{locks}");
    }
}
