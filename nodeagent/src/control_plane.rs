use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use claw_commands::WorkloadSpec;
use claw_proto::v1::{self, claw_client::ClawClient, submit_request::Command as Pb};
use serde::Deserialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Streaming};

use crate::{Error, Result};

/// gRPC metadata key naming who sends a request (see `controlplane::api`).
const ACTOR_KEY: &str = "claw-actor";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A workload as the control plane's read model shows it (the JSON row of
/// `GetObject`/`ListObjects` kind `workload`). Only what the agent needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkloadView {
    pub id: String,
    pub spec: WorkloadSpec,
    /// `pending`, `placed`, `running`, `succeeded`, `failed`, `cancelled`, `lost`.
    pub status: String,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub gpu_uuids: Vec<String>,
    #[serde(default)]
    pub cancel_requested: bool,
}

impl WorkloadView {
    pub fn is(&self, status: &str) -> bool {
        self.status.eq_ignore_ascii_case(status)
    }
    pub fn on(&self, node: &str) -> bool {
        self.node.as_deref() == Some(node)
    }
}

/// The agent's connection to the control plane: one lazily connected channel
/// per member address; a request that finds its member unavailable moves
/// the agent on to the next member. Every request carries the actor
/// `node:<name>`. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    actor: MetadataValue<Ascii>,
    members: Vec<(String, Channel)>,
    current: AtomicUsize,
}

impl ControlPlane {
    pub fn new(addrs: &[String], node: &str) -> Result<ControlPlane> {
        let mut members = Vec::new();
        for a in addrs {
            let url = if a.starts_with("http://") { a.clone() } else { format!("http://{a}") };
            let ep = Endpoint::from_shared(url)
                .map_err(|e| Error::Connect { addr: a.clone(), reason: e.to_string() })?
                .connect_timeout(Duration::from_secs(2))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            members.push((a.clone(), ep.connect_lazy()));
        }
        let actor = MetadataValue::try_from(format!("node:{node}"))
            .map_err(|e| Error::Config(format!("node name {node:?} cannot be sent as gRPC metadata: {e}")))?;
        Ok(ControlPlane {
            inner: Arc::new(Inner { node: node.to_string(), actor, members, current: AtomicUsize::new(0) }),
        })
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The member currently used.
    pub fn member(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.members.len();
        &self.inner.members[i].0
    }

    fn client(&self) -> (usize, ClawClient<Channel>) {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.members.len();
        (i, ClawClient::new(self.inner.members[i].1.clone()))
    }

    /// After a failure that says "this member cannot serve you", moves on
    /// to the next member (once per failed member, even with many callers).
    fn note_failure(&self, used: usize, status: &tonic::Status) {
        if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Unknown)
            && self.inner.members.len() > 1
        {
            let _ = self.inner.current.compare_exchange(
                used,
                (used + 1) % self.inner.members.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn request<T>(&self, msg: T, timeout: Option<Duration>) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert(ACTOR_KEY, self.inner.actor.clone());
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        req
    }

    /// Submits one command. `command_id` makes a retry idempotent: the
    /// control plane answers a repeated id with the first outcome.
    async fn submit(&self, command_id: String, command: Pb) -> Result<v1::SubmitResponse> {
        let (i, mut c) = self.client();
        let req = self.request(
            v1::SubmitRequest { command_id, correlation_id: String::new(), command: Some(command) },
            Some(CALL_TIMEOUT),
        );
        match c.submit(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => {
                self.note_failure(i, &s);
                Err(Error::ControlPlane(s))
            }
        }
    }

    pub async fn register(&self, reg: v1::RegisterNode) -> Result<()> {
        self.submit(String::new(), Pb::RegisterNode(reg)).await.map(drop)
    }

    pub async fn heartbeat(&self) -> Result<()> {
        self.submit(String::new(), Pb::Heartbeat(v1::Heartbeat { node: self.inner.node.clone() })).await.map(drop)
    }

    pub async fn observe_gpus(&self, samples: Vec<v1::GpuSample>) -> Result<()> {
        let m = v1::ObserveGpuMetrics { node: self.inner.node.clone(), samples };
        self.submit(String::new(), Pb::ObserveGpuMetrics(m)).await.map(drop)
    }

    pub async fn workload_started(&self, workload_id: &str) -> Result<()> {
        let node = self.inner.node.clone();
        let id = format!("{node}:started:{workload_id}");
        let m = v1::ReportWorkloadStarted { workload_id: workload_id.to_string(), node };
        self.submit(id, Pb::ReportWorkloadStarted(m)).await.map(drop)
    }

    pub async fn workload_exited(&self, workload_id: &str, exit_code: i32, oom_killed: bool) -> Result<()> {
        let node = self.inner.node.clone();
        let id = format!("{node}:exited:{workload_id}");
        let m = v1::ReportWorkloadExited { workload_id: workload_id.to_string(), node, exit_code, oom_killed };
        self.submit(id, Pb::ReportWorkloadExited(m)).await.map(drop)
    }

    /// The command id is derived from the check id, so a check that runs
    /// again after a restart is recorded once (the first outcome stands).
    pub async fn health_checked(
        &self,
        check_id: &str,
        results: Vec<v1::GpuHealthResult>,
        error: Option<String>,
    ) -> Result<()> {
        let node = self.inner.node.clone();
        let id = format!("{node}:health:{check_id}");
        let m =
            v1::ReportHealthCheck { node, check_id: check_id.to_string(), results, error: error.unwrap_or_default() };
        self.submit(id, Pb::ReportHealthCheck(m)).await.map(drop)
    }

    /// `command_id` is unique per chunk, so a retried chunk is stored once.
    pub async fn workload_logs(&self, command_id: String, workload_id: &str, stream: &str, data: String) -> Result<()> {
        let m = v1::ReportWorkloadLogs {
            workload_id: workload_id.to_string(),
            node: self.inner.node.clone(),
            stream: stream.to_string(),
            data,
        };
        self.submit(command_id, Pb::ReportWorkloadLogs(m)).await.map(drop)
    }

    /// The workload's current row (linearizable read); `None` if unknown.
    pub async fn workload(&self, id: &str) -> Result<Option<WorkloadView>> {
        let (i, mut c) = self.client();
        let req = self.request(
            v1::GetObjectRequest {
                kind: "workload".into(),
                id: id.to_string(),
                consistency: v1::Consistency::Linearizable as i32,
            },
            Some(CALL_TIMEOUT),
        );
        match c.get_object(req).await {
            Ok(r) => parse_workload(&r.into_inner().json).map(Some),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => {
                self.note_failure(i, &s);
                Err(Error::ControlPlane(s))
            }
        }
    }

    /// Every workload the control plane has placed on, or sees running on, this node.
    pub async fn workloads_on_this_node(&self) -> Result<Vec<WorkloadView>> {
        let (i, mut c) = self.client();
        let req = self.request(
            v1::ListObjectsRequest {
                kind: "workload".into(),
                consistency: v1::Consistency::Linearizable as i32,
                // Filtered on the server: a fleet may hold far more workloads than one node runs.
                node: self.node().to_string(),
            },
            Some(CALL_TIMEOUT),
        );
        let items = match c.list_objects(req).await {
            Ok(r) => r.into_inner().items_json,
            Err(s) => {
                self.note_failure(i, &s);
                return Err(Error::ControlPlane(s));
            }
        };
        let mut out = Vec::new();
        for j in &items {
            let w = parse_workload(j)?;
            if w.on(&self.inner.node) && (w.is("placed") || w.is("running")) {
                out.push(w);
            }
        }
        Ok(out)
    }

    /// Stored events from `from_seq` that match `kinds`, then the live tail.
    pub async fn watch(&self, from_seq: u64, kinds: &[&str]) -> Result<Streaming<v1::WatchResponse>> {
        let (i, mut c) = self.client();
        let filter = v1::EventFilter { kinds: kinds.iter().map(|k| k.to_string()).collect(), ..Default::default() };
        let req = self.request(v1::WatchRequest { from_seq, filter: Some(filter) }, None);
        match c.watch(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => {
                self.note_failure(i, &s);
                Err(Error::ControlPlane(s))
            }
        }
    }
}

fn parse_workload(json: &str) -> Result<WorkloadView> {
    serde_json::from_str(json).map_err(|e| {
        Error::ControlPlane(tonic::Status::internal(format!(
            "unexpected workload JSON from the control plane ({e}): {json}"
        )))
    })
}

/// The oldest seq still stored, from an OutOfRange "compacted" answer of Watch.
pub fn oldest_available(status: &tonic::Status) -> Option<u64> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    let msg = status.message();
    let at = msg.find("oldest available is ")? + "oldest available is ".len();
    msg[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_available_is_read_from_the_compacted_answer() {
        let s = tonic::Status::out_of_range("from_seq 3 is compacted, oldest available is 1200");
        assert_eq!(oldest_available(&s), Some(1200));
        assert_eq!(oldest_available(&tonic::Status::unavailable("oldest available is 5")), None);
        assert_eq!(oldest_available(&tonic::Status::out_of_range("something else")), None);
    }

    #[test]
    fn a_workload_row_parses_with_unknown_fields_ignored() {
        let json = r#"{"id":"w-1","spec":{"name":"t","image":"busybox","command":["sh"],"env":{},"gpus":0,
            "gpu_model":null,"min_gpu_memory_mb":0,"labels":{},"priority":0},"status":"placed","node":"gpu-a",
            "gpu_uuids":["GPU-1"],"cancel_requested":false,"submitted_by":"user:alice","exit_code":null}"#;
        let w = parse_workload(json).unwrap();
        assert!(w.is("Placed") && w.on("gpu-a") && !w.on("gpu-b"));
        assert_eq!(w.gpu_uuids, vec!["GPU-1"]);
    }
}
