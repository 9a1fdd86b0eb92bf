#!/usr/bin/env bash
# Power-cut campaign (SPEC §13, issue 9): runs the root on LazyFS, a FUSE file
# system that keeps written data in its own cache until fsync and drops every
# unsynced byte on command, and cuts power at seeded random points of an offline
# `apply`, an online update by a running agent (check, stage, swap, trial, commit)
# and a `rollback`. After each cut it checks that the root holds one whole version
# (scripts/lib/campaign.sh says exactly what is checked).
#
# A cut is one of:
#   clear        at a random instant: SIGKILL the bankswap processes (and the
#                payload), `lazyfs::clear-cache` (unsynced data is gone), remount
#   crash-state  at a random instant, arm `lazyfs::crash::...::op=rename` for the
#                next rename onto state.json: LazyFS dies right before it (the cache
#                is lost with it); then kill the processes, remount
#   crash-bank   the same for the next rename onto a bank folder (Bank1, Bank2)
#   crash-aside  the same for the next rename of a bank aside (onto a name ending in
#                Bank1 or Bank2 that is not the bank itself, e.g. .retired-Bank1)
# A crash whose rename never comes ("not reached") ends as a clear after the
# operation finished. Apply and online cuts: 1/2 clear, 1/4 crash-state, 1/8 each
# crash-bank and crash-aside; rollback: 3/4 clear, 1/4 crash-state. Before the
# campaign, a control case proves the harness bites: a file renamed into place
# without fsync must come back empty (and an fsynced one whole).
# LazyFS is built from a copy of its sources with mknod added (the agent's control
# socket needs it; scripts/lib/lazyfs-mknod.sh), by the tools' own build script.
#
# Usage: scripts/powercut-test.sh [--cuts N] [--seed S]
#   --cuts N       cuts in all (default 200), spread over the three phases in turn
#   --seed S       seed of every random choice (decimal or 0x-hex; default 0x5eedc0de)
#   BANKSWAP_BIN=P use this bankswap binary (else the dev build is built)
#   LAZYFS_TOOLS=D LazyFS sources and build script (default ../shared/tools/lazyfs)
#   POWERCUT_DIR=D parent of the work folder (default /var/tmp); KEEP=1 keeps it
# Prints per-phase counts, the broken cuts with their reasons, the seed and
# `N cuts, M broken`; exits 1 if any cut left a broken root, 2 on bad usage,
# 3 when FUSE or LazyFS is not available here (nothing was tested).
# Needs root (or sudo) the first time: LazyFS's build installs its Debian packages.
set -euo pipefail
CAMP_NAME=powercut
source "$(dirname "$0")/lib/campaign.sh"
REPO="$CAMP_REPO"

CUTS=200
SEED=0x5eedc0de
while [ $# -gt 0 ]; do
  case "$1" in
    --cuts) CUTS="${2:-}"; shift 2 ;;
    --seed) SEED="${2:-}"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (usage: $0 [--cuts N] [--seed S])" >&2; exit 2 ;;
  esac
done
[[ "$CUTS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --cuts: a positive number, not '$CUTS'" >&2; exit 2; }
[[ "$SEED" =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || { echo "error: --seed: a number, not '$SEED'" >&2; exit 2; }
CAMP_SEED_TEXT="$SEED"

# Size of LazyFS's page cache: it must hold every unsynced byte of a trial (a few MiB).
LAZYFS_CACHE="64mb"
# How long LazyFS may take to mount, to acknowledge a command, to exit after unmount.
LAZYFS_DEADLINE_S=60

unavailable() {
  echo "powercut: SKIPPED: $*" >&2
  exit 3
}

# ----- LazyFS ------------------------------------------------------------------------

LAZYFS_TOOLS="${LAZYFS_TOOLS:-$REPO/../shared/tools/lazyfs}"
[ -x "$LAZYFS_TOOLS/build-lazyfs.sh" ] || unavailable "no LazyFS at $LAZYFS_TOOLS (set LAZYFS_TOOLS)"
[ -c /dev/fuse ] || unavailable "/dev/fuse does not exist"
{ exec 9<>/dev/fuse; } 2>/dev/null || unavailable "/dev/fuse cannot be opened by $(id -un)"
exec 9>&-

# build_lazyfs: LAZYFS = a LazyFS binary with mknod added (scripts/lib/lazyfs-mknod.sh
# says why), built by the tools' own build-lazyfs.sh from a patched copy of them.
build_lazyfs() {
  local src="$REPO/target/lazyfs-mknod-src" out="$REPO/target/lazyfs-mknod" stamp
  stamp="$(cat "$REPO/scripts/lib/lazyfs-mknod.sh" "$LAZYFS_TOOLS/build-lazyfs.sh" | sha256sum | cut -c1-16)"
  if [ "$(cat "$out/stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$src" "$out"
    cp -r "$LAZYFS_TOOLS" "$src"
    chmod -R u+w "$src"
    "$REPO/scripts/lib/lazyfs-mknod.sh" "$src"
  fi
  camp_log "building LazyFS (with mknod) into $out"
  LAZYFS="$("$src/build-lazyfs.sh" "$out")" || camp_die "LazyFS did not build"
  echo "$stamp" >"$out/stamp"
  command -v fusermount3 >/dev/null || camp_die "fusermount3 not found (Debian: fuse3)"
}

LFS_N=0       # mounts so far (each has its own config, FIFO and log)
LFS_PID=""    # the running LazyFS, if any
LFS_PARENT="" # the subshell that started it and waits for it
LFS_LOG=""
LFS_FIFO=""

# lfs_mount: mounts $LOWER at $MNT through a fresh LazyFS; waits until it is in
# /proc/mounts and its fault thread listens.
lfs_mount() {
  LFS_N=$((LFS_N + 1))
  local conf="$W/lazyfs/$LFS_N.toml"
  LFS_FIFO="$W/lazyfs/$LFS_N.fifo"
  LFS_LOG="$W/lazyfs/$LFS_N.log"
  cat >"$conf" <<EOF
[faults]
fifo_path="$LFS_FIFO"
[cache]
apply_eviction=false
[cache.simple]
custom_size="$LAZYFS_CACHE"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile="$LFS_LOG"
EOF
  # -f: in the foreground, so LFS_PID is the daemon itself (its death is the crash).
  # A subshell waits for it, so its exit (LazyFS aborts when it stops) is not
  # reported by this shell.
  rm -f "$W/lazyfs/pid"
  (
    "$LAZYFS" "$MNT" -f --config-path "$conf" -o allow_other -o modules=subdir -o "subdir=$LOWER" &
    echo $! >"$W/lazyfs/pid"
    wait
  ) >>"$W/lazyfs/stdout.log" 2>&1 &
  LFS_PARENT=$!
  camp_track "$LFS_PARENT"
  camp_wait "LazyFS to start" "$LAZYFS_DEADLINE_S" test -s "$W/lazyfs/pid" || camp_die "LazyFS did not start"
  LFS_PID="$(cat "$W/lazyfs/pid")"
  camp_track "$LFS_PID" "$LFS_PARENT"
  if ! camp_wait "LazyFS to mount $MNT" "$LAZYFS_DEADLINE_S" grep -q " $MNT fuse" /proc/mounts; then
    local why
    why="$(tail -3 "$W/lazyfs/stdout.log" "$LFS_LOG" 2>/dev/null | grep -v '^==>' | tr '\n' ' ')"
    # The first mount is the test of whether FUSE works here at all.
    ((LFS_N > 1)) || unavailable "FUSE mounts do not work here (LazyFS: $why)"
    camp_die "LazyFS did not mount (log $LFS_LOG): $why"
  fi
  camp_wait "LazyFS to listen for commands" "$LAZYFS_DEADLINE_S" grep -q 'waiting for fault commands' "$LFS_LOG" ||
    camp_die "LazyFS does not listen on $LFS_FIFO"
}

# lfs_cmd COMMAND: one line into the FIFO (bounded: a dead LazyFS never reads it).
lfs_cmd() {
  timeout "$LAZYFS_DEADLINE_S" bash -c 'printf "%s\n" "$1" >"$2"' _ "$1" "$LFS_FIFO" ||
    camp_die "LazyFS did not read '$1'"
}

# lfs_clear: the power cut: every unsynced byte is dropped; waits for the acknowledgement.
lfs_clear() {
  local before
  before="$(grep -c 'cache is cleared' "$LFS_LOG" || true)"
  lfs_cmd "lazyfs::clear-cache"
  camp_wait "LazyFS to clear its cache" "$LAZYFS_DEADLINE_S" \
    bash -c '[ "$(grep -c "cache is cleared" "$1")" -gt "$2" ]' _ "$LFS_LOG" "$before" ||
    camp_die "LazyFS did not acknowledge clear-cache"
}

lfs_mounted() { grep -q " $MNT fuse" /proc/mounts; }

# lfs_umount: unmounts (also a mount whose LazyFS died) and waits for LazyFS to exit.
lfs_umount() {
  if lfs_mounted; then
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" ||
      camp_die "cannot unmount $MNT"
  fi
  if [ -n "$LFS_PID" ]; then
    if ! camp_wait "LazyFS to exit" "$LAZYFS_DEADLINE_S" camp_gone "$LFS_PID" "$LFS_PARENT"; then
      camp_kill_tree "$LFS_PID" "$LFS_PARENT"
    fi
    camp_wait "LazyFS's waiter to exit" "$LAZYFS_DEADLINE_S" camp_gone "$LFS_PARENT" || true
    LFS_PID=""
  fi
}

cleanup() {
  camp_cleanup_procs
  if [ -n "${MNT:-}" ] && lfs_mounted; then fusermount3 -uz "$MNT" 2>/dev/null || true; fi
  if [ -n "${W:-}" ]; then
    if [ "${KEEP:-0}" = 1 ]; then camp_log "kept $W (KEEP=1)"; else rm -rf "$W"; fi
  fi
}

# ----- the hooks of camp_trial -------------------------------------------------------

camp_hook_prepare() {
  lfs_umount
  rm -rf "$LOWER/root"
  cp -a "$TEMPLATE" "$LOWER/root"
  lfs_mount
  ROOT="$MNT/root"
}
camp_hook_cut() {
  lfs_clear
  lfs_umount
  lfs_mount
}
camp_hook_arm_crash() { lfs_cmd "lazyfs::crash::timing=before::op=rename::from_rgx=/::to_rgx=$1"; }
# (from_rgx=/ is needed: upstream LazyFS ignores a to_rgx given alone, and matches
# from_rgx only against the word "none", so "/" makes the rule "to_rgx only".)
camp_hook_crashed() { ! camp_alive "$LFS_PID" "$LFS_PARENT"; }
camp_hook_recover() {
  lfs_umount
  lfs_mount
}
camp_hook_finish() {
  lfs_umount
  rm -rf "$LOWER/root"
}

# ----- the control case ----------------------------------------------------------------

# A file written and renamed into place without fsync must be empty after a cut, and
# one written with fsync whole: else the harness proves nothing, and the run aborts.
control_case() {
  lfs_mount
  mkdir -p "$MNT/control"
  printf 'written, renamed, never synced\n' >"$MNT/control/.unsynced.tmp"
  mv "$MNT/control/.unsynced.tmp" "$MNT/control/unsynced"
  printf 'written and fsynced\n' | dd of="$MNT/control/.synced.tmp" conv=fsync status=none
  mv "$MNT/control/.synced.tmp" "$MNT/control/synced"
  [ "$(cat "$MNT/control/unsynced")" = 'written, renamed, never synced' ] ||
    camp_die "control: the unsynced file does not read back before the cut"
  lfs_clear
  lfs_umount
  lfs_mount
  local unsynced synced
  unsynced="$(stat -c %s "$MNT/control/unsynced" 2>/dev/null || echo missing)"
  synced="$(cat "$MNT/control/synced" 2>/dev/null || echo missing)"
  lfs_umount
  rm -rf "$LOWER/control"
  if [ "$unsynced" != 0 ]; then
    camp_die "control: the harness does not bite: a file renamed into place without fsync has $unsynced bytes after a cut (expected 0); aborting"
  fi
  if [ "$synced" != 'written and fsynced' ]; then
    camp_die "control: a file written with fsync did not survive the cut (got '$synced'); aborting"
  fi
  echo "control: a file renamed into place without fsync came back empty (0 bytes) after a cut; an fsynced one came back whole: the harness bites"
}

# ----- main ----------------------------------------------------------------------------

camp_seed "$SEED"
camp_binary
build_lazyfs
parent="${POWERCUT_DIR:-/var/tmp}"
mkdir -p "$parent"
W="$(mktemp -d "$parent/bankswap-powercut.XXXXXX")"
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$W/lower" "$W/mnt" "$W/lazyfs" "$W/logs"
LOWER="$W/lower"
MNT="$W/mnt"
echo "powercut: seed $SEED, $CUTS cuts, bankswap $BIN, LazyFS $LAZYFS, work folder $W"

control_case
camp_setup "$W"

PHASES=(apply online rollback)
for phase in "${PHASES[@]}"; do
  camp_calibrate "$phase"
  printf -v "WINDOW_$phase" '%s' "$WINDOW_MS"
done

for ((i = 0; i < CUTS; i++)); do
  phase="${PHASES[$((i % ${#PHASES[@]}))]}"
  camp_below 8
  case "$phase:$CAMP_R" in
    *:[0-3] | rollback:[4-5]) kind=clear ;;
    *:[4-5] | rollback:*) kind=crash-state ;;
    *:6) kind=crash-bank ;;
    *) kind=crash-aside ;;
  esac
  camp_trial "$phase" "$kind" "$i"
  if (((i + 1) % 10 == 0)); then camp_log "$((i + 1)) of $CUTS cuts, $CAMP_BROKEN broken so far"; fi
done

camp_summary cuts
((CAMP_BROKEN == 0))
