//! Reload cost for 10, 100 and 1,000 routes, in one run, on the benchmarks' realistic route
//! (JSON Schema, a Rhai filter, redaction, Standard Webhooks signing; one route in four ordered),
//! every config written by `common::write_config`:
//!
//! - load: parse every file, compile schemas and scripts, check the policy, in this process
//!   (`hookrelay::config::load`, the library call a reload makes; best of 5);
//! - validate: `hookrelay validate` as a process, what a pre-commit hook pays (best of 3);
//! - start: a fresh router declaring the whole topology (N quorum queues, their bindings, the
//!   wait queues) until it consumes, from the log;
//! - reload, all changed: SIGHUP with a header changed on every route and one route added, to the
//!   `config reloaded` line (load, compile, diff, the added route's topology, the swap of N
//!   running routes);
//! - reload, all rebound: SIGHUP with an event pattern added to every route, to the line: the
//!   same, plus the topology reconciled for every route (each queue declared and bound again).
//!
//! Needs RabbitMQ with the management plugin (a vhost per size, deleted at the end).
//! `cargo bench --bench reload [-- --sizes 10,100,1000]`. Prints figures; never pass/fail.

#[path = "common/mod.rs"]
mod common;

use base64::Engine as _;
use common::{BrokerSpec, RouteConfig, realistic_route};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

fn mgmt() -> (String, String) {
    let url =
        std::env::var("HOOKRELAY_TEST_MANAGEMENT_URL").unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".into());
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", &url));
    let (auth, host) = rest.rsplit_once('@').unwrap_or(("guest:guest", rest));
    (
        format!("{scheme}://{}/api", host.trim_end_matches('/')),
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(auth)),
    )
}

struct Vhost(String);

impl Vhost {
    fn new() -> Self {
        let (api, auth) = mgmt();
        let name = format!("hookrelay-bench-{}", uuid::Uuid::new_v4().simple());
        ureq::put(&format!("{api}/vhosts/{name}")).header("authorization", &auth).send_json(json!({})).expect("vhost");
        ureq::put(&format!("{api}/permissions/{name}/guest"))
            .header("authorization", &auth)
            .send_json(json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .expect("permissions");
        Self(name)
    }

    fn amqp_url(&self) -> String {
        let base =
            std::env::var("HOOKRELAY_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into());
        format!("{base}/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let (api, auth) = mgmt();
        let _ = ureq::delete(&format!("{api}/vhosts/{}", self.0)).header("authorization", &auth).call();
    }
}

/// Route `i` of a config: one in four ordered (with 5 attempts, whose waits stay under
/// RabbitMQ's consumer_timeout), `rev` in a header, and the given patterns.
fn route(i: usize, rev: usize, events: &[&str]) -> RouteConfig {
    let ordered = i.is_multiple_of(4);
    let route = realistic_route(format!("r{i}"), format!("http://127.0.0.1:9/r{i}"), ordered, 16)
        .events(events.iter().copied())
        .header("x-config-rev", rev.to_string());
    if ordered { route.max_attempts(5) } else { route }
}

/// The log's complete lines: a line still being written (at 1,000 routes the `config reloaded`
/// line is about 6 KB) has no newline yet, and is left for the next read.
fn complete_lines(log: &Path) -> String {
    let mut text = std::fs::read_to_string(log).unwrap_or_default();
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    text
}

fn log_count(log: &Path, needle: &str) -> usize {
    complete_lines(log).lines().filter(|l| l.contains(needle)).count()
}

/// The router process, killed when dropped, also when a measurement panics.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `needle` is in `n` lines of the log; the time since `start`.
fn wait_log(log: &Path, needle: &str, n: usize, start: Instant) -> Duration {
    while log_count(log, needle) < n {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!text.contains("reload rejected"), "a reload was rejected:\n{text}");
        assert!(start.elapsed() < Duration::from_secs(600), "no {needle:?} in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

struct Row {
    routes: usize,
    load: Duration,
    validate: Duration,
    start: Duration,
    reload_changed: Duration,
    reload_rebound: Duration,
}

fn measure(n: usize) -> Row {
    let vh = Vhost::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = BrokerSpec::RabbitMq { url: vh.amqp_url(), prefetch: 64 };
    let write = |routes: Vec<RouteConfig>| common::write_config(dir.path(), &broker, "127.0.0.1:0", &routes);
    write((0..n).map(|i| route(i, 1, &["order.*"])).collect());

    let load = (0..5)
        .map(|_| {
            let t = Instant::now();
            let snapshot = hookrelay::config::load(dir.path()).unwrap_or_else(|e| panic!("bench config: {e}"));
            let took = t.elapsed();
            assert_eq!(snapshot.routes.len(), n);
            assert!(snapshot.warnings.is_empty(), "{:?}", snapshot.warnings);
            took
        })
        .min()
        .expect("five runs");
    let validate = (0..3)
        .map(|_| {
            let t = Instant::now();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
                .args(["validate", "--config"])
                .arg(dir.path())
                .output()
                .expect("run validate");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
            t.elapsed()
        })
        .min()
        .expect("three runs");

    let log = dir.path().join("router.log");
    let t = Instant::now();
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["run", "--config"])
            .arg(dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start hookrelay"),
    );
    let start = wait_log(&log, "consuming", 1, t);
    let hup = |child: &Child| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.0.id() as i32), nix::sys::signal::Signal::SIGHUP)
            .expect("SIGHUP")
    };

    // Every route changed (its header), one added.
    write((0..=n).map(|i| route(i, 2, &["order.*"])).collect());
    let t = Instant::now();
    hup(&child);
    let reload_changed = wait_log(&log, "config reloaded", 1, t);
    let text = complete_lines(&log);
    let line = text.lines().find(|l| l.contains("config reloaded")).unwrap_or_default();
    let changed = line.split("changed=[").nth(1).map_or(0, |c| c.matches('"').count() / 2);
    assert!(line.contains(&format!("added=[\"r{n}\"]")) && changed == n, "every route changed: {line}");

    // Every route rebound: a pattern added to each, so each queue is declared and bound again.
    write((0..=n).map(|i| route(i, 2, &["order.*", "refund.*"])).collect());
    let t = Instant::now();
    hup(&child);
    let reload_rebound = wait_log(&log, "config reloaded", 2, t);

    drop(child);
    Row { routes: n, load, validate, start, reload_changed, reload_rebound }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    let rows: Vec<Row> = sizes.into_iter().map(measure).collect();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("\nhookrelay config load and reload (the realistic route, 1 in 4 ordered; milliseconds)");
    println!(
        "{:>7} {:>12} {:>10} {:>12} {:>22} {:>22}",
        "routes", "load (lib)", "validate", "start", "reload: all changed", "reload: all rebound"
    );
    println!(
        "{:>7} {:>12} {:>10} {:>12} {:>22} {:>22}",
        "", "in process", "process", "declare", "+1 added, swap", "declare N+1, swap"
    );
    for r in &rows {
        println!(
            "{:>7} {:>12.1} {:>10.1} {:>12.1} {:>22.1} {:>22.1}",
            r.routes,
            ms(r.load),
            ms(r.validate),
            ms(r.start),
            ms(r.reload_changed),
            ms(r.reload_rebound)
        );
    }
    let json: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({"routes": r.routes, "load_ms": ms(r.load), "validate_ms": ms(r.validate), "start_ms": ms(r.start),
                "reload_all_changed_ms": ms(r.reload_changed), "reload_all_rebound_ms": ms(r.reload_rebound)})
        })
        .collect();
    println!("{}", serde_json::Value::Array(json));
}
