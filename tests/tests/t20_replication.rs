//! Three-member clusters of real `clawd` processes: election, replication,
//! SIGKILL of the leader under writes, restart and catch-up from the log and
//! from a snapshot, and a watcher across a leader change.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use claw_commands::{verify_chain, EventRecord, GENESIS_HASH};
use claw_proto::v1;
use claw_tests::{all_events, connect, intent, Cluster};
use futures::StreamExt;

const T: Duration = Duration::from_secs(30);

/// Every member holds the same events, in the same order, with a valid hash chain.
async fn assert_identical_histories(c: &Cluster) -> Result<Vec<EventRecord>> {
    let mut reference: Option<Vec<EventRecord>> = None;
    for m in c.members.iter().filter(|m| m.is_running()) {
        let events = all_events(&m.addr).await?;
        verify_chain(GENESIS_HASH, &events).map_err(|e| anyhow::anyhow!("member {}: {e}", m.id))?;
        for (i, e) in events.iter().enumerate() {
            ensure!(e.seq == i as u64 + 1, "member {}: seq {} at position {i}", m.id, e.seq);
        }
        match &reference {
            None => reference = Some(events),
            Some(r) => ensure!(*r == events, "member {} differs from member 1's history", m.id),
        }
    }
    Ok(reference.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn election_and_replication_through_any_member() -> Result<()> {
    let c = Cluster::start(3, &[]).await?;
    let leader = c.wait_leader(T).await?;
    // Write through a follower: it forwards to the leader.
    let follower = c.members.iter().find(|m| m.id != leader).expect("a follower");
    let mut cl = follower.client().await?;
    for i in 0..20 {
        let r = cl.submit(intent(&format!("intent {i}"), &format!("cmd-{i}"))).await?.into_inner();
        assert_eq!(r.events.len(), 1);
    }
    let last = c.wait_converged(T).await?;
    let events = assert_identical_histories(&c).await?;
    assert_eq!(events.len() as u64, last);
    let status = c.status(leader).await?;
    assert_eq!(status.members.iter().filter(|m| m.role == "voter").count(), 3, "{:?}", status.members);
    // The membership history is in the log too.
    let added = events.iter().filter(|e| e.event.kind() == "MemberAdded").count();
    assert!(added >= 3, "expected MemberAdded events for 3 members, got {added}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_under_writes_loses_no_acknowledged_write() -> Result<()> {
    let mut c = Cluster::start(3, &[]).await?;
    let old_leader = c.wait_leader(T).await?;
    let addrs: Vec<String> = c.members.iter().map(|m| m.addr.clone()).collect();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(6);

    let mut writers = Vec::new();
    for w in 0..8 {
        let addrs = addrs.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop_at {
                let id = format!("w{w}-{n}");
                // Retry the same command id: idempotency makes this exactly-once.
                for attempt in 0..40u64 {
                    let addr = &addrs[(w + attempt as usize) % addrs.len()];
                    let Ok(mut cl) = connect(addr).await else { continue };
                    if cl.submit(intent("load", &id)).await.is_ok() {
                        acked.lock().unwrap().insert(id.clone());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = acked.lock().unwrap().len();
    c.member(old_leader).kill();
    for w in writers {
        w.await?;
    }
    let new_leader = c.wait_leader(T).await?;
    assert_ne!(new_leader, old_leader);
    let total = acked.lock().unwrap().len();
    assert!(total > before_kill, "writes resumed after the leader was killed ({before_kill} before, {total} after)");

    // The old leader comes back from its own disk and catches up.
    c.member(old_leader).spawn(old_leader != 1)?;
    c.wait_converged(T).await.map_err(|e| anyhow::anyhow!("{e}\n{}", c.logs()))?;
    let events = assert_identical_histories(&c).await?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.event.kind() == "IntentStated") {
        *seen.entry(e.command_id.as_str()).or_default() += 1;
    }
    for id in acked.lock().unwrap().iter() {
        assert_eq!(seen.get(id.as_str()).copied(), Some(1), "acknowledged write {id} must be present exactly once");
    }
    assert!(seen.values().all(|n| *n == 1), "no command applied twice");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_that_missed_purged_log_catches_up_by_snapshot() -> Result<()> {
    let env = [("CLAW_RAFT_SNAPSHOT_LOGS_SINCE_LAST", "20"), ("CLAW_RAFT_MAX_IN_SNAPSHOT_LOG_TO_KEEP", "0")];
    let mut c = Cluster::start(3, &env).await?;
    let leader = c.wait_leader(T).await?;
    let lagging = c.members.iter().map(|m| m.id).find(|id| *id != leader).expect("follower");
    c.wait_converged(T).await?;
    let lagging_index = c.status(lagging).await?.last_log_index;
    c.member(lagging).kill();

    let mut cl = c.member(leader).client().await?;
    for i in 0..150 {
        cl.submit(intent("while away", &format!("away-{i}"))).await?;
    }
    let purged = claw_tests::wait_for("the leader to purge its log past the lagging member", T, || async {
        let s = c.status(leader).await.ok()?;
        (s.purged_index > lagging_index).then_some(s.purged_index)
    })
    .await?;
    assert!(purged > lagging_index);

    c.member(lagging).spawn(lagging != 1)?;
    c.wait_converged(T).await.map_err(|e| anyhow::anyhow!("{e}\n{}", c.logs()))?;
    let events = assert_identical_histories(&c).await?;
    // The member answers history queries from the very first event, like the others.
    let from_lagging = all_events(&c.member(lagging).addr.clone()).await?;
    assert_eq!(from_lagging.first().map(|e| e.seq), Some(1));
    assert_eq!(from_lagging.len(), events.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watcher_sees_no_gap_and_no_duplicate_across_a_leader_change() -> Result<()> {
    let mut c = Cluster::start(3, &[]).await?;
    let leader = c.wait_leader(T).await?;
    let others: Vec<String> = c.members.iter().filter(|m| m.id != leader).map(|m| m.addr.clone()).collect();

    // The watcher is connected to the leader, which will be killed.
    let watch_addr = c.member(leader).addr.clone();
    let received: Arc<Mutex<Vec<u64>>> = Arc::default();
    let rx = received.clone();
    let watcher = tokio::spawn(async move {
        let mut addr = watch_addr;
        let mut next = 1u64;
        let mut fallbacks = others.clone().into_iter().cycle();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            let Ok(mut cl) = connect(&addr).await else {
                addr = fallbacks.next().unwrap_or_default();
                continue;
            };
            let req = v1::WatchRequest { from_seq: next, filter: None };
            let Ok(resp) = cl.watch(req).await else {
                addr = fallbacks.next().unwrap_or_default();
                continue;
            };
            let mut stream = resp.into_inner();
            while let Some(item) = stream.next().await {
                let Ok(item) = item else { break };
                let seq = item.event.map(|e| e.seq).unwrap_or(0);
                rx.lock().unwrap().push(seq);
                next = seq + 1;
                if seq >= 1_000_000 {
                    return;
                }
            }
            // The stream broke (member killed): resume elsewhere from the next seq.
            addr = fallbacks.next().unwrap_or_default();
        }
    });

    let mut cl = c.member(leader).client().await?;
    for i in 0..30 {
        cl.submit(intent("before", &format!("b-{i}"))).await?;
    }
    c.member(leader).kill();
    let new_leader = c.wait_leader(T).await?;
    let mut cl = c.member(new_leader).client().await?;
    for i in 0..30 {
        cl.submit(intent("after", &format!("a-{i}"))).await?;
    }
    let last = c.wait_converged(T).await?;
    claw_tests::wait_for("the watcher to reach the last seq", T, || {
        let received = received.clone();
        async move { (received.lock().unwrap().last().copied() == Some(last)).then_some(()) }
    })
    .await?;
    watcher.abort();
    let got = received.lock().unwrap().clone();
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(got, expected, "the watcher saw every seq exactly once, in order");
    Ok(())
}
