"""The Python side of tests/interop.rs: oslo.concurrency and fasteners.

Talks to the Rust test like its Rust children do (see _common.py): reports
are stdout lines starting with MARK, orders are stdin lines.

    oslo_helper.py hold NAME PREFIX DIR
    oslo_helper.py try NAME PREFIX DIR
    oslo_helper.py count NAME PREFIX DIR COUNTER N   (after "ready", waits for "go")
    oslo_helper.py filename NAME PREFIX DIR
"""

import os
import sys

import fasteners
from oslo_concurrency import lockutils

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import await_order, report  # noqa: E402


def lock(name, prefix, lock_dir, **kw):
    return lockutils.lock(name, prefix, external=True, lock_path=lock_dir, **kw)


def hold(name, prefix, lock_dir):
    """Holds oslo's external lock until ordered to release."""
    with lock(name, prefix, lock_dir):
        report("locked")
        await_order("release")
    report("released")


def try_(name, prefix, lock_dir):
    """One non-blocking attempt through oslo, one through fasteners."""
    try:
        with lock(name, prefix, lock_dir, blocking=False):
            oslo = "ok"
    except lockutils.AcquireLockFailedException:
        oslo = "wouldblock"
    path = lockutils._get_lock_path(name, prefix, lock_dir)
    ipl = fasteners.InterProcessLock(path)
    if ipl.acquire(blocking=False):
        ipl.release()
        plain = "ok"
    else:
        plain = "wouldblock"
    report(f"oslo={oslo} fasteners={plain}")


def count(name, prefix, lock_dir, counter, n):
    """Increments the counter file n times, each under oslo's lock, once
    ordered to "go"; reports the lowest and highest values it wrote."""
    report("ready")
    await_order("go")
    written = []
    for _ in range(int(n)):
        with lock(name, prefix, lock_dir, do_log=False):
            try:
                with open(counter) as f:
                    text = f.read().strip()
            except FileNotFoundError:
                text = ""
            value = int(text) + 1 if text else 1
            with open(counter, "w") as f:
                f.write(f"{value}\n")
        written.append(value)
    report(f"done {n}")
    report(f"span {min(written)} {max(written)}")


def filename(name, prefix, lock_dir):
    """Takes the lock in an empty directory and reports the file it made."""
    with lock(name, prefix, lock_dir):
        files = os.listdir(lock_dir)
    if len(files) != 1:
        raise SystemExit(f"expected one lock file, found {files!r}")
    report("file " + files[0])


COMMANDS = {"hold": hold, "try": try_, "count": count, "filename": filename}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
