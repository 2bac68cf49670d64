//! Rhai scripts: the sandboxed engine, compilation at config load, and the two entry points a
//! plugin may define, `fn filter(event)` → bool and `fn transform(event)` → event.
//!
//! The sandbox: bounded operations, call depth, expression depth, string, array and map sizes;
//! no modules (`import` is refused), no `eval`; `print`/`debug` go to the log, rate-limited.
//! Every run has a memory and a time budget ([`budget`]). A run starts on the async worker
//! that has the event, and moves to a bounded pool of blocking threads ([`pool`]) once it has
//! run there for its allowance (`[scripts] inline_allowance`, [`Budgets::inline_allowance`]);
//! a script that did so [`budget::INLINE_MISSES`] times in a row runs only on the pool from
//! then on. Rhai itself has no file or network access. Scripts are compiled once per load and
//! never per event.

pub mod budget;
pub mod native;
pub mod pool;

pub use budget::Budgets;
pub use pool::ScriptPool;

use super::reads::Reads;
use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Scope};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Operations one call may run before it is stopped.
pub const MAX_OPERATIONS: u64 = 200_000;

/// The sandboxed engine every script runs in, stopping each run at `budgets`.
pub fn sandboxed_engine(budgets: Budgets) -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(MAX_OPERATIONS);
    e.set_max_call_levels(32);
    e.set_max_expr_depths(64, 32);
    e.set_max_string_size(256 * 1024);
    e.set_max_array_size(10_000);
    e.set_max_map_size(10_000);
    e.set_max_modules(0);
    e.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    e.disable_symbol("eval");
    e.on_progress(budget::progress(budgets));
    let limit = Arc::new(budget::PrintLimit::new());
    let l = limit.clone();
    e.on_print(move |s| {
        budget::say(&l, budget::Said::Print(s.to_string()));
    });
    e.on_debug(move |s, src, pos| {
        let said = budget::Said::Debug { line: s.to_string(), source: src.map(str::to_string), pos: pos.to_string() };
        budget::say(&limit, said);
    });
    e
}

/// A compiled plugin file.
pub struct Script {
    /// As written in the route (relative to the config directory).
    pub path: PathBuf,
    /// SHA-256 of the source, hex.
    pub digest: String,
    ast: AST,
    /// What `fn filter` reads of the event (converted for each call instead of all of it).
    filter_reads: Reads,
    /// `fn filter`'s body as a native condition, when it is one ([`native`]).
    native_filter: Option<native::Native>,
    has_filter: bool,
    has_transform: bool,
    /// Its runs in a row that went past the inline allowance on an async worker; at
    /// [`budget::INLINE_MISSES`] it runs only on the script pool (a reload compiles it afresh).
    inline_misses: AtomicU32,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A script failed on an event: the event is dead-lettered with reason `script_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ScriptError {
    /// The plugin file.
    pub path: String,
    /// Rhai's message, with the script position.
    pub message: String,
}

/// Why a script does not compile, and where in its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// Where in the script's text.
    pub at: Position,
    /// What is wrong.
    pub message: String,
}

/// A place in a script's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A 1-based line and column as Rhai reports them (0 when unknown).
    LineCol(usize, usize),
    /// A byte offset.
    Offset(usize),
    /// Nowhere in particular: the script as a whole.
    Whole,
}

/// Which entry point a route calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// `fn filter(event)`.
    Filter,
    /// `fn transform(event)`.
    Transform,
}

impl EntryPoint {
    fn name(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Transform => "transform",
        }
    }
}

impl Script {
    /// Compiles `text` (from `shown`, for messages).
    pub fn compile(engine: &Engine, shown: &Path, text: &str) -> Result<Self, CompileError> {
        let ast = engine.compile(text).map_err(|e| {
            let pos = e.position();
            CompileError {
                at: Position::LineCol(pos.line().unwrap_or(0), pos.position().unwrap_or(0)),
                message: format!("script does not compile: {}", e.err_type()),
            }
        })?;
        let arity = |name: &str| ast.iter_functions().find(|f| f.name == name).map(|f| f.params.len());
        let check = |name: &str| match arity(name) {
            None => Ok(false),
            Some(1) => Ok(true),
            Some(n) => {
                let msg = format!("`fn {name}` must take one parameter (the event), not {n}");
                Err(CompileError {
                    at: fn_name_offset(text, name).map_or(Position::Whole, Position::Offset),
                    message: msg,
                })
            }
        };
        let has_filter = check("filter")?;
        let has_transform = check("transform")?;
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        };
        let filter_reads = if has_filter { Reads::of(&ast, "filter") } else { Reads::Whole };
        let native_filter = if has_filter { native::Native::of(&ast, "filter") } else { None };
        let inline_misses = AtomicU32::new(0);
        Ok(Self {
            path: shown.to_path_buf(),
            digest,
            ast,
            filter_reads,
            native_filter,
            has_filter,
            has_transform,
            inline_misses,
        })
    }

    /// Whether its runs start on the async worker ([`budget::run_inline`]): until
    /// [`budget::INLINE_MISSES`] runs in a row went past the allowance there.
    pub fn runs_inline(&self) -> bool {
        self.inline_misses.load(Ordering::Relaxed) < budget::INLINE_MISSES
    }

    /// A run went past the allowance on the async worker; true when that makes it run only on
    /// the script pool from now on.
    pub fn missed_inline(&self) -> bool {
        self.inline_misses.fetch_add(1, Ordering::Relaxed) + 1 == budget::INLINE_MISSES
    }

    /// A run ended within the allowance on the async worker: the misses in a row start again.
    pub fn ran_inline(&self) {
        if self.inline_misses.load(Ordering::Relaxed) != 0 {
            self.inline_misses.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the plugin defines the entry point.
    pub fn defines(&self, entry: EntryPoint) -> bool {
        match entry {
            EntryPoint::Filter => self.has_filter,
            EntryPoint::Transform => self.has_transform,
        }
    }

    /// Runs `entry`; the caller holds the run's [`budget::RunGuard`].
    fn call(&self, engine: &Engine, entry: EntryPoint, event: Dynamic) -> Result<Dynamic, ScriptError> {
        let mut scope = Scope::new();
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        engine
            .call_fn_with_options::<Dynamic>(options, &mut scope, &self.ast, entry.name(), (event,))
            .map_err(|e| self.error(&e))
    }

    fn error(&self, e: &EvalAltResult) -> ScriptError {
        // A run stopped by its budget: the budget's own message, where the script was.
        let mut inner = e;
        while let EvalAltResult::ErrorInFunctionCall(_, _, next, _) = inner {
            inner = next;
        }
        let message = match inner {
            EvalAltResult::ErrorTerminated(why, pos) if pos.is_none() => format!("stopped {why}"),
            EvalAltResult::ErrorTerminated(why, pos) => format!("stopped {why} (at {pos})"),
            _ => e.to_string(),
        };
        ScriptError { path: self.path.display().to_string(), message }
    }

    /// Runs `fn filter(event)`: true keeps the event.
    pub fn filter(&self, engine: &Engine, event: &Value) -> Result<bool, ScriptError> {
        let _run = budget::RunGuard::start();
        let out = self.call(engine, EntryPoint::Filter, self.filter_reads.dynamic(event))?;
        out.as_bool().map_err(|ty| ScriptError {
            path: self.path.display().to_string(),
            message: format!("filter must return a bool, not {ty}"),
        })
    }

    /// Whether `fn filter` reads the event as a whole (then it needs the event as one map).
    pub fn filter_reads_whole(&self) -> bool {
        self.filter_reads == Reads::Whole
    }

    /// Whether `fn filter`'s body is one condition decided natively where Rhai's answer is
    /// plain ([`native`]): one expression of comparisons, whose run in Rhai, when it comes to
    /// that, is bounded by the event's size (no loop, no call).
    pub fn filter_is_native(&self) -> bool {
        self.native_filter.is_some()
    }

    /// [`Script::filter`] on a decoded event, converting only what the filter reads of it;
    /// decided natively when the body is a native condition and Rhai's answer is plain.
    pub fn filter_event(&self, engine: &Engine, event: &crate::event::CloudEvent) -> Result<bool, ScriptError> {
        if let Some(keep) = self.native_filter.as_ref().and_then(|n| n.decide(event)) {
            return Ok(keep);
        }
        let _run = budget::RunGuard::start();
        let out = self.call(engine, EntryPoint::Filter, self.filter_reads.dynamic_of_event(event))?;
        out.as_bool().map_err(|ty| ScriptError {
            path: self.path.display().to_string(),
            message: format!("filter must return a bool, not {ty}"),
        })
    }

    /// Runs `fn transform(event)` and returns the event it gives back.
    pub fn transform(&self, engine: &Engine, event: &Value) -> Result<Value, ScriptError> {
        let _run = budget::RunGuard::start();
        let out = self.call(engine, EntryPoint::Transform, dynamic_of(event))?;
        if !out.is_map() {
            return Err(ScriptError {
                path: self.path.display().to_string(),
                message: format!("transform must return the event (a map), not {}", out.type_name()),
            });
        }
        match json_of(&out) {
            Some(v) => Ok(v),
            // Something JSON has no direct form for (a blob, a timestamp, a function pointer, a
            // shared value...): rhai's own conversion decides, with its own errors.
            None => rhai::serde::from_dynamic::<Value>(&out).map_err(|e| self.error(&e)),
        }
    }
}

/// `value` as Rhai sees it, converted directly: the same result as `rhai::serde::to_dynamic`
/// (integers that fit an `i64` are integers, other numbers floats; `null` is `()`; objects are
/// maps), without going through serde's data model.
pub fn dynamic_of(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => Dynamic::from_array(a.iter().map(dynamic_of).collect()),
        Value::Object(m) => Dynamic::from_map(m.iter().map(|(k, v)| (k.as_str().into(), dynamic_of(v))).collect()),
    }
}

/// [`dynamic_of`] for a node of a decoded event's `data`: the same result as for its value.
pub fn dynamic_of_data(data: crate::event::DataRef<'_>) -> Dynamic {
    use crate::event::data::Node;
    match data.node() {
        Node::Null => Dynamic::UNIT,
        Node::Bool(b) => Dynamic::from_bool(*b),
        Node::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Node::Str(_) => data.as_str().unwrap_or_default().into(),
        Node::Array(_) => Dynamic::from_array(data.elements().map(dynamic_of_data).collect()),
        Node::Object(_) => Dynamic::from_map(data.members().map(|(k, v)| (k.into(), dynamic_of_data(v))).collect()),
    }
}

/// A script's result as JSON, converted directly: the same result as
/// `rhai::serde::from_dynamic::<Value>` for units, booleans, integers, floats, strings,
/// characters, arrays and maps; `None` when `value` holds anything else (then rhai's own
/// conversion, and its errors, apply).
pub fn json_of(value: &Dynamic) -> Option<Value> {
    if value.is_shared() {
        return None;
    }
    if value.is_unit() {
        return Some(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Some(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Some(Value::Number(i.into()));
    }
    if let Ok(f) = value.as_float() {
        return Some(serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number));
    }
    if let Ok(c) = value.as_char() {
        return Some(Value::String(c.to_string()));
    }
    if let Some(s) = value.read_lock::<rhai::ImmutableString>() {
        return Some(Value::String(s.as_str().to_string()));
    }
    if let Some(a) = value.read_lock::<rhai::Array>() {
        return a.iter().map(json_of).collect::<Option<Vec<_>>>().map(Value::Array);
    }
    if let Some(m) = value.read_lock::<rhai::Map>() {
        let mut out = serde_json::Map::with_capacity(m.len());
        for (k, v) in m.iter() {
            out.insert(k.to_string(), json_of(v)?);
        }
        return Some(Value::Object(out));
    }
    None
}

/// Where `fn <name>` is defined in a script that compiled: the offset of the name. Rhai's AST
/// keeps no position for a function, so the source is scanned for the `fn` keyword, skipping
/// comments (`//`, nested `/* */`), strings (`"…"`, `` `…` ``) and characters (`'…'`).
fn fn_name_offset(text: &str, name: &str) -> Option<usize> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            q @ (b'"' | b'`' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'f' if b[i..].starts_with(b"fn")
                && (i == 0 || !word(b[i - 1]))
                && b.get(i + 2).is_some_and(|c| !word(*c)) =>
            {
                let mut j = i + 2;
                while b.get(j).is_some_and(u8::is_ascii_whitespace) {
                    j += 1;
                }
                let end = j + name.len();
                if b.get(j..end) == Some(name.as_bytes()) && b.get(end).is_none_or(|c| !word(*c)) {
                    return Some(j);
                }
                i = j;
            }
            c if word(c) => {
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The engine shared by all scripts of a snapshot.
pub type SharedEngine = Arc<Engine>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(text: &str) -> Result<Script, CompileError> {
        Script::compile(&sandboxed_engine(Budgets::default()), Path::new("plugins/t.rhai"), text)
    }

    #[test]
    fn filter_and_transform() {
        let e = sandboxed_engine(Budgets::default());
        let s = compile(
            "fn filter(event) { event.data.total > 100 }\n\
             fn transform(event) { event.data.remove(\"email\"); event.data.vip = true; event }",
        )
        .unwrap();
        assert!(s.defines(EntryPoint::Filter) && s.defines(EntryPoint::Transform));
        let ev = json!({"type": "order.paid", "data": {"total": 150, "email": "a@b.c"}});
        assert!(s.filter(&e, &ev).unwrap());
        assert!(!s.filter(&e, &json!({"data": {"total": 5}})).unwrap());
        assert_eq!(s.transform(&e, &ev).unwrap()["data"], json!({"total": 150, "vip": true}));
    }

    #[test]
    fn compile_errors_have_positions() {
        let err = compile("fn filter(event) {\n  event.data. \n}").unwrap_err();
        assert!(matches!(err.at, Position::LineCol(line, _) if line >= 2), "{err:?}");
        let err = compile("fn filter(a, b) { true }").unwrap_err();
        assert!(err.message.contains("one parameter"), "{err}");
        assert_eq!(err.at, Position::Offset(3), "at `filter`");
        let text = "// fn transform(x, y) in a comment\n/* and fn transform(z) /* nested */ here */\n\
                    let s = \"fn transform\";\nfn filter(e) { true }\nprivate fn  transform(a, b) { a }\n";
        let err = compile(text).unwrap_err();
        assert_eq!(err.at, Position::Offset(text.rfind("transform(a").unwrap()), "{err}");
    }

    #[test]
    fn runaway_scripts_are_stopped() {
        let e = sandboxed_engine(Budgets::default());
        let s = compile("fn filter(event) { loop { } }").unwrap();
        let err = s.filter(&e, &json!({})).unwrap_err();
        assert!(err.message.to_lowercase().contains("operations"), "{err}");
    }

    #[test]
    fn sandbox_refuses_import_and_eval() {
        let e = sandboxed_engine(Budgets::default());
        let s = compile("fn filter(event) { import \"x\" as x; true }");
        if let Ok(s) = s {
            assert!(s.filter(&e, &json!({})).is_err());
        }
        assert!(compile("fn filter(event) { eval(\"true\") }").is_err());
    }

    #[test]
    fn direct_conversions_agree_with_rhai_serde() {
        let v = json!({
            "s": "text", "n": null, "t": true, "i": -3, "u": 7, "big": 18446744073709551615u64,
            "f": 2.5, "a": [1, "x", [], {}, null], "m": {"z": 1, "a": {"k": [0.5]}},
        });
        let direct = dynamic_of(&v);
        let serde = rhai::serde::to_dynamic(&v).unwrap();
        assert_eq!(format!("{direct:?}"), format!("{serde:?}"));
        assert_eq!(json_of(&direct).unwrap(), rhai::serde::from_dynamic::<Value>(&serde).unwrap());

        let e = sandboxed_engine(Budgets::default());
        let s = compile(
            "fn transform(event) { event.data.c = 'c'; event.data.nan = 0.0 / 0.0; event.data.half = 1.0 / 2.0; \
             event.data.list = [1, 2.0, (), true]; event }",
        )
        .unwrap();
        let out = s.transform(&e, &json!({"data": {"z": 1}})).unwrap();
        let via_serde: Value = {
            let d =
                s.call(&e, EntryPoint::Transform, rhai::serde::to_dynamic(json!({"data": {"z": 1}})).unwrap()).unwrap();
            rhai::serde::from_dynamic(&d).unwrap()
        };
        assert_eq!(out, via_serde);
        assert_eq!(out["data"]["c"], "c");
        assert_eq!(serde_json::to_string(&out).unwrap(), serde_json::to_string(&via_serde).unwrap(), "same order");
    }

    #[test]
    fn what_json_cannot_hold_goes_through_rhai_serde() {
        let e = sandboxed_engine(Budgets::default());
        let s = compile("fn transform(event) { event.data.f = Fn(\"x\"); event }").unwrap();
        assert!(json_of(&s.call(&e, EntryPoint::Transform, dynamic_of(&json!({"data": {}}))).unwrap()).is_none());
        assert!(s.transform(&e, &json!({"data": {}})).is_err(), "a function pointer is not JSON");
    }

    #[test]
    fn wrong_return_types_are_script_errors() {
        let e = sandboxed_engine(Budgets::default());
        let s = compile("fn filter(event) { 1 }\nfn transform(event) { 2 }").unwrap();
        assert!(s.filter(&e, &json!({})).unwrap_err().message.contains("bool"));
        assert!(s.transform(&e, &json!({})).unwrap_err().message.contains("map"));
    }

    fn budgets(max_memory_bytes: usize, max_time_ms: u64) -> Budgets {
        Budgets { max_memory_bytes, max_time: std::time::Duration::from_millis(max_time_ms), ..Budgets::default() }
    }

    /// Regression (issue 13): many values, each under Rhai's per-value limits, and values Rhai
    /// does not count (closures, curried function pointers, map keys) add up to far more than
    /// any limit; the run is charged for all of it.
    #[test]
    fn a_run_is_stopped_at_its_memory_budget_whatever_holds_the_memory() {
        let e = sandboxed_engine(budgets(8 << 20, 60_000));
        let big = "let s = \"0123456789abcdef\"; for k in 0..13 { s += s; }"; // 128 KiB
        for body in [
            "let a = []; for i in 0..2000 { let t = s + i; a.push(|| t); }",
            "let a = []; for i in 0..2000 { a.push(Fn(\"g\").curry(s + i)); }",
            "let m = #{}; for i in 0..2000 { m[s + i] = i; }",
            "r(28, s);",
        ] {
            let text = format!(
                "fn g(x) {{ x }}\nfn r(n, s) {{ let a = s + n; let b = s + (n + 100); let c = s + (n + 200); \
                 if n > 0 {{ r(n - 1, s) }} else {{ 0 }} }}\nfn filter(event) {{ {big} {body} true }}"
            );
            let s = compile(&text).unwrap();
            let err = s.filter(&e, &json!({})).expect_err(body);
            assert!(err.message.contains("memory budget") && err.message.contains("max_memory_bytes"), "{body}: {err}");
        }
    }

    /// A run on the async worker past its allowance ([`budget::INLINE_ALLOWANCE`] by default)
    /// is stopped and reported as moved (its result dropped); a quick one gives its result; the
    /// same long run elsewhere, or inline with a larger allowance, runs to its end.
    #[test]
    fn an_inline_run_past_its_allowance_is_dropped_and_a_quick_one_kept() {
        let e = sandboxed_engine(budgets(64 << 20, 60_000));
        let quick = compile("fn filter(event) { event.n > 1 }").unwrap();
        assert_eq!(budget::run_inline(budget::INLINE_ALLOWANCE, || quick.filter(&e, &json!({"n": 2}))), Some(Ok(true)));
        let long = compile(
            "fn filter(event) { let s = \"0123456789abcdef\"; for k in 0..12 { s += s; } \
             let n = 0; for i in 0..300 { n += s.to_upper().len(); } n > 0 }",
        )
        .unwrap();
        assert_eq!(budget::run_inline(budget::INLINE_ALLOWANCE, || long.filter(&e, &json!({}))), None);
        assert_eq!(long.filter(&e, &json!({})), Ok(true));
        // A larger allowance (`[scripts] inline_allowance`) keeps the same run where it started.
        let minute = std::time::Duration::from_secs(60);
        assert_eq!(budget::run_inline(minute, || long.filter(&e, &json!({}))), Some(Ok(true)));
        assert_eq!(
            budget::run_inline(budget::INLINE_ALLOWANCE, || quick.filter(&e, &json!({"n": 0}))),
            Some(Ok(false)),
            "the next run is its own"
        );
    }

    #[test]
    fn a_run_within_its_budgets_is_untouched_and_its_memory_is_its_own() {
        let e = sandboxed_engine(budgets(8 << 20, 60_000));
        let s = compile("fn filter(event) { let s = \"0123456789abcdef\"; for k in 0..13 { s += s; } s.len() > 0 }")
            .unwrap();
        // Each run starts from zero: 100 runs of 128 KiB each stay within 8 MiB.
        for _ in 0..100 {
            assert!(s.filter(&e, &json!({})).unwrap());
        }
    }

    /// Regression (issue 13): the operation limit does not bound time; a loop over a costly
    /// built-in ran for seconds.
    #[test]
    fn a_run_is_stopped_at_its_time_budget() {
        let e = sandboxed_engine(budgets(64 << 20, 50));
        let s = compile(
            "fn filter(event) { let s = \"0123456789abcdef\"; for k in 0..14 { s += s; } \
             loop { let t = s.to_upper(); t.replace(\"A\", \"b\"); } }",
        )
        .unwrap();
        let err = s.filter(&e, &json!({})).unwrap_err();
        assert!(err.message.contains("time budget") && err.message.contains("max_time"), "{err}");
        assert!(err.to_string().starts_with("plugins/t.rhai: stopped over its time budget"), "{err}");
    }

    #[test]
    fn print_and_debug_are_rate_limited_per_run() {
        let limit = Arc::new(budget::PrintLimit::new());
        let _run = budget::RunGuard::start();
        let admitted = (0..100).filter(|_| budget::say(&limit, budget::Said::Print("line".into()))).count();
        assert_eq!(admitted, budget::PRINT_LINES_PER_RUN as usize);
        let long = "é".repeat(budget::PRINT_LINE_BYTES);
        assert!(budget::cut(&long).len() <= budget::PRINT_LINE_BYTES);
    }
}
