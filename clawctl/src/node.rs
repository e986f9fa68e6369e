//! `clawctl node list|get|drain`.

use anyhow::Result;
use clap::Subcommand;
use claw_projections::NodeRow;
use claw_proto::v1::{self, submit_request::Command};

use crate::client::{Client, SubmitOutcome};
use crate::events::gpu_text;
use crate::output::{self, emit, key_values, or_dash, print_outcome, time_ms, Format, Table};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List registered nodes.
    List,
    /// Show one node and its GPUs.
    Get { name: String },
    /// Ask for a node to be drained: no new placements, running work moves off.
    Drain {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub async fn run(client: &Client, format: Format, command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::List => {
            let mut rows: Vec<NodeRow> = client.list_objects("node").await?;
            rows.sort_by(|a, b| a.name.cmp(&b.name));
            match format {
                Format::Table => emit(&list_table(&rows, output::now_ms())),
                other => emit(&output::render_value(other, &rows)?),
            }
        }
        NodeCommand::Get { name } => {
            let row: NodeRow = client.get_object("node", &name).await.map_err(|e| e.or_not_found("node", &name))?;
            match format {
                Format::Table => emit(&detail(&row, output::now_ms())),
                other => emit(&output::render_value(other, &row)?),
            }
        }
        NodeCommand::Drain { name, reason } => {
            let command = Command::RequestNodeDrain(v1::RequestNodeDrain { node: name, reason });
            let outcome = client.submit(None, command).await?;
            print_outcome(format, &outcome, SubmitOutcome::events_lines)
        }
    }
}

fn state(n: &NodeRow) -> &'static str {
    match (n.ready, n.draining) {
        (false, true) => "NotReady,Draining",
        (false, false) => "NotReady",
        (true, true) => "Ready,Draining",
        (true, false) => "Ready",
    }
}

pub fn list_table(rows: &[NodeRow], now_ms: i64) -> String {
    let mut table = Table::new(["NAME", "STATE", "GPUS", "ALLOCATED", "CPUS", "MEMORY", "DRIVER", "LAST SEEN"]);
    for n in rows {
        let caps = &n.capabilities;
        table.row([
            n.name.clone(),
            state(n).to_string(),
            gpu_text(caps),
            format!("{}/{}", n.allocated_gpus.len(), caps.gpus.len()),
            caps.cpus.to_string(),
            format!("{} MB", caps.memory_mb),
            or_dash(caps.driver_version.as_deref()),
            output::age(n.last_heartbeat_ms, now_ms),
        ]);
    }
    table.render()
}

pub fn detail(n: &NodeRow, now_ms: i64) -> String {
    let caps = &n.capabilities;
    let drain = match (&n.draining, &n.drain_reason) {
        (false, _) => "-".to_string(),
        (true, Some(reason)) if !reason.is_empty() => format!("draining: {reason}"),
        (true, _) => "draining".to_string(),
    };
    let mut out = key_values(&[
        ("name", n.name.clone()),
        ("state", state(n).to_string()),
        ("not ready", or_dash(n.not_ready_reason.as_deref())),
        ("drain", drain),
        ("cpus", caps.cpus.to_string()),
        ("memory", format!("{} MB", caps.memory_mb)),
        ("driver", or_dash(caps.driver_version.as_deref())),
        ("cuda", or_dash(caps.cuda_version.as_deref())),
        ("labels", output::join_map(&caps.labels)),
        ("registered", time_ms(n.registered_ms)),
        (
            "last heartbeat",
            format!("{} ({} ago)", time_ms(n.last_heartbeat_ms), output::age(n.last_heartbeat_ms, now_ms)),
        ),
        ("changed seq", n.changed_seq.to_string()),
        ("gpus", format!("{} ({} allocated)", caps.gpus.len(), n.allocated_gpus.len())),
    ]);
    if !caps.gpus.is_empty() {
        let mut table = Table::new(["INDEX", "MODEL", "MEMORY", "UUID", "WORKLOAD"]);
        for g in &caps.gpus {
            table.row([
                g.index.to_string(),
                g.model.clone(),
                format!("{} MB", g.memory_mb),
                g.uuid.clone(),
                or_dash(n.allocated_gpus.get(&g.uuid)),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use claw_commands::{GpuInfo, NodeCapabilities};

    fn node() -> NodeRow {
        let gpu = |index| GpuInfo { index, uuid: format!("GPU-{index}"), model: "H100".into(), memory_mb: 81559 };
        NodeRow {
            name: "gpu-a".into(),
            capabilities: NodeCapabilities {
                cpus: 64,
                memory_mb: 512_000,
                gpus: vec![gpu(0), gpu(1)],
                driver_version: Some("550.54".into()),
                ..Default::default()
            },
            draining: true,
            drain_reason: Some("ecc".into()),
            registered_ms: 0,
            last_heartbeat_ms: 1_000,
            changed_seq: 9,
            ready: true,
            not_ready_reason: None,
            allocated_gpus: [("GPU-1".to_string(), "w-1".to_string())].into(),
        }
    }

    #[test]
    fn list_summarises_gpus() {
        assert_eq!(
            list_table(&[node()], 11_000),
            "NAME   STATE           GPUS    ALLOCATED  CPUS  MEMORY     DRIVER  LAST SEEN\n\
             gpu-a  Ready,Draining  2xH100  1/2        64    512000 MB  550.54  10s\n"
        );
    }

    #[test]
    fn get_lists_each_gpu() {
        let out = detail(&node(), 11_000);
        assert!(out.contains("drain:          draining: ecc\n"), "{out}");
        assert!(out.contains("1      H100   81559 MB  GPU-1  w-1\n"), "{out}");
    }
}
