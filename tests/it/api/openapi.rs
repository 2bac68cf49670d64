//! The OpenAPI document held to the implementation: schemathesis drives the API from
//! `/openapi.json` over real resources, and every answer must conform to the document.

use super::{T, ids, items, paid, setup};
use crate::common::*;
use serde_json::json;
use std::time::Duration;

/// The OpenAPI document drives the API with schemathesis (from PyPI), over real resources
/// (deliveries, a dead letter, subscriptions, routes, types), and every answer conforms to it:
/// no 5xx, only documented statuses and content types, bodies that match their schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_api_as_documented() {
    if std::process::Command::new("schemathesis").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "schemathesis is missing (pip install schemathesis)");
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis)");
        return;
    }
    let rx = Receiver::start(|r, _| if r.id() == "sx-dead" { (400, vec![]) } else { (200, vec![]) }).await;
    let routes = [RouteConfig::new("orders").events(["order.*"]).url(rx.url("/orders")).log_payload(true)];
    let s = setup(None, &routes).await;
    for id in ["sx-1", "sx-dead"] {
        s.ingest.post("/v1/events", paid(id, 1)).await.expect(202);
    }
    let both =
        async || (items(&s.read.get("/v1/deliveries").await.json), items(&s.read.get("/v1/dead-letters").await.json));
    eventually("2 deliveries and 1 dead letter", T, both, |(d, dls)| d.len() == 2 && dls.len() == 1).await;
    let deliveries = ids(&items(&s.read.get("/v1/deliveries").await.json));
    let dead_letter = ids(&items(&s.read.get("/v1/dead-letters").await.json)).remove(0);
    let subscribe = async |name: &str| {
        let a = s
            .admin
            .post("/v1/subscriptions", json!({"name": name, "events": ["order.*"], "url": rx.url("/sub")}))
            .await;
        a.expect(201)["id"].as_str().unwrap().to_string()
    };
    let (kept, doomed) = (subscribe("sx-kept").await, subscribe("sx-doomed").await);
    let quoted = |v: &[String]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    // Half the generated path parameters are real ids, so that the answers past the 404s are
    // checked too; DELETE gets a subscription of its own.
    let config = format!(
        r#"[dictionaries.subscriptions]
values = [{kept:?}]
[dictionaries.doomed]
values = [{doomed:?}]
[dictionaries.deliveries]
values = [{deliveries}]
[dictionaries.dead-letters]
values = [{dead_letter:?}]
[dictionaries.routes]
values = ["orders", "sx-kept"]
[dictionaries.types]
values = ["order.paid", "order.created"]

[[operations]]
include-path = "/v1/subscriptions/{{id}}"
include-method = "GET"
parameters = {{ "path.id" = {{ dictionary = "subscriptions", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/subscriptions/{{id}}"
include-method = "PUT"
parameters = {{ "path.id" = {{ dictionary = "subscriptions", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/subscriptions/{{id}}"
include-method = "PATCH"
parameters = {{ "path.id" = {{ dictionary = "subscriptions", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/subscriptions/{{id}}/rotate-secret"
parameters = {{ "path.id" = {{ dictionary = "subscriptions", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/subscriptions/{{id}}"
include-method = "DELETE"
parameters = {{ "path.id" = {{ dictionary = "doomed", probability = 0.5 }} }}
[[operations]]
include-path-regex = "^/v1/deliveries/[{{]id[}}]"
parameters = {{ "path.id" = {{ dictionary = "deliveries", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/dead-letters/{{id}}"
parameters = {{ "path.id" = {{ dictionary = "dead-letters", probability = 0.5 }} }}
[[operations]]
include-path-regex = "^/v1/routes/[{{]name[}}]"
parameters = {{ "path.name" = {{ dictionary = "routes", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/event-types/{{type}}"
parameters = {{ "path.type" = {{ dictionary = "types", probability = 0.5 }} }}

# Every check runs everywhere but where the document cannot say what the handler decides
# (reported in the issue 17 notes; each is a document or handler change still to make):
# a CloudEvent's extension attributes (any name, any value, with rules for some names);
[[operations]]
include-path-regex = "^/v1/(events|routes/[{{]name[}}]/test)$"
include-method = "POST"
checks.negative_data_rejection.enabled = false
# URLs against the security policy, durations in humantime's grammar (`timeout`, `backoff`,
# `overlap`), Rhai scripts, and a PUT's name that must be the subscription's own;
[[operations]]
include-path-regex = "^/v1/subscriptions"
checks.positive_data_acceptance.enabled = false
# a body given as a JSON array, which serde reads into the request's fields in order, and a
# portal link's `ttl` in humantime's grammar.
[[operations]]
include-path-regex = "^/v1/tenants/"
checks.negative_data_rejection.enabled = false
checks.positive_data_acceptance.enabled = false
"#,
        deliveries = quoted(&deliveries),
    );
    // schemathesis reads schemathesis.toml and writes a cache where it runs: a scratch directory,
    // not the repository.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("schemathesis.toml"), config).unwrap();
    let dir = scratch.path();
    let mut child = tokio::process::Command::new("schemathesis")
        .args(["run", &format!("{}/openapi.json", s.base)])
        // Every check (schemathesis runs all of them unless told otherwise; `--checks all` would
        // also override the per-operation exceptions of schemathesis.toml above).
        .args(["--header", &format!("Authorization: Bearer {}", s.admin.key().unwrap())])
        .args(["--max-examples", "25", "--workers", "1", "--phases", "examples,coverage,fuzzing", "--seed", "1"])
        .args(["--request-timeout", "30", "--suppress-health-check", "all", "--no-color"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .current_dir(dir)
        .stdout(std::fs::File::create(dir.join("out.txt")).unwrap())
        .stderr(std::fs::File::create(dir.join("err.txt")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Bounded: it is part of CI. Out of time, it is killed, and fails below.
    let status = match tokio::time::timeout(Duration::from_secs(300), child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            child.kill().await.unwrap();
            child.wait().await.unwrap()
        }
    };
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let text = format!("{}{}", read("out.txt"), read("err.txt"));
    eprintln!("{text}");
    assert!(
        status.success(),
        "schemathesis found answers that do not match the document (or ran out of time):\n{text}\n--- router log ---\n{}",
        s.router.log_text()
    );
    assert!(text.contains("passed"), "{text}");
}
