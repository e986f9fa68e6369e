//! `clawctl bench schedule`: how fast the scheduler places workloads on a
//! large simulated fleet. It registers `sim-node-*` nodes with fake GPU
//! inventories (model `SIM-H100`) through the real API as `user:bench`,
//! submits one-GPU workloads, and watches the `WorkloadPlaced` events.
//! Run it against a scratch cluster: by default it cancels its workloads
//! and drains its nodes at the end, but the nodes stay registered.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use claw_commands::Event;
use claw_proto::v1::{self, submit_request::Command};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::bench::parse_duration;
use crate::client::{Client, Target};
use crate::output::{self, emit, key_values, Format};

/// Fake GPUs are this model, so they are recognisable anywhere.
pub const SIM_MODEL: &str = "SIM-H100";

#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// Simulated nodes to register.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// One-GPU workloads to submit.
    #[arg(long, default_value_t = 200)]
    pub workloads: usize,
    /// Fake GPUs per simulated node.
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: u32,
    /// Concurrent submits.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Give up waiting for placements after this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Keep the workloads and leave the simulated nodes schedulable afterwards.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleReport {
    pub nodes: usize,
    pub workloads: usize,
    pub placed: u64,
    pub register_s: f64,
    pub submit_s: f64,
    /// From the first submit to the last placement seen.
    pub elapsed_s: f64,
    pub placements_per_s: f64,
    /// Submit → WorkloadPlaced, from the two events' leader timestamps.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub timed_out: bool,
}

impl ScheduleReport {
    pub fn render_table(&self) -> String {
        key_values(&[
            ("nodes", self.nodes.to_string()),
            ("workloads", self.workloads.to_string()),
            ("placed", self.placed.to_string()),
            ("register", format!("{:.2}s", self.register_s)),
            ("submit", format!("{:.2}s", self.submit_s)),
            ("elapsed", format!("{:.2}s", self.elapsed_s)),
            ("placements/s", format!("{:.1}", self.placements_per_s)),
            ("p50 decision", format!("{:.1} ms", self.p50_ms)),
            ("p99 decision", format!("{:.1} ms", self.p99_ms)),
            ("max decision", format!("{:.1} ms", self.max_ms)),
            ("errors", self.errors.to_string()),
            ("timed out", self.timed_out.to_string()),
        ])
    }
}

pub fn sim_node(tag: &str, i: usize, gpus: u32) -> v1::RegisterNode {
    let node = format!("sim-node-{tag}-{i:05}");
    v1::RegisterNode {
        gpus: (0..gpus)
            .map(|g| v1::GpuInfo {
                index: g,
                uuid: format!("SIM-{tag}-{i:05}-{g}"),
                model: SIM_MODEL.into(),
                memory_mb: 81_920,
            })
            .collect(),
        node,
        cpus: 64,
        memory_mb: 512 * 1024,
        driver_version: "sim".into(),
        cuda_version: String::new(),
        labels: [("sim".to_string(), "true".to_string())].into(),
    }
}

/// Submits every command with `clients` in flight; returns the errors and the first one.
pub async fn submit_all(client: &Client, clients: usize, commands: Vec<Command>) -> (u64, Option<String>) {
    let results: Vec<Result<v1::SubmitResponse, tonic::Status>> = futures::stream::iter(commands)
        .map(|c| {
            let client = client.clone();
            async move {
                client
                    .submit_raw(v1::SubmitRequest {
                        command_id: crate::client::new_command_id(),
                        correlation_id: String::new(),
                        command: Some(c),
                    })
                    .await
            }
        })
        .buffer_unordered(clients.max(1))
        .collect()
        .await;
    let errors = results.iter().filter(|r| r.is_err()).count() as u64;
    let first = results.into_iter().find_map(|r| r.err()).map(|s| crate::client::describe_status(&s));
    (errors, first)
}

pub async fn run(target: &Target, format: Format, args: ScheduleArgs) -> Result<()> {
    if args.nodes == 0 || args.workloads == 0 || args.clients == 0 {
        bail!("--nodes, --workloads and --clients must be at least 1");
    }
    let bench = Target { actor: "user:bench".into(), ..target.clone() };
    let client = bench.connect().await?;
    let tag = &crate::client::new_command_id().replace('-', "")[24..];
    let from_seq = client.cluster_status().await?.last_seq + 1;

    // Watch first, so no placement is missed.
    let filter = v1::EventFilter {
        kinds: vec!["WorkloadSubmitted".into(), "WorkloadPlaced".into()],
        node: String::new(),
        workload: String::new(),
    };
    let watch_client = bench.connect().await?;
    let mut stream =
        watch_client.grpc.clone().watch(v1::WatchRequest { from_seq, filter: Some(filter) }).await?.into_inner();

    let started = Instant::now();
    let nodes: Vec<Command> =
        (0..args.nodes).map(|i| Command::RegisterNode(sim_node(tag, i, args.gpus_per_node))).collect();
    let (mut errors, mut first_error) = submit_all(&client, args.clients, nodes).await;
    let register_s = started.elapsed().as_secs_f64();

    // Simulated nodes heartbeat like real ones, so the node monitor keeps them Ready.
    let names: Vec<String> = (0..args.nodes).map(|i| format!("sim-node-{tag}-{i:05}")).collect();
    let beat = {
        let client = client.clone();
        let names = names.clone();
        let clients = args.clients;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let beats = names.iter().map(|n| Command::Heartbeat(v1::Heartbeat { node: n.clone() })).collect();
                submit_all(&client, clients, beats).await;
            }
        })
    };

    let prefix = format!("bench-{tag}-");
    let submit_started = Instant::now();
    let workloads: Vec<Command> = (0..args.workloads)
        .map(|i| {
            Command::SubmitWorkload(v1::SubmitWorkload {
                workload_id: format!("{prefix}{i:06}"),
                spec: Some(v1::WorkloadSpec {
                    name: format!("{prefix}{i:06}"),
                    image: "sim".into(),
                    gpus: 1,
                    gpu_model: SIM_MODEL.into(),
                    ..Default::default()
                }),
            })
        })
        .collect();
    let submitting = {
        let client = client.clone();
        let clients = args.clients;
        tokio::spawn(async move {
            let (errors, first) = submit_all(&client, clients, workloads).await;
            (errors, first, Instant::now())
        })
    };

    let mut submitted_at: HashMap<String, i64> = HashMap::new();
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let mut placed = 0u64;
    let mut last_placed = submit_started;
    let deadline = submit_started + args.timeout;
    let mut timed_out = false;
    while placed < args.workloads as u64 {
        let message = match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(m) => m?,
            Err(_) => {
                timed_out = true;
                break;
            }
        };
        let Some(event) = message.and_then(|m| m.event) else { bail!("clawd closed the watch stream") };
        let record = claw_proto::event_from_pb(&event)?;
        match &record.event {
            Event::WorkloadSubmitted { workload_id, .. } if workload_id.starts_with(&prefix) => {
                submitted_at.insert(workload_id.clone(), record.time_ms);
            }
            Event::WorkloadPlaced { workload_id, .. } if workload_id.starts_with(&prefix) => {
                placed += 1;
                last_placed = Instant::now();
                if let Some(t) = submitted_at.remove(workload_id) {
                    latencies.saturating_record((record.time_ms - t).max(1) as u64);
                }
            }
            _ => {}
        }
    }
    let (submit_errors, submit_first, submitted) = submitting.await?;
    errors += submit_errors;
    first_error = first_error.or(submit_first);
    beat.abort();

    let elapsed_s = (last_placed - submit_started).as_secs_f64();
    let quantile = |q: f64| if latencies.is_empty() { 0.0 } else { latencies.value_at_quantile(q) as f64 };
    let report = ScheduleReport {
        nodes: args.nodes,
        workloads: args.workloads,
        placed,
        register_s,
        submit_s: (submitted - submit_started).as_secs_f64(),
        elapsed_s,
        placements_per_s: if elapsed_s > 0.0 { placed as f64 / elapsed_s } else { 0.0 },
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        max_ms: if latencies.is_empty() { 0.0 } else { latencies.max() as f64 },
        errors,
        timed_out,
    };

    if !args.keep {
        // Leave the cluster as it was: nothing of the bench runs or lands on these nodes.
        let cancels = (0..args.workloads)
            .map(|i| {
                Command::CancelWorkload(v1::CancelWorkload {
                    workload: format!("{prefix}{i:06}"),
                    reason: "bench done".into(),
                })
            })
            .collect();
        submit_all(&client, args.clients, cancels).await;
        let drains = names
            .iter()
            .map(|n| Command::RequestNodeDrain(v1::RequestNodeDrain { node: n.clone(), reason: "bench done".into() }))
            .collect();
        submit_all(&client, args.clients, drains).await;
    }

    match format {
        Format::Table => emit(&report.render_table())?,
        other => emit(&output::render_value(other, &report)?)?,
    }
    if let Some(e) = first_error {
        eprintln!("first error: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_nodes_are_recognisable() {
        let n = sim_node("abcd", 7, 8);
        assert_eq!(n.node, "sim-node-abcd-00007");
        assert_eq!(n.gpus.len(), 8);
        assert!(n.gpus.iter().all(|g| g.model == SIM_MODEL && g.uuid.starts_with("SIM-abcd-00007-")));
    }
}
