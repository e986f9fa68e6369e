use std::path::Path;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use claw_log::EventStore;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};

use crate::export_format::ExportFormat;
use crate::flight_sql_server::FlightSqlServer;
use crate::log_scan_exec::RowShape;
use crate::log_table::LogTable;
use crate::rollup_table::RollupTable;
use crate::scan_stats::{ScanStats, ScanStatsSink};
use crate::seance_base::{default_spacing, WorkloadBases};
use crate::seance_function::SeanceFunction;
use crate::view_kind::ViewKind;
use crate::view_table::ViewTable;
use crate::{Error, Result};

/// Memory that the sorts, joins and aggregations of all queries together
/// may hold before a query fails, so that SQL cannot starve the member.
const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// SQL over one member's event log. Cheap to clone; every query gets a
/// fresh [`SessionContext`] with the tables and seance functions registered.
#[derive(Clone)]
pub struct Analytics {
    store: EventStore,
    runtime: Arc<RuntimeEnv>,
    stats: ScanStatsSink,
    /// Whether `workloads_at(x)` reads the workload table's bases.
    bases: bool,
}

impl Analytics {
    /// Queries over `store`, with a 1 GiB memory limit shared by all queries.
    pub fn new(store: EventStore) -> Analytics {
        Analytics::with_memory_limit(store, DEFAULT_MEMORY_LIMIT)
    }

    /// Queries over `store` whose operators together hold at most `bytes`.
    pub fn with_memory_limit(store: EventStore, bytes: usize) -> Analytics {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(bytes, 1.0)
            .build_arc()
            .unwrap_or_else(|_| Arc::new(RuntimeEnv::default()));
        Analytics { store, runtime, stats: ScanStatsSink::default(), bases: true }
    }

    /// Whether `workloads_at(x)` reads the workload table's columnar bases
    /// where stored (the default), or always the row checkpoints.
    pub fn with_workload_bases(mut self, read: bool) -> Analytics {
        self.bases = read;
        self
    }

    /// The log this instance reads.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// A session with `events`, `metrics`, the live projection tables
    /// (`members`, `nodes`, `gpus`, `workloads`, `proposals`) and their
    /// seance functions (`nodes_at(seq_or_time)`, …) registered.
    pub fn session(&self) -> SessionContext {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(config, self.runtime.clone());
        let log = |shape| Arc::new(LogTable::new(self.store.clone(), shape, self.stats.clone()));
        // Registering into a fresh in-memory catalog cannot fail, and no name repeats.
        let _ = ctx.register_table("events", log(RowShape::Events));
        let _ = ctx.register_table("metrics", log(RowShape::GpuSamples));
        for res in claw_log::Resolution::ALL {
            let _ = ctx.register_table(RollupTable::name(res), Arc::new(RollupTable::new(self.store.clone(), res)));
        }
        for kind in ViewKind::ALL {
            let _ = ctx.register_table(kind.table(), Arc::new(ViewTable::live(self.store.clone(), kind)));
            let seance = SeanceFunction::new(self.store.clone(), kind, self.bases);
            ctx.register_udtf(&format!("{}_at", kind.table()), Arc::new(seance));
        }
        ctx
    }

    /// Plans `sql` read-only: DDL, DML (`COPY … TO` a file included) and
    /// `SET` are refused, since the caller is a remote client.
    pub async fn plan(&self, sql: &str) -> Result<DataFrame> {
        tracing::debug!(sql, "planning query");
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        Ok(self.session().sql_with_options(sql, options).await?)
    }

    /// Runs `sql` and collects the whole answer.
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let df = self.plan(sql).await?;
        let schema = df.schema().inner().clone();
        let batches = df.collect().await?;
        Ok((schema, batches))
    }

    /// Runs `sql`, streaming the answer batch by batch.
    pub async fn query_stream(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        Ok(self.plan(sql).await?.execute_stream().await?)
    }

    /// The counters of the most recently started scan of `events` or
    /// `metrics`: records read from RocksDB against rows returned.
    pub fn last_scan_stats(&self) -> Option<ScanStats> {
        self.stats.last()
    }

    /// Writes the events `from_seq..=to_seq` (to the last one when `None`)
    /// to `out`, page by page; returns how many were written.
    pub async fn export_events(
        &self,
        from_seq: u64,
        to_seq: Option<u64>,
        format: ExportFormat,
        out: &Path,
    ) -> Result<u64> {
        let store = self.store.clone();
        let out = out.to_path_buf();
        tokio::task::spawn_blocking(move || format.export(&store, from_seq, to_seq, &out))
            .await
            .map_err(|e| Error::Encode(format!("export task failed: {e}")))?
    }

    /// Keeps columnar bases of the workload table as the log grows (see
    /// [`WorkloadBases`]), checking at most every `every` after new events:
    /// until `stop` turns true. Failures are logged and retried at the next
    /// check; reads fall back to the row checkpoints meanwhile.
    pub fn spawn_base_writer(
        &self,
        every: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut grown = store.subscribe();
            let mut bases = Some(WorkloadBases::default());
            loop {
                tokio::select! {
                    r = grown.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
                let (s, mut b) = (store.clone(), bases.take().unwrap_or_default());
                let written = tokio::task::spawn_blocking(move || {
                    let r = b.write_if_due(&s, default_spacing);
                    (b, r)
                })
                .await;
                match written {
                    Ok((b, result)) => {
                        bases = Some(b);
                        match result {
                            Ok(Some(seq)) => tracing::debug!(seq, "stored a workload table base"),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "could not store a workload table base"),
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "the workload table base task failed"),
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// The Arrow Flight SQL service over this instance, to mount on a tonic server.
    pub fn flight_service(&self) -> FlightServiceServer<FlightSqlServer> {
        FlightServiceServer::new(FlightSqlServer::new(self.clone()))
    }
}

/// Encodes batches as one Arrow IPC stream (schema first, then the batches).
pub fn batches_to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut w = StreamWriter::try_new(Vec::new(), schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(w.into_inner()?)
}
