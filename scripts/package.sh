#!/usr/bin/env bash
# Builds the Debian package: target/debian/bankswap_VERSION-1_ARCH.deb.
# Usage: scripts/package.sh [--profile release|dev] [--no-build] [--output DIR] [-- CARGO-DEB ARGS]
#   --profile P   the cargo profile whose binary is packaged (default: release)
#   --no-build    package the binary already in target/P (CI: the one the tests built)
#   --output DIR  where the .deb goes (default: target/debian)
# Installs cargo-deb from crates.io if it is missing (cargo install --locked cargo-deb).
# Man pages and completions come from the binary itself (`bankswap generate`).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="release"
build=1
output="target/debian"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --output) output="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: installing cargo-deb" >&2
  cargo install --locked --quiet cargo-deb
fi
target_dir="${CARGO_TARGET_DIR:-target}"
profile_dir="$profile"
[ "$profile" = dev ] && profile_dir=debug
if [ "$build" = 1 ]; then
  cargo build --locked --profile "$profile" --bin bankswap
fi
binary="$target_dir/$profile_dir/bankswap"
[ -x "$binary" ] || { echo "error: $binary: not built (drop --no-build)" >&2; exit 1; }
assets="target/package-assets"
rm -rf "$assets"
"$binary" generate man "$assets/man"
gzip -9n "$assets"/man/*.1
"$binary" generate completions "$assets/completions"
mkdir -p "$output"
cargo deb --no-build --locked --profile "$profile" --output "$output" "${@}"
