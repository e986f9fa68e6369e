//! Stories against a real single-member log in a temporary directory.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::CommandGetTables;
use claw_commands::{
    verify_chain, Actor, Command, CommandEnvelope, EventRecord, GpuInfo, GpuSample, NodeCapabilities, ProposalAction,
    WorkloadSpec, GENESIS_HASH,
};
use claw_log::{EventFilter, LogNode, LogOptions};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::UInt64Type;
use futures::TryStreamExt;
use tempfile::TempDir;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

use crate::view_kind::ViewKind;
use crate::{Analytics, Error, ExportFormat};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

struct Fixture {
    node: LogNode,
    analytics: Analytics,
    dir: TempDir,
}

impl Fixture {
    /// A single member whose history holds two nodes, GPU samples,
    /// workloads, a proposal and padding intents; one event per second.
    async fn start() -> anyhow::Result<Fixture> {
        let dir = tempfile::tempdir()?;
        // Row checkpoints every few events, so past views are read from
        // stored rows plus a replay, as on a long history.
        let options = LogOptions { data_dir: dir.path().join("data"), checkpoint_every: 4, ..LogOptions::default() };
        let node = LogNode::open(options).await?;
        node.initialize_single().await?;
        eventually("the member to lead", || {
            let raft = node.raft.clone();
            async move { raft.current_leader().await == Some(1) }
        })
        .await?;
        let analytics = Analytics::new(node.store.clone());
        let f = Fixture { node, analytics, dir };
        let mut n = 0;
        let gpu = |i: u32, node: &str| GpuInfo {
            index: i,
            uuid: format!("GPU-{node}-{i}"),
            model: "H100".into(),
            memory_mb: 81_920,
        };
        for (name, gpus) in [("gpu-a", 2), ("gpu-b", 1)] {
            let capabilities = NodeCapabilities {
                cpus: 32,
                memory_mb: 256_000,
                gpus: (0..gpus).map(|i| gpu(i, name)).collect(),
                labels: BTreeMap::from([("zone".into(), "z1".into())]),
                ..Default::default()
            };
            f.propose(&mut n, Command::RegisterNode { node: name.into(), capabilities }).await?;
        }
        for w in ["w-1", "w-2"] {
            let spec =
                WorkloadSpec { name: format!("train-{w}"), image: "pytorch".into(), gpus: 1, ..Default::default() };
            f.propose(&mut n, Command::SubmitWorkload { workload_id: w.into(), spec }).await?;
        }
        for round in 0..5 {
            for (name, gpus) in [("gpu-a", 2), ("gpu-b", 1)] {
                let samples = (0..gpus)
                    .map(|i| GpuSample {
                        gpu_uuid: format!("GPU-{name}-{i}"),
                        utilization_pct: 10.0 * round as f64,
                        memory_used_mb: 1000,
                        temperature_c: 60.0,
                        power_w: 300.0,
                        ..Default::default()
                    })
                    .collect();
                f.propose(&mut n, Command::ObserveGpuMetrics { node: name.into(), samples }).await?;
            }
        }
        f.propose(&mut n, Command::CancelWorkload { workload: "w-2".into(), reason: "not needed".into() }).await?;
        let drain = ProposalAction::DrainNode { node: "gpu-b".into() };
        let proposal =
            Command::CreateProposal { proposal_id: "p-1".into(), action: drain, basis_seq: 1, reason: "hot".into() };
        f.propose(&mut n, proposal).await?;
        f.propose(&mut n, Command::RecordMemberAdded { member_id: 1, addr: "127.0.0.1:7400".into(), voter: true })
            .await?;
        for i in 0..30 {
            f.propose(&mut n, Command::StateIntent { text: format!("padding {i}") }).await?;
        }
        // gpu-b goes silent: NotReady, and a node_lost incident.
        let lost = Command::MarkNodeNotReady { node: "gpu-b".into(), reason: "no heartbeat".into(), requeue: true };
        f.propose(&mut n, lost).await?;
        f.propose(&mut n, Command::Heartbeat { node: "gpu-a".into() }).await?;
        Ok(f)
    }

    async fn propose(&self, n: &mut i64, command: Command) -> anyhow::Result<()> {
        *n += 1;
        let env = CommandEnvelope {
            command_id: format!("cmd-{n}"),
            actor: Actor::user("ada"),
            time_ms: T0 + *n * 1000,
            correlation_id: format!("cmd-{n}"),
            command,
        };
        let (resp, _) = self.node.propose(env).await.with_context(|| format!("propose command {n}"))?;
        anyhow::ensure!(!resp.events.is_empty(), "command {n} produced no event");
        Ok(())
    }

    fn records(&self, filter: &EventFilter) -> anyhow::Result<Vec<EventRecord>> {
        Ok(self.node.store.events(1, None, 0, filter)?)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.node.shutdown().await?;
        Ok(())
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Duration::from_secs(10);
    let start = Instant::now();
    while start.elapsed() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("timed out after {deadline:?} waiting for {what}")
}

/// The `seq` column of a query's answer.
async fn seqs(a: &Analytics, sql: &str) -> anyhow::Result<Vec<u64>> {
    let (_, batches) = a.query(sql).await.with_context(|| sql.to_string())?;
    let mut out = Vec::new();
    for b in &batches {
        let col = b.column_by_name("seq").context("no seq column")?;
        out.extend(col.as_primitive::<UInt64Type>().values().iter().copied());
    }
    Ok(out)
}

async fn one_batch(a: &Analytics, sql: &str) -> anyhow::Result<RecordBatch> {
    let (schema, batches) = a.query(sql).await.with_context(|| sql.to_string())?;
    Ok(concat_batches(&schema, &batches)?)
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("valid time").to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_events_read_only_the_matching_range() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let a = &f.analytics;
    let last = f.node.store.last_seq();
    assert!(last > 40, "history has {last} events");

    assert_eq!(seqs(a, "SELECT seq FROM events WHERE seq BETWEEN 5 AND 9").await?, vec![5, 6, 7, 8, 9]);
    let s = a.last_scan_stats().context("a scan ran")?;
    assert_eq!((s.table, s.rows_read, s.rows_returned), ("events", 5, 5), "{s:?}");

    assert_eq!(seqs(a, "SELECT seq FROM events WHERE seq > 3 AND seq < 6").await?, vec![4, 5]);
    assert_eq!(seqs(a, "SELECT seq FROM events WHERE 3 >= seq").await?, vec![1, 2, 3]);
    assert_eq!(seqs(a, "SELECT seq FROM events WHERE seq = 7").await?, vec![7]);

    // Time bounds become seq bounds: only the events inside are read.
    let all = f.records(&EventFilter::default())?;
    let (t1, t2) = (all[9].time_ms, all[19].time_ms);
    let want: Vec<u64> = all.iter().filter(|r| r.time_ms >= t1 && r.time_ms < t2).map(|r| r.seq).collect();
    let sql = format!("SELECT seq FROM events WHERE time >= '{}' AND time < '{}'", iso(t1), iso(t2));
    assert_eq!(seqs(a, &sql).await?, want);
    let s = a.last_scan_stats().context("a scan ran")?;
    assert_eq!(s.rows_read, want.len() as u64, "{s:?}");
    assert!(s.rows_read < last);
    let sql = format!("SELECT seq FROM events WHERE time BETWEEN TIMESTAMP '{}' AND TIMESTAMP '{}'", iso(t1), iso(t2));
    let want: Vec<u64> = all.iter().filter(|r| r.time_ms >= t1 && r.time_ms <= t2).map(|r| r.seq).collect();
    assert_eq!(seqs(a, &sql).await?, want);

    // kind, node and workload go into the log's own filter.
    let by_kind = f.records(&EventFilter { kinds: vec!["GpuMetricsObserved".into()], ..Default::default() })?;
    let got = seqs(a, "SELECT seq FROM events WHERE kind = 'GpuMetricsObserved'").await?;
    assert_eq!(got, by_kind.iter().map(|r| r.seq).collect::<Vec<_>>());
    let by_kinds =
        f.records(&EventFilter { kinds: vec!["NodeRegistered".into(), "NodeHeartbeat".into()], ..Default::default() })?;
    let got = seqs(a, "SELECT seq FROM events WHERE kind IN ('NodeRegistered', 'NodeHeartbeat')").await?;
    assert_eq!(got, by_kinds.iter().map(|r| r.seq).collect::<Vec<_>>());
    let got = seqs(a, "SELECT seq FROM events WHERE kind = 'NodeRegistered' OR kind = 'NodeHeartbeat'").await?;
    assert_eq!(got, by_kinds.iter().map(|r| r.seq).collect::<Vec<_>>());
    let by_node = f.records(&EventFilter { node: Some("gpu-b".into()), ..Default::default() })?;
    assert_eq!(
        seqs(a, "SELECT seq FROM events WHERE node = 'gpu-b'").await?,
        by_node.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
    let by_w = f.records(&EventFilter { workload: Some("w-2".into()), ..Default::default() })?;
    assert_eq!(
        seqs(a, "SELECT seq FROM events WHERE workload = 'w-2'").await?,
        by_w.iter().map(|r| r.seq).collect::<Vec<_>>()
    );
    assert!(seqs(a, "SELECT seq FROM events WHERE node = 'gpu-a' AND node = 'gpu-b'").await?.is_empty());

    // The limit reaches the scan, which stops early.
    assert_eq!(seqs(a, "SELECT seq FROM events WHERE kind = 'IntentStated' LIMIT 3").await?.len(), 3);
    let s = a.last_scan_stats().context("a scan ran")?;
    assert_eq!(s.rows_returned, 3);
    assert!(s.rows_read < last, "{s:?}");

    // A filter the scan does not understand is applied by DataFusion.
    let got = seqs(a, "SELECT seq FROM events WHERE actor = 'ada' AND seq <= 4 AND payload LIKE '%gpu-a%'").await?;
    assert_eq!(got, vec![1]);
    let b = one_batch(a, "SELECT count(*) AS n FROM events").await?;
    assert_eq!(b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0) as u64, last);

    // EXPLAIN shows what was pushed down.
    let plan =
        one_batch(a, "EXPLAIN SELECT seq FROM events WHERE seq BETWEEN 5 AND 9 AND kind = 'IntentStated'").await?;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&[plan])?.to_string();
    assert!(text.contains("LogScanExec: table=events, seq=5..=9, kinds=[IntentStated]"), "{text}");
    assert!(!text.contains("FilterExec"), "every filter was exact: {text}");
    let plan = one_batch(a, "EXPLAIN ANALYZE SELECT seq FROM events WHERE kind = 'NodeRegistered'").await?;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&[plan])?.to_string();
    assert!(text.contains("output_rows=2") && text.contains(&format!("rows_read={last}")), "{text}");

    // The payload is the event as JSON, whatever its variant.
    let b = one_batch(a, "SELECT payload FROM events WHERE seq = 1").await?;
    let json: serde_json::Value = serde_json::from_str(b.column(0).as_string::<i32>().value(0))?;
    assert_eq!(json["kind"], "NodeRegistered");
    f.stop().await
}

/// A scan that needs no event fields decodes only the events' heads; its
/// rows are the ones a scan of whole records gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_columns_read_without_the_payload_match_whole_records() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let a = &f.analytics;
    let head = "seq, time, kind, actor, actor_kind, command_id, correlation_id, raft_index, hash";
    let sql = |cols: &str| format!("SELECT {cols} FROM events WHERE kind <> 'IntentStated' ORDER BY seq");
    let plan = |sql: String| async move {
        let batch = one_batch(a, &format!("EXPLAIN {sql}")).await?;
        let text: Vec<String> = batch
            .columns()
            .iter()
            .flat_map(|c| c.as_string::<i32>().iter().flatten().map(str::to_string).collect::<Vec<_>>())
            .collect();
        Ok::<_, anyhow::Error>(text.join("\n"))
    };
    assert!(plan(sql(head)).await?.contains("read=heads"), "{}", plan(sql(head)).await?);
    let with_payload = format!("{head}, payload");
    assert!(!plan(sql(&with_payload)).await?.contains("read=heads"));
    assert!(!plan("SELECT seq FROM events WHERE node = 'gpu-a'".into()).await?.contains("read=heads"));
    let heads_only = one_batch(a, &sql(head)).await?;
    let whole = one_batch(a, &sql(&with_payload)).await?;
    let whole = whole.project(&(0..heads_only.num_columns()).collect::<Vec<_>>())?;
    assert_eq!(heads_only, whole);
    let records: Vec<EventRecord> =
        f.records(&EventFilter::default())?.into_iter().filter(|r| r.event.kind() != "IntentStated").collect();
    assert_eq!(heads_only.num_rows(), records.len());
    let kinds = heads_only.column_by_name("kind").context("kind")?.as_string::<i32>();
    let hashes = heads_only.column_by_name("hash").context("hash")?.as_string::<i32>();
    for (i, r) in records.iter().enumerate() {
        assert_eq!((kinds.value(i), hashes.value(i)), (r.event.kind(), r.hash.as_str()), "row {i}");
    }
    // Kinds pushed into a heads-only scan still filter it.
    let by_kind = one_batch(a, "SELECT seq, kind FROM events WHERE kind = 'GpuMetricsObserved' ORDER BY seq").await?;
    let want = records.iter().filter(|r| r.event.kind() == "GpuMetricsObserved").count();
    assert_eq!(by_kind.num_rows(), want);
    f.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_has_a_row_per_gpu_sample() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let a = &f.analytics;
    let b = one_batch(a, "SELECT count(*) FROM metrics").await?;
    assert_eq!(b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0), 15);
    let b = one_batch(a, "SELECT gpu_uuid, max(utilization_pct) AS u FROM metrics WHERE node = 'gpu-a' GROUP BY gpu_uuid ORDER BY gpu_uuid").await?;
    assert_eq!(b.num_rows(), 2);
    assert_eq!(b.column(0).as_string::<i32>().value(0), "GPU-gpu-a-0");
    assert_eq!(b.column(1).as_primitive::<datafusion::arrow::datatypes::Float64Type>().value(0), 40.0);
    let s = a.last_scan_stats().context("a scan ran")?;
    assert_eq!((s.table, s.rows_returned), ("metrics", 10));
    let b = one_batch(a, "SELECT seq FROM metrics LIMIT 4").await?;
    assert_eq!(b.num_rows(), 4);
    f.stop().await
}

/// A query reading a few columns gets the same values as the whole table
/// projected, in the order it asked for; `count(*)` builds no column and
/// still counts every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projected_tables_hold_the_same_values_as_whole_ones() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let a = &f.analytics;
    let view = f.node.store.view_at(f.node.store.last_seq())?;
    for kind in ViewKind::ALL {
        let whole = kind.batch(&view)?;
        let n = whole.num_columns();
        for projection in [vec![n - 1, 0], vec![1], (0..n).rev().collect(), vec![]] {
            let got = kind.batch_of(&view, Some(&projection))?;
            assert_eq!(got, whole.project(&projection)?, "{} columns {projection:?}", kind.table());
            assert_eq!(got.num_rows(), whole.num_rows());
        }
        let count = one_batch(a, &format!("SELECT count(*) FROM {}_at({})", kind.table(), view.last_seq)).await?;
        let count = count.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0);
        assert_eq!(count as usize, whole.num_rows(), "count(*) of {}", kind.table());
        assert!(count > 0, "{} has rows", kind.table());
    }
    assert!(ViewKind::Workloads.batch_of(&view, Some(&[99])).is_err(), "a column the table lacks is an error");
    // Past views read for a few columns (rows decoded without the fields
    // no column reads) hold the same values in those columns.
    let store = &f.node.store;
    let kind = ViewKind::Workloads;
    let n = kind.schema().fields().len();
    for seq in (0..=store.last_seq()).step_by(3) {
        let whole = kind.batch(&store.view_at_summaries(seq, kind.tables())?)?;
        for i in 0..n {
            let name = kind.schema().field(i).name().clone();
            let got = one_batch(a, &format!("SELECT \"{name}\" FROM workloads_at({seq})")).await?;
            assert_eq!(got.num_rows(), whole.num_rows(), "rows at seq {seq}");
            if got.num_rows() > 0 {
                assert_eq!(got.column(0), whole.column(i), "column {name} at seq {seq}");
            }
        }
    }
    let b = one_batch(a, "SELECT status, id FROM workloads_at(14) WHERE id = 'w-2'").await?;
    assert_eq!((b.num_columns(), b.column(0).as_string::<i32>().value(0)), (2, "Pending"));
    f.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seance_tables_are_the_view_at_that_point() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let a = &f.analytics;
    let store = &f.node.store;
    let last = store.last_seq();
    for seq in [0, 1, 3, 4, 20, last] {
        let got = one_batch(a, &format!("SELECT * FROM workloads_at({seq})")).await?;
        let want = ViewKind::Workloads.batch(&store.view_at(seq)?)?;
        assert_eq!(got, want, "workloads_at({seq})");
    }
    assert_eq!(one_batch(a, "SELECT * FROM workloads_at(3)").await?.num_rows(), 1);
    let b = one_batch(a, "SELECT status FROM workloads_at(14) WHERE id = 'w-2'").await?;
    assert_eq!(b.column(0).as_string::<i32>().value(0), "Pending");
    let b = one_batch(a, &format!("SELECT status FROM workloads_at({last}) WHERE id = 'w-2'")).await?;
    assert_eq!(b.column(0).as_string::<i32>().value(0), "Cancelled");

    // A time maps to the last event at or before it, as a string or a timestamp.
    let t = store.events(4, Some(4), 1, &EventFilter::default())?[0].time_ms;
    let want = one_batch(a, "SELECT * FROM workloads_at(4)").await?;
    assert_eq!(one_batch(a, &format!("SELECT * FROM workloads_at('{}')", iso(t + 500))).await?, want);
    assert_eq!(one_batch(a, &format!("SELECT * FROM workloads_at(TIMESTAMP '{}')", iso(t))).await?, want);
    assert_eq!(one_batch(a, "SELECT * FROM nodes_at('2000-01-01T00:00:00Z')").await?.num_rows(), 0);

    // Each live table is its seance function at the last seq.
    for kind in ViewKind::ALL {
        let live = one_batch(a, &format!("SELECT * FROM {}", kind.table())).await?;
        let at = one_batch(a, &format!("SELECT * FROM {}_at({last})", kind.table())).await?;
        assert_eq!(live, at, "{} agrees with {}_at({last})", kind.table(), kind.table());
        assert!(live.num_rows() > 0, "{} has rows", kind.table());
    }
    let b = one_batch(a, "SELECT node, uuid, workload FROM gpus ORDER BY node, index").await?;
    assert_eq!(b.num_rows(), 3);
    let b = one_batch(a, "SELECT action_type, target, status FROM proposals").await?;
    assert_eq!(b.column(0).as_string::<i32>().value(0), "drain_node");
    assert_eq!(b.column(1).as_string::<i32>().value(0), "gpu-b");
    f.stop().await
}

/// With columnar bases of the workload table stored at some checkpoints,
/// `workloads_at(x)` answers from the newest base at or before x plus the
/// rows changed since, and holds exactly what the row checkpoints give:
/// every column, any projection, `count(*)`, rows in key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_bases_answer_what_the_row_checkpoints_answer() -> anyhow::Result<()> {
    use crate::seance_base::{workloads_at, write_base};
    let f = Fixture::start().await?;
    let a = &f.analytics;
    let store = &f.node.store;
    let last = store.last_seq();
    let mut want = Vec::new();
    for seq in 0..=last {
        want.push(one_batch(a, &format!("SELECT * FROM workloads_at({seq})")).await?);
    }
    assert!(workloads_at(store, last, None)?.is_none(), "no base yet");
    // w-2 is cancelled at seq 15, between the two bases.
    for base in [4, 20] {
        write_base(store, base)?;
    }
    let n = ViewKind::Workloads.schema().fields().len();
    for seq in 0..=last {
        let whole = &want[seq as usize];
        let got = one_batch(a, &format!("SELECT * FROM workloads_at({seq})")).await?;
        assert_eq!(&got, whole, "workloads_at({seq})");
        let direct = workloads_at(store, seq, None)?;
        assert_eq!(direct.is_some(), seq >= 4, "seq {seq} reads a base from seq 4 on");
        if direct.is_none() {
            continue;
        }
        for projection in [vec![n - 1, 0], vec![3], (0..n).rev().collect(), vec![]] {
            let got = workloads_at(store, seq, Some(&projection))?.expect("a base");
            assert_eq!(got, whole.project(&projection)?, "seq {seq}, columns {projection:?}");
            assert_eq!(got.num_rows(), whole.num_rows());
        }
        let count = one_batch(a, &format!("SELECT count(*) FROM workloads_at({seq})")).await?;
        let count = count.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0);
        assert_eq!(count as usize, whole.num_rows(), "count(*) at seq {seq}");
    }
    let b = one_batch(a, "SELECT status FROM workloads_at(14) WHERE id = 'w-2'").await?;
    assert_eq!(b.column(0).as_string::<i32>().value(0), "Pending");
    let b = one_batch(a, &format!("SELECT status FROM workloads_at({last}) WHERE id = 'w-2'")).await?;
    assert_eq!(b.column(0).as_string::<i32>().value(0), "Cancelled");

    // The writer stores a base at the newest checkpoint once enough rows
    // changed since the last one, and not again until more change.
    let mut bases = crate::WorkloadBases::default();
    assert_eq!(bases.write_if_due(store, |_| 1)?, None, "no workload changed since the base at 20");
    let mut n = 1000;
    f.propose(&mut n, Command::CancelWorkload { workload: "w-1".into(), reason: "done".into() }).await?;
    for i in 0..4 {
        f.propose(&mut n, Command::StateIntent { text: format!("more {i}") }).await?;
    }
    let last = store.last_seq();
    let newest = store.row_checkpoint_at_or_before(last)?.expect("a checkpoint");
    assert_eq!(bases.write_if_due(store, |_| 2)?, None, "one row changed: not due at two");
    assert_eq!(bases.write_if_due(store, |_| 1)?, Some(newest));
    assert_eq!(bases.write_if_due(store, |_| 1)?, None, "nothing new");
    assert_eq!(store.workloads_base_at_or_before(last)?.map(|(seq, _)| seq), Some(newest));
    let got = one_batch(a, &format!("SELECT * FROM workloads_at({last})")).await?;
    assert_eq!(got, ViewKind::Workloads.batch(&store.view_at(last)?)?);
    let b = one_batch(a, &format!("SELECT status FROM workloads_at({last}) WHERE id = 'w-1'")).await?;
    assert_eq!(b.column(0).as_string::<i32>().value(0), "Cancelled");

    // A base an older build wrote (format 1: one IPC file) is passed over:
    // reads go through the row checkpoints, and a writer starting on such
    // a data directory writes one of its own however few rows changed.
    store.put_workloads_base(newest, &[1, 0, 0, 0], &[])?;
    assert!(workloads_at(store, last, None)?.is_none(), "an older format is not read");
    assert_eq!(one_batch(a, &format!("SELECT * FROM workloads_at({last})")).await?, got);
    assert_eq!(crate::WorkloadBases::default().write_if_due(store, |_| usize::MAX)?, Some(newest));
    assert_eq!(workloads_at(store, last, None)?, Some(got));
    f.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_say_what_is_wrong() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let a = &f.analytics;
    let sql_error = |r: crate::Result<_>| match r {
        Err(Error::Sql(msg)) => msg,
        Err(other) => panic!("expected a SQL error, got {other}"),
        Ok(_) => panic!("expected an error"),
    };
    let msg = sql_error(a.query("SELEC seq FROM events").await);
    assert!(msg.contains("SELEC") && msg.contains("Line: 1, Column: 1"), "{msg}");
    let msg = sql_error(a.query("SELECT * FROM nodez").await);
    assert!(msg.contains("nodez"), "{msg}");
    let msg = sql_error(a.query("SELECT nope FROM events").await);
    assert!(msg.contains("nope"), "{msg}");
    let msg = sql_error(a.query("SELECT * FROM nodes_at(100000)").await);
    assert!(msg.contains("after the last event"), "{msg}");
    let msg = sql_error(a.query("SELECT * FROM nodes_at('yesterday-ish')").await);
    assert!(msg.contains("RFC 3339"), "{msg}");
    let out = f.dir.path().join("copy.csv");
    let msg = sql_error(a.query(&format!("COPY events TO '{}'", out.display())).await);
    assert!(msg.to_lowercase().contains("not supported"), "{msg}");
    assert!(!out.exists());
    let msg = sql_error(a.query("CREATE TABLE t AS SELECT 1").await);
    assert!(msg.to_lowercase().contains("not supported"), "{msg}");
    f.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_stream_the_history_to_files() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let last = f.node.store.last_seq();
    let out = f.dir.path().join("events.parquet");
    let rows = f.analytics.export_events(3, None, ExportFormat::Parquet, &out).await?;
    assert_eq!(rows, last - 2);
    let file = std::fs::File::open(&out)?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut seqs = Vec::new();
    for b in reader {
        let b = b?;
        assert_eq!(b.schema().fields().len(), 12);
        seqs.extend(b.column_by_name("seq").context("seq")?.as_primitive::<UInt64Type>().values().iter().copied());
    }
    assert_eq!(seqs, (3..=last).collect::<Vec<_>>());

    let out = f.dir.path().join("events.jsonl");
    let rows = f.analytics.export_events(0, Some(10), ExportFormat::Jsonl, &out).await?;
    assert_eq!(rows, 10);
    let text = std::fs::read_to_string(&out)?;
    let recs: Vec<EventRecord> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(recs.len(), 10);
    verify_chain(GENESIS_HASH, &recs)?;
    assert!(matches!(
        f.analytics.export_events(9, Some(3), ExportFormat::Jsonl, &out).await,
        Err(Error::InvalidArgument(_))
    ));
    f.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_clients_get_arrow_batches() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = f.analytics.flight_service();
    let server = tokio::spawn(async move {
        let _ = Server::builder().add_service(service).serve_with_incoming(TcpIncoming::from(listener)).await;
    });
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut client = FlightSqlServiceClient::new(channel);

    let fetch = |info: arrow_flight::FlightInfo, mut client: FlightSqlServiceClient<Channel>| async move {
        let mut rows = Vec::new();
        for ep in info.endpoint {
            let ticket = ep.ticket.context("endpoint has a ticket")?;
            let batches: Vec<RecordBatch> = client.do_get(ticket).await?.try_collect().await?;
            rows.extend(batches);
        }
        anyhow::Ok(rows)
    };
    let sql = "SELECT seq, kind FROM events WHERE seq <= 3 ORDER BY seq";
    let info = client.execute(sql.into(), None).await?;
    let batches = fetch(info, client.clone()).await?;
    let b = concat_batches(&batches[0].schema(), &batches)?;
    assert_eq!(b.column(0).as_primitive::<UInt64Type>().values().to_vec(), vec![1, 2, 3]);
    assert_eq!(b.column(1).as_string::<i32>().value(0), "NodeRegistered");

    // Prepared statements, as JDBC uses for every query.
    let mut stmt = client.prepare("SELECT name, gpu_count FROM nodes ORDER BY name".into(), None).await?;
    assert_eq!(stmt.dataset_schema()?.field(0).name(), "name");
    let batches = fetch(stmt.execute().await?, client.clone()).await?;
    let b = concat_batches(&batches[0].schema(), &batches)?;
    assert_eq!(b.num_rows(), 2);
    assert_eq!(b.column(0).as_string::<i32>().value(1), "gpu-b");
    stmt.close().await?;

    // Bad SQL is refused with the parser's message.
    let err = client.execute("SELEC 1".into(), None).await.expect_err("bad SQL");
    assert!(err.to_string().contains("SELEC"), "{err}");

    // Catalog browsing, as BI tools do on connect.
    let info = client.get_tables(CommandGetTables { include_schema: true, ..Default::default() }).await?;
    let batches = fetch(info, client.clone()).await?;
    let names: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name("table_name").expect("table_name").as_string::<i32>().clone();
            (0..col.len()).map(move |i| col.value(i).to_string())
        })
        .collect();
    for t in ["events", "metrics", "nodes", "gpus", "workloads", "proposals", "members", "incidents"] {
        assert!(names.iter().any(|n| n == t), "{t} is listed in {names:?}");
    }
    server.abort();
    f.stop().await
}

/// `metrics_1m` serves the rollups the store computed: one row per GPU per
/// closed minute, with the summary of that minute's samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minute_rollups_are_queryable_once_the_minute_closes() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let a = f.analytics.clone();
    let count = |b: &RecordBatch| b.num_rows();
    f.node.store.roll_up(100)?;
    let open = one_batch(&a, "SELECT * FROM metrics_1m").await?;
    assert_eq!(count(&open), 0, "the fixture's minute is still open");
    // An event two minutes later closes it.
    let mut n = 120;
    f.propose(&mut n, Command::Heartbeat { node: "gpu-a".into() }).await?;
    f.node.store.roll_up(100)?;
    let b = one_batch(
        &a,
        "SELECT gpu_uuid, samples, utilization_pct_min, utilization_pct_avg, utilization_pct_max, utilization_pct_p95 \
         FROM metrics_1m WHERE node = 'gpu-a' AND time >= TIMESTAMP '2026-01-01T00:00:00Z' ORDER BY gpu_uuid",
    )
    .await?;
    assert_eq!(count(&b), 2, "gpu-a has two GPUs");
    let samples = b.column_by_name("samples").context("samples")?.as_primitive::<UInt64Type>().value(0);
    assert_eq!(samples, 5);
    let f64_at = |name: &str| -> anyhow::Result<f64> {
        Ok(b.column_by_name(name)
            .context("column")?
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
            .value(0))
    };
    assert_eq!(
        (
            f64_at("utilization_pct_min")?,
            f64_at("utilization_pct_avg")?,
            f64_at("utilization_pct_max")?,
            f64_at("utilization_pct_p95")?
        ),
        (0.0, 20.0, 40.0, 40.0)
    );
    let later = one_batch(&a, "SELECT * FROM metrics_1m WHERE time > TIMESTAMP '2026-01-01T00:05:00Z'").await?;
    assert_eq!(count(&later), 0);
    f.stop().await
}
