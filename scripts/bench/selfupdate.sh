#!/usr/bin/env bash
# Benchmark: the agent updates itself (issue 10, SPEC §9) while its payload
# serves a steady request load: UPDATES (default 3) real agent releases taken
# over in place, then one release that fails its trial and is rolled back.
#
# What it measures. One console (HTTPS, as the tests run it) and one agent
# running the example payload `hello-payload` on a [[listen]] socket
# ([health] notify = true) with `[self_update] enabled = true`. A load
# generator (examples/swap_load.rs) sends RATE requests per second, open loop,
# each on a new TCP connection. Meanwhile the script publishes, with
# `bankswap publish --agent-binary COPY --channel bankswap --to DATA`, copies
# of the bankswap binary under increasing versions (9.0.1, 9.0.2, ...; a copy,
# so /proc/PID/exe really changes), each after SETTLE_SECS of load, and waits
# until the agent reports it committed. The last release, 9.0.<UPDATES+1>, is
# made to fail: the agent runs with the test-only switch
# BANKSWAP_TEST_AGENT_FAULT=no-commit@<that version> (src/agent/self_update/fault.rs),
# so that build never proves itself, misses its `[self_update] grace` (GRACE)
# and execs the previous build back, which marks it bad.
# A request fails on any connect/read/write error, a non-200, or no full
# answer within 5 s.
#
# Marks, all from the agent's log lines (RFC 3339 times, µs), per release:
#   staged    `agent build staged version=V`  (downloaded, verified, in its slot;
#             the self-test of the staged build comes after it)
#   exec      `executing the new agent build in place` (the old image, just before execve)
#   serving   `agent version=V pid=P adopted=1` (the new image adopted the payload
#             and holds the sockets: it serves)
#   committed `agent committed` (it answered its own control socket and committed)
# and for the rollback: failed = `agent trial failed; restoring the previous build`,
# back = the previous build's `agent version=PREV pid=P adopted=1` after it.
# Prints per hand-over: requests, failures and worst latency within
# -BEFORE_S..+AFTER_S of each exec (the rollback has two: to the bad build and
# back), staged->serving, exec->serving and staged->committed in ms (for the
# rollback: staged->serving of the bad build, failed->back); then totals, the
# agent pid, /proc/PID/exe, and the payload pid before and after.
# Targets: 0 failed requests, the same payload pid (still the agent's child),
# staged->serving <= 1000 ms on every update.
#
# Usage: scripts/bench/selfupdate.sh
#   PROFILE=debug     debug (default, what CI builds) or release: cargo build [--release]
#   QUICK=1           a short run: UPDATES=1 SETTLE_SECS=1 (still one rollback)
#   RATE=200          requests per second
#   UPDATES=3         agent self-updates before the rollback
#   SETTLE_SECS=3     load before the first release, between releases and after the last
#   GRACE=5s          [self_update] grace: how long the failing build runs before it is rolled back
#   BEFORE_S=1 AFTER_S=1   the window around each exec
#   BENCH_DIR=DIR     parent of the work folder (default /var/tmp); removed on exit
#   BENCH_KEEP=1      keep the work folder (agent.log, console.log, records)
#   BANKSWAP_BIN=P    use this binary (hello-payload and examples/swap_load next to it)
# Exit status: 0 when the run completed and kept the payload (0 failed, same
# payload pid); 3 when it completed but missed one of those two; 1 on errors.
# Bounded: the load stops after at most 300 s; every wait has a deadline; all
# processes are stopped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PROFILE="${PROFILE:-debug}"
if [ "${QUICK:-0}" = 1 ]; then
  UPDATES="${UPDATES:-1}"
  SETTLE_SECS="${SETTLE_SECS:-1}"
fi
RATE="${RATE:-200}"
UPDATES="${UPDATES:-3}"
SETTLE_SECS="${SETTLE_SECS:-3}"
GRACE="${GRACE:-5s}"
BEFORE_S="${BEFORE_S:-1}"
AFTER_S="${AFTER_S:-1}"
TARGET_SERVING_MS=1000
for v in RATE UPDATES SETTLE_SECS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || bench_die "$v must be a positive integer, not '${!v}'"
done
[[ "$GRACE" =~ ^[1-9][0-9]*s$ ]] || bench_die "GRACE must be whole seconds like 5s, not '$GRACE'"

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
UPTIME_START="$(uptime)"
case "$PROFILE" in
  release) ;;
  debug)
    # bench_build_all builds release binaries; a debug run builds here and hands it the result.
    if [ -z "${BANKSWAP_BIN:-}" ]; then
      bench_log "building: cargo build --locked --workspace, and the example swap_load (debug)"
      (cd "$BENCH_REPO" && nice -n 10 cargo build --locked --quiet --workspace &&
        nice -n 10 cargo build --locked --quiet --example swap_load)
      BANKSWAP_BIN="$BENCH_REPO/target/debug/bankswap"
    fi
    ;;
  *) bench_die "PROFILE must be debug or release, not '$PROFILE'" ;;
esac
bench_build_all swap_load
LOADGEN="$EXAMPLES/swap_load"
bench_workdir

"$BIN" keygen --out "$W/release" >/dev/null
"$BIN" console cert --out "$W/tls" >/dev/null
mkdir -p "$W/data" "$W/payload/bin"
bench_console "$W/data" "$W/tls"
cp "$HELLO" "$W/payload/bin/hello-payload"
"$BIN" publish --key "$W/release.key" --payload "$W/payload" --version 1.0.0 \
  --entrypoint bin/hello-payload --channel bench-selfupdate --to "$W/data" >/dev/null

version_of() { echo "9.0.$1"; } # release i (1-based); the last one is the bad one
BAD="$(version_of $((UPDATES + 1)))"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
root="$W/root"
log="$W/agent.log"
cat >"$W/agent.toml" <<TOML
console = "$CONSOLE_URL"
channel = "bench-selfupdate"
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
[self_update]
enabled = true
grace = "$GRACE"
self_test_timeout = "60s"
[tls]
ca_certs = ["$W/tls/ca.pem"]
TOML

answers() { curl -s --max-time 2 "http://127.0.0.1:$port/" | grep -qx "hello from 1.0.0"; }
stripped() { sed 's/\x1b\[[0-9;]*m//g' "$log"; }
log_lines() { stripped | wc -l; }
# The pid of the payload: the last `running version=1.0.0 … pid=N` line.
payload_pid() { stripped | sed -n 's/.*running version=1\.0\.0 .*pid=\([0-9]*\).*/\1/p' | tail -1; }
ppid_of() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $2}'; }
# after LINE ERE: seconds since the epoch (µs) of the first log line after line
# LINE matching ERE; fails if there is none yet.
after() {
  local ts
  ts="$(stripped | tail -n +"$(($1 + 1))" | grep -E -m1 -e "$2" | cut -d' ' -f1)" || true
  [ -n "$ts" ] || return 1
  date -u -d "$ts" +%s.%6N
}
# line_after LINE ERE: the number of that line.
line_after() {
  local n
  n="$(stripped | tail -n +"$(($1 + 1))" | grep -E -n -m1 -e "$2" | cut -d: -f1)" || true
  [ -n "$n" ] || return 1
  echo $(($1 + n))
}
start_line() { echo "agent version=${1//./\\.} pid=$agent_pid adopted=1"; }
committed_on() { [ "$(bench_status "$root" agent_version)" = "$1" ] && [ "$(bench_status "$root" agent_phase)" = committed ]; }
marked_bad() {
  "$BIN" status --root "$root" --json 2>/dev/null | python3 -c '
import json, sys
bad = json.load(sys.stdin).get("agent_bad_versions") or []
sys.exit(0 if any(b.get("version") == sys.argv[1] for b in bad) else 1)' "$1"
}
bad_reason() {
  "$BIN" status --root "$root" --json | python3 -c '
import json, sys
bad = json.load(sys.stdin).get("agent_bad_versions") or []
print(next((b.get("reason", "") for b in bad if b.get("version") == sys.argv[1]), ""))' "$1"
}
exe_of() { readlink "/proc/$agent_pid/exe"; }
exe_inode() { stat -L -c %i "/proc/$agent_pid/exe"; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) * 1000}'; }
publish_agent() {
  cp "$BIN" "$W/bankswap-$1"
  "$BIN" publish --key "$W/release.key" --agent-binary "$W/bankswap-$1" --version "$1" \
    --channel bankswap --to "$W/data" >/dev/null
}

BANKSWAP_TEST_AGENT_FAULT="no-commit@$BAD" BANKSWAP_LOG=info \
  "$BIN" run --config "$W/agent.toml" >/dev/null 2>>"$log" &
agent_pid=$!
bench_track "$agent_pid"
bench_wait "1.0.0 committed" 60 bench_committed "$root" 1.0.0
bench_wait "1.0.0 answering" 30 answers
installed_version="$(bench_status "$root" agent_version)"
payload_before="$(payload_pid)"
exe_before="$(exe_of)"
inode_before="$(exe_inode)"

"$LOADGEN" load "127.0.0.1:$port" "$RATE" 300 "$W/stop" "$W/records" >"$W/load.out" &
load=$!
bench_track "$load"
sleep "$SETTLE_SECS"

marks=() rows=()
previous="$installed_version"
for i in $(seq 1 "$UPDATES"); do
  v="$(version_of "$i")"
  from="$(log_lines)"
  inode="$(exe_inode)"
  bench_log "agent release $v"
  publish_agent "$v"
  bench_wait "agent $v committed" 120 committed_on "$v"
  bench_wait "the log line of $v's commit" 10 after "$from" 'agent committed'
  t_staged="$(after "$from" "agent build staged version=${v//./\\.}")"
  t_exec="$(after "$from" 'executing the new agent build in place')"
  t_serving="$(after "$from" "$(start_line "$v")")"
  t_committed="$(after "$from" 'agent committed')"
  [ "$(exe_inode)" != "$inode" ] || bench_die "update $v: /proc/$agent_pid/exe did not change"
  case "$(exe_of)" in "$root"/agent/Slot*) ;; *) bench_die "update $v: the agent runs $(exe_of), not a slot's build" ;; esac
  marks+=("update$i=$t_exec")
  rows+=("update$i $v $(ms "$t_staged" "$t_serving") $(ms "$t_exec" "$t_serving") $(ms "$t_staged" "$t_committed")")
  previous="$v"
  sleep "$SETTLE_SECS"
done

# The rollback: the bad build takes over, misses its grace, and the previous one comes back.
from="$(log_lines)"
inode_good="$(exe_inode)"
exe_good="$(exe_of)"
bench_log "agent release $BAD (no-commit: rolled back after its grace of $GRACE)"
publish_agent "$BAD"
bench_wait "agent $BAD marked bad" 180 marked_bad "$BAD"
bench_wait "$previous serving again" 20 after "$from" "$(start_line "$previous")"
t_staged="$(after "$from" "agent build staged version=${BAD//./\\.}")"
t_exec="$(after "$from" 'executing the new agent build in place')"
t_serving="$(after "$from" "$(start_line "$BAD")")"
failed_line="$(line_after "$from" 'agent trial failed; restoring the previous build')"
t_failed="$(after "$from" 'agent trial failed; restoring the previous build')"
t_exec_back="$(after "$failed_line" 'executing the new agent build in place')"
t_back="$(after "$failed_line" "$(start_line "$previous")")"
[ "$(exe_inode)" = "$inode_good" ] || bench_die "rollback: /proc/$agent_pid/exe is not $exe_good again"
committed_on "$previous" || bench_die "rollback: the agent does not report $previous committed"
reason="$(bad_reason "$BAD")"
marks+=("to_bad=$t_exec" "back=$t_exec_back")
sleep "$SETTLE_SECS"

touch "$W/stop"
wait "$load" || bench_die "the load generator failed"
payload_after="$(payload_pid)"
payload_parent="$(ppid_of "$payload_after" 2>/dev/null || echo gone)"
exe_after="$(exe_of)"
inode_after="$(exe_inode)"
kill -TERM "$agent_pid" && wait "$agent_pid" || true

echo
echo "agent self-updates under load: hello-payload, $RATE req/s each on a new connection,"
echo "$UPDATES updates and 1 rollback ($PROFILE build: $BIN)"
echo "uptime at start: $UPTIME_START ($(nproc) CPUs)"
echo "== $(sed 's/^load: //' "$W/load.out")"
echo "requests around each exec (-${BEFORE_S}s..+${AFTER_S}s; to_bad/back: the rollback's two execs):"
"$LOADGEN" report "$W/records" "$BEFORE_S" "$AFTER_S" "${marks[@]}" | tee "$W/report"
echo
echo "hand-over times from the agent's log lines (staged = 'agent build staged', exec = 'executing"
echo "the new agent build in place', serving = the new image's 'agent version=V pid=P adopted=1',"
echo "committed = 'agent committed'):"
printf '%-9s %-8s %18s %16s %20s\n' "hand-over" "version" "staged->serving_ms" "exec->serving_ms" "staged->committed_ms"
worst_serving=0
for row in "${rows[@]}"; do
  read -r label version staged_serving exec_serving staged_committed <<<"$row"
  printf '%-9s %-8s %18s %16s %20s\n' "$label" "$version" "$staged_serving" "$exec_serving" "$staged_committed"
  worst_serving="$(awk -v a="$worst_serving" -v b="$staged_serving" 'BEGIN {print (b > a) ? b : a}')"
done
printf '%-9s %-8s %18s %16s %20s\n' "rollback" "$BAD" "$(ms "$t_staged" "$t_serving")" "$(ms "$t_exec" "$t_serving")" "never"
printf '  %s: failed->back %s ms (exec back->serving %s ms); %s back after %s ms; reason: %s\n' \
  "$BAD" "$(ms "$t_failed" "$t_back")" "$(ms "$t_exec_back" "$t_back")" "$previous" \
  "$(ms "$t_staged" "$t_back")" "$reason"

verdict() { if awk "BEGIN {exit !($1)}"; then echo met; else echo MISSED; fi; }
sent="$(sed -n 's/^requests sent \([0-9]*\), failed \([0-9]*\).*/\1/p' "$W/report")"
failed="$(sed -n 's/^requests sent \([0-9]*\), failed \([0-9]*\).*/\2/p' "$W/report")"
worst_lat="$(awk '$1 ~ /^(update|to_bad|back)/ && NF >= 6 {if ($4 > m) m = $4} END {printf "%.1f", m}' "$W/report")"
same_payload="$(verdict "$payload_before == $payload_after && $payload_parent == $agent_pid")"
echo
echo "summary:"
printf '  %s requests, %s failed; worst latency within -%ss..+%ss of an exec %s ms   target 0 failed: %s\n' \
  "$sent" "$failed" "$BEFORE_S" "$AFTER_S" "$worst_lat" "$(verdict "$failed == 0")"
printf '  agent pid %s throughout; agent %s -> %s; /proc/PID/exe %s (inode %s) -> %s (inode %s)\n' \
  "$agent_pid" "$installed_version" "$previous" "$exe_before" "$inode_before" "$exe_after" "$inode_after"
printf '  payload pid before %s, after %s (parent %s)   target unchanged: %s\n' \
  "$payload_before" "$payload_after" "$payload_parent" "$same_payload"
printf '  worst staged->serving %s ms (log lines)   target <= %s ms: %s\n' "$worst_serving" "$TARGET_SERVING_MS" \
  "$(verdict "$worst_serving <= $TARGET_SERVING_MS")"
echo "  load average: start $LOAD_START, end $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
echo "  uptime at end: $(uptime)"
[ "$failed" = 0 ] && [ "$same_payload" = met ] || exit 3
