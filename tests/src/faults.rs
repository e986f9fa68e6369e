//! Clients that drive a cluster while faults are injected, recording every
//! operation (invoke, then ok / unknown) for the linearizability checker,
//! and the checks every fault scenario ends with: liveness after healing,
//! agreement of the members, durability of acknowledged writes, and
//! linearizability of the recorded history (reads included).
//!
//! The object under test is the log of intents: an append is a `Submit` of
//! an intent carrying a unique id; a read is a linearizable `ListEvents` of
//! every `IntentStated` event, in log order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use claw_commands::{verify_chain, Event, GENESIS_HASH};
use claw_proto::v1::{self, claw_client::ClawClient};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::docker::DockerCluster;
use crate::linearizability::{check, AppendLog, LogInput, LogOutput, Operation, Verdict};
use crate::{all_events, connect, intent, wait_for};

/// How long one client operation may take before its outcome is unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

type Op = Operation<LogInput, LogOutput>;

/// What the clients did, in the order they finished.
#[derive(Default)]
pub struct History {
    ops: Mutex<Vec<Op>>,
    acked: Mutex<BTreeSet<u64>>,
}

impl History {
    fn push(&self, op: Op) {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner).push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn acked(&self) -> BTreeSet<u64> {
        self.acked.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Concurrent clients appending and reading through whichever members the
/// host reaches, until stopped.
pub struct Load {
    pub history: Arc<History>,
    pub start: Instant,
    addrs: Arc<RwLock<Vec<String>>>,
    stop: watch::Sender<bool>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(c: &DockerCluster, clients: u64) -> Load {
        let history = Arc::new(History::default());
        let addrs = Arc::new(RwLock::new(Vec::new()));
        let (stop, stopped) = watch::channel(false);
        let start = Instant::now();
        let mut load = Load { history, start, addrs, stop, clients: Vec::new() };
        load.refresh(c);
        for client in 1..=clients {
            let (history, addrs, stopped) = (load.history.clone(), load.addrs.clone(), stopped.clone());
            load.clients.push(tokio::spawn(run_client(client, start, history, addrs, stopped)));
        }
        load
    }

    /// Re-reads the members' addresses (after a cut, a heal or a restart).
    pub fn refresh(&self, c: &DockerCluster) {
        let now: Vec<String> = c.reachable_addrs().into_iter().map(|(_, a)| a).collect();
        *self.addrs.write().unwrap_or_else(PoisonError::into_inner) = now;
    }

    pub async fn stop(self) -> Arc<History> {
        let _ = self.stop.send(true);
        for c in self.clients {
            let _ = c.await;
        }
        self.history
    }
}

/// A small deterministic generator (xorshift64); seed it non-zero.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

async fn run_client(
    client: u64,
    start: Instant,
    history: Arc<History>,
    addrs: Arc<RwLock<Vec<String>>>,
    stopped: watch::Receiver<bool>,
) {
    // The schedule differs per client, not per run.
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ client.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut conns: HashMap<String, ClawClient<Channel>> = HashMap::new();
    let mut n = 0u64;
    while !*stopped.borrow() {
        let targets = addrs.read().unwrap_or_else(PoisonError::into_inner).clone();
        if targets.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let addr = targets[(rng.next_u64() % targets.len() as u64) as usize].clone();
        n += 1;
        let append = !rng.next_u64().is_multiple_of(4);
        let invoke = nanos_since(start);
        if append {
            let id = client * 1_000_000 + n;
            let r = tokio::time::timeout(OP_TIMEOUT, submit(&mut conns, &addr, id)).await;
            let completion = match r {
                Ok(Ok(())) => {
                    history.acked.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
                    Some((nanos_since(start), LogOutput::Appended))
                }
                // Timed out, refused, connection lost: it may or may not have happened.
                _ => {
                    conns.remove(&addr);
                    None
                }
            };
            history.push(Operation { client, input: LogInput::Append(id), invoke, completion });
        } else {
            match tokio::time::timeout(OP_TIMEOUT, read_ids(&mut conns, &addr)).await {
                Ok(Ok(ids)) => history.push(Operation {
                    client,
                    input: LogInput::Read,
                    invoke,
                    completion: Some((nanos_since(start), LogOutput::Read(ids))),
                }),
                // A failed read changed nothing: it is left out of the history.
                _ => {
                    conns.remove(&addr);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5 + rng.next_u64() % 20)).await;
    }
}

async fn client_for<'a>(
    conns: &'a mut HashMap<String, ClawClient<Channel>>,
    addr: &str,
) -> Result<&'a mut ClawClient<Channel>> {
    if !conns.contains_key(addr) {
        conns.insert(addr.to_string(), connect(addr).await?);
    }
    conns.get_mut(addr).context("connection")
}

async fn submit(conns: &mut HashMap<String, ClawClient<Channel>>, addr: &str, id: u64) -> Result<()> {
    let cl = client_for(conns, addr).await?;
    cl.submit(intent(&format!("lin {id}"), &format!("lin-{id}"))).await?;
    Ok(())
}

async fn read_ids(conns: &mut HashMap<String, ClawClient<Channel>>, addr: &str) -> Result<Vec<u64>> {
    let cl = client_for(conns, addr).await?;
    read_intents(cl).await
}

/// Every intent id in log order, read as of one linearizable point: the
/// first page is a linearizable read, and the rest (if any) is read up to
/// the last seq that page reported (events never change once stored).
pub async fn read_intents(cl: &mut ClawClient<Channel>) -> Result<Vec<u64>> {
    const LIMIT: u32 = 10_000;
    let filter =
        || Some(v1::EventFilter { kinds: vec!["IntentStated".into()], node: String::new(), workload: String::new() });
    let first = cl
        .list_events(v1::ListEventsRequest {
            from_seq: 1,
            to_seq: 0,
            limit: LIMIT,
            filter: filter(),
            consistency: v1::Consistency::Linearizable as i32,
        })
        .await?
        .into_inner();
    let upto = first.last_seq;
    let mut page = first.events;
    let mut ids = Vec::new();
    loop {
        let full = page.len() == LIMIT as usize;
        let mut last = 0;
        for e in &page {
            let rec = claw_proto::event_from_pb(e)?;
            last = rec.seq;
            if let Event::IntentStated { text } = &rec.event {
                if let Some(id) = text.strip_prefix("lin ").and_then(|t| t.parse().ok()) {
                    ids.push(id);
                }
            }
        }
        if !full || last >= upto {
            return Ok(ids);
        }
        page = cl
            .list_events(v1::ListEventsRequest {
                from_seq: last + 1,
                to_seq: upto,
                limit: LIMIT,
                filter: filter(),
                consistency: v1::Consistency::Stale as i32,
            })
            .await?
            .into_inner()
            .events;
    }
}

/// Liveness: how long until a write succeeds through some member.
pub async fn time_to_write(c: &DockerCluster, bound: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut n = 0u64;
    wait_for("the healed cluster to accept a write", bound, || {
        n += 1;
        let addrs = c.reachable_addrs();
        let id = format!("liveness-{}-{n}", std::process::id());
        async move {
            for (_, addr) in addrs {
                let Ok(Ok(mut cl)) = tokio::time::timeout(Duration::from_secs(1), connect(&addr)).await else {
                    continue;
                };
                let call = cl.submit(intent("liveness probe", &id));
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), call).await {
                    return Some(());
                }
            }
            None
        }
    })
    .await?;
    Ok(started.elapsed())
}

/// The checks after a healed scenario. On failure the history and member
/// logs are kept in a folder whose path the error names.
pub async fn verify(name: &str, c: &DockerCluster, load: Load) -> Result<String> {
    let result = verify_inner(c, load).await;
    match result {
        Ok((summary, _)) => Ok(summary),
        Err((e, history)) => {
            let dir = artifacts_dir(name);
            let saved = save_artifacts(&dir, c, &history);
            match saved {
                Ok(()) => bail!("{e:#}\nthe recorded history and member logs are in {}", dir.display()),
                Err(se) => bail!("{e:#}\n(saving the history to {} failed too: {se})", dir.display()),
            }
        }
    }
}

type Failure = (anyhow::Error, Vec<Op>);

async fn verify_inner(c: &DockerCluster, load: Load) -> std::result::Result<(String, Vec<Op>), Failure> {
    let start = load.start;
    let history = load.stop().await;
    let mut ops = history.ops();
    let acked = history.acked();
    let fail = |e: anyhow::Error, ops: &Vec<Op>| (e, ops.clone());

    // Liveness, then every member caught up to the same last seq.
    let took = time_to_write(c, Duration::from_secs(30)).await.map_err(|e| fail(e, &ops))?;
    let last = wait_for("every member to hold the same last seq", Duration::from_secs(60), || async {
        let mut seqs = Vec::new();
        for m in &c.members {
            seqs.push(c.status(m.id).await.ok()?.last_seq);
        }
        let first = *seqs.first()?;
        seqs.iter().all(|s| *s == first).then_some(first)
    })
    .await
    .map_err(|e| fail(e, &ops))?;

    // Agreement: the same events, order and hash chain, and the same projections.
    let mut reference = None;
    let mut reference_view: Option<serde_json::Value> = None;
    for m in &c.members {
        let addr = c.addr(m.id).map_err(|e| fail(e, &ops))?;
        let events = all_events(&addr).await.map_err(|e| fail(e, &ops))?;
        verify_chain(GENESIS_HASH, &events)
            .map_err(|e| fail(anyhow::anyhow!("member {}: broken hash chain: {e}", m.id), &ops))?;
        match &reference {
            None => reference = Some(events),
            Some(r) if *r == events => {}
            Some(r) => {
                let at = r.iter().zip(&events).position(|(a, b)| a != b).unwrap_or(r.len().min(events.len()));
                return Err(fail(
                    anyhow::anyhow!(
                        "member {} disagrees with member 1 from position {at} ({} vs {} events)",
                        m.id,
                        events.len(),
                        r.len()
                    ),
                    &ops,
                ));
            }
        }
        let mut cl = connect(&addr).await.map_err(|e| fail(e, &ops))?;
        let state = cl
            .get_state(v1::GetStateRequest {
                at: None,
                consistency: v1::Consistency::Stale as i32,
                detail: v1::StateDetail::Full as i32,
            })
            .await
            .map_err(|e| fail(e.into(), &ops))?
            .into_inner();
        let view: serde_json::Value = serde_json::from_str(&state.view_json).map_err(|e| fail(e.into(), &ops))?;
        match &reference_view {
            None => reference_view = Some(view),
            Some(v) if *v == view => {}
            Some(_) => return Err(fail(anyhow::anyhow!("member {}'s projections differ from member 1's", m.id), &ops)),
        }
    }

    // The final state, as one more read after everything else.
    let invoke = nanos_since(start);
    let mut cl = connect(&c.addr(1).map_err(|e| fail(e, &ops))?).await.map_err(|e| fail(e, &ops))?;
    let final_ids = read_intents(&mut cl).await.map_err(|e| fail(e, &ops))?;
    ops.push(Operation {
        client: 0,
        input: LogInput::Read,
        invoke,
        completion: Some((nanos_since(start), LogOutput::Read(final_ids.clone()))),
    });

    // Durability: every acknowledged append is there exactly once; nothing twice.
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for id in &final_ids {
        *counts.entry(*id).or_default() += 1;
    }
    if let Some((id, n)) = counts.iter().find(|(_, n)| **n > 1) {
        return Err(fail(anyhow::anyhow!("intent {id} is in the log {n} times"), &ops));
    }
    let lost: Vec<u64> = acked.iter().filter(|id| !counts.contains_key(id)).copied().collect();
    if !lost.is_empty() {
        return Err(fail(
            anyhow::anyhow!("{} acknowledged appends are missing: {:?}", lost.len(), &lost[..lost.len().min(20)]),
            &ops,
        ));
    }

    // Linearizability of everything the clients saw.
    let verdict = check(&AppendLog, &ops, Duration::from_secs(120));
    if !matches!(verdict, Verdict::Linearizable) {
        return Err(fail(anyhow::anyhow!("the history is not linearizable: {verdict}"), &ops));
    }
    let reads = ops.iter().filter(|o| matches!(o.input, LogInput::Read)).count();
    let unknown = ops.iter().filter(|o| o.completion.is_none()).count();
    let mut summary = String::new();
    let _ = write!(
        summary,
        "{} ops ({} appends acknowledged, {unknown} unknown, {reads} reads), {} events on every member, linearizable; \
         first write after healing in {:.1} s",
        ops.len(),
        acked.len(),
        last,
        took.as_secs_f64()
    );
    Ok((summary, ops))
}

fn artifacts_dir(name: &str) -> PathBuf {
    let base = match std::env::var_os("CLAW_FAULT_ARTIFACTS") {
        Some(p) => PathBuf::from(p),
        None => crate::bin_dir().join("fault-runs"),
    };
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    base.join(format!("{name}-{stamp}"))
}

fn save_artifacts(dir: &std::path::Path, c: &DockerCluster, ops: &[Op]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut text = String::new();
    for op in ops {
        let _ = writeln!(text, "{op:?}");
    }
    std::fs::write(dir.join("history.txt"), text)?;
    c.save_logs(dir)?;
    ensure!(dir.join("history.txt").exists(), "history not written");
    Ok(())
}
