#!/usr/bin/env bash
# Benchmark: the agent execs a new binary in place (same pid) while its
# payload serves a steady request load: `bankswap agent reexec --binary COPY`,
# the primitive self-update (issue 10) runs on, in its reexec form.
#
# What it measures. One console and one agent running the example payload
# `hello-payload` on a [[listen]] socket ([health] notify = true). A load
# generator (examples/swap_load.rs) sends RATE requests per second, open loop,
# each on a new TCP connection, while the script runs REEXECS (default 3)
# in-place execs, each to a fresh copy of the binary (so /proc/PID/exe really
# changes), with SETTLE_SECS of load before, between and after. A request fails
# on any connect/read/write error, a non-200, or no full answer within 5 s.
# Marks per hand-over, from the agent log: t_exec = `executing the new agent
# build in place`, t_serving = the new image's `agent version=V pid=P
# adopted=1` line (it has taken over the sockets and the payload and serves
# its control socket); t_request = just before the CLI request is sent,
# t_answered = the CLI returned (the new image answered `status`).
# Prints per hand-over: requests, failures and worst latency within
# -BEFORE_S..+AFTER_S of t_exec, exec->serving and request->answered in ms;
# then totals, the agent pid and the payload pid before and after.
# Targets: 0 failed requests, the same agent and payload pids, request to
# serving <= 1000 ms.
#
# Usage: scripts/bench/selfupdate.sh
#   RATE=200          requests per second
#   REEXECS=3         in-place execs
#   SETTLE_SECS=3     load before the first exec, between execs and after the last
#   BEFORE_S=1 AFTER_S=1   the window around each exec
#   BENCH_DIR=DIR     parent of the work folder (default /var/tmp); removed on exit
#   BANKSWAP_BIN=P    use this binary (hello-payload and examples/swap_load next to it)
# Bounded: the load stops after at most 300 s; every wait has a deadline; all
# processes are stopped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

RATE="${RATE:-200}"
REEXECS="${REEXECS:-3}"
SETTLE_SECS="${SETTLE_SECS:-3}"
BEFORE_S="${BEFORE_S:-1}"
AFTER_S="${AFTER_S:-1}"
TARGET_SERVING_MS=1000
for v in RATE REEXECS SETTLE_SECS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || bench_die "$v must be a positive integer, not '${!v}'"
done

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
UPTIME_START="$(uptime)"
bench_build_all swap_load
LOADGEN="$EXAMPLES/swap_load"
bench_workdir

"$BIN" keygen --out "$W/release" >/dev/null
"$BIN" console cert --out "$W/tls" >/dev/null
mkdir -p "$W/data" "$W/payload/bin"
bench_console "$W/data" "$W/tls"
cp "$HELLO" "$W/payload/bin/hello-payload"
"$BIN" publish --key "$W/release.key" --payload "$W/payload" --version 1.0.0 \
  --entrypoint bin/hello-payload --channel bench-reexec --to "$W/data" >/dev/null

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
root="$W/root"
log="$W/agent.log"
cat >"$W/agent.toml" <<TOML
console = "$CONSOLE_URL"
channel = "bench-reexec"
root = "$root"
trusted_keys = ["$W/release.pub"]
poll_interval = "2s"
max_delay = "0s"
[[listen]]
name = "http"
address = "127.0.0.1:$port"
[health]
notify = true
grace = "10s"
[tls]
ca_certs = ["$W/tls/ca.pem"]
TOML

answers() { curl -s --max-time 2 "http://127.0.0.1:$port/" | grep -qx "hello from 1.0.0"; }
stripped() { sed 's/\x1b\[[0-9;]*m//g' "$log"; }
# The pid of the payload: the last `running version=1.0.0 … pid=N` line.
payload_pid() { stripped | sed -n 's/.*running version=1\.0\.0 .*pid=\([0-9]*\).*/\1/p' | tail -1; }
ppid_of() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $2}'; }
# Seconds since the epoch (µs) of the Nth line matching ERE.
nth_time() {
  local ts
  ts="$(stripped | grep -E -e "$2" | sed -n "$1p" | cut -d' ' -f1)"
  [ -n "$ts" ] || return 1
  date -u -d "$ts" +%s.%6N
}
adopted_lines() { stripped | grep -c -E "agent version=[^ ]+ pid=$agent_pid adopted=1" || true; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) * 1000}'; }

BANKSWAP_LOG=info "$BIN" run --config "$W/agent.toml" >/dev/null 2>>"$log" &
agent_pid=$!
bench_track "$agent_pid"
bench_wait "1.0.0 committed" 60 bench_committed "$root" 1.0.0
bench_wait "1.0.0 answering" 30 answers
payload_before="$(payload_pid)"
exe_before="$(stat -L -c %i "/proc/$agent_pid/exe")"

"$LOADGEN" load "127.0.0.1:$port" "$RATE" 300 "$W/stop" "$W/records" >"$W/load.out" &
load=$!
bench_track "$load"
sleep "$SETTLE_SECS"

marks=() rows=()
for i in $(seq 1 "$REEXECS"); do
  cp "$BIN" "$W/bankswap-$i"
  bench_log "reexec $i: $W/bankswap-$i"
  t_request="$(bench_now)"
  "$BIN" agent reexec --root "$root" --binary "$W/bankswap-$i" >/dev/null
  t_answered="$(bench_now)"
  bench_wait "the start line of image $i" 20 test "$(adopted_lines)" -ge "$i"
  t_exec="$(nth_time "$i" 'executing the new agent build in place')"
  t_serving="$(nth_time "$i" "agent version=[^ ]+ pid=$agent_pid adopted=1")"
  [ "$(stat -L -c %i "/proc/$agent_pid/exe")" = "$(stat -c %i "$W/bankswap-$i")" ] ||
    bench_die "reexec $i: /proc/$agent_pid/exe is not $W/bankswap-$i"
  marks+=("reexec$i=$t_exec")
  rows+=("reexec$i $(ms "$t_exec" "$t_serving") $(ms "$t_request" "$t_serving") $(ms "$t_request" "$t_answered")")
  sleep "$SETTLE_SECS"
done
touch "$W/stop"
wait "$load" || bench_die "the load generator failed"
payload_after="$(payload_pid)"
payload_parent="$(ppid_of "$payload_after" 2>/dev/null || echo gone)"
exe_after="$(stat -L -c %i "/proc/$agent_pid/exe")"
kill -TERM "$agent_pid" && wait "$agent_pid" || true

echo
echo "in-place execs under load: hello-payload, $RATE req/s each on a new connection, $REEXECS reexecs"
echo "uptime at start: $UPTIME_START ($(nproc) CPUs)"
echo "== $(sed 's/^load: //' "$W/load.out")"
"$LOADGEN" report "$W/records" "$BEFORE_S" "$AFTER_S" "${marks[@]}" | tee "$W/report"
echo
printf '%-9s %16s %19s %20s\n' "hand-over" "exec->serving_ms" "request->serving_ms" "request->answered_ms"
worst_serving=0
for row in "${rows[@]}"; do
  read -r label exec_serving req_serving req_answered <<<"$row"
  printf '%-9s %16s %19s %20s\n' "$label" "$exec_serving" "$req_serving" "$req_answered"
  worst_serving="$(awk -v a="$worst_serving" -v b="$req_serving" 'BEGIN {print (b > a) ? b : a}')"
done

verdict() { if awk "BEGIN {exit !($1)}"; then echo met; else echo MISSED; fi; }
sent="$(sed -n 's/^requests sent \([0-9]*\), failed \([0-9]*\).*/\1/p' "$W/report")"
failed="$(sed -n 's/^requests sent \([0-9]*\), failed \([0-9]*\).*/\2/p' "$W/report")"
worst_lat="$(awk '$1 ~ /^reexec/ && NF >= 6 {if ($4 > m) m = $4} END {printf "%.1f", m}' "$W/report")"
echo
echo "summary:"
printf '  %s requests, %s failed; worst latency within -%ss..+%ss of an exec %s ms   target 0 failed: %s\n' \
  "$sent" "$failed" "$BEFORE_S" "$AFTER_S" "$worst_lat" "$(verdict "$failed == 0")"
printf '  agent pid %s throughout; /proc/PID/exe inode %s -> %s\n' "$agent_pid" "$exe_before" "$exe_after"
printf '  payload pid before %s, after %s (parent %s)   target unchanged: %s\n' \
  "$payload_before" "$payload_after" "$payload_parent" \
  "$(verdict "$payload_before == $payload_after && $payload_parent == $agent_pid")"
printf '  worst request->serving %s ms   target <= %s ms: %s\n' "$worst_serving" "$TARGET_SERVING_MS" \
  "$(verdict "$worst_serving <= $TARGET_SERVING_MS")"
echo "  load average: start $LOAD_START, end $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
echo "  uptime at end: $(uptime)"
