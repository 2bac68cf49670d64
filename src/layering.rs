//! The module graph, checked: which module uses which (`crate::` paths in code, comments and
//! unit tests left out), with no cycle, and the layering the crate map in `lib.rs` describes.
//! Nodes are the top-level modules, except that `delivery::http`, `delivery::policy` and
//! `delivery::verdict` are nodes of their own: leaves that `config`, `pipeline`, `metrics` and
//! `telemetry` use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The node a path in the crate belongs to: `["delivery", "verdict"]` → `delivery::verdict`.
fn node(parts: &[&str]) -> String {
    match parts {
        ["delivery", leaf @ ("http" | "policy" | "verdict"), ..] => format!("delivery::{leaf}"),
        [first, ..] => first.to_string(),
        [] => String::new(),
    }
}

/// The code of a file without its comments and its unit tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The identifiers of every `<prefix>a::b` path in `code`: `[a, b]` (or `[a]`).
fn paths<'a>(code: &'a str, prefix: &str) -> Vec<[&'a str; 2]> {
    let ident = |s: &'a str| {
        let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        &s[..end]
    };
    code.match_indices(prefix)
        .filter(|(at, _)| !code[..*at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .map(|(at, _)| {
            let rest = &code[at + prefix.len()..];
            let first = ident(rest);
            let second = rest[first.len()..].strip_prefix("::").map(ident).unwrap_or_default();
            [first, second]
        })
        .collect()
}

/// Every source file but this one: its path under `src/` and its [`code`].
fn sources() -> Vec<(std::path::PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if !path.ends_with("layering.rs") {
                let text = code(&std::fs::read_to_string(&path).unwrap());
                out.push((path.strip_prefix(&src).unwrap().to_path_buf(), text));
            }
        }
    }
    out
}

fn graph() -> Graph {
    let mut graph = Graph::new();
    for (rel, text) in sources() {
        let rel = rel.with_extension("");
        let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).filter(|p| *p != "mod").collect();
        if matches!(parts[..], ["main" | "lib"]) {
            continue;
        }
        let from = node(&parts);
        let mut to: Vec<String> = paths(&text, "crate::").iter().map(|[a, b]| node(&[a, b])).collect();
        // A file of `delivery/` reaches its siblings through `super::`.
        if parts.len() == 2 && parts[0] == "delivery" {
            to.extend(paths(&text, "super::").iter().map(|[a, _]| node(&["delivery", a])));
        }
        let uses = graph.entry(from.clone()).or_default();
        uses.extend(to.into_iter().filter(|t| *t != from && !t.is_empty()));
    }
    graph
}

/// A cycle through `start`, if there is one.
fn cycle(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![next.clone()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push([path.clone(), vec![next.clone()]].concat());
            }
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    assert!(graph.len() > 10, "every module was read: {graph:?}");
    for module in graph.keys() {
        assert_eq!(cycle(&graph, module), None, "a cycle through {module}; the graph: {graph:#?}");
    }
}

#[test]
fn the_layers_hold() {
    let graph = graph();
    let uses = |m: &str| graph.get(m).cloned().unwrap_or_default();
    let only = |m: &str, allowed: &[&str]| {
        let extra: Vec<String> = uses(m).into_iter().filter(|u| !allowed.contains(&u.as_str())).collect();
        assert!(extra.is_empty(), "{m} must use only {allowed:?}, and uses {extra:?}");
    };
    only("broker", &["binding"]);
    only("binding", &[]);
    only("event", &[]);
    only("delivery::http", &["broker"]);
    only("delivery::policy", &[]);
    only("delivery::verdict", &["delivery::http"]);
    only("tenant", &["event"]);
    only("tokens", &["tenant", "store"]);
    only("example", &[]);
    only("pipeline", &["event", "tenant", "delivery::verdict"]);
    only("metrics", &["delivery::verdict", "delivery::policy"]);
    only("config", &["broker", "pipeline", "tenant", "delivery::http", "delivery::policy"]);
    assert!(uses("delivery").contains("config") && uses("runtime").contains("config"));
    // The pages are built over the API's handlers; the API serves them without knowing them.
    assert!(uses("ui").contains("api") && !uses("api").contains("ui"));
    assert!(graph.keys().all(|m| m == "ui" || !uses(m).contains("ui")), "nothing but main mounts the pages");
}

#[test]
fn only_settle_acks_route_messages_and_the_indexer_its_own_queue() {
    let mut ackers: Vec<String> = sources()
        .into_iter()
        // A message's `ack()` or `start_ack()`, not the `Settle::ack` that the worker calls.
        .filter(|(_, text)| {
            text.match_indices(".ack()").any(|(at, _)| !text[..at].ends_with("settle")) || text.contains(".start_ack()")
        })
        .map(|(rel, _)| rel.display().to_string())
        // The broker's own files implement the ack.
        .filter(|f| !f.starts_with("broker"))
        .collect();
    ackers.sort();
    assert_eq!(ackers, ["delivery/settle.rs", "runtime/indexer.rs"]);
}

#[test]
fn a_cycle_is_found_and_paths_are_read_from_code_only() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in pairs {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    let looped = edges(&[("a", "b"), ("b", "c"), ("c", "a")]);
    assert_eq!(cycle(&looped, "a"), Some(["a", "b", "c", "a"].map(String::from).to_vec()));
    assert_eq!(cycle(&edges(&[("a", "b"), ("b", "c")]), "a"), None);
    let text =
        code("use crate::config::Route;\n// crate::store in a comment\nfn f() { crate::delivery::verdict::decide }");
    let found: Vec<String> = paths(&text, "crate::").iter().map(|[a, b]| node(&[a, b])).collect();
    assert_eq!(found, ["config", "delivery::verdict"]);
}
