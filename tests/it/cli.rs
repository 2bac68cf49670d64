//! The command line as a user types it: validate, run on a bad config, route test, publish.

use crate::common::*;
use std::process::Command;

fn hookrelay(args: &[&str], cfg: &ConfigDir) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(cfg.path())
        .env(SECRET_ENV, SECRET)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn local_cfg() -> ConfigDir {
    ConfigDir::with_main("version = 7\n[security]\nallow_http = true\nallow_private_networks = true\n")
}

#[test]
fn validate_accepts_the_repository_example_config() {
    let out = Command::new(bin())
        .args(["validate", "--config", env!("CARGO_MANIFEST_DIR")])
        .env("EXAMPLE_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 route(s)"), "{}", text(&out));
}

#[test]
fn config_errors_say_file_line_and_column_and_exit_1() {
    let cases: &[(&str, &str, &str)] = &[
        ("urll = \"x\"\nevents = [\"a\"]\n", "routes/r.toml:1:1", "unknown field `urll`"),
        (
            "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"5 parsecs\"\n",
            "routes/r.toml:3:11",
            "invalid duration",
        ),
        ("events = [\"order..paid\"]\nurl = \"http://127.0.0.1:1/\"\n", "routes/r.toml:1:11", "empty word"),
        ("events = [\"order.paid\"]\nurl = \"not a url\"\n", "routes/r.toml:2:7", "not an absolute URL"),
        (
            "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nfilter = \"plugins/missing.rhai\"\n",
            "routes/r.toml:3:10",
            "cannot be read",
        ),
        ("events = [\"a\"]\nurll = \"x\"\n", "routes/r.toml:2:1", "did you mean `url`?"),
        ("events = [\"a\"]\nurl = \"http://127.0.0.1:1/\"\nordered = \"yes\"\n", "routes/r.toml:3:11", "invalid type"),
        (
            "events = [\"a\"]\nurl = \"http://127.0.0.1:1/\"\n[retry]\nbackoff = [\"1s\", \"fast\"]\n",
            "routes/r.toml:4:18",
            "invalid duration",
        ),
        (
            "events = [\"a\"]\nurl = \"http://127.0.0.1:1/\"\nformat = \"xml\"\n",
            "routes/r.toml:3:10",
            "unknown variant",
        ),
        (
            "events = [\"a\"]\nurl = \"http://127.0.0.1:1/\"\n[retry]\nmax_attempts = -1\n",
            "routes/r.toml:4:16",
            "invalid value",
        ),
    ];
    for (route, at, says) in cases {
        let cfg = local_cfg();
        cfg.route("r", route);
        let out = hookrelay(&["validate"], &cfg);
        assert_eq!(out.status.code(), Some(1), "{route}: {}", text(&out));
        assert!(text(&out).contains(&format!("{at}: ")), "{route}: expected {at}, got {}", text(&out));
        assert!(text(&out).contains(says), "{route}: expected {says:?}, got {}", text(&out));
    }
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let cfg = local_cfg();
    cfg.route("a", "events = []\nurl = \"http://127.0.0.1:1/\"");
    cfg.route("b", "events = [\"x\"]\nurl = \"ftp://x/\"");
    cfg.file("plugins/bad.rhai", "fn filter(event) {\n  let = ;\n}\n");
    cfg.route("c", "events = [\"x\"]\nurl = \"http://127.0.0.1:1/\"\nfilter = \"plugins/bad.rhai\"");
    cfg.file(
        "routes/d.toml",
        "name = \"a\"\nevents = [\"x\"]\nurl = \"http://127.0.0.1:1/\"\n[signing]\nsecret_env = \"NOT_SET_ANYWHERE\"\n",
    );
    let out = hookrelay(&["validate", "--format", "json"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<String> =
        report["errors"].as_array().unwrap().iter().map(|e| format!("{}:{}", e["file"], e["message"])).collect();
    let all = errors.join("\n");
    assert!(all.contains("routes/a.toml") && all.contains("at least one"), "{all}");
    assert!(all.contains("routes/b.toml") && all.contains("scheme"), "{all}");
    assert!(all.contains("plugins/bad.rhai"), "{all}");
    assert!(all.contains("NOT_SET_ANYWHERE"), "{all}");
}

#[test]
fn security_policy_is_enforced_at_load() {
    let cfg = ConfigDir::with_main("version = 1\n");
    cfg.route("r", "events = [\"order.paid\"]\nurl = \"http://example.com/hook\"");
    cfg.route("s", "events = [\"order.paid\"]\nurl = \"https://10.0.0.7/hook\"");
    let out = hookrelay(&["validate"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("routes/r.toml:2:7: plain http:// targets are blocked"), "{}", text(&out));
    assert!(text(&out).contains("routes/s.toml:2:7: requests to 10.0.0.7 are blocked"), "{}", text(&out));
    let run = hookrelay(&["run"], &cfg);
    assert_eq!(run.status.code(), Some(1), "run refuses a bad config: {}", text(&run));
}

#[test]
fn route_test_shows_the_exact_request_or_the_dead_letter_reason() {
    let cfg = local_cfg();
    cfg.route("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/hook\"\nredact = [\"data.secret\"]");
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
    cfg.route("r", &format!("events = [\"order.paid\"]\nurl = \"{url}/hook\""));
    let _router = RouterProc::ready(&cfg).await;
    let out = hookrelay(&["publish", "--type", "order.paid", "--data", r#"{"n": 5}"#, "--id", "cli-1"], &cfg);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cli-1");
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
fn main_file_schema_plugin_and_environment_errors_say_where() {
    let cfg = ConfigDir::with_main("version = 1\n[brokr]\nurl = \"x\"\n");
    let out = hookrelay(&["validate"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("hookrelay.toml:2:2: unknown field `brokr` (did you mean `broker`?)"),
        "{}",
        text(&out)
    );

    let cfg = local_cfg();
    cfg.file("schemas/order.paid/v1.json", "{\n  \"type\": \"object\",\n  \"required\": [\"n\"\n}");
    cfg.file("schemas/order.created/v1.json", r#"{"type": "no-such-type"}"#);
    cfg.file("plugins/p.rhai", "fn filter(event) {\n  event.data.n >\n}\n");
    cfg.file("plugins/t.rhai", "fn transform(a, b) { a }\n");
    cfg.route("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nfilter = \"plugins/p.rhai\"");
    cfg.route("t", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\ntransform = \"plugins/t.rhai\"");
    let out = hookrelay(&["validate"], &cfg);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("schemas/order.paid/v1.json:4:1: invalid JSON"), "{all}");
    assert!(all.contains("schemas/order.created/v1.json:1:1: schema does not compile"), "{all}");
    assert!(all.contains("plugins/p.rhai:3:1: script does not compile"), "{all}");
    assert!(all.contains("plugins/t.rhai: `fn transform` must take one parameter"), "{all}");

    let cfg = local_cfg();
    cfg.route("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"");
    cfg.file(
        "routes/s.toml",
        "name = \"r\"\nevents = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n[signing]\nsecret_env = \"TEST_WEBHOOK_SECRET\"\n",
    );
    let out = hookrelay(&["validate"], &cfg);
    assert!(text(&out).contains("routes/s.toml:1:8: duplicate route name `r`"), "{}", text(&out));

    let cfg = local_cfg();
    cfg.route("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"");
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(cfg.path())
        .env(SECRET_ENV, SECRET)
        .env("HOOKRELAY_BROKER__PREFETCH", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("environment: HOOKRELAY_BROKER__PREFETCH: invalid type"), "{}", text(&out));
    assert!(!text(&out).contains("http:// targets are blocked"), "the file's own settings still apply: {}", text(&out));

    let missing = tempfile::tempdir().unwrap();
    let out = Command::new(bin()).args(["validate", "--config"]).arg(missing.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("hookrelay.toml: cannot read the main config file"), "{}", text(&out));
    let usage = Command::new(bin()).args(["validate", "--no-such-flag"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn missing_secrets_are_errors_unless_the_run_provides_them() {
    let cfg = local_cfg();
    cfg.file(
        "routes/r.toml",
        "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n[signing]\nsecret_env = \"HOOKRELAY_TEST_ABSENT\"\n",
    );
    let strict = hookrelay(&["validate"], &cfg);
    assert_eq!(strict.status.code(), Some(1));
    assert!(
        text(&strict).contains("routes/r.toml:4:14: environment variable HOOKRELAY_TEST_ABSENT"),
        "{}",
        text(&strict)
    );
    let lenient = hookrelay(&["validate", "--allow-missing-secrets"], &cfg);
    assert!(lenient.status.success(), "{}", text(&lenient));
}

#[test]
fn every_example_config_repository_validates_without_warnings() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap().flatten() {
        if !entry.path().join("hookrelay.toml").exists() {
            continue;
        }
        let out = Command::new(bin())
            .args(["validate", "--allow-missing-secrets", "--config"])
            .arg(entry.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", entry.path().display(), text(&out));
        assert!(!text(&out).contains("warning:"), "{}: {}", entry.path().display(), text(&out));
        checked += 1;
    }
    assert!(checked >= 2, "examples/ holds at least two config repositories");
}
