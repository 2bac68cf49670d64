//! SSRF verdicts that say what happened (issue 13, item 4), on the real binary: a host written as
//! numbers (decimal, hex, octal, short forms) is judged as the address it names, the same for
//! `http` and `https` (refused at load, by `POST /v1/subscriptions/validate` and at subscription
//! create; where allowed, delivered to that address, over TLS too), and credentials in target
//! URLs are masked for callers without the `admin` scope, in API answers and the audit trail.

use crate::common::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Spellings of 127.0.0.1 that browsers and `inet_aton` accept.
const LOOPBACK_SPELLINGS: [&str; 6] = ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1", "127.0.0.1."];

/// Regression: `https://2130706433/` failed in TLS ("invalid dns name") before the guard ran, so
/// `validate` answered `allowed: true` and the dead letter said `exhausted`. Now every spelling is
/// refused as 127.0.0.1, for `http` as for `https`, by the API and at load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_hosts_are_judged_as_the_address_they_name_for_http_and_https() {
    let cfg = ConfigDir::with(MainConfig::new().version(1).allow_http(true));
    cfg.set_main(cfg.main().embedded(cfg.path().join("queue.db")));
    let router = RouterProc::start(&cfg);
    let api = Api::new(&router.api().await, None);
    for host in LOOPBACK_SPELLINGS {
        for scheme in ["http", "https"] {
            let url = format!("{scheme}://{host}:8443/hook");
            let check = api.post("/v1/subscriptions/validate", json!({"url": url})).await;
            assert_eq!(check.expect(200)["allowed"], false, "{url}: {}", check.text);
            let why = check.json["policy_error"].as_str().unwrap_or_default();
            assert!(why.contains("requests to 127.0.0.1 are blocked"), "{url}: {why}");
            assert!(check.json["ping"].is_null(), "nothing was sent to {url}");
        }
    }
    let metadata = api.post("/v1/subscriptions/validate", json!({"url": "https://2852039166/latest"})).await;
    assert!(metadata.expect(200)["policy_error"].as_str().unwrap().contains("169.254.169.254 are always blocked"));

    let created = api
        .post("/v1/subscriptions", json!({"name": "sneaky", "events": ["order.paid"], "url": "https://0x7f.1/h"}))
        .await;
    assert_eq!(created.status, 422, "{}", created.text);
    assert!(created.text.contains("127.0.0.1"), "{}", created.text);

    // In a route file: a load error at the url's line.
    let files = ConfigDir::with(MainConfig::new().version(1));
    files.route_text("sneaky", "events = [\"order.paid\"]\nurl = \"https://0177.0.0.1/hook\"");
    let out = Command::new(bin()).args(["validate", "--config"]).arg(files.path()).env(SECRET_ENV, SECRET).output();
    let out = out.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("routes/sneaky.toml:2:") && text.contains("requests to 127.0.0.1 are blocked"), "{text}");
}

/// Where private networks are allowed, a numeric host is sent to the address it names: over
/// plain HTTP, and over TLS (as the dotted address, whose certificate the receiver presents).
async fn numeric_hosts_are_delivered_to_their_address_where_allowed(on: TestBroker) {
    let rx = Receiver::ok().await;
    let ca = TestCa::new();
    let tls = Receiver::start_tls(&ca).await;
    let cfg = ConfigDir::with(on.main().ca_file("ca.pem"));
    cfg.file("ca.pem", &ca.ca_pem);
    let plain = rx.url("/plain").replace("127.0.0.1", "2130706433");
    let secure = tls.url("/secure").replace("localhost", "0x7f.1");
    cfg.route(&RouteConfig::new("plain").events(["order.paid"]).url(&plain));
    cfg.route(&RouteConfig::new("secure").events(["order.paid"]).url(&secure));
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    let shown = api.get("/v1/routes/secure").await;
    assert!(shown.expect(200)["url"].as_str().unwrap().starts_with("https://127.0.0.1:"), "{}", shown.text);

    on.publish(&router, &numbered("n", 2)).await;
    for (r, path) in [(&rx, "/plain"), (&tls, "/secure")] {
        let got = r.wait_distinct(path, 2, T).await;
        verify_spec(SECRET, &got[0]).unwrap();
    }
    assert!(cfg.dead_letters().await.is_empty());
}

on_both_brokers!(super::TestBroker::rabbitmq(), super::TestBroker::embedded();
    numeric_hosts_are_delivered_to_their_address_where_allowed,
);

/// User-info and secret-looking query values in target URLs are `***` for a `read` key, in
/// `GET /v1/subscriptions`, `GET /v1/routes` and `GET /v1/audit`; an `admin` key sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_target_urls_are_masked_for_callers_without_admin() {
    let rx = Receiver::ok().await;
    let (admin_key, admin_entry) = api_key("ops", &[Scope::Admin]);
    let (read_key, read_entry) = api_key("viewer", &[Scope::Read]);
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets().api_key(admin_entry).api_key(read_entry));
    cfg.set_main(cfg.main().embedded(cfg.path().join("queue.db")));
    let file_url = format!("{}?api_key=k1&page=2", rx.url("/file").replace("http://", "http://erp:pa55@"));
    cfg.route(&RouteConfig::new("file").events(["order.paid"]).url(&file_url));
    let router = RouterProc::ready(&cfg).await;
    let base = router.api().await;
    let (admin, read) = (Api::new(&base, Some(&admin_key)), Api::new(&base, Some(&read_key)));

    let sub_url = format!("{}?access_token=s3cr3t&Signature=sig&x=1", rx.url("/sub"));
    let created =
        admin.post("/v1/subscriptions", json!({"name": "erp-sub", "events": ["order.paid"], "url": sub_url})).await;
    let id = created.expect(201)["id"].as_str().unwrap().to_string();
    assert_eq!(created.json["url"], sub_url, "the admin who made it sees it");

    let masked_sub = format!("{}?access_token=***&Signature=***&x=1", rx.url("/sub"));
    let masked_file = format!("{}?api_key=***&page=2", rx.url("/file").replace("http://", "http://***@"));
    let sub = read.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(sub.expect(200)["url"], masked_sub, "{}", sub.text);
    let list = read.get("/v1/subscriptions").await;
    assert_eq!(list.expect(200)["items"][0]["url"], masked_sub);
    assert_eq!(admin.get(&format!("/v1/subscriptions/{id}")).await.expect(200)["url"], sub_url);
    assert_eq!(read.get("/v1/routes/file").await.expect(200)["url"], masked_file);
    let routes = read.get("/v1/routes").await;
    let urls: Vec<&Value> = routes.expect(200)["items"].as_array().unwrap().iter().map(|r| &r["url"]).collect();
    assert!(!routes.text.contains("s3cr3t") && !routes.text.contains("pa55"), "{urls:?}");
    assert_eq!(admin.get("/v1/routes/file").await.expect(200)["url"], file_url);

    let audit = read.get("/v1/audit?action=subscription.create").await;
    assert!(!audit.expect(200).to_string().contains("s3cr3t"), "{}", audit.text);
    assert_eq!(audit.json["items"][0]["details"]["spec"]["url"], masked_sub, "{}", audit.text);
    let audit = admin.get("/v1/audit?action=subscription.create").await;
    assert_eq!(audit.expect(200)["items"][0]["details"]["spec"]["url"], sub_url);
}
