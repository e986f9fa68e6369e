//! The built `clawd` and `clawctl` binaries, driven the way a user drives them.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use claw_tests::{Cluster, Ctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_submits_lists_cancels_and_reads_history() -> Result<()> {
    let c = Cluster::start(1, &[]).await?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let ctl = Ctl::new(&c.members[0].addr);

    let status = ctl.ok(&["status"])?;
    ensure!(status.to_lowercase().contains("leader"), "status output: {status}");

    let out = ctl.ok(&[
        "workload",
        "submit",
        "--name",
        "train-1",
        "--image",
        "busybox",
        "--gpus",
        "2",
        "--gpu-model",
        "H100",
        "--",
        "sh",
        "-c",
        "echo hi",
    ])?;
    ensure!(out.contains("submitted"), "submit output: {out}");

    let list = ctl.json(&["workload", "list"])?;
    let items = list.as_array().context("workload list -o json is an array")?;
    ensure!(items.len() == 1, "one workload: {list}");
    ensure!(items[0]["spec"]["name"] == "train-1" && items[0]["status"] == "pending", "{list}");
    ensure!(items[0]["submitted_by"] == "user:alice", "the actor is the one stated with --as: {list}");
    ensure!(items[0]["spec"]["command"] == serde_json::json!(["sh", "-c", "echo hi"]), "{list}");

    let got = ctl.json(&["workload", "get", "train-1"])?;
    ensure!(got["spec"]["gpus"] == 2 && got["spec"]["gpu_model"] == "H100", "{got}");

    // Bad input is refused with a message naming the field, and nothing is created.
    let err = ctl.fails(&["workload", "submit", "--name", "Bad Name", "--image", "busybox"])?;
    ensure!(err.contains("spec.name"), "error names the field: {err}");
    let err = ctl.fails(&["workload", "submit", "--name", "train-1", "--image", "busybox"])?;
    ensure!(err.contains("already active"), "duplicate active name: {err}");
    let err = ctl.fails(&["workload", "cancel", "nope"])?;
    ensure!(err.contains("not found"), "{err}");

    ctl.ok(&["workload", "cancel", "train-1", "--reason", "wrong image"])?;
    let got = ctl.json(&["workload", "get", "train-1"])?;
    ensure!(got["status"] == "cancelled", "{got}");
    ctl.fails(&["workload", "cancel", "train-1"])?;

    // The history holds the intents, the rejections and the cancel, with a valid chain.
    let events = ctl.ok(&["events", "--from", "1"])?;
    for kind in ["WorkloadSubmitted", "CommandRejected", "WorkloadCancelRequested"] {
        ensure!(events.contains(kind), "events lists {kind}:\n{events}");
    }
    let verify = ctl.ok(&["events", "verify"])?;
    ensure!(verify.contains("OK"), "{verify}");
    let yaml = ctl.ok(&["-o", "yaml", "workload", "list"])?;
    ensure!(yaml.contains("train-1"), "{yaml}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_are_approved_once_and_stale_ones_are_refused() -> Result<()> {
    let c = Cluster::start(1, &[]).await?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let ctl = Ctl::new(&c.members[0].addr);

    ctl.ok(&["workload", "submit", "--name", "job-a", "--image", "busybox", "--id", "w-a"])?;
    let p1 = ctl.json(&["proposal", "create", "--cancel-workload", "w-a", "--reason", "over budget", "--id", "p-1"])?;
    ensure!(p1.to_string().contains("p-1"), "{p1}");
    ctl.ok(&["proposal", "create", "--cancel-workload", "w-a", "--reason", "same, later", "--id", "p-2"])?;

    ctl.ok(&["proposal", "approve", "p-1", "--comment", "ok"])?;
    let w = ctl.json(&["workload", "get", "w-a"])?;
    ensure!(w["status"] == "cancelled", "approval carried out the action: {w}");
    let err = ctl.fails(&["proposal", "approve", "p-1"])?;
    ensure!(err.contains("already Approved"), "approving twice: {err}");

    // p-2 was made against a basis that is now stale.
    let err = ctl.fails(&["proposal", "approve", "p-2"])?;
    ensure!(err.contains("superseded"), "stale basis: {err}");
    let p2 = ctl.json(&["proposal", "get", "p-2"])?;
    ensure!(p2["status"] == "superseded", "{p2}");
    let p1 = ctl.json(&["proposal", "get", "p-1"])?;
    ensure!(p1["decided_by"] == "user:alice", "{p1}");
    Ok(())
}
