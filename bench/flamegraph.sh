#!/usr/bin/env bash
# Where the CPU goes under a write load: a 3-member release cluster, N
# clients appending 256-byte intents (as in bench/compare.sh), `perf record`
# of the whole machine (the three members and the load generator share its
# cores, so all of them are the cost of a write), folded with inferno into
# an SVG flamegraph, plus a table of each process's share by part of the
# write path.
#
#   bench/flamegraph.sh [clients=64] [duration_s=6]
#
# Call graphs come from frame pointers (DWARF unwinding took longer than a
# session to fold), so the release build is made with
# RUSTFLAGS="-C force-frame-pointers=yes" (a full rebuild of the release
# folder the first time; pass BIN= to reuse such a build). Needs perf
# (Debian `linux-perf`) and inferno (`cargo install inferno`), installed here
# when missing. Writes bench/results/flamegraph-<date>.svg and .folded.gz.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawbernetes/target}"
CLIENTS="${1:-64}"
DUR="${2:-6}"

if ! command -v perf >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq linux-perf curl >/dev/null
fi
command -v inferno-flamegraph >/dev/null 2>&1 || cargo install --locked inferno >&2
if [ -z "${BIN:-}" ]; then
  RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release --bin clawd --bin clawctl >&2
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
  --duration "$((DUR + 3))s" --warmup 1s --payload-bytes 256 >"$WORK/bench.json" &
bench=$!
sleep 1.5
perf record -F 999 -a -g -o "$WORK/perf.data" -- sleep "$DUR" 2>/dev/null
wait "$bench"
cat "$WORK/bench.json" >&2
echo "processes: leader ${pids[0]}, followers ${pids[1]} ${pids[2]}, load generator $bench" >&2

perf script -F +pid -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf --pid >"$WORK/folded.txt"
SVG="bench/results/flamegraph-$STAMP.svg"
inferno-flamegraph --minwidth 1 --title "3 clawd members and clawctl bench, $CLIENTS clients, whole machine" \
  <"$WORK/folded.txt" >"$SVG"
gzip -9 <"$WORK/folded.txt" >"bench/results/flamegraph-$STAMP.folded.gz"
echo "flamegraph: $SVG" >&2
# Each process's share of the machine, by part of the write path (the first
# pattern a stack matches names it).
python3 - "$WORK/folded.txt" "${pids[0]}" "${pids[1]}" "${pids[2]}" "$bench" <<'PY'
import collections, re, sys
roles = {sys.argv[2]: "leader", sys.argv[3]: "follower", sys.argv[4]: "follower", sys.argv[5]: "load generator"}
parts = [
    ("client/raft gRPC serving", r"serve_connection|H2Stream|hyper::proto::h2::server"),
    ("gRPC client (replication; the load generator's calls)", r"H2ClientFuture|ConnMapErr|h2::client|ReplicationCore"),
    ("openraft core", r"RaftCore"),
    ("apply (state machine)", r"sm::worker"),
    ("raft log writes + fsync", r"log_writer::run"),
    ("proposal batching", r"proposer::"),
    ("load generator", r"clawctl::"),
    ("tokio scheduler", r"tokio::runtime::scheduler"),
    ("memory allocation", r"malloc|free|mi_"),
]
by, total = collections.defaultdict(collections.Counter), 0
for line in open(sys.argv[1]):
    stack, n = line.rstrip().rsplit(" ", 1)
    n = int(n); total += n
    pid = (re.search(r"-(\d+)$", stack.split(";")[0]) or re.search(r"(\d+)", stack.split(";")[0]))
    role = roles.get(pid.group(1) if pid else "", "other (kernel threads, idle)")
    part = next((name for name, pat in parts if re.search(pat, stack)), "other")
    by[role][part] += n
for role, parts_n in sorted(by.items(), key=lambda kv: -sum(kv[1].values())):
    print(f"{100 * sum(parts_n.values()) / total:5.1f}%  {role}")
    for part, n in parts_n.most_common(8):
        print(f"        {100 * n / total:5.1f}%  {part}")
PY
