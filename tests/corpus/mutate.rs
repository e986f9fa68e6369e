//! Seed corpora and byte mutations for the decoder property tests.
//!
//! Each folder next to this file holds a few valid inputs of one decoder.
//! The tests feed the decoders those seeds with bytes flipped, set,
//! inserted, deleted, duplicated or cut off, and purely random bytes. This
//! file is shared with `#[path]` by `proto/tests/arbitrary_bytes.rs`,
//! `log/src/decode_tests.rs` and the `config_arbitrary_bytes.rs` tests of
//! `controlplane` and `nodeagent`, since they live in different crates.

// Each test uses only some of the helpers.
#![allow(dead_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// One valid input of a decoder: its file name and bytes.
#[derive(Clone)]
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The folder of one decoder's corpus.
pub fn corpus_dir(decoder: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus").join(decoder)
}

/// The seeds of one decoder, in file-name order.
pub fn corpus(decoder: &str) -> Vec<Seed> {
    let dir = corpus_dir(decoder);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list corpus {}: {e}", dir.display()));
    let mut seeds: Vec<Seed> = entries
        .map(|entry| {
            let path = entry.unwrap_or_else(|e| panic!("cannot list corpus {}: {e}", dir.display())).path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read seed {}: {e}", path.display()));
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Seed { name: format!("{decoder}/{name}"), bytes }
        })
        .collect();
    seeds.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!seeds.is_empty(), "corpus {} holds no seed", dir.display());
    seeds
}

/// What a property test feeds a decoder; its `Debug` form says how it was
/// made, so a failure report reads as a recipe.
#[derive(Clone)]
pub struct Input {
    pub origin: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} => b\"{}\"", self.origin, self.bytes.escape_ascii())
    }
}

/// One edit of a seed. Positions are `Index`es, so they fit any length and
/// shrink towards the start.
#[derive(Clone, Debug)]
pub enum Mutation {
    FlipBit { at: Index, bit: u8 },
    SetByte { at: Index, byte: u8 },
    Insert { at: Index, bytes: Vec<u8> },
    Delete { at: Index, len: usize },
    Duplicate { from: Index, len: usize, to: Index },
    Truncate { at: Index },
}

/// Byte strings that tend to reach past a parser's first check: numbers at
/// and past the integer limits, JSON and TOML punctuation, escapes, and
/// protobuf varints that are maximal or never end.
const TOKENS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"-0",
    b"18446744073709551615",
    b"18446744073709551616",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"4294967296",
    b"1e308",
    b"1e999",
    b"-1e999",
    b"0.1",
    b"NaN",
    b"inf",
    b"nan",
    b"null",
    b"true",
    b"\"",
    b"\"\"",
    b"\\u0000",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b"[]",
    b"{}",
    b",",
    b":",
    b"=",
    b"\n",
    b"[x]\n",
    b"[[x]]\n",
    b"\xc3\xa9",
    b"\xff",
    b"\xf0\x9f",
    b"\x80",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    b"\x0a\xff\xff\xff\xff\x0f",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let inserted = prop_oneof![vec(any::<u8>(), 1..4), select(TOKENS).prop_map(<[u8]>::to_vec)];
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        (any::<Index>(), inserted).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<Index>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<Index>(), 1usize..64, any::<Index>()).prop_map(|(from, len, to)| Mutation::Duplicate { from, len, to }),
        any::<Index>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

/// Applies `m` to `bytes`.
pub fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::FlipBit { at, bit } if len > 0 => bytes[at.index(len)] ^= 1u8 << *bit,
        Mutation::SetByte { at, byte } if len > 0 => bytes[at.index(len)] = *byte,
        Mutation::Insert { at, bytes: new } => {
            let i = at.index(len + 1);
            bytes.splice(i..i, new.iter().copied());
        }
        Mutation::Delete { at, len: n } if len > 0 => {
            let i = at.index(len);
            bytes.drain(i..(i + *n).min(len));
        }
        Mutation::Duplicate { from, len: n, to } if len > 0 => {
            let i = from.index(len);
            let chunk = bytes[i..(i + *n).min(len)].to_vec();
            let j = to.index(len + 1);
            bytes.splice(j..j, chunk);
        }
        Mutation::Truncate { at } => bytes.truncate(at.index(len + 1)),
        // Edits of a byte that an empty input does not have.
        _ => {}
    }
}

/// A seed with zero to five edits.
pub fn mutated(seeds: Vec<Seed>) -> impl Strategy<Value = Input> {
    assert!(!seeds.is_empty(), "mutated() needs at least one seed");
    (any::<Index>(), vec(mutation(), 0..6)).prop_map(move |(pick, edits)| {
        let seed = &seeds[pick.index(seeds.len())];
        let mut bytes = seed.bytes.clone();
        for m in &edits {
            apply(&mut bytes, m);
        }
        Input { origin: format!("{} with {edits:?}", seed.name), bytes }
    })
}

/// Purely random bytes, up to 512 of them.
pub fn random_bytes() -> impl Strategy<Value = Input> {
    vec(any::<u8>(), 0..512).prop_map(|bytes| Input { origin: "random bytes".into(), bytes })
}

/// Mostly mutated seeds, sometimes random bytes.
pub fn inputs(seeds: Vec<Seed>) -> BoxedStrategy<Input> {
    prop_oneof![4 => mutated(seeds), 1 => random_bytes()].boxed()
}

/// Writes `bytes` to `path` and hands it to `load` (a program's whole
/// configuration load). A rejection must be a configuration error
/// ("configuration: ...") that names the file and says why, or starts with
/// one of `settings` ("SETTING: ...").
pub fn check_config_file<E: fmt::Display>(
    path: &Path,
    bytes: &[u8],
    settings: &[&str],
    load: impl FnOnce(PathBuf) -> Result<(), E>,
) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
    let Err(e) = load(path.to_path_buf()) else { return Ok(()) };
    let msg = e.to_string();
    let inner = msg.strip_prefix("configuration: ").ok_or_else(|| format!("not a configuration error: {msg}"))?;
    match inner.split_once(&path.display().to_string()) {
        Some((_, why)) if why.trim_start_matches(':').trim().len() > 4 => Ok(()),
        Some(_) => Err(format!("says too little: {msg}")),
        None if names_one_of(inner, settings) => Ok(()),
        None => Err(format!("names neither the file nor a setting: {msg}")),
    }
}

/// Whether an error message starts with one of `settings` ("SETTING: ...").
pub fn names_one_of(msg: &str, settings: &[&str]) -> bool {
    settings.iter().any(|s| msg.starts_with(&format!("{s}:")))
}
