#!/usr/bin/env bash
# Benchmark: a delta update (issue 14) against the full download, side by side
# in one run, on loopback HTTPS and on a shaped link.
#
# What it measures. A deterministic payload (default 256 MiB in 2000 files,
# lib.sh's generator) is published as 1.0.0, and again as 2.0.0 with CHANGED
# (default 100) files rewritten (same sizes, new bytes), into a folder nginx
# serves over TLS (a plain static host: `publish --to` writes the artifact,
# the file index and the objects). For each link (loopback, then an htb class
# of SHAPE_MBIT Mbit/s on `lo` matching nginx's port, when root and `tc` are
# there) it times:
#   delta     an agent (`bankswap run`) that installed 1.0.0 stages 2.0.0 with
#             delta updates on (default `[update] delta_max_ratio`): from its
#             log line `release scheduled` to `staged and verified`;
#   full      the same with `delta_max_ratio = 0` (the full artifact);
#   openssl   `curl | tee >(openssl dgst -sha256) | zstd -d | tar -x; sync`
#             of the same artifact from the same nginx, into a fresh folder.
# Bytes on the wire are nginx's `$body_bytes_sent` of every request under
# /v1/artifacts/ and /v1/delta/ while the update ran (the manifest and its
# signature are the same few KiB for all). Only the 2.0.0 update is shaped;
# the 1.0.0 install before it is not timed.
#
# How to read it. One line per (link, way): bytes, seconds, and the ratios of
# the full download's bytes and time to this way's (> 1: this way is better).
# Target (the issue): delta >= 10x faster than full on the 100 Mbit/s link,
# and its bytes <= 1.2x the compressed size of the changed files (printed).
#
# Usage: scripts/bench/delta.sh
#   SIZE_MIB=256 FILES=2000 CHANGED=100   the payload and the change
#   SHAPE_MBIT=100   the shaped link's rate (SHAPE_MBIT=0: loopback only;
#                    SHAPED_ONLY=1: the shaped link only)
#   BENCH_DIR=DIR    parent of the work folder; BANKSWAP_BIN=P: this binary
# Needs: python3, nginx, curl, openssl, zstd; root and tc for the shaped link.
# Bounded: every wait has a deadline; processes and the qdisc go on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SIZE_MIB="${SIZE_MIB:-256}"
FILES="${FILES:-2000}"
CHANGED="${CHANGED:-100}"
SHAPE_MBIT="${SHAPE_MBIT:-100}"
for v in SIZE_MIB FILES CHANGED; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || bench_die "$v must be a positive integer, not '${!v}'"
done
[[ "$SHAPE_MBIT" =~ ^[0-9]+$ ]] || bench_die "SHAPE_MBIT must be a number"
((CHANGED <= FILES)) || bench_die "CHANGED must be at most FILES"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || bench_die "nginx not found (scripts/setup-test-deps.sh)"
for tool in curl openssl zstd; do command -v "$tool" >/dev/null || bench_die "$tool not found"; done

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
bench_given_bin || bench_build
bench_workdir

# --- the releases ------------------------------------------------------------------
"$BIN" keygen --out "$W/release" >/dev/null
"$BIN" console cert --out "$W/tls" >/dev/null
CA="$W/tls/ca.pem"
DATA="$W/data"
CHAN="$DATA/v1/channels/stable"
mkdir -p "$W/rel"
publish() { # DIR VERSION: publishes and keeps a copy of its manifest and signature
  "$BIN" publish --key "$W/release.key" --payload "$1" --version "$2" \
    --entrypoint bin/app --to "$DATA" >/dev/null
  cp "$CHAN/release.json" "$W/rel/$2.json"
  cp "$CHAN/release.json.minisig" "$W/rel/$2.json.minisig"
}
make_current() { # VERSION: the signature, then the manifest, renamed into place
  cp "$W/rel/$1.json.minisig" "$CHAN/.b.minisig" && mv -f "$CHAN/.b.minisig" "$CHAN/release.json.minisig"
  cp "$W/rel/$1.json" "$CHAN/.b.json" && mv -f "$CHAN/.b.json" "$CHAN/release.json"
}
field() { # VERSION KEY.SUBKEY
  python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): m = m[k]
print(m)' "$W/rel/$1.json" "$2"
}

bench_log "generating the payload: $SIZE_MIB MiB in $FILES files, $CHANGED changed in 2.0.0"
bench_payload "$W/v1" "$SIZE_MIB" "$FILES"
cp -a "$W/v1" "$W/v2"
python3 - "$W/v2" "$CHANGED" <<'PY'
import hashlib, os, sys
root, changed = sys.argv[1], int(sys.argv[2])
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "data")) for f in fs)
step = len(files) / changed
for k in range(changed):
    path = files[int(k * step)]
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(hashlib.shake_256(b"bankswap-bench-v2-%d" % k).digest(size))
PY
publish "$W/v1" 1.0.0
publish "$W/v2" 2.0.0
ART_BYTES="$(field 2.0.0 artifact.size)"
ART_PATH="$(field 2.0.0 artifact.path)"
# The compressed size of the changed files: the objects 2.0.0 has and 1.0.0 has not.
CHANGED_BYTES="$(python3 - "$DATA/v1/$(field 1.0.0 index.path)" "$DATA/v1/$(field 2.0.0 index.path)" <<'PY'
import json, sys
old, new = ({e["sha256"]: e["packed"] for e in json.load(open(p))["entries"] if e["type"] == "file"} for p in sys.argv[1:])
print(sum(size for sha, size in new.items() if sha not in old))
PY
)"
rm -rf "$W/v1" "$W/v2"
sync

# --- nginx over the data folder ------------------------------------------------------
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$W/nginx"
cat >"$W/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 256; }
http {
  log_format bytes '\$request_uri \$status \$body_bytes_sent';
  access_log $W/nginx/access.log bytes;
  client_body_temp_path $W/nginx/body;
  proxy_temp_path $W/nginx/proxy;
  fastcgi_temp_path $W/nginx/fastcgi;
  uwsgi_temp_path $W/nginx/uwsgi;
  scgi_temp_path $W/nginx/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$PORT ssl;
    ssl_certificate $W/tls/server.pem;
    ssl_certificate_key $W/tls/server.key;
    location /v1/ { alias $DATA/v1/; }
  }
}
EOF
"$NGINX" -p "$W/nginx" -c "$W/nginx/nginx.conf" -e "$W/nginx/error.log" &
bench_track $!
URL="https://127.0.0.1:$PORT"
bench_wait "nginx to listen" 20 curl -sf --cacert "$CA" -o /dev/null "$URL/v1/channels/stable/release.json.minisig"

# --- shaping ---------------------------------------------------------------------------
SHAPED=0
shape_on() {
  tc qdisc add dev lo root handle 1: htb default 99
  tc class add dev lo parent 1: classid 1:10 htb rate "${SHAPE_MBIT}mbit" ceil "${SHAPE_MBIT}mbit"
  tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport "$PORT" 0xffff flowid 1:10
  SHAPED=1
}
shape_off() {
  if [ "$SHAPED" = 1 ]; then tc qdisc del dev lo root 2>/dev/null || true; fi
  SHAPED=0
}
trap 'shape_off; bench_cleanup' EXIT

# served_since LINE: bytes nginx sent for artifacts and delta files after line LINE of its log.
served_since() {
  tail -n +"$(($1 + 1))" "$W/nginx/access.log" | awk '$1 ~ /^\/v1\/(artifacts|delta)\// {s += $3} END {print s + 0}'
}
log_lines() { wc -l <"$W/nginx/access.log"; }

# run_agent WAY LINK RATIO: an agent installs 1.0.0 unshaped, then stages 2.0.0 on LINK.
run_agent() {
  local way="$1" link="$2" ratio="$3" dir="$W/agent-$1-$2" pid mark a b
  mkdir -p "$dir"
  cat >"$dir/agent.toml" <<EOF
console = "$URL"
root = "$dir/root"
trusted_keys = ["$W/release.pub"]
poll_interval = "1s"
max_delay = "0s"
[health]
grace = "1s"
[tls]
ca_certs = ["$CA"]
[update]
delta_max_ratio = $ratio
EOF
  make_current 1.0.0
  BANKSWAP_LOG=info "$BIN" run --config "$dir/agent.toml" >/dev/null 2>>"$dir/agent.log" &
  pid=$!
  bench_track "$pid"
  bench_wait "the $way agent to install 1.0.0" 600 bench_committed "$dir/root" 1.0.0
  bench_settle
  [ "$link" = shaped ] && shape_on
  mark="$(log_lines)"
  make_current 2.0.0
  bench_wait "the $way agent to commit 2.0.0" 1200 bench_committed "$dir/root" 2.0.0
  shape_off
  BYTES="$(served_since "$mark")"
  a="$(bench_log_time "$dir/agent.log" 'release scheduled.*version="?2\.0\.0')"
  b="$(bench_log_time "$dir/agent.log" 'staged and verified.*version="?2\.0\.0')"
  SECS="$(bench_sub "$a" "$b")"
  if [ "$way" = delta ]; then
    bench_log_has "$dir/agent.log" 'via delta' || bench_die "the delta agent did not stage via delta (see $dir/agent.log)"
  fi
  kill -TERM "$pid" 2>/dev/null || true
  bench_wait "the $way agent to stop" 30 bash -c "! kill -0 $pid 2>/dev/null"
}

# run_pipeline LINK: curl | openssl | zstd | tar of the 2.0.0 artifact.
run_pipeline() {
  local link="$1" mark a b
  mkdir "$W/fresh"
  bench_settle
  [ "$link" = shaped ] && shape_on
  mark="$(log_lines)"
  a="$(bench_now)"
  bash -c 'set -o pipefail; curl -sS --fail --cacert "$1" "$2" | tee >(openssl dgst -sha256 -r >"$4") | zstd -qd | tar -x -C "$3"; s=$?; wait $!; sync; exit $s' \
    _ "$CA" "$URL/v1/$ART_PATH" "$W/fresh" "$W/hash" || bench_die "the openssl pipeline failed"
  b="$(bench_now)"
  shape_off
  [ "$(cut -d' ' -f1 "$W/hash")" = "$(field 2.0.0 artifact.sha256)" ] || bench_die "pipeline hash mismatch"
  bench_wait "nginx to log the pipeline" 10 bash -c "[ \$(wc -l <'$W/nginx/access.log') -gt $mark ]"
  BYTES="$(served_since "$mark")"
  SECS="$(bench_sub "$a" "$b")"
  rm -rf "$W/fresh" "$W/hash"
}

LINKS=()
[ "${SHAPED_ONLY:-0}" = 1 ] || LINKS+=(loopback)
if [ "$SHAPE_MBIT" != 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v tc >/dev/null && ! tc qdisc show dev lo | grep -q htb; then
    LINKS+=(shaped)
  else
    bench_log "warning: no shaped link (needs root, tc, and no htb qdisc on lo already)"
  fi
fi

declare -A B T
for link in "${LINKS[@]}"; do
  for way in delta full openssl; do
    bench_log "$link: $way"
    case "$way" in
      delta) run_agent delta "$link" 0.6 ;;
      full) run_agent full "$link" 0 ;;
      openssl) run_pipeline "$link" ;;
    esac
    B[$link.$way]="$BYTES"
    T[$link.$way]="$SECS"
  done
done

# --- report ----------------------------------------------------------------------------
echo
echo "payload ${SIZE_MIB} MiB in $FILES files; 2.0.0 changes $CHANGED; artifact $ART_BYTES bytes;"
echo "changed files compressed: $CHANGED_BYTES bytes; shaped link ${SHAPE_MBIT} Mbit/s; binary $BIN"
echo "load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
printf '\n%-9s %-8s %12s %9s %13s %12s\n' link way bytes seconds "full/bytes" "full/time"
for link in "${LINKS[@]}"; do
  for way in delta full openssl; do
    awk -v l="$link" -v w="$way" -v b="${B[$link.$way]}" -v t="${T[$link.$way]}" \
      -v fb="${B[$link.full]}" -v ft="${T[$link.full]}" \
      'BEGIN {printf "%-9s %-8s %12d %9.3f %12.1fx %11.2fx\n", l, w, b, t, (b ? fb / b : 0), (t ? ft / t : 0)}'
  done
done
awk -v b="${B[${LINKS[0]}.delta]}" -v c="$CHANGED_BYTES" \
  'BEGIN {printf "\ndelta bytes / changed files compressed: %.3f (target <= 1.2)\n", b / c}'
if [[ " ${LINKS[*]} " == *" shaped "* ]]; then
  awk -v d="${T[shaped.delta]}" -v f="${T[shaped.full]}" \
    'BEGIN {printf "shaped link: delta %.1fx faster than full (target >= 10x)\n", f / d}'
fi
