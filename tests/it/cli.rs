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
    ConfigDir::with(MainConfig::new().version(7).loopback_targets())
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

/// Where an error must be reported.
#[derive(Debug, Clone, Copy)]
enum At {
    /// `file:line:col`.
    Pos(&'static str, usize, usize),
    /// `environment: VAR`.
    Env(&'static str),
}

/// One class of config error: the config that has it, where it must be reported, what the
/// message must say, and the exit status.
struct Case {
    class: &'static str,
    /// `hookrelay.toml`, when not the loopback-allowing default.
    main: Option<&'static str>,
    /// `routes/<name>.toml` bodies (the test secret's `[signing]` is appended).
    routes: &'static [(&'static str, &'static str)],
    /// Other files, written as given.
    files: &'static [(&'static str, &'static str)],
    env: &'static [(&'static str, &'static str)],
    at: At,
    says: &'static str,
    code: i32,
}

/// Every class of config error the issue lists, with the exact place it is reported.
fn cases() -> Vec<Case> {
    let c = |class, routes, at, says| Case { class, main: None, routes, files: &[], env: &[], at, says, code: 1 };
    vec![
        c("TOML syntax error", &[("r", "events = [\"a\"\nurl = \"x\"\n")], At::Pos("routes/r.toml", 2, 1), "array"),
        c(
            "unknown key in a route, with did-you-mean",
            &[("r", "events = [\"a\"]\nurll = \"x\"\n")],
            At::Pos("routes/r.toml", 2, 1),
            "unknown field `urll` (did you mean `url`?)",
        ),
        Case {
            main: Some("version = 1\n[brokr]\nurl = \"x\"\n"),
            ..c(
                "unknown key in hookrelay.toml, with did-you-mean",
                &[],
                At::Pos("hookrelay.toml", 2, 2),
                "unknown field `brokr` (did you mean `broker`?)",
            )
        },
        c(
            "wrong type (string for a bool)",
            &[("r", "events = [\"a\"]\nurl = \"http://127.0.0.1:1/\"\nordered = \"yes\"\n")],
            At::Pos("routes/r.toml", 3, 11),
            "invalid type",
        ),
        c(
            "wrong type (negative count)",
            &[("r", "events = [\"a\"]\nurl = \"http://127.0.0.1:1/\"\n[retry]\nmax_attempts = -1\n")],
            At::Pos("routes/r.toml", 4, 16),
            "invalid value",
        ),
        c(
            "wrong type (unknown variant)",
            &[("r", "events = [\"a\"]\nurl = \"http://127.0.0.1:1/\"\nformat = \"xml\"\n")],
            At::Pos("routes/r.toml", 3, 10),
            "unknown variant",
        ),
        c(
            "bad duration",
            &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"5 parsecs\"\n")],
            At::Pos("routes/r.toml", 3, 11),
            "invalid duration",
        ),
        c(
            "bad duration in a list",
            &[("r", "events = [\"a\"]\nurl = \"http://127.0.0.1:1/\"\n[retry]\nbackoff = [\"1s\", \"fast\"]\n")],
            At::Pos("routes/r.toml", 4, 18),
            "invalid duration",
        ),
        c(
            "missing file (a plugin the route names)",
            &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nfilter = \"plugins/missing.rhai\"\n")],
            At::Pos("routes/r.toml", 3, 10),
            "plugin plugins/missing.rhai cannot be read",
        ),
        c(
            "duplicate route names",
            &[
                ("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\""),
                ("s", "name = \"r\"\nevents = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\""),
            ],
            At::Pos("routes/s.toml", 1, 8),
            "duplicate route name `r` (also defined by routes/r.toml)",
        ),
        Case {
            files: &[("schemas/order.paid/v1.json", "{\n  \"type\": \"object\",\n  \"required\": [\"n\"\n}")],
            ..c("schema that is not JSON", &[], At::Pos("schemas/order.paid/v1.json", 4, 1), "invalid JSON")
        },
        Case {
            files: &[(
                "schemas/order.paid/v1.json",
                "{\n  \"type\": \"object\",\n  \"properties\": {\n    \"n\": {\"type\": \"numbr\"}\n  }\n}",
            )],
            ..c(
                "schema that does not compile (a keyword's value)",
                &[],
                At::Pos("schemas/order.paid/v1.json", 4, 19),
                "schema does not compile at /properties/n/type",
            )
        },
        Case {
            files: &[(
                "schemas/order.paid/v1.json",
                "{\n  \"type\": \"object\",\n  \"properties\": {\n    \"n\": {\"$ref\": \"#/$defs/count\"}\n  }\n}",
            )],
            ..c(
                "schema that does not compile (a $ref to nowhere)",
                &[],
                At::Pos("schemas/order.paid/v1.json", 4, 19),
                "schema does not compile at /properties/n/$ref",
            )
        },
        Case {
            files: &[("plugins/p.rhai", "fn filter(event) {\n  event.data.n >\n}\n")],
            ..c(
                "script that does not compile",
                &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nfilter = \"plugins/p.rhai\"")],
                At::Pos("plugins/p.rhai", 3, 1),
                "script does not compile",
            )
        },
        Case {
            files: &[("plugins/t.rhai", "fn transform(event) { event }\n")],
            ..c(
                "script without the entry point the route calls",
                &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nfilter = \"plugins/t.rhai\"")],
                At::Pos("routes/r.toml", 3, 10),
                "plugin plugins/t.rhai does not define `fn filter(event)`",
            )
        },
        Case {
            files: &[(
                "plugins/t.rhai",
                "// turns the event into the ERP's shape\n\nfn transform(event, extra) {\n  event\n}\n",
            )],
            ..c(
                "script whose entry point takes the wrong parameter count",
                &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\ntransform = \"plugins/t.rhai\"")],
                At::Pos("plugins/t.rhai", 3, 4),
                "`fn transform` must take one parameter (the event), not 2",
            )
        },
        Case {
            main: Some("version = 1\n"),
            ..c(
                "URL refused by the security policy (plain http)",
                &[("r", "events = [\"order.paid\"]\nurl = \"http://example.com/hook\"")],
                At::Pos("routes/r.toml", 2, 7),
                "plain http:// targets are blocked",
            )
        },
        Case {
            main: Some("version = 1\n"),
            ..c(
                "URL refused by the security policy (private network)",
                &[("r", "events = [\"order.paid\"]\nurl = \"https://10.0.0.7/hook\"")],
                At::Pos("routes/r.toml", 2, 7),
                "requests to 10.0.0.7 are blocked",
            )
        },
        c(
            "URL that is not absolute",
            &[("r", "events = [\"order.paid\"]\nurl = \"not a url\"\n")],
            At::Pos("routes/r.toml", 2, 7),
            "not an absolute URL",
        ),
        Case {
            files: &[(
                "routes/r.toml",
                "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n[signing]\nsecret_env = \"HOOKRELAY_TEST_ABSENT\"\n",
            )],
            ..c(
                "missing secret",
                &[],
                At::Pos("routes/r.toml", 4, 14),
                "environment variable HOOKRELAY_TEST_ABSENT (the route's secret) is not set",
            )
        },
        Case {
            env: &[("HOOKRELAY_BROKER__PREFETCH", "many")],
            ..c(
                "bad HOOKRELAY_* variable (wrong type)",
                &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"")],
                At::Env("HOOKRELAY_BROKER__PREFETCH"),
                "invalid type: found string \"many\", expected u16",
            )
        },
        Case {
            env: &[("HOOKRELAY_BROKER__PREFECH", "10")],
            ..c(
                "bad HOOKRELAY_* variable (unknown key, with did-you-mean)",
                &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"")],
                At::Env("HOOKRELAY_BROKER__PREFECH"),
                "unknown key `PREFECH` in [broker] (did you mean HOOKRELAY_BROKER__PREFETCH?)",
            )
        },
        Case {
            env: &[("HOOKRELAY_SECURTY__ALLOW_HTTP", "true")],
            ..c(
                "bad HOOKRELAY_* variable (unknown section, with did-you-mean)",
                &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"")],
                At::Env("HOOKRELAY_SECURTY__ALLOW_HTTP"),
                "unknown section `SECURTY` (did you mean HOOKRELAY_SECURITY__ALLOW_HTTP?)",
            )
        },
        c(
            "malformed event pattern",
            &[("r", "events = [\"order..paid\"]\nurl = \"http://127.0.0.1:1/\"\n")],
            At::Pos("routes/r.toml", 1, 11),
            "has an empty word",
        ),
        c(
            "no event pattern",
            &[("r", "events = []\nurl = \"http://127.0.0.1:1/\"\n")],
            At::Pos("routes/r.toml", 1, 10),
            "`events` must name at least one",
        ),
        c(
            "concurrency of 0",
            &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nconcurrency = 0\n")],
            At::Pos("routes/r.toml", 3, 15),
            "`concurrency` must be at least 1",
        ),
        c(
            "max_attempts of 0",
            &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n[retry]\nmax_attempts = 0\n")],
            At::Pos("routes/r.toml", 4, 16),
            "`retry.max_attempts` must be at least 1",
        ),
        c(
            "a zero backoff step",
            &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n[retry]\nbackoff = [\"1s\", \"0s\"]\n")],
            At::Pos("routes/r.toml", 4, 18),
            "`retry.backoff` must list at least one duration, none of them zero",
        ),
        c(
            "an empty backoff",
            &[("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nretry.backoff = []\n")],
            At::Pos("routes/r.toml", 3, 17),
            "`retry.backoff` must list at least one duration",
        ),
        c(
            "a header name that is not one",
            &[(
                "r",
                "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n[headers]\nx-ok = \"1\"\n\"x bad\" = \"2\"\n",
            )],
            At::Pos("routes/r.toml", 5, 1),
            "\"x bad\" is not a valid HTTP header name",
        ),
        c(
            "a header value that is not one",
            &[(
                "r",
                "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nheaders = { x-tenant = \"a\\u0007b\" }\n",
            )],
            At::Pos("routes/r.toml", 3, 24),
            "the value of header \"x-tenant\" is not a valid HTTP header value",
        ),
        c(
            "a route name that is not one",
            &[("r", "# the ERP\nname = \"erp orders\"\nevents = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n")],
            At::Pos("routes/r.toml", 2, 8),
            "route name \"erp orders\" must be 1 to 200 characters",
        ),
    ]
}

fn case_config(case: &Case) -> ConfigDir {
    let cfg = match case.main {
        Some(main) => ConfigDir::with_main_text(main),
        None => local_cfg(),
    };
    for (name, body) in case.routes {
        cfg.route_text(name, body);
    }
    for (rel, text) in case.files {
        cfg.file(rel, text);
    }
    cfg
}

fn validate_case(case: &Case, cfg: &ConfigDir, format: &str) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(["validate", "--format", format, "--config"]).arg(cfg.path()).env(SECRET_ENV, SECRET).env("NO_COLOR", "1");
    for (k, v) in case.env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn every_class_of_config_error_says_where_and_exits_1() {
    let mut failures = Vec::new();
    for case in cases() {
        let cfg = case_config(&case);
        // Text: `error: file:line:col: message` (or `error: environment: VAR: message`).
        let out = validate_case(&case, &cfg, "text");
        let all = text(&out);
        let place = match case.at {
            At::Pos(file, line, col) => format!("error: {file}:{line}:{col}: "),
            At::Env(var) => format!("error: environment: {var}: "),
        };
        let line = all.lines().find(|l| l.starts_with(&place));
        if out.status.code() != Some(case.code) || !line.is_some_and(|l| l.contains(case.says)) {
            failures.push(format!(
                "{}: expected exit {} and a line `{place}…{}…`, got exit {:?}:\n{all}",
                case.class,
                case.code,
                case.says,
                out.status.code()
            ));
            continue;
        }
        // JSON: the same error, with its file, line and column as fields, and no other error.
        let out = validate_case(&case, &cfg, "json");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let errors = report["errors"].as_array().cloned().unwrap_or_default();
        let (file, line, col, prefix) = match case.at {
            At::Pos(file, line, col) => (file, line, col, String::new()),
            At::Env(var) => ("environment", 0, 0, format!("{var}: ")),
        };
        let matches = |e: &serde_json::Value| {
            e["file"] == file
                && e["line"] == line
                && e["col"] == col
                && e["message"].as_str().is_some_and(|m| m.starts_with(&prefix) && m.contains(case.says))
        };
        if out.status.code() != Some(case.code)
            || report["valid"] != false
            || errors.len() != 1
            || !errors.iter().any(matches)
        {
            failures.push(format!(
                "{}: expected exit {} and one error {{file: {file}, line: {line}, col: {col}, message: {prefix}…{}…}} in \
                 --format json, got exit {:?}: {report}",
                case.class,
                case.code,
                case.says,
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases().len(), failures.join("\n\n"));
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let cfg = local_cfg();
    cfg.route_text("a", "events = []\nurl = \"http://127.0.0.1:1/\"");
    cfg.route_text("b", "events = [\"x\"]\nurl = \"ftp://x/\"");
    cfg.file("plugins/bad.rhai", "fn filter(event) {\n  let = ;\n}\n");
    cfg.route(&RouteConfig::new("c").events(["x"]).url("http://127.0.0.1:1/").filter("plugins/bad.rhai"));
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

/// Three bad `HOOKRELAY_*` variables at once: each is named with what is wrong with it (figment
/// stops at the first bad value; the loader tries each variable on its own).
#[test]
fn every_bad_environment_variable_is_reported_not_only_the_first() {
    let cfg = local_cfg();
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url("http://127.0.0.1:1/"));
    let out = Command::new(bin())
        .args(["validate", "--format", "json", "--config"])
        .arg(cfg.path())
        .env(SECRET_ENV, SECRET)
        .env("HOOKRELAY_BROKER__PREFETCH", "many")
        .env("HOOKRELAY_API__ENABLED", "sometimes")
        .env("HOOKRELAY_BROKER__PREFECH", "10")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<(String, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["file"].as_str().unwrap_or_default().to_string(), e["message"].as_str().unwrap().to_string()))
        .collect();
    for (var, says) in [
        ("HOOKRELAY_BROKER__PREFETCH", "expected u16"),
        ("HOOKRELAY_API__ENABLED", "expected a boolean"),
        ("HOOKRELAY_BROKER__PREFECH", "did you mean HOOKRELAY_BROKER__PREFETCH?"),
    ] {
        let hits = errors.iter().filter(|(_, m)| m.starts_with(&format!("{var}:")) && m.contains(says)).count();
        assert_eq!(hits, 1, "{var} reported once, saying {says:?}: {errors:?}");
    }
    assert!(errors.iter().all(|(f, _)| f == "environment"), "{errors:?}");
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

// ---------------------------------------------------------------------------------------------
// Help, completions, the man page and --version (issue 17).

/// The binary with `args`, without a config or secrets in its environment.
fn bare(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).env_remove("HOOKRELAY_CONFIG").env("NO_COLOR", "1").output().unwrap()
}

/// `--help` of `args`, which must succeed.
fn help(args: &[&str]) -> String {
    let out = bare(&[args, &["--help"][..]].concat());
    assert!(out.status.success(), "{args:?} --help: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every subcommand path, e.g. `["route", "test"]`, as the top-level help and `route --help` list them.
fn subcommands() -> Vec<Vec<&'static str>> {
    let mut all: Vec<Vec<&str>> =
        ["run", "validate", "publish", "listen", "route", "api-key", "secret-key", "completions", "man"]
            .iter()
            .map(|c| vec![*c])
            .collect();
    all.push(vec!["route", "test"]);
    let top = help(&[]);
    for c in all.iter().filter(|c| c.len() == 1) {
        assert!(
            top.lines().any(|l| l.trim_start().starts_with(&format!("{} ", c[0]))),
            "top-level help lists {c:?}:\n{top}"
        );
    }
    all
}

#[test]
fn the_top_level_help_names_both_brokers() {
    let top = help(&[]);
    assert!(!top.contains("from RabbitMQ"), "the default broker is the embedded one:\n{top}");
    assert!(top.contains("embedded broker") && top.contains("RabbitMQ"), "{top}");
}

#[test]
fn publish_help_says_where_events_go_on_each_broker() {
    let publish = help(&["publish"]);
    assert!(!publish.contains("Publish a CloudEvent to the events exchange"), "{publish}");
    for says in ["ingest API", "--api", "embedded queue file", "RabbitMQ"] {
        assert!(publish.contains(says), "publish --help says {says:?}:\n{publish}");
    }
}

#[test]
fn api_key_makes_the_scopes_it_is_given_and_its_help_says_so() {
    let api_key = help(&["api-key"]);
    assert!(!api_key.contains("admin key"), "{api_key}");
    assert!(api_key.contains("--scopes given (admin by default)"), "{api_key}");
    let out = bare(&["api-key", "--name", "ci", "--scopes", "ingest,read"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("scopes = [\"ingest\", \"read\"]") && !stdout.contains("admin"), "{stdout}");
}

#[test]
fn listen_port_is_on_the_bind_address() {
    let listen = help(&["listen"]);
    // What the help says about --port: its line, and the lines after it up to the next option.
    let mut lines = listen.lines().skip_while(|l| !l.trim_start().starts_with("-p, --port"));
    let first = lines.next().unwrap_or_default();
    let port: String = std::iter::once(first).chain(lines.take_while(|l| !l.trim_start().starts_with('-'))).collect();
    assert!(port.contains("at the --bind address") && !port.contains("127.0.0.1"), "{listen}");
    // And so it is: on 127.0.0.2, a port the system picks.
    let mut child = Command::new(bin())
        .args(["listen", "--bind", "127.0.0.2", "--port", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stderr.take().unwrap()), &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let addr = line.trim().strip_prefix("listening on http://").and_then(|r| r.split('/').next()).unwrap_or_default();
    let addr: std::net::SocketAddr = addr.parse().unwrap_or_else(|_| panic!("no address in {line:?}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.2", "{line}");
    assert_ne!(addr.port(), 0, "{line}");
}

#[test]
fn log_format_is_shown_once_and_accepted_after_any_subcommand() {
    let top = help(&[]);
    assert_eq!(top.lines().filter(|l| l.trim_start().starts_with("--log-format")).count(), 1, "{top}");
    for sub in subcommands() {
        let h = help(&sub);
        assert!(!h.contains("--log-format"), "{sub:?} --help repeats --log-format:\n{h}");
    }
    let cfg = local_cfg();
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url("http://127.0.0.1:1/"));
    cfg.file("ok.json", r#"{"specversion":"1.0","id":"e1","source":"s","type":"order.paid","data":{"n":1}}"#);
    let event = cfg.path().join("ok.json").display().to_string();
    for args in [
        &["--log-format", "json", "validate"][..],
        &["validate", "--log-format", "json"],
        &["route", "test", "r", "--event", &event, "--log-format", "json"],
    ] {
        let out = hookrelay(args, &cfg);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let out = hookrelay(&["validate", "--log-format", "yaml"], &cfg);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("invalid value 'yaml' for '--log-format"), "{}", text(&out));
}

#[test]
fn bash_completion_completes_subcommands_and_options() {
    let out = bare(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hookrelay.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // What bash offers after `hookrelay <words…><TAB>`, the script sourced as a shell would.
    let complete = |words: &str| {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
             COMP_POINT=${{#COMP_LINE}}; _hookrelay hookrelay \"${{COMP_WORDS[COMP_CWORD]}}\" \
             \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash").args(["--norc", "-c", &probe]).output().unwrap();
        assert!(out.status.success(), "{words}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(complete("hookrelay pub"), ["publish"]);
    assert!(complete("hookrelay ''").iter().any(|w| w == "route"), "{:?}", complete("hookrelay ''"));
    assert_eq!(
        complete("hookrelay route ''").iter().filter(|w| !w.starts_with('-')).collect::<Vec<_>>(),
        ["test", "help"]
    );
    assert!(
        complete("hookrelay listen --st").contains(&"--status".to_string()),
        "{:?}",
        complete("hookrelay listen --st")
    );
    assert_eq!(complete("hookrelay completions f"), ["fish"]);
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    for (shell, marker) in [("zsh", "#compdef hookrelay"), ("fish", "complete -c hookrelay")] {
        let out = bare(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in ["run", "validate", "publish", "listen", "route", "test", "api-key", "secret-key", "man"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let out = bare(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_man_page_documents_every_subcommand() {
    let out = bare(&["man"]);
    assert!(out.status.success(), "{}", text(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH hookrelay 1"), "{page}");
    for sub in ["run", "validate", "publish", "listen", "route", "api-key", "secret-key", "completions"] {
        let roff = sub.replace('-', "\\-");
        assert!(page.contains(&format!("hookrelay\\-{roff}(1)")), "the page lists {sub}:\n{page}");
    }
    assert!(page.contains("\\-\\-log\\-format"), "{page}");
    // Rendered as `man` would, where groff is installed.
    // (-P-cbou: plain text, no overstrike; words compared with the line breaks taken out.)
    if let Ok(mut groff) = Command::new("groff")
        .args(["-man", "-Tutf8", "-P-cbou"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        std::io::Write::write_all(&mut groff.stdin.take().unwrap(), &out.stdout).unwrap();
        let shown = String::from_utf8_lossy(&groff.wait_with_output().unwrap().stdout).into_owned();
        let words = shown.split_whitespace().collect::<Vec<_>>().join(" ");
        for says in ["NAME hookrelay - Routes CloudEvents", "embedded broker", "SUBCOMMANDS", "Run the router"] {
            assert!(words.contains(says), "the rendered page says {says:?}:\n{shown}");
        }
    }
    // One page per subcommand with --dir.
    let dir = tempfile::tempdir().unwrap();
    let out = bare(&["man", "--dir", &dir.path().join("man1").display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    for page in ["hookrelay.1", "hookrelay-run.1", "hookrelay-route.1", "hookrelay-route-test.1", "hookrelay-listen.1"]
    {
        let body =
            std::fs::read_to_string(dir.path().join("man1").join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(body.contains(".TH"), "{page}: {body}");
    }
}

/// One line of git's output in `dir`, if git answers there.
fn git_line(dir: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !line.is_empty()).then_some(line)
}

#[test]
fn version_names_the_git_revision_it_was_built_from() {
    let out = bare(&["--version"]);
    assert!(out.status.success(), "{}", text(&out));
    // build.rs gives the tests the same HOOKRELAY_GIT_REV as the binary (one build script run):
    // the revision at build time, which HEAD may have moved past since.
    let built = env!("HOOKRELAY_GIT_REV");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hookrelay {} ({built})", env!("CARGO_PKG_VERSION"))
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let checkout = git_line(repo, &["rev-parse", "--show-toplevel"])
        .is_some_and(|top| std::path::Path::new(&top).canonicalize().ok() == repo.canonicalize().ok());
    if checkout {
        // A commit of this repository, in git's short form.
        let full = git_line(repo, &["rev-parse", "--verify", &format!("{built}^{{commit}}")]);
        assert!(full.is_some_and(|f| f.starts_with(built)), "{built} is not a commit of {}", repo.display());
    } else {
        assert_eq!(built, "unknown");
    }
}

#[test]
fn the_build_script_names_the_revision_or_unknown_and_never_fails() {
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("build-script");
    let compiled = Command::new(std::env::var("RUSTC").unwrap_or("rustc".into()))
        .args(["--edition", "2024", "-o"])
        .arg(&script)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs"))
        .output()
        .unwrap();
    assert!(compiled.status.success(), "{}", text(&compiled));
    let run = |manifest_dir: &std::path::Path, rev_env: Option<&str>| {
        let mut cmd = Command::new(&script);
        cmd.env("CARGO_MANIFEST_DIR", manifest_dir).env_remove("HOOKRELAY_GIT_REV");
        if let Some(rev) = rev_env {
            cmd.env("HOOKRELAY_GIT_REV", rev);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}: {}", manifest_dir.display(), text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let rev =
            stdout.lines().find_map(|l| l.strip_prefix("cargo::rustc-env=HOOKRELAY_GIT_REV=")).map(str::to_string);
        (rev.unwrap_or_else(|| panic!("no HOOKRELAY_GIT_REV in {stdout}")), stdout)
    };
    // Unpacked sources, no .git: `unknown`.
    let tarball = work.path().join("tarball");
    std::fs::create_dir_all(&tarball).unwrap();
    assert_eq!(run(&tarball, None).0, "unknown");
    // A checkout of its own: its HEAD, and cargo told to run again when HEAD or the branch moves.
    let repo = work.path().join("repo");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "one"]);
    let head = git_line(&repo, &["rev-parse", "--short", "HEAD"]).unwrap();
    let (rev, stdout) = run(&repo, None);
    assert_eq!(rev, head);
    assert!(stdout.contains("cargo::rerun-if-changed=") && stdout.contains("HEAD"), "{stdout}");
    assert!(stdout.contains("refs/heads/main"), "{stdout}");
    // A package inside someone else's repository is not that repository's revision.
    assert_eq!(run(&repo.join("sub"), None).0, "unknown");
    // The builder's own value wins.
    assert_eq!(run(&tarball, Some("1a2b3c4")).0, "1a2b3c4");
}
