//! `clawd`'s own Prometheus metrics: a three-member cluster is scraped over
//! plain HTTP/1.1 on each member's gRPC port, and the exposition is parsed by
//! the Prometheus project's own Python parser (`prometheus_client`, an
//! independent reader), not by our code.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use claw_proto::v1;
use claw_tests::{intent, Cluster};
use futures::StreamExt;

const T: Duration = Duration::from_secs(30);

/// `GET /metrics` over HTTP/1.1: (status line, content type, body).
fn scrape(addr: &str) -> Result<(String, String, String)> {
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).context("the response is not UTF-8")?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head.lines().next().unwrap_or_default().to_string();
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim()))
        .unwrap_or_default()
        .to_string();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, content_type, body))
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunk")?;
        let n = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("short chunk")?);
        body = rest.get(n + 2..).context("short chunk")?;
    }
}

/// Parses OpenMetrics text with `prometheus_client`'s parser; every sample as
/// `name{label="v",...}` → value (labels sorted).
fn parse(text: &str) -> Result<BTreeMap<String, f64>> {
    const SCRIPT: &str = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running python3")?;
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "prometheus_client rejected the exposition (scripts/test installs it):\n{}\n--- exposition ---\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn get(samples: &BTreeMap<String, f64>, name: &str) -> Result<f64> {
    samples.get(name).copied().with_context(|| format!("no sample {name} in {:?}", samples.keys().collect::<Vec<_>>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_member_serves_prometheus_metrics_that_parse() -> Result<()> {
    let c = Cluster::start(3, &[]).await?;
    let leader = c.wait_leader(T).await?;
    let leader_addr = c.members[(leader - 1) as usize].addr.clone();
    let mut cl = c.members[(leader - 1) as usize].client().await?;
    // A watcher that has seen nothing yet stays open during the scrape.
    let mut watch = cl.watch(v1::WatchRequest { from_seq: 1, filter: None }).await?.into_inner();
    let first = watch.next().await.context("the watch ended")??;
    ensure!(first.event.is_some(), "the watch sent no event");
    for i in 0..20 {
        cl.submit(intent(&format!("metrics {i}"), &format!("metrics-{i}"))).await?;
    }
    let last_seq = c.wait_converged(T).await?;

    let mut leaders = 0.0;
    for m in &c.members {
        let (status, content_type, body) = scrape(&m.addr)?;
        ensure!(status.contains("200"), "member {}: {status}", m.id);
        ensure!(
            content_type.starts_with("application/openmetrics-text"),
            "member {}: content type {content_type}",
            m.id
        );
        let s = parse(&body)?;
        leaders += get(&s, "claw_raft_is_leader")?;
        ensure!(get(&s, "claw_raft_term")? >= 1.0);
        ensure!(get(&s, "claw_events_last_seq")? == last_seq as f64, "member {}: last seq", m.id);
        let applied = get(&s, "claw_raft_applied_index")?;
        let committed = get(&s, "claw_raft_committed_index")?;
        let last_log = get(&s, "claw_raft_last_log_index")?;
        ensure!(
            applied > 0.0 && committed >= applied && last_log >= committed,
            "member {}: applied {applied}, committed {committed}, last log {last_log}",
            m.id
        );
        // Every member fsyncs its own log: entries per fsync counts them.
        let fsyncs = get(&s, "claw_fsync_seconds_count")?;
        ensure!(fsyncs >= 1.0, "member {}: no fsync measured", m.id);
        ensure!(get(&s, "claw_entries_per_fsync_sum")? >= get(&s, "claw_entries_per_fsync_count")?);
        ensure!(get(&s, "claw_apply_seconds_count")? >= 1.0, "member {}: no apply measured", m.id);
        ensure!(get(&s, "claw_raft_leader_changes_total")? >= 1.0, "member {}: never saw a leader", m.id);
        // The events just written are still in RocksDB's memtables.
        let memtables = get(&s, "claw_rocksdb_memtable_bytes")?;
        ensure!(memtables > 0.0, "member {}: memtables hold {memtables} bytes after 20 writes", m.id);
        get(&s, "claw_rocksdb_table_reader_bytes")?;
        get(&s, "claw_rocksdb_block_cache_bytes")?;
        if m.id == leader {
            ensure!(get(&s, "claw_proposal_commit_seconds_count")? >= 20.0, "the leader committed 20 proposals");
            let submits = get(&s, r#"claw_grpc_request_seconds_count{code="0",method="/claw.v1.Claw/Submit"}"#)?;
            ensure!(submits >= 20.0, "20 Submit calls, the exposition counted {submits}");
            ensure!(get(&s, "claw_watch_subscribers")? == 1.0, "one watcher is open");
            // The server sends ahead of what the client has read (into the
            // transport's buffers), so the lag is at most the whole history.
            let lag = get(&s, "claw_watch_lag_events_max")?;
            ensure!(lag <= last_seq as f64, "watch lag {lag} of {last_seq} events");
        } else {
            // A follower times each AppendEntries its leader sends, single or streamed.
            let appends = get(&s, "claw_raft_append_entries_seconds_count")?;
            ensure!(appends >= 1.0, "member {}: no AppendEntries measured", m.id);
        }
    }
    ensure!(leaders == 1.0, "exactly one member reports itself leader, got {leaders}");

    // The watcher catches up: its lag goes to zero; closed, it is gone.
    let mut seen = 1;
    while seen < last_seq {
        watch.next().await.context("the watch ended")??;
        seen += 1;
    }
    let s = parse(&scrape(&leader_addr)?.2)?;
    ensure!(get(&s, "claw_watch_lag_events_max")? == 0.0, "a caught-up watcher lags 0");
    drop(watch);
    let gone = claw_tests::wait_for("the closed watch to be dropped", T, || async {
        let s = parse(&scrape(&leader_addr).ok()?.2).ok()?;
        (get(&s, "claw_watch_subscribers").ok()? == 0.0).then_some(())
    })
    .await;
    gone.with_context(|| c.logs())?;

    // Unknown paths are answered and counted under one label.
    let mut probe = std::net::TcpStream::connect(&leader_addr)?;
    write!(probe, "GET /no/such/thing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut sink = Vec::new();
    probe.read_to_end(&mut sink)?;
    let s = parse(&scrape(&leader_addr)?.2)?;
    ensure!(!s.keys().any(|k| k.contains("/no/such/thing")), "an unknown path became a label");
    Ok(())
}
