//! Gathers concurrent proposals into one raft entry.
//!
//! Openraft flushes the leader's log once per client write, so each
//! `client_write` costs a synced RocksDB write. The batcher takes the first
//! queued proposal, waits for an in-flight slot (at most
//! [`MAX_IN_FLIGHT`] writes at once, so that batches grow under load instead
//! of becoming many tiny writes), drains whatever else is queued, and
//! proposes it all as one [`CommandBatch`]. Each caller gets its own
//! [`ApplyResponse`] and the raft index of the entry.

use std::sync::Arc;

use claw_commands::CommandEnvelope;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::{ApplyResponse, ClawRaft, CommandBatch};

/// The most envelopes one raft entry carries.
pub(crate) const MAX_BATCH_COMMANDS: usize = 1024;
/// A batch is closed once its envelopes' encoded size (MessagePack, as the
/// raft log stores them) reaches this many bytes (one envelope always fits,
/// whatever its size).
pub(crate) const MAX_BATCH_BYTES: usize = 512 * 1024;
/// The most batches being written at once.
pub(crate) const MAX_IN_FLIGHT: usize = 2;
/// Proposals queued for the batcher; `propose` waits when it is full.
const QUEUE: usize = 8 * MAX_BATCH_COMMANDS;

/// Why a proposal did not commit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This member does not lead; `leader_id` is the leader it knows of.
    #[error("this member is not the leader (leader: {})", leader_name(.leader_id))]
    NotLeader { leader_id: Option<u64> },
    #[error("{0}")]
    Other(String),
}

fn leader_name(leader_id: &Option<u64>) -> String {
    leader_id.map_or_else(|| "unknown".to_string(), |id| format!("member {id}"))
}

type Reply = oneshot::Sender<Result<(ApplyResponse, u64), ProposeError>>;

pub(crate) struct Proposal {
    env: CommandEnvelope,
    bytes: usize,
    reply: Reply,
}

/// The handle `LogNode` keeps: the queue to the batcher and its stop switch.
#[derive(Clone)]
pub(crate) struct Proposer {
    tx: mpsc::Sender<Proposal>,
    stop: Arc<watch::Sender<bool>>,
}

impl Proposer {
    /// Starts the batcher task over `raft`. It ends on [`Proposer::stop`] or
    /// once every handle is dropped.
    pub(crate) fn start(raft: ClawRaft) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(run(raft, rx, stop_rx));
        Proposer { tx, stop: Arc::new(stop) }
    }

    pub(crate) async fn propose(&self, env: CommandEnvelope) -> Result<(ApplyResponse, u64), ProposeError> {
        // Measured here, on the caller's task, so the batcher stays cheap.
        let bytes =
            encoded_len(&env).map_err(|e| ProposeError::Other(format!("the command cannot be encoded: {e}")))?;
        let (reply, rx) = oneshot::channel();
        self.tx.send(Proposal { env, bytes, reply }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Stops the batcher: queued proposals fail, writes in flight finish.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// The size of `env` as the raft log stores it, counted without keeping the bytes.
fn encoded_len(env: &CommandEnvelope) -> Result<usize, rmp_serde::encode::Error> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    rmp_serde::encode::write_named(&mut count, env)?;
    Ok(count.0)
}

fn stopped() -> ProposeError {
    ProposeError::Other("the log is shutting down".to_string())
}

async fn run(raft: ClawRaft, mut rx: mpsc::Receiver<Proposal>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.changed() => break,
            p = rx.recv() => match p {
                Some(p) => p,
                None => break,
            },
        };
        let slot = tokio::select! {
            biased;
            _ = stop.changed() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            write(&raft, batch).await;
            drop(slot);
        });
    }
    // Dropping `rx` fails whatever is still queued.
}

/// Proposes `batch` as one raft entry and answers every caller.
async fn write(raft: &ClawRaft, batch: Vec<Proposal>) {
    let (envs, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.env, p.reply)).unzip();
    match raft.client_write(CommandBatch(envs)).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            let mut responses = resp.data.0.into_iter();
            for reply in replies {
                let r = responses.next().map(|r| (r, index)).ok_or_else(|| {
                    ProposeError::Other(format!("raft entry {index} was applied without a response for this command"))
                });
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            let err = match e.forward_to_leader() {
                Some(f) => ProposeError::NotLeader { leader_id: f.leader_id },
                None => ProposeError::Other(e.to_string()),
            };
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
