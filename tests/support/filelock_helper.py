"""py-filelock (`filelock.FileLock`, flock(2) on Unix), for tests/flock.rs.

Talks to the Rust test like its Rust children do (see _common.py): reports
are stdout lines starting with MARK, orders are stdin lines.

    filelock_helper.py hold PATH   take the lock, report "locked", hold
                                   until "release", report "released"
    filelock_helper.py try PATH    one attempt without waiting
                                   (timeout=0): report "ok" or "busy"
"""

import os
import sys

import filelock

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import await_order, report  # noqa: E402


def main():
    what, path = sys.argv[1], sys.argv[2]
    lock = filelock.FileLock(path)
    if what == "hold":
        lock.acquire()
        report("locked")
        await_order("release")
        lock.release()
        report("released")
    elif what == "try":
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            report("busy")
        else:
            lock.release()
            report("ok")
    else:
        raise SystemExit(f"unknown command {what!r}")


if __name__ == "__main__":
    main()
