//! The console and the portal in a real headless Chromium (Debian's `chromium`, driven over CDP
//! by chromiumoxide), against a real router (embedded broker, SQLite) and a real receiver: an
//! operator signs in, creates a subscription, sends a test event, follows its delivery and
//! attempts, and replays its dead letter after a dry run; a tenant enters through a one-time
//! portal link, sees only its own endpoints and deliveries, cannot reach another tenant's by URL,
//! and sends itself a test event. A screenshot of each main page is written under
//! `target/screenshots/` for review.
//!
//! Without `chromium` on the PATH these tests say so and pass, except under CI (`CI` set), where
//! they fail: CI must install it.

use crate::common::*;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::{Page, ScreenshotParams};
use futures_util::StreamExt;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A headless Chromium with a fresh profile, closed on drop.
struct Chrome {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Drop for Chrome {
    /// Ends the browser and reaps its process, also when a test panics.
    fn drop(&mut self) {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let _ = self.browser.kill().await;
                let _ = self.browser.wait().await;
            })
        });
        self.handler.abort();
    }
}

/// The browser, or `None` (with a message) when chromium is not installed outside CI.
async fn chrome() -> Option<Chrome> {
    let exe = ["chromium", "chromium-browser"].into_iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
    });
    let Some(exe) = exe else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing: CI must install it (apt-get install -y chromium)"
        );
        eprintln!("skipped: chromium is not installed (apt-get install -y chromium chromium-driver)");
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let config = BrowserConfig::builder()
        .chrome_executable(exe)
        .no_sandbox()
        .user_data_dir(profile.path())
        .args(["--disable-gpu", "--disable-quic", "--disable-component-update"])
        .window_size(1360, 900)
        .viewport(None)
        .launch_timeout(T)
        .request_timeout(T)
        .build()
        .unwrap();
    let (browser, mut handler) = Browser::launch(config).await.expect("chromium starts");
    let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
    Some(Chrome { browser, handler, _profile: profile })
}

/// A config on the embedded broker with an admin key; the router; the base URL.
async fn router(admin: ApiKeyEntry) -> (ConfigDir, RouterProc, String) {
    let cfg = crate::tokens::config(admin);
    cfg.set_main(cfg.main().version(7));
    let router = RouterProc::start(&cfg);
    let base = crate::tokens::ready_api(&router).await;
    (cfg, router, base)
}

/// The page's HTML once its document has loaded, else empty: a look while the browser still
/// parses a page sees only its first part (the heading, not yet the table below it). One script
/// reads both, so that a navigation cannot come between the check and the read.
async fn text(page: &Page) -> String {
    const LOADED_HTML: &str = "document.readyState === 'complete' ? document.documentElement.outerHTML : ''";
    match page.evaluate(LOADED_HTML).await {
        Ok(html) => html.into_value::<String>().unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the page's HTML holds `needle` (reloading it before each look after the first,
/// with `reload`).
async fn wait_text(page: &Page, needle: &str, reload: bool) -> String {
    let mut first = true;
    let look = async || {
        if reload && !std::mem::take(&mut first) {
            let _ = page.reload().await;
        }
        Text(text(page).await)
    };
    eventually(format!("the page to show {needle:?}"), T, look, |html| html.0.contains(needle)).await.0
}

async fn goto(page: &Page, url: &str) {
    page.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
}

async fn fill(page: &Page, selector: &str, value: &str) {
    page.find_element(selector).await.unwrap_or_else(|e| panic!("{selector}: {e}")).click().await.unwrap();
    page.find_element(selector).await.unwrap().type_str(value).await.unwrap();
}

/// Clicks and waits for the page that follows to show `needle`.
async fn click(page: &Page, selector: &str, needle: &str) -> String {
    let element = match page.find_element(selector).await {
        Ok(e) => e,
        Err(e) => panic!("{selector}: {e}\n{}", text(page).await),
    };
    element.click().await.unwrap();
    wait_text(page, needle, false).await
}

async fn screenshot(page: &Page, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let params = ScreenshotParams::builder().full_page(true).build();
    page.save_screenshot(params, dir.join(format!("{name}.png"))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_subscribes_tests_follows_a_delivery_and_replays_its_dead_letter() {
    let Some(chrome) = chrome().await else { return };
    // The first request of each event is refused for good (400: a dead letter at once); any
    // later one (the replay) is accepted.
    let receiver = Receiver::start(|_, earlier| if earlier == 0 { (400, vec![]) } else { (200, vec![]) }).await;
    let (key, entry) = api_key("ops", &[Scope::Admin]);
    let (_cfg, router, base) = router(entry).await;
    let page = chrome.browser.new_page(format!("{base}/ui/")).await.unwrap();

    // Signing in: the console sends to the sign-in page, and back.
    wait_text(&page, "Sign in to the hookrelay console", false).await;
    screenshot(&page, "console-login").await;
    fill(&page, "#key", "not-a-key").await;
    click(&page, "button[type=submit]", "not one of this router").await;
    fill(&page, "#key", &key).await;
    click(&page, "button[type=submit]", "No routes yet").await;
    screenshot(&page, "console-overview-empty").await;

    // A subscription, with its secret shown once.
    goto(&page, &format!("{base}/ui/subscriptions/new")).await;
    wait_text(&page, "New subscription", false).await;
    fill(&page, "#name", "billing").await;
    fill(&page, "#url", &receiver.url("/billing")).await;
    page.find_element("input[name=events][value='order.paid']").await.unwrap().click().await.unwrap();
    fill(&page, "#description", "Invoices for paid orders").await;
    // Delivery settings: a credential among the static headers, and the delivery log keeps what
    // is sent (bodies and request headers).
    page.find_element("form.card details summary").await.unwrap().click().await.unwrap();
    fill(&page, "#headers", "Authorization: Bearer console-s3cret").await;
    page.find_element("input[name=log_payload]").await.unwrap().click().await.unwrap();
    screenshot(&page, "console-subscription-new").await;
    let html = click(&page, "form.card button[type=submit]", "Signing secret").await;
    let secret = html.split("whsec_").nth(1).map(|s| format!("whsec_{}", s.split(['<', '"']).next().unwrap())).unwrap();
    screenshot(&page, "console-subscription-secret").await;
    click(&page, "a.button", "Recent deliveries").await;

    // A test event: queued through the route, delivered (refused, here), logged.
    click(&page, "form[action$='/example'] button", "queued").await;
    let got = receiver.wait_distinct("/billing", 1, T).await;
    verify_spec(&secret, &got[0]).expect("the secret shown once signs the test event");
    let (event_id, signature) = (got[0].id(), got[0].header("webhook-signature"));
    assert_eq!(got[0].header("authorization"), "Bearer console-s3cret");
    wait_text(&page, &event_id, true).await;
    screenshot(&page, "console-subscription").await;

    goto(&page, &format!("{base}/ui/deliveries")).await;
    wait_text(&page, &event_id, true).await;
    screenshot(&page, "console-deliveries").await;
    let html = click(&page, "a[href*='/ui/deliveries/']", "Attempt 1").await;
    assert!(html.contains("HTTP 400") && html.contains("webhook-id: ") && html.contains(&event_id), "{html}");
    assert!(
        html.contains("hookrelay-route: billing") && html.contains(&format!("webhook-signature: {signature}")),
        "the request headers are shown as sent: {html}"
    );
    assert!(html.contains("authorization: &lt;masked&gt;") && !html.contains("console-s3cret"), "{html}");
    screenshot(&page, "console-delivery").await;

    // Its dead letter, replayed after a dry run.
    goto(&page, &format!("{base}/ui/dead-letters")).await;
    wait_text(&page, "1</strong> dead letter match", true).await;
    screenshot(&page, "console-dead-letters").await;
    let html = click(&page, "form.inline button.secondary", "Replay: dry run").await;
    assert!(html.contains("would be sent again") && receiver.on("/billing").len() == 1, "a dry run sends nothing");
    screenshot(&page, "console-replay-dry-run").await;
    click(&page, "form button[type=submit]:not(.link)", "Replayed 1.").await;
    receiver.wait_requests("/billing", 2, T).await;
    assert_eq!(receiver.on("/billing")[1].id(), event_id, "the replay is the same event");
    goto(&page, &format!("{base}/ui/deliveries?status=delivered")).await;
    wait_text(&page, &event_id, true).await;

    // The other main pages.
    for (path, needle, name) in [
        ("/ui/?window=1h", "billing", "console-overview"),
        ("/ui/event-types", "order.paid", "console-event-types"),
        ("/ui/event-types/order.paid", "WEBHOOK BODY", "console-event-type"),
        ("/ui/subscriptions", "billing", "console-subscriptions"),
        ("/ui/config", "Config in force", "console-config"),
        ("/ui/audit", "dead_letter.replay", "console-audit"),
        ("/ui/tenants", "Tenants", "console-tenants"),
    ] {
        goto(&page, &format!("{base}{path}")).await;
        wait_text(&page, needle, true).await;
        screenshot(&page, name).await;
    }
    drop(router);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_enters_by_portal_link_and_sees_only_its_own() {
    let Some(chrome) = chrome().await else { return };
    let receiver = Receiver::ok().await;
    let (key, entry) = api_key("ops", &[Scope::Admin]);
    let (_cfg, router, base) = router(entry).await;
    let admin = Api::new(&base, Some(&key));
    let sub = |name: &str, tenant: &str| json!({"name": name, "url": receiver.url(&format!("/{name}")), "events": ["order.paid"], "tenant": tenant, "description": format!("{tenant}'s orders")});
    admin.post("/v1/subscriptions", sub("acme-orders", "acme")).await.expect(201);
    let globex = admin.post("/v1/subscriptions", sub("globex-orders", "globex")).await.expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (id, subject) in [("e-acme", "acme"), ("e-globex", "globex")] {
        let mut ev = event("order.paid", id, json!({"n": 1}));
        ev["subject"] = json!(subject);
        admin.post("/v1/events", ev).await.expect(202);
    }
    receiver.wait_distinct("/acme-orders", 1, T).await;
    receiver.wait_distinct("/globex-orders", 1, T).await;
    let globex_delivery = hookrelay::store::delivery_id("globex-orders", "e-globex");
    let link =
        admin.post("/v1/tenants/acme/portal-link", json!({})).await.expect(201)["url"].as_str().unwrap().to_string();

    // Through the link: one button, then the portal of acme.
    let page = chrome.browser.new_page(link.clone()).await.unwrap();
    wait_text(&page, "Continue to the portal", false).await;
    screenshot(&page, "portal-enter").await;
    let html = click(&page, "button[type=submit]", "Webhooks of acme").await;
    assert!(html.contains("acme-orders") && !html.contains("globex"), "the overview shows its own only:\n{html}");
    wait_text(&page, "acme-orders", true).await;
    screenshot(&page, "portal-overview").await;

    goto(&page, &format!("{base}/portal/endpoints")).await;
    let html = wait_text(&page, "acme-orders", false).await;
    assert!(!html.contains("globex"), "{html}");
    screenshot(&page, "portal-endpoints").await;
    goto(&page, &format!("{base}/portal/deliveries")).await;
    let html = wait_text(&page, "e-acme", true).await;
    assert!(!html.contains("e-globex"), "{html}");
    screenshot(&page, "portal-deliveries").await;

    // Another tenant's, by URL: not found.
    for path in [format!("/portal/endpoints/{globex}"), format!("/portal/deliveries/{globex_delivery}")] {
        goto(&page, &format!("{base}{path}")).await;
        let html = wait_text(&page, "Not found", false).await;
        assert!(!html.contains("globex-orders") && !html.contains("e-globex"), "{path} leaks:\n{html}");
    }
    // The console is not the portal.
    goto(&page, &format!("{base}/ui/")).await;
    wait_text(&page, "Sign in to the hookrelay console", false).await;

    // "Send me a test event": one of its types, its tenant, to its endpoint.
    goto(&page, &format!("{base}/portal/endpoints")).await;
    wait_text(&page, "acme-orders", false).await;
    click(&page, "a[href^='/portal/endpoints/sub_']", "Send test event").await;
    click(&page, "form[action$='/example'] button", "queued").await;
    receiver.wait_requests("/acme-orders", 2, T).await;
    assert_eq!(receiver.on("/acme-orders")[1].json()["type"], "order.paid");
    assert_eq!(receiver.on("/globex-orders").len(), 1, "another tenant's endpoint got nothing");
    screenshot(&page, "portal-endpoint").await;

    for (path, needle, name) in [
        ("/portal/event-types", "order.paid", "portal-event-types"),
        ("/portal/dead-letters", "No dead letters", "portal-dead-letters"),
        ("/portal/verify", "Verifying signatures", "portal-verify"),
    ] {
        goto(&page, &format!("{base}{path}")).await;
        wait_text(&page, needle, false).await;
        screenshot(&page, name).await;
    }

    // The link worked once.
    let again = chrome.browser.new_page(link).await.unwrap();
    wait_text(&again, "Continue to the portal", false).await;
    click(&again, "button[type=submit]", "This link cannot be used").await;
    drop(router);
}
