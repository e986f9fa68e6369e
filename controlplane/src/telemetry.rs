//! The member's own Prometheus metrics, served as OpenMetrics text on
//! `GET /metrics` of the gRPC port (HTTP/1.1 is accepted there for it):
//! proposal commit and apply latency, fsync duration and entries per fsync
//! (from `claw-log`), raft term, leadership and leader changes, last log,
//! committed and applied index, watch subscribers and their lag, and gRPC
//! latency per method.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use claw_log::LogNode;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

/// Labels of a gRPC call: the full method path and the gRPC status code.
type CallLabels = Vec<(&'static str, String)>;

#[derive(Clone)]
struct LatencyHistogram;

impl MetricConstructor<Histogram> for LatencyHistogram {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
    }
}

/// The content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything `/metrics` shows. Values read at scrape time (indexes, term,
/// watcher lag) are refreshed by [`Telemetry::render`].
pub struct Telemetry {
    registry: Registry,
    node: LogNode,
    grpc: Family<CallLabels, Histogram, LatencyHistogram>,
    leader_changes: Counter,
    term: Gauge,
    is_leader: Gauge,
    last_log_index: Gauge,
    committed_index: Gauge,
    applied_index: Gauge,
    last_seq: Gauge,
    watch_subscribers: Gauge,
    watch_lag_max: Gauge,
    watch_lag_sum: Gauge,
    rocksdb_memtable_bytes: Gauge,
    rocksdb_table_reader_bytes: Gauge,
    rocksdb_block_cache_bytes: Gauge,
}

impl Telemetry {
    pub fn new(node: LogNode) -> Arc<Telemetry> {
        let mut registry = Registry::default();
        node.store.metrics().register(&mut registry);
        let grpc = Family::new_with_constructor(LatencyHistogram);
        registry.register_with_unit(
            "claw_grpc_request",
            "gRPC requests by method and status code: time until the response headers (for streams, until the stream opens)",
            Unit::Seconds,
            grpc.clone(),
        );
        let leader_changes = Counter::<u64, AtomicU64>::default();
        registry.register(
            "claw_raft_leader_changes",
            "Times this member saw the cluster's leader change (elections it observed)",
            leader_changes.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let term = gauge(&mut registry, "claw_raft_term", "Current raft term");
        let is_leader = gauge(&mut registry, "claw_raft_is_leader", "1 if this member leads the cluster, else 0");
        let last_log_index = gauge(
            &mut registry,
            "claw_raft_last_log_index",
            "Last raft index in this member's log (appended, maybe not committed)",
        );
        let committed_index =
            gauge(&mut registry, "claw_raft_committed_index", "Highest raft index this member knows to be committed");
        let applied_index = gauge(
            &mut registry,
            "claw_raft_applied_index",
            "Highest raft index applied to this member's state machine",
        );
        let last_seq = gauge(&mut registry, "claw_events_last_seq", "Seq of the last event stored on this member");
        let watch_subscribers = gauge(&mut registry, "claw_watch_subscribers", "Open Watch streams on this member");
        let watch_lag_max = gauge(
            &mut registry,
            "claw_watch_lag_events_max",
            "Largest number of stored events a Watch stream has not yet handled",
        );
        let watch_lag_sum =
            gauge(&mut registry, "claw_watch_lag_events_sum", "Events not yet handled, summed over Watch streams");
        let rocksdb_memtable_bytes = gauge(
            &mut registry,
            "claw_rocksdb_memtable_bytes",
            "Bytes in RocksDB memtables (writes not yet flushed to table files), all column families",
        );
        let rocksdb_table_reader_bytes = gauge(
            &mut registry,
            "claw_rocksdb_table_reader_bytes",
            "Bytes of open RocksDB table files' index and filter blocks held outside the block cache",
        );
        let rocksdb_block_cache_bytes =
            gauge(&mut registry, "claw_rocksdb_block_cache_bytes", "Bytes of blocks in RocksDB's block caches");
        Arc::new(Telemetry {
            registry,
            node,
            grpc,
            leader_changes,
            term,
            is_leader,
            last_log_index,
            committed_index,
            applied_index,
            last_seq,
            watch_subscribers,
            watch_lag_max,
            watch_lag_sum,
            rocksdb_memtable_bytes,
            rocksdb_table_reader_bytes,
            rocksdb_block_cache_bytes,
        })
    }

    /// The exposition text, with scrape-time values read now.
    pub fn render(&self) -> String {
        {
            let m = self.node.raft.metrics();
            let m = m.borrow();
            self.term.set(as_i64(m.current_term));
            self.is_leader.set(i64::from(m.current_leader == Some(self.node.node_id())));
            self.last_log_index.set(as_i64(m.last_log_index.unwrap_or(0)));
            self.applied_index.set(as_i64(m.last_applied.map_or(0, |l| l.index)));
        }
        let log = self.node.store.metrics();
        self.committed_index.set(as_i64(log.committed_index()));
        let last = self.node.store.last_seq();
        self.last_seq.set(as_i64(last));
        let lags: Vec<u64> = log.watcher_positions().into_iter().map(|p| last.saturating_sub(p)).collect();
        self.watch_subscribers.set(as_i64(lags.len() as u64));
        self.watch_lag_max.set(as_i64(lags.iter().copied().max().unwrap_or(0)));
        self.watch_lag_sum.set(as_i64(lags.iter().sum()));
        let memory = self.node.store.storage_memory();
        self.rocksdb_memtable_bytes.set(as_i64(memory.memtable_bytes));
        self.rocksdb_table_reader_bytes.set(as_i64(memory.table_reader_bytes));
        self.rocksdb_block_cache_bytes.set(as_i64(memory.block_cache_bytes));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Counts leader changes as this member sees them, until `stop`.
    pub async fn watch_leader(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut metrics = self.node.raft.metrics();
        let mut leader = metrics.borrow().current_leader;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
            let now = metrics.borrow().current_leader;
            if now.is_some() && now != leader {
                self.leader_changes.inc();
            }
            if now.is_some() {
                leader = now;
            }
        }
    }

    /// A tower layer timing every request of the gRPC server.
    pub fn grpc_layer(self: &Arc<Self>) -> GrpcMetricsLayer {
        GrpcMetricsLayer { telemetry: self.clone() }
    }

    fn observe_call(&self, method: String, code: String, took: Duration) {
        self.grpc.get_or_create(&vec![("method", method), ("code", code)]).observe(took.as_secs_f64());
    }
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    telemetry: Arc<Telemetry>,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner, telemetry: self.telemetry.clone() }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

/// gRPC status "unimplemented": such calls are counted under one method
/// label, so unknown paths cannot grow the label set without bound.
const UNIMPLEMENTED: &str = "12";

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let started = Instant::now();
        let call = self.inner.call(req);
        let telemetry = self.telemetry.clone();
        Box::pin(async move {
            let result = call.await;
            let code = match &result {
                // Errors come back as "trailers only": the status is in the headers.
                // A success's status is in the trailers, after the body: 0.
                Ok(resp) if resp.status() == http::StatusCode::NOT_FOUND => "not_found".to_string(),
                Ok(resp) => resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_string(),
                Err(_) => "transport_error".to_string(),
            };
            let method = if code == UNIMPLEMENTED || code == "not_found" { "unknown".to_string() } else { method };
            telemetry.observe_call(method, code, started.elapsed());
            result
        })
    }
}
