use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, DeviceRequest, HostConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use crate::runtime::{Exit, Found, Launch, Output, Runtime};
use crate::{Error, OutputStream, Result};

/// Container label holding the workload id.
pub const LABEL_WORKLOAD: &str = "claw.workload";
/// Container label holding the node name.
pub const LABEL_NODE: &str = "claw.node";
/// Exit code reported when a container cannot be created or started (as `docker run` does).
const EXIT_CANNOT_START: i32 = 125;
const EXIT_NOT_FOUND: i32 = 127;

/// Runs workloads as Docker containers named `claw-<workload id>` through the
/// local engine socket. The container, found by its `claw.workload` label,
/// is the record of what runs: nothing is started twice, and a restarted
/// agent re-attaches to what still runs.
pub struct DockerRuntime {
    docker: Docker,
}

pub fn container_name(workload_id: &str) -> String {
    format!("claw-{workload_id}")
}

fn is_status(e: &DockerError, code: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

fn message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or `/var/run/docker.sock`)
    /// and agrees on an API version with it.
    pub async fn connect() -> Result<DockerRuntime> {
        let docker = Docker::connect_with_local_defaults().map_err(Error::docker)?;
        let docker = docker.negotiate_version().await.map_err(|e| Error::Runtime {
            runtime: "docker",
            reason: format!("the Docker engine is not reachable ({e}); start it, or run with --runtime exec"),
        })?;
        docker.ping().await.map_err(Error::docker)?;
        Ok(DockerRuntime { docker })
    }

    /// Containers carrying `label=value`, running or not.
    async fn containers_with(&self, label: &str, value: &str) -> Result<Vec<bollard::models::ContainerSummary>> {
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        self.docker.list_containers(Some(opts)).await.map_err(Error::docker)
    }

    async fn inspect_found(&self, name: &str) -> Result<Option<Found>> {
        let info = match self.docker.inspect_container(name, None).await {
            Ok(i) => i,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(Error::docker(e)),
        };
        let state = info.state.unwrap_or_default();
        Ok(match state.status {
            // Created but never started: the agent died between the two steps;
            // `start` finishes the job.
            Some(ContainerStateStatusEnum::CREATED) => None,
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => Some(Found::Exited(Exit {
                exit_code: state.exit_code.unwrap_or(-1) as i32,
                oom_killed: state.oom_killed.unwrap_or(false),
                message: state.error.filter(|e| !e.is_empty()),
            })),
            _ => Some(Found::Running),
        })
    }

    async fn create(&self, launch: &Launch) -> Result<()> {
        let spec = &launch.spec;
        let name = container_name(&launch.workload_id);
        match self.docker.inspect_image(&spec.image).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {
                return Err(Error::Launch {
                    workload_id: launch.workload_id.clone(),
                    reason: format!(
                        "image {:?} is not present on node {:?}; clawnode does not pull images \
                         (load it with `docker pull` or `docker load` on the node)",
                        spec.image, launch.node
                    ),
                    exit_code: EXIT_CANNOT_START,
                })
            }
            Err(e) => return Err(Error::docker(e)),
        }
        let device_requests = (!launch.gpu_uuids.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                device_ids: Some(launch.gpu_uuids.clone()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]
        });
        let labels = HashMap::from([
            (LABEL_WORKLOAD.to_string(), launch.workload_id.clone()),
            (LABEL_NODE.to_string(), launch.node.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            host_config: Some(HostConfig { device_requests, ..Default::default() }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        match self.docker.create_container(Some(opts), body).await {
            Ok(_) => Ok(()),
            // Created concurrently or by a previous life of this agent.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(Error::Launch {
                workload_id: launch.workload_id.clone(),
                reason: format!("docker could not create container {name}: {}", message(&e)),
                exit_code: EXIT_CANNOT_START,
            }),
        }
    }
}

impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn list(&self, node: &str) -> BoxFuture<'_, Result<Vec<(String, Found)>>> {
        let node = node.to_string();
        async move {
            let mut out = Vec::new();
            for c in self.containers_with(LABEL_NODE, &node).await? {
                let Some(id) = c.labels.as_ref().and_then(|l| l.get(LABEL_WORKLOAD)).cloned() else { continue };
                if c.state == Some(ContainerSummaryStateEnum::CREATED) {
                    continue;
                }
                if let Some(found) = self.inspect_found(&container_name(&id)).await? {
                    out.push((id, found));
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn find<'a>(&'a self, workload_id: &'a str) -> BoxFuture<'a, Result<Option<Found>>> {
        async move {
            // By label first: that is what marks a container as ours.
            match self.containers_with(LABEL_WORKLOAD, workload_id).await?.first() {
                Some(c) => {
                    let name = c.id.clone().unwrap_or_else(|| container_name(workload_id));
                    self.inspect_found(&name).await
                }
                None => Ok(None),
            }
        }
        .boxed()
    }

    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<()>> {
        async move {
            let existing = self.containers_with(LABEL_WORKLOAD, &launch.workload_id).await?;
            match existing.first().and_then(|c| c.state) {
                // Started before (by this agent or a previous life of it).
                Some(s) if s != ContainerSummaryStateEnum::CREATED => return Ok(()),
                Some(_) => {}
                None => self.create(launch).await?,
            }
            let name = container_name(&launch.workload_id);
            match self.docker.start_container(&name, None).await {
                Ok(()) => Ok(()),
                Err(e) if is_status(&e, 304) => Ok(()),
                Err(e) => {
                    let msg = message(&e);
                    let exit_code = if msg.contains("not found") || msg.contains("no such file") {
                        EXIT_NOT_FOUND
                    } else {
                        EXIT_CANNOT_START
                    };
                    Err(Error::Launch {
                        workload_id: launch.workload_id.clone(),
                        reason: format!("docker could not start container {name}: {msg}"),
                        exit_code,
                    })
                }
            }
        }
        .boxed()
    }

    fn wait<'a>(
        &'a self,
        workload_id: &'a str,
        from_start: bool,
        output: mpsc::Sender<Output>,
    ) -> BoxFuture<'a, Result<Exit>> {
        async move {
            let name = container_name(workload_id);
            let since = if from_start {
                0
            } else {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i32)
                    .unwrap_or(0)
            };
            let opts = LogsOptionsBuilder::default().follow(true).stdout(true).stderr(true).since(since).build();
            let mut logs = self.docker.logs(&name, Some(opts));
            let log_task = tokio::spawn(async move {
                while let Some(item) = logs.next().await {
                    let out = match item {
                        Ok(bollard::container::LogOutput::StdErr { message }) => {
                            Output { stream: OutputStream::Stderr, bytes: message.to_vec() }
                        }
                        Ok(
                            bollard::container::LogOutput::StdOut { message }
                            | bollard::container::LogOutput::Console { message },
                        ) => Output { stream: OutputStream::Stdout, bytes: message.to_vec() },
                        Ok(bollard::container::LogOutput::StdIn { .. }) => continue,
                        Err(e) => {
                            tracing::warn!("reading the output of a container ended early: {e}");
                            break;
                        }
                    };
                    if output.send(out).await.is_err() {
                        break;
                    }
                }
            });

            // The engine answers the wait when the container stops; a
            // transport hiccup only means asking again.
            loop {
                let opts = WaitContainerOptionsBuilder::default().condition("not-running").build();
                match self.docker.wait_container(&name, Some(opts)).next().await {
                    Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => break,
                    Some(Err(e)) if is_status(&e, 404) => break,
                    Some(Err(e)) => {
                        tracing::warn!(container = %name, "waiting for the container failed ({e}); waiting again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            // The log stream ends with the container; give it a moment to
            // deliver the last lines.
            let mut log_task = log_task;
            if tokio::time::timeout(Duration::from_secs(5), &mut log_task).await.is_err() {
                log_task.abort();
            }
            match self.inspect_found(&name).await? {
                Some(Found::Exited(exit)) => Ok(exit),
                Some(Found::Running) | None => Err(Error::Runtime {
                    runtime: "docker",
                    reason: format!("container {name} is gone or still running after its wait returned"),
                }),
            }
        }
        .boxed()
    }

    fn stop<'a>(&'a self, workload_id: &'a str, grace: Duration) -> BoxFuture<'a, Result<()>> {
        async move {
            let name = container_name(workload_id);
            let opts = StopContainerOptionsBuilder::default().t(grace.as_secs().min(i32::MAX as u64) as i32).build();
            match self.docker.stop_container(&name, Some(opts)).await {
                Ok(()) => Ok(()),
                // 304: already stopped; 404: already gone.
                Err(e) if is_status(&e, 304) || is_status(&e, 404) => Ok(()),
                Err(e) => Err(Error::docker(e)),
            }
        }
        .boxed()
    }

    fn remove<'a>(&'a self, workload_id: &'a str) -> BoxFuture<'a, Result<()>> {
        async move {
            let opts = RemoveContainerOptionsBuilder::default().force(true).build();
            match self.docker.remove_container(&container_name(workload_id), Some(opts)).await {
                Ok(()) => Ok(()),
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(Error::docker(e)),
            }
        }
        .boxed()
    }
}
