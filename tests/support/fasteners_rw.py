"""fasteners' InterProcessReaderWriterLock, for tests/rwlock.rs.

Talks to the Rust test like its Rust children do (see _common.py): reports
are stdout lines starting with MARK, orders are stdin lines.

    fasteners_rw.py hold read|write PATH   take the lock, report "locked",
                                           hold until "release", report
                                           "released"
    fasteners_rw.py try PATH               one non-blocking read attempt and
                                           one non-blocking write attempt,
                                           each on its own lock object;
                                           report "read=ok|busy write=ok|busy"

fasteners takes fcntl.lockf() locks: LOCK_SH for readers, LOCK_EX for
writers, on the whole file.
"""

import os
import sys

import fasteners

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import await_order, report  # noqa: E402


def hold(mode, path):
    rw = fasteners.InterProcessReaderWriterLock(path)
    if mode == "read":
        rw.acquire_read_lock()
    elif mode == "write":
        rw.acquire_write_lock()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    report("locked")
    await_order("release")
    if mode == "read":
        rw.release_read_lock()
    else:
        rw.release_write_lock()
    report("released")


def attempt(path, exclusive):
    # A fresh object per attempt, released at once: a POSIX process cannot
    # conflict with itself, so each attempt stands alone.
    rw = fasteners.InterProcessReaderWriterLock(path)
    if exclusive:
        got = rw.acquire_write_lock(blocking=False)
        if got:
            rw.release_write_lock()
    else:
        got = rw.acquire_read_lock(blocking=False)
        if got:
            rw.release_read_lock()
    return "ok" if got else "busy"


def try_(path):
    read = attempt(path, exclusive=False)
    write = attempt(path, exclusive=True)
    report(f"read={read} write={write}")


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "hold":
        hold(*args)
    elif command == "try":
        try_(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv)
