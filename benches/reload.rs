//! Reload cost for 10, 100 and 1,000 routes, in one run:
//!
//! - load: parse every file, compile schemas and scripts, check the policy (in-process,
//!   `config::load`, best of 3);
//! - start: a fresh router declaring the whole topology until it consumes (quorum queues,
//!   bindings, wait queues), from the log;
//! - reload: SIGHUP with one route changed and one added, to "config reloaded" (load, compile,
//!   topology of what changed, atomic swap), from the log.
//!
//! Needs RabbitMQ with the management plugin (a vhost per size, deleted at the end).
//! `cargo bench --bench reload [-- --sizes 10,100,1000]`. Prints figures; never pass/fail.

use base64::Engine as _;
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
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let (api, auth) = mgmt();
        let _ = ureq::delete(&format!("{api}/vhosts/{}", self.0)).header("authorization", &auth).call();
    }
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn route(i: usize, url: &str) -> String {
    format!(
        "events = [\"t{}.created\", \"t{}.paid\"]\nurl = \"{url}/r{i}\"\nordered = {}\nfilter = \"plugins/p{}.rhai\"\nredact = [\"data.customer.email\"]\n[signing]\nsecret_env = \"BENCH_SECRET\"\n[retry]\nbackoff = [\"5s\", \"1m\"]\n",
        i % 20,
        i % 20,
        i.is_multiple_of(4),
        i % 5
    )
}

fn config(dir: &Path, vhost: &str, n: usize) {
    write(
        dir,
        "hookrelay.toml",
        &format!(
            "version = 1\n[broker]\nurl = \"amqp://guest:guest@127.0.0.1:5672/{vhost}\"\n[security]\nallow_http = true\nallow_private_networks = true\n[store]\nurl = \"sqlite://{}/hookrelay.db\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
            dir.display()
        ),
    );
    for t in 0..20 {
        for ev in ["created", "paid"] {
            write(
                dir,
                &format!("schemas/t{t}.{ev}/v1.json"),
                r#"{"type":"object","required":["id","total"],"properties":{"id":{"type":"string"},"total":{"type":"number","minimum":0},"customer":{"type":"object","properties":{"email":{"type":"string","format":"email"}}}}}"#,
            );
        }
    }
    for p in 0..5 {
        write(
            dir,
            &format!("plugins/p{p}.rhai"),
            &format!("fn filter(event) {{ event.data.total > {p} && event.subject != \"test\" }}\n"),
        );
    }
    for i in 0..n {
        write(dir, &format!("routes/r{i}.toml"), &route(i, "http://127.0.0.1:9"));
    }
}

fn log_has(log: &Path, needle: &str) -> bool {
    std::fs::read_to_string(log).unwrap_or_default().contains(needle)
}

fn wait_log(log: &Path, needle: &str, start: Instant) -> Duration {
    while !log_has(log, needle) {
        assert!(start.elapsed() < Duration::from_secs(600), "no {needle:?} in the log");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut rows = Vec::new();
    for n in sizes {
        let vh = Vhost::new();
        let dir = tempfile::tempdir().unwrap();
        config(dir.path(), &vh.0, n);
        let load = (0..3)
            .map(|_| {
                let t = Instant::now();
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
                    .args(["validate", "--allow-missing-secrets", "--config"])
                    .arg(dir.path())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
                t.elapsed()
            })
            .min()
            .unwrap();
        let log = dir.path().join("router.log");
        let t = Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["run", "--config"])
            .arg(dir.path())
            .env("BENCH_SECRET", secret)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let start = wait_log(&log, "consuming", t);
        write(dir.path(), "routes/r0.toml", &route(0, "http://127.0.0.1:10"));
        write(dir.path(), &format!("routes/r{n}.toml"), &route(n, "http://127.0.0.1:9"));
        let t = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGHUP)
            .unwrap();
        let reload = wait_log(&log, "config reloaded", t);
        let _ = child.kill();
        let _ = child.wait();
        rows.push((n, load, start, reload));
    }
    println!("\nhookrelay config load and reload (20 event types, 5 shared plugins, 1 in 4 routes ordered)");
    println!(
        "{:>7} {:>22} {:>26} {:>30}",
        "routes", "validate (load+compile)", "start (topology, consume)", "SIGHUP reload (1 changed, 1 added)"
    );
    for (n, load, start, reload) in &rows {
        println!(
            "{n:>7} {:>20.1}ms {:>24.1}ms {:>30.1}ms",
            load.as_secs_f64() * 1e3,
            start.as_secs_f64() * 1e3,
            reload.as_secs_f64() * 1e3
        );
    }
    let json: Vec<_> = rows
        .iter()
        .map(|(n, l, s, r)| json!({"routes": n, "validate_ms": l.as_secs_f64() * 1e3, "start_ms": s.as_secs_f64() * 1e3, "reload_ms": r.as_secs_f64() * 1e3}))
        .collect();
    println!("{}", serde_json::Value::Array(json));
}
