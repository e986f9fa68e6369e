#!/usr/bin/env bash
# Measures `clawctl bench append` on 1 and 3 local members at several client
# counts, each on a fresh cluster (release build, data on this machine's disk).
#   bench/append.sh [duration_s=10] [clients="1 16 64"]
# Prints one JSON line per run, prefixed with the member count.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawbernetes/target}"
# BIN may point at prebuilt binaries; otherwise build them.
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin clawd --bin clawctl >&2
  BIN="$CARGO_TARGET_DIR/release"
fi
DUR="${1:-10}"
CLIENTS="${2:-1 16 64}"
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

wait_up() { for _ in $(seq 1 100); do "$BIN/clawctl" --server "$1" status >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "clawd at $1 did not start" >&2; return 1; }

start_cluster() { # $1 = members, $2 = base port
  local n=$1 base=$2
  pids=()
  for i in $(seq 1 "$n"); do
    local join=""; [ "$i" -gt 1 ] && join="--join"
    CLAW_LOG_LEVEL=warn "$BIN/clawd" --id "$i" --listen "127.0.0.1:$((base + i))" --data-dir "$WORK/m$base-$i" $join \
      >"$WORK/m$base-$i.log" 2>&1 &
    pids+=($!)
    wait_up "127.0.0.1:$((base + i))"
    if [ "$i" -gt 1 ]; then
      "$BIN/clawctl" --server "127.0.0.1:$((base + 1))" member add --id "$i" --addr "127.0.0.1:$((base + i))" --voter >/dev/null
    fi
  done
}

stop_cluster() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; pids=(); }

port=17400
for members in 1 3; do
  for c in $CLIENTS; do
    port=$((port + 10))
    start_cluster "$members" "$port"
    out=$("$BIN/clawctl" --server "127.0.0.1:$((port + 1))" -o json bench append --clients "$c" --duration "$DUR" | tr -d "\n")
    rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/${pids[0]}/status")
    echo "{\"members\":$members,\"leader_rss_kb\":$rss_kb,\"result\":$out}"
    stop_cluster
  done
done
