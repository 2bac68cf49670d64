//! What a filter reads of the event, found in its syntax tree at config load, so that each call
//! converts only that part of the event to Rhai values instead of all of it.
//!
//! A filter that only follows properties from its parameter (`event.data.total`,
//! `event.data.customer.name.len()`, `event.subject`) reads those paths: the map it gets holds
//! them, each with everything under it, and nothing else. Any other use of the parameter (as a
//! whole: `event.keys()`, `let e = event`, `f(event)`, `event["data"]`, captured by a closure,
//! in a string) gives it the whole event. Reading a property the map lacks gives `()`, as it
//! does on the whole event when the event lacks it; a path that meets a value that is not an
//! object converts that value whole, so that what the script does with it (an error included)
//! is what it does with the whole event. Property chains are right-nested in Rhai's tree:
//! `event.a.b` is `Dot(event, Dot(a, b))`, `event.a[0]` is `Dot(event, Index(a, 0))`.

use super::script::{dynamic_of, dynamic_of_data};
use crate::event::{CloudEvent, DataRef};
use rhai::{AST, ASTNode, Dynamic, Expr, Position, Stmt};
use serde_json::Value;
use std::collections::BTreeMap;

/// What an entry point reads of its one parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// All of it.
    Whole,
    /// These property paths only.
    Paths(Tree),
}

/// Property paths, merged: a node read whole has no children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    whole: bool,
    children: BTreeMap<String, Tree>,
}

impl Tree {
    fn add(&mut self, path: &[String]) {
        if self.whole {
            return;
        }
        match path.split_first() {
            None => {
                self.whole = true;
                self.children.clear();
            }
            Some((first, rest)) => self.children.entry(first.clone()).or_default().add(rest),
        }
    }

    fn dynamic(&self, value: &Value) -> Dynamic {
        match value {
            Value::Object(m) if !self.whole => Dynamic::from_map(
                self.children
                    .iter()
                    .filter_map(|(k, tree)| m.get(k).map(|v| (k.as_str().into(), tree.dynamic(v))))
                    .collect(),
            ),
            other => dynamic_of(other),
        }
    }

    /// [`Tree::dynamic`] of a decoded event's `data`.
    fn dynamic_of_data(&self, data: DataRef<'_>) -> Dynamic {
        if self.whole || !data.is_object() {
            return dynamic_of_data(data);
        }
        Dynamic::from_map(
            self.children
                .iter()
                .filter_map(|(k, tree)| data.get(k).map(|v| (k.as_str().into(), tree.dynamic_of_data(v))))
                .collect(),
        )
    }
}

impl Reads {
    /// What `fn <entry>(param)` of `ast` reads of `param`.
    pub fn of(ast: &AST, entry: &str) -> Self {
        let Some(def) = ast.iter_fn_def().find(|f| f.name == entry && f.params.len() == 1) else {
            return Self::Whole;
        };
        let param = def.params[0].clone();
        // The function's nodes are those within its body's text (closures defined in it too,
        // which Rhai lifts into functions of their own); the walk covers the whole script.
        let at = |p: Position| (p.line().unwrap_or(0), p.position().unwrap_or(0));
        let (start, end) = (at(def.body.start_position()), at(def.body.end_position()));
        let mut tree = Tree::default();
        let mut whole = false;
        ast.walk(&mut |path: &[ASTNode]| {
            let node = match path.last() {
                Some(ASTNode::Expr(node)) => node,
                // `f!()` runs `f` in this function's scope, where it can read the parameter.
                Some(ASTNode::Stmt(Stmt::FnCall(f, pos))) if f.capture_parent_scope => {
                    whole |= (start..=end).contains(&at(*pos));
                    return !whole;
                }
                _ => return true,
            };
            if !(start..=end).contains(&at(node.position())) {
                return true;
            }
            match node {
                Expr::FnCall(f, ..) | Expr::MethodCall(f, ..) if f.capture_parent_scope => whole = true,
                Expr::Variable(x, ..) if x.1 == param && x.2.is_empty() => {
                    match property_path(node, path.len().checked_sub(2).map(|i| &path[i])) {
                        Some(p) => tree.add(&p),
                        None => whole = true,
                    }
                }
                _ => {}
            }
            !whole
        });
        if whole || tree.whole { Self::Whole } else { Self::Paths(tree) }
    }

    /// [`Reads::dynamic`] of a decoded event, without making it one map first: each
    /// attribute read is taken from the event as [`CloudEvent::into_value`] would place it.
    pub fn dynamic_of_event(&self, event: &CloudEvent) -> Dynamic {
        match self {
            Self::Whole => dynamic_of(&event.to_value()),
            Self::Paths(tree) => Dynamic::from_map(
                tree.children
                    .iter()
                    .filter_map(|(k, sub)| match k.as_str() {
                        "data" => event.data.as_ref().map(|d| (k.as_str().into(), sub.dynamic_of_data(d.root()))),
                        _ => event.attribute(k).map(|v| (k.as_str().into(), sub.dynamic(&v))),
                    })
                    .collect(),
            ),
        }
    }

    /// `event` as the entry point gets it: what it reads of it, converted.
    pub fn dynamic(&self, event: &Value) -> Dynamic {
        match self {
            Self::Whole => dynamic_of(event),
            Self::Paths(tree) => tree.dynamic(event),
        }
    }
}

/// The properties `var` is followed by when its parent is a property chain on it; `None` when
/// the variable is used otherwise.
fn property_path(var: &Expr, parent: Option<&ASTNode>) -> Option<Vec<String>> {
    let Some(ASTNode::Expr(Expr::Dot(chain, ..))) = parent else { return None };
    if !std::ptr::eq(&chain.lhs, var) {
        return None;
    }
    Some(property_chain(&chain.rhs).0)
}

/// The property names at the start of a chain's right-hand side (`a.b.c` is `Dot(a, Dot(b, c))`),
/// up to an index or a method call, and whether they are the whole chain: plain dots (no `?.`)
/// ending in a property.
pub(super) fn property_chain(rhs: &Expr) -> (Vec<String>, bool) {
    let mut path = Vec::new();
    let mut plain = true;
    let mut at = rhs;
    loop {
        match at {
            Expr::Property(p, ..) => {
                path.push(p.2.to_string());
                return (path, plain);
            }
            Expr::Dot(x, flags, _) | Expr::Index(x, flags, _) => {
                let Expr::Property(p, ..) = &x.lhs else { return (path, false) };
                path.push(p.2.to_string());
                if matches!(at, Expr::Index(..)) {
                    return (path, false);
                }
                plain &= flags.is_empty();
                at = &x.rhs;
            }
            // A method call on the value reached so far.
            _ => return (path, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::script::sandboxed_engine;
    use serde_json::json;

    fn reads(script: &str) -> Reads {
        let ast = sandboxed_engine(crate::pipeline::script::Budgets::default()).compile(script).unwrap();
        Reads::of(&ast, "filter")
    }

    fn paths(script: &str) -> Vec<String> {
        fn walk(t: &Tree, prefix: &str, out: &mut Vec<String>) {
            if t.whole {
                out.push(prefix.to_string());
            }
            for (k, c) in &t.children {
                walk(c, &if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, out);
            }
        }
        match reads(script) {
            Reads::Whole => vec!["<whole>".into()],
            Reads::Paths(t) => {
                let mut out = Vec::new();
                walk(&t, "", &mut out);
                out
            }
        }
    }

    #[test]
    fn property_chains_are_read_as_paths() {
        let s = "fn filter(event) { event.data.total >= 0 && event.data.currency != \"XXX\" }";
        assert_eq!(paths(s), ["data.currency", "data.total"]);
        let s = "fn filter(e) { e.subject == \"a\" || e.data.customer.name.len() > 2 || e.data?.items[0].sku == 1 }";
        assert_eq!(paths(s), ["data.customer.name", "data.items", "subject"]);
        let s = "fn filter(event) { let d = event.data; d.total > 1 && event.data.total > 0 }";
        assert_eq!(paths(s), ["data"]);
        let s = "fn filter(event) { \"x\" in event.data.customer }\nfn transform(event) { event }";
        assert_eq!(paths(s), ["data.customer"], "only the filter's body counts");
    }

    #[test]
    fn other_uses_read_the_whole_event() {
        for s in [
            "fn filter(event) { event.keys().len() > 1 }",
            "fn filter(event) { let e = event; e.data.total > 1 }",
            "fn filter(event) { check(event) }\nfn check(x) { true }",
            "fn filter(event) { event[\"data\"].total > 1 }",
            "fn filter(event) { `${event}`.len() > 0 }",
            "fn filter(event) { let f = || event.data.total; f.call() > 0 }",
            "fn filter(event) { type_of(event) == \"map\" }",
            "fn filter(event) { event.data.total > 0 || event == #{} }",
            "fn filter(event) { peek!() }\nfn peek() { event.keys().len() > 1 }",
        ] {
            assert_eq!(reads(s), Reads::Whole, "{s}");
        }
    }

    #[test]
    fn filters_decide_the_same_on_what_they_read_as_on_the_whole_event() {
        let engine = sandboxed_engine(crate::pipeline::script::Budgets::default());
        let events = [
            json!({"id": "1", "type": "t", "data": {"total": 5, "currency": "BRL", "customer": {"name": "Ana"}, "items": [{"sku": 1}]}}),
            json!({"id": "1", "type": "t", "data": {"total": -5, "currency": "XXX"}}),
            json!({"id": "1", "type": "t", "subject": "a", "data": "text"}),
            json!({"id": "1", "type": "t", "data": [1, 2]}),
            json!({"id": "1", "type": "t"}),
        ];
        for s in [
            "fn filter(event) { event.data.total >= 0 && event.data.currency != \"XXX\" }",
            "fn filter(e) { e.subject == \"a\" || e.data?.customer?.name?.len() > 2 }",
            "fn filter(event) { event.data.missing == () && event.nothing == () }",
            "fn filter(event) { event.data.total = 3; event.data.total == 3 && event.data.len() > 0 }",
            "fn filter(event) { type_of(event.data) == \"map\" }",
            "fn filter(event) { event.data.items[0].sku == 1 }",
        ] {
            let ast = engine.compile(s).unwrap();
            let r = Reads::of(&ast, "filter");
            assert_ne!(r, Reads::Whole, "{s}");
            for ev in &events {
                let call = |arg: Dynamic| {
                    let mut scope = rhai::Scope::new();
                    engine
                        .call_fn::<Dynamic>(&mut scope, &ast, "filter", (arg,))
                        .map(|d| d.to_string())
                        .map_err(|e| e.to_string())
                };
                assert_eq!(call(r.dynamic(ev)), call(dynamic_of(ev)), "{s} on {ev}");
                let mut full = ev.clone();
                full["source"] = json!("s");
                full["specversion"] = json!("1.0");
                // Decoded from its text, as events are: `data`'s strings are spans of it.
                let decoded = CloudEvent::decode(&serde_json::to_vec(&full).unwrap()).unwrap();
                assert_eq!(call(r.dynamic_of_event(&decoded)), call(dynamic_of(&full)), "{s} on the decoded {ev}");
            }
        }
    }
}
