//! `hookrelay publish` as a user testing a route runs it: events arrive in the order published,
//! whether they go through the running router's API or into the queue file; with no router
//! running the API's checks still apply, with the API's message; and the output is the ids.

use crate::common::*;
use std::process::{Command, Output};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// An embedded-broker config whose API listens on a fixed free port (so that `publish` finds the
/// running router), with an ordered route to `rx`.
fn ordered_config(rx: &Receiver) -> (ConfigDir, String) {
    let port = free_port();
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets().api_listen(format!("127.0.0.1:{port}")));
    cfg.route(&RouteConfig::new("erp").events(["order.*"]).url(rx.url("/erp")).ordered(true));
    (cfg, format!("http://127.0.0.1:{port}"))
}

fn publish(cfg: &ConfigDir, args: &[&str]) -> Output {
    Command::new(bin())
        .args(["publish", "--type", "order.paid", "--config"])
        .arg(cfg.path())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_route_receives_publish_count_in_publish_order() {
    const N: usize = 40;
    let rx = Receiver::ok().await;
    let (cfg, _) = ordered_config(&rx);
    // The router declares the route's queue in the file, then stops: `publish` writes the file.
    let mut router = RouterProc::ready(&cfg).await;
    assert!(router.term(T).await.success());
    let offline = publish(&cfg, &["--data", r#"{"n": 1}"#, "--id", "off", "--count", &N.to_string()]);
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert_eq!(stdout(&offline).lines().collect::<Vec<_>>(), ids("off", N), "only the ids, in order");
    assert_eq!(stderr(&offline), "", "no log lines");

    // With the router running, `publish` goes through its API.
    let _router = RouterProc::ready(&cfg).await;
    let online = publish(&cfg, &["--data", r#"{"n": 2}"#, "--id", "on", "--count", &N.to_string()]);
    assert!(online.status.success(), "{}", stderr(&online));
    assert_eq!(stdout(&online).lines().collect::<Vec<_>>(), ids("on", N));
    assert_eq!(stderr(&online), "");

    let got = rx.wait_distinct("/erp", 2 * N, T).await;
    assert_eq!(first_arrivals(&got), [ids("off", N), ids("on", N)].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_router_publish_refuses_what_the_api_refuses_with_its_message() {
    let rx = Receiver::ok().await;
    let (cfg, base) = ordered_config(&rx);
    let mut router = RouterProc::ready(&cfg).await;
    let api = Api::new(&base, None);
    // A violation at a path, one at the root (a required property), and an unknown type.
    let cases = [("order.paid", r#"{"n": "five"}"#), ("order.paid", r#"{"total": 1}"#), ("order.unknown", "{}")];
    let mut messages = Vec::new();
    for (ty, data) in cases {
        let ev = event(ty, "bad-1", serde_json::from_str(data).unwrap());
        let answer = api.post("/v1/events", ev).await;
        answer.expect(422);
        let message = answer.json["error"]["message"].as_str().unwrap().to_string();
        let through_api = Command::new(bin())
            .args(["publish", "--type", ty, "--data", data, "--config"])
            .arg(cfg.path())
            .output()
            .unwrap();
        assert_eq!(through_api.status.code(), Some(1));
        assert!(stderr(&through_api).contains(&message), "{message:?} in {}", stderr(&through_api));
        messages.push((ty, data, message));
    }
    assert!(router.term(T).await.success());
    for (ty, data, message) in messages {
        let out = Command::new(bin())
            .args(["publish", "--type", ty, "--data", data, "--config"])
            .arg(cfg.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(stdout(&out), "", "nothing published");
        assert_eq!(stderr(&out).trim(), format!("error: {message}"), "the API's message for {ty} {data}");
    }
    // Nothing reached the queue: a router started now delivers nothing.
    let _router = RouterProc::ready(&cfg).await;
    let ok = publish(&cfg, &["--data", r#"{"n": 1}"#, "--id", "good"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let got = rx.wait_distinct("/erp", 1, T).await;
    assert_eq!(first_arrivals(&got), ["good"]);
}
