//! One pass, one shape: `validate` reports every problem of a config at once (plugins with the
//! route files), and a schema violation is described the same way by the ingest API's error, a
//! dead letter and `publish`.

use crate::common::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn validate_reports_a_plugin_syntax_error_with_the_route_files_errors() {
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets());
    // A route file that does not parse (an unknown key), whose plugin does not compile either,
    // and another plugin no route names yet, broken too.
    cfg.route_text(
        "broken",
        "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\nfilter = \"plugins/f.rhai\"\nretries = 3",
    );
    cfg.file("plugins/f.rhai", "fn filter(event) {\n  event.data.total >\n}\n");
    cfg.file("plugins/spare.rhai", "fn transform(event) { let = 1; event }\n");
    let out = Command::new(bin())
        .args(["validate", "--format", "json", "--config"])
        .arg(cfg.path())
        .env(SECRET_ENV, SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&str> = report["errors"].as_array().unwrap().iter().map(|e| e["file"].as_str().unwrap()).collect();
    for file in ["routes/broken.toml", "plugins/f.rhai", "plugins/spare.rhai"] {
        assert!(files.contains(&file), "an error in {file}, in the same pass: {report}");
    }
    let route = report["errors"].as_array().unwrap().iter().find(|e| e["file"] == "routes/broken.toml").unwrap();
    assert!(route["message"].as_str().unwrap().contains("unknown field `retries`"), "{route}");
    assert_eq!(route["line"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violation_reads_the_same_in_the_api_error_the_dead_letter_and_publish() {
    let vh = Vhost::new();
    let cfg = ConfigDir::new(&vh);
    let rx = Receiver::ok().await;
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url(rx.url("/r")));
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    // `n` is required: a violation at the root of `data`; `total` has the wrong type: at a path.
    let data = json!({"total": "ten"});
    let refused = api.post("/v1/events", event("order.paid", "v-1", data.clone())).await;
    refused.expect(422);
    let message = refused.json["error"]["message"].as_str().unwrap().to_string();
    let details = refused.json["error"]["details"].clone();
    assert!(message.starts_with("data does not match schema order.paid v1: "), "{message}");
    for says in ["data: \"n\" is a required property", "data/total: \"ten\" is not of type \"number\""] {
        assert!(message.contains(says), "{says:?} in {message:?}");
    }
    let mut violations = details["violations"].as_array().cloned().unwrap_or_default();
    violations.sort_by_key(|v| v["path"].to_string());
    assert_eq!(
        violations,
        [
            json!({"path": "", "message": "\"n\" is a required property"}),
            json!({"path": "/total", "message": "\"ten\" is not of type \"number\""}),
        ],
        "{details}"
    );

    // The same event straight into RabbitMQ, past the API: dead-lettered, with the same words.
    vh.publish(&[event("order.paid", "v-1", data.clone())]).await;
    cfg.wait_dead_letters(1, T).await;
    let page = api.get("/v1/dead-letters").await;
    let dead = &page.expect(200)["items"][0];
    assert_eq!(dead["reason"], "schema");
    assert_eq!(dead["error"], message.as_str());
    assert_eq!(dead["details"], details);

    // `publish` (straight to RabbitMQ on this config) refuses it with the API's message.
    let out = Command::new(bin())
        .args(["publish", "--type", "order.paid", "--data", &data.to_string(), "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), format!("error: {message}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_claims_bearer_auth_only_while_the_api_has_keys() {
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets());
    let router = RouterProc::ready(&cfg).await;
    let open = Api::new(&router.api().await, None);
    let doc = open.get("/openapi.json").await.json;
    assert!(doc["components"].get("securitySchemes").is_none(), "no keys: no scheme");
    assert!(doc["paths"]["/v1/deliveries"]["get"].get("security").is_none());
    // The live types are the event body's branches, each with its data schema.
    let branches =
        doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/cloudevents+json"]["schema"]["oneOf"]
            .as_array()
            .cloned()
            .unwrap_or_default();
    let types: Vec<&str> = branches.iter().filter_map(|b| b["properties"]["type"]["const"].as_str()).collect();
    assert_eq!(types, ["order.created", "order.paid"]);
    assert_eq!(branches[1]["properties"]["data"]["required"], json!(["n"]));
    drop(router);

    let (key, entry) = api_key("admin", &[Scope::Admin]);
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets().api_key(entry));
    let router = RouterProc::ready(&cfg).await;
    let doc = Api::new(&router.api().await, Some(&key)).get("/openapi.json").await.json;
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["paths"]["/v1/deliveries"]["get"]["security"], json!([{"bearer": []}]));
}
