//! The native condition against Rhai: which bodies compile, and the same answer (or Rhai's
//! own, errors included) on every event.

use super::super::{Budgets, EntryPoint, Script, ScriptError, sandboxed_engine};
use crate::event::CloudEvent;
use rhai::Engine;
use serde_json::{Value, json};
use std::path::Path;

fn script(engine: &Engine, body: &str) -> Script {
    Script::compile(engine, Path::new("filter.rhai"), body).unwrap_or_else(|e| panic!("{body}: {e}"))
}

/// The filter run in Rhai alone, as it ran before native conditions.
fn in_rhai(s: &Script, engine: &Engine, event: &CloudEvent) -> Result<bool, ScriptError> {
    let out = s.call(engine, EntryPoint::Filter, s.filter_reads.dynamic_of_event(event))?;
    out.as_bool().map_err(|ty| ScriptError {
        path: s.path.display().to_string(),
        message: format!("filter must return a bool, not {ty}"),
    })
}

fn event(data: Option<Value>, extra: Value) -> CloudEvent {
    let mut e = json!({"specversion": "1.0", "id": "e-1", "source": "/shop", "type": "order.created"});
    if let Some(d) = data {
        e["data"] = d;
    }
    for (k, v) in extra.as_object().unwrap() {
        e[k.as_str()] = v.clone();
    }
    CloudEvent::decode(&serde_json::to_vec(&e).unwrap()).unwrap()
}

fn events() -> Vec<CloudEvent> {
    vec![
        event(
            Some(json!({"total": 5, "currency": "BRL", "vip": true, "name": "Ana", "n": {"x": 1, "len": 2},
                         "f": 2.5, "big": 18446744073709551615u64, "nul": null, "arr": [1], "esc": "a\"b"})),
            json!({"subject": "a", "tenant": "acme", "sequence": 7}),
        ),
        event(Some(json!({"total": -5, "currency": "XXX", "vip": false, "name": "Bia"})), json!({"subject": "b"})),
        event(Some(json!({"total": "5", "currency": 3, "vip": "yes", "name": ["Ana"], "n": "x"})), json!({})),
        event(Some(json!("text")), json!({"sequence": "7"})),
        event(Some(json!([1, 2])), json!({})),
        event(None, json!({})),
    ]
}

const NATIVE: &[&str] = &[
    "fn filter(event) { event.data.total >= 0 && event.data.currency != \"XXX\" }",
    "fn filter(event) { event.data.total > 3 || event.subject == \"a\" }",
    "fn filter(event) { !event.data.vip }",
    "fn filter(event) { !(event.data.total < 0) }",
    "fn filter(event) { event.data.vip }",
    "fn filter(event) { event.data.vip == true }",
    "fn filter(event) { event.data.vip > false }",
    "fn filter(event) { event.data.name < \"B\" }",
    "fn filter(event) { \"B\" <= event.data.name }",
    "fn filter(event) { event.data.name >= \"Ana\" && event.data.name != \"Bia\" }",
    "fn filter(event) { event.data.esc == \"a\\\"b\" }",
    "fn filter(event) { event.data.total == event.data.total }",
    "fn filter(event) { event.data.n.x == 1 }",
    "fn filter(event) { event.data.n.len == 2 }",
    "fn filter(event) { event.data.n.y == 1 }",
    "fn filter(event) { event.data.name.x == 1 }",
    "fn filter(event) { event.data.f > 2 }",
    "fn filter(event) { event.data.big > 0 }",
    "fn filter(event) { event.data.nul == 1 }",
    "fn filter(event) { event.data.arr == 1 }",
    "fn filter(event) { event.data.total != \"5\" }",
    "fn filter(event) { event.data.total == \"5\" }",
    "fn filter(event) { event.tenant == \"acme\" && event.type == \"order.created\" }",
    "fn filter(event) { event.sequence > 3 }",
    "fn filter(event) { event.nothing.x == 1 }",
    "fn filter(e) { return e.data.total >= -1 && e.data.total <= 10 && e.data.currency != \"XXX\"; }",
    "fn filter(event) { event.data.total > 0 || event.data.total < 0 || event.data.total == 0 }",
    "fn filter(event) { true }",
    "fn filter(event) { event.data.total }",
    "fn filter(event) { event.data.total > 1 + 2 }",
    "fn filter(event) { event.data.vip && event.data.total > 0 }",
    "const LIMIT = 3;\nfn filter(event) { event.data.total > 3 }\nfn transform(event) { event }",
];

const NOT_NATIVE: &[&str] = &[
    "fn filter(event) { let t = event.data.total; t > 0 }",
    "fn filter(event) { event.data.total > 0.5 }",
    "fn filter(event) { event.data?.total > 0 }",
    "fn filter(event) { event.data.arr[0] == 1 }",
    "fn filter(event) { event.data.name.len() > 2 }",
    "fn filter(event) { \"x\" in event.data }",
    "fn filter(event) { (event.data.total > 0) == true }",
    "fn filter(event) { event.data.nul == () }",
    "fn filter(event) { check(event) }\nfn check(e) { true }",
    "fn filter(event) { if event.data.total > 0 { true } else { false } }",
    "fn filter(event) { throw \"no\"; }",
    "fn filter(event) { event.data.total > 0; true }",
    "fn filter(event) { event[\"data\"].total > 0 }",
    "fn filter(event) { event.data.total > LIMIT }",
];

#[test]
fn plain_bodies_compile_and_others_stay_in_rhai() {
    let engine = sandboxed_engine(Budgets::default());
    for body in NATIVE {
        assert!(script(&engine, body).filter_is_native(), "should be native: {body}");
    }
    for body in NOT_NATIVE {
        assert!(!script(&engine, body).filter_is_native(), "should stay in Rhai: {body}");
    }
}

#[test]
fn every_answer_is_rhais_and_plain_ones_are_decided_natively() {
    let engine = sandboxed_engine(Budgets::default());
    let events = events();
    let mut decided = 0;
    for body in NATIVE.iter().chain(NOT_NATIVE) {
        let s = script(&engine, body);
        for (i, ev) in events.iter().enumerate() {
            let native = s.native_filter.as_ref().and_then(|n| n.decide(ev));
            let rhai = in_rhai(&s, &engine, ev);
            if let Some(keep) = native {
                assert_eq!(Ok(keep), rhai, "{body} on event {i}");
                decided += 1;
            }
            assert_eq!(s.filter_event(&engine, ev), rhai, "{body} on event {i}");
        }
    }
    // Each of these is decided without Rhai on the first event, the realistic one.
    for body in &NATIVE[..14] {
        let s = script(&engine, body);
        assert!(s.native_filter.as_ref().unwrap().decide(&events[0]).is_some(), "{body}");
    }
    assert!(decided >= 40, "only {decided} answers decided natively");
}

#[test]
fn what_rhai_decides_differently_is_left_to_it() {
    let engine = sandboxed_engine(Budgets::default());
    let ev = &events()[0];
    let cases = [
        // A float, an integer past i64 (a float in Rhai), null, an array: Rhai's rules.
        ("fn filter(event) { event.data.f > 2 }", Ok(true)),
        ("fn filter(event) { event.data.big > 0 }", Ok(true)),
        // A missing property is `()`, and a comparison with it is Rhai's to make.
        ("fn filter(event) { event.data.n.y == 1 }", Ok(false)),
        ("fn filter(event) { event.data.total }", Err("filter must return a bool, not i64")),
    ];
    for (body, want) in cases {
        let s = script(&engine, body);
        assert_eq!(s.native_filter.as_ref().unwrap().decide(ev), None, "{body}");
        let got = s.filter_event(&engine, ev).map_err(|e| e.message);
        assert_eq!(got, want.map_err(str::to_string), "{body}");
    }
}
