//! The schema catalogue: each event type's schema versions, compiled once per config load into
//! validators (draft 2020-12 unless the schema's `$schema` says otherwise), and the check of an
//! event's `data` against them. The config loader reads `schemas/<type>/v<N>.json` into it.
//!
//! Validated once: the ingest API validates an event before publishing it and marks the message
//! ([`H_VALIDATED`], [`validated_mark`]) with the config revision it validated under and a
//! random value this process drew at start. A delivery in the same process under the same
//! revision finds its own mark ([`is_validated_mark`]) and does not validate the event again;
//! any other mark (another revision, another process, a producer's header) counts for nothing,
//! so the event is validated as usual. Only the mark's value is compared, with no allocation.

use crate::event::DataRef;
use crate::event::data::validate::DataJson;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

/// Message header: the ingest API validated the event's `data` ([`validated_mark`]). Never sent
/// to receivers (message headers are not request headers).
pub const H_VALIDATED: &str = "hookrelay-validated";

/// What this process draws once, so that only its own marks count (hex of 16 random bytes).
fn process_nonce() -> &'static str {
    static NONCE: OnceLock<String> = OnceLock::new();
    NONCE.get_or_init(|| {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random generator is available");
        hex::encode(bytes)
    })
}

/// The [`H_VALIDATED`] value for an event this process validated under config `revision`.
pub fn validated_mark(revision: &str) -> String {
    format!("{revision}.{}", process_nonce())
}

/// Whether `mark` is this process's [`validated_mark`] for `revision`.
pub fn is_validated_mark(mark: &str, revision: &str) -> bool {
    mark.strip_prefix(revision).and_then(|rest| rest.strip_prefix('.')) == Some(process_nonce())
}

/// A compiled schema: it validates an event's `data` as decoded ([`DataJson`]), with no
/// `serde_json::Value` built for it.
pub type Validator = jsonschema::Validator<DataJson>;

/// Compiles a schema document (its draft from `$schema`, 2020-12 when it names none).
pub fn compile(schema: &Value) -> Result<Validator, jsonschema::ValidationError<'static>> {
    jsonschema::options_for::<DataJson>().build(schema)
}

/// One event type's schema versions.
#[derive(Clone, Default)]
pub struct TypeSchemas {
    /// Version number → compiled validator.
    pub versions: BTreeMap<u32, Arc<Validator>>,
    /// Version number → the schema as written (for the API's catalogue).
    pub documents: BTreeMap<u32, Arc<Value>>,
}

/// Every known event type.
#[derive(Clone, Default)]
pub struct SchemaRegistry {
    types: HashMap<String, TypeSchemas>,
}

/// One way an event's `data` breaks its schema. In JSON (API error and dead-letter `details`,
/// both `{"violations": [...]}`), `path` is a JSON Pointer into `data`: `""` for `data` itself
/// (RFC 6901). In messages, the same place is written `data` or `data/customer/email`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON Pointer into `data`, e.g. `/customer/email`; empty for `data` itself.
    pub path: String,
    /// What the schema wanted.
    pub message: String,
}

/// `data: message` or `data/customer/email: message`: the one way messages name a violation.
impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "data{}: {}", self.path, self.message)
    }
}

/// Why an event is refused before any script runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// No `schemas/<type>/` directory.
    #[error("no schema for event type `{0}`")]
    UnknownType(String),
    /// The type exists but not the requested version.
    #[error("event type `{ty}` has no schema version {version:?} (known: {known})")]
    UnknownVersion {
        /// Event type.
        ty: String,
        /// Requested version, as written.
        version: String,
        /// Known versions, comma-separated.
        known: String,
    },
    /// `data` does not match.
    #[error("data does not match schema {ty} v{version}: {}", summary(.violations))]
    Invalid {
        /// Event type.
        ty: String,
        /// Schema version used.
        version: u32,
        /// Every violation, with its path.
        violations: Vec<Violation>,
    },
}

fn summary(v: &[Violation]) -> String {
    v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl SchemaRegistry {
    /// Adds an event type's schemas (compiled by the config loader).
    pub fn insert(&mut self, ty: String, schemas: TypeSchemas) {
        self.types.insert(ty, schemas);
    }

    /// One type's schemas.
    pub fn get(&self, ty: &str) -> Option<&TypeSchemas> {
        self.types.get(ty)
    }

    /// Known event types, sorted.
    pub fn types(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self.types.keys().map(String::as_str).collect();
        t.sort_unstable();
        t
    }

    /// Validates `data` against the type's requested (or newest) schema version.
    pub fn validate(
        &self,
        ty: &str,
        version: Option<Result<u32, String>>,
        data: DataRef<'_>,
    ) -> Result<u32, SchemaError> {
        let schemas = self.types.get(ty).ok_or_else(|| SchemaError::UnknownType(ty.to_string()))?;
        let unknown = |written: String| SchemaError::UnknownVersion {
            ty: ty.to_string(),
            version: written,
            known: schemas.versions.keys().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", "),
        };
        let (version, validator) = match version {
            None => {
                schemas.versions.iter().next_back().map(|(v, s)| (*v, s)).ok_or_else(|| unknown("latest".into()))?
            }
            Some(Ok(v)) => (v, schemas.versions.get(&v).ok_or_else(|| unknown(v.to_string()))?),
            Some(Err(written)) => return Err(unknown(written)),
        };
        if validator.is_valid(data) {
            return Ok(version);
        }
        let violations = validator
            .iter_errors(data)
            .map(|e| Violation { path: e.instance_path().to_string(), message: e.to_string() })
            .collect();
        Err(SchemaError::Invalid { ty: ty.to_string(), version, violations })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> SchemaRegistry {
        let mut schemas = TypeSchemas::default();
        for (version, schema) in [
            (1, serde_json::json!({"type": "object", "required": ["id"]})),
            (
                2,
                serde_json::json!({"type": "object", "required": ["id", "total"], "properties": {"total": {"type": "number"}}}),
            ),
        ] {
            schemas.versions.insert(version, Arc::new(compile(&schema).unwrap()));
            schemas.documents.insert(version, Arc::new(schema));
        }
        let mut reg = SchemaRegistry::default();
        reg.insert("order.paid".into(), schemas);
        reg
    }

    #[test]
    fn newest_version_is_the_default() {
        let reg = registry();
        let data = crate::event::Data::from(serde_json::json!({"id": "o1"}));
        let data = data.root();
        assert_eq!(reg.validate("order.paid", Some(Ok(1)), data), Ok(1));
        match reg.validate("order.paid", None, data) {
            Err(SchemaError::Invalid { version: 2, violations, .. }) => assert_eq!(violations.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn violations_carry_instance_paths() {
        let reg = registry();
        let data = crate::event::Data::from(serde_json::json!({"id": "o1", "total": "ten"}));
        let data = data.root();
        let Err(SchemaError::Invalid { violations, .. }) = reg.validate("order.paid", None, data) else { panic!() };
        assert_eq!(violations[0].path, "/total");
    }

    #[test]
    fn only_this_process_marks_for_the_same_revision_count() {
        let mark = validated_mark("abc123");
        assert!(is_validated_mark(&mark, "abc123"));
        assert!(!is_validated_mark(&mark, "abc124"), "another revision");
        assert!(!is_validated_mark(&mark, "abc12"), "a prefix of the revision");
        assert!(!is_validated_mark("abc123.00000000000000000000000000000000", "abc123"), "another process");
        assert!(!is_validated_mark("abc123", "abc123"));
        assert!(!is_validated_mark("", ""));
    }

    #[test]
    fn unknown_type_and_version() {
        let reg = registry();
        let data = crate::event::Data::from(serde_json::json!({}));
        let data = data.root();
        assert_eq!(reg.validate("nope", None, data), Err(SchemaError::UnknownType("nope".into())));
        assert!(matches!(reg.validate("order.paid", Some(Ok(9)), data), Err(SchemaError::UnknownVersion { .. })));
    }

    /// The validators compiled for the tree find what the ones compiled for `serde_json::Value`
    /// find: the same answer, the same violations at the same paths.
    #[test]
    fn the_schema_finds_the_same_violations_on_the_tree_as_on_a_value() {
        let schema = serde_json::json!({
            "$defs": {"item": {"type": "object", "required": ["sku", "qty"],
                               "properties": {"qty": {"type": "integer", "minimum": 1}}, "additionalProperties": false}},
            "type": "object",
            "required": ["order_id", "total", "currency"],
            "properties": {
                "order_id": {"type": "string", "minLength": 3, "maxLength": 8},
                "total": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.5},
                "currency": {"enum": ["BRL", "USD"]},
                "kind": {"const": {"a": [1, 2]}},
                "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "tags": {"type": "array", "uniqueItems": true, "maxItems": 3, "items": {"type": "string"}},
                "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
                "meta": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}, "maxProperties": 2},
                "either": {"oneOf": [{"type": "null"}, {"type": "boolean"}]}
            }
        });
        let on_value = jsonschema::validator_for(&schema).unwrap();
        let on_tree = compile(&schema).unwrap();
        let cases = [
            r#"{"order_id":"o-1","total":10.5,"currency":"BRL"}"#,
            r#"{"order_id":"o","total":0,"currency":"EUR"}"#,
            r#"{"order_id":"o-123456789","total":10.3,"currency":"USD","code":"br"}"#,
            r#"{"order_id":"o-1","total":1,"currency":"BRL","kind":{"a":[1,2.0]},"tags":["x","y","x"]}"#,
            r#"{"order_id":"o-1","total":1,"currency":"BRL","kind":{"a":[2,1]},"tags":["a","b","c","d"]}"#,
            r#"{"order_id":"o-1","total":1,"currency":"BRL","items":[{"sku":"A","qty":0},{"qty":1.5,"x":1},3]}"#,
            r#"{"order_id":"o-1","total":1,"currency":"BRL","meta":{"ok":1,"Not":2,"x":3},"either":1}"#,
            r#"{"total":"ten"}"#,
            r#"[1,2]"#,
            "null",
        ];
        for data in cases {
            let value: serde_json::Value = serde_json::from_str(data).unwrap();
            let raw = format!(r#"{{"specversion":"1.0","id":"e-1","source":"s","type":"t","data":{data}}}"#);
            let event = crate::event::CloudEvent::decode(raw.as_bytes()).unwrap();
            let node = event.data_ref();
            assert_eq!(on_tree.is_valid(node), on_value.is_valid(&value), "{data}");
            let errors = |it: jsonschema::ErrorIterator<'_>| -> Vec<(String, String)> {
                let mut v: Vec<_> = it.map(|e| (e.instance_path().to_string(), e.to_string())).collect();
                v.sort();
                v
            };
            assert_eq!(errors(on_tree.iter_errors(node)), errors(on_value.iter_errors(&value)), "{data}");
        }
    }
}
