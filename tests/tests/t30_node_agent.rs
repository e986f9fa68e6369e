//! The node agent end to end: real `clawd`, real `clawnode`, and the real
//! Docker engine of this machine. A tiny image is built without a registry
//! (`docker import` of a rootfs holding Debian's static busybox). Where
//! Docker or busybox is missing, the Docker tests say loudly what they
//! skipped and return; the exec-runtime test needs neither.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use claw_commands::Event;
use claw_proto::v1::{self, submit_request::Command as Pb};
use claw_tests::{all_events, binary, connect, wait_for, Cluster};

const IMAGE: &str = "claw-test-busybox:latest";
const WAIT: Duration = Duration::from_secs(60);

/// A `clawnode` process with its own data directory and log file.
struct Node {
    name: String,
    log_path: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path, name: &str, control_plane: &str, extra: &[&str]) -> Node {
        let mut args: Vec<String> =
            ["--control-plane", control_plane, "--name", name, "--heartbeat-interval", "1s", "--data-dir"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.push(dir.join(format!("{name}-data")).display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        Node { name: name.into(), log_path: dir.join(format!("{name}.log")), args, child: None }
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path)?;
        let child = Command::new(binary("clawnode"))
            .args(&self.args)
            .env("CLAW_NODE_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning clawnode")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, like a crash: no shutdown path runs.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        // Leave no containers behind, whatever the test did.
        let _ = docker(&["ps", "-aq", "--filter", &format!("label=claw.node={}", self.name)]).map(|ids| {
            for id in ids.split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
        });
    }
}

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output().context("running docker")?;
    ensure!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the test image once per machine; `None` (with a loud message)
/// when Docker or busybox is not there.
fn test_image(test: &str) -> Result<Option<&'static str>> {
    // Tests run in parallel: one import at a time, so none leaves an untagged copy.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        eprintln!(
            "\n*** SKIPPED {test}: the Docker engine is not reachable ({e}).\n\
             *** Nothing about the Docker runtime was tested. Start dockerd to run it.\n"
        );
        return Ok(None);
    }
    if docker(&["image", "inspect", IMAGE]).is_ok() {
        return Ok(Some(IMAGE));
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().map(Path::new).find(|p| p.exists());
    let Some(busybox) = busybox else {
        eprintln!(
            "\n*** SKIPPED {test}: /bin/busybox is missing, so the test image cannot be built.\n\
             *** Install it with scripts/install-deps (Debian package busybox-static).\n"
        );
        return Ok(None);
    };
    let root = tempfile::tempdir()?;
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(busybox, bin.join("busybox"))?;
    for applet in ["sh", "echo", "sleep", "cat", "ls", "true", "false", "env"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let out = Command::new("docker")
        .args(["import", "-", IMAGE])
        .stdin(tar.stdout.context("tar stdout")?)
        .output()
        .context("running docker import")?;
    ensure!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
    Ok(Some(IMAGE))
}

fn containers_of(workload_id: &str) -> Result<usize> {
    Ok(docker(&["ps", "-aq", "--filter", &format!("label=claw.workload={workload_id}")])?.split_whitespace().count())
}

async fn submit(addr: &str, name: &str, image: &str, command: &[&str]) -> Result<String> {
    let mut c = connect(addr).await?;
    let spec = v1::WorkloadSpec {
        name: name.into(),
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        gpus: 0,
        ..Default::default()
    };
    let r = c
        .submit(v1::SubmitRequest {
            command_id: format!("submit-{name}"),
            correlation_id: String::new(),
            command: Some(Pb::SubmitWorkload(v1::SubmitWorkload { spec: Some(spec), workload_id: String::new() })),
        })
        .await?
        .into_inner();
    Ok(r.object_id)
}

async fn workload(addr: &str, id: &str) -> Option<serde_json::Value> {
    let mut c = connect(addr).await.ok()?;
    let r = c
        .get_object(v1::GetObjectRequest {
            kind: "workload".into(),
            id: id.into(),
            consistency: v1::Consistency::Linearizable as i32,
        })
        .await
        .ok()?;
    serde_json::from_str(&r.into_inner().json).ok()
}

async fn wait_status(addr: &str, id: &str, status: &str) -> Result<serde_json::Value> {
    let what = format!("workload {id} to be {status}");
    wait_for(&what, WAIT, || async {
        let w = workload(addr, id).await?;
        w["status"].as_str()?.eq_ignore_ascii_case(status).then_some(w)
    })
    .await
}

async fn logs_of(addr: &str, id: &str) -> Result<String> {
    Ok(all_events(addr)
        .await?
        .into_iter()
        .filter_map(|r| match r.event {
            Event::WorkloadLogChunk { workload_id, data, .. } if workload_id == id => Some(data),
            _ => None,
        })
        .collect())
}

async fn count_started(addr: &str, id: &str) -> Result<usize> {
    Ok(all_events(addr)
        .await?
        .iter()
        .filter(|r| matches!(&r.event, Event::WorkloadStarted { workload_id, .. } if workload_id == id))
        .count())
}

async fn wait_registered(addr: &str, node: &Node) -> Result<()> {
    wait_for(&format!("node {} to register", node.name), WAIT, || async {
        let mut c = connect(addr).await.ok()?;
        c.get_object(v1::GetObjectRequest {
            kind: "node".into(),
            id: node.name.clone(),
            consistency: v1::Consistency::Linearizable as i32,
        })
        .await
        .ok()
    })
    .await
    .with_context(|| node.log())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_streams_its_output_and_reports_its_exit_code() -> Result<()> {
    let Some(image) = test_image("a_container_runs_streams_its_output_and_reports_its_exit_code")? else {
        return Ok(());
    };
    let c = Cluster::start(1, &[]).await?;
    let addr = c.members[0].addr.clone();
    let mut node = Node::new(c.dir.path(), "docker-a", &addr, &["--runtime", "docker"]);
    node.spawn()?;
    wait_registered(&addr, &node).await?;

    let id = submit(&addr, "hello", image, &["sh", "-c", "echo hello; exit 3"]).await?;
    let w = wait_status(&addr, &id, "failed").await.with_context(|| node.log())?;
    ensure!(w["exit_code"] == 3, "exit code 3 expected: {w}");
    let logs = wait_for("the output to arrive", WAIT, || async {
        logs_of(&addr, &id).await.ok().filter(|l| l.contains("hello"))
    })
    .await?;
    ensure!(logs.contains("hello"), "{logs}");
    wait_for("the container to be removed", WAIT, || async { (containers_of(&id).ok()? == 0).then_some(()) }).await?;

    // An image that is not on the node fails at once, with the reason in the logs.
    let id = submit(&addr, "no-image", "claw-test-absent:none", &["true"]).await?;
    let w = wait_status(&addr, &id, "failed").await.with_context(|| node.log())?;
    ensure!(w["exit_code"] == 125, "exit code 125 expected: {w}");
    let logs = wait_for("the launch error in the logs", WAIT, || async {
        logs_of(&addr, &id).await.ok().filter(|l| l.contains("not present"))
    })
    .await?;
    ensure!(logs.contains("claw-test-absent:none"), "{logs}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_reattaches_and_nothing_runs_twice() -> Result<()> {
    let Some(image) = test_image("a_killed_agent_reattaches_and_nothing_runs_twice")? else {
        return Ok(());
    };
    let c = Cluster::start(1, &[]).await?;
    let addr = c.members[0].addr.clone();
    let mut node = Node::new(c.dir.path(), "docker-b", &addr, &["--runtime", "docker", "--stop-grace", "2s"]);
    node.spawn()?;
    wait_registered(&addr, &node).await?;

    let id = submit(&addr, "sleeper", image, &["sleep", "30"]).await?;
    wait_status(&addr, &id, "running").await.with_context(|| node.log())?;
    ensure!(containers_of(&id)? == 1);

    node.kill();
    node.spawn()?;
    wait_for("the restarted agent to re-attach", WAIT, || async {
        node.log().contains("re-attaching to the running workload").then_some(())
    })
    .await
    .with_context(|| node.log())?;
    ensure!(containers_of(&id)? == 1, "exactly one container for {id}");
    ensure!(count_started(&addr, &id).await? == 1, "exactly one WorkloadStarted for {id}");
    let w = workload(&addr, &id).await.context("workload")?;
    ensure!(w["status"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("running")), "{w}");

    let mut cl = connect(&addr).await?;
    cl.submit(v1::SubmitRequest {
        command_id: format!("cancel-{id}"),
        correlation_id: String::new(),
        command: Some(Pb::CancelWorkload(v1::CancelWorkload { workload: id.clone(), reason: "test".into() })),
    })
    .await?;
    wait_status(&addr, &id, "cancelled").await.with_context(|| node.log())?;
    wait_for("the container to be removed", WAIT, || async { (containers_of(&id).ok()? == 0).then_some(()) }).await?;
    ensure!(count_started(&addr, &id).await? == 1);
    // Shown with --nocapture: the agent's own account of the story.
    eprintln!("--- clawnode log ---\n{}", node.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exec_runtime_runs_a_process_without_docker() -> Result<()> {
    let c = Cluster::start(1, &[]).await?;
    let addr = c.members[0].addr.clone();
    let mut node = Node::new(c.dir.path(), "exec-a", &addr, &["--runtime", "exec"]);
    node.spawn()?;
    wait_registered(&addr, &node).await?;

    let id = submit(&addr, "hello-exec", "ignored", &["sh", "-c", "echo hello from exec; exit 3"]).await?;
    let w = wait_status(&addr, &id, "failed").await.with_context(|| node.log())?;
    ensure!(w["exit_code"] == 3, "{w}");
    let logs = wait_for("the output to arrive", WAIT, || async {
        logs_of(&addr, &id).await.ok().filter(|l| l.contains("hello from exec"))
    })
    .await?;
    if !logs.contains("hello from exec") {
        bail!("{logs}");
    }
    Ok(())
}

/// `clawctl node check` against a real agent: on a machine without NVIDIA
/// GPUs it runs on wgpu adapter 0, which is lavapipe (`llvmpipe`) where
/// scripts/install-deps put mesa-vulkan-drivers. A restarted agent does not
/// answer the same request again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_check_runs_the_gpu_health_check_on_the_agent() -> Result<()> {
    let c = Cluster::start(1, &[]).await?;
    let addr = c.members[0].addr.clone();
    let mut node = Node::new(c.dir.path(), "check-a", &addr, &["--runtime", "exec"]);
    node.spawn()?;
    wait_registered(&addr, &node).await?;

    let ctl = claw_tests::Ctl::new(&addr);
    let (ok, out, err) = {
        let ctl = claw_tests::Ctl::new(&addr);
        tokio::task::spawn_blocking(move || ctl.run(&["node", "check", "check-a", "--timeout", "300s"])).await??
    };
    ensure!(ok, "clawctl node check failed:\n{out}\n{err}\nclawnode log:\n{}", node.log());
    ensure!(out.contains("DEVICE") && out.contains("GFLOP/S") && out.contains("CHECKSUM"), "{out}");
    ensure!(out.contains("llvmpipe") && out.contains("pass"), "expected a passing lavapipe run:\n{out}");
    let get = tokio::task::spawn_blocking(move || ctl.ok(&["node", "get", "check-a"])).await??;
    ensure!(get.contains("health check:") && get.contains("pass 1/1 devices"), "{get}");

    let checked = |events: &[claw_commands::EventRecord]| {
        events.iter().filter(|r| matches!(r.event, Event::GpuHealthChecked { .. })).count()
    };
    ensure!(checked(&all_events(&addr).await?) == 1);
    node.kill();
    node.spawn()?;
    // The agent resumes after the request it already answered: wait until
    // the new process watches, give it longer than a check takes here, and
    // still find one report.
    let log = &node.log_path;
    wait_for("the restarted agent to watch", WAIT, || async {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        (text.matches("watching placements").count() >= 2).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(checked(&all_events(&addr).await?) == 1, "the request ran twice:\n{}", node.log());

    let unknown = claw_tests::Ctl::new(&addr);
    let err = tokio::task::spawn_blocking(move || unknown.fails(&["node", "check", "no-such-node"])).await??;
    ensure!(err.contains("not found"), "{err}");
    Ok(())
}

/// `clawctl` run off the async runtime (it is a blocking child process).
async fn ctl_ok(addr: &str, args: &[&str]) -> Result<String> {
    let ctl = claw_tests::Ctl::new(addr);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || ctl.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())).await?
}

/// Waits for an open `node_lost` incident about `node`; returns its id.
async fn wait_node_lost(addr: &str, node: &str) -> Result<String> {
    wait_for(&format!("a node_lost incident for {node}"), WAIT, || async {
        let out = ctl_ok(addr, &["incident", "list", "-o", "json"]).await.ok()?;
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
        rows.into_iter()
            .find(|r| r["kind"] == "node_lost" && r["subject"] == format!("node:{node}") && r["status"] == "open")
            .and_then(|r| r["id"].as_str().map(str::to_string))
    })
    .await
}

/// A node whose agent dies is lost: clawd marks it NotReady, a detector
/// opens a `node_lost` incident, and an operator resolves it with a root
/// cause. When the same node is lost again, `clawctl incident get` recalls
/// that root cause and resolution ("seen before").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_opens_an_incident_that_is_remembered_next_time() -> Result<()> {
    let c = Cluster::start(1, &[("CLAW_SCHEDULER_NODE_TIMEOUT_MS", "3000")]).await?;
    let addr = c.members[0].addr.clone();
    let mut node = Node::new(c.dir.path(), "flaky-a", &addr, &["--runtime", "exec"]);
    node.spawn()?;
    wait_registered(&addr, &node).await?;

    // No NVIDIA driver here: top lists the node and says it has no GPUs.
    let top = ctl_ok(&addr, &["top", "nodes"]).await?;
    ensure!(top.contains("flaky-a") && top.contains("no node reports any GPU"), "{top}");

    node.kill();
    let first = wait_node_lost(&addr, "flaky-a").await?;
    let out = ctl_ok(
        &addr,
        &["incident", "resolve", &first, "--root-cause", "PSU tripped", "--resolution", "swapped the PSU"],
    )
    .await?;
    ensure!(out.contains("resolved"), "{out}");

    // Back (a heartbeat makes it Ready), then lost again: a new incident
    // that recalls the first.
    node.spawn()?;
    wait_for("flaky-a to be Ready again", WAIT, || async {
        let out = ctl_ok(&addr, &["node", "list"]).await.ok()?;
        out.lines().any(|l| l.starts_with("flaky-a") && l.contains(" Ready")).then_some(())
    })
    .await?;
    node.kill();
    let second = wait_node_lost(&addr, "flaky-a").await?;
    ensure!(second != first, "the resolved incident stays resolved; a new one opens");
    let get = ctl_ok(&addr, &["incident", "get", &second]).await?;
    ensure!(get.contains("seen before:") && get.contains(&first), "{get}");
    ensure!(get.contains("root cause: PSU tripped") && get.contains("resolution: swapped the PSU"), "{get}");
    // The same incidents through SQL.
    let sql = ctl_ok(&addr, &["sql", "SELECT id, status FROM incidents WHERE kind = 'node_lost' ORDER BY opened_seq"])
        .await?;
    ensure!(sql.contains(&first) && sql.contains("resolved") && sql.contains(&second) && sql.contains("open"), "{sql}");
    Ok(())
}
