//! A member whose RocksDB files are damaged on disk refuses to start and
//! names the damaged file; an intact member restarts with its history.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use claw_tests::{all_events, intent, Cluster};

const T: Duration = Duration::from_secs(30);

fn table_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<(u64, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "sst") {
            out.push((std::fs::metadata(&p)?.len(), p));
        }
    }
    out.sort();
    Ok(out.into_iter().rev().map(|(_, p)| p).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_table_file_stops_the_start_and_is_named() -> Result<()> {
    let mut c = Cluster::start(1, &[]).await?;
    c.wait_leader(T).await?;
    let mut cl = c.members[0].client().await?;
    for i in 0..200 {
        cl.submit(intent(&format!("{i}: {}", "x".repeat(400)), &format!("cmd-{i}"))).await?;
    }
    let before = all_events(&c.members[0].addr).await?;
    drop(cl);

    // A clean stop flushes the memtables into table files.
    let status = c.member(1).terminate()?;
    ensure!(status.success(), "clawd exited with {status} on SIGTERM:\n{}", c.logs());
    let data_dir = c.members[0].data_dir.clone();
    let tables = table_files(&data_dir)?;
    ensure!(!tables.is_empty(), "no table files in {} after a clean stop", data_dir.display());

    // An intact database restarts with the same history.
    c.member(1).spawn(false)?;
    c.wait_leader(T).await.with_context(|| c.logs())?;
    let after = all_events(&c.members[0].addr).await?;
    ensure!(after[..before.len()] == before[..], "the restarted member lost or changed events");
    let status = c.member(1).terminate()?;
    ensure!(status.success(), "clawd exited with {status}");

    // Flip bytes inside the largest table file (the events).
    let tables = table_files(&data_dir)?;
    let victim = tables.first().context("a table file")?.clone();
    let mut bytes = std::fs::read(&victim)?;
    let mid = bytes.len() / 3;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&victim, &bytes)?;
    let log_len = std::fs::metadata(&c.members[0].log_path)?.len() as usize;

    c.member(1).spawn(false)?;
    let status = c.member(1).wait_exit(T)?;
    ensure!(!status.success(), "clawd started from a corrupted database");
    let log = std::fs::read_to_string(&c.members[0].log_path)?;
    let fresh = &log[log_len..];
    let name = victim.file_name().and_then(|n| n.to_str()).context("file name")?;
    ensure!(fresh.contains("is corrupt") && fresh.contains(name), "the error does not name {name}:\n{fresh}");
    ensure!(!fresh.contains("panicked"), "clawd panicked:\n{fresh}");
    Ok(())
}
