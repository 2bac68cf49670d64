//! Signatures as receivers check them: the spec-derived verifier in `common`, and the published
//! `standardwebhooks` Python library, unmodified.

use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_standardwebhooks_library_accepts_our_webhooks() {
    let probe = std::process::Command::new("python3").args(["-c", "import standardwebhooks"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the standardwebhooks package (pip install standardwebhooks)"
        );
        eprintln!("SKIPPED: python3 with the standardwebhooks package is not installed (pip install standardwebhooks)");
        return;
    }
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.route(&RouteConfig::new("std").events(["order.paid"]).url(rx.url("/std")));
    cfg.route(&RouteConfig::new("ce").events(["order.paid"]).url(rx.url("/ce")).format(BodyFormat::Cloudevents));
    let _router = RouterProc::ready(&cfg).await;
    vh.publish(&[event("order.paid", "py-1", serde_json::json!({"n": 1, "note": "ünïcödé ✓"}))]).await;
    let mut got = rx.wait_distinct("/std", 1, Duration::from_secs(30)).await;
    got.extend(rx.wait_distinct("/ce", 1, Duration::from_secs(30)).await);
    let dir = tempfile::tempdir().unwrap();
    for (i, r) in got.iter().enumerate() {
        verify_spec(SECRET, r).unwrap();
        let body = dir.path().join(format!("body{i}"));
        std::fs::write(&body, &r.body).unwrap();
        let headers: serde_json::Map<String, serde_json::Value> =
            r.headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().into())).collect();
        let script = "import json,sys\nfrom standardwebhooks.webhooks import Webhook\n\
                      body=open(sys.argv[2],'rb').read()\nheaders=json.loads(sys.argv[3])\n\
                      print(json.dumps(Webhook(sys.argv[1]).verify(body, headers)))";
        let out = std::process::Command::new("python3")
            .args(["-c", script, SECRET, body.to_str().unwrap(), &serde_json::Value::Object(headers).to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "standardwebhooks refused {}: {}", r.path, String::from_utf8_lossy(&out.stderr));
        let verified: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(verified["data"]["note"], "ünïcödé ✓");
    }
    // A tampered body is refused by the same library: the check above can fail.
    let mut tampered = got[0].clone();
    tampered.body = bytes::Bytes::from_static(b"{}");
    assert!(verify_spec(SECRET, &tampered).is_err());
}
