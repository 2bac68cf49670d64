//! The README's quick start as a newcomer runs it, and the embedded broker under a SIGKILL.
//!
//! The quick-start test reads the commands from README.md's "Quick start" section (so the README
//! cannot drift from what works) and runs them on a temporary copy of the repository's example
//! config, with the working directory in that copy. `cargo run --release --` becomes the binary
//! under test. So that it can run beside other tests, it changes three things, and only these:
//! the API listens on a free port (`HOOKRELAY_API__LISTEN`, which `run` and `publish` both
//! read, so `publish` still finds the router by itself), the receiver gets `--port` with another
//! free port, and the example routes in the copy deliver to that port instead of 9000. The `curl`
//! commands are sent to the same paths with the same bodies.

use crate::common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const REPO: &str = env!("CARGO_MANIFEST_DIR");

// ---------------------------------------------------------------------------------------------
// Reading the README's commands.

/// One command line of the README: `NAME=VALUE …` assignments, then the words.
#[derive(Debug, Clone)]
struct ShellCommand {
    env: Vec<(String, String)>,
    words: Vec<String>,
}

impl ShellCommand {
    /// The arguments after `cargo run --release --`, when this is a hookrelay command.
    fn hookrelay_args(&self) -> Option<&[String]> {
        self.words.strip_prefix(&["cargo".to_string(), "run".into(), "--release".into(), "--".into()][..])
    }

    /// For `curl … URL [-X METHOD] [-d BODY]`: (method, path after the host, body).
    fn curl(&self) -> Option<(String, String, Option<String>)> {
        if self.words.first().map(String::as_str) != Some("curl") {
            return None;
        }
        let (mut method, mut path, mut body) = (None, None, None);
        let mut words = self.words[1..].iter();
        while let Some(w) = words.next() {
            match w.as_str() {
                "-X" => method = words.next().cloned(),
                "-d" | "--data" => body = words.next().cloned(),
                "-H" => {
                    words.next();
                }
                url if url.starts_with("http://127.0.0.1:8080/") => {
                    path = Some(url["http://127.0.0.1:8080".len()..].into())
                }
                _ => {}
            }
        }
        let method = method.unwrap_or_else(|| if body.is_some() { "POST".into() } else { "GET".into() });
        Some((method, path?, body))
    }
}

/// Splits one shell line into words: single and double quotes, backslash escapes, and a `#`
/// comment at the start of a word.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            '#' if word.is_none() => break,
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Every command in the `sh` code blocks of the README's "Quick start" section, in order.
fn quick_start_commands() -> Vec<ShellCommand> {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let start = readme.find("\n## Quick start").expect("README.md has a `## Quick start` section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |i| i + 1)];
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let mut words = shell_words(&pending);
        pending.clear();
        let mut env = Vec::new();
        while let Some((k, v)) = words.first().and_then(|w| w.split_once('=')) {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                break;
            }
            env.push((k.to_string(), v.to_string()));
            words.remove(0);
        }
        if !words.is_empty() {
            commands.push(ShellCommand { env, words });
        }
    }
    commands
}

/// The one quick-start command `pick` chooses, or a failure that says which is missing.
fn find<'a>(commands: &'a [ShellCommand], what: &str, pick: impl Fn(&ShellCommand) -> bool) -> &'a ShellCommand {
    let found: Vec<&ShellCommand> = commands.iter().filter(|c| pick(c)).collect();
    assert!(
        !found.is_empty(),
        "README.md's quick start has no {what} command any more: update the README or tests/it/quickstart.rs \
         (commands found: {commands:#?})"
    );
    found[0]
}

fn hookrelay_command<'a>(
    commands: &'a [ShellCommand],
    what: &str,
    args: &[&str],
    without: &[&str],
) -> &'a ShellCommand {
    find(commands, what, |c| {
        c.hookrelay_args().is_some_and(|a| {
            args.iter().all(|x| a.iter().any(|y| y == x)) && without.iter().all(|x| !a.iter().any(|y| y == x))
        })
    })
}

#[test]
fn the_shell_splitter_reads_the_readme_as_a_shell_does() {
    assert_eq!(
        shell_words(r#"A=1 cargo run -- publish --data '{"a": "b c"}' "x\"y" z\ w # a comment"#),
        ["A=1", "cargo", "run", "--", "publish", "--data", r#"{"a": "b c"}"#, "x\"y", "z w"]
    );
    let cmds = quick_start_commands();
    let run = hookrelay_command(&cmds, "`run`", &["run"], &[]);
    assert_eq!(run.env.first().map(|(k, _)| k.as_str()), Some("EXAMPLE_WEBHOOK_SECRET"), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// Running them.

/// A process of the walkthrough, its output in files.
struct Proc {
    child: Child,
    what: String,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn spawn(what: &str, cwd: &Path, env: &[(String, String)], args: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let child = Command::new(bin())
            .args(args)
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .env_remove("HOOKRELAY_CONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Self { child, what: what.into(), out, err, _dir: dir }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until its stderr says `needle`. (A failure prints its output: see `Drop`.)
    async fn wait_stderr(&self, needle: &str) {
        let what = format!("{} to say {needle:?} (its output follows)", self.what);
        eventually(what, T, async || self.stderr().contains(needle), |said| *said).await;
    }

    /// SIGTERM, then the exit status.
    async fn term(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let what = format!("{} to exit after SIGTERM (its output follows)", self.what);
        eventually(what, T, async || self.child.try_wait().unwrap(), Option::is_some).await.unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
                self.what,
                self.stdout(),
                self.what,
                self.stderr()
            );
        }
    }
}

/// A port that was free a moment ago.
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

// ---------------------------------------------------------------------------------------------
// The embedded broker under a SIGKILL, through the ingest API.

/// POSTs one CloudEvent to `/v1/events`; the status, or why there was none.
async fn post_event(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    base: &str,
    event: &Value,
) -> Result<(u16, Value), String> {
    use http_body_util::BodyExt;
    let req = http::Request::post(format!("{base}/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(http_body_util::Full::new(bytes::Bytes::from(serde_json::to_vec(event).unwrap())))
        .unwrap();
    let resp = tokio::time::timeout(T, client.request(req)).await.map_err(|_| "timed out".to_string())?;
    let resp = resp.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Waits until every id in `ids` has arrived on `path`.
async fn wait_all(rx: &Receiver, path: &str, ids: &[String]) -> Vec<Received> {
    let what = format!("all {} accepted events", ids.len());
    rx.wait_until(path, what, Duration::from_secs(120), |got| {
        let seen: HashSet<String> = got.iter().map(Received::id).collect();
        ids.iter().all(|id| seen.contains(id))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_ingest_burst_on_the_embedded_broker_loses_no_accepted_event() {
    let rx = Receiver::start_slow(Duration::from_millis(1), |_, _| (200, vec![])).await;
    let slow = Receiver::start_slow(Duration::from_millis(20), |_, _| (200, vec![])).await;
    let queue = tempfile::tempdir().unwrap();
    let cfg = ConfigDir::with(MainConfig::new().version(1).embedded(queue.path().join("queue.db")).loopback_targets());
    cfg.route(&RouteConfig::new("erp").events(["order.paid"]).url(rx.url("/erp")).ordered(true));
    cfg.route(&RouteConfig::new("bulk").events(["order.paid"]).url(slow.url("/bulk")).concurrency(4));
    let mut router = RouterProc::ready(&cfg).await;
    assert!(router.log_text().contains("broker=\"embedded\""), "{}", router.log_text());
    let base = router.api().await;

    // One POST at a time, so the order of the 202s is the publish order; until the router dies.
    let n = 20_000;
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let poster = {
        let (accepted, base) = (accepted.clone(), base.clone());
        tokio::spawn(async move {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
            for i in 0..n {
                let id = format!("burst-{i}");
                match post_event(&client, &base, &event("order.paid", &id, json!({"n": i}))).await {
                    Ok((202, answer)) => {
                        assert_eq!(answer, json!({"id": id, "routed": true}));
                        accepted.lock().unwrap().push(id);
                    }
                    Ok((status, answer)) => panic!("POST /v1/events {id}: {status} {answer}"),
                    // The router is gone: this event may or may not have been committed.
                    Err(_) => return Some(id),
                }
            }
            None
        })
    };
    // Kill while events are still coming in and both routes are delivering.
    let progress = async || (accepted.lock().unwrap().len(), rx.on("/erp").len(), slow.on("/bulk").len());
    eventually("1000 accepted, 200 on /erp and 100 on /bulk before the kill", T, progress, |(a, erp, bulk)| {
        *a >= 1000 && *erp >= 200 && *bulk >= 100
    })
    .await;
    router.kill();
    let in_flight = poster.await.unwrap();
    let accepted = accepted.lock().unwrap().clone();
    assert!(in_flight.is_some() && accepted.len() < n, "the kill came mid-burst: {} accepted", accepted.len());
    let at_kill = (rx.on("/erp").len(), slow.on("/bulk").len());

    let _restarted = RouterProc::ready(&cfg).await;
    let erp = wait_all(&rx, "/erp", &accepted).await;
    let bulk = wait_all(&slow, "/bulk", &accepted).await;
    let accepted_set: HashSet<&String> = accepted.iter().collect();
    let known = |id: &String| accepted_set.contains(id) || Some(id) == in_flight.as_ref();
    for got in [&erp, &bulk] {
        let unknown: Vec<String> = first_arrivals(got).into_iter().filter(|id| !known(id)).collect();
        assert!(unknown.is_empty(), "only accepted events (and the one in flight at the kill) arrive: {unknown:?}");
    }
    let order: Vec<String> = first_arrivals(&erp).into_iter().filter(|id| accepted_set.contains(id)).collect();
    assert_eq!(order, accepted, "first arrivals on the ordered route keep the order of acceptance");
    eprintln!(
        "{} events accepted before the kill ({} delivered on /erp, {} on /bulk at the kill); duplicates after the \
         restart: ordered {}, unordered {}",
        accepted.len(),
        at_kill.0,
        at_kill.1,
        duplicates(&erp),
        duplicates(&bulk)
    );
}

// ---------------------------------------------------------------------------------------------
// The deployment example's config.

#[test]
fn the_kubernetes_example_config_validates_and_every_file_reaches_the_pod() {
    let base = Path::new(REPO).join("examples/deploy/kubernetes/base");
    let config = base.join("config");
    let out = Command::new(bin())
        .args(["validate", "--allow-missing-secrets", "--config"])
        .arg(&config)
        .env("HOOKRELAY_BROKER__URL", "amqp://hookrelay:secret@hookrelay-rabbitmq.hookrelay.svc:5672/%2f")
        .env("HOOKRELAY_STORE__URL", "postgresql://hookrelay:secret@hookrelay-pg-rw.hookrelay:5432/hookrelay")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("warning:"), "{text}");
    // kustomization.yaml makes the ConfigMap of config/, one key per file, and sidecar.yaml maps
    // each key back to its path: a file missing from either would be missing in the pod.
    let kustomization = std::fs::read_to_string(base.join("kustomization.yaml")).unwrap();
    let sidecar = std::fs::read_to_string(base.join("sidecar.yaml")).unwrap();
    let mut files = Vec::new();
    let mut dirs = vec![config.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                files.push(e.path().strip_prefix(&config).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for rel in &files {
        let key = rel.replace('/', ".");
        assert!(
            kustomization.contains(&format!("- {key}=config/{rel}\n")),
            "kustomization.yaml lacks {key}=config/{rel}"
        );
        assert!(
            sidecar.contains(&format!("{{ key: {key}, path: {rel} }}")),
            "sidecar.yaml lacks {{ key: {key}, path: {rel} }}"
        );
    }
}
