//! Fault injection on three `clawd` members in Docker containers on a
//! private network: each scenario runs concurrent clients that record every
//! operation, injects one fault (then, in the last test, a random mix),
//! heals, and checks durability, agreement, linearizability and liveness
//! (`claw_tests::faults::verify`). A failing run prints the folder holding
//! the recorded history and the member logs.
//!
//! The scenarios run one at a time (2 cores cannot host several clusters
//! fairly); all eight take about two minutes. `CLAW_FAULT_SOAK_SECS=600
//! cargo test --workspace --test t70_faults -- --nocapture mixed` soaks the
//! mixed scenario longer; `CLAW_FAULT_SEED` replays a mixed schedule.
//! They need a running Docker engine and root (the small disk is a tmpfs,
//! one-way cuts are host iptables rules).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use claw_tests::docker::{require_docker, DockerCluster};
use claw_tests::faults::{verify, Load, XorShift};

const T: Duration = Duration::from_secs(30);
const CLIENTS: u64 = 6;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The start of every scenario: this test's turn (they run one at a time),
/// three members (`small_disk` as in [`DockerCluster::start`]) and the
/// recording clients, after two seconds of load. Keep the guard alive.
async fn under_load(
    small_disk: Option<(u64, u64)>,
) -> Result<(tokio::sync::MutexGuard<'static, ()>, DockerCluster, Load)> {
    let serial = SERIAL.lock().await;
    require_docker()?;
    let c = DockerCluster::start(3, small_disk).await?;
    let load = Load::start(&c, CLIENTS);
    sleep_ms(2_000).await;
    Ok((serial, c, load))
}

fn follower_of(c: &DockerCluster, leader: u64) -> u64 {
    c.members.iter().map(|m| m.id).find(|id| *id != leader).unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_cut_off_then_healed() -> Result<()> {
    let (_serial, c, load) = under_load(None).await?;
    let leader = c.wait_leader(T).await?;
    c.disconnect(leader)?;
    load.refresh(&c);
    let new = c.wait_new_leader(leader, T).await.context("the majority elects a new leader")?;
    ensure!(new != leader);
    sleep_ms(3_000).await;
    c.connect(leader)?;
    load.refresh(&c);
    sleep_ms(3_000).await;
    println!("leader cut off: {}", verify("leader-cut-off", &c, load).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_cut_off_then_healed() -> Result<()> {
    let (_serial, c, load) = under_load(None).await?;
    let leader = c.wait_leader(T).await?;
    let follower = follower_of(&c, leader);
    c.disconnect(follower)?;
    load.refresh(&c);
    sleep_ms(4_000).await;
    c.connect(follower)?;
    load.refresh(&c);
    sleep_ms(3_000).await;
    println!("minority cut off: {}", verify("follower-cut-off", &c, load).await?);
    Ok(())
}

/// The leader's packets to the other members are dropped while theirs still
/// reach it: it can hear the new leader but cannot answer or be heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_cut_off_one_way_then_healed() -> Result<()> {
    let (_serial, c, load) = under_load(None).await?;
    let leader = c.wait_leader(T).await?;
    c.cut_outbound(leader)?;
    let new = c.wait_new_leader(leader, T).await.context("the members the leader cannot reach elect a new one")?;
    ensure!(new != leader);
    sleep_ms(3_000).await;
    c.heal_outbound(leader)?;
    sleep_ms(3_000).await;
    println!("leader cut off one way: {}", verify("leader-cut-one-way", &c, load).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_then_follower_killed_under_load() -> Result<()> {
    let (_serial, c, load) = under_load(None).await?;
    let leader = c.wait_leader(T).await?;
    c.kill(leader)?;
    load.refresh(&c);
    let new = c.wait_new_leader(leader, T).await?;
    sleep_ms(2_000).await;
    c.restart(leader)?;
    load.refresh(&c);
    sleep_ms(2_000).await;
    let follower = follower_of(&c, new);
    c.kill(follower)?;
    load.refresh(&c);
    sleep_ms(2_000).await;
    c.restart(follower)?;
    load.refresh(&c);
    sleep_ms(3_000).await;
    println!("SIGKILL leader, then follower: {}", verify("kill-leader-follower", &c, load).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_members_killed_and_restarted_together() -> Result<()> {
    let (_serial, c, load) = under_load(None).await?;
    sleep_ms(1_000).await;
    for m in &c.members {
        c.kill(m.id)?;
    }
    load.refresh(&c);
    sleep_ms(1_000).await;
    for m in &c.members {
        c.restart(m.id)?;
    }
    load.refresh(&c);
    c.wait_leader(T).await.context("a leader after restarting every member")?;
    sleep_ms(3_000).await;
    println!("all killed and restarted: {}", verify("kill-all", &c, load).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_leader_loses_leadership_then_resumes() -> Result<()> {
    let (_serial, c, load) = under_load(None).await?;
    let leader = c.wait_leader(T).await?;
    c.pause(leader)?;
    let new = c.wait_new_leader(leader, T).await.context("the others elect a leader while it is paused")?;
    sleep_ms(2_000).await;
    c.resume(leader)?;
    // The old leader, resumed, learns of the new term and follows.
    claw_tests::wait_for("the resumed member to follow", T, || async {
        let s = c.status(leader).await.ok()?;
        (s.leader_id != 0 && s.leader_id != leader).then_some(())
    })
    .await?;
    sleep_ms(3_000).await;
    println!("paused leader (was {leader}, then {new}): {}", verify("pause-leader", &c, load).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_members_disk_fills_then_is_freed() -> Result<()> {
    // Member 3's data directory is a 96 MiB tmpfs.
    let (_serial, c, load) = under_load(Some((3, 96))).await?;
    c.fill_disk(3)?;
    sleep_ms(4_000).await;
    let survived = c.running(3)?;
    // Restarted on a full disk it must refuse cleanly or carry on; either way nothing is lost.
    if survived {
        c.kill(3)?;
    }
    let restarted = c.restart(3).is_ok();
    sleep_ms(2_000).await;
    let ran_full = restarted && c.running(3)?;
    c.free_disk(3)?;
    if !c.running(3)? {
        c.restart(3)?;
    }
    load.refresh(&c);
    sleep_ms(3_000).await;
    let summary = verify("disk-full", &c, load).await?;
    println!("disk full (member 3 running after filling: {survived}, restarted on a full disk: {ran_full}): {summary}");
    Ok(())
}

/// A random mix of cuts (both ways or one way), kills and pauses of the
/// leader or any member, one after another, for `CLAW_FAULT_SOAK_SECS`
/// (default 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_faults() -> Result<()> {
    let _serial = SERIAL.lock().await;
    require_docker()?;
    let secs: u64 = std::env::var("CLAW_FAULT_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("CLAW_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
    });
    println!("mixed faults: CLAW_FAULT_SEED={seed}, {secs} s");
    let mut rng = XorShift(seed | 1);
    let mut next = move || rng.next_u64();
    let c = DockerCluster::start(3, None).await?;
    let load = Load::start(&c, CLIENTS);
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut done = Vec::new();
    while std::time::Instant::now() < deadline {
        let victim = match next() % 2 {
            0 => c.wait_leader(T).await?,
            _ => 1 + next() % 3,
        };
        let hold = 1_000 + next() % 2_000;
        let fault = next() % 4;
        match fault {
            0 => c.disconnect(victim)?,
            1 => c.kill(victim)?,
            2 => c.pause(victim)?,
            _ => c.cut_outbound(victim)?,
        }
        load.refresh(&c);
        sleep_ms(hold).await;
        match fault {
            0 => c.connect(victim)?,
            1 => c.restart(victim)?,
            2 => c.resume(victim)?,
            _ => c.heal_outbound(victim)?,
        }
        load.refresh(&c);
        done.push(format!("{}:{victim}", ["cut", "kill", "pause", "oneway"][fault as usize]));
        sleep_ms(1_000 + next() % 1_000).await;
    }
    println!("mixed faults [{}]: {}", done.join(" "), verify("mixed", &c, load).await?);
    Ok(())
}
