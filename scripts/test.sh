#!/usr/bin/env bash
# The test command of the README: installs test dependencies, then runs the
# whole suite (unit tests of every crate and the end-to-end tests of the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-deps.sh
# The end-to-end tests run the example payload, built next to bankswap.
cargo build --workspace --locked
cargo test --workspace --locked "$@"
