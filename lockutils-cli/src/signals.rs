//! Signals: SIGINT, SIGTERM, SIGHUP and SIGQUIT end the wait for a lock,
//! and are forwarded to the command once it runs.
//!
//! The handler only touches atomics and calls `kill(2)`, both
//! async-signal-safe. The thread that waits for the lock blocks these
//! signals as it starts, so the handler runs on the main thread; one that
//! lands on the helper thread before that only records itself as pending
//! (no command runs yet), which the main thread then sees.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signals we catch.
pub const CAUGHT: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The running command's PID, or 0 when none runs.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A signal that arrived while no command ran, or 0.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let child = CHILD.load(Ordering::SeqCst);
    if child <= 0 {
        PENDING.store(sig, Ordering::SeqCst);
        return;
    }
    // si_code > 0 means the kernel sent it: for these signals, the terminal
    // (Ctrl-C, Ctrl-\, hangup), which signals the whole foreground process
    // group, the command included. Forwarding would deliver it twice (sudo
    // makes the same distinction). kill(1) and kill(2) give SI_USER (0).
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
    let from_kernel = !info.is_null() && unsafe { (*info).si_code } > 0;
    if !from_kernel {
        let saved = errno::get();
        // SAFETY: kill is async-signal-safe; the PID is our unreaped child.
        unsafe { libc::kill(child, sig) };
        errno::set(saved);
    }
}

/// Installs the handler for [`CAUGHT`].
pub fn install() {
    for sig in CAUGHT {
        // SAFETY: a zeroed sigaction is valid; we fill in handler, flags, mask.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                on_signal;
            action.sa_sigaction = handler as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Blocks [`CAUGHT`] in the calling thread (and threads it starts), so
/// they reach the main thread only.
pub fn block_in_this_thread() {
    // SAFETY: plain signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in CAUGHT {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The signal that arrived while no command ran, if any (and forgets it).
pub fn take_pending() -> Option<i32> {
    match PENDING.swap(0, Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// From now on, forward signals to `pid`; one that arrived in between is
/// forwarded now.
pub fn forward_to(pid: i32) {
    CHILD.store(pid, Ordering::SeqCst);
    if let Some(sig) = take_pending() {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Stops forwarding (the command was reaped: its PID may be reused).
pub fn stop_forwarding() {
    CHILD.store(0, Ordering::SeqCst);
}

/// A signal's name, for messages.
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        n => format!("signal {n}"),
    }
}

/// Saving and restoring `errno` around the handler's `kill`.
mod errno {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn location() -> *mut libc::c_int {
        // SAFETY: returns this thread's errno slot.
        unsafe { libc::__errno_location() }
    }

    #[cfg(any(target_vendor = "apple", target_os = "freebsd"))]
    fn location() -> *mut libc::c_int {
        // SAFETY: returns this thread's errno slot.
        unsafe { libc::__error() }
    }

    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_vendor = "apple",
        target_os = "freebsd"
    )))]
    fn location() -> *mut libc::c_int {
        std::ptr::null_mut()
    }

    pub(super) fn get() -> libc::c_int {
        let p = location();
        // SAFETY: p is this thread's errno, or null.
        if p.is_null() { 0 } else { unsafe { *p } }
    }

    pub(super) fn set(value: libc::c_int) {
        let p = location();
        if !p.is_null() {
            // SAFETY: p is this thread's errno.
            unsafe { *p = value };
        }
    }
}
