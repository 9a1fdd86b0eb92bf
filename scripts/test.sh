#!/usr/bin/env bash
# The test command of the README: installs test dependencies, then runs the
# whole suite (unit tests of every crate and the end-to-end tests of the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-deps.sh
# The end-to-end tests run the example payload, built next to bankswap.
cargo build --workspace --locked
# Two tests per core: an end-to-end test mostly waits on the real binary's processes
# (with one per core the suite kept 0.87 of 2 cores busy). RUST_TEST_THREADS overrides.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$(($(nproc) * 2))}"
cargo test --workspace --locked "$@"
