#!/usr/bin/env bash
# Benchmark: console-managed rollouts in waves (SPEC §8 "console rollout", §11).
#
# What it measures. A fresh `bankswap console serve` on loopback TLS and
# AGENTS (default 1000) simulated agents (`bankswap simulate-agents`: the
# agent's own check with If-None-Match, ?wait= and agent_id, the signing
# crate's verification, and real reports over HTTPS; the payload is pretended,
# on trial for TRIAL). Then:
#   1. a good release, `publish --waves 1%,10%,50%,100% --soak SOAK`: for each
#      wave, the moment it became ready to open (the commit that brought the
#      admitted agents to the success threshold, or the last commit + SOAK if
#      later) and how long after it (a) the console recorded the next wave open
#      (its event time) and (b) the first newly admitted agent received the
#      release (its held request answered). Target: <= 2 s.
#   2. a bad release (every trial fails): how long after the failure report
#      that crossed halt-on the console recorded the halt, and how many agents
#      received the bad release after it (must be 0). Target: <= 2 s.
#   3. the console's RSS (now and peak, VmHWM) and CPU time over the run, and
#      the simulator's CPU time beside it (both share the machine's cores).
#
# Usage: scripts/bench/rollout.sh
#   AGENTS=1000      simulated agents
#   SOAK=1s          the soak of each wave (part of "ready", not of the latency)
#   TRIAL=200ms      how long a simulated release stays on trial
#   BANKSWAP_BIN=P   use this binary (default: cargo build --release)
#   BENCH_DIR=DIR    parent of the work folder (default /var/tmp); removed on exit
# Bounded: the fleet must report within 600 s and each rollout finish within 300 s; every process is stopped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

AGENTS="${AGENTS:-1000}"
SOAK="${SOAK:-1s}"
TRIAL="${TRIAL:-200ms}"
TARGET_S=2
[[ "$AGENTS" =~ ^[1-9][0-9]*$ ]] || bench_die "AGENTS must be a positive integer"
need=$((AGENTS + 1024))
if (($(ulimit -n) < need)); then ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; fi

bench_build_all
bench_workdir
TOKEN=bench-admin-token-0123456789
printf '%s\n' "$TOKEN" >"$W/token"
"$BIN" keygen --out "$W/release" >/dev/null
"$BIN" console cert --out "$W/tls" >/dev/null
mkdir -p "$W/payload/bin"
printf '#!/bin/sh\nexec sleep 1000\n' >"$W/payload/bin/app"
chmod +x "$W/payload/bin/app"
publish() { "$BIN" publish --key "$W/release.key" --payload "$W/payload" --entrypoint bin/app --to "$W/data" --version "$@" >/dev/null; }
publish 1.0.0

bench_console "$W/data" "$W/tls" --admin-token-file "$W/token" --trust "$W/release.pub" --allow-anonymous-reports
api() { curl -sf --cacert "$W/tls/ca.pem" -H "Authorization: Bearer $TOKEN" "$CONSOLE_URL$1"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
console_cpu0="$(cpu_ticks "$CONSOLE_PID")"

"$BIN" simulate-agents --console "$CONSOLE_URL" --ca-cert "$W/tls/ca.pem" --trust "$W/release.pub" \
  --agents "$AGENTS" --version 1.0.0 --sequence 1 --fail 3.0.0 --trial "$TRIAL" --wait 60s >"$W/sim.jsonl" 2>"$W/sim.log" &
SIM_PID=$!
bench_track "$SIM_PID"
fleet_full() { [ "$(api /v1/fleet | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" -ge "$AGENTS" ]; }
bench_wait "$AGENTS agents reporting" 600 fleet_full
sleep 2 # every agent's first held request is in (they ask right after their first report)
rollout_state() { api /v1/rollouts | python3 -c "
import json,sys
r=[r for r in json.load(sys.stdin)['rollouts'] if r['channel']=='stable']
sys.exit(0 if r and r[0]['version']=='$1' and r[0]['state']=='$2' else 1)"; }
# wait_rollout VERSION STATE: like bench_wait, but shows the rollout if it never gets there.
wait_rollout() {
  local deadline=$((SECONDS + ${ROLLOUT_LIMIT:-300}))
  until rollout_state "$1" "$2"; do
    if ((SECONDS >= deadline)); then
      api /v1/rollouts | python3 -c 'import json,sys; r=json.load(sys.stdin)["rollouts"][0]; r["events"]=r["events"][-5:]; print(json.dumps(r, indent=1))' >&2 || true
      bench_log "simulator events: $(python3 -c 'import collections,json,sys; print(dict(collections.Counter((j["event"], j["version"]) for j in map(json.loads, open(sys.argv[1])))))' "$W/sim.jsonl")"
      bench_log "simulator stderr: $(tail -3 "$W/sim.log"); $(kill -0 "$SIM_PID" 2>/dev/null && echo running || echo 'not running')"
      bench_log "console log: $(grep -v ' DEBUG ' "$W/console.log" | tail -5)"
      bench_die "timed out after 300s waiting for the $1 rollout to be $2"
    fi
    sleep 0.1
  done
}

echo
echo "console rollout: $AGENTS simulated agents, waves 1%,10%,50%,100%, soak $SOAK, trial $TRIAL; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
publish 2.0.0 --waves 1%,10%,50%,100% --soak "$SOAK" --report-deadline 10m
wait_rollout 2.0.0 complete
api /v1/rollouts >"$W/good.json"
publish 3.0.0 --waves 1%,10%,50%,100% --soak "$SOAK" --report-deadline 10m
wait_rollout 3.0.0 halted
sleep 2 # admissions after the halt would show up here
api /v1/rollouts >"$W/bad.json"
console_cpu1="$(cpu_ticks "$CONSOLE_PID")"
sim_cpu="$(cpu_ticks "$SIM_PID")"
rss="$(awk '/^VmRSS/ {print $2}' "/proc/$CONSOLE_PID/status")"
hwm="$(awk '/^VmHWM/ {print $2}' "/proc/$CONSOLE_PID/status")"

python3 - "$W" "$SOAK" "$TARGET_S" <<'PY'
import json, math, re, sys
w, soak_text, target = sys.argv[1], sys.argv[2], float(sys.argv[3])
m = re.fullmatch(r"(\d+)(ms|s)", soak_text)
soak = int(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
lines = [json.loads(l) for l in open(f"{w}/sim.jsonl") if l.strip()]
def rollout(name, version):
    r = [r for r in json.load(open(f"{w}/{name}.json"))["rollouts"] if r["channel"] == "stable"][0]
    assert r["version"] == version, r
    return r

good = rollout("good", "2.0.0")
success = good["success"]
received = {l["agent"]: l["t_ms"] / 1000 for l in lines if l["event"] == "received" and l["version"] == "2.0.0"}
committed = {l["agent"]: l["t_ms"] / 1000 for l in lines if l["event"] == "committed" and l["version"] == "2.0.0"}
opens = [(e["at_ms"] / 1000, e["text"]) for e in good["events"] if " opened " in e["text"]]
print("good release: wave -> next wave")
worst_event = worst_answer = 0.0
admitted_before = set()
for t_open, text in opens:
    admitted = {a for a, t in received.items() if t < t_open}
    commits = sorted(committed[a] for a in admitted if a in committed and committed[a] < t_open)
    need = math.ceil(success * len(admitted) - 1e-9)
    t_need = commits[need - 1]
    ready = max(t_need, commits[-1] + soak)
    newcomers = [t for a, t in received.items() if t >= t_open]
    first = min(newcomers) if newcomers else float("nan")
    ev, ans = t_open - ready, first - ready
    worst_event, worst_answer = max(worst_event, ev), max(worst_answer, ans)
    print(f"  {len(admitted):5d} admitted, ready -> '{text.split(' (')[0]}': recorded +{ev:.3f} s, first new agent served +{ans:.3f} s")
print(f"  worst: recorded {worst_event:.3f} s, served {worst_answer:.3f} s (target <= {target} s: {'met' if max(worst_event, worst_answer) <= target else 'MISSED'})")
print(f"  all committed 2.0.0: {len(committed)} of {len(set(l['agent'] for l in lines))} agents")

bad = rollout("bad", "3.0.0")
halt_on = bad["halt_on"]
got = sorted((l["t_ms"] / 1000, l["agent"]) for l in lines if l["event"] == "received" and l["version"] == "3.0.0")
failed = sorted(l["t_ms"] / 1000 for l in lines if l["event"] == "failed" and l["version"] == "3.0.0")
halt = [e["at_ms"] / 1000 for e in bad["events"] if e["text"].startswith("halted:")][0]
admitted = sum(w["admitted"] for w in bad["waves"])
need = max(1, math.ceil(halt_on * admitted - 1e-9))
cross = failed[need - 1]
after = [a for t, a in got if t > halt]
print("bad release (every trial fails):")
print(f"  {admitted} admitted, {len(got)} received it, {len(failed)} failed; halt recorded +{halt - cross:.3f} s after the failure that crossed halt-on"
      f" (target <= {target} s: {'met' if halt - cross <= target else 'MISSED'}); received after the halt: {len(after)}")
print(f"  halt reason: {bad['halt_reason'][:160]}")
PY
tck="$(getconf CLK_TCK)"
awk -v a="$console_cpu0" -v b="$console_cpu1" -v s="$sim_cpu" -v t="$tck" -v r="$rss" -v h="$hwm" 'BEGIN {
  printf "console: RSS %.1f MiB now, peak (VmHWM) %.1f MiB; CPU %.2f s over both rollouts (simulator: %.2f s)\n", r/1024, h/1024, (b-a)/t, s/t }'
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
