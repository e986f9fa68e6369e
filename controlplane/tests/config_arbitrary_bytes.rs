//! Arbitrary and mutated bytes for `clawd`'s configuration file, and
//! arbitrary text for its `CLAW_*` environment variables. Loading must
//! never panic; a rejection must name the file, the variable or the
//! setting that is wrong. The seeds are in `tests/corpus/clawd_config/`.

#[path = "../../tests/corpus/mutate.rs"]
mod mutate;

use std::path::Path;

use claw_controlplane::{Flags, Options};
use proptest::prelude::*;
use proptest::sample::select;

use self::mutate::{check_config_file, corpus, inputs, names_one_of, Seed};

/// The settings `Options::validate` can complain about, as its messages
/// name them.
const SETTINGS: &[&str] = &[
    "id",
    "listen",
    "advertise",
    "history.checkpoint_every",
    "history.full_checkpoint_every",
    "metrics",
    "log.format",
    "raft",
    "raft.snapshot_logs_since_last",
    "scheduler",
];

const ENV_VARS: &[&str] = &[
    "CLAW_ID",
    "CLAW_LISTEN",
    "CLAW_ADVERTISE",
    "CLAW_DATA_DIR",
    "CLAW_JOIN",
    "CLAW_LOG_LEVEL",
    "CLAW_LOG_FORMAT",
    "CLAW_RAFT_HEARTBEAT_MS",
    "CLAW_RAFT_ELECTION_TIMEOUT_MIN_MS",
    "CLAW_RAFT_ELECTION_TIMEOUT_MAX_MS",
    "CLAW_RAFT_SNAPSHOT_LOGS_SINCE_LAST",
    "CLAW_RAFT_MAX_IN_SNAPSHOT_LOG_TO_KEEP",
    "CLAW_SCHEDULER_STRATEGY",
    "CLAW_SCHEDULER_NODE_TIMEOUT_MS",
    "CLAW_SCHEDULER_INTERVAL_MS",
    "CLAW_HISTORY_CHECKPOINT_EVERY",
    "CLAW_METRICS_ROLLUP_INTERVAL_MS",
    "CLAW_METRICS_RETENTION_1M_HOURS",
    "CLAW_METRICS_RETENTION_1H_DAYS",
    "CLAW_STORAGE_VERIFY_CHECKSUMS_ON_START",
];

/// The seeds, and the documented example file as one more.
fn seeds() -> Vec<Seed> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/clawd.example.toml");
    let mut seeds = corpus("clawd_config");
    seeds.push(Seed {
        name: "config/clawd.example.toml".into(),
        bytes: std::fs::read(&example).unwrap_or_else(|e| panic!("{}: {e}", example.display())),
    });
    seeds
}

fn no_env(_: &str) -> Option<String> {
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// `clawd --config FILE`: read, parsed, validated.
    #[test]
    fn config_files_never_panic_and_errors_name_the_file_or_setting(input in inputs(seeds())) {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = check_config_file(&dir.path().join("clawd.toml"), &input.bytes, SETTINGS, |path| {
            Options::load(&Flags { config: Some(path), ..Default::default() }, &no_env).map(drop)
        });
        prop_assert!(r.is_ok(), "{:?}: {}", input, r.unwrap_err());
    }

    /// `CLAW_*` variables hold arbitrary text.
    #[test]
    fn environment_values_never_panic_and_errors_name_the_variable(
        key in select(ENV_VARS),
        value in prop_oneof![any::<String>(), "-?[0-9]{0,25}", "[a-z]{0,8}", "[0-9a-z.:\\[\\]]{0,24}"],
    ) {
        let env = |k: &str| (k == key).then(|| value.clone());
        if let Err(e) = Options::load(&Flags::default(), &env) {
            let msg = e.to_string();
            let inner = msg.strip_prefix("configuration: ").unwrap_or_else(|| panic!("{key}={value:?}: not a configuration error: {msg}"));
            prop_assert!(
                inner.starts_with(&format!("environment variable {key}=")) || names_one_of(inner, SETTINGS),
                "{}={:?}: names neither the variable nor a setting: {}", key, value, msg
            );
        }
    }
}

/// Every seed loads: a stale corpus would test only the error paths.
#[test]
fn every_seed_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    for s in seeds() {
        let path = dir.path().join("clawd.toml");
        std::fs::write(&path, &s.bytes).expect("write config");
        let flags = Flags { config: Some(path), ..Default::default() };
        Options::load(&flags, &no_env).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
}
