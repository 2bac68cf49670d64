//! hookrelay against its ceilings, in one run on one machine, with a real RabbitMQ and a minimal
//! HTTP receiver on loopback (issue #7). It measures:
//!
//! 1. the ceilings: a bare consumer that only acks (quorum queue, same prefetch), a bare hyper
//!    client that only POSTs the same bodies to the same receiver, and a bare relay (consume →
//!    POST → ack) at 32 in flight and at one in flight;
//! 2. hookrelay end to end (the release binary, as a process) on a realistic route (JSON Schema,
//!    a Rhai filter, redaction, Standard Webhooks signing): events per second for an unordered
//!    and an ordered route, router CPU per event, publish-to-receive latency p50/p99 at half the
//!    unordered maximum (and the bare relay's at the same rate, for the latency hookrelay adds),
//!    peak resident memory, and resident memory with 10,000 deliveries in flight;
//! 3. scaling: N routes with fan-out (10 by default; `--fanout 10,100` adds 100, which declares
//!    800 quorum queues and can leave a 2-core RabbitMQ 3.10 refusing connections until the run's
//!    vhost is deleted), and 64 KiB events;
//! 4. the embedded broker the same way, where the build has it.
//!
//! It prints a table of medians with, beside each, its ratio to the ceiling measured in the same
//! repetition, then the targets, and writes JSON with `--json FILE`.
//!
//! `cargo bench --bench throughput -- [--quick] [--events N] [--repeat K] [--json FILE]
//! [--only GROUP,…] [--latency-secs S] [--in-flight N] [--fanout 10,100] [--wrap 'CMD ARGS']`
//! (groups: ceilings, unordered, ordered, latency, memory, payload, fanout, embedded).
//! Needs RabbitMQ with the management plugin: every run uses a vhost of its own, deleted at the
//! end. Never a pass/fail test: it prints figures.

#[path = "../common/mod.rs"]
mod common;
mod http;
mod process;
mod rabbit;
mod receiver;
mod report;
mod sys;

use common::Size;
use process::{BusKind, Launch, Scenario};
use rabbit::Vhost;
use receiver::{Receiver, Timeline};
use report::{Bound, Report, Target, Unit, Versus};
use serde_json::json;
use std::time::Instant;

/// Prefetch of the route queues and of the bare consumers.
const PREFETCH: u32 = 100;
/// Deliveries at once on an unordered route, and the bare client's and relay's concurrency.
const CONCURRENCY: usize = 32;

const GROUPS: [&str; 8] = ["ceilings", "unordered", "ordered", "latency", "memory", "payload", "fanout", "embedded"];

#[derive(Debug, Clone)]
struct Opts {
    events: usize,
    repeat: usize,
    json: Option<String>,
    only: Vec<String>,
    latency_secs: f64,
    in_flight: usize,
    fanout: Vec<usize>,
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
        let only: Vec<String> =
            value("--only").map(|v| v.split(',').map(|s| s.trim().to_string()).collect()).unwrap_or_default();
        for g in &only {
            assert!(GROUPS.contains(&g.as_str()), "unknown group {g:?} in --only (groups: {})", GROUPS.join(", "));
        }
        Self {
            events: number("--events").map_or(if quick { 5_000 } else { 20_000 }, |v| v as usize),
            repeat: number("--repeat").map_or(if quick { 1 } else { 3 }, |v| v as usize).max(1),
            json: value("--json"),
            only,
            latency_secs: number("--latency-secs").unwrap_or(if quick { 5.0 } else { 10.0 }),
            in_flight: number("--in-flight").map_or(10_000, |v| v as usize),
            fanout: value("--fanout")
                .map(|v| {
                    v.split(',')
                        .map(|n| n.trim().parse().unwrap_or_else(|_| panic!("--fanout takes route counts, not {v:?}")))
                        .collect()
                })
                .unwrap_or_else(|| vec![10]),
            launch: Launch {
                wrap: value("--wrap").map(|w| w.split_whitespace().map(str::to_string).collect()).unwrap_or_default(),
            },
        }
    }

    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

fn scenario(routes: usize, ordered: bool, size: Size) -> Scenario {
    Scenario { routes, ordered, size, concurrency: CONCURRENCY, prefetch: PREFETCH, timeout: None }
}

struct Bench {
    opts: Opts,
    rx: Receiver,
    report: Report,
    started: Instant,
}

const G_CEIL: &str = "ceilings, 1 KiB events (quorum queue, prefetch 100; hyper client; receiver on loopback)";
const G_RMQ: &str = "hookrelay + RabbitMQ, realistic route (schema, Rhai filter, redaction, signing), 1 KiB";
const G_PAYLOAD: &str = "64 KiB events (1 route, unordered)";
const G_FANOUT: &str = "fan-out: every event to each of N routes (1 KiB, unordered); rates are deliveries/s";
const G_EMB: &str = "hookrelay + embedded broker (producers POST /v1/events), realistic route, 1 KiB";

/// Seconds since the start at the last progress line, for the watchdog.
static LAST_PROGRESS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Ends the process if no step reports for `limit`: a stalled broker must not hang a CI job.
fn watchdog(started: Instant, limit: std::time::Duration) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            let last = LAST_PROGRESS.load(std::sync::atomic::Ordering::Relaxed);
            if started.elapsed().as_secs().saturating_sub(last) > limit.as_secs() {
                eprintln!("no step finished within {limit:?}: the run is stuck (is RabbitMQ healthy?); exiting");
                std::process::exit(3);
            }
        }
    });
}

impl Bench {
    fn progress(&self, what: &str, figures: &str) {
        LAST_PROGRESS.store(self.started.elapsed().as_secs(), std::sync::atomic::Ordering::Relaxed);
        eprintln!("[{:>6.1}s] {what}: {figures}", self.started.elapsed().as_secs_f64());
    }

    fn fail(&mut self, group: &str, what: &str, e: &str) {
        LAST_PROGRESS.store(self.started.elapsed().as_secs(), std::sync::atomic::Ordering::Relaxed);
        self.report.note(group, format!("{what} failed: {}", e.lines().next().unwrap_or(e)));
        eprintln!("{what} failed:\n{e}");
    }

    fn declare_rows(&mut self) {
        let r = &mut self.report;
        let p = Versus::Nothing;
        r.row(G_CEIL, "ceiling.consume.1k", "bare consumer, ack only", Unit::PerSec, p.clone());
        r.row(G_CEIL, "ceiling.post.1k", "bare hyper POST, 32 at once", Unit::PerSec, p.clone());
        r.row(
            G_CEIL,
            "ceiling.relay.1k",
            "bare relay (consume → POST → ack), 32 at once",
            Unit::PerSec,
            Versus::Ratio("ceiling.consume.1k".into()),
        );
        r.row(
            G_CEIL,
            "ceiling.relay1.1k",
            "bare relay, one at a time",
            Unit::PerSec,
            Versus::Ratio("ceiling.consume.1k".into()),
        );
        r.row(G_CEIL, "ceiling.relay.p50", "bare relay latency p50 (at the latency-run rate)", Unit::Millis, p.clone());
        r.row(G_CEIL, "ceiling.relay.p99", "bare relay latency p99 (at the latency-run rate)", Unit::Millis, p.clone());
        for (g, kind) in [(G_RMQ, "rabbitmq"), (G_EMB, "embedded")] {
            let k = |s: &str| format!("{kind}.{s}");
            let rate_vs = if kind == "rabbitmq" { "ceiling.consume.1k" } else { "ceiling.post.1k" };
            r.row(g, k("unordered.1k.rate"), "unordered route, events/s", Unit::PerSec, Versus::Ratio(rate_vs.into()));
            r.row(g, k("unordered.1k.cpu"), "router CPU per event, unordered", Unit::Micros, p.clone());
            r.row(g, k("unordered.1k.broker_cpu"), "RabbitMQ node CPU per event, unordered", Unit::Micros, p.clone());
            r.row(
                g,
                k("unordered.1k.harness_cpu"),
                "harness CPU per event (receiver, producers)",
                Unit::Micros,
                p.clone(),
            );
            r.row(g, k("unordered.1k.rss_peak"), "router peak RSS, unordered run", Unit::MiB, p.clone());
            r.row(g, k("idle.rss"), "router RSS once consuming, before any event", Unit::MiB, p.clone());
            r.row(
                g,
                k("ordered.1k.rate"),
                "ordered route, events/s",
                Unit::PerSec,
                Versus::Ratio("ceiling.relay1.1k".into()),
            );
            r.row(g, k("ordered.1k.cpu"), "router CPU per event, ordered", Unit::Micros, p.clone());
            r.row(
                g,
                k("latency.rate"),
                "latency runs: publish rate (half the unordered rate)",
                Unit::PerSec,
                p.clone(),
            );
            r.row(
                g,
                k("latency.p50"),
                "publish → receive p50",
                Unit::Millis,
                Versus::Minus("ceiling.relay.p50".into()),
            );
            r.row(
                g,
                k("latency.p99"),
                "publish → receive p99",
                Unit::Millis,
                Versus::Minus("ceiling.relay.p99".into()),
            );
            r.row(g, k("inflight.held"), "deliveries held open by the receiver", Unit::Count, p.clone());
            r.row(g, k("inflight.rss"), "router RSS with those deliveries in flight", Unit::MiB, p.clone());
            r.row(g, k("inflight.peak"), "router peak RSS, in-flight run", Unit::MiB, p.clone());
            if kind == "rabbitmq" {
                r.row(G_PAYLOAD, "ceiling.consume.64k", "bare consumer, ack only", Unit::PerSec, p.clone());
                r.row(G_PAYLOAD, "ceiling.post.64k", "bare hyper POST, 32 at once", Unit::PerSec, p.clone());
            }
            let gp = if kind == "rabbitmq" { G_PAYLOAD } else { G_EMB };
            let vs64 = if kind == "rabbitmq" { "ceiling.consume.64k" } else { "ceiling.post.64k" };
            r.row(
                gp,
                k("unordered.64k.rate"),
                format!("{kind}: unordered route, 64 KiB"),
                Unit::PerSec,
                Versus::Ratio(vs64.into()),
            );
            r.row(gp, k("unordered.64k.cpu"), format!("{kind}: router CPU per event, 64 KiB"), Unit::Micros, p.clone());
            r.row(gp, k("unordered.64k.rss_peak"), format!("{kind}: router peak RSS, 64 KiB"), Unit::MiB, p.clone());
            for n in self.opts.fanout.clone() {
                let gf = if kind == "rabbitmq" { G_FANOUT } else { G_EMB };
                if kind == "rabbitmq" {
                    let c = format!("ceiling.consume.fanout{n}");
                    r.row(gf, c, format!("bare consumer, {n} queues"), Unit::PerSec, p.clone());
                }
                let ceiling = format!("ceiling.consume.fanout{n}");
                r.row(
                    gf,
                    k(&format!("fanout{n}.rate")),
                    format!("{kind}: {n} routes"),
                    Unit::PerSec,
                    Versus::Ratio(ceiling),
                );
                r.row(
                    gf,
                    k(&format!("fanout{n}.cpu")),
                    format!("{kind}: router CPU per delivery, {n} routes"),
                    Unit::Micros,
                    p.clone(),
                );
                r.row(
                    gf,
                    k(&format!("fanout{n}.rss_peak")),
                    format!("{kind}: router peak RSS, {n} routes"),
                    Unit::MiB,
                    p.clone(),
                );
            }
        }
    }

    async fn ceilings(&mut self, size: Size, n: usize, key: &str) {
        let vh = Vhost::new();
        let consume = rabbit::bare_consumer(&vh.url(), 1, n, size, PREFETCH as u16).await;
        drop(vh);
        self.report.record(format!("ceiling.consume.{key}"), consume);
        let post = http::bare_post(&format!("{}/bare", self.rx.addr), n, size, CONCURRENCY).await;
        self.report.record(format!("ceiling.post.{key}"), post);
        self.progress(&format!("ceilings {}", size.label()), &format!("consume {consume:.0}/s, POST {post:.0}/s"));
    }

    async fn bare_relay(&mut self, n: usize, in_flight: usize) -> f64 {
        let vh = Vhost::new();
        rabbit::declare_bare(&vh.url(), 1).await;
        rabbit::publish_bulk(&vh.url(), "bare", "order.paid", Size::Kib1, n).await;
        self.rx.reset(None);
        rabbit::bare_relay(&vh.url(), &format!("{}/bare", self.rx.addr), n, PREFETCH as u16, in_flight).await;
        self.rx.rate()
    }

    async fn bare_relay_latency(&mut self, rate: f64, events: usize) -> process::Latency {
        let vh = Vhost::new();
        rabbit::declare_bare(&vh.url(), 1).await;
        let timeline = Timeline::new(events);
        self.rx.reset(Some(timeline.clone()));
        let (url, target) = (vh.url(), format!("{}/bare", self.rx.addr));
        let relay =
            tokio::spawn(async move { rabbit::bare_relay(&url, &target, events, PREFETCH as u16, CONCURRENCY).await });
        rabbit::publish_paced(&vh.url(), "bare", "order.paid", Size::Kib1, events, rate, &timeline).await;
        relay.await.expect("relay task");
        self.rx.reset(None);
        process::summarize(&timeline, events)
    }

    fn throughput_row(&mut self, prefix: &str, t: &process::Throughput, cpu_detail: bool) {
        self.report.record(format!("{prefix}.rate"), t.rate);
        self.report.record(format!("{prefix}.cpu"), t.cpu_us.router);
        self.report.record(format!("{prefix}.rss_peak"), t.peak_rss_mib);
        if cpu_detail {
            self.report.record(format!("{prefix}.broker_cpu"), t.cpu_us.broker);
            self.report.record(format!("{prefix}.harness_cpu"), t.cpu_us.harness);
        }
        self.progress(
            prefix,
            &format!(
                "{:.0}/s, router {:.1} µs/event, broker {:.1} µs/event, harness {:.1} µs/event, peak RSS {:.1} MiB",
                t.rate, t.cpu_us.router, t.cpu_us.broker, t.cpu_us.harness, t.peak_rss_mib
            ),
        );
    }

    /// Every hookrelay measure on one broker.
    async fn hookrelay(&mut self, kind: BusKind) {
        let (n, launch) = (self.opts.events, self.opts.launch.clone());
        let b = kind.label();
        let group = if kind == BusKind::RabbitMq { G_RMQ } else { G_EMB };
        if self.opts.wants("unordered") || self.opts.wants("latency") {
            match process::throughput(kind, &self.rx, &scenario(1, false, Size::Kib1), n, &launch).await {
                Ok(t) => {
                    self.throughput_row(&format!("{b}.unordered.1k"), &t, true);
                    self.report.record(format!("{b}.idle.rss"), t.idle_rss_mib);
                }
                Err(e) => self.fail(group, &format!("{b} unordered"), &e),
            }
        }
        if self.opts.wants("ordered") {
            let n = (n / 4).max(100);
            match process::throughput(kind, &self.rx, &scenario(1, true, Size::Kib1), n, &launch).await {
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
        if self.opts.wants("latency") {
            let max = self.report.current(&format!("{b}.unordered.1k.rate")).unwrap_or(f64::NAN);
            if max.is_nan() {
                self.fail(group, &format!("{b} latency"), "no unordered rate to take half of");
            } else {
                let rate = (max / 2.0).max(10.0);
                let events = ((rate * self.opts.latency_secs) as usize).max(200);
                self.report.record(format!("{b}.latency.rate"), rate);
                if self.report.current("ceiling.relay.p99").is_none() {
                    let l = self.bare_relay_latency(rate, events).await;
                    self.report.record("ceiling.relay.p50", l.p50_ms);
                    self.report.record("ceiling.relay.p99", l.p99_ms);
                    self.progress(
                        "bare relay latency",
                        &format!("{rate:.0}/s: p50 {:.2} ms, p99 {:.2} ms", l.p50_ms, l.p99_ms),
                    );
                }
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
            let k = self.opts.in_flight;
            let s = Scenario {
                concurrency: k,
                prefetch: k as u32,
                timeout: Some("600s"),
                ..scenario(1, false, Size::Kib1)
            };
            match process::in_flight(kind, &self.rx, &s, k, &launch).await {
                Ok(m) => {
                    self.report.record(format!("{b}.inflight.held"), m.held as f64);
                    self.report.record(format!("{b}.inflight.rss"), m.rss_mib);
                    self.report.record(format!("{b}.inflight.peak"), m.peak_rss_mib);
                    self.progress(
                        &format!("{b} in flight"),
                        &format!("{} held, RSS {:.1} MiB, peak {:.1} MiB", m.held, m.rss_mib, m.peak_rss_mib),
                    );
                }
                Err(e) => {
                    self.rx.hold(false);
                    self.fail(group, &format!("{b} in flight"), &e)
                }
            }
        }
        if self.opts.wants("payload") {
            let n = (n / 8).max(100);
            if kind == BusKind::RabbitMq || self.report.current("ceiling.consume.64k").is_none() {
                self.ceilings(Size::Kib64, n, "64k").await;
            }
            match process::throughput(kind, &self.rx, &scenario(1, false, Size::Kib64), n, &launch).await {
                Ok(t) => self.throughput_row(&format!("{b}.unordered.64k"), &t, false),
                Err(e) => {
                    self.fail(if kind == BusKind::RabbitMq { G_PAYLOAD } else { G_EMB }, &format!("{b} 64 KiB"), &e)
                }
            }
        }
        if self.opts.wants("fanout") {
            for routes in self.opts.fanout.clone() {
                let per = (n / routes).max(50);
                let ceiling = format!("ceiling.consume.fanout{routes}");
                if self.report.current(&ceiling).is_none() {
                    let vh = Vhost::new();
                    let c = rabbit::bare_consumer(&vh.url(), routes, per, Size::Kib1, PREFETCH as u16).await;
                    self.report.record(&ceiling, c);
                    self.progress(&format!("bare consumer, {routes} queues"), &format!("{c:.0} deliveries/s"));
                }
                match process::throughput(kind, &self.rx, &scenario(routes, false, Size::Kib1), per, &launch).await {
                    Ok(t) => self.throughput_row(&format!("{b}.fanout{routes}"), &t, false),
                    Err(e) => {
                        let g = if kind == BusKind::RabbitMq { G_FANOUT } else { G_EMB };
                        self.fail(g, &format!("{b} {routes} routes"), &e)
                    }
                }
            }
        }
    }

    async fn repetition(&mut self, embedded: bool) {
        let n = self.opts.events;
        if self.opts.wants("ceilings") {
            self.ceilings(Size::Kib1, n, "1k").await;
            let relay = self.bare_relay(n, CONCURRENCY).await;
            self.report.record("ceiling.relay.1k", relay);
            let relay1 = self.bare_relay((n / 4).max(100), 1).await;
            self.report.record("ceiling.relay1.1k", relay1);
            self.progress("bare relay", &format!("32 at once {relay:.0}/s, one at a time {relay1:.0}/s"));
        }
        self.hookrelay(BusKind::RabbitMq).await;
        if embedded {
            self.hookrelay(BusKind::Embedded).await;
        }
    }
}

fn targets(embedded: bool) -> Vec<Target> {
    let mut out = Vec::new();
    for (b, name) in [("rabbitmq", "RabbitMQ"), ("embedded", "embedded")] {
        if b == "embedded" && !embedded {
            continue;
        }
        let t = |text: &str, key: &str, on_compared, bound, limit| Target {
            name: format!("{name}: {text}"),
            key: format!("{b}.{key}"),
            on_compared,
            bound,
            limit,
        };
        if b == "rabbitmq" {
            out.push(t("unordered route, share of the bare consumer", "unordered.1k.rate", true, Bound::AtLeast, 0.8));
        }
        out.push(t("router CPU per event (µs), realistic unordered", "unordered.1k.cpu", false, Bound::AtMost, 25.0));
        out.push(t("p99 latency added at half load (ms)", "latency.p99", true, Bound::Below, 5.0));
        out.push(t("RSS (MiB) with 10,000 events in flight", "inflight.rss", false, Bound::Below, 64.0));
    }
    out
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let opts = Opts::parse();
    let started = Instant::now();
    watchdog(started, std::time::Duration::from_secs(900));
    let rx = Receiver::start().await;
    let mut bench = Bench { opts: opts.clone(), rx, report: Report::default(), started };
    bench.declare_rows();
    let embedded = if opts.wants("embedded") {
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
        bench.repetition(embedded).await;
    }
    let targets = targets(embedded);
    let title = format!(
        "hookrelay throughput — {} events of ~1 KiB per run (ordered: {}, 64 KiB: {}, fan-out: N × {}/N), \
         prefetch {PREFETCH}, route concurrency {CONCURRENCY}, {} repetition(s), {:.0} s",
        opts.events,
        (opts.events / 4).max(100),
        (opts.events / 8).max(100),
        opts.events,
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
            "latency_secs": opts.latency_secs, "latency_warmup_share": process::WARMUP, "in_flight": opts.in_flight,
            "only": opts.only, "wrap": opts.launch.wrap,
            "seconds": started.elapsed().as_secs_f64(),
        });
        let text = serde_json::to_string_pretty(&bench.report.json(meta, &targets)).expect("JSON");
        std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        eprintln!("wrote {path}");
    }
}
