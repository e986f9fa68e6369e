use std::fmt;
use std::sync::Arc;

use claw_commands::EventRecord;
use claw_log::{EventHead, EventStore};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{expressions::Column, EquivalenceProperties, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PhysicalExpr, PlanProperties,
};

use crate::events_batch::{EventsBatch, Row};
use crate::log_scan::SeqRange;
use crate::metrics_batch::MetricsBatch;
use crate::scan_stats::{ScanCounters, ScanStatsSink};

/// How many seqs one blocking read of RocksDB covers at most, so a very
/// selective filter still yields to the runtime (and to cancellation) often.
const SPAN: u64 = 16_384;

/// Which table's rows a scan of the log produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowShape {
    /// `events`: one row per record.
    Events,
    /// `metrics`: one row per GPU sample.
    GpuSamples,
}

impl RowShape {
    pub(crate) fn schema(self) -> SchemaRef {
        match self {
            RowShape::Events => EventsBatch::schema(),
            RowShape::GpuSamples => MetricsBatch::schema(),
        }
    }

    fn table(self) -> &'static str {
        match self {
            RowShape::Events => "events",
            RowShape::GpuSamples => "metrics",
        }
    }
}

/// Streams a table's rows straight from the log, a page at a time, reading
/// only the seq range and kinds that the pushed-down filters allow.
pub(crate) struct LogScanExec {
    store: EventStore,
    shape: RowShape,
    /// `None`: no event can match the filters.
    range: Option<SeqRange>,
    /// Reads only the events' heads ([`claw_log::EventHead`]), not their fields.
    heads_only: bool,
    projection: Vec<usize>,
    schema: SchemaRef,
    limit: Option<usize>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    sink: ScanStatsSink,
}

impl LogScanExec {
    pub(crate) fn new(
        store: EventStore,
        shape: RowShape,
        range: Option<SeqRange>,
        projection: Vec<usize>,
        limit: Option<usize>,
        sink: ScanStatsSink,
    ) -> DfResult<Self> {
        let schema = Arc::new(shape.schema().project(&projection)?);
        // Rows come out in seq order, hence also in (non-decreasing) time
        // order; saying so lets DataFusion skip sorts on either.
        let orderings = ["seq", "time"].into_iter().filter_map(|name| {
            let i = schema.index_of(name).ok()?;
            let expr: Arc<dyn PhysicalExpr> = Arc::new(Column::new(name, i));
            Some([PhysicalSortExpr::new(expr, SortOptions::default())])
        });
        let eq = EquivalenceProperties::new_with_orderings(schema.clone(), orderings);
        let props = PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        // Without node, workload or payload columns or filters, the events'
        // heads are enough, and far cheaper to decode.
        let heads_only = shape == RowShape::Events
            && EventsBatch::heads_suffice(&projection)
            && range.as_ref().is_none_or(|r| r.filter.node.is_none() && r.filter.workload.is_none());
        Ok(LogScanExec {
            store,
            shape,
            range,
            heads_only,
            projection,
            schema,
            limit,
            props: Arc::new(props),
            metrics: ExecutionPlanMetricsSet::new(),
            sink,
        })
    }
}

impl DisplayAs for LogScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LogScanExec: table={}, ", self.shape.table())?;
        match &self.range {
            Some(r) => write!(f, "{r}")?,
            None => write!(f, "empty")?,
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        if self.heads_only {
            write!(f, ", read=heads")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LogScanExec {
    fn name(&self) -> &str {
        "LogScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal("LogScanExec has no children".into()));
        }
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let counters = Arc::new(ScanCounters::new(self.shape.table()));
        self.sink.started(counters.clone());
        let page = Page {
            store: self.store.clone(),
            shape: self.shape,
            next: self.range.as_ref().map_or(1, |r| r.from),
            range: self.range.clone(),
            heads_only: self.heads_only,
            remaining: self.limit.unwrap_or(usize::MAX),
            batch_rows: context.session_config().batch_size().max(1),
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            rows_read: MetricBuilder::new(&self.metrics).counter("rows_read", partition),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            counters,
        };
        let stream = futures::stream::try_unfold(page, |mut page| async move {
            match page.next_batch().await? {
                Some(batch) => Ok(Some((batch, page))),
                None => {
                    page.baseline.done();
                    Ok(None)
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The state of one scan between pages.
struct Page {
    store: EventStore,
    shape: RowShape,
    range: Option<SeqRange>,
    heads_only: bool,
    /// The first seq not examined yet.
    next: u64,
    remaining: usize,
    batch_rows: usize,
    projection: Vec<usize>,
    schema: SchemaRef,
    rows_read: Count,
    baseline: BaselineMetrics,
    counters: Arc<ScanCounters>,
}

impl Page {
    /// Reads pages until one yields rows; `None` at the end of the range or the limit.
    async fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        let Some(range) = self.range.clone() else { return Ok(None) };
        while self.next <= range.to && self.remaining > 0 {
            let from = self.next;
            let to = range.to.min(from.saturating_add(SPAN - 1));
            // A page of GPU samples has several rows per event; ask for
            // events by the batch size and cut the rows at the limit below.
            let want = match self.shape {
                RowShape::Events => self.batch_rows.min(self.remaining),
                RowShape::GpuSamples => self.batch_rows,
            };
            let store = self.store.clone();
            let filter = range.filter.clone();
            let heads = self.heads_only;
            let (recs, examined_to, read) = tokio::task::spawn_blocking(move || {
                if heads {
                    let heads = store.event_heads(from, Some(to), want, &filter.kinds)?;
                    // Seqs are dense and read in order, so what was examined
                    // is known exactly: up to the last match when the page
                    // filled, else all.
                    let examined_to = match heads.last() {
                        Some(last) if heads.len() == want => last.seq,
                        _ => to,
                    };
                    Ok((Rows::Heads(heads), examined_to, examined_to + 1 - from))
                } else {
                    // A node or workload filter reads through the subject index.
                    let page = store.events_page(from, Some(to), want, &filter)?;
                    let examined_to = if page.records.len() < want { to } else { page.examined_to };
                    Ok((Rows::Records(page.records), examined_to, page.read))
                }
            })
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e: claw_log::Error| DataFusionError::External(Box::new(crate::Error::Log(e))))?;
            self.next = examined_to + 1;
            self.rows_read.add(read as usize);
            self.counters.add_read(read);
            let batch = {
                let _timer = self.baseline.elapsed_compute().timer();
                self.build(&recs, range.time_ms)?
            };
            if batch.num_rows() > 0 {
                self.remaining -= batch.num_rows();
                self.baseline.record_output(batch.num_rows());
                self.baseline.output_batches().add(1);
                self.counters.add_returned(batch.num_rows() as u64);
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    fn build(&self, rows: &Rows, (t0, t1): (i64, i64)) -> crate::Result<RecordBatch> {
        // The seq range already honours the time bounds when times never
        // decrease; checking each record keeps the answer exact if a clock
        // ever stepped back.
        let in_time = |t: i64| (t0..=t1).contains(&t);
        match (self.shape, rows) {
            (RowShape::Events, rows) => {
                let mut b = EventsBatch::new(&self.projection);
                let rows: Box<dyn Iterator<Item = Row<'_>>> = match rows {
                    Rows::Records(recs) => Box::new(recs.iter().map(Row::of_record)),
                    Rows::Heads(heads) => Box::new(heads.iter().map(Row::of_head)),
                };
                for r in rows.filter(|r| in_time(r.time_ms())).take(self.remaining) {
                    b.append(&r)?;
                }
                b.finish(self.schema.clone())
            }
            (RowShape::GpuSamples, Rows::Heads(_)) => {
                Err(crate::Error::Encode("the metrics table needs whole events".to_string()))
            }
            (RowShape::GpuSamples, Rows::Records(recs)) => {
                let mut b = MetricsBatch::default();
                for r in recs.iter().filter(|r| in_time(r.time_ms)) {
                    b.append(r);
                }
                let batch = b.finish(&self.projection, self.schema.clone())?;
                Ok(batch.slice(0, batch.num_rows().min(self.remaining)))
            }
        }
    }
}

/// A page of the log as read: whole records, or only their heads.
enum Rows {
    Records(Vec<EventRecord>),
    Heads(Vec<EventHead>),
}

impl fmt::Debug for LogScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogScanExec")
            .field("shape", &self.shape)
            .field("range", &self.range)
            .field("projection", &self.projection)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}
