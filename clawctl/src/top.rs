//! `clawctl top nodes|gpus`: the latest GPU readings, busiest first.

use anyhow::Result;
use clap::Subcommand;
use claw_commands::GpuSample;
use claw_projections::NodeRow;
use serde::Serialize;

use crate::client::Client;
use crate::output::{self, emit, Format, Table};

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// One line per node: its GPUs' average utilisation, memory, hottest GPU, power.
    Nodes,
    /// One line per GPU: its latest sample.
    Gpus {
        /// Only this node's GPUs.
        #[arg(long, default_value = "")]
        node: String,
    },
}

/// One GPU with its latest reading (none until its agent reports one).
#[derive(Debug, Clone, Serialize)]
pub struct GpuTop {
    pub node: String,
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_mb: u64,
    pub workload: Option<String>,
    pub sample: Option<GpuSample>,
    pub sample_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeTop {
    pub node: String,
    pub ready: bool,
    pub gpus: usize,
    pub allocated: usize,
    /// GPUs with a sample; the averages and sums are over these.
    pub reporting: usize,
    pub avg_utilization_pct: Option<f64>,
    pub memory_used_mb: u64,
    pub memory_mb: u64,
    pub max_temperature_c: Option<f64>,
    pub power_w: f64,
    pub throttled: usize,
    pub last_seen_ms: i64,
}

pub fn gpus_of(nodes: &[NodeRow]) -> Vec<GpuTop> {
    let mut out = Vec::new();
    for n in nodes {
        for g in &n.capabilities.gpus {
            let s = n.gpu_samples.get(&g.uuid);
            out.push(GpuTop {
                node: n.name.clone(),
                index: g.index,
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                memory_mb: g.memory_mb,
                workload: n.allocated_gpus.get(&g.uuid).cloned(),
                sample: s.map(|(s, _)| s.clone()),
                sample_ms: s.map(|(_, t)| *t),
            });
        }
    }
    // Busiest first; GPUs that never reported last.
    out.sort_by(|a, b| {
        let u = |g: &GpuTop| g.sample.as_ref().map(|s| s.utilization_pct).unwrap_or(-1.0);
        u(b).total_cmp(&u(a)).then_with(|| (&a.node, a.index).cmp(&(&b.node, b.index)))
    });
    out
}

pub fn nodes_of(nodes: &[NodeRow]) -> Vec<NodeTop> {
    let mut out: Vec<NodeTop> = nodes
        .iter()
        .map(|n| {
            let samples: Vec<&GpuSample> = n.gpu_samples.values().map(|(s, _)| s).collect();
            let reporting = samples.len();
            NodeTop {
                node: n.name.clone(),
                ready: n.ready,
                gpus: n.capabilities.gpus.len(),
                allocated: n.allocated_gpus.len(),
                reporting,
                avg_utilization_pct: (reporting > 0)
                    .then(|| samples.iter().map(|s| s.utilization_pct).sum::<f64>() / reporting as f64),
                memory_used_mb: samples.iter().map(|s| s.memory_used_mb).sum(),
                memory_mb: n.capabilities.gpus.iter().map(|g| g.memory_mb).sum(),
                max_temperature_c: samples.iter().map(|s| s.temperature_c).reduce(f64::max),
                power_w: samples.iter().map(|s| s.power_w).sum(),
                throttled: samples
                    .iter()
                    .filter(|s| s.throttle_reasons.iter().any(|r| r != "applications_clocks_setting"))
                    .count(),
                last_seen_ms: n.last_heartbeat_ms,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let u = |n: &NodeTop| n.avg_utilization_pct.unwrap_or(-1.0);
        u(b).total_cmp(&u(a)).then_with(|| a.node.cmp(&b.node))
    });
    out
}

pub async fn run(client: &Client, format: Format, command: TopCommand) -> Result<()> {
    let nodes: Vec<NodeRow> = client.list_objects("node").await?;
    let now = output::now_ms();
    match command {
        TopCommand::Nodes => {
            let rows = nodes_of(&nodes);
            match format {
                Format::Table => emit(&nodes_table(&rows, now)),
                other => emit(&output::render_value(other, &rows)?),
            }
        }
        TopCommand::Gpus { node } => {
            let mut rows = gpus_of(&nodes);
            rows.retain(|g| node.is_empty() || g.node == node);
            match format {
                Format::Table => emit(&gpus_table(&rows, now)),
                other => emit(&output::render_value(other, &rows)?),
            }
        }
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{v:.0}{unit}")).unwrap_or_else(|| "-".into())
}

pub fn nodes_table(rows: &[NodeTop], now_ms: i64) -> String {
    let mut t = Table::new([
        "NODE",
        "STATE",
        "GPUS",
        "ALLOCATED",
        "UTIL",
        "GPU MEMORY",
        "MAX TEMP",
        "POWER",
        "THROTTLED",
        "LAST SEEN",
    ]);
    for n in rows {
        let no_samples = n.reporting == 0;
        t.row([
            n.node.clone(),
            if n.ready { "Ready" } else { "NotReady" }.to_string(),
            format!("{} ({} reporting)", n.gpus, n.reporting),
            format!("{}/{}", n.allocated, n.gpus),
            opt(n.avg_utilization_pct, "%"),
            if no_samples { "-".into() } else { format!("{}/{} MB", n.memory_used_mb, n.memory_mb) },
            opt(n.max_temperature_c, " °C"),
            if no_samples { "-".into() } else { format!("{:.0} W", n.power_w) },
            n.throttled.to_string(),
            format!("{} ago", output::age(n.last_seen_ms, now_ms)),
        ]);
    }
    let mut out = t.render();
    if rows.iter().all(|n| n.gpus == 0) {
        out.push_str("no node reports any GPU (nodes without an NVIDIA driver register zero GPUs)\n");
    }
    out
}

pub fn gpus_table(rows: &[GpuTop], now_ms: i64) -> String {
    let mut t = Table::new([
        "NODE",
        "GPU",
        "MODEL",
        "UTIL",
        "MEMORY",
        "TEMP",
        "POWER",
        "SM CLOCK",
        "ECC (C/U)",
        "THROTTLE",
        "WORKLOAD",
        "SAMPLED",
    ]);
    for g in rows {
        let s = g.sample.as_ref();
        let throttle = s
            .map(|s| if s.throttle_reasons.is_empty() { "-".to_string() } else { s.throttle_reasons.join(",") })
            .unwrap_or_else(|| "-".into());
        t.row([
            g.node.clone(),
            g.index.to_string(),
            g.model.clone(),
            opt(s.map(|s| s.utilization_pct), "%"),
            s.map(|s| format!("{}/{} MB", s.memory_used_mb, g.memory_mb)).unwrap_or_else(|| "-".into()),
            opt(s.map(|s| s.temperature_c), " °C"),
            opt(s.map(|s| s.power_w), " W"),
            s.map(|s| format!("{} MHz", s.sm_clock_mhz)).unwrap_or_else(|| "-".into()),
            s.map(|s| format!("{}/{}", s.ecc_corrected, s.ecc_uncorrected)).unwrap_or_else(|| "-".into()),
            throttle,
            g.workload.clone().unwrap_or_else(|| "-".into()),
            g.sample_ms.map(|t| format!("{} ago", output::age(t, now_ms))).unwrap_or_else(|| "never".into()),
        ]);
    }
    let mut out = t.render();
    if rows.is_empty() {
        out.push_str("no GPUs registered (nodes without an NVIDIA driver register zero GPUs)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use claw_commands::{GpuInfo, NodeCapabilities};

    fn node(name: &str, utils: &[Option<f64>]) -> NodeRow {
        let gpus: Vec<GpuInfo> = (0..utils.len() as u32)
            .map(|i| GpuInfo { index: i, uuid: format!("{name}-{i}"), model: "H100".into(), memory_mb: 80_000 })
            .collect();
        let gpu_samples = utils
            .iter()
            .enumerate()
            .filter_map(|(i, u)| {
                u.map(|u| {
                    let s = GpuSample {
                        gpu_uuid: format!("{name}-{i}"),
                        utilization_pct: u,
                        memory_used_mb: 1_000,
                        temperature_c: 50.0 + u / 10.0,
                        power_w: 300.0,
                        ..Default::default()
                    };
                    (s.gpu_uuid.clone(), (s, 5_000))
                })
            })
            .collect();
        NodeRow {
            name: name.into(),
            capabilities: NodeCapabilities { gpus, ..Default::default() },
            draining: false,
            drain_reason: None,
            registered_ms: 0,
            last_heartbeat_ms: 5_000,
            changed_seq: 1,
            ready: true,
            not_ready_reason: None,
            allocated_gpus: Default::default(),
            last_health_check: None,
            gpu_samples,
        }
    }

    #[test]
    fn busiest_first_and_gpus_without_samples_show_no_numbers() {
        let nodes = [node("a", &[Some(10.0), None]), node("b", &[Some(90.0), Some(70.0)])];
        let gpus = gpus_of(&nodes);
        let order: Vec<(&str, u32)> = gpus.iter().map(|g| (g.node.as_str(), g.index)).collect();
        assert_eq!(order, [("b", 0), ("b", 1), ("a", 0), ("a", 1)]);
        let text = gpus_table(&gpus, 10_000);
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("a") && last.contains("never") && !last.contains('%'), "{text}");

        let tops = nodes_of(&nodes);
        assert_eq!(tops[0].node, "b");
        assert_eq!(tops[0].avg_utilization_pct, Some(80.0));
        assert_eq!(tops[0].max_temperature_c, Some(59.0));
        assert_eq!(tops[1].reporting, 1);
        assert_eq!(tops[1].avg_utilization_pct, Some(10.0), "only reporting GPUs are averaged");
    }

    #[test]
    fn a_fleet_without_gpus_says_so() {
        let text = nodes_table(&nodes_of(&[node("cpu-only", &[])]), 10_000);
        assert!(text.contains("no node reports any GPU"), "{text}");
    }
}
