use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use claw_commands::Event;
use claw_proto::v1;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::Code;

use crate::control_plane::{oldest_available, ControlPlane, WorkloadView};
use crate::docker_runtime::DockerRuntime;
use crate::exec_runtime::{ExecRuntime, EXIT_LOST};
use crate::health_check::{pick_runtime, run_health_check, HealthCheckOptions, HealthCheckReport};
use crate::runtime::{Exit, Found, Launch, Output, Runtime};
use crate::{AgentState, Error, Gpus, HostInfo, LogChunker, Options, OutputStream, Result, RuntimeKind, StateFile};

/// The event kinds the agent acts on.
pub const WATCHED_KINDS: &[&str] =
    &["WorkloadPlaced", "WorkloadCancelRequested", "WorkloadLost", "GpuHealthCheckRequested"];
/// How often buffered output is sent, at the latest.
const LOG_FLUSH_EVERY: Duration = Duration::from_millis(200);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the agent is doing, as its [`AgentHandle`] shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub registered: bool,
    /// Seq of the last event handled (and persisted).
    pub last_seq: u64,
    /// Workloads this agent supervises right now.
    pub workloads: BTreeSet<String>,
}

/// The cheap-to-clone way to look at a running [`Agent`].
#[derive(Clone)]
pub struct AgentHandle {
    status: watch::Receiver<AgentStatus>,
}

impl AgentHandle {
    pub fn status(&self) -> AgentStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `f` (or the agent is gone).
    pub async fn wait_until(&mut self, f: impl Fn(&AgentStatus) -> bool) -> Option<AgentStatus> {
        self.status.wait_for(|s| f(s)).await.ok().map(|s| s.clone())
    }
}

/// The node agent: registers this machine, heartbeats, reports GPU metrics,
/// and runs the workloads placed on this node, resuming from the last
/// handled event after any disconnect or restart.
///
/// Stopping the agent leaves running workloads running: the next agent
/// process re-attaches to them (Docker) or reports them lost (exec).
pub struct Agent {
    opts: Options,
    cp: ControlPlane,
    runtime: Arc<dyn Runtime>,
    gpus: Arc<Gpus>,
    host: HostInfo,
    state_file: StateFile,
    state: AgentState,
    status: watch::Sender<AgentStatus>,
}

impl Agent {
    /// Opens the state file, connects the runtime (Docker engine or exec)
    /// and loads NVML.
    pub async fn build(opts: Options) -> Result<(Agent, AgentHandle)> {
        opts.validate()?;
        let runtime: Arc<dyn Runtime> = match opts.runtime {
            RuntimeKind::Docker => Arc::new(DockerRuntime::connect().await?),
            RuntimeKind::Exec => Arc::new(ExecRuntime::new(&opts.data_dir)?),
        };
        let gpus = tokio::task::spawn_blocking(Gpus::detect).await.map_err(|e| Error::Config(e.to_string()))?;
        Self::with_parts(opts, runtime, gpus)
    }

    /// Like [`Agent::build`] with a given runtime and GPU source.
    pub fn with_parts(opts: Options, runtime: Arc<dyn Runtime>, gpus: Gpus) -> Result<(Agent, AgentHandle)> {
        let state_file = StateFile::open(&opts.data_dir)?;
        let state = state_file.load()?;
        let cp = ControlPlane::new(&opts.control_plane, &opts.name)?;
        let (status, rx) = watch::channel(AgentStatus { last_seq: state.last_seq, ..Default::default() });
        let agent =
            Agent { opts, cp, runtime, gpus: Arc::new(gpus), host: HostInfo::read(), state_file, state, status };
        Ok((agent, AgentHandle { status: rx }))
    }

    /// Runs until `shutdown` resolves. Fails only on what retrying cannot
    /// fix (the control plane refuses the registration, the state file
    /// cannot be written).
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        tokio::pin!(shutdown);
        let ctx = Arc::new(Ctx {
            cp: self.cp.clone(),
            runtime: self.runtime.clone(),
            node: self.opts.name.clone(),
            stop_grace: self.opts.stop_grace,
            boot: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            supervisors: Mutex::new(HashMap::new()),
            status: self.status.clone(),
            nvidia_gpus: self.gpus.inventory().gpus.iter().map(|g| g.index).collect(),
            health_checks: tokio::sync::Mutex::new(()),
        });
        tracing::info!(
            node = %self.opts.name,
            runtime = self.runtime.name(),
            control_plane = ?self.opts.control_plane,
            last_seq = self.state.last_seq,
            "clawnode starting"
        );

        let registration = self.registration();
        tokio::select! {
            r = register(&self.cp, &registration) => r?,
            _ = &mut shutdown => return Ok(()),
        }
        self.status.send_modify(|s| s.registered = true);

        let mut background =
            vec![tokio::spawn(heartbeats(self.cp.clone(), registration.clone(), self.opts.heartbeat_interval))];
        if !registration.gpus.is_empty() {
            background.push(tokio::spawn(gpu_metrics(self.cp.clone(), self.gpus.clone(), self.opts.metrics_interval)));
        }

        let result = tokio::select! {
            r = self.follow(&ctx) => r,
            _ = &mut shutdown => Ok(()),
        };
        tracing::info!("clawnode stopping; running workloads keep running and are re-attached on restart");
        for t in background {
            t.abort();
        }
        for (_, sup) in ctx.supervisors.lock().expect("supervisors").drain() {
            sup.task.abort();
        }
        result
    }

    fn registration(&self) -> v1::RegisterNode {
        let inv = self.gpus.inventory();
        let mut labels = inv.labels.clone();
        labels.insert("claw.runtime".into(), self.runtime.name().into());
        labels.extend(self.opts.labels.clone());
        v1::RegisterNode {
            node: self.opts.name.clone(),
            cpus: self.host.cpus,
            memory_mb: self.host.memory_mb,
            gpus: inv
                .gpus
                .iter()
                .map(|g| v1::GpuInfo {
                    index: g.index,
                    uuid: g.uuid.clone(),
                    model: g.model.clone(),
                    memory_mb: g.memory_mb,
                })
                .collect(),
            driver_version: inv.driver_version.clone().unwrap_or_default(),
            cuda_version: inv.cuda_version.clone().unwrap_or_default(),
            labels: labels.into_iter().collect(),
        }
    }

    /// Reconciles, then follows the placements addressed to this node.
    async fn follow(&mut self, ctx: &Arc<Ctx>) -> Result<()> {
        reconcile(ctx).await;
        let mut from = self.state.last_seq + 1;
        let mut backoff = Backoff::default();
        loop {
            let mut stream = match self.cp.watch(from, WATCHED_KINDS).await {
                Ok(s) => s,
                Err(e) => {
                    if let Some(oldest) = e.status().and_then(oldest_available) {
                        self.compacted(ctx, from, oldest).await;
                        from = oldest;
                        continue;
                    }
                    backoff.wait(&format!("watching {} failed: {e}", self.cp.member())).await;
                    continue;
                }
            };
            tracing::info!(member = self.cp.member(), from_seq = from, "watching placements");
            loop {
                match stream.next().await {
                    Some(Ok(resp)) => {
                        backoff.reset();
                        let Some(ev) = resp.event else { continue };
                        let rec = claw_proto::event_from_pb(&ev)
                            .map_err(|e| Error::BadEvent { seq: ev.seq, reason: e.to_string() })?;
                        handle_event(ctx, rec.event);
                        self.state.last_seq = rec.seq;
                        let (file, state) = (self.state_file.clone(), self.state);
                        tokio::task::spawn_blocking(move || file.store(&state)).await.map_err(|e| Error::State {
                            path: self.state_file.path().into(),
                            reason: e.to_string(),
                        })??;
                        self.status.send_modify(|s| s.last_seq = rec.seq);
                        from = rec.seq + 1;
                    }
                    Some(Err(status)) => {
                        if let Some(oldest) = oldest_available(&status) {
                            self.compacted(ctx, from, oldest).await;
                            from = oldest;
                        } else {
                            backoff.wait(&format!("the watch stream broke: {status}")).await;
                        }
                        break;
                    }
                    None => {
                        backoff.wait("the watch stream ended").await;
                        break;
                    }
                }
            }
        }
    }

    /// Events before `oldest` are gone: placements among them are found by
    /// asking for the current state instead.
    async fn compacted(&self, ctx: &Arc<Ctx>, from: u64, oldest: u64) {
        tracing::warn!(
            from_seq = from,
            oldest,
            "events from {from} on are compacted on the control plane; resuming at {oldest} and reconciling with the current state"
        );
        reconcile(ctx).await;
    }
}

/// What every supervisor shares.
struct Ctx {
    cp: ControlPlane,
    runtime: Arc<dyn Runtime>,
    node: String,
    stop_grace: Duration,
    /// Distinguishes this agent process in log-chunk command ids.
    boot: String,
    supervisors: Mutex<HashMap<String, Supervisor>>,
    status: watch::Sender<AgentStatus>,
    /// NVML indices of this node's NVIDIA GPUs (empty without the driver).
    nvidia_gpus: Vec<u32>,
    /// One health check at a time: two would share the devices and skew
    /// each other's GFLOP/s.
    health_checks: tokio::sync::Mutex<()>,
}

struct Supervisor {
    cancel: watch::Sender<Option<String>>,
    task: JoinHandle<()>,
    /// Placed here again while the previous run was still being wound down
    /// (lost, requeued and placed back): supervise it afresh afterwards.
    placed_again: Option<Vec<String>>,
}

/// Why a supervisor starts looking after a workload.
enum Cause {
    /// A `WorkloadPlaced` event (the assigned GPUs).
    Placed(Vec<String>),
    /// The control plane lists it as placed on or running on this node.
    Listed(Box<WorkloadView>),
    /// The runtime holds it (found at start-up).
    Held,
}

fn handle_event(ctx: &Arc<Ctx>, event: Event) {
    match event {
        Event::WorkloadPlaced { workload_id, node, gpu_uuids, .. } if node == ctx.node => {
            supervise(ctx, workload_id, Cause::Placed(gpu_uuids));
        }
        Event::WorkloadCancelRequested { workload_id, reason } => cancel(ctx, &workload_id, reason),
        Event::WorkloadLost { workload_id, node, reason, .. } if node == ctx.node => {
            cancel(ctx, &workload_id, format!("declared lost by the control plane: {reason}"))
        }
        // The request's seq is persisted as handled right after this returns,
        // so a restarted agent does not run it again; should it crash in
        // between, the report's command id (derived from the check id) keeps
        // the first answer the only one recorded.
        Event::GpuHealthCheckRequested { node, check_id } if node == ctx.node => {
            tokio::spawn(health_check(ctx.clone(), check_id));
        }
        _ => {}
    }
}

/// Runs the GPU health check (CUDA on each NVIDIA GPU, else wgpu adapter 0)
/// and reports the results, or why it could not run.
async fn health_check(ctx: Arc<Ctx>, check_id: String) {
    let _one_at_a_time = ctx.health_checks.lock().await;
    let runtime = pick_runtime(ctx.nvidia_gpus.len());
    let indices = if ctx.nvidia_gpus.is_empty() { vec![0] } else { ctx.nvidia_gpus.clone() };
    tracing::info!(%check_id, %runtime, devices = ?indices, "running the GPU health check");
    let outcome = tokio::task::spawn_blocking(move || {
        let opts = HealthCheckOptions::default();
        indices.into_iter().map(|i| run_health_check(runtime, i, &opts)).collect::<Result<Vec<_>, _>>()
    })
    .await;
    let (results, error) = match outcome {
        Ok(Ok(reports)) => (reports.into_iter().map(health_result).collect(), None),
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Err(e) => (Vec::new(), Some(format!("the health check panicked: {e}"))),
    };
    match &error {
        None => tracing::info!(%check_id, results = results.len(), "GPU health check done"),
        Some(e) => tracing::warn!(%check_id, "GPU health check could not run: {e}"),
    }
    let what = format!("reporting health check {check_id}");
    let report = retry_cp(&what, || ctx.cp.health_checked(&check_id, results.clone(), error.clone())).await;
    if let Err(e) = report {
        // A refusal (the node was forgotten) will not change on retry.
        tracing::warn!(%check_id, "the control plane refused the health report: {e}");
    }
}

/// The wire form of one report. JSON has no NaN or infinity, so a
/// non-finite measurement is stored as 0 and the device counts as failed.
fn health_result(r: HealthCheckReport) -> v1::GpuHealthResult {
    let mut passed = r.passed;
    let mut finite = |x: f64| {
        if x.is_finite() {
            x
        } else {
            passed = false;
            0.0
        }
    };
    let (gflops, checksum, reference_checksum, max_abs_error, elapsed_ms) = (
        finite(r.gflops),
        finite(r.checksum),
        finite(r.reference_checksum),
        finite(r.max_abs_error),
        finite(r.elapsed_ms),
    );
    v1::GpuHealthResult {
        runtime: r.runtime.as_str().to_string(),
        device: r.device,
        device_index: r.device_index,
        matrix_size: r.matrix_size,
        passed,
        gflops,
        checksum,
        reference_checksum,
        max_abs_error,
        elapsed_ms,
        detail: r.detail,
    }
}

fn cancel(ctx: &Arc<Ctx>, workload_id: &str, reason: String) {
    if let Some(s) = ctx.supervisors.lock().expect("supervisors").get(workload_id) {
        tracing::info!(workload = workload_id, %reason, "stopping workload");
        let _ = s.cancel.send(Some(reason));
    }
}

/// Level-triggered catch-up: whatever the runtime holds for this node, and
/// whatever the control plane has placed on or sees running on it, gets a
/// supervisor (once).
async fn reconcile(ctx: &Arc<Ctx>) {
    let mut backoff = Backoff::default();
    loop {
        match ctx.runtime.list(&ctx.node).await {
            Ok(held) => {
                for (id, _) in held {
                    supervise(ctx, id, Cause::Held);
                }
                break;
            }
            Err(e) => backoff.wait(&format!("listing this node's workloads in the runtime failed: {e}")).await,
        }
    }
    let mut backoff = Backoff::default();
    loop {
        match ctx.cp.workloads_on_this_node().await {
            Ok(list) => {
                for w in list {
                    supervise(ctx, w.id.clone(), Cause::Listed(Box::new(w)));
                }
                return;
            }
            Err(e) => backoff.wait(&format!("listing this node's workloads on the control plane failed: {e}")).await,
        }
    }
}

/// Starts a supervisor for the workload unless one runs already. A replayed
/// placement of a finished workload is harmless: the supervisor finds it
/// finished on the control plane and does nothing.
fn supervise(ctx: &Arc<Ctx>, workload_id: String, cause: Cause) {
    let mut sups = ctx.supervisors.lock().expect("supervisors");
    if let Some(s) = sups.get_mut(&workload_id) {
        if let (Cause::Placed(gpus), true) = (&cause, s.cancel.borrow().is_some()) {
            s.placed_again = Some(gpus.clone());
        }
        return;
    }
    let (cancel, cancel_rx) = watch::channel(None);
    let task = {
        let ctx = ctx.clone();
        let id = workload_id.clone();
        tokio::spawn(async move {
            if let Err(e) = run_workload(&ctx, &id, cause, cancel_rx).await {
                tracing::error!(workload = %id, "supervising the workload failed: {e}");
            }
            let again = ctx.supervisors.lock().expect("supervisors").remove(&id).and_then(|s| s.placed_again);
            ctx.status.send_modify(|s| {
                s.workloads.remove(&id);
            });
            if let Some(gpus) = again {
                supervise(&ctx, id, Cause::Placed(gpus));
            }
        })
    };
    sups.insert(workload_id.clone(), Supervisor { cancel, task, placed_again: None });
    ctx.status.send_modify(|s| {
        s.workloads.insert(workload_id);
    });
}

/// One workload from placement to removal. Every step checks what already
/// happened (in the runtime and on the control plane), so it can be re-run
/// after a crash without running anything twice.
async fn run_workload(
    ctx: &Arc<Ctx>,
    id: &str,
    cause: Cause,
    mut cancel: watch::Receiver<Option<String>>,
) -> Result<()> {
    let found = retry(&format!("looking up workload {id} in the runtime"), || ctx.runtime.find(id)).await;
    match found {
        Some(Found::Exited(exit)) => {
            tracing::info!(workload = id, exit_code = exit.exit_code, "found the workload exited; reporting it");
            return finish(ctx, id, exit).await;
        }
        Some(Found::Running) => {
            tracing::info!(workload = id, "re-attaching to the running workload");
            report_started(ctx, id).await?;
            return follow_workload(ctx, id, false, &mut cancel).await;
        }
        None => {}
    }
    if matches!(cause, Cause::Held) {
        return Ok(());
    }
    let hint = match &cause {
        Cause::Placed(g) => g.clone(),
        _ => Vec::new(),
    };
    let view = match cause {
        Cause::Listed(v) => Some(*v),
        _ => retry_cp(&format!("reading workload {id}"), || ctx.cp.workload(id)).await?,
    };
    let Some(view) = view.filter(|v| v.on(&ctx.node)) else {
        tracing::debug!(workload = id, "no longer placed on this node; nothing to do");
        return Ok(());
    };
    if view.is("running") {
        // Running here per the control plane, yet the runtime holds nothing.
        let exit = Exit {
            exit_code: EXIT_LOST,
            oom_killed: false,
            message: Some(format!(
                "the {} runtime on node {} holds no trace of this running workload (removed outside clawnode?); \
                 its exit status is unknown",
                ctx.runtime.name(),
                ctx.node
            )),
        };
        return finish(ctx, id, exit).await;
    }
    if !view.is("placed") || view.cancel_requested {
        return Ok(());
    }
    let launch = Launch {
        workload_id: id.to_string(),
        node: ctx.node.clone(),
        gpu_uuids: if view.gpu_uuids.is_empty() { hint } else { view.gpu_uuids.clone() },
        spec: view.spec,
    };
    tracing::info!(workload = id, image = %launch.spec.image, gpus = ?launch.gpu_uuids, "starting workload");
    match ctx.runtime.start(&launch).await {
        Ok(()) => {}
        Err(Error::Launch { reason, exit_code, .. }) => {
            tracing::warn!(workload = id, exit_code, "{reason}");
            return finish(ctx, id, Exit { exit_code, oom_killed: false, message: Some(reason) }).await;
        }
        Err(e) => return Err(e),
    }
    if !report_started(ctx, id).await? {
        tracing::info!(workload = id, "the control plane refused the start (cancelled meanwhile?); removing it");
        let _ = ctx.runtime.stop(id, Duration::ZERO).await;
        return ctx.runtime.remove(id).await;
    }
    follow_workload(ctx, id, true, &mut cancel).await
}

/// Reports the start. `Ok(false)`: the control plane does not consider the
/// workload placed (or running) on this node any more.
async fn report_started(ctx: &Arc<Ctx>, id: &str) -> Result<bool> {
    match retry_cp(&format!("reporting workload {id} started"), || ctx.cp.workload_started(id)).await {
        Ok(()) => Ok(true),
        Err(e) if e.status().map(|s| s.code()) == Some(Code::FailedPrecondition) => {
            // Refused: fine if it is running here already (reported before a restart).
            let view = retry_cp(&format!("reading workload {id}"), || ctx.cp.workload(id)).await?;
            Ok(view.is_some_and(|v| v.is("running") && v.on(&ctx.node)))
        }
        Err(e) => Err(e),
    }
}

/// Waits for the workload to exit, streaming its output and stopping it when
/// cancelled, then reports the exit and removes it.
async fn follow_workload(
    ctx: &Arc<Ctx>,
    id: &str,
    from_start: bool,
    cancel: &mut watch::Receiver<Option<String>>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel(256);
    let forwarder = tokio::spawn(forward_output(ctx.clone(), id.to_string(), rx));
    let wait = ctx.runtime.wait(id, from_start, tx);
    tokio::pin!(wait);
    let mut stopping = false;
    let exit = loop {
        if !stopping && cancel.borrow().is_some() {
            stopping = true;
            let (rt, id, grace) = (ctx.runtime.clone(), id.to_string(), ctx.stop_grace);
            tokio::spawn(async move {
                if let Err(e) = rt.stop(&id, grace).await {
                    tracing::warn!(workload = %id, "stopping the workload failed: {e}");
                }
            });
        }
        tokio::select! {
            r = &mut wait => break r,
            changed = cancel.changed(), if !stopping => {
                if changed.is_err() {
                    stopping = true; // the agent is shutting down; keep waiting
                }
            }
        }
    };
    let _ = forwarder.await;
    match exit {
        Ok(exit) => finish(ctx, id, exit).await,
        Err(e) => Err(e),
    }
}

/// Reports the exit (and its reason as a log chunk), then removes the workload.
async fn finish(ctx: &Arc<Ctx>, id: &str, exit: Exit) -> Result<()> {
    if let Some(msg) = &exit.message {
        let cmd_id = format!("{}:logs:{id}:{}:exit", ctx.node, ctx.boot);
        send_chunk(ctx, id, cmd_id, OutputStream::Stderr, format!("[clawnode] {msg}\n")).await;
    }
    tracing::info!(workload = id, exit_code = exit.exit_code, oom_killed = exit.oom_killed, "workload exited");
    match retry_cp(&format!("reporting workload {id} exited"), || {
        ctx.cp.workload_exited(id, exit.exit_code, exit.oom_killed)
    })
    .await
    {
        Ok(()) => {}
        // Reported before (e.g. by this agent before a restart), or cancelled meanwhile.
        Err(e) if e.status().map(|s| s.code()) == Some(Code::FailedPrecondition) => {
            tracing::debug!(workload = id, "exit not recorded: {e}");
        }
        Err(e) => return Err(e),
    }
    retry(&format!("removing workload {id}"), || ctx.runtime.remove(id)).await;
    Ok(())
}

/// Batches a workload's output into bounded chunks, sent at least every
/// [`LOG_FLUSH_EVERY`].
async fn forward_output(ctx: Arc<Ctx>, id: String, mut rx: mpsc::Receiver<Output>) {
    let mut chunker = LogChunker::new(LogChunker::DEFAULT_MAX_BYTES);
    let mut tick = tokio::time::interval(LOG_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        let chunks = tokio::select! {
            o = rx.recv() => match o {
                Some(o) => chunker.push(o.stream, &o.bytes),
                None => break,
            },
            _ = tick.tick() => chunker.flush(),
        };
        for c in chunks {
            n += 1;
            send_chunk(&ctx, &id, format!("{}:logs:{id}:{}:{n}", ctx.node, ctx.boot), c.stream, c.data).await;
        }
    }
    for c in chunker.finish() {
        n += 1;
        send_chunk(&ctx, &id, format!("{}:logs:{id}:{}:{n}", ctx.node, ctx.boot), c.stream, c.data).await;
    }
}

/// Output is best effort: a chunk the control plane keeps refusing is dropped.
async fn send_chunk(ctx: &Ctx, id: &str, command_id: String, stream: OutputStream, data: String) {
    for attempt in 0..5u32 {
        match ctx.cp.workload_logs(command_id.clone(), id, stream.as_str(), data.clone()).await {
            Ok(()) => return,
            Err(e) if e.status().is_some_and(|s| transient(s.code())) && attempt < 4 => {
                tokio::time::sleep(BACKOFF_MIN * 2u32.pow(attempt)).await;
            }
            Err(e) => {
                tracing::warn!(workload = id, "dropped {} bytes of {stream}: {e}", data.len());
                return;
            }
        }
    }
}

fn transient(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Aborted | Code::Internal)
}

/// Retries a control-plane call while it fails transiently; a definite
/// answer (including a refusal) is returned.
async fn retry_cp<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::default();
    loop {
        match f().await {
            Err(e) if e.status().is_some_and(|s| transient(s.code())) => backoff.wait(&format!("{what}: {e}")).await,
            other => return other,
        }
    }
}

/// Retries a runtime call until it succeeds (the engine may be restarting).
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::default();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => backoff.wait(&format!("{what}: {e}")).await,
        }
    }
}

async fn register(cp: &ControlPlane, reg: &v1::RegisterNode) -> Result<()> {
    let mut backoff = Backoff::default();
    loop {
        match cp.register(reg.clone()).await {
            Ok(()) => {
                tracing::info!(
                    node = %reg.node,
                    cpus = reg.cpus,
                    memory_mb = reg.memory_mb,
                    gpus = reg.gpus.len(),
                    member = cp.member(),
                    "registered"
                );
                return Ok(());
            }
            Err(e) if e.status().is_some_and(|s| !transient(s.code())) => return Err(e),
            Err(e) => backoff.wait(&format!("registering with {} failed: {e}", cp.member())).await,
        }
    }
}

async fn heartbeats(cp: ControlPlane, reg: v1::RegisterNode, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match cp.heartbeat().await {
            Ok(()) => {
                if failing {
                    tracing::info!(member = cp.member(), "heartbeats go through again");
                }
                failing = false;
            }
            Err(e) => {
                if e.status().map(|s| s.code()) == Some(Code::NotFound) {
                    // The control plane does not know this node: register again.
                    let _ = cp.register(reg.clone()).await;
                }
                if !failing {
                    tracing::warn!(member = cp.member(), "heartbeat failed: {e}");
                }
                failing = true;
            }
        }
    }
}

async fn gpu_metrics(cp: ControlPlane, gpus: Arc<Gpus>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let g = gpus.clone();
        let Ok(samples) = tokio::task::spawn_blocking(move || g.sample()).await else { continue };
        if samples.is_empty() {
            continue;
        }
        let samples = samples.into_iter().map(v1::GpuSample::from).collect();
        if let Err(e) = cp.observe_gpus(samples).await {
            tracing::debug!("sending GPU metrics failed: {e}");
        }
    }
}

/// Exponential backoff between retries, logged once per wait.
#[derive(Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    async fn wait(&mut self, why: &str) {
        let d = self.next.unwrap_or(BACKOFF_MIN);
        tracing::warn!("{why}; retrying in {d:?}");
        tokio::time::sleep(d).await;
        self.next = Some((d * 2).min(BACKOFF_MAX));
    }

    fn reset(&mut self) {
        self.next = None;
    }
}
