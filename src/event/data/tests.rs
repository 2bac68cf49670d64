use super::*;
use crate::event::CloudEvent;
use serde_json::json;

/// `data` decoded as part of an event whose text is `{"specversion":..., "data": <data>}`.
fn decoded(data: &str) -> Option<Data> {
    let raw = format!(r#"{{"specversion":"1.0","id":"e-1","source":"s","type":"t","data":{data}}}"#);
    CloudEvent::decode(raw.as_bytes()).expect("an event").data
}

fn owned_strings(node: &Node) -> usize {
    match node {
        Node::Str(Text::Owned(_)) => 1,
        Node::Array(items) => items.iter().map(owned_strings).sum(),
        Node::Object(members) => {
            members.iter().map(|(k, v)| usize::from(matches!(k, Text::Owned(_))) + owned_strings(v)).sum()
        }
        _ => 0,
    }
}

const SAMPLES: &[&str] = &[
    r#"{"order_id":"o-1","total":150,"currency":"BRL","customer":{"name":"Ana","email":"a@b"},"items":[{"sku":"A","qty":1}]}"#,
    r#"{"s":"tab\there \"quoted\" \\ \u00e9 \ud83d\ude00 /","k\u00e9y":1,"empty":"","nested":[[],{},[{}],null,true,false]}"#,
    r#"{"big":18446744073709551615,"neg":-9223372036854775808,"f":1.5,"e":1e300,"small":-0.0,"z":0,"frac":0.1}"#,
    r#"{"a":1,"b":2,"a":3}"#,
    r#"[1,"two",{"three":3},[4]]"#,
    r#""just text""#,
    "12.25",
    "true",
    r#"{ "spaced" : [ 1 , 2 ] ,
        "lines" : { "x" : "y" } }"#,
];

#[test]
fn decodes_to_the_value_serde_json_gives_and_renders_the_same_bytes() {
    for data in SAMPLES {
        let expected: Value = serde_json::from_str(data).unwrap();
        let got = decoded(data).expect("data");
        assert_eq!(got.to_value(), expected, "{data}");
        assert_eq!(serde_json::to_vec(&got).unwrap(), serde_json::to_vec(&expected).unwrap(), "{data}");
        assert_eq!(got.root().to_string(), expected.to_string(), "{data}");
        assert_eq!(Data::from_value(&expected).to_value(), expected, "{data}");
    }
}

#[test]
fn a_name_given_twice_keeps_its_first_place_and_its_last_value_in_small_and_large_objects() {
    for n in [3, 16, 17, 40] {
        let mut members: Vec<String> = (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect();
        members.push(r#""k1":"again""#.into());
        members.push(format!(r#""k{}":"last""#, n - 1));
        members.push(r#""k\u0031":"escaped""#.into());
        let data = format!("{{{}}}", members.join(","));
        let expected: Value = serde_json::from_str(&data).unwrap();
        let got = decoded(&data).unwrap();
        assert_eq!(serde_json::to_string(&got).unwrap(), expected.to_string(), "{n} members");
        assert_eq!(got.root().get("k1").and_then(DataRef::as_str), Some("escaped"));
        assert_eq!(got.root().members().count(), n, "{n} members");
    }
}

#[test]
fn names_alike_at_their_ends_are_compared_in_full() {
    // The same length and the same first and last bytes: the same bit of the quick check, so
    // the names are compared, and only equal ones are one member.
    for (data, expected) in [
        (r#"{"abc":1,"axc":2}"#, json!({"abc": 1, "axc": 2})),
        (r#"{"abc":1,"axc":2,"abc":3}"#, json!({"abc": 3, "axc": 2})),
        (r#"{"":1,"a":2,"":3}"#, json!({"": 3, "a": 2})),
        (r#"{"k\u0031":1,"k1":2}"#, json!({"k1": 2})),
    ] {
        let got = decoded(data).unwrap();
        assert_eq!(serde_json::to_string(&got).unwrap(), expected.to_string(), "{data}");
        let mut seen = Vec::new();
        let (text, root) = (&*got.text, &got.root);
        let Node::Object(members) = root else { panic!("an object") };
        members.iter().for_each(|(k, _)| seen.push(k.resolve(text).to_string()));
        assert_eq!(seen, expected.as_object().unwrap().keys().cloned().collect::<Vec<_>>(), "{data}");
    }
}

#[test]
fn strings_without_escapes_are_spans_of_the_event_text() {
    let plain = decoded(SAMPLES[0]).unwrap();
    assert_eq!(owned_strings(&plain.root), 0, "every string and name of {} is a span", SAMPLES[0]);
    let escaped = decoded(r#"{"a\n":"b","c":"d\"e","f":"g"}"#).unwrap();
    assert_eq!(owned_strings(&escaped.root), 2, "only the escaped name and string are their own");
    assert_eq!(escaped.root().get("c").and_then(DataRef::as_str), Some("d\"e"));
    assert_eq!(escaped.root().get("f").and_then(DataRef::as_str), Some("g"));
    // Not the text: a tree made from a value owns everything, and needs no text.
    let made = Data::from_value(&json!({"x": ["y"]}));
    assert_eq!(owned_strings(&made.root), 2);
    assert!(made.text.is_empty());
}

#[test]
fn null_data_is_no_data_and_readers_walk_the_tree() {
    assert_eq!(decoded("null"), None);
    let d = decoded(r#"{"items":[{"sku":"A","qty":2}],"total":10.5,"ok":true}"#).unwrap();
    let root = d.root();
    assert!(root.is_object());
    assert_eq!(
        root.get("items").and_then(|i| i.index(0)).and_then(|i| i.get("sku")).and_then(DataRef::as_str),
        Some("A")
    );
    assert_eq!(root.get("total").and_then(DataRef::as_number).and_then(Number::as_f64), Some(10.5));
    assert_eq!(root.get("ok").and_then(DataRef::as_bool), Some(true));
    assert!(root.get("missing").is_none() && root.index(0).is_none());
    assert_eq!(root.get("items").unwrap().elements().count(), 1);
    assert_eq!(root.members().map(|(k, _)| k).collect::<Vec<_>>(), ["items", "total", "ok"]);
}

#[test]
fn an_event_that_is_not_utf8_is_refused_as_before() {
    let raw = b"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"data\":\"\xff\"}";
    let e = CloudEvent::decode(raw).unwrap_err();
    assert!(e.to_string().contains("invalid unicode code point"), "{e}");
}
