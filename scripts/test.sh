#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/test-deps.sh),
# then runs every test of the workspace, lock-server backends included.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test external`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
exec cargo test --workspace --all-features "$@"
