//! The commands around the router: `route test` (the exact request, or the dead letter's reason),
//! `publish` and `listen` end to end, and usage errors exiting 2 where runtime failures exit 1.

use super::{hookrelay, local_cfg, text};
use crate::common::*;
use std::process::Command;

#[test]
fn route_test_shows_the_exact_request_or_the_dead_letter_reason() {
    let cfg = local_cfg();
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url("http://127.0.0.1:1/hook").redact(["data.secret"]));
    cfg.file(
        "ok.json",
        r#"{"specversion":"1.0","id":"e1","source":"s","type":"order.paid","data":{"n":1,"secret":"x"}}"#,
    );
    cfg.file("bad.json", r#"{"specversion":"1.0","id":"e2","source":"s","type":"order.paid","data":{"n":"one"}}"#);
    let ok = Command::new(bin())
        .args(["route", "test", "r", "--event"])
        .arg(cfg.path().join("ok.json"))
        .arg("--config")
        .arg(cfg.path())
        .env(SECRET_ENV, SECRET)
        .output()
        .unwrap();
    let out = text(&ok);
    assert!(ok.status.success(), "{out}");
    assert!(out.contains("POST http://127.0.0.1:1/hook") && out.contains("webhook-signature: v1,"), "{out}");
    assert!(out.contains(r#""data":{"n":1}"#), "redacted body shown: {out}");
    let bad = Command::new(bin())
        .args(["route", "test", "r", "--event"])
        .arg(cfg.path().join("bad.json"))
        .arg("--config")
        .arg(cfg.path())
        .env(SECRET_ENV, SECRET)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("reason schema") && text(&bad).contains("/n"), "{}", text(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_listen_work_end_to_end() {
    let vh = Vhost::new();
    let cfg = ConfigDir::new(&vh);
    // `listen` on a free port, verifying with the secret, printing JSON lines.
    let mut listen = Command::new(bin())
        .args(["listen", "--port", "0", "--json", "--secret", SECRET])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(listen.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().trim_end_matches('/').to_string();
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url(format!("{url}/hook")));
    let _router = RouterProc::ready(&cfg).await;
    let out = hookrelay(&["publish", "--type", "order.paid", "--data", r#"{"n": 5}"#, "--id", "cli-1"], &cfg);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cli-1");
    cfg.file("schemas/nobody.listens/v1.json", r#"{"type":"object"}"#);
    let unrouted = hookrelay(&["publish", "--type", "nobody.listens", "--data", "{}"], &cfg);
    assert_eq!(unrouted.status.code(), Some(1));
    assert!(text(&unrouted).contains("no route subscribes"), "{}", text(&unrouted));
    let mut stdout = std::io::BufReader::new(listen.stdout.take().unwrap());
    let mut printed = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut printed).unwrap();
    let _ = listen.kill();
    let _ = listen.wait();
    let v: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(v["verified"], true, "{printed}");
    assert_eq!(v["id"], "cli-1");
    assert_eq!(v["body"]["data"]["n"], 5);
}

#[test]
fn usage_errors_exit_2_and_runtime_failures_exit_1() {
    let cfg = local_cfg();
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url("http://127.0.0.1:1/"));
    cfg.file("ok.json", r#"{"specversion":"1.0","id":"e1","source":"s","type":"order.paid","data":{"n":1}}"#);
    let event = cfg.path().join("ok.json").display().to_string();
    let missing = cfg.path().join("missing.json").display().to_string();
    let not_an_event = cfg.path().join("hookrelay.toml").display().to_string();
    let usage: &[(&[&str], &str)] = &[
        (&["validate", "--no-such-flag"], "unexpected argument '--no-such-flag'"),
        (&["validate", "--format", "yaml"], "invalid value 'yaml' for '--format"),
        (&["publish", "--type", "order.paid", "--data", "not json"], "invalid value 'not json' for '--data"),
        (&["publish", "--data", "{}"], "--type"),
        (&["listen", "--status", "99"], "99 is not an HTTP status"),
        (&["listen", "--secret", "whsec_!!"], "the secret is not `whsec_` followed by base64"),
        (&["api-key", "--scopes", "ingest,root"], "invalid value 'root' for '--scopes"),
        (&["route", "test", "nope", "--event", &event], "no route named \"nope\" (routes: r)"),
        (&["route", "test", "r", "--event", &missing], "cannot be read"),
        (&["route", "test", "r", "--event", &not_an_event], "not a CloudEvent"),
    ];
    for (args, says) in usage {
        let out = Command::new(bin())
            .args(*args)
            .env(SECRET_ENV, SECRET)
            .env("HOOKRELAY_CONFIG", cfg.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: expected {says:?} in {}", text(&out));
        assert!(text(&out).contains("--help"), "{args:?}: points at --help: {}", text(&out));
    }
    // A broker that does not answer is a failure of the run, not of the arguments.
    let out = Command::new(bin())
        .args([
            "publish",
            "--type",
            "order.paid",
            "--data",
            r#"{"n": 1}"#,
            "--broker-url",
            "amqp://guest:guest@127.0.0.1:1/%2f",
        ])
        .env("HOOKRELAY_CONFIG", cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("--help"), "{}", text(&out));
}
