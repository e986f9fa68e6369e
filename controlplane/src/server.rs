use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use claw_analytics::Analytics;
use claw_commands::{Actor, Command};
use claw_log::{LogNode, LogOptions};
use claw_proto::v1::claw_server::ClawServer;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

use crate::api::ClawApi;
use crate::telemetry::{Telemetry, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::{Error, Options, Result};

/// A running `clawd` member: the log, and one gRPC server carrying the
/// client API, the Raft RPC, health and reflection.
pub struct Server {
    pub node: LogNode,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serve: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    stop_scheduler: watch::Sender<bool>,
    scheduler: JoinHandle<()>,
}

impl Server {
    pub async fn start(opts: Options) -> Result<Server> {
        opts.validate()?;
        let listener = tokio::net::TcpListener::bind(&opts.listen)
            .await
            .map_err(|e| Error::Server(format!("cannot listen on {}: {e}", opts.listen)))?;
        let addr = listener.local_addr().map_err(|e| Error::Server(e.to_string()))?;
        // With port 0 the advertised address must carry the port we got.
        let advertise = match &opts.advertise {
            Some(a) => a.clone(),
            None => addr.to_string(),
        };
        let log_opts = LogOptions {
            node_id: opts.id,
            data_dir: opts.data_dir.clone(),
            advertise_addr: advertise.clone(),
            heartbeat_ms: opts.raft.heartbeat_ms,
            election_timeout_min_ms: opts.raft.election_timeout_min_ms,
            election_timeout_max_ms: opts.raft.election_timeout_max_ms,
            snapshot_logs_since_last: opts.raft.snapshot_logs_since_last,
            max_in_snapshot_log_to_keep: opts.raft.max_in_snapshot_log_to_keep,
            install_snapshot_timeout_ms: opts.raft.install_snapshot_timeout_ms,
            checkpoint_every: opts.history.checkpoint_every,
            full_checkpoint_every: opts.history.full_checkpoint_every,
            verify_checksums_on_open: opts.storage.verify_checksums_on_start,
        };
        let node = LogNode::open(log_opts).await?;
        let analytics = Analytics::new(node.store.clone()).with_workload_bases(opts.history.workload_bases);
        let api = Arc::new(ClawApi::new(node.clone(), opts.id, analytics.clone()));

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<ClawServer<Arc<ClawApi>>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(claw_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| Error::Server(format!("reflection: {e}")))?;

        let telemetry = Telemetry::new(node.clone());
        let routes = Routes::new(ClawServer::from_arc(api.clone()).max_decoding_message_size(64 << 20))
            .add_service(node.raft_service())
            // Arrow Flight SQL on the same port, for ADBC/JDBC clients.
            .add_service(analytics.flight_service())
            .add_service(health_service)
            .add_service(reflection);
        // Prometheus scrapes `GET /metrics` on the same port, over HTTP/1.1.
        let scrape = telemetry.clone();
        let routes = Routes::from(routes.into_axum_router().route(
            "/metrics",
            axum::routing::get(move || {
                let body = scrape.render();
                async move { ([(http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body) }
            }),
        ));

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .accept_http1(true)
            .layer(telemetry.grpc_layer())
            .add_routes(routes);
        // The builder's tcp_nodelay only covers listeners tonic binds itself;
        // without it, Nagle holds the trailers of every reply for a delayed ACK (~40 ms).
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let serve = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        }));

        let (stop_scheduler, scheduler_stopped) = watch::channel(false);
        tokio::spawn(telemetry.watch_leader(scheduler_stopped.clone()));
        tokio::spawn(roll_up_metrics(node.store.clone(), opts.metrics.clone(), scheduler_stopped.clone()));
        // Columnar copies of the workload table for `workloads_at(x)`.
        if opts.history.workload_bases {
            analytics.spawn_base_writer(Duration::from_secs(1), scheduler_stopped.clone());
        }
        let scheduler = tokio::spawn(opts.scheduler.clone().build(node.clone(), api.clone()).run(scheduler_stopped));
        if !opts.join {
            node.initialize_single().await?;
            tokio::spawn(record_first_member(node.clone(), api, opts.id, advertise.clone()));
        }
        tracing::info!(id = opts.id, listen = %addr, advertise = %advertise, data_dir = %opts.data_dir.display(), join = opts.join, "clawd started");
        Ok(Server { node, addr, stop: Some(stop_tx), serve, stop_scheduler, scheduler })
    }

    /// Resolves if raft stops on a fatal error (e.g. the disk failed a
    /// write): the member can no longer take part, and should exit so its
    /// supervisor restarts it from what is durable.
    pub async fn fatal(&self) -> String {
        let mut metrics = self.node.raft.metrics();
        loop {
            if let Err(e) = &metrics.borrow_and_update().running_state {
                return e.to_string();
            }
            if metrics.changed().await.is_err() {
                return "raft stopped".to_string();
            }
        }
    }

    /// Stops serving and shuts the Raft node down.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.stop_scheduler.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.scheduler).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.serve).await;
        self.node.shutdown().await?;
        Ok(())
    }
}

/// The founding member records itself in the event log once it leads, so
/// the membership history starts at the beginning of the log.
async fn record_first_member(node: LogNode, api: Arc<ClawApi>, id: u64, addr: String) {
    let mut metrics = node.raft.metrics();
    for _ in 0..600 {
        let leader = metrics.borrow().current_leader;
        if leader == Some(id) {
            if node.store.with_view(|v| !v.members.is_empty()) {
                return;
            }
            let cmd = Command::RecordMemberAdded { member_id: id, addr: addr.clone(), voter: true };
            match api.propose_system(Actor::system(), cmd, format!("member-{id}-founding")).await {
                Ok(_) => return,
                Err(e) => tracing::warn!(error = %e, "recording the founding member failed; retrying"),
            }
        } else if leader.is_some() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
    }
}

/// Rolls GPU metrics up into 1-minute and 1-hour summaries as buckets
/// close, and expires rollups past their retention, until `stop` is set.
/// Every member does this from its own copy of the log.
async fn roll_up_metrics(store: claw_log::EventStore, opts: crate::MetricsOptions, mut stop: watch::Receiver<bool>) {
    use claw_log::Resolution;
    let mut tick = tokio::time::interval(Duration::from_millis(opts.rollup_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let store = store.clone();
        let opts = opts.clone();
        let pass = tokio::task::spawn_blocking(move || -> claw_log::Result<claw_log::RollupProgress> {
            // Bounded per pass so a long backlog is worked off in steps.
            let mut p = store.roll_up(1_000)?;
            let now = wall_clock_ms();
            let keep = [
                (Resolution::Minute, opts.retention_1m_hours as i64 * 3_600_000),
                (Resolution::Hour, opts.retention_1h_days as i64 * 86_400_000),
            ];
            for (res, keep_ms) in keep {
                let n = store.expire_rollups(res, now.saturating_sub(keep_ms))?;
                if n > 0 {
                    p.expired.insert(res.name(), n);
                }
            }
            Ok(p)
        })
        .await;
        match pass {
            Ok(Ok(p)) if p.rows > 0 || !p.expired.is_empty() => {
                tracing::debug!(rows = p.rows, buckets = ?p.buckets, expired = ?p.expired, "metrics rolled up")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("rolling up GPU metrics failed: {e}"),
            Err(e) => tracing::warn!("rollup task failed: {e}"),
        }
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
