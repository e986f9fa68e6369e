use std::sync::{Arc, LazyLock};

use claw_commands::{Event, EventRecord};
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::events_batch::{batch, time_type};
use crate::Result;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", time_type(), false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("node", DataType::Utf8, false),
        Field::new("gpu_uuid", DataType::Utf8, false),
        Field::new("utilization_pct", DataType::Float64, false),
        Field::new("memory_used_mb", DataType::UInt64, false),
        Field::new("temperature_c", DataType::Float64, false),
        Field::new("power_w", DataType::Float64, false),
        Field::new("sm_clock_mhz", DataType::UInt32, false),
        Field::new("ecc_corrected", DataType::UInt64, false),
        Field::new("ecc_uncorrected", DataType::UInt64, false),
        // Comma-separated NVML throttle reasons; empty when not throttled.
        Field::new("throttle_reasons", DataType::Utf8, false),
        // Comma-separated XID codes raised since the previous sample.
        Field::new("xid_errors", DataType::Utf8, false),
    ]))
});

/// Builds `metrics` rows: one per GPU sample of each `GpuMetricsObserved`
/// event. The columns are cheap, so all are built and then projected.
#[derive(Default)]
pub(crate) struct MetricsBatch {
    time: TimestampMillisecondBuilder,
    seq: UInt64Builder,
    node: StringBuilder,
    gpu_uuid: StringBuilder,
    utilization_pct: Float64Builder,
    memory_used_mb: UInt64Builder,
    temperature_c: Float64Builder,
    power_w: Float64Builder,
    sm_clock_mhz: UInt32Builder,
    ecc_corrected: UInt64Builder,
    ecc_uncorrected: UInt64Builder,
    throttle_reasons: StringBuilder,
    xid_errors: StringBuilder,
    rows: usize,
}

impl MetricsBatch {
    /// The full schema of `metrics`.
    pub(crate) fn schema() -> SchemaRef {
        SCHEMA.clone()
    }

    /// Appends the event's samples (none for any other kind); returns how many.
    pub(crate) fn append(&mut self, rec: &EventRecord) -> usize {
        let Event::GpuMetricsObserved { node, samples } = &rec.event else {
            return 0;
        };
        for s in samples {
            self.time.append_value(rec.time_ms);
            self.seq.append_value(rec.seq);
            self.node.append_value(node);
            self.gpu_uuid.append_value(&s.gpu_uuid);
            self.utilization_pct.append_value(s.utilization_pct);
            self.memory_used_mb.append_value(s.memory_used_mb);
            self.temperature_c.append_value(s.temperature_c);
            self.power_w.append_value(s.power_w);
            self.sm_clock_mhz.append_value(s.sm_clock_mhz);
            self.ecc_corrected.append_value(s.ecc_corrected);
            self.ecc_uncorrected.append_value(s.ecc_uncorrected);
            self.throttle_reasons.append_value(s.throttle_reasons.join(","));
            let xids: Vec<String> = s.xid_errors.iter().map(u64::to_string).collect();
            self.xid_errors.append_value(xids.join(","));
        }
        self.rows += samples.len();
        samples.len()
    }

    /// The rows appended so far, keeping the columns at `projection`.
    pub(crate) fn finish(&mut self, projection: &[usize], schema: SchemaRef) -> Result<RecordBatch> {
        let all: [ArrayRef; 13] = [
            Arc::new(self.time.finish().with_timezone("UTC")),
            Arc::new(self.seq.finish()),
            Arc::new(self.node.finish()),
            Arc::new(self.gpu_uuid.finish()),
            Arc::new(self.utilization_pct.finish()),
            Arc::new(self.memory_used_mb.finish()),
            Arc::new(self.temperature_c.finish()),
            Arc::new(self.power_w.finish()),
            Arc::new(self.sm_clock_mhz.finish()),
            Arc::new(self.ecc_corrected.finish()),
            Arc::new(self.ecc_uncorrected.finish()),
            Arc::new(self.throttle_reasons.finish()),
            Arc::new(self.xid_errors.finish()),
        ];
        let rows = std::mem::take(&mut self.rows);
        batch(schema, projection.iter().map(|&i| all[i].clone()).collect(), rows)
    }
}
