#!/usr/bin/env bash
# Benchmark: `bankswap apply` of a big offline release against the plain shell
# baseline doing the same job, side by side in the same run.
#
# What it measures. A deterministic payload (default 256 MiB in 2000 files, half
# random bytes, half hex text; about 200 MiB as tar.zst) is published as v2 on a
# channel whose tiny v1 is already installed in a root. Each round times, on a
# fresh copy of that root and a fresh folder:
#   bankswap  `bankswap apply --root ROOT --bundle DATA --trust KEY.pub`
#             (verify the signed manifest, stream the artifact through SHA-256,
#             zstd and tar into the idle bank, fsync, swap, commit)
#   baseline  `sha256sum -c (the artifact) && zstd -dc ARTIFACT | tar -x -C DIR && sync`
# The order alternates between rounds (odd rounds bankswap first) to cancel
# order effects. Outputs are deleted and synced between runs, so every run
# writes to disk; the artifact itself stays in the page cache for both (unless
# DROP_CACHES=1 as root, which drops the page cache before every timed run).
#
# How to read it. One line per round, then the medians. ratio = baseline time /
# bankswap time: > 1 means bankswap is faster than the baseline, < 1 slower.
# Targets (SPEC §8 / the issue): median ratio >= 0.9, and bankswap's peak RSS
# (max over rounds, GNU time's "Maximum resident set size") <= 32 MiB. Wall
# times on a shared machine are noisy: the load average is printed at the start
# and end; rerun when it was high.
#
# Usage: scripts/bench/apply.sh
#   SIZE_MIB=256     payload size (SIZE_MIB=16 ROUNDS=2 is a quick smoke test)
#   FILES=N          number of payload files (default 2000 scaled by SIZE_MIB/256, at least 20)
#   ROUNDS=5         timed rounds
#   WARMUP=1         untimed rounds of both first (the file system's first file creations are slow)
#   BENCH_DIR=DIR    where the work folder is created (default /var/tmp, not a tmpfs); removed on exit
#   DROP_CACHES=1    drop the page cache before each timed run (root only)
#   BANKSWAP_BIN=P   benchmark this binary instead of `cargo build --release --locked`'s
# Needs: python3, zstd, GNU time, sha256sum (scripts/setup-test-deps.sh installs them).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SIZE_MIB="${SIZE_MIB:-256}"
ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-1}"
FILES="${FILES:-$(( SIZE_MIB * 2000 / 256 > 20 ? SIZE_MIB * 2000 / 256 : 20 ))}"
TARGET_RATIO=0.9
TARGET_RSS_MIB=32
[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || bench_die "SIZE_MIB must be a positive integer, not '$SIZE_MIB'"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || bench_die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ "$FILES" =~ ^[1-9][0-9]*$ ]] || bench_die "FILES must be a positive integer, not '$FILES'"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || bench_die "WARMUP must be a number, not '$WARMUP'"

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
bench_build
bench_workdir

# --- setup: key, tiny v1 installed in a template root, big v2 published ------
bench_log "generating the payload: $SIZE_MIB MiB in $FILES files"
t0="$(bench_now)"
mkdir -p "$W/v1/bin"
printf '#!/bin/sh\nexec sleep 1000\n' >"$W/v1/bin/app"
chmod +x "$W/v1/bin/app"
bench_payload "$W/v2" "$SIZE_MIB" "$FILES"
bench_log "payload ready in $(awk -v a="$t0" -v b="$(bench_now)" 'BEGIN {printf "%.1f", b-a}') s; publishing"

"$BIN" keygen --out "$W/release" >/dev/null
"$BIN" publish --key "$W/release.key" --payload "$W/v1" --version 1.0.0 \
  --entrypoint "bin/app" --to "$W/data" >/dev/null
"$BIN" init --root "$W/root-template" --bundle "$W/data" --trust "$W/release.pub" >/dev/null
"$BIN" publish --key "$W/release.key" --payload "$W/v2" --version 2.0.0 \
  --entrypoint "bin/app" --to "$W/data" >/dev/null
ART_REL="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["artifact"]["path"])' \
  "$W/data/v1/channels/stable/release.json")"
ART="$W/data/v1/$ART_REL"
[ -f "$ART" ] || bench_die "artifact $ART not found"
ART_SHA="$(basename "$ART" .tar.zst)"
ART_MIB="$(awk -v s="$(stat -c %s "$ART")" 'BEGIN {printf "%.1f", s/1048576}')"
PAYLOAD_MIB="$(awk -v s="$(du -sb "$W/v2" | cut -f1)" 'BEGIN {printf "%.1f", s/1048576}')"
rm -rf "$W/v2" # only the published artifact is needed from here on
sync

run_bankswap() { # ROUND
  cp -a "$W/root-template" "$W/root"
  bench_settle
  local a b
  a="$(bench_now)"
  if ! /usr/bin/time -v -o "$W/time-bankswap-$1" \
    "$BIN" apply --root "$W/root" --bundle "$W/data" --trust "$W/release.pub" \
    >"$W/log-bankswap-$1" 2>&1; then
    cat "$W/log-bankswap-$1" "$W/time-bankswap-$1" >&2
    bench_die "round $1: bankswap apply failed"
  fi
  b="$(bench_now)"
  T_BANKSWAP="$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b-a}')"
  RSS_BANKSWAP="$(bench_rss_kib "$W/time-bankswap-$1")"
  local status
  status="$("$BIN" status --root "$W/root" --json)"
  [[ "$status" == *'"2.0.0"'* ]] || bench_die "round $1: bankswap status does not show 2.0.0 after apply: $status"
  if [ "$1" = 1 ]; then FILES_BANKSWAP="$(find "$W/root" -type f -name 'f[0-9]*' | wc -l)"; fi
  bench_settle "$W/root"
}

run_baseline() { # ROUND
  mkdir "$W/fresh"
  bench_settle
  local a b
  a="$(bench_now)"
  if ! /usr/bin/time -v -o "$W/time-baseline-$1" bash -c \
    'printf "%s  %s\n" "$1" "$2" | sha256sum --quiet -c && zstd -qdc "$2" | tar -x -C "$3" && sync' \
    _ "$ART_SHA" "$ART" "$W/fresh" >"$W/log-baseline-$1" 2>&1; then
    cat "$W/log-baseline-$1" >&2
    bench_die "round $1: the baseline failed"
  fi
  b="$(bench_now)"
  T_BASELINE="$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b-a}')"
  RSS_BASELINE="$(bench_rss_kib "$W/time-baseline-$1")"
  if [ "$1" = 1 ]; then FILES_BASELINE="$(find "$W/fresh" -type f -name 'f[0-9]*' | wc -l)"; fi
  bench_settle "$W/fresh"
}

# --- rounds -------------------------------------------------------------------
for ((r = 1; r <= WARMUP; r++)); do
  bench_log "warm-up round $r of $WARMUP (untimed)"
  run_bankswap "warmup$r"
  run_baseline "warmup$r"
done
echo
echo "bankswap apply vs baseline: payload $PAYLOAD_MIB MiB in $FILES files, artifact $ART_MIB MiB tar.zst, $ROUNDS rounds"
echo "baseline: sha256sum -c && zstd -dc ARTIFACT | tar -x -C DIR && sync"
echo "load average at start: $LOAD_START ($(nproc) CPUs); $WARMUP untimed warm-up round(s) done"
echo
printf '%-6s %-18s %12s %12s %8s %14s %14s\n' round order bankswap_s baseline_s ratio bankswap_rss baseline_rss
times_b=() times_s=() ratios=() peak_rss=0
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then
    order="bankswap,baseline"
    run_bankswap "$r"
    run_baseline "$r"
  else
    order="baseline,bankswap"
    run_baseline "$r"
    run_bankswap "$r"
  fi
  ratio="$(awk -v s="$T_BASELINE" -v b="$T_BANKSWAP" 'BEGIN {printf "%.3f", s/b}')"
  times_b+=("$T_BANKSWAP") times_s+=("$T_BASELINE") ratios+=("$ratio")
  if ((RSS_BANKSWAP > peak_rss)); then peak_rss="$RSS_BANKSWAP"; fi
  printf '%-6s %-18s %12s %12s %8s %10.1f MiB %10.1f MiB\n' "$r" "$order" "$T_BANKSWAP" "$T_BASELINE" \
    "$ratio" "$(awk -v k="$RSS_BANKSWAP" 'BEGIN {print k/1024}')" "$(awk -v k="$RSS_BASELINE" 'BEGIN {print k/1024}')"
done
[ "$FILES_BANKSWAP" = "$FILES" ] && [ "$FILES_BASELINE" = "$FILES" ] ||
  bench_die "expected $FILES payload files; bankswap wrote $FILES_BANKSWAP, the baseline $FILES_BASELINE"

# --- summary ------------------------------------------------------------------
med_b="$(bench_median "${times_b[@]}")"
med_s="$(bench_median "${times_s[@]}")"
med_r="$(bench_median "${ratios[@]}")"
peak_mib="$(awk -v k="$peak_rss" 'BEGIN {printf "%.1f", k/1024}')"
verdict() { if awk -v ok="$1" 'BEGIN {exit !ok}'; then echo "met"; else echo "MISSED"; fi; }
ratio_ok="$(verdict "$(awk -v r="$med_r" -v t="$TARGET_RATIO" 'BEGIN {print (r >= t)}')")"
rss_ok="$(verdict "$(awk -v m="$peak_mib" -v t="$TARGET_RSS_MIB" 'BEGIN {print (m <= t)}')")"
mibs() { awk -v s="$1" -v m="$PAYLOAD_MIB" 'BEGIN {printf "%.0f MiB/s", m/s}'; }

echo
echo "summary ($ROUNDS rounds, payload $PAYLOAD_MIB MiB / artifact $ART_MIB MiB):"
printf '  median bankswap apply   %8.3f s  (%s of payload)\n' "$med_b" "$(mibs "$med_b")"
printf '  median baseline         %8.3f s  (%s of payload)\n' "$med_s" "$(mibs "$med_s")"
printf '  median ratio            %8.3f    baseline/bankswap; > 1 means bankswap is faster   target >= %s: %s\n' \
  "$med_r" "$TARGET_RATIO" "$ratio_ok"
printf '  bankswap peak RSS       %8s MiB  max over rounds (GNU time)                        target <= %s MiB: %s\n' \
  "$peak_mib" "$TARGET_RSS_MIB" "$rss_ok"
echo "  load average: start $LOAD_START, end $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
