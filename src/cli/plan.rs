//! `hookrelay plan --config NEW --against-dir OLD`: what a reload from OLD to NEW would change,
//! for code review. The difference is the router's own ([`ConfigDiff`], the value a reload
//! applies); this module only prints it. Exit 0 when the reload would be applied, 1 when NEW
//! does not load, 2 when the router would refuse it.

use super::print_errors;
use hookrelay::config::{self, LoadOptions, Snapshot};
use hookrelay::runtime::diff::ConfigDiff;
use std::path::Path;
use std::process::ExitCode;

/// Exit status of a plan the router would refuse.
const REFUSED: u8 = 2;

/// Loads both configs (secrets need not be set) and prints the difference.
pub(crate) fn plan(new_dir: &Path, old_dir: &Path) -> ExitCode {
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
    let new = match config::load_with(new_dir, opts) {
        Ok(s) => s,
        Err(e) => {
            print_errors(&e);
            println!("{} error(s): a reload would be rejected, nothing would change", e.errors.len());
            return ExitCode::FAILURE;
        }
    };
    let diff = ConfigDiff::between(&old, &new);
    for line in describe(&old, &new, &diff) {
        println!("{line}");
    }
    if diff.refusals.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(REFUSED) }
}

/// The plan, one line each: a header, each route added (`+`), removed (`-`) or changed (`~`)
/// with what the broker and the workers get, then the refusals.
pub(crate) fn describe(old: &Snapshot, new: &Snapshot, diff: &ConfigDiff) -> Vec<String> {
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
