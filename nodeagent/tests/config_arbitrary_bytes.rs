//! Arbitrary and mutated bytes for what `clawnode` reads from disk: its
//! configuration file (with `parse_duration` for its durations) and its
//! state file. Nothing may panic; a rejection must name the file, the
//! setting or the offending text. The seeds are in `tests/corpus/`
//! (`clawnode_config`, `duration`, `agent_state`).

#[path = "../../tests/corpus/mutate.rs"]
mod mutate;

use std::path::Path;

use claw_nodeagent::{format_duration, parse_duration, Flags, Options, StateFile};
use proptest::prelude::*;

use self::mutate::{check_config_file, corpus, inputs, mutated, Seed};

/// The settings `Options::validate` can complain about, as its messages
/// name them (`name` through `validate_name`: "invalid name: ...").
const SETTINGS: &[&str] = &["invalid name", "control_plane", "heartbeat_interval", "metrics_interval", "log.format"];

/// The seeds, and the documented example file as one more.
fn config_seeds() -> Vec<Seed> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/clawnode.example.toml");
    let mut seeds = corpus("clawnode_config");
    seeds.push(Seed {
        name: "config/clawnode.example.toml".into(),
        bytes: std::fs::read(&example).unwrap_or_else(|e| panic!("{}: {e}", example.display())),
    });
    seeds
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Text for `parse_duration`: mutated seeds, things shaped like durations,
/// and anything at all.
fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        mutated(corpus("duration")).prop_map(|i| String::from_utf8_lossy(&i.bytes).into_owned()),
        "[ ]?-?[0-9]{0,30}(\\.[0-9]{0,12})?[ ]?(ms|s|m|h|d|us|S|µs|e9)?[ ]?",
        "[0-9.eE+-]{0,40}[a-z]{0,3}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// `clawnode --config FILE`: read, parsed (durations with
    /// `parse_duration`), validated.
    #[test]
    fn config_files_never_panic_and_errors_name_the_file_or_setting(input in inputs(config_seeds())) {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = check_config_file(&dir.path().join("clawnode.toml"), &input.bytes, SETTINGS, |path| {
            Options::load(&Flags { config: Some(path), ..Default::default() }, &no_env).map(drop)
        });
        prop_assert!(r.is_ok(), "{:?}: {}", input, r.unwrap_err());
    }

    /// Durations in the config file, `CLAW_NODE_*_INTERVAL` and the flags.
    /// A rejection quotes the text; an accepted duration can be written
    /// back (`format_duration`, as the config file serialises it) and read
    /// again.
    #[test]
    fn durations_never_panic_and_errors_quote_the_text(text in duration_text()) {
        match parse_duration(&text) {
            Err(msg) => prop_assert!(msg.contains(&format!("{text:?}")), "{:?}: the error does not quote it: {}", text, msg),
            Ok(d) => {
                let written = format_duration(d);
                prop_assert!(parse_duration(&written).is_ok(), "{:?} reads as {:?}, written as {:?}, which does not read back", text, d, written);
            }
        }
    }

    /// `agent-state.json` in the data directory.
    #[test]
    fn state_files_never_panic_and_errors_name_the_file(input in inputs(corpus("agent_state"))) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::open(dir.path()).expect("open state file");
        std::fs::write(file.path(), &input.bytes).expect("write state");
        if let Err(e) = file.load() {
            let msg = e.to_string();
            prop_assert!(
                msg.contains(&file.path().display().to_string()) && msg.contains("is not valid agent state"),
                "{:?}: unclear error: {}", input, msg
            );
        }
    }
}

/// Every seed loads: a stale corpus would test only the error paths.
#[test]
fn every_seed_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    for s in config_seeds() {
        let path = dir.path().join("clawnode.toml");
        std::fs::write(&path, &s.bytes).expect("write config");
        let flags = Flags { config: Some(path), ..Default::default() };
        Options::load(&flags, &no_env).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    for s in corpus("duration") {
        parse_duration(&String::from_utf8_lossy(&s.bytes)).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    let file = StateFile::open(dir.path()).expect("open state file");
    for s in corpus("agent_state") {
        std::fs::write(file.path(), &s.bytes).expect("write state");
        file.load().unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
}
