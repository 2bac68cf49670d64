//! hookrelay against its ceilings, in one run on one machine, with a real RabbitMQ, the
//! embedded broker and a minimal HTTP receiver on loopback (issue #7). It measures:
//!
//! 1. the ceilings, per broker: a bare consumer that only acks (RabbitMQ: lapin on a quorum
//!    queue; embedded: the library's `Broker` API on a queue file of the harness's own, same
//!    settings as the router's; prefetch 100 both), a bare relay (consume → POST → ack) at 32 in
//!    flight and at one in flight (with its own CPU per event, so that the router's reads as a
//!    ratio; on RabbitMQ both as a process of its own, as the router is, and the one at a time
//!    again inside the harness for reference), and a bare hyper client that only POSTs the same
//!    bodies to the same receiver;
//! 2. hookrelay end to end (the release binary, as a process) on a realistic route (JSON Schema,
//!    a Rhai filter, redaction, Standard Webhooks signing), draining a queue filled before it
//!    started: events per second for an unordered and an ordered route, router CPU per event,
//!    publish-to-receive latency p50/p99 at half the unordered maximum (and the bare relay's at
//!    the same rate, for the latency hookrelay adds), peak resident memory, and resident memory
//!    with 10,000 events in flight, two ways, each beside the idle router on the same config:
//!    (a) prefetched into the router and unacked while the route delivers 32 at once, and
//!    (b) 10,000 deliveries at once over 10,000 open connections; on the embedded broker also
//!    with producers POSTing to `/v1/events` while it delivers; and `POST /v1/events` alone
//!    beside a bare axum handler that parses the same bodies (the ceiling of ingest);
//! 3. scaling: 1, 10 and 100 routes with fan-out (`--fanout` to choose; N routes get N/routes
//!    events each, so every run makes the same number of deliveries; on RabbitMQ a route is one
//!    quorum queue, the wait queues of retries being shared by every route per backoff step),
//!    and 64 KiB events;
//! 4. backlog: a router started on an embedded queue with 1,000,000 events waiting (and on
//!    RabbitMQ with 200,000), its resident memory while they wait, its start-up time and the
//!    queue's size (once per invocation: 1 to 4 minutes on 2 cores, 1 GiB of queue file).
//!
//! It prints a table of medians with, beside each figure that has a ceiling, its ratio to the
//! ceiling measured in the same repetition, then the targets, and writes JSON with
//! `--json FILE`.
//!
//! `cargo bench --bench throughput -- [--quick] [--events N] [--repeat K] [--json FILE]
//! [--only GROUP,…] [--latency-secs S] [--latency-rate R] [--in-flight N] [--fanout 1,10,100] [--backlog N]
//! [--backlog-rabbitmq N] [--backlog-secs S] [--wrap 'CMD ARGS']` (groups: ceilings, unordered,
//! ordered, per_key_order, latency, memory, payload, fanout, backlog; brokers: rabbitmq, embedded, both when
//! neither is named). Needs RabbitMQ with the management plugin: every run uses a vhost of its
//! own, deleted at the end. Never a pass/fail test: it prints figures.

#[path = "../common/mod.rs"]
mod common;
mod embedded;
mod groups;
mod http;
mod ingest;
mod per_key;
mod process;
mod rabbit;
mod receiver;
mod report;
mod rows;
mod sys;

use common::Size;
use process::{BusKind, Feed, Launch, Scenario};
use rabbit::Vhost;
use receiver::Receiver;
use report::Report;
use serde_json::json;
use std::time::{Duration, Instant};

/// Prefetch of the route queues and of the bare consumers.
const PREFETCH: u32 = 100;
/// Deliveries at once on an unordered route, and the bare client's and relay's concurrency.
const CONCURRENCY: usize = 32;

/// `--help`: the options, as the module docs give them.
const USAGE: &str = "cargo bench --bench throughput -- [--quick] [--events N] [--repeat K] [--json FILE]
    [--only GROUP,...] [--latency-secs S] [--latency-rate R] [--in-flight N] [--fanout 1,10,100] [--backlog N]
    [--backlog-rabbitmq N] [--backlog-secs S] [--wrap 'CMD ARGS']

groups: ceilings, unordered, ordered, per_key_order, latency, memory, payload, fanout, backlog
brokers: rabbitmq, embedded (both when neither is named)
--quick: 5,000 events, one repetition, shorter latency and backlog runs.
--latency-rate: publish the latency runs at R events/s instead of half the unordered maximum.
Needs RabbitMQ with the management plugin; prints figures, never pass/fail.";

/// What `--only` can name: measures, then brokers.
const GROUPS: [&str; 9] =
    ["ceilings", "unordered", "ordered", "per_key_order", "latency", "memory", "payload", "fanout", "backlog"];
const BROKERS: [&str; 2] = ["rabbitmq", "embedded"];

#[derive(Debug, Clone)]
struct Opts {
    events: usize,
    repeat: usize,
    json: Option<String>,
    only: Vec<String>,
    brokers: Vec<String>,
    latency_secs: f64,
    /// `--latency-rate`: the latency runs' rate, instead of half the unordered maximum.
    latency_rate: Option<f64>,
    in_flight: usize,
    fanout: Vec<usize>,
    backlog: usize,
    backlog_rabbitmq: usize,
    backlog_secs: f64,
    launch: Launch,
}

impl Opts {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let number = |name: &str| {
            value(name).map(|v| v.parse::<f64>().unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}")))
        };
        let quick = args.iter().any(|a| a == "--quick");
        let named: Vec<String> =
            value("--only").map(|v| v.split(',').map(|s| s.trim().to_string()).collect()).unwrap_or_default();
        for g in &named {
            assert!(
                GROUPS.contains(&g.as_str()) || BROKERS.contains(&g.as_str()),
                "unknown group {g:?} in --only (groups: {}; brokers: {})",
                GROUPS.join(", "),
                BROKERS.join(", ")
            );
        }
        let (brokers, only): (Vec<String>, Vec<String>) =
            named.into_iter().partition(|g| BROKERS.contains(&g.as_str()));
        Self {
            events: number("--events").map_or(if quick { 5_000 } else { 20_000 }, |v| v as usize),
            repeat: number("--repeat").map_or(if quick { 1 } else { 3 }, |v| v as usize).max(1),
            json: value("--json"),
            only,
            brokers,
            latency_secs: number("--latency-secs").unwrap_or(if quick { 5.0 } else { 10.0 }),
            latency_rate: number("--latency-rate"),
            in_flight: number("--in-flight").map_or(10_000, |v| v as usize),
            fanout: value("--fanout")
                .map(|v| {
                    v.split(',')
                        .map(|n| n.trim().parse().unwrap_or_else(|_| panic!("--fanout takes route counts, not {v:?}")))
                        .collect()
                })
                .unwrap_or_else(|| vec![1, 10, 100]),
            backlog: number("--backlog").map_or(1_000_000, |v| v as usize).max(1),
            backlog_rabbitmq: number("--backlog-rabbitmq").map_or(200_000, |v| v as usize),
            backlog_secs: number("--backlog-secs").unwrap_or(if quick { 10.0 } else { 20.0 }),
            launch: Launch {
                wrap: value("--wrap").map(|w| w.split_whitespace().map(str::to_string).collect()).unwrap_or_default(),
            },
        }
    }

    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }

    fn on(&self, broker: &str) -> bool {
        self.brokers.is_empty() || self.brokers.iter().any(|b| b == broker)
    }
}

fn scenario(routes: usize, ordered: bool, size: Size) -> Scenario {
    Scenario { routes, ordered, size, concurrency: CONCURRENCY, prefetch: PREFETCH, timeout: None, order_key: None }
}

/// The key of a ceiling on a broker: RabbitMQ's keep the names they had before the embedded
/// broker had ceilings of its own (`ceiling.consume.1k`), so JSON files compare across commits.
fn ceil(kind: BusKind, what: &str) -> String {
    match kind {
        BusKind::RabbitMq => format!("ceiling.{what}"),
        BusKind::Embedded => format!("ceiling.embedded.{what}"),
    }
}

struct Bench {
    opts: Opts,
    rx: Receiver,
    report: Report,
    started: Instant,
}

const G_CEIL: &str =
    "ceilings, RabbitMQ, 1 KiB events (lapin, quorum queue, prefetch 100; hyper client; receiver on loopback)";
const G_EMB_CEIL: &str = "ceilings, embedded broker, 1 KiB events (the library's Broker API on a queue file of the harness's own, prefetch 100)";
const G_RMQ: &str = "hookrelay + RabbitMQ, realistic route (schema, Rhai filter, redaction, signing), 1 KiB";
const G_EMB: &str = "hookrelay + embedded broker, realistic route, 1 KiB";
const G_MEM: &str = "memory with N events in flight (--in-flight, default 10,000; 1 route, unordered, 1 KiB): \
                     (a) in the router, prefetched and unacked, the route delivering 32 at once; \
                     (b) N deliveries at once over N open connections";
const G_PAYLOAD: &str = "64 KiB events (1 route, unordered)";
const G_FANOUT: &str = "fan-out: every event to each of N routes (1 KiB, unordered); rates are deliveries/s";
const G_BACKLOG: &str = "backlog: a router started on a queue with events waiting (1 route, unordered, 1 KiB)";

fn group_of(kind: BusKind) -> &'static str {
    match kind {
        BusKind::RabbitMq => G_RMQ,
        BusKind::Embedded => G_EMB,
    }
}

fn ceiling_group(kind: BusKind) -> &'static str {
    match kind {
        BusKind::RabbitMq => G_CEIL,
        BusKind::Embedded => G_EMB_CEIL,
    }
}

/// Seconds since the start at the last progress line, for the watchdog.
static LAST_PROGRESS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Ends the process if no step reports for `limit`: a stalled broker must not hang a CI job.
fn watchdog(started: Instant, limit: Duration) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(5));
            let last = LAST_PROGRESS.load(std::sync::atomic::Ordering::Relaxed);
            if started.elapsed().as_secs().saturating_sub(last) > limit.as_secs() {
                eprintln!("no step finished within {limit:?}: the run is stuck (is RabbitMQ healthy?); exiting");
                std::process::exit(3);
            }
        }
    });
}

fn mark_progress(started: Instant) {
    LAST_PROGRESS.store(started.elapsed().as_secs(), std::sync::atomic::Ordering::Relaxed);
}

impl Bench {
    fn progress(&self, what: &str, figures: &str) {
        mark_progress(self.started);
        eprintln!("[{:>6.1}s] {what}: {figures}", self.started.elapsed().as_secs_f64());
    }

    fn fail(&mut self, group: &str, what: &str, e: &str) {
        mark_progress(self.started);
        self.report.note(group, format!("{what} failed: {}", e.lines().next().unwrap_or(e)));
        eprintln!("{what} failed:\n{e}");
    }

    /// The bare consumer on `kind` with `queues` queues of `n` events: `ceiling.<…>.consume.<key>`.
    async fn ceiling_consume(&mut self, kind: BusKind, queues: usize, n: usize, size: Size, key: &str) {
        let rate = match kind {
            BusKind::RabbitMq => {
                let vh = Vhost::new();
                Ok(rabbit::bare_consumer(&vh.url(), queues, n, size, PREFETCH as u16).await)
            }
            BusKind::Embedded => match tempfile::tempdir() {
                Ok(dir) => embedded::bare_consumer(dir.path(), queues, n, size, PREFETCH as u16).await,
                Err(e) => Err(e.to_string()),
            },
        };
        let what = format!("{} bare consumer, {queues} queue(s), {}", kind.label(), size.label());
        match rate {
            Ok(r) => {
                self.report.record(ceil(kind, &format!("consume.{key}")), r);
                self.progress(&what, &format!("{r:.0} deliveries/s"));
            }
            Err(e) => self.fail(ceiling_group(kind), &what, &e),
        }
    }

    async fn ceiling_post(&mut self, size: Size, n: usize, key: &str) {
        let post = http::bare_post(&format!("{}/bare", self.rx.addr), n, size, CONCURRENCY).await;
        self.report.record(format!("ceiling.post.{key}"), post);
        self.progress(&format!("bare POST {}", size.label()), &format!("{post:.0}/s"));
    }

    /// Measures what `key` needs when this repetition has not measured it yet.
    async fn ensure(&mut self, kind: BusKind, key: &str) {
        if self.report.current(&ceil(kind, key)).is_some() {
            return;
        }
        let n = self.opts.events;
        match key {
            "consume.1k" => self.ceiling_consume(kind, 1, n, Size::Kib1, "1k").await,
            "relay1.1k" => self.ceiling_relay(kind, (n / 4).max(100), 1, false).await,
            _ => unreachable!("no ceiling {key}"),
        }
    }

    async fn ensure_post(&mut self) {
        if self.report.current("ceiling.post.1k").is_none() {
            self.ceiling_post(Size::Kib1, self.opts.events, "1k").await;
        }
    }

    /// The bare relay on `kind`, `n` events from a filled queue, `in_flight` at once. On RabbitMQ
    /// it runs as a process of its own, as the router does (`own` below), and says its CPU per
    /// event; `in_harness` runs it inside this process instead, beside the receiver, for
    /// reference. On the embedded broker it runs in the harness, its CPU the harness's less the
    /// receiver's.
    async fn ceiling_relay(&mut self, kind: BusKind, n: usize, in_flight: usize, in_harness: bool) {
        let target = format!("{}/bare", self.rx.addr);
        // The harness's CPU during an embedded relay, which runs in this process; less the
        // receiver's, it is the relay's own (a RabbitMQ relay measures its own process).
        let cpu_before = sys::own_cpu_seconds();
        // One at a time, a relay inside the receiver's process can hand each request to the
        // receiver and get its answer on the same thread, without the two context switches
        // between processes that any deployed relay (and the router) pays per event: about a
        // fifth faster on this project's machine (docs/performance.md, twelfth round). So the
        // ceiling of the ordered route is the relay as a process of its own; 32 at once too
        // (since issue 15's fifteenth round), so that its CPU is its own process's, measured as
        // the router's is, not the harness's less an estimate of the receiver's.
        let own = kind == BusKind::RabbitMq && !in_harness;
        let done = match kind {
            BusKind::RabbitMq => {
                let vh = Vhost::new();
                rabbit::declare_bare(&vh.url(), 1).await;
                rabbit::publish_bulk(&vh.url(), "bare", "order.paid", Size::Kib1, n).await;
                self.rx.reset(None);
                if own {
                    // Wrapped only where `--wrap` counts the ceiling's instructions (32 at once).
                    let wrapped = self.wrapped(kind, in_flight);
                    let wrap: &[String] = if wrapped { &self.opts.launch.wrap } else { &[] };
                    let cpu = rabbit::bare_relay_process(wrap, &vh.url(), &target, n, PREFETCH as u16, in_flight).await;
                    cpu.map(|us| {
                        // What the unordered and the ordered route's CPU read against.
                        if !wrapped {
                            self.report.record(ceil(kind, if in_flight == 1 { "relay1.cpu" } else { "relay.cpu" }), us);
                        }
                    })
                } else {
                    rabbit::bare_relay(&vh.url(), &target, n, PREFETCH as u16, in_flight).await;
                    Ok(())
                }
            }
            BusKind::Embedded => match tempfile::tempdir() {
                Ok(dir) => {
                    self.rx.reset(None);
                    embedded::bare_relay(dir.path(), &target, n, PREFETCH as u16, in_flight).await
                }
                Err(e) => Err(e.to_string()),
            },
        };
        let key = match (in_flight, in_harness) {
            (1, true) => "relay1.harness.1k",
            (1, false) => "relay1.1k",
            _ => "relay.1k",
        };
        let place = if own { ", its own process" } else { ", in the harness" };
        let what = format!("{} bare relay, {in_flight} at once{place}", kind.label());
        match done {
            Ok(()) => {
                let rate = self.rx.rate();
                self.report.record(ceil(kind, key), rate);
                if kind == BusKind::Embedded {
                    let harness = (sys::own_cpu_seconds() - cpu_before) * 1e6 / n as f64;
                    let which = if in_flight == 1 { "relay1.harness_cpu" } else { "relay.harness_cpu" };
                    self.report.record(ceil(kind, which), harness);
                }
                self.progress(&what, &format!("{rate:.0}/s"));
            }
            Err(e) => self.fail(ceiling_group(kind), &what, &e),
        }
    }

    /// Whether the bare relay at `in_flight` runs wrapped, as a process of its own: on RabbitMQ,
    /// 32 at once, under `--wrap`.
    fn wrapped(&self, kind: BusKind, in_flight: usize) -> bool {
        kind == BusKind::RabbitMq && !self.opts.launch.wrap.is_empty() && in_flight > 1
    }

    fn throughput_row(&mut self, kind: BusKind, prefix: &str, t: &process::Throughput, cpu_detail: bool) {
        self.report.record(format!("{prefix}.rate"), t.rate);
        self.report.record(format!("{prefix}.cpu"), t.cpu_us.router);
        self.report.record(format!("{prefix}.rss_peak"), t.peak_rss_mib);
        if cpu_detail {
            // The embedded broker runs inside the router: beam.smp's CPU would be other work's.
            if kind == BusKind::RabbitMq {
                self.report.record(format!("{prefix}.broker_cpu"), t.cpu_us.broker);
            }
            self.report.record(format!("{prefix}.harness_cpu"), t.cpu_us.harness);
        }
        let broker = if kind == BusKind::RabbitMq {
            format!(", broker {:.1} µs/event", t.cpu_us.broker)
        } else {
            String::new()
        };
        self.progress(
            prefix,
            &format!(
                "{:.0}/s, router {:.1} µs/event{broker}, harness {:.1} µs/event, peak RSS {:.1} MiB",
                t.rate, t.cpu_us.router, t.cpu_us.harness, t.peak_rss_mib
            ),
        );
    }

    /// The ceilings of one broker (the whole `ceilings` group).
    async fn ceilings(&mut self, kind: BusKind) {
        let n = self.opts.events;
        self.ceiling_consume(kind, 1, n, Size::Kib1, "1k").await;
        if kind == BusKind::RabbitMq {
            self.ceiling_post(Size::Kib1, n, "1k").await;
            self.ceiling_axum(n).await;
            self.ceiling_axum_publishing(n).await;
        }
        self.ceiling_relay(kind, n, CONCURRENCY, false).await;
        self.ceiling_relay(kind, (n / 4).max(100), 1, false).await;
        if kind == BusKind::RabbitMq {
            self.ceiling_relay(kind, (n / 4).max(100), 1, true).await;
        }
    }

    /// Every hookrelay measure on one broker.
    async fn hookrelay(&mut self, kind: BusKind, first_repetition: bool) {
        let (n, launch) = (self.opts.events, self.opts.launch.clone());
        let b = kind.label();
        let group = group_of(kind);
        if self.opts.wants("unordered") || self.opts.wants("latency") {
            if self.opts.wants("unordered") {
                self.ensure(kind, "consume.1k").await;
            }
            let s = scenario(1, false, Size::Kib1);
            match process::throughput(kind, &self.rx, &s, n, Feed::Prefilled, &launch).await {
                Ok(t) => {
                    self.throughput_row(kind, &format!("{b}.unordered.1k"), &t, true);
                    self.report.record(format!("{b}.idle.rss"), t.idle_rss_mib);
                    self.relay_cpu(kind, t.cpu_us.harness);
                }
                Err(e) => self.fail(group, &format!("{b} unordered"), &e),
            }
        }
        // Producers POSTing: what the embedded broker's ingest adds, and the rate the latency
        // run's producers can sustain.
        if (self.opts.wants("unordered") || self.opts.wants("latency")) && kind == BusKind::Embedded {
            self.ensure_post().await;
            let s = scenario(1, false, Size::Kib1);
            match process::throughput(kind, &self.rx, &s, n, Feed::Posted, &launch).await {
                Ok(t) => {
                    self.report.record(format!("{b}.ingest.1k.rate"), t.rate);
                    self.report.record(format!("{b}.ingest.1k.cpu"), t.cpu_us.router);
                    self.report.record(format!("{b}.ingest.1k.harness_cpu"), t.cpu_us.harness);
                    self.progress(
                        &format!("{b} producers POSTing"),
                        &format!("{:.0}/s, router {:.1} µs/event", t.rate, t.cpu_us.router),
                    );
                }
                Err(e) => self.fail(group, &format!("{b} producers POSTing"), &e),
            }
        }
        if self.opts.wants("unordered") {
            self.ingest_alone(kind).await;
        }
        if self.opts.wants("ordered") {
            self.ensure(kind, "relay1.1k").await;
            let n = (n / 4).max(100);
            match process::throughput(kind, &self.rx, &scenario(1, true, Size::Kib1), n, Feed::Prefilled, &launch).await
            {
                Ok(t) => {
                    self.report.record(format!("{b}.ordered.1k.rate"), t.rate);
                    self.report.record(format!("{b}.ordered.1k.cpu"), t.cpu_us.router);
                    self.progress(
                        &format!("{b} ordered"),
                        &format!("{:.0}/s, {:.1} µs/event", t.rate, t.cpu_us.router),
                    );
                }
                Err(e) => self.fail(group, &format!("{b} ordered"), &e),
            }
        }
        if self.opts.wants("per_key_order") {
            self.per_key_order(kind).await;
        }
        if self.opts.wants("latency") {
            // Half the maximum rate through the path the latency run's events take: on the
            // embedded broker they enter by POST, so the lower of the drain and POST rates.
            let drain = self.report.current(&format!("{b}.unordered.1k.rate")).unwrap_or(f64::NAN);
            let posted = self.report.current(&format!("{b}.ingest.1k.rate")).unwrap_or(f64::INFINITY);
            let max = if drain.is_nan() { f64::NAN } else { drain.min(posted) };
            let rate = self.opts.latency_rate.unwrap_or((max / 2.0).max(10.0));
            if rate.is_nan() {
                self.fail(group, &format!("{b} latency"), "no unordered rate to take half of");
            } else {
                let events = ((rate * self.opts.latency_secs) as usize).max(200);
                self.report.record(format!("{b}.latency.rate"), rate);
                self.ceiling_relay_latency(kind, rate, events).await;
                match process::latency(kind, &self.rx, &scenario(1, false, Size::Kib1), rate, events, &launch).await {
                    Ok(l) => {
                        self.report.record(format!("{b}.latency.p50"), l.p50_ms);
                        self.report.record(format!("{b}.latency.p99"), l.p99_ms);
                        self.progress(
                            &format!("{b} latency"),
                            &format!("{rate:.0}/s: p50 {:.2} ms, p99 {:.2} ms", l.p50_ms, l.p99_ms),
                        );
                    }
                    Err(e) => self.fail(group, &format!("{b} latency"), &e),
                }
            }
        }
        if self.opts.wants("memory") {
            self.memory(kind).await;
        }
        if self.opts.wants("payload") {
            let n = (n / 8).max(100);
            self.ceiling_consume(kind, 1, n, Size::Kib64, "64k").await;
            if kind == BusKind::RabbitMq || self.report.current("ceiling.post.64k").is_none() {
                self.ceiling_post(Size::Kib64, n, "64k").await;
            }
            match process::throughput(kind, &self.rx, &scenario(1, false, Size::Kib64), n, Feed::Prefilled, &launch)
                .await
            {
                Ok(t) => self.throughput_row(kind, &format!("{b}.unordered.64k"), &t, false),
                Err(e) => self.fail(G_PAYLOAD, &format!("{b} 64 KiB"), &e),
            }
        }
        if self.opts.wants("fanout") {
            for routes in self.opts.fanout.clone() {
                let per = (n / routes).max(50);
                self.ceiling_consume(kind, routes, per, Size::Kib1, &format!("fanout{routes}")).await;
                let s = scenario(routes, false, Size::Kib1);
                match process::throughput(kind, &self.rx, &s, per, Feed::Prefilled, &launch).await {
                    Ok(t) => self.throughput_row(kind, &format!("{b}.fanout{routes}"), &t, false),
                    Err(e) => self.fail(G_FANOUT, &format!("{b} {routes} routes"), &e),
                }
            }
        }
        // Memory with a backlog is not a rate: measured once, in the first repetition.
        if self.opts.wants("backlog") && first_repetition {
            let events = match kind {
                BusKind::RabbitMq => self.opts.backlog_rabbitmq,
                BusKind::Embedded => self.opts.backlog,
            };
            if events > 0 {
                self.backlog(kind, events).await;
            }
        }
    }

    async fn repetition(&mut self, embedded: bool, first: bool) {
        for kind in [BusKind::RabbitMq, BusKind::Embedded] {
            if !self.opts.on(kind.label()) || (kind == BusKind::Embedded && !embedded) {
                continue;
            }
            if self.opts.wants("ceilings") {
                self.ceilings(kind).await;
            }
            self.hookrelay(kind, first).await;
        }
    }
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    if rabbit::run_relay_child().await {
        return;
    }
    let opts = Opts::parse();
    let started = Instant::now();
    watchdog(started, Duration::from_secs(900));
    let rx = Receiver::start().await;
    let mut bench = Bench { opts: opts.clone(), rx, report: Report::default(), started };
    bench.declare_rows();
    let embedded = if opts.on("embedded") {
        match process::embedded_available(&bench.rx, &opts.launch).await {
            Ok(()) => true,
            Err(why) => {
                bench.report.note(G_EMB, format!("not yet available: {why}"));
                false
            }
        }
    } else {
        false
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    for rep in 0..opts.repeat {
        bench.report.repetition(rep);
        eprintln!(
            "— repetition {} of {} (load average {})",
            rep + 1,
            opts.repeat,
            load.split_whitespace().next().unwrap_or("?")
        );
        bench.repetition(embedded, rep == 0).await;
    }
    let targets = rows::targets(opts.on("rabbitmq"), embedded);
    let fanout: Vec<String> = opts.fanout.iter().map(|r| format!("{r} × {}", (opts.events / r).max(50))).collect();
    let title = format!(
        "hookrelay throughput — {} events of ~1 KiB per run (ordered: {}, 64 KiB: {}, fan-out routes × events: {}), \
         prefetch {PREFETCH}, route concurrency {CONCURRENCY}, {} repetition(s), {:.0} s",
        opts.events,
        (opts.events / 4).max(100),
        (opts.events / 8).max(100),
        fanout.join(", "),
        opts.repeat,
        started.elapsed().as_secs_f64()
    );
    bench.report.print(&title, &targets);
    if let Some(path) = &opts.json {
        let meta = json!({
            "commit": git_commit(),
            "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "load_average_at_start": load.trim(),
            "events": opts.events, "repeat": opts.repeat, "prefetch": PREFETCH, "concurrency": CONCURRENCY,
            "latency_secs": opts.latency_secs, "latency_rate": opts.latency_rate, "latency_warmup_share": process::WARMUP, "in_flight": opts.in_flight,
            "fanout": opts.fanout, "backlog": opts.backlog, "backlog_rabbitmq": opts.backlog_rabbitmq,
            "backlog_secs": opts.backlog_secs,
            "only": opts.only, "brokers": opts.brokers, "embedded": embedded, "wrap": opts.launch.wrap,
            "seconds": started.elapsed().as_secs_f64(),
        });
        let text = serde_json::to_string_pretty(&bench.report.json(meta, &targets)).expect("JSON");
        std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        eprintln!("wrote {path}");
    }
}
