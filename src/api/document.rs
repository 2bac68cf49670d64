//! The OpenAPI document as served at `/openapi.json`: what the annotations generate, with the
//! constraints the handlers enforce that the annotations cannot say (ranges, patterns, enums,
//! one-of-two bodies), so that a request the document calls valid is one the API accepts
//! (schemathesis checks it, `tests/it/api/openapi.rs`). Two parts depend on the live config and are
//! added per request: the event types a CloudEvent may have (with each type's `data` schema),
//! and bearer auth, claimed only while `[[api.keys]]` has keys.

use crate::config::Snapshot;
use serde_json::{Value, json};

/// An RFC 3339 UTC time that the handlers' parser takes, or Unix milliseconds.
const TIME: &str = "^([0-9]{1,15}|(19[7-9][0-9]|20[0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z)$";
/// A page cursor: the `next` of a previous page (`<ms>.<id>`).
const CURSOR: &str = "^[+-]?[0-9]{1,18}\\.[\\s\\S]*$";
/// A statistics window, at most 366 days.
const WINDOW: &str = "^([1-9][0-9]{0,3}[sm]|[1-9][0-9]{0,2}h|([1-9]|[1-9][0-9]|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d)$";
/// A route name.
const NAME: &str = "^[A-Za-z0-9._-]{1,200}$";
/// `If-Match`: a subscription version.
const VERSION: &str = "^\"?[0-9]{1,15}\"?$";

/// Applies the constraints that do not depend on the config: once, when the API starts.
pub fn constrain(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for op in item.values_mut() {
                for p in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
                    let name = p["name"].as_str().unwrap_or_default().to_string();
                    let schema = &mut p["schema"];
                    match name.as_str() {
                        "limit" => merge(schema, json!({"minimum": 1, "maximum": 1000})),
                        "since" | "until" => merge(schema, json!({"pattern": TIME})),
                        "cursor" => merge(schema, json!({"pattern": CURSOR})),
                        "window" => merge(schema, json!({"pattern": WINDOW})),
                        "If-Match" => *schema = json!({"type": "string", "pattern": VERSION}),
                        "status" if path == "/v1/deliveries" => {
                            merge(schema, json!({"enum": ["delivered", "retrying", "dead"]}))
                        }
                        _ => {}
                    }
                }
                // An optional body is an object or nothing, never `null`.
                if let Some(schema) = op.pointer_mut("/requestBody/content/application~1json/schema")
                    && let Some(one_of) = schema.get("oneOf").and_then(Value::as_array)
                    && one_of.len() == 2
                    && one_of[1] == json!({"type": "null"})
                {
                    *schema = one_of[0].clone();
                }
            }
        }
    }
    let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) else { return };
    if let Some(s) = schemas.get_mut("ReplayRequest") {
        merge(
            s,
            json!({
                "properties": {"max": {"minimum": 1, "maximum": 10000}},
                "oneOf": [
                    {"required": ["ids"], "properties": {
                        "ids": {"type": "array", "minItems": 1, "maxItems": 10000, "items": {"type": "string"}},
                        "filter": {"type": "null"}}},
                    {"required": ["filter"], "properties": {"ids": {"type": "null"}, "filter": {"type": "object"}}},
                ],
            }),
        );
    }
    if let Some(s) = schemas.get_mut("ReplayFilter") {
        merge(s, json!({"properties": {"since": {"pattern": TIME}, "until": {"pattern": TIME}}}));
    }
    if let Some(s) = schemas.get_mut("PortalLinkRequest") {
        merge(s, json!({"properties": {"scope": {"enum": ["read", "manage", null]}, "ttl": {"minLength": 1}}}));
    }
    if let Some(s) = schemas.get_mut("RotateRequest") {
        merge(s, json!({"properties": {"overlap": {"minLength": 1}}}));
    }
    // The paths a plan takes, and how many: a path outside the layout is refused with 422 (the
    // total size, 1.5 MiB, no schema can say: 413).
    if let Some(s) = schemas.get_mut("PlanRequest") {
        use crate::runtime::plan::{LAYOUT, MAX_FILES, MAX_PATH};
        merge(
            s,
            json!({"properties": {"files": {
                "maxProperties": MAX_FILES,
                "propertyNames": {"pattern": LAYOUT, "maxLength": MAX_PATH},
            }}}),
        );
    }
    if let Some(s) = schemas.get_mut("ValidateRequest") {
        merge(s, json!({"properties": {"url": {"minLength": 1}, "timeout": {"minLength": 1}}}));
    }
    // What the route compiler checks that a schema can say exactly; the rest (URLs against the
    // security policy, scripts, durations) is refused with every field's problem in `details`.
    if let Some(s) = schemas.get_mut("SubscriptionSpec") {
        merge(
            s,
            json!({"properties": {
                "name": {"pattern": NAME},
                "events": {"minItems": 1, "items": {"minLength": 1}},
                "url": {"minLength": 1},
                "timeout": {"minLength": 1},
                "format": {"enum": ["standard", "cloudevents", "data"]},
                "concurrency": {"minimum": 1, "maximum": 10000},
                "max_attempts": {"minimum": 1, "maximum": 1000},
                "backoff": {"minItems": 1, "items": {"minLength": 1}},
            }}),
        );
    }
}

/// The document for the live config: with the event types a CloudEvent may have, and bearer
/// auth only when the API has keys.
pub fn live(doc: &Value, snapshot: &Snapshot) -> Value {
    let mut doc = doc.clone();
    if snapshot.api.keys.is_empty() {
        strip_auth(&mut doc);
    }
    let events = event_schema(snapshot);
    if let Some(schema) =
        doc.pointer_mut("/paths/~1v1~1events/post/requestBody/content/application~1cloudevents+json/schema")
    {
        *schema = events.clone();
    }
    if let Some(schema) =
        doc.pointer_mut("/paths/~1v1~1routes~1{name}~1test/post/requestBody/content/application~1json/schema")
    {
        *schema = events;
    }
    doc
}

/// Without keys the API is open (on loopback): no operation asks for a credential.
fn strip_auth(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in item.values_mut().filter_map(Value::as_object_mut) {
                op.remove("security");
            }
        }
    }
    if let Some(schemes) = doc.pointer_mut("/components").and_then(Value::as_object_mut) {
        schemes.remove("securitySchemes");
    }
}

/// A CloudEvent the ingest API accepts: one branch per known event type, its `data` valid for
/// the type's newest schema.
fn event_schema(snapshot: &Snapshot) -> Value {
    let branches: Vec<Value> = snapshot
        .schemas
        .types()
        .into_iter()
        .filter_map(|ty| {
            let schemas = snapshot.schemas.get(ty)?;
            let (_, data) = schemas.documents.iter().next_back()?;
            Some(json!({
                "type": "object",
                "required": ["specversion", "id", "source", "type", "data"],
                "properties": {
                    "specversion": {"const": "1.0"},
                    "id": {"type": "string", "pattern": "^[!-~]{1,255}$"},
                    "source": {"type": "string", "pattern": "^[!-~]+$"},
                    "type": {"const": ty},
                    "data": data.as_ref(),
                },
                "additionalProperties": false,
            }))
        })
        .collect();
    json!({"oneOf": branches})
}

/// Merges `add` into `target`, object by object.
fn merge(target: &mut Value, add: Value) {
    match (target, add) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, a) => *t = a,
    }
}
