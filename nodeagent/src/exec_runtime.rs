use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rustix::process::{kill_process_group, Pid, Signal};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::runtime::{Exit, Found, Launch, Output, Runtime};
use crate::{Error, OutputStream, Result};

/// The exit code reported for a workload whose process this agent lost.
pub const EXIT_LOST: i32 = -1;

/// Runs workloads as local child processes, for machines without Docker
/// (like Nomad's `raw_exec`): `spec.command` runs directly, each workload in
/// its own process group and working directory, with `spec.env` and, when
/// GPUs were assigned, `CUDA_VISIBLE_DEVICES`/`NVIDIA_VISIBLE_DEVICES` set to
/// their UUIDs. `spec.image` is ignored and there is no isolation.
///
/// A child process cannot be re-attached by a new agent process. Each start
/// is recorded in `<data-dir>/exec/<workload>.json`; a restarted agent that
/// finds such a record kills the old process group if it still runs (the
/// record holds the process start time, so a reused pid is left alone) and
/// reports the workload as exited with code [`EXIT_LOST`] and the reason.
pub struct ExecRuntime {
    dir: PathBuf,
    live: Mutex<HashMap<String, Live>>,
}

struct Live {
    pid: i32,
    child: Option<Child>,
}

/// What is kept on disk about a started process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProcessRecord {
    workload_id: String,
    node: String,
    pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: tells a reused pid apart.
    start_ticks: u64,
}

fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Exit::code(c),
        (None, Some(sig)) => Exit::code(128 + sig),
        (None, None) => Exit::code(EXIT_LOST),
    }
}

impl ExecRuntime {
    pub fn new(data_dir: &Path) -> Result<ExecRuntime> {
        let dir = data_dir.join("exec");
        std::fs::create_dir_all(&dir).map_err(|e| Error::exec(format!("cannot create {}: {e}", dir.display())))?;
        Ok(ExecRuntime { dir, live: Mutex::new(HashMap::new()) })
    }

    fn record_path(&self, workload_id: &str) -> PathBuf {
        self.dir.join(format!("{workload_id}.json"))
    }

    fn work_dir(&self, workload_id: &str) -> PathBuf {
        self.dir.join(workload_id)
    }

    fn read_record(&self, workload_id: &str) -> Option<ProcessRecord> {
        let bytes = std::fs::read(self.record_path(workload_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// A workload started by an earlier agent process: stop what is left of
    /// it and say so.
    fn lost(&self, rec: &ProcessRecord) -> Exit {
        let alive = start_ticks(rec.pid) == Some(rec.start_ticks);
        let message = if alive {
            if let Some(pid) = Pid::from_raw(rec.pid) {
                let _ = kill_process_group(pid, Signal::KILL);
            }
            "the node agent restarted while this workload ran; the exec runtime cannot re-attach to a process, \
             so the process was killed and its exit status is unknown"
        } else {
            "the node agent restarted and this workload's process had ended meanwhile; \
             the exec runtime cannot learn its exit status"
        };
        Exit { exit_code: EXIT_LOST, oom_killed: false, message: Some(message.to_string()) }
    }

    fn launch_error(launch: &Launch, reason: String, exit_code: i32) -> Error {
        Error::Launch { workload_id: launch.workload_id.clone(), reason, exit_code }
    }
}

async fn pump(mut r: impl AsyncRead + Unpin, stream: OutputStream, tx: mpsc::Sender<Output>) {
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(Output { stream, bytes: buf[..n].to_vec() }).await.is_err() {
                    break;
                }
            }
        }
    }
}

impl Runtime for ExecRuntime {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn list(&self, node: &str) -> BoxFuture<'_, Result<Vec<(String, Found)>>> {
        let node = node.to_string();
        async move {
            let mut out = Vec::new();
            let entries = std::fs::read_dir(&self.dir).map_err(Error::exec)?;
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".json") else { continue };
                if self.live.lock().expect("exec map").contains_key(id) {
                    out.push((id.to_string(), Found::Running));
                    continue;
                }
                match self.read_record(id) {
                    Some(rec) if rec.node == node => out.push((id.to_string(), Found::Exited(self.lost(&rec)))),
                    _ => {}
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn find<'a>(&'a self, workload_id: &'a str) -> BoxFuture<'a, Result<Option<Found>>> {
        async move {
            if self.live.lock().expect("exec map").contains_key(workload_id) {
                return Ok(Some(Found::Running));
            }
            Ok(self.read_record(workload_id).map(|rec| Found::Exited(self.lost(&rec))))
        }
        .boxed()
    }

    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<()>> {
        async move {
            let id = &launch.workload_id;
            if self.live.lock().expect("exec map").contains_key(id) || self.record_path(id).exists() {
                return Ok(());
            }
            let Some((program, args)) = launch.spec.command.split_first() else {
                return Err(Self::launch_error(
                    launch,
                    "the exec runtime needs a command (it has no image entrypoint to fall back on)".into(),
                    127,
                ));
            };
            let work = self.work_dir(id);
            std::fs::create_dir_all(&work)
                .map_err(|e| Error::exec(format!("cannot create {}: {e}", work.display())))?;
            let mut cmd = Command::new(program);
            cmd.args(args)
                .envs(&launch.spec.env)
                .env("CLAW_WORKLOAD_ID", id)
                .current_dir(&work)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            if !launch.gpu_uuids.is_empty() {
                let devices = launch.gpu_uuids.join(",");
                cmd.env("CUDA_VISIBLE_DEVICES", &devices).env("NVIDIA_VISIBLE_DEVICES", &devices);
            }
            let child = cmd.spawn().map_err(|e| {
                let code = match e.kind() {
                    std::io::ErrorKind::NotFound => 127,
                    std::io::ErrorKind::PermissionDenied => 126,
                    _ => 125,
                };
                Self::launch_error(launch, format!("cannot run {program:?}: {e}"), code)
            })?;
            let pid = child.id().map(|p| p as i32).unwrap_or(0);
            let rec = ProcessRecord {
                workload_id: id.clone(),
                node: launch.node.clone(),
                pid,
                start_ticks: start_ticks(pid).unwrap_or(0),
            };
            std::fs::write(self.record_path(id), serde_json::to_vec(&rec).expect("record serializes"))
                .map_err(|e| Error::exec(format!("cannot write the process record: {e}")))?;
            self.live.lock().expect("exec map").insert(id.clone(), Live { pid, child: Some(child) });
            Ok(())
        }
        .boxed()
    }

    fn wait<'a>(
        &'a self,
        workload_id: &'a str,
        _from_start: bool,
        output: mpsc::Sender<Output>,
    ) -> BoxFuture<'a, Result<Exit>> {
        async move {
            let child = self.live.lock().expect("exec map").get_mut(workload_id).and_then(|l| l.child.take());
            let Some(mut child) = child else {
                // Not ours to wait on: started by an earlier agent process.
                return match self.read_record(workload_id) {
                    Some(rec) => Ok(self.lost(&rec)),
                    None => Err(Error::exec(format!("no process is known for workload {workload_id}"))),
                };
            };
            let mut pumps = Vec::new();
            if let Some(out) = child.stdout.take() {
                pumps.push(tokio::spawn(pump(out, OutputStream::Stdout, output.clone())));
            }
            if let Some(err) = child.stderr.take() {
                pumps.push(tokio::spawn(pump(err, OutputStream::Stderr, output.clone())));
            }
            drop(output);
            let status = child.wait().await;
            for p in pumps {
                // Grandchildren may hold the pipes open; do not wait for them forever.
                let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
            }
            self.live.lock().expect("exec map").remove(workload_id);
            status.map(exit_of).map_err(Error::exec)
        }
        .boxed()
    }

    fn stop<'a>(&'a self, workload_id: &'a str, grace: Duration) -> BoxFuture<'a, Result<()>> {
        async move {
            let pid = self.live.lock().expect("exec map").get(workload_id).map(|l| l.pid);
            let Some(pid) = pid.and_then(Pid::from_raw) else { return Ok(()) };
            let _ = kill_process_group(pid, Signal::TERM);
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline {
                if !self.live.lock().expect("exec map").contains_key(workload_id) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = kill_process_group(pid, Signal::KILL);
            Ok(())
        }
        .boxed()
    }

    fn remove<'a>(&'a self, workload_id: &'a str) -> BoxFuture<'a, Result<()>> {
        async move {
            let _ = std::fs::remove_dir_all(self.work_dir(workload_id));
            match std::fs::remove_file(self.record_path(workload_id)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::exec(e)),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use claw_commands::WorkloadSpec;

    use super::*;

    fn launch(id: &str, command: &[&str]) -> Launch {
        Launch {
            workload_id: id.into(),
            node: "n1".into(),
            spec: WorkloadSpec {
                name: id.into(),
                image: "ignored".into(),
                command: command.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            gpu_uuids: vec![],
        }
    }

    async fn run_to_exit(rt: &ExecRuntime, id: &str) -> (Exit, String) {
        let (tx, mut rx) = mpsc::channel(16);
        let exit = rt.wait(id, true, tx).await.unwrap();
        let mut out = String::new();
        while let Ok(o) = rx.try_recv() {
            out.push_str(&String::from_utf8_lossy(&o.bytes));
        }
        (exit, out)
    }

    #[tokio::test]
    async fn runs_a_command_with_output_and_exit_code_once() {
        let dir = tempfile::tempdir().unwrap();
        let rt = ExecRuntime::new(dir.path()).unwrap();
        let l = launch("w-1", &["sh", "-c", "echo hello; echo oops >&2; exit 3"]);
        rt.start(&l).await.unwrap();
        rt.start(&l).await.unwrap(); // idempotent: still one process
        let (exit, out) = run_to_exit(&rt, "w-1").await;
        assert_eq!(exit, Exit::code(3));
        assert!(out.contains("hello") && out.contains("oops"), "{out}");
        rt.remove("w-1").await.unwrap();
        assert_eq!(rt.find("w-1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_missing_program_is_a_launch_error_127() {
        let dir = tempfile::tempdir().unwrap();
        let rt = ExecRuntime::new(dir.path()).unwrap();
        match rt.start(&launch("w-2", &["/does/not/exist"])).await {
            Err(Error::Launch { exit_code: 127, reason, .. }) => assert!(reason.contains("/does/not/exist")),
            other => panic!("expected a launch error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn stop_terminates_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let rt = ExecRuntime::new(dir.path()).unwrap();
        rt.start(&launch("w-3", &["sh", "-c", "sleep 30"])).await.unwrap();
        let (tx, _rx) = mpsc::channel(16);
        let (exit, ()) = tokio::join!(rt.wait("w-3", true, tx), async {
            rt.stop("w-3", Duration::from_secs(5)).await.unwrap();
        });
        assert_eq!(exit.unwrap(), Exit::code(128 + 15));
    }

    #[tokio::test]
    async fn a_restarted_agent_reports_the_old_process_as_lost_and_kills_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = ExecRuntime::new(dir.path()).unwrap();
        first.start(&launch("w-4", &["sleep", "30"])).await.unwrap();
        let pid = first.live.lock().unwrap()["w-4"].pid;
        // A new agent process: same data dir, empty memory.
        let second = ExecRuntime::new(dir.path()).unwrap();
        let found = second.list("n1").await.unwrap();
        assert_eq!(found.len(), 1);
        match &found[0].1 {
            Found::Exited(e) => {
                assert_eq!(e.exit_code, EXIT_LOST);
                assert!(e.message.as_deref().unwrap().contains("cannot re-attach"));
            }
            other => panic!("expected exited, got {other:?}"),
        }
        // The old process is gone (reaped by the first runtime's child handle).
        let mut child = first.live.lock().unwrap().get_mut("w-4").unwrap().child.take().unwrap();
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "pid {pid} should have been killed");
    }
}
