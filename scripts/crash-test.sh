#!/usr/bin/env bash
# Kills `bankswap apply` with SIGKILL at 200 random points (seeded) and checks
# that every root restarts into one whole version. Usage: scripts/crash-test.sh [TRIALS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export BANKSWAP_CRASH_TRIALS="${1:-200}"
export BANKSWAP_CRASH_SEED="${2:-0x5eedba4c}"
cargo test --locked --test main crash::sigkill_during_apply -- --nocapture
