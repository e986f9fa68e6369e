//! Arbitrary and mutated bytes for every decoder of this crate that reads
//! bytes from outside the process: the records stored in RocksDB (events,
//! raft log entries, checkpoints, raft and state-machine metadata, dedup
//! rows, rollups), the snapshot payload a member installs, and the
//! member-to-member Raft RPC payloads. None may panic, and every rejection
//! must name what it rejected. The seeds are in `tests/corpus/`.

#[path = "../../tests/corpus/mutate.rs"]
mod mutate;

use std::collections::BTreeMap;
use std::path::Path;

use claw_commands::{
    verify_chain, Actor, Command, CommandEnvelope, DecisionState, EventRecord, GpuHealthResult, GpuInfo, GpuSample,
    NodeCapabilities, ProposalAction, WorkloadSpec, GENESIS_HASH,
};
use claw_projections::ClusterView;
use claw_proto::raft::RaftPayload;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, SnapshotMeta, StoredMembership, Vote,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tempfile::TempDir;

use self::mutate::{corpus, corpus_dir, inputs, Input, Seed};
use crate::checkpoint::{Checkpoint, CheckpointView};
use crate::db::{decode_json, decode_packed, encode_as, encode_packed, unpack, Db};
use crate::dedup_row::DedupRow;
use crate::keys::{
    dedup_key, show_key, u64_key, RaftMetaKey, SmMetaKey, CF_DEDUP, CF_EVENTS, CF_RAFT_LOG, CF_RAFT_META, CF_ROLLUPS,
    CF_SM_META, CF_VIEW_ROWS,
};
use crate::log_node::open_storage;
use crate::log_store::LogStore;
use crate::raft_rpc_service::decode;
use crate::snapshot_payload::{SnapshotPayload, SnapshotRecord};
use crate::state_machine::tests::fold;
use crate::state_machine::StateMachine;
use crate::{CommandBatch, Error, EventFilter, EventStore, RollupRow, TypeConfig};

const CHECKPOINT_EVERY: u64 = 7;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Decodes `input` as a `T` stored at `cf`/`key`, the way every reader of
/// the store does. A rejection must be a decode error naming that record.
fn decode_stored<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    cf: &str,
    key: &[u8],
    input: &Input,
) -> Option<T> {
    check_decoded(cf, key, input, decode_json::<T>(cf, key, &input.bytes), |value| {
        // Whatever decodes is stored again the same way: re-encoding and
        // decoding it must give it back exactly.
        let again: T = serde_json::from_slice(&serde_json::to_vec(value).expect("re-encode"))
            .unwrap_or_else(|e| panic!("{input:?}: decoded, but its re-encoding does not decode: {e}"));
        assert_eq!(&again, value, "{input:?}: the re-encoding differs");
    })
}

/// As [`decode_stored`], for values stored as MessagePack or, from before,
/// JSON (raft log entries).
fn decode_stored_packed<T: DeserializeOwned + Serialize>(cf: &str, key: &[u8], input: &Input) -> Option<T> {
    check_decoded(cf, key, input, decode_packed::<T>(cf, key, &input.bytes), |value| {
        // Stored again, it reads back as the same value. Compared as bytes:
        // MessagePack carries any float, NaN included, which equals nothing.
        let once = encode_packed("value", value).expect("re-encode");
        let again: T = decode_packed(cf, key, &once)
            .unwrap_or_else(|e| panic!("{input:?}: decoded, but its re-encoding does not decode: {e}"));
        assert_eq!(encode_packed("value", &again).expect("re-encode"), once, "{input:?}: the re-encoding differs");
    })
}

fn check_decoded<T>(cf: &str, key: &[u8], input: &Input, result: Result<T, Error>, again: impl Fn(&T)) -> Option<T> {
    match result {
        Ok(value) => {
            again(&value);
            Some(value)
        }
        Err(Error::Decode { what, reason }) => {
            assert_eq!(what, format!("record {cf}/{}", show_key(key)), "{input:?}");
            assert!(!reason.trim().is_empty(), "{input:?}: the decode error of {what} gives no reason");
            None
        }
        Err(other) => panic!("{input:?}: expected a decode error naming {cf}/{}, got: {other}", show_key(key)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// `events/<seq>` → `EventRecord` (`EventStore::load`, `scan_events`, `seq_at_time`).
    #[test]
    fn stored_event_records_never_panic_and_errors_name_the_record(input in inputs(corpus("event_record"))) {
        if let Some(rec) = decode_stored::<EventRecord>(CF_EVENTS, &u64_key(5), &input) {
            // The chain check of a decoded record must not panic either.
            let _ = verify_chain(&rec.prev_hash, [&rec]);
            let _ = verify_chain(GENESIS_HASH, [&rec]);
        }
    }

    /// `raft_log/<index>` → `Entry` (`LogReader::entries`, `last_log_id`).
    #[test]
    fn stored_raft_entries_never_panic_and_errors_name_the_record(input in inputs(corpus("raft_entry"))) {
        decode_stored_packed::<Entry<TypeConfig>>(CF_RAFT_LOG, &u64_key(3), &input);
    }

    /// `sm_meta/checkpoint(seq)` → `Checkpoint` (start-up) and `CheckpointView` (past states).
    #[test]
    fn stored_checkpoints_never_panic_and_errors_name_the_record(input in inputs(corpus("checkpoint"))) {
        let key = SmMetaKey::Checkpoint(7).encode();
        decode_stored::<Checkpoint>(CF_SM_META, &key, &input);
        match decode_json::<CheckpointView>(CF_SM_META, &key, &input.bytes) {
            Ok(_) => {}
            Err(Error::Decode { what, reason }) => {
                prop_assert_eq!(what, format!("record {CF_SM_META}/{}", show_key(&key)));
                prop_assert!(!reason.trim().is_empty());
            }
            Err(other) => panic!("{input:?}: expected a decode error, got: {other}"),
        }
    }

    /// `raft_meta` (vote, committed, last purged), `sm_meta` (last applied,
    /// membership, snapshot record), `dedup` and `rollups` values. Every
    /// seed is fed to every one of these decoders.
    #[test]
    fn stored_metadata_never_panics_and_errors_name_the_record(input in inputs(metadata_seeds())) {
        decode_stored::<Vote<u64>>(CF_RAFT_META, &RaftMetaKey::Vote.encode(), &input);
        decode_stored::<Option<LogId<u64>>>(CF_RAFT_META, &RaftMetaKey::Committed.encode(), &input);
        decode_stored::<LogId<u64>>(CF_RAFT_META, &RaftMetaKey::LastPurged.encode(), &input);
        decode_stored::<LogId<u64>>(CF_SM_META, &SmMetaKey::LastApplied.encode(), &input);
        decode_stored::<StoredMembership<u64, BasicNode>>(CF_SM_META, &SmMetaKey::Membership.encode(), &input);
        decode_stored::<SnapshotRecord>(CF_SM_META, &SmMetaKey::Snapshot.encode(), &input);
        decode_stored::<DedupRow>(CF_DEDUP, dedup_key("cmd-1"), &input);
        decode_stored::<RollupRow>(CF_ROLLUPS, b"\x01\x80\x00\x01\x8b\xcf\xe5\x68\x00gpu-a\x00GPU-0a", &input);
    }

    /// The member-to-member Raft RPC server decodes openraft's requests
    /// from `RaftPayload.data`; a rejection is InvalidArgument naming the
    /// request type. The client side decodes the responses and raft errors
    /// the same way (its errors name the member; here only "no panic").
    #[test]
    fn raft_rpc_payloads_never_panic_and_errors_name_the_request(input in inputs(corpus("raft_rpc"))) {
        check_raft_requests(&input);
        let _ = unpack::<AppendEntriesResponse<u64>>(&input.bytes);
        let _ = unpack::<VoteResponse<u64>>(&input.bytes);
        let _ = unpack::<InstallSnapshotResponse<u64>>(&input.bytes);
        let _ = unpack::<RaftError<u64>>(&input.bytes);
        let _ = unpack::<RaftError<u64, InstallSnapshotError>>(&input.bytes);
    }
}

fn metadata_seeds() -> Vec<Seed> {
    ["raft_meta", "sm_meta", "dedup_row", "rollup_row"].into_iter().flat_map(corpus).collect()
}

/// Feeds `input` to the three request decoders of `RaftRpcService`.
fn check_raft_requests(input: &Input) {
    let payload = RaftPayload { data: input.bytes.clone(), error: Vec::new() };
    for what in ["AppendEntriesRequest", "VoteRequest", "InstallSnapshotRequest"] {
        let result = match what {
            "AppendEntriesRequest" => decode::<AppendEntriesRequest<TypeConfig>>(&payload, what).map(drop),
            "VoteRequest" => decode::<VoteRequest<u64>>(&payload, what).map(drop),
            _ => decode::<InstallSnapshotRequest<TypeConfig>>(&payload, what).map(drop),
        };
        if let Err(status) = result {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{input:?}: {status}");
            let prefix = format!("RaftPayload.data is not a valid {what}: ");
            let msg = status.message();
            assert!(msg.starts_with(&prefix) && msg.len() > prefix.len(), "{input:?}: unclear error {msg:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Snapshot install.

/// Everything a store holds, raw and live, to tell whether an install
/// left it untouched.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    raw: BTreeMap<&'static str, Rows>,
    last_seq: u64,
    last_hash: String,
    view: ClusterView,
    decision: DecisionState,
    applied: (Option<LogId<u64>>, StoredMembership<u64, BasicNode>),
}

/// The `(key, value)` pairs of a column family.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn raw_contents(db: &Db, cf: &str) -> Rows {
    let mut out = Vec::new();
    db.scan(cf, &[], |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(true)
    })
    .expect("scan");
    out
}

/// A member that has applied a short history of its own.
struct Follower {
    _dir: TempDir,
    _log: LogStore,
    sm: StateMachine,
    store: EventStore,
}

impl Follower {
    async fn new() -> Follower {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, mut sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("open follower");
        let own = [
            Command::RegisterNode { node: "own-node".into(), capabilities: NodeCapabilities::default() },
            Command::StateIntent { text: "the follower's own history".into() },
            Command::Heartbeat { node: "own-node".into() },
            Command::Heartbeat { node: "unknown".into() },
        ];
        for (i, command) in own.into_iter().enumerate() {
            let n = i as u64 + 1;
            sm.apply(vec![normal(n, vec![envelope(100 + n, command)])]).await.expect("apply");
        }
        Follower { _dir: dir, _log: log, sm, store }
    }

    async fn fingerprint(&mut self) -> Fingerprint {
        let db = self.store.db();
        let raw = [CF_EVENTS, CF_DEDUP, CF_SM_META].into_iter().map(|cf| (cf, raw_contents(db, cf))).collect();
        Fingerprint {
            raw,
            last_seq: self.store.last_seq(),
            last_hash: self.store.last_hash(),
            view: self.store.view(),
            decision: self.store.decision(),
            applied: self.sm.applied_state().await.expect("applied state"),
        }
    }
}

fn fuzz_meta() -> SnapshotMeta<u64, BasicNode> {
    SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 40)),
        last_membership: StoredMembership::default(),
        snapshot_id: "fuzz-snapshot".into(),
    }
}

/// A snapshot payload of arbitrary or mutated bytes is either rejected,
/// with an error naming the snapshot and the store left exactly as it was,
/// or installed whole: its events verify and the live state is their fold.
#[test]
fn garbage_snapshots_are_rejected_naming_the_snapshot_and_leave_the_store_intact() {
    let rt = runtime();
    let follower = tokio::sync::Mutex::new(rt.block_on(Follower::new()));
    let before = rt.block_on(async { follower.lock().await.fingerprint().await });
    let mut runner = TestRunner::new(Config { cases: 64, failure_persistence: None, ..Config::default() });
    let result = runner.run(&inputs(corpus("snapshot_payload")), |input| {
        rt.block_on(async {
            let mut f = follower.lock().await;
            if f.fingerprint().await != before {
                // The previous case installed its snapshot; start afresh.
                *f = Follower::new().await;
            }
            let meta = fuzz_meta();
            match f.sm.install_snapshot(&meta, Box::new(crate::SnapshotData::new(input.bytes.clone()))).await {
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("could not decode snapshot fuzz-snapshot: "),
                        "{input:?}: unclear error {msg}"
                    );
                    assert!(
                        f.fingerprint().await == before,
                        "{input:?}: a rejected snapshot changed the store ({msg})"
                    );
                }
                Ok(()) => {
                    let payload: SnapshotPayload =
                        serde_json::from_slice(&input.bytes).expect("an installed payload decodes");
                    let events = f.store.events(1, None, 0, &EventFilter::default()).expect("read events");
                    assert_eq!(events, payload.events, "{input:?}");
                    let last_hash = verify_chain(GENESIS_HASH, &events).expect("installed events verify");
                    assert_eq!(f.store.last_hash(), last_hash, "{input:?}");
                    assert_eq!(f.store.last_seq(), events.len() as u64, "{input:?}");
                    let (decision, view) = fold(&events);
                    assert!(
                        f.store.decision() == decision && f.store.view() == view,
                        "{input:?}: state is not the fold"
                    );
                    assert_eq!(f.sm.applied_state().await.expect("applied").0, meta.last_log_id);
                }
            }
        });
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// Garbage in RocksDB, read back through the store's own readers.

/// Which stored record a case overwrites.
#[derive(Clone, Copy, Debug)]
enum Target {
    Event(u64),
    RaftEntry(u64),
    Checkpoint,
    ViewRow,
}

fn write_raw(db: &Db, cf: &str, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::default();
    batch.put_cf(&db.cf(cf).expect("cf"), key, value);
    db.write(batch, true).expect("write raw");
}

/// A store holding the corpus story (events with checkpoints every 7, and
/// raft log entries 1..=3); returns its last seq, its newest checkpoint's
/// key and the key of the last row of its row checkpoints.
fn stored_story(dir: &Path) -> (u64, Vec<u8>, Vec<u8>) {
    let rt = runtime();
    let (_log, mut sm, store) = open_storage(dir, CHECKPOINT_EVERY).expect("open");
    rt.block_on(async {
        for (i, env) in story().into_iter().enumerate() {
            sm.apply(vec![normal(i as u64 + 1, vec![env])]).await.expect("apply");
        }
    });
    let db = store.db();
    for (i, seed) in corpus("raft_entry").iter().take(3).enumerate() {
        write_raw(db, CF_RAFT_LOG, &u64_key(i as u64 + 1), &seed.bytes);
    }
    let (_, end) = SmMetaKey::checkpoint_range();
    let (checkpoint_key, _) = db.last_at_or_before(CF_SM_META, &end).expect("scan").expect("a checkpoint");
    let (row_key, _) = db.last(CF_VIEW_ROWS).expect("scan").expect("a view row");
    (store.last_seq(), checkpoint_key.to_vec(), row_key.to_vec())
}

/// Overwrites one stored record with arbitrary or mutated bytes, then
/// reopens the store and reads through it: no panic, and every error
/// names the damaged record (its key or its seq) or, for a damaged
/// history, the data directory. Each case opens RocksDB two or three
/// times (about 0.1 s each), hence the few cases: the decoders themselves
/// get their thousands of cases above.
#[test]
fn garbage_in_the_store_is_an_error_naming_the_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let (last_seq, checkpoint_key, row_key) = stored_story(&path);
    let locate = |target: Target| match target {
        Target::Event(seq) => (CF_EVENTS, u64_key(seq).to_vec(), vec![format!("events/{seq}"), format!("seq {seq}")]),
        Target::RaftEntry(i) => (CF_RAFT_LOG, u64_key(i).to_vec(), vec![format!("raft_log/{i}")]),
        Target::Checkpoint => {
            (CF_SM_META, checkpoint_key.clone(), vec![format!("sm_meta/{}", show_key(&checkpoint_key))])
        }
        Target::ViewRow => (CF_VIEW_ROWS, row_key.clone(), vec![format!("view_rows/{}", show_key(&row_key))]),
    };
    let originals: BTreeMap<(&str, Vec<u8>), Vec<u8>> = {
        let db = Db::open(&path, false).expect("open raw");
        let targets = (1..=last_seq)
            .map(Target::Event)
            .chain((1..=3).map(Target::RaftEntry))
            .chain([Target::Checkpoint, Target::ViewRow]);
        targets
            .map(|t| {
                let (cf, key, _) = locate(t);
                let value = db.get_raw(cf, &key).expect("read").expect("stored");
                ((cf, key), value)
            })
            .collect()
    };
    let strategy = (
        prop_oneof![
            (1..=last_seq).prop_map(Target::Event),
            (1u64..=3).prop_map(Target::RaftEntry),
            Just(Target::Checkpoint),
            Just(Target::ViewRow),
        ],
        prop_oneof![inputs(corpus("event_record")), inputs(corpus("raft_entry")), inputs(corpus("checkpoint"))],
    );
    let rt = runtime();
    let mut runner = TestRunner::new(Config { cases: 16, failure_persistence: None, ..Config::default() });
    let result = runner.run(&strategy, |(target, input)| {
        let (cf, key, names) = locate(target);
        let original = &originals[&(cf, key.clone())];
        write_raw(&Db::open(&path, false).expect("open raw"), cf, &key, &input.bytes);
        let named = |msg: &str| {
            assert!(
                names.iter().any(|n| msg.contains(n.as_str())) || msg.contains(&path.display().to_string()),
                "{target:?} {input:?}: the error does not name the damaged record: {msg}"
            );
        };
        match open_storage(&path, CHECKPOINT_EVERY) {
            Err(e) => {
                named(&e.to_string());
                write_raw(&Db::open(&path, false).expect("open raw"), cf, &key, original);
            }
            Ok((mut log, _sm, store)) => {
                rt.block_on(async {
                    if let Err(e) = store.events(1, None, 0, &EventFilter::default()) {
                        named(&e.to_string());
                    }
                    if let Err(e) = log.try_get_log_entries(0..10).await {
                        named(&e.to_string());
                    }
                    if let Err(e) = log.get_log_state().await {
                        named(&e.to_string());
                    }
                    for seq in 0..=store.last_seq().min(last_seq) {
                        if let Err(e) = store.view_at(seq) {
                            named(&e.to_string());
                        }
                    }
                });
                write_raw(store.db(), cf, &key, original);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// Values at the edges, which random mutation is unlikely to reach.

fn full_story_payload() -> SnapshotPayload {
    let seed = corpus("snapshot_payload").into_iter().find(|s| s.name.ends_with("full_story.json")).expect("seed");
    serde_json::from_slice(&seed.bytes).expect("seed decodes")
}

/// A sender can seal a well-formed record at any seq; one at `u64::MAX`
/// must be refused like any other history that does not start at seq 1.
#[test]
fn a_snapshot_event_at_the_last_seq_is_rejected() {
    let rec = EventRecord::seal(
        u64::MAX,
        1,
        TIME_MS,
        Actor::user("ada"),
        "cmd-1".into(),
        "corr-1".into(),
        claw_commands::Event::IntentStated { text: "x".into() },
        GENESIS_HASH.into(),
    );
    let mut payload = full_story_payload();
    payload.checkpoint.last_seq = 1;
    payload.checkpoint.last_hash = rec.hash.clone();
    payload.events = vec![rec];
    payload.dedup.clear();
    let rt = runtime();
    let mut f = rt.block_on(Follower::new());
    let before = rt.block_on(f.fingerprint());
    let data = serde_json::to_vec(&payload).expect("encode");
    let err = rt
        .block_on(f.sm.install_snapshot(&fuzz_meta(), Box::new(crate::SnapshotData::new(data))))
        .expect_err("rejected");
    assert!(err.to_string().contains("could not decode snapshot fuzz-snapshot"), "{err}");
    assert!(rt.block_on(f.fingerprint()) == before);
}

/// A stored checkpoint that decodes but claims the last possible seq.
#[test]
fn a_stored_checkpoint_at_the_last_seq_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    stored_story(dir.path());
    let mut cp: Checkpoint = serde_json::from_slice(&corpus("checkpoint")[0].bytes).expect("seed");
    cp.last_seq = u64::MAX;
    let key = SmMetaKey::Checkpoint(u64::MAX).encode();
    let db = Db::open(dir.path(), false).expect("open raw");
    write_raw(&db, CF_SM_META, &key, &serde_json::to_vec(&cp).expect("encode"));
    drop(db);
    let result = open_storage(dir.path(), CHECKPOINT_EVERY).map(drop);
    assert!(result.is_err(), "a checkpoint past the stored history was accepted");
}

/// The dedup rows of a snapshot are not covered by the hash chain. One
/// that points past the snapshot's history (one digit too many, or the last
/// possible seq) must not be installed: a retry of its command would then
/// fail the state machine's apply, which stops raft on this member.
#[test]
fn a_snapshot_whose_dedup_row_points_past_its_history_is_rejected() {
    let rt = runtime();
    let mut outcomes = Vec::new();
    for bad_last_seq in [60, u64::MAX] {
        let mut payload = full_story_payload();
        let row = payload.dedup.iter_mut().find(|r| r.command_id == "cmd-5").expect("a dedup row");
        row.last_seq = bad_last_seq;
        let mut f = rt.block_on(Follower::new());
        let data = serde_json::to_vec(&payload).expect("encode");
        if rt.block_on(f.sm.install_snapshot(&fuzz_meta(), Box::new(crate::SnapshotData::new(data)))).is_ok() {
            let retry = envelope(5, Command::StateIntent { text: "again".into() });
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt.block_on(f.sm.apply(vec![normal(41, vec![retry])])).map(drop).map_err(|e| e.to_string())
            }));
            let then = match applied {
                Ok(Ok(_)) => "is answered".to_string(),
                Ok(Err(e)) => format!("fails apply: {e}"),
                Err(_) => "panics".to_string(),
            };
            outcomes.push(format!("dedup last_seq {bad_last_seq} was installed; a retry of cmd-5 then {then}"));
        }
    }
    assert!(outcomes.is_empty(), "{outcomes:#?}");
}

// ---------------------------------------------------------------------------
// The corpus itself.

const TIME_MS: i64 = 1_700_000_000_000;

fn envelope(n: u64, command: Command) -> CommandEnvelope {
    CommandEnvelope {
        command_id: format!("cmd-{n}"),
        actor: Actor::user("ada"),
        time_ms: TIME_MS + 1_000 * n as i64,
        correlation_id: format!("corr-{n}"),
        command,
    }
}

fn normal(index: u64, envs: Vec<CommandEnvelope>) -> Entry<TypeConfig> {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(CommandBatch(envs)) }
}

/// The history the stored seeds come from: a node, a workload, metrics
/// with awkward floats, a rejection, a proposal and a health check.
fn story() -> Vec<CommandEnvelope> {
    let labels = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let commands = vec![
        Command::RegisterNode {
            node: "gpu-a".into(),
            capabilities: NodeCapabilities {
                cpus: 32,
                memory_mb: 256_000,
                gpus: vec![
                    GpuInfo { index: 0, uuid: "GPU-0a".into(), model: "H100".into(), memory_mb: 81_559 },
                    GpuInfo { index: 1, uuid: "GPU-1a".into(), model: "H100".into(), memory_mb: 81_559 },
                ],
                driver_version: Some("550.54.15".into()),
                cuda_version: Some("12.4".into()),
                labels: labels("zone", "eu-1"),
            },
        },
        Command::SubmitWorkload {
            workload_id: "w-1".into(),
            spec: WorkloadSpec {
                name: "train-llama".into(),
                image: "nvcr.io/train:1".into(),
                command: vec!["python".into(), "train.py".into()],
                env: labels("EPOCHS", "3"),
                gpus: 1,
                gpu_model: Some("H100".into()),
                min_gpu_memory_mb: 40_000,
                labels: labels("team", "ml"),
                priority: 5,
                node_selector: labels("zone", "eu-1"),
            },
        },
        Command::Heartbeat { node: "gpu-a".into() },
        Command::ObserveGpuMetrics {
            node: "gpu-a".into(),
            samples: vec![GpuSample {
                gpu_uuid: "GPU-0a".into(),
                utilization_pct: 0.1 + 0.2,
                memory_used_mb: 40_000,
                temperature_c: 71.5,
                power_w: 301.25,
                sm_clock_mhz: 1980,
                ecc_corrected: 2,
                ecc_uncorrected: 0,
                throttle_reasons: vec!["hw_thermal_slowdown".into()],
                xid_errors: vec![],
            }],
        },
        Command::StateIntent { text: "train llama on the eu GPUs".into() },
        Command::CancelWorkload { workload: "w-missing".into(), reason: "typo".into() },
        Command::CreateProposal {
            proposal_id: "p-1".into(),
            action: ProposalAction::DrainNode { node: "gpu-a".into() },
            basis_seq: 3,
            reason: "ECC errors".into(),
        },
        Command::RejectProposal { proposal_id: "p-1".into(), reason: "not now".into() },
        Command::ObserveGpuMetrics {
            node: "gpu-a".into(),
            samples: vec![GpuSample {
                gpu_uuid: "GPU-1a".into(),
                utilization_pct: 1.0 / 3.0,
                memory_used_mb: 1,
                temperature_c: -0.0,
                power_w: 5e-324,
                ecc_uncorrected: 1,
                xid_errors: vec![79],
                ..Default::default()
            }],
        },
        Command::RequestHealthCheck { node: "gpu-a".into(), check_id: "hc-1".into() },
        Command::ReportHealthCheck {
            node: "gpu-a".into(),
            check_id: "hc-1".into(),
            results: vec![GpuHealthResult {
                runtime: "cuda".into(),
                device: "H100".into(),
                device_index: 0,
                matrix_size: 1024,
                passed: true,
                gflops: 51234.5,
                checksum: 1.2345678901234567e9,
                reference_checksum: 1.2345678901234567e9,
                max_abs_error: 1e-7,
                elapsed_ms: 3.25,
                detail: String::new(),
            }],
            error: None,
        },
        Command::CancelWorkload { workload: "w-1".into(), reason: "done".into() },
    ];
    commands.into_iter().enumerate().map(|(i, c)| envelope(i as u64 + 1, c)).collect()
}

/// Every seed decodes: a stale corpus would test only the error paths.
#[test]
fn every_seed_is_valid() {
    for s in corpus("event_record") {
        let rec: EventRecord = serde_json::from_slice(&s.bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!(rec.compute_hash(), rec.hash, "{}", s.name);
    }
    for s in corpus("raft_entry") {
        unpack::<Entry<TypeConfig>>(&s.bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    for s in corpus("checkpoint") {
        serde_json::from_slice::<Checkpoint>(&s.bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    let rt = runtime();
    for s in corpus("snapshot_payload") {
        let mut f = rt.block_on(Follower::new());
        rt.block_on(f.sm.install_snapshot(&fuzz_meta(), Box::new(crate::SnapshotData::new(s.bytes.clone()))))
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    for s in corpus("raft_rpc") {
        let name = s.name.trim_start_matches("raft_rpc/");
        let ok = if name.starts_with("request_append_entries") {
            unpack::<AppendEntriesRequest<TypeConfig>>(&s.bytes).is_ok()
        } else if name.starts_with("request_vote") {
            unpack::<VoteRequest<u64>>(&s.bytes).is_ok()
        } else if name.starts_with("request_install_snapshot") {
            unpack::<InstallSnapshotRequest<TypeConfig>>(&s.bytes).is_ok()
        } else if name.starts_with("response_append_entries") {
            unpack::<AppendEntriesResponse<u64>>(&s.bytes).is_ok()
        } else if name.starts_with("response_vote") {
            unpack::<VoteResponse<u64>>(&s.bytes).is_ok()
        } else if name.starts_with("response_install_snapshot") {
            unpack::<InstallSnapshotResponse<u64>>(&s.bytes).is_ok()
        } else if name.starts_with("response_raft_error") {
            unpack::<RaftError<u64>>(&s.bytes).is_ok()
        } else {
            panic!("{}: unknown kind of raft RPC seed", s.name)
        };
        assert!(ok, "{} does not decode", s.name);
    }
    for s in metadata_seeds() {
        let b = &s.bytes;
        let ok = match s.name.as_str() {
            "raft_meta/vote.json" => serde_json::from_slice::<Vote<u64>>(b).is_ok(),
            "raft_meta/committed.json" => serde_json::from_slice::<Option<LogId<u64>>>(b).is_ok(),
            "raft_meta/last_purged.json" | "sm_meta/last_applied.json" => {
                serde_json::from_slice::<LogId<u64>>(b).is_ok()
            }
            "sm_meta/membership.json" => serde_json::from_slice::<StoredMembership<u64, BasicNode>>(b).is_ok(),
            "sm_meta/snapshot_record.json" => serde_json::from_slice::<SnapshotRecord>(b).is_ok(),
            n if n.starts_with("dedup_row/") => serde_json::from_slice::<DedupRow>(b).is_ok(),
            n if n.starts_with("rollup_row/") => serde_json::from_slice::<RollupRow>(b).is_ok(),
            n => panic!("{n}: unknown kind of metadata seed"),
        };
        assert!(ok, "{} does not decode", s.name);
    }
}

/// The raft log and the raft RPC carry MessagePack now, JSON before: each
/// JSON seed of `raft_entry/` and `raft_rpc/` has a MessagePack twin
/// (`packed_<name>.msgpack` and `<name>.msgpack`) that must decode to the
/// same value, so both formats stay covered by the property tests. With
/// `CLAW_WRITE_CORPUS=1` the twins are (re)written from the JSON seeds.
#[test]
fn packed_seeds_are_twins_of_the_json_seeds() {
    fn twin<T: DeserializeOwned + Serialize>(seed: &Seed, path: std::path::PathBuf) {
        let value: T = serde_json::from_slice(&seed.bytes).unwrap_or_else(|e| panic!("{}: {e}", seed.name));
        let packed = encode_as(&value, true).expect("pack");
        if std::env::var_os("CLAW_WRITE_CORPUS").is_some() {
            std::fs::write(&path, &packed).expect("write seed");
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: no MessagePack twin: {e}", path.display()));
        assert_eq!(stored, packed, "{} is not {} packed", path.display(), seed.name);
        let back: T = unpack(&stored).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            serde_json::to_value(&back).expect("json"),
            serde_json::to_value(&value).expect("json"),
            "{} decodes to another value than {}",
            path.display(),
            seed.name
        );
    }
    let mut twins = 0;
    for s in corpus("raft_entry").into_iter().filter(|s| s.name.ends_with(".json")) {
        let name = s.name.trim_start_matches("raft_entry/").trim_end_matches(".json");
        twin::<Entry<TypeConfig>>(&s, corpus_dir("raft_entry").join(format!("packed_{name}.msgpack")));
        twins += 1;
    }
    for s in corpus("raft_rpc").into_iter().filter(|s| s.name.ends_with(".json")) {
        let name = s.name.trim_start_matches("raft_rpc/").trim_end_matches(".json");
        let path = corpus_dir("raft_rpc").join(format!("{name}.msgpack"));
        match name {
            n if n.starts_with("request_append_entries") => twin::<AppendEntriesRequest<TypeConfig>>(&s, path),
            n if n.starts_with("request_vote") => twin::<VoteRequest<u64>>(&s, path),
            n if n.starts_with("request_install_snapshot") => twin::<InstallSnapshotRequest<TypeConfig>>(&s, path),
            n if n.starts_with("response_append_entries") => twin::<AppendEntriesResponse<u64>>(&s, path),
            n if n.starts_with("response_vote") => twin::<VoteResponse<u64>>(&s, path),
            n if n.starts_with("response_install_snapshot") => twin::<InstallSnapshotResponse<u64>>(&s, path),
            n if n.starts_with("response_raft_error") => twin::<RaftError<u64>>(&s, path),
            n => panic!("{n}: unknown kind of raft RPC seed"),
        }
        twins += 1;
    }
    assert!(twins >= 13, "only {twins} JSON seeds of raft entries and RPCs");
}
