//! `clawctl sql` and `clawctl export events`: SQL over the history through
//! the `Query` RPC (Arrow IPC), and the history written out for other
//! tools (Parquet, JSON lines). The engine runs in `clawd`; this side only
//! decodes Arrow and writes files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use clap::{Args, Subcommand, ValueEnum};
use claw_proto::v1;
use futures::StreamExt;

use crate::client::Client;
use crate::output::{self, emit, Format};
use crate::replay::Moment;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT kind, count(*) FROM events GROUP BY kind".
    /// Tables: events, metrics, members, nodes, gpus, workloads, proposals,
    /// incidents; seance functions: nodes_at(x), gpus_at(x), workloads_at(x),
    /// proposals_at(x), members_at(x), incidents_at(x) with x a seq or a
    /// timestamp.
    pub query: String,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Write stored events to a file.
    Events(ExportEventsArgs),
}

#[derive(Debug, Args)]
pub struct ExportEventsArgs {
    /// First moment: a seq (included), an RFC 3339 time or a relative time.
    #[arg(long, default_value = "1", allow_hyphen_values = true, value_name = "MOMENT")]
    pub from: String,
    /// Last moment (default: the last event).
    #[arg(long, allow_hyphen_values = true, value_name = "MOMENT")]
    pub to: Option<String>,
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// File to write; `-` (the default) writes JSON lines to stdout.
    #[arg(long, short = 'f', default_value = "-")]
    pub file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Apache Parquet with the columns of the `events` SQL table.
    Parquet,
    /// One stored event record (with its hashes) per line, as JSON.
    Jsonl,
}

impl Client {
    /// Runs `sql` on the server; returns the schema and every batch.
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut schema = None;
        let mut batches = Vec::new();
        self.query_each(sql, |s, b| {
            schema.get_or_insert(s);
            batches.extend(b);
            Ok(())
        })
        .await?;
        let Some(schema) = schema else { bail!("clawd answered the query with no schema") };
        Ok((schema, batches))
    }

    /// Runs `sql`, handing over each response's batches as they arrive.
    pub async fn query_each(
        &self,
        sql: &str,
        mut each: impl FnMut(SchemaRef, Vec<RecordBatch>) -> Result<()>,
    ) -> Result<()> {
        let request = v1::QueryRequest { sql: sql.to_string(), consistency: self.consistency() };
        let mut stream = self.grpc.clone().query(request).await?.into_inner();
        while let Some(message) = stream.next().await {
            let bytes = message?.arrow_ipc;
            let reader =
                StreamReader::try_new(bytes.as_slice(), None).context("clawd sent an unreadable Arrow stream")?;
            let schema = reader.schema();
            let batches: Vec<RecordBatch> =
                reader.collect::<Result<_, _>>().context("clawd sent an unreadable Arrow batch")?;
            each(schema, batches)?;
        }
        Ok(())
    }
}

pub async fn run(client: &Client, format: Format, args: SqlArgs) -> Result<()> {
    let (schema, batches) = client.query(&args.query).await?;
    emit(&render(format, &schema, &batches)?)
}

/// A table as `clawctl` prints tables, or the rows as JSON/YAML objects.
pub fn render(format: Format, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    match format {
        Format::Table => {
            let mut out = if batches.is_empty() {
                // Still show the columns, so "no rows" reads as an answer.
                let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
                names.join("  ") + "\n"
            } else {
                arrow::util::pretty::pretty_format_batches(batches)?.to_string() + "\n"
            };
            out.push_str(&format!("({rows} row{})\n", if rows == 1 { "" } else { "s" }));
            Ok(out)
        }
        other => {
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            for b in batches {
                writer.write(b)?;
            }
            writer.finish()?;
            let bytes = writer.into_inner();
            let value: serde_json::Value =
                if bytes.is_empty() { serde_json::Value::Array(Vec::new()) } else { serde_json::from_slice(&bytes)? };
            output::render_value(other, &value)
        }
    }
}

pub async fn export(client: &Client, command: ExportCommand) -> Result<()> {
    let ExportCommand::Events(args) = command;
    let now = output::now_ms();
    let from = resolve(client, Moment::parse(&args.from, now)?, true).await?;
    let to = match &args.to {
        Some(t) => resolve(client, Moment::parse(t, now)?, false).await?,
        // Fix the end now, so the file is one consistent range.
        None => client.state_head(None).await?.seq,
    };
    if to < from {
        bail!("nothing to export: --to (seq {to}) is before --from (seq {from})");
    }
    let written = match args.format {
        ExportFormat::Jsonl => {
            let mut out: Box<dyn Write> = if args.file == "-" {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(BufWriter::new(create(&args.file)?))
            };
            let mut n = 0u64;
            client
                .events_between(from, to, None, |records| {
                    for r in &records {
                        serde_json::to_writer(&mut out, r)?;
                        out.write_all(b"\n")?;
                    }
                    n += records.len() as u64;
                    Ok(())
                })
                .await?;
            out.flush()?;
            n
        }
        ExportFormat::Parquet => {
            if args.file == "-" {
                bail!("Parquet is a binary file format: give --file PATH");
            }
            let file = create(&args.file)?;
            let sql = format!("SELECT * FROM events WHERE seq >= {from} AND seq <= {to} ORDER BY seq");
            let mut writer: Option<parquet::arrow::ArrowWriter<File>> = None;
            let mut n = 0u64;
            let mut file = Some(file);
            client
                .query_each(&sql, |schema, batches| {
                    if writer.is_none() {
                        let f = file.take().context("the output file was already handed to the writer")?;
                        writer = Some(parquet::arrow::ArrowWriter::try_new(f, schema, None)?);
                    }
                    if let Some(w) = writer.as_mut() {
                        for b in &batches {
                            w.write(b)?;
                            n += b.num_rows() as u64;
                        }
                    }
                    Ok(())
                })
                .await?;
            match writer {
                Some(w) => {
                    w.close()?;
                }
                None => bail!("clawd sent no schema for the export"),
            }
            n
        }
    };
    if args.file != "-" {
        eprintln!("exported {written} events (seq {from}..={to}) to {}", args.file);
    }
    Ok(())
}

/// A moment as a seq: for `from`, the first event after a time; for `to`,
/// the last event at or before it.
async fn resolve(client: &Client, moment: Moment, from: bool) -> Result<u64> {
    Ok(match moment {
        Moment::Seq(seq) => seq,
        at @ Moment::TimeMs(_) => {
            let seq = client.state_head(Some(at)).await?.seq;
            if from {
                seq + 1
            } else {
                seq
            }
        }
    })
}

fn create(path: &str) -> Result<File> {
    File::create(PathBuf::from(path)).with_context(|| format!("cannot create {path}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{StringArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("kind", DataType::Utf8, false),
            Field::new("n", DataType::UInt64, false),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["NodeRegistered", "WorkloadSubmitted"])),
                Arc::new(UInt64Array::from(vec![2, 5])),
            ],
        )
        .unwrap();
        (schema, b)
    }

    #[test]
    fn results_render_as_a_table_or_json_rows() {
        let (schema, b) = batch();
        let table = render(Format::Table, &schema, std::slice::from_ref(&b)).unwrap();
        assert!(table.contains("| NodeRegistered    | 2 |"), "{table}");
        assert!(table.ends_with("(2 rows)\n"), "{table}");
        let json = render(Format::Json, &schema, &[b]).unwrap();
        let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(rows[1]["kind"], "WorkloadSubmitted");
        assert_eq!(rows[1]["n"], 5);
        let empty = render(Format::Table, &schema, &[]).unwrap();
        assert_eq!(empty, "kind  n\n(0 rows)\n");
    }
}
