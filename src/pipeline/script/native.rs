//! A Rhai filter whose body is one condition on the event, decided without Rhai when Rhai's
//! answer is plain.
//!
//! Most filters read like `fn filter(event) { event.data.total >= 0 && event.data.currency !=
//! "XXX" }`: properties of the event compared with literals, joined by `&&`, `||` and `!`. At
//! config load such a body is compiled into a [`Native`] condition, which the pipeline evaluates
//! on the decoded event directly: no Rhai values built, no engine call (about a fifteenth of
//! the Rhai call's instructions, `docs/performance.md`, eleventh round).
//!
//! It answers only where Rhai's answer is plain, and otherwise says nothing, so that the script
//! runs in Rhai as before and Rhai decides (its errors included):
//!
//! - Operands are property chains on the parameter (`event.data.total`, `event.subject`) and
//!   integer, string and boolean literals. Anything else in the body (a variable, a call, an
//!   index, `?.`, a float literal, a second statement) leaves the script to Rhai at load.
//! - A comparison is answered when both sides are integers, both strings or both booleans, the
//!   cases Rhai's built-in operators compare as Rust compares `i64`, `str` and `bool`. A float,
//!   a `null`, a missing property, an array or a map on either side leaves it to Rhai, as does a
//!   chain that goes through something that is not a map.
//! - `&&` and `||` go left to right and stop where Rhai stops; each side must be a boolean, as
//!   Rhai requires. `!` negates a boolean.
//!
//! A chain reads the event as [`super::super::reads::Reads`] gives it to the script: `data` is
//! the decoded `data`, any other first name the context attribute or extension of that name.

use crate::event::{CloudEvent, DataRef};
use crate::pipeline::reads::property_chain;
use rhai::{AST, ASTNode, Dynamic, Expr, FnCallExpr, Position, Stmt};
use serde_json::Value;
use std::cmp::Ordering;

/// `fn filter`'s body as a condition decided natively where Rhai's answer is plain.
#[derive(Debug, Clone, PartialEq)]
pub struct Native(Cond);

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Compare(Op, Operand, Operand),
    /// An operand used as a boolean.
    Is(Operand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// Property names from the parameter.
    Path(Vec<String>),
    Int(i64),
    Str(Box<str>),
    Bool(bool),
}

/// A value the native comparisons take; `None` stands for any other (Rhai decides).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaf<'a> {
    Int(i64),
    Str(&'a str),
    Bool(bool),
}

impl Native {
    /// `fn <entry>(param)` of `ast` as a native condition, when its body is one that
    /// compiles (the module's rules); `None` otherwise.
    pub fn of(ast: &AST, entry: &str) -> Option<Self> {
        let def = ast.iter_fn_def().find(|f| f.name == entry && f.params.len() == 1)?;
        let param = def.params[0].as_str();
        // The body's statements are the walk's top-level nodes within its text (a closure in
        // it, lifted into a function of its own, adds one: then the body is not one statement).
        let at = |p: Position| (p.line().unwrap_or(0), p.position().unwrap_or(0));
        let (start, end) = (at(def.body.start_position()), at(def.body.end_position()));
        let mut found = Vec::new();
        ast.walk(&mut |path: &[ASTNode]| {
            if let [ASTNode::Stmt(s)] = path
                && (start..=end).contains(&at(s.position()))
            {
                found.push(statement(s, param));
            }
            true
        });
        match found.pop() {
            Some(Some(cond)) if found.is_empty() => Some(Self(cond)),
            _ => None,
        }
    }

    /// The filter's answer on `event`, or `None` when Rhai is to decide.
    pub fn decide(&self, event: &CloudEvent) -> Option<bool> {
        self.0.eval(event)
    }
}

fn statement(s: &Stmt, param: &str) -> Option<Cond> {
    match s {
        Stmt::Expr(e) => cond(e, param),
        Stmt::Return(Some(e), flags, _) if flags.is_empty() => cond(e, param),
        Stmt::FnCall(f, _) => call(f, param),
        _ => None,
    }
}

fn cond(e: &Expr, param: &str) -> Option<Cond> {
    match e {
        Expr::And(all, _) => Some(Cond::All(all.iter().map(|e| cond(e, param)).collect::<Option<_>>()?)),
        Expr::Or(any, _) => Some(Cond::Any(any.iter().map(|e| cond(e, param)).collect::<Option<_>>()?)),
        Expr::FnCall(f, _) => call(f, param),
        other => operand(other, param).map(Cond::Is),
    }
}

/// An operator call: a comparison or `!`.
fn call(f: &FnCallExpr, param: &str) -> Option<Cond> {
    if !f.is_operator_call() || f.capture_parent_scope || !f.namespace.is_empty() {
        return None;
    }
    let op = match (f.name.as_str(), f.args.as_slice()) {
        ("!", [arg]) => return Some(Cond::Not(Box::new(cond(arg, param)?))),
        ("==", [_, _]) => Op::Eq,
        ("!=", [_, _]) => Op::Ne,
        ("<", [_, _]) => Op::Lt,
        ("<=", [_, _]) => Op::Le,
        (">", [_, _]) => Op::Gt,
        (">=", [_, _]) => Op::Ge,
        _ => return None,
    };
    Some(Cond::Compare(op, operand(&f.args[0], param)?, operand(&f.args[1], param)?))
}

fn operand(e: &Expr, param: &str) -> Option<Operand> {
    match e {
        Expr::IntegerConstant(i, _) => Some(Operand::Int(*i)),
        Expr::StringConstant(s, _) => Some(Operand::Str(s.as_str().into())),
        Expr::BoolConstant(b, _) => Some(Operand::Bool(*b)),
        Expr::DynamicConstant(d, _) => constant(d),
        Expr::Dot(chain, flags, _) if flags.is_empty() => match &chain.lhs {
            Expr::Variable(x, ..) if x.1 == param && x.2.is_empty() => match property_chain(&chain.rhs) {
                (path, true) => Some(Operand::Path(path)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn constant(d: &Dynamic) -> Option<Operand> {
    if let Ok(i) = d.as_int() {
        return Some(Operand::Int(i));
    }
    if let Ok(b) = d.as_bool() {
        return Some(Operand::Bool(b));
    }
    d.read_lock::<rhai::ImmutableString>().map(|s| Operand::Str(s.as_str().into()))
}

impl Cond {
    fn eval(&self, event: &CloudEvent) -> Option<bool> {
        match self {
            Self::All(all) => {
                for c in all {
                    if !c.eval(event)? {
                        return Some(false);
                    }
                }
                Some(true)
            }
            Self::Any(any) => {
                for c in any {
                    if c.eval(event)? {
                        return Some(true);
                    }
                }
                Some(false)
            }
            Self::Not(c) => c.eval(event).map(|b| !b),
            Self::Is(o) => o
                .with_leaf(event, |l| match l {
                    Leaf::Bool(b) => Some(b),
                    _ => None,
                })
                .flatten(),
            Self::Compare(op, a, b) => {
                a.with_leaf(event, |a| b.with_leaf(event, |b| compare(*op, a, b))).flatten().flatten()
            }
        }
    }
}

fn compare(op: Op, a: Leaf<'_>, b: Leaf<'_>) -> Option<bool> {
    let ord = match (a, b) {
        (Leaf::Int(a), Leaf::Int(b)) => a.cmp(&b),
        (Leaf::Str(a), Leaf::Str(b)) => a.cmp(b),
        (Leaf::Bool(a), Leaf::Bool(b)) => a.cmp(&b),
        _ => return None,
    };
    Some(match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
    })
}

impl Operand {
    /// `f` of this operand's value on `event`, when it is one the comparisons take (`None`
    /// when it is not, or the chain does not reach a value through maps).
    fn with_leaf<T>(&self, event: &CloudEvent, f: impl FnOnce(Leaf<'_>) -> T) -> Option<T> {
        match self {
            Self::Int(i) => Some(f(Leaf::Int(*i))),
            Self::Str(s) => Some(f(Leaf::Str(s))),
            Self::Bool(b) => Some(f(Leaf::Bool(*b))),
            Self::Path(path) => {
                let (first, rest) = path.split_first()?;
                if first == "data" {
                    let mut at = event.data.as_ref()?.root();
                    for name in rest {
                        if !at.is_object() {
                            return None;
                        }
                        at = at.get(name)?;
                    }
                    data_leaf(at).map(f)
                } else {
                    let value = event.attribute(first)?;
                    let mut at: &Value = &value;
                    for name in rest {
                        at = at.as_object()?.get(name)?;
                    }
                    value_leaf(at).map(f)
                }
            }
        }
    }
}

/// As [`super::dynamic_of_data`] converts: an integer when it fits an `i64`.
fn data_leaf(d: DataRef<'_>) -> Option<Leaf<'_>> {
    if let Some(s) = d.as_str() {
        return Some(Leaf::Str(s));
    }
    if let Some(b) = d.as_bool() {
        return Some(Leaf::Bool(b));
    }
    d.as_number()?.as_i64().map(Leaf::Int)
}

/// As [`super::dynamic_of`] converts.
fn value_leaf(v: &Value) -> Option<Leaf<'_>> {
    match v {
        Value::String(s) => Some(Leaf::Str(s)),
        Value::Bool(b) => Some(Leaf::Bool(*b)),
        Value::Number(n) => n.as_i64().map(Leaf::Int),
        _ => None,
    }
}

#[cfg(test)]
#[path = "native_tests.rs"]
mod tests;
