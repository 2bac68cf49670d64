//! The README's quick start run as written: the router on the embedded broker, `listen`
//! receivers, `publish`, a retry and a dead letter, the dead letters listed and replayed with
//! `curl`, and the router's exit on SIGTERM.

use super::readme::{ShellCommand, find, hookrelay_command, quick_start_commands};
use super::{Proc, REPO, T};
use crate::common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

/// One request as `hookrelay listen` printed it.
#[derive(Debug)]
struct Printed {
    path: String,
    verified: bool,
    route: String,
    id: String,
    attempt: u32,
    status: u16,
    body: Value,
}

fn printed(stdout: &str) -> Vec<Printed> {
    let lines: Vec<&str> = stdout.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("POST ") else { continue };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let field = |k: &str| words.iter().find_map(|w| w.strip_prefix(k)).unwrap_or("").to_string();
        out.push(Printed {
            path: words[0].to_string(),
            verified: words.get(1) == Some(&"verified"),
            route: field("route="),
            id: field("id="),
            attempt: field("attempt=").parse().unwrap_or(0),
            status: words.last().and_then(|s| s.parse().ok()).unwrap_or(0),
            body: lines.get(i + 1).and_then(|b| serde_json::from_str(b.trim()).ok()).unwrap_or(Value::Null),
        });
    }
    out
}

/// Waits until the receiver printed a request for `id` on each route that `pick` accepts.
async fn wait_printed(listen: &Proc, id: &str, pick: impl Fn(&Printed) -> bool) -> Vec<Printed> {
    let what = format!("the receiver to print {id} on both routes (its output follows); those it printed");
    let mine =
        async || -> Vec<Printed> { printed(&listen.stdout()).into_iter().filter(|p| p.id == id && pick(p)).collect() };
    eventually(what, T, mine, |got| {
        let routes: HashSet<&str> = got.iter().map(|p| p.route.as_str()).collect();
        routes.contains("franchise-erp") && routes.contains("analytics")
    })
    .await
}

/// Copies the repository's example config (hookrelay.toml, routes/, schemas/, plugins/).
fn copy_example_config(to: &Path) {
    fn copy(from: &Path, to: &Path) {
        if from.is_dir() {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap().flatten() {
                copy(&e.path(), &to.join(e.file_name()));
            }
        } else {
            std::fs::copy(from, to).unwrap();
        }
    }
    for part in ["hookrelay.toml", "routes", "schemas", "plugins"] {
        copy(&Path::new(REPO).join(part), &to.join(part));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_works_as_written() {
    let cmds = quick_start_commands();
    let run = hookrelay_command(&cmds, "`run`", &["run"], &[]);
    let listen = hookrelay_command(&cmds, "plain `listen`", &["listen"], &["--status"]);
    let listen_503 = hookrelay_command(&cmds, "`listen --status 503`", &["listen", "--status", "503"], &[]);
    let listen_400 = hookrelay_command(&cmds, "`listen --status 400`", &["listen", "--status", "400"], &[]);
    let publish = hookrelay_command(&cmds, "`publish`", &["publish"], &[]);
    let list_dead = find(&cmds, "`curl … /v1/dead-letters`", |c| {
        c.curl().is_some_and(|(m, p, _)| m == "GET" && p.starts_with("/v1/dead-letters"))
    });
    let replay = find(&cmds, "`curl … /v1/dead-letters/replay`", |c| {
        c.curl().is_some_and(|(m, p, _)| m == "POST" && p == "/v1/dead-letters/replay")
    });

    // The example config, as cloned, in a directory of its own; the routes deliver to a free port.
    let dir = tempfile::tempdir().unwrap();
    copy_example_config(dir.path());
    let receiver_port = free_port().to_string();
    for route in std::fs::read_dir(dir.path().join("routes")).unwrap().flatten() {
        let text = std::fs::read_to_string(route.path()).unwrap();
        assert!(
            text.contains("http://127.0.0.1:9000/"),
            "{}: the README says routes deliver to :9000",
            route.path().display()
        );
        std::fs::write(route.path(), text.replace("127.0.0.1:9000", &format!("127.0.0.1:{receiver_port}"))).unwrap();
    }
    let api_port = free_port();
    let api_env = ("HOOKRELAY_API__LISTEN".to_string(), format!("127.0.0.1:{api_port}"));
    let api = Api::new(&format!("http://127.0.0.1:{api_port}"), None);
    let with_api = |c: &ShellCommand| [c.env.clone(), vec![api_env.clone()]].concat();
    let listen_args = |c: &ShellCommand| {
        let mut args = c.hookrelay_args().unwrap().to_vec();
        args.extend(["--port".to_string(), receiver_port.clone()]);
        args
    };

    // Command 1: the router, on the embedded broker.
    let mut router = Proc::spawn("hookrelay run", dir.path(), &with_api(run), run.hookrelay_args().unwrap());
    router.wait_stderr("broker=\"embedded\"").await;
    assert!(router.stderr().contains("consuming routes=2"), "{}", router.stderr());
    // One `route` line per route, naming where its webhooks go, as the README says.
    for (route, path) in [("franchise-erp", "/erp/orders"), ("analytics", "/analytics")] {
        let target = format!("target=http://127.0.0.1:{receiver_port}{path}");
        let stderr = router.stderr();
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(" route ") && l.contains(&format!("route={route}")) && l.contains(&target)),
            "no start-up line for route {route} with {target}:\n{stderr}"
        );
    }
    // The state files are in data/ beside hookrelay.toml, as the README says, and none is at the
    // root, where the working directory is.
    for f in ["hookrelay-queue.db", "hookrelay.db"] {
        assert!(dir.path().join("data").join(f).exists(), "{f} is in data/");
    }
    let at_root: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".db"))
        .collect();
    assert!(at_root.is_empty(), "state files in the working directory: {at_root:?}");
    assert!(
        router.stderr().contains(&format!("data directory {}", dir.path().join("data").display())),
        "the start-up log says where: {}",
        router.stderr()
    );

    // The receiver, then an event: verified on both routes.
    let publish_one = || async {
        let out = Command::new(bin())
            .args(publish.hookrelay_args().unwrap())
            .current_dir(dir.path())
            .envs(with_api(publish))
            .env_remove("HOOKRELAY_CONFIG")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "publish failed: {text}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let rx = Proc::spawn("hookrelay listen", dir.path(), &listen.env, &listen_args(listen));
    rx.wait_stderr("listening on").await;
    let first = publish_one().await;
    assert!(!first.is_empty() && !first.contains(char::is_whitespace), "publish prints the event id: {first:?}");
    let got = wait_printed(&rx, &first, |p| p.status == 200).await;
    for p in &got {
        assert!(p.verified && p.attempt == 1, "{p:?}");
    }
    let erp = got.iter().find(|p| p.route == "franchise-erp").unwrap();
    assert_eq!(erp.path, "/erp/orders");
    assert_eq!(erp.body["data"]["customer"]["name"], "Ana Souza", "{:?}", erp.body);
    let analytics = got.iter().find(|p| p.route == "analytics").unwrap();
    assert_eq!(analytics.path, "/analytics");
    assert_eq!(
        analytics.body["data"]["customer"],
        json!({"name": "A.S."}),
        "initials, no e-mail: {:?}",
        analytics.body
    );
    assert_eq!(analytics.body["data"]["size"], "medium");

    // Retries: 503 to the first two requests, then 200.
    drop(rx);
    let rx = Proc::spawn("hookrelay listen --status 503", dir.path(), &listen_503.env, &listen_args(listen_503));
    rx.wait_stderr("listening on").await;
    let second = publish_one().await;
    let got = wait_printed(&rx, &second, |p| p.status == 200).await;
    assert!(got.iter().all(|p| p.verified && p.attempt == 2), "{got:?}");
    let failed = printed(&rx.stdout()).into_iter().filter(|p| p.id == second && p.status == 503).count();
    assert_eq!(failed, 2, "one 503 per route, then the retry:\n{}", rx.stdout());

    // A dead letter: 400 is permanent.
    drop(rx);
    let rx = Proc::spawn("hookrelay listen --status 400", dir.path(), &listen_400.env, &listen_args(listen_400));
    rx.wait_stderr("listening on").await;
    let third = publish_one().await;
    wait_printed(&rx, &third, |p| p.status == 400 && p.attempt == 1).await;
    let (_, path, _) = list_dead.curl().unwrap();
    let mine = |page: &Answer| -> Vec<Value> {
        let items = page.json["items"].as_array().cloned().unwrap_or_default();
        items.into_iter().filter(|d| d["event_id"] == third.as_str()).collect()
    };
    let listed = async || api.get(&path).await;
    let page = eventually(format!("two dead letters for {third}"), T, listed, |page| mine(page).len() == 2).await;
    page.expect(200);
    let dead = mine(&page);
    for d in &dead {
        assert_eq!((d["reason"].as_str(), d["last_status"].as_u64()), (Some("rejected"), Some(400)), "{d}");
    }

    // Replay, with the receiver back to 200.
    drop(rx);
    let rx = Proc::spawn("hookrelay listen", dir.path(), &listen.env, &listen_args(listen));
    rx.wait_stderr("listening on").await;
    let (_, path, body) = replay.curl().unwrap();
    let body: Value = serde_json::from_str(&body.expect("the replay command has a body")).unwrap();
    let answer = api.post(&path, body).await;
    let replayed: HashSet<String> =
        answer.expect(200)["replayed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let dead_ids: HashSet<String> = dead.iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    assert!(dead_ids.is_subset(&replayed), "both dead letters replayed: {}", answer.text);
    let got = wait_printed(&rx, &third, |p| p.status == 200).await;
    assert!(got.iter().all(|p| p.verified), "{got:?}");

    let status = router.term().await;
    assert!(status.success(), "the router exits 0 on SIGTERM: {status:?}\n{}", router.stderr());
}
