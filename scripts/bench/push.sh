#!/usr/bin/env bash
# Benchmark: console push to many held agents at once.
#
# What it measures. For each count in AGENTS (default "5000 10000"), a fresh
# `bankswap console serve` (TLS from `bankswap console cert`) on loopback, and a
# load client (examples/push_load.rs) that opens that many TLS connections
# (100 every 50 ms), each holding what an agent sends when it waits for a push:
# `GET /v1/channels/stable/release.json?wait=300` with `If-None-Match: <current
# ETag>`. The console runs with `--max-wait MAX_WAIT`: each hold ends with a 304
# after it, and the client asks again at once on the same connection, as an
# agent does. Once all are written and HOLD_SECS passed (longer than MAX_WAIT
# and than every client and server timeout: the agent's request and held
# margin, 30 s; the console's header and handshake timeouts, 30 s and 10 s),
# it runs `bankswap publish`
# (a tiny payload, next version) and records when each connection receives its
# response's status line, counted from the moment publish returned (the new
# manifest is in place; the console notices it within its 100 ms stat poll).
#
# How to read it. Per count: how many learned of the publish (a 200) within 1 s
# of it, as a share of all agents, the latency percentiles, and the console's
# RSS while holding them all and its peak (VmHWM). Targets (SPEC §8): >= 99 %
# within 1 s at 10,000 agents; console RSS <= 256 MiB. The client and the
# console share the machine's cores: the client is lean (raw HTTP/1.1 over
# tokio-rustls, 1 worker thread), and its CPU time during the burst is printed
# next to the console's. The load average is printed: rerun when it was high.
#
# mTLS (SPEC §10, issue 11). For each count the script runs every mode of
# MODES: `tls` as above (anonymous holds), and `mtls`: the console runs with
# `--require-client-cert`, a token for the count is made (`console token create
# --uses N`), and every load agent first enrolls as a real one does (its own
# key, a CSR, POST /v1/enroll) and then holds with its client certificate.
# Both print the handshake cost: the client's TCP + TLS connect time (p50,
# p99) and the console's CPU time per connection during the ramp, next to each
# other in the summary. Target with mTLS (issue 11): >= 99 % within 1 s,
# console RSS <= 512 MiB.
#
# Usage: scripts/bench/push.sh
#   AGENTS="5000 10000"  held agents per measurement (one fresh console each)
#   MODES="tls mtls"     anonymous TLS holds, and enrolled agents holding over mTLS
#   MAX_WAIT=20          the console's --max-wait, seconds (short-limit mode; FULL=1: 300).
#                        Shorter makes the console re-serve AGENTS/MAX_WAIT holds a second
#                        (at 5 s and 10,000 agents, 2,000/s: 60 times production's churn)
#   HOLD_SECS=45         hold after every request is written, before the publish
#                        (must exceed MAX_WAIT and 30 s; FULL=1: 330)
#   CLIENT_THREADS=1     the load client's tokio worker threads
#   BENCH_DIR=DIR        parent of the work folder (default /var/tmp); removed on exit
#   BANKSWAP_BIN=P       use this binary (and examples/push_load next to it)
# Raises the open-file limit (ulimit -n) to what AGENTS needs, if the hard limit allows.
# Bounded: each measurement is killed after HOLD_SECS + 300 s; all processes are stopped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

AGENTS="${AGENTS:-5000 10000}"
MODES="${MODES:-tls mtls}"
for mode in $MODES; do
  [[ "$mode" == tls || "$mode" == mtls ]] || bench_die "MODES holds tls and/or mtls, not '$mode'"
done
if [[ "${FULL:-0}" == 1 ]]; then
  MAX_WAIT="${MAX_WAIT:-300}"
  HOLD_SECS="${HOLD_SECS:-330}"
fi
MAX_WAIT="${MAX_WAIT:-20}"
HOLD_SECS="${HOLD_SECS:-45}"
# The longest client or server timeout a held agent must outlive (agent
# [timeouts] request and held_margin, console header timeout), seconds.
LONGEST_TIMEOUT=30
TARGET_PCT=99
TARGET_RSS_MIB=256
# issue 11: the console's memory with every agent enrolled and holding over mTLS
TARGET_MTLS_RSS_MIB=512
max_agents=0
for n in $AGENTS; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || bench_die "AGENTS must be positive integers, not '$n'"
  if ((n > max_agents)); then max_agents=$n; fi
done
[[ "$MAX_WAIT" =~ ^[1-9][0-9]*$ ]] || bench_die "MAX_WAIT must be a positive number of seconds"
[[ "$HOLD_SECS" =~ ^[0-9]+$ ]] || bench_die "HOLD_SECS must be a number"
((HOLD_SECS > MAX_WAIT && HOLD_SECS > LONGEST_TIMEOUT)) ||
  bench_die "HOLD_SECS=$HOLD_SECS must exceed MAX_WAIT=$MAX_WAIT and every timeout ($LONGEST_TIMEOUT s)"

need=$((max_agents + 1024))
if (($(ulimit -n) < need)); then
  ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
(($(ulimit -n) >= max_agents + 200)) ||
  bench_die "open-file limit $(ulimit -n) (hard $(ulimit -Hn)) is too low for $max_agents agents; raise the hard limit"
ports=$(awk '{print $2 - $1}' /proc/sys/net/ipv4/ip_local_port_range)
((ports > max_agents + 1000)) || bench_die "only $ports local ports (net.ipv4.ip_local_port_range) for $max_agents agents"

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
UPTIME_START="$(uptime)"
bench_build_all push_load
bench_workdir

"$BIN" keygen --out "$W/release" >/dev/null
"$BIN" console cert --out "$W/tls" >/dev/null
mkdir -p "$W/payload/bin"
printf '#!/bin/sh\nexec sleep 1000\n' >"$W/payload/bin/app"
chmod +x "$W/payload/bin/app"
cat >"$W/publish.sh" <<EOF
#!/bin/sh
# Publishes the next version of the tiny payload.
n=\$(cat "$W/next")
echo \$((n + 1)) >"$W/next"
exec "$BIN" publish --key "$W/release.key" --payload "$W/payload" --version "1.0.\$n" --entrypoint bin/app --to "$W/data"
EOF
chmod +x "$W/publish.sh"
echo 0 >"$W/next"
"$W/publish.sh" >/dev/null

echo
echo "console push: held TLS requests (?wait=300, If-None-Match; console --max-wait ${MAX_WAIT}s, re-held at once),"
echo "held ${HOLD_SECS}s, then one publish; ulimit -n $(ulimit -n)"
echo "uptime at start: $UPTIME_START ($(nproc) CPUs)"
results=()
for n in $AGENTS; do
  for mode in $MODES; do
    : >"$W/console.out"
    extra=()
    [[ "$mode" == mtls ]] && extra=(--require-client-cert)
    bench_console "$W/data" "$W/tls" --max-wait "${MAX_WAIT}s" "${extra[@]}"
    token_env=()
    if [[ "$mode" == mtls ]]; then
      "$BIN" console token create --data "$W/data" --uses "$n" --expires 2h >"$W/token"
      token_env=(ENROLL_TOKEN_FILE="$W/token")
    fi
    echo
    echo "== $n agents, $mode (console pid $CONSOLE_PID, $CONSOLE_URL), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    timeout $((HOLD_SECS + 300 + n / 20)) env "${token_env[@]}" "$EXAMPLES/push_load" "$CONSOLE_ADDR" "$W/tls/ca.pem" "$n" 300 "$HOLD_SECS" "$CONSOLE_PID" \
      "$W/publish.sh" | tee "$W/push-$n-$mode" || bench_die "push_load failed for $n agents ($mode)"
    kill -TERM "$CONSOLE_PID" && wait "$CONSOLE_PID" || true
    f="$W/push-$n-$mode"
    pct="$(sed -n 's/.*within 1 s [0-9]* = \([0-9.]*\) %.*/\1/p' "$f")"
    p50="$(sed -n 's/^latency: p50 \([0-9.]*\) s.*/\1/p' "$f")"
    p99="$(sed -n 's/^latency: .*p99 \([0-9.]*\) s.*/\1/p' "$f")"
    held="$(sed -n 's/^console RSS: \([0-9.]*\) MiB while holding.*/\1/p' "$f")"
    hwm="$(sed -n 's/^console RSS: .*peak (VmHWM) \([0-9.]*\) MiB.*/\1/p' "$f")"
    hs="$(sed -n 's/^handshake ([^)]*): p50 \([0-9.]*\) ms.*/\1/p' "$f")"
    cpu="$(sed -n 's/^console CPU during the ramp.* = \([0-9.]*\) ms per connection.*/\1/p' "$f")"
    results+=("$n $mode $pct $p50 $p99 $held $hwm $hs $cpu")
    sleep 2
  done
done

verdict() { if awk "BEGIN {exit !($1)}"; then echo met; else echo MISSED; fi; }
echo
echo "summary (held ${HOLD_SECS}s through console --max-wait ${MAX_WAIT}s first; times from publish's return; share of all agents):"
printf '  %7s %5s %12s %8s %8s %16s %14s %13s %15s\n' agents mode within_1s p50_s p99_s console_rss_held console_peak handshake_p50 console_cpu/conn
for r in "${results[@]}"; do
  read -r n mode pct p50 p99 held hwm hs cpu <<<"$r"
  rss_target=$TARGET_RSS_MIB
  [[ "$mode" == mtls ]] && rss_target=$TARGET_MTLS_RSS_MIB
  printf '  %7s %5s %10s %% %8s %8s %12s MiB %10s MiB %10s ms %12s ms   within 1 s >= %s %%: %s; RSS <= %s MiB: %s\n' \
    "$n" "$mode" "$pct" "$p50" "$p99" "$held" "$hwm" "$hs" "$cpu" "$TARGET_PCT" "$(verdict "$pct >= $TARGET_PCT")" \
    "$rss_target" "$(verdict "$hwm <= $rss_target")"
done
echo "  load average: start $LOAD_START, end $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
echo "  uptime at end: $(uptime)"
