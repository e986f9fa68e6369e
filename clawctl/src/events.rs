//! `clawctl events`: list, follow and verify the event log.

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use claw_commands::{verify_chain, Event, EventRecord, GENESIS_HASH};
use claw_proto::v1;
use serde::Serialize;

use crate::client::{decode_events, Client};
use crate::output::{self, emit, format_row, Format};

/// Events per ListEvents call; the server's own cap.
const PAGE: u64 = 1000;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub command: Option<EventsCommand>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Read every event and check the hash chain from the genesis hash.
    Verify,
}

#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct ListArgs {
    /// First seq to show.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Last seq to show (inclusive).
    #[arg(long)]
    pub to: Option<u64>,
    /// Show at most this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Only events of this kind (repeatable).
    #[arg(long = "kind", value_name = "KIND", value_parser = kind_parser())]
    pub kinds: Vec<String>,
    /// Only events about this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only events about this workload id.
    #[arg(long)]
    pub workload: Option<String>,
    /// Keep watching and print new events as they are committed, until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

fn kind_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Event::KINDS.iter().copied())
}

impl ListArgs {
    pub fn filter(&self) -> Option<v1::EventFilter> {
        if self.kinds.is_empty() && self.node.is_none() && self.workload.is_none() {
            return None;
        }
        Some(v1::EventFilter {
            kinds: self.kinds.clone(),
            node: self.node.clone().unwrap_or_default(),
            workload: self.workload.clone().unwrap_or_default(),
        })
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(to) = self.to {
            if to < self.from {
                bail!("--to {to} is before --from {}", self.from);
            }
        }
        if self.limit == Some(0) {
            bail!("--limit must be at least 1");
        }
        Ok(())
    }
}

/// Where paging stands: the next seq to ask for and how many events may
/// still be shown. Kept apart from the IO so the stopping rules are tested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pager {
    pub next: u64,
    pub to: Option<u64>,
    pub remaining: Option<u64>,
    /// The log (or the filtered part of it) has been read to its end.
    pub exhausted: bool,
}

impl Pager {
    pub fn new(args: &ListArgs) -> Self {
        Pager { next: args.from, to: args.to, remaining: args.limit, exhausted: false }
    }

    /// The request for the next page, or `None` when done.
    pub fn request(&self, filter: Option<v1::EventFilter>, consistency: i32) -> Option<v1::ListEventsRequest> {
        if self.done() {
            return None;
        }
        let limit = self.remaining.map_or(PAGE, |r| r.min(PAGE));
        Some(v1::ListEventsRequest {
            from_seq: self.next,
            to_seq: self.to.unwrap_or(0),
            limit: limit as u32,
            filter,
            consistency,
        })
    }

    /// Records a received page; returns how many of its events to show
    /// (a server that overshoots `limit` or `to` is cut back here).
    pub fn advance(&mut self, seqs: &[u64], last_seq: u64) -> usize {
        let mut shown = 0;
        for &seq in seqs {
            if self.done() || self.to.is_some_and(|to| seq > to) {
                break;
            }
            shown += 1;
            self.next = seq + 1;
            if let Some(r) = &mut self.remaining {
                *r -= 1;
            }
        }
        // An empty page, or one that reaches the log's end, is the end: the
        // server returns up to `limit` matching events, so fewer than asked
        // for with more left would be a server bug, not a reason to spin.
        if shown == 0 || self.next > last_seq {
            self.exhausted = true;
        }
        shown
    }

    pub fn done(&self) -> bool {
        self.exhausted || self.remaining == Some(0) || self.to.is_some_and(|to| self.next > to)
    }

    /// Whether an event seen while following is still wanted; counts it.
    pub fn take(&mut self, seq: u64) -> bool {
        if self.done() || self.to.is_some_and(|to| seq > to) {
            return false;
        }
        self.next = seq + 1;
        if let Some(r) = &mut self.remaining {
            *r -= 1;
        }
        true
    }
}

pub async fn run(client: &Client, format: Format, args: EventsArgs) -> Result<()> {
    match args.command {
        Some(EventsCommand::Verify) => verify(client, format).await,
        None if args.list.follow => follow(client, format, &args.list).await,
        None => list(client, format, &args.list).await,
    }
}

async fn list(client: &Client, format: Format, args: &ListArgs) -> Result<()> {
    let mut printer = Printer::new(format);
    // Events are printed page by page so a long history streams out
    // instead of being held in memory.
    for_each_page(client, args, |records| records.iter().try_for_each(|r| printer.print(r))).await?;
    printer.finish()
}

/// Pages through ListEvents as `args` asks, handing each page over.
pub async fn for_each_page(
    client: &Client,
    args: &ListArgs,
    mut page: impl FnMut(&[EventRecord]) -> Result<()>,
) -> Result<()> {
    args.validate()?;
    let mut pager = Pager::new(args);
    while let Some(request) = pager.request(args.filter(), client.consistency()) {
        let response = client.grpc.clone().list_events(request).await?.into_inner();
        let records = decode_events(&response.events)?;
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        let shown = pager.advance(&seqs, response.last_seq);
        page(&records[..shown])?;
    }
    Ok(())
}

async fn follow(client: &Client, format: Format, args: &ListArgs) -> Result<()> {
    args.validate()?;
    let mut printer = Printer::new(format);
    let mut pager = Pager::new(args);
    let request = v1::WatchRequest { from_seq: args.from, filter: args.filter() };
    let mut stream = client.grpc.clone().watch(request).await?.into_inner();
    // One listener for the whole loop: a fresh one per event would miss a
    // Ctrl-C that arrives while an event is being printed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let message = tokio::select! {
            message = stream.message() => message?,
            _ = &mut ctrl_c => return printer.finish(),
        };
        let Some(message) = message else {
            bail!("clawd closed the watch stream (resume with --from {})", pager.next);
        };
        let Some(event) = message.event else { continue };
        let record = claw_proto::event_from_pb(&event)?;
        if !pager.take(record.seq) {
            return printer.finish();
        }
        printer.print(&record)?;
        if pager.done() {
            return printer.finish();
        }
    }
}

/// Prints events as they come. The table has fixed column widths because a
/// followed stream cannot be measured in advance; wider cells just push the
/// line out.
pub struct Printer {
    format: Format,
    header_done: bool,
}

const WIDTHS: [usize; 5] = [7, 24, 18, 23, 0];

impl Printer {
    pub fn new(format: Format) -> Self {
        Printer { format, header_done: false }
    }

    pub fn print(&mut self, record: &EventRecord) -> Result<()> {
        if self.format == Format::Table && !self.header_done {
            emit(&header_line())?;
            self.header_done = true;
        }
        emit(&self.render(record)?)
    }

    pub fn render(&self, record: &EventRecord) -> Result<String> {
        match self.format {
            Format::Table => Ok(table_line(record)),
            other => output::render_stream_item(other, record),
        }
    }

    /// A table with no events still gets its header, so "nothing matched"
    /// reads differently from "clawctl printed nothing".
    fn finish(&mut self) -> Result<()> {
        if self.format == Format::Table && !self.header_done {
            emit(&header_line())?;
            self.header_done = true;
        }
        Ok(())
    }
}

fn header_line() -> String {
    let cells = ["SEQ", "TIME", "ACTOR", "KIND", "SUMMARY"].map(String::from);
    format_row(&cells, &WIDTHS)
}

pub fn table_line(record: &EventRecord) -> String {
    let cells = [
        record.seq.to_string(),
        output::time_ms(record.time_ms),
        record.actor.to_string(),
        record.event.kind().to_string(),
        summary(&record.event),
    ];
    format_row(&cells, &WIDTHS)
}

/// A one-line human summary of an event's payload.
pub fn summary(event: &Event) -> String {
    let with_reason = |head: String, label: &str, text: &str| {
        if text.is_empty() {
            head
        } else {
            format!("{head} {label}={}", quote(text))
        }
    };
    let line = match event {
        Event::WorkloadSubmitted { workload_id, spec } => {
            let mut s = format!("{workload_id} {} {} gpus={}", spec.name, spec.image, spec.gpus);
            if let Some(model) = &spec.gpu_model {
                s.push_str(&format!(" model={model}"));
            }
            s
        }
        Event::WorkloadCancelRequested { workload_id, reason } => with_reason(workload_id.clone(), "reason", reason),
        Event::NodeDrainRequested { node, reason } => with_reason(node.clone(), "reason", reason),
        Event::IntentStated { text } => quote(text),
        Event::ProposalCreated { proposal_id, action, basis_seq, reason } => {
            with_reason(format!("{proposal_id} {action} basis={basis_seq}"), "reason", reason)
        }
        Event::ProposalApproved { proposal_id, comment } => with_reason(proposal_id.clone(), "comment", comment),
        Event::ProposalRejected { proposal_id, reason } => with_reason(proposal_id.clone(), "reason", reason),
        Event::ProposalSuperseded { proposal_id, reason, changed_seq } => {
            with_reason(format!("{proposal_id} changed_seq={changed_seq}"), "reason", reason)
        }
        Event::NodeRegistered { node, capabilities } => {
            format!(
                "{node} cpus={} mem={}MB gpus={}",
                capabilities.cpus,
                capabilities.memory_mb,
                gpu_text(capabilities)
            )
        }
        Event::NodeHeartbeat { node } => node.clone(),
        Event::GpuMetricsObserved { node, samples } => {
            let util = if samples.is_empty() {
                0.0
            } else {
                samples.iter().map(|s| s.utilization_pct).sum::<f64>() / samples.len() as f64
            };
            format!("{node} samples={} util={util:.0}%", samples.len())
        }
        Event::WorkloadStarted { workload_id, node } => format!("{workload_id} on {node}"),
        Event::WorkloadExited { workload_id, node, exit_code, oom_killed } => {
            format!("{workload_id} on {node} exit={exit_code}{}", if *oom_killed { " oom_killed" } else { "" })
        }
        Event::WorkloadPlaced { workload_id, node, gpu_uuids, placement } => {
            format!("{workload_id} on {node} gpus={} {}", gpu_uuids.len(), placement.strategy)
        }
        Event::WorkloadUnschedulable { workload_id, placement } => format!("{workload_id}: {}", placement.summary),
        Event::WorkloadLogChunk { workload_id, node, stream, data } => {
            format!("{workload_id} on {node} {stream} {}B {}", data.len(), quote(data.trim_end()))
        }
        Event::NodeNotReady { node, reason } => with_reason(node.clone(), "reason", reason),
        Event::WorkloadLost { workload_id, node, reason, requeued } => with_reason(
            format!("{workload_id} on {node} {}", if *requeued { "requeued" } else { "lost" }),
            "reason",
            reason,
        ),
        Event::CommandRejected { command_kind, rejection } => format!("{command_kind}: {rejection}"),
        Event::MemberAdded { member_id, addr, voter } => {
            format!("member {member_id} {addr} {}", if *voter { "voter" } else { "learner" })
        }
        Event::GpuHealthCheckRequested { node, check_id } => format!("{check_id} on {node}"),
        Event::GpuHealthChecked { node, check_id, results, error } => match error {
            Some(e) => format!("{check_id} on {node} error={}", quote(e)),
            None => {
                let passed = results.iter().filter(|r| r.passed).count();
                let gflops: f64 = results.iter().map(|r| r.gflops).sum();
                format!("{check_id} on {node} passed={passed}/{} gflops={gflops:.1}", results.len())
            }
        },
        Event::IncidentOpened { incident_id, incident_kind, subject, summary, .. } => {
            format!("{incident_id} {incident_kind} {subject}: {summary}")
        }
        Event::IncidentResolved { incident_id, root_cause, resolution } => {
            format!("{incident_id} root_cause={} resolution={}", quote(root_cause), quote(resolution))
        }
    };
    output::truncate(&line, 100)
}

/// `2xH100`, `1xA100,1xH100`, or `0`.
pub fn gpu_text(capabilities: &claw_commands::NodeCapabilities) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for gpu in &capabilities.gpus {
        *counts.entry(gpu.model.as_str()).or_default() += 1;
    }
    if counts.is_empty() {
        return "0".to_string();
    }
    counts.iter().map(|(model, n)| format!("{n}x{model}")).collect::<Vec<_>>().join(",")
}

/// Free text quoted (and cut) so it stands apart from the structured parts.
fn quote(text: &str) -> String {
    format!("{:?}", output::truncate(text, 60))
}

/// `events verify`'s result, for `-o json|yaml`.
#[derive(Debug, Serialize)]
struct Verified {
    ok: bool,
    events: u64,
    head: String,
}

/// Checks the chain page by page, carrying the last hash and seq across
/// pages (`verify_chain` only sees one page at a time).
#[derive(Debug)]
pub struct ChainCheck {
    pub head: String,
    pub next_seq: u64,
    pub count: u64,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck { head: GENESIS_HASH.to_string(), next_seq: 1, count: 0 }
    }
}

impl ChainCheck {
    pub fn page(&mut self, records: &[EventRecord]) -> Result<()> {
        let Some(first) = records.first() else { return Ok(()) };
        if first.seq != self.next_seq {
            bail!(
                "hash chain broken: event seq {}: expected seq {} (the history has a gap{})",
                first.seq,
                self.next_seq,
                if self.next_seq == 1 { ", or its start was removed by retention" } else { "" }
            );
        }
        self.head = verify_chain(&self.head, records).map_err(|e| anyhow!("hash chain broken: {e}"))?;
        self.count += records.len() as u64;
        self.next_seq = first.seq + records.len() as u64;
        Ok(())
    }
}

async fn verify(client: &Client, format: Format) -> Result<()> {
    let check = verify_all(client).await?;
    match format {
        Format::Table => emit(&format!("hash chain OK: {} events, head {}", check.count, check.head)),
        other => emit(&output::render_value(other, &Verified { ok: true, events: check.count, head: check.head })?),
    }
}

/// Reads the whole log from seq 1 and checks it; Ok means the chain holds.
pub async fn verify_all(client: &Client) -> Result<ChainCheck> {
    let mut check = ChainCheck::default();
    loop {
        let request = v1::ListEventsRequest {
            from_seq: check.next_seq,
            to_seq: 0,
            limit: PAGE as u32,
            filter: None,
            consistency: client.consistency(),
        };
        let response = client.grpc.clone().list_events(request).await?.into_inner();
        let records = decode_events(&response.events)?;
        for (pb, record) in response.events.iter().zip(&records) {
            // The header fields sit outside the hash; a server that
            // disagrees with its own record is as suspect as a bad hash.
            if pb.seq != record.seq || pb.kind != record.event.kind() {
                bail!("hash chain broken: event seq {}: header does not match its record (seq {})", pb.seq, record.seq);
            }
        }
        check.page(&records)?;
        if check.next_seq > response.last_seq {
            return Ok(check);
        }
        if records.is_empty() {
            bail!("clawd stopped returning events at seq {} of {}", check.next_seq, response.last_seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{chain, FakeClaw};
    use clap::Parser;
    use claw_commands::WorkloadSpec;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        list: ListArgs,
    }

    fn args(argv: &[&str]) -> ListArgs {
        Cli::try_parse_from(std::iter::once("events").chain(argv.iter().copied())).unwrap().list
    }

    #[test]
    fn filters_and_ranges_become_the_request() {
        let a = args(&[
            "--from",
            "5",
            "--to",
            "9",
            "--kind",
            "WorkloadSubmitted",
            "--kind",
            "NodeHeartbeat",
            "--node",
            "n1",
        ]);
        let request = Pager::new(&a).request(a.filter(), 1).unwrap();
        assert_eq!(request.from_seq, 5);
        assert_eq!(request.to_seq, 9);
        assert_eq!(request.limit, 1000);
        assert_eq!(request.consistency, 1);
        let filter = request.filter.unwrap();
        assert_eq!(filter.kinds, vec!["WorkloadSubmitted", "NodeHeartbeat"]);
        assert_eq!(filter.node, "n1");
        assert_eq!(filter.workload, "");
        assert!(args(&[]).filter().is_none());
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let err = Cli::try_parse_from(["events", "--kind", "WorkloadSubmited"]).err().unwrap().to_string();
        assert!(err.contains("--kind"), "{err}");
    }

    #[test]
    fn paging_stops_at_limit() {
        let mut pager = Pager::new(&args(&["--limit", "1500"]));
        assert_eq!(pager.request(None, 0).unwrap().limit, 1000);
        let first: Vec<u64> = (1..=1000).collect();
        assert_eq!(pager.advance(&first, 5000), 1000);
        let request = pager.request(None, 0).unwrap();
        assert_eq!((request.from_seq, request.limit), (1001, 500));
        let second: Vec<u64> = (1001..=1500).collect();
        assert_eq!(pager.advance(&second, 5000), 500);
        assert!(pager.request(None, 0).is_none());
    }

    #[test]
    fn paging_stops_at_the_end_of_the_log_and_on_empty_pages() {
        let mut pager = Pager::new(&args(&[]));
        assert_eq!(pager.advance(&[1, 2, 3], 3), 3);
        assert!(pager.done());

        let mut pager = Pager::new(&args(&["--kind", "NodeHeartbeat"]));
        assert_eq!(pager.advance(&[], 10), 0);
        assert!(pager.done());
    }

    #[test]
    fn paging_cuts_a_server_that_overshoots() {
        let mut pager = Pager::new(&args(&["--to", "2"]));
        assert_eq!(pager.advance(&[1, 2, 3], 10), 2);
        assert!(pager.done());
    }

    #[test]
    fn following_honours_to_and_limit() {
        let mut pager = Pager::new(&args(&["--limit", "2"]));
        assert!(pager.take(7));
        assert!(pager.take(8));
        assert!(pager.done());
        let mut pager = Pager::new(&args(&["--to", "7"]));
        assert!(pager.take(7));
        assert!(!pager.take(8));
    }

    #[test]
    fn to_before_from_is_an_error() {
        assert!(args(&["--from", "5", "--to", "4"]).validate().is_err());
        assert!(args(&["--limit", "0"]).validate().is_err());
    }

    #[test]
    fn workload_submissions_summarise_the_spec() {
        let spec = WorkloadSpec {
            name: "train-1".into(),
            image: "busybox".into(),
            gpus: 2,
            gpu_model: Some("H100".into()),
            ..Default::default()
        };
        let event = Event::WorkloadSubmitted { workload_id: "w-123".into(), spec };
        assert_eq!(summary(&event), "w-123 train-1 busybox gpus=2 model=H100");
        let event = Event::WorkloadCancelRequested { workload_id: "w-1".into(), reason: String::new() };
        assert_eq!(summary(&event), "w-1");
        let event = Event::NodeDrainRequested { node: "n1".into(), reason: "maintenance".into() };
        assert_eq!(summary(&event), "n1 reason=\"maintenance\"");
    }

    #[test]
    fn event_lines_render_in_each_format() {
        let record = &chain(1)[0];
        let line = Printer::new(Format::Table).render(record).unwrap();
        assert_eq!(
            line,
            "1        2023-11-14T22:13:20.001Z  user:alice          IntentStated             \"intent 1\""
        );
        let json = Printer::new(Format::Json).render(record).unwrap();
        assert!(!json.contains('\n'));
        let back: EventRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, record);
        let yaml = Printer::new(Format::Yaml).render(record).unwrap();
        assert!(yaml.starts_with("---\n"));
        let back: EventRecord = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(&back, record);
    }

    #[test]
    fn chain_check_spans_pages() {
        let records = chain(5);
        let mut check = ChainCheck::default();
        check.page(&records[..2]).unwrap();
        check.page(&records[2..]).unwrap();
        assert_eq!(check.count, 5);
        assert_eq!(check.head, records[4].hash);
    }

    #[test]
    fn chain_check_finds_gaps_between_pages_and_tampering() {
        let records = chain(5);
        let mut check = ChainCheck::default();
        check.page(&records[..2]).unwrap();
        let err = check.page(&records[3..]).unwrap_err().to_string();
        assert!(err.contains("expected seq 3"), "{err}");

        let mut tampered = chain(3);
        tampered[1].event = Event::IntentStated { text: "forged".into() };
        let err = ChainCheck::default().page(&tampered).unwrap_err().to_string();
        assert!(err.contains("seq 2") && err.contains("tampered"), "{err}");

        let err = ChainCheck::default().page(&records[1..]).unwrap_err().to_string();
        assert!(err.contains("retention"), "{err}");
    }

    async fn fake_with(n: u64) -> (FakeClaw, Client) {
        let fake = FakeClaw::default();
        fake.state().events = chain(n);
        let client = fake.clone().serve().await.connect().await.unwrap();
        (fake, client)
    }

    async fn listed(client: &Client, argv: &[&str]) -> Vec<u64> {
        let mut seqs = Vec::new();
        for_each_page(client, &args(argv), |page| {
            seqs.extend(page.iter().map(|r| r.seq));
            Ok(())
        })
        .await
        .unwrap();
        seqs
    }

    #[tokio::test]
    async fn listing_pages_through_the_log() {
        let (_fake, client) = fake_with(2500).await;
        assert_eq!(listed(&client, &[]).await, (1..=2500).collect::<Vec<_>>());
        assert_eq!(listed(&client, &["--from", "5", "--limit", "1500"]).await, (5..=1504).collect::<Vec<_>>());
        assert_eq!(listed(&client, &["--from", "2000", "--to", "2100"]).await, (2000..=2100).collect::<Vec<_>>());
        assert!(listed(&client, &["--from", "3000"]).await.is_empty());
    }

    #[tokio::test]
    async fn verify_reads_the_whole_chain() {
        let (fake, client) = fake_with(2500).await;
        let check = verify_all(&client).await.unwrap();
        assert_eq!((check.count, check.head.as_str()), (2500, fake.state().events[2499].hash.as_str()));

        fake.state().events[1700].event = Event::IntentStated { text: "forged".into() };
        let err = verify_all(&client).await.unwrap_err().to_string();
        assert!(err.contains("seq 1701"), "{err}");

        let (_fake, empty) = fake_with(0).await;
        assert_eq!(verify_all(&empty).await.unwrap().count, 0);
    }
}
