use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result, SchedulerOptions};

/// Raft timing and snapshot settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftOptions {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one, or
    /// eight per row of the cluster view when that is more (a snapshot
    /// copies the whole state).
    pub snapshot_logs_since_last: u64,
    /// Log entries kept after a snapshot, so slightly lagging members catch up from the log.
    pub max_in_snapshot_log_to_keep: u64,
    /// How long a leader waits for a member to take a snapshot's last piece,
    /// installing it included (minutes on a long history).
    pub install_snapshot_timeout_ms: u64,
}

impl Default for RaftOptions {
    fn default() -> Self {
        RaftOptions {
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_logs_since_last: 20_000,
            max_in_snapshot_log_to_keep: 1_000,
            install_snapshot_timeout_ms: 600_000,
        }
    }
}

/// Time travel and analytics settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryOptions {
    /// A checkpoint of the projections' changed rows is stored every this
    /// many events: a past state costs one checkpoint load plus about
    /// this many events of replay. Smaller reads faster and writes more.
    pub checkpoint_every: u64,
    /// A checkpoint of the whole state is stored every this many events: a
    /// restart loads the newest and replays about this many events.
    pub full_checkpoint_every: u64,
    /// Keep columnar copies of the whole workload table ("bases") beside
    /// the row checkpoints, a new one each time enough rows changed, so
    /// `workloads_at(x)` reads a base plus the rows changed since instead
    /// of every row. Off: no bases are written or read (those on disk stay
    /// until a snapshot install removes the row checkpoints).
    pub workload_bases: bool,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        HistoryOptions { checkpoint_every: 1_000, full_checkpoint_every: 20_000, workload_bases: true }
    }
}

/// The member's RocksDB database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageOptions {
    /// Read every table file and check its block checksums at start-up, so a
    /// damaged file stops the start with its name instead of failing a read
    /// later. Costs one sequential read of the database per start.
    pub verify_checksums_on_start: bool,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions { verify_checksums_on_start: true }
    }
}

/// GPU metric rollups: raw samples stay in the log; per-GPU 1-minute and
/// 1-hour summaries (min/avg/max/p95) are kept for these many hours/days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsOptions {
    /// How often closed buckets are rolled up and old rollups expired.
    pub rollup_interval_ms: u64,
    /// Keep 1-minute rollups this many hours (`metrics_1m`).
    pub retention_1m_hours: u64,
    /// Keep 1-hour rollups this many days (`metrics_1h`).
    pub retention_1h_days: u64,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions { rollup_interval_ms: 30_000, retention_1m_hours: 7 * 24, retention_1h_days: 400 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogFormatOptions {
    /// `tracing` env-filter directive, e.g. `info` or `claw_log=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogFormatOptions {
    fn default() -> Self {
        LogFormatOptions { level: "info".into(), format: "text".into() }
    }
}

/// Everything `clawd` can be told. Layered: defaults → TOML file → `CLAW_`
/// environment variables → command-line flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// This member's id in the Raft group; unique and never reused.
    pub id: u64,
    /// Address the gRPC server (API and Raft RPC) binds.
    pub listen: String,
    /// Address other members and forwarded clients use to reach this member.
    /// Defaults to `listen`.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Start without initialising a cluster and wait to be added with
    /// `clawctl member add`. Without it, a member with empty data initialises
    /// a single-member cluster of itself.
    pub join: bool,
    pub log: LogFormatOptions,
    pub raft: RaftOptions,
    pub scheduler: SchedulerOptions,
    pub history: HistoryOptions,
    pub metrics: MetricsOptions,
    pub storage: StorageOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            id: 1,
            listen: "127.0.0.1:7400".into(),
            advertise: None,
            data_dir: PathBuf::from("clawd-data"),
            join: false,
            log: LogFormatOptions::default(),
            raft: RaftOptions::default(),
            scheduler: SchedulerOptions::default(),
            history: HistoryOptions::default(),
            metrics: MetricsOptions::default(),
            storage: StorageOptions::default(),
        }
    }
}

/// Command-line flags; each one, when given, overrides the layers below it.
#[derive(Debug, Default, Clone, clap::Parser)]
#[command(name = "clawd", version, about = "Clawbernetes control-plane member: Raft + RocksDB event log and gRPC API")]
pub struct Flags {
    /// TOML configuration file (see config/clawd.example.toml).
    #[arg(long, short = 'c', env = "CLAW_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub id: Option<u64>,
    #[arg(long)]
    pub listen: Option<String>,
    #[arg(long)]
    pub advertise: Option<String>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Wait to be added to an existing cluster instead of initialising one.
    #[arg(long)]
    pub join: bool,
    #[arg(long)]
    pub log_level: Option<String>,
    #[arg(long)]
    pub log_format: Option<String>,
}

fn env_parse<T: std::str::FromStr>(env: &dyn Fn(&str) -> Option<String>, key: &str, into: &mut T) -> Result<()>
where
    T::Err: std::fmt::Display,
{
    if let Some(v) = env(key) {
        *into = v.parse().map_err(|e: T::Err| Error::Config(format!("environment variable {key}={v:?}: {e}")))?;
    }
    Ok(())
}

impl Options {
    /// Loads the layered configuration. `env` is the environment lookup
    /// (`std::env::var` in `clawd`), injectable for tests.
    pub fn load(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Options> {
        let mut o = match &flags.config {
            Some(path) => Self::from_file(path)?,
            None => Options::default(),
        };
        env_parse(env, "CLAW_ID", &mut o.id)?;
        env_parse(env, "CLAW_LISTEN", &mut o.listen)?;
        if let Some(v) = env("CLAW_ADVERTISE") {
            o.advertise = Some(v);
        }
        env_parse(env, "CLAW_DATA_DIR", &mut o.data_dir)?;
        env_parse(env, "CLAW_JOIN", &mut o.join)?;
        env_parse(env, "CLAW_LOG_LEVEL", &mut o.log.level)?;
        env_parse(env, "CLAW_LOG_FORMAT", &mut o.log.format)?;
        env_parse(env, "CLAW_RAFT_HEARTBEAT_MS", &mut o.raft.heartbeat_ms)?;
        env_parse(env, "CLAW_RAFT_ELECTION_TIMEOUT_MIN_MS", &mut o.raft.election_timeout_min_ms)?;
        env_parse(env, "CLAW_RAFT_ELECTION_TIMEOUT_MAX_MS", &mut o.raft.election_timeout_max_ms)?;
        env_parse(env, "CLAW_RAFT_SNAPSHOT_LOGS_SINCE_LAST", &mut o.raft.snapshot_logs_since_last)?;
        env_parse(env, "CLAW_RAFT_MAX_IN_SNAPSHOT_LOG_TO_KEEP", &mut o.raft.max_in_snapshot_log_to_keep)?;
        env_parse(env, "CLAW_RAFT_INSTALL_SNAPSHOT_TIMEOUT_MS", &mut o.raft.install_snapshot_timeout_ms)?;
        env_parse(env, "CLAW_SCHEDULER_STRATEGY", &mut o.scheduler.strategy)?;
        env_parse(env, "CLAW_SCHEDULER_NODE_TIMEOUT_MS", &mut o.scheduler.node_timeout_ms)?;
        env_parse(env, "CLAW_SCHEDULER_INTERVAL_MS", &mut o.scheduler.interval_ms)?;
        env_parse(env, "CLAW_HISTORY_CHECKPOINT_EVERY", &mut o.history.checkpoint_every)?;
        env_parse(env, "CLAW_HISTORY_FULL_CHECKPOINT_EVERY", &mut o.history.full_checkpoint_every)?;
        env_parse(env, "CLAW_HISTORY_WORKLOAD_BASES", &mut o.history.workload_bases)?;
        env_parse(env, "CLAW_METRICS_ROLLUP_INTERVAL_MS", &mut o.metrics.rollup_interval_ms)?;
        env_parse(env, "CLAW_METRICS_RETENTION_1M_HOURS", &mut o.metrics.retention_1m_hours)?;
        env_parse(env, "CLAW_METRICS_RETENTION_1H_DAYS", &mut o.metrics.retention_1h_days)?;
        env_parse(env, "CLAW_STORAGE_VERIFY_CHECKSUMS_ON_START", &mut o.storage.verify_checksums_on_start)?;

        if let Some(v) = flags.id {
            o.id = v;
        }
        if let Some(v) = &flags.listen {
            o.listen = v.clone();
        }
        if let Some(v) = &flags.advertise {
            o.advertise = Some(v.clone());
        }
        if let Some(v) = &flags.data_dir {
            o.data_dir = v.clone();
        }
        if flags.join {
            o.join = true;
        }
        if let Some(v) = &flags.log_level {
            o.log.level = v.clone();
        }
        if let Some(v) = &flags.log_format {
            o.log.format = v.clone();
        }
        o.validate()?;
        Ok(o)
    }

    pub fn from_file(path: &Path) -> Result<Options> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))
    }

    pub fn advertise_addr(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    pub fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(Error::Config("id: must be at least 1".into()));
        }
        self.listen.parse::<std::net::SocketAddr>().map_err(|e| {
            Error::Config(format!("listen: {:?} is not an address like 127.0.0.1:7400: {e}", self.listen))
        })?;
        let adv = self.advertise_addr();
        if !adv.contains(':') || adv.starts_with(':') {
            return Err(Error::Config(format!("advertise: {adv:?} must be host:port")));
        }
        if self.history.checkpoint_every == 0 {
            return Err(Error::Config("history.checkpoint_every: must be at least 1".into()));
        }
        if self.history.full_checkpoint_every == 0 {
            return Err(Error::Config("history.full_checkpoint_every: must be at least 1".into()));
        }
        let m = &self.metrics;
        if m.rollup_interval_ms == 0 || m.retention_1m_hours == 0 || m.retention_1h_days == 0 {
            return Err(Error::Config(format!(
                "metrics: rollup_interval_ms ({}), retention_1m_hours ({}) and retention_1h_days ({}) must be at least 1",
                m.rollup_interval_ms, m.retention_1m_hours, m.retention_1h_days
            )));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(Error::Config(format!("log.format: {:?} must be \"text\" or \"json\"", self.log.format)));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0
            || r.election_timeout_min_ms <= r.heartbeat_ms
            || r.election_timeout_max_ms <= r.election_timeout_min_ms
        {
            return Err(Error::Config(format!(
                "raft: need 0 < heartbeat_ms ({}) < election_timeout_min_ms ({}) < election_timeout_max_ms ({})",
                r.heartbeat_ms, r.election_timeout_min_ms, r.election_timeout_max_ms
            )));
        }
        if r.snapshot_logs_since_last == 0 {
            return Err(Error::Config("raft.snapshot_logs_since_last: must be at least 1".into()));
        }
        if r.install_snapshot_timeout_ms == 0 {
            return Err(Error::Config("raft.install_snapshot_timeout_ms: must be at least 1".into()));
        }
        let s = &self.scheduler;
        if s.interval_ms == 0 || s.node_timeout_ms == 0 {
            return Err(Error::Config(format!(
                "scheduler: interval_ms ({}) and node_timeout_ms ({}) must be at least 1",
                s.interval_ms, s.node_timeout_ms
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clawd.toml");
        std::fs::write(&file, "id = 2\nlisten = \"127.0.0.1:7500\"\n[raft]\nheartbeat_ms = 50\n").unwrap();
        let flags = Flags { config: Some(file), listen: Some("127.0.0.1:7600".into()), ..Default::default() };
        let o = Options::load(&flags, &env_of(&[("CLAW_ID", "3"), ("CLAW_LISTEN", "127.0.0.1:7550")])).unwrap();
        assert_eq!(o.id, 3, "env beats file");
        assert_eq!(o.listen, "127.0.0.1:7600", "flag beats env");
        assert_eq!(o.raft.heartbeat_ms, 50, "file beats default");
        assert_eq!(o.raft.election_timeout_min_ms, 300, "default kept");
    }

    #[test]
    fn scheduler_section_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clawd.toml");
        std::fs::write(&file, "[scheduler]\nstrategy = \"spread\"\nnode_timeout_ms = 5000\n").unwrap();
        let flags = Flags { config: Some(file.clone()), ..Default::default() };
        let o = Options::load(&flags, &env_of(&[("CLAW_SCHEDULER_INTERVAL_MS", "50")])).unwrap();
        assert_eq!(o.scheduler.strategy, claw_commands::Strategy::Spread);
        assert_eq!((o.scheduler.node_timeout_ms, o.scheduler.interval_ms), (5000, 50));
        let err = Options::load(&flags, &env_of(&[("CLAW_SCHEDULER_STRATEGY", "random")])).unwrap_err();
        assert!(err.to_string().contains("CLAW_SCHEDULER_STRATEGY") && err.to_string().contains("binpack"), "{err}");
        std::fs::write(&file, "[scheduler]\nstrategy = \"best\"\n").unwrap();
        let err = Options::load(&flags, &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("best"), "{err}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = Options::load(&Flags::default(), &env_of(&[("CLAW_ID", "abc")])).unwrap_err();
        assert!(err.to_string().contains("CLAW_ID"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "idd = 2\n").unwrap();
        let err = Options::load(&Flags { config: Some(file), ..Default::default() }, &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("idd"), "{err}");
        let err =
            Options::load(&Flags { listen: Some("nope".into()), ..Default::default() }, &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let env = env_of(&[("CLAW_RAFT_INSTALL_SNAPSHOT_TIMEOUT_MS", "0")]);
        let err = Options::load(&Flags::default(), &env).and_then(|o| o.validate()).unwrap_err();
        assert!(err.to_string().contains("raft.install_snapshot_timeout_ms"), "{err}");
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/clawd.example.toml");
        let o = Options::from_file(&path).unwrap();
        o.validate().unwrap();
        assert_eq!(o, Options::default(), "the example documents the defaults");
    }
}
