//! `clawctl status`: the contacted member's view of Raft and the log.

use anyhow::Result;
use claw_proto::v1;
use serde::Serialize;

use crate::client::Client;
use crate::member::{members_table, MemberOut};
use crate::output::{self, emit, key_values, Format};

/// A serialisable copy of `ClusterStatusResponse`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusOut {
    pub member_id: u64,
    pub state: String,
    pub leader_id: u64,
    pub leader_addr: String,
    pub term: u64,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub last_seq: u64,
    pub last_hash: String,
    pub members: Vec<MemberOut>,
}

impl From<v1::ClusterStatusResponse> for StatusOut {
    fn from(s: v1::ClusterStatusResponse) -> Self {
        StatusOut {
            member_id: s.member_id,
            state: s.state,
            leader_id: s.leader_id,
            leader_addr: s.leader_addr,
            term: s.term,
            last_log_index: s.last_log_index,
            committed_index: s.committed_index,
            applied_index: s.applied_index,
            last_seq: s.last_seq,
            last_hash: s.last_hash,
            members: s.members.iter().map(MemberOut::from).collect(),
        }
    }
}

pub async fn run(client: &Client, format: Format) -> Result<()> {
    let status = StatusOut::from(client.cluster_status().await?);
    match format {
        Format::Table => emit(&render(&status)),
        other => emit(&output::render_value(other, &status)?),
    }
}

pub fn render(s: &StatusOut) -> String {
    // Raft ids start at 1, so 0 means no leader is known (an election is
    // under way or this member is cut off).
    let leader = if s.leader_id == 0 {
        "none known".to_string()
    } else if s.leader_addr.is_empty() {
        s.leader_id.to_string()
    } else {
        format!("{} ({})", s.leader_id, s.leader_addr)
    };
    let mut out = key_values(&[
        ("member", s.member_id.to_string()),
        ("state", s.state.clone()),
        ("leader", leader),
        ("term", s.term.to_string()),
        ("last log index", s.last_log_index.to_string()),
        ("committed", s.committed_index.to_string()),
        ("applied", s.applied_index.to_string()),
        ("last event seq", s.last_seq.to_string()),
        ("last hash", if s.last_hash.is_empty() { "-".into() } else { output::short_hash(&s.last_hash).to_string() }),
    ]);
    out.push('\n');
    out.push_str(&members_table(&s.members));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_raft_and_members() {
        let s = StatusOut {
            member_id: 1,
            state: "Leader".into(),
            leader_id: 1,
            leader_addr: "127.0.0.1:7400".into(),
            term: 3,
            last_log_index: 12,
            committed_index: 12,
            applied_index: 11,
            last_seq: 9,
            last_hash: "abcdef0123456789".into(),
            members: vec![MemberOut {
                id: 1,
                addr: "127.0.0.1:7400".into(),
                role: "voter".into(),
                leader: true,
                matched_index: 12,
            }],
        };
        assert_eq!(
            render(&s),
            "member:         1\n\
             state:          Leader\n\
             leader:         1 (127.0.0.1:7400)\n\
             term:           3\n\
             last log index: 12\n\
             committed:      12\n\
             applied:        11\n\
             last event seq: 9\n\
             last hash:      abcdef012345\n\
             \n\
             ID  ADDR            ROLE   LEADER  MATCHED\n\
             1   127.0.0.1:7400  voter  *       12\n"
        );
        let json = output::render_value(Format::Json, &s).unwrap();
        assert!(json.contains("\"leader_addr\": \"127.0.0.1:7400\""));
    }
}
