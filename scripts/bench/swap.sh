#!/usr/bin/env bash
# Benchmark: swaps of a live HTTP payload under a steady request load, with
# the agent holding the sockets ([[listen]]) and without (stop-then-start).
#
# What it measures. One console and, per mode, one agent running the example
# payload `hello-payload` (it answers `hello from <version>`, says READY=1 over
# NOTIFY_SOCKET, drains on SIGTERM); max_delay = "0s", [health] notify = true.
# A load generator (examples/swap_load.rs) sends RATE requests per second, open
# loop, each on a new TCP connection (`Connection: close`: every request goes
# through the listening socket's accept queue, the thing a swap hands over),
# while the script publishes 2.0.0, 3.0.0 and 4.0.0 (each pushed, staged,
# swapped, committed) and then runs `bankswap rollback` (back to 3.0.0), with
# SETTLE_SECS of load before, between and after. A request fails on any
# connect/read/write error, a non-200, or no full answer within 5 s.
#   sockets   [[listen]] 127.0.0.1:PORT: the agent binds once and hands the socket
#             to every generation; the old one gets SIGTERM once the new one is
#             ready. Target: 0 failed requests.
#   no sockets the payload binds itself (`bin/hello-payload --listen 127.0.0.1:PORT`),
#             so the agent stops the old generation before it starts the new one.
#             Target: unavailability <= 100 ms beyond the payload's own start time.
# Each swap is marked by the agent's log line `swapped; the new version is on
# trial` (updates) or `rolled back by an admin` (the rollback); around each mark
# (-BEFORE_S..+AFTER_S, default ±1 s) it prints the requests started, the
# failures, the worst latency, and the longest gap between the starts of two
# consecutive successful requests overlapping that window: the unavailability
# window, at a resolution of 1/RATE (5 ms at the default 200 req/s). The
# payload's own start time (spawn to first answer) and stop time (SIGTERM to
# exit; hello-payload waits 500 ms after closing its listener so connections
# accepted just before can send their request) are measured by running it by
# hand (`swap_load startup`), and the beyond-start figure is gap - start.
#
# Usage: scripts/bench/swap.sh
#   RATE=200          requests per second
#   SETTLE_SECS=3     load before the first swap, between swaps and after the last
#   BEFORE_S=1 AFTER_S=1   the window around each swap
#   STARTUP_RUNS=5    hand runs of the payload to time its start and stop
#   BENCH_DIR=DIR     parent of the work folder (default /var/tmp); removed on exit
#   BANKSWAP_BIN=P    use this binary (hello-payload and examples/swap_load next to it)
# Bounded: each mode's load stops after at most 300 s; every wait has a deadline;
# all processes are stopped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

RATE="${RATE:-200}"
SETTLE_SECS="${SETTLE_SECS:-3}"
BEFORE_S="${BEFORE_S:-1}"
AFTER_S="${AFTER_S:-1}"
STARTUP_RUNS="${STARTUP_RUNS:-5}"
TARGET_BEYOND_MS=100
for v in RATE SETTLE_SECS STARTUP_RUNS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || bench_die "$v must be a positive integer, not '${!v}'"
done

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
UPTIME_START="$(uptime)"
bench_build_all swap_load
LOADGEN="$EXAMPLES/swap_load"
bench_workdir

"$BIN" keygen --out "$W/release" >/dev/null
"$BIN" console cert --out "$W/tls" >/dev/null
mkdir -p "$W/data"
bench_console "$W/data" "$W/tls"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# publish CHANNEL VERSION ENTRYPOINT
publish() {
  local dir="$W/payload-$2"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir/bin"
    cp "$HELLO" "$dir/bin/hello-payload"
  fi
  "$BIN" publish --key "$W/release.key" --payload "$dir" --version "$2" \
    --entrypoint "$3" --channel "$1" --to "$W/data" >/dev/null
}

answers() { # PORT VERSION: the payload on PORT says hello from VERSION
  curl -s --max-time 2 "http://127.0.0.1:$1/" | grep -qx "hello from $2"
}

# run_mode NAME: one agent, the load, three updates and a rollback; prints the report.
run_mode() {
  local mode="$1" port channel root log entry listen extra t pid marks=() v
  port="$(free_port)"
  channel="bench-$mode"
  root="$W/root-$mode"
  log="$W/agent-$mode.log"
  entry="bin/hello-payload"
  listen=""
  if [ "$mode" = sockets ]; then
    listen=$'[[listen]]\nname = "http"\naddress = "127.0.0.1:'"$port"$'"\n'
  else
    entry="bin/hello-payload --listen 127.0.0.1:$port"
  fi
  publish "$channel" 1.0.0 "$entry"
  cat >"$W/agent-$mode.toml" <<EOF
console = "$CONSOLE_URL"
channel = "$channel"
root = "$root"
trusted_keys = ["$W/release.pub"]
poll_interval = "2s"
max_delay = "0s"
${listen}[health]
notify = true
grace = "10s"
[tls]
ca_certs = ["$W/tls/ca.pem"]
EOF
  BANKSWAP_LOG=info "$BIN" run --config "$W/agent-$mode.toml" >/dev/null 2>>"$log" &
  pid=$!
  bench_track "$pid"
  bench_wait "1.0.0 committed ($mode)" 60 bench_committed "$root" 1.0.0
  bench_wait "1.0.0 answering ($mode)" 30 answers "$port" 1.0.0

  "$LOADGEN" load "127.0.0.1:$port" "$RATE" 300 "$W/stop-$mode" "$W/records-$mode" >"$W/load-$mode.out" &
  local load=$!
  bench_track "$load"
  sleep "$SETTLE_SECS"
  for v in 2.0.0 3.0.0 4.0.0; do
    bench_log "$mode: publishing $v"
    publish "$channel" "$v" "$entry"
    bench_wait "$v committed ($mode)" 60 bench_committed "$root" "$v"
    bench_wait "$v answering ($mode)" 30 answers "$port" "$v"
    t="$(bench_log_time "$log" "swapped; the new version is on trial .*version=\"?${v//./\\.}\"?( |$)")"
    marks+=("$v=$t")
    sleep "$SETTLE_SECS"
  done
  bench_log "$mode: rollback"
  "$BIN" rollback --root "$root" >/dev/null
  bench_wait "3.0.0 back ($mode)" 60 bench_committed "$root" 3.0.0
  bench_wait "3.0.0 answering again ($mode)" 30 answers "$port" 3.0.0
  t="$(bench_log_time "$log" "rolled back by an admin")"
  marks+=("rollback=$t")
  sleep "$SETTLE_SECS"
  touch "$W/stop-$mode"
  wait "$load" || bench_die "the load generator failed ($mode)"
  kill -TERM "$pid" && wait "$pid" || true

  echo
  echo "== $mode: $(cat "$W/load-$mode.out" | sed 's/^load: //')"
  "$LOADGEN" report "$W/records-$mode" "$BEFORE_S" "$AFTER_S" "${marks[@]}" | tee "$W/report-$mode"
}

echo
echo "swaps under load: hello-payload, $RATE req/s each on a new connection, 3 updates and a rollback per mode"
echo "uptime at start: $UPTIME_START ($(nproc) CPUs)"
run_mode sockets
run_mode nosockets

echo
echo "== the payload by hand (swap_load startup: spawn to first answer, SIGTERM to exit)"
"$LOADGEN" startup "$HELLO" "$STARTUP_RUNS" | tee "$W/startup"
START_MS="$(sed -n 's/^payload median: start \([0-9.]*\) ms.*/\1/p' "$W/startup")"
STOP_MS="$(sed -n 's/^payload median: .*stop \([0-9.]*\) ms.*/\1/p' "$W/startup")"

# --- summary ---------------------------------------------------------------------------
verdict() { if awk "BEGIN {exit !($1)}"; then echo met; else echo MISSED; fi; }
sent_s="$(sed -n 's/^requests sent \([0-9]*\), failed \([0-9]*\).*/\1/p' "$W/report-sockets")"
failed_s="$(sed -n 's/^requests sent \([0-9]*\), failed \([0-9]*\).*/\2/p' "$W/report-sockets")"
worst_s="$(awk '$1 ~ /^[0-9]|^rollback/ && NF >= 6 {if ($4 > m) m = $4} END {printf "%.1f", m}' "$W/report-sockets")"
echo
echo "summary:"
printf '  with sockets:    %s requests, %s failed; worst latency within -%ss..+%ss of a swap %s ms   target 0 failed: %s\n' \
  "$sent_s" "$failed_s" "$BEFORE_S" "$AFTER_S" "$worst_s" "$(verdict "$failed_s == 0")"
echo "  without sockets: unavailability per swap (longest gap between successful requests) and beyond the payload's start ($START_MS ms; its stop takes $STOP_MS ms):"
worst_beyond=0 worst_both=0
while read -r label _ _ _ gap _; do
  beyond="$(awk -v g="$gap" -v s="$START_MS" 'BEGIN {printf "%.1f", g - s}')"
  both="$(awk -v b="$beyond" -v s="$STOP_MS" 'BEGIN {printf "%.1f", b - s}')"
  printf '    %-9s window %7.1f ms  beyond start %7.1f ms  beyond start and stop %7.1f ms\n' \
    "$label" "$gap" "$beyond" "$both"
  worst_beyond="$(awk -v a="$worst_beyond" -v b="$beyond" 'BEGIN {print (b > a) ? b : a}')"
  worst_both="$(awk -v a="$worst_both" -v b="$both" 'BEGIN {print (b > a) ? b : a}')"
done < <(awk '$1 ~ /^[0-9]|^rollback/ && NF >= 6' "$W/report-nosockets")
printf '  worst beyond start:          %6.1f ms   target <= %s ms: %s\n' "$worst_beyond" "$TARGET_BEYOND_MS" \
  "$(verdict "$worst_beyond <= $TARGET_BEYOND_MS")"
printf '  worst beyond start and stop: %6.1f ms   (the same target, also granting the payload its own stop time): %s\n' \
  "$worst_both" "$(verdict "$worst_both <= $TARGET_BEYOND_MS")"
echo "  load average: start $LOAD_START, end $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
echo "  uptime at end: $(uptime)"
