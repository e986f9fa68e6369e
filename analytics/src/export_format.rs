use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::str::FromStr;

use claw_commands::EventRecord;
use claw_log::{EventFilter, EventStore};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::events_batch::{EventsBatch, Row};
use crate::{Error, Result};

/// Records read from the log per page of an export.
const PAGE: usize = 8192;

/// The file formats events can be exported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Apache Parquet with the columns of the `events` table, Snappy-compressed.
    Parquet,
    /// One stored `EventRecord` per line, as JSON (hashes included, so the
    /// chain can be verified from the file).
    Jsonl,
}

impl ExportFormat {
    /// Streams `from_seq..=to_seq` to `out` page by page (blocking IO).
    pub(crate) fn export(self, store: &EventStore, from_seq: u64, to_seq: Option<u64>, out: &Path) -> Result<u64> {
        let io = |source| Error::Io { path: out.to_path_buf(), source };
        // Fix the end now, so the file is one consistent range even while
        // the log keeps growing.
        let last = store.last_seq();
        let to = to_seq.map_or(last, |t| t.min(last));
        if let Some(t) = to_seq {
            if t < from_seq {
                return Err(Error::InvalidArgument(format!(
                    "export range {from_seq}..={t} is empty (to is before from)"
                )));
            }
        }
        let file = File::create(out).map_err(io)?;
        let mut sink = match self {
            ExportFormat::Parquet => {
                let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
                Sink::Parquet(Box::new(ArrowWriter::try_new(file, EventsBatch::schema(), Some(props))?))
            }
            ExportFormat::Jsonl => Sink::Jsonl(BufWriter::new(file)),
        };
        let all: Vec<usize> = (0..EventsBatch::schema().fields().len()).collect();
        let mut next = from_seq.max(1);
        let mut rows = 0u64;
        while next <= to {
            let page = store.events(next, Some(to), PAGE, &EventFilter::default())?;
            let Some(last_rec) = page.last() else { break };
            next = last_rec.seq + 1;
            rows += page.len() as u64;
            match &mut sink {
                Sink::Parquet(w) => {
                    let mut b = EventsBatch::new(&all);
                    for rec in &page {
                        b.append(&Row::of_record(rec))?;
                    }
                    w.write(&b.finish(EventsBatch::schema())?)?;
                }
                Sink::Jsonl(w) => write_jsonl(w, &page).map_err(io)?,
            }
        }
        match sink {
            Sink::Parquet(w) => {
                w.close()?;
            }
            Sink::Jsonl(mut w) => w.flush().map_err(io)?,
        }
        Ok(rows)
    }
}

enum Sink {
    Parquet(Box<ArrowWriter<File>>),
    Jsonl(BufWriter<File>),
}

fn write_jsonl(w: &mut BufWriter<File>, page: &[EventRecord]) -> std::io::Result<()> {
    for rec in page {
        serde_json::to_writer(&mut *w, rec)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

impl FromStr for ExportFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(ExportFormat::Parquet),
            "jsonl" | "ndjson" => Ok(ExportFormat::Jsonl),
            other => {
                Err(Error::InvalidArgument(format!("unknown export format {other:?} (expected parquet or jsonl)")))
            }
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Jsonl => "jsonl",
        })
    }
}
