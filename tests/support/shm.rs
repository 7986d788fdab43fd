//! Shared memory between the processes of a test: a file every process
//! maps (`MAP_SHARED`), read and written through atomics only. The parent
//! creates it and starts children that share it ([`spawn_sharing`]), the
//! children open it ([`Shm::from_parent`]), and all use its
//! [`word`](Shm::word)s.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use super::{Child, ChildBuilder, param};

/// How many 64-bit words the mapping holds, unless made with
/// [`Shm::create_words`].
pub const SHM_WORDS: usize = 64;

/// A shared mapping of [`SHM_WORDS`] (or more) atomic words.
pub struct Shm {
    ptr: *mut AtomicU64,
    words: usize,
    _file: File,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Shm {}
// SAFETY: as for Send: shared access goes through atomics only.
unsafe impl Sync for Shm {}

impl Shm {
    /// Creates the file at `path` (it must not exist), zeroed, and maps it.
    pub fn create(path: &Path) -> Shm {
        Shm::create_words(path, SHM_WORDS)
    }

    /// [`Shm::create`] with room for `words` words (e.g. a timestamp per
    /// round of a benchmark).
    pub fn create_words(path: &Path, words: usize) -> Shm {
        assert!(words > 0);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .expect("create shared memory file");
        file.set_len((words * 8) as u64)
            .expect("size shared memory file");
        Shm::map(file, words)
    }

    /// In a child started by [`spawn_sharing`]: its parent's shared memory.
    pub fn from_parent() -> Shm {
        Shm::open(Path::new(&param("SHM")))
    }

    /// Maps the file another process [`create`](Shm::create)d at `path`,
    /// all the words it was made with.
    pub fn open(path: &Path) -> Shm {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open shm");
        let len = file.metadata().expect("stat shm").len();
        Shm::map(file, (len / 8) as usize)
    }

    fn map(file: File, words: usize) -> Shm {
        // SAFETY: a fresh shared mapping of a file at least this long.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                words * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Shm {
            ptr: ptr.cast(),
            words,
            _file: file,
        }
    }

    /// Word `i` (below [`SHM_WORDS`], or the count it was made with), as
    /// every process sees it.
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words);
        // SAFETY: in bounds, 8-aligned (page-aligned mapping), and only
        // ever accessed atomically, by every process.
        unsafe { &*self.ptr.add(i) }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no reference to it outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.words * 8) };
    }
}

/// Creates shared memory in `dir` and starts `n` children built by `build`,
/// each told where it is (the parameter `SHM`, see [`Shm::from_parent`]).
pub fn spawn_sharing(dir: &Path, n: usize, build: impl Fn() -> ChildBuilder) -> (Shm, Vec<Child>) {
    let path = dir.join("shm");
    let shm = Shm::create(&path);
    let children = (0..n)
        .map(|_| build().param("SHM", &path).spawn())
        .collect();
    (shm, children)
}
