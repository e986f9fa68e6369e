//! `clawctl member list|add|promote`, and the members table that
//! `clawctl status` shares.

use anyhow::{bail, Result};
use clap::Subcommand;
use claw_proto::v1;
use serde::Serialize;

use crate::client::Client;
use crate::output::{self, emit, Format, Table};

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the cluster's members as the contacted member sees them.
    List,
    /// Add a member as a learner, or straight to voter with --voter.
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long, value_name = "HOST:PORT")]
        addr: String,
        #[arg(long)]
        voter: bool,
    },
    /// Make a member a voter (adding it first if it is new).
    Promote {
        #[arg(long)]
        id: u64,
        #[arg(long, value_name = "HOST:PORT")]
        addr: String,
    },
}

/// A serialisable copy of `v1::Member` (prost types do not derive serde).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberOut {
    pub id: u64,
    pub addr: String,
    pub role: String,
    pub leader: bool,
    pub matched_index: u64,
}

impl From<&v1::Member> for MemberOut {
    fn from(m: &v1::Member) -> Self {
        MemberOut {
            id: m.id,
            addr: m.addr.clone(),
            role: m.role.clone(),
            leader: m.leader,
            matched_index: m.matched_index,
        }
    }
}

impl MemberCommand {
    /// The AddMember request; `promote` is an add with `voter` set, which
    /// the server treats as "promote if already a learner".
    pub fn add_request(&self) -> Result<Option<v1::AddMemberRequest>> {
        let (id, addr, voter) = match self {
            MemberCommand::List => return Ok(None),
            MemberCommand::Add { id, addr, voter } => (*id, addr, *voter),
            MemberCommand::Promote { id, addr } => (*id, addr, true),
        };
        if id == 0 {
            bail!("--id must be at least 1 (0 is not a valid Raft member id)");
        }
        if addr.trim().is_empty() {
            bail!("--addr must not be empty");
        }
        Ok(Some(v1::AddMemberRequest { id, addr: addr.clone(), voter }))
    }
}

pub async fn run(client: &Client, format: Format, command: MemberCommand) -> Result<()> {
    let members = match command.add_request()? {
        None => client.cluster_status().await?.members,
        Some(request) => client.grpc.clone().add_member(request).await?.into_inner().members,
    };
    let members: Vec<MemberOut> = members.iter().map(MemberOut::from).collect();
    match format {
        Format::Table => emit(&members_table(&members)),
        other => emit(&output::render_value(other, &members)?),
    }
}

pub fn members_table(members: &[MemberOut]) -> String {
    let mut table = Table::new(["ID", "ADDR", "ROLE", "LEADER", "MATCHED"]);
    for m in members {
        table.row([
            m.id.to_string(),
            m.addr.clone(),
            m.role.clone(),
            if m.leader { "*".to_string() } else { String::new() },
            m.matched_index.to_string(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: MemberCommand,
    }

    fn request(argv: &[&str]) -> Result<Option<v1::AddMemberRequest>> {
        let cli = Cli::try_parse_from(std::iter::once("member").chain(argv.iter().copied()))?;
        cli.command.add_request()
    }

    #[test]
    fn add_and_promote_build_add_member() {
        let r = request(&["add", "--id", "2", "--addr", "10.0.0.2:7400"]).unwrap().unwrap();
        assert_eq!((r.id, r.addr.as_str(), r.voter), (2, "10.0.0.2:7400", false));
        let r = request(&["add", "--id", "2", "--addr", "h:1", "--voter"]).unwrap().unwrap();
        assert!(r.voter);
        let r = request(&["promote", "--id", "3", "--addr", "h:1"]).unwrap().unwrap();
        assert_eq!((r.id, r.voter), (3, true));
        assert!(request(&["list"]).unwrap().is_none());
        assert!(request(&["add", "--id", "0", "--addr", "h:1"]).is_err());
        assert!(request(&["promote", "--id", "3"]).is_err());
    }

    #[test]
    fn table_marks_the_leader() {
        let members = vec![
            MemberOut { id: 1, addr: "a:7400".into(), role: "voter".into(), leader: true, matched_index: 42 },
            MemberOut { id: 2, addr: "b:7400".into(), role: "learner".into(), leader: false, matched_index: 40 },
        ];
        assert_eq!(
            members_table(&members),
            "ID  ADDR    ROLE     LEADER  MATCHED\n\
             1   a:7400  voter    *       42\n\
             2   b:7400  learner          40\n"
        );
    }
}
