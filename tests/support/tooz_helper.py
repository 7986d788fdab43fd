"""The Python side of tests/tooz.rs: OpenStack's tooz, from PyPI, locking
names on a real server. Talks to the Rust test like the other helpers
(see _common.py): reports are stdout lines starting with MARK, orders are
stdin lines. Names are passed to tooz as bytes (name.encode()), as
OpenStack services do.

    tooz_helper.py hold URL NAME          holds tooz's lock until "release"
                                          (or the end of its input)
    tooz_helper.py try URL NAME           one get_lock(name).acquire(blocking=False)
    tooz_helper.py count URL NAME COUNTER N   after "ready", waits for "go",
                                          then N increments, each under the lock
"""

import os
import sys
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import await_order, report  # noqa: E402

from tooz import coordination  # noqa: E402

# tooz marks its PostgreSQL driver deprecated; the warning is noise here.
warnings.simplefilter("ignore", DeprecationWarning)


def coordinator(url):
    member = f"lockutils-test-{os.getpid()}".encode()
    coord = coordination.get_coordinator(url, member)
    # The heartbeat thread renews held Redis keys, as in a real service.
    coord.start(start_heart=True)
    return coord


def hold(url, name):
    coord = coordinator(url)
    lock = coord.get_lock(name.encode())
    if not lock.acquire():
        raise SystemExit("blocking acquire returned False")
    report("locked")
    order = sys.stdin.readline().strip()
    if order not in ("release", ""):
        raise SystemExit(f"unexpected order {order!r}")
    lock.release()
    report("released")
    coord.stop()


def try_(url, name):
    coord = coordinator(url)
    lock = coord.get_lock(name.encode())
    if lock.acquire(blocking=False):
        lock.release()
        report("ok")
    else:
        report("busy")
    coord.stop()


def increment(path):
    """Adds one to the counter file the Rust side keeps (zero-padded
    decimal written over the old one, as support::increment does)."""
    with open(path, "a+") as f:
        f.seek(0)
        text = f.read().strip()
    value = int(text) + 1 if text else 1
    with open(path, "r+") as f:
        f.write(f"{value:020}\n")
    return value


def count(url, name, counter, n):
    coord = coordinator(url)
    lock = coord.get_lock(name.encode())
    report("ready")
    await_order("go")
    for _ in range(int(n)):
        if not lock.acquire():
            raise SystemExit("blocking acquire returned False")
        try:
            increment(counter)
        finally:
            lock.release()
    report("done")
    coord.stop()


COMMANDS = {"hold": hold, "try": try_, "count": count}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
