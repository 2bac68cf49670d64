//! Figures across repetitions, the table, the targets and the JSON file.
//!
//! Every measure is recorded once per repetition under a stable key (`rabbitmq.unordered.1k.rate`)
//! and shown as the median. A measure compared with a ceiling shows the median of the
//! per-repetition ratios, each taken against the ceiling measured in the same repetition, so
//! that the machine's load at that moment weighs on both sides alike.

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// How a figure is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Events, deliveries or requests per second.
    PerSec,
    /// Microseconds (CPU per event).
    Micros,
    /// Milliseconds (latency).
    Millis,
    /// Seconds (start-up).
    Secs,
    /// Mebibytes (resident memory).
    MiB,
    /// Kibibytes (resident memory per event).
    KiB,
    /// A plain count.
    Count,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::PerSec => "per_s",
            Unit::Micros => "us",
            Unit::Millis => "ms",
            Unit::Secs => "s",
            Unit::MiB => "MiB",
            Unit::KiB => "KiB",
            Unit::Count => "count",
        }
    }

    fn show(self, v: f64) -> String {
        if v.is_nan() {
            return "—".into();
        }
        match self {
            Unit::PerSec => format!("{}/s", thousands(v)),
            Unit::Micros => format!("{v:.1} µs"),
            Unit::Millis => format!("{v:.2} ms"),
            Unit::Secs => format!("{v:.1} s"),
            Unit::MiB => format!("{v:.1} MiB"),
            Unit::KiB => format!("{v:.1} KiB"),
            Unit::Count => thousands(v),
        }
    }
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// The median; NaN for no values.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// How a row compares.
#[derive(Debug, Clone)]
pub(crate) enum Versus {
    /// Nothing beside the figure.
    Nothing,
    /// `value / ceiling`, the ceiling being another key.
    Ratio(String),
    /// `value − baseline` (added latency), the baseline being another key.
    Minus(String),
}

/// One line of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) key: String,
    pub(crate) label: String,
    pub(crate) unit: Unit,
    pub(crate) versus: Versus,
}

/// How a target bounds its figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    AtLeast,
    AtMost,
    Below,
}

impl Bound {
    fn op(self) -> &'static str {
        match self {
            Bound::AtLeast => "≥",
            Bound::AtMost => "≤",
            Bound::Below => "<",
        }
    }

    fn met(self, v: f64, bound: f64) -> bool {
        match self {
            Bound::AtLeast => v >= bound,
            Bound::AtMost => v <= bound,
            Bound::Below => v < bound,
        }
    }
}

/// One target of the issue: a figure, a bound, and whether it is met.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) key: String,
    /// Compare the row's comparison (ratio or difference: true) or its figure (false).
    pub(crate) on_compared: bool,
    pub(crate) bound: Bound,
    pub(crate) limit: f64,
}

/// Everything one invocation measured.
#[derive(Debug, Default)]
pub(crate) struct Report {
    values: BTreeMap<String, Vec<Option<f64>>>,
    notes: BTreeMap<String, String>,
    groups: Vec<(String, Vec<Row>)>,
    rep: usize,
}

impl Report {
    /// Starts repetition `rep` (0-based).
    pub(crate) fn repetition(&mut self, rep: usize) {
        self.rep = rep;
    }

    /// Records `value` for `key` in the current repetition.
    pub(crate) fn record(&mut self, key: impl Into<String>, value: f64) {
        let v = self.values.entry(key.into()).or_default();
        v.resize(self.rep + 1, None);
        v[self.rep] = Some(value);
    }

    /// A note shown instead of (or beside) a group's figures, e.g. why a run failed.
    pub(crate) fn note(&mut self, group: &str, text: impl Into<String>) {
        let text = text.into();
        eprintln!("note [{group}]: {text}");
        self.notes.entry(group.to_string()).or_insert(text);
    }

    /// Declares a row of `group` (groups and rows are shown in the order first declared).
    pub(crate) fn row(
        &mut self,
        group: &str,
        key: impl Into<String>,
        label: impl Into<String>,
        unit: Unit,
        versus: Versus,
    ) {
        let row = Row { key: key.into(), label: label.into(), unit, versus };
        match self.groups.iter_mut().find(|(g, _)| g == group) {
            Some((_, rows)) => {
                if !rows.iter().any(|r| r.key == row.key) {
                    rows.push(row);
                }
            }
            None => self.groups.push((group.to_string(), vec![row])),
        }
    }

    fn series(&self, key: &str) -> Vec<f64> {
        self.values.get(key).map(|v| v.iter().map(|x| x.unwrap_or(f64::NAN)).collect()).unwrap_or_default()
    }

    /// The median of `key` over the repetitions.
    pub(crate) fn median(&self, key: &str) -> f64 {
        median(&self.series(key))
    }

    /// The value of `key` in the current repetition, if measured.
    pub(crate) fn current(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(|v| v.get(self.rep).copied().flatten())
    }

    fn paired(&self, key: &str, other: &str, f: impl Fn(f64, f64) -> f64) -> f64 {
        let (a, b) = (self.series(key), self.series(other));
        median(&a.iter().zip(&b).map(|(x, y)| f(*x, *y)).collect::<Vec<_>>())
    }

    fn compared(&self, row: &Row) -> Option<f64> {
        match &row.versus {
            Versus::Nothing => None,
            Versus::Ratio(c) => Some(self.paired(&row.key, c, |x, y| x / y)),
            Versus::Minus(c) => Some(self.paired(&row.key, c, |x, y| x - y)),
        }
    }

    fn label_of(&self, key: &str) -> String {
        self.groups.iter().flat_map(|(_, r)| r).find(|r| r.key == key).map_or(key.to_string(), |r| r.label.clone())
    }

    fn target_value(&self, t: &Target) -> f64 {
        if !t.on_compared {
            return self.median(&t.key);
        }
        self.groups
            .iter()
            .flat_map(|(_, r)| r)
            .find(|r| r.key == t.key)
            .and_then(|r| self.compared(r))
            .unwrap_or(f64::NAN)
    }

    /// The table, then the targets.
    pub(crate) fn print(&self, title: &str, targets: &[Target]) {
        println!("\n{title}");
        println!("{:<58} {:>14}   against its ceiling (median of per-run figures)", "measure", "median");
        for (group, rows) in &self.groups {
            if !self.notes.contains_key(group) && rows.iter().all(|r| self.median(&r.key).is_nan()) {
                continue;
            }
            println!("\n{group}");
            if let Some(n) = self.notes.get(group) {
                println!("  ({n})");
            }
            for row in rows {
                let m = self.median(&row.key);
                if m.is_nan() {
                    // Not measured in this invocation (group left out, or the step failed: the
                    // group's note says so).
                    continue;
                }
                let versus = match (&row.versus, self.compared(row)) {
                    (Versus::Ratio(c), Some(r)) if !r.is_nan() => format!("{r:>5.2} × {}", self.label_of(c)),
                    (Versus::Minus(c), Some(d)) if !d.is_nan() => {
                        format!("{} over {}", row.unit.show(d), self.label_of(c))
                    }
                    _ => String::new(),
                };
                println!("  {:<56} {:>14}   {versus}", row.label, row.unit.show(m));
            }
        }
        if !targets.is_empty() {
            println!("\ntargets (issue #7; figures, not tests)");
            for t in targets {
                let v = self.target_value(t);
                let met = if v.is_nan() {
                    "not measured"
                } else if t.bound.met(v, t.limit) {
                    "met"
                } else {
                    "NOT met"
                };
                println!("  {:<62} {:>9.2} {} {:<6} {met}", t.name, v, t.bound.op(), t.limit);
            }
        }
    }

    /// The JSON written by `--json FILE`: every key with its median and per-run values, the
    /// comparisons, the targets and the notes.
    pub(crate) fn json(&self, meta: Value, targets: &[Target]) -> Value {
        let mut measures = serde_json::Map::new();
        for (group, rows) in &self.groups {
            for row in rows {
                let values: Vec<Value> = self
                    .series(&row.key)
                    .into_iter()
                    .map(|v| if v.is_nan() { Value::Null } else { json!(v) })
                    .collect();
                let (against, compared) = match (&row.versus, self.compared(row)) {
                    (Versus::Ratio(c), Some(r)) => (json!({"ratio_to": c}), json!(r)),
                    (Versus::Minus(c), Some(d)) => (json!({"minus": c}), json!(d)),
                    _ => (Value::Null, Value::Null),
                };
                let m = self.median(&row.key);
                measures.insert(
                    row.key.clone(),
                    json!({"group": group, "label": row.label, "unit": row.unit.name(),
                           "median": if m.is_nan() { Value::Null } else { json!(m) }, "values": values,
                           "against": against, "compared": if compared.as_f64().is_some_and(f64::is_nan) { Value::Null } else { compared }}),
                );
            }
        }
        let targets: Vec<Value> = targets
            .iter()
            .map(|t| {
                let v = self.target_value(t);
                json!({"name": t.name, "key": t.key, "on_compared": t.on_compared,
                       "bound": t.bound.op(), "limit": t.limit,
                       "value": if v.is_nan() { Value::Null } else { json!(v) },
                       "met": (!v.is_nan()).then(|| t.bound.met(v, t.limit))})
            })
            .collect();
        json!({"meta": meta, "measures": measures, "targets": targets, "notes": self.notes})
    }
}
