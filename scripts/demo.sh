#!/usr/bin/env bash
# The main job of the README: builds bankswap and runs the whole story,
# narrated, in a temporary folder that is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
BIN="$PWD/target/release/bankswap"
if "$BIN" demo --help >/dev/null 2>&1; then
  exec "$BIN" demo
fi

W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

say "1. An admin makes a signing key (minisign format)"
show "$BIN" keygen --out "$W/release"

say "2. Two versions of a payload service"
for v in 1.0.0 1.1.0; do
  mkdir -p "$W/payload-$v/bin"
  printf '#!/bin/sh\necho "hello from %s"\nexec sleep 1000\n' "$v" > "$W/payload-$v/bin/app"
  chmod +x "$W/payload-$v/bin/app"
  echo "config shipped with $v" > "$W/payload-$v/README"
done
ls -R "$W/payload-1.0.0"

say "3. Publish 1.0.0 into a console data folder (packed, hashed, signed)"
show "$BIN" publish --key "$W/release.key" --payload "$W/payload-1.0.0" --version 1.0.0 --entrypoint "bin/app --serve" --to "$W/console"

say "4. A machine installs it offline from that folder (a USB stick would do)"
show "$BIN" init --root "$W/root" --bundle "$W/console" --trust "$W/release.pub"
show "$BIN" status --root "$W/root"

say "5. Publish 1.1.0 and apply it: staged into the idle bank, verified, swapped atomically"
show "$BIN" publish --key "$W/release.key" --payload "$W/payload-1.1.0" --version 1.1.0 --entrypoint "bin/app --serve" --to "$W/console"
show "$BIN" apply --root "$W/root" --bundle "$W/console" --trust "$W/release.pub"
show "$BIN" status --root "$W/root" --json

say "6. A tampered artifact is refused, and nothing changes"
cp -a "$W/console" "$W/evil"
"$BIN" publish --key "$W/release.key" --payload "$W/payload-1.1.0" --version 1.2.0 --entrypoint "bin/app" --to "$W/evil" >/dev/null
ART2=$(python3 -c "import json;print(json.load(open('$W/evil/v1/channels/stable/release.json'))['artifact']['path'])")
printf 'X' | dd of="$W/evil/v1/$ART2" bs=1 seek=100 conv=notrunc status=none
show "$BIN" apply --root "$W/root" --bundle "$W/evil" --trust "$W/release.pub" || true
show "$BIN" status --root "$W/root"

say "7. Roll back: instant, no network, the previous version was kept"
show "$BIN" rollback --root "$W/root"
show "$BIN" status --root "$W/root"
say "Done; the temporary folder is removed."
