//! GPU metric rollups: per GPU, per closed minute and per closed hour, the
//! min / avg / max / p95 of each reading, computed from the
//! `GpuMetricsObserved` events and stored in the `rollups` column family.
//!
//! Rollups are derived data, like the projections: each member computes
//! them from its own copy of the log, bucket by bucket, and a bucket is
//! closed once the log holds an event stamped after it, so every member
//! computes the same rows. Raw samples stay in the log; rollups make long
//! spans cheap to query and have their own retention.

use std::collections::BTreeMap;

use claw_commands::{Event, GpuSample};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::db::{decode_json, encode_json};
use crate::keys::{CF_EVENTS, CF_ROLLUPS};
use crate::{Error, EventFilter, EventStore, Result};

/// A rollup resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resolution {
    Minute,
    Hour,
}

impl Resolution {
    pub const ALL: [Resolution; 2] = [Resolution::Minute, Resolution::Hour];

    pub fn millis(self) -> i64 {
        match self {
            Resolution::Minute => 60_000,
            Resolution::Hour => 3_600_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }

    fn code(self) -> u8 {
        match self {
            Resolution::Minute => 0x01,
            Resolution::Hour => 0x02,
        }
    }

    fn floor(self, t: i64) -> i64 {
        t.div_euclid(self.millis()) * self.millis()
    }
}

/// Summary of one reading over a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Stat {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    /// Nearest-rank 95th percentile of the samples.
    pub p95: f64,
}

impl Stat {
    fn of(values: &mut [f64]) -> Stat {
        if values.is_empty() {
            return Stat::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        // Nearest rank: the smallest value with at least 95% of samples at or below it.
        let rank = (0.95 * n as f64).ceil() as usize;
        Stat {
            min: values[0],
            avg: values.iter().sum::<f64>() / n as f64,
            max: values[n - 1],
            p95: values[rank.clamp(1, n) - 1],
        }
    }
}

/// One GPU over one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollupRow {
    /// Start of the bucket, ms since the epoch.
    pub bucket_ms: i64,
    pub node: String,
    pub gpu_uuid: String,
    pub samples: u64,
    pub utilization_pct: Stat,
    pub memory_used_mb: Stat,
    pub temperature_c: Stat,
    pub power_w: Stat,
}

/// What one `roll_up` pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupProgress {
    /// Buckets closed per resolution (including empty ones skipped over).
    pub buckets: BTreeMap<&'static str, u64>,
    pub rows: u64,
    /// Rows deleted by retention.
    pub expired: BTreeMap<&'static str, u64>,
}

fn row_key(res: Resolution, bucket_ms: i64, node: &str, gpu: &str) -> Vec<u8> {
    let mut k = time_key(res, bucket_ms);
    k.extend_from_slice(node.as_bytes());
    k.push(0);
    k.extend_from_slice(gpu.as_bytes());
    k
}

/// `[code][bucket start, sign-flipped big-endian]`: rows sort by time.
fn time_key(res: Resolution, t: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    k.push(res.code());
    k.extend_from_slice(&((t as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// Where the next bucket to close starts.
fn watermark_key(res: Resolution) -> [u8; 2] {
    [0xFF, res.code()]
}

#[derive(Default)]
struct Acc {
    util: Vec<f64>,
    mem: Vec<f64>,
    temp: Vec<f64>,
    power: Vec<f64>,
}

impl Acc {
    fn add(&mut self, s: &GpuSample) {
        self.util.push(s.utilization_pct);
        self.mem.push(s.memory_used_mb as f64);
        self.temp.push(s.temperature_c);
        self.power.push(s.power_w);
    }
}

impl EventStore {
    /// Closes up to `max_buckets` buckets per resolution: every bucket that
    /// ends at or before the time of the last stored event and was not
    /// closed yet. Each bucket's rows and the new watermark are written in
    /// one batch, so a crash loses at most work that is redone.
    pub fn roll_up(&self, max_buckets: u64) -> Result<RollupProgress> {
        let mut progress = RollupProgress::default();
        let last = self.last_seq();
        if last == 0 {
            return Ok(progress);
        }
        let last_time = self.time_of(last)?;
        for res in Resolution::ALL {
            let closed_end = res.floor(last_time);
            let mut wm = match self.watermark(res)? {
                Some(wm) => wm,
                None => res.floor(self.time_of(self.oldest_seq().max(1))?),
            };
            let mut done = 0;
            while wm < closed_end && done < max_buckets {
                let end = wm + res.millis();
                let from = self.seq_at_time(wm - 1)? + 1;
                let to = self.seq_at_time(end - 1)?;
                let mut batch = WriteBatch::default();
                let cf = self.shared.db.cf(CF_ROLLUPS)?;
                let mut next = end;
                if from > to {
                    // No event in this bucket: skip to the bucket of the next event.
                    if to < last {
                        next = res.floor(self.time_of(to + 1)?).min(closed_end).max(end);
                    }
                } else {
                    let filter = EventFilter { kinds: vec!["GpuMetricsObserved".into()], ..Default::default() };
                    let mut accs: BTreeMap<(String, String), Acc> = BTreeMap::new();
                    let mut at = from;
                    while at <= to {
                        let (recs, after) = self.scan_events(at, to, 4096, &filter)?;
                        for rec in &recs {
                            if let Event::GpuMetricsObserved { node, samples } = &rec.event {
                                for s in samples {
                                    accs.entry((node.clone(), s.gpu_uuid.clone())).or_default().add(s);
                                }
                            }
                        }
                        if after <= at {
                            break;
                        }
                        at = after;
                    }
                    for ((node, gpu), mut a) in accs {
                        let row = RollupRow {
                            bucket_ms: wm,
                            samples: a.util.len() as u64,
                            utilization_pct: Stat::of(&mut a.util),
                            memory_used_mb: Stat::of(&mut a.mem),
                            temperature_c: Stat::of(&mut a.temp),
                            power_w: Stat::of(&mut a.power),
                            node,
                            gpu_uuid: gpu,
                        };
                        batch.put_cf(&cf, row_key(res, wm, &row.node, &row.gpu_uuid), encode_json("rollup row", &row)?);
                        progress.rows += 1;
                    }
                }
                batch.put_cf(&cf, watermark_key(res), next.to_be_bytes());
                drop(cf);
                self.shared.db.write(batch, false)?;
                *progress.buckets.entry(res.name()).or_default() += 1;
                wm = next;
                done += 1;
            }
        }
        Ok(progress)
    }

    /// Deletes the rows of `res` whose bucket started before `before_ms`.
    pub fn expire_rollups(&self, res: Resolution, before_ms: i64) -> Result<u64> {
        let start = time_key(res, i64::MIN);
        let end = time_key(res, before_ms);
        let mut n = 0u64;
        self.shared.db.scan(CF_ROLLUPS, &start, |k, _| {
            if k >= end.as_slice() {
                return Ok(false);
            }
            n += 1;
            Ok(true)
        })?;
        if n > 0 {
            self.shared.db.delete_range(CF_ROLLUPS, &start, &end)?;
        }
        Ok(n)
    }

    /// Rows of `res` with `from_ms <= bucket start <= to_ms`, in time order,
    /// optionally of one node only.
    pub fn rollups(&self, res: Resolution, from_ms: i64, to_ms: i64, node: Option<&str>) -> Result<Vec<RollupRow>> {
        let mut out = Vec::new();
        if from_ms > to_ms {
            return Ok(out);
        }
        let end = time_key(res, to_ms.saturating_add(1));
        self.shared.db.scan(CF_ROLLUPS, &time_key(res, from_ms), |k, v| {
            if k >= end.as_slice() || k.first() != Some(&res.code()) {
                return Ok(false);
            }
            let row: RollupRow = decode_json(CF_ROLLUPS, k, v)?;
            if node.is_none_or(|n| n == row.node) {
                out.push(row);
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Start of the next bucket of `res` to close (`None` before the first pass).
    pub fn rollup_watermark(&self, res: Resolution) -> Result<Option<i64>> {
        self.watermark(res)
    }

    fn watermark(&self, res: Resolution) -> Result<Option<i64>> {
        let Some(v) = self.shared.db.get_raw(CF_ROLLUPS, &watermark_key(res))? else { return Ok(None) };
        let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| {
            Error::decode(format!("rollup watermark {}", res.name()), format!("{} bytes, expected 8", v.len()))
        })?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    fn time_of(&self, seq: u64) -> Result<i64> {
        let recs = self.scan_events(seq, seq, 1, &EventFilter::default())?.0;
        recs.first()
            .map(|r| r.time_ms)
            .ok_or_else(|| Error::Storage(format!("event {seq} is missing from {CF_EVENTS}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_use_nearest_rank_p95() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Stat::of(&mut v);
        assert_eq!((s.min, s.avg, s.max, s.p95), (1.0, 50.5, 100.0, 95.0));
        let s = Stat::of(&mut [7.0]);
        assert_eq!((s.min, s.avg, s.max, s.p95), (7.0, 7.0, 7.0, 7.0));
        let s = Stat::of(&mut [3.0, 1.0, 2.0]);
        assert_eq!(s.p95, 3.0);
    }

    #[test]
    fn keys_sort_by_time_including_before_the_epoch() {
        assert!(time_key(Resolution::Minute, -60_000) < time_key(Resolution::Minute, 0));
        assert!(time_key(Resolution::Minute, 0) < time_key(Resolution::Minute, 60_000));
        assert!(row_key(Resolution::Minute, i64::MAX / 2, "n", "g") < time_key(Resolution::Hour, i64::MIN));
        assert!(time_key(Resolution::Hour, i64::MAX) < watermark_key(Resolution::Minute).to_vec());
    }
}
