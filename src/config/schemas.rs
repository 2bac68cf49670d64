//! `schemas/<type>/v<N>.json` into the pipeline's schema catalogue, each file's compile errors
//! reported at the keyword that fails.

use super::error::{ConfigError, display_path};
use crate::pipeline::schema::{SchemaRegistry, TypeSchemas};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Loads and compiles every schema under `dir` (`<config>/schemas`). A missing directory is an
/// empty catalogue; every bad file is reported.
pub fn load(
    config_dir: &Path,
    dir: &Path,
    files: &mut Vec<(String, Vec<u8>)>,
    errors: &mut Vec<ConfigError>,
) -> SchemaRegistry {
    let mut reg = SchemaRegistry::default();
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
            match crate::pipeline::schema::compile(&value) {
                Ok(v) => {
                    schemas.versions.insert(version, Arc::new(v));
                    schemas.documents.insert(version, Arc::new(value));
                }
                Err(e) => errors.push(compile_error(shown, &text, &value, &e)),
            }
        }
        if !schemas.versions.is_empty() {
            reg.insert(ty, schemas);
        }
    }
    reg
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
    match pointer.and_then(|p| super::locate::json_pointer(&text, &p)) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        load(dir.path(), &dir.path().join("schemas"), &mut files, &mut errors);
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
}
