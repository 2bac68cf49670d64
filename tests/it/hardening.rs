//! What an attacker or a careless producer meets, on the real binary: a keyless API that a web
//! page cannot drive (loopback `Host` names only, same-origin, JSON content types), event
//! attributes that must be header-safe at ingest and at AMQP consume, and `allow_from` for the
//! API and for each key, shown by `validate`.

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Sends one request with exactly these headers (the client adds `Host` only when not given),
/// from the local address `from` when given.
async fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    from: Option<&str>,
) -> Answer {
    let mut connector = HttpConnector::new();
    connector.set_local_address(from.map(|ip| ip.parse::<IpAddr>().unwrap()));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut req = http::Request::builder().method(method).uri(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = client.request(req).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer { status, headers, json: serde_json::from_slice(&bytes).unwrap_or(Value::Null), text }
}

/// `hookrelay_api_refused_total{reason}` as `/metrics` shows it.
async fn refused(base: &str, reason: &str) -> f64 {
    let m = send(base, "GET", "/metrics", &[], b"", None).await;
    let prefix = format!("hookrelay_api_refused_total{{reason=\"{reason}\"}} ");
    let line = m.text.lines().find_map(|l| l.strip_prefix(&prefix));
    line.unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{}", m.text)).parse().unwrap()
}

fn paid(id: &str) -> Vec<u8> {
    serde_json::to_vec(&event("order.paid", id, json!({"n": 1}))).unwrap()
}

const CE: (&str, &str) = ("content-type", "application/cloudevents+json");

/// A router on the embedded broker (its queue file in the config directory) with one route to
/// `rx`, and `main` as its `hookrelay.toml`.
fn router_config(rx: &Receiver, main: MainConfig) -> ConfigDir {
    let cfg = ConfigDir::with(main.version(1).loopback_targets());
    cfg.set_main(cfg.main().embedded(cfg.path().join("queue.db")));
    cfg.route(&RouteConfig::new("orders").events(["order.paid"]).url(rx.url("/orders")));
    cfg
}

/// Regression: the keyless API served `Host: attacker.example` (DNS rebinding) and the requests a
/// page sends without a preflight: a `text/plain` event, a form-encoded reload, a bodyless test
/// send. Each is refused now, nothing reaches the broker or a receiver, and each refusal counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_api_refuses_foreign_hosts_cross_site_requests_and_non_json_bodies() {
    let rx = Receiver::ok().await;
    let cfg = router_config(&rx, MainConfig::new());
    let router = RouterProc::ready(&cfg).await;
    let base = router.api().await;

    // DNS rebinding: the page's own name, with or without a port.
    for host in ["attacker.example", "attacker.example:8080", "127.0.0.1.nip.example"] {
        let a = send(&base, "GET", "/v1/routes", &[("host", host)], b"", None).await;
        assert_eq!(a.expect(421)["error"]["code"], "misdirected", "Host {host}");
    }
    let port = base.rsplit(':').next().unwrap();
    for host in ["localhost".to_string(), format!("LocalHost:{port}"), "127.0.0.1:1".into(), "[::1]:9".into()] {
        send(&base, "GET", "/v1/routes", &[("host", &host)], b"", None).await.expect(200);
    }

    // What a page can send to any address without a preflight.
    let text = send(&base, "POST", "/v1/events", &[("content-type", "text/plain")], &paid("forged-1"), None).await;
    assert_eq!(text.expect(415)["error"]["code"], "unsupported_media_type");
    let accepted = json!(["application/cloudevents+json", "application/json", "application/cloudevents-batch+json"]);
    assert_eq!(text.json["error"]["details"]["accepted"], accepted);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    send(&base, "POST", "/v1/config/reload", &form, b"a=1", None).await.expect(415);
    let test_send = send(&base, "POST", "/v1/routes/orders/test", &[], b"", None).await;
    assert!(test_send.expect(415)["error"]["message"].as_str().unwrap().contains("even without a body"));

    // JSON, but from a page of another origin.
    let cross = [
        vec![CE, ("origin", "http://attacker.example")],
        vec![CE, ("origin", "null")],
        vec![CE, ("sec-fetch-site", "cross-site")],
        vec![CE, ("sec-fetch-site", "same-site"), ("origin", "http://127.0.0.1:1")],
    ];
    for (i, headers) in cross.iter().enumerate() {
        let a = send(&base, "POST", "/v1/events", headers, &paid(&format!("forged-x{i}")), None).await;
        assert_eq!(a.expect(403)["error"]["code"], "cross_site", "{headers:?}");
    }

    // The API's own pages, and clients that are no browser, are served.
    let own = [CE, ("origin", base.as_str()), ("sec-fetch-site", "same-origin")];
    send(&base, "POST", "/v1/events", &own, &paid("kept-1"), None).await.expect(202);
    let json_ct = [("content-type", "application/json; charset=utf-8")];
    send(&base, "POST", "/v1/events", &json_ct, &paid("kept-2"), None).await.expect(202);
    // A bodyless DELETE or PATCH needs no content type (a page cannot send one cross-origin
    // without a preflight, which this API never grants): routing answers.
    send(&base, "DELETE", "/v1/subscriptions/nope", &[], b"", None).await.expect(404);
    send(&base, "PATCH", "/v1/routes", &[], b"", None).await.expect(405);
    // With a body, they do.
    send(&base, "PUT", "/v1/subscriptions/nope", &[("content-type", "text/plain")], b"{}", None).await.expect(415);

    let got = rx.wait_distinct("/orders", 2, T).await;
    let mut ids: Vec<String> = rx.all().iter().map(Received::id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, ["kept-1", "kept-2"], "nothing refused reached the receiver: {got:?}");

    // The OpenAPI document says so, on every operation.
    let doc = send(&base, "GET", "/openapi.json", &[], b"", None).await;
    let ingest = &doc.json["paths"]["/v1/events"]["post"]["responses"];
    for status in ["403", "415", "421"] {
        assert!(ingest[status].is_object(), "POST /v1/events documents {status}");
    }
    assert!(doc.json["paths"]["/healthz"]["get"]["responses"]["421"].is_object());

    assert_eq!(refused(&base, "host").await, 3.0);
    assert_eq!(refused(&base, "content_type").await, 4.0);
    assert_eq!(refused(&base, "cross_site").await, 4.0);
    assert_eq!(refused(&base, "address").await, 0.0);
}

/// With API keys, the key is what keeps web pages out (a browser cannot attach it to a
/// cross-origin request without a preflight): any `Host` and `Origin` are served, as behind a
/// proxy. The content type is still required at ingest, and `hookrelay publish --api` sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_any_host_is_served_and_ingest_still_needs_a_json_content_type() {
    let rx = Receiver::ok().await;
    let (key, entry) = api_key("shop", &[Scope::Ingest, Scope::Read]);
    let cfg = router_config(&rx, MainConfig::new().api_key(entry));
    let router = RouterProc::ready(&cfg).await;
    let base = router.api().await;
    let bearer = format!("Bearer {key}");
    let auth = ("authorization", bearer.as_str());

    let proxied = [auth, ("host", "hookrelay.internal.example"), ("origin", "https://console.example")];
    send(&base, "GET", "/v1/routes", &proxied, b"", None).await.expect(200);
    let text = send(&base, "POST", "/v1/events", &[auth, ("content-type", "text/plain")], &paid("t-1"), None).await;
    assert_eq!(text.expect(415)["error"]["code"], "unsupported_media_type");
    assert_eq!(refused(&base, "content_type").await, 1.0);

    let out = Command::new(bin())
        .args(["publish", "--api", &base, "--api-key", &key, "--type", "order.paid", "--data", r#"{"n": 1}"#])
        .args(["--id", "published-1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "publish --api: {}", String::from_utf8_lossy(&out.stderr));
    let got = rx.wait_distinct("/orders", 1, T).await;
    assert_eq!(got[0].id(), "published-1");
}

/// Regression: an id with a control character was accepted (202) and delivered as
/// `webhook-id: invalid`. Every attribute that goes into a header or an AMQP short string is
/// checked at ingest (422 naming it); what is accepted arrives with its own id, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_attributes_that_cannot_be_carried_in_headers() {
    let rx = Receiver::ok().await;
    let cfg = router_config(&rx, MainConfig::new());
    let router = RouterProc::ready(&cfg).await;
    let base = router.api().await;
    let long = "x".repeat(256);
    let cases: [(&str, Value); 7] = [
        ("id", json!("evt\n1")),
        ("id", json!("evt\u{0}1")),
        ("id", json!(long)),
        ("type", json!("order.paid\r")),
        ("source", json!("shop front")),
        ("subject", json!("tenant\u{1b}[2J")),
        ("sequence", json!("7\r\nx-injected: 1")),
    ];
    for (attr, value) in &cases {
        let mut ev = event("order.paid", "ok-id", json!({"n": 1}));
        ev[*attr] = value.clone();
        let a = send(&base, "POST", "/v1/events", &[CE], &serde_json::to_vec(&ev).unwrap(), None).await;
        assert_eq!(a.expect(422)["error"]["code"], "malformed", "{attr} = {value}");
        assert_eq!(a.json["error"]["details"]["attribute"], *attr, "{}", a.text);
        assert!(a.json["error"]["message"].as_str().unwrap().contains(&format!("`{attr}`")), "{}", a.text);
    }
    // A subject in any language is fine: it is never copied into a header as it is.
    let mut ev = event("order.paid", "evt-ok.1", json!({"n": 1}));
    ev["subject"] = json!("franquia São Paulo");
    send(&base, "POST", "/v1/events", &[CE], &serde_json::to_vec(&ev).unwrap(), None).await.expect(202);
    let got = rx.wait_distinct("/orders", 1, T).await;
    assert_eq!(rx.all().len(), got.len(), "only the valid event arrived");
    assert_eq!(got[0].id(), "evt-ok.1");
    verify_spec(SECRET, &got[0]).unwrap();
}

/// The same events published straight to RabbitMQ (no ingest check on the way) are
/// dead-lettered `malformed` by the consumer, which shares the decoder; the valid event
/// published after them is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_events_with_unsafe_attributes_are_dead_lettered_malformed() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.route(&RouteConfig::new("orders").events(["order.paid"]).url(rx.url("/orders")));
    let _router = RouterProc::ready(&cfg).await;
    let raw = |ev: Value| ("order.paid".to_string(), serde_json::to_vec(&ev).unwrap());
    vh.publish_raw(&[
        raw(event("order.paid", "evil\r\nid", json!({"n": 1}))),
        raw(event("order.paid", &"y".repeat(300), json!({"n": 2}))),
        raw(event("order.paid", "good-1", json!({"n": 3}))),
    ])
    .await;
    let got = rx.wait_distinct("/orders", 1, T).await;
    assert_eq!(got[0].id(), "good-1");
    let dead = cfg.wait_dead_letters(2, T).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        assert_eq!(d.reason(), "malformed", "{d:?}");
        assert!(d.error.contains("attribute `id`"), "{}", d.error);
    }
    assert!(dead.iter().any(|d| d.error.contains("U+000D")), "{dead:?}");
    assert!(dead.iter().any(|d| d.error.contains("300 bytes")), "{dead:?}");
    assert_eq!(rx.all().len(), 1, "nothing but good-1 was sent");
}

/// `[api] allow_from` refuses callers from elsewhere on every path; a key's own `allow_from`
/// makes it useless outside its networks. Both answer 403 in the error shape, count in
/// `/metrics`, and show in `validate`. (The tests call from several loopback addresses.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_from_limits_callers_and_each_key_to_their_networks() {
    let rx = Receiver::ok().await;
    let (shop, shop_entry) = api_key("shop", &[Scope::Ingest]);
    let (ops, ops_entry) = api_key("ops", &[Scope::Admin]);
    let main = MainConfig::new()
        .api_allow_from(["127.0.0.1", "127.0.0.3/32"])
        .api_key(shop_entry.allow_from(["127.0.0.3"]))
        .api_key(ops_entry);
    let cfg = router_config(&rx, main);
    let router = RouterProc::ready(&cfg).await;
    let base = router.api().await;
    let bearer = |k: &str| format!("Bearer {k}");
    let (shop_auth, ops_auth) = (bearer(&shop), bearer(&ops));

    let outside = send(&base, "GET", "/healthz", &[], b"", Some("127.0.0.2")).await;
    assert_eq!(outside.expect(403)["error"]["code"], "address_not_allowed");
    assert!(!outside.text.contains("127.0.0.3"), "the allowed networks are not told: {}", outside.text);
    let with_key = [("authorization", ops_auth.as_str())];
    send(&base, "GET", "/v1/routes", &with_key, b"", Some("127.0.0.2")).await.expect(403);
    send(&base, "GET", "/v1/routes", &with_key, b"", Some("127.0.0.1")).await.expect(200);

    // The shop key works from its own network only, even inside [api] allow_from.
    let shop_headers = [("authorization", shop_auth.as_str()), CE];
    let leaked = send(&base, "POST", "/v1/events", &shop_headers, &paid("leaked-1"), Some("127.0.0.1")).await;
    assert_eq!(leaked.expect(403)["error"]["code"], "address_not_allowed");
    assert!(leaked.json["error"]["message"].as_str().unwrap().contains("\"shop\""), "{}", leaked.text);
    send(&base, "POST", "/v1/events", &shop_headers, &paid("from-shop-1"), Some("127.0.0.3")).await.expect(202);
    let got = rx.wait_distinct("/orders", 1, T).await;
    assert_eq!(rx.all().iter().map(Received::id).collect::<Vec<_>>(), ["from-shop-1"], "{got:?}");

    assert_eq!(refused(&base, "address").await, 2.0);
    assert_eq!(refused(&base, "key_address").await, 1.0);

    let validate =
        |args: &[&str]| Command::new(bin()).arg("validate").args(args).arg(cfg.path()).env(SECRET_ENV, SECRET).output();
    let text = validate(&["--config"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("callers from 127.0.0.1/32, 127.0.0.3/32"), "{text}");
    assert!(text.contains("shop [ingest] from 127.0.0.3/32") && text.contains("ops [admin]"), "{text}");
    let out = validate(&["--format", "json", "--config"]).unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["api"]["allow_from"], json!(["127.0.0.1/32", "127.0.0.3/32"]), "{report}");
    let keys = report["api"]["keys"].as_array().unwrap();
    let shop_json = keys.iter().find(|k| k["name"] == "shop").unwrap();
    assert_eq!(shop_json["allow_from"], json!(["127.0.0.3/32"]));
    assert_eq!(keys.iter().find(|k| k["name"] == "ops").unwrap()["allow_from"], Value::Null);
}

/// A network that does not parse, or has host bits set (most likely a mistyped address), is
/// reported at its `allow_from` in the file, in text and JSON.
#[test]
fn bad_networks_in_allow_from_are_reported_with_file_line_and_column() {
    let entry = format!("[[api.keys]]\nname = \"shop\"\nhash = \"sha256:{}\"\nscopes = [\"ingest\"]\n", "0".repeat(64));
    let cfg = ConfigDir::with_main_text(&format!(
        "version = 1\n[api]\nlisten = \"127.0.0.1:0\"\nallow_from = [\"127.0.0.1\",\n  \"10.1.2.3/8\"]\n{entry}"
    ));
    let out = Command::new(bin()).args(["validate", "--config"]).arg(cfg.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            r#"hookrelay.toml:4:14: "10.1.2.3/8" has bits set past its /8 prefix: write the network "10.0.0.0/8""#
        ),
        "{text}"
    );

    let cfg = ConfigDir::with_main_text(&format!(
        "version = 1\n[api]\nlisten = \"127.0.0.1:0\"\n{entry}allow_from = [\"10.0.0/8\"]\n"
    ));
    let out = Command::new(bin()).args(["validate", "--format", "json", "--config"]).arg(cfg.path()).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &report["errors"][0];
    assert_eq!((e["file"].as_str(), e["line"].as_u64()), (Some("hookrelay.toml"), Some(8)), "{report}");
    assert!(e["col"].as_u64() == Some(14) && e["message"].as_str().unwrap().contains("is not a network"), "{report}");
}
