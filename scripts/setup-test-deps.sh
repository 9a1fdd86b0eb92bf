#!/usr/bin/env bash
# Installs what the tests and benchmarks need beyond the Rust toolchain, from
# Debian's packages: minisign (interop tests), nginx (a static release host),
# zstd, GNU time (peak RSS), util-linux (unshare, flock), curl, faketime (a
# clock before 1970 for tests/clock.rs). Idempotent;
# run as root or with sudo.
set -euo pipefail

need=()
command -v minisign >/dev/null || need+=(minisign)
command -v zstd >/dev/null || need+=(zstd)
command -v unshare >/dev/null || need+=(util-linux)
command -v flock >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v faketime >/dev/null || need+=(faketime)
[ -x /usr/bin/time ] || need+=(time)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
echo "setup-test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
