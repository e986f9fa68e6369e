use std::collections::BTreeSet;
use std::fmt;

use claw_log::{EventFilter, EventStore};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use crate::Result;

/// The part of a query's `WHERE` clause that a scan of the log applies
/// itself: a seq range, a time range (turned into a seq range through
/// `EventStore::seq_at_time`), and the kinds, node and workload that
/// `EventFilter` matches. Only conjuncts understood exactly are taken, so
/// DataFusion can drop its own filter for them and push `LIMIT` down.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogScan {
    /// Inclusive bounds; wide integers so `seq < 0` or `seq > u64::MAX` need no special case.
    min_seq: i128,
    max_seq: i128,
    /// Inclusive bounds on `time_ms`.
    min_time_ms: i128,
    max_time_ms: i128,
    /// `None`: any kind.
    kinds: Option<BTreeSet<String>>,
    node: Option<String>,
    workload: Option<String>,
    /// Two conjuncts contradict each other (`node = 'a' AND node = 'b'`).
    empty: bool,
}

/// Which columns of a log table a scan can filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pushable {
    pub(crate) kind: bool,
    pub(crate) workload: bool,
}

/// The seqs a scan reads and the filter it reads them with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SeqRange {
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) filter: EventFilter,
    /// Records outside this time range are skipped even inside the seq range.
    pub(crate) time_ms: (i64, i64),
}

impl Default for LogScan {
    fn default() -> Self {
        LogScan {
            min_seq: 1,
            max_seq: u64::MAX as i128,
            min_time_ms: i64::MIN as i128,
            max_time_ms: i64::MAX as i128,
            kinds: None,
            node: None,
            workload: None,
            empty: false,
        }
    }
}

impl LogScan {
    /// A scan restricted to these kinds (the `metrics` table reads only GPU samples).
    pub(crate) fn of_kinds(kinds: &[&str]) -> Self {
        LogScan { kinds: Some(kinds.iter().map(|k| k.to_string()).collect()), ..LogScan::default() }
    }

    /// Adds the conjunct `expr` if it is understood exactly; otherwise leaves
    /// the scan as it was and returns false.
    pub(crate) fn push(&mut self, expr: &Expr, cols: Pushable) -> bool {
        let mut next = self.clone();
        let ok = next.push_inner(expr, cols);
        if ok {
            *self = next;
        }
        ok
    }

    fn push_inner(&mut self, expr: &Expr, cols: Pushable) -> bool {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                self.push_inner(left, cols) && self.push_inner(right, cols)
            }
            // `kind = 'a' OR kind = 'b'` and `kind IN ('a', 'b')` are one filter on kinds.
            Expr::BinaryExpr(BinaryExpr { op: Operator::Or, .. }) | Expr::InList(_) => match kinds_of(expr) {
                Some(kinds) if cols.kind => {
                    self.restrict_kinds(kinds);
                    true
                }
                _ => false,
            },
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if let (Some(col), Some(v)) = (column(left), literal(right)) {
                    self.compare(col, *op, v, cols)
                } else if let (Some(v), Some(col), Some(op)) = (literal(left), column(right), op.swap()) {
                    self.compare(col, op, v, cols)
                } else {
                    false
                }
            }
            Expr::Between(Between { expr, negated: false, low, high }) => {
                match (column(expr), literal(low), literal(high)) {
                    (Some(col), Some(lo), Some(hi)) => {
                        self.compare(col, Operator::GtEq, lo, cols) && self.compare(col, Operator::LtEq, hi, cols)
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    fn compare(&mut self, col: Col<'_>, op: Operator, v: &ScalarValue, cols: Pushable) -> bool {
        match col.name {
            "seq" if col.cast.is_none_or(|t| t.is_integer()) => {
                let Some(v) = integer(v) else { return false };
                let (lo, hi) = match op {
                    Operator::Eq => (v, v),
                    Operator::Gt => (v + 1, i128::MAX),
                    Operator::GtEq => (v, i128::MAX),
                    Operator::Lt => (i128::MIN, v - 1),
                    Operator::LtEq => (i128::MIN, v),
                    _ => return false,
                };
                self.min_seq = self.min_seq.max(lo);
                self.max_seq = self.max_seq.min(hi);
                true
            }
            "time" if col.cast.is_none_or(|t| matches!(t, DataType::Timestamp(..))) => {
                let Some(ns) = timestamp_ns(v) else { return false };
                // `time` holds whole milliseconds: compare them with the
                // literal's nanoseconds, rounding so the bounds stay exact.
                let floor = ns.div_euclid(1_000_000);
                let ceil = -((-ns).div_euclid(1_000_000));
                let (lo, hi) = match op {
                    Operator::Eq => (ceil, floor),
                    Operator::Gt => (floor + 1, i128::MAX),
                    Operator::GtEq => (ceil, i128::MAX),
                    Operator::Lt => (i128::MIN, ceil - 1),
                    Operator::LtEq => (i128::MIN, floor),
                    _ => return false,
                };
                self.min_time_ms = self.min_time_ms.max(lo);
                self.max_time_ms = self.max_time_ms.min(hi);
                true
            }
            "kind" | "node" | "workload" if op == Operator::Eq && col.cast.is_none_or(is_string) => {
                let Some(s) = string(v) else { return false };
                match col.name {
                    "kind" if cols.kind => self.restrict_kinds(BTreeSet::from([s])),
                    "node" => self.empty |= self.node.replace(s.clone()).is_some_and(|n| n != s),
                    "workload" if cols.workload => {
                        self.empty |= self.workload.replace(s.clone()).is_some_and(|w| w != s)
                    }
                    _ => return false,
                }
                true
            }
            _ => false,
        }
    }

    fn restrict_kinds(&mut self, kinds: BTreeSet<String>) {
        let kinds = match self.kinds.take() {
            Some(have) => have.intersection(&kinds).cloned().collect(),
            None => kinds,
        };
        self.empty |= kinds.is_empty();
        self.kinds = Some(kinds);
    }

    /// The inclusive time range the pushed filters allow, in ms.
    pub(crate) fn time_bounds(&self) -> (i64, i64) {
        let clamp = |t: i128| t.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        (clamp(self.min_time_ms), clamp(self.max_time_ms))
    }

    /// The node the pushed filters require, if any.
    pub(crate) fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The seqs to read, as of now: `None` when nothing can match. Time
    /// bounds become seq bounds because event times never decrease along
    /// the log.
    pub(crate) fn resolve(&self, store: &EventStore) -> Result<Option<SeqRange>> {
        let last = store.last_seq() as i128;
        let mut from = self.min_seq.max(store.oldest_seq() as i128).max(1);
        let mut to = self.max_seq.min(last);
        if self.empty || from > to || self.min_time_ms > self.max_time_ms {
            return Ok(None);
        }
        let clamp = |t: i128| t.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        let time_ms = (clamp(self.min_time_ms), clamp(self.max_time_ms));
        if time_ms.0 > i64::MIN {
            from = from.max(store.seq_at_time(time_ms.0 - 1)? as i128 + 1);
        }
        if time_ms.1 < i64::MAX {
            to = to.min(store.seq_at_time(time_ms.1)? as i128);
        }
        if from > to {
            return Ok(None);
        }
        let filter = EventFilter {
            kinds: self.kinds.iter().flatten().cloned().collect(),
            node: self.node.clone(),
            workload: self.workload.clone(),
        };
        Ok(Some(SeqRange { from: from as u64, to: to as u64, filter, time_ms }))
    }
}

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq={}..={}", self.from, self.to)?;
        if !self.filter.kinds.is_empty() {
            write!(f, ", kinds=[{}]", self.filter.kinds.join(", "))?;
        }
        if let Some(n) = &self.filter.node {
            write!(f, ", node={n}")?;
        }
        if let Some(w) = &self.filter.workload {
            write!(f, ", workload={w}")?;
        }
        Ok(())
    }
}

/// A column reference, possibly under a cast that the type checker added.
#[derive(Clone, Copy)]
struct Col<'a> {
    name: &'a str,
    cast: Option<&'a DataType>,
}

/// The kinds an expression made only of `kind = '…'`, `kind IN (…)` and `OR` accepts.
fn kinds_of(e: &Expr) -> Option<BTreeSet<String>> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let mut kinds = kinds_of(left)?;
            kinds.extend(kinds_of(right)?);
            Some(kinds)
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
            let (col, v) = match (column(left), literal(right)) {
                (Some(c), Some(v)) => (c, v),
                _ => (column(right)?, literal(left)?),
            };
            (col.name == "kind" && col.cast.is_none_or(is_string)).then(|| string(v).map(|s| BTreeSet::from([s])))?
        }
        Expr::InList(InList { expr, list, negated: false }) => {
            let col = column(expr)?;
            if col.name != "kind" || !col.cast.is_none_or(is_string) {
                return None;
            }
            list.iter().map(|e| literal(e).and_then(string)).collect()
        }
        _ => None,
    }
}

fn column(e: &Expr) -> Option<Col<'_>> {
    match e {
        Expr::Column(c) => Some(Col { name: &c.name, cast: None }),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Column(col) => Some(Col { name: &col.name, cast: Some(c.field.data_type()) }),
            _ => None,
        },
        Expr::TryCast(c) => match c.expr.as_ref() {
            Expr::Column(col) => Some(Col { name: &col.name, cast: Some(c.field.data_type()) }),
            _ => None,
        },
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) if !v.is_null() => Some(v),
        _ => None,
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn string(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Some(s.clone())
        }
        _ => None,
    }
}

fn integer(v: &ScalarValue) -> Option<i128> {
    Some(match v {
        ScalarValue::Int8(Some(x)) => *x as i128,
        ScalarValue::Int16(Some(x)) => *x as i128,
        ScalarValue::Int32(Some(x)) => *x as i128,
        ScalarValue::Int64(Some(x)) => *x as i128,
        ScalarValue::UInt8(Some(x)) => *x as i128,
        ScalarValue::UInt16(Some(x)) => *x as i128,
        ScalarValue::UInt32(Some(x)) => *x as i128,
        ScalarValue::UInt64(Some(x)) => *x as i128,
        _ => return None,
    })
}

/// A timestamp literal in nanoseconds since the epoch, whatever its unit.
fn timestamp_ns(v: &ScalarValue) -> Option<i128> {
    Some(match v {
        ScalarValue::TimestampSecond(Some(x), _) => *x as i128 * 1_000_000_000,
        ScalarValue::TimestampMillisecond(Some(x), _) => *x as i128 * 1_000_000,
        ScalarValue::TimestampMicrosecond(Some(x), _) => *x as i128 * 1_000,
        ScalarValue::TimestampNanosecond(Some(x), _) => *x as i128,
        _ => return None,
    })
}
