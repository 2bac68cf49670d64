//! Tenants and tenant tokens against a real router (embedded broker, SQLite): a tenant's
//! subscription receives only its tenant's events; a token made by `hookrelay token` reaches its
//! tenant's subscriptions, deliveries, dead letters and statistics only, answers 404 for another
//! tenant's ids and 403 for operator endpoints; expired tokens, tokens of another key, `alg:
//! none`, tampered claims and portal session cookies are refused with 401; a `read` token cannot
//! change anything; and a portal link opens one session, once.

use crate::common::*;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A config on the embedded broker (its queue file beside the config) with an operator's key.
pub(crate) fn config(admin: ApiKeyEntry) -> ConfigDir {
    let cfg = ConfigDir::with(MainConfig::new());
    cfg.set_main(MainConfig::new().version(1).embedded(cfg.path().join("queue.db")).loopback_targets().api_key(admin));
    cfg
}

/// The router's API, once it is ready (broker connected, store reachable).
pub(crate) async fn ready_api(router: &RouterProc) -> String {
    let base = router.api().await;
    let open = Api::new(&base, None);
    eventually("/readyz to answer 200", T, async || open.get("/readyz").await, |a| a.status == 200).await;
    base
}

/// `hookrelay token` for `tenant`, as the CLI prints it (the last line).
fn token(cfg: &ConfigDir, tenant: &str, scope: &str, ttl: &str) -> String {
    let out = std::process::Command::new(bin())
        .args(["token", "--config"])
        .arg(cfg.path())
        .args(["--tenant", tenant, "--scope", scope, "--ttl", ttl])
        .env("HOOKRELAY_SECRET_KEY", SEALING_KEY)
        .env_remove("HOOKRELAY_TOKEN_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "hookrelay token failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().last().unwrap().trim().to_string()
}

async fn wait_deliveries(api: &Api, path: &str, n: usize) -> Vec<Value> {
    let items = async || api.get(path).await.expect(200)["items"].as_array().cloned().unwrap_or_default();
    eventually(format!("{n} deliveries at {path}"), T, items, |items| items.len() >= n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_reaches_its_own_tenant_and_nothing_else() {
    let receiver = Receiver::ok().await;
    let (admin_key, admin_entry) = api_key("ops", &[Scope::Admin]);
    let cfg = config(admin_entry);
    // A file route of tenant acme, beside its subscription.
    cfg.route(&RouteConfig::new("acme-file").tenant("acme").events(["order.paid"]).url(receiver.url("/acme-file")));
    let router = RouterProc::start(&cfg);
    let base = ready_api(&router).await;
    let admin = Api::new(&base, Some(&admin_key));
    let sub = |name: &str, tenant: &str| json!({"name": name, "url": receiver.url(&format!("/{name}")), "events": ["order.paid"], "tenant": tenant, "max_attempts": 1});
    let acme = admin.post("/v1/subscriptions", sub("acme-orders", "acme")).await.expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let globex = admin.post("/v1/subscriptions", sub("globex-orders", "globex")).await.expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Events of both tenants: each subscription receives its tenant's only.
    for (id, subject) in [("e-acme", "acme"), ("e-globex", "globex"), ("e-none", "")] {
        let mut ev = event("order.paid", id, json!({"n": 1}));
        if !subject.is_empty() {
            ev["subject"] = json!(subject);
        }
        admin.post("/v1/events", ev).await.expect(202);
    }
    let got = receiver.wait_distinct("/acme-orders", 1, T).await;
    assert_eq!(got[0].id(), "e-acme");
    assert_eq!(receiver.wait_distinct("/acme-file", 1, T).await[0].id(), "e-acme");
    receiver.wait_distinct("/globex-orders", 1, T).await;
    wait_deliveries(&admin, "/v1/deliveries", 3).await;
    for path in ["/acme-orders", "/acme-file"] {
        assert_eq!(receiver.on(path).len(), 1, "{path} got another tenant's event: {:?}", receiver.all());
    }

    let manage = Api::new(&base, Some(&token(&cfg, "acme", "manage", "1h")));
    // Lists hold its own only.
    let subs = manage.get("/v1/subscriptions").await.expect(200).clone();
    let names: Vec<&str> = subs["items"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme-orders"]);
    let deliveries = manage.get("/v1/deliveries").await.expect(200).clone();
    let mut routes: Vec<&str> =
        deliveries["items"].as_array().unwrap().iter().map(|d| d["route"].as_str().unwrap()).collect();
    routes.sort();
    assert_eq!(routes, ["acme-file", "acme-orders"]);
    let stats = manage.get("/v1/stats").await.expect(200).clone();
    let stat_routes: Vec<&str> =
        stats["routes"].as_array().unwrap().iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!(stat_routes, ["acme-file", "acme-orders"]);
    let routes = manage.get("/v1/routes").await.expect(200).clone();
    let names: Vec<&str> = routes["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme-file", "acme-orders"]);
    let types = manage.get("/v1/event-types/order.paid").await.expect(200).clone();
    assert_eq!(types["routes"], json!(["acme-file", "acme-orders"]), "the catalogue names its own routes only");

    // Another tenant's ids are not there: 404, whatever the operation.
    let globex_delivery = hookrelay::store::delivery_id("globex-orders", "e-globex");
    for (method, path) in [
        ("GET", format!("/v1/subscriptions/{globex}")),
        ("DELETE", format!("/v1/subscriptions/{globex}")),
        ("POST", format!("/v1/subscriptions/{globex}/rotate-secret")),
        ("GET", format!("/v1/deliveries/{globex_delivery}")),
        ("POST", format!("/v1/deliveries/{globex_delivery}/retry")),
        ("GET", "/v1/routes/globex-orders".to_string()),
        ("POST", "/v1/routes/globex-orders/test".to_string()),
        ("POST", "/v1/routes/globex-orders/example".to_string()),
    ] {
        // A JSON caller, as the API asks of every POST, with a body or not.
        let a = manage.send(method, &path, None, &[("content-type", "application/json")]).await;
        assert_eq!(a.status, 404, "{method} {path} answered {}", a.text);
        assert_eq!(a.code(), "not_found");
    }
    let put = manage.put(&format!("/v1/subscriptions/{globex}"), sub("globex-orders", "globex"), &[]).await;
    put.expect(404);
    assert!(admin.get(&format!("/v1/subscriptions/{globex}")).await.expect(200)["enabled"].as_bool().unwrap());

    // Its own, it manages; another tenant's subscription cannot be made.
    manage.get(&format!("/v1/subscriptions/{acme}")).await.expect(200);
    let own = manage
        .post(
            "/v1/subscriptions",
            json!({"name": "acme-more", "url": receiver.url("/acme-more"), "events": ["order.*"]}),
        )
        .await;
    assert_eq!(own.expect(201)["tenant"], "acme", "a tenant's new subscription is its own");
    let theirs = manage.post("/v1/subscriptions", sub("sneaky", "globex")).await;
    assert_eq!(theirs.expect(422)["error"]["details"]["fields"][0]["field"], "tenant");

    // Dead letters: a replay of another tenant's ids finds nothing.
    let replay = manage.post("/v1/dead-letters/replay", json!({"ids": ["nope"], "dry_run": true})).await;
    assert_eq!(replay.expect(200)["not_found"], json!(["nope"]));

    // Operator endpoints refuse tenant tokens.
    for (method, path) in [
        ("GET", "/v1/config"),
        ("POST", "/v1/config/reload"),
        ("GET", "/v1/audit"),
        ("POST", "/v1/tenants/acme/portal-link"),
    ] {
        let a = manage.send(method, path, None, &[("content-type", "application/json")]).await;
        assert_eq!(a.status, 403, "{method} {path} answered {}", a.text);
    }
    manage.post("/v1/events", event("order.paid", "e-by-tenant", json!({"n": 1}))).await.expect(403);

    // A read token reads, and changes nothing.
    let read = Api::new(&base, Some(&token(&cfg, "acme", "read", "1h")));
    read.get("/v1/subscriptions").await.expect(200);
    let refused = read.post(&format!("/v1/subscriptions/{acme}/rotate-secret"), json!({})).await;
    refused.expect(403);
    assert!(refused.json["error"]["message"].as_str().unwrap().contains("manage"), "{}", refused.text);
    read.delete(&format!("/v1/subscriptions/{acme}")).await.expect(403);
    drop(router);
}

/// Claims signed with `key` (a test builds the ones `hookrelay token` would never make).
fn signed(key: &hookrelay::tokens::TokenKey, claims: Value) -> String {
    key.sign(&claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_foreign_unsigned_and_tampered_tokens_are_refused() {
    let (_, admin_entry) = api_key("ops", &[Scope::Admin]);
    let cfg = config(admin_entry);
    let router = RouterProc::start(&cfg);
    let base = ready_api(&router).await;
    let key = hookrelay::tokens::TokenKey::from_values(None, Some(SEALING_KEY)).unwrap().unwrap();
    let now = hookrelay::tokens::unix_now();
    let claims = |exp: u64, aud: &str| json!({"tenant": "acme", "scope": "manage", "exp": exp, "iat": now - 100, "iss": "hookrelay", "aud": aud});
    let good = signed(&key, claims(now + 600, "hookrelay"));
    Api::new(&base, Some(&good)).get("/v1/subscriptions").await.expect(200);

    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let payload = good.split('.').nth(1).unwrap();
    let signature = good.split('.').nth(2).unwrap();
    let tampered_payload = b64(&claims(now + 600, "hookrelay").to_string().replace("acme", "globex"));
    let other_key = hookrelay::tokens::TokenKey::new(vec![9; 32]).unwrap();
    let refused = [
        ("expired", signed(&key, claims(now - 1, "hookrelay"))),
        ("signed with another key", other_key.issue("acme", hookrelay::tokens::TokenScope::Manage, T).unwrap()),
        ("alg none", format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#))),
        ("alg none with the old signature", format!("{}.{payload}.{signature}", b64(r#"{"alg":"none","typ":"JWT"}"#))),
        ("HS512", format!("{}.{payload}.{signature}", b64(r#"{"alg":"HS512","typ":"JWT"}"#))),
        ("tampered tenant", format!("{}.{tampered_payload}.{signature}", good.split('.').next().unwrap())),
        ("a portal session", signed(&key, claims(now + 600, "hookrelay-portal"))),
        (
            "no expiry",
            signed(&key, json!({"tenant": "acme", "scope": "manage", "iss": "hookrelay", "aud": "hookrelay"})),
        ),
        (
            "an unknown scope",
            signed(
                &key,
                json!({"tenant": "acme", "scope": "admin", "exp": now + 600, "iat": now, "iss": "hookrelay", "aud": "hookrelay"}),
            ),
        ),
    ];
    for (what, token) in refused {
        let a = Api::new(&base, Some(&token)).get("/v1/subscriptions").await;
        assert_eq!(a.status, 401, "{what}: {}", a.text);
        assert_eq!(a.code(), "unauthorized", "{what}");
    }
    drop(router);
}

#[test]
fn hookrelay_token_needs_a_key_and_prints_the_token_last() {
    let cfg = ConfigDir::with(MainConfig::new().version(1));
    let out = std::process::Command::new(bin())
        .args(["token", "--config"])
        .arg(cfg.path())
        .args(["--tenant", "acme"])
        .env_remove("HOOKRELAY_SECRET_KEY")
        .env_remove("HOOKRELAY_TOKEN_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HOOKRELAY_TOKEN_KEY") && err.contains("HOOKRELAY_SECRET_KEY"),
        "says which key to set: {err}"
    );

    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 48]);
    let out = std::process::Command::new(bin())
        .args(["token", "--config"])
        .arg(cfg.path())
        .args(["--tenant", "acme", "--scope", "manage", "--ttl", "2h"])
        .env("HOOKRELAY_TOKEN_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().unwrap();
    let k = hookrelay::tokens::TokenKey::from_values(Some(&key), None).unwrap().unwrap();
    let claims = k.verify_tenant(token).unwrap();
    assert_eq!((claims.tenant.as_str(), claims.scope), ("acme", hookrelay::tokens::TokenScope::Manage));
    assert!((7190..=7200).contains(&(claims.exp - claims.iat)), "ttl 2h: {claims:?}");
}

#[test]
fn tenants_in_the_config_are_checked_with_their_place() {
    let cfg = ConfigDir::with(MainConfig::new().version(1).tenant_attribute("Tenant-Id"));
    // Written as text: the error names the line and column of `tenant`.
    cfg.route_text("shop", "events = [\"order.paid\"]\ntenant = \"a/b\"\nurl = \"https://shop.example.com/hooks\"");
    let out = std::process::Command::new(bin())
        .args(["validate", "--allow-missing-secrets", "--config"])
        .arg(cfg.path())
        .env_remove("HOOKRELAY_BROKER__URL")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("routes/shop.toml:2:10: tenant \"a/b\" must be 1 to 128 characters"), "{text}");
    assert!(text.contains("hookrelay.toml: [tenants] attribute = \"Tenant-Id\""), "{text}");
}

/// A form post with cookies, answered without following redirects.
async fn post_form(url: &str, cookies: &str, form: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let body = serde_urlencoded::to_string(form).unwrap();
    let req = http::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookies)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let text = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    (status, headers, text)
}

fn set_cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_link_opens_one_session_once_and_forms_need_their_csrf_token() {
    let (admin_key, admin_entry) = api_key("ops", &[Scope::Admin]);
    let cfg = config(admin_entry);
    let router = RouterProc::start(&cfg);
    let base = ready_api(&router).await;
    let admin = Api::new(&base, Some(&admin_key));
    let link =
        admin.post("/v1/tenants/acme/portal-link", json!({"scope": "read", "ttl": "5m"})).await.expect(201).clone();
    assert_eq!(link["tenant"], "acme");
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&base) && url.contains("/portal/enter?link="), "{url}");
    assert_eq!(admin.get("/v1/audit?action=tenant.portal_link").await.expect(200)["items"][0]["target"], "acme");
    admin.post("/v1/tenants/a%2Fb/portal-link", json!({})).await.expect(422);

    // The link's page only shows a button: fetching it uses nothing up.
    let page = Api::new(&base, None).get(link["path"].as_str().unwrap()).await;
    assert_eq!(page.status, 200);
    Api::new(&base, None).get(link["path"].as_str().unwrap()).await;
    let csrf_cookie = set_cookie(&page.headers, "hr_csrf").expect("a CSRF cookie");
    assert!(csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"), "{csrf_cookie}");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let cookie = csrf_cookie.split(';').next().unwrap().to_string();
    let token = page.text.split("name=\"_csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let nonce = url.split("link=").nth(1).unwrap();
    let enter = format!("{base}/portal/enter");

    // Without the form token, or with another cookie, the post is refused before anything happens.
    let (status, _, _) = post_form(&enter, &cookie, &[("link", nonce)]).await;
    assert_eq!(status, 403);
    let (status, _, _) =
        post_form(&enter, "hr_csrf=someone-elses-cookie-value", &[("link", nonce), ("_csrf", &token)]).await;
    assert_eq!(status, 403);

    let (status, headers, _) = post_form(&enter, &cookie, &[("link", nonce), ("_csrf", &token)]).await;
    assert_eq!(status, 303, "the link opens the portal");
    let session = set_cookie(&headers, "hr_portal").expect("a portal session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict") && session.contains("Path=/portal"),
        "{session}"
    );
    let (status, _, text) = post_form(&enter, &cookie, &[("link", nonce), ("_csrf", &token)]).await;
    assert_eq!(status, 403, "a link works once: {text}");
    assert!(text.contains("used already"), "{text}");
    drop(router);
}

/// What tenants add to the store, the same on both backends: a subscription's tenant, the
/// route lists a tenant's views filter by, the dead-letter count, the series of the overview's
/// chart, and one-time portal links.
async fn tenant_store_parts_conform(s: std::sync::Arc<dyn hookrelay::store::Store>) {
    use crate::store::{attempt, dead, subscription};
    use hookrelay::store::{DeadLetterFilter, DeliveryFilter, Outcome, PortalLink, SeriesBucket};

    let mut sub = subscription("sub-t", "acme-orders", vec![]);
    sub.tenant = Some("acme".into());
    assert_eq!(s.create_subscription(&sub, None).await.unwrap().tenant.as_deref(), Some("acme"));
    let stored = s.subscription("sub-t").await.unwrap().unwrap();
    assert_eq!(stored.tenant.as_deref(), Some("acme"));
    let moved = hookrelay::store::SubscriptionRecord { tenant: Some("globex".into()), ..stored.clone() };
    let updated = s.update_subscription(&moved, stored.version, 5_000, None).await.unwrap().unwrap();
    assert_eq!(updated.tenant.as_deref(), Some("globex"));
    assert_eq!(s.subscriptions().await.unwrap()[0].tenant.as_deref(), Some("globex"));

    let batch = vec![
        attempt("a", "e1", 1, Outcome::Delivered, Some(200), 1_000),
        attempt("b", "e2", 1, Outcome::Retrying, Some(503), 1_500),
        attempt("b", "e2", 2, Outcome::Delivered, Some(200), 2_500),
        attempt("c", "e3", 1, Outcome::Dead, Some(400), 3_100),
    ];
    s.record_attempts(&batch).await.unwrap();
    let routes_of = |f: DeliveryFilter| {
        let s = s.clone();
        async move {
            let mut r: Vec<String> = s.deliveries(&f).await.unwrap().items.into_iter().map(|d| d.route).collect();
            r.sort();
            r
        }
    };
    let only = |r: &[&str]| Some(r.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        routes_of(DeliveryFilter { routes: only(&["a", "c"]), limit: 10, ..Default::default() }).await,
        ["a", "c"]
    );
    assert!(routes_of(DeliveryFilter { routes: only(&[]), limit: 10, ..Default::default() }).await.is_empty());
    assert_eq!(routes_of(DeliveryFilter { limit: 10, ..Default::default() }).await, ["a", "b", "c"]);

    for (id, route, at) in [("d1", "a", 10), ("d2", "b", 20), ("d3", "b", 30)] {
        s.add_dead_letter(&dead(id, route, "rejected", at)).await.unwrap();
    }
    let count = |f: DeadLetterFilter| {
        let s = s.clone();
        async move { s.count_dead_letters(&f).await.unwrap() }
    };
    assert_eq!(count(DeadLetterFilter::default()).await, 3);
    assert_eq!(count(DeadLetterFilter { routes: only(&["b"]), ..Default::default() }).await, 2);
    assert_eq!(count(DeadLetterFilter { routes: only(&[]), ..Default::default() }).await, 0);
    assert_eq!(count(DeadLetterFilter { since_ms: Some(25), ..Default::default() }).await, 1);
    let page =
        s.dead_letters(&DeadLetterFilter { routes: only(&["a"]), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.items.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["d1"]);

    // Buckets of 1 s from 1 000: [1 000, 2 000) holds two attempts, one delivered; an empty
    // bucket is absent; the window's end is exclusive.
    let series = s.attempt_series(1_000, 3_100, 1_000, None).await.unwrap();
    let b = |start_ms, attempts, delivered| SeriesBucket { start_ms, attempts, delivered };
    assert_eq!(series, [b(1_000, 2, 1), b(2_000, 1, 1)]);
    assert_eq!(s.attempt_series(0, 10_000, 5_000, only(&["c"]).as_deref()).await.unwrap(), [b(0, 1, 0)]);

    let link = |hash: &str, expires_at_ms| PortalLink {
        nonce_hash: hash.into(),
        tenant: "acme".into(),
        scope: "manage".into(),
        created_by: "ops".into(),
        created_at_ms: 1_000,
        expires_at_ms,
    };
    s.create_portal_link(&link("h1", 10_000)).await.unwrap();
    s.create_portal_link(&link("h2", 2_000)).await.unwrap();
    assert_eq!(s.use_portal_link("h1", 5_000).await.unwrap(), Some(link("h1", 10_000)));
    assert_eq!(s.use_portal_link("h1", 5_001).await.unwrap(), None, "a link works once");
    assert_eq!(s.use_portal_link("h2", 2_000).await.unwrap(), None, "an expired link does not work");
    assert_eq!(s.use_portal_link("nope", 1_500).await.unwrap(), None);
    s.prune(3_000).await.unwrap();
    s.create_portal_link(&link("h2", 50_000)).await.expect("the expired link was pruned, its hash is free");
}

#[tokio::test]
async fn sqlite_tenant_store_parts_conform() {
    crate::store::on_sqlite(tenant_store_parts_conform).await;
}

#[tokio::test]
async fn postgres_tenant_store_parts_conform() {
    crate::store::on_postgres(tenant_store_parts_conform).await;
}

/// The console's sign-in and sessions follow a key's `allow_from`, as the API does: a key bound to
/// other networks signs nobody in from here, and a session made for it (signed with the router's
/// own key) opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bound_to_other_networks_opens_no_console_session_from_here() {
    let (ops_key, ops_entry) = api_key("ops", &[Scope::Admin]);
    let (remote_key, remote_entry) = api_key("remote", &[Scope::Admin]);
    let cfg = config(ops_entry);
    cfg.set_main(cfg.main().api_key(remote_entry.clone().allow_from(["10.0.0.0/8"])));
    let router = RouterProc::start(&cfg);
    let base = ready_api(&router).await;
    let page = Api::new(&base, None).get("/ui/login").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let cookie = set_cookie(&page.headers, "hr_csrf").expect("a CSRF cookie").split(';').next().unwrap().to_string();
    let token = page.text.split("name=\"_csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let login = format!("{base}/ui/login");

    let (status, headers, text) = post_form(&login, &cookie, &[("key", &remote_key), ("_csrf", &token)]).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("may not be used from 127.0.0.1"), "says why: {text}");
    assert!(set_cookie(&headers, "hr_console").is_none(), "no session");
    let (status, headers, _) = post_form(&login, &cookie, &[("key", &ops_key), ("_csrf", &token)]).await;
    assert_eq!(status, 303, "the unbound key signs in");
    assert!(set_cookie(&headers, "hr_console").is_some());

    let key = hookrelay::tokens::TokenKey::from_values(None, Some(SEALING_KEY)).unwrap().unwrap();
    let forged = hookrelay::ui::session::console_session(&key, "remote", &remote_entry.hash);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("{base}/ui/"))
        .header("cookie", format!("hr_console={forged}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let to = resp.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or_default().to_string();
    assert!(resp.status().is_redirection() && to.starts_with("/ui/login"), "{} to {to:?}", resp.status());
    drop(router);
}
