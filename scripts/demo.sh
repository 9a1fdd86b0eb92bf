#!/usr/bin/env bash
# The main job of the README: builds bankswap, then runs `bankswap demo`:
# keys, a private CA, a console, an agent serving hello-payload (built into
# the binary as `bankswap hello-payload`) on a socket it holds, a live update
# while a client keeps asking, a rollback and the fleet view, narrated, on
# loopback. It needs only the binary, and cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --workspace --quiet
exec target/release/bankswap demo
