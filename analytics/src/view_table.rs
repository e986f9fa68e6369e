use std::sync::Arc;

use async_trait::async_trait;
use claw_log::EventStore;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::view_kind::ViewKind;

/// A projection table: the live cluster view (`nodes`), or the view right
/// after a past seq (what `nodes_at(x)` returns). Rows are built when the
/// query is planned, so one query sees one consistent view.
pub(crate) struct ViewTable {
    store: EventStore,
    kind: ViewKind,
    /// `None`: the live view.
    at_seq: Option<u64>,
    /// Whether a past workload table may be read from a columnar base.
    bases: bool,
}

impl ViewTable {
    pub(crate) fn live(store: EventStore, kind: ViewKind) -> Self {
        ViewTable { store, kind, at_seq: None, bases: false }
    }

    pub(crate) fn at(store: EventStore, kind: ViewKind, seq: u64, bases: bool) -> Self {
        ViewTable { store, kind, at_seq: Some(seq), bases }
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn table_type(&self) -> TableType {
        match self.at_seq {
            None => TableType::View,
            Some(_) => TableType::Temporary,
        }
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let kind = self.kind;
        // Only the columns the query reads are built (none for `count(*)`).
        let columns: Option<Vec<usize>> = projection.cloned();
        let batch = match self.at_seq {
            // Borrow the live view under its read lock instead of cloning it.
            None => self.store.with_view(|v| kind.batch_of(v, columns.as_deref())),
            Some(seq) => {
                // A past view costs a checkpoint load plus a bounded replay:
                // RocksDB work, so off the async threads.
                let store = self.store.clone();
                let unread = kind.unread_row_fields(columns.as_deref());
                let bases = self.bases;
                tokio::task::spawn_blocking(move || {
                    if bases && kind == ViewKind::Workloads {
                        if let Some(batch) = crate::seance_base::workloads_at(&store, seq, columns.as_deref())? {
                            return Ok(batch);
                        }
                    }
                    let view = store.view_at_summaries_without(seq, kind.tables(), &unread)?;
                    kind.batch_of(&view, columns.as_deref())
                })
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
            }
        }
        .map_err(DataFusionError::from)?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        table.scan(state, None, filters, limit).await
    }
}

impl std::fmt::Debug for ViewTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewTable").field("kind", &self.kind).field("at_seq", &self.at_seq).finish_non_exhaustive()
    }
}
