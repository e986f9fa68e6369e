use std::sync::Arc;

use async_trait::async_trait;
use claw_log::{EventStore, Resolution, RollupRow, Stat};
use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::events_batch::{batch, time_type};
use crate::log_scan::{LogScan, Pushable};

const READINGS: [&str; 4] = ["utilization_pct", "memory_used_mb", "temperature_c", "power_w"];
const STATS: [&str; 4] = ["min", "avg", "max", "p95"];

/// `metrics_1m` / `metrics_1h`: GPU metric rollups (one row per GPU per
/// closed bucket) read from the rollups column family. Filters on `time`
/// and `node` narrow the read; DataFusion re-applies every filter, so any
/// other predicate is still exact.
pub(crate) struct RollupTable {
    store: EventStore,
    res: Resolution,
}

impl RollupTable {
    pub(crate) fn new(store: EventStore, res: Resolution) -> Self {
        RollupTable { store, res }
    }

    pub(crate) fn name(res: Resolution) -> String {
        format!("metrics_{}", res.name())
    }

    fn schema_ref() -> SchemaRef {
        let mut fields = vec![
            Field::new("time", time_type(), false),
            Field::new("node", DataType::Utf8, false),
            Field::new("gpu_uuid", DataType::Utf8, false),
            Field::new("samples", DataType::UInt64, false),
        ];
        for r in READINGS {
            for s in STATS {
                fields.push(Field::new(format!("{r}_{s}"), DataType::Float64, false));
            }
        }
        Arc::new(Schema::new(fields))
    }

    fn batch(rows: &[RollupRow]) -> crate::Result<datafusion::arrow::record_batch::RecordBatch> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(
                rows.iter().map(|r| Some(r.bucket_ms)).collect::<TimestampMillisecondArray>().with_timezone("UTC"),
            ),
            Arc::new(rows.iter().map(|r| Some(r.node.as_str())).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| Some(r.gpu_uuid.as_str())).collect::<StringArray>()),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.samples))),
        ];
        let readings: [fn(&RollupRow) -> Stat; 4] =
            [|r| r.utilization_pct, |r| r.memory_used_mb, |r| r.temperature_c, |r| r.power_w];
        let stats: [fn(Stat) -> f64; 4] = [|s| s.min, |s| s.avg, |s| s.max, |s| s.p95];
        for reading in readings {
            for stat in stats {
                cols.push(Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| stat(reading(r))))));
            }
        }
        batch(Self::schema_ref(), cols, rows.len())
    }
}

#[async_trait]
impl TableProvider for RollupTable {
    fn schema(&self) -> SchemaRef {
        Self::schema_ref()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Only the time range and node of the filters are used to narrow
        // the read (a conjunct not understood narrows nothing).
        let mut scan = LogScan::default();
        for f in filters {
            scan.push(f, Pushable { kind: false, workload: false });
        }
        let ((from, to), node) = (scan.time_bounds(), scan.node().map(str::to_string));
        let (store, res) = (self.store.clone(), self.res);
        let rows = tokio::task::spawn_blocking(move || store.rollups(res, from, to, node.as_deref()))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::from(crate::Error::from(e)))?;
        let batch = Self::batch(&rows).map_err(DataFusionError::from)?;
        let table = MemTable::try_new(Self::schema_ref(), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}

impl std::fmt::Debug for RollupTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollupTable").field("res", &self.res).finish_non_exhaustive()
    }
}
