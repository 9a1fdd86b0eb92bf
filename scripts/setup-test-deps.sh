#!/usr/bin/env bash
# Installs what the tests and benchmarks need beyond the Rust toolchain, from
# Debian's packages: minisign (interop tests), nginx (a static release host),
# zstd, GNU time (peak RSS), util-linux (unshare, flock), curl, faketime (clock
# tests), openssl (certificate validity in the doctor tests; the benchmarks' pipeline); for the package
# tests dpkg-dev (dpkg-deb, dpkg-shlibdeps), systemd (systemd-analyze) and
# man-db (the unit's man: link); chromium (the fleet page test drives it
# headless over the DevTools protocol); and cargo-deb from crates.io. Idempotent; run
# as root or with sudo. Every apt-get waits for the dpkg lock (another apt run
# on a shared machine) instead of failing.
set -euo pipefail

need=()
command -v minisign >/dev/null || need+=(minisign)
command -v zstd >/dev/null || need+=(zstd)
command -v unshare >/dev/null || need+=(util-linux)
command -v flock >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v faketime >/dev/null || need+=(faketime)
command -v openssl >/dev/null || need+=(openssl)
[ -x /usr/bin/time ] || need+=(time)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v man >/dev/null || need+=(man-db)
command -v chromium >/dev/null || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  apt=(apt-get -o DPkg::Lock::Timeout=600 -qq)
  echo "setup-test-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo "${apt[@]}" update
  $sudo "${apt[@]}" install -y --no-install-recommends "${need[@]}" >/dev/null
fi

# The package tests build the .deb with cargo-deb (scripts/package.sh).
if ! cargo deb --version >/dev/null 2>&1; then
  echo "setup-test-deps: installing cargo-deb" >&2
  cargo install --locked --quiet cargo-deb
fi
