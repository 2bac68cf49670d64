//! An example payload for an event type, made from its JSON Schema: what the catalogue shows so
//! that a receiver's author sees the shape at a glance, and the data of the example events that
//! `POST /v1/routes/{name}/example` queues. It takes the schema's own `examples`,
//! `default`, `const` or first `enum` value where there is one, and otherwise a value of the
//! right type (formats and bounds respected for the common cases). Pure and bounded in depth.

use serde_json::{Map, Value, json};

/// An example of what `schema` describes.
pub fn example(schema: &Value) -> Value {
    make(schema, schema, 0)
}

fn make(schema: &Value, root: &Value, depth: usize) -> Value {
    if depth > 12 {
        return Value::Null;
    }
    let Some(s) = schema.as_object() else { return Value::Null };
    if let Some(Value::Array(ex)) = s.get("examples")
        && let Some(first) = ex.first()
    {
        return first.clone();
    }
    for k in ["example", "default", "const"] {
        if let Some(v) = s.get(k) {
            return v.clone();
        }
    }
    if let Some(Value::Array(e)) = s.get("enum")
        && let Some(first) = e.first()
    {
        return first.clone();
    }
    if let Some(Value::String(r)) = s.get("$ref") {
        return resolve(root, r).map_or(Value::Null, |target| make(target, root, depth + 1));
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = s.get(k)
            && !list.is_empty()
        {
            if k == "allOf" {
                let mut merged = Map::new();
                for part in list {
                    if let Value::Object(o) = make(part, root, depth + 1) {
                        merged.extend(o);
                    }
                }
                return Value::Object(merged);
            }
            return make(&list[0], root, depth + 1);
        }
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => "null",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(Value::Object(props)) = s.get("properties") {
                for (name, sub) in props {
                    out.insert(name.clone(), make(sub, root, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let item = s.get("items").map_or(Value::Null, |i| make(i, root, depth + 1));
            let n = s.get("minItems").and_then(Value::as_u64).unwrap_or(1).clamp(1, 3);
            Value::Array(vec![item; n as usize])
        }
        "string" => Value::String(string_for(s)),
        "integer" => json!(s.get("minimum").and_then(Value::as_i64).map_or(1, |m| m.max(1).max(m))),
        "number" => json!(s.get("minimum").and_then(Value::as_f64).map_or(9.99, |m| if m > 9.99 { m } else { 9.99 })),
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    }
}

/// Strings tried, in order, against a schema's `pattern`.
const CANDIDATES: &[&str] = &[
    "USD",
    "BRL",
    "example",
    "string",
    "ABC123",
    "abc-123",
    "o-1001",
    "A",
    "a",
    "1",
    "42",
    "2026-11-23",
    "2026-11-23T10:00:00Z",
    "ana@example.com",
    "https://example.com/resource",
    "+5511999990000",
    "AB",
    "ab",
];

fn string_for(s: &Map<String, Value>) -> String {
    let by_format = match s.get("format").and_then(Value::as_str) {
        Some("date-time") => Some("2026-11-23T10:00:00Z"),
        Some("date") => Some("2026-11-23"),
        Some("time") => Some("10:00:00Z"),
        Some("email") => Some("ana@example.com"),
        Some("uri" | "url") => Some("https://example.com/resource"),
        Some("uuid") => Some("3f1c2a9e-5b7d-4e8a-9c1f-2d6b8e4a7c30"),
        Some("ipv4") => Some("192.0.2.10"),
        Some("ipv6") => Some("2001:db8::10"),
        Some("hostname") => Some("example.com"),
        _ => None,
    };
    let pattern = s.get("pattern").and_then(Value::as_str).and_then(|p| regex::Regex::new(p).ok());
    let text = match (&pattern, by_format) {
        (Some(re), _) => CANDIDATES.iter().find(|c| re.is_match(c)).copied().unwrap_or("string"),
        (None, f) => f.unwrap_or("string"),
    }
    .to_string();
    if pattern.is_some() {
        return text;
    }
    let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = s.get("maxLength").and_then(Value::as_u64).map(|m| m as usize);
    let mut text = if text.len() < min { format!("{text}{}", "x".repeat(min - text.len())) } else { text };
    if let Some(max) = max {
        text.truncate(max);
    }
    text
}

/// A local `$ref` (`#/$defs/x`, `#/definitions/x`).
fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    root.pointer(r.strip_prefix('#')?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_example_follows_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "examples": ["o-1001"]},
                "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "total": {"type": "number", "minimum": 0},
                "currency": {"enum": ["BRL", "USD"]},
                "paid_at": {"type": "string", "format": "date-time"},
                "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
                "note": {"type": ["null", "string"], "maxLength": 3}
            },
            "$defs": {"item": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}}
        });
        assert_eq!(
            example(&schema),
            json!({
                "order_id": "o-1001", "code": "USD", "total": 9.99, "currency": "BRL", "paid_at": "2026-11-23T10:00:00Z",
                "items": [{"sku": "string", "qty": 1}], "note": "str"
            })
        );
    }

    #[test]
    fn a_self_referencing_schema_ends() {
        let schema = json!({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"});
        let v = example(&schema);
        assert!(v.is_object());
    }
}
