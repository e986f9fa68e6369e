use claw_commands::EventRecord;
use openraft::{BasicNode, LogId, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::dedup_row::DedupRow;

/// The content of a snapshot: the full event history up to the checkpoint,
/// so a member installing it answers time-travel queries like any other.
/// Its size grows with the history (see the crate notes on retention).
/// The format's definition: members produce it piece by piece
/// (`PayloadPieces`) and read it one event at a time ([`visit_payload`]);
/// tests build and decode it whole.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotPayload {
    pub(crate) last_applied: Option<LogId<u64>>,
    pub(crate) membership: StoredMembership<u64, BasicNode>,
    pub(crate) checkpoint: Checkpoint,
    /// Events `1..=checkpoint.last_seq`, in order.
    pub(crate) events: Vec<EventRecord>,
    pub(crate) dedup: Vec<DedupRow>,
}

/// What `sm_meta` remembers of the last built or installed snapshot, enough
/// to rebuild its payload exactly from the immutable events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub(crate) meta: SnapshotMeta<u64, BasicNode>,
    pub(crate) last_seq: u64,
    pub(crate) last_hash: String,
}

/// What a pass over a received payload does with its parts, in the order
/// they come: the checkpoint, each event, the dedup rows.
pub(crate) trait PayloadVisit {
    fn checkpoint(&mut self, checkpoint: Checkpoint) -> crate::Result<()>;
    fn event(&mut self, record: EventRecord) -> crate::Result<()>;
    fn dedup(&mut self, rows: Vec<DedupRow>) -> crate::Result<()>;
}

/// Reads a payload ([`SnapshotPayload`]'s JSON, as a sender produces it:
/// the checkpoint before the events) from `reader`, one event at a time, so
/// a history of any length is never all in memory. `what` names the
/// snapshot in a decoding error; an error from `visit` stops the pass and
/// is returned as it is.
pub(crate) fn visit_payload(reader: impl std::io::Read, what: &str, visit: &mut dyn PayloadVisit) -> crate::Result<()> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut failed = None;
    let parsed = serde::de::DeserializeSeed::deserialize(PayloadSeed { visit, failed: &mut failed }, &mut de)
        .and_then(|()| de.end());
    match (failed, parsed) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(crate::Error::decode(what, e)),
        (None, Ok(())) => Ok(()),
    }
}

struct PayloadSeed<'a> {
    visit: &'a mut dyn PayloadVisit,
    failed: &'a mut Option<crate::Error>,
}

/// Keeps `e` for the caller and stops the parse.
fn stop<E: serde::de::Error>(failed: &mut Option<crate::Error>, e: crate::Error) -> E {
    let message = e.to_string();
    *failed = Some(e);
    E::custom(message)
}

impl<'de> serde::de::DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PayloadSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a snapshot payload object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        let (mut checkpoint, mut events, mut dedup) = (false, false, false);
        let (mut last_applied, mut membership) = (false, false);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "checkpoint" if events => return Err(A::Error::custom("the checkpoint must come before the events")),
                "checkpoint" => {
                    let cp: Checkpoint = map.next_value()?;
                    checkpoint = true;
                    self.visit.checkpoint(cp).map_err(|e| stop(self.failed, e))?;
                }
                "events" if !checkpoint => return Err(A::Error::custom("the checkpoint must come before the events")),
                "events" => {
                    map.next_value_seed(EventsSeed { visit: &mut *self.visit, failed: &mut *self.failed })?;
                    events = true;
                }
                "dedup" => {
                    let rows: Vec<DedupRow> = map.next_value()?;
                    dedup = true;
                    self.visit.dedup(rows).map_err(|e| stop(self.failed, e))?;
                }
                // The receiver takes both from the snapshot's meta; they are
                // checked all the same, as the format defines them.
                "last_applied" => {
                    map.next_value::<Option<LogId<u64>>>()?;
                    last_applied = true;
                }
                "membership" => {
                    map.next_value::<StoredMembership<u64, BasicNode>>()?;
                    membership = true;
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        for (seen, field) in [
            (last_applied, "last_applied"),
            (membership, "membership"),
            (checkpoint, "checkpoint"),
            (events, "events"),
            (dedup, "dedup"),
        ] {
            if !seen {
                return Err(A::Error::missing_field(field));
            }
        }
        Ok(())
    }
}

struct EventsSeed<'a> {
    visit: &'a mut dyn PayloadVisit,
    failed: &'a mut Option<crate::Error>,
}

impl<'de> serde::de::DeserializeSeed<'de> for EventsSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EventsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of event records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(record) = seq.next_element::<EventRecord>()? {
            self.visit.event(record).map_err(|e| stop(self.failed, e))?;
        }
        Ok(())
    }
}
