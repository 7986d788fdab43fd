#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/test-deps.sh),
# then runs every test of the workspace, lock-server backends included,
# and ends with one line totalling all test binaries.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test external`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh

# A hung test fails the run (with what it printed) instead of holding CI
# until its own time limit: each cargo run has at most this many seconds.
limit=${LOCKUTILS_TEST_LIMIT:-1800}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
timeout -k 30 "$limit" cargo test --workspace --all-features --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if (($# == 0)); then
    # The classic per-process fcntl fallback (FreeBSD, macOS, Linux without
    # OFD locks), forced on Linux: the multi-process suites again.
    echo "== the same multi-process tests on classic fcntl locks (LOCKUTILS_CLASSIC_LOCKS=1)"
    LOCKUTILS_CLASSIC_LOCKS=1 timeout -k 30 "$limit" cargo test --all-features --no-fail-fast \
        --test multiprocess --test semaphore --test rwlock --test external \
        --test interop --test edges --test fair --test cohort 2>&1 | tee -a "$log"
    classic=${PIPESTATUS[0]}
    ((status != 0)) || status=$classic
fi
set -e
((status != 124 && status != 137)) || echo "== a test run passed ${limit} s and was stopped (a hung test?)"
totals=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$log")
echo
echo "tests: $totals"
exit "$status"
