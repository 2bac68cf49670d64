//! The schema catalogue: `schemas/<type>/v<N>.json`, compiled once per config load into
//! validators (draft 2020-12 unless the schema's `$schema` says otherwise).

use crate::config::error::{ConfigError, display_path};
use jsonschema::Validator;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// One way an event's `data` breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON Pointer into `data`, e.g. `/customer/email`.
    pub path: String,
    /// What the schema wanted.
    pub message: String,
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
    v.iter()
        .map(|v| format!("{}: {}", if v.path.is_empty() { "/" } else { &v.path }, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where a schema fails to compile. A schema that breaks the draft's meta-schema is an error
/// whose instance path is a JSON Pointer into the schema itself (`/properties/total/type`), and
/// a keyword that cannot be built (a `pattern` that is not a regex) carries the same pointer:
/// the error points at that value in the file. A `$ref` that leads nowhere carries no pointer:
/// it points at the `$ref` whose target is missing, found by walking the schema. Otherwise (no
/// place known) the error is about the file as a whole, without a line.
fn compile_error(shown: PathBuf, text: &[u8], schema: &Value, e: &jsonschema::ValidationError<'_>) -> ConfigError {
    use jsonschema::error::ValidationErrorKind;
    let text = String::from_utf8_lossy(text);
    let pointer = match e.kind() {
        ValidationErrorKind::Referencing(why) => find_ref(schema, &why.to_string(), String::new()),
        _ => Some(e.instance_path().to_string()),
    };
    let shown_pointer = pointer.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
    let message = format!("schema does not compile at {shown_pointer}: {e}");
    match pointer.and_then(|p| crate::config::locate::json_pointer(&text, &p)) {
        Some(at) => ConfigError::at_offset(shown, &text, at, message),
        None => ConfigError::file(shown, message),
    }
}

/// The JSON Pointer of a `$ref` member whose value the reference error `why` names.
fn find_ref(v: &Value, why: &str, at: String) -> Option<String> {
    let esc = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref")
                && why.contains(r.trim_start_matches('#'))
            {
                return Some(format!("{at}/$ref"));
            }
            m.iter().find_map(|(k, v)| find_ref(v, why, format!("{at}/{}", esc(k))))
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| find_ref(v, why, format!("{at}/{i}"))),
        _ => None,
    }
}

impl SchemaRegistry {
    /// Loads and compiles every schema under `dir` (`<config>/schemas`). A missing directory is
    /// an empty catalogue; every bad file is reported.
    pub fn load(
        config_dir: &Path,
        dir: &Path,
        files: &mut Vec<(String, Vec<u8>)>,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let mut reg = Self::default();
        let Ok(types) = std::fs::read_dir(dir) else { return reg };
        let mut types: Vec<_> = types.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        types.sort();
        for type_dir in types {
            let ty = type_dir.file_name().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let mut entries: Vec<_> =
                std::fs::read_dir(&type_dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
            entries.sort();
            let mut schemas = TypeSchemas::default();
            for path in entries {
                let shown = display_path(config_dir, &path);
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                let version = match (
                    path.extension().and_then(|e| e.to_str()),
                    stem.strip_prefix('v').and_then(|n| n.parse::<u32>().ok()),
                ) {
                    (Some("json"), Some(v)) => v,
                    _ => {
                        errors.push(ConfigError::file(shown, "schema files are named v<N>.json (e.g. v1.json)"));
                        continue;
                    }
                };
                let text = match std::fs::read(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        errors.push(ConfigError::file(shown, format!("cannot read: {e}")));
                        continue;
                    }
                };
                files.push((shown.display().to_string(), text.clone()));
                let value: Value = match serde_json::from_slice(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        errors.push(ConfigError::at(shown, e.line(), e.column(), format!("invalid JSON: {e}")));
                        continue;
                    }
                };
                match jsonschema::validator_for(&value) {
                    Ok(v) => {
                        schemas.versions.insert(version, Arc::new(v));
                        schemas.documents.insert(version, Arc::new(value));
                    }
                    Err(e) => errors.push(compile_error(shown, &text, &value, &e)),
                }
            }
            if !schemas.versions.is_empty() {
                reg.types.insert(ty, schemas);
            }
        }
        reg
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
    pub fn validate(&self, ty: &str, version: Option<Result<u32, String>>, data: &Value) -> Result<u32, SchemaError> {
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
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("schemas/order.paid");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("v1.json"), r#"{"type":"object","required":["id"]}"#).unwrap();
        std::fs::write(
            t.join("v2.json"),
            r#"{"type":"object","required":["id","total"],"properties":{"total":{"type":"number"}}}"#,
        )
        .unwrap();
        let (mut files, mut errors) = (vec![], vec![]);
        let reg = SchemaRegistry::load(dir.path(), &dir.path().join("schemas"), &mut files, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(files.len(), 2);
        reg
    }

    #[test]
    fn newest_version_is_the_default() {
        let reg = registry();
        let data = serde_json::json!({"id": "o1"});
        assert_eq!(reg.validate("order.paid", Some(Ok(1)), &data), Ok(1));
        match reg.validate("order.paid", None, &data) {
            Err(SchemaError::Invalid { version: 2, violations, .. }) => assert_eq!(violations.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn violations_carry_instance_paths() {
        let reg = registry();
        let data = serde_json::json!({"id": "o1", "total": "ten"});
        let Err(SchemaError::Invalid { violations, .. }) = reg.validate("order.paid", None, &data) else { panic!() };
        assert_eq!(violations[0].path, "/total");
    }

    #[test]
    fn a_schema_that_does_not_compile_is_reported_at_the_failing_keyword() {
        let dir = tempfile::tempdir().unwrap();
        let write = |ty: &str, text: &str| {
            std::fs::create_dir_all(dir.path().join("schemas").join(ty)).unwrap();
            std::fs::write(dir.path().join("schemas").join(ty).join("v1.json"), text).unwrap();
        };
        write("a.type", "{\n  \"properties\": {\n    \"a/b\": {\"minimum\": \"x\"}\n  }\n}");
        write("b.ref", "{\"$defs\": {},\n \"items\": {\"$ref\": \"#/$defs/nope\"}}");
        write("c.regex", "{\"pattern\": \"(\"}");
        let (mut files, mut errors) = (vec![], vec![]);
        SchemaRegistry::load(dir.path(), &dir.path().join("schemas"), &mut files, &mut errors);
        let at: Vec<(String, usize, usize)> =
            errors.iter().map(|e| (e.file.display().to_string(), e.line, e.col)).collect();
        assert_eq!(
            at,
            [
                ("schemas/a.type/v1.json".to_string(), 3, 24),
                ("schemas/b.ref/v1.json".to_string(), 2, 20),
                ("schemas/c.regex/v1.json".to_string(), 1, 13),
            ],
            "{errors:?}"
        );
        assert!(errors[0].message.starts_with("schema does not compile at /properties/a~1b/minimum: "), "{errors:?}");
        assert!(errors[1].message.contains("at /items/$ref"), "{errors:?}");
    }

    #[test]
    fn unknown_type_and_version() {
        let reg = registry();
        let data = serde_json::json!({});
        assert_eq!(reg.validate("nope", None, &data), Err(SchemaError::UnknownType("nope".into())));
        assert!(matches!(reg.validate("order.paid", Some(Ok(9)), &data), Err(SchemaError::UnknownVersion { .. })));
    }
}
