#!/usr/bin/env bash
# Time travel and SQL over a generated history, side by side with DuckDB on
# the same events exported to Parquet (issue 4's benchmark).
#   bench/history.sh [events=1000000] [samples=200]
# Starts a fresh single-member clawd (release build, data on this machine's
# disk), grows the history through the API with `clawctl bench history`,
# exports it to Parquet, runs the same full-scan aggregate and an as-of
# query in DuckDB (pip package, installed if missing), and prints one JSON
# object with both sides and clawd's resident memory.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clawbernetes/target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin clawd --bin clawctl >&2
  BIN="$CARGO_TARGET_DIR/release"
fi
EVENTS="${1:-1000000}"
SAMPLES="${2:-200}"
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q duckdb >&2
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
PORT=17900
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

CLAW_LOG_LEVEL=warn "$BIN/clawd" --id 1 --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/clawd.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do "$BIN/clawctl" --server "127.0.0.1:$PORT" status >/dev/null 2>&1 && break; sleep 0.2; done
CTL=("$BIN/clawctl" --server "127.0.0.1:$PORT")

# clawd's resident memory every second, and each phase's start, so a peak
# can be matched to what ran then (rss.tsv: seconds since start, KiB).
t_start=$(date +%s)
(while kill -0 "$pid" 2>/dev/null; do
  echo "$(( $(date +%s) - t_start )) $(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
  sleep 1
done) >"$WORK/rss.tsv" &
stamp() { while IFS= read -r line; do echo "$(( $(date +%s) - t_start )) $line"; done; }
"${CTL[@]}" -o json bench history --events "$EVENTS" --samples "$SAMPLES" >"$WORK/ours.json" 2> >(stamp >"$WORK/phases.log")
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
data_kb=$(du -sk "$WORK/data" | cut -f1)
t0=$(date +%s.%N)
echo "$(( $(date +%s) - t_start )) export" >>"$WORK/phases.log"
"${CTL[@]}" export events --format parquet --file "$WORK/events.parquet" >&2
export_s=$(echo "$(date +%s.%N) - $t0" | bc)
last=$(python3 -c "import json;print(json.load(open('$WORK/ours.json'))['events'])")
asof=$((last / 2))
"${CTL[@]}" -o json sql "SELECT status, count(*) AS n FROM workloads_at($asof) GROUP BY status ORDER BY status" >"$WORK/ours_asof.json"
echo "$(( $(date +%s) - t_start )) done" >>"$WORK/phases.log"
# The peak over the whole run: generation, queries and the export.
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")

python3 - "$WORK" "$asof" "$rss_kb" "$hwm_kb" "$export_s" "$data_kb" <<'PY'
import json, sys, time
import duckdb
work, asof, rss_kb, hwm_kb, export_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
data_kb = int(sys.argv[6])
ours = json.load(open(f"{work}/ours.json"))
con = duckdb.connect()
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{work}/events.parquet')")
def timed(sql, runs=3):
    best, rows = None, None
    for _ in range(runs):
        t = time.perf_counter(); rows = con.execute(sql).fetchall(); dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best, rows
n = con.execute("SELECT count(*) FROM events").fetchone()[0]
full_s, _ = timed(ours["full_scan_query"])
# The workloads' states as of a seq, folded in SQL from the lifecycle events.
asof_sql = f"""
WITH life AS (
  SELECT workload, kind, payload,
         row_number() OVER (PARTITION BY workload ORDER BY seq DESC) AS r
  FROM events
  WHERE seq <= {asof} AND workload IS NOT NULL
    AND kind IN ('WorkloadSubmitted','WorkloadPlaced','WorkloadStarted','WorkloadExited',
                 'WorkloadCancelRequested','WorkloadLost')
)
SELECT CASE kind
  WHEN 'WorkloadSubmitted' THEN 'Pending' WHEN 'WorkloadPlaced' THEN 'Placed'
  WHEN 'WorkloadStarted' THEN 'Running' WHEN 'WorkloadCancelRequested' THEN 'Cancelled'
  WHEN 'WorkloadExited' THEN CASE WHEN json_extract(payload, '$.exit_code')::INT = 0 THEN 'Succeeded' ELSE 'Failed' END
  ELSE CASE WHEN json_extract(payload, '$.requeued')::BOOLEAN THEN 'Pending' ELSE 'Lost' END END AS status,
  count(*) AS n
FROM life WHERE r = 1 GROUP BY status ORDER BY status"""
asof_s, duck_asof = timed(asof_sql)
ours_asof = json.load(open(f"{work}/ours_asof.json"))
# The peak resident memory in each phase (phases.log: second, what began).
rss = [tuple(map(int, l.split())) for l in open(f"{work}/rss.tsv") if len(l.split()) == 2]
phases = []
for l in open(f"{work}/phases.log"):
    t, _, what = l.strip().partition(" ")
    name = "generate" if what.startswith("generat") else what.split(",")[0]
    if not phases or phases[-1][1] != name:
        phases.append((int(t), name))
peaks = {}
for i, (t0, name) in enumerate(phases):
    t1 = phases[i + 1][0] if i + 1 < len(phases) else 1 << 62
    inside = [kb for (t, kb) in rss if t0 <= t < t1]
    if inside:
        peaks[name] = round(max(inside) / 1024)
print(json.dumps({
    "ours": ours,
    "clawd_rss_mib": round(rss_kb / 1024), "clawd_peak_rss_mib": round(hwm_kb / 1024),
    "clawd_peak_rss_mib_by_phase": peaks,
    "export_parquet_s": round(export_s, 2),
    "data_dir_gib": round(data_kb / 1024 / 1024, 2),
    "duckdb": {
        "version": duckdb.__version__, "rows": n,
        "full_scan_ms": round(full_s * 1000, 1), "full_scan_rows_per_s": round(n / full_s),
        "as_of_ms": round(asof_s * 1000, 1), "as_of_rows": duck_asof,
    },
    "ours_as_of_rows": ours_asof,
}, indent=2))
PY
