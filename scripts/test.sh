#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/test-deps.sh),
# then runs every test of the workspace, lock-server backends included,
# and ends with one line totalling all test binaries.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test external`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-features --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
totals=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed", p, f }' "$log")
echo
echo "tests: $totals"
exit "$status"
