//! `hookrelay plan --config NEW (--against URL | --against-dir OLD)`: what a reload to NEW would
//! change, for code review. The plan is the router's own ([`Plan`], from the value a reload
//! applies, printed by the library's [`describe`](hookrelay::runtime::plan::describe)); this
//! module gets it and prints it. Against a running router, it sends the files the loader reads
//! from NEW (the loader's own listing) to `POST /v1/config/plan`, and the router plans them
//! against the config it has in force (it never sends its own files, which may hold passwords).
//! Exit 0 when the reload would be applied, 1 when NEW does not load (or the router cannot be
//! asked), 2 when the router would refuse it.

use super::print_errors;
use hookrelay::config::{self, LoadOptions, MAIN_FILE};
use hookrelay::delivery::http::client::WebhookClient;
use hookrelay::delivery::http::guard::Policy;
use hookrelay::runtime::plan::{self, Plan};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status of a plan the router would refuse.
const REFUSED: u8 = 2;

/// Plans NEW against OLD, both loaded here (secrets need not be set).
pub(crate) fn against_dir(new_dir: &Path, old_dir: &Path) -> ExitCode {
    let old = match config::load_with(old_dir, LoadOptions::checking()) {
        Ok(s) => s,
        Err(e) => {
            print_errors(&e);
            eprintln!("{} (the config to compare against) does not load", old_dir.display());
            return ExitCode::FAILURE;
        }
    };
    // The data directory is where the running router has it, whatever the new config's place.
    let opts = LoadOptions { data_dir: Some(old.data_dir.path.clone()), ..LoadOptions::checking() };
    let plan = match config::load_with(new_dir, opts) {
        Ok(new) => Plan::between(&old, &new),
        Err(e) => Plan::rejected(&old, &e),
    };
    print(&plan)
}

/// Plans NEW against the config the router at `base` runs.
pub(crate) async fn against(new_dir: &Path, base: &str, api_key: Option<&str>) -> ExitCode {
    let planned = match files(new_dir) {
        Ok(files) => ask(base, api_key, files).await,
        Err(e) => Err(e),
    };
    match planned {
        Ok(plan) => print(&plan),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the warnings and errors on stderr, the plan's lines on stdout; the exit status.
fn print(plan: &Plan) -> ExitCode {
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    for e in &plan.errors {
        eprintln!("error: {e}");
    }
    for line in &plan.lines {
        println!("{line}");
    }
    match (plan.loads, plan.applies) {
        (false, _) => ExitCode::FAILURE,
        (true, false) => ExitCode::from(REFUSED),
        (true, true) => ExitCode::SUCCESS,
    }
}

/// The files a load of `dir` reads (the loader's own listing, whether the load succeeds or
/// not), with their text. A file outside the config layout (an absolute `[security] ca_file`)
/// is not sent: the router reads the file at that path, as a reload would. Secret files are
/// never listed.
fn files(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    if !dir.join(MAIN_FILE).is_file() {
        return Err(format!("{} has no {MAIN_FILE}: is --config pointing at the config directory?", dir.display()));
    }
    let listed = match config::load_with(dir, LoadOptions::checking()) {
        Ok(s) => s.files,
        Err(e) => e.files,
    };
    let mut files = BTreeMap::new();
    for rel in listed {
        if plan::check_path(&rel).is_err() {
            eprintln!(
                "warning: {rel} is not sent (outside the config directory's layout): the router reads the file there"
            );
            continue;
        }
        let path = dir.join(&rel);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        files.insert(rel, text);
    }
    Ok(files)
}

/// Posts `files` to `base`'s `POST /v1/config/plan`; its plan, or one line saying why not.
async fn ask(base: &str, api_key: Option<&str>, files: BTreeMap<String, String>) -> Result<Plan, String> {
    // The caller chose this address: the SSRF guard is for webhook targets, not for this.
    let client = WebhookClient::new(Policy { allow_http: true, allow_private_networks: true }, &[]);
    let url: http::Uri = format!("{}/v1/config/plan", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("--against {base:?} is not a URL: {e}"))?;
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    if let Some(k) = api_key {
        let v = http::HeaderValue::from_str(&format!("Bearer {k}"))
            .map_err(|_| "the API key is not a valid header value")?;
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let body = serde_json::to_vec(&serde_json::json!({ "files": files })).unwrap_or_default();
    let answer = client
        .post(&url, headers, body.into(), Duration::from_secs(60), 16 * 1024 * 1024)
        .await
        .map_err(|e| format!("cannot reach the router at {base}: {e}"))?;
    let message = || {
        let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        v["error"]["message"].as_str().map_or_else(|| answer.body.trim().to_string(), str::to_string)
    };
    match answer.status {
        200 => serde_json::from_str(&answer.body)
            .map_err(|e| format!("POST {url} answered 200 with what is not a plan ({e}): is {base} a hookrelay API?")),
        401 | 403 => Err(format!(
            "the router at {base} refused the key ({}, {}): a plan needs an admin key (--api-key or HOOKRELAY_API_KEY)",
            answer.status,
            message()
        )),
        status => Err(format!("POST {url} answered {status}: {}", message())),
    }
}
