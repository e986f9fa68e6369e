//! `clawctl workload submit|list|get|cancel`.

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use claw_projections::WorkloadRow;
use claw_proto::v1::{self, submit_request::Command};

use crate::client::{Client, GetError, SubmitOutcome};
use crate::output::{self, emit, key_values, or_dash, print_outcome, time_ms, Format, Table};

#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// Submit a workload; the command to run follows `--`.
    Submit(SubmitArgs),
    /// List workloads.
    List,
    /// Show one workload by id or name.
    Get {
        /// Workload id, or the name of its most recent submission.
        workload: String,
    },
    /// Why the scheduler put the workload where it is, or why it is still pending.
    Explain {
        /// Workload id or name.
        workload: String,
    },
    /// Print the workload's output as its node agent reported it.
    Logs {
        /// Workload id or name.
        workload: String,
        /// Keep printing new output until the workload exits.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Ask for a workload to be cancelled.
    Cancel {
        /// Workload id or name.
        workload: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// Workload name (lowercase letters, digits, '-', '_', '.').
    #[arg(long)]
    pub name: String,
    /// Container image.
    #[arg(long)]
    pub image: String,
    /// Number of GPUs.
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// Required GPU model, e.g. H100.
    #[arg(long)]
    pub gpu_model: Option<String>,
    /// Minimum memory per GPU, in MB.
    #[arg(long, default_value_t = 0)]
    pub min_gpu_memory_mb: u64,
    /// Environment variable (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Label (repeatable).
    #[arg(long = "label", value_name = "K=V", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Node label the workload requires (repeatable).
    #[arg(long = "node-selector", value_name = "K=V", value_parser = parse_key_value)]
    pub node_selector: Vec<(String, String)>,
    /// Scheduling priority; higher goes first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Workload id; by default the server derives one from the command id.
    #[arg(long)]
    pub id: Option<String>,
    /// Idempotency key; reuse it to resubmit safely. Default: a fresh UUIDv7.
    #[arg(long)]
    pub command_id: Option<String>,
    /// The command to run, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `K=V` for `--env` and `--label`; clap names the flag in the error.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => Err(format!("expected K=V with a non-empty key, got {s:?}")),
        None => Err(format!("expected K=V, got {s:?}")),
    }
}

impl SubmitArgs {
    /// The submit command. Later `K=V` for the same key wins, as with
    /// `docker run -e`.
    pub fn to_command(&self) -> Command {
        let spec = v1::WorkloadSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            command: self.command.clone(),
            env: self.env.iter().cloned().collect(),
            gpus: self.gpus,
            gpu_model: self.gpu_model.clone().unwrap_or_default(),
            min_gpu_memory_mb: self.min_gpu_memory_mb,
            labels: self.labels.iter().cloned().collect(),
            priority: self.priority,
            node_selector: self.node_selector.iter().cloned().collect(),
        };
        Command::SubmitWorkload(v1::SubmitWorkload {
            spec: Some(spec),
            workload_id: self.id.clone().unwrap_or_default(),
        })
    }
}

pub async fn run(client: &Client, format: Format, command: WorkloadCommand) -> Result<()> {
    match command {
        WorkloadCommand::Submit(args) => {
            let outcome = client.submit(args.command_id.clone(), args.to_command()).await?;
            print_outcome(format, &outcome, |o| {
                format!("workload {} submitted ({}){}", o.object_id, o.seq_text(), o.duplicate_note())
            })
        }
        WorkloadCommand::List => {
            let mut rows: Vec<WorkloadRow> = client.list_objects("workload").await?;
            rows.sort_by_key(|w| w.submitted_seq);
            match format {
                Format::Table => emit(&list_table(&rows, output::now_ms())),
                other => emit(&output::render_value(other, &rows)?),
            }
        }
        WorkloadCommand::Get { workload } => {
            let row = find(client, &workload).await?;
            match format {
                Format::Table => emit(&detail(&row)),
                other => emit(&output::render_value(other, &row)?),
            }
        }
        WorkloadCommand::Explain { workload } => crate::explain::explain(format, &find(client, &workload).await?),
        WorkloadCommand::Logs { workload, follow } => {
            crate::explain::logs(client, format, &find(client, &workload).await?, follow).await
        }
        WorkloadCommand::Cancel { workload, reason } => {
            let command = Command::CancelWorkload(v1::CancelWorkload { workload, reason });
            let outcome = client.submit(None, command).await?;
            print_outcome(format, &outcome, SubmitOutcome::events_lines)
        }
    }
}

/// By id first; the server may resolve names too, but if it does not, the
/// most recent submission with that name is the one an operator means (the
/// same rule `cancel` applies server-side).
async fn find(client: &Client, id_or_name: &str) -> Result<WorkloadRow> {
    match client.get_object::<WorkloadRow>("workload", id_or_name).await {
        Ok(row) => Ok(row),
        Err(GetError::NotFound) => {
            let rows: Vec<WorkloadRow> = client.list_objects("workload").await?;
            by_name(rows, id_or_name)
                .ok_or_else(|| anyhow!("workload {id_or_name:?} not found (see: clawctl workload list)"))
        }
        Err(GetError::Other(e)) => Err(e),
    }
}

pub fn by_name(rows: Vec<WorkloadRow>, name: &str) -> Option<WorkloadRow> {
    rows.into_iter().filter(|w| w.spec.name == name).max_by_key(|w| w.submitted_seq)
}

pub fn list_table(rows: &[WorkloadRow], now_ms: i64) -> String {
    let mut table = Table::new(["ID", "NAME", "STATUS", "GPUS", "MODEL", "NODE", "SUBMITTED BY", "AGE", "SEQ"]);
    for w in rows {
        table.row([
            w.id.clone(),
            w.spec.name.clone(),
            status_text(w),
            w.spec.gpus.to_string(),
            or_dash(w.spec.gpu_model.as_deref()),
            or_dash(w.node.as_deref()),
            w.submitted_by.clone(),
            output::age(w.submitted_ms, now_ms),
            w.submitted_seq.to_string(),
        ]);
    }
    table.render()
}

/// The status, flagged while a cancel is pending on a live workload.
fn status_text(w: &WorkloadRow) -> String {
    let status = w.status.as_str();
    if w.cancel_requested && !w.status.is_terminal() {
        format!("{status} (cancelling)")
    } else {
        status.to_string()
    }
}

pub fn detail(w: &WorkloadRow) -> String {
    let spec = &w.spec;
    let optional_time = |t: Option<i64>| t.map(time_ms).unwrap_or_else(|| "-".to_string());
    let cancel = match (&w.cancel_requested, &w.cancel_reason) {
        (false, _) => "-".to_string(),
        (true, Some(reason)) if !reason.is_empty() => format!("requested: {reason}"),
        (true, _) => "requested".to_string(),
    };
    key_values(&[
        ("id", w.id.clone()),
        ("name", spec.name.clone()),
        ("status", status_text(w)),
        ("image", spec.image.clone()),
        ("command", if spec.command.is_empty() { "-".into() } else { output::shell_join(&spec.command) }),
        ("gpus", spec.gpus.to_string()),
        ("gpu model", or_dash(spec.gpu_model.as_deref())),
        (
            "min gpu memory",
            if spec.min_gpu_memory_mb == 0 { "-".into() } else { format!("{} MB", spec.min_gpu_memory_mb) },
        ),
        ("priority", spec.priority.to_string()),
        ("env", output::join_map(&spec.env)),
        ("labels", output::join_map(&spec.labels)),
        ("node", or_dash(w.node.as_deref())),
        ("submitted by", w.submitted_by.clone()),
        ("submitted", format!("{} (seq {})", time_ms(w.submitted_ms), w.submitted_seq)),
        ("started", optional_time(w.started_ms)),
        ("finished", optional_time(w.finished_ms)),
        ("exit code", or_dash(w.exit_code)),
        ("cancel", cancel),
        ("changed seq", w.changed_seq.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use claw_commands::{WorkloadSpec, WorkloadStatus};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: WorkloadCommand,
    }

    fn parse(argv: &[&str]) -> Result<WorkloadCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("workload").chain(argv.iter().copied())).map(|c| c.command)
    }

    fn submit_args(argv: &[&str]) -> SubmitArgs {
        match parse(argv).unwrap() {
            WorkloadCommand::Submit(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn submit_builds_the_full_spec() {
        let args = submit_args(&[
            "submit",
            "--name",
            "train-1",
            "--image",
            "busybox",
            "--gpus",
            "2",
            "--gpu-model",
            "H100",
            "--min-gpu-memory-mb",
            "40000",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--env",
            "A=2",
            "--label",
            "team=ml",
            "--priority",
            "-3",
            "--id",
            "w-fixed",
            "--command-id",
            "cmd-1",
            "--",
            "sh",
            "-c",
            "echo hi",
        ]);
        assert_eq!(args.command_id.as_deref(), Some("cmd-1"));
        let Command::SubmitWorkload(submit) = args.to_command() else { panic!("not a submit") };
        assert_eq!(submit.workload_id, "w-fixed");
        let spec: WorkloadSpec = submit.spec.unwrap().into();
        assert_eq!(spec.name, "train-1");
        assert_eq!(spec.image, "busybox");
        assert_eq!(spec.command, vec!["sh", "-c", "echo hi"]);
        assert_eq!(spec.gpus, 2);
        assert_eq!(spec.gpu_model.as_deref(), Some("H100"));
        assert_eq!(spec.min_gpu_memory_mb, 40000);
        assert_eq!(spec.env.get("A").map(String::as_str), Some("2"));
        assert_eq!(spec.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("ml"));
        assert_eq!(spec.priority, -3);
    }

    #[test]
    fn submit_defaults_leave_ids_to_the_server() {
        let args = submit_args(&["submit", "--name", "n", "--image", "i"]);
        assert!(args.command_id.is_none());
        let Command::SubmitWorkload(submit) = args.to_command() else { panic!("not a submit") };
        assert_eq!(submit.workload_id, "");
        let spec = submit.spec.unwrap();
        assert_eq!((spec.gpus, spec.gpu_model.as_str(), spec.command.len()), (0, "", 0));
    }

    #[test]
    fn bad_key_values_name_the_flag() {
        let err = parse(&["submit", "--name", "n", "--image", "i", "--env", "NOVALUE"]).unwrap_err().to_string();
        assert!(err.contains("--env") && err.contains("K=V"), "{err}");
        let err = parse(&["submit", "--name", "n", "--image", "i", "--label", "=v"]).unwrap_err().to_string();
        assert!(err.contains("--label"), "{err}");
        assert_eq!(parse_key_value("K="), Ok(("K".into(), String::new())));
    }

    fn row(id: &str, name: &str, seq: u64) -> WorkloadRow {
        WorkloadRow {
            id: id.into(),
            spec: WorkloadSpec {
                name: name.into(),
                image: "busybox".into(),
                gpus: 2,
                gpu_model: Some("H100".into()),
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                ..Default::default()
            },
            status: WorkloadStatus::Pending,
            submitted_by: "user:alice".into(),
            submitted_ms: 1_700_000_000_000,
            submitted_seq: seq,
            node: None,
            cancel_requested: false,
            cancel_reason: None,
            exit_code: None,
            started_ms: None,
            finished_ms: None,
            changed_seq: seq,
            gpu_uuids: vec![],
            placement: None,
            unschedulable: None,
            oom_killed: false,
            lost_count: 0,
        }
    }

    #[test]
    fn names_resolve_to_the_latest_submission() {
        let rows = vec![row("w-1", "train", 3), row("w-2", "train", 9), row("w-3", "other", 12)];
        assert_eq!(by_name(rows.clone(), "train").unwrap().id, "w-2");
        assert!(by_name(rows, "missing").is_none());
    }

    #[test]
    fn list_renders_a_table() {
        let mut cancelling = row("w-2", "eval", 9);
        cancelling.cancel_requested = true;
        cancelling.status = WorkloadStatus::Running;
        cancelling.node = Some("gpu-a".into());
        let out = list_table(&[row("w-1", "train-1", 3), cancelling], 1_700_000_060_000);
        assert_eq!(
            out,
            "ID   NAME     STATUS                GPUS  MODEL  NODE   SUBMITTED BY  AGE  SEQ\n\
             w-1  train-1  Pending               2     H100   -      user:alice    60s  3\n\
             w-2  eval     Running (cancelling)  2     H100   gpu-a  user:alice    60s  9\n"
        );
    }

    #[test]
    fn get_shows_the_spec() {
        let out = detail(&row("w-1", "train-1", 3));
        assert!(out.contains("command:        sh -c 'echo hi'\n"), "{out}");
        assert!(out.contains("submitted:      2023-11-14T22:13:20.000Z (seq 3)\n"), "{out}");
        assert!(out.contains("gpu model:      H100\n"), "{out}");
    }

    #[test]
    fn cancel_takes_id_or_name_and_reason() {
        match parse(&["cancel", "train-1", "--reason", "oops"]).unwrap() {
            WorkloadCommand::Cancel { workload, reason } => {
                assert_eq!((workload.as_str(), reason.as_str()), ("train-1", "oops"))
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
