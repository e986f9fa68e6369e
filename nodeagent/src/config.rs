use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How workloads are run on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// Docker containers through the local engine socket (bollard).
    Docker,
    /// Local child processes, for machines without Docker (like Nomad's
    /// `raw_exec`): no isolation, the image is ignored, and a restarted agent
    /// cannot re-attach to them.
    Exec,
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "docker" => Ok(RuntimeKind::Docker),
            "exec" => Ok(RuntimeKind::Exec),
            other => Err(format!("{other:?} is not a runtime (expected \"docker\" or \"exec\")")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogOptions {
    /// `tracing` env-filter directive, e.g. `info` or `claw_nodeagent=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { level: "info".into(), format: "text".into() }
    }
}

/// Everything `clawnode` can be told. Layered: defaults → TOML file →
/// `CLAW_NODE_` environment variables → command-line flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Control-plane members (`host:port`); any member will do, the agent
    /// moves to the next one when one stops answering.
    pub control_plane: Vec<String>,
    /// This node's name; defaults to the host name.
    pub name: String,
    pub runtime: RuntimeKind,
    /// Where the agent keeps its state (the last handled seq) and, for the
    /// exec runtime, its process records.
    pub data_dir: PathBuf,
    #[serde(with = "duration_text")]
    pub heartbeat_interval: Duration,
    #[serde(with = "duration_text")]
    pub metrics_interval: Duration,
    /// How long a cancelled workload gets between SIGTERM and SIGKILL.
    #[serde(with = "duration_text")]
    pub stop_grace: Duration,
    /// Extra labels this node registers with (matched by workload node selectors).
    pub labels: BTreeMap<String, String>,
    pub log: LogOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            control_plane: vec!["127.0.0.1:7400".into()],
            name: default_node_name(),
            runtime: RuntimeKind::Docker,
            data_dir: PathBuf::from("clawnode-data"),
            heartbeat_interval: Duration::from_secs(5),
            metrics_interval: Duration::from_secs(10),
            stop_grace: Duration::from_secs(10),
            labels: BTreeMap::new(),
            log: LogOptions::default(),
        }
    }
}

/// The host name, lower-cased, as a default node name.
fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// Command-line flags; each one, when given, overrides the layers below it.
#[derive(Debug, Default, Clone, clap::Parser)]
#[command(name = "clawnode", version, about = "Clawbernetes node agent: registers GPUs, runs placed workloads")]
pub struct Flags {
    /// TOML configuration file (see config/clawnode.example.toml).
    #[arg(long, short = 'c', env = "CLAW_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Control-plane member address(es), comma-separated: 127.0.0.1:7400.
    #[arg(long, value_delimiter = ',')]
    pub control_plane: Vec<String>,
    /// Node name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeKind>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// e.g. 5s, 500ms, 1m.
    #[arg(long, value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    #[arg(long, value_parser = parse_duration)]
    pub metrics_interval: Option<Duration>,
    /// Grace period between SIGTERM and SIGKILL when a workload is cancelled.
    #[arg(long, value_parser = parse_duration)]
    pub stop_grace: Option<Duration>,
    /// Extra node label, repeatable: --label zone=a.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    #[arg(long)]
    pub log_level: Option<String>,
    #[arg(long)]
    pub log_format: Option<String>,
}

/// Parses `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("{text:?} is not a duration like 5s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a valid duration (negative or too large)"))
}

/// The inverse of [`parse_duration`], for config files.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

fn env_value<T>(
    env: &dyn Fn(&str) -> Option<String>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>> {
    match env(key) {
        Some(v) => parse(&v).map(Some).map_err(|e| Error::Config(format!("environment variable {key}={v:?}: {e}"))),
        None => Ok(None),
    }
}

impl Options {
    /// Loads the layered configuration. `env` is the environment lookup
    /// (`std::env::var` in `clawnode`), injectable for tests.
    pub fn load(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Options> {
        let mut o = match &flags.config {
            Some(path) => Self::from_file(path)?,
            None => Options::default(),
        };
        let text = |s: &str| Ok::<_, String>(s.to_string());
        if let Some(v) = env_value(env, "CLAW_NODE_CONTROL_PLANE", text)? {
            o.control_plane = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        }
        if let Some(v) = env_value(env, "CLAW_NODE_NAME", text)? {
            o.name = v;
        }
        if let Some(v) = env_value(env, "CLAW_NODE_RUNTIME", |s| s.parse())? {
            o.runtime = v;
        }
        if let Some(v) = env_value(env, "CLAW_NODE_DATA_DIR", text)? {
            o.data_dir = v.into();
        }
        if let Some(v) = env_value(env, "CLAW_NODE_HEARTBEAT_INTERVAL", parse_duration)? {
            o.heartbeat_interval = v;
        }
        if let Some(v) = env_value(env, "CLAW_NODE_METRICS_INTERVAL", parse_duration)? {
            o.metrics_interval = v;
        }
        if let Some(v) = env_value(env, "CLAW_NODE_STOP_GRACE", parse_duration)? {
            o.stop_grace = v;
        }
        if let Some(v) = env_value(env, "CLAW_NODE_LOG_LEVEL", text)? {
            o.log.level = v;
        }
        if let Some(v) = env_value(env, "CLAW_NODE_LOG_FORMAT", text)? {
            o.log.format = v;
        }

        if !flags.control_plane.is_empty() {
            o.control_plane = flags.control_plane.clone();
        }
        if let Some(v) = &flags.name {
            o.name = v.clone();
        }
        if let Some(v) = flags.runtime {
            o.runtime = v;
        }
        if let Some(v) = &flags.data_dir {
            o.data_dir = v.clone();
        }
        if let Some(v) = flags.heartbeat_interval {
            o.heartbeat_interval = v;
        }
        if let Some(v) = flags.metrics_interval {
            o.metrics_interval = v;
        }
        if let Some(v) = flags.stop_grace {
            o.stop_grace = v;
        }
        o.labels.extend(flags.labels.iter().cloned());
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

    pub fn validate(&self) -> Result<()> {
        claw_commands::validate_name("name", &self.name)
            .map_err(|r| Error::Config(format!("{r} (set it with --name)")))?;
        if self.control_plane.is_empty() {
            return Err(Error::Config("control_plane: give at least one member address, e.g. 127.0.0.1:7400".into()));
        }
        for a in &self.control_plane {
            let hostport = a.trim_start_matches("http://");
            if !hostport.contains(':') || hostport.starts_with(':') || hostport.contains('/') {
                return Err(Error::Config(format!("control_plane: {a:?} must be host:port, e.g. 127.0.0.1:7400")));
            }
        }
        for (what, d) in [("heartbeat_interval", self.heartbeat_interval), ("metrics_interval", self.metrics_interval)]
        {
            if d < Duration::from_millis(100) {
                return Err(Error::Config(format!("{what}: {} is shorter than 100ms", format_duration(d))));
            }
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(Error::Config(format!("log.format: {:?} must be \"text\" or \"json\"", self.log.format)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
        // Huge values are an error, not a panic.
        assert!(parse_duration(&"9".repeat(400)).unwrap_err().contains("not a valid duration"));
        assert!(parse_duration("99999999999999999999999h").unwrap_err().contains("not a valid duration"));
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
    }

    #[test]
    fn flags_override_env_which_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clawnode.toml");
        std::fs::write(
            &file,
            "name = \"from-file\"\nruntime = \"exec\"\nheartbeat_interval = \"1s\"\nstop_grace = \"3s\"\n[labels]\nzone = \"a\"\n",
        )
        .unwrap();
        let flags = Flags::try_parse_from([
            "clawnode",
            "--config",
            file.to_str().unwrap(),
            "--control-plane",
            "10.0.0.1:7400,10.0.0.2:7400",
            "--name",
            "gpu-a",
            "--heartbeat-interval",
            "2s",
            "--label",
            "rack=r1",
        ])
        .unwrap();
        let env = |k: &str| match k {
            "CLAW_NODE_NAME" => Some("from-env".to_string()),
            "CLAW_NODE_METRICS_INTERVAL" => Some("30s".to_string()),
            _ => None,
        };
        let o = Options::load(&flags, &env).unwrap();
        assert_eq!(o.name, "gpu-a");
        assert_eq!(o.control_plane, vec!["10.0.0.1:7400", "10.0.0.2:7400"]);
        assert_eq!(o.runtime, RuntimeKind::Exec);
        assert_eq!(o.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(o.metrics_interval, Duration::from_secs(30));
        assert_eq!(o.stop_grace, Duration::from_secs(3));
        assert_eq!(o.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(o.labels.get("rack").map(String::as_str), Some("r1"));
    }

    #[test]
    fn bad_values_are_rejected_with_the_value() {
        let flags = Flags::try_parse_from(["clawnode", "--name", "GPU A"]).unwrap();
        let e = Options::load(&flags, &no_env).unwrap_err().to_string();
        assert!(e.contains("GPU A") && e.contains("--name"), "{e}");

        let flags = Flags::try_parse_from(["clawnode", "--name", "a", "--control-plane", "nowhere"]).unwrap();
        assert!(Options::load(&flags, &no_env).unwrap_err().to_string().contains("\"nowhere\""));

        assert!(Flags::try_parse_from(["clawnode", "--runtime", "podman"]).is_err());
        assert!(Flags::try_parse_from(["clawnode", "--heartbeat-interval", "fast"]).is_err());

        let env = |k: &str| (k == "CLAW_NODE_RUNTIME").then(|| "lxc".to_string());
        let e = Options::load(&Flags::try_parse_from(["clawnode", "--name", "a"]).unwrap(), &env).unwrap_err();
        assert!(e.to_string().contains("CLAW_NODE_RUNTIME=\"lxc\""), "{e}");
    }

    #[test]
    fn the_example_config_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/clawnode.example.toml");
        let o = Options::from_file(&path).unwrap();
        o.validate().unwrap();
    }
}
