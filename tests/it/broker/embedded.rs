//! What only the embedded broker has: a real child process killed with SIGKILL in the middle of
//! a burst (nothing confirmed is lost, the file lock names its owner), choosing it in
//! `hookrelay.toml`, `publish` to its file, and the router end to end on it.

use super::{T, declare, ids, publish, queue, quiet, take, wait_depth};
use crate::common::*;
use hookrelay::broker::amqp::AmqpBroker;
use hookrelay::broker::embedded::EmbeddedBroker;
use hookrelay::broker::{Broker, BrokerError, DEAD_LETTERS, Destination, Headers};
use hookrelay::config::files::EmbeddedSync;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// The embedded broker in a real process, killed with SIGKILL in the middle of a burst.

const BURST_FILE: &str = "HOOKRELAY_TEST_BURST_FILE";

/// Publishes from four tasks as fast as it can while a consumer acks, printing each id once its
/// publish or ack is confirmed, until killed.
#[test]
#[ignore = "the child process of embedded_sigkill_mid_burst_loses_nothing, which starts it and kills it"]
fn embedded_burst_child() {
    let path = PathBuf::from(std::env::var(BURST_FILE).expect("started by embedded_sigkill_mid_burst_loses_nothing"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let b: Arc<dyn Broker> = Arc::new(EmbeddedBroker::open(&path, EmbeddedSync::Normal).await.unwrap());
        b.declare_base().await.unwrap();
        declare(b.as_ref(), "burst", &["burst.*"], true, 20).await;
        println!("ready");
        let mut tasks = tokio::task::JoinSet::new();
        let c = b.clone();
        tasks.spawn(async move {
            let mut c = c.consume(&queue("burst"), 32).await.unwrap();
            while let Some(Ok(m)) = c.next().await {
                let id = m.message_id.clone().unwrap();
                println!("received {id}");
                m.ack().await.unwrap();
                println!("acked {id}");
            }
        });
        for p in 0..4 {
            let b = b.clone();
            tasks.spawn(async move {
                for i in 0.. {
                    publish(b.as_ref(), "burst.event", &format!("p{p}-{i}")).await;
                    println!("published p{p}-{i}");
                }
            });
        }
        tasks.join_next().await;
    });
}

#[test]
fn embedded_sigkill_mid_burst_loses_nothing() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["broker::embedded::embedded_burst_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(BURST_FILE, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut published, mut received, mut acked) =
        (std::collections::HashSet::new(), std::collections::HashSet::new(), std::collections::HashSet::new());
    let mut killed = false;
    for line in lines {
        let line = line.unwrap();
        if line == "ready" {
            // While the child owns the file, nobody else may open it, and the refusal says who has it.
            let refused = rt.block_on(EmbeddedBroker::open(&path, EmbeddedSync::Normal)).unwrap_err().to_string();
            assert!(refused.contains("in use by another hookrelay"), "{refused}");
            assert!(refused.contains(&format!("process {}", child.id())), "names the owner: {refused}");
            assert!(refused.contains(&path.display().to_string()), "names the file: {refused}");
            assert!(refused.contains("[embedded] path"), "says what to do: {refused}");
            continue;
        }
        let Some((what, id)) = line.split_once(' ') else { continue };
        match what {
            "published" => published.insert(id.to_string()),
            "received" => received.insert(id.to_string()),
            "acked" => acked.insert(id.to_string()),
            _ => continue,
        };
        if !killed && published.len() >= 3000 && acked.len() >= 100 {
            // Mid-burst: the child is publishing and acking as this lands.
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "the child ended before the burst was under way: {status}");
    rt.block_on(async {
        let b = EmbeddedBroker::open(&path, EmbeddedSync::Normal).await.unwrap();
        let n = b.queue_depth(&queue("burst")).await.unwrap() as usize;
        let mut c = b.consume(&queue("burst"), 500).await.unwrap();
        let mut left = Vec::new();
        while left.len() < n {
            let m = take(&mut c, 1).await.pop().unwrap();
            m.ack().await.unwrap();
            left.push(m);
        }
        quiet(&mut c, "the depth counted everything").await;
        let left_ids: std::collections::HashSet<String> = ids(&left).into_iter().collect();
        assert_eq!(left_ids.len(), n, "nothing twice");
        // A message the child received may have been acked with the kill landing before its
        // "acked" line: received and gone is not lost. Confirmed, never received, and gone is.
        let lost: Vec<&String> =
            published.iter().filter(|id| !received.contains(*id) && !left_ids.contains(*id)).collect();
        assert!(lost.is_empty(), "{} confirmed publishes lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
        // The child acks one message at a time: at most one ack can have committed unprinted.
        let unprinted: Vec<&String> =
            received.iter().filter(|id| !acked.contains(*id) && !left_ids.contains(*id)).collect();
        assert!(unprinted.len() <= 1, "received, never confirmed acked, and gone: {unprinted:?}");
        let back: Vec<&String> = acked.iter().filter(|id| left_ids.contains(*id)).collect();
        assert!(back.is_empty(), "confirmed acks undone: {back:?}");
        let mut last: [Option<u64>; 4] = [None; 4];
        for m in &left {
            let id = m.message_id.clone().unwrap();
            let (p, i) = id[1..].split_once('-').unwrap();
            let (p, i): (usize, u64) = (p.parse().unwrap(), i.parse().unwrap());
            assert!(last[p].is_none_or(|l| l < i), "publisher {p}: {i} after {:?}: order lost", last[p]);
            last[p] = Some(i);
            if received.contains(&id) {
                assert!(m.redelivered, "{id} was delivered before the kill, so it is redelivered");
            }
        }
        eprintln!(
            "killed after {} confirmed publishes and {} acks; {} messages waited in the file",
            published.len(),
            acked.len(),
            n
        );
        c.close().await;
        b.close().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Choosing the broker in hookrelay.toml.

#[test]
fn no_broker_section_means_the_embedded_broker() {
    use hookrelay::config::{BrokerKind, files::EmbeddedFile};
    let kind = |main: &str| {
        let cfg = ConfigDir::with_main_text(main);
        let s = hookrelay::config::load(cfg.path()).unwrap();
        // A relative queue file is placed in the data directory, by default data/ in the config.
        let kind = match s.broker_kind.clone() {
            BrokerKind::Embedded(mut e) => {
                if let Ok(rel) = e.path.strip_prefix(cfg.path().join("data")) {
                    e.path = rel.to_path_buf();
                }
                BrokerKind::Embedded(e)
            }
            other => other,
        };
        (kind, s.broker.prefetch, s.broker.delivery_limit, s.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    };
    let default = EmbeddedFile { path: "hookrelay-queue.db".into(), sync: EmbeddedSync::Normal };
    assert_eq!(
        kind("version = 1\n"),
        (BrokerKind::Embedded(default), 64, 20, vec![]),
        "router settings keep their defaults"
    );
    assert_eq!(
        kind("version = 1\n[broker]\n").0,
        BrokerKind::Rabbitmq,
        "an empty [broker] is RabbitMQ with its defaults"
    );
    assert_eq!(kind("[broker]\nprefetch = 10\n").1, 10);
    let full = EmbeddedFile { path: "/var/lib/hookrelay/queue.db".into(), sync: EmbeddedSync::Full };
    assert_eq!(
        kind("[embedded]\npath = \"/var/lib/hookrelay/queue.db\"\nsync = \"full\"\n").0,
        BrokerKind::Embedded(full)
    );
    let (both, _, _, warnings) = kind("version = 1\n[broker]\nurl = \"amqp://h/%2f\"\n\n[embedded]\nsync = \"full\"\n");
    assert_eq!(both, BrokerKind::Rabbitmq);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("hookrelay.toml:5:1: [embedded] is ignored: [broker] is present"), "{warnings:?}");
}

#[test]
fn embedded_section_errors_say_where() {
    for (main, want) in [
        (
            "version = 1\n[embedded]\nsyncc = \"full\"\n",
            "hookrelay.toml:3:1: unknown field `syncc` (did you mean `sync`?)",
        ),
        (
            "[embedded]\nsync = \"sometimes\"\n",
            "hookrelay.toml:2:8: unknown variant `sometimes`, expected `normal` or `full`",
        ),
        ("[embedded]\npath = \"\"\n", "hookrelay.toml:1:1: [embedded] path must name a file"),
    ] {
        let cfg = ConfigDir::with_main_text(main);
        let errors = hookrelay::config::load(cfg.path()).unwrap_err().to_string();
        assert!(errors.contains(want), "{main:?}: {errors}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_uses_the_embedded_file_unless_the_environment_names_rabbitmq() {
    let vh = Vhost::new();
    let cfg = ConfigDir::with_main_text("version = 1\n");
    let cwd = tempfile::tempdir().unwrap();
    let publish = |env: Option<&str>| {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["publish", "--type", "order.paid", "--data", "{\"n\": 1}", "--id", "cli-1", "--config"])
            .arg(cfg.path())
            .current_dir(cwd.path());
        if let Some(url) = env {
            cmd.env("HOOKRELAY_BROKER__URL", url);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    // No [broker]: the embedded broker's file in the data directory, where no route is bound yet.
    let (code, text) = publish(None);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no route subscribes"), "{text}");
    let file = cfg.path().join("data/hookrelay-queue.db");
    assert!(file.exists(), "the queue file is created in the data directory");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "nothing in the working directory");
    // With a route's queue declared in the file, the event waits there for the router.
    {
        let b = EmbeddedBroker::open(&file, EmbeddedSync::Normal).await.unwrap();
        declare(&b, "r", &["order.*"], false, 20).await;
        b.shutdown().await;
    }
    let (code, text) = publish(None);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("cli-1\n"), "the confirmed id on stdout: {text}");
    {
        let b = EmbeddedBroker::open(&file, EmbeddedSync::Normal).await.unwrap();
        assert_eq!(b.queue_depth(&queue("r")).await.unwrap(), 1);
        // While this process owns the file, the command is refused, and says why.
        let (code, text) = publish(None);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("in use by another hookrelay") && text.contains("hookrelay-queue.db"), "{text}");
        b.shutdown().await;
    }
    // HOOKRELAY_BROKER__URL makes [broker] present: RabbitMQ.
    let rabbit = AmqpBroker::connect(&vh.url, "hookrelay.events", "test").await.unwrap();
    rabbit.declare_base().await.unwrap();
    declare(&rabbit, "r", &["order.*"], false, 20).await;
    let (code, text) = publish(Some(&vh.url));
    assert_eq!(code, Some(0), "{text}");
    wait_depth(&rabbit, "r", 1, "published to RabbitMQ").await;
    rabbit.close().await;
}

/// The queue file is checkpointed beside the engine's commits, not inside the commit that takes
/// its log past a size: a copy of the file alone, without its `-wal`, soon holds what was
/// published, while the broker runs and nothing else is published (with SQLite's automatic
/// checkpoint alone, ten messages would stay in the log until 1,000 pages or the close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_file_is_checkpointed_beside_the_commits() {
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookrelay-queue.db");
    let b = EmbeddedBroker::open(&file, EmbeddedSync::Normal).await.unwrap();
    declare(&b, "ckpt", &["ckpt.*"], false, 20).await;
    super::publish_n(&b, "ckpt.made", "ckpt", 10).await;
    let copy = dir.path().join("copy.db");
    let in_the_file = async || {
        for stale in ["copy.db-wal", "copy.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(stale));
        }
        std::fs::copy(&file, &copy).unwrap();
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&copy);
        let Ok(mut conn) = opts.connect().await else { return -1 };
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&mut conn).await.unwrap_or(-1);
        let _ = conn.close().await;
        n
    };
    eventually("the ten published messages in the queue file itself (copied without its log)", T, in_the_file, |n| {
        *n == 10
    })
    .await;
    assert_eq!(b.queue_depth(&queue("ckpt")).await.unwrap(), 10, "and all ten still in the queue");
    b.shutdown().await;
}

/// Publishes one CloudEvent (routing key = type) with its id.
async fn publish_event(b: &dyn Broker, ev: &serde_json::Value) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(ev).unwrap();
    let to = Destination::Events { routing_key: ev["type"].as_str().unwrap() };
    b.publish(to, &body, &Headers::default(), ev["id"].as_str()).await
}

// ---------------------------------------------------------------------------------------------
// The router on the embedded broker, in process (producers will reach a running router's
// embedded broker through the ingest API).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_delivers_signed_webhooks_from_the_embedded_broker() {
    use hookrelay::broker::H_REASON;
    use hookrelay::runtime::ReloadOutcome;
    // Every first attempt on /flaky answers 503: its retry goes through a delayed publish.
    let rx =
        Receiver::start(|r, earlier| if r.path == "/flaky" && earlier == 0 { (503, vec![]) } else { (200, vec![]) })
            .await;
    let qdir = tempfile::tempdir().unwrap();
    let qfile = qdir.path().join("queue.db");
    let cfg = ConfigDir::with(
        MainConfig::new().version(1).embedded(&qfile).loopback_targets().shutdown_grace(Duration::from_secs(5)),
    );
    cfg.file("secret", SECRET);
    let route = |name: &str, events: &str, path: &str| {
        RouteConfig::new(name).events([events]).url(rx.url(path)).signing(Signing::File("secret".into()))
    };
    cfg.route(&route("erp", "order.*", "/erp").ordered(true));
    cfg.route(&route("flaky", "order.paid", "/flaky").backoff([Duration::from_millis(300)]));
    let snapshot = hookrelay::config::load(cfg.path()).unwrap();
    assert!(matches!(snapshot.broker_kind, hookrelay::config::BrokerKind::Embedded(_)));
    let store = cfg.store().await;
    let log_stop = tokio_util::sync::CancellationToken::new();
    let (log, log_writer) = hookrelay::store::log::AttemptLog::start(store.clone(), log_stop.clone());
    let router = hookrelay::runtime::Runtime::new(snapshot, Some((store, log)));
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Router::run's future is not `Send` (a borrow across its declaration stream), as in main:
    // run it beside the test instead of spawning it.
    let test = async {
        // The same engine as the router's: connect hands out connections to one instance.
        let s = router.snapshot();
        let b = hookrelay::broker::connect(s.broker_endpoint(), "test").await.unwrap();
        assert_eq!(b.kind(), "embedded");
        let mut events = numbered("e", 100);
        events.push(event("order.paid", "bad", json!({"n": "one"})));
        // The first publish may come before the router has declared its routes.
        let (first, rest) = events.split_first().unwrap();
        let routed = |r: &Result<(), BrokerError>| !matches!(r, Err(BrokerError::NotRouted(_)));
        let publish_first = async || publish_event(b.as_ref(), first).await;
        eventually("the router to declare its routes", T, publish_first, routed).await.unwrap();
        for ev in rest {
            publish_event(b.as_ref(), ev).await.unwrap();
        }
        let erp = rx.wait_distinct("/erp", 100, T).await;
        let ns: Vec<i64> = erp.iter().map(|r| r.json()["data"]["n"].as_i64().unwrap()).collect();
        assert_eq!(ns, (0..100).collect::<Vec<_>>(), "the ordered route keeps publish order");
        for r in &erp {
            verify_spec(SECRET, r).unwrap();
        }
        let flaky = rx.wait_distinct("/flaky", 100, T).await;
        rx.wait_until("/flaky", "100 retries", T, |got| {
            got.iter().filter(|r| r.header("hookrelay-attempt") == "2").count() >= 100
        })
        .await;
        assert!(flaky.iter().all(|r| verify_spec(SECRET, r).is_ok()));
        let dead = cfg.wait_dead_letters(2, T).await;
        assert!(dead.iter().all(|d| d.reason == "schema" && d.event_id == "bad"), "{dead:?}");
        let mut routes: Vec<&str> = dead.iter().map(|d| d.route.as_str()).collect();
        routes.sort();
        assert_eq!(routes, ["erp", "flaky"]);
        assert!(dead.iter().all(|d| d.header(H_REASON).is_some()));

        // A reload that adds a route declares it on the embedded broker and starts it.
        cfg.route(&route("late", "order.created", "/late"));
        let outcome = router.reload(hookrelay::config::load(cfg.path()).unwrap()).await;
        assert!(matches!(&outcome, ReloadOutcome::Applied { added, .. } if added == &["late"]), "{outcome:?}");
        let created = serde_json::to_vec(&event("order.created", "c1", json!({}))).unwrap();
        b.publish(Destination::Events { routing_key: "order.created" }, &created, &Headers::default(), Some("c1"))
            .await
            .unwrap();
        rx.wait_distinct("/late", 1, T).await;
        // Moving to RabbitMQ takes a restart.
        cfg.set_main(cfg.main().rabbitmq_defaults());
        let outcome = router.reload(hookrelay::config::load(cfg.path()).unwrap()).await;
        let ReloadOutcome::Rejected { errors } = &outcome else { panic!("{outcome:?}") };
        assert!(errors.iter().any(|e| e.contains("apply at start only")), "{errors:?}");

        shutdown.cancel();
        b
    };
    let ((), b) = tokio::join!(router.clone().run(shutdown.clone()), test);
    for route in ["erp", "flaky"] {
        wait_depth(b.as_ref(), route, 0, "everything delivered and acked").await;
    }
    assert_eq!(b.queue_depth(DEAD_LETTERS).await.unwrap(), 0, "dead letters indexed and acked");
    b.close().await;
    log_stop.cancel();
    let _ = log_writer.await;
}
