#!/usr/bin/env bash
# Power-cut campaign (SPEC §13, issue 9): runs the root on LazyFS, a FUSE file
# system that keeps written data in its own cache until fsync and drops every
# unsynced byte on command, and cuts power at seeded random points of an offline
# `apply`, an online update by a running agent (check, stage, swap, trial, commit),
# a `rollback`, a self-update of the agent (schedule, staging the build into its
# slot, self-test, the attempt marker, the exec in place, the trial, the commit) and
# the identity's writes (`console enroll` then `console renew --force`).
# After each cut it checks that the root holds one whole version
# (scripts/lib/campaign.sh says exactly what is checked; the self-update's checks
# are below: su_check_agent_state, camp_check_restart_selfupdate). The apply and
# online phases also cross a key rotation (d3 holds a rotation record endorsing a
# second key, so each writes ROOT/keys.json): keys.json is absent or whole after
# every cut.
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
#   crash-keys   the same for the rename onto ROOT/keys.json (armed before the start:
#                the rotation is verified first)
#   crash-agent  (self-update) the next rename onto ROOT/agent/state.json: armed at
#                a seeded step, so it hits the schedule, the slot listing, the
#                attempt marker, `ran` or the commit
#   crash-slot   (self-update) the rename of the staged build into agent/SlotN
#   crash-slot-aside (self-update) the rename of the old slot aside (.retired-SlotN)
#   crash-key, crash-cert (identity) the rename onto identity/key.pem, cert.pem
# A crash whose rename never comes ("not reached") ends as a clear after the
# operation finished. Apply and online cuts: 1/2 clear, 1/4 crash-state, 1/16 each
# crash-bank and crash-aside, 1/8 crash-keys; rollback: 3/4 clear, 1/4 crash-state;
# self-update: 1/2 clear, 1/4 crash-agent, 1/8 each crash-slot, crash-slot-aside;
# identity: 1/2 clear, 1/4 each crash-key and crash-cert. Before the
# campaign, a control case proves the harness bites: a file renamed into place
# without fsync must come back empty (and an fsynced one whole).
# LazyFS is built from a copy of its sources with mknod added (the agent's control
# socket needs it; scripts/lib/lazyfs-mknod.sh), by the tools' own build script.
#
# Usage: scripts/powercut-test.sh [--cuts N] [--seed S] [--phases LIST] [--segv-trial N]
#   --cuts N       cuts in all (default 200), spread over the phases in turn
#   --seed S       seed of every random choice (decimal or 0x-hex; default 0x5eedc0de)
#   --phases LIST  comma-separated, of apply,online,rollback,selfupdate,identity (default all)
#   --segv-trial N harness self-test: LazyFS gets SIGSEGV after the first cut from
#                  cut N on; that trial must come out void and run again
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
ALL_PHASES="apply,online,rollback,selfupdate,identity"
PHASE_LIST="$ALL_PHASES"
while [ $# -gt 0 ]; do
  case "$1" in
    --cuts) CUTS="${2:-}"; shift 2 ;;
    --seed) SEED="${2:-}"; shift 2 ;;
    --phases) PHASE_LIST="${2:-}"; shift 2 ;;
    --segv-trial) POWERCUT_SEGV_TRIAL="${2:-}"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (usage: $0 [--cuts N] [--seed S] [--phases LIST])" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a PHASES <<<"$PHASE_LIST"
((${#PHASES[@]} > 0)) || { echo "error: --phases: empty" >&2; exit 2; }
for phase in "${PHASES[@]}"; do
  [[ ",$ALL_PHASES," == *",$phase,"* ]] || { echo "error: --phases: '$phase' is not one of $ALL_PHASES" >&2; exit 2; }
done
[[ "$CUTS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --cuts: a positive number, not '$CUTS'" >&2; exit 2; }
[[ "$SEED" =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || { echo "error: --seed: a number, not '$SEED'" >&2; exit 2; }
CAMP_SEED_TEXT="$SEED"

# Size of LazyFS's page cache: it must hold every byte a trial writes (LazyFS keeps
# synced pages cached too): a few MiB of payload, and the self-update's new build
# (the stripped dev binary, some tens of MiB) twice over (staged, re-staged after a cut).
LAZYFS_CACHE="512mb"
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

# What went wrong with LazyFS itself during the current trial (empty: nothing).
LFS_FAULT=""

# lfs_cmd COMMAND: one line into the FIFO (bounded: a dead LazyFS never reads it).
# A LazyFS that does not read it failed on its own: noted for camp_hook_tool_failed.
lfs_cmd() {
  timeout "$LAZYFS_DEADLINE_S" bash -c 'printf "%s\n" "$1" >"$2"' _ "$1" "$LFS_FIFO" && return 0
  LFS_FAULT="${LFS_FAULT:-LazyFS did not read '$1'$(lfs_gone_why)}"
  return 1
}

# lfs_gone_why: ", it is gone" when the LazyFS process has died.
lfs_gone_why() { camp_alive "$LFS_PID" "$LFS_PARENT" || echo ", it is gone"; }

# lfs_clear: the power cut: every unsynced byte is dropped; waits for the acknowledgement.
lfs_clear() {
  local before
  before="$(grep -c 'cache is cleared' "$LFS_LOG" || true)"
  lfs_cmd "lazyfs::clear-cache" || return 0
  camp_wait "LazyFS to clear its cache" "$LAZYFS_DEADLINE_S" \
    bash -c '[ "$(grep -c "cache is cleared" "$1")" -gt "$2" ]' _ "$LFS_LOG" "$before" ||
    LFS_FAULT="${LFS_FAULT:-LazyFS did not acknowledge clear-cache$(lfs_gone_why)}"
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

# POWERCUT_SEGV_TRIAL=N (a self-test of the harness, like the control case): LazyFS
# is sent SIGSEGV after the cut of the first trial from N on that is cut (not crashed), as its own page-cache bug does now and then;
# the trial must come out void and run again, not BROKEN or OK.
LFS_TRIAL=""
LFS_SEGV_DONE=0
camp_hook_prepare() {
  LFS_FAULT=""
  LFS_TRIAL="$1"
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
  if [ -n "${POWERCUT_SEGV_TRIAL:-}" ] && [ "${LFS_TRIAL#trial-}" != "$LFS_TRIAL" ] &&
    ((${LFS_TRIAL#trial-} >= POWERCUT_SEGV_TRIAL && !LFS_SEGV_DONE)); then
    LFS_SEGV_DONE=1
    kill -SEGV "$LFS_PID"
    camp_wait "LazyFS to die of SIGSEGV" "$LAZYFS_DEADLINE_S" camp_gone "$LFS_PID" "$LFS_PARENT" || true
  fi
}
camp_hook_arm_crash() { lfs_cmd "lazyfs::crash::timing=before::op=rename::from_rgx=/::to_rgx=$1"; }
# (from_rgx=/ is needed: upstream LazyFS ignores a to_rgx given alone, and matches
# from_rgx only against the word "none", so "/" makes the rule "to_rgx only".)
camp_hook_crashed() { ! camp_alive "$LFS_PID" "$LFS_PARENT"; }
camp_hook_recover() {
  lfs_umount
  lfs_mount
}
# LazyFS failed on its own: a command it never took, or its process gone at the end
# of the trial although no crash the trial armed killed it (a fired crash was
# recovered from with a fresh mount). LazyFS 0.x segfaults now and then in its page
# cache (libpcache) on this loaded machine (dmesg says so); a root read off a dead
# mount proves nothing either way.
camp_hook_tool_failed() {
  if [ -z "$LFS_FAULT" ] && ! { camp_alive "$LFS_PID" "$LFS_PARENT" && lfs_mounted; }; then
    LFS_FAULT="LazyFS died during the checks"
  fi
  [ -n "$LFS_FAULT" ] || return 1
  CAMP_TOOL_WHY="$LFS_FAULT"
  local seg
  seg="$(dmesg 2>/dev/null | grep 'lazyfs.*segfault' | tail -1 || true)"
  [ -z "$seg" ] || CAMP_TOOL_WHY+=" (last in dmesg: ${seg#*] })"
  return 0
}

camp_hook_finish() {
  lfs_umount
  rm -rf "$LOWER/root"
}

# ----- keys.json: the rotation's one write ------------------------------------------------

CAMP_CRASH_RGX[crash-keys]='/keys\.json$'
CAMP_CRASH_EARLY[crash-keys]=1

# keys_setup: d3 (what apply and the console's online update take) gets a rotation
# record, signed by the release key, endorsing a second key: verifying 3.0.0 from d3
# writes ROOT/keys.json (scripts/lib/campaign.sh's console reads d3 at each request).
keys_setup() {
  "$BIN" keygen --out "$W/rotated" >/dev/null
  "$BIN" publish --key "$CAMP_W/release.key" --to "$CAMP_W/d3" --rotate-key "$W/rotated.pub" >/dev/null
  ROTATED_KEY="$(grep -v '^untrusted comment' "$W/rotated.pub" | head -1)"
}

# keys_check ROOT: ROOT/keys.json is absent, or whole: it names the endorsed key.
keys_check() {
  local file="$1/keys.json"
  [ -e "$file" ] || return 0
  grep -qF "$ROTATED_KEY" "$file" && return 0
  CAMP_WHY="keys.json is not whole ($(stat -c %s "$file") bytes, no endorsed key in it)"
  return 1
}
camp_check_after_cut_apply() { keys_check "$1" && camp_check_after_cut "$1"; }
camp_check_after_cut_online() { keys_check "$1" && camp_check_after_cut "$1"; }

# ----- the self-update phase ------------------------------------------------------------
#
# The new build is the binary stripped (the same program in other bytes, so a slot's
# content tells which build it is), published as agent SU_VERSION on the bankswap
# channel of a copy of d2, served by a second console: payload 2.0.0 is active
# already, so the update is the agent's own. The agent runs the installed binary
# ($BIN, outside the root) with [self_update] on.

SU_VERSION=99.0.0
# How long the new build has to prove itself before it is marked bad: generous (it
# commits as soon as it serves); a cut build is resolved at the next start anyway.
SU_GRACE=60s
# How long the new build's --self-test may take (it runs from the FUSE mount).
SU_SELF_TEST_TIMEOUT=60s

CAMP_STEPS_selfupdate=(boot:1 scheduled:1 staging:3 selftest:1 exec:1 trial:2 committed:1)
declare -gA CAMP_STEP_START_selfupdate=([scheduled]='agent release scheduled' [staging]='agent build staging'
  [selftest]='agent build staged' [exec]='agent self-test passed' [trial]='executing the new build in place'
  [committed]='agent self-update: committing the new build')
CAMP_CRASH_RGX[crash-agent]='/agent/state\.json$'
CAMP_CRASH_RGX[crash-slot]='/agent/Slot[12]$'
CAMP_CRASH_RGX[crash-slot-aside]='/agent/\.retired-Slot[12]$'

su_setup() {
  SU_BUILD="$W/bankswap-$SU_VERSION"
  strip -o "$SU_BUILD" "$BIN" 2>/dev/null || camp_die "cannot strip $BIN into the new build (binutils)"
  if cmp -s "$SU_BUILD" "$BIN"; then camp_die "the stripped build is the same bytes as $BIN"; fi
  cp -a "$CAMP_W/d2" "$W/dsu"
  "$BIN" publish --key "$CAMP_W/release.key" --agent-binary "$SU_BUILD" --version "$SU_VERSION" \
    --channel bankswap --to "$W/dsu" >/dev/null
  : >"$W/console-su.out"
  BANKSWAP_LOG=info "$BIN" console serve --data "$W/dsu" --listen 127.0.0.1:0 \
    --tls-cert "$CAMP_W/tls/server.pem" --tls-key "$CAMP_W/tls/server.key" >"$W/console-su.out" 2>>"$W/console-su.log" &
  camp_track $!
  camp_wait "the self-update console's address" 30 grep -q '^listening on https://' "$W/console-su.out" ||
    camp_die "the self-update console did not start: $(tail -5 "$W/console-su.log")"
  SU_URL="$(sed -n 's|^listening on \(https://[^ ]*\).*|\1|p' "$W/console-su.out" | head -1)"
  camp_log "self-update: console at $SU_URL serving 2.0.0 and agent $SU_VERSION ($(stat -c %s "$SU_BUILD") bytes; installed $(stat -c %s "$BIN"))"
}

camp_start_op_selfupdate() {
  camp_write_config "$ROOT" "$CAMP_W/agent-su.toml" "$SU_URL"
  cat >>"$CAMP_W/agent-su.toml" <<EOF
[self_update]
enabled = true
grace = "$SU_GRACE"
self_test_timeout = "$SU_SELF_TEST_TIMEOUT"
EOF
  BANKSWAP_LOG=info "$BIN" run --config "$CAMP_W/agent-su.toml" >/dev/null 2>>"$1" &
  AGENT_PID=$!
  OP_PID=$AGENT_PID
  camp_track "$AGENT_PID"
}

# su_field FILE INDENT NAME: the string value of NAME at INDENT spaces in the pretty
# JSON FILE (empty when absent or null).
su_field() {
  sed -n "s/^$(printf '%*s' "$2" '')\"$3\": \"\([^\"]*\)\",\{0,1\}$/\1/p" "$1" 2>/dev/null | head -1
}

camp_op_done_selfupdate() {
  camp_log_has "$1" 'agent self-update: committing the new build' &&
    [ "$(su_field "$ROOT/agent/state.json" 2 phase)" = committed ] &&
    [ -n "$(su_field "$ROOT/agent/state.json" 2 active)" ]
}

# su_build_of FILE: which published build FILE is, byte for byte ("installed" or
# SU_VERSION), or fails.
su_build_of() {
  if cmp -s "$1" "$SU_BUILD"; then echo "$SU_VERSION"; elif cmp -s "$1" "$BIN"; then echo installed; else return 1; fi
}

# su_slot_is ROOT SLOT WHAT: SLOT's binary is the new build byte for byte and its
# record names SU_VERSION (the only build ever staged). Else CAMP_WHY says why.
su_slot_is() {
  local dir="$1/agent/$2" build record
  if [ ! -f "$dir/bankswap" ]; then
    CAMP_WHY="$3 $2, whose build is missing"
    return 1
  fi
  if ! build="$(su_build_of "$dir/bankswap")"; then
    CAMP_WHY="$3 $2, whose build ($(stat -c %s "$dir/bankswap") bytes) is no published build"
    return 1
  fi
  record="$(su_field "$dir/.bankswap-record.json" 2 version)"
  if [ "$record" != "$SU_VERSION" ] || [ "$build" != "$SU_VERSION" ]; then
    CAMP_WHY="$3 $2, which holds the $build build with record '${record}'"
    return 1
  fi
}

# su_check_agent_state ROOT: ROOT/agent/state.json as the cut left it (read before any
# bankswap process opens the root) points at no missing or partial data: the active
# slot, the slot of an attempt and each slot listed with a version hold the whole
# new build. Sets SU_STATE (what it says).
su_check_agent_state() {
  local root="$1" file="$1/agent/state.json" active attempt n
  SU_STATE="no agent state"
  [ -e "$file" ] || return 0
  if ! grep -q '"schema"' "$file" || ! tail -c 2 "$file" | grep -q '}'; then
    CAMP_WHY="agent/state.json is not whole ($(stat -c %s "$file") bytes)"
    return 1
  fi
  active="$(su_field "$file" 2 active)"
  attempt="$(su_field "$file" 4 slot)"
  if [ -n "$active" ]; then su_slot_is "$root" "$active" "agent state: active is" || return 1; fi
  if [ -n "$attempt" ]; then su_slot_is "$root" "$attempt" "agent state: the attempt is in" || return 1; fi
  for n in 1 2; do
    [ -n "$(su_field "$file" 2 "slot${n}_version")" ] || continue
    su_slot_is "$root" "Slot$n" "agent state: lists" || return 1
  done
  SU_STATE="agent ${active:-installed} $(su_field "$file" 2 phase)${attempt:+, attempt in $attempt}"
}

camp_check_after_cut_selfupdate() {
  su_check_agent_state "$1" || return 1
  local state="$SU_STATE"
  camp_check_after_cut "$1" || return 1
  OUTCOME="$OUTCOME, $state"
}

# su_settled ROOT: status says the agent's build is committed, and it is the new
# build or the new build was marked bad (an attempt cut during its trial).
su_settled() {
  local json
  json="$("$BIN" status --root "$1" --json 2>/dev/null)" || return 1
  SU_VERSION_NOW="$(sed -n 's/^  "agent_version": "\([^"]*\)",\{0,1\}$/\1/p' <<<"$json" | head -1)"
  SU_BAD=""
  if tr -d '\n' <<<"$json" | grep -Eq "\"agent_bad_versions\": *\[[^]]*\"version\": *\"${SU_VERSION//./\\.}\""; then SU_BAD=1; fi
  grep -Eq '^  "agent_phase": "committed"' <<<"$json" && { [ "$SU_VERSION_NOW" = "$SU_VERSION" ] || [ -n "$SU_BAD" ]; }
}

# camp_check_restart_selfupdate ROOT LOG: the installed binary, restarted on ROOT, runs
# a working build (a published one, byte for byte, that status names; status answers
# and settles: the new build committed, or marked bad and the installed one running)
# and one whole payload version, and the agent state still points at whole data.
camp_check_restart_selfupdate() {
  local root="$1" log="$2" rc=0 started=0 exe
  : >"$log"
  camp_start_op_selfupdate "$log"
  camp_restarted_payload "$root" "$log" 'running .*version=.*bank=' || started=$?
  if ((started == 1)); then
    return 1
  elif ((started == 2)); then
    rc=1
  elif ! camp_wait "the restarted agent's build to settle" "$CAMP_DEADLINE_S" su_settled "$root"; then
    CAMP_WHY="restart: the agent's build did not settle within ${CAMP_DEADLINE_S}s (agent ${SU_VERSION_NOW:-?}): $(camp_plain "$log" | grep -E 'ERROR|WARN' | tail -2 | tr '\n' ' ')"
    rc=1
  elif ! exe="$(su_build_of "/proc/$AGENT_PID/exe")"; then
    CAMP_WHY="restart: the agent process runs no published build"
    rc=1
  elif { [ "$SU_VERSION_NOW" = "$SU_VERSION" ] && [ "$exe" != "$SU_VERSION" ]; } ||
    { [ "$SU_VERSION_NOW" != "$SU_VERSION" ] && [ "$exe" != installed ]; }; then
    CAMP_WHY="restart: status says agent $SU_VERSION_NOW, the process runs the $exe build"
    rc=1
  elif ! su_check_agent_state "$root"; then
    CAMP_WHY="restart: $CAMP_WHY"
    rc=1
  elif ! camp_status "$root" || ! camp_bank_is "$root" "$S_ACTIVE_BANK" "$S_ACTIVE"; then
    CAMP_WHY="restart: active payload: $CAMP_WHY"
    rc=1
  else
    OUTCOME="$OUTCOME -> agent $SU_VERSION_NOW${SU_BAD:+ ($SU_VERSION marked bad)}"
  fi
  camp_stop_agent "$AGENT_PID"
  return $rc
}

# ----- the identity phase ----------------------------------------------------------------
#
# `bankswap console enroll` with a fresh one-time token from the campaign's console,
# then `console renew --force`: two installs of a key and a certificate into
# ROOT/identity. After a cut the stored identity is none (the cut came before the
# console's answer was stored: the token is spent, as with a cut mid-request) or a
# working pair: `console renew --force` succeeds with it (mTLS to the console).

CAMP_CRASH_RGX[crash-key]='/identity/key\.pem$'
CAMP_CRASH_RGX[crash-cert]='/identity/cert\.pem$'

camp_start_op_identity() {
  local token
  token="$("$BIN" console token create --data "$CAMP_W/d3" 2>>"$1")" || camp_die "console token create failed: $(tail -2 "$1")"
  echo "$token" >"$CAMP_W/token"
  (
    "$BIN" console enroll --root "$ROOT" --console "$CONSOLE_URL" --token-file "$CAMP_W/token" --ca-cert "$CA" &&
      "$BIN" console renew --root "$ROOT" --console "$CONSOLE_URL" --ca-cert "$CA" --force
  ) >/dev/null 2>>"$1" &
  OP_PID=$!
  camp_track "$OP_PID"
}
camp_op_done_identity() { ! camp_alive "$OP_PID"; }

# camp_check_after_cut_identity ROOT: the payload as always; the identity none or working.
camp_check_after_cut_identity() {
  camp_check_after_cut "$1" || return 1
  local out
  if out="$("$BIN" console renew --root "$1" --console "$CONSOLE_URL" --ca-cert "$CA" --force 2>&1)"; then
    OUTCOME="$OUTCOME, identity works"
  elif grep -q 'holds no identity' <<<"$out"; then
    OUTCOME="$OUTCOME, no identity"
  else
    CAMP_WHY="identity: the stored key and certificate do not work: $(head -1 <<<"$out")"
    return 1
  fi
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
keys_setup
if [[ ",$PHASE_LIST," == *,selfupdate,* ]]; then su_setup; fi

for phase in "${PHASES[@]}"; do
  camp_calibrate "$phase"
  printf -v "WINDOW_$phase" '%s' "$WINDOW_MS"
done

for ((i = 0; i < CUTS; i++)); do
  phase="${PHASES[$((i % ${#PHASES[@]}))]}"
  camp_below 16
  case "$phase:$CAMP_R" in
    *:[0-7] | rollback:[89] | rollback:1[01]) kind=clear ;;
    rollback:*) kind=crash-state ;;
    selfupdate:[89] | selfupdate:1[01]) kind=crash-agent ;;
    selfupdate:1[23]) kind=crash-slot ;;
    selfupdate:*) kind=crash-slot-aside ;;
    identity:[89] | identity:1[01]) kind=crash-key ;;
    identity:*) kind=crash-cert ;;
    *:[89] | *:1[01]) kind=crash-state ;;
    *:12) kind=crash-bank ;;
    *:13) kind=crash-aside ;;
    *) kind=crash-keys ;;
  esac
  camp_trial "$phase" "$kind" "$i"
  if (((i + 1) % 10 == 0)); then camp_log "$((i + 1)) of $CUTS cuts, $CAMP_BROKEN broken so far"; fi
done

camp_summary cuts
((CAMP_BROKEN == 0))
