//! hookrelay as users run it: the release binary started as a process on a config directory the
//! harness writes, with RabbitMQ (a vhost of its own) or the embedded broker behind it. The runs:
//!
//! - throughput: events per second first to last arrival, router CPU per delivery, peak RSS,
//!   from a queue filled before the router starts (both brokers), or with producers POSTing to
//!   the router's `/v1/events` while it delivers (embedded broker);
//! - latency: publish-to-receive p50/p99 at a fixed publish rate;
//! - in flight: resident memory with N events in the router (prefetched, a few being delivered)
//!   or N deliveries held open by the receiver, beside the idle router on the same config;
//! - backlog: resident memory of a router started on a queue with a million events waiting.
//!
//! A run is a function of the broker ([`Bus`]) and the [`Scenario`]. A queue is filled with
//! the router stopped: on RabbitMQ with lapin, on the embedded broker through the library's
//! `Broker::publish` on the router's own queue file (the router holds the file's lock while it
//! runs, so producers reach a running router through `POST /v1/events`).

use crate::common::{self, BrokerSpec, RouteConfig, Size, realistic_route};
use crate::rabbit::{self, Vhost};
use crate::receiver::{Receiver, Timeline, quantile};
use crate::sys::{self, CpuSample};
use std::collections::VecDeque;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod backlog;
pub(crate) use backlog::backlog;

/// How the harness starts the router: optionally under a wrapper such as
/// `valgrind --tool=callgrind`, which needs longer to start.
#[derive(Debug, Clone, Default)]
pub(crate) struct Launch {
    pub(crate) wrap: Vec<String>,
}

impl Launch {
    fn start_limit(&self) -> Duration {
        if self.wrap.is_empty() { Duration::from_secs(120) } else { Duration::from_secs(900) }
    }
}

/// What the router's log said when it started consuming.
#[derive(Debug, Clone)]
pub(crate) struct Consuming {
    pub(crate) cpu: CpuSample,
    pub(crate) rss_mib: f64,
    pub(crate) broker: String,
}

#[derive(Default)]
struct Log {
    tail: VecDeque<String>,
    consuming: Option<Consuming>,
}

/// A running router process.
pub(crate) struct Router {
    child: Child,
    log: Arc<Mutex<Log>>,
}

impl Router {
    /// Starts `hookrelay run --config dir` with JSON logs at `info` on a piped stderr.
    pub(crate) fn start(dir: &Path, launch: &Launch) -> Self {
        let bin = env!("CARGO_BIN_EXE_hookrelay");
        let mut cmd = match launch.wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                // A wrapper such as valgrind runs the router tens of times slower: scripts would
                // go past their 1 ms on the async worker and every event would take the script
                // pool, a path the router at full speed does not take. The allowance is scaled
                // with it, so that instruction counts are those of the path measured unwrapped.
                c.env("HOOKRELAY_SCRIPTS__INLINE_ALLOWANCE", "1s");
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["--log-format", "json", "run", "--config"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let pid = child.id();
        let log = Arc::new(Mutex::new(Log::default()));
        let stderr = child.stderr.take().expect("piped stderr");
        let l = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
                let mut log = l.lock().expect("not poisoned");
                if let Some(v) = &parsed
                    && v["message"] == "consuming"
                    && log.consuming.is_none()
                {
                    log.consuming = Some(Consuming {
                        cpu: CpuSample::take(pid),
                        rss_mib: sys::rss_mib(pid),
                        broker: v["broker"].as_str().unwrap_or("?").to_string(),
                    });
                }
                log.tail.push_back(line);
                if log.tail.len() > 30 {
                    log.tail.pop_front();
                }
            }
        });
        Self { child, log }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log.
    pub(crate) fn tail(&self) -> String {
        self.log.lock().expect("not poisoned").tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits for the log's `consuming` line (every route declared and consuming).
    pub(crate) async fn consuming(&mut self, limit: Duration) -> Result<Consuming, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = self.log.lock().expect("not poisoned").consuming.clone() {
                return Ok(c);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the router exited ({status}) before consuming:\n{}", self.tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("the router did not start consuming within {limit:?}:\n{}", self.tail()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 30 s.
    pub(crate) fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where producers publish: RabbitMQ (a vhost of the run's own) or the embedded broker behind
/// the router's ingest API.
pub(crate) enum Bus {
    RabbitMq(Vhost),
    Embedded { api: String },
}

/// The broker variants a run can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BusKind {
    RabbitMq,
    Embedded,
}

impl BusKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            BusKind::RabbitMq => "rabbitmq",
            BusKind::Embedded => "embedded",
        }
    }

    pub(crate) fn open(self) -> Bus {
        match self {
            BusKind::RabbitMq => Bus::RabbitMq(Vhost::new()),
            BusKind::Embedded => Bus::Embedded { api: format!("127.0.0.1:{}", free_port()) },
        }
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Bus {
    pub(crate) fn broker_spec(&self, prefetch: u32) -> BrokerSpec {
        match self {
            Bus::RabbitMq(vh) => BrokerSpec::RabbitMq { url: vh.url(), prefetch },
            Bus::Embedded { .. } => BrokerSpec::Embedded,
        }
    }

    /// `[api] listen`: any free port with RabbitMQ; a known one when producers POST to it.
    fn api_listen(&self) -> String {
        match self {
            Bus::RabbitMq(_) => "127.0.0.1:0".into(),
            Bus::Embedded { api } => api.clone(),
        }
    }

    fn ingest_url(&self) -> Option<String> {
        match self {
            Bus::RabbitMq(_) => None,
            Bus::Embedded { api } => Some(format!("http://{api}/v1/events")),
        }
    }

    /// Fills the route queues of the config in `dir` with events `0..n`, the router stopped (its
    /// first start declared them). Publishes per second.
    async fn prefill(&self, dir: &Path, size: Size, n: usize, progress: impl Fn(usize)) -> Result<f64, String> {
        let start = Instant::now();
        match self {
            Bus::RabbitMq(vh) => {
                rabbit::publish_bulk(&vh.url(), "hookrelay.events", "order.paid", size, n).await;
                Ok(n as f64 / start.elapsed().as_secs_f64())
            }
            Bus::Embedded { .. } => {
                let broker = crate::embedded::open(&common::queue_file(dir)).await?;
                let rate = crate::embedded::publish_bulk(&broker, size, n, progress).await;
                broker.shutdown().await;
                rate
            }
        }
    }

    /// Producers POSTing events `0..n` to the running router's `/v1/events`, 32 at once.
    async fn post_bulk(&self, size: Size, n: usize) -> Result<(), String> {
        match self.ingest_url() {
            Some(url) => crate::http::ingest_bulk(&url, size, n, 32).await,
            None => Err("producers POST to the embedded broker only".into()),
        }
    }

    async fn publish_paced(&self, size: Size, n: usize, rate: f64, timeline: &Arc<Timeline>) -> Result<(), String> {
        match self {
            Bus::RabbitMq(vh) => {
                rabbit::publish_paced(&vh.url(), "hookrelay.events", "order.paid", size, n, rate, timeline).await;
                Ok(())
            }
            Bus::Embedded { .. } => {
                crate::http::ingest_paced(&self.ingest_url().expect("embedded"), size, n, rate, timeline).await
            }
        }
    }
}

/// What a run routes: `routes` realistic routes all subscribed to the bench events (fan-out).
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) routes: usize,
    pub(crate) ordered: bool,
    pub(crate) size: Size,
    pub(crate) concurrency: usize,
    pub(crate) prefetch: u32,
    /// Per-attempt timeout, when the default 10 s would cut a held request short.
    pub(crate) timeout: Option<Duration>,
    /// `order_key` of an ordered route (the `per_key_order` group).
    pub(crate) order_key: Option<&'static str>,
}

impl Scenario {
    fn write(&self, dir: &Path, bus: &Bus, rx: &Receiver) {
        let routes: Vec<RouteConfig> = (0..self.routes)
            .map(|k| {
                let route =
                    realistic_route(format!("bench-{k}"), format!("{}/r{k}", rx.addr), self.ordered, self.concurrency);
                let route = match self.order_key {
                    Some(k) => route.order_key(k),
                    None => route,
                };
                match self.timeout {
                    Some(t) => route.timeout(t),
                    None => route,
                }
            })
            .collect();
        common::write_config(dir, &bus.broker_spec(self.prefetch), &bus.api_listen(), &routes);
    }
}

/// Figures of one throughput run.
#[derive(Debug, Clone)]
pub(crate) struct Throughput {
    /// Deliveries per second, first to last arrival.
    pub(crate) rate: f64,
    /// CPU per delivery (router, broker, harness), in µs.
    pub(crate) cpu_us: CpuSample,
    pub(crate) peak_rss_mib: f64,
    /// Resident memory once consuming, before the first event.
    pub(crate) idle_rss_mib: f64,
}

/// Waits until the ingest API answers (any HTTP status) on `api`.
pub(crate) async fn api_up(api: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while tokio::net::TcpStream::connect(api).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("the router's API did not listen on {api} within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Starts a router on `dir` and waits until it consumes (and, for the embedded broker, until
/// its API listens).
pub(crate) async fn start(dir: &Path, bus: &Bus, launch: &Launch) -> Result<(Router, Consuming), String> {
    let mut r = Router::start(dir, launch);
    let c = r.consuming(launch.start_limit()).await?;
    if let Bus::Embedded { api } = bus {
        api_up(api, Duration::from_secs(30)).await.map_err(|e| format!("{e}\n{}", r.tail()))?;
    }
    Ok((r, c))
}

/// The events of a run, the deliveries they make, and how long the receiver may take.
fn wait_limit(deliveries: usize, launch: &Launch) -> Duration {
    let per = if launch.wrap.is_empty() { 5 } else { 200 };
    Duration::from_secs(60) + Duration::from_millis(per * deliveries as u64)
}

/// How the events of a throughput run reach the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feed {
    /// The queue is filled before the router starts: it drains a full queue.
    Prefilled,
    /// Producers POST to the running router's `/v1/events` as fast as they can while it
    /// delivers (embedded broker only): ingest, broker and delivery at once.
    Posted,
}

/// Events per second. Pre-filled: a first router declares the topology and stops, `events` are
/// published, and a fresh router is timed draining the queue. Posted: producers POST while the
/// router delivers.
pub(crate) async fn throughput(
    kind: BusKind,
    rx: &Receiver,
    s: &Scenario,
    events: usize,
    feed: Feed,
    launch: &Launch,
) -> Result<Throughput, String> {
    let bus = kind.open();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    s.write(dir.path(), &bus, rx);
    let deliveries = events * s.routes;
    let (router, startup, idle_rss_mib) = match feed {
        Feed::Prefilled => {
            // The first start declares the topology and tells what start-up alone costs.
            let (first, declared) = start(dir.path(), &bus, launch).await?;
            first.stop();
            bus.prefill(dir.path(), s.size, events, |_| {}).await?;
            rx.reset(None);
            let (router, measured) = start(dir.path(), &bus, launch).await?;
            // The router's own baseline is the first process's start-up (the same work: load,
            // connect, declare), so that events delivered before the `consuming` line count;
            // the broker's and the harness's are taken now, after the pre-fill.
            let cpu = CpuSample { router: declared.cpu.router, ..measured.cpu };
            (router, Consuming { cpu, ..measured }, declared.rss_mib)
        }
        Feed::Posted => {
            let (router, consuming) = start(dir.path(), &bus, launch).await?;
            rx.reset(None);
            let c = Consuming { cpu: CpuSample::take(router.pid()), ..consuming };
            bus.post_bulk(s.size, events).await.map_err(|e| format!("{e}\n{}", router.tail()))?;
            let idle = c.rss_mib;
            (router, c, idle)
        }
    };
    let waited = rx.wait(deliveries, wait_limit(deliveries, launch)).await;
    let end = CpuSample::take(router.pid());
    let peak = sys::peak_rss_mib(router.pid());
    let tail = router.tail();
    router.stop();
    waited.map_err(|e| format!("{e}\n{tail}"))?;
    Ok(Throughput {
        rate: rx.rate(),
        cpu_us: startup.cpu.per_event_us(&end, deliveries),
        peak_rss_mib: peak,
        idle_rss_mib,
    })
}

/// Latency percentiles of one paced run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// The share of a paced run's first events left out of its percentiles (connections warming).
pub(crate) const WARMUP: f64 = 0.1;

/// Publish-to-receive latency with events published at `rate` per second for `events` events,
/// on a router already consuming.
pub(crate) async fn latency(
    kind: BusKind,
    rx: &Receiver,
    s: &Scenario,
    rate: f64,
    events: usize,
    launch: &Launch,
) -> Result<Latency, String> {
    let bus = kind.open();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    s.write(dir.path(), &bus, rx);
    let (router, _) = start(dir.path(), &bus, launch).await?;
    let timeline = Timeline::new(events);
    rx.reset(Some(timeline.clone()));
    let published = bus.publish_paced(s.size, events, rate, &timeline).await;
    let waited = rx.wait(events * s.routes, wait_limit(events, launch)).await;
    let tail = router.tail();
    router.stop();
    rx.reset(None);
    published.and(waited).map_err(|e| format!("{e}\n{tail}"))?;
    Ok(summarize(&timeline, events))
}

pub(crate) fn summarize(timeline: &Timeline, events: usize) -> Latency {
    let l = timeline.latencies_ms((events as f64 * WARMUP) as usize);
    Latency { p50_ms: quantile(&l, 0.5), p99_ms: quantile(&l, 0.99) }
}

/// Resident memory with events in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    /// Deliveries the receiver held open when memory was read.
    pub(crate) held: usize,
    /// Events delivered to the router and not yet acked when memory was read: RabbitMQ's
    /// `messages_unacknowledged` (management API); `None` on the embedded broker, whose file
    /// the router holds.
    pub(crate) unacked: Option<usize>,
    /// Resident memory of a router on the same config, consuming the empty queue (2 s after its
    /// `consuming` line).
    pub(crate) idle_rss_mib: f64,
    pub(crate) rss_mib: f64,
    pub(crate) peak_rss_mib: f64,
    /// Of the resident memory when read: anonymous memory in transparent huge pages
    /// (`AnonHugePages` of `/proc/PID/smaps_rollup`).
    pub(crate) huge_mib: f64,
}

/// Starts a router on the route's config with an empty queue, reads its resident memory once
/// it has consumed for 2 s, and stops it: the baseline of the in-flight readings (the same
/// config, so the same prefetch, concurrency, client and topology). The start also declares
/// the topology the prefill needs.
async fn idle_rss(dir: &Path, bus: &Bus, launch: &Launch) -> Result<f64, String> {
    let (router, _) = start(dir, bus, launch).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = sys::rss_mib(router.pid());
    router.stop();
    Ok(rss)
}

/// Publishes `events` with the router stopped, has the receiver hold every request open, starts
/// the router, and reads its resident memory once the receiver holds as many deliveries as the
/// route's concurrency allows (`min(events, concurrency)`) and, on RabbitMQ, every event is
/// delivered to the router and unacked (the prefetch being at least `events`); or once nothing
/// has moved for 10 s, or after 120 s. Then releases them and waits until all are delivered.
pub(crate) async fn in_flight(
    kind: BusKind,
    rx: &Receiver,
    s: &Scenario,
    events: usize,
    launch: &Launch,
) -> Result<InFlight, String> {
    let bus = kind.open();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    s.write(dir.path(), &bus, rx);
    rx.reset(None);
    let idle_rss_mib = idle_rss(dir.path(), &bus, launch).await?;
    bus.prefill(dir.path(), s.size, events, |_| {}).await?;
    rx.hold(true);
    let router = start(dir.path(), &bus, launch).await?.0;
    let want_held = events.min(s.concurrency);
    let unacked = || async {
        match &bus {
            Bus::RabbitMq(vh) => {
                let vh = vh.name().to_string();
                tokio::task::spawn_blocking(move || rabbit::queue_counts(&vh, "hookrelay.route.bench-0"))
                    .await
                    .ok()
                    .flatten()
                    .map(|(_, unacked)| unacked as usize)
            }
            Bus::Embedded { .. } => None,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stable = ((0, None), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = (rx.held(), unacked().await);
        if now.0 >= want_held && (kind == BusKind::Embedded || now.1.is_some_and(|u| u >= events)) {
            break;
        }
        // Stop waiting once nothing has moved for 10 s: the router holds no more.
        if now != stable.0 {
            stable = (now, Instant::now());
        } else if stable.1.elapsed() > Duration::from_secs(10) || Instant::now() > deadline {
            break;
        }
    }
    // A moment for what the last deliveries allocate to settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = rx.held();
    let unacked = unacked().await;
    let (rss, peak, huge) = (sys::rss_mib(router.pid()), sys::peak_rss_mib(router.pid()), sys::huge_mib(router.pid()));
    rx.hold(false);
    let waited = rx.wait(events, Duration::from_secs(300)).await;
    let tail = router.tail();
    router.stop();
    waited.map_err(|e| format!("{e}\n{tail}"))?;
    Ok(InFlight { held, unacked, idle_rss_mib, rss_mib: rss, peak_rss_mib: peak, huge_mib: huge })
}

/// Whether this build has the embedded broker and its ingest API: a router on a config without
/// `[broker]` must report a broker other than RabbitMQ and accept `POST /v1/events`. `Err` says
/// why not.
pub(crate) async fn embedded_available(rx: &Receiver, launch: &Launch) -> Result<(), String> {
    let bus = BusKind::Embedded.open();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let probe = realistic_route("bench-embedded-probe", format!("{}/probe", rx.addr), false, 1);
    common::write_config(dir.path(), &bus.broker_spec(100), &bus.api_listen(), &[probe]);
    let mut router = Router::start(dir.path(), launch);
    let outcome = match router.consuming(Duration::from_secs(30)).await {
        Err(e) => Err(format!("a router without [broker] did not start: {}", e.lines().next().unwrap_or(""))),
        Ok(c) if c.broker == "rabbitmq" => {
            Err("a config without [broker] still uses RabbitMQ (the embedded broker is not in this build)".into())
        }
        Ok(_) => match api_up(&bus.api_listen(), Duration::from_secs(10)).await {
            Err(e) => Err(e),
            Ok(()) => crate::http::ingest_bulk(&bus.ingest_url().expect("embedded"), Size::Kib1, 1, 1).await,
        },
    };
    router.stop();
    if outcome.is_err() {
        // A build without the embedded broker declared the probe's queues on vhost `/`.
        rabbit::delete_default_vhost_queues("hookrelay.route.bench-embedded-probe");
    }
    outcome
}
