//! Test harness for multi-member and end-to-end tests: starts real `clawd`
//! processes (the built binary) with their own data directories and ports,
//! kills them with SIGKILL, restarts them from disk, and talks to them over
//! the public gRPC API.
//!
//! It is test-only code; nothing in the product depends on it.

mod ctl;
pub mod docker;
pub mod faults;
pub mod linearizability;

pub use ctl::Ctl;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use claw_commands::EventRecord;
use claw_proto::v1::{self, claw_client::ClawClient};
use tonic::transport::Channel;

/// Directory holding the built binaries (`clawd`, `clawctl`), found next to
/// the test executable (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// Path of a built binary; fails loudly when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (the README's test command does)",
        p.display()
    );
    p
}

/// A free port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub struct Member {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Member {
    /// Starts `clawd` for this member; `join` members wait to be added.
    pub fn spawn(&mut self, join: bool) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path)?;
        let mut cmd = Command::new(binary("clawd"));
        cmd.arg("--id")
            .arg(self.id.to_string())
            .arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("CLAW_LOG_LEVEL", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if join {
            cmd.arg("--join");
        }
        self.child = Some(cmd.spawn().context("spawning clawd")?);
        Ok(())
    }

    /// SIGKILL: no shutdown path runs, exactly like a crash or power loss of the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit: a clean shutdown.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("the member is not running")?;
        let sent = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        ensure!(sent.success(), "kill -TERM {} failed", c.id());
        Ok(c.wait()?)
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut().context("the member is not running")?;
        loop {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("member {} still runs after {timeout:?}", self.id);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub async fn client(&self) -> Result<ClawClient<Channel>> {
        connect(&self.addr).await
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn connect(addr: &str) -> Result<ClawClient<Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(ClawClient::new(ch))
}

/// Polls `f` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
}

impl Cluster {
    /// Member slots 1..=n with ports and data dirs, none started.
    pub fn new(n: u64, env: &[(&str, &str)]) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let members = (1..=n)
            .map(|id| Member {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("member-{id}")),
                log_path: dir.path().join(format!("member-{id}.log")),
                env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                child: None,
            })
            .collect();
        Ok(Cluster { dir, members })
    }

    /// Starts member 1 as a single-member cluster, then adds the others as
    /// learners and promotes them to voters, as an operator would.
    pub async fn start(n: u64, env: &[(&str, &str)]) -> Result<Cluster> {
        let mut c = Cluster::new(n, env)?;
        c.members[0].spawn(false)?;
        c.wait_leader(Duration::from_secs(20)).await?;
        for i in 1..c.members.len() {
            c.members[i].spawn(true)?;
            let (id, addr) = (c.members[i].id, c.members[i].addr.clone());
            wait_for("joining member to listen", Duration::from_secs(20), || {
                let addr = addr.clone();
                async move { connect(&addr).await.ok() }
            })
            .await?;
            let mut cl = c.members[0].client().await?;
            cl.add_member(v1::AddMemberRequest { id, addr: addr.clone(), voter: false }).await?;
            cl.add_member(v1::AddMemberRequest { id, addr, voter: true }).await?;
        }
        Ok(c)
    }

    pub fn member(&mut self, id: u64) -> &mut Member {
        &mut self.members[(id - 1) as usize]
    }

    pub async fn status(&self, id: u64) -> Result<v1::ClusterStatusResponse> {
        let mut cl = self.members[(id - 1) as usize].client().await?;
        Ok(cl.cluster_status(v1::ClusterStatusRequest {}).await?.into_inner())
    }

    /// The leader id, once a running member reports one that is itself running.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        wait_for("a leader", timeout, || async {
            for m in self.members.iter().filter(|m| m.is_running()) {
                if let Ok(s) = self.status(m.id).await {
                    if s.leader_id != 0 && s.leader_id == s.member_id {
                        return Some(s.leader_id);
                    }
                }
            }
            None
        })
        .await
    }

    /// Waits until every running member has applied the same last seq.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<u64> {
        wait_for("all running members to reach the same last seq", timeout, || async {
            let mut seqs = Vec::new();
            for m in self.members.iter().filter(|m| m.is_running()) {
                seqs.push(self.status(m.id).await.ok()?.last_seq);
            }
            let first = *seqs.first()?;
            (first > 0 && seqs.iter().all(|s| *s == first)).then_some(first)
        })
        .await
    }

    pub fn logs(&self) -> String {
        self.members.iter().map(|m| format!("--- member {} ---\n{}", m.id, m.log_tail())).collect::<Vec<_>>().join("\n")
    }
}

/// Reads every stored event of one member (stale read: that member's own store).
pub async fn all_events(addr: &str) -> Result<Vec<EventRecord>> {
    let mut cl = connect(addr).await?;
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let resp = cl
            .list_events(v1::ListEventsRequest {
                from_seq: from,
                to_seq: 0,
                limit: 5000,
                filter: None,
                consistency: v1::Consistency::Stale as i32,
            })
            .await?
            .into_inner();
        if resp.events.is_empty() {
            break;
        }
        for e in &resp.events {
            out.push(claw_proto::event_from_pb(e)?);
        }
        from = out.last().map(|r| r.seq + 1).unwrap_or(from);
        if from > resp.last_seq {
            break;
        }
    }
    Ok(out)
}

pub fn intent(text: &str, command_id: &str) -> v1::SubmitRequest {
    v1::SubmitRequest {
        command_id: command_id.to_string(),
        correlation_id: String::new(),
        command: Some(v1::submit_request::Command::StateIntent(v1::StateIntent { text: text.to_string() })),
    }
}
