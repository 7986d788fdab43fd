//! Models of a locked file handed from its holder to a queued waiter with
//! the in-process lock ([`RawLock::handoff`]), as `hold` and
//! `external::file` do it: the holder leaves the file in a slot only the
//! lock's holder touches, then hands the lock over; if nobody was queued it
//! takes the file back and unlocks both. Whoever next holds the lock after
//! a wait takes what is in the slot, or locks the file itself.
//!
//! Checked in every interleaving: the file has one owner at a time (a
//! waiter that was not granted the lock holds nothing); `loom`'s
//! `UnsafeCell` fails the model if two threads touch the slot at once; and
//! however the waiter ends (a thread, a task polled to the end, a task
//! dropped after the grant), the file is unlocked and the lock free at the
//! end, with nothing left in the slot.

use loom::cell::UnsafeCell;
use loom::thread;

use super::{Flag, model, poll_once, shared};
use crate::local::raw::{RawLock, WRITER};
use crate::local::sync::{AtomicUsize, Ordering};
use crate::spec::Mode;

/// The lock, its handoff slot, and who owns "the file".
struct Shared {
    lock: RawLock,
    slot: UnsafeCell<Option<u32>>,
    /// Owners of the file's lock right now (a holder, or the slot).
    owners: AtomicUsize,
    /// Times the file was unlocked for real.
    unlocked: AtomicUsize,
}

// SAFETY: `slot` is only touched by the holder of `lock` in the writer's
// mode; loom's `UnsafeCell` fails the model if that is ever not so.
unsafe impl Sync for Shared {}

/// The file, as a value: whoever has it owns the file's lock.
struct File;

impl Shared {
    fn new() -> Shared {
        Shared {
            lock: RawLock::new(WRITER),
            slot: UnsafeCell::new(None),
            owners: AtomicUsize::new(0),
            unlocked: AtomicUsize::new(0),
        }
    }

    /// Locks the file in the kernel: nobody else may own it.
    fn lock_file(&self) -> File {
        assert_eq!(
            self.owners.fetch_add(1, Ordering::SeqCst),
            0,
            "the file has two owners"
        );
        File
    }

    /// After taking the lock by waiting: what was handed over, else the
    /// file locked anew (`Hold::waited`, then the external phase).
    fn after_wait(&self) -> File {
        // SAFETY: the writer's mode is held (our caller waited for it).
        let handed = self.slot.with_mut(|s| unsafe { (*s).take() });
        match handed {
            Some(_) => File,
            None => self.lock_file(),
        }
    }

    /// A holder of the lock and the file releases (`Hold::drop`).
    fn release(&self, _file: File) {
        // SAFETY: the writer's mode is held.
        self.slot.with_mut(|s| unsafe { *s = Some(0) });
        // SAFETY: held in the writer's mode.
        if unsafe { self.lock.handoff() } {
            return;
        }
        // SAFETY: still the writer (nobody was handed the lock).
        let back = self.slot.with_mut(|s| unsafe { (*s).take() });
        assert!(back.is_some(), "the file left the slot without a handoff");
        self.owners.fetch_sub(1, Ordering::SeqCst);
        self.unlocked.fetch_add(1, Ordering::SeqCst);
        // SAFETY: held in the writer's mode; released once, here.
        unsafe { self.lock.unlock(Mode::Exclusive) };
    }

    /// The end of every model: all released, nothing left behind.
    fn check_end(&self) {
        assert_eq!(
            self.owners.load(Ordering::SeqCst),
            0,
            "the file stayed locked"
        );
        assert!(self.lock.try_lock(Mode::Exclusive), "the lock stayed taken");
        // SAFETY: the writer's mode is held (taken just above).
        assert!(
            self.slot.with(|s| unsafe { (*s).is_none() }),
            "a file was left in the slot"
        );
        // SAFETY: taken just above.
        unsafe { self.lock.unlock(Mode::Exclusive) };
    }
}

/// A thread queued for the lock and a newcomer trying it: the queued
/// thread gets the file with the lock, or takes both itself; the newcomer
/// never gets a lock that is on its way to the queued thread.
#[test]
fn loom_a_file_handed_to_a_queued_thread_has_one_owner() {
    model(|| {
        let s = shared(Shared::new());
        assert!(s.lock.try_lock(Mode::Exclusive));
        let file = s.lock_file();
        let waiter = {
            let s = s.clone();
            thread::spawn(move || {
                assert!(s.lock.lock_until(Mode::Exclusive, None, false));
                let f = s.after_wait();
                s.release(f);
            })
        };
        let newcomer = {
            let s = s.clone();
            thread::spawn(move || {
                if s.lock.try_lock(Mode::Exclusive) {
                    let f = s.lock_file();
                    s.release(f);
                }
            })
        };
        s.release(file);
        waiter.join().unwrap();
        newcomer.join().unwrap();
        s.check_end();
    });
}

/// A task queued for the lock is handed it (and the file) while nobody
/// polls it, then dropped: it learns it holds both (`cancel`) and releases
/// them, as `acquire::InProcessWait` does; or it was not handed anything,
/// and holds nothing.
#[test]
fn loom_a_task_handed_the_file_and_dropped_releases_it() {
    model(|| {
        let s = shared(Shared::new());
        assert!(s.lock.try_lock(Mode::Exclusive));
        let file = s.lock_file();
        let task = {
            let s = s.clone();
            thread::spawn(move || {
                let flag = Flag::new();
                let mut fut = s.lock.lock_async(Mode::Exclusive, None);
                if poll_once(&mut fut, &flag).is_ready() {
                    let f = s.after_wait();
                    s.release(f);
                    return;
                }
                // Dropped without another poll, granted or not.
                if fut.cancel() {
                    let f = s.after_wait();
                    s.release(f);
                }
            })
        };
        s.release(file);
        task.join().unwrap();
        s.check_end();
    });
}

/// The same task, polled until it completes: it takes the file that was
/// handed to it, or locks it itself after a plain release.
#[test]
fn loom_a_task_handed_the_file_takes_it_when_polled() {
    model(|| {
        let s = shared(Shared::new());
        assert!(s.lock.try_lock(Mode::Exclusive));
        let file = s.lock_file();
        let task = {
            let s = s.clone();
            thread::spawn(move || {
                let flag = Flag::new();
                let mut fut = s.lock.lock_async(Mode::Exclusive, None);
                loop {
                    flag.woken.store(false, Ordering::SeqCst);
                    if poll_once(&mut fut, &flag).is_ready() {
                        break;
                    }
                    flag.wait();
                }
                drop(fut);
                let f = s.after_wait();
                s.release(f);
            })
        };
        s.release(file);
        task.join().unwrap();
        s.check_end();
    });
}
