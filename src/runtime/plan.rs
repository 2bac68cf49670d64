//! Plans: what a reload to a new config would change, said before it happens, for code review
//! (`hookrelay plan`). A plan is the reload's own difference ([`ConfigDiff`]) printed, one line
//! each ([`describe`]), and nothing else: nothing is swapped, declared or audited.
//!
//! Two ways to get one. Between two directories (`plan --against-dir OLD`), on the machine that
//! has both. Or against the config a running router has in force (`plan --against URL`): the
//! router never exports its config files (`hookrelay.toml` may hold a broker or database URL
//! with its password), so the caller sends the new config's files instead
//! (`POST /v1/config/plan`) and the router plans them ([`Runtime::plan`]): it writes them into a
//! fresh scratch directory (each path checked against the config layout first, [`check_path`]),
//! loads that exactly as a reload would (the same options: secrets from its environment, its
//! data directory, and relative `secret_file`s and `[data] dir` resolved in its own config
//! directory, as they will be once the files are in place there), merges the API-managed routes
//! in as a reload does, and compares the result with the live config. The scratch directory is
//! removed before the answer. A sent config may still name files outside it by path (an absolute
//! `secret_file` or `ca_file`); the loader reads those as it always does, bounded (a regular file,
//! 64 KiB for a secret, 4 MiB for CA certificates), so an admin key cannot make the router read a
//! device or a huge file into memory.

use super::Runtime;
use super::diff::ConfigDiff;
use crate::config::error::ConfigErrors;
use crate::config::{self, LoadOptions, Snapshot};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The paths a plan takes, relative to the config directory: `hookrelay.toml`,
/// `routes/<name>.toml`, `schemas/<type>/<file>.json`, `plugins/[<dir>/…]<name>.rhai`, and PEM
/// files (`[<dir>/…]<name>.pem` or `.crt`, for `[security] ca_file`). A name is letters,
/// digits, `_`, `-` and `.`, at most 100 of them, and does not start with `.` (so no `..`, and
/// no hidden files); a directory under `plugins/` or above a PEM file has no `.` at all, so that
/// no file can be another one's directory. The OpenAPI document states the same pattern.
pub const LAYOUT: &str = concat!(
    "^(hookrelay\\.toml",
    "|routes/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}\\.toml",
    "|schemas/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}\\.json",
    "|plugins/([A-Za-z0-9_-]{1,100}/)*[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}\\.rhai",
    "|([A-Za-z0-9_-]{1,100}/)*[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}\\.(pem|crt))$"
);

/// The longest path a plan takes, in bytes.
pub const MAX_PATH: usize = 1024;

/// The most files a plan takes.
pub const MAX_FILES: usize = 4096;

/// The most bytes a plan's files may hold together: 1.5 MiB, so that a body that holds them
/// (their JSON strings, a few percent longer for a config's text) stays within the API's body
/// limit of 2 MiB, and a plan too large gets this limit's message, not a body cut short.
pub const MAX_BYTES: usize = 1536 * 1024;

static LAYOUT_RE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(LAYOUT).expect("LAYOUT is a valid regular expression"));

/// Why files could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A path outside the config layout ([`LAYOUT`]): absolute, with `..`, or a file no load reads.
    #[error(
        "{path:?} is not a config file's path: give paths relative to the config directory, as hookrelay.toml, \
         routes/<name>.toml, schemas/<type>/v<N>.json, plugins/<name>.rhai or a ca_file's <name>.pem ({why})"
    )]
    Path {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// More than [`MAX_FILES`] files.
    #[error("{files} files: a plan takes at most {MAX_FILES}")]
    TooMany {
        /// How many were given.
        files: usize,
    },
    /// More than [`MAX_BYTES`] bytes.
    #[error("the files hold {bytes} bytes together: a plan takes at most {MAX_BYTES} (1.5 MiB)")]
    TooLarge {
        /// How many were given.
        bytes: usize,
    },
    /// The scratch directory could not be written (the router's disk, not the request).
    #[error("the files could not be written to a scratch directory: {0}")]
    Scratch(String),
}

/// Whether `path` is one a plan takes ([`LAYOUT`], [`MAX_PATH`]); why not when it is not.
pub fn check_path(path: &str) -> Result<(), PlanError> {
    let refuse = |why| Err(PlanError::Path { path: path.to_string(), why });
    if path.starts_with('/') || path.starts_with('\\') || path.contains(':') {
        return refuse("an absolute path");
    }
    if path.split(['/', '\\']).any(|s| s == "..") {
        return refuse("`..` leads out of the config directory");
    }
    if path.len() > MAX_PATH {
        return refuse("longer than 1024 bytes");
    }
    if !LAYOUT_RE.is_match(path) {
        return refuse("not in the config layout");
    }
    Ok(())
}

/// Checks every path and the sizes, before anything is written.
pub fn check_files(files: &BTreeMap<String, String>) -> Result<(), PlanError> {
    if files.len() > MAX_FILES {
        return Err(PlanError::TooMany { files: files.len() });
    }
    let bytes: usize = files.values().map(String::len).sum();
    if bytes > MAX_BYTES {
        return Err(PlanError::TooLarge { bytes });
    }
    files.keys().try_for_each(|p| check_path(p))
}

/// A config, as the API and the log name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ConfigRef {
    /// `version` from `hookrelay.toml`.
    pub version: u64,
    /// The hash over its files.
    pub revision: String,
}

impl ConfigRef {
    fn of(s: &Snapshot) -> Self {
        Self { version: s.version, revision: s.revision.clone() }
    }
}

/// What a reload to a new config would do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Plan {
    /// The config in force.
    pub from: ConfigRef,
    /// The new config; absent when it does not load.
    pub to: Option<ConfigRef>,
    /// Whether the new config loads (else `errors` says why, and nothing else is planned).
    pub loads: bool,
    /// The plan as `hookrelay plan` prints it, one line each: a header, each route added
    /// (`+`), removed (`-`) or changed (`~`) with what the broker and the workers get, then the
    /// refusals; or, when the new config does not load, the count of its errors.
    pub lines: Vec<String>,
    /// Routes that would start.
    pub added: Vec<String>,
    /// Routes that would stop (after their in-flight deliveries).
    pub removed: Vec<String>,
    /// Routes whose new definition would apply to deliveries that start after the swap.
    pub changed: Vec<String>,
    /// What the router would refuse to change by a reload (the reload would be rejected).
    pub refusals: Vec<String>,
    /// Why the new config does not load: every `file:line:col: message`.
    pub errors: Vec<String>,
    /// What the new config's load warns about.
    pub warnings: Vec<String>,
    /// Whether a reload to the new config would be applied.
    pub applies: bool,
}

impl Plan {
    /// The plan from `old` to `new` (API-managed routes merged in, as a reload merges them).
    pub fn between(old: &Snapshot, new: &Snapshot) -> Self {
        Self::loaded(old, new, ConfigDiff::between(old, new))
    }

    /// The plan of a new config that loads, with the difference a reload would apply.
    fn loaded(old: &Snapshot, new: &Snapshot, diff: ConfigDiff) -> Self {
        Self {
            from: ConfigRef::of(old),
            to: Some(ConfigRef::of(new)),
            loads: true,
            lines: describe(old, new, &diff),
            added: diff.added.iter().cloned().collect(),
            removed: diff.removed.keys().cloned().collect(),
            changed: diff.changed.iter().cloned().collect(),
            applies: diff.refusals.is_empty(),
            refusals: diff.refusals,
            errors: Vec::new(),
            warnings: new.warnings.iter().map(ToString::to_string).collect(),
        }
    }

    /// The plan of a new config that does not load: a reload would be rejected.
    pub fn rejected(old: &Snapshot, failed: &ConfigErrors) -> Self {
        Self {
            from: ConfigRef::of(old),
            to: None,
            loads: false,
            lines: vec![rejected_line(failed.errors.len())],
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            refusals: Vec::new(),
            errors: failed.errors.iter().map(ToString::to_string).collect(),
            warnings: failed.warnings.iter().map(ToString::to_string).collect(),
            applies: false,
        }
    }

    /// A new config that loads but that a reload would reject before comparing it (a route
    /// named as a subscription): `refusals` says why, and nothing else is planned.
    fn refused(old: &Snapshot, new: &Snapshot, refusals: Vec<String>) -> Self {
        Self::loaded(old, new, ConfigDiff { refusals, ..ConfigDiff::default() })
    }
}

/// The line of a plan whose new config does not load.
pub fn rejected_line(errors: usize) -> String {
    format!("{errors} error(s): a reload would be rejected, nothing would change")
}

/// The plan, one line each: a header, each route added (`+`), removed (`-`) or changed (`~`)
/// with what the broker and the workers get, then the refusals.
pub fn describe(old: &Snapshot, new: &Snapshot, diff: &ConfigDiff) -> Vec<String> {
    let mut out = vec![format!(
        "plan: version {} (revision {}) -> version {} (revision {})",
        old.version, old.revision, new.version, new.revision
    )];
    for name in &diff.added {
        let Some(r) = new.route(name) else { continue };
        out.push(format!(
            "+ route {name}: queue {} bound to {}, to {}{}",
            r.queue(),
            r.events.join(", "),
            r.url,
            if r.ordered { ", ordered" } else { "" }
        ));
    }
    for (name, patterns) in &diff.removed {
        out.push(format!("- route {name}: stops after its in-flight deliveries; unbinds {}", patterns.join(", ")));
    }
    for name in &diff.changed {
        let (Some(o), Some(r)) = (old.route(name), new.route(name)) else { continue };
        let mut how = Vec::new();
        let bound: Vec<&str> = r.events.iter().filter(|p| !o.events.contains(p)).map(String::as_str).collect();
        if !bound.is_empty() {
            how.push(format!("binds {}", bound.join(", ")));
        }
        if let Some(dropped) = diff.unbind.get(name) {
            how.push(format!("unbinds {}", dropped.join(", ")));
        }
        if o.ordered != r.ordered {
            how.push(format!("ordered {} -> {}", o.ordered, r.ordered));
        }
        if o.url != r.url {
            how.push(format!("url {} -> {}", o.url, r.url));
        }
        if o.retry.tiers() != r.retry.tiers() {
            how.push("new retry wait queues".into());
        }
        if diff.restart.contains(name) {
            how.push("its worker restarts (concurrency or rate limit)".into());
        }
        if how.is_empty() {
            how.push(
                "its definition (plugins, pipeline, retry or secrets) applies to deliveries that start after the swap"
                    .into(),
            );
        }
        out.push(format!("~ route {name}: {}", how.join("; ")));
    }
    if diff.new_client {
        out.push("~ [security]: deliveries get a new HTTP client".into());
    }
    if diff.added.is_empty() && diff.removed.is_empty() && diff.changed.is_empty() && !diff.new_client {
        out.push("no route changes".into());
    }
    for r in &diff.refusals {
        out.push(format!("refused: {r}"));
    }
    if !diff.refusals.is_empty() {
        out.push(format!("{} refusal(s): the router would keep the running config", diff.refusals.len()));
    }
    out
}

impl Runtime {
    /// Plans a reload to the config made of `files` (path relative to the config directory →
    /// text) against the live one, as described in the [module docs](self). Nothing running is
    /// touched.
    pub async fn plan(&self, files: BTreeMap<String, String>) -> Result<Plan, PlanError> {
        check_files(&files)?;
        let live = self.snapshot();
        let api = super::reload::api_routes(&live);
        let planned = tokio::task::spawn_blocking(move || {
            let scratch = Scratch::new()?;
            scratch.write(&files)?;
            let opts = LoadOptions { home: Some(live.dir.clone()), ..LoadOptions::reloading(&live) };
            Ok(match config::load_with(&scratch.0, opts) {
                Ok(new) => match new.with_api_routes(&api) {
                    Ok(merged) => Plan::between(&live, &merged),
                    Err(refusals) => Plan::refused(&live, &new, refusals),
                },
                Err(failed) => Plan::rejected(&live, &failed),
            })
        })
        .await;
        planned.unwrap_or_else(|e| Err(PlanError::Scratch(format!("the plan's task failed: {e}"))))
    }
}

/// A fresh directory under the system's temp directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, PlanError> {
        let path = std::env::temp_dir().join(format!("hookrelay-plan-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&path).map_err(|e| PlanError::Scratch(format!("{}: {e}", path.display())))?;
        Ok(Self(path))
    }

    /// Writes `files` (checked paths) under the directory.
    fn write(&self, files: &BTreeMap<String, String>) -> Result<(), PlanError> {
        for (rel, text) in files {
            let path = self.0.join(Path::new(rel));
            let written = match path.parent() {
                Some(parent) => std::fs::create_dir_all(parent).and_then(|()| std::fs::write(&path, text)),
                None => std::fs::write(&path, text),
            };
            written.map_err(|e| PlanError::Scratch(format!("{rel}: {e}")))?;
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_takes_config_files_and_nothing_else() {
        for ok in [
            "hookrelay.toml",
            "routes/orders.toml",
            "routes/a.b-c_d.toml",
            "schemas/order.created/v1.json",
            "plugins/hide-email.rhai",
            "plugins/shared/lib.rhai",
            "ca.pem",
            "certs/corp.crt",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("/etc/passwd", "an absolute path"),
            ("C:/x.pem", "an absolute path"),
            ("routes/../../x.toml", "`..`"),
            ("../hookrelay.toml", "`..`"),
            ("routes/.hidden.toml", "not in the config layout"),
            ("routes/a/b.toml", "not in the config layout"),
            ("routes/a.json", "not in the config layout"),
            ("schemas/x.json", "not in the config layout"),
            ("plugins/a.rhai/b.rhai", "not in the config layout"),
            ("README.md", "not in the config layout"),
            ("", "not in the config layout"),
            ("hookrelay.toml\n", "not in the config layout"),
        ] {
            let e = check_path(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        let long = format!("plugins/{}x.rhai", "d/".repeat(600));
        assert!(check_path(&long).unwrap_err().to_string().contains("longer than 1024 bytes"));
    }

    #[test]
    fn sizes_are_capped_before_anything_is_written() {
        let many: BTreeMap<String, String> =
            (0..=MAX_FILES).map(|i| (format!("routes/r{i}.toml"), String::new())).collect();
        assert!(matches!(check_files(&many), Err(PlanError::TooMany { .. })));
        let big = BTreeMap::from([("hookrelay.toml".to_string(), "#".repeat(MAX_BYTES + 1))]);
        assert!(matches!(check_files(&big), Err(PlanError::TooLarge { .. })));
    }
}
