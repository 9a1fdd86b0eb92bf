# Shared by scripts/powercut-test.sh and scripts/crash-test.sh: a seeded campaign
# that interrupts `bankswap` at random points of an update and checks that the root
# holds one whole version afterwards. Source it, don't run it; the caller sets
# `set -euo pipefail`, calls camp_setup, then camp_trial for each interruption.
#
# The world (camp_setup): three releases 1.0.0, 2.0.0, 3.0.0 of a payload (a
# sleeper script plus ~40 files of random bytes and text), published as bundles
# (d1: 1.0.0; d2: + 2.0.0; d3: + 3.0.0) with one key; a console on loopback TLS
# serving d3; a template root holding 1.0.0 in Bank1 and 2.0.0 active and
# committed in Bank2 (init + apply, on the ordinary disk: durable). Every trial
# starts from a copy of the template, so there is always a rollback target.
#
# Phases (what is interrupted):
#   apply     bankswap apply --bundle d3          (offline update 2.0.0 -> 3.0.0)
#   online    bankswap run against the console    (check, stage, swap, trial, commit of 3.0.0)
#   rollback  bankswap rollback                   (2.0.0 -> 1.0.0)
# A caller adds a phase P by defining camp_start_op_P and camp_op_done_P (and, for a
# running agent with steps, CAMP_STEPS_P and CAMP_STEP_START_P as for online; for
# its own checks, camp_check_after_cut_P and camp_check_restart_P).
#
# The checks after each interruption (camp_check_after_cut, camp_check_restart):
#   1. `bankswap status --json` answers; its active bank is byte-identical to the
#      release it names (every file; the payload folders published are the truth).
#      If the state names a previous version and its bank folder exists, that bank
#      must be byte-identical to it too (an interrupted update must not leave the
#      rollback target half-written while the state still offers it).
#   2. A restarted `bankswap run` logs `running version=V bank=B`, B holds the whole
#      V, and it ends with 3.0.0 committed, 3.0.0 whole in the active bank and the
#      previous version (which must exist) whole in the other.
# A trial whose check 1 fails is counted broken and not restarted (bounded time).
#
# Needs: bash, coreutils, diffutils, grep, sed. No python, no procps.

CAMP_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# How long a condition of a live process may take before the trial fails: generous,
# for a loaded 2-core machine; a passing trial never waits for it.
CAMP_DEADLINE_S="${CAMP_DEADLINE_S:-120}"
# Payload files per release (besides bin/app), and their largest size in KiB.
CAMP_FILES=40
CAMP_MAX_KIB=48
# The agent's trial: a payload still running after this is committed.
CAMP_GRACE="1s"
# Uninterrupted runs per phase that measure how long it takes (the cut window).
CAMP_PROBES=2

camp_log() { printf '%s: %s\n' "${CAMP_NAME:-campaign}" "$*" >&2; }
camp_die() {
  printf '%s: error: %s\n' "${CAMP_NAME:-campaign}" "$*" >&2
  exit 1
}

# ----- seeded randomness (xorshift32; bash arithmetic only, same on every machine) ---

# camp_seed S: S decimal or 0x-hex.
camp_seed() {
  CAMP_RNG=$(($1 & 0xffffffff))
  ((CAMP_RNG != 0)) || CAMP_RNG=0x9e3779b9
  local i
  for ((i = 0; i < 8; i++)); do camp_rand >/dev/null; done
}
# Next 32-bit value, in CAMP_R (and printed when asked).
camp_next() {
  local x=$CAMP_RNG
  x=$(((x ^ (x << 13)) & 0xffffffff))
  x=$(((x ^ (x >> 17)) & 0xffffffff))
  x=$(((x ^ (x << 5)) & 0xffffffff))
  CAMP_RNG=$x
  CAMP_R=$x
}
camp_rand() {
  camp_next
  echo "$CAMP_R"
}
# camp_below N: CAMP_R = a value in [0, N).
camp_below() {
  camp_next
  CAMP_R=$((CAMP_R % $1))
}

# ----- time, waiting -------------------------------------------------------------------

camp_now_ms() {
  local t=${EPOCHREALTIME/,/.}
  echo $((${t%.*} * 1000 + 10#${t#*.} / 1000))
}
# camp_sleep_ms MS
camp_sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

# camp_wait WHAT SECONDS CMD...: runs CMD every 50 ms until it succeeds; returns 1
# (after logging WHAT) if SECONDS pass first.
camp_wait() {
  local what="$1" secs="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      camp_log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.05
  done
}

# ----- processes -------------------------------------------------------------------------

# Background processes to stop on exit, as PID:PARENT.
CAMP_PIDS=()
# camp_track PID [PARENT]: PARENT (default this shell) started PID.
camp_track() { CAMP_PIDS+=("$1:${2:-$$}"); }

# camp_alive PID [PARENT]: whether PID is alive, not a zombie, and still the child of
# PARENT (default this shell). PIDs are reused (pid_max may be 32768, and a campaign
# starts many processes): a PID whose parent is not ours is someone else's process,
# never to be signalled.
camp_alive() {
  local stat fields
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  read -r -a fields <<<"${stat##*) }" # state ppid ...
  [ "${fields[0]:-Z}" != Z ] && [ "${fields[1]:-}" = "${2:-$$}" ]
}
camp_gone() { ! camp_alive "$@"; }

# Every descendant of PID, from one pass over /proc (no procps needed).
camp_descendants() {
  local p stat fields parent child
  local -A kids=()
  for p in /proc/[0-9]*; do
    { read -r stat <"$p/stat"; } 2>/dev/null || continue
    read -r -a fields <<<"${stat##*) }" # state ppid ...
    kids[${fields[1]:-0}]+=" ${p#/proc/}"
  done
  local todo=("$1")
  while [ ${#todo[@]} -gt 0 ]; do
    parent="${todo[0]}"
    todo=("${todo[@]:1}")
    for child in ${kids[$parent]:-}; do
      echo "$child"
      todo+=("$child")
    done
  done
}

# camp_kill_tree PID [PARENT]: the power cut for processes: SIGSTOP PID (it starts nothing
# more), SIGKILL it and every descendant (its payload) at once, and wait until all
# are gone. Only processes this script started (PID and what PID started).
camp_kill_tree() {
  local pid="$1" all p
  camp_alive "$pid" "${2:-$$}" || return 0 # gone already (and its PID maybe reused)
  kill -STOP "$pid" 2>/dev/null || true
  all=("$pid" $(camp_descendants "$pid"))
  for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait "$pid" 2>/dev/null || true
  for p in "${all[@]}"; do
    camp_wait "process $p to die" 30 bash -c "! [ -d /proc/$p ] || grep -q '^State:.*Z' /proc/$p/status" || true
  done
}

# camp_stop_agent PID: SIGTERM, then SIGKILL of the tree if it is still up after the deadline.
camp_stop_agent() {
  local pid="$1"
  camp_alive "$pid" || {
    wait "$pid" 2>/dev/null || true
    return 0
  }
  kill -TERM "$pid" 2>/dev/null || true
  if ! camp_wait "the agent $pid to stop" 30 camp_gone "$pid"; then
    camp_kill_tree "$pid"
  fi
  wait "$pid" 2>/dev/null || true
}

camp_cleanup_procs() {
  local i pid
  for ((i = ${#CAMP_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${CAMP_PIDS[$i]}"
    camp_kill_tree "${pid%%:*}" "${pid#*:}"
  done
}

# ----- the world ---------------------------------------------------------------------

# camp_start_console DIR DATA: a console on loopback TLS serving DATA, its
# certificates in DIR/tls, its output in DIR/console.out and DIR/console.log.
# Sets CA and CONSOLE_URL.
camp_start_console() {
  local dir="$1" data="$2"
  "$BIN" console cert --out "$dir/tls" >/dev/null
  CA="$dir/tls/ca.pem"
  : >"$dir/console.out"
  BANKSWAP_LOG=info "$BIN" console serve --data "$data" --listen 127.0.0.1:0 \
    --tls-cert "$dir/tls/server.pem" --tls-key "$dir/tls/server.key" >"$dir/console.out" 2>>"$dir/console.log" &
  camp_track $!
  camp_wait "the console's address" 30 grep -q '^listening on https://' "$dir/console.out" ||
    camp_die "the console did not start: $(tail -5 "$dir/console.log")"
  CONSOLE_URL="$(sed -n 's|^listening on \(https://[^ ]*\).*|\1|p' "$dir/console.out" | head -1)"
}

# camp_kill_start NAME: the start of a SIGKILL campaign (crash-test.sh,
# selfupdate-crash-test.sh): seeds the generator with SEED, finds BIN, makes
# W = CAMP_W = a fresh work folder NAME.XXXXXX under CRASH_DIR (default /var/tmp),
# and traps EXIT to stop what the campaign started and remove W (kept with KEEP=1).
camp_kill_start() {
  camp_seed "$SEED"
  camp_binary
  local parent="${CRASH_DIR:-/var/tmp}"
  mkdir -p "$parent"
  W="$(mktemp -d "$parent/$1.XXXXXX")"
  CAMP_W="$W"
  trap camp_kill_cleanup EXIT
  trap 'exit 130' INT TERM
}
camp_kill_cleanup() {
  camp_cleanup_procs
  if [ -n "${W:-}" ]; then
    if [ "${KEEP:-0}" = 1 ]; then camp_log "kept $W (KEEP=1)"; else rm -rf "$W"; fi
  fi
}

# camp_binary: BIN = $BANKSWAP_BIN, or the dev build (built here).
camp_binary() {
  if [ -n "${BANKSWAP_BIN:-}" ]; then
    BIN="$(realpath "$BANKSWAP_BIN")"
    [ -x "$BIN" ] || camp_die "BANKSWAP_BIN=$BANKSWAP_BIN is not an executable"
    camp_log "using $BIN (BANKSWAP_BIN; not rebuilt)"
    return
  fi
  camp_log "building: cargo build --locked"
  (cd "$CAMP_REPO" && cargo build --locked --quiet)
  BIN="$CAMP_REPO/target/debug/bankswap"
  [ -x "$BIN" ] || camp_die "$BIN was not built"
}

# camp_payload DIR VERSION: a payload: bin/app (says hello, sleeps) and random files.
camp_payload() {
  local dir="$1" version="$2" i size
  mkdir -p "$dir/bin" "$dir/data/a" "$dir/data/b"
  printf '#!/bin/sh\necho "hello from %s"\nexec sleep 100000\n' "$version" >"$dir/bin/app"
  chmod 755 "$dir/bin/app"
  echo "$version" >"$dir/VERSION"
  for ((i = 0; i < CAMP_FILES; i++)); do
    camp_below $((CAMP_MAX_KIB * 1024))
    size=$((CAMP_R + 1))
    if ((i % 2)); then
      head -c "$size" /dev/urandom >"$dir/data/a/f$i.bin"
    else
      od -An -tx1 -N "$((size / 3 + 1))" /dev/urandom >"$dir/data/b/f$i.txt" # text, about $size bytes
    fi
  done
}

# camp_setup WORKDIR: keys, payloads, bundles, TLS, the console, the template root.
# Sets CAMP_W, CONSOLE_URL, CA, TEMPLATE.
camp_setup() {
  CAMP_W="$1"
  local w="$CAMP_W" v
  "$BIN" keygen --out "$w/release" >/dev/null
  for v in 1.0.0 2.0.0 3.0.0; do camp_payload "$w/payload/$v" "$v"; done
  "$BIN" publish --key "$w/release.key" --payload "$w/payload/1.0.0" --version 1.0.0 --entrypoint bin/app --to "$w/d1" >/dev/null
  cp -a "$w/d1" "$w/d2"
  "$BIN" publish --key "$w/release.key" --payload "$w/payload/2.0.0" --version 2.0.0 --entrypoint bin/app --to "$w/d2" >/dev/null
  cp -a "$w/d2" "$w/d3"
  "$BIN" publish --key "$w/release.key" --payload "$w/payload/3.0.0" --version 3.0.0 --entrypoint bin/app --to "$w/d3" >/dev/null
  TEMPLATE="$w/template"
  "$BIN" init --root "$TEMPLATE" --bundle "$w/d1" --trust "$w/release.pub" >/dev/null
  "$BIN" apply --root "$TEMPLATE" --bundle "$w/d2" --trust "$w/release.pub" >/dev/null
  camp_bank_is "$TEMPLATE" Bank1 1.0.0 && camp_bank_is "$TEMPLATE" Bank2 2.0.0 ||
    camp_die "the template root is not 1.0.0 + 2.0.0: $CAMP_WHY"
  camp_start_console "$w" "$w/d3"
  camp_log "console at $CONSOLE_URL serving 3.0.0; template root: 1.0.0 in Bank1, 2.0.0 active in Bank2"
}

# ----- checks --------------------------------------------------------------------------

# camp_bank_is ROOT BANK VERSION: whether ROOT/BANK holds exactly the files of
# VERSION's payload (plus the bank record, which must name VERSION). Else CAMP_WHY says why.
camp_bank_is() {
  local root="$1" bank="$2" version="$3" dir diffs first
  dir="$root/$bank"
  CAMP_WHY=""
  if [ ! -d "$dir" ]; then
    CAMP_WHY="$bank is missing but the state says it holds $version"
    return 1
  fi
  if [ ! -d "$CAMP_W/payload/$version" ]; then
    CAMP_WHY="$bank claims $version, which was never published"
    return 1
  fi
  if ! grep -Eq "\"version\": *\"${version//./\\.}\"" "$dir/.bankswap-record.json" 2>/dev/null; then
    CAMP_WHY="$bank has no bank record naming $version"
    return 1
  fi
  if ! diffs="$(diff -rq --no-dereference -x .bankswap-record.json "$dir" "$CAMP_W/payload/$version" 2>&1)"; then
    first="$(head -1 <<<"$diffs")"
    CAMP_WHY="$bank is not the whole $version: $(wc -l <<<"$diffs") difference(s), e.g. ${first//$root\//}"
    CAMP_WHY="${CAMP_WHY//$CAMP_W\/payload\//release }"
    if [[ "$first" =~ ^Files\ ([^ ]+)\ and ]] && [ -f "${BASH_REMATCH[1]}" ]; then
      CAMP_WHY+=" ($(stat -c %s "${BASH_REMATCH[1]}") bytes on disk)"
    fi
    return 1
  fi
  [ -x "$dir/bin/app" ] || {
    CAMP_WHY="$bank/bin/app is not executable"
    return 1
  }
}

# camp_status ROOT: S_ACTIVE_BANK, S_ACTIVE, S_PREVIOUS, S_PHASE from `status --json`
# (empty when absent or null). Fails when status fails.
camp_status() {
  local json
  json="$("$BIN" status --root "$1" --json 2>"$CAMP_W/status.err")" || {
    CAMP_WHY="status failed: $(head -1 "$CAMP_W/status.err")"
    return 1
  }
  field() { sed -n "s/^  \"$1\": \"\([^\"]*\)\",\{0,1\}$/\1/p" <<<"$json" | head -1; }
  S_ACTIVE_BANK="$(field active_bank)"
  S_ACTIVE="$(field active_version)"
  S_PREVIOUS="$(field previous_version)"
  S_PHASE="$(field phase)"
}

camp_other_bank() { if [ "$1" = Bank1 ]; then echo Bank2; else echo Bank1; fi; }

# camp_check_after_cut ROOT: check 1 (see the top). Sets OUTCOME (the active version) or CAMP_WHY.
camp_check_after_cut() {
  local root="$1" other
  OUTCOME=""
  camp_status "$root" || return 1
  if [ -z "$S_ACTIVE" ] || [ -z "$S_ACTIVE_BANK" ]; then
    CAMP_WHY="status names no active version"
    return 1
  fi
  camp_bank_is "$root" "$S_ACTIVE_BANK" "$S_ACTIVE" || {
    CAMP_WHY="active: $CAMP_WHY"
    return 1
  }
  other="$(camp_other_bank "$S_ACTIVE_BANK")"
  if [ -n "$S_PREVIOUS" ] && [ -d "$root/$other" ]; then
    camp_bank_is "$root" "$other" "$S_PREVIOUS" || {
      CAMP_WHY="previous (the rollback target): $CAMP_WHY"
      return 1
    }
  fi
  OUTCOME="$S_ACTIVE${S_PHASE:+ $S_PHASE}"
}

# camp_write_config ROOT CONFIG [URL]: the agent config for ROOT, polling the
# console at URL (default CONSOLE_URL).
camp_write_config() {
  cat >"$2" <<EOF
console = "${3:-$CONSOLE_URL}"
root = "$1"
trusted_keys = ["$CAMP_W/release.pub"]
poll_interval = "2s"
max_delay = "0s"
[health]
grace = "$CAMP_GRACE"
[tls]
ca_certs = ["$CA"]
EOF
}

# camp_start_agent ROOT LOG: starts `bankswap run` on ROOT logging to LOG; sets AGENT_PID.
# Its config is written outside the root ($CAMP_W/agent.toml).
camp_start_agent() {
  camp_write_config "$1" "$CAMP_W/agent.toml"
  BANKSWAP_LOG=info "$BIN" run --config "$CAMP_W/agent.toml" >/dev/null 2>>"$2" &
  AGENT_PID=$!
  camp_track "$AGENT_PID"
}

# The log without colour codes.
camp_plain() { sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null; }
camp_log_has() { camp_plain "$1" | grep -Eq -e "$2"; }
camp_committed_v3() {
  camp_status "$1" && [ "$S_ACTIVE" = 3.0.0 ] && [ "$S_PHASE" = committed ]
}

# camp_restarted_payload ROOT LOG PATTERN: waits for the restarted agent's first
# payload start (a line of LOG matching PATTERN, naming version= and bank=) and
# checks that the bank holds the version. 0: it does; 1: no start within
# CAMP_DEADLINE_S (the agent is stopped); 2: the bank holds other data. CAMP_WHY says why.
camp_restarted_payload() {
  local root="$1" log="$2" pattern="$3" line version bank
  if ! camp_wait "the restarted agent to start a payload" "$CAMP_DEADLINE_S" camp_log_has "$log" "$pattern"; then
    CAMP_WHY="restart: no payload started within ${CAMP_DEADLINE_S}s: $(camp_plain "$log" | tail -3 | tr '\n' ' ')"
    camp_stop_agent "$AGENT_PID"
    return 1
  fi
  line="$(camp_plain "$log" | grep -E -m1 "$pattern")"
  version="$(sed -n 's/.*version="\{0,1\}\([^" ]*\)"\{0,1\}.*/\1/p' <<<"$line")"
  bank="$(sed -n 's/.*bank="\{0,1\}\(Bank[12]\).*/\1/p' <<<"$line")"
  if ! camp_bank_is "$root" "$bank" "$version"; then
    CAMP_WHY="restart: the agent started $version from $bank: $CAMP_WHY"
    return 2
  fi
}

# camp_check_restart ROOT LOG: check 2 (see the top), with a fresh log LOG.
camp_check_restart() {
  local root="$1" log="$2" rc=0 started=0
  : >"$log"
  camp_start_agent "$root" "$log"
  camp_restarted_payload "$root" "$log" 'running .*version=' || started=$?
  if ((started == 1)); then
    return 1
  elif ((started == 2)); then
    rc=1
  elif ! camp_wait "the restarted agent to commit 3.0.0" "$CAMP_DEADLINE_S" camp_committed_v3 "$root"; then
    CAMP_WHY="restart: 3.0.0 not committed within ${CAMP_DEADLINE_S}s (status: ${S_ACTIVE:-?} ${S_PHASE:-?}): $(camp_plain "$log" | grep -E 'ERROR|WARN' | tail -2 | tr '\n' ' ')"
    rc=1
  elif ! camp_bank_is "$root" "$S_ACTIVE_BANK" 3.0.0; then
    CAMP_WHY="restart: committed 3.0.0 but $CAMP_WHY"
    rc=1
  elif [ -z "$S_PREVIOUS" ]; then
    CAMP_WHY="restart: 3.0.0 committed but no previous version is left to roll back to"
    rc=1
  elif ! camp_bank_is "$root" "$(camp_other_bank "$S_ACTIVE_BANK")" "$S_PREVIOUS"; then
    CAMP_WHY="restart: previous $CAMP_WHY"
    rc=1
  fi
  camp_stop_agent "$AGENT_PID"
  return $rc
}

# ----- tallies -----------------------------------------------------------------------

declare -gA CAMP_COUNT=()
camp_count() { CAMP_COUNT["$1"]=$((${CAMP_COUNT["$1"]:-0} + 1)); }
CAMP_BROKEN=0
CAMP_TOTAL=0
# Trials voided because the tool under the root failed on its own (see
# camp_hook_tool_failed), and how many a campaign tolerates before it gives up: a
# verdict read off a dead file system says nothing about bankswap, either way.
CAMP_TOOL_FAULTS=0
CAMP_MAX_TOOL_FAULTS="${CAMP_MAX_TOOL_FAULTS:-3}"
CAMP_TOOL_LINES=()
CAMP_BROKEN_LINES=()

# camp_record PHASE KIND INDEX OK|BROKEN DETAIL
CAMP_PHASES_SEEN=()
camp_record() {
  CAMP_TOTAL=$((CAMP_TOTAL + 1))
  [ -n "${CAMP_COUNT["$1 cuts"]:-}" ] || CAMP_PHASES_SEEN+=("$1")
  camp_count "$1 cuts"
  camp_count "$1 $2"
  if [ "$4" = OK ]; then
    camp_count "$1 ok: $5"
  else
    CAMP_BROKEN=$((CAMP_BROKEN + 1))
    camp_count "$1 broken"
    CAMP_BROKEN_LINES+=("#$3 $1/$2: $5")
  fi
}

# camp_summary UNIT: per-phase counts, the broken ones, `N UNIT, M broken`.
camp_summary() {
  local key phase
  echo
  for phase in "${CAMP_PHASES_SEEN[@]}"; do
    printf '%-9s %4d %s, %d broken\n' "$phase" "${CAMP_COUNT["$phase cuts"]}" "$1" "${CAMP_COUNT["$phase broken"]:-0}"
    for key in $(printf '%s\n' "${!CAMP_COUNT[@]}" | grep "^$phase " | grep -v -e ' cuts$' -e ' broken$' | sed "s/^$phase //" | sort | tr ' ' '\a'); do
      key="${key//$'\a'/ }"
      printf '            %4d  %s\n' "${CAMP_COUNT["$phase $key"]}" "$key"
    done
  done
  if ((CAMP_BROKEN > 0)); then
    echo
    echo "broken:"
    printf '  %s\n' "${CAMP_BROKEN_LINES[@]}"
  fi
  if ((CAMP_TOOL_FAULTS > 0)); then
    echo
    echo "voided and run again (the file system under test failed on its own):"
    printf '  %s\n' "${CAMP_TOOL_LINES[@]}"
  fi
  echo
  echo "seed $CAMP_SEED_TEXT: $CAMP_TOTAL $1, $CAMP_BROKEN broken$( ((CAMP_TOOL_FAULTS == 0)) || echo ", $CAMP_TOOL_FAULTS voided by the tool")"
}

# ----- one trial -------------------------------------------------------------------------
#
# The caller defines the hooks:
#   camp_hook_prepare NAME   a fresh copy of the template for a trial; sets ROOT
#   camp_hook_cut            after the processes are dead: what else the cut drops
#                            (power: clear LazyFS's cache, remount); ROOT stays valid
#   camp_hook_arm_crash RGX  (power only) make the file system die right before the
#                            next rename onto a path matching RGX
#   camp_hook_crashed        (power only) whether it died (defined below: never)
#   camp_hook_recover        (power only) after it died: remount
#   camp_hook_finish         end of a trial (unmount, remove the root)
#   camp_hook_tool_failed    (optional) whether the file system under test failed on
#                            its own during the trial (not by a fault the trial armed):
#                            its verdict is then void; sets CAMP_TOOL_WHY

# A kill campaign's file system never dies; the power-cut campaign redefines this.
camp_hook_crashed() { return 1; }

# camp_agent_phase PHASE: whether PHASE is a running agent with steps (CAMP_STEPS_PHASE).
camp_agent_phase() { declare -p "CAMP_STEPS_$1" >/dev/null 2>&1; }

# camp_agent_stage PHASE LOG: the last step of PHASE whose first line LOG has.
camp_agent_stage() {
  local -n steps="CAMP_STEPS_$1" starts="CAMP_STEP_START_$1"
  local log="$2" stage=boot entry name
  for entry in "${steps[@]:1}"; do
    name="${entry%:*}"
    camp_log_has "$log" "${starts[$name]}" && stage="$name"
  done
  echo "$stage"
}

# camp_start_op PHASE LOG: starts the operation on ROOT; sets OP_PID.
camp_start_op() {
  case "$1" in
    apply)
      BANKSWAP_LOG=info "$BIN" apply --root "$ROOT" --bundle "$CAMP_W/d3" --trust "$CAMP_W/release.pub" >/dev/null 2>>"$2" &
      OP_PID=$!
      camp_track "$OP_PID"
      ;;
    rollback)
      BANKSWAP_LOG=info "$BIN" rollback --root "$ROOT" >/dev/null 2>>"$2" &
      OP_PID=$!
      camp_track "$OP_PID"
      ;;
    online)
      camp_start_agent "$ROOT" "$2"
      OP_PID=$AGENT_PID
      ;;
    *) "camp_start_op_$1" "$2" ;;
  esac
}

# camp_op_done PHASE LOG: whether the operation finished (the command exited, or the
# agent committed 3.0.0).
camp_op_done() {
  case "$1" in
    online) camp_log_has "$2" ' committed .*version="?3\.0\.0' ;;
    apply | rollback) ! camp_alive "$OP_PID" ;;
    *) "camp_op_done_$1" "$2" ;;
  esac
}

# camp_where PHASE LOG: where the operation was when cut.
camp_where() {
  if camp_agent_phase "$1"; then
    echo "at $(camp_agent_stage "$1" "$2")"
  elif camp_alive "$OP_PID"; then
    echo during
  else
    echo "after it exited"
  fi
}

# Whether the file system died or the operation finished.
camp_either() { camp_hook_crashed || camp_op_done "$1" "$2"; }

# camp_calibrate PHASE: runs the phase uninterrupted CAMP_PROBES times; sets WINDOW_MS
# to 1.5 x the longest (from the start to the end of the operation), so the cuts
# spread over all of it and a little after.
camp_calibrate() {
  local phase="$1" probe start longest=0 took log
  for ((probe = 0; probe < CAMP_PROBES; probe++)); do
    camp_hook_prepare "probe-$phase-$probe"
    log="$CAMP_W/logs/probe-$phase-$probe.log"
    start="$(camp_now_ms)"
    camp_start_op "$phase" "$log"
    camp_wait "the $phase probe to finish" "$CAMP_DEADLINE_S" camp_op_done "$phase" "$log" ||
      camp_die "an uninterrupted $phase did not finish (log $log): $(camp_plain "$log" | tail -3)"
    took=$(($(camp_now_ms) - start))
    if camp_agent_phase "$phase"; then camp_stop_agent "$OP_PID"; else wait "$OP_PID" || camp_die "an uninterrupted $phase failed: $(tail -3 "$log")"; fi
    ((took > longest)) && longest=$took
    camp_hook_finish
  done
  WINDOW_MS=$((longest * 3 / 2 + 20))
  camp_log "$phase: an uninterrupted run takes up to ${longest} ms; cuts fall in the first ${WINDOW_MS} ms"
  if camp_agent_phase "$phase"; then camp_segments "$phase" "$log" "$start" "$took"; fi
}

# The steps of the online update, each with a weight: a cut falls into a step chosen
# by weight, at a uniform point of it, so short steps (staging a small payload takes
# a few hundred ms; the trial lasts CAMP_GRACE) are cut as often as they matter.
CAMP_STEPS_online=(boot:1 scheduled:1 staging:3 swap:1 trial:2 committed:1)
# Log line (ERE) that starts each step after boot.
declare -gA CAMP_STEP_START_online=([scheduled]='release scheduled' [staging]=' staging ' [swap]='staged and verified'
  [trial]='swapped' [committed]=' committed ')

# camp_log_ms LOG ERE: unix time in ms of the first line matching ERE (lines start with RFC 3339 UTC).
camp_log_ms() {
  local ts
  ts="$(camp_plain "$1" | grep -E -m1 -e "$2" | cut -d' ' -f1)"
  [ -n "$ts" ] && date -u -d "$ts" +%s%3N
}

# camp_segments PHASE LOG START_MS TOOK_MS: STEP_FROM_PHASE[step], STEP_TO_PHASE[step]
# in ms after the agent's start, from an uninterrupted probe's log.
camp_segments() {
  local phase="$1" log="$2" start="$3" took="$4" entry step prev=boot at line=""
  local -n steps="CAMP_STEPS_$phase" starts="CAMP_STEP_START_$phase"
  declare -gA "STEP_FROM_$phase=([boot]=0)" "STEP_TO_$phase=()"
  local -n from="STEP_FROM_$phase" to="STEP_TO_$phase"
  for entry in "${steps[@]:1}"; do
    step="${entry%:*}"
    at="$(camp_log_ms "$log" "${starts[$step]}")" || camp_die "the probe's log has no '${starts[$step]}' line"
    at=$((at - start))
    ((at >= from[$prev])) || at=${from[$prev]}
    to[$prev]=$at
    from[$step]=$at
    prev=$step
  done
  to[$prev]=$((took + took / 4 + 20))
  for entry in "${steps[@]}"; do line+=" ${entry%:*} ${from[${entry%:*}]}-${to[${entry%:*}]}"; done
  camp_log "$phase steps (ms after the agent starts):$line"
}

# camp_online_delay PHASE: picks a step by CAMP_STEPS_PHASE's weights; CAMP_STEP = it,
# CAMP_R = a uniform offset (ms) within its length in the probe. The trial waits for
# the step's first log line, then sleeps the offset: on a loaded machine the steps
# stretch, but each is still cut as often as its weight says.
camp_online_delay() {
  local -n steps="CAMP_STEPS_$1" from="STEP_FROM_$1" to="STEP_TO_$1"
  local total=0 entry pick
  for entry in "${steps[@]}"; do total=$((total + ${entry#*:})); done
  camp_below "$total"
  pick=$CAMP_R
  for entry in "${steps[@]}"; do
    if ((pick < ${entry#*:})); then
      CAMP_STEP="${entry%:*}"
      camp_below $((to[$CAMP_STEP] - from[$CAMP_STEP] + 1))
      return
    fi
    pick=$((pick - ${entry#*:}))
  done
}

# camp_online_wait PHASE LOG: waits for CAMP_STEP's first log line (boot: none), bounded;
# stops waiting at once when the step can no longer come (camp_step_or_stopped).
camp_online_wait() {
  [ "$CAMP_STEP" = boot ] && return 0
  camp_wait "the agent to reach $CAMP_STEP" "$CAMP_DEADLINE_S" camp_step_or_stopped "$1" "$2" || true
}

# camp_step_or_stopped PHASE LOG: whether LOG has CAMP_STEP's first line, or the agent
# exited, or the file system under test died (a crash armed before the start fires
# before the step: the keys.json rename comes before `release scheduled`).
camp_step_or_stopped() {
  local -n starts="CAMP_STEP_START_$1"
  camp_log_has "$2" "${starts[$CAMP_STEP]}" || camp_gone "$OP_PID" || camp_hook_crashed
}

# The file each crash kind dies before renaming onto (ERE on the path); a caller adds
# its own kinds.
declare -gA CAMP_CRASH_RGX=(
  [crash-state]='/state\.json$'
  [crash-bank]='/Bank[12]$'     # a staged tree renamed into a bank
  [crash-aside]='[^/]Bank[12]$' # a bank renamed aside (e.g. .retired-Bank1)
)
# Crash kinds armed before the operation starts (a caller adds its own).
declare -gA CAMP_CRASH_EARLY=()

# camp_trial PHASE KIND INDEX: one interruption. KIND: kill | clear | crash-state |
# crash-bank | crash-aside.
camp_trial() {
  local phase="$1" kind="$2" i="$3" delay log where rgx="" fired=""
  local -n window="WINDOW_$phase"
  camp_hook_prepare "trial-$i"
  log="$CAMP_W/logs/trial-$i-$phase.log"
  # A crash is armed for the next matching rename after the delay: armed after the
  # end it would never fire, so it falls within the first half of the operation
  # (a third of the window; the command runs for less than its probe did).
  if camp_agent_phase "$phase"; then
    camp_online_delay "$phase"
  elif [ "${kind#crash-}" != "$kind" ]; then
    camp_below $((window / 3))
  else
    camp_below "$window"
  fi
  local offset=$CAMP_R started early=0
  rgx="${CAMP_CRASH_RGX[$kind]:-}"
  # A rollback has one state write, and is over within a few ms of starting: its
  # crash is armed before it starts; so is a kind in CAMP_CRASH_EARLY (a write that
  # comes first in the operation).
  if [ -n "$rgx" ] && { [ "$phase" = rollback ] || [ -n "${CAMP_CRASH_EARLY[$kind]:-}" ]; }; then
    camp_hook_arm_crash "$rgx"
    early=1
  fi
  started="$(camp_now_ms)"
  camp_start_op "$phase" "$log"
  ! camp_agent_phase "$phase" || camp_online_wait "$phase" "$log"
  camp_sleep_ms "$offset"
  delay=$(($(camp_now_ms) - started)) # what the cut's report shows
  case "$kind" in
    kill | clear)
      # (for the agent, its log after the kill says best where it was)
      camp_agent_phase "$phase" || where="$(camp_where "$phase" "$log")"
      camp_kill_tree "$OP_PID"
      ! camp_agent_phase "$phase" || where="$(camp_where "$phase" "$log")"
      camp_hook_cut
      ;;
    crash-*)
      if ((early)); then
        where="armed before it started"
      else
        where="armed $(camp_where "$phase" "$log")"
        camp_hook_arm_crash "$rgx"
      fi
      camp_wait "the $phase to finish or the file system to die" "$CAMP_DEADLINE_S" \
        camp_either "$phase" "$log" || true
      camp_kill_tree "$OP_PID"
      if camp_hook_crashed; then
        fired="fired"
        camp_hook_recover
      else
        fired="not reached"
        camp_hook_cut
      fi
      ;;
  esac
  local label="$kind${fired:+ ($fired)} $where"
  CAMP_WHY=""
  local after=camp_check_after_cut restart=camp_check_restart
  if declare -F "camp_check_after_cut_$phase" >/dev/null; then after="camp_check_after_cut_$phase"; fi
  if declare -F "camp_check_restart_$phase" >/dev/null; then restart="camp_check_restart_$phase"; fi
  local verdict=OK detail=""
  if ! "$after" "$ROOT"; then
    verdict=BROKEN detail="cut at ${delay} ms ($label): $CAMP_WHY"
  elif ! "$restart" "$ROOT" "$CAMP_W/logs/trial-$i-restart.log"; then
    verdict=BROKEN detail="cut at ${delay} ms ($label), left $OUTCOME: $CAMP_WHY"
  else
    detail="$label -> $OUTCOME"
  fi
  CAMP_TOOL_WHY=""
  if declare -F camp_hook_tool_failed >/dev/null && camp_hook_tool_failed; then
    CAMP_TOOL_FAULTS=$((CAMP_TOOL_FAULTS + 1))
    CAMP_TOOL_LINES+=("#$i $phase/$kind: $CAMP_TOOL_WHY (the trial would have read $verdict)")
    camp_log "#$i $phase/$kind: $CAMP_TOOL_WHY: the trial is void and runs again"
    ((CAMP_TOOL_FAULTS <= CAMP_MAX_TOOL_FAULTS)) ||
      camp_die "the file system under test failed on its own $CAMP_TOOL_FAULTS times: ${CAMP_TOOL_LINES[*]}"
    camp_hook_finish
    camp_trial "$@"
    return
  fi
  camp_record "$phase" "$kind" "$i" "$verdict" "$detail"
  if [ "${CAMP_VERBOSE:-0}" = 1 ]; then camp_log "#$i $phase cut at $delay ms ($label): ${CAMP_WHY:-ok, $OUTCOME}"; fi
  camp_hook_finish
}
