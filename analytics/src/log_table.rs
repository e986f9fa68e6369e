use std::sync::Arc;

use async_trait::async_trait;
use claw_log::EventStore;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::log_scan::{LogScan, Pushable};
use crate::log_scan_exec::{LogScanExec, RowShape};
use crate::scan_stats::ScanStatsSink;

/// A table read straight from the event log: `events` (one row per event)
/// or `metrics` (one row per GPU sample). Nothing is cached; every query
/// reads the pages it needs.
pub(crate) struct LogTable {
    store: EventStore,
    shape: RowShape,
    sink: ScanStatsSink,
}

impl LogTable {
    pub(crate) fn new(store: EventStore, shape: RowShape, sink: ScanStatsSink) -> Self {
        LogTable { store, shape, sink }
    }

    fn base(&self) -> (LogScan, Pushable) {
        match self.shape {
            RowShape::Events => (LogScan::default(), Pushable { kind: true, workload: true }),
            RowShape::GpuSamples => {
                (LogScan::of_kinds(&["GpuMetricsObserved"]), Pushable { kind: false, workload: false })
            }
        }
    }
}

#[async_trait]
impl TableProvider for LogTable {
    fn schema(&self) -> SchemaRef {
        self.shape.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let (base, cols) = self.base();
        Ok(filters
            .iter()
            .map(|f| {
                if base.clone().push(f, cols) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (mut scan, cols) = self.base();
        for f in filters {
            if !scan.push(f, cols) {
                // Only filters accepted as exact reach here; dropping one
                // would return wrong rows, so refuse instead.
                return Err(DataFusionError::Internal(format!("filter {f} was not pushed into the log scan")));
            }
        }
        let range = scan.resolve(&self.store).map_err(DataFusionError::from)?;
        let projection = projection.cloned().unwrap_or_else(|| (0..self.shape.schema().fields().len()).collect());
        let exec = LogScanExec::new(self.store.clone(), self.shape, range, projection, limit, self.sink.clone())?;
        Ok(Arc::new(exec))
    }
}

impl std::fmt::Debug for LogTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogTable").field("shape", &self.shape).finish_non_exhaustive()
    }
}
