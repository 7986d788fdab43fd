"""What the Python helpers share: how they talk to the Rust test.

Reports are stdout lines starting with MARK (the Rust side's
`support::MARK`), orders are stdin lines. The helpers import this module
from their own directory (Python puts a script's directory first on
sys.path), so they run from any working directory.
"""

import sys

MARK = "@@lockutils:"


def report(msg):
    sys.stdout.write(MARK + msg + "\n")
    sys.stdout.flush()


def await_order(want):
    got = sys.stdin.readline().rstrip("\n")
    if got != want:
        raise SystemExit(f"unexpected order {got!r}, expected {want!r}")
