//! `clawctl`, the operator's CLI for Clawbernetes: a thin gRPC client of
//! `clawd`'s `claw.v1` API. It holds no cluster state and no rules; every
//! write is a command the server decides on, every read a projection row or
//! stored event the server returns.

mod bench;
mod bench_history;
mod bench_schedule;
mod client;
mod events;
mod explain;
mod incident;
mod member;
mod node;
mod output;
mod proposal;
mod replay;
mod sql;
mod state_diff;
mod status;
#[cfg(test)]
mod testing;
mod top;
mod workload;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use claw_proto::v1::{self, submit_request};

use crate::client::Target;
use crate::output::{print_outcome, Format};

// The same allocator as clawd; `clawctl bench` drives clawd and etcd alike.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "clawctl", version, about = "Operate a Clawbernetes GPU cluster")]
struct Cli {
    /// Address of any clawd member.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CLAW_SERVER",
        default_value = "127.0.0.1:7400",
        value_name = "HOST:PORT"
    )]
    server: String,
    /// Who is acting: a user name, or `kind:name` (e.g. scheduler:binpack).
    /// Sent as the `claw-actor` metadata on every request. Default: $USER,
    /// else "unknown".
    #[arg(long = "as", global = true, help_heading = "Global options", value_name = "NAME")]
    actor: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, help_heading = "Global options", value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Read from the contacted member's applied state without confirming
    /// leadership (faster; may lag).
    #[arg(long, global = true, help_heading = "Global options")]
    stale: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Raft and log status of the contacted member, and the members.
    Status,
    /// Record a natural-language intent in the log.
    Intent {
        /// The intent, as said; several words are joined with spaces.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
        text: Vec<String>,
    },
    /// Submit, list, inspect and cancel workloads.
    #[command(subcommand)]
    Workload(workload::WorkloadCommand),
    /// List, follow or verify the event log.
    Events(events::EventsArgs),
    /// Create, list and decide proposals.
    #[command(subcommand)]
    Proposal(proposal::ProposalCommand),
    /// List, inspect and drain nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// List, add and promote control-plane members.
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// The cluster as it was at any moment, the events between two moments
    /// with the change each made, or one workload's whole story.
    Replay(replay::ReplayArgs),
    /// The net difference in cluster state between two moments.
    Diff(replay::DiffArgs),
    /// Run SQL over the history and the projections.
    Sql(sql::SqlArgs),
    /// Write the history out for other tools (Parquet, JSON lines).
    #[command(subcommand)]
    Export(sql::ExportCommand),
    /// List, inspect and resolve incidents the detectors opened.
    #[command(subcommand)]
    Incident(incident::IncidentCommand),
    /// The latest GPU readings per node or per GPU, busiest first.
    #[command(subcommand)]
    Top(top::TopCommand),
    /// Measure the cluster.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // `clawctl events | head` closing the pipe is not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", client::describe_error(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let actor = actor_or_default(cli.actor, os_user());
    let target = Target { server: cli.server, actor, stale: cli.stale };
    let format = cli.output;
    let connect = || target.connect();
    match cli.command {
        Cmd::Status => status::run(&connect().await?, format).await,
        Cmd::Intent { text } => {
            let command = submit_request::Command::StateIntent(v1::StateIntent { text: text.join(" ") });
            let outcome = connect().await?.submit(None, command).await?;
            print_outcome(format, &outcome, |o| format!("intent recorded ({}){}", o.seq_text(), o.duplicate_note()))
        }
        Cmd::Workload(command) => workload::run(&connect().await?, format, command).await,
        Cmd::Events(args) => events::run(&connect().await?, format, args).await,
        Cmd::Proposal(command) => proposal::run(&connect().await?, format, command).await,
        Cmd::Node(command) => node::run(&connect().await?, format, command).await,
        Cmd::Member(command) => member::run(&connect().await?, format, command).await,
        Cmd::Replay(args) => replay::run(&connect().await?, format, args).await,
        Cmd::Diff(args) => replay::diff(&connect().await?, format, args).await,
        Cmd::Sql(args) => sql::run(&connect().await?, format, args).await,
        Cmd::Export(command) => sql::export(&connect().await?, command).await,
        Cmd::Incident(command) => incident::run(&connect().await?, format, command).await,
        Cmd::Top(command) => top::run(&connect().await?, format, command).await,
        // The bench opens its own connections, several of them.
        Cmd::Bench(command) => bench::run(&target, format, command).await,
    }
}

/// `--as`, else the OS user, else "unknown". An empty $USER (as in some
/// containers) counts as unset rather than as an invalid actor.
fn actor_or_default(flag: Option<String>, user: Option<String>) -> String {
    flag.or(user.filter(|u| !u.is_empty())).unwrap_or_else(|| "unknown".to_string())
}

/// The OS user: $USER or $LOGNAME, else the name /etc/passwd gives the
/// process's uid (shells in containers often leave $USER unset).
fn os_user() -> Option<String> {
    let env = ["USER", "LOGNAME"].iter().find_map(|k| std::env::var(k).ok().filter(|u| !u.is_empty()));
    env.or_else(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.to_string();
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == uid).then(|| name.to_string())
        })
    })
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "clawctl", "workload", "list", "-o", "yaml", "--as", "bob", "--stale", "--server", "h:1",
        ])
        .unwrap();
        assert_eq!(
            (cli.output, cli.actor.as_deref(), cli.stale, cli.server.as_str()),
            (Format::Yaml, Some("bob"), true, "h:1")
        );
        let target = Target { server: cli.server, actor: "bob".into(), stale: cli.stale };
        assert_eq!(target.consistency(), v1::Consistency::Stale as i32);
    }

    #[test]
    fn the_actor_defaults_to_the_os_user() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(actor_or_default(some("bob"), some("alice")), "bob");
        assert_eq!(actor_or_default(None, some("alice")), "alice");
        assert_eq!(actor_or_default(None, some("")), "unknown");
        assert_eq!(actor_or_default(None, None), "unknown");
    }

    #[test]
    fn intent_joins_words() {
        let cli = Cli::try_parse_from(["clawctl", "intent", "keep", "H100s", "busy"]).unwrap();
        let Cmd::Intent { text } = cli.command else { panic!("not an intent") };
        assert_eq!(text.join(" "), "keep H100s busy");
        assert!(Cli::try_parse_from(["clawctl", "intent"]).is_err());
    }

    #[test]
    fn replay_takes_a_moment_a_range_or_a_workload() {
        let cli = Cli::try_parse_from(["clawctl", "replay", "--at", "-2h"]).unwrap();
        let Cmd::Replay(args) = cli.command else { panic!("not replay") };
        assert_eq!(args.at.as_deref(), Some("-2h"));
        let cli = Cli::try_parse_from(["clawctl", "replay", "--from", "10", "--to", "20"]).unwrap();
        let Cmd::Replay(args) = cli.command else { panic!("not replay") };
        assert_eq!((args.from.as_deref(), args.to.as_deref()), (Some("10"), Some("20")));
        let cli = Cli::try_parse_from(["clawctl", "replay", "workload", "train-1"]).unwrap();
        let Cmd::Replay(args) = cli.command else { panic!("not replay") };
        assert!(matches!(args.command, Some(replay::ReplayCommand::Workload { .. })));
        assert!(Cli::try_parse_from(["clawctl", "replay", "--at", "5", "--from", "1"]).is_err());
        assert!(Cli::try_parse_from(["clawctl", "replay", "--to", "5"]).is_err());
        let cli = Cli::try_parse_from(["clawctl", "diff", "10", "-1h"]).unwrap();
        let Cmd::Diff(args) = cli.command else { panic!("not diff") };
        assert_eq!((args.from.as_str(), args.to.as_deref()), ("10", Some("-1h")));
    }

    #[test]
    fn events_takes_flags_or_verify() {
        let cli = Cli::try_parse_from(["clawctl", "events", "--from", "3", "--follow"]).unwrap();
        let Cmd::Events(args) = cli.command else { panic!("not events") };
        assert!(args.command.is_none() && args.list.follow && args.list.from == 3);
        let cli = Cli::try_parse_from(["clawctl", "events", "verify"]).unwrap();
        let Cmd::Events(args) = cli.command else { panic!("not events") };
        assert!(matches!(args.command, Some(events::EventsCommand::Verify)));
    }
}
