//! Every class of config error, reported with its exact place (`file:line:col` or the environment
//! variable) and exit status 1, as text and as JSON; every error of a config, not only the first.

use super::{hookrelay, local_cfg, text};
use crate::common::*;
use std::process::Command;

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
