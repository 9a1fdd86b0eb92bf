#!/usr/bin/env bash
# Installs bankswap as a systemd service on this machine:
#   /usr/local/bin/bankswap, /etc/systemd/system/bankswap.service,
#   /etc/bankswap/ (config; agent.toml.example), /var/lib/bankswap/ (the data root).
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
cat > "$prefix/etc/systemd/system/bankswap.service" <<'UNIT'
[Unit]
Description=bankswap agent: runs the payload from an A/B bank and keeps it updated
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/bankswap run --config /etc/bankswap/agent.toml
# The agent stops its payload itself on SIGTERM (payload.stop_timeout, 30 s by
# default); systemd kills whatever is left only after that.
KillMode=mixed
TimeoutStopSec=90
Restart=always
RestartSec=2
Environment=BANKSWAP_LOG=info

[Install]
WantedBy=multi-user.target
UNIT
cat > "$prefix/etc/bankswap/agent.toml.example" <<'CONF'
console = "https://console.example.com"
channel = "stable"
root = "/var/lib/bankswap"
trusted_keys = ["/etc/bankswap/release.pub"]
poll_interval = "5m"
max_delay = "15m"

[health]
grace = "30s"
CONF
echo "installed bankswap under ${prefix:-/}"
if [ ! -e "$prefix/etc/bankswap/agent.toml" ]; then
  echo "next: write /etc/bankswap/agent.toml (see agent.toml.example), copy release.pub, then:"
  echo "  systemctl daemon-reload && systemctl enable --now bankswap"
fi
