//! Unit tests of the declarative filter: every operator, missing paths, type mismatches,
//! nesting, and the load-time errors with their places.

use super::*;
use serde_json::json;

fn event() -> CloudEvent {
    CloudEvent::decode(
        &serde_json::to_vec(&json!({
            "specversion": "1.0", "id": "e-1", "source": "shop", "type": "order.paid",
            "subject": "f-1", "time": "2026-11-22T10:00:00Z", "sequence": 42, "tenantid": "acme",
            "data": {
                "total": 150, "price": 12.5, "big": 18446744073709551615u64, "neg": -3,
                "status": "paid", "vip": true, "note": null,
                "customer": {"email": "ana@example.com", "country": "BR"},
                "items": [{"sku": "A-1"}, {"sku": "B-2"}],
                "7": "seven"
            }
        }))
        .unwrap(),
    )
    .unwrap()
}

fn check(filter: Value) -> bool {
    let c = Condition::compile(&filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
    let ev = event();
    let matched = c.matches(&ev);
    assert_eq!(c.explain(&ev).is_ok(), matched, "explain agrees with matches for {filter}");
    matched
}

fn fails(filter: Value) -> String {
    Condition::compile(&filter).map(|_| ()).unwrap_err().to_string()
}

#[test]
fn eq_and_ne_on_strings_numbers_and_booleans() {
    assert!(check(json!({"path": "data.status", "eq": "paid"})));
    assert!(!check(json!({"path": "data.status", "eq": "Paid"})));
    assert!(check(json!({"path": "data.total", "eq": 150})));
    assert!(check(json!({"path": "data.total", "eq": 150.0})), "an integer equals the same float");
    assert!(check(json!({"path": "data.price", "eq": 12.5})));
    assert!(check(json!({"path": "data.vip", "eq": true})));
    assert!(!check(json!({"path": "data.vip", "eq": false})));
    assert!(check(json!({"path": "subject", "eq": "f-1"})));
    assert!(check(json!({"path": "type", "eq": "order.paid"})));
    assert!(check(json!({"path": "id", "eq": "e-1"})));
    assert!(check(json!({"path": "source", "eq": "shop"})));
    assert!(check(json!({"path": "specversion", "eq": "1.0"})));
    assert!(check(json!({"path": "sequence", "eq": 42})));
    assert!(check(json!({"path": "tenantid", "eq": "acme"})), "an extension attribute");
    assert!(check(json!({"path": "data.status", "ne": "refunded"})));
    assert!(!check(json!({"path": "data.status", "ne": "paid"})));
    assert!(check(json!({"path": "data.total", "ne": 151})));
    assert!(check(json!({"path": "data.vip", "ne": false})));
}

#[test]
fn ordering_operators_on_numbers_and_strings() {
    for (op, operand, want) in [
        ("gt", json!(149), true),
        ("gt", json!(150), false),
        ("gte", json!(150), true),
        ("gte", json!(150.5), false),
        ("lt", json!(150.5), true),
        ("lt", json!(150), false),
        ("lte", json!(150), true),
        ("lte", json!(149.99), false),
    ] {
        assert_eq!(check(json!({"path": "data.total", op: operand})), want, "total {op} {operand}");
    }
    assert!(check(json!({"path": "data.price", "gt": 12})));
    assert!(check(json!({"path": "data.neg", "lt": 0})));
    assert!(check(json!({"path": "data.neg", "gte": -3})));
    // Integers compare exactly, past what f64 holds.
    assert!(check(json!({"path": "data.big", "gt": 18446744073709551614u64})));
    assert!(check(json!({"path": "data.big", "gt": -1})));
    assert!(check(json!({"path": "data.neg", "lt": 18446744073709551615u64})));
    // Strings by code points: RFC 3339 times in UTC sort.
    assert!(check(json!({"path": "time", "gte": "2026-11-01T00:00:00Z"})));
    assert!(!check(json!({"path": "time", "lt": "2026-11-01T00:00:00Z"})));
    assert!(check(json!({"path": "data.status", "gt": "paa"})));
    // Several operators in one test: all must hold (a range).
    assert!(check(json!({"path": "data.total", "gte": 100, "lt": 200})));
    assert!(!check(json!({"path": "data.total", "gte": 100, "lt": 150})));
}

#[test]
fn in_exists_and_prefix() {
    assert!(check(json!({"path": "subject", "in": ["f-1", "f-2"]})));
    assert!(!check(json!({"path": "subject", "in": ["f-2", "f-3"]})));
    assert!(check(json!({"path": "data.total", "in": [1, 150, "x"]})));
    assert!(!check(json!({"path": "data.total", "in": ["150"]})), "a string is not the number");
    assert!(check(json!({"path": "data.vip", "in": [true]})));
    assert!(check(json!({"path": "data.customer.email", "exists": true})));
    assert!(check(json!({"path": "data.customer.phone", "exists": false})));
    assert!(!check(json!({"path": "data.customer.email", "exists": false})));
    assert!(check(json!({"path": "data.note", "exists": true})), "null exists");
    assert!(check(json!({"path": "dataversion", "exists": false})));
    assert!(check(json!({"path": "data.customer.email", "prefix": "ana@"})));
    assert!(!check(json!({"path": "data.customer.email", "prefix": "bob@"})));
    assert!(check(json!({"path": "type", "prefix": "order."})));
    assert!(check(json!({"path": "data.items.1.sku", "eq": "B-2"})), "a number indexes an array");
    assert!(check(json!({"path": "data.7", "eq": "seven"})), "and names an object's key");
    assert!(!check(json!({"path": "data.items.2.sku", "exists": true})));
}

#[test]
fn missing_paths_make_every_comparison_false() {
    for (op, operand) in [
        ("eq", json!("x")),
        ("ne", json!("x")),
        ("gt", json!(1)),
        ("gte", json!(1)),
        ("lt", json!(1)),
        ("lte", json!(1)),
        ("in", json!(["x"])),
        ("prefix", json!("x")),
        ("exists", json!(true)),
    ] {
        for path in ["data.missing", "data.total.deeper", "data.items.9", "dataversion", "nosuchext"] {
            assert!(!check(json!({"path": path, op: operand.clone()})), "{path} {op}");
        }
    }
    assert!(check(json!({"path": "data.missing", "exists": false})));
    let mut no_data = event();
    no_data.data = None;
    let c = Condition::compile(&json!({"path": "data.total", "exists": false})).unwrap();
    assert!(c.matches(&no_data));
}

#[test]
fn type_mismatches_are_false_not_errors() {
    for (path, op, operand) in [
        ("data.total", "eq", json!("150")),
        ("data.total", "ne", json!("150")),
        ("data.status", "gt", json!(1)),
        ("data.status", "lt", json!(1)),
        ("data.total", "gte", json!("1")),
        ("data.total", "prefix", json!("1")),
        ("data.vip", "eq", json!(1)),
        ("data.customer", "eq", json!("x")),
        ("data.items", "gte", json!(0)),
        ("data.note", "eq", json!("null")),
        ("data.note", "ne", json!(0)),
        ("subject", "gt", json!(0)),
        ("data.vip", "in", json!(["true", 1])),
    ] {
        assert!(!check(json!({"path": path, op: operand.clone()})), "{path} {op} {operand}");
    }
}

#[test]
fn combinators_nest() {
    let paid_big = json!({"all": [{"path": "data.total", "gte": 100}, {"path": "subject", "in": ["f-1", "f-2"]}]});
    assert!(check(paid_big.clone()));
    assert!(!check(json!({"not": paid_big})));
    assert!(check(json!({"any": [{"path": "data.total", "gt": 1000}, {"path": "data.vip", "eq": true}]})));
    assert!(!check(json!({"any": [{"path": "data.total", "gt": 1000}, {"path": "data.vip", "eq": false}]})));
    assert!(check(json!({"all": [
        {"any": [{"path": "subject", "eq": "x"}, {"not": {"path": "data.customer.country", "in": ["US", "CA"]}}]},
        {"not": {"not": {"path": "type", "prefix": "order."}}}
    ]})));
    let c = Condition::compile(
        &json!({"all": [{"path": "data.total", "gte": 100}, {"path": "subject", "in": ["f-1", "f-2"]}]}),
    )
    .unwrap();
    assert_eq!(c.to_string(), r#"all [data.total gte 100, subject in ["f-1", "f-2"]]"#);
}

#[test]
fn explain_names_the_test_that_failed_and_the_value_seen() {
    let c = Condition::compile(&json!({"all": [
        {"path": "subject", "in": ["f-1"]},
        {"path": "data.total", "gte": 100, "lt": 120}
    ]}))
    .unwrap();
    assert_eq!(c.explain(&event()).unwrap_err(), "`data.total lt 120` is false (data.total is 150)");
    let c = Condition::compile(&json!({"path": "data.coupon", "eq": "X"})).unwrap();
    assert_eq!(c.explain(&event()).unwrap_err(), r#"`data.coupon eq "X"` is false (data.coupon is missing)"#);
    let c = Condition::compile(&json!({"not": {"path": "subject", "eq": "f-1"}})).unwrap();
    assert_eq!(c.explain(&event()).unwrap_err(), r#"`not` of a test that holds: subject eq "f-1""#);
}

#[test]
fn load_errors_name_the_place_and_the_rule() {
    let cases = [
        (json!({"path": "data.total", "gtee": 1}), "filter.gtee: unknown operator `gtee`"),
        (json!({"all": [{"path": "data.total", "gte": 1}, {"path": "data..x", "eq": 1}]}), "filter.all[1].path: "),
        (json!({"path": "Data.total", "eq": 1}), "filter.path: \"Data.total\" does not start with"),
        (json!({"path": "subject.x", "eq": 1}), "only `data` has them"),
        (json!({"path": "data.*.x", "eq": 1}), "`*` is not supported"),
        (json!({"path": "data.total", "gte": true}), "filter.gte: `gte` takes a number, or a string"),
        (json!({"path": "data.total", "eq": [1]}), "filter.eq: `eq` takes a string, a number or a boolean"),
        (json!({"path": "data.total", "eq": null}), "use exists = false"),
        (json!({"path": "data.total", "in": [1, {"a": 1}]}), "filter.in[1]: `in` lists strings"),
        (json!({"path": "data.total", "in": []}), "filter.in: `in` takes a list of 1 to 1000"),
        (json!({"path": "data.total", "in": "x"}), "filter.in: `in` takes a list"),
        (json!({"path": "data.total", "exists": "yes"}), "filter.exists: `exists` takes true or false"),
        (json!({"path": "data.total", "prefix": 1}), "filter.prefix: `prefix` takes a string"),
        (json!({"path": 3, "eq": 1}), "filter.path: must be a string"),
        (json!({"path": "data.total"}), "has no operator"),
        (json!({"eq": 1}), "a test needs `path`"),
        (json!({"all": []}), "filter.all: `all` must list at least one test"),
        (json!({"any": {"path": "x", "eq": 1}}), "filter.any: `any` takes a list of tests"),
        (json!({"all": [{"path": "x", "eq": 1}], "path": "y"}), "exactly one of all, any, not"),
        (json!({"not": [1]}), "filter.not: must be a table"),
        (json!("x"), "filter: must be a table"),
    ];
    for (filter, want) in cases {
        let got = fails(filter.clone());
        assert!(got.contains(want), "{filter}: got {got:?}, want {want:?}");
    }
    let mut deep = json!({"path": "data.total", "eq": 1});
    for _ in 0..MAX_DEPTH {
        deep = json!({"not": deep});
    }
    assert!(fails(deep).contains("nest at most 16"));
    let many: Vec<Value> = (0..MAX_NODES).map(|_| json!({"path": "data.total", "eq": 1})).collect();
    assert!(fails(json!({"all": many})).contains("at most 256"));
}
