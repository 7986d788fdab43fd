//! File systems a test mounts for itself: a loop-mounted btrfs image, a
//! tmpfs, an overlayfs. Each mount is undone when its [`Mounts`] is
//! dropped, in reverse order, panics included (the lazy `umount -l` if a
//! plain one fails, so a crashed test leaves no busy mount behind).
//!
//! Mounting needs root (CAP_SYS_ADMIN). A test that cannot mount fails
//! with the reason and the fix; it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The mounts one test made, undone in reverse order when dropped.
#[derive(Default)]
pub struct Mounts {
    points: Vec<PathBuf>,
}

impl Mounts {
    /// Formats a 200 MB btrfs image under `base` and mounts it (through a
    /// loop device, freed again on unmount) at `base/<name>`.
    pub fn btrfs(&mut self, base: &Path, name: &str) -> PathBuf {
        let image = base.join(format!("{name}.img"));
        let file = std::fs::File::create(&image).expect("create the btrfs image");
        file.set_len(200 << 20).expect("size the btrfs image");
        drop(file);
        run(
            Command::new(tool("mkfs.btrfs", "apt-get install btrfs-progs"))
                .arg("-q")
                .arg(&image),
            "mkfs.btrfs",
        );
        let at = base.join(name);
        std::fs::create_dir(&at).unwrap();
        self.mount(&["-t", "btrfs", "-o", "loop"], Some(image.as_os_str()), &at);
        at
    }

    /// A btrfs subvolume `name` in the btrfs mounted at `fs`.
    pub fn subvolume(&self, fs: &Path, name: &str) -> PathBuf {
        let at = fs.join(name);
        run(
            Command::new(tool("btrfs", "apt-get install btrfs-progs"))
                .args(["subvolume", "create"])
                .arg(&at),
            "btrfs subvolume create",
        );
        at
    }

    /// A tmpfs mounted at `base/<name>`.
    pub fn tmpfs(&mut self, base: &Path, name: &str) -> PathBuf {
        let at = base.join(name);
        std::fs::create_dir(&at).unwrap();
        self.mount(
            &["-t", "tmpfs", "-o", "size=16m"],
            Some("tmpfs".as_ref()),
            &at,
        );
        at
    }

    /// An overlayfs of `lower` under a new upper directory, mounted at
    /// `base/<name>`; `options` are added to the mount options.
    pub fn overlay(&mut self, base: &Path, name: &str, lower: &Path, options: &str) -> PathBuf {
        let (upper, work, at) = (
            base.join(format!("{name}-upper")),
            base.join(format!("{name}-work")),
            base.join(name),
        );
        for d in [&upper, &work, &at] {
            std::fs::create_dir(d).unwrap();
        }
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        if !options.is_empty() {
            opts.push(',');
            opts.push_str(options);
        }
        self.mount(
            &["-t", "overlay", "-o", &opts],
            Some("overlay".as_ref()),
            &at,
        );
        at
    }

    fn mount(&mut self, args: &[&str], source: Option<&std::ffi::OsStr>, at: &Path) {
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let out = Command::new(tool("mount", "apt-get install mount"))
            .args(args)
            .args(source)
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount {args:?} at {}: {}{}",
            at.display(),
            String::from_utf8_lossy(&out.stderr).trim(),
            if root {
                ""
            } else {
                " (mounting needs root: run this test as root, e.g. in the CI container)"
            }
        );
        self.points.push(at.to_path_buf());
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        while let Some(at) = self.points.pop() {
            let plain = Command::new("umount").arg(&at).status();
            if !plain.is_ok_and(|s| s.success()) {
                let lazy = Command::new("umount").arg("-l").arg(&at).status();
                if !lazy.is_ok_and(|s| s.success()) {
                    eprintln!("cannot unmount {}", at.display());
                }
            }
        }
    }
}

/// `program` from the PATH or the sbin directories, else fails saying how
/// to install it.
fn tool(program: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed: install it with `{install}`"))
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
