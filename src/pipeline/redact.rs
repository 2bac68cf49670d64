//! Declarative redaction: `redact = ["data.customer.email", "data.items.*.card"]` removes those
//! fields from the event before it is rendered. `*` stands for every key of an object or every
//! element of an array. Paths are parsed at config load. The same removal works on the event as
//! one JSON value and on a decoded event's `data` ([`Data`]).

use crate::event::Data;
use crate::event::data::{Node, Text};
use serde_json::Value;

/// A parsed redaction path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactPath {
    segments: Vec<Segment>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Any,
}

const REQUIRED: [&str; 4] = ["id", "source", "type", "specversion"];

impl RedactPath {
    /// Parses `data.customer.email`; the required CloudEvent attributes cannot be removed.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.split('.').any(str::is_empty) {
            return Err(format!("redact path {text:?} is not of the form `data.field.field` (no empty segments)"));
        }
        let segments: Vec<Segment> =
            text.split('.').map(|s| if s == "*" { Segment::Any } else { Segment::Key(s.to_string()) }).collect();
        match &segments[0] {
            Segment::Key(k) if segments.len() == 1 && REQUIRED.contains(&k.as_str()) => {
                Err(format!("redact path {text:?} would remove the required attribute `{k}`"))
            }
            Segment::Any => Err(format!("redact path {text:?} must start with an attribute name such as `data`")),
            _ => Ok(Self { segments, text: text.to_string() }),
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Removes every field the path names; absent fields are fine.
    pub fn apply(&self, event: &mut Value) {
        remove(event, &self.segments);
    }

    /// Whether the path is inside `data` (or is `data`).
    pub fn in_data(&self) -> bool {
        matches!(&self.segments[0], Segment::Key(k) if k == "data")
    }

    /// [`RedactPath::apply`] on the event's `data` alone, for a path [`in_data`](Self::in_data):
    /// `data` itself becomes `null` (as the event without it renders).
    /// An absent `data` stays absent.
    pub fn apply_to_data(&self, data: &mut Option<Data>) {
        match (&self.segments[1..], data.as_mut()) {
            ([], _) => *data = None,
            (rest, Some(d)) => {
                let (text, root) = d.parts_mut();
                remove_node(text, root, rest);
            }
            (_, None) => {}
        }
    }
}

/// [`remove`] on a node of a decoded `data`: the same cases, the same results.
fn remove_node(text: &str, node: &mut Node, path: &[Segment]) {
    let Some((first, rest)) = path.split_first() else { return };
    let named = |k: &str, name: &Text| name.is(text, k);
    match (node, first, rest.is_empty()) {
        (Node::Object(members), Segment::Key(k), true) => {
            if let Some(i) = members.iter().position(|(name, _)| named(k, name)) {
                members.remove(i);
            }
        }
        (Node::Object(members), Segment::Any, true) => members.clear(),
        (Node::Array(items), Segment::Any, true) => items.clear(),
        (Node::Object(members), Segment::Key(k), false) => {
            if let Some((_, v)) = members.iter_mut().find(|(name, _)| named(k, name)) {
                remove_node(text, v, rest);
            }
        }
        (Node::Object(members), Segment::Any, false) => {
            members.iter_mut().for_each(|(_, v)| remove_node(text, v, rest))
        }
        (Node::Array(items), Segment::Any, false) => items.iter_mut().for_each(|v| remove_node(text, v, rest)),
        (Node::Array(items), Segment::Key(k), _) => {
            if let Some(v) = k.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                if rest.is_empty() {
                    *v = Node::Null;
                } else {
                    remove_node(text, v, rest);
                }
            }
        }
        _ => {}
    }
}

fn remove(value: &mut Value, path: &[Segment]) {
    let Some((first, rest)) = path.split_first() else { return };
    match (value, first, rest.is_empty()) {
        (Value::Object(map), Segment::Key(k), true) => {
            map.shift_remove(k);
        }
        (Value::Object(map), Segment::Any, true) => map.clear(),
        (Value::Array(items), Segment::Any, true) => items.clear(),
        (Value::Object(map), Segment::Key(k), false) => {
            if let Some(v) = map.get_mut(k) {
                remove(v, rest);
            }
        }
        (Value::Object(map), Segment::Any, false) => map.values_mut().for_each(|v| remove(v, rest)),
        (Value::Array(items), Segment::Any, false) => items.iter_mut().for_each(|v| remove(v, rest)),
        (Value::Array(items), Segment::Key(k), _) => {
            if let Some(v) = k.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                if rest.is_empty() {
                    *v = Value::Null;
                } else {
                    remove(v, rest);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removes_nested_fields_and_keeps_order() {
        let mut ev = json!({"data": {"z": 1, "customer": {"email": "a@b", "name": "A"}, "a": 2}});
        RedactPath::parse("data.customer.email").unwrap().apply(&mut ev);
        assert_eq!(serde_json::to_string(&ev).unwrap(), r#"{"data":{"z":1,"customer":{"name":"A"},"a":2}}"#);
    }

    #[test]
    fn wildcard_reaches_every_element() {
        let mut ev = json!({"data": {"items": [{"sku": "x", "card": "4111"}, {"sku": "y", "card": "5500"}]}});
        RedactPath::parse("data.items.*.card").unwrap().apply(&mut ev);
        assert_eq!(ev, json!({"data": {"items": [{"sku": "x"}, {"sku": "y"}]}}));
    }

    #[test]
    fn absent_paths_are_fine_and_bad_paths_refused() {
        let mut ev = json!({"data": 3});
        RedactPath::parse("data.customer.email").unwrap().apply(&mut ev);
        assert_eq!(ev, json!({"data": 3}));
        assert!(RedactPath::parse("data..x").is_err());
        assert!(RedactPath::parse("id").is_err());
        assert!(RedactPath::parse("*.x").is_err());
    }

    /// Every path, on the event as one value and on a decoded event's `data`: the same body.
    #[test]
    fn the_decoded_data_loses_what_the_value_loses() {
        let raw = r#"{"specversion":"1.0","id":"e","source":"s","type":"t","data":
            {"z":1,"customer":{"email":"a@b","name":"A","e\u006dail":"x"},"items":[{"sku":"x","card":"4111"},{"card":"5"},3],
             "list":[1,2,3],"n":null,"s":"plain"}}"#;
        let paths = [
            "data.customer.email",
            "data.items.*.card",
            "data.items.1",
            "data.items.2.x",
            "data.list.*",
            "data.customer.*",
            "data.*.email",
            "data.s.x",
            "data.nothing.here",
            "data.list.0",
            "data.list.7",
            "data",
        ];
        for path in paths {
            let p = RedactPath::parse(path).unwrap();
            let event = crate::event::CloudEvent::decode(raw.as_bytes()).unwrap();
            let mut value = event.to_value();
            p.apply(&mut value);
            let mut data = event.data;
            p.apply_to_data(&mut data);
            let from_value = value.get("data").cloned();
            assert_eq!(data.as_ref().map(Data::to_value), from_value, "{path}");
            let rendered = data.as_ref().map(|d| serde_json::to_string(d).unwrap());
            assert_eq!(rendered, from_value.map(|v| v.to_string()), "{path}");
        }
    }
}
