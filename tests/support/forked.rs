//! Forking a test process itself, without `exec`: the child runs a
//! closure and ends with `_exit`; its exit status tells the parent how it
//! went. It reports along the way like any child (`support::report`, on
//! the standard output it shares with the parent) and takes orders from
//! the shared standard input while the parent waits for it.
//!
//! Fork only from a child test process (`support::child`, one test
//! thread): its other threads, lockutils' own, hold nothing the forked
//! child needs but the allocator, which survives a fork.

/// Runs `child` in a forked child of this process and waits for it to
/// exit: its exit code (`child`'s result, 101 if it panicked, 128 + N if
/// signal N killed it).
pub fn in_forked_child(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child runs `child` and `_exit`s; see the module docs for
    // what the process may have running when this is called.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the forked child without running the parent's
        // atexit handlers (which stop the test servers) or libtest's exit.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for the child forked above.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "waitpid: {e}");
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}
