#!/usr/bin/env bash
# A member joining a long history. Its log was purged into snapshots long
# ago, so the leader sends it a snapshot holding every event since the
# first. Measures the time until the new member has applied the leader's
# history, and both members' resident memory while it happens.
#   bench/join.sh [events=1000000]
# With DATA=<dir>, member 1 reuses a data directory that bench/history.sh
# left (its WORK/data: a single member 1 at 127.0.0.1:17900) instead of
# generating a history. Prints one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawbernetes/target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin clawd --bin clawctl >&2
  BIN="$CARGO_TARGET_DIR/release"
fi
EVENTS="${1:-1000000}"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
DATA="${DATA:-$WORK/data1}"
P1=17900
P2=17901
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

CLAW_LOG_LEVEL=warn "$BIN/clawd" --id 1 --listen "127.0.0.1:$P1" --data-dir "$DATA" >"$WORK/clawd1.log" 2>&1 &
leader=$!
pids+=("$leader")
CTL1=("$BIN/clawctl" --server "127.0.0.1:$P1")
CTL2=("$BIN/clawctl" --server "127.0.0.1:$P2")
for _ in $(seq 1 600); do "${CTL1[@]}" status >/dev/null 2>&1 && break; sleep 0.5; done
seq_of() { "$@" -o json status 2>/dev/null | python3 -c "import json,sys;print(json.load(sys.stdin)['last_seq'])" 2>/dev/null || echo 0; }
if [ "$(seq_of "${CTL1[@]}")" -lt $((EVENTS / 2)) ]; then
  echo "generating $EVENTS events" >&2
  "${CTL1[@]}" -o json bench history --events "$EVENTS" --samples 1 >/dev/null
fi
last=$(seq_of "${CTL1[@]}")
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
leader_before_kb=$(rss "$leader")

CLAW_LOG_LEVEL=warn "$BIN/clawd" --id 2 --listen "127.0.0.1:$P2" --data-dir "$WORK/data2" --join >"$WORK/clawd2.log" 2>&1 &
joiner=$!
pids+=("$joiner")
for _ in $(seq 1 100); do "${CTL2[@]}" status >/dev/null 2>&1 && break; sleep 0.2; done
# Both members' resident memory every second while the new one catches up.
(while kill -0 "$joiner" 2>/dev/null; do
  echo "$(rss "$leader") $(rss "$joiner")"
  sleep 1
done) >"$WORK/join_rss.txt" &
t0=$(date +%s.%N)
"${CTL1[@]}" member add --id 2 --addr "127.0.0.1:$P2" >/dev/null
for _ in $(seq 1 7200); do
  [ "$(seq_of "${CTL2[@]}")" -ge "$last" ] && break
  sleep 0.5
done
join_s=$(echo "$(date +%s.%N) - $t0" | bc)
got=$(seq_of "${CTL2[@]}")
python3 - "$WORK" "$last" "$got" "$join_s" "$leader_before_kb" <<'PY'
import json, sys
work, last, got, join_s, before = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rows = [tuple(map(int, l.split())) for l in open(f"{work}/join_rss.txt") if len(l.split()) == 2]
print(json.dumps({
    "events": last, "joiner_last_seq": got, "caught_up": got >= last,
    "join_s": round(join_s, 1),
    "leader_rss_before_mib": round(before / 1024),
    "leader_peak_rss_during_join_mib": round(max([r[0] for r in rows] or [0]) / 1024),
    "joiner_peak_rss_mib": round(max([r[1] for r in rows] or [0]) / 1024),
}, indent=2))
PY
