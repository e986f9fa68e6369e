use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Actor, Event};

/// The hash that the first event chains to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event as stored: its dense sequence number, where it came from, and its
/// place in the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    pub raft_index: u64,
    pub time_ms: i64,
    pub actor: Actor,
    pub command_id: String,
    pub correlation_id: String,
    pub event: Event,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed part of a record, in a fixed field order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    raft_index: u64,
    time_ms: i64,
    actor: &'a Actor,
    command_id: &'a str,
    correlation_id: &'a str,
    event: &'a Event,
}

impl EventRecord {
    /// Builds a record chained to `prev_hash`.
    #[allow(clippy::too_many_arguments)]
    pub fn seal(
        seq: u64,
        raft_index: u64,
        time_ms: i64,
        actor: Actor,
        command_id: String,
        correlation_id: String,
        event: Event,
        prev_hash: String,
    ) -> Self {
        let mut r = EventRecord {
            seq,
            raft_index,
            time_ms,
            actor,
            command_id,
            correlation_id,
            event,
            prev_hash,
            hash: String::new(),
        };
        r.hash = r.compute_hash();
        r
    }

    /// `H(prev_hash ‖ canonical JSON of the record without its hashes)`.
    pub fn compute_hash(&self) -> String {
        let body = Hashed {
            seq: self.seq,
            raft_index: self.raft_index,
            time_ms: self.time_ms,
            actor: &self.actor,
            command_id: &self.command_id,
            correlation_id: &self.correlation_id,
            event: &self.event,
        };
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        // Serialising plain structs and enums with BTreeMaps is deterministic.
        h.update(serde_json::to_vec(&body).unwrap_or_default());
        hex::encode(h.finalize())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("event seq {seq}: expected seq {expected} (the history has a gap or a duplicate)")]
    Gap { seq: u64, expected: u64 },
    #[error("event seq {seq}: prev_hash does not match the hash of seq {}", seq.saturating_sub(1))]
    Broken { seq: u64 },
    #[error("event seq {seq}: stored hash does not match its contents (tampered or corrupted)")]
    Tampered { seq: u64 },
}

/// Verifies a contiguous run of records. `prev` is the hash before the first
/// record (`GENESIS_HASH` when starting at seq 1). Returns the last hash.
pub fn verify_chain<'a>(prev: &str, records: impl IntoIterator<Item = &'a EventRecord>) -> Result<String, ChainError> {
    let mut prev = prev.to_string();
    let mut expected: Option<u64> = None;
    for r in records {
        if let Some(e) = expected {
            if r.seq != e {
                return Err(ChainError::Gap { seq: r.seq, expected: e });
            }
        }
        if r.prev_hash != prev {
            return Err(ChainError::Broken { seq: r.seq });
        }
        if r.compute_hash() != r.hash {
            return Err(ChainError::Tampered { seq: r.seq });
        }
        prev = r.hash.clone();
        // Nothing follows u64::MAX: any later record is a gap (expected 0).
        expected = Some(r.seq.checked_add(1).unwrap_or(0));
    }
    Ok(prev)
}

/// Derives a short, stable object id from a command id, so a retried command
/// creates the same object id and the id never depends on a clock.
pub fn derive_id(prefix: &str, command_id: &str) -> String {
    let digest = Sha256::digest(command_id.as_bytes());
    format!("{prefix}-{}", &hex::encode(digest)[..10])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, Event, GpuSample};

    #[test]
    fn every_float_reads_back_bit_for_bit_so_stored_hashes_verify() {
        // Values whose shortest decimal form has 17 significant digits are the
        // ones a fast, inexact float parser gets wrong by one ulp.
        let values = [0.1 + 0.2, 1.0 / 3.0, 2.0f64.sqrt(), 5e-324, 1.7976931348623157e308, 123.45678901234567];
        let mut prev = GENESIS_HASH.to_string();
        let mut records = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let sample = GpuSample { gpu_uuid: "GPU-1".into(), power_w: *v, temperature_c: -v, ..Default::default() };
            let event = Event::GpuMetricsObserved { node: "n1".into(), samples: vec![sample] };
            let r =
                EventRecord::seal(i as u64 + 1, 1, 0, Actor::user("ada"), String::new(), String::new(), event, prev);
            prev = r.hash.clone();
            records.push(r);
        }
        let stored: Vec<EventRecord> =
            records.iter().map(|r| serde_json::from_slice(&serde_json::to_vec(r).unwrap()).unwrap()).collect();
        assert_eq!(stored, records);
        assert_eq!(verify_chain(GENESIS_HASH, &stored), Ok(prev));
    }

    #[test]
    fn a_broken_first_record_is_reported_without_overflow() {
        let r = EventRecord::seal(
            0,
            1,
            0,
            Actor::user("ada"),
            String::new(),
            String::new(),
            Event::NodeHeartbeat { node: "n".into() },
            "x".into(),
        );
        let err = verify_chain(GENESIS_HASH, [&r]).unwrap_err();
        assert_eq!(err, ChainError::Broken { seq: 0 });
        assert_eq!(err.to_string(), "event seq 0: prev_hash does not match the hash of seq 0");
    }
}
