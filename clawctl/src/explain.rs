//! `clawctl workload explain` and `clawctl workload logs`.

use anyhow::{bail, Result};
use claw_commands::{Event, EventRecord, Placement, WorkloadStatus};
use claw_projections::WorkloadRow;
use claw_proto::v1;
use serde::Serialize;

use crate::client::{decode_events, Client};
use crate::output::{self, emit, key_values, or_dash, Format, Table};

/// What `explain` shows, also its JSON/YAML form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub workload: String,
    pub name: String,
    pub status: WorkloadStatus,
    pub node: Option<String>,
    pub gpu_uuids: Vec<String>,
    pub lost_count: u32,
    /// The placement that put it where it is (Placed, Running or finished).
    pub placement: Option<Placement>,
    /// Why it is still pending.
    pub unschedulable: Option<Placement>,
}

impl Explanation {
    pub fn of(w: &WorkloadRow) -> Explanation {
        Explanation {
            workload: w.id.clone(),
            name: w.spec.name.clone(),
            status: w.status,
            node: w.node.clone(),
            gpu_uuids: w.gpu_uuids.clone(),
            lost_count: w.lost_count,
            placement: w.placement.clone(),
            unschedulable: w.unschedulable.clone(),
        }
    }

    pub fn render_table(&self) -> String {
        let verdict = match (&self.placement, &self.unschedulable, self.status) {
            (_, Some(u), WorkloadStatus::Pending) => format!("pending: {}", u.summary),
            (_, None, WorkloadStatus::Pending) => "pending: the scheduler has not looked at it yet".to_string(),
            (Some(p), _, _) => p.summary.clone(),
            (None, _, status) => format!("{} without a recorded placement", status.as_str()),
        };
        let mut out = key_values(&[
            ("workload", self.workload.clone()),
            ("name", self.name.clone()),
            ("status", self.status.as_str().to_string()),
            ("node", or_dash(self.node.as_deref())),
            ("gpus", if self.gpu_uuids.is_empty() { "-".into() } else { self.gpu_uuids.join(", ") }),
            ("lost", self.lost_count.to_string()),
            ("decision", verdict),
        ]);
        let shown = if self.status == WorkloadStatus::Pending {
            self.unschedulable.as_ref().or(self.placement.as_ref())
        } else {
            self.placement.as_ref()
        };
        if let Some(p) = shown {
            out.push_str(&format!("\nnodes considered ({}):\n", p.strategy));
            let mut table = Table::new(["NODE", "RESULT", "SCORE", "DETAIL"]);
            for v in &p.considered {
                let chosen = p.chosen.as_deref() == Some(v.node.as_str());
                let result = match (&v.failed_filter, chosen) {
                    (Some(f), _) => format!("failed {f}"),
                    (None, true) => "chosen".to_string(),
                    (None, false) => "fits".to_string(),
                };
                table.row([
                    v.node.clone(),
                    result,
                    v.score.map(|s| format!("{s:.3}")).unwrap_or_else(|| "-".into()),
                    v.detail.clone(),
                ]);
            }
            out.push_str(&table.render());
        }
        out
    }
}

pub fn explain(format: Format, row: &WorkloadRow) -> Result<()> {
    let e = Explanation::of(row);
    match format {
        Format::Table => emit(&e.render_table()),
        other => emit(&output::render_value(other, &e)?),
    }
}

/// One piece of output, the JSON/YAML form of `logs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    pub seq: u64,
    pub time_ms: i64,
    pub stream: String,
    pub data: String,
}

/// What a log-relevant event means for `logs`.
enum Seen {
    Chunk(LogLine),
    /// The workload ended: `--follow` stops.
    End,
    Other,
}

fn classify(r: &EventRecord) -> Seen {
    match &r.event {
        Event::WorkloadLogChunk { stream, data, .. } => {
            Seen::Chunk(LogLine { seq: r.seq, time_ms: r.time_ms, stream: stream.clone(), data: data.clone() })
        }
        Event::WorkloadExited { .. } => Seen::End,
        Event::WorkloadLost { requeued: false, .. } => Seen::End,
        _ => Seen::Other,
    }
}

fn print_line(format: Format, line: &LogLine) -> Result<()> {
    match format {
        // The output as the program wrote it: no added newline, so chunks
        // split mid-line join back up.
        Format::Table => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(line.data.as_bytes())?;
            out.flush()?;
            Ok(())
        }
        other => emit(&output::render_stream_item(other, line)?),
    }
}

fn filter(workload: &str) -> v1::EventFilter {
    v1::EventFilter {
        kinds: vec!["WorkloadLogChunk".into(), "WorkloadExited".into(), "WorkloadLost".into()],
        node: String::new(),
        workload: workload.to_string(),
    }
}

pub async fn logs(client: &Client, format: Format, row: &WorkloadRow, follow: bool) -> Result<()> {
    // A workload that ended without an exit report (cancelled before it ran)
    // would keep a follow waiting forever, so it is only listed.
    let follow = follow && !row.status.is_terminal();
    if !follow {
        let mut from = 1;
        loop {
            let request = v1::ListEventsRequest {
                from_seq: from,
                to_seq: 0,
                limit: 1000,
                filter: Some(filter(&row.id)),
                consistency: client.consistency(),
            };
            let response = client.grpc.clone().list_events(request).await?.into_inner();
            let records = decode_events(&response.events)?;
            let Some(last) = records.last().map(|r| r.seq) else { return Ok(()) };
            for r in &records {
                if let Seen::Chunk(line) = classify(r) {
                    print_line(format, &line)?;
                }
            }
            if last >= response.last_seq {
                return Ok(());
            }
            from = last + 1;
        }
    }
    let request = v1::WatchRequest { from_seq: 1, filter: Some(filter(&row.id)) };
    let mut stream = client.grpc.clone().watch(request).await?.into_inner();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let message = tokio::select! {
            message = stream.message() => message?,
            _ = &mut ctrl_c => return Ok(()),
        };
        let Some(message) = message else { bail!("clawd closed the watch stream") };
        let Some(event) = message.event else { continue };
        let record = claw_proto::event_from_pb(&event)?;
        match classify(&record) {
            Seen::Chunk(line) => print_line(format, &line)?,
            Seen::End => return Ok(()),
            Seen::Other => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use claw_commands::NodeVerdict;

    use super::*;

    #[test]
    fn explain_names_each_node_and_its_filter() {
        let e = Explanation {
            workload: "w-1".into(),
            name: "big".into(),
            status: WorkloadStatus::Pending,
            node: None,
            gpu_uuids: vec![],
            lost_count: 0,
            placement: None,
            unschedulable: Some(Placement {
                strategy: "binpack".into(),
                considered: vec![NodeVerdict {
                    node: "gpu-a".into(),
                    failed_filter: Some("gpu_count".into()),
                    detail: "needs 16 GPUs, 8 of 8 eligible GPUs free".into(),
                    score: None,
                }],
                chosen: None,
                summary: "no node fits: 0 of 1 nodes pass the filters (1 gpu_count)".into(),
            }),
        };
        let out = e.render_table();
        assert!(out.contains("decision: pending: no node fits"), "{out}");
        assert!(out.contains("gpu-a  failed gpu_count  -      needs 16 GPUs"), "{out}");
        let json = output::render_value(Format::Json, &e).unwrap();
        assert!(json.contains("\"failed_filter\": \"gpu_count\""), "{json}");
    }
}
