#!/usr/bin/env bash
# Where the leader's time goes under load: a 3-member release cluster, N
# clients appending 256-byte intents (as in bench/compare.sh), `perf record`
# on the leader, folded with inferno into an SVG flamegraph.
#
#   bench/flamegraph.sh [clients=64] [duration_s=10]
#
# Needs perf (Debian `linux-perf`, installed here when missing) and
# inferno (`cargo install inferno`, likewise). Writes
# bench/results/flamegraph-<date>.svg and prints the top frames.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawbernetes/target}"
CLIENTS="${1:-64}"
DUR="${2:-10}"

if ! command -v perf >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq linux-perf curl >/dev/null
fi
command -v inferno-flamegraph >/dev/null 2>&1 || cargo install --locked inferno >&2
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin clawd --bin clawctl >&2
  BIN="$CARGO_TARGET_DIR/release"
fi

mkdir -p bench/results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d -p "${BENCH_DIR:-$PWD}" bench-flame.XXXX)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
metric() { curl -s "http://$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'; }

base=17500
for i in 1 2 3; do
  join=""; [ "$i" -gt 1 ] && join="--join"
  CLAW_LOG_LEVEL=warn "$BIN/clawd" --id "$i" --listen "127.0.0.1:$((base + i))" --data-dir "$WORK/c$i" $join \
    >"$WORK/c$i.log" 2>&1 &
  pids+=($!)
done
leader_pid=${pids[0]}
for _ in $(seq 1 150); do [ "$(metric "127.0.0.1:$((base + 1))" claw_raft_is_leader)" = 1 ] && break; sleep 0.2; done
for i in 2 3; do
  "$BIN/clawctl" --server "127.0.0.1:$((base + 1))" member add --id "$i" --addr "127.0.0.1:$((base + i))" --voter >/dev/null
done

"$BIN/clawctl" --server "127.0.0.1:$((base + 1))" -o json bench append --clients "$CLIENTS" \
  --duration "$((DUR + 2))s" --warmup 1s --payload-bytes 256 >"$WORK/bench.json" &
bench=$!
sleep 1.5
perf record -F 499 -g --call-graph dwarf,16384 -p "$leader_pid" -o "$WORK/perf.data" -- sleep "$DUR" 2>/dev/null
wait "$bench"
cat "$WORK/bench.json" >&2

perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/folded.txt"
SVG="bench/results/flamegraph-$STAMP.svg"
inferno-flamegraph --title "clawd leader, 3 members, $CLIENTS clients" <"$WORK/folded.txt" >"$SVG"
cp "$WORK/folded.txt" "bench/results/flamegraph-$STAMP.folded"
echo "flamegraph: $SVG" >&2
# The frames holding the most samples (self time), for the notes.
python3 - "$WORK/folded.txt" <<'PY'
import collections, sys
self_t, total = collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1)
    n = int(n); total += n
    self_t[stack.split(";")[-1]] += n
for frame, n in self_t.most_common(25):
    print(f"{100 * n / total:5.1f}%  {frame[:140]}")
PY
