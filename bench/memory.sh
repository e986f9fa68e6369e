#!/usr/bin/env bash
# Where clawd's resident memory goes while a history grows, and after a
# restart on it:
#   BIN=<release dir> bench/memory.sh [events=1500000]
# Starts a fresh single-member clawd (extra environment for it in
# CLAWD_ENV, e.g. "CLAW_HISTORY_WORKLOAD_BASES=false"), samples its VmRSS
# and RocksDB's memory from /metrics (memtables, table readers, block
# cache) every 10 s while `clawctl bench history` generates the events,
# then restarts it on the same data and samples again, before and after
# 10 whole-view GetState reads. Prints one line per sample (MiB).
set -u
BIN=${BIN:-$HOME/.cache/clawbernetes/target/release}
W=$(mktemp -d)
PORT=17950
# shellcheck disable=SC2086 # CLAWD_ENV is a list of VAR=value words
env ${CLAWD_ENV:-} CLAW_LOG_LEVEL=warn "$BIN/clawd" --id 1 --listen 127.0.0.1:$PORT --data-dir "$W/data" >"$W/clawd.log" 2>&1 &
pid=$!
sleep 2
sample() {
  local m
  m=$(curl -s "http://127.0.0.1:$PORT/metrics")
  g() { echo "$m" | awk -v n="$1" '$1 == n { printf "%d", $2 / 1048576 }'; }
  echo "$1 rss_mib=$(($(awk '/VmRSS/ {print $2}' "/proc/$pid/status") / 1024)) memtables_mib=$(g claw_rocksdb_memtable_bytes)" \
    "table_readers_mib=$(g claw_rocksdb_table_reader_bytes) block_cache_mib=$(g claw_rocksdb_block_cache_bytes)" \
    "seq=$(echo "$m" | awk '$1 == "claw_events_last_seq" { print $2 }')"
}
(t=0; while kill -0 "$pid" 2>/dev/null; do sample "t=${t}s"; sleep 10; t=$((t + 10)); done) &
mon=$!
"$BIN/clawctl" --server 127.0.0.1:$PORT -o json bench history --events "${1:-1500000}" --samples 10 >"$W/ours.json" 2>"$W/gen.log"
kill $mon
sample "after-generation"
kill "$pid"; wait "$pid" 2>/dev/null
# shellcheck disable=SC2086
env ${CLAWD_ENV:-} CLAW_LOG_LEVEL=warn "$BIN/clawd" --id 1 --listen 127.0.0.1:$PORT --data-dir "$W/data" >"$W/clawd2.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do "$BIN/clawctl" --server 127.0.0.1:$PORT status >/dev/null 2>&1 && break; sleep 0.3; done
sample "restarted"
"$BIN/clawctl" --server 127.0.0.1:$PORT -o json bench history --events 0 --samples 10 >/dev/null 2>&1
sample "restarted+10-getstates"
kill "$pid"; wait "$pid" 2>/dev/null
rm -rf "$W"
