# Shared helpers for the benchmarks in scripts/bench/. Source it, don't run it:
#   source "$(dirname "$0")/lib.sh"
# It defines functions only; the caller sets `set -euo pipefail`.

# Repository root (scripts/bench/..).
BENCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

bench_log() { printf 'bench: %s\n' "$*" >&2; }
bench_die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# With BANKSWAP_BIN=PATH, uses that binary (sets BIN) and succeeds; else fails.
bench_given_bin() {
  [ -n "${BANKSWAP_BIN:-}" ] || return 1
  BIN="$(realpath "$BANKSWAP_BIN")"
  [ -x "$BIN" ] || bench_die "BANKSWAP_BIN=$BANKSWAP_BIN is not an executable"
  bench_log "using $BIN (BANKSWAP_BIN; not rebuilt)"
}

# Installs the tools (zstd, GNU time, ...) and builds the release binary; sets BIN.
# BANKSWAP_BIN=PATH benchmarks that binary instead of building one.
bench_build() {
  "$BENCH_REPO/scripts/setup-test-deps.sh"
  command -v sha256sum >/dev/null || bench_die "sha256sum not found (coreutils)"
  command -v python3 >/dev/null || bench_die "python3 not found (it generates the payload)"
  if bench_given_bin; then return; fi
  bench_log "building: cargo build --release --locked"
  (cd "$BENCH_REPO" && cargo build --release --locked --quiet)
  BIN="$BENCH_REPO/target/release/bankswap"
  [ -x "$BIN" ] || bench_die "$BIN was not built"
}

# Creates the work directory and removes it on exit; sets W.
# BENCH_DIR=DIR puts it under DIR (only the mktemp folder inside is removed);
# otherwise under /var/tmp, or under target/ if /var/tmp is a tmpfs (RAM would
# hide the disk writes we want to measure).
bench_workdir() {
  local parent="${BENCH_DIR:-}"
  if [ -z "$parent" ]; then
    parent=/var/tmp
    if [ "$(stat -f -c %T "$parent" 2>/dev/null)" = tmpfs ]; then
      parent="$BENCH_REPO/target"
    fi
  fi
  mkdir -p "$parent"
  W="$(mktemp -d "$parent/bankswap-bench.XXXXXX")"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  local fs
  fs="$(stat -f -c %T "$W")"
  if [ "$fs" = tmpfs ]; then
    bench_log "warning: $W is on tmpfs; disk writes and sync are not measured"
  fi
  bench_log "work directory $W ($fs, $(df -h --output=avail "$W" | tail -1 | tr -d ' ') free)"
}

# Seconds since the epoch with microseconds.
bench_now() { printf '%s\n' "${EPOCHREALTIME/,/.}"; }

# Waits (at most QUIET_SECS, default 30) until the disk under the work folder has
# written nothing for a whole second: a sync returns before the disk is done with
# what it started (ext4's discards of removed files on a `discard` mount, journal
# commits), and a timed run on a busy disk measures the leftovers of the last one.
# Quiet: the device's writes completed, requests in flight and discards
# completed (/sys/dev/block/M:N/stat fields 5, 9, 12) unchanged over a second.
bench_disk_quiet() {
  local stat a b i
  stat="/sys/dev/block/$(stat -c '%Hd:%Ld' "${W:-.}")/stat"
  [ -r "$stat" ] || return 0
  a="$(awk '{print $5, $9, $12}' "$stat")"
  for ((i = 0; i < ${QUIET_SECS:-30}; i++)); do
    sleep 1
    b="$(awk '{print $5, $9, $12}' "$stat")"
    [ "$a" = "$b" ] && return 0
    a="$b"
  done
  bench_log "warning: the disk was still busy after ${QUIET_SECS:-30} s"
}

# Removes outputs and flushes them so the next timed run starts clean, on a quiet
# disk. With DROP_CACHES=1 and root, also drops the page cache (and so the
# cached artifact).
bench_settle() {
  rm -rf "$@"
  sync
  bench_disk_quiet
  if [ "${DROP_CACHES:-0}" = 1 ]; then
    if [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
      :
    else
      bench_log "warning: DROP_CACHES=1 but the page cache cannot be dropped here (needs root and a writable /proc/sys)"
    fi
  fi
}

# bench_payload DIR MIB FILES: writes a deterministic payload of exactly MIB MiB in
# FILES files (plus bin/app) under DIR: every other file is random bytes, the
# others are hex text lines (about half compressible), sizes spread over about
# 8 doublings. Everything comes from SHAKE-256 with fixed seeds, so the bytes
# are the same on every run and machine.
bench_payload() {
  python3 - "$1" "$2" "$3" <<'PY'
import binascii, hashlib, os, sys

out, mib, nfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
total = mib << 20
stream = hashlib.shake_256(b"bankswap-bench-sizes").digest(2 * nfiles)
# Integer weights, roughly 2 ** (8 * uniform): no floating point, same sizes everywhere.
ks = [int.from_bytes(stream[2 * i:2 * i + 2], "little") for i in range(nfiles)]
weights = [(8192 + k % 8192) << (k >> 13) for k in ks]
sizes = [w * total // sum(weights) for w in weights]
sizes[-1] += total - sum(sizes)

os.makedirs(os.path.join(out, "bin"))
with open(os.path.join(out, "bin", "app"), "w") as f:
    f.write("#!/bin/sh\nexec sleep 1000\n")
os.chmod(os.path.join(out, "bin", "app"), 0o755)

for i, size in enumerate(sizes):
    d = os.path.join(out, "data", "d%02d" % (i % 40))
    os.makedirs(d, exist_ok=True)
    seed = b"bankswap-bench-file-%d" % i
    if i % 2 == 0:
        path, data = os.path.join(d, "f%05d.bin" % i), hashlib.shake_256(seed).digest(size)
    else:
        # 64 hex digits + newline per line: text whose entropy is half its size.
        h = binascii.hexlify(hashlib.shake_256(seed).digest((size + 1) // 2))
        data = b"\n".join(h[j:j + 64] for j in range(0, len(h), 65))
        data = (data + h)[:size]
        path = os.path.join(d, "f%05d.txt" % i)
    with open(path, "wb") as f:
        f.write(data)
PY
}

# Prints the median of the numbers given as arguments.
bench_median() {
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.6f\n", (a[NR/2]+a[NR/2+1])/2}'
}

# Peak RSS in KiB from a `/usr/bin/time -v -o FILE` report.
bench_rss_kib() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }

# --- live benchmarks (stage.sh, swap.sh, push.sh) -------------------------------

# Background processes to stop on exit (bench_track PID), in reverse order.
BENCH_PIDS=()
bench_track() { BENCH_PIDS+=("$1"); }

# The EXIT trap of bench_workdir: SIGTERM to every tracked process still alive
# (then SIGKILL after 15 s), and the work folder removed (kept with BENCH_KEEP=1).
bench_cleanup() {
  local i pid n
  for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${BENCH_PIDS[$i]}"
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null || true
    for ((n = 0; n < 150; n++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "${W:-}" ]; then
    if [ "${BENCH_KEEP:-0}" = 1 ]; then bench_log "kept $W (BENCH_KEEP=1)"; else rm -rf "$W"; fi
  fi
}

# Builds the release binaries of the whole workspace (bankswap, hello-payload) and
# the root package's examples named as arguments; sets BIN, HELLO and EXAMPLES
# (the folder of the example binaries). With BANKSWAP_BIN=PATH nothing is built:
# hello-payload is taken next to it and the examples from its examples/ folder.
bench_build_all() {
  "$BENCH_REPO/scripts/setup-test-deps.sh"
  command -v python3 >/dev/null || bench_die "python3 not found"
  local dir example
  if ! bench_given_bin; then
    bench_log "building: cargo build --release --locked --workspace, and the examples $*"
    local args=()
    for example in "$@"; do args+=(--example "$example"); done
    (cd "$BENCH_REPO" && cargo build --release --locked --quiet --workspace &&
      if [ ${#args[@]} -gt 0 ]; then cargo build --release --locked --quiet "${args[@]}"; fi)
    BIN="$BENCH_REPO/target/release/bankswap"
  fi
  dir="$(dirname "$BIN")"
  HELLO="$dir/hello-payload"
  EXAMPLES="$dir/examples"
  [ -x "$BIN" ] || bench_die "$BIN was not built"
  [ -x "$HELLO" ] || bench_die "$HELLO is missing (cargo build --release --workspace builds it)"
  for example in "$@"; do
    [ -x "$EXAMPLES/$example" ] || bench_die "$EXAMPLES/$example is missing (cargo build --release --example $example)"
  done
}

# bench_console DATA TLS_DIR [ARG...]: starts `bankswap console serve` (with ARGs) on 127.0.0.1:0 over
# DATA with TLS_DIR/server.{pem,key}, logging to $W/console.log; waits for its
# address; sets CONSOLE_URL (https://127.0.0.1:PORT), CONSOLE_ADDR and CONSOLE_PID.
#
# The console runs from its own copy of the binary, as it runs on its own machine in
# a fleet: an agent's resident code pages are then its own, not shared with the
# console's mapping of the same file (which the kernel will not reclaim for it).
bench_console() {
  : >"$W/console.out"
  cp "$BIN" "$W/bankswap-console"
  BANKSWAP_LOG=info "$W/bankswap-console" console serve --data "$1" --listen 127.0.0.1:0 \
    --tls-cert "$2/server.pem" --tls-key "$2/server.key" "${@:3}" >"$W/console.out" 2>>"$W/console.log" &
  CONSOLE_PID=$!
  bench_track "$CONSOLE_PID"
  bench_wait "the console's address" 20 grep -q '^listening on https://' "$W/console.out"
  CONSOLE_URL="$(sed -n 's|^listening on \(https://[^ ]*\).*|\1|p' "$W/console.out" | head -1)"
  CONSOLE_ADDR="${CONSOLE_URL#https://}"
}

# bench_wait WHAT SECONDS CMD...: runs CMD every 100 ms until it succeeds; dies after SECONDS.
bench_wait() {
  local what="$1" secs="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then bench_die "timed out after ${secs}s waiting for $what"; fi
    sleep 0.1
  done
}

# bench_log_time FILE ERE: seconds since the epoch (µs) of the first line of a
# bankswap log matching ERE (colours stripped; lines start with an RFC 3339 UTC time).
bench_log_time() {
  local ts
  ts="$(sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -E -m1 -e "$2" | cut -d' ' -f1)" || true
  [ -n "$ts" ] || return 1
  date -u -d "$ts" +%s.%6N
}

# bench_log_has FILE ERE: whether a line of the log matches ERE.
bench_log_has() { sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -E -q -e "$2"; }

# bench_proc_kib PID FIELD: a /proc/PID/status field (VmRSS, VmHWM, ...) in KiB.
bench_proc_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# bench_cpu_ticks PID: utime + stime of a process, in clock ticks.
bench_cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# bench_status ROOT FIELD: a field of `bankswap status --root ROOT --json` ("" if absent).
bench_status() {
  "$BIN" status --root "$1" --json 2>/dev/null |
    python3 -c 'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$2"
}

# bench_committed ROOT VERSION: succeeds once VERSION is active and committed.
bench_committed() {
  [ "$(bench_status "$1" active_version)" = "$2" ] && [ "$(bench_status "$1" phase)" = committed ]
}

# bench_sub A B: B - A with 3 decimals (seconds).
bench_sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
