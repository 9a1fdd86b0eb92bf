#!/usr/bin/env bash
# Benchmark: a running agent stages a big release from the console over
# loopback HTTPS, against curl piped into the shell tools, side by side in the
# same run; the agent's memory; how fast a publish is pushed to it.
#
# What it measures. One console (`bankswap console serve`, TLS from
# `bankswap console cert`) and one agent (`bankswap run`, max_delay = "0s",
# [health] grace = "1s", [update] delta_max_ratio = 0 so that every staging
# takes the full artifact, this bench's subject (delta.sh measures deltas); its
# payload a `sleep`). A deterministic payload
# (default 256 MiB in 2000 files, half random bytes, half hex text; about
# 200 MiB as tar.zst, lib.sh's generator) is published once per round as
# 2.0.N, with one small file changed so every artifact differs, into a side
# folder before any timing (so no publish writes to disk during a run); each
# round then makes the next release current by renaming its signature and
# manifest into the console's channel (what `publish` does last), and the
# console pushes it to the held agent. Each round times, in rotating order:
#   bankswap  the agent, from its log line `release scheduled` (manifest seen and
#             verified) to `staged and verified` (artifact downloaded, hashed,
#             unpacked into the idle bank, fsynced, bank record written). This
#             includes wiping the idle bank (the release of two rounds before,
#             2000 files); the `wipe_s` column shows what removing such a tree
#             and syncing costs, for scale.
#   sha256    `curl -s --cacert CA URL | tee >(sha256sum) | zstd -d | tar -x -C fresh; sync`
#             (plus waiting for sha256sum and comparing the hash)
#   openssl   the same with `tee >(openssl dgst -sha256)`: SPEC §8's fastest pipeline
# from the same console, of the same artifact, into a fresh folder. Outputs
# are synced before every run; the artifact is in the page cache for all.
# The agent's peak RSS per round is its VmHWM, reset before the round
# (/proc/PID/clear_refs), read after the commit.
# Then the push latency: PUSHES real `bankswap publish` runs of a tiny payload,
# from the moment publish returns (`date`) to the agent's `release scheduled`
# log line (same clock). Then the idle agent: its VmRSS and CPU time after
# IDLE_SECS of nothing (after all of the above), against the same agent when
# fresh: FRESH_SECS after it installed its first (tiny) release, before any of
# the big stagings. Staging must give its memory back: the difference is the
# `idle growth` line.
#
# How to read it. One line per round, then the medians. ratio = baseline time /
# bankswap time: > 1 means the agent is faster. Targets (issue 14; SPEC §8):
# ratio vs the openssl pipeline >= 1.5 (SPEC: >= 1.0), vs the sha256 one >= 0.9,
# staging peak RSS <= 16 MiB, idle RSS <= 10 MiB and within 0.5 MiB of the fresh
# agent, push < 1 s. The load average is printed at the start and the end: the
# machine is shared; rerun when high.
#
# Usage: scripts/bench/stage.sh
#   SIZE_MIB=256   payload size (SIZE_MIB=16 ROUNDS=2 IDLE_SECS=5 is a quick smoke test)
#   FILES=N        payload files (default 2000 scaled by SIZE_MIB/256, at least 20)
#   ROUNDS=5       timed rounds;  WARMUP=1  untimed rounds first
#   PUSHES=5       publishes timed for the push latency
#   IDLE_SECS=60   idle time before the idle RSS is read
#   FRESH_SECS=12  wait after the first install before the fresh RSS is read (tokio
#                  lets an idle blocking thread, the first staging's, go after 10 s)
#   POLL_SECS=5    the agent's poll_interval. Its checker holds a push request for
#                  this long, but after a check that returned a new release it
#                  sleeps a whole poll_interval (±10 %) before holding again: so
#                  each timed publish waits POLL_SECS * 1.1 + 1 s after the previous
#                  commit, to be pushed to a held request as in steady state.
#   BENCH_DIR=DIR  parent of the work folder (default /var/tmp); removed on exit
#   BANKSWAP_BIN=P use this binary instead of building
#   SMAPS_DIR=DIR  also save the agent's /proc/PID/smaps when fresh and when idle,
#                  as DIR/fresh.smaps and DIR/idle.smaps (where the idle growth is)
# Needs: python3, zstd, curl, openssl, sha256sum (scripts/setup-test-deps.sh).
# Bounded: every wait has a deadline; all processes are stopped on exit.
#
# `scripts/bench/stage.sh in-place` instead compares today's scratch staging with
# the old in-place path, side by side (see stage-in-place.sh).
set -euo pipefail
if [ "${1:-}" = in-place ]; then exec "$(dirname "$0")/stage-in-place.sh"; fi
source "$(dirname "$0")/lib.sh"

SIZE_MIB="${SIZE_MIB:-256}"
ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-1}"
PUSHES="${PUSHES:-5}"
IDLE_SECS="${IDLE_SECS:-60}"
FRESH_SECS="${FRESH_SECS:-12}"
POLL_SECS="${POLL_SECS:-5}"
FILES="${FILES:-$((SIZE_MIB * 2000 / 256 > 20 ? SIZE_MIB * 2000 / 256 : 20))}"
TARGET_RATIO=0.9
TARGET_RATIO_SSL=1.5
TARGET_RSS_MIB=16
TARGET_IDLE_MIB=10
TARGET_IDLE_GROWTH_MIB=0.5
TARGET_PUSH_S=1
for v in SIZE_MIB ROUNDS FILES PUSHES; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || bench_die "$v must be a positive integer, not '${!v}'"
done
for v in WARMUP IDLE_SECS POLL_SECS FRESH_SECS; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || bench_die "$v must be a number, not '${!v}'"
done
command -v openssl >/dev/null || bench_die "openssl not found"

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
UPTIME_START="$(uptime)"
bench_build_all
command -v curl >/dev/null || bench_die "curl not found"
bench_workdir

# --- setup: keys, TLS, every release published into the console's folder -----
"$BIN" keygen --out "$W/release" >/dev/null
"$BIN" console cert --out "$W/tls" >/dev/null
CA="$W/tls/ca.pem"
DATA="$W/data"
CHAN="$DATA/v1/channels/stable"
mkdir -p "$W/rel" "$W/tiny/bin"
printf '#!/bin/sh\nexec sleep 100000\n' >"$W/tiny/bin/app"
chmod +x "$W/tiny/bin/app"

# publish DIR VERSION: publishes and keeps a copy of the release (manifest and signature) in $W/rel/VERSION.*
publish() {
  "$BIN" publish --key "$W/release.key" --payload "$1" --version "$2" \
    --entrypoint bin/app --to "$DATA" >/dev/null
  cp "$CHAN/release.json" "$W/rel/$2.json"
  cp "$CHAN/release.json.minisig" "$W/rel/$2.json.minisig"
}
# make_current VERSION: what publish does last: the signature, then the manifest, each renamed into place.
make_current() {
  cp "$W/rel/$1.json.minisig" "$CHAN/.bench.minisig" && mv -f "$CHAN/.bench.minisig" "$CHAN/release.json.minisig"
  cp "$W/rel/$1.json" "$CHAN/.bench.json" && mv -f "$CHAN/.bench.json" "$CHAN/release.json"
}
manifest_field() { # VERSION artifact-key
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["artifact"][sys.argv[2]])' "$W/rel/$1.json" "$2"
}

publish "$W/tiny" 1.0.0
bench_log "generating the payload: $SIZE_MIB MiB in $FILES files"
bench_payload "$W/big" "$SIZE_MIB" "$FILES"
PAYLOAD_MIB="$(awk -v s="$(du -sb "$W/big" | cut -f1)" 'BEGIN {printf "%.1f", s/1048576}')"
TOTAL=$((WARMUP + ROUNDS))
for ((i = 1; i <= TOTAL; i++)); do
  bench_log "publishing 2.0.$i ($i of $TOTAL)"
  echo "round $i" >"$W/big/ROUND"
  publish "$W/big" "2.0.$i"
done
ART_MIB="$(awk -v s="$(manifest_field 2.0.1 size)" 'BEGIN {printf "%.1f", s/1048576}')"
rm -rf "$W/big"
make_current 1.0.0
sync

# --- the console and the agent --------------------------------------------------
bench_console "$DATA" "$W/tls"
AGENT_LOG="$W/agent.log"
cat >"$W/agent.toml" <<EOF
console = "$CONSOLE_URL"
root = "$W/root"
trusted_keys = ["$W/release.pub"]
poll_interval = "${POLL_SECS}s"
max_delay = "0s"
[health]
grace = "1s"
[update]
delta_max_ratio = 0
[tls]
ca_certs = ["$CA"]
EOF
BANKSWAP_LOG=info "$BIN" run --config "$W/agent.toml" >/dev/null 2>>"$AGENT_LOG" &
AGENT_PID=$!
bench_track "$AGENT_PID"
bench_wait "the agent to install 1.0.0" 60 bench_committed "$W/root" 1.0.0
sleep "$FRESH_SECS"
RSS_EARLY="$(bench_proc_kib "$AGENT_PID" VmRSS)"
save_smaps() { if [ -n "${SMAPS_DIR:-}" ]; then mkdir -p "$SMAPS_DIR" && cat "/proc/$AGENT_PID/smaps" >"$SMAPS_DIR/$1.smaps"; fi; }
save_smaps fresh
EARLY_PARTS="anon $(bench_proc_kib "$AGENT_PID" RssAnon), file $(bench_proc_kib "$AGENT_PID" RssFile) KiB"

# --- runs ------------------------------------------------------------------------
vre() { printf 'version="?%s"?( |$)' "${1//./\\.}"; } # a version field in the log

run_agent() { # VERSION
  local v="$1" re
  re="$(vre "$v")"
  sync
  RESET_HWM=1
  echo 5 >"/proc/$AGENT_PID/clear_refs" 2>/dev/null || RESET_HWM=0
  make_current "$v"
  bench_wait "the agent to commit $v" 300 bench_log_has "$AGENT_LOG" " committed .*$re"
  local t_sched t_staging t_staged
  t_sched="$(bench_log_time "$AGENT_LOG" "release scheduled $re")"
  t_staging="$(bench_log_time "$AGENT_LOG" " staging $re")"
  t_staged="$(bench_log_time "$AGENT_LOG" "staged and verified $re")"
  T_AGENT="$(bench_sub "$t_sched" "$t_staged")"
  T_FETCH="$(bench_sub "$t_staging" "$t_staged")"
  HWM_AGENT="$(bench_proc_kib "$AGENT_PID" VmHWM)"
}

run_pipeline() { # VERSION sha256|openssl
  local v="$1" tool="$2" url sha a b got
  url="$CONSOLE_URL/v1/$(manifest_field "$v" path)"
  sha="$(manifest_field "$v" sha256)"
  mkdir "$W/fresh"
  sync
  a="$(bench_now)"
  if [ "$tool" = sha256 ]; then
    bash -c 'set -o pipefail; curl -sS --fail --cacert "$1" "$2" | tee >(sha256sum >"$4") | zstd -qd | tar -x -C "$3"; s=$?; wait $!; sync; exit $s' \
      _ "$CA" "$url" "$W/fresh" "$W/hash" 2>"$W/pipeline.err" || { cat "$W/pipeline.err" >&2; bench_die "the $tool pipeline failed"; }
  else
    bash -c 'set -o pipefail; curl -sS --fail --cacert "$1" "$2" | tee >(openssl dgst -sha256 -r >"$4") | zstd -qd | tar -x -C "$3"; s=$?; wait $!; sync; exit $s' \
      _ "$CA" "$url" "$W/fresh" "$W/hash" 2>"$W/pipeline.err" || { cat "$W/pipeline.err" >&2; bench_die "the $tool pipeline failed"; }
  fi
  b="$(bench_now)"
  got="$(cut -d' ' -f1 "$W/hash")"
  [ "$got" = "$sha" ] || bench_die "$tool pipeline: hash $got, expected $sha"
  T_PIPE="$(bench_sub "$a" "$b")"
  a="$(bench_now)"
  rm -rf "$W/fresh" "$W/hash"
  sync
  T_WIPE="$(bench_sub "$a" "$(bench_now)")"
}

round() { # INDEX
  local v="2.0.$1" order=(agent sha256 openssl) k which
  for ((k = 0; k < 3; k++)); do
    which="${order[$(((k + $1) % 3))]}"
    ORDER+="${ORDER:+,}$which"
    case "$which" in
      agent) run_agent "$v" ;;
      sha256) run_pipeline "$v" sha256 && T_SHA="$T_PIPE" ;;
      openssl) run_pipeline "$v" openssl && T_SSL="$T_PIPE" ;;
    esac
  done
}

for ((i = 1; i <= WARMUP; i++)); do
  bench_log "warm-up round $i of $WARMUP (untimed)"
  ORDER=""
  round "$i"
done

echo
echo "agent staging vs curl pipelines: payload $PAYLOAD_MIB MiB in $FILES files, artifact $ART_MIB MiB tar.zst, $ROUNDS rounds"
echo "bankswap: agent log 'release scheduled' -> 'staged and verified' (fetch: 'staging' -> 'staged and verified')"
echo "sha256:   curl -s --cacert CA URL | tee >(sha256sum) | zstd -d | tar -x -C DIR; sync"
echo "openssl:  curl -s --cacert CA URL | tee >(openssl dgst -sha256) | zstd -d | tar -x -C DIR; sync"
echo "uptime at start: $UPTIME_START ($(nproc) CPUs); $WARMUP untimed warm-up round(s) done"
echo
printf '%-5s %-22s %9s %8s %9s %9s %8s %8s %9s %8s\n' \
  round order bankswap fetch sha256 openssl r_sha r_ssl peak_rss wipe_s
t_a=() t_f=() t_s=() t_o=() r_s=() r_o=() peak=0
for ((i = WARMUP + 1; i <= TOTAL; i++)); do
  ORDER=""
  round "$i"
  rs="$(awk -v s="$T_SHA" -v b="$T_AGENT" 'BEGIN {printf "%.3f", s/b}')"
  ro="$(awk -v s="$T_SSL" -v b="$T_AGENT" 'BEGIN {printf "%.3f", s/b}')"
  t_a+=("$T_AGENT") t_f+=("$T_FETCH") t_s+=("$T_SHA") t_o+=("$T_SSL") r_s+=("$rs") r_o+=("$ro")
  if ((HWM_AGENT > peak)); then peak="$HWM_AGENT"; fi
  printf '%-5s %-22s %9s %8s %9s %9s %8s %8s %5.1f MiB %8s\n' "$((i - WARMUP))" "$ORDER" \
    "$T_AGENT" "$T_FETCH" "$T_SHA" "$T_SSL" "$rs" "$ro" "$(awk -v k="$HWM_AGENT" 'BEGIN {print k/1024}')" "$T_WIPE"
done
[ "$RESET_HWM" = 1 ] || echo "note: /proc/PID/clear_refs was not writable: peak_rss is since the agent started"

# --- push latency ---------------------------------------------------------------------
echo
echo "push: 'bankswap publish' returns -> the agent logs 'release scheduled' ($PUSHES publishes of a tiny payload)"
push=()
HOLD_PAUSE="$(awk -v p="$POLL_SECS" 'BEGIN {print p * 1.1 + 1}')"
for ((k = 1; k <= PUSHES; k++)); do
  v="3.0.$k"
  sleep "$HOLD_PAUSE" # the agent is holding a request again (see POLL_SECS above)
  a="$(bench_now)"
  "$BIN" publish --key "$W/release.key" --payload "$W/tiny" --version "$v" \
    --entrypoint bin/app --to "$DATA" >/dev/null
  b="$(bench_now)"
  bench_wait "the agent to schedule $v" 30 bench_log_has "$AGENT_LOG" "release scheduled $(vre "$v")"
  t="$(bench_sub "$b" "$(bench_log_time "$AGENT_LOG" "release scheduled $(vre "$v")")")"
  push+=("$t")
  printf '  %s: publish took %s s; seen by the agent %s s after it returned\n' "$v" "$(bench_sub "$a" "$b")" "$t"
  bench_wait "the agent to commit $v" 60 bench_committed "$W/root" "$v"
done

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }

# --- idle -------------------------------------------------------------------------------
bench_log "idling $IDLE_SECS s"
c0="$(bench_cpu_ticks "$AGENT_PID")"
sleep "$IDLE_SECS"
c1="$(bench_cpu_ticks "$AGENT_PID")"
RSS_IDLE="$(bench_proc_kib "$AGENT_PID" VmRSS)"
save_smaps idle
IDLE_PARTS="anon $(mib "$(bench_proc_kib "$AGENT_PID" RssAnon)"), file $(mib "$(bench_proc_kib "$AGENT_PID" RssFile)")"
bench_committed "$W/root" "3.0.$PUSHES" || bench_die "the agent is not on 3.0.$PUSHES at the end"

# --- summary ---------------------------------------------------------------------------
verdict() { if awk "BEGIN {exit !($1)}"; then echo met; else echo MISSED; fi; }
med_a="$(bench_median "${t_a[@]}")" med_f="$(bench_median "${t_f[@]}")"
med_s="$(bench_median "${t_s[@]}")" med_o="$(bench_median "${t_o[@]}")"
med_rs="$(bench_median "${r_s[@]}")" med_ro="$(bench_median "${r_o[@]}")"
med_p="$(bench_median "${push[@]}")"
max_p="$(printf '%s\n' "${push[@]}" | sort -g | tail -1)"
mibs() { awk -v s="$1" -v m="$PAYLOAD_MIB" 'BEGIN {printf "%.0f MiB/s", m/s}'; }
echo
echo "summary ($ROUNDS rounds, payload $PAYLOAD_MIB MiB / artifact $ART_MIB MiB, loopback HTTPS from one console):"
printf '  median agent staging     %7.3f s  (%s of payload; fetch-to-verified part %.3f s)\n' "$med_a" "$(mibs "$med_a")" "$med_f"
printf '  median sha256 pipeline   %7.3f s  (%s)\n' "$med_s" "$(mibs "$med_s")"
printf '  median openssl pipeline  %7.3f s  (%s)\n' "$med_o" "$(mibs "$med_o")"
printf '  median ratio vs sha256   %7.3f    > 1: the agent is faster   target >= %s: %s\n' \
  "$med_rs" "$TARGET_RATIO" "$(verdict "$med_rs >= $TARGET_RATIO")"
printf '  median ratio vs openssl  %7.3f    target >= %s: %s (SPEC §8 asks >= 1.0: %s)\n' \
  "$med_ro" "$TARGET_RATIO_SSL" "$(verdict "$med_ro >= $TARGET_RATIO_SSL")" "$(verdict "$med_ro >= 1.0")"
printf '  agent peak RSS staging   %7s MiB  max over rounds of VmHWM   target <= %s MiB: %s\n' \
  "$(mib "$peak")" "$TARGET_RSS_MIB" "$(verdict "$peak / 1024 <= $TARGET_RSS_MIB")"
printf '  agent idle RSS           %7s MiB  after %s s idle (%s MiB); CPU while idle %s ticks (1/100 s)   target <= %s MiB: %s\n' \
  "$(mib "$RSS_IDLE")" "$IDLE_SECS" "$IDLE_PARTS" "$((c1 - c0))" "$TARGET_IDLE_MIB" "$(verdict "$RSS_IDLE / 1024 <= $TARGET_IDLE_MIB")"
printf '  agent fresh RSS          %7s MiB  %s s after its first install, before any big staging (%s)\n' \
  "$(mib "$RSS_EARLY")" "$FRESH_SECS" "$EARLY_PARTS"
GROWTH=$((RSS_IDLE - RSS_EARLY))
printf '  idle growth              %7s MiB  idle minus fresh, after %s stagings   target <= %s MiB: %s\n' \
  "$(mib "$GROWTH")" "$((TOTAL + PUSHES))" "$TARGET_IDLE_GROWTH_MIB" "$(verdict "$GROWTH / 1024 <= $TARGET_IDLE_GROWTH_MIB")"
printf '  push publish -> seen     %7.3f s median, %s s max over %s publishes   target < %s s: %s\n' \
  "$med_p" "$max_p" "$PUSHES" "$TARGET_PUSH_S" "$(verdict "$max_p < $TARGET_PUSH_S")"
echo "  load average: start $LOAD_START, end $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
echo "  uptime at end: $(uptime)"
