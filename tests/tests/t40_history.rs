//! Time travel and SQL, the way a user reaches them: `clawctl replay`,
//! `diff`, `sql` and `export` against a real `clawd`, and the Arrow Flight
//! SQL endpoint and Parquet export read by independent tools (Python's ADBC
//! Flight SQL driver and pyarrow, installed by `scripts/test`).

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use claw_proto::v1::{self, submit_request};
use claw_tests::{connect, Cluster, Ctl};
use serde_json::Value;

async fn register_node(addr: &str, name: &str) -> Result<()> {
    let mut client = connect(addr).await?;
    let command = submit_request::Command::RegisterNode(v1::RegisterNode {
        node: name.to_string(),
        cpus: 16,
        memory_mb: 65_536,
        ..Default::default()
    });
    let request = v1::SubmitRequest {
        command_id: format!("register-{name}"),
        correlation_id: String::new(),
        command: Some(command),
    };
    client.submit(request).await.context("register node")?;
    Ok(())
}

/// The last seq, read the way a user would (`events -o json` prints one
/// JSON record per line).
fn last_seq(ctl: &Ctl) -> Result<u64> {
    let out = ctl.ok(&["-o", "json", "events", "--from", "1"])?;
    let last = out.lines().rfind(|l| !l.trim().is_empty()).context("at least one event")?;
    let rec: serde_json::Value = serde_json::from_str(last).with_context(|| format!("not JSON: {last}"))?;
    rec["seq"].as_u64().context("the record has a seq")
}

/// Runs a Python snippet; its stdout, trimmed.
fn python(script: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("python3").arg("-c").arg(script).args(args).output().context("running python3")?;
    ensure!(
        out.status.success(),
        "python3 failed (scripts/test installs pyarrow and adbc-driver-flightsql):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sql_and_exports_tell_the_same_history() -> Result<()> {
    let c = Cluster::start(1, &[]).await?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let addr = c.members[0].addr.clone();
    let ctl = Ctl::new(&addr);

    register_node(&addr, "gpu-a").await?;
    for name in ["train-1", "train-2"] {
        ctl.ok(&["workload", "submit", "--name", name, "--image", "busybox", "--gpus", "0", "--", "echo", "hi"])?;
    }
    // The scheduler places both on gpu-a (no agent runs them: they stay Placed).
    claw_tests::wait_for("both workloads placed", Duration::from_secs(20), || async {
        let rows = ctl.json(&["workload", "list"]).ok()?;
        let placed = rows.as_array()?.iter().filter(|w| w["status"] == "placed").count();
        (placed == 2).then_some(())
    })
    .await?;
    let before = last_seq(&ctl)?;
    ctl.ok(&["workload", "cancel", "train-1", "--reason", "wrong data"])?;
    ctl.ok(&["intent", "keep", "the", "H100s", "busy"])?;
    let after = last_seq(&ctl)?;
    ensure!(after > before, "the cancel and the intent were appended ({before} → {after})");

    // 1. replay --at shows the past state; the seance SQL function agrees with it.
    let past = ctl.json(&["replay", "--at", &before.to_string()])?;
    let text = ctl.ok(&["replay", "--at", &before.to_string()])?;
    ensure!(text.contains(&format!("cluster at seq {before}")) && text.contains("gpu-a"), "{text}");
    let mut from_replay: Vec<(String, String)> = past["workloads"]
        .as_object()
        .context("workloads")?
        .values()
        .map(|w| {
            (w["id"].as_str().unwrap_or_default().to_string(), w["status"].as_str().unwrap_or_default().to_lowercase())
        })
        .collect();
    from_replay.sort();
    ensure!(from_replay.len() == 2, "two workloads at seq {before}: {from_replay:?}");
    let sql = format!("SELECT id, status FROM workloads_at({before}) ORDER BY id");
    let rows = ctl.json(&["sql", &sql])?;
    let from_sql: Vec<(String, String)> = rows
        .as_array()
        .context("rows")?
        .iter()
        .map(|r| {
            (r["id"].as_str().unwrap_or_default().to_string(), r["status"].as_str().unwrap_or_default().to_lowercase())
        })
        .collect();
    ensure!(from_sql == from_replay, "seance {from_sql:?} vs replay {from_replay:?}");

    // GetState's detail levels describe the same moment: the summaries are
    // the whole view less each placement's per-node verdicts; the head only
    // says which event the moment resolves to.
    let mut grpc = connect(&addr).await?;
    let mut state = async |detail: v1::StateDetail| -> Result<v1::GetStateResponse> {
        let at = Some(v1::get_state_request::At::Seq(before));
        let request = v1::GetStateRequest { at, consistency: 0, detail: detail as i32 };
        Ok(grpc.get_state(request).await?.into_inner())
    };
    let full = state(v1::StateDetail::Full).await?;
    let summaries = state(v1::StateDetail::Summaries).await?;
    let head = state(v1::StateDetail::Head).await?;
    let mut full_view: Value = serde_json::from_str(&full.view_json)?;
    let mut verdicts = 0;
    for w in full_view["workloads"].as_object_mut().context("workloads")?.values_mut() {
        if let Some(considered) = w["placement"]["considered"].as_array_mut() {
            verdicts += considered.len();
            considered.clear();
        }
    }
    ensure!(verdicts == 2, "each placement considered gpu-a: {}", full.view_json);
    ensure!(full_view == serde_json::from_str::<Value>(&summaries.view_json)?, "summaries: {}", summaries.view_json);
    ensure!(head.view_json.is_empty(), "the head carries no view: {}", head.view_json);
    ensure!(
        (head.seq, head.time_ms, head.last_seq) == (full.seq, full.time_ms, full.last_seq) && full.seq == before,
        "head {head:?} vs full seq {} time {}",
        full.seq,
        full.time_ms
    );
    let beyond = v1::GetStateRequest {
        at: Some(v1::get_state_request::At::Seq(after + 1_000)),
        consistency: 0,
        detail: v1::StateDetail::Head as i32,
    };
    let err = grpc.get_state(beyond).await.expect_err("a seq past the log's end");
    ensure!(err.code() == tonic::Code::OutOfRange && err.message().contains("seq"), "{err:?}");

    // 2. diff and stepping name the cancel.
    let diff = ctl.ok(&["diff", &before.to_string(), &after.to_string()])?;
    ensure!(diff.contains("~ workload") && diff.contains("cancel_requested: false → true"), "{diff}");
    let steps = ctl.ok(&["replay", "--from", &(before + 1).to_string(), "--to", &after.to_string()])?;
    ensure!(steps.contains("WorkloadCancelRequested") && steps.contains("IntentStated"), "{steps}");
    ensure!(steps.contains("(no change to the cluster state)"), "an intent changes no object: {steps}");

    // 3. A workload's story, from intent to now.
    let story = ctl.ok(&["replay", "workload", "train-1"])?;
    ensure!(story.contains("submitted \"train-1\"") && story.contains("placed on gpu-a"), "{story}");
    ensure!(story.contains("cancel requested: wrong data"), "{story}");

    // 4. SQL over the history, and SQL errors that say what is wrong.
    let counts = ctl.json(&["sql", "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind"])?;
    let submitted = counts.as_array().context("rows")?.iter().find(|r| r["kind"] == "WorkloadSubmitted");
    ensure!(submitted.is_some_and(|r| r["n"] == 2), "{counts}");
    let err = ctl.fails(&["sql", "SELEC kind FROM events"])?;
    ensure!(err.contains("SELEC") && err.contains("InvalidArgument"), "{err}");
    let err = ctl.fails(&["sql", "SELECT nope FROM events"])?;
    ensure!(err.contains("nope"), "{err}");
    let err = ctl.fails(&["replay", "--at", "yesterday"])?;
    ensure!(err.contains("not a moment"), "{err}");

    // 5. Parquet export read back by pyarrow: same rows, same seqs.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("events.parquet");
    let file = file.to_str().context("utf-8 path")?;
    ctl.ok(&["export", "events", "--format", "parquet", "--file", file])?;
    let read = python(
        "import sys, pyarrow.parquet as pq\n\
         t = pq.read_table(sys.argv[1])\n\
         seqs = t.column('seq').to_pylist()\n\
         print(t.num_rows, seqs[0], seqs[-1], sorted(set(t.column('kind').to_pylist())).count('WorkloadCancelRequested'))",
        &[file],
    )?;
    let total = last_seq(&ctl)?;
    ensure!(read == format!("{total} 1 {total} 1"), "pyarrow read {read:?}, the log has {total} events");
    let jsonl = ctl.ok(&["export", "events", "--from", "2", "--to", "3"])?;
    let lines: Vec<Value> = jsonl.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    ensure!(lines.len() == 2 && lines[0]["seq"] == 2 && lines[1]["hash"].is_string(), "{jsonl}");

    // 6. A standard Flight SQL client, with none of our code.
    let flight = python(
        "import sys, adbc_driver_flightsql.dbapi as fs\n\
         conn = fs.connect('grpc://' + sys.argv[1])\n\
         cur = conn.cursor()\n\
         cur.execute('SELECT count(*) AS n FROM events')\n\
         n = cur.fetchone()[0]\n\
         cur.execute(\"SELECT name FROM nodes\")\n\
         name = cur.fetchall()[0][0]\n\
         cur.execute('SELECT count(*) FROM events WHERE seq > ? AND seq <= ?', parameters=(2, 5))\n\
         bound = cur.fetchone()[0]\n\
         print(n, name, bound)\n\
         cur.close(); conn.close()",
        &[&addr],
    )?;
    // The last number is a query with parameters bound by the client: events 3..=5.
    ensure!(flight == format!("{total} gpu-a 3"), "Flight SQL answered {flight:?}, the log has {total} events");
    Ok(())
}
