//! The registry of named locks: full name -> shared [`Entry`].
//!
//! oslo keeps its semaphores in a `WeakValueDictionary`, so a name nobody
//! uses costs nothing. Here a [`Handle`] is a counted reference to an entry,
//! and dropping the last handle removes the entry from the map, with its
//! name and (for external locks) its open lock file.
//!
//! Handles are counted in the entry (`users`), not as `Arc` references: the
//! map owns the entry, a lookup that finds it bumps one counter under the
//! shard lock, and dropping a handle that is not the last is one atomic
//! decrement, with no shard lock and no second hash lookup.
//!
//! The map is split into 64 shards, each behind its own small mutex and
//! picked by the top bits of the name's hash, so threads locking different
//! names almost never meet. Code that names a lock with a literal or a
//! `const` skips the registry after the first call: its call site keeps a
//! handle (see `private::CallSite`).

use std::alloc::Layout;
use std::hash::BuildHasher;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use hashbrown::HashTable;

use crate::external::file::EntryFiles;
use crate::fork::Born;
use crate::local::Local;
use crate::local::sync::{self, Mutex, Ordering};
use crate::spec::Kind;

#[cfg(not(lockutils_loom))]
const SHARD_BITS: u32 = 6;
// Models: two shards are enough, and fewer objects explore faster.
#[cfg(lockutils_loom)]
const SHARD_BITS: u32 = 1;
const SHARDS: usize = 1 << SHARD_BITS;

/// One named lock: its kind, in-process primitive and its lock-file state.
pub(crate) struct Entry {
    /// The full name's bytes, which follow the entry in its allocation
    /// (see [`Owned`]): one allocation per created entry, not two.
    name: TailName,
    hash: u64,
    kind: Kind,
    pub(crate) local: Local,
    /// The thread holding it exclusively through a synchronous guard
    /// (`guard::me()`), or 0; and that acquisition's sequence number.
    pub(crate) owner: AtomicUsize,
    pub(crate) owner_seq: AtomicU64,
    /// The process it was made in: an entry inherited through `fork` is
    /// the parent's (see [`registry`]).
    pub(crate) born: Born,
    /// The lock-file state, made on the first use of lock files
    /// ([`Entry::files`]): a name locked only in-process, or on a lock
    /// server, does not allocate one.
    files: std::sync::OnceLock<Box<EntryFiles>>,
    /// The name's metric handles (feature `metrics`; empty without it).
    pub(crate) metrics: crate::metrics::Slot,
    /// Live [`Handle`]s. Raised only under the shard lock; the entry is
    /// removed (and freed) only under it, when this is 0.
    users: sync::AtomicUsize,
}

impl Entry {
    /// The full lock name (prefix, separator, name).
    pub(crate) fn name(&self) -> &str {
        // SAFETY: `TailName` points at the name's bytes, copied from a
        // `&str` by `Owned::new` into the entry's own allocation, never
        // written again and freed with the entry, which outlives `&self`.
        unsafe { self.name.0.as_ref() }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// The lock-file state (made on first use).
    #[inline(always)]
    pub(crate) fn files(&self) -> &EntryFiles {
        match self.files.get() {
            Some(state) => state,
            None => self.make_files(),
        }
    }

    #[cold]
    #[inline(never)]
    fn make_files(&self) -> &EntryFiles {
        self.files.get_or_init(|| Box::new(EntryFiles::new()))
    }

    /// The lock-file state if a use of lock files made it.
    #[inline]
    pub(crate) fn files_if_made(&self) -> Option<&EntryFiles> {
        self.files.get().map(|b| &**b)
    }
}

/// A pointer to an entry's name, stored right after the entry in the same
/// allocation. Made from the allocation's pointer, not from a reference to
/// the entry, so reading it never reaches outside what the pointer may
/// access.
struct TailName(NonNull<str>);

// SAFETY: the bytes it points at are never written after `Owned::new`
// copies them in, and live as long as the entry that holds the pointer;
// sharing or sending a pointer to immutable bytes is sharing a `&str`.
unsafe impl Send for TailName {}
// SAFETY: as for `Send`.
unsafe impl Sync for TailName {}

/// The map's ownership of one entry: one heap allocation holding the
/// `Entry` and, after it, its name's bytes; freed when the entry leaves the
/// map. Not an `Arc`: handles count themselves in `Entry::users`, so a
/// reference count in front of the entry would be two more atomic
/// operations per free for nothing. Not a `Box` either: the table moves its
/// values when it grows, and a moved `Box` asserts unique access, which the
/// handles' shared pointers to the entry contradict; and a `Box<str>` for
/// the name would be a second allocation per entry.
struct Owned(NonNull<Entry>);

// SAFETY: `Owned` is the sole owner of its `Entry` (like a `Box`), and
// `Entry` is `Send + Sync` (asserted below).
unsafe impl Send for Owned {}

impl Owned {
    /// The allocation for an entry whose name is `len` bytes, and the
    /// offset of the name in it.
    fn layout(len: usize) -> (Layout, usize) {
        Layout::new::<Entry>()
            .extend(Layout::array::<u8>(len).expect("a str is at most isize::MAX bytes"))
            // Overflow would need a name within 200 bytes of isize::MAX,
            // which no address space holds next to an entry.
            .expect("an entry and its name fit in isize::MAX bytes")
    }

    /// Moves `entry` and a copy of `name` into one new allocation. The
    /// `TailName` that `entry` carries is a placeholder: it is replaced
    /// with the pointer to the copy.
    fn new(name: &str, entry: impl FnOnce(TailName) -> Entry) -> Owned {
        let (layout, offset) = Owned::layout(name.len());
        // SAFETY: `layout` has a non-zero size (it holds an `Entry`).
        let base = unsafe { std::alloc::alloc(layout) };
        let Some(base) = NonNull::new(base) else {
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: `offset + name.len()` is within the allocation (that is
        // how `layout` was made), and a fresh allocation overlaps nothing.
        let bytes = unsafe {
            let bytes = base.add(offset);
            std::ptr::copy_nonoverlapping(name.as_ptr(), bytes.as_ptr(), name.len());
            bytes
        };
        let copy = NonNull::slice_from_raw_parts(bytes, name.len()).as_ptr() as *mut str;
        // SAFETY: `copy` is `bytes` (not null) with a length; the bytes
        // were copied from a `str`, so they are UTF-8.
        let tail = TailName(unsafe { NonNull::new_unchecked(copy) });
        let at = base.cast::<Entry>();
        // SAFETY: `at` is the start of an allocation laid out for an
        // `Entry` first (aligned, large enough), not yet initialised.
        unsafe { at.write(entry(tail)) };
        Owned(at)
    }
}

impl Deref for Owned {
    type Target = Entry;
    #[inline]
    fn deref(&self) -> &Entry {
        // SAFETY: allocated by `new` and freed only by `drop`.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let (layout, _) = Owned::layout(self.name().len());
        // SAFETY: made by `new` with this layout (the name's length never
        // changes); the map drops it once, when the entry leaves the map
        // with no handle left (`users` 0), so nothing uses it after this.
        unsafe {
            std::ptr::drop_in_place(self.0.as_ptr());
            std::alloc::dealloc(self.0.as_ptr().cast::<u8>(), layout);
        }
    }
}

#[repr(align(128))] // keep shards on separate cache lines
struct Shard(Mutex<HashTable<Owned>>);

#[cfg(not(lockutils_loom))]
type Hasher = foldhash::fast::RandomState;
// A model must run the same way every time: no random seed.
#[cfg(lockutils_loom)]
type Hasher = foldhash::fast::FixedState;

pub(crate) struct Registry {
    hasher: Hasher,
    shards: Box<[Shard]>,
    born: Born,
}

impl Registry {
    fn new() -> Registry {
        Registry {
            hasher: Hasher::default(),
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(HashTable::new())))
                .collect(),
            born: Born::now(),
        }
    }
}

/// This process's registry. A forked child starts with an empty one: the
/// parent's entries are locked and waited for by threads the child does
/// not have, and its shard locks may be held by them; the child never
/// touches them again (see `hold`), and their memory is left as it is.
#[cfg(not(lockutils_loom))]
static REGISTRY: crate::fork::PerProcess<Registry> = crate::fork::PerProcess::lazy(Registry::new);

#[cfg(not(lockutils_loom))]
#[inline]
fn registry() -> &'static Registry {
    REGISTRY.get()
}

// A fresh registry for every execution of a model.
#[cfg(lockutils_loom)]
loom::lazy_static! {
    static ref REGISTRY: Registry = Registry::new();
}

#[cfg(lockutils_loom)]
fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[(hash >> (64 - SHARD_BITS)) as usize]
    }
}

/// Returns the entry for `full_name`, creating it as a `kind` lock if
/// nobody uses the name. `Err(kind)`: the name is in use as another kind.
pub(crate) fn get(full_name: &str, kind: Kind) -> Result<Handle, Kind> {
    let reg = registry();
    let hash = reg.hasher.hash_one(full_name);
    let mut map = reg.shard(hash).0.lock();
    if let Some(e) = map.find(hash, |e| e.name() == full_name) {
        if e.kind != kind {
            return Err(e.kind);
        }
        // Under the shard lock: the entry cannot be removed meanwhile. It
        // may be at 0 (its last user is about to remove it); that user
        // checks again under this lock and leaves it in.
        e.users.fetch_add(1, Ordering::Relaxed);
        return Ok(Handle(e.0));
    }
    let entry = Owned::new(full_name, |name| Entry {
        name,
        hash,
        kind,
        local: Local::new(kind),
        owner: AtomicUsize::new(0),
        owner_seq: AtomicU64::new(0),
        born: reg.born,
        files: std::sync::OnceLock::new(),
        metrics: Default::default(),
        users: sync::AtomicUsize::new(1),
    });
    let handle = Handle(entry.0);
    map.insert_unique(hash, entry, |e| e.hash);
    Ok(handle)
}

/// Runs `f` on the entry for `full_name` if it exists, without creating it.
pub(crate) fn peek<R>(full_name: &str, f: impl FnOnce(&Entry) -> R) -> Option<R> {
    let reg = registry();
    let hash = reg.hasher.hash_one(full_name);
    let map = reg.shard(hash).0.lock();
    map.find(hash, |e| e.name() == full_name).map(|e| f(e))
}

/// Runs `f` on every live entry (shard by shard).
pub(crate) fn for_each(mut f: impl FnMut(&Entry)) {
    for shard in registry().shards.iter() {
        for e in shard.0.lock().iter() {
            f(e);
        }
    }
}

/// Number of live entries (for tests and the memory benchmark).
pub fn live_entries() -> usize {
    registry().shards.iter().map(|s| s.0.lock().len()).sum()
}

/// External locks named at run time that this thread used last, kept alive
/// (with their open lock files) so that taking the same name again does
/// not reopen the file. Bounded, so dead names still go.
const RECENT: usize = 16;

thread_local! {
    static RECENT_ENTRIES: std::cell::RefCell<std::collections::VecDeque<Handle>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// Keeps `handle`'s entry alive among this thread's recent external locks.
pub(crate) fn keep_recent(handle: &Handle) {
    let _ = RECENT_ENTRIES.try_with(|r| {
        let Ok(mut r) = r.try_borrow_mut() else {
            return;
        };
        if let Some(i) = r.iter().position(|h| h.0 == handle.0) {
            // Most recent last.
            let h = r.remove(i);
            r.extend(h);
            return;
        }
        if r.len() == RECENT {
            let oldest = r.pop_front();
            drop(r);
            drop(oldest); // may take a shard lock: not under the RefCell
            return keep_recent_push(handle);
        }
        r.push_back(handle.clone());
    });
}

fn keep_recent_push(handle: &Handle) {
    let _ = RECENT_ENTRIES.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.push_back(handle.clone());
        }
    });
}

/// A counted reference to a registry entry (see `Entry::users`). The last
/// one dropped removes the entry from the registry.
pub(crate) struct Handle(NonNull<Entry>);

// SAFETY: a handle is a shared reference to an `Entry` that stays alive
// while the handle does (see `Deref`); `Entry` is `Send + Sync` (asserted
// below), so the reference may move to and be used from any thread.
unsafe impl Send for Handle {}
// SAFETY: as for `Send`: `&Handle` only gives out `&Entry`.
unsafe impl Sync for Handle {}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Entry>();
};

impl Handle {
    /// Gives up this handle without dropping it: its entry then lives as
    /// long as the process.
    pub(crate) fn leak(self) -> &'static Entry {
        let p = self.0;
        std::mem::forget(self);
        // SAFETY: the forgotten handle stays counted in `users`, so the
        // entry is never removed or freed.
        unsafe { p.as_ref() }
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        // A live handle keeps `users` above 0, so the entry cannot be
        // removed between this increment and the new handle's use.
        self.users.fetch_add(1, Ordering::Relaxed);
        Handle(self.0)
    }
}

impl Deref for Handle {
    type Target = Entry;
    #[inline]
    fn deref(&self) -> &Entry {
        // SAFETY: this handle is counted in `users`, and the entry is only
        // removed from the map (which owns it) under the shard lock when
        // `users` is 0; so it is alive while this handle is.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for Handle {
    #[inline]
    fn drop(&mut self) {
        let hash = self.hash;
        // Release: our uses of the entry happen before whoever frees it.
        if self.users.fetch_sub(1, Ordering::Release) == 1 {
            last_user_left(self.0, hash);
        }
    }
}

/// After `users` fell to 0: removes the entry unless someone took it again
/// meanwhile. `entry` may be freed already (another last user removed it):
/// it is only compared, and dereferenced once found in the map, which
/// proves it alive. An entry found at the same address with `users` 0 is
/// one about to be removed anyway, so removing it here is the same.
#[cold]
#[inline(never)]
fn last_user_left(entry: NonNull<Entry>, hash: u64) {
    // In a forked child, an inherited handle's entry is not in this
    // process's registry: it is not found, and stays as it is.
    let mut map = registry().shard(hash).0.lock();
    if let Ok(slot) = map.find_entry(hash, |e| e.0 == entry)
        // Acquire: every other user's release happens before the free.
        && slot.get().users.load(Ordering::Acquire) == 0
    {
        let removed = slot.remove().0;
        drop(removed);
    }
    drop(map);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_entry_and_dead_names_go() {
        let a = get("registry-test-a", Kind::MUTEX).unwrap();
        let b = get("registry-test-a", Kind::MUTEX).unwrap();
        assert!(std::ptr::eq(&*a, &*b));
        let fair = Kind {
            fair: true,
            permits: None,
            flock: false,
        };
        assert_eq!(get("registry-test-a", fair).err(), Some(Kind::MUTEX));
        let c = get("registry-test-b", Kind::MUTEX).unwrap();
        assert!(!std::ptr::eq(&*a, &*c));
        drop((a, b, c));
        let reg = registry();
        for n in ["registry-test-a", "registry-test-b"] {
            let h = reg.hasher.hash_one(n);
            assert!(reg.shard(h).0.lock().find(h, |e| e.name() == n).is_none());
        }
    }

    #[test]
    fn only_a_use_of_lock_files_makes_the_lock_file_state() {
        let h = get("registry-test-lazy", Kind::MUTEX).unwrap();
        assert!(h.files_if_made().is_none(), "made for an in-process use");
        let made: *const EntryFiles = h.files();
        assert!(std::ptr::eq(h.files_if_made().unwrap(), made));
        assert!(std::ptr::eq(h.files(), made), "made twice");
    }

    #[test]
    fn concurrent_get_and_drop_keeps_no_dead_entries() {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let h =
                            get(&format!("registry-churn-{}", (i + t) % 7), Kind::MUTEX).unwrap();
                        assert_eq!(h.name(), format!("registry-churn-{}", (i + t) % 7));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let reg = registry();
        for i in 0..7 {
            let n = format!("registry-churn-{i}");
            let h = reg.hasher.hash_one(n.as_str());
            assert!(
                reg.shard(h).0.lock().find(h, |e| e.name() == n).is_none(),
                "{n} stayed"
            );
        }
    }
}

/// Model check (`RUSTFLAGS="--cfg lockutils_loom"`) of the get-versus-last-drop race.
#[cfg(all(test, lockutils_loom))]
mod loom_tests {
    use super::*;

    /// While `h` is alive, the registry hands out `h`'s entry for its name
    /// and no other.
    fn is_the_live_entry(h: &Handle) -> bool {
        peek(h.name(), |e| std::ptr::eq(e, &**h)).unwrap_or(false)
    }

    /// A handle dropped as the last one removes its entry under the shard
    /// lock while other threads get the same name: they either share the old
    /// entry or make a new one, never get a removed one, and nothing stays.
    #[test]
    fn loom_registry_get_versus_last_drop() {
        crate::local::tests::model(|| {
            let first = get("loom-registry", Kind::MUTEX).unwrap();
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    loom::thread::spawn(|| {
                        let h = get("loom-registry", Kind::MUTEX).unwrap();
                        assert!(is_the_live_entry(&h), "a removed entry was handed out");
                        drop(h);
                    })
                })
                .collect();
            // The first handle's drop races with the others' gets and drops.
            assert!(is_the_live_entry(&first));
            drop(first);
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(live_entries(), 0, "an entry nobody holds stayed");
        });
    }
}
