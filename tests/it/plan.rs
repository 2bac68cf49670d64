//! `hookrelay plan --against URL` and `POST /v1/config/plan`: a running router plans a reload to
//! the files it is sent, against the config it has in force, the same plan as `--against-dir`
//! prints, and changes nothing.

use crate::common::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// A router on the embedded broker with an admin and a read key, running routes `kept`,
/// `moved` and `gone`; its config directory, base URL and keys.
struct Running {
    cfg: ConfigDir,
    router: RouterProc,
    base: String,
    admin: String,
    read: String,
    /// The router's `TMPDIR`, where its plans' scratch directories go.
    tmp: tempfile::TempDir,
    _broker: TestBroker,
}

impl Running {
    /// The plans' scratch directories left in the router's `TMPDIR`: none, once they answered.
    fn scratch_left(&self) -> Vec<String> {
        let names = std::fs::read_dir(self.tmp.path()).unwrap().flatten().map(|e| e.file_name());
        names.map(|n| n.to_string_lossy().into_owned()).filter(|n| n.starts_with("hookrelay-plan-")).collect()
    }
}

async fn running() -> Running {
    let broker = TestBroker::embedded();
    let (admin, admin_entry) = api_key("ops", &[Scope::Admin]);
    let (read, read_entry) = api_key("dashboards", &[Scope::Read]);
    let cfg = ConfigDir::with(broker.main().api_key(admin_entry).api_key(read_entry));
    let to = "http://127.0.0.1:9/hook";
    cfg.route(&RouteConfig::new("kept").events(["order.created"]).url(to).ordered(true));
    cfg.route(&RouteConfig::new("moved").events(["order.created", "order.paid"]).url(to));
    cfg.route(&RouteConfig::new("gone").events(["order.*"]).url(to));
    let tmp = tempfile::tempdir().unwrap();
    let router = RouterProc::start_with_env(&cfg, &[], &[("TMPDIR", tmp.path().to_str().unwrap())]);
    router.wait_log("consuming", std::time::Duration::from_secs(30)).await;
    let base = router.api().await;
    Running { cfg, router, base, admin, read, tmp, _broker: broker }
}

/// A copy of the config files of `from` (not its state) in a new temp dir.
fn copy_config(from: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            let (src, dst) = (entry.path(), to.join(entry.file_name()));
            if src.is_dir() { copy(&src, &dst) } else { std::fs::copy(&src, &dst).map(drop).unwrap() }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(from.join("hookrelay.toml"), dir.path().join("hookrelay.toml")).unwrap();
    for sub in ["routes", "schemas", "plugins"] {
        if from.join(sub).is_dir() {
            copy(&from.join(sub), &dir.path().join(sub));
        }
    }
    dir
}

/// `hookrelay plan --config new` with `args`: exit status, stdout, stderr.
fn plan(new: &Path, args: &[&str], key: Option<&str>) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["plan", "--config"]).arg(new).args(args).env_remove("HOOKRELAY_API_KEY").env_remove(SECRET_ENV);
    if let Some(k) = key {
        cmd.env("HOOKRELAY_API_KEY", k);
    }
    let out = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The live config's revision and reload counts, as `GET /v1/config` shows them.
async fn live(r: &Running) -> serde_json::Value {
    let c = Api::new(&r.base, Some(&r.read)).get("/v1/config").await.expect(200).clone();
    json!({"revision": c["revision"], "applied": c["reloads_applied"], "rejected": c["reloads_rejected"], "routes": c["file_routes"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_plans_the_files_it_is_sent_as_against_dir_does_and_changes_nothing() {
    let r = running().await;
    let before = live(&r).await;
    let new = copy_config(r.cfg.path());
    let to = "http://127.0.0.1:9/hook";
    let route = |rc: RouteConfig| rc.signing(Signing::Env(SECRET_ENV.into())).write(new.path());
    std::fs::remove_file(new.path().join("routes/gone.toml")).unwrap();
    route(RouteConfig::new("added").events(["order.paid"]).url(to));
    route(RouteConfig::new("moved").events(["order.paid"]).url("http://127.0.0.1:10/hook"));

    let (code, by_url, err) = plan(new.path(), &["--against", &r.base], Some(&r.admin));
    assert_eq!(code, Some(0), "{by_url}{err}");
    let dir = r.cfg.path().to_str().unwrap();
    let (code, by_dir, err) = plan(new.path(), &["--against-dir", dir], None);
    assert_eq!(code, Some(0), "{by_dir}{err}");
    assert_eq!(by_url, by_dir, "the router's plan is the one --against-dir prints");
    for says in [
        format!("plan: version 1 (revision {}) -> version 1", before["revision"].as_str().unwrap()),
        "+ route added: queue hookrelay.route.added bound to order.paid, to http://127.0.0.1:9/hook".into(),
        "- route gone: stops after its in-flight deliveries; unbinds order.*".into(),
        "~ route moved: unbinds order.created; url http://127.0.0.1:9/hook -> http://127.0.0.1:10/hook".into(),
    ] {
        assert!(by_url.contains(&says), "{says:?} in:\n{by_url}");
    }
    assert!(!by_url.contains("route kept"), "{by_url}");

    // The API's answer carries the same lines, and the routes by name.
    let files: serde_json::Map<String, serde_json::Value> = ["hookrelay.toml", "routes/kept.toml", "routes/moved.toml"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read_to_string(new.path().join(f)).unwrap().into()))
        .chain(std::iter::once((
            "schemas/order.paid/v1.json".to_string(),
            json!({"type": "object"}).to_string().into(),
        )))
        .collect();
    let admin = Api::new(&r.base, Some(&r.admin));
    let answer = admin.post("/v1/config/plan", json!({ "files": files })).await;
    let p = answer.expect(200);
    assert_eq!((p["loads"].clone(), p["applies"].clone()), (json!(true), json!(true)), "{p}");
    assert_eq!(p["from"]["revision"], before["revision"]);
    assert_eq!(
        (p["added"].clone(), p["removed"].clone(), p["changed"].clone()),
        (json!([]), json!(["gone"]), json!(["moved"]))
    );
    assert!(
        p["lines"]
            .as_array()
            .unwrap()
            .contains(&json!("- route gone: stops after its in-flight deliveries; unbinds order.*")),
        "{p}"
    );
    let warnings = p["warnings"].as_array().unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].as_str().unwrap().contains("event pattern `order.created` matches no type"),
        "{p}"
    );

    // Nothing was swapped, reloaded or left behind.
    assert_eq!(live(&r).await, before);
    assert_eq!(r.router.log_count("config reloaded") + r.router.log_count("reload rejected"), 0);
    assert_eq!(r.scratch_left(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_errors_and_missing_secrets_are_the_reloads_own() {
    let r = running().await;
    let before = live(&r).await;
    let new = copy_config(r.cfg.path());
    let write = |rel: &str, text: &str| write_file(&new.path().join(rel), text);
    let against = ["--against", r.base.as_str()];

    // `ordered` cannot change in place: exit 2, as the router would refuse the reload.
    let kept = std::fs::read_to_string(new.path().join("routes/kept.toml")).unwrap();
    write("routes/kept.toml", &kept.replace("ordered = true", "ordered = false"));
    let (code, out, err) = plan(new.path(), &against, Some(&r.admin));
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("refused: routes/kept.toml: route `kept` changes `ordered` from true to false"), "{out}");
    assert!(out.contains("1 refusal(s): the router would keep the running config"), "{out}");
    write("routes/kept.toml", &kept);

    // A secret the router's environment lacks fails there, as it would on SIGHUP, though the
    // files check here (where secrets need not be set).
    write(
        "routes/secretive.toml",
        "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:9/\"\n[signing]\nsecret_env = \"HOOKRELAY_PLAN_TEST_ABSENT\"\n",
    );
    let dir = r.cfg.path().to_str().unwrap();
    assert_eq!(plan(new.path(), &["--against-dir", dir], None).0, Some(0));
    let (code, out, err) = plan(new.path(), &against, Some(&r.admin));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("error: routes/secretive.toml:4:14: environment variable HOOKRELAY_PLAN_TEST_ABSENT"),
        "{err}"
    );
    assert!(out.contains("1 error(s): a reload would be rejected, nothing would change"), "{out}");
    std::fs::remove_file(new.path().join("routes/secretive.toml")).unwrap();

    // A relative `secret_file` is read where the router's config is (where the files are going),
    // never sent: the router has it, the new config's directory does not.
    write_file(&r.cfg.path().join("secrets/keyed.key"), SECRET);
    write(
        "routes/keyed.toml",
        "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:9/\"\n[signing]\nsecret_file = \"secrets/keyed.key\"\n",
    );
    let (code, out, err) = plan(new.path(), &against, Some(&r.admin));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("+ route keyed: queue hookrelay.route.keyed bound to order.paid"), "{out}");
    assert!(!err.contains("secrets/keyed.key"), "{err}");
    std::fs::remove_file(r.cfg.path().join("secrets/keyed.key")).unwrap();
    let (code, out, err) = plan(new.path(), &against, Some(&r.admin));
    assert_eq!(code, Some(1), "without the router's file, as a reload would fail: {out}");
    assert!(err.contains("error: routes/keyed.toml:4:15: secret file secrets/keyed.key cannot be read"), "{err}");
    std::fs::remove_file(new.path().join("routes/keyed.toml")).unwrap();

    // Every error of a broken config at its file:line:col, in one pass, as validate prints them.
    write("routes/broken.toml", "events = [\"order.paid\"]\nurll = \"http://127.0.0.1:9/\"\n");
    write("plugins/bad.rhai", "fn filter(event) {\n  event.type ==\n");
    let (code, out, err) = plan(new.path(), &against, Some(&r.admin));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("error: routes/broken.toml:2:1: unknown field `urll`"), "{err}");
    assert!(err.contains("error: plugins/bad.rhai:"), "{err}");
    assert!(out.contains("2 error(s): a reload would be rejected"), "{out}");
    assert!(!err.contains("hookrelay-plan-"), "no scratch path in the errors: {err}");

    assert_eq!(live(&r).await, before, "the router runs its config as before");
    assert_eq!(r.scratch_left(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_takes_config_paths_and_admin_keys_only() {
    let r = running().await;
    let before = live(&r).await;
    let admin = Api::new(&r.base, Some(&r.admin));
    for path in ["../hookrelay.toml", "routes/../../etc/x.toml", "/etc/passwd", "data/hookrelay.db", "routes/.x.toml"] {
        let answer =
            admin.post("/v1/config/plan", json!({"files": {"hookrelay.toml": "version = 1", path: "x"}})).await;
        assert_eq!(answer.expect(422)["error"]["code"], "file_path", "{path}: {answer:?}");
        assert_eq!(answer.json["error"]["details"]["path"], path);
        assert!(answer.json["error"]["message"].as_str().unwrap().contains(&format!("{path:?}")), "{answer:?}");
    }
    let answer = admin.post("/v1/config/plan", json!({"files": {"hookrelay.toml": "#".repeat(1600 << 10)}})).await;
    assert_eq!(answer.expect(413).clone()["error"]["code"], "too_large");
    assert!(answer.json["error"]["message"].as_str().unwrap().contains("a plan takes at most 1572864"), "{answer:?}");
    assert_eq!(admin.post("/v1/config/plan", json!({"file": {}})).await.expect(400)["error"]["code"], "invalid_body");

    // A config that does not load is a plan too: 200, `loads` false, every error.
    let p = admin.post("/v1/config/plan", json!({"files": {"hookrelay.toml": "version = \"one\"\n"}})).await;
    let p = p.expect(200);
    assert_eq!((p["loads"].clone(), p["applies"].clone(), p["to"].clone()), (json!(false), json!(false), json!(null)));
    assert!(p["errors"][0].as_str().unwrap().starts_with("hookrelay.toml:1:"), "{p}");

    // The files a sent config names by path are read with a bound: a device is an error, at
    // once, not a read until memory runs out.
    let route = "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:9/\"\n[signing]\nsecret_file = \"/dev/zero\"\n";
    let main = "version = 1\n[security]\nca_file = \"/dev/urandom\"\n";
    let p = admin.post("/v1/config/plan", json!({"files": {"hookrelay.toml": main, "routes/z.toml": route}})).await;
    let p = p.expect(200);
    let errors = p["errors"].to_string();
    assert_eq!(p["loads"], json!(false), "{p}");
    assert!(
        errors.contains("routes/z.toml:4:") && errors.contains("/dev/zero cannot be read: is not a regular file"),
        "{p}"
    );
    assert!(errors.contains("ca_file /dev/urandom: cannot be read: is not a regular file"), "{p}");

    // An admin key, and no other.
    let body = json!({"files": {"hookrelay.toml": "version = 1"}});
    assert_eq!(
        admin.with_key(None).post("/v1/config/plan", body.clone()).await.expect(401)["error"]["code"],
        "unauthorized"
    );
    assert_eq!(
        admin.with_key(Some(&r.read)).post("/v1/config/plan", body).await.expect(403)["error"]["code"],
        "forbidden"
    );
    let new = copy_config(r.cfg.path());
    let (code, out, err) = plan(new.path(), &["--against", &r.base], Some(&r.read));
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.starts_with("error: the router at ") && err.contains("403") && err.contains("admin key"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) = plan(new.path(), &["--against", &r.base], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("401") && err.lines().count() == 1, "{err}");

    // A router that is not there: one line, exit 1; and one of the two places only.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = plan(new.path(), &["--against", &nowhere], Some(&r.admin));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with(&format!("error: cannot reach the router at {nowhere}: ")) && err.lines().count() == 1,
        "{err}"
    );
    let (code, _, err) = plan(new.path(), &["--against", &r.base, "--against-dir", "."], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");

    assert_eq!(live(&r).await, before);
    assert_eq!(r.scratch_left(), Vec::<String>::new());
}
