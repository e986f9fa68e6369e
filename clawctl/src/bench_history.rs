//! `clawctl bench history`: grows a realistic history through the real API
//! (simulated nodes registering, heartbeating and reporting GPU metrics,
//! workloads submitted and placed, intents), then measures time travel and
//! SQL over it: past states at random seqs, a filtered `events` query (one
//! node, a tenth of the history's time span) with rows read against rows
//! returned, a full-scan aggregate, and an as-of seance query.

use anyhow::{bail, Result};
use arrow::array::{Array, StringArray};
use clap::Args;
use claw_proto::v1::{self, submit_request::Command};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::bench_schedule::{sim_node, submit_all};
use crate::client::{Client, Target};
use crate::output::{self, emit, key_values, Format};
use crate::replay::Moment;

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Events to append before measuring (0: measure the history as it is).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Simulated nodes that report metrics.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Concurrent submitters while generating.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Past states to read at random seqs.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryReport {
    pub events: u64,
    pub generated: u64,
    pub generate_s: f64,
    pub generate_errors: u64,
    pub state_at_samples: usize,
    pub state_at_p50_ms: f64,
    pub state_at_p99_ms: f64,
    pub state_at_max_ms: f64,
    pub state_summaries_p50_ms: f64,
    pub state_summaries_p99_ms: f64,
    /// The server's share of GetState: building the whole past state
    /// (checkpoint load and replay), and encoding it as JSON.
    pub state_build_p50_ms: f64,
    pub state_build_p99_ms: f64,
    pub state_encode_p50_ms: f64,
    pub state_encode_p99_ms: f64,
    /// The same for the state without per-node verdicts.
    pub state_summaries_build_p50_ms: f64,
    pub state_summaries_build_p99_ms: f64,
    pub state_at_sql_p50_ms: f64,
    pub state_at_sql_p99_ms: f64,
    pub nodes_at_p50_ms: f64,
    pub nodes_at_p99_ms: f64,
    pub workloads_at_p50_ms: f64,
    pub workloads_at_p99_ms: f64,
    pub workloads_at_rows_p50_ms: f64,
    pub workloads_at_rows_p99_ms: f64,
    pub filtered_query: String,
    pub filtered_ms: f64,
    pub filtered_rows_returned: u64,
    pub filtered_rows_read: u64,
    pub full_scan_query: String,
    pub full_scan_ms: f64,
    pub full_scan_rows_per_s: f64,
    pub as_of_query: String,
    pub as_of_ms: f64,
}

impl HistoryReport {
    pub fn render_table(&self) -> String {
        key_values(&[
            ("events in history", self.events.to_string()),
            ("generated", format!("{} in {:.1}s ({} errors)", self.generated, self.generate_s, self.generate_errors)),
            (
                "state_at",
                format!(
                    "{} samples: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (GetState, whole view as JSON)",
                    self.state_at_samples, self.state_at_p50_ms, self.state_at_p99_ms, self.state_at_max_ms
                ),
            ),
            (
                "",
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms (GetState without per-node verdicts: what `replay --at` prints)",
                    self.state_summaries_p50_ms, self.state_summaries_p99_ms
                ),
            ),
            (
                "state_at (server)",
                format!(
                    "build p50 {:.2} ms, p99 {:.2} ms; JSON p50 {:.2} ms, p99 {:.2} ms (whole view: checkpoint load and replay, then encoding)",
                    self.state_build_p50_ms, self.state_build_p99_ms, self.state_encode_p50_ms, self.state_encode_p99_ms
                ),
            ),
            (
                "",
                format!(
                    "build p50 {:.2} ms, p99 {:.2} ms (without per-node verdicts)",
                    self.state_summaries_build_p50_ms, self.state_summaries_build_p99_ms
                ),
            ),
            (
                "state_at (SQL)",
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms (SELECT count(*) FROM members_at(seq))",
                    self.state_at_sql_p50_ms, self.state_at_sql_p99_ms
                ),
            ),
            (
                "",
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms (SELECT count(*) FROM nodes_at(seq))",
                    self.nodes_at_p50_ms, self.nodes_at_p99_ms
                ),
            ),
            (
                "",
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms (SELECT count(*) FROM workloads_at(seq))",
                    self.workloads_at_p50_ms, self.workloads_at_p99_ms
                ),
            ),
            (
                "",
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms (SELECT * FROM workloads_at(seq), every row to this client)",
                    self.workloads_at_rows_p50_ms, self.workloads_at_rows_p99_ms
                ),
            ),
            ("filtered query", self.filtered_query.clone()),
            (
                "  result",
                format!(
                    "{:.1} ms, {} rows returned, {} rows read from RocksDB",
                    self.filtered_ms, self.filtered_rows_returned, self.filtered_rows_read
                ),
            ),
            ("full scan", self.full_scan_query.clone()),
            ("  result", format!("{:.1} ms, {:.0} rows/s", self.full_scan_ms, self.full_scan_rows_per_s)),
            ("as-of query", self.as_of_query.clone()),
            ("  result", format!("{:.1} ms", self.as_of_ms)),
        ])
    }
}

/// The command mix of the generated history: mostly GPU metrics and
/// heartbeats, as on a real fleet, with a trickle of workloads and intents.
pub fn command_for(i: u64, nodes: usize) -> Command {
    let n = i as usize % nodes;
    // The names `sim_node("hist", n, 8)` registered.
    let node = format!("sim-node-hist-{n:05}");
    match i % 200 {
        0 => Command::SubmitWorkload(v1::SubmitWorkload {
            spec: Some(v1::WorkloadSpec {
                name: format!("job-{i}"),
                image: "busybox".into(),
                gpus: 0,
                ..Default::default()
            }),
            workload_id: String::new(),
        }),
        1 => Command::StateIntent(v1::StateIntent { text: format!("keep the fleet busy ({i})") }),
        n if n % 5 == 0 => Command::Heartbeat(v1::Heartbeat { node }),
        _ => Command::ObserveGpuMetrics(v1::ObserveGpuMetrics {
            node,
            samples: (0..8u64)
                .map(|g| v1::GpuSample {
                    gpu_uuid: format!("SIM-hist-{n:05}-{g}"),
                    utilization_pct: ((i * 7 + g * 13) % 100) as f64,
                    memory_used_mb: (i * 31 + g) % 80_000,
                    temperature_c: 40.0 + ((i + g) % 45) as f64,
                    power_w: 100.0 + ((i * 3 + g) % 600) as f64,
                    sm_clock_mhz: 1_980,
                    ..Default::default()
                })
                .collect(),
        }),
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub async fn run(target: &Target, format: Format, args: HistoryArgs) -> Result<()> {
    if args.nodes == 0 || args.clients == 0 {
        bail!("--nodes and --clients must be at least 1");
    }
    let client = target.connect().await?;
    // The position only: GetState would ship the whole view each time
    // (tens of MiB on a long history).
    let seq_now = async || -> Result<u64> { Ok(client.cluster_status().await?.last_seq) };
    let start_seq = seq_now().await?;

    // Generate: register the nodes, then the mix, `clients` in flight.
    let started = Instant::now();
    let mut errors = 0u64;
    if args.events > 0 {
        eprintln!("generating {} events", args.events);
        let registrations: Vec<Command> =
            (0..args.nodes).map(|i| Command::RegisterNode(sim_node("hist", i, 8))).collect();
        let (e, first) = submit_all(&client, args.clients, registrations).await;
        errors += e;
        let target_seq = start_seq + args.events;
        let mut next = 0u64;
        while seq_now().await? < target_seq {
            let have = seq_now().await?;
            // Placements add events of their own, so go in rounds.
            let round = (target_seq - have).min(200_000);
            let commands: Vec<Command> = (next..next + round).map(|i| command_for(i, args.nodes)).collect();
            next += round;
            let (e, _) = submit_all(&client, args.clients, commands).await;
            errors += e;
            eprintln!("generated up to seq {}", seq_now().await?);
        }
        if let Some(first) = first {
            eprintln!("first error: {first}");
        }
    }
    let generate_s = started.elapsed().as_secs_f64();
    let present = client.state_head(None).await?;
    let last = present.seq;
    if last == 0 {
        bail!("the history is empty: run with --events N first");
    }

    // Past states at pseudo-random seqs (deterministic, so runs compare).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let seqs: Vec<u64> = (0..args.samples)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % last
        })
        .collect();
    eprintln!("measuring GetState at {} past seqs", seqs.len());
    let (mut lat, mut build, mut encode) = (histogram(), histogram(), histogram());
    for &seq in &seqs {
        let t = Instant::now();
        let state = client.get_state(Some(Moment::Seq(seq))).await?;
        lat.record(t.elapsed().as_micros().max(1) as u64)?;
        build.record(state.build_us.max(1))?;
        encode.record(state.encode_us.max(1))?;
    }
    let (mut summaries, mut summaries_build) = (histogram(), histogram());
    for &seq in &seqs {
        let t = Instant::now();
        let state = client.get_state_summaries(Some(Moment::Seq(seq))).await?;
        summaries.record(t.elapsed().as_micros().max(1) as u64)?;
        summaries_build.record(state.build_us.max(1))?;
    }

    // The same seqs through SQL on seance tables: the cost of rebuilding
    // one table's state (checkpoint + replay) without shipping the whole
    // view as JSON, as GetState does.
    let sample = async |query: &dyn Fn(u64) -> String| -> Result<Histogram<u64>> {
        let mut h = histogram();
        for &seq in &seqs {
            let t = Instant::now();
            client.query(&query(seq)).await?;
            h.record(t.elapsed().as_micros().max(1) as u64)?;
        }
        Ok(h)
    };
    let seance = async |table: &str| sample(&|seq| format!("SELECT count(*) FROM {table}_at({seq})")).await;
    eprintln!("measuring members_at, nodes_at, workloads_at");
    let core = seance("members").await?;
    let nodes_at = seance("nodes").await?;
    let workloads_at = seance("workloads").await?;
    // Every row and column, shipped to this client as Arrow: what a user
    // reading the whole table as it was waits for.
    let workloads_rows = sample(&|seq| format!("SELECT * FROM workloads_at({seq})")).await?;

    eprintln!("measuring the filtered, full-scan and as-of queries");
    // One node, a tenth of the history's time span, in its middle.
    let first_ms = client.state_head(Some(Moment::Seq(1))).await?.time_ms;
    let span = (present.time_ms - first_ms).max(10);
    let (lo, hi) = (first_ms + span * 45 / 100, first_ms + span * 55 / 100);
    let ts = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_default();
    let filtered = format!(
        "SELECT seq, kind FROM events WHERE node = 'sim-node-hist-00007' AND time >= TIMESTAMP '{}' AND time < TIMESTAMP '{}'",
        ts(lo),
        ts(hi)
    );
    let t = Instant::now();
    let (_, batches) = client.query(&filtered).await?;
    let filtered_ms = t.elapsed().as_secs_f64() * 1000.0;
    let filtered_rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let filtered_read = rows_read(&client, &filtered).await?;

    let full = "SELECT kind, count(*) AS n, min(seq), max(seq) FROM events GROUP BY kind".to_string();
    let t = Instant::now();
    client.query(&full).await?;
    let full_s = t.elapsed().as_secs_f64();

    let as_of = format!("SELECT status, count(*) FROM workloads_at({}) GROUP BY status", last / 2);
    let t = Instant::now();
    client.query(&as_of).await?;
    let as_of_ms = t.elapsed().as_secs_f64() * 1000.0;

    let ms = |us: u64| us as f64 / 1000.0;
    let report = HistoryReport {
        events: last,
        generated: last - start_seq,
        generate_s,
        generate_errors: errors,
        state_at_samples: args.samples,
        state_at_p50_ms: ms(lat.value_at_quantile(0.5)),
        state_at_p99_ms: ms(lat.value_at_quantile(0.99)),
        state_at_max_ms: ms(lat.max()),
        state_summaries_p50_ms: ms(summaries.value_at_quantile(0.5)),
        state_summaries_p99_ms: ms(summaries.value_at_quantile(0.99)),
        state_build_p50_ms: ms(build.value_at_quantile(0.5)),
        state_build_p99_ms: ms(build.value_at_quantile(0.99)),
        state_encode_p50_ms: ms(encode.value_at_quantile(0.5)),
        state_encode_p99_ms: ms(encode.value_at_quantile(0.99)),
        state_summaries_build_p50_ms: ms(summaries_build.value_at_quantile(0.5)),
        state_summaries_build_p99_ms: ms(summaries_build.value_at_quantile(0.99)),
        state_at_sql_p50_ms: ms(core.value_at_quantile(0.5)),
        state_at_sql_p99_ms: ms(core.value_at_quantile(0.99)),
        nodes_at_p50_ms: ms(nodes_at.value_at_quantile(0.5)),
        nodes_at_p99_ms: ms(nodes_at.value_at_quantile(0.99)),
        workloads_at_p50_ms: ms(workloads_at.value_at_quantile(0.5)),
        workloads_at_p99_ms: ms(workloads_at.value_at_quantile(0.99)),
        workloads_at_rows_p50_ms: ms(workloads_rows.value_at_quantile(0.5)),
        workloads_at_rows_p99_ms: ms(workloads_rows.value_at_quantile(0.99)),
        filtered_query: filtered,
        filtered_ms,
        filtered_rows_returned: filtered_rows,
        filtered_rows_read: filtered_read,
        full_scan_query: full,
        full_scan_ms: full_s * 1000.0,
        full_scan_rows_per_s: last as f64 / full_s.max(1e-9),
        as_of_query: as_of,
        as_of_ms,
    };
    match format {
        Format::Table => emit(&report.render_table()),
        other => emit(&output::render_value(other, &report)?),
    }
}

/// The `rows_read` the log scan reported under EXPLAIN ANALYZE.
async fn rows_read(client: &Client, sql: &str) -> Result<u64> {
    let (_, batches) = client.query(&format!("EXPLAIN ANALYZE {sql}")).await?;
    for b in &batches {
        for col in b.columns() {
            let Some(text) = col.as_any().downcast_ref::<StringArray>() else { continue };
            for i in 0..text.len() {
                if let Some(n) = parse_rows_read(text.value(i)) {
                    return Ok(n);
                }
            }
        }
    }
    bail!("EXPLAIN ANALYZE did not report rows_read for the events scan")
}

/// DataFusion prints counts rounded with a unit (`rows_read=100.9 K`), so
/// the figure is approximate above a thousand.
fn parse_rows_read(plan: &str) -> Option<u64> {
    let at = plan.find("rows_read=")? + "rows_read=".len();
    let rest = &plan[at..];
    let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let value: f64 = number.parse().ok()?;
    let unit = rest[number.len()..].trim_start().chars().next();
    let scale = match unit {
        Some('K') => 1e3,
        Some('M') => 1e6,
        Some('B') => 1e9,
        Some('T') => 1e12,
        _ => 1.0,
    };
    Some((value * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_mostly_metrics_with_some_workloads() {
        let kinds: Vec<&str> = (0..1000)
            .map(|i| match command_for(i, 10) {
                Command::ObserveGpuMetrics(_) => "metrics",
                Command::Heartbeat(_) => "heartbeat",
                Command::SubmitWorkload(_) => "workload",
                Command::StateIntent(_) => "intent",
                _ => "other",
            })
            .collect();
        let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
        assert_eq!((count("workload"), count("intent"), count("other")), (5, 5, 0));
        assert!(count("metrics") > 700 && count("heartbeat") > 150, "{kinds:?}");
    }

    #[test]
    fn the_mix_reports_for_the_nodes_it_registered() {
        let registered = sim_node("hist", 7, 8);
        match command_for(7 + 10 * 2, 10) {
            Command::ObserveGpuMetrics(m) => {
                assert_eq!(m.node, registered.node);
                let uuids: Vec<&str> = registered.gpus.iter().map(|g| g.uuid.as_str()).collect();
                assert!(m.samples.iter().all(|s| uuids.contains(&s.gpu_uuid.as_str())), "{:?}", m.samples);
            }
            other => panic!("expected metrics, got {other:?}"),
        }
    }

    #[test]
    fn rows_read_comes_from_the_scan_metrics() {
        let plan = "LogScanExec: table=events, metrics=[output_rows=12, rows_read=340, elapsed_compute=1ms]";
        assert_eq!(parse_rows_read(plan), Some(340));
        let plan = "LogScanExec: metrics=[output_rows=1.00 K, output_batches=7, rows_read=100.9 K]";
        assert_eq!(parse_rows_read(plan), Some(100_900));
        assert_eq!(parse_rows_read("x rows_read=2.5 M, y"), Some(2_500_000));
        assert_eq!(parse_rows_read("ProjectionExec: metrics=[output_rows=1]"), None);
    }
}
