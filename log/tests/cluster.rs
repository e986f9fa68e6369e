//! Three members in one process, talking Raft over real gRPC on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use claw_commands::{Actor, Command, CommandEnvelope, Event};
use claw_log::{CommandBatch, LogNode, LogOptions, ProposeError};
use openraft::BasicNode;
use tempfile::TempDir;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

const DEADLINE: Duration = Duration::from_secs(8);

struct Member {
    node: LogNode,
    addr: std::net::SocketAddr,
    _dir: TempDir,
    server: tokio::task::JoinHandle<()>,
}

async fn start_member(id: u64) -> anyhow::Result<Member> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let node = LogNode::open(LogOptions {
        node_id: id,
        data_dir: dir.path().join("data"),
        advertise_addr: addr.to_string(),
        heartbeat_ms: 50,
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        ..LogOptions::default()
    })
    .await?;
    let service = node.raft_service();
    let server = tokio::spawn(async move {
        let incoming = TcpIncoming::from(listener);
        if let Err(e) = Server::builder().add_service(service).serve_with_incoming(incoming).await {
            eprintln!("member {id} server stopped: {e}");
        }
    });
    Ok(Member { node, addr, _dir: dir, server })
}

/// Polls `check` until it holds or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("timed out after {DEADLINE:?} waiting for {what}")
}

fn intent(n: u64) -> CommandEnvelope {
    CommandEnvelope {
        command_id: format!("intent-{n}"),
        actor: Actor::user("ada"),
        time_ms: 1_700_000_000_000 + n as i64,
        correlation_id: format!("intent-{n}"),
        command: Command::StateIntent { text: format!("train model {n}") },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_agree_on_the_history() -> anyhow::Result<()> {
    let mut members = Vec::new();
    for id in 1..=3 {
        members.push(start_member(id).await.with_context(|| format!("start member {id}"))?);
    }
    let leader = members[0].node.clone();
    leader.initialize_single().await?;
    // Idempotent: a second call (as on restart) is fine.
    leader.initialize_single().await?;
    eventually("member 1 to lead", || {
        let raft = leader.raft.clone();
        async move { raft.current_leader().await == Some(1) }
    })
    .await?;

    for m in &members[1..] {
        let id = m.node.node_id();
        leader
            .raft
            .add_learner(id, BasicNode::new(m.node.advertise_addr()), true)
            .await
            .with_context(|| format!("add learner {id}"))?;
    }
    leader.raft.change_membership(BTreeSet::from([1, 2, 3]), false).await.context("change membership")?;

    let (first, _) = leader.propose(intent(1)).await.context("propose")?;
    assert!(!first.duplicate);
    assert_eq!(first.events.len(), 1);
    assert!(matches!(first.events[0].event, Event::IntentStated { .. }));
    for n in 2..=20 {
        leader.propose(intent(n)).await.context("propose")?;
    }
    let (again, _) = leader.propose(intent(7)).await.context("resubmit")?;
    assert!(again.duplicate);
    // A follower refuses and names the leader.
    match members[1].node.propose(intent(99)).await {
        Err(ProposeError::NotLeader { leader_id: Some(1) }) => {}
        other => panic!("a follower must refuse with the leader's id, got {other:?}"),
    }

    let want_seq = leader.store.last_seq();
    let want_hash = leader.store.last_hash();
    assert_eq!(want_seq, 20);
    for m in &members {
        let store = m.node.store.clone();
        let (h, id) = (want_hash.clone(), m.node.node_id());
        eventually(&format!("member {id} to reach seq {want_seq}"), || {
            let store = store.clone();
            let h = h.clone();
            async move { store.last_seq() == want_seq && store.last_hash() == h }
        })
        .await?;
        assert_eq!(store.view(), leader.store.view(), "member {id} has the leader's view");
    }
    let voters: BTreeMap<u64, _> =
        leader.raft.metrics().borrow().membership_config.nodes().map(|(k, v)| (*k, v.clone())).collect();
    assert_eq!(voters.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(leader.store.stats().fsyncs > 0);

    for m in &members {
        m.node.shutdown().await?;
        m.server.abort();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_member_catches_up_from_a_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let leader = LogNode::open(LogOptions {
        node_id: 1,
        data_dir: dir.path().join("data"),
        advertise_addr: addr.to_string(),
        heartbeat_ms: 50,
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        snapshot_logs_since_last: 100,
        max_in_snapshot_log_to_keep: 0,
        ..LogOptions::default()
    })
    .await?;
    let service = leader.raft_service();
    let server = tokio::spawn(async move {
        let _ = Server::builder().add_service(service).serve_with_incoming(TcpIncoming::from(listener)).await;
    });
    leader.initialize_single().await?;
    eventually("member 1 to lead", || {
        let raft = leader.raft.clone();
        async move { raft.current_leader().await == Some(1) }
    })
    .await?;
    // Openraft purges in batches of at least `purge_batch_size` (1024)
    // entries, so write enough of them, concurrently.
    // Written one command per entry, straight to raft.
    let writes = (1..=1200).map(|n| {
        let raft = leader.raft.clone();
        async move { raft.client_write(CommandBatch(vec![intent(n)])).await }
    });
    for r in futures::future::join_all(writes).await {
        r.context("client write")?;
    }
    let stats = leader.store.stats();
    assert!(stats.fsyncs > 0 && stats.entries_synced >= 1200, "{stats:?}");
    // Openraft checks the snapshot policy on commit; build one now that
    // covers everything, so its log can be purged past 1024 entries.
    leader.raft.trigger().snapshot().await?;
    eventually("the leader to snapshot and purge its log", || {
        let raft = leader.raft.clone();
        async move {
            let m = raft.metrics().borrow().clone();
            m.snapshot.is_some_and(|s| s.index >= 1200) && m.purged.is_some_and(|p| p.index >= 1024)
        }
    })
    .await?;

    let late = start_member(2).await?;
    leader.raft.add_learner(2, BasicNode::new(late.node.advertise_addr()), true).await.context("add learner")?;
    let (store, want_seq, want_hash) = (late.node.store.clone(), leader.store.last_seq(), leader.store.last_hash());
    eventually("the late member to install the snapshot", || {
        let (store, h) = (store.clone(), want_hash.clone());
        async move { store.last_seq() == want_seq && store.last_hash() == h }
    })
    .await?;
    assert_eq!(store.events(1, None, 0, &Default::default())?.len() as u64, want_seq, "it has the full history");
    assert_eq!(store.view(), leader.store.view());
    assert!(late.node.raft.metrics().borrow().snapshot.is_some(), "it caught up through a snapshot");

    leader.shutdown().await?;
    late.node.shutdown().await?;
    server.abort();
    late.server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarts_with_its_history() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = LogOptions { data_dir: dir.path().join("data"), ..LogOptions::default() };
    let (seq, hash) = {
        let node = LogNode::open(opts.clone()).await?;
        node.initialize_single().await?;
        // Initialising starts an election; writes before it completes are refused.
        eventually("the member to lead", || {
            let raft = node.raft.clone();
            async move { raft.current_leader().await == Some(1) }
        })
        .await?;
        for n in 1..=5 {
            node.propose(intent(n)).await?;
        }
        let r = (node.store.last_seq(), node.store.last_hash());
        node.shutdown().await?;
        r
    };
    // `shutdown` stops raft, but openraft's state-machine worker and the
    // proposer's in-flight tasks drop their handles on the database a moment
    // later, so an in-process reopen waits for RocksDB's lock to be released.
    // (A restarted clawd is a new process and never sees this.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        match LogNode::open(opts.clone()).await {
            Ok(node) => break node,
            Err(e) if e.to_string().contains("lock") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(anyhow::Error::new(e).context("reopen")),
        }
    };
    node.initialize_single().await?;
    assert_eq!((node.store.last_seq(), node.store.last_hash()), (seq, hash));
    eventually("the member to lead again", || {
        let raft = node.raft.clone();
        async move { raft.current_leader().await == Some(1) }
    })
    .await?;
    let (dup, _) = node.propose(intent(3)).await?;
    assert!(dup.duplicate, "dedup survives a restart");
    let (next, _) = node.propose(intent(6)).await?;
    assert_eq!(next.events[0].seq, seq + 1);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_raft_service_rejects_bad_bytes() -> anyhow::Result<()> {
    use claw_proto::raft::raft_server::Raft;
    use claw_proto::raft::RaftPayload;

    let dir = tempfile::tempdir()?;
    let node = LogNode::open(LogOptions { data_dir: dir.path().join("data"), ..LogOptions::default() }).await?;
    let service = claw_log::RaftRpcService::new(node.raft.clone());
    let bad = tonic::Request::new(RaftPayload { data: b"not json".to_vec(), error: Vec::new() });
    let status = service.append_entries(bad).await.expect_err("garbage is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("AppendEntriesRequest"), "{}", status.message());
    node.shutdown().await?;
    Ok(())
}

/// The AppendEntries stream answers each request in turn, in the request's
/// format, and ends with an error naming the request at bytes that are none.
#[tokio::test]
async fn the_append_entries_stream_answers_in_order_and_refuses_bad_bytes() -> anyhow::Result<()> {
    use claw_log::TypeConfig;
    use claw_proto::raft::raft_client::RaftClient;
    use claw_proto::raft::RaftPayload;
    use futures::SinkExt;
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    use openraft::Vote;

    let member = start_member(1).await?;
    let mut client = RaftClient::connect(format!("http://{}", member.addr)).await?;

    let (mut requests, outgoing) = futures::channel::mpsc::channel(4);
    let mut answers = client.append_entries_stream(outgoing).await?.into_inner();
    for (term, expected) in
        [(2, AppendEntriesResponse::Success), (1, AppendEntriesResponse::HigherVote(Vote::new_committed(2, 2)))]
    {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(term, 2),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        requests.send(RaftPayload { data: serde_json::to_vec(&rpc)?, error: Vec::new() }).await?;
        let answer = answers.message().await?.context("an answer per request")?;
        assert!(answer.error.is_empty(), "{answer:?}");
        let resp: AppendEntriesResponse<u64> = serde_json::from_slice(&answer.data).context("a JSON answer")?;
        assert_eq!(resp, expected, "the answer to the request of term {term}");
    }

    requests.send(RaftPayload { data: b"not a request".to_vec(), error: Vec::new() }).await?;
    let status = answers.message().await.expect_err("garbage ends the stream");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("AppendEntriesRequest"), "{}", status.message());
    member.server.abort();
    member.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_raft_entries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = LogNode::open(LogOptions { data_dir: dir.path().join("data"), ..LogOptions::default() }).await?;
    node.initialize_single().await?;
    eventually("the member to lead", || {
        let raft = node.raft.clone();
        async move { raft.current_leader().await == Some(1) }
    })
    .await?;
    let (_, before_index) = node.propose(intent(0)).await?;
    let before_seq = node.store.last_seq();

    const N: u64 = 200;
    let proposals = (1..=N).map(|n| {
        let node = node.clone();
        tokio::spawn(async move { (n, node.propose(intent(n)).await) })
    });
    let mut seqs = Vec::new();
    let mut indexes = BTreeSet::new();
    for joined in futures::future::join_all(proposals).await {
        let (n, result) = joined?;
        let (resp, index) = result.with_context(|| format!("propose {n}"))?;
        assert_eq!(resp.command_id, format!("intent-{n}"), "each caller gets its own response");
        assert!(!resp.duplicate);
        assert_eq!(resp.events.len(), 1);
        assert_eq!(resp.raft_index, index);
        assert!(resp.events.iter().all(|e| e.raft_index == index && e.command_id == resp.command_id));
        seqs.push(resp.events[0].seq);
        indexes.insert(index);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (before_seq + 1..=before_seq + N).collect::<Vec<_>>(), "dense seqs");
    assert_eq!(node.store.last_seq(), before_seq + N);
    let last_index = node.raft.metrics().borrow().last_log_index.unwrap_or(0);
    let used = last_index - before_index;
    assert_eq!(used, indexes.len() as u64, "the entries used are exactly those the callers saw");
    assert!(used < N, "{N} proposals took {used} raft entries: they were not batched");
    eprintln!("{N} concurrent proposals used {used} raft entries; {:?}", node.store.stats());

    // After shutdown, proposals fail promptly instead of hanging.
    tokio::time::timeout(DEADLINE, node.shutdown()).await.context("shutdown in time")??;
    let after = tokio::time::timeout(DEADLINE, node.propose(intent(N + 1))).await.context("refused in time")?;
    assert!(matches!(after, Err(ProposeError::Other(_))), "{after:?}");
    Ok(())
}
