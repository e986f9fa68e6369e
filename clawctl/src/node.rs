//! `clawctl node list|get|drain|check`.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use claw_commands::{Event, GpuHealthResult};
use claw_projections::{HealthCheckRow, NodeRow};
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
    /// Run the GPU health check (a matrix multiply checked against a CPU
    /// reference) on the node's devices and wait for the agent's answer.
    /// Exits non-zero when a device fails or the check could not run.
    Check {
        name: String,
        /// How long to wait for the node agent's report.
        #[arg(long, default_value = "120s", value_parser = crate::bench::parse_duration)]
        timeout: Duration,
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
        NodeCommand::Check { name, timeout } => check(client, format, name, timeout).await,
    }
}

/// Asks for a health check, then watches from the request's seq for the
/// agent's report with the same check id.
async fn check(client: &Client, format: Format, name: String, timeout: Duration) -> Result<()> {
    let command = Command::RequestHealthCheck(v1::RequestHealthCheck { node: name.clone(), check_id: String::new() });
    let outcome = client.submit(None, command).await?;
    let check_id = outcome.object_id.clone();
    let from = outcome.seqs.first().copied().unwrap_or(0) + 1;
    if format == Format::Table {
        eprintln!("health check {check_id} requested on node {name}; waiting for its agent (up to {timeout:?})");
    }
    let filter =
        v1::EventFilter { kinds: vec!["GpuHealthChecked".into()], node: name.clone(), workload: String::new() };
    let wait = wait_report(client, v1::WatchRequest { from_seq: from, filter: Some(filter) }, &check_id);
    let row = tokio::time::timeout(timeout, wait).await.map_err(|_| {
        anyhow!(
            "no report of health check {check_id} from node {name} within {timeout:?}; is its clawnode running? \
             (see: clawctl node get {name}, clawctl events list --node {name})"
        )
    })??;
    match format {
        Format::Table => emit(&check_table(&row))?,
        other => emit(&output::render_value(other, &row.results)?)?,
    }
    if let Some(e) = &row.error {
        bail!("node {name} could not run the health check: {e}");
    }
    let failed: Vec<String> =
        row.results.iter().filter(|r| !r.passed).map(|r| format!("{} ({})", r.device_index, r.device)).collect();
    if !failed.is_empty() {
        bail!("health check {check_id} failed on node {name}, device {}", failed.join(", "));
    }
    if row.results.is_empty() {
        bail!("node {name} reported no devices for health check {check_id}");
    }
    Ok(())
}

/// The `GpuHealthChecked` with `check_id`, from the watch stream.
async fn wait_report(client: &Client, request: v1::WatchRequest, check_id: &str) -> Result<HealthCheckRow> {
    let mut stream = client.grpc.clone().watch(request).await?.into_inner();
    loop {
        let Some(message) = stream.message().await? else {
            bail!("clawd closed the watch stream before the report of health check {check_id} arrived");
        };
        let Some(event) = message.event else { continue };
        let record = claw_proto::event_from_pb(&event)?;
        if let Event::GpuHealthChecked { check_id: id, results, error, .. } = record.event {
            if id == check_id {
                return Ok(HealthCheckRow { check_id: id, time_ms: record.time_ms, seq: record.seq, results, error });
            }
        }
    }
}

/// One row per device, then each device's detail sentence.
pub fn check_table(row: &HealthCheckRow) -> String {
    let mut table =
        Table::new(["DEVICE", "INDEX", "RUNTIME", "RESULT", "GFLOP/S", "CHECKSUM", "REFERENCE", "MAX ERROR"]);
    for r in &row.results {
        table.row([
            r.device.clone(),
            r.device_index.to_string(),
            r.runtime.clone(),
            if r.passed { "pass" } else { "FAIL" }.to_string(),
            format!("{:.1}", r.gflops),
            format!("{:.6}", r.checksum),
            format!("{:.6}", r.reference_checksum),
            format!("{:.3e}", r.max_abs_error),
        ]);
    }
    let mut out = table.render();
    for r in &row.results {
        out.push_str(&format!("{}\n", r.detail));
    }
    if let Some(e) = &row.error {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}

/// `pass 2/2 devices, 812.4 GFLOP/s (hc-…, 12:00:01)`, for `node get`.
fn health_line(h: &HealthCheckRow) -> String {
    let when = format!("({}, {})", h.check_id, time_ms(h.time_ms));
    if let Some(e) = &h.error {
        return format!("error: {e} {when}");
    }
    let passed = h.results.iter().filter(|r| r.passed).count();
    let gflops: f64 = h.results.iter().map(|r: &GpuHealthResult| r.gflops).sum();
    let verdict = if h.passed() { "pass" } else { "FAIL" };
    format!("{verdict} {passed}/{} devices, {gflops:.1} GFLOP/s {when}", h.results.len())
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
        ("health check", n.last_health_check.as_ref().map(health_line).unwrap_or_else(|| "-".into())),
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
            last_health_check: None,
            gpu_samples: Default::default(),
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

    #[test]
    fn check_table_shows_each_device_and_its_detail() {
        let result = GpuHealthResult {
            runtime: "wgpu".into(),
            device: "llvmpipe".into(),
            matrix_size: 512,
            passed: true,
            gflops: 25.04,
            checksum: 12.5,
            reference_checksum: 12.5,
            max_abs_error: 1e-6,
            detail: "512x512 f32 matmul on llvmpipe: ok".into(),
            ..Default::default()
        };
        let row = HealthCheckRow { check_id: "hc-1".into(), time_ms: 0, seq: 3, results: vec![result], error: None };
        let out = check_table(&row);
        assert!(out.starts_with("DEVICE    INDEX  RUNTIME  RESULT  GFLOP/S"), "{out}");
        assert!(out.contains("llvmpipe  0      wgpu     pass    25.0     12.500000"), "{out}");
        assert!(out.ends_with("512x512 f32 matmul on llvmpipe: ok\n"), "{out}");
        assert!(health_line(&row).starts_with("pass 1/1 devices, 25.0 GFLOP/s (hc-1"), "{}", health_line(&row));
    }
}
