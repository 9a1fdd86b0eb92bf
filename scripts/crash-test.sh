#!/usr/bin/env bash
# Crash campaign (SPEC §3): SIGKILL at seeded random points, then a check that the
# root holds one whole version.
#   1. offline: `bankswap apply` killed N times (the test crash::sigkill_during_apply);
#   2. online: a running agent (`bankswap run` against a console on loopback) killed
#      N times, with its payload, at random points of check, staging, swap, trial and
#      commit of an update; after each kill, `status` and a restarted agent must find
#      one whole version and the rollback target intact, and the agent must finish
#      the update (scripts/lib/campaign.sh says exactly what is checked).
# Usage: scripts/crash-test.sh [--kills N] [--seed S] [--online-only]
#        scripts/crash-test.sh [N] [S]          (the older form)
#   --kills N      kills per part (default 200)
#   --seed S       seed (decimal or 0x-hex; default 0x5eedba4c)
#   --online-only  only part 2 (the test suite runs it this way; cargo is not re-entered)
#   BANKSWAP_BIN=P part 2 uses this binary (else the dev build is built)
#   CRASH_DIR=D    parent of part 2's work folder (default /var/tmp); KEEP=1 keeps it
# Prints `N kills, M broken` per part and the seed; exits 1 if any kill broke a root.
set -euo pipefail
CAMP_NAME=crash-test
source "$(dirname "$0")/lib/campaign.sh"
cd "$CAMP_REPO"

KILLS=200
SEED=0x5eedba4c
ONLINE_ONLY=0
positional=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kills) KILLS="${2:-}"; shift 2 ;;
    --seed) SEED="${2:-}"; shift 2 ;;
    --online-only) ONLINE_ONLY=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    [0-9]*)
      if ((positional == 0)); then KILLS="$1"; else SEED="$1"; fi
      positional=$((positional + 1))
      shift
      ;;
    *) echo "error: unknown argument '$1' (usage: $0 [--kills N] [--seed S] [--online-only])" >&2; exit 2 ;;
  esac
done
[[ "$KILLS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --kills: a positive number, not '$KILLS'" >&2; exit 2; }
[[ "$SEED" =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || { echo "error: --seed: a number, not '$SEED'" >&2; exit 2; }
CAMP_SEED_TEXT="$SEED"

offline_status=0
if ((ONLINE_ONLY == 0)); then
  echo "crash-test: part 1: bankswap apply, $KILLS kills (seed $SEED)"
  BANKSWAP_CRASH_TRIALS="$KILLS" BANKSWAP_CRASH_SEED="$SEED" \
    cargo test --locked --test main crash::sigkill_during_apply -- --nocapture || offline_status=$?
fi

# ----- part 2: the online update --------------------------------------------------------

camp_hook_prepare() {
  rm -rf "$W/root"
  cp -a "$TEMPLATE" "$W/root"
  ROOT="$W/root"
}
camp_hook_cut() { :; } # a kill loses nothing the kernel holds
camp_hook_finish() { rm -rf "$W/root"; }

camp_kill_start bankswap-crash
mkdir -p "$W/logs"
echo "crash-test: part 2: a running agent updating 2.0.0 -> 3.0.0, $KILLS kills (seed $SEED), bankswap $BIN, work folder $W"
camp_setup "$W"
camp_calibrate online
WINDOW_online="$WINDOW_MS"
for ((i = 0; i < KILLS; i++)); do
  camp_trial online kill "$i"
  if (((i + 1) % 20 == 0)); then camp_log "$((i + 1)) of $KILLS kills, $CAMP_BROKEN broken so far"; fi
done
camp_summary kills
if ((ONLINE_ONLY == 0)); then
  if ((offline_status == 0)); then echo "part 1 (apply): $KILLS kills, 0 broken"; else echo "part 1 (apply): FAILED (see above)"; fi
fi
((CAMP_BROKEN == 0 && offline_status == 0))
