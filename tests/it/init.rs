//! `hookrelay init`: a config repository that validates as it is written, and that a router runs.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_makes_a_repository_that_validates_and_runs() {
    let parent = tempfile::tempdir().unwrap();
    let repo = parent.path().join("config");
    let out = Command::new(bin()).args(["init"]).arg(&repo).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in [
        "hookrelay.toml",
        "routes/orders.toml",
        "schemas/order.created/v1.json",
        "plugins/hide-email.rhai",
        "README.md",
        ".gitignore",
        ".github/workflows/hookrelay.yml",
    ] {
        assert!(repo.join(f).is_file(), "{f}");
    }
    let ci = std::fs::read_to_string(repo.join(".github/workflows/hookrelay.yml")).unwrap();
    assert!(ci.contains("hookrelay validate --allow-missing-secrets --config ."), "{ci}");

    // What CI runs passes, without the secret.
    let validate = Command::new(bin())
        .args(["validate", "--allow-missing-secrets", "--config"])
        .arg(&repo)
        .env_remove("ORDERS_WEBHOOK_SECRET")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&validate.stdout);
    assert!(validate.status.success(), "{text}");
    assert!(text.contains("1 route(s), 1 event type(s), 0 warning(s)"), "{text}");

    // The route's plugin does what the README says.
    let event = parent.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"specversion":"1.0","id":"o-1","source":"shop","type":"order.created","data":{"order_id":"o-1","total":10,"customer":{"name":"Ana","email":"ana@example.com"}}}"#,
    )
    .unwrap();
    let dry = Command::new(bin())
        .args(["route", "test", "orders", "--event"])
        .arg(&event)
        .arg("--config")
        .arg(&repo)
        .env("ORDERS_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{text}{}", String::from_utf8_lossy(&dry.stderr));
    assert!(text.contains("POST https://example.com/hooks/orders") && text.contains("\"name\":\"Ana\""), "{text}");
    assert!(!text.contains("ana@example.com"), "{text}");

    // Not twice into the same place.
    let again = Command::new(bin()).args(["init"]).arg(&repo).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));

    // A router runs on it, its state in the repository's git-ignored data/.
    let log = parent.path().join("router.log");
    let mut router = Command::new(bin())
        .args(["run", "--config"])
        .arg(&repo)
        .env("ORDERS_WEBHOOK_SECRET", SECRET)
        .env("HOOKRELAY_API__LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let text = eventually(
        "the router to consume (its log follows)",
        Duration::from_secs(30),
        async || read(),
        |t| t.contains("consuming routes=1"),
    )
    .await;
    let _ = router.kill();
    let _ = router.wait();
    assert!(text.contains("route=orders"), "{text}");
    assert!(repo.join("data/hookrelay-queue.db").exists() && repo.join("data/hookrelay.db").exists());
}

#[test]
fn plan_prints_what_a_reload_would_change_and_exits_2_when_it_would_be_refused() {
    let parent = tempfile::tempdir().unwrap();
    let (old, new) = (parent.path().join("old"), parent.path().join("new"));
    for dir in [&old, &new] {
        assert!(Command::new(bin()).args(["init"]).arg(dir).output().unwrap().status.success());
    }
    let plan = || {
        let out =
            Command::new(bin()).args(["plan", "--config"]).arg(&new).arg("--against-dir").arg(&old).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = plan();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no route changes"), "{text}");

    // A route added, one changed (a pattern bound, another dropped, a new URL), one removed.
    let orders = std::fs::read_to_string(new.join("routes/orders.toml")).unwrap();
    std::fs::write(
        new.join("routes/orders.toml"),
        orders
            .replace("events = [\"order.created\"]", "events = [\"order.paid\"]")
            .replace("example.com", "example.org"),
    )
    .unwrap();
    std::fs::write(new.join("routes/audit.toml"), orders.replace("ordered = true", "ordered = false")).unwrap();
    std::fs::create_dir_all(new.join("schemas/order.paid")).unwrap();
    std::fs::write(new.join("schemas/order.paid/v1.json"), r#"{"type":"object"}"#).unwrap();
    std::fs::write(old.join("routes/gone.toml"), orders.replace("order.created", "order.*")).unwrap();
    let (code, text) = plan();
    assert_eq!(code, Some(0), "{text}");
    for says in [
        "+ route audit: queue hookrelay.route.audit bound to order.created",
        "- route gone: stops after its in-flight deliveries; unbinds order.*",
        "~ route orders: binds order.paid; unbinds order.created; url https://example.com/hooks/orders -> https://example.org/hooks/orders",
    ] {
        assert!(text.contains(says), "{says:?} in:\n{text}");
    }

    // `ordered` cannot change in place: the router would refuse the reload.
    std::fs::write(new.join("routes/orders.toml"), orders.replace("ordered = true", "ordered = false")).unwrap();
    let (code, text) = plan();
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("refused: routes/orders.toml: route `orders` changes `ordered` from true to false"),
        "{text}"
    );
}
