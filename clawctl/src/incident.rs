//! `clawctl incident list|get|resolve`: the incident memory.

use anyhow::Result;
use clap::Subcommand;
use claw_projections::{IncidentDetail, IncidentRow};
use claw_proto::v1::{self, submit_request::Command};

use crate::client::{Client, SubmitOutcome};
use crate::output::{self, emit, key_values, or_dash, print_outcome, time_ms, Format, Table};

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// List incidents, open ones first (resolved ones only with --all).
    List {
        /// Also list resolved incidents.
        #[arg(long)]
        all: bool,
        /// Only incidents on this node.
        #[arg(long, default_value = "")]
        node: String,
    },
    /// Show one incident, and how similar incidents were resolved before.
    Get { id: String },
    /// Close an incident with its root cause and what fixed it; both are
    /// recalled when a similar incident opens.
    Resolve {
        id: String,
        #[arg(long)]
        root_cause: String,
        #[arg(long)]
        resolution: String,
    },
}

pub async fn run(client: &Client, format: Format, command: IncidentCommand) -> Result<()> {
    match command {
        IncidentCommand::List { all, node } => {
            let mut rows: Vec<IncidentRow> = client.list_objects("incident").await?;
            rows.retain(|i| (all || i.status == "open") && (node.is_empty() || i.node == node));
            // Open first, then newest first.
            rows.sort_by(|a, b| (a.status != "open").cmp(&(b.status != "open")).then(b.opened_seq.cmp(&a.opened_seq)));
            match format {
                Format::Table => emit(&list_table(&rows, output::now_ms())),
                other => emit(&output::render_value(other, &rows)?),
            }
        }
        IncidentCommand::Get { id } => {
            let d: IncidentDetail =
                client.get_object("incident", &id).await.map_err(|e| e.or_not_found("incident", &id))?;
            match format {
                Format::Table => emit(&detail(&d)),
                other => emit(&output::render_value(other, &d)?),
            }
        }
        IncidentCommand::Resolve { id, root_cause, resolution } => {
            let command =
                Command::ResolveIncident(v1::ResolveIncident { incident_id: id.clone(), root_cause, resolution });
            let outcome = client.submit(None, command).await?;
            print_outcome(format, &outcome, |o: &SubmitOutcome| {
                format!("incident {id} resolved ({}){}", o.seq_text(), o.duplicate_note())
            })
        }
    }
}

pub fn list_table(rows: &[IncidentRow], now_ms: i64) -> String {
    let mut table = Table::new(["ID", "STATUS", "KIND", "SUBJECT", "NODE", "OPENED", "SUMMARY"]);
    for i in rows {
        table.row([
            i.id.clone(),
            i.status.clone(),
            i.kind.clone(),
            i.subject.clone(),
            if i.node.is_empty() { "-".into() } else { i.node.clone() },
            format!("{} ago", output::age(i.opened_ms, now_ms)),
            output::truncate(&i.summary, 80),
        ]);
    }
    table.render()
}

pub fn detail(d: &IncidentDetail) -> String {
    let i = &d.incident;
    let mut out = key_values(&[
        ("id", i.id.clone()),
        ("status", i.status.clone()),
        ("kind", i.kind.clone()),
        ("subject", i.subject.clone()),
        ("node", if i.node.is_empty() { "-".into() } else { i.node.clone() }),
        ("summary", i.summary.clone()),
        ("signals", i.signals.join(", ")),
        ("opened", format!("{} (seq {}) by {}", time_ms(i.opened_ms), i.opened_seq, i.opened_by)),
        (
            "resolved",
            match (i.resolved_ms, i.resolved_seq, &i.resolved_by) {
                (Some(t), Some(seq), Some(by)) => format!("{} (seq {seq}) by {by}", time_ms(t)),
                _ => "-".into(),
            },
        ),
        ("root cause", or_dash(i.root_cause.as_deref())),
        ("resolution", or_dash(i.resolution.as_deref())),
    ]);
    if d.seen_before.is_empty() {
        out.push_str("\nseen before: no resolved incident with matching signals\n");
    } else {
        out.push_str("\nseen before:\n");
        for s in &d.seen_before {
            out.push_str(&format!(
                "  {} on {} ({}; {:.0}% of signals match), resolved by {}\n    root cause: {}\n    resolution: {}\n",
                s.incident_id,
                s.subject,
                time_ms(s.opened_ms),
                s.similarity * 100.0,
                or_dash(s.resolved_by.as_deref()),
                or_dash(s.root_cause.as_deref()),
                or_dash(s.resolution.as_deref()),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use claw_projections::SeenBefore;

    fn row(id: &str, status: &str) -> IncidentRow {
        IncidentRow {
            id: id.into(),
            kind: "gpu_xid".into(),
            subject: "gpu:GPU-1".into(),
            node: "gpu-a".into(),
            signals: vec!["gpu_model:H100".into(), "xid:79".into()],
            summary: "GPU GPU-1 on node gpu-a reported XID 79".into(),
            status: status.into(),
            opened_seq: 7,
            opened_ms: 1_000,
            opened_by: "node:gpu-a".into(),
            resolved_seq: None,
            resolved_ms: None,
            resolved_by: None,
            root_cause: None,
            resolution: None,
        }
    }

    #[test]
    fn detail_shows_what_fixed_a_similar_incident() {
        let d = IncidentDetail {
            incident: row("inc-2", "open"),
            seen_before: vec![SeenBefore {
                incident_id: "inc-1".into(),
                similarity: 1.0,
                subject: "gpu:GPU-0".into(),
                opened_ms: 0,
                resolved_by: Some("user:alice".into()),
                root_cause: Some("loose riser".into()),
                resolution: Some("reseated it".into()),
            }],
        };
        let text = detail(&d);
        assert!(text.contains("seen before:\n  inc-1 on gpu:GPU-0"), "{text}");
        assert!(text.contains("100% of signals match), resolved by user:alice"), "{text}");
        assert!(text.contains("root cause: loose riser") && text.contains("resolution: reseated it"), "{text}");
        let none = detail(&IncidentDetail { incident: row("inc-3", "open"), seen_before: vec![] });
        assert!(none.contains("seen before: no resolved incident"), "{none}");
    }

    #[test]
    fn list_names_each_incident_and_its_subject() {
        let text = list_table(&[row("inc-2", "open")], 61_000);
        assert!(text.contains("inc-2") && text.contains("gpu:GPU-1") && text.contains("60s ago"), "{text}");
    }
}
