//! `clawctl bench append`: how many durably committed events per second the
//! cluster acknowledges, and at what latency, under N concurrent clients.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use claw_proto::etcd::kv_client::KvClient;
use claw_proto::etcd::PutRequest;
use claw_proto::v1::{self, submit_request::Command};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::{new_command_id, Client, Target};
use crate::output::{self, emit, key_values, Format};

/// Clients that share one HTTP/2 connection. One connection per client
/// would measure connection setup more than the log; one for all would
/// bottleneck on a single TCP stream.
const CLIENTS_PER_CHANNEL: usize = 16;

/// How long a submit still in flight at the end may take before it counts
/// as an error, so the bench always stops.
const GRACE: Duration = Duration::from_secs(10);

/// Latencies up to a minute, in microseconds, to 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append StateIntent events as fast as N clients can get them committed.
    Append(AppendArgs),
    /// Register simulated nodes, submit workloads and measure placements/s
    /// and submit→placed latency.
    Schedule(crate::bench_schedule::ScheduleArgs),
    /// Grow a history through the API, then time past states, a filtered
    /// events query, a full-scan aggregate and an as-of query over it.
    History(crate::bench_history::HistoryArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AppendArgs {
    /// Concurrent clients, each with one submit in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long to measure, e.g. 10s, 500ms, 2m, or 10 (seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Size of each intent's text in bytes.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Load to apply before measuring, so connections and caches are warm.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Measure an etcd v3 server instead (e.g. http://127.0.0.1:2379): the
    /// same clients, each putting a key with the same payload, through
    /// etcd's gRPC KV API. For side-by-side runs (bench/compare.sh).
    #[arg(long)]
    pub etcd: Option<String>,
}

/// `10s`, `500ms`, `2m`, `1h`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (expected e.g. 10s, 500ms, 2m or a number of seconds)"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{s:?} is out of range"))
}

impl AppendArgs {
    pub fn validate(&self) -> Result<()> {
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.duration.is_zero() {
            bail!("--duration must be longer than 0");
        }
        Ok(())
    }
}

/// The intent text: recognisable in `clawctl events`, exactly `bytes` long.
pub fn payload(bytes: usize) -> String {
    let mut text = String::from("bench ");
    text.truncate(bytes);
    text.extend(std::iter::repeat_n('x', bytes - text.len()));
    text
}

/// What one client saw during the measured window.
struct ClientStats {
    /// One sample per acknowledged submit, so its length is the count.
    latencies: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub clients: usize,
    pub payload_bytes: usize,
    pub duration_s: f64,
    pub committed_events: u64,
    pub events_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

impl BenchReport {
    /// Rates use the measured wall time, which includes requests that were
    /// still in flight when the duration ended.
    pub fn new(
        clients: usize,
        payload_bytes: usize,
        elapsed: Duration,
        latencies: &Histogram<u64>,
        errors: u64,
    ) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let committed = latencies.len();
        let secs = elapsed.as_secs_f64();
        let empty = committed == 0;
        let quantile = |q: f64| if empty { 0.0 } else { ms(latencies.value_at_quantile(q)) };
        BenchReport {
            clients,
            payload_bytes,
            duration_s: secs,
            committed_events: committed,
            events_per_s: if secs > 0.0 { committed as f64 / secs } else { 0.0 },
            p50_ms: quantile(0.50),
            p99_ms: quantile(0.99),
            p999_ms: quantile(0.999),
            max_ms: if empty { 0.0 } else { ms(latencies.max()) },
            errors,
        }
    }

    pub fn render_table(&self) -> String {
        key_values(&[
            ("clients", self.clients.to_string()),
            ("payload", format!("{} bytes", self.payload_bytes)),
            ("duration", format!("{:.2}s", self.duration_s)),
            ("committed events", self.committed_events.to_string()),
            ("events/s", format!("{:.1}", self.events_per_s)),
            ("p50", format!("{:.3} ms", self.p50_ms)),
            ("p99", format!("{:.3} ms", self.p99_ms)),
            ("p99.9", format!("{:.3} ms", self.p999_ms)),
            ("max", format!("{:.3} ms", self.max_ms)),
            ("errors", self.errors.to_string()),
        ])
    }
}

pub async fn run(target: &Target, format: Format, command: BenchCommand) -> Result<()> {
    let args = match command {
        BenchCommand::Append(args) => args,
        BenchCommand::Schedule(args) => return crate::bench_schedule::run(target, format, args).await,
        BenchCommand::History(args) => return crate::bench_history::run(target, format, args).await,
    };
    args.validate()?;
    let channels = args.clients.div_ceil(CLIENTS_PER_CHANNEL);
    let mut clients = Vec::with_capacity(channels);
    for _ in 0..channels {
        clients.push(match &args.etcd {
            None => Writer::Claw(target.client_on(target.channel().await?)?),
            Some(url) => Writer::Etcd(KvClient::new(
                tonic::transport::Endpoint::from_shared(url.clone())
                    .with_context(|| format!("--etcd {url:?} is not a URL like http://127.0.0.1:2379"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .with_context(|| format!("connecting to etcd at {url}"))?,
            )),
        });
    }

    let text = payload(args.payload_bytes);
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let deadline = measure_from + args.duration;
    let tasks: Vec<_> = (0..args.clients)
        .map(|i| {
            let client = clients[i / CLIENTS_PER_CHANNEL].clone();
            tokio::spawn(client_loop(client, i, text.clone(), measure_from, deadline))
        })
        .collect();

    let mut latencies = histogram();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let stats = task.await?;
        latencies.add(&stats.latencies)?;
        errors += stats.errors;
        first_error = first_error.or(stats.first_error);
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from);

    let report = BenchReport::new(args.clients, args.payload_bytes, elapsed, &latencies, errors);
    match format {
        Format::Table => emit(&report.render_table())?,
        other => emit(&output::render_value(other, &report)?)?,
    }
    if let Some(error) = first_error {
        // Errors are counted in the report; the first one says why.
        eprintln!("first error: {error}");
    }
    Ok(())
}

/// Where the bench writes: clawd (an intent per write) or, for comparison,
/// etcd (a put per write).
#[derive(Clone)]
enum Writer {
    Claw(Client),
    Etcd(KvClient<tonic::transport::Channel>),
}

impl Writer {
    /// One durable write, acknowledged once committed.
    async fn write(&self, client: usize, n: u64, text: &str) -> Result<(), tonic::Status> {
        match self {
            Writer::Claw(c) => {
                let request = v1::SubmitRequest {
                    command_id: new_command_id(),
                    correlation_id: String::new(),
                    command: Some(Command::StateIntent(v1::StateIntent { text: text.to_string() })),
                };
                // The retry loop is inside the measurement: a leader change
                // costs the client the whole time until its command is acknowledged.
                c.submit_raw(request).await.map(drop)
            }
            Writer::Etcd(kv) => {
                let request = PutRequest {
                    key: format!("bench/{client}/{n}").into_bytes(),
                    value: text.as_bytes().to_vec(),
                    ..PutRequest::default()
                };
                kv.clone().put(request).await.map(drop)
            }
        }
    }
}

/// One client: a write at a time, back to back, until the deadline. Only
/// writes started inside the measured window are counted.
async fn client_loop(
    writer: Writer,
    client: usize,
    text: String,
    measure_from: Instant,
    deadline: Instant,
) -> ClientStats {
    let mut stats = ClientStats { latencies: histogram(), errors: 0, first_error: None };
    let mut n = 0u64;
    loop {
        let started = Instant::now();
        if started >= deadline {
            return stats;
        }
        n += 1;
        let result = tokio::time::timeout_at(deadline + GRACE, writer.write(client, n, &text)).await;
        let measured = started >= measure_from;
        match result {
            Ok(Ok(_)) if measured => {
                let us = started.elapsed().as_micros().min(u128::from(MAX_LATENCY_US)) as u64;
                stats.latencies.saturating_record(us.max(1));
            }
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                stats.errors += u64::from(measured);
                stats.first_error.get_or_insert_with(|| crate::client::describe_status(&status));
                // A failing cluster answers fast; do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                stats.errors += 1;
                stats.first_error.get_or_insert_with(|| format!("a submit took longer than {GRACE:?} past the end"));
                return stats;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 3 s "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("").unwrap_err().contains("not a duration"));
        assert!(parse_duration("ten").unwrap_err().contains("not a duration"));
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn payload_has_the_exact_size() {
        assert_eq!(payload(256).len(), 256);
        assert!(payload(256).starts_with("bench xx"));
        assert_eq!(payload(3), "ben");
        assert_eq!(payload(0), "");
    }

    #[test]
    fn report_statistics() {
        let mut h = histogram();
        // 1..=1000 ms, one sample each.
        for ms in 1..=1000u64 {
            h.record(ms * 1000).unwrap();
        }
        let r = BenchReport::new(4, 256, Duration::from_secs(10), &h, 2);
        assert_eq!(r.committed_events, 1000);
        assert_eq!(r.events_per_s, 100.0);
        assert!((r.p50_ms - 500.0).abs() < 1.0, "{}", r.p50_ms);
        assert!((r.p99_ms - 990.0).abs() < 1.0, "{}", r.p99_ms);
        assert!((r.p999_ms - 999.0).abs() < 1.0, "{}", r.p999_ms);
        assert!((r.max_ms - 1000.0).abs() < 1.0, "{}", r.max_ms);
        assert_eq!(r.errors, 2);
        let json = output::render_value(Format::Json, &r).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["committed_events"], 1000);
        assert!(r.render_table().contains("events/s:         100.0\n"));
    }

    #[test]
    fn empty_report_has_no_nan() {
        let r = BenchReport::new(1, 256, Duration::ZERO, &histogram(), 0);
        assert_eq!((r.events_per_s, r.p50_ms, r.max_ms), (0.0, 0.0, 0.0));
    }

    #[test]
    fn arguments_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            command: BenchCommand,
        }
        let cli =
            Cli::try_parse_from(["bench", "append", "--clients", "64", "--duration", "30", "--warmup", "2s"]).unwrap();
        let BenchCommand::Append(a) = cli.command else { panic!("not append") };
        assert_eq!(
            (a.clients, a.duration, a.warmup, a.payload_bytes),
            (64, Duration::from_secs(30), Duration::from_secs(2), 256)
        );
        assert!(Cli::try_parse_from(["bench", "append", "--duration", "soon"]).is_err());
        let cli = Cli::try_parse_from(["bench", "schedule", "--nodes", "5000", "--workloads", "10000"]).unwrap();
        let BenchCommand::Schedule(s) = cli.command else { panic!("not schedule") };
        assert_eq!((s.nodes, s.workloads, s.gpus_per_node), (5000, 10000, 8));
    }

    #[tokio::test]
    async fn clients_stop_at_the_deadline_and_count_only_the_window() {
        let fake = crate::testing::FakeClaw::default();
        let client = fake.clone().serve().await.connect().await.unwrap();
        let start = Instant::now();
        let measure_from = start + Duration::from_millis(100);
        let stats =
            client_loop(Writer::Claw(client), 0, payload(64), measure_from, measure_from + Duration::from_millis(200))
                .await;
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(stats.errors, 0);
        let committed = stats.latencies.len();
        let total = fake.state().events.len() as u64;
        assert!(committed > 0 && committed < total, "{committed} of {total}");
        assert!(fake
            .state()
            .events
            .iter()
            .all(|e| matches!(&e.event, claw_commands::Event::IntentStated { text } if text.len() == 64)));
    }
}
