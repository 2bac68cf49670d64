//! The CLI's checks of a config directory, made without a broker or a store:
//! `hookrelay validate` (every problem and warning, as text or JSON, and who may call the API)
//! and `hookrelay route test` (one event through one route's pipeline, printed as the request
//! it would send, or why it would be filtered out or dead-lettered).

use super::{OutFormat, Usage, print_errors};
use anyhow::Result;
use hookrelay::config::{self, LoadOptions};
use std::process::ExitCode;

/// Exit 0 valid, 1 invalid; warnings are reported either way.
pub(crate) fn validate(dir: &std::path::Path, format: OutFormat, opts: LoadOptions) -> ExitCode {
    let loaded = config::load_with(dir, opts);
    let (errors, warnings) = match &loaded {
        Ok(s) => (&[][..], &s.warnings[..]),
        Err(e) => (&e.errors[..], &e.warnings[..]),
    };
    match format {
        OutFormat::Text => {
            for w in warnings {
                println!("warning: {w}");
            }
            for e in errors {
                println!("error: {e}");
            }
            match &loaded {
                Ok(s) => {
                    println!(
                        "ok: {} — version {}, revision {}, {} route(s), {} event type(s), {} warning(s)",
                        dir.display(),
                        s.version,
                        s.revision,
                        s.routes.len(),
                        s.schemas.types().len(),
                        warnings.len()
                    );
                    println!("{}", hookrelay::api::access::describe(&s.api).0);
                    println!("data directory: {} (from {})", s.data_dir.path.display(), s.data_dir.from.describe());
                    println!("{}", scripts_line(s));
                }
                Err(_) => println!("{} error(s), {} warning(s)", errors.len(), warnings.len()),
            }
        }
        OutFormat::Json => {
            let loc = |e: &config::error::ConfigError| serde_json::json!({"file": e.file.display().to_string(), "line": e.line, "col": e.col, "message": e.message});
            let mut report = serde_json::json!({
                "valid": loaded.is_ok(),
                "errors": errors.iter().map(loc).collect::<Vec<_>>(),
                "warnings": warnings.iter().map(loc).collect::<Vec<_>>(),
            });
            if let Ok(s) = &loaded {
                report["version"] = s.version.into();
                report["revision"] = s.revision.clone().into();
                report["routes"] = s.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>().into();
                report["api"] = hookrelay::api::access::describe(&s.api).1;
                report["data_dir"] = serde_json::json!({"path": s.data_dir.path, "from": s.data_dir.from});
                report["scripts"] = serde_json::json!({
                    "max_memory_bytes": s.budgets.max_memory_bytes,
                    "max_time": humantime::format_duration(s.budgets.max_time).to_string(),
                    "max_body_bytes": s.budgets.max_body_bytes,
                    "pool": s.script_pool.size(),
                    "inline_allowance": humantime::format_duration(s.budgets.inline_allowance).to_string(),
                });
            }
            println!("{report}");
        }
    }
    if loaded.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The budgets every script run gets (`[scripts]`, defaults filled in).
fn scripts_line(s: &config::Snapshot) -> String {
    let b = &s.budgets;
    format!(
        "scripts: each run within {} of memory (max_memory_bytes = {}), {} (max_time), a body of at most {} bytes \
         (max_body_bytes); {} run(s) at once (pool), moved there after {} (inline_allowance)",
        hookrelay::pipeline::script::budget::bytes(b.max_memory_bytes as u64),
        b.max_memory_bytes,
        humantime::format_duration(b.max_time),
        b.max_body_bytes,
        s.script_pool.size(),
        humantime::format_duration(b.inline_allowance)
    )
}

/// Exit 0 when the event would be sent or filtered out, 1 when it would be dead-lettered or the
/// config does not load.
pub(crate) fn route_test(dir: &std::path::Path, name: &str, event: &std::path::Path) -> Result<ExitCode> {
    let snapshot = match config::load(dir) {
        Ok(s) => s,
        Err(e) => {
            print_errors(&e);
            return Ok(ExitCode::FAILURE);
        }
    };
    let Some(route) = snapshot.route(name) else {
        let names: Vec<&str> = snapshot.routes.iter().map(|r| r.name.as_str()).collect();
        return Err(Usage(format!("no route named {name:?} (routes: {})", names.join(", "))).into());
    };
    let raw = std::fs::read(event).map_err(|e| Usage(format!("--event {}: cannot be read: {e}", event.display())))?;
    let ev = hookrelay::event::CloudEvent::decode(&raw)
        .map_err(|e| Usage(format!("--event {}: not a CloudEvent: {e}", event.display())))?;
    if !route.events.iter().any(|p| hookrelay::broker::topic::matches(p, &ev.ty)) {
        println!("note: route {name} does not subscribe to {:?} (events: {})", ev.ty, route.events.join(", "));
    }
    // A declarative filter says which of its tests failed.
    let declarative = route.steps.condition.as_ref().map(|c| (c.to_string(), c.explain(&ev)));
    match hookrelay::pipeline::prepare_event(&snapshot.pipeline(), &route.steps, ev) {
        Ok(hookrelay::pipeline::Prepared::Filtered) => match declarative {
            Some((_, Err(why))) => {
                println!("filtered out: route {name}'s filter did not match: {why}; nothing would be sent")
            }
            _ => println!("filtered out: route {name}'s filter returned false; nothing would be sent"),
        },
        Ok(hookrelay::pipeline::Prepared::Deliver(p)) => {
            if let Some((filter, _)) = &declarative {
                println!("filter matched: {filter}");
            }
            let seq = p.sequence.clone().unwrap_or_else(|| "<assigned at delivery>".into());
            let tp = p.traceparent.clone().unwrap_or_else(hookrelay::telemetry::new_traceparent);
            let headers = hookrelay::delivery::attempt::request_headers(
                route,
                &p,
                &seq,
                &tp,
                1,
                hookrelay::delivery::attempt::unix_now(),
            );
            println!("POST {}", route.url);
            for (k, v) in &headers {
                println!("{k}: {}", v.to_str().unwrap_or("<binary>"));
            }
            println!();
            println!("{}", String::from_utf8_lossy(&p.body));
            let policies = hookrelay::delivery::gate::describe(route, &snapshot);
            if !policies.is_empty() {
                println!();
                for line in policies {
                    println!("{line}");
                }
            }
        }
        Err(rej) => {
            println!("dead letter: reason {}: {}", rej.reason.as_str(), rej.message);
            for v in &rej.violations {
                println!("  {v}");
            }
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}
