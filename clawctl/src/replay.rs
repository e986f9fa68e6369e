//! `clawctl replay` and `clawctl diff`: the cluster as it was at any
//! moment, the events between two moments with the change each made, and
//! one workload's whole story. Past states come from the server
//! (`GetState`: a checkpoint plus a bounded replay); the per-event changes
//! are folded here from that state with the same pure projection code the
//! server runs, so what is shown is exactly what the log says.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use claw_commands::{Event, EventRecord, ProposalAction, ProposalStatus};
use claw_projections::{ClusterView, ProposalRow, WorkloadRow};
use claw_proto::v1;
use serde::Serialize;

use crate::client::{decode_events, Client};
use crate::output::{self, emit, Format, Table};
use crate::state_diff::{self, Change};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReplayArgs {
    #[command(subcommand)]
    pub command: Option<ReplayCommand>,
    /// Show the whole cluster as it was at this moment: a seq (`1200`), an
    /// RFC 3339 time (`2026-11-21T03:12:00Z`) or a time relative to now
    /// (`-2h`, `-30m`, `-45s`, `-1d`).
    #[arg(long, value_name = "MOMENT", allow_hyphen_values = true, conflicts_with_all = ["from", "to"])]
    pub at: Option<String>,
    /// Step through the events after this moment (a seq is included)...
    #[arg(long, value_name = "MOMENT", allow_hyphen_values = true)]
    pub from: Option<String>,
    /// ...up to this one (default: the last event).
    #[arg(long, value_name = "MOMENT", allow_hyphen_values = true, requires = "from")]
    pub to: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// One workload's story: its intent, proposals and approvals, each
    /// placement with its reasons, every observation, to the end.
    Workload {
        /// Workload id or name.
        workload: String,
    },
}

/// `clawctl diff A B`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier moment (seq, RFC 3339 time or relative time).
    #[arg(allow_hyphen_values = true)]
    pub from: String,
    /// The later moment (default: now).
    #[arg(allow_hyphen_values = true)]
    pub to: Option<String>,
}

/// A point in the history, as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Right after this event.
    Seq(u64),
    /// Right after the last event stamped at or before this time (ms since the epoch).
    TimeMs(i64),
}

impl Moment {
    /// Parses `1200`, `2026-11-21T03:12:00Z`, `-2h` (relative to `now_ms`) or `now`.
    pub fn parse(text: &str, now_ms: i64) -> Result<Moment> {
        let t = text.trim();
        if t == "now" {
            return Ok(Moment::TimeMs(now_ms));
        }
        if let Ok(seq) = t.parse::<u64>() {
            return Ok(Moment::Seq(seq));
        }
        if let Some(rel) = t.strip_prefix('-') {
            let split = rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len());
            let (n, unit) = rel.split_at(split);
            let unit_ms: i64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => 0,
            };
            if let (Ok(n), true) = (n.parse::<i64>(), unit_ms > 0) {
                return Ok(Moment::TimeMs(now_ms.saturating_sub(n.saturating_mul(unit_ms))));
            }
        }
        if let Ok(time) = chrono::DateTime::parse_from_rfc3339(t) {
            return Ok(Moment::TimeMs(time.timestamp_millis()));
        }
        bail!(
            "{text:?} is not a moment: give a seq (1200), an RFC 3339 time (2026-11-21T03:12:00Z) \
             or a time relative to now (-2h, -30m, -45s, -1d)"
        )
    }

    fn to_pb(self) -> v1::get_state_request::At {
        match self {
            Moment::Seq(seq) => v1::get_state_request::At::Seq(seq),
            Moment::TimeMs(t) => v1::get_state_request::At::TimeMs(t),
        }
    }
}

/// A past state as the server returned it.
pub struct PastState {
    pub view: ClusterView,
    pub seq: u64,
    pub time_ms: i64,
    pub last_seq: u64,
    /// Microseconds the server took to build the state and to encode it.
    pub build_us: u64,
    pub encode_us: u64,
}

/// Which event a moment resolves to, without the state there.
pub struct StateHead {
    pub seq: u64,
    pub time_ms: i64,
}

impl Client {
    /// The cluster right after `at` (the present when `None`).
    pub async fn get_state(&self, at: Option<Moment>) -> Result<PastState> {
        self.state_with(at, v1::StateDetail::Full).await
    }

    /// [`Client::get_state`] without the scheduler's per-node verdicts
    /// (placements keep their summary and chosen node): a fraction of the
    /// bytes on a long history, and all that the tables print.
    pub async fn get_state_summaries(&self, at: Option<Moment>) -> Result<PastState> {
        self.state_with(at, v1::StateDetail::Summaries).await
    }

    /// The seq and time a moment resolves to (the present when `None`).
    pub async fn state_head(&self, at: Option<Moment>) -> Result<StateHead> {
        let r = self.request_state(at, v1::StateDetail::Head).await?;
        Ok(StateHead { seq: r.seq, time_ms: r.time_ms })
    }

    async fn state_with(&self, at: Option<Moment>, detail: v1::StateDetail) -> Result<PastState> {
        let response = self.request_state(at, detail).await?;
        let view: ClusterView =
            serde_json::from_str(&response.view_json).context("clawd sent a cluster state this clawctl cannot read")?;
        Ok(PastState {
            view,
            seq: response.seq,
            time_ms: response.time_ms,
            last_seq: response.last_seq,
            build_us: response.build_us,
            encode_us: response.encode_us,
        })
    }

    async fn request_state(&self, at: Option<Moment>, detail: v1::StateDetail) -> Result<v1::GetStateResponse> {
        let request =
            v1::GetStateRequest { at: at.map(Moment::to_pb), consistency: self.consistency(), detail: detail as i32 };
        Ok(self.grpc.clone().get_state(request).await?.into_inner())
    }

    /// Every event in `from..=to` matching `filter`, page by page.
    pub async fn events_between(
        &self,
        from: u64,
        to: u64,
        filter: Option<v1::EventFilter>,
        mut page: impl FnMut(Vec<EventRecord>) -> Result<()>,
    ) -> Result<()> {
        let mut next = from.max(1);
        while next <= to {
            let request = v1::ListEventsRequest {
                from_seq: next,
                to_seq: to,
                limit: 1000,
                filter: filter.clone(),
                consistency: self.consistency(),
            };
            let response = self.grpc.clone().list_events(request).await?.into_inner();
            let records = decode_events(&response.events)?;
            let Some(last) = records.last().map(|r| r.seq) else { break };
            next = last + 1;
            page(records)?;
        }
        Ok(())
    }
}

pub async fn run(client: &Client, format: Format, args: ReplayArgs) -> Result<()> {
    let now = output::now_ms();
    match (args.command, args.at, args.from) {
        (Some(ReplayCommand::Workload { workload }), _, _) => story(client, format, &workload).await,
        (None, Some(at), _) => {
            let at = Some(Moment::parse(&at, now)?);
            match format {
                // The tables show placements by their summary.
                Format::Table => emit(&render_state(&client.get_state_summaries(at).await?)),
                other => emit(&output::render_value(other, &client.get_state(at).await?.view)?),
            }
        }
        (None, None, Some(from)) => {
            let to = args.to.as_deref().map(|t| Moment::parse(t, now)).transpose()?;
            step(client, format, Moment::parse(&from, now)?, to).await
        }
        (None, None, None) => bail!("say when: --at MOMENT, --from MOMENT [--to MOMENT], or `workload ID`"),
    }
}

pub async fn diff(client: &Client, format: Format, args: DiffArgs) -> Result<()> {
    let now = output::now_ms();
    let a = client.get_state(Some(Moment::parse(&args.from, now)?)).await?;
    let b = client.get_state(args.to.as_deref().map(|t| Moment::parse(t, now)).transpose()?).await?;
    let changes = state_diff::diff(&a.view, &b.view);
    match format {
        Format::Table => {
            let mut out = format!(
                "from seq {} ({}) to seq {} ({}): {} change(s)\n",
                a.seq,
                moment_time(a.time_ms),
                b.seq,
                moment_time(b.time_ms),
                changes.len()
            );
            out.push_str(&state_diff::render(&changes));
            emit(&out)
        }
        other => emit(&output::render_value(other, &changes)?),
    }
}

fn moment_time(time_ms: i64) -> String {
    if time_ms == 0 {
        "before the first event".to_string()
    } else {
        output::time_ms(time_ms)
    }
}

/// The state printed with the same tables `clawctl` uses for the present,
/// with ages measured from that moment.
pub fn render_state(state: &PastState) -> String {
    let v = &state.view;
    let at = v.last_time_ms;
    let mut out = format!(
        "cluster at seq {} ({}); the log now ends at seq {}\n",
        state.seq,
        moment_time(state.time_ms),
        state.last_seq
    );
    out.push_str(&format!("\nMEMBERS ({})\n", v.members.len()));
    let mut members = Table::new(["ID", "ADDR", "ROLE", "ADDED SEQ", "ADDED BY"]);
    for m in v.members.values() {
        members.row([
            m.id.to_string(),
            m.addr.clone(),
            if m.voter { "voter" } else { "learner" }.to_string(),
            m.added_seq.to_string(),
            m.added_by.clone(),
        ]);
    }
    out.push_str(&members.render());
    let nodes: Vec<_> = v.nodes.values().cloned().collect();
    out.push_str(&format!("\nNODES ({})\n", nodes.len()));
    out.push_str(&crate::node::list_table(&nodes, at));
    let mut workloads: Vec<WorkloadRow> = v.workloads.values().cloned().collect();
    workloads.sort_by_key(|w| w.submitted_seq);
    out.push_str(&format!("\nWORKLOADS ({})\n", workloads.len()));
    out.push_str(&crate::workload::list_table(&workloads, at));
    let open: Vec<ProposalRow> = v.proposals.values().filter(|p| p.status == ProposalStatus::Open).cloned().collect();
    out.push_str(&format!("\nOPEN PROPOSALS ({})\n", open.len()));
    out.push_str(&crate::proposal::list_table(&open));
    let mut incidents: Vec<_> = v.incidents.values().filter(|i| i.status == "open").cloned().collect();
    incidents.sort_by_key(|i| std::cmp::Reverse(i.opened_seq));
    out.push_str(&format!("\nOPEN INCIDENTS ({})\n", incidents.len()));
    out.push_str(&crate::incident::list_table(&incidents, at));
    out
}

/// One step of `replay --from --to`, also its JSON/YAML form.
#[derive(Debug, Serialize)]
struct Step<'a> {
    seq: u64,
    time: String,
    actor: String,
    kind: &'static str,
    summary: String,
    changes: &'a [Change],
}

async fn step(client: &Client, format: Format, from: Moment, to: Option<Moment>) -> Result<()> {
    // The state just before the first event shown.
    let base = match from {
        Moment::Seq(seq) => client.get_state(Some(Moment::Seq(seq.saturating_sub(1)))).await?,
        at @ Moment::TimeMs(_) => client.get_state(Some(at)).await?,
    };
    let end = client.state_head(to).await?.seq;
    if end < base.seq + 1 {
        return emit(&format!("no events between seq {} and seq {end}", base.seq + 1));
    }
    let mut view = base.view;
    client
        .events_between(base.seq + 1, end, None, |records| {
            for rec in &records {
                let before = view.clone();
                view.apply(rec);
                let changes = state_diff::diff(&before, &view);
                let step = Step {
                    seq: rec.seq,
                    time: output::time_ms(rec.time_ms),
                    actor: rec.actor.to_string(),
                    kind: rec.event.kind(),
                    summary: crate::events::summary(&rec.event),
                    changes: &changes,
                };
                let text = match format {
                    Format::Table => {
                        let mut s =
                            format!("#{} {} {} {}: {}\n", step.seq, step.time, step.actor, step.kind, step.summary);
                        if changes.is_empty() {
                            s.push_str("    (no change to the cluster state)\n");
                        }
                        for line in state_diff::render(&changes).lines() {
                            s.push_str(&format!("    {line}\n"));
                        }
                        s
                    }
                    other => output::render_stream_item(other, &step)?,
                };
                emit(&text)?;
            }
            Ok(())
        })
        .await
}

/// One line of a workload's story, also its JSON/YAML form.
#[derive(Debug, Serialize)]
pub struct StoryLine {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub kind: &'static str,
    pub text: String,
    /// Placement reasons: one line per node considered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
}

async fn story(client: &Client, format: Format, id_or_name: &str) -> Result<()> {
    // Only to find the workload and where the log ends: the story's
    // placements come with their verdicts from the events.
    let present = client.get_state_summaries(None).await?;
    let row = present
        .view
        .find_workload(id_or_name)
        .or_else(|| {
            present.view.workloads.values().filter(|w| w.spec.name == id_or_name).max_by_key(|w| w.submitted_seq)
        })
        .cloned()
        .ok_or_else(|| anyhow!("workload {id_or_name:?} not found (see: clawctl workload list)"))?;
    let mut records = Vec::new();
    let filter = v1::EventFilter { kinds: Vec::new(), node: String::new(), workload: row.id.clone() };
    client
        .events_between(row.submitted_seq, present.seq, Some(filter), |page| {
            records.extend(page);
            Ok(())
        })
        .await?;
    // Decisions on proposals about this workload name the proposal, not
    // the workload: find them by id.
    let proposals: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::ProposalCreated { proposal_id, action: ProposalAction::CancelWorkload { .. }, .. } => {
                Some(proposal_id.clone())
            }
            _ => None,
        })
        .collect();
    if !proposals.is_empty() {
        let kinds = ["ProposalApproved", "ProposalRejected", "ProposalSuperseded"].map(String::from).to_vec();
        let filter = v1::EventFilter { kinds, node: String::new(), workload: String::new() };
        client
            .events_between(row.submitted_seq, present.seq, Some(filter), |page| {
                records.extend(page.into_iter().filter(|r| match &r.event {
                    Event::ProposalApproved { proposal_id, .. }
                    | Event::ProposalRejected { proposal_id, .. }
                    | Event::ProposalSuperseded { proposal_id, .. } => proposals.contains(proposal_id),
                    _ => false,
                }));
                Ok(())
            })
            .await?;
        records.sort_by_key(|r| r.seq);
    }
    let lines: Vec<StoryLine> = records.iter().map(story_line).collect();
    match format {
        Format::Table => {
            let mut out = format!(
                "workload {} ({}), now {}{}\n",
                row.id,
                row.spec.name,
                row.status.as_str(),
                row.exit_code.map(|c| format!(" with exit code {c}")).unwrap_or_default()
            );
            for l in &lines {
                out.push_str(&format!("#{:<6} {}  {:<22} {}\n", l.seq, l.time, l.actor, l.text));
                for d in &l.detail {
                    out.push_str(&format!("{:>10}{d}\n", ""));
                }
            }
            emit(&out)
        }
        other => emit(&output::render_value(other, &lines)?),
    }
}

fn story_line(rec: &EventRecord) -> StoryLine {
    let mut detail = Vec::new();
    let text = match &rec.event {
        Event::WorkloadSubmitted { spec, .. } => {
            let mut s = format!("submitted {:?}: image {}, {} GPU(s)", spec.name, spec.image, spec.gpus);
            if let Some(model) = &spec.gpu_model {
                s.push_str(&format!(" of model {model}"));
            }
            if !spec.command.is_empty() {
                s.push_str(&format!(", command {}", output::shell_join(&spec.command)));
            }
            s
        }
        Event::WorkloadPlaced { node, gpu_uuids, placement, .. } => {
            for v in &placement.considered {
                let verdict = match (&v.failed_filter, placement.chosen.as_deref() == Some(v.node.as_str())) {
                    (Some(f), _) => format!("failed {f}"),
                    (None, true) => "chosen".to_string(),
                    (None, false) => "fits".to_string(),
                };
                let score = v.score.map(|s| format!(" score {s:.3}")).unwrap_or_default();
                detail.push(format!("{}: {verdict}{score} {}", v.node, v.detail).trim_end().to_string());
            }
            let gpus = if gpu_uuids.is_empty() { "no GPUs".to_string() } else { gpu_uuids.join(", ") };
            format!("placed on {node} ({gpus}) by {}: {}", placement.strategy, placement.summary)
        }
        Event::WorkloadUnschedulable { placement, .. } => format!("cannot be placed yet: {}", placement.summary),
        Event::WorkloadStarted { node, .. } => format!("started on {node}"),
        Event::WorkloadExited { node, exit_code, oom_killed, .. } => format!(
            "exited on {node} with code {exit_code}{}",
            if *oom_killed { " (killed by the OOM killer)" } else { "" }
        ),
        Event::WorkloadLogChunk { stream, data, .. } => {
            format!("{stream}: {}", output::truncate(data.trim_end(), 80).replace('\n', "⏎"))
        }
        Event::WorkloadCancelRequested { reason, .. } => format!("cancel requested: {reason}"),
        Event::WorkloadLost { node, reason, requeued, .. } => {
            format!("lost with node {node} ({reason}); {}", if *requeued { "back to Pending" } else { "not requeued" })
        }
        Event::ProposalCreated { proposal_id, action, reason, .. } => {
            format!("proposal {proposal_id}: {action} because {reason}")
        }
        Event::ProposalApproved { proposal_id, comment } => format!("proposal {proposal_id} approved: {comment}"),
        Event::ProposalRejected { proposal_id, reason } => format!("proposal {proposal_id} rejected: {reason}"),
        Event::ProposalSuperseded { proposal_id, reason, .. } => {
            format!("proposal {proposal_id} superseded: {reason}")
        }
        other => crate::events::summary(other),
    };
    StoryLine {
        seq: rec.seq,
        time: output::time_ms(rec.time_ms),
        actor: rec.actor.to_string(),
        kind: rec.event.kind(),
        text,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn moments_parse_as_seq_time_or_relative() {
        assert_eq!(Moment::parse("1200", NOW).unwrap(), Moment::Seq(1200));
        assert_eq!(Moment::parse("-2h", NOW).unwrap(), Moment::TimeMs(NOW - 7_200_000));
        assert_eq!(Moment::parse("-30m", NOW).unwrap(), Moment::TimeMs(NOW - 1_800_000));
        assert_eq!(Moment::parse("-1d", NOW).unwrap(), Moment::TimeMs(NOW - 86_400_000));
        assert_eq!(Moment::parse("now", NOW).unwrap(), Moment::TimeMs(NOW));
        assert_eq!(
            Moment::parse("2026-11-21T03:12:00Z", NOW).unwrap(),
            Moment::TimeMs(
                chrono::DateTime::parse_from_rfc3339("2026-11-21T03:12:00+00:00").unwrap().timestamp_millis()
            )
        );
        let err = Moment::parse("yesterday", NOW).unwrap_err().to_string();
        assert!(err.contains("\"yesterday\" is not a moment") && err.contains("-2h"), "{err}");
        assert!(Moment::parse("-2w", NOW).is_err());
    }

    #[test]
    fn placement_story_lists_each_node_considered() {
        use claw_commands::{Actor, NodeVerdict, Placement, GENESIS_HASH};
        let placement = Placement {
            strategy: "binpack".into(),
            chosen: Some("gpu-a".into()),
            summary: "1 of 2 nodes fit".into(),
            considered: vec![
                NodeVerdict { node: "gpu-a".into(), failed_filter: None, score: Some(0.5), detail: String::new() },
                NodeVerdict {
                    node: "gpu-b".into(),
                    failed_filter: Some("gpu_count".into()),
                    score: None,
                    detail: "has 0 free".into(),
                },
            ],
        };
        let event = Event::WorkloadPlaced {
            workload_id: "w-1".into(),
            node: "gpu-a".into(),
            gpu_uuids: vec!["GPU-0".into()],
            placement,
        };
        let rec =
            EventRecord::seal(7, 7, NOW, Actor::system(), String::new(), String::new(), event, GENESIS_HASH.into());
        let line = story_line(&rec);
        assert_eq!(line.text, "placed on gpu-a (GPU-0) by binpack: 1 of 2 nodes fit");
        assert_eq!(line.detail, vec!["gpu-a: chosen score 0.500", "gpu-b: failed gpu_count has 0 free"]);
    }
}
