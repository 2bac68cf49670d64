//! `validate` on the repository's example configs (no error, no warning), on a directory without
//! `hookrelay.toml`, with secrets missing, and with warnings beside errors; `run` refusing a
//! config that does not validate.

use super::{hookrelay, local_cfg, text};
use crate::common::*;
use std::process::Command;

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
fn run_refuses_a_config_that_does_not_validate() {
    let cfg = ConfigDir::with(MainConfig::new().version(1));
    // Written as text: the error names the line and column of `url`.
    cfg.route_text("r", "events = [\"order.paid\"]\nurl = \"http://example.com/hook\"");
    let run = hookrelay(&["run"], &cfg);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(text(&run).contains("routes/r.toml:2:7: plain http:// targets are blocked"), "{}", text(&run));
    assert!(text(&run).contains("1 error(s)") && text(&run).contains("not starting"), "{}", text(&run));
}

#[test]
fn a_directory_without_hookrelay_toml_is_named_in_the_error() {
    let missing = tempfile::tempdir().unwrap();
    let out = Command::new(bin()).args(["validate", "--config"]).arg(missing.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let expected = format!("{}: cannot read the main config file", missing.path().join("hookrelay.toml").display());
    assert!(text(&out).contains(&expected), "{}", text(&out));
    assert!(text(&out).contains("is --config pointing at the config directory?"), "{}", text(&out));
}

#[test]
fn missing_secrets_are_errors_unless_the_run_provides_them() {
    let cfg = local_cfg();
    cfg.file(
        "routes/r.toml",
        "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n[signing]\nsecret_env = \"HOOKRELAY_TEST_ABSENT\"\n",
    );
    let strict = hookrelay(&["validate"], &cfg);
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict));
    let lenient = hookrelay(&["validate", "--allow-missing-secrets"], &cfg);
    assert!(lenient.status.success(), "{}", text(&lenient));
}

#[test]
fn warnings_are_reported_with_their_place_beside_errors() {
    // On RabbitMQ ([broker] present): an ordered route with the default retry (8 attempts, waits
    // of 5s 30s 2m 10m 30m 1h 2h: 3h 42m 35s in all) holds a message unacked past RabbitMQ's
    // 30 minute consumer_timeout.
    let cfg = ConfigDir::with(MainConfig::new().version(1).rabbitmq("amqp://127.0.0.1:1/%2f").loopback_targets());
    // Written as text: the messages name lines and columns of these files.
    cfg.route_text("erp", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nordered = true");
    cfg.route_text("typo", "events = [\"order.paid\", \"ordr.created\"]\nurl = \"http://127.0.0.1:1/\"");
    cfg.route_text("short", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nordered = true\n[retry]\nmax_attempts = 4\nbackoff = [\"1m\", \"10m\"]");
    cfg.route_text("broken", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nconcurrency = 0");

    let out = hookrelay(&["validate", "--format", "json"], &cfg);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let places = |key: &str| -> Vec<(String, u64, u64, String)> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let m = e["message"].as_str().unwrap().to_string();
                (e["file"].as_str().unwrap().to_string(), e["line"].as_u64().unwrap(), e["col"].as_u64().unwrap(), m)
            })
            .collect()
    };
    let (errors, warnings) = (places("errors"), places("warnings"));
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!((errors[0].0.as_str(), errors[0].1, errors[0].2), ("routes/broken.toml", 3, 15), "{report}");
    assert_eq!(warnings.len(), 2, "only the long ordered route and the typo: {report}");
    let ordered = warnings.iter().find(|w| w.0 == "routes/erp.toml").expect("the ordered route is warned about");
    assert_eq!((ordered.1, ordered.2), (3, 11), "at `ordered`, as the route sets no [retry]: {report}");
    for says in ["route `erp` is ordered", "add up to 3h 42m 35s", "consumer_timeout (30m by default)", "max_attempts"]
    {
        assert!(ordered.3.contains(says), "{says:?} in {}", ordered.3);
    }
    assert!(ordered.3.contains("docs/delivery.md"), "{}", ordered.3);
    let typo = warnings.iter().find(|w| w.0 == "routes/typo.toml").expect("the pattern is warned about");
    assert_eq!((typo.1, typo.2), (1, 25), "{report}");
    assert!(typo.3.contains("event pattern `ordr.created` matches no type in schemas/"), "{}", typo.3);

    // Text: both kinds, each with its place; the summary counts both.
    let out = hookrelay(&["validate"], &cfg);
    let all = text(&out);
    assert!(all.contains("warning: routes/erp.toml:3:11: route `erp` is ordered"), "{all}");
    assert!(all.contains("warning: routes/typo.toml:1:25: event pattern"), "{all}");
    assert!(all.contains("error: routes/broken.toml:3:15: `concurrency` must be at least 1"), "{all}");
    assert!(all.contains("1 error(s), 2 warning(s)"), "{all}");

    // With the error fixed, the config is valid and the warnings stay; the warning points at the
    // backoff when the route writes one.
    cfg.route_text("broken", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nconcurrency = 1");
    cfg.route_text(
        "erp",
        "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nordered = true\n[retry]\nbackoff = [\"1m\", \"5m\"]",
    );
    let out = hookrelay(&["validate"], &cfg);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("warning: routes/erp.toml:5:11: route `erp` is ordered and its retry waits add up to 31m"),
        "{all}"
    );
    assert!(all.contains("2 warning(s)"), "{all}");

    // On the embedded broker (no [broker]) there is no consumer_timeout: no warning.
    let embedded = local_cfg();
    embedded.route(&RouteConfig::new("erp").events(["order.paid"]).url("http://127.0.0.1:1/").ordered(true));
    let out = hookrelay(&["validate"], &embedded);
    assert!(out.status.success() && !text(&out).contains("warning:"), "{}", text(&out));
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
