#!/usr/bin/env bash
# Self-update crash campaign (SPEC §9, issue 10): a running agent updating itself
# is SIGKILLed at seeded points of the self-update, restarted (as systemd's
# Restart=always would), and checked. Each kill is one round with a new agent
# release 1.<round>.0 (a stripped copy of the binary under test):
#   before-replace  the old image, build staged and self-tested, before the trial
#                   marker is written;
#   before-exec     the old image, after the marker, right before the exec;
#   before-commit   the new image, after it adopted the payload, before it commits;
#   random          a seeded delay in [0, RANDOM_WINDOW_MS) after the publish
#                   (staging, self-test, exec, trial, or after the commit).
# The named points come from the agent itself: the test switch
# BANKSWAP_TEST_AGENT_FAULT=stop-<point>@<version> (src/agent/self_update/fault.rs)
# makes it stop (SIGSTOP) there; the script waits for state T, then SIGKILLs it.
# After each kill (the payload must end with the agent: its death signal) the agent
# is restarted without the switch and, once it has settled (the release committed,
# or marked bad), must:
#   1. answer `status`, with agent_version the previous build's or the release's,
#      agent_phase and phase committed;
#   2. run the build status names: /proc/PID/exe is the installed binary for the
#      installed version, else the slot whose record names that version, and
#      ROOT/agent/state.json agrees (committed, no attempt, `active` that slot);
#   3. run exactly one payload process (every process whose BANKSWAP_BANK_DIR is in
#      the root), a child of the agent, of the active version, its bank whole.
# Usage: scripts/selfupdate-crash-test.sh [--kills N] [--seed S] [--named-only]
#   --kills N       kills (default 60)
#   --seed S        seed (decimal or 0x-hex; default 0x5e1fc0de)
#   --named-only    only the three named points, in turn (the suite's short run)
#   BANKSWAP_BIN=P  use this binary (else the dev build is built)
#   RANDOM_WINDOW_MS=M  the random kills' window (default 8000)
#   CRASH_DIR=D     parent of the work folder (default /var/tmp); KEEP=1 keeps it
# Prints the kills per point, the seed and `N kills, M broken`; exits 1 if any broke.
set -euo pipefail
CAMP_NAME=selfupdate-crash-test
source "$(dirname "$0")/lib/campaign.sh"
cd "$CAMP_REPO"

KILLS=60
SEED=0x5e1fc0de
NAMED_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kills) KILLS="${2:-}"; shift 2 ;;
    --seed) SEED="${2:-}"; shift 2 ;;
    --named-only) NAMED_ONLY=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (usage: $0 [--kills N] [--seed S] [--named-only])" >&2; exit 2 ;;
  esac
done
[[ "$KILLS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --kills: a positive number, not '$KILLS'" >&2; exit 2; }
[[ "$SEED" =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || { echo "error: --seed: a number, not '$SEED'" >&2; exit 2; }
RANDOM_WINDOW_MS="${RANDOM_WINDOW_MS:-8000}"
POINTS=(before-replace before-exec before-commit)
# Payload files besides bin/app: the payload is not what this campaign is about.
CAMP_FILES=4

camp_kill_start bankswap-su-crash
ROOT="$W/root"
LOG="$W/agent.log"

# ----- the world: a payload, a console, a build to publish -------------------------------

"$BIN" keygen --out "$W/release" >/dev/null
camp_payload "$W/payload/1.0.0" 1.0.0
"$BIN" publish --key "$W/release.key" --payload "$W/payload/1.0.0" --version 1.0.0 --entrypoint bin/app --to "$W/data" >/dev/null
camp_start_console "$W" "$W/data"
# The build published: the same program as another (smaller) file.
strip -o "$W/build" "$BIN" 2>/dev/null || cp "$BIN" "$W/build"
chmod 755 "$W/build"
camp_write_config "$ROOT" "$W/agent.toml"
cat >>"$W/agent.toml" <<EOF
[self_update]
enabled = true
grace = "30s"
self_test_timeout = "60s"
EOF
INSTALLED_INO="$(stat -c %i "$BIN")"

# ----- the agent ---------------------------------------------------------------------------

# su_start [FAULT]: starts the agent (with the test switch FAULT, if given); sets AGENT_PID.
su_start() {
  if [ -n "${1:-}" ]; then
    BANKSWAP_TEST_AGENT_FAULT="$1" BANKSWAP_LOG=info "$BIN" run --config "$W/agent.toml" >/dev/null 2>>"$LOG" &
  else
    BANKSWAP_LOG=info "$BIN" run --config "$W/agent.toml" >/dev/null 2>>"$LOG" &
  fi
  AGENT_PID=$!
  camp_track "$AGENT_PID"
}

# su_status: the status JSON in SJ (one line, no spaces) and its fields; fails if
# status does not answer.
su_status() {
  SJ="$("$BIN" status --root "$ROOT" --json 2>"$W/status.err" | tr -d ' \n')" || return 1
  [ -n "$SJ" ] || return 1
  sfield() { grep -o "\"$1\":\"[^\"]*\"" <<<"$SJ" | head -1 | sed 's/.*:"\(.*\)"/\1/' || true; }
  S_ACTIVE="$(sfield active_version)"
  S_ACTIVE_BANK="$(sfield active_bank)"
  S_PHASE="$(sfield phase)"
  S_AGENT="$(sfield agent_version)"
  S_AGENT_PHASE="$(sfield agent_phase)"
}
su_bad() { grep -q "\"agent_bad_versions\":\[[^]]*\"version\":\"${1//./\\.}\"" <<<"$SJ"; }
# Serving: committed payload and agent, a payload process up.
su_serving() {
  su_status && [ "$S_PHASE" = committed ] && [ "$S_AGENT_PHASE" = committed ] && [ -n "$S_ACTIVE" ] &&
    [ "$(su_payloads | wc -l)" -ge 1 ]
}
# Settled after round V: serving, and V committed or marked bad.
su_settled() { su_serving && { [ "$S_AGENT" = "$1" ] || su_bad "$1"; }; }
su_stopped() { grep -q '^[^)]*) T' "/proc/$AGENT_PID/stat" 2>/dev/null; }

# su_payloads: "PID PPID VERSION" of every live process whose BANKSWAP_BANK_DIR is in the root.
su_payloads() {
  local f p stat fields version
  # One grep over every environ (NUL-separated entries): cheap enough to poll.
  for f in $(grep -l -z -F "BANKSWAP_BANK_DIR=$ROOT/" /proc/[0-9]*/environ 2>/dev/null); do
    p="${f#/proc/}"
    p="${p%/environ}"
    { read -r stat <"/proc/$p/stat"; } 2>/dev/null || continue
    read -r -a fields <<<"${stat##*) }"
    [ "${fields[0]}" != Z ] || continue
    version="$(grep -z -o '^BANKSWAP_VERSION=.*' "$f" 2>/dev/null | tr -d '\0')" || continue
    echo "$p ${fields[1]} ${version#BANKSWAP_VERSION=}"
  done
}
su_no_payload() { [ -z "$(su_payloads)" ]; }

# su_check V PREVIOUS: checks 1-3 (see the top); CAMP_WHY says why not.
su_check() {
  local v="$1" previous="$2" ino slot record lines state ppid version
  su_status || { CAMP_WHY="status does not answer: $(head -1 "$W/status.err")"; return 1; }
  if [ "$S_AGENT" != "$v" ] && [ "$S_AGENT" != "$previous" ]; then
    CAMP_WHY="agent_version $S_AGENT is neither $previous nor $v"
    return 1
  fi
  [ "$S_AGENT_PHASE" = committed ] && [ "$S_PHASE" = committed ] ||
    { CAMP_WHY="not committed: agent $S_AGENT_PHASE, payload $S_PHASE"; return 1; }
  ino="$(stat -L -c %i "/proc/$AGENT_PID/exe" 2>/dev/null)" || { CAMP_WHY="agent $AGENT_PID is gone"; return 1; }
  state="$(tr -d '\n ' <"$ROOT/agent/state.json")"
  slot="$(grep -o '"active":"Slot[12]"' <<<"$state" | sed 's/.*"\(Slot[12]\)"/\1/' || true)"
  if grep -q '"attempt":{' <<<"$state" || ! grep -q '"phase":"committed"' <<<"$state"; then
    CAMP_WHY="agent/state.json is not committed: ${state:0:300}"
    return 1
  fi
  if [ -z "$slot" ]; then
    [ "$S_AGENT" = "$INSTALLED_VERSION" ] && [ "$ino" = "$INSTALLED_INO" ] ||
      { CAMP_WHY="no active slot, yet agent $S_AGENT runs inode $ino (installed: $INSTALLED_VERSION, $INSTALLED_INO)"; return 1; }
  else
    record="$ROOT/agent/$slot/.bankswap-record.json"
    grep -Eq "\"version\": *\"${S_AGENT//./\\.}\"" "$record" 2>/dev/null ||
      { CAMP_WHY="active $slot does not hold agent $S_AGENT"; return 1; }
    [ "$ino" = "$(stat -c %i "$ROOT/agent/$slot/bankswap")" ] ||
      { CAMP_WHY="agent $S_AGENT is active in $slot but the process runs inode $ino"; return 1; }
  fi
  lines="$(su_payloads)"
  [ "$(wc -l <<<"$lines")" = 1 ] && [ -n "$lines" ] ||
    { CAMP_WHY="not exactly one payload process: $(tr '\n' ';' <<<"$lines")"; return 1; }
  read -r _ ppid version <<<"$lines"
  [ "$ppid" = "$AGENT_PID" ] || { CAMP_WHY="the payload's parent is $ppid, not the agent $AGENT_PID"; return 1; }
  [ "$version" = "$S_ACTIVE" ] || { CAMP_WHY="the payload runs $version, status says $S_ACTIVE"; return 1; }
  camp_bank_is "$ROOT" "$S_ACTIVE_BANK" "$S_ACTIVE" || return 1
}

# ----- the rounds --------------------------------------------------------------------------

echo "selfupdate-crash-test: $KILLS kills (seed $SEED), bankswap $BIN, work folder $W"
su_start
camp_wait "the first agent to serve" "$CAMP_DEADLINE_S" su_serving || camp_die "the agent never served: $(tail -5 "$LOG")"
INSTALLED_VERSION="$S_AGENT"
camp_stop_agent "$AGENT_PID"

declare -A KILLED=()
BROKEN=0
BROKEN_LINES=()
for ((i = 0; i < KILLS; i++)); do
  v="1.$((i + 1)).0"
  if ((NAMED_ONLY)); then
    point="${POINTS[$((i % 3))]}"
  else
    camp_below 4
    if ((CAMP_R < 3)); then point="${POINTS[$CAMP_R]}"; else point=random; fi
  fi
  KILLED[$point]=$((${KILLED[$point]:-0} + 1))
  echo "--- round $i: $v, kill at $point" >>"$LOG"
  why=""
  if [ "$point" = random ]; then su_start; else su_start "stop-$point@$v"; fi
  if ! camp_wait "the agent to serve" "$CAMP_DEADLINE_S" su_serving; then
    why="the agent did not serve before the publish"
  fi
  previous="${S_AGENT:-}"
  if [ -z "$why" ]; then
    "$BIN" publish --key "$W/release.key" --agent-binary "$W/build" --version "$v" \
      --channel bankswap --to "$W/data" >/dev/null
    "$BIN" check --root "$ROOT" >/dev/null 2>&1 || true
    if [ "$point" = random ]; then
      camp_below "$RANDOM_WINDOW_MS"
      camp_sleep_ms "$CAMP_R"
    elif ! camp_wait "the agent to stop at $point" "$CAMP_DEADLINE_S" su_stopped; then
      why="never stopped at $point"
    fi
  fi
  kill -KILL "$AGENT_PID" 2>/dev/null || true
  wait "$AGENT_PID" 2>/dev/null || true
  if [ -z "$why" ] && ! camp_wait "the payload to end with the agent" 30 su_no_payload; then
    why="a payload outlived the agent's SIGKILL: $(su_payloads | tr '\n' ';')"
    for p in $(su_payloads | cut -d' ' -f1); do kill -KILL "$p" 2>/dev/null || true; done
  fi
  if [ -z "$why" ]; then
    su_start
    if ! camp_wait "the restarted agent to settle on $v" "$CAMP_DEADLINE_S" su_settled "$v"; then
      why="the restarted agent did not settle (agent ${S_AGENT:-?} ${S_AGENT_PHASE:-?}, payload ${S_ACTIVE:-?} ${S_PHASE:-?}): $(camp_plain "$LOG" | grep -E 'ERROR|WARN' | tail -2 | tr '\n' ' ')"
    elif ! su_check "$v" "$previous"; then
      why="$CAMP_WHY"
    fi
    if [ "$S_AGENT" = "$v" ]; then
      outcome="the release committed"
    elif su_bad "$v"; then
      outcome="the release marked bad, the previous build runs"
    else
      outcome="the previous build runs"
    fi
    camp_stop_agent "$AGENT_PID"
  fi
  if [ -n "$why" ]; then
    BROKEN=$((BROKEN + 1))
    BROKEN_LINES+=("#$i $v at $point: $why")
    camp_log "round $i ($v at $point): BROKEN: $why"
    camp_kill_tree "$AGENT_PID"
  else
    KILLED["$point: $outcome"]=$((${KILLED["$point: $outcome"]:-0} + 1))
  fi
  if (((i + 1) % 10 == 0)); then camp_log "$((i + 1)) of $KILLS kills, $BROKEN broken so far"; fi
done

echo
for point in "${POINTS[@]}" random; do
  [ -n "${KILLED[$point]:-}" ] || continue
  printf '%-15s %4d kills\n' "$point" "${KILLED[$point]}"
done
echo "outcomes (previous build kept, or the release committed / marked bad):"
for key in "${!KILLED[@]}"; do
  if [[ "$key" == *:* ]]; then printf '  %4d  %s\n' "${KILLED[$key]}" "$key"; fi
done | sort -k2
if ((BROKEN > 0)); then
  echo
  echo "broken:"
  printf '  %s\n' "${BROKEN_LINES[@]}"
fi
echo
echo "seed $SEED: $KILLS kills, $BROKEN broken"
((BROKEN == 0))
