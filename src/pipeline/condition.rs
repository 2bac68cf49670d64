//! The declarative filter: a route's `filter` written as a table instead of a Rhai plugin,
//! e.g. `filter = { all = [ { path = "data.total", gte = 100 }, { path = "subject", in = ["f-1"] } ] }`.
//! It owns the compilation of such a table (at config load, into a tree of tests with their
//! paths split and their values typed) and its evaluation against a decoded [`CloudEvent`],
//! which reads the event's attributes and `data` in place: no conversion, no allocation.
//!
//! The semantics (docs/filters.md):
//! - A node is a test (`path` and one or more operators, all of which must hold) or a
//!   combinator: `all = [..]` (every node holds; at least one), `any = [..]` (some node holds;
//!   at least one), `not = {..}`.
//! - Operators: `eq`, `ne` (string, number or boolean), `gt`, `gte`, `lt`, `lte` (number, or
//!   string compared by code points, as RFC 3339 times in UTC sort), `in` (a list of strings,
//!   numbers, booleans), `exists` (boolean), `prefix` (string).
//! - A path that leads nowhere makes every comparison false (`ne` included) and `exists = false`
//!   true. A value of another kind than the operand (a string against a number) makes the
//!   comparison false, never an error; use `not` for the complement. JSON `null` exists, and
//!   equals nothing.
//! - Numbers compare exactly when both are integers, else as `f64`.
//!
//! Paths: an attribute (`id`, `source`, `type`, `subject`, `time`, `sequence`, `dataversion`,
//! `specversion`, an extension such as `tenantid`) or `data.<key>.<key>…`, where a key that is
//! a number also indexes an array (`data.items.0.sku`).

mod found;

use crate::event::CloudEvent;
use found::{Found, compare, equals};
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;
use std::fmt;

/// How deep combinators may nest.
pub const MAX_DEPTH: usize = 16;
/// Tests and combinators in one filter, at most.
pub const MAX_NODES: usize = 256;
/// Values in one `in` list, at most.
pub const MAX_IN: usize = 1_000;

/// The operators, as written.
pub const OPERATORS: [&str; 9] = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "exists", "prefix"];

/// One step of the place of a problem inside a filter: a key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    /// A key of a table.
    Key(String),
    /// An element of an array.
    Index(usize),
}

/// Renders `filter.all[0].gte` from the steps below `filter`.
pub fn loc_text(at: &[Loc]) -> String {
    let mut s = String::from("filter");
    for l in at {
        match l {
            Loc::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Loc::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A declarative filter that does not compile: where (below `filter`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", loc_text(at))]
pub struct ConditionError {
    /// The place of the problem below `filter`.
    pub at: Vec<Loc>,
    /// What is wrong, and what is allowed.
    pub message: String,
}

/// A compiled declarative filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Test(Test),
}

#[derive(Debug, Clone, PartialEq)]
struct Test {
    path: Path,
    ops: Vec<Op>,
}

/// A path, split at load.
#[derive(Debug, Clone, PartialEq)]
struct Path {
    text: String,
    attribute: Attribute,
    /// Below `data` only.
    rest: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Attribute {
    Id,
    Source,
    Type,
    Specversion,
    Time,
    Subject,
    Dataversion,
    Sequence,
    Data,
    Extension(String),
}

/// A key, and the array index it also is when it is a number.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    key: String,
    index: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Str(String),
    Num(Number),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Scalar),
    Ne(Scalar),
    Gt(Scalar),
    Gte(Scalar),
    Lt(Scalar),
    Lte(Scalar),
    In(Vec<Scalar>),
    Exists(bool),
    Prefix(String),
}

fn err(at: &[Loc], message: impl Into<String>) -> ConditionError {
    ConditionError { at: at.to_vec(), message: message.into() }
}

/// Compiles nodes, counting them against [`MAX_NODES`].
struct Compiler {
    nodes: usize,
}

impl Condition {
    /// Compiles a filter table (from a route file or a subscription's JSON); the first problem
    /// is reported with its place.
    pub fn compile(value: &Value) -> Result<Self, ConditionError> {
        let mut c = Compiler { nodes: 0 };
        let mut at = Vec::new();
        Ok(Self { root: c.node(value, &mut at, 1)? })
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &CloudEvent) -> bool {
        self.root.eval(event)
    }

    /// Whether `event` passes, and when it does not, which test failed and what the event holds
    /// there (for `hookrelay route test`).
    pub fn explain(&self, event: &CloudEvent) -> Result<(), String> {
        self.root.explain(event)
    }
}

impl Compiler {
    fn node(&mut self, value: &Value, at: &mut Vec<Loc>, depth: usize) -> Result<Node, ConditionError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(err(at, format!("a filter holds at most {MAX_NODES} tests and combinators")));
        }
        if depth > MAX_DEPTH {
            return Err(err(at, format!("filters nest at most {MAX_DEPTH} levels deep")));
        }
        let Value::Object(table) = value else {
            return Err(err(
                at,
                format!(
                    "must be a table: a test such as {{ path = \"data.total\", gte = 100 }}, or one of all, any, not \
                     (got {})",
                    kind(value)
                ),
            ));
        };
        let combinators: Vec<&str> = ["all", "any", "not"].into_iter().filter(|k| table.contains_key(*k)).collect();
        match (combinators.as_slice(), table.len()) {
            ([], _) => self.test(table, at).map(Node::Test),
            ([one], 1) => {
                at.push(Loc::Key(one.to_string()));
                let inner = &table[*one];
                let node = match *one {
                    "not" => Node::Not(Box::new(self.node(inner, at, depth + 1)?)),
                    list => {
                        let Value::Array(items) = inner else {
                            return Err(err(at, format!("`{list}` takes a list of tests (got {})", kind(inner))));
                        };
                        if items.is_empty() {
                            return Err(err(at, format!("`{list}` must list at least one test")));
                        }
                        let mut nodes = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            at.push(Loc::Index(i));
                            nodes.push(self.node(item, at, depth + 1)?);
                            at.pop();
                        }
                        if list == "all" { Node::All(nodes) } else { Node::Any(nodes) }
                    }
                };
                at.pop();
                Ok(node)
            }
            _ => {
                let others: Vec<&str> = table.keys().map(String::as_str).collect();
                Err(err(
                    at,
                    format!(
                        "a table is either a test (`path` and operators) or exactly one of all, any, not (got keys {})",
                        others.join(", ")
                    ),
                ))
            }
        }
    }

    fn test(&mut self, table: &Map<String, Value>, at: &mut Vec<Loc>) -> Result<Test, ConditionError> {
        let path = match table.get("path") {
            Some(Value::String(p)) => {
                at.push(Loc::Key("path".into()));
                let path = Path::parse(p).map_err(|m| err(at, m))?;
                at.pop();
                path
            }
            Some(other) => {
                at.push(Loc::Key("path".into()));
                return Err(err(at, format!("must be a string such as \"data.total\" (got {})", kind(other))));
            }
            None => {
                return Err(err(
                    at,
                    "a test needs `path` (e.g. path = \"data.total\") and an operator (eq, ne, gt, gte, lt, lte, in, \
                     exists, prefix)",
                ));
            }
        };
        let mut ops = Vec::new();
        for (key, value) in table.iter().filter(|(k, _)| k.as_str() != "path") {
            at.push(Loc::Key(key.clone()));
            ops.push(op(key, value, at)?);
            at.pop();
        }
        if ops.is_empty() {
            return Err(err(
                at,
                format!("the test of {:?} has no operator (eq, ne, gt, gte, lt, lte, in, exists, prefix)", path.text),
            ));
        }
        Ok(Test { path, ops })
    }
}

fn op(key: &str, value: &Value, at: &[Loc]) -> Result<Op, ConditionError> {
    let wrong = |wants: &str| err(at, format!("`{key}` takes {wants} (got {})", kind(value)));
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(Scalar::Str(s.clone())),
        Value::Number(n) => Some(Scalar::Num(n.clone())),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        _ => None,
    };
    Ok(match key {
        "eq" | "ne" => {
            let s = scalar(value)
                .ok_or_else(|| wrong("a string, a number or a boolean (for a missing value, use exists = false)"))?;
            if key == "eq" { Op::Eq(s) } else { Op::Ne(s) }
        }
        "gt" | "gte" | "lt" | "lte" => {
            let s = match value {
                Value::String(_) | Value::Number(_) => scalar(value),
                _ => None,
            }
            .ok_or_else(|| wrong("a number, or a string (compared by code points)"))?;
            match key {
                "gt" => Op::Gt(s),
                "gte" => Op::Gte(s),
                "lt" => Op::Lt(s),
                _ => Op::Lte(s),
            }
        }
        "in" => {
            let Value::Array(items) = value else { return Err(wrong("a list of strings, numbers or booleans")) };
            if items.is_empty() || items.len() > MAX_IN {
                return Err(err(at, format!("`in` takes a list of 1 to {MAX_IN} values (got {})", items.len())));
            }
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match scalar(item) {
                    Some(s) => list.push(s),
                    None => {
                        let mut at = at.to_vec();
                        at.push(Loc::Index(i));
                        return Err(err(&at, format!("`in` lists strings, numbers or booleans (got {})", kind(item))));
                    }
                }
            }
            Op::In(list)
        }
        "exists" => match value {
            Value::Bool(b) => Op::Exists(*b),
            _ => return Err(wrong("true or false")),
        },
        "prefix" => match value {
            Value::String(s) => Op::Prefix(s.clone()),
            _ => return Err(wrong("a string")),
        },
        other => {
            return Err(err(
                at,
                format!("unknown operator `{other}` (operators: {}; combinators: all, any, not)", OPERATORS.join(", ")),
            ));
        }
    })
}

/// The kind of a JSON value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

impl Path {
    fn parse(text: &str) -> Result<Self, String> {
        let shape = "a path is an attribute (`subject`, `type`, an extension such as `tenantid`) or `data.<key>...`";
        let mut parts = text.split('.');
        let first = parts.next().unwrap_or_default();
        let name_ok = !first.is_empty()
            && first.len() <= 20
            && first.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !name_ok {
            return Err(format!(
                "{text:?} does not start with a CloudEvents attribute name (1 to 20 lowercase letters and digits): {shape}"
            ));
        }
        let attribute = match first {
            "id" => Attribute::Id,
            "source" => Attribute::Source,
            "type" => Attribute::Type,
            "specversion" => Attribute::Specversion,
            "time" => Attribute::Time,
            "subject" => Attribute::Subject,
            "dataversion" => Attribute::Dataversion,
            "sequence" => Attribute::Sequence,
            "data" => Attribute::Data,
            ext => Attribute::Extension(ext.to_string()),
        };
        let rest: Vec<&str> = parts.collect();
        if !rest.is_empty() && attribute != Attribute::Data {
            return Err(format!("{text:?}: `{first}` is an attribute without fields; only `data` has them"));
        }
        if rest.iter().any(|s| s.is_empty()) {
            return Err(format!("{text:?} has an empty segment: {shape}"));
        }
        if rest.contains(&"*") {
            return Err(format!("{text:?}: `*` is not supported in filter paths (it is in redact paths)"));
        }
        let rest = rest.iter().map(|k| Segment { key: k.to_string(), index: k.parse().ok() }).collect();
        Ok(Self { text: text.to_string(), attribute, rest })
    }

    /// What the path names in `event`, borrowed.
    fn find<'e>(&self, event: &'e CloudEvent) -> Option<Found<'e>> {
        let opt = |s: &'e Option<String>| s.as_deref().map(Found::Str);
        let top = match &self.attribute {
            Attribute::Id => Some(Found::Str(&event.id)),
            Attribute::Source => Some(Found::Str(&event.source)),
            Attribute::Type => Some(Found::Str(&event.ty)),
            Attribute::Specversion => Some(Found::Str(&event.specversion)),
            Attribute::Time => opt(&event.time),
            Attribute::Subject => opt(&event.subject),
            Attribute::Dataversion => opt(&event.dataversion),
            Attribute::Sequence => event.sequence.as_ref().map(Found::Json),
            Attribute::Data => {
                let mut d = event.data.as_ref()?.root();
                for seg in &self.rest {
                    d = match seg.index {
                        Some(i) if !d.is_object() => d.index(i)?,
                        _ => d.get(&seg.key)?,
                    };
                }
                return Some(Found::Data(d));
            }
            Attribute::Extension(name) => event.extensions.get(name).map(Found::Json),
        }?;
        let mut value = match top {
            Found::Json(v) => v,
            found => return Some(found),
        };
        for seg in &self.rest {
            value = match value {
                Value::Object(m) => m.get(&seg.key)?,
                Value::Array(items) => items.get(seg.index?)?,
                _ => return None,
            };
        }
        Some(Found::Json(value))
    }
}

impl Op {
    fn holds(&self, found: Option<Found<'_>>) -> bool {
        if let Self::Exists(want) = self {
            return found.is_some() == *want;
        }
        let Some(f) = found else { return false };
        match self {
            Self::Eq(s) => equals(f, s),
            Self::Ne(s) => compare(f, s).is_some_and(|o| o != Ordering::Equal),
            Self::Gt(s) => compare(f, s) == Some(Ordering::Greater),
            Self::Gte(s) => compare(f, s).is_some_and(|o| o != Ordering::Less),
            Self::Lt(s) => compare(f, s) == Some(Ordering::Less),
            Self::Lte(s) => compare(f, s).is_some_and(|o| o != Ordering::Greater),
            Self::In(list) => list.iter().any(|s| equals(f, s)),
            Self::Prefix(p) => f.as_str().is_some_and(|x| x.starts_with(p.as_str())),
            Self::Exists(_) => unreachable!("handled above"),
        }
    }
}

impl Node {
    fn eval(&self, event: &CloudEvent) -> bool {
        match self {
            Self::All(nodes) => nodes.iter().all(|n| n.eval(event)),
            Self::Any(nodes) => nodes.iter().any(|n| n.eval(event)),
            Self::Not(node) => !node.eval(event),
            Self::Test(t) => {
                let found = t.path.find(event);
                t.ops.iter().all(|op| op.holds(found))
            }
        }
    }

    fn explain(&self, event: &CloudEvent) -> Result<(), String> {
        match self {
            Self::All(nodes) => nodes.iter().try_for_each(|n| n.explain(event)),
            Self::Any(nodes) => {
                let mut why = Vec::new();
                for n in nodes {
                    match n.explain(event) {
                        Ok(()) => return Ok(()),
                        Err(w) => why.push(w),
                    }
                }
                Err(format!("no test of `any` holds: {}", why.join("; ")))
            }
            Self::Not(node) => match node.explain(event) {
                Ok(()) => Err(format!("`not` of a test that holds: {node}")),
                Err(_) => Ok(()),
            },
            Self::Test(t) => {
                let found = t.path.find(event);
                match t.ops.iter().find(|op| !op.holds(found)) {
                    None => Ok(()),
                    Some(op) => {
                        let holds = match found {
                            None => "is missing".to_string(),
                            Some(found) => format!("is {found:?}"),
                        };
                        Err(format!("`{} {op}` is false ({} {holds})", t.path.text, t.path.text))
                    }
                }
            }
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{}", Value::from(s.as_str())),
            Self::Num(n) => write!(f, "{n}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eq(s) => write!(f, "eq {s}"),
            Self::Ne(s) => write!(f, "ne {s}"),
            Self::Gt(s) => write!(f, "gt {s}"),
            Self::Gte(s) => write!(f, "gte {s}"),
            Self::Lt(s) => write!(f, "lt {s}"),
            Self::Lte(s) => write!(f, "lte {s}"),
            Self::In(list) => {
                let items: Vec<String> = list.iter().map(Scalar::to_string).collect();
                write!(f, "in [{}]", items.join(", "))
            }
            Self::Exists(b) => write!(f, "exists {b}"),
            Self::Prefix(p) => write!(f, "prefix {}", Value::from(p.as_str())),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, nodes: &[Node]| {
            let items: Vec<String> = nodes.iter().map(Node::to_string).collect();
            write!(f, "{name} [{}]", items.join(", "))
        };
        match self {
            Self::All(nodes) => list(f, "all", nodes),
            Self::Any(nodes) => list(f, "any", nodes),
            Self::Not(node) => write!(f, "not ({node})"),
            Self::Test(t) => {
                let ops: Vec<String> = t.ops.iter().map(Op::to_string).collect();
                write!(f, "{} {}", t.path.text, ops.join(", "))
            }
        }
    }
}

impl fmt::Display for Condition {
    /// One line, e.g. `all [data.total gte 100, subject in ["f-1", "f-2"]]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

#[cfg(test)]
#[path = "condition_tests.rs"]
mod tests;
