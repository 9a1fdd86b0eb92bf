#!/usr/bin/env bash
# Benchmark: what keeping the rollback target costs. `bankswap apply` of a big
# release staged the way it is today (into a scratch folder beside both banks,
# renamed over the idle bank only once complete, so a failure leaves the idle
# bank as it was) against the old way (the idle bank, the rollback target, is
# removed first and the release written in its place), side by side in one run.
# Run as `scripts/bench/stage.sh in-place` (or this script directly).
#
# How the old path is chosen: by the product's own rule, not a test switch. The
# agent stages in place only when the file system has room for the release
# just over the idle bank, and `[update] allow_in_place = true`. So each path
# gets its own ext4 file system in a loop-mounted image file on the work
# folder's disk (same size, same disk, same mkfs options): on the `scratch` one
# the release fits beside both banks; on the `in-place` one a filler file
# leaves room only over the idle bank. Both run with allow_in_place = true;
# each run's log shows which path it took (the in-place notice), and a run on
# the wrong path aborts the benchmark.
#
# Each round, on each file system in alternating order: a template root (the
# same 256 MiB payload as 2.0.0 in the idle Bank1 and as 2.0.1 active in Bank2)
# is copied in and synced (untimed), then `bankswap apply` of 2.0.2 (the same
# payload, one file changed) is timed: verify, stream, hash, unpack, fsync,
# replace the idle bank (removing the 2000-file 2.0.0 tree: after the swap on
# the scratch path, before staging on the in-place path), commit. The artifact
# is in the page cache for both.
#
# How to read it. One line per round, then the medians. cost = scratch time /
# in-place time - 1: what the scratch folder adds. Target (issue 9): <= 5 %.
# The load average is printed at the start and the end; rerun when high.
#
# Usage: scripts/bench/stage.sh in-place
#   SIZE_MIB=256   payload size (SIZE_MIB=16 ROUNDS=2 is a quick smoke test)
#   FILES=N        payload files (default 2000 scaled by SIZE_MIB/256, at least 20)
#   ROUNDS=5       timed rounds;  WARMUP=1  untimed rounds first
#   BENCH_DIR=DIR  parent of the work folder (default /var/tmp); removed on exit
#   BANKSWAP_BIN=P use this binary instead of building
# Needs root (loop mounts), mkfs.ext4, python3, zstd. Both images are unmounted on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SIZE_MIB="${SIZE_MIB:-256}"
ROUNDS="${ROUNDS:-5}"
WARMUP="${WARMUP:-1}"
FILES="${FILES:-$((SIZE_MIB * 2000 / 256 > 20 ? SIZE_MIB * 2000 / 256 : 20))}"
TARGET_COST_PCT=5
for v in SIZE_MIB ROUNDS FILES; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || bench_die "$v must be a positive integer, not '${!v}'"
done
[[ "$WARMUP" =~ ^[0-9]+$ ]] || bench_die "WARMUP must be a number, not '$WARMUP'"
[ "$(id -u)" = 0 ] || bench_die "needs root: each path gets its own loop-mounted ext4 file system"
command -v mkfs.ext4 >/dev/null || bench_die "mkfs.ext4 not found (e2fsprogs)"

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
UPTIME_START="$(uptime)"
bench_build
bench_workdir
MOUNTS=()
unmount_all() {
  local m
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  bench_cleanup
}
trap unmount_all EXIT

# --- setup: three releases of the same payload, a template root holding two ---------
bench_log "generating the payload: $SIZE_MIB MiB in $FILES files"
bench_payload "$W/big" "$SIZE_MIB" "$FILES"
PAYLOAD_MIB="$(awk -v s="$(du -sb "$W/big" | cut -f1)" 'BEGIN {printf "%.1f", s/1048576}')"
"$BIN" keygen --out "$W/release" >/dev/null
for i in 0 1 2; do
  [ "$i" = 0 ] || cp -a "$W/data$((i - 1))" "$W/data$i"
  echo "release $i" >"$W/big/ROUND"
  "$BIN" publish --key "$W/release.key" --payload "$W/big" --version "2.0.$i" \
    --entrypoint bin/app --to "$W/data$i" >/dev/null
done
rm -rf "$W/big"
"$BIN" init --root "$W/template" --bundle "$W/data0" --trust "$W/release.pub" >/dev/null
"$BIN" apply --root "$W/template" --bundle "$W/data1" --trust "$W/release.pub" >/dev/null
cat >"$W/agent.toml" <<EOF
trusted_keys = ["$W/release.pub"]
[update]
allow_in_place = true
EOF
sync

# One image size for both: three copies of the tree and room for ext4's own blocks.
TREE_KIB="$(du -sk "$W/template/Bank1" | cut -f1)"
IMAGE_MIB=$((TREE_KIB * 3 / 1024 + TREE_KIB / 1024 / 2 + 64))
make_fs() { # NAME
  truncate -s "${IMAGE_MIB}M" "$W/$1.img"
  mkfs.ext4 -q -F -m 0 "$W/$1.img"
  mkdir -p "$W/$1"
  mount -o loop "$W/$1.img" "$W/$1"
  MOUNTS+=("$W/$1")
}
make_fs scratch
make_fs in-place
avail() { df -B1 --output=avail "$1" | tail -1 | tr -d ' '; }
# Fill the in-place file system so that, with the template root copied in, what is
# free is the release's need less half the idle bank: it fits only over that bank.
cp -a "$W/template" "$W/in-place/root" && sync
NEED=$(((TREE_KIB + FILES * 4) * 1024 + 1048576))
FILL=$(($(avail "$W/in-place") - NEED + TREE_KIB * 1024 / 2))
((FILL > 0)) || bench_die "the in-place image is too small to be filled ($FILL)"
fallocate -l "$FILL" "$W/in-place/filler"
rm -rf "$W/in-place/root" && sync
bench_log "images of $IMAGE_MIB MiB; free beside a template root: scratch $((($(avail "$W/scratch") - TREE_KIB * 2048) / 1048576)) MiB, in-place $((($(avail "$W/in-place") - TREE_KIB * 2048) / 1048576)) MiB; the release needs about $((NEED / 1048576)) MiB"

# --- runs ------------------------------------------------------------------------------
run_path() { # PATH ROUND
  local fs="$W/$1" a b
  cp -a "$W/template" "$fs/root"
  bench_settle
  a="$(bench_now)"
  if ! "$BIN" apply --config "$W/agent.toml" --root "$fs/root" --bundle "$W/data2" \
    >"$W/log-$1-$2" 2>&1; then
    cat "$W/log-$1-$2" >&2
    bench_die "round $2: apply on the $1 file system failed"
  fi
  b="$(bench_now)"
  T_PATH="$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b-a}')"
  local status
  status="$("$BIN" status --root "$fs/root" --json)"
  [[ "$status" == *'"active_version": "2.0.2"'* ]] || bench_die "round $2 ($1): not on 2.0.2 after apply: $status"
  if grep -q "in place" "$W/log-$1-$2"; then took=in-place; else took=scratch; fi
  [ "$took" = "$1" ] || bench_die "round $2: the $1 file system took the $took path: $(cat "$W/log-$1-$2")"
  bench_settle "$fs/root"
}

round() { # INDEX
  if (($1 % 2)); then
    run_path scratch "$1" && T_SCRATCH="$T_PATH"
    run_path in-place "$1" && T_IN_PLACE="$T_PATH"
    ORDER="scratch,in-place"
  else
    run_path in-place "$1" && T_IN_PLACE="$T_PATH"
    run_path scratch "$1" && T_SCRATCH="$T_PATH"
    ORDER="in-place,scratch"
  fi
}

for ((i = 1; i <= WARMUP; i++)); do
  bench_log "warm-up round $i of $WARMUP (untimed)"
  round "$i"
done

echo
echo "scratch staging vs in-place staging: bankswap apply, payload $PAYLOAD_MIB MiB in $FILES files, $ROUNDS rounds"
echo "scratch:  the release fits beside both banks: scratch folder, then renamed over the idle bank (today)"
echo "in-place: room only over the idle bank, allow_in_place = true: the idle bank removed first (the old path)"
echo "uptime at start: $UPTIME_START ($(nproc) CPUs); $WARMUP untimed warm-up round(s) done"
echo
printf '%-5s %-18s %9s %9s %8s\n' round order scratch in-place cost
t_s=() t_i=() costs=()
for ((i = WARMUP + 1; i <= WARMUP + ROUNDS; i++)); do
  round "$i"
  cost="$(awk -v s="$T_SCRATCH" -v p="$T_IN_PLACE" 'BEGIN {printf "%.1f", (s / p - 1) * 100}')"
  t_s+=("$T_SCRATCH") t_i+=("$T_IN_PLACE") costs+=("$cost")
  printf '%-5s %-18s %9s %9s %7s%%\n' "$((i - WARMUP))" "$ORDER" "$T_SCRATCH" "$T_IN_PLACE" "$cost"
done

med_s="$(bench_median "${t_s[@]}")" med_i="$(bench_median "${t_i[@]}")"
med_cost="$(awk -v s="$med_s" -v p="$med_i" 'BEGIN {printf "%.1f", (s / p - 1) * 100}')"
verdict() { if awk "BEGIN {exit !($1)}"; then echo met; else echo MISSED; fi; }
echo
echo "summary ($ROUNDS rounds):"
printf '  median scratch   %7.3f s\n' "$med_s"
printf '  median in-place  %7.3f s\n' "$med_i"
printf '  ratio scratch / in-place %.3f: cost %s%% (median of rounds %s%%)   target <= %s%%: %s\n' \
  "$(awk -v s="$med_s" -v p="$med_i" 'BEGIN {printf "%.3f", s / p}')" "$med_cost" \
  "$(printf '%.1f' "$(bench_median "${costs[@]}")")" "$TARGET_COST_PCT" "$(verdict "$med_cost <= $TARGET_COST_PCT")"
echo "  load average: start $LOAD_START, end $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
echo "  uptime at end: $(uptime)"
