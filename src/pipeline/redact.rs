//! Declarative redaction: `redact = ["data.customer.email", "data.items.*.card"]` removes those
//! fields from the event before it is rendered. `*` stands for every key of an object or every
//! element of an array. Paths are parsed at config load.

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
    pub fn apply_to_data(&self, data: &mut Value) {
        match &self.segments[1..] {
            [] => *data = Value::Null,
            rest => remove(data, rest),
        }
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
}
