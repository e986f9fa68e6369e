#!/usr/bin/env bash
# clawd beside etcd (Debian's etcd-server, 3.4) in one run on this machine:
# 1 and 3 members each, durable (fsync on: both sync their logs by default),
# driven by the same load generator (`clawctl bench append`, and for etcd
# `clawctl bench append --etcd`, its gRPC KV Put) at 1, 16, 64 and 256
# clients with 256-byte payloads; plus the disk's floor: fio's fdatasync
# latency and RocksDB's db_bench with sync=1 at the same writer counts.
#
#   bench/compare.sh [duration_s=10] [clients="1 16 64 256"]
#
# MEMBERS="3" limits the member counts (default "1 3"). BASE=<dir> holds
# another release build's clawd (an earlier commit): each clawd row is then
# run with it too, right before, labelled "clawd-base", so a change is
# measured against its baseline and etcd in the same minutes. ROUNDS=n
# repeats every row n times (interleaved), to show the run-to-run spread.
#
# Writes JSON lines to bench/results/compare-<date>.jsonl and prints a
# Markdown table for docs/benchmarks.md. Release build (BIN= to reuse one).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawbernetes/target}"
DUR="${1:-10}"
CLIENTS="${2:-1 16 64 256}"

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v rocksdb_db_bench >/dev/null 2>&1 || command -v db_bench >/dev/null 2>&1 || need+=(rocksdb-tools)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
DB_BENCH=$(command -v rocksdb_db_bench || command -v db_bench)

if [ -z "${BIN:-}" ]; then
  cargo build --release --bin clawd --bin clawctl >&2
  BIN="$CARGO_TARGET_DIR/release"
fi
mkdir -p bench/results
OUT="bench/results/compare-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
WORK=$(mktemp -d -p "${BENCH_DIR:-$PWD}" bench-compare.XXXX)
pids=()
stop_all() {
  for p in "${pids[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT

record() { echo "$1" | tee -a "$OUT"; }

metric() { # $1 = clawd address, $2 = sample name: its value from /metrics
  curl -s "http://$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}

start_clawd() { # $1 = members, $2 = directory of the clawd binary
  local n=$1 base=17400 bin=${2:-$BIN}
  for i in $(seq 1 "$n"); do
    local join=""; [ "$i" -gt 1 ] && join="--join"
    CLAW_LOG_LEVEL=warn "$bin/clawd" --id "$i" --listen "127.0.0.1:$((base + i))" --data-dir "$WORK/c$i" $join \
      >"$WORK/c$i.log" 2>&1 &
    pids+=($!)
  done
  # Member 1 founds the cluster; wait until it has elected itself.
  for _ in $(seq 1 150); do [ "$(metric "127.0.0.1:$((base + 1))" claw_raft_is_leader)" = 1 ] && break; sleep 0.2; done
  [ "$(metric "127.0.0.1:$((base + 1))" claw_raft_is_leader)" = 1 ] || { echo "clawd did not elect a leader" >&2; cat "$WORK/c1.log" >&2; return 1; }
  for i in $(seq 2 "$n"); do
    "$BIN/clawctl" --server "127.0.0.1:$((base + 1))" member add --id "$i" --addr "127.0.0.1:$((base + i))" --voter >/dev/null
  done
}

start_etcd() { # $1 = members
  local n=$1 cluster=""
  for i in $(seq 1 "$n"); do cluster+="${cluster:+,}e$i=http://127.0.0.1:$((23800 + i))"; done
  for i in $(seq 1 "$n"); do
    etcd --name "e$i" --data-dir "$WORK/e$i" \
      --listen-client-urls "http://127.0.0.1:$((23790 + i))" --advertise-client-urls "http://127.0.0.1:$((23790 + i))" \
      --listen-peer-urls "http://127.0.0.1:$((23800 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((23800 + i))" \
      --initial-cluster "$cluster" --initial-cluster-state new --log-level error >"$WORK/e$i.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 1 100); do
    curl -s "http://127.0.0.1:23791/health" | grep -q '"health":"true"' && return 0; sleep 0.2
  done
  echo "etcd did not become healthy" >&2; cat "$WORK/e1.log" >&2; return 1
}

run_clawd() { # $1 = members, $2 = clients, $3 = label, $4 = binary directory
  rm -rf "$WORK"/c* "$WORK"/e*
  start_clawd "$1" "$4"
  local addr=127.0.0.1:17401 f0 s0 f1 s1 r per
  f0=$(metric "$addr" claw_fsync_seconds_count); s0=$(metric "$addr" claw_events_last_seq)
  r=$("$BIN/clawctl" --server "$addr" -o json bench append --clients "$2" --duration "${DUR}s" --warmup 1s --payload-bytes 256)
  f1=$(metric "$addr" claw_fsync_seconds_count); s1=$(metric "$addr" claw_events_last_seq)
  per=$(awk -v a="$f0" -v b="$f1" -v x="$s0" -v y="$s1" 'BEGIN { if (b > a) printf "%.1f", (y - x) / (b - a); else print 0 }')
  record "{\"system\":\"$3\",\"members\":$1,\"events_per_fsync\":$per,\"report\":$(echo "$r" | tr -d '\n')}"
  stop_all
}

for members in ${MEMBERS:-1 3}; do
  for c in $CLIENTS; do
    for _ in $(seq 1 "${ROUNDS:-1}"); do
      [ -n "${BASE:-}" ] && run_clawd "$members" "$c" clawd-base "$BASE"
      run_clawd "$members" "$c" clawd "$BIN"

      rm -rf "$WORK"/c* "$WORK"/e*
      start_etcd "$members"
      r=$("$BIN/clawctl" -o json bench append --etcd http://127.0.0.1:23791 --clients "$c" --duration "${DUR}s" --warmup 1s --payload-bytes 256)
      record "{\"system\":\"etcd\",\"members\":$members,\"report\":$(echo "$r" | tr -d '\n')}"
      stop_all
    done
  done
done

# The disk's floor: one writer, 4 KiB writes, each followed by fdatasync.
fio --name=fdatasync --directory="$WORK" --rw=write --bs=4k --size=32m --fdatasync=1 --ioengine=sync \
  --output-format=json >"$WORK/fio.json"
python3 - "$WORK/fio.json" <<'PY' | tee -a "$OUT"
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]["sync"]
p = j.get("lat_ns", j).get("percentile", {})
print(json.dumps({"system": "fio", "fdatasync_p50_ms": p.get("50.000000", 0) / 1e6,
                  "fdatasync_p99_ms": p.get("99.000000", 0) / 1e6, "fdatasync_mean_ms": j["lat_ns"]["mean"] / 1e6}))
PY

# RocksDB alone, synced writes of 256-byte values at the same writer counts.
for c in $CLIENTS; do
  rm -rf "$WORK/rdb"
  "$DB_BENCH" --benchmarks=fillrandom --sync=1 --threads="$c" --value_size=256 --key_size=16 \
    --duration="$DUR" --num=100000000 --db="$WORK/rdb" --disable_wal=0 --histogram=1 >"$WORK/db_bench.txt" 2>/dev/null
  # "fillrandom : 418.189 micros/op 2391 ops/sec ..." and "Percentiles: P50: 100.74 ... P99: 9783.21 ..." (µs)
  ops=$(awk '/^fillrandom/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^ops\/sec;?$/) { print $i; exit } }' "$WORK/db_bench.txt")
  p50=$(awk '/^Percentiles:/ { for (i = 1; i < NF; i++) if ($i == "P50:") { print $(i+1) / 1000; exit } }' "$WORK/db_bench.txt")
  p99=$(awk '/^Percentiles:/ { for (i = 1; i < NF; i++) if ($i == "P99:") { print $(i+1) / 1000; exit } }' "$WORK/db_bench.txt")
  [ -n "$ops" ] || { echo "could not read db_bench's output:" >&2; cat "$WORK/db_bench.txt" >&2; exit 1; }
  record "{\"system\":\"db_bench\",\"threads\":$c,\"ops_per_s\":$ops,\"p50_ms\":${p50:-0},\"p99_ms\":${p99:-0}}"
done

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| system | members | clients | writes/s | p50 ms | p99 ms | p99.9 ms | events/fsync |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if r["system"] in ("clawd", "clawd-base", "etcd"):
        b = r["report"]
        print(f"| {r['system']} | {r['members']} | {b['clients']} | {b['events_per_s']:.0f} | {b['p50_ms']:.2f} | "
              f"{b['p99_ms']:.2f} | {b['p999_ms']:.2f} | {r.get('events_per_fsync', '')} |")
for r in rows:
    if r["system"] == "db_bench":
        print(f"| db_bench sync=1 | - | {r['threads']} | {r['ops_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | | |")
    if r["system"] == "fio":
        print(f"\nfio fdatasync (4 KiB writes): p50 {r['fdatasync_p50_ms']:.3f} ms, p99 {r['fdatasync_p99_ms']:.3f} ms, mean {r['fdatasync_mean_ms']:.3f} ms")
PY
echo "results: $OUT" >&2
