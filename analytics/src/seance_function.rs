use std::sync::Arc;

use claw_log::EventStore;
use datafusion::arrow::array::RecordBatchOptions;
use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::ColumnarValue;

use crate::view_kind::ViewKind;
use crate::view_table::ViewTable;

/// `nodes_at(x)`, `workloads_at(x)`, …: a projection table as it was right
/// after seq `x`, or at time `x` (a timestamp, or a string such as
/// `'2026-01-02T03:04:05Z'`, mapped to the last event at or before it).
pub(crate) struct SeanceFunction {
    store: EventStore,
    kind: ViewKind,
    bases: bool,
}

impl SeanceFunction {
    pub(crate) fn new(store: EventStore, kind: ViewKind, bases: bool) -> Self {
        SeanceFunction { store, kind, bases }
    }

    fn name(&self) -> String {
        format!("{}_at", self.kind.table())
    }

    fn seq_of(&self, v: &ScalarValue) -> DfResult<u64> {
        let bad = |why: String| DataFusionError::Plan(format!("{}({v}): {why}", self.name()));
        if v.is_null() {
            return Err(bad("the argument is NULL; pass a seq or a time".into()));
        }
        let seq = if v.data_type().is_integer() {
            match v.cast_to(&DataType::UInt64) {
                Ok(ScalarValue::UInt64(Some(seq))) => seq,
                _ => return Err(bad("a seq must be zero or more".into())),
            }
        } else if let Some(seq) = as_str(v).and_then(|s| s.trim().parse::<u64>().ok()) {
            seq
        } else {
            // Strings are parsed as RFC 3339 (a missing offset means UTC);
            // dates and timestamps of any unit are taken as they are.
            let ns = v
                .cast_to(&DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())))
                .ok()
                .and_then(|t| match t {
                    ScalarValue::TimestampNanosecond(Some(ns), _) => Some(ns),
                    _ => None,
                })
                .ok_or_else(|| {
                    bad("expected a seq (integer) or a time (timestamp or RFC 3339 string like '2026-01-02T03:04:05Z')"
                        .into())
                })?;
            self.store.seq_at_time(ns.div_euclid(1_000_000)).map_err(|e| bad(e.to_string()))?
        };
        let last = self.store.last_seq();
        if seq > last {
            return Err(bad(format!("seq {seq} is after the last event (seq {last})")));
        }
        Ok(seq)
    }
}

impl TableFunctionImpl for SeanceFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let [expr] = args.exprs() else {
            return Err(DataFusionError::Plan(format!(
                "{}() takes one argument, a seq or a time, got {}",
                self.name(),
                args.exprs().len()
            )));
        };
        // Evaluate the argument as a constant, so `now() - INTERVAL '1 hour'`
        // works as well as a literal.
        let phys = args.session().create_physical_expr(expr.clone(), &DFSchema::empty())?;
        let one_row = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )?;
        let value = match phys.evaluate(&one_row)? {
            ColumnarValue::Scalar(v) => v,
            ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0)?,
        };
        let seq = self.seq_of(&value)?;
        Ok(Arc::new(ViewTable::at(self.store.clone(), self.kind, seq, self.bases)))
    }
}

fn as_str(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Some(s),
        _ => None,
    }
}

impl std::fmt::Debug for SeanceFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeanceFunction").field("kind", &self.kind).finish_non_exhaustive()
    }
}
