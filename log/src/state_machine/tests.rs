use std::collections::BTreeMap;
use std::time::Duration;

use claw_commands::{
    evolve, verify_chain, Actor, ActorKind, Command, CommandEnvelope, DecisionState, EventRecord, GpuInfo, GpuSample,
    NodeCapabilities, NodeVerdict, Placement, ProposalAction, WorkloadSpec, GENESIS_HASH,
};
use claw_projections::ClusterView;
use futures::StreamExt;
use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StorageIOError};
use tempfile::TempDir;

use super::StateMachine;
use crate::keys::{SmMetaKey, CF_SM_META, CF_SUBJECTS};
use crate::log_node::{open_storage, open_storage_with, Checkpoints};
use crate::log_store::LogStore;
use crate::view_rows;
use crate::ViewTables;
use crate::{ApplyResponse, BatchResponse, CommandBatch, Error, EventFilter, EventStore, TypeConfig};

/// Small enough that the tests' histories cross several checkpoints.
const CHECKPOINT_EVERY: u64 = 1_000;

struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for TempStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let (log, sm, _store) = open_storage(dir.path(), CHECKPOINT_EVERY).map_err(Error::into_write)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn passes_the_openraft_storage_suite() {
    if let Err(e) = Suite::test_all(TempStoreBuilder) {
        panic!("storage suite failed: {e}");
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const NODES: &[&str] = &["gpu-a", "gpu-b", "gpu-c", "Bad Node"];
const WORKLOADS: &[&str] = &["w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "-bad"];
const PROPOSALS: &[&str] = &["p1", "p2", "p3", "p4"];

fn command(g: &mut Gen, last_seq_hint: u64) -> Command {
    let node = g.pick(NODES).to_string();
    let w = g.pick(WORKLOADS).to_string();
    match g.below(15) {
        0 => Command::RegisterNode {
            node,
            capabilities: NodeCapabilities {
                cpus: 8,
                memory_mb: 1 << 16,
                gpus: (0..g.below(3) as u32)
                    .map(|i| GpuInfo {
                        index: i,
                        uuid: if g.below(10) == 0 { String::new() } else { format!("GPU-{i}") },
                        model: "H100".into(),
                        memory_mb: 80_000,
                    })
                    .collect(),
                ..Default::default()
            },
        },
        1 => Command::Heartbeat { node },
        2 | 3 => Command::SubmitWorkload {
            workload_id: w.clone(),
            spec: WorkloadSpec {
                name: format!("job-{}", g.below(5)),
                image: if g.below(8) == 0 { String::new() } else { "nvcr.io/train:1".into() },
                gpus: g.below(3) as u32,
                ..Default::default()
            },
        },
        4 => Command::CancelWorkload { workload: w, reason: "operator asked".into() },
        5 => Command::ReportWorkloadStarted { workload_id: w, node },
        6 => Command::ReportWorkloadExited { workload_id: w, node, exit_code: g.below(2) as i32, oom_killed: false },
        7 => Command::CreateProposal {
            proposal_id: g.pick(PROPOSALS).to_string(),
            action: if g.below(2) == 0 {
                ProposalAction::CancelWorkload { workload_id: w }
            } else {
                ProposalAction::DrainNode { node }
            },
            basis_seq: last_seq_hint.saturating_sub(g.below(3)),
            reason: "looks idle".into(),
        },
        8 => Command::ApproveProposal { proposal_id: g.pick(PROPOSALS).to_string(), comment: "ok".into() },
        9 => Command::RejectProposal { proposal_id: g.pick(PROPOSALS).to_string(), reason: "no".into() },
        10 => Command::ObserveGpuMetrics {
            node,
            samples: vec![GpuSample {
                gpu_uuid: "GPU-0".into(),
                utilization_pct: 50.0,
                memory_used_mb: 1000,
                temperature_c: 60.0,
                power_w: 300.0,
                // Now and then trouble, so detectors open incidents in the history.
                ecc_uncorrected: g.below(3),
                xid_errors: if g.below(5) == 0 { vec![79] } else { vec![] },
                throttle_reasons: if g.below(4) == 0 { vec!["hw_thermal_slowdown".into()] } else { vec![] },
                ..Default::default()
            }],
        },
        // What clawd's scheduler and node monitor propose: GPUs taken on
        // a node and freed when its workload ends or the node goes away.
        11 => Command::PlaceWorkload {
            workload_id: w,
            gpu_uuids: (0..g.below(3)).map(|i| format!("GPU-{i}")).collect(),
            placement: Placement {
                strategy: "binpack".into(),
                considered: verdicts(g, Some(&node)),
                chosen: Some(node.clone()),
                summary: format!("placed on {node}"),
            },
            node,
        },
        13 => Command::RecordUnschedulable {
            workload_id: w,
            placement: Placement {
                strategy: "binpack".into(),
                considered: verdicts(g, None),
                chosen: None,
                // A repeated reason appends nothing; every command here must.
                summary: format!("no node fits ({:x})", g.below(u64::MAX)),
            },
        },
        12 => Command::MarkNodeNotReady { node, reason: "silent".into(), requeue: g.below(2) == 0 },
        _ => Command::StateIntent { text: if g.below(4) == 0 { " ".into() } else { "train llama".into() } },
    }
}

/// The scheduler's per-node reasons, as a placement carries them.
fn verdicts(g: &mut Gen, chosen: Option<&str>) -> Vec<NodeVerdict> {
    (0..g.below(3))
        .map(|i| NodeVerdict {
            node: NODES[i as usize].to_string(),
            failed_filter: (chosen != Some(NODES[i as usize])).then(|| "gpu_count".to_string()),
            detail: format!("{} of 2 GPUs free", g.below(3)),
            score: chosen.map(|_| i as f64 / 2.0),
        })
        .collect()
}

fn envelope(g: &mut Gen, n: u64, last_seq_hint: u64) -> CommandEnvelope {
    let actor =
        if g.below(20) == 0 { Actor { kind: ActorKind::User, name: String::new() } } else { Actor::user("ada") };
    CommandEnvelope {
        command_id: format!("cmd-{n}"),
        actor,
        // Members' clocks disagree: now and then an envelope is stamped
        // earlier than the one before it.
        time_ms: 1_700_000_000_000 + 10 * n as i64 - g.below(25) as i64,
        correlation_id: format!("corr-{}", n / 3),
        command: command(g, last_seq_hint),
    }
}

fn normal(index: u64, env: CommandEnvelope) -> Entry<TypeConfig> {
    normal_batch(index, vec![env])
}

fn normal_batch(index: u64, envs: Vec<CommandEnvelope>) -> Entry<TypeConfig> {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(CommandBatch(envs)) }
}

/// The single response of an entry that carries one command.
fn single(mut responses: Vec<BatchResponse>) -> ApplyResponse {
    assert_eq!(responses.len(), 1);
    let BatchResponse(mut r) = responses.remove(0);
    assert_eq!(r.len(), 1);
    r.remove(0)
}

fn blank(index: u64) -> Entry<TypeConfig> {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
}

/// The decision state and cluster view after `records`, folded from empty.
pub(crate) fn fold(records: &[claw_commands::EventRecord]) -> (DecisionState, ClusterView) {
    let mut d = DecisionState::default();
    let mut v = ClusterView::default();
    for r in records {
        evolve(&mut d, r.seq, r.time_ms, &r.event);
        v.apply(r);
    }
    (d, v)
}

fn all_events(store: &EventStore) -> Vec<claw_commands::EventRecord> {
    store.events(1, None, 0, &EventFilter::default()).expect("read events")
}

/// Applies generated envelopes (valid, invalid, and resubmitted) in batches
/// of varying size; returns the first response of every command id.
async fn apply_generated(
    sm: &mut StateMachine,
    store: &EventStore,
    count: u64,
) -> (BTreeMap<String, ApplyResponse>, Vec<CommandEnvelope>, u64) {
    apply_generated_with(sm, store, count, 0x9E37_79B9_7F4A_7C15).await
}

async fn apply_generated_with(
    sm: &mut StateMachine,
    store: &EventStore,
    count: u64,
    seed: u64,
) -> (BTreeMap<String, ApplyResponse>, Vec<CommandEnvelope>, u64) {
    // xorshift needs a non-zero state.
    let mut g = Gen(seed | 1);
    let mut firsts: BTreeMap<String, ApplyResponse> = BTreeMap::new();
    let mut sent: Vec<CommandEnvelope> = Vec::new();
    let mut index = 0u64;
    let mut n = 0u64;
    while n < count {
        let batch_len = 1 + g.below(24);
        let mut batch = Vec::new();
        let mut envs: Vec<Vec<CommandEnvelope>> = Vec::new();
        for _ in 0..batch_len {
            index += 1;
            if g.below(15) == 0 {
                batch.push(blank(index));
                envs.push(Vec::new());
                continue;
            }
            // One raft entry carries one to four commands.
            let mut entry = Vec::new();
            for _ in 0..1 + g.below(4) {
                let env = if !sent.is_empty() && g.below(8) == 0 {
                    // A client retry: the same envelope again, maybe in the same batch or entry.
                    sent[g.below(sent.len() as u64) as usize].clone()
                } else {
                    n += 1;
                    let env = envelope(&mut g, n, store.last_seq());
                    sent.push(env.clone());
                    env
                };
                entry.push(env);
            }
            envs.push(entry.clone());
            batch.push(normal_batch(index, entry));
        }
        let responses = sm.apply(batch).await.expect("apply");
        assert_eq!(responses.len(), envs.len());
        for (entry, BatchResponse(resps)) in envs.into_iter().zip(responses) {
            assert_eq!(resps.len(), entry.len(), "one response per command of an entry");
            for (env, resp) in entry.into_iter().zip(resps) {
                assert_eq!(resp.command_id, env.command_id);
                match firsts.get(&env.command_id) {
                    None => {
                        assert!(!resp.duplicate, "first apply of {} is not a duplicate", env.command_id);
                        assert!(!resp.events.is_empty(), "every command records at least one event");
                        assert_eq!(resp.rejection.is_some(), resp.events[0].event.kind() == "CommandRejected");
                        assert!(resp.events.iter().all(|r| r.raft_index == resp.raft_index));
                        firsts.insert(env.command_id.clone(), resp);
                    }
                    Some(first) => {
                        assert!(resp.duplicate);
                        assert_eq!(resp.events, first.events);
                        assert_eq!(resp.raft_index, first.raft_index);
                        assert_eq!(resp.rejection, first.rejection);
                    }
                }
            }
        }
    }
    (firsts, sent, index)
}

#[tokio::test]
async fn apply_folds_dedups_chains_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (firsts, sent, mut index, last_seq, last_hash, view, decision) = {
        let (_log, mut sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("open");
        let (firsts, sent, index) = apply_generated(&mut sm, &store, 1_500).await;
        let events = all_events(&store);
        assert!(events.len() > 1_000, "enough events to cross a checkpoint: {}", events.len());
        assert!(firsts.values().any(|r| r.rejection.is_some()), "some commands were rejected");
        assert!(firsts.values().any(|r| r.rejection.is_none()), "some commands were accepted");

        // (a) The stored history folds into exactly the live state.
        let (d, v) = fold(&events);
        assert_eq!(d, store.decision());
        assert_eq!(v, store.view());
        // (b) The hash chain holds from genesis to the last hash.
        assert_eq!(verify_chain(GENESIS_HASH, &events).expect("chain"), store.last_hash());
        assert_eq!(events.last().map(|r| r.seq), Some(store.last_seq()));
        assert_eq!(store.oldest_seq(), 1);
        (firsts, sent, index, store.last_seq(), store.last_hash(), store.view(), store.decision())
    };

    // (d) Reopening from disk (checkpoint + replay) yields the same state.
    let (_log, mut sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("reopen");
    assert_eq!(store.last_seq(), last_seq);
    assert_eq!(store.last_hash(), last_hash);
    assert_eq!(store.view(), view);
    assert_eq!(store.decision(), decision);

    // (c) Resubmitting any earlier command id returns its first outcome and records nothing.
    for env in sent.iter().step_by(37) {
        index += 1;
        let resp = single(sm.apply(vec![normal(index, env.clone())]).await.expect("apply"));
        let first = &firsts[&env.command_id];
        assert!(resp.duplicate);
        assert_eq!(
            resp.events.iter().map(|r| r.seq).collect::<Vec<_>>(),
            first.events.iter().map(|r| r.seq).collect::<Vec<_>>()
        );
        assert_eq!(resp.events, first.events);
    }
    assert_eq!(store.last_seq(), last_seq);
    assert_eq!(store.last_hash(), last_hash);
    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied.map(|l| l.index), Some(index));
}

#[tokio::test]
async fn snapshot_carries_the_full_history() {
    let dir_l = tempfile::tempdir().expect("tempdir");
    let dir_f = tempfile::tempdir().expect("tempdir");
    let (_log_l, mut sm_l, store_l) = open_storage(dir_l.path(), CHECKPOINT_EVERY).expect("open leader");
    let (_log_f, mut sm_f, store_f) = open_storage(dir_f.path(), CHECKPOINT_EVERY).expect("open follower");
    let (firsts, _, index) = apply_generated(&mut sm_l, &store_l, 300).await;

    let mut snap = sm_l.get_snapshot_builder().await.build_snapshot().await.expect("build");
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(index));
    let mut current = sm_l.get_current_snapshot().await.expect("current").expect("a snapshot");
    assert_eq!(current.meta, snap.meta);
    assert!(
        snap.snapshot.is_built() && snap.snapshot.bytes().expect("bytes").is_empty(),
        "building does not materialise the history in memory"
    );
    // openraft asks for the current snapshot at every start-up, for its
    // meta: the payload (every event) is built only when read.
    assert!(!current.snapshot.is_built(), "asking for the current snapshot builds no payload");
    let mut again = sm_l.get_current_snapshot().await.expect("current").expect("a snapshot");
    assert_eq!(
        current.snapshot.bytes().expect("payload"),
        again.snapshot.bytes().expect("payload"),
        "the materialised snapshot is deterministic"
    );

    sm_f.install_snapshot(&current.meta, current.snapshot).await.expect("install");
    assert_eq!(store_f.last_seq(), store_l.last_seq());
    assert_eq!(store_f.last_hash(), store_l.last_hash());
    assert_eq!(store_f.view(), store_l.view());
    assert_eq!(store_f.decision(), store_l.decision());
    assert_eq!(all_events(&store_f), all_events(&store_l));
    assert_eq!(sm_f.applied_state().await.expect("state"), sm_l.applied_state().await.expect("state"));
    for seq in (0..=store_l.last_seq()).step_by(7) {
        assert_eq!(store_f.view_at(seq).expect("follower"), store_l.view_at(seq).expect("leader"), "seq {seq}");
    }
    // The follower's subject index was rebuilt from the snapshot's events.
    for node in NODES {
        let filter = EventFilter { node: Some(node.to_string()), ..Default::default() };
        let page = store_f.events_page(1, None, 0, &filter).expect("follower page");
        assert_eq!(page.records, store_l.events(1, None, 0, &filter).expect("leader"), "{node}");
        assert_eq!(page.read, page.records.len() as u64, "{node}: read through the index");
    }

    // Dedup rows travel with the snapshot.
    let (id, first) = firsts.iter().next().expect("a command");
    let env = CommandEnvelope {
        command_id: id.clone(),
        actor: Actor::user("ada"),
        time_ms: 0,
        correlation_id: id.clone(),
        command: Command::StateIntent { text: "again".into() },
    };
    let resp = single(sm_f.apply(vec![normal(index + 1, env)]).await.expect("apply"));
    assert!(resp.duplicate);
    assert_eq!(resp.events, first.events);
}

/// The payload a member sends is produced in pieces of about a bounded
/// size straight from RocksDB (a 10 M-event history is several GiB of it),
/// and is exactly the snapshot's content: the checkpoint, every event in
/// order and the dedup rows of the entries it covers, as JSON any receiver
/// decodes in one piece.
#[tokio::test]
async fn snapshot_payload_is_produced_in_bounded_pieces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("open");
    let (_, _, index) = apply_generated(&mut sm, &store, 300).await;
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    // Applied after the snapshot: neither its events nor its dedup rows
    // belong to it.
    let env = CommandEnvelope {
        command_id: "after-the-snapshot".into(),
        actor: Actor::user("ada"),
        time_ms: 0,
        correlation_id: "after-the-snapshot".into(),
        command: Command::StateIntent { text: "later".into() },
    };
    assert!(!single(sm.apply(vec![normal(index + 1, env)]).await.expect("apply")).duplicate);
    let record: crate::snapshot_payload::SnapshotRecord =
        store.db().get_json(CF_SM_META, &SmMetaKey::Snapshot.encode()).expect("read").expect("a snapshot record");
    assert_eq!(record.meta, snap.meta);

    const PIECE: usize = 4096;
    let pieces: Vec<Vec<u8>> = super::PayloadPieces::new(store.clone(), record.clone())
        .with_piece_bytes(PIECE)
        .collect::<crate::Result<_>>()
        .expect("pieces");
    let biggest_event = all_events(&store).iter().map(|r| serde_json::to_vec(r).expect("json").len()).max();
    let header = pieces[0].len();
    assert!(pieces.len() > 10, "{} pieces", pieces.len());
    for (i, p) in pieces.iter().enumerate().skip(1) {
        assert!(p.len() <= PIECE + biggest_event.unwrap_or(0) + 1, "piece {i}: {} bytes", p.len());
    }
    let bytes = pieces.concat();
    let payload: crate::snapshot_payload::SnapshotPayload = serde_json::from_slice(&bytes).expect("one JSON payload");
    assert!(header < bytes.len() / 4, "the header holds the checkpoint, not the events");

    let last_seq = record.last_seq;
    assert!(last_seq < store.last_seq());
    assert_eq!(payload.events, store.read_range(1, last_seq).expect("events"));
    let upto = snap.meta.last_log_id.map(|l| l.index).expect("applied");
    let mut dedup = Vec::new();
    store
        .db()
        .scan(crate::keys::CF_DEDUP, &[], |k, v| {
            let row: crate::dedup_row::DedupRow = crate::db::decode_json(crate::keys::CF_DEDUP, k, v)?;
            if row.raft_index <= upto {
                dedup.push(row);
            }
            Ok(true)
        })
        .expect("dedup");
    assert!(!dedup.is_empty());
    assert_eq!(payload.dedup, dedup);
    assert_eq!(payload.last_applied, snap.meta.last_log_id);
    assert_eq!(payload.membership, snap.meta.last_membership);
    assert_eq!(payload.checkpoint.last_seq, last_seq);
    assert_eq!(Some(&payload.checkpoint.last_hash), payload.events.last().map(|r| &r.hash));
    assert_eq!(payload.checkpoint.view.last_seq, last_seq);
    // The same bytes whatever the piece size.
    let whole: Vec<u8> =
        super::PayloadPieces::new(store.clone(), record).collect::<crate::Result<Vec<_>>>().expect("pieces").concat();
    assert_eq!(whole, bytes);

    // A history with a hole is refused by name, not sent short.
    let db = store.db();
    db.delete_range(crate::keys::CF_EVENTS, &crate::keys::u64_key(150), &crate::keys::u64_key(151)).expect("delete");
    let record: crate::snapshot_payload::SnapshotRecord =
        db.get_json(CF_SM_META, &SmMetaKey::Snapshot.encode()).expect("read").expect("record");
    let err = super::PayloadPieces::new(store.clone(), record)
        .with_piece_bytes(PIECE)
        .collect::<crate::Result<Vec<_>>>()
        .expect_err("event 150 is gone");
    assert!(err.to_string().contains("needs event 150"), "{err}");
}

/// A leader store with `commands` generated commands and a snapshot built,
/// that snapshot, and its payload.
async fn leader_with_snapshot(
    dir: &std::path::Path,
    commands: u64,
) -> ((LogStore, StateMachine), EventStore, openraft::Snapshot<TypeConfig>, Vec<u8>) {
    let (log, mut sm, store) = open_storage(dir, CHECKPOINT_EVERY).expect("open leader");
    apply_generated(&mut sm, &store, commands).await;
    sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let mut current = sm.get_current_snapshot().await.expect("current").expect("a snapshot");
    let bytes = current.snapshot.bytes().expect("payload").to_vec();
    ((log, sm), store, current, bytes)
}

/// The snapshot receive files in `dir`.
fn spools(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("incoming-snapshot-")))
        .collect()
}

/// A member receives a snapshot into a file beside its database (a long
/// history is more than memory), installs it from there reading it one
/// event at a time, and removes the file; a file a crash left behind is
/// removed when the store opens.
#[tokio::test]
async fn a_received_snapshot_is_spooled_to_disk_and_the_file_removed() {
    use tokio::io::AsyncWriteExt;

    let dir_l = tempfile::tempdir().expect("tempdir");
    let dir_f = tempfile::tempdir().expect("tempdir");
    let (_leader, store_l, current, bytes) = leader_with_snapshot(dir_l.path(), 200).await;

    let stale = dir_f.path().join("incoming-snapshot-1-0.part");
    std::fs::create_dir_all(dir_f.path()).expect("dir");
    std::fs::write(&stale, b"half a snapshot").expect("write");
    let (_log_f, mut sm_f, store_f) = open_storage(dir_f.path(), CHECKPOINT_EVERY).expect("open follower");
    assert!(!stale.exists(), "a receive file left by a crash is removed at open");

    let mut data = sm_f.begin_receiving_snapshot().await.expect("begin");
    for chunk in bytes.chunks(1000) {
        data.write_all(chunk).await.expect("write");
    }
    data.shutdown().await.expect("shutdown");
    assert_eq!(spools(dir_f.path()).len(), 1, "received into a file");
    assert!(!data.is_built(), "not held in memory");
    sm_f.install_snapshot(&current.meta, data).await.expect("install");
    assert_eq!(spools(dir_f.path()).len(), 0, "the file goes after the install");
    assert_eq!(store_f.last_hash(), store_l.last_hash());
    assert_eq!(store_f.view(), store_l.view());
    assert_eq!(all_events(&store_f), all_events(&store_l));

    // A broken file is refused by name, and goes too.
    let mut data = sm_f.begin_receiving_snapshot().await.expect("begin");
    data.write_all(&bytes[..bytes.len() / 2]).await.expect("write");
    data.shutdown().await.expect("shutdown");
    let err = sm_f.install_snapshot(&current.meta, data).await.expect_err("half a snapshot");
    assert!(err.to_string().contains(&current.meta.snapshot_id), "{err}");
    assert!(spools(dir_f.path()).is_empty());
    assert_eq!(all_events(&store_f), all_events(&store_l), "a refused snapshot loses nothing");
}

/// An install writes in batches (a long history is more than one write
/// batch can hold in memory). A member stopped part-way finishes it from
/// the kept receive file when it next opens, before anything reads the
/// half-written store; if that file is gone it refuses to open, saying
/// what to do, rather than serving a partial history.
#[tokio::test]
async fn an_interrupted_install_finishes_when_the_member_opens_again() {
    use crate::snapshot_install::tests::{BATCH_BYTES, FAIL_AFTER_BATCHES};
    use tokio::io::AsyncWriteExt;

    let dir_l = tempfile::tempdir().expect("tempdir");
    let (_leader, store_l, current, bytes) = leader_with_snapshot(dir_l.path(), 300).await;

    for file_survives in [true, false] {
        let dir_f = tempfile::tempdir().expect("tempdir");
        {
            let (_log_f, mut sm_f, store_f) = open_storage(dir_f.path(), CHECKPOINT_EVERY).expect("open follower");
            let mut data = sm_f.begin_receiving_snapshot().await.expect("begin");
            data.write_all(&bytes).await.expect("write");
            data.shutdown().await.expect("shutdown");
            BATCH_BYTES.with(|b| b.set(Some(4096)));
            FAIL_AFTER_BATCHES.with(|f| f.set(Some(2)));
            let err = sm_f.install_snapshot(&current.meta, data).await.expect_err("stopped part-way");
            FAIL_AFTER_BATCHES.with(|f| f.set(None));
            assert!(err.to_string().contains(&current.meta.snapshot_id), "{err}");
            assert!(crate::snapshot_install::interrupted(store_f.db()).expect("read"));
            assert!(store_f.db().first_key(crate::keys::CF_EVENTS).expect("read").is_some(), "it had begun writing");
            assert_eq!(spools(dir_f.path()).len(), 1, "the receive file is kept to finish from");
        }
        if file_survives {
            let (_log_f, mut sm_f, store_f) = open_storage(dir_f.path(), CHECKPOINT_EVERY).expect("reopen");
            assert!(!crate::snapshot_install::interrupted(store_f.db()).expect("read"));
            assert!(spools(dir_f.path()).is_empty(), "finished: the file goes");
            assert_eq!(store_f.last_hash(), store_l.last_hash());
            assert_eq!(store_f.view(), store_l.view());
            assert_eq!(store_f.decision(), store_l.decision());
            assert_eq!(all_events(&store_f), all_events(&store_l));
            assert_eq!(sm_f.applied_state().await.expect("state").0, current.meta.last_log_id);
            for seq in (0..=store_l.last_seq()).step_by(11) {
                assert_eq!(store_f.view_at(seq).expect("follower"), store_l.view_at(seq).expect("leader"), "{seq}");
            }
        } else {
            for file in spools(dir_f.path()) {
                std::fs::remove_file(file).expect("remove");
            }
            let err = open_storage(dir_f.path(), CHECKPOINT_EVERY).err().expect("refuses to open");
            let msg = err.to_string();
            assert!(
                msg.contains("was interrupted") && msg.contains("is gone") && msg.contains("add this member"),
                "{msg}"
            );
        }
    }
    BATCH_BYTES.with(|b| b.set(None));
}

#[tokio::test]
async fn installing_a_snapshot_takes_the_state_from_its_events_not_its_checkpoint() {
    let dir_l = tempfile::tempdir().expect("tempdir");
    let dir_f = tempfile::tempdir().expect("tempdir");
    let (_log_l, mut sm_l, store_l) = open_storage(dir_l.path(), CHECKPOINT_EVERY).expect("open leader");
    let (_log_f, mut sm_f, store_f) = open_storage(dir_f.path(), CHECKPOINT_EVERY).expect("open follower");
    apply_generated(&mut sm_l, &store_l, 200).await;
    sm_l.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let current = sm_l.get_current_snapshot().await.expect("current").expect("a snapshot");
    let meta = current.meta.clone();

    // A sender whose checkpoint says the cluster is empty, while its
    // (hash-chained) events say otherwise.
    let mut payload: crate::snapshot_payload::SnapshotPayload =
        serde_json::from_slice(&current.snapshot.into_bytes().expect("payload")).expect("payload");
    assert_ne!(payload.checkpoint.view, ClusterView::default(), "the history has some state to lose");
    payload.checkpoint.decision = DecisionState::default();
    payload.checkpoint.view = ClusterView::default();
    let data = serde_json::to_vec(&payload).expect("encode");
    sm_f.install_snapshot(&meta, Box::new(crate::SnapshotData::new(data))).await.expect("install");

    assert_eq!(store_f.view(), store_l.view());
    assert_eq!(store_f.decision(), store_l.decision());
    // And the checkpoint it stored is the fold too: a restart keeps it.
    drop((_log_f, sm_f, store_f));
    let (_log_f, _sm_f, store_f) = open_storage(dir_f.path(), CHECKPOINT_EVERY).expect("reopen follower");
    assert_eq!(store_f.view(), store_l.view());
    assert_eq!(store_f.decision(), store_l.decision());
}

#[tokio::test]
async fn watch_streams_backlog_then_live_tail_without_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("open");
    let intent = |n: u64| CommandEnvelope {
        command_id: format!("c{n}"),
        actor: Actor::user("ada"),
        time_ms: n as i64,
        correlation_id: format!("c{n}"),
        command: Command::StateIntent { text: format!("intent {n}") },
    };
    for n in 1..=5 {
        sm.apply(vec![normal(n, intent(n))]).await.expect("apply");
    }
    let mut watch = Box::pin(store.watch(3, EventFilter::default()));
    let mut all = Box::pin(store.watch(0, EventFilter { kinds: vec!["IntentStated".into()], ..Default::default() }));
    for n in 6..=10 {
        sm.apply(vec![normal(n, intent(n))]).await.expect("apply");
    }
    let deadline = Duration::from_secs(5);
    let mut seqs = Vec::new();
    while seqs.len() < 8 {
        let rec = tokio::time::timeout(deadline, watch.next()).await.expect("in time").expect("open").expect("ok");
        seqs.push(rec.seq);
    }
    assert_eq!(seqs, (3..=10).collect::<Vec<_>>());
    let mut n = 0;
    while n < 10 {
        tokio::time::timeout(deadline, all.next()).await.expect("in time").expect("open").expect("ok");
        n += 1;
    }

    // A seq older than the oldest kept one is an explicit error, then the end.
    store.write_live().oldest_seq = 4;
    let mut old = Box::pin(store.watch(2, EventFilter::default()));
    match old.next().await {
        Some(Err(Error::Compacted { requested: 2, oldest: 4 })) => {}
        other => panic!("expected a compacted error, got {other:?}"),
    }
    assert!(old.next().await.is_none());
}

#[tokio::test]
async fn one_entry_applies_its_commands_in_order_and_dedups_within_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("open");
    let intent = |id: &str| CommandEnvelope {
        command_id: id.into(),
        actor: Actor::user("ada"),
        time_ms: 7,
        correlation_id: id.into(),
        command: Command::StateIntent { text: format!("intent {id}") },
    };
    let bad = CommandEnvelope { command: Command::StateIntent { text: " ".into() }, ..intent("bad") };
    let entry = normal_batch(4, vec![intent("a"), intent("b"), intent("a"), bad, intent("c")]);
    let mut responses = sm.apply(vec![blank(3), entry]).await.expect("apply");
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0], BatchResponse::default(), "a blank entry answers nothing");
    let BatchResponse(r) = responses.remove(1);
    let ids: Vec<_> = r.iter().map(|r| r.command_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "a", "bad", "c"]);
    assert!(r.iter().all(|r| r.raft_index == 4));
    assert_eq!(r.iter().map(|r| r.duplicate).collect::<Vec<_>>(), [false, false, true, false, false]);
    assert_eq!(r[2].events, r[0].events, "the duplicate answers the first outcome");
    assert!(r[3].rejection.is_some());
    let seqs: Vec<u64> = r.iter().filter(|r| !r.duplicate).flat_map(|r| r.events.iter().map(|e| e.seq)).collect();
    assert_eq!(seqs, (1..=4).collect::<Vec<_>>(), "dense seqs in command order");
    let events = all_events(&store);
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|e| e.raft_index == 4));
    assert_eq!(verify_chain(GENESIS_HASH, &events).expect("chain"), store.last_hash());
    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied.map(|l| l.index), Some(4));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// The state at any past seq, read from the nearest checkpoint plus a
    /// replay, is exactly the fold of the first `seq` events, whatever the
    /// checkpoint intervals; a reader of one table gets that table exactly;
    /// and times map to the last seq stamped at or before them.
    #[test]
    fn state_at_any_seq_is_the_fold_of_the_events_before_it(
        seed in proptest::prelude::any::<u64>(),
        count in 1u64..200,
        rows_every in 1u64..60,
        full_every in 1u64..400,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let every = Checkpoints { rows_every, full_every };
            let (_log, mut sm, store) = open_storage_with(dir.path(), every, true).expect("open");
            apply_generated_with(&mut sm, &store, count, seed).await;
            let events = all_events(&store);
            let none = ViewTables::default();
            for seq in 0..=events.len() {
                let (_, expected) = fold(&events[..seq]);
                assert_eq!(store.view_at(seq as u64).expect("view_at"), expected, "seq {seq}, {every:?}");
                let at = |tables| {
                    let v = store.view_at_with(seq as u64, tables).expect("view_at_with");
                    // The scalars are exact too, however few events the replay decoded.
                    let scalars = (v.last_seq, &v.last_hash, v.last_time_ms, &v.event_counts);
                    assert_eq!(
                        scalars,
                        (expected.last_seq, &expected.last_hash, expected.last_time_ms, &expected.event_counts),
                        "seq {seq}, {tables:?}"
                    );
                    v
                };
                assert_eq!(at(ViewTables { members: true, ..none }).members, expected.members, "seq {seq}");
                assert_eq!(at(ViewTables { nodes: true, ..none }).nodes, expected.nodes, "seq {seq}");
                assert_eq!(at(ViewTables { workloads: true, ..none }).workloads, expected.workloads, "seq {seq}");
                // Without the verdicts: the same rows, summaries kept, `considered` empty.
                let mut summaries = expected.workloads.clone();
                for id in expected.workloads.keys() {
                    let w = summaries.get_mut(id).expect("row");
                    for p in [w.placement.as_mut(), w.unschedulable.as_mut()].into_iter().flatten() {
                        p.considered.clear();
                    }
                }
                let read = store.view_at_summaries(seq as u64, ViewTables { workloads: true, ..none }).expect("summaries");
                assert_eq!(read.workloads, summaries, "seq {seq}");
                // Reading some columns: every field not skipped is exact.
                let skip = ["spec", "placement", "unschedulable", "gpu_uuids", "cancel_reason", "node"];
                let without = |rows: &claw_projections::Table<String, claw_projections::WorkloadRow>| {
                    rows.values()
                        .map(|w| claw_projections::WorkloadRow {
                            spec: Default::default(),
                            placement: None,
                            unschedulable: None,
                            gpu_uuids: Vec::new(),
                            cancel_reason: None,
                            node: None,
                            ..w.clone()
                        })
                        .collect::<Vec<_>>()
                };
                let some = store
                    .view_at_summaries_without(seq as u64, ViewTables { workloads: true, ..none }, &skip)
                    .expect("some columns");
                assert_eq!(without(&some.workloads), without(&summaries), "seq {seq}");
                assert!(some.workloads.keys().eq(summaries.keys()), "seq {seq}");
                // The table as of an earlier row checkpoint (a base), its
                // changed rows replaced by the overlay's, is the table at seq.
                let newest = store.row_checkpoint_at_or_before(seq as u64).expect("checkpoint");
                let first = store.row_checkpoint_at_or_before(rows_every.min(seq as u64)).expect("checkpoint");
                let middle = store.row_checkpoint_at_or_before(seq as u64 / 2).expect("checkpoint");
                for base in [first, middle, newest].into_iter().flatten() {
                    let overlay = store
                        .workloads_changed_since(base, seq as u64)
                        .expect("overlay")
                        .unwrap_or_else(|| panic!("a chain of checkpoints from {base} to seq {seq}"));
                    let mut table: BTreeMap<String, claw_projections::WorkloadRow> = store
                        .view_at_summaries(base, ViewTables { workloads: true, ..none })
                        .expect("base")
                        .workloads
                        .iter()
                        .filter(|(id, _)| !overlay.changed.contains(*id))
                        .map(|(id, w)| (id.clone(), w.clone()))
                        .collect();
                    assert!(overlay.view.workloads.keys().all(|id| overlay.changed.contains(id)), "seq {seq}");
                    table.extend(overlay.view.workloads.iter().map(|(id, w)| (id.clone(), w.clone())));
                    let want: BTreeMap<String, claw_projections::WorkloadRow> =
                        summaries.iter().map(|(id, w)| (id.clone(), w.clone())).collect();
                    assert_eq!(table, want, "base {base}, seq {seq}, {every:?}");
                }
                assert_eq!(at(ViewTables { proposals: true, ..none }).proposals, expected.proposals, "seq {seq}");
                assert_eq!(at(ViewTables { incidents: true, ..none }).incidents, expected.incidents, "seq {seq}");
            }
            let last = store.last_seq();
            assert!(matches!(store.view_at(last + 1), Err(Error::BeyondEnd { .. })));

            assert!(events.windows(2).all(|w| w[0].time_ms <= w[1].time_ms), "event times never go backwards");
            if let Some(first) = events.first() {
                assert_eq!(store.seq_at_time(first.time_ms - 1).expect("seq_at_time"), 0);
            }
            for (i, rec) in events.iter().enumerate() {
                let expected = events.iter().rposition(|r| r.time_ms <= rec.time_ms).map_or(0, |p| p as u64 + 1);
                assert_eq!(store.seq_at_time(rec.time_ms).expect("seq_at_time"), expected, "event {i}");
            }
            assert_eq!(store.seq_at_time(i64::MAX).expect("seq_at_time"), last);
        });
    }

    /// For any generated history (valid, invalid and retried commands, in
    /// entries and batches of any size), replaying the stored events from
    /// empty gives exactly the live projections and decision state, and the
    /// stored hash chain verifies up to the live head.
    #[test]
    fn replaying_the_stored_events_gives_the_live_state(seed in proptest::prelude::any::<u64>(), count in 1u64..250) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let (_log, mut sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("open");
            apply_generated_with(&mut sm, &store, count, seed).await;
            let events = all_events(&store);
            let (d, v) = fold(&events);
            assert_eq!(d, store.decision());
            assert_eq!(v, store.view());
            assert_eq!(verify_chain(GENESIS_HASH, &events).expect("chain"), store.last_hash());
        });
    }
}

/// Rollups close a bucket once the log holds a later event, summarise each
/// GPU's samples in it exactly (min/avg/max/nearest-rank p95), skip empty
/// stretches, resume from their watermark, and expire by retention.
#[tokio::test]
async fn gpu_metrics_roll_up_per_minute_and_hour() {
    use crate::Resolution;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("open");
    let t0: i64 = 1_700_000_000_000 / 3_600_000 * 3_600_000; // on an hour boundary
    let env = |n: u64, t: i64, command: Command| CommandEnvelope {
        command_id: format!("c{n}"),
        actor: Actor::user("ada"),
        time_ms: t,
        correlation_id: format!("c{n}"),
        command,
    };
    let caps = NodeCapabilities {
        gpus: vec![GpuInfo { index: 0, uuid: "G0".into(), model: "H100".into(), memory_mb: 80_000 }],
        ..Default::default()
    };
    let mut envs = vec![env(0, t0, Command::RegisterNode { node: "gpu-a".into(), capabilities: caps })];
    // Minute 0: utilisation 1..=20 (one sample every 3 s); minute 1: nothing;
    // minute 2: 50 and 70; then one sample two hours later closes everything before it.
    let sample =
        |u: f64| GpuSample { gpu_uuid: "G0".into(), utilization_pct: u, temperature_c: 40.0 + u, ..Default::default() };
    for i in 0..20 {
        envs.push(env(
            1 + i,
            t0 + 3_000 * i as i64,
            Command::ObserveGpuMetrics { node: "gpu-a".into(), samples: vec![sample(1.0 + i as f64)] },
        ));
    }
    envs.push(env(30, t0 + 120_000, Command::ObserveGpuMetrics { node: "gpu-a".into(), samples: vec![sample(50.0)] }));
    envs.push(env(31, t0 + 150_000, Command::ObserveGpuMetrics { node: "gpu-a".into(), samples: vec![sample(70.0)] }));
    envs.push(env(32, t0 + 2 * 3_600_000 + 5, Command::Heartbeat { node: "gpu-a".into() }));
    let entries: Vec<_> = envs.into_iter().enumerate().map(|(i, e)| normal(i as u64 + 1, e)).collect();
    sm.apply(entries).await.expect("apply");

    let p = store.roll_up(10_000).expect("roll up");
    let minutes = store.rollups(Resolution::Minute, i64::MIN, i64::MAX, None).expect("read");
    let got: Vec<(i64, u64, f64, f64, f64, f64)> = minutes
        .iter()
        .map(|r| {
            let u = r.utilization_pct;
            (r.bucket_ms - t0, r.samples, u.min, u.avg, u.max, u.p95)
        })
        .collect();
    assert_eq!(got, [(0, 20, 1.0, 10.5, 20.0, 19.0), (120_000, 2, 50.0, 60.0, 70.0, 70.0)]);
    assert_eq!(minutes[1].temperature_c.max, 110.0);
    let hours = store.rollups(Resolution::Hour, i64::MIN, i64::MAX, Some("gpu-a")).expect("read");
    assert_eq!(hours.len(), 1);
    assert_eq!((hours[0].bucket_ms, hours[0].samples, hours[0].utilization_pct.max), (t0, 22, 70.0));
    // Empty minutes are skipped, not walked one by one.
    assert!(p.buckets["1m"] < 10, "{p:?}");
    assert_eq!(store.rollup_watermark(Resolution::Hour).expect("wm"), Some(t0 + 2 * 3_600_000));

    // A second pass has nothing left to close; node filter and time range narrow the read.
    let again = store.roll_up(10_000).expect("roll up");
    assert_eq!(again.rows, 0);
    assert!(store.rollups(Resolution::Minute, i64::MIN, i64::MAX, Some("gpu-b")).expect("read").is_empty());
    assert_eq!(store.rollups(Resolution::Minute, t0 + 60_000, i64::MAX, None).expect("read").len(), 1);

    // Retention drops the minute rows that started before the cut, not the hour rows.
    assert_eq!(store.expire_rollups(Resolution::Minute, t0 + 60_000).expect("expire"), 1);
    assert_eq!(store.rollups(Resolution::Minute, i64::MIN, i64::MAX, None).expect("read").len(), 1);
    assert_eq!(store.rollups(Resolution::Hour, i64::MIN, i64::MAX, None).expect("read").len(), 1);
}

/// A row checkpoint stores the rows that changed since the previous one,
/// not the whole view; after a restart the next one stores every row (the
/// row checkpoints on disk may lag the state loaded from a whole-state
/// checkpoint); past states stay exact across the restart.
#[tokio::test]
async fn row_checkpoints_store_changed_rows_and_stay_exact_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let every = Checkpoints { rows_every: 10, full_every: 25 };
    let env = |n: u64, command: Command| CommandEnvelope {
        command_id: format!("c-{n}"),
        actor: Actor::user("ada"),
        time_ms: 1_700_000_000_000 + n as i64,
        correlation_id: String::new(),
        command,
    };
    let register = |node: String| Command::RegisterNode {
        node,
        capabilities: NodeCapabilities { cpus: 8, memory_mb: 1 << 16, ..Default::default() },
    };
    let mut n = 0u64;
    let mut apply_all = async |sm: &mut StateMachine, commands: Vec<Command>| {
        for command in commands {
            n += 1;
            sm.apply(vec![normal(n, env(n, command))]).await.expect("apply");
        }
    };
    {
        let (_log, mut sm, store) = open_storage_with(dir.path(), every, true).expect("open");
        // Twenty nodes register (seqs 1..=20), then only gpu-0 heartbeats.
        apply_all(&mut sm, (0..20).map(|i| register(format!("gpu-{i}"))).collect()).await;
        apply_all(&mut sm, (0..13).map(|_| Command::Heartbeat { node: "gpu-0".into() }).collect()).await;
        assert_eq!(store.last_seq(), 33);
        let db = store.db();
        assert_eq!(view_rows::rows_stored_at(db, 10).expect("count"), 10, "nodes 0..=9");
        assert_eq!(view_rows::rows_stored_at(db, 20).expect("count"), 10, "nodes 10..=19");
        assert_eq!(view_rows::rows_stored_at(db, 30).expect("count"), 1, "only gpu-0 changed");
    }
    let (_log, mut sm, store) = open_storage_with(dir.path(), every, true).expect("reopen");
    apply_all(&mut sm, (0..10).map(|_| Command::Heartbeat { node: "gpu-1".into() }).collect()).await;
    assert_eq!(store.last_seq(), 43);
    assert_eq!(view_rows::rows_stored_at(store.db(), 40).expect("count"), 20, "after a restart: every row");
    // Each meta row names the checkpoint before it, across the restart too,
    // so the changes between two checkpoints can be trusted; a chain with a
    // link missing, or ends that are not checkpoints, cannot.
    assert_eq!(store.workload_changes(10, 40).expect("changes"), Some(Default::default()));
    assert_eq!(store.workload_changes(30, 30).expect("changes"), Some(Default::default()));
    assert_eq!(store.workload_changes(10, 33).expect("changes"), None, "33 is not a checkpoint");
    assert_eq!(store.workload_changes(5, 40).expect("changes"), None, "5 is not a checkpoint");
    assert_eq!(store.workload_changes(40, 10).expect("changes"), None, "backwards");
    // A base is a head and parts read one by one; a part large enough to
    // go to a blob file reads back the same.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    store.put_workloads_base(30, b"head 30", &[b"part 0".to_vec(), big.clone()]).expect("a base at a checkpoint");
    assert!(store.put_workloads_base(31, b"head", &[]).is_err(), "no checkpoint at 31");
    let too_many: Vec<Vec<u8>> = (0..256).map(|_| Vec::new()).collect();
    assert!(store.put_workloads_base(20, b"head", &too_many).is_err(), "at most 255 parts");
    assert_eq!(store.workloads_base_at_or_before(29).expect("base"), None);
    store.put_workloads_base(10, b"head 10", &[b"old part".to_vec()]).expect("a base at a checkpoint");
    store.db().flush().expect("flush: read back from table and blob files");
    assert_eq!(store.workloads_base_at_or_before(43).expect("base"), Some((30, b"head 30".to_vec())));
    assert_eq!(store.workloads_base_at_or_before(29).expect("base"), Some((10, b"head 10".to_vec())));
    assert_eq!(store.workloads_base_part(30, 0).expect("part"), Some(b"part 0".to_vec()));
    assert_eq!(store.workloads_base_part(30, 1).expect("part"), Some(big));
    assert_eq!(store.workloads_base_part(30, 2).expect("part"), None);
    assert_eq!(store.workloads_base_part(10, 0).expect("part"), Some(b"old part".to_vec()));
    assert_eq!(store.workloads_base_part(10, 1).expect("part"), None);
    // Bases sit beside the rows: past views still read exactly.
    let events = all_events(&store);
    for seq in 0..=events.len() {
        let (_, expected) = fold(&events[..seq]);
        assert_eq!(store.view_at(seq as u64).expect("view_at"), expected, "seq {seq}");
    }
    view_rows::delete_meta_for_test(store.db(), 20);
    assert_eq!(store.workload_changes(10, 40).expect("changes"), None, "the checkpoint at 20 is gone");
    assert_eq!(store.workload_changes(20, 40).expect("changes"), None, "no checkpoint at 20");
    assert_eq!(store.workload_changes(30, 40).expect("changes"), Some(Default::default()));
    let events = all_events(&store);
    for seq in 0..=events.len() {
        let (_, expected) = fold(&events[..seq]);
        assert_eq!(store.view_at(seq as u64).expect("view_at"), expected, "seq {seq}");
    }
}

/// The seqs of the whole-state checkpoints stored in `store`.
fn whole_state_checkpoints(store: &EventStore) -> Vec<u64> {
    let (from, _) = SmMetaKey::checkpoint_range();
    let mut seqs = Vec::new();
    store
        .db()
        .scan(CF_SM_META, &from, |k, _| {
            let seq = SmMetaKey::checkpoint_seq(k);
            seqs.extend(seq);
            Ok(seq.is_some())
        })
        .expect("scan checkpoints");
    seqs
}

/// A read of one node's or one workload's events reads those events only
/// (through the subject index) and answers exactly what a scan of every
/// event in the range would; a store written before the index existed
/// answers the same by scanning the part the index does not cover.
#[tokio::test]
async fn node_and_workload_reads_go_through_the_subject_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("open");
    apply_generated(&mut sm, &store, 400).await;
    let events = all_events(&store);
    let last = store.last_seq();
    let scan = |filter: &EventFilter, from: u64, to: u64, limit: usize| -> Vec<EventRecord> {
        events.iter().filter(|r| r.seq >= from && r.seq <= to && filter.matches(r)).take(limit).cloned().collect()
    };
    let mut filters: Vec<EventFilter> = NODES
        .iter()
        .map(|n| EventFilter { node: Some(n.to_string()), ..Default::default() })
        .chain(WORKLOADS.iter().map(|w| EventFilter { workload: Some(w.to_string()), ..Default::default() }))
        .collect();
    filters.push(EventFilter {
        node: Some("gpu-a".into()),
        kinds: vec!["NodeHeartbeat".into(), "WorkloadStarted".into()],
        ..Default::default()
    });
    filters.push(EventFilter { node: Some("gpu-a".into()), workload: Some("w1".into()), ..Default::default() });
    filters.push(EventFilter { node: Some("nobody".into()), ..Default::default() });
    let mut matched = 0;
    for filter in &filters {
        let subject_events = events
            .iter()
            .filter(|r| match &filter.node {
                Some(n) => r.event.node() == Some(n.as_str()),
                None => r.event.workload_id() == filter.workload.as_deref(),
            })
            .count() as u64;
        for (from, to, limit) in [(1, last, usize::MAX), (last / 3, 2 * last / 3, usize::MAX), (1, last, 3)] {
            let page =
                store.events_page(from, Some(to), if limit == usize::MAX { 0 } else { limit }, filter).expect("page");
            let want = scan(filter, from, to, limit);
            assert_eq!(page.records, want, "{filter:?} {from}..={to} limit {limit}");
            if limit == usize::MAX {
                assert_eq!(page.examined_to, to);
                if (from, to) == (1, last) {
                    assert_eq!(page.read, subject_events, "{filter:?}: only the subject's events are read");
                }
            } else if want.len() == limit {
                assert_eq!(page.examined_to, want[limit - 1].seq);
            }
            matched += page.records.len();
        }
    }
    assert!(matched > 100, "the filters match something: {matched}");
    drop((_log, sm, store));

    // A store from before the index: it covers only what comes after the
    // first open with it, and earlier reads scan.
    let mut batch = rocksdb::WriteBatch::default();
    let (_log, _sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("reopen");
    let db = store.db().clone();
    batch.delete_range_cf(&db.cf(CF_SUBJECTS).expect("cf"), [0u8].as_slice(), [0xFFu8].as_slice());
    batch.delete_cf(&db.cf(CF_SM_META).expect("cf"), SmMetaKey::SubjectsFrom.encode());
    db.write(batch, true).expect("drop the index");
    drop((_log, _sm, store, db));
    let (_log, _sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("reopen without the index");
    for filter in &filters {
        let page = store.events_page(1, None, 0, filter).expect("page");
        assert_eq!(page.records, scan(filter, 1, last, usize::MAX), "{filter:?}");
        assert_eq!(page.read, last, "{filter:?}: scanned");
    }
}

/// Whole-state checkpoints grow apart as the view grows: each copies the
/// whole state, so they are at least eight events per view row apart (and
/// not much more), whatever the configured interval.
#[tokio::test]
async fn whole_state_checkpoints_are_spaced_by_the_size_of_the_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm, store) =
        open_storage_with(dir.path(), Checkpoints { rows_every: 10, full_every: 1 }, true).expect("open");
    let mut g = Gen(11);
    for index in 1..=600u64 {
        let env = envelope(&mut g, index, store.last_seq());
        sm.apply(vec![normal(index, env)]).await.expect("apply");
    }
    let rows = |seq: u64| {
        let v = store.view_at(seq).expect("view_at");
        (v.members.len() + v.nodes.len() + v.workloads.len() + v.proposals.len() + v.incidents.len()) as u64
    };
    let kept = whole_state_checkpoints(&store);
    assert!(kept.len() >= 3, "{kept:?}");
    for pair in kept.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // The view only grows, so its size when b was written lies between these.
        assert!(b - a >= 8 * rows(a), "{a} → {b} with {} rows: {kept:?}", rows(a));
        assert!(b - a <= 8 * rows(b) + 8, "{a} → {b} with {} rows: {kept:?}", rows(b));
    }
}

/// A snapshot drops the whole-state checkpoints that no reader needs any
/// more (each is a copy of the whole state): past states read the row
/// checkpoints, a restart the newest, a member catching up the previous
/// snapshot's. Past states, restarts and snapshots stay exact.
#[tokio::test]
async fn snapshots_drop_the_whole_state_checkpoints_nothing_reads() {
    // Whole-state checkpoints rarer than row checkpoints (as by default),
    // and more frequent (their spacing also grows with the view, eight
    // events per row): those before the first row checkpoint serve past
    // states there, so they stay.
    for every in [Checkpoints { rows_every: 10, full_every: 25 }, Checkpoints { rows_every: 60, full_every: 15 }] {
        snapshots_drop_checkpoints_with(every).await;
    }
}

async fn snapshots_drop_checkpoints_with(every: Checkpoints) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut snapshot_seqs = Vec::new();
    {
        let (_log, mut sm, store) = open_storage_with(dir.path(), every, true).expect("open");
        let mut g = Gen(7);
        let mut index = 0u64;
        for _ in 0..3 {
            for _ in 0..150 {
                index += 1;
                let env = envelope(&mut g, index, store.last_seq());
                sm.apply(vec![normal(index, env)]).await.expect("apply");
            }
            sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
            snapshot_seqs.push(store.last_seq());
        }
        let kept = whole_state_checkpoints(&store);
        let first_rows = view_rows::first_checkpoint(store.db()).expect("first").expect("row checkpoints");
        assert!(first_rows <= every.rows_every + 30, "a row checkpoint near the start: {first_rows}");
        assert!(
            kept.iter().all(|&s| s < first_rows || s >= snapshot_seqs[1]),
            "kept {kept:?}, snapshots {snapshot_seqs:?}"
        );
        assert!(kept.contains(&snapshot_seqs[1]) && kept.contains(&snapshot_seqs[2]), "{kept:?}");
        let events = all_events(&store);
        assert!(events.len() > 300, "{}", events.len());
        for seq in 0..=events.len() {
            let (_, expected) = fold(&events[..seq]);
            assert_eq!(store.view_at(seq as u64).expect("view_at"), expected, "seq {seq}");
        }
        let current = sm.get_current_snapshot().await.expect("current").expect("a snapshot");
        assert_eq!(current.meta.snapshot_id.rsplit("seq").next(), Some(snapshot_seqs[2].to_string().as_str()));
    }
    // A restart loads the newest whole-state checkpoint and replays the rest.
    let (_log, _sm, store) = open_storage_with(dir.path(), every, true).expect("reopen");
    let (decision, view) = fold(&all_events(&store));
    assert_eq!((store.decision(), store.view()), (decision, view));
}

/// A read made of several calls is redone when a snapshot install ran
/// while it read (its parts could come from two histories), and waits out
/// an install in progress; one that no install overlapped runs once.
#[test]
fn a_read_overlapping_a_snapshot_install_is_redone() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = TempDir::new().expect("tempdir");
    let (_log, _sm, store) = open_storage(dir.path(), CHECKPOINT_EVERY).expect("open");
    let installs = &store.shared.installs;
    let calls = AtomicU32::new(0);
    let out: Result<u32, Error> = store.read_consistently(0, || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            // An install starts and ends between this read's calls.
            installs.fetch_add(2, Ordering::AcqRel);
        }
        Ok(n)
    });
    assert_eq!(out.expect("read"), 2, "the overlapped read is redone once");
    calls.store(0, Ordering::SeqCst);
    let out: Result<u32, Error> = store.read_consistently(0, || Ok(calls.fetch_add(1, Ordering::SeqCst) + 1));
    assert_eq!(out.expect("read"), 1);
    // An install that never ends: the read gives up with a clear error.
    installs.fetch_add(1, Ordering::AcqRel);
    let err = store.read_consistently(7, || Ok::<_, Error>(())).expect_err("never consistent");
    assert!(err.to_string().contains("state at seq 7 could not be read"), "{err}");
    installs.fetch_add(1, Ordering::AcqRel);
}
