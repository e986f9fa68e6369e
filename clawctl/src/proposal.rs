//! `clawctl proposal create|list|get|approve|reject`.

use anyhow::{bail, Result};
use clap::{ArgGroup, Args, Subcommand};
use claw_commands::Event;
use claw_projections::ProposalRow;
use claw_proto::v1::{self, proposal_action::Action, submit_request::Command};

use crate::client::{Client, SubmitOutcome};
use crate::output::{self, emit, key_values, or_dash, print_outcome, time_ms, Format, Table};

#[derive(Debug, Subcommand)]
pub enum ProposalCommand {
    /// Propose an action for someone to approve.
    Create(CreateArgs),
    /// List proposals.
    List,
    /// Show one proposal.
    Get { id: String },
    /// Approve a proposal; fails if the state changed since its basis.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject a proposal.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("action").required(true).args(["cancel_workload", "drain_node"])))]
pub struct CreateArgs {
    /// Propose cancelling this workload.
    #[arg(long, value_name = "WORKLOAD")]
    pub cancel_workload: Option<String>,
    /// Propose draining this node.
    #[arg(long, value_name = "NODE")]
    pub drain_node: Option<String>,
    /// Why; shown to whoever approves.
    #[arg(long)]
    pub reason: String,
    /// The seq the proposal is based on; default: the current last seq.
    #[arg(long, default_value_t = 0)]
    pub basis_seq: u64,
    /// Proposal id; by default the server derives one from the command id.
    #[arg(long)]
    pub id: Option<String>,
}

impl CreateArgs {
    pub fn to_command(&self) -> Result<Command> {
        // The ArgGroup already makes clap require exactly one of the two.
        let action = match (&self.cancel_workload, &self.drain_node) {
            (Some(workload), None) => Action::CancelWorkload(workload.clone()),
            (None, Some(node)) => Action::DrainNode(node.clone()),
            _ => bail!("give exactly one of --cancel-workload and --drain-node"),
        };
        Ok(Command::CreateProposal(v1::CreateProposal {
            action: Some(v1::ProposalAction { action: Some(action) }),
            basis_seq: self.basis_seq,
            reason: self.reason.clone(),
            proposal_id: self.id.clone().unwrap_or_default(),
        }))
    }
}

pub async fn run(client: &Client, format: Format, command: ProposalCommand) -> Result<()> {
    match command {
        ProposalCommand::Create(args) => {
            let outcome = client.submit(None, args.to_command()?).await?;
            print_outcome(format, &outcome, |o| {
                format!("proposal {} created ({}){}", o.object_id, o.seq_text(), o.duplicate_note())
            })
        }
        ProposalCommand::List => {
            let mut rows: Vec<ProposalRow> = client.list_objects("proposal").await?;
            rows.sort_by_key(|p| p.created_seq);
            match format {
                Format::Table => emit(&list_table(&rows)),
                other => emit(&output::render_value(other, &rows)?),
            }
        }
        ProposalCommand::Get { id } => {
            let row: ProposalRow =
                client.get_object("proposal", &id).await.map_err(|e| e.or_not_found("proposal", &id))?;
            match format {
                Format::Table => emit(&detail(&row)),
                other => emit(&output::render_value(other, &row)?),
            }
        }
        ProposalCommand::Approve { id, comment } => {
            let command = Command::ApproveProposal(v1::ApproveProposal { proposal_id: id, comment });
            let outcome = client.submit(None, command).await?;
            // Print what happened first, so json/yaml users see the events
            // even when the approval lost to a state change.
            print_outcome(format, &outcome, SubmitOutcome::events_lines)?;
            check_superseded(&outcome)
        }
        ProposalCommand::Reject { id, reason } => {
            let command = Command::RejectProposal(v1::RejectProposal { proposal_id: id, reason });
            let outcome = client.submit(None, command).await?;
            print_outcome(format, &outcome, SubmitOutcome::events_lines)
        }
    }
}

/// An approval of a stale proposal is answered with `ProposalSuperseded`
/// instead of `ProposalApproved`; that is a failure for the approver.
pub fn check_superseded(outcome: &SubmitOutcome) -> Result<()> {
    for record in &outcome.events {
        if let Event::ProposalSuperseded { proposal_id, reason, changed_seq } = &record.event {
            bail!(
                "proposal {proposal_id} was superseded: {reason} (state changed at seq {changed_seq}; \
                 create a new proposal against the current state)"
            );
        }
    }
    Ok(())
}

pub fn list_table(rows: &[ProposalRow]) -> String {
    let mut table = Table::new(["ID", "STATUS", "ACTION", "BASIS", "CREATED BY", "SEQ", "REASON"]);
    for p in rows {
        table.row([
            p.id.clone(),
            p.status.as_str().to_string(),
            p.action.to_string(),
            p.basis_seq.to_string(),
            p.created_by.clone(),
            p.created_seq.to_string(),
            output::truncate(&p.reason, 60),
        ]);
    }
    table.render()
}

pub fn detail(p: &ProposalRow) -> String {
    key_values(&[
        ("id", p.id.clone()),
        ("status", p.status.as_str().to_string()),
        ("action", p.action.to_string()),
        ("basis seq", p.basis_seq.to_string()),
        ("reason", p.reason.clone()),
        ("created by", p.created_by.clone()),
        ("created", format!("{} (seq {})", time_ms(p.created_ms), p.created_seq)),
        ("decided by", or_dash(p.decided_by.as_deref())),
        ("decided", p.decided_ms.map(time_ms).unwrap_or_else(|| "-".to_string())),
        ("decision note", or_dash(p.decision_note.as_deref().filter(|n| !n.is_empty()))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use claw_commands::{Actor, EventRecord, ProposalAction, ProposalStatus};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ProposalCommand,
    }

    fn parse(argv: &[&str]) -> Result<ProposalCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("proposal").chain(argv.iter().copied())).map(|c| c.command)
    }

    fn create(argv: &[&str]) -> v1::CreateProposal {
        match parse(argv).unwrap() {
            ProposalCommand::Create(args) => match args.to_command().unwrap() {
                Command::CreateProposal(p) => p,
                other => panic!("built {other:?}"),
            },
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn create_needs_exactly_one_action() {
        let p = create(&["create", "--cancel-workload", "w-1", "--reason", "stuck", "--basis-seq", "7", "--id", "p-1"]);
        assert_eq!(p.action.unwrap().action, Some(Action::CancelWorkload("w-1".into())));
        assert_eq!((p.basis_seq, p.reason.as_str(), p.proposal_id.as_str()), (7, "stuck", "p-1"));
        let p = create(&["create", "--drain-node", "gpu-a", "--reason", "ecc errors"]);
        assert_eq!(p.action.unwrap().action, Some(Action::DrainNode("gpu-a".into())));
        assert_eq!((p.basis_seq, p.proposal_id.as_str()), (0, ""));

        assert!(parse(&["create", "--reason", "r"]).is_err());
        assert!(parse(&["create", "--cancel-workload", "w", "--drain-node", "n", "--reason", "r"]).is_err());
        assert!(parse(&["create", "--cancel-workload", "w"]).is_err());
    }

    #[test]
    fn reject_requires_a_reason() {
        assert!(parse(&["reject", "p-1"]).is_err());
        assert!(parse(&["reject", "p-1", "--reason", "no"]).is_ok());
    }

    fn outcome(event: Event) -> SubmitOutcome {
        let record = EventRecord::seal(
            5,
            5,
            0,
            Actor::user("bob"),
            "c".into(),
            "c".into(),
            event,
            claw_commands::GENESIS_HASH.into(),
        );
        SubmitOutcome {
            command_id: "c".into(),
            object_id: String::new(),
            duplicate: false,
            raft_index: 5,
            seqs: vec![5],
            events: vec![record],
        }
    }

    #[test]
    fn superseded_approval_fails_with_its_reason() {
        let o = outcome(Event::ProposalSuperseded {
            proposal_id: "p-1".into(),
            reason: "workload w-1 changed".into(),
            changed_seq: 4,
        });
        let err = check_superseded(&o).unwrap_err().to_string();
        assert!(err.contains("p-1") && err.contains("workload w-1 changed") && err.contains("seq 4"), "{err}");
        let o = outcome(Event::ProposalApproved { proposal_id: "p-1".into(), comment: String::new() });
        assert!(check_superseded(&o).is_ok());
        assert_eq!(o.events_lines(), "seq 5 ProposalApproved p-1");
    }

    #[test]
    fn list_renders_actions() {
        let row = ProposalRow {
            id: "p-1".into(),
            action: ProposalAction::DrainNode { node: "gpu-a".into() },
            basis_seq: 3,
            reason: "ecc".into(),
            status: ProposalStatus::Open,
            created_by: "user:bob".into(),
            created_ms: 0,
            created_seq: 4,
            decided_by: None,
            decided_ms: None,
            decision_note: None,
        };
        assert_eq!(
            list_table(std::slice::from_ref(&row)),
            "ID   STATUS  ACTION            BASIS  CREATED BY  SEQ  REASON\n\
             p-1  Open    drain node gpu-a  3      user:bob    4    ecc\n"
        );
        assert!(detail(&row).contains("decided by:    -\n"));
    }
}
