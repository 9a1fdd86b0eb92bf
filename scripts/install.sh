#!/usr/bin/env bash
# Installs bankswap as a systemd service on this machine:
#   /usr/local/bin/bankswap, /etc/systemd/system/bankswap.service,
#   /etc/bankswap/ (config; agent.toml.example), /var/lib/bankswap/ (the data root).
# The Debian package (scripts/package.sh) is the way in on Debian and Ubuntu.
# Usage: scripts/install.sh [--prefix DIR] [--binary PATH]
#   --prefix DIR   write everything under DIR instead of / (for packaging or a look first)
#   --binary PATH  the bankswap binary to install (default: target/release/bankswap, built if missing)
# It never overwrites an existing agent.toml and does not start the service.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=""
binary="target/release/bankswap"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ ! -x "$binary" ]; then
  cargo build --release --locked --quiet
fi
install -d -m 0755 "$prefix/usr/local/bin" "$prefix/etc/systemd/system"
install -d -m 0750 "$prefix/etc/bankswap"
install -d -m 0700 "$prefix/var/lib/bankswap"
install -m 0755 "$binary" "$prefix/usr/local/bin/bankswap"
# The same unit and example config as the Debian package, with this script's binary path.
sed 's|/usr/bin/bankswap|/usr/local/bin/bankswap|g' packaging/bankswap.service \
  > "$prefix/etc/systemd/system/bankswap.service"
chmod 0644 "$prefix/etc/systemd/system/bankswap.service"
install -m 0644 packaging/agent.toml.example "$prefix/etc/bankswap/agent.toml.example"
echo "installed bankswap under ${prefix:-/}"
if [ ! -e "$prefix/etc/bankswap/agent.toml" ]; then
  echo "next: write /etc/bankswap/agent.toml (see agent.toml.example), copy release.pub, then:"
  echo "  systemctl daemon-reload && systemctl enable --now bankswap"
fi
