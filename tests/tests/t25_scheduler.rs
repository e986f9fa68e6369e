//! The scheduler in a real `clawd`: placement on registered nodes, the
//! explanation of an unschedulable workload, drains, and node timeouts.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use claw_proto::v1::{self, claw_client::ClawClient, submit_request::Command};
use claw_tests::{binary, wait_for, Cluster};
use serde_json::Value;
use tonic::transport::Channel;

async fn submit(cl: &mut ClawClient<Channel>, command: Command) -> Result<v1::SubmitResponse> {
    let req = v1::SubmitRequest { command_id: String::new(), correlation_id: String::new(), command: Some(command) };
    Ok(cl.submit(req).await?.into_inner())
}

fn node(name: &str, gpus: u32) -> Command {
    Command::RegisterNode(v1::RegisterNode {
        node: name.into(),
        cpus: 32,
        memory_mb: 256_000,
        gpus: (0..gpus)
            .map(|i| v1::GpuInfo { index: i, uuid: format!("GPU-{name}-{i}"), model: "H100".into(), memory_mb: 81_559 })
            .collect(),
        ..Default::default()
    })
}

fn workload(id: &str, gpus: u32) -> Command {
    Command::SubmitWorkload(v1::SubmitWorkload {
        workload_id: id.into(),
        spec: Some(v1::WorkloadSpec { name: id.into(), image: "busybox".into(), gpus, ..Default::default() }),
    })
}

async fn get(cl: &mut ClawClient<Channel>, kind: &str, id: &str) -> Result<Value> {
    let req = v1::GetObjectRequest { kind: kind.into(), id: id.into(), consistency: 0 };
    Ok(serde_json::from_str(&cl.get_object(req).await?.into_inner().json)?)
}

/// Waits until the workload row satisfies `ok`, and returns it.
async fn wait_workload(cl: &ClawClient<Channel>, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
    wait_for(&format!("workload {id} {what}"), Duration::from_secs(20), || {
        let mut cl = cl.clone();
        let ok = &ok;
        async move { get(&mut cl, "workload", id).await.ok().filter(|w| ok(w)) }
    })
    .await
}

fn placed(w: &Value) -> bool {
    w["status"] == "placed"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_are_placed_explained_and_kept_off_drained_nodes() -> Result<()> {
    let c = Cluster::start(1, &[("CLAW_SCHEDULER_NODE_TIMEOUT_MS", "600000")]).await?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let mut cl = c.members[0].client().await?;
    submit(&mut cl, node("gpu-a", 4)).await?;
    submit(&mut cl, node("gpu-b", 2)).await?;

    submit(&mut cl, workload("w-1", 2)).await?;
    let w1 = wait_workload(&cl, "w-1", "placed", placed).await.with_context(|| c.logs())?;
    submit(&mut cl, workload("w-2", 1)).await?;
    let w2 = wait_workload(&cl, "w-2", "placed", placed).await?;
    for (w, gpus) in [(&w1, 2), (&w2, 1)] {
        let uuids: Vec<&str> = w["gpu_uuids"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
        let node = w["node"].as_str().unwrap();
        ensure!(uuids.len() == gpus, "{w}");
        ensure!(uuids.iter().all(|u| u.starts_with(&format!("GPU-{node}-"))), "GPUs of another node: {w}");
        ensure!(w["placement"]["chosen"] == node, "{w}");
    }
    // Bin-packing: the 2-GPU job fills gpu-b exactly, the 1-GPU job goes to gpu-a.
    ensure!(w1["node"] == "gpu-b" && w2["node"] == "gpu-a", "{w1}\n{w2}");
    let a = get(&mut cl, "node", "gpu-a").await?;
    ensure!(a["allocated_gpus"].as_object().unwrap().len() == 1 && a["ready"] == true, "{a}");

    // Bigger than any node: stays Pending, and says which filter failed where.
    submit(&mut cl, workload("w-big", 16)).await?;
    let big = wait_workload(&cl, "w-big", "explained", |w| w["unschedulable"].is_object()).await?;
    ensure!(big["status"] == "pending", "{big}");
    let considered = big["unschedulable"]["considered"].as_array().unwrap();
    ensure!(considered.len() == 2, "{big}");
    ensure!(considered.iter().all(|v| v["failed_filter"] == "gpu_count"), "{big}");
    let out = std::process::Command::new(binary("clawctl"))
        .args(["--server", &c.members[0].addr, "workload", "explain", "w-big"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success() && text.contains("failed gpu_count"), "explain said: {text}");

    // Drain gpu-a: the next job has room only there, so it waits.
    submit(&mut cl, Command::RequestNodeDrain(v1::RequestNodeDrain { node: "gpu-a".into(), reason: "ecc".into() }))
        .await?;
    submit(&mut cl, workload("w-3", 1)).await?;
    let w3 = wait_workload(&cl, "w-3", "explained", |w| w["unschedulable"].is_object()).await?;
    let verdicts = &w3["unschedulable"]["considered"];
    let filter_of =
        |n: &str| verdicts.as_array().unwrap().iter().find(|v| v["node"] == n).map(|v| v["failed_filter"].clone());
    ensure!(filter_of("gpu-a") == Some("draining".into()), "{w3}");
    ensure!(filter_of("gpu-b") == Some("gpu_count".into()), "{w3}");

    // Freeing gpu-b lets it run there, never on the drained node.
    submit(&mut cl, Command::CancelWorkload(v1::CancelWorkload { workload: "w-1".into(), reason: String::new() }))
        .await?;
    let w3 = wait_workload(&cl, "w-3", "placed", placed).await?;
    ensure!(w3["node"] == "gpu-b", "{w3}");
    ensure!(w3["unschedulable"].is_null(), "{w3}");
    let b = get(&mut cl, "node", "gpu-b").await?;
    ensure!(b["allocated_gpus"].as_object().unwrap().values().all(|w| w == "w-3"), "w-1's GPUs were freed: {b}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_marked_not_ready_and_its_work_requeued() -> Result<()> {
    let c = Cluster::start(1, &[("CLAW_SCHEDULER_NODE_TIMEOUT_MS", "1500")]).await?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let mut cl = c.members[0].client().await?;
    submit(&mut cl, node("gpu-a", 1)).await?;
    // The node is alive until the workload is placed (a loaded machine may
    // take longer than the short timeout to get there)...
    let beating = {
        let mut cl = cl.clone();
        tokio::spawn(async move {
            loop {
                let _ = submit(&mut cl, Command::Heartbeat(v1::Heartbeat { node: "gpu-a".into() })).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    submit(&mut cl, workload("w-1", 1)).await?;
    let first = wait_workload(&cl, "w-1", "placed", placed).await;
    beating.abort();
    first.with_context(|| c.logs())?;

    // ...then goes silent: the node monitor declares the node gone and requeues.
    let w = wait_workload(&cl, "w-1", "requeued", |w| w["lost_count"] == 1).await.with_context(|| c.logs())?;
    ensure!(w["status"] == "pending" && w["gpu_uuids"].as_array().unwrap().is_empty(), "{w}");
    let n = get(&mut cl, "node", "gpu-a").await?;
    ensure!(n["ready"] == false && n["not_ready_reason"].as_str().unwrap().contains("no heartbeat"), "{n}");

    // A heartbeat brings it back, and the workload is placed again.
    submit(&mut cl, Command::Heartbeat(v1::Heartbeat { node: "gpu-a".into() })).await?;
    wait_workload(&cl, "w-1", "placed again", placed).await?;
    Ok(())
}
