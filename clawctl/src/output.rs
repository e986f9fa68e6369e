//! Rendering for `-o table|json|yaml`, and writing to stdout without
//! panicking when the reader goes away (`clawctl events | head`).

use std::io::Write;

use anyhow::Result;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::client::SubmitOutcome;

/// The `-o/--output` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, or `key: value` lines for a single object.
    #[default]
    Table,
    /// Pretty JSON; streams (events) print one compact object per line.
    Json,
    /// YAML; streams (events) print one document per event.
    Yaml,
}

/// Writes `text` and a newline to stdout. `println!` panics on a closed pipe;
/// this returns the error instead, and `main` turns a broken pipe into a
/// quiet exit.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    // Followed streams must show each event as it arrives, not when a
    // buffer fills.
    out.flush()?;
    Ok(())
}

/// A whole value as pretty JSON or YAML (tables are built by the caller).
pub fn render_value<T: Serialize + ?Sized>(format: Format, value: &T) -> Result<String> {
    Ok(match format {
        Format::Json | Format::Table => serde_json::to_string_pretty(value)?,
        Format::Yaml => serde_yaml::to_string(value)?,
    })
}

/// One element of a stream: a compact JSON line, or a YAML document that
/// starts with `---` so the concatenation is a valid multi-document stream.
pub fn render_stream_item<T: Serialize + ?Sized>(format: Format, value: &T) -> Result<String> {
    Ok(match format {
        Format::Json | Format::Table => serde_json::to_string(value)?,
        Format::Yaml => format!("---\n{}", serde_yaml::to_string(value)?),
    })
}

/// Table output is one line chosen by the command; json/yaml print the
/// whole outcome with its decoded events.
pub fn print_outcome(format: Format, outcome: &SubmitOutcome, line: impl Fn(&SubmitOutcome) -> String) -> Result<()> {
    match format {
        Format::Table => emit(&line(outcome)),
        other => emit(&render_value(other, outcome)?),
    }
}

/// Columns sized to their widest cell, separated by two spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table { headers: headers.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            out.push_str(&format_row(line, &widths));
            out.push('\n');
        }
        out
    }
}

/// Joins cells padded to `widths`; the last column is not padded so lines
/// carry no trailing spaces.
pub fn format_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, width) in widths.iter().enumerate() {
        let cell = cells.get(i).map(String::as_str).unwrap_or("");
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(cell);
        if i + 1 < widths.len() {
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.trim_end().to_string()
}

/// `key: value` lines with the values aligned, for `get` commands.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        out.push_str(format!("{label:<width$} {value}").trim_end());
        out.push('\n');
    }
    out
}

/// RFC 3339 in UTC with milliseconds, e.g. `2025-01-02T03:04:05.678Z`.
pub fn time_ms(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => format!("{ms}ms"),
    }
}

/// A coarse age (`42s`, `5m`, `3h`, `2d`) for tables; `-` for a time in the
/// future, which only clock skew between us and the leader can produce.
pub fn age(from_ms: i64, now_ms: i64) -> String {
    let secs = (now_ms - from_ms) / 1000;
    match secs {
        s if s < 0 => "-".to_string(),
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Cuts `text` to at most `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The first 12 hex digits of a hash, enough to tell heads apart by eye.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// `Some(x)` as text, `None` as `-`.
pub fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

/// Joins a command line so that it could be pasted back into a shell.
pub fn shell_join(args: &[String]) -> String {
    args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `K=V, K=V` for small maps in `get` output.
pub fn join_map(map: &std::collections::BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return "-".to_string();
    }
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut t = Table::new(["ID", "NAME", "STATUS"]);
        t.row(["w-1", "train-long-name", "Pending"]);
        t.row(["w-22", "x", ""]);
        assert_eq!(
            t.render(),
            "ID    NAME             STATUS\n\
             w-1   train-long-name  Pending\n\
             w-22  x\n"
        );
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let mut t = Table::new(["A", "B"]);
        t.row(["é…", "x"]);
        assert_eq!(t.render(), "A   B\né…  x\n");
    }

    #[test]
    fn key_values_align_values() {
        let out = key_values(&[("id", "w-1".into()), ("gpu model", "H100".into()), ("env", String::new())]);
        assert_eq!(out, "id:        w-1\ngpu model: H100\nenv:\n");
    }

    #[test]
    fn json_and_yaml_render_values_and_streams() {
        #[derive(Serialize)]
        struct Row {
            id: &'static str,
            gpus: u32,
        }
        let row = Row { id: "w-1", gpus: 2 };
        assert_eq!(render_value(Format::Json, &row).unwrap(), "{\n  \"id\": \"w-1\",\n  \"gpus\": 2\n}");
        assert_eq!(render_value(Format::Yaml, &row).unwrap(), "id: w-1\ngpus: 2\n");
        assert_eq!(render_stream_item(Format::Json, &row).unwrap(), r#"{"id":"w-1","gpus":2}"#);
        assert_eq!(render_stream_item(Format::Yaml, &row).unwrap(), "---\nid: w-1\ngpus: 2\n");
    }

    #[test]
    fn times_are_rfc3339_utc_with_millis() {
        assert_eq!(time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn ages_are_coarse() {
        assert_eq!(age(0, 5_000), "5s");
        assert_eq!(age(0, 600_000), "10m");
        assert_eq!(age(0, 3 * 3_600_000), "3h");
        assert_eq!(age(0, 3 * 86_400_000), "3d");
        assert_eq!(age(10_000, 0), "-");
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(truncate("hello world", 6), "hello…");
    }

    #[test]
    fn shell_join_quotes_what_a_shell_would_split() {
        let args: Vec<String> = ["sh", "-c", "echo hi", "it's"].map(String::from).to_vec();
        assert_eq!(shell_join(&args), r"sh -c 'echo hi' 'it'\''s'");
    }

    #[test]
    fn short_hash_tolerates_short_input() {
        assert_eq!(short_hash("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_hash("abc"), "abc");
    }
}
