//! Things planted where a lock file should be: symlinks, a FIFO, a
//! directory, and the checks that they were neither followed nor changed.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use lockutils::LockError;

/// A thing planted where a lock file should be.
#[derive(Clone, Copy, Debug)]
pub enum Planted {
    SymlinkToFile,
    DanglingSymlink,
    Fifo,
    Directory,
}

impl Planted {
    pub const ALL: [Planted; 4] = [
        Planted::SymlinkToFile,
        Planted::DanglingSymlink,
        Planted::Fifo,
        Planted::Directory,
    ];

    /// The `kind` the error must report.
    pub fn kind(self) -> &'static str {
        match self {
            Planted::SymlinkToFile | Planted::DanglingSymlink => "symlink",
            Planted::Fifo => "fifo",
            Planted::Directory => "directory",
        }
    }

    /// Plants it at `at`; link targets live in `outside`.
    pub fn plant(self, at: &Path, outside: &Path) {
        match self {
            Planted::SymlinkToFile => {
                let target = outside.join("precious");
                std::fs::write(&target, "precious\n").unwrap();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
                std::os::unix::fs::symlink(&target, at).unwrap();
            }
            Planted::DanglingSymlink => {
                std::os::unix::fs::symlink(outside.join("ghost"), at).unwrap();
            }
            Planted::Fifo => {
                let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path.
                let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
                assert_eq!(r, 0, "mkfifo: {}", std::io::Error::last_os_error());
            }
            Planted::Directory => {
                std::fs::create_dir(at).unwrap();
                std::fs::write(at.join("inside"), "x").unwrap();
            }
        }
    }

    /// Checks nothing was followed, created or changed.
    pub fn check_untouched(self, at: &Path, outside: &Path) {
        let meta = std::fs::symlink_metadata(at).expect("the planted thing is gone");
        match self {
            Planted::SymlinkToFile => {
                let target = outside.join("precious");
                assert!(meta.file_type().is_symlink());
                assert_eq!(std::fs::read_link(at).unwrap(), target);
                assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
                let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "the symlink's target changed mode");
            }
            Planted::DanglingSymlink => {
                assert!(meta.file_type().is_symlink());
                assert!(
                    !outside.join("ghost").exists(),
                    "a file was created through the link"
                );
            }
            Planted::Fifo => assert!(meta.file_type().is_fifo()),
            Planted::Directory => {
                assert!(meta.is_dir());
                assert_eq!(std::fs::read_to_string(at.join("inside")).unwrap(), "x");
                assert_eq!(std::fs::read_dir(at).unwrap().count(), 1);
            }
        }
        let stray: Vec<_> = std::fs::read_dir(outside)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let expected = usize::from(matches!(self, Planted::SymlinkToFile));
        assert_eq!(
            stray.len(),
            expected,
            "unexpected files beside the target: {stray:?}"
        );
    }

    pub fn remove(at: &Path, outside: &Path) {
        match std::fs::symlink_metadata(at) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(at).unwrap(),
            Ok(_) => std::fs::remove_file(at).unwrap(),
            Err(_) => {}
        }
        for e in std::fs::read_dir(outside).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
}

pub fn check_refusal(r: Result<String, LockError>, planted: Planted, name: &str, at: &Path) {
    match r {
        Err(LockError::NotRegularFile {
            name: n,
            path,
            kind,
        }) => {
            assert_eq!(n, name);
            assert_eq!(path, at);
            assert_eq!(kind, planted.kind(), "{planted:?}");
        }
        other => panic!("{planted:?}: expected NotRegularFile, got {other:?}"),
    }
}
